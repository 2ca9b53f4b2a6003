//! The raylet daemon's command line, built in one place for everyone who starts a
//! raylet (`ray start` and the local-process provider), so its flags are spelled
//! once. The `raylet` entry point of the `ray` executable parses exactly these flags.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::NodeId;
use crate::ResourceSet;
use crate::resources::{CPU, GPU, MEMORY, OBJECT_STORE_MEMORY};

/// Everything a raylet is started with. Unset options are left to the raylet
/// (it detects CPUs, GPUs and memory itself).
#[derive(Debug, Clone)]
pub struct RayletCommand {
    /// The node's id (chosen by the starter so it can find the node afterwards).
    pub node_id: NodeId,
    /// `host:port` of the GCS.
    pub gcs_address: String,
    /// The node's IP, as other nodes reach it.
    pub node_ip: IpAddr,
    /// Node manager port; 0 picks a free one.
    pub port: u16,
    /// The session folder on this machine.
    pub session_dir: PathBuf,
    /// CPUs to offer instead of the detected count.
    pub num_cpus: Option<f64>,
    /// GPUs to offer instead of the detected count.
    pub num_gpus: Option<f64>,
    /// Bytes of memory to offer.
    pub memory: Option<u64>,
    /// Bytes of shared memory for the object store.
    pub object_store_memory: Option<u64>,
    /// Custom resources.
    pub resources: BTreeMap<String, f64>,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// The head node's raylet.
    pub head: bool,
    /// The provider's instance id, for nodes an autoscaler launched.
    pub instance_id: Option<String>,
    /// The node type from the cluster config.
    pub node_type: Option<String>,
    /// Where the raylet writes `{"node_id", "port"}` once registered.
    pub ready_file: Option<PathBuf>,
    /// Exit when this process exits.
    pub watch_pid: Option<u32>,
    /// Port of the node's Prometheus `/metrics`; `None` (or 0): a free port.
    pub metrics_export_port: Option<u16>,
}

impl RayletCommand {
    /// A raylet of `node_id` joining the GCS at `gcs_address`, with every other
    /// option unset.
    pub fn new(node_id: NodeId, gcs_address: impl Into<String>, node_ip: IpAddr, session_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id,
            gcs_address: gcs_address.into(),
            node_ip,
            port: 0,
            session_dir: session_dir.into(),
            num_cpus: None,
            num_gpus: None,
            memory: None,
            object_store_memory: None,
            resources: BTreeMap::new(),
            labels: BTreeMap::new(),
            head: false,
            instance_id: None,
            node_type: None,
            ready_file: None,
            watch_pid: None,
            metrics_export_port: None,
        }
    }

    /// Offers exactly `resources` (a node type's resources): CPUs and GPUs always
    /// (0 when absent, so nothing is detected), memory and object store memory when
    /// given, and the rest as custom resources.
    pub fn with_resources(mut self, resources: &ResourceSet) -> Self {
        self.num_cpus = Some(resources.get(CPU).to_f64());
        self.num_gpus = Some(resources.get(GPU).to_f64());
        if resources.get(MEMORY).is_positive() {
            self.memory = Some(resources.get(MEMORY).to_f64() as u64);
        }
        if resources.get(OBJECT_STORE_MEMORY).is_positive() {
            self.object_store_memory = Some(resources.get(OBJECT_STORE_MEMORY).to_f64() as u64);
        }
        for (k, v) in resources.iter() {
            if ![CPU, GPU, MEMORY, OBJECT_STORE_MEMORY].contains(&k) {
                self.resources.insert(k.to_string(), v.to_f64());
            }
        }
        self
    }

    /// The arguments after argv[0], in Ray's `--flag=value` form (tools that scan
    /// `ps` for Ray's processes parse that form).
    pub fn args(&self) -> Vec<String> {
        let mut v = vec![
            format!("--node-id={}", self.node_id),
            format!("--gcs-address={}", self.gcs_address),
            format!("--node-ip-address={}", self.node_ip),
            format!("--port={}", self.port),
            format!("--session-dir={}", self.session_dir.display()),
        ];
        if let Some(n) = self.num_cpus {
            v.push(format!("--num-cpus={n}"));
        }
        if let Some(n) = self.num_gpus {
            v.push(format!("--num-gpus={n}"));
        }
        if let Some(n) = self.memory {
            v.push(format!("--memory={n}"));
        }
        if let Some(n) = self.object_store_memory {
            v.push(format!("--object-store-memory={n}"));
        }
        if !self.resources.is_empty() {
            v.push(format!("--resources={}", serde_json::to_string(&self.resources).unwrap_or_default()));
        }
        if !self.labels.is_empty() {
            v.push(format!("--labels={}", serde_json::to_string(&self.labels).unwrap_or_default()));
        }
        if self.head {
            v.push("--head".into());
        }
        if let Some(id) = &self.instance_id {
            v.push(format!("--instance-id={id}"));
        }
        if let Some(t) = &self.node_type {
            v.push(format!("--node-type={t}"));
        }
        if let Some(p) = &self.ready_file {
            v.push(format!("--ready-file={}", p.display()));
        }
        if let Some(pid) = self.watch_pid {
            v.push(format!("--watch-pid={pid}"));
        }
        if let Some(port) = self.metrics_export_port {
            v.push(format!("--metrics-export-port={port}"));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_types_resources_become_flags_and_custom_resources() {
        let res: ResourceSet = [("CPU", 2.0), ("memory", 1024.0), ("TPU", 4.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), crate::FixedPoint::from_f64(v)))
            .collect();
        let cmd = RayletCommand::new(NodeId::random(), "127.0.0.1:6379", "127.0.0.1".parse().unwrap(), "/tmp/s").with_resources(&res);
        let args = cmd.args();
        assert!(args.contains(&"--num-cpus=2".to_string()), "{args:?}");
        assert!(args.contains(&"--num-gpus=0".to_string()), "no GPU in the type: none detected either");
        assert!(args.contains(&"--memory=1024".to_string()));
        assert!(args.contains(&"--resources={\"TPU\":4.0}".to_string()), "{args:?}");
        assert!(!args.iter().any(|a| a.starts_with("--object-store-memory")));
    }
}
