//! Referral Factory's objects as the API returns them (users, rewards, campaigns, pages).
//!
//! Decoding is lenient where the public material is silent or sources differ: ids may be
//! numbers or strings, times RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC), `meta` a list of
//! `{field, value}` or an object; unknown fields are kept in `extra`.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// A user: a "Person Referring" or a "Person Invited".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct User {
    /// User id (an integer on Referral Factory; kept as text).
    #[serde(default, deserialize_with = "de_id")]
    pub id: String,
    /// Campaign id.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub campaign_id: Option<String>,
    /// The id of the user who referred them (Person Invited only).
    #[serde(default, deserialize_with = "de_opt_id")]
    pub referrer_id: Option<String>,
    /// Their own referral code.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub code: Option<String>,
    /// Their sharing link.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub url: Option<String>,
    /// First name.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub first_name: Option<String>,
    /// Email.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub email: Option<String>,
    /// How many people they reached.
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub reach: Option<i64>,
    /// Where they came from (`Direct`, `Referred`, `Api`, ...).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub source: Option<String>,
    /// `person_referring` or `person_invited`.
    #[serde(
        default,
        rename = "type",
        deserialize_with = "de_opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_type: Option<String>,
    /// When they signed up.
    #[serde(default, deserialize_with = "de_opt_time")]
    pub signed_up_at: Option<DateTime<Utc>>,
    /// When they qualified; `None` while pending.
    #[serde(default, deserialize_with = "de_opt_time")]
    pub qualified_at: Option<DateTime<Utc>>,
    /// When they unsubscribed.
    #[serde(default, deserialize_with = "de_opt_time")]
    pub unsubscribed_at: Option<DateTime<Utc>>,
    /// Campaign custom fields.
    #[serde(default, deserialize_with = "de_meta")]
    pub meta: Vec<MetaField>,
    /// The coupon assigned to them, if any.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub coupon: Option<String>,
    /// Their referrer, when requested with `with=referrer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<Box<User>>,
    /// Their rewards, when requested with `with=rewards`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewards: Option<Vec<RewardItem>>,
    /// Every other field (`sharing`, `analytics`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl User {
    /// Whether this user was referred (`type == "person_invited"` or a referrer is set).
    pub fn is_person_invited(&self) -> bool {
        self.user_type.as_deref() == Some("person_invited") || self.referrer_id.is_some()
    }
    /// The value of meta field `field`.
    pub fn meta(&self, field: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|m| m.field == field)
            .map(|m| m.value.as_str())
    }
}

/// A campaign custom field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaField {
    /// Field name.
    pub field: String,
    /// Value (non-string values are kept as their JSON text).
    pub value: String,
}

/// Reward metrics (the `{metric}` of the rewards paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardMetric {
    /// Fixed amounts.
    Amount,
    /// Commissions.
    Commission,
    /// Coupons.
    Coupon,
    /// Custom rewards.
    Custom,
}

impl RewardMetric {
    /// Every metric.
    pub const ALL: [RewardMetric; 4] = [
        RewardMetric::Amount,
        RewardMetric::Commission,
        RewardMetric::Coupon,
        RewardMetric::Custom,
    ];
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            RewardMetric::Amount => "amount",
            RewardMetric::Commission => "commission",
            RewardMetric::Coupon => "coupon",
            RewardMetric::Custom => "custom",
        }
    }
}

impl fmt::Display for RewardMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rewards list: `GET /rewards/{view}/{metric}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RewardView {
    /// Earned, not yet issued.
    Due,
    /// Issued.
    Issued,
    /// All rewards.
    Dashboard,
}

impl RewardView {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            RewardView::Due => "due",
            RewardView::Issued => "issued",
            RewardView::Dashboard => "dashboard",
        }
    }
}

/// A reward as the rewards lists, issue and cancel return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct RewardItem {
    /// Id (what issue and cancel take).
    #[serde(default, deserialize_with = "de_id")]
    pub id: String,
    /// The campaign reward rule it comes from.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub reward_id: Option<String>,
    /// The user who receives it.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub recipient_id: Option<String>,
    /// `amount`, `commission`, `coupon` or `custom`.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub metric: Option<String>,
    /// The amount, as Referral Factory gives it (a number or a decimal string).
    #[serde(default, deserialize_with = "de_opt_number")]
    pub amount: Option<f64>,
    /// The coupon code, for coupon rewards.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub coupon: Option<String>,
    /// Whether it can be issued now.
    #[serde(default)]
    pub can_be_issued: Option<bool>,
    /// `due`, `issued`, `cancelled`.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub status: Option<String>,
    /// When it was issued.
    #[serde(default, deserialize_with = "de_opt_time")]
    pub issued_at: Option<DateTime<Utc>>,
    /// When it became due.
    #[serde(default, deserialize_with = "de_opt_time")]
    pub created_at: Option<DateTime<Utc>>,
    /// Every other field (`count`, `total` of aggregated due rewards, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct Campaign {
    /// Id.
    #[serde(default, deserialize_with = "de_id")]
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub name: Option<String>,
    /// Landing page.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub url: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `meta` of a list answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct PageMeta {
    /// This page's number (1-based).
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub current_page: Option<u64>,
    /// Items per page.
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub per_page: Option<u64>,
    /// Items in all pages.
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub total: Option<u64>,
    /// The last page's number.
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub last_page: Option<u64>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Page<T> {
    /// The items (in v1 mode, after the client's campaign filter).
    pub items: Vec<T>,
    /// Pagination metadata, when the server sent it.
    pub meta: Option<PageMeta>,
    /// `links.next` as the server sent it.
    pub next: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Lenient decoding helpers.

fn scalar_to_string(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(scalar_to_string(v).filter(|s| !s.is_empty()))
}

fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(de_opt_id(d)?.unwrap_or_default())
}

fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(scalar_to_string(v))
}

fn de_opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => Ok(n.as_f64()),
        serde_json::Value::String(s) if s.trim().is_empty() => Ok(None),
        serde_json::Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("not a number: {s:?}"))),
        other => Err(de::Error::custom(format!("not a number: {other}"))),
    }
}

fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(de_opt_number(d)?.map(|f| f as i64))
}

fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(de_opt_number(d)?.filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// Parses a Referral Factory time: RFC 3339, or a zone-less `YYYY-MM-DD HH:MM:SS[.f]` /
/// `YYYY-MM-DDTHH:MM:SS[.f]` read as UTC, or unix seconds.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    s.parse::<i64>()
        .ok()
        .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
}

/// A time that is present but unreadable is an error, not `None`: reading a `qualified_at` we
/// do not understand as "pending" would qualify a referral twice.
fn de_opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) if s.trim().is_empty() => Ok(None),
        serde_json::Value::String(s) => parse_time(&s)
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("unreadable time {s:?}"))),
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("unreadable time {n}"))),
        other => Err(de::Error::custom(format!("unreadable time {other}"))),
    }
}

fn de_meta<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MetaField>, D::Error> {
    let text = |v: serde_json::Value| scalar_to_string(v).unwrap_or_default();
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                serde_json::Value::Object(mut m) => {
                    let field = m
                        .remove("field")
                        .or_else(|| m.remove("name"))
                        .or_else(|| m.remove("key"))
                        .and_then(scalar_to_string)?;
                    let value = m.remove("value").map(text).unwrap_or_default();
                    Some(MetaField { field, value })
                }
                _ => None,
            })
            .collect(),
        serde_json::Value::Object(m) => m
            .into_iter()
            .map(|(field, v)| MetaField {
                field,
                value: text(v),
            })
            .collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_decodes_leniently() {
        let u: User = serde_json::from_value(serde_json::json!({
            "id": 12, "campaign_id": "3", "referrer_id": null, "code": "ABC",
            "first_name": "Ann", "email": "ann@example.com", "reach": "4",
            "type": "person_referring", "signed_up_at": "2024-05-01 10:00:00",
            "qualified_at": null, "meta": [{"field": "company", "value": "Acme"}, {"field": "n", "value": 3}],
            "sharing": {"subject": "hi"}
        }))
        .unwrap();
        assert_eq!(u.id, "12");
        assert_eq!(u.campaign_id.as_deref(), Some("3"));
        assert_eq!(u.reach, Some(4));
        assert_eq!(u.meta("company"), Some("Acme"));
        assert_eq!(u.meta("n"), Some("3"));
        assert!(!u.is_person_invited());
        assert_eq!(
            u.signed_up_at.unwrap().to_rfc3339(),
            "2024-05-01T10:00:00+00:00"
        );
        assert!(u.extra.contains_key("sharing"));
        let m: User =
            serde_json::from_value(serde_json::json!({"id": "x", "meta": {"a": "b"}})).unwrap();
        assert_eq!(m.meta("a"), Some("b"));
    }

    #[test]
    fn unreadable_qualified_at_is_an_error_not_pending() {
        let r: Result<User, _> =
            serde_json::from_value(serde_json::json!({"id": 1, "qualified_at": "yesterday"}));
        assert!(r.is_err());
        for t in [
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00.000000Z",
            "2024-05-01T12:00:00+02:00",
            "2024-05-01 10:00:00",
            "2024-05-01T10:00:00",
        ] {
            assert_eq!(
                parse_time(t).unwrap().to_rfc3339(),
                "2024-05-01T10:00:00+00:00",
                "{t}"
            );
        }
    }

    #[test]
    fn reward_amounts() {
        let r: RewardItem = serde_json::from_value(serde_json::json!({
            "id": 5, "recipient_id": 7, "metric": "amount", "amount": "10.50", "status": "due"
        }))
        .unwrap();
        assert_eq!(r.amount, Some(10.5));
        assert_eq!(r.recipient_id.as_deref(), Some("7"));
    }
}
