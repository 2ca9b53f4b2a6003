use super::*;

const GOOD: &str = r#"
cluster_name: demo
max_workers: 6
upscaling_speed: 2
idle_timeout_minutes: 0.05
provider:
  type: fake_multinode
  some_provider_key: anything
available_node_types:
  ray.head.default:
    resources: {CPU: 0}
    node_config: {}
  ray.worker.cpu:
    resources: {CPU: 2}
    node_config: {InstanceType: m5.large}
    min_workers: 1
  ray.worker.gpu:
    resources: {CPU: 4, GPU: 1}
    node_config: {}
    max_workers: 2
    labels: {accel: "yes"}
head_node_type: ray.head.default
setup_commands: [echo common]
worker_setup_commands: [echo worker]
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    ClusterConfig::parse("c.yaml", text).expect_err("must be rejected").0
}

fn one_error(text: &str) -> ConfigError {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn good_config_gets_rays_defaults() {
    let c = ClusterConfig::parse("c.yaml", GOOD).unwrap();
    assert_eq!(c.cluster_name, "demo");
    assert_eq!(c.upscaling_speed, 2.0);
    assert_eq!(c.idle_timeout_ms("ray.worker.cpu"), 3000);
    assert_eq!(c.provider["some_provider_key"], "anything");
    let head = c.node_type("ray.head.default").unwrap();
    assert_eq!((head.min_workers, head.max_workers), (0, 0), "the head type's max defaults to 0");
    let cpu = c.node_type("ray.worker.cpu").unwrap();
    assert_eq!((cpu.min_workers, cpu.max_workers), (1, 6), "a worker type's max defaults to the global max");
    assert_eq!(cpu.node_config["InstanceType"], "m5.large");
    let gpu = c.node_type("ray.worker.gpu").unwrap();
    assert_eq!(gpu.max_workers, 2);
    assert_eq!(gpu.labels["accel"], "yes");
    assert_eq!(c.worker_setup_commands, vec!["echo common", "echo worker"]);
    assert_eq!(c.head_setup_commands, vec!["echo common"]);
    assert_eq!(c.node_types.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["ray.head.default", "ray.worker.cpu", "ray.worker.gpu"]);
}

#[test]
fn minimal_config_takes_the_providers_defaults() {
    let c = ClusterConfig::parse("c.yaml", "provider: {type: fake_multinode}\n").unwrap();
    assert_eq!(c.cluster_name, "default");
    assert_eq!(c.head_node_type, "ray.head.default");
    assert_eq!(c.idle_timeout_minutes, 5.0);
    assert_eq!(c.upscaling_speed, 1.0);
    assert!(c.node_type("ray.worker.cpu").is_some());
}

#[test]
fn unknown_keys_get_a_did_you_mean_with_line_and_path() {
    let e = one_error("provider: {type: fake_multinode}\nmax_worker: 3\n");
    assert_eq!((e.line, e.path.as_str()), (2, "max_worker"));
    assert!(e.message.contains("did you mean \"max_workers\""), "{e}");
    let text = GOOD.replace("    min_workers: 1", "    min_worker: 1");
    let e = one_error(&text);
    assert_eq!(e.path, "available_node_types[\"ray.worker.cpu\"].min_worker");
    assert!(e.message.contains("did you mean \"min_workers\""), "{e}");
    assert_eq!(e.line, 16);
}

#[test]
fn wrong_types_name_what_was_expected() {
    let e = one_error(&GOOD.replace("max_workers: 6", "max_workers: many"));
    assert_eq!((e.path.as_str(), e.line), ("max_workers", 3));
    assert!(e.message.contains("expected a whole number >= 0") && e.message.contains("\"many\""), "{e}");
    let e = one_error(&GOOD.replace("upscaling_speed: 2", "upscaling_speed: [1]"));
    assert!(e.message.contains("expected a number") && e.message.contains("a list"), "{e}");
    let e = one_error(&GOOD.replace("resources: {CPU: 2}", "resources: {CPU: 1.5}"));
    assert_eq!(e.path, "available_node_types[\"ray.worker.cpu\"].resources.CPU");
    assert!(e.message.contains("whole number"), "{e}");
    let e = one_error(&GOOD.replace("labels: {accel: \"yes\"}", "labels: {accel: 1}"));
    assert!(e.message.contains("expected a string"), "{e}");
}

#[test]
fn negative_resources_and_counts_are_refused() {
    let e = one_error(&GOOD.replace("resources: {CPU: 4, GPU: 1}", "resources: {CPU: 4, GPU: -1}"));
    assert_eq!(e.path, "available_node_types[\"ray.worker.gpu\"].resources.GPU");
    assert!(e.message.contains(">= 0") && e.message.contains("-1"), "{e}");
    let e = one_error(&GOOD.replace("idle_timeout_minutes: 0.05", "idle_timeout_minutes: -1"));
    assert_eq!(e.path, "idle_timeout_minutes");
}

#[test]
fn min_above_max_is_refused_at_the_min_workers_line() {
    let e = one_error(&GOOD.replace("    max_workers: 2\n", "    max_workers: 2\n    min_workers: 3\n"));
    assert_eq!(e.path, "available_node_types[\"ray.worker.gpu\"].min_workers");
    assert!(e.message.contains("min_workers (3) is larger than max_workers (2)"), "{e}");
    assert_eq!(e.line, 21);
}

#[test]
fn sum_of_min_workers_above_global_max_is_refused() {
    let text = GOOD
        .replace("max_workers: 6", "max_workers: 1")
        .replace("    min_workers: 1\n", "    min_workers: 1\n    max_workers: 2\n")
        .replace("    max_workers: 2\n    labels", "    max_workers: 2\n    min_workers: 1\n    labels");
    let e = one_error(&text);
    assert_eq!((e.path.as_str(), e.line), ("max_workers", 3));
    assert!(e.message.contains("smaller than the sum of min_workers"), "{e}");
}

#[test]
fn head_node_type_must_be_a_node_type() {
    let e = one_error(&GOOD.replace("head_node_type: ray.head.default", "head_node_type: ray.head.defualt"));
    assert_eq!(e.path, "head_node_type");
    assert!(e.message.contains("did you mean \"ray.head.default\""), "{e}");
    let e = one_error(&GOOD.replace("head_node_type: ray.head.default\n", ""));
    assert!(e.message.contains("missing"), "{e}");
}

#[test]
fn missing_required_parts_are_named() {
    let e = one_error("cluster_name: x\n");
    assert_eq!(e.path, "provider");
    assert!(e.message.contains("missing"));
    let e = one_error("provider: {}\n");
    assert_eq!(e.path, "provider.type");
    let e = one_error(&GOOD.replace("    node_config: {InstanceType: m5.large}\n", ""));
    assert_eq!(e.path, "available_node_types[\"ray.worker.cpu\"].node_config");
}

#[test]
fn yaml_syntax_errors_and_duplicates_have_positions() {
    let e = one_error("provider: {type: fake_multinode\n");
    assert!(e.message.contains("not valid YAML"), "{e}");
    assert!(e.line > 0);
    // A duplicate key is what Ray's loader (PyYAML) accepts: the later value wins,
    // and we say so with its position.
    let loaded = ClusterConfig::parse_with_warnings("c.yaml", "provider: {type: fake_multinode}\nmax_workers: 1\nmax_workers: 2\n").unwrap();
    assert_eq!(loaded.config.max_workers, 2);
    let w = loaded.warnings.iter().find(|w| w.message.contains("duplicate key")).expect("a warning");
    assert_eq!(w.line, 3);
}

#[test]
fn every_fault_is_reported_at_once() {
    let text = "provider: {type: fake_multinode}\nmax_workers: -1\nupscaling_speed: fast\nbogus: 1\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    let shown = ConfigErrors(errs).to_string();
    assert!(shown.starts_with("invalid cluster config (3 problems):"), "{shown}");
    assert!(shown.contains("c.yaml:2:"), "{shown}");
}

#[test]
fn price_is_an_optional_non_negative_number_per_type() {
    let c = ClusterConfig::parse("c.yaml", GOOD).unwrap();
    assert_eq!(c.node_type("ray.worker.cpu").unwrap().price, None, "no price: cost follows capacity");
    let text = GOOD.replace("    min_workers: 1\n", "    min_workers: 1\n    price: 0.096\n");
    let c = ClusterConfig::parse("c.yaml", &text).unwrap();
    assert_eq!(c.node_type("ray.worker.cpu").unwrap().price, Some(0.096));
    let c = ClusterConfig::parse("c.yaml", &text.replace("price: 0.096", "price: 0")).unwrap();
    assert_eq!(c.node_type("ray.worker.cpu").unwrap().price, Some(0.0), "free is allowed");

    let e = one_error(&text.replace("price: 0.096", "price: -0.5"));
    assert_eq!((e.path.as_str(), e.line), ("available_node_types[\"ray.worker.cpu\"].price", 17));
    assert!(e.message.contains("expected a number >= 0") && e.message.contains("-0.5"), "{e}");
    assert!(e.to_string().starts_with("c.yaml:17:"), "{e}");
    let e = one_error(&text.replace("price: 0.096", "price: cheap"));
    assert!(e.message.contains("expected a number >= 0") && e.message.contains("\"cheap\""), "{e}");
    let e = one_error(&text.replace("price: 0.096", "price: .inf"));
    assert_eq!(e.line, 17, "{e}");
    let e = one_error(&text.replace("price: 0.096", "prize: 0.096"));
    assert!(e.message.contains("did you mean \"price\""), "{e}");
}

#[test]
fn aws_types_without_resources_take_them_and_a_price_from_the_instance_type() {
    let text = r#"
cluster_name: a
max_workers: 4
provider: {type: aws, region: us-west-2}
available_node_types:
  head: {node_config: {InstanceType: m5.large}}
  gpu:
    node_config: {InstanceType: g4dn.xlarge, InstanceMarketOptions: {MarketType: spot}}
    resources: {custom: 2, CPU: 2}
  mine:
    node_config: {InstanceType: c5.large}
    resources: {CPU: 1}
    price: 0.01
head_node_type: head
"#;
    let c = ClusterConfig::parse("aws.yaml", text).unwrap();
    let head = c.node_type("head").unwrap();
    assert_eq!(head.declared_resources.get("CPU"), Some(&2.0));
    assert!(!head.declared_resources.contains_key("memory"), "the head gets no memory resource");
    let m5 = instance_types::aws("m5.large").unwrap().on_demand_usd;
    assert_eq!(head.price, Some(m5));
    let gpu = c.node_type("gpu").unwrap();
    assert_eq!(gpu.declared_resources.get("CPU"), Some(&2.0), "what the file says wins");
    assert_eq!(gpu.declared_resources.get("GPU"), Some(&1.0));
    assert_eq!(gpu.declared_resources.get("custom"), Some(&2.0));
    assert_eq!(gpu.declared_resources.get("accelerator_type:T4"), Some(&1.0));
    assert!(gpu.declared_resources.get("memory").is_some_and(|m| *m > 10e9));
    let od = instance_types::aws("g4dn.xlarge").unwrap().on_demand_usd;
    assert!((gpu.price.unwrap() - od * instance_types::SPOT_PRICE_FACTOR).abs() < 1e-9, "spot types cost the spot estimate");
    assert_eq!(c.node_type("mine").unwrap().price, Some(0.01), "a price in the file wins");

    let l = ClusterConfig::parse_with_warnings("aws.yaml", &text.replace("InstanceType: m5.large", "InstanceType: x9.mega")).unwrap();
    let w = l.warnings.iter().find(|w| w.path == "available_node_types.head.resources").expect("a warning");
    assert!(w.message.contains("x9.mega") && w.message.contains("set `resources`"), "{w:?}");
    assert!(l.config.node_type("head").unwrap().resources.is_empty());
}

#[test]
fn gcp_node_types_get_a_price_from_the_machine_type_but_keep_their_resources() {
    let text = r#"
provider: {type: gcp, region: us-west1, availability_zone: us-west1-a, project_id: p}
available_node_types:
  head: {resources: {CPU: 2}, node_config: {machineType: n1-standard-2}}
  spot:
    resources: {CPU: 4}
    node_config: {machineType: n1-standard-4, scheduling: [{provisioningModel: SPOT}]}
  gpu:
    resources: {CPU: 4, GPU: 2}
    node_config: {machineType: n1-standard-4, guestAccelerators: [{acceleratorType: nvidia-tesla-t4, acceleratorCount: 2}]}
  odd: {resources: {CPU: 1}, node_config: {machineType: x9-imaginary-8}}
head_node_type: head
"#;
    let c = ClusterConfig::parse("gcp.yaml", text).unwrap();
    let n1_2 = instance_types::gcp("n1-standard-2").unwrap().on_demand_usd;
    let n1_4 = instance_types::gcp("n1-standard-4").unwrap().on_demand_usd;
    assert_eq!(c.node_type("head").unwrap().price, Some(n1_2));
    assert_eq!(c.node_type("head").unwrap().declared_resources.get("CPU"), Some(&2.0));
    assert!(!c.node_type("head").unwrap().declared_resources.contains_key("memory"), "resources are the file's, as in Ray");
    assert!((c.node_type("spot").unwrap().price.unwrap() - n1_4 * instance_types::GCP_SPOT_PRICE_FACTOR).abs() < 1e-9);
    assert!((c.node_type("gpu").unwrap().price.unwrap() - (n1_4 + 2.0 * 0.35)).abs() < 1e-9, "attached GPUs are priced");
    assert_eq!(c.node_type("odd").unwrap().price, None, "an unknown machine type has no price");
}
