//! What every cloud provider needs the same way: reading keys of the `provider`
//! section, walking a config's node types, the tags of one instance of a
//! request, and the jittered back-off of a retried API call.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng as _;
use serde_json::{Map, Value, json};

use crate::*;

/// An `InvalidConfig` error.
pub fn invalid(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorClass::InvalidConfig, msg)
}

/// `provider.<key>` as a boolean, `default` when absent.
pub fn flag(cfg: &Value, key: &str, default: bool) -> Result<bool, ProviderError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(invalid(format!("provider.{key}: expected true or false, found {v}"))),
    }
}

/// `provider.<key>` as a non-empty string (trimmed), `None` when absent.
pub fn text(cfg: &Value, key: &str) -> Result<Option<String>, ProviderError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(v) => Err(invalid(format!("provider.{key}: expected a non-empty string, found {v}"))),
    }
}

/// Every node type's `node_config` of a cluster config (as JSON), made a mapping
/// when it was absent or null.
pub fn node_configs(doc: &mut Value) -> Vec<(String, &mut Map<String, Value>)> {
    let Some(types) = doc.get_mut("available_node_types").and_then(Value::as_object_mut) else { return Vec::new() };
    types
        .iter_mut()
        .filter_map(|(name, t)| {
            let nc = t.as_object_mut()?.entry("node_config").or_insert_with(|| json!({}));
            if nc.is_null() {
                *nc = json!({});
            }
            Some((name.clone(), nc.as_object_mut()?))
        })
        .collect()
}

impl CreateRequest {
    /// The tags of instance `id` of this request in cluster `cluster`: the
    /// request's, plus the cluster, the launch request and the instance id, and
    /// the node type and `uninitialized` status unless the request set them.
    pub fn instance_tags(&self, cluster: &str, id: &str) -> BTreeMap<String, String> {
        let mut tags = self.tags.clone();
        tags.insert(TAG_CLUSTER_NAME.into(), cluster.to_string());
        tags.insert(TAG_LAUNCH_REQUEST.into(), self.request_id.clone());
        tags.insert(TAG_INSTANCE_ID.into(), id.to_string());
        tags.entry(TAG_USER_NODE_TYPE.into()).or_insert_with(|| self.node_type.clone());
        tags.entry(TAG_NODE_STATUS.into()).or_insert_with(|| node_status::UNINITIALIZED.into());
        tags
    }
}

/// Full-jitter exponential back-off before try `attempt + 1` of a call: at most
/// `base` after the first try, doubling per try, never more than `cap`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(cap);
    let ms = rand::rng().random_range(ceiling.as_millis() as u64 / 4..=ceiling.as_millis() as u64);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        for a in 1..20 {
            assert!(backoff(a, base, cap) <= cap);
        }
        assert!(backoff(1, base, cap) <= base);
        assert!(backoff(10, base, cap) >= cap / 4);
    }

    #[test]
    fn provider_keys_are_checked_naming_the_key() {
        let cfg = json!({"a": true, "b": " x ", "c": 3});
        assert!(flag(&cfg, "a", false).unwrap() && flag(&cfg, "zz", true).unwrap());
        assert!(flag(&cfg, "b", false).unwrap_err().message.contains("provider.b: expected true or false"));
        assert_eq!(text(&cfg, "b").unwrap().as_deref(), Some("x"));
        assert!(text(&cfg, "c").unwrap_err().message.contains("provider.c: expected a non-empty string"));
    }

    #[test]
    fn instance_tags_add_the_ids_and_keep_what_the_request_set() {
        let req = CreateRequest {
            request_id: "r".into(),
            node_type: "w".into(),
            instance_ids: vec!["i".into()],
            node_config: json!({}),
            resources: Default::default(),
            labels: Default::default(),
            tags: [(TAG_NODE_STATUS.to_string(), "setting-up".to_string())].into(),
        };
        let t = req.instance_tags("c", "i");
        assert_eq!((t[TAG_CLUSTER_NAME].as_str(), t[TAG_LAUNCH_REQUEST].as_str(), t[TAG_INSTANCE_ID].as_str()), ("c", "r", "i"));
        assert_eq!((t[TAG_USER_NODE_TYPE].as_str(), t[TAG_NODE_STATUS].as_str()), ("w", "setting-up"));
    }
}
