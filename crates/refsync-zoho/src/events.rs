//! Webhook verification and parsing: pure and synchronous, so they run on fixtures and can be
//! fuzzed.
//!
//! Zoho CRM reaches refsync in two ways, on the same URL. A request is a **notification**
//! exactly when its body is a JSON object with a `channel_id` key; anything else is taken as a
//! **workflow-rule webhook**. [`verify`] and [`parse`] classify a request the same way.
//!
//! ## Notifications (Notifications API, "watch" channels)
//!
//! refsync subscribes with `POST /crm/v8/actions/watch` (`channel_id`, `events` such as
//! `Deals.edit`, `notify_url`, a `token` of at most 50 characters, `channel_expiry`, optionally
//! `return_affected_field_values` and a `notification_condition` on `Stage`). Zoho then `POST`s
//! to `notify_url`, for every change, a JSON object such as (the docs' sample):
//!
//! ```json
//! {"server_time": 1718117126473, "query_params": {}, "module": "Leads",
//!  "resource_uri": "https://www.zohoapis.com/crm/v2/Leads", "ids": ["5725767000003000064"],
//!  "affected_fields": [], "operation": "insert", "channel_id": "1000000068001",
//!  "token": "TOKEN_FOR_VERIFICATION_OF_1000000068001"}
//! ```
//!
//! - `operation` is `insert`, `update` or `delete` (the subscription calls them `create`,
//!   `edit`, `delete`, so those are read as synonyms);
//! - `channel_id` arrives as a **string** although it is subscribed as a number (both are
//!   read); `token` echoes the subscription's token;
//! - `ids` lists the changed records (one notification may carry several); the body carries no
//!   record data, only `affected_fields` (API names of the changed fields, empty on insert);
//! - with `return_affected_field_values`, `affected_values: [{"record_id": "…", "values":
//!   {"Field_API_Name": …}}]` carries the new values. This shape comes from third-party
//!   captures, not from Zoho's docs, so it is read defensively (entries without a matching
//!   `record_id` or an object `values` are ignored);
//! - `server_time` is in unix milliseconds;
//! - Zoho documents neither retries nor ordering: assume at-least-once, unordered, possibly
//!   missing (reconcile by polling `Modified_Time`).
//!
//! There is **no signature**: the receiver is authenticated by the echoed `token` (compared in
//! constant time) and `channel_id` (compared as a trimmed decimal string). Since nothing covers
//! a timestamp, replays are only caught by the delivery-id deduplication downstream.
//!
//! See `shared/research/crm-pipedrive-hubspot-zoho.md` section 3.3.
//!
//! ## Workflow-rule webhooks (Setup > Automation > Webhooks)
//!
//! A workflow rule ("Stage is Closed Won") can call a webhook whose body the user defines,
//! either as form parameters (`application/x-www-form-urlencoded`) or as raw JSON with merge
//! fields. Zoho signs nothing, so refsync asks for a secret in the webhook's URL
//! (`…?refsync_token=<workflow_secret>`) or in an `X-Refsync-Token` header. The body must carry
//! these keys (matched case-insensitively; a key with an empty value counts as absent):
//!
//! | key | | meaning |
//! |---|---|---|
//! | `module` | required | `Leads`, `Deals` or `Contacts` |
//! | `id` | required | the record's id (the `Lead Id` / `Deal Id` / `Contact Id` field) |
//! | `stage` | optional | the deal's `Stage`: on `Deals` the event is a stage change |
//! | `pipeline` | optional | the deal's `Pipeline` |
//! | `referral_code` | optional | the referral-code field (the configured field's API name, e.g. `Referral_Code`, is read too) |
//! | `email` | optional | the person's `Email` |
//! | `modified_time` | optional | `Modified Time`: ISO 8601, `yyyy-MM-dd HH:mm:ss` (taken as UTC) or unix ms / s; unreadable → no time |
//! | `event` | optional | free text naming the rule, e.g. `deal_won` |
//!
//! For example `module=Deals&id=5725767000003000071&stage=Closed%20Won&pipeline=Standard&
//! modified_time=2024-06-11T20:15:26%2B05:30&event=deal_won`, or the same keys in a JSON object.
//! The keys must be in the body (form parameters or raw JSON), not in the URL.

use chrono::{DateTime, NaiveDateTime, Utc};
use refsync_core::{
    Change, CrmEvent, Error, ObjectKind, Result, Secret, Verification, WebhookRequest,
};
use refsync_http::signature::{secrets_equal, sha256_hex};
use serde_json::{Map, Value};

use crate::NAME;

type Object = Map<String, Value>;

/// The query parameter carrying the workflow secret.
const TOKEN_PARAM: &str = "refsync_token";
/// The header carrying the workflow secret.
const TOKEN_HEADER: &str = "X-Refsync-Token";
/// The body keys of a workflow webhook that are not reported as changed fields.
const CORE_KEYS: &[&str] = &["module", "id", TOKEN_PARAM];

/// The canonical kind of a Zoho module (API name, case-insensitive): `Leads`, `Deals`,
/// `Contacts`; other modules are none.
pub(crate) fn kind_of_module(module: &str) -> Option<ObjectKind> {
    let module = module.trim();
    if module.eq_ignore_ascii_case("Leads") {
        Some(ObjectKind::Lead)
    } else if module.eq_ignore_ascii_case("Deals") {
        Some(ObjectKind::Deal)
    } else if module.eq_ignore_ascii_case("Contacts") {
        Some(ObjectKind::Contact)
    } else {
        None
    }
}

/// The body as a notification: a JSON object with a `channel_id` key.
fn notification(body: &[u8]) -> Option<Object> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) if object.contains_key("channel_id") => Some(object),
        _ => None,
    }
}

// ---------------------------------------------------------------- verify

/// What verify needs from the settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VerifyOptions<'a> {
    /// The token set on the watch channel (at most 50 characters), echoed in every
    /// notification body.
    pub notification_token: &'a Secret,
    /// The watch channel's id (a decimal string).
    pub channel_id: &'a str,
    /// The secret of workflow-rule webhooks; `None` refuses them.
    pub workflow_secret: Option<&'a Secret>,
}

/// Checks a notification's `token` and `channel_id`, or a workflow webhook's secret, in
/// constant time.
///
/// Notifications: `token` must equal the channel's token, then `channel_id` the instance's
/// channel (`zoho-channel-token`). Workflow webhooks (any other request) need
/// `workflow_secret`, given as the `refsync_token` query parameter or the `X-Refsync-Token`
/// header (`zoho-workflow-secret`).
///
/// Errors are unauthorized, with a one-line reason that never contains a secret.
pub(crate) fn verify(opts: &VerifyOptions<'_>, request: &WebhookRequest) -> Result<Verification> {
    match notification(&request.body) {
        Some(body) => verify_notification(opts, &body),
        None => verify_workflow(opts, request),
    }
}

fn verify_notification(opts: &VerifyOptions<'_>, body: &Object) -> Result<Verification> {
    let expected = opts.notification_token.expose();
    if expected.is_empty() {
        return Err(Error::unauthorized(
            "the notification token is empty: set it to the token of the watch channel",
        ));
    }
    let ours = opts.channel_id.trim();
    if ours.is_empty() {
        return Err(Error::unauthorized(
            "this instance's channel id is empty: set it to the watch channel's channel_id",
        ));
    }
    let Some(token) = body
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return Err(Error::unauthorized("the notification carries no token"));
    };
    if !secrets_equal(token.as_bytes(), expected.as_bytes()) {
        return Err(Error::unauthorized("notification token mismatch"));
    }
    let channel = body.get("channel_id").and_then(id_text).unwrap_or_default();
    if channel != ours {
        return Err(Error::unauthorized(format!(
            "notification for channel {}, not this instance's channel {}",
            shown(&channel),
            shown(ours)
        )));
    }
    Ok(Verification::Verified {
        scheme: "zoho-channel-token".into(),
    })
}

fn verify_workflow(opts: &VerifyOptions<'_>, request: &WebhookRequest) -> Result<Verification> {
    let Some(secret) = opts.workflow_secret else {
        return Err(Error::unauthorized(
            "workflow webhooks are off: set workflow_secret (the request is not a Zoho notification: no channel_id in a JSON object body)",
        ));
    };
    let expected = secret.expose();
    if expected.is_empty() {
        return Err(Error::unauthorized(
            "workflow_secret is empty: set it to a long random value",
        ));
    }
    let mut provided: Vec<String> = request
        .query()
        .map(|q| form_pairs(q.as_bytes()))
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.trim() == TOKEN_PARAM)
        .map(|(_, v)| v)
        .collect();
    provided.extend(request.header(TOKEN_HEADER).map(|h| h.trim().to_owned()));
    provided.retain(|v| !v.is_empty());
    if provided.is_empty() {
        return Err(Error::unauthorized(
            "the workflow webhook carries no secret: add refsync_token=<workflow_secret> to the webhook URL's query or send an X-Refsync-Token header",
        ));
    }
    // Every candidate is compared (no early exit), each in constant time.
    let matched = provided.iter().fold(false, |matched, candidate| {
        matched | secrets_equal(candidate.as_bytes(), expected.as_bytes())
    });
    if matched {
        Ok(Verification::Verified {
            scheme: "zoho-workflow-secret".into(),
        })
    } else {
        Err(Error::unauthorized(
            "workflow secret mismatch (refsync_token query parameter / X-Refsync-Token header)",
        ))
    }
}

/// An attacker-controlled value for an error message: plain when short and made of
/// `[A-Za-z0-9._-]`, else quoted, escaped and cut at 40 characters (one line either way).
fn shown(value: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !value.is_empty() && value.len() <= 40 && value.bytes().all(plain) {
        return value.to_owned();
    }
    match value.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

// ---------------------------------------------------------------- parse

/// What parse needs from the settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParseOptions {
    /// API name of the field holding the referral code (e.g. `Referral_Code`).
    pub referral_code_field: Option<String>,
}

impl ParseOptions {
    fn code_field(&self) -> Option<&str> {
        self.referral_code_field
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
    }
}

/// Turns a verified request into canonical events. Never panics.
///
/// A notification gives one event per id, in order: `insert` → `created`, `update` →
/// `updated` with `affected_fields`, `delete` → `deleted`; the referral code comes from
/// `affected_values` when present. Modules other than Leads, Deals and Contacts, and unknown
/// operations, give no events. The delivery id is
/// `{channel_id}:{module}:{id}:{operation}:{server_time}` (operation normalised to
/// `insert` / `update` / `delete`).
///
/// A workflow webhook gives one event: a deal with a `stage` → `stage_changed` (`to` = the
/// stage, `pipeline` when given, no `from`), anything else → `updated` with the sorted keys
/// given besides `module`, `id` and `refsync_token`. The delivery id is
/// `workflow:{module}:{id}:{stage}:{modified_time}` (absent parts empty), followed by
/// `:` + hex SHA-256 of the body when both stage and time are absent. A missing `module` or
/// `id`, a module other than Leads, Deals or Contacts, or a Content-Type of JSON with a body
/// that is not a JSON object is a validation error.
pub(crate) fn parse(opts: &ParseOptions, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
    match notification(&request.body) {
        Some(body) => Ok(parse_notification(opts, &body)),
        None => parse_workflow(opts, request).map(|event| vec![event]),
    }
}

/// The canonical form of a notification's operation.
fn operation(value: &str) -> Option<&'static str> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("insert") || value.eq_ignore_ascii_case("create") {
        Some("insert")
    } else if value.eq_ignore_ascii_case("update") || value.eq_ignore_ascii_case("edit") {
        Some("update")
    } else if value.eq_ignore_ascii_case("delete") {
        Some("delete")
    } else {
        None
    }
}

fn parse_notification(opts: &ParseOptions, body: &Object) -> Vec<CrmEvent> {
    let Some(module) = text(body.get("module")) else {
        return Vec::new();
    };
    let Some(kind) = kind_of_module(&module) else {
        return Vec::new();
    };
    let Some(operation) = text(body.get("operation")).and_then(|o| operation(&o)) else {
        return Vec::new();
    };
    let change = match operation {
        "insert" => Change::Created,
        "delete" => Change::Deleted,
        _ => Change::Updated {
            fields: affected_fields(body),
        },
    };
    let channel = body.get("channel_id").and_then(id_text).unwrap_or_default();
    let server_time = body.get("server_time");
    let occurred_at = server_time.and_then(millis);
    let time = text(server_time).unwrap_or_default();
    let ids = match body.get("ids") {
        Some(Value::Array(ids)) => ids.iter().filter_map(id_text).collect(),
        Some(id) => id_text(id).into_iter().collect(),
        None => Vec::new(),
    };
    ids.into_iter()
        .map(|id| {
            let mut e = CrmEvent::new(NAME, kind.clone(), id.clone(), change.clone());
            e.delivery_id = Some(format!("{channel}:{module}:{id}:{operation}:{time}"));
            e.occurred_at = occurred_at;
            e.referral_code = opts
                .code_field()
                .and_then(|field| affected_value(body, &id, field));
            e
        })
        .collect()
}

/// `affected_fields`: the strings of the array, trimmed, not empty, in order.
fn affected_fields(body: &Object) -> Vec<String> {
    match body.get("affected_fields") {
        Some(Value::Array(fields)) => fields
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The value of `field` for record `id` in `affected_values` (`[{record_id, values{…}}]`),
/// trimmed and not empty. The key is matched exactly, else case-insensitively.
fn affected_value(body: &Object, id: &str, field: &str) -> Option<String> {
    let Some(Value::Array(entries)) = body.get("affected_values") else {
        return None;
    };
    entries
        .iter()
        .filter_map(Value::as_object)
        .filter(|entry| entry.get("record_id").and_then(id_text).as_deref() == Some(id))
        .filter_map(|entry| entry.get("values").and_then(Value::as_object))
        .find_map(|values| {
            let value = values.get(field).or_else(|| {
                values
                    .iter()
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case(field))
                    .map(|(_, v)| v)
            });
            text(value)
        })
}

/// The keys of a workflow webhook's body, in order, with their text values (none for empty
/// values, objects and arrays).
struct Fields(Vec<(String, Option<String>)>);

impl Fields {
    /// The first non-empty value of `key` (case-insensitive).
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .find_map(|(_, v)| v.as_deref())
    }
}

/// The body of a workflow webhook: JSON object or form, per Content-Type, else JSON when it
/// parses, else form.
fn workflow_fields(request: &WebhookRequest) -> Result<Fields> {
    let content_type = request
        .header("Content-Type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let from_form = |body: &[u8]| {
        Fields(
            form_pairs(body)
                .into_iter()
                .map(|(k, v)| {
                    let v = v.trim();
                    (k.trim().to_owned(), (!v.is_empty()).then(|| v.to_owned()))
                })
                .collect(),
        )
    };
    let from_json = |object: Object| {
        Fields(
            object
                .into_iter()
                .map(|(k, v)| (k.trim().to_owned(), text(Some(&v))))
                .collect(),
        )
    };
    if content_type.contains("application/x-www-form-urlencoded") {
        return Ok(from_form(&request.body));
    }
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Object(object)) => Ok(from_json(object)),
        Ok(_) => Err(Error::validation(
            "the workflow webhook's body is JSON but not an object: send the keys module, id, … as a JSON object or as form parameters",
        )),
        Err(_) if content_type.contains("json") => Err(Error::validation(
            "the workflow webhook's Content-Type is JSON but its body is not JSON: check the raw body of the webhook in Zoho",
        )),
        Err(_) => Ok(from_form(&request.body)),
    }
}

fn parse_workflow(opts: &ParseOptions, request: &WebhookRequest) -> Result<CrmEvent> {
    let fields = workflow_fields(request)?;
    let Some(module) = fields.get("module") else {
        return Err(Error::validation(
            "the workflow webhook's body has no module: add the key module with Leads, Deals or Contacts to the webhook's body in Zoho",
        ));
    };
    let Some(kind) = kind_of_module(module) else {
        return Err(Error::validation(format!(
            "the workflow webhook's module {} is not Leads, Deals or Contacts",
            shown(module)
        )));
    };
    let Some(id) = fields.get("id") else {
        return Err(Error::validation(
            "the workflow webhook's body has no id: add the key id with the record's id field (Lead Id, Deal Id or Contact Id) to the webhook's body in Zoho",
        ));
    };
    let stage = fields.get("stage");
    let modified = fields.get("modified_time");
    let change = match stage {
        Some(stage) if kind == ObjectKind::Deal => Change::StageChanged {
            pipeline: fields.get("pipeline").map(str::to_owned),
            from: None,
            to: stage.to_owned(),
        },
        _ => {
            let mut keys: Vec<String> = fields
                .0
                .iter()
                .filter(|(k, v)| {
                    v.is_some() && !CORE_KEYS.iter().any(|c| c.eq_ignore_ascii_case(k))
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.sort();
            keys.dedup();
            Change::Updated { fields: keys }
        }
    };
    let mut delivery = format!(
        "workflow:{module}:{id}:{}:{}",
        stage.unwrap_or_default(),
        modified.unwrap_or_default()
    );
    if stage.is_none() && modified.is_none() {
        delivery.push(':');
        delivery.push_str(&sha256_hex(&[&request.body]));
    }
    let mut e = CrmEvent::new(NAME, kind, id, change);
    e.delivery_id = Some(delivery);
    e.occurred_at = modified.and_then(parse_time);
    e.referral_code = fields
        .get("referral_code")
        .or_else(|| opts.code_field().and_then(|f| fields.get(f)))
        .map(str::to_owned);
    e.email = fields.get("email").map(str::to_owned);
    Ok(e)
}

// ---------------------------------------------------------------- shared readers

/// A Zoho id: a string (trimmed, not empty) or an integer, as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// A scalar as trimmed text (numbers and booleans too); empty and other types are none.
fn text(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// Unix milliseconds (a non-negative integer, as a number or a string of digits) as a time.
fn millis(v: &Value) -> Option<DateTime<Utc>> {
    let ms = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => digits(s.trim())?,
        _ => return None,
    };
    if ms < 0 {
        return None;
    }
    DateTime::from_timestamp_millis(ms)
}

/// A non-empty string of ASCII digits as a number.
fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A time as a workflow webhook may send it: RFC 3339 / ISO 8601 with an offset, the same
/// with a space or without seconds, without an offset (taken as UTC), or unix milliseconds
/// (at least 12 digits) / seconds. Anything else is none.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(n) = digits(s) {
        return if s.len() >= 12 {
            DateTime::from_timestamp_millis(n)
        } else {
            DateTime::from_timestamp(n, 0)
        };
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    const WITH_OFFSET: &[&str] = &[
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
        "%Y-%m-%dT%H:%M%#z",
        "%Y-%m-%d %H:%M%#z",
        "%Y-%m-%d %H:%M %#z",
    ];
    if let Some(t) = WITH_OFFSET
        .iter()
        .find_map(|f| DateTime::parse_from_str(s, f).ok())
    {
        return Some(t.with_timezone(&Utc));
    }
    const NAIVE: &[&str] = &[
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    NAIVE
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

/// `application/x-www-form-urlencoded` pairs (also a URL's query): split on `&`, then on the
/// first `=`; `+` is a space and `%XX` a byte (invalid escapes are kept as they are); invalid
/// UTF-8 is replaced. Empty pieces are skipped.
fn form_pairs(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.iter().position(|&b| b == b'=') {
            Some(at) => (form_decode(&piece[..at]), form_decode(&piece[at + 1..])),
            None => (form_decode(piece), String::new()),
        })
        .collect()
}

fn form_decode(input: &[u8]) -> String {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                input.get(i + 1).copied().and_then(nibble),
                input.get(i + 2).copied().and_then(nibble),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            },
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
