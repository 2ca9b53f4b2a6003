//! `ray start` and `ray stop` take every flag of Ray 2.60's, as Ray's users and
//! Ray's own cluster templates type them: honoured where this build can, mapped
//! where Ray maps them, and otherwise named once on stderr as having no effect.

use std::time::Duration;

use ray_tests::*;

/// A fake_multinode cluster config whose head type takes no work.
const CONFIG: &str = "cluster_name: flags\nmax_workers: 2\nidle_timeout_minutes: 5\nprovider:\n  type: fake_multinode\n\
                      available_node_types:\n  ray.head.default:\n    resources: {CPU: 0}\n    node_config: {}\n    max_workers: 0\n\
                      \x20 ray.worker.small:\n    resources: {CPU: 1}\n    node_config: {}\n    min_workers: 0\n    max_workers: 2\n\
                      head_node_type: ray.head.default\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `ray ARGS`, asserting success; returns (stdout, stderr).
fn run_ok(env: &RayEnv, args: &[&str]) -> (String, String) {
    let out = env.ray(args);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "`ray {}` failed ({}):\nstdout:\n{o}\nstderr:\n{e}", args.join(" "), out.status);
    (o, e)
}

/// The stderr lines that say a flag has no effect.
fn no_effect_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("no effect")).collect()
}

fn alive_nodes(env: &RayEnv) -> Vec<ray_proto::rpc::NodeInfo> {
    env.node_table().into_iter().filter(|n| n.state != ray_proto::rpc::NodeState::Dead as i32).collect()
}

fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

#[test]
fn the_aws_templates_start_lines_start_a_head_and_a_worker() {
    let env = RayEnv::new();
    // Ray copies the cluster config to ~/ray_bootstrap_config.yaml and passes the `~` unexpanded.
    std::fs::write(env.home().join("ray_bootstrap_config.yaml"), CONFIG).unwrap();
    // head_start_ray_commands of Ray's AWS example, with a free port instead of 6379 so tests can run side by side.
    let port = free_port().to_string();
    let port_flag = format!("--port={port}");
    let (stdout, stderr) = run_ok(
        &env,
        &[
            "start",
            "--head",
            &port_flag,
            "--object-manager-port=8076",
            "--autoscaling-config=~/ray_bootstrap_config.yaml",
            "--dashboard-host=0.0.0.0",
        ],
    );
    assert!(stdout.contains("Ray runtime started."), "{stdout}");
    let lines = no_effect_lines(&stderr);
    assert_eq!(lines.len(), 1, "one line names every ignored flag:\n{stderr}");
    assert!(lines[0].starts_with("ray start: ") && lines[0].contains("--object-manager-port"), "{stderr}");
    assert!(!lines[0].contains("--dashboard-host"), "the dashboard listens where it is told: {stderr}");
    let addr = env.gcs_address();
    assert!(addr.ends_with(&format!(":{port}")), "{addr}");
    let names: Vec<String> = env.live_processes().into_iter().map(|p| p.name).collect();
    assert!(names.contains(&"monitor".to_string()), "the autoscaler runs: {names:?}");
    assert!(env.root().join("session_latest/autoscaling_config.yaml").exists());

    // worker_start_ray_commands: `ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076`.
    let address_flag = format!("--address={addr}");
    let (_, stderr) = run_ok(&env, &["start", &address_flag, "--object-manager-port=8076"]);
    let lines = no_effect_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("--object-manager-port"), "{stderr}");
    assert!(wait_until(Duration::from_secs(10), || alive_nodes(&env).len() == 2), "{:?}", env.node_table());
    let head = alive_nodes(&env).into_iter().find(|n| n.node_type_name == "ray.head.default");
    assert!(head.is_some(), "the head is typed from the config: {:?}", env.node_table());
}

#[test]
fn dashboard_and_friends_start_and_are_named_in_one_line() {
    let env = RayEnv::new();
    let labels = env.write_file("labels.yaml", "gpu_type: A100\ntier: silver\n");
    let labels_file = format!("--labels-file={}", labels.display());
    let (stdout, stderr) = run_ok(
        &env,
        &[
            "start",
            "--head",
            "--port",
            "0",
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--dashboard-port",
            "8265",
            "--metrics-export-port=0",
            "--include-log-monitor",
            "False",
            "--ray-client-server-port",
            "0",
            "--min-worker-port=10002",
            "--max-worker-port=19999",
            "--worker-port-list=10002,10003",
            "--log-style=record",
            "--log-color",
            "auto",
            "--disable-usage-stats",
            "-v",
            r#"--system-config={"health_check_period_ms": 250, "object_spilling_config": "{}", "lineage_pinning_enabled": true}"#,
            &labels_file,
            "--labels=tier=gold",
        ],
    );
    let lines = no_effect_lines(&stderr);
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    let line = lines[0];
    for flag in [
        "--include-log-monitor",
        "--min-worker-port",
        "--max-worker-port",
        "--worker-port-list",
        "\"lineage_pinning_enabled\"",
    ] {
        assert!(line.contains(flag), "{flag} missing from: {line}");
    }
    for honoured in ["--metrics-export-port", "--include-dashboard", "--dashboard-port", "--log-style", "--log-color", "--disable-usage-stats", "--labels", "health_check_period_ms", "object_spilling_config", "--num-cpus", "--ray-client-server-port"] {
        assert!(!line.contains(honoured), "{honoured} is honoured, not ignored: {line}");
    }
    // -v names each started process.
    assert!(stdout.contains("Started gcs_supervisor (pid") && stdout.contains("Started raylet (pid"), "{stdout}");
    // --system-config reaches the daemons as RAY_<name>, over the environment's own value (200).
    let raylet = env.live_processes().into_iter().find(|p| p.name == "raylet").expect("raylet");
    let vars = environ(raylet.pid);
    assert!(vars.contains(&"RAY_health_check_period_ms=250".to_string()), "{vars:?}");
    // --labels wins over --labels-file; both reach the node.
    let node = alive_nodes(&env).pop().expect("a node");
    assert_eq!(node.labels.get("gpu_type").map(String::as_str), Some("A100"), "{:?}", node.labels);
    assert_eq!(node.labels.get("tier").map(String::as_str), Some("gold"), "{:?}", node.labels);
}

#[test]
fn bad_values_of_new_flags_are_refused_naming_the_flag() {
    let env = RayEnv::new();
    let head: &[&str] = &["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1"];
    let worker: &[&str] = &["start", "--address", "127.0.0.1:1", "--node-ip-address", "127.0.0.1"];
    let cases: &[(&[&str], &[&str], &str)] = &[
        (head, &["--include-dashboard=maybe"], "--include-dashboard"),
        (head, &["--include-dashboard"], "--include-dashboard"),
        (head, &["--block=sometimes"], "--block"),
        (head, &["--object-manager-port=70000"], "--object-manager-port"),
        (head, &["--dashboard-port", "http"], "--dashboard-port"),
        (head, &["--node-ip-address", "not an address"], "--node-ip-address"),
        (head, &["--system-config=[1]"], "--system-config"),
        (head, &[r#"--system-config={"health_check_period_ms": "soon"}"#], "--system-config"),
        (head, &["--min-worker-port=80"], "--min-worker-port"),
        (head, &["--max-worker-port=20000"], "--max-worker-port"),
        (head, &["--worker-port-list=10002,x"], "--worker-port-list"),
        (head, &["--log-style=fancy"], "--log-style"),
        (head, &["--system-reserved-cpu=1"], "--system-reserved-cpu"),
        (head, &["--labels-file=/nonexistent/labels.yaml"], "--labels-file"),
        (head, &["--redis-port=7000", "--port=7001"], "--redis-port"),
        (worker, &["--include-dashboard=true"], "--include-dashboard"),
        (worker, &["--redis-port=7000"], "--redis-port"),
    ];
    for (base, flags, name) in cases {
        let args = [*base, *flags].concat();
        let out = env.ray(&args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(err.contains(name), "{flags:?}: error must name {name}: {err}");
        assert!(env.live_processes().is_empty(), "{flags:?} left processes behind");
    }
}

#[test]
fn older_names_ray_address_and_no_monitor_are_honoured() {
    let mut env = RayEnv::new();
    let config = env.write_file("cluster.yaml", CONFIG);
    let port = free_port().to_string();
    let (_, stderr) = run_ok(
        &env,
        &[
            "start",
            "--head",
            "--redis-port",
            &port,
            "--node-ip-address=127.0.0.1",
            "--num-cpus=0",
            "--autoscaling-config",
            config.to_str().unwrap(),
            "--no-monitor",
        ],
    );
    assert!(no_effect_lines(&stderr).is_empty(), "--redis-port and --no-monitor are honoured: {stderr}");
    let addr = env.gcs_address();
    assert_eq!(addr, format!("127.0.0.1:{port}"), "--redis-port is the GCS port, as --port");
    let names: Vec<String> = env.live_processes().into_iter().map(|p| p.name).collect();
    assert!(!names.contains(&"monitor".to_string()), "--no-monitor starts no autoscaler: {names:?}");
    assert_eq!(alive_nodes(&env)[0].node_type_name, "ray.head.default", "the config still types the head");

    // Without --head and --address, RAY_ADDRESS says which cluster to join.
    env.set("RAY_ADDRESS", &addr);
    run_ok(&env, &["start", "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]);
    assert!(wait_until(Duration::from_secs(10), || alive_nodes(&env).len() == 2), "{:?}", env.node_table());
}

#[test]
fn ray_stop_takes_rays_flags() {
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "1"]);
    let n = env.live_processes().len();
    let (stdout, stderr) = run_ok(&env, &["stop", "-v", "--grace-period=5", "--log-style=record", "--log-color", "false"]);
    assert!(stdout.contains(&format!("Stopped all {n} Ray processes.")), "{stdout}");
    assert!(stdout.contains("Sent a termination request to raylet (pid"), "-v names each process: {stdout}");
    assert!(no_effect_lines(&stderr).is_empty(), "{stderr}");
    assert!(env.live_processes().is_empty());

    env.start_head(&["--num-cpus", "1"]);
    let n = env.live_processes().len();
    let (stdout, stderr) = run_ok(&env, &["stop", "-f", "-g", "1", "--log-style", "PRETTY"]);
    assert!(stdout.contains(&format!("Stopped all {n} Ray processes.")), "{stdout}");
    let lines = no_effect_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("ray stop: --log-style=pretty"), "{stderr}");
    assert!(env.live_processes().is_empty());

    let (stdout, _) = run_ok(&env, &["stop", "--force=yes", "-vv"]);
    assert!(stdout.contains("Did not find any active Ray processes."), "{stdout}");
    let out = env.ray(&["stop", "-g", "soon"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--grace-period"), "{}", text(&out.stderr));
}
