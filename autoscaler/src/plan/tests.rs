use super::*;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn the_aws_example_gets_priced_launches_and_a_bound() {
    let config = ClusterConfig::load(&repo("configs/aws/example-full.yaml")).unwrap();
    let demand = demand::parse("d.yaml", "bundles:\n  - resources: {CPU: 2}\n    count: 4\n").unwrap();
    let p = plan(&config, &demand);
    assert!(p.unpriced_types.is_empty(), "AWS types get prices from their instance types: {p:?}");
    assert!(!p.launch.is_empty(), "{p:?}");
    let bound = p.lower_bound_per_hour.expect("a bound");
    assert!(bound > 0.0 && p.cost_per_hour >= bound - 1e-9, "{p:?}");
    // The cost is what the launched types cost.
    let priced: f64 = p.launch.iter().map(|(t, n)| config.node_type(t).unwrap().price.unwrap() * f64::from(*n)).sum();
    assert!((priced - p.cost_per_hour).abs() < 1e-6, "{priced} vs {p:?}");
    let text = render(&p, &config);
    assert!(text.contains("no plan that places these bundles can cost less than $"), "{text}");
    // JSON has the fields tools read.
    let json = serde_json::to_value(&p).unwrap();
    for key in ["launch", "unplaced", "cost_per_hour", "lower_bound_per_hour", "decision_ms"] {
        assert!(json.get(key).is_some(), "{key} missing: {json}");
    }
}

#[test]
fn the_local_config_reports_unplaced_bundles_and_why() {
    let config = ClusterConfig::load(&repo("configs/local.yaml")).unwrap();
    let gpu_max = config.node_types.iter().find(|t| t.resources.get("GPU").is_positive()).map(|t| t.max_workers).unwrap();
    let text = format!(
        "bundles:\n  - resources: {{CPU: 1}}\n    count: 4\n  - resources: {{CPU: 64}}\n  - resources: {{GPU: 1}}\n    count: {}\n",
        gpu_max + 3
    );
    let p = plan(&config, &demand::parse("d.yaml", &text).unwrap());
    let why = |cpu: f64, gpu: f64| {
        p.unplaced.iter().find(|u| u.resources.get("CPU").copied().unwrap_or(0.0) == cpu && u.resources.get("GPU").copied().unwrap_or(0.0) == gpu)
    };
    assert_eq!(why(64.0, 0.0).map(|u| u.why), Some("infeasible"), "{p:?}");
    assert_eq!(why(0.0, 1.0).map(|u| (u.why, u.count)), Some(("capped", 3)), "{p:?}");
    assert_eq!(p.lower_bound_per_hour, None, "capped plans have no bound");
    assert!(!p.unpriced_types.is_empty(), "configs/local.yaml sets no prices");
    let text = render(&p, &config);
    assert!(text.contains("{'CPU': 64.0}: 1 - infeasible"), "{text}");
    assert!(text.contains("capped: max_workers is reached"), "{text}");
    assert!(text.contains("cost units/h"), "{text}");
}

#[test]
fn a_running_clusters_demand_becomes_a_demand_file() {
    use ray_proto::rpc::autoscaler::*;
    let req = |pairs: &[(&str, f64)], count| ResourceRequestByCount {
        request: Some(ResourceRequest { resources_bundle: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect() }),
        count,
    };
    let state = ClusterResourceState {
        pending_resource_requests: vec![req(&[("CPU", 1.0)], 7), req(&[], 3)],
        pending_gang_resource_requests: vec![GangResourceRequest {
            requests: vec![ResourceRequest { resources_bundle: [("CPU".to_string(), 2.0)].into() }; 2],
            strategy: "STRICT_SPREAD".into(),
            details: String::new(),
        }],
        ..Default::default()
    };
    let d = demand_from_state(&state);
    assert_eq!(d.bundles.len(), 1, "empty shapes are dropped");
    assert_eq!(d.bundles[0].count, 7);
    assert_eq!(d.placement_groups[0].strategy, crate::scheduler::PlacementStrategy::StrictSpread);
    assert_eq!(d.bundle_count(), 9);
}
