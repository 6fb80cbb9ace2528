//! Verification schemes and mapping features beyond what the conformance harness configures.

use chrono::{Duration, Utc};
use refsync_core::{Change, Connector, ErrorKind, ObjectKind, Verification, WebhookRequest};
use refsync_generic_webhook::{GenericWebhook, GenericWebhookConfig};
use serde_json::{Value, json};

fn connector(settings: Value) -> GenericWebhook {
    let cfg: GenericWebhookConfig = serde_json::from_value(settings).expect("settings parse");
    GenericWebhook::new(cfg).expect("settings are valid")
}

fn events() -> Value {
    json!({ "object_kind": { "value": "deal" }, "object_id": "/id", "stage": "/stage", "status": "/status",
            "coupon": "/coupon", "referral_code": "/code", "email": "/email", "occurred_at": "/at" })
}

const BODY: &[u8] = br#"{"id": 8, "stage": 3, "code": "ABC", "at": 1700000000}"#;

#[test]
fn hmac_hex_with_prefix() {
    let c = connector(
        json!({ "auth": { "type": "hmac", "header": "X-Hub-Signature-256", "secret": "s3cret-value", "prefix": "sha256=" }, "events": events() }),
    );
    let sig = refsync_http::hmac_sha256_hex(b"s3cret-value", BODY);
    let ok = WebhookRequest::post("/h", BODY)
        .with_header("X-Hub-Signature-256", format!("sha256={sig}"));
    assert_eq!(
        c.verify(&ok, Utc::now()).unwrap(),
        Verification::Verified {
            scheme: "hmac-sha256".into()
        }
    );
    let no_prefix =
        WebhookRequest::post("/h", BODY).with_header("X-Hub-Signature-256", sig.clone());
    assert_eq!(
        c.verify(&no_prefix, Utc::now()).unwrap_err().kind(),
        &ErrorKind::Unauthorized
    );
    let tampered = WebhookRequest::post("/h", &b"{\"id\": 9}"[..])
        .with_header("X-Hub-Signature-256", format!("sha256={sig}"));
    let e = c.verify(&tampered, Utc::now()).unwrap_err();
    assert!(
        e.to_string().contains("does not match") && !e.to_string().contains("s3cret-value"),
        "{e}"
    );
}

#[test]
fn hmac_base64_with_signed_timestamp_and_window() {
    let c = connector(
        json!({ "auth": { "type": "hmac", "header": "X-Sig", "secret": "k3y-k3y-k3y", "encoding": "base64",
                                        "timestamp_header": "X-Ts", "tolerance_secs": 60 }, "events": events() }),
    );
    let sign = |ts: i64| {
        let mut m = format!("{ts}.").into_bytes();
        m.extend_from_slice(BODY);
        WebhookRequest::post("/h", BODY)
            .with_header(
                "X-Sig",
                refsync_http::hmac_sha256_base64(b"k3y-k3y-k3y", &m),
            )
            .with_header("X-Ts", ts.to_string())
    };
    let now = Utc::now();
    assert!(c.verify(&sign(now.timestamp() - 30), now).is_ok());
    let stale = c.verify(&sign(now.timestamp() - 600), now).unwrap_err();
    assert_eq!(stale.kind(), &ErrorKind::Unauthorized);
    // The timestamp is signed: moving it breaks the signature.
    let mut moved = sign(now.timestamp() - 600);
    moved.set_header("X-Ts", now.timestamp().to_string());
    assert!(c.verify(&moved, now).is_err());
}

#[test]
fn token_in_header_bearer_or_query() {
    let header = connector(
        json!({ "auth": { "type": "token", "header": "X-Refsync-Token", "token": "tok-123456" }, "events": events() }),
    );
    assert!(
        header
            .verify(
                &WebhookRequest::post("/h", BODY).with_header("x-refsync-token", "tok-123456"),
                Utc::now()
            )
            .is_ok()
    );
    assert!(
        header
            .verify(
                &WebhookRequest::post("/h", BODY).with_header("x-refsync-token", "tok-123457"),
                Utc::now()
            )
            .is_err()
    );
    assert!(
        header
            .verify(&WebhookRequest::post("/h", BODY), Utc::now())
            .is_err()
    );
    let bearer = connector(
        json!({ "auth": { "type": "token", "header": "Authorization", "token": "tok-123456" }, "events": events() }),
    );
    assert!(
        bearer
            .verify(
                &WebhookRequest::post("/h", BODY).with_header("Authorization", "Bearer tok-123456"),
                Utc::now()
            )
            .is_ok()
    );
    let query = connector(
        json!({ "auth": { "type": "token", "query": "secret", "token": "tok 123/456" }, "events": events() }),
    );
    assert!(
        query
            .verify(
                &WebhookRequest::post("/h?x=1&secret=tok%20123%2F456", BODY),
                Utc::now()
            )
            .is_ok()
    );
    assert!(
        query
            .verify(&WebhookRequest::post("/h?secret=nope", BODY), Utc::now())
            .is_err()
    );
    let both = serde_json::from_value::<GenericWebhookConfig>(
        json!({ "auth": { "type": "token", "token": "t-1234", "header": "A", "query": "b" } }),
    )
    .unwrap();
    assert_eq!(
        GenericWebhook::new(both).unwrap_err().kind(),
        &ErrorKind::Config
    );
}

#[test]
fn basic_auth() {
    let c = connector(
        json!({ "auth": { "type": "basic", "user": "pipedrive", "password": "pa55-word" }, "events": events() }),
    );
    let good = refsync_http::basic_auth_header("pipedrive", "pa55-word");
    assert!(
        c.verify(
            &WebhookRequest::post("/h", BODY).with_header("Authorization", good),
            Utc::now()
        )
        .is_ok()
    );
    let bad = refsync_http::basic_auth_header("pipedrive", "pa55-wore");
    assert!(
        c.verify(
            &WebhookRequest::post("/h", BODY).with_header("Authorization", bad),
            Utc::now()
        )
        .is_err()
    );
}

#[test]
fn auth_none_is_reported_as_unverified() {
    let c = connector(json!({ "auth": { "type": "none" }, "events": events() }));
    assert!(matches!(
        c.verify(&WebhookRequest::post("/h", BODY), Utc::now())
            .unwrap(),
        Verification::Unverified { .. }
    ));
    // ...and auth can't be left out by accident.
    assert!(serde_json::from_value::<GenericWebhookConfig>(json!({ "events": events() })).is_err());
}

#[test]
fn derives_the_change_from_what_the_body_carries() {
    let c = connector(json!({ "auth": { "type": "none" }, "events": events() }));
    let ev = c.parse(&WebhookRequest::post("/h", BODY)).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].object.kind, ObjectKind::Deal);
    assert_eq!(ev[0].object.id, "8");
    assert_eq!(
        ev[0].change,
        Change::StageChanged {
            pipeline: None,
            from: None,
            to: "3".into()
        }
    );
    assert_eq!(ev[0].referral_code.as_deref(), Some("ABC"));
    assert_eq!(ev[0].occurred_at.unwrap().timestamp(), 1_700_000_000);
    let coupon = c
        .parse(&WebhookRequest::post(
            "/h",
            &br#"{"id":"o1","coupon":"FRIEND-9","status":"Processing"}"#[..],
        ))
        .unwrap();
    assert_eq!(
        coupon[0].change,
        Change::CouponUsed {
            code: "FRIEND-9".into(),
            order_status: Some("processing".into())
        }
    );
}

#[test]
fn form_bodies_and_batches() {
    // Referral Factory's inbound-webhook style: form-encoded `code=` / `coupon=`.
    let form = connector(json!({ "auth": { "type": "none" },
        "events": { "object_kind": { "value": "order" }, "object_id": "/order", "coupon": "/coupon", "status": { "value": "paid" } } }));
    let req = WebhookRequest::post("/h", &b"order=55&coupon=SPRING%2D1"[..])
        .with_header("Content-Type", "application/x-www-form-urlencoded");
    let ev = form.parse(&req).unwrap();
    assert_eq!(
        ev[0].change,
        Change::CouponUsed {
            code: "SPRING-1".into(),
            order_status: Some("paid".into())
        }
    );

    let batch = connector(json!({ "auth": { "type": "none" },
        "events": { "items": "/events", "object_kind": "/type", "object_id": "/id", "change": "/event",
                    "change_types": { "deal.won": "status_changed", "deal.noise": "ignore" }, "status": { "value": "won" } } }));
    let body = br#"{"events":[{"type":"deal","id":1,"event":"deal.won"},{"type":"deal","id":2,"event":"deal.noise"},{"type":"deal","id":3,"event":"unknown"}]}"#;
    let ev = batch.parse(&WebhookRequest::post("/h", &body[..])).unwrap();
    assert_eq!(
        ev.len(),
        1,
        "ignored and unknown event names yield nothing: {ev:?}"
    );
    assert_eq!(
        ev[0].change,
        Change::StatusChanged {
            from: None,
            to: "won".into()
        }
    );
    let e = batch
        .parse(&WebhookRequest::post(
            "/h",
            &br#"{"events":[{"type":"deal","event":"deal.won"}]}"#[..],
        ))
        .unwrap_err();
    assert!(
        e.to_string().contains("item 0") && e.to_string().contains("/id"),
        "{e}"
    );
}

#[test]
fn bad_settings_are_clear_config_errors() {
    for (settings, needle) in [
        (
            json!({ "auth": { "type": "none" }, "events": { "object_kind": "deal", "object_id": "/id" } }),
            "not a JSON pointer",
        ),
        (
            json!({ "auth": { "type": "none" }, "push": { "url": "ftp://x" } }),
            "push.url",
        ),
        (
            json!({ "auth": { "type": "none" }, "push": { "url": "https://x", "body": { "a": "{Referal Code}" } } }),
            "push.body.a",
        ),
        (
            json!({ "auth": { "type": "hmac", "header": "X", "secret": "" } }),
            "secret",
        ),
    ] {
        let err = serde_json::from_value::<GenericWebhookConfig>(settings.clone())
            .map_err(|e| e.to_string())
            .and_then(|c| {
                GenericWebhook::new(c)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .unwrap_err();
        assert!(err.contains(needle), "{settings}: {err}");
    }
}

proptest::proptest! {
    #[test]
    fn parse_and_verify_never_panic_on_any_body(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256), form in proptest::bool::ANY) {
        let c = connector(json!({ "auth": { "type": "hmac", "header": "X-Sig", "secret": "k-123456", "timestamp_header": "X-Ts" },
            "format": if form { "form" } else { "json" }, "events": events() }));
        let req = WebhookRequest::post("/h", body).with_header("X-Sig", "zz").with_header("X-Ts", "9999999999999999999999");
        let _ = c.parse(&req);
        let _ = c.verify(&req, Utc::now() - Duration::days(1));
    }
}

#[test]
fn a_stage_that_did_not_move_is_not_reported_and_status_is() {
    let c = connector(json!({ "auth": { "type": "none" }, "events": {
        "object_kind": { "value": "deal" }, "object_id": "/deal/id", "stage": "/deal/stage_id",
        "previous_stage": "/previous/stage_id", "status": "/deal/status", "previous_status": "/previous/status" } }));
    let body = br#"{"deal":{"id":8,"stage_id":3,"status":"won"},"previous":{"stage_id":3,"status":"open"}}"#;
    let ev = c.parse(&WebhookRequest::post("/h", &body[..])).unwrap();
    let changes: Vec<&Change> = ev.iter().map(|e| &e.change).collect();
    assert_eq!(
        changes,
        [&Change::StatusChanged {
            from: Some("open".into()),
            to: "won".into()
        }]
    );
    // Pipedrive-style `previous` with only the changed fields: no previous stage = unchanged.
    let body = br#"{"deal":{"id":8,"stage_id":3,"status":"open"},"previous":{"title":"old"}}"#;
    let ev = c.parse(&WebhookRequest::post("/h", &body[..])).unwrap();
    assert_eq!(
        ev.iter().map(|e| &e.change).collect::<Vec<_>>(),
        [&Change::Updated { fields: vec![] }]
    );
    // Both moved: two events from one delivery.
    let body = br#"{"deal":{"id":8,"stage_id":4,"status":"won"},"previous":{"stage_id":3,"status":"open"}}"#;
    assert_eq!(
        c.parse(&WebhookRequest::post("/h", &body[..]))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn unix_timestamps_as_text_are_read() {
    let c = connector(json!({ "auth": { "type": "none" }, "events": {
        "object_kind": { "value": "deal" }, "object_id": "/id", "occurred_at": "/ts" } }));
    for (ts, want) in [
        ("1700000000", 1_700_000_000),
        ("1700000000123", 1_700_000_000),
    ] {
        let body = format!(r#"{{"id":1,"ts":"{ts}"}}"#);
        let ev = c
            .parse(&WebhookRequest::post("/h", body.into_bytes()))
            .unwrap();
        assert_eq!(ev[0].occurred_at.unwrap().timestamp(), want, "{ts}");
    }
    let form = WebhookRequest::post("/h", &b"id=1&ts=1700000000"[..])
        .with_header("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(
        c.parse(&form).unwrap()[0].occurred_at.unwrap().timestamp(),
        1_700_000_000
    );
}

#[test]
fn push_urls_are_never_printed() {
    let c = connector(json!({ "auth": { "type": "none" }, "push": {
        "url": "https://hooks.example.com/catch/123/abc?token=s3cr3t-q",
        "health_url": "https://hooks.example.com/health/s3cr3t-h",
        "headers": { "X-Key": "s3cr3t-k" } } }));
    let shown = format!("{c:?}");
    for s in ["s3cr3t-q", "s3cr3t-h", "s3cr3t-k", "/catch/123"] {
        assert!(!shown.contains(s), "{s} printed: {shown}");
    }
    let bad = serde_json::from_value::<GenericWebhookConfig>(
        json!({ "auth": { "type": "none" }, "push": { "url": "https:///nohost?token=s3cr3t-z" } }),
    )
    .unwrap();
    let e = GenericWebhook::new(bad).unwrap_err().to_string();
    assert!(e.contains("push.url") && !e.contains("s3cr3t-z"), "{e}");
}
