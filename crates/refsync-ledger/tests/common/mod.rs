//! Test databases: a temporary SQLite file, or a fresh schema of the PostgreSQL named by
//! `REFSYNC_TEST_POSTGRES_URL` (skipped when unset, except in CI where it must be set).
#![allow(dead_code, clippy::print_stderr)]

use refsync_ledger::Ledger;

use refsync_testkit::services::PgSchema;

/// A ledger on a throwaway database, removed on drop.
pub(crate) struct TestDb {
    pub(crate) ledger: Ledger,
    /// The URL the ledger was opened with (open more instances on the same database with it).
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgSchema>,
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
        _pg: None,
    }
}

/// A fresh ledger in a new schema of the test PostgreSQL, dropped on drop; `None` when the
/// server is not configured (outside CI).
pub(crate) async fn postgres() -> Option<TestDb> {
    let schema = PgSchema::create("t", "the ledger's PostgreSQL suite").await?;
    let url = schema.url().to_owned();
    let ledger = Ledger::open(&url).await.expect("open postgres ledger");
    Some(TestDb {
        ledger,
        url,
        _dir: None,
        _pg: Some(schema),
    })
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
