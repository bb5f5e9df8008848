//! Schema migrations, shared by SQLite and PostgreSQL. Append new migrations; never edit
//! one that has shipped.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Initial),
            Box::new(BatchSuspended),
            Box::new(RunTimeout),
            Box::new(WorkerPaused),
            Box::new(Dependencies),
            Box::new(WorkerDraining),
            Box::new(ExecutionUploaded),
            Box::new(WorkerCredential),
            Box::new(super::enroll_migration::Enrollment),
            Box::new(TaskCounts),
            Box::new(ExecutionInputsSeen),
            Box::new(super::recruit_migration::Recruitment),
        ]
    }
}

struct Initial;

impl MigrationName for Initial {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

fn col(name: &'static str) -> Alias {
    Alias::new(name)
}

fn index(name: &'static str, table: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(col(table));
    for c in cols {
        idx.col(col(c));
    }
    idx.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(col("task"))
                    .col(big_integer("id").primary_key())
                    .col(string("name"))
                    .col(string("batch"))
                    .col(text("command"))
                    .col(integer("shell"))
                    .col(string("container"))
                    .col(text("container_options"))
                    .col(text("inputs"))
                    .col(string("output"))
                    .col(text("resources"))
                    .col(integer("retry"))
                    .col(integer("retry_left"))
                    .col(integer("priority"))
                    .col(string("status"))
                    .col(text("status_reason"))
                    .col(big_integer_null("execution_id"))
                    .col(big_integer_null("worker_id"))
                    .col(integer_null("exit_code"))
                    .col(big_integer("created_at"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("task_batch_id", "task", &["batch", "id"]))
            .await?;
        manager
            .create_index(index("task_status_id", "task", &["status", "id"]))
            .await?;
        manager
            .create_index(index("task_execution", "task", &["execution_id"]))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(col("execution"))
                    .col(big_integer("id").primary_key())
                    .col(big_integer("task_id"))
                    .col(big_integer("worker_id"))
                    .col(string("state"))
                    .col(text("command"))
                    .col(integer("shell"))
                    .col(string("container"))
                    .col(text("container_options"))
                    .col(text("inputs"))
                    .col(string("output"))
                    .col(text("resources"))
                    .col(integer_null("exit_code"))
                    .col(string("failure"))
                    .col(text("message"))
                    .col(big_integer("assigned_at"))
                    .col(big_integer_null("started_at"))
                    .col(big_integer_null("finished_at"))
                    .col(big_integer("stdout_bytes"))
                    .col(big_integer("stderr_bytes"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("execution_task", "execution", &["task_id", "id"]))
            .await?;
        manager
            .create_index(index(
                "execution_worker_state",
                "execution",
                &["worker_id", "state"],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(col("log_chunk"))
                    .col(big_pk_auto("id"))
                    .col(big_integer("execution_id"))
                    .col(big_integer("task_id"))
                    .col(integer("stream"))
                    .col(big_integer("offset"))
                    .col(blob("data"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("log_chunk_task", "log_chunk", &["task_id", "id"]))
            .await?;
        manager
            .create_index(index(
                "log_chunk_execution",
                "log_chunk",
                &["execution_id", "id"],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(col("worker"))
                    .col(big_integer("id").primary_key())
                    .col(string_uniq("name"))
                    .col(string("host"))
                    .col(integer("concurrency"))
                    .col(integer("prefetch"))
                    .col(string("batch"))
                    .col(string("status"))
                    .col(big_integer("last_contact"))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(col("batch"))
                    .col(string("name").primary_key())
                    .col(boolean("stopped"))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(col("api_token"))
                    .col(big_pk_auto("id"))
                    .col(string("role"))
                    .col(string_uniq("hash"))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

/// Batches can be suspended (running tasks frozen), not only stopped.
struct BatchSuspended;

impl MigrationName for BatchSuspended {
    fn name(&self) -> &str {
        "m0002_batch_suspended"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for BatchSuspended {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(col("batch"))
                    .add_column(boolean("suspended").default(false))
                    .to_owned(),
            )
            .await
    }
}

/// Tasks (and the executions that freeze them) get a run time limit.
struct RunTimeout;

impl MigrationName for RunTimeout {
    fn name(&self) -> &str {
        "m0003_run_timeout"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RunTimeout {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["task", "execution"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(col(table))
                        .add_column(integer("run_timeout_s").default(0))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Workers can be paused by an operator.
struct WorkerPaused;

impl MigrationName for WorkerPaused {
    fn name(&self) -> &str {
        "m0004_worker_paused"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for WorkerPaused {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(col("worker"))
                    .add_column(boolean("paused").default(false))
                    .to_owned(),
            )
            .await
    }
}

/// Task dependencies: `task_id` waits for `depends_on`.
struct Dependencies;

impl MigrationName for Dependencies {
    fn name(&self) -> &str {
        "m0005_dependencies"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Dependencies {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(col("task_dependency"))
                    .col(big_integer("task_id"))
                    .col(big_integer("depends_on"))
                    .primary_key(Index::create().col(col("task_id")).col(col("depends_on")))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "task_dependency_depends_on",
                "task_dependency",
                &["depends_on"],
            ))
            .await
    }
}

/// Workers can be drained by an operator.
struct WorkerDraining;

impl MigrationName for WorkerDraining {
    fn name(&self) -> &str {
        "m0006_worker_draining"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for WorkerDraining {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(col("worker"))
                    .add_column(boolean("draining").default(false))
                    .to_owned(),
            )
            .await
    }
}

/// Executions list the files they uploaded.
struct ExecutionUploaded;

impl MigrationName for ExecutionUploaded {
    fn name(&self) -> &str {
        "m0007_execution_uploaded"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ExecutionUploaded {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(col("execution"))
                    .add_column(text("uploaded").default("[]"))
                    .to_owned(),
            )
            .await
    }
}

/// Each worker's own credential (SHA-256 of it), issued at its first Hello; NULL until then.
struct WorkerCredential;

impl MigrationName for WorkerCredential {
    fn name(&self) -> &str {
        "m0008_worker_credential"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for WorkerCredential {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(col("worker"))
                    .add_column(string_null("credential_hash"))
                    .to_owned(),
            )
            .await
    }
}

/// Tasks by batch and status, kept by triggers in the transaction that changes a task, so
/// that `/metrics` reads a few rows instead of counting a million tasks at every scrape.
/// Rows that fall to 0 stay (a batch's `pending 0` is worth showing); a deleted batch's
/// rows are all 0.
struct TaskCounts;

impl MigrationName for TaskCounts {
    fn name(&self) -> &str {
        "m0013_task_counts"
    }
}

const TASK_COUNTS_SQLITE: &str = "
CREATE TRIGGER task_count_insert AFTER INSERT ON task BEGIN
  INSERT OR IGNORE INTO task_count (batch, status, n) VALUES (NEW.batch, NEW.status, 0);
  UPDATE task_count SET n = n + 1 WHERE batch = NEW.batch AND status = NEW.status;
END;
CREATE TRIGGER task_count_delete AFTER DELETE ON task BEGIN
  UPDATE task_count SET n = n - 1 WHERE batch = OLD.batch AND status = OLD.status;
END;
CREATE TRIGGER task_count_update AFTER UPDATE OF batch, status ON task
WHEN OLD.batch <> NEW.batch OR OLD.status <> NEW.status BEGIN
  UPDATE task_count SET n = n - 1 WHERE batch = OLD.batch AND status = OLD.status;
  INSERT OR IGNORE INTO task_count (batch, status, n) VALUES (NEW.batch, NEW.status, 0);
  UPDATE task_count SET n = n + 1 WHERE batch = NEW.batch AND status = NEW.status;
END;
";

const TASK_COUNTS_POSTGRES: &str = "
CREATE FUNCTION task_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE task_count SET n = n - 1 WHERE batch = OLD.batch AND status = OLD.status;
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    INSERT INTO task_count (batch, status, n) VALUES (NEW.batch, NEW.status, 1)
      ON CONFLICT (batch, status) DO UPDATE SET n = task_count.n + 1;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER task_count_insert_delete AFTER INSERT OR DELETE ON task
  FOR EACH ROW EXECUTE FUNCTION task_count_change();
CREATE TRIGGER task_count_update AFTER UPDATE OF batch, status ON task
  FOR EACH ROW WHEN (OLD.batch IS DISTINCT FROM NEW.batch OR OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION task_count_change();
";

#[async_trait::async_trait]
impl MigrationTrait for TaskCounts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(col("task_count"))
                    .col(string("batch"))
                    .col(string("status"))
                    .col(big_integer("n"))
                    .primary_key(Index::create().col(col("batch")).col(col("status")))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO task_count (batch, status, n) \
             SELECT batch, status, COUNT(*) FROM task GROUP BY batch, status",
        )
        .await?;
        let triggers = match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => TASK_COUNTS_POSTGRES,
            _ => TASK_COUNTS_SQLITE,
        };
        db.execute_unprepared(triggers).await?;
        Ok(())
    }
}

/// Executions record what their inputs held when staged (a resume compares it, issue 16).
struct ExecutionInputsSeen;

impl MigrationName for ExecutionInputsSeen {
    fn name(&self) -> &str {
        "m0015_execution_inputs_seen"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ExecutionInputsSeen {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(col("execution"))
                    .add_column(text("inputs_seen").default("[]"))
                    .to_owned(),
            )
            .await
    }
}
