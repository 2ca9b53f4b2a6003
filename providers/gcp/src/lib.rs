//! The `gcp` node provider: a cluster's nodes are Compute Engine instances in
//! the zones of `provider.availability_zone`, found by their labels
//! (`ray-cluster-name`, `ray-node-type`, `ray-user-node-type`, `ray-node-status`,
//! `ray-launch-config`, ...; see [`labels`] for GCP's rules); everything else in
//! the project is left alone.
//!
//! - Launches are idempotent: an instance's name is a function of the
//!   autoscaler's instance id, a create first looks up what its launch request
//!   already made (by label), and each insert carries a `requestId` derived from
//!   the request, so a retried call returns the first call's operation.
//! - Operations are awaited (`zoneOperations.wait`), and an operation that ends
//!   in `ZONE_RESOURCE_POOL_EXHAUSTED` moves the launch to the next zone, then
//!   (Spot) to standard VMs; what is left is a capacity error, and the autoscaler
//!   places the demand on another node type. `QUOTA_EXCEEDED` is a quota error:
//!   the autoscaler stops asking and `ray status` says so.
//! - Every call passes a client-side rate limit and retries throttling with
//!   jittered back-off ([`api`]).
//!
//! The clients take `provider.endpoint_url` (or `RAY_GCP_ENDPOINT_URL`), so the
//! tests point the same binary at a local Compute server.

pub mod api;
pub mod bootstrap;
mod credentials;
pub mod errors;
pub mod labels;
mod launch;
pub mod node_config;
pub mod settings;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use google_cloud_compute_v1::model::Instance;
use ray_providers::*;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::api::Api;
use crate::settings::Settings;

/// The provider.
pub struct GcpProvider {
    settings: Settings,
    cluster_name: String,
    api: OnceCell<Api>,
    /// The zone of each instance seen (instance names are unique per zone only).
    zones: Mutex<HashMap<String, String>>,
}

impl GcpProvider {
    /// A provider for `provider_config` (the cluster config's `provider`).
    /// Nothing is called until the first request (credentials load then).
    pub fn new(provider_config: &Value, ctx: ProviderContext) -> Result<Self, ProviderError> {
        let settings = Settings::from_config(provider_config)?;
        Ok(Self { settings, cluster_name: ctx.cluster_name, api: OnceCell::new(), zones: Mutex::default() })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn api(&self) -> Result<&Api, ProviderError> {
        self.api.get_or_try_init(|| Api::connect(&self.settings)).await
    }

    fn project(&self) -> &str {
        &self.settings.project_id
    }

    /// This cluster's instances in every zone, as the API shows them, with the
    /// zone of each; `extra` narrows the label filter further.
    async fn instances(&self, extra: &[(&str, &str)]) -> Result<Vec<(String, Value)>, ProviderError> {
        let api = self.api().await?;
        let mut terms = vec![format!("(labels.{TAG_CLUSTER_NAME} = \"{}\")", labels::value(&self.cluster_name))];
        terms.extend(extra.iter().map(|(k, v)| format!("(labels.{} = \"{}\")", labels::key(k), labels::value(v))));
        let filter = terms.join(" AND ");
        let mut out = Vec::new();
        for zone in &self.settings.zones {
            let mut token: Option<String> = None;
            loop {
                let page = api
                    .call("instances.list", || {
                        api.instances
                            .list()
                            .set_project(self.project())
                            .set_zone(zone)
                            .set_filter(&filter)
                            .set_max_results(500u32)
                            .set_or_clear_page_token(token.clone())
                            .send()
                    })
                    .await?;
                for i in &page.items {
                    out.push((zone.clone(), serde_json::to_value(i).unwrap_or_default()));
                }
                match page.next_page_token {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => break,
                }
            }
        }
        let mut zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        for (z, i) in &out {
            if let Some(n) = i["name"].as_str() {
                zones.insert(n.to_string(), z.clone());
            }
        }
        Ok(out)
    }

    /// The zone of instance `name`: remembered, else looked up zone by zone.
    async fn zone_of(&self, name: &str) -> Result<Option<String>, ProviderError> {
        if let Some(z) = self.zones.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(Some(z.clone()));
        }
        for zone in &self.settings.zones {
            if self.get(zone, name).await?.is_some() {
                self.zones.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), zone.clone());
                return Ok(Some(zone.clone()));
            }
        }
        Ok(None)
    }

    /// One instance, or `None` when it does not exist.
    async fn get(&self, zone: &str, name: &str) -> Result<Option<Instance>, ProviderError> {
        let api = self.api().await?;
        match api.call("instances.get", || api.instances.get().set_project(self.project()).set_zone(zone).set_instance(name).send()).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if errors::is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, name: &str) -> Result<(), ProviderError> {
        let Some(zone) = self.zone_of(name).await? else { return Ok(()) };
        let api = self.api().await?;
        let rid = launch::request_uuid(&["delete", self.project(), &zone, name]);
        let op = match api
            .call("instances.delete", || {
                api.instances.delete().set_project(self.project()).set_zone(&zone).set_instance(name).set_request_id(&rid).send()
            })
            .await
        {
            Ok(op) => op,
            Err(e) if errors::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        api.wait(self.project(), Some(&zone), op, "instances.delete").await?;
        Ok(())
    }
}

/// The state of an instance as the autoscaler sees it; `None` once it is stopped
/// or gone.
fn state_of(status: &str) -> Option<CloudState> {
    match status {
        "PROVISIONING" | "STAGING" | "" => Some(CloudState::Pending),
        "RUNNING" => Some(CloudState::Running),
        "STOPPING" | "SUSPENDING" | "REPAIRING" => Some(CloudState::Terminating),
        _ => None,
    }
}

/// An instance (as JSON) as the autoscaler sees it.
pub(crate) fn to_cloud(i: &Value) -> Option<CloudInstance> {
    let state = state_of(i["status"].as_str().unwrap_or_default())?;
    let labels: BTreeMap<String, String> =
        i["labels"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()).unwrap_or_default();
    let originals = i["metadata"]["items"]
        .as_array()
        .and_then(|items| items.iter().find(|it| it["key"] == labels::ORIGINALS_KEY))
        .and_then(|it| it["value"].as_str());
    let mut tags = labels::to_tags(&labels, originals);
    let name = i["name"].as_str().unwrap_or_default().to_string();
    tags.insert(TAG_NODE_NAME.into(), name.clone());
    let nic = &i["networkInterfaces"][0];
    Some(CloudInstance {
        cloud_id: name,
        node_type: tags.get(TAG_USER_NODE_TYPE).cloned().unwrap_or_default(),
        state,
        internal_ip: nic["networkIP"].as_str().map(str::to_string),
        external_ip: nic["accessConfigs"][0]["natIP"].as_str().map(str::to_string),
        tags,
    })
}

#[async_trait]
impl NodeProvider for GcpProvider {
    fn name(&self) -> &str {
        "gcp"
    }

    async fn create(&self, req: &CreateRequest) -> Result<Vec<CloudInstance>, ProviderError> {
        launch::create(self, req).await
    }

    async fn terminate(&self, cloud_ids: &[String]) -> Result<(), ProviderError> {
        if cloud_ids.is_empty() {
            return Ok(());
        }
        // Only this cluster's instances: unknown or foreign names are ignored.
        let mine: std::collections::HashSet<String> =
            self.instances(&[]).await?.iter().filter_map(|(_, i)| i["name"].as_str().map(str::to_string)).collect();
        let ids: Vec<&String> = cloud_ids.iter().filter(|id| mine.contains(*id)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        tracing::info!(instances = ?ids, "Deleting instances");
        let results = futures::future::join_all(ids.iter().map(|id| self.delete(id))).await;
        results.into_iter().find_map(Result::err).map_or(Ok(()), Err)
    }

    async fn list(&self) -> Result<Vec<CloudInstance>, ProviderError> {
        Ok(self.instances(&[]).await?.iter().filter_map(|(_, i)| to_cloud(i)).collect())
    }

    async fn set_tags(&self, cloud_id: &str, tags: &BTreeMap<String, String>) -> Result<(), ProviderError> {
        launch::set_labels(self, cloud_id, tags).await
    }

    async fn bootstrap(&self, config: Value) -> Result<Value, ProviderError> {
        bootstrap::bootstrap(self.api().await?, &self.settings, &self.cluster_name, config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_instance_reads_back_with_its_tags_addresses_and_state() {
        let i = json!({
            "name": "ray-c-worker-1", "status": "STAGING",
            "labels": {"ray-cluster-name": "c", "ray-user-node-type": "cpu"},
            "networkInterfaces": [{"networkIP": "10.0.0.5", "accessConfigs": [{"natIP": "198.51.100.7"}]}],
        });
        let c = to_cloud(&i).unwrap();
        assert_eq!((c.state, c.node_type.as_str(), c.cloud_id.as_str()), (CloudState::Pending, "cpu", "ray-c-worker-1"));
        assert_eq!((c.internal_ip.as_deref(), c.external_ip.as_deref()), (Some("10.0.0.5"), Some("198.51.100.7")));
        assert_eq!(c.tags[TAG_NODE_NAME], "ray-c-worker-1");
        assert!(to_cloud(&json!({"name": "x", "status": "TERMINATED"})).is_none());
        assert_eq!(to_cloud(&json!({"name": "x", "status": "RUNNING"})).unwrap().state, CloudState::Running);
    }
}
