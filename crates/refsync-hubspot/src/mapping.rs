//! Referred user + push spec → HubSpot property maps (pure, no I/O).
//!
//! Names under `[push.fields]` and `[push.defaults]` are properties' **internal names** (not
//! their labels): `email`, `firstname`, `referral_code`... for the contact, `deal.<name>`
//! (`deal.dealname`, `deal.amount`...) for the deal. Values are strings, as HubSpot stores them.
//! `[push.defaults]` are set only on records refsync creates (e.g. `lifecyclestage`,
//! `deal.pipeline`, `deal.dealstage`). The contact's `email` is the referred user's email (its
//! upsert key) and the referral code is always written to `referral_code_property` (contact) and
//! `deal_referral_code_property` (deal, its unique key).

use std::collections::BTreeMap;

use refsync_core::{Error, ObjectKind, PushSpec, ReferredUser, Result};
use serde_json::Value;

use crate::config::{Config, is_property_name};
use crate::{INFO, NAME};

/// What a push writes besides the contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Only the contact.
    Contact,
    /// The contact and a deal associated with it.
    Deal,
}

impl Target {
    /// The target of `spec.object`, or a validation error naming what HubSpot supports.
    pub(crate) fn of(spec: &PushSpec) -> Result<Target> {
        match &spec.object {
            ObjectKind::Contact | ObjectKind::Person => Ok(Target::Contact),
            ObjectKind::Deal => Ok(Target::Deal),
            other => Err(Error::validation(format!(
                "{NAME}: HubSpot can push a contact, or a contact and a deal, not {other} ([push] object = \"contact\" or \"deal\")"
            ))),
        }
    }
}

/// The property maps of one referred user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Properties {
    /// The contact's email, lower-cased and trimmed: its upsert key.
    pub(crate) email: String,
    /// The referral code (the deal's key).
    pub(crate) code: String,
    /// Contact properties written on create and update.
    pub(crate) contact: BTreeMap<String, String>,
    /// Contact properties written on create only.
    pub(crate) contact_defaults: BTreeMap<String, String>,
    /// Deal properties written on create and update.
    pub(crate) deal: BTreeMap<String, String>,
    /// Deal properties written on create only (a `dealname` among them).
    pub(crate) deal_defaults: BTreeMap<String, String>,
}

/// Which object a `[push.fields]` / `[push.defaults]` key is about, and the property name.
fn split_key(key: &str) -> Result<(bool, &str)> {
    let key = key.trim();
    let (deal, name) = match key.strip_prefix("deal.") {
        Some(n) => (true, n.trim()),
        None => (false, key),
    };
    if is_property_name(name) {
        Ok((deal, name))
    } else {
        Err(Error::validation(format!(
            "{NAME}: {key:?} is not a HubSpot property's internal name: use `name` for a contact property or `deal.name` for a deal property, with the internal name (lower case, digits and _) shown in Settings > Properties, not the label"
        )))
    }
}

/// A default value as HubSpot's string form.
fn as_text(v: &Value) -> Result<String> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => {
            return Err(Error::validation(format!(
                "{NAME}: a [push.defaults] value must be a string, number or boolean, got {other}"
            )));
        }
    })
}

/// The contact and deal properties the push of `spec` writes (to check they exist).
pub(crate) fn properties_used(
    spec: &PushSpec,
    config: &Config,
) -> Result<(Vec<String>, Vec<String>)> {
    let target = Target::of(spec)?;
    let mut contact = vec!["email".to_owned(), config.referral_code_property.clone()];
    let mut deal = Vec::new();
    if target == Target::Deal {
        deal.push(config.deal_referral_code_property.clone());
    }
    for key in spec
        .fields
        .0
        .keys()
        .chain(spec.defaults.keys())
        .map(String::as_str)
    {
        match split_key(key)? {
            (true, name) if target == Target::Deal => deal.push(name.to_owned()),
            (true, _) => {
                return Err(Error::validation(format!(
                    "{NAME}: {key:?} is a deal property, but [push] object is \"contact\" (set object = \"deal\" to create deals)"
                )));
            }
            (false, name) => contact.push(name.to_owned()),
        }
    }
    contact.sort();
    contact.dedup();
    deal.sort();
    deal.dedup();
    Ok((contact, deal))
}

/// Renders the properties of `user`; fails on a key that is not a property name, an empty
/// email, or a required placeholder the mapping lacks.
pub(crate) fn properties(
    user: &ReferredUser,
    spec: &PushSpec,
    config: &Config,
) -> Result<Properties> {
    spec.fields.check_required(INFO.required_mappings)?;
    let target = Target::of(spec)?;
    let email = user.email.trim().to_lowercase();
    if email.is_empty() {
        return Err(Error::validation(format!(
            "{NAME}: the referred user has no email (HubSpot identifies contacts by email)"
        )));
    }
    let code = user.referral_code.trim().to_owned();
    if code.is_empty() {
        return Err(Error::validation(format!(
            "{NAME}: the referral code is empty"
        )));
    }
    let mut p = Properties {
        email: email.clone(),
        code: code.clone(),
        ..Properties::default()
    };
    for (key, value) in &spec.defaults {
        let (deal, name) = split_key(key)?;
        let value = as_text(value)?;
        match (deal, target) {
            (true, Target::Deal) => p.deal_defaults.insert(name.to_owned(), value),
            (true, Target::Contact) => continue,
            (false, _) => p.contact_defaults.insert(name.to_owned(), value),
        };
    }
    for (key, value) in spec.fields.render(user) {
        let (deal, name) = split_key(&key)?;
        match (deal, target) {
            (true, Target::Deal) => p.deal.insert(name.to_owned(), value),
            (true, Target::Contact) => continue,
            (false, _) => p.contact.insert(name.to_owned(), value),
        };
    }
    // The keys win over whatever the mapping says.
    p.contact.insert("email".into(), email);
    p.contact
        .insert(config.referral_code_property.clone(), code.clone());
    p.contact_defaults.retain(|k, _| !p.contact.contains_key(k));
    if target == Target::Deal {
        p.deal
            .insert(config.deal_referral_code_property.clone(), code);
        if !p.deal.contains_key("dealname") && !p.deal_defaults.contains_key("dealname") {
            let name = user.deal_title();
            p.deal_defaults.insert("dealname".into(), name);
        }
        p.deal_defaults.retain(|k, _| !p.deal.contains_key(k));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use refsync_core::{DuplicatePolicy, FieldMapping};
    use serde_json::json;

    fn config() -> Config {
        refsync_core::registry::parse_settings(&json!({
            "auth": {"type": "private_app", "token": "t"},
            "client_secret": "s",
        }))
        .unwrap()
    }
    fn user() -> ReferredUser {
        serde_json::from_value(json!({
            "first_name": "Bob", "email": " Bob@Example.com ", "referral_code": "BOB-7",
            "campaign": {"id": "42", "name": "Spring"},
        }))
        .unwrap()
    }
    fn spec(object: ObjectKind, fields: &[(&str, &str)], defaults: Value) -> PushSpec {
        PushSpec {
            object,
            fields: FieldMapping::from_pairs(fields.iter().copied()).unwrap(),
            duplicates: DuplicatePolicy::UpdateExisting,
            defaults: serde_json::from_value(defaults).unwrap(),
        }
    }

    #[test]
    fn contact_and_deal_properties_are_rendered_with_their_keys() {
        let s = spec(
            ObjectKind::Deal,
            &[
                ("email", "{Email}"),
                ("firstname", "{First Name}"),
                ("referral_code", "{Referral Code}"),
                ("deal.amount", "100"),
            ],
            json!({"lifecyclestage": "lead", "deal.pipeline": "default", "deal.dealstage": "appointmentscheduled", "firstname": "ignored"}),
        );
        let p = properties(&user(), &s, &config()).unwrap();
        assert_eq!(p.email, "bob@example.com");
        assert_eq!(p.contact["email"], "bob@example.com");
        assert_eq!(p.contact["firstname"], "Bob");
        assert_eq!(p.contact["referral_code"], "BOB-7");
        assert_eq!(
            p.contact_defaults,
            BTreeMap::from([("lifecyclestage".into(), "lead".into())])
        );
        assert_eq!(p.deal["amount"], "100");
        assert_eq!(p.deal["referral_code"], "BOB-7");
        assert_eq!(p.deal_defaults["dealname"], "Spring: Bob");
        assert_eq!(p.deal_defaults["pipeline"], "default");
        let (c, d) = properties_used(&s, &config()).unwrap();
        assert_eq!(c, ["email", "firstname", "lifecyclestage", "referral_code"]);
        assert_eq!(d, ["amount", "dealstage", "pipeline", "referral_code"]);
    }

    #[test]
    fn bad_keys_required_mappings_and_objects_are_refused() {
        let labels = spec(
            ObjectKind::Contact,
            &[
                ("email", "{Email}"),
                ("referral_code", "{Referral Code}"),
                ("Referral Code", "{Referral Code}"),
            ],
            json!({}),
        );
        let e = properties(&user(), &labels, &config()).unwrap_err();
        assert!(e.message().contains("internal name"), "{e}");
        let deal_on_contact = spec(
            ObjectKind::Contact,
            &[
                ("email", "{Email}"),
                ("referral_code", "{Referral Code}"),
                ("deal.amount", "1"),
            ],
            json!({}),
        );
        assert!(
            properties_used(&deal_on_contact, &config())
                .unwrap_err()
                .message()
                .contains("object = \"deal\"")
        );
        let missing = spec(ObjectKind::Contact, &[("email", "{Email}")], json!({}));
        assert!(properties(&user(), &missing, &config()).is_err());
        let lead = spec(
            ObjectKind::Lead,
            &[("email", "{Email}"), ("referral_code", "{Referral Code}")],
            json!({}),
        );
        assert!(Target::of(&lead).unwrap_err().message().contains("contact"));
        let object_default = spec(
            ObjectKind::Contact,
            &[("email", "{Email}"), ("referral_code", "{Referral Code}")],
            json!({"x": {"a": 1}}),
        );
        assert!(properties(&user(), &object_default, &config()).is_err());
    }
}
