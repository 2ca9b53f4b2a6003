//! What each provider fills in for the top-level keys a config leaves out. Ray keeps
//! these in a `defaults.yaml` per provider and merges it under the user's file one
//! top-level key at a time (`fillout_defaults`): a key the file has replaces the
//! default whole, a key it lacks comes from here. These are this project's own
//! values, written for what this implementation runs: the same node types, head
//! type, worker limits and timeouts as Ray's, the cloud's instance settings, and
//! start commands for our `ray`. Ray's default setup commands (installing Ray
//! wheels and cloud SDKs for its Python autoscaler) are left out: nothing here
//! needs them.

use super::yaml::{self, Mapping, Node, Value};

/// Shared by every provider that starts Ray over SSH.
const COMMON: &str = r#"
cluster_name: default
upscaling_speed: 1.0
idle_timeout_minutes: 5
auth: {}
docker: {}
file_mounts: {}
cluster_synced_files: []
file_mounts_sync_continuously: false
rsync_exclude: []
rsync_filter: []
initialization_commands: []
setup_commands: []
head_setup_commands: []
worker_setup_commands: []
head_start_ray_commands:
  - ray stop
  - ulimit -n 65536; ray start --head --port=6379 --autoscaling-config=~/ray_bootstrap_config.yaml
worker_start_ray_commands:
  - ray stop
  - ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379
"#;

/// Providers whose nodes are started by the autoscaler itself: nothing to run.
const NO_COMMANDS: &str = r#"
head_start_ray_commands: []
worker_start_ray_commands: []
"#;

const AWS: &str = r#"
max_workers: 2
auth: {ssh_user: ubuntu}
head_node_type: ray.head.default
available_node_types:
  ray.head.default:
    resources: {}
    node_config:
      InstanceType: m5.large
      BlockDeviceMappings: [{DeviceName: /dev/sda1, Ebs: {VolumeSize: 256}}]
  ray.worker.default:
    min_workers: 0
    resources: {}
    node_config:
      InstanceType: m5.large
      InstanceMarketOptions: {MarketType: spot}
"#;

const GCP: &str = r#"
max_workers: 2
auth: {ssh_user: ubuntu}
head_node_type: ray_head_default
available_node_types:
  ray_head_default:
    resources: {CPU: 2}
    node_config:
      machineType: n1-standard-2
      disks:
        - boot: true
          autoDelete: true
          type: PERSISTENT
          initializeParams:
            diskSizeGb: 50
            sourceImage: projects/deeplearning-platform-release/global/images/family/common-cpu
  ray_worker_small:
    min_workers: 0
    resources: {CPU: 2}
    node_config:
      machineType: n1-standard-2
      disks:
        - boot: true
          autoDelete: true
          type: PERSISTENT
          initializeParams:
            diskSizeGb: 50
            sourceImage: projects/deeplearning-platform-release/global/images/family/common-cpu
      scheduling: [{preemptible: true}]
"#;

const AZURE: &str = r#"
max_workers: 2
auth: {ssh_user: ubuntu}
head_node_type: ray.head.default
available_node_types:
  ray.head.default:
    resources: {CPU: 2}
    node_config:
      azure_arm_parameters: {vmSize: Standard_D2s_v3, imagePublisher: microsoft-dsvm, imageOffer: ubuntu-2204,
                             imageSku: 2204-gen2, imageVersion: latest}
  ray.worker.default:
    min_workers: 0
    resources: {CPU: 2}
    node_config:
      azure_arm_parameters: {vmSize: Standard_D2s_v3, imagePublisher: microsoft-dsvm, imageOffer: ubuntu-2204,
                             imageSku: 2204-gen2, imageVersion: latest, priority: Spot}
"#;

/// Ray 2.60's wheel ships no defaults for Aliyun (so Ray itself refuses every
/// Aliyun config); these follow the ones in Ray's source tree.
const ALIYUN: &str = r#"
max_workers: 2
auth: {ssh_user: root}
head_node_type: ray.head.default
available_node_types:
  ray.head.default:
    resources: {CPU: 2}
    node_config: {InstanceType: ecs.n4.large, ImageId: ubuntu_20_04_x64_20G_alibase_20210420.vhd}
  ray.worker.default:
    min_workers: 1
    resources: {CPU: 8}
    node_config:
      InstanceType: ecs.n4.2xlarge
      ImageId: ubuntu_20_04_x64_20G_alibase_20210420.vhd
      InstanceMarketOptions: {MarketType: spot}
"#;

/// Ray's vSphere node types have no `node_config`, which its own schema requires,
/// so a vSphere config must list its node types; only the head's name defaults.
const VSPHERE: &str = r#"
cluster_name: ray-cluster
max_workers: 5
auth: {ssh_user: ray, ssh_private_key: ~/ray-bootstrap-key.pem}
docker:
  image: rayproject/ray-ml:latest
  container_name: ray_container
  pull_before_run: true
  run_options: [--ulimit nofile=65536:65536]
head_node_type: ray.head.default
"#;

/// The `local` provider's node type and worker counts come from `provider`
/// (`local.rs`); only the common keys default.
const LOCAL: &str = "";

const READONLY: &str = r#"
max_workers: 0
head_node_type: ray.head.default
available_node_types:
  ray.head.default: {resources: {}, node_config: {}, max_workers: 0}
"#;

const SPARK: &str = r#"
cluster_name: spark
max_workers: 8
idle_timeout_minutes: 1.0
head_node_type: ray.head.default
available_node_types:
  ray.head.default:
    resources: {CPU: 8, GPU: 0}
    node_config: {}
    max_workers: 0
  ray.worker:
    resources: {CPU: 1, object_store_memory: 1000000000}
    node_config: {}
    min_workers: 0
    max_workers: 4
"#;

/// This project's test provider (Ray 2.60's wheel ships no defaults for it).
const FAKE_MULTINODE: &str = r#"
max_workers: 8
head_node_type: ray.head.default
available_node_types:
  ray.head.default: {resources: {}, node_config: {}, min_workers: 0, max_workers: 0}
  ray.worker.cpu: {resources: {CPU: 1}, node_config: {}, min_workers: 0, max_workers: 4}
  ray.worker.gpu: {resources: {CPU: 4, GPU: 1}, node_config: {}, min_workers: 0, max_workers: 2}
"#;

/// Ray's minimal config for an external provider module names a head type and
/// nothing else that passes its schema: the file must bring the rest.
const EXTERNAL: &str = r#"
head_node_type: ray.head.default
"#;

/// A provider's defaults.
pub struct Defaults {
    /// The default top-level values, with no positions (they are not in the file).
    pub top: Mapping,
    /// Whether `head_node_type` defaults only together with `available_node_types`
    /// (this project's `fake_multinode`); Ray's providers default each key alone.
    pub head_type_with_types: bool,
}

/// The defaults of a provider type; `None` for `kuberay`, whose config Ray takes
/// as it is (the operator writes it whole), and for types Ray does not know.
pub fn for_provider(provider_type: &str) -> Option<Defaults> {
    let (parts, head_type_with_types): (&[&str], bool) = match provider_type {
        "aws" => (&[COMMON, AWS], false),
        "gcp" => (&[COMMON, GCP], false),
        "azure" => (&[COMMON, AZURE], false),
        "aliyun" => (&[COMMON, ALIYUN], false),
        "vsphere" => (&[COMMON, VSPHERE], false),
        "local" => (&[COMMON, LOCAL], false),
        "readonly" => (&[COMMON, NO_COMMANDS, READONLY], false),
        "spark" => (&[COMMON, NO_COMMANDS, SPARK], false),
        "external" => (&[EXTERNAL], false),
        "fake_multinode" | "fake_multinode_docker" => (&[COMMON, NO_COMMANDS, FAKE_MULTINODE], true),
        _ => return None,
    };
    let mut top = Mapping::default();
    for text in parts {
        for e in parse_own(text).entries {
            top.insert(&e.key, e.key_mark, e.value);
        }
    }
    Some(Defaults { top, head_type_with_types })
}

fn parse_own(text: &str) -> Mapping {
    match yaml::parse(text) {
        Ok(Some(Node { value: Value::Mapping(m), mark })) => match Node::mapping(m, mark).without_marks().value {
            Value::Mapping(m) => m,
            _ => Mapping::default(),
        },
        Ok(_) => Mapping::default(),
        // The texts above are fixed; `every_providers_defaults_parse` checks them.
        Err(e) => panic!("built-in provider defaults do not parse: {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::PROVIDER_TYPES;

    #[test]
    fn every_providers_defaults_parse() {
        for t in PROVIDER_TYPES {
            let d = for_provider(t);
            assert_eq!(d.is_none(), *t == "kuberay", "{t}");
            if let Some(d) = d {
                assert!(d.top.iter().all(|e| e.key_mark.line == 0), "{t}: defaults carry no positions");
            }
        }
        assert!(for_provider("nope").is_none());
        let aws = for_provider("aws").unwrap();
        assert_eq!(aws.top.get("max_workers").and_then(|n| n.as_scalar()).map(|s| s.text.as_str()), Some("2"));
        assert!(aws.top.contains("head_start_ray_commands"));
    }
}
