//! Record operations shared by the REST API and the UI-like actions: Salesforce errors, field
//! validation, create, update, external-id matching and lead conversion. Every saved record
//! queues the outbound messages defined on its object.

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::SalesforceSimOptions;
use super::model::{
    ACCOUNT_PREFIX, FieldDef, Kind, Record, SObject, State, end_of_quarter, normalize_id,
};
use super::outbound;

/// One Salesforce error: `errorCode` (`statusCode` in sObject Collections results), `message`
/// and, for field errors, `fields`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SfError {
    pub(super) code: String,
    pub(super) message: String,
    pub(super) fields: Option<Vec<String>>,
}

impl SfError {
    pub(super) fn new(code: &str, message: impl Into<String>) -> SfError {
        SfError {
            code: code.to_owned(),
            message: message.into(),
            fields: None,
        }
    }

    pub(super) fn with_fields(code: &str, message: impl Into<String>, fields: &[&str]) -> SfError {
        SfError {
            code: code.to_owned(),
            message: message.into(),
            fields: Some(fields.iter().map(|f| (*f).to_owned()).collect()),
        }
    }

    /// `{"message", "errorCode", "fields"?}`: an item of a REST error answer.
    pub(super) fn rest(&self) -> Value {
        let mut out = Map::new();
        out.insert("message".into(), json!(self.message));
        out.insert("errorCode".into(), json!(self.code));
        if let Some(fields) = &self.fields {
            out.insert("fields".into(), json!(fields));
        }
        Value::Object(out)
    }

    /// `{"statusCode", "message", "fields"}`: an error of an sObject Collections result.
    pub(super) fn collection(&self) -> Value {
        json!({
            "statusCode": self.code,
            "message": self.message,
            "fields": self.fields.clone().unwrap_or_default(),
        })
    }

    /// `errorCode: message` (UI-like actions).
    pub(super) fn text(errors: &[SfError]) -> String {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `CANNOT_UPDATE_CONVERTED_LEAD`: a converted lead cannot be edited.
pub(super) fn converted_lead() -> SfError {
    SfError::with_fields(
        "CANNOT_UPDATE_CONVERTED_LEAD",
        "cannot reference converted lead",
        &[],
    )
}

/// What a write is, for the checks that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `POST /sobjects/{Object}`, sObject Collections create, UI create.
    Create,
    /// `PATCH /sobjects/{Object}/{id}`, UI edit.
    Update,
    /// `PATCH /sobjects/{Object}/{field}/{value}`: the external id field comes from the URL.
    UpsertSingle,
    /// A record of an sObject Collections upsert (carries the external id field).
    UpsertCollection,
}

/// Validated field changes: canonical field name → value (`null` clears).
pub(super) type Changes = Vec<(String, Value)>;

/// The JSON token name of a value, as Jackson's messages name it.
fn token(value: &Value) -> &'static str {
    match value {
        Value::Null => "VALUE_NULL",
        Value::Bool(true) => "VALUE_TRUE",
        Value::Bool(false) => "VALUE_FALSE",
        Value::Number(n) if n.is_f64() => "VALUE_NUMBER_FLOAT",
        Value::Number(_) => "VALUE_NUMBER_INT",
        Value::String(_) => "VALUE_STRING",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}

fn parser_error(kind: Kind, value: &Value) -> SfError {
    let raw = match value {
        Value::String(s) => s.clone(),
        Value::Array(_) => "[".to_owned(),
        Value::Object(_) => "{".to_owned(),
        other => other.to_string(),
    };
    SfError::new(
        "JSON_PARSER_ERROR",
        format!(
            "Cannot deserialize instance of {} from {} value {raw} or request may be missing a required field",
            kind.json_type(),
            token(value)
        ),
    )
}

/// Whether `text` looks like an e-mail address Salesforce accepts: one `@`, a local part and
/// a dotted domain, no spaces.
pub(super) fn valid_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let ok_chars = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"<>()[]\\,;:\"@".contains(c))
    };
    ok_chars(local)
        && ok_chars(domain)
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
        && !local.starts_with('.')
        && !local.ends_with('.')
}

/// Converts one input value for `field`: the stored value (`null` clears) or the error.
fn convert(state: &State, field: &FieldDef, value: &Value) -> Result<Value, SfError> {
    let kind = field.kind;
    let name = field.name.as_str();
    if value.is_null() {
        return Ok(if kind == Kind::Boolean {
            json!(false)
        } else {
            Value::Null
        });
    }
    match kind {
        Kind::Boolean => match value {
            Value::Bool(b) => Ok(json!(b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(json!(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(json!(false)),
            other => Err(parser_error(kind, other)),
        },
        Kind::Currency | Kind::Percent | Kind::Integer => {
            let number = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) if s.trim().is_empty() => return Ok(Value::Null),
                Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
                _ => None,
            };
            number
                .map(|n| json!(n))
                .ok_or_else(|| parser_error(kind, value))
        }
        Kind::Date => match value {
            Value::String(s) if s.is_empty() => Ok(Value::Null),
            Value::String(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .filter(|_| s.len() == 10)
                .map(|d| json!(d.format("%Y-%m-%d").to_string()))
                .ok_or_else(|| parser_error(kind, value)),
            other => Err(parser_error(kind, other)),
        },
        Kind::DateTime => match value {
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| json!(super::model::rest_datetime(&t.with_timezone(&Utc))))
                .map_err(|_| parser_error(kind, value)),
            other => Err(parser_error(kind, other)),
        },
        Kind::Id | Kind::Reference(_) => {
            let Value::String(text) = value else {
                return Err(parser_error(kind, value));
            };
            if text.is_empty() {
                return Ok(Value::Null);
            }
            let Some(id) = normalize_id(text) else {
                return Err(SfError::with_fields(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {text}", field.label),
                    &[name],
                ));
            };
            match kind {
                Kind::Reference(target) if !state.exists(target, &id) => Err(SfError::with_fields(
                    "INVALID_CROSS_REFERENCE_KEY",
                    "invalid cross reference id",
                    &[name],
                )),
                _ => Ok(json!(id)),
            }
        }
        Kind::Text(_)
        | Kind::TextArea(_)
        | Kind::Email
        | Kind::Phone
        | Kind::Picklist
        | Kind::Stage => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => return Err(parser_error(kind, other)),
            };
            // Salesforce stores blank text as null.
            if text.is_empty() {
                return Ok(Value::Null);
            }
            if let Some(max) = kind.max_len()
                && text.chars().count() > max
            {
                return Err(SfError::with_fields(
                    "STRING_TOO_LONG",
                    format!(
                        "{}: data value too large: {text} (max length={max})",
                        field.label
                    ),
                    &[name],
                ));
            }
            if kind == Kind::Email && !valid_email(&text) {
                return Err(SfError::with_fields(
                    "INVALID_EMAIL_ADDRESS",
                    format!("{}: invalid email address: {text}", field.label),
                    &[name],
                ));
            }
            if kind == Kind::Stage && state.stage(&text).is_none() {
                return Err(SfError::with_fields(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!(
                        "{}: bad value for restricted picklist field: {text}",
                        field.label
                    ),
                    &[name],
                ));
            }
            Ok(json!(text))
        }
    }
}

/// Validates the fields of a write (`attributes` is ignored) against `sobject` and, for
/// updates, the `existing` record. Errors come in Salesforce's order: deserialization
/// (`INVALID_FIELD`, `JSON_PARSER_ERROR`) stops at the first; then read-only fields together
/// (`INVALID_FIELD_FOR_INSERT_UPDATE`); then every value error and the missing required
/// fields together; then the unique external id (`DUPLICATE_VALUE`).
pub(super) fn validate(
    state: &State,
    opts: &SalesforceSimOptions,
    sobject: SObject,
    input: &Map<String, Value>,
    existing: Option<&Record>,
    mode: Mode,
) -> Result<Changes, Vec<SfError>> {
    let mut resolved: Vec<(&FieldDef, &Value)> = Vec::new();
    for (key, value) in input {
        if key == "attributes" {
            continue;
        }
        let Some(field) = state.field(sobject, key) else {
            return Err(vec![SfError::new(
                "INVALID_FIELD",
                format!(
                    "No such column '{key}' on sobject of type {}",
                    sobject.name()
                ),
            )]);
        };
        if field.name == "Id" {
            return Err(vec![match mode {
                Mode::Create => SfError::with_fields(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "cannot specify Id in an insert call",
                    &["Id"],
                ),
                _ => SfError::new(
                    "INVALID_FIELD",
                    "The Id field should not be specified in the sobject data.",
                ),
            }]);
        }
        if mode == Mode::UpsertSingle && field.name == opts.external_id_field {
            return Err(vec![SfError::new(
                "INVALID_FIELD",
                format!(
                    "The {} field should not be specified in the sobject data.",
                    field.name
                ),
            )]);
        }
        if resolved.iter().any(|(f, _)| f.name == field.name) {
            return Err(vec![SfError::new(
                "JSON_PARSER_ERROR",
                format!("Duplicate field {} at [line:1, column:1]", field.name),
            )]);
        }
        resolved.push((field, value));
    }
    // Wrong JSON types fail deserialization before anything else.
    for (field, value) in &resolved {
        let type_error = match field.kind {
            Kind::Boolean => !matches!(value, Value::Bool(_) | Value::Null | Value::String(_)),
            _ => matches!(value, Value::Array(_) | Value::Object(_)),
        };
        if type_error {
            return Err(vec![parser_error(field.kind, value)]);
        }
    }
    let read_only: Vec<&str> = resolved
        .iter()
        .filter(|(f, _)| !f.writable)
        .map(|(f, _)| f.name.as_str())
        .collect();
    if !read_only.is_empty() {
        return Err(vec![SfError::with_fields(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            format!(
                "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                read_only.join(", ")
            ),
            &read_only,
        )]);
    }
    let mut errors = Vec::new();
    let mut changes: Changes = Vec::new();
    for field in state.fields(sobject) {
        let Some((_, value)) = resolved.iter().find(|(f, _)| f.name == field.name) else {
            continue;
        };
        match convert(state, field, value) {
            Ok(v) => changes.push((field.name.clone(), v)),
            Err(e) => errors.push(e),
        }
    }
    let missing: Vec<&str> = state
        .fields(sobject)
        .iter()
        .filter(|f| f.required)
        .filter(|f| {
            let changed = changes.iter().find(|(n, _)| *n == f.name).map(|(_, v)| v);
            let value = match (changed, existing) {
                (Some(v), _) => Some(v),
                (None, Some(record)) => record.values.get(&f.name),
                (None, None) => None,
            };
            value.is_none_or(Value::is_null)
        })
        .map(|f| f.name.as_str())
        .collect();
    // A field already reported as invalid is not also missing.
    let missing: Vec<&str> = missing
        .into_iter()
        .filter(|m| {
            !errors
                .iter()
                .any(|e: &SfError| e.fields.as_ref().is_some_and(|f| f.iter().any(|x| x == m)))
        })
        .collect();
    if !missing.is_empty() {
        errors.push(SfError::with_fields(
            "REQUIRED_FIELD_MISSING",
            format!("Required fields are missing: [{}]", missing.join(", ")),
            &missing,
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if let Some(duplicate) = duplicate_external_id(state, opts, sobject, &changes, existing) {
        return Err(vec![duplicate]);
    }
    Ok(changes)
}

/// `DUPLICATE_VALUE` when the external id field is unique and another record of the object
/// already holds the value (case-insensitive, converted leads included).
fn duplicate_external_id(
    state: &State,
    opts: &SalesforceSimOptions,
    sobject: SObject,
    changes: &Changes,
    existing: Option<&Record>,
) -> Option<SfError> {
    if !opts.external_id_unique || !sobject.has_external_id() {
        return None;
    }
    let field = &opts.external_id_field;
    let value = changes
        .iter()
        .find(|(n, _)| n == field)
        .and_then(|(_, v)| v.as_str())?;
    let other = state.records(sobject).iter().find(|r| {
        existing.is_none_or(|e| e.id != r.id) && r.text(field).eq_ignore_ascii_case(value)
    })?;
    Some(SfError::with_fields(
        "DUPLICATE_VALUE",
        format!(
            "duplicate value found: {field} duplicates value on record with id: {}",
            other.id
        ),
        &[],
    ))
}

/// The ids of the records of `sobject` whose external id field equals `value`
/// (case-insensitive, as for a case-insensitive unique field; converted leads included).
pub(super) fn matches_external_id(
    state: &State,
    opts: &SalesforceSimOptions,
    sobject: SObject,
    value: &str,
) -> Vec<String> {
    state
        .records(sobject)
        .iter()
        .filter(|r| r.text(&opts.external_id_field).eq_ignore_ascii_case(value))
        .map(|r| r.id.clone())
        .collect()
}

/// The default probability of `stage` (0 when unknown).
fn stage_probability(state: &State, stage: &str) -> f64 {
    state.stage(stage).map_or(0.0, |s| s.probability)
}

/// Creates a record from validated `changes` (defaults: a lead's `Status`, an opportunity's
/// `Probability` from its stage) and queues its outbound messages. Returns the id.
pub(super) fn create(state: &mut State, sobject: SObject, changes: Changes) -> String {
    let id = state.new_id(sobject.key_prefix());
    let now = state.now();
    let mut record = Record {
        id: id.clone(),
        sobject,
        values: Default::default(),
        created: now,
        modified: now,
    };
    for (name, value) in changes {
        if !value.is_null() {
            record.values.insert(name, value);
        }
    }
    match sobject {
        SObject::Lead => {
            record
                .values
                .entry("Status".to_owned())
                .or_insert_with(|| json!("Open - Not Contacted"));
            record.values.insert("IsConverted".to_owned(), json!(false));
        }
        SObject::Opportunity => {
            if !record.values.contains_key("Probability") {
                let p = stage_probability(state, record.text("StageName"));
                record.values.insert("Probability".to_owned(), json!(p));
            }
        }
        SObject::Contact => {}
    }
    state.records_mut(sobject).push(record);
    outbound::record_saved(state, sobject, &id);
    id
}

/// Applies validated `changes` to record `id` (a new stage resets `Probability` to the stage's
/// default unless it is given) and queues its outbound messages.
pub(super) fn update(state: &mut State, sobject: SObject, id: &str, changes: Changes) {
    let now = state.now();
    let new_stage = changes
        .iter()
        .find(|(n, _)| n == "StageName")
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned);
    let probability_given = changes.iter().any(|(n, _)| n == "Probability");
    let stage_default = new_stage.as_deref().map(|s| stage_probability(state, s));
    let Some(record) = state.record_mut(sobject, id) else {
        return;
    };
    let stage_changed = new_stage
        .as_deref()
        .is_some_and(|s| record.text("StageName") != s);
    for (name, value) in changes {
        if value.is_null() {
            record.values.remove(&name);
        } else {
            record.values.insert(name, value);
        }
    }
    if stage_changed
        && !probability_given
        && let Some(p) = stage_default
    {
        record.values.insert("Probability".to_owned(), json!(p));
    }
    record.modified = now;
    let id = record.id.clone();
    outbound::record_saved(state, sobject, &id);
}

/// Converts lead `lead_id` as `convertLead` does: an account (an id and a name only), a contact
/// from the lead's fields and, when asked, an opportunity `(Name, StageName)` closing at the end
/// of the quarter; the external id field follows the lead field mapping; the lead becomes
/// converted. Outbound messages are queued in the order Salesforce commits (contact,
/// opportunity, lead — the lead's only with "Require Validation for Converted Leads").
/// Returns `(contact id, opportunity id)`.
pub(super) fn convert_lead(
    state: &mut State,
    opts: &SalesforceSimOptions,
    lead_id: &str,
    opportunity: Option<(&str, &str)>,
) -> Result<(String, Option<String>), String> {
    let lead = state
        .record(SObject::Lead, lead_id)
        .cloned()
        .ok_or_else(|| format!("lead {lead_id} does not exist"))?;
    if lead.is_converted() {
        return Err(format!("lead {} is already converted", lead.id));
    }
    let ext = opts.external_id_field.as_str();
    let copy = |names: &[&str]| -> Map<String, Value> {
        names
            .iter()
            .filter_map(|n| lead.values.get(*n).map(|v| ((*n).to_owned(), v.clone())))
            .collect()
    };
    let account_id = state.new_id(ACCOUNT_PREFIX);
    let account_name = match lead.text("Company") {
        "" => lead.text("LastName").to_owned(),
        company => company.to_owned(),
    };
    let mut contact_input = copy(&[
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "Title",
        "LeadSource",
        "Description",
        ext,
    ]);
    contact_input.insert("AccountId".into(), json!(account_id));
    let mut opportunity_input = opportunity.map(|(name, stage)| {
        let mut input = copy(&["LeadSource", ext]);
        let close = end_of_quarter(state.now().date_naive());
        input.insert("Name".into(), json!(name));
        input.insert("StageName".into(), json!(stage));
        input.insert(
            "CloseDate".into(),
            json!(close.format("%Y-%m-%d").to_string()),
        );
        input.insert("AccountId".into(), json!(account_id));
        input
    });
    // Validate everything before writing anything (the account must exist for the lookups).
    state.accounts.push((account_id.clone(), account_name));
    let contact_changes = validate(
        state,
        opts,
        SObject::Contact,
        &contact_input,
        None,
        Mode::Create,
    );
    let opportunity_changes = opportunity_input
        .take()
        .map(|input| {
            validate(
                state,
                opts,
                SObject::Opportunity,
                &input,
                None,
                Mode::Create,
            )
        })
        .transpose();
    let (contact_changes, opportunity_changes) = match (contact_changes, opportunity_changes) {
        (Ok(c), Ok(o)) => (c, o),
        (Err(e), _) | (_, Err(e)) => {
            state.accounts.pop();
            return Err(SfError::text(&e));
        }
    };
    let contact_id = create(state, SObject::Contact, contact_changes);
    let opportunity_id = opportunity_changes.map(|c| create(state, SObject::Opportunity, c));
    let now = state.now();
    let today = now.date_naive().format("%Y-%m-%d").to_string();
    if let Some(record) = state.record_mut(SObject::Lead, &lead.id) {
        record.values.insert("IsConverted".into(), json!(true));
        record
            .values
            .insert("Status".into(), json!("Closed - Converted"));
        record.values.insert("ConvertedDate".into(), json!(today));
        record
            .values
            .insert("ConvertedAccountId".into(), json!(account_id));
        record
            .values
            .insert("ConvertedContactId".into(), json!(contact_id));
        match &opportunity_id {
            Some(o) => {
                record
                    .values
                    .insert("ConvertedOpportunityId".into(), json!(o));
            }
            None => {
                record.values.remove("ConvertedOpportunityId");
            }
        }
        record.modified = now;
    }
    if opts.require_validation_for_converted_leads {
        outbound::record_saved(state, SObject::Lead, &lead.id);
    }
    Ok((contact_id, opportunity_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses() {
        for good in ["ann@example.com", "a.b+c@sub.example.co", "X@Y.ORG"] {
            assert!(valid_email(good), "{good}");
        }
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a n@example.com",
            "ann@@example.com",
            "ann@example..com",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn errors_render_in_both_shapes() {
        let e = SfError::with_fields(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [Company]",
            &["Company"],
        );
        assert_eq!(
            e.rest(),
            json!({"message": "Required fields are missing: [Company]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Company"]})
        );
        assert_eq!(
            e.collection(),
            json!({"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Company]", "fields": ["Company"]})
        );
        let e = SfError::new("NOT_FOUND", "The requested resource does not exist");
        assert_eq!(
            e.rest(),
            json!({"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"})
        );
        assert_eq!(e.collection()["fields"], json!([]));
    }
}
