//! The AWS provider against a real moto server (EC2 and IAM) on loopback, and
//! behind the fault-injecting proxy for what moto cannot do (capacity, quota,
//! throttling, auth errors).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use ray_provider_aws::AwsProvider;
use ray_providers::*;
use ray_tests::moto::Moto;
use serde_json::{Value, json};

#[path = "support/aws.rs"]
mod aws;

const CLUSTER: &str = "aws-test";

struct Rig {
    moto: Moto,
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    ami: String,
    home: tempfile::TempDir,
}

async fn rig() -> Rig {
    let moto = Moto::start();
    let home = tempfile::tempdir().unwrap();
    aws::export_env(&moto);
    // SAFETY: as in `export_env`: before any other thread of this test process.
    unsafe { std::env::set_var("HOME", home.path()) };
    let conf = aws::sdk_config(&moto).await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let iam = aws_sdk_iam::Client::new(&conf);
    let ami = aws::an_image(&ec2).await;
    Rig { moto, ec2, iam, ami, home }
}

fn ctx() -> ProviderContext {
    ProviderContext {
        cluster_name: CLUSTER.into(),
        gcs_address: "10.0.0.1:6379".into(),
        temp_root: std::env::temp_dir(),
        session_name: "s".into(),
        ray_executable: "/bin/true".into(),
        node_env: Vec::new(),
        auth: Value::Null,
        boot_commands: [("w".to_string(), vec!["ray start --address=$RAY_HEAD_IP:6379".to_string()])].into(),
    }
}

fn provider(endpoint: &str, extra: Value) -> AwsProvider {
    let mut cfg = json!({"type": "aws", "region": "us-west-2", "endpoint_url": endpoint, "cache_stopped_nodes": false});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    AwsProvider::new(&cfg, ctx()).expect("provider")
}

fn request(rid: &str, ids: &[&str], node_config: Value) -> CreateRequest {
    let tags: BTreeMap<String, String> = [
        (TAG_CLUSTER_NAME, CLUSTER),
        (TAG_NODE_KIND, NODE_KIND_WORKER),
        (TAG_USER_NODE_TYPE, "w"),
        (TAG_NODE_NAME, "ray-aws-test-worker"),
        (TAG_LAUNCH_CONFIG, "hash-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    CreateRequest {
        request_id: rid.into(),
        node_type: "w".into(),
        instance_ids: ids.iter().map(|s| s.to_string()).collect(),
        node_config,
        resources: Default::default(),
        labels: Default::default(),
        tags,
    }
}

impl Rig {
    fn node_config(&self) -> Value {
        json!({"InstanceType": "m5.large", "ImageId": self.ami})
    }

    /// Every instance of the account in `states`, with its tags.
    async fn instances(&self, states: &[&str]) -> Vec<(String, String, BTreeMap<String, String>)> {
        let f = Filter::builder().name("instance-state-name").set_values(Some(states.iter().map(|s| s.to_string()).collect())).build();
        let out = self.ec2.describe_instances().filters(f).send().await.unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                let tags = i.tags().iter().map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())).collect();
                (i.instance_id().unwrap().to_string(), i.subnet_id().unwrap_or_default().to_string(), tags)
            })
            .collect()
    }

    async fn foreign_instance(&self, tags: &[(&str, &str)]) -> String {
        let mut b = self.ec2.run_instances().image_id(&self.ami).instance_type("t3.micro".into()).min_count(1).max_count(1);
        if !tags.is_empty() {
            let spec = aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .set_tags(Some(tags.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build()).collect()))
                .build();
            b = b.tag_specifications(spec);
        }
        b.send().await.unwrap().instances()[0].instance_id().unwrap().to_string()
    }
}

#[tokio::test]
async fn create_list_and_terminate_touch_only_the_clusters_tagged_instances() {
    let r = rig().await;
    let p = provider(&r.moto.endpoint, json!({}));
    let untagged = r.foreign_instance(&[]).await;
    let other = r.foreign_instance(&[(TAG_CLUSTER_NAME, "someone-else")]).await;

    let made = p.create(&request("req-1", &["i-a", "i-b"], r.node_config())).await.expect("launch");
    assert_eq!(made.len(), 2);
    let listed = p.list().await.unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|c| c.cloud_id.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = made.iter().map(|c| c.cloud_id.as_str()).collect();
    want.sort();
    assert_eq!(ids, want, "only this cluster's instances are listed");
    for c in &listed {
        assert_eq!(c.node_type, "w");
        assert_eq!(c.tags.get(TAG_CLUSTER_NAME).map(String::as_str), Some(CLUSTER));
        assert_eq!(c.tags.get(TAG_NODE_KIND).map(String::as_str), Some(NODE_KIND_WORKER));
        assert_eq!(c.tags.get(TAG_NODE_STATUS).map(String::as_str), Some(node_status::UNINITIALIZED));
        assert_eq!(c.tags.get(TAG_LAUNCH_CONFIG).map(String::as_str), Some("hash-1"));
        assert_eq!(c.tags.get(TAG_LAUNCH_REQUEST).map(String::as_str), Some("req-1"));
        assert_eq!(c.tags.get(TAG_NODE_NAME).map(String::as_str), Some("ray-aws-test-worker"), "Name maps back to ray-node-name");
        assert!(c.internal_ip.is_some());
    }
    let all = r.instances(&["pending", "running"]).await;
    let on_ec2 = all.iter().find(|(id, _, _)| *id == made[0].cloud_id).unwrap();
    assert_eq!(on_ec2.2.get("Name").map(String::as_str), Some("ray-aws-test-worker"), "EC2 shows the node name as Name");
    assert_eq!(on_ec2.2.get(TAG_INSTANCE_ID).map(String::as_str).is_some(), true);

    p.set_tags(&made[0].cloud_id, &[(TAG_NODE_STATUS.to_string(), node_status::UP_TO_DATE.to_string())].into()).await.unwrap();
    let c = p.list().await.unwrap().into_iter().find(|c| c.cloud_id == made[0].cloud_id).unwrap();
    assert_eq!(c.tags.get(TAG_NODE_STATUS).map(String::as_str), Some(node_status::UP_TO_DATE));

    // Terminating foreign ids does nothing to them; terminating twice is harmless.
    let mut ids: Vec<String> = made.iter().map(|c| c.cloud_id.clone()).collect();
    ids.push(untagged.clone());
    ids.push(other.clone());
    p.terminate(&ids).await.unwrap();
    p.terminate(&ids).await.unwrap();
    assert!(p.list().await.unwrap().is_empty());
    let running: Vec<String> = r.instances(&["pending", "running"]).await.into_iter().map(|x| x.0).collect();
    assert!(running.contains(&untagged) && running.contains(&other), "instances of others stay: {running:?}");
    assert_eq!(running.len(), 2);
}

#[tokio::test]
async fn a_retried_create_never_makes_a_second_instance() {
    let r = rig().await;
    let p = provider(&r.moto.endpoint, json!({}));
    let first = p.create(&request("req-7", &["i-1"], r.node_config())).await.unwrap();
    let again = p.create(&request("req-7", &["i-1"], r.node_config())).await.unwrap();
    assert_eq!(first[0].cloud_id, again[0].cloud_id, "the same request returns the same instance");
    // A create cut short after launching some: a retry makes only what is missing.
    let more = p.create(&request("req-7", &["i-1", "i-2"], r.node_config())).await.unwrap();
    assert_eq!(more.len(), 2);
    assert_eq!(more[0].cloud_id, first[0].cloud_id);
    assert_eq!(r.instances(&["pending", "running"]).await.len(), 2, "one instance per instance id, whatever the retries");
}

#[tokio::test]
async fn stopped_nodes_are_cached_and_started_again() {
    let r = rig().await;
    let p = provider(&r.moto.endpoint, json!({"cache_stopped_nodes": true}));
    let made = p.create(&request("req-1", &["i-1"], r.node_config())).await.unwrap();
    let id = made[0].cloud_id.clone();
    p.terminate(std::slice::from_ref(&id)).await.unwrap();
    assert!(p.list().await.unwrap().is_empty(), "a stopped node is not a cluster node");
    let stopped = r.instances(&["stopping", "stopped"]).await;
    assert_eq!(stopped.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), [id.as_str()], "stopped, not terminated");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while r.instances(&["stopped"]).await.len() != 1 {
        assert!(std::time::Instant::now() < deadline, "the instance never reached stopped");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Another launch config: not reused.
    let mut other = request("req-2", &["i-2"], r.node_config());
    other.tags.insert(TAG_LAUNCH_CONFIG.into(), "hash-2".into());
    let fresh = p.create(&other).await.unwrap();
    assert_ne!(fresh[0].cloud_id, id);
    // Same type and launch config: the stopped one is started again, retagged.
    let reused = p.create(&request("req-3", &["i-3"], r.node_config())).await.unwrap();
    assert_eq!(reused[0].cloud_id, id, "the stopped instance is reused");
    let listed = p.list().await.unwrap();
    let c = listed.iter().find(|c| c.cloud_id == id).expect("running again");
    assert_eq!(c.tags.get(TAG_INSTANCE_ID).map(String::as_str), Some("i-3"));
    assert_eq!(c.tags.get(TAG_LAUNCH_REQUEST).map(String::as_str), Some("req-3"));
    assert_eq!(r.instances(&["pending", "running", "stopping", "stopped"]).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_makes_what_the_config_leaves_out_once() {
    let r = rig().await;
    let p = provider(&r.moto.endpoint, json!({}));
    let doc = json!({
        "cluster_name": CLUSTER,
        "provider": {"type": "aws", "region": "us-west-2"},
        "auth": {"ssh_user": "ubuntu"},
        "head_node_type": "head",
        "available_node_types": {
            "head": {"node_config": {"InstanceType": "m5.large", "ImageId": r.ami}},
            "w": {"node_config": {"InstanceType": "m5.large", "ImageId": r.ami}},
        }
    });
    let out = p.bootstrap(doc.clone()).await.expect("bootstrap");
    let key = out["auth"]["ssh_private_key"].as_str().expect("a key was made").to_string();
    assert!(key.starts_with(&r.home.path().display().to_string()) && key.ends_with("ray-autoscaler_us-west-2.pem"), "{key}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "the private key is the user's alone");
    let head = &out["available_node_types"]["head"]["node_config"];
    let w = &out["available_node_types"]["w"]["node_config"];
    assert_eq!(head["KeyName"], "ray-autoscaler_us-west-2");
    assert!(head["IamInstanceProfile"]["Arn"].as_str().unwrap().contains("ray-rs-autoscaler-v1"));
    assert!(w.get("IamInstanceProfile").is_none(), "workers get no role by default, as in Ray");
    let subnets = w["SubnetIds"].as_array().unwrap();
    assert!(!subnets.is_empty());
    let sg = w["SecurityGroupIds"][0].as_str().unwrap().to_string();
    assert_eq!(head["SecurityGroupIds"][0], sg);

    // The group: traffic inside the cluster, and SSH.
    let g = r.ec2.describe_security_groups().group_ids(&sg).send().await.unwrap();
    let g = &g.security_groups()[0];
    assert_eq!(g.group_name(), Some("ray-autoscaler-aws-test"));
    let rules = g.ip_permissions();
    assert!(rules.iter().any(|p| p.ip_protocol() == Some("-1") && p.user_id_group_pairs().iter().any(|u| u.group_id() == Some(sg.as_str()))));
    assert!(rules.iter().any(|p| p.from_port() == Some(22) && p.ip_ranges().iter().any(|r| r.cidr_ip() == Some("0.0.0.0/0"))));
    assert_eq!(rules.len(), 2, "nothing else is opened: {rules:?}");
    // The role's policy: no wildcard actions.
    let pol = r.iam.get_role_policy().role_name("ray-rs-autoscaler-v1").policy_name("ray-rs-autoscaler").send().await.unwrap();
    let text = urlencoding_decode(pol.policy_document());
    assert!(text.contains("ec2:RunInstances") && !text.contains("\"ec2:*\""), "{text}");

    // Again: everything is found, nothing new is made.
    let again = p.bootstrap(doc).await.expect("second bootstrap");
    assert_eq!(again, out);
    let groups = r.ec2.describe_security_groups().filters(Filter::builder().name("group-name").values("ray-autoscaler-aws-test").build()).send().await.unwrap();
    assert_eq!(groups.security_groups().len(), 1);
    assert_eq!(r.ec2.describe_key_pairs().send().await.unwrap().key_pairs().len(), 1);
    assert_eq!(r.iam.list_instance_profiles().send().await.unwrap().instance_profiles().len(), 1);
    assert_eq!(r.iam.list_roles().send().await.unwrap().roles().len(), 1);
}

fn urlencoding_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 0 && i + 2 <= b.len() - 1 {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}
