//! StorageService: the storage remotes scitqd hands its agents, for `scitqctl fetch`.

use scitq_proto::v1;
use scitq_proto::v1::storage_service_server::StorageService;
use tonic::{Request, Response, Status};

use super::State;
use crate::auth::require_admin;

pub struct Storage(pub State);

#[tonic::async_trait]
impl StorageService for Storage {
    async fn get_storage_config(
        &self,
        request: Request<v1::GetStorageConfigRequest>,
    ) -> Result<Response<v1::StorageConfig>, Status> {
        // The text holds the remotes' credentials: agents get it in their Welcome, people
        // only with an admin token.
        require_admin(&request)?;
        Ok(Response::new(v1::StorageConfig {
            rclone_config: self.0.rclone_config.to_string(),
        }))
    }
}
