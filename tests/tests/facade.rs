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
    assert_eq!(names, ["generic-webhook"]);
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
