//! Tests of the Zoho CRM simulator over real HTTP (reqwest) on loopback, with every API
//! response checked against Zoho's v8 OpenAPI descriptions copied unchanged to tests/data/zoho
//! (see tests/data/SOURCE.md), and every request of a scripted, connector-like session checked
//! too.
//!
//! Documented exceptions to the spec check (each narrow, see [`normalize`] and
//! [`response_errors`]):
//! - Statuses the descriptions do not declare for an operation — record operations declare
//!   only 200 while Zoho answers 201 (insert), 207 (partial bulk success), 204 (nothing found)
//!   and 400 (errors); a POST to `/actions/watch` declares 201/202 while Zoho documents 400 for
//!   invalid input — are checked against the schemas the operation declares for its other
//!   statuses (200, 201, 202, 400); so is `NOT_SUBSCRIBED`, which the notifications
//!   description only places under 202. `204` answers must have no body.
//! - `401 INVALID_TOKEN` and `429` answers are described by no operation (Zoho documents them in
//!   prose); their bodies are checked against common.json's generic `API_Exception` (`code`,
//!   `details`, `message`, `status` required).
//! - Values where a description declares an object or a string and Zoho sends something else
//!   are replaced before validation, only at these places: upsert results' `duplicate_field:
//!   null` (the description types it as a non-nullable string; Zoho's upsert sample sends
//!   `null` on insert) is dropped; conversion details `Accounts: null` / `Deals: null`
//!   (accounts are not simulated; no deal asked for) become `{}`; `channel_id` of watch items,
//!   typed `object` by the description (documented as a long, sent as a string by Zoho's own
//!   sample), becomes `{}`; fields metadata keys the description types as objects but Zoho
//!   answers with `null` ([`NULL_FIELD_KEYS`]) get an empty instance.
//! - The record operations' response schemas accept any object (`oneOf` with a `required`-less
//!   `API_Exception`), so each record, result item and error of a records answer is also
//!   checked on its own against record.json's `Record`, `Success_Response` / `API_Exception`
//!   (its `code` and `message` enums) through a small description that references them
//!   ([`item_spec`]).
//! - Answers with several results of which some failed (`207`) are checked item by item: each
//!   item, alone in the list, must fit a shape the operation declares.
//! - `notification_condition` criteria: the description requires `comparator`, `field`,
//!   `value`, `group_operator` and `group` on every node, Zoho's own sample request sends
//!   leaves `{field}` and groups `{group_operator, group}`; the missing keys are filled with
//!   `null` / `[]` before validation ([`fill_criteria`]).
//! - Unknown routes and methods (no operation) answer Zoho's generic error object.
//! - The one deliberate request without a mandatory parameter (pipelines without `layout_id`)
//!   is left out of the request check of the scripted session.
//! - The OAuth token endpoint has no description in the copied set and is not validated.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use refsync_testkit::openapi::OpenApi;
use refsync_testkit::sim::{Fault, FaultRule, RecordedRequest, SimResponse, Simulator};
use refsync_testkit::zoho::{ZohoSim, ZohoSimOptions};
use serde_json::{Map, Value, json};

const CLIENT_ID: &str = "1000.SIMCLIENTID0123456789";
const CLIENT_SECRET: &str = "sim-client-secret-abcdef";
const REFRESH: &str = "1000.refresh.token.that.works";

/// The descriptions, most specific first (record.json's `/{module}/{id}` would also match
/// `/actions/watch` and `/settings/pipeline`).
const SPEC_FILES: &[&str] = &[
    "notifications.json",
    "convert_lead.json",
    "pipeline.json",
    "fields.json",
    "modules.json",
    "record.json",
];

const NOTIFICATION_FIXTURE: &str =
    include_str!("data/zoho/notification_callback_leads_insert.json");
const WATCH_REQUEST_FIXTURE: &str =
    include_str!("data/zoho/watch_enable_request_deals_stage_condition.json");
const WATCH_RESPONSE_FIXTURE: &str = include_str!("data/zoho/watch_enable_response_success.json");
const PIPELINES_FIXTURE: &str = include_str!("data/zoho/pipelines_get_response.json");

/// Zoho's sample watch request with `channel_expiry` set to `expiry`; its condition names
/// `Account_Name`, which the simulator's Deals do not have (accounts are not simulated), so
/// `Amount` stands in for it.
fn sample_watch_request(expiry: &str) -> Value {
    let mut request: Value = serde_json::from_str(WATCH_REQUEST_FIXTURE).unwrap();
    request["watch"][0]["channel_expiry"] = json!(expiry);
    let field = &mut request["watch"][0]["notification_condition"][0]["field_selection"]["group"]
        [1]["group"][0]["field"]["api_name"];
    assert_eq!(field, "Account_Name");
    *field = json!("Amount");
    request
}

fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/zoho")
}

fn specs() -> &'static [OpenApi] {
    static SPECS: OnceLock<Vec<OpenApi>> = OnceLock::new();
    SPECS.get_or_init(|| {
        SPEC_FILES
            .iter()
            .map(|f| OpenApi::load(data_dir().join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
            .collect()
    })
}

fn spec_for(method: &str, path: &str) -> Option<&'static OpenApi> {
    let path = path.split('?').next().unwrap_or(path);
    specs()
        .iter()
        .find(|s| s.operation_for(method, path).is_some())
}

/// A description whose operations only carry schemas of the copied files, to check single
/// records, result items and errors of records answers (see the module docs).
fn item_spec() -> &'static OpenApi {
    static SPEC: OnceLock<OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| {
        let op = |schema: Value| {
            json!({"post": {"responses": {"200": {"description": "", "content": {"application/json": {"schema": schema}}}}}})
        };
        let text = json!({
            "openapi": "3.0.0",
            "info": {"title": "record items", "version": "1"},
            "paths": {
                "/record": op(json!({"$ref": "record.json#/components/schemas/Record"})),
                "/record-list": op(json!({"$ref": "record.json#/components/schemas/Response_Wrapper"})),
                "/record-item": op(json!({"oneOf": [
                    {"$ref": "record.json#/components/schemas/Success_Response"},
                    {"$ref": "record.json#/components/schemas/API_Exception"},
                ]})),
                "/record-error": op(json!({"$ref": "record.json#/components/schemas/API_Exception"})),
                "/generic-error": op(json!({"$ref": "common.json#/components/schemas/API_Exception"})),
            }
        })
        .to_string();
        let spec = OpenApi::from_str(&text, Some(&data_dir())).expect("item spec");
        // Unresolved references are listed as "<document>: <reference>".
        let targets_a_copied_file = |r: &String| {
            let reference = r.split_once(": ").map_or(r.as_str(), |(_, reference)| reference);
            reference.contains("record.json#") || reference.contains("common.json#")
        };
        assert!(
            !spec.unresolved_refs().iter().any(targets_a_copied_file),
            "{:?}",
            spec.unresolved_refs()
        );
        spec
    })
}

fn item_errors(kind: &str, value: &Value) -> Vec<String> {
    item_spec()
        .validate_response("POST", kind, 200, value)
        .err()
        .unwrap_or_default()
}

/// Fields metadata keys the description types as (non-nullable) objects that Zoho answers with
/// `null`, and the empty instance each is replaced with before validation.
const NULL_FIELD_KEYS: &[&str] = &[
    "associated_module",
    "sub_module",
    "tooltip",
    "association_details",
    "refer_from_field",
    "external",
    "crypt",
    "history_tracking",
    "hipaa_compliance",
    "textarea",
    "sharing_properties",
    "multiuserlookup",
];

fn empty_instance(key: &str) -> Value {
    let minified = json!({"api_name": null, "id": null});
    match key {
        "associated_module" | "sub_module" => minified,
        "tooltip" => json!({"name": "", "value": ""}),
        "association_details" => {
            json!({"related_field": minified, "lookup_field": minified})
        }
        "refer_from_field" => json!({"id": null, "api_name": null}),
        "external" => json!({"show": null, "type": null}),
        "crypt" => json!({"mode": null, "status": null}),
        "history_tracking" => json!({"module": {}, "duration_configured_field": minified}),
        "hipaa_compliance" => json!({"restricted_in_export": null, "restricted": null}),
        "multiuserlookup" => json!({
            "display_label": null, "linking_module": minified, "connected_module": minified,
            "lookup_apiname": null, "api_name": null, "connectedfield_apiname": null,
            "connectedlookup_apiname": null, "id": null, "record_access": null,
        }),
        _ => json!({}),
    }
}

/// The notifications description requires `comparator`, `field`, `value`, `group_operator`
/// and `group` on every node of a `field_selection` (its `Criteria`); Zoho's sample sends
/// leaves `{field}` and groups `{group_operator, group}`. Missing keys are filled with `null`
/// (a leaf's `group` with `[]`, a group's `field` with `{api_name: null, id: null}`).
fn fill_criteria(node: &mut Value) {
    let Some(map) = node.as_object_mut() else {
        return;
    };
    for key in ["comparator", "value", "group_operator"] {
        map.entry(key).or_insert(Value::Null);
    }
    map.entry("field")
        .or_insert_with(|| json!({"api_name": null, "id": null}));
    let group = map.entry("group").or_insert_with(|| json!([]));
    if let Some(children) = group.as_array_mut() {
        children.iter_mut().for_each(fill_criteria);
    }
}

fn fill_conditions(conditions: Option<&mut Value>) {
    for condition in conditions
        .and_then(Value::as_array_mut)
        .map(|c| c.iter_mut())
        .into_iter()
        .flatten()
    {
        if let Some(selection) = condition.get_mut("field_selection") {
            fill_criteria(selection);
        }
    }
}

/// Applies the documented value exceptions (module docs) to a body about to be validated.
fn normalize(path: &str, body: &Value) -> Value {
    let mut body = body.clone();
    let path = path.split('?').next().unwrap_or(path);
    if let Some(items) = body.get_mut("data").and_then(Value::as_array_mut) {
        for item in items.iter_mut() {
            if let Some(map) = item.as_object_mut() {
                if map.get("duplicate_field") == Some(&Value::Null) {
                    map.remove("duplicate_field");
                }
            }
            if path.ends_with("/actions/convert") {
                if let Some(details) = item.get_mut("details").and_then(Value::as_object_mut) {
                    for key in ["Accounts", "Deals"] {
                        if details.get(key) == Some(&Value::Null) {
                            details.insert(key.to_owned(), json!({}));
                        }
                    }
                }
            }
        }
    }
    if path.ends_with("/actions/watch") {
        if let Some(items) = body.get_mut("watch").and_then(Value::as_array_mut) {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                if item
                    .get("channel_id")
                    .is_some_and(|c| c.is_string() || c.is_number())
                {
                    item.insert("channel_id".to_owned(), json!({}));
                }
                fill_conditions(item.get_mut("notification_condition"));
                if let Some(events) = item
                    .get_mut("details")
                    .and_then(|d| d.get_mut("events"))
                    .and_then(Value::as_array_mut)
                {
                    for event in events.iter_mut() {
                        fill_conditions(event.get_mut("notification_condition"));
                    }
                }
            }
        }
    }
    if path.ends_with("/settings/fields") {
        if let Some(fields) = body.get_mut("fields").and_then(Value::as_array_mut) {
            for field in fields.iter_mut().filter_map(Value::as_object_mut) {
                for key in NULL_FIELD_KEYS {
                    if field.get(*key) == Some(&Value::Null) {
                        field.insert((*key).to_owned(), empty_instance(key));
                    }
                }
            }
        }
    }
    body
}

fn is_records_path(path: &str) -> bool {
    let segments: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or(path)
        .trim_matches('/')
        .split('/')
        .collect();
    matches!(segments.as_slice(), ["crm", "v8", m, ..] if ["Leads", "Contacts", "Deals"].contains(m))
        && !path.contains("/actions/convert")
}

/// Whether `body` fits a schema `method path` declares for one of the usual statuses.
fn fits_a_declared_status(spec: &OpenApi, method: &str, path: &str, body: &Value) -> bool {
    [200, 201, 202, 400]
        .iter()
        .any(|status| spec.validate_response(method, path, *status, body).is_ok())
}

/// Everything wrong with an answer to `method path` (module docs: exceptions).
fn response_errors(method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
    let bare = path.split('?').next().unwrap_or(path);
    let Some(spec) = spec_for(method, bare) else {
        // Unknown routes and methods: Zoho's generic error object.
        return if status >= 400 {
            item_errors("/generic-error", body)
        } else {
            vec![format!("no description has {method} {bare}")]
        };
    };
    if status == 204 {
        return if body.is_null() {
            Vec::new()
        } else {
            vec![format!("204 with a body: {body}")]
        };
    }
    if status == 401 || status == 429 {
        return item_errors("/generic-error", body);
    }
    let normalized = normalize(bare, body);
    let mut errors = Vec::new();
    if status == 207 {
        // A mix: each item must fit a shape the operation declares.
        let key = if normalized.get("watch").is_some() {
            "watch"
        } else {
            "data"
        };
        for item in normalized[key].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let mut single = Map::new();
            single.insert(key.to_owned(), json!([item]));
            if !fits_a_declared_status(spec, method, bare, &Value::Object(single)) {
                errors.push(format!("207 item fits no declared shape: {item}"));
            }
        }
    } else {
        errors = spec
            .validate_response(method, bare, status, &normalized)
            .err()
            .unwrap_or_default();
        let undeclared = errors.iter().any(|e| e.contains("status not declared"));
        let not_subscribed = body.pointer("/watch/0/code") == Some(&json!("NOT_SUBSCRIBED"));
        if !errors.is_empty()
            && (undeclared || not_subscribed)
            && fits_a_declared_status(spec, method, bare, &normalized)
        {
            errors.clear();
        }
    }
    if is_records_path(bare) {
        let read = method == "GET";
        if read && status == 200 {
            errors.extend(item_errors("/record-list", &normalized));
        }
        match normalized.get("data").and_then(Value::as_array) {
            Some(items) => {
                for item in items {
                    let kind = if read { "/record" } else { "/record-item" };
                    errors.extend(item_errors(kind, item));
                }
            }
            None => errors.extend(item_errors("/record-error", &normalized)),
        }
    }
    errors
}

/// Every API request of `requests` validates against its description; returns how many were
/// checked.
fn assert_requests_valid(requests: &[RecordedRequest]) -> usize {
    let mut checked = 0;
    for req in requests {
        if !req.path.starts_with("/crm/") {
            continue;
        }
        let spec = spec_for(&req.method, &req.path)
            .unwrap_or_else(|| panic!("no description has {} {}", req.method, req.path));
        let mut normalized = req.clone();
        if let Some(body) = req.json() {
            normalized.body = normalize(&req.path, &body).to_string().into_bytes();
        }
        let errors = spec
            .validate_recorded(&normalized)
            .err()
            .unwrap_or_default();
        assert!(
            errors.is_empty(),
            "request not valid: {errors:#?}\n{}",
            req.body_text()
        );
        checked += 1;
    }
    checked
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn item(&self, i: usize) -> &Value {
        &self.body["data"][i]
    }
}

/// A reqwest client that checks every API response against the descriptions.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(m, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Zoho-oauthtoken {token}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        let errors = response_errors(method, path, status, &body);
        assert!(
            errors.is_empty(),
            "{method} {path} → {status}: response not valid: {errors:#?}\n{body:#}"
        );
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.call("PUT", path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call("PATCH", path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call("DELETE", path, None).await
    }
}

/// `application/x-www-form-urlencoded` text of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn token_call(sim: &ZohoSim, pairs: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(sim.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn refresh(sim: &ZohoSim, refresh_token: &str) -> (u16, Value) {
    token_call(
        sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// A client with a fresh access token (as a connector gets after a refresh).
async fn authorized(sim: &ZohoSim) -> Api {
    let (status, answer) = refresh(sim, REFRESH).await;
    assert_eq!(status, 200, "{answer}");
    Api {
        http: reqwest::Client::new(),
        base: answer["api_domain"].as_str().unwrap().to_owned(),
        token: Some(answer["access_token"].as_str().unwrap().to_owned()),
    }
}

async fn start_with(opts: ZohoSimOptions) -> (ZohoSim, Api) {
    let sim = ZohoSim::start(opts).await.unwrap();
    let api = authorized(&sim).await;
    (sim, api)
}

fn options() -> ZohoSimOptions {
    ZohoSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH)
}

async fn start() -> (ZohoSim, Api) {
    start_with(options()).await
}

/// Inserts one record; returns its id.
async fn insert(api: &Api, module: &str, record: Value) -> String {
    let answer = api
        .post(&format!("/crm/v8/{module}"), json!({"data": [record]}))
        .await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    answer.item(0)["details"]["id"].as_str().unwrap().to_owned()
}

fn deal(name: &str, stage: &str) -> Value {
    json!({"Deal_Name": name, "Stage": stage, "Pipeline": "Standard (Standard)"})
}

/// `YYYY-MM-DDTHH:MM:SS±HH:MM`.
fn is_zoho_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 25
        && text.chars().enumerate().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 | 22 => c == ':',
            19 => c == '+' || c == '-',
            _ => c.is_ascii_digit(),
        })
}

/// A notify URL receiver recording every request and answering `status` (changeable).
struct Receiver {
    sim: Simulator,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let status = Arc::new(AtomicU16::new(status));
        let answer = Arc::clone(&status);
        let sim = Simulator::start(move |_: &RecordedRequest| {
            SimResponse::json(answer.load(Ordering::SeqCst), &json!({"ok": true}))
        })
        .await
        .unwrap();
        Receiver { sim, status }
    }

    fn url(&self) -> String {
        self.sim.url("/hooks/zoho?tenant=t1&secret=s3")
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.sim.requests()
    }
}

/// Enables channel `id` on `events` for `url`; returns the answer.
async fn watch(api: &Api, id: u64, events: &[&str], url: &str, extra: Value) -> Answer {
    let mut item = json!({
        "channel_id": id,
        "events": events,
        "notify_url": url,
        "token": format!("tok-{id}"),
    });
    if let (Some(item), Value::Object(extra)) = (item.as_object_mut(), extra) {
        item.extend(extra);
    }
    api.post("/crm/v8/actions/watch", json!({ "watch": [item] }))
        .await
}

fn in_hours(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours))
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

/// The keys of a JSON object text in the order they appear.
fn key_order(text: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(text).unwrap();
    let mut found: Vec<(usize, String)> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (text.find(&format!("\"{k}\"")).unwrap(), k.clone()))
        .collect();
    found.sort();
    found.into_iter().map(|(_, k)| k).collect()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ----- OAuth -------------------------------------------------------------------------------------

#[tokio::test]
async fn oauth_grants_errors_and_token_expiry() {
    let sim = ZohoSim::start(options()).await.unwrap();
    assert_eq!(
        sim.token_url(),
        format!("{}/oauth/v2/token", sim.base_url())
    );
    let (status, answer) = refresh(&sim, REFRESH).await;
    assert_eq!(status, 200);
    assert_eq!(
        keys(&answer),
        [
            "access_token",
            "api_domain",
            "expires_in",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(answer["api_domain"], sim.base_url());
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 3600);
    let token = answer["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("1000."));

    // Parameters in the query string work too (Zoho accepts both).
    let query = form(&[
        ("grant_type", "refresh_token"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("refresh_token", REFRESH),
    ]);
    let response = reqwest::Client::new()
        .post(format!("{}?{query}", sim.token_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let by_query: Value = response.json().await.unwrap();
    assert!(by_query["access_token"].is_string());
    assert_eq!(sim.token_refreshes(), 2);

    // Errors are HTTP 200 with {"error": ...}.
    let (status, answer) = token_call(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
            ("refresh_token", REFRESH),
        ],
    )
    .await;
    assert_eq!((status, answer), (200, json!({"error": "invalid_client"})));
    let (status, answer) = refresh(&sim, "1000.unknown").await;
    assert_eq!((status, answer), (200, json!({"error": "invalid_code"})));
    let (_, answer) = token_call(
        &sim,
        &[
            ("grant_type", "password"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    )
    .await;
    assert_eq!(answer, json!({"error": "unsupported_grant_type"}));

    // Authorization code grant: a new refresh token that works.
    let code_grant = |code: &'static str, redirect: Option<&'static str>| {
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", code),
        ];
        if let Some(r) = redirect {
            pairs.push(("redirect_uri", r));
        }
        pairs
    };
    let (_, answer) = token_call(&sim, &code_grant("nope", Some("https://app/cb"))).await;
    assert_eq!(answer, json!({"error": "invalid_code"}));
    let (_, answer) = token_call(&sim, &code_grant("sim-code", None)).await;
    assert_eq!(answer, json!({"error": "invalid_redirect_uri"}));
    let (status, answer) = token_call(&sim, &code_grant("sim-code", Some("https://app/cb"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        keys(&answer),
        [
            "access_token",
            "api_domain",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    let new_refresh = answer["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(&sim, &new_refresh).await.0, 200);
    let get = reqwest::Client::new()
        .get(sim.token_url())
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);

    // API calls: Zoho-oauthtoken only; Bearer, unknown and expired tokens are INVALID_TOKEN.
    let base = sim.base_url();
    let api = |token: Option<String>| Api {
        http: reqwest::Client::new(),
        base: base.clone(),
        token,
    };
    let ok = api(Some(token.clone()))
        .get("/crm/v8/Leads?fields=Last_Name")
        .await;
    assert_eq!(ok.status, 204);
    let none = api(None).get("/crm/v8/Leads?fields=Last_Name").await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.body,
        json!({"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"})
    );
    let bearer = reqwest::Client::new()
        .get(format!("{base}/crm/v8/Leads?fields=Last_Name"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 401);
    assert_eq!(
        api(Some("1000.bogus".into()))
            .get("/crm/v8/Leads?fields=Last_Name")
            .await
            .status,
        401
    );
    sim.advance_clock(Duration::from_secs(3599));
    assert_eq!(
        api(Some(token.clone()))
            .get("/crm/v8/Leads?fields=Last_Name")
            .await
            .status,
        204
    );
    sim.advance_clock(Duration::from_secs(2));
    let expired = api(Some(token)).get("/crm/v8/Leads?fields=Last_Name").await;
    assert_eq!(expired.status, 401);
    assert_eq!(expired.body["code"], "INVALID_TOKEN");
    // The token endpoint is not an API call: not counted as one.
    assert_eq!(sim.credits_used(), 2);
}

#[tokio::test]
async fn a_refresh_token_mints_ten_access_tokens_per_ten_minutes() {
    let mut opts = options();
    opts.access_token_lifetime = Duration::from_secs(120);
    let sim = ZohoSim::start(opts).await.unwrap();
    for i in 0..10 {
        let (status, answer) = refresh(&sim, REFRESH).await;
        assert_eq!(status, 200, "refresh {i}: {answer}");
        assert_eq!(answer["expires_in"], 120);
    }
    let (status, answer) = refresh(&sim, REFRESH).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer,
        json!({
            "error_description": "You have made too many requests continuously. Please try again after some time.",
            "error": "Access Denied",
            "status": "failure",
        })
    );
    assert_eq!(sim.token_refreshes(), 10);
    // Another refresh token has its own window.
    let (_, answer) = token_call(
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", "sim-code"),
            ("redirect_uri", "https://app/cb"),
        ],
    )
    .await;
    let other = answer["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(&sim, &other).await.0, 200);
    // The window rolls: 10 minutes after the first mints, the token works again.
    sim.advance_clock(Duration::from_secs(5 * 60));
    assert_eq!(refresh(&sim, REFRESH).await.0, 400);
    sim.advance_clock(Duration::from_secs(5 * 60 + 1));
    assert_eq!(refresh(&sim, REFRESH).await.0, 200);
    assert_eq!(sim.token_refreshes(), 12);
}

// ----- records -----------------------------------------------------------------------------------

#[tokio::test]
async fn insert_read_update_with_per_record_errors() {
    let (sim, api) = start().await;
    let answer = api
        .post(
            "/crm/v8/Leads",
            json!({"data": [
                {"Last_Name": "Ann", "First_Name": "A.", "Email": "ann@example.com", "Referral_Code": "REF-ANN", "Company": "Zylker"},
                {"First_Name": "No last name"},
                {"Last_Name": "Bad mail", "Email": "not-an-address"},
                {"Last_Name": "Unknown field", "Favourite_Colour": "blue"},
                {"Last_Name": "Wrong type", "Phone": 5550100},
                {"Last_Name": "Bob", "Email": "bob@example.com"},
            ], "trigger": []}),
        )
        .await;
    assert_eq!(answer.status, 207, "{:#}", answer.body);
    let codes: Vec<&str> = (0..6)
        .map(|i| answer.item(i)["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "SUCCESS",
            "MANDATORY_NOT_FOUND",
            "INVALID_DATA",
            "INVALID_DATA",
            "INVALID_DATA",
            "SUCCESS"
        ]
    );
    assert_eq!(
        answer.item(1)["details"],
        json!({"api_name": "Last_Name", "json_path": "$.data[1].Last_Name"})
    );
    assert_eq!(answer.item(2)["details"]["api_name"], "Email");
    assert_eq!(answer.item(3)["details"]["api_name"], "Favourite_Colour");
    assert_eq!(answer.item(4)["details"]["expected_data_type"], "string");
    let ok = answer.item(0);
    assert_eq!(ok["message"], "record added");
    assert_eq!(ok["status"], "success");
    assert_eq!(
        keys(&ok["details"]),
        [
            "Created_By",
            "Created_Time",
            "Modified_By",
            "Modified_Time",
            "id"
        ]
    );
    assert!(is_zoho_time(
        ok["details"]["Created_Time"].as_str().unwrap()
    ));
    let ann = ok["details"]["id"].as_str().unwrap().to_owned();
    let bob = answer.item(5)["details"]["id"].as_str().unwrap().to_owned();
    assert_eq!(sim.records("Leads").len(), 2);

    // Every record failing: 400.
    let failed = api
        .post("/crm/v8/Leads", json!({"data": [{"First_Name": "x"}]}))
        .await;
    assert_eq!(failed.status, 400);
    assert_eq!(failed.item(0)["code"], "MANDATORY_NOT_FOUND");
    // Body-level errors.
    let empty = api.post("/crm/v8/Leads", json!({"data": []})).await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.body["code"], "MANDATORY_NOT_FOUND");
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"Last_Name": format!("L{i}")}))
        .collect();
    let too_many = api.post("/crm/v8/Leads", json!({ "data": many })).await;
    assert_eq!(too_many.status, 400);
    assert_eq!(too_many.body["code"], "LIMIT_EXCEEDED");
    assert_eq!(
        api.post("/crm/v8/Accounts", json!({"data": [{"Account_Name": "x"}]}))
            .await
            .body["code"],
        "INVALID_MODULE"
    );

    // Reads: v8 wants `fields`.
    let missing = api.get("/crm/v8/Leads").await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["code"], "REQUIRED_PARAM_MISSING");
    assert_eq!(missing.body["details"]["param_name"], "fields");
    let list = api
        .get("/crm/v8/Leads?fields=Last_Name,Email,Referral_Code,Created_Time&per_page=1")
        .await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body["info"],
        json!({"per_page": 1, "count": 1, "page": 1, "sort_by": "id", "sort_order": "asc", "more_records": true})
    );
    let first = &list.body["data"][0];
    assert_eq!(
        keys(first),
        [
            "$converted",
            "$converted_detail",
            "Created_Time",
            "Email",
            "Last_Name",
            "Referral_Code",
            "id"
        ]
    );
    assert_eq!(first["Referral_Code"], "REF-ANN");
    let page2 = api
        .get("/crm/v8/Leads?fields=Last_Name&per_page=1&page=2")
        .await;
    assert_eq!(page2.body["data"][0]["id"], bob.as_str());
    assert_eq!(page2.body["info"]["more_records"], false);
    assert_eq!(
        api.get("/crm/v8/Leads?fields=Last_Name&per_page=1&page=3")
            .await
            .status,
        204
    );
    let by_ids = api
        .get(&format!("/crm/v8/Leads?fields=Email&ids={bob},123"))
        .await;
    assert_eq!(by_ids.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.get("/crm/v8/Leads?fields=Nope").await.body["code"],
        "INVALID_DATA"
    );

    let one = api.get(&format!("/crm/v8/Leads/{ann}")).await;
    let record = &one.body["data"][0];
    assert_eq!(record["Layout"]["name"], "Standard");
    assert_eq!(record["Owner"]["id"], record["Created_By"]["id"]);
    assert_eq!(record["Phone"], Value::Null);
    assert_eq!(record["$converted"], false);
    assert!(is_zoho_time(record["Modified_Time"].as_str().unwrap()));
    assert_eq!(sim.record("Leads", &ann).unwrap(), *record);
    assert_eq!(api.get("/crm/v8/Leads/42").await.status, 204);

    // Bulk update (ids in the records) and single update.
    sim.advance_clock(Duration::from_secs(5));
    let updated = api
        .put(
            "/crm/v8/Leads",
            json!({"data": [
                {"id": ann, "Phone": "+1 555 0100", "Lead_Status": "Contacted"},
                {"Last_Name": "no id"},
                {"id": "1234", "Phone": "1"},
                {"id": bob, "Last_Name": null},
            ]}),
        )
        .await;
    assert_eq!(updated.status, 207);
    assert_eq!(updated.item(0)["message"], "record updated");
    assert_eq!(updated.item(1)["code"], "MANDATORY_NOT_FOUND");
    assert_eq!(updated.item(1)["details"]["api_name"], "id");
    assert_eq!(
        updated.item(2),
        &json!({"code": "INVALID_DATA", "details": {"id": "1234"}, "message": "the id given seems to be invalid", "status": "error"})
    );
    assert_eq!(updated.item(3)["code"], "MANDATORY_NOT_FOUND");
    let after = sim.record("Leads", &ann).unwrap();
    assert_eq!(after["Phone"], "+1 555 0100");
    assert_ne!(after["Modified_Time"], after["Created_Time"]);
    let single = api
        .put(
            &format!("/crm/v8/Leads/{bob}"),
            json!({"data": [{"Email": "bobby@example.com"}]}),
        )
        .await;
    assert_eq!(single.status, 200);
    assert_eq!(sim.find_by_email("Leads", "BOBBY@example.com").len(), 1);
    assert!(sim.find_by_email("Leads", "bob@example.com").is_empty());

    // Deletion.
    let deleted = api.delete(&format!("/crm/v8/Leads?ids={bob},999")).await;
    assert_eq!(deleted.status, 207);
    assert_eq!(deleted.item(0)["message"], "record deleted");
    assert!(sim.record("Leads", &bob).is_none());
    assert_eq!(
        api.delete(&format!("/crm/v8/Leads/{ann}")).await.status,
        200
    );
    assert!(sim.records("Leads").is_empty());
    assert_eq!(
        api.delete("/crm/v8/Leads").await.body["code"],
        "REQUIRED_PARAM_MISSING"
    );

    // Unknown routes and methods.
    assert_eq!(api.get("/crm/v7/Leads?fields=Email").await.status, 404);
    assert_eq!(
        api.call("PATCH", "/crm/v8/Leads", Some(json!({"data": []})))
            .await
            .body["code"],
        "INVALID_REQUEST_METHOD"
    );
}

#[tokio::test]
async fn deals_need_a_stage_of_their_pipeline_and_carry_lookups() {
    let (sim, api) = start().await;
    let contact = insert(
        &api,
        "Contacts",
        json!({"Last_Name": "Daly", "First_Name": "Paul", "Email": "p.daly@example.com"}),
    )
    .await;
    let answer = api
        .post(
            "/crm/v8/Deals",
            json!({"data": [
                {"Deal_Name": "No stage"},
                {"Deal_Name": "Bad stage", "Stage": "Identify Decision Makers"},
                {"Deal_Name": "Bad pipeline", "Stage": "Qualification", "Pipeline": "Nope"},
                {"Deal_Name": "Amount as text", "Stage": "Qualification", "Amount": "100"},
                {"Deal_Name": "Missing contact", "Stage": "Qualification", "Contact_Name": {"id": "77"}},
                {"Deal_Name": "Good", "Stage": "Id. Decision Makers", "Amount": 250.5, "Closing_Date": "2026-01-31",
                 "Contact_Name": {"id": contact}, "Referral_Code": "REF-1"},
                {"Deal_Name": "Default pipeline", "Stage": "Qualification"},
            ]}),
        )
        .await;
    assert_eq!(answer.status, 207);
    assert_eq!(
        answer.item(0)["details"],
        json!({"api_name": "Stage", "json_path": "$.data[0].Stage"})
    );
    assert_eq!(answer.item(1)["code"], "MAPPING_MISMATCH");
    assert_eq!(
        answer.item(1)["message"],
        "Pipeline doesn't contain the Stage"
    );
    assert_eq!(answer.item(2)["details"]["api_name"], "Pipeline");
    assert_eq!(answer.item(3)["details"]["expected_data_type"], "double");
    assert_eq!(answer.item(4)["details"]["api_name"], "Contact_Name");
    let good = answer.item(5)["details"]["id"].as_str().unwrap();
    let deal = sim.record("Deals", good).unwrap();
    assert_eq!(
        deal["Pipeline"],
        json!({"name": "Standard (Standard)", "id": "3652397000003097001"})
    );
    assert_eq!(deal["Stage"], "Id. Decision Makers");
    assert_eq!(
        deal["Contact_Name"],
        json!({"name": "Paul Daly", "id": contact})
    );
    assert_eq!(deal["Amount"], 250.5);
    let default = answer.item(6)["details"]["id"].as_str().unwrap();
    assert_eq!(
        sim.record("Deals", default).unwrap()["Pipeline"]["name"],
        "Standard (Standard)"
    );
    // Moving stages: through the API and as a user; stages are actual values.
    let moved = api
        .put(
            "/crm/v8/Deals",
            json!({"data": [{"id": good, "Stage": "Closed Won"}, {"id": default, "Stage": "Won"}]}),
        )
        .await;
    assert_eq!(moved.status, 207);
    assert_eq!(moved.item(1)["code"], "MAPPING_MISMATCH");
    assert!(sim.set_deal_stage_ui(default, "Negotiation/Review").is_ok());
    assert!(sim.set_deal_stage_ui(default, "Signed").is_err());
    assert!(sim.set_deal_stage_ui("123", "Qualification").is_err());
    assert_eq!(
        sim.record("Deals", default).unwrap()["Stage"],
        "Negotiation/Review"
    );
    // The pipeline as an object by id is accepted.
    let by_id = api
        .post(
            "/crm/v8/Deals",
            json!({"data": [{"Deal_Name": "x", "Stage": "Qualification", "Pipeline": {"id": "3652397000003097001"}}]}),
        )
        .await;
    assert_eq!(by_id.status, 201);
    assert!(
        sim.update_record_ui("Deals", good, &[("Nope", json!(1))])
            .is_err()
    );
    sim.update_record_ui("Deals", good, &[("Amount", json!(300))])
        .unwrap();
    assert_eq!(sim.record("Deals", good).unwrap()["Amount"], 300);
}

#[tokio::test]
async fn duplicate_checks_on_insert_and_upsert() {
    let (sim, api) = start().await;
    // Leads may share an e-mail unless the insert asks for the check.
    insert(
        &api,
        "Leads",
        json!({"Last_Name": "Ann", "Email": "ann@example.com"}),
    )
    .await;
    insert(
        &api,
        "Leads",
        json!({"Last_Name": "Ann 2", "Email": "ann@example.com"}),
    )
    .await;
    let existing = sim.find_by_email("Leads", "ann@example.com")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let checked = api
        .post(
            "/crm/v8/Leads",
            json!({"data": [{"Last_Name": "Ann 3", "Email": "ANN@example.com"}], "duplicate_check_fields": ["Email"]}),
        )
        .await;
    assert_eq!(checked.status, 400);
    let error = checked.item(0);
    assert_eq!(error["code"], "DUPLICATE_DATA");
    assert_eq!(error["message"], "duplicate data");
    assert_eq!(error["details"]["api_name"], "Email");
    assert_eq!(error["details"]["id"], existing.as_str());
    assert_eq!(
        error["details"]["duplicate_record"]["id"],
        existing.as_str()
    );

    // Deals: the referral code is unique.
    let first = insert(
        &api,
        "Deals",
        json!({"Deal_Name": "Ann's deal", "Stage": "Qualification", "Referral_Code": "REF-ANN"}),
    )
    .await;
    let again = api
        .post(
            "/crm/v8/Deals",
            json!({"data": [{"Deal_Name": "Other", "Stage": "Qualification", "Referral_Code": "ref-ann"}]}),
        )
        .await;
    assert_eq!(again.item(0)["code"], "DUPLICATE_DATA");
    assert_eq!(again.item(0)["details"]["id"], first.as_str());

    // Upsert: Email by default for Contacts.
    let upsert = api
        .post(
            "/crm/v8/Contacts/upsert",
            json!({"data": [
                {"Last_Name": "Cat", "Email": "cat@example.com", "Referral_Code": "REF-CAT"},
                {"Last_Name": "Dan", "Email": "dan@example.com"},
            ]}),
        )
        .await;
    assert_eq!(upsert.status, 200);
    for i in 0..2 {
        assert_eq!(upsert.item(i)["action"], "insert");
        assert_eq!(upsert.item(i)["duplicate_field"], Value::Null);
        assert_eq!(upsert.item(i)["message"], "record added");
    }
    let cat = upsert.item(0)["details"]["id"].as_str().unwrap().to_owned();
    let again = api
        .post(
            "/crm/v8/Contacts/upsert",
            json!({"data": [{"Last_Name": "Cat", "Email": "CAT@example.com", "Phone": "555"}], "trigger": ["workflow"]}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.item(0)["action"], "update");
    assert_eq!(again.item(0)["duplicate_field"], "Email");
    assert_eq!(again.item(0)["message"], "record updated");
    assert_eq!(again.item(0)["details"]["id"], cat.as_str());
    assert_eq!(sim.records("Contacts").len(), 2);
    assert_eq!(sim.record("Contacts", &cat).unwrap()["Phone"], "555");

    // Deals by the unique referral code; the system field (Deal_Name) is ignored when only
    // user fields are named.
    let by_code = api
        .post(
            "/crm/v8/Deals/upsert",
            json!({"data": [
                {"Deal_Name": "Renamed", "Stage": "Needs Analysis", "Referral_Code": "REF-ANN"},
                {"Deal_Name": "Renamed", "Stage": "Qualification", "Referral_Code": "REF-NEW"},
            ], "duplicate_check_fields": ["Referral_Code"]}),
        )
        .await;
    assert_eq!(by_code.status, 200);
    assert_eq!(by_code.item(0)["action"], "update");
    assert_eq!(by_code.item(0)["duplicate_field"], "Referral_Code");
    assert_eq!(by_code.item(0)["details"]["id"], first.as_str());
    assert_eq!(by_code.item(1)["action"], "insert");
    assert_eq!(sim.record("Deals", &first).unwrap()["Deal_Name"], "Renamed");
    // Without duplicate_check_fields: Deal_Name first, then the unique fields.
    let by_name = api
        .post(
            "/crm/v8/Deals/upsert",
            json!({"data": [{"Deal_Name": "renamed", "Stage": "Qualification", "Referral_Code": "REF-NEW"}]}),
        )
        .await;
    // The match on Deal_Name (the first deal) would take REF-NEW of the other deal.
    assert_eq!(by_name.status, 400);
    assert_eq!(by_name.item(0)["code"], "DUPLICATE_DATA");
    assert_eq!(by_name.item(0)["details"]["api_name"], "Referral_Code");
    let by_name = api
        .post(
            "/crm/v8/Deals/upsert",
            json!({"data": [{"Deal_Name": "renamed", "Stage": "Closed Won"}]}),
        )
        .await;
    assert_eq!(by_name.item(0)["duplicate_field"], "Deal_Name");
    assert_eq!(by_name.item(0)["details"]["id"], first.as_str());
    // Only system or unique fields may be named.
    let bad = api
        .post(
            "/crm/v8/Leads/upsert",
            json!({"data": [{"Last_Name": "x"}], "duplicate_check_fields": ["Phone"]}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["code"], "INVALID_DATA");
    assert_eq!(bad.body["details"]["api_name"], "duplicate_check_fields");

    // Without uniqueness on Deals, the code cannot be named.
    let mut opts = options();
    opts.referral_code_unique_on_deals = false;
    let (_sim2, api2) = start_with(opts).await;
    let refused = api2
        .post(
            "/crm/v8/Deals/upsert",
            json!({"data": [deal("x", "Qualification")], "duplicate_check_fields": ["Referral_Code"]}),
        )
        .await;
    assert_eq!(refused.status, 400);
}

#[tokio::test]
async fn search_equals_is_a_contains_match_on_text() {
    let (sim, api) = start().await;
    let abc = insert(
        &api,
        "Leads",
        json!({"Last_Name": "One", "Email": "one@example.com", "Referral_Code": "ABC"}),
    )
    .await;
    let abc_inc = insert(
        &api,
        "Leads",
        json!({"Last_Name": "Two", "Email": "two@example.com", "Referral_Code": "ABC Inc"}),
    )
    .await;
    let xyz = insert(&api, "Leads", json!({"Last_Name": "Three", "Email": "three@example.com", "Referral_Code": "XYZ", "Phone": "555-0100"})).await;
    let ids = |answer: &Answer| -> Vec<String> {
        answer.body["data"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    // The quirk: equals on a text field matches both "ABC" and "ABC Inc".
    let found = api
        .get("/crm/v8/Leads/search?criteria=(Referral_Code:equals:ABC)")
        .await;
    assert_eq!(found.status, 200);
    assert_eq!(ids(&found), [abc.as_str(), abc_inc.as_str()]);
    assert_eq!(found.body["info"]["count"], 2);
    // Case-insensitive, inside the value.
    let inner = api
        .get("/crm/v8/Leads/search?criteria=(Referral_Code:equals:c%20inc)")
        .await;
    assert_eq!(ids(&inner), [abc_inc.as_str()]);
    // E-mail equality is exact (case-insensitive).
    let email = api
        .get("/crm/v8/Leads/search?criteria=(Email:equals:ONE@example.com)")
        .await;
    assert_eq!(ids(&email), [abc.as_str()]);
    assert_eq!(
        api.get("/crm/v8/Leads/search?criteria=(Email:equals:one@example)")
            .await
            .status,
        204
    );
    let both = api
        .get("/crm/v8/Leads/search?criteria=((Email:equals:two@example.com)and(Referral_Code:equals:ABC))&fields=Email,Referral_Code")
        .await;
    assert_eq!(ids(&both), [abc_inc.as_str()]);
    assert_eq!(
        keys(&both.body["data"][0]),
        [
            "$converted",
            "$converted_detail",
            "Email",
            "Referral_Code",
            "id"
        ]
    );
    let either = api
        .get("/crm/v8/Leads/search?criteria=(Referral_Code:starts_with:XY)or(Last_Name:equals:One)")
        .await;
    assert_eq!(ids(&either), [abc.as_str(), xyz.as_str()]);
    let listed = api
        .get("/crm/v8/Leads/search?criteria=(Referral_Code:in:XYZ,Nope)")
        .await;
    assert_eq!(ids(&listed), [xyz.as_str()]);
    let not_equal = api
        .get("/crm/v8/Leads/search?criteria=(Referral_Code:not_equal:ABC)")
        .await;
    assert_eq!(ids(&not_equal), [xyz.as_str()]);
    assert_eq!(
        ids(&api.get("/crm/v8/Leads/search?email=TWO@example.com").await),
        [abc_inc.as_str()]
    );
    assert_eq!(
        ids(&api.get("/crm/v8/Leads/search?phone=555-0100").await),
        [xyz.as_str()]
    );
    assert_eq!(
        ids(&api.get("/crm/v8/Leads/search?word=three").await),
        [xyz.as_str()]
    );
    let paged = api
        .get("/crm/v8/Leads/search?criteria=(Referral_Code:equals:ABC)&per_page=1&page=2")
        .await;
    assert_eq!(ids(&paged), [abc_inc.as_str()]);
    // Escaped parentheses and commas are part of the value.
    sim.update_record_ui("Leads", &xyz, &[("Referral_Code", json!("X(1),Y"))])
        .unwrap();
    assert_eq!(
        ids(&api
            .get("/crm/v8/Leads/search?criteria=(Referral_Code:equals:X%5C(1%5C)%5C,Y)")
            .await),
        [xyz.as_str()]
    );

    // Errors.
    for bad in [
        "(Referral_Code:like:ABC)",
        "(Referral_Code:equals:ABC",
        "Referral_Code:equals:ABC",
        "(Nope:equals:1)",
        "(Referral_Code:greater_than:1)",
    ] {
        let answer = api
            .get(&format!(
                "/crm/v8/Leads/search?criteria={}",
                form(&[("x", bad)]).trim_start_matches("x=")
            ))
            .await;
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.body["code"], "INVALID_QUERY", "{bad}");
        assert_eq!(answer.body["message"], "invalid query formed");
    }
    let missing = api.get("/crm/v8/Leads/search").await;
    assert_eq!(missing.body["code"], "REQUIRED_PARAM_MISSING");
    let amount = insert(
        &api,
        "Deals",
        json!({"Deal_Name": "Big", "Stage": "Qualification", "Amount": 5000}),
    )
    .await;
    insert(
        &api,
        "Deals",
        json!({"Deal_Name": "Small", "Stage": "Qualification", "Amount": 50}),
    )
    .await;
    assert_eq!(
        ids(&api
            .get("/crm/v8/Deals/search?criteria=(Amount:greater_than:100)")
            .await),
        [amount]
    );
}

// ----- lead conversion ---------------------------------------------------------------------------

#[tokio::test]
async fn lead_conversion_carries_the_referral_code_per_the_mapping() {
    let receiver = Receiver::start(200).await;
    let (sim, api) = start().await;
    let lead = insert(
        &api,
        "Leads",
        json!({"Last_Name": "Daly", "First_Name": "Paul", "Email": "p.daly@example.com", "Referral_Code": "REF-PAUL", "Lead_Source": "Partner"}),
    )
    .await;
    watch(
        &api,
        7001,
        &["Leads.all", "Contacts.all", "Deals.all"],
        &receiver.url(),
        json!({}),
    )
    .await;
    sim.take_notifications();

    // Deal fields are checked first.
    let missing = api
        .post(
            &format!("/crm/v8/Leads/{lead}/actions/convert"),
            json!({"data": [{"Deals": {"Deal_Name": "Paul's deal", "Stage": "Qualification", "Pipeline": "Standard (Standard)"}}]}),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.body,
        json!({"data": [{"code": "MANDATORY_NOT_FOUND", "details": {"api_name": "Closing_Date", "json_path": "$.data[0].Deals.Closing_Date"}, "message": "required field not found", "status": "error"}]})
    );
    let mismatch = api
        .post(
            &format!("/crm/v8/Leads/{lead}/actions/convert"),
            json!({"data": [{"Deals": {"Deal_Name": "x", "Closing_Date": "2026-03-01", "Stage": "Won", "Pipeline": "Standard (Standard)"}}]}),
        )
        .await;
    assert_eq!(mismatch.body["data"][0]["code"], "MAPPING_MISMATCH");
    assert_eq!(
        mismatch.body["data"][0]["message"],
        "Pipeline doesn`t contain the Stage"
    );
    assert!(sim.take_notifications().is_empty(), "nothing changed");

    let credits = sim.credits_used();
    let converted = api
        .post(
            &format!("/crm/v8/Leads/{lead}/actions/convert"),
            json!({"data": [{"overwrite": true, "notify_lead_owner": false, "Deals": {
                "Deal_Name": "Paul's deal", "Closing_Date": "2026-03-01", "Stage": "Qualification",
                "Pipeline": "Standard (Standard)", "Amount": 1200
            }}]}),
        )
        .await;
    assert_eq!(converted.status, 200, "{:#}", converted.body);
    let item = converted.item(0);
    assert_eq!(
        item["message"],
        "The record has been converted successfully"
    );
    assert_eq!(item["details"]["Accounts"], Value::Null);
    assert_eq!(item["details"]["Contacts"]["name"], "Paul Daly");
    assert_eq!(item["details"]["Deals"]["name"], "Paul's deal");
    let contact_id = item["details"]["Contacts"]["id"].as_str().unwrap();
    let deal_id = item["details"]["Deals"]["id"].as_str().unwrap();
    let contact = sim.record("Contacts", contact_id).unwrap();
    assert_eq!(contact["Referral_Code"], "REF-PAUL");
    assert_eq!(contact["Email"], "p.daly@example.com");
    assert_eq!(contact["Lead_Source"], "Partner");
    let deal = sim.record("Deals", deal_id).unwrap();
    assert_eq!(deal["Referral_Code"], "REF-PAUL");
    assert_eq!(
        deal["Contact_Name"],
        json!({"name": "Paul Daly", "id": contact_id})
    );
    assert_eq!(deal["Amount"], 1200);
    assert_eq!(deal["Stage"], "Qualification");
    let lead_now = sim.record("Leads", &lead).unwrap();
    assert_eq!(lead_now["$converted"], true);
    assert_eq!(lead_now["$converted_detail"]["contact"], contact_id);
    assert_eq!(lead_now["$converted_detail"]["deal"], deal_id);
    assert_eq!(lead_now["$converted_detail"]["account"], Value::Null);
    assert!(is_zoho_time(
        lead_now["$converted_detail"]["converted_time"]
            .as_str()
            .unwrap()
    ));
    assert_eq!(
        sim.credits_used(),
        credits + 5,
        "a conversion costs 5 credits"
    );

    // The notifications a conversion fires, in order.
    let notifications = sim.take_notifications();
    let summary: Vec<(String, String, Vec<String>)> = notifications
        .iter()
        .map(|n| (n.module.clone(), n.operation.clone(), n.ids.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "Contacts".into(),
                "insert".into(),
                vec![contact_id.to_owned()]
            ),
            ("Deals".into(), "insert".into(), vec![deal_id.to_owned()]),
            ("Leads".into(), "update".into(), vec![lead.clone()]),
        ]
    );
    assert_eq!(
        notifications[2].body["affected_fields"],
        json!(["$converted"])
    );

    // Converted leads are hidden from reads and searches unless asked for.
    assert_eq!(api.get("/crm/v8/Leads?fields=Email").await.status, 204);
    assert_eq!(
        api.get("/crm/v8/Leads/search?email=p.daly@example.com")
            .await
            .status,
        204
    );
    let shown = api.get("/crm/v8/Leads?fields=Email&converted=true").await;
    assert_eq!(shown.body["data"][0]["$converted"], true);
    assert_eq!(
        api.get("/crm/v8/Leads/search?email=p.daly@example.com&converted=both")
            .await
            .status,
        200
    );
    assert_eq!(api.get(&format!("/crm/v8/Leads/{lead}")).await.status, 200);
    // ... cannot be converted again or updated.
    let twice = api
        .post(
            &format!("/crm/v8/Leads/{lead}/actions/convert"),
            json!({"data": [{}]}),
        )
        .await;
    assert_eq!(twice.status, 400);
    assert_eq!(
        twice.body,
        json!({"code": "ID_ALREADY_CONVERTED", "details": {"resource_path_index": 1}, "message": "id already converted", "status": "error"})
    );
    let locked = api
        .put(
            &format!("/crm/v8/Leads/{lead}"),
            json!({"data": [{"Phone": "1"}]}),
        )
        .await;
    assert_eq!(locked.item(0)["code"], "CONVERTED_RECORD");
    assert!(sim.convert_lead_ui(&lead, None).is_err());
    let unknown = api
        .post("/crm/v8/Leads/42/actions/convert", json!({"data": [{}]}))
        .await;
    assert_eq!(unknown.body["details"]["resource_path_index"], 1);

    // A lead whose e-mail is a contact's converts into that contact.
    let second = insert(
        &api,
        "Leads",
        json!({"Last_Name": "Daly again", "Email": "P.Daly@example.com", "Referral_Code": "REF-2"}),
    )
    .await;
    let (reused, no_deal) = sim.convert_lead_ui(&second, None).unwrap();
    assert_eq!(reused, contact_id);
    assert_eq!(no_deal, None);
    assert_eq!(sim.records("Contacts").len(), 1);
    assert_eq!(
        sim.record("Contacts", contact_id).unwrap()["Referral_Code"],
        "REF-PAUL",
        "an existing contact is left as it is"
    );
    // A contact named by id is used too; without Deals no deal is made.
    let third = insert(&api, "Leads", json!({"Last_Name": "Third"})).await;
    let by_id = api
        .post(
            &format!("/crm/v8/Leads/{third}/actions/convert"),
            json!({"data": [{"Contacts": {"id": contact_id}}]}),
        )
        .await;
    assert_eq!(by_id.item(0)["details"]["Contacts"]["id"], contact_id);
    assert_eq!(by_id.item(0)["details"]["Deals"], Value::Null);

    // With the mapping off, the code is lost; the UI conversion works the same.
    let mut opts = options();
    opts.conversion_mapping = false;
    let (sim2, api2) = start_with(opts).await;
    let lead2 = insert(
        &api2,
        "Leads",
        json!({"Last_Name": "Ann", "Email": "ann@example.com", "Referral_Code": "REF-ANN"}),
    )
    .await;
    let (contact2, deal2) = sim2
        .convert_lead_ui(&lead2, Some(("Ann's deal", "Qualification")))
        .unwrap();
    let deal2 = deal2.unwrap();
    assert_eq!(
        sim2.record("Contacts", &contact2).unwrap()["Referral_Code"],
        Value::Null
    );
    let deal2 = sim2.record("Deals", &deal2).unwrap();
    assert_eq!(deal2["Referral_Code"], Value::Null);
    assert_eq!(deal2["Pipeline"]["name"], "Standard (Standard)");
    assert!(deal2["Closing_Date"].is_string());
    assert!(sim2.convert_lead_ui(&lead2, None).is_err());
    let lead3 = insert(&api2, "Leads", json!({"Last_Name": "Bob"})).await;
    assert!(
        sim2.convert_lead_ui(&lead3, Some(("Bob's", "Nope")))
            .is_err(),
        "the stage must be in the pipeline"
    );
    assert_eq!(
        sim2.record("Leads", &lead3).unwrap()["$converted"],
        false,
        "a refused conversion changes nothing"
    );
}

// ----- metadata ----------------------------------------------------------------------------------

#[tokio::test]
async fn fields_and_pipelines_metadata() {
    let (sim, api) = start().await;
    let fields = api.get("/crm/v8/settings/fields?module=Leads").await;
    assert_eq!(fields.status, 200);
    let list = fields.body["fields"].as_array().unwrap();
    let field = |name: &str| {
        list.iter()
            .find(|f| f["api_name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    let referral = field("Referral_Code");
    assert_eq!(referral["custom_field"], true);
    assert_eq!(referral["data_type"], "text");
    assert_eq!(referral["field_label"], "Referral Code");
    assert_eq!(
        referral["convert_mapping"],
        json!({"Contacts": "Referral_Code", "Deals": "Referral_Code", "Accounts": null})
    );
    assert_eq!(field("Last_Name")["system_mandatory"], true);
    assert_eq!(field("Email")["data_type"], "email");
    assert_eq!(
        field("Lead_Source")["pick_list_values"][1]["actual_value"],
        "Advertisement"
    );
    let deals = api.get("/crm/v8/settings/fields?module=Deals").await;
    let deal_fields = deals.body["fields"].as_array().unwrap();
    let code = deal_fields
        .iter()
        .find(|f| f["api_name"] == "Referral_Code")
        .unwrap();
    assert_eq!(code["unique"], json!({"casesensitive": "0"}));
    let stage = deal_fields
        .iter()
        .find(|f| f["api_name"] == "Stage")
        .unwrap();
    assert_eq!(stage["pick_list_values"].as_array().unwrap().len(), 9);
    let layout = stage["layout_associations"][0]["id"].as_str().unwrap();
    assert_eq!(Some(layout.to_owned()), sim.layout_id("Deals"));
    assert_eq!(sim.fields("Deals").len(), deal_fields.len());
    let missing = api.get("/crm/v8/settings/fields").await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["code"], "REQUIRED_PARAM_MISSING");
    let unknown = api.get("/crm/v8/settings/fields?module=Potentials").await;
    assert_eq!(unknown.body["code"], "INVALID_MODULE");

    // Pipelines: layout_id is mandatory; the default is the sample's Standard pipeline.
    let missing = api.get("/crm/v8/settings/pipeline").await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["code"], "REQUIRED_PARAM_MISSING");
    assert_eq!(
        api.get("/crm/v8/settings/pipeline?layout_id=1")
            .await
            .status,
        400
    );
    let pipelines = api
        .get(&format!("/crm/v8/settings/pipeline?layout_id={layout}"))
        .await;
    assert_eq!(pipelines.status, 200);
    let fixture: Value = serde_json::from_str(PIPELINES_FIXTURE).unwrap();
    assert_eq!(pipelines.body["pipeline"][0], fixture["pipeline"][0]);
    assert_eq!(pipelines.body["pipeline"].as_array().unwrap().len(), 1);
    assert_eq!(sim.pipelines(), pipelines.body);

    // A renamed won stage.
    let signed = sim.add_stage("Signed", "Signed", "Closed Won");
    let after = sim.pipelines();
    let maps = after["pipeline"][0]["maps"].as_array().unwrap();
    let last = maps.last().unwrap();
    assert_eq!(last["id"], signed.as_str());
    assert_eq!(last["sequence_number"], 10);
    assert_eq!(last["forecast_type"], "Closed Won");
    assert_eq!(last["forecast_category"]["name"], "Closed");
    let deal = insert(&api, "Deals", deal("Big one", "Qualification")).await;
    sim.set_deal_stage_ui(&deal, "Signed").unwrap();
    assert_eq!(sim.record("Deals", &deal).unwrap()["Stage"], "Signed");
    api.get(&format!("/crm/v8/settings/pipeline?layout_id={layout}"))
        .await;
}

// ----- watch channels ----------------------------------------------------------------------------

#[tokio::test]
async fn watch_channels_enable_list_update_and_disable() {
    let (sim, api) = start().await;
    assert_eq!(api.get("/crm/v8/actions/watch").await.status, 204);

    // The official sample request, with a future expiry.
    let expiry = in_hours(24);
    let enabled = api
        .post("/crm/v8/actions/watch", sample_watch_request(&expiry))
        .await;
    assert_eq!(enabled.status, 201);
    let fixture: Value = serde_json::from_str(WATCH_RESPONSE_FIXTURE).unwrap();
    let ours = &enabled.body["watch"][0];
    let theirs = &fixture["watch"][0];
    assert_eq!(keys(ours), keys(theirs));
    assert_eq!(ours["message"], theirs["message"]);
    let event = &ours["details"]["events"][0];
    let mut expected_keys = keys(&theirs["details"]["events"][0]);
    expected_keys.push("notification_condition".to_owned());
    expected_keys.sort();
    assert_eq!(keys(event), expected_keys);
    assert_eq!(event["channel_id"], "10000");
    assert_eq!(event["channel_expiry"], expiry.as_str());
    assert_eq!(event["resource_name"], "Deals");
    assert_eq!(event["resource_id"], "3652397000000002181");
    assert_eq!(
        event["resource_uri"],
        format!("{}/crm/v8/Deals", sim.base_url())
    );

    // Listing: one entry per channel and module.
    watch(
        &api,
        20002,
        &["Leads.create", "Contacts.edit"],
        "https://hooks.example/zoho?a=1",
        json!({"return_affected_field_values": true}),
    )
    .await;
    let listed = api.get("/crm/v8/actions/watch").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["info"]["count"], 3);
    let one = api.get("/crm/v8/actions/watch?channel_id=20002").await;
    let entries = one.body["watch"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["events"], json!(["Leads.create"]));
    assert_eq!(entries[0]["token"], "tok-20002");
    assert_eq!(entries[0]["notify_on_related_action"], true);
    assert_eq!(entries[1]["resource_name"], "Contacts");
    assert_eq!(
        sim.channels(),
        listed.body["watch"].as_array().unwrap().clone()
    );
    let by_module = api.get("/crm/v8/actions/watch?module=Contacts").await;
    assert_eq!(by_module.body["watch"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.get("/crm/v8/actions/watch?channel_id=5").await.status,
        204
    );

    // Validation.
    let long_token = "t".repeat(51);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"events": ["Leads.all"], "notify_url": "https://x.io"}),
            "MANDATORY_NOT_FOUND",
            "channel_id",
        ),
        (
            json!({"channel_id": 1, "notify_url": "https://x.io"}),
            "MANDATORY_NOT_FOUND",
            "events",
        ),
        (
            json!({"channel_id": 1, "events": ["Leads.all"]}),
            "MANDATORY_NOT_FOUND",
            "notify_url",
        ),
        (
            json!({"channel_id": "abc", "events": ["Leads.all"], "notify_url": "https://x.io"}),
            "INVALID_DATA",
            "channel_id",
        ),
        (
            json!({"channel_id": 1, "events": ["Leads.merge"], "notify_url": "https://x.io"}),
            "INVALID_DATA",
            "events",
        ),
        (
            json!({"channel_id": 1, "events": ["Accounts.all"], "notify_url": "https://x.io"}),
            "INVALID_DATA",
            "events",
        ),
        (
            json!({"channel_id": 1, "events": ["Leads.all"], "notify_url": "x.io"}),
            "INVALID_DATA",
            "notify_url",
        ),
        (
            json!({"channel_id": 1, "events": ["Leads.all"], "notify_url": "https://x.io", "token": long_token}),
            "INVALID_DATA",
            "token",
        ),
        (
            json!({"channel_id": 1, "events": ["Leads.all"], "notify_url": "https://x.io", "channel_expiry": "2030-01-01T10:00:00.000+00:00"}),
            "INVALID_DATA",
            "channel_expiry",
        ),
        (
            json!({"channel_id": 1, "events": ["Leads.all"], "notify_url": "https://x.io", "channel_expiry": "2020-01-01T10:00:00+00:00"}),
            "INVALID_DATA",
            "channel_expiry",
        ),
        (
            json!({"channel_id": 1, "events": ["Leads.all"], "notify_url": "https://x.io", "channel_expiry": "tomorrow"}),
            "INVALID_DATA",
            "channel_expiry",
        ),
        (
            json!({"channel_id": 1, "events": ["Deals.all"], "notify_url": "https://x.io", "notification_condition": [{"type": "field_selection", "module": {"api_name": "Deals"}, "field_selection": {"field": {"api_name": "Nope"}}}]}),
            "INVALID_DATA",
            "api_name",
        ),
    ];
    for (item, code, api_name) in cases {
        let answer = api
            .post("/crm/v8/actions/watch", json!({"watch": [item.clone()]}))
            .await;
        assert_eq!(answer.status, 400, "{item}");
        let error = &answer.body["watch"][0];
        assert_eq!(error["code"], code, "{item}");
        assert_eq!(error["details"]["api_name"], api_name, "{item}");
        assert!(
            error["details"]["json_path"]
                .as_str()
                .unwrap()
                .starts_with("$.watch[0]")
        );
    }
    // A token of 50 characters is fine.
    let ok = watch(
        &api,
        30003,
        &["Deals.edit"],
        "https://x.io",
        json!({"token": "t".repeat(50)}),
    )
    .await;
    assert_eq!(ok.status, 201);
    // An expiry more than a week ahead falls back to one hour (docs); none: one hour too.
    let far = watch(
        &api,
        40004,
        &["Deals.edit"],
        "https://x.io",
        json!({"channel_expiry": in_hours(24 * 8)}),
    )
    .await;
    let far_expiry = far.body["watch"][0]["details"]["events"][0]["channel_expiry"]
        .as_str()
        .unwrap();
    let far_expiry = chrono::DateTime::parse_from_rfc3339(far_expiry).unwrap();
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(
        (far_expiry.with_timezone(&chrono::Utc) - in_an_hour)
            .num_seconds()
            .abs()
            < 60
    );
    let almost_a_week = in_hours(24 * 7 - 1);
    let week = watch(
        &api,
        40005,
        &["Deals.edit"],
        "https://x.io",
        json!({"channel_expiry": almost_a_week}),
    )
    .await;
    assert_eq!(
        week.body["watch"][0]["details"]["events"][0]["channel_expiry"],
        almost_a_week.as_str()
    );

    // PUT replaces, PATCH updates parts.
    let replaced = api
        .put(
            "/crm/v8/actions/watch",
            json!({"watch": [{"channel_id": "20002", "events": ["Deals.create"], "notify_url": "https://other.example/h", "channel_expiry": in_hours(48)}]}),
        )
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(
        replaced.body["watch"][0]["message"],
        "Successfully updated the subscribe details"
    );
    let now = api.get("/crm/v8/actions/watch?channel_id=20002").await;
    let entries = now.body["watch"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["events"], json!(["Deals.create"]));
    assert_eq!(entries[0]["token"], Value::Null);
    assert_eq!(entries[0]["return_affected_field_values"], false);
    let three_days = in_hours(72);
    let patched = api
        .patch(
            "/crm/v8/actions/watch",
            json!({"watch": [{"channel_id": 20002, "channel_expiry": three_days, "events": ["Leads.edit"], "token": "new-token"}]}),
        )
        .await;
    assert_eq!(patched.status, 200);
    let now = api.get("/crm/v8/actions/watch?channel_id=20002").await;
    let entries = now.body["watch"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[0]["channel_expiry"], three_days.as_str());
    assert_eq!(entries[0]["token"], "new-token");
    assert_eq!(entries[0]["notify_url"], "https://other.example/h");
    let removed = api
        .patch(
            "/crm/v8/actions/watch",
            json!({"watch": [{"channel_id": 20002, "events": ["Deals.create"], "_delete_events": true}]}),
        )
        .await;
    assert_eq!(
        removed.body["watch"][0]["message"],
        "Successfully removed the subscribe details"
    );
    let now = api.get("/crm/v8/actions/watch?channel_id=20002").await;
    assert_eq!(now.body["watch"][0]["events"], json!(["Leads.edit"]));
    api.patch(
        "/crm/v8/actions/watch",
        json!({"watch": [{"channel_id": 20002, "events": ["Leads.edit"], "_delete_events": true}]}),
    )
    .await;
    assert_eq!(
        api.get("/crm/v8/actions/watch?channel_id=20002")
            .await
            .status,
        204
    );

    // Unknown channels.
    for method in ["PUT", "PATCH"] {
        let answer = api
            .call(
                method,
                "/crm/v8/actions/watch",
                Some(json!({"watch": [{"channel_id": 99, "events": ["Leads.all"], "notify_url": "https://x.io"}]})),
            )
            .await;
        assert_eq!(answer.status, 400, "{method}");
        assert_eq!(answer.body["watch"][0]["code"], "NOT_SUBSCRIBED");
    }

    // DELETE disables.
    let disabled = api
        .delete("/crm/v8/actions/watch?channel_ids=10000,99")
        .await;
    assert_eq!(disabled.status, 207);
    assert_eq!(
        disabled.body["watch"][0]["message"],
        "Successfully un-subscribed from actions-watch"
    );
    assert_eq!(disabled.body["watch"][1]["code"], "NOT_SUBSCRIBED");
    assert_eq!(
        api.get("/crm/v8/actions/watch?channel_id=10000")
            .await
            .status,
        204
    );
    let missing = api.delete("/crm/v8/actions/watch").await;
    assert_eq!(missing.body["code"], "REQUIRED_PARAM_MISSING");
}

#[tokio::test]
async fn expired_channels_are_collected_and_stop_notifying() {
    let (sim, api) = start().await;
    watch(
        &api,
        1,
        &["Leads.all"],
        "https://hooks.example/a",
        json!({"channel_expiry": in_hours(2)}),
    )
    .await;
    watch(
        &api,
        2,
        &["Leads.all"],
        "https://hooks.example/b",
        json!({}),
    )
    .await;
    insert(&api, "Leads", json!({"Last_Name": "Before"})).await;
    assert_eq!(sim.take_notifications().len(), 2);

    // Channel 2 had the default one hour (and so had the access token).
    sim.advance_clock(Duration::from_secs(3600 + 1));
    let api = authorized(&sim).await;
    assert_eq!(sim.channels().len(), 1);
    insert(&api, "Leads", json!({"Last_Name": "After one hour"})).await;
    let notifications = sim.take_notifications();
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].channel_id, "1");

    sim.advance_clock(Duration::from_secs(3600));
    let api = authorized(&sim).await;
    assert!(sim.channels().is_empty());
    assert_eq!(api.get("/crm/v8/actions/watch").await.status, 204);
    insert(&api, "Leads", json!({"Last_Name": "After two hours"})).await;
    assert!(sim.take_notifications().is_empty());
    // Renewing a collected channel: NOT_SUBSCRIBED, then POST subscribes again.
    let renew = api
        .patch(
            "/crm/v8/actions/watch",
            json!({"watch": [{"channel_id": 1, "channel_expiry": in_hours(5)}]}),
        )
        .await;
    assert_eq!(renew.status, 400);
    assert_eq!(renew.body["watch"][0]["code"], "NOT_SUBSCRIBED");
    let replace = api
        .put(
            "/crm/v8/actions/watch",
            json!({"watch": [{"channel_id": 1, "events": ["Leads.all"], "notify_url": "https://hooks.example/a"}]}),
        )
        .await;
    assert_eq!(replace.body["watch"][0]["code"], "NOT_SUBSCRIBED");
    let again = watch(
        &api,
        1,
        &["Leads.all"],
        "https://hooks.example/a",
        json!({}),
    )
    .await;
    assert_eq!(again.status, 201);
    insert(&api, "Leads", json!({"Last_Name": "Renewed"})).await;
    assert_eq!(sim.take_notifications().len(), 1);
}

// ----- notifications -----------------------------------------------------------------------------

#[tokio::test]
async fn notification_bodies_match_the_fixture_and_batch_per_call() {
    let receiver = Receiver::start(200).await;
    let (sim, api) = start().await;
    watch(
        &api,
        1_000_000_068_001,
        &["Leads.all"],
        &receiver.url(),
        json!({}),
    )
    .await;
    let answer = api
        .post(
            "/crm/v8/Leads",
            json!({"data": [{"Last_Name": "A"}, {"Last_Name": "B"}, {"First_Name": "invalid"}, {"Last_Name": "C"}]}),
        )
        .await;
    let ids: Vec<String> = [0, 1, 3]
        .iter()
        .map(|i| {
            answer.item(*i)["details"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let notifications = sim.take_notifications();
    assert_eq!(notifications.len(), 1, "one call, one notification");
    let n = &notifications[0];
    let fixture: Value = serde_json::from_str(NOTIFICATION_FIXTURE).unwrap();
    assert_eq!(keys(&n.body), keys(&fixture));
    for key in keys(&fixture) {
        assert_eq!(type_name(&n.body[&key]), type_name(&fixture[&key]), "{key}");
    }
    let text = String::from_utf8(n.request.body.clone()).unwrap();
    assert_eq!(key_order(&text), key_order(NOTIFICATION_FIXTURE));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), n.body);
    assert_eq!(n.body["ids"], json!(ids));
    assert_eq!(n.ids, ids);
    assert_eq!(n.body["operation"], "insert");
    assert_eq!(n.body["affected_fields"], json!([]));
    assert_eq!(n.body["module"], "Leads");
    assert_eq!(n.body["channel_id"], "1000000068001");
    assert_eq!(n.channel_id, "1000000068001");
    assert_eq!(n.body["token"], "tok-1000000068001");
    assert_eq!(
        n.body["query_params"],
        json!({"tenant": "t1", "secret": "s3"})
    );
    assert_eq!(
        n.body["resource_uri"],
        format!("{}/crm/v8/Leads", sim.base_url())
    );
    let server_time = n.body["server_time"].as_i64().unwrap();
    assert!((server_time - chrono::Utc::now().timestamp_millis()).abs() < 60_000);
    assert_eq!(n.url, receiver.url());
    assert_eq!(n.request.method, "POST");

    // Updates: affected fields are the changed ones; unchanged values notify nothing.
    api.put(
        "/crm/v8/Leads",
        json!({"data": [
            {"id": ids[0], "Phone": "1", "Last_Name": "A"},
            {"id": ids[1], "Email": "b@example.com"},
        ]}),
    )
    .await;
    api.put(
        "/crm/v8/Leads",
        json!({"data": [{"id": ids[0], "Phone": "1"}]}),
    )
    .await;
    let updates = sim.take_notifications();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].body["operation"], "update");
    assert_eq!(updates[0].body["ids"], json!([ids[0], ids[1]]));
    assert_eq!(
        updates[0].body["affected_fields"],
        json!(["Phone", "Email"])
    );
    assert!(updates[0].body.get("affected_values").is_none());

    // Deletes.
    api.delete(&format!("/crm/v8/Leads/{}", ids[2])).await;
    let deletes = sim.take_notifications();
    assert_eq!(deletes[0].body["operation"], "delete");
    assert_eq!(deletes[0].body["ids"], json!([ids[2]]));

    // return_affected_field_values adds the new values of updates.
    watch(
        &api,
        2,
        &["Deals.edit", "Deals.create"],
        &receiver.url(),
        json!({"return_affected_field_values": true, "token": null}),
    )
    .await;
    let deal = insert(&api, "Deals", deal("D", "Qualification")).await;
    sim.set_deal_stage_ui(&deal, "Needs Analysis").unwrap();
    sim.set_deal_stage_ui(&deal, "Needs Analysis").unwrap();
    let deal_notes = sim.take_notifications();
    assert_eq!(deal_notes.len(), 2);
    assert_eq!(deal_notes[0].body["operation"], "insert");
    assert_eq!(deal_notes[0].body["affected_values"], json!([]));
    assert_eq!(deal_notes[0].body["token"], Value::Null);
    assert_eq!(deal_notes[1].body["affected_fields"], json!(["Stage"]));
    assert_eq!(
        deal_notes[1].body["affected_values"],
        json!([{"record_id": deal, "values": {"Stage": "Needs Analysis"}}])
    );
    let text = String::from_utf8(deal_notes[1].request.body.clone()).unwrap();
    assert_eq!(key_order(&text).last().unwrap(), "affected_values");

    // Delivery: POSTed as is.
    insert(&api, "Leads", json!({"Last_Name": "D"})).await;
    let delivered = sim.deliver().await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].1.as_ref().unwrap().0, 200);
    let received = receiver.requests();
    let last = received.last().unwrap();
    assert_eq!(last.path, "/hooks/zoho");
    assert_eq!(last.query.as_deref(), Some("tenant=t1&secret=s3"));
    assert_eq!(last.header("content-type"), Some("application/json"));
    assert_eq!(last.body, delivered[0].0.request.body);
    assert!(sim.take_notifications().is_empty());
    // send() does not consume anything and can resend.
    assert_eq!(sim.send(&delivered[0].0).await.unwrap().0, 200);
    assert_eq!(receiver.requests().len(), received.len() + 1);
    receiver.status.store(500, Ordering::SeqCst);
    insert(&api, "Leads", json!({"Last_Name": "E"})).await;
    let failed = sim.deliver().await;
    assert_eq!(failed[0].1.as_ref().unwrap().0, 500);
    assert!(sim.take_notifications().is_empty(), "no retries");
    // An unreachable URL is an error.
    let mut unreachable = failed[0].0.clone();
    unreachable.url = "http://127.0.0.1:9/".to_owned();
    assert!(sim.send(&unreachable).await.is_err());
}

#[tokio::test]
async fn notification_conditions_filter_updates_by_field() {
    let (sim, api) = start().await;
    // The sample's condition: Stage, or (Amount and Lead_Source).
    let answer = api
        .post("/crm/v8/actions/watch", sample_watch_request(&in_hours(5)))
        .await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    assert_eq!(
        answer.body["watch"][0]["details"]["events"][0]["notification_condition"][0]["type"],
        "field_selection"
    );
    let deal = insert(&api, "Deals", deal("Conditional", "Qualification")).await;
    assert_eq!(sim.take_notifications().len(), 1, "inserts always notify");
    sim.update_record_ui("Deals", &deal, &[("Amount", json!(10))])
        .unwrap();
    assert!(
        sim.take_notifications().is_empty(),
        "Amount alone does not match"
    );
    sim.update_record_ui(
        "Deals",
        &deal,
        &[("Amount", json!(20)), ("Lead_Source", json!("Partner"))],
    )
    .unwrap();
    assert_eq!(sim.take_notifications().len(), 1, "Amount and Lead_Source");
    sim.set_deal_stage_ui(&deal, "Closed Won").unwrap();
    let stage = sim.take_notifications();
    assert_eq!(stage[0].body["affected_fields"], json!(["Stage"]));
    assert_eq!(stage[0].body["channel_id"], "10000");
    assert_eq!(stage[0].body["token"], "deals.all.notif");
    // Too many fields are refused.
    let fields: Vec<Value> = (0..11)
        .map(|_| json!({"field": {"api_name": "Stage"}}))
        .collect();
    let refused = api
        .post(
            "/crm/v8/actions/watch",
            json!({"watch": [{"channel_id": 5, "events": ["Deals.edit"], "notify_url": "https://x.io",
                "notification_condition": [{"type": "field_selection", "module": {"api_name": "Deals"},
                    "field_selection": {"group_operator": "or", "group": [{"group_operator": "or", "group": fields}]}}]}]}),
        )
        .await;
    assert_eq!(refused.status, 400);
}

// ----- limits ------------------------------------------------------------------------------------

#[tokio::test]
async fn credits_are_counted_reported_and_exhausted() {
    let mut opts = options();
    opts.daily_credits = 20;
    let (sim, api) = start_with(opts).await;
    let first = api.get("/crm/v8/Leads?fields=Email").await;
    assert_eq!(sim.credits_used(), 1);
    assert!(first.header("X-API-CREDITS-REMAINING").is_none());
    // 25 records: 3 credits.
    let many: Vec<Value> = (0..25)
        .map(|i| json!({"Last_Name": format!("L{i}")}))
        .collect();
    api.post("/crm/v8/Leads", json!({ "data": many })).await;
    assert_eq!(sim.credits_used(), 4);
    let lead = sim.records("Leads")[0]["id"].as_str().unwrap().to_owned();
    api.post(
        &format!("/crm/v8/Leads/{lead}/actions/convert"),
        json!({"data": [{}]}),
    )
    .await;
    assert_eq!(sim.credits_used(), 9);
    // More than half used: the header appears.
    let answer = api.get("/crm/v8/Leads?fields=Email").await;
    assert_eq!(sim.credits_used(), 10);
    assert!(answer.header("X-API-CREDITS-REMAINING").is_none());
    let answer = api.get("/crm/v8/Leads?fields=Email").await;
    assert_eq!(answer.header("X-API-CREDITS-REMAINING"), Some("9"));
    for _ in 0..9 {
        assert_eq!(api.get("/crm/v8/Leads?fields=Email").await.status, 200);
    }
    let refused = api.get("/crm/v8/Leads?fields=Email").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["code"], "LIMIT_REACHED");
    assert_eq!(refused.header("X-API-CREDITS-REMAINING"), Some("0"));
    assert_eq!(sim.rate_limited(), 1);
    assert_eq!(sim.credits_used(), 20);
    // The token endpoint still works; the window rolls after 24 hours.
    assert_eq!(refresh(&sim, REFRESH).await.0, 200);
    sim.advance_clock(Duration::from_secs(24 * 3600));
    let api = authorized(&sim).await;
    assert_eq!(api.get("/crm/v8/Leads?fields=Email").await.status, 200);
    assert_eq!(sim.credits_used(), 1);
}

#[tokio::test]
async fn more_requests_in_flight_than_allowed_get_429() {
    let (sim, api) = start().await;
    sim.simulator().inject(
        FaultRule::new(Fault::Latency(Duration::from_millis(500)))
            .times(12)
            .on("GET", "/crm/v8/Leads"),
    );
    let api = Arc::new(api);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let api = Arc::clone(&api);
        tasks.spawn(async move { api.get("/crm/v8/Leads?fields=Email").await.status });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses.sort_unstable();
    // 12 in flight: the first two handled see 12 and 11 > 10.
    assert_eq!(
        statuses,
        [204; 10]
            .iter()
            .chain(&[429, 429])
            .copied()
            .collect::<Vec<_>>()
    );
    assert_eq!(sim.rate_limited(), 2);
    // Once they are done, calls pass again.
    assert_eq!(api.get("/crm/v8/Leads?fields=Email").await.status, 204);
    // A 429 body names the cause.
    let mut opts = options();
    opts.max_concurrency = 0;
    let (_sim0, api0) = start_with(opts).await;
    let refused = api0.get("/crm/v8/Leads?fields=Email").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["code"], "TOO_MANY_REQUESTS");
    assert_eq!(refused.body["message"], "concurrency limit exceeded");
}

#[tokio::test]
async fn fail_next_injects_zoho_errors() {
    let (sim, api) = start().await;
    sim.fail_next(500, 1);
    sim.fail_next(429, 2);
    sim.fail_next(401, 1);
    let a = api.get("/crm/v8/Leads?fields=Email").await;
    assert_eq!(a.status, 500);
    assert_eq!(a.body["code"], "INTERNAL_ERROR");
    for _ in 0..2 {
        let b = api.get("/crm/v8/Leads?fields=Email").await;
        assert_eq!(b.status, 429);
        assert_eq!(b.body["code"], "TOO_MANY_REQUESTS");
    }
    assert_eq!(
        api.get("/crm/v8/Leads?fields=Email").await.body["code"],
        "INVALID_TOKEN"
    );
    assert_eq!(sim.rate_limited(), 2);
    // The token endpoint is not failed.
    sim.fail_next(503, 1);
    assert_eq!(refresh(&sim, REFRESH).await.0, 200);
    assert_eq!(api.get("/crm/v8/Leads?fields=Email").await.status, 503);
    assert_eq!(api.get("/crm/v8/Leads?fields=Email").await.status, 204);
}

#[tokio::test]
async fn the_simulator_is_bounded_and_can_be_kept_alone() {
    let mut opts = options();
    opts.max_requests = 3;
    let sim = ZohoSim::start(opts).await.unwrap();
    assert_eq!(sim.options().max_requests, 3);
    let (_, token) = refresh(&sim, REFRESH).await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    let base = sim.base_url();
    let simulator = sim.into_simulator();
    let http = reqwest::Client::new();
    let call = || {
        http.get(format!("{base}/crm/v8/Leads?fields=Email"))
            .header("Authorization", format!("Zoho-oauthtoken {token}"))
            .send()
    };
    assert_eq!(call().await.unwrap().status().as_u16(), 204);
    assert_eq!(call().await.unwrap().status().as_u16(), 204);
    assert_eq!(call().await.unwrap().status().as_u16(), 503);
    assert_eq!(simulator.served(), 3);
    let mut bad = options();
    bad.referral_code_field = " ".to_owned();
    assert!(ZohoSim::start(bad).await.is_err());
}

// ----- the whole session against the descriptions ------------------------------------------------

/// A connector-like session over every simulated endpoint: every response is checked in
/// [`Api::call`], every request here.
#[tokio::test]
async fn scripted_session_validates_against_the_openapi_descriptions() {
    let (sim, api) = start().await;
    let layout = sim.layout_id("Deals").unwrap();
    api.get("/crm/v8/settings/fields?module=Leads").await;
    api.get("/crm/v8/settings/fields?module=Contacts").await;
    api.get("/crm/v8/settings/fields?module=Deals&type=all")
        .await;
    api.get(&format!("/crm/v8/settings/pipeline?layout_id={layout}"))
        .await;

    // Channels.
    assert_eq!(
        api.post("/crm/v8/actions/watch", sample_watch_request(&in_hours(12)))
            .await
            .status,
        201
    );
    watch(
        &api,
        20_002,
        &["Leads.all", "Contacts.create"],
        "https://hooks.example/zoho?tenant=t1",
        json!({"channel_expiry": in_hours(12), "return_affected_field_values": true, "notify_on_related_action": false}),
    )
    .await;
    api.get("/crm/v8/actions/watch").await;
    api.get("/crm/v8/actions/watch?channel_id=20002&module=Leads&page=1&per_page=10")
        .await;
    api.patch(
        "/crm/v8/actions/watch",
        json!({"watch": [{"channel_id": "20002", "channel_expiry": in_hours(24)}]}),
    )
    .await;
    api.put(
        "/crm/v8/actions/watch",
        json!({"watch": [{"channel_id": 20002, "events": ["Leads.all", "Contacts.all"], "notify_url": "https://hooks.example/zoho", "token": "t"}]}),
    )
    .await;
    // Errors in the notifications' shapes.
    let invalid = api
        .post(
            "/crm/v8/actions/watch",
            json!({"watch": [{"channel_id": 3, "events": ["Leads.all"], "notify_url": "https://x.io", "token": "t".repeat(60)}]}),
        )
        .await;
    assert_eq!(invalid.status, 400);
    let missing = api
        .post(
            "/crm/v8/actions/watch",
            json!({"watch": [{"channel_id": 3, "events": ["Leads.all"]}]}),
        )
        .await;
    assert_eq!(missing.status, 400);
    let unknown = api
        .patch(
            "/crm/v8/actions/watch",
            json!({"watch": [{"channel_id": 404, "channel_expiry": in_hours(2)}]}),
        )
        .await;
    assert_eq!(unknown.status, 400);

    // Records.
    let leads = api
        .post(
            "/crm/v8/Leads",
            json!({"data": [
                {"Last_Name": "Ann", "First_Name": "Ann", "Email": "ann@example.com", "Referral_Code": "REF-ANN", "Layout": {"id": sim.layout_id("Leads").unwrap()}},
                {"Last_Name": "Bob", "Email": "bob@example.com"},
            ], "trigger": ["workflow"]}),
        )
        .await;
    assert_eq!(leads.status, 201);
    let ann = leads.item(0)["details"]["id"].as_str().unwrap().to_owned();
    let mixed = api
        .post(
            "/crm/v8/Leads",
            json!({"data": [{"Last_Name": "Cat"}, {"Email": "x@example.com"}, {"Last_Name": "Bad", "Email": "bad"}]}),
        )
        .await;
    assert_eq!(mixed.status, 207);
    api.post(
        "/crm/v8/Leads",
        json!({"data": [{"Last_Name": "Dup", "Email": "ann@example.com"}], "duplicate_check_fields": ["Email"]}),
    )
    .await;
    api.post(
        "/crm/v8/Leads/upsert",
        json!({"data": [{"Last_Name": "Ann", "Email": "ann@example.com", "Phone": "555"}, {"Last_Name": "Eve", "Email": "eve@example.com"}], "duplicate_check_fields": ["Email"]}),
    )
    .await;
    api.put(
        "/crm/v8/Leads",
        json!({"data": [{"id": ann, "Lead_Status": "Contacted"}, {"id": "1", "Phone": "1"}]}),
    )
    .await;
    api.put(
        &format!("/crm/v8/Leads/{ann}"),
        json!({"data": [{"Description": "Referred by Bob"}]}),
    )
    .await;
    api.get("/crm/v8/Leads?fields=Last_Name,Email,Referral_Code&per_page=2&page=1&converted=false")
        .await;
    api.get(&format!("/crm/v8/Leads?fields=Email&ids={ann}"))
        .await;
    api.get(&format!("/crm/v8/Leads/{ann}")).await;
    api.get(&format!("/crm/v8/Leads/{ann}?fields=Email,Referral_Code"))
        .await;
    api.get("/crm/v8/Leads/search?criteria=((Email:equals:ann@example.com)and(Referral_Code:equals:REF))&fields=Email")
        .await;
    api.get("/crm/v8/Leads/search?email=bob@example.com").await;
    api.get("/crm/v8/Leads/search?word=nobody").await;
    api.get("/crm/v8/Leads/search?criteria=(Email:wrong:x)")
        .await;
    api.get("/crm/v8/Leads/search").await;
    api.get("/crm/v8/Leads").await;
    api.get("/crm/v8/Leads/424242").await;
    let contact = insert(
        &api,
        "Contacts",
        json!({"Last_Name": "Zed", "Email": "zed@example.com"}),
    )
    .await;
    api.post(
        "/crm/v8/Deals",
        json!({"data": [
            {"Deal_Name": "Zed's", "Stage": "Qualification", "Pipeline": "Standard (Standard)", "Contact_Name": {"id": contact}, "Amount": 99.5, "Closing_Date": "2026-06-30", "Referral_Code": "REF-ZED"},
            {"Deal_Name": "Bad", "Stage": "Nope"},
            {"Deal_Name": "Dup", "Stage": "Qualification", "Referral_Code": "REF-ZED"},
        ]}),
    )
    .await;
    api.post(
        "/crm/v8/Deals/upsert",
        json!({"data": [{"Deal_Name": "Zed's", "Stage": "Needs Analysis", "Referral_Code": "REF-ZED"}], "duplicate_check_fields": ["Referral_Code"]}),
    )
    .await;
    api.get("/crm/v8/Deals?fields=Deal_Name,Stage,Pipeline,Contact_Name,Referral_Code,Amount")
        .await;
    api.get("/crm/v8/Deals/search?criteria=(Referral_Code:equals:REF-ZED)")
        .await;

    // Conversion.
    let converted = api
        .post(
            &format!("/crm/v8/Leads/{ann}/actions/convert"),
            json!({"data": [{"overwrite": true, "notify_lead_owner": true, "notify_new_entity_owner": false,
                "Deals": {"Deal_Name": "Ann's deal", "Closing_Date": "2026-03-01", "Stage": "Qualification",
                          "Pipeline": "Standard (Standard)", "Amount": 1000}}]}),
        )
        .await;
    assert_eq!(converted.status, 200);
    let bob = sim.find_by_email("Leads", "bob@example.com")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(
        &format!("/crm/v8/Leads/{bob}/actions/convert"),
        json!({"data": [{}]}),
    )
    .await;
    let twice = api
        .post(
            &format!("/crm/v8/Leads/{ann}/actions/convert"),
            json!({"data": [{}]}),
        )
        .await;
    assert_eq!(twice.status, 400);
    let mandatory = api
        .post(
            &format!(
                "/crm/v8/Leads/{}/actions/convert",
                sim.find_by_email("Leads", "eve@example.com")[0]["id"]
                    .as_str()
                    .unwrap()
            ),
            json!({"data": [{"Deals": {"Deal_Name": "x"}}]}),
        )
        .await;
    assert_eq!(mandatory.status, 400);
    api.post("/crm/v8/Leads/1/actions/convert", json!({"data": [{}]}))
        .await;
    api.get("/crm/v8/Leads?fields=Email&converted=both").await;
    api.put(
        &format!("/crm/v8/Leads/{ann}"),
        json!({"data": [{"Phone": "1"}]}),
    )
    .await;

    // Deletes, errors, limits.
    api.delete(&format!("/crm/v8/Contacts?ids={contact},5"))
        .await;
    api.delete(&format!(
        "/crm/v8/Deals/{}",
        sim.records("Deals")[0]["id"].as_str().unwrap()
    ))
    .await;
    api.get("/crm/v8/settings/fields?module=Nope").await;
    api.get("/crm/v8/settings/pipeline").await;
    api.get("/crm/v8/settings/pipeline?layout_id=1").await;
    api.post("/crm/v8/Accounts", json!({"data": [{"Account_Name": "x"}]}))
        .await;
    sim.fail_next(429, 1);
    assert_eq!(api.get("/crm/v8/Leads?fields=Email").await.status, 429);
    sim.fail_next(500, 1);
    assert_eq!(api.get("/crm/v8/Leads?fields=Email").await.status, 500);
    let no_token = Api {
        http: reqwest::Client::new(),
        base: api.base.clone(),
        token: None,
    };
    assert_eq!(no_token.get("/crm/v8/Leads?fields=Email").await.status, 401);
    api.delete("/crm/v8/actions/watch?channel_ids=10000,20002")
        .await;
    assert_eq!(api.get("/crm/v8/actions/watch").await.status, 204);

    // The session produced notifications of every operation.
    let operations: Vec<String> = sim
        .take_notifications()
        .iter()
        .map(|n| n.operation.clone())
        .collect();
    for op in ["insert", "update", "delete"] {
        assert!(operations.iter().any(|o| o == op), "{op}: {operations:?}");
    }

    // The one request the descriptions reject on purpose is left out: the pipelines call
    // without its mandatory `layout_id`.
    let all = sim.simulator().requests();
    let kept: Vec<RecordedRequest> = all
        .iter()
        .filter(|r| !(r.path == "/crm/v8/settings/pipeline" && r.query.is_none()))
        .cloned()
        .collect();
    assert_eq!(all.len() - kept.len(), 1);
    let checked = assert_requests_valid(&kept);
    assert!(checked >= 50, "{checked}");
    // ... which the description does reject.
    let rejected: Vec<&RecordedRequest> = all.iter().filter(|r| !kept.contains(r)).collect();
    assert!(
        spec_for("GET", "/crm/v8/settings/pipeline")
            .unwrap()
            .validate_recorded(rejected[0])
            .is_err()
    );
}

#[test]
fn the_spec_exceptions_are_narrow() {
    // Only the documented places are rewritten.
    let upsert = json!({"data": [{"duplicate_field": null, "code": "SUCCESS"}, {"duplicate_field": "Email"}]});
    assert_eq!(
        normalize("/crm/v8/Leads/upsert", &upsert),
        json!({"data": [{"code": "SUCCESS"}, {"duplicate_field": "Email"}]})
    );
    let convert =
        json!({"data": [{"details": {"Accounts": null, "Deals": null, "Contacts": {"id": "1"}}}]});
    assert_eq!(
        normalize("/crm/v8/Leads/1/actions/convert", &convert)["data"][0]["details"],
        json!({"Accounts": {}, "Deals": {}, "Contacts": {"id": "1"}})
    );
    assert_eq!(
        normalize("/crm/v8/Leads", &convert),
        convert,
        "conversion details only on the conversion path"
    );
    let watch = json!({"watch": [{"channel_id": "1"}, {"channel_id": 2}, {"channel_id": null}]});
    assert_eq!(
        normalize("/crm/v8/actions/watch", &watch),
        json!({"watch": [{"channel_id": {}}, {"channel_id": {}}, {"channel_id": null}]})
    );
    assert_eq!(normalize("/crm/v8/Leads", &watch), watch);
    let fields = json!({"fields": [{"tooltip": null, "created_time": null, "lookup": null}]});
    assert_eq!(
        normalize("/crm/v8/settings/fields", &fields),
        json!({"fields": [{"tooltip": {"name": "", "value": ""}, "created_time": null, "lookup": null}]})
    );

    // The validators are active: without the rewrite the descriptions reject these values.
    let spec = spec_for("POST", "/crm/v8/Leads/1/actions/convert").unwrap();
    let raw = json!({"data": [{"code": "SUCCESS", "message": "The record has been converted successfully", "status": "success",
        "details": {"Contacts": {"id": "1"}, "Deals": null, "Accounts": null}}]});
    assert!(
        spec.validate_response("POST", "/crm/v8/Leads/1/actions/convert", 200, &raw)
            .is_err()
    );
    assert!(
        spec.validate_response(
            "POST",
            "/crm/v8/Leads/1/actions/convert",
            200,
            &normalize("/crm/v8/Leads/1/actions/convert", &raw)
        )
        .is_ok()
    );
    let item = json!({"code": "SUCCESS", "status": "success", "message": "record added", "action": "insert", "duplicate_field": null, "details": {"id": "1"}});
    assert!(!item_errors("/record-item", &item).is_empty());
    let bad_message =
        json!({"code": "INVALID_DATA", "status": "error", "message": "made up", "details": {}});
    assert!(!item_errors("/record-item", &bad_message).is_empty());
    assert!(!item_errors("/record-error", &bad_message).is_empty());
    assert!(item_errors("/generic-error", &bad_message).is_empty());
    assert!(!item_errors("/generic-error", &json!({"code": "X"})).is_empty());
    // An undeclared status falls back only to schemas the operation declares.
    assert!(
        !response_errors(
            "POST",
            "/crm/v8/actions/watch",
            400,
            &json!({"watch": [{"code": "SUCCESS"}]})
        )
        .is_empty()
    );
    assert!(response_errors("GET", "/crm/v8/Leads", 204, &Value::Null).is_empty());
    assert!(!response_errors("GET", "/crm/v8/Leads", 204, &json!({})).is_empty());
    assert!(is_records_path("/crm/v8/Leads/upsert"));
    assert!(!is_records_path("/crm/v8/settings/fields"));
    assert!(!is_records_path("/crm/v8/Leads/1/actions/convert"));
}

#[test]
fn copied_descriptions_load_with_their_siblings() {
    for (spec, file) in specs().iter().zip(SPEC_FILES) {
        let unresolved = spec.unresolved_refs();
        // Only files deliberately not copied (users, tags, layouts, ...) stay unresolved.
        assert!(
            unresolved.iter().all(|r| !r.contains("record.json#")
                && !r.contains("common.json#")
                && !r.contains("modules.json#")),
            "{file}: {unresolved:?}"
        );
    }
    assert_eq!(
        spec_for("GET", "/crm/v8/actions/watch")
            .unwrap()
            .operation_for("GET", "/crm/v8/actions/watch")
            .as_deref(),
        Some("/crm/v8/actions/watch")
    );
    assert_eq!(
        spec_for("GET", "/crm/v8/Leads/search")
            .unwrap()
            .operation_for("GET", "/crm/v8/Leads/search")
            .as_deref(),
        Some("/crm/v8/{module_api_name}/search")
    );
}
