//! Checks Ray's own published cluster configs against Ray 2.60's verdicts: every
//! `*.yaml` named in `DIR/oracle.json` (`{"aws/x.yaml": {"ok": true,
//! "head_node_type": ..., "max_workers": ..., "node_types": {name: [min, max]}},
//! "y.yaml": {"ok": false, "error": ...}}`) must load here when Ray accepts it,
//! resolving to the same node types, and be refused when Ray refuses it. Ray's
//! files are not in this repository; fetch them and make the oracle with Ray
//! installed (`prepare_config` + `validate_config`), then run
//! `cargo run --release -p ray-autoscaler --example check_ray_configs -- DIR`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ray_autoscaler::config::{self, ClusterConfig, Loaded};
use serde_json::Value as J;

#[path = "../tests/support/expect.rs"]
mod expect;
use expect::compare;

/// Files of Ray's where this project differs from Ray 2.60 on purpose, and why.
fn known_difference(ours: &Result<Loaded, config::ConfigErrors>) -> Option<&'static str> {
    match ours {
        Ok(l) if l.config.provider_type.starts_with("fake_multinode") => {
            Some("Ray 2.60's wheel lacks fake_multinode's defaults")
        }
        Ok(l) if l.config.provider_type == "aliyun" => Some("Ray 2.60's wheel lacks aliyun's defaults"),
        // The verdicts come from Ray without AWS credentials, whose `ray up` then
        // cannot fill `resources` from DescribeInstanceTypes; this loader fills them
        // from its instance-type table, as Ray does with credentials.
        Ok(l) if l.config.provider_type == "aws" => Some("resources filled from the instance type, as Ray's `ray up` fills them with AWS credentials"),
        _ => None,
    }
}

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: check_ray_configs DIR (a folder of Ray's configs with Ray's verdicts in DIR/oracle.json)");
        std::process::exit(2);
    };
    let oracle: BTreeMap<String, J> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("oracle.json")).expect("oracle.json")).unwrap();
    let (mut accepted, mut loaded, mut failures) = (0, 0, Vec::new());
    for (rel, verdict) in &oracle {
        let ours = ClusterConfig::load_with_warnings(&dir.join(rel));
        let ray_ok = verdict["ok"].as_bool().unwrap();
        accepted += usize::from(ray_ok);
        let line = match (&ours, ray_ok) {
            (Ok(l), true) => {
                let mut expect = verdict.clone();
                let expect = expect.as_object_mut().unwrap();
                expect.retain(|k, _| matches!(k.as_str(), "head_node_type" | "max_workers" | "node_types"));
                let diffs = compare(l, &J::Object(expect.clone()));
                if diffs.is_empty() {
                    loaded += 1;
                    format!("loads, as in Ray ({} warnings)", l.warnings.len())
                } else {
                    failures.push(format!("{rel}: {diffs:?}"));
                    format!("DIFFERS: {diffs:?}")
                }
            }
            (Err(e), false) => format!("refused, as by Ray ({}): ours: {}", verdict["error"], e.0[0]),
            _ => match known_difference(&ours) {
                Some(why) => format!("differs on purpose: {why}"),
                None => {
                    failures.push(format!(
                        "{rel}: Ray ok={ray_ok}, ours={:?}",
                        ours.as_ref().map(|_| ()).map_err(|e| e.to_string())
                    ));
                    "DIFFERS".to_string()
                }
            },
        };
        eprintln!("{rel}: {line}");
    }
    eprintln!("{loaded} of the {accepted} configs Ray accepts load here ({} files)", oracle.len());
    if !failures.is_empty() {
        eprintln!("{}", failures.join("\n"));
        std::process::exit(1);
    }
}
