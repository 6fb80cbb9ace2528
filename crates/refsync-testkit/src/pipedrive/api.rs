//! The HTTP side: authentication, routing, request validation and the response envelopes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::model::{Channel, Deal, Hook, Lead, Person, State, custom_field, is_field_key, v1_time};
use super::ops::{self, merge_custom};
use super::{FieldEntity, Inner, MAX_WEBHOOKS, PipedriveSimOptions, RATE_LIMIT_BURST};
use crate::sim::{RecordedRequest, SimHandler, SimResponse};

/// The rolling window of the burst limits.
const WINDOW: Duration = Duration::from_secs(2);

/// Largest `limit` of list endpoints.
const MAX_LIMIT: usize = 500;

/// The simulator's [`SimHandler`].
pub(super) struct Handler {
    inner: Arc<Inner>,
}

impl Handler {
    pub(super) fn new(inner: Arc<Inner>) -> Handler {
        Handler { inner }
    }
}

impl SimHandler for Handler {
    fn handle(&self, req: &RecordedRequest) -> SimResponse {
        let now = Instant::now();
        let (used, reset) = {
            let mut state = self.inner.lock();
            prune(&mut state.recent_requests, now);
            state.recent_requests.push_back(now);
            (
                state.recent_requests.len(),
                window_reset(state.recent_requests.front(), now),
            )
        };
        let response = if authorized(req, &self.inner.opts.api_token) {
            route(&self.inner, req)
        } else {
            error(401, "unauthorized access")
        };
        if !self.inner.opts.rate_limit_headers
            || response
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("x-ratelimit-limit"))
        {
            return response;
        }
        rate_headers(response, RATE_LIMIT_BURST, used, reset)
    }
}

fn prune(times: &mut std::collections::VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        times.pop_front();
    }
}

/// Seconds until the oldest request in the window leaves it.
fn window_reset(oldest: Option<&Instant>, now: Instant) -> u64 {
    let left = oldest.map_or(WINDOW, |t| WINDOW.saturating_sub(now.duration_since(*t)));
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

fn rate_headers(response: SimResponse, limit: usize, used: usize, reset: u64) -> SimResponse {
    response
        .with_header("x-ratelimit-limit", limit.to_string())
        .with_header(
            "x-ratelimit-remaining",
            limit.saturating_sub(used).to_string(),
        )
        .with_header("x-ratelimit-reset", reset.max(1).to_string())
}

fn authorized(req: &RecordedRequest, token: &str) -> bool {
    if let Some(given) = req.header("x-api-token") {
        return given == token;
    }
    req.header("authorization")
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .is_some_and(|given| given == token)
}

// ----- envelopes -------------------------------------------------------------------------------

fn error(status: u16, message: &str) -> SimResponse {
    SimResponse::json(
        status,
        &json!({"success": false, "error": message, "errorCode": status}),
    )
}

fn not_found_route() -> SimResponse {
    SimResponse::json(404, &json!({"success": false, "error": "Not found"}))
}

/// A `400`/`404` as Pipedrive sends them for a known route.
fn failure(status: u16, message: &str) -> SimResponse {
    SimResponse::json(
        status,
        &json!({
            "success": false,
            "error": message,
            "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API.",
            "data": null,
            "additional_data": null,
            "errorCode": status,
        }),
    )
}

fn bad_request(message: impl AsRef<str>) -> SimResponse {
    failure(400, message.as_ref())
}

fn ok(status: u16, data: Value, additional_data: Value) -> SimResponse {
    let mut body = Map::new();
    body.insert("success".to_owned(), Value::Bool(true));
    body.insert("data".to_owned(), data);
    body.insert("additional_data".to_owned(), additional_data);
    SimResponse::json(status, &Value::Object(body))
}

fn v1_pagination(start: usize, limit: usize, total: usize) -> Value {
    let more = start + limit < total;
    let mut pagination = json!({
        "start": start,
        "limit": limit,
        "more_items_in_collection": more,
    });
    if more {
        pagination["next_start"] = json!(start + limit);
    }
    json!({ "pagination": pagination })
}

fn encode_cursor(offset: usize) -> String {
    format!("c{:08x}", offset ^ 0x5eed)
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let hex = cursor.strip_prefix('c')?;
    usize::from_str_radix(hex, 16).ok().map(|n| n ^ 0x5eed)
}

// ----- routing ---------------------------------------------------------------------------------

fn route(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let path = req.path.trim_end_matches('/');
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method.as_str();
    match (method, segments.as_slice()) {
        ("GET", ["v1", "users", "me"]) => users_me(inner),
        ("GET", ["v1", "dealFields"]) => fields(inner, req, FieldEntity::Deal),
        ("GET", ["v1", "personFields"]) => fields(inner, req, FieldEntity::Person),
        ("GET", ["v1", "leads"]) => list_leads(inner, req),
        ("POST", ["v1", "leads"]) => create_lead(inner, req),
        ("GET", ["v1", "leads", id]) => get_lead(inner, id),
        ("PATCH", ["v1", "leads", id]) => patch_lead(inner, req, id),
        ("DELETE", ["v1", "leads", id]) => delete_lead(inner, id),
        ("GET", ["v1", "webhooks"]) => list_webhooks(inner),
        ("POST", ["v1", "webhooks"]) => create_webhook(inner, req),
        ("DELETE", ["v1", "webhooks", id]) => delete_webhook(inner, id),
        ("GET", ["v1", "pipelines"]) => pipelines(inner, 1),
        ("GET", ["v1", "stages"]) => stages(inner, req, 1),
        ("GET", ["api", "v2", "persons", "search"]) => search_persons(inner, req),
        ("POST", ["api", "v2", "persons"]) => create_person(inner, req),
        ("GET", ["api", "v2", "persons", id]) => get_person(inner, id),
        ("PATCH", ["api", "v2", "persons", id]) => patch_person(inner, req, id),
        ("GET", ["api", "v2", "deals"]) => list_deals(inner, req),
        ("POST", ["api", "v2", "deals"]) => create_deal(inner, req),
        ("GET", ["api", "v2", "deals", id]) => get_deal(inner, id),
        ("PATCH", ["api", "v2", "deals", id]) => patch_deal(inner, req, id),
        ("DELETE", ["api", "v2", "deals", id]) => delete_deal(inner, id),
        ("GET", ["api", "v2", "pipelines"]) => pipelines(inner, 2),
        ("GET", ["api", "v2", "stages"]) => stages(inner, req, 2),
        _ => not_found_route(),
    }
}

// ----- input helpers ---------------------------------------------------------------------------

fn json_object(req: &RecordedRequest) -> Result<Map<String, Value>, SimResponse> {
    match req.json() {
        Some(Value::Object(map)) => Ok(map),
        _ => Err(bad_request("The request body must be a JSON object")),
    }
}

fn opt_u64(body: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a positive integer")),
    }
}

fn opt_str(body: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("`{key}` must be a boolean")),
    }
}

/// `visible_to`: `"1"|"3"|"5"|"7"` (v1 strings) or the same as integers (v2).
fn opt_visible(body: &Map<String, Value>) -> Result<Option<String>, String> {
    let text = match body.get("visible_to") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err("`visible_to` must be 1, 3, 5 or 7".to_owned()),
    };
    if matches!(text.as_str(), "1" | "3" | "5" | "7") {
        Ok(Some(text))
    } else {
        Err("`visible_to` must be 1, 3, 5 or 7".to_owned())
    }
}

fn opt_date(body: &Map<String, Value>, key: &str) -> Result<Option<Option<String>>, String> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {
            Ok(Some(Some(s.clone())))
        }
        Some(_) => Err(format!("`{key}` must be a date (YYYY-MM-DD)")),
    }
}

fn u64_list(body: &Map<String, Value>, key: &str) -> Result<Option<Vec<u64>>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| format!("`{key}` must be an array of integers"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("`{key}` must be an array of integers")),
    }
}

/// A custom field value; `varchar` values are at most 255 characters long.
fn custom_value(key: &str, value: &Value) -> Result<Value, String> {
    match value {
        Value::String(s) if s.chars().count() > 255 => Err(format!(
            "custom field `{key}` is longer than 255 characters"
        )),
        _ => Ok(value.clone()),
    }
}

/// A v2 `custom_fields` object: every key must be a custom field of `entity`.
fn custom_fields_object(
    body: &Map<String, Value>,
    opts: &PipedriveSimOptions,
    entity: FieldEntity,
) -> Result<Option<BTreeMap<String, Value>>, String> {
    match body.get("custom_fields") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            let mut out = BTreeMap::new();
            for (key, value) in map {
                if custom_field(&opts.custom_fields, entity, key).is_none() {
                    return Err(format!("Unknown custom field key `{key}`"));
                }
                out.insert(key.clone(), custom_value(key, value)?);
            }
            Ok(Some(out))
        }
        Some(_) => Err("`custom_fields` must be an object".to_owned()),
    }
}

/// Checks a query parameter is a non-negative integer.
fn query_u64(req: &RecordedRequest, name: &str) -> Result<Option<u64>, SimResponse> {
    match req.query_param(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad_request(format!("`{name}` must be an integer"))),
    }
}

fn query_limit(req: &RecordedRequest, default: usize) -> Result<usize, SimResponse> {
    match query_u64(req, "limit")? {
        None => Ok(default),
        Some(0) => Err(bad_request("`limit` must be at least 1")),
        Some(n) => Ok((n as usize).min(MAX_LIMIT)),
    }
}

fn query_cursor(req: &RecordedRequest) -> Result<usize, SimResponse> {
    match req.query_param("cursor") {
        None => Ok(0),
        Some(c) if c.is_empty() => Ok(0),
        Some(c) => decode_cursor(&c).ok_or_else(|| bad_request("Invalid cursor")),
    }
}

fn query_time(req: &RecordedRequest, name: &str) -> Result<Option<DateTime<Utc>>, SimResponse> {
    match req.query_param(name) {
        None => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(&v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| bad_request(format!("`{name}` must be an RFC 3339 date-time"))),
    }
}

/// A v2 cursor page of `items`.
fn cursor_page(items: Vec<Value>, offset: usize, limit: usize) -> SimResponse {
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let next = (offset + limit < total).then(|| encode_cursor(offset + limit));
    ok(200, Value::Array(page), json!({ "next_cursor": next }))
}

// ----- users, fields, pipelines ------------------------------------------------------------------

fn users_me(inner: &Inner) -> SimResponse {
    let opts = &inner.opts;
    let epoch = v1_time(&inner.epoch);
    ok(
        200,
        json!({
            "id": opts.user_id,
            "name": "Sim Admin",
            "default_currency": "EUR",
            "locale": "en_US",
            "lang": 1,
            "email": format!("admin@{}.example", opts.company_domain),
            "phone": null,
            "activated": true,
            "last_login": epoch,
            "created": epoch,
            "modified": epoch,
            "has_created_company": true,
            "access": [{"app": "sales", "admin": true, "permission_set_id": "sim-admin"}],
            "active_flag": true,
            "timezone_name": "Europe/Tallinn",
            "timezone_offset": "+02:00",
            "role_id": 1,
            "icon_url": null,
            "is_you": true,
            "company_id": opts.company_id,
            "company_name": "refsync simulated company",
            "company_domain": opts.company_domain,
            "company_country": "EE",
            "company_industry": "Software",
            "language": {"language_code": "en", "country_code": "US"},
        }),
        Value::Null,
    )
}

fn fields(inner: &Inner, req: &RecordedRequest, entity: FieldEntity) -> SimResponse {
    let standard: &[(&str, &str, &str)] = match entity {
        FieldEntity::Deal => &[
            ("id", "ID", "double"),
            ("title", "Title", "varchar"),
            ("creator_user_id", "Creator", "user"),
            ("user_id", "Owner", "user"),
            ("value", "Value", "monetary"),
            ("currency", "Currency", "varchar"),
            ("person_id", "Contact person", "people"),
            ("org_id", "Organization", "org"),
            ("pipeline_id", "Pipeline", "enum"),
            ("stage_id", "Stage", "enum"),
            ("status", "Status", "enum"),
            ("add_time", "Deal created", "date"),
            ("update_time", "Update time", "date"),
            ("stage_change_time", "Last stage change", "date"),
            ("won_time", "Won time", "date"),
            ("lost_time", "Lost time", "date"),
            ("close_time", "Deal closed on", "date"),
            ("lost_reason", "Lost reason", "varchar"),
            ("expected_close_date", "Expected close date", "date"),
            ("visible_to", "Visible to", "visible_to"),
            ("label", "Label", "set"),
        ],
        FieldEntity::Person => &[
            ("id", "ID", "double"),
            ("name", "Name", "varchar"),
            ("first_name", "First name", "varchar"),
            ("last_name", "Last name", "varchar"),
            ("email", "Email", "varchar"),
            ("phone", "Phone", "phone"),
            ("org_id", "Organization", "org"),
            ("owner_id", "Owner", "user"),
            ("label", "Label", "set"),
            ("add_time", "Person created", "date"),
            ("update_time", "Update time", "date"),
            ("visible_to", "Visible to", "visible_to"),
        ],
    };
    let epoch = v1_time(&inner.epoch);
    let (base_id, stage_options, pipeline_options) = {
        let state = inner.lock();
        (
            if entity == FieldEntity::Deal {
                12_450u64
            } else {
                9_000
            },
            state
                .stages
                .iter()
                .map(|s| json!({"id": s.id, "label": s.name, "pipeline_id": s.pipeline_id}))
                .collect::<Vec<_>>(),
            state
                .pipelines
                .iter()
                .map(|p| json!({"id": p.id, "label": p.name}))
                .collect::<Vec<_>>(),
        )
    };
    let mut all = Vec::new();
    for (index, (key, name, field_type)) in standard.iter().enumerate() {
        let mut field = field_json(
            base_id + index as u64,
            key,
            name,
            field_type,
            false,
            &epoch,
            inner.opts.user_id,
        );
        let options = match *key {
            "stage_id" => Some(Value::Array(stage_options.clone())),
            "pipeline_id" => Some(Value::Array(pipeline_options.clone())),
            "status" => Some(json!([
                {"id": "open", "label": "Open"},
                {"id": "won", "label": "Won"},
                {"id": "lost", "label": "Lost"},
                {"id": "deleted", "label": "Deleted"},
            ])),
            _ => None,
        };
        if let Some(options) = options {
            field["options"] = options;
        }
        all.push(field);
    }
    let custom = inner
        .opts
        .custom_fields
        .iter()
        .filter(|f| f.entity == entity);
    for (index, f) in custom.enumerate() {
        all.push(field_json(
            base_id + 100 + index as u64,
            &f.key,
            &f.name,
            &f.field_type,
            true,
            &epoch,
            inner.opts.user_id,
        ));
    }
    for (order, field) in all.iter_mut().enumerate() {
        field["order_nr"] = json!(order);
    }
    let start = match query_u64(req, "start") {
        Ok(s) => s.unwrap_or(0) as usize,
        Err(e) => return e,
    };
    let limit = match query_limit(req, 100) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(start).take(limit).collect();
    ok(200, Value::Array(page), v1_pagination(start, limit, total))
}

fn field_json(
    id: u64,
    key: &str,
    name: &str,
    field_type: &str,
    custom: bool,
    at: &str,
    user_id: u64,
) -> Value {
    json!({
        "id": id,
        "key": key,
        "name": name,
        "order_nr": 0,
        "field_type": field_type,
        "add_time": at,
        "update_time": at,
        "last_updated_by_user_id": user_id,
        "active_flag": true,
        "edit_flag": custom,
        "index_visible_flag": true,
        "details_visible_flag": true,
        "add_visible_flag": true,
        "important_flag": false,
        "bulk_edit_allowed": true,
        "searchable_flag": custom && matches!(field_type, "varchar" | "text" | "double" | "phone" | "address" | "monetary" | "varchar_auto"),
        "filtering_allowed": true,
        "sortable_flag": true,
        "mandatory_flag": false,
    })
}

fn pipelines(inner: &Inner, version: u8) -> SimResponse {
    let state = inner.lock();
    let data: Vec<Value> = state
        .pipelines
        .iter()
        .map(|p| {
            if version == 1 {
                state.pipeline_v1(p, &inner.epoch)
            } else {
                state.pipeline_v2(p, &inner.epoch)
            }
        })
        .collect();
    let additional = if version == 1 {
        v1_pagination(0, MAX_LIMIT, data.len())
    } else {
        json!({"next_cursor": null})
    };
    ok(200, Value::Array(data), additional)
}

fn stages(inner: &Inner, req: &RecordedRequest, version: u8) -> SimResponse {
    let pipeline_id = match query_u64(req, "pipeline_id") {
        Ok(p) => p,
        Err(e) => return e,
    };
    let state = inner.lock();
    if let Some(id) = pipeline_id {
        if state.pipeline(id).is_none() {
            return failure(404, "Pipeline not found");
        }
    }
    let data: Vec<Value> = state
        .stages
        .iter()
        .filter(|s| pipeline_id.is_none_or(|p| s.pipeline_id == p))
        .map(|s| {
            if version == 1 {
                state.stage_v1(s, &inner.epoch)
            } else {
                state.stage_v2(s, &inner.epoch)
            }
        })
        .collect();
    let additional = if version == 1 {
        v1_pagination(0, MAX_LIMIT, data.len())
    } else {
        json!({"next_cursor": null})
    };
    ok(200, Value::Array(data), additional)
}

// ----- leads -------------------------------------------------------------------------------------

const LEAD_KEYS: &[&str] = &[
    "title",
    "owner_id",
    "label_ids",
    "person_id",
    "organization_id",
    "value",
    "expected_close_date",
    "visible_to",
    "was_seen",
    "is_archived",
    "origin_id",
    "channel",
    "channel_id",
];

/// Applies a v1 lead body (create or patch) to `lead`.
fn apply_lead(
    lead: &mut Lead,
    body: &Map<String, Value>,
    opts: &PipedriveSimOptions,
    state: &State,
) -> Result<(), String> {
    for key in body.keys() {
        if LEAD_KEYS.contains(&key.as_str()) {
            continue;
        }
        if !is_field_key(key) || custom_field(&opts.custom_fields, FieldEntity::Deal, key).is_none()
        {
            return Err(format!("Unknown field `{key}`"));
        }
    }
    if body.contains_key("title") {
        match body.get("title") {
            Some(Value::String(t)) if !t.trim().is_empty() => lead.title = t.clone(),
            _ => return Err("`title` must be a non-empty string".to_owned()),
        }
    }
    if let Some(owner) = opt_u64(body, "owner_id")? {
        lead.owner_id = owner;
    }
    match body.get("label_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            lead.label_ids = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
        }
        Some(_) => return Err("`label_ids` must be an array of UUID strings".to_owned()),
    }
    if body.contains_key("person_id") {
        lead.person_id = opt_u64(body, "person_id")?;
        if let Some(id) = lead.person_id {
            if state.live_person(id).is_none() {
                return Err(format!("Person {id} not found"));
            }
        }
    }
    if body.contains_key("organization_id") {
        lead.organization_id = opt_u64(body, "organization_id")?;
    }
    match body.get("value") {
        None => {}
        Some(Value::Null) => lead.value = Value::Null,
        Some(Value::Object(v))
            if v.get("amount").is_some_and(Value::is_number)
                && v.get("currency").is_some_and(Value::is_string) =>
        {
            lead.value = json!({"amount": v["amount"], "currency": v["currency"]});
        }
        Some(_) => {
            return Err("`value` must be an object {amount: number, currency: string}".to_owned());
        }
    }
    if let Some(date) = opt_date(body, "expected_close_date")? {
        lead.expected_close_date = date;
    }
    if let Some(visible) = opt_visible(body)? {
        lead.visible_to = visible;
    }
    if let Some(seen) = opt_bool(body, "was_seen")? {
        lead.was_seen = seen;
    }
    if let Some(archived) = opt_bool(body, "is_archived")? {
        lead.is_archived = archived;
    }
    let mut custom = BTreeMap::new();
    for (key, value) in body {
        if is_field_key(key) {
            custom.insert(key.clone(), custom_value(key, value)?);
        }
    }
    merge_custom(&mut lead.custom_fields, custom);
    if lead.person_id.is_none() && lead.organization_id.is_none() {
        return Err("A lead must be linked to a person or an organization".to_owned());
    }
    Ok(())
}

fn create_lead(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if !body.get("title").is_some_and(Value::is_string) {
        return bad_request("`title` is required");
    }
    let opts = &inner.opts;
    let mut state = inner.lock();
    let mut lead = Lead {
        id: String::new(),
        title: String::new(),
        owner_id: opts.user_id,
        creator_id: opts.user_id,
        person_id: None,
        organization_id: None,
        label_ids: Vec::new(),
        value: Value::Null,
        expected_close_date: None,
        visible_to: "3".to_owned(),
        was_seen: false,
        is_archived: false,
        source_name: "API".to_owned(),
        origin: "API".to_owned(),
        custom_fields: BTreeMap::new(),
        add_time: Utc::now(),
        update_time: Utc::now(),
        deleted: false,
    };
    if let Err(e) = apply_lead(&mut lead, &body, opts, &state) {
        return bad_request(e);
    }
    let lead = ops::insert_lead(&mut state, opts, lead, "api");
    ok(201, lead.v1(&opts.company_domain), Value::Null)
}

fn get_lead(inner: &Inner, id: &str) -> SimResponse {
    let state = inner.lock();
    match state.live_lead_index(id) {
        Some(index) => ok(
            200,
            state.leads[index].v1(&inner.opts.company_domain),
            Value::Null,
        ),
        None => failure(404, "Lead not found"),
    }
}

fn patch_lead(inner: &Inner, req: &RecordedRequest, id: &str) -> SimResponse {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let opts = &inner.opts;
    let mut state = inner.lock();
    // Validate and merge on a copy first (`apply_lead` reads the state for person checks).
    let Some(index) = state.live_lead_index(id) else {
        return failure(404, "Lead not found");
    };
    let mut probe = state.leads[index].clone();
    if let Err(e) = apply_lead(&mut probe, &body, opts, &state) {
        return bad_request(e);
    }
    let result = ops::update_lead(
        &mut state,
        opts,
        id,
        |lead| {
            *lead = probe;
            Ok(())
        },
        "api",
    );
    match result {
        Some(Ok(lead)) => ok(200, lead.v1(&opts.company_domain), Value::Null),
        Some(Err(e)) => bad_request(e),
        None => failure(404, "Lead not found"),
    }
}

fn delete_lead(inner: &Inner, id: &str) -> SimResponse {
    let mut state = inner.lock();
    if ops::delete_lead(&mut state, &inner.opts, id, "api", None) {
        ok(200, json!({"id": id}), Value::Null)
    } else {
        failure(404, "Lead not found")
    }
}

fn list_leads(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let (person_id, org_id, owner_id, start) = match (
        query_u64(req, "person_id"),
        query_u64(req, "organization_id"),
        query_u64(req, "owner_id"),
        query_u64(req, "start"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d.unwrap_or(0) as usize),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return e,
    };
    let limit = match query_limit(req, 100) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let archived = req
        .query_param("archived_status")
        .unwrap_or_else(|| "all".to_owned());
    if !matches!(archived.as_str(), "archived" | "not_archived" | "all") {
        return bad_request("`archived_status` must be archived, not_archived or all");
    }
    let state = inner.lock();
    let all: Vec<Value> = state
        .leads
        .iter()
        .filter(|l| !l.deleted)
        .filter(|l| person_id.is_none_or(|p| l.person_id == Some(p)))
        .filter(|l| org_id.is_none_or(|o| l.organization_id == Some(o)))
        .filter(|l| owner_id.is_none_or(|o| l.owner_id == o))
        .filter(|l| match archived.as_str() {
            "archived" => l.is_archived,
            "not_archived" => !l.is_archived,
            _ => true,
        })
        .map(|l| l.v1(&inner.opts.company_domain))
        .collect();
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(start).take(limit).collect();
    ok(200, Value::Array(page), v1_pagination(start, limit, total))
}

// ----- webhooks ----------------------------------------------------------------------------------

const EVENT_ACTIONS: &[&str] = &[
    "added", "updated", "merged", "deleted", "create", "change", "delete", "*",
];

const EVENT_OBJECTS: &[&str] = &[
    "activity",
    "activityType",
    "deal",
    "lead",
    "note",
    "organization",
    "person",
    "pipeline",
    "product",
    "stage",
    "user",
    "*",
];

fn webhook_error(status: u16, message: &str) -> SimResponse {
    SimResponse::json(
        status,
        &json!({
            "success": false,
            "status": "error",
            "error": message,
            "errors": {"message": message},
            "errorCode": status,
        }),
    )
}

fn list_webhooks(inner: &Inner) -> SimResponse {
    let state = inner.lock();
    let data: Vec<Value> = state
        .hooks
        .values()
        .map(|h| h.v1(inner.opts.company_id))
        .collect();
    SimResponse::json(
        200,
        &json!({"success": true, "status": "ok", "data": data, "additional_data": null}),
    )
}

fn create_webhook(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let parsed = (|| -> Result<Hook, String> {
        let url = opt_str(&body, "subscription_url")?.ok_or("`subscription_url` is required")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err("`subscription_url` must be an http(s) URL".to_owned());
        }
        let action = opt_str(&body, "event_action")?.ok_or("`event_action` is required")?;
        if !EVENT_ACTIONS.contains(&action.as_str()) {
            return Err(format!("Invalid event_action `{action}`"));
        }
        let object = opt_str(&body, "event_object")?.ok_or("`event_object` is required")?;
        if !EVENT_OBJECTS.contains(&object.as_str()) {
            return Err(format!("Invalid event_object `{object}`"));
        }
        let version = opt_str(&body, "version")?.unwrap_or_else(|| "1.0".to_owned());
        if !matches!(version.as_str(), "1.0" | "2.0") {
            return Err(format!("Invalid version `{version}` (1.0 or 2.0)"));
        }
        Ok(Hook {
            id: 0,
            subscription_url: url,
            event_action: action,
            event_object: object,
            version,
            user_id: opt_u64(&body, "user_id")?.unwrap_or(inner.opts.user_id),
            owner_id: inner.opts.user_id,
            http_auth_user: opt_str(&body, "http_auth_user")?.filter(|u| !u.is_empty()),
            http_auth_password: opt_str(&body, "http_auth_password")?,
            name: opt_str(&body, "name")?,
            add_time: super::model::now_secs(),
            last_delivery_time: None,
            last_http_status: None,
        })
    })();
    let mut hook = match parsed {
        Ok(h) => h,
        Err(e) => return webhook_error(400, &e),
    };
    let mut state = inner.lock();
    if state.hooks.len() >= MAX_WEBHOOKS {
        return webhook_error(
            400,
            &format!("You have reached the limit of {MAX_WEBHOOKS} webhooks per user"),
        );
    }
    hook.id = state.next_hook_id;
    state.next_hook_id += 1;
    state.hooks.insert(hook.id, hook.clone());
    SimResponse::json(
        201,
        &json!({"success": true, "status": "ok", "data": hook.v1(inner.opts.company_id)}),
    )
}

fn delete_webhook(inner: &Inner, id: &str) -> SimResponse {
    let Ok(id) = id.parse::<u64>() else {
        return webhook_error(404, "Webhook not found");
    };
    let mut state = inner.lock();
    if state.hooks.remove(&id).is_some() {
        SimResponse::json(
            200,
            &json!({"success": true, "status": "ok", "data": {"id": id}}),
        )
    } else {
        webhook_error(404, "Webhook not found")
    }
}

// ----- persons -----------------------------------------------------------------------------------

const PERSON_KEYS: &[&str] = &[
    "name",
    "owner_id",
    "org_id",
    "emails",
    "phones",
    "visible_to",
    "label_ids",
    "custom_fields",
    "marketing_status",
];

fn parse_channels(body: &Map<String, Value>, key: &str) -> Result<Option<Vec<Channel>>, String> {
    let items = match body.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(format!(
                "`{key}` must be an array of {{value, primary, label}}"
            ));
        }
    };
    let mut out = Vec::new();
    for item in items {
        let Some(value) = item.get("value").and_then(Value::as_str) else {
            return Err(format!("every `{key}` item needs a string `value`"));
        };
        let primary = match item.get("primary") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(format!("`{key}[].primary` must be a boolean")),
        };
        let label = match item.get("label") {
            None | Some(Value::Null) => "work".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(format!("`{key}[].label` must be a string")),
        };
        out.push(Channel {
            value: value.to_owned(),
            primary,
            label,
        });
    }
    if out.iter().filter(|c| c.primary).count() > 1 {
        return Err(format!("at most one of `{key}` can be primary"));
    }
    if !out.iter().any(|c| c.primary) {
        if let Some(first) = out.first_mut() {
            first.primary = true;
        }
    }
    Ok(Some(out))
}

fn apply_person(
    person: &mut Person,
    body: &Map<String, Value>,
    opts: &PipedriveSimOptions,
) -> Result<(), String> {
    if let Some(key) = body.keys().find(|k| !PERSON_KEYS.contains(&k.as_str())) {
        return Err(format!("Unknown field `{key}`"));
    }
    if body.contains_key("name") {
        match body.get("name") {
            Some(Value::String(n)) if !n.trim().is_empty() => person.name = n.clone(),
            _ => return Err("`name` must be a non-empty string".to_owned()),
        }
    }
    if let Some(owner) = opt_u64(body, "owner_id")? {
        person.owner_id = owner;
    }
    if body.contains_key("org_id") {
        person.org_id = opt_u64(body, "org_id")?;
    }
    if let Some(emails) = parse_channels(body, "emails")? {
        person.emails = emails;
    }
    if let Some(phones) = parse_channels(body, "phones")? {
        person.phones = phones;
    }
    if let Some(visible) = opt_visible(body)? {
        person.visible_to = visible;
    }
    if let Some(labels) = u64_list(body, "label_ids")? {
        person.label_ids = labels;
    }
    if let Some(custom) = custom_fields_object(body, opts, FieldEntity::Person)? {
        merge_custom(&mut person.custom_fields, custom);
    }
    Ok(())
}

fn parse_id(id: &str) -> Option<u64> {
    id.parse::<u64>().ok()
}

fn create_person(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if !body.get("name").is_some_and(Value::is_string) {
        return bad_request("`name` is required");
    }
    let opts = &inner.opts;
    let mut person = Person {
        id: 0,
        name: String::new(),
        owner_id: opts.user_id,
        org_id: None,
        emails: Vec::new(),
        phones: Vec::new(),
        visible_to: "3".to_owned(),
        label_ids: Vec::new(),
        custom_fields: BTreeMap::new(),
        add_time: Utc::now(),
        update_time: Utc::now(),
        deleted: false,
    };
    if let Err(e) = apply_person(&mut person, &body, opts) {
        return bad_request(e);
    }
    let mut state = inner.lock();
    let person = ops::insert_person(&mut state, opts, person, "api");
    ok(200, person.api_v2(), Value::Null)
}

fn get_person(inner: &Inner, id: &str) -> SimResponse {
    let state = inner.lock();
    match parse_id(id).and_then(|id| state.live_person(id)) {
        Some(p) => ok(200, p.api_v2(), Value::Null),
        None => failure(404, "Person not found"),
    }
}

fn patch_person(inner: &Inner, req: &RecordedRequest, id: &str) -> SimResponse {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let opts = &inner.opts;
    let mut state = inner.lock();
    let Some(current) = parse_id(id).and_then(|id| state.live_person(id)).cloned() else {
        return failure(404, "Person not found");
    };
    let mut probe = current;
    if let Err(e) = apply_person(&mut probe, &body, opts) {
        return bad_request(e);
    }
    match ops::update_person(&mut state, opts, probe.id, |p| *p = probe, "api") {
        Some(p) => ok(200, p.api_v2(), Value::Null),
        None => failure(404, "Person not found"),
    }
}

fn search_persons(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let burst = inner.opts.search_burst as usize;
    let now = Instant::now();
    let (used, reset) = {
        let mut state = inner.lock();
        prune(&mut state.recent_searches, now);
        if state.recent_searches.len() >= burst {
            let reset = window_reset(state.recent_searches.front(), now);
            let response = error(429, "Too many requests");
            return if inner.opts.rate_limit_headers {
                rate_headers(response, burst, burst, reset)
            } else {
                response
            };
        }
        state.recent_searches.push_back(now);
        (
            state.recent_searches.len(),
            window_reset(state.recent_searches.front(), now),
        )
    };
    let response = search_inner(inner, req);
    if inner.opts.rate_limit_headers {
        rate_headers(response, burst, used, reset)
    } else {
        response
    }
}

fn search_inner(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let Some(term) = req.query_param("term") else {
        return bad_request("`term` is required");
    };
    let exact = match req.query_param("exact_match").as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return bad_request("`exact_match` must be true or false"),
    };
    let term = term.trim().to_owned();
    if term.is_empty() || (!exact && term.chars().count() < 2) {
        return bad_request("`term` must be at least 2 characters long (1 with exact_match)");
    }
    let all_fields = ["custom_fields", "email", "notes", "phone", "name"];
    let fields: Vec<String> = match req.query_param("fields") {
        None => all_fields.iter().map(|s| (*s).to_owned()).collect(),
        Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
    };
    if let Some(bad) = fields.iter().find(|f| !all_fields.contains(&f.as_str())) {
        return bad_request(format!("Invalid search field `{bad}`"));
    }
    let limit = match query_limit(req, 100) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let offset = match query_cursor(req) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let needle = term.to_lowercase();
    let matches = |text: &str| {
        let text = text.trim().to_lowercase();
        if exact {
            text == needle
        } else {
            text.contains(&needle)
        }
    };
    let has = |f: &str| fields.iter().any(|x| x == f);
    let state = inner.lock();
    let searchable: Vec<&str> = inner
        .opts
        .custom_fields
        .iter()
        .filter(|f| {
            f.entity == FieldEntity::Person
                && matches!(
                    f.field_type.as_str(),
                    "address"
                        | "varchar"
                        | "text"
                        | "varchar_auto"
                        | "double"
                        | "monetary"
                        | "phone"
                )
        })
        .map(|f| f.key.as_str())
        .collect();
    let items: Vec<Value> = state
        .persons
        .values()
        .filter(|p| !p.deleted)
        .filter(|p| {
            (has("email") && p.emails.iter().any(|e| matches(&e.value)))
                || (has("phone") && p.phones.iter().any(|e| matches(&e.value)))
                || (has("name") && matches(&p.name))
                || (has("custom_fields")
                    && searchable.iter().any(|k| {
                        p.custom_fields.get(*k).is_some_and(|v| match v {
                            Value::String(s) => matches(s),
                            other => matches(&other.to_string()),
                        })
                    }))
        })
        .map(|p| json!({"result_score": if exact { 1.0 } else { 0.5 }, "item": p.search_item()}))
        .collect();
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let next = (offset + limit < total).then(|| encode_cursor(offset + limit));
    ok(200, json!({"items": page}), json!({"next_cursor": next}))
}

// ----- deals -------------------------------------------------------------------------------------

const DEAL_KEYS: &[&str] = &[
    "title",
    "owner_id",
    "person_id",
    "org_id",
    "pipeline_id",
    "stage_id",
    "value",
    "currency",
    "status",
    "visible_to",
    "label_ids",
    "custom_fields",
    "expected_close_date",
    "probability",
    "lost_reason",
];

/// Applies a v2 deal body to `deal`; returns whether the stage changed.
fn apply_deal(
    deal: &mut Deal,
    body: &Map<String, Value>,
    opts: &PipedriveSimOptions,
    state: &State,
    now: DateTime<Utc>,
) -> Result<bool, String> {
    if let Some(key) = body.keys().find(|k| !DEAL_KEYS.contains(&k.as_str())) {
        return Err(format!("Unknown field `{key}`"));
    }
    if body.contains_key("title") {
        match body.get("title") {
            Some(Value::String(t)) if !t.trim().is_empty() => deal.title = t.clone(),
            _ => return Err("`title` must be a non-empty string".to_owned()),
        }
    }
    if let Some(owner) = opt_u64(body, "owner_id")? {
        deal.owner_id = owner;
    }
    if body.contains_key("person_id") {
        deal.person_id = opt_u64(body, "person_id")?;
        if let Some(id) = deal.person_id {
            if state.live_person(id).is_none() {
                return Err(format!("Person {id} not found"));
            }
        }
    }
    if body.contains_key("org_id") {
        deal.org_id = opt_u64(body, "org_id")?;
    }
    let stage_id = opt_u64(body, "stage_id")?;
    let pipeline_id = opt_u64(body, "pipeline_id")?;
    let new_stage = match (stage_id, pipeline_id) {
        (Some(s), p) => {
            let stage = state
                .stage(s)
                .ok_or_else(|| format!("Stage {s} not found"))?;
            if p.is_some_and(|p| p != stage.pipeline_id) {
                return Err(format!(
                    "Stage {s} does not belong to pipeline {}",
                    p.unwrap_or_default()
                ));
            }
            Some(stage.clone())
        }
        (None, Some(p)) if p != deal.pipeline_id || deal.stage_id == 0 => {
            state
                .pipeline(p)
                .ok_or_else(|| format!("Pipeline {p} not found"))?;
            Some(
                state
                    .first_stage(p)
                    .ok_or_else(|| format!("Pipeline {p} has no stages"))?
                    .clone(),
            )
        }
        _ => None,
    };
    let mut stage_changed = false;
    if let Some(stage) = new_stage {
        if stage.id != deal.stage_id {
            stage_changed = deal.stage_id != 0;
            deal.stage_id = stage.id;
            deal.pipeline_id = stage.pipeline_id;
            if stage_changed {
                deal.stage_change_time = Some(now);
            }
        }
    }
    match body.get("value") {
        None => {}
        Some(Value::Null) => deal.value = json!(0),
        Some(v @ Value::Number(_)) => deal.value = v.clone(),
        Some(_) => return Err("`value` must be a number".to_owned()),
    }
    if let Some(currency) = opt_str(body, "currency")? {
        deal.currency = currency;
    }
    if let Some(status) = opt_str(body, "status")? {
        if !matches!(status.as_str(), "open" | "won" | "lost") {
            return Err("`status` must be open, won or lost".to_owned());
        }
        deal.set_status(&status, now);
    }
    if let Some(visible) = opt_visible(body)? {
        deal.visible_to = visible;
    }
    if let Some(labels) = u64_list(body, "label_ids")? {
        deal.label_ids = labels;
    }
    if let Some(date) = opt_date(body, "expected_close_date")? {
        deal.expected_close_date = date;
    }
    match body.get("probability") {
        None => {}
        Some(v @ (Value::Null | Value::Number(_))) => deal.probability = v.clone(),
        Some(_) => return Err("`probability` must be a number".to_owned()),
    }
    if body.contains_key("lost_reason") {
        deal.lost_reason = opt_str(body, "lost_reason")?;
    }
    if let Some(custom) = custom_fields_object(body, opts, FieldEntity::Deal)? {
        merge_custom(&mut deal.custom_fields, custom);
    }
    Ok(stage_changed)
}

fn create_deal(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if !body.get("title").is_some_and(Value::is_string) {
        return bad_request("`title` is required");
    }
    let opts = &inner.opts;
    let mut state = inner.lock();
    let now = Utc::now();
    let mut deal = Deal {
        id: 0,
        title: String::new(),
        creator_user_id: opts.user_id,
        owner_id: opts.user_id,
        person_id: None,
        org_id: None,
        pipeline_id: 1,
        stage_id: 0,
        value: json!(0),
        currency: "EUR".to_owned(),
        status: "open".to_owned(),
        visible_to: "3".to_owned(),
        label_ids: Vec::new(),
        custom_fields: BTreeMap::new(),
        expected_close_date: None,
        probability: Value::Null,
        lost_reason: None,
        origin: "API".to_owned(),
        add_time: now,
        update_time: now,
        stage_change_time: None,
        won_time: None,
        first_won_time: None,
        lost_time: None,
        close_time: None,
        deleted: false,
    };
    if let Err(e) = apply_deal(&mut deal, &body, opts, &state, now) {
        return bad_request(e);
    }
    if deal.stage_id == 0 {
        match state.first_stage(deal.pipeline_id) {
            Some(stage) => deal.stage_id = stage.id,
            None => return bad_request("Pipeline 1 has no stages"),
        }
    }
    let deal = ops::insert_deal(&mut state, opts, deal, "api", None);
    ok(200, deal.api_v2(), Value::Null)
}

fn get_deal(inner: &Inner, id: &str) -> SimResponse {
    let state = inner.lock();
    match parse_id(id).and_then(|id| state.live_deal(id)) {
        Some(d) => ok(200, d.api_v2(), Value::Null),
        None => failure(404, "Deal not found"),
    }
}

fn patch_deal(inner: &Inner, req: &RecordedRequest, id: &str) -> SimResponse {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let opts = &inner.opts;
    let mut state = inner.lock();
    let Some(current) = parse_id(id).and_then(|id| state.live_deal(id)).cloned() else {
        return failure(404, "Deal not found");
    };
    let mut probe = current;
    let stage_changed = match apply_deal(&mut probe, &body, opts, &state, super::model::now_secs())
    {
        Ok(changed) => changed,
        Err(e) => return bad_request(e),
    };
    let forced: &[&str] = if stage_changed {
        &["stage_change_time", "update_time"]
    } else {
        &[]
    };
    match ops::update_deal(&mut state, opts, probe.id, |d, _| *d = probe, forced, "api") {
        Some(d) => ok(200, d.api_v2(), Value::Null),
        None => failure(404, "Deal not found"),
    }
}

fn delete_deal(inner: &Inner, id: &str) -> SimResponse {
    let mut state = inner.lock();
    match parse_id(id) {
        Some(id) if ops::delete_deal(&mut state, &inner.opts, id, "api") => {
            ok(200, json!({"id": id}), Value::Null)
        }
        _ => failure(404, "Deal not found"),
    }
}

fn list_deals(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let ids = ["person_id", "stage_id", "pipeline_id", "owner_id"].map(|name| query_u64(req, name));
    let mut parsed = [None; 4];
    for (slot, result) in parsed.iter_mut().zip(ids) {
        match result {
            Ok(v) => *slot = v,
            Err(e) => return e,
        }
    }
    let [person_id, stage_id, pipeline_id, owner_id] = parsed;
    let (since, until) = match (
        query_time(req, "updated_since"),
        query_time(req, "updated_until"),
    ) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let status = req.query_param("status");
    if let Some(s) = &status {
        if !matches!(s.as_str(), "open" | "won" | "lost" | "deleted") {
            return bad_request("`status` must be open, won, lost or deleted");
        }
    }
    let limit = match query_limit(req, 100) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let offset = match query_cursor(req) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let state = inner.lock();
    let mut deals: Vec<&Deal> = state
        .deals
        .values()
        .filter(|d| match status.as_deref() {
            Some("deleted") => d.deleted,
            Some(s) => !d.deleted && d.status == s,
            None => !d.deleted,
        })
        .filter(|d| person_id.is_none_or(|p| d.person_id == Some(p)))
        .filter(|d| stage_id.is_none_or(|s| d.stage_id == s))
        .filter(|d| pipeline_id.is_none_or(|p| d.pipeline_id == p))
        .filter(|d| owner_id.is_none_or(|o| d.owner_id == o))
        .filter(|d| since.is_none_or(|t| d.update_time >= t))
        .filter(|d| until.is_none_or(|t| d.update_time < t))
        .collect();
    deals.sort_by_key(|d| (d.update_time, d.id));
    let items = deals.into_iter().map(Deal::api_v2).collect();
    cursor_page(items, offset, limit)
}
