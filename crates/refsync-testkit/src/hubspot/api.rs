//! The HTTP side: faults, authentication, the rolling rate limit, routing and the CRM v3
//! endpoints.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::auth::{self, Credentials};
use super::events::Source;
use super::model::{ObjectType, PropertyDef, State, iso};
use super::ops::{self, ApiError};
use super::{HubSpotSimOptions, Inner, MAX_BATCH_INPUTS, RATE_LIMIT_INTERVAL_MS};
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

type Answer = Result<SimResponse, ApiError>;

impl SimHandler for Handler {
    fn handle(&self, req: &RecordedRequest) -> SimResponse {
        if req.path.starts_with("/oauth/") {
            if req.path.trim_end_matches('/') == "/oauth/v1/token" {
                return auth::token_endpoint(&self.inner, req);
            }
            let mut state = self.inner.lock();
            return error_response(&mut state, &unknown_route(req));
        }
        let opts = &self.inner.opts;
        let mut state = self.inner.lock();
        let now = Instant::now();
        prune(&mut state, now);

        let response = if let Some(status) = state.fail_queue.pop_front() {
            if status == 429 {
                state.rate_limit_violations += 1;
            }
            injected(&mut state, status)
        } else {
            match auth::check(&state, opts, req) {
                Credentials::Valid => {
                    if state.recent.len() >= opts.burst_per_10s as usize {
                        state.rate_limit_violations += 1;
                        rate_limited(&mut state)
                    } else {
                        state.recent.push_back(now);
                        match route(&mut state, opts, req) {
                            Ok(response) => response,
                            Err(e) => error_response(&mut state, &e),
                        }
                    }
                }
                other => {
                    let body = auth::unauthorized(&mut state, other);
                    SimResponse::json(401, &body)
                }
            }
        };
        let max = opts.burst_per_10s as usize;
        response
            .with_header("X-HubSpot-RateLimit-Max", max.to_string())
            .with_header(
                "X-HubSpot-RateLimit-Remaining",
                max.saturating_sub(state.recent.len()).to_string(),
            )
            .with_header(
                "X-HubSpot-RateLimit-Interval-Milliseconds",
                RATE_LIMIT_INTERVAL_MS.to_string(),
            )
    }
}

/// Forgets requests older than the rolling window.
fn prune(state: &mut State, now: Instant) {
    let window = Duration::from_millis(RATE_LIMIT_INTERVAL_MS);
    while state
        .recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        state.recent.pop_front();
    }
}

fn error_response(state: &mut State, error: &ApiError) -> SimResponse {
    let correlation_id = state.uuid();
    SimResponse::json(error.status, &error.body(&correlation_id))
}

fn rate_limited(state: &mut State) -> SimResponse {
    let correlation_id = state.uuid();
    SimResponse::json(
        429,
        &json!({
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id,
            "policyName": "TEN_SECONDLY_ROLLING",
            "category": "RATE_LIMITS",
        }),
    )
}

/// The answer `fail_next` injects for `status`.
fn injected(state: &mut State, status: u16) -> SimResponse {
    let (category, message) = match status {
        429 => return rate_limited(state),
        401 => {
            let body = auth::unauthorized(state, Credentials::Invalid);
            return SimResponse::json(401, &body);
        }
        400 => ("VALIDATION_ERROR", "Invalid input (simulated failure)."),
        403 => (
            "MISSING_SCOPES",
            "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
        ),
        404 => ("OBJECT_NOT_FOUND", "resource not found"),
        409 => ("CONFLICT", "Conflict (simulated failure)."),
        423 => (
            "LOCKED",
            "The record is locked by a concurrent update; retry after at least 2 seconds.",
        ),
        500..=599 => ("INTERNAL_ERROR", "internal error"),
        _ => ("ERROR", "simulated failure"),
    };
    error_response(state, &ApiError::new(status, category, message))
}

fn unknown_route(req: &RecordedRequest) -> ApiError {
    ApiError::not_found(format!(
        "No route for {} {} (not simulated)",
        req.method, req.path
    ))
}

// ----- routing -----------------------------------------------------------------------------------

fn route(state: &mut State, opts: &HubSpotSimOptions, req: &RecordedRequest) -> Answer {
    let path = req.path.trim_end_matches('/');
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method.as_str();
    match segments.as_slice() {
        ["crm", "v3", "objects", ty, rest @ ..] => {
            let ty = object_type(ty)?;
            match (method, rest) {
                ("GET", []) => list_objects(state, req, ty),
                ("POST", []) => create_object(state, opts, req, ty),
                ("POST", ["batch", "read"]) => batch_read(state, req, ty),
                ("POST", ["batch", "create"]) => batch_create(state, opts, req, ty),
                ("POST", ["batch", "update"]) => batch_update(state, opts, req, ty),
                ("POST", ["batch", "upsert"]) => batch_upsert(state, opts, req, ty),
                ("GET", [id]) => get_object(state, req, ty, id),
                ("PATCH", [id]) => patch_object(state, opts, req, ty, id),
                _ => Err(unknown_route(req)),
            }
        }
        ["crm", "v3", "associations", from, to, "batch", action] if method == "POST" => {
            let from = association_type(from)?;
            let to = association_type(to)?;
            if from == to {
                return Err(ApiError::validation(format!(
                    "Associations between {} and {} are not simulated (only deals and contacts)",
                    from.plural(),
                    to.plural()
                )));
            }
            match *action {
                "read" => associations_read(state, req, from),
                "create" => associations_create(state, opts, req, from, to, false),
                "archive" => associations_create(state, opts, req, from, to, true),
                _ => Err(unknown_route(req)),
            }
        }
        ["crm", "v3", "pipelines", ty, rest @ ..] if method == "GET" => {
            pipeline_object_type(ty)?;
            match rest {
                [] => Ok(ok(
                    200,
                    &json!({"results": state.pipelines.iter().map(|p| p.to_json()).collect::<Vec<_>>()}),
                )),
                [id] => Ok(ok(200, &find_pipeline(state, id)?.to_json())),
                [id, "stages"] => {
                    let pipeline = find_pipeline(state, id)?;
                    Ok(ok(
                        200,
                        &json!({"results": pipeline.stages.iter().map(|s| s.to_json()).collect::<Vec<_>>()}),
                    ))
                }
                [id, "stages", stage] => {
                    let pipeline = find_pipeline(state, id)?;
                    let stage = pipeline.stage(stage).ok_or_else(|| {
                        ApiError::not_found(format!(
                            "Unable to find stage with ID '{stage}' in pipeline '{id}'."
                        ))
                    })?;
                    Ok(ok(200, &stage.to_json()))
                }
                _ => Err(unknown_route(req)),
            }
        }
        ["crm", "v3", "properties", ty, rest @ ..] => {
            let ty = object_type(ty)?;
            match (method, rest) {
                ("GET", []) => {
                    let results: Vec<Value> = state
                        .props(ty)
                        .values()
                        .map(|def| state.property_json(ty, def))
                        .collect();
                    Ok(ok(200, &json!({ "results": results })))
                }
                ("POST", []) => create_property(state, req, ty),
                ("GET", [name]) => {
                    let def = state.props(ty).get(*name).ok_or_else(|| {
                        ApiError::not_found(format!(
                            "Unable to find property named {name} for object type {}",
                            ty.plural()
                        ))
                    })?;
                    Ok(ok(200, &state.property_json(ty, def)))
                }
                _ => Err(unknown_route(req)),
            }
        }
        _ => Err(unknown_route(req)),
    }
}

fn ok(status: u16, body: &Value) -> SimResponse {
    SimResponse::json(status, body)
}

fn object_type(segment: &str) -> Result<ObjectType, ApiError> {
    ObjectType::parse(segment, false).ok_or_else(|| {
        ApiError::validation(format!(
            "Unable to infer object type from: {segment} (the simulator serves contacts/0-1 and deals/0-3)"
        ))
    })
}

fn association_type(segment: &str) -> Result<ObjectType, ApiError> {
    ObjectType::parse(segment, true).ok_or_else(|| {
        ApiError::validation(format!(
            "Unable to infer object type from: {segment} (the simulator has contacts and deals)"
        ))
    })
}

fn pipeline_object_type(segment: &str) -> Result<(), ApiError> {
    match ObjectType::parse(segment, true) {
        Some(ObjectType::Deal) => Ok(()),
        Some(ObjectType::Contact) => Err(ApiError::validation(
            "Pipelines are not supported for object type contacts",
        )),
        None => Err(ApiError::validation(format!(
            "Unable to infer object type from: {segment} (the simulator has deal pipelines)"
        ))),
    }
}

fn find_pipeline<'a>(state: &'a State, id: &str) -> Result<&'a super::model::Pipeline, ApiError> {
    state
        .pipeline(id)
        .ok_or_else(|| ApiError::not_found(format!("Unable to find pipeline with ID '{id}'.")))
}

// ----- input helpers -----------------------------------------------------------------------------

fn body_object(req: &RecordedRequest) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::validation(
            "Invalid input JSON: the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::validation(format!("Invalid input JSON: {e}"))),
    }
}

/// Every value of query parameter `name`, comma lists split.
fn query_list(req: &RecordedRequest, name: &str) -> Option<Vec<String>> {
    let pairs = req.query_pairs();
    let values: Vec<&String> = pairs
        .iter()
        .filter(|(n, _)| n == name || n == &format!("{name}[]"))
        .map(|(_, v)| v)
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// A JSON array of strings in the body (`properties`, `propertiesWithHistory`).
fn body_list(body: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::validation(format!("Invalid input JSON: `{key}` must list strings"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::validation(format!(
            "Invalid input JSON: `{key}` must be an array"
        ))),
    }
}

/// The names among `requested` that are properties of `ty` (unknown names are ignored, as
/// HubSpot does on reads); the type's default set when nothing was requested.
fn read_properties(state: &State, ty: ObjectType, requested: Option<Vec<String>>) -> Vec<String> {
    match requested {
        None => ty
            .default_properties()
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        Some(list) => {
            let defs = state.props(ty);
            let mut seen = BTreeSet::new();
            list.into_iter()
                .filter(|n| defs.contains_key(n) && seen.insert(n.clone()))
                .collect()
        }
    }
}

fn history_properties(
    state: &State,
    ty: ObjectType,
    requested: Option<Vec<String>>,
) -> Vec<String> {
    let defs = state.props(ty);
    let mut seen = BTreeSet::new();
    requested
        .unwrap_or_default()
        .into_iter()
        .filter(|n| defs.contains_key(n) && seen.insert(n.clone()))
        .collect()
}

/// The `idProperty` of a request: `None` or `hs_object_id` = the record id; anything else must
/// identify records of `ty`.
fn id_property(
    state: &State,
    ty: ObjectType,
    name: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None | Some("hs_object_id") => Ok(None),
        Some(name) if state.is_id_property(ty, name) => Ok(Some(name.to_owned())),
        Some(name) if !state.props(ty).contains_key(name) => Err(ApiError::validation(format!(
            "Property \"{name}\" does not exist"
        ))),
        Some(name) => Err(ApiError::validation(format!(
            "Property \"{name}\" is not a unique identifier for {}: idProperty must be a property created with hasUniqueValue=true{}",
            ty.plural(),
            if ty == ObjectType::Contact {
                " (or email)"
            } else {
                ""
            }
        ))),
    }
}

fn not_found(ty: ObjectType, id: &str) -> ApiError {
    ApiError::not_found(format!(
        "Object not found.  {} {id} does not exist.",
        ty.upper()
    ))
    .with_context("id", &[id.to_owned()])
}

/// The inputs of a batch call: an array of at most [`MAX_BATCH_INPUTS`].
fn batch_inputs(body: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, ApiError> {
    let Some(Value::Array(items)) = body.get("inputs") else {
        return Err(ApiError::validation(
            "Invalid input JSON: `inputs` must be an array",
        ));
    };
    if items.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::validation(format!(
            "Too many inputs: {}. Batch endpoints take at most {MAX_BATCH_INPUTS} inputs.",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| match item {
            Value::Object(map) => Ok(map.clone()),
            _ => Err(ApiError::validation(
                "Invalid input JSON: each input must be an object",
            )),
        })
        .collect()
}

/// An input's `id` as text (strings, or numbers).
fn input_id(input: &Map<String, Value>) -> Result<String, ApiError> {
    match input.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(ApiError::validation(
            "Invalid input JSON: each input needs an `id`",
        )),
    }
}

fn duplicate_ids(ids: &[String]) -> Result<(), ApiError> {
    let mut seen = BTreeSet::new();
    let mut duplicates = Vec::new();
    for id in ids {
        if !seen.insert(id.to_lowercase()) && !duplicates.contains(id) {
            duplicates.push(id.clone());
        }
    }
    if duplicates.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "Duplicate IDs found in batch input: [{}]. IDs must be unique",
            duplicates.join(", ")
        ))
        .with_context("ids", &duplicates))
    }
}

fn batch_answer(
    status: u16,
    results: Vec<Value>,
    errors: Vec<Value>,
    started: &str,
) -> SimResponse {
    let mut body = json!({
        "status": "COMPLETE",
        "results": Value::Array(results),
        "startedAt": started,
        "completedAt": iso(&Utc::now()),
    });
    if errors.is_empty() {
        return ok(status, &body);
    }
    body["numErrors"] = json!(errors.len());
    body["errors"] = Value::Array(errors);
    ok(207, &body)
}

/// A `StandardError` item of a `207` answer.
fn standard_error(category: &str, message: &str, context_ids: &[String]) -> Value {
    json!({
        "status": "error",
        "category": category,
        "message": message,
        "context": {"ids": context_ids},
        "errors": [],
        "links": {},
    })
}

/// `associations` of a read: the other type's ids when requested and not empty.
fn with_associations(
    state: &State,
    ty: ObjectType,
    id: u64,
    requested: &[String],
    mut object: Value,
) -> Value {
    let wants_other = requested
        .iter()
        .any(|r| ObjectType::parse(r, true) == Some(ty.other()));
    if !wants_other {
        return object;
    }
    let ids = state.associated(ty, id);
    if ids.is_empty() {
        return object;
    }
    let results: Vec<Value> = ids
        .iter()
        .map(|other| json!({"id": other.to_string(), "type": ty.association_to_other()}))
        .collect();
    let mut associations = Map::new();
    associations.insert(
        ty.other().plural().to_owned(),
        json!({ "results": results }),
    );
    object["associations"] = Value::Object(associations);
    object
}

// ----- objects -------------------------------------------------------------------------------

fn list_objects(state: &mut State, req: &RecordedRequest, ty: ObjectType) -> Answer {
    let limit = match req.query_param("limit") {
        None => 10,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::validation("limit must be a positive integer"))?
            .min(100),
    };
    let after = match req.query_param("after") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::validation(format!("Invalid after cursor: {v}")))?,
    };
    let properties = read_properties(state, ty, query_list(req, "properties"));
    let history = history_properties(state, ty, query_list(req, "propertiesWithHistory"));
    let associations = query_list(req, "associations").unwrap_or_default();
    let page: Vec<&super::model::Record> = state
        .records(ty)
        .range(after..)
        .map(|(_, r)| r)
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| page[limit].id);
    let results: Vec<Value> = page
        .iter()
        .take(limit)
        .map(|r| {
            with_associations(
                state,
                ty,
                r.id,
                &associations,
                r.to_json(ty, &properties, &history),
            )
        })
        .collect();
    let mut body = json!({ "results": results });
    if let Some(next) = next {
        body["paging"] =
            json!({"next": {"after": next.to_string(), "link": format!("?after={next}")}});
    }
    Ok(ok(200, &body))
}

fn create_object(
    state: &mut State,
    opts: &HubSpotSimOptions,
    req: &RecordedRequest,
    ty: ObjectType,
) -> Answer {
    let body = body_object(req)?;
    let values = ops::input_properties(body.get("properties"))?;
    let changes = ops::validate(state, opts, ty, values, None)?;
    let targets = ops::create_associations(state, ty, body.get("associations"))?;
    let id = ops::create(state, opts, ty, changes, Source::Api);
    ops::associate_all(state, opts, ty, id, &targets, Source::Api);
    Ok(ok(201, &state.records(ty)[&id].to_json_all()))
}

fn get_object(state: &mut State, req: &RecordedRequest, ty: ObjectType, id: &str) -> Answer {
    let by = id_property(state, ty, req.query_param("idProperty").as_deref())?;
    let found = state
        .find(ty, by.as_deref(), id)
        .ok_or_else(|| not_found(ty, id))?;
    let properties = read_properties(state, ty, query_list(req, "properties"));
    let history = history_properties(state, ty, query_list(req, "propertiesWithHistory"));
    let associations = query_list(req, "associations").unwrap_or_default();
    let record = &state.records(ty)[&found];
    let object = record.to_json(ty, &properties, &history);
    Ok(ok(
        200,
        &with_associations(state, ty, found, &associations, object),
    ))
}

fn patch_object(
    state: &mut State,
    opts: &HubSpotSimOptions,
    req: &RecordedRequest,
    ty: ObjectType,
    id: &str,
) -> Answer {
    let by = id_property(state, ty, req.query_param("idProperty").as_deref())?;
    let found = state
        .find(ty, by.as_deref(), id)
        .ok_or_else(|| not_found(ty, id))?;
    let body = body_object(req)?;
    let values = ops::input_properties(body.get("properties"))?;
    let changes = ops::validate(state, opts, ty, values, Some(found))?;
    ops::update(state, opts, ty, found, changes, Source::Api);
    Ok(ok(200, &state.records(ty)[&found].to_json_all()))
}

fn batch_read(state: &mut State, req: &RecordedRequest, ty: ObjectType) -> Answer {
    let started = iso(&Utc::now());
    let body = body_object(req)?;
    let by = id_property(state, ty, body.get("idProperty").and_then(Value::as_str))?;
    let properties = read_properties(state, ty, body_list(&body, "properties")?);
    let history = history_properties(state, ty, body_list(&body, "propertiesWithHistory")?);
    let inputs = batch_inputs(&body)?;
    let mut results = Vec::new();
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    for input in &inputs {
        let id = input_id(input)?;
        match state.find(ty, by.as_deref(), &id) {
            Some(found) => {
                if seen.insert(found) {
                    results.push(state.records(ty)[&found].to_json(ty, &properties, &history));
                }
            }
            None => {
                if !missing.contains(&id) {
                    missing.push(id);
                }
            }
        }
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![standard_error(
            "OBJECT_NOT_FOUND",
            &format!(
                "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
                ty.upper()
            ),
            &missing,
        )]
    };
    Ok(batch_answer(200, results, errors, &started))
}

fn batch_create(
    state: &mut State,
    opts: &HubSpotSimOptions,
    req: &RecordedRequest,
    ty: ObjectType,
) -> Answer {
    let started = iso(&Utc::now());
    let body = body_object(req)?;
    let inputs = batch_inputs(&body)?;
    let mut planned = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let values = ops::input_properties(input.get("properties"))?;
        let changes = ops::validate(state, opts, ty, values, None)?;
        let targets = ops::create_associations(state, ty, input.get("associations"))?;
        planned.push((changes, targets));
    }
    unique_within_batch(state, ty, planned.iter().map(|(c, _)| c))?;
    let mut results = Vec::with_capacity(planned.len());
    for (changes, targets) in planned {
        let id = ops::create(state, opts, ty, changes, Source::Api);
        ops::associate_all(state, opts, ty, id, &targets, Source::Api);
        results.push(state.records(ty)[&id].to_json_all());
    }
    Ok(batch_answer(201, results, Vec::new(), &started))
}

/// Two inputs of one batch may not set the same value of a unique property.
fn unique_within_batch<'a>(
    state: &State,
    ty: ObjectType,
    changes: impl Iterator<Item = &'a std::collections::BTreeMap<String, String>>,
) -> Result<(), ApiError> {
    let mut seen = BTreeSet::new();
    for change in changes {
        for (name, value) in change {
            if value.is_empty() || !state.is_id_property(ty, name) {
                continue;
            }
            if !seen.insert((name.clone(), value.to_lowercase())) {
                return Err(ApiError::validation(format!(
                    "Duplicate values of unique property \"{name}\" in batch input: [{value}]"
                ))
                .with_context("ids", std::slice::from_ref(value)));
            }
        }
    }
    Ok(())
}

fn batch_update(
    state: &mut State,
    opts: &HubSpotSimOptions,
    req: &RecordedRequest,
    ty: ObjectType,
) -> Answer {
    let started = iso(&Utc::now());
    let body = body_object(req)?;
    let inputs = batch_inputs(&body)?;
    let ids = inputs.iter().map(input_id).collect::<Result<Vec<_>, _>>()?;
    duplicate_ids(&ids)?;
    let mut planned = Vec::new();
    let mut missing = Vec::new();
    for (input, id) in inputs.iter().zip(&ids) {
        let by = id_property(state, ty, input.get("idProperty").and_then(Value::as_str))?;
        let Some(found) = state.find(ty, by.as_deref(), id) else {
            missing.push(id.clone());
            continue;
        };
        let values = ops::input_properties(input.get("properties"))?;
        let changes = ops::validate(state, opts, ty, values, Some(found))?;
        planned.push((found, changes));
    }
    let mut results = Vec::with_capacity(planned.len());
    for (found, changes) in planned {
        ops::update(state, opts, ty, found, changes, Source::Api);
        results.push(state.records(ty)[&found].to_json_all());
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![standard_error(
            "OBJECT_NOT_FOUND",
            &format!(
                "Could not update some {} objects, they may be deleted or not exist. Check that ids are valid.",
                ty.upper()
            ),
            &missing,
        )]
    };
    Ok(batch_answer(200, results, errors, &started))
}

fn batch_upsert(
    state: &mut State,
    opts: &HubSpotSimOptions,
    req: &RecordedRequest,
    ty: ObjectType,
) -> Answer {
    let started = iso(&Utc::now());
    let body = body_object(req)?;
    let inputs = batch_inputs(&body)?;
    let ids = inputs.iter().map(input_id).collect::<Result<Vec<_>, _>>()?;
    duplicate_ids(&ids)?;
    let mut planned = Vec::with_capacity(inputs.len());
    for (input, id) in inputs.iter().zip(&ids) {
        let by = input.get("idProperty").and_then(Value::as_str);
        let Some(by) = id_property(state, ty, by)? else {
            return Err(ApiError::validation(format!(
                "Upsert needs an idProperty naming a unique property ({}); input {id} has none",
                if ty == ObjectType::Contact {
                    "email, or one created with hasUniqueValue=true"
                } else {
                    "one created with hasUniqueValue=true"
                }
            )));
        };
        let mut values = ops::input_properties(input.get("properties"))?;
        let existing = state.find(ty, Some(&by), id);
        if existing.is_none() {
            values.retain(|(name, _)| *name != by);
            values.push((by.clone(), id.clone()));
        }
        let changes = ops::validate(state, opts, ty, values, existing).map_err(|mut e| {
            e.message = format!("Input {id}: {}", e.message);
            e.with_context("ids", std::slice::from_ref(id))
        })?;
        planned.push((existing, changes));
    }
    unique_within_batch(
        state,
        ty,
        planned
            .iter()
            .filter(|(existing, _)| existing.is_none())
            .map(|(_, c)| c),
    )?;
    let mut results = Vec::with_capacity(planned.len());
    for (existing, changes) in planned {
        let (id, new) = match existing {
            Some(id) => {
                ops::update(state, opts, ty, id, changes, Source::Api);
                (id, false)
            }
            None => (ops::create(state, opts, ty, changes, Source::Api), true),
        };
        let mut object = state.records(ty)[&id].to_json_all();
        object["new"] = json!(new);
        results.push(object);
    }
    Ok(batch_answer(200, results, Vec::new(), &started))
}

// ----- associations ----------------------------------------------------------------------------

fn associations_read(state: &mut State, req: &RecordedRequest, from: ObjectType) -> Answer {
    let started = iso(&Utc::now());
    let body = body_object(req)?;
    let inputs = batch_inputs(&body)?;
    let mut results = Vec::new();
    let mut seen = BTreeSet::new();
    for input in &inputs {
        let id = input_id(input)?;
        let Some(found) = state.find(from, None, &id) else {
            continue;
        };
        if !seen.insert(found) {
            continue;
        }
        let to: Vec<Value> = state
            .associated(from, found)
            .iter()
            .map(|other| json!({"id": other.to_string(), "type": from.association_to_other()}))
            .collect();
        if !to.is_empty() {
            results.push(json!({"from": {"id": found.to_string()}, "to": to}));
        }
    }
    Ok(batch_answer(200, results, Vec::new(), &started))
}

/// `batch/create` (or `batch/archive` with `archive`): inputs `{from: {id}, to: {id}, type}`.
fn associations_create(
    state: &mut State,
    opts: &HubSpotSimOptions,
    req: &RecordedRequest,
    from: ObjectType,
    to: ObjectType,
    archive: bool,
) -> Answer {
    let started = iso(&Utc::now());
    let body = body_object(req)?;
    let inputs = batch_inputs(&body)?;
    let expected = from.association_to_other();
    let mut planned = Vec::new();
    let mut missing = Vec::new();
    for input in &inputs {
        let id_at = |pointer: &str| match input.get(pointer).and_then(|v| v.get("id")) {
            Some(Value::String(s)) => Ok(s.trim().to_owned()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(ApiError::validation(format!(
                "Invalid input JSON: each input needs `{pointer}.id`"
            ))),
        };
        let from_id = id_at("from")?;
        let to_id = id_at("to")?;
        let kind = input.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != expected {
            return Err(ApiError::validation(format!(
                "{kind:?} is not a valid association type from {} to {} (use {expected})",
                from.plural(),
                to.plural()
            )));
        }
        let from_found = state.find(from, None, &from_id);
        let to_found = state.find(to, None, &to_id);
        match (from_found, to_found) {
            (Some(f), Some(t)) => planned.push((f, t)),
            (f, t) => {
                if f.is_none() && !missing.contains(&from_id) {
                    missing.push(from_id);
                }
                if t.is_none() && !missing.contains(&to_id) {
                    missing.push(to_id);
                }
            }
        }
    }
    let mut results = Vec::new();
    for (f, t) in planned {
        let (deal, contact) = match from {
            ObjectType::Deal => (f, t),
            ObjectType::Contact => (t, f),
        };
        if archive {
            ops::dissociate(state, opts, deal, contact, Source::Api, from);
        } else {
            ops::associate(state, opts, deal, contact, Source::Api, from);
            results.push(json!({
                "from": {"id": f.to_string()},
                "to": {"id": t.to_string()},
                "type": expected,
            }));
        }
    }
    if archive {
        return Ok(SimResponse::empty(204));
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![standard_error(
            "OBJECT_NOT_FOUND",
            "Could not create some associations: these objects do not exist.",
            &missing,
        )]
    };
    Ok(batch_answer(201, results, errors, &started))
}

// ----- properties ------------------------------------------------------------------------------

const PROPERTY_TYPES: &[&str] = &[
    "bool",
    "date",
    "datetime",
    "enumeration",
    "number",
    "phone_number",
    "string",
];
const FIELD_TYPES: &[&str] = &[
    "booleancheckbox",
    "calculation_equation",
    "checkbox",
    "date",
    "file",
    "html",
    "number",
    "phonenumber",
    "radio",
    "select",
    "text",
    "textarea",
];

fn create_property(state: &mut State, req: &RecordedRequest, ty: ObjectType) -> Answer {
    let body = body_object(req)?;
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::validation(format!("Invalid input JSON: `{key}` is required")))
    };
    let name = text("name")?;
    let label = text("label")?;
    let type_ = text("type")?;
    let field_type = text("fieldType")?;
    let group_name = text("groupName")?;
    let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_name {
        return Err(ApiError::validation(format!(
            "Property name {name:?} is invalid: use lower-case letters, digits and underscores, starting with a letter"
        )));
    }
    if !PROPERTY_TYPES.contains(&type_.as_str()) {
        return Err(ApiError::validation(format!(
            "Invalid property type {type_:?} (one of {})",
            PROPERTY_TYPES.join(", ")
        )));
    }
    if !FIELD_TYPES.contains(&field_type.as_str()) {
        return Err(ApiError::validation(format!(
            "Invalid fieldType {field_type:?} (one of {})",
            FIELD_TYPES.join(", ")
        )));
    }
    if state.props(ty).contains_key(&name) {
        return Err(ApiError::new(
            409,
            "OBJECT_ALREADY_EXISTS",
            format!("Property named '{name}' already exists."),
        ));
    }
    let options = match body.get("options") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|o| {
                let label = o.get("label").and_then(Value::as_str);
                let value = o.get("value").and_then(Value::as_str);
                match (label, value) {
                    (Some(l), Some(v)) => Ok((l.to_owned(), v.to_owned())),
                    _ => Err(ApiError::validation(
                        "Invalid input JSON: each option needs `label` and `value`",
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(ApiError::validation(
                "Invalid input JSON: `options` must be an array",
            ));
        }
    };
    if type_ == "enumeration" && options.is_empty() {
        return Err(ApiError::validation(
            "Enumeration properties need at least one option",
        ));
    }
    let now = state.tick();
    let def = PropertyDef {
        name: name.clone(),
        label,
        type_,
        field_type,
        group_name,
        description: body
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        has_unique_value: body
            .get("hasUniqueValue")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        hubspot_defined: false,
        calculated: false,
        read_only_value: false,
        options,
        display_order: body
            .get("displayOrder")
            .and_then(Value::as_i64)
            .unwrap_or(-1),
        form_field: body
            .get("formField")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        created_at: now,
        updated_at: now,
    };
    let json = state.property_json(ty, &def);
    state.props_mut(ty).insert(name, def);
    Ok(ok(201, &json))
}
