//! Recovery: what happens to executions a worker no longer has, at a Hello (the agent
//! lists what it holds) or when a silent worker's lease expires.

use std::collections::{HashMap, HashSet};

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
};

use super::entities::{execution, task};
use super::executions::{apply_task_change, exec_view, task_view, write_end};
use super::{Store, StoreError};
use crate::core::attempt::{self, Ending};
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::queue::Queued;
use crate::core::reconcile::{Active, Held, Offsets, Resend, reconcile as core_reconcile};
use crate::core::steering::{FROZEN, KILLED, RECALLING};

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
    let task_row = super::tasks::row(txn, TaskId(row.task_id)).await?;
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
pub(super) async fn active_of_worker(
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
    pub cancel: Vec<ExecutionId>,
    /// Held executions the server still wants, with the output it has of each.
    pub offsets: Vec<(ExecutionId, Offsets)>,
    pub requeued: Vec<Queued>,
    /// Operator signals to send again once the session is up.
    pub resend: Vec<(ExecutionId, Resend)>,
    /// Executions the worker holds once reconciled.
    pub active: u32,
    pub touched: Vec<TaskId>,
}

/// Compares what an agent holds with what the database says it holds; `core::reconcile`
/// decides, and executions the agent lost end as `core::attempt` decides.
pub async fn reconcile(
    txn: &DatabaseTransaction,
    worker: WorkerId,
    held: &[Held],
) -> Result<Reconciled, StoreError> {
    let rows = active_of_worker(txn, worker).await?;
    let task_ids: Vec<i64> = rows.iter().map(|r| r.task_id).collect();
    let reasons: HashMap<i64, String> = task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .column(task::Column::StatusReason)
        .filter(task::Column::Id.is_in(task_ids))
        .into_tuple()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let active: Vec<Active> = rows
        .iter()
        .map(|row| {
            let reason = reasons.get(&row.task_id).map(String::as_str);
            Active {
                id: ExecutionId(row.id),
                offsets: offsets_of(row),
                killed: reason == Some(KILLED),
                frozen: reason == Some(FROZEN),
                recalling: reason == Some(RECALLING),
            }
        })
        .collect();
    let active_ids: HashSet<ExecutionId> = active.iter().map(|a| a.id).collect();
    let finished_elsewhere: Vec<i64> = held
        .iter()
        .filter(|h| h.finished && !active_ids.contains(&h.id))
        .map(|h| h.id.0)
        .collect();
    let ended_here: HashMap<ExecutionId, Offsets> = if finished_elsewhere.is_empty() {
        HashMap::new()
    } else {
        execution::Entity::find()
            .filter(execution::Column::Id.is_in(finished_elsewhere))
            .filter(execution::Column::WorkerId.eq(worker.0))
            .all(txn)
            .await?
            .iter()
            .map(|row| (ExecutionId(row.id), offsets_of(row)))
            .collect()
    };
    let decided = core_reconcile(&active, held, &ended_here);

    let mut out = Reconciled {
        cancel: decided.cancel.clone(),
        offsets: decided.keep.iter().map(|(id, o)| (*id, *o)).collect(),
        resend: decided.resend,
        active: decided.active,
        ..Reconciled::default()
    };
    let missing: HashSet<ExecutionId> = decided.missing.into_iter().collect();
    for row in rows.iter().filter(|r| missing.contains(&ExecutionId(r.id))) {
        out.touched.push(TaskId(row.task_id));
        if let Some(q) = end_missing(txn, row, "the agent no longer holds it").await? {
            out.requeued.push(q);
        }
    }
    Ok(out)
}

fn offsets_of(row: &execution::Model) -> Offsets {
    Offsets {
        stdout: row.stdout_bytes.max(0) as u64,
        stderr: row.stderr_bytes.max(0) as u64,
    }
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
