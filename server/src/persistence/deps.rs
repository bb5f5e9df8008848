//! Task dependencies, as `core::deps` decides them: this module loads the part of the graph a
//! decision needs and applies it with guarded UPDATEs.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
};

use super::entities::{task, task_dependency};
use super::{StoreError, now_ms};
use crate::core::deps::{self as core_deps, Dependants};
use crate::core::ids::TaskId;
use crate::core::queue::Queued;
use crate::core::state::TaskStatus;

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
    let statuses = rows
        .into_iter()
        .map(|(id, status)| Ok((TaskId(id), parse_status(&status)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(core_deps::initial(&statuses))
}

fn parse_status(status: &str) -> Result<TaskStatus, StoreError> {
    status
        .parse()
        .map_err(|e: crate::core::state::UnknownStatus| StoreError::Conflict(e.to_string()))
}

/// Edges `(dependant, dependency)` whose dependency is one of `of`.
async fn edges_below(txn: &DatabaseTransaction, of: &[i64]) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut edges = Vec::new();
    for chunk in of.chunks(500) {
        let rows: Vec<(i64, i64)> = task_dependency::Entity::find()
            .select_only()
            .column(task_dependency::Column::TaskId)
            .column(task_dependency::Column::DependsOn)
            .filter(task_dependency::Column::DependsOn.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(txn)
            .await?;
        edges.extend(rows);
    }
    Ok(edges)
}

/// Loads every task below `root` in the dependency graph, with its status and reason.
async fn dependants_of(txn: &DatabaseTransaction, root: i64) -> Result<Dependants, StoreError> {
    let mut graph = Dependants::default();
    let mut frontier = vec![root];
    while !frontier.is_empty() {
        let edges = edges_below(txn, &frontier).await?;
        // A set: a task that thousands depend on must not cost a scan per dependant.
        let mut next = HashSet::new();
        for (dependant, dependency) in edges {
            graph
                .of
                .entry(TaskId(dependency))
                .or_default()
                .push(TaskId(dependant));
            if !graph.status.contains_key(&TaskId(dependant)) {
                next.insert(dependant);
            }
        }
        frontier = next.into_iter().collect();
        for chunk in frontier.chunks(500) {
            let rows: Vec<(i64, String, String)> = task::Entity::find()
                .select_only()
                .column(task::Column::Id)
                .column(task::Column::Status)
                .column(task::Column::StatusReason)
                .filter(task::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(txn)
                .await?;
            for (id, status, reason) in rows {
                graph
                    .status
                    .insert(TaskId(id), (parse_status(&status)?, reason));
            }
        }
    }
    Ok(graph)
}

/// `failed` failed or was canceled for good: cancel its waiting dependants, and theirs.
pub async fn cancel_dependants(txn: &DatabaseTransaction, failed: i64) -> Result<(), StoreError> {
    let graph = dependants_of(txn, failed).await?;
    for (dependant, reason) in core_deps::cancel(TaskId(failed), &graph) {
        task::Entity::update_many()
            .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
            .col_expr(
                task::Column::Status,
                Expr::value(TaskStatus::Canceled.as_str()),
            )
            .col_expr(task::Column::StatusReason, Expr::value(reason))
            .filter(task::Column::Id.eq(dependant.0))
            .filter(task::Column::Status.eq(TaskStatus::Waiting.as_str()))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// `relaunched` runs again: the dependants its failure canceled wait again, and theirs.
pub async fn restore_dependants(
    txn: &DatabaseTransaction,
    relaunched: i64,
) -> Result<(), StoreError> {
    let graph = dependants_of(txn, relaunched).await?;
    for (dependant, canceled_for) in core_deps::restore(TaskId(relaunched), &graph) {
        task::Entity::update_many()
            .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
            .col_expr(
                task::Column::Status,
                Expr::value(TaskStatus::Waiting.as_str()),
            )
            .col_expr(task::Column::StatusReason, Expr::value(core_deps::WAITING))
            .filter(task::Column::Id.eq(dependant.0))
            .filter(task::Column::Status.eq(TaskStatus::Canceled.as_str()))
            .filter(task::Column::StatusReason.eq(canceled_for))
            .exec(txn)
            .await?;
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
    let done: Vec<i64> = succeeded.iter().map(|t| t.0).collect();
    for (dependant, _) in edges_below(txn, &done).await? {
        let row = super::tasks::row(txn, TaskId(dependant)).await?;
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
        let statuses: Vec<String> = task::Entity::find()
            .select_only()
            .column(task::Column::Status)
            .filter(task::Column::Id.is_in(deps))
            .into_tuple()
            .all(txn)
            .await?;
        let statuses = statuses
            .iter()
            .map(|s| parse_status(s))
            .collect::<Result<Vec<_>, _>>()?;
        if !core_deps::ready(statuses) {
            continue;
        }
        let promoted = task::Entity::update_many()
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
        if promoted.rows_affected > 0 {
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
