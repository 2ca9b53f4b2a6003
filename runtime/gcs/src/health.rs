//! Active health checks: the GCS asks every live raylet "are you serving?" each
//! period; after `failure_threshold` failures in a row the node is marked DEAD.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ray_common::rpc::Channel;
use ray_proto::rpc::DeathReason;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Gcs;
use crate::state::death;

/// The per-node checking tasks.
#[derive(Default)]
pub struct HealthChecker {
    tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl HealthChecker {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops checking a node (it unregistered or died).
    pub fn stop(&self, node_id: &str) {
        if let Some(h) = self.tasks().remove(node_id) {
            h.abort();
        }
    }

    /// Stops every check (shutdown).
    pub fn stop_all(&self) {
        for (_, h) in self.tasks().drain() {
            h.abort();
        }
    }

    /// Number of nodes being checked.
    pub fn len(&self) -> usize {
        self.tasks().len()
    }

    /// True when no node is being checked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Starts checking `node_id` at `addr` (`host:port`).
pub fn watch(gcs: &Arc<Gcs>, node_id: String, addr: String) {
    let channel = match gcs.security().connect_lazy(&addr, gcs.config().health_check_timeout()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(node_id = %node_id, %addr, error = %e, "cannot health-check node: bad address");
            return;
        }
    };
    let weak = Arc::downgrade(gcs);
    let id = node_id.clone();
    let task = tokio::spawn(async move {
        let Some(cfg) = weak.upgrade().map(|g| g.config().clone()) else { return };
        tokio::time::sleep(cfg.health_check_initial_delay()).await;
        let mut failures = 0u32;
        let mut last_error = String::new();
        loop {
            match check_once(channel.clone(), cfg.health_check_timeout()).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::debug!(node_id = %id, %addr, failures, error = %e, "health check failed");
                    last_error = e;
                }
            }
            if failures >= cfg.health_check_failure_threshold.max(1) {
                let Some(gcs) = weak.upgrade() else { return };
                let msg = format!(
                    "health check failed due to missing too many heartbeats: the raylet at {addr} failed \
                     {failures} checks in a row ({last_error}); it may have crashed or been killed, or its \
                     machine may be unreachable"
                );
                tracing::warn!(node_id = %id, %addr, failures, "marking node dead: {msg}");
                gcs.change(|st| match st.mark_dead(&id, death(DeathReason::UnexpectedTermination, msg)) {
                    Ok(c) => ((), c),
                    Err(_) => ((), None),
                });
                gcs.health().tasks().remove(&id);
                return;
            }
            tokio::time::sleep(cfg.health_check_period()).await;
        }
    });
    if let Some(old) = gcs.health().tasks().insert(node_id, task.abort_handle()) {
        old.abort();
    }
}

async fn check_once(channel: Channel, timeout: Duration) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(r)) => Err(format!("not serving (status {})", r.get_ref().status)),
    }
}
