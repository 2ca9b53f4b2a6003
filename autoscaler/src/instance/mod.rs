//! Every instance the autoscaler launches moves through one explicit state machine,
//! and [`Instance::transition`] is the only way to change its status. Records are
//! persisted in the GCS's KV (namespace `__autoscaler`), so an autoscaler that is
//! killed and started again knows what it had asked for and neither leaks nor
//! launches twice.

pub mod manager;
pub mod store;

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Decided on; not yet asked of the provider.
    Queued,
    /// Asked of the provider (with a launch request id).
    Requested,
    /// The provider accepted or created it (a VM exists / a process runs).
    Allocated,
    /// The provider lists it as running, but its raylet has not registered yet:
    /// Ray is starting on it.
    Installing,
    /// Its raylet registered with the GCS.
    Running,
    /// Being retired: the drain is recorded before it is asked of the GCS; once
    /// accepted the node takes no new work. A refused drain goes back to RUNNING.
    Draining,
    /// Asked the provider to terminate it.
    Terminating,
    /// Gone.
    Terminated,
    /// The provider refused or failed the launch.
    AllocationFailed,
    /// Setting up Ray on it failed.
    InstallFailed,
}

use InstanceStatus::*;

impl InstanceStatus {
    /// Statuses this one may move to.
    pub fn allowed_next(self) -> &'static [InstanceStatus] {
        match self {
            Queued => &[Requested, Terminated],
            Requested => &[Allocated, Queued, AllocationFailed],
            Allocated => &[Installing, Running, Terminating, Terminated],
            Installing => &[Running, InstallFailed, Terminating, Terminated],
            Running => &[Draining, Terminating, Terminated],
            Draining => &[Running, Terminating, Terminated],
            Terminating => &[Terminated],
            InstallFailed => &[Terminating, Terminated],
            Terminated | AllocationFailed => &[],
        }
    }

    /// Every status, for tables and tests.
    pub const ALL: [InstanceStatus; 10] =
        [Queued, Requested, Allocated, Installing, Running, Draining, Terminating, Terminated, AllocationFailed, InstallFailed];

    /// Launched (or being launched) but not yet serving.
    pub fn is_pending(self) -> bool {
        matches!(self, Queued | Requested | Allocated | Installing)
    }

    /// Will never change again.
    pub fn is_final(self) -> bool {
        self.allowed_next().is_empty()
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Queued => "QUEUED",
            Requested => "REQUESTED",
            Allocated => "ALLOCATED",
            Installing => "INSTALLING",
            Running => "RUNNING",
            Draining => "DRAINING",
            Terminating => "TERMINATING",
            Terminated => "TERMINATED",
            AllocationFailed => "ALLOCATION_FAILED",
            InstallFailed => "INSTALL_FAILED",
        };
        f.write_str(s)
    }
}

/// A refused status change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {id} cannot go from {from} to {to} ({details})")]
pub struct TransitionError {
    /// Instance id.
    pub id: String,
    /// Current status.
    pub from: InstanceStatus,
    /// Attempted status.
    pub to: InstanceStatus,
    /// What the caller was doing.
    pub details: String,
}

/// One status change in an instance's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    /// New status.
    pub status: InstanceStatus,
    /// When (ms since epoch).
    pub at_ms: u64,
    /// Why.
    pub details: String,
}

/// History entries kept per instance.
const HISTORY_LEN: usize = 16;

/// An instance the autoscaler manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The autoscaler's id.
    pub id: String,
    /// Node type.
    pub node_type: String,
    /// Current status; change it only through [`Instance::transition`].
    status: InstanceStatus,
    /// Bumped on every change; writes carry it so stale copies are refused.
    pub version: u64,
    /// Launch request id (the provider's idempotency key).
    pub launch_request_id: Option<String>,
    /// The provider's id once allocated.
    pub cloud_id: Option<String>,
    /// Ray's node id once running.
    pub node_id: Option<String>,
    /// Why it is being (or was) terminated.
    pub termination_reason: Option<String>,
    /// Why it is being retired, while DRAINING (so a drain can be asked again
    /// after a restart with the same reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_reason: Option<crate::scheduler::TerminateReason>,
    /// When the launcher finished setting Ray up on it (ms since epoch), for
    /// providers that do not start Ray themselves; its raylet should register soon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_done_ms: Option<u64>,
    /// Recent status changes, newest last.
    pub history: Vec<StatusChange>,
}

impl Instance {
    /// A new QUEUED instance.
    pub fn new(id: String, node_type: String, now_ms: u64, details: impl Into<String>) -> Self {
        Self {
            id,
            node_type,
            status: Queued,
            version: 1,
            launch_request_id: None,
            cloud_id: None,
            node_id: None,
            termination_reason: None,
            retire_reason: None,
            setup_done_ms: None,
            history: vec![StatusChange { status: Queued, at_ms: now_ms, details: details.into() }],
        }
    }

    /// Current status.
    pub fn status(&self) -> InstanceStatus {
        self.status
    }

    /// When the current status began.
    pub fn status_since_ms(&self) -> u64 {
        self.history.last().map(|h| h.at_ms).unwrap_or(0)
    }

    /// The only way to change the status: refuses transitions the state machine
    /// does not allow, naming the current status and the attempted one.
    pub fn transition(&mut self, to: InstanceStatus, now_ms: u64, details: impl Into<String>) -> Result<(), TransitionError> {
        let details = details.into();
        if !self.status.allowed_next().contains(&to) {
            return Err(TransitionError { id: self.id.clone(), from: self.status, to, details });
        }
        self.status = to;
        self.version += 1;
        self.history.push(StatusChange { status: to, at_ms: now_ms, details });
        if self.history.len() > HISTORY_LEN {
            let cut = self.history.len() - HISTORY_LEN;
            self.history.drain(..cut);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table: every pair is either allowed (and then works) or refused
    /// with both statuses named.
    #[test]
    fn every_transition_is_allowed_or_refused_as_the_table_says() {
        let allowed: &[(InstanceStatus, InstanceStatus)] = &[
            (Queued, Requested),
            (Queued, Terminated),
            (Requested, Allocated),
            (Requested, Queued),
            (Requested, AllocationFailed),
            (Allocated, Installing),
            (Allocated, Running),
            (Allocated, Terminating),
            (Allocated, Terminated),
            (Installing, Running),
            (Installing, InstallFailed),
            (Installing, Terminating),
            (Installing, Terminated),
            (Running, Draining),
            (Running, Terminating),
            (Running, Terminated),
            (Draining, Running),
            (Draining, Terminating),
            (Draining, Terminated),
            (Terminating, Terminated),
            (InstallFailed, Terminating),
            (InstallFailed, Terminated),
        ];
        for from in InstanceStatus::ALL {
            for to in InstanceStatus::ALL {
                let mut i = Instance::new("i".into(), "t".into(), 0, "test");
                i.status = from;
                let v = i.version;
                let r = i.transition(to, 1, "test");
                if allowed.contains(&(from, to)) {
                    assert!(r.is_ok(), "{from} -> {to} should be allowed");
                    assert_eq!(i.status(), to);
                    assert_eq!(i.version, v + 1);
                } else {
                    let e = r.expect_err(&format!("{from} -> {to} should be refused"));
                    assert_eq!((e.from, e.to), (from, to));
                    assert_eq!(i.status(), from, "a refused transition changes nothing");
                    assert!(e.to_string().contains(&from.to_string()) && e.to_string().contains(&to.to_string()));
                }
            }
        }
    }

    #[test]
    fn history_is_bounded_and_serializes() {
        let mut i = Instance::new("i".into(), "t".into(), 0, "q");
        for n in 0..20 {
            i.transition(Requested, n, "r").unwrap();
            i.transition(Queued, n, "retry").unwrap();
        }
        assert_eq!(i.history.len(), HISTORY_LEN);
        let back: Instance = serde_json::from_str(&serde_json::to_string(&i).unwrap()).unwrap();
        assert_eq!(back, i);
        assert!(Terminated.is_final() && AllocationFailed.is_final() && !Running.is_final());
    }
}
