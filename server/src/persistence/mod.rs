//! Persistence with sea-orm: SQLite (embedded default, WAL) or PostgreSQL, the same code
//! and the same migrations. Reads go straight to the connection pool; every write goes
//! through the [`writer::Writer`] (group commit).

pub mod batch;
pub mod counts;
pub mod deps;
pub mod enroll;
mod enroll_migration;
mod entities;
pub mod executions;
pub mod migration;
pub mod overview;
pub mod progress;
pub mod recovery;
pub mod recruit;
mod recruit_migration;
pub mod removal;
pub mod resume;
mod rows;
pub mod steering;
pub mod tasks;
pub mod tokens;
pub mod workers;
pub mod writer;

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement,
};
use sea_orm_migration::MigratorTrait;

use crate::core::inputs_seen::{InputSeen, SeenFile};

pub use writer::{Ids, Writer};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("the store is shutting down")]
    Closed,
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Illegal(#[from] crate::core::state::IllegalTransition),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Refused(#[from] crate::core::steering::Refused),
    #[error(transparent)]
    Credential(#[from] crate::core::credential::Refused),
    #[error(transparent)]
    Enrollment(#[from] crate::core::enroll::Refused),
    /// A bearer token that is no API token, no enrollment token and no worker's credential.
    #[error("bad token: rejected by this server")]
    UnknownToken,
    #[error("{what} {id}: stored {field} {value:?} is not one this server writes")]
    Corrupt {
        what: &'static str,
        id: String,
        field: &'static str,
        value: String,
    },
}

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The database URL used when none is configured: SQLite in the data dir.
pub fn default_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("scitq.db").display())
}

/// Connects, applies pending migrations, and returns a pool for reads and the single
/// connection of the store writer.
pub async fn connect(url: &str) -> Result<(DatabaseConnection, DatabaseConnection), DbErr> {
    // One connection alone switches SQLite to WAL (it needs the database to itself, and
    // connections racing for that get "database is locked") and migrates; the mode stays.
    let bootstrap = Database::connect(options(url, 1, true)).await?;
    migration::Migrator::up(&bootstrap, None).await?;
    bootstrap.close().await?;
    let readers = Database::connect(options(url, 6, false)).await?;
    let writer = Database::connect(options(url, 1, false)).await?;
    Ok((readers, writer))
}

fn options(url: &str, connections: u32, set_wal: bool) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .max_connections(connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        // The writer's one connection must never be recycled under it.
        .idle_timeout(None)
        .max_lifetime(None);
    if url.starts_with("sqlite:") {
        // synchronous=FULL: a commit is on disk before it is acknowledged.
        options.map_sqlx_sqlite_opts(move |opts| {
            let opts = opts
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(false);
            if set_wal {
                opts.journal_mode(SqliteJournalMode::Wal)
            } else {
                opts
            }
        });
    }
    options
}

#[derive(FromQueryResult)]
struct MaxId {
    max_id: Option<i64>,
}

async fn max_id(db: &DatabaseConnection, table: &str) -> Result<i64, DbErr> {
    let sql = format!("SELECT MAX(id) AS max_id FROM {table}");
    let row = MaxId::find_by_statement(Statement::from_string(db.get_database_backend(), sql))
        .one(db)
        .await?;
    Ok(row.and_then(|r| r.max_id).unwrap_or(0))
}

/// The highest ids in use, so the writer continues after them.
pub async fn load_ids(db: &DatabaseConnection) -> Result<Ids, DbErr> {
    Ok(Ids {
        next_task: max_id(db, "task").await?,
        next_execution: max_id(db, "execution").await?,
        next_worker: max_id(db, "worker").await?,
    })
}

/// Reads plus the writer: what every component holds to reach the database.
#[derive(Clone)]
pub struct Store {
    pub db: DatabaseConnection,
    pub writer: Writer,
    /// Output kept per execution and stream: half from the start, half from the end.
    pub output_cap: u64,
    /// Set once any task has dependencies: successes then promote waiting dependants.
    pub has_dependencies: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }
}

/// Encodes a list of strings for a text column.
pub fn to_json_list(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

/// Decodes a text column written by [`to_json_list`].
pub fn from_json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Uploaded files as stored in `execution.uploaded`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredUpload {
    uri: String,
    size: u64,
}

pub fn uploaded_to_json(files: &[crate::core::agent::Uploaded]) -> String {
    let stored: Vec<StoredUpload> = files
        .iter()
        .map(|f| StoredUpload {
            uri: f.uri.clone(),
            size: f.size,
        })
        .collect();
    serde_json::to_string(&stored).expect("plain structs serialize")
}

/// What an input held, as stored in `execution.inputs_seen`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredInput {
    uri: String,
    files: Vec<StoredFile>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredFile {
    path: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modified: Option<String>,
}

pub fn inputs_seen_to_json(inputs: &[InputSeen]) -> String {
    let stored: Vec<StoredInput> = inputs
        .iter()
        .map(|i| StoredInput {
            uri: i.uri.clone(),
            files: i
                .files
                .iter()
                .map(|f| StoredFile {
                    path: f.path.clone(),
                    size: f.size,
                    etag: f.etag.clone(),
                    modified: f.modified.clone(),
                })
                .collect(),
        })
        .collect();
    serde_json::to_string(&stored).expect("plain structs serialize")
}

pub fn inputs_seen_from_json(text: &str) -> Vec<InputSeen> {
    serde_json::from_str::<Vec<StoredInput>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(|i| InputSeen {
            uri: i.uri,
            files: i
                .files
                .into_iter()
                .map(|f| SeenFile {
                    path: f.path,
                    size: f.size,
                    etag: f.etag,
                    modified: f.modified,
                })
                .collect(),
        })
        .collect()
}

pub fn uploaded_from_json(text: &str) -> Vec<crate::core::agent::Uploaded> {
    serde_json::from_str::<Vec<StoredUpload>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(|f| crate::core::agent::Uploaded {
            uri: f.uri,
            size: f.size,
        })
        .collect()
}
