#![allow(clippy::needless_pass_by_value)] // json! takes its values by reference

use chrono::TimeZone;
use proptest::prelude::*;
use refsync_core::ErrorKind;
use refsync_http::signature::hmac_sha256_base64;
use serde_json::json;

use super::*;
use sha2::Digest;

// ---------------------------------------------------------------- fixtures and helpers

/// Real delivery (dj-hubspot tests, 2019): deal.propertyChange dealstage=closedwon, attempt 3.
const CLOSEDWON: &[u8] =
    include_bytes!("../../tests/fixtures/deal_propertychange_dealstage_closedwon_djhubspot.json");
/// HubSpot docs sample batch (uses the `eventType` key).
const DOCS_BATCH: &[u8] = include_bytes!(
    "../../tests/fixtures/docs_example_batch_contact_propertychange_and_creation.json"
);

/// The secret of HubSpot's own signature examples (Node and Python SDK tests).
const HS_SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const HS_URL: &str = "https://www.example.com/webhook_uri";
/// Official v3 vector: HubSpot/hubspot-api-python `tests/spec/utils/test_signature.py` (fixed
/// timestamp version), quoted in shared/research/crm-pipedrive-hubspot-zoho.md 2.3.
const V3_BODY: &str = "{'example_field':'example_value'}";
const V3_TS: i64 = 1_693_657_560_000;
const V3_SIG: &str = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=";

/// A secret of our own for computed signatures.
const SECRET: &str = "hs-client-secret-for-tests-4b1d";
const URL: &str = "https://refsync.example/hooks/hubspot?instance=main";

const ALL: &[SignatureVersion] = &[
    SignatureVersion::V1,
    SignatureVersion::V2,
    SignatureVersion::V3,
];
const V3_ONLY: &[SignatureVersion] = &[SignatureVersion::V3];
const TOLERANCE: Duration = Duration::from_secs(300);

fn ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

fn opts<'a>(secret: &'a Secret, versions: &'a [SignatureVersion]) -> VerifyOptions<'a> {
    VerifyOptions {
        client_secret: secret,
        versions,
        webhook_url: None,
        tolerance: TOLERANCE,
    }
}

/// The official v3 request, as HubSpot sends it.
fn official_v3() -> WebhookRequest {
    WebhookRequest::post(HS_URL, V3_BODY)
        .with_header("Content-Type", "application/json")
        .with_header("X-HubSpot-Signature-v3", V3_SIG)
        .with_header("X-HubSpot-Request-Timestamp", V3_TS.to_string())
}

/// SHA-256 hex computed here with sha2, independently of refsync-http's helper.
fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// v3 signature of (method, uri, body, timestamp) under `secret`.
fn v3_sig(secret: &str, method: &str, uri: &str, body: &[u8], ts: &str) -> String {
    let mut msg = Vec::new();
    msg.extend_from_slice(method.as_bytes());
    msg.extend_from_slice(uri.as_bytes());
    msg.extend_from_slice(body);
    msg.extend_from_slice(ts.as_bytes());
    hmac_sha256_base64(secret.as_bytes(), &msg)
}

/// `request` signed with v3 for `uri` at `ts` ms.
fn signed_v3(request: WebhookRequest, uri: &str, ts: i64) -> WebhookRequest {
    let sig = v3_sig(SECRET, &request.method, uri, &request.body, &ts.to_string());
    request
        .with_header("X-HubSpot-Signature-v3", sig)
        .with_header("X-HubSpot-Request-Timestamp", ts.to_string())
}

fn v1_sig(secret: &str, body: &[u8]) -> String {
    sha256_hex(&[secret.as_bytes(), body])
}

fn v2_sig(secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    sha256_hex(&[secret.as_bytes(), method.as_bytes(), uri.as_bytes(), body])
}

const NOW_MS: i64 = 1_700_000_000_000;

fn unauthorized(result: Result<Verification>, hidden: &[&str]) -> String {
    let e = result.expect_err("verify must refuse");
    assert_eq!(e.kind(), &ErrorKind::Unauthorized, "{e}");
    let text = format!("{e} / {e:?}");
    assert!(!text.contains('\n'), "{text}");
    for h in hidden.iter().chain([&SECRET, &HS_SECRET]) {
        assert!(!text.contains(h), "{h} leaked: {text}");
    }
    e.message().to_owned()
}

fn verified(result: Result<Verification>) -> String {
    match result.expect("verify must accept") {
        Verification::Verified { scheme } => scheme,
        other => panic!("not verified: {other:?}"),
    }
}

fn body_of(events: Value) -> WebhookRequest {
    WebhookRequest::post(URL, serde_json::to_vec(&events).unwrap())
}

fn parse_value(opts: &ParseOptions, events: Value) -> Vec<CrmEvent> {
    parse(opts, &body_of(events)).expect("parse")
}

fn parse_one(opts: &ParseOptions, event: Value) -> CrmEvent {
    let mut events = parse_value(opts, json!([event]));
    assert_eq!(events.len(), 1, "{events:?}");
    events.remove(0)
}

fn parse_none(opts: &ParseOptions, event: Value) {
    let events = parse_value(opts, json!([event]));
    assert!(events.is_empty(), "{events:?}");
}

fn popts() -> ParseOptions {
    ParseOptions {
        portal_id: None,
        app_id: None,
        contact_code_property: Some("referral_code".into()),
        deal_code_property: Some("deal_referral_code".into()),
        conversion_lifecycle_stages: vec!["salesqualifiedlead".into(), "Opportunity".into()],
    }
}

/// A HubSpot event of `kind` on object 123 in portal 62515, app 54321.
fn ev(kind: &str) -> Value {
    json!({
        "eventId": 100, "subscriptionId": 200, "portalId": 62515, "appId": 54321,
        "occurredAt": 1_564_113_600_000_i64, "subscriptionType": kind, "attemptNumber": 0,
        "objectId": 123, "changeSource": "CRM",
    })
}

fn prop(kind: &str, name: &str, value: &str) -> Value {
    let mut e = ev(kind);
    e["propertyName"] = json!(name);
    e["propertyValue"] = json!(value);
    e
}

fn assoc(kind: &str, association_type: &str, from: u64, to: u64, removed: bool) -> Value {
    json!({
        "eventId": 300, "subscriptionId": 400, "portalId": 62515, "appId": 54321,
        "occurredAt": 1_564_113_600_000_i64, "subscriptionType": kind, "attemptNumber": 0,
        "changeSource": "USER", "associationType": association_type,
        "fromObjectId": from, "toObjectId": to, "associationRemoved": removed,
        "isPrimaryAssociation": true,
    })
}

fn updated_fields(fields: &[&str]) -> Change {
    Change::Updated {
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

fn validation(result: Result<Vec<CrmEvent>>) -> String {
    let e = result.expect_err("parse must refuse");
    assert_eq!(e.kind(), &ErrorKind::Validation, "{e}");
    assert!(!e.message().contains('\n'), "{e:?}");
    e.message().to_owned()
}

// ---------------------------------------------------------------- verify: official vectors

#[test]
fn official_v3_vector_verifies_within_the_window() {
    let secret = Secret::new(HS_SECRET);
    let scheme = verified(verify(
        &opts(&secret, V3_ONLY),
        &official_v3(),
        ms(V3_TS + 1_000),
    ));
    assert_eq!(scheme, "hubspot-v3");
    // The vector really is what the documented algorithm gives.
    assert_eq!(
        v3_sig(
            HS_SECRET,
            "POST",
            HS_URL,
            V3_BODY.as_bytes(),
            "1693657560000"
        ),
        V3_SIG
    );
}

#[test]
fn official_v3_vector_is_refused_outside_the_window() {
    let secret = Secret::new(HS_SECRET);
    let o = opts(&secret, ALL);
    let m = unauthorized(
        verify(&o, &official_v3(), ms(V3_TS + 6 * 60_000)),
        &[V3_SIG],
    );
    assert!(m.contains("360 s old"), "{m}");
    assert!(m.contains("300 s"), "{m}");
    let m = unauthorized(
        verify(&o, &official_v3(), ms(V3_TS - 6 * 60_000)),
        &[V3_SIG],
    );
    assert!(m.contains("in the future"), "{m}");
    // The window is inclusive, measured in milliseconds.
    verified(verify(&o, &official_v3(), ms(V3_TS + 300_000)));
    verified(verify(&o, &official_v3(), ms(V3_TS - 300_000)));
    unauthorized(verify(&o, &official_v3(), ms(V3_TS + 300_001)), &[]);
    // Another tolerance.
    let short = VerifyOptions {
        tolerance: Duration::from_secs(1),
        ..o
    };
    unauthorized(verify(&short, &official_v3(), ms(V3_TS + 2_000)), &[]);
}

#[test]
fn official_v3_vector_fails_when_anything_signed_changes() {
    let secret = Secret::new(HS_SECRET);
    let o = opts(&secret, ALL);
    let now = ms(V3_TS + 1_000);

    let mut body = official_v3();
    body.body[3] ^= 1;
    let m = unauthorized(verify(&o, &body, now), &[V3_SIG]);
    assert!(m.contains("X-HubSpot-Signature-v3 does not match"), "{m}");

    let mut url = official_v3();
    url.url = "https://www.example.com/webhook_uri2".into();
    let m = unauthorized(verify(&o, &url, now), &[V3_SIG]);
    assert!(m.contains("https://www.example.com/webhook_uri2"), "{m}");
    let with_url = VerifyOptions {
        webhook_url: Some("https://www.example.com/other"),
        ..o
    };
    unauthorized(verify(&with_url, &official_v3(), now), &[V3_SIG]);

    let mut method = official_v3();
    method.method = "PUT".into();
    unauthorized(verify(&o, &method, now), &[V3_SIG]);

    let mut ts = official_v3();
    ts.set_header("X-HubSpot-Request-Timestamp", (V3_TS + 1).to_string());
    unauthorized(verify(&o, &ts, now), &[V3_SIG]);

    let other = Secret::new("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz");
    let m = unauthorized(
        verify(&opts(&other, ALL), &official_v3(), now),
        &["zzzzzzzz-zzzz"],
    );
    assert!(m.contains("client secret"), "{m}");
}

/// HubSpot/hubspot-api-nodejs `test/unit/signature.spec.ts` "is valid v1" (the docs' v1
/// example body) and HubSpot/hubspot-api-python `tests/spec/utils/test_signature.py`
/// `test_get_signature__v1`.
#[test]
fn official_v1_vectors_verify() {
    let secret = Secret::new(HS_SECRET);
    let o = opts(&secret, ALL);
    let node_body = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    let node_sig = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
    let python_sig = "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750";
    for (body, sig) in [(node_body, node_sig), (V3_BODY, python_sig)] {
        assert_eq!(v1_sig(HS_SECRET, body.as_bytes()), sig);
        let r = WebhookRequest::post(HS_URL, body).with_header("X-HubSpot-Signature", sig);
        assert_eq!(verified(verify(&o, &r, ms(NOW_MS))), "hubspot-v1");
        let r = r.with_header("X-HubSpot-Signature-Version", "v1");
        assert_eq!(verified(verify(&o, &r, ms(NOW_MS))), "hubspot-v1");
        // Hex in upper case too; v1 ignores the URL.
        let mut upper = r.clone();
        upper.set_header("X-HubSpot-Signature", sig.to_uppercase());
        upper.url = "/somewhere/else".into();
        verified(verify(&o, &upper, ms(NOW_MS)));
        // One byte changed.
        let mut tampered = r.clone();
        tampered.body[1] ^= 1;
        let m = unauthorized(verify(&o, &tampered, ms(NOW_MS)), &[sig]);
        assert!(m.contains("(v1) does not match"), "{m}");
    }
}

/// HubSpot/hubspot-api-nodejs `test/unit/signature.spec.ts` ("is valid v2", "is valid v2 with
/// body") and HubSpot/hubspot-api-python `tests/spec/utils/test_signature.py`
/// (`test_get_signature__v2`, `test_is_valid__v2_get_method`).
#[test]
fn official_v2_vectors_verify() {
    let secret = Secret::new(HS_SECRET);
    let o = opts(&secret, ALL);
    for (method, body, sig) in [
        (
            "GET",
            "",
            "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e",
        ),
        (
            "POST",
            r#"{"example_field":"example_value"}"#,
            "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900",
        ),
        (
            "POST",
            V3_BODY,
            "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383",
        ),
    ] {
        assert_eq!(v2_sig(HS_SECRET, method, HS_URL, body.as_bytes()), sig);
        let mut r = WebhookRequest::post(HS_URL, body)
            .with_header("X-HubSpot-Signature", sig)
            .with_header("X-HubSpot-Signature-Version", "v2");
        r.method = method.into();
        assert_eq!(verified(verify(&o, &r, ms(NOW_MS))), "hubspot-v2");
        // v2 signs the URL: another one fails and the message names it.
        let mut moved = r.clone();
        moved.url = "https://www.example.com/elsewhere".into();
        let m = unauthorized(verify(&o, &moved, ms(NOW_MS)), &[sig]);
        assert!(m.contains("(v2) does not match"), "{m}");
        assert!(m.contains("https://www.example.com/elsewhere"), "{m}");
        // ... unless webhook_url says what HubSpot called.
        let with_url = VerifyOptions {
            webhook_url: Some(HS_URL),
            ..o
        };
        verified(verify(&with_url, &moved, ms(NOW_MS)));
        // The method is signed too.
        let mut other = r.clone();
        other.method = if method == "GET" { "POST" } else { "GET" }.into();
        unauthorized(verify(&o, &other, ms(NOW_MS)), &[sig]);
    }
}

// ---------------------------------------------------------------- verify: selection

#[test]
fn a_wrong_v3_signature_never_falls_back_to_v1() {
    let secret = Secret::new(SECRET);
    let o = opts(&secret, ALL);
    let body = br#"[{"objectId":1}]"#;
    let good_v1 = v1_sig(SECRET, body);
    let r = WebhookRequest::post(URL, body.to_vec())
        .with_header("X-HubSpot-Signature", good_v1.clone())
        .with_header("X-HubSpot-Signature-Version", "v1")
        .with_header(
            "X-HubSpot-Signature-v3",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .with_header("X-HubSpot-Request-Timestamp", NOW_MS.to_string());
    let m = unauthorized(verify(&o, &r, ms(NOW_MS)), &[&good_v1]);
    assert!(m.contains("v3"), "{m}");
    // A valid v3 signature that is stale is not rescued by v1 either.
    let stale = signed_v3(
        WebhookRequest::post(URL, body.to_vec())
            .with_header("X-HubSpot-Signature", good_v1.clone()),
        URL,
        NOW_MS - 3_600_000,
    );
    let m = unauthorized(verify(&o, &stale, ms(NOW_MS)), &[&good_v1]);
    assert!(m.contains("3600 s old"), "{m}");
    // And a v3 signature without its timestamp neither.
    let mut no_ts = stale;
    no_ts.remove_header("X-HubSpot-Request-Timestamp");
    let m = unauthorized(verify(&o, &no_ts, ms(NOW_MS)), &[]);
    assert!(m.contains("X-HubSpot-Request-Timestamp"), "{m}");
}

#[test]
fn v3_and_v1_together_verify_as_v3() {
    let secret = Secret::new(SECRET);
    let body = br#"[{"objectId":1}]"#;
    let r = signed_v3(
        WebhookRequest::post(URL, body.to_vec())
            .with_header("X-HubSpot-Signature", "00".repeat(32)),
        URL,
        NOW_MS,
    );
    assert_eq!(
        verified(verify(&opts(&secret, ALL), &r, ms(NOW_MS))),
        "hubspot-v3"
    );
}

#[test]
fn v3_not_accepted_lets_an_accepted_v1_decide() {
    let secret = Secret::new(SECRET);
    let body = br#"[{"objectId":1}]"#;
    let r = WebhookRequest::post(URL, body.to_vec())
        .with_header("X-HubSpot-Signature", v1_sig(SECRET, body))
        .with_header("X-HubSpot-Signature-v3", "garbage")
        .with_header("X-HubSpot-Request-Timestamp", "1");
    let v1_only = [SignatureVersion::V1];
    assert_eq!(
        verified(verify(&opts(&secret, &v1_only), &r, ms(NOW_MS))),
        "hubspot-v1"
    );
    // With v2 only, neither is accepted and the message says how to fix it.
    let v2_only = [SignatureVersion::V2];
    let m = unauthorized(verify(&opts(&secret, &v2_only), &r, ms(NOW_MS)), &[]);
    assert!(m.contains("v3 and v1"), "{m}");
    assert!(m.contains("\"v3\""), "{m}");
}

#[test]
fn a_v1_only_request_is_refused_unless_v1_is_accepted() {
    let secret = Secret::new(SECRET);
    let body = br#"[{"objectId":1}]"#;
    let sig = v1_sig(SECRET, body);
    let r = WebhookRequest::post(URL, body.to_vec()).with_header("X-HubSpot-Signature", &sig);
    let m = unauthorized(verify(&opts(&secret, V3_ONLY), &r, ms(NOW_MS)), &[&sig]);
    assert_eq!(
        m,
        "the request carries only a v1 signature (HubSpot signs legacy and private-app webhooks with v1); add \"v1\" to signature_versions to accept it (v1 has no timestamp, so no replay window)"
    );
    let r2 = r.clone().with_header("X-HubSpot-Signature-Version", "v2");
    let m = unauthorized(verify(&opts(&secret, V3_ONLY), &r2, ms(NOW_MS)), &[&sig]);
    assert!(m.contains("only a v2 signature"), "{m}");
    assert!(m.contains("add \"v2\""), "{m}");
    // v2 accepted does not accept v1, and vice versa.
    let v2 = [SignatureVersion::V2];
    let m = unauthorized(verify(&opts(&secret, &v2), &r, ms(NOW_MS)), &[&sig]);
    assert!(m.contains("add \"v1\""), "{m}");
    let v1 = [SignatureVersion::V1];
    verified(verify(&opts(&secret, &v1), &r, ms(NOW_MS)));
    unauthorized(verify(&opts(&secret, &[]), &r, ms(NOW_MS)), &[&sig]);
}

#[test]
fn a_v3_only_request_is_refused_when_v3_is_not_accepted() {
    let secret = Secret::new(SECRET);
    let r = signed_v3(WebhookRequest::post(URL, "[]"), URL, NOW_MS);
    let v1 = [SignatureVersion::V1, SignatureVersion::V2];
    let m = unauthorized(verify(&opts(&secret, &v1), &r, ms(NOW_MS)), &[]);
    assert!(m.contains("only a v3 signature"), "{m}");
}

#[test]
fn missing_and_blank_signatures_are_refused() {
    let secret = Secret::new(SECRET);
    let o = opts(&secret, ALL);
    let none = WebhookRequest::post(URL, "[]");
    let m = unauthorized(verify(&o, &none, ms(NOW_MS)), &[]);
    assert_eq!(
        m,
        "no HubSpot signature (X-HubSpot-Signature-v3 or X-HubSpot-Signature)"
    );
    let blank = none
        .with_header("X-HubSpot-Signature", "  ")
        .with_header("X-HubSpot-Signature-v3", "")
        .with_header("X-HubSpot-Request-Timestamp", NOW_MS.to_string());
    let m = unauthorized(verify(&o, &blank, ms(NOW_MS)), &[]);
    assert!(m.starts_with("no HubSpot signature"), "{m}");
}

#[test]
fn bad_timestamps_and_versions_are_refused() {
    let secret = Secret::new(SECRET);
    let o = opts(&secret, ALL);
    let base = signed_v3(WebhookRequest::post(URL, "[]"), URL, NOW_MS);
    for bad in ["soon", "-5", "1.7e12", "99999999999999999999999", "0x10"] {
        let mut r = base.clone();
        r.set_header("X-HubSpot-Request-Timestamp", bad);
        let m = unauthorized(verify(&o, &r, ms(NOW_MS)), &[]);
        assert!(m.contains("not unix milliseconds"), "{bad}: {m}");
    }
    // Seconds instead of milliseconds: 1970, far outside the window.
    let mut secs = base.clone();
    secs.set_header("X-HubSpot-Request-Timestamp", (NOW_MS / 1000).to_string());
    let m = unauthorized(verify(&o, &secs, ms(NOW_MS)), &[]);
    assert!(m.contains("old"), "{m}");
    // A newline in a header stays out of the one-line message.
    let mut nl = base;
    nl.set_header("X-HubSpot-Request-Timestamp", "12\n34");
    unauthorized(verify(&o, &nl, ms(NOW_MS)), &[]);
    // Unknown signature version.
    let r = WebhookRequest::post(URL, "[]")
        .with_header("X-HubSpot-Signature", "ab")
        .with_header("X-HubSpot-Signature-Version", "v9");
    let m = unauthorized(verify(&o, &r, ms(NOW_MS)), &[]);
    assert!(
        m.contains("unknown X-HubSpot-Signature-Version \"v9\""),
        "{m}"
    );
}

#[test]
fn an_empty_secret_is_refused_even_with_its_own_signature() {
    let secret = Secret::new("");
    let body = b"[]";
    let r = WebhookRequest::post(URL, body.to_vec())
        .with_header("X-HubSpot-Signature", v1_sig("", body));
    let m = unauthorized(verify(&opts(&secret, ALL), &r, ms(NOW_MS)), &[]);
    assert!(m.contains("client secret is empty"), "{m}");
}

#[test]
fn header_names_are_case_insensitive() {
    let secret = Secret::new(SECRET);
    let o = opts(&secret, ALL);
    let body = b"[{\"objectId\":5}]";
    let ts = NOW_MS.to_string();
    let sig = v3_sig(SECRET, "POST", URL, body, &ts);
    for (s, t) in [
        ("x-hubspot-signature-v3", "x-hubspot-request-timestamp"),
        ("X-HUBSPOT-SIGNATURE-V3", "X-HUBSPOT-REQUEST-TIMESTAMP"),
        ("X-Hubspot-Signature-V3", "X-Hubspot-Request-Timestamp"),
    ] {
        let r = WebhookRequest::post(URL, body.to_vec())
            .with_header(s, &sig)
            .with_header(t, &ts);
        assert_eq!(verified(verify(&o, &r, ms(NOW_MS))), "hubspot-v3", "{s}");
    }
    let r = WebhookRequest::post(URL, body.to_vec())
        .with_header("x-hubspot-signature", v2_sig(SECRET, "POST", URL, body))
        .with_header("x-hubspot-signature-version", "V2");
    assert_eq!(verified(verify(&o, &r, ms(NOW_MS))), "hubspot-v2");
}

#[test]
fn refusals_never_contain_the_secret_or_the_expected_signature() {
    let secret = Secret::new(SECRET);
    let o = opts(&secret, ALL);
    let body = br#"[{"objectId":7,"subscriptionType":"contact.creation"}]"#;
    let ts = NOW_MS.to_string();
    let expected_v3 = v3_sig(SECRET, "POST", URL, body, &ts);
    let expected_v1 = v1_sig(SECRET, body);
    let expected_v2 = v2_sig(SECRET, "POST", URL, body);
    let hidden = [
        expected_v3.as_str(),
        expected_v1.as_str(),
        expected_v2.as_str(),
    ];
    let requests = [
        WebhookRequest::post(URL, body.to_vec())
            .with_header("X-HubSpot-Signature-v3", "bm9wZQ==")
            .with_header("X-HubSpot-Request-Timestamp", &ts),
        WebhookRequest::post(URL, body.to_vec()).with_header("X-HubSpot-Signature", "abcd"),
        WebhookRequest::post(URL, body.to_vec())
            .with_header("X-HubSpot-Signature", "abcd")
            .with_header("X-HubSpot-Signature-Version", "v2"),
        WebhookRequest::post(URL, b"[]".to_vec())
            .with_header("X-HubSpot-Signature-v3", &expected_v3)
            .with_header("X-HubSpot-Request-Timestamp", &ts),
    ];
    for r in &requests {
        let m = unauthorized(verify(&o, r, ms(NOW_MS)), &hidden);
        // The URL is named without its query.
        assert!(!m.contains("instance=main"), "{m}");
    }
    // Also with only v1 accepted, and with v3 stale.
    unauthorized(
        verify(&opts(&secret, V3_ONLY), &requests[1], ms(NOW_MS)),
        &hidden,
    );
    unauthorized(verify(&o, &requests[0], ms(NOW_MS + 3_600_000)), &hidden);
}

#[test]
fn the_v3_mismatch_names_the_signed_url_and_suggests_webhook_url() {
    let secret = Secret::new(SECRET);
    let r = WebhookRequest::post("/hooks/hubspot?token=s3cr3t", "[]")
        .with_header("Host", "internal:8080")
        .with_header("X-HubSpot-Signature-v3", "bm9wZQ==")
        .with_header("X-HubSpot-Request-Timestamp", NOW_MS.to_string());
    let m = unauthorized(verify(&opts(&secret, ALL), &r, ms(NOW_MS)), &["s3cr3t"]);
    assert!(
        m.contains("\"https://internal:8080/hooks/hubspot?…\""),
        "{m}"
    );
    assert!(m.contains("webhook_url"), "{m}");
}

// ---------------------------------------------------------------- verify: URLs

#[test]
fn signed_url_variants() {
    let abs = WebhookRequest::post("https://refsync.example/h?a=1", "");
    assert_eq!(signed_url(&abs, None), "https://refsync.example/h?a=1");
    assert_eq!(
        signed_url(&abs, Some("https://public.example/x?b=2")),
        "https://public.example/x?b=2"
    );
    let http_abs = WebhookRequest::post("HTTP://Refsync.example/h", "");
    assert_eq!(signed_url(&http_abs, None), "HTTP://Refsync.example/h");

    let rel = WebhookRequest::post("/hooks/hubspot?x=1&y=2", "");
    assert_eq!(signed_url(&rel, None), "/hooks/hubspot?x=1&y=2");
    let host = rel.with_header("Host", "refsync.example");
    assert_eq!(
        signed_url(&host, None),
        "https://refsync.example/hooks/hubspot?x=1&y=2"
    );
    let proxied = host
        .clone()
        .with_header("X-Forwarded-Host", "public.example, proxy.internal")
        .with_header("X-Forwarded-Proto", "http, https");
    assert_eq!(
        signed_url(&proxied, None),
        "http://public.example/hooks/hubspot?x=1&y=2"
    );
    let https = host.clone().with_header("x-forwarded-proto", "HTTPS");
    assert_eq!(
        signed_url(&https, None),
        "https://refsync.example/hooks/hubspot?x=1&y=2"
    );
    let odd_proto = host.with_header("X-Forwarded-Proto", "gopher");
    assert!(signed_url(&odd_proto, None).starts_with("https://"));
    let no_slash = WebhookRequest::post("hooks", "").with_header("Host", "h.example");
    assert_eq!(signed_url(&no_slash, None), "https://h.example/hooks");
    assert_eq!(
        signed_url(&proxied, Some("https://configured.example/hook")),
        "https://configured.example/hook"
    );
}

#[test]
fn v3_over_a_rebuilt_url_and_a_configured_one() {
    let secret = Secret::new(SECRET);
    let o = opts(&secret, ALL);
    let public = "https://public.example/hooks/hubspot?instance=main";
    let behind_proxy = signed_v3(
        WebhookRequest::post("/hooks/hubspot?instance=main", "[]")
            .with_header("Host", "10.0.0.5:8080")
            .with_header("X-Forwarded-Host", "public.example")
            .with_header("X-Forwarded-Proto", "https"),
        public,
        NOW_MS,
    );
    verified(verify(&o, &behind_proxy, ms(NOW_MS)));
    // A proxy that hides the public host: refused, unless webhook_url says it.
    let mut hidden = behind_proxy;
    hidden.remove_header("X-Forwarded-Host");
    let m = unauthorized(verify(&o, &hidden, ms(NOW_MS)), &[]);
    assert!(m.contains("10.0.0.5:8080"), "{m}");
    let configured = VerifyOptions {
        webhook_url: Some(public),
        ..o
    };
    verified(verify(&configured, &hidden, ms(NOW_MS)));
}

#[test]
fn v3_accepts_the_uri_with_hubspots_decoded_characters() {
    let secret = Secret::new(SECRET);
    let o = opts(&secret, ALL);
    let received = "https://refsync.example/hooks/hubspot?next=https%3A%2F%2Fa.example%2Fb%3Fc%3Dd&q=%28x%29%2a%2C%3b%40%21%24%27%20end";
    let decoded =
        "https://refsync.example/hooks/hubspot?next=https://a.example/b?c%3Dd&q=(x)*,;@!$'%20end";
    assert_eq!(decode_signed_characters(received), decoded);
    // Signed over the decoded form (as HubSpot documents), or over the URI as it is.
    for signed_over in [decoded, received] {
        let r = signed_v3(WebhookRequest::post(received, "[]"), signed_over, NOW_MS);
        verified(verify(&o, &r, ms(NOW_MS)));
    }
    // Decoding anything else (%3D, %20) is not what HubSpot signs.
    let fully =
        "https://refsync.example/hooks/hubspot?next=https://a.example/b?c=d&q=(x)*,;@!$' end";
    let r = signed_v3(WebhookRequest::post(received, "[]"), fully, NOW_MS);
    unauthorized(verify(&o, &r, ms(NOW_MS)), &[]);
}

#[test]
fn decoding_keeps_other_and_broken_escapes() {
    assert_eq!(decode_signed_characters("%3a%3A%2f%2F"), ":://");
    assert_eq!(decode_signed_characters("%41%20%25%3D"), "%41%20%25%3D");
    assert_eq!(decode_signed_characters("a%"), "a%");
    assert_eq!(decode_signed_characters("a%3"), "a%3");
    assert_eq!(decode_signed_characters("%%3A"), "%:");
    assert_eq!(decode_signed_characters("%G3A"), "%G3A");
    assert_eq!(decode_signed_characters("é%2Cü"), "é,ü");
    assert_eq!(decode_signed_characters(""), "");
}

// ---------------------------------------------------------------- parse: real fixtures

#[test]
fn the_fixtures_are_the_shared_files_unchanged() {
    assert!(CLOSEDWON.starts_with(br#"[{"objectId":697680835,"#));
    assert!(!CLOSEDWON.ends_with(b"\n"));
    assert_eq!(CLOSEDWON.len(), 280);
    assert_eq!(DOCS_BATCH.len(), 498);
}

#[test]
fn closedwon_fixture_gives_a_stage_change() {
    let request = WebhookRequest::post(URL, CLOSEDWON);
    for opts in [ParseOptions::default(), popts()] {
        let events = parse(&opts, &request).expect("parse");
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e.source, "hubspot");
        assert_eq!(e.object.kind, ObjectKind::Deal);
        assert_eq!(e.object.id, "697680835");
        assert_eq!(
            e.change,
            Change::StageChanged {
                pipeline: None,
                from: None,
                to: "closedwon".into()
            }
        );
        assert_eq!(
            e.occurred_at,
            Some(
                Utc.with_ymd_and_hms(2019, 4, 24, 11, 36, 55).unwrap()
                    + TimeDelta::milliseconds(815)
            )
        );
        assert_eq!(
            e.delivery_id.as_deref(),
            Some("5799819:deal.propertyChange:697680835:dealstage:closedwon:1556105815815")
        );
        assert_eq!(e.account.as_deref(), Some("5799819"));
        assert_eq!(e.referral_code, None);
        assert_eq!(e.email, None);
        assert!(e.related.is_empty());
    }
    // Filtered on its own portal and app: kept; on others: dropped.
    let own = ParseOptions {
        portal_id: Some(5_799_819),
        app_id: Some(186_886),
        ..ParseOptions::default()
    };
    assert_eq!(parse(&own, &request).unwrap().len(), 1);
    let other = ParseOptions {
        portal_id: Some(33),
        ..ParseOptions::default()
    };
    assert!(parse(&other, &request).unwrap().is_empty());
}

#[test]
fn docs_batch_with_the_event_type_key() {
    let request = WebhookRequest::post(URL, DOCS_BATCH);
    let events = parse(&ParseOptions::default(), &request).expect("parse");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0].object,
        EventObject {
            kind: ObjectKind::Contact,
            id: "1246965".into()
        }
    );
    assert_eq!(events[0].change, updated_fields(&["lifecyclestage"]));
    assert_eq!(
        events[1].object,
        EventObject {
            kind: ObjectKind::Contact,
            id: "1246978".into()
        }
    );
    assert_eq!(events[1].change, Change::Created);
    let at = Utc.timestamp_millis_opt(1_462_216_307_945).unwrap();
    assert!(events.iter().all(|e| e.occurred_at == Some(at)));
    assert!(events.iter().all(|e| e.account.as_deref() == Some("33")));
    assert_eq!(
        events[0].delivery_id.as_deref(),
        Some("33:contact.propertyChange:1246965:lifecyclestage:subscriber:1462216307945")
    );
    assert_eq!(
        events[1].delivery_id.as_deref(),
        Some("33:contact.creation:1246978:::1462216307945")
    );

    let converting = ParseOptions {
        conversion_lifecycle_stages: vec!["Subscriber".into()],
        ..ParseOptions::default()
    };
    let events = parse(&converting, &request).expect("parse");
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].change,
        Change::LeadConverted {
            lead_id: "1246965".into(),
            deal_id: None
        }
    );
    assert_eq!(events[0].object.kind, ObjectKind::Contact);
    assert_eq!(events[1].change, Change::Created);
}

// ---------------------------------------------------------------- parse: mapping rules

#[test]
fn contact_lifecycle_events() {
    let o = popts();
    let e = parse_one(&o, ev("contact.creation"));
    assert_eq!(
        (e.object.kind.clone(), e.object.id.as_str()),
        (ObjectKind::Contact, "123")
    );
    assert_eq!(e.change, Change::Created);
    assert_eq!(
        e.occurred_at,
        Some(Utc.with_ymd_and_hms(2019, 7, 26, 4, 0, 0).unwrap())
    );
    assert_eq!(e.account.as_deref(), Some("62515"));
    for kind in ["contact.deletion", "contact.privacyDeletion"] {
        let e = parse_one(&o, ev(kind));
        assert_eq!(e.object.kind, ObjectKind::Contact, "{kind}");
        assert_eq!(e.change, Change::Deleted, "{kind}");
    }
}

#[test]
fn contact_referral_code_property() {
    let o = popts();
    let e = parse_one(
        &o,
        prop("contact.propertyChange", "referral_code", "  ABC-123 "),
    );
    assert_eq!(e.change, updated_fields(&["referral_code"]));
    assert_eq!(e.referral_code.as_deref(), Some("ABC-123"));
    assert_eq!(e.email, None);
    let e = parse_one(&o, prop("contact.propertyChange", "referral_code", "  "));
    assert_eq!(e.change, updated_fields(&["referral_code"]));
    assert_eq!(e.referral_code, None);
    // Not configured: a plain update without a code.
    let e = parse_one(
        &ParseOptions::default(),
        prop("contact.propertyChange", "referral_code", "ABC-123"),
    );
    assert_eq!(e.change, updated_fields(&["referral_code"]));
    assert_eq!(e.referral_code, None);
    // The deal's code property is not the contact's.
    let e = parse_one(
        &o,
        prop("contact.propertyChange", "deal_referral_code", "X"),
    );
    assert_eq!(e.referral_code, None);
}

#[test]
fn contact_lifecycle_stage_conversion() {
    let o = popts();
    for stage in ["salesqualifiedlead", "SalesQualifiedLead", "opportunity"] {
        let e = parse_one(&o, prop("contact.propertyChange", "lifecyclestage", stage));
        assert_eq!(
            e.change,
            Change::LeadConverted {
                lead_id: "123".into(),
                deal_id: None
            },
            "{stage}"
        );
        assert_eq!(e.object.kind, ObjectKind::Contact);
        assert_eq!(e.object.id, "123");
    }
    for stage in ["lead", "customer", ""] {
        let e = parse_one(&o, prop("contact.propertyChange", "lifecyclestage", stage));
        assert_eq!(e.change, updated_fields(&["lifecyclestage"]), "{stage}");
    }
}

#[test]
fn contact_email_and_other_properties() {
    let o = popts();
    let e = parse_one(
        &o,
        prop("contact.propertyChange", "email", " ada@example.com "),
    );
    assert_eq!(e.change, updated_fields(&["email"]));
    assert_eq!(e.email.as_deref(), Some("ada@example.com"));
    assert_eq!(e.referral_code, None);
    let e = parse_one(&o, prop("contact.propertyChange", "firstname", "Ada"));
    assert_eq!(e.change, updated_fields(&["firstname"]));
    assert_eq!(e.email, None);
    let e = parse_one(&o, ev("contact.propertyChange"));
    assert_eq!(e.change, updated_fields(&[]));
}

#[test]
fn deal_events() {
    let o = popts();
    let e = parse_one(&o, ev("deal.creation"));
    assert_eq!(
        (e.object.kind.clone(), e.change),
        (ObjectKind::Deal, Change::Created)
    );
    let e = parse_one(&o, ev("deal.deletion"));
    assert_eq!(
        (e.object.kind.clone(), e.change),
        (ObjectKind::Deal, Change::Deleted)
    );

    let e = parse_one(
        &o,
        prop("deal.propertyChange", "dealstage", " contractsent "),
    );
    assert_eq!(
        e.change,
        Change::StageChanged {
            pipeline: None,
            from: None,
            to: "contractsent".into()
        }
    );
    parse_none(&o, prop("deal.propertyChange", "dealstage", ""));
    let mut no_value = ev("deal.propertyChange");
    no_value["propertyName"] = json!("dealstage");
    parse_none(&o, no_value);

    let e = parse_one(&o, prop("deal.propertyChange", "pipeline", "default"));
    assert_eq!(e.change, updated_fields(&["pipeline"]));
    assert_eq!(e.referral_code, None);

    let e = parse_one(
        &o,
        prop("deal.propertyChange", "deal_referral_code", "REF-9"),
    );
    assert_eq!(e.object.kind, ObjectKind::Deal);
    assert_eq!(e.change, updated_fields(&["deal_referral_code"]));
    assert_eq!(e.referral_code.as_deref(), Some("REF-9"));

    let e = parse_one(&o, prop("deal.propertyChange", "amount", "1000"));
    assert_eq!(e.change, updated_fields(&["amount"]));
    assert_eq!(e.referral_code, None);
    // The contact's code property is not the deal's; nor is email read on deals.
    let e = parse_one(&o, prop("deal.propertyChange", "referral_code", "X"));
    assert_eq!(e.referral_code, None);
    let e = parse_one(&o, prop("deal.propertyChange", "email", "a@b.example"));
    assert_eq!(e.email, None);
}

#[test]
fn associations_in_both_directions_give_the_same_event() {
    let o = popts();
    let contact_side = parse_one(
        &o,
        assoc(
            "contact.associationChange",
            "CONTACT_TO_DEAL",
            501,
            902,
            false,
        ),
    );
    let mut deal_message = assoc("deal.associationChange", "DEAL_TO_CONTACT", 902, 501, false);
    deal_message["eventId"] = json!(301);
    deal_message["subscriptionId"] = json!(401);
    let deal_side = parse_one(&o, deal_message);
    assert_eq!(contact_side, deal_side);
    let e = contact_side;
    assert_eq!(
        e.object,
        EventObject {
            kind: ObjectKind::Deal,
            id: "902".into()
        }
    );
    assert_eq!(e.change, updated_fields(&["associations.contacts"]));
    assert_eq!(
        e.related,
        vec![EventObject {
            kind: ObjectKind::Contact,
            id: "501".into()
        }]
    );
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("62515:association:902:501:1564113600000")
    );
    assert_eq!(e.account.as_deref(), Some("62515"));
    assert!(e.occurred_at.is_some());
    // Lower-case types and either subscription are fine.
    let e = parse_one(
        &o,
        assoc("deal.associationChange", "contact_to_deal", 501, 902, false),
    );
    assert_eq!(e.object.id, "902");
    assert_eq!(e.related[0].id, "501");
}

#[test]
fn removed_and_other_associations_give_nothing() {
    let o = popts();
    parse_none(
        &o,
        assoc("contact.associationChange", "CONTACT_TO_DEAL", 1, 2, true),
    );
    let mut as_text = assoc("deal.associationChange", "DEAL_TO_CONTACT", 2, 1, false);
    as_text["associationRemoved"] = json!("TRUE");
    parse_none(&o, as_text);
    for t in [
        "CONTACT_TO_COMPANY",
        "DEAL_TO_LINE_ITEM",
        "COMPANY_TO_DEAL",
        "",
    ] {
        parse_none(&o, assoc("contact.associationChange", t, 1, 2, false));
    }
    parse_none(
        &o,
        assoc("company.associationChange", "CONTACT_TO_DEAL", 1, 2, false),
    );
    let mut missing = assoc("contact.associationChange", "CONTACT_TO_DEAL", 1, 2, false);
    missing.as_object_mut().unwrap().remove("toObjectId");
    parse_none(&o, missing);
    // A removal has its own delivery id.
    let removed = assoc("contact.associationChange", "CONTACT_TO_DEAL", 1, 2, true);
    assert_eq!(
        delivery_id(removed.as_object().unwrap()),
        "62515:association:2:1:1564113600000:removed"
    );
}

#[test]
fn unmapped_types_give_nothing() {
    let o = popts();
    for kind in [
        "contact.merge",
        "contact.restore",
        "deal.merge",
        "deal.restore",
        "company.creation",
        "company.propertyChange",
        "ticket.creation",
        "product.deletion",
        "line_item.creation",
        "conversation.creation",
        "contact",
        "contact.",
        ".creation",
        "object.propertyChange",
    ] {
        parse_none(&o, prop(kind, "dealstage", "closedwon"));
    }
}

#[test]
fn types_are_read_from_either_key_in_any_case() {
    let o = popts();
    let mut e = ev("x");
    let m = e.as_object_mut().unwrap();
    m.remove("subscriptionType");
    m.insert("eventType".into(), json!("DEAL.CREATION"));
    assert_eq!(parse_one(&o, e).change, Change::Created);
    // subscriptionType wins when both are there.
    let mut both = ev("deal.deletion");
    both["eventType"] = json!("deal.creation");
    assert_eq!(parse_one(&o, both).change, Change::Deleted);
}

// ---------------------------------------------------------------- parse: filtering, ids

#[test]
fn portal_and_app_filters() {
    let mut o = popts();
    o.portal_id = Some(62515);
    assert_eq!(parse_value(&o, json!([ev("contact.creation")])).len(), 1);
    o.portal_id = Some(1);
    assert!(parse_value(&o, json!([ev("contact.creation")])).is_empty());
    assert!(
        parse_value(
            &o,
            json!([assoc(
                "contact.associationChange",
                "CONTACT_TO_DEAL",
                1,
                2,
                false
            )])
        )
        .is_empty()
    );
    o.portal_id = None;
    o.app_id = Some(54321);
    assert_eq!(parse_value(&o, json!([ev("contact.creation")])).len(), 1);
    o.app_id = Some(99);
    assert!(parse_value(&o, json!([ev("contact.creation")])).is_empty());

    // Missing portalId / appId with a filter: dropped; without a filter: kept.
    let mut bare = ev("contact.creation");
    bare.as_object_mut().unwrap().remove("portalId");
    bare.as_object_mut().unwrap().remove("appId");
    let filtered = ParseOptions {
        portal_id: Some(62515),
        ..popts()
    };
    assert!(parse_value(&filtered, json!([bare.clone()])).is_empty());
    let filtered = ParseOptions {
        app_id: Some(54321),
        ..popts()
    };
    assert!(parse_value(&filtered, json!([bare.clone()])).is_empty());
    let e = parse_one(&popts(), bare);
    assert_eq!(e.account, None);
    assert_eq!(
        e.delivery_id.as_deref(),
        Some(":contact.creation:123:::1564113600000")
    );

    // A mixed batch keeps only the configured portal's events, in order.
    let mut other = ev("deal.creation");
    other["portalId"] = json!("777");
    let mut string_portal = ev("deal.deletion");
    string_portal["portalId"] = json!("62515");
    let o = ParseOptions {
        portal_id: Some(62515),
        ..popts()
    };
    let events = parse_value(&o, json!([ev("contact.creation"), other, string_portal]));
    let changes: Vec<Change> = events.iter().map(|e| e.change.clone()).collect();
    assert_eq!(changes, vec![Change::Created, Change::Deleted]);
}

#[test]
fn a_retried_batch_gives_identical_events() {
    let o = popts();
    let batch = |attempt: u64, event_id: u64| {
        let mut events = vec![
            ev("contact.creation"),
            prop("deal.propertyChange", "dealstage", "closedwon"),
            prop("contact.propertyChange", "referral_code", "ABC"),
            assoc("contact.associationChange", "CONTACT_TO_DEAL", 5, 6, false),
        ];
        for e in &mut events {
            e["attemptNumber"] = json!(attempt);
            e["eventId"] = json!(event_id);
        }
        Value::Array(events)
    };
    let first = parse_value(&o, batch(0, 1));
    let retry = parse_value(&o, batch(4, 987_654));
    assert_eq!(first.len(), 4);
    assert_eq!(first, retry);
    let ids: Vec<_> = first
        .iter()
        .map(|e| e.delivery_id.clone().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "62515:contact.creation:123:::1564113600000",
            "62515:deal.propertyChange:123:dealstage:closedwon:1564113600000",
            "62515:contact.propertyChange:123:referral_code:ABC:1564113600000",
            "62515:association:6:5:1564113600000",
        ]
    );
    // Another time, value or portal is another delivery.
    let mut later = prop("deal.propertyChange", "dealstage", "closedwon");
    later["occurredAt"] = json!(1_564_113_600_001_i64);
    assert_ne!(
        parse_one(&o, later).delivery_id.as_deref(),
        Some(ids[1].as_str())
    );
    let lost = prop("deal.propertyChange", "dealstage", "closedlost");
    assert_ne!(
        parse_one(&o, lost).delivery_id.as_deref(),
        Some(ids[1].as_str())
    );
}

#[test]
fn ids_may_be_numbers_or_strings() {
    let o = popts();
    let mut strings = prop("deal.propertyChange", "dealstage", "closedwon");
    strings["objectId"] = json!(" 123 ");
    strings["portalId"] = json!("62515");
    strings["occurredAt"] = json!("1564113600000");
    let a = parse_one(&o, strings);
    let b = parse_one(&o, prop("deal.propertyChange", "dealstage", "closedwon"));
    assert_eq!(a, b);
    assert_eq!(a.object.id, "123");

    let mut big = ev("contact.creation");
    big["objectId"] = json!(18_446_744_073_709_551_615_u64);
    assert_eq!(parse_one(&o, big).object.id, "18446744073709551615");
    let mut assoc_strings = assoc("contact.associationChange", "CONTACT_TO_DEAL", 0, 0, false);
    assoc_strings["fromObjectId"] = json!("501");
    assoc_strings["toObjectId"] = json!("902");
    let e = parse_one(&o, assoc_strings);
    assert_eq!(
        (e.object.id.as_str(), e.related[0].id.as_str()),
        ("902", "501")
    );
}

#[test]
fn junk_elements_are_skipped_not_errors() {
    let o = popts();
    let mut no_id = ev("contact.creation");
    no_id.as_object_mut().unwrap().remove("objectId");
    let mut no_type = ev("contact.creation");
    no_type.as_object_mut().unwrap().remove("subscriptionType");
    let bad_ids = ["abc", "-1", "1.5", "", "0"]
        .map(|id| {
            let mut e = ev("contact.creation");
            e["objectId"] = json!(id);
            e
        })
        .to_vec();
    let mut numeric_bad = vec![];
    for id in [
        json!(-1),
        json!(1.5),
        json!(0),
        json!(null),
        json!([1]),
        json!({"id": 1}),
    ] {
        let mut e = ev("contact.creation");
        e["objectId"] = id;
        numeric_bad.push(e);
    }
    let mut type_not_string = ev("x");
    type_not_string["subscriptionType"] = json!({"a": 1});
    let mut elements = vec![
        json!(1),
        json!(null),
        json!("contact.creation"),
        json!([ev("contact.creation")]),
        json!({}),
        no_id,
        no_type,
        type_not_string,
    ];
    elements.extend(bad_ids);
    elements.extend(numeric_bad);
    elements.push(ev("deal.creation"));
    let events = parse_value(&o, Value::Array(elements));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].object.kind, ObjectKind::Deal);
    assert!(parse_value(&o, json!([])).is_empty());
}

#[test]
fn bad_or_missing_times_are_none() {
    let o = popts();
    for t in [
        json!(null),
        json!("yesterday"),
        json!(-5),
        json!(1.5e3),
        json!(i64::MAX),
    ] {
        let mut e = ev("contact.creation");
        e["occurredAt"] = t.clone();
        assert_eq!(parse_one(&o, e).occurred_at, None, "{t}");
    }
    let mut e = ev("contact.creation");
    e.as_object_mut().unwrap().remove("occurredAt");
    let e = parse_one(&o, e);
    assert_eq!(e.occurred_at, None);
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("62515:contact.creation:123:::")
    );
}

#[test]
fn a_single_event_object_is_accepted() {
    let events = parse(
        &popts(),
        &WebhookRequest::post(URL, serde_json::to_vec(&ev("deal.creation")).unwrap()),
    )
    .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].change, Change::Created);
}

#[test]
fn malformed_bodies_are_validation_errors() {
    let o = popts();
    for body in [&b""[..], b"not json", b"[{]", b"\xff\xfe", b"[1,"] {
        let m = validation(parse(&o, &WebhookRequest::post(URL, body)));
        assert!(m.contains("not JSON"), "{m}");
    }
    for body in ["1", "\"text\"", "null", "true"] {
        let m = validation(parse(&o, &WebhookRequest::post(URL, body)));
        assert!(m.contains("neither a JSON array"), "{m}");
    }
    // Too deep for serde_json: an error, not a stack overflow.
    let deep = "[".repeat(100_000);
    validation(parse(&o, &WebhookRequest::post(URL, deep)));
}

#[test]
fn order_is_kept_and_duplicates_within_a_body_too() {
    let o = popts();
    let events = parse_value(
        &o,
        json!([
            prop("deal.propertyChange", "dealstage", "closedwon"),
            ev("contact.creation"),
            prop("deal.propertyChange", "dealstage", "closedwon"),
            assoc("contact.associationChange", "CONTACT_TO_DEAL", 5, 6, false),
            assoc("deal.associationChange", "DEAL_TO_CONTACT", 6, 5, false),
        ]),
    );
    assert_eq!(events.len(), 5);
    assert_eq!(events[0], events[2]);
    assert_eq!(events[3], events[4]);
    assert_eq!(events[1].change, Change::Created);
    assert_eq!(events[0].object.kind, ObjectKind::Deal);
}

#[test]
fn delivery_id_formats() {
    let e = json!({"portalId": 1, "subscriptionType": "deal.propertyChange", "objectId": "2",
        "propertyName": "dealstage", "propertyValue": "x", "occurredAt": 3, "eventId": 9,
        "attemptNumber": 7});
    assert_eq!(
        delivery_id(e.as_object().unwrap()),
        "1:deal.propertyChange:2:dealstage:x:3"
    );
    assert_eq!(delivery_id(&Map::new()), ":::::");
    let e = json!({"eventType": "contact.creation", "objectId": 5});
    assert_eq!(
        delivery_id(e.as_object().unwrap()),
        ":contact.creation:5:::"
    );
}

// ---------------------------------------------------------------- never panics

const KEYS: &[&str] = &[
    "objectId",
    "propertyName",
    "propertyValue",
    "changeSource",
    "eventId",
    "subscriptionId",
    "portalId",
    "appId",
    "occurredAt",
    "subscriptionType",
    "eventType",
    "attemptNumber",
    "changeFlag",
    "associationType",
    "fromObjectId",
    "toObjectId",
    "associationRemoved",
    "isPrimaryAssociation",
    "primaryObjectId",
    "mergedObjectIds",
];

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        "[0-9]{0,20}".prop_map(Value::String),
        prop::sample::select(vec![
            "contact.creation",
            "contact.deletion",
            "contact.privacyDeletion",
            "contact.propertyChange",
            "contact.associationChange",
            "deal.creation",
            "deal.deletion",
            "deal.propertyChange",
            "deal.associationChange",
            "deal.merge",
            "CONTACT_TO_DEAL",
            "DEAL_TO_CONTACT",
            "dealstage",
            "lifecyclestage",
            "email",
            "referral_code",
            "pipeline",
            "subscriber",
            "true",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn arb_event() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        1 => ".{0,8}",
    ];
    let value = arb_leaf().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(".{0,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(key, value, 0..12)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn arb_opts() -> impl Strategy<Value = ParseOptions> {
    (
        prop::option::of(prop_oneof![Just(62515_u64), any::<u64>()]),
        prop::option::of(any::<u64>()),
        prop::option::of(prop_oneof![Just("referral_code".to_owned()), ".{0,6}"]),
        prop::option::of(prop_oneof![Just("dealstage".to_owned()), ".{0,6}"]),
        prop::collection::vec(prop_oneof![Just("subscriber".to_owned()), ".{0,6}"], 0..3),
    )
        .prop_map(|(portal_id, app_id, c, d, stages)| ParseOptions {
            portal_id,
            app_id,
            contact_code_property: c,
            deal_code_property: d,
            conversion_lifecycle_stages: stages,
        })
}

const HEADER_NAMES: &[&str] = &[
    "X-HubSpot-Signature-v3",
    "x-hubspot-signature-v3",
    "X-HubSpot-Request-Timestamp",
    "X-HubSpot-Signature",
    "X-HubSpot-Signature-Version",
    "Host",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
        opts in arb_opts(),
    ) {
        let _ = parse(&opts, &WebhookRequest::post(URL, body));
    }

    #[test]
    fn parse_never_panics_on_arbitrary_event_arrays(
        events in prop::collection::vec(arb_event(), 0..8),
        opts in arb_opts(),
    ) {
        let request = WebhookRequest::post(URL, serde_json::to_vec(&events).unwrap());
        let parsed = parse(&opts, &request).expect("an array of objects always parses");
        prop_assert!(parsed.len() <= events.len());
        for e in &parsed {
            prop_assert_eq!(e.source.as_str(), "hubspot");
            prop_assert!(e.delivery_id.is_some());
            prop_assert!(!e.object.id.is_empty());
        }
        for e in events.iter().filter_map(Value::as_object) {
            let _ = delivery_id(e);
        }
    }

    #[test]
    fn verify_never_panics_on_arbitrary_requests(
        headers in prop::collection::vec(
            (prop::sample::select(HEADER_NAMES.to_vec()), prop_oneof![".{0,60}", "[0-9]{0,20}", "v[0-9]"]),
            0..8,
        ),
        body in prop::collection::vec(any::<u8>(), 0..256),
        method in "[A-Za-z]{0,6}",
        url in prop_oneof![".{0,60}", Just(URL.to_owned()), "/[a-z%0-9A-F?=&]{0,40}"],
        webhook_url in prop::option::of(".{0,30}"),
        secret in ".{0,20}",
        now in any::<i64>(),
        tolerance in any::<u64>(),
        versions in prop::sample::subsequence(ALL.to_vec(), 0..=3),
    ) {
        let secret = Secret::new(secret);
        let mut request = WebhookRequest::post(url, body);
        request.method = method;
        for (name, value) in headers {
            request = request.with_header(name, value);
        }
        let opts = VerifyOptions {
            client_secret: &secret,
            versions: &versions,
            webhook_url: webhook_url.as_deref(),
            tolerance: Duration::from_secs(tolerance),
        };
        let now = DateTime::from_timestamp_millis(now).unwrap_or_else(|| ms(NOW_MS));
        if let Err(e) = verify(&opts, &request, now) {
            prop_assert_eq!(e.kind(), &ErrorKind::Unauthorized);
            prop_assert!(!e.message().contains('\n'));
        }
        let _ = signed_url(&request, opts.webhook_url);
        let _ = decode_signed_characters(&request.url);
    }
}
