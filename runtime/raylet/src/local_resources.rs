//! The node's own resource accounting: total, available, what is queued by shape,
//! and whether it is idle or draining. Owned by the node state (`state.rs`):
//! leasing acquires and releases through it, and reports and stats read it.

use std::collections::BTreeMap;
use std::time::Instant;

use ray_common::ResourceSet;
use ray_proto::rpc::ResourceDemand;
use ray_proto::rpc::autoscaler::DrainNodeReason;

/// Queued requests of one shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemandCount {
    /// Could run here now, waiting for a worker.
    pub ready: u64,
    /// Fits the cluster, waiting for busy resources.
    pub backlog: u64,
    /// No node of the cluster can run it.
    pub infeasible: u64,
}

/// An accepted drain request.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    /// Why.
    pub reason: DrainNodeReason,
    /// The caller's words.
    pub message: String,
}

/// Resource accounting of one node.
#[derive(Debug)]
pub struct LocalResources {
    total: ResourceSet,
    available: ResourceSet,
    /// Taken beyond what was free (a blocked worker that woke up); paid back first.
    debt: ResourceSet,
    /// Leases granted and not returned: a node running work is never idle, even
    /// when its tasks hold no resources (`num_cpus=0`) or lent their CPU out.
    leases: u32,
    demand: BTreeMap<ResourceSet, DemandCount>,
    idle_since: Option<Instant>,
    drain: Option<Drain>,
}

impl LocalResources {
    /// A node with everything free.
    pub fn new(total: ResourceSet) -> Self {
        Self {
            available: total.clone(),
            total,
            debt: ResourceSet::new(),
            leases: 0,
            demand: BTreeMap::new(),
            idle_since: Some(Instant::now()),
            drain: None,
        }
    }

    /// Total resources.
    pub fn total(&self) -> &ResourceSet {
        &self.total
    }

    /// Free resources.
    pub fn available(&self) -> &ResourceSet {
        &self.available
    }

    /// Takes `req` if it is free and the node is not draining.
    pub fn try_acquire(&mut self, req: &ResourceSet) -> bool {
        if self.drain.is_some() || !req.is_subset_of(&self.available) {
            return false;
        }
        self.available.subtract(req);
        self.update_idle();
        true
    }

    /// Takes `req` even if it is not all free (a worker that was blocked in `ray.get`
    /// takes its CPU back); the shortfall is owed and repaid by the next releases.
    pub fn acquire_forced(&mut self, req: &ResourceSet) {
        for (k, v) in req.iter() {
            let free = self.available.get(k);
            let take = free.min(v);
            self.available.set(k, free - take);
            let owed = self.debt.get(k);
            self.debt.set(k, owed + (v - take));
        }
        self.update_idle();
    }

    /// Gives `req` back.
    pub fn release(&mut self, req: &ResourceSet) {
        let mut back = req.clone();
        for (k, v) in req.iter() {
            let owed = self.debt.get(k);
            let pay = owed.min(v);
            self.debt.set(k, owed - pay);
            back.set(k, v - pay);
        }
        self.available.add(&back);
        // Never exceed the total, whatever a buggy caller does.
        let capped: ResourceSet =
            self.available.iter().map(|(k, v)| (k.to_string(), v.min(self.total.get(k)))).collect();
        self.available = capped;
        self.update_idle();
    }

    /// New resources appear on the node, all free (a placement group bundle
    /// committed here).
    pub fn add_total(&mut self, r: &ResourceSet) {
        self.total.add(r);
        self.available.add(r);
        self.update_idle();
    }

    /// Resources leave the node (a bundle given back); what is free of them goes.
    pub fn remove_total(&mut self, r: &ResourceSet) {
        self.total.subtract(r);
        self.available.subtract(r);
        let capped: ResourceSet = self.available.iter().map(|(k, v)| (k.to_string(), v.min(self.total.get(k)))).collect();
        self.available = capped;
        self.update_idle();
    }

    /// A lease was granted.
    pub fn lease_started(&mut self) {
        self.leases += 1;
        self.update_idle();
    }

    /// A lease ended.
    pub fn lease_ended(&mut self) {
        self.leases = self.leases.saturating_sub(1);
        self.update_idle();
    }

    /// Replaces all queued demand.
    pub fn replace_demand(&mut self, demand: BTreeMap<ResourceSet, DemandCount>) {
        self.demand = demand.into_iter().filter(|(_, c)| *c != DemandCount::default()).collect();
        self.update_idle();
    }

    fn update_idle(&mut self) {
        let idle = self.available == self.total && self.demand.is_empty() && self.debt.is_empty() && self.leases == 0;
        match (idle, self.idle_since) {
            (true, None) => self.idle_since = Some(Instant::now()),
            (false, Some(_)) => self.idle_since = None,
            _ => {}
        }
    }

    /// Milliseconds idle, at least 1 when idle; 0 when busy.
    pub fn idle_duration_ms(&self) -> u64 {
        self.idle_since.map(|t| (t.elapsed().as_millis() as u64).max(1)).unwrap_or(0)
    }

    /// True when nothing is leased or queued.
    pub fn is_idle(&self) -> bool {
        self.idle_since.is_some()
    }

    /// Demand by shape, as reported to the GCS.
    pub fn demand_report(&self) -> Vec<ResourceDemand> {
        self.demand
            .iter()
            .map(|(shape, c)| ResourceDemand {
                shape: shape.to_f64_map(),
                num_ready_requests_queued: c.ready,
                backlog_size: c.backlog,
                num_infeasible_requests_queued: c.infeasible,
            })
            .collect()
    }

    /// Handles a drain request: idle termination is refused while work runs or waits;
    /// preemption is always accepted.
    pub fn drain(&mut self, reason: DrainNodeReason, message: String) -> Result<(), String> {
        if reason == DrainNodeReason::IdleTermination && !self.is_idle() {
            let used: ResourceSet = self
                .total
                .iter()
                .map(|(k, v)| (k.to_string(), v - self.available.get(k)))
                .collect();
            return Err(format!(
                "The node to be idle terminated is no longer idle ({used} in use, {} request shapes queued).",
                self.demand.len()
            ));
        }
        self.drain = Some(Drain { reason, message });
        Ok(())
    }

    /// The accepted drain, if any.
    pub fn drain_state(&self) -> Option<&Drain> {
        self.drain.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_common::FixedPoint;

    fn cpus(n: i64) -> ResourceSet {
        [("CPU".to_string(), FixedPoint::from_int(n))].into_iter().collect()
    }

    #[test]
    fn acquire_release_tracks_idleness() {
        let mut r = LocalResources::new(cpus(2));
        assert!(r.is_idle() && r.idle_duration_ms() >= 1);
        assert!(r.try_acquire(&cpus(2)));
        assert!(!r.try_acquire(&cpus(1)));
        assert!(!r.is_idle() && r.idle_duration_ms() == 0);
        r.release(&cpus(2));
        assert!(r.is_idle());
        r.release(&cpus(5));
        assert_eq!(r.available(), &cpus(2), "release never exceeds the total");
    }

    #[test]
    fn idle_drain_refused_while_busy_and_blocks_new_work() {
        let mut r = LocalResources::new(cpus(2));
        assert!(r.try_acquire(&cpus(1)));
        assert!(r.drain(DrainNodeReason::IdleTermination, "idle".into()).is_err());
        r.release(&cpus(1));
        r.replace_demand([(cpus(1), DemandCount { backlog: 1, ..Default::default() })].into());
        assert!(r.drain(DrainNodeReason::IdleTermination, "idle".into()).is_err());
        r.replace_demand(BTreeMap::new());
        assert!(r.drain(DrainNodeReason::IdleTermination, "idle".into()).is_ok());
        assert!(!r.try_acquire(&cpus(1)), "a draining node takes no new work");
    }

    #[test]
    fn forced_acquire_overcommits_and_is_repaid_first() {
        let mut r = LocalResources::new(cpus(1));
        assert!(r.try_acquire(&cpus(1)));
        r.acquire_forced(&cpus(1));
        assert!(!r.try_acquire(&cpus(1)));
        r.release(&cpus(1));
        assert!(!r.try_acquire(&cpus(1)), "the first release pays the debt");
        r.release(&cpus(1));
        assert!(r.is_idle());
        assert!(r.try_acquire(&cpus(1)));
    }

    #[test]
    fn a_lease_keeps_the_node_busy_even_without_resources() {
        let mut r = LocalResources::new(cpus(1));
        r.lease_started();
        assert!(!r.is_idle(), "a num_cpus=0 task or a blocked worker still runs");
        assert!(r.drain(DrainNodeReason::IdleTermination, "idle".into()).is_err());
        r.lease_ended();
        assert!(r.is_idle());
    }

    #[test]
    fn preemption_drain_is_always_accepted() {
        let mut r = LocalResources::new(cpus(2));
        assert!(r.try_acquire(&cpus(1)));
        assert!(r.drain(DrainNodeReason::Preemption, "spot".into()).is_ok());
    }
}
