//! Placement group bundles on this node, reserved in two phases as Ray's GCS
//! asks: `prepare` sets a bundle's resources aside (all of the node's bundles
//! of a group, or none), `commit` turns them into the group's own resources,
//! and `cancel` gives everything back. A committed bundle `i` of group `G` with
//! `{CPU: 2}` adds `CPU_group_i_G: 2` and `CPU_group_G: 2` (any bundle), plus
//! `bundle_group_i_G` and `bundle_group_G` (1000 each), Ray's names: a task in
//! the group asks for those, so only this node can grant it.

use std::collections::HashMap;

use ray_common::{FixedPoint, ResourceSet};

use crate::local_resources::LocalResources;

/// Units of `bundle_group_*` per bundle (Ray's).
const BUNDLE_UNITS: i64 = 1000;

/// The resources a committed bundle adds to the node.
pub fn group_resources(group: &str, index: u32, bundle: &ResourceSet) -> ResourceSet {
    let mut out = ResourceSet::new();
    for (name, amount) in bundle.iter() {
        out.set(format!("{name}_group_{index}_{group}"), amount);
        out.set(format!("{name}_group_{group}"), amount);
    }
    out.set(format!("bundle_group_{index}_{group}"), FixedPoint::from_int(BUNDLE_UNITS));
    out.set(format!("bundle_group_{group}"), FixedPoint::from_int(BUNDLE_UNITS));
    out
}

#[derive(Debug, Clone)]
struct Held {
    index: u32,
    resources: ResourceSet,
    committed: bool,
}

/// The bundles this node holds, by group id.
#[derive(Debug, Default)]
pub struct Bundles {
    groups: HashMap<String, Vec<Held>>,
}

impl Bundles {
    /// Sets `bundles` of `group` aside from the free resources: all, or none
    /// (and an error saying what is missing). Preparing a group again adds only
    /// the bundles it does not hold yet.
    pub fn prepare(&mut self, group: &str, bundles: Vec<(u32, ResourceSet)>, res: &mut LocalResources) -> Result<(), String> {
        let held = self.groups.get(group).map(|v| v.iter().map(|h| h.index).collect::<Vec<_>>()).unwrap_or_default();
        let new: Vec<(u32, ResourceSet)> = bundles.into_iter().filter(|(i, _)| !held.contains(i)).collect();
        let mut sum = ResourceSet::new();
        for (_, r) in &new {
            sum.add(r);
        }
        if !res.try_acquire(&sum) {
            return Err(match res.drain_state() {
                Some(_) => "the node is draining".to_string(),
                None => format!("{sum} is not free here ({} free)", res.available()),
            });
        }
        let entry = self.groups.entry(group.to_string()).or_default();
        entry.extend(new.into_iter().map(|(index, resources)| Held { index, resources, committed: false }));
        Ok(())
    }

    /// Commits the prepared bundles of `group`; false when it holds none here.
    pub fn commit(&mut self, group: &str, res: &mut LocalResources) -> bool {
        let Some(held) = self.groups.get_mut(group) else { return false };
        for h in held.iter_mut().filter(|h| !h.committed) {
            h.committed = true;
            res.add_total(&group_resources(group, h.index, &h.resources));
        }
        true
    }

    /// Gives back the bundles `indices` of `group` (all when empty). Returns the
    /// group resources that disappeared (leases holding them must end first: the
    /// caller stops those workers) and the bundle resources to release, or
    /// `None` if it held none of them.
    pub fn cancel(&mut self, group: &str, indices: &[u32]) -> Option<(ResourceSet, ResourceSet)> {
        let all = self.groups.get_mut(group)?;
        let (held, keep): (Vec<Held>, Vec<Held>) = all.drain(..).partition(|h| indices.is_empty() || indices.contains(&h.index));
        if keep.is_empty() {
            self.groups.remove(group);
        } else {
            *all = keep;
        }
        if held.is_empty() {
            return None;
        }
        let mut gone = ResourceSet::new();
        let mut back = ResourceSet::new();
        for h in held {
            if h.committed {
                gone.add(&group_resources(group, h.index, &h.resources));
            }
            back.add(&h.resources);
        }
        Some((gone, back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, i64)]) -> ResourceSet {
        pairs.iter().map(|(k, v)| (k.to_string(), FixedPoint::from_int(*v))).collect()
    }

    #[test]
    fn bundles_are_prepared_all_or_nothing_then_committed_then_given_back() {
        let mut res = LocalResources::new(set(&[("CPU", 4)]));
        let mut b = Bundles::default();
        let e = b.prepare("g", vec![(0, set(&[("CPU", 2)])), (1, set(&[("CPU", 3)]))], &mut res).unwrap_err();
        assert!(e.contains("not free"), "{e}");
        assert_eq!(res.available(), &set(&[("CPU", 4)]), "nothing was taken");
        b.prepare("g", vec![(0, set(&[("CPU", 2)])), (1, set(&[("CPU", 1)]))], &mut res).unwrap();
        assert_eq!(res.available(), &set(&[("CPU", 1)]));
        assert!(b.commit("g", &mut res));
        assert_eq!(res.available().get("CPU_group_0_g"), FixedPoint::from_int(2));
        assert_eq!(res.available().get("CPU_group_g"), FixedPoint::from_int(3), "any-bundle resource sums the bundles");
        assert_eq!(res.total().get("bundle_group_g"), FixedPoint::from_int(2000));
        assert!(!res.is_idle(), "a node holding a group is not idle");
        let (gone, back) = b.cancel("g", &[1]).unwrap();
        assert_eq!(gone.get("CPU_group_1_g"), FixedPoint::from_int(1));
        assert_eq!(gone.get("CPU_group_0_g"), FixedPoint::ZERO, "only the bundle named");
        res.remove_total(&gone);
        res.release(&back);
        let (gone, back) = b.cancel("g", &[]).unwrap();
        res.remove_total(&gone);
        res.release(&back);
        assert_eq!(res.total(), &set(&[("CPU", 4)]));
        assert_eq!(res.available(), &set(&[("CPU", 4)]));
        assert!(res.is_idle());
        assert!(b.cancel("g", &[]).is_none());
    }
}
