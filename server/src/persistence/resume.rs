//! Resume: earlier successes of an identical task, and marking the one kept.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entities::{execution, task};
use super::{Store, StoreError, now_ms, to_json_list};
use crate::core::ids::TaskId;
use crate::core::model::Execution;
use crate::core::state::{ExecState, TaskStatus};
use crate::core::task::NewTask;

/// Succeeded tasks of the same batch with the same spec, newest first, each with the
/// execution that succeeded.
pub async fn candidates(
    db: &impl ConnectionTrait,
    new: &NewTask,
) -> Result<Vec<(TaskId, Execution)>, StoreError> {
    let rows = task::Entity::find()
        .filter(task::Column::Batch.eq(new.batch.clone()))
        .filter(task::Column::Status.eq(TaskStatus::Succeeded.as_str()))
        .filter(task::Column::Command.eq(new.command.clone()))
        .filter(task::Column::Shell.eq(new.shell as i32))
        .filter(task::Column::Container.eq(new.container.clone()))
        .filter(task::Column::ContainerOptions.eq(to_json_list(&new.container_options)))
        .filter(task::Column::Inputs.eq(to_json_list(&new.inputs)))
        .filter(task::Column::Resources.eq(to_json_list(&new.resources)))
        .filter(task::Column::Output.eq(new.output.clone()))
        .order_by_desc(task::Column::Id)
        .all(db)
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let Some(exec_id) = row.execution_id else {
            continue;
        };
        let Some(exec) = execution::Entity::find_by_id(exec_id).one(db).await? else {
            continue;
        };
        if exec.state != ExecState::Succeeded.as_str() {
            continue;
        }
        let mut found = super::executions::with_worker_names(db, vec![exec]).await?;
        out.push((TaskId(row.id), found.remove(0)));
    }
    Ok(out)
}

/// Says on a kept task why it was not run again.
pub async fn mark_kept(store: &Store, id: TaskId, reason: String) -> Result<(), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                task::Entity::update_many()
                    .col_expr(task::Column::StatusReason, Expr::value(reason))
                    .col_expr(task::Column::UpdatedAt, Expr::value(now_ms()))
                    .filter(task::Column::Id.eq(id.0))
                    .filter(task::Column::Status.eq(TaskStatus::Succeeded.as_str()))
                    .exec(txn)
                    .await?;
                Ok(())
            })
        })
        .await
}
