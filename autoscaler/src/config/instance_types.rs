//! What a cloud's instance types offer, from a table kept in the repository
//! (`aws_instance_types.csv`: vCPUs, memory, GPUs, accelerators and the on-demand
//! hourly price; its header says where the figures come from and when). A node
//! type of an `aws` config that leaves `resources` (or `price`) out gets them from
//! its `InstanceType`, as Ray's AWS launcher fills them from DescribeInstanceTypes:
//! `CPU` = vCPUs, `GPU` and `accelerator_type:<model>`, `neuron_cores` for
//! Inferentia and Trainium, and (workers only) `memory` = 70% of the RAM, Ray's
//! share left beside the object store. What the file writes wins, key by key.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use ray_common::{FixedPoint, ResourceSet};

use super::NodeTypeConfig;

/// One instance type.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// NVIDIA GPUs.
    pub gpus: u32,
    /// Their model (`V100`, `A10G`, ...).
    pub gpu_model: String,
    /// Inferentia or Trainium chips.
    pub accelerators: u32,
    /// Their model.
    pub accelerator_model: String,
    /// On-demand price, USD per hour (us-east-1, Linux).
    pub on_demand_usd: f64,
}

/// A spot instance costs about this share of the on-demand price (EC2's spot
/// discounts are commonly 60-70%; a planning figure, not a quote).
pub const SPOT_PRICE_FACTOR: f64 = 0.35;
/// Ray's share of a worker's RAM for `memory` (the rest is the object store's).
pub const MEMORY_SHARE: f64 = 0.7;
/// NeuronCores per Inferentia2 / Trainium chip.
const NEURON_CORES_PER_CHIP: u32 = 2;

static AWS: LazyLock<HashMap<String, InstanceType>> = LazyLock::new(|| parse(include_str!("aws_instance_types.csv")));

/// Compute Engine machine types (`gcp_machine_types.csv`), in the same shape
/// (no Inferentia columns).
static GCP: LazyLock<HashMap<String, InstanceType>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    for line in include_str!("gcp_machine_types.csv").lines().filter(|l| !l.starts_with('#') && !l.starts_with("machine_type,") && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 6 {
            continue;
        }
        let row = [f[0], f[1], f[2], f[3], f[4], "0", "", f[5]];
        if let Some(t) = self::row(&row) {
            out.insert(f[0].to_string(), t);
        }
    }
    out
});

/// Hourly price of one GPU attached with `guestAccelerators` (us-central1,
/// on-demand, as published around 2025; planning figures).
const GCP_ACCELERATOR_USD: &[(&str, f64)] = &[
    ("nvidia-tesla-t4", 0.35),
    ("nvidia-tesla-p4", 0.60),
    ("nvidia-tesla-p100", 1.46),
    ("nvidia-tesla-v100", 2.48),
    ("nvidia-tesla-k80", 0.45),
];

/// A Spot VM costs about this share of the on-demand price (Compute Engine's
/// Spot discounts are commonly 60-91%; a planning figure, not a quote).
pub const GCP_SPOT_PRICE_FACTOR: f64 = 0.3;

fn parse(text: &str) -> HashMap<String, InstanceType> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with("instance_type,") && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(name), Some(t)) = (f.first(), row(&f)) else { continue };
        out.insert(name.to_string(), t);
    }
    out
}

fn row(f: &[&str]) -> Option<InstanceType> {
    if f.len() != 8 {
        return None;
    }
    Some(InstanceType {
        vcpus: f[1].parse().ok()?,
        memory_mib: f[2].parse().ok()?,
        gpus: f[3].parse().ok()?,
        gpu_model: f[4].to_string(),
        accelerators: f[5].parse().ok()?,
        accelerator_model: f[6].to_string(),
        on_demand_usd: f[7].parse().ok()?,
    })
}

/// An EC2 instance type from the table.
pub fn aws(name: &str) -> Option<&'static InstanceType> {
    AWS.get(name)
}

/// A Compute Engine machine type from the table.
pub fn gcp(name: &str) -> Option<&'static InstanceType> {
    GCP.get(name)
}

/// How many Compute Engine machine types the table knows.
pub fn gcp_count() -> usize {
    GCP.len()
}

/// Fills `price` of a `gcp` node type from its `machineType` and attached GPUs
/// when the file leaves it out. Resources are not filled: Ray's GCP launcher
/// takes them from the file only, and so does this loader.
pub fn fill_gcp_price(t: &mut NodeTypeConfig) {
    if t.price.is_some() {
        return;
    }
    let Some(info) = t.node_config.get("machineType").and_then(|v| v.as_str()).map(|m| m.rsplit('/').next().unwrap_or(m)).and_then(gcp) else { return };
    let mut usd = info.on_demand_usd;
    for g in t.node_config.get("guestAccelerators").and_then(|v| v.as_array()).into_iter().flatten() {
        let kind = g.get("acceleratorType").and_then(|v| v.as_str()).map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or_default();
        let count = g.get("acceleratorCount").and_then(|v| v.as_f64()).unwrap_or(1.0);
        match GCP_ACCELERATOR_USD.iter().find(|(k, _)| *k == kind) {
            Some((_, p)) => usd += p * count,
            None => return, // an unknown GPU: no price rather than a wrong one
        }
    }
    let scheduling: Vec<&serde_json::Value> = match t.node_config.get("scheduling") {
        Some(serde_json::Value::Array(a)) => a.iter().collect(),
        Some(v) => vec![v],
        None => Vec::new(),
    };
    let spot = scheduling.iter().any(|s| s.get("provisioningModel").and_then(|v| v.as_str()) == Some("SPOT") || s.get("preemptible").and_then(|v| v.as_bool()) == Some(true));
    t.price = Some(if spot { usd * GCP_SPOT_PRICE_FACTOR } else { usd });
}

/// How many EC2 types the table knows.
pub fn aws_count() -> usize {
    AWS.len()
}

/// The resources Ray gives a node of instance type `t`.
pub fn aws_resources(t: &InstanceType, is_head: bool) -> BTreeMap<String, f64> {
    let mut r = BTreeMap::new();
    r.insert("CPU".to_string(), f64::from(t.vcpus));
    if t.gpus > 0 {
        r.insert("GPU".to_string(), f64::from(t.gpus));
        if !t.gpu_model.is_empty() {
            r.insert(format!("accelerator_type:{}", t.gpu_model), 1.0);
        }
    }
    if t.accelerators > 0 {
        r.insert("neuron_cores".to_string(), f64::from(t.accelerators * NEURON_CORES_PER_CHIP));
        r.insert("accelerator_type:aws-neuron-core".to_string(), 1.0);
    }
    if !is_head {
        r.insert("memory".to_string(), (t.memory_mib as f64 * 1024.0 * 1024.0 * MEMORY_SHARE).floor());
    }
    r
}

/// Fills `resources` and `price` of an `aws` node type from its `InstanceType`.
/// `resources_given` says whether the file had a `resources` key. Returns a
/// warning when the type is not in the table and the file left `resources` out
/// (the autoscaler then plans with no resources for it until a node of the type
/// registers; set `resources` for such types).
pub fn fill_aws(t: &mut NodeTypeConfig, is_head: bool, resources_given: bool) -> Option<String> {
    let name = t.node_config.get("InstanceType").and_then(|v| v.as_str()).map(str::to_string);
    let Some(info) = name.as_deref().and_then(aws) else {
        return match (resources_given, name) {
            (true, _) => None,
            (false, Some(n)) => Some(format!(
                "available_node_types[{:?}]: instance type {n:?} is not in this build's instance-type table; set `resources` (and `price`) for it",
                t.name
            )),
            (false, None) => Some(format!("available_node_types[{:?}]: no resources and no node_config.InstanceType to take them from; set `resources`", t.name)),
        };
    };
    let mut merged = aws_resources(info, is_head);
    merged.extend(t.declared_resources.iter().map(|(k, v)| (k.clone(), *v)));
    let mut set = ResourceSet::new();
    for (k, v) in &merged {
        if *v > 0.0 {
            set.set(k.clone(), FixedPoint::from_f64(*v));
        }
    }
    t.resources = set;
    t.declared_resources = merged;
    if t.price.is_none() {
        let spot = t.node_config.pointer("/InstanceMarketOptions/MarketType").and_then(|v| v.as_str()).is_some_and(|m| m.eq_ignore_ascii_case("spot"));
        t.price = Some(if spot { info.on_demand_usd * SPOT_PRICE_FACTOR } else { info.on_demand_usd });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_loads_every_row() {
        let rows = include_str!("aws_instance_types.csv").lines().filter(|l| !l.starts_with('#') && !l.starts_with("instance_type,")).count();
        assert_eq!(aws_count(), rows, "every row parses");
        assert!(rows > 100);
        let m5 = aws("m5.large").unwrap();
        assert_eq!((m5.vcpus, m5.memory_mib, m5.gpus), (2, 8192, 0));
    }

    #[test]
    fn the_gcp_table_loads_every_row() {
        let rows = include_str!("gcp_machine_types.csv").lines().filter(|l| !l.starts_with('#') && !l.starts_with("machine_type,")).count();
        assert_eq!(gcp_count(), rows, "every row parses");
        let n1 = gcp("n1-standard-2").unwrap();
        assert_eq!((n1.vcpus, n1.memory_mib, n1.gpus), (2, 7680, 0));
        assert_eq!(gcp("a2-highgpu-1g").unwrap().gpu_model, "A100");
    }

    #[test]
    fn resources_as_ray_fills_them() {
        let g = aws_resources(aws("g4dn.12xlarge").unwrap(), false);
        assert_eq!(g["CPU"], 48.0);
        assert_eq!(g["GPU"], 4.0);
        assert_eq!(g["accelerator_type:T4"], 1.0);
        assert_eq!(g["memory"], (196608.0 * 1024.0 * 1024.0 * 0.7f64).floor());
        let head = aws_resources(aws("m5.large").unwrap(), true);
        assert!(!head.contains_key("memory"), "the head gets no memory resource, as in Ray");
        let inf = aws_resources(aws("inf2.24xlarge").unwrap(), false);
        assert_eq!(inf["neuron_cores"], 12.0);
    }
}
