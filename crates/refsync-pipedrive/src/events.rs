//! Webhook verification and parsing: pure and synchronous, so they run on fixtures and can be
//! fuzzed.
//!
//! Pipedrive sends two payload versions (see `docs/events.md` and the research notes):
//!
//! - **webhooks v2** (`meta.version` `"2.0"`): `meta` (`action` create|change|delete, `entity`,
//!   `entity_id`, `id` = event uuid, `company_id`, `timestamp`), `data` = the current state (null
//!   on delete) and `previous` = only the changed fields with their old values (null on create,
//!   the last full state on delete). Custom fields sit under `custom_fields`.
//! - **webhooks v1** (`v: 1`): `meta` (`action` added|updated|merged|deleted, `object`, `id` =
//!   the object's id, numeric `company_id`, `timestamp`, `timestamp_micro`, `webhook_id`),
//!   `current` and `previous` = full objects in API v1 shape; custom fields are root keys.
//!
//! Neither carries an explicit lead conversion: the engine derives it from a lead `deleted`
//! plus a deal `created` of the same referral.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use refsync_core::{
    Change, CrmEvent, Error, EventObject, ObjectKind, Result, Verification, WebhookRequest,
};
use serde_json::{Map, Value};

use crate::NAME;
use crate::config::Config;

type Object = Map<String, Value>;

/// Checks the request's HTTP Basic credentials in constant time, and `meta.company_id` against
/// the configured company. Errors are unauthorized, with a one-line reason and no secret.
pub(crate) fn verify(
    config: &Config,
    request: &WebhookRequest,
    now: DateTime<Utc>,
) -> Result<Verification> {
    // Pipedrive signs nothing and sends no timestamp of its own: replays are caught by the
    // delivery deduplication downstream.
    let _ = now;
    let Some(header) = request
        .header("authorization")
        .filter(|h| !h.trim().is_empty())
    else {
        return Err(Error::unauthorized(
            "missing HTTP Basic credentials (Authorization header)",
        ));
    };
    if !refsync_http::signature::basic_auth_matches(
        Some(header),
        &config.webhook_user,
        config.webhook_password.expose(),
    ) {
        return Err(Error::unauthorized("HTTP Basic credentials do not match"));
    }
    if let Some(expected) = config
        .company_id
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        && let Ok(probe) = serde_json::from_slice::<CompanyProbe>(&request.body)
        && let Some(got) = probe
            .meta
            .and_then(|m| m.company_id)
            .as_ref()
            .and_then(id_string)
        && got != expected
    {
        return Err(Error::unauthorized(format!(
            "delivery is for Pipedrive company {}, this instance is connected to company {}",
            printable(&got),
            printable(expected)
        )));
    }
    Ok(Verification::Verified {
        scheme: "basic".into(),
    })
}

/// Just `meta.company_id` of a body: serde skips everything else without building it (the
/// whole body is read into a `Value` once, by `parse`).
#[derive(serde::Deserialize)]
struct CompanyProbe {
    #[serde(default)]
    meta: Option<MetaProbe>,
}

#[derive(serde::Deserialize)]
struct MetaProbe {
    #[serde(default)]
    company_id: Option<Value>,
}

/// Turns a verified request (webhooks v1 or v2) into canonical events. `referral_code_key` is
/// the resolved key of the referral-code custom field. Unknown entities yield no events; a
/// malformed body is a validation error. Never panics.
pub(crate) fn parse(
    config: &Config,
    referral_code_key: Option<&str>,
    request: &WebhookRequest,
) -> Result<Vec<CrmEvent>> {
    // Deliveries of another company are refused by `verify`; nothing else in the config
    // changes how a payload reads.
    let _ = config;
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|_| Error::validation("the body is not JSON"))?;
    let Some(root) = body.as_object() else {
        return Err(Error::validation("the body is not a JSON object"));
    };
    let Some(meta) = root.get("meta").and_then(Value::as_object) else {
        return Err(Error::validation(
            "the body has no `meta` object: not a Pipedrive webhook",
        ));
    };
    let key = referral_code_key.map(str::trim).filter(|k| !k.is_empty());
    match version(root, meta) {
        Some(Version::V1) => Ok(parse_v1(root, meta, key)),
        Some(Version::V2) => Ok(parse_v2(root, meta, key)),
        None => Err(Error::validation(
            "`meta` has neither `entity` (webhooks v2) nor `object` (webhooks v1): not a Pipedrive webhook",
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

fn version(root: &Object, meta: &Object) -> Option<Version> {
    let is = |v: Option<&Value>, major: &str| {
        v.and_then(id_string)
            .is_some_and(|s| s == major || s.starts_with(&format!("{major}.")))
    };
    if is(meta.get("version"), "2") {
        return Some(Version::V2);
    }
    if is(root.get("v"), "1") || is(meta.get("v"), "1") {
        return Some(Version::V1);
    }
    // No version marker: go by the vocabulary.
    if meta.contains_key("entity") {
        Some(Version::V2)
    } else if meta.contains_key("object") || root.contains_key("current") {
        Some(Version::V1)
    } else {
        None
    }
}

/// What both versions boil down to, once their vocabulary is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Change,
    Delete,
}

/// The parts of a delivery shared by its events.
struct Delivery<'a> {
    entity: &'a str,
    id: String,
    delivery_id: Option<String>,
    occurred_at: Option<DateTime<Utc>>,
    account: Option<String>,
    /// The object as it is now (`data` / `current`), or as it was last (`previous`) on delete.
    state: Option<&'a Object>,
}

impl Delivery<'_> {
    fn kind(&self) -> ObjectKind {
        kind(self.entity)
    }

    fn events(&self, changes: Vec<Change>, key: Option<&str>) -> Vec<CrmEvent> {
        let kind = self.kind();
        let referral_code = match (&kind, key, self.state) {
            (ObjectKind::Deal | ObjectKind::Lead | ObjectKind::Person, Some(k), Some(s)) => {
                referral_code(s, k)
            }
            _ => None,
        };
        let email = match (&kind, self.state) {
            (ObjectKind::Person, Some(s)) => email(s),
            _ => None,
        };
        let related = self.state.map(|s| related(&kind, s)).unwrap_or_default();
        changes
            .into_iter()
            .map(|change| CrmEvent {
                source: NAME.to_owned(),
                delivery_id: self.delivery_id.clone(),
                occurred_at: self.occurred_at,
                object: EventObject {
                    kind: kind.clone(),
                    id: self.id.clone(),
                },
                change,
                referral_code: referral_code.clone(),
                email: email.clone(),
                account: self.account.clone(),
                related: related.clone(),
            })
            .collect()
    }
}

fn kind(entity: &str) -> ObjectKind {
    match entity {
        "deal" => ObjectKind::Deal,
        "lead" => ObjectKind::Lead,
        "person" => ObjectKind::Person,
        other => ObjectKind::Other(other.to_owned()),
    }
}

// ---------------------------------------------------------------- webhooks v2

fn parse_v2(root: &Object, meta: &Object, key: Option<&str>) -> Vec<CrmEvent> {
    let Some(entity) = non_empty_str(meta.get("entity")) else {
        return Vec::new();
    };
    let action = match meta.get("action").and_then(Value::as_str) {
        Some("create" | "added") => Action::Create,
        Some("change" | "updated" | "merged") => Action::Change,
        Some("delete" | "deleted") => Action::Delete,
        _ => return Vec::new(),
    };
    let data = object(root.get("data"));
    let previous = object(root.get("previous"));
    let Some(id) = meta
        .get("entity_id")
        .and_then(id_string)
        .or_else(|| data.and_then(|d| d.get("id")).and_then(id_string))
        .or_else(|| previous.and_then(|p| p.get("id")).and_then(id_string))
    else {
        return Vec::new();
    };
    let timestamp = meta.get("timestamp");
    // `meta.id` is the event's uuid, except in the documented user-entity examples where it is
    // the user's id: then it would merge distinct deliveries, so build one that survives retries.
    let delivery_id = match meta.get("id").and_then(id_string) {
        Some(event_id) if event_id != id => Some(event_id),
        _ => Some(format!(
            "v2:{}:{entity}:{id}:{}:{}",
            meta.get("webhook_id")
                .and_then(id_string)
                .unwrap_or_default(),
            meta.get("action").and_then(id_string).unwrap_or_default(),
            timestamp.and_then(id_string).unwrap_or_default(),
        )),
    };
    let delivery = Delivery {
        entity,
        id,
        delivery_id,
        occurred_at: timestamp.and_then(time),
        account: meta.get("company_id").and_then(id_string),
        state: match action {
            Action::Delete => previous.or(data),
            _ => data.or(previous),
        },
    };
    let changes = match action {
        Action::Create => created(entity, data),
        Action::Delete => deleted(entity, previous.or(data)),
        Action::Change => {
            let mut changes = Vec::new();
            if entity == "deal"
                && let Some(data) = data
            {
                // `previous` lists only the changed fields: a key there means "changed".
                let changed = |k: &str| previous.is_some_and(|p| p.contains_key(k));
                let old = |k: &str| previous.and_then(|p| p.get(k));
                if let Some(to) = data.get("stage_id").and_then(id_string)
                    && (changed("stage_id") || changed("pipeline_id"))
                {
                    let from = old("stage_id").and_then(id_string);
                    let pipeline = data.get("pipeline_id").and_then(id_string);
                    let pipeline_moved = changed("pipeline_id")
                        && old("pipeline_id").and_then(id_string) != pipeline;
                    if from.as_deref() != Some(to.as_str()) || pipeline_moved {
                        changes.push(Change::StageChanged { pipeline, from, to });
                    }
                }
                if changed("status")
                    && let Some(to) = status(data.get("status"))
                {
                    let from = status(old("status"));
                    if from.as_deref() != Some(to.as_str()) {
                        changes.push(Change::StatusChanged { from, to });
                    }
                }
            }
            if changes.is_empty() {
                changes.push(Change::Updated {
                    fields: v2_changed_fields(previous),
                });
            }
            changes
        }
    };
    delivery.events(changes, key)
}

/// The names of the fields a v2 `previous` lists (only changed fields are there); custom fields
/// as `custom_fields.<key>`. Sorted.
fn v2_changed_fields(previous: Option<&Object>) -> Vec<String> {
    let mut fields = BTreeSet::new();
    for (k, v) in previous.into_iter().flatten() {
        match (k.as_str(), v.as_object()) {
            ("custom_fields", Some(custom)) => {
                fields.extend(custom.keys().map(|c| format!("custom_fields.{c}")));
            }
            _ => {
                fields.insert(k.clone());
            }
        }
    }
    fields.into_iter().collect()
}

// ---------------------------------------------------------------- webhooks v1

fn parse_v1(root: &Object, meta: &Object, key: Option<&str>) -> Vec<CrmEvent> {
    // `event` is "<action>.<object>"; `meta` says the same in two keys.
    let event = root.get("event").and_then(Value::as_str).unwrap_or("");
    let (event_action, event_object) = event.split_once('.').unwrap_or(("", ""));
    let Some(entity) =
        non_empty_str(meta.get("object")).or(Some(event_object).filter(|o| !o.is_empty()))
    else {
        return Vec::new();
    };
    let raw_action = non_empty_str(meta.get("action")).unwrap_or(event_action);
    let action = match raw_action {
        "added" | "create" => Action::Create,
        "updated" | "merged" | "change" => Action::Change,
        "deleted" | "delete" => Action::Delete,
        _ => return Vec::new(),
    };
    let current = object(root.get("current"));
    let previous = object(root.get("previous"));
    let Some(id) = meta
        .get("id")
        .and_then(id_string)
        .or_else(|| current.and_then(|c| c.get("id")).and_then(id_string))
        .or_else(|| previous.and_then(|p| p.get("id")).and_then(id_string))
    else {
        return Vec::new();
    };
    // v1 has no event id: this one is the same on each of Pipedrive's retries (`retry` is left
    // out) and differs between changes of the same object (the timestamp).
    let micro = meta.get("timestamp_micro").filter(|v| !v.is_null());
    let stamp = micro.or_else(|| meta.get("timestamp"));
    let delivery_id = format!(
        "v1:{}:{entity}:{id}:{raw_action}:{}",
        meta.get("webhook_id")
            .and_then(id_string)
            .unwrap_or_default(),
        stamp.and_then(id_string).unwrap_or_default(),
    );
    let occurred_at = micro
        .and_then(time_micro)
        .or_else(|| meta.get("timestamp").and_then(time));
    let delivery = Delivery {
        entity,
        id,
        delivery_id: Some(delivery_id),
        occurred_at,
        account: meta.get("company_id").and_then(id_string),
        state: match action {
            Action::Delete => previous.or(current),
            _ => current.or(previous),
        },
    };
    let changes = match action {
        Action::Create => created(entity, current),
        Action::Delete => deleted(entity, previous.or(current)),
        Action::Change => {
            let mut changes = Vec::new();
            if entity == "deal"
                && let (Some(current), Some(previous)) = (current, previous)
            {
                let field = |o: &Object, k: &str| o.get(k).and_then(id_string);
                let pipeline = field(current, "pipeline_id");
                if let Some(to) = field(current, "stage_id") {
                    let from = field(previous, "stage_id");
                    if from.as_deref() != Some(to.as_str())
                        || field(previous, "pipeline_id") != pipeline
                    {
                        changes.push(Change::StageChanged { pipeline, from, to });
                    }
                }
                if let Some(to) = status(current.get("status")) {
                    let from = status(previous.get("status"));
                    if from.as_deref() != Some(to.as_str()) {
                        changes.push(Change::StatusChanged { from, to });
                    }
                }
            }
            if changes.is_empty() {
                changes.push(Change::Updated {
                    fields: v1_changed_fields(current, previous),
                });
            }
            changes
        }
    };
    delivery.events(changes, key)
}

/// The top-level keys whose values differ between v1's full `previous` and `current`. Sorted.
/// Without one of them, nothing can be compared: no field names.
fn v1_changed_fields(current: Option<&Object>, previous: Option<&Object>) -> Vec<String> {
    let (Some(current), Some(previous)) = (current, previous) else {
        return Vec::new();
    };
    let keys: BTreeSet<&String> = current.keys().chain(previous.keys()).collect();
    keys.into_iter()
        .filter(|k| current.get(k.as_str()) != previous.get(k.as_str()))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------- shared

/// The changes of a created object: `created`, and for a deal the stage it starts in and its
/// status when it is created already closed.
fn created(entity: &str, state: Option<&Object>) -> Vec<Change> {
    let mut changes = vec![Change::Created];
    if entity == "deal"
        && let Some(state) = state
    {
        if let Some(to) = state.get("stage_id").and_then(id_string) {
            changes.push(Change::StageChanged {
                pipeline: state.get("pipeline_id").and_then(id_string),
                from: None,
                to,
            });
        }
        if let Some(to) = status(state.get("status")).filter(|s| s != "open") {
            changes.push(Change::StatusChanged { from: None, to });
        }
    }
    changes
}

/// A deletion; a deleted deal also reports its status turning `deleted` (from its last status),
/// so `unqualify_on_status` can revert a referral whose won deal is deleted.
fn deleted(entity: &str, last: Option<&Object>) -> Vec<Change> {
    let mut changes = vec![Change::Deleted];
    if entity == "deal" {
        let from = last.and_then(|l| status(l.get("status")));
        if from.as_deref() != Some("deleted") {
            changes.push(Change::StatusChanged {
                from,
                to: "deleted".into(),
            });
        }
    }
    changes
}

/// The referral code: v2 `custom_fields[key]` (`{"type", "value"}` or a plain value), or v1's
/// root key. Null, empty and non-scalar values are no code.
pub(crate) fn referral_code(state: &Object, key: &str) -> Option<String> {
    let from_custom = state
        .get("custom_fields")
        .and_then(Value::as_object)
        .and_then(|c| c.get(key));
    [from_custom, state.get(key)]
        .into_iter()
        .flatten()
        .find_map(|v| match v {
            Value::Object(o) => o.get("value").and_then(scalar),
            other => scalar(other),
        })
}

/// A person's email: v2 `emails` / v1 `email`, each an array of `{value, primary}` (the primary
/// one, else the first) or a plain string.
fn email(state: &Object) -> Option<String> {
    ["emails", "email"]
        .into_iter()
        .filter_map(|k| state.get(k))
        .find_map(|v| match v {
            Value::Array(items) => {
                let value = |item: &Value| match item {
                    Value::Object(o) => non_empty_str(o.get("value")).map(str::to_owned),
                    Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
                    _ => None,
                };
                items
                    .iter()
                    .filter(|i| i.get("primary").and_then(Value::as_bool) == Some(true))
                    .find_map(value)
                    .or_else(|| items.iter().find_map(value))
            }
            Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            _ => None,
        })
}

/// The person and organization a deal or lead belongs to. v1 may send `{"value": 8, ...}`.
fn related(kind: &ObjectKind, state: &Object) -> Vec<EventObject> {
    if !matches!(kind, ObjectKind::Deal | ObjectKind::Lead) {
        return Vec::new();
    }
    let reference = |k: &str| {
        state.get(k).and_then(|v| match v {
            Value::Object(o) => o.get("value").and_then(id_string),
            other => id_string(other),
        })
    };
    let mut out = Vec::new();
    if let Some(id) = reference("person_id") {
        out.push(EventObject {
            kind: ObjectKind::Person,
            id,
        });
    }
    let org = match kind {
        ObjectKind::Lead => reference("organization_id").or_else(|| reference("org_id")),
        _ => reference("org_id").or_else(|| reference("organization_id")),
    };
    if let Some(id) = org {
        out.push(EventObject {
            kind: ObjectKind::Other("organization".into()),
            id,
        });
    }
    out
}

/// A deal status as the canonical word (lower case).
fn status(v: Option<&Value>) -> Option<String> {
    non_empty_str(v).map(str::to_ascii_lowercase)
}

/// `v` as an object; v1 user payloads wrap the object in a one-element array.
fn object(v: Option<&Value>) -> Option<&Object> {
    match v? {
        Value::Object(o) => Some(o),
        Value::Array(a) => a.first().and_then(Value::as_object),
        _ => None,
    }
}

fn non_empty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An id as a string: strings trimmed (empty → none), numbers printed (integral ones without
/// decimals). Anything else is no id.
pub(crate) fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Some(u.to_string())
            } else if let Some(i) = n.as_i64() {
                Some(i.to_string())
            } else {
                let f = n.as_f64()?;
                if !f.is_finite() {
                    None
                } else if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    // Exact: integral and within f64's contiguous integer range.
                    Some((f as i64).to_string())
                } else {
                    Some(f.to_string())
                }
            }
        }
        _ => None,
    }
}

/// A scalar custom-field value as text (strings trimmed; empty → none).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(_) | Value::Number(_) => id_string(v),
        _ => None,
    }
}

/// A timestamp: an RFC 3339 string (v2), `YYYY-MM-DD HH:MM:SS` in UTC (v1 objects), or a
/// number (or digit string) of seconds, milliseconds (> 10^12) or microseconds (> 10^15).
pub(crate) fn time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                return s.parse::<i64>().ok().and_then(epoch);
            }
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                        .ok()
                        .map(|t| t.and_utc())
                })
        }
        Value::Number(n) => n
            .as_i64()
            .or_else(|| float_int(n.as_f64()?))
            .and_then(epoch),
        _ => None,
    }
}

/// v1's `timestamp_micro`: always microseconds.
fn time_micro(v: &Value) -> Option<DateTime<Utc>> {
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| float_int(n.as_f64()?))?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    DateTime::from_timestamp_micros(n)
}

fn float_int(f: f64) -> Option<i64> {
    // Whole seconds (or ms) are all that matter; out-of-range values are no time.
    (f.is_finite() && f.abs() < 9.0e15).then(|| f.trunc() as i64)
}

fn epoch(n: i64) -> Option<DateTime<Utc>> {
    const MILLIS: i64 = 1_000_000_000_000;
    const MICROS: i64 = 1_000_000_000_000_000;
    let abs = n.checked_abs()?;
    if abs > MICROS {
        DateTime::from_timestamp_micros(n)
    } else if abs > MILLIS {
        DateTime::from_timestamp_millis(n)
    } else {
        Utc.timestamp_opt(n, 0).single()
    }
}

/// A body-supplied value made safe for a one-line error message.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
