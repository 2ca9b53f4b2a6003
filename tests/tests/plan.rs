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
