//! The scaling decision: a pure function from the cluster's state and the config's
//! node types to what to launch and what to retire. No I/O, no clock: the caller
//! passes idle times in. Everything here is benchmarked and property-tested.
//!
//! Order of work, as Ray's schedulers do it:
//! 1. `min_workers` of each type (exempt from `upscaling_speed`);
//! 2. the `request_resources` constraint, packed against the *total* resources of
//!    all nodes as if idle; what does not fit gets new nodes (exempt from pacing);
//! 3. placement groups (STRICT_SPREAD bundles on distinct nodes, STRICT_PACK summed
//!    into one bundle, PACK/SPREAD flattened) and then task/actor demand, packed
//!    against *available* resources (pending and planned nodes count in full);
//!    what does not fit gets new nodes, paced by `upscaling_speed`;
//! 4. idle workers past their timeout are retired, keeping `min_workers` and any
//!    node the constraint or pending demand needs.
//!
//! New nodes are chosen to cost as little as possible per bundle placed: a type's
//! cost is its price when known, else proportional to its capacity (1 per CPU, 16
//! per GPU, 0.25 per GiB of memory, 1 per unit of other resources). A GPU type is
//! never used for demand that asks for no GPU while a non-GPU type fits it.
//!
//! Quantities are handled as dense integer vectors over the resource names of one
//! decision, and identical new nodes are kept as one group with a multiplicity, so
//! a decision costs O(shapes x node groups x resources) whatever the bundle counts.

use std::collections::{BTreeMap, HashMap};

pub mod bound;
mod configs;
mod lp;
mod patterns;
mod place;

use ray_common::ResourceSet;
use ray_common::resources::{GPU, MEMORY, OBJECT_STORE_MEMORY, RESOURCE_UNIT_SCALING};

/// A node type as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTypeSpec {
    /// Name.
    pub name: String,
    /// What one node offers.
    pub resources: ResourceSet,
    /// Kept up at all times.
    pub min_workers: u32,
    /// Cap.
    pub max_workers: u32,
    /// True for the head's type (never launched or retired here).
    pub is_head: bool,
    /// Price per hour when known; else derived from capacity.
    pub price: Option<f64>,
    /// Preference on ties (higher first).
    pub priority: i64,
}

/// A node that exists (running) or is on its way (pending).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Instance id (or node id for nodes the autoscaler did not launch).
    pub id: String,
    /// Its type.
    pub node_type: String,
    /// Total resources.
    pub total: ResourceSet,
    /// Free resources (equal to `total` for pending nodes).
    pub available: ResourceSet,
    /// Launched but not yet registered with the GCS.
    pub pending: bool,
    /// The head node.
    pub is_head: bool,
    /// Not launched by the autoscaler (e.g. joined with `ray start --address`):
    /// its capacity counts, but it is never counted as a worker or retired.
    pub unmanaged: bool,
    /// Draining: takes no work and is going away.
    pub draining: bool,
    /// How long it has been idle (0 when busy).
    pub idle_ms: u64,
}

/// Requests of one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    /// The shape.
    pub shape: ResourceSet,
    /// How many.
    pub count: u64,
}

/// Placement strategy of a placement group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementStrategy {
    /// Pack where possible.
    Pack,
    /// Spread where possible.
    Spread,
    /// All bundles on one node.
    StrictPack,
    /// Every bundle on a different node.
    StrictSpread,
}

impl PlacementStrategy {
    /// Parses Ray's names; unknown names mean PACK.
    pub fn parse(s: &str) -> Self {
        match s {
            "SPREAD" => Self::Spread,
            "STRICT_PACK" => Self::StrictPack,
            "STRICT_SPREAD" => Self::StrictSpread,
            _ => Self::Pack,
        }
    }
}

/// A placement group waiting to be placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Gang {
    /// Its bundles.
    pub bundles: Vec<ResourceSet>,
    /// How they must be placed.
    pub strategy: PlacementStrategy,
}

/// Everything the decision looks at.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Node types.
    pub types: Vec<NodeTypeSpec>,
    /// Global cap on worker nodes (head excluded).
    pub max_workers: u32,
    /// Pacing of demand-driven launches.
    pub upscaling_speed: f64,
    /// Existing and pending nodes.
    pub nodes: Vec<NodeView>,
    /// Task and actor demand by shape.
    pub demands: Vec<Demand>,
    /// Pending placement groups.
    pub gangs: Vec<Gang>,
    /// The request_resources constraint.
    pub constraints: Vec<Demand>,
    /// Idle timeout per node type, in ms (types not listed: never retired for idleness).
    pub idle_timeout_ms: HashMap<String, u64>,
}

/// Why a launch is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LaunchReason {
    /// Below `min_workers`.
    MinWorkers,
    /// The request_resources constraint.
    Constraint,
    /// A pending placement group.
    PlacementGroup,
    /// Queued tasks and actors.
    Demand,
}

impl LaunchReason {
    /// Words for logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::MinWorkers => "min_workers",
            Self::Constraint => "request_resources",
            Self::PlacementGroup => "pending placement groups",
            Self::Demand => "pending tasks/actors",
        }
    }
}

/// Why a node is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminateReason {
    /// Idle past its timeout.
    Idle,
    /// More nodes of its type than the type's max_workers.
    MaxWorkersPerType,
    /// More workers than the global max_workers.
    MaxWorkers,
    /// Its type is no longer in the config.
    UnknownType,
}

impl TerminateReason {
    /// Words for logs and status.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::MaxWorkersPerType => "max_workers_per_type",
            Self::MaxWorkers => "max workers",
            Self::UnknownType => "not in available_node_types",
        }
    }
}

/// The decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Nodes to launch now, by type and reason.
    pub launch: BTreeMap<(String, LaunchReason), u32>,
    /// Wanted for demand but held back by `upscaling_speed` this round.
    pub held_back: BTreeMap<String, u32>,
    /// Nodes to drain and terminate.
    pub terminate: Vec<(String, TerminateReason)>,
    /// Shapes no node type can ever hold.
    pub infeasible: Vec<Demand>,
    /// Placement groups no combination of node types can hold.
    pub infeasible_gangs: Vec<Gang>,
    /// Constraint bundles that cannot be held even at max size.
    pub infeasible_constraint: Vec<Demand>,
    /// Feasible shapes left waiting because max_workers caps were reached.
    pub capped: Vec<Demand>,
}

impl Decision {
    /// Launches per type, all reasons summed.
    pub fn launch_by_type(&self) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for ((t, _), n) in &self.launch {
            *m.entry(t.clone()).or_default() += n;
        }
        m
    }
}

/// Dense resource vectors over one decision's resource names.
#[derive(Clone)]
struct Space {
    index: HashMap<String, usize>,
}

type Vector = Vec<i64>;

impl Space {
    fn new(input: &Input) -> Self {
        let mut index = HashMap::new();
        let mut add = |s: &ResourceSet| {
            for (k, _) in s.iter() {
                let n = index.len();
                index.entry(k.to_string()).or_insert(n);
            }
        };
        input.types.iter().for_each(|t| add(&t.resources));
        input.nodes.iter().for_each(|n| add(&n.total));
        input.demands.iter().for_each(|d| add(&d.shape));
        input.constraints.iter().for_each(|d| add(&d.shape));
        input.gangs.iter().flat_map(|g| g.bundles.iter()).for_each(&mut add);
        Self { index }
    }

    fn vec(&self, s: &ResourceSet) -> Vector {
        let mut v = vec![0; self.index.len()];
        for (k, q) in s.iter() {
            if let Some(&i) = self.index.get(k) {
                v[i] = q.raw();
            }
        }
        v
    }

    fn gpu_index(&self) -> Option<usize> {
        self.index.get(GPU).copied()
    }
}

/// How many `shape`s fit into `cap`.
fn fits(cap: &[i64], shape: &[i64]) -> u64 {
    let mut best = u64::MAX;
    for (c, s) in cap.iter().zip(shape) {
        if *s > 0 {
            if *c < *s {
                return 0;
            }
            best = best.min((*c / *s) as u64);
        }
    }
    best
}

fn sub_times(cap: &mut [i64], shape: &[i64], k: u64) {
    for (c, s) in cap.iter_mut().zip(shape) {
        *c -= s.saturating_mul(k as i64);
    }
}

fn is_empty(v: &[i64]) -> bool {
    v.iter().all(|x| *x <= 0)
}

/// Capacity: one or more identical nodes.
#[derive(Clone)]
struct Slot {
    avail: Vector,
    count: u64,
    /// Index in `Input::nodes`, for existing nodes.
    node: Option<usize>,
}

/// Places `count` of `shape` first-fit into `pool`; returns what did not fit.
/// Marks existing nodes that received work in `used`.
fn pack(pool: &mut Vec<Slot>, shape: &[i64], mut count: u64, used: &mut [bool]) -> u64 {
    let mut i = 0;
    while i < pool.len() && count > 0 {
        let per = fits(&pool[i].avail, shape);
        if per == 0 {
            i += 1;
            continue;
        }
        let cap = per.saturating_mul(pool[i].count);
        if let Some(n) = pool[i].node {
            used[n] = true;
        }
        if count >= cap {
            sub_times(&mut pool[i].avail, shape, per);
            count -= cap;
        } else {
            // Split the group: full nodes, one partly used node, untouched rest.
            let full = count / per;
            let rest = count % per;
            let untouched = pool[i].count - full - u64::from(rest > 0);
            let base = pool[i].avail.clone();
            let node = pool[i].node;
            let mut replace = Vec::new();
            if full > 0 {
                let mut a = base.clone();
                sub_times(&mut a, shape, per);
                replace.push(Slot { avail: a, count: full, node });
            }
            if rest > 0 {
                let mut a = base.clone();
                sub_times(&mut a, shape, rest);
                replace.push(Slot { avail: a, count: 1, node });
            }
            if untouched > 0 {
                replace.push(Slot { avail: base, count: untouched, node });
            }
            count = 0;
            let n = replace.len();
            pool.splice(i..i + 1, replace);
            i += n;
            continue;
        }
        if is_empty(&pool[i].avail) {
            pool.remove(i); // keeps the opening order: first fit is in that order
        } else {
            i += 1;
        }
    }
    count
}

/// Sorts demand largest first: more resource kinds, then larger amounts.
fn order_key(v: &[i64]) -> (usize, i64) {
    (v.iter().filter(|x| **x > 0).count(), v.iter().sum())
}

#[derive(Clone)]
struct Planner<'a> {
    input: &'a Input,
    space: Space,
    type_vecs: Vec<Vector>,
    type_cost: Vec<f64>,
    type_has_gpu: Vec<bool>,
    /// Worker nodes per type: existing (incl. pending, excl. draining) + planned.
    count: Vec<u64>,
    workers: u64,
    decision: Decision,
}

fn capacity_cost(r: &ResourceSet) -> f64 {
    let mut c = 0.0;
    for (k, q) in r.iter() {
        let v = q.raw() as f64 / RESOURCE_UNIT_SCALING as f64;
        c += match k {
            "CPU" => v,
            GPU => 16.0 * v,
            MEMORY => 0.25 * v / (1u64 << 30) as f64,
            OBJECT_STORE_MEMORY => 0.0,
            k if k.starts_with("node:") || k.starts_with("accelerator_type:") => 0.0,
            _ => v,
        };
    }
    c + 0.01
}

impl<'a> Planner<'a> {
    fn new(input: &'a Input) -> Self {
        let space = Space::new(input);
        let type_vecs: Vec<Vector> = input.types.iter().map(|t| space.vec(&t.resources)).collect();
        let gpu = space.gpu_index();
        let type_has_gpu = type_vecs.iter().map(|v| gpu.is_some_and(|g| v[g] > 0)).collect();
        let type_cost = input.types.iter().map(|t| t.price.unwrap_or_else(|| capacity_cost(&t.resources))).collect();
        let mut count = vec![0u64; input.types.len()];
        let mut workers = 0;
        for n in input.nodes.iter().filter(|n| !n.is_head && !n.unmanaged && !n.draining) {
            if let Some(i) = input.types.iter().position(|t| t.name == n.node_type) {
                count[i] += 1;
            }
            workers += 1;
        }
        Self { input, space, type_vecs, type_cost, type_has_gpu, count, workers, decision: Decision::default() }
    }

    fn room(&self, t: usize) -> u64 {
        let ty = &self.input.types[t];
        if ty.is_head {
            return 0;
        }
        let per_type = u64::from(ty.max_workers).saturating_sub(self.count[t]);
        let global = u64::from(self.input.max_workers).saturating_sub(self.workers);
        per_type.min(global)
    }

    fn add(&mut self, t: usize, n: u64, reason: LaunchReason) {
        if n == 0 {
            return;
        }
        self.count[t] += n;
        self.workers += n;
        *self.decision.launch.entry((self.input.types[t].name.clone(), reason)).or_default() += n as u32;
    }

    /// True when some type (any size, ignoring caps) could hold `shape`, or an
    /// existing node could.
    fn feasible(&self, shape: &[i64]) -> bool {
        self.type_vecs.iter().enumerate().any(|(i, v)| {
            let ty = &self.input.types[i];
            (ty.is_head || ty.max_workers > 0) && fits(v, shape) > 0
        }) || self.input.nodes.iter().any(|n| !n.draining && fits(&self.space.vec(&n.total), shape) > 0)
    }

    /// The cheapest type per bundle for `remaining` of `shape`, among types with room.
    fn choose(&self, shape: &[i64], remaining: u64) -> Option<(usize, u64)> {
        let gpu = self.space.gpu_index();
        let wants_gpu = gpu.is_some_and(|g| shape[g] > 0);
        let mut best: Option<(usize, u64, bool, f64)> = None;
        for (i, v) in self.type_vecs.iter().enumerate() {
            let k = fits(v, shape);
            if k == 0 || self.room(i) == 0 {
                continue;
            }
            let wastes_gpu = !wants_gpu && self.type_has_gpu[i];
            let per_bundle = self.type_cost[i] / k.min(remaining.max(1)) as f64;
            let better = match &best {
                None => true,
                Some((bi, bk, bw, bc)) => {
                    let bp = self.input.types[*bi].priority;
                    let p = self.input.types[i].priority;
                    (wastes_gpu, per_bundle, std::cmp::Reverse(p), std::cmp::Reverse(k))
                        .partial_cmp(&(*bw, *bc, std::cmp::Reverse(bp), std::cmp::Reverse(*bk)))
                        == Some(std::cmp::Ordering::Less)
                }
            };
            if better {
                best = Some((i, k, wastes_gpu, per_bundle));
            }
        }
        best.map(|(i, k, _, _)| (i, k))
    }

    /// Puts `count` of `shape` on new nodes; returns how many found no room.
    fn launch_for(&mut self, pool: &mut Vec<Slot>, shape: &[i64], count: u64, reason: LaunchReason) -> u64 {
        self.launch_with(pool, shape, count, reason, false)
    }

    /// The type with the lowest price per slot for `shape` among types with
    /// room (the first-fit-decreasing baseline's choice).
    fn choose_per_slot(&self, shape: &[i64]) -> Option<(usize, u64)> {
        let mut best: Option<(usize, u64, f64)> = None;
        for (i, v) in self.type_vecs.iter().enumerate() {
            let k = fits(v, shape);
            if k == 0 || self.room(i) == 0 {
                continue;
            }
            let per_slot = self.type_cost[i] / k as f64;
            if best.is_none_or(|(_, _, b)| per_slot < b) {
                best = Some((i, k, per_slot));
            }
        }
        best.map(|(i, k, _)| (i, k))
    }

    /// [`Self::launch_for`], choosing types by price per slot when `per_slot`.
    fn launch_with(&mut self, pool: &mut Vec<Slot>, shape: &[i64], mut count: u64, reason: LaunchReason, per_slot: bool) -> u64 {
        while count > 0 {
            let choice = if per_slot { self.choose_per_slot(shape) } else { self.choose(shape, count) };
            let Some((t, per)) = choice else { break };
            let nodes = count.div_ceil(per).min(self.room(t));
            self.add(t, nodes, reason);
            let placed = (nodes * per).min(count);
            let full = placed / per;
            let rest = placed % per;
            let base = self.type_vecs[t].clone();
            if full > 0 {
                let mut a = base.clone();
                sub_times(&mut a, shape, per);
                if !is_empty(&a) {
                    pool.push(Slot { avail: a, count: full, node: None });
                }
            }
            if rest > 0 {
                let mut a = base;
                sub_times(&mut a, shape, rest);
                pool.push(Slot { avail: a, count: 1, node: None });
            }
            count -= placed;
        }
        count
    }
}

/// Makes the decision.
pub fn decide(input: &Input) -> Decision {
    let mut p = Planner::new(input);
    let n_nodes = input.nodes.len();

    // 1. min_workers.
    for t in 0..input.types.len() {
        let ty = &input.types[t];
        if ty.is_head {
            continue;
        }
        let want = u64::from(ty.min_workers.min(ty.max_workers)).saturating_sub(p.count[t]);
        let n = want.min(p.room(t));
        p.add(t, n, LaunchReason::MinWorkers);
    }
    let planned_min: Vec<(usize, u64)> = p
        .decision
        .launch
        .iter()
        .filter_map(|((name, _), n)| input.types.iter().position(|t| &t.name == name).map(|i| (i, u64::from(*n))))
        .collect();

    // 2. The request_resources constraint, against total capacity as if idle.
    let mut protected = vec![false; n_nodes];
    {
        let mut pool: Vec<Slot> = input
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.draining)
            .map(|(i, n)| Slot { avail: p.space.vec(&n.total), count: 1, node: Some(i) })
            .collect();
        for (t, n) in &planned_min {
            pool.push(Slot { avail: p.type_vecs[*t].clone(), count: *n, node: None });
        }
        let mut groups: Vec<(Vector, u64, &Demand)> =
            input.constraints.iter().filter(|d| d.count > 0 && !d.shape.is_empty()).map(|d| (p.space.vec(&d.shape), d.count, d)).collect();
        groups.sort_by_key(|g| std::cmp::Reverse(order_key(&g.0)));
        for (shape, count, d) in groups {
            let left = pack(&mut pool, &shape, count, &mut protected);
            if left == 0 {
                continue;
            }
            if !p.feasible(&shape) {
                p.decision.infeasible_constraint.push(Demand { shape: d.shape.clone(), count: left });
                continue;
            }
            let left = p.launch_for(&mut pool, &shape, left, LaunchReason::Constraint);
            if left > 0 {
                p.decision.infeasible_constraint.push(Demand { shape: d.shape.clone(), count: left });
            }
        }
    }

    // 3. Placement groups, then tasks and actors, against available capacity.
    let used = place::place(&mut p);

    // Pace demand-driven launches: per type at most max(5, speed x running) in flight.
    let pending_by_type = |name: &str| input.nodes.iter().filter(|n| n.pending && n.node_type == name).count() as u64;
    let running_by_type = |name: &str| input.nodes.iter().filter(|n| !n.pending && !n.draining && n.node_type == name).count() as u64;
    let keys: Vec<(String, LaunchReason)> = p.decision.launch.keys().cloned().collect();
    for key in keys {
        if key.1 != LaunchReason::Demand {
            continue;
        }
        let speed = if input.upscaling_speed > 0.0 { input.upscaling_speed } else { 1.0 };
        let cap = ((speed * running_by_type(&key.0).max(1) as f64) as u64).max(5);
        let allowed = cap.saturating_sub(pending_by_type(&key.0)) as u32;
        if let Some(n) = p.decision.launch.get_mut(&key)
            && *n > allowed
        {
            *p.decision.held_back.entry(key.0.clone()).or_default() += *n - allowed;
            *n = allowed;
        }
    }
    p.decision.launch.retain(|_, n| *n > 0);

    // 4. Retire nodes: unknown types, over caps, then idle past timeout.
    let mut alive: Vec<u64> = vec![0; input.types.len()];
    let mut workers: u64 = 0;
    for n in input.nodes.iter().filter(|n| !n.is_head && !n.unmanaged && !n.draining) {
        if let Some(t) = input.types.iter().position(|t| t.name == n.node_type) {
            alive[t] += 1;
        }
        workers += 1;
    }
    let retire = |p: &mut Planner, idx: usize, why: TerminateReason, alive: &mut Vec<u64>, workers: &mut u64| {
        let n = &input.nodes[idx];
        if let Some(t) = input.types.iter().position(|t| t.name == n.node_type) {
            alive[t] -= 1;
        }
        *workers -= 1;
        p.decision.terminate.push((n.id.clone(), why));
    };
    let mut retired = vec![false; n_nodes];
    // Candidates longest-idle first; busy nodes last.
    let mut order: Vec<usize> =
        (0..n_nodes).filter(|&i| !input.nodes[i].is_head && !input.nodes[i].unmanaged && !input.nodes[i].draining).collect();
    order.sort_by_key(|&i| (input.nodes[i].pending, std::cmp::Reverse(input.nodes[i].idle_ms)));
    for &i in &order {
        let n = &input.nodes[i];
        match input.types.iter().position(|t| t.name == n.node_type) {
            None if !n.pending => {
                retire(&mut p, i, TerminateReason::UnknownType, &mut alive, &mut workers);
                retired[i] = true;
            }
            Some(t) if alive[t] > u64::from(input.types[t].max_workers) && n.idle_ms > 0 => {
                retire(&mut p, i, TerminateReason::MaxWorkersPerType, &mut alive, &mut workers);
                retired[i] = true;
            }
            _ => {}
        }
    }
    for &i in &order {
        if retired[i] || workers <= u64::from(input.max_workers) {
            continue;
        }
        if input.nodes[i].idle_ms > 0 {
            retire(&mut p, i, TerminateReason::MaxWorkers, &mut alive, &mut workers);
            retired[i] = true;
        }
    }
    for &i in &order {
        let n = &input.nodes[i];
        if retired[i] || n.pending || n.idle_ms == 0 || protected[i] || used[i] {
            continue;
        }
        let Some(t) = input.types.iter().position(|t| t.name == n.node_type) else { continue };
        let Some(&timeout) = input.idle_timeout_ms.get(&n.node_type) else { continue };
        if n.idle_ms < timeout || alive[t] <= u64::from(input.types[t].min_workers.min(input.types[t].max_workers)) {
            continue;
        }
        retire(&mut p, i, TerminateReason::Idle, &mut alive, &mut workers);
    }
    p.decision
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
