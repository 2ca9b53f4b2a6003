//! The cluster launcher with the local-process provider (`fake_multinode`), no
//! SSH: `ray up` starts the head on this machine with the autoscaler, `ray submit`
//! runs a script there that makes the cluster grow, `ray down` leaves nothing.

use std::time::Duration;

use ray_tests::*;

const SCRIPT: &str = r#"
import time
import ray

ray.init(address="auto")

@ray.remote(num_cpus=1)
def work(i):
    time.sleep(1.5)
    return ray.get_runtime_context().get_node_id()

nodes = set(ray.get([work.remote(i) for i in range(3)]))
print("result:", sum(range(3)), "on", len(nodes), "node(s)")
"#;

fn config(env: &RayEnv) -> std::path::PathBuf {
    env.write_file(
        "cluster.yaml",
        "cluster_name: fakeup\n\
         max_workers: 3\n\
         idle_timeout_minutes: 0.05\n\
         provider:\n  type: fake_multinode\n\
         available_node_types:\n\
         \x20 head:\n    resources: {CPU: 0}\n    node_config: {}\n\
         \x20 worker:\n    resources: {CPU: 1}\n    node_config: {}\n    max_workers: 3\n\
         head_node_type: head\n\
         head_start_ray_commands:\n\
         \x20 - ray stop\n\
         \x20 - ray start --head --port=0 --autoscaling-config=~/ray_bootstrap_config.yaml\n",
    )
}

#[test]
fn up_submit_scale_and_down_on_this_machine() {
    let env = RayEnv::new();
    let cfg = config(&env);
    let cfg = cfg.to_str().unwrap();
    let out = env.ray_ok(&["up", cfg, "--yes"]);
    assert!(out.contains("Head node: this machine"), "{out}");
    assert!(out.contains("launched and set up") || out.contains("updated"), "{out}");
    assert!(env.home().join("ray_bootstrap_config.yaml").exists(), "the head's config is where Ray keeps it");
    assert_eq!(env.alive_of_type("head").len(), 1, "the head runs, as its node type");

    // A second `ray up` with the same config changes nothing.
    let gcs_before: Vec<u32> = env.live_processes().iter().filter(|p| p.name == "gcs_server").map(|p| p.pid).collect();
    let again = env.ray_ok(&["up", cfg, "--yes"]);
    assert!(again.contains("already up to date"), "{again}");
    let gcs_after: Vec<u32> = env.live_processes().iter().filter(|p| p.name == "gcs_server").map(|p| p.pid).collect();
    assert_eq!(gcs_before, gcs_after, "Ray was not restarted");

    let script = env.write_file("job.py", SCRIPT);
    let out = env.ray_ok(&["submit", cfg, script.to_str().unwrap()]);
    assert!(out.contains("result: 3 on"), "{out}");
    // The head has no CPUs: the work ran on workers the autoscaler added for it.
    assert!(env.all_logs().contains("node(s) of type worker (pending tasks/actors)"), "{}", env.all_logs());
    assert_eq!(env.ray_ok(&["get-head-ip", cfg]).trim(), "127.0.0.1");

    // An edited config with --no-restart reaches the running autoscaler, which
    // re-reads the file as Ray's does.
    let edited = std::fs::read_to_string(cfg)
        .unwrap()
        .replace("max_workers: 3", "max_workers: 2");
    std::fs::write(cfg, edited).unwrap();
    let both = env.ray(&["up", cfg, "--yes", "--no-restart", "--restart-only"]);
    assert!(!both.status.success(), "the two flags conflict");
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("--no-restart"),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
    let out = env.ray_ok(&["up", cfg, "--yes", "--no-restart"]);
    assert!(out.contains("updated"), "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || env
            .all_logs()
            .contains("the cluster config changed; using it from now on")),
        "the monitor took the new config: {}",
        env.all_logs()
    );
    assert!(
        env.all_logs().contains("worker(CPU: 1 min 0 max 2)") || env.all_logs().contains("max 2)"),
        "{}",
        env.all_logs()
    );
    let gcs_now: Vec<u32> = env
        .live_processes()
        .iter()
        .filter(|p| p.name == "gcs_server")
        .map(|p| p.pid)
        .collect();
    assert_eq!(gcs_before, gcs_now, "Ray was not restarted");

    let down = env.ray_ok(&["down", cfg, "--yes"]);
    assert!(down.contains("is down"), "{down}");
    assert!(wait_until(Duration::from_secs(10), || env.live_processes().is_empty()), "nothing left: {:?}", env.live_processes());
    // Twice is harmless.
    env.ray_ok(&["down", cfg, "--yes"]);
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let env = RayEnv::new();
    let cfg = config(&env);
    let out = env.ray_ok(&["up", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(out.contains("Resolved config"), "{out}");
    assert!(out.contains("\"cluster_name\": \"fakeup\""), "{out}");
    assert!(out.contains("start: ray start --head --port=0"), "{out}");
    assert!(env.live_processes().is_empty(), "a dry run starts nothing");
    assert!(!env.home().join("ray_bootstrap_config.yaml").exists());
    let bad = env.write_file("bad.yaml", "cluster_name: x\nprovider: {type: fake_multinode}\nmax_worker: 3\n");
    let out = env.ray(&["up", bad.to_str().unwrap(), "--dry-run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:3:1") && err.contains("max_worker"), "{err}");
}
