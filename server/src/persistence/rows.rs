//! Rows into the domain's plain types (`crate::core::model`): nothing outside persistence
//! sees an entity. A stored value this server never writes (a status, a shell) is an error
//! naming the row, not a silent default.

use super::entities::{batch, execution, log_chunk, task, worker};
use super::{StoreError, from_json_list};
use crate::core::agent::Stream;
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::model::{Batch, Execution, StoredChunk, Task, Worker, WorkerStatus};
use crate::core::state::{ExecState, Failure, TaskStatus};
use crate::core::task::{Shell, TaskSpec};
use crate::core::worker::WorkerSettings;

fn corrupt(
    what: &'static str,
    id: impl ToString,
    field: &'static str,
    value: impl ToString,
) -> StoreError {
    StoreError::Corrupt {
        what,
        id: id.to_string(),
        field,
        value: value.to_string(),
    }
}

fn shell(what: &'static str, id: i64, value: i32) -> Result<Shell, StoreError> {
    Shell::from_i32(value).ok_or_else(|| corrupt(what, id, "shell", value))
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn unsigned32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

pub(super) fn task(row: task::Model) -> Result<Task, StoreError> {
    let status: TaskStatus = row
        .status
        .parse()
        .map_err(|_| corrupt("task", row.id, "status", &row.status))?;
    Ok(Task {
        id: TaskId(row.id),
        spec: TaskSpec {
            shell: shell("task", row.id, row.shell)?,
            name: row.name,
            batch: row.batch,
            command: row.command,
            container: row.container,
            container_options: from_json_list(&row.container_options),
            inputs: from_json_list(&row.inputs),
            output: row.output,
            resources: from_json_list(&row.resources),
            retry: unsigned32(row.retry),
            priority: row.priority,
            run_timeout_s: unsigned32(row.run_timeout_s),
            depends_on: Vec::new(),
        },
        status,
        status_reason: row.status_reason,
        retry_left: unsigned32(row.retry_left),
        execution: row.execution_id.map(ExecutionId),
        worker: row.worker_id.map(WorkerId),
        exit_code: row.exit_code,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(super) fn execution(
    row: execution::Model,
    worker_name: String,
) -> Result<Execution, StoreError> {
    let state: ExecState = row
        .state
        .parse()
        .map_err(|_| corrupt("execution", row.id, "state", &row.state))?;
    Ok(Execution {
        id: ExecutionId(row.id),
        task: TaskId(row.task_id),
        worker: WorkerId(row.worker_id),
        worker_name,
        state,
        shell: shell("execution", row.id, row.shell)?,
        command: row.command,
        exit_code: row.exit_code,
        failure: Failure::parse(&row.failure),
        message: row.message,
        assigned_at: row.assigned_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        stdout_bytes: unsigned(row.stdout_bytes),
        stderr_bytes: unsigned(row.stderr_bytes),
        uploaded: super::uploaded_from_json(&row.uploaded),
        inputs_seen: super::inputs_seen_from_json(&row.inputs_seen),
    })
}

pub(super) fn settings(row: &worker::Model) -> WorkerSettings {
    WorkerSettings {
        concurrency: unsigned32(row.concurrency),
        prefetch: unsigned32(row.prefetch),
        batch: (!row.batch.is_empty()).then(|| row.batch.clone()),
        paused: row.paused,
        draining: row.draining,
        // Not stored: the agent says it in every Hello (see `Pool::prefetch`).
        prefetch_auto: false,
    }
}

pub(super) fn worker(row: worker::Model) -> Result<Worker, StoreError> {
    let status = WorkerStatus::parse(&row.status)
        .ok_or_else(|| corrupt("worker", row.id, "status", &row.status))?;
    Ok(Worker {
        id: WorkerId(row.id),
        settings: settings(&row),
        status,
        has_credential: row.credential_hash.is_some(),
        name: row.name,
        host: row.host,
        last_contact: row.last_contact,
        created_at: row.created_at,
    })
}

pub(super) fn batch(row: batch::Model) -> Batch {
    Batch {
        name: row.name,
        stopped: row.stopped,
        suspended: row.suspended,
        created_at: row.created_at,
    }
}

pub(super) fn chunk(row: log_chunk::Model) -> Result<StoredChunk, StoreError> {
    let stream = match row.stream {
        0 => Stream::Stdout,
        1 => Stream::Stderr,
        other => return Err(corrupt("output chunk", row.id, "stream", other)),
    };
    Ok(StoredChunk {
        seq: row.id,
        execution: ExecutionId(row.execution_id),
        stream,
        offset: unsigned(row.offset),
        data: row.data,
    })
}
