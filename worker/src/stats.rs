//! Host statistics for heartbeats: CPU use since the previous sample, 1-minute load,
//! memory and the work dir's disk (available and total).

use std::path::{Path, PathBuf};
use std::time::Duration;

use scitq_proto::v1::Heartbeat;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The aggregate `cpu` line of /proc/stat: busy and total jiffies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    /// Percent of the CPUs busy between `earlier` and `self` (0 without a difference).
    fn percent_since(self, earlier: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        let busy = self.busy.saturating_sub(earlier.busy);
        (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
    }
}

/// Reads the host statistics. Blocking (a few small /proc reads and a statvfs). CPU use is
/// measured since `previous` (the last sample's CPU times), and the new times returned.
pub fn sample(work_dir: &Path, previous: Option<CpuTimes>) -> (Heartbeat, Option<CpuTimes>) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| parse_loadavg(&text))
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| parse_cpu(&text));
    let cpu_percent = match (cpu, previous) {
        (Some(now), Some(before)) => now.percent_since(before),
        _ => 0.0,
    };
    let (disk_available_bytes, disk_total_bytes) = nix::sys::statvfs::statvfs(work_dir)
        .map(|s| {
            (
                s.blocks_available() * s.fragment_size(),
                s.blocks() * s.fragment_size(),
            )
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get() as u32);
    let heartbeat = Heartbeat {
        load,
        mem_available_bytes: parse_meminfo(&meminfo, "MemAvailable:").unwrap_or_default(),
        disk_available_bytes,
        cpu_percent,
        cpus,
        mem_total_bytes: parse_meminfo(&meminfo, "MemTotal:").unwrap_or_default(),
        disk_total_bytes,
    };
    (heartbeat, cpu)
}

fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// A `/proc/meminfo` field in bytes.
fn parse_meminfo(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    let scale = match fields.next() {
        Some("kB") => 1024,
        _ => 1,
    };
    Some(value * scale)
}

/// The first line of /proc/stat: `cpu user nice system idle iowait irq softirq steal ...`;
/// idle and iowait are the idle time, the rest up to steal is busy.
fn parse_cpu(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 4 {
        return None;
    }
    let total: u64 = values.iter().sum();
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// Sends a heartbeat sample every `interval` (it may change) until cancelled. Samples are dropped when the
/// agent loop has not taken the previous one.
pub async fn run(
    mut interval: tokio::sync::watch::Receiver<Duration>,
    work_dir: PathBuf,
    heartbeats: mpsc::Sender<Heartbeat>,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(*interval.borrow_and_update());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Ok(()) = interval.changed() => {
                let every = *interval.borrow_and_update();
                ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                continue;
            }
            _ = ticker.tick() => {}
        }
        let dir = work_dir.clone();
        match tokio::task::spawn_blocking(move || sample(&dir, cpu)).await {
            Ok((sample, times)) => {
                cpu = times;
                let _ = heartbeats.try_send(sample);
            }
            Err(e) => tracing::warn!("cannot sample host statistics: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_loadavg("0.52 0.40 0.31 2/345 6789\n"), Some(0.52));
        let meminfo = "MemTotal:       16000000 kB\nMemFree: 1 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo, "MemAvailable:"),
            Some(8_000_000 * 1024)
        );
        assert_eq!(parse_meminfo(meminfo, "MemTotal:"), Some(16_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n", "MemAvailable:"), None);
    }

    #[test]
    fn cpu_use_is_the_busy_share_between_two_samples() {
        let before = parse_cpu("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        // 300 more jiffies, 150 of them idle or iowait: half busy.
        let after = parse_cpu("cpu  200 0 150 800 150 0 0 0 0 0\n").unwrap();
        assert_eq!(after.percent_since(before), 50.0);
        assert_eq!(after.percent_since(after), 0.0);
        assert_eq!(parse_cpu("intr 1 2 3\n"), None);
    }

    #[test]
    fn samples_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let (first, cpu) = sample(dir.path(), None);
        assert!(first.mem_available_bytes > 0);
        assert!(first.mem_total_bytes >= first.mem_available_bytes);
        assert!(first.disk_available_bytes > 0);
        assert!(first.disk_total_bytes >= first.disk_available_bytes);
        assert!(first.cpus > 0);
        assert!(cpu.is_some());
        let (second, _) = sample(dir.path(), cpu);
        assert!((0.0..=100.0).contains(&second.cpu_percent));
    }
}
