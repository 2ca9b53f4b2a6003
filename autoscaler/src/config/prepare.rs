//! From the file's top level to the merged one the rest is read from, as Ray's
//! `prepare_config` (`ray/autoscaler/_private/util.py`) does it: the provider type
//! picks the defaults (`providers.py`), `local` is prepared first (`local.rs`),
//! `kuberay` is taken as it is, the defaults fill every top-level key the file
//! leaves out (`fillout_defaults`), a config in the legacy form (`head_node` and
//! `worker_nodes` instead of node types) gets the provider's default types,
//! empty legacy fields are dropped and a top-level `min_workers` is taken out.

use super::defaults;
use super::local::{self, Prepared as LocalPrepared};
use super::reader::{Reader, child_path, did_you_mean, kind, to_json};
use super::scalar::Resolved;
use super::schema::{
    self, GCP_CREDENTIALS_KEYS, LEGACY_TOP_LEVEL_KEYS, PROVIDER_KEYS, PROVIDER_TYPES, SECURITY_GROUP_KEYS,
    TOP_LEVEL_KEYS, Type,
};
use super::yaml::{Mapping, Mark, Node, Value};

/// Ray's names for the two node types of a converted legacy config.
pub const LEGACY_HEAD_TYPE: &str = "ray-legacy-head-node-type";
/// See [`LEGACY_HEAD_TYPE`].
pub const LEGACY_WORKER_TYPE: &str = "ray-legacy-worker-node-type";

/// The merged top level, ready to be typed.
pub struct Merged {
    /// Every top-level key: the file's, then the provider's defaults.
    pub top: Mapping,
    /// Where the file's top-level mapping starts (for faults about missing keys).
    pub top_mark: Mark,
    /// `provider`, as JSON.
    pub provider: serde_json::Value,
    /// `provider.type`.
    pub provider_type: String,
    /// Taken as it is (no defaults, no merged setup commands), as Ray takes a
    /// KubeRay config or an already prepared local one.
    pub as_is: bool,
    /// `head_node_type` came from the provider's defaults, not the file.
    pub head_type_defaulted: bool,
}

/// Checks the top level and the provider, then merges. `None` when a fault leaves
/// nothing to type.
pub fn merge(r: &mut Reader, root: &Node) -> Option<Merged> {
    let Some(file_top) = root.as_mapping() else {
        r.error(
            root,
            "",
            format!("the top level must be a mapping of keys such as cluster_name, provider, ...; got {}", kind(root)),
        );
        return None;
    };
    let known: Vec<&str> = TOP_LEVEL_KEYS.iter().chain(LEGACY_TOP_LEVEL_KEYS).copied().collect();
    r.check_keys(file_top, "", &known);

    let provider_node =
        r.required(file_top, root.mark, "", "provider", "a mapping with at least `type`, e.g. {type: aws}")?;
    let provider_map = r.mapping(provider_node, "provider")?;
    let type_node = r.required(
        provider_map,
        provider_node.mark,
        "provider",
        "type",
        "a provider name such as aws, gcp, azure or local",
    )?;
    let provider_type = r.string(type_node, "provider.type")?;
    check_typed_keys(r, provider_map, "provider", PROVIDER_KEYS, false);
    if !PROVIDER_TYPES.contains(&provider_type.as_str()) {
        let hint =
            did_you_mean(&provider_type, PROVIDER_TYPES).map(|s| format!("did you mean {s:?}? ")).unwrap_or_default();
        r.error(
            type_node,
            "provider.type",
            format!("unknown provider {provider_type:?}; {hint}expected one of: {}", PROVIDER_TYPES.join(", ")),
        );
        return None;
    }

    let mut top = file_top.clone();
    let mut as_is = provider_type == "kuberay";
    if provider_type == "local" {
        match local::prepare(r, &mut top, provider_map, provider_node.mark)? {
            LocalPrepared::AsIs => as_is = true,
            LocalPrepared::Filled => {}
        }
    }

    let mut head_type_defaulted = false;
    if as_is {
        for key in LEGACY_TOP_LEVEL_KEYS {
            if let Some(e) = top.entry(key) {
                let why =
                    if provider_type == "kuberay" { "a KubeRay config" } else { "an already prepared local config" };
                r.error_at(e.key_mark, key, format!("not allowed in {why}, which Ray takes as it is"));
            }
        }
    } else {
        let d = defaults::for_provider(&provider_type)?;
        let is_legacy =
            !top.contains("available_node_types") && (top.contains("head_node") || top.contains("worker_nodes"));
        head_type_defaulted = !top.contains("head_node_type");
        let mut merged = d.top.clone();
        for e in &top.entries {
            merged.insert(&e.key, e.key_mark, e.value.clone());
        }
        if d.head_type_with_types && top.contains("available_node_types") && head_type_defaulted {
            merged.remove("head_node_type");
        }
        if is_legacy {
            legacy(r, &mut merged)?;
        }
        if let Some(e) = merged.remove("min_workers") {
            r.warn_at(
                e.key_mark,
                "min_workers",
                "ignored, as Ray ignores it: a top-level min_workers only sizes a local cluster; set min_workers on a node type",
            );
        }
        drop_empty_legacy(r, &mut merged);
        top = merged;
    }

    Some(Merged {
        top,
        top_mark: root.mark,
        provider: to_json(provider_node),
        provider_type,
        as_is,
        head_type_defaulted,
    })
}

/// Ray's `translate_trivial_legacy_config`: empty `head_node`/`worker_nodes` go
/// with a warning. A non-empty one is refused (Ray's schema refuses it after
/// conversion).
fn drop_empty_legacy(r: &mut Reader, top: &mut Mapping) {
    for field in ["head_node", "worker_nodes"] {
        let Some(e) = top.entry(field) else { continue };
        if e.value.truthy() {
            let what = if field == "head_node" { "the head's node type" } else { "the workers' node types" };
            r.error_at(
                e.key_mark,
                field,
                format!(
                    "a legacy field Ray 2.x no longer reads; describe {what} under available_node_types \
                     (node_config holds these instance settings) and set head_node_type"
                ),
            );
        } else {
            r.warn_at(
                e.key_mark,
                field,
                format!("dropped: the empty legacy field {field} is not used since Ray 2.0; remove it"),
            );
            top.remove(field);
        }
    }
}

/// Ray's `merge_legacy_yaml_with_defaults`, for a file with `head_node` and/or
/// `worker_nodes` and no `available_node_types`: the provider's two default node
/// types are renamed to Ray's legacy names.
fn legacy(r: &mut Reader, top: &mut Mapping) -> Option<()> {
    let mark = |key: &str, top: &Mapping| top.entry(key).map(|e| e.key_mark).unwrap_or(Mark::NONE);
    for (have, missing) in [("head_node", "worker_nodes"), ("worker_nodes", "head_node")] {
        if top.contains(have) && !top.contains(missing) {
            r.error_at(
                mark(have, top),
                have,
                format!("a legacy config needs {missing} too (Ray fails without it); better, use available_node_types"),
            );
            return None;
        }
    }
    let types = top.get("available_node_types").and_then(Node::as_mapping).cloned().unwrap_or_default();
    let head = top.get("head_node_type").and_then(Node::as_scalar).map(|s| s.text.clone()).unwrap_or_default();
    let worker = types.iter().map(|e| e.key.clone()).find(|k| *k != head);
    let (Some(head_body), Some(worker), 2) = (types.get(&head).cloned(), worker, types.len()) else {
        r.error_at(
            mark("head_node", top),
            "head_node",
            "the legacy form (head_node/worker_nodes) needs a provider whose defaults have one head and one worker \
             node type; use available_node_types",
        );
        return None;
    };
    let worker_body = types.get(&worker).cloned().unwrap_or_else(|| Node::mapping(Mapping::default(), Mark::NONE));
    let mut converted = Mapping::default();
    converted.insert(LEGACY_HEAD_TYPE, Mark::NONE, head_body);
    converted.insert(LEGACY_WORKER_TYPE, Mark::NONE, worker_body);
    top.insert("available_node_types", Mark::NONE, Node::mapping(converted, Mark::NONE));
    top.insert("head_node_type", Mark::NONE, Node::string(LEGACY_HEAD_TYPE, Mark::NONE));
    r.warn_at(
        mark("head_node", top),
        "head_node",
        format!(
            "legacy config (head_node/worker_nodes, no available_node_types): converted as Ray converts it, to the \
             provider's default node types named {LEGACY_HEAD_TYPE} and {LEGACY_WORKER_TYPE}"
        ),
    );
    Some(())
}

/// Checks the keys a table types; others are faults only if `closed`.
pub fn check_typed_keys(r: &mut Reader, map: &Mapping, path: &str, keys: &[(&'static str, Type)], closed: bool) {
    if closed {
        r.check_keys(map, path, &schema::names(keys));
    }
    for e in map.iter() {
        let Some((_, ty)) = keys.iter().find(|(k, _)| *k == e.key) else { continue };
        let p = child_path(path, &e.key);
        let ok = match (&e.value.value, ty) {
            (Value::Scalar(s), Type::String) => s.resolved == Resolved::Str,
            (Value::Scalar(s), Type::StringOrNull) => matches!(s.resolved, Resolved::Str | Resolved::Null),
            (Value::Scalar(s), Type::Boolean) => matches!(s.resolved, Resolved::Bool(_)),
            (Value::Sequence(_), Type::Array) | (Value::Mapping(_), Type::Object) => true,
            _ => false,
        };
        if !ok {
            let got = match &e.value.value {
                Value::Scalar(s) if s.resolved != Resolved::Null => format!("{} {:?}", s.resolved.kind(), s.text),
                _ => kind(&e.value).to_string(),
            };
            r.error(&e.value, &p, format!("expected {}, got {got}", ty.expected()));
            continue;
        }
        let sub = match (path, e.key.as_str()) {
            ("provider", "security_group") => Some(SECURITY_GROUP_KEYS),
            ("provider", "gcp_credentials") => Some(GCP_CREDENTIALS_KEYS),
            _ => None,
        };
        if let (Some(sub), Value::Mapping(m)) = (sub, &e.value.value) {
            check_typed_keys(r, m, &p, sub, true);
            if e.key == "gcp_credentials" && !m.contains("type") {
                r.error(&e.value, &child_path(&p, "type"), "missing; expected the credentials' type");
            }
        }
    }
}
