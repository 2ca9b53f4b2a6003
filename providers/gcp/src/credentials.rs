//! Credentials, the ordinary way: `provider.gcp_credentials` when the config has
//! it (Ray's `service_account` key JSON or `credentials_token`), otherwise
//! application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, then
//! gcloud's ADC file, then the metadata server of a GCE VM). Only the source is
//! ever named in messages and logs, never the secret.

use google_cloud_auth::credentials::{CacheableResource, Credentials, CredentialsProvider, EntityTag};
use google_cloud_auth::errors::CredentialsError;
use http::{Extensions, HeaderMap, HeaderValue};
use ray_providers::{ErrorClass, ProviderError};

use crate::settings::{GcpCredentials, Settings};

/// The scope every call runs with (Compute, IAM and Resource Manager accept it).
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The credentials and a description of where they came from.
pub fn load(s: &Settings) -> Result<(Credentials, String), ProviderError> {
    let bad = |e: &dyn std::fmt::Display, src: &str| ProviderError::new(ErrorClass::Auth, format!("cannot load Google Cloud credentials from {src}: {e}"));
    match &s.credentials {
        Some(GcpCredentials::ServiceAccount(key)) => {
            let src = "provider.gcp_credentials (type service_account)".to_string();
            let key: serde_json::Value = serde_json::from_str(key)
                .map_err(|e| ProviderError::new(ErrorClass::InvalidConfig, format!("provider.gcp_credentials.credentials: not a service account key in JSON: {e}")))?;
            let c = google_cloud_auth::credentials::service_account::Builder::new(key).with_access_specifier(
                google_cloud_auth::credentials::service_account::AccessSpecifier::from_scopes([SCOPE]),
            );
            Ok((c.build().map_err(|e| bad(&e, &src))?, src))
        }
        Some(GcpCredentials::Token(token)) => {
            let src = "provider.gcp_credentials (type credentials_token)".to_string();
            Ok((Credentials::from(StaticToken::new(token).map_err(|e| bad(&e, &src))?), src))
        }
        None => {
            let src = adc_source();
            let c = google_cloud_auth::credentials::Builder::default().with_scopes([SCOPE]).build().map_err(|e| bad(&e, &src))?;
            Ok((c, src))
        }
    }
}

/// Where application default credentials come from on this machine.
pub fn adc_source() -> String {
    if let Some(p) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
        return format!("GOOGLE_APPLICATION_CREDENTIALS={}", std::path::Path::new(&p).display());
    }
    let dir = std::env::var_os("CLOUDSDK_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config/gcloud")));
    if let Some(f) = dir.map(|d| d.join("application_default_credentials.json")).filter(|f| f.exists()) {
        return format!("gcloud's application default credentials ({})", f.display());
    }
    "the GCE metadata server (no GOOGLE_APPLICATION_CREDENTIALS and no `gcloud auth application-default login` file here)".into()
}

/// An OAuth2 access token given as is (`gcp_credentials: {type: credentials_token}`).
#[derive(Clone)]
struct StaticToken {
    header: HeaderValue,
    tag: EntityTag,
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(..)")
    }
}

impl StaticToken {
    fn new(token: &str) -> Result<Self, String> {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| "the token has characters a header cannot carry".to_string())?;
        header.set_sensitive(true);
        Ok(Self { header, tag: EntityTag::new() })
    }
}

impl CredentialsProvider for StaticToken {
    async fn headers(&self, extensions: Extensions) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
        if extensions.get::<EntityTag>() == Some(&self.tag) {
            return Ok(CacheableResource::NotModified);
        }
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, self.header.clone());
        Ok(CacheableResource::New { entity_tag: self.tag.clone(), data: h })
    }

    async fn universe_domain(&self) -> Option<String> {
        Some("googleapis.com".to_string())
    }
}
