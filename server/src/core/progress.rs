//! An execution moving forward on an agent's report (accepted, running, uploading,
//! succeeded). The store renders this same rule as guarded set-based
//! statements for a whole group of reports at once (one per target state): the execution
//! moves only from a legal predecessor and only for the worker that holds it; its task
//! follows only while it is the task's current execution on that worker and the task's own
//! transition is legal. So a replayed report matches nothing, and a late one (the
//! execution ended meanwhile, e.g. after its lease) changes no task.

use super::ids::{ExecutionId, WorkerId};
use super::state::{ExecState, TaskStatus};

/// An execution as the rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecRow {
    pub worker: WorkerId,
    pub state: ExecState,
}

/// A task as the rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRow {
    pub status: TaskStatus,
    pub current: Option<ExecutionId>,
    pub worker: Option<WorkerId>,
}

/// What a report changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Advance {
    pub exec: Option<ExecState>,
    pub task: Option<TaskStatus>,
    /// A final report of an execution the server had already failed or canceled: recorded
    /// in its message, nothing else.
    pub late: bool,
}

/// The effect of `worker` reporting that execution `id` reached `target` (a forward state:
/// failures are `core::attempt`'s).
pub fn advance(
    id: ExecutionId,
    exec: ExecRow,
    task: TaskRow,
    worker: WorkerId,
    target: ExecState,
) -> Advance {
    let Some(status) = target.task_status() else {
        return Advance::default();
    };
    if exec.worker != worker {
        return Advance::default();
    }
    if exec.state.check(target).is_err() {
        let late =
            target.is_final() && matches!(exec.state, ExecState::Failed | ExecState::Canceled);
        return Advance {
            late,
            ..Advance::default()
        };
    }
    let task_follows = task.current == Some(id)
        && task.worker == Some(worker)
        && task.status.check(status).is_ok();
    Advance {
        exec: Some(target),
        task: task_follows.then_some(status),
        late: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: WorkerId = WorkerId(1);
    const E: ExecutionId = ExecutionId(10);

    fn exec(state: ExecState) -> ExecRow {
        ExecRow { worker: W, state }
    }

    fn task(status: TaskStatus) -> TaskRow {
        TaskRow {
            status,
            current: Some(E),
            worker: Some(W),
        }
    }

    #[test]
    fn reports_move_execution_and_task_forward_once() {
        let cases = [
            // (exec state, task status, target, expected)
            (
                ExecState::Assigned,
                TaskStatus::Assigned,
                ExecState::Running,
                Advance {
                    exec: Some(ExecState::Running),
                    task: Some(TaskStatus::Running),
                    late: false,
                },
            ),
            // A replay of what already happened.
            (
                ExecState::Running,
                TaskStatus::Running,
                ExecState::Running,
                Advance::default(),
            ),
            // Late: the lease expired and the task was retried elsewhere.
            (
                ExecState::Failed,
                TaskStatus::Pending,
                ExecState::Succeeded,
                Advance {
                    exec: None,
                    task: None,
                    late: true,
                },
            ),
            // Going backwards.
            (
                ExecState::Uploading,
                TaskStatus::Uploading,
                ExecState::Accepted,
                Advance::default(),
            ),
        ];
        for (state, status, target, expected) in cases {
            assert_eq!(
                advance(E, exec(state), task(status), W, target),
                expected,
                "{state:?} / {status:?} -> {target:?}"
            );
        }
    }

    #[test]
    fn an_old_execution_moves_but_not_its_relaunched_task() {
        let mut relaunched = task(TaskStatus::Running);
        relaunched.current = Some(ExecutionId(11));
        let advanced = advance(
            E,
            exec(ExecState::Running),
            relaunched,
            W,
            ExecState::Succeeded,
        );
        assert_eq!(advanced.exec, Some(ExecState::Succeeded));
        assert_eq!(advanced.task, None);
    }

    #[test]
    fn another_worker_cannot_report_it() {
        let advanced = advance(
            E,
            exec(ExecState::Running),
            task(TaskStatus::Running),
            WorkerId(2),
            ExecState::Succeeded,
        );
        assert_eq!(advanced, Advance::default());
    }
}
