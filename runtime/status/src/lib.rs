//! `ray status`: the cluster's nodes, usage and demand in Ray's layout (2.60, as
//! printed for autoscaler v2), from a `GetClusterStatus` reply.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Local, TimeZone};
use ray_common::ResourceSet;
use ray_common::resources::python_float;
use ray_proto::rpc::DeathReason;
use ray_proto::rpc::autoscaler::{AutoscalingState, GetClusterStatusReply, NodeState, NodeStatus, ResourceRequestByCount};

/// Formats bytes as Ray does for memory: `0B`, `953.67MiB`, `16.36GiB`.
pub fn format_memory(bytes: f64) -> String {
    for (suffix, unit) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= unit as f64 {
            return format!("{:.2}{suffix}", bytes / unit as f64);
        }
    }
    format!("{}B", bytes as u64)
}

fn node_type(n: &NodeState) -> String {
    if n.ray_node_type_name.is_empty() { format!("node_{}", n.node_id) } else { n.ray_node_type_name.clone() }
}

fn counts_by_type<'a>(nodes: impl Iterator<Item = &'a NodeState>) -> Vec<(String, usize)> {
    let mut order: Vec<(String, usize)> = Vec::new();
    for n in nodes {
        let t = node_type(n);
        match order.iter_mut().find(|(k, _)| *k == t) {
            Some((_, c)) => *c += 1,
            None => order.push((t, 1)),
        }
    }
    order
}

fn bundle(r: &ResourceRequestByCount) -> ResourceSet {
    r.request.as_ref().map(|r| ResourceSet::from_f64_map_lossy(&r.resources_bundle)).unwrap_or_default()
}

fn hms(ms: u64) -> String {
    Local.timestamp_millis_opt(ms as i64).single().map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_default()
}

/// Usage lines (without indent): `0.0/8.0 CPU`, `0B/1.86GiB memory`, ...
pub fn usage_lines(used_total: &BTreeMap<String, (f64, f64)>, verbose: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (name, (used, total)) in used_total {
        // Placement group bundle resources (`CPU_group_<i>_<id>`, ...) are shown as
        // the plain resources they reserve, as Ray does.
        if name.contains("node:") || name.contains("_group_") || (!verbose && name.starts_with("accelerator_type:")) {
            continue;
        }
        if name == "memory" || name == "object_store_memory" {
            out.push(format!("{}/{} {name}", format_memory(*used), format_memory(*total)));
        } else {
            out.push(format!("{}/{} {name}", python_float(*used), python_float(*total)));
        }
    }
    out
}

fn node_usage(n: &NodeState) -> BTreeMap<String, (f64, f64)> {
    n.total_resources
        .iter()
        .map(|(k, total)| {
            let avail = n.available_resources.get(k).copied().unwrap_or(0.0);
            (k.clone(), ((total - avail).max(0.0), *total))
        })
        .collect()
}

/// The whole report.
pub fn format_status(reply: &GetClusterStatusReply, now: DateTime<Local>, verbose: bool) -> String {
    let state = reply.cluster_resource_state.clone().unwrap_or_default();
    let auto = reply.autoscaling_state.clone().unwrap_or_default();
    let header = format!("======== Autoscaler status: {} ========", now.format("%Y-%m-%d %H:%M:%S%.6f"));
    let sep = "-".repeat(header.len());
    let mut s = String::new();
    let _ = writeln!(s, "{header}");
    let _ = writeln!(s, "Node status");
    let _ = writeln!(s, "{sep}");

    let alive = || state.node_states.iter().filter(|n| n.status != NodeStatus::Dead as i32);
    let active: Vec<&NodeState> = alive().filter(|n| n.status != NodeStatus::Idle as i32).collect();
    let idle: Vec<&NodeState> = alive().filter(|n| n.status == NodeStatus::Idle as i32).collect();
    let _ = writeln!(s, "Active:");
    let a = counts_by_type(active.iter().copied());
    if a.is_empty() {
        let _ = writeln!(s, " (no active nodes)");
    }
    for (t, c) in a {
        let _ = writeln!(s, " {c} {t}");
    }
    let _ = writeln!(s, "Idle:");
    let i = counts_by_type(idle.iter().copied());
    if i.is_empty() {
        let _ = writeln!(s, " (no idle nodes)");
    }
    for (t, c) in i {
        let _ = writeln!(s, " {c} {t}");
    }

    let _ = writeln!(s, "Pending:");
    let mut pending_lines = Vec::new();
    let mut launching: Vec<(String, u64)> = Vec::new();
    for p in &auto.pending_instance_requests {
        match launching.iter_mut().find(|(t, _)| *t == p.ray_node_type_name) {
            Some((_, c)) => *c = c.saturating_add(p.count),
            None => launching.push((p.ray_node_type_name.clone(), p.count)),
        }
    }
    for (t, c) in launching {
        pending_lines.push(format!(" {t}, {c} launching"));
    }
    for p in &auto.pending_instances {
        let who = if p.ip_address.is_empty() { &p.instance_id } else { &p.ip_address };
        pending_lines.push(format!(" {who}: {}, {}", p.ray_node_type_name, p.details.to_lowercase()));
    }
    if pending_lines.is_empty() {
        pending_lines.push(" (no pending nodes)".into());
    }
    for l in pending_lines {
        let _ = writeln!(s, "{l}");
    }

    let _ = writeln!(s, "Recent failures:");
    let mut failures = Vec::new();
    let mut failed = auto.failed_instance_requests.clone();
    failed.sort_by_key(|f| std::cmp::Reverse(f.failed_ts_ms));
    for f in &failed {
        let kind = if f.kind.is_empty() { "LaunchFailed" } else { f.kind.as_str() };
        let who = if f.instance_id.is_empty() { String::new() } else { format!("instance_id: {}, ", f.instance_id) };
        failures.push(format!(" {}: {kind} ({who}latest_attempt: {}) - {}", f.ray_node_type_name, hms(f.failed_ts_ms), f.reason));
    }
    // An idle node the autoscaler retired did what it was asked: that is not a
    // failure (`-v` lists such scale-downs on their own).
    let mut retired = Vec::new();
    for n in state.node_states.iter().filter(|n| n.status == NodeStatus::Dead as i32) {
        let why = n.death_info.as_ref().map(|d| d.reason_message.as_str()).unwrap_or("");
        let id = if n.instance_id.is_empty() { format!("ip: {}", n.node_ip_address) } else { format!("instance_id: {}", n.instance_id) };
        if n.death_info.as_ref().is_some_and(|d| d.reason == DeathReason::AutoscalerDrainIdle as i32) {
            retired.push(format!(" {}: {id} - {why}", node_type(n)));
        } else if why.is_empty() {
            failures.push(format!(" {}: NodeTerminated ({id})", node_type(n)));
        } else {
            failures.push(format!(" {}: NodeTerminated ({id}) - {why}", node_type(n)));
        }
    }
    failures.truncate(20);
    if failures.is_empty() {
        failures.push(" (no failures)".into());
    }
    for l in failures {
        let _ = writeln!(s, "{l}");
    }
    if verbose && !retired.is_empty() {
        retired.truncate(20);
        let _ = writeln!(s, "Recent idle scale-downs:");
        for l in retired {
            let _ = writeln!(s, "{l}");
        }
    }

    let _ = writeln!(s);
    let _ = writeln!(s, "Resources");
    let _ = writeln!(s, "{sep}");
    let _ = writeln!(s, "Total Usage:");
    let mut total: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for n in alive() {
        for (k, (u, t)) in node_usage(n) {
            let e = total.entry(k).or_default();
            e.0 += u;
            e.1 += t;
        }
    }
    let lines = usage_lines(&total, verbose);
    if lines.is_empty() {
        let _ = writeln!(s, " (no resources)");
    }
    for l in lines {
        let _ = writeln!(s, " {l}");
    }
    let _ = writeln!(s);

    let _ = writeln!(s, "From request_resources:");
    let mut constraint_lines = Vec::new();
    for c in &state.cluster_resource_constraints {
        for r in &c.resource_requests {
            if r.count > 0 {
                constraint_lines.push(format!(" {}: {} from request_resources()", bundle(r), r.count));
            }
        }
    }
    if constraint_lines.is_empty() {
        constraint_lines.push(" (none)".into());
    }
    for l in constraint_lines {
        let _ = writeln!(s, "{l}");
    }

    let _ = writeln!(s, "Pending Demands:");
    let infeasible: Vec<ResourceSet> = auto.infeasible_resource_requests.iter().map(bundle).collect();
    let mut demand_lines = Vec::new();
    for r in &state.pending_resource_requests {
        let b = bundle(r);
        if b.is_empty() || r.count == 0 {
            continue;
        }
        let note = if infeasible.contains(&b) { " (no node type of this cluster can fit this shape)" } else { "" };
        demand_lines.push(format!(" {b}: {}+ pending tasks/actors{note}", r.count));
    }
    let mut gangs: Vec<(String, u64)> = Vec::new();
    for g in &state.pending_gang_resource_requests {
        let mut shapes: Vec<(ResourceSet, u64)> = Vec::new();
        for r in &g.requests {
            let b = ResourceSet::from_f64_map_lossy(&r.resources_bundle);
            match shapes.iter_mut().find(|(s, _)| *s == b) {
                Some((_, c)) => *c += 1,
                None => shapes.push((b, 1)),
            }
        }
        let desc = shapes.iter().map(|(b, n)| format!("{b} * {n}")).collect::<Vec<_>>().join(", ");
        let key = format!("{desc} ({})", g.strategy);
        match gangs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, c)) => *c += 1,
            None => gangs.push((key, 1)),
        }
    }
    for (k, c) in gangs {
        demand_lines.push(format!(" {k}: {c}+ pending placement groups"));
    }
    if demand_lines.is_empty() {
        demand_lines.push(" (no resource demands)".into());
    }
    for l in demand_lines {
        let _ = writeln!(s, "{l}");
    }

    if verbose && !auto.node_type_hourly_price.is_empty() {
        let _ = writeln!(s);
        for l in cost_lines(&auto, active.iter().chain(idle.iter()).copied()) {
            let _ = writeln!(s, "{l}");
        }
    }
    if verbose {
        for l in plan_lines(&auto) {
            let _ = writeln!(s, "{l}");
        }
    }
    if verbose {
        for n in active.iter().chain(idle.iter()) {
            let _ = writeln!(s);
            let _ = writeln!(s, "Node: {} ({})", n.instance_id, node_type(n));
            let _ = writeln!(s, " Id: {}", n.node_id);
            if n.idle_duration_ms > 0 {
                let _ = writeln!(s, " Idle: {} ms", n.idle_duration_ms);
            }
            let _ = writeln!(s, " Usage:");
            for l in usage_lines(&node_usage(n), true) {
                let _ = writeln!(s, "  {l}");
            }
        }
    }
    s.trim().to_string()
}

/// Why each pending shape waits, and what the nodes being added cost beside
/// the least any plan for the same demand could cost (`ray status -v`).
fn plan_lines(auto: &AutoscalingState) -> Vec<String> {
    let mut out = Vec::new();
    if !auto.pending_demand_reasons.is_empty() {
        out.push(String::new());
        out.push("Pending demand, and why it waits:".into());
        for r in &auto.pending_demand_reasons {
            let shape: BTreeMap<&String, &f64> = r.resources_bundle.iter().collect();
            let items: Vec<String> = shape.iter().map(|(k, v)| format!("'{k}': {}", python_float(**v))).collect();
            out.push(format!(" {{{}}}: {} - {}", items.join(", "), r.count, r.reason));
        }
    }
    if auto.plan_cost_per_hour > 0.0 {
        let unit = |v: f64| {
            if auto.node_type_hourly_price.is_empty() { format!("{v:.2} cost units/h (no prices in the config)") } else { format!("${v:.2}/h") }
        };
        let bound = match auto.plan_lower_bound_per_hour {
            Some(b) => format!("; no plan that places the same demand can cost less than {}", unit(b)),
            None => "; no lower bound while some demand is capped".into(),
        };
        out.push(String::new());
        out.push(format!("Nodes being added cost {}{bound}", unit(auto.plan_cost_per_hour)));
    }
    out
}

/// What the cluster costs per hour at the node types' prices: the running nodes,
/// and with what is being launched (`ray status -v`).
fn cost_lines<'a>(auto: &AutoscalingState, nodes: impl Iterator<Item = &'a NodeState>) -> Vec<String> {
    let price = |t: &str| auto.node_type_hourly_price.get(t).copied();
    let (mut running, mut unpriced) = (0.0, 0usize);
    let mut count = 0usize;
    for n in nodes {
        count += 1;
        match price(&n.ray_node_type_name) {
            Some(p) => running += p,
            None => unpriced += 1,
        }
    }
    let mut launching = 0.0;
    let mut n_launching = 0u64;
    for p in &auto.pending_instances {
        n_launching += 1;
        launching += price(&p.ray_node_type_name).unwrap_or(0.0);
    }
    for r in &auto.pending_instance_requests {
        n_launching += r.count;
        launching += price(&r.ray_node_type_name).unwrap_or(0.0) * r.count as f64;
    }
    let mut out = vec!["Hourly cost:".to_string(), format!(" ${running:.2}/h for {count} running node(s)")];
    if n_launching > 0 {
        out.push(format!(" ${:.2}/h with the {n_launching} being launched", running + launching));
    }
    if unpriced > 0 {
        out.push(format!(" ({unpriced} node(s) of types without a price not counted)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_proto::rpc::autoscaler::*;

    #[test]
    fn memory_is_formatted_like_ray() {
        assert_eq!(format_memory(0.0), "0B");
        assert_eq!(format_memory(12.0), "12B");
        assert_eq!(format_memory((1u64 << 30) as f64 + 1.0), "1.00GiB");
        assert_eq!(format_memory(1_000_000_000.0), "953.67MiB");
    }

    fn node(id: &str, status: NodeStatus, total: &[(&str, f64)], avail: &[(&str, f64)]) -> NodeState {
        NodeState {
            node_id: id.into(),
            status: status as i32,
            total_resources: total.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            available_resources: avail.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            node_ip_address: "127.0.0.1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn report_sums_nodes_and_lists_demand() {
        let reply = GetClusterStatusReply {
            autoscaling_state: None,
            cluster_resource_state: Some(ClusterResourceState {
                node_states: vec![
                    node("aa", NodeStatus::Running, &[("CPU", 2.0), ("memory", 2.0 * (1u64 << 30) as f64), ("node:127.0.0.1", 1.0)], &[("CPU", 1.0), ("memory", 2.0 * (1u64 << 30) as f64)]),
                    node("bb", NodeStatus::Idle, &[("CPU", 4.0), ("GPU", 1.0)], &[("CPU", 4.0), ("GPU", 1.0)]),
                    node("cc", NodeStatus::Dead, &[], &[]),
                    NodeState {
                        death_info: Some(ray_proto::rpc::NodeDeathInfo {
                            reason: DeathReason::AutoscalerDrainIdle as i32,
                            reason_message: "idle for 61 s".into(),
                        }),
                        ..node("dd", NodeStatus::Dead, &[], &[])
                    },
                ],
                pending_resource_requests: vec![ResourceRequestByCount {
                    request: Some(ResourceRequest { resources_bundle: [("CPU".to_string(), 1.0)].into() }),
                    count: 3,
                }],
                cluster_resource_constraints: vec![ClusterResourceConstraint {
                    resource_requests: vec![ResourceRequestByCount {
                        request: Some(ResourceRequest { resources_bundle: [("CPU".to_string(), 1.0)].into() }),
                        count: 8,
                    }],
                }],
                ..Default::default()
            }),
        };
        let out = format_status(&reply, Local::now(), false);
        assert!(out.starts_with("======== Autoscaler status: "), "{out}");
        assert!(out.contains("Active:\n 1 node_aa\nIdle:\n 1 node_bb\n"), "{out}");
        assert!(out.contains(" 1.0/6.0 CPU\n 0.0/1.0 GPU\n 0B/2.00GiB memory\n"), "{out}");
        assert!(!out.contains("node:127.0.0.1"), "{out}");
        assert!(out.contains(" node_cc: NodeTerminated (ip: 127.0.0.1)"), "{out}");
        assert!(!out.contains("node_dd"), "an idle scale-down is not a failure:\n{out}");
        let verbose = format_status(&reply, Local::now(), true);
        assert!(verbose.contains("Recent idle scale-downs:\n node_dd: ip: 127.0.0.1 - idle for 61 s\n"), "{verbose}");
        assert!(!verbose.contains("node_dd: NodeTerminated"), "{verbose}");
        assert!(out.contains("From request_resources:\n {'CPU': 1.0}: 8 from request_resources()"), "{out}");
        assert!(out.contains("Pending Demands:\n {'CPU': 1.0}: 3+ pending tasks/actors"), "{out}");
    }

    #[test]
    fn verbose_status_shows_the_hourly_cost_of_the_nodes_and_launches() {
        let mut head = node("aa", NodeStatus::Running, &[("CPU", 2.0)], &[("CPU", 2.0)]);
        head.ray_node_type_name = "head".into();
        let mut w = node("bb", NodeStatus::Idle, &[("CPU", 4.0)], &[("CPU", 4.0)]);
        w.ray_node_type_name = "cpu".into();
        let reply = GetClusterStatusReply {
            autoscaling_state: Some(AutoscalingState {
                node_type_hourly_price: [("head".to_string(), 0.096), ("cpu".to_string(), 0.17)].into(),
                pending_instance_requests: vec![PendingInstanceRequest { ray_node_type_name: "cpu".into(), count: 2, ..Default::default() }],
                ..Default::default()
            }),
            cluster_resource_state: Some(ClusterResourceState { node_states: vec![head, w], ..Default::default() }),
        };
        let out = format_status(&reply, Local::now(), true);
        assert!(out.contains("Hourly cost:\n $0.27/h for 2 running node(s)\n $0.61/h with the 2 being launched"), "{out}");
        assert!(!format_status(&reply, Local::now(), false).contains("Hourly cost"), "only with -v");
    }

    #[test]
    fn verbose_status_says_why_demand_waits_and_the_plan_beside_its_bound() {
        let reply = GetClusterStatusReply {
            autoscaling_state: Some(AutoscalingState {
                node_type_hourly_price: [("cpu".to_string(), 0.17)].into(),
                pending_demand_reasons: vec![
                    PendingDemandReason { resources_bundle: [("CPU".to_string(), 1.0)].into(), count: 3, reason: "a launch is on its way".into() },
                    PendingDemandReason {
                        resources_bundle: [("GPU".to_string(), 1.0), ("CPU".to_string(), 2.0)].into(),
                        count: 1,
                        reason: "capped: max_workers is reached for gpu".into(),
                    },
                ],
                plan_cost_per_hour: 0.34,
                plan_lower_bound_per_hour: Some(0.3),
                ..Default::default()
            }),
            cluster_resource_state: Some(ClusterResourceState::default()),
        };
        let out = format_status(&reply, Local::now(), true);
        assert!(out.contains("Pending demand, and why it waits:\n {'CPU': 1.0}: 3 - a launch is on its way\n {'CPU': 2.0, 'GPU': 1.0}: 1 - capped: max_workers is reached for gpu"), "{out}");
        assert!(out.contains("Nodes being added cost $0.34/h; no plan that places the same demand can cost less than $0.30/h"), "{out}");
        let brief = format_status(&reply, Local::now(), false);
        assert!(!brief.contains("why it waits") && !brief.contains("Nodes being added"), "only with -v: {brief}");
    }

    #[test]
    fn empty_cluster_has_placeholders() {
        let out = format_status(&GetClusterStatusReply::default(), Local::now(), false);
        for p in ["(no active nodes)", "(no idle nodes)", "(no pending nodes)", "(no failures)", "(none)", "(no resource demands)"] {
            assert!(out.contains(p), "missing {p} in {out}");
        }
    }
}
