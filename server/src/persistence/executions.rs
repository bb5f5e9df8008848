//! Executions: dispatch, agent updates and output, reconciliation and lease expiry.
//! Every state change is an UPDATE guarded by the legal predecessor states, so a replayed
//! or late report can never move an execution or its task backwards or twice.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};

use super::batch::StatementBatch;
use super::entities::{execution, log_chunk, task};
use super::progress::{self, Progress};
use super::writer::Pending;
use super::{Store, StoreError, from_json_list, now_ms};
use crate::core::agent::{AgentEvent, Chunk, Stream, Update, Uploaded};
use crate::core::attempt::{self, Ending, ExecChange, ExecView, TaskChange, TaskView};
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::model::{Assignment, Execution, StoredChunk};
use crate::core::queue::Queued;
use crate::core::state::{ExecState, TaskStatus};
use crate::core::task::{Shell, TaskSpec};

/// Largest piece of output stored in one row; trimming relies on this bound.
const STORED_CHUNK: usize = 64 * 1024;

/// Assigns picked tasks to workers: creates one execution per task still pending,
/// copying the task's spec inside the database (one round trip for the whole group),
/// then reads the frozen specs back to push them. Tasks no longer pending (deleted,
/// relaunched elsewhere) are skipped.
pub async fn assign(
    store: &Store,
    picks: Vec<(TaskId, WorkerId)>,
) -> Result<Vec<Assignment>, StoreError> {
    let backend = store.backend();
    let exec_ids = store
        .writer
        .execute(move |ids| {
            let picks: Vec<(i64, TaskId, WorkerId)> = picks
                .into_iter()
                .map(|(task, worker)| (ids.execution(), task, worker))
                .collect();
            let mut batch = StatementBatch::new(backend);
            progress::render_assign(&mut batch, &picks, now_ms());
            let exec_ids = picks.iter().map(|(exec, ..)| *exec).collect::<Vec<_>>();
            (batch.into_script(), exec_ids)
        })
        .await?;
    let mut out = Vec::with_capacity(exec_ids.len());
    for chunk in exec_ids.chunks(500) {
        let rows = Frozen::find_by_statement(store.backend().build(&frozen_query(chunk)))
            .all(&store.db)
            .await?;
        out.extend(rows.into_iter().map(Frozen::into_assignment));
    }
    Ok(out)
}

/// An execution's frozen spec with its task's name, batch, retry and priority.
#[derive(FromQueryResult)]
struct Frozen {
    id: i64,
    task_id: i64,
    worker_id: i64,
    command: String,
    shell: i32,
    container: String,
    container_options: String,
    inputs: String,
    output: String,
    resources: String,
    name: String,
    batch: String,
    retry: i32,
    priority: i32,
    run_timeout_s: i32,
}

impl Frozen {
    fn into_assignment(self) -> Assignment {
        let spec = TaskSpec {
            name: self.name,
            batch: self.batch,
            command: self.command,
            shell: Shell::from_i32(self.shell).unwrap_or_default(),
            container: self.container,
            container_options: from_json_list(&self.container_options),
            inputs: from_json_list(&self.inputs),
            output: self.output,
            resources: from_json_list(&self.resources),
            retry: Ord::max(self.retry, 0) as u32,
            priority: self.priority,
            run_timeout_s: Ord::max(self.run_timeout_s, 0) as u32,
            depends_on: Vec::new(),
        };
        Assignment {
            worker: WorkerId(self.worker_id),
            execution: ExecutionId(self.id),
            task: TaskId(self.task_id),
            spec,
        }
    }
}

/// One read for a group of new executions and their tasks.
fn frozen_query(ids: &[i64]) -> sea_orm::sea_query::SelectStatement {
    use execution::Column as E;
    use task::Column as T;
    Query::select()
        .columns(
            [
                E::Id,
                E::TaskId,
                E::WorkerId,
                E::Command,
                E::Shell,
                E::Container,
                E::ContainerOptions,
                E::Inputs,
                E::Output,
                E::Resources,
                E::RunTimeoutS,
            ]
            .map(|c| (execution::Entity, c)),
        )
        .columns([T::Name, T::Batch, T::Retry, T::Priority].map(|c| (task::Entity, c)))
        .from(execution::Entity)
        .inner_join(
            task::Entity,
            Expr::col((task::Entity, T::Id)).equals((execution::Entity, E::TaskId)),
        )
        .and_where(Expr::col((execution::Entity, E::Id)).is_in(ids.iter().copied()))
        .order_by((execution::Entity, E::Id), sea_orm::Order::Asc)
        .to_owned()
}

/// What applying a batch of agent events changed, for the scheduler and followers.
#[derive(Debug, Default)]
pub struct Applied {
    /// Executions of this worker that reached a final state (slots freed).
    pub finished: Vec<ExecutionId>,
    /// Tasks put back in the queue (retries).
    pub requeued: Vec<Queued>,
    /// Tasks whose output or status changed, when known without a read.
    pub touched: HashSet<TaskId>,
    /// Executions whose status changed (their tasks are looked up only if someone
    /// follows them).
    pub executions: HashSet<ExecutionId>,
    /// Executions that succeeded (their tasks' dependants may run now).
    pub succeeded: Vec<ExecutionId>,
}

/// Whether an event needs no read to be applied.
fn is_plain(event: &AgentEvent) -> bool {
    match event {
        AgentEvent::Heartbeat(_) | AgentEvent::Prefetch(_) => true,
        AgentEvent::Output(_) => false,
        AgentEvent::Update(update) => update.state.task_status().is_some(),
    }
}

/// Queues, in order, the events one agent session sent; the result resolves once they
/// are committed.
pub async fn apply(
    store: &Store,
    worker: WorkerId,
    events: Vec<AgentEvent>,
) -> Result<Pending<Applied>, StoreError> {
    if events.iter().all(is_plain) {
        // The common case (tasks starting and succeeding): plain statements only.
        let backend = store.backend();
        return store
            .writer
            .submit_execute(move |_ids| {
                let mut batch = StatementBatch::new(backend);
                let mut applied = Applied::default();
                let mut forward = Progress::default();
                for event in events {
                    if let AgentEvent::Update(update) = event
                        && let Some(status) = update.state.task_status()
                    {
                        forward.add(&update, update.state, status, &mut applied);
                    }
                }
                forward.render(&mut batch, worker);
                batch.push(&super::workers::touch_statement(worker));
                (batch.into_script(), applied)
            })
            .await;
    }
    let cap = store.output_cap;
    store
        .writer
        .submit_write(move |txn, _ids| {
            Box::pin(async move {
                let mut applied = Applied::default();
                let mut chunks: Vec<Chunk> = Vec::new();
                let mut batch = StatementBatch::new(txn.get_database_backend());
                let mut forward = Progress::default();
                for event in events {
                    match event {
                        AgentEvent::Output(chunk) => chunks.push(chunk),
                        AgentEvent::Update(update) => {
                            // Output sent before an update is committed before it.
                            write_chunks(
                                txn,
                                &mut batch,
                                worker,
                                cap,
                                std::mem::take(&mut chunks),
                                &mut applied,
                            )
                            .await?;
                            apply_update(
                                txn,
                                &mut batch,
                                &mut forward,
                                worker,
                                update,
                                &mut applied,
                            )
                            .await?;
                        }
                        // The scheduler's (see `service::session`).
                        AgentEvent::Heartbeat(_) | AgentEvent::Prefetch(_) => {}
                    }
                }
                write_chunks(txn, &mut batch, worker, cap, chunks, &mut applied).await?;
                forward.render(&mut batch, worker);
                batch.push(&super::workers::touch_statement(worker));
                batch.flush(txn).await?;
                Ok(applied)
            })
        })
        .await
}

/// Task ids of executions, for waking their followers.
pub async fn tasks_of(
    db: &impl ConnectionTrait,
    executions: &HashSet<ExecutionId>,
) -> Result<Vec<TaskId>, StoreError> {
    let ids: Vec<i64> = executions.iter().map(|e| e.0).collect();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let rows: Vec<i64> = execution::Entity::find()
            .select_only()
            .column(execution::Column::TaskId)
            .filter(execution::Column::Id.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        out.extend(rows.into_iter().map(TaskId));
    }
    Ok(out)
}

async fn write_chunks(
    txn: &DatabaseTransaction,
    batch: &mut StatementBatch,
    worker: WorkerId,
    cap: u64,
    chunks: Vec<Chunk>,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    if chunks.is_empty() {
        return Ok(());
    }
    // Updates queued before these chunks must be in the database first.
    batch.flush(txn).await?;
    let exec_ids: HashSet<i64> = chunks.iter().map(|c| c.execution.0).collect();
    let rows = execution::Entity::find()
        .filter(execution::Column::Id.is_in(exec_ids))
        .filter(execution::Column::WorkerId.eq(worker.0))
        .all(txn)
        .await?;
    let mut lengths: HashMap<i64, (i64, i64, i64)> = rows
        .iter()
        .map(|r| (r.id, (r.task_id, r.stdout_bytes, r.stderr_bytes)))
        .collect();
    let before = lengths.clone();
    let mut inserts = Vec::new();
    let mut stored = 0usize;
    let mut trims: HashMap<(i64, i32), (i64, i64)> = HashMap::new();
    for chunk in chunks {
        let execution_id = chunk.execution.0;
        let Some((task_id, out, err)) = lengths.get_mut(&execution_id) else {
            tracing::warn!(execution_id, %worker, "output for an execution this worker does not hold, dropped");
            continue;
        };
        let stream = chunk.stream;
        let committed = match stream {
            Stream::Stdout => out,
            Stream::Stderr => err,
        };
        let start = chunk.offset as i64;
        let end = start + chunk.data.len() as i64;
        if end <= *committed {
            continue; // a replay of what we have
        }
        if start > *committed {
            // Agents resume from the offsets in Welcome, so this is a bug somewhere; keep
            // the bytes (a hole beats losing the rest) and say so.
            tracing::warn!(
                execution_id,
                have = *committed,
                offset = start,
                "output has a gap; keeping the chunk at its offset"
            );
        }
        let skip = Ord::max(*committed - start, 0) as usize;
        let mut offset = start + skip as i64;
        for piece in chunk.data[skip..].chunks(STORED_CHUNK) {
            inserts.push(log_chunk::ActiveModel {
                execution_id: Set(execution_id),
                task_id: Set(*task_id),
                stream: Set(stream.as_i32()),
                offset: Set(offset),
                data: Set(piece.to_vec()),
                ..Default::default()
            });
            offset += piece.len() as i64;
            stored += piece.len();
        }
        *committed = end;
        applied.touched.insert(TaskId(*task_id));
        let (head, tail) = ((cap / 2) as i64, (cap - cap / 2) as i64);
        if end > head + tail + STORED_CHUNK as i64 {
            trims.insert(
                (execution_id, stream.as_i32()),
                (head, end - tail - STORED_CHUNK as i64),
            );
        }
    }
    crate::metrics::metrics().output_bytes.inc_by(stored as u64);
    for chunk in inserts.chunks(200) {
        log_chunk::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    // Past the cap, the middle goes: keep the head and (about) the last `tail` bytes.
    for ((execution_id, stream), (head, before)) in trims {
        batch.push(
            &log_chunk::Entity::delete_many()
                .filter(log_chunk::Column::ExecutionId.eq(execution_id))
                .filter(log_chunk::Column::Stream.eq(stream))
                .filter(log_chunk::Column::Offset.gte(head))
                .filter(log_chunk::Column::Offset.lt(before))
                .into_query(),
        );
    }
    for (id, (_, out, err)) in lengths {
        let (_, out_before, err_before) = before[&id];
        if out != out_before || err != err_before {
            batch.push(
                &execution::Entity::update_many()
                    .col_expr(execution::Column::StdoutBytes, Expr::value(out))
                    .col_expr(execution::Column::StderrBytes, Expr::value(err))
                    .filter(execution::Column::Id.eq(id))
                    .into_query(),
            );
        }
    }
    Ok(())
}

async fn apply_update(
    txn: &DatabaseTransaction,
    batch: &mut StatementBatch,
    forward: &mut Progress,
    worker: WorkerId,
    update: Update,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    match update.state.task_status() {
        Some(status) => {
            forward.add(&update, update.state, status, applied);
            Ok(())
        }
        None => {
            // What went before is written before the failure reads the execution.
            forward.render(batch, worker);
            batch.flush(txn).await?;
            fail(txn, worker, update, applied).await
        }
    }
}

/// An execution failed (or was canceled): read it and its task, and let
/// [`attempt::end`] decide whether the task is retried or ends.
async fn fail(
    txn: &DatabaseTransaction,
    worker: WorkerId,
    update: Update,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    let Some(row) = execution::Entity::find_by_id(update.execution.0)
        .filter(execution::Column::WorkerId.eq(worker.0))
        .one(txn)
        .await?
    else {
        tracing::warn!(execution_id = update.execution.0, %worker, "update for an execution this worker does not hold, ignored");
        return Ok(());
    };
    let task_row = super::tasks::row(txn, TaskId(row.task_id)).await?;
    let ending = Ending::Reported {
        state: update.state,
        failure: update.failure,
        exit_code: update.exit_code,
        message: update.message,
    };
    let decision = attempt::end(exec_view(&row), &task_view(&task_row)?, ending);
    let Some(change) = decision.exec else {
        return Ok(()); // a replay, or a late report of an execution already ended
    };
    write_end(txn, &row, &change, Some(&update.uploaded)).await?;
    applied.touched.insert(TaskId(row.task_id));
    applied.finished.push(ExecutionId(row.id));
    if let Some(queued) = apply_task_change(txn, &task_row, decision.task).await? {
        applied.requeued.push(queued);
    }
    Ok(())
}

/// The view of an execution row that [`attempt::end`] decides on. An unreadable state
/// reads as ended, so that nothing is decided on it.
pub(super) fn exec_view(row: &execution::Model) -> ExecView {
    ExecView {
        id: ExecutionId(row.id),
        state: row.state.parse().unwrap_or(ExecState::Canceled),
    }
}

pub(super) fn task_view(row: &task::Model) -> Result<TaskView, StoreError> {
    Ok(TaskView {
        id: TaskId(row.id),
        status: row
            .status
            .parse()
            .map_err(|e: crate::core::state::UnknownStatus| StoreError::Conflict(e.to_string()))?,
        current: row.execution_id.map(ExecutionId),
        retry_left: row.retry_left,
        killed: row.status_reason == attempt::KILLED,
    })
}

/// Writes an execution's end, guarded by the legal predecessors of its new state. Returns
/// whether it changed (a concurrent end may have come first).
pub(super) async fn write_end(
    txn: &DatabaseTransaction,
    row: &execution::Model,
    change: &ExecChange,
    uploaded: Option<&[Uploaded]>,
) -> Result<bool, StoreError> {
    let mut update = execution::Entity::update_many()
        .col_expr(execution::Column::State, Expr::value(change.state.as_str()))
        .col_expr(execution::Column::FinishedAt, Expr::value(now_ms()))
        .col_expr(
            execution::Column::Failure,
            Expr::value(change.failure.as_str()),
        )
        .col_expr(
            execution::Column::Message,
            Expr::value(change.message.clone()),
        );
    if let Some(uploaded) = uploaded {
        update = update
            .col_expr(
                execution::Column::Uploaded,
                Expr::value(super::uploaded_to_json(uploaded)),
            )
            .col_expr(execution::Column::ExitCode, Expr::value(change.exit_code));
    }
    let changed = update
        .filter(execution::Column::Id.eq(row.id))
        .filter(execution::Column::State.is_in(ExecState::predecessors(change.state)))
        .exec(txn)
        .await?
        .rows_affected;
    if changed > 0 {
        crate::metrics::metrics().execution_ended(change.state, change.failure);
    }
    Ok(changed > 0)
}

pub(super) async fn set_task_status(
    txn: &DatabaseTransaction,
    row: &task::Model,
    status: TaskStatus,
    reason: &str,
    exit_code: Option<i32>,
) -> Result<(), StoreError> {
    let mut update = task::Entity::update_many()
        .col_expr(task::Column::Status, Expr::value(status.as_str()))
        .col_expr(task::Column::StatusReason, Expr::value(reason))
        .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
        .filter(task::Column::Id.eq(row.id))
        .filter(task::Column::Status.is_in(TaskStatus::predecessors(status)));
    if status.is_final() {
        update = update.col_expr(task::Column::ExitCode, Expr::value(exit_code));
    }
    update.exec(txn).await?;
    Ok(())
}

/// Carries out what [`attempt::end`] decided for the task. Returns the task when it goes
/// back to the queue.
pub(super) async fn apply_task_change(
    txn: &DatabaseTransaction,
    row: &task::Model,
    change: TaskChange,
) -> Result<Option<Queued>, StoreError> {
    match change {
        TaskChange::Unchanged => Ok(None),
        TaskChange::Requeue { retry_left, reason } => {
            if retry_left != row.retry_left {
                task::Entity::update_many()
                    .col_expr(task::Column::RetryLeft, Expr::value(retry_left))
                    .filter(task::Column::Id.eq(row.id))
                    .exec(txn)
                    .await?;
            }
            set_task_status(txn, row, TaskStatus::Pending, &reason, None).await?;
            Ok(Some(Queued {
                id: TaskId(row.id),
                batch: row.batch.clone(),
                priority: row.priority,
            }))
        }
        TaskChange::End {
            status,
            reason,
            exit_code,
        } => {
            set_task_status(txn, row, status, &reason, exit_code).await?;
            super::deps::cancel_dependants(txn, row.id).await?;
            Ok(None)
        }
    }
}

/// The executions of a task, oldest first, with their workers' names (one read for the
/// names).
pub async fn of_task(
    db: &impl ConnectionTrait,
    task: TaskId,
) -> Result<Vec<Execution>, StoreError> {
    let rows = execution::Entity::find()
        .filter(execution::Column::TaskId.eq(task.0))
        .order_by_asc(execution::Column::Id)
        .all(db)
        .await?;
    with_worker_names(db, rows).await
}

/// Executions from their rows, each with its worker's name.
pub(super) async fn with_worker_names(
    db: &impl ConnectionTrait,
    rows: Vec<execution::Model>,
) -> Result<Vec<Execution>, StoreError> {
    let mut worker_ids: Vec<i64> = rows.iter().map(|r| r.worker_id).collect();
    worker_ids.sort_unstable();
    worker_ids.dedup();
    let names: HashMap<i64, String> = super::entities::worker::Entity::find()
        .select_only()
        .column(super::entities::worker::Column::Id)
        .column(super::entities::worker::Column::Name)
        .filter(super::entities::worker::Column::Id.is_in(worker_ids))
        .into_tuple()
        .all(db)
        .await?
        .into_iter()
        .collect();
    rows.into_iter()
        .map(|row| {
            let name = names.get(&row.worker_id).cloned().unwrap_or_default();
            super::rows::execution(row, name)
        })
        .collect()
}

/// The task an execution belongs to.
pub async fn task_of(db: &impl ConnectionTrait, id: ExecutionId) -> Result<TaskId, StoreError> {
    let task: Option<i64> = execution::Entity::find_by_id(id.0)
        .select_only()
        .column(execution::Column::TaskId)
        .into_tuple()
        .one(db)
        .await?;
    task.map(TaskId).ok_or_else(|| StoreError::NotFound {
        what: "execution",
        id: id.to_string(),
    })
}

/// Output chunks of one execution, in arrival order.
pub async fn output(
    db: &impl ConnectionTrait,
    execution: ExecutionId,
) -> Result<Vec<StoredChunk>, StoreError> {
    log_chunk::Entity::find()
        .filter(log_chunk::Column::ExecutionId.eq(execution.0))
        .order_by_asc(log_chunk::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(super::rows::chunk)
        .collect()
}

/// Most chunks [`output_after`] returns at once.
pub const OUTPUT_PAGE: usize = 1000;

/// Output chunks of any execution of a task stored after the chunk `after`, at most
/// [`OUTPUT_PAGE`].
pub async fn output_after(
    db: &impl ConnectionTrait,
    task: TaskId,
    after: i64,
) -> Result<Vec<StoredChunk>, StoreError> {
    log_chunk::Entity::find()
        .filter(log_chunk::Column::TaskId.eq(task.0))
        .filter(log_chunk::Column::Id.gt(after))
        .order_by_asc(log_chunk::Column::Id)
        .limit(OUTPUT_PAGE as u64)
        .all(db)
        .await?
        .into_iter()
        .map(super::rows::chunk)
        .collect()
}

/// Promotes the waiting dependants of the tasks whose executions succeeded; returns
/// those now ready to run.
pub async fn promote_dependants(
    store: &Store,
    succeeded: Vec<ExecutionId>,
) -> Result<Vec<Queued>, StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let executions: HashSet<ExecutionId> = succeeded.into_iter().collect();
                let tasks = tasks_of(txn, &executions).await?;
                super::deps::promote(txn, &tasks).await
            })
        })
        .await
}
