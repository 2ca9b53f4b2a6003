//! The AWS provider's handling of what moto cannot produce, injected by the
//! fault proxy in front of a real moto server: no capacity (next subnet, then
//! on-demand for spot, then a capacity error the autoscaler backs off on),
//! quota, throttling (rate-limited, jittered retries) and auth errors.

use std::collections::BTreeMap;

use ray_provider_aws::AwsProvider;
use ray_providers::*;
use ray_tests::moto::Moto;
use serde_json::{Value, json};

#[path = "support/aws.rs"]
mod aws;

struct Rig {
    _moto: Moto,
    proxy: ray_tests::moto::FaultProxy,
    ami: String,
    subnets: Vec<String>,
}

async fn rig() -> Rig {
    let moto = Moto::start();
    aws::export_env(&moto);
    let ec2 = aws_sdk_ec2::Client::new(&aws::sdk_config(&moto).await);
    let ami = aws::an_image(&ec2).await;
    let mut subnets: Vec<(String, String)> = ec2
        .describe_subnets()
        .send()
        .await
        .unwrap()
        .subnets()
        .iter()
        .map(|s| (s.availability_zone().unwrap_or_default().to_string(), s.subnet_id().unwrap().to_string()))
        .collect();
    subnets.sort();
    assert!(subnets.len() >= 2, "moto's default VPC has a subnet per zone");
    let proxy = moto.proxy();
    Rig { _moto: moto, proxy, ami, subnets: subnets.into_iter().map(|s| s.1).collect() }
}

fn provider(endpoint: &str) -> AwsProvider {
    let cfg = json!({"type": "aws", "region": "us-west-2", "endpoint_url": endpoint, "cache_stopped_nodes": false});
    let ctx = ProviderContext {
        cluster_name: "faults".into(),
        gcs_address: "10.0.0.1:6379".into(),
        temp_root: std::env::temp_dir(),
        session_name: "s".into(),
        ray_executable: "/bin/true".into(),
        node_env: Vec::new(),
        auth: Value::Null,
        boot_commands: BTreeMap::new(),
    };
    AwsProvider::new(&cfg, ctx).unwrap()
}

fn request(rid: &str, node_config: Value) -> CreateRequest {
    CreateRequest {
        request_id: rid.into(),
        node_type: "w".into(),
        instance_ids: vec![format!("{rid}-0")],
        node_config,
        resources: Default::default(),
        labels: Default::default(),
        tags: [(TAG_NODE_KIND.to_string(), NODE_KIND_WORKER.to_string())].into(),
    }
}

fn run_instances(r: &Rig) -> Vec<String> {
    r.proxy.requests().into_iter().filter(|l| l.starts_with("RunInstances")).collect()
}

#[tokio::test]
async fn no_capacity_in_a_subnet_moves_to_the_next_then_spot_falls_back_to_on_demand() {
    let r = rig().await;
    let p = provider(&r.proxy.endpoint);
    let (a, b) = (r.subnets[0].clone(), r.subnets[1].clone());
    r.proxy.set_rules(json!([{"action": "RunInstances", "match": {"SubnetId": a}, "code": "InsufficientInstanceCapacity", "status": 500}]));
    let nc = json!({"InstanceType": "m5.large", "ImageId": r.ami, "SubnetIds": [a, b]});
    let made = p.create(&request("r1", nc)).await.expect("lands in the second subnet");
    assert_eq!(p.list().await.unwrap()[0].cloud_id, made[0].cloud_id);
    let tries = run_instances(&r);
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert!(tries[0].contains(&format!("SubnetId={a}")) && tries[0].ends_with("InsufficientInstanceCapacity"));
    assert!(tries[1].contains(&format!("SubnetId={b}")) && tries[1].ends_with("forwarded"));

    // Spot with no spot capacity anywhere: on-demand, tagged as such.
    r.proxy.set_rules(json!([{"action": "RunInstances", "match": {"InstanceMarketOptions.MarketType": "spot"}, "code": "InsufficientInstanceCapacity", "status": 500}]));
    let nc = json!({"InstanceType": "m5.large", "ImageId": r.ami, "SubnetIds": [a, b], "InstanceMarketOptions": {"MarketType": "spot"}});
    let made = p.create(&request("r2", nc)).await.expect("falls back to on-demand");
    assert_eq!(made[0].tags.get("ray-market").map(String::as_str), Some("on-demand"));
    let tries = run_instances(&r);
    assert_eq!(tries.len(), 2 + 3, "two spot tries, then on-demand in the first subnet: {tries:?}");
    assert!(!tries[4].contains("MarketType"), "{}", tries[4]);

    // No capacity anywhere: a capacity error naming the places tried.
    r.proxy.set_rules(json!([{"action": "RunInstances", "code": "InsufficientInstanceCapacity", "status": 500}]));
    let nc = json!({"InstanceType": "m5.large", "ImageId": r.ami, "SubnetIds": [a, b]});
    let e = p.create(&request("r3", nc)).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Capacity);
    assert!(e.message.contains(&a) && e.message.contains(&b) && e.message.contains("m5.large"), "{e}");
}

#[tokio::test]
async fn quota_and_auth_errors_are_classified_and_not_retried() {
    let r = rig().await;
    let p = provider(&r.proxy.endpoint);
    let nc = json!({"InstanceType": "m5.large", "ImageId": r.ami});
    r.proxy.set_rules(json!([{"action": "RunInstances", "code": "VcpuLimitExceeded", "message": "You have requested more vCPU capacity than your current vCPU limit"}]));
    let e = p.create(&request("q", nc.clone())).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Quota);
    assert!(e.message.contains("VcpuLimitExceeded"), "{e}");
    assert_eq!(run_instances(&r).len(), 1, "a quota is not retried");

    r.proxy.set_rules(json!([{"action": "DescribeInstances", "code": "AuthFailure", "message": "AWS was not able to validate the provided access credentials", "status": 401}]));
    let e = p.list().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(e.message.contains("AuthFailure") && e.message.contains("AWS_ACCESS_KEY_ID"), "names where the credentials came from: {e}");
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_until_it_passes() {
    let r = rig().await;
    let p = provider(&r.proxy.endpoint);
    r.proxy.set_rules(json!([{"action": "RunInstances", "code": "RequestLimitExceeded", "message": "Request limit exceeded.", "status": 503, "times": 3}]));
    let started = std::time::Instant::now();
    let made = p.create(&request("t", json!({"InstanceType": "m5.large", "ImageId": r.ami}))).await.expect("succeeds after the throttling");
    assert_eq!(made.len(), 1);
    let tries = run_instances(&r);
    assert_eq!(tries.len(), 4, "{tries:?}");
    assert!(tries[..3].iter().all(|t| t.ends_with("RequestLimitExceeded")) && tries[3].ends_with("forwarded"));
    assert!(started.elapsed() >= std::time::Duration::from_millis(100), "it waited between tries");

    // Always throttled: gives up after its tries with a throttling error.
    r.proxy.set_rules(json!([{"action": "RunInstances", "code": "RequestLimitExceeded", "status": 503}]));
    let e = p.create(&request("t2", json!({"InstanceType": "m5.large", "ImageId": r.ami}))).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Throttled);
    assert_eq!(run_instances(&r).len(), 4 + ray_provider_aws::api::MAX_ATTEMPTS as usize);
}
