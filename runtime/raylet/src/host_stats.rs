//! This machine's CPU and memory use as Linux reports them (`/proc/stat`,
//! `/proc/meminfo`), for the node's `/metrics`. Reads files: call it off the
//! async threads.

use std::path::Path;

/// Cumulative CPU time of the whole machine, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent idle or waiting for I/O.
    pub idle: u64,
    /// All ticks.
    pub total: u64,
}

impl CpuTimes {
    /// Reads the machine's `cpu` line of `/proc/stat`.
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The first (`cpu `) line of a `/proc/stat` text.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() < 4 {
            return None;
        }
        // user nice system idle iowait irq softirq steal (guest time is within user).
        let total = fields.iter().take(8).sum();
        let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
        Some(Self { idle, total })
    }

    /// Percent of CPU time busy since `before` (0..100); `None` if no time passed.
    pub fn busy_percent_since(&self, before: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let idle = self.idle.checked_sub(before.idle)?;
        (total > 0).then(|| 100.0 * (total.saturating_sub(idle)) as f64 / total as f64)
    }
}

/// Physical memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`: what can be given to programs without swapping.
    pub available: u64,
    /// `Shmem`: shared memory (the object store's file lives there).
    pub shared: u64,
}

impl Memory {
    /// Reads `/proc/meminfo`.
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string(Path::new("/proc/meminfo")).ok()?)
    }

    /// Parses a `/proc/meminfo` text (values in kB).
    pub fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        };
        Some(Self {
            total: field("MemTotal")?,
            available: field("MemAvailable")?,
            shared: field("Shmem").unwrap_or(0),
        })
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_busy_share_comes_from_the_difference_of_two_readings() {
        let a = CpuTimes::parse("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = CpuTimes::parse("cpu  200 0 200 800 100 0 0 0 0 0\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                idle: 800,
                total: 1000
            }
        );
        assert!((b.busy_percent_since(&a).unwrap() - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(a.busy_percent_since(&a), None);
        assert_eq!(CpuTimes::parse("intr 1 2"), None);
    }

    #[test]
    fn memory_is_read_in_bytes() {
        let m = Memory::parse(
            "MemTotal:       16000 kB\nMemFree: 1 kB\nMemAvailable:   4000 kB\nShmem: 10 kB\n",
        )
        .unwrap();
        assert_eq!(
            m,
            Memory {
                total: 16000 * 1024,
                available: 4000 * 1024,
                shared: 10 * 1024
            }
        );
        assert_eq!(m.used(), 12000 * 1024);
        assert!(Memory::parse("MemTotal: 1 kB\n").is_none());
    }
}
