//! The cluster's tags as GCP labels, and instance names.
//!
//! Label keys and values must be lowercase letters, digits, `_` and `-`, at most
//! 63 characters (keys start with a letter). The provider's tag keys already
//! are; a value that is not (a node type `ray.worker.GPU`, a cluster `My-Cluster`)
//! is written in a legal form that is a pure function of it: lowercased, other
//! characters turned to `_`, and, when that changed anything, a hash suffix so
//! two different values never meet. Listing filters by these legal values. The
//! original values of changed tags ride along in the instance metadata item
//! `ray-tags`, and a label is read back as the original while it still matches.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

/// Metadata key holding the original values of tags whose labels differ.
pub const ORIGINALS_KEY: &str = "ray-tags";
/// Longest label key or value.
const MAX: usize = 63;

fn legal_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// True when `v` is a legal label value as it is.
pub fn is_legal_value(v: &str) -> bool {
    v.len() <= MAX && v.chars().all(legal_char)
}

fn short_hash(v: &str) -> String {
    hex::encode(&Sha256::digest(v.as_bytes())[..4])
}

/// The label value standing for `v`.
pub fn value(v: &str) -> String {
    if is_legal_value(v) {
        return v.to_string();
    }
    let mapped: String = v.chars().map(|c| c.to_ascii_lowercase()).map(|c| if legal_char(c) { c } else { '_' }).take(MAX - 9).collect();
    format!("{mapped}-{}", short_hash(v))
}

/// The label key standing for `k` (the provider's own keys are legal already).
pub fn key(k: &str) -> String {
    let v = value(k);
    if v.starts_with(|c: char| c.is_ascii_lowercase()) { v } else { format!("k{}", &v[..v.len().min(MAX - 1)]) }
}

/// Labels for `tags`, and the originals that differ from their labels (JSON for
/// the `ray-tags` metadata item; `None` when every tag is legal as it is).
pub fn from_tags(tags: &BTreeMap<String, String>) -> (BTreeMap<String, String>, Option<String>) {
    let labels: BTreeMap<String, String> = tags.iter().map(|(k, v)| (key(k), value(v))).collect();
    let changed: BTreeMap<&String, &String> = tags.iter().filter(|(k, v)| key(k) != **k || value(v) != **v).collect();
    let originals = (!changed.is_empty()).then(|| serde_json::to_string(&changed).unwrap_or_default());
    (labels, originals)
}

/// Tags read back from labels and the `ray-tags` metadata item.
pub fn to_tags(labels: &BTreeMap<String, String>, originals: Option<&str>) -> BTreeMap<String, String> {
    let originals: BTreeMap<String, String> = originals.and_then(|o| serde_json::from_str(o).ok()).unwrap_or_default();
    let mut out: BTreeMap<String, String> = labels.clone();
    for (k, v) in &originals {
        let lk = key(k);
        if labels.get(&lk) == Some(&value(v)) {
            out.remove(&lk);
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The instance name for the autoscaler's instance `instance_id`: Ray's
/// `ray-<cluster>-<head|worker>-<suffix>` shape, a legal RFC 1035 name, and a
/// function of the instance id, so a retried launch can never make a second VM
/// of one instance (the API answers `alreadyExists`).
pub fn instance_name(cluster: &str, kind: &str, instance_id: &str) -> String {
    let mut c: String = cluster.chars().map(|c| c.to_ascii_lowercase()).map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    while c.contains("--") {
        c = c.replace("--", "-");
    }
    let c: String = c.trim_matches('-').chars().take(36).collect();
    let c = c.trim_end_matches('-');
    let suffix = hex::encode(&Sha256::digest(instance_id.as_bytes())[..5]);
    if c.is_empty() { format!("ray-{kind}-{suffix}") } else { format!("ray-{c}-{kind}-{suffix}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_values_stay_and_others_get_a_stable_legal_form() {
        assert_eq!(value("ray_worker_small"), "ray_worker_small");
        assert_eq!(value("up-to-date"), "up-to-date");
        let v = value("ray.worker.GPU");
        assert!(is_legal_value(&v) && v.starts_with("ray_worker_gpu-"), "{v}");
        assert_eq!(v, value("ray.worker.GPU"), "a pure function");
        assert_ne!(value("A"), value("a_"), "different values stay apart");
        let long = "X".repeat(200);
        assert!(is_legal_value(&value(&long)));
    }

    #[test]
    fn tags_survive_the_round_trip_through_labels() {
        let tags: BTreeMap<String, String> =
            [("ray-cluster-name", "My.Cluster"), ("ray-user-node-type", "ray_worker"), ("ray-node-status", "up-to-date")].map(|(k, v)| (k.into(), v.into())).into();
        let (labels, originals) = from_tags(&tags);
        assert!(labels.values().all(|v| is_legal_value(v)));
        assert_eq!(labels["ray-user-node-type"], "ray_worker");
        assert!(originals.as_deref().unwrap().contains("My.Cluster") && !originals.as_deref().unwrap().contains("ray_worker"));
        assert_eq!(to_tags(&labels, originals.as_deref()), tags);
        // A label changed later (by setLabels) is read as the label, not the stale original.
        let mut later = labels.clone();
        later.insert("ray-cluster-name".into(), "other".into());
        assert_eq!(to_tags(&later, originals.as_deref())["ray-cluster-name"], "other");
    }

    #[test]
    fn instance_names_are_legal_and_follow_the_instance_id() {
        let a = instance_name("My_Cluster!!", "worker", "inst-1");
        assert!(a.starts_with("ray-my-cluster-worker-") && a.len() <= 63, "{a}");
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_eq!(a, instance_name("My_Cluster!!", "worker", "inst-1"));
        assert_ne!(a, instance_name("My_Cluster!!", "worker", "inst-2"));
        assert!(instance_name(&"x".repeat(100), "head", "i").len() <= 63);
    }
}
