//! Tunable settings with Ray's names. Each can be overridden by an environment
//! variable `RAY_<name>` (e.g. `RAY_health_check_period_ms=500`), which child
//! processes inherit.

use std::time::Duration;

macro_rules! settings {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = $default:expr; )*) => {
        /// Tunables read once at start-up.
        #[derive(Debug, Clone)]
        pub struct RayConfig {
            $( $(#[$doc])* pub $name: $ty, )*
        }

        impl Default for RayConfig {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        impl RayConfig {
            /// Defaults overridden by `RAY_<name>` variables. A variable that does not
            /// parse is an error naming it.
            pub fn from_env() -> Result<Self, String> {
                let mut c = Self::default();
                $(
                    let var = concat!("RAY_", stringify!($name));
                    if let Ok(v) = std::env::var(var) {
                        c.$name = v.trim().parse::<$ty>().map_err(|e| {
                            format!("{var}={v:?} is not a valid {}: {e}", stringify!($ty))
                        })?;
                    }
                )*
                Ok(c)
            }

            /// The `RAY_<name>` variables set in this process, to pass on to children.
            pub fn env_overrides() -> Vec<(String, String)> {
                let mut out = Vec::new();
                $(
                    let var = concat!("RAY_", stringify!($name));
                    if let Ok(v) = std::env::var(var) {
                        out.push((var.to_string(), v));
                    }
                )*
                out
            }
        }
    };
}

settings! {
    /// Delay before the GCS first health-checks a new node.
    health_check_initial_delay_ms: u64 = 5_000;
    /// Period between health checks of one node.
    health_check_period_ms: u64 = 3_000;
    /// Deadline of one health check.
    health_check_timeout_ms: u64 = 10_000;
    /// Consecutive failed checks after which a node is marked DEAD.
    health_check_failure_threshold: u32 = 5;
    /// Longest interval between two resource reports of a raylet.
    raylet_report_resources_period_ms: u64 = 1_000;
    /// How long a client waits for the GCS to answer when connecting.
    gcs_connect_timeout_ms: u64 = 5_000;
    /// How long a raylet keeps trying to reach a vanished GCS before exiting.
    gcs_rpc_server_reconnect_timeout_s: u64 = 60;
    /// Idle workers beyond the node's CPU count are stopped after this long.
    idle_worker_killing_time_threshold_ms: u64 = 1_000;
    /// Any idle worker is stopped after this long.
    worker_max_idle_ms: u64 = 600_000;
    /// Tasks an owner pushes to one leased worker at a time.
    max_tasks_in_flight_per_worker: usize = 8;
    /// An idle lease is kept this long for the owner's next task.
    worker_lease_linger_ms: u64 = 500;
    /// How often a raylet on an EC2 instance asks the instance metadata service
    /// for a spot interruption notice (AWS advises every 5 s).
    spot_interruption_poll_ms: u64 = 5_000;
    /// Where a full object store spills objects, as Ray's JSON
    /// (`{"type": "filesystem", "params": {"directory_path": "/tmp/spill"}}`);
    /// empty: `<session>/spill`.
    object_spilling_config: String = String::new();
    /// Cap on simultaneous connections per server.
    max_connections: usize = crate::rpc::DEFAULT_MAX_CONNECTIONS;
}

impl RayConfig {
    /// Health check period as a duration.
    pub fn health_check_period(&self) -> Duration {
        Duration::from_millis(self.health_check_period_ms.max(1))
    }
    /// Health check timeout as a duration.
    pub fn health_check_timeout(&self) -> Duration {
        Duration::from_millis(self.health_check_timeout_ms.max(1))
    }
    /// Initial delay as a duration.
    pub fn health_check_initial_delay(&self) -> Duration {
        Duration::from_millis(self.health_check_initial_delay_ms)
    }
    /// GCS connect timeout as a duration.
    pub fn gcs_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.gcs_connect_timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_rays() {
        let c = RayConfig::default();
        assert_eq!(c.health_check_period_ms, 3_000);
        assert_eq!(c.health_check_failure_threshold, 5);
    }
}
