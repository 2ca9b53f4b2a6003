//! The reconciler compares what is wanted with what is there and says what to do.
//!
//! - [`sync`] moves the instance table toward what the GCS and the provider
//!   report: adopt unknown instances, move instances forward, time them out, and
//!   notice the ones that are gone.
//! - [`input`] builds the scheduler's input (node types with prices and back-off,
//!   nodes, demand).
//! - [`plan`] turns the scheduler's decision into QUEUED then REQUESTED instances
//!   and launch actions, and into drains for the nodes it retires.
//!
//! Every change goes through the [`InstanceManager`](crate::instance::manager::InstanceManager),
//! and an [`Action`] is returned only when the change that records it was
//! persisted. Nothing here calls the provider: the
//! [`Actuator`](crate::actuator::Actuator) carries out the actions.

pub mod input;
pub mod plan;
pub mod sync;

use ray_providers::CreateRequest;
use tokio::time::Instant;

use crate::actuator::InFlight;
use crate::backoff::LaunchBackoff;
use crate::config::ClusterConfig;
use crate::instance::InstanceStatus;
use crate::instance::manager::InstanceManager;
use crate::scheduler::TerminateReason;
use crate::setup::NodeSetup;

/// Something to do to the provider or the cluster.
#[derive(Debug, Clone)]
pub enum Action {
    /// Create the instances of a launch request (they are REQUESTED).
    Launch(CreateRequest),
    /// Drain a node before terminating it (its instance is DRAINING).
    Drain {
        /// Instance id.
        instance_id: String,
        /// Ray's node id.
        node_id: String,
        /// Why it is retired.
        reason: TerminateReason,
        /// Why, in words (the GCS records it as the node's death reason).
        message: String,
    },
    /// Terminate an instance (it is TERMINATING).
    Terminate {
        /// Instance id.
        instance_id: String,
        /// The provider's id.
        cloud_id: String,
    },
    /// Set Ray up on an instance (it is INSTALLING, or RUNNING and out of date).
    SetUp {
        /// Instance id.
        instance_id: String,
        /// The instance as the provider lists it (addresses, tags).
        instance: ray_providers::CloudInstance,
        /// Its node type.
        node_type: String,
    },
    /// Terminate a listed instance of a node type the config does not have.
    TerminateStray {
        /// The provider's id.
        cloud_id: String,
    },
}

/// What the reconciler reads besides the table.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The cluster config.
    pub config: &'a ClusterConfig,
    /// Launches, drains and terminations under way.
    pub in_flight: &'a InFlight,
    /// Back-off per node type.
    pub backoff: &'a LaunchBackoff,
    /// Tokio's now (for back-off).
    pub now: Instant,
    /// Wall-clock ms (for instance timestamps and timeouts).
    pub now_ms: u64,
    /// Sets Ray up on launched instances, when the provider does not start Ray
    /// itself (machines reached over SSH).
    pub setup: Option<&'a dyn NodeSetup>,
}

/// A new id for an instance or a launch request.
pub(crate) fn new_id() -> String {
    ray_common::ids::random_hex(8)
}

/// The first characters of a long id, for logs.
pub(crate) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Records an instance as TERMINATING (with `why`) and, if that was persisted,
/// returns the terminate action.
pub async fn terminate(m: &mut InstanceManager, id: &str, why: String) -> Option<Action> {
    let reason = why.clone();
    m.transition(id, InstanceStatus::Terminating, why, |x| x.termination_reason = Some(reason)).await.ok()?;
    terminate_action(m, id)
}

/// The terminate action of an instance that has a provider id.
pub fn terminate_action(m: &InstanceManager, id: &str) -> Option<Action> {
    let cloud_id = m.get(id)?.cloud_id.clone()?;
    Some(Action::Terminate { instance_id: id.to_string(), cloud_id })
}
