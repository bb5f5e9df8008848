//! Tasks by batch and status, as the `task_count` table holds them (kept by triggers in the
//! transaction of every task change, migration m0013): a few rows to read, however many
//! tasks there are.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, Statement};

use super::StoreError;

/// `(batch, status, count)` of every batch that has tasks; a batch's statuses at 0 are
/// included (they were reached once), batches with no task left are not.
pub async fn tasks(db: &impl ConnectionTrait) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT batch, status, n FROM task_count",
        ))
        .await?;
    let mut per_batch: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for row in rows {
        let batch: String = row.try_get("", "batch")?;
        let status: String = row.try_get("", "status")?;
        let n: i64 = row.try_get("", "n")?;
        per_batch.entry(batch).or_default().push((status, n));
    }
    Ok(per_batch
        .into_iter()
        .filter(|(_, counts)| counts.iter().any(|(_, n)| *n != 0))
        .flat_map(|(batch, counts)| {
            counts
                .into_iter()
                .map(move |(status, n)| (batch.clone(), status, n))
        })
        .collect())
}
