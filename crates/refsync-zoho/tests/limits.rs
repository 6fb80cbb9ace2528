//! Zoho's limits: at most 10 calls in flight (the connector queues the rest instead of
//! collecting 429s), and used-up daily credits reported as a rate limit of an hour that says so.

use std::time::Duration;

use refsync_core::{Connector, ErrorKind};
use refsync_testkit::sim::{Fault, FaultRule};
use refsync_testkit::zoho::{ZohoSim, ZohoSimOptions};
use refsync_zoho::{Config, ZohoConnector};
use serde_json::json;

const CLIENT_ID: &str = "1000.LIMITS";
const CLIENT_SECRET: &str = "limits-client-secret-0123";
const REFRESH_TOKEN: &str = "1000.limits-refresh-token";

fn connector(sim: &ZohoSim) -> ZohoConnector {
    let config: Config = refsync_core::registry::parse_settings(&json!({
        "auth": { "type": "self_client", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                  "refresh_token": REFRESH_TOKEN, "accounts_url": sim.base_url() },
        "notification_token": "limits-notification-token",
        "channel_id": "77",
    }))
    .unwrap();
    ZohoConnector::new(config, None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_concurrency_limit_wait_instead_of_failing() {
    let sim = ZohoSim::start(ZohoSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN))
        .await
        .unwrap();
    let conn = connector(&sim);
    conn.health_check().await.unwrap(); // the token, once
    // Every API answer takes 100 ms: 25 checks at once would put 25 calls in flight.
    sim.simulator().inject(
        FaultRule::new(Fault::Latency(Duration::from_millis(100)))
            .always()
            .on("*", "/crm/"),
    );
    let conn = std::sync::Arc::new(conn);
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let conn = conn.clone();
        checks.spawn(async move { conn.health_check().await });
    }
    while let Some(r) = checks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(sim.rate_limited(), 0, "never more than 10 in flight");
    assert_eq!(sim.token_refreshes(), 1, "one token for every call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_up_credits_are_a_rate_limit_of_an_hour_that_says_so() {
    let mut opts = ZohoSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN);
    opts.daily_credits = 2;
    let sim = ZohoSim::start(opts).await.unwrap();
    let conn = connector(&sim);
    conn.health_check().await.unwrap();
    conn.health_check().await.unwrap();
    let err = conn.health_check().await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::RateLimited { .. }), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert!(err.message().contains("credits are used up"), "{err}");
}
