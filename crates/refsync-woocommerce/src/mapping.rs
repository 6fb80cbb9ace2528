//! Referred user + push spec → the body of a WooCommerce customer (pure, no I/O).
//!
//! `[push.fields]` keys: `email`, `first_name`, `last_name`, `username`, `billing.<field>`,
//! `shipping.<field>` (the customer's address fields) and `meta.<key>` (a `meta_data` entry —
//! where the referral code, referrer and campaign go). `[push.defaults]` takes the same keys
//! with constant values.

use std::collections::BTreeMap;

use refsync_core::{Error, ObjectKind, PushSpec, ReferredUser, Result};
use serde_json::{Map, Value, json};

use crate::{INFO, NAME};

const BILLING: [&str; 11] = [
    "first_name",
    "last_name",
    "company",
    "address_1",
    "address_2",
    "city",
    "state",
    "postcode",
    "country",
    "email",
    "phone",
];
const SHIPPING: [&str; 10] = [
    "first_name",
    "last_name",
    "company",
    "address_1",
    "address_2",
    "city",
    "state",
    "postcode",
    "country",
    "phone",
];
const TOP: [&str; 4] = ["email", "first_name", "last_name", "username"];

/// What a push writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A customer, and the coupon when one is configured.
    Customer,
    /// Only the coupon.
    Coupon,
}

/// The push target for `spec.object`: `contact` (a customer) or `coupon`.
pub(crate) fn target(spec: &PushSpec) -> Result<Target> {
    match &spec.object {
        ObjectKind::Contact => Ok(Target::Customer),
        ObjectKind::Other(o) if o == "customer" => Ok(Target::Customer),
        ObjectKind::Coupon => Ok(Target::Coupon),
        other => Err(Error::validation(format!(
            "{NAME} pushes a customer (object = \"contact\") or only a coupon (object = \"coupon\"), not {other}"
        ))),
    }
}

/// The customer body: `create` for `POST /customers`, `update` (no email, no username: the
/// store keeps those) for `PUT /customers/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CustomerBodies {
    pub(crate) email: String,
    pub(crate) create: Value,
    pub(crate) update: Value,
}

/// Renders the customer for `user`; fails on a field key WooCommerce has no place for, and
/// names each required placeholder the mapping lacks.
pub(crate) fn customer(user: &ReferredUser, spec: &PushSpec) -> Result<CustomerBodies> {
    spec.fields.check_required(INFO.required_mappings)?;
    let mut values: BTreeMap<String, Value> = BTreeMap::new();
    for (key, value) in &spec.defaults {
        values.insert(key.clone(), value.clone());
    }
    for (key, value) in spec.fields.render(user) {
        values.insert(key, Value::String(value));
    }
    let mut body = Map::new();
    let mut billing = Map::new();
    let mut shipping = Map::new();
    let mut meta = Vec::new();
    for (key, value) in values {
        let key = key.trim();
        if let Some(k) = key.strip_prefix("meta.") {
            if k.trim().is_empty() {
                return Err(bad_key(key));
            }
            meta.push(json!({"key": k.trim(), "value": value}));
        } else if let Some(k) = key.strip_prefix("billing.") {
            if !BILLING.contains(&k) {
                return Err(bad_key(key));
            }
            billing.insert(k.to_owned(), value);
        } else if let Some(k) = key.strip_prefix("shipping.") {
            if !SHIPPING.contains(&k) {
                return Err(bad_key(key));
            }
            shipping.insert(k.to_owned(), value);
        } else if TOP.contains(&key) {
            body.insert(key.to_owned(), value);
        } else {
            return Err(bad_key(key));
        }
    }
    let email = body
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            Error::validation(format!(
                "{NAME}: the customer's email is empty (map \"email\" = \"{{Email}}\")"
            ))
        })?
        .to_owned();
    body.insert("email".into(), Value::String(email.clone()));
    if !billing.is_empty() {
        body.insert("billing".into(), Value::Object(billing));
    }
    if !shipping.is_empty() {
        body.insert("shipping".into(), Value::Object(shipping));
    }
    if !meta.is_empty() {
        body.insert("meta_data".into(), Value::Array(meta));
    }
    let create = Value::Object(body.clone());
    body.remove("email");
    body.remove("username");
    Ok(CustomerBodies {
        email,
        create,
        update: Value::Object(body),
    })
}

fn bad_key(key: &str) -> Error {
    Error::validation(format!(
        "{NAME}: push field {key:?} has no place on a WooCommerce customer; use email, first_name, last_name, username, billing.<{}>, shipping.<{}> or meta.<key>",
        BILLING.join("|"),
        SHIPPING.join("|"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use refsync_core::{CampaignRef, DuplicatePolicy, FieldMapping, Referrer};

    fn user() -> ReferredUser {
        ReferredUser {
            first_name: "Ann".into(),
            last_name: Some("Lee".into()),
            email: "ann@example.com".into(),
            referral_code: "ABC123".into(),
            campaign: CampaignRef {
                id: "42".into(),
                name: Some("Spring".into()),
            },
            referrer: Some(Referrer {
                email: Some("bob@example.com".into()),
                ..Referrer::default()
            }),
            coupon: Some("ref-xyz".into()),
            ..ReferredUser::default()
        }
    }

    fn spec(pairs: &[(&str, &str)]) -> PushSpec {
        PushSpec {
            object: ObjectKind::Contact,
            fields: FieldMapping::from_pairs(pairs.iter().copied()).unwrap(),
            duplicates: DuplicatePolicy::UpdateExisting,
            defaults: BTreeMap::new(),
        }
    }

    #[test]
    fn fields_land_in_their_places() {
        let mut s = spec(&[
            ("email", "{Email}"),
            ("first_name", "{First Name}"),
            ("last_name", "{Last Name}"),
            ("billing.phone", "+1 555"),
            ("meta.referral_code", "{Referral Code}"),
            ("meta.referred_by", "{Referrer Email}"),
            ("meta.referral_coupon", "{Coupon}"),
        ]);
        s.defaults.insert("shipping.country".into(), json!("US"));
        let b = customer(&user(), &s).unwrap();
        assert_eq!(b.email, "ann@example.com");
        assert_eq!(b.create["first_name"], "Ann");
        assert_eq!(b.create["last_name"], "Lee");
        assert_eq!(b.create["billing"], json!({"phone": "+1 555"}));
        assert_eq!(b.create["shipping"], json!({"country": "US"}));
        assert_eq!(
            b.create["meta_data"],
            json!([
                {"key": "referral_code", "value": "ABC123"},
                {"key": "referral_coupon", "value": "ref-xyz"},
                {"key": "referred_by", "value": "bob@example.com"},
            ])
        );
        assert!(b.update.get("email").is_none());
        assert_eq!(b.update["meta_data"], b.create["meta_data"]);
    }

    #[test]
    fn unknown_keys_and_missing_required_mappings_are_refused() {
        for key in [
            "phone",
            "billing.fax",
            "shipping.email",
            "meta.",
            "Referral Code",
        ] {
            let s = spec(&[
                ("email", "{Email}"),
                ("first_name", "{First Name}"),
                ("meta.code", "{Referral Code}"),
                (key, "x"),
            ]);
            let e = customer(&user(), &s).unwrap_err();
            assert_eq!(e.kind(), &refsync_core::ErrorKind::Validation, "{key}");
            assert!(e.message().contains("meta.<key>"), "{}", e.message());
        }
        let s = spec(&[("email", "{Email}"), ("first_name", "{First Name}")]);
        let e = customer(&user(), &s).unwrap_err();
        assert!(e.message().contains("Referral Code"), "{}", e.message());
    }

    #[test]
    fn targets() {
        let mut s = spec(&[]);
        assert_eq!(target(&s).unwrap(), Target::Customer);
        s.object = ObjectKind::Coupon;
        assert_eq!(target(&s).unwrap(), Target::Coupon);
        s.object = ObjectKind::Deal;
        assert!(target(&s).is_err());
    }
}
