//! `verify` and `parse` through the public connector, as the engine calls them: built by the
//! registry from `[settings]`, errors tagged with the connector and the operation.

use std::sync::Arc;

use chrono::Utc;
use refsync_core::{
    Change, Connector, ErrorKind, ObjectKind, Registry, Verification, WebhookRequest,
};
use refsync_http::signature::basic_auth_header;
use serde_json::{Value, json};

const USER: &str = "refsync-parse-tests";
const PASSWORD: &str = "parse-tests-webhook-password-0123";
const KEY: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f001234567";

fn connector(extra: Value) -> Arc<dyn Connector> {
    let mut settings = json!({
        "base_url": "http://127.0.0.1:9",
        "auth": { "type": "api_token", "token": "parse-tests-api-token" },
        "webhook_user": USER,
        "webhook_password": PASSWORD,
        "referral_code_field": KEY,
    });
    if let (Some(s), Value::Object(e)) = (settings.as_object_mut(), extra) {
        s.extend(e);
    }
    let mut registry = Registry::new();
    refsync_pipedrive::register(&mut registry);
    registry
        .build_connector("pipedrive", &settings)
        .expect("connector")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn delivery(body: Vec<u8>) -> WebhookRequest {
    WebhookRequest::post("https://refsync.example/hooks/pipedrive", body)
        .with_header("Content-Type", "application/json")
        .with_header("Authorization", basic_auth_header(USER, PASSWORD))
}

#[test]
fn stage_move_fixture_through_the_connector() {
    let conn = connector(json!({ "company_id": "8087566" }));
    let req = delivery(fixture("synthetic-v2_deal_stage_change"));
    assert_eq!(
        conn.verify(&req, Utc::now()).expect("verified"),
        Verification::Verified {
            scheme: "basic".into()
        }
    );
    let events = conn.parse(&req).expect("parsed");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.source, refsync_pipedrive::NAME);
    assert_eq!(e.object.kind, ObjectKind::Deal);
    assert_eq!(e.object.id, "8");
    assert_eq!(
        e.change,
        Change::StageChanged {
            pipeline: Some("1".into()),
            from: Some("2".into()),
            to: "3".into()
        }
    );
    assert_eq!(e.referral_code.as_deref(), Some("ADA-42"));
}

#[test]
fn v1_and_v2_fixtures_of_the_same_move_agree() {
    let conn = connector(json!({}));
    let v1 = conn
        .parse(&delivery(fixture("synthetic-v1_deal_updated_stage")))
        .expect("v1");
    let v2 = conn
        .parse(&delivery(fixture("synthetic-v2_deal_stage_change")))
        .expect("v2");
    assert_eq!(v1.len(), 1);
    assert_eq!(v1[0].change, v2[0].change);
    assert_eq!(v1[0].object, v2[0].object);
    assert_eq!(v1[0].referral_code, v2[0].referral_code);
    assert_eq!(v1[0].related, v2[0].related);
    assert_eq!(v1[0].account, v2[0].account);
}

#[test]
fn another_company_is_refused_with_context_and_no_secret() {
    let conn = connector(json!({ "company_id": "456" }));
    let e = conn
        .verify(&delivery(fixture("v2_deal_create")), Utc::now())
        .expect_err("other company");
    assert_eq!(e.kind(), &ErrorKind::Unauthorized);
    assert_eq!(e.connector(), Some("pipedrive"));
    assert_eq!(e.operation(), Some("verify"));
    assert!(
        e.message().contains("8087566") && e.message().contains("456"),
        "{e}"
    );
    let text = format!("{e} {e:?}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        !text.contains(&basic_auth_header(USER, PASSWORD)[6..]),
        "{text}"
    );
}

#[test]
fn malformed_body_is_a_tagged_validation_error() {
    let conn = connector(json!({}));
    let e = conn
        .parse(&delivery(b"<xml/>".to_vec()))
        .expect_err("not json");
    assert_eq!(e.kind(), &ErrorKind::Validation);
    assert_eq!(e.connector(), Some("pipedrive"));
    assert_eq!(e.operation(), Some("parse"));
}
