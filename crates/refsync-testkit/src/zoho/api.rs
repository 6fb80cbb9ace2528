//! The HTTP side: the accounts endpoint, injected failures, authentication, the concurrency
//! and credit limits, routing and the records endpoints (insert, update, upsert, read, search,
//! delete, lead conversion).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use super::model::{Module, Record, State};
use super::ops::{self, ApiError, error_item, id_of};
use super::{Inner, MAX_RECORDS_PER_CALL, ZohoSimOptions, auth, search, settings, watch};
use crate::sim::{RecordedRequest, SimHandler, SimResponse, percent_decode};

/// Largest `per_page` of reads.
const MAX_PER_PAGE: usize = 200;

/// The simulator's [`SimHandler`].
pub(super) struct Handler {
    inner: Arc<Inner>,
}

impl Handler {
    pub(super) fn new(inner: Arc<Inner>) -> Handler {
        Handler { inner }
    }
}

type Answer = Result<SimResponse, ApiError>;

/// Requests the API limits apply to (not the accounts server).
fn is_api(req: &RecordedRequest) -> bool {
    req.path.starts_with("/crm/")
}

impl SimHandler for Handler {
    fn started(&self, req: &RecordedRequest) {
        if is_api(req) {
            self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn finished(&self, req: &RecordedRequest) {
        if is_api(req) {
            self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn handle(&self, req: &RecordedRequest) -> SimResponse {
        let inner = &self.inner;
        if req.path.starts_with("/oauth/") {
            if req.path.trim_end_matches('/') == "/oauth/v2/token" {
                return auth::token_endpoint(inner, req);
            }
            return SimResponse::json(404, &json!({"error": "invalid_request"}));
        }
        let opts = &inner.opts;
        let api_domain = inner.base_url();
        let mut state = inner.lock();
        state.collect_expired_channels();
        let response = if let Some(status) = state.fail_queue.pop_front() {
            if status == 429 {
                state.rate_limited += 1;
            }
            injected(status)
        } else if !auth::check(&state, req) {
            SimResponse::json(401, &auth::invalid_token())
        } else if inner.in_flight.load(Ordering::SeqCst) > opts.max_concurrency {
            state.rate_limited += 1;
            SimResponse::json(
                429,
                &error_item(
                    "TOO_MANY_REQUESTS",
                    "concurrency limit exceeded",
                    json!({"limit": opts.max_concurrency}),
                ),
            )
        } else if state.credits_in_window() >= opts.daily_credits {
            state.rate_limited += 1;
            SimResponse::json(
                429,
                &error_item(
                    "LIMIT_REACHED",
                    "API credits exhausted for the last 24 hours",
                    json!({"limit": opts.daily_credits}),
                ),
            )
        } else {
            let cost = credits_of(req);
            let now = state.now();
            state.credits.push_back((now, cost));
            match route(&mut state, opts, req, &api_domain) {
                Ok(response) => response,
                Err(e) => SimResponse::json(e.status, &e.body),
            }
        };
        watch::flush(&mut state, &api_domain);
        let used = state.credits_in_window();
        if used.saturating_mul(2) > opts.daily_credits {
            return response.with_header(
                "X-API-CREDITS-REMAINING",
                opts.daily_credits.saturating_sub(used).to_string(),
            );
        }
        response
    }
}

/// What a call costs: convert lead 5; insert, update and upsert 1 per 10 records (at least
/// 1); everything else 1.
fn credits_of(req: &RecordedRequest) -> u64 {
    let path = req.path.trim_end_matches('/');
    if req.method == "POST" && path.ends_with("/actions/convert") {
        return 5;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let write = match (req.method.as_str(), segments.as_slice()) {
        ("POST" | "PUT", ["crm", _, module, ..]) => {
            Module::parse(module).is_some() && segments.len() <= 4
        }
        _ => false,
    };
    if !write {
        return 1;
    }
    let records = req
        .json()
        .and_then(|b| b.get("data").and_then(Value::as_array).map(Vec::len))
        .unwrap_or(1) as u64;
    records.div_ceil(10).max(1)
}

/// The answer `fail_next` injects for `status`.
fn injected(status: u16) -> SimResponse {
    let (code, message) = match status {
        401 => return SimResponse::json(401, &auth::invalid_token()),
        429 => ("TOO_MANY_REQUESTS", "too many requests"),
        400 => ("INVALID_DATA", "invalid data"),
        403 => ("NO_PERMISSION", "permission denied"),
        404 => (
            "INVALID_URL_PATTERN",
            "Please check if the URL trying to access is a correct one",
        ),
        _ => ("INTERNAL_ERROR", "Internal server error occurred."),
    };
    SimResponse::json(status, &error_item(code, message, json!({})))
}

// ----- routing -----------------------------------------------------------------------------------

fn route(
    state: &mut State,
    opts: &ZohoSimOptions,
    req: &RecordedRequest,
    api_domain: &str,
) -> Answer {
    let segments: Vec<String> = req
        .path
        .trim_end_matches('/')
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method.as_str();
    let max = opts.max_channel_expiry;
    match segments.as_slice() {
        ["crm", "v8", "actions", "watch"] => match method {
            "GET" => watch::list(state, req, api_domain),
            "POST" => watch::enable(state, req, max, api_domain),
            "PUT" => watch::replace(state, req, max, api_domain),
            "PATCH" => watch::update(state, req, max, api_domain),
            "DELETE" => watch::disable(state, req, api_domain),
            _ => Err(ApiError::invalid_method()),
        },
        ["crm", "v8", "settings", "fields"] => match method {
            "GET" => settings::fields(state, opts, req),
            _ => Err(ApiError::invalid_method()),
        },
        ["crm", "v8", "settings", "pipeline"] => match method {
            "GET" => settings::pipelines(state, req),
            _ => Err(ApiError::invalid_method()),
        },
        ["crm", "v8", "settings", ..] | ["crm", "v8", "actions", ..] => {
            Err(ApiError::invalid_url())
        }
        ["crm", "v8", module, rest @ ..] => {
            let Some(module) = Module::parse(module) else {
                return Err(ApiError::invalid_module(module));
            };
            match (method, rest) {
                ("GET", []) => list_records(state, req, module),
                ("POST", []) => insert(state, req, module),
                ("PUT", []) => update(state, req, module, None),
                ("DELETE", []) => delete(state, req, module, None),
                ("POST", ["upsert"]) => upsert(state, req, module),
                ("GET", ["search"]) => search_records(state, req, module),
                ("GET", [id]) => get_record(state, req, module, id),
                ("PUT", [id]) => update(state, req, module, Some(id)),
                ("DELETE", [id]) => delete(state, req, module, Some(id)),
                ("POST", [id, "actions", "convert"]) if module == Module::Leads => {
                    convert(state, opts, req, id)
                }
                (_, [] | ["upsert"] | ["search"] | [_]) => Err(ApiError::invalid_method()),
                _ => Err(ApiError::invalid_url()),
            }
        }
        _ => Err(ApiError::invalid_url()),
    }
}

// ----- input helpers -----------------------------------------------------------------------------

fn body_object(req: &RecordedRequest) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::bad_body()),
    }
}

/// The `data` array of a write: 1 to 100 records.
fn data_items(body: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    match body.get("data") {
        Some(Value::Array(items)) if items.len() > MAX_RECORDS_PER_CALL => Err(ApiError::new(
            400,
            "LIMIT_EXCEEDED",
            "Record count exceeded",
            json!({"limit": MAX_RECORDS_PER_CALL}),
        )),
        Some(Value::Array(items)) if !items.is_empty() => Ok(items.clone()),
        Some(Value::Array(_)) | None | Some(Value::Null) => Err(ApiError::new(
            400,
            "MANDATORY_NOT_FOUND",
            "required field not found",
            json!({"api_name": "data", "json_path": "$.data"}),
        )),
        Some(_) => Err(ApiError::invalid_data(
            json!({"api_name": "data", "json_path": "$.data", "expected_data_type": "jsonarray"}),
        )),
    }
}

/// A list of strings in the body (`duplicate_check_fields`, `trigger`).
fn string_list(body: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::invalid_data(json!({"api_name": key, "json_path": format!("$.{key}[{i}]"), "expected_data_type": "string"}))
                })
            })
            .collect(),
        Some(_) => Err(ApiError::invalid_data(
            json!({"api_name": key, "json_path": format!("$.{key}"), "expected_data_type": "jsonarray"}),
        )),
    }
}

/// `{"data": results}`: `ok_status` when every record succeeded, 400 when none did, 207 for a
/// mix (Zoho answers partial bulk success with 207 Multi-Status).
fn write_answer(results: Vec<Value>, ok_status: u16) -> SimResponse {
    let ok = results.iter().filter(|r| r["status"] == "success").count();
    let status = if ok == results.len() {
        ok_status
    } else if ok == 0 {
        400
    } else {
        207
    };
    let mut body = Map::new();
    body.insert("data".to_owned(), Value::Array(results));
    SimResponse::json(status, &Value::Object(body))
}

fn success(record: &Record, message: &str) -> Value {
    json!({
        "code": "SUCCESS",
        "details": ops::success_details(record),
        "message": message,
        "status": "success",
    })
}

/// Field names of `fields=` (required when `required`): fields of the module and the system
/// keys `id`, `Layout`; unknown names are `INVALID_DATA`.
fn requested_fields(
    state: &State,
    module: Module,
    req: &RecordedRequest,
    required: bool,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = req.query_param("fields").filter(|f| !f.trim().is_empty()) else {
        return if required {
            Err(ApiError::param_missing("fields"))
        } else {
            Ok(None)
        };
    };
    let mut names = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "id" {
            continue;
        }
        if name != "Layout" && state.field(module, name).is_none() {
            return Err(ApiError::invalid_data(
                json!({"api_name": name, "param_name": "fields"}),
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Ok(Some(names))
}

/// Which leads a read shows (`converted=false` by default: converted leads are hidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converted {
    No,
    Yes,
    Both,
}

fn converted_filter(req: &RecordedRequest, module: Module) -> Result<Converted, ApiError> {
    let value = req.query_param("converted");
    if module != Module::Leads {
        return Ok(Converted::Both);
    }
    match value.as_deref() {
        None | Some("false") => Ok(Converted::No),
        Some("true") => Ok(Converted::Yes),
        Some("both") => Ok(Converted::Both),
        Some(_) => Err(ApiError::invalid_data(json!({"param_name": "converted"}))),
    }
}

fn shown(record: &Record, converted: Converted) -> bool {
    match converted {
        Converted::No => !record.is_converted(),
        Converted::Yes => record.is_converted(),
        Converted::Both => true,
    }
}

fn page_params(req: &RecordedRequest) -> Result<(usize, usize), ApiError> {
    let number = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match req.query_param(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1 && *n <= max)
                .ok_or_else(|| ApiError::invalid_data(json!({"param_name": name}))),
        }
    };
    Ok((
        number("page", 1, usize::MAX)?,
        number("per_page", MAX_PER_PAGE, MAX_PER_PAGE)?,
    ))
}

/// `{"data", "info"}` of one page of `records` (`204` when the page is empty).
fn page_answer(
    state: &State,
    records: &[&Record],
    fields: Option<&[String]>,
    page: usize,
    per_page: usize,
) -> SimResponse {
    let start = (page - 1).saturating_mul(per_page);
    let slice: Vec<&&Record> = records.iter().skip(start).take(per_page).collect();
    if slice.is_empty() {
        return SimResponse::empty(204);
    }
    let data: Vec<Value> = slice
        .iter()
        .map(|r| match fields {
            Some(names) => r.to_json_fields(names),
            None => state.record_json(r),
        })
        .collect();
    let more = records.len() > start + slice.len();
    SimResponse::json(
        200,
        &json!({
            "data": data,
            "info": {
                "per_page": per_page,
                "count": slice.len(),
                "page": page,
                "sort_by": "id",
                "sort_order": "asc",
                "more_records": more,
            },
        }),
    )
}

// ----- records -----------------------------------------------------------------------------------

/// `GET /crm/v8/{Module}?fields=...` (`fields` is required in v8), `ids`, `converted`, `page`,
/// `per_page`.
fn list_records(state: &mut State, req: &RecordedRequest, module: Module) -> Answer {
    let fields = requested_fields(state, module, req, true)?.unwrap_or_default();
    let converted = converted_filter(req, module)?;
    let (page, per_page) = page_params(req)?;
    let ids: Option<Vec<String>> = req.query_param("ids").map(|ids| {
        ids.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let records: Vec<&Record> = state
        .records(module)
        .values()
        .filter(|r| shown(r, converted))
        .filter(|r| ids.as_ref().is_none_or(|ids| ids.contains(&r.id_text())))
        .collect();
    Ok(page_answer(state, &records, Some(&fields), page, per_page))
}

/// `GET /crm/v8/{Module}/{id}` (`fields` optional); `204` for an unknown id.
fn get_record(state: &mut State, req: &RecordedRequest, module: Module, id: &str) -> Answer {
    let fields = requested_fields(state, module, req, false)?;
    let Some(record) = state.record(module, id) else {
        return Ok(SimResponse::empty(204));
    };
    let data = match &fields {
        Some(names) => record.to_json_fields(names),
        None => state.record_json(record),
    };
    Ok(SimResponse::json(200, &json!({ "data": [data] })))
}

/// `GET /crm/v8/{Module}/search?criteria=` (or `email=`, `phone=`, `word=`).
fn search_records(state: &mut State, req: &RecordedRequest, module: Module) -> Answer {
    let fields = requested_fields(state, module, req, false)?;
    let converted = converted_filter(req, module)?;
    let (page, per_page) = page_params(req)?;
    let param = |name: &str| req.query_param(name).filter(|v| !v.trim().is_empty());
    let kinds = |pred: fn(super::model::Kind) -> bool| -> Vec<String> {
        state
            .fields(module)
            .iter()
            .filter(|f| pred(f.kind))
            .map(|f| f.api_name.clone())
            .collect()
    };
    let records: Vec<&Record> = if let Some(criteria) = param("criteria") {
        let criteria = search::parse(&criteria)?;
        search::check_fields(state, module, &criteria)?;
        state
            .records(module)
            .values()
            .filter(|r| shown(r, converted) && search::matches(state, r, &criteria))
            .collect()
    } else if let Some(email) = param("email") {
        let fields = kinds(|k| k == super::model::Kind::Email);
        state
            .records(module)
            .values()
            .filter(|r| shown(r, converted))
            .filter(|r| {
                fields
                    .iter()
                    .any(|f| r.text(f).eq_ignore_ascii_case(email.trim()))
            })
            .collect()
    } else if let Some(phone) = param("phone") {
        let fields = kinds(|k| k == super::model::Kind::Phone);
        state
            .records(module)
            .values()
            .filter(|r| shown(r, converted))
            .filter(|r| fields.iter().any(|f| r.text(f) == phone.trim()))
            .collect()
    } else if let Some(word) = param("word") {
        let fields = kinds(|k| {
            k.is_text() || matches!(k, super::model::Kind::Email | super::model::Kind::Phone)
        });
        let word = word.trim().to_lowercase();
        state
            .records(module)
            .values()
            .filter(|r| shown(r, converted))
            .filter(|r| {
                fields
                    .iter()
                    .any(|f| r.text(f).to_lowercase().contains(&word))
            })
            .collect()
    } else {
        return Err(ApiError::param_missing("criteria"));
    };
    Ok(page_answer(
        state,
        &records,
        fields.as_deref(),
        page,
        per_page,
    ))
}

/// `POST /crm/v8/{Module}`: inserts up to 100 records, each on its own (results in input
/// order). Unique fields and the `duplicate_check_fields` given are checked against existing
/// records (`DUPLICATE_DATA`).
fn insert(state: &mut State, req: &RecordedRequest, module: Module) -> Answer {
    let body = body_object(req)?;
    let items = data_items(&body)?;
    let check = string_list(&body, "duplicate_check_fields")?;
    string_list(&body, "trigger")?;
    for (i, name) in check.iter().enumerate() {
        if state.field(module, name).is_none() {
            return Err(ApiError::invalid_data(json!({
                "api_name": "duplicate_check_fields",
                "json_path": format!("$.duplicate_check_fields[{i}]"),
            })));
        }
    }
    let mut results = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("$.data[{i}]");
        let Some(input) = item.as_object() else {
            results.push(error_item(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": "data", "json_path": path, "expected_data_type": "jsonobject"}),
            ));
            continue;
        };
        let outcome = ops::validate(state, module, input, &path, None).and_then(|changes| {
            ops::check_unique(state, module, &changes, &check, &path, None)?;
            Ok(changes)
        });
        match outcome {
            Ok(changes) => {
                let id = ops::create(state, module, changes);
                results.push(success(&state.records(module)[&id], "record added"));
            }
            Err(e) => results.push(e),
        }
    }
    Ok(write_answer(results, 201))
}

/// Validates and applies an update of record `id` (`path` = its JSON path).
fn update_one(
    state: &mut State,
    module: Module,
    id: &str,
    input: &Map<String, Value>,
    path: &str,
) -> Result<u64, Value> {
    let Some(existing) = state.record(module, id).cloned() else {
        return Err(ops::invalid_id(id));
    };
    if existing.is_converted() {
        return Err(error_item(
            "CONVERTED_RECORD",
            "can't update the converted record",
            json!({"id": id}),
        ));
    }
    let changes = ops::validate(state, module, input, path, Some(&existing))?;
    ops::check_unique(state, module, &changes, &[], path, Some(existing.id))?;
    ops::update(state, module, existing.id, changes);
    Ok(existing.id)
}

/// `PUT /crm/v8/{Module}` (each record names its `id`) or `PUT /crm/v8/{Module}/{id}`.
fn update(state: &mut State, req: &RecordedRequest, module: Module, id: Option<&str>) -> Answer {
    let body = body_object(req)?;
    let items = data_items(&body)?;
    string_list(&body, "trigger")?;
    let mut results = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("$.data[{i}]");
        let Some(input) = item.as_object() else {
            results.push(error_item(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": "data", "json_path": path, "expected_data_type": "jsonobject"}),
            ));
            continue;
        };
        let record_id = match id {
            Some(id) => Some(id.to_owned()),
            None => input.get("id").and_then(id_of),
        };
        let Some(record_id) = record_id else {
            results.push(ops::mandatory("id", &format!("{path}.id")));
            continue;
        };
        match update_one(state, module, &record_id, input, &path) {
            Ok(found) => results.push(success(&state.records(module)[&found], "record updated")),
            Err(e) => results.push(e),
        }
    }
    Ok(write_answer(results, 200))
}

/// The duplicate check order of an upsert: the fields given (system duplicate field or unique
/// fields only), then the other unique fields; without input, the system field first.
fn duplicate_check_order(
    state: &State,
    module: Module,
    given: &[String],
) -> Result<Vec<String>, ApiError> {
    let unique: Vec<String> = state
        .fields(module)
        .iter()
        .filter(|f| f.unique)
        .map(|f| f.api_name.clone())
        .collect();
    let system = module.system_duplicate_field();
    for (i, name) in given.iter().enumerate() {
        if name != system && !unique.contains(name) {
            return Err(ApiError::invalid_data(json!({
                "api_name": "duplicate_check_fields",
                "json_path": format!("$.duplicate_check_fields[{i}]"),
            })));
        }
    }
    let mut order: Vec<String> = if given.is_empty() {
        vec![system.to_owned()]
    } else {
        given.to_vec()
    };
    for name in unique {
        if !order.contains(&name) {
            order.push(name);
        }
    }
    Ok(order)
}

/// `POST /crm/v8/{Module}/upsert`: each record updates the first existing record matching a
/// duplicate check field (in order) or is inserted.
fn upsert(state: &mut State, req: &RecordedRequest, module: Module) -> Answer {
    let body = body_object(req)?;
    let items = data_items(&body)?;
    string_list(&body, "trigger")?;
    let given = string_list(&body, "duplicate_check_fields")?;
    let order = duplicate_check_order(state, module, &given)?;
    let mut results = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("$.data[{i}]");
        let Some(input) = item.as_object() else {
            results.push(error_item(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": "data", "json_path": path, "expected_data_type": "jsonobject"}),
            ));
            continue;
        };
        let matched = order.iter().find_map(|field| {
            let value = input.get(field).filter(|v| !v.is_null())?;
            ops::find_duplicate(state, module, field, value, None).map(|id| (id, field.clone()))
        });
        match matched {
            Some((id, field)) => match update_one(state, module, &id.to_string(), input, &path) {
                Ok(found) => {
                    let mut answer = success(&state.records(module)[&found], "record updated");
                    answer["action"] = json!("update");
                    answer["duplicate_field"] = json!(field);
                    results.push(answer);
                }
                Err(e) => results.push(e),
            },
            None => {
                let outcome =
                    ops::validate(state, module, input, &path, None).and_then(|changes| {
                        ops::check_unique(state, module, &changes, &[], &path, None)?;
                        Ok(changes)
                    });
                match outcome {
                    Ok(changes) => {
                        let id = ops::create(state, module, changes);
                        let mut answer = success(&state.records(module)[&id], "record added");
                        answer["action"] = json!("insert");
                        answer["duplicate_field"] = Value::Null;
                        results.push(answer);
                    }
                    Err(e) => results.push(e),
                }
            }
        }
    }
    Ok(write_answer(results, 200))
}

/// `DELETE /crm/v8/{Module}?ids=` or `DELETE /crm/v8/{Module}/{id}`.
fn delete(state: &mut State, req: &RecordedRequest, module: Module, id: Option<&str>) -> Answer {
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_owned()],
        None => req
            .query_param("ids")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if ids.is_empty() {
        return Err(ApiError::param_missing("ids"));
    }
    if ids.len() > MAX_RECORDS_PER_CALL {
        return Err(ApiError::new(
            400,
            "LIMIT_EXCEEDED",
            "Record count exceeded",
            json!({"limit": MAX_RECORDS_PER_CALL}),
        ));
    }
    let mut results = Vec::new();
    for id in ids {
        let found = state.record(module, &id).map(|r| r.id);
        match found {
            Some(found) if ops::delete(state, module, found) => results.push(json!({
                "code": "SUCCESS",
                "details": {"id": id},
                "message": "record deleted",
                "status": "success",
            })),
            _ => results.push(ops::invalid_id(&id)),
        }
    }
    Ok(write_answer(results, 200))
}

// ----- lead conversion ---------------------------------------------------------------------------

/// `INVALID_DATA` / `ID_ALREADY_CONVERTED` about the lead id in the URL (path index 1 after the
/// version: `Leads/{id}/...`).
fn url_id_error(code: &str, message: &str) -> ApiError {
    ApiError::new(400, code, message, json!({"resource_path_index": 1}))
}

fn conversion_error(item: Value) -> ApiError {
    let mut body = Map::new();
    body.insert("data".to_owned(), Value::Array(vec![item]));
    ApiError {
        status: 400,
        body: Value::Object(body),
    }
}

/// The contact a conversion uses instead of creating one: `Contacts.id` of the input, else a
/// contact with the lead's e-mail address (Zoho's order of preference).
fn conversion_contact(
    state: &State,
    options: &Map<String, Value>,
    lead: &Record,
) -> Result<Option<u64>, ApiError> {
    if let Some(contacts) = options.get("Contacts").filter(|v| !v.is_null()) {
        let id = contacts.get("id").and_then(id_of);
        return match id
            .as_deref()
            .and_then(|id| state.record(Module::Contacts, id))
        {
            Some(contact) => Ok(Some(contact.id)),
            None => Err(conversion_error(error_item(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": "id", "json_path": "$.data[0].Contacts.id"}),
            ))),
        };
    }
    let email = lead.text("Email");
    if email.is_empty() {
        return Ok(None);
    }
    Ok(ops::find_duplicate(
        state,
        Module::Contacts,
        "Email",
        &json!(email),
        None,
    ))
}

/// `POST /crm/v8/Leads/{id}/actions/convert`.
fn convert(state: &mut State, opts: &ZohoSimOptions, req: &RecordedRequest, id: &str) -> Answer {
    let Some(lead) = state.record(Module::Leads, id).cloned() else {
        return Err(url_id_error("INVALID_DATA", "invalid data"));
    };
    if lead.is_converted() {
        return Err(url_id_error("ID_ALREADY_CONVERTED", "id already converted"));
    }
    let options: Map<String, Value> = if req.body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        let body = body_object(req)?;
        match body.get("data") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Array(items)) if items.len() <= 1 => match items.first() {
                None => Map::new(),
                Some(Value::Object(map)) => map.clone(),
                Some(_) => {
                    return Err(conversion_error(error_item(
                        "INVALID_DATA",
                        "invalid data",
                        json!({"api_name": "data", "json_path": "$.data[0]", "expected_data_type": "jsonobject"}),
                    )));
                }
            },
            Some(_) => {
                return Err(conversion_error(error_item(
                    "INVALID_DATA",
                    "invalid data",
                    json!({"api_name": "data", "json_path": "$.data"}),
                )));
            }
        }
    };
    if options.get("Accounts").is_some_and(|a| !a.is_null()) {
        // Accounts are not simulated: no account id is valid.
        return Err(conversion_error(error_item(
            "INVALID_DATA",
            "invalid data",
            json!({"api_name": "id", "json_path": "$.data[0].Accounts.id"}),
        )));
    }
    let deal = match options.get("Deals") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(
            ops::validate_conversion_deal(state, map, "$.data[0].Deals")
                .map_err(conversion_error)?,
        ),
        Some(_) => {
            return Err(conversion_error(error_item(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": "Deals", "json_path": "$.data[0].Deals", "expected_data_type": "jsonobject"}),
            )));
        }
    };
    let contact = conversion_contact(state, &options, &lead)?;
    let (contact_id, deal_id) =
        ops::convert_lead(state, opts, lead.id, contact, deal).map_err(conversion_error)?;
    let reference = |module: Module, id: &str| {
        state
            .record(module, id)
            .map(|r| json!({"name": r.display_name(), "id": r.id_text()}))
            .unwrap_or(Value::Null)
    };
    let details = json!({
        "Contacts": reference(Module::Contacts, &contact_id),
        "Deals": deal_id.as_deref().map_or(Value::Null, |d| reference(Module::Deals, d)),
        "Accounts": null,
    });
    Ok(SimResponse::json(
        200,
        &json!({"data": [{
            "code": "SUCCESS",
            "details": details,
            "message": "The record has been converted successfully",
            "status": "success",
        }]}),
    ))
}

/// Changes `Changes` from UI-style `(field, value)` pairs.
pub(super) fn ui_input(fields: &[(&str, Value)]) -> Map<String, Value> {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, body: &str) -> RecordedRequest {
        RecordedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: None,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn credits_per_call() {
        assert_eq!(credits_of(&req("GET", "/crm/v8/Leads", "")), 1);
        let body = |n: usize| {
            json!({"data": (0..n).map(|i| json!({"Last_Name": i.to_string()})).collect::<Vec<_>>()})
                .to_string()
        };
        assert_eq!(credits_of(&req("POST", "/crm/v8/Leads", &body(1))), 1);
        assert_eq!(credits_of(&req("POST", "/crm/v8/Leads", &body(10))), 1);
        assert_eq!(credits_of(&req("POST", "/crm/v8/Leads", &body(11))), 2);
        assert_eq!(credits_of(&req("PUT", "/crm/v8/Deals", &body(100))), 10);
        assert_eq!(
            credits_of(&req("POST", "/crm/v8/Contacts/upsert", &body(25))),
            3
        );
        assert_eq!(
            credits_of(&req("POST", "/crm/v8/Leads/1/actions/convert", "")),
            5
        );
        assert_eq!(credits_of(&req("POST", "/crm/v8/actions/watch", "{}")), 1);
    }
}
