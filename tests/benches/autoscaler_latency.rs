//! Autoscaler reaction benchmark (not a test): prints, over several trials,
//!   - demand visible in the GCS -> provider create called (target < 1 s), and
//!   - demand visible in the GCS -> the new node registered with the GCS,
//! for a `request_resources`-style constraint on a head with the fake_multinode
//! provider. "Visible in the GCS" is the moment the constraint RPC returned; "create
//! called" is the launch record the provider writes when its create begins.
//!
//! Run: `cargo bench -p ray-tests --bench autoscaler_latency` (after `pip install .`).

use std::time::Duration;

use ray_common::gcs_client::GcsClient;
use ray_proto::rpc::autoscaler::{ClusterResourceConstraint, RequestClusterResourceConstraintRequest, ResourceRequest, ResourceRequestByCount};
use ray_tests::*;

const CONFIG: &str = "cluster_name: bench\nmax_workers: 4\nidle_timeout_minutes: 0.01\nprovider:\n  type: fake_multinode\n\
available_node_types:\n  ray.head.default:\n    resources: {CPU: 0}\n    node_config: {}\n  small:\n    resources: {CPU: 1}\n    node_config: {}\n    max_workers: 4\n\
head_node_type: ray.head.default\n";

fn constraint(cpus: u64) -> RequestClusterResourceConstraintRequest {
    RequestClusterResourceConstraintRequest {
        cluster_resource_constraint: Some(ClusterResourceConstraint {
            resource_requests: if cpus == 0 {
                vec![]
            } else {
                vec![ResourceRequestByCount {
                    request: Some(ResourceRequest { resources_bundle: [("CPU".to_string(), 1.0)].into() }),
                    count: cpus,
                }]
            },
        }),
    }
}

fn provider_records(env: &RayEnv) -> Vec<u64> {
    let path = env.root().join("session_latest").join("fake_multinode_bench.json");
    let Ok(body) = std::fs::read(path) else { return Vec::new() };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    v["entries"].as_array().map(|a| a.iter().filter_map(|e| e["created_ms"].as_u64()).collect()).unwrap_or_default()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = RayEnv::new();
    let cfg = env.write_file("bench.yaml", CONFIG);
    env.start_head(&["--num-cpus", "0", "--autoscaling-config", cfg.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (gcs, _) = rt.block_on(GcsClient::connect(&env.gcs_address(), &env.security(), Duration::from_secs(5))).unwrap();
    let mut to_create = Vec::new();
    let mut to_node = Vec::new();
    for trial in 0..5 {
        let before: Vec<u64> = provider_records(&env);
        rt.block_on(gcs.autoscaler.clone().request_cluster_resource_constraint(constraint(1))).unwrap();
        let visible = ray_common::time::now_ms();
        let created = loop {
            let now: Vec<u64> = provider_records(&env);
            if let Some(c) = now.iter().find(|c| !before.contains(c)) {
                break *c;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        assert!(wait_until(Duration::from_secs(10), || env.alive_of_type("small").len() == 1));
        let registered = ray_common::time::now_ms();
        to_create.push(created.saturating_sub(visible));
        to_node.push(registered.saturating_sub(visible));
        println!("trial {trial}: create called after {} ms, node registered after ~{} ms", created.saturating_sub(visible), registered.saturating_sub(visible));
        rt.block_on(gcs.autoscaler.clone().request_cluster_resource_constraint(constraint(0))).unwrap();
        assert!(wait_until(Duration::from_secs(15), || env.alive_of_type("small").is_empty()), "scale-down");
    }
    to_create.sort();
    to_node.sort();
    println!("demand visible in GCS -> provider create called: median {} ms, max {} ms (5 trials)", to_create[2], to_create[4]);
    println!("demand visible in GCS -> new node registered:    median {} ms, max {} ms (5 trials)", to_node[2], to_node[4]);
}
