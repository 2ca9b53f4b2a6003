//! The GCP bootstrap against the local Compute server: it makes exactly what a
//! config leaves out (SSH key in the project metadata, network, firewall rules,
//! the head's service account and its roles), and a second run makes nothing.

use ray_provider_gcp::GcpProvider;
use ray_provider_gcp::bootstrap::{ACT_AS_ROLE, HEAD_ROLE};
use ray_providers::*;
use ray_tests::gcp::{Gcp, PROJECT};
use serde_json::{Value, json};

fn config() -> Value {
    let disk = json!([{"boot": true, "autoDelete": true, "initializeParams": {"diskSizeGb": 50, "sourceImage": "projects/deeplearning-platform-release/global/images/family/common-cpu"}}]);
    json!({
        "cluster_name": "boot",
        "provider": {"type": "gcp", "region": "us-west1", "availability_zone": "us-west1-a", "project_id": PROJECT, "ssh_source_ranges": ["203.0.113.0/24"]},
        "auth": {"ssh_user": "ubuntu"},
        "head_node_type": "ray_head_default",
        "available_node_types": {
            "ray_head_default": {"resources": {"CPU": 2}, "node_config": {"machineType": "n1-standard-2", "disks": disk}},
            "ray_worker_small": {"resources": {"CPU": 2}, "node_config": {"machineType": "n1-standard-2", "disks": disk,
                "serviceAccounts": [{"email": "default", "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]}},
        },
    })
}

fn mutations(gcp: &Gcp) -> Vec<String> {
    gcp.log()
        .into_iter()
        .filter(|l| ["insert", "create", "setIamPolicy", "setCommonInstanceMetadata"].iter().any(|m| l.split(' ').next().unwrap_or("").ends_with(m)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_makes_what_the_config_leaves_out_once() {
    let gcp = Gcp::start(&["--no-default-network"]);
    let home = tempfile::tempdir().unwrap();
    // SAFETY: a process of its own (nextest), before any other thread uses the environment.
    unsafe {
        for (k, v) in gcp.env() {
            std::env::set_var(k, v);
        }
        std::env::set_var("HOME", home.path());
    }
    let cfg = config();
    let ctx = ProviderContext {
        cluster_name: "boot".into(),
        gcs_address: String::new(),
        temp_root: std::env::temp_dir(),
        session_name: "s".into(),
        ray_executable: "/bin/true".into(),
        node_env: Vec::new(),
        auth: Value::Null,
        boot_commands: Default::default(),
    };
    let p = GcpProvider::new(&cfg["provider"], ctx.clone()).unwrap();
    let out = p.bootstrap(cfg.clone()).await.expect("bootstrap");

    // SSH: a key in ~/.ssh, its public half in the project's ssh-keys.
    let key = out["auth"]["ssh_private_key"].as_str().unwrap().to_string();
    assert!(key.starts_with(&home.path().join(".ssh").display().to_string()) && key.contains(&format!("ray-autoscaler_gcp_us-west1_{PROJECT}_ubuntu")), "{key}");
    let public = std::fs::read_to_string(format!("{key}.pub")).unwrap();
    let state = gcp.state();
    let ssh_keys = state["projectMetadata"]["items"].as_array().unwrap().iter().find(|i| i["key"] == "ssh-keys").unwrap()["value"].as_str().unwrap().to_string();
    assert_eq!(ssh_keys, format!("ubuntu:{}", public.trim()));

    // Network: the default network was made; every node type is on its subnetwork, tagged.
    assert_eq!(state["networks"].as_array().unwrap().len(), 1);
    for t in ["ray_head_default", "ray_worker_small"] {
        let nc = &out["available_node_types"][t]["node_config"];
        assert!(nc["networkInterfaces"][0]["subnetwork"].as_str().unwrap().ends_with("/regions/us-west1/subnetworks/default"), "{nc}");
        assert_eq!(nc["networkInterfaces"][0]["accessConfigs"][0]["type"], "ONE_TO_ONE_NAT");
        assert_eq!(nc["tags"]["items"], json!(["ray-boot"]));
    }
    // Firewall: cluster traffic between tagged nodes, and SSH from the given ranges; nothing else.
    let fws = state["firewalls"].as_array().unwrap();
    let names: Vec<&str> = fws.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ray-boot-internal", "ray-boot-ssh"]);
    assert_eq!(fws[0]["sourceTags"], json!(["ray-boot"]));
    assert_eq!(fws[1]["sourceRanges"], json!(["203.0.113.0/24"]));
    assert_eq!(fws[1]["allowed"], json!([{"IPProtocol": "tcp", "ports": ["22"]}]));
    assert!(!fws.iter().any(|f| f.to_string().contains("8265")), "the dashboard stays closed");

    // The head's service account, with only the roles the autoscaler needs.
    let email = format!("ray-rs-autoscaler-sa-v1@{PROJECT}.iam.gserviceaccount.com");
    assert_eq!(out["available_node_types"]["ray_head_default"]["node_config"]["serviceAccounts"][0]["email"], email);
    assert_eq!(out["available_node_types"]["ray_worker_small"]["node_config"]["serviceAccounts"][0]["email"], "default", "workers keep theirs");
    let member = format!("serviceAccount:{email}");
    let project_roles: Vec<&str> = state["policy"]["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["members"].as_array().unwrap().iter().any(|m| m == &json!(member)))
        .map(|b| b["role"].as_str().unwrap())
        .collect();
    assert_eq!(project_roles, [HEAD_ROLE], "one project role");
    let on_default = &state["accountPolicies"]["1234567890-compute@developer.gserviceaccount.com"]["bindings"];
    assert_eq!(on_default, &json!([{"role": ACT_AS_ROLE, "members": [member]}]), "act as the workers' account only");

    // A second bootstrap (e.g. the head's, or `ray up` again) makes nothing.
    let before = mutations(&gcp);
    assert_eq!(before.len(), 7, "metadata, network, 2 firewall rules, account, 2 policies: {before:#?}");
    let p2 = GcpProvider::new(&cfg["provider"], ctx.clone()).unwrap();
    let again = p2.bootstrap(cfg.clone()).await.expect("second bootstrap");
    assert_eq!(mutations(&gcp), before, "nothing new");
    assert_eq!(again["available_node_types"], out["available_node_types"]);
    let out2 = p2.bootstrap(out.clone()).await.expect("bootstrap of the bootstrapped config");
    assert_eq!(mutations(&gcp), before);
    assert_eq!(out2["available_node_types"], out["available_node_types"]);

    // A TPU node type is refused before anything is made.
    let mut tpu = cfg.clone();
    tpu["available_node_types"]["ray_tpu"] = json!({"resources": {"TPU": 4}, "node_config": {"acceleratorType": "v4-8", "runtimeVersion": "tpu-ubuntu2204-base"}});
    let e = GcpProvider::new(&tpu["provider"], ctx.clone()).unwrap().bootstrap(tpu).await.expect_err("TPU");
    assert!(e.class == ErrorClass::InvalidConfig && e.message.contains("ray_tpu") && e.message.contains("TPU"), "{e}");
    assert_eq!(mutations(&gcp), before);

    // A project that does not exist is named.
    let mut wrong = cfg.clone();
    wrong["provider"]["project_id"] = json!("no-such-project");
    let e = GcpProvider::new(&wrong["provider"], ctx).unwrap().bootstrap(wrong).await.expect_err("no project");
    assert!(e.class == ErrorClass::InvalidConfig && e.message.contains("provider.project_id") && e.message.contains("no-such-project"), "{e}");
}
