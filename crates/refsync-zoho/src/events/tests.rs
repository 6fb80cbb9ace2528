#![allow(clippy::needless_pass_by_value)] // json! takes its values by reference

use chrono::TimeZone;
use proptest::prelude::*;
use refsync_core::ErrorKind;
use serde_json::json;

use super::*;

// ---------------------------------------------------------------- fixtures and helpers

/// Real notification body: the "Sample response received at the notification URL" of Zoho's
/// Enable Notifications docs (see the `.source.txt`).
const LEADS_INSERT: &[u8] =
    include_bytes!("../../tests/fixtures/notification_callback_leads_insert.json");
const LEADS_INSERT_SOURCE: &str =
    include_str!("../../tests/fixtures/notification_callback_leads_insert.source.txt");

/// The token and channel of the docs' sample.
const TOKEN: &str = "TOKEN_FOR_VERIFICATION_OF_1000000068001";
const CHANNEL: &str = "1000000068001";
/// A workflow secret of our own.
const WORKFLOW_SECRET: &str = "wf-secret-for-tests-7c2e9a";
const URL: &str = "https://refsync.example/hooks/zoho";

fn token() -> Secret {
    Secret::new(TOKEN)
}

fn workflow_secret() -> Secret {
    Secret::new(WORKFLOW_SECRET)
}

fn vopts<'a>(token: &'a Secret, workflow: Option<&'a Secret>) -> VerifyOptions<'a> {
    VerifyOptions {
        notification_token: token,
        channel_id: CHANNEL,
        workflow_secret: workflow,
    }
}

fn popts() -> ParseOptions {
    ParseOptions {
        referral_code_field: Some("Referral_Code".into()),
    }
}

fn unauthorized(result: Result<Verification>) -> String {
    let e = result.expect_err("verify must refuse");
    assert_eq!(e.kind(), &ErrorKind::Unauthorized, "{e}");
    let text = format!("{e} / {e:?}");
    assert!(!text.contains('\n'), "{text}");
    for secret in [TOKEN, WORKFLOW_SECRET] {
        assert!(!text.contains(secret), "secret leaked: {text}");
    }
    e.message().to_owned()
}

fn verified(result: Result<Verification>) -> String {
    match result.expect("verify must accept") {
        Verification::Verified { scheme } => scheme,
        other => panic!("not verified: {other:?}"),
    }
}

fn validation(result: Result<Vec<CrmEvent>>) -> String {
    let e = result.expect_err("parse must refuse");
    assert_eq!(e.kind(), &ErrorKind::Validation, "{e}");
    assert!(!e.message().contains('\n'), "{e:?}");
    e.message().to_owned()
}

fn post_json(body: Value) -> WebhookRequest {
    WebhookRequest::post(URL, serde_json::to_vec(&body).unwrap())
        .with_header("Content-Type", "application/json")
}

fn parse_value(opts: &ParseOptions, body: Value) -> Vec<CrmEvent> {
    parse(opts, &post_json(body)).expect("parse")
}

fn ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

/// A **synthetic** notification: Zoho's docs only show an `insert` sample, and no public
/// capture of `update` / `delete` bodies exists, so these follow the documented fields of the
/// callback body (`server_time`, `query_params`, `module`, `resource_uri`, `ids`,
/// `affected_fields`, `operation`, `channel_id`, `token`).
fn synthetic(module: &str, operation: &str, ids: Value, affected_fields: Value) -> Value {
    json!({
        "server_time": 1_718_117_200_000_i64,
        "query_params": {},
        "module": module,
        "resource_uri": format!("https://www.zohoapis.com/crm/v8/{module}"),
        "ids": ids,
        "affected_fields": affected_fields,
        "operation": operation,
        "channel_id": CHANNEL,
        "token": TOKEN,
    })
}

fn updated_fields(fields: &[&str]) -> Change {
    Change::Updated {
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

// ---------------------------------------------------------------- the real fixture

#[test]
fn the_fixture_is_the_documented_sample() {
    assert!(
        LEADS_INSERT_SOURCE.contains("notifications/enable.html"),
        "{LEADS_INSERT_SOURCE}"
    );
    let body: Value = serde_json::from_slice(LEADS_INSERT).unwrap();
    assert_eq!(body["channel_id"], json!(CHANNEL));
    assert_eq!(body["token"], json!(TOKEN));
}

#[test]
fn the_documented_notification_verifies() {
    let t = token();
    let request = WebhookRequest::post(URL, LEADS_INSERT);
    assert_eq!(
        verified(verify(&vopts(&t, None), &request)),
        "zoho-channel-token"
    );
    // Workflow settings do not matter for notifications.
    let w = workflow_secret();
    assert_eq!(
        verified(verify(&vopts(&t, Some(&w)), &request)),
        "zoho-channel-token"
    );
    // Our channel id is compared trimmed.
    let opts = VerifyOptions {
        channel_id: " 1000000068001\n",
        ..vopts(&t, None)
    };
    verified(verify(&opts, &request));
}

#[test]
fn the_documented_notification_parses() {
    let events = parse(&popts(), &WebhookRequest::post(URL, LEADS_INSERT)).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.source, "zoho");
    assert_eq!(e.object.kind, ObjectKind::Lead);
    assert_eq!(e.object.id, "5725767000003000064");
    assert_eq!(e.change, Change::Created);
    let at = e.occurred_at.unwrap();
    assert_eq!(at, ms(1_718_117_126_473));
    assert_eq!(
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "2024-06-11T14:45:26.473Z"
    );
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("1000000068001:Leads:5725767000003000064:insert:1718117126473")
    );
    assert_eq!(e.referral_code, None);
    assert_eq!(e.email, None);
    assert_eq!(e.account, None);
    assert!(e.related.is_empty());
}

#[test]
fn a_wrong_token_is_refused() {
    let wrong = Secret::new("TOKEN_FOR_VERIFICATION_OF_1000000068002");
    let request = WebhookRequest::post(URL, LEADS_INSERT);
    let m = unauthorized(verify(&vopts(&wrong, None), &request));
    assert_eq!(m, "notification token mismatch");
    assert!(!m.contains("TOKEN_FOR_VERIFICATION_OF_1000000068002"));

    // A forged body with another token, against the right configuration.
    let mut body = synthetic("Leads", "insert", json!(["1"]), json!([]));
    for forged in [
        json!("guess"),
        json!(format!("{TOKEN} ")),
        json!(&TOKEN[1..]),
    ] {
        body["token"] = forged;
        let t = token();
        let m = unauthorized(verify(&vopts(&t, None), &post_json(body.clone())));
        assert_eq!(m, "notification token mismatch");
    }
}

#[test]
fn a_missing_token_is_refused() {
    let t = token();
    for token in [None, Some(json!("")), Some(json!(null)), Some(json!(42))] {
        let mut body: Value = serde_json::from_slice(LEADS_INSERT).unwrap();
        match token {
            Some(v) => body["token"] = v,
            None => {
                body.as_object_mut().unwrap().remove("token");
            }
        }
        let m = unauthorized(verify(&vopts(&t, None), &post_json(body)));
        assert_eq!(m, "the notification carries no token");
    }
}

#[test]
fn a_wrong_channel_is_refused() {
    let t = token();
    let opts = VerifyOptions {
        channel_id: "1000000068002",
        ..vopts(&t, None)
    };
    let m = unauthorized(verify(&opts, &WebhookRequest::post(URL, LEADS_INSERT)));
    assert_eq!(
        m,
        "notification for channel 1000000068001, not this instance's channel 1000000068002"
    );

    // Attacker-controlled channel ids are quoted, escaped and cut.
    let mut body = synthetic("Leads", "insert", json!(["1"]), json!([]));
    body["channel_id"] = json!("x\ny".repeat(30));
    let m = unauthorized(verify(&vopts(&t, None), &post_json(body.clone())));
    assert!(m.starts_with("notification for channel \"x\\ny"), "{m}");
    assert!(
        m.ends_with("…, not this instance's channel 1000000068001"),
        "{m}"
    );
    for bad in [
        json!(null),
        json!(1.5),
        json!([CHANNEL]),
        json!({"id": CHANNEL}),
    ] {
        body["channel_id"] = bad;
        let m = unauthorized(verify(&vopts(&t, None), &post_json(body.clone())));
        assert!(m.starts_with("notification for channel \"\","), "{m}");
    }
}

#[test]
fn channel_ids_may_be_numbers() {
    let t = token();
    let mut body: Value = serde_json::from_slice(LEADS_INSERT).unwrap();
    body["channel_id"] = json!(1_000_000_068_001_u64);
    verified(verify(&vopts(&t, None), &post_json(body.clone())));
    let events = parse_value(&popts(), body.clone());
    assert_eq!(
        events[0].delivery_id.as_deref(),
        Some("1000000068001:Leads:5725767000003000064:insert:1718117126473")
    );
    body["channel_id"] = json!(1_000_000_068_002_u64);
    unauthorized(verify(&vopts(&t, None), &post_json(body)));
}

#[test]
fn an_empty_token_or_channel_setting_refuses_everything() {
    let empty = Secret::new("");
    let mut body: Value = serde_json::from_slice(LEADS_INSERT).unwrap();
    body["token"] = json!("");
    let m = unauthorized(verify(&vopts(&empty, None), &post_json(body)));
    assert!(m.contains("token is empty"), "{m}");

    let t = token();
    let mut body: Value = serde_json::from_slice(LEADS_INSERT).unwrap();
    body["channel_id"] = json!(" ");
    let opts = VerifyOptions {
        channel_id: "  ",
        ..vopts(&t, None)
    };
    let m = unauthorized(verify(&opts, &post_json(body)));
    assert!(m.contains("channel id is empty"), "{m}");
}

// ---------------------------------------------------------------- synthetic notifications

#[test]
fn an_update_lists_the_affected_fields() {
    let body = synthetic(
        "Deals",
        "update",
        json!(["5725767000003000071"]),
        json!(["Stage", " Amount ", "", 7, null]),
    );
    let t = token();
    verified(verify(&vopts(&t, None), &post_json(body.clone())));
    let events = parse_value(&popts(), body);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.object.kind, ObjectKind::Deal);
    assert_eq!(e.object.id, "5725767000003000071");
    assert_eq!(e.change, updated_fields(&["Stage", "Amount"]));
    assert_eq!(e.occurred_at, Some(ms(1_718_117_200_000)));
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("1000000068001:Deals:5725767000003000071:update:1718117200000")
    );
    // Without affected_fields: an update of unknown fields.
    let mut body = synthetic("Contacts", "update", json!(["9"]), json!([]));
    body.as_object_mut().unwrap().remove("affected_fields");
    let events = parse_value(&popts(), body);
    assert_eq!(events[0].object.kind, ObjectKind::Contact);
    assert_eq!(events[0].change, updated_fields(&[]));
}

#[test]
fn a_delete_gives_deleted_events() {
    let body = synthetic("Contacts", "delete", json!(["42"]), json!([]));
    let events = parse_value(&popts(), body);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object.kind, ObjectKind::Contact);
    assert_eq!(events[0].change, Change::Deleted);
    assert_eq!(
        events[0].delivery_id.as_deref(),
        Some("1000000068001:Contacts:42:delete:1718117200000")
    );
}

#[test]
fn subscription_operation_names_are_synonyms() {
    for (given, canonical, change) in [
        ("create", "insert", Change::Created),
        ("INSERT", "insert", Change::Created),
        ("edit", "update", updated_fields(&["Stage"])),
        (" Update ", "update", updated_fields(&["Stage"])),
        ("Delete", "delete", Change::Deleted),
    ] {
        let body = synthetic("Deals", given, json!(["7"]), json!(["Stage"]));
        let events = parse_value(&popts(), body);
        assert_eq!(events.len(), 1, "{given}");
        assert_eq!(events[0].change, change, "{given}");
        assert_eq!(
            events[0].delivery_id.as_deref(),
            Some(format!("1000000068001:Deals:7:{canonical}:1718117200000").as_str()),
            "{given}"
        );
    }
}

#[test]
fn several_ids_give_one_event_each_in_order() {
    let body = synthetic(
        "Leads",
        "insert",
        json!(["11", 12, " 13 ", "", null, 1.5, {"id": 14}, -15]),
        json!([]),
    );
    let events = parse_value(&popts(), body);
    let ids: Vec<_> = events.iter().map(|e| e.object.id.as_str()).collect();
    assert_eq!(ids, ["11", "12", "13", "-15"]);
    let deliveries: Vec<_> = events
        .iter()
        .map(|e| e.delivery_id.clone().unwrap())
        .collect();
    assert_eq!(
        deliveries,
        [
            "1000000068001:Leads:11:insert:1718117200000",
            "1000000068001:Leads:12:insert:1718117200000",
            "1000000068001:Leads:13:insert:1718117200000",
            "1000000068001:Leads:-15:insert:1718117200000",
        ]
    );
    // A lone id instead of an array; numeric ids equal their strings.
    let lone = parse_value(&popts(), synthetic("Leads", "insert", json!(11), json!([])));
    assert_eq!(lone, events[..1]);
    let none = parse_value(&popts(), synthetic("Leads", "insert", json!([]), json!([])));
    assert!(none.is_empty());
}

#[test]
fn affected_values_give_the_referral_code() {
    let mut body = synthetic(
        "Deals",
        "update",
        json!(["21", "22", "23", "24"]),
        json!([]),
    );
    body["affected_values"] = json!([
        {"record_id": "21", "values": {"Referral_Code": "  RC-21  ", "Stage": "Closed Won"}},
        {"record_id": 22, "values": {"referral_code": "RC-22"}},
        {"record_id": "23", "values": {"Referral_Code": "   "}},
        {"record_id": "24", "values": ["Referral_Code"]},
        {"record_id": "99", "values": {"Referral_Code": "RC-99"}},
        "junk",
        {"values": {"Referral_Code": "RC-none"}},
    ]);
    let events = parse_value(&popts(), body.clone());
    let codes: Vec<_> = events.iter().map(|e| e.referral_code.as_deref()).collect();
    assert_eq!(codes, [Some("RC-21"), Some("RC-22"), None, None]);
    // Without a configured field, no code.
    let events = parse_value(&ParseOptions::default(), body.clone());
    assert!(events.iter().all(|e| e.referral_code.is_none()));
    let blank = ParseOptions {
        referral_code_field: Some(" ".into()),
    };
    assert!(
        parse_value(&blank, body.clone())
            .iter()
            .all(|e| e.referral_code.is_none())
    );
    // Not an array: ignored.
    body["affected_values"] = json!({"21": {"Referral_Code": "X"}});
    let events = parse_value(&popts(), body);
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|e| e.referral_code.is_none()));
}

#[test]
fn unknown_modules_and_operations_give_no_events() {
    for (module, operation) in [
        ("Accounts", "insert"),
        ("Tasks", "update"),
        ("Lead", "insert"),
        ("Deals", "all"),
        ("Deals", "restore"),
        ("", "insert"),
    ] {
        let body = synthetic(module, operation, json!(["1"]), json!([]));
        assert!(
            parse_value(&popts(), body).is_empty(),
            "{module} {operation}"
        );
    }
    let mut body = synthetic("Deals", "insert", json!(["1"]), json!([]));
    body.as_object_mut().unwrap().remove("operation");
    assert!(parse_value(&popts(), body.clone()).is_empty());
    body["operation"] = json!("insert");
    body["module"] = json!(null);
    assert!(parse_value(&popts(), body).is_empty());
}

#[test]
fn module_names_map_case_insensitively() {
    assert_eq!(kind_of_module("Leads"), Some(ObjectKind::Lead));
    assert_eq!(kind_of_module("leads"), Some(ObjectKind::Lead));
    assert_eq!(kind_of_module("DEALS"), Some(ObjectKind::Deal));
    assert_eq!(kind_of_module(" Deals "), Some(ObjectKind::Deal));
    assert_eq!(kind_of_module("contacts"), Some(ObjectKind::Contact));
    for other in [
        "Accounts",
        "Lead",
        "Deal",
        "Contact",
        "",
        "Potentials",
        "Leads2",
    ] {
        assert_eq!(kind_of_module(other), None, "{other}");
    }
    // The module picks the kind in notifications too.
    for (module, kind) in [
        ("leads", ObjectKind::Lead),
        ("Deals", ObjectKind::Deal),
        ("CONTACTS", ObjectKind::Contact),
    ] {
        let events = parse_value(
            &popts(),
            synthetic(module, "insert", json!(["1"]), json!([])),
        );
        assert_eq!(events[0].object.kind, kind, "{module}");
    }
}

#[test]
fn server_times_are_read_leniently() {
    for (t, expected) in [
        (json!("1718117126473"), Some(ms(1_718_117_126_473))),
        (json!(0), Some(ms(0))),
        (json!(-1), None),
        (json!(1.5), None),
        (json!("soon"), None),
        (json!(i64::MAX), None),
        (json!(null), None),
    ] {
        let mut body = synthetic("Leads", "insert", json!(["1"]), json!([]));
        body["server_time"] = t.clone();
        assert_eq!(parse_value(&popts(), body)[0].occurred_at, expected, "{t}");
    }
    let mut body = synthetic("Leads", "insert", json!(["1"]), json!([]));
    body.as_object_mut().unwrap().remove("server_time");
    let e = &parse_value(&popts(), body)[0];
    assert_eq!(e.occurred_at, None);
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("1000000068001:Leads:1:insert:")
    );
}

// ---------------------------------------------------------------- workflow webhooks

fn form(url: &str, body: &str) -> WebhookRequest {
    WebhookRequest::post(url, body).with_header("Content-Type", "application/x-www-form-urlencoded")
}

fn with_secret_in_query(path_or_url: &str) -> String {
    format!("{path_or_url}?instance=main&refsync_token={WORKFLOW_SECRET}")
}

const DEAL_WON_FORM: &str = "module=Deals&id=5725767000003000071&stage=Closed+Won&pipeline=Standard%20(Standard)&referral_code=RC-7&email=ada%40example.com&modified_time=2024-06-11T20%3A15%3A26%2B05%3A30&event=deal_won";

#[test]
fn workflow_secret_in_the_query_or_a_header() {
    let t = token();
    let w = workflow_secret();
    let opts = vopts(&t, Some(&w));
    for url in [
        with_secret_in_query(URL),
        with_secret_in_query("/hooks/zoho"),
        format!("/hooks/zoho?refsync_token={WORKFLOW_SECRET}#frag"),
        format!("{URL}?refsync_token=wrong&refsync_token={WORKFLOW_SECRET}"),
    ] {
        assert_eq!(
            verified(verify(&opts, &form(&url, DEAL_WON_FORM))),
            "zoho-workflow-secret",
            "{url}"
        );
    }
    // Percent-encoded in the query.
    let encoded = Secret::new("a b&c=d/é");
    let opts_encoded = vopts(&t, Some(&encoded));
    let url = format!("{URL}?refsync_token=a+b%26c%3Dd%2F%C3%A9");
    verified(verify(&opts_encoded, &form(&url, DEAL_WON_FORM)));

    let request = form(URL, DEAL_WON_FORM).with_header("x-refsync-token", WORKFLOW_SECRET);
    assert_eq!(verified(verify(&opts, &request)), "zoho-workflow-secret");
    let request = post_json(json!({"module": "Deals", "id": "1"}))
        .with_header("X-Refsync-Token", format!(" {WORKFLOW_SECRET} "));
    verified(verify(&opts, &request));
    // A wrong query value does not spoil a right header.
    let request = form(&format!("{URL}?refsync_token=nope"), DEAL_WON_FORM)
        .with_header("X-Refsync-Token", WORKFLOW_SECRET);
    verified(verify(&opts, &request));
}

#[test]
fn a_wrong_or_missing_workflow_secret_is_refused() {
    let t = token();
    let w = workflow_secret();
    let opts = vopts(&t, Some(&w));
    let wrong = [
        format!("{URL}?refsync_token=wf-secret-for-tests-7c2e9"),
        format!("{URL}?refsync_token={WORKFLOW_SECRET}x"),
        format!("{URL}?refsync_token={}", WORKFLOW_SECRET.to_uppercase()),
        format!("{URL}?refsync_tokens={WORKFLOW_SECRET}&x=1"),
        // The channel token is not the workflow secret.
        format!("{URL}?refsync_token={TOKEN}"),
    ];
    for url in &wrong[..3] {
        let m = unauthorized(verify(&opts, &form(url, DEAL_WON_FORM)));
        assert!(m.starts_with("workflow secret mismatch"), "{m}");
    }
    let m = unauthorized(verify(&opts, &form(&wrong[3], DEAL_WON_FORM)));
    assert!(m.contains("carries no secret"), "{m}");
    let m = unauthorized(verify(&opts, &form(&wrong[4], DEAL_WON_FORM)));
    assert!(m.starts_with("workflow secret mismatch"), "{m}");

    let request = form(URL, DEAL_WON_FORM).with_header("X-Refsync-Token", "nope");
    assert!(unauthorized(verify(&opts, &request)).starts_with("workflow secret mismatch"));
    for request in [
        form(URL, DEAL_WON_FORM),
        form(&format!("{URL}?refsync_token="), DEAL_WON_FORM),
        form(URL, DEAL_WON_FORM).with_header("X-Refsync-Token", "  "),
    ] {
        let m = unauthorized(verify(&opts, &request));
        assert!(m.contains("carries no secret"), "{m}");
    }
    // The secret in the body does not count.
    let request = form(
        URL,
        &format!("module=Deals&id=1&refsync_token={WORKFLOW_SECRET}"),
    );
    assert!(unauthorized(verify(&opts, &request)).contains("carries no secret"));
    // An empty workflow secret accepts nothing, not even an empty token.
    let empty = Secret::new("");
    let m = unauthorized(verify(
        &vopts(&t, Some(&empty)),
        &form(&format!("{URL}?refsync_token="), DEAL_WON_FORM).with_header("X-Refsync-Token", ""),
    ));
    assert!(m.contains("workflow_secret is empty"), "{m}");
}

#[test]
fn workflow_webhooks_are_off_without_a_secret() {
    let t = token();
    let opts = vopts(&t, None);
    for request in [
        form(&with_secret_in_query(URL), DEAL_WON_FORM),
        form(URL, DEAL_WON_FORM).with_header("X-Refsync-Token", WORKFLOW_SECRET),
        post_json(json!({"module": "Deals", "id": "1", "token": TOKEN})),
        WebhookRequest::post(URL, "not json"),
        WebhookRequest::post(URL, ""),
        post_json(json!([{"channel_id": CHANNEL, "token": TOKEN}])),
    ] {
        let m = unauthorized(verify(&opts, &request));
        assert!(
            m.starts_with("workflow webhooks are off: set workflow_secret"),
            "{m}"
        );
    }
}

#[test]
fn a_notification_is_never_verified_by_the_workflow_secret() {
    let t = token();
    let w = workflow_secret();
    let mut body: Value = serde_json::from_slice(LEADS_INSERT).unwrap();
    body["token"] = json!("forged");
    let request = WebhookRequest::post(
        with_secret_in_query(URL),
        serde_json::to_vec(&body).unwrap(),
    )
    .with_header("X-Refsync-Token", WORKFLOW_SECRET);
    assert_eq!(
        unauthorized(verify(&vopts(&t, Some(&w)), &request)),
        "notification token mismatch"
    );
}

#[test]
fn a_form_deal_with_a_stage_is_a_stage_change() {
    let e = parse(&popts(), &form(URL, DEAL_WON_FORM)).unwrap();
    assert_eq!(e.len(), 1);
    let e = &e[0];
    assert_eq!(e.source, "zoho");
    assert_eq!(e.object.kind, ObjectKind::Deal);
    assert_eq!(e.object.id, "5725767000003000071");
    assert_eq!(
        e.change,
        Change::StageChanged {
            pipeline: Some("Standard (Standard)".into()),
            from: None,
            to: "Closed Won".into(),
        }
    );
    assert_eq!(e.referral_code.as_deref(), Some("RC-7"));
    assert_eq!(e.email.as_deref(), Some("ada@example.com"));
    assert_eq!(
        e.occurred_at,
        Some(Utc.with_ymd_and_hms(2024, 6, 11, 14, 45, 26).unwrap())
    );
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("workflow:Deals:5725767000003000071:Closed Won:2024-06-11T20:15:26+05:30")
    );
    assert_eq!(e.account, None);
}

#[test]
fn a_json_body_parses_like_the_form() {
    let body = json!({
        "module": "Deals", "id": "5725767000003000071", "stage": "Closed Won",
        "pipeline": "Standard (Standard)", "referral_code": "RC-7", "email": "ada@example.com",
        "modified_time": "2024-06-11T20:15:26+05:30", "event": "deal_won",
    });
    let from_json = parse_value(&popts(), body.clone());
    let from_form = parse(&popts(), &form(URL, DEAL_WON_FORM)).unwrap();
    assert_eq!(from_json, from_form);
    // Without a Content-Type: JSON is tried first, then form.
    let bare = WebhookRequest::post(URL, serde_json::to_vec(&body).unwrap());
    assert_eq!(parse(&popts(), &bare).unwrap(), from_form);
    let bare = WebhookRequest::post(URL, DEAL_WON_FORM);
    assert_eq!(parse(&popts(), &bare).unwrap(), from_form);
    let text = WebhookRequest::post(URL, DEAL_WON_FORM).with_header("Content-Type", "text/plain");
    assert_eq!(parse(&popts(), &text).unwrap(), from_form);
    // Numeric ids (an unquoted merge field) and upper-case keys.
    let e = parse_value(
        &popts(),
        json!({"Module": "Leads", "ID": 5725767000003000064_u64}),
    );
    assert_eq!(e[0].object.kind, ObjectKind::Lead);
    assert_eq!(e[0].object.id, "5725767000003000064");
}

#[test]
fn a_stage_outside_deals_is_an_update() {
    let e = parse(
        &popts(),
        &form(
            URL,
            "id=9&module=Leads&stage=Qualified&event=x&refsync_token=t&email=&pipeline=P",
        ),
    )
    .unwrap();
    assert_eq!(e[0].object.kind, ObjectKind::Lead);
    assert_eq!(e[0].change, updated_fields(&["event", "pipeline", "stage"]));
    assert_eq!(e[0].email, None);
    assert_eq!(
        e[0].delivery_id.as_deref(),
        Some("workflow:Leads:9:Qualified:")
    );
    // A deal without a stage is an update too.
    let e = parse_value(
        &popts(),
        json!({"module": "Deals", "id": "1", "referral_code": "RC", "modified_time": "2024-06-11 14:45:26", "nested": {"a": 1}}),
    );
    assert_eq!(
        e[0].change,
        updated_fields(&["modified_time", "referral_code"])
    );
    assert_eq!(e[0].referral_code.as_deref(), Some("RC"));
    assert_eq!(
        e[0].occurred_at,
        Some(Utc.with_ymd_and_hms(2024, 6, 11, 14, 45, 26).unwrap())
    );
    assert_eq!(
        e[0].delivery_id.as_deref(),
        Some("workflow:Deals:1::2024-06-11 14:45:26")
    );
}

#[test]
fn the_configured_field_name_also_carries_the_code() {
    let custom = ParseOptions {
        referral_code_field: Some("Ref_Code".into()),
    };
    let request = form(URL, "module=Contacts&id=3&Ref_Code=RC-3");
    let e = parse(&custom, &request).unwrap();
    assert_eq!(e[0].object.kind, ObjectKind::Contact);
    assert_eq!(e[0].referral_code.as_deref(), Some("RC-3"));
    assert_eq!(e[0].change, updated_fields(&["Ref_Code"]));
    let e = parse(&ParseOptions::default(), &request).unwrap();
    assert_eq!(e[0].referral_code, None);
    // Keys are case-insensitive, and `referral_code` wins.
    let e = parse(
        &popts(),
        &form(URL, "module=Contacts&id=3&REFERRAL_CODE=RC-4"),
    )
    .unwrap();
    assert_eq!(e[0].referral_code.as_deref(), Some("RC-4"));
    let e = parse(
        &custom,
        &form(URL, "module=Contacts&id=3&Ref_Code=B&referral_code=A"),
    )
    .unwrap();
    assert_eq!(e[0].referral_code.as_deref(), Some("A"));
}

#[test]
fn missing_module_or_id_are_validation_errors() {
    let m = validation(parse(&popts(), &form(URL, "id=1&stage=Won")));
    assert!(
        m.contains("no module") && m.contains("Leads, Deals or Contacts"),
        "{m}"
    );
    let m = validation(parse(&popts(), &form(URL, "module=&id=1")));
    assert!(m.contains("no module"), "{m}");
    let m = validation(parse(&popts(), &form(URL, "module=Deals&stage=Won")));
    assert!(m.contains("no id") && m.contains("Deal Id"), "{m}");
    let m = validation(parse(
        &popts(),
        &post_json(json!({"module": "Deals", "id": null})),
    ));
    assert!(m.contains("no id"), "{m}");
    let m = validation(parse(&popts(), &form(URL, "module=Accounts&id=1")));
    assert!(
        m.contains("Accounts") && m.contains("not Leads, Deals or Contacts"),
        "{m}"
    );
    for body in ["", "garbage", "\u{0}\u{1}"] {
        let m = validation(parse(&popts(), &WebhookRequest::post(URL, body)));
        assert!(m.contains("no module"), "{m}");
    }
    let m = validation(parse(&popts(), &post_json(json!([1, 2]))));
    assert!(m.contains("not an object"), "{m}");
    let m = validation(parse(
        &popts(),
        &WebhookRequest::post(URL, "module=Deals&id=1")
            .with_header("Content-Type", "application/json"),
    ));
    assert!(m.contains("not JSON"), "{m}");
}

#[test]
fn workflow_delivery_ids_are_stable_and_distinct() {
    let parse_form = |body: &str| {
        parse(&popts(), &form(URL, body)).unwrap()[0]
            .delivery_id
            .clone()
            .unwrap()
    };
    // Same body, same id (a redelivery).
    assert_eq!(parse_form(DEAL_WON_FORM), parse_form(DEAL_WON_FORM));
    // Without stage and time, the body's hash tells bodies apart.
    let a = parse_form("module=Leads&id=1&email=a%40x.io");
    let b = parse_form("module=Leads&id=1&email=b%40x.io");
    assert_ne!(a, b);
    assert_eq!(a, parse_form("module=Leads&id=1&email=a%40x.io"));
    let hash = sha256_hex(&[b"module=Leads&id=1&email=a%40x.io"]);
    assert_eq!(a, format!("workflow:Leads:1:::{hash}"));
    assert_eq!(hash.len(), 64);
    // With a stage or a time, no hash.
    assert_eq!(
        parse_form("module=Deals&id=2&stage=Won&event=x"),
        "workflow:Deals:2:Won:"
    );
    assert_eq!(
        parse_form("module=Deals&id=2&modified_time=yesterday"),
        "workflow:Deals:2::yesterday"
    );
    // Another stage or time is another delivery.
    assert_ne!(
        parse_form("module=Deals&id=2&stage=Won"),
        parse_form("module=Deals&id=2&stage=Lost")
    );
}

#[test]
fn modified_times_are_read_leniently() {
    let utc = |y, mo, d, h, mi, s| Some(Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap());
    for (given, expected) in [
        ("2024-06-11T14:45:26Z", utc(2024, 6, 11, 14, 45, 26)),
        ("2024-06-11T20:15:26+05:30", utc(2024, 6, 11, 14, 45, 26)),
        ("2024-06-11 20:15:26+05:30", utc(2024, 6, 11, 14, 45, 26)),
        ("2024-06-11 20:15:26 +0530", utc(2024, 6, 11, 14, 45, 26)),
        ("2024-06-11T20:15+05:30", utc(2024, 6, 11, 14, 45, 0)),
        ("2024-06-11 14:45:26", utc(2024, 6, 11, 14, 45, 26)),
        ("2024-06-11T14:45:26", utc(2024, 6, 11, 14, 45, 26)),
        ("2024-06-11 14:45", utc(2024, 6, 11, 14, 45, 0)),
        ("1718117126", utc(2024, 6, 11, 14, 45, 26)),
        ("1718117126000", utc(2024, 6, 11, 14, 45, 26)),
        ("", None),
        ("11/06/2024 02:45 PM", None),
        ("2024-13-40 99:99:99", None),
        ("99999999999999999999999", None),
    ] {
        assert_eq!(parse_time(given), expected, "{given}");
    }
    assert_eq!(
        parse_time("2024-06-11 14:45:26.473"),
        Some(ms(1_718_117_126_473))
    );
}

#[test]
fn form_decoding() {
    assert_eq!(
        form_pairs(b"a=1&b=x+y%20z&&c&d=%zz%4&e=%C3%A9&=v&f=a=b"),
        [
            ("a".into(), "1".into()),
            ("b".into(), "x y z".into()),
            ("c".into(), String::new()),
            ("d".into(), "%zz%4".into()),
            ("e".into(), "é".into()),
            (String::new(), "v".into()),
            ("f".into(), "a=b".into()),
        ]
        .to_vec() as Vec<(String, String)>
    );
    assert_eq!(form_decode(b"%ff%"), "\u{fffd}%");
    assert!(form_pairs(b"").is_empty());
}

#[test]
fn shown_values_stay_on_one_line() {
    assert_eq!(shown("1000000068001"), "1000000068001");
    assert_eq!(shown(""), "\"\"");
    assert_eq!(shown("a b"), "\"a b\"");
    assert_eq!(shown("a\nb"), "\"a\\nb\"");
    let long = "9".repeat(41);
    assert_eq!(shown(&long), format!("\"{}\"…", "9".repeat(40)));
}

// ---------------------------------------------------------------- never panics

const KEYS: &[&str] = &[
    "server_time",
    "query_params",
    "module",
    "resource_uri",
    "ids",
    "affected_fields",
    "affected_values",
    "record_id",
    "values",
    "operation",
    "channel_id",
    "token",
    "id",
    "stage",
    "pipeline",
    "referral_code",
    "Referral_Code",
    "email",
    "modified_time",
    "event",
    "refsync_token",
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
            "Leads",
            "Deals",
            "Contacts",
            "Accounts",
            "insert",
            "update",
            "delete",
            "create",
            "edit",
            CHANNEL,
            TOKEN,
            "5725767000003000064",
            "2024-06-11T20:15:26+05:30",
            "2024-06-11 14:45:26",
            "Closed Won",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    3 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
                    1 => ".{0,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_body() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        1 => ".{0,8}",
    ];
    prop::collection::btree_map(key, arb_value(), 0..12)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn arb_request(body: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = WebhookRequest> {
    (
        body,
        prop_oneof![
            ".{0,60}",
            Just(URL.to_owned()),
            "/[a-z_%0-9A-F?=&+#]{0,40}",
            Just(with_secret_in_query(URL)),
        ],
        prop::collection::vec(
            (
                prop::sample::select(vec!["Content-Type", "X-Refsync-Token", "content-type"]),
                prop_oneof![
                    Just("application/json".to_owned()),
                    Just("application/x-www-form-urlencoded".to_owned()),
                    Just(WORKFLOW_SECRET.to_owned()),
                    ".{0,30}",
                ],
            ),
            0..3,
        ),
    )
        .prop_map(|(body, url, headers)| {
            let mut request = WebhookRequest::post(url, body);
            for (name, value) in headers {
                request = request.with_header(name, value);
            }
            request
        })
}

fn check(
    request: &WebhookRequest,
    token: &str,
    channel: &str,
    workflow: Option<&str>,
    field: Option<String>,
) {
    let token = Secret::new(token);
    let workflow = workflow.map(Secret::new);
    let opts = VerifyOptions {
        notification_token: &token,
        channel_id: channel,
        workflow_secret: workflow.as_ref(),
    };
    if let Err(e) = verify(&opts, request) {
        assert_eq!(e.kind(), &ErrorKind::Unauthorized);
        assert!(!e.message().contains('\n'));
    }
    match parse(
        &ParseOptions {
            referral_code_field: field,
        },
        request,
    ) {
        Ok(events) => {
            for e in events {
                assert_eq!(e.source, "zoho");
                assert!(e.delivery_id.is_some());
                assert!(!e.object.id.is_empty());
            }
        }
        Err(e) => {
            assert_eq!(e.kind(), &ErrorKind::Validation);
            assert!(!e.message().contains('\n'));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn verify_and_parse_never_panic_on_arbitrary_bytes(
        request in arb_request(prop::collection::vec(any::<u8>(), 0..512)),
        token in prop_oneof![Just(TOKEN.to_owned()), ".{0,8}"],
        channel in prop_oneof![Just(CHANNEL.to_owned()), ".{0,8}"],
        workflow in prop::option::of(prop_oneof![Just(WORKFLOW_SECRET.to_owned()), ".{0,8}"]),
        field in prop::option::of(prop_oneof![Just("Referral_Code".to_owned()), ".{0,6}"]),
    ) {
        check(&request, &token, &channel, workflow.as_deref(), field);
    }

    #[test]
    fn verify_and_parse_never_panic_on_arbitrary_json_objects(
        request in arb_request(arb_body().prop_map(|b| serde_json::to_vec(&b).unwrap())),
        workflow in prop::option::of(Just(WORKFLOW_SECRET)),
        field in prop::option::of(prop_oneof![Just("Referral_Code".to_owned()), ".{0,6}"]),
    ) {
        check(&request, TOKEN, CHANNEL, workflow, field);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_forms(
        pairs in prop::collection::vec(
            (prop_oneof![prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned), "[a-z%+=&]{0,6}"],
             prop_oneof![".{0,12}", "[%0-9A-Fa-f+]{0,8}"]),
            0..10,
        ),
    ) {
        let body = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let request = form(&with_secret_in_query(URL), &body);
        check(&request, TOKEN, CHANNEL, Some(WORKFLOW_SECRET), Some("Referral_Code".into()));
        let _ = form_pairs(body.as_bytes());
    }

    #[test]
    fn a_notification_with_the_right_token_and_channel_always_verifies(
        body in arb_body(),
    ) {
        let mut body = body;
        body["token"] = json!(TOKEN);
        body["channel_id"] = json!(CHANNEL);
        let t = token();
        let request = post_json(body);
        prop_assert_eq!(verified(verify(&vopts(&t, None), &request)), "zoho-channel-token");
        prop_assert!(parse(&popts(), &request).is_ok());
    }
}
