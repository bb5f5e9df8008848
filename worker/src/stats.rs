//! Host statistics for heartbeats: 1-minute load, available memory, free disk of the work dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use scitq_proto::v1::Heartbeat;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Reads the host statistics. Blocking (a few small /proc reads and a statvfs).
pub fn sample(work_dir: &Path) -> Heartbeat {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| parse_loadavg(&text))
        .unwrap_or_default();
    let mem_available_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_mem_available(&text))
        .unwrap_or_default();
    let disk_available_bytes = nix::sys::statvfs::statvfs(work_dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or_default();
    Heartbeat {
        load,
        mem_available_bytes,
        disk_available_bytes,
    }
}

fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

fn parse_mem_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    let scale = match fields.next() {
        Some("kB") => 1024,
        _ => 1,
    };
    Some(value * scale)
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
        match tokio::task::spawn_blocking(move || sample(&dir)).await {
            Ok(sample) => {
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
        assert_eq!(parse_mem_available(meminfo), Some(8_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn samples_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let sample = sample(dir.path());
        assert!(sample.mem_available_bytes > 0);
        assert!(sample.disk_available_bytes > 0);
    }
}
