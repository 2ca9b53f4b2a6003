//! The `local` provider (on-premise machines), prepared as Ray's `prepare_local`
//! prepares it (`ray/autoscaler/_private/local/config.py`): one node type,
//! `local.cluster.node`, serves as head and workers; its size comes from
//! `provider.worker_ips` (or, with a `coordinator_address`, from `max_workers`),
//! and a top-level `min_workers` moves into it.

use super::reader::{Reader, kind};
use super::yaml::{Mapping, Mark, Node, Value};

/// The one node type of a local cluster.
pub const LOCAL_NODE_TYPE: &str = "local.cluster.node";

/// What preparing did.
pub enum Prepared {
    /// The config now has its node type; go on with the defaults as usual.
    Filled,
    /// Already prepared (it names `local.cluster.node` itself, as the bootstrap
    /// config `ray up` writes does): Ray takes it as it is, with no defaults.
    AsIs,
}

/// Prepares `top` (a copy of the file's top level) in place. `None` after a fault.
pub fn prepare(r: &mut Reader, top: &mut Mapping, provider: &Mapping, provider_mark: Mark) -> Option<Prepared> {
    for field in ["head_node", "worker_nodes", "available_node_types"] {
        let Some(e) = top.entry(field) else { continue };
        if !e.value.truthy() {
            continue;
        }
        if field == "available_node_types" && e.value.as_mapping().is_some_and(|m| m.contains(LOCAL_NODE_TYPE)) {
            return Some(Prepared::AsIs);
        }
        r.error_at(
            e.key_mark,
            field,
            format!(
                "not supported for on-premise clusters (provider type local): Ray runs one node type, \
                 {LOCAL_NODE_TYPE:?}, sized by provider.worker_ips; remove {field}"
            ),
        );
        return None;
    }
    if let Some(e) = top.entry("head_node_type")
        && e.value.truthy()
        && e.value.as_scalar().is_none_or(|s| s.text != LOCAL_NODE_TYPE)
    {
        r.warn_at(
            e.key_mark,
            "head_node_type",
            format!("ignored: a local cluster's head is of type {LOCAL_NODE_TYPE:?}"),
        );
    }

    let mut node_type = Mapping::default();
    node_type.insert("node_config", Mark::NONE, Node::mapping(Mapping::default(), Mark::NONE));
    node_type.insert("resources", Mark::NONE, Node::mapping(Mapping::default(), Mark::NONE));

    let int_at = |r: &mut Reader, top: &Mapping, key: &str| -> Option<Option<(i64, Mark)>> {
        match top.get(key) {
            None => Some(None),
            Some(n) => r.integer(n, key, 0).map(|v| Some((v, n.mark))),
        }
    };
    let max = int_at(r, top, "max_workers")?;
    let min = int_at(r, top, "min_workers")?;
    top.remove("min_workers");

    if provider.contains("coordinator_address") {
        let Some((max, max_mark)) = max else {
            r.error_at(provider_mark, "max_workers", "missing; required when provider.coordinator_address is set");
            return None;
        };
        let (min, min_mark) = min.unwrap_or((0, Mark::NONE));
        node_type.insert("min_workers", Mark::NONE, Node::int(min.into(), min_mark));
        node_type.insert("max_workers", Mark::NONE, Node::int(max.into(), max_mark));
    } else {
        let ips = match (provider.get("head_ip"), provider.get("worker_ips")) {
            (Some(_), Some(ips)) => ips,
            _ => {
                r.error_at(
                    provider_mark,
                    "provider",
                    "a local cluster needs provider.head_ip and provider.worker_ips (a list of hosts), \
                     or provider.coordinator_address",
                );
                return None;
            }
        };
        let Value::Sequence(list) = &ips.value else {
            r.error(ips, "provider.worker_ips", format!("expected a list of hosts, got {}", kind(ips)));
            return None;
        };
        let n = list.len() as i64;
        let ips_mark = ips.mark;
        let (max, max_mark) = max.unwrap_or((n, ips_mark));
        if !top.contains("max_workers") {
            top.insert("max_workers", Mark::NONE, Node::int(max.into(), Mark::NONE));
        }
        let (mut min, min_mark) = min.unwrap_or((n, ips_mark));
        if min > n {
            r.warn_at(min_mark, "min_workers", format!("{min} is more than the {n} worker_ips; using {n}"));
            min = n;
        }
        let mut type_max = max;
        if max > n {
            r.warn_at(max_mark, "max_workers", format!("{max} is more than the {n} worker_ips; using {n}"));
            type_max = n;
            top.insert("max_workers", Mark::NONE, Node::int(n.into(), max_mark));
        } else if max < n {
            r.warn_at(
                max_mark,
                "max_workers",
                format!("{max} is less than the {n} worker_ips: at most {max} of them will join"),
            );
        }
        node_type.insert("min_workers", Mark::NONE, Node::int(min.into(), min_mark));
        node_type.insert("max_workers", Mark::NONE, Node::int(type_max.into(), max_mark));
    }

    let mut types = Mapping::default();
    types.insert(LOCAL_NODE_TYPE, Mark::NONE, Node::mapping(node_type, Mark::NONE));
    let types_mark = top.entry("available_node_types").map(|e| e.key_mark).unwrap_or(Mark::NONE);
    top.insert("available_node_types", types_mark, Node::mapping(types, Mark::NONE));
    top.insert("head_node_type", Mark::NONE, Node::string(LOCAL_NODE_TYPE, Mark::NONE));
    Some(Prepared::Filled)
}
