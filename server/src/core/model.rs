//! What the server knows, as plain data: the tasks, executions, workers and batches the store
//! returns and the operations (`crate::service::ops`) hand out. No database row and no wire
//! message: the store converts its rows into these, `grpc/convert.rs` these into messages.

use super::agent::{Stream, Uploaded};
use super::ids::{ExecutionId, TaskId, WorkerId};
use super::inputs_seen::InputSeen;
use super::state::{ExecState, Failure, TaskStatus};
use super::task::{Shell, TaskSpec};
use super::worker::WorkerSettings;

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub type Millis = i64;

/// A task and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    /// Its spec; `depends_on` is filled only where dependencies are shown.
    pub spec: TaskSpec,
    pub status: TaskStatus,
    /// Why it is in its status, in words (empty when nothing is worth saying).
    pub status_reason: String,
    pub retry_left: u32,
    /// Its current (last) execution.
    pub execution: Option<ExecutionId>,
    pub worker: Option<WorkerId>,
    pub exit_code: Option<i32>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One attempt of a task, with the command it froze.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub id: ExecutionId,
    pub task: TaskId,
    pub worker: WorkerId,
    /// Empty once the worker was deleted.
    pub worker_name: String,
    pub state: ExecState,
    pub command: String,
    pub shell: Shell,
    pub exit_code: Option<i32>,
    pub failure: Failure,
    pub message: String,
    pub assigned_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub uploaded: Vec<Uploaded>,
    /// What its inputs held when its agent staged them; an input missing here was not
    /// recorded (an older agent, a re-attached run, a store that could not list it).
    pub inputs_seen: Vec<InputSeen>,
}

/// Whether a worker's agent is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerStatus {
    Online,
    Offline,
    Lost,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Online => "online",
            WorkerStatus::Offline => "offline",
            WorkerStatus::Lost => "lost",
        }
    }

    pub fn parse(text: &str) -> Option<WorkerStatus> {
        match text {
            "online" => Some(WorkerStatus::Online),
            "offline" => Some(WorkerStatus::Offline),
            "lost" => Some(WorkerStatus::Lost),
            _ => None,
        }
    }
}

/// A worker the server knows (it said Hello once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worker {
    pub id: WorkerId,
    pub name: String,
    pub host: String,
    pub settings: WorkerSettings,
    pub status: WorkerStatus,
    pub last_contact: Millis,
    pub created_at: Millis,
    /// It has its own credential (issued at its first Hello): the shared worker token
    /// alone no longer opens a session under its name.
    pub has_credential: bool,
}

/// A batch's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub name: String,
    /// No new task of it starts.
    pub stopped: bool,
    /// Stopped, and its running tasks frozen.
    pub suspended: bool,
    pub created_at: Millis,
}

/// A stored piece of an execution's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    /// Its place in the store: followers read on after the last one they saw.
    pub seq: i64,
    pub execution: ExecutionId,
    pub stream: Stream,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A new execution, with the spec it froze, to push to its worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub worker: WorkerId,
    pub execution: ExecutionId,
    pub task: TaskId,
    pub spec: TaskSpec,
}
