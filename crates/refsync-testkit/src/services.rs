//! Real services the suites run against (PostgreSQL), found through the environment.

use std::io::Write as _;

/// The variable holding a PostgreSQL URL for tests (`bash .ci/postgres.sh` prints one).
pub const POSTGRES_ENV: &str = "REFSYNC_TEST_POSTGRES_URL";

/// The PostgreSQL URL from [`POSTGRES_ENV`], or `None` after printing why `suite` is skipped.
///
/// When `CI` is set (non-empty) a missing URL is a failure, not a skip: CI must run every suite.
/// The skip line goes to the process's stderr directly, because libtest captures `eprintln!` of
/// passing tests and a skip must be seen.
///
/// # Panics
/// When `CI` is set and the URL is not.
pub fn postgres_url(suite: &str) -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.trim().is_empty());
            assert!(
                !in_ci,
                "{POSTGRES_ENV} is not set but CI is: PostgreSQL must be running for {suite} (see .ci/postgres.sh)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {POSTGRES_ENV} is not set, so {suite} did not run against PostgreSQL (`export {POSTGRES_ENV}=$(bash .ci/postgres.sh)` starts one)"
            );
            None
        }
    }
}

/// A fresh schema in the test PostgreSQL, dropped when this value is dropped; its
/// [`url`](PgSchema::url) points connections at it (`search_path`).
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct PgSchema {
    admin: String,
    schema: String,
    url: String,
}

#[cfg(feature = "postgres")]
impl PgSchema {
    /// Creates schema `<prefix>_<unique>`; `None` (after saying why) when no server is
    /// configured outside CI — see [`postgres_url`].
    ///
    /// # Panics
    /// When the server is configured but cannot be reached, or the schema cannot be created.
    pub async fn create(prefix: &str, suite: &str) -> Option<PgSchema> {
        use sqlx::Connection as _;
        let admin = postgres_url(suite)?;
        let schema = format!("{prefix}_{}", unique_suffix());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_ENV}: {e}"));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test schema {schema}: {e}"));
        let _ = conn.close().await;
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-c%20search_path%3D{schema}");
        Some(PgSchema { admin, schema, url })
    }

    /// The connection URL for this schema.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[cfg(feature = "postgres")]
impl Drop for PgSchema {
    fn drop(&mut self) {
        let (admin, schema) = (self.admin.clone(), self.schema.clone());
        // Drop is not async, and may run inside a runtime: drop the schema from a thread with
        // its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection as _;
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

#[cfg(feature = "postgres")]
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{:x}{:x}{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
