//! Helpers shared by the scheduler's tests: resource sets, priced node types,
//! an input with a resourceless head, and an idle worker node.

use ray_common::{FixedPoint, ResourceSet};

use super::{Input, NodeTypeSpec, NodeView};

pub(super) const GIB: f64 = (1u64 << 30) as f64;

pub(super) fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
    pairs.iter().map(|(k, v)| (k.to_string(), FixedPoint::from_f64(*v))).collect()
}

/// A worker type with `max` workers at `price` per hour.
pub(super) fn priced(name: &str, res: &[(&str, f64)], max: u32, price: f64) -> NodeTypeSpec {
    NodeTypeSpec { name: name.into(), resources: rs(res), min_workers: 0, max_workers: max, is_head: false, price: Some(price), priority: 0 }
}

/// `types` beside a head that holds nothing; caps and upscaling out of the way.
pub(super) fn priced_input(types: Vec<NodeTypeSpec>) -> Input {
    let mut all = vec![NodeTypeSpec { is_head: true, ..priced("head", &[], 0, 0.0) }];
    all.extend(types);
    Input { types: all, max_workers: 100_000, upscaling_speed: 1e9, ..Default::default() }
}

/// A running worker of type `t` with all of it free.
pub(super) fn worker(id: &str, t: &NodeTypeSpec, idle_ms: u64) -> NodeView {
    NodeView {
        id: id.into(),
        node_type: t.name.clone(),
        total: t.resources.clone(),
        available: t.resources.clone(),
        pending: false,
        is_head: false,
        unmanaged: false,
        draining: false,
        idle_ms,
    }
}
