//! Workers: registration on Hello (with the worker's own credential), settings, status.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
};

use super::enroll;
use super::entities::worker;
use super::recovery::{Reconciled, reconcile};
use super::{Store, StoreError, now_ms};
use crate::core::agent::Hello;
use crate::core::credential::{self, Check};
use crate::core::enroll::{Token, Verdict};
use crate::core::ids::WorkerId;
use crate::core::model::Worker;

pub use crate::core::worker::WorkerSettings;

/// What a Hello did.
#[derive(Debug)]
pub struct Welcomed {
    pub worker: Worker,
    pub reconciled: Reconciled,
}

/// Registers (or recognises by name) the worker of a new session, checks its credential
/// (binding the worker to it at its first Hello) and reconciles what it holds, in one transaction. The
/// agent's settings in its Hello are the ones it runs with.
///
/// `enrollment`: the hash of the enrollment token the agent presented as its bearer; the
/// commit that binds the worker to its credential also marks the token used.
pub async fn hello(
    store: &Store,
    hello: Hello,
    enrollment: Option<String>,
) -> Result<Welcomed, StoreError> {
    store
        .writer
        .write(move |txn, ids| {
            Box::pin(async move {
                let now = now_ms();
                let existing = worker::Entity::find()
                    .filter(worker::Column::Name.eq(hello.name.clone()))
                    .one(txn)
                    .await?;
                let id = match &existing {
                    Some(row) => row.id,
                    None => ids.worker(),
                };
                let stored = existing.as_ref().and_then(|r| r.credential_hash.as_deref());
                let enrolled = match &enrollment {
                    Some(token) => Some(
                        enroll_check(txn, token, &hello.name, stored, hello.credential.as_deref())
                            .await?,
                    ),
                    None => None,
                };
                let bind = match credential::check(
                    &hello.name,
                    id,
                    stored,
                    hello.credential.as_deref(),
                )? {
                    Check::Bind(hash) => Some(hash),
                    Check::Accept => None,
                    Check::Unbound => {
                        tracing::warn!(
                            worker = %hello.name,
                            "the agent presents no credential: anyone with the worker token \
                             can open this worker's session (upgrade its agent)"
                        );
                        None
                    }
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
                    credential_hash: Set(bind.clone()),
                };
                let mut updated = vec![
                    worker::Column::Host,
                    worker::Column::Concurrency,
                    worker::Column::Prefetch,
                    worker::Column::Batch,
                    worker::Column::Status,
                    worker::Column::LastContact,
                ];
                if bind.is_some() {
                    updated.push(worker::Column::CredentialHash);
                }
                worker::Entity::insert(row)
                    .on_conflict(
                        sea_orm::sea_query::OnConflict::column(worker::Column::Id)
                            .update_columns(updated)
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                if let (Some(hash), Some((token, Verdict::Enroll))) = (&enrollment, &enrolled) {
                    enroll::mark_used(txn, hash, WorkerId(id), token).await?;
                    tracing::info!(worker = %hello.name, "enrolled with its enrollment token");
                }
                let reconciled = reconcile(txn, WorkerId(id), &hello.held).await?;
                let worker = get(txn, WorkerId(id)).await?;
                Ok(Welcomed { worker, reconciled })
            })
        })
        .await
}

/// Checks an enrollment token (by hash) for a Hello under `name` presenting `credential`,
/// against the worker's stored credential hash.
pub async fn enroll_check(
    db: &impl ConnectionTrait,
    token: &str,
    name: &str,
    stored: Option<&str>,
    credential: Option<&str>,
) -> Result<(Token, Verdict), StoreError> {
    let presented = credential.filter(|c| !c.is_empty());
    let bound = matches!((stored, presented), (Some(s), Some(p)) if credential::hash(p) == s);
    enroll::check(db, token, name, presented.is_some(), bound).await
}

/// The worker of that name, if it ever connected: its id and its credential's hash.
pub async fn by_name(
    store: &Store,
    name: &str,
) -> Result<Option<(WorkerId, Option<String>)>, StoreError> {
    let row: Option<(i64, Option<String>)> = worker::Entity::find()
        .select_only()
        .column(worker::Column::Id)
        .column(worker::Column::CredentialHash)
        .filter(worker::Column::Name.eq(name))
        .into_tuple()
        .one(&store.db)
        .await?;
    Ok(row.map(|(id, hash)| (WorkerId(id), hash)))
}

pub async fn get(db: &impl ConnectionTrait, id: WorkerId) -> Result<Worker, StoreError> {
    worker::Entity::find_by_id(id.0)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "worker",
            id: id.to_string(),
        })
        .and_then(super::rows::worker)
}

pub async fn list(store: &Store) -> Result<Vec<Worker>, StoreError> {
    worker::Entity::find()
        .order_by_asc(worker::Column::Id)
        .all(&store.db)
        .await?
        .into_iter()
        .map(super::rows::worker)
        .collect()
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
) -> Result<Worker, StoreError> {
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

/// Forgets a worker that holds no execution (the caller checks it is not connected), and
/// its credential with it: the next agent under its name is a new worker with a new one.
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
