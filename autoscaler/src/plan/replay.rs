//! `ray plan --replay TRACE`: the autoscaler's decisions stepped through a
//! demand trace over simulated time, so the node count and cost curve of a
//! config (its `max_workers`, `upscaling_speed`, idle timeouts and prices) can
//! be seen before any money is spent.
//!
//! The trace is a step function of demand:
//!
//! ```yaml
//! steps:
//!   - {at: 0, bundles: [{resources: {CPU: 1}, count: 200}]}
//!   - {at: 900, bundles: [{resources: {CPU: 1}, count: 20}]}
//!   - {at: 1800}                      # nothing wanted from here on
//! ```
//!
//! Every tick the demand of the current step is placed first-fit on the nodes
//! that are up (the head and workers whose launch delay has passed); what does
//! not fit is the pending demand `decide` sees, together with the nodes still
//! starting. Launches take `launch_delay_s` to come up and are billed from
//! launch; idle workers retire after their idle timeout, as in the monitor. Not
//! modelled: STRICT_SPREAD placement of running groups (their bundles are placed
//! like tasks once up), failed launches, and work finishing early.

use std::collections::BTreeMap;

use ray_common::ResourceSet;

use super::demand::{self, DemandError, DemandFile, Reader};
use crate::config::ClusterConfig;
use crate::scheduler::bound::type_costs;
use crate::scheduler::{Demand, Gang, NodeView, decide};

/// One step: from `at_s` on, this is what is wanted.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Seconds from the start.
    pub at_s: f64,
    /// The demand.
    pub demand: DemandFile,
}

/// Reads a trace file (`file` names it in errors).
pub fn parse_trace(file: &str, text: &str) -> Result<Vec<Step>, DemandError> {
    let r = Reader { file };
    let root = demand::root(&r, text, "a mapping with `steps`, a list of {at, bundles, placement_groups}")?;
    let top = r.mapping(&root, "", &["steps"])?;
    let Some(list) = top.get("steps") else { return r.fail(root.mark, "", "missing `steps`") };
    let items = r.sequence(list, "steps")?;
    if items.is_empty() {
        return r.fail(list.mark, "steps", "expected at least one step");
    }
    let mut steps: Vec<Step> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("steps[{i}]");
        let m = r.mapping(item, &path, &["at", "bundles", "placement_groups"])?;
        let Some(at) = m.get("at") else { return r.fail(item.mark, &path, "missing `at` (seconds from the start)") };
        let at_s = r.number(at, &format!("{path}.at"))?;
        if let Some(prev) = steps.last()
            && at_s <= prev.at_s
        {
            return r.fail(at.mark, &format!("{path}.at"), format!("expected a time after the previous step's {}", prev.at_s));
        }
        steps.push(Step { at_s, demand: demand::read(&r, m, &format!("{path}."))? });
    }
    Ok(steps)
}

/// How the replay runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Seconds between decisions.
    pub tick_s: f64,
    /// Seconds from a launch until the node takes work.
    pub launch_delay_s: f64,
}

/// The cluster at one tick.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Seconds from the start.
    pub t_s: f64,
    /// Workers up, by type.
    pub nodes: BTreeMap<String, u32>,
    /// Workers launched and not up yet.
    pub launching: u32,
    /// What every worker (up or launching) costs per hour.
    pub cost_per_hour: f64,
    /// Bundles wanted that have no room.
    pub unplaced: u64,
}

/// The whole replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Replay {
    /// One sample per tick where something changed (and the first and last).
    pub samples: Vec<Sample>,
    /// The most workers at once (launching included).
    pub peak_nodes: u32,
    /// What the workers cost over the whole replay.
    pub total_cost: f64,
    /// Bundle-seconds of demand that waited for room.
    pub waiting_bundle_seconds: f64,
    /// When the replay ended (the cluster back at rest after the last step).
    pub end_s: f64,
}

struct SimNode {
    id: String,
    node_type: String,
    total: ResourceSet,
    up_at: f64,
    idle_since: Option<f64>,
}

/// A bundle's shape, `count` times, placed first-fit on `free`; returns how
/// many found no room and marks the nodes used.
fn place(free: &mut [ResourceSet], used: &mut [bool], shape: &ResourceSet, mut count: u64) -> u64 {
    for (i, f) in free.iter_mut().enumerate() {
        while count > 0 && shape.is_subset_of(f) {
            f.subtract(shape);
            used[i] = true;
            count -= 1;
        }
        if count == 0 {
            break;
        }
    }
    count
}

/// Steps the autoscaler through `steps` on a cluster of `config`.
pub fn replay(config: &ClusterConfig, steps: &[Step], opts: Options) -> Replay {
    let tick = opts.tick_s.max(1.0);
    let empty = DemandFile::default();
    let base = super::input(config, &empty);
    let costs = type_costs(&base);
    let cost_of = |t: &str| base.types.iter().position(|x| x.name == t).map(|i| costs[i]).unwrap_or(0.0);
    let idle_timeout: std::collections::HashMap<String, u64> =
        config.node_types.iter().map(|t| (t.name.clone(), config.idle_timeout_ms(&t.name))).collect();
    let longest_idle = idle_timeout.values().copied().filter(|v| *v < u64::MAX).max().unwrap_or(0) as f64 / 1e3;
    let last_at = steps.last().map_or(0.0, |s| s.at_s);
    // Past the last step: long enough for the last launches to come up and go
    // idle, with a cap for configs that never retire nodes.
    let horizon = last_at + opts.launch_delay_s + longest_idle.min(24.0 * 3600.0) + 2.0 * tick;
    let head = base.nodes[0].clone();
    let mut nodes: Vec<SimNode> = Vec::new();
    let mut serial = 0u64;
    let mut out = Replay { samples: Vec::new(), peak_nodes: 0, total_cost: 0.0, waiting_bundle_seconds: 0.0, end_s: 0.0 };
    let mut t = 0.0;
    while t <= horizon {
        let wanted = steps.iter().rev().find(|s| s.at_s <= t).map_or(&empty, |s| &s.demand);
        // Run what fits on the nodes that are up (the head first).
        let up: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].up_at <= t).collect();
        let mut free: Vec<ResourceSet> = std::iter::once(head.total.clone()).chain(up.iter().map(|&i| nodes[i].total.clone())).collect();
        let mut used = vec![false; free.len()];
        let mut pending: Vec<Demand> = Vec::new();
        let mut gangs: Vec<Gang> = Vec::new();
        for g in &wanted.placement_groups {
            let mut trial = free.clone();
            let mut trial_used = used.clone();
            if g.bundles.iter().all(|b| place(&mut trial, &mut trial_used, b, 1) == 0) {
                free = trial;
                used = trial_used;
            } else {
                gangs.push(g.clone());
            }
        }
        for d in &wanted.bundles {
            let left = place(&mut free, &mut used, &d.shape, d.count);
            if left > 0 {
                pending.push(Demand { shape: d.shape.clone(), count: left });
            }
        }
        for (k, &i) in up.iter().enumerate() {
            let busy = used[k + 1];
            let n = &mut nodes[i];
            n.idle_since = if busy { None } else { n.idle_since.or(Some(t)) };
        }
        let mut input = base.clone();
        input.nodes = std::iter::once(NodeView { available: free[0].clone(), ..head.clone() })
            .chain(nodes.iter().map(|n| {
                let k = up.iter().position(|&i| nodes[i].id == n.id);
                NodeView {
                    id: n.id.clone(),
                    node_type: n.node_type.clone(),
                    total: n.total.clone(),
                    available: k.map_or_else(|| n.total.clone(), |k| free[k + 1].clone()),
                    pending: k.is_none(),
                    is_head: false,
                    unmanaged: false,
                    draining: false,
                    idle_ms: n.idle_since.map_or(0, |s| (((t - s) * 1e3) as u64).max(1)),
                }
            }))
            .collect();
        input.demands = pending.clone();
        input.gangs = gangs.clone();
        input.idle_timeout_ms = idle_timeout.clone();
        let d = decide(&input);
        for (id, _) in &d.terminate {
            nodes.retain(|n| &n.id != id);
        }
        for (ty, n) in d.launch_by_type() {
            let total = base.types.iter().find(|x| x.name == ty).map(|x| x.resources.clone()).unwrap_or_default();
            for _ in 0..n {
                serial += 1;
                nodes.push(SimNode { id: format!("sim-{serial}"), node_type: ty.clone(), total: total.clone(), up_at: t + opts.launch_delay_s, idle_since: None });
            }
        }
        let unplaced = pending.iter().map(|p| p.count).sum::<u64>() + gangs.iter().map(|g| g.bundles.len() as u64).sum::<u64>();
        let mut by_type: BTreeMap<String, u32> = BTreeMap::new();
        let mut launching = 0;
        let mut cost = 0.0;
        for n in &nodes {
            cost += cost_of(&n.node_type);
            if n.up_at <= t {
                *by_type.entry(n.node_type.clone()).or_default() += 1;
            } else {
                launching += 1;
            }
        }
        out.peak_nodes = out.peak_nodes.max(nodes.len() as u32);
        out.total_cost += cost * tick / 3600.0;
        out.waiting_bundle_seconds += unplaced as f64 * tick;
        let sample = Sample { t_s: t, nodes: by_type, launching, cost_per_hour: cost, unplaced };
        let changed = out.samples.last().is_none_or(|s: &Sample| (&s.nodes, s.launching, s.unplaced) != (&sample.nodes, sample.launching, sample.unplaced));
        out.end_s = t;
        let at_rest = t >= last_at && unplaced == 0 && launching == 0 && nodes.iter().all(|n| n.idle_since.is_some());
        let min_only = nodes.len() as u64 <= config.node_types.iter().map(|t| u64::from(t.min_workers)).sum::<u64>();
        if changed || (at_rest && min_only) {
            out.samples.push(sample);
        }
        if at_rest && min_only && t >= last_at {
            break;
        }
        t += tick;
    }
    out
}

/// The replay for people: the curve at its changes, then the totals.
pub fn render(r: &Replay, priced: bool) -> String {
    use std::fmt::Write;
    let money = |v: f64| if priced { format!("${v:.2}") } else { format!("{v:.2} units") };
    let mut s = String::new();
    let _ = writeln!(s, "{:>8}  {:>6}  {:>9}  {:>8}  {:>10}  nodes up by type", "time", "nodes", "launching", "unplaced", "cost/h");
    for x in &r.samples {
        let up: u32 = x.nodes.values().sum();
        let types: Vec<String> = x.nodes.iter().map(|(t, n)| format!("{n} {t}")).collect();
        let _ = writeln!(s, "{:>7.0}s  {:>6}  {:>9}  {:>8}  {:>10}  {}", x.t_s, up, x.launching, x.unplaced, money(x.cost_per_hour), types.join(", "));
    }
    let _ = writeln!(
        s,
        "Peak {} worker(s); {} over {:.0} s; {:.0} bundle-seconds waited for room.",
        r.peak_nodes,
        money(r.total_cost),
        r.end_s,
        r.waiting_bundle_seconds
    );
    s
}

#[cfg(test)]
mod tests;
