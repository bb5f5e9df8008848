//! Reads for the web UI's overviews.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, FromQueryResult, Statement};

use super::StoreError;
use crate::core::state::TaskStatus;

#[derive(FromQueryResult)]
struct Serving {
    batch: String,
    workers: i64,
}

/// How many workers hold a task of each batch (assigned to running): it reads only the
/// active tasks (the `task_status_id` index), as many as the workers' slots.
pub async fn serving_workers(
    db: &impl ConnectionTrait,
) -> Result<HashMap<String, u64>, StoreError> {
    let active: Vec<String> = TaskStatus::ALL
        .into_iter()
        .filter(|s| s.is_active())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    let sql = format!(
        "SELECT batch, COUNT(DISTINCT worker_id) AS workers FROM task \
         WHERE status IN ({}) GROUP BY batch",
        active.join(", ")
    );
    let rows = Serving::find_by_statement(Statement::from_string(db.get_database_backend(), sql))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.batch, r.workers.max(0) as u64))
        .collect())
}
