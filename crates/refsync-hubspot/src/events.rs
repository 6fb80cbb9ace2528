//! Webhook verification and parsing: pure and synchronous, so they run on fixtures and can be
//! fuzzed.
//!
//! HubSpot (Webhooks API of an app, or the webhooks of a private / developer-platform app)
//! `POST`s a JSON **array** of up to 100 events to one target URL per app, whatever the
//! installing account. Each element is flat:
//!
//! ```json
//! {"objectId": 697680835, "propertyName": "dealstage", "propertyValue": "closedwon",
//!  "changeSource": "AUTOMATION_PLATFORM", "eventId": 1228532628, "subscriptionId": 92894,
//!  "portalId": 5799819, "appId": 186886, "occurredAt": 1556105815815,
//!  "subscriptionType": "deal.propertyChange", "attemptNumber": 3}
//! ```
//!
//! - the type is `subscriptionType` (`contact.creation`, `deal.propertyChange`...); the docs'
//!   own sample names it `eventType`, so both keys are read;
//! - a property change carries only the changed property (`propertyName`, `propertyValue`,
//!   always a string): no pipeline, amount or associations;
//! - association changes carry `associationType` (`CONTACT_TO_DEAL`, `DEAL_TO_CONTACT`...),
//!   `fromObjectId`, `toObjectId` and `associationRemoved` instead of `objectId`; a primary
//!   association produces two messages, one per direction;
//! - `occurredAt` is in unix milliseconds; `portalId` is the installing account; `appId` the app;
//! - `eventId` is *not* guaranteed to be unique and `attemptNumber` grows on every retry (up to
//!   10 retries over 24 h, the whole batch each time), so neither is part of a delivery id;
//! - there is no ordering guarantee, and duplicates are possible.
//!
//! See `shared/research/crm-pipedrive-hubspot-zoho.md` section 2.3.
//!
//! Signatures (the secret is the app's **client secret**):
//!
//! - **v3** `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(secret, method + URI + body +
//!   timestamp)) with `X-HubSpot-Request-Timestamp` in unix milliseconds; sent by apps, with a
//!   5-minute replay window;
//! - **v2** `X-HubSpot-Signature` with `X-HubSpot-Signature-Version: v2` = hex(SHA-256(secret +
//!   method + URI + body)); workflow webhooks and CRM cards;
//! - **v1** the same header with version `v1` = hex(SHA-256(secret + body)); legacy and
//!   private-app webhooks. v1 and v2 have no timestamp, hence no replay window: replays are
//!   only caught by the delivery deduplication downstream.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use refsync_core::{
    Change, CrmEvent, Error, EventObject, ObjectKind, Result, Secret, Verification, WebhookRequest,
};
use refsync_http::signature::{
    SignatureEncoding, constant_time_eq, sha256_hex, verify_hmac_sha256,
};
use serde_json::{Map, Value};

use crate::NAME;

type Object = Map<String, Value>;

const V3_HEADER: &str = "X-HubSpot-Signature-v3";
const TIMESTAMP_HEADER: &str = "X-HubSpot-Request-Timestamp";
const SIGNATURE_HEADER: &str = "X-HubSpot-Signature";
const VERSION_HEADER: &str = "X-HubSpot-Signature-Version";

/// Which HubSpot signature schemes are accepted (`"v1"`, `"v2"`, `"v3"` in settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureVersion {
    /// `X-HubSpot-Signature` = hex(SHA-256(client secret + body)), sent with
    /// `X-HubSpot-Signature-Version: v1` (or no version header): legacy and private-app
    /// webhooks. No timestamp, so no replay window.
    V1,
    /// `X-HubSpot-Signature` = hex(SHA-256(client secret + method + URI + body)), sent with
    /// `X-HubSpot-Signature-Version: v2`: workflow "Send webhook" actions and CRM cards. No
    /// timestamp, so no replay window.
    V2,
    /// `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(client secret, method + URI + body +
    /// timestamp)) with `X-HubSpot-Request-Timestamp` (unix ms): the current scheme, with a
    /// replay window.
    V3,
}

impl SignatureVersion {
    fn as_str(self) -> &'static str {
        match self {
            SignatureVersion::V1 => "v1",
            SignatureVersion::V2 => "v2",
            SignatureVersion::V3 => "v3",
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            SignatureVersion::V1 => "hubspot-v1",
            SignatureVersion::V2 => "hubspot-v2",
            SignatureVersion::V3 => "hubspot-v3",
        }
    }
}

// ---------------------------------------------------------------- verify

/// What verify needs from the settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VerifyOptions<'a> {
    /// The app's client secret (HubSpot signs every scheme with it).
    pub client_secret: &'a Secret,
    /// The schemes accepted.
    pub versions: &'a [SignatureVersion],
    /// The exact target URL configured in HubSpot, when set (v2 and v3 sign it).
    pub webhook_url: Option<&'a str>,
    /// The v3 replay window, either side of `now` (300 s in production).
    pub tolerance: Duration,
}

/// Checks the request's HubSpot signature in constant time.
///
/// Selection: when `X-HubSpot-Signature-v3` is present and v3 is accepted, only v3 is checked
/// (a wrong or stale v3 signature is never rescued by the weaker v1 one HubSpot may send
/// alongside). Otherwise `X-HubSpot-Signature` is checked per `X-HubSpot-Signature-Version`
/// (`v1` when absent), provided that version is accepted.
///
/// Errors are unauthorized, with a one-line reason that contains neither the secret nor the
/// expected signature.
pub(crate) fn verify(
    opts: &VerifyOptions<'_>,
    request: &WebhookRequest,
    now: DateTime<Utc>,
) -> Result<Verification> {
    let secret = opts.client_secret.expose();
    if secret.is_empty() {
        return Err(Error::unauthorized(
            "the client secret is empty: set it to the HubSpot app's client secret",
        ));
    }
    let accepts = |v: SignatureVersion| opts.versions.contains(&v);
    let v3 = non_empty_header(request, V3_HEADER);
    if let Some(signature) = v3
        && accepts(SignatureVersion::V3)
    {
        return verify_v3(opts, request, signature, now);
    }

    let Some(legacy) = non_empty_header(request, SIGNATURE_HEADER) else {
        return Err(match v3 {
            Some(_) => Error::unauthorized(
                "the request carries only a v3 signature; add \"v3\" to signature_versions to accept it",
            ),
            None => Error::unauthorized(
                "no HubSpot signature (X-HubSpot-Signature-v3 or X-HubSpot-Signature)",
            ),
        });
    };
    let version = match non_empty_header(request, VERSION_HEADER) {
        None => SignatureVersion::V1,
        Some(v) if v.eq_ignore_ascii_case("v1") => SignatureVersion::V1,
        Some(v) if v.eq_ignore_ascii_case("v2") => SignatureVersion::V2,
        Some(v) => {
            return Err(Error::unauthorized(format!(
                "unknown X-HubSpot-Signature-Version {} (expected v1 or v2)",
                shown(v)
            )));
        }
    };
    if !accepts(version) {
        let (who, v) = match version {
            SignatureVersion::V2 => (
                "HubSpot signs workflow webhooks and CRM cards with v2",
                "v2",
            ),
            _ => (
                "HubSpot signs legacy and private-app webhooks with v1",
                "v1",
            ),
        };
        return Err(Error::unauthorized(match v3 {
            Some(_) => format!(
                "the request carries v3 and {v} signatures and signature_versions accepts neither; add \"v3\" (preferred) or \"{v}\" to signature_versions"
            ),
            None => format!(
                "the request carries only a {v} signature ({who}); add \"{v}\" to signature_versions to accept it ({v} has no timestamp, so no replay window)"
            ),
        }));
    }

    let method = request.method.trim().to_ascii_uppercase();
    let (matched, url) = match version {
        SignatureVersion::V2 => {
            let url = signed_url(request, opts.webhook_url);
            let mut content = Vec::with_capacity(method.len() + url.len() + request.body.len());
            content.extend_from_slice(method.as_bytes());
            content.extend_from_slice(url.as_bytes());
            content.extend_from_slice(&request.body);
            (sha256_hex_matches(secret, &content, legacy), Some(url))
        }
        _ => (sha256_hex_matches(secret, &request.body, legacy), None),
    };
    if matched {
        return Ok(Verification::Verified {
            scheme: version.scheme().into(),
        });
    }
    Err(Error::unauthorized(match url {
        Some(url) => format!(
            "X-HubSpot-Signature (v2) does not match for the URL {}: the secret must be the app's client secret, and the URL the one HubSpot called (set webhook_url when a proxy changes it)",
            url_shown(&url)
        ),
        None => format!(
            "X-HubSpot-Signature ({}) does not match: the secret must be the app's client secret, and the body must reach refsync unmodified",
            version.as_str()
        ),
    }))
}

/// v3: timestamp window first, then the HMAC over the URL as signed or with HubSpot's
/// percent-decoded characters.
fn verify_v3(
    opts: &VerifyOptions<'_>,
    request: &WebhookRequest,
    provided: &str,
    now: DateTime<Utc>,
) -> Result<Verification> {
    let Some(timestamp) = non_empty_header(request, TIMESTAMP_HEADER) else {
        return Err(Error::unauthorized(
            "X-HubSpot-Signature-v3 without an X-HubSpot-Request-Timestamp header",
        ));
    };
    let sent = timestamp
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| timestamp.parse::<i64>().ok())
        .flatten()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| {
            Error::unauthorized(format!(
                "X-HubSpot-Request-Timestamp {} is not unix milliseconds",
                shown(timestamp)
            ))
        })?;
    let tolerance = TimeDelta::from_std(opts.tolerance).unwrap_or(TimeDelta::MAX);
    let age = now.signed_duration_since(sent);
    if age > tolerance || -age > tolerance {
        let direction = if age > TimeDelta::zero() {
            "old"
        } else {
            "in the future"
        };
        return Err(Error::unauthorized(format!(
            "X-HubSpot-Request-Timestamp {timestamp} is {} s {direction}, outside the {} s replay window",
            age.num_seconds().unsigned_abs(),
            opts.tolerance.as_secs()
        )));
    }

    let method = request.method.trim().to_ascii_uppercase();
    let url = signed_url(request, opts.webhook_url);
    let content = |uri: &str| {
        let mut c =
            Vec::with_capacity(method.len() + uri.len() + request.body.len() + timestamp.len());
        c.extend_from_slice(method.as_bytes());
        c.extend_from_slice(uri.as_bytes());
        c.extend_from_slice(&request.body);
        c.extend_from_slice(timestamp.as_bytes());
        c
    };
    let key = opts.client_secret.expose().as_bytes();
    let mut matched = verify_hmac_sha256(key, &content(&url), provided, SignatureEncoding::Base64);
    let decoded = decode_signed_characters(&url);
    if decoded != url {
        // `|`, not `||`: both candidates are always computed.
        matched |= verify_hmac_sha256(key, &content(&decoded), provided, SignatureEncoding::Base64);
    }
    if matched {
        Ok(Verification::Verified {
            scheme: SignatureVersion::V3.scheme().into(),
        })
    } else {
        Err(Error::unauthorized(format!(
            "X-HubSpot-Signature-v3 does not match for the URL {}: the secret must be the app's client secret, the body must reach refsync unmodified, and the URL must be the one HubSpot called (set webhook_url when a proxy changes the scheme, host or path)",
            url_shown(&url)
        )))
    }
}

/// The URL HubSpot signed (v2 and v3): `webhook_url` when configured, exactly; else the
/// request's URL when it is absolute; else `X-Forwarded-Proto` (or `https`) `://`
/// `X-Forwarded-Host` (or `Host`) + the path and query as received. Without any host, the
/// request's URL as it is.
pub(crate) fn signed_url(request: &WebhookRequest, webhook_url: Option<&str>) -> String {
    if let Some(url) = webhook_url {
        return url.to_owned();
    }
    let url = request.url.as_str();
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return url.to_owned();
    }
    let first = |name: &str| {
        request
            .header(name)
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(host) = first("X-Forwarded-Host").or_else(|| first("Host")) else {
        return url.to_owned();
    };
    let scheme = match first("X-Forwarded-Proto") {
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ => "https",
    };
    let slash = if url.starts_with('/') { "" } else { "/" };
    format!("{scheme}://{host}{slash}{url}")
}

/// The characters HubSpot decodes in the URI before signing v3 (`%3A` → `:`, `%2F` → `/`...),
/// decoded (hex digits in either case); every other escape is kept.
fn decode_signed_characters(uri: &str) -> String {
    const DECODED: &[u8] = b":/?@!$'()*,;";
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = uri.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = (nibble(h), nibble(l))
            && DECODED.contains(&(h << 4 | l))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    // Only ASCII escapes were replaced by ASCII bytes, so this is still UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| uri.to_owned())
}

/// v1 / v2: `provided` (hex, any case) against hex(SHA-256(secret + content)), in constant time.
fn sha256_hex_matches(secret: &str, content: &[u8], provided: &str) -> bool {
    let expected = sha256_hex(&[secret.as_bytes(), content]);
    let provided = provided.trim().to_ascii_lowercase();
    constant_time_eq(expected.as_bytes(), provided.as_bytes())
}

/// The first value of header `name`, trimmed, when not blank.
fn non_empty_header<'a>(request: &'a WebhookRequest, name: &str) -> Option<&'a str> {
    request
        .header(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// An attacker-controlled header value for an error message: at most 40 characters, quoted and
/// escaped (so the message stays on one line).
fn shown(value: &str) -> String {
    match value.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// The signed URL for an error message: scheme, host and path (the query may carry a token, so
/// it is replaced by `?…`), at most 200 characters.
fn url_shown(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?…"),
        None => (url, ""),
    };
    let base = match base.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &base[..cut]),
        None => base.to_owned(),
    };
    format!("{:?}", format!("{base}{query}"))
}

// ---------------------------------------------------------------- parse

/// What parse needs from the settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParseOptions {
    /// When set, events of other portals (and events without `portalId`) are dropped.
    pub portal_id: Option<u64>,
    /// When set, events of other apps (and events without `appId`) are dropped.
    pub app_id: Option<u64>,
    /// Internal name of the contact property holding the referral code.
    pub contact_code_property: Option<String>,
    /// Internal name of the deal property holding the referral code.
    pub deal_code_property: Option<String>,
    /// `lifecyclestage` values that mean "lead converted" (compared case-insensitively).
    pub conversion_lifecycle_stages: Vec<String>,
}

impl ParseOptions {
    fn keeps(&self, event: &Object) -> bool {
        let matches = |wanted: Option<u64>, key: &str| match wanted {
            Some(wanted) => event.get(key).and_then(id_number) == Some(wanted),
            None => true,
        };
        matches(self.portal_id, "portalId") && matches(self.app_id, "appId")
    }

    fn is_conversion_stage(&self, stage: &str) -> bool {
        self.conversion_lifecycle_stages
            .iter()
            .any(|s| s.trim().eq_ignore_ascii_case(stage))
    }
}

/// Whether `name` is the configured property `configured` (trimmed, case-insensitive).
fn is_property(configured: Option<&str>, name: &str) -> bool {
    configured
        .map(str::trim)
        .is_some_and(|c| !c.is_empty() && c.eq_ignore_ascii_case(name))
}

/// Turns a verified delivery into canonical events, one per mapped element, in the array's
/// order.
///
/// The body is a JSON array of events (a single event object is taken as a one-element
/// array); anything else is a validation error. Elements that are not objects, have no type
/// (`subscriptionType` or `eventType`) or no valid `objectId` (association changes: no valid
/// `fromObjectId` / `toObjectId`), belong to another portal or app, or have a type refsync
/// does not map (companies, tickets, merges, restores...) give no event.
///
/// | HubSpot event | canonical event |
/// |---|---|
/// | `contact.creation` | contact `created` |
/// | `contact.deletion`, `contact.privacyDeletion` | contact `deleted` |
/// | `contact.propertyChange` on the referral-code property | contact `updated` with `referral_code` |
/// | `contact.propertyChange` on `lifecyclestage` to a conversion stage | `lead_converted` (lead = the contact) |
/// | `contact.propertyChange` on `email` | contact `updated` with `email` |
/// | `contact.propertyChange` (other) | contact `updated` with the property's name |
/// | `deal.creation` / `deal.deletion` | deal `created` / `deleted` |
/// | `deal.propertyChange` on `dealstage` | deal `stage_changed` (`to` only: HubSpot sends no pipeline nor previous stage) |
/// | `deal.propertyChange` (`pipeline`, the referral-code property, other) | deal `updated` |
/// | `contact.associationChange` / `deal.associationChange` (contact ↔ deal, added) | deal `updated` `associations.contacts`, the contact as `related` |
///
/// Duplicates within one body (HubSpot may send an event twice, and a primary association
/// comes as two messages that map to the same event) are kept: they carry the same delivery
/// id, and the engine deduplicates by it. Never panics.
pub(crate) fn parse(opts: &ParseOptions, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
    let body: Value = serde_json::from_slice(&request.body).map_err(|_| {
        Error::validation("the body is not JSON (HubSpot posts a JSON array of events)")
    })?;
    let elements = match body {
        Value::Array(elements) => elements,
        Value::Object(event) => vec![Value::Object(event)],
        _ => {
            return Err(Error::validation(
                "the body is neither a JSON array of events nor an event object",
            ));
        }
    };
    Ok(elements
        .iter()
        .filter_map(Value::as_object)
        .filter(|event| opts.keeps(event))
        .filter_map(|event| event_of(opts, event))
        .collect())
}

/// The canonical event of one HubSpot event, if it maps to one.
fn event_of(opts: &ParseOptions, event: &Object) -> Option<CrmEvent> {
    let kind = event_type(event)?.to_ascii_lowercase();
    let (object, action) = kind.split_once('.')?;
    let (object_kind, change, referral_code, email) = match (object, action) {
        ("contact" | "deal", "associationchange") => {
            let association = association(event)?;
            if association.removed {
                return None;
            }
            let mut e = CrmEvent::new(
                NAME,
                ObjectKind::Deal,
                association.deal,
                Change::Updated {
                    fields: vec!["associations.contacts".into()],
                },
            );
            e.related = vec![EventObject {
                kind: ObjectKind::Contact,
                id: association.contact,
            }];
            return Some(finish(e, event));
        }
        ("contact", "creation") => (ObjectKind::Contact, Change::Created, None, None),
        ("contact", "deletion" | "privacydeletion") => {
            (ObjectKind::Contact, Change::Deleted, None, None)
        }
        ("deal", "creation") => (ObjectKind::Deal, Change::Created, None, None),
        ("deal", "deletion") => (ObjectKind::Deal, Change::Deleted, None, None),
        ("contact", "propertychange") => {
            let name = text(event.get("propertyName"));
            let value = text(event.get("propertyValue"));
            let name_is = |n: &str| name.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(n));
            if name
                .as_deref()
                .is_some_and(|n| is_property(opts.contact_code_property.as_deref(), n))
            {
                (ObjectKind::Contact, updated(name), value, None)
            } else if name_is("lifecyclestage")
                && value
                    .as_deref()
                    .is_some_and(|v| opts.is_conversion_stage(v))
            {
                let lead_id = event.get("objectId").and_then(object_id)?;
                let change = Change::LeadConverted {
                    lead_id,
                    deal_id: None,
                };
                (ObjectKind::Contact, change, None, None)
            } else if name_is("email") {
                (ObjectKind::Contact, updated(name), None, value)
            } else {
                (ObjectKind::Contact, updated(name), None, None)
            }
        }
        ("deal", "propertychange") => {
            let name = text(event.get("propertyName"));
            let value = text(event.get("propertyValue"));
            let name_is = |n: &str| name.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(n));
            if name_is("dealstage") {
                let change = Change::StageChanged {
                    pipeline: None,
                    from: None,
                    to: value?,
                };
                (ObjectKind::Deal, change, None, None)
            } else if name
                .as_deref()
                .is_some_and(|n| is_property(opts.deal_code_property.as_deref(), n))
            {
                (ObjectKind::Deal, updated(name), value, None)
            } else {
                // `pipeline` included: its new id alone says nothing about the stage.
                (ObjectKind::Deal, updated(name), None, None)
            }
        }
        _ => return None,
    };
    let id = event.get("objectId").and_then(object_id)?;
    let mut e = CrmEvent::new(NAME, object_kind, id, change);
    e.referral_code = referral_code;
    e.email = email;
    Some(finish(e, event))
}

/// `updated` with the property's name (none when the event names none).
fn updated(name: Option<String>) -> Change {
    Change::Updated {
        fields: name.into_iter().collect(),
    }
}

/// Sets what every event carries: delivery id, time and account.
fn finish(mut e: CrmEvent, event: &Object) -> CrmEvent {
    e.delivery_id = Some(delivery_id(event));
    e.occurred_at = event.get("occurredAt").and_then(millis);
    e.account = event.get("portalId").and_then(object_id);
    e
}

/// The delivery id of one HubSpot event, identical on every retry of the batch.
///
/// `{portalId}:{type}:{objectId}:{propertyName}:{propertyValue}:{occurredAt}`, absent parts
/// empty (ids as decimal strings whether sent as numbers or strings). `eventId` is not
/// guaranteed to be unique and `attemptNumber` changes on every retry, so neither is used.
/// Property names are internal names (`[a-z0-9_]`), so the `:` separators cannot be confused.
///
/// A contact ↔ deal association change gives `{portalId}:association:{deal}:{contact}:
/// {occurredAt}` whichever direction the message describes, so the two messages of a primary
/// association are one delivery (`:removed` is appended for a removal).
pub(crate) fn delivery_id(event: &Map<String, Value>) -> String {
    let id_part = |key: &str| {
        let v = event.get(key);
        v.and_then(object_id).unwrap_or_else(|| raw(v))
    };
    let portal = id_part("portalId");
    let occurred = raw(event.get("occurredAt"));
    let kind = event_type(event).unwrap_or_default();
    let is_association = kind
        .to_ascii_lowercase()
        .split_once('.')
        .is_some_and(|(o, a)| matches!(o, "contact" | "deal") && a == "associationchange");
    if is_association && let Some(a) = association(event) {
        let removed = if a.removed { ":removed" } else { "" };
        return format!(
            "{portal}:association:{}:{}:{occurred}{removed}",
            a.deal, a.contact
        );
    }
    format!(
        "{portal}:{kind}:{}:{}:{}:{occurred}",
        id_part("objectId"),
        raw(event.get("propertyName")),
        raw(event.get("propertyValue")),
    )
}

/// A contact ↔ deal association, whichever direction the message describes.
struct Association {
    deal: String,
    contact: String,
    removed: bool,
}

/// `CONTACT_TO_DEAL` (from = contact, to = deal) or `DEAL_TO_CONTACT` (from = deal, to =
/// contact), compared case-insensitively; other association types are none.
fn association(event: &Object) -> Option<Association> {
    let kind = text(event.get("associationType"))?;
    let from = event.get("fromObjectId").and_then(object_id)?;
    let to = event.get("toObjectId").and_then(object_id)?;
    let (deal, contact) = if kind.eq_ignore_ascii_case("CONTACT_TO_DEAL") {
        (to, from)
    } else if kind.eq_ignore_ascii_case("DEAL_TO_CONTACT") {
        (from, to)
    } else {
        return None;
    };
    let removed = match event.get("associationRemoved") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    };
    Some(Association {
        deal,
        contact,
        removed,
    })
}

// ---------------------------------------------------------------- shared readers

/// `subscriptionType`, or `eventType` (the key of the docs' sample), trimmed and not empty.
fn event_type(event: &Object) -> Option<String> {
    text(event.get("subscriptionType")).or_else(|| text(event.get("eventType")))
}

/// A HubSpot id: a non-negative integer, as a JSON number or a string of digits.
fn id_number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

/// An object id as a decimal string (positive: HubSpot ids start at 1).
fn object_id(v: &Value) -> Option<String> {
    id_number(v).filter(|&n| n > 0).map(|n| n.to_string())
}

/// Unix milliseconds (a non-negative integer, as a number or a string of digits) as a time.
fn millis(v: &Value) -> Option<DateTime<Utc>> {
    let ms = i64::try_from(id_number(v)?).ok()?;
    DateTime::from_timestamp_millis(ms)
}

/// A string value trimmed (numbers and booleans as text); empty and other types are none.
fn text(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// [`text`] or "" — for delivery ids.
fn raw(v: Option<&Value>) -> String {
    text(v).unwrap_or_default()
}

#[cfg(test)]
mod tests;
