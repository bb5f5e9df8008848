//! Recovery: what happens to executions a worker no longer has, at a Hello (the agent
//! lists what it holds) or when a silent worker's lease expires.

use std::collections::HashSet;

use scitq_proto::v1;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter};

use super::entities::execution;
use super::executions::{apply_task_change, exec_view, task_view, write_end};
use super::{Store, StoreError};
use crate::core::attempt::{self, Ending};
use crate::core::ids::{TaskId, WorkerId};
use crate::core::queue::Queued;

const ACTIVE: [&str; 4] = ["assigned", "accepted", "running", "uploading"];

/// Ends an execution the worker no longer has, as [`attempt::end`] decides: one never
/// acknowledged by the agent was never started (canceled, re-queued without spending a
/// retry); others are failed as lost and retried within their budget; a task an operator
/// killed stays killed.
async fn end_missing(
    txn: &DatabaseTransaction,
    row: &execution::Model,
    why: &'static str,
) -> Result<Option<Queued>, StoreError> {
    let task_row = super::tasks::get(txn, TaskId(row.task_id)).await?;
    let decision = attempt::end(
        exec_view(row),
        &task_view(&task_row)?,
        Ending::Missing { why },
    );
    let Some(change) = decision.exec else {
        return Ok(None);
    };
    if !write_end(txn, row, &change, None).await? {
        return Ok(None);
    }
    apply_task_change(txn, &task_row, decision.task).await
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
