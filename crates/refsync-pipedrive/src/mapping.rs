//! Referred user + push spec → the Pipedrive request bodies (pure, no I/O).
//!
//! Names under `[push.fields]`:
//! - `name`, `first_name`, `last_name`, `email`, `phone`: the person's standard fields;
//! - `title`: the lead's or deal's title (default: the campaign name, else the source);
//! - `person.<key or label>`: a person custom field;
//! - anything else: a deal field (leads share deal fields) by its 40-character key or its
//!   label — or, when pushing a person only, a person field.
//!
//! `[push.defaults]` are set on create: `owner_id`, `label_ids`, `visible_to`, `value`,
//! `currency`, `expected_close_date`, `pipeline_id` and `stage_id` (deals only) and any other
//! field key; `person.<field>` defaults go to the person.

use std::collections::HashMap;

use refsync_core::{Error, ObjectKind, Placeholder, PushSpec, ReferredUser, Result};
use serde_json::{Map, Value, json};

use crate::INFO;
use crate::client::{Field, FieldEntity};

/// What a push creates besides the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A lead (v1 `/v1/leads`) linked to the person.
    Lead,
    /// A deal (v2 `/api/v2/deals`) linked to the person.
    Deal,
    /// Only the person.
    Person,
}

impl Target {
    /// The target of `spec.object`, or a validation error naming what Pipedrive supports.
    pub(crate) fn of(spec: &PushSpec) -> Result<Target> {
        match &spec.object {
            ObjectKind::Lead => Ok(Target::Lead),
            ObjectKind::Deal => Ok(Target::Deal),
            ObjectKind::Person | ObjectKind::Contact => Ok(Target::Person),
            other => Err(Error::validation(format!(
                "Pipedrive can push a lead, a deal or a person, not {other} ([push] object)"
            ))),
        }
    }
}

const PERSON_STANDARD: &[&str] = &["name", "first_name", "last_name", "email", "phone"];

/// A `[push.fields]` name, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot<'a> {
    PersonStandard(&'a str),
    Title,
    Custom(FieldEntity, &'a str),
}

fn slot(name: &str, target: Target) -> Slot<'_> {
    let lower = name.trim();
    if let Some(p) = PERSON_STANDARD
        .iter()
        .find(|p| p.eq_ignore_ascii_case(lower))
    {
        return Slot::PersonStandard(p);
    }
    if lower.eq_ignore_ascii_case("title") && target != Target::Person {
        return Slot::Title;
    }
    if let Some(rest) = name.strip_prefix("person.") {
        return Slot::Custom(FieldEntity::Person, rest.trim());
    }
    match target {
        Target::Person => Slot::Custom(FieldEntity::Person, name.trim()),
        Target::Lead | Target::Deal => Slot::Custom(FieldEntity::Deal, name.trim()),
    }
}

/// The fields that must be resolved (key or label → field) before [`bodies`] can run.
pub(crate) fn fields_to_resolve(spec: &PushSpec) -> Result<Vec<(FieldEntity, String)>> {
    let target = Target::of(spec)?;
    Ok(spec
        .fields
        .0
        .keys()
        .filter_map(|name| match slot(name, target) {
            Slot::Custom(entity, n) => Some((entity, n.to_owned())),
            _ => None,
        })
        .collect())
}

/// The request bodies of one push.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bodies {
    pub(crate) target: Target,
    /// The email the person is found by.
    pub(crate) email: String,
    /// `POST /api/v2/persons` body.
    pub(crate) person_create: Value,
    /// `PATCH /api/v2/persons/{id}` body: the mapped fields only (no defaults).
    pub(crate) person_update: Value,
    /// `POST` body of the lead or deal, without `person_id` (`Null` for a person-only push).
    pub(crate) target_create: Value,
    /// `PATCH` body of the lead or deal: the mapped fields only.
    pub(crate) target_update: Value,
}

/// Converts a rendered text to what field `f` takes: option ids for enum/set, numbers for
/// numeric fields, text otherwise.
fn field_value(f: &Field, text: &str) -> Result<Value> {
    match f.field_type.as_str() {
        "enum" | "set" => {
            let id = f
                .options
                .iter()
                .find(|(_, label)| label.eq_ignore_ascii_case(text.trim()))
                .map(|(id, _)| id.clone())
                .ok_or_else(|| {
                    Error::validation(format!(
                        "Pipedrive field {:?} has no option {text:?} (options: {})",
                        f.name,
                        f.options
                            .iter()
                            .map(|(_, l)| format!("{l:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            Ok(if f.field_type == "set" {
                json!([id])
            } else {
                id
            })
        }
        "double" | "monetary" | "int" => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            .ok_or_else(|| {
                Error::validation(format!(
                    "Pipedrive field {:?} takes a number, the mapping gave {text:?}",
                    f.name
                ))
            }),
        _ => Ok(Value::String(text.to_owned())),
    }
}

/// Builds the request bodies for `user`. `resolved` maps each name of [`fields_to_resolve`]
/// to its field. Fails with a validation error naming each required placeholder the mapping
/// lacks, or a value a field cannot take.
pub(crate) fn bodies(
    user: &ReferredUser,
    spec: &PushSpec,
    resolved: &HashMap<(FieldEntity, String), Field>,
) -> Result<Bodies> {
    spec.fields.check_required(INFO.required_mappings)?;
    let target = Target::of(spec)?;
    let rendered = spec.fields.render(user);

    let mut person_std: HashMap<&str, String> = HashMap::new();
    let mut title: Option<String> = None;
    let mut person_custom = Map::new();
    let mut target_fields: Vec<(String, Value, bool)> = Vec::new();
    for (name, text) in &rendered {
        match slot(name, target) {
            Slot::PersonStandard(p) => {
                person_std.insert(p, text.clone());
            }
            Slot::Title => title = Some(text.clone()),
            Slot::Custom(entity, n) => {
                let f = resolved.get(&(entity, n.to_owned())).ok_or_else(|| {
                    Error::config(format!("Pipedrive field {n:?} was not resolved"))
                })?;
                let value = field_value(f, text)?;
                match entity {
                    FieldEntity::Person => {
                        person_custom.insert(f.key.clone(), value);
                    }
                    FieldEntity::Deal => target_fields.push((f.key.clone(), value, f.custom)),
                }
            }
        }
    }

    let email = person_std
        .get("email")
        .cloned()
        .unwrap_or_else(|| user.email.clone());
    if email.trim().is_empty() {
        return Err(Error::validation("the referred user has no email"));
    }
    let first = person_std
        .get("first_name")
        .cloned()
        .unwrap_or_else(|| user.first_name.clone());
    let last = person_std
        .get("last_name")
        .cloned()
        .or_else(|| user.last_name.clone());
    let name = person_std
        .get("name")
        .cloned()
        .unwrap_or_else(|| match &last {
            Some(l) if !l.is_empty() => format!("{first} {l}"),
            _ => first.clone(),
        });

    // Person: mapped standard fields, custom fields, defaults prefixed `person.`.
    let mut person_update = Map::new();
    if person_std.contains_key("name")
        || person_std.contains_key("first_name")
        || person_std.contains_key("last_name")
    {
        person_update.insert("name".into(), json!(name));
    }
    if person_std.contains_key("email") {
        person_update.insert(
            "emails".into(),
            json!([{ "value": email, "primary": true, "label": "work" }]),
        );
    }
    if let Some(phone) = person_std.get("phone") {
        person_update.insert(
            "phones".into(),
            json!([{ "value": phone, "primary": true, "label": "work" }]),
        );
    }
    if !person_custom.is_empty() {
        person_update.insert("custom_fields".into(), Value::Object(person_custom));
    }
    let mut person_create = Map::new();
    for (k, v) in &spec.defaults {
        if let Some(rest) = k.strip_prefix("person.") {
            person_create.insert(rest.to_owned(), v.clone());
        }
    }
    person_create.insert("name".into(), json!(name));
    person_create.insert(
        "emails".into(),
        json!([{ "value": email, "primary": true, "label": "work" }]),
    );
    for (k, v) in &person_update {
        person_create.insert(k.clone(), v.clone());
    }

    // Lead or deal.
    let (target_create, target_update) = match target {
        Target::Person => (Value::Null, Value::Null),
        Target::Lead | Target::Deal => {
            let mut update = Map::new();
            let mut custom = Map::new();
            for (key, value, is_custom) in target_fields {
                if target == Target::Deal && is_custom {
                    custom.insert(key, value);
                } else {
                    // v1 leads take custom fields at the root; standard fields are root keys.
                    update.insert(key, value);
                }
            }
            if !custom.is_empty() {
                update.insert("custom_fields".into(), Value::Object(custom));
            }
            if let Some(t) = &title {
                update.insert("title".into(), json!(t));
            }
            let mut create = Map::new();
            for (k, v) in &spec.defaults {
                if k.starts_with("person.") {
                    continue;
                }
                let v = match (target, k.as_str()) {
                    (Target::Lead, "pipeline_id" | "stage_id") => {
                        return Err(Error::config(format!(
                            "[push.defaults] {k} applies to deals; a Pipedrive lead has no pipeline or stage"
                        )));
                    }
                    // v1 leads want visibility as text, v2 deals as a number.
                    (Target::Lead, "visible_to") => match v {
                        Value::Number(n) => json!(n.to_string()),
                        other => other.clone(),
                    },
                    (Target::Deal, "visible_to") => match v {
                        Value::String(s) => s.parse::<u64>().map(|n| json!(n)).unwrap_or(json!(s)),
                        other => other.clone(),
                    },
                    _ => v.clone(),
                };
                create.insert(k.clone(), v);
            }
            for (k, v) in &update {
                if k == "custom_fields"
                    && let (Some(Value::Object(into)), Value::Object(add)) =
                        (create.get_mut("custom_fields"), v)
                {
                    for (ck, cv) in add {
                        into.insert(ck.clone(), cv.clone());
                    }
                    continue;
                }
                create.insert(k.clone(), v.clone());
            }
            if !create.contains_key("title") {
                let default_title = Placeholder::CampaignName
                    .value(user)
                    .or(user.source.as_deref())
                    .unwrap_or("Referral")
                    .to_owned();
                create.insert("title".into(), json!(default_title));
            }
            (Value::Object(create), Value::Object(update))
        }
    };

    Ok(Bodies {
        target,
        email,
        person_create: Value::Object(person_create),
        person_update: Value::Object(person_update),
        target_create,
        target_update,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use refsync_core::{CampaignRef, DuplicatePolicy, FieldMapping, Referrer};

    use super::*;

    const CODE_KEY: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f001234567";
    const REFERRER_KEY: &str = "0123456789abcdef0123456789abcdef01234567";

    fn user() -> ReferredUser {
        ReferredUser {
            first_name: "Ada".into(),
            last_name: Some("Lovelace".into()),
            email: "ada+test@example.com".into(),
            referral_code: "ADA-42".into(),
            campaign: CampaignRef {
                id: "42".into(),
                name: Some("Spring friends".into()),
            },
            referrer: Some(Referrer {
                email: Some("bob@example.com".into()),
                ..Referrer::default()
            }),
            ..ReferredUser::default()
        }
    }

    fn spec(object: ObjectKind, defaults: Value) -> PushSpec {
        PushSpec {
            object,
            fields: FieldMapping::from_pairs([
                ("first_name", "{First Name}"),
                ("email", "{Email}"),
                ("Referral Code", "{Referral Code}"),
                ("Referrer Email", "{Referrer Email}"),
            ])
            .unwrap(),
            duplicates: DuplicatePolicy::UpdateExisting,
            defaults: serde_json::from_value::<BTreeMap<String, Value>>(defaults).unwrap(),
        }
    }

    fn resolved() -> HashMap<(FieldEntity, String), Field> {
        let f = |key: &str, name: &str| Field {
            key: key.into(),
            name: name.into(),
            field_type: "varchar".into(),
            custom: true,
            options: vec![],
        };
        [
            (
                (FieldEntity::Deal, "Referral Code".to_owned()),
                f(CODE_KEY, "Referral Code"),
            ),
            (
                (FieldEntity::Deal, "Referrer Email".to_owned()),
                f(REFERRER_KEY, "Referrer Email"),
            ),
        ]
        .into()
    }

    #[test]
    fn a_lead_carries_custom_fields_at_the_root_and_defaults_the_title() {
        let b = bodies(
            &user(),
            &spec(ObjectKind::Lead, json!({"owner_id": 7, "visible_to": 3})),
            &resolved(),
        )
        .unwrap();
        assert_eq!(b.target, Target::Lead);
        assert_eq!(b.target_create["title"], "Spring friends");
        assert_eq!(b.target_create[CODE_KEY], "ADA-42");
        assert_eq!(b.target_create[REFERRER_KEY], "bob@example.com");
        assert_eq!(b.target_create["owner_id"], 7);
        assert_eq!(b.target_create["visible_to"], "3");
        assert_eq!(b.person_create["name"], "Ada Lovelace");
        assert_eq!(
            b.person_create["emails"][0]["value"],
            "ada+test@example.com"
        );
    }

    #[test]
    fn a_deal_nests_custom_fields_and_takes_pipeline_defaults() {
        let b = bodies(
            &user(),
            &spec(
                ObjectKind::Deal,
                json!({"pipeline_id": 2, "stage_id": 6, "visible_to": "3"}),
            ),
            &resolved(),
        )
        .unwrap();
        assert_eq!(b.target_create["custom_fields"][CODE_KEY], "ADA-42");
        assert_eq!(b.target_create["stage_id"], 6);
        assert_eq!(b.target_create["visible_to"], 3);
        assert!(b.target_create.get(CODE_KEY).is_none());
    }

    #[test]
    fn a_lead_refuses_pipeline_defaults_and_unknown_objects_are_named() {
        let e = bodies(
            &user(),
            &spec(ObjectKind::Lead, json!({"stage_id": 2})),
            &resolved(),
        )
        .unwrap_err();
        assert!(e.message().contains("stage_id"), "{e}");
        let e = bodies(&user(), &spec(ObjectKind::Order, json!({})), &resolved()).unwrap_err();
        assert!(e.message().contains("lead, a deal or a person"), "{e}");
    }

    #[test]
    fn missing_required_mapping_is_named() {
        let mut s = spec(ObjectKind::Lead, json!({}));
        s.fields.0.remove("Referral Code");
        let e = bodies(&user(), &s, &resolved()).unwrap_err();
        assert!(e.message().contains("{Referral Code}"), "{e}");
    }

    #[test]
    fn enum_fields_take_option_ids() {
        let f = Field {
            key: "k".into(),
            name: "Tier".into(),
            field_type: "enum".into(),
            custom: true,
            options: vec![(json!(17), "Gold".into())],
        };
        assert_eq!(field_value(&f, "gold").unwrap(), json!(17));
        assert!(field_value(&f, "Silver").is_err());
    }

    #[test]
    fn classification_of_names() {
        assert_eq!(slot("Email", Target::Lead), Slot::PersonStandard("email"));
        assert_eq!(slot("title", Target::Deal), Slot::Title);
        assert_eq!(
            slot("person.Referral Code", Target::Deal),
            Slot::Custom(FieldEntity::Person, "Referral Code")
        );
        assert_eq!(
            slot("x", Target::Person),
            Slot::Custom(FieldEntity::Person, "x")
        );
    }
}
