//! The store writer: the one task that writes to the database. Writes from every API call
//! and every agent session queue here; the writer runs all that are waiting in one
//! transaction (each in its own savepoint, so one failing write does not undo the others),
//! commits, and only then replies. That is group commit: one fsync for many changes, and
//! nothing is acknowledged before it is durable.

use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::batch::Script;

/// Ids allocated by the writer. Being the only writer, it can hand out ids without asking
/// the database, the same way on SQLite and PostgreSQL.
#[derive(Debug, Default)]
pub struct Ids {
    pub next_task: i64,
    pub next_execution: i64,
    pub next_worker: i64,
}

impl Ids {
    pub fn task(&mut self) -> i64 {
        self.next_task += 1;
        self.next_task
    }
    pub fn execution(&mut self) -> i64 {
        self.next_execution += 1;
        self.next_execution
    }
    pub fn worker(&mut self) -> i64 {
        self.next_worker += 1;
        self.next_worker
    }
}

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type TxnOp = Box<
    dyn for<'a> FnOnce(&'a DatabaseTransaction, &'a mut Ids) -> BoxFuture<'a, (bool, Completion)>
        + Send,
>;
type SqlOp = Box<dyn FnOnce(&mut Ids) -> (Script, Completion) + Send>;

/// A write: either code that runs in the transaction (and may read), or plain statements
/// that need no answer. A group made only of the latter is sent to the database as one
/// string, `BEGIN` to `COMMIT`: one round trip for many changes.
enum Op {
    Txn(TxnOp),
    Sql(SqlOp),
}

/// Most writes grouped in one transaction.
const MAX_GROUP: usize = 512;

/// A submitted write; resolves to its result once committed.
pub struct Pending<R>(oneshot::Receiver<Result<R, StoreError>>);

impl<R: Send + 'static> std::future::IntoFuture for Pending<R> {
    type Output = Result<R, StoreError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.0.await.map_err(|_| StoreError::Closed)? })
    }
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    /// Starts the writer loop. It ends when every `Writer` handle is dropped, after
    /// committing what was queued.
    pub fn spawn(db: DatabaseConnection, ids: Ids) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let handle = tokio::spawn(run(db, ids, rx));
        (Writer { tx }, handle)
    }

    /// Runs `f` inside the next group transaction and returns its result once committed.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(
                &'a DatabaseTransaction,
                &'a mut Ids,
            ) -> BoxFuture<'a, Result<R, StoreError>>
            + Send
            + 'static,
    {
        self.submit_write(f).await?.await
    }

    /// Queues `f` for the next group transaction; the returned [`Pending`] resolves once it
    /// is committed. Writes from one caller commit in the order they were submitted, so a
    /// caller can keep submitting while earlier writes commit.
    pub async fn submit_write<R, F>(&self, f: F) -> Result<Pending<R>, StoreError>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(
                &'a DatabaseTransaction,
                &'a mut Ids,
            ) -> BoxFuture<'a, Result<R, StoreError>>
            + Send
            + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let op: TxnOp = Box::new(move |txn, ids| {
            Box::pin(async move {
                let result = f(txn, ids).await;
                let ok = result.is_ok();
                let completion: Completion = Box::new(move |commit| {
                    let _ = reply_tx.send(commit.and(result));
                });
                (ok, completion)
            })
        });
        self.tx
            .send(Op::Txn(op))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Pending(reply_rx))
    }

    /// Runs the statements `build` renders (given the id allocator) in the next group
    /// transaction, and returns its value once committed. The statements must not fail
    /// in normal operation (guarded UPDATEs, INSERTs of fresh ids): a failure fails the
    /// whole group.
    pub async fn execute<R, F>(&self, build: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Ids) -> (Script, R) + Send + 'static,
    {
        self.submit_execute(build).await?.await
    }

    /// Like [`Writer::execute`], without waiting for the commit (see [`Writer::submit_write`]).
    pub async fn submit_execute<R, F>(&self, build: F) -> Result<Pending<R>, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Ids) -> (Script, R) + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let op: SqlOp = Box::new(move |ids| {
            let (sql, value) = build(ids);
            let completion: Completion = Box::new(move |commit| {
                let _ = reply_tx.send(commit.map(|()| value));
            });
            (sql, completion)
        });
        self.tx
            .send(Op::Sql(op))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Pending(reply_rx))
    }
}

async fn run(db: DatabaseConnection, mut ids: Ids, mut rx: mpsc::Receiver<Op>) {
    let mut ops = Vec::with_capacity(MAX_GROUP);
    let (mut groups, mut writes) = (0u64, 0u64);
    while rx.recv_many(&mut ops, MAX_GROUP).await > 0 {
        groups += 1;
        writes += ops.len() as u64;
        let metrics = crate::metrics::metrics();
        metrics.commit_group.observe(ops.len() as f64);
        let started = std::time::Instant::now();
        let result = run_group(&db, &mut ids, ops.drain(..)).await;
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        let completions = match result {
            Ok(completions) => completions.into_iter().map(|c| (c, Ok(()))).collect(),
            Err((completions, err)) => {
                tracing::error!(error = %err, "database commit failed");
                completions
                    .into_iter()
                    .map(|c| (c, Err(StoreError::Db(DbErr::Custom(err.to_string())))))
                    .collect::<Vec<_>>()
            }
        };
        for (completion, result) in completions {
            completion(result);
        }
    }
    tracing::info!(transactions = groups, writes, "store writer stopped");
}

type GroupResult = Result<Vec<Completion>, (Vec<Completion>, DbErr)>;

async fn run_group(
    db: &DatabaseConnection,
    ids: &mut Ids,
    ops: std::vec::Drain<'_, Op>,
) -> GroupResult {
    let ops: Vec<Op> = ops.collect();
    if ops.iter().all(|op| matches!(op, Op::Sql(_))) {
        return run_sql_only(db, ids, ops).await;
    }
    if ops.len() == 1 {
        let Some(Op::Txn(op)) = ops.into_iter().next() else {
            unreachable!("a lone op that is not plain SQL")
        };
        return run_alone(db, ids, op).await;
    }
    let savepoints = ops.iter().filter(|op| matches!(op, Op::Txn(_))).count() > 1;
    let mut completions = Vec::new();
    let txn = match db.begin().await {
        Ok(txn) => txn,
        Err(err) => {
            // Still run nothing, but answer everyone.
            drop(ops);
            return Err((Vec::new(), err));
        }
    };
    for op in ops {
        let op = match op {
            Op::Sql(op) => {
                let (script, completion) = op(ids);
                completions.push(completion);
                if let Err(err) = script.run(&txn).await {
                    return Err((completions, err));
                }
                continue;
            }
            Op::Txn(op) => op,
        };
        if !savepoints {
            let (ok, completion) = op(&txn, ids).await;
            completions.push(completion);
            if !ok {
                // The only code op failed: undo it, keep the plain statements.
                let _ = txn.rollback().await;
                return Err((
                    completions,
                    DbErr::Custom("write failed, group rolled back".into()),
                ));
            }
            continue;
        }
        let savepoint = match txn.begin().await {
            Ok(savepoint) => savepoint,
            Err(err) => return Err((completions, err)),
        };
        let (ok, completion) = op(&savepoint, ids).await;
        let end = if ok {
            savepoint.commit().await
        } else {
            savepoint.rollback().await
        };
        completions.push(completion);
        if let Err(err) = end {
            return Err((completions, err));
        }
    }
    match txn.commit().await {
        Ok(()) => Ok(completions),
        Err(err) => Err((completions, err)),
    }
}

/// A lone write needs no savepoint: its transaction is its own.
async fn run_alone(db: &DatabaseConnection, ids: &mut Ids, op: TxnOp) -> GroupResult {
    let txn = match db.begin().await {
        Ok(txn) => txn,
        Err(err) => {
            drop(op);
            return Err((Vec::new(), err));
        }
    };
    let (ok, completion) = op(&txn, ids).await;
    let end = if ok {
        txn.commit().await
    } else {
        txn.rollback().await
    };
    match end {
        Ok(()) => Ok(vec![completion]),
        Err(err) => Err((vec![completion], err)),
    }
}

/// Plain statements only: `BEGIN; …; COMMIT` in one round trip, or a few for a large group
/// (see [`super::batch::CHUNK_BYTES`]). The writer's pool has one connection, so every
/// call of the script runs on it, inside the one transaction.
async fn run_sql_only(db: &DatabaseConnection, ids: &mut Ids, ops: Vec<Op>) -> GroupResult {
    let mut script = Script::default();
    let mut completions = Vec::with_capacity(ops.len());
    for op in ops {
        if let Op::Sql(op) = op {
            let (statements, completion) = op(ids);
            script.append(statements);
            completions.push(completion);
        }
    }
    match script.into_transaction().run(db).await {
        Ok(()) => Ok(completions),
        Err(err) => {
            // The writer has its own connection: leave it clean for the next group.
            let _ = db.execute_unprepared("ROLLBACK").await;
            Err((completions, err))
        }
    }
}
