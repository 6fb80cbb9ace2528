//! The canonical event (`CrmEvent`), the public contract of `Connector::parse`, and the raw
//! webhook request connectors verify and parse.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Kind of CRM object. In JSON a plain string: `lead`, `deal`, `person`, `contact`, `order`,
/// `coupon`, or `other:<vendor-name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A lead (Pipedrive lead, Zoho/Salesforce Lead, HubSpot lead object).
    Lead,
    /// A deal / opportunity.
    Deal,
    /// A person (Pipedrive).
    Person,
    /// A contact (HubSpot, Zoho, Salesforce) or a shop customer.
    Contact,
    /// A shop order.
    Order,
    /// A coupon.
    Coupon,
    /// Anything else, by its vendor name (`other:stage`, `other:account`).
    Other(String),
}

impl ObjectKind {
    /// The JSON / text form.
    pub fn as_string(&self) -> String {
        match self {
            ObjectKind::Lead => "lead".into(),
            ObjectKind::Deal => "deal".into(),
            ObjectKind::Person => "person".into(),
            ObjectKind::Contact => "contact".into(),
            ObjectKind::Order => "order".into(),
            ObjectKind::Coupon => "coupon".into(),
            ObjectKind::Other(v) => format!("other:{v}"),
        }
    }

    /// Parses the text form; an unknown bare word becomes `Other(word)`.
    pub fn parse(s: &str) -> ObjectKind {
        match s {
            "lead" => ObjectKind::Lead,
            "deal" => ObjectKind::Deal,
            "person" => ObjectKind::Person,
            "contact" => ObjectKind::Contact,
            "order" => ObjectKind::Order,
            "coupon" => ObjectKind::Coupon,
            other => ObjectKind::Other(other.strip_prefix("other:").unwrap_or(other).to_owned()),
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

impl Serialize for ObjectKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

impl<'de> Deserialize<'de> for ObjectKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ObjectKind::parse(&s))
    }
}

/// The CRM object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventObject {
    /// Kind of object.
    pub kind: ObjectKind,
    /// The CRM's id, always a string (vendors send numbers or strings).
    pub id: String,
}

/// What changed. In JSON an object tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// The object was created.
    Created,
    /// The object was updated (and no more specific change applies).
    Updated {
        /// Names of the changed fields, when the payload says.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        fields: Vec<String>,
    },
    /// The object was deleted.
    Deleted,
    /// The object moved to a pipeline stage. A created object that starts in a stage is
    /// reported as `stage_changed` with `from: null`.
    StageChanged {
        /// Pipeline id, when the payload carries it.
        pipeline: Option<String>,
        /// Previous stage id, when the payload carries it.
        from: Option<String>,
        /// New stage id.
        to: String,
    },
    /// The object's status changed: `open`, `won`, `lost`, `paid`, `refunded`, `cancelled`,
    /// `failed`, or the vendor's own word.
    StatusChanged {
        /// Previous status, when known.
        from: Option<String>,
        /// New status.
        to: String,
    },
    /// A lead was converted (into a deal, contact or account).
    LeadConverted {
        /// The lead's id.
        lead_id: String,
        /// The deal created from the lead, when known.
        deal_id: Option<String>,
    },
    /// A coupon was used on an order.
    CouponUsed {
        /// The coupon code as the shop reports it.
        code: String,
        /// The order's status at that time.
        order_status: Option<String>,
    },
}

impl Change {
    /// The `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated { .. } => "updated",
            Change::Deleted => "deleted",
            Change::StageChanged { .. } => "stage_changed",
            Change::StatusChanged { .. } => "status_changed",
            Change::LeadConverted { .. } => "lead_converted",
            Change::CouponUsed { .. } => "coupon_used",
        }
    }
}

/// The canonical event every connector's `parse` produces; see `docs/events.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmEvent {
    /// The connector that produced it (`pipedrive`, `generic-webhook`, ...).
    pub source: String,
    /// The vendor's delivery or event id, when the payload has one (used for deduplication).
    pub delivery_id: Option<String>,
    /// When the change happened, per the vendor.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The object the change is about.
    pub object: EventObject,
    /// What changed.
    pub change: Change,
    /// The referral code, when the payload carries the mapped referral-code field.
    pub referral_code: Option<String>,
    /// The person's email, when the payload carries it.
    pub email: Option<String>,
    /// The CRM account the event comes from (Pipedrive `company_id`, HubSpot `portalId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Other CRM objects the payload names as belonging to this one (a deal's person and
    /// organization). The engine uses them to find the referral of an object it has no link
    /// for: a deal created for a pushed person belongs to that person's referral.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<EventObject>,
}

impl CrmEvent {
    /// A new event with only the required parts set.
    pub fn new(
        source: impl Into<String>,
        kind: ObjectKind,
        id: impl Into<String>,
        change: Change,
    ) -> Self {
        CrmEvent {
            source: source.into(),
            delivery_id: None,
            occurred_at: None,
            object: EventObject {
                kind,
                id: id.into(),
            },
            change,
            referral_code: None,
            email: None,
            account: None,
            related: Vec::new(),
        }
    }
}

/// A received webhook, as the ingress saw it: method, URL, headers, raw body.
///
/// `Debug` shows header values only for a short allowlist (content type, length, user agent...)
/// and the URL without its query: anything else may be a credential.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct WebhookRequest {
    /// HTTP method, upper case.
    pub method: String,
    /// The URL as the sender called it (scheme, host, path and query when known; at least the
    /// path). Signature schemes that sign the URL (HubSpot v3) use it.
    pub url: String,
    /// Headers in arrival order; names compared case-insensitively.
    pub headers: Vec<(String, String)>,
    /// The raw body bytes, exactly as received.
    pub body: Vec<u8>,
}

/// Headers whose values `Debug` shows; every other value is redacted, because vendors and
/// users put credentials in headers of any name (`X-Hook-Key`, `X-Refsync-Token`, ...).
const SHOWN_HEADERS: &[&str] = &[
    "accept",
    "content-length",
    "content-type",
    "date",
    "host",
    "user-agent",
    "x-request-id",
];

fn header_shown(name: &str) -> bool {
    SHOWN_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

impl WebhookRequest {
    /// A `POST` of `body` to `url` with no headers.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        WebhookRequest {
            method: "POST".into(),
            url: url.into(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header (builder style).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets header `name`, replacing existing values.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.into()));
    }

    /// Removes header `name`.
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The query string of the URL (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.url
            .split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or(q))
    }
}

impl fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Headers<'a>(&'a [(String, String)]);
        impl fmt::Debug for Headers<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(|(n, v)| {
                        let v = if header_shown(n) {
                            v.as_str()
                        } else {
                            "[redacted]"
                        };
                        (n.as_str(), v)
                    }))
                    .finish()
            }
        }
        // The URL may carry a token in its query (Zoho workflow URLs): print the path only.
        let path = self.url.split('?').next().unwrap_or("");
        f.debug_struct("WebhookRequest")
            .field("method", &self.method)
            .field("url", &path)
            .field("headers", &Headers(&self.headers))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The outcome of a successful `Connector::verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verification {
    /// The request carried valid credentials for `scheme` (`hmac-sha256`, `basic`, `token`...).
    Verified {
        /// The scheme that matched.
        scheme: String,
    },
    /// The connector was configured to accept unauthenticated requests (explicit opt-out).
    Unverified {
        /// Why this is allowed.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_matches_the_design_brief() {
        let text = r#"{
          "source": "pipedrive",
          "delivery_id": "df47d877-b58c-4886-91cd-1aa83e1d7366",
          "occurred_at": "2022-11-24T15:11:55.724Z",
          "object": { "kind": "deal", "id": "8" },
          "change": { "type": "stage_changed", "pipeline": "1", "from": "1", "to": "2" },
          "referral_code": null,
          "email": null
        }"#;
        let e: CrmEvent = serde_json::from_str(text).unwrap();
        assert_eq!(e.object.kind, ObjectKind::Deal);
        let back = serde_json::to_value(&e).unwrap();
        let orig: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn other_kinds_round_trip() {
        let k: ObjectKind = serde_json::from_str("\"other:stage\"").unwrap();
        assert_eq!(k, ObjectKind::Other("stage".into()));
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"other:stage\"");
    }

    #[test]
    fn debug_redacts_credentials() {
        let r = WebhookRequest::post("/hooks/x?token=abc123", "{}")
            .with_header("Authorization", "Basic dXNlcjpwYXNz")
            .with_header("X-Webhook-Token", "abc123")
            .with_header("X-Hook-Key", "k3y-value")
            .with_header("Content-Type", "application/json");
        let d = format!("{r:?}");
        assert!(
            !d.contains("dXNlcjpwYXNz") && !d.contains("abc123") && !d.contains("k3y-value"),
            "{d}"
        );
        assert!(d.contains("application/json"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.query(), Some("token=abc123"));
    }
}
