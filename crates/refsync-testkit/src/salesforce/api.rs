//! The HTTP side: routing between the login host (token and identity endpoints) and the REST
//! API, injected failures, sessions, the daily allocation with `Sforce-Limit-Info`, and the REST
//! resources (sObject create / read / update / upsert by external id, sObject Collections
//! create and upsert, query, limits).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::model::{SObject, State, normalize_id, stage_fields};
use super::ops::{self, Mode, SfError, converted_lead};
use super::soql::{self, Table};
use super::{API_VERSION, Inner, MAX_COLLECTION_RECORDS, SalesforceSimOptions, auth};
use crate::sim::{RecordedRequest, SimHandler, SimResponse, percent_decode};

/// The simulator's [`SimHandler`].
pub(super) struct Handler {
    inner: Arc<Inner>,
}

impl Handler {
    pub(super) fn new(inner: Arc<Inner>) -> Handler {
        Handler { inner }
    }
}

/// `[{"message", "errorCode", ...}]` with `status`.
fn errors(status: u16, errors: &[SfError]) -> SimResponse {
    SimResponse::json(
        status,
        &Value::Array(errors.iter().map(SfError::rest).collect()),
    )
}

fn not_found() -> SimResponse {
    errors(
        404,
        &[SfError::new(
            "NOT_FOUND",
            "The requested resource does not exist",
        )],
    )
}

fn external_id_not_found(name: &str) -> SimResponse {
    errors(
        404,
        &[SfError::new(
            "NOT_FOUND",
            format!("Provided external ID field does not exist or is not accessible: {name}"),
        )],
    )
}

fn method_not_allowed(method: &str, allowed: &str) -> SimResponse {
    errors(
        405,
        &[SfError::new(
            "METHOD_NOT_ALLOWED",
            format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
        )],
    )
}

/// The answer `fail_next` injects for `status`.
fn injected(status: u16) -> SimResponse {
    let (code, message) = match status {
        401 => return auth::invalid_session(),
        403 => ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
        404 => ("NOT_FOUND", "The requested resource does not exist"),
        400 => (
            "UNABLE_TO_LOCK_ROW",
            "unable to obtain exclusive access to this record",
        ),
        503 => (
            "SERVER_UNAVAILABLE",
            "Server temporarily unavailable, please retry later",
        ),
        _ => (
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred. Please include this ErrorId if you contact support: 1640442218-95622 (-1325493046)",
        ),
    };
    errors(status, &[SfError::new(code, message)])
}

impl SimHandler for Handler {
    fn handle(&self, req: &RecordedRequest) -> SimResponse {
        let inner = &self.inner;
        let path = req.path.trim_end_matches('/');
        match path {
            "/services/oauth2/token" => auth::token_endpoint(inner, req),
            "/services/oauth2/userinfo" => auth::identity(inner, req),
            _ if path.starts_with("/id/") => auth::identity(inner, req),
            "/services/data" if req.method == "GET" => SimResponse::json(
                200,
                &json!([{
                    "label": "Winter '25",
                    "url": format!("/services/data/v{API_VERSION}"),
                    "version": API_VERSION,
                }]),
            ),
            _ if path.starts_with("/services/data/") => rest(inner, req),
            _ => not_found(),
        }
    }
}

/// `api-usage=<used>/<allocation>`.
fn limit_info(used: u64, allocation: u64) -> String {
    format!("api-usage={used}/{allocation}")
}

/// A REST call: injected failure, session, allocation, then the resource.
fn rest(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let opts = &inner.opts;
    let allocation = opts.daily_api_allocation;
    let mut state = inner.lock();
    if let Some(status) = state.fail_queue.pop_front() {
        if status == 401 {
            return auth::invalid_session();
        }
        let used = state.api_usage();
        return injected(status).with_header("Sforce-Limit-Info", limit_info(used, allocation));
    }
    if !auth::check(&state, inner, req) {
        return auth::invalid_session();
    }
    let used = state.api_usage();
    if used >= allocation {
        return errors(
            403,
            &[SfError::new(
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            )],
        )
        .with_header("Sforce-Limit-Info", limit_info(used, allocation));
    }
    let now = state.now();
    state.api_calls.push_back(now);
    let response = route(&mut state, opts, req);
    response.with_header("Sforce-Limit-Info", limit_info(used + 1, allocation))
}

fn route(state: &mut State, opts: &SalesforceSimOptions, req: &RecordedRequest) -> SimResponse {
    let segments: Vec<String> = req
        .path
        .trim_start_matches("/services/data/")
        .trim_end_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let Some((version, rest)) = segments.split_first() else {
        return not_found();
    };
    if *version != format!("v{API_VERSION}") {
        return not_found();
    }
    let method = req.method.as_str();
    match (method, rest) {
        ("GET", [] | [""]) => SimResponse::json(
            200,
            &json!({
                "sobjects": format!("/services/data/v{API_VERSION}/sobjects"),
                "query": format!("/services/data/v{API_VERSION}/query"),
                "limits": format!("/services/data/v{API_VERSION}/limits"),
                "composite": format!("/services/data/v{API_VERSION}/composite"),
            }),
        ),
        ("GET", ["limits"]) => limits(state, opts),
        ("GET", ["query"]) => query(state, req),
        ("POST", ["sobjects", object]) => create(state, opts, req, object),
        ("GET", ["sobjects", object, id]) => get_by_id(state, req, object, id),
        ("PATCH", ["sobjects", object, id]) => update_by_id(state, opts, req, object, id),
        ("GET", ["sobjects", object, field, value]) => {
            get_by_external_id(state, opts, object, field, value)
        }
        ("PATCH", ["sobjects", object, field, value]) => {
            upsert(state, opts, req, object, field, value)
        }
        ("POST", ["composite", "sobjects"]) => collection_create(state, opts, req),
        ("PATCH", ["composite", "sobjects", object, field]) => {
            collection_upsert(state, opts, req, object, field)
        }
        (_, [] | [""] | ["limits"] | ["query"]) => method_not_allowed(method, "GET,HEAD"),
        (_, ["sobjects", _]) => method_not_allowed(method, "GET,POST"),
        (_, ["sobjects", _, _]) | (_, ["sobjects", _, _, _]) => {
            method_not_allowed(method, "GET,PATCH")
        }
        (_, ["composite", "sobjects"]) => method_not_allowed(method, "POST"),
        (_, ["composite", "sobjects", _, _]) => method_not_allowed(method, "PATCH"),
        _ => not_found(),
    }
}

/// The request body as a JSON object, or Salesforce's `JSON_PARSER_ERROR`.
fn body_object(req: &RecordedRequest, type_name: &str) -> Result<Map<String, Value>, SimResponse> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => {
            let token = if other.is_array() {
                "START_ARRAY"
            } else {
                "VALUE_STRING"
            };
            Err(errors(
                400,
                &[SfError::new(
                    "JSON_PARSER_ERROR",
                    format!(
                        "Cannot deserialize instance of {type_name} from {token} value or request may be missing a required field at [line:1, column:1]"
                    ),
                )],
            ))
        }
        Err(e) => Err(errors(
            400,
            &[SfError::new(
                "JSON_PARSER_ERROR",
                format!(
                    "Unexpected character: {e} at [line:{}, column:{}]",
                    e.line(),
                    e.column()
                ),
            )],
        )),
    }
}

/// `{"id", "success": true, "errors": []}`.
fn save_result(id: &str) -> Value {
    json!({"id": id, "success": true, "errors": []})
}

/// The object of a `/sobjects/{object}` URL (Lead, Contact, Opportunity; case-insensitive).
fn object_of(name: &str) -> Result<SObject, SimResponse> {
    SObject::parse(name).ok_or_else(not_found)
}

// ----- resources ---------------------------------------------------------------------------------

/// `GET /limits`.
fn limits(state: &mut State, opts: &SalesforceSimOptions) -> SimResponse {
    let used = state.api_usage();
    SimResponse::json(
        200,
        &json!({
            "DailyApiRequests": {
                "Max": opts.daily_api_allocation,
                "Remaining": opts.daily_api_allocation.saturating_sub(used),
            }
        }),
    )
}

/// The table SOQL reads for an object name.
fn table(state: &State, name: &str) -> Option<Table> {
    if let Some(sobject) = SObject::parse(name) {
        return Some(Table {
            name: sobject.name().to_owned(),
            fields: state
                .fields(sobject)
                .iter()
                .map(|f| (f.name.clone(), f.kind))
                .collect(),
            rows: state.rows(sobject),
        });
    }
    name.eq_ignore_ascii_case("OpportunityStage")
        .then(|| Table {
            name: "OpportunityStage".to_owned(),
            fields: stage_fields(),
            rows: state.stages.iter().map(|s| s.row()).collect(),
        })
}

/// `GET /query?q=SELECT ...`.
fn query(state: &State, req: &RecordedRequest) -> SimResponse {
    let Some(q) = req.query_param("q") else {
        return errors(
            400,
            &[SfError::new(
                "MALFORMED_QUERY",
                "A query string has to be specified",
            )],
        );
    };
    match soql::execute(&q, |name| table(state, name)) {
        Ok(answer) => {
            let records: Vec<Value> = answer
                .rows
                .iter()
                .map(|row| {
                    let mut out = answer.projected(row);
                    let id = row.get("Id").and_then(Value::as_str).unwrap_or_default();
                    out.insert(
                        "attributes".to_owned(),
                        json!({"type": answer.object, "url": State::record_url(&answer.object, id)}),
                    );
                    Value::Object(out)
                })
                .collect();
            SimResponse::json(
                200,
                &json!({"totalSize": records.len(), "done": true, "records": records}),
            )
        }
        Err(e) => errors(400, &[SfError::new(e.code, e.message)]),
    }
}

/// `POST /sobjects/{object}` → `201 {id, success, errors}`.
fn create(
    state: &mut State,
    opts: &SalesforceSimOptions,
    req: &RecordedRequest,
    object: &str,
) -> SimResponse {
    let sobject = match object_of(object) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let input = match body_object(req, sobject.name()) {
        Ok(m) => m,
        Err(e) => return e,
    };
    match ops::validate(state, opts, sobject, &input, None, Mode::Create) {
        Ok(changes) => {
            let id = ops::create(state, sobject, changes);
            SimResponse::json(201, &save_result(&id))
        }
        Err(e) => errors(400, &e),
    }
}

/// The names of a `fields=` parameter (canonical), or an `INVALID_FIELD` answer.
fn requested_fields(
    state: &State,
    sobject: SObject,
    req: &RecordedRequest,
) -> Result<Option<Vec<String>>, SimResponse> {
    let Some(raw) = req.query_param("fields").filter(|f| !f.trim().is_empty()) else {
        return Ok(None);
    };
    let mut names = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(field) = state.field(sobject, name) else {
            return Err(errors(
                400,
                &[SfError::new(
                    "INVALID_FIELD",
                    format!(
                        "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                        sobject.name()
                    ),
                )],
            ));
        };
        if !names.contains(&field.name) {
            names.push(field.name.clone());
        }
    }
    Ok(Some(names))
}

/// `GET /sobjects/{object}/{id}` (`fields=` optional).
fn get_by_id(state: &State, req: &RecordedRequest, object: &str, id: &str) -> SimResponse {
    let sobject = match object_of(object) {
        Ok(o) => o,
        Err(e) => return e,
    };
    if normalize_id(id).is_none() {
        // Salesforce reads a segment that is not an id as an external id field name.
        return external_id_not_found(id);
    }
    let fields = match requested_fields(state, sobject, req) {
        Ok(f) => f,
        Err(e) => return e,
    };
    match state.record(sobject, id) {
        Some(record) => SimResponse::json(200, &state.record_json(record, fields.as_deref())),
        None => not_found(),
    }
}

/// `PATCH /sobjects/{object}/{id}` → `204`.
fn update_by_id(
    state: &mut State,
    opts: &SalesforceSimOptions,
    req: &RecordedRequest,
    object: &str,
    id: &str,
) -> SimResponse {
    let sobject = match object_of(object) {
        Ok(o) => o,
        Err(e) => return e,
    };
    if normalize_id(id).is_none() {
        return external_id_not_found(id);
    }
    let Some(existing) = state.record(sobject, id).cloned() else {
        return not_found();
    };
    let input = match body_object(req, sobject.name()) {
        Ok(m) => m,
        Err(e) => return e,
    };
    if existing.is_converted() {
        return errors(400, &[converted_lead()]);
    }
    match ops::validate(state, opts, sobject, &input, Some(&existing), Mode::Update) {
        Ok(changes) => {
            ops::update(state, sobject, &existing.id, changes);
            SimResponse::empty(204)
        }
        Err(e) => errors(400, &e),
    }
}

/// The object and external id field of an upsert URL, or the `404` Salesforce gives for a
/// field that is not an external id of the object.
fn external_id_target(
    opts: &SalesforceSimOptions,
    object: &str,
    field: &str,
) -> Result<SObject, SimResponse> {
    let sobject = object_of(object)?;
    if !sobject.has_external_id() || !field.eq_ignore_ascii_case(&opts.external_id_field) {
        return Err(external_id_not_found(field));
    }
    Ok(sobject)
}

/// `300` with the URLs of the matching records.
fn multiple_choices(sobject: SObject, ids: &[String]) -> SimResponse {
    SimResponse::json(
        300,
        &Value::Array(
            ids.iter()
                .map(|id| json!(State::record_url(sobject.name(), id)))
                .collect(),
        ),
    )
}

/// `GET /sobjects/{object}/{externalIdField}/{value}`.
fn get_by_external_id(
    state: &State,
    opts: &SalesforceSimOptions,
    object: &str,
    field: &str,
    value: &str,
) -> SimResponse {
    let sobject = match external_id_target(opts, object, field) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let ids = ops::matches_external_id(state, opts, sobject, value);
    match ids.as_slice() {
        [] => not_found(),
        [id] => match state.record(sobject, id) {
            Some(record) => SimResponse::json(200, &state.record_json(record, None)),
            None => not_found(),
        },
        _ => multiple_choices(sobject, &ids),
    }
}

/// `PATCH /sobjects/{object}/{externalIdField}/{value}`: `201 created: true`, `200 created:
/// false`, `300` for several matches (nothing written), `404` with `updateOnly=true` and no
/// match.
fn upsert(
    state: &mut State,
    opts: &SalesforceSimOptions,
    req: &RecordedRequest,
    object: &str,
    field: &str,
    value: &str,
) -> SimResponse {
    let sobject = match external_id_target(opts, object, field) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let input = match body_object(req, sobject.name()) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let ids = ops::matches_external_id(state, opts, sobject, value);
    match ids.as_slice() {
        [] => {
            if req.query_param("updateOnly").as_deref() == Some("true") {
                return not_found();
            }
            // The body must not name the external id field (or Id); the URL's value is set.
            let named = input.keys().find(|k| {
                k.eq_ignore_ascii_case(&opts.external_id_field) || k.eq_ignore_ascii_case("Id")
            });
            if let Some(key) = named {
                let name = state
                    .field(sobject, key)
                    .map_or(key.as_str(), |f| f.name.as_str());
                return errors(
                    400,
                    &[SfError::new(
                        "INVALID_FIELD",
                        format!("The {name} field should not be specified in the sobject data."),
                    )],
                );
            }
            let mut full = input.clone();
            full.insert(opts.external_id_field.clone(), json!(value));
            match ops::validate(state, opts, sobject, &full, None, Mode::UpsertCollection) {
                Ok(changes) => {
                    let id = ops::create(state, sobject, changes);
                    let mut answer = save_result(&id);
                    answer["created"] = json!(true);
                    SimResponse::json(201, &answer)
                }
                Err(e) => errors(400, &e),
            }
        }
        [id] => {
            let Some(existing) = state.record(sobject, id).cloned() else {
                return not_found();
            };
            if existing.is_converted() {
                return errors(400, &[converted_lead()]);
            }
            match ops::validate(
                state,
                opts,
                sobject,
                &input,
                Some(&existing),
                Mode::UpsertSingle,
            ) {
                Ok(changes) => {
                    ops::update(state, sobject, &existing.id, changes);
                    let mut answer = save_result(&existing.id);
                    answer["created"] = json!(false);
                    SimResponse::json(200, &answer)
                }
                Err(e) => errors(400, &e),
            }
        }
        _ => multiple_choices(sobject, &ids),
    }
}

/// A record of an sObject Collections call: its `attributes.type` and its fields.
type TypedRecord = (String, Map<String, Value>);

/// The body of an sObject Collections call: `allOrNone` and the records (each with
/// `attributes.type`), at most 200.
fn collection_body(req: &RecordedRequest) -> Result<(bool, Vec<TypedRecord>), SimResponse> {
    let body = body_object(req, "SObjectCollection")?;
    let all_or_none = match body.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(errors(
                400,
                &[SfError::new(
                    "JSON_PARSER_ERROR",
                    format!(
                        "Cannot deserialize instance of boolean from {} value {other} or request may be missing a required field",
                        if other.is_string() {
                            "VALUE_STRING"
                        } else {
                            "VALUE_NUMBER_INT"
                        }
                    ),
                )],
            ));
        }
    };
    let Some(Value::Array(items)) = body.get("records") else {
        return Err(errors(
            400,
            &[SfError::new(
                "JSON_PARSER_ERROR",
                "The request body needs a records array",
            )],
        ));
    };
    if items.len() > MAX_COLLECTION_RECORDS {
        return Err(errors(
            400,
            &[SfError::new(
                "EXCEEDED_ID_LIMIT",
                format!(
                    "record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS} records into this call"
                ),
            )],
        ));
    }
    let mut records = Vec::with_capacity(items.len());
    for item in items {
        let record = item.as_object().cloned();
        let type_name = record
            .as_ref()
            .and_then(|r| r.get("attributes"))
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        match (record, type_name) {
            (Some(record), Some(type_name)) => records.push((type_name, record)),
            _ => {
                return Err(errors(
                    400,
                    &[SfError::new(
                        "JSON_PARSER_ERROR",
                        "Each record needs an attributes map with a type",
                    )],
                ));
            }
        }
    }
    Ok((all_or_none, records))
}

/// What one record of a collection call came to.
type ItemResult = Result<(String, Option<bool>), Vec<SfError>>;

/// Runs `items` in order; with `all_or_none`, one failure rolls every write of the call back
/// (records and their queued outbound messages) and the others report
/// `ALL_OR_NONE_OPERATION_ROLLED_BACK`. Answers `200` with one result per record.
fn run_collection(
    state: &mut State,
    all_or_none: bool,
    count: usize,
    mut one: impl FnMut(&mut State, usize) -> ItemResult,
) -> SimResponse {
    let records_before = state.records.clone();
    let pending_before = state.outbox.pending.len();
    let mut results: Vec<ItemResult> = (0..count).map(|i| one(state, i)).collect();
    if all_or_none && results.iter().any(Result::is_err) {
        state.records = records_before;
        state.outbox.pending.truncate(pending_before);
        for result in &mut results {
            if result.is_ok() {
                *result = Err(vec![SfError::with_fields(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    &[],
                )]);
            }
        }
    }
    let answer: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok((id, created)) => {
                let mut item = save_result(&id);
                if let Some(created) = created {
                    item["created"] = json!(created);
                }
                item
            }
            Err(e) => json!({
                "success": false,
                "errors": e.iter().map(SfError::collection).collect::<Vec<_>>(),
            }),
        })
        .collect();
    SimResponse::json(200, &Value::Array(answer))
}

/// `POST /composite/sobjects`: creates up to 200 records of any simulated object, in order.
fn collection_create(
    state: &mut State,
    opts: &SalesforceSimOptions,
    req: &RecordedRequest,
) -> SimResponse {
    let (all_or_none, records) = match collection_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    run_collection(state, all_or_none, records.len(), |state, i| {
        let (type_name, record) = &records[i];
        let Some(sobject) = SObject::parse(type_name) else {
            return Err(vec![SfError::with_fields(
                "INVALID_TYPE",
                format!("sObject type '{type_name}' is not supported."),
                &[],
            )]);
        };
        let changes = ops::validate(state, opts, sobject, record, None, Mode::Create)?;
        Ok((ops::create(state, sobject, changes), None))
    })
}

/// `PATCH /composite/sobjects/{object}/{externalIdField}`: upserts up to 200 records, each
/// carrying the external id field, in order.
fn collection_upsert(
    state: &mut State,
    opts: &SalesforceSimOptions,
    req: &RecordedRequest,
    object: &str,
    field: &str,
) -> SimResponse {
    let sobject = match external_id_target(opts, object, field) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let (all_or_none, records) = match collection_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let ext = opts.external_id_field.clone();
    let value_of = |record: &Map<String, Value>| -> Option<String> {
        record
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&ext))
            .and_then(|(_, v)| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    };
    let values: Vec<Option<String>> = records.iter().map(|(_, r)| value_of(r)).collect();
    run_collection(state, all_or_none, records.len(), |state, i| {
        let (type_name, record) = &records[i];
        if SObject::parse(type_name) != Some(sobject) {
            return Err(vec![SfError::with_fields(
                "INVALID_TYPE",
                format!(
                    "sObject type '{type_name}' does not match the URL's {}",
                    sobject.name()
                ),
                &[],
            )]);
        }
        let Some(value) = &values[i] else {
            return Err(vec![SfError::with_fields(
                "MISSING_ARGUMENT",
                format!("{ext} not specified"),
                &[],
            )]);
        };
        let repeated = values
            .iter()
            .enumerate()
            .any(|(j, v)| j != i && v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(value)));
        if repeated {
            return Err(vec![SfError::with_fields(
                "DUPLICATE_VALUE",
                format!("Duplicate external id specified: {value}"),
                &[],
            )]);
        }
        let ids = ops::matches_external_id(state, opts, sobject, value);
        match ids.as_slice() {
            [] => {
                let changes =
                    ops::validate(state, opts, sobject, record, None, Mode::UpsertCollection)?;
                Ok((ops::create(state, sobject, changes), Some(true)))
            }
            [id] => {
                let existing = state
                    .record(sobject, id)
                    .cloned()
                    .ok_or_else(|| vec![SfError::new("NOT_FOUND", "record vanished")])?;
                if existing.is_converted() {
                    return Err(vec![converted_lead()]);
                }
                let changes = ops::validate(
                    state,
                    opts,
                    sobject,
                    record,
                    Some(&existing),
                    Mode::UpsertCollection,
                )?;
                ops::update(state, sobject, &existing.id, changes);
                Ok((existing.id, Some(false)))
            }
            _ => Err(vec![SfError::with_fields(
                "DUPLICATE_EXTERNAL_ID",
                format!(
                    "{ext}: more than one record found for external id field: [{}]",
                    ids.join(", ")
                ),
                &[],
            )]),
        }
    })
}
