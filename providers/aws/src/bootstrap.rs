//! Ray's AWS bootstrap, for a config that leaves things out: an IAM instance
//! profile for the head, a key pair (its private key in `~/.ssh`), subnets from
//! the account's VPC (in `availability_zone` order), a security group for the
//! cluster (traffic between its nodes, and SSH), and an image. Everything is found
//! before it is made, so a second bootstrap makes nothing.
//!
//! The input and output are the cluster config as JSON: `provider`, `auth`,
//! `head_node_type` and each type's `node_config` are read and filled in.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, PrefixListId, Subnet, UserIdGroupPair};
use ray_providers::{ProviderError, TAG_CLUSTER_NAME};
use serde_json::{Map, Value, json};

use crate::api::Api;
use ray_providers::helpers::{invalid, node_configs};
use crate::settings::Settings;
use crate::{filter, iam};

/// Most key pairs tried (`ray-autoscaler_<i>_<region>`), as Ray's.
const MAX_KEYS: usize = 600;
/// Images used when a node type names none: the newest of these (Amazon's
/// Deep Learning base image, as Ray's default is a Deep Learning AMI).
const DEFAULT_IMAGE_NAME: &str = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)*";

/// Fills in what `doc` leaves out; see the module's docs.
pub async fn bootstrap(api: &Api, s: &Settings, cluster_name: &str, mut doc: Value) -> Result<Value, ProviderError> {
    let head = doc.get("head_node_type").and_then(Value::as_str).unwrap_or_default().to_string();
    // The head's instance profile.
    let head_has_profile = node_configs(&mut doc).iter().any(|(n, c)| *n == head && c.contains_key("IamInstanceProfile"));
    if !head_has_profile && !head.is_empty() {
        let arn = iam::ensure_profile(api).await?;
        for (n, c) in node_configs(&mut doc) {
            if n == head {
                c.insert("IamInstanceProfile".into(), json!({"Arn": arn}));
            }
        }
        tracing::info!(profile = iam::NAME, "IAM profile of the head node [default]");
    }
    key_pair(api, s, &mut doc).await?;
    subnets(api, s, &mut doc).await?;
    security_group(api, s, cluster_name, &mut doc).await?;
    images(api, &mut doc).await?;
    Ok(doc)
}

async fn key_pair(api: &Api, s: &Settings, doc: &mut Value) -> Result<(), ProviderError> {
    let has_key = doc.pointer("/auth/ssh_private_key").and_then(Value::as_str).is_some_and(|k| !k.is_empty());
    if has_key {
        for (n, c) in node_configs(doc) {
            if !c.contains_key("KeyName") && !c.contains_key("UserData") && !c.contains_key("LaunchTemplate") {
                return Err(invalid(format!(
                    "available_node_types[{n:?}].node_config.KeyName: required when auth.ssh_private_key is set (the EC2 key pair of that private key)"
                )));
            }
        }
        return Ok(());
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).ok_or_else(|| invalid("HOME is not set: no ~/.ssh for the cluster's key pair"))?;
    let dir = home.join(".ssh");
    std::fs::create_dir_all(&dir).map_err(|e| invalid(format!("cannot create {}: {e}", dir.display())))?;
    let base = doc.pointer("/provider/key_pair/key_name").and_then(Value::as_str).map(str::to_string);
    for i in 0..MAX_KEYS {
        let name = match (&base, i) {
            (Some(b), 0) => b.clone(),
            (Some(b), i) => format!("{b}_key-{i}"),
            (None, 0) => format!("ray-autoscaler_{}", s.region),
            (None, i) => format!("ray-autoscaler_{i}_{}", s.region),
        };
        let path = dir.join(format!("{name}.pem"));
        let remote = match api.run("DescribeKeyPairs", || api.ec2.describe_key_pairs().key_names(name.clone()).send()).await {
            Ok(out) => !out.key_pairs().is_empty(),
            Err(e) if e.message.contains("InvalidKeyPair.NotFound") => false,
            Err(e) => return Err(e),
        };
        let local = path.exists();
        if !remote && !local {
            tracing::info!(key_pair = %name, path = %path.display(), "Creating a key pair for the cluster");
            let out = api.run("CreateKeyPair", || api.ec2.create_key_pair().key_name(name.clone()).send()).await?;
            let material = out.key_material().unwrap_or_default();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| invalid(format!("cannot write {}: {e}", path.display())))?;
            f.write_all(material.as_bytes()).map_err(|e| invalid(format!("cannot write {}: {e}", path.display())))?;
        } else if !(remote && local) {
            continue;
        }
        let obj = doc.as_object_mut().ok_or_else(|| invalid("the config is not a mapping"))?;
        let auth = obj.entry("auth").or_insert_with(|| json!({}));
        if let Some(a) = auth.as_object_mut() {
            a.insert("ssh_private_key".into(), json!(path.display().to_string()));
        }
        for (_, c) in node_configs(doc) {
            c.entry("KeyName").or_insert_with(|| json!(name));
        }
        tracing::info!(key_pair = %name, "EC2 key pair (all node types) [default]");
        return Ok(());
    }
    Err(invalid(format!("no free key pair name among {MAX_KEYS} tried (ray-autoscaler_<i>_{}); set auth.ssh_private_key and KeyName", s.region)))
}

fn takes_subnets(c: &Map<String, Value>) -> bool {
    !(c.contains_key("SubnetIds") || c.contains_key("SubnetId") || c.contains_key("NetworkInterfaces") || c.contains_key("LaunchTemplate"))
}

async fn subnets(api: &Api, s: &Settings, doc: &mut Value) -> Result<(), ProviderError> {
    if !node_configs(doc).iter().any(|(_, c)| takes_subnets(c)) {
        return Ok(());
    }
    let groups: BTreeSet<String> = node_configs(doc)
        .iter()
        .flat_map(|(_, c)| c.get("SecurityGroupIds").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|g| g.as_str().map(str::to_string))
        .collect();
    let mut vpc: Option<String> = None;
    if !groups.is_empty() {
        let out = api.run("DescribeSecurityGroups", || api.ec2.describe_security_groups().set_group_ids(Some(groups.iter().cloned().collect())).send()).await?;
        let vpcs: BTreeSet<&str> = out.security_groups().iter().filter_map(|g| g.vpc_id()).collect();
        if vpcs.len() > 1 {
            return Err(invalid(format!("node_config.SecurityGroupIds: the groups are in more than one VPC ({vpcs:?})")));
        }
        vpc = vpcs.into_iter().next().map(str::to_string);
    }
    let mut all: Vec<Subnet> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = api.ec2.describe_subnets().filters(filter("state", ["available"]));
        if let Some(v) = &vpc {
            req = req.filters(filter("vpc-id", [v.as_str()]));
        }
        let page = api.run("DescribeSubnets", || req.clone().set_next_token(token.clone()).send()).await?;
        all.extend(page.subnets().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    let mut usable: Vec<Subnet> = all.into_iter().filter(|n| s.use_internal_ips || n.map_public_ip_on_launch() == Some(true)).collect();
    let zone = |n: &Subnet| n.availability_zone().unwrap_or_default().to_string();
    if s.availability_zones.is_empty() {
        usable.sort_by_key(|n| std::cmp::Reverse(zone(n)));
    } else {
        usable.retain(|n| s.availability_zones.contains(&zone(n)));
        usable.sort_by_key(|n| s.availability_zones.iter().position(|z| *z == zone(n)));
    }
    if let Some(first_vpc) = usable.first().and_then(|n| n.vpc_id()).map(str::to_string) {
        usable.retain(|n| n.vpc_id() == Some(first_vpc.as_str()));
    }
    let ids: Vec<String> = usable.iter().filter_map(|n| n.subnet_id()).map(str::to_string).collect();
    if ids.is_empty() {
        return Err(invalid(format!(
            "no usable subnets{}: a subnet must be available and map public IPs on launch unless provider.use_internal_ips is true{}",
            vpc.map(|v| format!(" in VPC {v}")).unwrap_or_default(),
            if s.availability_zones.is_empty() { String::new() } else { format!(", in provider.availability_zone ({})", s.availability_zones.join(", ")) }
        )));
    }
    for (_, c) in node_configs(doc) {
        if takes_subnets(c) {
            c.insert("SubnetIds".into(), json!(ids));
        }
    }
    tracing::info!(subnets = ?ids, "VPC subnets (node types without their own) [default]");
    Ok(())
}

fn first_subnet(c: &Map<String, Value>) -> Option<String> {
    c.get("SubnetIds").and_then(|v| v.get(0)).or_else(|| c.get("SubnetId")).and_then(Value::as_str).map(str::to_string)
}

async fn security_group(api: &Api, s: &Settings, cluster_name: &str, doc: &mut Value) -> Result<(), ProviderError> {
    let wants = |c: &Map<String, Value>| !(c.contains_key("SecurityGroupIds") || c.contains_key("NetworkInterfaces") || c.contains_key("LaunchTemplate"));
    // One group per VPC the node types launch into (the VPC of each one's subnets).
    let subnets: BTreeSet<String> = node_configs(doc).iter().filter(|(_, c)| wants(c)).filter_map(|(_, c)| first_subnet(c)).collect();
    if subnets.is_empty() {
        return Ok(());
    }
    let out = api.run("DescribeSubnets", || api.ec2.describe_subnets().set_subnet_ids(Some(subnets.iter().cloned().collect())).send()).await?;
    let vpc_of: std::collections::BTreeMap<String, String> = out
        .subnets()
        .iter()
        .filter_map(|n| Some((n.subnet_id()?.to_string(), n.vpc_id()?.to_string())))
        .collect();
    let name = s
        .security_group
        .as_ref()
        .and_then(|g| g.get("GroupName"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("ray-autoscaler-{cluster_name}"));
    let mut group_of: std::collections::BTreeMap<String, String> = Default::default();
    for vpc in vpc_of.values().collect::<BTreeSet<_>>() {
        group_of.insert(vpc.clone(), group_in(api, s, cluster_name, &name, vpc).await?);
    }
    for (_, c) in node_configs(doc) {
        if wants(c)
            && let Some(g) = first_subnet(c).and_then(|n| vpc_of.get(&n)).and_then(|v| group_of.get(v))
        {
            c.insert("SecurityGroupIds".into(), json!([g]));
        }
    }
    tracing::info!(groups = ?group_of, "EC2 security group (node types without their own) [default]");
    Ok(())
}

/// The cluster's group `name` in `vpc`, made (with its rules) if missing.
async fn group_in(api: &Api, s: &Settings, cluster_name: &str, name: &str, vpc: &str) -> Result<String, ProviderError> {
    let found = api
        .run("DescribeSecurityGroups", || {
            api.ec2.describe_security_groups().filters(filter("vpc-id", [vpc])).filters(filter("group-name", [name])).send()
        })
        .await?;
    let (id, has_rules) = match found.security_groups().first() {
        Some(g) => (g.group_id().unwrap_or_default().to_string(), !g.ip_permissions().is_empty()),
        None => {
            let tags = crate::node_config::tags([("ray-autoscaler".to_string(), "true".to_string()), (TAG_CLUSTER_NAME.to_string(), cluster_name.to_string())]);
            let spec = aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                .set_tags(Some(tags))
                .build();
            let out = api
                .run("CreateSecurityGroup", || {
                    api.ec2
                        .create_security_group()
                        .group_name(name)
                        .description("Ray cluster nodes: traffic between them, and SSH")
                        .vpc_id(vpc)
                        .tag_specifications(spec.clone())
                        .send()
                })
                .await?;
            let id = out.group_id().unwrap_or_default().to_string();
            tracing::info!(group = %name, id = %id, vpc = %vpc, "Created a security group for the cluster");
            (id, false)
        }
    };
    if !has_rules {
        let mut rules = vec![
            IpPermission::builder().ip_protocol("-1").user_id_group_pairs(UserIdGroupPair::builder().group_id(id.clone()).build()).build(),
            IpPermission::builder().ip_protocol("tcp").from_port(22).to_port(22).ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build()).build(),
        ];
        if let Some(extra) = s.security_group.as_ref().and_then(|g| g.get("IpPermissions")) {
            rules.extend(ip_permissions(extra)?);
        }
        api.run("AuthorizeSecurityGroupIngress", || {
            api.ec2.authorize_security_group_ingress().group_id(id.clone()).set_ip_permissions(Some(rules.clone())).send()
        })
        .await?;
    }
    Ok(id)
}

/// `provider.security_group.IpPermissions`, in boto3's shape.
pub fn ip_permissions(v: &Value) -> Result<Vec<IpPermission>, ProviderError> {
    let at = "provider.security_group.IpPermissions";
    let list = v.as_array().ok_or_else(|| invalid(format!("{at}: expected a list")))?;
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let p = p.as_object().ok_or_else(|| invalid(format!("{at}[{i}]: expected a mapping")))?;
        let int = |k: &str| p.get(k).and_then(Value::as_i64).map(|n| n as i32);
        let items = |k: &str, f: &str| -> Vec<String> {
            p.get(k).and_then(Value::as_array).into_iter().flatten().filter_map(|x| x.get(f).and_then(Value::as_str)).map(str::to_string).collect()
        };
        let proto = p.get("IpProtocol").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}[{i}].IpProtocol: required")))?;
        out.push(
            IpPermission::builder()
                .ip_protocol(proto)
                .set_from_port(int("FromPort"))
                .set_to_port(int("ToPort"))
                .set_ip_ranges(Some(items("IpRanges", "CidrIp").into_iter().map(|c| IpRange::builder().cidr_ip(c).build()).collect()))
                .set_ipv6_ranges(Some(items("Ipv6Ranges", "CidrIpv6").into_iter().map(|c| Ipv6Range::builder().cidr_ipv6(c).build()).collect()))
                .set_prefix_list_ids(Some(items("PrefixListIds", "PrefixListId").into_iter().map(|c| PrefixListId::builder().prefix_list_id(c).build()).collect()))
                .set_user_id_group_pairs(Some(items("UserIdGroupPairs", "GroupId").into_iter().map(|g| UserIdGroupPair::builder().group_id(g).build()).collect()))
                .build(),
        );
    }
    Ok(out)
}

async fn images(api: &Api, doc: &mut Value) -> Result<(), ProviderError> {
    let needs = |c: &Map<String, Value>| {
        !c.contains_key("LaunchTemplate")
            && c.get("ImageId").and_then(Value::as_str).is_none_or(|i| i.is_empty() || i.eq_ignore_ascii_case("latest_dlami"))
    };
    if !node_configs(doc).iter().any(|(_, c)| needs(c)) {
        return Ok(());
    }
    let out = api
        .run("DescribeImages", || {
            api.ec2.describe_images().owners("amazon").filters(filter("name", [DEFAULT_IMAGE_NAME])).filters(filter("state", ["available"])).send()
        })
        .await?;
    let newest = out.images().iter().max_by_key(|i| i.creation_date().unwrap_or_default().to_string()).and_then(|i| i.image_id());
    let Some(image) = newest.map(str::to_string) else {
        let n = node_configs(doc).into_iter().find(|(_, c)| needs(c)).map(|(n, _)| n).unwrap_or_default();
        return Err(invalid(format!(
            "available_node_types[{n:?}].node_config.ImageId: not set, and no image named {DEFAULT_IMAGE_NAME:?} owned by amazon is available in this region; set ImageId"
        )));
    };
    for (_, c) in node_configs(doc) {
        if needs(c) {
            c.insert("ImageId".into(), json!(image));
        }
    }
    tracing::info!(image = %image, "EC2 image (node types without their own) [default]");
    Ok(())
}
