//! The `provider` section of an AWS cluster config, as Ray reads it, plus this
//! project's keys (`endpoint_url`, `launch_via`, `spot_fallback_to_on_demand`).

use ray_providers::helpers::{flag, invalid, text};
use ray_providers::ProviderError;
use serde_json::Value;

/// How a worker gets Ray started on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchVia {
    /// The launcher's updater sets it up over SSH (Ray's way; the default).
    Ssh,
    /// cloud-init runs a script from the instance's user data that starts Ray
    /// and joins the head: no SSH from the head to the workers.
    UserData,
}

/// The provider section, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `region` (required).
    pub region: String,
    /// `availability_zone`: zones in order of preference (Ray writes them comma-separated).
    pub availability_zones: Vec<String>,
    /// `cache_stopped_nodes`: stop workers instead of terminating them, and start a
    /// stopped one before launching a new one (Ray's default: true).
    pub cache_stopped_nodes: bool,
    /// `use_internal_ips`: reach nodes by private address only.
    pub use_internal_ips: bool,
    /// `security_group`: `{GroupName, IpPermissions}` for the group bootstrap makes.
    pub security_group: Option<Value>,
    /// `endpoint_url`, else the `AWS_ENDPOINT_URL` the SDK reads itself.
    pub endpoint_url: Option<String>,
    /// `launch_via`: `ssh` (default) or `user_data`.
    pub launch_via: LaunchVia,
    /// `spot_fallback_to_on_demand`: launch on-demand when no spot capacity (default true).
    pub spot_fallback: bool,
    /// `api_requests_per_second`: client-side rate limit on EC2 calls (default 10).
    pub requests_per_second: u32,
}

impl Settings {
    /// Reads and checks the provider section.
    pub fn from_config(cfg: &Value) -> Result<Self, ProviderError> {
        let region = text(cfg, "region")?.ok_or_else(|| invalid("provider.region: required for provider type aws (e.g. us-west-2)"))?;
        let availability_zones = text(cfg, "availability_zone")?
            .map(|z| z.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let endpoint_url = text(cfg, "endpoint_url")?;
        if let Some(u) = &endpoint_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid(format!("provider.endpoint_url: expected an http:// or https:// URL, found {u:?}")));
        }
        let launch_via = match text(cfg, "launch_via")?.as_deref() {
            None | Some("ssh") => LaunchVia::Ssh,
            Some("user_data") => LaunchVia::UserData,
            Some(o) => return Err(invalid(format!("provider.launch_via: expected ssh or user_data, found {o:?}"))),
        };
        let requests_per_second = match cfg.get("api_requests_per_second") {
            None | Some(Value::Null) => 10,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| invalid(format!("provider.api_requests_per_second: expected an integer 1..1000, found {v}")))?
                as u32,
        };
        let security_group = match cfg.get("security_group") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(v) => return Err(invalid(format!("provider.security_group: expected a mapping with GroupName and IpPermissions, found {v}"))),
        };
        Ok(Self {
            region,
            availability_zones,
            cache_stopped_nodes: flag(cfg, "cache_stopped_nodes", true)?,
            use_internal_ips: flag(cfg, "use_internal_ips", false)?,
            security_group,
            endpoint_url,
            launch_via,
            spot_fallback: flag(cfg, "spot_fallback_to_on_demand", true)?,
            requests_per_second,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_providers::ErrorClass;
    use serde_json::json;

    #[test]
    fn ray_defaults_and_project_keys() {
        let s = Settings::from_config(&json!({"type": "aws", "region": "us-west-2", "availability_zone": "us-west-2a, us-west-2b"})).unwrap();
        assert_eq!(s.availability_zones, ["us-west-2a", "us-west-2b"]);
        assert!(s.cache_stopped_nodes && !s.use_internal_ips && s.spot_fallback);
        assert_eq!((s.launch_via, s.requests_per_second), (LaunchVia::Ssh, 10));
        let s = Settings::from_config(&json!({"region": "r", "launch_via": "user_data", "cache_stopped_nodes": false})).unwrap();
        assert_eq!(s.launch_via, LaunchVia::UserData);
        assert!(!s.cache_stopped_nodes);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::from_config(&json!({"type": "aws"})).unwrap_err();
        assert!(e.message.contains("provider.region"), "{e}");
        let e = Settings::from_config(&json!({"region": "r", "cache_stopped_nodes": "yes"})).unwrap_err();
        assert!(e.message.contains("provider.cache_stopped_nodes") && e.message.contains("true or false"), "{e}");
        let e = Settings::from_config(&json!({"region": "r", "launch_via": "carrier-pigeon"})).unwrap_err();
        assert!(e.message.contains("provider.launch_via"), "{e}");
        let e = Settings::from_config(&json!({"region": "r", "endpoint_url": "localhost:5000"})).unwrap_err();
        assert!(e.message.contains("provider.endpoint_url"), "{e}");
        assert_eq!(e.class, ErrorClass::InvalidConfig);
    }
}
