//! A node type's `node_config`, as Ray hands it to boto3's `create_instances`
//! (PascalCase keys of RunInstances, plus Ray's `SubnetIds`), checked and turned
//! into SDK values once. A key this provider does not know is an error naming it
//! (Ray would pass it to boto3, which refuses it only at launch time).

use aws_sdk_ec2::types::{
    BlockDeviceMapping, CapacityReservationPreference, CapacityReservationSpecification, CapacityReservationTarget, InstanceMetadataTagsState, CpuOptionsRequest, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, LaunchTemplateSpecification, MarketType, Placement, SpotInstanceType, SpotMarketOptions,
    Tag, TagSpecification, Tenancy, VolumeType,
};
use ray_providers::{ErrorClass, ProviderError};
use serde_json::{Map, Value};

/// What one launch of a node type asks EC2 for.
#[derive(Debug, Clone, Default)]
pub struct LaunchSpec {
    /// `InstanceType`.
    pub instance_type: Option<String>,
    /// `ImageId`.
    pub image_id: Option<String>,
    /// `KeyName`.
    pub key_name: Option<String>,
    /// `SubnetIds` (or `SubnetId`): tried in order when one has no capacity.
    pub subnet_ids: Vec<String>,
    /// `SecurityGroupIds`.
    pub security_group_ids: Vec<String>,
    /// `IamInstanceProfile`.
    pub iam_profile: Option<IamInstanceProfileSpecification>,
    /// `BlockDeviceMappings`.
    pub block_devices: Vec<BlockDeviceMapping>,
    /// `InstanceMarketOptions` (spot).
    pub market: Option<InstanceMarketOptionsRequest>,
    /// Tags from `TagSpecifications`, by resource type.
    pub tag_specs: Vec<(String, Vec<(String, String)>)>,
    /// `UserData`, as written (encoded at launch).
    pub user_data: Option<String>,
    /// `Placement`.
    pub placement: Option<Placement>,
    /// `NetworkInterfaces`.
    pub network_interfaces: Vec<InstanceNetworkInterfaceSpecification>,
    /// `LaunchTemplate`.
    pub launch_template: Option<LaunchTemplateSpecification>,
    /// `MetadataOptions`.
    pub metadata_options: Option<InstanceMetadataOptionsRequest>,
    /// `EbsOptimized`.
    pub ebs_optimized: Option<bool>,
    /// `Monitoring.Enabled`.
    pub monitoring: Option<bool>,
    /// `CpuOptions`.
    pub cpu_options: Option<CpuOptionsRequest>,
    /// `CreditSpecification.CpuCredits` (burstable types).
    pub cpu_credits: Option<String>,
    /// `CapacityReservationSpecification`.
    pub capacity_reservation: Option<CapacityReservationSpecification>,
    /// `InstanceInitiatedShutdownBehavior`.
    pub shutdown_behavior: Option<String>,
    /// `DisableApiTermination`.
    pub disable_api_termination: Option<bool>,
}

impl LaunchSpec {
    /// True when the type asks for spot instances.
    pub fn is_spot(&self) -> bool {
        self.market.as_ref().and_then(|m| m.market_type()).is_some_and(|t| *t == MarketType::Spot)
    }
}

/// The `node_config` keys understood here.
pub const KEYS: &[&str] = &[
    "InstanceType",
    "ImageId",
    "KeyName",
    "SubnetIds",
    "SubnetId",
    "SecurityGroupIds",
    "IamInstanceProfile",
    "BlockDeviceMappings",
    "InstanceMarketOptions",
    "TagSpecifications",
    "UserData",
    "Placement",
    "NetworkInterfaces",
    "LaunchTemplate",
    "MetadataOptions",
    "EbsOptimized",
    "Monitoring",
    "CpuOptions",
    "CreditSpecification",
    "CapacityReservationSpecification",
    "InstanceInitiatedShutdownBehavior",
    "DisableApiTermination",
];

struct Reader<'a> {
    node_type: &'a str,
}

impl Reader<'_> {
    fn err(&self, path: &str, what: impl std::fmt::Display) -> ProviderError {
        ProviderError::new(ErrorClass::InvalidConfig, format!("available_node_types[{:?}].node_config.{path}: {what}", self.node_type))
    }

    fn obj<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Map<String, Value>, ProviderError> {
        v.as_object().ok_or_else(|| self.err(path, format!("expected a mapping, found {v}")))
    }

    fn known(&self, m: &Map<String, Value>, path: &str, keys: &[&str]) -> Result<(), ProviderError> {
        match m.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => {
                let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                Err(self.err(&at, format!("not supported here; expected one of: {}", keys.join(", "))))
            }
            None => Ok(()),
        }
    }

    fn string(&self, m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, ProviderError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(&join(path, key), format!("expected a string, found {v}"))),
        }
    }

    fn int(&self, m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<i32>, ProviderError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.err(&join(path, key), format!("expected an integer, found {v}"))),
        }
    }

    fn boolean(&self, m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<bool>, ProviderError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(&join(path, key), format!("expected true or false, found {v}"))),
        }
    }

    fn strings(&self, m: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<String>, ProviderError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| self.err(&format!("{}[{i}]", join(path, key)), "expected a string")))
                .collect(),
            Some(v) => Err(self.err(&join(path, key), format!("expected a list of strings, found {v}"))),
        }
    }

    fn list<'v>(&self, m: &'v Map<String, Value>, key: &str) -> Result<&'v [Value], ProviderError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(self.err(key, format!("expected a list, found {v}"))),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Checks `node_config` of `node_type` and turns it into a [`LaunchSpec`].
pub fn parse(node_type: &str, node_config: &Value) -> Result<LaunchSpec, ProviderError> {
    let r = Reader { node_type };
    let empty = Map::new();
    let m = match node_config {
        Value::Null => &empty,
        v => r.obj(v, "")?,
    };
    r.known(m, "", KEYS)?;
    let mut s = LaunchSpec {
        instance_type: r.string(m, "InstanceType", "")?,
        image_id: r.string(m, "ImageId", "")?,
        key_name: r.string(m, "KeyName", "")?,
        subnet_ids: r.strings(m, "SubnetIds", "")?,
        security_group_ids: r.strings(m, "SecurityGroupIds", "")?,
        user_data: r.string(m, "UserData", "")?,
        ebs_optimized: r.boolean(m, "EbsOptimized", "")?,
        ..LaunchSpec::default()
    };
    if let Some(one) = r.string(m, "SubnetId", "")? {
        if !s.subnet_ids.is_empty() {
            return Err(r.err("SubnetId", "give SubnetIds or SubnetId, not both"));
        }
        s.subnet_ids.push(one);
    }
    if let Some(v) = m.get("IamInstanceProfile") {
        let p = r.obj(v, "IamInstanceProfile")?;
        r.known(p, "IamInstanceProfile", &["Arn", "Name"])?;
        let b = IamInstanceProfileSpecification::builder()
            .set_arn(r.string(p, "Arn", "IamInstanceProfile")?)
            .set_name(r.string(p, "Name", "IamInstanceProfile")?);
        s.iam_profile = Some(b.build());
    }
    for (i, v) in r.list(m, "BlockDeviceMappings")?.iter().enumerate() {
        let path = format!("BlockDeviceMappings[{i}]");
        let d = r.obj(v, &path)?;
        r.known(d, &path, &["DeviceName", "VirtualName", "NoDevice", "Ebs"])?;
        let mut b = BlockDeviceMapping::builder()
            .set_device_name(r.string(d, "DeviceName", &path)?)
            .set_virtual_name(r.string(d, "VirtualName", &path)?)
            .set_no_device(r.string(d, "NoDevice", &path)?);
        if let Some(e) = d.get("Ebs") {
            let ep = format!("{path}.Ebs");
            let e = r.obj(e, &ep)?;
            let keys = ["VolumeSize", "VolumeType", "DeleteOnTermination", "Iops", "Throughput", "Encrypted", "KmsKeyId", "SnapshotId"];
            r.known(e, &ep, &keys)?;
            let vt = r.string(e, "VolumeType", &ep)?;
            if let Some(t) = &vt
                && !VolumeType::values().contains(&t.as_str())
            {
                return Err(r.err(&format!("{ep}.VolumeType"), format!("{t:?} is not a volume type; expected one of: {}", VolumeType::values().join(", "))));
            }
            b = b.ebs(
                EbsBlockDevice::builder()
                    .set_volume_size(r.int(e, "VolumeSize", &ep)?)
                    .set_volume_type(vt.map(|t| VolumeType::from(t.as_str())))
                    .set_delete_on_termination(r.boolean(e, "DeleteOnTermination", &ep)?)
                    .set_iops(r.int(e, "Iops", &ep)?)
                    .set_throughput(r.int(e, "Throughput", &ep)?)
                    .set_encrypted(r.boolean(e, "Encrypted", &ep)?)
                    .set_kms_key_id(r.string(e, "KmsKeyId", &ep)?)
                    .set_snapshot_id(r.string(e, "SnapshotId", &ep)?)
                    .build(),
            );
        }
        s.block_devices.push(b.build());
    }
    if let Some(v) = m.get("InstanceMarketOptions") {
        s.market = Some(market(&r, v)?);
    }
    for (i, v) in r.list(m, "TagSpecifications")?.iter().enumerate() {
        let path = format!("TagSpecifications[{i}]");
        let t = r.obj(v, &path)?;
        r.known(t, &path, &["ResourceType", "Tags"])?;
        let rt = r.string(t, "ResourceType", &path)?.ok_or_else(|| r.err(&format!("{path}.ResourceType"), "required (e.g. instance)"))?;
        let mut tags = Vec::new();
        for (j, tv) in r.list(t, "Tags")?.iter().enumerate() {
            let tp = format!("{path}.Tags[{j}]");
            let tm = r.obj(tv, &tp)?;
            r.known(tm, &tp, &["Key", "Value"])?;
            let k = r.string(tm, "Key", &tp)?.ok_or_else(|| r.err(&format!("{tp}.Key"), "required"))?;
            tags.push((k, r.string(tm, "Value", &tp)?.unwrap_or_default()));
        }
        s.tag_specs.push((rt, tags));
    }
    if let Some(v) = m.get("Placement") {
        let p = r.obj(v, "Placement")?;
        r.known(p, "Placement", &["AvailabilityZone", "GroupName", "Tenancy", "HostId", "PartitionNumber", "Affinity"])?;
        let tenancy = r.string(p, "Tenancy", "Placement")?;
        s.placement = Some(
            Placement::builder()
                .set_availability_zone(r.string(p, "AvailabilityZone", "Placement")?)
                .set_group_name(r.string(p, "GroupName", "Placement")?)
                .set_tenancy(tenancy.map(|t| Tenancy::from(t.as_str())))
                .set_host_id(r.string(p, "HostId", "Placement")?)
                .set_partition_number(r.int(p, "PartitionNumber", "Placement")?)
                .set_affinity(r.string(p, "Affinity", "Placement")?)
                .build(),
        );
    }
    for (i, v) in r.list(m, "NetworkInterfaces")?.iter().enumerate() {
        let path = format!("NetworkInterfaces[{i}]");
        let n = r.obj(v, &path)?;
        let keys = [
            "DeviceIndex",
            "SubnetId",
            "Groups",
            "AssociatePublicIpAddress",
            "DeleteOnTermination",
            "Description",
            "NetworkInterfaceId",
            "PrivateIpAddress",
            "InterfaceType",
            "NetworkCardIndex",
        ];
        r.known(n, &path, &keys)?;
        s.network_interfaces.push(
            InstanceNetworkInterfaceSpecification::builder()
                .set_device_index(r.int(n, "DeviceIndex", &path)?)
                .set_subnet_id(r.string(n, "SubnetId", &path)?)
                .set_groups(Some(r.strings(n, "Groups", &path)?).filter(|g| !g.is_empty()))
                .set_associate_public_ip_address(r.boolean(n, "AssociatePublicIpAddress", &path)?)
                .set_delete_on_termination(r.boolean(n, "DeleteOnTermination", &path)?)
                .set_description(r.string(n, "Description", &path)?)
                .set_network_interface_id(r.string(n, "NetworkInterfaceId", &path)?)
                .set_private_ip_address(r.string(n, "PrivateIpAddress", &path)?)
                .set_interface_type(r.string(n, "InterfaceType", &path)?)
                .set_network_card_index(r.int(n, "NetworkCardIndex", &path)?)
                .build(),
        );
    }
    if !s.network_interfaces.is_empty() && (!s.subnet_ids.is_empty() || !s.security_group_ids.is_empty()) {
        return Err(r.err("NetworkInterfaces", "give subnets and security groups inside NetworkInterfaces, not also as SubnetIds / SecurityGroupIds (EC2 refuses both)"));
    }
    if let Some(v) = m.get("LaunchTemplate") {
        let l = r.obj(v, "LaunchTemplate")?;
        r.known(l, "LaunchTemplate", &["LaunchTemplateId", "LaunchTemplateName", "Version"])?;
        let version = match l.get("Version") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => r.string(l, "Version", "LaunchTemplate")?,
        };
        s.launch_template = Some(
            LaunchTemplateSpecification::builder()
                .set_launch_template_id(r.string(l, "LaunchTemplateId", "LaunchTemplate")?)
                .set_launch_template_name(r.string(l, "LaunchTemplateName", "LaunchTemplate")?)
                .set_version(version)
                .build(),
        );
    }
    if let Some(v) = m.get("MetadataOptions") {
        let o = r.obj(v, "MetadataOptions")?;
        r.known(o, "MetadataOptions", &["HttpTokens", "HttpEndpoint", "HttpPutResponseHopLimit", "InstanceMetadataTags"])?;
        s.metadata_options = Some(
            InstanceMetadataOptionsRequest::builder()
                .set_http_tokens(r.string(o, "HttpTokens", "MetadataOptions")?.map(|t| HttpTokensState::from(t.as_str())))
                .set_http_endpoint(r.string(o, "HttpEndpoint", "MetadataOptions")?.map(|t| InstanceMetadataEndpointState::from(t.as_str())))
                .set_http_put_response_hop_limit(r.int(o, "HttpPutResponseHopLimit", "MetadataOptions")?)
                .set_instance_metadata_tags(r.string(o, "InstanceMetadataTags", "MetadataOptions")?.map(|t| InstanceMetadataTagsState::from(t.as_str())))
                .build(),
        );
    }
    if let Some(v) = m.get("Monitoring") {
        let o = r.obj(v, "Monitoring")?;
        r.known(o, "Monitoring", &["Enabled"])?;
        s.monitoring = r.boolean(o, "Enabled", "Monitoring")?;
    }
    if let Some(v) = m.get("CpuOptions") {
        let o = r.obj(v, "CpuOptions")?;
        r.known(o, "CpuOptions", &["CoreCount", "ThreadsPerCore"])?;
        s.cpu_options = Some(
            CpuOptionsRequest::builder()
                .set_core_count(r.int(o, "CoreCount", "CpuOptions")?)
                .set_threads_per_core(r.int(o, "ThreadsPerCore", "CpuOptions")?)
                .build(),
        );
    }
    if let Some(v) = m.get("CreditSpecification") {
        let o = r.obj(v, "CreditSpecification")?;
        r.known(o, "CreditSpecification", &["CpuCredits"])?;
        s.cpu_credits = r.string(o, "CpuCredits", "CreditSpecification")?;
    }
    if let Some(v) = m.get("CapacityReservationSpecification") {
        let path = "CapacityReservationSpecification";
        let o = r.obj(v, path)?;
        r.known(o, path, &["CapacityReservationPreference", "CapacityReservationTarget"])?;
        let target = match o.get("CapacityReservationTarget") {
            Some(t) => {
                let tp = format!("{path}.CapacityReservationTarget");
                let t = r.obj(t, &tp)?;
                r.known(t, &tp, &["CapacityReservationId", "CapacityReservationResourceGroupArn"])?;
                Some(
                    CapacityReservationTarget::builder()
                        .set_capacity_reservation_id(r.string(t, "CapacityReservationId", &tp)?)
                        .set_capacity_reservation_resource_group_arn(r.string(t, "CapacityReservationResourceGroupArn", &tp)?)
                        .build(),
                )
            }
            None => None,
        };
        s.capacity_reservation = Some(
            CapacityReservationSpecification::builder()
                .set_capacity_reservation_preference(
                    r.string(o, "CapacityReservationPreference", path)?.map(|p| CapacityReservationPreference::from(p.as_str())),
                )
                .set_capacity_reservation_target(target)
                .build(),
        );
    }
    s.shutdown_behavior = r.string(m, "InstanceInitiatedShutdownBehavior", "")?;
    s.disable_api_termination = r.boolean(m, "DisableApiTermination", "")?;
    Ok(s)
}

fn market(r: &Reader<'_>, v: &Value) -> Result<InstanceMarketOptionsRequest, ProviderError> {
    let o = r.obj(v, "InstanceMarketOptions")?;
    r.known(o, "InstanceMarketOptions", &["MarketType", "SpotOptions"])?;
    let mt = r.string(o, "MarketType", "InstanceMarketOptions")?.unwrap_or_else(|| "spot".into());
    if !MarketType::values().contains(&mt.as_str()) {
        return Err(r.err("InstanceMarketOptions.MarketType", format!("{mt:?}: expected one of {}", MarketType::values().join(", "))));
    }
    let mut b = InstanceMarketOptionsRequest::builder().market_type(MarketType::from(mt.as_str()));
    if let Some(sv) = o.get("SpotOptions") {
        let path = "InstanceMarketOptions.SpotOptions";
        let so = r.obj(sv, path)?;
        r.known(so, path, &["MaxPrice", "SpotInstanceType", "InstanceInterruptionBehavior", "BlockDurationMinutes"])?;
        let max_price = match so.get("MaxPrice") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => r.string(so, "MaxPrice", path)?,
        };
        b = b.spot_options(
            SpotMarketOptions::builder()
                .set_max_price(max_price)
                .set_spot_instance_type(r.string(so, "SpotInstanceType", path)?.map(|t| SpotInstanceType::from(t.as_str())))
                .set_instance_interruption_behavior(
                    r.string(so, "InstanceInterruptionBehavior", path)?.map(|t| InstanceInterruptionBehavior::from(t.as_str())),
                )
                .set_block_duration_minutes(r.int(so, "BlockDurationMinutes", path)?)
                .build(),
        );
    }
    Ok(b.build())
}

/// EC2 tags of `(key, value)` pairs.
pub fn tags(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<Tag> {
    pairs.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

/// The tag specifications of a launch: the user's, with `ours` added to (and
/// overriding keys of) the instance's tags.
pub fn tag_specifications(spec: &LaunchSpec, ours: &[(String, String)]) -> Vec<TagSpecification> {
    use aws_sdk_ec2::types::ResourceType;
    let mut out = Vec::new();
    let mut instance: Vec<(String, String)> = Vec::new();
    for (rt, t) in &spec.tag_specs {
        if rt == "instance" {
            instance.extend(t.iter().cloned());
        } else {
            out.push(TagSpecification::builder().resource_type(ResourceType::from(rt.as_str())).set_tags(Some(tags(t.iter().cloned()))).build());
        }
    }
    instance.retain(|(k, _)| !ours.iter().any(|(o, _)| o == k));
    instance.extend(ours.iter().cloned());
    out.push(TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tags(instance))).build());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ray_example_node_config_parses() {
        let s = parse(
            "ray.worker.default",
            &json!({
                "InstanceType": "m5.large", "ImageId": "ami-0123", "KeyName": "k",
                "SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"],
                "IamInstanceProfile": {"Arn": "arn:aws:iam::1:instance-profile/p"},
                "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 140, "VolumeType": "gp3"}}],
                "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {"MaxPrice": "1.0"}},
                "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "ml"}, {"Key": "ray-node-type", "Value": "x"}]}],
                "Placement": {"AvailabilityZone": "us-west-2a"},
                "MetadataOptions": {"HttpTokens": "required"},
            }),
        )
        .unwrap();
        assert_eq!(s.subnet_ids, ["subnet-a", "subnet-b"]);
        assert!(s.is_spot());
        let specs = tag_specifications(&s, &[("ray-node-type".into(), "worker".into())]);
        let inst = specs.iter().find(|t| t.resource_type().map(|r| r.as_str()) == Some("instance")).unwrap();
        let kv: Vec<(&str, &str)> = inst.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
        assert_eq!(kv, [("team", "ml"), ("ray-node-type", "worker")], "ours win over the user's of the same key");
    }

    #[test]
    fn unknown_or_mistyped_keys_name_the_path() {
        let e = parse("w", &json!({"InstanceType": "m5.large", "InstanceTyp": "x"})).unwrap_err();
        assert!(e.message.contains("available_node_types[\"w\"].node_config.InstanceTyp: not supported"), "{e}");
        let e = parse("w", &json!({"BlockDeviceMappings": [{"Ebs": {"VolumeSize": "big"}}]})).unwrap_err();
        assert!(e.message.contains("BlockDeviceMappings[0].Ebs.VolumeSize: expected an integer"), "{e}");
        let e = parse("w", &json!({"BlockDeviceMappings": [{"Ebs": {"VolumeType": "ssd"}}]})).unwrap_err();
        assert!(e.message.contains("VolumeType") && e.message.contains("gp3"), "{e}");
        let e = parse("w", &json!({"SubnetIds": ["a"], "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": "b"}]})).unwrap_err();
        assert!(e.message.contains("NetworkInterfaces"), "{e}");
        assert_eq!(e.class, ErrorClass::InvalidConfig);
    }
}
