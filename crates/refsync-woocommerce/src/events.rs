//! Webhook verification and parsing: pure and synchronous, so they run on fixtures and can be
//! fuzzed.
//!
//! WooCommerce delivers `POST`s with the headers `X-WC-Webhook-Topic` (`order.updated`...),
//! `X-WC-Webhook-Resource`, `X-WC-Webhook-Event`, `X-WC-Webhook-Source` (the site URL),
//! `X-WC-Webhook-ID`, `X-WC-Webhook-Delivery-ID` (new on every send) and
//! `X-WC-Webhook-Signature`. The body is built at send time from the REST API: for
//! `api_version` `wp_api_v3` the same JSON as `GET /wp-json/wc/v3/<resource>s/<id>`; legacy
//! versions wrap it as `{"order": {...}}`; `*.deleted` sends only `{"id": N}`. See
//! `shared/research/crm-salesforce-woo-intercom-stripe.md` section 1.
//!
//! There is no event id and no retry; several quick updates of an order are coalesced into one
//! delivery of its state at send time. Delivery ids are therefore built from the state
//! (order id, status, coupon codes), so the same state delivered twice is deduplicated.

use chrono::{DateTime, NaiveDateTime, Utc};
use refsync_core::{
    Change, CrmEvent, Error, EventObject, ObjectKind, Result, Secret, Verification, WebhookRequest,
};
use refsync_http::signature::{SignatureEncoding, verify_hmac_sha256};
use serde_json::{Map, Value};

use crate::NAME;

type Object = Map<String, Value>;

const SIGNATURE_HEADER: &str = "X-WC-Webhook-Signature";
const TOPIC_HEADER: &str = "X-WC-Webhook-Topic";
const SOURCE_HEADER: &str = "X-WC-Webhook-Source";

/// Statuses that end or reverse a sale: they are reported whatever the paid statuses are, so a
/// rule can unqualify a referral whose order was refunded, cancelled or failed.
const CLOSING_STATUSES: &[&str] = &["refunded", "cancelled", "failed"];
/// The canonical status of an order whose status is one of the store's paid statuses.
const PAID: &str = "paid";

/// What parse needs from the settings.
#[derive(Debug, Clone)]
pub(crate) struct ParseOptions {
    /// Order statuses that count as paid, lower-case (default `["processing", "completed"]`,
    /// WooCommerce's own `wc_get_is_paid_statuses()`).
    pub paid_statuses: Vec<String>,
    /// Only coupon codes starting with this prefix (compared after [`normalize_coupon_code`])
    /// produce `coupon_used` events; `None` = all codes.
    pub coupon_prefix: Option<String>,
    /// The `meta_data` key holding a referral code on orders and customers (`None` = not read).
    pub referral_code_meta_key: Option<String>,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            paid_statuses: vec!["processing".into(), "completed".into()],
            coupon_prefix: None,
            referral_code_meta_key: None,
        }
    }
}

impl ParseOptions {
    /// Whether an order in `status` gets a `status_changed` event.
    fn reports_status(&self, status: &str) -> bool {
        CLOSING_STATUSES.contains(&status) || self.is_paid(status)
    }

    /// Whether `status` is one of the store's paid statuses.
    fn is_paid(&self, status: &str) -> bool {
        self.paid_statuses
            .iter()
            .any(|p| p.trim().eq_ignore_ascii_case(status))
    }

    /// The status events report: `paid` for the store's paid statuses (so rules need not
    /// repeat the store's list), the store's word otherwise.
    fn canonical_status(&self, status: &str) -> String {
        if self.is_paid(status) {
            PAID.to_owned()
        } else {
            status.to_owned()
        }
    }

    /// Whether `code` (normalized) passes the coupon prefix filter.
    fn counts_code(&self, code: &str) -> bool {
        match self.coupon_prefix.as_deref().map(normalize_coupon_code) {
            Some(prefix) if !prefix.is_empty() => code.starts_with(&prefix),
            _ => true,
        }
    }

    fn referral_code(&self, object: &Object) -> Option<String> {
        self.referral_code_meta_key
            .as_deref()
            .and_then(|key| meta_value(object, key))
    }
}

// ---------------------------------------------------------------- verify

/// Checks `X-WC-Webhook-Signature` = base64(HMAC-SHA256(raw body, webhook secret)) in constant
/// time, over the exact bytes received (WooCommerce signs `trim(wp_json_encode(payload))`, which
/// escapes `/` and non-ASCII: a re-serialisation would never match).
///
/// Stores that saved the secret HTML-escaped (woocommerce/woocommerce#22500, #21693) sign with
/// the escaped form: when the configured secret contains `& < > " '`, the signature made with
/// its `esc_html` form is accepted too.
///
/// WooCommerce signs no timestamp, so there is no replay window: a redelivered (or replayed)
/// body is caught by the delivery deduplication downstream. Errors are unauthorized, with a
/// one-line reason that contains neither the secret nor the expected signature.
pub(crate) fn verify(secret: &Secret, request: &WebhookRequest) -> Result<Verification> {
    let secret = secret.expose();
    if secret.is_empty() {
        return Err(Error::unauthorized(
            "webhook_secret is empty: set it to the secret of the WooCommerce webhook",
        ));
    }
    let Some(provided) = request
        .header(SIGNATURE_HEADER)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Err(Error::unauthorized(
            "missing X-WC-Webhook-Signature header: WooCommerce signs every delivery (only its unsigned creation ping has none, and that one is answered separately)",
        ));
    };
    let body = request.body.as_slice();
    let mut matched =
        verify_hmac_sha256(secret.as_bytes(), body, provided, SignatureEncoding::Base64);
    if let Some(escaped) = esc_html(secret) {
        // `|`, not `||`: both candidates are always checked.
        matched |= verify_hmac_sha256(
            escaped.as_bytes(),
            body,
            provided,
            SignatureEncoding::Base64,
        );
    }
    if matched {
        Ok(Verification::Verified {
            scheme: "hmac-sha256".into(),
        })
    } else {
        Err(Error::unauthorized(
            "signature mismatch: webhook_secret must be the webhook's own secret (not the REST API consumer secret), and the body must reach refsync unmodified",
        ))
    }
}

/// WordPress's `esc_html` form of `secret` (`&` `<` `>` `"` `'` as entities), when it differs.
fn esc_html(secret: &str) -> Option<String> {
    if !secret.contains(['&', '<', '>', '"', '\'']) {
        return None;
    }
    let mut out = String::with_capacity(secret.len() + 16);
    for c in secret.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#039;"),
            c => out.push(c),
        }
    }
    Some(out)
}

// ---------------------------------------------------------------- ping

/// True only for WooCommerce's unsigned creation ping: no `X-WC-Webhook-Signature` header and
/// a form-encoded body that is exactly `webhook_id=<1-20 ASCII digits>` (surrounding whitespace
/// ignored). A handshake is answered and never stored, so anything else is not one.
pub(crate) fn is_ping(request: &WebhookRequest) -> bool {
    if request.header(SIGNATURE_HEADER).is_some() {
        return false;
    }
    let Ok(body) = std::str::from_utf8(&request.body) else {
        return false;
    };
    body.trim()
        .strip_prefix("webhook_id=")
        .is_some_and(|id| (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------- parse

/// The events of a delivery, by topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Created,
    Updated,
    Deleted,
    Restored,
}

impl Event {
    fn parse(s: &str) -> Option<Event> {
        match s {
            "created" => Some(Event::Created),
            "updated" => Some(Event::Updated),
            "deleted" => Some(Event::Deleted),
            "restored" => Some(Event::Restored),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Event::Created => "created",
            Event::Updated => "updated",
            Event::Deleted => "deleted",
            Event::Restored => "restored",
        }
    }

    /// The change of a customer or coupon. A restored object existed before: `updated`.
    fn change(self) -> Change {
        match self {
            Event::Created => Change::Created,
            Event::Updated | Event::Restored => Change::Updated { fields: Vec::new() },
            Event::Deleted => Change::Deleted,
        }
    }
}

/// Turns a verified delivery into canonical events, by its `X-WC-Webhook-Topic`: orders (coupon
/// use and status), customers and coupons. Products, `action.*` and unknown topics yield no
/// events; a missing topic, a body that is not a JSON object or an object without a valid id is
/// a validation error. Never panics.
pub(crate) fn parse(opts: &ParseOptions, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
    let Some(topic) = request
        .header(TOPIC_HEADER)
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Err(Error::validation(
            "missing X-WC-Webhook-Topic header: WooCommerce names the topic (order.updated, customer.created...) in it",
        ));
    };
    let topic = topic.to_ascii_lowercase();
    let (resource, event) = topic.split_once('.').unwrap_or((topic.as_str(), ""));
    if !matches!(resource, "order" | "customer" | "coupon") {
        return Ok(Vec::new());
    }
    let Some(event) = Event::parse(event) else {
        return Ok(Vec::new());
    };
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|_| Error::validation(format!("the body of a {resource} delivery is not JSON")))?;
    let Value::Object(root) = body else {
        return Err(Error::validation(format!(
            "the body of a {resource} delivery is not a JSON object"
        )));
    };
    let object = unwrap_legacy(&root, resource);
    let Some(id) = object.get("id").and_then(numeric_id) else {
        return Err(Error::validation(format!(
            "the {resource} of a {resource}.{} delivery has no valid id (a positive integer)",
            event.as_str()
        )));
    };
    let account = account(request);
    let events = match (resource, event) {
        ("order", Event::Deleted) => {
            let mut e = CrmEvent::new(NAME, ObjectKind::Order, id.as_str(), Change::Deleted);
            e.delivery_id = Some(format!("order:{id}:deleted"));
            e.occurred_at = object.get("date_modified_gmt").and_then(time);
            e.account = account;
            vec![e]
        }
        ("order", _) => order_events(opts, object, account.as_deref()),
        ("customer", _) => {
            let mut e = CrmEvent::new(NAME, ObjectKind::Contact, id.as_str(), event.change());
            e.delivery_id = Some(format!(
                "customer:{id}:{}:{}",
                event.as_str(),
                raw_text(object.get("date_modified_gmt"))
            ));
            e.occurred_at = object.get("date_modified_gmt").and_then(time);
            e.email = text(object.get("email"));
            e.referral_code = opts.referral_code(object);
            e.account = account;
            vec![e]
        }
        _ => {
            // A coupon is known to the engine by its code; a deleted coupon's body has only its
            // id, which is then the object.
            let code = text(object.get("code"))
                .map(|c| normalize_coupon_code(&c))
                .filter(|c| !c.is_empty());
            let (kind, object_id) = match code {
                Some(code) => (ObjectKind::Coupon, code),
                None => (ObjectKind::Other("coupon_id".into()), id.clone()),
            };
            let mut e = CrmEvent::new(NAME, kind, object_id, event.change());
            e.delivery_id = Some(format!(
                "coupon:{id}:{}:{}",
                event.as_str(),
                raw_text(object.get("date_modified_gmt"))
            ));
            e.occurred_at = object.get("date_modified_gmt").and_then(time);
            e.account = account;
            vec![e]
        }
    };
    Ok(events)
}

/// Legacy API versions wrap the resource: `{"order": {...}}`. Unwrapped only when that is the
/// object's single key.
fn unwrap_legacy<'a>(root: &'a Object, resource: &str) -> &'a Object {
    match root.get(resource) {
        Some(Value::Object(inner)) if root.len() == 1 => inner,
        _ => root,
    }
}

/// The site the delivery comes from (`X-WC-Webhook-Source`, without its trailing `/`).
fn account(request: &WebhookRequest) -> Option<String> {
    let source = request.header(SOURCE_HEADER)?.trim().trim_end_matches('/');
    (!source.is_empty()).then(|| source.to_owned())
}

// ---------------------------------------------------------------- orders

/// Events for one order object (a webhook body or an element of `GET /orders`); used by parse
/// and by reconcile.
///
/// - one `coupon_used` per coupon code passing the prefix filter (`order_status` = `paid` when
///   the order's status is one of `paid_statuses`, else the order's status; `None` when it has
///   none);
/// - then, when the status is paid or `refunded` / `cancelled` / `failed`, a `status_changed`
///   (`from: None`, `to` = `paid` or that status) on the order, with the counted coupons as
///   `related`.
///
/// The delivery id keeps the store's own status, so `processing` then `completed` are two
/// deliveries (both `paid`), and the rules' "qualify once" holds.
///
/// Every event carries the delivery id `order:<id>:<status>:<all codes, sorted, comma-joined>`:
/// WooCommerce has no event id and its Delivery-ID header differs on every send, so the same
/// order state delivered twice must give the same id. An order without a valid id gives no
/// events. Never panics.
pub(crate) fn order_events(
    opts: &ParseOptions,
    order: &Map<String, Value>,
    account: Option<&str>,
) -> Vec<CrmEvent> {
    let Some(id) = order.get("id").and_then(numeric_id) else {
        return Vec::new();
    };
    let status = order
        .get("status")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    let codes = coupon_codes(order);
    let mut sorted = codes.clone();
    sorted.sort();
    let delivery_id = format!(
        "order:{id}:{}:{}",
        status.as_deref().unwrap_or(""),
        sorted.join(",")
    );
    // wp_api_v3 `date_modified_gmt`; legacy v3 names it `updated_at`.
    let occurred_at = order
        .get("date_modified_gmt")
        .or_else(|| order.get("updated_at"))
        .and_then(time);
    let referral_code = opts.referral_code(order);
    let counted: Vec<&String> = codes.iter().filter(|c| opts.counts_code(c)).collect();
    let event = |kind: ObjectKind, object_id: &str, change: Change| CrmEvent {
        source: NAME.to_owned(),
        delivery_id: Some(delivery_id.clone()),
        occurred_at,
        object: EventObject {
            kind,
            id: object_id.to_owned(),
        },
        change,
        referral_code: referral_code.clone(),
        email: None,
        account: account.map(str::to_owned),
        related: Vec::new(),
    };

    let email = billing_email(order);
    let mut events = Vec::with_capacity(counted.len() + 1);
    for code in &counted {
        let mut e = event(
            ObjectKind::Coupon,
            code,
            Change::CouponUsed {
                code: (*code).clone(),
                order_status: status.as_deref().map(|s| opts.canonical_status(s)),
            },
        );
        e.email.clone_from(&email);
        // `related` stays empty on purpose: the coupon is the object, and the customer's
        // other objects must not pull it into the customer's referral. A coupon that is not
        // linked to a referral must stay unattributed instead of being credited to whatever
        // referral the buyer happens to have.
        events.push(e);
    }
    if let Some(status) = status.filter(|s| opts.reports_status(s)) {
        let mut e = event(
            ObjectKind::Order,
            &id,
            Change::StatusChanged {
                from: None,
                to: opts.canonical_status(&status),
            },
        );
        // No email on purpose: the order reaches its referral through its coupons (related)
        // or the referral code. Matching by email would let an unrelated refunded order of the
        // same person unqualify that person's referral.
        e.related = counted
            .iter()
            .map(|code| EventObject {
                kind: ObjectKind::Coupon,
                id: (*code).clone(),
            })
            .collect();
        events.push(e);
    }
    events
}

/// The order's coupon codes, normalized, without empties and duplicates, in order of appearance.
fn coupon_codes(order: &Object) -> Vec<String> {
    let mut codes: Vec<String> = Vec::new();
    let lines = order.get("coupon_lines").and_then(Value::as_array);
    for line in lines.into_iter().flatten() {
        let Some(code) = line.get("code").and_then(Value::as_str) else {
            continue;
        };
        let code = normalize_coupon_code(code);
        if !code.is_empty() && !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

/// `billing.email` (legacy v3: `billing_address.email`), trimmed.
fn billing_email(order: &Object) -> Option<String> {
    ["billing", "billing_address"]
        .into_iter()
        .find_map(|k| text(order.get(k).and_then(|b| b.get("email"))))
}

// ---------------------------------------------------------------- shared readers

/// WooCommerce's coupon-code normal form: the HTML entities WordPress produces decoded (`&amp;`
/// `&lt;` `&gt;` `&quot;` and numeric ones such as `&#039;` `&#39;` `&#36;` or `&#x24;`),
/// surrounding whitespace trimmed, lower-cased (core lower-cases codes; plugins that make them
/// case-sensitive are compared case-insensitively anyway).
///
/// Decoding repeats until nothing changes (`&amp;amp;` → `&`), so the normal form of a normal
/// form is itself.
pub fn normalize_coupon_code(code: &str) -> String {
    fn round(s: &str) -> String {
        decode_entities(s).trim().to_lowercase()
    }
    let mut current = round(code);
    // Each round that changes anything removes an entity (4+ characters become 1), so the
    // string shrinks and the loop ends long before the bound, which only guards against a hang.
    for _ in 0..=current.len() {
        let next = round(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// One pass of HTML-entity decoding: `&amp;` `&lt;` `&gt;` `&quot;`, decimal `&#NN;` and hex
/// `&#xNN;`. Anything else (an unknown name, a bare `&`) is kept as it is.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after
            .find(';')
            .filter(|&end| end <= 10)
            .and_then(|end| Some((entity(&after[..end])?, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        _ => {
            let number = name.strip_prefix('#')?;
            let value = match number.strip_prefix(['x', 'X']) {
                Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    u32::from_str_radix(hex, 16).ok()?
                }
                None if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
                    number.parse().ok()?
                }
                _ => return None,
            };
            char::from_u32(value).filter(|&c| c != '\0')
        }
    }
}

/// Value of the first `meta_data` entry with `key` (a string, trimmed, or a number rendered as
/// text); `None` when there is no such entry or its value is empty or of another type.
pub(crate) fn meta_value(object: &Map<String, Value>, key: &str) -> Option<String> {
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    let entry = object
        .get("meta_data")?
        .as_array()?
        .iter()
        .filter_map(Value::as_object)
        .find(|m| m.get("key").and_then(Value::as_str) == Some(key))?;
    match entry.get("value")? {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A WooCommerce id: a positive integer, as a JSON number or a string of digits.
fn numeric_id(v: &Value) -> Option<String> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<u64>().ok()?
        }
        _ => return None,
    };
    (n > 0).then(|| n.to_string())
}

/// A string value, trimmed; empty and non-strings are none.
fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A string value as it is (trimmed), or "" — for delivery ids.
fn raw_text(v: Option<&Value>) -> String {
    text(v).unwrap_or_default()
}

/// A `_gmt` date: `YYYY-MM-DDTHH:MM:SS` in UTC without a zone (optional fraction), or with a
/// trailing `Z` / offset (legacy `updated_at`). Anything else is no time.
fn time(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?.trim();
    if s.is_empty() {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

#[cfg(test)]
mod tests;
