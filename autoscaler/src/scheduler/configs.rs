//! New nodes by the configuration LP: a fourth plan beside shape by shape,
//! first-fit-decreasing and patterns (`place.rs` keeps the cheapest).
//!
//! A *configuration* is one node of a type with a multiset of bundles that
//! fits in it. The LP chooses how many nodes of each configuration to open so
//! every bundle is covered at the least cost. It has a column per
//! configuration, far too many to list, so it starts from one-shape columns
//! and generates the rest (column generation): with the LP's dual price of
//! each shape, the configuration of each type worth the most at those prices
//! is found by a small branch-and-bound knapsack, and added while it is worth
//! more than its node costs. Because each configuration fills a node with a
//! mix, shapes heavy in different resources end up side by side, which is
//! what the greedy plans miss on CPU and memory demand.
//!
//! The LP's answer is fractional. It is rounded by opening the whole nodes it
//! asks for, solving again for what is left, and, when every configuration is
//! below one node, opening the largest; the last few bundles go shape by shape
//! into the spare room of the nodes opened here, then onto new nodes.
//!
//! The work is bounded (shapes, LP solves and their pivots, knapsack nodes,
//! each count the knapsack tries being a node), so one decision stays within
//! its time budget at 100k bundles.
//!
//! STRICT_SPREAD groups' bundles can join as items too (`Spread`), at most one
//! per group per node: after rounding, each group's bundles are given distinct
//! planned nodes, largest groups first, and what finds none gets nodes of its
//! own.

use std::collections::HashMap;

use ray_common::ResourceSet;

use super::{Demand, Gang, LaunchReason, Planner, Slot, Vector, fits, pack, sub_times};

mod master;

use master::{Bin, Budget, Master, Solved};
pub(super) use master::{Bin as ConfigBin, lower_bound};

/// Above this many shapes the LP is not tried.
pub(super) const MAX_SHAPES: usize = 32;
/// LP solves per plan, column generation and rounding together.
const MAX_SOLVES: usize = 30;
/// Knapsack branch-and-bound nodes per plan, all pricing together.
const MAX_KNAPSACK_NODES: usize = 20_000;

/// What all the configuration-LP plans of one decision may spend together
/// (step 3 may be planned up to three times when STRICT_SPREAD groups need
/// new nodes): half as much again as one plan.
pub(super) fn decision_budget() -> Work {
    Work { solves: MAX_SOLVES * 3 / 2, knapsack_nodes: MAX_KNAPSACK_NODES * 3 / 2 }
}

/// Work left for the rest of a decision.
#[derive(Debug, Clone, Copy)]
pub(super) struct Work {
    solves: usize,
    knapsack_nodes: usize,
}
/// Column generation rounds in the first solve (later ones reuse its columns).
const FIRST_ROUNDS: usize = 30;
const LATER_ROUNDS: usize = 3;
/// Branch-and-bound nodes per knapsack.
const KNAPSACK_NODES: usize = 500;

type Left = (Vector, u64, ResourceSet, LaunchReason);

/// A STRICT_SPREAD group's bundles that need new nodes, each its own.
pub(super) struct Spread<'g> {
    pub gang: &'g Gang,
    pub shapes: Vec<Vector>,
}

/// STRICT_SPREAD bundles taken together: more work is not tried.
const MAX_SPREAD_BUNDLES: usize = 4_096;

/// Plans new nodes for `left` and the `spread` groups' bundles on a copy of
/// `p`; `None` when not tried.
/// `work` is what the decision has left, and is charged for what this plan uses.
pub(super) fn plan<'a>(p: &Planner<'a>, left: &[Left], spread: &[Spread], work: &mut Work) -> Option<Planner<'a>> {
    // The groups' bundles are items like the others, one per group per node at
    // most (so a node holds no more of a shape than there are groups with it).
    let mut items: Vec<Left> = left.to_vec();
    let mut per_node: Vec<u64> = vec![u64::MAX; left.len()];
    let mut spread_item: HashMap<&Vector, usize> = HashMap::new();
    let mut bundles = 0;
    for g in spread {
        for (k, s) in g.shapes.iter().enumerate() {
            bundles += 1;
            let i = *spread_item.entry(s).or_insert_with(|| {
                items.push((s.clone(), 0, g.gang.bundles.first().cloned().unwrap_or_default(), LaunchReason::PlacementGroup));
                per_node.push(0);
                items.len() - 1
            });
            items[i].1 += 1;
            if !g.shapes[..k].contains(s) {
                per_node[i] += 1;
            }
        }
    }
    if items.is_empty() || items.len() > MAX_SHAPES || bundles > MAX_SPREAD_BUNDLES {
        return None;
    }
    let left = &items[..];
    let mut q = p.clone();
    let types: Vec<usize> = (0..q.input.types.len()).filter(|&t| q.room(t) > 0).collect();
    let holds = |i: usize| types.iter().any(|&t| fits(&q.type_vecs[t], &left[i].0) > 0);
    let unholdable: Vec<bool> = (0..left.len()).map(|i| !holds(i)).collect();
    let mut remaining: Vec<u64> = left.iter().zip(&unholdable).map(|(l, u)| if *u { 0 } else { l.1 }).collect();
    let shapes: Vec<Vector> = left.iter().map(|l| l.0.clone()).collect();
    // Node types as bins, their room as it is before each solve.
    let bins = |q: &Planner| -> Vec<Bin> {
        types.iter().map(|&t| Bin { cap: q.type_vecs[t].clone(), cost: q.type_cost[t], room: q.room(t), worker: true }).collect()
    };
    let mut columns = Master { bins: &bins(&q), global: 0, shapes: &shapes, per_node: &per_node }.initial_columns(&remaining);
    let mut pool: Vec<Slot> = Vec::new();
    let mut opened: Vec<(Vec<u64>, u64)> = Vec::new();
    let mut budget = Budget {
        solves: MAX_SOLVES.min(work.solves),
        knapsack_nodes: MAX_KNAPSACK_NODES.min(work.knapsack_nodes),
        per_knapsack: KNAPSACK_NODES,
    };
    let granted = (budget.solves, budget.knapsack_nodes);
    let mut first = true;
    while remaining.iter().any(|r| *r > 0) && budget.solves > 0 {
        let rounds = if first { FIRST_ROUNDS } else { LATER_ROUNDS };
        first = false;
        let bins = bins(&q);
        let global = u64::from(q.input.max_workers).saturating_sub(q.workers);
        let master = Master { bins: &bins, global, shapes: &shapes, per_node: &per_node };
        let Some(Solved { x, .. }) = master.solve(&remaining, &mut columns, rounds, &mut budget) else { break };
        let mut order: Vec<usize> = (0..columns.len()).filter(|&j| x[j] > 1e-9).collect();
        order.sort_by(|a, b| x[*b].total_cmp(&x[*a]));
        let mut any = false;
        for &j in &order {
            let k = (x[j] + 1e-6).floor() as u64;
            if k > 0 {
                any |= open(&mut q, &mut pool, &mut opened, (types[columns[j].bin], &columns[j].counts), k, &mut remaining, left);
            }
        }
        if !any {
            // Every configuration below one node: open the largest.
            let Some(&j) = order.first() else { break };
            if !open(&mut q, &mut pool, &mut opened, (types[columns[j].bin], &columns[j].counts), 1, &mut remaining, left) {
                break;
            }
        }
    }
    work.solves -= granted.0 - budget.solves;
    work.knapsack_nodes -= granted.1 - budget.knapsack_nodes;
    if !spread.is_empty() {
        assign_spread(&mut q, &mut pool, &opened, spread, &spread_item);
    }
    // What is left: shape by shape, into the spare room first.
    let mut scratch = vec![false; q.input.nodes.len()];
    for (i, l) in left.iter().enumerate().filter(|(i, _)| per_node[*i] == u64::MAX) {
        let unplaced = if unholdable[i] {
            l.1
        } else {
            let n = pack(&mut pool, &l.0, remaining[i], &mut scratch);
            q.launch_for(&mut pool, &l.0, n, l.3)
        };
        if unplaced > 0 {
            q.decision.capped.push(Demand { shape: l.2.clone(), count: unplaced });
        }
    }
    Some(q)
}

/// Gives each STRICT_SPREAD group's bundles distinct nodes: the planned slots
/// first (largest groups first, each bundle on the node with the most slots of
/// its shape left), then nodes opened for the rest, one per bundle as in the
/// shape-by-shape plan. A group that finds no room is capped.
fn assign_spread(q: &mut Planner, pool: &mut Vec<Slot>, opened: &[(Vec<u64>, u64)], spread: &[Spread], item: &HashMap<&Vector, usize>) {
    let mut slots: Vec<Vec<u64>> = Vec::new();
    for (take, copies) in opened {
        if item.values().any(|&i| take[i] > 0) {
            slots.extend(std::iter::repeat_n(take.clone(), *copies as usize));
        }
    }
    let mut order: Vec<&Spread> = spread.iter().collect();
    order.sort_by_key(|g| std::cmp::Reverse(g.shapes.len()));
    // For each shape, the groups with a bundle of it still to assign (each
    // could share a node with one).
    let first_of = |g: &Spread, k: usize| !g.shapes[..k].contains(&g.shapes[k]);
    let mut unassigned: HashMap<&Vector, u64> = HashMap::new();
    for g in &order {
        for (_, s) in g.shapes.iter().enumerate().filter(|(k, _)| first_of(g, *k)) {
            *unassigned.entry(s).or_default() += 1;
        }
    }
    let mut fresh: Vec<Vector> = Vec::new();
    for g in order {
        let mut taken: Vec<usize> = Vec::new();
        let mut taken_fresh: Vec<usize> = Vec::new();
        let mut stuck = false;
        for (k, s) in g.shapes.iter().enumerate() {
            if first_of(g, k)
                && let Some(n) = unassigned.get_mut(s)
            {
                *n = n.saturating_sub(1);
            }
            let i = item[s];
            let planned = (0..slots.len()).filter(|k| slots[*k][i] > 0 && !taken.contains(k)).max_by_key(|k| slots[*k][i]);
            if let Some(k) = planned {
                slots[k][i] -= 1;
                taken.push(k);
                continue;
            }
            if let Some(f) = (0..fresh.len()).find(|f| !taken_fresh.contains(f) && fits(&fresh[*f], s) > 0) {
                sub_times(&mut fresh[f], s, 1);
                taken_fresh.push(f);
                continue;
            }
            match q.choose(s, 1 + unassigned.get(s).copied().unwrap_or(0)) {
                Some((t, _)) => {
                    q.add(t, 1, LaunchReason::PlacementGroup);
                    let mut avail = q.type_vecs[t].clone();
                    sub_times(&mut avail, s, 1);
                    fresh.push(avail);
                    taken_fresh.push(fresh.len() - 1);
                }
                None => stuck = true,
            }
        }
        if stuck {
            q.decision.capped.extend(g.gang.bundles.iter().map(|b| Demand { shape: b.clone(), count: 1 }));
        }
    }
    pool.extend(fresh.into_iter().filter(|a| a.iter().any(|r| *r > 0)).map(|avail| Slot { avail, count: 1, node: None }));
}

/// Opens up to `k` nodes of type `t` with `counts` of each shape, each holding what of its bundles is
/// still unplaced (recorded in `opened`); returns whether any opened.
fn open(
    q: &mut Planner,
    pool: &mut Vec<Slot>,
    opened: &mut Vec<(Vec<u64>, u64)>,
    (t, counts): (usize, &[u64]),
    k: u64,
    remaining: &mut [u64],
    left: &[Left],
) -> bool {
    let k = k.min(q.room(t));
    let mut done = 0;
    while done < k {
        // As many whole copies as the remaining bundles fill, else one partial.
        let whole = counts.iter().zip(remaining.iter()).filter(|(c, _)| **c > 0).map(|(c, r)| r / c).min().unwrap_or(0);
        let (copies, take): (u64, Vec<u64>) = if whole > 0 {
            (whole.min(k - done), counts.to_vec())
        } else {
            (1, counts.iter().zip(remaining.iter()).map(|(c, r)| (*c).min(*r)).collect())
        };
        if take.iter().all(|c| *c == 0) {
            break;
        }
        let mut room = q.type_vecs[t].clone();
        // A node that holds a placement group's bundle is launched for it (not
        // paced by upscaling_speed), as in the shape-by-shape plan.
        let mut group = false;
        for (i, c) in take.iter().enumerate().filter(|(_, c)| **c > 0) {
            sub_times(&mut room, &left[i].0, *c);
            remaining[i] -= c * copies;
            group |= left[i].3 == LaunchReason::PlacementGroup;
        }
        q.add(t, copies, if group { LaunchReason::PlacementGroup } else { LaunchReason::Demand });
        if room.iter().any(|r| *r > 0) {
            pool.push(Slot { avail: room, count: copies, node: None });
        }
        opened.push((take, copies));
        done += copies;
    }
    done > 0
}

#[cfg(test)]
mod tests;
