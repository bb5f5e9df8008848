//! What an agent tells the server, once decoded and checked at the edge (`grpc/session.rs`):
//! the decisions and the store never see a wire message.

use super::ids::ExecutionId;
use super::inputs_seen::InputSeen;
use super::state::{ExecState, Failure};

/// An output stream of an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// As stored.
    pub fn as_i32(self) -> i32 {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// A file uploaded from an execution's output folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub uri: String,
    pub size: u64,
}

/// An execution reached `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub execution: ExecutionId,
    pub state: ExecState,
    pub exit_code: Option<i32>,
    pub failure: Failure,
    pub message: String,
    /// Files uploaded, for final states.
    pub uploaded: Vec<Uploaded>,
    /// What the inputs held when the agent staged them, for final states.
    pub inputs: Vec<InputSeen>,
}

/// Output bytes of an execution's stream, from `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub execution: ExecutionId,
    pub stream: Stream,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// What an agent's heartbeat says of its host (not stored: the scheduler holds the last
/// one of each connected worker).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostStats {
    /// 1-minute load average.
    pub load: f64,
    /// Share of all CPUs busy since the previous heartbeat, in percent.
    pub cpu_percent: f64,
    pub cpus: u32,
    pub mem_available: u64,
    pub mem_total: u64,
    /// Of the work dir's filesystem.
    pub disk_available: u64,
    pub disk_total: u64,
}

/// One message of an agent, in the order it came.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentEvent {
    Update(Update),
    Output(Chunk),
    Heartbeat(HostStats),
    /// The agent's automatic prefetch changed (see `Pool::agent_prefetch`).
    Prefetch(u32),
}

/// An agent's Hello, checked at the edge: who it is and what it still holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub name: String,
    pub host: String,
    pub concurrency: u32,
    pub prefetch: u32,
    /// Batch filter; empty takes any batch.
    pub batch: String,
    pub held: Vec<super::reconcile::Held>,
    /// The agent's own credential (see `core::credential`); None from older agents.
    pub credential: Option<String>,
    /// Random per agent process: a reconnection of the same process may replace its own
    /// half-open session; another process under the same name may not.
    pub instance: String,
    /// The agent adapts its prefetch (see `Pool::agent_prefetch`).
    pub prefetch_auto: bool,
}

/// One message the server sends an agent after `Welcome`, before it is put on the wire
/// (`grpc/session.rs` encodes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToAgent {
    /// A new execution, with the registry credential of its image if scitqd has one (boxed:
    /// acks, the most frequent message, stay small on the channel).
    Assignment {
        assignment: Box<super::model::Assignment>,
        credentials: Vec<super::registry::RegistryCredential>,
    },
    /// The worker's settings changed.
    Settings(super::worker::WorkerSettings),
    /// Finish what is held, then exit.
    Drain,
    Signal {
        execution: ExecutionId,
        signal: super::steering::Signal,
    },
    /// Everything up to `seq` is committed.
    Ack(u64),
}
