//! Settings of the generic-webhook connector (the `[settings]` table of an instance).

use std::collections::BTreeMap;

use refsync_core::{Error, Result, Secret, Template};
use refsync_http::SignatureEncoding;
use serde::{Deserialize, Serialize};

/// Settings: how incoming webhooks are authenticated and mapped, and where pushes go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericWebhookConfig {
    /// How incoming webhooks prove where they come from. Required: use `{ type = "none" }`
    /// explicitly to accept unauthenticated requests (not recommended).
    pub auth: InboundAuth,
    /// Body format of incoming webhooks.
    #[serde(default)]
    pub format: BodyFormat,
    /// How an incoming body maps to canonical events. Required for receiving webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventMapping>,
    /// Where and how referred users are pushed. Required for pushing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushTarget>,
}

/// Body format of incoming webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// By `Content-Type`: form-encoded bodies as forms, everything else as JSON.
    #[default]
    Auto,
    /// JSON.
    Json,
    /// `application/x-www-form-urlencoded`: fields become a flat JSON object, so pointers are
    /// `/<field name>`.
    Form,
}

/// How incoming webhooks are authenticated. Every comparison is constant-time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InboundAuth {
    /// HMAC-SHA256 of the body (or of `"{timestamp}.{body}"` when `timestamp_header` is set)
    /// in a header.
    Hmac {
        /// Header carrying the signature.
        header: String,
        /// The shared secret.
        secret: Secret,
        /// `hex` or `base64`.
        #[serde(default = "default_encoding")]
        encoding: SignatureEncoding,
        /// A prefix before the signature in the header, e.g. `sha256=`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        /// Header carrying a unix timestamp that is signed with the body; enables the replay
        /// window.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp_header: Option<String>,
        /// Replay window in seconds (with `timestamp_header`).
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// The Standard Webhooks scheme: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks {
        /// The signing secret (`whsec_...`).
        secret: Secret,
        /// Replay window in seconds.
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// A static token in a header or a query parameter (e.g. Referral Factory's outbound
    /// webhooks, which cannot sign: add a custom header there).
    Token {
        /// Header carrying the token (`Authorization: Bearer <token>` is accepted when this is
        /// `Authorization`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
        /// Query parameter carrying the token, when not a header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query: Option<String>,
        /// The expected token.
        token: Secret,
    },
    /// HTTP Basic auth.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: Secret,
    },
    /// No authentication: every request is accepted and reported as unverified.
    None,
}

fn default_encoding() -> SignatureEncoding {
    SignatureEncoding::Hex
}
fn default_tolerance() -> u64 {
    300
}

/// Where a value of the canonical event comes from: a JSON pointer into the body (`/deal/id`),
/// or a constant (`{ value = "deal" }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// A JSON pointer (RFC 6901), e.g. `/data/object/id`; for form bodies `/<field>`.
    Pointer(String),
    /// A constant.
    Const {
        /// The constant value.
        value: String,
    },
}

impl Source {
    pub(crate) fn check(&self, what: &str) -> Result<()> {
        match self {
            Source::Pointer(p) if !p.is_empty() && !p.starts_with('/') => {
                Err(Error::config(format!(
                    "events.{what}: {p:?} is not a JSON pointer (it must start with '/', e.g. \"/{p}\"); write {{ value = \"{p}\" }} for a constant"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Maps an incoming body to canonical events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMapping {
    /// Pointer to an array of events in the body (a batch); the other pointers are then
    /// relative to each element. Without it the body is one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// The vendor's delivery or event id (used to deduplicate redeliveries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Source>,
    /// When it happened: RFC 3339 text, or unix seconds / milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Source>,
    /// Object kind (`lead`, `deal`, `person`, `contact`, `order`, or anything else, which
    /// becomes `other:<value>`).
    pub object_kind: Source,
    /// Object id (required in every event; numbers become strings).
    pub object_id: Source,
    /// The vendor's event name, translated through `change_types`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Source>,
    /// Vendor event name → canonical change type (`created`, `updated`, `deleted`,
    /// `stage_changed`, `status_changed`, `lead_converted`, `coupon_used`, or `ignore`). With
    /// `change` set, an event name missing here is ignored (no event, not an error).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub change_types: BTreeMap<String, ChangeType>,
    /// New stage id (for `stage_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Source>,
    /// Previous stage id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stage: Option<Source>,
    /// Pipeline id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<Source>,
    /// New status (`won`, `lost`, `paid`, ...), and the order status of a coupon use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Source>,
    /// Previous status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<Source>,
    /// The deal a converted lead became (for `lead_converted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_deal_id: Option<Source>,
    /// Coupon code (for `coupon_used`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<Source>,
    /// The referral code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_code: Option<Source>,
    /// The person's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Source>,
    /// The account the event comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Source>,
}

/// Canonical change types an event name can map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    /// `created`
    Created,
    /// `updated`
    Updated,
    /// `deleted`
    Deleted,
    /// `stage_changed` (needs `stage`)
    StageChanged,
    /// `status_changed` (needs `status`)
    StatusChanged,
    /// `lead_converted`
    LeadConverted,
    /// `coupon_used` (needs `coupon`)
    CouponUsed,
    /// Produce no event.
    Ignore,
}

/// The outgoing request that pushes a referred user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushTarget {
    /// Target URL (http or https). Kept secret: catch-hook URLs of Zapier, Make or n8n work as
    /// passwords, so the URL is never printed.
    pub url: Secret,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra headers (values are treated as secrets: never logged).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// JSON body template: string leaves are templates (`"{Referral Code}"`,
    /// `"Hi {First Name}"`), and the string `"{fields}"` is replaced by the push mapping's fields
    /// as an object. Default: `{"object": ..., "fields": "{fields}"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Pointer to the created record's id in the response, e.g. `/id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// URL probed by `health_check` with a GET (optional: many receivers accept only POST).
    /// Kept secret like `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_url: Option<Secret>,
    /// Timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_method() -> String {
    "POST".into()
}
fn default_timeout() -> u64 {
    10
}

/// `scheme://host[:port]` of an http(s) URL, or `None` when it is not one.
pub fn origin(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if host_len == 0 {
        return None;
    }
    Some(&url[..url.len() - rest.len() + host_len])
}

/// Marker in a body template replaced by the mapped fields.
pub const FIELDS_MARKER: &str = "{fields}";

impl GenericWebhookConfig {
    /// Checks everything serde cannot: pointers, templates, methods, URLs.
    pub fn validate(&self) -> Result<()> {
        if let Some(ev) = &self.events {
            let named = [
                ("delivery_id", &ev.delivery_id),
                ("occurred_at", &ev.occurred_at),
                ("change", &ev.change),
                ("stage", &ev.stage),
                ("previous_stage", &ev.previous_stage),
                ("pipeline", &ev.pipeline),
                ("status", &ev.status),
                ("previous_status", &ev.previous_status),
                ("converted_deal_id", &ev.converted_deal_id),
                ("coupon", &ev.coupon),
                ("referral_code", &ev.referral_code),
                ("email", &ev.email),
                ("account", &ev.account),
            ];
            ev.object_kind.check("object_kind")?;
            ev.object_id.check("object_id")?;
            for (what, s) in named {
                if let Some(s) = s {
                    s.check(what)?;
                }
            }
            if let Some(items) = &ev.items {
                Source::Pointer(items.clone()).check("items")?;
            }
        }
        if let Some(p) = &self.push {
            for (what, url) in [
                ("push.url", Some(&p.url)),
                ("push.health_url", p.health_url.as_ref()),
            ] {
                if url.is_some_and(|u| origin(u.expose()).is_none()) {
                    // The URL itself is not echoed: it may carry a token.
                    return Err(Error::config(format!(
                        "{what} must be an absolute http(s) URL with a host"
                    )));
                }
            }
            if !["POST", "PUT", "PATCH"].contains(&p.method.to_ascii_uppercase().as_str()) {
                return Err(Error::config(format!(
                    "push.method must be POST, PUT or PATCH, got {:?}",
                    p.method
                )));
            }
            if let Some(body) = &p.body {
                check_body_template(body, "push.body")?;
            }
        }
        match &self.auth {
            InboundAuth::Hmac { secret, .. } | InboundAuth::StandardWebhooks { secret, .. }
                if secret.is_empty() =>
            {
                Err(Error::config("auth.secret must not be empty"))
            }
            InboundAuth::Token {
                token,
                header,
                query,
            } => {
                if token.is_empty() {
                    return Err(Error::config("auth.token must not be empty"));
                }
                if header.is_some() == query.is_some() {
                    return Err(Error::config(
                        "auth (token): set exactly one of `header` or `query`",
                    ));
                }
                Ok(())
            }
            InboundAuth::Basic { password, .. } if password.is_empty() => {
                Err(Error::config("auth.password must not be empty"))
            }
            _ => Ok(()),
        }
    }
}

fn check_body_template(v: &serde_json::Value, at: &str) -> Result<()> {
    match v {
        serde_json::Value::String(s) if s == FIELDS_MARKER => Ok(()),
        serde_json::Value::String(s) => Template::parse(s)
            .map(|_| ())
            .map_err(|e| Error::config(format!("{at}: {}", e.message()))),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_body_template(x, &format!("{at}[{i}]"))),
        serde_json::Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| check_body_template(x, &format!("{at}.{k}"))),
        _ => Ok(()),
    }
}
