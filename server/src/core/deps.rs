//! Task dependencies. A task with dependencies is `waiting` until all of them succeeded,
//! then `pending`. When one fails for good (or is canceled), its waiting dependants are
//! canceled with a reason naming it, and theirs in turn; relaunching it brings back to
//! `waiting` the ones canceled for it, and theirs.
//!
//! The store loads the part of the graph a decision needs and applies it with
//! UPDATEs guarded by the statuses decided on here.

use std::collections::{HashMap, HashSet};

use super::ids::TaskId;
use super::state::TaskStatus;

/// Reason of a task waiting for its dependencies.
pub const WAITING: &str = "waiting for its dependencies";

/// Reason of a task canceled because `dependency` failed.
pub fn failed_reason(dependency: TaskId) -> String {
    format!("dependency {dependency} failed")
}

/// The status (and reason) a new task starts in, given its dependencies' statuses.
pub fn initial(dependencies: &[(TaskId, TaskStatus)]) -> (TaskStatus, String) {
    if let Some((failed, _)) = dependencies
        .iter()
        .find(|(_, status)| matches!(status, TaskStatus::Failed | TaskStatus::Canceled))
    {
        return (TaskStatus::Canceled, failed_reason(*failed));
    }
    if dependencies
        .iter()
        .all(|(_, status)| *status == TaskStatus::Succeeded)
    {
        (TaskStatus::Pending, String::new())
    } else {
        (TaskStatus::Waiting, WAITING.to_owned())
    }
}

/// Whether a waiting task whose dependencies have these statuses may run.
pub fn ready(dependencies: impl IntoIterator<Item = TaskStatus>) -> bool {
    dependencies
        .into_iter()
        .all(|status| status == TaskStatus::Succeeded)
}

/// The part of the dependency graph below a task: who depends on whom, and where each
/// dependant stands.
#[derive(Debug, Default, Clone)]
pub struct Dependants {
    /// Task → the tasks that depend on it.
    pub of: HashMap<TaskId, Vec<TaskId>>,
    /// Status and reason of every dependant listed.
    pub status: HashMap<TaskId, (TaskStatus, String)>,
}

/// `root` failed or was canceled for good: the waiting tasks that must be canceled, each
/// with the dependency it is canceled for, in the order of the cascade.
pub fn cancel(root: TaskId, graph: &Dependants) -> Vec<(TaskId, String)> {
    cascade(root, graph, |status, _reason, _| {
        *status == TaskStatus::Waiting
    })
}

/// `root` is relaunched: the tasks canceled because of it (or of one of those, in turn) wait
/// again. Each comes with the reason it was canceled with.
pub fn restore(root: TaskId, graph: &Dependants) -> Vec<(TaskId, String)> {
    cascade(root, graph, |status, reason, cause| {
        *status == TaskStatus::Canceled && *reason == failed_reason(cause)
    })
}

/// Walks down from `root`: a dependant that `applies` (given its status, its reason, and the
/// task it is reached from) changes, and the walk goes on below it.
fn cascade(
    root: TaskId,
    graph: &Dependants,
    applies: impl Fn(&TaskStatus, &str, TaskId) -> bool,
) -> Vec<(TaskId, String)> {
    let mut changed = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        for dependant in graph.of.get(&id).into_iter().flatten() {
            if seen.contains(dependant) {
                continue;
            }
            let Some((status, reason)) = graph.status.get(dependant) else {
                continue;
            };
            if applies(status, reason, id) {
                seen.insert(*dependant);
                changed.push((*dependant, failed_reason(id)));
                todo.push(*dependant);
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    #[test]
    fn a_new_task_waits_runs_or_is_canceled_by_its_dependencies() {
        let cases = [
            (vec![], Pending, ""),
            (vec![(1, Succeeded), (2, Succeeded)], Pending, ""),
            (vec![(1, Succeeded), (2, Running)], Waiting, WAITING),
            (
                vec![(1, Pending), (2, Failed)],
                Canceled,
                "dependency 2 failed",
            ),
            (vec![(3, Canceled)], Canceled, "dependency 3 failed"),
        ];
        for (deps, status, reason) in cases {
            let deps: Vec<(TaskId, TaskStatus)> =
                deps.into_iter().map(|(id, s)| (TaskId(id), s)).collect();
            assert_eq!(initial(&deps), (status, reason.to_owned()), "{deps:?}");
        }
        assert!(ready([Succeeded, Succeeded]));
        assert!(!ready([Succeeded, Uploading]));
    }

    /// 1 ← 2 ← 3, and 1 ← 4 (4 was edited and runs: it is not waiting).
    fn chain(statuses: [(i64, TaskStatus, &str); 3]) -> Dependants {
        Dependants {
            of: HashMap::from([
                (TaskId(1), vec![TaskId(2), TaskId(4)]),
                (TaskId(2), vec![TaskId(3)]),
            ]),
            status: statuses
                .into_iter()
                .map(|(id, s, r)| (TaskId(id), (s, r.to_owned())))
                .collect(),
        }
    }

    #[test]
    fn a_failure_cancels_waiting_dependants_down_the_graph_only() {
        let graph = chain([
            (2, Waiting, WAITING),
            (3, Waiting, WAITING),
            (4, Running, ""),
        ]);
        assert_eq!(
            cancel(TaskId(1), &graph),
            vec![
                (TaskId(2), "dependency 1 failed".to_owned()),
                (TaskId(3), "dependency 2 failed".to_owned())
            ]
        );
    }

    #[test]
    fn a_relaunch_restores_only_what_its_failure_canceled() {
        let graph = chain([
            (2, Canceled, "dependency 1 failed"),
            (3, Canceled, "dependency 2 failed"),
            // Canceled by an operator, not by the failure: stays canceled.
            (4, Canceled, "killed by an operator"),
        ]);
        let restored: Vec<TaskId> = restore(TaskId(1), &graph)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(restored, vec![TaskId(2), TaskId(3)]);
    }

    #[test]
    fn a_cycle_in_the_loaded_graph_ends() {
        let graph = Dependants {
            of: HashMap::from([(TaskId(1), vec![TaskId(2)]), (TaskId(2), vec![TaskId(1)])]),
            status: HashMap::from([
                (TaskId(1), (Waiting, WAITING.to_owned())),
                (TaskId(2), (Waiting, WAITING.to_owned())),
            ]),
        };
        assert_eq!(cancel(TaskId(1), &graph).len(), 2);
    }
}
