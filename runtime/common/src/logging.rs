//! Log set-up for every process: `tracing` events with fields, to stderr (which the
//! launching CLI points at the process's file under `<session>/logs/`).

use std::fmt::Arguments;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing_subscriber::EnvFilter;

/// Variable selecting the log level of the daemons (as Ray's backend processes).
pub const ENV_LOG_LEVEL: &str = "RAY_BACKEND_LOG_LEVEL";

/// Installs the global subscriber. `component` names the process in every line.
/// Safe to call twice (the second call does nothing).
pub fn init(component: &'static str) {
    init_with_default(component, "info,h2=warn,hyper=warn,tower=warn");
}

/// Like [`init`], with another default level (the CLI shows only problems).
pub fn init_with_default(component: &'static str, default: &str) {
    let filter = std::env::var(ENV_LOG_LEVEL)
        .ok()
        .and_then(|l| EnvFilter::try_new(l).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    tracing::debug!(component, "logging started");
}

fn limiter() -> &'static DefaultDirectRateLimiter {
    static L: OnceLock<DefaultDirectRateLimiter> = OnceLock::new();
    L.get_or_init(|| {
        RateLimiter::direct(Quota::per_second(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN)))
    })
}

/// Logs a warning at most twice a second, counting the ones left out, so a flood of
/// hostile calls cannot fill the disk through the log.
pub fn warn_rate_limited(msg: Arguments<'_>) {
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    if limiter().check().is_ok() {
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(suppressed_since_last = suppressed, "{msg}");
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}
