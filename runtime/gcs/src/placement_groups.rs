//! The placement group table and where a group's bundles go.
//!
//! A group is PENDING until every bundle has a node, CREATED once the bundles
//! are reserved there (the two-phase reservation is in `pg_scheduler.rs`),
//! RESCHEDULING when a node holding some of its bundles died (those bundles are
//! placed again), and REMOVED for good. [`place`] is pure: given what each
//! node has free, it picks a node per bundle by the group's strategy, or says
//! the group cannot be placed now.

use std::collections::{BTreeMap, HashMap, HashSet};

use ray_common::ResourceSet;
use ray_proto::rpc::{PlacementGroupInfo, ResourceMap};

/// Waiting for its bundles to be placed.
pub const PENDING: &str = "PENDING";
/// Every bundle reserved.
pub const CREATED: &str = "CREATED";
/// Removed (by the user, or with its job).
pub const REMOVED: &str = "REMOVED";
/// Some bundles lost their node and are being placed again.
pub const RESCHEDULING: &str = "RESCHEDULING";

/// Ray's four strategies.
pub const STRATEGIES: [&str; 4] = ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"];

/// A node's free resources, as the planner sees them.
#[derive(Debug, Clone)]
pub struct NodeFree {
    /// Hex id.
    pub node_id: String,
    /// Free now.
    pub available: ResourceSet,
}

/// The bundles of a group as resource sets.
pub fn bundle_sets(g: &PlacementGroupInfo) -> Vec<ResourceSet> {
    g.bundles.iter().map(|b| ResourceSet::from_f64_map_lossy(&b.amounts)).collect()
}

/// A node for every bundle (keeping the ones in `fixed`), or `None` when the
/// group cannot be placed on `nodes` now. Takes what it places off `nodes`.
pub fn place(strategy: &str, bundles: &[ResourceSet], fixed: &[String], nodes: &mut [NodeFree]) -> Option<Vec<String>> {
    let mut out: Vec<String> = (0..bundles.len()).map(|i| fixed.get(i).cloned().unwrap_or_default()).collect();
    let todo: Vec<usize> = {
        let mut t: Vec<usize> = (0..bundles.len()).filter(|i| out[*i].is_empty()).collect();
        // Largest first: the hardest to fit go while there is most room.
        t.sort_by(|a, b| size(&bundles[*b]).total_cmp(&size(&bundles[*a])));
        t
    };
    let mut trial: Vec<NodeFree> = nodes.to_vec();
    let used: HashSet<String> = out.iter().filter(|n| !n.is_empty()).cloned().collect();
    let ok = match strategy {
        "STRICT_PACK" => {
            let mut sum = ResourceSet::new();
            for &i in &todo {
                sum.add(&bundles[i]);
            }
            let target = match used.iter().next() {
                Some(n) => trial.iter_mut().find(|x| &x.node_id == n).filter(|x| sum.is_subset_of(&x.available)),
                None => trial.iter_mut().filter(|x| sum.is_subset_of(&x.available)).min_by(|a, b| size(&a.available).total_cmp(&size(&b.available))),
            };
            match target {
                Some(t) => {
                    t.available.subtract(&sum);
                    for &i in &todo {
                        out[i] = t.node_id.clone();
                    }
                    true
                }
                None => false,
            }
        }
        "STRICT_SPREAD" => {
            let mut taken = used.clone();
            todo.iter().all(|&i| {
                let pick = trial
                    .iter_mut()
                    .filter(|x| !taken.contains(&x.node_id) && bundles[i].is_subset_of(&x.available))
                    .max_by(|a, b| size(&a.available).total_cmp(&size(&b.available)));
                match pick {
                    Some(t) => {
                        t.available.subtract(&bundles[i]);
                        taken.insert(t.node_id.clone());
                        out[i] = t.node_id.clone();
                        true
                    }
                    None => false,
                }
            })
        }
        "PACK" => {
            // All on one node if one can hold them, else as few nodes as will do.
            if let Some(all) = place("STRICT_PACK", bundles, fixed, &mut trial.clone()) {
                out = all;
                for &i in &todo {
                    if let Some(t) = trial.iter_mut().find(|x| x.node_id == out[i]) {
                        t.available.subtract(&bundles[i]);
                    }
                }
                true
            } else {
                let mut opened: Vec<String> = used.iter().cloned().collect();
                todo.iter().all(|&i| {
                    let on_open = trial.iter_mut().filter(|x| opened.contains(&x.node_id) && bundles[i].is_subset_of(&x.available)).next();
                    let pick = match on_open {
                        Some(t) => Some(t),
                        None => trial
                            .iter_mut()
                            .filter(|x| bundles[i].is_subset_of(&x.available))
                            .max_by(|a, b| size(&a.available).total_cmp(&size(&b.available))),
                    };
                    match pick {
                        Some(t) => {
                            t.available.subtract(&bundles[i]);
                            if !opened.contains(&t.node_id) {
                                opened.push(t.node_id.clone());
                            }
                            out[i] = t.node_id.clone();
                            true
                        }
                        None => false,
                    }
                })
            }
        }
        _ => {
            // SPREAD: a node not used yet when one fits, else the least used.
            let mut count: HashMap<String, usize> = HashMap::new();
            for n in &used {
                *count.entry(n.clone()).or_default() += 1;
            }
            todo.iter().all(|&i| {
                let pick = trial.iter_mut().filter(|x| bundles[i].is_subset_of(&x.available)).min_by(|a, b| {
                    let ca = count.get(&a.node_id).copied().unwrap_or(0);
                    let cb = count.get(&b.node_id).copied().unwrap_or(0);
                    ca.cmp(&cb).then(size(&b.available).total_cmp(&size(&a.available)))
                });
                match pick {
                    Some(t) => {
                        t.available.subtract(&bundles[i]);
                        *count.entry(t.node_id.clone()).or_default() += 1;
                        out[i] = t.node_id.clone();
                        true
                    }
                    None => false,
                }
            })
        }
    };
    if !ok {
        return None;
    }
    nodes.clone_from_slice(&trial);
    Some(out)
}

/// A rough size of a resource set, to order bundles and nodes.
fn size(r: &ResourceSet) -> f64 {
    r.iter().map(|(_, v)| v.to_f64()).sum()
}

/// The groups, in creation order.
#[derive(Debug, Default)]
pub struct PlacementGroups {
    groups: BTreeMap<u64, PlacementGroupInfo>,
    by_id: HashMap<String, u64>,
    next: u64,
    /// Groups changed since they were last written to storage.
    pub(crate) dirty: HashSet<String>,
}

impl PlacementGroups {
    /// Adds a new group (PENDING). Errors name what is wrong with it.
    pub fn create(&mut self, mut g: PlacementGroupInfo, now_ms: u64) -> Result<(), String> {
        if g.placement_group_id.is_empty() || g.placement_group_id.len() > 64 {
            return Err("invalid placement_group_id".into());
        }
        if self.by_id.contains_key(&g.placement_group_id) {
            return Err(format!("placement group {} already exists", g.placement_group_id));
        }
        if !STRATEGIES.contains(&g.strategy.as_str()) {
            return Err(format!("invalid placement group strategy {:?}: expected one of {}", g.strategy, STRATEGIES.join(", ")));
        }
        if g.bundles.is_empty() || g.bundles.len() > 10_000 {
            return Err("a placement group needs between 1 and 10000 bundles".into());
        }
        for (i, b) in g.bundles.iter().enumerate() {
            let set = ResourceSet::from_f64_map(&b.amounts).map_err(|e| format!("bundle {i}: {e}"))?;
            if set.is_empty() {
                return Err(format!("bundle {i} is empty: every bundle must ask for some resource"));
            }
        }
        if !g.name.is_empty() && self.named(&g.name, &g.namespace).is_some() {
            return Err(format!("a placement group named {:?} already exists", g.name));
        }
        g.state = PENDING.into();
        g.bundle_node_ids = vec![String::new(); g.bundles.len()];
        g.create_time_ms = now_ms;
        self.next += 1;
        self.by_id.insert(g.placement_group_id.clone(), self.next);
        self.dirty.insert(g.placement_group_id.clone());
        self.groups.insert(self.next, g);
        Ok(())
    }

    /// A group by id.
    pub fn get(&self, id: &str) -> Option<&PlacementGroupInfo> {
        self.by_id.get(id).and_then(|k| self.groups.get(k))
    }

    /// A group to change: it is written to storage at the next flush.
    fn get_mut(&mut self, id: &str) -> Option<&mut PlacementGroupInfo> {
        let k = self.by_id.get(id)?;
        self.dirty.insert(id.to_string());
        self.groups.get_mut(k)
    }

    /// Rebuilds the table from stored records (a restarted GCS), in creation
    /// order. A reservation that was under way when the GCS stopped is
    /// forgotten: its group waits to be placed again.
    pub fn restore(&mut self, mut groups: Vec<PlacementGroupInfo>) {
        groups.sort_by(|a, b| (a.create_time_ms, &a.placement_group_id).cmp(&(b.create_time_ms, &b.placement_group_id)));
        for mut g in groups {
            if g.state == PENDING {
                g.bundle_node_ids = vec![String::new(); g.bundles.len()];
            }
            self.next += 1;
            self.by_id.insert(g.placement_group_id.clone(), self.next);
            self.groups.insert(self.next, g);
        }
    }

    /// A live (not removed) group by name.
    pub fn named(&self, name: &str, namespace: &str) -> Option<&PlacementGroupInfo> {
        self.groups.values().find(|g| g.name == name && g.namespace == namespace && g.state != REMOVED)
    }

    /// Every group.
    pub fn all(&self) -> Vec<PlacementGroupInfo> {
        self.groups.values().cloned().collect()
    }

    /// Groups waiting for placement (PENDING or RESCHEDULING), oldest first.
    pub fn waiting(&self) -> Vec<PlacementGroupInfo> {
        self.groups.values().filter(|g| g.state == PENDING || g.state == RESCHEDULING).cloned().collect()
    }

    /// Records why a group still waits.
    pub fn set_scheduling_state(&mut self, id: &str, why: &str) {
        if let Some(g) = self.get_mut(id) {
            g.scheduling_state = why.to_string();
        }
    }

    /// The reservation of `id` on `nodes` (one per bundle) starts: the bundles
    /// count as placed from now on, so the autoscaler does not launch nodes for
    /// them while the raylets prepare. Returns the nodes they had before.
    pub fn reserving(&mut self, id: &str, nodes: Vec<String>) -> Vec<String> {
        match self.get_mut(id) {
            Some(g) => std::mem::replace(&mut g.bundle_node_ids, nodes),
            None => Vec::new(),
        }
    }

    /// The reservation failed: the bundles have the nodes they had before.
    pub fn reservation_failed(&mut self, id: &str, before: Vec<String>) {
        if let Some(g) = self.get_mut(id)
            && g.state != REMOVED
        {
            g.bundle_node_ids = before;
        }
    }

    /// The reservation of `id` succeeded on `nodes` (one per bundle): CREATED,
    /// unless it was removed meanwhile (then false: the caller gives the
    /// bundles back).
    pub fn created(&mut self, id: &str, nodes: Vec<String>) -> bool {
        match self.get_mut(id) {
            Some(g) if g.state != REMOVED => {
                g.bundle_node_ids = nodes;
                g.state = CREATED.into();
                g.scheduling_state = String::new();
                true
            }
            _ => false,
        }
    }

    /// Removes a group; returns the nodes holding its bundles (to give them back).
    pub fn remove(&mut self, id: &str) -> Option<Vec<String>> {
        let g = self.get_mut(id)?;
        if g.state == REMOVED {
            return Some(Vec::new());
        }
        g.state = REMOVED.into();
        let mut nodes: Vec<String> = g.bundle_node_ids.iter().filter(|n| !n.is_empty()).cloned().collect();
        nodes.sort();
        nodes.dedup();
        Some(nodes)
    }

    /// Bundles on nodes that are no longer alive lose their node; their groups
    /// are RESCHEDULING. Returns the ids of groups that changed.
    pub fn nodes_gone(&mut self, alive: &HashSet<String>) -> Vec<String> {
        let mut changed = Vec::new();
        for g in self.groups.values_mut().filter(|g| g.state == CREATED || g.state == RESCHEDULING) {
            let mut lost = false;
            for n in g.bundle_node_ids.iter_mut() {
                if !n.is_empty() && !alive.contains(n) {
                    n.clear();
                    lost = true;
                }
            }
            if lost {
                g.state = RESCHEDULING.into();
                changed.push(g.placement_group_id.clone());
            }
        }
        self.dirty.extend(changed.iter().cloned());
        changed
    }

    /// Non-detached groups of jobs that ended; each is removed (with the
    /// nodes to give bundles back on).
    pub fn remove_for_dead_jobs(&mut self, dead_jobs: &HashSet<String>) -> Vec<(String, Vec<String>)> {
        let ids: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.state != REMOVED && !g.detached && dead_jobs.contains(&g.creator_job_id))
            .map(|g| g.placement_group_id.clone())
            .collect();
        ids.into_iter().filter_map(|id| self.remove(&id).map(|n| (id, n))).collect()
    }

    /// The bundles still to place of each waiting group, with its strategy, as
    /// the autoscaler's gang demand: (id, strategy, bundles).
    pub fn gang_demand(&self) -> Vec<(String, String, Vec<ResourceMap>)> {
        self.groups
            .values()
            .filter(|g| g.state == PENDING || g.state == RESCHEDULING)
            .map(|g| {
                let bundles = g
                    .bundles
                    .iter()
                    .zip(&g.bundle_node_ids)
                    .filter(|(_, n)| n.is_empty())
                    .map(|(b, _)| b.clone())
                    .collect();
                (g.placement_group_id.clone(), g.strategy.clone(), bundles)
            })
            .filter(|(_, _, b): &(String, String, Vec<ResourceMap>)| !b.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_common::FixedPoint;

    fn cpu(n: i64) -> ResourceSet {
        [("CPU".to_string(), FixedPoint::from_int(n))].into_iter().collect()
    }

    fn nodes(free: &[i64]) -> Vec<NodeFree> {
        free.iter().enumerate().map(|(i, f)| NodeFree { node_id: format!("n{i}"), available: cpu(*f) }).collect()
    }

    #[test]
    fn strict_spread_needs_a_node_per_bundle() {
        let b = vec![cpu(1), cpu(1), cpu(1)];
        let mut two = nodes(&[4, 4]);
        assert_eq!(place("STRICT_SPREAD", &b, &[], &mut two), None);
        assert_eq!(two[0].available, cpu(4), "nothing taken when it fails");
        let mut three = nodes(&[4, 4, 4]);
        let got = place("STRICT_SPREAD", &b, &[], &mut three).unwrap();
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 3);
        assert!(three.iter().all(|n| n.available == cpu(3)));
    }

    #[test]
    fn strict_pack_needs_one_node_for_all() {
        let b = vec![cpu(2), cpu(2)];
        assert_eq!(place("STRICT_PACK", &b, &[], &mut nodes(&[3, 3])), None);
        let got = place("STRICT_PACK", &b, &[], &mut nodes(&[3, 4])).unwrap();
        assert_eq!(got, vec!["n1", "n1"]);
    }

    #[test]
    fn pack_prefers_one_node_and_spread_prefers_many_but_both_bend() {
        let b = vec![cpu(2), cpu(2)];
        assert_eq!(place("PACK", &b, &[], &mut nodes(&[4, 4])).unwrap(), vec!["n0", "n0"]);
        let got = place("PACK", &b, &[], &mut nodes(&[3, 3])).unwrap();
        assert_ne!(got[0], got[1], "does not fit on one: uses two");
        let got = place("SPREAD", &b, &[], &mut nodes(&[4, 4])).unwrap();
        assert_ne!(got[0], got[1]);
        let got = place("SPREAD", &b, &[], &mut nodes(&[4])).unwrap();
        assert_eq!(got, vec!["n0", "n0"], "one node: both there");
        assert_eq!(place("SPREAD", &[cpu(5)], &[], &mut nodes(&[4, 4])), None);
    }

    #[test]
    fn rescheduled_bundles_keep_the_strategy_against_the_placed_ones() {
        let b = vec![cpu(1), cpu(1)];
        let fixed = vec!["n0".to_string(), String::new()];
        let got = place("STRICT_SPREAD", &b, &fixed, &mut nodes(&[4, 4])).unwrap();
        assert_eq!(got, vec!["n0", "n1"]);
        let got = place("STRICT_PACK", &b, &fixed, &mut nodes(&[4, 4])).unwrap();
        assert_eq!(got, vec!["n0", "n0"]);
    }

    #[test]
    fn groups_go_pending_created_rescheduling_removed() {
        let mut t = PlacementGroups::default();
        let g = PlacementGroupInfo {
            placement_group_id: "g1".into(),
            strategy: "STRICT_SPREAD".into(),
            bundles: vec![ResourceMap { amounts: [("CPU".to_string(), 1.0)].into() }; 2],
            creator_job_id: "01000000".into(),
            name: "pg".into(),
            ..Default::default()
        };
        t.create(g.clone(), 1).unwrap();
        assert!(t.create(g.clone(), 1).unwrap_err().contains("exists"));
        let bad = PlacementGroupInfo { placement_group_id: "g2".into(), strategy: "TIGHT".into(), ..g.clone() };
        assert!(t.create(bad, 1).unwrap_err().contains("STRICT_SPREAD"));
        assert_eq!(t.gang_demand()[0].2.len(), 2);
        let before = t.reserving("g1", vec!["a".into(), "b".into()]);
        assert!(t.gang_demand().is_empty(), "bundles being reserved are not demand");
        t.reservation_failed("g1", before);
        assert_eq!(t.gang_demand()[0].2.len(), 2);
        assert!(t.created("g1", vec!["a".into(), "b".into()]));
        assert!(t.gang_demand().is_empty());
        let alive: HashSet<String> = ["a".to_string()].into();
        assert_eq!(t.nodes_gone(&alive), vec!["g1"]);
        assert_eq!(t.get("g1").unwrap().state, RESCHEDULING);
        assert_eq!(t.gang_demand()[0].2.len(), 1, "only the lost bundle is demand");
        let dead: HashSet<String> = ["01000000".to_string()].into();
        assert_eq!(t.remove_for_dead_jobs(&dead), vec![("g1".to_string(), vec!["a".to_string()])]);
        assert_eq!(t.get("g1").unwrap().state, REMOVED);
        assert!(t.named("pg", "").is_none());
    }
}
