//! What operator steering leaves on a task, for the decisions that must honour it later.

/// Reason of an active task an operator killed: it must stay killed, whatever becomes of
/// its execution (a lost or undelivered one is not re-queued; a kill lost with an agent's
/// session is sent again when it reconnects).
pub const KILLED: &str = "killed by an operator";

/// Reason of an active task an operator froze (SIGSTOP), until it is resumed.
pub const FROZEN: &str = "frozen by an operator";

/// Reason of a task held by an agent but not started (prefetched) that the server asked its
/// agent to give back (SIGNAL_RECALL): it was edited, or its batch stopped. A recall lost
/// with an agent's session is sent again when it reconnects.
pub const RECALLING: &str = "being recalled from its worker before it starts";

/// Reason of a task its agent gave back unstarted, once queued again.
pub const RECALLED_BACK: &str = "recalled from its worker before it started";

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
    /// Give it back if it has not started (the agent reports it canceled, `Recalled`);
    /// a started one runs on.
    Recall,
}

/// Statuses in which a task can be edited in place (no agent holds it).
pub const EDITABLE: [TaskStatus; 3] =
    [TaskStatus::Waiting, TaskStatus::Pending, TaskStatus::Paused];

/// Statuses of a task an agent holds but has not started (prefetched, maybe staging its
/// inputs): it can be recalled.
pub const RECALLABLE: [TaskStatus; 2] = [TaskStatus::Assigned, TaskStatus::Accepted];

/// What editing a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// No agent holds it: the new spec applies at once.
    InPlace,
    /// An agent holds it unstarted: the new spec is saved and the agent is asked to give
    /// it back ([`RECALLING`]); once it has, the task is queued again with the new spec,
    /// no retry spent. An agent that started it meanwhile runs the old spec to its end.
    Recall,
}

pub fn edit(id: TaskId, status: TaskStatus) -> Result<Edit, Refused> {
    if EDITABLE.contains(&status) {
        Ok(Edit::InPlace)
    } else if RECALLABLE.contains(&status) {
        Ok(Edit::Recall)
    } else {
        Err(Refused(format!(
            "task {id} is {status}: only tasks that have not started can be edited (relaunch \
             a finished one with a new command instead)"
        )))
    }
}

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
    fn edit_applies_to_what_waits_and_recalls_what_is_prefetched() {
        for status in EDITABLE {
            assert_eq!(edit(ID, status), Ok(Edit::InPlace), "{status}");
        }
        for status in RECALLABLE {
            assert_eq!(edit(ID, status), Ok(Edit::Recall), "{status}");
        }
        for status in [Running, Uploading, Succeeded, Failed, Canceled] {
            let err = edit(ID, status).unwrap_err();
            assert!(err.0.starts_with(&format!("task 9 is {status}: ")), "{err}");
        }
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
