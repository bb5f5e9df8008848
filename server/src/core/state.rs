//! The task and execution state machines. Every status change goes through
//! [`TaskStatus::check`] / [`ExecState::check`], or through database updates guarded by
//! [`ExecState::predecessors`], so an illegal transition is an error, never an overwrite.

use std::fmt;
use std::str::FromStr;

/// Where a task stands (see ARCHITECTURE.md for the diagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Dependencies unmet.
    Waiting,
    /// Ready to be assigned.
    Pending,
    /// Sent to an agent, not acknowledged yet.
    Assigned,
    /// Held by an agent (staging or waiting for a slot).
    Accepted,
    Running,
    Uploading,
    Succeeded,
    Failed,
    /// Held back by an operator.
    Paused,
    Canceled,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("illegal transition of {what} from {from} to {to}")]
pub struct IllegalTransition {
    pub what: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown {what} {value:?}")]
pub struct UnknownStatus {
    pub what: &'static str,
    pub value: String,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 10] = [
        Self::Waiting,
        Self::Pending,
        Self::Assigned,
        Self::Accepted,
        Self::Running,
        Self::Uploading,
        Self::Succeeded,
        Self::Failed,
        Self::Paused,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Pending => "pending",
            Self::Assigned => "assigned",
            Self::Accepted => "accepted",
            Self::Running => "running",
            Self::Uploading => "uploading",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Paused => "paused",
            Self::Canceled => "canceled",
        }
    }

    /// Final statuses: nothing happens to the task unless an operator relaunches it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    /// Statuses in which an execution of the task is held by a worker.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Assigned | Self::Accepted | Self::Running | Self::Uploading
        )
    }

    /// Checks that the task may go from `self` to `to`.
    pub fn check(self, to: TaskStatus) -> Result<(), IllegalTransition> {
        use TaskStatus::*;
        let legal = match (self, to) {
            (Waiting, Pending | Canceled) => true,
            (Pending, Assigned | Paused | Canceled) => true,
            (Paused, Pending | Canceled) => true,
            (Assigned, Accepted | Running | Uploading | Succeeded | Failed) => true,
            (Accepted, Running | Uploading | Succeeded | Failed) => true,
            (Running, Uploading | Succeeded | Failed) => true,
            (Uploading, Succeeded | Failed) => true,
            // An active execution ended without a verdict on the task (lost, never
            // delivered, canceled): the task goes back to the queue.
            (Assigned | Accepted | Running | Uploading, Pending) => true,
            // An operator killed it before it ran, and its execution ended undelivered.
            (Assigned | Accepted | Running | Uploading, Canceled) => true,
            // Relaunch.
            (Succeeded | Failed | Canceled, Pending) => true,
            // The failed dependency that canceled it was relaunched.
            (Canceled, Waiting) => true,
            _ => false,
        };
        if legal {
            Ok(())
        } else {
            Err(IllegalTransition {
                what: "task",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }

    /// Every status from which `to` may be reached.
    pub fn predecessors(to: TaskStatus) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|from| from.check(to).is_ok())
            .map(TaskStatus::as_str)
            .collect()
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus {
                what: "task status",
                value: s.to_owned(),
            })
    }
}

/// State of one execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecState {
    Assigned,
    Accepted,
    Running,
    Uploading,
    Succeeded,
    Failed,
    /// Stopped by the server (never delivered, batch deleted); not the task's fault.
    Canceled,
}

impl ExecState {
    pub const ALL: [ExecState; 7] = [
        Self::Assigned,
        Self::Accepted,
        Self::Running,
        Self::Uploading,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assigned => "assigned",
            Self::Accepted => "accepted",
            Self::Running => "running",
            Self::Uploading => "uploading",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    fn rank(self) -> u8 {
        match self {
            Self::Assigned => 0,
            Self::Accepted => 1,
            Self::Running => 2,
            Self::Uploading => 3,
            Self::Succeeded | Self::Failed | Self::Canceled => 4,
        }
    }

    /// Executions only move forward; a final state is never left.
    pub fn check(self, to: ExecState) -> Result<(), IllegalTransition> {
        if !self.is_final() && to.rank() > self.rank() {
            Ok(())
        } else {
            Err(IllegalTransition {
                what: "execution",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }

    pub fn predecessors(to: ExecState) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|from| from.check(to).is_ok())
            .map(ExecState::as_str)
            .collect()
    }

    /// The task status that mirrors this execution state, when the execution is the
    /// task's current one. Failed and canceled are decided by the caller (retries).
    pub fn task_status(self) -> Option<TaskStatus> {
        match self {
            Self::Assigned => Some(TaskStatus::Assigned),
            Self::Accepted => Some(TaskStatus::Accepted),
            Self::Running => Some(TaskStatus::Running),
            Self::Uploading => Some(TaskStatus::Uploading),
            Self::Succeeded => Some(TaskStatus::Succeeded),
            Self::Failed | Self::Canceled => None,
        }
    }
}

impl FromStr for ExecState {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownStatus {
                what: "execution state",
                value: s.to_owned(),
            })
    }
}

/// Why an execution failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Not failed, or no class given.
    None,
    /// Staging its inputs or resources failed.
    Download,
    /// The command failed.
    Run,
    /// Uploading its output failed.
    Upload,
    /// Its worker lost it (the agent no longer holds it, or its lease expired).
    Lost,
    /// Killed by an operator.
    Killed,
    /// It ran past its time limit.
    Timeout,
    /// Its agent gave it back unstarted, as the server asked (an edit, a stopped batch).
    Recalled,
}

impl Failure {
    pub const ALL: [Failure; 8] = [
        Self::None,
        Self::Download,
        Self::Run,
        Self::Upload,
        Self::Lost,
        Self::Killed,
        Self::Timeout,
        Self::Recalled,
    ];

    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Download => "download",
            Self::Run => "run",
            Self::Upload => "upload",
            Self::Lost => "lost",
            Self::Killed => "killed",
            Self::Timeout => "timeout",
            Self::Recalled => "recalled",
        }
    }

    /// From what is stored; anything unknown reads as no class.
    pub fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .unwrap_or(Self::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
        }
        for state in ExecState::ALL {
            assert_eq!(state.as_str().parse::<ExecState>(), Ok(state));
        }
        assert!("runing".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn a_finished_task_only_leaves_through_a_relaunch() {
        assert!(TaskStatus::Succeeded.check(TaskStatus::Running).is_err());
        assert!(TaskStatus::Failed.check(TaskStatus::Succeeded).is_err());
        assert!(TaskStatus::Failed.check(TaskStatus::Pending).is_ok());
        let err = TaskStatus::Running.check(TaskStatus::Paused).unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal transition of task from running to paused"
        );
    }

    #[test]
    fn executions_only_move_forward() {
        assert!(ExecState::Assigned.check(ExecState::Running).is_ok());
        assert!(ExecState::Running.check(ExecState::Accepted).is_err());
        assert!(ExecState::Running.check(ExecState::Running).is_err());
        assert!(ExecState::Succeeded.check(ExecState::Failed).is_err());
        assert_eq!(
            ExecState::predecessors(ExecState::Running),
            vec!["assigned", "accepted"]
        );
        assert_eq!(
            ExecState::predecessors(ExecState::Failed),
            vec!["assigned", "accepted", "running", "uploading"]
        );
    }
}
