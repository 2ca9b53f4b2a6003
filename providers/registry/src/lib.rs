//! The provider registry: builds the node provider a cluster config's
//! `provider.type` names. Each provider is its own crate, compiled in by a cargo
//! feature of this crate, so a build carries only the cloud SDKs it asks for and
//! the provider seam (`ray-providers`) carries none.

use std::sync::Arc;

use ray_providers::{ErrorClass, NodeProvider, ProviderContext, ProviderError};

/// Every `provider.type` Ray's cluster YAML knows, with the cargo feature that
/// builds it here.
pub const KNOWN: &[(&str, &str)] = &[("fake_multinode", "fake_multinode"), ("local", "local"), ("aws", "aws"), ("gcp", "gcp")];

/// The provider types this build can create.
pub fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "fake_multinode") {
        v.push("fake_multinode");
    }
    if cfg!(feature = "local") {
        v.push("local");
    }
    if cfg!(feature = "aws") {
        v.push("aws");
    }
    if cfg!(feature = "gcp") {
        v.push("gcp");
    }
    v
}

/// Builds the provider named by `provider_config.type`. A type this build was not
/// compiled with, or one Ray does not know, is an `InvalidConfig` error that says
/// which types are available.
pub fn make_provider(provider_config: &serde_json::Value, ctx: ProviderContext) -> Result<Arc<dyn NodeProvider>, ProviderError> {
    let kind = provider_config.get("type").and_then(|v| v.as_str()).unwrap_or("");
    match kind {
        #[cfg(feature = "fake_multinode")]
        "fake_multinode" => Ok(Arc::new(ray_provider_fake_multinode::FakeMultiNodeProvider::new(provider_config, ctx)?)),
        #[cfg(feature = "local")]
        "local" => Ok(Arc::new(ray_provider_local::LocalProvider::new(provider_config, ctx)?)),
        #[cfg(feature = "aws")]
        "aws" => Ok(Arc::new(ray_provider_aws::AwsProvider::new(provider_config, ctx)?)),
        #[cfg(feature = "gcp")]
        "gcp" => Ok(Arc::new(ray_provider_gcp::GcpProvider::new(provider_config, ctx)?)),
        _ => {
            let _ = ctx;
            let have = available().join(", ");
            let message = match KNOWN.iter().find(|(k, _)| *k == kind) {
                Some((_, feature)) => format!(
                    "provider.type {kind:?} is not available in this build (cargo feature {feature:?} of ray-provider-registry); available: {have}"
                ),
                None => format!("unknown provider.type {kind:?}; expected one of: {}", KNOWN.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")),
            };
            Err(ProviderError::new(ErrorClass::InvalidConfig, message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ProviderContext {
        ProviderContext {
            cluster_name: "t".into(),
            gcs_address: "127.0.0.1:1".into(),
            temp_root: std::env::temp_dir(),
            session_name: "s".into(),
            ray_executable: "/bin/true".into(),
            node_env: Vec::new(),
            auth: serde_json::Value::Null,
            boot_commands: Default::default(),
        }
    }

    #[test]
    fn unknown_and_missing_provider_types_are_invalid_config_naming_the_choices() {
        let e = make_provider(&serde_json::json!({"type": "azure"}), ctx()).err().expect("refused");
        assert_eq!(e.class, ErrorClass::InvalidConfig);
        assert!(e.message.contains("unknown provider.type \"azure\"") && e.message.contains("aws"), "{e}");
        // A type Ray knows that this build left out names its cargo feature.
        for (kind, feature) in KNOWN.iter().filter(|(k, _)| !available().contains(k)) {
            let e = make_provider(&serde_json::json!({"type": kind}), ctx()).err().expect("not built");
            assert!(e.message.contains("not available in this build") && e.message.contains(feature), "{e}");
        }
    }
}
