//! Creating a request's instances: find what the request already made, start
//! stopped instances of the same type and launch config (`cache_stopped_nodes`),
//! and launch the rest one instance per call, each tagged with its instance id,
//! trying subnets (zones) and then on-demand in place of spot while EC2 says it
//! has no capacity.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    CreditSpecificationRequest, Instance, InstanceMarketOptionsRequest, InstanceType, Placement, RunInstancesMonitoringEnabled, ShutdownBehavior,
};
use base64::Engine as _;
use ray_providers::*;
use sha2::{Digest as _, Sha256};

use crate::node_config::{self, LaunchSpec};
use crate::settings::LaunchVia;
use crate::{AwsProvider, filter, to_cloud, user_data};

/// Creates the instances of `req` that do not exist yet.
pub(crate) async fn create(p: &AwsProvider, req: &CreateRequest) -> Result<Vec<CloudInstance>, ProviderError> {
    let spec = node_config::parse(&req.node_type, &req.node_config)?;
    let worker = req.tags.get(TAG_NODE_KIND).map(String::as_str) != Some(NODE_KIND_HEAD);
    let boot = if worker && p.settings.launch_via == LaunchVia::UserData {
        if spec.user_data.is_some() {
            return Err(ProviderError::new(
                ErrorClass::InvalidConfig,
                format!("available_node_types[{:?}].node_config.UserData: cannot be combined with provider.launch_via: user_data (the provider writes the user data)", req.node_type),
            ));
        }
        Some(boot_script(p, req))
    } else {
        None
    };
    let tag = format!("tag:{TAG_LAUNCH_REQUEST}");
    let made = p.describe(&["pending", "running"], vec![filter(&tag, [req.request_id.as_str()])]).await?;
    let mut out: BTreeMap<String, CloudInstance> =
        made.iter().map(to_cloud).filter_map(|c| Some((c.tags.get(TAG_INSTANCE_ID)?.clone(), c))).collect();
    let missing: Vec<&String> = req.instance_ids.iter().filter(|id| !out.contains_key(*id)).collect();
    if missing.is_empty() {
        return Ok(req.instance_ids.iter().filter_map(|id| out.remove(id)).collect());
    }
    // Stopped instances are claimed (retagged and started) one request at a time,
    // so two launches never start the same one. User data runs on first boot
    // only, so a stopped instance would not join again: none are reused then.
    let reuse = p.settings.cache_stopped_nodes && boot.is_none();
    let mut launched: Vec<Result<CloudInstance, ProviderError>> = Vec::new();
    let mut fresh = Vec::new();
    if reuse {
        let _claim = p.reuse_lock.lock().await;
        let mut stopped = stopped_like(p, req).await?;
        for id in &missing {
            let Some(i) = stopped.pop() else {
                fresh.push(*id);
                continue;
            };
            match restart(p, i, req.instance_tags(&p.cluster_name, id)).await {
                Ok(c) => launched.push(Ok(c)),
                Err(e) => {
                    tracing::warn!(instance_id = %id, error = %e, "cannot start a stopped instance; launching a new one");
                    fresh.push(*id);
                }
            }
        }
    } else {
        fresh = missing;
    }
    let jobs = fresh.iter().map(|id| launch_one(p, &spec, req, id, req.instance_tags(&p.cluster_name, id), boot.as_deref()));
    launched.extend(futures::future::join_all(jobs).await);
    let mut first_error = None;
    for r in launched {
        match r {
            Ok(c) => {
                let id = c.tags.get(TAG_INSTANCE_ID).cloned().unwrap_or_default();
                out.insert(id, c);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // Instances that did launch are tagged and will be adopted; the request
    // as a whole failed, so the autoscaler backs the type off.
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut result: Vec<CloudInstance> = req.instance_ids.iter().filter_map(|id| out.remove(id)).collect();
    if !worker {
        // The launcher reaches a new head at once: wait until it runs and has
        // the address it will be reached at.
        for c in &mut result {
            *c = wait_for_address(p, &c.cloud_id).await?;
        }
    }
    Ok(result)
}

/// Longest wait for a new head to run and get its address.
const ADDRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

async fn wait_for_address(p: &AwsProvider, id: &str) -> Result<CloudInstance, ProviderError> {
    let deadline = tokio::time::Instant::now() + ADDRESS_WAIT;
    loop {
        let found = p.describe(&["pending", "running"], vec![filter("instance-id", [id])]).await?;
        if let Some(c) = found.iter().map(to_cloud).next()
            && c.state == CloudState::Running
            && (p.settings.use_internal_ips || c.external_ip.is_some())
        {
            return Ok(c);
        }
        if found.is_empty() {
            return Err(ProviderError::new(ErrorClass::Transient, format!("instance {id} ended before it ran")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProviderError::new(
                ErrorClass::Transient,
                format!("instance {id} did not run with an address within {} s (no public IP? set use_internal_ips or a subnet that maps public IPs)", ADDRESS_WAIT.as_secs()),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// Stopped instances this request may start instead of launching: same cluster,
/// node kind, node type and launch config (as Ray's provider matches them).
async fn stopped_like(p: &AwsProvider, req: &CreateRequest) -> Result<Vec<Instance>, ProviderError> {
    let Some(launch) = req.tags.get(TAG_LAUNCH_CONFIG) else { return Ok(Vec::new()) };
    let kind = req.tags.get(TAG_NODE_KIND).map(String::as_str).unwrap_or(NODE_KIND_WORKER);
    let filters = vec![
        filter(&format!("tag:{TAG_NODE_KIND}"), [kind]),
        filter(&format!("tag:{TAG_USER_NODE_TYPE}"), [req.node_type.as_str()]),
        filter(&format!("tag:{TAG_LAUNCH_CONFIG}"), [launch.as_str()]),
    ];
    let mut found = p.describe(&["stopped"], filters).await?;
    found.sort_by(|a, b| b.instance_id().cmp(&a.instance_id()));
    Ok(found)
}

/// Retags a stopped instance for its new life and starts it.
async fn restart(p: &AwsProvider, i: Instance, tags: BTreeMap<String, String>) -> Result<CloudInstance, ProviderError> {
    let id = i.instance_id().unwrap_or_default().to_string();
    tracing::info!(instance = %id, node_type = %tags.get(TAG_USER_NODE_TYPE).cloned().unwrap_or_default(), "Reusing a stopped instance (to disable reuse, set `cache_stopped_nodes: False` under `provider`)");
    p.set_tags_on(std::slice::from_ref(&id), &tags).await?;
    let api = p.api().await;
    api.run("StartInstances", || api.ec2.start_instances().instance_ids(id.clone()).send()).await?;
    let mut c = to_cloud(&i);
    c.tags.extend(tags);
    c.state = CloudState::Pending;
    Ok(c)
}

/// Where to try a launch: each subnet, else each zone, else wherever EC2 likes.
fn places(p: &AwsProvider, spec: &LaunchSpec) -> Vec<(Option<String>, Option<String>)> {
    if !spec.subnet_ids.is_empty() {
        spec.subnet_ids.iter().map(|s| (Some(s.clone()), None)).collect()
    } else if !p.settings.availability_zones.is_empty() && spec.network_interfaces.is_empty() {
        p.settings.availability_zones.iter().map(|z| (None, Some(z.clone()))).collect()
    } else {
        vec![(None, None)]
    }
}

/// The idempotency token of one try (EC2 allows 64 ASCII characters): the
/// request, the instance and everything that shapes the launch, so a retried call
/// repeats its token and a changed one (another place, market or node_config)
/// never reuses it (EC2 would answer IdempotentParameterMismatch).
fn client_token(request: &str, instance: &str, place: &str, spot: bool, shape: &str) -> String {
    let d = Sha256::digest(format!("{request}/{instance}/{place}/{spot}/{shape}"));
    hex::encode(&d[..24])
}

/// Launches instance `id`: every place with the type's market, then (spot that
/// found no capacity anywhere) every place on-demand.
async fn launch_one(
    p: &AwsProvider,
    spec: &LaunchSpec,
    req: &CreateRequest,
    id: &str,
    tags: BTreeMap<String, String>,
    boot: Option<&str>,
) -> Result<CloudInstance, ProviderError> {
    let mut markets: Vec<Option<InstanceMarketOptionsRequest>> = vec![spec.market.clone()];
    if spec.is_spot() && p.settings.spot_fallback {
        markets.push(None);
    }
    let places = places(p, spec);
    let shape = format!("{}{:?}", req.node_config, tags);
    let mut tried = Vec::new();
    let mut last = None;
    for market in &markets {
        let spot = market.is_some() && spec.is_spot();
        for (subnet, zone) in &places {
            let mut tags = tags.clone();
            if spec.is_spot() {
                tags.insert("ray-market".into(), if spot { "spot" } else { "on-demand" }.into());
            }
            let place = subnet.clone().or(zone.clone()).unwrap_or_default();
            let token = client_token(&req.request_id, id, &place, spot, &shape);
            match run(p, spec, market.clone(), subnet.as_deref(), zone.as_deref(), &tags, boot, token).await {
                Ok(mut c) => {
                    if !spot && spec.is_spot() {
                        tracing::warn!(instance = %c.cloud_id, node_type = %req.node_type, "no spot capacity; launched on-demand instead (provider.spot_fallback_to_on_demand)");
                    }
                    c.tags.extend(tags);
                    return Ok(c);
                }
                Err(e) if e.class == ErrorClass::Capacity => {
                    let place = subnet.clone().or(zone.clone()).unwrap_or_else(|| "the region".into());
                    tracing::warn!(node_type = %req.node_type, place = %place, spot, error = %e, "no capacity; trying the next place");
                    tried.push(format!("{place}{}", if spot { " (spot)" } else { "" }));
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }
    let e = last.unwrap_or_else(|| ProviderError::new(ErrorClass::Capacity, "no place to launch"));
    Err(ProviderError::new(
        ErrorClass::Capacity,
        format!("no capacity for {} in {}: {}", spec.instance_type.as_deref().unwrap_or(&req.node_type), tried.join(", "), e.message),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    p: &AwsProvider,
    spec: &LaunchSpec,
    market: Option<InstanceMarketOptionsRequest>,
    subnet: Option<&str>,
    zone: Option<&str>,
    tags: &BTreeMap<String, String>,
    boot: Option<&str>,
    token: String,
) -> Result<CloudInstance, ProviderError> {
    let api = p.api().await;
    let ours: Vec<(String, String)> = tags.iter().map(|(k, v)| (crate::to_aws_key(k).to_string(), v.clone())).collect();
    let placement = match (zone, &spec.placement) {
        (Some(z), Some(pl)) => Some(Placement::builder().availability_zone(z).set_group_name(pl.group_name().map(str::to_string)).set_tenancy(pl.tenancy().cloned()).build()),
        (Some(z), None) => Some(Placement::builder().availability_zone(z).build()),
        (None, pl) => pl.clone(),
    };
    let user_data = boot.map(str::to_string).or_else(|| spec.user_data.clone()).map(|u| base64::engine::general_purpose::STANDARD.encode(u));
    let monitoring = spec.monitoring.map(|on| RunInstancesMonitoringEnabled::builder().enabled(on).build());
    let b = api
        .ec2
        .run_instances()
        .min_count(1)
        .max_count(1)
        .client_token(token)
        .set_instance_type(spec.instance_type.as_deref().map(InstanceType::from))
        .set_image_id(spec.image_id.clone())
        .set_key_name(spec.key_name.clone())
        .set_subnet_id(subnet.map(str::to_string))
        .set_security_group_ids(nonempty(&spec.security_group_ids))
        .set_iam_instance_profile(spec.iam_profile.clone())
        .set_block_device_mappings(nonempty(&spec.block_devices))
        .set_instance_market_options(market)
        .set_tag_specifications(Some(node_config::tag_specifications(spec, &ours)))
        .set_user_data(user_data)
        .set_placement(placement)
        .set_network_interfaces(nonempty(&spec.network_interfaces))
        .set_launch_template(spec.launch_template.clone())
        .set_metadata_options(spec.metadata_options.clone())
        .set_ebs_optimized(spec.ebs_optimized)
        .set_monitoring(monitoring)
        .set_cpu_options(spec.cpu_options.clone())
        .set_credit_specification(spec.cpu_credits.as_ref().map(|c| CreditSpecificationRequest::builder().cpu_credits(c).build()))
        .set_capacity_reservation_specification(spec.capacity_reservation.clone())
        .set_instance_initiated_shutdown_behavior(spec.shutdown_behavior.as_deref().map(ShutdownBehavior::from))
        .set_disable_api_termination(spec.disable_api_termination);
    let out = api.run("RunInstances", || b.clone().send()).await?;
    let i = out
        .instances()
        .first()
        .ok_or_else(|| ProviderError::new(ErrorClass::Other, "RunInstances returned no instance"))?;
    tracing::info!(instance = %i.instance_id().unwrap_or_default(), subnet = ?subnet, zone = ?zone, "Launched an instance");
    Ok(to_cloud(i))
}

fn nonempty<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    if v.is_empty() { None } else { Some(v.to_vec()) }
}

/// The boot script of a worker of `req`'s type (`launch_via: user_data`).
fn boot_script(p: &AwsProvider, req: &CreateRequest) -> String {
    let head_ip = p.ctx.gcs_address.rsplit_once(':').map(|(h, _)| h).unwrap_or(&p.ctx.gcs_address);
    let head_ip = head_ip.trim_start_matches('[').trim_end_matches(']').to_string();
    let mut env = vec![("RAY_HEAD_IP".to_string(), head_ip), ("RAY_NODE_TYPE_NAME".to_string(), req.node_type.clone())];
    let declared: BTreeMap<String, f64> = req.resources.to_f64_map().into_iter().collect();
    if !declared.is_empty() {
        env.push(("RAY_OVERRIDE_RESOURCES".into(), serde_json::to_string(&declared).unwrap_or_default()));
    }
    if !req.labels.is_empty() {
        env.push(("RAY_OVERRIDE_LABELS".into(), serde_json::to_string(&req.labels).unwrap_or_default()));
    }
    env.extend(p.ctx.node_env.iter().cloned());
    let commands = p.ctx.boot_commands.get(&req.node_type).cloned().unwrap_or_default();
    let user = p.ctx.auth.get("ssh_user").and_then(|u| u.as_str());
    user_data::script(&env, &commands, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_stable_per_try_and_fit_ec2() {
        let a = client_token("req-1", "inst-1", "subnet-a", true, "{}");
        assert_eq!(a, client_token("req-1", "inst-1", "subnet-a", true, "{}"), "a retried call sends the same token");
        assert_ne!(a, client_token("req-1", "inst-1", "subnet-b", true, "{}"), "another subnet is another launch");
        assert_ne!(a, client_token("req-1", "inst-1", "subnet-a", false, "{}"), "on-demand is another launch");
        assert_ne!(a, client_token("req-1", "inst-1", "subnet-a", true, "{\"InstanceType\": \"c5.large\"}"), "a changed node_config");
        assert_ne!(a, client_token("req-1", "inst-2", "subnet-a", true, "{}"));
        assert!(a.len() <= 64 && a.is_ascii());
    }
}
