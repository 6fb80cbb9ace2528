//! OAuth 2.0 against the simulator's token endpoint: the authorization code is exchanged,
//! 30-minute access tokens are used, and an expired token is refreshed once for all concurrent
//! callers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use refsync_core::{
    CampaignRef, Connector, DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, ReferredUser,
};
use refsync_http::oauth::{
    ClientAuth, MemoryTokenStore, OAuthConfig, TokenManager, token_http_client,
};
use refsync_hubspot::{Config, HubSpotConnector};
use refsync_testkit::hubspot::{HubSpotSim, HubSpotSimOptions};
use serde_json::json;

const CLIENT_SECRET: &str = "oauth-client-secret-0123456789";

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
async fn tokens_are_exchanged_used_and_refreshed_once_for_concurrent_calls() {
    // No private-app token is accepted: only OAuth access tokens.
    let sim = HubSpotSim::start(HubSpotSimOptions::new("unused-static-token", CLIENT_SECRET))
        .await
        .unwrap();
    let oauth = OAuthConfig {
        client_id: sim.options().client_id.clone(),
        client_secret: CLIENT_SECRET.into(),
        auth_url: "https://app.hubspot.com/oauth/authorize".into(),
        token_url: format!("{}/oauth/v1/token", sim.base_url()),
        redirect_url: Some("https://refsync.example.com/oauth/callback".into()),
        scopes: vec!["crm.objects.contacts.write".into()],
        client_auth: ClientAuth::RequestBody,
        authorize_params: BTreeMap::new(),
    };
    let tm = TokenManager::new(
        oauth,
        Arc::new(MemoryTokenStore::default()),
        "oauth:crm",
        token_http_client(Duration::from_secs(10)).unwrap(),
    )
    .unwrap();
    tm.exchange_code(sim.authorization_code()).await.unwrap();
    let config: Config = refsync_core::registry::parse_settings(&json!({
        "base_url": sim.base_url(),
        "auth": {"type": "oauth"},
        "client_secret": CLIENT_SECRET,
    }))
    .unwrap();
    let conn = HubSpotConnector::new(config, Some(tm)).unwrap();
    let spec = PushSpec {
        object: ObjectKind::Contact,
        fields: FieldMapping::from_pairs([
            ("email", "{Email}"),
            ("referral_code", "{Referral Code}"),
        ])
        .unwrap(),
        duplicates: DuplicatePolicy::UpdateExisting,
        defaults: BTreeMap::new(),
    };
    conn.push_referral(&user(0), &spec).await.unwrap();
    assert_eq!(
        sim.oauth_refreshes(),
        0,
        "a fresh 30-minute token is used as is"
    );

    // Every token issued so far now answers 401: concurrent pushes refresh it once.
    sim.expire_access_tokens();
    let (one, two) = (user(1), user(2));
    let (a, b, c) = tokio::join!(
        conn.push_referral(&one, &spec),
        conn.push_referral(&two, &spec),
        conn.health_check(),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(sim.oauth_refreshes(), 1, "single-flight refresh");
    assert_eq!(sim.contacts().len(), 3);
    // The token never appears in the connector's Debug.
    let shown = format!("{conn:?}");
    assert!(!shown.contains(CLIENT_SECRET), "{shown}");
}
