//! The store writer: the one task that writes to the database. Writes from every API call
//! and every agent session queue here; the writer runs all that are waiting in one
//! transaction (each in its own savepoint, so one failing write does not undo the others),
//! commits, and only then replies. That is group commit: one fsync for many changes, and
//! nothing is acknowledged before it is durable.

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

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
type Op = Box<
    dyn for<'a> FnOnce(&'a DatabaseTransaction, &'a mut Ids) -> BoxFuture<'a, (bool, Completion)>
        + Send,
>;

/// Most writes grouped in one transaction.
const MAX_GROUP: usize = 512;

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
        let (reply_tx, reply_rx) = oneshot::channel();
        let op: Op = Box::new(move |txn, ids| {
            Box::pin(async move {
                let result = f(txn, ids).await;
                let ok = result.is_ok();
                let completion: Completion = Box::new(move |commit| {
                    let _ = reply_tx.send(commit.and(result));
                });
                (ok, completion)
            })
        });
        self.tx.send(op).await.map_err(|_| StoreError::Closed)?;
        reply_rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(db: DatabaseConnection, mut ids: Ids, mut rx: mpsc::Receiver<Op>) {
    let mut ops = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut ops, MAX_GROUP).await > 0 {
        let completions = match run_group(&db, &mut ids, ops.drain(..)).await {
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
}

type GroupResult = Result<Vec<Completion>, (Vec<Completion>, DbErr)>;

async fn run_group(
    db: &DatabaseConnection,
    ids: &mut Ids,
    ops: impl Iterator<Item = Op>,
) -> GroupResult {
    let mut completions = Vec::new();
    let txn = match db.begin().await {
        Ok(txn) => txn,
        Err(err) => {
            // Still run nothing, but answer everyone.
            let completions = ops
                .map(|op| -> Completion {
                    drop(op);
                    Box::new(|_| {})
                })
                .collect();
            return Err((completions, err));
        }
    };
    for op in ops {
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
