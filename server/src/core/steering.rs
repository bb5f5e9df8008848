//! What operator steering leaves on a task, for the decisions that must honour it later.

/// Reason of an active task an operator killed: it must stay killed, whatever becomes of
/// its execution (a lost or undelivered one is not re-queued; a kill lost with an agent's
/// session is sent again when it reconnects).
pub const KILLED: &str = "killed by an operator";

/// Reason of an active task an operator froze (SIGSTOP), until it is resumed.
pub const FROZEN: &str = "frozen by an operator";

use super::ids::TaskId;
use super::state::TaskStatus;

/// A signal for an execution an agent holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, so the command can clean up.
    Term,
    /// SIGKILL.
    Kill,
    /// Freeze (SIGSTOP).
    Pause,
    /// Unfreeze (SIGCONT).
    Resume,
    /// Stop and forget it: the server no longer wants it (no report comes back).
    Cancel,
}

/// Statuses in which a task can still be edited (it has not started).
pub const EDITABLE: [TaskStatus; 3] =
    [TaskStatus::Waiting, TaskStatus::Pending, TaskStatus::Paused];

/// An operator's request that cannot apply to the task as it stands, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What pausing a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Pending → paused: it leaves the queue.
    Hold,
    /// Active: its execution gets SIGSTOP and the task is marked [`FROZEN`].
    Freeze,
}

pub fn pause(id: TaskId, status: TaskStatus, reason: &str) -> Result<Pause, Refused> {
    match status {
        TaskStatus::Pending => Ok(Pause::Hold),
        s if s.is_active() && reason == FROZEN => {
            Err(Refused(format!("task {id} is already frozen")))
        }
        s if s.is_active() => Ok(Pause::Freeze),
        TaskStatus::Paused => Err(Refused(format!("task {id} is already paused"))),
        s => Err(Refused(format!(
            "task {id} is {s}: only a pending or running task can be paused"
        ))),
    }
}

/// What resuming a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Paused → pending: back to the queue.
    Requeue,
    /// A frozen one gets SIGCONT.
    Thaw,
}

pub fn resume(id: TaskId, status: TaskStatus, reason: &str) -> Result<Resume, Refused> {
    match status {
        TaskStatus::Paused => Ok(Resume::Requeue),
        s if s.is_active() && reason == FROZEN => Ok(Resume::Thaw),
        s => Err(Refused(format!(
            "task {id} is {s} and not paused: nothing to resume"
        ))),
    }
}

/// What killing a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Active: its execution gets SIGKILL, and the task is marked [`KILLED`] so that it stays
    /// killed whatever becomes of the execution (`core::attempt`).
    Signal,
    /// Not started: canceled at once.
    Cancel,
}

pub fn kill(id: TaskId, status: TaskStatus) -> Result<Kill, Refused> {
    if status.is_active() {
        Ok(Kill::Signal)
    } else if EDITABLE.contains(&status) {
        Ok(Kill::Cancel)
    } else {
        Err(Refused(format!(
            "task {id} is {status}: it is not running nor waiting to run"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    const ID: TaskId = TaskId(9);

    #[test]
    fn pause_holds_what_waits_and_freezes_what_runs() {
        assert_eq!(pause(ID, Pending, ""), Ok(Pause::Hold));
        assert_eq!(pause(ID, Running, ""), Ok(Pause::Freeze));
        assert_eq!(pause(ID, Assigned, "retrying after: x"), Ok(Pause::Freeze));
        assert_eq!(
            pause(ID, Running, FROZEN),
            Err(Refused("task 9 is already frozen".into()))
        );
        assert_eq!(
            pause(ID, Paused, ""),
            Err(Refused("task 9 is already paused".into()))
        );
        assert_eq!(
            pause(ID, Succeeded, ""),
            Err(Refused(
                "task 9 is succeeded: only a pending or running task can be paused".into()
            ))
        );
    }

    #[test]
    fn resume_undoes_pause_only() {
        assert_eq!(
            resume(ID, Paused, "paused by an operator"),
            Ok(Resume::Requeue)
        );
        assert_eq!(resume(ID, Uploading, FROZEN), Ok(Resume::Thaw));
        assert!(resume(ID, Running, "").is_err());
        assert!(resume(ID, Pending, "").is_err());
    }

    #[test]
    fn kill_signals_what_runs_and_cancels_what_waits() {
        for status in [Assigned, Accepted, Running, Uploading] {
            assert_eq!(kill(ID, status), Ok(Kill::Signal), "{status}");
        }
        for status in EDITABLE {
            assert_eq!(kill(ID, status), Ok(Kill::Cancel), "{status}");
        }
        for status in [Succeeded, Failed, Canceled] {
            assert!(kill(ID, status).is_err(), "{status}");
        }
    }
}
