//! Removes what failed executions leave for inspection once it has been kept long enough
//! (`--keep-failed`), or at once when the work dir's filesystem is fuller than
//! `--disk-threshold` percent: this agent's stopped containers, and the work dirs of failed
//! executions whose result the server has committed.
//!
//! A succeeded execution's container is removed by its executor as soon as the report is on
//! disk, and its work dir recycled (see `spares`); the janitor only catches what a crash or a
//! failure left behind. Running containers and held executions are never touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bollard::query_parameters::ListContainersOptionsBuilder;

use crate::docker::{Engine, LABEL_AGENT, LABEL_EXECUTION, message_of, remove};
use crate::state::{ExecDir, ExecutionId, Phase, StateFile};

/// What the janitor keeps and for how long.
#[derive(Debug, Clone)]
pub struct Policy {
    pub work_dir: PathBuf,
    pub keep_failed: Duration,
    /// Percent of the work dir's filesystem in use past which nothing is kept.
    pub disk_threshold: u8,
}

/// How often the janitor looks: often enough to honour short keeping times.
pub fn interval(keep_failed: Duration) -> Duration {
    (keep_failed / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// One pass. `held`: executions the agent still holds (their dirs and containers stay).
pub async fn sweep(engine: &Engine, policy: &Policy, held: Vec<ExecutionId>) {
    let work_dir = policy.work_dir.clone();
    let full = match tokio::task::spawn_blocking(move || disk_use_percent(&work_dir)).await {
        Ok(Some(used)) => used >= f64::from(policy.disk_threshold),
        _ => false,
    };
    if full {
        tracing::warn!(
            threshold = policy.disk_threshold,
            "work dir filesystem past its threshold: removing failed containers and work dirs now"
        );
    }
    sweep_containers(engine, policy, &held, full).await;
    let policy = policy.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || sweep_dirs(&policy, &held, full)).await {
        tracing::error!("work dir sweep failed: {e}");
    }
}

/// Percent of the filesystem holding `path` in use. Blocking.
pub fn disk_use_percent(path: &Path) -> Option<f64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let total = stat.blocks() as f64;
    if total <= 0.0 {
        return None;
    }
    Some(100.0 * (1.0 - stat.blocks_available() as f64 / total))
}

async fn sweep_containers(engine: &Engine, policy: &Policy, held: &[ExecutionId], full: bool) {
    let Ok(docker) = engine.docker().await else {
        // No daemon: there cannot be containers to remove.
        return;
    };
    let filters = HashMap::from([
        (
            "label".to_owned(),
            vec![format!("{LABEL_AGENT}={}", engine.scope)],
        ),
        (
            "status".to_owned(),
            vec!["exited".to_owned(), "dead".to_owned(), "created".to_owned()],
        ),
    ]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = match docker.list_containers(Some(options)).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!("cannot list containers: {}", message_of(&e));
            return;
        }
    };
    for summary in containers {
        let Some(id) = summary.id else { continue };
        let execution = summary
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_EXECUTION))
            .and_then(|v| v.parse().ok())
            .map(ExecutionId);
        if execution.is_some_and(|e| held.contains(&e)) {
            continue;
        }
        let ended = match docker.inspect_container(&id, None).await {
            Ok(info) => info
                .state
                .and_then(|s| s.finished_at)
                .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
                // Never started (a created container): count from its creation.
                .filter(|t| *t > SystemTime::UNIX_EPOCH + Duration::from_secs(1))
                .or_else(|| {
                    let created = u64::try_from(summary.created.unwrap_or_default()).ok()?;
                    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(created))
                }),
            Err(_) => continue,
        };
        let expired = ended.is_some_and(|t| t.elapsed().unwrap_or_default() >= policy.keep_failed);
        if full || expired {
            tracing::info!(container = id, execution_id = ?execution, "removing a stopped container");
            remove(docker, &id).await;
        }
    }
}

/// Removes the work dirs of failed executions whose report the server committed. Blocking.
fn sweep_dirs(policy: &Policy, held: &[ExecutionId], full: bool) {
    let Ok(entries) = std::fs::read_dir(&policy.work_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("exec-"))
            .and_then(|n| n.parse().ok())
            .map(ExecutionId)
        else {
            continue;
        };
        if held.contains(&id) {
            continue;
        }
        let dir = ExecDir::new(&policy.work_dir, id);
        let Ok(state) = StateFile::read(&dir) else {
            continue;
        };
        let done = matches!(
            state.phase,
            Phase::Finished {
                acknowledged: true,
                ..
            } | Phase::Abandoned
        );
        if !done || state.execution_id != id {
            continue;
        }
        let age = std::fs::metadata(dir.state_file())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if full || age >= policy.keep_failed {
            tracing::info!(execution_id = %id, "removing the work dir of a failed execution");
            if let Err(e) = std::fs::remove_dir_all(dir.root()) {
                tracing::warn!(execution_id = %id, "cannot remove {}: {e}", dir.root().display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Failure, FinalReport};

    fn write(work: &Path, id: i64, phase: Phase) -> ExecDir {
        let dir = ExecDir::new(work, ExecutionId(id));
        std::fs::create_dir_all(dir.output()).unwrap();
        StateFile {
            execution_id: ExecutionId(id),
            task_id: id,
            phase,
        }
        .write(&dir)
        .unwrap();
        dir
    }

    #[test]
    fn failed_dirs_go_after_their_keeping_time_or_when_the_disk_is_full() {
        let work = tempfile::tempdir().unwrap();
        let failed = Phase::Finished {
            report: FinalReport::failed(Failure::Run, "exited with code 1"),
            acknowledged: true,
        };
        let unacked = Phase::Finished {
            report: FinalReport::failed(Failure::Run, "exited with code 1"),
            acknowledged: false,
        };
        let acked = write(work.path(), 1, failed.clone());
        let pending = write(work.path(), 2, unacked);
        let held = write(work.path(), 3, failed);
        let mut policy = Policy {
            work_dir: work.path().to_owned(),
            keep_failed: Duration::from_secs(3600),
            disk_threshold: 90,
        };
        sweep_dirs(&policy, &[ExecutionId(3)], false);
        assert!(acked.root().exists(), "kept for its keeping time");
        sweep_dirs(&policy, &[ExecutionId(3)], true);
        assert!(!acked.root().exists(), "removed when the disk is full");
        write(work.path(), 1, Phase::Abandoned);
        policy.keep_failed = Duration::ZERO;
        sweep_dirs(&policy, &[ExecutionId(3)], false);
        assert!(!acked.root().exists(), "removed past its keeping time");
        assert!(pending.root().exists(), "its report is not committed yet");
        assert!(held.root().exists(), "still held by the agent");
    }

    #[test]
    fn intervals_follow_the_keeping_time() {
        assert_eq!(interval(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(interval(Duration::from_secs(40)), Duration::from_secs(10));
        assert_eq!(
            interval(Duration::from_secs(86400)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn disk_use_is_a_percentage() {
        let used = disk_use_percent(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&used), "{used}");
    }
}
