//! Task dependencies. A task with dependencies is `waiting` until all of them succeeded,
//! then `pending`. When one fails for good (or is canceled), its waiting dependants are
//! canceled with a reason naming it, and theirs in turn; relaunching it brings them back
//! to waiting.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    QuerySelect,
};

use super::entities::{task, task_dependency};
use super::{StoreError, now_ms};
use crate::core::ids::TaskId;
use crate::core::queue::Queued;
use crate::core::state::TaskStatus;

/// Reason of a task waiting for its dependencies.
const WAITING: &str = "waiting for its dependencies";

fn reason_of(dependency: i64) -> String {
    format!("dependency {dependency} failed")
}

/// The status a new task with these dependencies starts in, checking they exist.
pub async fn initial_status(
    txn: &DatabaseTransaction,
    depends_on: &[i64],
) -> Result<(TaskStatus, String), StoreError> {
    if depends_on.is_empty() {
        return Ok((TaskStatus::Pending, String::new()));
    }
    let rows: Vec<(i64, String)> = task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .column(task::Column::Status)
        .filter(task::Column::Id.is_in(depends_on.iter().copied()))
        .into_tuple()
        .all(txn)
        .await?;
    let found: HashSet<i64> = rows.iter().map(|(id, _)| *id).collect();
    if let Some(missing) = depends_on.iter().find(|id| !found.contains(id)) {
        return Err(StoreError::NotFound {
            what: "dependency task",
            id: missing.to_string(),
        });
    }
    for (id, status) in &rows {
        if matches!(status.as_str(), "failed" | "canceled") {
            return Ok((TaskStatus::Canceled, reason_of(*id)));
        }
    }
    if rows.iter().all(|(_, status)| status == "succeeded") {
        Ok((TaskStatus::Pending, String::new()))
    } else {
        Ok((TaskStatus::Waiting, WAITING.to_owned()))
    }
}

async fn dependants(txn: &DatabaseTransaction, of: i64) -> Result<Vec<i64>, StoreError> {
    Ok(task_dependency::Entity::find()
        .select_only()
        .column(task_dependency::Column::TaskId)
        .filter(task_dependency::Column::DependsOn.eq(of))
        .into_tuple()
        .all(txn)
        .await?)
}

/// `failed` failed or was canceled for good: cancel its waiting dependants, and theirs.
pub async fn cancel_dependants(txn: &DatabaseTransaction, failed: i64) -> Result<(), StoreError> {
    cascade(txn, failed, Cascade::Cancel).await
}

/// `relaunched` runs again: the dependants its failure canceled wait again, and theirs.
pub async fn restore_dependants(
    txn: &DatabaseTransaction,
    relaunched: i64,
) -> Result<(), StoreError> {
    cascade(txn, relaunched, Cascade::Restore).await
}

#[derive(Clone, Copy)]
enum Cascade {
    /// waiting → canceled, because of the dependency.
    Cancel,
    /// canceled because of the dependency → waiting.
    Restore,
}

/// Applies `how` to the dependants of `root`, then to the dependants of every task it
/// changed, and so on down the graph.
async fn cascade(txn: &DatabaseTransaction, root: i64, how: Cascade) -> Result<(), StoreError> {
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        for dependant in dependants(txn, id).await? {
            let update = task::Entity::update_many()
                .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
                .filter(task::Column::Id.eq(dependant));
            let update = match how {
                Cascade::Cancel => update
                    .col_expr(
                        task::Column::Status,
                        Expr::value(TaskStatus::Canceled.as_str()),
                    )
                    .col_expr(task::Column::StatusReason, Expr::value(reason_of(id)))
                    .filter(task::Column::Status.eq(TaskStatus::Waiting.as_str())),
                Cascade::Restore => update
                    .col_expr(
                        task::Column::Status,
                        Expr::value(TaskStatus::Waiting.as_str()),
                    )
                    .col_expr(task::Column::StatusReason, Expr::value(WAITING))
                    .filter(task::Column::Status.eq(TaskStatus::Canceled.as_str()))
                    .filter(task::Column::StatusReason.eq(reason_of(id))),
            };
            if update.exec(txn).await?.rows_affected > 0 {
                todo.push(dependant);
            }
        }
    }
    Ok(())
}

/// Tasks that succeeded: their waiting dependants whose dependencies all succeeded become
/// pending. Returns them for the queue.
pub async fn promote(
    txn: &DatabaseTransaction,
    succeeded: &[TaskId],
) -> Result<Vec<Queued>, StoreError> {
    let mut queued = Vec::new();
    for done in succeeded {
        for dependant in dependants(txn, done.0).await? {
            let row = super::tasks::get(txn, TaskId(dependant)).await?;
            if row.status != TaskStatus::Waiting.as_str() {
                continue;
            }
            let deps: Vec<i64> = task_dependency::Entity::find()
                .select_only()
                .column(task_dependency::Column::DependsOn)
                .filter(task_dependency::Column::TaskId.eq(dependant))
                .into_tuple()
                .all(txn)
                .await?;
            let unmet = task::Entity::find()
                .filter(task::Column::Id.is_in(deps))
                .filter(task::Column::Status.ne(TaskStatus::Succeeded.as_str()))
                .count(txn)
                .await?;
            if unmet > 0 {
                continue;
            }
            task::Entity::update_many()
                .col_expr(
                    task::Column::Status,
                    Expr::value(TaskStatus::Pending.as_str()),
                )
                .col_expr(task::Column::StatusReason, Expr::value(""))
                .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
                .filter(task::Column::Id.eq(dependant))
                .filter(task::Column::Status.eq(TaskStatus::Waiting.as_str()))
                .exec(txn)
                .await?;
            queued.push(Queued {
                id: TaskId(row.id),
                batch: row.batch,
                priority: row.priority,
            });
        }
    }
    Ok(queued)
}

/// Dependencies of `task` that have not succeeded yet.
pub async fn unmet(db: &impl ConnectionTrait, task: TaskId) -> Result<Vec<i64>, StoreError> {
    let deps: Vec<i64> = task_dependency::Entity::find()
        .select_only()
        .column(task_dependency::Column::DependsOn)
        .filter(task_dependency::Column::TaskId.eq(task.0))
        .into_tuple()
        .all(db)
        .await?;
    Ok(task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .filter(task::Column::Id.is_in(deps))
        .filter(task::Column::Status.ne(TaskStatus::Succeeded.as_str()))
        .into_tuple()
        .all(db)
        .await?)
}

/// Whether any dependency was ever recorded (if not, nothing needs promoting).
pub async fn any(db: &impl ConnectionTrait) -> Result<bool, StoreError> {
    Ok(task_dependency::Entity::find().one(db).await?.is_some())
}

/// The dependencies of each of `tasks`.
pub async fn of_tasks(
    db: &impl ConnectionTrait,
    tasks: &[i64],
) -> Result<HashMap<i64, Vec<i64>>, StoreError> {
    let mut out: HashMap<i64, Vec<i64>> = HashMap::new();
    for chunk in tasks.chunks(500) {
        let rows: Vec<(i64, i64)> = task_dependency::Entity::find()
            .select_only()
            .column(task_dependency::Column::TaskId)
            .column(task_dependency::Column::DependsOn)
            .filter(task_dependency::Column::TaskId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        for (task, dependency) in rows {
            out.entry(task).or_default().push(dependency);
        }
    }
    Ok(out)
}
