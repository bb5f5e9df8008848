//! Task operations: create, list, show, relaunch, pause, resume, kill, edit, explain.

use super::{Ops, OpsError, command, field};
use crate::core::ids::{TaskId, WorkerId};
use crate::core::model::Task;
use crate::core::state::TaskStatus;
use crate::core::steering::{EDITABLE, RECALLABLE, Signal};
use crate::core::task::{
    MAX_RETRY, NewTask, SpecError, TaskSpec, UriCheck, check_image, validate_batch_name,
};
use crate::persistence::steering::{self, Changes, Selector, Target};
use crate::persistence::tasks::{self, Queued, TaskFilter};
use crate::service::scheduler::Command;

/// Most tasks in one create call.
pub const MAX_TASKS_PER_CALL: usize = 100_000;
pub(super) const DEFAULT_LIMIT: u32 = 1000;
/// Most tasks in one listing page.
pub const MAX_LIMIT: u32 = 10_000;

/// Which tasks to list.
#[derive(Clone, Debug, Default)]
pub struct TaskQuery {
    pub batch: Option<String>,
    /// Any of these (none: every status).
    pub statuses: Vec<TaskStatus>,
    /// A glob (`*`, `?`) on the name.
    pub name: Option<String>,
    pub ids: Vec<TaskId>,
    /// Tasks whose current (last) execution is this worker's.
    pub worker: Option<WorkerId>,
    /// Tasks after this id (paging).
    pub after_id: i64,
    /// 0: the default page size.
    pub limit: u32,
}

/// A page of tasks; `next_after_id` is 0 on the last page.
#[derive(Clone, Debug)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    pub next_after_id: i64,
}

/// Which tasks an edit touches: ids, or a filter, or all (not started).
#[derive(Clone, Debug, Default)]
pub struct TaskSelection {
    pub ids: Vec<TaskId>,
    pub batch: Option<String>,
    pub statuses: Vec<TaskStatus>,
    /// A glob on the name.
    pub name: Option<String>,
    pub all: bool,
}

/// Why a task is where it is.
#[derive(Clone, Debug)]
pub struct Explained {
    pub status: TaskStatus,
    pub reasons: Vec<String>,
}

/// Turns a glob (`*`, `?`) into a LIKE pattern.
pub fn glob_to_like(glob: &str) -> String {
    glob.chars()
        .map(|c| match c {
            '*' => '%',
            '?' => '_',
            c => c,
        })
        .collect()
}

impl Ops {
    /// Creates tasks, all or none; each spec is checked (its URIs against scitqd's remotes)
    /// before anything is written. Returns the new ids in order.
    pub async fn create_tasks(&self, specs: Vec<TaskSpec>) -> Result<Vec<TaskId>, OpsError> {
        if specs.is_empty() {
            return Err(OpsError::NoTask);
        }
        if specs.len() > MAX_TASKS_PER_CALL {
            return Err(OpsError::TooManyTasks { count: specs.len() });
        }
        let uris = UriCheck::new(&self.rclone_config);
        let tasks = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let task = NewTask::validate(i, spec)?;
                task.check_uris(i, &uris)?;
                Ok(task)
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        let created = tasks::create(&self.store, tasks).await?;
        self.scheduler.enqueue(created.queued);
        // Work waits: the recruiter need not wait for its next pass.
        if let Some(recruiter) = &self.recruiter {
            recruiter.nudge();
        }
        Ok(created.ids)
    }

    pub async fn list_tasks(&self, query: TaskQuery) -> Result<TaskPage, OpsError> {
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            n if n > MAX_LIMIT => return Err(OpsError::LimitTooHigh { limit: n }),
            n => n,
        };
        let filter = TaskFilter {
            batch: query.batch,
            statuses: query.statuses,
            name_like: query.name.as_deref().map(glob_to_like),
            ids: query.ids,
            worker: query.worker,
            after_id: query.after_id,
            limit: u64::from(limit),
        };
        let tasks = tasks::list(&self.store, filter).await?;
        let next_after_id = if tasks.len() == limit as usize {
            tasks.last().map_or(0, |t| t.id.0)
        } else {
            0
        };
        let tasks = self.with_dependencies(tasks).await?;
        Ok(TaskPage {
            tasks,
            next_after_id,
        })
    }

    /// One task, with its dependencies.
    pub async fn task(&self, id: TaskId) -> Result<Task, OpsError> {
        let task = tasks::get(&self.store.db, id).await?;
        let mut tasks = self.with_dependencies(vec![task]).await?;
        Ok(tasks.remove(0))
    }

    /// Fills the dependencies of tasks about to be shown (one query per 500 tasks).
    async fn with_dependencies(&self, mut tasks: Vec<Task>) -> Result<Vec<Task>, OpsError> {
        if !self
            .store
            .has_dependencies
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(tasks);
        }
        let ids: Vec<i64> = tasks.iter().map(|t| t.id.0).collect();
        let mut deps = crate::persistence::deps::of_tasks(&self.store.db, &ids).await?;
        for task in &mut tasks {
            if let Some(list) = deps.remove(&task.id.0) {
                task.spec.depends_on = list;
            }
        }
        Ok(tasks)
    }

    /// Queues a finished task again, optionally with a new command.
    pub async fn relaunch_task(
        &self,
        id: TaskId,
        new_command: Option<String>,
    ) -> Result<Task, OpsError> {
        if let Some(c) = &new_command {
            command(c)?;
        }
        let (task, queued) = tasks::relaunch(&self.store, id, new_command).await?;
        self.scheduler.enqueue(vec![queued]);
        self.hub.notify([id]);
        Ok(task)
    }

    fn signal(&self, target: Option<Target>, signal: Signal) {
        if let Some(target) = target {
            self.scheduler.send(Command::Signal {
                targets: vec![target],
                signal,
            });
        }
    }

    /// Pauses a pending task, or freezes an active one.
    pub async fn pause_task(&self, id: TaskId) -> Result<Task, OpsError> {
        let (task, target) = steering::pause(&self.store, id).await?;
        self.signal(target, Signal::Pause);
        self.hub.notify([id]);
        Ok(task)
    }

    /// Undoes [`Ops::pause_task`].
    pub async fn resume_task(&self, id: TaskId) -> Result<Task, OpsError> {
        let (task, queued, target) = steering::resume(&self.store, id).await?;
        self.scheduler.enqueue(queued.into_iter().collect());
        self.signal(target, Signal::Resume);
        self.hub.notify([id]);
        Ok(task)
    }

    /// Kills an active task (no retry spent), or cancels one not started.
    pub async fn kill_task(&self, id: TaskId) -> Result<Task, OpsError> {
        let (task, target) = steering::kill(&self.store, id).await?;
        self.signal(target, Signal::Kill);
        self.hub.notify([id]);
        Ok(task)
    }

    /// Edits tasks that have not started, all or none; `dry_run` shows the result only.
    pub async fn edit_tasks(
        &self,
        selection: TaskSelection,
        mut changes: Changes,
        dry_run: bool,
    ) -> Result<Vec<Task>, OpsError> {
        let selector = selector(selection)?;
        check_changes(&changes)?;
        if let Some(batch) = changes.batch.as_mut() {
            *batch = batch.trim().to_owned();
        }
        UriCheck::new(&self.rclone_config)
            .check_edit(
                changes.inputs.as_deref(),
                changes.output.as_deref(),
                changes.resources.as_deref(),
            )
            .map_err(OpsError::BadUri)?;
        let edited = steering::edit(&self.store, selector, changes, dry_run).await?;
        if !dry_run {
            if !edited.recall.is_empty() {
                self.scheduler.send(Command::Signal {
                    targets: edited.recall,
                    signal: Signal::Recall,
                });
            }
            let (old, new): (Vec<Queued>, Vec<Queued>) = edited.requeue.into_iter().unzip();
            if !old.is_empty() {
                self.scheduler.send(Command::Dequeue(old));
                self.scheduler.enqueue(new);
            }
            self.hub.notify(edited.tasks.iter().map(|t| t.id));
        }
        Ok(edited.tasks)
    }

    /// Deletes a task with its executions and output; an active execution is canceled on
    /// its agent.
    pub async fn delete_task(&self, id: TaskId) -> Result<(), OpsError> {
        let deleted = crate::persistence::removal::delete_task(&self.store, id).await?;
        if deleted.status == TaskStatus::Pending {
            self.scheduler.send(Command::Dequeue(vec![Queued {
                id,
                batch: deleted.batch,
                priority: deleted.priority,
            }]));
        }
        if let Some(target) = deleted.active {
            self.scheduler.send(Command::Signal {
                targets: vec![target],
                signal: Signal::Cancel,
            });
        }
        self.hub.notify([id]);
        Ok(())
    }

    /// Why a task is where it is, in plain words.
    pub async fn explain_task(&self, id: TaskId) -> Result<Explained, OpsError> {
        let task = tasks::get(&self.store.db, id).await?;
        let mut reasons = Vec::new();
        if !task.status_reason.is_empty() {
            reasons.push(task.status_reason.clone());
        }
        let worker = task.worker.map_or(0, |w| w.0);
        match task.status {
            TaskStatus::Pending => {
                let queued = Queued {
                    id,
                    batch: task.spec.batch.clone(),
                    priority: task.spec.priority,
                };
                reasons.extend(self.scheduler.explain(queued).await);
            }
            TaskStatus::Paused => reasons.push(format!(
                "paused: run `scitqctl task resume {id}` to queue it again"
            )),
            TaskStatus::Assigned => reasons.push(format!(
                "sent to worker {worker}, which has not acknowledged it yet"
            )),
            TaskStatus::Accepted => reasons.push(format!(
                "held by worker {worker}, waiting for a free slot or staging its inputs"
            )),
            TaskStatus::Running | TaskStatus::Uploading => {
                reasons.push(format!("{} on worker {worker}", task.status))
            }
            TaskStatus::Succeeded => reasons.push("it succeeded".to_owned()),
            TaskStatus::Failed | TaskStatus::Canceled => reasons.push(format!(
                "it is {}: `scitqctl task relaunch {id}` runs it again",
                task.status
            )),
            TaskStatus::Waiting => {
                let unmet = crate::persistence::deps::unmet(&self.store.db, id).await?;
                let list: Vec<String> = unmet.iter().map(i64::to_string).collect();
                reasons.push(format!(
                    "it waits for task(s) {} to succeed",
                    list.join(", ")
                ));
            }
        }
        Ok(Explained {
            status: task.status,
            reasons,
        })
    }
}

fn selector(selection: TaskSelection) -> Result<Selector, OpsError> {
    if let Some(status) = selection
        .statuses
        .iter()
        .find(|s| !EDITABLE.contains(s) && !RECALLABLE.contains(s))
    {
        return Err(OpsError::NotEditable { status: *status });
    }
    let batch = selection
        .batch
        .map(|b| validate_batch_name(0, &b))
        .transpose()?;
    let selector = Selector {
        ids: selection.ids,
        batch,
        statuses: selection.statuses,
        name_like: selection.name.as_deref().map(glob_to_like),
        all: selection.all,
    };
    let filtered =
        selector.batch.is_some() || !selector.statuses.is_empty() || selector.name_like.is_some();
    if !selector.ids.is_empty() && (filtered || selector.all) {
        return Err(OpsError::IdsAndFilter);
    }
    if selector.ids.is_empty() && !filtered && !selector.all {
        return Err(OpsError::NothingSelected);
    }
    Ok(selector)
}

/// Checks an edit's fields one by one (the edited task as a whole is checked as creation
/// does, in the store's transaction).
fn check_changes(changes: &Changes) -> Result<(), OpsError> {
    if changes.is_empty() {
        return Err(OpsError::NoChange);
    }
    if let Some(c) = &changes.command {
        command(c)?;
    }
    if let Some(batch) = &changes.batch {
        if batch.trim().is_empty() {
            return Err(OpsError::EmptyBatchName);
        }
        validate_batch_name(0, batch)?;
    }
    for (name, value) in [
        ("container", &changes.container),
        ("output", &changes.output),
        ("name", &changes.name),
    ] {
        if let Some(value) = value {
            field(name, value)?;
        }
    }
    for list in [
        &changes.container_options,
        &changes.inputs,
        &changes.resources,
    ]
    .into_iter()
    .flatten()
    {
        for value in list {
            field("uri or option", value)?;
        }
    }
    if let Some(image) = &changes.container {
        check_image(image).map_err(|reason| OpsError::BadImage {
            image: image.clone(),
            reason,
        })?;
    }
    if let Some(options) = &changes.container_options {
        scitq_proto::container::ContainerOptions::parse(options)?;
    }
    if let Some(retry) = changes.retry.filter(|r| *r > MAX_RETRY) {
        return Err(OpsError::RetryTooHigh {
            retry,
            limit: MAX_RETRY,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(glob_to_like("sample-*-r?"), "sample-%-r_");
    }

    #[test]
    fn an_edit_selects_ids_or_a_filter() {
        let ids = TaskSelection {
            ids: vec![TaskId(1)],
            ..Default::default()
        };
        assert!(selector(ids.clone()).is_ok());
        let both = TaskSelection {
            batch: Some("b".into()),
            ..ids
        };
        assert!(matches!(selector(both), Err(OpsError::IdsAndFilter)));
        assert!(matches!(
            selector(TaskSelection::default()),
            Err(OpsError::NothingSelected)
        ));
        let running = TaskSelection {
            statuses: vec![TaskStatus::Running],
            ..Default::default()
        };
        let err = selector(running).unwrap_err().to_string();
        assert_eq!(
            err,
            "running tasks cannot be edited: only waiting, pending, paused, assigned or \
             accepted ones (not started)"
        );
    }

    #[test]
    fn edits_are_checked_field_by_field() {
        assert!(matches!(
            check_changes(&Changes::default()),
            Err(OpsError::NoChange)
        ));
        let retry = Changes {
            retry: Some(MAX_RETRY + 1),
            ..Default::default()
        };
        assert!(matches!(
            check_changes(&retry),
            Err(OpsError::RetryTooHigh { .. })
        ));
        let blank = Changes {
            command: Some("  ".into()),
            ..Default::default()
        };
        assert!(matches!(check_changes(&blank), Err(OpsError::EmptyCommand)));
    }
}
