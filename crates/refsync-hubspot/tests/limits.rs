//! HubSpot's refusals that mean "later": `423 Locked` (too many writes at once: wait 2 s) and
//! `429` (the rolling 10-second window) are waited out, and the push goes through.

use std::collections::BTreeMap;

use refsync_core::{
    CampaignRef, Connector, DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, ReferredUser,
};
use refsync_hubspot::{Config, HubSpotConnector};
use refsync_testkit::hubspot::{HubSpotSim, HubSpotSimOptions};
use serde_json::json;

const TOKEN: &str = "pat-na1-limits-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_and_rate_limited_answers_are_waited_out() {
    let sim = HubSpotSim::start(HubSpotSimOptions::new(TOKEN, "limits-client-secret"))
        .await
        .unwrap();
    let config: Config = refsync_core::registry::parse_settings(&json!({
        "base_url": sim.base_url(),
        "auth": {"type": "private_app", "token": TOKEN},
        "client_secret": "limits-client-secret",
    }))
    .unwrap();
    let conn = HubSpotConnector::new(config, None).unwrap();
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
    let user = |i: usize| ReferredUser {
        first_name: "Friend".into(),
        email: format!("friend{i}@example.com"),
        referral_code: format!("R-{i}"),
        campaign: CampaignRef {
            id: "1".into(),
            name: None,
        },
        ..ReferredUser::default()
    };
    // The property list is read first; the upsert then meets 423 once.
    conn.health_check().await.unwrap();
    conn.push_referral(&user(0), &spec).await.unwrap();
    sim.simulator().clear_requests();
    sim.fail_next(423, 1);
    conn.push_referral(&user(1), &spec).await.unwrap();
    let upserts = sim
        .simulator()
        .requests_to("POST", "/crm/v3/objects/contacts/batch/upsert");
    assert_eq!(upserts.len(), 2, "refused once (423), then accepted");
    sim.fail_next(429, 1);
    conn.push_referral(&user(2), &spec).await.unwrap();
    assert_eq!(sim.rate_limit_violations(), 1);
    assert_eq!(sim.contacts().len(), 3);
}
