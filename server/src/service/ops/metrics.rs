//! The state series of a metrics scrape: read from what scitqd keeps anyway (the
//! `task_count` table, the scheduler's connected workers), never by counting tasks.

use super::{Ops, OpsError};
use crate::persistence::counts;

/// What a scrape reports besides the counters.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// `(batch, status, count)`.
    pub tasks: Vec<(String, String, i64)>,
    pub workers_connected: usize,
}

impl Ops {
    pub async fn gauges(&self) -> Result<Gauges, OpsError> {
        Ok(Gauges {
            tasks: counts::tasks(&self.store.db).await?,
            workers_connected: self.scheduler.active().await.len(),
        })
    }
}
