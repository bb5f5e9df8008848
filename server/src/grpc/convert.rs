//! Database rows to wire messages.

use prost_types::Timestamp;
use scitq_proto::v1;

use crate::core::state::{ExecState, Failure, TaskStatus};
use crate::persistence::entities::{execution, task, worker};
use crate::persistence::executions::spec_of;

pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn task(row: &task::Model) -> v1::Task {
    let status = row
        .status
        .parse::<TaskStatus>()
        .map(|s| s.to_proto())
        .unwrap_or(v1::TaskStatus::Unspecified);
    v1::Task {
        id: row.id,
        spec: Some(spec_of(row)),
        status: status as i32,
        status_reason: row.status_reason.clone(),
        retry_left: row.retry_left.max(0) as u32,
        execution_id: row.execution_id,
        worker_id: row.worker_id,
        exit_code: row.exit_code,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

pub fn execution(row: &execution::Model, worker_name: String) -> v1::Execution {
    let state = row
        .state
        .parse::<ExecState>()
        .map(|s| s.to_proto())
        .unwrap_or(v1::ExecutionState::Unspecified);
    v1::Execution {
        id: row.id,
        task_id: row.task_id,
        worker_id: row.worker_id,
        worker_name,
        state: state as i32,
        command: row.command.clone(),
        shell: row.shell,
        exit_code: row.exit_code,
        failure: Failure::parse(&row.failure).to_proto() as i32,
        message: row.message.clone(),
        assigned_at: Some(timestamp(row.assigned_at)),
        started_at: row.started_at.map(timestamp),
        finished_at: row.finished_at.map(timestamp),
        stdout_bytes: row.stdout_bytes as u64,
        stderr_bytes: row.stderr_bytes as u64,
        uploaded: crate::persistence::uploaded_from_json(&row.uploaded),
    }
}

pub fn worker(row: &worker::Model, active: Option<u32>) -> v1::Worker {
    let status = match row.status.as_str() {
        "online" => v1::WorkerStatus::Online,
        "offline" => v1::WorkerStatus::Offline,
        "lost" => v1::WorkerStatus::Lost,
        _ => v1::WorkerStatus::Unspecified,
    };
    v1::Worker {
        id: row.id,
        name: row.name.clone(),
        host: row.host.clone(),
        concurrency: row.concurrency.max(0) as u32,
        prefetch: row.prefetch.max(0) as u32,
        batch: row.batch.clone(),
        status: status as i32,
        active: active.unwrap_or(0),
        last_contact: Some(timestamp(row.last_contact)),
        paused: row.paused,
        draining: row.draining,
    }
}

impl crate::core::worker::WorkerSettings {
    pub fn to_proto(&self) -> v1::Settings {
        v1::Settings {
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            batch: self.batch.clone().unwrap_or_default(),
        }
    }
}
