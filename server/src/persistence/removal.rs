//! Deleting one task, and listing executions across tasks.

use sea_orm::sea_query::{ExprTrait, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{execution, log_chunk, task, task_dependency};
use super::{Store, StoreError};
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::model::Execution;
use crate::core::state::{ExecState, TaskStatus};

/// What deleting a task did.
pub struct Deleted {
    /// The task as it was.
    pub batch: String,
    pub priority: i32,
    pub status: TaskStatus,
    /// Its execution a worker held, to cancel on the agent after the commit.
    pub active: Option<(ExecutionId, WorkerId)>,
}

/// Deletes a task, its executions, output and dependency links. Refused (nothing changes)
/// while a task that has not ended depends on it: it would wait for ever.
pub async fn delete_task(store: &Store, id: TaskId) -> Result<Deleted, StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let task = super::tasks::get(txn, id).await?;
                let dependants: Vec<i64> = task_dependency::Entity::find()
                    .select_only()
                    .column(task_dependency::Column::TaskId)
                    .filter(task_dependency::Column::DependsOn.eq(id.0))
                    .into_tuple()
                    .all(txn)
                    .await?;
                let open: Vec<i64> = task::Entity::find()
                    .select_only()
                    .column(task::Column::Id)
                    .filter(task::Column::Id.is_in(dependants))
                    .filter(
                        task::Column::Status.is_not_in(
                            TaskStatus::ALL
                                .iter()
                                .filter(|s| s.is_final())
                                .map(|s| s.as_str()),
                        ),
                    )
                    .order_by_asc(task::Column::Id)
                    .into_tuple()
                    .all(txn)
                    .await?;
                if !open.is_empty() {
                    let list: Vec<String> = open.iter().map(i64::to_string).collect();
                    return Err(StoreError::Conflict(format!(
                        "task {id} cannot be deleted: task(s) {} depend on it and have not \
                         ended (delete or kill them first)",
                        list.join(", ")
                    )));
                }
                let active = if task.status.is_active() {
                    task.execution.zip(task.worker)
                } else {
                    None
                };
                log_chunk::Entity::delete_many()
                    .filter(log_chunk::Column::TaskId.eq(id.0))
                    .exec(txn)
                    .await?;
                execution::Entity::delete_many()
                    .filter(execution::Column::TaskId.eq(id.0))
                    .exec(txn)
                    .await?;
                task_dependency::Entity::delete_many()
                    .filter(
                        task_dependency::Column::TaskId
                            .eq(id.0)
                            .or(task_dependency::Column::DependsOn.eq(id.0)),
                    )
                    .exec(txn)
                    .await?;
                task::Entity::delete_by_id(id.0).exec(txn).await?;
                Ok(Deleted {
                    batch: task.spec.batch,
                    priority: task.spec.priority,
                    status: task.status,
                    active,
                })
            })
        })
        .await
}

/// Which executions to list.
#[derive(Clone, Debug, Default)]
pub struct ExecutionFilter {
    pub task: Option<TaskId>,
    pub batch: Option<String>,
    pub states: Vec<ExecState>,
    pub worker: Option<WorkerId>,
    pub after_id: i64,
    pub limit: u64,
}

/// Executions matching a filter, by id.
pub async fn executions(
    db: &impl ConnectionTrait,
    filter: ExecutionFilter,
) -> Result<Vec<Execution>, StoreError> {
    let mut query = execution::Entity::find().filter(execution::Column::Id.gt(filter.after_id));
    if let Some(task) = filter.task {
        query = query.filter(execution::Column::TaskId.eq(task.0));
    }
    if let Some(batch) = filter.batch {
        query = query.filter(
            execution::Column::TaskId.in_subquery(
                Query::select()
                    .column(task::Column::Id)
                    .from(task::Entity)
                    .and_where(task::Column::Batch.eq(batch))
                    .to_owned(),
            ),
        );
    }
    if !filter.states.is_empty() {
        query =
            query.filter(execution::Column::State.is_in(filter.states.iter().map(|s| s.as_str())));
    }
    if let Some(worker) = filter.worker {
        query = query.filter(execution::Column::WorkerId.eq(worker.0));
    }
    let rows = query
        .order_by_asc(execution::Column::Id)
        .limit(filter.limit)
        .all(db)
        .await?;
    super::executions::with_worker_names(db, rows).await
}
