//! Referred user + push spec → a Salesforce record (pure, no I/O).
//!
//! `[push.fields]` and `[push.defaults]` keys are field API names (`FirstName`, `LeadSource`,
//! `Referred_By__c`). `[push.defaults]` are written only on records refsync creates. Always
//! written: the external-id field (the referral code) and `Email`; a lead also gets the
//! `LastName` Salesforce requires (the user's last name, else first name, else the email's local
//! part) and a `Company` of `[not provided]` (as Web-to-Lead does) unless mapped.

use refsync_core::{Error, ObjectKind, PushSpec, ReferredUser, Result};
use serde_json::{Map, Value};

use crate::{INFO, NAME};

/// The sObject a push writes.
pub(crate) fn sobject_of(spec: &PushSpec) -> Result<&'static str> {
    match &spec.object {
        ObjectKind::Lead => Ok("Lead"),
        ObjectKind::Contact | ObjectKind::Person => Ok("Contact"),
        other => Err(Error::validation(format!(
            "{NAME}: Salesforce pushes a lead or a contact, not {other} ([push] object)"
        ))),
    }
}

fn is_api_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One record: fields written on create and update, and those on create only.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Record {
    pub(crate) code: String,
    pub(crate) email: String,
    pub(crate) fields: Map<String, Value>,
    pub(crate) defaults: Map<String, Value>,
}

/// Renders `user` into a record of `sobject` keyed by `external_id`.
pub(crate) fn record(
    user: &ReferredUser,
    spec: &PushSpec,
    sobject: &str,
    external_id: &str,
) -> Result<Record> {
    spec.fields.check_required(INFO.required_mappings)?;
    let check = |key: &str| -> Result<String> {
        let k = key.trim();
        if is_api_name(k) {
            Ok(k.to_owned())
        } else {
            Err(Error::validation(format!(
                "{NAME}: {key:?} is not a field API name (Setup > Object Manager > {sobject} > Fields: the \"Field Name\" column, e.g. FirstName or Referral_Code__c)"
            )))
        }
    };
    let code = user.referral_code.trim().to_owned();
    if code.is_empty() {
        return Err(Error::validation(format!(
            "{NAME}: the referral code is empty"
        )));
    }
    let email = user.email.trim().to_lowercase();
    if email.is_empty() {
        return Err(Error::validation(format!(
            "{NAME}: the referred user has no email"
        )));
    }
    let mut r = Record {
        code: code.clone(),
        email: email.clone(),
        ..Record::default()
    };
    for (key, value) in &spec.defaults {
        r.defaults.insert(check(key)?, value.clone());
    }
    for (key, value) in spec.fields.render(user) {
        r.fields.insert(check(&key)?, Value::String(value));
    }
    r.fields.insert(external_id.to_owned(), Value::String(code));
    r.fields.insert("Email".into(), Value::String(email));
    if !r.fields.contains_key("LastName") && !r.defaults.contains_key("LastName") {
        let last = user.surname();
        r.fields.insert("LastName".into(), Value::String(last));
    }
    if sobject == "Lead" && !r.fields.contains_key("Company") && !r.defaults.contains_key("Company")
    {
        r.defaults
            .insert("Company".into(), Value::String("[not provided]".into()));
    }
    r.defaults.retain(|k, _| !r.fields.contains_key(k));
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
            "campaign": {"id": "42"},
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
    fn a_lead_gets_its_key_email_last_name_and_company() {
        let s = spec(
            ObjectKind::Lead,
            &[
                ("Email", "{Email}"),
                ("FirstName", "{First Name}"),
                ("Referral_Code__c", "{Referral Code}"),
            ],
            json!({"LeadSource": "Referral"}),
        );
        let r = record(&user(), &s, "Lead", "Referral_Code__c").unwrap();
        assert_eq!(r.fields["Referral_Code__c"], "BOB-7");
        assert_eq!(r.fields["Email"], "bob@example.com");
        assert_eq!(r.fields["LastName"], "Bob");
        assert_eq!(r.defaults["Company"], "[not provided]");
        assert_eq!(r.defaults["LeadSource"], "Referral");
        let c = record(
            &user(),
            &spec(
                ObjectKind::Contact,
                &[("Email", "{Email}"), ("X__c", "{Referral Code}")],
                json!({}),
            ),
            "Contact",
            "Referral_Code__c",
        )
        .unwrap();
        assert!(!c.defaults.contains_key("Company"));
    }

    #[test]
    fn labels_missing_mappings_and_other_objects_are_refused() {
        let s = spec(
            ObjectKind::Lead,
            &[("Email", "{Email}"), ("Referral Code", "{Referral Code}")],
            json!({}),
        );
        assert!(
            record(&user(), &s, "Lead", "Referral_Code__c")
                .unwrap_err()
                .message()
                .contains("API name")
        );
        let s = spec(ObjectKind::Lead, &[("Email", "{Email}")], json!({}));
        assert!(record(&user(), &s, "Lead", "Referral_Code__c").is_err());
        assert!(sobject_of(&spec(ObjectKind::Deal, &[], json!({}))).is_err());
    }
}
