//! Task and batch reads and writes.

use std::collections::{BTreeMap, HashMap};

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::{batch, execution, log_chunk, task};
use super::{Store, StoreError, now_ms, to_json_list};
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::model::{Batch, Task};
use crate::core::state::TaskStatus;
use crate::core::task::NewTask;

pub use crate::core::queue::Queued;

/// Rows per INSERT statement: well under SQLite's limit on bound values.
const INSERT_CHUNK: usize = 500;

/// What creating tasks did.
pub struct Created {
    /// Every new id, in order.
    pub ids: Vec<TaskId>,
    /// Those ready to run now (others wait for dependencies, or were canceled by a failed
    /// one).
    pub queued: Vec<Queued>,
}

/// Creates tasks atomically.
pub async fn create(store: &Store, tasks: Vec<NewTask>) -> Result<Created, StoreError> {
    if tasks.iter().any(|t| !t.depends_on.is_empty()) {
        store
            .has_dependencies
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    store
        .writer
        .write(move |txn, ids| {
            Box::pin(async move {
                let now = now_ms();
                let mut batches: Vec<String> = tasks.iter().map(|t| t.batch.clone()).collect();
                batches.sort();
                batches.dedup();
                for name in batches {
                    let row = batch::ActiveModel {
                        name: Set(name),
                        stopped: Set(false),
                        suspended: Set(false),
                        created_at: Set(now),
                    };
                    batch::Entity::insert(row)
                        .on_conflict_do_nothing_on([batch::Column::Name])
                        .exec(txn)
                        .await?;
                }
                let mut created = Created {
                    ids: Vec::with_capacity(tasks.len()),
                    queued: Vec::with_capacity(tasks.len()),
                };
                let mut rows = Vec::with_capacity(INSERT_CHUNK);
                let mut dependencies = Vec::new();
                for new in tasks {
                    let new = new.into_spec();
                    let id = ids.task();
                    let (status, reason) =
                        super::deps::initial_status(txn, &new.depends_on).await?;
                    created.ids.push(TaskId(id));
                    if status == TaskStatus::Pending {
                        created.queued.push(Queued {
                            id: TaskId(id),
                            batch: new.batch.clone(),
                            priority: new.priority,
                        });
                    }
                    dependencies.extend(new.depends_on.iter().map(|d| {
                        super::entities::task_dependency::ActiveModel {
                            task_id: Set(id),
                            depends_on: Set(*d),
                        }
                    }));
                    rows.push(task::ActiveModel {
                        id: Set(id),
                        name: Set(new.name),
                        batch: Set(new.batch),
                        command: Set(new.command),
                        shell: Set(new.shell as i32),
                        container: Set(new.container),
                        container_options: Set(to_json_list(&new.container_options)),
                        inputs: Set(to_json_list(&new.inputs)),
                        output: Set(new.output),
                        resources: Set(to_json_list(&new.resources)),
                        retry: Set(new.retry as i32),
                        retry_left: Set(new.retry as i32),
                        priority: Set(new.priority),
                        status: Set(status.as_str().to_owned()),
                        status_reason: Set(reason),
                        execution_id: Set(None),
                        worker_id: Set(None),
                        exit_code: Set(None),
                        created_at: Set(now),
                        updated_at: Set(now),
                        run_timeout_s: Set(new.run_timeout_s as i32),
                    });
                    if rows.len() == INSERT_CHUNK {
                        task::Entity::insert_many(std::mem::take(&mut rows))
                            .exec_without_returning(txn)
                            .await?;
                    }
                }
                if !rows.is_empty() {
                    task::Entity::insert_many(rows)
                        .exec_without_returning(txn)
                        .await?;
                }
                for chunk in dependencies.chunks(INSERT_CHUNK) {
                    super::entities::task_dependency::Entity::insert_many(chunk.to_vec())
                        .exec_without_returning(txn)
                        .await?;
                }
                Ok(created)
            })
        })
        .await
}

/// Filters of a task listing.
#[derive(Debug, Default, Clone)]
pub struct TaskFilter {
    pub batch: Option<String>,
    pub statuses: Vec<TaskStatus>,
    /// SQL LIKE pattern (already translated from a glob).
    pub name_like: Option<String>,
    pub ids: Vec<TaskId>,
    pub worker: Option<WorkerId>,
    pub after_id: i64,
    pub limit: u64,
}

pub async fn list(store: &Store, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
    let mut query = task::Entity::find().filter(task::Column::Id.gt(filter.after_id));
    if let Some(batch) = filter.batch {
        query = query.filter(task::Column::Batch.eq(batch));
    }
    if !filter.statuses.is_empty() {
        query =
            query.filter(task::Column::Status.is_in(filter.statuses.iter().map(|s| s.as_str())));
    }
    if let Some(like) = filter.name_like {
        query = query.filter(Expr::col(task::Column::Name).like(like));
    }
    if !filter.ids.is_empty() {
        query = query.filter(task::Column::Id.is_in(filter.ids.iter().map(|id| id.0)));
    }
    if let Some(worker) = filter.worker {
        query = query.filter(task::Column::WorkerId.eq(worker.0));
    }
    query
        .order_by_asc(task::Column::Id)
        .limit(filter.limit)
        .all(&store.db)
        .await?
        .into_iter()
        .map(super::rows::task)
        .collect()
}

pub async fn get(db: &impl ConnectionTrait, id: TaskId) -> Result<Task, StoreError> {
    super::rows::task(row(db, id).await?)
}

/// A task's row, for the writes of persistence.
pub(super) async fn row(db: &impl ConnectionTrait, id: TaskId) -> Result<task::Model, StoreError> {
    task::Entity::find_by_id(id.0)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "task",
            id: id.to_string(),
        })
}

/// Puts a finished task back in the queue, optionally with a new command.
pub async fn relaunch(
    store: &Store,
    id: TaskId,
    command: Option<String>,
) -> Result<(Task, Queued), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let row = row(txn, id).await?;
                let status: TaskStatus = row.status.parse().map_err(|e: crate::core::state::UnknownStatus| StoreError::Conflict(e.to_string()))?;
                if !status.is_final() {
                    return Err(StoreError::Conflict(format!(
                        "task {id} is {status}: only a succeeded, failed or canceled task can be relaunched"
                    )));
                }
                status.check(TaskStatus::Pending)?;
                let mut update = task::Entity::update_many()
                    .col_expr(task::Column::Status, Expr::value(TaskStatus::Pending.as_str()))
                    .col_expr(task::Column::StatusReason, Expr::value("relaunched"))
                    .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
                    .filter(task::Column::Id.eq(id.0));
                if let Some(command) = command {
                    update = update.col_expr(task::Column::Command, Expr::value(command));
                }
                update.exec(txn).await?;
                super::deps::restore_dependants(txn, id.0).await?;
                let task = get(txn, id).await?;
                let queued = Queued {
                    id,
                    batch: task.spec.batch.clone(),
                    priority: task.spec.priority,
                };
                Ok((task, queued))
            })
        })
        .await
}

/// Every batch with its state and task counts per status.
///
/// The counts are the `task_count` rows (kept by triggers, see `counts.rs`): a few rows
/// whatever the number of tasks. Counting the tasks themselves, one pass over all of them,
/// took 0.75 s of scitqd's CPU with 1,000,000 tasks, at every poll of `task wait --batch`.
pub async fn batches(store: &Store) -> Result<Vec<(Batch, BTreeMap<String, u64>)>, StoreError> {
    let rows = batch::Entity::find()
        .order_by_asc(batch::Column::Name)
        .all(&store.db)
        .await?;
    let mut per_batch: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    for (batch, status, n) in super::counts::tasks(&store.db).await? {
        if n > 0 {
            per_batch.entry(batch).or_default().insert(status, n as u64);
        }
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let counts = per_batch.remove(&row.name).unwrap_or_default();
            (super::rows::batch(row), counts)
        })
        .collect())
}

pub async fn get_batch(db: &impl ConnectionTrait, name: &str) -> Result<Batch, StoreError> {
    batch::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?
        .map(super::rows::batch)
        .ok_or_else(|| StoreError::NotFound {
            what: "batch",
            id: format!("{name:?}"),
        })
}

/// Sets a batch's state; returns it as it was before and as it is now. A batch with no
/// task yet is created stopped, so the tasks added to it later wait for `go`; one that does
/// not exist cannot go.
pub async fn set_batch_state(
    store: &Store,
    name: String,
    stopped: bool,
    suspended: bool,
) -> Result<(Batch, Batch), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let now = now_ms();
                let before = match batch::Entity::find_by_id(name.clone()).one(txn).await? {
                    Some(row) => super::rows::batch(row),
                    None if !stopped => {
                        return Err(StoreError::NotFound {
                            what: "batch",
                            id: format!("{name:?}"),
                        });
                    }
                    None => {
                        let row = batch::ActiveModel {
                            name: Set(name.clone()),
                            stopped: Set(false),
                            suspended: Set(false),
                            created_at: Set(now),
                        };
                        batch::Entity::insert(row)
                            .exec_without_returning(txn)
                            .await?;
                        get_batch(txn, &name).await?
                    }
                };
                batch::Entity::update_many()
                    .col_expr(batch::Column::Stopped, Expr::value(stopped))
                    .col_expr(batch::Column::Suspended, Expr::value(suspended))
                    .filter(batch::Column::Name.eq(name.clone()))
                    .exec(txn)
                    .await?;
                Ok((before, get_batch(txn, &name).await?))
            })
        })
        .await
}

/// Executions of a batch that a worker holds right now.
pub async fn active_executions_of_batch(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<Vec<(ExecutionId, WorkerId)>, StoreError> {
    let task_ids: Vec<i64> = task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .filter(task::Column::Batch.eq(name))
        .filter(
            task::Column::Status.is_in(
                TaskStatus::ALL
                    .iter()
                    .filter(|s| s.is_active())
                    .map(|s| s.as_str()),
            ),
        )
        .into_tuple()
        .all(db)
        .await?;
    let mut out = Vec::new();
    for chunk in task_ids.chunks(INSERT_CHUNK) {
        let rows: Vec<(i64, i64)> = execution::Entity::find()
            .select_only()
            .column(execution::Column::Id)
            .column(execution::Column::WorkerId)
            .filter(execution::Column::TaskId.is_in(chunk.iter().copied()))
            .filter(execution::Column::State.is_in([
                "assigned",
                "accepted",
                "running",
                "uploading",
            ]))
            .into_tuple()
            .all(db)
            .await?;
        out.extend(rows.into_iter().map(|(e, w)| (ExecutionId(e), WorkerId(w))));
    }
    Ok(out)
}

/// Deletes a batch, its tasks, their executions and output. Returns the task count and
/// the executions that were active (to be canceled on their agents).
pub async fn delete_batch(
    store: &Store,
    name: String,
) -> Result<(u64, Vec<(ExecutionId, WorkerId)>), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                get_batch(txn, &name).await?;
                let active = active_executions_of_batch(txn, &name).await?;
                let task_ids: Vec<i64> = task::Entity::find()
                    .select_only()
                    .column(task::Column::Id)
                    .filter(task::Column::Batch.eq(name.clone()))
                    .into_tuple()
                    .all(txn)
                    .await?;
                for chunk in task_ids.chunks(INSERT_CHUNK) {
                    log_chunk::Entity::delete_many()
                        .filter(log_chunk::Column::TaskId.is_in(chunk.iter().copied()))
                        .exec(txn)
                        .await?;
                    execution::Entity::delete_many()
                        .filter(execution::Column::TaskId.is_in(chunk.iter().copied()))
                        .exec(txn)
                        .await?;
                }
                let deleted = task::Entity::delete_many()
                    .filter(task::Column::Batch.eq(name.clone()))
                    .exec(txn)
                    .await?
                    .rows_affected;
                batch::Entity::delete_by_id(name).exec(txn).await?;
                Ok((deleted, active))
            })
        })
        .await
}

/// Every pending task, to fill the in-memory queue at start.
pub async fn pending(store: &Store) -> Result<Vec<Queued>, StoreError> {
    let rows: Vec<(i64, String, i32)> = task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .column(task::Column::Batch)
        .column(task::Column::Priority)
        .filter(task::Column::Status.eq(TaskStatus::Pending.as_str()))
        .into_tuple()
        .all(&store.db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, batch, priority)| Queued {
            id: TaskId(id),
            batch,
            priority,
        })
        .collect())
}

/// Names of stopped batches, at start.
pub async fn stopped_batches(store: &Store) -> Result<Vec<String>, StoreError> {
    Ok(batch::Entity::find()
        .filter(batch::Column::Stopped.eq(true))
        .all(&store.db)
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect())
}
