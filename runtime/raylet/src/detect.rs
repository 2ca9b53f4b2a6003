//! What this machine has: CPUs, memory and GPUs, with the overrides of
//! `ray start` flags applied on top.

use std::collections::BTreeMap;
use std::process::Command;

use ray_common::resources::{CPU, GPU, MEMORY, OBJECT_STORE_MEMORY};
use ray_common::{FixedPoint, ResourceSet};

/// Share of available memory given to the object store by default (Ray: 30%).
pub const OBJECT_STORE_MEMORY_FRACTION: f64 = 0.3;
/// Upper bound of the default object store size (Ray: 200 GB).
pub const OBJECT_STORE_MEMORY_CAP: u64 = 200 * 1024 * 1024 * 1024;
/// Share of available memory offered as the `memory` resource (Ray: 70%, less
/// the object store).
pub const MEMORY_FRACTION: f64 = 0.7;

/// Values given on the command line; `None` means "detect".
#[derive(Debug, Clone, Default)]
pub struct ResourceOverrides {
    /// `--num-cpus`.
    pub num_cpus: Option<f64>,
    /// `--num-gpus`.
    pub num_gpus: Option<f64>,
    /// `--memory` in bytes.
    pub memory: Option<u64>,
    /// `--object-store-memory` in bytes.
    pub object_store_memory: Option<u64>,
    /// `--resources` (custom resources).
    pub custom: BTreeMap<String, f64>,
}

/// A GPU found by `nvidia-smi`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuInfo {
    /// Index as the driver numbers it.
    pub index: u32,
    /// Model name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// The machine as detected.
#[derive(Debug, Clone)]
pub struct Detected {
    /// Logical CPUs usable by this process (affinity and cgroup quota respected).
    pub cpus: usize,
    /// Memory available now, in bytes (cgroup limit respected).
    pub available_memory: u64,
    /// GPUs, filtered by `CUDA_VISIBLE_DEVICES`.
    pub gpus: Vec<GpuInfo>,
}

/// Looks at the machine.
pub fn detect() -> Detected {
    Detected {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        available_memory: available_memory(),
        gpus: detect_gpus(),
    }
}

fn meminfo_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn cgroup_limit_and_usage() -> Option<(u64, u64)> {
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
    let limit: u64 = limit.trim().parse().ok()?; // "max" fails to parse: no limit
    let usage: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok()?.trim().parse().ok()?;
    Some((limit, usage))
}

/// Memory available now, in bytes: the smaller of the machine's `MemAvailable`
/// and what the cgroup limit leaves.
pub fn available_memory() -> u64 {
    let host = meminfo_kb("MemAvailable:").or_else(|| meminfo_kb("MemTotal:")).unwrap_or(0) * 1024;
    match cgroup_limit_and_usage() {
        Some((limit, usage)) => host.min(limit.saturating_sub(usage)),
        None => host,
    }
}

/// GPUs from `nvidia-smi` when it is installed, restricted to `CUDA_VISIBLE_DEVICES`.
pub fn detect_gpus() -> Vec<GpuInfo> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"])
        .output();
    let Ok(out) = out else { return Vec::new() };
    if !out.status.success() {
        return Vec::new();
    }
    let all = parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout));
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) => {
            let wanted: Vec<u32> = v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
            all.into_iter().filter(|g| wanted.contains(&g.index)).collect()
        }
        Err(_) => all,
    }
}

/// Parses `index, name, memory` CSV lines.
pub fn parse_nvidia_smi(out: &str) -> Vec<GpuInfo> {
    out.lines()
        .filter_map(|l| {
            let mut parts = l.split(',').map(str::trim);
            let index = parts.next()?.parse().ok()?;
            let name = parts.next()?.to_string();
            let memory_mib = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
            Some(GpuInfo { index, name, memory_mib })
        })
        .collect()
}

/// Ray's accelerator type name for a GPU model, e.g. "H100" for "NVIDIA H100 80GB HBM3".
pub fn accelerator_type(gpu_name: &str) -> Option<String> {
    let known = [
        "H200", "H100", "H20", "GH200", "B200", "A100", "A10G", "A10", "L40S", "L40", "L4", "T4", "V100", "P100",
        "K80", "A40", "A30",
    ];
    let upper = gpu_name.to_ascii_uppercase();
    let tokens: Vec<&str> = upper.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    known.iter().find(|k| tokens.contains(k)).map(|k| k.to_string())
}

/// The node's total resources: detection with overrides applied.
pub fn resolve(d: &Detected, o: &ResourceOverrides) -> ResourceSet {
    let mut set = ResourceSet::new();
    set.set(CPU, FixedPoint::from_f64(o.num_cpus.unwrap_or(d.cpus as f64)));
    let gpus = o.num_gpus.unwrap_or(d.gpus.len() as f64);
    set.set(GPU, FixedPoint::from_f64(gpus));
    let object_store = o.object_store_memory.unwrap_or_else(|| {
        ((d.available_memory as f64 * OBJECT_STORE_MEMORY_FRACTION) as u64).min(OBJECT_STORE_MEMORY_CAP)
    });
    let memory = o.memory.unwrap_or_else(|| {
        ((d.available_memory as f64 * MEMORY_FRACTION) as u64).saturating_sub(object_store)
    });
    set.set(MEMORY, FixedPoint::from_int(memory as i64));
    set.set(OBJECT_STORE_MEMORY, FixedPoint::from_int(object_store as i64));
    if gpus > 0.0
        && o.num_gpus.is_none()
        && let Some(t) = d.gpus.first().and_then(|g| accelerator_type(&g.name))
    {
        set.set(format!("accelerator_type:{t}"), FixedPoint::from_int(1));
    }
    for (k, v) in &o.custom {
        set.set(k.clone(), FixedPoint::from_f64(*v));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(gpus: usize) -> Detected {
        Detected {
            cpus: 8,
            available_memory: 10_000_000_000,
            gpus: (0..gpus)
                .map(|i| GpuInfo { index: i as u32, name: "NVIDIA H100 80GB HBM3".into(), memory_mib: 81559 })
                .collect(),
        }
    }

    #[test]
    fn detection_fills_what_flags_leave_out() {
        let r = resolve(&machine(2), &ResourceOverrides::default());
        assert_eq!(r.get(CPU), FixedPoint::from_int(8));
        assert_eq!(r.get(GPU), FixedPoint::from_int(2));
        assert_eq!(r.get(OBJECT_STORE_MEMORY), FixedPoint::from_int(3_000_000_000));
        assert_eq!(r.get(MEMORY), FixedPoint::from_int(4_000_000_000));
        assert_eq!(r.get("accelerator_type:H100"), FixedPoint::from_int(1));
    }

    #[test]
    fn flags_override_detection() {
        let o = ResourceOverrides {
            num_cpus: Some(2.0),
            num_gpus: Some(0.0),
            memory: Some(1 << 30),
            object_store_memory: Some(1 << 29),
            custom: [("A".to_string(), 3.0)].into(),
        };
        let r = resolve(&machine(2), &o);
        assert_eq!(r.get(CPU), FixedPoint::from_int(2));
        assert!(!r.has_gpu());
        assert_eq!(r.get("A"), FixedPoint::from_int(3));
        assert_eq!(r.get(MEMORY), FixedPoint::from_int(1 << 30));
        assert_eq!(r.get("accelerator_type:H100"), FixedPoint::ZERO);
    }

    #[test]
    fn parses_nvidia_smi_and_names_accelerators() {
        let gpus = parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 81559\n1, Tesla T4, 15360\n");
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].name, "Tesla T4");
        assert_eq!(accelerator_type(&gpus[0].name).as_deref(), Some("H100"));
        assert_eq!(accelerator_type("Tesla T4").as_deref(), Some("T4"));
        assert_eq!(accelerator_type("Some Other Card"), None);
    }
}
