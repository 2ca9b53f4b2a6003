//! The node's `/metrics`, with Ray's metric names where Ray has them: logical
//! resources (`ray_resources`), the object store (`ray_object_store_memory` by
//! location, `ray_object_store_used_memory`, `ray_object_store_available_memory`,
//! `ray_object_store_num_local_objects`, `ray_spill_manager_request_total`),
//! queued lease requests (`ray_scheduler_unscheduleable_tasks` by reason), and
//! the machine (`ray_node_cpu_count`, `ray_node_cpu_utilization`,
//! `ray_node_mem_*`). Workers by status (`ray_raylet_workers`) are this build's
//! own: a leased worker is one granted lease.

use std::sync::{Arc, Mutex};

use ray_common::metrics::Exposition;
use ray_proto::rpc::GetNodeStatsReply;

use crate::Raylet;
use crate::host_stats::{CpuTimes, Memory};
use crate::worker_pool::WorkerCounts;

/// Builds the node's `/metrics` answer. Keeps the previous CPU reading, so
/// utilisation is measured between two scrapes.
pub struct Collector {
    raylet: Arc<Raylet>,
    session: String,
    node_address: String,
    cpu: Mutex<Option<CpuTimes>>,
}

/// The figures of one scrape.
#[derive(Debug, Default)]
pub struct Figures {
    /// The node's resources and store, as `GetNodeStats` answers.
    pub stats: GetNodeStatsReply,
    /// Workers by status.
    pub workers: WorkerCounts,
    /// Logical CPUs of the machine.
    pub cpu_count: usize,
    /// Busy share of the machine's CPUs since the last scrape (since boot at the first).
    pub cpu_percent: Option<f64>,
    /// Physical memory.
    pub memory: Option<Memory>,
}

impl Collector {
    /// A collector for `raylet`, labelled with its node's address.
    pub fn new(raylet: Arc<Raylet>, node_address: String) -> Self {
        let session = std::path::Path::new(&raylet.session_dir)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            raylet,
            session,
            node_address,
            cpu: Mutex::new(None),
        }
    }

    /// Reads the node state and the machine's figures now. Reads `/proc`: call
    /// it off the async threads.
    pub fn figures(&self) -> Figures {
        let (stats, workers) = self.raylet.state.lock().metrics();
        let now = CpuTimes::read();
        let cpu_percent = {
            let mut last = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
            let since = last.unwrap_or_default();
            let pct = now.and_then(|n| n.busy_percent_since(&since));
            if now.is_some() {
                *last = now;
            }
            pct
        };
        Figures {
            stats,
            workers,
            cpu_count: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_percent,
            memory: Memory::read(),
        }
    }

    /// The `/metrics` text now.
    pub fn render(&self) -> String {
        render(&self.figures(), &self.session, &self.node_address)
    }
}

/// Formats one scrape's figures.
pub fn render(f: &Figures, session: &str, node_address: &str) -> String {
    let mut e = Exposition::new(&[
        ("SessionName", session),
        ("NodeAddress", node_address),
        ("Component", "raylet"),
    ]);
    let s = &f.stats;
    let mut names: Vec<&String> = s.resources_total.keys().collect();
    names.sort();
    let mut rows = Vec::new();
    for name in names {
        let total = s.resources_total.get(name).copied().unwrap_or(0.0);
        let available = s.resources_available.get(name).copied().unwrap_or(0.0);
        rows.push((
            [("Name", name.as_str()), ("State", "USED")],
            (total - available).max(0.0),
        ));
        rows.push(([("Name", name.as_str()), ("State", "AVAILABLE")], available));
    }
    e.gauge(
        "ray_resources",
        "Logical resources of this node, used and available.",
        rows,
    );

    let (mut ready, mut backlog, mut infeasible) = (0u64, 0u64, 0u64);
    for d in &s.demand {
        ready += d.num_ready_requests_queued;
        backlog += d.backlog_size;
        infeasible += d.num_infeasible_requests_queued;
    }
    e.gauge(
        "ray_scheduler_unscheduleable_tasks",
        "Lease requests queued on this node, by why they wait: no node can ever run them, their resources are busy, \
         or a worker is starting for them.",
        [("Infeasible", infeasible), ("WaitingForResources", backlog), ("WaitingForWorkers", ready)]
            .map(|(reason, n)| ([("Reason", reason)], n as f64)),
    );
    let w = &f.workers;
    e.gauge(
        "ray_raylet_workers",
        "Worker processes of this node by status (a LEASED worker holds one granted lease; BLOCKED ones are also \
         LEASED and lent their CPU while in ray.get).",
        [("STARTING", w.starting), ("IDLE", w.idle), ("LEASED", w.leased), ("BLOCKED", w.blocked)]
            .map(|(state, n)| ([("State", state)], n as f64)),
    );

    let used = s.object_store_used_bytes as f64;
    e.gauge(
        "ray_object_store_memory",
        "Object store bytes by location: in the shared-memory file, or spilled to disk.",
        [("MMAP_SHM", used), ("SPILLED", s.spilled_bytes as f64)]
            .map(|(loc, v)| ([("Location", loc)], v)),
    );
    e.gauge(
        "ray_object_store_used_memory",
        "Bytes of the object store in use.",
        [([], used)],
    );
    e.gauge(
        "ray_object_store_available_memory",
        "Bytes of the object store free.",
        [(
            [],
            s.object_store_capacity_bytes
                .saturating_sub(s.object_store_used_bytes) as f64,
        )],
    );
    e.gauge(
        "ray_object_store_num_local_objects",
        "Objects in this node's store (in memory or spilled).",
        [([], s.num_objects as f64)],
    );
    e.counter(
        "ray_spill_manager_request_total",
        "Objects spilled to disk and restored from it since the raylet started.",
        [("Spilled", s.spilled_total), ("Restored", s.restored_total)]
            .map(|(t, n)| ([("Type", t)], n as f64)),
    );

    e.gauge(
        "ray_node_cpu_count",
        "Logical CPUs of this machine.",
        [([], f.cpu_count as f64)],
    );
    if let Some(pct) = f.cpu_percent {
        e.gauge(
            "ray_node_cpu_utilization",
            "Busy share of this machine's CPUs since the previous scrape, in percent (0..100).",
            [([], pct)],
        );
    }
    if let Some(m) = f.memory {
        e.gauge(
            "ray_node_mem_total",
            "Physical memory of this machine, in bytes.",
            [([], m.total as f64)],
        );
        e.gauge(
            "ray_node_mem_available",
            "Memory available to programs, in bytes.",
            [([], m.available as f64)],
        );
        e.gauge(
            "ray_node_mem_used",
            "Memory in use, in bytes.",
            [([], m.used() as f64)],
        );
        e.gauge(
            "ray_node_mem_shared_bytes",
            "Shared memory in use, in bytes.",
            [([], m.shared as f64)],
        );
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_common::metrics::parse;
    use ray_proto::rpc::ResourceDemand;

    #[test]
    fn resources_store_and_queue_are_reported_with_rays_names() {
        let f = Figures {
            stats: GetNodeStatsReply {
                resources_total: [("CPU".to_string(), 4.0)].into(),
                resources_available: [("CPU".to_string(), 1.5)].into(),
                demand: vec![ResourceDemand {
                    backlog_size: 3,
                    num_infeasible_requests_queued: 1,
                    ..Default::default()
                }],
                object_store_used_bytes: 100,
                object_store_capacity_bytes: 1000,
                spilled_bytes: 7,
                spilled_total: 2,
                ..Default::default()
            },
            workers: WorkerCounts {
                leased: 2,
                idle: 1,
                ..Default::default()
            },
            cpu_count: 8,
            cpu_percent: Some(12.5),
            memory: Some(Memory {
                total: 10,
                available: 4,
                shared: 1,
            }),
        };
        let samples = parse(&render(&f, "session_s", "10.0.0.1")).unwrap();
        let get = |name: &str, k: &str, v: &str| {
            samples
                .iter()
                .find(|s| s.name == name && s.label(k) == v)
                .map(|s| s.value)
                .unwrap_or(-1.0)
        };
        assert_eq!(get("ray_resources", "State", "USED"), 2.5);
        assert_eq!(get("ray_resources", "State", "AVAILABLE"), 1.5);
        assert_eq!(
            get(
                "ray_scheduler_unscheduleable_tasks",
                "Reason",
                "WaitingForResources"
            ),
            3.0
        );
        assert_eq!(
            get("ray_scheduler_unscheduleable_tasks", "Reason", "Infeasible"),
            1.0
        );
        assert_eq!(get("ray_raylet_workers", "State", "LEASED"), 2.0);
        assert_eq!(get("ray_object_store_memory", "Location", "SPILLED"), 7.0);
        assert_eq!(
            get(
                "ray_object_store_available_memory",
                "NodeAddress",
                "10.0.0.1"
            ),
            900.0
        );
        assert_eq!(
            get("ray_spill_manager_request_total", "Type", "Spilled"),
            2.0
        );
        assert_eq!(get("ray_node_mem_used", "SessionName", "session_s"), 6.0);
        assert_eq!(get("ray_node_cpu_utilization", "Component", "raylet"), 12.5);
    }
}
