//! Creating a request's instances: find what the request already made (by its
//! label), then insert the rest, one instance per call, each named after its
//! instance id and carrying a `requestId` derived from the request, trying the
//! configured zones and then (Spot) standard VMs while Compute has no capacity.

use std::collections::BTreeMap;

use google_cloud_compute_v1::model::InstancesSetLabelsRequest;
use ray_providers::*;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::node_config::{self, Spec};
use crate::{GcpProvider, errors, labels, to_cloud};

/// A UUID (the form `requestId` must have) that is a function of `parts`: a
/// retried call repeats it, and Compute answers with the first call's operation.
pub(crate) fn request_uuid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap_or([1; 16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 (name-based)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let x = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

/// Creates the instances of `req` that do not exist yet.
pub(crate) async fn create(p: &GcpProvider, req: &CreateRequest) -> Result<Vec<CloudInstance>, ProviderError> {
    let spec = node_config::parse(&req.node_type, &req.node_config)?;
    let made = p.instances(&[(TAG_LAUNCH_REQUEST, req.request_id.as_str())]).await?;
    let mut out: BTreeMap<String, CloudInstance> =
        made.iter().filter_map(|(_, i)| to_cloud(i)).filter_map(|c| Some((c.tags.get(TAG_INSTANCE_ID)?.clone(), c))).collect();
    let missing: Vec<&String> = req.instance_ids.iter().filter(|id| !out.contains_key(*id)).collect();
    let head = req.tags.get(TAG_NODE_KIND).map(String::as_str) == Some(NODE_KIND_HEAD);
    let jobs = missing.iter().map(|id| launch_one(p, &spec, req, id, head));
    let mut first_error = None;
    for r in futures::future::join_all(jobs).await {
        match r {
            Ok(c) => {
                out.insert(c.tags.get(TAG_INSTANCE_ID).cloned().unwrap_or_default(), c);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // Instances that did launch carry their labels and will be adopted; the
    // request as a whole failed, so the autoscaler backs the type off.
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut result: Vec<CloudInstance> = req.instance_ids.iter().filter_map(|id| out.remove(id)).collect();
    if head {
        // The launcher reaches a new head at once: wait until it runs and has
        // the address it will be reached at.
        for c in &mut result {
            *c = wait_for_address(p, &c.cloud_id).await?;
        }
    }
    Ok(result)
}

/// Launches instance `id`: every zone with the type's market, then (Spot that
/// found no capacity anywhere) every zone on standard VMs.
async fn launch_one(p: &GcpProvider, spec: &Spec, req: &CreateRequest, id: &str, head: bool) -> Result<CloudInstance, ProviderError> {
    let kind = if head { NODE_KIND_HEAD } else { NODE_KIND_WORKER };
    let name = labels::instance_name(&p.cluster_name, kind, id);
    let mut markets = vec![spec.is_spot()];
    if spec.is_spot() && p.settings.spot_fallback {
        markets.push(false);
    }
    let mut tags = req.instance_tags(&p.cluster_name, id);
    // The instance's name is its name; a label would only repeat it.
    tags.remove(TAG_NODE_NAME);
    let mut tried = Vec::new();
    let mut last = None;
    for &spot in &markets {
        for zone in &p.settings.zones {
            match insert(p, spec, req, &name, zone, &tags, spot).await {
                Ok(c) => {
                    if spec.is_spot() && !spot {
                        tracing::warn!(instance = %c.cloud_id, node_type = %req.node_type, "no Spot capacity in any zone; launched a standard VM instead (provider.spot_fallback_to_on_demand)");
                    }
                    return Ok(c);
                }
                Err(e) if e.class == ErrorClass::Capacity => {
                    tracing::warn!(node_type = %req.node_type, zone = %zone, spot, error = %e, "no capacity; trying the next zone");
                    tried.push(format!("{zone}{}", if spot { " (spot)" } else { "" }));
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }
    let e = last.unwrap_or_else(|| ProviderError::new(ErrorClass::Capacity, "no zone to launch in"));
    Err(ProviderError::new(ErrorClass::Capacity, format!("no capacity for {} in {}: {}", spec.machine_type, tried.join(", "), e.message)))
}

/// One insert in one zone, awaited to its end.
async fn insert(p: &GcpProvider, spec: &Spec, req: &CreateRequest, name: &str, zone: &str, tags: &BTreeMap<String, String>, spot: bool) -> Result<CloudInstance, ProviderError> {
    let api = p.api().await?;
    let project = p.project();
    let body = spec.instance(&req.node_type, project, zone, name, tags, spot)?;
    let shape = serde_json::to_string(&body).unwrap_or_default();
    let rid = request_uuid(&[&req.request_id, name, zone, if spot { "spot" } else { "standard" }, &shape]);
    let op = match api
        .call("instances.insert", || {
            api.instances.insert().set_project(project).set_zone(zone).set_request_id(&rid).set_body(body.clone()).send()
        })
        .await
    {
        Ok(op) => Some(op),
        // The name is the instance id's: it exists, so an earlier try made it.
        Err(e) if errors::is_already_exists(&e) => None,
        Err(e) => return Err(e),
    };
    if let Some(op) = op {
        api.wait(project, Some(zone), op, "instances.insert").await?;
    }
    let Some(i) = p.get(zone, name).await? else {
        return Err(ProviderError::new(ErrorClass::Transient, format!("instance {name} is not in {zone} after its insert finished")));
    };
    p.zones.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), zone.to_string());
    let v = serde_json::to_value(&i).unwrap_or_default();
    // An instance named like ours but made for another request is not ours.
    if v["labels"][TAG_INSTANCE_ID].as_str() != tags.get(TAG_INSTANCE_ID).map(|s| labels::value(s)).as_deref() {
        return Err(ProviderError::new(ErrorClass::InvalidConfig, format!("instance {name} in {zone} exists but was not made for this launch")));
    }
    tracing::info!(instance = %name, zone = %zone, spot, node_type = %req.node_type, "Launched an instance");
    to_cloud(&v).ok_or_else(|| ProviderError::new(ErrorClass::Transient, format!("instance {name} ended right after it was made")))
}

/// Longest wait for a new head to run and get its address.
const ADDRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

async fn wait_for_address(p: &GcpProvider, name: &str) -> Result<CloudInstance, ProviderError> {
    let deadline = tokio::time::Instant::now() + ADDRESS_WAIT;
    loop {
        let zone = p.zone_of(name).await?.unwrap_or_default();
        let found = p.get(&zone, name).await?.map(|i| serde_json::to_value(&i).unwrap_or_default());
        match found.as_ref().and_then(to_cloud) {
            Some(c) if c.state == CloudState::Running && (p.settings.use_internal_ips || c.external_ip.is_some()) => return Ok(c),
            None => return Err(ProviderError::new(ErrorClass::Transient, format!("instance {name} ended before it ran"))),
            Some(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProviderError::new(
                ErrorClass::Transient,
                format!("instance {name} did not run with an address within {} s (no external IP? set use_internal_ips, or give the head an accessConfig)", ADDRESS_WAIT.as_secs()),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Adds or replaces labels of an instance (read-modify-write on its label
/// fingerprint; a concurrent change is read again and retried).
pub(crate) async fn set_labels(p: &GcpProvider, name: &str, tags: &BTreeMap<String, String>) -> Result<(), ProviderError> {
    let Some(zone) = p.zone_of(name).await? else {
        return Err(ProviderError::new(ErrorClass::InvalidConfig, format!("no instance {name} in {}", p.settings.zones.join(", "))));
    };
    let api = p.api().await?;
    let mut tags = tags.clone();
    tags.remove(TAG_NODE_NAME);
    let (ours, _) = labels::from_tags(&tags);
    for attempt in 1..=5 {
        let Some(i) = p.get(&zone, name).await? else {
            return Err(ProviderError::new(ErrorClass::InvalidConfig, format!("instance {name} is gone")));
        };
        let v = serde_json::to_value(&i).unwrap_or_default();
        let mut all = v["labels"].as_object().cloned().unwrap_or_default();
        for (k, val) in &ours {
            all.insert(k.clone(), json!(val));
        }
        let body: InstancesSetLabelsRequest = serde_json::from_value(json!({"labels": all, "labelFingerprint": v["labelFingerprint"]}))
            .map_err(|e| ProviderError::new(ErrorClass::Other, format!("setLabels body: {e}")))?;
        let rid = request_uuid(&["setLabels", name, &serde_json::to_string(&body).unwrap_or_default()]);
        match api
            .call("instances.setLabels", || {
                api.instances.set_labels().set_project(p.project()).set_zone(&zone).set_instance(name).set_request_id(&rid).set_body(body.clone()).send()
            })
            .await
        {
            Ok(op) => {
                api.wait(p.project(), Some(&zone), op, "instances.setLabels").await?;
                return Ok(());
            }
            Err(e) if e.message.contains("(HTTP 412") && attempt < 5 => {
                tracing::debug!(instance = %name, attempt, "labels changed meanwhile; reading them again");
            }
            Err(e) => return Err(e),
        }
    }
    Err(ProviderError::new(ErrorClass::Transient, format!("instances.setLabels: the labels of {name} kept changing")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuids_and_a_function_of_the_try() {
        let a = request_uuid(&["req-1", "ray-c-worker-1", "us-west1-a", "standard", "{}"]);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_eq!(&a[14..15], "5");
        assert_eq!(a, request_uuid(&["req-1", "ray-c-worker-1", "us-west1-a", "standard", "{}"]), "a retried call repeats it");
        assert_ne!(a, request_uuid(&["req-1", "ray-c-worker-1", "us-west1-b", "standard", "{}"]), "another zone is another insert");
        assert_ne!(a, request_uuid(&["req-1", "ray-c-worker-1", "us-west1-a", "spot", "{}"]));
        assert_ne!(request_uuid(&["ab", "c"]), request_uuid(&["a", "bc"]));
    }
}
