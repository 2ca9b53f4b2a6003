//! The `aws` node provider: a cluster's nodes are EC2 instances, found by their
//! tags (`ray-cluster-name`, `ray-node-type`, `ray-user-node-type`,
//! `ray-node-status`, `ray-launch-config`, ...); everything else in the account is
//! left alone.
//!
//! - Launches are idempotent: each instance is launched on its own with the
//!   autoscaler's instance id and launch request id as tags, and a create looks
//!   up what its request already made before launching anything; the EC2
//!   `ClientToken` (derived from the request) guards a retried call on real AWS.
//! - No capacity in a subnet or zone: the next subnet of `SubnetIds`; no spot
//!   capacity anywhere: on-demand (`spot_fallback_to_on_demand`). What is left is
//!   a capacity error, and the autoscaler backs the type off and places the
//!   demand on another type.
//! - `cache_stopped_nodes` (Ray's default): terminating stops on-demand instances,
//!   and a launch starts a stopped instance of the same type and launch config
//!   before it makes a new one. Spot instances cannot be stopped; they end.
//! - Every call passes a client-side rate limit and retries throttling with
//!   jittered back-off ([`api`]).
//!
//! The SDK reads `AWS_ENDPOINT_URL` (or `provider.endpoint_url`), so the tests point
//! the same binary at a moto server.

pub mod api;
pub mod bootstrap;
pub mod errors;
mod iam;
mod launch;
pub mod node_config;
pub mod settings;
pub mod user_data;

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName};
use ray_providers::*;
use tokio::sync::OnceCell;

use crate::api::Api;
use crate::settings::Settings;

/// EC2's name tag; Ray keeps `ray-node-name` there.
const NAME_TAG: &str = "Name";
/// Most instance ids one Stop/Terminate/CreateTags call takes.
const BATCH: usize = 1000;
/// Most values one EC2 filter takes.
const FILTER_VALUES: usize = 200;

/// The provider.
pub struct AwsProvider {
    settings: Settings,
    cluster_name: String,
    ctx: ProviderContext,
    api: OnceCell<Api>,
    /// Held while stopped instances are chosen and claimed.
    reuse_lock: tokio::sync::Mutex<()>,
}

impl AwsProvider {
    /// A provider for `provider_config` (the cluster config's `provider`).
    /// Nothing is called until the first request (credentials load then).
    pub fn new(provider_config: &serde_json::Value, ctx: ProviderContext) -> Result<Self, ProviderError> {
        let settings = Settings::from_config(provider_config)?;
        Ok(Self { settings, cluster_name: ctx.cluster_name.clone(), ctx, api: OnceCell::new(), reuse_lock: tokio::sync::Mutex::new(()) })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn api(&self) -> &Api {
        self.api.get_or_init(|| Api::connect(&self.settings)).await
    }

    /// Instances of this cluster in `states`, with more `filters`.
    async fn describe(&self, states: &[&str], mut filters: Vec<Filter>) -> Result<Vec<Instance>, ProviderError> {
        filters.push(filter(&format!("tag:{TAG_CLUSTER_NAME}"), [self.cluster_name.as_str()]));
        filters.push(filter("instance-state-name", states.iter().copied()));
        let api = self.api().await;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = api
                .run("DescribeInstances", || {
                    api.ec2.describe_instances().set_filters(Some(filters.clone())).set_next_token(token.clone()).send()
                })
                .await?;
            out.extend(page.reservations().iter().flat_map(|r| r.instances().iter().cloned()));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn set_tags_on(&self, ids: &[String], tags: &BTreeMap<String, String>) -> Result<(), ProviderError> {
        if ids.is_empty() || tags.is_empty() {
            return Ok(());
        }
        let api = self.api().await;
        let tags = node_config::tags(tags.iter().map(|(k, v)| (to_aws_key(k).to_string(), v.clone())));
        for chunk in ids.chunks(BATCH) {
            api.run("CreateTags", || api.ec2.create_tags().set_resources(Some(chunk.to_vec())).set_tags(Some(tags.clone())).send())
                .await?;
        }
        Ok(())
    }
}

/// An EC2 filter.
pub(crate) fn filter<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> Filter {
    Filter::builder().name(name).set_values(Some(values.into_iter().map(str::to_string).collect())).build()
}

fn to_aws_key(k: &str) -> &str {
    if k == TAG_NODE_NAME { NAME_TAG } else { k }
}

/// An EC2 instance as the autoscaler sees it.
pub(crate) fn to_cloud(i: &Instance) -> CloudInstance {
    let tags: BTreeMap<String, String> = i
        .tags()
        .iter()
        .filter_map(|t| {
            let k = t.key()?;
            let k = if k == NAME_TAG { TAG_NODE_NAME } else { k };
            Some((k.to_string(), t.value().unwrap_or_default().to_string()))
        })
        .collect();
    let state = match i.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Running) => CloudState::Running,
        Some(InstanceStateName::Pending) | None => CloudState::Pending,
        Some(_) => CloudState::Terminating,
    };
    CloudInstance {
        cloud_id: i.instance_id().unwrap_or_default().to_string(),
        node_type: tags.get(TAG_USER_NODE_TYPE).cloned().unwrap_or_default(),
        state,
        internal_ip: i.private_ip_address().map(str::to_string),
        external_ip: i.public_ip_address().map(str::to_string),
        tags,
    }
}

#[async_trait]
impl NodeProvider for AwsProvider {
    fn name(&self) -> &str {
        "aws"
    }

    fn boots_workers_itself(&self) -> bool {
        self.settings.launch_via == settings::LaunchVia::UserData
    }

    async fn create(&self, req: &CreateRequest) -> Result<Vec<CloudInstance>, ProviderError> {
        launch::create(self, req).await
    }

    async fn terminate(&self, cloud_ids: &[String]) -> Result<(), ProviderError> {
        if cloud_ids.is_empty() {
            return Ok(());
        }
        let api = self.api().await;
        // Only this cluster's instances: unknown or foreign ids are ignored.
        // (EC2 takes at most 200 values per filter.)
        let mut mine = Vec::new();
        for chunk in cloud_ids.chunks(FILTER_VALUES) {
            let ids = chunk.iter().map(String::as_str);
            mine.extend(self.describe(&["pending", "running", "stopping", "stopped"], vec![filter("instance-id", ids)]).await?);
        }
        let (mut stop, mut end) = (Vec::new(), Vec::new());
        for i in &mine {
            let id = i.instance_id().unwrap_or_default().to_string();
            let state = i.state().and_then(|s| s.name()).cloned();
            let cache = self.settings.cache_stopped_nodes && i.spot_instance_request_id().is_none();
            match state {
                Some(InstanceStateName::Stopped | InstanceStateName::Stopping) if cache => {}
                // A pending instance cannot be stopped yet: it ends.
                Some(InstanceStateName::Running) if cache => stop.push(id),
                _ => end.push(id),
            }
        }
        let mut first_error = None;
        if !stop.is_empty() {
            tracing::info!(instances = ?stop, "Stopping instances (to terminate instead, set `cache_stopped_nodes: False` under `provider`)");
            for chunk in stop.chunks(BATCH) {
                if let Err(e) = api.run("StopInstances", || api.ec2.stop_instances().set_instance_ids(Some(chunk.to_vec())).send()).await {
                    first_error.get_or_insert(e);
                }
            }
        }
        if !end.is_empty() {
            tracing::info!(instances = ?end, "Terminating instances");
            for chunk in end.chunks(BATCH) {
                if let Err(e) = api.run("TerminateInstances", || api.ec2.terminate_instances().set_instance_ids(Some(chunk.to_vec())).send()).await {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn list(&self) -> Result<Vec<CloudInstance>, ProviderError> {
        Ok(self.describe(&["pending", "running"], Vec::new()).await?.iter().map(to_cloud).collect())
    }

    async fn set_tags(&self, cloud_id: &str, tags: &BTreeMap<String, String>) -> Result<(), ProviderError> {
        self.set_tags_on(&[cloud_id.to_string()], tags).await
    }

    async fn bootstrap(&self, config: serde_json::Value) -> Result<serde_json::Value, ProviderError> {
        bootstrap::bootstrap(self.api().await, &self.settings, &self.cluster_name, config).await
    }
}
