#![allow(clippy::needless_pass_by_value)] // json! takes its values by reference

use chrono::TimeZone;
use proptest::prelude::*;
use refsync_core::ErrorKind;
use refsync_http::signature::basic_auth_header;
use serde_json::json;

use super::*;

const USER: &str = "refsync-hooks";
const PASSWORD: &str = "a-long-random-webhook-password-1234";
const KEY: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f001234567";

const DEAL_CREATE: &str = include_str!("../../tests/fixtures/v2_deal_create.json");
const DEAL_CHANGE: &str = include_str!("../../tests/fixtures/v2_deal_change_custom_field.json");
const DEAL_DELETE: &str = include_str!("../../tests/fixtures/v2_deal_delete.json");
const LEAD_CREATE: &str = include_str!("../../tests/fixtures/v2_lead_create.json");
const LEAD_CHANGE: &str = include_str!("../../tests/fixtures/v2_lead_change.json");
const PERSON_CREATE: &str = include_str!("../../tests/fixtures/v2_person_create.json");

fn config(company_id: Option<&str>) -> Config {
    let mut settings = json!({
        "auth": { "type": "api_token", "token": "api-token-for-tests" },
        "webhook_user": USER,
        "webhook_password": PASSWORD,
    });
    if let Some(c) = company_id {
        settings["company_id"] = json!(c);
    }
    serde_json::from_value(settings).expect("test config")
}

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000, 0).unwrap()
}

fn request(body: impl Into<Vec<u8>>) -> WebhookRequest {
    WebhookRequest::post("https://refsync.example/hooks/pd", body)
        .with_header("Content-Type", "application/json")
}

fn signed(body: impl Into<Vec<u8>>) -> WebhookRequest {
    request(body).with_header("Authorization", basic_auth_header(USER, PASSWORD))
}

fn events_of(body: &Value, key: Option<&str>) -> Vec<CrmEvent> {
    parse(&config(None), key, &request(body.to_string())).expect("parse")
}

fn events_of_text(text: &str) -> Vec<CrmEvent> {
    parse(&config(None), Some(KEY), &request(text)).expect("parse")
}

fn changes(events: &[CrmEvent]) -> Vec<Change> {
    events.iter().map(|e| e.change.clone()).collect()
}

fn unauthorized_message(result: Result<Verification>) -> String {
    let e = result.expect_err("verify must refuse");
    assert_eq!(e.kind(), &ErrorKind::Unauthorized, "{e}");
    assert!(!e.message().contains('\n'), "{e:?}");
    e.message().to_owned()
}

fn stage(pipeline: &str, from: Option<&str>, to: &str) -> Change {
    Change::StageChanged {
        pipeline: Some(pipeline.into()),
        from: from.map(Into::into),
        to: to.into(),
    }
}

fn status_change(from: Option<&str>, to: &str) -> Change {
    Change::StatusChanged {
        from: from.map(Into::into),
        to: to.into(),
    }
}

/// A v2 `change.deal` delivery with the given `data` and `previous`.
fn v2_deal_change(data: Value, previous: Value) -> Value {
    json!({
        "data": data,
        "previous": previous,
        "meta": {
            "action": "change", "entity": "deal", "entity_id": "8", "company_id": "8087566",
            "id": "0c3a6d4e-2f61-4c1b-9d52-7e4f1a2b3c4d", "timestamp": "2022-11-25T10:00:00.000Z",
            "version": "2.0", "webhook_id": "4710827", "attempt": 1
        }
    })
}

/// A v1 `updated.deal` delivery with the given full `current` and `previous`.
fn v1_deal_updated(current: Value, previous: Value, retry: u32) -> Value {
    json!({
        "v": 1,
        "matches_filters": { "current": [] },
        "meta": {
            "v": 1, "action": "updated", "object": "deal", "id": 8, "company_id": 8_087_566,
            "user_id": 12_415_231, "host": "acme.pipedrive.com", "timestamp": 1_669_370_400,
            "timestamp_micro": 1_669_370_400_123_456_u64, "webhook_id": "4710827",
            "change_source": "app", "is_bulk_update": false
        },
        "current": current,
        "previous": previous,
        "retry": retry,
        "event": "updated.deal"
    })
}

fn v1_deal(stage_id: u64, pipeline_id: u64, status: &str) -> Value {
    json!({
        "id": 8, "title": "Sample Org deal", "stage_id": stage_id, "pipeline_id": pipeline_id,
        "status": status, "person_id": { "value": 8, "name": "Sample", "email": [] },
        "org_id": { "value": 1, "name": "Sample Org" }, KEY: "ADA-42",
        "update_time": "2022-11-25 10:00:00"
    })
}

// ---------------------------------------------------------------- verify

#[test]
fn basic_auth_is_accepted() {
    let v = verify(&config(None), &signed(DEAL_CREATE), now()).expect("verified");
    assert_eq!(
        v,
        Verification::Verified {
            scheme: "basic".into()
        }
    );
}

#[test]
fn lower_case_scheme_is_accepted() {
    let header = basic_auth_header(USER, PASSWORD).replacen("Basic", "basic", 1);
    let req = request(DEAL_CREATE).with_header("authorization", header);
    assert!(verify(&config(None), &req, now()).is_ok());
}

#[test]
fn missing_credentials_are_refused() {
    let m = unauthorized_message(verify(&config(None), &request(DEAL_CREATE), now()));
    assert_eq!(m, "missing HTTP Basic credentials (Authorization header)");
    let blank = request(DEAL_CREATE).with_header("Authorization", "  ");
    let m = unauthorized_message(verify(&config(None), &blank, now()));
    assert!(m.starts_with("missing"), "{m}");
}

#[test]
fn wrong_user_or_password_is_refused() {
    for (user, password) in [
        ("someone-else", PASSWORD),
        (USER, "a-long-random-webhook-password-1235"),
        (USER, ""),
        ("", ""),
    ] {
        let req =
            request(DEAL_CREATE).with_header("Authorization", basic_auth_header(user, password));
        let m = unauthorized_message(verify(&config(None), &req, now()));
        assert_eq!(
            m, "HTTP Basic credentials do not match",
            "{user}:{password}"
        );
    }
    let bearer = request(DEAL_CREATE).with_header("Authorization", format!("Bearer {PASSWORD}"));
    unauthorized_message(verify(&config(None), &bearer, now()));
}

#[test]
fn refusals_name_no_secret_nor_the_header() {
    let wrong_header = basic_auth_header(USER, "a-long-random-webhook-password-XXXX");
    let cases = [
        request(DEAL_CREATE),
        request(DEAL_CREATE).with_header("Authorization", wrong_header.clone()),
        request(DEAL_CREATE).with_header("Authorization", format!("Basic {PASSWORD}")),
        // Right credentials, wrong company.
        signed(DEAL_CREATE),
    ];
    for req in cases {
        let e = verify(&config(Some("1")), &req, now()).unwrap_err();
        let text = format!("{e} / {e:?}");
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(
            !text.contains(&basic_auth_header(USER, PASSWORD)[6..]),
            "{text}"
        );
        assert!(!text.contains(&wrong_header[6..]), "{text}");
        assert!(!text.contains("XXXX"), "{text}");
    }
}

#[test]
fn company_mismatch_is_refused() {
    let m = unauthorized_message(verify(&config(Some("456")), &signed(DEAL_CREATE), now()));
    assert_eq!(
        m,
        "delivery is for Pipedrive company 8087566, this instance is connected to company 456"
    );
    // v1 sends a number.
    let v1 = v1_deal_updated(v1_deal(3, 1, "open"), v1_deal(2, 1, "open"), 0);
    let m = unauthorized_message(verify(&config(Some("456")), &signed(v1.to_string()), now()));
    assert!(m.contains("company 8087566"), "{m}");
    // A hostile company id cannot break the one-line message.
    let body = json!({"meta": {"company_id": "1\n2\r3", "entity": "deal"}}).to_string();
    let m = unauthorized_message(verify(&config(Some("456")), &signed(body), now()));
    assert!(m.contains("company 123,"), "{m}");
}

#[test]
fn company_match_or_absence_is_accepted() {
    let cfg = config(Some("8087566"));
    assert!(verify(&cfg, &signed(DEAL_CREATE), now()).is_ok());
    let v1 = v1_deal_updated(v1_deal(3, 1, "open"), v1_deal(2, 1, "open"), 0);
    assert!(verify(&cfg, &signed(v1.to_string()), now()).is_ok());
    for body in [
        json!({"meta": {"entity": "deal"}}).to_string(),
        json!({"meta": {"company_id": null}}).to_string(),
        "not json at all".to_owned(),
        String::new(),
    ] {
        assert!(verify(&cfg, &signed(body.clone()), now()).is_ok(), "{body}");
    }
    // Credentials are still checked first.
    assert!(verify(&cfg, &request(DEAL_CREATE), now()).is_err());
}

// ---------------------------------------------------------------- parse: official fixtures

#[test]
fn official_deal_create() {
    let events = events_of_text(DEAL_CREATE);
    assert_eq!(
        changes(&events),
        vec![Change::Created, stage("1", None, "2")]
    );
    let e = &events[0];
    assert_eq!(e.source, "pipedrive");
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("71825ee0-0054-4267-b5fd-d28b7a414212")
    );
    assert_eq!(
        e.occurred_at,
        Some(Utc.timestamp_millis_opt(1_669_295_936_089).unwrap())
    );
    assert_eq!(e.account.as_deref(), Some("8087566"));
    assert_eq!(e.object.kind, ObjectKind::Deal);
    assert_eq!(e.object.id, "8");
    assert_eq!(e.referral_code, None);
    assert_eq!(e.email, None);
}

#[test]
fn related_person_and_organization() {
    let deal = &events_of_text(DEAL_CREATE)[0];
    assert_eq!(
        deal.related,
        vec![
            EventObject {
                kind: ObjectKind::Person,
                id: "8".into()
            },
            EventObject {
                kind: ObjectKind::Other("organization".into()),
                id: "1".into()
            },
        ]
    );
    let lead = &events_of_text(LEAD_CREATE)[0];
    assert_eq!(
        lead.related,
        vec![
            EventObject {
                kind: ObjectKind::Person,
                id: "11".into()
            },
            EventObject {
                kind: ObjectKind::Other("organization".into()),
                id: "2".into()
            },
        ]
    );
    // v1's {"value": ..} form, and null references omitted.
    let mut previous = v1_deal(2, 1, "open");
    previous["org_id"] = Value::Null;
    let v1 = events_of(
        &v1_deal_updated(v1_deal(3, 1, "open"), previous, 0),
        Some(KEY),
    );
    assert_eq!(v1[0].related, deal.related);
    let mut deleted = v1_deal_updated(Value::Null, v1_deal(2, 1, "open"), 0);
    deleted["meta"]["action"] = json!("deleted");
    deleted["previous"]["org_id"] = Value::Null;
    let v1 = events_of(&deleted, Some(KEY));
    assert_eq!(v1[0].related, deal.related[..1]);
    // Persons carry no related objects.
    assert!(events_of_text(PERSON_CREATE)[0].related.is_empty());
}

#[test]
fn official_deal_custom_field_change_is_an_update() {
    let events = events_of_text(DEAL_CHANGE);
    assert_eq!(
        changes(&events),
        vec![Change::Updated {
            fields: vec!["custom_fields.3d0fa3429dfa2d3dec265b4fc5dc8258ab66cdf3".into()]
        }]
    );
}

#[test]
fn official_deletes_and_leads() {
    let deal = events_of_text(DEAL_DELETE);
    // A deleted deal also reports its status turning `deleted`, for the optional unqualify.
    assert_eq!(
        changes(&deal),
        vec![
            Change::Deleted,
            Change::StatusChanged {
                from: Some("open".into()),
                to: "deleted".into()
            }
        ]
    );
    assert_eq!(deal[0].object.id, "8");
    assert_eq!(deal[0].related.len(), 2, "taken from previous on delete");

    let lead = events_of_text(LEAD_CREATE);
    assert_eq!(changes(&lead), vec![Change::Created]);
    assert_eq!(lead[0].object.kind, ObjectKind::Lead);
    assert_eq!(lead[0].object.id, "b1810230-6c0d-11ed-9826-a53d0eb706a5");

    let change = events_of_text(LEAD_CHANGE);
    assert_eq!(
        changes(&change),
        vec![Change::Updated {
            fields: vec![
                "is_archived".into(),
                "next_activity_id".into(),
                "update_time".into(),
                "value".into()
            ]
        }]
    );
}

#[test]
fn person_email_primary_then_first() {
    let person = events_of_text(PERSON_CREATE);
    assert_eq!(person[0].object.kind, ObjectKind::Person);
    assert_eq!(person[0].email, None, "the official sample has no email");

    let mut body: Value = serde_json::from_str(PERSON_CREATE).unwrap();
    body["data"]["emails"] = json!([
        {"value": "work@example.com", "primary": false, "label": "work"},
        {"value": "ada@example.com", "primary": true, "label": "home"}
    ]);
    assert_eq!(
        events_of(&body, None)[0].email.as_deref(),
        Some("ada@example.com")
    );
    body["data"]["emails"] = json!([
        {"value": "", "primary": true},
        {"value": "first@example.com", "primary": false}
    ]);
    assert_eq!(
        events_of(&body, None)[0].email.as_deref(),
        Some("first@example.com")
    );
    // v1: `email` as an array or a string.
    let v1 = |email: Value| {
        json!({"v": 1, "event": "added.person", "retry": 0,
               "meta": {"v": 1, "action": "added", "object": "person", "id": 8, "company_id": 1,
                        "timestamp": 1_669_295_935},
               "current": {"id": 8, "name": "Ada", "email": email}, "previous": null})
    };
    let events = events_of(
        &v1(json!([{"value": "ada@example.com", "primary": true}])),
        None,
    );
    assert_eq!(events[0].email.as_deref(), Some("ada@example.com"));
    let events = events_of(&v1(json!("ada@example.com")), None);
    assert_eq!(events[0].email.as_deref(), Some("ada@example.com"));
    // Deals carry no email even when a field is named so.
    let mut deal: Value = serde_json::from_str(DEAL_CREATE).unwrap();
    deal["data"]["email"] = json!("x@example.com");
    assert_eq!(events_of(&deal, None)[0].email, None);
}

// ---------------------------------------------------------------- parse: rules

#[test]
fn ids_as_numbers_or_strings_give_the_same_events() {
    let as_strings: Value = serde_json::from_str(DEAL_CREATE).unwrap();
    let mut as_numbers = as_strings.clone();
    as_numbers["meta"]["entity_id"] = json!(8);
    as_numbers["meta"]["company_id"] = json!(8_087_566);
    as_numbers["meta"]["webhook_id"] = json!(4_710_827);
    let mut as_text_data = as_strings.clone();
    for k in ["person_id", "org_id", "stage_id", "pipeline_id"] {
        let n = as_text_data["data"][k].as_u64().unwrap();
        as_text_data["data"][k] = json!(n.to_string());
    }
    let mut as_floats = as_strings.clone();
    as_floats["data"]["stage_id"] = json!(2.0);
    as_floats["meta"]["entity_id"] = json!(8.0);
    let base = events_of(&as_strings, Some(KEY));
    assert_eq!(base.len(), 2);
    assert_eq!(events_of(&as_numbers, Some(KEY)), base);
    assert_eq!(events_of(&as_text_data, Some(KEY)), base);
    assert_eq!(events_of(&as_floats, Some(KEY)), base);
}

#[test]
fn timestamps_as_iso_seconds_and_milliseconds() {
    let mut body: Value = serde_json::from_str(DEAL_CREATE).unwrap();
    let at = |body: &Value| events_of(body, None)[0].occurred_at;
    body["meta"]["timestamp"] = json!("2022-11-24T13:18:56Z");
    let want = Some(Utc.timestamp_opt(1_669_295_936, 0).unwrap());
    assert_eq!(at(&body), want);
    body["meta"]["timestamp"] = json!("2022-11-24T15:18:56+02:00");
    assert_eq!(at(&body), want);
    body["meta"]["timestamp"] = json!(1_669_295_936);
    assert_eq!(at(&body), want);
    body["meta"]["timestamp"] = json!(1_669_295_936_000_u64);
    assert_eq!(at(&body), want);
    body["meta"]["timestamp"] = json!(1_669_295_936_000_000_u64);
    assert_eq!(at(&body), want, "microseconds");
    body["meta"]["timestamp"] = json!("1669295936");
    assert_eq!(at(&body), want);
    body["meta"]["timestamp"] = json!(1_669_295_936_089_u64);
    assert_eq!(
        at(&body),
        Some(Utc.timestamp_millis_opt(1_669_295_936_089).unwrap())
    );
    for garbage in [
        json!("soon"),
        json!(null),
        json!(true),
        json!(-1e300),
        json!(i64::MIN),
    ] {
        body["meta"]["timestamp"] = garbage.clone();
        assert_eq!(at(&body), None, "{garbage}");
    }
}

#[test]
fn v2_stage_move_won_and_pipeline_move() {
    let mut data: Value = serde_json::from_str::<Value>(DEAL_CREATE).unwrap()["data"].clone();
    data["stage_id"] = json!(3);
    let events = events_of(
        &v2_deal_change(
            data.clone(),
            json!({"stage_id": 2, "stage_change_time": null, "update_time": "x"}),
        ),
        None,
    );
    assert_eq!(changes(&events), vec![stage("1", Some("2"), "3")]);

    // Stage move and win in one change: stage first.
    data["status"] = json!("won");
    let events = events_of(
        &v2_deal_change(data.clone(), json!({"stage_id": 2, "status": "open"})),
        None,
    );
    assert_eq!(
        changes(&events),
        vec![
            stage("1", Some("2"), "3"),
            status_change(Some("open"), "won")
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.delivery_id == events[0].delivery_id)
    );

    // Only won.
    let events = events_of(
        &v2_deal_change(data.clone(), json!({"status": "open", "won_time": null})),
        None,
    );
    assert_eq!(changes(&events), vec![status_change(Some("open"), "won")]);

    // Pipeline move: the pair comes from data.
    data["pipeline_id"] = json!(2);
    data["stage_id"] = json!(7);
    data["status"] = json!("open");
    let events = events_of(
        &v2_deal_change(data.clone(), json!({"pipeline_id": 1, "stage_id": 3})),
        None,
    );
    assert_eq!(changes(&events), vec![stage("2", Some("3"), "7")]);

    // A status key in previous that did not change, or a title change: an update.
    let events = events_of(
        &v2_deal_change(data.clone(), json!({"status": "open", "title": "Old"})),
        None,
    );
    assert_eq!(
        changes(&events),
        vec![Change::Updated {
            fields: vec!["status".into(), "title".into()]
        }]
    );
}

#[test]
fn v1_and_v2_of_the_same_stage_move_agree() {
    let mut data: Value = serde_json::from_str::<Value>(DEAL_CREATE).unwrap()["data"].clone();
    data["stage_id"] = json!(3);
    data["custom_fields"] = json!({ KEY: {"type": "varchar", "value": "ADA-42"} });
    let v2 = events_of(
        &v2_deal_change(data, json!({"stage_id": 2, "update_time": null})),
        Some(KEY),
    );
    let v1 = events_of(
        &v1_deal_updated(v1_deal(3, 1, "open"), v1_deal(2, 1, "open"), 0),
        Some(KEY),
    );
    assert_eq!(changes(&v2), vec![stage("1", Some("2"), "3")]);
    assert_eq!(changes(&v1), changes(&v2));
    for (a, b) in v1.iter().zip(&v2) {
        assert_eq!(a.object, b.object);
        assert_eq!(a.referral_code.as_deref(), Some("ADA-42"));
        assert_eq!(a.referral_code, b.referral_code);
        assert_eq!(a.account, b.account);
        assert_eq!(a.related, b.related);
    }
    // Won in v1, and a v1 pipeline move.
    let won = events_of(
        &v1_deal_updated(v1_deal(2, 1, "won"), v1_deal(2, 1, "open"), 0),
        None,
    );
    assert_eq!(changes(&won), vec![status_change(Some("open"), "won")]);
    let moved = events_of(
        &v1_deal_updated(v1_deal(7, 2, "open"), v1_deal(7, 1, "open"), 0),
        None,
    );
    assert_eq!(changes(&moved), vec![stage("2", Some("7"), "7")]);
}

#[test]
fn v1_fields_delivery_id_and_time() {
    let mut current = v1_deal(2, 1, "open");
    current["title"] = json!("New title");
    let body = v1_deal_updated(current.clone(), v1_deal(2, 1, "open"), 0);
    let events = events_of(&body, None);
    assert_eq!(
        changes(&events),
        vec![Change::Updated {
            fields: vec!["title".into()]
        }]
    );
    let e = &events[0];
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("v1:4710827:deal:8:updated:1669370400123456")
    );
    assert_eq!(
        e.occurred_at,
        Some(DateTime::from_timestamp_micros(1_669_370_400_123_456).unwrap())
    );
    assert_eq!(e.account.as_deref(), Some("8087566"));
    // A retry is the same delivery; another change of the same deal is not.
    let retry = events_of(
        &v1_deal_updated(current.clone(), v1_deal(2, 1, "open"), 2),
        None,
    );
    assert_eq!(retry, events);
    let mut later = v1_deal_updated(current, v1_deal(2, 1, "open"), 0);
    later["meta"]["timestamp_micro"] = json!(1_669_370_401_000_000_u64);
    assert_ne!(events_of(&later, None)[0].delivery_id, e.delivery_id);
    // Without timestamp_micro, the seconds.
    later["meta"]
        .as_object_mut()
        .unwrap()
        .remove("timestamp_micro");
    let e = &events_of(&later, None)[0];
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("v1:4710827:deal:8:updated:1669370400")
    );
    assert_eq!(
        e.occurred_at,
        Some(Utc.timestamp_opt(1_669_370_400, 0).unwrap())
    );
}

#[test]
fn created_deals_report_stage_and_closed_status() {
    let mut body: Value = serde_json::from_str(DEAL_CREATE).unwrap();
    body["data"]["status"] = json!("won");
    assert_eq!(
        changes(&events_of(&body, None)),
        vec![
            Change::Created,
            stage("1", None, "2"),
            status_change(None, "won")
        ]
    );
    body["data"]["stage_id"] = Value::Null;
    assert_eq!(
        changes(&events_of(&body, None)),
        vec![Change::Created, status_change(None, "won")]
    );
    // v1 added.
    let v1 = json!({"v": 1, "event": "added.deal", "retry": 0,
        "meta": {"v": 1, "action": "added", "object": "deal", "id": 9, "company_id": 1,
                 "timestamp": 1_669_295_935, "webhook_id": 4_710_827},
        "current": v1_deal(1, 1, "open"), "previous": null});
    let events = events_of(&v1, Some(KEY));
    assert_eq!(
        changes(&events),
        vec![Change::Created, stage("1", None, "1")]
    );
    assert_eq!(events[0].object.id, "9", "meta.id names the object");
    assert_eq!(events[0].referral_code.as_deref(), Some("ADA-42"));
}

#[test]
fn stage_settings_change_is_not_a_deal_stage_change() {
    let body = json!({
        "data": {"id": 3, "name": "Proposal", "pipeline_id": 1, "order_nr": 3, "deal_probability": 80},
        "previous": {"name": "Offer", "stage_id": 2, "pipeline_id": 2},
        "meta": {"action": "change", "entity": "stage", "entity_id": "3", "company_id": "8087566",
                 "id": "a0b1c2d3-0000-4000-8000-000000000001", "version": "2.0",
                 "timestamp": "2022-11-24T15:40:00.000Z"}
    });
    let events = events_of(&body, Some(KEY));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object.kind, ObjectKind::Other("stage".into()));
    assert_eq!(events[0].object.kind.as_string(), "other:stage");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.change, Change::StageChanged { .. })),
        "{events:?}"
    );
    assert!(events[0].related.is_empty());
    // Even a stage payload that carried deal-like keys stays a stage update.
    let mut odd = body;
    odd["data"]["stage_id"] = json!(3);
    odd["data"]["status"] = json!("won");
    odd["previous"]["status"] = json!("open");
    let events = events_of(&odd, Some(KEY));
    assert_eq!(
        changes(&events),
        vec![Change::Updated {
            fields: vec![
                "name".into(),
                "pipeline_id".into(),
                "stage_id".into(),
                "status".into()
            ]
        }]
    );
    // Same for v1.
    let v1 = json!({"v": 1, "event": "updated.stage", "retry": 0,
        "meta": {"v": 1, "action": "updated", "object": "stage", "id": 3, "company_id": 1,
                 "timestamp": 1_669_295_935},
        "current": {"id": 3, "name": "Proposal", "pipeline_id": 1, "stage_id": 3},
        "previous": {"id": 3, "name": "Offer", "pipeline_id": 2, "stage_id": 2}});
    let events = events_of(&v1, Some(KEY));
    assert_eq!(
        changes(&events),
        vec![Change::Updated {
            fields: vec!["name".into(), "pipeline_id".into(), "stage_id".into()]
        }]
    );
}

#[test]
fn referral_code_in_every_form() {
    let code = |body: &Value| events_of(body, Some(KEY))[0].referral_code.clone();
    let mut body: Value = serde_json::from_str(DEAL_CREATE).unwrap();
    assert_eq!(code(&body), None);
    // v2 object form.
    body["data"]["custom_fields"] = json!({ KEY: {"type": "varchar", "value": " ADA-42 "} });
    assert_eq!(code(&body).as_deref(), Some("ADA-42"));
    // v2 plain value (string or number).
    body["data"]["custom_fields"] = json!({ KEY: "ADA-42" });
    assert_eq!(code(&body).as_deref(), Some("ADA-42"));
    body["data"]["custom_fields"] = json!({ KEY: 4242 });
    assert_eq!(code(&body).as_deref(), Some("4242"));
    // Null, empty and odd values are no code.
    for none in [
        json!(null),
        json!(""),
        json!({"type": "varchar", "value": null}),
        json!({"type": "varchar", "value": ""}),
        json!([1]),
        json!(true),
    ] {
        body["data"]["custom_fields"] = json!({ KEY: none.clone() });
        assert_eq!(code(&body), None, "{none}");
    }
    // Without a key, nothing is read.
    body["data"]["custom_fields"] = json!({ KEY: "ADA-42" });
    assert_eq!(events_of(&body, None)[0].referral_code, None);
    // v2 delete reads previous.
    let mut delete: Value = serde_json::from_str(DEAL_DELETE).unwrap();
    delete["previous"]["custom_fields"][KEY] = json!({"type": "varchar", "value": "ADA-42"});
    assert_eq!(code(&delete).as_deref(), Some("ADA-42"));
    // v1 root key, and previous on delete.
    let updated = v1_deal_updated(v1_deal(3, 1, "open"), v1_deal(2, 1, "open"), 0);
    assert_eq!(code(&updated).as_deref(), Some("ADA-42"));
    let mut deleted = v1_deal_updated(Value::Null, v1_deal(3, 1, "open"), 0);
    deleted["meta"]["action"] = json!("deleted");
    deleted["event"] = json!("deleted.deal");
    let events = events_of(&deleted, Some(KEY));
    assert_eq!(changes(&events)[0], Change::Deleted);
    assert_eq!(events[0].referral_code.as_deref(), Some("ADA-42"));
    // A lead carries it too (leads share deal fields).
    let mut lead: Value = serde_json::from_str(LEAD_CHANGE).unwrap();
    lead["data"]["custom_fields"] = json!({ KEY: {"type": "varchar", "value": "ADA-42"} });
    assert_eq!(code(&lead).as_deref(), Some("ADA-42"));
}

#[test]
fn lead_delete_is_only_deleted() {
    let mut previous: Value = serde_json::from_str::<Value>(LEAD_CREATE).unwrap()["data"].clone();
    previous["custom_fields"] = json!({ KEY: {"type": "varchar", "value": "ADA-42"} });
    let body = json!({
        "data": null,
        "previous": previous,
        "meta": {"action": "delete", "entity": "lead",
                 "entity_id": "b1810230-6c0d-11ed-9826-a53d0eb706a5", "company_id": "8087566",
                 "id": "f0e1d2c3-0000-4000-8000-000000000002", "version": "2.0",
                 "timestamp": "2022-11-24T16:00:00.000Z"}
    });
    let events = events_of(&body, Some(KEY));
    assert_eq!(changes(&events), vec![Change::Deleted]);
    assert_eq!(events[0].object.kind, ObjectKind::Lead);
    assert_eq!(events[0].referral_code.as_deref(), Some("ADA-42"));
    assert_eq!(events[0].related.len(), 2);
}

#[test]
fn user_quirks_integer_timestamp_and_change_for_delete() {
    let body = json!({
        "data": {"id": 12_415_231, "name": "Ada", "active_flag": false},
        "previous": {"active_flag": true},
        "meta": {"action": "change", "entity": "user", "entity_id": "12415231",
                 "id": "12415231", "company_id": "8087566", "version": "2.0",
                 "timestamp": 1_669_304_802, "webhook_id": "4710827"}
    });
    let events = events_of(&body, Some(KEY));
    assert_eq!(
        changes(&events),
        vec![Change::Updated {
            fields: vec!["active_flag".into()]
        }]
    );
    let e = &events[0];
    assert_eq!(e.object.kind, ObjectKind::Other("user".into()));
    assert_eq!(
        e.occurred_at,
        Some(Utc.timestamp_opt(1_669_304_802, 0).unwrap())
    );
    // meta.id is the user's id here: a delivery id that tells two changes apart.
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("v2:4710827:user:12415231:change:1669304802")
    );
    assert_eq!(e.referral_code, None);
}

#[test]
fn unknown_actions_and_missing_ids_yield_nothing() {
    let mut body: Value = serde_json::from_str(DEAL_CREATE).unwrap();
    body["meta"]["action"] = json!("archive");
    assert!(events_of(&body, None).is_empty());
    let mut body: Value = serde_json::from_str(DEAL_DELETE).unwrap();
    body["meta"]["entity_id"] = Value::Null;
    body["previous"]["id"] = Value::Null;
    assert!(events_of(&body, None).is_empty());
    // Without entity_id, data.id names the object.
    let mut body: Value = serde_json::from_str(DEAL_CREATE).unwrap();
    body["meta"].as_object_mut().unwrap().remove("entity_id");
    assert_eq!(events_of(&body, None)[0].object.id, "8");
}

#[test]
fn malformed_bodies_are_validation_errors() {
    for body in [
        &b"not json"[..],
        b"",
        b"[1,2]",
        b"42",
        b"{}",
        br#"{"meta": null}"#,
        br#"{"meta": {"action": "change"}}"#,
    ] {
        let e = parse(&config(None), Some(KEY), &request(body)).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Validation, "{body:?}: {e}");
        assert!(!e.message().contains('\n'));
    }
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
            Just("2.0"),
            Just("1"),
            Just("deal"),
            Just("lead"),
            Just("person"),
            Just("stage"),
            Just("user"),
            Just("create"),
            Just("change"),
            Just("delete"),
            Just("added"),
            Just("updated"),
            Just("merged"),
            Just("deleted"),
            Just("won"),
            Just(""),
            Just("2022-11-24T15:11:55.724Z"),
            Just("8087566"),
            Just(KEY),
        ]
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("meta"),
        Just("data"),
        Just("previous"),
        Just("current"),
        Just("v"),
        Just("version"),
        Just("entity"),
        Just("object"),
        Just("action"),
        Just("id"),
        Just("entity_id"),
        Just("company_id"),
        Just("timestamp"),
        Just("timestamp_micro"),
        Just("webhook_id"),
        Just("stage_id"),
        Just("pipeline_id"),
        Just("status"),
        Just("custom_fields"),
        Just("person_id"),
        Just("org_id"),
        Just("organization_id"),
        Just("emails"),
        Just("email"),
        Just("value"),
        Just("primary"),
        Just("event"),
        Just(KEY),
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let cfg = config(Some("8087566"));
        let _ = parse(&cfg, Some(KEY), &request(body.clone()));
        let _ = verify(&cfg, &signed(body.clone()), now());
        let _ = verify(&cfg, &request(body), now());
    }

    #[test]
    fn never_panics_on_arbitrary_json(value in arb_json(), meta in arb_json(), version in 0..3u8) {
        let cfg = config(Some("8087566"));
        let mut doc = value.clone();
        // Often nest the fuzzed meta where the parser looks for it.
        if let Value::Object(o) = &mut doc {
            let mut meta = meta;
            if let Value::Object(m) = &mut meta {
                match version {
                    0 => { m.insert("version".into(), json!("2.0")); }
                    1 => { m.insert("v".into(), json!(1)); }
                    _ => {}
                }
            }
            o.insert("meta".into(), meta);
        }
        for body in [value.to_string(), doc.to_string()] {
            if let Ok(events) = parse(&cfg, Some(KEY), &request(body.clone())) {
                for e in &events {
                    prop_assert!(!e.object.id.is_empty());
                    prop_assert_eq!(&e.source, "pipedrive");
                }
            }
            let _ = verify(&cfg, &signed(body), now());
        }
    }

    #[test]
    fn never_panics_on_fuzzed_official_fixtures(
        which in 0..6usize,
        field in prop_oneof![
            Just("stage_id"), Just("pipeline_id"), Just("status"), Just("custom_fields"),
            Just("person_id"), Just("org_id"), Just("emails"), Just("id")
        ],
        replacement in arb_json(),
        meta_field in prop_oneof![
            Just("action"), Just("entity"), Just("entity_id"), Just("id"), Just("timestamp"),
            Just("company_id"), Just("version")
        ],
        meta_replacement in arb_json(),
    ) {
        let text = [DEAL_CREATE, DEAL_CHANGE, DEAL_DELETE, LEAD_CREATE, LEAD_CHANGE, PERSON_CREATE][which];
        let mut doc: Value = serde_json::from_str(text).unwrap();
        for part in ["data", "previous"] {
            if let Some(o) = doc.get_mut(part).and_then(Value::as_object_mut) {
                o.insert(field.to_owned(), replacement.clone());
            }
        }
        if let Some(m) = doc.get_mut("meta").and_then(Value::as_object_mut) {
            m.insert(meta_field.to_owned(), meta_replacement);
        }
        let _ = parse(&config(None), Some(KEY), &request(doc.to_string()));
        let _ = verify(&config(Some("1")), &signed(doc.to_string()), now());
    }
}
