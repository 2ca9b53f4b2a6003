//! The autoscaler's loop. Each round observes (the cluster state and the
//! provider's listing), reconciles the instance table with it, decides (the pure
//! scheduler), plans (records launches and drains), acts (the actuator, in the
//! background) and reports. Between rounds it waits for a cluster change, a tick,
//! or an action's outcome, which it applies to the table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ray_proto::rpc::autoscaler::AutoscalingState;
use ray_providers::{NodeProvider, TAG_INSTANCE_ID};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::actuator::{Actuator, Outcome};
use crate::backoff::{LAUNCH_FAILED, LaunchBackoff, LaunchFailure, UPDATE_FAILED};
use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterError};
use crate::config::ClusterConfig;
use crate::instance::manager::InstanceManager;
use crate::instance::store::{InstanceStorage, StoreError};
use crate::instance::{Instance, InstanceStatus};
use crate::metrics::AutoscalerMetrics;
use crate::reconciler::{self, Context};
use crate::reporter::Reporter;
use crate::scheduler;
use crate::setup::NodeSetup;

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The cluster state could not be read.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// The autoscaler: one loop over an instance manager, the reconciler, an actuator
/// and a reporter.
pub struct Autoscaler {
    config: ClusterConfig,
    cluster: Arc<dyn Cluster>,
    provider: Arc<dyn NodeProvider>,
    setup: Option<Arc<dyn NodeSetup>>,
    manager: InstanceManager,
    actuator: Actuator,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    backoff: LaunchBackoff,
    reporter: Reporter,
    clock: Clock,
    tick: Duration,
    state_version: u64,
    config_updates: Option<mpsc::UnboundedReceiver<Reconfigure>>,
    metrics: Option<Arc<AutoscalerMetrics>>,
}

/// A new cluster config for a running autoscaler (its file changed: `ray up
/// --no-restart`), with the node set-up made for it.
pub struct Reconfigure {
    /// The new config.
    pub config: ClusterConfig,
    /// Sets up nodes with the new config's commands and file mounts.
    pub setup: Option<Arc<dyn NodeSetup>>,
}

impl Autoscaler {
    /// An autoscaler over a config, a cluster, a provider and a record store.
    pub fn new(
        config: ClusterConfig,
        cluster: Arc<dyn Cluster>,
        provider: Arc<dyn NodeProvider>,
        storage: Arc<dyn InstanceStorage>,
    ) -> Self {
        let clock = Clock::start();
        let (actuator, outcomes) = Actuator::new(provider.clone(), cluster.clone(), clock);
        Self {
            config,
            cluster,
            provider,
            setup: None,
            manager: InstanceManager::new(storage, clock),
            actuator,
            outcomes,
            backoff: LaunchBackoff::new(),
            reporter: Reporter::new(),
            clock,
            tick: Duration::from_millis(1000),
            state_version: 0,
            config_updates: None,
            metrics: None,
        }
    }

    /// Records rounds, launches and failures into `metrics` (served at `/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<AutoscalerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets the longest sleep between rounds when nothing changes.
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Sets Ray up on launched instances with `setup` (the launcher's node
    /// updater), when the provider does not start Ray on them itself.
    pub fn with_setup(mut self, setup: Arc<dyn NodeSetup>) -> Self {
        self.set_setup(setup);
        self
    }

    fn set_setup(&mut self, setup: Arc<dyn NodeSetup>) {
        if !self.provider.boots_workers_itself() {
            self.actuator.set_setup(setup.clone());
            self.setup = Some(setup);
        }
    }

    /// Takes new configs from `updates` between rounds (the monitor watches the
    /// config file, as Ray's autoscaler re-reads it).
    pub fn with_config_updates(mut self, updates: mpsc::UnboundedReceiver<Reconfigure>) -> Self {
        self.config_updates = Some(updates);
        self
    }

    /// Uses a new config from the next round on: limits, node types, timeouts
    /// and (with the set-up made for it) what nodes run, so running workers
    /// whose hashes differ are updated or replaced. The provider stays: a
    /// changed `provider` section takes a restart of the head (`ray up`).
    pub fn reconfigure(&mut self, r: Reconfigure) {
        if r.config.provider != self.config.provider {
            tracing::warn!(
                "the new config changes the provider section; that takes effect when Ray restarts on the head (ray up)"
            );
        }
        let mut config = r.config;
        config.provider = self.config.provider.clone();
        tracing::info!(
            max_workers = config.max_workers,
            idle_timeout_minutes = config.idle_timeout_minutes,
            node_types = %config.node_types.iter().map(|t| format!("{}({} min {} max {})", t.name, t.resources, t.min_workers, t.max_workers)).collect::<Vec<_>>().join(", "),
            "Monitor: the cluster config changed; using it from now on"
        );
        self.config = config;
        if let Some(setup) = r.setup {
            self.set_setup(setup);
        }
    }

    /// Uses another clock (tests start it at a fixed wall time).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self.manager.set_clock(clock);
        self.actuator.set_clock(clock);
        self
    }

    /// The instance table (for tests and tools).
    pub fn instances(&self) -> &BTreeMap<String, Instance> {
        self.manager.instances()
    }

    /// The last autoscaling state the cluster took.
    pub fn last_report(&self) -> Option<&AutoscalingState> {
        self.reporter.last_report()
    }

    /// Reads the instance table from storage (a restart finds what it had asked for).
    pub async fn load(&mut self) -> Result<usize, StoreError> {
        let n = self.manager.load().await?;
        if n > 0 {
            let summary: Vec<String> = self.instances().values().map(|i| format!("{}={}", i.id, i.status())).collect();
            tracing::info!(instances = %summary.join(" "), "resumed with the instance table from the GCS");
        }
        Ok(n)
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        while let Err(e) = self.load().await {
            tracing::warn!(error = %e, "cannot read the instance table yet; retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        let wake = Arc::new(Notify::new());
        let (cluster, w, s) = (self.cluster.clone(), wake.clone(), shutdown.clone());
        tokio::spawn(async move { cluster.watch(w, s).await });
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "autoscaler round failed; retrying");
                if let Some(m) = &self.metrics {
                    m.round_failed();
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.tick) => {}
                Some(o) = self.outcomes.recv() => self.apply(o).await,
                Some(r) = next_config(&mut self.config_updates) => self.reconfigure(r),
                _ = shutdown.cancelled() => break,
            }
            self.apply_outcomes().await;
        }
        tracing::info!("autoscaler stopped");
    }

    /// One observe-reconcile-decide-act-report round (a new config that
    /// arrived is used first).
    pub async fn round(&mut self) -> Result<(), RoundError> {
        while let Some(r) = self.config_updates.as_mut().and_then(|u| u.try_recv().ok()) {
            self.reconfigure(r);
        }
        let started = self.clock.instant();
        let state = self.cluster.resource_state(self.state_version).await?;
        self.state_version = state.cluster_resource_state_version;
        let cloud = match self.provider.list().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, provider = self.provider.name(), "cannot list instances; skipping cleanup this round");
                None
            }
        };
        let in_flight = self.actuator.in_flight().clone();
        let cx = Context {
            config: &self.config,
            in_flight: &in_flight,
            backoff: &self.backoff,
            now: self.clock.instant(),
            now_ms: self.clock.now_ms(),
            setup: self.setup.as_deref(),
        };
        let mut actions = reconciler::sync::sync(&mut self.manager, &cx, &state, cloud.as_deref()).await;
        let input = reconciler::input::input(&cx, self.manager.instances(), &state);
        let decision = scheduler::decide(&input);
        actions.extend(reconciler::plan::plan(&mut self.manager, &cx, &decision, &state).await);
        self.actuator.execute(actions);
        self.reporter.narrate(&state, &decision);
        let sent = self
            .reporter
            .report(
                self.cluster.as_ref(),
                &self.clock,
                &crate::reporter::Round {
                    state: &state,
                    decision: &decision,
                    instances: self.manager.instances(),
                    cloud: cloud.as_deref(),
                    backoff: &self.backoff,
                    prices: &self.config.node_types.iter().filter_map(|t| Some((t.name.clone(), t.price?))).collect(),
                    input: &input,
                    now: self.clock.instant(),
                },
            )
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot report the autoscaling state");
        }
        if let Some(m) = &self.metrics {
            let took = self.clock.instant().saturating_duration_since(started);
            m.round(took, self.manager.instances(), self.backoff.recent_failures(), &self.config);
        }
        Ok(())
    }

    /// Applies every outcome that has arrived, without waiting; returns how many.
    pub async fn apply_outcomes(&mut self) -> usize {
        let mut n = 0;
        while let Ok(o) = self.outcomes.try_recv() {
            self.apply(o).await;
            n += 1;
        }
        n
    }

    /// Records what an action did.
    async fn apply(&mut self, o: Outcome) {
        self.actuator.finished(&o);
        match o {
            Outcome::Launched { node_type, result: Ok(created), started_ms, .. } => {
                if let Some(m) = &self.metrics {
                    m.launched(created.len(), Duration::from_millis(self.clock.now_ms().saturating_sub(started_ms)));
                }
                self.backoff.succeeded(&node_type);
                for c in created {
                    let Some(iid) = c.tags.get(TAG_INSTANCE_ID) else { continue };
                    if self.manager.get(iid).is_some_and(|i| i.status() == InstanceStatus::Requested) {
                        let cloud_id = c.cloud_id.clone();
                        let details = format!("allocated as {cloud_id}");
                        let _ = self.manager.transition(iid, InstanceStatus::Allocated, details, |x| x.cloud_id = Some(cloud_id)).await;
                    }
                }
            }
            Outcome::Launched { node_type, instance_ids, result: Err(e), started_ms, .. } => {
                let n = instance_ids.len();
                if let Some(m) = &self.metrics {
                    m.launch_failed(n);
                }
                let failure = LaunchFailure { kind: LAUNCH_FAILED, instance: None, node_type: &node_type, count: n, error: &e, started_ms, failed_ms: self.clock.now_ms() };
                let reason = self.backoff.failed(&failure, self.clock.instant());
                tracing::warn!(node_type = %node_type, count = n, class = %e.class, "Failed to launch {n} node(s) of type {node_type}: {reason}");
                for id in &instance_ids {
                    if self.manager.get(id).is_some_and(|i| i.status() == InstanceStatus::Requested) {
                        let _ = self.manager.transition(id, InstanceStatus::AllocationFailed, format!("launch failed: {e}"), |_| {}).await;
                    }
                }
            }
            Outcome::Drained { instance_id, accepted, message } => {
                if self.manager.get(&instance_id).is_none_or(|i| i.status() != InstanceStatus::Draining) {
                    return;
                }
                if accepted {
                    let why = message.clone();
                    let details = format!("drain accepted: {message}");
                    let recorded = self.manager.transition(&instance_id, InstanceStatus::Terminating, details, |x| x.termination_reason = Some(why)).await;
                    if recorded.is_ok() {
                        self.actuator.execute(reconciler::terminate_action(&self.manager, &instance_id).into_iter().collect());
                    }
                } else {
                    let details = format!("drain not accepted; keeping the node: {message}");
                    let _ = self
                        .manager
                        .transition(&instance_id, InstanceStatus::Running, details, |x| {
                            x.termination_reason = None;
                            x.retire_reason = None;
                        })
                        .await;
                }
            }
            Outcome::SetUp { instance_id, result: Ok(()), .. } => {
                if let Some(m) = &self.metrics {
                    m.set_up(true);
                }
                let now = self.clock.now_ms();
                let _ = self.manager.update(&instance_id, "Ray is set up on it; waiting for its raylet to register", |x| x.setup_done_ms = Some(now)).await;
            }
            Outcome::SetUp { instance_id, node_type, address, result: Err(why), started_ms } => {
                if let Some(m) = &self.metrics {
                    m.set_up(false);
                }
                let error = ray_providers::ProviderError::new(ray_providers::ErrorClass::Other, why.clone());
                let failure = LaunchFailure {
                    kind: UPDATE_FAILED,
                    instance: Some(&address),
                    node_type: &node_type,
                    count: 1,
                    error: &error,
                    started_ms,
                    failed_ms: self.clock.now_ms(),
                };
                let reason = self.backoff.failed(&failure, self.clock.instant());
                tracing::warn!(instance = %instance_id, node_type = %node_type, address = %address, "Failed to set up {address} ({node_type}): {reason}");
                let Some(status) = self.manager.get(&instance_id).map(|i| i.status()) else { return };
                let details = format!("update-failed: {why}");
                let failed = match status {
                    InstanceStatus::Installing => self.manager.transition(&instance_id, InstanceStatus::InstallFailed, details, |_| {}).await.is_ok(),
                    InstanceStatus::Running => true,
                    _ => false,
                };
                if failed {
                    let action = reconciler::terminate(&mut self.manager, &instance_id, format!("update-failed on {address}: {why}")).await;
                    self.actuator.execute(action.into_iter().collect());
                }
            }
            Outcome::Terminated { instance_id, result } => {
                match result {
                    Err(e) => tracing::warn!(instance = %instance_id, error = %e, "terminate failed; will retry"),
                    Ok(_) => {
                        if let Some(m) = &self.metrics {
                            m.stopped();
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod setup_tests;
#[cfg(test)]
mod tests;

/// The next config update, or never when there is no source of them.
async fn next_config(
    updates: &mut Option<mpsc::UnboundedReceiver<Reconfigure>>,
) -> Option<Reconfigure> {
    match updates {
        Some(u) => u.recv().await,
        None => std::future::pending().await,
    }
}
