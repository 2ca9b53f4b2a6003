//! The actuator carries out the reconciler's actions in background tasks: creates
//! and terminates through the provider (rate-limited), drains through the
//! cluster. It sends each outcome back on a channel; the loop applies it to the
//! instance table. It remembers what is under way so that nothing is asked twice,
//! and dropping it stops its tasks (as a crash would).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use ray_proto::rpc::autoscaler::DrainNodeReason;
use ray_providers::{CloudInstance, NodeProvider, ProviderError};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::clock::{Clock, TokioClock};
use crate::cluster::Cluster;
use crate::reconciler::Action;
use crate::scheduler::TerminateReason;
use crate::setup::NodeSetup;

/// Provider calls per second (the burst is the same).
const PROVIDER_CALLS_PER_SECOND: u32 = 10;

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Duration>>;

/// What is under way.
#[derive(Debug, Default, Clone)]
pub struct InFlight {
    /// Launch request ids being created.
    pub launches: HashSet<String>,
    /// Instance ids being drained.
    pub drains: HashSet<String>,
    /// Instance ids being terminated.
    pub terminations: HashSet<String>,
    /// Instance ids Ray is being set up on.
    pub setups: HashSet<String>,
}

/// How an action ended.
#[derive(Debug)]
pub enum Outcome {
    /// The provider answered a launch request.
    Launched {
        /// Launch request id.
        request_id: String,
        /// Node type.
        node_type: String,
        /// Instances the request asked for.
        instance_ids: Vec<String>,
        /// The instances of the request, or why it failed.
        result: Result<Vec<CloudInstance>, ProviderError>,
        /// When the call started (ms since epoch).
        started_ms: u64,
    },
    /// The cluster answered a drain.
    Drained {
        /// Instance id.
        instance_id: String,
        /// True when the node takes no new work.
        accepted: bool,
        /// The drain's reason when accepted, else why it was refused or failed.
        message: String,
    },
    /// Setting Ray up on an instance ended.
    SetUp {
        /// Instance id.
        instance_id: String,
        /// Its node type.
        node_type: String,
        /// Its address (for `ray status`).
        address: String,
        /// Done, or which step failed and why.
        result: Result<(), String>,
        /// When the set-up started (ms since epoch).
        started_ms: u64,
    },
    /// The provider answered a terminate.
    Terminated {
        /// Instance id.
        instance_id: String,
        /// Done, or why not.
        result: Result<(), ProviderError>,
    },
}

/// Runs actions in the background.
pub struct Actuator {
    provider: Arc<dyn NodeProvider>,
    setup: Option<Arc<dyn NodeSetup>>,
    cluster: Arc<dyn Cluster>,
    limiter: Arc<Limiter>,
    limiter_clock: TokioClock,
    clock: Clock,
    tx: mpsc::UnboundedSender<Outcome>,
    in_flight: InFlight,
    /// Stops each set-up under way, by instance id (its instance is terminated).
    setup_stops: HashMap<String, CancellationToken>,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl Actuator {
    /// An actuator over a provider and a cluster; outcomes arrive on the receiver.
    pub fn new(provider: Arc<dyn NodeProvider>, cluster: Arc<dyn Cluster>, clock: Clock) -> (Self, mpsc::UnboundedReceiver<Outcome>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let quota = Quota::per_second(NonZeroU32::new(PROVIDER_CALLS_PER_SECOND).unwrap_or(NonZeroU32::MIN));
        let limiter_clock = TokioClock::new();
        let stop = CancellationToken::new();
        let a = Self {
            provider,
            setup: None,
            cluster,
            limiter: Arc::new(RateLimiter::direct_with_clock(quota, limiter_clock)),
            limiter_clock,
            clock,
            tx,
            in_flight: InFlight::default(),
            setup_stops: HashMap::new(),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        };
        (a, rx)
    }

    /// Sets Ray up on launched instances with `setup` (providers that do not
    /// start Ray themselves).
    pub fn set_setup(&mut self, setup: Arc<dyn NodeSetup>) {
        self.setup = Some(setup);
    }

    /// Uses another clock for outcome timestamps.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// What is under way.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Starts every action that is not already under way.
    pub fn execute(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Launch(req) => {
                    if !self.in_flight.launches.insert(req.request_id.clone()) {
                        continue;
                    }
                    let provider = self.provider.clone();
                    let clock = self.clock;
                    self.spawn_limited(async move {
                        let started_ms = clock.now_ms();
                        let result = provider.create(&req).await;
                        Some(Outcome::Launched {
                            request_id: req.request_id,
                            node_type: req.node_type,
                            instance_ids: req.instance_ids,
                            result,
                            started_ms,
                        })
                    });
                }
                Action::Drain { instance_id, node_id, reason, message } => {
                    if !self.in_flight.drains.insert(instance_id.clone()) {
                        continue;
                    }
                    let cluster = self.cluster.clone();
                    let reason = if reason == TerminateReason::Idle { DrainNodeReason::IdleTermination } else { DrainNodeReason::Preemption };
                    self.spawn(async move {
                        let (accepted, message) = match cluster.drain_node(&node_id, reason, &message).await {
                            Ok(r) if r.accepted => (true, message),
                            Ok(r) => (false, r.rejection),
                            Err(e) => (false, format!("drain call failed: {e}")),
                        };
                        Some(Outcome::Drained { instance_id, accepted, message })
                    });
                }
                Action::Terminate { instance_id, cloud_id } => {
                    if !self.in_flight.terminations.insert(instance_id.clone()) {
                        continue;
                    }
                    // A set-up still running there would start Ray on a machine
                    // being given back: stop it (its ssh session ends, and with it
                    // the commands on the node).
                    if let Some(stop) = self.setup_stops.remove(&instance_id) {
                        tracing::info!(instance = %instance_id, "stopping its set-up: the instance is being terminated");
                        stop.cancel();
                        self.in_flight.setups.remove(&instance_id);
                    }
                    let provider = self.provider.clone();
                    self.spawn_limited(async move {
                        let result = provider.terminate(&[cloud_id]).await;
                        Some(Outcome::Terminated { instance_id, result })
                    });
                }
                Action::SetUp { instance_id, instance, node_type } => {
                    let Some(setup) = self.setup.clone() else { continue };
                    if !self.in_flight.setups.insert(instance_id.clone()) {
                        continue;
                    }
                    let clock = self.clock;
                    let cancelled = CancellationToken::new();
                    self.setup_stops
                        .insert(instance_id.clone(), cancelled.clone());
                    self.spawn(async move {
                        let started_ms = clock.now_ms();
                        let result = tokio::select! {
                            r = setup.set_up(&instance, &node_type) => r,
                            _ = cancelled.cancelled() => return None,
                        };
                        let address = instance
                            .internal_ip
                            .clone()
                            .unwrap_or_else(|| instance.cloud_id.clone());
                        Some(Outcome::SetUp {
                            instance_id,
                            node_type,
                            address,
                            result,
                            started_ms,
                        })
                    });
                }
                Action::TerminateStray { cloud_id } => {
                    let provider = self.provider.clone();
                    self.spawn_limited(async move {
                        if let Err(e) = provider.terminate(std::slice::from_ref(&cloud_id)).await {
                            tracing::warn!(cloud_id = %cloud_id, error = %e, "cannot terminate the stray instance; will retry");
                        }
                        None
                    });
                }
            }
        }
    }

    /// Marks the action of an outcome as no longer under way.
    pub fn finished(&mut self, o: &Outcome) {
        match o {
            Outcome::Launched { request_id, .. } => self.in_flight.launches.remove(request_id),
            Outcome::Drained { instance_id, .. } => self.in_flight.drains.remove(instance_id),
            Outcome::Terminated { instance_id, .. } => {
                self.in_flight.terminations.remove(instance_id)
            }
            Outcome::SetUp { instance_id, .. } => {
                self.setup_stops.remove(instance_id);
                self.in_flight.setups.remove(instance_id)
            }
        };
    }

    fn spawn(&self, work: impl Future<Output = Option<Outcome>> + Send + 'static) {
        let tx = self.tx.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                o = work => if let Some(o) = o { let _ = tx.send(o); },
                _ = stop.cancelled() => {}
            }
        });
    }

    /// Like `spawn`, after waiting for the provider rate limit.
    fn spawn_limited(&self, work: impl Future<Output = Option<Outcome>> + Send + 'static) {
        let limiter = self.limiter.clone();
        let clock = self.limiter_clock;
        self.spawn(async move {
            while let Err(not_until) = limiter.check() {
                tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
            }
            work.await
        });
    }
}
