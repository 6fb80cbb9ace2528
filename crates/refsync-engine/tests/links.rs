//! Links learnt from events: a lead converted into a deal links the deal, so a later webhook
//! about the deal, carrying no referral code, still qualifies the referral — once.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use refsync_core::{NewUser, ReferrerRef, RuleSpec, WebhookRequest};
use refsync_engine::config::EngineConfig;
use refsync_engine::store::open_store;
use refsync_engine::{Engine, Instance};
use refsync_ledger::{Ledger, NewCampaign, Qualification};
use serde_json::json;

#[tokio::test]
async fn a_converted_leads_deal_qualifies_without_carrying_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&format!(
        "sqlite://{}",
        dir.path().join("engine.db").display()
    ))
    .await
    .unwrap();
    let ledger = Ledger::open("sqlite::memory:").await.unwrap();
    let campaign = ledger
        .create_campaign(&NewCampaign {
            name: "Spring".into(),
            link_base_url: None,
        })
        .await
        .unwrap()
        .id;
    let user = |name: &str, email: &str, referrer| NewUser {
        campaign_id: campaign.to_string(),
        first_name: name.into(),
        email: email.into(),
        referrer,
        meta: BTreeMap::new(),
        notify: false,
    };
    let ann = ledger
        .add_user(&user("Ann", "ann@example.com", None))
        .await
        .unwrap();
    let bob = ledger
        .add_user(&user(
            "Bob",
            "bob@example.com",
            Some(ReferrerRef::Code(ann.code.clone())),
        ))
        .await
        .unwrap();

    let mut registry = refsync_core::Registry::new();
    refsync_generic_webhook::register(&mut registry);
    let connector = registry
        .build_connector(
            "generic-webhook",
            &json!({ "auth": { "type": "none" },
                     "events": { "delivery_id": "/id", "object_kind": "/kind", "object_id": "/object",
                                 "converted_deal_id": "/deal", "status": "/status", "referral_code": "/code" } }),
        )
        .unwrap();
    let rules = vec![RuleSpec::DealWon {}.build().unwrap()];
    let instance = Instance::new("crm", connector, rules, Some(campaign.to_string()), None);
    let engine = Engine::with_parts(
        store,
        Arc::new(ledger.clone()),
        vec![instance],
        EngineConfig::default(),
    )
    .unwrap();
    let now = Utc::now();
    let send = |body: serde_json::Value| {
        let engine = engine.clone();
        async move {
            engine
                .ingest(
                    "crm",
                    WebhookRequest::post("/hooks/crm", serde_json::to_vec(&body).unwrap()),
                    now,
                )
                .await
                .unwrap();
            engine.process_deliveries_once(now).await.unwrap();
            engine.send_jobs_once(now).await.unwrap();
        }
    };

    // The lead (carrying the referral code) converts into deal D9.
    send(json!({ "id": "e1", "kind": "lead", "object": "L1", "deal": "D9", "code": bob.code }))
        .await;
    // The deal is won; the webhook knows nothing about referrals.
    send(json!({ "id": "e2", "kind": "deal", "object": "D9", "status": "won" })).await;
    // A deal no referral is linked to is won too: nothing happens.
    send(json!({ "id": "e3", "kind": "deal", "object": "D10", "status": "won" })).await;

    let key = refsync_core::ReferralKey::Code {
        code: bob.code.clone(),
    };
    assert!(
        matches!(
            ledger.qualify(&key).await.unwrap(),
            Qualification::AlreadyQualified { .. }
        ),
        "the won deal linked through the conversion qualified Bob's referral"
    );
    assert_eq!(ledger.qualifications(bob.id).await.unwrap().len(), 1);
}
