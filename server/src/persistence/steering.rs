//! Operator steering of single tasks: pause, resume, kill, and edits of tasks that have
//! not started.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
};

use super::entities::task;
use super::tasks::{get, row as get_row};
use super::{Store, StoreError, now_ms, to_json_list};
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::model::Task;
use crate::core::queue::Queued;
use crate::core::state::TaskStatus;
use crate::core::task::{NewTask, Shell, TaskSpec};

use crate::core::steering::{self as core_steering, Edit, Kill, Pause, Resume};
pub use crate::core::steering::{EDITABLE, FROZEN, KILLED, RECALLABLE, RECALLING};

/// An execution to signal after the commit.
pub type Target = (ExecutionId, WorkerId);

fn status_of(row: &task::Model) -> Result<TaskStatus, StoreError> {
    row.status
        .parse()
        .map_err(|e: crate::core::state::UnknownStatus| StoreError::Conflict(e.to_string()))
}

fn target_of(row: &task::Model) -> Option<Target> {
    Some((ExecutionId(row.execution_id?), WorkerId(row.worker_id?)))
}

async fn set_status(
    txn: &DatabaseTransaction,
    row: &task::Model,
    from: TaskStatus,
    to: TaskStatus,
    reason: &str,
) -> Result<(), StoreError> {
    from.check(to)?;
    task::Entity::update_many()
        .col_expr(task::Column::Status, Expr::value(to.as_str()))
        .col_expr(task::Column::StatusReason, Expr::value(reason))
        .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
        .filter(task::Column::Id.eq(row.id))
        .filter(task::Column::Status.eq(from.as_str()))
        .exec(txn)
        .await?;
    Ok(())
}

async fn set_reason(txn: &DatabaseTransaction, id: i64, reason: &str) -> Result<(), StoreError> {
    task::Entity::update_many()
        .col_expr(task::Column::StatusReason, Expr::value(reason))
        .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
        .filter(task::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Pauses a pending task (it stays out of the queue), or freezes an active one (the
/// returned execution gets SIGSTOP), as `core::steering::pause` decides.
pub async fn pause(store: &Store, id: TaskId) -> Result<(Task, Option<Target>), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let row = get_row(txn, id).await?;
                let status = status_of(&row)?;
                let target = match core_steering::pause(id, status, &row.status_reason)? {
                    Pause::Hold => {
                        set_status(
                            txn,
                            &row,
                            status,
                            TaskStatus::Paused,
                            "paused by an operator",
                        )
                        .await?;
                        None
                    }
                    Pause::Freeze => {
                        set_reason(txn, row.id, FROZEN).await?;
                        target_of(&row)
                    }
                };
                Ok((get(txn, id).await?, target))
            })
        })
        .await
}

/// Undoes [`pause`]: a paused task goes back to the queue, a frozen one runs on.
pub async fn resume(
    store: &Store,
    id: TaskId,
) -> Result<(Task, Option<Queued>, Option<Target>), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let row = get_row(txn, id).await?;
                let status = status_of(&row)?;
                let (queued, target) = match core_steering::resume(id, status, &row.status_reason)?
                {
                    Resume::Requeue => {
                        set_status(txn, &row, status, TaskStatus::Pending, "resumed").await?;
                        let queued = Queued {
                            id,
                            batch: row.batch.clone(),
                            priority: row.priority,
                        };
                        (Some(queued), None)
                    }
                    Resume::Thaw => {
                        set_reason(txn, row.id, "").await?;
                        (None, target_of(&row))
                    }
                };
                Ok((get(txn, id).await?, queued, target))
            })
        })
        .await
}

/// Kills an active task (its execution is signalled; the agent reports it killed) or
/// cancels one that has not started, as `core::steering::kill` decides.
pub async fn kill(store: &Store, id: TaskId) -> Result<(Task, Option<Target>), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let row = get_row(txn, id).await?;
                let status = status_of(&row)?;
                let target = match core_steering::kill(id, status)? {
                    Kill::Signal => {
                        set_reason(txn, row.id, KILLED).await?;
                        target_of(&row)
                    }
                    Kill::Cancel => {
                        set_status(txn, &row, status, TaskStatus::Canceled, KILLED).await?;
                        None
                    }
                };
                Ok((get(txn, id).await?, target))
            })
        })
        .await
}

/// Which tasks an edit touches.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub ids: Vec<TaskId>,
    pub batch: Option<String>,
    pub statuses: Vec<TaskStatus>,
    /// SQL LIKE pattern.
    pub name_like: Option<String>,
    pub all: bool,
}

/// The changes of an edit, validated.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub command: Option<String>,
    pub shell: Option<Shell>,
    pub container: Option<String>,
    pub container_options: Option<Vec<String>>,
    pub inputs: Option<Vec<String>>,
    pub output: Option<String>,
    pub resources: Option<Vec<String>>,
    pub retry: Option<u32>,
    pub priority: Option<i32>,
    pub name: Option<String>,
    pub run_timeout_s: Option<u32>,
    /// Moves the tasks to this batch (created if new).
    pub batch: Option<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.command.is_none()
            && self.shell.is_none()
            && self.container.is_none()
            && self.container_options.is_none()
            && self.inputs.is_none()
            && self.output.is_none()
            && self.resources.is_none()
            && self.retry.is_none()
            && self.priority.is_none()
            && self.name.is_none()
            && self.run_timeout_s.is_none()
            && self.batch.is_none()
    }

    /// The row as it is after the change.
    fn apply(&self, row: &mut task::Model) {
        if let Some(v) = &self.command {
            row.command = v.clone();
        }
        if let Some(v) = self.shell {
            row.shell = v.as_i32();
        }
        if let Some(v) = &self.container {
            row.container = v.clone();
        }
        if let Some(v) = &self.container_options {
            row.container_options = to_json_list(v);
        }
        if let Some(v) = &self.inputs {
            row.inputs = to_json_list(v);
        }
        if let Some(v) = &self.output {
            row.output = v.clone();
        }
        if let Some(v) = &self.resources {
            row.resources = to_json_list(v);
        }
        if let Some(v) = self.retry {
            row.retry = v as i32;
            row.retry_left = v as i32;
        }
        if let Some(v) = self.priority {
            row.priority = v;
        }
        if let Some(v) = &self.name {
            row.name = v.clone();
        }
        if let Some(v) = self.run_timeout_s {
            row.run_timeout_s = v as i32;
        }
        if let Some(v) = &self.batch {
            row.batch = v.clone();
        }
    }

    /// Checks the changed task as a whole, as creation does.
    fn validate(&self, row: &task::Model) -> Result<(), StoreError> {
        let spec = TaskSpec {
            name: row.name.clone(),
            batch: row.batch.clone(),
            command: row.command.clone(),
            shell: Shell::from_i32(row.shell).unwrap_or_default(),
            retry: Ord::max(row.retry, 0) as u32,
            run_timeout_s: Ord::max(row.run_timeout_s, 0) as u32,
            ..Default::default()
        };
        NewTask::validate(0, spec).map(|_| ()).map_err(|e| {
            StoreError::Conflict(format!("task {}: {}", row.id, e).replace("task 0: ", ""))
        })
    }
}

/// What an edit did (or would do).
pub struct Edited {
    pub tasks: Vec<Task>,
    /// Pending tasks whose queue position changed: (old, new).
    pub requeue: Vec<(Queued, Queued)>,
    /// Executions of prefetched tasks to recall (SIGNAL_RECALL) after the commit.
    pub recall: Vec<Target>,
}

/// Statuses an edit may find a task in: not started.
fn not_started() -> Vec<&'static str> {
    EDITABLE
        .iter()
        .chain(&RECALLABLE)
        .map(|s| s.as_str())
        .collect()
}

/// Marks the prefetched tasks (assigned or accepted) of a batch just stopped as being
/// recalled; returns their executions, to recall (SIGNAL_RECALL) after the commit, so that
/// none of them starts.
pub async fn recall_batch(store: &Store, batch: String) -> Result<Vec<Target>, StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let rows = task::Entity::find()
                    .filter(task::Column::Batch.eq(batch))
                    .filter(task::Column::Status.is_in(RECALLABLE.map(|s| s.as_str())))
                    .all(txn)
                    .await?;
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                task::Entity::update_many()
                    .col_expr(task::Column::StatusReason, Expr::value(RECALLING))
                    .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
                    .filter(task::Column::Id.is_in(rows.iter().map(|r| r.id)))
                    .filter(task::Column::Status.is_in(RECALLABLE.map(|s| s.as_str())))
                    .exec(txn)
                    .await?;
                Ok(rows.iter().filter_map(target_of).collect())
            })
        })
        .await
}

/// Edits the selected tasks, all or nothing. Every selected task must not have started: a
/// prefetched one (held by an agent, not started) takes the new spec and is recalled
/// (`core::steering::edit`).
pub async fn edit(
    store: &Store,
    selector: Selector,
    changes: Changes,
    dry_run: bool,
) -> Result<Edited, StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let rows = select(txn, &selector).await?;
                let mut requeue = Vec::new();
                let mut recall = Vec::new();
                let mut edited_rows = Vec::with_capacity(rows.len());
                for row in rows {
                    let status = status_of(&row)?;
                    let mut after = row.clone();
                    if core_steering::edit(TaskId(row.id), status)? == Edit::Recall && !dry_run {
                        after.status_reason = RECALLING.to_owned();
                        recall.extend(target_of(&row));
                    }
                    changes.apply(&mut after);
                    changes.validate(&after)?;
                    let moved = after.priority != row.priority || after.batch != row.batch;
                    if status == TaskStatus::Pending && moved {
                        let queued = |r: &task::Model| Queued {
                            id: TaskId(r.id),
                            batch: r.batch.clone(),
                            priority: r.priority,
                        };
                        requeue.push((queued(&row), queued(&after)));
                    }
                    edited_rows.push(after);
                }
                let edited = |rows: Vec<task::Model>| -> Result<Edited, StoreError> {
                    Ok(Edited {
                        tasks: rows
                            .into_iter()
                            .map(super::rows::task)
                            .collect::<Result<_, _>>()?,
                        requeue,
                        recall,
                    })
                };
                if dry_run || edited_rows.is_empty() {
                    return edited(edited_rows);
                }
                let now = now_ms();
                if let Some(name) = &changes.batch {
                    // The batch a task moves to exists as a row, stopped or not.
                    super::entities::batch::Entity::insert(super::entities::batch::ActiveModel {
                        name: sea_orm::ActiveValue::Set(name.clone()),
                        stopped: sea_orm::ActiveValue::Set(false),
                        suspended: sea_orm::ActiveValue::Set(false),
                        created_at: sea_orm::ActiveValue::Set(now),
                    })
                    .on_conflict_do_nothing_on([super::entities::batch::Column::Name])
                    .exec_without_returning(txn)
                    .await?;
                }
                for after in &edited_rows {
                    // Every column written (a model converts to "unchanged" values).
                    let mut active = task::ActiveModel::from(after.clone()).reset_all();
                    active.updated_at = sea_orm::ActiveValue::Set(now);
                    // Guarded: a task that started meanwhile is left alone (and reported).
                    let changed = task::Entity::update_many()
                        .set(active)
                        .filter(task::Column::Id.eq(after.id))
                        .filter(task::Column::Status.eq(after.status.clone()))
                        .exec(txn)
                        .await?
                        .rows_affected;
                    if changed == 0 {
                        return Err(StoreError::Conflict(format!(
                            "task {} started while being edited; nothing was changed",
                            after.id
                        )));
                    }
                }
                edited(edited_rows)
            })
        })
        .await
}

async fn select(
    txn: &DatabaseTransaction,
    selector: &Selector,
) -> Result<Vec<task::Model>, StoreError> {
    if !selector.ids.is_empty() {
        let mut rows = Vec::with_capacity(selector.ids.len());
        for id in &selector.ids {
            rows.push(get_row(txn, *id).await?);
        }
        return Ok(rows);
    }
    let mut query = task::Entity::find();
    if let Some(batch) = &selector.batch {
        query = query.filter(task::Column::Batch.eq(batch.clone()));
    }
    let statuses: Vec<&str> = if selector.statuses.is_empty() {
        not_started()
    } else {
        selector.statuses.iter().map(|s| s.as_str()).collect()
    };
    query = query.filter(task::Column::Status.is_in(statuses));
    if let Some(like) = &selector.name_like {
        query = query.filter(Expr::col(task::Column::Name).like(like.clone()));
    }
    Ok(query.order_by_asc(task::Column::Id).all(txn).await?)
}
