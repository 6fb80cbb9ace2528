//! Referred user + push spec → Zoho record JSON (pure, no I/O).
//!
//! `[push.fields]` and `[push.defaults]` keys are fields of the pushed module, by API name
//! (`First_Name`, `Referral_Code`) or label (`Referral Code`), resolved through the fields API
//! before rendering. `[push.defaults]` are written only on records refsync creates. Always
//! written: `Email` (leads and contacts), the referral-code field, and for leads and contacts a
//! `Last_Name` (Zoho requires one: the user's last name, else first name, else the email's
//! local part); deals get a `Deal_Name` (`<campaign>: <first name>`) unless mapped.

use std::collections::HashMap;

use refsync_core::{Error, ObjectKind, PushSpec, ReferredUser, Result};
use serde_json::{Map, Value};

use crate::{INFO, NAME};

/// The module a push writes.
pub(crate) fn module_of(spec: &PushSpec) -> Result<&'static str> {
    match &spec.object {
        ObjectKind::Lead => Ok("Leads"),
        ObjectKind::Contact | ObjectKind::Person => Ok("Contacts"),
        ObjectKind::Deal => Ok("Deals"),
        other => Err(Error::validation(format!(
            "{NAME}: Zoho CRM can push a lead, a contact or a deal, not {other} ([push] object)"
        ))),
    }
}

/// Every configured key of `spec` (fields and defaults), to resolve to API names.
pub(crate) fn keys(spec: &PushSpec) -> Vec<String> {
    let mut k: Vec<String> = spec
        .fields
        .0
        .keys()
        .chain(spec.defaults.keys())
        .map(|s| s.trim().to_owned())
        .collect();
    k.sort();
    k.dedup();
    k
}

/// One record to push: the fields written on create and update, and those on create only.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Record {
    /// The value of the duplicate-check field (lower-cased email, or the code).
    pub(crate) key: String,
    pub(crate) fields: Map<String, Value>,
    pub(crate) defaults: Map<String, Value>,
}

/// Renders `user` into a record of `module`; `names` maps each configured key to its API
/// name; `code_field` and `check_field` are API names.
pub(crate) fn record(
    user: &ReferredUser,
    spec: &PushSpec,
    module: &str,
    names: &HashMap<String, String>,
    code_field: &str,
    check_field: &str,
) -> Result<Record> {
    spec.fields.check_required(INFO.required_mappings)?;
    let api = |key: &str| -> Result<String> {
        names
            .get(key.trim())
            .cloned()
            .ok_or_else(|| Error::unexpected(format!("{NAME}: field {key:?} was not resolved")))
    };
    let email = user.email.trim().to_lowercase();
    let code = user.referral_code.trim().to_owned();
    if code.is_empty() {
        return Err(Error::validation(format!(
            "{NAME}: the referral code is empty"
        )));
    }
    let mut r = Record::default();
    for (key, value) in &spec.defaults {
        r.defaults.insert(api(key)?, value.clone());
    }
    for (key, value) in spec.fields.render(user) {
        r.fields.insert(api(&key)?, Value::String(value));
    }
    r.fields.insert(code_field.to_owned(), Value::String(code));
    if module == "Deals" {
        if !r.fields.contains_key("Deal_Name") && !r.defaults.contains_key("Deal_Name") {
            let name = user.deal_title();
            r.defaults.insert("Deal_Name".into(), Value::String(name));
        }
    } else {
        if email.is_empty() {
            return Err(Error::validation(format!(
                "{NAME}: the referred user has no email"
            )));
        }
        r.fields.insert("Email".into(), Value::String(email));
        if !r.fields.contains_key("Last_Name") {
            let last = user.surname();
            r.fields.insert("Last_Name".into(), Value::String(last));
        }
    }
    r.defaults.retain(|k, _| !r.fields.contains_key(k));
    r.key = match r
        .fields
        .get(check_field)
        .or_else(|| r.defaults.get(check_field))
    {
        Some(Value::String(s)) if check_field == "Email" => s.trim().to_lowercase(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(other) => other.to_string(),
        None => {
            return Err(Error::config(format!(
                "{NAME}: the duplicate-check field {check_field} gets no value from [push.fields]"
            )));
        }
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use refsync_core::{DuplicatePolicy, FieldMapping};
    use serde_json::json;

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
    fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn a_lead_gets_email_last_name_code_and_create_only_defaults() {
        let s = spec(
            ObjectKind::Lead,
            &[
                ("Email", "{Email}"),
                ("First Name", "{First Name}"),
                ("Referral Code", "{Referral Code}"),
            ],
            json!({"Lead_Status": "Not Contacted"}),
        );
        let n = names(&[
            ("Email", "Email"),
            ("First Name", "First_Name"),
            ("Referral Code", "Referral_Code"),
            ("Lead_Status", "Lead_Status"),
        ]);
        let r = record(&user(), &s, "Leads", &n, "Referral_Code", "Email").unwrap();
        assert_eq!(r.key, "bob@example.com");
        assert_eq!(r.fields["Email"], "bob@example.com");
        assert_eq!(r.fields["First_Name"], "Bob");
        assert_eq!(r.fields["Last_Name"], "Bob", "Zoho requires a last name");
        assert_eq!(r.fields["Referral_Code"], "BOB-7");
        assert_eq!(r.defaults["Lead_Status"], "Not Contacted");
        assert_eq!(module_of(&s).unwrap(), "Leads");
    }

    #[test]
    fn a_deal_is_named_and_keyed_by_its_code() {
        let s = spec(
            ObjectKind::Deal,
            &[("Email", "{Email}"), ("Referral_Code", "{Referral Code}")],
            json!({"Stage": "Qualification"}),
        );
        let n = names(&[
            ("Email", "Email"),
            ("Referral_Code", "Referral_Code"),
            ("Stage", "Stage"),
        ]);
        let r = record(&user(), &s, "Deals", &n, "Referral_Code", "Referral_Code").unwrap();
        assert_eq!(r.key, "BOB-7");
        assert_eq!(r.defaults["Deal_Name"], "Spring: Bob");
        assert_eq!(r.defaults["Stage"], "Qualification");
        assert!(!r.fields.contains_key("Last_Name"));
    }

    #[test]
    fn missing_mappings_unresolved_keys_and_other_objects_are_errors() {
        let s = spec(ObjectKind::Lead, &[("Email", "{Email}")], json!({}));
        assert!(
            record(
                &user(),
                &s,
                "Leads",
                &names(&[("Email", "Email")]),
                "Referral_Code",
                "Email"
            )
            .is_err()
        );
        let s = spec(
            ObjectKind::Lead,
            &[("Email", "{Email}"), ("X", "{Referral Code}")],
            json!({}),
        );
        let e = record(
            &user(),
            &s,
            "Leads",
            &names(&[("Email", "Email")]),
            "Referral_Code",
            "Email",
        )
        .unwrap_err();
        assert!(e.message().contains("\"X\""), "{e}");
        let s = spec(ObjectKind::Coupon, &[], json!({}));
        assert!(module_of(&s).is_err());
    }
}
