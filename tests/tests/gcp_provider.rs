//! The GCP provider against the local Compute server (`tests/gcp_emulator`):
//! labels and filters, idempotent launches, the bootstrap, and each error class.

use std::collections::BTreeMap;

use ray_provider_gcp::GcpProvider;
use ray_providers::*;
use ray_tests::gcp::{Gcp, PROJECT};
use serde_json::{Value, json};

const CLUSTER: &str = "gcp-test";

struct Rig {
    gcp: Gcp,
    _home: tempfile::TempDir,
}

fn rig(args: &[&str]) -> Rig {
    let gcp = Gcp::start(args);
    let home = tempfile::tempdir().unwrap();
    // SAFETY: nextest runs each test in a process of its own, and this runs
    // before the test makes any other thread.
    unsafe {
        for (k, v) in gcp.env() {
            std::env::set_var(k, v);
        }
        std::env::set_var("HOME", home.path());
    }
    Rig { gcp, _home: home }
}

fn ctx(cluster: &str) -> ProviderContext {
    ProviderContext {
        cluster_name: cluster.into(),
        gcs_address: "10.0.0.1:6379".into(),
        temp_root: std::env::temp_dir(),
        session_name: "s".into(),
        ray_executable: "/bin/true".into(),
        node_env: Vec::new(),
        auth: Value::Null,
        boot_commands: Default::default(),
    }
}

fn provider_for(cluster: &str, extra: Value) -> GcpProvider {
    let mut cfg = json!({"type": "gcp", "region": "us-west1", "availability_zone": "us-west1-a", "project_id": PROJECT});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    GcpProvider::new(&cfg, ctx(cluster)).expect("provider")
}

fn provider(extra: Value) -> GcpProvider {
    provider_for(CLUSTER, extra)
}

fn node_config() -> Value {
    json!({
        "machineType": "n1-standard-2",
        "disks": [{"boot": true, "autoDelete": true, "initializeParams": {"diskSizeGb": 50, "sourceImage": "projects/deeplearning-platform-release/global/images/family/common-cpu"}}],
        "networkInterfaces": [{"network": "global/networks/default"}],
    })
}

fn request(rid: &str, node_type: &str, ids: &[&str], node_config: Value) -> CreateRequest {
    let tags: BTreeMap<String, String> = [(TAG_NODE_KIND, NODE_KIND_WORKER), (TAG_USER_NODE_TYPE, node_type), (TAG_LAUNCH_CONFIG, "hash-1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CreateRequest {
        request_id: rid.into(),
        node_type: node_type.into(),
        instance_ids: ids.iter().map(|s| s.to_string()).collect(),
        node_config,
        resources: Default::default(),
        labels: Default::default(),
        tags,
    }
}

fn instances(gcp: &Gcp) -> Vec<Value> {
    gcp.state()["instances"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn create_list_label_and_delete_touch_only_the_clusters_labelled_instances() {
    let r = rig(&[]);
    let p = provider(json!({}));
    let other = provider_for("someone-else", json!({}));
    let theirs = other.create(&request("req-x", "w", &["x-1"], node_config())).await.expect("their instance");

    let made = p.create(&request("req-1", "ray.worker.GPU", &["inst-1", "inst-2"], node_config())).await.expect("create");
    assert_eq!(made.len(), 2);
    for c in &made {
        assert!(c.cloud_id.starts_with("ray-gcp-test-worker-"), "{}", c.cloud_id);
        assert_eq!(c.node_type, "ray.worker.GPU", "the node type reads back as written");
        assert!(c.internal_ip.is_some());
    }
    // On the server: GCP-legal labels with the cluster's tags.
    let all = instances(&r.gcp);
    assert_eq!(all.len(), 3);
    let mine: Vec<&Value> = all.iter().filter(|i| i["labels"]["ray-cluster-name"] == CLUSTER).collect();
    assert_eq!(mine.len(), 2);
    for i in &mine {
        let l = &i["labels"];
        assert_eq!((l["ray-node-type"].as_str(), l["ray-node-status"].as_str(), l["ray-launch-config"].as_str()), (Some("worker"), Some("uninitialized"), Some("hash-1")));
        assert_eq!(l["ray-launch-request"], "req-1");
        let t = l["ray-user-node-type"].as_str().unwrap();
        assert!(t.starts_with("ray_worker_gpu-") && t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c)), "{t}");
        assert_eq!(i["zoneName"], "us-west1-a");
    }
    // Listing filters by the cluster's label, on the server.
    let listed = p.list().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(r.gcp.calls("instances.list").iter().any(|l| l.contains("labels.ray-cluster-name")), "{:?}", r.gcp.calls("instances.list"));
    assert!(listed.iter().all(|c| c.tags[TAG_USER_NODE_TYPE] == "ray.worker.GPU" && c.tags[TAG_CLUSTER_NAME] == CLUSTER));

    // Tags change through setLabels (with the label fingerprint).
    let id = made[0].cloud_id.clone();
    p.set_tags(&id, &[(TAG_NODE_STATUS.to_string(), node_status::UP_TO_DATE.to_string())].into()).await.unwrap();
    let after = p.list().await.unwrap();
    let c = after.iter().find(|c| c.cloud_id == id).unwrap();
    assert_eq!(c.tags[TAG_NODE_STATUS], "up-to-date");
    assert_eq!(c.tags[TAG_USER_NODE_TYPE], "ray.worker.GPU", "other tags stay");

    // Terminating a foreign or unknown instance does nothing; ours go.
    p.terminate(&[theirs[0].cloud_id.clone(), "no-such-vm".into(), id.clone()]).await.unwrap();
    let left: Vec<String> = instances(&r.gcp).iter().map(|i| i["name"].as_str().unwrap().to_string()).collect();
    assert!(left.contains(&theirs[0].cloud_id), "someone else's instance stays: {left:?}");
    assert!(!left.contains(&id), "ours was deleted: {left:?}");
    assert_eq!(p.list().await.unwrap().len(), 1);
    // The delete's operation was awaited before terminate returned.
    assert!(!r.gcp.calls("zoneOperations.wait").is_empty());
}

#[tokio::test]
async fn a_retried_create_never_makes_a_second_instance() {
    let r = rig(&[]);
    let p = provider(json!({}));
    // The first insert takes effect but its reply is lost: the client retries
    // with the same requestId and Compute answers with the first operation.
    r.gcp.set_faults(json!([{"method": "instances.insert", "status": 503, "reason": "backendError", "times": 1, "after": true}]));
    let req = request("req-1", "w", &["inst-1"], node_config());
    let made = p.create(&req).await.expect("create");
    let inserts = r.gcp.calls("instances.insert");
    assert_eq!(inserts.len(), 2, "{inserts:?}");
    let rid = |l: &str| l.split("requestId=").nth(1).map(|s| s.split(['&', ' ']).next().unwrap().to_string());
    assert_eq!(rid(&inserts[0]), rid(&inserts[1]), "the retry carries the same requestId");
    assert!(rid(&inserts[0]).is_some());
    assert_eq!(instances(&r.gcp).len(), 1);

    // The autoscaler retries the whole request (it never saw an answer): the
    // provider finds the request's instance by its label and inserts nothing.
    let again = p.create(&req).await.expect("create again");
    assert_eq!(again[0].cloud_id, made[0].cloud_id);
    assert_eq!(r.gcp.calls("instances.insert").len(), 2, "no insert on the retried request");
    assert_eq!(instances(&r.gcp).len(), 1);

    // A create whose insert went through but whose operation could not be
    // awaited fails; the retried request adopts the instance.
    r.gcp.set_faults(json!([{"method": "zoneOperations.wait", "status": 500, "reason": "backendError", "times": 50}]));
    let req2 = request("req-2", "w", &["inst-2"], node_config());
    let e = p.create(&req2).await.expect_err("the wait keeps failing");
    assert_eq!(e.class, ErrorClass::Transient, "{e}");
    r.gcp.set_faults(json!([]));
    let adopted = p.create(&req2).await.expect("retried");
    assert_eq!(adopted.len(), 1);
    assert_eq!(instances(&r.gcp).len(), 2, "still one instance per instance id");
}

#[tokio::test]
async fn no_capacity_moves_to_the_next_zone_then_spot_falls_back_to_standard() {
    let r = rig(&[]);
    let p = provider(json!({"availability_zone": "us-west1-a,us-west1-b"}));
    r.gcp.set_stockouts(json!([{"zone": "us-west1-a", "machineType": "*"}]));
    let made = p.create(&request("req-1", "w", &["inst-1"], node_config())).await.expect("made in the next zone");
    let all = instances(&r.gcp);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["zoneName"], "us-west1-b");
    assert!(all[0]["machineType"].as_str().unwrap().ends_with("zones/us-west1-b/machineTypes/n1-standard-2"));
    let inserts = r.gcp.calls("instances.insert");
    assert!(inserts[0].contains("/zones/us-west1-a/") && inserts[1].contains("/zones/us-west1-b/"), "{inserts:?}");
    // The provider finds it in its zone for later calls.
    p.terminate(&[made[0].cloud_id.clone()]).await.unwrap();
    assert!(instances(&r.gcp).is_empty());

    // Spot: no zone has Spot n1-standard-2 ... modelled as no capacity for the
    // type anywhere but on the second try of each zone.
    r.gcp.set_stockouts(json!([{"zone": "*", "machineType": "n1-standard-2"}]));
    let mut spot = node_config();
    spot["scheduling"] = json!({"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE"});
    let e = p.create(&request("req-2", "w", &["inst-2"], spot.clone())).await.expect_err("no capacity anywhere");
    assert_eq!(e.class, ErrorClass::Capacity);
    assert!(e.message.contains("us-west1-a (spot)") && e.message.contains("us-west1-b (spot)") && e.message.contains("us-west1-b"), "{e}");
    assert_eq!(r.gcp.calls("instances.insert").len(), 2 + 4, "two zones x (spot, standard)");
    let bodies_standard = r.gcp.log();
    assert!(bodies_standard.iter().filter(|l| l.starts_with("instances.insert")).count() == 6);
    assert!(instances(&r.gcp).is_empty(), "failed launches leave nothing");

    // Capacity for standard VMs only: Spot falls back.
    r.gcp.set_stockouts(json!([]));
    let state_before = r.gcp.calls("instances.insert").len();
    let made = p.create(&request("req-3", "w", &["inst-3"], spot)).await.unwrap();
    assert_eq!(r.gcp.calls("instances.insert").len(), state_before + 1);
    let i = &instances(&r.gcp)[0];
    assert_eq!(i["scheduling"]["provisioningModel"], "SPOT");
    assert_eq!(made.len(), 1);
}

#[tokio::test]
async fn quota_auth_and_rate_limit_errors_are_classified() {
    let r = rig(&[]);
    let p = provider(json!({}));
    // Quota: the operation ends with QUOTA_EXCEEDED; not retried.
    r.gcp.set_quota(json!({"us-west1": 1}));
    let e = p.create(&request("req-1", "w", &["inst-1"], node_config())).await.expect_err("over quota");
    assert_eq!(e.class, ErrorClass::Quota, "{e}");
    assert!(e.message.contains("QUOTA_EXCEEDED") && e.message.contains("CPUS"), "{e}");
    assert_eq!(r.gcp.calls("instances.insert").len(), 1, "a quota error is not retried");
    assert!(instances(&r.gcp).is_empty());
    r.gcp.set_quota(json!({}));

    // Rate limits (403 rateLimitExceeded, 429): retried with back-off until they pass.
    r.gcp.set_faults(json!([
        {"method": "instances.insert", "status": 403, "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded", "times": 2},
        {"method": "instances.list", "status": 429, "reason": "rateLimitExceeded", "statusName": "RESOURCE_EXHAUSTED", "times": 1},
    ]));
    let made = p.create(&request("req-2", "w", &["inst-2"], node_config())).await.expect("retried through the rate limit");
    assert_eq!(made.len(), 1);
    let ins: Vec<String> = r.gcp.calls("instances.insert").into_iter().skip(1).collect();
    assert_eq!(ins.len(), 3, "{ins:?}");
    assert!(ins[0].ends_with("403 rateLimitExceeded") && ins[2].ends_with("-> 200"), "{ins:?}");

    // Permission denied: an auth error naming where the credentials came from.
    r.gcp.set_faults(json!([{"method": "instances.list", "status": 403, "reason": "forbidden", "message": "Required 'compute.instances.list' permission", "times": 1}]));
    let e = p.list().await.expect_err("forbidden");
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
    assert!(e.message.contains("compute.instances.list") && e.message.contains("GOOGLE_APPLICATION_CREDENTIALS="), "{e}");
    r.gcp.set_faults(json!([]));

    // Credentials the token endpoint refuses.
    let bad = r.gcp.credentials_file("not-the-refresh-token");
    unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &bad) };
    let fresh = provider(json!({}));
    let e = fresh.list().await.expect_err("no token");
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
    assert!(e.message.contains(&bad.display().to_string()), "names the credentials file: {e}");
    // No credentials at all (and no metadata server): auth, naming what was looked for.
    unsafe { std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS") };
    let none = provider(json!({}));
    let e = none.list().await.expect_err("no credentials");
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
    assert!(e.message.contains("metadata server"), "{e}");
}

#[tokio::test]
async fn invalid_node_configs_are_invalid_config_errors_and_tpus_are_refused() {
    let r = rig(&[]);
    let p = provider(json!({}));
    let mut bad = node_config();
    bad["machineTyp"] = json!("typo");
    let e = p.create(&request("req-1", "w", &["inst-1"], bad)).await.expect_err("unknown field");
    assert_eq!(e.class, ErrorClass::InvalidConfig, "{e}");
    assert!(e.message.contains("machineTyp"), "{e}");
    let mut gpu = node_config();
    gpu["guestAccelerators"] = json!([{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]);
    p.create(&request("req-2", "gpu", &["inst-2"], gpu)).await.expect("a GPU VM gets onHostMaintenance TERMINATE");
    let i = &instances(&r.gcp)[0];
    assert_eq!(i["scheduling"]["onHostMaintenance"], "TERMINATE");
    assert!(i["guestAccelerators"][0]["acceleratorType"].as_str().unwrap().ends_with("zones/us-west1-a/acceleratorTypes/nvidia-tesla-t4"));
    let e = p.create(&request("req-3", "tpu", &["inst-3"], json!({"acceleratorType": "v2-8", "runtimeVersion": "2.12.0"}))).await.expect_err("TPU");
    assert!(e.class == ErrorClass::InvalidConfig && e.message.contains("TPU"), "{e}");
    let e = p.create(&request("req-4", "w", &["inst-4"], json!({"machineType": "n9-imaginary-8", "disks": node_config()["disks"], "networkInterfaces": [{}]}))).await.expect_err("no such machine type");
    assert!(e.class == ErrorClass::InvalidConfig && e.message.contains("n9-imaginary-8"), "{e}");
}

#[tokio::test]
async fn every_node_type_of_the_example_configs_launches() {
    let r = rig(&[]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/gcp");
    for name in ["example-full.yaml", "example-minimal.yaml"] {
        // The examples leave project_id for the user to fill in.
        let text = std::fs::read_to_string(dir.join(name)).unwrap().replace("project_id: null", &format!("project_id: {PROJECT}"));
        let path = r._home.path().join(name);
        std::fs::write(&path, text).unwrap();
        let cfg = ray_autoscaler::config::ClusterConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = GcpProvider::new(&cfg.provider, ctx(&format!("ex-{}", name.len()))).expect("provider");
        let mut doc = json!({"provider": cfg.provider, "auth": {"ssh_user": "ubuntu"}, "head_node_type": cfg.head_node_type, "available_node_types": {}});
        for nt in &cfg.node_types {
            doc["available_node_types"][&nt.name] = json!({"node_config": nt.node_config});
        }
        let booted = p.bootstrap(doc).await.unwrap_or_else(|e| panic!("{name}: bootstrap: {e}"));
        for (t, nt) in booted["available_node_types"].as_object().unwrap() {
            let made = p.create(&request(&format!("{name}-{t}"), t, &[&format!("{name}-{t}-1")], nt["node_config"].clone())).await;
            let made = made.unwrap_or_else(|e| panic!("{name}: {t}: {e}"));
            assert_eq!(made[0].node_type, *t);
        }
    }
    let all = instances(&r.gcp);
    assert_eq!(all.len(), 5, "3 types of example-full, 2 of example-minimal");
    let spot = all.iter().find(|i| i["labels"]["ray-user-node-type"] == "ray_worker_small" && i["labels"]["team"] == "research").expect("the small worker");
    assert_eq!(spot["scheduling"]["provisioningModel"], "SPOT", "Ray's list form of scheduling is read");
}
