//! Test databases: a temporary SQLite file, or a fresh schema of the PostgreSQL named by
//! `REFSYNC_TEST_POSTGRES_URL` (skipped when unset, except in CI where it must be set).
#![allow(dead_code, clippy::print_stderr)]

use refsync_ledger::Ledger;
use sqlx::Connection;

/// The variable naming the test PostgreSQL server.
pub(crate) use refsync_testkit::services::POSTGRES_ENV;

/// A ledger on a throwaway database, removed on drop.
pub(crate) struct TestDb {
    pub(crate) ledger: Ledger,
    /// The URL the ledger was opened with (open more instances on the same database with it).
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// Another, independent ledger (its own connection pool) on the same database.
    pub(crate) async fn second(&self) -> Ledger {
        Ledger::open(&self.url).await.expect("open a second ledger")
    }
}

/// A fresh ledger on a temporary SQLite file.
pub(crate) async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let ledger = Ledger::open(&url).await.expect("open sqlite ledger");
    TestDb {
        ledger,
        url,
        _dir: Some(dir),
        pg: None,
    }
}

/// The PostgreSQL admin URL, or `None` (after saying why) when the tests must be skipped.
/// In CI (`CI` set) a missing server is a failure.
pub(crate) fn postgres_url() -> Option<String> {
    refsync_testkit::services::postgres_url("the ledger's PostgreSQL suite")
}

fn random_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}{:x}{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh ledger in a new schema `t_<random>` of the test PostgreSQL, dropped on drop; `None`
/// when the server is not configured (outside CI).
pub(crate) async fn postgres() -> Option<TestDb> {
    let admin = postgres_url()?;
    let schema = format!("t_{}", random_suffix());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_ENV}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create test schema");
    conn.close().await.ok();
    let sep = if admin.contains('?') { '&' } else { '?' };
    let url = format!("{admin}{sep}options=-c%20search_path%3D{schema}");
    let ledger = Ledger::open(&url).await.expect("open postgres ledger");
    Some(TestDb {
        ledger,
        url,
        _dir: None,
        pg: Some((admin, schema)),
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, schema)) = self.pg.take() else {
            return;
        };
        // Drop is not async: drop the schema from a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Runs `$body` (an `async fn(&Ledger)` path) against SQLite and PostgreSQL, as
/// `sqlite::<name>` and `postgres::<name>` tests.
#[macro_export]
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::common::sqlite().await;
                    super::$name(&db).await;
                    db.ledger.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = $crate::common::postgres().await else { return };
                    super::$name(&db).await;
                    db.ledger.close().await;
                }
            )*
        }
    };
}
