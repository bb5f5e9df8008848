//! Many statements, one round trip. sqlx runs SQLite on a thread of its own, so every
//! statement costs two context switches; on the hot paths (dispatch, agent updates) the
//! statements that need no answer are rendered with their values inlined by sea-query
//! (which escapes them) and sent together.

use sea_orm::sea_query::{PostgresQueryBuilder, QueryStatementWriter, SqliteQueryBuilder};
use sea_orm::{ConnectionTrait, DbBackend, DbErr};

/// Most bytes of SQL sent in one call. SQLite copies the rest of a multi-statement string
/// each time it compiles one statement of it (the string is not NUL-terminated), so one
/// string holding a whole group costs time quadratic in its size: a group of 512 agent
/// messages spent a fifth of scitqd's CPU in that copy. Calls of at most this size keep
/// the copy small and the round trips few.
pub const CHUNK_BYTES: usize = 16 << 10;

/// Rendered statements, cut at statement boundaries into strings of about
/// [`CHUNK_BYTES`] (a single longer statement stays whole).
#[derive(Debug, Default)]
pub struct Script {
    chunks: Vec<String>,
}

impl Script {
    fn push(&mut self, statements: &str) {
        match self.chunks.last_mut() {
            Some(last) if last.len() + statements.len() <= CHUNK_BYTES => last.push_str(statements),
            _ => self.chunks.push(statements.to_owned()),
        }
    }

    /// Appends `other`'s statements after these.
    pub fn append(&mut self, other: Script) {
        for chunk in other.chunks {
            self.push(&chunk);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Runs the statements in order, one call per chunk. On a multi-connection pool the
    /// caller must hold a transaction (or a single connection) so that all run on one.
    pub async fn run(self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        for chunk in self.chunks {
            db.execute_unprepared(&chunk).await?;
        }
        Ok(())
    }

    /// `BEGIN`, the statements and `COMMIT`, with the first and last folded into the
    /// chunks: one call for a small script.
    pub fn into_transaction(mut self) -> Script {
        match self.chunks.first_mut() {
            Some(first) => first.insert_str(0, "BEGIN;\n"),
            None => self.chunks.push("BEGIN;\n".to_owned()),
        }
        if let Some(last) = self.chunks.last_mut() {
            last.push_str("COMMIT;\n");
        }
        self
    }
}

pub struct StatementBatch {
    backend: DbBackend,
    script: Script,
}

impl StatementBatch {
    pub fn new(backend: DbBackend) -> Self {
        StatementBatch {
            backend,
            script: Script::default(),
        }
    }

    pub fn push(&mut self, statement: &impl QueryStatementWriter) {
        let mut sql = match self.backend {
            DbBackend::Postgres => statement.to_string(PostgresQueryBuilder),
            _ => statement.to_string(SqliteQueryBuilder),
        };
        sql.push_str(";\n");
        self.script.push(&sql);
    }

    /// The statements pushed so far.
    pub fn into_script(self) -> Script {
        self.script
    }

    /// Runs what was pushed, in order.
    pub async fn flush(&mut self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        std::mem::take(&mut self.script).run(db).await
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement};

    use super::*;
    use crate::persistence::writer::{Ids, Writer};

    fn statements(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("INSERT INTO t (id, v) VALUES ({i}, 'value {i}; not a boundary');\n"))
            .collect()
    }

    #[test]
    fn a_script_is_cut_between_statements_into_chunks_of_bounded_size() {
        let all = statements(2000);
        let mut script = Script::default();
        for s in &all {
            script.push(s);
        }
        assert!(script.chunks.len() > 1, "{} chunks", script.chunks.len());
        assert!(script.chunks.iter().all(|c| c.len() <= CHUNK_BYTES));
        assert_eq!(script.chunks.concat(), all.concat());

        let long = "x".repeat(CHUNK_BYTES * 2);
        let mut script = Script::default();
        script.push("short;\n");
        script.push(&long);
        script.push("short;\n");
        assert_eq!(
            script.chunks.len(),
            3,
            "a long statement stays whole, alone"
        );
        assert_eq!(script.chunks[1], long);

        let tx = Script::default().into_transaction();
        assert_eq!(tx.chunks.concat(), "BEGIN;\nCOMMIT;\n");
    }

    /// A group larger than a chunk goes to SQLite in several calls, but commits as one:
    /// all of it, or (when a statement fails) none of it.
    #[tokio::test]
    async fn a_group_of_many_chunks_commits_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::persistence::default_url(dir.path());
        let (readers, writer_db) = crate::persistence::connect(&url).await.unwrap();
        writer_db
            .execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .await
            .unwrap();
        let (writer, _handle) = Writer::spawn(writer_db, Ids::default());
        let script_of = |lines: Vec<String>| {
            let mut script = Script::default();
            for line in &lines {
                script.push(line);
            }
            assert!(script.chunks.len() > 3);
            script
        };
        let count = || async {
            let row = readers
                .query_one_raw(Statement::from_string(
                    readers.get_database_backend(),
                    "SELECT COUNT(*) AS n FROM t",
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        };

        let mut failing = statements(3000);
        failing.push("INSERT INTO t (id, v) VALUES (0, 'duplicate');\n".to_owned());
        let script = script_of(failing);
        let result = writer.execute(move |_| (script, ())).await;
        assert!(result.is_err(), "the duplicate id must fail the group");
        assert_eq!(count().await, 0, "nothing of a failed group stays");

        let script = script_of(statements(3000));
        writer.execute(move |_| (script, ())).await.unwrap();
        assert_eq!(count().await, 3000);
    }
}
