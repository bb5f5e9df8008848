//! Enrollment tokens (`core::enroll`): issued for an instance, used once by the Hello that
//! binds the worker's credential, in that Hello's transaction.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::{Store, StoreError, now_ms};
use crate::core::enroll::{Token, Verdict};
use crate::core::ids::WorkerId;

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "enrollment")]
    pub struct Model {
        /// Hex SHA-256 of the token.
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash: String,
        /// The instance (worker name) it is bound to.
        pub instance: String,
        pub created_at: i64,
        pub expires_at: i64,
        /// When the Hello that enrolled with it committed.
        pub used_at: Option<i64>,
        /// The worker it enrolled.
        pub worker_id: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity};

/// Used and expired tokens are kept this long (the error of a replay names when it was
/// used), then dropped when another is issued.
const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

/// Stores a new token's hash.
pub async fn insert(
    store: &Store,
    hash: String,
    instance: String,
    expires_at: i64,
) -> Result<(), StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let now = now_ms();
                Entity::delete_many()
                    .filter(Column::ExpiresAt.lt(now - KEEP_MS))
                    .exec(txn)
                    .await?;
                Entity::insert(entity::ActiveModel {
                    hash: Set(hash),
                    instance: Set(instance),
                    created_at: Set(now),
                    expires_at: Set(expires_at),
                    used_at: Set(None),
                    worker_id: Set(None),
                })
                .exec_without_returning(txn)
                .await?;
                Ok(())
            })
        })
        .await
}

/// The token of that hash, if scitqd issued it.
pub async fn find(db: &impl ConnectionTrait, hash: &str) -> Result<Option<Token>, StoreError> {
    Ok(Entity::find_by_id(hash.to_owned())
        .one(db)
        .await?
        .map(|row| Token {
            instance: row.instance,
            expires_at: row.expires_at,
            used_at: row.used_at,
        }))
}

/// Drops the unused tokens of an instance (it was destroyed, or will get a new one).
/// Returns how many.
pub async fn revoke(store: &Store, instance: String) -> Result<u64, StoreError> {
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                let done = Entity::delete_many()
                    .filter(Column::Instance.eq(instance))
                    .filter(Column::UsedAt.is_null())
                    .exec(txn)
                    .await?;
                Ok(done.rows_affected)
            })
        })
        .await
}

/// Marks a token used by a worker, unless another Hello used it first (then the caller's
/// transaction fails with the refusal).
pub async fn mark_used(
    txn: &impl ConnectionTrait,
    hash: &str,
    worker: WorkerId,
    token: &Token,
) -> Result<(), StoreError> {
    let now = now_ms();
    let done = Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(now))
        .col_expr(Column::WorkerId, Expr::value(worker.0))
        .filter(Column::Hash.eq(hash))
        .filter(Column::UsedAt.is_null())
        .exec(txn)
        .await?;
    if done.rows_affected == 1 {
        return Ok(());
    }
    // The writer runs one transaction at a time, so the check in this one saw it unused;
    // guarded all the same.
    Err(crate::core::enroll::Refused::Used {
        instance: token.instance.clone(),
        at: crate::core::enroll::rfc3339(now),
    }
    .into())
}

/// Checks a token in a Hello's transaction: the stored row decides (`core::enroll::verify`).
pub async fn check(
    txn: &impl ConnectionTrait,
    hash: &str,
    name: &str,
    has_credential: bool,
    credential_bound: bool,
) -> Result<(Token, Verdict), StoreError> {
    let token = find(txn, hash).await?.ok_or(StoreError::UnknownToken)?;
    let verdict =
        crate::core::enroll::verify(&token, now_ms(), name, has_credential, credential_bound)?;
    Ok((token, verdict))
}
