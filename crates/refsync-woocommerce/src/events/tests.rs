#![allow(clippy::needless_pass_by_value)] // json! takes its values by reference

use base64::Engine as _;
use chrono::TimeZone;
use proptest::prelude::*;
use refsync_core::ErrorKind;
use refsync_http::signature::hmac_sha256_base64;
use serde_json::json;

use super::*;

const SECRET: &str = "wc-webhook-secret-for-tests-7f3a9c";
const SITE: &str = "https://shop.example.com";
const META_KEY: &str = "referral_code";

const ORDER: &str = include_str!("../../tests/fixtures/order-retrieve-docs-v3.json");
const COUPON: &str = include_str!("../../tests/fixtures/coupon-retrieve-docs-v3.json");
const CUSTOMER: &str = include_str!("../../tests/fixtures/customer-retrieve-docs-v3.json");
const PENDING: &str =
    include_str!("../../tests/fixtures/synthetic-order-created-pending-with-coupon.json");
const PROCESSING: &str =
    include_str!("../../tests/fixtures/synthetic-order-updated-processing-with-coupon.json");
const COMPLETED: &str =
    include_str!("../../tests/fixtures/synthetic-order-updated-completed-two-coupons.json");
const REFUNDED: &str =
    include_str!("../../tests/fixtures/synthetic-order-updated-refunded-with-coupon.json");
const DELETED: &str = include_str!("../../tests/fixtures/synthetic-order-deleted.json");
const LEGACY: &str = include_str!("../../tests/fixtures/synthetic-order-legacy-v3-wrapped.json");
const CUSTOMER_META: &str =
    include_str!("../../tests/fixtures/synthetic-customer-created-with-referral-meta.json");
const WCIOS_30OFF: &str =
    include_str!("../../tests/data/order-with-coupon-30off-wcios-wrapped.json");

fn secret(s: &str) -> Secret {
    Secret::new(s)
}

/// A delivery of `topic` as WooCommerce sends it, unsigned.
fn request(topic: &str, body: impl Into<Vec<u8>>) -> WebhookRequest {
    WebhookRequest::post("https://refsync.example/hooks/woocommerce", body)
        .with_header("Content-Type", "application/json")
        .with_header("X-WC-Webhook-Topic", topic)
        .with_header("X-WC-Webhook-Source", format!("{SITE}/"))
        .with_header("X-WC-Webhook-ID", "27")
}

/// `request` signed with `key`, the way WooCommerce signs (independent of the code under test:
/// hmac + sha2 + base64 straight from the crates).
fn signed_with(key: &str, topic: &str, body: &[u8]) -> WebhookRequest {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    request(topic, body.to_vec()).with_header("X-WC-Webhook-Signature", signature)
}

fn signed(topic: &str, body: &[u8]) -> WebhookRequest {
    signed_with(SECRET, topic, body)
}

fn opts() -> ParseOptions {
    ParseOptions {
        referral_code_meta_key: Some(META_KEY.into()),
        ..ParseOptions::default()
    }
}

fn parse_ok(opts: &ParseOptions, topic: &str, body: &str) -> Vec<CrmEvent> {
    parse(opts, &request(topic, body)).expect("parse")
}

fn object(text: &str) -> Object {
    match serde_json::from_str(text).expect("JSON") {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

fn order_with(status: &str, codes: &[&str], modified: &str) -> Object {
    let mut o = object(ORDER);
    o.insert("status".into(), json!(status));
    o.insert("date_modified_gmt".into(), json!(modified));
    let lines: Vec<Value> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": 900 + i, "code": c, "discount": "1.00", "discount_tax": "0.00", "meta_data": []})
        })
        .collect();
    o.insert("coupon_lines".into(), Value::Array(lines));
    o
}

fn coupon_used(code: &str, status: Option<&str>) -> Change {
    Change::CouponUsed {
        code: code.into(),
        order_status: status.map(Into::into),
    }
}

fn status_changed(to: &str) -> Change {
    Change::StatusChanged {
        from: None,
        to: to.into(),
    }
}

fn coupon(code: &str) -> EventObject {
    EventObject {
        kind: ObjectKind::Coupon,
        id: code.into(),
    }
}

fn changes(events: &[CrmEvent]) -> Vec<Change> {
    events.iter().map(|e| e.change.clone()).collect()
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<DateTime<Utc>> {
    Some(Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap())
}

fn unauthorized(result: Result<Verification>) -> String {
    let e = result.expect_err("verify must refuse");
    assert_eq!(e.kind(), &ErrorKind::Unauthorized, "{e}");
    let text = format!("{e} / {e:?}");
    assert!(!text.contains('\n'), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    e.message().to_owned()
}

fn validation(result: Result<Vec<CrmEvent>>) -> String {
    let e = result.expect_err("parse must refuse");
    assert_eq!(e.kind(), &ErrorKind::Validation, "{e}");
    assert!(!e.message().contains('\n'), "{e:?}");
    e.message().to_owned()
}

// ---------------------------------------------------------------- verify

#[test]
fn a_valid_signature_over_the_exact_bytes_is_accepted() {
    for (topic, body) in [
        ("order.updated", ORDER),
        ("order.updated", PROCESSING),
        ("coupon.updated", COUPON),
        ("customer.updated", CUSTOMER),
        ("order.deleted", DELETED),
    ] {
        let v = verify(&secret(SECRET), &signed(topic, body.as_bytes())).expect(topic);
        assert_eq!(
            v,
            Verification::Verified {
                scheme: "hmac-sha256".into()
            }
        );
    }
    // The helper of refsync-http produces the same header value.
    let req = request("order.updated", ORDER).with_header(
        "x-wc-webhook-signature",
        hmac_sha256_base64(SECRET.as_bytes(), ORDER.as_bytes()),
    );
    assert!(verify(&secret(SECRET), &req).is_ok());
}

#[test]
fn the_wire_body_is_verified_as_received_never_re_serialized() {
    // The synthetic processing order is in wp_json_encode's form (`\/`); serde would write `/`.
    assert!(PROCESSING.contains("\\/"));
    let reserialized =
        serde_json::to_vec(&serde_json::from_str::<Value>(PROCESSING).unwrap()).expect("serialize");
    assert_ne!(reserialized, PROCESSING.as_bytes());
    let mut req = signed("order.updated", PROCESSING.as_bytes());
    assert!(verify(&secret(SECRET), &req).is_ok());
    req.body = reserialized;
    let m = unauthorized(verify(&secret(SECRET), &req));
    assert!(m.starts_with("signature mismatch"), "{m}");
}

#[test]
fn a_tampered_body_is_refused() {
    let mut req = signed("order.updated", ORDER.as_bytes());
    req.body = ORDER
        .replace("\"processing\"", "\"completed\"")
        .into_bytes();
    let m = unauthorized(verify(&secret(SECRET), &req));
    assert_eq!(
        m,
        "signature mismatch: webhook_secret must be the webhook's own secret (not the REST API consumer secret), and the body must reach refsync unmodified"
    );
    // One byte more (a trailing newline some proxies add) is a change too.
    let mut req = signed("order.updated", ORDER.as_bytes());
    req.body.push(b'\n');
    unauthorized(verify(&secret(SECRET), &req));
}

#[test]
fn another_secret_is_refused() {
    let req = signed_with(
        "cs_consumer_secret_of_the_rest_api",
        "order.updated",
        ORDER.as_bytes(),
    );
    let m = unauthorized(verify(&secret(SECRET), &req));
    assert!(m.contains("not the REST API consumer secret"), "{m}");
    // The right signature checked against another configured secret.
    let req = signed("order.updated", ORDER.as_bytes());
    unauthorized(verify(&secret("wc-webhook-secret-for-tests-7f3a9d"), &req));
}

#[test]
fn a_missing_or_blank_signature_is_refused() {
    let m = unauthorized(verify(&secret(SECRET), &request("order.updated", ORDER)));
    assert!(
        m.starts_with("missing X-WC-Webhook-Signature header"),
        "{m}"
    );
    assert!(m.contains("WooCommerce signs every delivery"), "{m}");
    assert!(m.contains("ping"), "{m}");
    let blank = request("order.updated", ORDER).with_header("X-WC-Webhook-Signature", "  ");
    let m = unauthorized(verify(&secret(SECRET), &blank));
    assert!(m.starts_with("missing"), "{m}");
    // Garbage that is not base64 is a mismatch, not a crash.
    let garbage = request("order.updated", ORDER).with_header("X-WC-Webhook-Signature", "%%%");
    let m = unauthorized(verify(&secret(SECRET), &garbage));
    assert!(m.starts_with("signature mismatch"), "{m}");
}

#[test]
fn an_empty_secret_is_refused_even_with_its_own_signature() {
    let req = signed_with("", "order.updated", ORDER.as_bytes());
    let m = unauthorized(verify(&secret(""), &req));
    assert!(m.contains("webhook_secret is empty"), "{m}");
}

#[test]
fn html_escaped_secrets_of_old_stores_are_accepted() {
    let configured = r#"s3cr&t<"quoted">'x'"#;
    let escaped = "s3cr&amp;t&lt;&quot;quoted&quot;&gt;&#039;x&#039;";
    assert_eq!(esc_html(configured).as_deref(), Some(escaped));
    assert_eq!(esc_html(SECRET), None);
    // Current stores decode the secret before signing; old ones signed with the escaped form.
    for key in [configured, escaped] {
        let req = signed_with(key, "order.updated", ORDER.as_bytes());
        assert!(
            verify(&secret(configured), &req).is_ok(),
            "signed with {key}"
        );
    }
    // The escaped variant is only tried for the configured secret, not any other.
    let req = signed_with("s3cr&amp;t", "order.updated", ORDER.as_bytes());
    unauthorized(verify(&secret(configured), &req));
    // "a&b" also accepts its escaped form "a&amp;b"; a secret without special characters has
    // no escaped variant to fall back on.
    let req = signed_with("a&amp;b", "order.updated", ORDER.as_bytes());
    assert!(verify(&secret("a&b"), &req).is_ok());
    unauthorized(verify(&secret("ab"), &req));
}

#[test]
fn refusals_name_neither_the_secret_nor_the_signatures() {
    let special = "p&ss<word>-9";
    let expected = hmac_sha256_base64(SECRET.as_bytes(), ORDER.as_bytes());
    let wrong = signed_with("other-secret", "order.updated", ORDER.as_bytes());
    let wrong_sig = wrong.header("X-WC-Webhook-Signature").unwrap().to_owned();
    let mut tampered = signed("order.updated", ORDER.as_bytes());
    tampered.body.push(b' ');
    let cases = [
        (secret(SECRET), request("order.updated", ORDER)),
        (secret(SECRET), wrong),
        (secret(SECRET), tampered),
        (secret(special), signed("order.updated", ORDER.as_bytes())),
        (secret(""), signed("order.updated", ORDER.as_bytes())),
    ];
    for (s, req) in cases {
        let e = verify(&s, &req).unwrap_err();
        let text = format!("{e} / {e:?}");
        for needle in [
            SECRET,
            special,
            "p&amp;ss",
            expected.as_str(),
            wrong_sig.as_str(),
        ] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
    }
}

// ---------------------------------------------------------------- is_ping

#[test]
fn the_creation_ping_is_recognised() {
    let ping = |body: &str| WebhookRequest::post("/hooks/woocommerce", body.as_bytes().to_vec());
    assert!(is_ping(&ping("webhook_id=12")));
    assert!(is_ping(&ping("webhook_id=12\n")));
    assert!(is_ping(&ping(" webhook_id=12345678901234567890 ")));
    assert!(is_ping(&ping("webhook_id=27").with_header(
        "Content-Type",
        "application/x-www-form-urlencoded"
    )));
}

#[test]
fn anything_else_is_not_a_ping() {
    let ping = |body: &[u8]| WebhookRequest::post("/hooks/woocommerce", body.to_vec());
    for body in [
        &b"webhook_id="[..],
        b"webhook_id=12&x=1",
        b"webhook_id=1a",
        b"webhook_id=-1",
        b"webhook_id= 12",
        b"webhook_id=123456789012345678901",
        b"WEBHOOK_ID=12",
        b"x=1&webhook_id=12",
        b"{\"webhook_id\": 12}",
        b"",
        b"webhook_id=\xff",
        ORDER.as_bytes(),
    ] {
        assert!(!is_ping(&ping(body)), "{:?}", String::from_utf8_lossy(body));
    }
    // Signed: a real delivery, never a handshake (even with a ping-like body).
    let signed_ping = signed("order.updated", b"webhook_id=12");
    assert!(!is_ping(&signed_ping));
    let blank_signature = ping(b"webhook_id=12").with_header("X-WC-Webhook-Signature", "");
    assert!(!is_ping(&blank_signature));
}

// ---------------------------------------------------------------- parse: real fixtures

#[test]
fn official_order_gives_a_processing_status_event() {
    let events = parse_ok(&opts(), "order.updated", ORDER);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.source, "woocommerce");
    assert_eq!(
        e.object,
        EventObject {
            kind: ObjectKind::Order,
            id: "727".into()
        }
    );
    assert_eq!(e.change, status_changed("paid"));
    assert_eq!(e.delivery_id.as_deref(), Some("order:727:processing:"));
    assert_eq!(e.occurred_at, at(2017, 3, 22, 19, 28, 8));
    assert_eq!(e.account.as_deref(), Some(SITE));
    assert_eq!(e.email, None);
    assert_eq!(e.referral_code, None);
    assert!(e.related.is_empty());
}

#[test]
fn official_coupon_gives_an_update_of_the_code() {
    let events = parse_ok(&opts(), "coupon.updated", COUPON);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.object, coupon("10off"));
    assert_eq!(e.change, Change::Updated { fields: vec![] });
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("coupon:719:updated:2017-03-21T18:23:00")
    );
    assert_eq!(e.occurred_at, at(2017, 3, 21, 18, 23, 0));
    assert_eq!(e.account.as_deref(), Some(SITE));
    let created = parse_ok(&opts(), "coupon.created", COUPON);
    assert_eq!(created[0].change, Change::Created);
    assert_eq!(
        created[0].delivery_id.as_deref(),
        Some("coupon:719:created:2017-03-21T18:23:00")
    );
    let restored = parse_ok(&opts(), "coupon.restored", COUPON);
    assert_eq!(restored[0].change, Change::Updated { fields: vec![] });
}

#[test]
fn official_customer_gives_a_contact_update() {
    let events = parse_ok(&opts(), "customer.updated", CUSTOMER);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        e.object,
        EventObject {
            kind: ObjectKind::Contact,
            id: "25".into()
        }
    );
    assert_eq!(e.change, Change::Updated { fields: vec![] });
    assert_eq!(e.email.as_deref(), Some("john.doe@example.com"));
    assert_eq!(e.referral_code, None);
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("customer:25:updated:2017-03-21T19:09:30")
    );
    assert_eq!(e.occurred_at, at(2017, 3, 21, 19, 9, 30));
    assert_eq!(e.account.as_deref(), Some(SITE));
}

#[test]
fn customer_created_carries_the_referral_code_meta() {
    let events = parse_ok(&opts(), "customer.created", CUSTOMER_META);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.object.id, "26");
    assert_eq!(e.change, Change::Created);
    assert_eq!(e.email.as_deref(), Some("jane.roe@example.com"));
    assert_eq!(e.referral_code.as_deref(), Some("ADA-42"));
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("customer:26:created:2024-05-02T13:14:31")
    );
    // Without the key configured, no code is read.
    let plain = parse_ok(&ParseOptions::default(), "customer.created", CUSTOMER_META);
    assert_eq!(plain[0].referral_code, None);
    // Deleted customers send only their id.
    let deleted = parse_ok(&opts(), "customer.deleted", r#"{"id":26}"#);
    assert_eq!(deleted[0].change, Change::Deleted);
    assert_eq!(deleted[0].object.id, "26");
    assert_eq!(deleted[0].email, None);
    assert_eq!(
        deleted[0].delivery_id.as_deref(),
        Some("customer:26:deleted:")
    );
}

#[test]
fn deleted_orders_and_coupons_send_only_their_id() {
    let events = parse_ok(&opts(), "order.deleted", DELETED);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].object,
        EventObject {
            kind: ObjectKind::Order,
            id: "727".into()
        }
    );
    assert_eq!(events[0].change, Change::Deleted);
    assert_eq!(events[0].delivery_id.as_deref(), Some("order:727:deleted"));
    assert_eq!(events[0].account.as_deref(), Some(SITE));

    let events = parse_ok(&opts(), "coupon.deleted", r#"{"id":"719"}"#);
    assert_eq!(
        events[0].object,
        EventObject {
            kind: ObjectKind::Other("coupon_id".into()),
            id: "719".into()
        }
    );
    assert_eq!(events[0].change, Change::Deleted);
    assert_eq!(
        events[0].delivery_id.as_deref(),
        Some("coupon:719:deleted:")
    );
}

#[test]
fn legacy_bodies_are_unwrapped() {
    let events = parse_ok(&opts(), "order.updated", LEGACY);
    assert_eq!(
        changes(&events),
        vec![coupon_used("ada-42", Some("paid")), status_changed("paid")]
    );
    assert_eq!(events[1].object.id, "727");
    assert_eq!(
        events[1].delivery_id.as_deref(),
        Some("order:727:processing:ada-42")
    );
    // Same events as the bare object.
    let inner = object(LEGACY).remove("order").unwrap().to_string();
    assert_eq!(parse_ok(&opts(), "order.updated", &inner), events);

    let wrapped = format!(r#"{{"customer": {CUSTOMER}}}"#);
    assert_eq!(
        parse_ok(&opts(), "customer.updated", &wrapped),
        parse_ok(&opts(), "customer.updated", CUSTOMER)
    );
    let wrapped = format!(r#"{{"coupon": {COUPON}}}"#);
    assert_eq!(
        parse_ok(&opts(), "coupon.updated", &wrapped)[0].object,
        coupon("10off")
    );
    let wrapped = r#"{"order": {"id": 727}}"#;
    assert_eq!(
        parse_ok(&opts(), "order.deleted", wrapped)[0].object.id,
        "727"
    );

    // Only the resource's own name, and only as the single key.
    let e = validation(parse(
        &opts(),
        &request("order.updated", format!(r#"{{"customer": {CUSTOMER}}}"#)),
    ));
    assert!(e.contains("no valid id"), "{e}");
    let e = validation(parse(
        &opts(),
        &request("order.updated", format!(r#"{{"order": {ORDER}, "x": 1}}"#)),
    ));
    assert!(e.contains("no valid id"), "{e}");
}

#[test]
fn legacy_v3_field_names_are_read() {
    // legacy v3 (wc-api/v3) orders: updated_at with a Z, billing_address, coupon_lines {id, code, amount}.
    let body = json!({"order": {
        "id": 645, "order_number": 645, "status": "completed",
        "created_at": "2015-01-26T20:00:21Z", "updated_at": "2015-01-26T20:00:21Z",
        "billing_address": {"first_name": "John", "email": "john.doe@example.com"},
        "customer_id": 2,
        "coupon_lines": [{"id": 680, "code": "Ada-42", "amount": "10.00"}]
    }});
    let events = parse_ok(&opts(), "order.updated", &body.to_string());
    assert_eq!(
        changes(&events),
        vec![coupon_used("ada-42", Some("paid")), status_changed("paid")]
    );
    assert_eq!(events[0].email.as_deref(), Some("john.doe@example.com"));
    assert_eq!(events[0].occurred_at, at(2015, 1, 26, 20, 0, 21));
}

#[test]
fn products_actions_and_unknown_topics_give_nothing() {
    for topic in [
        "product.updated",
        "product.created",
        "action.woocommerce_payment_complete",
        "order.trashed",
        "order",
        "subscription.updated",
        "coupon.",
    ] {
        for body in [ORDER, "not json", "[]"] {
            assert_eq!(parse_ok(&opts(), topic, body), vec![], "{topic}");
        }
    }
    // The topic is read case-insensitively and trimmed.
    assert_eq!(parse_ok(&opts(), " Order.Updated ", ORDER).len(), 1);
}

#[test]
fn a_missing_topic_is_a_validation_error() {
    let mut req = request("order.updated", ORDER);
    req.remove_header("X-WC-Webhook-Topic");
    let m = validation(parse(&opts(), &req));
    assert!(m.contains("missing X-WC-Webhook-Topic header"), "{m}");
    req.set_header("X-WC-Webhook-Topic", " ");
    validation(parse(&opts(), &req));
}

#[test]
fn malformed_bodies_are_validation_errors() {
    for (topic, body, needle) in [
        ("order.updated", &b"not json"[..], "not JSON"),
        ("order.updated", b"", "not JSON"),
        ("order.updated", b"webhook_id=12", "not JSON"),
        ("order.updated", b"\xff\xfe", "not JSON"),
        ("order.updated", b"[1,2]", "not a JSON object"),
        ("customer.created", b"\"25\"", "not a JSON object"),
        ("coupon.updated", b"42", "not a JSON object"),
        ("order.updated", b"null", "not a JSON object"),
        ("order.updated", b"{}", "no valid id"),
        ("order.deleted", b"{}", "no valid id"),
        ("order.updated", br#"{"id": "72x"}"#, "no valid id"),
        (
            "order.updated",
            br#"{"id": "garbage", "status": "completed"}"#,
            "no valid id",
        ),
        ("order.updated", br#"{"id": -5}"#, "no valid id"),
        ("order.updated", br#"{"id": 0}"#, "no valid id"),
        ("order.updated", br#"{"id": 7.5}"#, "no valid id"),
        ("order.updated", br#"{"id": null}"#, "no valid id"),
        (
            "order.updated",
            br#"{"id": "99999999999999999999999"}"#,
            "no valid id",
        ),
        ("customer.updated", br#"{"id": [25]}"#, "no valid id"),
        ("coupon.deleted", br#"{"id": {"id": 1}}"#, "no valid id"),
    ] {
        let m = validation(parse(&opts(), &request(topic, body)));
        assert!(
            m.contains(needle),
            "{topic} {:?}: {m}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn ids_may_be_numeric_strings() {
    let events = parse_ok(&opts(), "order.deleted", r#"{"id": " 0727 "}"#);
    assert_eq!(events[0].object.id, "727");
    let events = parse_ok(
        &opts(),
        "customer.updated",
        r#"{"id": "25", "email": " a@b.c "}"#,
    );
    assert_eq!(events[0].object.id, "25");
    assert_eq!(events[0].email.as_deref(), Some("a@b.c"));
}

#[test]
fn the_account_is_the_site_without_trailing_slash() {
    let mut req = request("order.updated", ORDER);
    assert_eq!(
        parse(&opts(), &req).unwrap()[0].account.as_deref(),
        Some(SITE)
    );
    req.set_header("X-WC-Webhook-Source", " https://shop.example.com/store/ ");
    assert_eq!(
        parse(&opts(), &req).unwrap()[0].account.as_deref(),
        Some("https://shop.example.com/store")
    );
    req.remove_header("X-WC-Webhook-Source");
    assert_eq!(parse(&opts(), &req).unwrap()[0].account, None);
}

// ---------------------------------------------------------------- order_events

#[test]
fn pending_order_with_a_coupon_reports_the_use_but_no_status() {
    let events = parse_ok(&opts(), "order.created", PENDING);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.object, coupon("ada-42"));
    assert_eq!(e.change, coupon_used("ada-42", Some("pending")));
    assert_eq!(e.email.as_deref(), Some("jane.roe@example.com"));
    assert_eq!(e.delivery_id.as_deref(), Some("order:731:pending:ada-42"));
    assert_eq!(e.occurred_at, at(2024, 5, 2, 13, 15, 2));
    assert_eq!(e.account.as_deref(), Some(SITE));
    assert!(e.related.is_empty());
}

#[test]
fn processing_order_with_a_coupon_reports_use_and_status() {
    let events = parse_ok(&opts(), "order.updated", PROCESSING);
    assert_eq!(
        changes(&events),
        vec![coupon_used("ada-42", Some("paid")), status_changed("paid")]
    );
    let (used, status) = (&events[0], &events[1]);
    assert_eq!(used.object, coupon("ada-42"));
    assert_eq!(used.email.as_deref(), Some("jane.roe@example.com"));
    assert!(used.related.is_empty(), "coupon events relate to nothing");
    assert_eq!(
        status.object,
        EventObject {
            kind: ObjectKind::Order,
            id: "731".into()
        }
    );
    assert_eq!(status.email, None, "status events carry no email");
    assert_eq!(status.related, vec![coupon("ada-42")]);
    for e in &events {
        assert_eq!(
            e.delivery_id.as_deref(),
            Some("order:731:processing:ada-42")
        );
        assert_eq!(e.occurred_at, at(2024, 5, 2, 13, 15, 9));
        assert_eq!(e.account.as_deref(), Some(SITE));
    }
}

#[test]
fn completed_order_with_two_coupons_normalizes_their_codes() {
    let events = parse_ok(&opts(), "order.updated", COMPLETED);
    assert_eq!(
        changes(&events),
        vec![
            coupon_used("ada-42", Some("paid")),
            coupon_used("summer&sun", Some("paid")),
            status_changed("paid"),
        ]
    );
    assert_eq!(
        events[2].related,
        vec![coupon("ada-42"), coupon("summer&sun")]
    );
    assert_eq!(events[0].object, coupon("ada-42"));
    assert_eq!(events[1].object, coupon("summer&sun"));
    for e in &events {
        assert_eq!(
            e.delivery_id.as_deref(),
            Some("order:732:completed:ada-42,summer&sun")
        );
    }
}

#[test]
fn refunded_order_reports_status_refunded() {
    let events = parse_ok(&opts(), "order.updated", REFUNDED);
    assert_eq!(
        changes(&events),
        vec![
            coupon_used("ada-42", Some("refunded")),
            status_changed("refunded")
        ]
    );
    assert_eq!(events[1].email, None);
    assert_eq!(events[1].occurred_at, at(2024, 5, 9, 16, 41, 55));
    assert_eq!(
        events[1].delivery_id.as_deref(),
        Some("order:731:refunded:ada-42")
    );
}

#[test]
fn statuses_reported_and_not() {
    let o = |status: &str| {
        order_events(
            &opts(),
            &order_with(status, &[], "2024-01-01T00:00:00"),
            None,
        )
    };
    for status in [
        "processing",
        "completed",
        "refunded",
        "cancelled",
        "failed",
        "Completed",
    ] {
        let events = o(status);
        assert_eq!(
            changes(&events),
            // The store's paid statuses are reported as `paid`, the closing ones as they are.
            vec![status_changed(match status.to_lowercase().as_str() {
                "processing" | "completed" => "paid",
                other => other,
            })],
            "{status}"
        );
    }
    for status in [
        "pending",
        "on-hold",
        "checkout-draft",
        "trash",
        "shipped",
        "",
        "  ",
    ] {
        assert_eq!(o(status), vec![], "{status}");
    }
    // Custom paid statuses replace the default ones (closing statuses stay).
    let custom = ParseOptions {
        paid_statuses: vec!["Shipped".into()],
        ..opts()
    };
    let events = order_events(&custom, &order_with("shipped", &[], "x"), None);
    assert_eq!(changes(&events), vec![status_changed("paid")]);
    assert_eq!(
        order_events(&custom, &order_with("processing", &[], "x"), None),
        vec![]
    );
    assert_eq!(
        order_events(&custom, &order_with("refunded", &[], "x"), None).len(),
        1
    );
}

#[test]
fn unknown_status_still_reports_coupons_without_order_status() {
    let mut o = order_with("processing", &["ada-42"], "2024-01-01T00:00:00");
    o.remove("status");
    let events = order_events(&opts(), &o, Some(SITE));
    assert_eq!(changes(&events), vec![coupon_used("ada-42", None)]);
    assert_eq!(events[0].delivery_id.as_deref(), Some("order:727::ada-42"));
    o.insert("status".into(), json!(""));
    assert_eq!(
        changes(&order_events(&opts(), &o, None)),
        vec![coupon_used("ada-42", None)]
    );
    o.insert("status".into(), json!(5));
    assert_eq!(
        changes(&order_events(&opts(), &o, None)),
        vec![coupon_used("ada-42", None)]
    );
}

#[test]
fn prefix_filter_selects_the_counted_codes_but_not_the_delivery_id() {
    let filtered = ParseOptions {
        coupon_prefix: Some(" REF-".into()),
        ..opts()
    };
    let o = order_with(
        "completed",
        &["ref-ada", "SUMMER10", "Ref-Bob"],
        "2024-01-01T00:00:00",
    );
    let events = order_events(&filtered, &o, None);
    assert_eq!(
        changes(&events),
        vec![
            coupon_used("ref-ada", Some("paid")),
            coupon_used("ref-bob", Some("paid")),
            status_changed("paid"),
        ]
    );
    assert_eq!(
        events[2].related,
        vec![coupon("ref-ada"), coupon("ref-bob")]
    );
    for e in &events {
        assert_eq!(
            e.delivery_id.as_deref(),
            Some("order:727:completed:ref-ada,ref-bob,summer10")
        );
    }
    // No code passes: only the status event, with nothing related.
    let none = order_events(
        &filtered,
        &order_with("completed", &["summer10"], "x"),
        None,
    );
    assert_eq!(changes(&none), vec![status_changed("paid")]);
    assert!(none[0].related.is_empty());
    // An empty prefix filters nothing.
    let empty = ParseOptions {
        coupon_prefix: Some("  ".into()),
        ..opts()
    };
    assert_eq!(order_events(&empty, &o, None).len(), 4);
}

#[test]
fn repeated_and_empty_codes_count_once() {
    let o = order_with(
        "processing",
        &[
            "ada-42",
            "ADA-42",
            " ada-42 ",
            "",
            "  ",
            "bob&#039;s",
            "bob's",
        ],
        "x",
    );
    let events = order_events(&opts(), &o, None);
    assert_eq!(
        changes(&events),
        vec![
            coupon_used("ada-42", Some("paid")),
            coupon_used("bob's", Some("paid")),
            status_changed("paid"),
        ]
    );
    assert_eq!(
        events[0].delivery_id.as_deref(),
        Some("order:727:processing:ada-42,bob's")
    );
}

#[test]
fn delivery_id_is_the_order_state() {
    let id = |status: &str, codes: &[&str], modified: &str| {
        order_events(&opts(), &order_with(status, codes, modified), None)
            .first()
            .and_then(|e| e.delivery_id.clone())
    };
    // Stable across redeliveries of the same state (date_modified moves with every save).
    assert_eq!(
        id("completed", &["b", "a"], "2024-01-01T00:00:00"),
        id("completed", &["a", "b"], "2024-02-02T10:00:00")
    );
    assert_eq!(
        id("completed", &["b", "a"], "2024-01-01T00:00:00").as_deref(),
        Some("order:727:completed:a,b")
    );
    // Different status, different id.
    assert_ne!(id("processing", &["a"], "x"), id("completed", &["a"], "x"));
    assert_ne!(id("completed", &["a"], "x"), id("refunded", &["a"], "x"));
    // Different coupons, different id.
    assert_ne!(
        id("completed", &["a"], "x"),
        id("completed", &["a", "b"], "x")
    );
}

#[test]
fn referral_code_comes_from_the_order_meta() {
    let mut o = order_with("completed", &["ada-42"], "x");
    o.insert(
        "meta_data".into(),
        json!([
            {"id": 1, "key": "_download_permissions_granted", "value": "yes"},
            {"id": 2, "key": META_KEY, "value": " ADA-42 "},
            {"id": 3, "key": META_KEY, "value": "later"}
        ]),
    );
    let events = order_events(&opts(), &o, None);
    assert!(
        events
            .iter()
            .all(|e| e.referral_code.as_deref() == Some("ADA-42")),
        "{events:?}"
    );
    let events = order_events(&ParseOptions::default(), &o, None);
    assert!(events.iter().all(|e| e.referral_code.is_none()));
}

#[test]
fn order_without_valid_id_gives_nothing() {
    let mut o = order_with("completed", &["a"], "x");
    o.remove("id");
    assert_eq!(order_events(&opts(), &o, None), vec![]);
    o.insert("id".into(), json!("abc"));
    assert_eq!(order_events(&opts(), &o, None), vec![]);
}

#[test]
fn dates_are_utc_with_or_without_zone() {
    let t = |s: Value| time(&s);
    let expected = at(2017, 3, 22, 19, 28, 8);
    assert_eq!(t(json!("2017-03-22T19:28:08")), expected);
    assert_eq!(t(json!(" 2017-03-22T19:28:08Z ")), expected);
    assert_eq!(t(json!("2017-03-22T16:28:08-03:00")), expected);
    assert_eq!(t(json!("2017-03-22T19:28:08.000")), expected);
    for bad in [
        json!("2017-03-22"),
        json!(""),
        json!("yesterday"),
        json!(1_490_210_888),
        json!(null),
        json!("2017-13-22T19:28:08"),
    ] {
        assert_eq!(t(bad.clone()), None, "{bad}");
    }
    // Unparseable → no time, the events still come.
    let events = order_events(&opts(), &order_with("completed", &[], "garbage"), None);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].occurred_at, None);
}

#[test]
fn the_wcios_fixture_reports_its_30off_coupon() {
    let doc: Value = serde_json::from_str(WCIOS_30OFF).expect("JSON");
    let order = doc
        .get("data")
        .and_then(Value::as_object)
        .expect("data object");
    let events = order_events(&opts(), order, Some(SITE));
    assert_eq!(
        changes(&events),
        vec![coupon_used("30$off", Some("paid")), status_changed("paid")]
    );
    assert_eq!(events[0].object, coupon("30$off"));
    assert_eq!(events[0].email.as_deref(), Some("scrambled@scrambled.com"));
    assert_eq!(
        events[1].object,
        EventObject {
            kind: ObjectKind::Order,
            id: "963".into()
        }
    );
    assert_eq!(events[1].related, vec![coupon("30$off")]);
    assert_eq!(
        events[0].delivery_id.as_deref(),
        Some("order:963:processing:30$off")
    );
    assert_eq!(events[0].occurred_at, at(2018, 4, 3, 23, 5, 14));
    // Its coupon line's item id (894) and the coupon post id (673) are not the object.
    assert!(
        events
            .iter()
            .all(|e| e.object.id != "894" && e.object.id != "673")
    );
    // The same code written with the entity WordPress uses for "$" is the same coupon.
    assert_eq!(normalize_coupon_code("30&#36;OFF"), "30$off");
}

// ---------------------------------------------------------------- readers

#[test]
fn coupon_codes_are_normalized_like_woocommerce() {
    for (raw, normal) in [
        ("ADA-42", "ada-42"),
        ("  Summer10 \n", "summer10"),
        ("summer&amp;sun", "summer&sun"),
        ("a&lt;b&gt;c", "a<b>c"),
        ("say &quot;hi&quot;", "say \"hi\""),
        ("bob&#039;s", "bob's"),
        ("bob&#39;s", "bob's"),
        ("30&#36;off", "30$off"),
        ("&#x41;BC", "abc"),
        ("&#65;&#66;", "ab"),
        ("&amp;amp;", "&"),
        ("&#38;amp;", "&"),
        ("fish & chips", "fish & chips"),
        ("&unknown;", "&unknown;"),
        ("&#;", "&#;"),
        ("&#0;", "&#0;"),
        ("&#xD800;", "&#xd800;"),
        ("&#+65;", "&#+65;"),
        ("&", "&"),
        ("&amp", "&amp"),
        ("ÉTÉ-10", "été-10"),
        ("", ""),
    ] {
        assert_eq!(normalize_coupon_code(raw), normal, "{raw:?}");
    }
}

#[test]
fn meta_value_reads_the_first_entry_with_the_key() {
    let o = |meta: Value| {
        let mut m = Object::new();
        m.insert("meta_data".into(), meta);
        m
    };
    let meta = o(json!([
        {"id": 1, "key": "other", "value": "x"},
        {"id": 2, "key": "code", "value": " ADA-42 "},
        {"id": 3, "key": "code", "value": "second"}
    ]));
    assert_eq!(meta_value(&meta, "code").as_deref(), Some("ADA-42"));
    assert_eq!(meta_value(&meta, " code ").as_deref(), Some("ADA-42"));
    assert_eq!(meta_value(&meta, "missing"), None);
    assert_eq!(meta_value(&meta, ""), None);
    assert_eq!(
        meta_value(&o(json!([{"key": "n", "value": 42}])), "n").as_deref(),
        Some("42")
    );
    assert_eq!(
        meta_value(&o(json!([{"key": "n", "value": 4.5}])), "n").as_deref(),
        Some("4.5")
    );
    for value in [
        json!(""),
        json!("  "),
        json!(null),
        json!(true),
        json!(["a"]),
        json!({"a": 1}),
    ] {
        assert_eq!(
            meta_value(
                &o(json!([{"key": "k", "value": value}, {"key": "k", "value": "later"}])),
                "k"
            ),
            None
        );
    }
    assert_eq!(meta_value(&o(json!({"key": "k", "value": "v"})), "k"), None);
    assert_eq!(meta_value(&o(json!(["k", 1, null])), "k"), None);
    assert_eq!(meta_value(&Object::new(), "k"), None);
}

// ---------------------------------------------------------------- never panics

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("processing"),
            Just("completed"),
            Just("refunded"),
            Just("pending"),
            Just("PROCESSING"),
            Just(""),
            Just("727"),
            Just("ada-42"),
            Just("a&amp;b"),
            Just("&#"),
            Just("&#x;"),
            Just("2017-03-22T19:28:08"),
            Just("2017-03-22T19:28:08Z"),
            Just(META_KEY),
        ]
        .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("id"),
        Just("status"),
        Just("date_modified_gmt"),
        Just("updated_at"),
        Just("date_paid_gmt"),
        Just("billing"),
        Just("billing_address"),
        Just("email"),
        Just("customer_id"),
        Just("coupon_lines"),
        Just("code"),
        Just("meta_data"),
        Just("key"),
        Just("value"),
        Just("order"),
        Just("customer"),
        Just("coupon"),
    ]
    .prop_map(str::to_owned);
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("order.created"),
            Just("order.updated"),
            Just("order.deleted"),
            Just("order.restored"),
            Just("customer.created"),
            Just("customer.deleted"),
            Just("coupon.updated"),
            Just("coupon.deleted"),
            Just("product.updated"),
            Just("action.woocommerce_payment_complete"),
        ]
        .prop_map(str::to_owned),
        ".{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        topic in arb_topic(),
    ) {
        let req = request(&topic, body.clone());
        let _ = parse(&opts(), &req);
        let _ = is_ping(&req);
        let _ = verify(&secret(SECRET), &req);
        let _ = verify(&secret(SECRET), &signed(&topic, &body));
    }

    #[test]
    fn parse_never_panics_on_arbitrary_json(value in arb_json(), topic in arb_topic()) {
        let text = value.to_string();
        if let Ok(events) = parse(&opts(), &request(&topic, text.clone())) {
            for e in &events {
                prop_assert_eq!(&e.source, "woocommerce");
                prop_assert!(!e.object.id.is_empty());
            }
        }
        let _ = verify(&secret("a&b<c>"), &signed(&topic, text.as_bytes()));
    }

    #[test]
    fn order_events_never_panics_on_arbitrary_objects(
        value in arb_json(),
        prefix in proptest::option::of(".{0,6}"),
        paid in proptest::collection::vec(".{0,10}", 0..3),
    ) {
        let mut order = match value {
            Value::Object(o) => o,
            other => {
                let mut o = Object::new();
                o.insert("coupon_lines".into(), other);
                o
            }
        };
        let options = ParseOptions {
            paid_statuses: paid,
            coupon_prefix: prefix,
            referral_code_meta_key: Some(META_KEY.into()),
        };
        let _ = order_events(&options, &order, Some(SITE));
        // And once more with a valid id, so the whole reader runs.
        order.insert("id".into(), json!(727));
        let events = order_events(&options, &order, Some(SITE));
        let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e.delivery_id.clone()).collect();
        prop_assert!(ids.len() <= 1, "one delivery id per order: {:?}", ids);
        for e in &events {
            prop_assert!(e.delivery_id.as_deref().is_some_and(|d| d.starts_with("order:727:")));
        }
    }

    #[test]
    fn normalize_coupon_code_is_idempotent(code in ".{0,40}", entity_soup in "(&(amp|lt|gt|quot|#0?39|#36|#x2[46]|AMP);|[A-Za-z ]){0,12}") {
        for s in [code, entity_soup] {
            let once = normalize_coupon_code(&s);
            prop_assert_eq!(normalize_coupon_code(&once), once.clone(), "{:?}", s);
            prop_assert_eq!(once.trim(), once.as_str());
        }
    }
}
