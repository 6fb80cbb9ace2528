//! [`SqlStore`]: the [`Store`] over SQLite or PostgreSQL. One SQL text serves both backends
//! except for the row locks of claiming (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite
//! serializes the `BEGIN IMMEDIATE` write transactions).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::{Error, Result};

use super::db::{Arg, Backend, Db, Row, args, format_time};
use super::group::{GroupCommit, insert_one};
use super::{
    CrmObject, Delivery, DeliveryFilter, DeliveryStats, DeliveryStatus, EnqueueOutcome,
    FailOutcome, InsertOutcome, Job, JobFilter, JobState, JobStats, Link, NewDelivery, NewJob,
    Store, TimelineEntry,
};

const DELIVERY_COLUMNS: &str = "id, instance, dedup_key, body, headers, received_at, status, attempts, next_attempt_at, lease_owner, lease_until, last_error, updated_at";
const JOB_COLUMNS: &str = "id, kind, idempotency_key, payload, state, attempts, created_at, next_attempt_at, lease_owner, lease_until, last_error, completed_at";

/// The [`Store`] over a SQLite or PostgreSQL pool (see [`open_store`](super::open_store)).
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: Db,
    /// The group-commit writer of deliveries (see the `group` module).
    inserts: GroupCommit,
}

impl SqlStore {
    /// Opens the store at `url` (creating a missing SQLite file) and applies the migrations.
    ///
    /// # Errors
    /// As [`open_store`](super::open_store).
    pub async fn open(url: &str) -> Result<SqlStore> {
        let db = Db::open(url, true).await?;
        Ok(SqlStore {
            inserts: GroupCommit::start(db.clone()),
            db,
        })
    }

    fn lock_clause(&self) -> &'static str {
        match self.db.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

fn until(now: DateTime<Utc>, lease: Duration) -> Result<String> {
    let lease = chrono::Duration::from_std(lease)
        .map_err(|e| Error::validation(format!("lease too long: {e}")))?;
    Ok(format_time(now + lease))
}

fn json(row: &Row, col: &str) -> Result<serde_json::Value> {
    let text = row.text(col)?;
    serde_json::from_str(&text)
        .map_err(|e| Error::unexpected(format!("engine store: column {col} is not JSON: {e}")))
}

fn delivery_status(s: &str) -> Result<DeliveryStatus> {
    match s {
        "received" => Ok(DeliveryStatus::Received),
        "processed" => Ok(DeliveryStatus::Processed),
        "dead" => Ok(DeliveryStatus::Dead),
        other => Err(Error::unexpected(format!(
            "engine store: unknown delivery status {other:?}"
        ))),
    }
}

fn job_state(s: &str) -> Result<JobState> {
    match s {
        "pending" => Ok(JobState::Pending),
        "leased" => Ok(JobState::Leased),
        "done" => Ok(JobState::Done),
        "dead" => Ok(JobState::Dead),
        other => Err(Error::unexpected(format!(
            "engine store: unknown job state {other:?}"
        ))),
    }
}

fn delivery(row: &Row) -> Result<Delivery> {
    Ok(Delivery {
        id: row.int("id")?,
        instance: row.text("instance")?,
        dedup_key: row.text("dedup_key")?,
        body: row.bytes("body")?,
        headers: json(row, "headers")?,
        received_at: row.time("received_at")?,
        status: delivery_status(&row.text("status")?)?,
        attempts: row.int("attempts")?,
        next_attempt_at: row.time("next_attempt_at")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_until: row.opt_time("lease_until")?,
        last_error: row.opt_text("last_error")?,
        updated_at: row.time("updated_at")?,
    })
}

fn job(row: &Row) -> Result<Job> {
    Ok(Job {
        id: row.int("id")?,
        kind: row.text("kind")?,
        idempotency_key: row.text("idempotency_key")?,
        payload: json(row, "payload")?,
        state: job_state(&row.text("state")?)?,
        attempts: row.int("attempts")?,
        created_at: row.time("created_at")?,
        next_attempt_at: row.time("next_attempt_at")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_until: row.opt_time("lease_until")?,
        last_error: row.opt_text("last_error")?,
        completed_at: row.opt_time("completed_at")?,
    })
}

fn link(row: &Row) -> Result<Link> {
    Ok(Link {
        referral_key: row.text("referral_key")?,
        object: CrmObject {
            instance: row.text("instance")?,
            kind: row.text("object_kind")?,
            id: row.text("object_id")?,
        },
        created_at: row.time("created_at")?,
    })
}

/// A `WHERE` clause under construction: conditions and their arguments (`$N` numbered from
/// `first`).
struct Where {
    conditions: Vec<String>,
    args: Vec<Arg>,
}

impl Where {
    fn new(args: Vec<Arg>) -> Where {
        Where {
            conditions: Vec::new(),
            args,
        }
    }

    /// Adds `column op $N`.
    fn push(&mut self, column: &str, op: &str, arg: impl Into<Arg>) {
        self.args.push(arg.into());
        self.conditions
            .push(format!("{column} {op} ${}", self.args.len()));
    }

    fn sql(&self) -> String {
        if self.conditions.is_empty() {
            "TRUE".to_owned()
        } else {
            self.conditions.join(" AND ")
        }
    }

    fn limit(&mut self, limit: Option<i64>) -> String {
        match limit {
            Some(n) => {
                self.args.push(Arg::Int(n.max(0)));
                format!(" LIMIT ${}", self.args.len())
            }
            None => String::new(),
        }
    }
}

fn delivery_where(filter: &DeliveryFilter, args: Vec<Arg>) -> Where {
    let mut w = Where::new(args);
    if let Some(i) = &filter.instance {
        w.push("instance", "=", i);
    }
    if let Some(s) = filter.status {
        w.push("status", "=", s.as_str());
    }
    if let Some(t) = filter.received_from {
        w.push("received_at", ">=", format_time(t));
    }
    if let Some(t) = filter.received_before {
        w.push("received_at", "<", format_time(t));
    }
    if let Some(id) = filter.after_id {
        w.push("id", ">", id);
    }
    w
}

fn job_where(filter: &JobFilter, args: Vec<Arg>, with_state: bool) -> Where {
    let mut w = Where::new(args);
    if let Some(k) = &filter.kind {
        w.push("kind", "=", k);
    }
    if let (Some(s), true) = (filter.state, with_state) {
        w.push("state", "=", s.as_str());
    }
    if let Some(id) = filter.after_id {
        w.push("id", ">", id);
    }
    w
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.db.backend()
    }

    async fn insert_delivery(&self, d: &NewDelivery) -> Result<InsertOutcome> {
        match self.inserts.insert(d).await {
            Some(outcome) => outcome,
            None => insert_one(&self.db, d).await,
        }
    }

    async fn get_delivery(&self, id: i64) -> Result<Option<Delivery>> {
        self.db
            .fetch_optional(
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"),
                &args![id],
            )
            .await?
            .as_ref()
            .map(delivery)
            .transpose()
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let mut w = delivery_where(filter, Vec::new());
        let limit = w.limit(filter.limit);
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {} ORDER BY id{limit}",
            w.sql()
        );
        self.db
            .fetch_all(&sql, &w.args)
            .await?
            .iter()
            .map(delivery)
            .collect()
    }

    async fn claim_deliveries(
        &self,
        worker_id: &str,
        now: DateTime<Utc>,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Delivery>> {
        let sql = format!(
            "UPDATE deliveries SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM deliveries WHERE status = 'received' AND next_attempt_at <= $3 \
             AND (lease_until IS NULL OR lease_until <= $3) ORDER BY next_attempt_at, id LIMIT $4{}) \
             RETURNING {DELIVERY_COLUMNS}",
            self.lock_clause()
        );
        let mut tx = self.db.begin().await?;
        let rows = tx
            .fetch_all(
                &sql,
                &args![
                    worker_id,
                    until(now, lease)?,
                    format_time(now),
                    limit.max(0)
                ],
            )
            .await?;
        tx.commit().await?;
        let mut out = rows.iter().map(delivery).collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|d| (d.next_attempt_at, d.id));
        Ok(out)
    }

    async fn mark_delivery_processed(&self, id: i64, now: DateTime<Utc>) -> Result<bool> {
        let n = self
            .db
            .execute(
                "UPDATE deliveries SET status = 'processed', lease_owner = NULL, lease_until = NULL, updated_at = $2 \
                 WHERE id = $1 AND status = 'received'",
                &args![id, format_time(now)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn retry_delivery(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let n = self
            .db
            .execute(
                "UPDATE deliveries SET next_attempt_at = $2, last_error = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4 \
                 WHERE id = $1 AND status = 'received'",
                &args![id, format_time(next_attempt_at), error, format_time(now)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn mark_delivery_dead(&self, id: i64, reason: &str, now: DateTime<Utc>) -> Result<bool> {
        let n = self
            .db
            .execute(
                "UPDATE deliveries SET status = 'dead', last_error = $2, lease_owner = NULL, lease_until = NULL, updated_at = $3 \
                 WHERE id = $1",
                &args![id, reason, format_time(now)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn requeue_delivery(&self, id: i64, now: DateTime<Utc>) -> Result<bool> {
        let now = format_time(now);
        let n = self
            .db
            .execute(
                "UPDATE deliveries SET status = 'received', next_attempt_at = $2, lease_owner = NULL, lease_until = NULL, updated_at = $2 \
                 WHERE id = $1",
                &args![id, now],
            )
            .await?;
        Ok(n > 0)
    }

    async fn requeue_deliveries(&self, filter: &DeliveryFilter, now: DateTime<Utc>) -> Result<u64> {
        let w = delivery_where(filter, vec![Arg::Text(format_time(now))]);
        let sql = format!(
            "UPDATE deliveries SET status = 'received', next_attempt_at = $1, lease_owner = NULL, lease_until = NULL, updated_at = $1 \
             WHERE {}",
            w.sql()
        );
        let mut tx = self.db.begin().await?;
        let n = tx.execute(&sql, &w.args).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn delivery_stats(&self) -> Result<DeliveryStats> {
        let mut stats = DeliveryStats::default();
        for row in self
            .db
            .fetch_all(
                "SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status",
                &[],
            )
            .await?
        {
            let n = row.int("n")?;
            match delivery_status(&row.text("status")?)? {
                DeliveryStatus::Received => stats.received = n,
                DeliveryStatus::Processed => stats.processed = n,
                DeliveryStatus::Dead => stats.dead = n,
            }
        }
        Ok(stats)
    }

    async fn enqueue(&self, j: &NewJob) -> Result<EnqueueOutcome> {
        let at = format_time(j.run_at);
        let inserted = self
            .db
            .fetch_optional(
                &format!(
                    "INSERT INTO jobs (kind, idempotency_key, payload, state, attempts, created_at, age_base_at, next_attempt_at) \
                     VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4) \
                     ON CONFLICT (idempotency_key) DO NOTHING RETURNING {JOB_COLUMNS}"
                ),
                &args![&j.kind, &j.idempotency_key, j.payload.to_string(), at],
            )
            .await?;
        if let Some(row) = inserted {
            return Ok(EnqueueOutcome::Created(job(&row)?));
        }
        let existing = self
            .get_job_by_key(&j.idempotency_key)
            .await?
            .ok_or_else(|| {
                Error::unexpected(format!(
                    "engine store: job {:?} neither inserted nor found",
                    j.idempotency_key
                ))
            })?;
        Ok(EnqueueOutcome::Existing(existing))
    }

    async fn get_job(&self, id: i64) -> Result<Option<Job>> {
        self.db
            .fetch_optional(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
                &args![id],
            )
            .await?
            .as_ref()
            .map(job)
            .transpose()
    }

    async fn get_job_by_key(&self, idempotency_key: &str) -> Result<Option<Job>> {
        self.db
            .fetch_optional(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1"),
                &args![idempotency_key],
            )
            .await?
            .as_ref()
            .map(job)
            .transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let mut w = job_where(filter, Vec::new(), true);
        let limit = w.limit(filter.limit);
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE {} ORDER BY id{limit}",
            w.sql()
        );
        self.db
            .fetch_all(&sql, &w.args)
            .await?
            .iter()
            .map(job)
            .collect()
    }

    async fn claim(
        &self,
        worker_id: &str,
        kinds: &[&str],
        now: DateTime<Utc>,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Job>> {
        let mut args = args![
            worker_id,
            until(now, lease)?,
            format_time(now),
            limit.max(0)
        ]
        .to_vec();
        let kinds_sql = if kinds.is_empty() {
            String::new()
        } else {
            let mut params = Vec::with_capacity(kinds.len());
            for k in kinds {
                args.push(Arg::from(*k));
                params.push(format!("${}", args.len()));
            }
            format!(" AND kind IN ({})", params.join(", "))
        };
        let sql = format!(
            "UPDATE jobs SET state = 'leased', lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM jobs WHERE ((state = 'pending' AND next_attempt_at <= $3) \
             OR (state = 'leased' AND lease_until <= $3)){kinds_sql} ORDER BY next_attempt_at, id LIMIT $4{}) \
             RETURNING {JOB_COLUMNS}",
            self.lock_clause()
        );
        let mut tx = self.db.begin().await?;
        let rows = tx.fetch_all(&sql, &args).await?;
        tx.commit().await?;
        let mut out = rows.iter().map(job).collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|j| (j.next_attempt_at, j.id));
        Ok(out)
    }

    async fn extend_lease(
        &self,
        id: i64,
        worker_id: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool> {
        let n = self
            .db
            .execute(
                "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND state = 'leased' AND lease_owner = $2",
                &args![id, worker_id, until(now, lease)?],
            )
            .await?;
        Ok(n > 0)
    }

    async fn complete(&self, id: i64, worker_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let n = self
            .db
            .execute(
                "UPDATE jobs SET state = 'done', completed_at = $3, lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND state = 'leased' AND lease_owner = $2",
                &args![id, worker_id, format_time(now)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn fail_job(
        &self,
        id: i64,
        worker_id: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        max_age: Duration,
        now: DateTime<Utc>,
    ) -> Result<FailOutcome> {
        let Some(row) = self
            .db
            .fetch_optional(
                "SELECT age_base_at FROM jobs WHERE id = $1 AND state = 'leased' AND lease_owner = $2",
                &args![id, worker_id],
            )
            .await?
        else {
            return Ok(FailOutcome::LeaseLost);
        };
        let deadline = chrono::Duration::from_std(max_age)
            .ok()
            .and_then(|age| row.time("age_base_at").ok()?.checked_add_signed(age));
        let retry = retry_at.filter(|at| deadline.is_none_or(|d| *at <= d));
        let n = match retry {
            Some(at) => {
                self.db
                    .execute(
                        "UPDATE jobs SET state = 'pending', next_attempt_at = $3, last_error = $4, lease_owner = NULL, lease_until = NULL \
                         WHERE id = $1 AND state = 'leased' AND lease_owner = $2",
                        &args![id, worker_id, format_time(at), error],
                    )
                    .await?
            }
            None => {
                self.db
                    .execute(
                        "UPDATE jobs SET state = 'dead', completed_at = $3, last_error = $4, lease_owner = NULL, lease_until = NULL \
                         WHERE id = $1 AND state = 'leased' AND lease_owner = $2",
                        &args![id, worker_id, format_time(now), error],
                    )
                    .await?
            }
        };
        Ok(match (n, retry) {
            (0, _) => FailOutcome::LeaseLost,
            (_, Some(at)) => FailOutcome::Retrying(at),
            (_, None) => FailOutcome::Dead,
        })
    }

    async fn requeue_job(&self, id: i64, now: DateTime<Utc>) -> Result<bool> {
        let n = self
            .db
            .execute(
                "UPDATE jobs SET state = 'pending', next_attempt_at = $2, age_base_at = $2, completed_at = NULL \
                 WHERE id = $1 AND state = 'dead'",
                &args![id, format_time(now)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn requeue_dead_jobs(&self, filter: &JobFilter, now: DateTime<Utc>) -> Result<u64> {
        let w = job_where(filter, vec![Arg::Text(format_time(now))], false);
        let sql = format!(
            "UPDATE jobs SET state = 'pending', next_attempt_at = $1, age_base_at = $1, completed_at = NULL \
             WHERE state = 'dead' AND {}",
            w.sql()
        );
        let mut tx = self.db.begin().await?;
        let n = tx.execute(&sql, &w.args).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn job_stats(&self, now: DateTime<Utc>) -> Result<JobStats> {
        let mut stats = JobStats::default();
        for row in self
            .db
            .fetch_all("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state", &[])
            .await?
        {
            let n = row.int("n")?;
            match job_state(&row.text("state")?)? {
                JobState::Pending => stats.pending = n,
                JobState::Leased => stats.leased = n,
                JobState::Done => stats.done = n,
                JobState::Dead => stats.dead = n,
            }
        }
        let oldest = self
            .db
            .fetch_one(
                "SELECT MIN(created_at) AS t FROM jobs WHERE state IN ('pending', 'leased')",
                &[],
            )
            .await?
            .opt_time("t")?;
        stats.oldest_pending_age = oldest.map(|t| (now - t).to_std().unwrap_or(Duration::ZERO));
        Ok(stats)
    }

    async fn put_link(
        &self,
        referral_key: &str,
        object: &CrmObject,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO links (referral_key, instance, object_kind, object_id, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (instance, object_kind, object_id) DO UPDATE SET referral_key = excluded.referral_key, created_at = excluded.created_at \
                 WHERE links.referral_key <> excluded.referral_key",
                &args![
                    referral_key,
                    &object.instance,
                    &object.kind,
                    &object.id,
                    format_time(now)
                ],
            )
            .await?;
        Ok(())
    }

    async fn link_by_object(&self, object: &CrmObject) -> Result<Option<Link>> {
        self.db
            .fetch_optional(
                "SELECT referral_key, instance, object_kind, object_id, created_at FROM links \
                 WHERE instance = $1 AND object_kind = $2 AND object_id = $3",
                &args![&object.instance, &object.kind, &object.id],
            )
            .await?
            .as_ref()
            .map(link)
            .transpose()
    }

    async fn links_by_referral(&self, referral_key: &str) -> Result<Vec<Link>> {
        self.db
            .fetch_all(
                "SELECT referral_key, instance, object_kind, object_id, created_at FROM links \
                 WHERE referral_key = $1 ORDER BY created_at, id",
                &args![referral_key],
            )
            .await?
            .iter()
            .map(link)
            .collect()
    }

    async fn append_timeline(&self, referral_key: &str, entry: &TimelineEntry) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO timeline (referral_key, at, kind, message, detail) VALUES ($1, $2, $3, $4, $5)",
                &args![
                    referral_key,
                    format_time(entry.at),
                    &entry.kind,
                    &entry.message,
                    entry.detail.to_string()
                ],
            )
            .await?;
        Ok(())
    }

    async fn timeline(&self, referral_key: &str) -> Result<Vec<TimelineEntry>> {
        self.db
            .fetch_all(
                "SELECT at, kind, message, detail FROM timeline WHERE referral_key = $1 ORDER BY at, id",
                &args![referral_key],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(TimelineEntry {
                    at: row.time("at")?,
                    kind: row.text("kind")?,
                    message: row.text("message")?,
                    detail: json(row, "detail")?,
                })
            })
            .collect()
    }

    async fn get_token(&self, key: &str) -> Result<Option<String>> {
        self.db
            .fetch_optional(
                "SELECT value FROM oauth_tokens WHERE token_key = $1",
                &args![key],
            )
            .await?
            .map(|r| r.text("value"))
            .transpose()
    }

    async fn put_token(&self, key: &str, value: &str, now: DateTime<Utc>) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO oauth_tokens (token_key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (token_key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                &args![key, value, format_time(now)],
            )
            .await?;
        Ok(())
    }

    async fn delete_token(&self, key: &str) -> Result<bool> {
        Ok(self
            .db
            .execute("DELETE FROM oauth_tokens WHERE token_key = $1", &args![key])
            .await?
            > 0)
    }

    async fn close(&self) {
        self.db.close().await;
    }
}
