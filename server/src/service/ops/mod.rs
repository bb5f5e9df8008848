//! The operations of scitqd, between the edges (gRPC today; the web UI and the recruiter
//! next) and the store: each takes domain inputs, checks them, applies the `core`
//! decisions through `persistence`, tells the scheduler and the output followers what
//! changed, and returns domain values or an [`OpsError`]. Nothing here knows the wire.
//!
//! [`Ops`] is a cheap, cloneable handle; every caller holds its own.

mod batches;
mod enroll;
mod metrics;
mod output;
mod overview;
mod recruit;
mod resume;
mod tasks;
mod workers;

use std::sync::Arc;

use crate::core::ids::{TaskId, WorkerId};
use crate::core::state::TaskStatus;
use crate::core::task::SpecError;
use crate::core::worker::SettingsError;
use crate::persistence::{Store, StoreError};
use crate::service::hub::Hub;
use crate::service::scheduler::SchedulerHandle;

pub use batches::{BatchCounts, StopSignal};
pub use enroll::{Deployment, EnrollmentToken, Enrollments, UserDataFormat, sha256_file};
pub use metrics::Gauges;
pub use output::{Follow, Output};
pub use recruit::{DEFAULT_IDLE_TIMEOUT, Deploy, MAX_DEPLOY, NewRule, RuleView};
pub use tasks::{Explained, MAX_LIMIT, MAX_TASKS_PER_CALL, TaskPage, TaskQuery, TaskSelection};
pub use workers::{WorkerChange, WorkerDeleted, WorkerView};

pub use crate::persistence::removal::ExecutionFilter;
pub use crate::persistence::steering::Changes;

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Enroll(#[from] crate::core::enroll::IssueError),
    #[error(transparent)]
    UserData(#[from] crate::core::enroll_user_data::RenderError),
    #[error(
        "no agent binary to deploy: {} is missing (set [deploy] agent_binary, or agent_url \
         with agent_sha256)", path.display()
    )]
    NoAgentBinary { path: std::path::PathBuf },
    #[error("cannot read the agent binary {}: {source}", path.display())]
    AgentBinary {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("no task given")]
    NoTask,
    #[error("{count} tasks in one call, the limit is {MAX_TASKS_PER_CALL}")]
    TooManyTasks { count: usize },
    #[error("limit {limit} is over the maximum of {MAX_LIMIT}")]
    LimitTooHigh { limit: u32 },
    #[error("batch name is empty")]
    EmptyBatchName,
    #[error("command is empty")]
    EmptyCommand,
    #[error("command is {size} bytes, the limit is {limit}")]
    CommandTooLong { size: usize, limit: usize },
    #[error("{field} is {size} bytes, the limit is {limit}")]
    FieldTooLong {
        field: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("retry {retry} is over the limit of {limit}")]
    RetryTooHigh { retry: u32, limit: u32 },
    #[error("invalid container image {image:?}: {reason}")]
    BadImage { image: String, reason: &'static str },
    #[error(transparent)]
    ContainerOption(#[from] scitq_proto::container::OptionError),
    /// A URI of an edit, naming the field and the bad part.
    #[error("{0}")]
    BadUri(String),
    #[error(
        "{status} tasks cannot be edited: only waiting, pending, paused, assigned or accepted \
         ones (not started)"
    )]
    NotEditable { status: TaskStatus },
    #[error("give task ids or a filter, not both")]
    IdsAndFilter,
    #[error(
        "no task selected: give task ids, a filter (batch, status, name), or all to edit every task not started"
    )]
    NothingSelected,
    #[error("no change given")]
    NoChange,
    #[error("execution {execution} is not an execution of task {task}")]
    ForeignExecution {
        execution: crate::core::ids::ExecutionId,
        task: TaskId,
    },
    #[error("worker {id} is connected: stop its agent first (or pause it)")]
    WorkerConnected { id: WorkerId },
    #[error("no recruitment here: scitqd has no [[provider]] configured")]
    NoRecruiter,
    #[error("unknown provider {name:?}: configured ones are {known:?}")]
    UnknownProvider { name: String, known: Vec<String> },
    #[error("unknown region {region:?} of provider {provider:?}: configured ones are {known:?}")]
    UnknownRegion {
        provider: String,
        region: String,
        known: Vec<String>,
    },
    #[error("provider unavailable: {0}")]
    ProviderUnavailable(String),
    #[error("no flavor of provider {provider:?} matches {wanted}; it offers {offered:?}")]
    NoFlavor {
        provider: String,
        wanted: String,
        offered: Vec<String>,
    },
    #[error("{count} more machine(s) would exceed the quota of provider {provider:?} in {region}")]
    OverQuota {
        provider: String,
        region: String,
        count: u32,
    },
    #[error("{0}")]
    BadRule(String),
}

/// The handle every edge holds to run operations.
#[derive(Clone)]
pub struct Ops {
    pub(in crate::service) store: Store,
    pub(in crate::service) scheduler: SchedulerHandle,
    hub: Hub,
    /// scitqd's rclone config: the remotes URIs are checked against at create and edit.
    rclone_config: Arc<str>,
    /// What recruited machines' user data needs ([`Ops::with_deployment`]).
    deployment: Arc<Deployment>,
    /// The recruiter, when providers are configured ([`Ops::with_recruiter`]).
    pub(in crate::service) recruiter: Option<Arc<crate::service::recruiter::Recruiter>>,
}

impl Ops {
    pub fn new(store: Store, scheduler: SchedulerHandle, hub: Hub, rclone_config: Arc<str>) -> Ops {
        Ops {
            store,
            scheduler,
            hub,
            rclone_config,
            deployment: Arc::default(),
            recruiter: None,
        }
    }

    /// Recruitment: the providers and the loop's shared state.
    pub fn with_recruiter(mut self, recruiter: Arc<crate::service::recruiter::Recruiter>) -> Ops {
        self.recruiter = Some(recruiter);
        self
    }

    /// Sets how recruited machines get the agent and reach scitqd (`[deploy]`).
    pub fn with_deployment(mut self, deployment: Deployment) -> Ops {
        self.deployment = Arc::new(deployment);
        self
    }
}

/// Checks a text field's length.
fn field(name: &'static str, value: &str) -> Result<(), OpsError> {
    let limit = crate::core::task::MAX_FIELD_BYTES;
    if value.len() > limit {
        return Err(OpsError::FieldTooLong {
            field: name,
            size: value.len(),
            limit,
        });
    }
    Ok(())
}

/// Checks a command given on its own (relaunch, edit).
fn command(command: &str) -> Result<(), OpsError> {
    if command.trim().is_empty() {
        return Err(OpsError::EmptyCommand);
    }
    let limit = crate::core::task::MAX_COMMAND_BYTES;
    if command.len() > limit {
        return Err(OpsError::CommandTooLong {
            size: command.len(),
            limit,
        });
    }
    Ok(())
}
