//! Domain values to wire messages and back: the only place besides `grpc/session.rs` that
//! knows both. Decoding is exhaustive: an unknown enum value is an error naming the field.

use prost_types::Timestamp;
use scitq_proto::v1;
use tonic::Status;

use crate::core::agent::{Stream, Uploaded};
use crate::core::ids::TaskId;
use crate::core::model::{Assignment, Batch, Execution, StoredChunk, Task, Worker, WorkerStatus};
use crate::core::registry::RegistryCredential;
use crate::core::state::{ExecState, Failure, TaskStatus};
use crate::core::steering::Signal;
use crate::core::task::{Shell, TaskSpec};
use crate::core::worker::WorkerSettings;

pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn shell(shell: Shell) -> v1::Shell {
    match shell {
        Shell::None => v1::Shell::None,
        Shell::Sh => v1::Shell::Sh,
        Shell::Bash => v1::Shell::Bash,
    }
}

/// Decodes a shell; `field` names it in the error.
pub fn decode_shell(field: &str, value: i32) -> Result<Shell, Status> {
    match v1::Shell::try_from(value) {
        Ok(v1::Shell::None) => Ok(Shell::None),
        Ok(v1::Shell::Sh) => Ok(Shell::Sh),
        Ok(v1::Shell::Bash) => Ok(Shell::Bash),
        Err(_) => Err(Status::invalid_argument(format!(
            "{field}: shell value {value} is unknown"
        ))),
    }
}

/// A submitted spec, decoded (checked by `core::task::NewTask::validate`).
pub fn decode_spec(index: usize, spec: v1::TaskSpec) -> Result<TaskSpec, Status> {
    Ok(TaskSpec {
        shell: decode_shell(&format!("task {index}"), spec.shell)?,
        name: spec.name,
        batch: spec.batch,
        command: spec.command,
        container: spec.container,
        container_options: spec.container_options,
        inputs: spec.inputs,
        output: spec.output,
        resources: spec.resources,
        retry: spec.retry,
        priority: spec.priority,
        run_timeout_s: spec.run_timeout_s,
        depends_on: spec.depends_on,
    })
}

pub fn spec(spec: TaskSpec) -> v1::TaskSpec {
    v1::TaskSpec {
        name: spec.name,
        batch: spec.batch,
        command: spec.command,
        shell: shell(spec.shell) as i32,
        container: spec.container,
        container_options: spec.container_options,
        inputs: spec.inputs,
        output: spec.output,
        resources: spec.resources,
        retry: spec.retry,
        priority: spec.priority,
        run_timeout_s: spec.run_timeout_s,
        depends_on: spec.depends_on,
    }
}

/// Decodes a task status filter.
pub fn decode_task_status(value: i32) -> Result<TaskStatus, Status> {
    v1::TaskStatus::try_from(value)
        .ok()
        .and_then(TaskStatus::from_proto)
        .ok_or_else(|| Status::invalid_argument(format!("unknown task status {value}")))
}

pub fn task(task: Task) -> v1::Task {
    v1::Task {
        id: task.id.0,
        spec: Some(spec(task.spec)),
        status: task.status.to_proto() as i32,
        status_reason: task.status_reason,
        retry_left: task.retry_left,
        execution_id: task.execution.map(|e| e.0),
        worker_id: task.worker.map(|w| w.0),
        exit_code: task.exit_code,
        created_at: Some(timestamp(task.created_at)),
        updated_at: Some(timestamp(task.updated_at)),
    }
}

pub fn tasks(tasks: Vec<Task>) -> Vec<v1::Task> {
    tasks.into_iter().map(task).collect()
}

pub fn uploaded(files: Vec<Uploaded>) -> Vec<v1::UploadedFile> {
    files
        .into_iter()
        .map(|f| v1::UploadedFile {
            uri: f.uri,
            size: f.size,
        })
        .collect()
}

pub fn execution(execution: Execution) -> v1::Execution {
    v1::Execution {
        id: execution.id.0,
        task_id: execution.task.0,
        worker_id: execution.worker.0,
        worker_name: execution.worker_name,
        state: execution.state.to_proto() as i32,
        command: execution.command,
        shell: shell(execution.shell) as i32,
        exit_code: execution.exit_code,
        failure: execution.failure.to_proto() as i32,
        message: execution.message,
        assigned_at: Some(timestamp(execution.assigned_at)),
        started_at: execution.started_at.map(timestamp),
        finished_at: execution.finished_at.map(timestamp),
        stdout_bytes: execution.stdout_bytes,
        stderr_bytes: execution.stderr_bytes,
        uploaded: uploaded(execution.uploaded),
    }
}

pub fn stream(stream: Stream) -> v1::OutputStream {
    match stream {
        Stream::Stdout => v1::OutputStream::Stdout,
        Stream::Stderr => v1::OutputStream::Stderr,
    }
}

pub fn chunk(chunk: StoredChunk) -> v1::OutputChunk {
    v1::OutputChunk {
        execution_id: chunk.execution.0,
        stream: stream(chunk.stream) as i32,
        offset: chunk.offset,
        data: chunk.data,
    }
}

pub fn worker(worker: Worker, active: u32) -> v1::Worker {
    let status = match worker.status {
        WorkerStatus::Online => v1::WorkerStatus::Online,
        WorkerStatus::Offline => v1::WorkerStatus::Offline,
        WorkerStatus::Lost => v1::WorkerStatus::Lost,
    };
    v1::Worker {
        id: worker.id.0,
        name: worker.name,
        host: worker.host,
        concurrency: worker.settings.concurrency,
        prefetch: worker.settings.prefetch,
        batch: worker.settings.batch.unwrap_or_default(),
        status: status as i32,
        active,
        last_contact: Some(timestamp(worker.last_contact)),
        paused: worker.settings.paused,
        draining: worker.settings.draining,
        prefetch_auto: worker.settings.prefetch_auto,
        // Set by the caller, which knows the worker's machine and activity.
        provider: String::new(),
        flavor: String::new(),
        region: String::new(),
        state: String::new(),
    }
}

pub fn batch(batch: Batch, counts: std::collections::BTreeMap<String, u64>) -> v1::Batch {
    v1::Batch {
        name: batch.name,
        stopped: batch.stopped,
        counts: counts.into_iter().collect(),
        suspended: batch.suspended,
    }
}

pub fn settings(settings: &WorkerSettings) -> v1::Settings {
    v1::Settings {
        concurrency: settings.concurrency,
        prefetch: settings.prefetch,
        batch: settings.batch.clone().unwrap_or_default(),
        prefetch_auto: settings.prefetch_auto,
    }
}

pub fn signal(signal: Signal) -> v1::Signal {
    match signal {
        Signal::Term => v1::Signal::Term,
        Signal::Kill => v1::Signal::Kill,
        Signal::Pause => v1::Signal::Pause,
        Signal::Resume => v1::Signal::Resume,
        Signal::Cancel => v1::Signal::Cancel,
        Signal::Recall => v1::Signal::Recall,
    }
}

/// An assignment as pushed, with the registry credential of its image if scitqd has one.
pub fn assignment(assignment: Assignment, credentials: Vec<RegistryCredential>) -> v1::Assignment {
    v1::Assignment {
        execution_id: assignment.execution.0,
        task_id: assignment.task.0,
        spec: Some(spec(assignment.spec)),
        registry_credentials: credentials
            .into_iter()
            .map(|c| v1::RegistryCredential {
                registry: c.registry,
                username: c.username,
                password: c.password,
            })
            .collect(),
    }
}

/// Task ids off the wire.
pub fn task_ids(ids: Vec<i64>) -> Vec<TaskId> {
    ids.into_iter().map(TaskId).collect()
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
            Self::Recalled => v1::FailureClass::Recalled,
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
            v1::FailureClass::Recalled => Self::Recalled,
        }
    }
}

pub fn machine(m: crate::core::recruit::MachineRecord) -> v1::Machine {
    v1::Machine {
        id: m.id.0,
        name: m.name,
        provider: m.provider,
        region: m.region,
        flavor: m.flavor,
        state: m.state.as_str().to_owned(),
        recruiter_id: m.rule.map_or(0, |r| r.0),
        batch: m.batch.unwrap_or_default(),
        created_at: Some(timestamp(m.created_at)),
        reason: m.reason.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_round_trip_through_the_wire() {
        for value in [Shell::None, Shell::Sh, Shell::Bash] {
            assert_eq!(decode_shell("s", shell(value) as i32).unwrap(), value);
        }
        let err = decode_shell("task 2", 9).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.message(), "task 2: shell value 9 is unknown");
    }

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
