//! Recovery: what happens to executions a worker no longer has, at a Hello (the agent
//! lists what it holds) or when a silent worker's lease expires.

use std::collections::HashSet;

use scitq_proto::v1;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter};

use super::entities::execution;
use super::executions::{end_task_attempt, set_task_status};
use super::tasks::Queued;
use super::{Store, StoreError, now_ms};
use crate::core::ids::{TaskId, WorkerId};
use crate::core::state::{ExecState, TaskStatus};

const ACTIVE: [&str; 4] = ["assigned", "accepted", "running", "uploading"];

/// Ends an execution the worker no longer has. One never acknowledged by the agent was
/// never started: it is canceled and its task re-queued without spending a retry.
/// Others are failed as lost, and their task retried within its budget.
async fn end_missing(
    txn: &DatabaseTransaction,
    row: &execution::Model,
    why: &str,
) -> Result<Option<Queued>, StoreError> {
    let state: ExecState = row.state.parse().unwrap_or(ExecState::Canceled);
    let never_started = state == ExecState::Assigned;
    let (target, failure, message) = if never_started {
        (ExecState::Canceled, "", format!("never delivered: {why}"))
    } else {
        (ExecState::Failed, "lost", format!("lost: {why}"))
    };
    let changed = execution::Entity::update_many()
        .col_expr(execution::Column::State, Expr::value(target.as_str()))
        .col_expr(execution::Column::Failure, Expr::value(failure))
        .col_expr(execution::Column::Message, Expr::value(message.clone()))
        .col_expr(execution::Column::FinishedAt, Expr::value(now_ms()))
        .filter(execution::Column::Id.eq(row.id))
        .filter(execution::Column::State.is_in(ExecState::predecessors(target)))
        .exec(txn)
        .await?
        .rows_affected;
    if changed == 0 {
        return Ok(None);
    }
    let task_row = super::tasks::get(txn, TaskId(row.task_id)).await?;
    if task_row.execution_id != Some(row.id) {
        return Ok(None);
    }
    if never_started {
        set_task_status(txn, &task_row, TaskStatus::Pending, &message, None).await?;
        return Ok(Some(Queued {
            id: TaskId(task_row.id),
            batch: task_row.batch.clone(),
            priority: task_row.priority,
        }));
    }
    end_task_attempt(txn, &task_row, true, &message, None).await
}

/// Active executions a worker holds according to the database.
pub async fn active_of_worker(
    db: &impl ConnectionTrait,
    worker: WorkerId,
) -> Result<Vec<execution::Model>, StoreError> {
    Ok(execution::Entity::find()
        .filter(execution::Column::WorkerId.eq(worker.0))
        .filter(execution::Column::State.is_in(ACTIVE))
        .all(db)
        .await?)
}

/// The outcome of a Hello.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub cancel: Vec<i64>,
    pub offsets: Vec<v1::OutputOffsets>,
    pub requeued: Vec<Queued>,
    /// Executions the worker holds once reconciled.
    pub active: u32,
    pub touched: Vec<TaskId>,
}

/// Compares what an agent holds with what the database says it holds (see
/// ARCHITECTURE.md, "The agent stream", step 2).
pub async fn reconcile(
    txn: &DatabaseTransaction,
    worker: WorkerId,
    held: &[v1::HeldExecution],
) -> Result<Reconciled, StoreError> {
    let mut out = Reconciled::default();
    let held_ids: HashSet<i64> = held.iter().map(|h| h.execution_id).collect();
    let active = active_of_worker(txn, worker).await?;
    let active_ids: HashSet<i64> = active.iter().map(|r| r.id).collect();
    for row in &active {
        if held_ids.contains(&row.id) {
            out.offsets.push(v1::OutputOffsets {
                execution_id: row.id,
                stdout: row.stdout_bytes as u64,
                stderr: row.stderr_bytes as u64,
            });
            out.active += 1;
        } else {
            out.touched.push(TaskId(row.task_id));
            if let Some(q) = end_missing(txn, row, "the agent no longer holds it").await? {
                out.requeued.push(q);
            }
        }
    }
    // A finished attempt the server already ended (its lease expired) is not canceled: the
    // agent delivers its output and report, recorded as late without changing the task.
    let finished_elsewhere: Vec<i64> = held
        .iter()
        .filter(|h| !active_ids.contains(&h.execution_id) && is_final(h.state))
        .map(|h| h.execution_id)
        .collect();
    let late: HashSet<i64> = if finished_elsewhere.is_empty() {
        HashSet::new()
    } else {
        execution::Entity::find()
            .filter(execution::Column::Id.is_in(finished_elsewhere))
            .filter(execution::Column::WorkerId.eq(worker.0))
            .all(txn)
            .await?
            .into_iter()
            .map(|row| {
                out.offsets.push(v1::OutputOffsets {
                    execution_id: row.id,
                    stdout: row.stdout_bytes as u64,
                    stderr: row.stderr_bytes as u64,
                });
                row.id
            })
            .collect()
    };
    out.cancel = held
        .iter()
        .map(|h| h.execution_id)
        .filter(|id| !active_ids.contains(id) && !late.contains(id))
        .collect();
    Ok(out)
}

fn is_final(state: i32) -> bool {
    matches!(
        v1::ExecutionState::try_from(state),
        Ok(v1::ExecutionState::Succeeded
            | v1::ExecutionState::Failed
            | v1::ExecutionState::Canceled)
    )
}

/// A worker's lease expired: every execution it held is ended.
pub async fn expire_lease(
    store: &Store,
    worker: WorkerId,
) -> Result<(Vec<Queued>, Vec<TaskId>), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let mut requeued = Vec::new();
                let mut touched = Vec::new();
                for row in active_of_worker(txn, worker).await? {
                    touched.push(TaskId(row.task_id));
                    if let Some(q) = end_missing(txn, &row, "the worker's lease expired").await? {
                        requeued.push(q);
                    }
                }
                super::workers::set_status(txn, worker, "lost").await?;
                Ok((requeued, touched))
            })
        })
        .await
}
