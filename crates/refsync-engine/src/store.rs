//! The durable store of the engine: the inbox of webhook deliveries, the outbox of jobs
//! (qualify calls and pushes), links between referrals and CRM objects, the audit timeline
//! of each referral, and OAuth tokens.
//!
//! [`Store`] is an object-safe async trait; [`open_store`] opens one of its two
//! implementations by URL:
//!
//! - `sqlite://PATH` (the file is created on first run; WAL journal; writes serialized with
//!   `BEGIN IMMEDIATE`) or `sqlite::memory:`;
//! - `postgres://…` (several instances share one queue: jobs are leased with
//!   `FOR UPDATE SKIP LOCKED`).
//!
//! Exactly-once building blocks: deliveries are unique per (instance, dedup key); jobs are
//! unique per idempotency key, forever (no expiry). Claiming leases a job to one worker until
//! the lease ends; a job whose worker crashed becomes claimable again when its lease expires.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::Result;
use serde::{Deserialize, Serialize};

pub(crate) mod db;
mod group;
mod sql;

pub use db::Backend;
pub use sql::SqlStore;

/// Opens the store at `url` (`sqlite://PATH`, `sqlite::memory:` or `postgres://…`), creating
/// a missing SQLite file, and applies the migrations.
///
/// # Errors
/// [`refsync_core::ErrorKind::Config`] for an unsupported or invalid URL or a schema newer
/// than this build; [`refsync_core::ErrorKind::Unavailable`] when the database cannot be
/// reached.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqlStore::open(url).await?))
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Stored, waiting to be (or being) processed.
    Received,
    /// Processed: its jobs (if any) are in the outbox.
    Processed,
    /// A dead letter: it could not be processed; see `last_error`. Replayable.
    Dead,
}

impl DeliveryStatus {
    /// The stored name (`received`, `processed`, `dead`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Received => "received",
            DeliveryStatus::Processed => "processed",
            DeliveryStatus::Dead => "dead",
        }
    }
}

/// A delivery to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The connector instance it came to (`POST /hooks/{instance}`).
    pub instance: String,
    /// The deduplication key: the vendor's event id, or a hash of the body.
    pub dedup_key: String,
    /// The raw body, as received.
    pub body: Vec<u8>,
    /// The headers processing needs (a JSON object).
    pub headers: serde_json::Value,
    /// When it was received.
    pub received_at: DateTime<Utc>,
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Its id.
    pub id: i64,
    /// The connector instance.
    pub instance: String,
    /// The deduplication key.
    pub dedup_key: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// The stored headers (a JSON object).
    pub headers: serde_json::Value,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// Its status.
    pub status: DeliveryStatus,
    /// How many times processing was started (claims).
    pub attempts: i64,
    /// When it is due for (another) processing attempt.
    pub next_attempt_at: DateTime<Utc>,
    /// The worker holding it, while leased.
    pub lease_owner: Option<String>,
    /// Until when it is leased.
    pub lease_until: Option<DateTime<Utc>>,
    /// The last error (the dead-letter reason when dead).
    pub last_error: Option<String>,
    /// The last change of status.
    pub updated_at: DateTime<Utc>,
}

/// The outcome of [`Store::insert_delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored as a new delivery with this id.
    Inserted(i64),
    /// Already stored (same instance and dedup key) under this id; nothing changed.
    Duplicate(i64),
}

impl InsertOutcome {
    /// The id of the stored delivery, new or existing.
    pub fn id(self) -> i64 {
        match self {
            InsertOutcome::Inserted(id) | InsertOutcome::Duplicate(id) => id,
        }
    }
}

/// Which deliveries to list or requeue. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this connector instance.
    pub instance: Option<String>,
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only deliveries received at or after this time.
    pub received_from: Option<DateTime<Utc>>,
    /// Only deliveries received before this time.
    pub received_before: Option<DateTime<Utc>>,
    /// Only deliveries whose id is greater (for paging).
    pub after_id: Option<i64>,
    /// At most this many (listing only; ids ascending).
    pub limit: Option<i64>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting until `next_attempt_at`.
    Pending,
    /// Leased to a worker until `lease_until`.
    Leased,
    /// Done.
    Done,
    /// A dead letter (failed past its maximum age, or permanently). Replayable.
    Dead,
}

impl JobState {
    /// The stored name (`pending`, `leased`, `done`, `dead`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Leased => "leased",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// What to do (`qualify`, `push`, …).
    pub kind: String,
    /// The idempotency key, unique forever (e.g. `qualify:{campaign}:{referral}:{rule}`).
    pub idempotency_key: String,
    /// What the worker needs (JSON).
    pub payload: serde_json::Value,
    /// When it is first due (usually now).
    pub run_at: DateTime<Utc>,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// Its state.
    pub state: JobState,
    /// How many times it was claimed.
    pub attempts: i64,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it is due (pending) or was last made due.
    pub next_attempt_at: DateTime<Utc>,
    /// The worker holding it, while leased.
    pub lease_owner: Option<String>,
    /// Until when it is leased.
    pub lease_until: Option<DateTime<Utc>>,
    /// The last error (the dead-letter reason when dead).
    pub last_error: Option<String>,
    /// When it was completed or dead-lettered.
    pub completed_at: Option<DateTime<Utc>>,
}

/// The outcome of [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq)]
pub enum EnqueueOutcome {
    /// A new job.
    Created(Job),
    /// A job with this idempotency key already exists (in any state); it is returned
    /// unchanged and no second job is created.
    Existing(Job),
}

impl EnqueueOutcome {
    /// The job, new or existing.
    pub fn job(&self) -> &Job {
        match self {
            EnqueueOutcome::Created(j) | EnqueueOutcome::Existing(j) => j,
        }
    }

    /// Whether a new job was created.
    pub fn is_created(&self) -> bool {
        matches!(self, EnqueueOutcome::Created(_))
    }
}

/// The outcome of [`Store::fail_job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// The job is pending again, due at this time.
    Retrying(DateTime<Utc>),
    /// The job is a dead letter.
    Dead,
    /// The caller no longer holds the lease (it expired and another worker may have the
    /// job): nothing changed.
    LeaseLost,
}

/// Which jobs to list or requeue. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only jobs whose id is greater (for paging).
    pub after_id: Option<i64>,
    /// At most this many (listing only; ids ascending).
    pub limit: Option<i64>,
}

/// Jobs by state, and the age of the oldest job not yet done or dead (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Pending jobs (due or not).
    pub pending: i64,
    /// Leased jobs (including expired leases not yet reclaimed).
    pub leased: i64,
    /// Done jobs.
    pub done: i64,
    /// Dead letters.
    pub dead: i64,
    /// How long the oldest pending or leased job has existed (`None` when there is none).
    pub oldest_pending_age: Option<Duration>,
}

/// Deliveries by status (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Received, not yet processed.
    pub received: i64,
    /// Processed.
    pub processed: i64,
    /// Dead letters.
    pub dead: i64,
}

/// A CRM object of a connector instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CrmObject {
    /// The connector instance.
    pub instance: String,
    /// The object kind (`person`, `lead`, `deal`, …).
    pub kind: String,
    /// The CRM's id of the object.
    pub id: String,
}

/// A link between a referral and a CRM object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// The referral key (the referral code, or the platform's id).
    pub referral_key: String,
    /// The CRM object.
    pub object: CrmObject,
    /// When it was linked (or last re-linked).
    pub created_at: DateTime<Utc>,
}

/// An entry of a referral's audit timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened (`delivery`, `pushed`, `qualified`, …).
    pub kind: String,
    /// For people.
    pub message: String,
    /// Structured detail (JSON).
    pub detail: serde_json::Value,
}

/// The durable store of the engine. Object safe: use it as `Arc<dyn Store>`.
///
/// Times are passed in by the caller (so tests control the clock) and stored with
/// microsecond precision.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which database this store uses.
    fn backend(&self) -> Backend;

    // --- deliveries (the inbox) ---

    /// Stores a delivery unless one with the same (instance, dedup key) exists.
    async fn insert_delivery(&self, delivery: &NewDelivery) -> Result<InsertOutcome>;
    /// One delivery.
    async fn get_delivery(&self, id: i64) -> Result<Option<Delivery>>;
    /// Deliveries matching `filter`, ids ascending.
    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>>;
    /// Leases up to `limit` due received deliveries (or ones whose lease expired) to
    /// `worker_id` until `now + lease`; no two callers get the same delivery while its lease
    /// runs. Each claim counts as an attempt.
    async fn claim_deliveries(
        &self,
        worker_id: &str,
        now: DateTime<Utc>,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Delivery>>;
    /// Marks a delivery processed (and releases its lease); false when it is not received.
    ///
    /// Delivery leases are not checked here: a delivery processed twice (its first worker
    /// outlived its lease) only enqueues jobs whose idempotency keys already exist.
    async fn mark_delivery_processed(&self, id: i64, now: DateTime<Utc>) -> Result<bool>;
    /// Makes a received delivery due again at `next_attempt_at` with `error` recorded (and
    /// releases its lease); false when it is not received.
    async fn retry_delivery(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Makes a delivery a dead letter with `reason`; false when it does not exist.
    async fn mark_delivery_dead(&self, id: i64, reason: &str, now: DateTime<Utc>) -> Result<bool>;
    /// Replays a delivery: received again, due `now` (its last error kept); false when it
    /// does not exist.
    async fn requeue_delivery(&self, id: i64, now: DateTime<Utc>) -> Result<bool>;
    /// Replays every delivery matching `filter` (ignoring its `limit`); how many.
    async fn requeue_deliveries(&self, filter: &DeliveryFilter, now: DateTime<Utc>) -> Result<u64>;
    /// Deliveries by status.
    async fn delivery_stats(&self) -> Result<DeliveryStats>;

    // --- jobs (the outbox) ---

    /// Enqueues a job, or returns the existing one with the same idempotency key.
    async fn enqueue(&self, job: &NewJob) -> Result<EnqueueOutcome>;
    /// One job.
    async fn get_job(&self, id: i64) -> Result<Option<Job>>;
    /// The job with this idempotency key.
    async fn get_job_by_key(&self, idempotency_key: &str) -> Result<Option<Job>>;
    /// Jobs matching `filter`, ids ascending.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    /// Atomically leases up to `limit` due jobs of `kinds` (all kinds when empty) to
    /// `worker_id` until `now + lease`, oldest due first: pending jobs due at `now` and
    /// leased jobs whose lease expired (their worker crashed). No two callers, in this
    /// process or another, get the same job while its lease runs.
    async fn claim(
        &self,
        worker_id: &str,
        kinds: &[&str],
        now: DateTime<Utc>,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Job>>;
    /// Extends a lease held by `worker_id` until `now + lease`; false when lost.
    async fn extend_lease(
        &self,
        id: i64,
        worker_id: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool>;
    /// Completes a job leased to `worker_id`; false when the lease was lost (nothing changed).
    async fn complete(&self, id: i64, worker_id: &str, now: DateTime<Utc>) -> Result<bool>;
    /// Records a failure of a job leased to `worker_id`: pending again at `retry_at` (backoff
    /// computed by the caller), or dead when `retry_at` is `None` or later than `max_age`
    /// after the job was created (or last replayed). Nothing changes when `worker_id` no
    /// longer holds the lease.
    async fn fail_job(
        &self,
        id: i64,
        worker_id: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        max_age: Duration,
        now: DateTime<Utc>,
    ) -> Result<FailOutcome>;
    /// Replays a dead job: pending, due `now`, its maximum age counted again from `now`;
    /// false when it does not exist or is not dead (a done job is never run again).
    async fn requeue_job(&self, id: i64, now: DateTime<Utc>) -> Result<bool>;
    /// Replays every dead job matching `filter` (its `state` is ignored); how many.
    async fn requeue_dead_jobs(&self, filter: &JobFilter, now: DateTime<Utc>) -> Result<u64>;
    /// Jobs by state and the age at `now` of the oldest job not yet done or dead.
    async fn job_stats(&self, now: DateTime<Utc>) -> Result<JobStats>;

    // --- links ---

    /// Links `referral_key` to `object` (re-linking an object moves it to this referral).
    async fn put_link(
        &self,
        referral_key: &str,
        object: &CrmObject,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// The link of a CRM object.
    async fn link_by_object(&self, object: &CrmObject) -> Result<Option<Link>>;
    /// Every CRM object linked to a referral, oldest first.
    async fn links_by_referral(&self, referral_key: &str) -> Result<Vec<Link>>;

    // --- audit timeline ---

    /// Appends an entry to a referral's timeline.
    async fn append_timeline(&self, referral_key: &str, entry: &TimelineEntry) -> Result<()>;
    /// A referral's timeline, in time order (insertion order for equal times).
    async fn timeline(&self, referral_key: &str) -> Result<Vec<TimelineEntry>>;

    // --- OAuth tokens ---

    /// The stored value for `key`.
    async fn get_token(&self, key: &str) -> Result<Option<String>>;
    /// Stores (replaces) the value for `key`.
    async fn put_token(&self, key: &str, value: &str, now: DateTime<Utc>) -> Result<()>;
    /// Deletes `key`; whether it existed.
    async fn delete_token(&self, key: &str) -> Result<bool>;

    /// Closes the connections (pending work stays persisted).
    async fn close(&self);
}
