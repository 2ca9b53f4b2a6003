//! What a loaded config resolves to, in the shape of a corpus file's
//! `metadata.expect`, and the differences from an expectation. Shared by the
//! corpus tests and the `check_ray_configs` example.

use std::collections::BTreeMap;

use ray_autoscaler::config::Loaded;
use serde_json::{Value as J, json};

/// What the loaded config resolves to, in the shape of `metadata.expect`.
pub fn resolved(l: &Loaded) -> J {
    let c = &l.config;
    let types: serde_json::Map<String, J> =
        c.node_types.iter().map(|t| (t.name.clone(), json!([t.min_workers, t.max_workers]))).collect();
    json!({
        "cluster_name": c.cluster_name,
        "head_node_type": c.head_node_type,
        "max_workers": c.max_workers,
        "node_types": types,
        "head_setup_commands": c.head_setup_commands,
        "worker_setup_commands": c.worker_setup_commands,
    })
}

/// Differences between what was expected and what loaded (only the keys `expect` has).
pub fn compare(l: &Loaded, expect: &J) -> Vec<String> {
    let got = resolved(l);
    let mut diffs = Vec::new();
    for (k, want) in expect.as_object().expect("metadata.expect is a mapping") {
        match k.as_str() {
            "warnings" => {
                let shown: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
                for w in want.as_array().expect("warnings: a list of texts") {
                    let w = w.as_str().unwrap();
                    if !shown.iter().any(|s| s.contains(w)) {
                        diffs.push(format!("no warning containing {w:?} in {shown:#?}"));
                    }
                }
                if want.as_array().unwrap().is_empty() && !shown.is_empty() {
                    diffs.push(format!("expected no warnings, got {shown:#?}"));
                }
            }
            "resources" => {
                for (t, res) in want.as_object().unwrap() {
                    let ty = l.config.node_type(t).unwrap_or_else(|| panic!("no node type {t}"));
                    let have: BTreeMap<String, f64> =
                        ty.resources.iter().map(|(k, v)| (k.to_string(), v.to_f64())).collect();
                    let want: BTreeMap<String, f64> =
                        res.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap())).collect();
                    if have != want {
                        diffs.push(format!("resources of {t}: got {have:?}, expected {want:?}"));
                    }
                }
            }
            _ => {
                let have = got.get(k).unwrap_or_else(|| panic!("unknown expectation {k}"));
                if have != want {
                    diffs.push(format!("{k}: got {have}, expected {want}"));
                }
            }
        }
    }
    diffs
}

