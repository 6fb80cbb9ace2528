//! The SQL layer of the engine store (the approach of refsync-ledger's `db` module): one small API (SQL text with `$1`-style parameters, typed arguments,
//! rows read by column name) over SQLite and PostgreSQL pools, the embedded migrations, and
//! the time format.
//!
//! Both backends understand `$N` parameters, `RETURNING`, `ON CONFLICT ... DO UPDATE ...
//! WHERE` and partial unique indexes, so one SQL text serves both except for row locks, which
//! only PostgreSQL needs (SQLite write transactions start with `BEGIN IMMEDIATE` and are
//! serialized by the database).

// Built without any backend feature, every path ends in an uninhabited variant.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(unreachable_code, unused_variables, unused_imports, dead_code)
)]

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use refsync_core::{Error, ErrorKind, Result};
#[allow(unused_imports)]
use sqlx::Row as _;

/// Which database a store keeps its data in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (a file, or memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A bound parameter.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
    NullInt,
    NullText,
    Bytes(Vec<u8>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Bytes(v.to_vec())
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Arg::NullInt, Arg::Int)
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        v.map_or(Arg::NullText, Arg::Text)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Arg::NullText, |s| Arg::Text(s.to_owned()))
    }
}

/// `args![a, b, c]`: an array of [`Arg`]s.
macro_rules! args {
    ($($e:expr),* $(,)?) => { [$($crate::store::db::Arg::from($e)),*] };
}
pub(crate) use args;

/// A result row.
pub(crate) enum Row {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::sqlite::SqliteRow),
    #[cfg(feature = "postgres")]
    Pg(sqlx::postgres::PgRow),
    /// Keeps the enum inhabited-by-nothing-else when no backend feature is enabled.
    #[allow(dead_code)]
    None(std::convert::Infallible),
}

fn decode_error(column: &str, e: sqlx::Error) -> Error {
    Error::unexpected(format!("engine store: reading column {column}: {e}")).with_source(e)
}

macro_rules! get {
    ($row:expr, $ty:ty, $col:expr) => {{
        let value: std::result::Result<$ty, sqlx::Error> = match $row {
            #[cfg(feature = "sqlite")]
            Row::Sqlite(r) => r.try_get::<$ty, _>($col),
            #[cfg(feature = "postgres")]
            Row::Pg(r) => r.try_get::<$ty, _>($col),
            Row::None(n) => match *n {},
        };
        value.map_err(|e| decode_error($col, e))
    }};
}

impl Row {
    pub(crate) fn int(&self, col: &str) -> Result<i64> {
        get!(self, i64, col)
    }
    pub(crate) fn text(&self, col: &str) -> Result<String> {
        get!(self, String, col)
    }
    pub(crate) fn opt_text(&self, col: &str) -> Result<Option<String>> {
        get!(self, Option<String>, col)
    }
    pub(crate) fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        get!(self, Vec<u8>, col)
    }
    pub(crate) fn time(&self, col: &str) -> Result<DateTime<Utc>> {
        parse_time(&self.text(col)?)
    }
    pub(crate) fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        self.opt_text(col)?.as_deref().map(parse_time).transpose()
    }
}

/// The time format of every stored timestamp: UTC, microseconds, `Z` (fixed width, so the
/// text order is the time order and date prefixes compare as expected).
pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::unexpected(format!("engine store: bad timestamp {s:?}: {e}")))
}

/// Now, at the stored precision (so a returned time equals the stored one).
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Whether a statement outside a transaction writes (and so takes the SQLite write gate).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
fn is_write(sql: &str) -> bool {
    let head = sql.trim_start();
    [
        "INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "WITH",
    ]
    .iter()
    .any(|k| {
        head.get(..k.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(k))
    })
}

/// Maps a database error: unique violations become [`ErrorKind::Conflict`], connection
/// problems [`ErrorKind::Unavailable`], the rest [`ErrorKind::Unexpected`].
pub(crate) fn db_error(e: sqlx::Error) -> Error {
    let kind = match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => ErrorKind::Conflict,
        sqlx::Error::Database(d) if d.is_foreign_key_violation() || d.is_check_violation() => {
            ErrorKind::Validation
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => ErrorKind::Unavailable,
        sqlx::Error::Database(d) if is_busy(d.as_ref()) => ErrorKind::Unavailable,
        _ => ErrorKind::Unexpected,
    };
    Error::new(kind, format!("engine store: {e}")).with_source(e)
}

fn is_busy(d: &dyn sqlx::error::DatabaseError) -> bool {
    // SQLITE_BUSY (5) / SQLITE_LOCKED (6) and extended codes; PostgreSQL serialization
    // failure / deadlock.
    matches!(
        d.code().as_deref(),
        Some("5" | "6" | "261" | "262" | "517" | "40001" | "40P01")
    )
}

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    /// The pool and the process's write gate (see [`WriteGate`]).
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool, WriteGate),
    #[cfg(feature = "postgres")]
    Pg(sqlx::PgPool),
    #[allow(dead_code)]
    None(std::convert::Infallible),
}

/// SQLite has one writer at a time. Writers of this process take turns on this async lock
/// before they ask SQLite for its write lock, so they queue in order instead of meeting
/// `SQLITE_BUSY`, whose handler sleeps (1, 2, 5 … up to 100 ms at a time): under load those
/// sleeps were the tail of the webhook acknowledgement latency. Other processes on the same
/// file still wait through `busy_timeout`.
pub(crate) type WriteGate = std::sync::Arc<tokio::sync::Mutex<()>>;

/// An open write transaction.
pub(crate) enum Tx {
    /// The transaction and this process's turn at the write gate, held until it ends.
    #[cfg(feature = "sqlite")]
    Sqlite(
        sqlx::Transaction<'static, sqlx::Sqlite>,
        tokio::sync::OwnedMutexGuard<()>,
    ),
    #[cfg(feature = "postgres")]
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    #[allow(dead_code)]
    None(std::convert::Infallible),
}

#[allow(unused_macros)]
macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_str()),
                Arg::NullInt => q.bind(None::<i64>),
                Arg::NullText => q.bind(None::<&str>),
                Arg::Bytes(v) => q.bind(v.as_slice()),
            };
        }
        q
    }};
}

impl Db {
    /// Opens a pool for `url` and applies the migrations. With `create` a missing SQLite file
    /// is created; without it, it is a [`ErrorKind::NotFound`] error naming the file.
    pub(crate) async fn open(url: &str, create: bool) -> Result<Db> {
        let url = url.trim();
        let db = if url.starts_with("sqlite:") {
            open_sqlite(url, create).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            open_postgres(url).await?
        } else {
            return Err(Error::config(format!(
                "unsupported engine store URL {:?}: expected sqlite://PATH, sqlite::memory: or postgres://...",
                redact_url(url)
            )));
        };
        db.migrate().await?;
        Ok(db)
    }

    pub(crate) fn backend(&self) -> Backend {
        match *self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(..) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Db::Pg(_) => Backend::Postgres,
            Db::None(n) => match n {},
        }
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE` on SQLite).
    pub(crate) async fn begin(&self) -> Result<Tx> {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p, gate) => {
                let turn = gate.clone().lock_owned().await;
                Ok(Tx::Sqlite(
                    p.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?,
                    turn,
                ))
            }
            #[cfg(feature = "postgres")]
            Db::Pg(p) => Ok(Tx::Pg(p.begin().await.map_err(db_error)?)),
            Db::None(n) => match *n {},
        }
    }

    pub(crate) async fn fetch_all(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p, gate) => {
                let _turn = if is_write(sql) {
                    Some(gate.lock().await)
                } else {
                    None
                };
                bind_all!(sqlx::query::<sqlx::Sqlite>(sql), args)
                    .fetch_all(p)
                    .await
                    .map(|rows| rows.into_iter().map(Row::Sqlite).collect())
                    .map_err(db_error)
            }
            #[cfg(feature = "postgres")]
            Db::Pg(p) => bind_all!(sqlx::query::<sqlx::Postgres>(sql), args)
                .fetch_all(p)
                .await
                .map(|rows| rows.into_iter().map(Row::Pg).collect())
                .map_err(db_error),
            Db::None(n) => match *n {},
        }
    }

    /// Runs a statement outside a transaction; the number of rows it changed.
    pub(crate) async fn execute(&self, sql: &str, args: &[Arg]) -> Result<u64> {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p, gate) => {
                let _turn = gate.lock().await;
                bind_all!(sqlx::query::<sqlx::Sqlite>(sql), args)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(db_error)
            }
            #[cfg(feature = "postgres")]
            Db::Pg(p) => bind_all!(sqlx::query::<sqlx::Postgres>(sql), args)
                .execute(p)
                .await
                .map(|r| r.rows_affected())
                .map_err(db_error),
            Db::None(n) => match *n {},
        }
    }

    pub(crate) async fn fetch_optional(&self, sql: &str, args: &[Arg]) -> Result<Option<Row>> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    pub(crate) async fn fetch_one(&self, sql: &str, args: &[Arg]) -> Result<Row> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or_else(|| Error::unexpected("engine store: expected a row"))
    }

    pub(crate) async fn close(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p, _) => p.close().await,
            #[cfg(feature = "postgres")]
            Db::Pg(p) => p.close().await,
            Db::None(n) => match *n {},
        }
    }

    async fn migrate(&self) -> Result<()> {
        let (migrations, lock): (&[(i64, &str)], Option<&str>) = match self.backend() {
            Backend::Sqlite => (SQLITE_MIGRATIONS, None),
            // Serializes concurrent first starts of several instances.
            Backend::Postgres => (
                POSTGRES_MIGRATIONS,
                Some("SELECT pg_advisory_xact_lock(7420118933562)"),
            ),
        };
        let mut tx = self.begin().await?;
        if let Some(lock) = lock {
            tx.execute(lock, &[]).await?;
        }
        tx.execute(
            "CREATE TABLE IF NOT EXISTS refsync_engine_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
            &[],
        )
        .await?;
        let current = tx
            .fetch_optional(
                "SELECT COALESCE(MAX(version), 0) AS v FROM refsync_engine_migrations",
                &[],
            )
            .await?
            .map(|r| r.int("v"))
            .transpose()?
            .unwrap_or(0);
        let latest = migrations.last().map_or(0, |m| m.0);
        if current > latest {
            return Err(Error::config(format!(
                "the engine store has schema version {current}, newer than this build knows ({latest}); upgrade refsync"
            )));
        }
        for (version, sql) in migrations.iter().filter(|m| m.0 > current) {
            for statement in split_statements(sql) {
                tx.execute(&statement, &[]).await.map_err(|e| {
                    Error::new(
                        e.kind().clone(),
                        format!("engine store migration {version}: {}", e.message()),
                    )
                })?;
            }
            tx.execute(
                "INSERT INTO refsync_engine_migrations (version, applied_at) VALUES ($1, $2)",
                &args![*version, format_time(now())],
            )
            .await?;
        }
        tx.commit().await
    }
}

const SQLITE_MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("../../migrations/sqlite/0001_init.sql"))];
const POSTGRES_MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("../../migrations/postgres/0001_init.sql"))];

/// Splits a migration file into statements (`;` at the end of a line; `--` comments dropped).
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let line = line.split("--").next().unwrap_or_default().trim_end();
        if line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// A database URL without its password, for messages (`postgres://user:***@host/db`, and
/// `password=***` in the query).
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The host follows the last `@` before the query: a raw `@` or `/` in the password stays
    // on the secret side.
    let authority = match before_query.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => before_query.to_owned(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{authority}?{q}"),
        None => format!("{scheme}://{authority}"),
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str, create: bool) -> Result<Db> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use std::str::FromStr;

    let (url, synchronous) = sqlite_synchronous(url)?;
    let url = url.as_str();
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::config(format!("invalid SQLite URL {:?}: {e}", redact_url(url))))?;
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let options = options
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30));
    let pool = if memory {
        // One connection keeps the in-memory database alive and avoids shared-cache locking.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(8)
    };
    if !memory && !create && !options.get_filename().exists() {
        let path = options.get_filename();
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let shown = if absolute.as_path() == path {
            path.display().to_string()
        } else {
            format!("{} ({})", path.display(), absolute.display())
        };
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("no engine store at {shown}: the file does not exist"),
        ));
    }
    let options = if memory {
        options
    } else {
        // Checkpoints move the WAL back into the database file (and sync it). SQLite runs
        // them automatically inside the commit that crosses 1,000 pages, which then takes
        // tens of milliseconds while every other writer waits: here a background task runs
        // them instead, without blocking writers (see `checkpoints`).
        options
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .pragma("wal_autocheckpoint", "0")
    };
    let pool = pool
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot open the engine store {:?}: {e}", redact_url(url)),
            )
            .with_source(e)
        })?;
    if !memory {
        tokio::spawn(checkpoints(pool.clone()));
    }
    Ok(Db::Sqlite(pool, WriteGate::default()))
}

/// Takes refsync's own `synchronous=normal|full` parameter out of a SQLite URL (sqlx refuses
/// unknown parameters). Default `normal`: with the WAL, a commit is written to the OS before it
/// returns, so an acknowledged delivery survives a crash or kill of refsync; only a power
/// loss or OS crash can lose the last commits. `full` also syncs the WAL to the disk on every
/// commit (durable against power loss, at the disk's sync latency per commit).
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_synchronous(url: &str) -> Result<(String, sqlx::sqlite::SqliteSynchronous)> {
    use sqlx::sqlite::SqliteSynchronous;
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), SqliteSynchronous::Normal));
    };
    let mut mode = SqliteSynchronous::Normal;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("synchronous") => {
                mode = match v.to_ascii_lowercase().as_str() {
                    "normal" => SqliteSynchronous::Normal,
                    "full" => SqliteSynchronous::Full,
                    "extra" => SqliteSynchronous::Extra,
                    other => {
                        return Err(Error::config(format!(
                            "invalid synchronous={other:?} in the engine store URL: expected normal (the default), full or extra"
                        )));
                    }
                };
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, mode))
}

/// Checkpoints the WAL every second (`PASSIVE`: it copies what it can without waiting for, or
/// blocking, readers and writers) until the pool is closed.
#[cfg(feature = "sqlite")]
async fn checkpoints(pool: sqlx::SqlitePool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::debug!(error = %e, "WAL checkpoint failed; retried in a second");
        }
    }
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_url: &str, _create: bool) -> Result<Db> {
    Err(Error::config(
        "this build of refsync-engine has no SQLite support (enable the `sqlite` feature)",
    ))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Db> {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;

    let options = PgConnectOptions::from_str(url)
        .map_err(|e| Error::config(format!("invalid PostgreSQL URL {:?}: {e}", redact_url(url))))?;
    // One direct connection first: it fails at once when the server refuses, and within
    // PROBE_TIMEOUT when it does not answer (the pool would keep retrying for its whole acquire
    // timeout, which makes a CLI look hung).
    const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
    let unavailable = |detail: String| {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "cannot connect to the engine store {}: {detail}",
                redact_url(url)
            ),
        )
    };
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
    )
    .await
    {
        Err(_) => {
            return Err(unavailable(format!(
                "no answer within {} s",
                PROBE_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => return Err(unavailable(e.to_string()).with_source(e)),
        Ok(Ok(probe)) => {
            let _ = sqlx::Connection::close(probe).await;
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(options);
    Ok(Db::Pg(pool))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Db> {
    Err(Error::config(
        "this build of refsync-engine has no PostgreSQL support (enable the `postgres` feature)",
    ))
}

impl Tx {
    pub(crate) async fn fetch_all(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        match self {
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(t, _) => bind_all!(sqlx::query::<sqlx::Sqlite>(sql), args)
                .fetch_all(&mut **t)
                .await
                .map(|rows| rows.into_iter().map(Row::Sqlite).collect())
                .map_err(db_error),
            #[cfg(feature = "postgres")]
            Tx::Pg(t) => bind_all!(sqlx::query::<sqlx::Postgres>(sql), args)
                .fetch_all(&mut **t)
                .await
                .map(|rows| rows.into_iter().map(Row::Pg).collect())
                .map_err(db_error),
            Tx::None(n) => match *n {},
        }
    }

    pub(crate) async fn fetch_optional(&mut self, sql: &str, args: &[Arg]) -> Result<Option<Row>> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    /// Runs a statement; the number of rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        match self {
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(t, _) => bind_all!(sqlx::query::<sqlx::Sqlite>(sql), args)
                .execute(&mut **t)
                .await
                .map(|r| r.rows_affected())
                .map_err(db_error),
            #[cfg(feature = "postgres")]
            Tx::Pg(t) => bind_all!(sqlx::query::<sqlx::Postgres>(sql), args)
                .execute(&mut **t)
                .await
                .map(|r| r.rows_affected())
                .map_err(db_error),
            Tx::None(n) => match *n {},
        }
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            // The turn at the write gate ends after the commit.
            Tx::Sqlite(t, _turn) => t.commit().await.map_err(db_error),
            #[cfg(feature = "postgres")]
            Tx::Pg(t) => t.commit().await.map_err(db_error),
            Tx::None(n) => match n {},
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use sqlx::sqlite::SqliteSynchronous;

    #[test]
    fn the_synchronous_parameter_is_taken_out_of_sqlite_urls() {
        let (url, mode) = sqlite_synchronous("sqlite://refsync.db").expect("plain");
        assert_eq!(url, "sqlite://refsync.db");
        assert!(matches!(mode, SqliteSynchronous::Normal));
        let (url, mode) =
            sqlite_synchronous("sqlite://refsync.db?mode=rwc&synchronous=FULL").expect("full");
        assert_eq!(url, "sqlite://refsync.db?mode=rwc");
        assert!(matches!(mode, SqliteSynchronous::Full));
        let (url, _) = sqlite_synchronous("sqlite://r.db?synchronous=normal").expect("normal");
        assert_eq!(url, "sqlite://r.db");
        let err = sqlite_synchronous("sqlite://r.db?synchronous=off").expect_err("off");
        assert!(err.message().contains("synchronous=\"off\""), "{err}");
    }
}
