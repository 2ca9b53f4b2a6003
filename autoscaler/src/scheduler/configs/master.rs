//! The configuration LP and its column generation, shared by the plan
//! (`configs.rs`) and the cost bound (`bound.rs`).
//!
//! Rows: each shape's bundles are covered; each bin (a node type that may be
//! added, or for the bound a group of identical existing free capacities) is
//! used at most its room; worker bins at most `global` in all. Columns: one
//! node of a bin holding a multiset of bundles that fits. Column generation
//! adds, per round and per bin, the configuration worth the most at the
//! shapes' dual prices (a branch-and-bound knapsack) while it is worth more
//! than it costs. When a round adds nothing, every knapsack ran to the end and
//! the LP was solved to optimality, the LP's value is a lower bound on every
//! integer plan (`converged`).

use super::super::{Vector, fits, lp, sub_times};

/// Where configurations go.
#[derive(Debug, Clone)]
pub(in crate::scheduler) struct Bin {
    pub cap: Vector,
    pub cost: f64,
    /// How many nodes of it may be used.
    pub room: u64,
    /// Counts against the global `max_workers` (new nodes do; existing don't).
    pub worker: bool,
}

/// One node of bin `bin` holding `counts[i]` bundles of shape `i`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Column {
    pub bin: usize,
    pub counts: Vec<u64>,
}

/// Pivots per LP solve; past it the solve is not optimal (and the bound not
/// converged), and the plan rounds what it has.
const MAX_PIVOTS: usize = 500;

/// The work one plan or bound may spend.
pub(super) struct Budget {
    pub solves: usize,
    pub knapsack_nodes: usize,
    pub per_knapsack: usize,
}

/// The program: bins, shapes, and how many of each shape one node may hold.
pub(super) struct Master<'a> {
    pub bins: &'a [Bin],
    pub global: u64,
    pub shapes: &'a [Vector],
    pub per_node: &'a [u64],
}

/// An LP solution over the columns.
pub(super) struct Solved {
    /// Nodes of each column (0 for columns added after the last solve).
    pub x: Vec<f64>,
    pub value: f64,
    /// No column could improve it, and it was solved to optimality.
    pub converged: bool,
}

impl Master<'_> {
    /// One-shape columns: as many of each shape as a node of each bin holds.
    pub(super) fn initial_columns(&self, remaining: &[u64]) -> Vec<Column> {
        let mut columns = Vec::new();
        for (b, bin) in self.bins.iter().enumerate() {
            for (i, s) in self.shapes.iter().enumerate() {
                let k = fits(&bin.cap, s).min(remaining[i]).min(self.per_node[i]);
                if k > 0 {
                    let mut counts = vec![0; self.shapes.len()];
                    counts[i] = k;
                    columns.push(Column { bin: b, counts });
                }
            }
        }
        columns
    }

    /// Solves for `remaining`, generating columns for up to `rounds` rounds.
    /// `None` when the program is infeasible (or no solve was left).
    pub(super) fn solve(&self, remaining: &[u64], columns: &mut Vec<Column>, rounds: usize, budget: &mut Budget) -> Option<Solved> {
        for c in columns.iter_mut() {
            for (n, r) in c.counts.iter_mut().zip(remaining) {
                *n = (*n).min(*r);
            }
        }
        columns.retain(|c| c.counts.iter().any(|n| *n > 0) && self.bins[c.bin].room > 0);
        columns.dedup();
        let shapes: Vec<usize> = (0..self.shapes.len()).filter(|&i| remaining[i] > 0).collect();
        let total: u64 = remaining.iter().sum();
        let capped: Vec<usize> = (0..self.bins.len()).filter(|&b| self.bins[b].room < total).collect();
        let global = self.global < total && self.bins.iter().any(|b| b.worker);
        let most: Vec<u64> = remaining.iter().zip(self.per_node).map(|(r, n)| (*r).min(*n)).collect();
        let mut out: Option<Solved> = None;
        for round in 0..rounds.max(1) {
            if budget.solves == 0 {
                break;
            }
            budget.solves -= 1;
            let mut rows: Vec<(Vec<f64>, f64)> =
                shapes.iter().map(|&i| (columns.iter().map(|c| c.counts[i] as f64).collect(), remaining[i] as f64)).collect();
            for &b in &capped {
                rows.push((columns.iter().map(|c| if c.bin == b { -1.0 } else { 0.0 }).collect(), -(self.bins[b].room as f64)));
            }
            if global {
                rows.push((columns.iter().map(|c| if self.bins[c.bin].worker { -1.0 } else { 0.0 }).collect(), -(self.global as f64)));
            }
            let program = lp::Program { cost: columns.iter().map(|c| self.bins[c.bin].cost).collect(), rows };
            let solution = lp::solve_within(&program, MAX_PIVOTS)?;
            out = Some(Solved { x: solution.primal.clone(), value: solution.value, converged: false });
            if round + 1 >= rounds {
                break;
            }
            // Price: each shape at its dual; a node also pays its caps' duals.
            let mut price = vec![0.0; self.shapes.len()];
            for (k, &i) in shapes.iter().enumerate() {
                price[i] = solution.duals[k];
            }
            let global_dual = if global { solution.duals.last().copied().unwrap_or(0.0) } else { 0.0 };
            let mut added = false;
            let mut exact = solution.optimal;
            for (b, bin) in self.bins.iter().enumerate() {
                if bin.room == 0 {
                    continue;
                }
                if budget.knapsack_nodes == 0 {
                    exact = false;
                    break;
                }
                let cap_dual = capped.iter().position(|&c| c == b).map_or(0.0, |k| solution.duals[shapes.len() + k]);
                let limit = budget.knapsack_nodes.min(budget.per_knapsack);
                let (worth, counts, nodes) = knapsack(&bin.cap, self.shapes, &most, &price, limit);
                budget.knapsack_nodes = budget.knapsack_nodes.saturating_sub(nodes);
                exact &= nodes < limit;
                let cost = bin.cost + cap_dual + if bin.worker { global_dual } else { 0.0 };
                if worth > cost * (1.0 + 1e-9) + 1e-12 {
                    let c = Column { bin: b, counts };
                    if !columns.contains(&c) {
                        columns.push(c);
                        added = true;
                    }
                }
            }
            if !added {
                if let Some(o) = out.as_mut() {
                    o.converged = exact;
                }
                break;
            }
        }
        // Columns added after the last solve have no value yet.
        out.map(|mut o| {
            o.x.resize(columns.len(), 0.0);
            o
        })
    }
}

/// The configuration LP's value for `items` on `bins`, when column generation
/// converges within a generous budget: a lower bound on the cost of every plan
/// (each integer plan is a point of this LP). `None` otherwise, and above
/// [`super::MAX_SHAPES`] shapes.
pub(in crate::scheduler) fn lower_bound(bins: &[Bin], global: u64, items: &[(Vector, u64)]) -> Option<f64> {
    let mut shapes: Vec<Vector> = Vec::new();
    let mut remaining: Vec<u64> = Vec::new();
    for (v, n) in items.iter().filter(|(_, n)| *n > 0) {
        match shapes.iter().position(|s| s == v) {
            Some(i) => remaining[i] += n,
            None => {
                shapes.push(v.clone());
                remaining.push(*n);
            }
        }
        if shapes.len() > super::MAX_SHAPES {
            return None;
        }
    }
    if shapes.is_empty() {
        return Some(0.0);
    }
    let per_node = vec![u64::MAX; shapes.len()];
    let master = Master { bins, global, shapes: &shapes, per_node: &per_node };
    let mut columns = master.initial_columns(&remaining);
    let mut budget = Budget { solves: 40, knapsack_nodes: 40_000, per_knapsack: 20_000 };
    let solved = master.solve(&remaining, &mut columns, 40, &mut budget)?;
    solved.converged.then_some(solved.value)
}

/// The bundles (at most `most` of each) worth the most at `price` that fit in
/// `cap`: branch and bound, densest shapes first, with a bound from each
/// resource alone. Stops after `limit` nodes with the best so far; returns the
/// nodes it took too.
fn knapsack(cap: &[i64], shapes: &[Vector], most: &[u64], price: &[f64], limit: usize) -> (f64, Vec<u64>, usize) {
    let size = |s: &[i64]| -> f64 { s.iter().zip(cap).filter(|(n, _)| **n > 0).map(|(n, c)| *n as f64 / (*c).max(1) as f64).sum() };
    let mut items: Vec<usize> = (0..shapes.len()).filter(|&i| most[i] > 0 && price[i] > 1e-12 && fits(cap, &shapes[i]) > 0).collect();
    items.sort_by(|a, b| (price[*b] / size(&shapes[*b])).total_cmp(&(price[*a] / size(&shapes[*a]))));
    let mut s = Search { shapes, most, price, items, best: 0.0, best_counts: vec![0; shapes.len()], counts: vec![0; shapes.len()], nodes: 0, limit };
    s.dfs(0, &mut cap.to_vec(), 0.0);
    (s.best, s.best_counts, s.nodes)
}

struct Search<'a> {
    shapes: &'a [Vector],
    most: &'a [u64],
    price: &'a [f64],
    items: Vec<usize>,
    best: f64,
    best_counts: Vec<u64>,
    counts: Vec<u64>,
    nodes: usize,
    limit: usize,
}

impl Search<'_> {
    fn dfs(&mut self, k: usize, room: &mut Vec<i64>, value: f64) {
        if value > self.best + 1e-12 {
            self.best = value;
            self.best_counts.clone_from(&self.counts);
        }
        if k == self.items.len() || self.nodes >= self.limit {
            return;
        }
        self.nodes += 1;
        if value + self.bound(k, room) <= self.best + 1e-12 {
            return;
        }
        let i = self.items[k];
        let shape = &self.shapes[i];
        let most = fits(room, shape).min(self.most[i]);
        if k + 1 == self.items.len() {
            // The last shape: as many as fit is worth the most.
            let value = value + most as f64 * self.price[i];
            if value > self.best + 1e-12 {
                self.counts[i] = most;
                self.best = value;
                self.best_counts.clone_from(&self.counts);
                self.counts[i] = 0;
            }
            return;
        }
        // Each count tried below takes a node, so `limit` bounds the work.
        for a in (0..=most).rev() {
            sub_times(room, shape, a);
            self.counts[i] = a;
            self.dfs(k + 1, room, value + a as f64 * self.price[i]);
            self.counts[i] = 0;
            for (c, n) in room.iter_mut().zip(shape) {
                *c += n * a as i64;
            }
            if self.nodes >= self.limit {
                return;
            }
        }
    }

    /// What items `k..` could add to `room` at most: the least, over the
    /// resources, of that resource's fractional knapsack (items that do not
    /// use it counted in full).
    fn bound(&self, k: usize, room: &[i64]) -> f64 {
        let mut best = f64::INFINITY;
        for (r, have) in room.iter().enumerate() {
            let mut free = 0.0;
            let mut density: f64 = 0.0;
            for &i in &self.items[k..] {
                let need = self.shapes[i][r];
                if need > 0 {
                    density = density.max(self.price[i] / need as f64);
                } else {
                    free += self.price[i] * fits(room, &self.shapes[i]).min(self.most[i]) as f64;
                }
            }
            best = best.min(free + density * (*have).max(0) as f64);
        }
        best
    }
}
