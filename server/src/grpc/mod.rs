//! The gRPC edge: decode and validate, call the store or the scheduler, encode. Errors
//! become `tonic::Status` in one place ([`status`]).

pub mod convert;
pub mod executions;
pub mod session;
pub mod steering;
pub mod storage;
pub mod tasks;
pub mod workers;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::persistence::{Store, StoreError};
use crate::service::hub::Hub;
use crate::service::scheduler::SchedulerHandle;

/// What every service holds.
#[derive(Clone)]
pub struct State {
    pub store: Store,
    pub scheduler: SchedulerHandle,
    pub hub: Hub,
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

pub fn status(err: StoreError) -> Status {
    match err {
        StoreError::NotFound { .. } => Status::not_found(err.to_string()),
        StoreError::Illegal(_) | StoreError::Conflict(_) | StoreError::Refused(_) => {
            Status::failed_precondition(err.to_string())
        }
        StoreError::Closed => Status::unavailable(err.to_string()),
        StoreError::Db(_) => {
            tracing::error!(error = %err, "database error");
            Status::internal(err.to_string())
        }
    }
}
