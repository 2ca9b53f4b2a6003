//! Ray's GCP bootstrap, for a config that leaves things out, with narrower
//! rights than Ray's:
//!
//! - the project must exist (`projects.get`);
//! - SSH: without `auth.ssh_private_key`, a key pair in `~/.ssh`
//!   (`ray-autoscaler_gcp_<region>_<project>_<user>_0`) whose public key is added
//!   to the project metadata's `ssh-keys`;
//! - network: node types without `networkInterfaces` get the region's subnetwork
//!   of the `default` network (made, auto mode, when the project has none), with
//!   an external address unless `use_internal_ips`, and the cluster's network tag;
//! - firewall: `ray-<cluster>-internal` (all TCP/UDP/ICMP between the cluster's
//!   tagged nodes) and `ray-<cluster>-ssh` (TCP 22 from
//!   `provider.ssh_source_ranges`, default 0.0.0.0/0); the dashboard is not opened;
//! - a head without `serviceAccounts` runs as `ray-rs-autoscaler-sa-v1`, which gets
//!   `roles/compute.instanceAdmin.v1` on the project and
//!   `roles/iam.serviceAccountUser` only on the service accounts the worker types
//!   name (Ray grants compute.admin, storage.objectAdmin, iam.serviceAccountUser
//!   on the whole project and iam.roleViewer).
//!
//! Every node type's node_config is checked first (TPU node configs are refused
//! here, before anything is made). Everything is looked up before it is made, so
//! a second bootstrap makes nothing.

use std::collections::BTreeSet;

use google_cloud_compute_v1::model::{Firewall, Metadata, Network};
use google_cloud_iam_admin_v1::model::ServiceAccount;
use ray_providers::{ErrorClass, ProviderError};
use serde_json::{Value, json};

use crate::api::Api;
use ray_providers::helpers::{invalid, node_configs};
use crate::errors::{is_already_exists, is_not_found};
use crate::settings::Settings;

/// The head's service account (account id).
pub const SERVICE_ACCOUNT_ID: &str = "ray-rs-autoscaler-sa-v1";
/// The project role the head's autoscaler needs: create, list, label and delete instances.
pub const HEAD_ROLE: &str = "roles/compute.instanceAdmin.v1";
/// The role that lets the head attach a service account to the workers it launches.
pub const ACT_AS_ROLE: &str = "roles/iam.serviceAccountUser";
/// The scope of the head's service account.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The network tag of the cluster's nodes (the firewall rules' target).
pub fn network_tag(cluster: &str) -> String {
    let mut t: String = cluster.chars().map(|c| c.to_ascii_lowercase()).map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    t = t.trim_matches('-').chars().take(40).collect();
    format!("ray-{}", t.trim_end_matches('-'))
}

/// Fills in what `doc` leaves out; see the module's docs.
pub async fn bootstrap(api: &Api, s: &Settings, cluster: &str, mut doc: Value) -> Result<Value, ProviderError> {
    // Refuse what cannot launch (a TPU node config, no machineType) before
    // anything is made.
    for (name, c) in node_configs(&mut doc) {
        crate::node_config::parse(&name, &Value::Object(c.clone()))?;
    }
    let project = api.call("projects.get", || api.projects.get().set_project(&s.project_id).send()).await.map_err(|e| {
        if is_not_found(&e) { invalid(format!("provider.project_id: project {:?} does not exist or is not visible: {}", s.project_id, e.message)) } else { e }
    })?;
    let project = serde_json::to_value(&project).unwrap_or_default();
    ssh_keys(api, s, &project, &mut doc).await?;
    let network = network(api, s, cluster, &mut doc).await?;
    firewall(api, s, cluster, &network, &doc).await?;
    service_account(api, s, &project, &mut doc).await?;
    Ok(doc)
}

async fn ssh_keys(api: &Api, s: &Settings, project: &Value, doc: &mut Value) -> Result<(), ProviderError> {
    if doc.pointer("/auth/ssh_private_key").and_then(Value::as_str).is_some_and(|k| !k.is_empty()) {
        return Ok(());
    }
    let user = doc.pointer("/auth/ssh_user").and_then(Value::as_str).unwrap_or("ubuntu").to_string();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).ok_or_else(|| invalid("HOME is not set: no ~/.ssh for the cluster's key"))?;
    let dir = home.join(".ssh");
    std::fs::create_dir_all(&dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
    let key = dir.join(format!("ray-autoscaler_gcp_{}_{}_{}_0", s.region, s.project_id, user));
    if !key.exists() {
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", &user, "-f"])
            .arg(&key)
            .output()
            .map_err(|e| invalid(format!("cannot run ssh-keygen to make the cluster's key {}: {e}", key.display())))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&key);
            return Err(invalid(format!("ssh-keygen failed for {}: {}", key.display(), String::from_utf8_lossy(&out.stderr).trim())));
        }
        tracing::info!(key = %key.display(), "Made the cluster's SSH key");
    }
    let public = std::fs::read_to_string(key.with_extension("pub")).map_err(|e| invalid(format!("{}.pub: {e}", key.display())))?;
    let line = format!("{user}:{}", public.trim());
    let mut md = project["commonInstanceMetadata"].clone();
    for attempt in 1..=5 {
        let items = md["items"].as_array().cloned().unwrap_or_default();
        let current = items.iter().find(|i| i["key"] == "ssh-keys").and_then(|i| i["value"].as_str()).unwrap_or_default().to_string();
        if current.lines().any(|l| l.trim() == line) {
            break;
        }
        let value = if current.trim().is_empty() { line.clone() } else { format!("{}\n{line}", current.trim_end()) };
        let mut items: Vec<Value> = items.into_iter().filter(|i| i["key"] != "ssh-keys").collect();
        items.push(json!({"key": "ssh-keys", "value": value}));
        let body: Metadata = serde_json::from_value(json!({"fingerprint": md["fingerprint"], "items": items}))
            .map_err(|e| ProviderError::new(ErrorClass::Other, format!("metadata body: {e}")))?;
        match api.call("projects.setCommonInstanceMetadata", || api.projects.set_common_instance_metadata().set_project(&s.project_id).set_body(body.clone()).send()).await {
            Ok(op) => {
                api.wait(&s.project_id, None, op, "projects.setCommonInstanceMetadata").await?;
                tracing::info!(user = %user, "Added the cluster's SSH key to the project metadata");
                break;
            }
            Err(e) if e.message.contains("(HTTP 412") && attempt < 5 => {
                let p = api.call("projects.get", || api.projects.get().set_project(&s.project_id).send()).await?;
                md = serde_json::to_value(&p).unwrap_or_default()["commonInstanceMetadata"].clone();
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(auth) = doc.as_object_mut().map(|d| d.entry("auth").or_insert_with(|| json!({}))).and_then(Value::as_object_mut) {
        auth.insert("ssh_user".into(), json!(user));
        auth.insert("ssh_private_key".into(), json!(key.display().to_string()));
    }
    Ok(())
}

/// Gives node types without network interfaces the default network's
/// subnetwork of the region, and every node type the cluster's network tag;
/// the network the cluster uses (the default network's when it was given out,
/// else the first one a node type names, else `default`).
async fn network(api: &Api, s: &Settings, cluster: &str, doc: &mut Value) -> Result<String, ProviderError> {
    let tag = network_tag(cluster);
    let needs = node_configs(doc).iter().any(|(_, c)| !c.contains_key("networkInterfaces"));
    let mut subnet: Option<Value> = None;
    if needs {
        subnet = default_subnet(api, s).await?;
        if subnet.is_none() {
            tracing::info!(project = %s.project_id, "No default network; making it (auto mode)");
            let body: Network = serde_json::from_value(json!({"name": "default", "autoCreateSubnetworks": true})).unwrap_or_default();
            match api.call("networks.insert", || api.networks.insert().set_project(&s.project_id).set_body(body.clone()).send()).await {
                Ok(op) => {
                    api.wait(&s.project_id, None, op, "networks.insert").await?;
                }
                Err(e) if is_already_exists(&e) => {}
                Err(e) => return Err(e),
            }
            subnet = default_subnet(api, s).await?;
        }
        if subnet.is_none() {
            return Err(invalid(format!(
                "provider: the default network of project {} has no subnetwork in {}; give each node type node_config.networkInterfaces",
                s.project_id, s.region
            )));
        }
    }
    for (_, c) in node_configs(doc) {
        if !c.contains_key("networkInterfaces")
            && let Some(sub) = &subnet
        {
            let mut nic = json!({"subnetwork": sub["selfLink"]});
            if !s.use_internal_ips {
                nic["accessConfigs"] = json!([{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}]);
            }
            c.insert("networkInterfaces".into(), json!([nic]));
        }
        let tags = c.entry("tags").or_insert_with(|| json!({}));
        if let Some(t) = tags.as_object_mut() {
            let items = t.entry("items").or_insert_with(|| json!([]));
            if let Some(items) = items.as_array_mut()
                && !items.iter().any(|i| i == &json!(tag))
            {
                items.push(json!(tag));
            }
        }
    }
    let named = node_configs(doc).into_iter().find_map(|(_, c)| c.get("networkInterfaces").and_then(|n| n[0]["network"].as_str()).map(str::to_string));
    Ok(subnet.and_then(|sub| sub["network"].as_str().map(str::to_string)).or(named).unwrap_or_else(|| "global/networks/default".into()))
}

async fn default_subnet(api: &Api, s: &Settings) -> Result<Option<Value>, ProviderError> {
    let list = api.call("subnetworks.list", || api.subnetworks.list().set_project(&s.project_id).set_region(&s.region).send()).await?;
    let subnets: Vec<Value> = list.items.iter().map(|i| serde_json::to_value(i).unwrap_or_default()).collect();
    Ok(subnets.iter().find(|v| v["network"].as_str().is_some_and(|n| n.ends_with("/networks/default"))).cloned())
}

async fn firewall(api: &Api, s: &Settings, cluster: &str, network: &str, doc: &Value) -> Result<(), ProviderError> {
    let tag = network_tag(cluster);
    let network = network.rsplit_once("/global/").map_or(network.to_string(), |(_, n)| format!("global/{n}"));
    let ssh_ranges: Vec<String> = match doc.pointer("/provider/ssh_source_ranges") {
        None | Some(Value::Null) => vec!["0.0.0.0/0".into()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) && !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(v) => return Err(invalid(format!("provider.ssh_source_ranges: expected a list of CIDR ranges, found {v}"))),
    };
    let rules = [
        (
            format!("{tag}-internal"),
            json!({"network": network, "direction": "INGRESS", "sourceTags": [tag], "targetTags": [tag],
                   "allowed": [{"IPProtocol": "tcp"}, {"IPProtocol": "udp"}, {"IPProtocol": "icmp"}],
                   "description": "Traffic between the Ray cluster's nodes"}),
        ),
        (
            format!("{tag}-ssh"),
            json!({"network": network, "direction": "INGRESS", "sourceRanges": ssh_ranges, "targetTags": [tag],
                   "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "description": "SSH to the Ray cluster's nodes"}),
        ),
    ];
    for (name, mut body) in rules {
        match api.call("firewalls.get", || api.firewalls.get().set_project(&s.project_id).set_firewall(&name).send()).await {
            Ok(_) => continue,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        body["name"] = json!(name);
        let fw: Firewall = serde_json::from_value(body).map_err(|e| ProviderError::new(ErrorClass::Other, format!("firewall body: {e}")))?;
        match api.call("firewalls.insert", || api.firewalls.insert().set_project(&s.project_id).set_body(fw.clone()).send()).await {
            Ok(op) => {
                api.wait(&s.project_id, None, op, "firewalls.insert").await?;
                tracing::info!(rule = %name, "Made a firewall rule");
            }
            Err(e) if is_already_exists(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn service_account(api: &Api, s: &Settings, project: &Value, doc: &mut Value) -> Result<(), ProviderError> {
    let head = doc.get("head_node_type").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut head_has_sa = false;
    let mut worker_sas = BTreeSet::new();
    for (n, c) in node_configs(doc) {
        let emails: Vec<String> = c.get("serviceAccounts").and_then(Value::as_array).into_iter().flatten().filter_map(|a| a["email"].as_str().map(str::to_string)).collect();
        if n == head {
            head_has_sa = c.contains_key("serviceAccounts");
        } else {
            for e in emails {
                worker_sas.insert(if e == "default" { project["defaultServiceAccount"].as_str().unwrap_or_default().to_string() } else { e });
            }
        }
    }
    if head_has_sa || head.is_empty() {
        return Ok(());
    }
    let email = format!("{SERVICE_ACCOUNT_ID}@{}.iam.gserviceaccount.com", s.project_id);
    let name = format!("projects/{}/serviceAccounts/{email}", s.project_id);
    match api.call("serviceAccounts.get", || api.iam.get_service_account().set_name(&name).send()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            let sa = ServiceAccount::new().set_display_name("Ray autoscaler (ray-rs)").set_description("The head node's autoscaler: launches and deletes the cluster's VMs");
            match api
                .call("serviceAccounts.create", || {
                    api.iam.create_service_account().set_name(format!("projects/{}", s.project_id)).set_account_id(SERVICE_ACCOUNT_ID).set_service_account(sa.clone()).send()
                })
                .await
            {
                Ok(_) => tracing::info!(account = %email, "Made the head's service account"),
                Err(e) if is_already_exists(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    let member = format!("serviceAccount:{email}");
    grant(api, &format!("projects/{}", s.project_id), HEAD_ROLE, &member, true).await?;
    for w in worker_sas.iter().filter(|w| !w.is_empty() && **w != email) {
        grant(api, &format!("projects/{}/serviceAccounts/{w}", s.project_id), ACT_AS_ROLE, &member, false).await?;
    }
    for (n, c) in node_configs(doc) {
        if n == head {
            c.insert("serviceAccounts".into(), json!([{"email": email, "scopes": [SCOPE]}]));
        }
    }
    Ok(())
}

/// Adds `member` to `role` in the IAM policy of `resource` (the project through
/// Resource Manager, or a service account through IAM), read-modify-write on
/// the policy's etag.
async fn grant(api: &Api, resource: &str, role: &str, member: &str, on_project: bool) -> Result<(), ProviderError> {
    for attempt in 1..=5 {
        let policy = if on_project {
            api.call("projects.getIamPolicy", || api.crm.get_iam_policy().set_resource(resource).send()).await?
        } else {
            api.call("serviceAccounts.getIamPolicy", || api.iam.get_iam_policy().set_resource(resource).send()).await?
        };
        let mut p = serde_json::to_value(&policy).unwrap_or_default();
        let bindings = p.as_object_mut().map(|o| o.entry("bindings").or_insert_with(|| json!([])));
        let Some(Value::Array(bindings)) = bindings else { return Err(ProviderError::new(ErrorClass::Other, "IAM policy without bindings")) };
        if bindings.iter().any(|b| b["role"] == role && b["members"].as_array().is_some_and(|m| m.iter().any(|x| x == member))) {
            return Ok(());
        }
        match bindings.iter_mut().find(|b| b["role"] == role) {
            Some(b) => {
                if let Some(m) = b["members"].as_array_mut() {
                    m.push(json!(member));
                }
            }
            None => bindings.push(json!({"role": role, "members": [member]})),
        }
        let policy: google_cloud_iam_v1::model::Policy = serde_json::from_value(p).map_err(|e| ProviderError::new(ErrorClass::Other, format!("IAM policy: {e}")))?;
        let r = if on_project {
            api.call("projects.setIamPolicy", || api.crm.set_iam_policy().set_resource(resource).set_policy(policy.clone()).send()).await
        } else {
            api.call("serviceAccounts.setIamPolicy", || api.iam.set_iam_policy().set_resource(resource).set_policy(policy.clone()).send()).await
        };
        match r {
            Ok(_) => {
                tracing::info!(%role, %member, %resource, "Granted a role");
                return Ok(());
            }
            Err(e) if e.message.contains("(HTTP 409") && attempt < 5 => tracing::debug!(%resource, attempt, "the IAM policy changed meanwhile; reading it again"),
            Err(e) => return Err(e),
        }
    }
    Err(ProviderError::new(ErrorClass::Transient, format!("the IAM policy of {resource} kept changing")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_tags_are_legal_names() {
        assert_eq!(network_tag("My_Cluster"), "ray-my-cluster");
        assert!(network_tag(&"a".repeat(100)).len() <= 44);
    }
}
