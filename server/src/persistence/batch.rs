//! Many statements, one round trip. sqlx runs SQLite on a thread of its own, so every
//! statement costs two context switches; on the hot paths (dispatch, agent updates) the
//! statements that need no answer are rendered with their values inlined by sea-query
//! (which escapes them) and sent together.

use sea_orm::sea_query::{PostgresQueryBuilder, QueryStatementWriter, SqliteQueryBuilder};
use sea_orm::{ConnectionTrait, DbBackend, DbErr};

pub struct StatementBatch {
    backend: DbBackend,
    sql: String,
}

impl StatementBatch {
    pub fn new(backend: DbBackend) -> Self {
        StatementBatch {
            backend,
            sql: String::new(),
        }
    }

    pub fn push(&mut self, statement: &impl QueryStatementWriter) {
        let sql = match self.backend {
            DbBackend::Postgres => statement.to_string(PostgresQueryBuilder),
            _ => statement.to_string(SqliteQueryBuilder),
        };
        self.sql.push_str(&sql);
        self.sql.push_str(";\n");
    }

    /// The statements pushed so far, separated by `;`.
    pub fn into_sql(self) -> String {
        self.sql
    }

    /// Runs what was pushed, in order.
    pub async fn flush(&mut self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        if self.sql.is_empty() {
            return Ok(());
        }
        let sql = std::mem::take(&mut self.sql);
        db.execute_unprepared(&sql).await?;
        Ok(())
    }
}
