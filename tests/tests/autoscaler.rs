//! The autoscaler end to end: `ray start --head --autoscaling-config` with the
//! embedded fake_multinode provider, real raylet processes, and Ray's Python
//! `request_resources`.

use std::time::{Duration, Instant};

use ray_tests::*;

fn config(extra_provider: &str, types: &str, max_workers: u32, idle_minutes: f64) -> String {
    format!(
        "cluster_name: test\nmax_workers: {max_workers}\nidle_timeout_minutes: {idle_minutes}\nupscaling_speed: 1.0\n\
         provider:\n  type: fake_multinode\n{extra_provider}\
         available_node_types:\n  ray.head.default:\n    resources: {{CPU: 0}}\n    node_config: {{}}\n{types}\
         head_node_type: ray.head.default\n"
    )
}

const SMALL: &str = "  small:\n    resources: {CPU: 1}\n    node_config: {}\n    max_workers: 10\n";
const GPU: &str = "  gpu:\n    resources: {CPU: 2, GPU: 1}\n    node_config: {}\n    max_workers: 2\n";

fn start(env: &RayEnv, yaml: &str) {
    let path = env.write_file("cluster.yaml", yaml);
    env.start_head(&["--num-cpus", "0", "--autoscaling-config", path.to_str().unwrap()]);
}

fn request(env: &RayEnv, args: &str) {
    env.python_ok(&format!(
        "import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init(address='auto')\nrequest_resources({args})\n"
    ));
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool, env: &RayEnv) {
    if !wait_until(timeout, &mut f) {
        panic!("timed out waiting for {what}\n{}\nmonitor.log:\n{}", env.status(), monitor_log(env));
    }
}

fn monitor_log(env: &RayEnv) -> String {
    std::fs::read_to_string(env.logs_dir().join("monitor.log")).unwrap_or_default()
}

#[test]
fn scales_up_from_zero_to_fit_request_resources() {
    let env = RayEnv::new();
    start(&env, &config("", SMALL, 10, 5.0));
    assert!(env.alive_of_type("small").is_empty());
    let t0 = Instant::now();
    request(&env, "num_cpus=8");
    wait_for("8 small workers", Duration::from_secs(30), || env.alive_of_type("small").len() == 8, &env);
    eprintln!("8 workers registered {:?} after request_resources returned", t0.elapsed());
    // Not one more, even after a few rounds.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(env.alive_of_type("small").len(), 8);
    let status = env.status();
    assert!(status.contains(" 8 ray.worker") || status.contains(" 8 small"), "{status}");
    assert!(status.contains("{'CPU': 1.0}: 8 from request_resources()"), "{status}");
    assert!(status.contains(" 0.0/8.0 CPU"), "{status}");
    assert!(monitor_log(&env).contains("Adding 8 node(s) of type small (request_resources)."));
}

#[test]
fn clearing_the_request_drains_idle_workers_after_the_timeout_and_keeps_min_workers() {
    let env = RayEnv::new();
    let small_min2 = SMALL.replace("max_workers: 10\n", "max_workers: 10\n    min_workers: 2\n");
    // 0.05 minutes = 3 s idle timeout.
    start(&env, &config("", &small_min2, 10, 0.05));
    wait_for("min_workers", Duration::from_secs(20), || env.alive_of_type("small").len() == 2, &env);
    request(&env, "num_cpus=5");
    wait_for("5 workers", Duration::from_secs(20), || env.alive_of_type("small").len() == 5, &env);
    let cleared = Instant::now();
    request(&env, "num_cpus=0");
    wait_for("scale-down to min_workers", Duration::from_secs(30), || env.alive_of_type("small").len() == 2, &env);
    eprintln!("scaled down {:?} after the request was cleared", cleared.elapsed());
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(env.alive_of_type("small").len(), 2, "min_workers stay");
    let dead: Vec<_> = env
        .node_table()
        .into_iter()
        .filter(|n| n.node_type_name == "small" && n.state == ray_proto::rpc::NodeState::Dead as i32)
        .collect();
    assert_eq!(dead.len(), 3);
    for n in &dead {
        let d = n.death_info.as_ref().expect("death info");
        assert_eq!(d.reason, ray_proto::rpc::DeathReason::AutoscalerDrainIdle as i32, "drained, not killed: {d:?}");
        assert!(d.reason_message.contains("idle for"), "{d:?}");
    }
    let log = monitor_log(&env);
    assert!(log.contains("from=RUNNING to=DRAINING") && log.contains("from=DRAINING to=TERMINATING"), "{log}");
    // The terminated raylets' processes are gone.
    let raylets = env.live_processes().into_iter().filter(|p| p.name == "raylet").count();
    assert_eq!(raylets, 3, "head + 2 workers");
}

#[test]
fn gpu_demand_launches_only_the_gpu_type() {
    let env = RayEnv::new();
    start(&env, &config("", &format!("{SMALL}{GPU}"), 10, 5.0));
    // CPU-only demand does not buy the GPU type, although it has more CPUs.
    request(&env, "num_cpus=3");
    wait_for("3 small workers", Duration::from_secs(20), || env.alive_of_type("small").len() == 3, &env);
    assert!(env.alive_of_type("gpu").is_empty());
    // A GPU bundle launches the GPU type, and only it.
    request(&env, "bundles=[{'GPU': 1}]");
    wait_for("a gpu worker", Duration::from_secs(20), || env.alive_of_type("gpu").len() == 1, &env);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(env.alive_of_type("gpu").len(), 1);
    assert_eq!(env.alive_of_type("small").len(), 3, "no new CPU node for GPU demand");
    assert!(env.status().contains(" 0.0/1.0 GPU"));
}

#[test]
fn max_workers_caps_the_scale_up() {
    let env = RayEnv::new();
    let capped = SMALL.replace("max_workers: 10", "max_workers: 3");
    start(&env, &config("", &format!("{capped}{GPU}"), 4, 5.0));
    request(&env, "num_cpus=20");
    wait_for("3 small workers", Duration::from_secs(20), || env.alive_of_type("small").len() == 3, &env);
    std::thread::sleep(Duration::from_secs(3));
    let small = env.alive_of_type("small").len();
    let gpu = env.alive_of_type("gpu").len();
    assert_eq!(small, 3, "per-type cap");
    assert!(small + gpu <= 4, "global cap: {small} + {gpu}");
}

#[test]
fn a_provider_that_fails_every_launch_backs_off_and_reports_why() {
    let env = RayEnv::new();
    let failing = "  launch_error: {class: quota, message: \"quota exceeded for small instances\"}\n";
    start(&env, &config(failing, SMALL, 10, 5.0));
    request(&env, "num_cpus=4");
    let mut status = String::new();
    wait_for("the failure in ray status", Duration::from_secs(20), || {
        status = env.status();
        status.contains("LaunchFailed")
    }, &env);
    assert!(status.contains("small: LaunchFailed") && status.contains("quota exceeded for small instances"), "{status}");
    assert!(status.contains("paused for"), "{status}");
    std::thread::sleep(Duration::from_secs(4));
    let log = monitor_log(&env);
    let attempts = log.matches("Failed to launch").count();
    assert!((1..=2).contains(&attempts), "backs off instead of retrying every round: {attempts} attempts\n{log}");
    assert!(env.alive_of_type("small").is_empty());
    let monitor = env.live_processes().into_iter().find(|p| p.name == "monitor");
    assert!(monitor.is_some(), "the autoscaler keeps running");
    assert_eq!(env.live_processes().iter().filter(|p| p.name == "raylet").count(), 1, "nothing launched");
}

#[test]
fn killed_worker_is_replaced_to_keep_min_workers() {
    let env = RayEnv::new();
    let min2 = SMALL.replace("max_workers: 10\n", "max_workers: 10\n    min_workers: 2\n");
    start(&env, &config("", &min2, 10, 5.0));
    wait_for("2 workers", Duration::from_secs(20), || env.alive_of_type("small").len() == 2, &env);
    let victim = env.alive_of_type("small")[0].node_id.clone();
    let pid = env
        .live_processes()
        .into_iter()
        .find(|p| p.name == "raylet" && raylet_node_id(p.pid).as_deref() == Some(victim.as_str()))
        .expect("the victim's process")
        .pid;
    ray_common::process::signal(pid, libc::SIGKILL);
    wait_for("a replacement", Duration::from_secs(30), || {
        let alive = env.alive_of_type("small");
        alive.len() == 2 && alive.iter().all(|n| n.node_id != victim)
    }, &env);
    assert!(monitor_log(&env).contains("the instance is gone"), "{}", monitor_log(&env));
}

#[test]
fn autoscaler_killed_mid_scale_up_resumes_without_duplicates_or_orphans() {
    let env = RayEnv::new();
    // Each instance takes 0.6 s to appear: a kill after 1.5 s lands mid-launch.
    start(&env, &config("  launch_delay_s: 0.6\n", SMALL, 10, 5.0));
    let monitor = env.live_processes().into_iter().find(|p| p.name == "monitor").expect("monitor");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", monitor.pid)).unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", monitor.pid)).unwrap();
    request(&env, "num_cpus=6");
    std::thread::sleep(Duration::from_millis(1500));
    ray_common::process::signal(monitor.pid, libc::SIGKILL);
    let before = env.alive_of_type("small").len();
    assert!(before < 6, "the kill must land mid-scale-up (had {before})");

    // Start it again exactly as `ray start` did.
    let args: Vec<String> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let vars: Vec<(String, String)> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let log = std::fs::OpenOptions::new().append(true).open(env.logs_dir().join("monitor.log")).unwrap();
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(ray_bin())
        .arg0("monitor")
        .args(&args[1..])
        .env_clear()
        .envs(vars)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let rec = ProcessRecord {
        pid: child.id(),
        start_ticks: ray_common::process::start_time_ticks(child.id()).unwrap(),
        name: "monitor".into(),
        session: String::new(),
    };
    ray_common::session::register_process(&env.root(), &rec).unwrap();

    wait_for("6 workers after the restart", Duration::from_secs(40), || env.alive_of_type("small").len() == 6, &env);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.alive_of_type("small").len(), 6, "no duplicates");
    // Every raylet ever started has a log: head + exactly 6 workers.
    let raylet_logs = std::fs::read_dir(env.logs_dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("raylet"))
        .count();
    assert_eq!(raylet_logs, 7, "a worker was started twice");
    assert_eq!(env.live_processes().iter().filter(|p| p.name == "raylet").count(), 7, "no orphaned raylet");
    let log = monitor_log(&env);
    assert!(log.contains("resumed with the instance table"), "{log}");
    assert!(log.contains("re-issuing a launch request"), "{log}");
}

#[test]
fn bad_config_is_refused_with_file_line_and_nothing_starts() {
    let env = RayEnv::new();
    let bad = config("", &SMALL.replace("max_workers: 10", "max_workerz: 10"), 10, 5.0);
    let path = env.write_file("bad.yaml", &bad);
    let out = env.ray(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--autoscaling-config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:", path.display())) && err.contains("did you mean \"max_workers\""), "{err}");
    assert!(err.contains("available_node_types.small.max_workerz"), "{err}");
    assert!(env.live_processes().is_empty());
    let failing = config("  launch_error: {class: bogus}\n", SMALL, 10, 5.0);
    let path = env.write_file("bad2.yaml", &failing);
    let out = env.ray(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--autoscaling-config", path.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("provider.launch_error.class"));
    assert!(env.live_processes().is_empty());
}

#[test]
fn ray_monitor_shows_the_autoscaler_log() {
    let env = RayEnv::new();
    start(&env, &config("", SMALL, 10, 5.0));
    request(&env, "num_cpus=1");
    wait_for("a worker", Duration::from_secs(20), || env.alive_of_type("small").len() == 1, &env);
    let out = env.ray_ok(&["monitor", "--no-follow", "--lines", "500"]);
    assert!(out.contains("Monitor: Started") && out.contains("Adding 1 node(s) of type small"), "{out}");
}
