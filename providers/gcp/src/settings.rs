//! The `provider` section of a GCP cluster config, as Ray reads it (`region`,
//! `availability_zone`, `project_id`, `gcp_credentials`, `use_internal_ips`),
//! plus this project's keys (`endpoint_url`, `api_requests_per_second`,
//! `spot_fallback_to_on_demand`; `availability_zone` may list zones in order of
//! preference, comma-separated, as for AWS).

use ray_providers::helpers::{flag, invalid, text};
use ray_providers::ProviderError;
use serde_json::Value;

/// `provider.gcp_credentials`.
#[derive(Clone)]
pub enum GcpCredentials {
    /// A service account key (JSON text).
    ServiceAccount(String),
    /// An OAuth2 access token.
    Token(String),
}

impl std::fmt::Debug for GcpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        f.write_str(match self {
            Self::ServiceAccount(_) => "ServiceAccount(..)",
            Self::Token(_) => "Token(..)",
        })
    }
}

/// The provider section, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `project_id` (required).
    pub project_id: String,
    /// `region` (required).
    pub region: String,
    /// `availability_zone`: zones of `region` in order of preference (at least one).
    pub zones: Vec<String>,
    /// `use_internal_ips`: reach nodes by internal address only.
    pub use_internal_ips: bool,
    /// `gcp_credentials`, else application default credentials.
    pub credentials: Option<GcpCredentials>,
    /// `endpoint_url`, else `RAY_GCP_ENDPOINT_URL`, else Google's endpoints.
    pub endpoint_url: Option<String>,
    /// `api_requests_per_second`: client-side rate limit on API calls (default 10).
    pub requests_per_second: u32,
    /// `spot_fallback_to_on_demand`: launch standard VMs when no zone has spot
    /// capacity (default true).
    pub spot_fallback: bool,
}

impl Settings {
    /// Reads and checks the provider section.
    pub fn from_config(cfg: &Value) -> Result<Self, ProviderError> {
        let region = text(cfg, "region")?.ok_or_else(|| invalid("provider.region: required for provider type gcp (e.g. us-west1)"))?;
        let project_id = text(cfg, "project_id")?
            .ok_or_else(|| invalid("provider.project_id: required for provider type gcp (the project the cluster's VMs live in)"))?;
        let zones: Vec<String> = text(cfg, "availability_zone")?
            .map(|z| z.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if zones.is_empty() {
            return Err(invalid(format!("provider.availability_zone: required for provider type gcp (a zone of {region}, e.g. {region}-a)")));
        }
        if let Some(z) = zones.iter().find(|z| !z.starts_with(&format!("{region}-"))) {
            return Err(invalid(format!("provider.availability_zone: {z:?} is not a zone of provider.region {region:?}")));
        }
        let endpoint_url = text(cfg, "endpoint_url")?.or_else(|| std::env::var("RAY_GCP_ENDPOINT_URL").ok().filter(|s| !s.is_empty()));
        if let Some(u) = &endpoint_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid(format!("provider.endpoint_url: expected an http:// or https:// URL, found {u:?}")));
        }
        let requests_per_second = match cfg.get("api_requests_per_second") {
            None | Some(Value::Null) => 10,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| invalid(format!("provider.api_requests_per_second: expected an integer 1..1000, found {v}")))?
                as u32,
        };
        let credentials = match cfg.get("gcp_credentials") {
            None | Some(Value::Null) => None,
            Some(c) => {
                let body = c.get("credentials").and_then(Value::as_str).unwrap_or_default().to_string();
                if body.trim().is_empty() {
                    return Err(invalid("provider.gcp_credentials.credentials: required (the key JSON or the token)"));
                }
                match c.get("type").and_then(Value::as_str) {
                    Some("service_account") => Some(GcpCredentials::ServiceAccount(body)),
                    Some("credentials_token") => Some(GcpCredentials::Token(body)),
                    other => {
                        return Err(invalid(format!(
                            "provider.gcp_credentials.type: expected service_account or credentials_token, found {}",
                            other.map_or("nothing".to_string(), |s| format!("{s:?}"))
                        )));
                    }
                }
            }
        };
        if flag(cfg, "cache_stopped_nodes", false)? {
            tracing::warn!("provider.cache_stopped_nodes: not supported by the gcp provider yet; workers are deleted, not stopped");
        }
        Ok(Self {
            project_id,
            region,
            zones,
            use_internal_ips: flag(cfg, "use_internal_ips", false)?,
            credentials,
            endpoint_url,
            requests_per_second,
            spot_fallback: flag(cfg, "spot_fallback_to_on_demand", true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_providers::ErrorClass;
    use serde_json::json;

    #[test]
    fn ray_keys_and_project_keys() {
        let s = Settings::from_config(&json!({"type": "gcp", "region": "us-west1", "availability_zone": "us-west1-a, us-west1-b", "project_id": "p"})).unwrap();
        assert_eq!(s.zones, ["us-west1-a", "us-west1-b"]);
        assert!(!s.use_internal_ips && s.spot_fallback && s.credentials.is_none());
        assert_eq!(s.requests_per_second, 10);
        let s = Settings::from_config(&json!({"region": "us-west1", "availability_zone": "us-west1-a", "project_id": "p",
            "gcp_credentials": {"type": "credentials_token", "credentials": "ya29.secret"}}))
        .unwrap();
        assert!(matches!(s.credentials, Some(GcpCredentials::Token(_))));
        assert!(!format!("{s:?}").contains("ya29.secret"), "the token stays out of debug output");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::from_config(&json!({"type": "gcp", "availability_zone": "us-west1-a", "project_id": "p"})).unwrap_err();
        assert!(e.message.contains("provider.region"), "{e}");
        let e = Settings::from_config(&json!({"region": "us-west1", "availability_zone": "us-west1-a"})).unwrap_err();
        assert!(e.message.contains("provider.project_id"), "{e}");
        let e = Settings::from_config(&json!({"region": "us-west1", "project_id": "p"})).unwrap_err();
        assert!(e.message.contains("provider.availability_zone"), "{e}");
        let e = Settings::from_config(&json!({"region": "us-west1", "availability_zone": "us-east1-b", "project_id": "p"})).unwrap_err();
        assert!(e.message.contains("not a zone of provider.region"), "{e}");
        let e = Settings::from_config(&json!({"region": "us-west1", "availability_zone": "us-west1-a", "project_id": "p",
            "gcp_credentials": {"type": "oauth", "credentials": "x"}}))
        .unwrap_err();
        assert!(e.message.contains("provider.gcp_credentials.type"), "{e}");
        assert_eq!(e.class, ErrorClass::InvalidConfig);
    }
}
