//! Notifications: the watch channel API (`/crm/v8/actions/watch`: enable, list, replace,
//! update, disable), the callbacks built from the changes of each API call or UI action, and
//! sending them.

use chrono::{DateTime, Duration, FixedOffset, Utc};
use serde_json::{Map, Value, json};

use super::OutgoingNotification;
use super::model::{Change, Channel, Module, Op, State, WatchOp, iso_offset};
use super::ops::{ApiError, error_item, id_of};
use crate::sim::{RecordedRequest, SimResponse, parse_urlencoded};

/// The longest `token` Zoho accepts.
pub(super) const MAX_TOKEN_LEN: usize = 50;

/// Most fields a `notification_condition` may name.
pub(super) const MAX_CONDITION_FIELDS: usize = 10;

/// The expiry a channel gets when none (or one beyond the maximum) is given: one hour.
pub(super) fn default_expiry() -> Duration {
    Duration::hours(1)
}

/// `{api_domain}/crm/v8/{Module}`: the `resource_uri` of a module.
pub(super) fn resource_uri(api_domain: &str, module: Module) -> String {
    format!("{api_domain}/crm/v8/{}", module.api_name())
}

fn invalid(api_name: &str, json_path: &str) -> Value {
    error_item(
        "INVALID_DATA",
        "invalid data",
        json!({"api_name": api_name, "json_path": json_path}),
    )
}

fn not_subscribed(channel_id: &str) -> Value {
    error_item(
        "NOT_SUBSCRIBED",
        "Not subscribed for actions-watch of the given channel",
        json!({"channel_id": channel_id}),
    )
}

/// One `watch` item of a request, validated.
#[derive(Debug, Default)]
struct WatchInput {
    channel_id: String,
    events: Option<Vec<(Module, WatchOp)>>,
    notify_url: Option<String>,
    /// `Some(None)`: cleared.
    token: Option<Option<String>>,
    expiry: Option<DateTime<FixedOffset>>,
    return_affected_field_values: Option<bool>,
    notify_on_related_action: Option<bool>,
    conditions: Option<Vec<Value>>,
    delete_events: bool,
}

/// Validates a `notification_condition` group (`{field}` or `{group_operator, group}`);
/// counts its fields.
fn check_group(
    state: &State,
    module: Module,
    group: &Value,
    path: &str,
    count: &mut usize,
) -> Result<(), Value> {
    if let Some(field) = group.get("field") {
        let name = field.get("api_name").and_then(Value::as_str).unwrap_or("");
        if state.field(module, name).is_none() {
            return Err(invalid("api_name", &format!("{path}.field.api_name")));
        }
        *count += 1;
        return Ok(());
    }
    let operator = group.get("group_operator").and_then(Value::as_str);
    if !matches!(operator, Some("and" | "or")) {
        return Err(invalid("group_operator", &format!("{path}.group_operator")));
    }
    let Some(items) = group.get("group").and_then(Value::as_array) else {
        return Err(invalid("group", &format!("{path}.group")));
    };
    // "field_selection ... Contains a maximum of two objects" (enable-notifications docs).
    let top = path.ends_with("field_selection");
    if items.is_empty() || (top && items.len() > 2) {
        return Err(invalid("group", &format!("{path}.group")));
    }
    for (i, item) in items.iter().enumerate() {
        check_group(state, module, item, &format!("{path}.group[{i}]"), count)?;
    }
    Ok(())
}

/// Whether a condition group holds for a change of `changed` fields.
fn group_matches(group: &Value, changed: &[String]) -> bool {
    if let Some(field) = group.get("field") {
        let name = field.get("api_name").and_then(Value::as_str).unwrap_or("");
        return changed.iter().any(|c| c == name);
    }
    let items = group
        .get("group")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    match group.get("group_operator").and_then(Value::as_str) {
        Some("and") => items.iter().all(|g| group_matches(g, changed)),
        _ => items.iter().any(|g| group_matches(g, changed)),
    }
}

fn parse_expiry(
    state: &State,
    raw: &Value,
    json_path: &str,
    max: Duration,
) -> Result<DateTime<FixedOffset>, Value> {
    let text = raw.as_str().unwrap_or("");
    // Zoho refuses fractional seconds ("API does not accept date ISO strings that include
    // milliseconds", Pipedream's Zoho CRM source).
    let parsed = DateTime::parse_from_rfc3339(text)
        .ok()
        .filter(|_| !text.contains('.'));
    let Some(expiry) = parsed else {
        return Err(invalid("channel_expiry", json_path));
    };
    let now = state.now();
    if expiry.with_timezone(&Utc) <= now {
        return Err(invalid("channel_expiry", json_path));
    }
    if expiry.with_timezone(&Utc) > super::model::later(now, max) {
        // Enable-notifications docs: "If it is not specified or set for more than a week, the
        // default expiry time is for one hour."
        return Ok(super::model::later(now, default_expiry()).with_timezone(expiry.offset()));
    }
    Ok(expiry)
}

/// Validates one `watch` item. `full`: POST and PUT need `channel_id`, `events`, `notify_url`;
/// PATCH only `channel_id`.
fn parse_item(
    state: &State,
    item: &Value,
    index: usize,
    full: bool,
    max_expiry: Duration,
) -> Result<WatchInput, Value> {
    let path = format!("$.watch[{index}]");
    let Some(map) = item.as_object() else {
        return Err(error_item(
            "INVALID_DATA",
            "invalid data",
            json!({"api_name": "watch", "json_path": path, "expected_data_type": "jsonobject"}),
        ));
    };
    let mut input = WatchInput::default();
    let channel_path = format!("{path}.channel_id");
    match map.get("channel_id") {
        None | Some(Value::Null) => {
            return Err(super::ops::mandatory("channel_id", &channel_path));
        }
        Some(v) => {
            let id = id_of(v).filter(|id| id.chars().all(|c| c.is_ascii_digit()));
            let Some(id) = id else {
                return Err(error_item(
                    "INVALID_DATA",
                    "invalid data",
                    json!({"api_name": "channel_id", "json_path": channel_path, "expected_data_type": "long"}),
                ));
            };
            input.channel_id = id;
        }
    }
    match map.get("events") {
        None | Some(Value::Null) if full => {
            return Err(super::ops::mandatory("events", &format!("{path}.events")));
        }
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut events = Vec::new();
            for (i, event) in items.iter().enumerate() {
                let parsed = event.as_str().and_then(|e| {
                    let (module, op) = e.split_once('.')?;
                    Some((Module::parse(module)?, WatchOp::parse(op)?))
                });
                let Some(parsed) = parsed else {
                    return Err(invalid("events", &format!("{path}.events[{i}]")));
                };
                if !events.contains(&parsed) {
                    events.push(parsed);
                }
            }
            input.events = Some(events);
        }
        Some(_) => return Err(invalid("events", &format!("{path}.events"))),
    }
    match map.get("notify_url") {
        None | Some(Value::Null) if full => {
            return Err(super::ops::mandatory(
                "notify_url",
                &format!("{path}.notify_url"),
            ));
        }
        None | Some(Value::Null) => {}
        Some(Value::String(url)) if url.starts_with("http://") || url.starts_with("https://") => {
            input.notify_url = Some(url.clone());
        }
        Some(_) => return Err(invalid("notify_url", &format!("{path}.notify_url"))),
    }
    match map.get("token") {
        None => {}
        Some(Value::Null) => input.token = Some(None),
        Some(Value::String(token)) if token.chars().count() <= MAX_TOKEN_LEN => {
            input.token = Some(Some(token.clone()));
        }
        Some(Value::String(_)) => {
            return Err(error_item(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": "token", "json_path": format!("{path}.token"), "maximum_length": MAX_TOKEN_LEN}),
            ));
        }
        Some(_) => return Err(invalid("token", &format!("{path}.token"))),
    }
    match map.get("channel_expiry") {
        None | Some(Value::Null) => {}
        Some(raw) => {
            input.expiry = Some(parse_expiry(
                state,
                raw,
                &format!("{path}.channel_expiry"),
                max_expiry,
            )?);
        }
    }
    for (key, slot) in [
        (
            "return_affected_field_values",
            &mut input.return_affected_field_values,
        ),
        (
            "notify_on_related_action",
            &mut input.notify_on_related_action,
        ),
    ] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => *slot = Some(*b),
            Some(_) => return Err(invalid(key, &format!("{path}.{key}"))),
        }
    }
    match map.get("_delete_events") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => input.delete_events = true,
        Some(_) => return Err(invalid("_delete_events", &format!("{path}._delete_events"))),
    }
    match map.get("notification_condition") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut conditions = Vec::new();
            for (i, condition) in items.iter().enumerate() {
                let cpath = format!("{path}.notification_condition[{i}]");
                if condition.get("type").and_then(Value::as_str) != Some("field_selection") {
                    return Err(invalid("type", &format!("{cpath}.type")));
                }
                let module = condition
                    .pointer("/module/api_name")
                    .and_then(Value::as_str)
                    .and_then(Module::parse);
                let Some(module) = module else {
                    return Err(invalid("module", &format!("{cpath}.module")));
                };
                let Some(selection) = condition.get("field_selection") else {
                    return Err(super::ops::mandatory(
                        "field_selection",
                        &format!("{cpath}.field_selection"),
                    ));
                };
                let mut count = 0;
                check_group(
                    state,
                    module,
                    selection,
                    &format!("{cpath}.field_selection"),
                    &mut count,
                )?;
                if count > MAX_CONDITION_FIELDS {
                    return Err(invalid("group", &format!("{cpath}.field_selection.group")));
                }
                conditions.push(condition.clone());
            }
            input.conditions = Some(conditions);
        }
        Some(_) => {
            return Err(invalid(
                "notification_condition",
                &format!("{path}.notification_condition"),
            ));
        }
    }
    Ok(input)
}

/// The `events` entry of a success answer for `module` of `channel`.
fn event_json(channel: &Channel, module: Module, api_domain: &str) -> Value {
    json!({
        "channel_expiry": iso_offset(&channel.expiry),
        "resource_uri": resource_uri(api_domain, module),
        "resource_id": module.id(),
        "resource_name": module.api_name(),
        "channel_id": channel.id,
        "notification_condition": channel.conditions_of(module),
    })
}

fn success(channel: &Channel, message: &str, api_domain: &str) -> Value {
    let events: Vec<Value> = channel
        .modules()
        .into_iter()
        .map(|m| event_json(channel, m, api_domain))
        .collect();
    json!({
        "code": "SUCCESS",
        "details": {"events": events},
        "message": message,
        "status": "success",
    })
}

/// `(module, op)` events of `input` replacing those of the same modules in `events`.
fn merge_events(
    events: &[(Module, WatchOp)],
    input: &[(Module, WatchOp)],
) -> Vec<(Module, WatchOp)> {
    let modules: Vec<Module> = input.iter().map(|(m, _)| *m).collect();
    let mut out: Vec<(Module, WatchOp)> = events
        .iter()
        .filter(|(m, _)| !modules.contains(m))
        .copied()
        .collect();
    out.extend(input.iter().copied());
    out
}

/// Conditions of `input` replacing those of the same modules.
fn merge_conditions(conditions: &[Value], input: &[Value]) -> Vec<Value> {
    let module_of = |c: &Value| {
        c.pointer("/module/api_name")
            .and_then(Value::as_str)
            .and_then(Module::parse)
    };
    let modules: Vec<Option<Module>> = input.iter().map(module_of).collect();
    let mut out: Vec<Value> = conditions
        .iter()
        .filter(|c| !modules.contains(&module_of(c)))
        .cloned()
        .collect();
    out.extend(input.iter().cloned());
    out
}

/// The `watch` array of a request body.
fn watch_items(req: &RecordedRequest) -> Result<Vec<Value>, ApiError> {
    let body: Value = serde_json::from_slice(&req.body).map_err(|_| ApiError::bad_body())?;
    match body.get("watch") {
        Some(Value::Array(items)) if !items.is_empty() => Ok(items.clone()),
        Some(_) => Err(ApiError::invalid_data(
            json!({"api_name": "watch", "json_path": "$.watch", "expected_data_type": "jsonarray"}),
        )),
        None => Err(ApiError::new(
            400,
            "MANDATORY_NOT_FOUND",
            "required field not found",
            json!({"api_name": "watch", "json_path": "$.watch"}),
        )),
    }
}

/// `{"watch": results}` with 201/200 when every item succeeded, 400 when none did, 207 for a
/// mix.
fn answer(results: Vec<Value>, ok_status: u16) -> SimResponse {
    let ok = results.iter().filter(|r| r["status"] == "success").count();
    let status = if ok == results.len() {
        ok_status
    } else if ok == 0 {
        400
    } else {
        207
    };
    let mut body = Map::new();
    body.insert("watch".to_owned(), Value::Array(results));
    SimResponse::json(status, &Value::Object(body))
}

fn max_expiry(max: std::time::Duration) -> Duration {
    super::auth::chrono_duration(max)
}

/// `POST /crm/v8/actions/watch`: enables channels (an existing live `channel_id` has the
/// events of the modules given replaced and its other settings overwritten).
pub(super) fn enable(
    state: &mut State,
    req: &RecordedRequest,
    max: std::time::Duration,
    api_domain: &str,
) -> Result<SimResponse, ApiError> {
    let items = watch_items(req)?;
    let mut results = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let input = match parse_item(state, item, i, true, max_expiry(max)) {
            Ok(input) => input,
            Err(e) => {
                results.push(e);
                continue;
            }
        };
        let now = state.now();
        let expiry = input
            .expiry
            .unwrap_or_else(|| super::model::later(now, default_expiry()).fixed_offset());
        let events = input.events.unwrap_or_default();
        let conditions = input.conditions.unwrap_or_default();
        let channel = match state.channels.get(&input.channel_id) {
            Some(old) => Channel {
                id: old.id.clone(),
                events: merge_events(&old.events, &events),
                notify_url: input.notify_url.unwrap_or_else(|| old.notify_url.clone()),
                token: input.token.unwrap_or(None),
                expiry,
                return_affected_field_values: input.return_affected_field_values.unwrap_or(false),
                notify_on_related_action: input.notify_on_related_action.unwrap_or(true),
                conditions: merge_conditions(&old.conditions, &conditions),
            },
            None => Channel {
                id: input.channel_id.clone(),
                events,
                notify_url: input.notify_url.unwrap_or_default(),
                token: input.token.unwrap_or(None),
                expiry,
                return_affected_field_values: input.return_affected_field_values.unwrap_or(false),
                notify_on_related_action: input.notify_on_related_action.unwrap_or(true),
                conditions,
            },
        };
        results.push(success(
            &channel,
            "Successfully subscribed for actions-watch of the given module",
            api_domain,
        ));
        state.channels.insert(channel.id.clone(), channel);
    }
    Ok(answer(results, 201))
}

/// `PUT /crm/v8/actions/watch`: replaces the details of live channels (`NOT_SUBSCRIBED` for
/// unknown or expired ones).
pub(super) fn replace(
    state: &mut State,
    req: &RecordedRequest,
    max: std::time::Duration,
    api_domain: &str,
) -> Result<SimResponse, ApiError> {
    let items = watch_items(req)?;
    let mut results = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let input = match parse_item(state, item, i, true, max_expiry(max)) {
            Ok(input) => input,
            Err(e) => {
                results.push(e);
                continue;
            }
        };
        if !state.channels.contains_key(&input.channel_id) {
            results.push(not_subscribed(&input.channel_id));
            continue;
        }
        let now = state.now();
        let channel = Channel {
            id: input.channel_id.clone(),
            events: input.events.unwrap_or_default(),
            notify_url: input.notify_url.unwrap_or_default(),
            token: input.token.unwrap_or(None),
            expiry: input
                .expiry
                .unwrap_or_else(|| super::model::later(now, default_expiry()).fixed_offset()),
            return_affected_field_values: input.return_affected_field_values.unwrap_or(false),
            notify_on_related_action: input.notify_on_related_action.unwrap_or(true),
            conditions: input.conditions.unwrap_or_default(),
        };
        results.push(success(
            &channel,
            "Successfully updated the subscribe details",
            api_domain,
        ));
        state.channels.insert(channel.id.clone(), channel);
    }
    Ok(answer(results, 200))
}

/// `PATCH /crm/v8/actions/watch`: updates what is given of live channels; with
/// `_delete_events: true` the events given are removed (the channel goes when none is left).
pub(super) fn update(
    state: &mut State,
    req: &RecordedRequest,
    max: std::time::Duration,
    api_domain: &str,
) -> Result<SimResponse, ApiError> {
    let items = watch_items(req)?;
    let mut results = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let input = match parse_item(state, item, i, false, max_expiry(max)) {
            Ok(input) => input,
            Err(e) => {
                results.push(e);
                continue;
            }
        };
        let Some(mut channel) = state.channels.get(&input.channel_id).cloned() else {
            results.push(not_subscribed(&input.channel_id));
            continue;
        };
        if input.delete_events {
            let Some(events) = input.events else {
                results.push(super::ops::mandatory(
                    "events",
                    &format!("$.watch[{i}].events"),
                ));
                continue;
            };
            let before = channel.clone();
            channel.events.retain(|e| !events.contains(e));
            let remaining = channel.modules();
            channel.conditions.retain(|c| {
                c.pointer("/module/api_name")
                    .and_then(Value::as_str)
                    .and_then(Module::parse)
                    .is_some_and(|m| remaining.contains(&m))
            });
            results.push(success(
                &before,
                "Successfully removed the subscribe details",
                api_domain,
            ));
            if channel.events.is_empty() {
                state.channels.remove(&channel.id);
            } else {
                state.channels.insert(channel.id.clone(), channel);
            }
            continue;
        }
        if let Some(events) = &input.events {
            channel.events = merge_events(&channel.events, events);
        }
        if let Some(url) = input.notify_url {
            channel.notify_url = url;
        }
        if let Some(token) = input.token {
            channel.token = token;
        }
        if let Some(expiry) = input.expiry {
            channel.expiry = expiry;
        }
        if let Some(flag) = input.return_affected_field_values {
            channel.return_affected_field_values = flag;
        }
        if let Some(flag) = input.notify_on_related_action {
            channel.notify_on_related_action = flag;
        }
        if let Some(conditions) = &input.conditions {
            channel.conditions = merge_conditions(&channel.conditions, conditions);
        }
        results.push(success(
            &channel,
            "Successfully updated the subscribe details",
            api_domain,
        ));
        state.channels.insert(channel.id.clone(), channel);
    }
    Ok(answer(results, 200))
}

/// `DELETE /crm/v8/actions/watch?channel_ids=1,2`: disables channels.
pub(super) fn disable(
    state: &mut State,
    req: &RecordedRequest,
    api_domain: &str,
) -> Result<SimResponse, ApiError> {
    let ids: Vec<String> = req
        .query_param("channel_ids")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() {
        return Err(ApiError::param_missing("channel_ids"));
    }
    let mut results = Vec::new();
    for id in ids {
        match state.channels.remove(&id) {
            Some(channel) => results.push(success(
                &channel,
                "Successfully un-subscribed from actions-watch",
                api_domain,
            )),
            None => results.push(not_subscribed(&id)),
        }
    }
    Ok(answer(results, 200))
}

/// A channel as `GET /actions/watch` lists it: one entry per watched module.
pub(super) fn channel_entries(channel: &Channel, api_domain: &str) -> Vec<Value> {
    channel
        .modules()
        .into_iter()
        .map(|module| {
            let mut entry = json!({
                "notify_on_related_action": channel.notify_on_related_action,
                "channel_expiry": iso_offset(&channel.expiry),
                "resource_uri": resource_uri(api_domain, module),
                "resource_id": module.id(),
                "notify_url": channel.notify_url,
                "resource_name": module.api_name(),
                "channel_id": channel.id,
                "events": channel.event_names(module),
                "token": channel.token,
                "return_affected_field_values": channel.return_affected_field_values,
            });
            let conditions = channel.conditions_of(module);
            if !conditions.is_empty() {
                entry["notification_condition"] = json!(conditions);
            }
            entry
        })
        .collect()
}

/// `GET /crm/v8/actions/watch` (`channel_id`, `module` filters; `204` when nothing is
/// subscribed).
pub(super) fn list(
    state: &State,
    req: &RecordedRequest,
    api_domain: &str,
) -> Result<SimResponse, ApiError> {
    let wanted_channel = req.query_param("channel_id");
    let wanted_module = match req.query_param("module") {
        Some(name) => Some(Module::parse(&name).ok_or_else(|| ApiError::invalid_module(&name))?),
        None => None,
    };
    let entries: Vec<Value> = state
        .channels
        .values()
        .filter(|c| wanted_channel.as_deref().is_none_or(|w| w == c.id))
        .flat_map(|c| channel_entries(c, api_domain))
        .filter(|e| wanted_module.is_none_or(|m| e["resource_name"].as_str() == Some(m.api_name())))
        .collect();
    if entries.is_empty() {
        return Ok(SimResponse::empty(204));
    }
    let count = entries.len();
    Ok(SimResponse::json(
        200,
        &json!({
            "watch": entries,
            "info": {"per_page": 200, "page": 1, "count": count, "more_records": false},
        }),
    ))
}

// ----- notifications ----------------------------------------------------------------------------

/// The query parameters of a URL as a JSON object (`query_params` of callbacks).
fn query_params(url: &str) -> Value {
    let query = url
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(""))
        .unwrap_or("");
    let map: Map<String, Value> = parse_urlencoded(query)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Value::Object(map)
}

/// Whether an update of `changed` fields passes the channel's conditions for `module` (no
/// condition: always; several: any).
fn passes_conditions(channel: &Channel, module: Module, changed: &[String]) -> bool {
    let conditions = channel.conditions_of(module);
    conditions.is_empty()
        || conditions.iter().any(|c| {
            c.get("field_selection")
                .is_some_and(|g| group_matches(g, changed))
        })
}

/// The body text in the key order of Zoho's sample callback.
fn body_text(fields: &[(&str, Value)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::String((*k).to_owned()), v))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Turns the changes of the finished call or action into callbacks: changes of one module and
/// operation become one notification per live channel watching them (ids in order,
/// `affected_fields` the union of the changed fields). Update notifications honour the
/// channel's `notification_condition`.
pub(super) fn flush(state: &mut State, api_domain: &str) {
    let changes = std::mem::take(&mut state.changes);
    if changes.is_empty() {
        return;
    }
    state.collect_expired_channels();
    let mut groups: Vec<((Module, Op), Vec<Change>)> = Vec::new();
    for change in changes {
        let key = (change.module, change.op);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(change),
            None => groups.push((key, vec![change])),
        }
    }
    let channels: Vec<Channel> = state.channels.values().cloned().collect();
    for ((module, op), group) in groups {
        for channel in &channels {
            let watched = channel
                .events
                .iter()
                .any(|(m, w)| *m == module && w.covers(op));
            if !watched {
                continue;
            }
            let passing: Vec<&Change> = group
                .iter()
                .filter(|c| op != Op::Update || passes_conditions(channel, module, &c.fields))
                .collect();
            if passing.is_empty() {
                continue;
            }
            let mut ids: Vec<String> = Vec::new();
            let mut affected: Vec<String> = Vec::new();
            for change in &passing {
                if !ids.contains(&change.id) {
                    ids.push(change.id.clone());
                }
                for field in &change.fields {
                    if !affected.contains(field) {
                        affected.push(field.clone());
                    }
                }
            }
            let server_time = state.server_ms();
            let mut fields: Vec<(&str, Value)> = vec![
                ("server_time", json!(server_time)),
                ("query_params", query_params(&channel.notify_url)),
                ("module", json!(module.api_name())),
                ("resource_uri", json!(resource_uri(api_domain, module))),
                ("ids", json!(ids)),
                ("affected_fields", json!(affected)),
                ("operation", json!(op.as_str())),
                ("channel_id", json!(channel.id)),
                ("token", json!(channel.token)),
            ];
            if channel.return_affected_field_values {
                let values: Vec<Value> = passing
                    .iter()
                    .filter(|c| c.op == Op::Update)
                    .map(|c| json!({"record_id": c.id, "values": c.values}))
                    .collect();
                fields.push(("affected_values", json!(values)));
            }
            let text = body_text(&fields);
            let body: Value = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<Map<String, Value>>()
                .into();
            let request = refsync_core::WebhookRequest {
                method: "POST".to_owned(),
                url: channel.notify_url.clone(),
                headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
                body: text.into_bytes(),
            };
            state.outbox.push(OutgoingNotification {
                url: channel.notify_url.clone(),
                body,
                channel_id: channel.id.clone(),
                module: module.api_name().to_owned(),
                operation: op.as_str().to_owned(),
                ids,
                request,
            });
        }
    }
}

/// POSTs `notification` to its URL; gives up after `timeout`.
pub(super) async fn send(
    notification: &OutgoingNotification,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    match tokio::time::timeout(
        timeout,
        crate::sim::send_webhook(&notification.url, &notification.request),
    )
    .await
    {
        Ok(answer) => answer,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_groups_follow_their_operators() {
        let group = json!({
            "group_operator": "or",
            "group": [
                {"field": {"api_name": "Stage"}},
                {"group_operator": "and", "group": [
                    {"field": {"api_name": "Account_Name"}},
                    {"field": {"api_name": "Lead_Source"}},
                ]},
            ]
        });
        assert!(group_matches(&group, &["Stage".to_owned()]));
        assert!(!group_matches(&group, &["Lead_Source".to_owned()]));
        assert!(group_matches(
            &group,
            &["Lead_Source".to_owned(), "Account_Name".to_owned()]
        ));
        assert!(group_matches(
            &json!({"field": {"api_name": "Stage"}}),
            &["Stage".to_owned()]
        ));
    }

    #[test]
    fn query_params_come_from_the_notify_url() {
        assert_eq!(
            query_params("https://x.io/hook?tenant=t1&key=a%20b#frag"),
            json!({"tenant": "t1", "key": "a b"})
        );
        assert_eq!(query_params("https://x.io/hook"), json!({}));
        assert_eq!(
            body_text(&[("a", json!(1)), ("b", json!("x"))]),
            r#"{"a":1,"b":"x"}"#
        );
    }
}
