//! The facade with every connector: registration, building from an instance config file, and a
//! push from a built connector to a receiver over real loopback HTTP.

use refsync::{InstanceConfig, PushAction, WebhookRequest};
use refsync_testkit::sim::{RecordedRequest, SimResponse, Simulator};

fn example_config() -> InstanceConfig {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/generic-webhook/instance.toml"
    ))
    .unwrap();
    toml::from_str(&text).unwrap()
}

#[test]
fn default_registry_has_every_facade_connector() {
    let registry = refsync::default_registry();
    let names: Vec<&str> = registry.connectors().map(|c| c.info.name).collect();
    assert_eq!(
        names,
        [
            "generic-webhook",
            "hubspot",
            "pipedrive",
            "salesforce",
            "woocommerce",
            "zoho"
        ]
    );
    let platforms: Vec<&str> = registry.platforms().map(|p| p.name).collect();
    assert_eq!(platforms, ["ledger", "referral-factory"]);
}

#[tokio::test]
async fn the_ledger_platform_builds_from_settings_and_qualifies_once() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    let registry = refsync::default_registry();
    let build = registry.platform("ledger").unwrap().build;
    let platform = build(serde_json::json!({ "database_url": url }))
        .await
        .unwrap();
    let ledger = refsync::ledger::Ledger::open(&url).await.unwrap();
    let campaign = ledger
        .create_campaign(&refsync::ledger::NewCampaign {
            name: "Spring".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let referrer = platform
        .create_user(&refsync::NewUser {
            campaign_id: campaign.id.to_string(),
            first_name: "Bob".into(),
            email: "bob@example.com".into(),
            referrer: None,
            meta: Default::default(),
            notify: false,
        })
        .await
        .unwrap();
    let friend = platform
        .create_user(&refsync::NewUser {
            campaign_id: campaign.id.to_string(),
            first_name: "Ada".into(),
            email: "ada@example.com".into(),
            referrer: Some(refsync::ReferrerRef::Code(referrer.code.clone())),
            meta: Default::default(),
            notify: false,
        })
        .await
        .unwrap();
    let call = refsync::QualifyCall {
        action: refsync::QualifyAction::Qualify,
        campaign: Some(campaign.id.to_string()),
        referral: refsync::ReferralKey::Code {
            code: friend.code.clone(),
        },
        rule: "deal_won".into(),
        reason: "test".into(),
    };
    assert!(matches!(
        platform.qualify(&call).await.unwrap(),
        refsync::QualifyOutcome::Qualified { .. }
    ));
    assert!(matches!(
        platform.qualify(&call).await.unwrap(),
        refsync::QualifyOutcome::AlreadyQualified { .. }
    ));
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("refsync-facade-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn example_instance_builds_and_its_rules_qualify_a_won_deal() {
    let cfg = example_config();
    let registry = refsync::default_registry();
    let conn = registry
        .build_connector(cfg.connector.as_deref().unwrap(), &cfg.settings)
        .unwrap();
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/generic-webhook/synthetic-deal-won.json"
    ))
    .unwrap();
    let req = WebhookRequest::post("/hooks/x", body)
        .with_header("X-Refsync-Token", "change-me-to-a-long-random-token");
    conn.verify(&req, chrono::Utc::now()).unwrap();
    let events = conn.parse(&req).unwrap();
    let rules = cfg.build_rules().unwrap();
    let decisions = refsync::rules::decide(
        &rules,
        &events[0],
        &Default::default(),
        cfg.campaign.as_deref(),
    );
    let call = decisions[0].call.as_ref().expect("deal_won qualifies");
    assert_eq!(call.idempotency_key(), "qualify:42:code:ADA-42:deal_won");
}

#[tokio::test]
async fn generic_webhook_pushes_over_loopback() {
    let sim = Simulator::start(|r: &RecordedRequest| {
        SimResponse::json(
            201,
            &serde_json::json!({"id": r.json().map(|b| b["code"].clone())}),
        )
    })
    .await
    .unwrap();
    let settings = serde_json::json!({
        "auth": {"type": "none"},
        "push": {"url": format!("{}/zap", sim.base_url()), "body": {"code": "{Referral Code}", "who": "{First Name} via {Referrer First Name}"}, "response_id": "/id"}
    });
    let conn = refsync::default_registry()
        .build_connector("generic-webhook", &settings)
        .unwrap();
    let spec: refsync::PushSpec = serde_json::from_value(serde_json::json!({
        "object": "contact", "fields": {"email": "{Email}", "code": "{Referral Code}"}
    }))
    .unwrap();
    let user = refsync_testkit::conformance::test_user("facade");
    let out = conn.push_referral(&user, &spec).await.unwrap();
    assert_eq!(out.action, PushAction::Delivered);
    assert_eq!(out.links[0].id, "REF-FACADE");
    let sent = sim.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].json().unwrap(),
        serde_json::json!({"code": "REF-FACADE", "who": "Ada via Bob"})
    );
}
