//! Step 3 of `decide`: placement groups, then tasks and actors, on free
//! capacity and on new nodes. The most constrained shapes go first (those the
//! fewest node types can hold), so the nodes only they can use are opened first
//! and the spare room on them goes to work that fits anywhere; then the largest
//! first. Each shape fills the spare room of chosen nodes before it takes new
//! nodes of the cheapest type per bundle; three other plans (first-fit-
//! decreasing, patterns, the configuration LP) are made beside it and the
//! cheapest that places as much is kept.

use std::collections::HashMap;

use ray_common::ResourceSet;

use super::{Demand, LaunchReason, Planner, PlacementStrategy, Slot, Vector, fits, is_empty, order_key, pack, sub_times};

/// The pool before step 3: existing nodes' free capacity (pending ones in
/// full) and the nodes steps 1 and 2 launch.
fn base_pool(p: &Planner) -> Vec<Slot> {
    let mut pool: Vec<Slot> = p
        .input
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.draining)
        .map(|(i, n)| Slot { avail: p.space.vec(if n.pending { &n.total } else { &n.available }), count: 1, node: Some(i), })
        .collect();
    for ((name, _), n) in &p.decision.launch {
        if let Some(t) = p.input.types.iter().position(|t| &t.name == name) {
            pool.push(Slot { avail: p.type_vecs[t].clone(), count: u64::from(*n), node: None, });
        }
    }
    pool
}

/// How STRICT_SPREAD bundles that need new nodes get them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spreading {
    /// A node each, of the cheapest type per bundle among as many as the later
    /// groups' bundles of the shape could share it.
    Shared,
    /// A node each, of the cheapest type for the bundle alone.
    Alone,
    /// With the configuration LP, beside the other work.
    Joint,
}

/// Places step 3's demand; returns which existing nodes received work.
///
/// When STRICT_SPREAD groups need new nodes, they are planned three ways
/// (`Spreading`) and the cheapest plan that places as much is kept.
pub(super) fn place(p: &mut Planner) -> Vec<bool> {
    let start = p.clone();
    let nodes = p.input.nodes.len();
    // Only a joint plan gives up (`None`).
    let mut work = super::configs::decision_budget();
    let (mut used, spread_launched) = place_with(p, Spreading::Shared, &mut work).unwrap_or_else(|| (vec![false; nodes], false));
    if spread_launched {
        for how in [Spreading::Alone, Spreading::Joint] {
            let mut q = start.clone();
            if let Some((used_q, _)) = place_with(&mut q, how, &mut work)
                && capped(&q) <= capped(p)
                && cost(&q) < cost(p) - 1e-9
            {
                *p = q;
                used = used_q;
            }
        }
    }
    used
}

fn capped(p: &Planner) -> u64 {
    p.decision.capped.iter().map(|d| d.count).sum::<u64>()
}

/// One plan for step 3, STRICT_SPREAD bundles that need new nodes placed as
/// `how` says (`None` when the configuration LP cannot take them). Returns the
/// existing nodes that received work, and whether STRICT_SPREAD groups needed
/// new nodes.
fn place_with(p: &mut Planner, how: Spreading, work: &mut super::configs::Work) -> Option<(Vec<bool>, bool)> {
    let mut used = vec![false; p.input.nodes.len()];
    let mut spread: Vec<super::configs::Spread> = Vec::new();
    let mut spread_launched = false;
    let mut pool = base_pool(p);
    let mut flat: Vec<(Vector, u64, ResourceSet, LaunchReason)> = Vec::new();
    // For each shape, the feasible STRICT_SPREAD groups not yet placed that
    // have a bundle of it (each could share a node with one).
    let mut later: HashMap<Vector, u64> = HashMap::new();
    let space = p.space.clone();
    let distinct = |g: &super::Gang| {
        let mut shapes: Vec<Vector> = g.bundles.iter().map(|b| space.vec(b)).collect();
        shapes.sort();
        shapes.dedup();
        shapes
    };
    for g in p.input.gangs.iter().filter(|g| g.strategy == PlacementStrategy::StrictSpread) {
        let shapes = distinct(g);
        if shapes.iter().all(|s| p.feasible(s)) {
            for s in shapes {
                *later.entry(s).or_default() += 1;
            }
        }
    }
    for g in &p.input.gangs {
        match g.strategy {
            PlacementStrategy::StrictSpread => {
                let shapes: Vec<Vector> = g.bundles.iter().map(|b| p.space.vec(b)).collect();
                if shapes.iter().any(|s| !p.feasible(s)) {
                    p.decision.infeasible_gangs.push(g.clone());
                    continue;
                }
                for s in distinct(g) {
                    if let Some(n) = later.get_mut(&s) {
                        *n = n.saturating_sub(1);
                    }
                }
                // One bundle per distinct node: existing nodes first, then new ones.
                let mut taken = vec![false; pool.len()];
                let mut unplaced = Vec::new();
                for s in &shapes {
                    match (0..pool.len()).find(|&i| !taken[i] && pool[i].count == 1 && fits(&pool[i].avail, s) > 0) {
                        Some(i) => {
                            taken[i] = true;
                            sub_times(&mut pool[i].avail, s, 1);
                            if let Some(n) = pool[i].node {
                                used[n] = true;
                            }
                        }
                        None => unplaced.push(s.clone()),
                    }
                }
                if unplaced.is_empty() {
                    continue;
                }
                spread_launched = true;
                if how == Spreading::Joint {
                    spread.push(super::configs::Spread { gang: g, shapes: unplaced });
                    continue;
                }
                let mut stuck = false;
                for s in unplaced {
                    // Each new node holds one bundle of this group; the groups
                    // after it (and other work) may use the rest, so the type is
                    // chosen by the price per bundle among that many.
                    let share = if how == Spreading::Shared { 1 + later.get(&s).copied().unwrap_or(0) } else { 1 };
                    match p.choose(&s, share) {
                        Some((t, _)) => {
                            p.add(t, 1, LaunchReason::PlacementGroup);
                            let mut avail = p.type_vecs[t].clone();
                            sub_times(&mut avail, &s, 1);
                            if !is_empty(&avail) {
                                pool.push(Slot { avail, count: 1, node: None });
                            }
                        }
                        None => stuck = true,
                    }
                }
                if stuck {
                    p.decision.capped.extend(g.bundles.iter().map(|b| Demand { shape: b.clone(), count: 1 }));
                }
            }
            PlacementStrategy::StrictPack => {
                let mut sum = ResourceSet::new();
                for b in &g.bundles {
                    sum.add(b);
                }
                let v = p.space.vec(&sum);
                if !p.feasible(&v) {
                    p.decision.infeasible_gangs.push(g.clone());
                    continue;
                }
                flat.push((v, 1, sum, LaunchReason::PlacementGroup));
            }
            PlacementStrategy::Pack | PlacementStrategy::Spread => {
                let shapes: Vec<Vector> = g.bundles.iter().map(|b| p.space.vec(b)).collect();
                if shapes.iter().any(|s| !p.feasible(s)) {
                    p.decision.infeasible_gangs.push(g.clone());
                    continue;
                }
                for (v, b) in shapes.into_iter().zip(&g.bundles) {
                    flat.push((v, 1, b.clone(), LaunchReason::PlacementGroup));
                }
            }
        }
    }
    for d in p.input.demands.iter().filter(|d| d.count > 0 && !d.shape.is_empty()) {
        flat.push((p.space.vec(&d.shape), d.count, d.shape.clone(), LaunchReason::Demand));
    }
    // The most constrained shapes first (those fewest node types can hold), so
    // the nodes only they can use are opened first and the spare room on them
    // goes to work that fits anywhere; then the largest first.
    let holders = |v: &Vector| {
        p.type_vecs.iter().zip(&p.input.types).filter(|(t, ty)| !ty.is_head && ty.max_workers > 0 && fits(t, v) > 0).count()
    };
    flat.sort_by_cached_key(|g| (holders(&g.0), std::cmp::Reverse(order_key(&g.0))));
    // Existing capacity (and the nodes steps 1 and 2 and STRICT_SPREAD groups
    // open) first.
    let mut left: Vec<(Vector, u64, ResourceSet, LaunchReason)> = Vec::new();
    let mut merged: HashMap<(Vector, LaunchReason), usize> = HashMap::new();
    for (shape, count, set, reason) in flat {
        let n = pack(&mut pool, &shape, count, &mut used);
        if n == 0 {
            continue;
        }
        if !p.feasible(&shape) {
            p.decision.infeasible.push(Demand { shape: set, count: n });
            continue;
        }
        // One entry per shape and reason (placement groups' bundles come one
        // by one), so the limits on shapes below count distinct shapes.
        match merged.get(&(shape.clone(), reason)) {
            Some(&k) => left[k].1 += n,
            None => {
                merged.insert((shape.clone(), reason), left.len());
                left.push((shape, n, set, reason));
            }
        }
    }
    // Then new nodes: shape by shape, by first-fit-decreasing (largest first,
    // the type with the lowest price per slot), by patterns, or by the
    // configuration LP; the cheapest plan that places as much wins, so it is
    // never worse than any of them. Beyond their MAX_SHAPES distinct shapes
    // patterns and the LP would cost more time than one decision may take
    // (10 ms at 100k bundles x 1,000 nodes); the other two always run.
    if how == Spreading::Joint {
        *p = super::configs::plan(p, &left, &spread, work)?;
        return Some((used, spread_launched));
    }
    // No shape left fits what is in the pool now: each was packed into every
    // slot with room before it was left, and slots only shrink. So the new
    // nodes' plans start from an empty pool.
    pool.clear();
    let patterned = super::patterns::plan(p, &left);
    let configured = super::configs::plan(p, &left, &[], work);
    let ffd = {
        let mut q = p.clone();
        let mut pool = Vec::new();
        let mut order: Vec<&(Vector, u64, ResourceSet, LaunchReason)> = left.iter().collect();
        // Largest first; equal keys by the shape itself, so the order does not
        // depend on how the demand was listed.
        order.sort_by(|a, b| (order_key(&b.0), &b.0).cmp(&(order_key(&a.0), &a.0)));
        let mut scratch = vec![false; used.len()];
        for (shape, count, set, reason) in order {
            let n = pack(&mut pool, shape, *count, &mut scratch);
            let n = q.launch_with(&mut pool, shape, n, *reason, true);
            if n > 0 {
                q.decision.capped.push(Demand { shape: set.clone(), count: n });
            }
        }
        q
    };
    for (shape, count, set, reason) in left {
        // The spare room of nodes opened for the shapes before this one first.
        let n = pack(&mut pool, &shape, count, &mut used);
        let n = p.launch_for(&mut pool, &shape, n, reason);
        if n > 0 {
            p.decision.capped.push(Demand { shape: set, count: n });
        }
    }
    for q in patterned.into_iter().chain(Some(ffd)).chain(configured) {
        if capped(&q) <= capped(p) && cost(&q) < cost(p) - 1e-9 {
            *p = q;
        }
    }
    Some((used, spread_launched))
}

/// What the planned launches cost per hour (at the scheduler's type costs).
pub(super) fn cost(p: &Planner) -> f64 {
    p.decision
        .launch
        .iter()
        .filter_map(|((name, _), n)| p.input.types.iter().position(|t| &t.name == name).map(|t| p.type_cost[t] * f64::from(*n)))
        .sum()
}
