//! What becomes of an execution and its task when the attempt ends without success: the
//! agent reported a failure, or the execution went missing (the agent no longer holds it
//! at a Hello, or its worker's lease expired).
//!
//! [`end`] decides from plain views of the two rows; the store loads them, applies the
//! [`Decision`] with UPDATEs guarded by the same predecessor states, and `service` re-queues.

use super::ids::{ExecutionId, TaskId};
use super::state::{ExecState, Failure, TaskStatus};

pub use super::steering::KILLED;
use super::steering::RECALLED_BACK;

/// An execution, as far as ending it is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecView {
    pub id: ExecutionId,
    pub state: ExecState,
}

/// A task, as far as ending one of its attempts is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub id: TaskId,
    pub status: TaskStatus,
    /// The execution the task waits on; an older one ending is history.
    pub current: Option<ExecutionId>,
    pub retry_left: i32,
    /// An operator killed it (its reason is [`KILLED`]).
    pub killed: bool,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The agent reported it failed or canceled.
    Reported {
        state: ExecState,
        failure: Failure,
        exit_code: Option<i32>,
        message: String,
    },
    /// The worker does not hold it any more; `why` says how we know.
    Missing { why: &'static str },
}

/// The execution's new state, failure class and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecChange {
    pub state: ExecState,
    pub failure: Failure,
    pub exit_code: Option<i32>,
    pub message: String,
}

/// What happens to the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskChange {
    /// Nothing: the execution was not the task's current one (relaunched meanwhile), or
    /// nothing changed at all (a replay).
    Unchanged,
    /// Back to the queue. `retry_left` is the budget once this attempt is paid for (the same
    /// as before when the attempt never started).
    Requeue { retry_left: i32, reason: String },
    /// For good: its waiting dependants are canceled.
    End {
        status: TaskStatus,
        reason: String,
        exit_code: Option<i32>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `None`: the execution already ended (a replay or a late report); nothing changes.
    pub exec: Option<ExecChange>,
    pub task: TaskChange,
}

impl Decision {
    const NOTHING: Decision = Decision {
        exec: None,
        task: TaskChange::Unchanged,
    };
}

/// Decides how an attempt that did not succeed ends.
pub fn end(exec: ExecView, task: &TaskView, ending: Ending) -> Decision {
    let never_started =
        matches!(ending, Ending::Missing { .. }) && exec.state == ExecState::Assigned;
    let change = match ending {
        Ending::Reported {
            state,
            failure,
            exit_code,
            message,
        } => ExecChange {
            state,
            failure,
            exit_code,
            message,
        },
        // One the agent never acknowledged never started: canceled, no retry spent.
        Ending::Missing { why } if exec.state == ExecState::Assigned => ExecChange {
            state: ExecState::Canceled,
            failure: Failure::None,
            exit_code: None,
            message: format!("never delivered: {why}"),
        },
        Ending::Missing { why } => ExecChange {
            state: ExecState::Failed,
            failure: Failure::Lost,
            exit_code: None,
            message: format!("lost: {why}"),
        },
    };
    if exec.state.check(change.state).is_err() {
        return Decision::NOTHING;
    }
    if task.current != Some(exec.id) || !task.status.is_active() {
        return Decision {
            exec: Some(change),
            task: TaskChange::Unchanged,
        };
    }
    let task_change = task_after(task, &change, never_started);
    Decision {
        exec: Some(change),
        task: task_change,
    }
}

fn task_after(task: &TaskView, change: &ExecChange, never_started: bool) -> TaskChange {
    let what = if change.message.is_empty() {
        match change.exit_code {
            Some(code) => format!("exit code {code}"),
            None => change.failure.as_str().to_owned(),
        }
    } else {
        change.message.clone()
    };
    if task.killed {
        // Killed before it ever ran: canceled, as a kill of a pending task is.
        let status = if change.state == ExecState::Canceled {
            TaskStatus::Canceled
        } else {
            TaskStatus::Failed
        };
        let reason = if change.failure == Failure::Killed {
            KILLED.to_owned()
        } else {
            format!("{KILLED} ({what})")
        };
        return TaskChange::End {
            status,
            reason,
            exit_code: change.exit_code,
        };
    }
    if never_started {
        return TaskChange::Requeue {
            retry_left: task.retry_left,
            reason: change.message.clone(),
        };
    }
    if change.failure == Failure::Recalled {
        // Given back unstarted, as asked: back to the queue with its (edited) spec.
        return TaskChange::Requeue {
            retry_left: task.retry_left,
            reason: RECALLED_BACK.to_owned(),
        };
    }
    let retry = change.state == ExecState::Failed && change.failure != Failure::Killed;
    if retry && task.retry_left > 0 {
        let left = task.retry_left - 1;
        return TaskChange::Requeue {
            retry_left: left,
            reason: format!("retrying after: {what} ({left} retries left)"),
        };
    }
    TaskChange::End {
        status: TaskStatus::Failed,
        reason: what,
        exit_code: change.exit_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(state: ExecState) -> ExecView {
        ExecView {
            id: ExecutionId(7),
            state,
        }
    }

    fn task(status: TaskStatus, retry_left: i32) -> TaskView {
        TaskView {
            id: TaskId(1),
            status,
            current: Some(ExecutionId(7)),
            retry_left,
            killed: false,
        }
    }

    fn failed(failure: Failure, exit_code: Option<i32>) -> Ending {
        Ending::Reported {
            state: ExecState::Failed,
            failure,
            exit_code,
            message: String::new(),
        }
    }

    const LEASE: Ending = Ending::Missing {
        why: "the worker's lease expired",
    };

    #[test]
    fn a_failure_is_retried_while_budget_is_left() {
        let cases = [
            // (retry left, failure, expected task change)
            (
                2,
                Failure::Run,
                TaskChange::Requeue {
                    retry_left: 1,
                    reason: "retrying after: exit code 3 (1 retries left)".into(),
                },
            ),
            (
                0,
                Failure::Run,
                TaskChange::End {
                    status: TaskStatus::Failed,
                    reason: "exit code 3".into(),
                    exit_code: Some(3),
                },
            ),
            // A kill spends no retry and is never retried.
            (
                5,
                Failure::Killed,
                TaskChange::End {
                    status: TaskStatus::Failed,
                    reason: "exit code 3".into(),
                    exit_code: Some(3),
                },
            ),
        ];
        for (left, failure, expected) in cases {
            let decision = end(
                exec(ExecState::Running),
                &task(TaskStatus::Running, left),
                failed(failure, Some(3)),
            );
            assert_eq!(decision.task, expected, "retry_left {left}, {failure:?}");
            assert_eq!(decision.exec.unwrap().state, ExecState::Failed);
        }
    }

    #[test]
    fn a_replayed_or_late_failure_changes_nothing() {
        for state in [ExecState::Succeeded, ExecState::Failed, ExecState::Canceled] {
            let decision = end(
                exec(state),
                &task(TaskStatus::Running, 3),
                failed(Failure::Run, Some(1)),
            );
            assert_eq!(decision, Decision::NOTHING, "execution already {state:?}");
        }
    }

    #[test]
    fn an_old_attempt_ending_leaves_the_relaunched_task_alone() {
        let mut relaunched = task(TaskStatus::Running, 3);
        relaunched.current = Some(ExecutionId(8));
        let decision = end(exec(ExecState::Uploading), &relaunched, LEASE);
        assert_eq!(decision.exec.unwrap().failure, Failure::Lost);
        assert_eq!(decision.task, TaskChange::Unchanged);
    }

    #[test]
    fn a_lost_execution_spends_a_retry_and_a_never_delivered_one_does_not() {
        let lost = end(
            exec(ExecState::Running),
            &task(TaskStatus::Running, 1),
            LEASE,
        );
        assert_eq!(
            lost.task,
            TaskChange::Requeue {
                retry_left: 0,
                reason: "retrying after: lost: the worker's lease expired (0 retries left)".into()
            }
        );
        let undelivered = end(
            exec(ExecState::Assigned),
            &task(TaskStatus::Assigned, 0),
            LEASE,
        );
        assert_eq!(undelivered.exec.unwrap().state, ExecState::Canceled);
        assert_eq!(
            undelivered.task,
            TaskChange::Requeue {
                retry_left: 0,
                reason: "never delivered: the worker's lease expired".into()
            }
        );
        let exhausted = end(
            exec(ExecState::Running),
            &task(TaskStatus::Running, 0),
            LEASE,
        );
        assert!(matches!(
            exhausted.task,
            TaskChange::End {
                status: TaskStatus::Failed,
                ..
            }
        ));
    }

    #[test]
    fn a_killed_task_stays_killed_whatever_becomes_of_its_execution() {
        let mut killed = task(TaskStatus::Assigned, 3);
        killed.killed = true;
        // Never delivered (the agent restarted before it got it): canceled, not re-queued.
        let decision = end(exec(ExecState::Assigned), &killed, LEASE);
        assert_eq!(
            decision.task,
            TaskChange::End {
                status: TaskStatus::Canceled,
                reason: "killed by an operator (never delivered: the worker's lease expired)"
                    .into(),
                exit_code: None,
            }
        );
        // Lost while running: failed, no retry.
        killed.status = TaskStatus::Running;
        let decision = end(exec(ExecState::Running), &killed, LEASE);
        assert!(matches!(
            decision.task,
            TaskChange::End {
                status: TaskStatus::Failed,
                ..
            }
        ));
        // Reported killed by the agent.
        let decision = end(
            exec(ExecState::Running),
            &killed,
            failed(Failure::Killed, Some(137)),
        );
        assert_eq!(
            decision.task,
            TaskChange::End {
                status: TaskStatus::Failed,
                reason: KILLED.into(),
                exit_code: Some(137),
            }
        );
    }

    #[test]
    fn a_canceled_report_ends_the_task() {
        let decision = end(
            exec(ExecState::Accepted),
            &task(TaskStatus::Accepted, 3),
            Ending::Reported {
                state: ExecState::Canceled,
                failure: Failure::None,
                exit_code: None,
                message: "canceled by the agent".into(),
            },
        );
        assert_eq!(
            decision.task,
            TaskChange::End {
                status: TaskStatus::Failed,
                reason: "canceled by the agent".into(),
                exit_code: None,
            }
        );
    }
}
