//! Sessions and the org's API allocation: an expired session (`INVALID_SESSION_ID`) gets one new
//! JWT session; when `Sforce-Limit-Info` says the allocation is within the reserve, refsync
//! stops calling and says why.

use std::collections::BTreeMap;
use std::time::Duration;

use refsync_core::{
    CampaignRef, Connector, DuplicatePolicy, ErrorKind, FieldMapping, ObjectKind, PushSpec,
    ReferredUser,
};
use refsync_salesforce::{Config, SalesforceConnector};
use refsync_testkit::salesforce::{SalesforceSim, SalesforceSimOptions, TEST_PRIVATE_KEY_PEM};
use serde_json::json;

const CLIENT_ID: &str = "3MVG9limits";
const USERNAME: &str = "integration@limits.example";

async fn setup(allocation: u64) -> (SalesforceSim, SalesforceConnector, tempfile::TempDir) {
    let mut opts = SalesforceSimOptions::new(CLIENT_ID, "limits-secret", "limits-refresh");
    opts.jwt_username = USERNAME.to_owned();
    opts.daily_api_allocation = allocation;
    let org = opts.organization_id.clone();
    let sim = SalesforceSim::start(opts).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, TEST_PRIVATE_KEY_PEM).unwrap();
    let config: Config = refsync_core::registry::parse_settings(&json!({
        "auth": { "type": "jwt_bearer", "client_id": CLIENT_ID, "username": USERNAME,
                  "private_key_file": key.display().to_string(), "login_url": sim.base_url() },
        "endpoint_token": "limits-endpoint-token-0123456789",
        "organization_ids": [org],
    }))
    .unwrap();
    (sim, SalesforceConnector::new(config, None).unwrap(), dir)
}

fn spec() -> PushSpec {
    PushSpec {
        object: ObjectKind::Lead,
        fields: FieldMapping::from_pairs([
            ("Email", "{Email}"),
            ("Referral_Code__c", "{Referral Code}"),
        ])
        .unwrap(),
        duplicates: DuplicatePolicy::UpdateExisting,
        defaults: BTreeMap::new(),
    }
}

fn user(i: usize) -> ReferredUser {
    ReferredUser {
        first_name: "Friend".into(),
        email: format!("friend{i}@example.com"),
        referral_code: format!("R-{i}"),
        campaign: CampaignRef {
            id: "1".into(),
            name: None,
        },
        ..ReferredUser::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_gets_one_new_jwt_session() {
    let (sim, conn, _dir) = setup(15_000).await;
    conn.push_referral(&user(0), &spec()).await.unwrap();
    assert_eq!(sim.token_requests(), 1);
    conn.push_referral(&user(1), &spec()).await.unwrap();
    assert_eq!(sim.token_requests(), 1, "the session is reused");
    sim.expire_sessions();
    conn.push_referral(&user(2), &spec()).await.unwrap();
    assert_eq!(
        sim.token_requests(),
        2,
        "one new session after INVALID_SESSION_ID"
    );
    assert_eq!(sim.records("Lead").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_tenth_of_the_allocation_is_left_to_others() {
    // 20 requests a day; the default reserve is 10 %: refsync stops at 18 used.
    let (sim, conn, _dir) = setup(20).await;
    let mut refused = None;
    for i in 0..25 {
        if let Err(e) = conn.push_referral(&user(i), &spec()).await {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("stops before the allocation is used up");
    assert!(matches!(e.kind(), ErrorKind::RateLimited { .. }), "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
    assert!(e.message().contains("daily API requests"), "{e}");
    let (used, max) = sim.api_usage();
    assert!(
        used + 2 <= max,
        "the reserve was kept: {used}/{max} after {i} pushes"
    );
}
