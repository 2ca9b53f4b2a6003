//! What a decision costs per hour, and a proven lower bound on what any plan
//! that places the same demand could cost: the answer to "is this plan good?".
//!
//! The bound is a linear program over how many nodes of each type to add
//! (`lp.rs`), with these rows, each true of every plan:
//! - for each *feasibility class* (the set of node types that can hold a
//!   shape) and each resource: the bundles that only those types can hold need
//!   that much of the resource from them, less what existing nodes able to hold
//!   them have free (the aggregate LP, made tighter per class, so CPU work that
//!   only GPU nodes can take counts against GPU nodes alone);
//! - for each shape: a node of type `t` holds at most `fits(t, shape)` of it;
//! - for each STRICT_SPREAD group: one node per bundle;
//! - `max_workers`, per type and in all.
//!
//! The configuration LP (`configs/master.rs`: one column per way to fill one
//! node) is tighter, since it knows bundles do not split across nodes; when it
//! converges (up to 32 shapes, up to 16 distinct free capacities among the
//! existing nodes) the larger of the two is the bound.
//!
//! `min_workers` launches are paid by every plan and counted as given. The
//! `request_resources` constraint is bounded on its own against total capacity
//! (as `decide` packs it) and the larger of the two bounds is taken. When the
//! plan leaves feasible demand unplaced (capped) there is no bound: a plan that
//! places less can cost less than one that places everything.

use std::collections::{BTreeMap, HashSet};

use super::lp::{self, Outcome, Program};
use super::configs::ConfigBin;
use super::{Decision, Input, LaunchReason, PlacementStrategy, Space, Vector, capacity_cost, fits};

/// The cost of a decision and the bound beside it, per hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Costing {
    /// What the nodes the decision launches cost per hour, those held back by
    /// `upscaling_speed` included (they are part of the plan, only later).
    pub plan_per_hour: f64,
    /// No plan that places the same demand can cost less; `None` when the plan
    /// leaves feasible demand unplaced.
    pub lower_bound_per_hour: Option<f64>,
}

/// The hourly cost of one node of each type: its price when known, else the
/// capacity-derived cost the scheduler uses.
pub fn type_costs(input: &Input) -> Vec<f64> {
    input.types.iter().map(|t| t.price.unwrap_or_else(|| capacity_cost(&t.resources))).collect()
}

/// Costs the decision and bounds it.
pub fn costing(input: &Input, decision: &Decision) -> Costing {
    let costs = type_costs(input);
    let index = |name: &str| input.types.iter().position(|t| t.name == name);
    let mut plan = 0.0;
    let mut min_workers_cost = 0.0;
    let mut min_launch: Vec<u64> = vec![0; input.types.len()];
    for ((name, reason), n) in &decision.launch {
        if let Some(t) = index(name) {
            plan += costs[t] * f64::from(*n);
            if *reason == LaunchReason::MinWorkers {
                min_workers_cost += costs[t] * f64::from(*n);
                min_launch[t] += u64::from(*n);
            }
        }
    }
    for (name, n) in &decision.held_back {
        if let Some(t) = index(name) {
            plan += costs[t] * f64::from(*n);
        }
    }
    let lower_bound_per_hour = if decision.capped.is_empty() {
        bound(input, decision, &costs, &min_launch).map(|b| b + min_workers_cost)
    } else {
        None
    };
    Costing { plan_per_hour: plan, lower_bound_per_hour }
}

/// The larger of the two bounds (demand; constraint), above `min_workers`.
fn bound(input: &Input, decision: &Decision, costs: &[f64], min_launch: &[u64]) -> Option<f64> {
    let space = Space::new(input);
    let type_vecs: Vec<Vector> = input.types.iter().map(|t| space.vec(&t.resources)).collect();
    // Nodes each type may still add, after existing nodes and min_workers.
    let mut count = vec![0u64; input.types.len()];
    let mut workers = 0u64;
    for n in input.nodes.iter().filter(|n| !n.is_head && !n.unmanaged && !n.draining) {
        if let Some(t) = input.types.iter().position(|t| t.name == n.node_type) {
            count[t] += 1;
        }
        workers += 1;
    }
    for (t, n) in min_launch.iter().enumerate() {
        count[t] += n;
        workers += n;
    }
    let global = u64::from(input.max_workers).saturating_sub(workers);
    let vars: Vec<Var> = input
        .types
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_head)
        .map(|(i, t)| Var { cap: type_vecs[i].clone(), cost: costs[i], room: u64::from(t.max_workers).saturating_sub(count[i]).min(global) })
        .filter(|v| v.room > 0)
        .collect();
    let min_nodes = || min_launch.iter().enumerate().flat_map(|(t, n)| std::iter::repeat_n(type_vecs[t].clone(), *n as usize));

    // Tasks, actors and placement groups, against free capacity.
    let live = input.nodes.iter().filter(|n| !n.draining);
    let fixed: Vec<Vector> = live.clone().map(|n| space.vec(if n.pending { &n.total } else { &n.available })).chain(min_nodes()).collect();
    let infeasible: HashSet<Vector> = decision.infeasible.iter().map(|d| space.vec(&d.shape)).collect();
    let mut items: Vec<(Vector, u64)> = Vec::new();
    let mut spreads: Vec<Vec<Vector>> = Vec::new();
    for g in input.gangs.iter().filter(|g| !decision.infeasible_gangs.contains(g)) {
        let shapes: Vec<Vector> = g.bundles.iter().map(|b| space.vec(b)).collect();
        match g.strategy {
            PlacementStrategy::StrictPack => {
                let mut sum = vec![0i64; shapes.first().map_or(0, Vec::len)];
                for s in &shapes {
                    for (a, b) in sum.iter_mut().zip(s) {
                        *a += b;
                    }
                }
                items.push((sum, 1));
            }
            PlacementStrategy::StrictSpread => {
                items.extend(shapes.iter().map(|s| (s.clone(), 1)));
                spreads.push(shapes);
            }
            PlacementStrategy::Pack | PlacementStrategy::Spread => items.extend(shapes.into_iter().map(|s| (s, 1))),
        }
    }
    for d in input.demands.iter().filter(|d| d.count > 0 && !d.shape.is_empty()) {
        let v = space.vec(&d.shape);
        if !infeasible.contains(&v) {
            items.push((v, d.count));
        }
    }
    let demand = solve(&vars, global, &fixed, &items, &spreads)?;
    let demand = demand.max(configuration_bound(&vars, global, &fixed, &items).unwrap_or(0.0));

    // The request_resources constraint, against total capacity as if idle.
    let fixed: Vec<Vector> = live.map(|n| space.vec(&n.total)).chain(min_nodes()).collect();
    let infeasible: HashSet<Vector> = decision.infeasible_constraint.iter().map(|d| space.vec(&d.shape)).collect();
    let items: Vec<(Vector, u64)> = input
        .constraints
        .iter()
        .filter(|d| d.count > 0 && !d.shape.is_empty())
        .map(|d| (space.vec(&d.shape), d.count))
        .filter(|(v, _)| !infeasible.contains(v))
        .collect();
    let constraint = solve(&vars, global, &fixed, &items, &[])?;
    Some(demand.max(constraint))
}

/// Above this many distinct free capacities of existing nodes the
/// configuration LP is not tried.
const MAX_FIXED_KINDS: usize = 16;

/// The configuration LP's bound (`configs/master.rs`): existing nodes' free
/// capacity as bins that cost nothing, grouped by capacity; `None` when not
/// tried or when it did not converge.
fn configuration_bound(vars: &[Var], global: u64, fixed: &[Vector], items: &[(Vector, u64)]) -> Option<f64> {
    let mut bins: Vec<ConfigBin> = Vec::new();
    for f in fixed.iter().filter(|f| f.iter().any(|r| *r > 0)) {
        match bins.iter_mut().find(|b| &b.cap == f) {
            Some(b) => b.room += 1,
            None => bins.push(ConfigBin { cap: f.clone(), cost: 0.0, room: 1, worker: false }),
        }
        if bins.len() > MAX_FIXED_KINDS {
            return None;
        }
    }
    bins.extend(vars.iter().map(|v| ConfigBin { cap: v.cap.clone(), cost: v.cost, room: v.room, worker: true }));
    super::configs::lower_bound(&bins, global, items)
}

/// Above this many feasibility classes, or shapes, their rows are left out
/// (see `program`).
const MAX_ROWS_OF_A_KIND: usize = 64;

/// A node type that may still be added.
struct Var {
    cap: Vector,
    cost: f64,
    room: u64,
}

/// Bits over the fixed nodes (existing ones and min_workers launches).
type Bits = Vec<u64>;

fn bits_with(len: usize, f: impl Fn(usize) -> bool) -> Bits {
    let mut b = vec![0u64; len.div_ceil(64)];
    for i in (0..len).filter(|i| f(*i)) {
        b[i / 64] |= 1 << (i % 64);
    }
    b
}

fn bits_iter(b: &Bits) -> impl Iterator<Item = usize> + '_ {
    b.iter().enumerate().flat_map(|(w, word)| (0..64).filter(move |i| word & (1 << i) != 0).map(move |i| w * 64 + i))
}

/// Solves the rows described in the module's documentation.
fn solve(vars: &[Var], global: u64, fixed: &[Vector], items: &[(Vector, u64)], spreads: &[Vec<Vector>]) -> Option<f64> {
    match lp::solve(&program(vars, global, fixed, items, spreads).0) {
        Outcome::Bound(b) => Some(b),
        Outcome::Infeasible => None,
    }
}

/// What a row of the program stands for, to price bundles by its dual.
enum Tag {
    /// Resource `r` of the bundles only the types in the class can hold.
    Class(Vec<usize>, usize),
    /// How many of one shape nodes hold.
    Shape(Vector),
    /// Anything else (spread, caps).
    Other,
}

/// What each shape of `items` is worth at the optimum of the program: the
/// dual prices of the rows it counts in (a bundle's share of the cheapest
/// capacity for the whole demand). `None` when the program is infeasible.
pub(super) fn bundle_values(type_vecs: &[Vector], costs: &[f64], room: &[u64], global: u64, items: &[(Vector, u64)]) -> Option<Vec<f64>> {
    let index: Vec<usize> = (0..type_vecs.len()).filter(|&t| room[t] > 0).collect();
    let vars: Vec<Var> = index.iter().map(|&t| Var { cap: type_vecs[t].clone(), cost: costs[t], room: room[t] }).collect();
    let (program, tags) = program(&vars, global, &[], items, &[]);
    let solution = lp::solve_full(&program)?;
    let holders = |v: &Vector| (0..vars.len()).filter(|&t| fits(&vars[t].cap, v) > 0).collect::<Vec<_>>();
    Some(
        items
            .iter()
            .map(|(v, _)| {
                let mine = holders(v);
                tags.iter()
                    .zip(&solution.duals)
                    .map(|(tag, y)| match tag {
                        Tag::Class(class, r) if mine.iter().all(|t| class.contains(t)) => y * v[*r].max(0) as f64,
                        Tag::Shape(s) if s == v => *y,
                        _ => 0.0,
                    })
                    .sum()
            })
            .collect(),
    )
}

/// Builds the rows described in the module's documentation, and what each is.
fn program(vars: &[Var], global: u64, fixed: &[Vector], items: &[(Vector, u64)], spreads: &[Vec<Vector>]) -> (Program, Vec<Tag>) {
    if items.is_empty() && spreads.is_empty() {
        return (Program { cost: vars.iter().map(|v| v.cost).collect(), rows: Vec::new() }, Vec::new());
    }
    let mut tags: Vec<Tag> = Vec::new();
    let dims = items.first().map(|(v, _)| v.len()).or(vars.first().map(|v| v.cap.len())).unwrap_or(0);
    // Merge equal shapes; per shape: the types that can hold it, the fixed
    // nodes that can, and how many those fixed nodes hold at most.
    let mut merged: BTreeMap<Vector, u64> = BTreeMap::new();
    for (v, c) in items {
        *merged.entry(v.clone()).or_default() += c;
    }
    struct Shape {
        v: Vector,
        count: u64,
        types: Vec<usize>,
        fixed: Bits,
        fixed_hold: u64,
    }
    let describe = |v: &Vector| {
        let types: Vec<usize> = (0..vars.len()).filter(|&t| fits(&vars[t].cap, v) > 0).collect();
        let fixed_bits = bits_with(fixed.len(), |n| fits(&fixed[n], v) > 0);
        (types, fixed_bits)
    };
    let few_shapes = merged.len() <= MAX_ROWS_OF_A_KIND;
    let shapes: Vec<Shape> = merged
        .into_iter()
        .map(|(v, count)| {
            let (types, fixed_bits) = describe(&v);
            // Only the per-shape rows use it, and they exist for few shapes.
            let fixed_hold = if few_shapes { bits_iter(&fixed_bits).map(|n| fits(&fixed[n], &v)).fold(0u64, u64::saturating_add) } else { 0 };
            Shape { v, count, types, fixed: fixed_bits, fixed_hold }
        })
        .collect();
    let mut rows: Vec<(Vec<f64>, f64)> = Vec::new();
    // Feasibility classes.
    // The program stays small enough to solve every autoscaler round: with
    // many classes, one class of every type (the plain aggregate rows); with
    // many shapes, no per-shape rows. Both only drop rows, so the bound stays
    // valid, just weaker.
    let all_types: Vec<usize> = (0..vars.len()).collect();
    let mut classes: HashSet<&Vec<usize>> = shapes.iter().filter(|s| !s.types.is_empty()).map(|s| &s.types).collect();
    if classes.len() > MAX_ROWS_OF_A_KIND {
        classes = HashSet::from([&all_types]);
    }
    for class in classes {
        let members: Vec<&Shape> = shapes.iter().filter(|s| s.types.iter().all(|t| class.contains(t))).collect();
        let mut union = vec![0u64; fixed.len().div_ceil(64)];
        for s in &members {
            for (u, b) in union.iter_mut().zip(&s.fixed) {
                *u |= b;
            }
        }
        for r in 0..dims {
            let need: f64 = members.iter().map(|s| s.v[r] as f64 * s.count as f64).sum();
            let free: f64 = bits_iter(&union).map(|n| fixed[n][r].max(0) as f64).sum();
            if need - free > 0.0 {
                let coeffs = (0..vars.len()).map(|t| if class.contains(&t) { vars[t].cap[r].max(0) as f64 } else { 0.0 }).collect();
                rows.push((coeffs, need - free));
                tags.push(Tag::Class(class.clone(), r));
            }
        }
    }
    // Per shape: how many one node holds.
    for s in shapes.iter().filter(|_| few_shapes) {
        let need = s.count.saturating_sub(s.fixed_hold);
        if need > 0 {
            let coeffs = (0..vars.len()).map(|t| if s.types.contains(&t) { fits(&vars[t].cap, &s.v) as f64 } else { 0.0 }).collect();
            rows.push((coeffs, need as f64));
            tags.push(Tag::Shape(s.v.clone()));
        }
    }
    // STRICT_SPREAD: a node per bundle. Groups over the same types keep the
    // largest need.
    let mut spread_rows: BTreeMap<Vec<usize>, f64> = BTreeMap::new();
    for g in spreads {
        let mut types: Vec<usize> = Vec::new();
        let mut union = vec![0u64; fixed.len().div_ceil(64)];
        for v in g {
            let (t, f) = describe(v);
            types.extend(t);
            for (u, b) in union.iter_mut().zip(&f) {
                *u |= b;
            }
        }
        types.sort_unstable();
        types.dedup();
        let need = g.len() as f64 - bits_iter(&union).count() as f64;
        if need > 0.0 {
            let e = spread_rows.entry(types).or_insert(0.0);
            *e = e.max(need);
        }
    }
    for (types, need) in spread_rows {
        rows.push(((0..vars.len()).map(|t| if types.contains(&t) { 1.0 } else { 0.0 }).collect(), need));
        tags.push(Tag::Other);
    }
    // Caps.
    for (t, v) in vars.iter().enumerate() {
        let mut coeffs = vec![0.0; vars.len()];
        coeffs[t] = -1.0;
        rows.push((coeffs, -(v.room as f64)));
        tags.push(Tag::Other);
    }
    rows.push((vec![-1.0; vars.len()], -(global as f64)));
    tags.push(Tag::Other);
    (Program { cost: vars.iter().map(|v| v.cost).collect(), rows }, tags)
}

#[cfg(test)]
mod tests;
