//! Ray 2.60's `prepare_config` + `validate_config`, case by case (each checked
//! against Ray itself): provider defaults, legacy fields, `local`, `kuberay`, and
//! the schema's types.

use super::*;

fn load(text: &str) -> Loaded {
    ClusterConfig::parse_with_warnings("c.yaml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn refused(text: &str) -> String {
    ClusterConfig::parse("c.yaml", text).expect_err("must be refused").to_string()
}

fn types(c: &ClusterConfig) -> Vec<(&str, u32, u32)> {
    c.node_types.iter().map(|t| (t.name.as_str(), t.min_workers, t.max_workers)).collect()
}

fn warned(l: &Loaded, what: &str) -> bool {
    l.warnings.iter().any(|w| w.to_string().contains(what))
}

#[test]
fn a_provider_alone_gets_its_default_node_types() {
    let l = load("provider: {type: aws, region: us-east-1}\n");
    let c = &l.config;
    assert_eq!((c.cluster_name.as_str(), c.max_workers, c.head_node_type.as_str()), ("default", 2, "ray.head.default"));
    assert_eq!(types(c), [("ray.head.default", 0, 0), ("ray.worker.default", 0, 2)]);
    assert_eq!(c.node_type("ray.worker.default").unwrap().node_config["InstanceMarketOptions"]["MarketType"], "spot");
    assert_eq!(c.auth.ssh_user.as_deref(), Some("ubuntu"));
    assert_eq!(c.provider["region"], "us-east-1", "the file's provider is kept whole");
    assert_eq!(c.head_start_ray_commands[0], "ray stop");
    assert_eq!(c.docker, None, "the default `docker: {{}}` means no docker");
    assert!(l.warnings.is_empty());
    let c = load("provider: {type: gcp}\nmax_workers: 0\n").config;
    assert_eq!(types(&c), [("ray_head_default", 0, 0), ("ray_worker_small", 0, 0)]);
    let c = load("provider: {type: spark}\n").config;
    assert_eq!((c.cluster_name.as_str(), c.idle_timeout_minutes), ("spark", 1.0));
}

#[test]
fn each_top_level_key_the_file_sets_replaces_the_default_whole() {
    let c = load("provider: {type: aws}\nsetup_commands: [a]\nhead_setup_commands: [b]\nauth: {ssh_user: me}\n").config;
    assert_eq!(c.head_setup_commands, ["a", "b"]);
    assert_eq!(c.worker_setup_commands, ["a"]);
    assert_eq!(c.auth, AuthConfig { ssh_user: Some("me".into()), ..AuthConfig::default() });
    // head_node_type alone: the default types, another head.
    let c = load("provider: {type: aws}\nhead_node_type: ray.worker.default\n").config;
    assert_eq!(types(&c), [("ray.head.default", 0, 2), ("ray.worker.default", 0, 0)]);
}

#[test]
fn the_default_head_type_counts_when_the_files_types_have_it() {
    let text = "provider: {type: aws}\navailable_node_types:\n  ray.head.default: {node_config: {}, resources: {}}\n  w: {node_config: {}, resources: {}}\n";
    let c = load(text).config;
    assert_eq!(
        (c.head_node_type.as_str(), types(&c)),
        ("ray.head.default", vec![("ray.head.default", 0, 0), ("w", 0, 2)])
    );
    let e = refused(&text.replace("ray.head.default:", "head:"));
    assert!(
        e.contains(
            "head_node_type: missing; the aws default \"ray.head.default\" is not one of available_node_types (head, w)"
        ),
        "{e}"
    );
}

#[test]
fn empty_legacy_fields_are_dropped_or_converted_as_ray_does() {
    // With node types: dropped.
    let l = load(
        "provider: {type: azure}\nhead_node: {}\nworker_nodes: {}\navailable_node_types:\n  ray.head.default: {node_config: {}, resources: {}}\n",
    );
    assert!(
        warned(&l, "c.yaml:2:1: head_node: warning: dropped") && warned(&l, "worker_nodes: warning: dropped"),
        "{:?}",
        l.warnings
    );
    assert_eq!(types(&l.config), [("ray.head.default", 0, 0)]);
    // Without: the provider's default types under Ray's legacy names.
    let l = load("provider: {type: aws}\nmax_workers: 3\nhead_node: {}\nworker_nodes: {}\n");
    assert_eq!(l.config.head_node_type, LEGACY_HEAD_TYPE);
    assert_eq!(types(&l.config), [(LEGACY_HEAD_TYPE, 0, 0), (LEGACY_WORKER_TYPE, 0, 3)]);
    assert!(warned(&l, "legacy config"));
    // Not empty, or alone: refused (Ray refuses them too).
    let e = refused("provider: {type: aws}\nhead_node: {InstanceType: m5.large}\nworker_nodes: {}\n");
    assert!(e.contains("c.yaml:2:1: head_node: a legacy field Ray 2.x no longer reads"), "{e}");
    assert!(refused("provider: {type: aws}\nworker_nodes: {}\n").contains("needs head_node too"));
    assert!(
        refused("provider: {type: readonly}\nhead_node: {}\nworker_nodes: {}\n").contains("one head and one worker")
    );
}

#[test]
fn a_top_level_min_workers_is_ignored_with_a_warning() {
    let l = load("provider: {type: aws}\nmin_workers: 5\n");
    assert_eq!(types(&l.config), [("ray.head.default", 0, 0), ("ray.worker.default", 0, 2)]);
    assert!(warned(&l, "min_workers: warning: ignored"), "{:?}", l.warnings);
}

#[test]
fn local_clusters_get_one_node_type_sized_by_their_hosts() {
    let l = load(
        "provider: {type: local, head_ip: h, worker_ips: [a, b, c]}\navailable_node_types: {}\nhead_node_type: {}\n",
    );
    let c = &l.config;
    assert_eq!((c.head_node_type.as_str(), c.max_workers), (LOCAL_NODE_TYPE, 3));
    assert_eq!(types(c), [(LOCAL_NODE_TYPE, 3, 3)]);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(c.head_start_ray_commands.len(), 2, "the common start commands");

    let l = load("provider: {type: local, head_ip: h, worker_ips: [a, b]}\nmin_workers: 4\nmax_workers: 5\n");
    assert_eq!((types(&l.config), l.config.max_workers), (vec![(LOCAL_NODE_TYPE, 2, 2)], 2));
    assert!(
        warned(&l, "c.yaml:2:14: min_workers: warning: 4 is more than the 2 worker_ips; using 2"),
        "{:?}",
        l.warnings
    );
    assert!(warned(&l, "c.yaml:3:14: max_workers: warning: 5 is more than the 2 worker_ips"));
    let l = load("provider: {type: local, head_ip: h, worker_ips: [a, b]}\nmax_workers: 1\nmin_workers: 0\n");
    assert!(warned(&l, "1 is less than the 2 worker_ips"));
    assert_eq!(types(&l.config), [(LOCAL_NODE_TYPE, 0, 1)]);

    let c = load("provider: {type: local, coordinator_address: \"h:1\"}\nmax_workers: 4\n").config;
    assert_eq!(types(&c), [(LOCAL_NODE_TYPE, 0, 4)]);
    let l = load("provider: {type: local, head_ip: h, worker_ips: [a]}\nhead_node_type: mine\n");
    assert!(warned(&l, "head_node_type: warning: ignored"));
}

#[test]
fn local_configs_ray_refuses_are_refused() {
    let e = refused(
        "provider: {type: local, head_ip: h, worker_ips: [a]}\navailable_node_types:\n  x: {node_config: {}, resources: {}}\n",
    );
    assert!(e.contains("c.yaml:2:1: available_node_types: not supported for on-premise clusters"), "{e}");
    assert!(
        refused("provider: {type: local, head_ip: h}\n").contains("needs provider.head_ip and provider.worker_ips")
    );
    assert!(refused("provider: {type: local, coordinator_address: x}\n").contains("max_workers: missing"));
    let e = refused("provider: {type: local, head_ip: h, worker_ips: [a, b]}\nmax_workers: 1\nmin_workers: 5\n");
    assert!(e.contains("smaller than the sum of min_workers of the node types (2)"), "{e}");
}

#[test]
fn configs_ray_takes_as_they_are_get_no_defaults() {
    let prepared = "cluster_name: c\nmax_workers: 1\nprovider: {type: local, head_ip: h, worker_ips: [a]}\n\
                    available_node_types:\n  local.cluster.node: {node_config: {}, resources: {}, min_workers: 1, max_workers: 1}\n\
                    head_node_type: local.cluster.node\nsetup_commands: [s]\nhead_setup_commands: [s, h]\n";
    let c = load(prepared).config;
    assert_eq!(c.head_setup_commands, ["s", "h"], "not merged again");
    assert!(c.head_start_ray_commands.is_empty(), "no defaults");
    assert!(refused(&prepared.replace("cluster_name: c\n", "")).contains("cluster_name: missing"));
    let kuberay = prepared
        .replace("type: local, head_ip: h, worker_ips: [a]", "type: kuberay")
        .replace("local.cluster.node", "head");
    assert_eq!(load(&kuberay).config.head_setup_commands, ["s", "h"]);
    assert!(refused(&format!("{kuberay}min_workers: 1\n")).contains("min_workers: not allowed in a KubeRay config"));
}

#[test]
fn the_sum_of_min_workers_counts_the_heads_type_as_ray_does() {
    let text = "provider: {type: aws}\nmax_workers: 1\navailable_node_types:\n  ray.head.default: {node_config: {}, resources: {}, min_workers: 1, max_workers: 1}\n  w: {node_config: {}, resources: {}, min_workers: 1}\n";
    assert!(refused(text).contains("c.yaml:2:14: max_workers: the global max_workers (1) is smaller than the sum of min_workers of the node types (2)"));
    assert!(ClusterConfig::parse("c.yaml", &text.replace("max_workers: 1\navail", "max_workers: 2\navail")).is_ok());
}

#[test]
fn values_are_typed_as_rays_schema_types_them() {
    // Whole floats are integers (JSON schema); booleans are not.
    let c = load("provider: {type: aws}\nmax_workers: 3.0\nidle_timeout_minutes: .inf\n").config;
    assert_eq!((c.max_workers, c.idle_timeout_ms("ray.worker.default")), (3, u64::MAX));
    assert!(refused("provider: {type: aws}\nmax_workers: true\n").contains("got a boolean \"true\""));
    assert!(
        refused("provider: {type: aws}\nmax_workers: 3.5\n")
            .contains("expected a whole number >= 0, got a number \"3.5\"")
    );
    // Strings must be strings; quoting makes one.
    assert!(
        refused("provider: {type: aws}\ncluster_name: 123\n")
            .contains("cluster_name: expected a string, got an integer \"123\"")
    );
    assert_eq!(load("provider: {type: aws}\ncluster_name: \"123\"\n").config.cluster_name, "123");
    assert!(refused("provider: {type: aws}\ncluster_name:\n").contains("expected a string, got null"));
    // YAML 1.1 booleans, and the provider keys Ray's schema types.
    let c = load(
        "provider: {type: aws, use_internal_ips: yes, cache_stopped_nodes: Off}\nfile_mounts_sync_continuously: on\n",
    )
    .config;
    assert!(c.file_mounts_sync_continuously);
    assert_eq!(
        (&c.provider["use_internal_ips"], &c.provider["cache_stopped_nodes"]),
        (&serde_json::json!(true), &serde_json::json!(false))
    );
    let e = refused(
        "provider: {type: aws, use_internal_ips: \"yes\", worker_ips: a, security_group: {GroupName: g, Bad: 1}}\n",
    );
    assert!(e.contains("provider.use_internal_ips: expected a boolean (true or false), got a string \"yes\""), "{e}");
    assert!(e.contains("provider.worker_ips: expected a list, got a string \"a\""), "{e}");
    assert!(e.contains("provider.security_group.Bad: unknown key \"Bad\""), "{e}");
    assert!(
        refused("provider: {type: gcp, gcp_credentials: {credentials: x}}\n").contains("gcp_credentials.type: missing")
    );
    // Lists Ray leaves untyped take any scalar.
    assert_eq!(load("provider: {type: aws}\nrsync_exclude: [1, yes]\n").config.rsync_exclude, ["1", "yes"]);
}

#[test]
fn docker_needs_an_image_and_a_container_name_together() {
    let ok = |d: &str| ClusterConfig::parse("c.yaml", &format!("provider: {{type: aws}}\ndocker: {d}\n")).is_ok();
    assert!(ok("{image: i, container_name: c}"));
    assert!(ok("{head_image: i, worker_image: j, container_name: c}"));
    assert!(ok("{image: \"\", container_name: \"\"}"), "both empty: docker off");
    assert!(!ok("{container_name: c}"));
    assert!(!ok("{image: i}"));
    assert!(!ok("{head_image: i, container_name: c}"));
    let e = refused("provider: {type: aws}\ndocker: {image: i, container_name: c, pull_before_run: 1, colour: red}\n");
    assert!(
        e.contains("docker.pull_before_run: expected a boolean") && e.contains("docker.colour: unknown key"),
        "{e}"
    );
}

#[test]
fn unknown_providers_and_odd_values_are_named() {
    let e = refused("provider: {type: gpc}\n");
    assert!(e.contains("c.yaml:1:18: provider.type: unknown provider \"gpc\"; did you mean \"gcp\"?"), "{e}");
    let l = load("provider: {type: aws}\nno_restart: 5\n");
    assert!(!l.config.no_restart && warned(&l, "no_restart: warning: ignored"));
    assert!(refused("- a\n- b\n").contains("the top level must be a mapping"));
    assert!(refused("").contains("the file is empty"));
    assert!(refused("provider: {type: external}\n").contains("max_workers: missing"));
}
