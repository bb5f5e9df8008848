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

// The state machines' wire forms: core/ knows nothing of the wire.

impl TaskStatus {
    pub fn to_proto(self) -> v1::TaskStatus {
        match self {
            Self::Waiting => v1::TaskStatus::Waiting,
            Self::Pending => v1::TaskStatus::Pending,
            Self::Assigned => v1::TaskStatus::Assigned,
            Self::Accepted => v1::TaskStatus::Accepted,
            Self::Running => v1::TaskStatus::Running,
            Self::Uploading => v1::TaskStatus::Uploading,
            Self::Succeeded => v1::TaskStatus::Succeeded,
            Self::Failed => v1::TaskStatus::Failed,
            Self::Paused => v1::TaskStatus::Paused,
            Self::Canceled => v1::TaskStatus::Canceled,
        }
    }

    pub fn from_proto(status: v1::TaskStatus) -> Option<Self> {
        Some(match status {
            v1::TaskStatus::Unspecified => return None,
            v1::TaskStatus::Waiting => Self::Waiting,
            v1::TaskStatus::Pending => Self::Pending,
            v1::TaskStatus::Assigned => Self::Assigned,
            v1::TaskStatus::Accepted => Self::Accepted,
            v1::TaskStatus::Running => Self::Running,
            v1::TaskStatus::Uploading => Self::Uploading,
            v1::TaskStatus::Succeeded => Self::Succeeded,
            v1::TaskStatus::Failed => Self::Failed,
            v1::TaskStatus::Paused => Self::Paused,
            v1::TaskStatus::Canceled => Self::Canceled,
        })
    }
}

impl ExecState {
    pub fn to_proto(self) -> v1::ExecutionState {
        match self {
            Self::Assigned => v1::ExecutionState::Assigned,
            Self::Accepted => v1::ExecutionState::Accepted,
            Self::Running => v1::ExecutionState::Running,
            Self::Uploading => v1::ExecutionState::Uploading,
            Self::Succeeded => v1::ExecutionState::Succeeded,
            Self::Failed => v1::ExecutionState::Failed,
            Self::Canceled => v1::ExecutionState::Canceled,
        }
    }

    pub fn from_proto(state: v1::ExecutionState) -> Option<Self> {
        Some(match state {
            v1::ExecutionState::Unspecified => return None,
            v1::ExecutionState::Assigned => Self::Assigned,
            v1::ExecutionState::Accepted => Self::Accepted,
            v1::ExecutionState::Running => Self::Running,
            v1::ExecutionState::Uploading => Self::Uploading,
            v1::ExecutionState::Succeeded => Self::Succeeded,
            v1::ExecutionState::Failed => Self::Failed,
            v1::ExecutionState::Canceled => Self::Canceled,
        })
    }
}

impl Failure {
    pub fn to_proto(self) -> v1::FailureClass {
        match self {
            Self::None => v1::FailureClass::Unspecified,
            Self::Download => v1::FailureClass::Download,
            Self::Run => v1::FailureClass::Run,
            Self::Upload => v1::FailureClass::Upload,
            Self::Lost => v1::FailureClass::Lost,
            Self::Killed => v1::FailureClass::Killed,
            Self::Timeout => v1::FailureClass::Timeout,
        }
    }

    pub fn from_proto(failure: v1::FailureClass) -> Self {
        match failure {
            v1::FailureClass::Unspecified => Self::None,
            v1::FailureClass::Download => Self::Download,
            v1::FailureClass::Run => Self::Run,
            v1::FailureClass::Upload => Self::Upload,
            v1::FailureClass::Lost => Self::Lost,
            v1::FailureClass::Killed => Self::Killed,
            v1::FailureClass::Timeout => Self::Timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_the_wire() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::from_proto(status.to_proto()), Some(status));
        }
        for state in ExecState::ALL {
            assert_eq!(ExecState::from_proto(state.to_proto()), Some(state));
        }
        for failure in Failure::ALL {
            assert_eq!(Failure::from_proto(failure.to_proto()), failure);
        }
    }
}
