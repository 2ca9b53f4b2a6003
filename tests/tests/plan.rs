//! `ray plan` as a user runs it: the real executable on the repository's
//! example configs.

use std::path::{Path, PathBuf};
use std::process::Command;

use ray_tests::ray_bin;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

fn plan(config: &str, demand: &str, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demand.json");
    std::fs::write(&file, demand).unwrap();
    Command::new(ray_bin()).arg("plan").arg(repo(config)).arg("--demand").arg(&file).args(extra).output().unwrap()
}

#[test]
fn plan_prints_launches_cost_and_bound_as_json_and_text() {
    let demand = r#"{"bundles": [{"resources": {"CPU": 2}, "count": 3}],
                     "placement_groups": [{"strategy": "STRICT_SPREAD", "bundles": [{"CPU": 1}, {"CPU": 1}]}]}"#;
    let out = plan("configs/aws/example-full.yaml", demand, &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let launched: u64 = v["launch"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert!(launched >= 1, "{v}");
    let (cost, bound) = (v["cost_per_hour"].as_f64().unwrap(), v["lower_bound_per_hour"].as_f64().unwrap());
    assert!(bound > 0.0 && cost >= bound, "{v}");
    assert_eq!(v["bundles"], 5);
    assert!(v["decision_ms"].as_f64().unwrap() >= 0.0);

    let out = plan("configs/local.yaml", r#"{"bundles": [{"resources": {"CPU": 1}, "count": 2}, {"resources": {"GPU": 8}}]}"#, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("launch 2 x ray.worker.small (pending tasks/actors)"), "{text}");
    assert!(text.contains("{'GPU': 8.0}: 1 - infeasible: no node type can hold it"), "{text}");
}

#[test]
fn a_bad_demand_file_is_refused_naming_the_entry() {
    let out = plan("configs/local.yaml", r#"{"bundles": [{"resources": {"CPU": 1}}, {"resources": {"CPU": "two"}}]}"#, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("demand.json:1:") && err.contains("bundles[1].resources.CPU: expected a number"), "{err}");
    assert!(out.stdout.is_empty(), "nothing is printed as a plan");

    let out = plan("configs/nope.yaml", "{}", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.yaml"));
}

#[test]
fn replay_prints_the_node_count_and_cost_curve() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.yaml");
    std::fs::write(&trace, "steps:\n  - {at: 0, bundles: [{resources: {CPU: 1}, count: 3}]}\n  - {at: 600}\n").unwrap();
    let out = Command::new(ray_bin())
        .args(["plan", repo("configs/local.yaml").to_str().unwrap(), "--replay", trace.to_str().unwrap(), "--json", "--launch-delay-s", "20"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples[0]["launching"], 3, "{v}");
    assert!(samples.iter().any(|s| s["t_s"] == 20.0 && s["unplaced"] == 0), "up after the launch delay: {v}");
    let last = samples.last().unwrap();
    assert_eq!(last["launching"], 0);
    assert!(last["nodes"].as_object().unwrap().is_empty(), "back to no workers after the idle timeout: {v}");
    assert_eq!(v["peak_nodes"], 3);

    std::fs::write(&trace, "steps:\n  - {at: 60}\n  - {at: 30}\n").unwrap();
    let out = Command::new(ray_bin()).args(["plan", repo("configs/local.yaml").to_str().unwrap(), "--replay", trace.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trace.yaml:3:") && err.contains("steps[1].at: expected a time after the previous step's 60"), "{err}");
}

#[test]
fn from_cluster_plans_a_running_clusters_pending_tasks_and_requested_resources() {
    use ray_tests::RayEnv;
    let env = RayEnv::new();
    // A head with no CPUs and no autoscaler: every task stays pending.
    env.start_head(&["--num-cpus", "0"]);
    // A driver whose tasks wait, in the background while we take the snapshot.
    let mut driver = Command::new(env.python());
    driver.args([
        "-c",
        "import ray, time\nfrom ray.autoscaler.sdk import request_resources\nray.init(address='auto')\n@ray.remote(num_cpus=2)\ndef f(): return 1\nrefs = [f.remote() for _ in range(6)]\nrequest_resources(bundles=[{'CPU': 1}] * 3)\ntime.sleep(60)\n",
    ]);
    driver.env("HOME", env.home()).env("RAY_TMPDIR", env.root().parent().unwrap()).env_remove("RAY_ADDRESS");
    let mut driver = driver.spawn().unwrap();
    let snap = env.home().join("snap.json");
    let config = repo("configs/local.yaml");
    let mut last = String::new();
    let seen = ray_tests::wait_until(std::time::Duration::from_secs(20), || {
        let out = env.ray(&["plan", config.to_str().unwrap(), "--from-cluster", "--json", "--save", snap.to_str().unwrap()]);
        last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        out.status.success() && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| v["bundles"] == 9)
    });
    let _ = driver.kill();
    let _ = driver.wait();
    assert!(seen, "the 6 pending tasks and 3 requested bundles never showed in the plan: {last}");
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert!(!v["launch"].as_object().unwrap().is_empty(), "{v}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&snap).unwrap()).unwrap();
    assert_eq!(saved["bundles"][0]["count"], 6, "{saved}");
    assert_eq!(saved["bundles"][0]["resources"]["CPU"], 2.0, "{saved}");
    let requested: Vec<&serde_json::Value> = saved["request_resources"].as_array().unwrap().iter().collect();
    assert_eq!(requested.iter().map(|r| r["count"].as_u64().unwrap()).sum::<u64>(), 3, "{saved}");
    assert!(requested.iter().all(|r| r["resources"]["CPU"] == 1.0), "{saved}");
    // The saved snapshot is a demand file.
    let again = env.ray(&["plan", config.to_str().unwrap(), "--demand", snap.to_str().unwrap(), "--json"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
}
