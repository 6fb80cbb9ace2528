//! Group commit of webhook deliveries: concurrent [`Store::insert_delivery`] calls are written
//! together, in one transaction (one WAL sync on SQLite, one commit on PostgreSQL), and each
//! caller is answered only after that commit. An acknowledged delivery is therefore exactly as
//! durable as with one transaction per delivery; the disk syncs are shared.
//!
//! The writer takes whatever is waiting (up to [`MAX_BATCH`]) as soon as the previous
//! transaction ends: it never waits to fill a batch, so a lone delivery is written at once
//! and batches grow only under load. If a batch's transaction fails, its deliveries are
//! retried one per transaction, so one bad delivery cannot fail the others. If the writer is
//! gone (its runtime shut down), callers write directly.
//!
//! [`Store::insert_delivery`]: super::Store::insert_delivery

use refsync_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

use super::db::{Db, Tx, args, format_time};
use super::{InsertOutcome, NewDelivery};

/// The most deliveries one transaction writes.
pub(crate) const MAX_BATCH: usize = 256;
/// Deliveries waiting for the writer before callers wait to hand theirs over.
const QUEUE: usize = 4096;

type Pending = (NewDelivery, oneshot::Sender<Result<InsertOutcome>>);

/// The handle of the writer task.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    tx: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the writer on the current tokio runtime.
    pub(crate) fn start(db: Db) -> GroupCommit {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(db, rx));
        GroupCommit { tx }
    }

    /// Inserts through the writer; `None` when the writer is gone (write directly then).
    pub(crate) async fn insert(&self, d: &NewDelivery) -> Option<Result<InsertOutcome>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((d.clone(), reply)).await.ok()?;
        answer.await.ok()
    }
}

async fn writer(db: Db, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match insert_batch(&db, &batch).await {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some((_, reply)) = batch.pop() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e.message(), deliveries = batch.len(), "group commit failed; writing one by one");
                for (d, reply) in batch.drain(..) {
                    let _ = reply.send(insert_one(&db, &d).await);
                }
            }
        }
    }
}

async fn insert_batch(db: &Db, batch: &[Pending]) -> Result<Vec<InsertOutcome>> {
    let mut tx = db.begin().await?;
    let mut out = Vec::with_capacity(batch.len());
    for (d, _) in batch {
        out.push(insert_in(&mut tx, d).await?);
    }
    tx.commit().await?;
    Ok(out)
}

/// One delivery in its own transaction.
pub(crate) async fn insert_one(db: &Db, d: &NewDelivery) -> Result<InsertOutcome> {
    let mut tx = db.begin().await?;
    let outcome = insert_in(&mut tx, d).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Inserts `d` unless (instance, dedup key) is stored, in `tx`.
async fn insert_in(tx: &mut Tx, d: &NewDelivery) -> Result<InsertOutcome> {
    let received = format_time(d.received_at);
    let inserted = tx
        .fetch_optional(
            "INSERT INTO deliveries (instance, dedup_key, body, headers, received_at, status, attempts, next_attempt_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'received', 0, $5, $5) \
             ON CONFLICT (instance, dedup_key) DO NOTHING RETURNING id",
            &args![
                &d.instance,
                &d.dedup_key,
                d.body.as_slice(),
                d.headers.to_string(),
                received
            ],
        )
        .await?;
    if let Some(row) = inserted {
        return Ok(InsertOutcome::Inserted(row.int("id")?));
    }
    let row = tx
        .fetch_optional(
            "SELECT id FROM deliveries WHERE instance = $1 AND dedup_key = $2",
            &args![&d.instance, &d.dedup_key],
        )
        .await?
        .ok_or_else(|| Error::unexpected("engine store: a conflicting delivery vanished"))?;
    Ok(InsertOutcome::Duplicate(row.int("id")?))
}
