//! The scan a starting agent runs over its work dir (after connecting to the supervisor) to
//! learn what a previous agent process left behind: results to report again, containers to
//! re-attach to, native tasks to adopt, process groups nothing supervises any more.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::state::{ExecDir, ExecutionId, FinalReport, Phase, StateFile, Stream};
use crate::supervisor::Exit;
use crate::supervisor::serve::read_exit;

/// An execution a previous agent process finished but whose report the server has not
/// committed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub id: ExecutionId,
    pub task_id: i64,
    pub report: FinalReport,
}

/// A container task a previous agent process left running (or exited, not yet reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reattach {
    pub id: ExecutionId,
    pub task_id: i64,
    pub container: String,
    pub run_timeout: Option<std::time::Duration>,
    /// The task's output URI (empty: none).
    pub output: String,
    /// Bytes of stdout and stderr already in the spool files.
    pub spooled: [u64; 2],
}

/// What a starting agent found in its work dir.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub recovered: Vec<Recovered>,
    pub reattach: Vec<Reattach>,
    pub adopt: Vec<Adopt>,
}

/// A native task a previous agent process started: still running under the supervisor, or
/// ended while no agent was there to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopt {
    pub id: ExecutionId,
    pub task_id: i64,
    pub pid: u32,
    /// Its end, when the supervisor recorded it in the work dir (it may have exited since).
    pub exit: Option<Exit>,
    /// What is left of its time limit.
    pub run_timeout: Option<std::time::Duration>,
    /// The task's output URI (empty: none).
    pub output: String,
    /// Bytes of stdout and stderr already in the spool files.
    pub spooled: [u64; 2],
}

/// Scans the work dir at startup. Finished but unacknowledged executions are returned so they
/// can be reported again, and container tasks still marked running so the agent re-attaches
/// to them. Native executions still marked running are adopted when the supervisor still
/// holds them (`held`: execution and pid) or recorded their end; otherwise (the supervisor is
/// gone with them) their process group is killed if alive and they are marked abandoned, so
/// the server, not finding them in `Hello`, fails them as lost. Blocking.
pub fn scan(work_dir: &Path, held: &HashMap<ExecutionId, u32>) -> io::Result<Found> {
    let mut recovered = Vec::new();
    let mut reattach = Vec::new();
    let mut adopt = Vec::new();
    for entry in std::fs::read_dir(work_dir)? {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().and_then(ExecDir::parse_id) else {
            continue;
        };
        let dir = ExecDir::new(work_dir, id);
        let state = match StateFile::read(&dir) {
            Ok(state) => state,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(execution_id = %id, "ignoring {}: {e}", dir.state_file().display());
                continue;
            }
        };
        if state.execution_id != id {
            // A recycled work dir that has not been written for its new execution yet.
            continue;
        }
        match state.phase {
            Phase::Finished {
                report,
                acknowledged: false,
            } => recovered.push(Recovered {
                id,
                task_id: state.task_id,
                report,
            }),
            Phase::Running {
                container: Some(container),
                run_timeout_s,
                output,
                ..
            } => reattach.push(Reattach {
                id,
                task_id: state.task_id,
                container,
                run_timeout: run_timeout_s.map(std::time::Duration::from_secs),
                output,
                spooled: Stream::BOTH
                    .map(|stream| std::fs::metadata(dir.log(stream)).map_or(0, |m| m.len())),
            }),
            Phase::Running {
                pid,
                run_timeout_s,
                output,
                ..
            } if held.contains_key(&id) || read_exit(&dir).is_some() => {
                let started = std::fs::metadata(dir.state_file()).and_then(|m| m.modified());
                let elapsed = started
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                adopt.push(Adopt {
                    id,
                    task_id: state.task_id,
                    pid: held.get(&id).copied().unwrap_or(pid),
                    exit: read_exit(&dir),
                    run_timeout: run_timeout_s
                        .map(|s| std::time::Duration::from_secs(s).saturating_sub(elapsed)),
                    output,
                    spooled: Stream::BOTH
                        .map(|stream| std::fs::metadata(dir.log(stream)).map_or(0, |m| m.len())),
                });
            }
            Phase::Running { pid, .. } => {
                kill_leftover_group(id, pid);
                let abandoned = StateFile {
                    phase: Phase::Abandoned,
                    ..state
                };
                abandoned.write(&dir)?;
            }
            Phase::Finished { .. } | Phase::Abandoned => {}
        }
    }
    recovered.sort_by_key(|r| r.id);
    reattach.sort_by_key(|r| r.id);
    adopt.sort_by_key(|a| a.id);
    Ok(Found {
        recovered,
        reattach,
        adopt,
    })
}

fn kill_leftover_group(id: ExecutionId, pid: u32) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    let group = Pid::from_raw(raw);
    if killpg(group, None).is_ok() {
        tracing::warn!(execution_id = %id, pid, "killing the process group left running by a previous agent");
        if let Err(e) = killpg(group, Signal::SIGKILL) {
            tracing::warn!(execution_id = %id, pid, "cannot kill process group: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(work: &Path, id: i64, phase: Phase) {
        let dir = ExecDir::new(work, ExecutionId(id));
        std::fs::create_dir_all(dir.root()).unwrap();
        StateFile {
            execution_id: ExecutionId(id),
            task_id: id * 10,
            phase,
        }
        .write(&dir)
        .unwrap();
    }

    #[test]
    fn scan_keeps_unacknowledged_finals_and_abandons_running_ones() {
        let work = tempfile::tempdir().unwrap();
        let report = FinalReport {
            failure: None,
            exit_code: Some(0),
            message: String::new(),
            stdout_bytes: 3,
            stderr_bytes: 0,
            uploaded: Vec::new(),
            inputs: Vec::new(),
        };
        let fin = |acknowledged| Phase::Finished {
            report: report.clone(),
            acknowledged,
        };
        write(work.path(), 1, fin(false));
        write(work.path(), 2, fin(true));
        write(work.path(), 3, Phase::Abandoned);
        // A running process group of our own would be killed: use a pid that cannot exist.
        write(
            work.path(),
            4,
            Phase::Running {
                pid: 0x3fff_fff0,
                container: None,
                run_timeout_s: None,
                output: String::new(),
                stderr_preamble: 0,
            },
        );
        write(
            work.path(),
            6,
            Phase::Running {
                pid: 0,
                container: Some("abc".into()),
                run_timeout_s: Some(30),
                output: String::new(),
                stderr_preamble: 0,
            },
        );
        std::fs::create_dir_all(work.path().join("exec-5")).unwrap();
        std::fs::create_dir_all(work.path().join("unrelated")).unwrap();

        let found = scan(work.path(), &HashMap::new()).unwrap();
        assert_eq!(
            found.reattach,
            vec![Reattach {
                id: ExecutionId(6),
                task_id: 60,
                container: "abc".into(),
                run_timeout: Some(std::time::Duration::from_secs(30)),
                output: String::new(),
                spooled: [0, 0],
            }]
        );
        assert_eq!(
            found.recovered,
            vec![Recovered {
                id: ExecutionId(1),
                task_id: 10,
                report
            }]
        );
        let four = StateFile::read(&ExecDir::new(work.path(), ExecutionId(4))).unwrap();
        assert_eq!(four.phase, Phase::Abandoned);
    }

    #[test]
    fn scan_kills_a_live_leftover_group() {
        let work = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::process_group(&mut child, 0);
        let mut child = child.arg("30").spawn().unwrap();
        write(
            work.path(),
            7,
            Phase::Running {
                pid: child.id(),
                container: None,
                run_timeout_s: None,
                output: String::new(),
                stderr_preamble: 0,
            },
        );
        assert_eq!(
            scan(work.path(), &HashMap::new()).unwrap(),
            Found::default()
        );
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    /// An agent killed between its spawn request and the pid's record leaves `Running` with
    /// pid 0: adopted with the supervisor's pid when the supervisor holds the task, abandoned
    /// (and nothing signalled) when it does not.
    #[test]
    fn a_task_recorded_before_its_pid_is_adopted_from_the_supervisor() {
        let work = tempfile::tempdir().unwrap();
        let before_pid = || Phase::Running {
            pid: 0,
            container: None,
            run_timeout_s: Some(60),
            output: String::new(),
            stderr_preamble: 0,
        };
        write(work.path(), 8, before_pid());
        write(work.path(), 9, before_pid());
        let held = HashMap::from([(ExecutionId(8), 0x3fff_fff1)]);
        let found = scan(work.path(), &held).unwrap();
        assert_eq!(found.adopt.len(), 1, "{found:?}");
        assert_eq!(
            (
                found.adopt[0].id,
                found.adopt[0].task_id,
                found.adopt[0].pid
            ),
            (ExecutionId(8), 80, 0x3fff_fff1)
        );
        let nine = StateFile::read(&ExecDir::new(work.path(), ExecutionId(9))).unwrap();
        assert_eq!(nine.phase, Phase::Abandoned);
    }
}
