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
