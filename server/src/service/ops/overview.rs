//! What the web UI's overview pages read besides the lists every edge has.

use std::collections::HashMap;

use super::{Ops, OpsError};
use crate::core::ids::WorkerId;
use crate::persistence::{overview, workers};

impl Ops {
    /// How many workers hold a task of each batch now.
    pub async fn serving_workers(&self) -> Result<HashMap<String, u64>, OpsError> {
        Ok(overview::serving_workers(&self.store.db).await?)
    }

    /// Every worker's name by id (for tasks and executions shown with their worker).
    pub async fn worker_names(&self) -> Result<HashMap<WorkerId, String>, OpsError> {
        Ok(workers::list(&self.store)
            .await?
            .into_iter()
            .map(|w| (w.id, w.name))
            .collect())
    }
}
