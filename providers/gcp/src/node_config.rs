//! A node type's `node_config`, as Ray passes it to `instances.insert`: the
//! Instance resource in the REST API's own field names (`machineType`, `disks`,
//! `networkInterfaces`, `serviceAccounts`, `scheduling`, `guestAccelerators`,
//! `metadata`, `labels`, ...). Short names are completed for the zone a launch
//! tries (`n1-standard-2` -> `zones/<zone>/machineTypes/n1-standard-2`, and the
//! same for disk and accelerator types), so a launch can move to the next zone.
//! TPU node configs (Ray's `acceleratorType` / `acceleratorConfig` keys) are
//! refused: TPU VMs and pods are out of this provider's scope.

use std::collections::BTreeMap;

use google_cloud_compute_v1::model::Instance;
use ray_providers::{ErrorClass, ProviderError};
use serde_json::{Map, Value, json};

use crate::labels;

/// The parts of a node_config a launch needs to know about.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The node_config as given (a JSON object).
    pub config: Map<String, Value>,
    /// The machine type's short name.
    pub machine_type: String,
}

fn invalid(node_type: &str, field: &str, why: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ErrorClass::InvalidConfig, format!("available_node_types[{node_type:?}].node_config.{field}: {why}"))
}

/// Checks a node_config.
pub fn parse(node_type: &str, node_config: &Value) -> Result<Spec, ProviderError> {
    let Some(config) = node_config.as_object() else {
        return Err(invalid(node_type, "", "expected a mapping of Compute Engine Instance fields"));
    };
    for tpu in ["acceleratorType", "acceleratorConfig", "runtimeVersion"] {
        if config.contains_key(tpu) {
            return Err(invalid(
                node_type,
                tpu,
                "TPU node configs are not supported by this project's gcp provider (TPU VMs and pods are out of scope); use guestAccelerators for GPUs",
            ));
        }
    }
    let machine_type = match config.get("machineType") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.rsplit('/').next().unwrap_or(s).to_string(),
        Some(v) => return Err(invalid(node_type, "machineType", format!("expected a machine type name such as n1-standard-2, found {v}"))),
        None => return Err(invalid(node_type, "machineType", "required (e.g. n1-standard-2)")),
    };
    if let Some(d) = config.get("disks")
        && !d.is_array()
    {
        return Err(invalid(node_type, "disks", "expected a list of attached disks"));
    }
    if let Some(s) = config.get("scheduling")
        && !(s.is_object() || s.as_array().is_some_and(|a| a.iter().all(Value::is_object)))
    {
        return Err(invalid(node_type, "scheduling", "expected a mapping (preemptible, provisioningModel, onHostMaintenance, ...)"));
    }
    if let Some(l) = config.get("labels")
        && !l.as_object().is_some_and(|m| m.values().all(Value::is_string))
    {
        return Err(invalid(node_type, "labels", "expected a mapping of strings"));
    }
    Ok(Spec { config: config.clone(), machine_type })
}

impl Spec {
    /// The scheduling section (Ray's examples also write it as a list of one mapping).
    fn scheduling(&self) -> Map<String, Value> {
        match self.config.get("scheduling") {
            Some(Value::Object(m)) => m.clone(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).flat_map(|m| m.clone()).collect(),
            _ => Map::new(),
        }
    }

    /// True when the type runs on Spot or preemptible VMs.
    pub fn is_spot(&self) -> bool {
        let s = self.scheduling();
        s.get("preemptible") == Some(&Value::Bool(true)) || s.get("provisioningModel").and_then(Value::as_str) == Some("SPOT")
    }

    /// True when the type has GPUs attached.
    pub fn has_accelerators(&self) -> bool {
        self.config.get("guestAccelerators").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
    }

    /// The Instance to insert in `zone` of `project`: named `name`, labelled with
    /// `tags`, on Spot only when `spot`.
    pub fn instance(&self, node_type: &str, project: &str, zone: &str, name: &str, tags: &BTreeMap<String, String>, spot: bool) -> Result<Instance, ProviderError> {
        let mut c = self.config.clone();
        c.insert("name".into(), json!(name));
        c.insert("machineType".into(), json!(format!("zones/{zone}/machineTypes/{}", self.machine_type)));
        if let Some(Value::Array(disks)) = c.get_mut("disks") {
            for d in disks.iter_mut() {
                if let Some(t) = d.pointer_mut("/initializeParams/diskType")
                    && let Some(s) = t.as_str()
                {
                    *t = json!(format!("zones/{zone}/diskTypes/{}", s.rsplit('/').next().unwrap_or(s)));
                }
            }
        }
        if let Some(Value::Array(gas)) = c.get_mut("guestAccelerators") {
            for g in gas.iter_mut() {
                if let Some(t) = g.get_mut("acceleratorType")
                    && let Some(s) = t.as_str()
                {
                    *t = json!(format!("projects/{project}/zones/{zone}/acceleratorTypes/{}", s.rsplit('/').next().unwrap_or(s)));
                }
            }
        }
        let mut sched = self.scheduling();
        if !spot {
            sched.remove("preemptible");
            sched.remove("instanceTerminationAction");
            if sched.get("provisioningModel").and_then(Value::as_str) == Some("SPOT") {
                sched.remove("provisioningModel");
            }
        }
        if self.has_accelerators() && !sched.contains_key("onHostMaintenance") {
            // VMs with GPUs cannot live-migrate; the API refuses them without this.
            sched.insert("onHostMaintenance".into(), json!("TERMINATE"));
        }
        if spot || self.has_accelerators() {
            sched.entry("automaticRestart").or_insert(json!(false));
        }
        if sched.is_empty() {
            c.remove("scheduling");
        } else {
            c.insert("scheduling".into(), Value::Object(sched));
        }
        let (ours, originals) = labels::from_tags(tags);
        let mut all: Map<String, Value> = c.get("labels").and_then(Value::as_object).cloned().unwrap_or_default();
        for (k, v) in ours {
            all.insert(k, json!(v));
        }
        c.insert("labels".into(), Value::Object(all));
        if let Some(o) = originals {
            let md = c.entry("metadata").or_insert_with(|| json!({}));
            let items = md.as_object_mut().map(|m| m.entry("items").or_insert_with(|| json!([])));
            if let Some(Value::Array(items)) = items {
                items.retain(|i| i.get("key").and_then(Value::as_str) != Some(labels::ORIGINALS_KEY));
                items.push(json!({"key": labels::ORIGINALS_KEY, "value": o}));
            }
        }
        serde_json::from_value(Value::Object(c)).map_err(|e| invalid(node_type, "", format!("not a Compute Engine Instance: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> BTreeMap<String, String> {
        [("ray-cluster-name".to_string(), "c".to_string()), ("ray-user-node-type".to_string(), "ray.worker.gpu".to_string())].into()
    }

    #[test]
    fn short_names_are_completed_for_the_zone_and_labels_merged() {
        let nc = json!({
            "machineType": "n1-standard-4",
            "disks": [{"boot": true, "autoDelete": true, "type": "PERSISTENT", "initializeParams": {"diskSizeGb": 50, "diskType": "pd-ssd", "sourceImage": "projects/deeplearning-platform-release/global/images/family/common-cpu"}}],
            "guestAccelerators": [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}],
            "labels": {"team": "ml"},
            "scheduling": [{"preemptible": true}],
        });
        let spec = parse("gpu", &nc).unwrap();
        assert!(spec.is_spot() && spec.has_accelerators());
        let i = spec.instance("gpu", "proj", "us-west1-b", "ray-c-worker-1", &tags(), true).unwrap();
        let v = serde_json::to_value(&i).unwrap();
        assert_eq!(v["machineType"], "zones/us-west1-b/machineTypes/n1-standard-4");
        assert_eq!(v["disks"][0]["initializeParams"]["diskType"], "zones/us-west1-b/diskTypes/pd-ssd");
        assert_eq!(v["disks"][0]["initializeParams"]["diskSizeGb"], json!("50"), "int64 travels as a string, as the API writes it");
        assert_eq!(v["guestAccelerators"][0]["acceleratorType"], "projects/proj/zones/us-west1-b/acceleratorTypes/nvidia-tesla-t4");
        assert_eq!(v["scheduling"]["onHostMaintenance"], "TERMINATE");
        assert_eq!(v["scheduling"]["preemptible"], true);
        assert_eq!(v["labels"]["team"], "ml");
        assert_eq!(v["labels"]["ray-cluster-name"], "c");
        assert!(v["labels"]["ray-user-node-type"].as_str().unwrap().starts_with("ray_worker_gpu-"));
        assert_eq!(v["metadata"]["items"][0]["key"], labels::ORIGINALS_KEY);
        // Standard (not Spot) for a fallback launch.
        let std = serde_json::to_value(spec.instance("gpu", "proj", "us-west1-c", "n", &tags(), false).unwrap()).unwrap();
        assert!(std["scheduling"].get("preemptible").is_none(), "{std}");
        assert_eq!(std["machineType"], "zones/us-west1-c/machineTypes/n1-standard-4");
    }

    #[test]
    fn tpu_configs_and_bad_fields_are_refused_naming_the_field() {
        let e = parse("tpu", &json!({"acceleratorType": "v2-8", "runtimeVersion": "2.12.0"})).unwrap_err();
        assert!(e.message.contains("node_config.acceleratorType") && e.message.contains("TPU"), "{e}");
        let e = parse("w", &json!({"disks": []})).unwrap_err();
        assert!(e.message.contains("node_config.machineType: required"), "{e}");
        let e = parse("w", &json!({"machineType": "n1-standard-2", "labels": {"a": 1}})).unwrap_err();
        assert!(e.message.contains("node_config.labels"), "{e}");
        let e = parse("w", &json!({"machineType": "n1-standard-2", "disks": [{"boot": "yes-please"}]})).unwrap().instance("w", "p", "z", "n", &tags(), false).unwrap_err();
        assert!(e.message.contains("not a Compute Engine Instance"), "{e}");
    }
}
