//! The gRPC edge: decode and validate, call the store or the scheduler, encode. Errors
//! become `tonic::Status` in one place ([`status`]).

pub mod convert;
pub mod executions;
pub mod session;
pub mod steering;
pub mod tasks;
pub mod workers;

use tonic::Status;

use crate::core::hub::Hub;
use crate::core::scheduler::SchedulerHandle;
use crate::persistence::{Store, StoreError};

/// What every service holds.
#[derive(Clone)]
pub struct State {
    pub store: Store,
    pub scheduler: SchedulerHandle,
    pub hub: Hub,
}

pub fn status(err: StoreError) -> Status {
    match err {
        StoreError::NotFound { .. } => Status::not_found(err.to_string()),
        StoreError::Illegal(_) | StoreError::Conflict(_) => {
            Status::failed_precondition(err.to_string())
        }
        StoreError::Closed => Status::unavailable(err.to_string()),
        StoreError::Db(_) => {
            tracing::error!(error = %err, "database error");
            Status::internal(err.to_string())
        }
    }
}
