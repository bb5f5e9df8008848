//! Workers: registration on Hello, settings, status.

use scitq_proto::v1;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
};

use super::entities::worker;
use super::recovery::{Reconciled, reconcile};
use super::{Store, StoreError, now_ms};
use crate::core::ids::WorkerId;

pub use crate::core::worker::WorkerSettings;

pub fn settings_of(row: &worker::Model) -> WorkerSettings {
    WorkerSettings {
        concurrency: row.concurrency.max(0) as u32,
        prefetch: row.prefetch.max(0) as u32,
        batch: (!row.batch.is_empty()).then(|| row.batch.clone()),
        paused: row.paused,
        draining: row.draining,
    }
}

/// Registers (or recognises by name) the worker of a new session and reconciles what it
/// holds. The agent's settings in its Hello are the ones it runs with.
pub async fn hello(
    store: &Store,
    hello: v1::Hello,
) -> Result<(worker::Model, Reconciled), StoreError> {
    store
        .writer
        .write(move |txn, ids| {
            Box::pin(async move {
                let now = now_ms();
                let existing = worker::Entity::find()
                    .filter(worker::Column::Name.eq(hello.name.clone()))
                    .one(txn)
                    .await?;
                let id = match existing {
                    Some(row) => row.id,
                    None => ids.worker(),
                };
                let row = worker::ActiveModel {
                    id: Set(id),
                    name: Set(hello.name.clone()),
                    host: Set(hello.host.clone()),
                    concurrency: Set(hello.concurrency as i32),
                    prefetch: Set(hello.prefetch as i32),
                    batch: Set(hello.batch.clone()),
                    status: Set("online".to_owned()),
                    last_contact: Set(now),
                    created_at: Set(now),
                    paused: Set(false),
                    draining: Set(false),
                };
                worker::Entity::insert(row)
                    .on_conflict(
                        sea_orm::sea_query::OnConflict::column(worker::Column::Id)
                            .update_columns([
                                worker::Column::Host,
                                worker::Column::Concurrency,
                                worker::Column::Prefetch,
                                worker::Column::Batch,
                                worker::Column::Status,
                                worker::Column::LastContact,
                            ])
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                let reconciled = reconcile(txn, WorkerId(id), &hello.held).await?;
                let row = get(txn, WorkerId(id)).await?;
                Ok((row, reconciled))
            })
        })
        .await
}

/// The id of the worker of that name, if it ever connected.
pub async fn id_by_name(store: &Store, name: &str) -> Result<Option<WorkerId>, StoreError> {
    let id: Option<i64> = worker::Entity::find()
        .select_only()
        .column(worker::Column::Id)
        .filter(worker::Column::Name.eq(name))
        .into_tuple()
        .one(&store.db)
        .await?;
    Ok(id.map(WorkerId))
}

pub async fn get(db: &impl ConnectionTrait, id: WorkerId) -> Result<worker::Model, StoreError> {
    worker::Entity::find_by_id(id.0)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "worker",
            id: id.to_string(),
        })
}

pub async fn list(store: &Store) -> Result<Vec<worker::Model>, StoreError> {
    Ok(worker::Entity::find()
        .order_by_asc(worker::Column::Id)
        .all(&store.db)
        .await?)
}

/// Records contact with a worker.
pub fn touch_statement(id: WorkerId) -> sea_orm::sea_query::UpdateStatement {
    worker::Entity::update_many()
        .col_expr(worker::Column::LastContact, Expr::value(now_ms()))
        .filter(worker::Column::Id.eq(id.0))
        .into_query()
}

pub async fn set_status(
    txn: &DatabaseTransaction,
    id: WorkerId,
    status: &str,
) -> Result<(), StoreError> {
    worker::Entity::update_many()
        .col_expr(worker::Column::Status, Expr::value(status))
        .filter(worker::Column::Id.eq(id.0))
        .exec(txn)
        .await?;
    Ok(())
}

pub async fn mark(store: &Store, id: WorkerId, status: &'static str) -> Result<(), StoreError> {
    store
        .writer
        .write(move |txn, _ids| Box::pin(async move { set_status(txn, id, status).await }))
        .await
}

/// Every worker marked online when the server starts was cut off by the restart.
pub async fn all_offline(store: &Store) -> Result<Vec<WorkerId>, StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let rows = worker::Entity::find()
                    .filter(worker::Column::Status.eq("online"))
                    .all(txn)
                    .await?;
                worker::Entity::update_many()
                    .col_expr(worker::Column::Status, Expr::value("offline"))
                    .filter(worker::Column::Status.eq("online"))
                    .exec(txn)
                    .await?;
                Ok(rows.into_iter().map(|r| WorkerId(r.id)).collect())
            })
        })
        .await
}

pub async fn update_settings(
    store: &Store,
    id: WorkerId,
    settings: WorkerSettings,
) -> Result<worker::Model, StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                get(txn, id).await?;
                worker::Entity::update_many()
                    .col_expr(
                        worker::Column::Concurrency,
                        Expr::value(settings.concurrency as i32),
                    )
                    .col_expr(
                        worker::Column::Prefetch,
                        Expr::value(settings.prefetch as i32),
                    )
                    .col_expr(
                        worker::Column::Batch,
                        Expr::value(settings.batch.clone().unwrap_or_default()),
                    )
                    .col_expr(worker::Column::Paused, Expr::value(settings.paused))
                    .col_expr(worker::Column::Draining, Expr::value(settings.draining))
                    .filter(worker::Column::Id.eq(id.0))
                    .exec(txn)
                    .await?;
                get(txn, id).await
            })
        })
        .await
}

/// Forgets a worker that holds no execution (the caller checks it is not connected).
pub async fn delete(store: &Store, id: WorkerId) -> Result<(), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                get(txn, id).await?;
                let held = super::recovery::active_of_worker(txn, id).await?;
                if !held.is_empty() {
                    return Err(StoreError::Conflict(format!(
                        "worker {id} still holds {} execution(s); they end when it reconnects \
                         or when its lease expires",
                        held.len()
                    )));
                }
                worker::Entity::delete_by_id(id.0).exec(txn).await?;
                Ok(())
            })
        })
        .await
}
