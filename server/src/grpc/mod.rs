//! The gRPC edge: decode wire messages into domain inputs, call the operations
//! (`service::ops`) or the session protocol (`service::session`), encode the result. Errors
//! become `tonic::Status` in one place ([`status`]).

pub mod convert;
pub mod executions;
pub mod recruit;
pub mod session;
pub mod steering;
pub mod storage;
pub mod tasks;
pub mod workers;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::persistence::StoreError;
use crate::service::ops::{Ops, OpsError};
use crate::service::session::{OpenError, SessionError};

/// What every service holds.
#[derive(Clone)]
pub struct State {
    /// The operations every RPC but the agent stream calls.
    pub ops: Ops,
    /// What the agent stream calls (`service::session`).
    pub sessions: crate::service::session::Context,
    /// Cancelled when scitqd stops: long-lived response streams end then, or the graceful
    /// shutdown would wait on them forever.
    pub shutdown: CancellationToken,
    /// Storage remotes (rclone.conf text) handed to every agent in `Welcome`, and to admin
    /// clients by `StorageService.GetStorageConfig`.
    pub rclone_config: std::sync::Arc<str>,
    /// How long a disconnected worker keeps its executions (told to agents in `Welcome`).
    pub lease: std::time::Duration,
}

/// Ends a response stream when scitqd shuts down, with an `UNAVAILABLE` status the client
/// can retry on.
pub fn until_shutdown<T: Send + 'static>(
    stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    shutdown: &CancellationToken,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static {
    let stopped = shutdown.clone();
    stream.take_until(shutdown.clone().cancelled_owned()).chain(
        futures::stream::once(async move {
            stopped
                .is_cancelled()
                .then(|| Err(Status::unavailable("scitqd is shutting down")))
        })
        .filter_map(futures::future::ready),
    )
}

/// The one place errors become a `tonic::Status`.
pub fn status(err: impl Into<Error>) -> Status {
    match err.into() {
        Error::Ops(err) => ops_status(err),
        Error::Store(err) => store_status(err),
        Error::Open(err) => match err {
            OpenError::Credential(_) => Status::permission_denied(err.to_string()),
            OpenError::Enrollment(_) | OpenError::UnknownToken => {
                Status::unauthenticated(err.to_string())
            }
            // Retryable: the other session may be a dead one the server has not noticed yet.
            OpenError::Busy { .. } => Status::already_exists(err.to_string()),
            OpenError::Store(err) => store_status(err),
        },
        Error::Session(err) => match err {
            SessionError::Invalid(_) => Status::invalid_argument(err.to_string()),
            // The agent reconnects and sends again what was not acknowledged.
            SessionError::Replaced | SessionError::Apply(_) => Status::aborted(err.to_string()),
            SessionError::Internal(_) => Status::internal(err.to_string()),
        },
    }
}

/// What [`status`] maps.
pub enum Error {
    Ops(OpsError),
    Store(StoreError),
    Open(OpenError),
    Session(SessionError),
}

impl From<SessionError> for Error {
    fn from(err: SessionError) -> Error {
        Error::Session(err)
    }
}

impl From<OpsError> for Error {
    fn from(err: OpsError) -> Error {
        Error::Ops(err)
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Error {
        Error::Store(err)
    }
}

impl From<OpenError> for Error {
    fn from(err: OpenError) -> Error {
        Error::Open(err)
    }
}

fn ops_status(err: OpsError) -> Status {
    match err {
        OpsError::Store(err) => store_status(err),
        OpsError::ForeignExecution { .. } => Status::not_found(err.to_string()),
        OpsError::WorkerConnected { .. } => Status::failed_precondition(err.to_string()),
        OpsError::NoAgentBinary { .. } | OpsError::UserData(_) => {
            Status::failed_precondition(err.to_string())
        }
        OpsError::AgentBinary { .. } => Status::internal(err.to_string()),
        OpsError::NoRecruiter | OpsError::OverQuota { .. } => {
            Status::failed_precondition(err.to_string())
        }
        OpsError::ProviderUnavailable(_) => Status::unavailable(err.to_string()),
        OpsError::UnknownProvider { .. }
        | OpsError::UnknownRegion { .. }
        | OpsError::NoFlavor { .. }
        | OpsError::BadRule(_) => Status::invalid_argument(err.to_string()),
        OpsError::Spec(_)
        | OpsError::Settings(_)
        | OpsError::Enroll(_)
        | OpsError::NoTask
        | OpsError::TooManyTasks { .. }
        | OpsError::LimitTooHigh { .. }
        | OpsError::EmptyBatchName
        | OpsError::EmptyCommand
        | OpsError::CommandTooLong { .. }
        | OpsError::FieldTooLong { .. }
        | OpsError::RetryTooHigh { .. }
        | OpsError::BadImage { .. }
        | OpsError::ContainerOption(_)
        | OpsError::BadUri(_)
        | OpsError::NotEditable { .. }
        | OpsError::IdsAndFilter
        | OpsError::NothingSelected
        | OpsError::NoChange => Status::invalid_argument(err.to_string()),
    }
}

fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::NotFound { .. } => Status::not_found(err.to_string()),
        StoreError::Illegal(_) | StoreError::Conflict(_) | StoreError::Refused(_) => {
            Status::failed_precondition(err.to_string())
        }
        StoreError::Credential(_) => Status::permission_denied(err.to_string()),
        StoreError::Enrollment(_) | StoreError::UnknownToken => {
            Status::unauthenticated(err.to_string())
        }
        StoreError::Closed => Status::unavailable(err.to_string()),
        StoreError::Db(_) | StoreError::Corrupt { .. } => {
            tracing::error!(error = %err, "database error");
            Status::internal(err.to_string())
        }
    }
}
