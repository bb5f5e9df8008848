//! `WORK_DIR/lease`: until when the server keeps this worker's executions, and the lease
//! itself, as `DEADLINE_UNIX_MS LEASE_MS`. The agent refreshes it from the last message it
//! received from the server; the supervisor kills the tasks once the deadline has passed (see
//! `supervisor`). Kept across restarts, so an agent knows its lease before its first `Welcome`.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file's name in the work dir.
pub const FILE: &str = "lease";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Unix time in milliseconds after which the server may hand the executions to another
    /// worker.
    pub deadline_ms: u64,
    pub lease_ms: u64,
}

impl Lease {
    /// The lease counted from `heard`, the last time the agent received anything from the
    /// server.
    pub fn from(heard: SystemTime, lease: Duration) -> Lease {
        Lease {
            deadline_ms: unix_ms(heard).saturating_add(lease.as_millis() as u64),
            lease_ms: lease.as_millis() as u64,
        }
    }

    pub fn expired(&self) -> bool {
        unix_ms(SystemTime::now()) >= self.deadline_ms
    }

    /// Time left until the deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.saturating_sub(unix_ms(SystemTime::now())))
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The lease recorded in the work dir; `None` when there is none (or it does not parse).
pub fn read(work_dir: &Path) -> Option<Lease> {
    let text = std::fs::read_to_string(work_dir.join(FILE)).ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(deadline_ms)), Some(Ok(lease_ms))) = (fields.next(), fields.next()) else {
        return None;
    };
    Some(Lease {
        deadline_ms,
        lease_ms,
    })
}

/// Records the lease, written aside and renamed in place so that a reader never sees half of
/// it. Blocking.
pub fn write(work_dir: &Path, lease: Lease) -> io::Result<()> {
    let aside = work_dir.join(".lease.tmp");
    std::fs::write(
        &aside,
        format!("{} {}\n", lease.deadline_ms, lease.lease_ms),
    )?;
    std::fs::rename(&aside, work_dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_expiry() {
        let work = tempfile::tempdir().unwrap();
        assert_eq!(read(work.path()), None);
        let lease = Lease::from(SystemTime::now(), Duration::from_secs(60));
        write(work.path(), lease).unwrap();
        assert_eq!(read(work.path()), Some(lease));
        assert!(!lease.expired());
        assert!(lease.remaining() > Duration::from_secs(50));
        let past = Lease::from(
            SystemTime::now() - Duration::from_secs(10),
            Duration::from_secs(5),
        );
        assert!(past.expired());
        assert_eq!(past.remaining(), Duration::ZERO);
    }
}
