//! The web server flow: the authorization code is exchanged for a session and a refresh token,
//! calls go to the token's `instance_url`, and `INVALID_SESSION_ID` refreshes the session once
//! (Salesforce's token answer has no `expires_in`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use refsync_core::{
    CampaignRef, Connector, DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, ReferredUser,
};
use refsync_http::oauth::{
    ClientAuth, MemoryTokenStore, OAuthConfig, TokenManager, token_http_client,
};
use refsync_salesforce::{Config, SalesforceConnector};
use refsync_testkit::salesforce::{SalesforceSim, SalesforceSimOptions};
use serde_json::json;

const CLIENT_ID: &str = "3MVG9web";
const CLIENT_SECRET: &str = "web-client-secret-0123456789";

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
async fn the_code_is_exchanged_and_an_expired_session_is_refreshed_once() {
    let opts = SalesforceSimOptions::new(CLIENT_ID, CLIENT_SECRET, "unused-refresh-token");
    let org = opts.organization_id.clone();
    let sim = SalesforceSim::start(opts).await.unwrap();
    let tm = TokenManager::new(
        OAuthConfig {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            auth_url: format!("{}/services/oauth2/authorize", sim.base_url()),
            token_url: sim.token_url(),
            redirect_url: Some("https://refsync.example.com/oauth/callback".into()),
            scopes: vec!["api".into(), "refresh_token".into()],
            client_auth: ClientAuth::RequestBody,
            authorize_params: BTreeMap::new(),
        },
        Arc::new(MemoryTokenStore::default()),
        "oauth:crm",
        token_http_client(Duration::from_secs(10)).unwrap(),
    )
    .unwrap();
    let token = tm
        .exchange_code(&sim.options().authorization_code)
        .await
        .unwrap();
    assert_eq!(
        token.extra_str("instance_url"),
        Some(sim.instance_url().as_str())
    );
    let config: Config = refsync_core::registry::parse_settings(&json!({
        "auth": {"type": "oauth"},
        "endpoint_token": "web-endpoint-token-0123456789abc",
        "organization_ids": [org],
    }))
    .unwrap();
    let conn = SalesforceConnector::new(config, Some(tm)).unwrap();
    let spec = PushSpec {
        object: ObjectKind::Lead,
        fields: FieldMapping::from_pairs([
            ("Email", "{Email}"),
            ("Referral_Code__c", "{Referral Code}"),
        ])
        .unwrap(),
        duplicates: DuplicatePolicy::UpdateExisting,
        defaults: BTreeMap::new(),
    };
    conn.push_referral(&user(0), &spec).await.unwrap();
    let before = sim.token_requests();
    sim.expire_sessions();
    conn.push_referral(&user(1), &spec).await.unwrap();
    assert_eq!(
        sim.token_requests(),
        before + 1,
        "one refresh after INVALID_SESSION_ID"
    );
    assert_eq!(sim.records("Lead").len(), 2);
}
