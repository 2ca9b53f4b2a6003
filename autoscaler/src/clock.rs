//! The autoscaler's one source of time. It reads the wall clock once, when it is
//! made, and from then on adds the elapsed time of tokio's clock. Everything in the
//! loop (register timeouts, back-off, report staleness, instance history) therefore
//! runs under `tokio::time::pause()`, and a test advances it at will.

use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use tokio::time::Instant;

/// Wall-clock milliseconds derived from tokio's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start_ms: u64,
    start: Instant,
}

impl Clock {
    /// A clock that starts at the current wall time.
    pub fn start() -> Self {
        Self::starting_at(ray_common::time::now_ms())
    }

    /// A clock that reads `wall_ms` now (tests pick any epoch they like).
    pub fn starting_at(wall_ms: u64) -> Self {
        Self { wall_at_start_ms: wall_ms, start: Instant::now() }
    }

    /// Milliseconds since the Unix epoch, as this clock sees them.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_at_start_ms.saturating_add(elapsed)
    }

    /// Tokio's monotonic now (for deadlines such as back-off).
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// The same moment as a local date and time, for the status text.
    pub fn local_now(&self) -> chrono::DateTime<chrono::Local> {
        let ms = i64::try_from(self.now_ms()).unwrap_or(i64::MAX);
        chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().with_timezone(&chrono::Local)
    }
}

/// A `governor` clock on tokio's time, so the launch rate limiter also follows a
/// paused clock. Its readings are the time elapsed since the limiter was made.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: Instant,
}

impl TokioClock {
    /// A clock reading zero now.
    pub fn new() -> Self {
        Self { start: Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl GovernorClock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_a_paused_tokio_clock() {
        let c = Clock::starting_at(1_000);
        assert_eq!(c.now_ms(), 1_000);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(c.now_ms(), 91_000);
        let g = TokioClock::new();
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(g.now(), Duration::from_millis(250));
    }
}
