//! What the autoscaler remembers about failed launches: a back-off per node type
//! (no new launches of the type until it ends; it doubles per failure in a row),
//! and the recent failures that `ray status` shows.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ray_proto::rpc::autoscaler::FailedInstanceRequest;
use ray_providers::{ErrorClass, ProviderError};
use tokio::time::Instant;

/// Recent launch failures shown by `ray status`.
pub const MAX_FAILURES: usize = 20;
/// First back-off after a failed launch; doubles per failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest back-off (also used at once for errors that retrying will not fix).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct TypeBackoff {
    until: Instant,
    failures: u32,
}

/// What failed, as `ray status` names it.
pub const LAUNCH_FAILED: &str = "LaunchFailed";
/// Setting Ray up on a launched instance failed.
pub const UPDATE_FAILED: &str = "UpdateFailed";

/// One failed launch (or set-up of a launched instance), as
/// [`LaunchBackoff::failed`] takes it.
#[derive(Debug, Clone)]
pub struct LaunchFailure<'a> {
    /// [`LAUNCH_FAILED`] or [`UPDATE_FAILED`].
    pub kind: &'static str,
    /// The instance that failed to set up (its address when it has one).
    pub instance: Option<&'a str>,
    /// Node type.
    pub node_type: &'a str,
    /// Instances the launch asked for.
    pub count: usize,
    /// What the provider said.
    pub error: &'a ProviderError,
    /// When the launch started (ms since epoch).
    pub started_ms: u64,
    /// When it failed (ms since epoch).
    pub failed_ms: u64,
}

/// Back-off per node type and the recent failures.
#[derive(Debug, Default)]
pub struct LaunchBackoff {
    by_type: HashMap<String, TypeBackoff>,
    failures: VecDeque<FailedInstanceRequest>,
}

impl LaunchBackoff {
    /// Nothing failed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while launches of `node_type` are paused.
    pub fn is_backing_off(&self, node_type: &str, now: Instant) -> bool {
        self.by_type.get(node_type).is_some_and(|b| b.until > now)
    }

    /// A launch of `node_type` worked: its back-off is over.
    pub fn succeeded(&mut self, node_type: &str) {
        self.by_type.remove(node_type);
    }

    /// Records a failed launch and starts (or lengthens) the type's back-off.
    /// Returns the reason as `ray status` shows it, which says how long launches
    /// are paused.
    pub fn failed(&mut self, f: &LaunchFailure<'_>, now: Instant) -> String {
        let b = self.by_type.entry(f.node_type.to_string()).or_insert(TypeBackoff { until: now, failures: 0 });
        b.failures = b.failures.saturating_add(1);
        // A quota stays until someone raises it: stop asking for as long as any.
        let wait = if f.error.class.is_retryable() && f.error.class != ErrorClass::Quota {
            BACKOFF_BASE.saturating_mul(2u32.saturating_pow(b.failures - 1)).min(BACKOFF_MAX)
        } else {
            BACKOFF_MAX
        };
        b.until = now + wait;
        let reason = format!("{} (launches of this type paused for {} s)", f.error, wait.as_secs());
        self.failures.push_front(FailedInstanceRequest {
            instance_type_name: f.node_type.to_string(),
            ray_node_type_name: f.node_type.to_string(),
            count: f.count as u64,
            reason: reason.clone(),
            start_ts_ms: f.started_ms,
            failed_ts_ms: f.failed_ms,
            kind: f.kind.to_string(),
            instance_id: f.instance.unwrap_or_default().to_string(),
        });
        self.failures.truncate(MAX_FAILURES);
        reason
    }

    /// The most recent failures, newest first.
    pub fn recent_failures(&self) -> impl Iterator<Item = &FailedInstanceRequest> {
        self.failures.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_per_failure_and_ends() {
        let mut b = LaunchBackoff::new();
        let e = ProviderError::new(ErrorClass::Capacity, "no room");
        let f = LaunchFailure { kind: LAUNCH_FAILED, instance: None, node_type: "t", count: 2, error: &e, started_ms: 1, failed_ms: 2 };
        let r = b.failed(&f, Instant::now());
        assert!(r.contains("no room") && r.contains("paused for 5 s"), "{r}");
        assert!(b.is_backing_off("t", Instant::now()) && !b.is_backing_off("u", Instant::now()));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!b.is_backing_off("t", Instant::now()));
        assert!(b.failed(&f, Instant::now()).contains("paused for 10 s"));
        b.succeeded("t");
        assert!(!b.is_backing_off("t", Instant::now()));
        let fatal = ProviderError::new(ErrorClass::Auth, "bad key");
        let r = b.failed(&LaunchFailure { error: &fatal, ..f }, Instant::now());
        assert!(r.contains("paused for 300 s"), "{r}");
        assert_eq!(b.recent_failures().count(), 3);
        let quota = ProviderError::new(ErrorClass::Quota, "VcpuLimitExceeded");
        let r = b.failed(&LaunchFailure { error: &quota, node_type: "q", ..f }, Instant::now());
        assert!(r.contains("quota: VcpuLimitExceeded") && r.contains("paused for 300 s"), "{r}");
        assert_eq!(b.recent_failures().next().map(|x| x.count), Some(2));
    }
}
