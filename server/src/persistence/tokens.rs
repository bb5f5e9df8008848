//! API tokens, stored as SHA-256 hashes with their role (`crate::auth` decides what a role
//! may do).

use sea_orm::{ActiveValue::Set, EntityTrait};

use super::entities::api_token;
use super::{Store, StoreError, now_ms};

/// A stored token: its hash and its role as written (`admin` or `worker`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub hash: String,
    pub role: String,
}

/// Every token.
pub async fn all(store: &Store) -> Result<Vec<StoredToken>, StoreError> {
    Ok(api_token::Entity::find()
        .all(&store.db)
        .await?
        .into_iter()
        .map(|row| StoredToken {
            hash: row.hash,
            role: row.role,
        })
        .collect())
}

/// Stores new tokens in one transaction.
pub async fn insert(store: &Store, tokens: Vec<StoredToken>) -> Result<(), StoreError> {
    let now = now_ms();
    let rows: Vec<api_token::ActiveModel> = tokens
        .into_iter()
        .map(|token| api_token::ActiveModel {
            role: Set(token.role),
            hash: Set(token.hash),
            created_at: Set(now),
            ..Default::default()
        })
        .collect();
    store
        .writer
        .write(move |txn, _ids| {
            Box::pin(async move {
                api_token::Entity::insert_many(rows)
                    .exec_without_returning(txn)
                    .await?;
                Ok(())
            })
        })
        .await
}
