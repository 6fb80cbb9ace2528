//! Operations shared by the API handlers and the UI-like actions: field validation as Zoho does
//! it, duplicate checks, creating, updating and deleting records, converting leads; each records
//! the change its notifications are built from.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde_json::{Map, Value, json};

use super::ZohoSimOptions;
use super::model::{Change, Conversion, Kind, Module, Op, Record, State, USER_ID};

/// An error answer: Zoho's `{"code", "details", "message", "status": "error"}` with an HTTP
/// status.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) body: Value,
}

impl ApiError {
    pub(super) fn new(status: u16, code: &str, message: &str, details: Value) -> ApiError {
        ApiError {
            status,
            body: error_item(code, message, details),
        }
    }

    /// `400 INVALID_DATA "invalid data"`.
    pub(super) fn invalid_data(details: Value) -> ApiError {
        ApiError::new(400, "INVALID_DATA", "invalid data", details)
    }

    /// `400 REQUIRED_PARAM_MISSING` for query parameter `param`.
    pub(super) fn param_missing(param: &str) -> ApiError {
        ApiError::new(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": param, "param": param}),
        )
    }

    /// `400 INVALID_MODULE`.
    pub(super) fn invalid_module(name: &str) -> ApiError {
        ApiError::new(
            400,
            "INVALID_MODULE",
            "The module name given seems to be invalid",
            json!({"api_name": name}),
        )
    }

    /// `404 INVALID_URL_PATTERN`.
    pub(super) fn invalid_url() -> ApiError {
        ApiError::new(
            404,
            "INVALID_URL_PATTERN",
            "Please check if the URL trying to access is a correct one",
            json!({}),
        )
    }

    /// `400 INVALID_REQUEST_METHOD`.
    pub(super) fn invalid_method() -> ApiError {
        ApiError::new(
            400,
            "INVALID_REQUEST_METHOD",
            "The http request method type is not a valid one",
            json!({}),
        )
    }

    /// `400 INVALID_DATA` for a body that is not the JSON object expected.
    pub(super) fn bad_body() -> ApiError {
        ApiError::invalid_data(json!({"expected_data_type": "jsonobject"}))
    }
}

/// One error object (top-level body or an item of `data` / `watch`).
pub(super) fn error_item(code: &str, message: &str, details: Value) -> Value {
    let mut item = json!({"code": code, "message": message, "status": "error"});
    item["details"] = details;
    item
}

fn invalid(api_name: &str, json_path: &str) -> Value {
    error_item(
        "INVALID_DATA",
        "invalid data",
        json!({"api_name": api_name, "json_path": json_path}),
    )
}

fn invalid_type(api_name: &str, json_path: &str, expected: &str) -> Value {
    error_item(
        "INVALID_DATA",
        "invalid data",
        json!({"api_name": api_name, "json_path": json_path, "expected_data_type": expected}),
    )
}

pub(super) fn mandatory(api_name: &str, json_path: &str) -> Value {
    error_item(
        "MANDATORY_NOT_FOUND",
        "required field not found",
        json!({"api_name": api_name, "json_path": json_path}),
    )
}

/// `INVALID_DATA "the id given seems to be invalid"` for record `id`.
pub(super) fn invalid_id(id: &str) -> Value {
    error_item(
        "INVALID_DATA",
        "the id given seems to be invalid",
        json!({"id": id}),
    )
}

/// What to write: field → `Some(value)` to set, `None` to clear.
pub(super) type Changes = BTreeMap<String, Option<Value>>;

/// A plausible e-mail address: text on both sides of one `@`, no spaces.
pub(super) fn valid_email(value: &str) -> bool {
    let value = value.trim();
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !value.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// An id given as a string or a number.
pub(super) fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Validates the fields of one input record of `module` (`existing` for updates) as Zoho
/// does: mandatory fields, unknown API names, value types, e-mail addresses, lookups, the
/// deal's stage against its pipeline. `path` is the record's JSON path (`$.data[0]`). Returns
/// the values to write, or the per-record error object.
pub(super) fn validate(
    state: &State,
    module: Module,
    input: &Map<String, Value>,
    path: &str,
    existing: Option<&Record>,
) -> Result<Changes, Value> {
    let mut changes = Changes::new();
    for (key, raw) in input {
        let json_path = format!("{path}.{key}");
        if key == "id" || key.starts_with('$') {
            continue;
        }
        match key.as_str() {
            "Layout" => {
                let ok = raw.is_null()
                    || raw.get("id").and_then(id_of).as_deref() == Some(module.layout_id());
                if !ok {
                    return Err(invalid(key, &json_path));
                }
                continue;
            }
            "Owner" => {
                let ok = raw.is_null() || raw.get("id").and_then(id_of).as_deref() == Some(USER_ID);
                if !ok {
                    return Err(invalid(key, &json_path));
                }
                continue;
            }
            _ => {}
        }
        let Some(field) = state.field(module, key) else {
            return Err(invalid(key, &json_path));
        };
        if field.read_only {
            // System fields (`Created_Time`, ...) are ignored on writes.
            continue;
        }
        let value = match raw {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() && !matches!(field.kind, Kind::Lookup(_)) => {
                None
            }
            _ => Some(convert(state, field.kind, key, &json_path, raw)?),
        };
        if value.is_some() {
            let too_long = match &value {
                Some(Value::String(s)) => s.chars().count() > field.length as usize,
                _ => false,
            };
            if too_long {
                return Err(error_item(
                    "INVALID_DATA",
                    "invalid data",
                    json!({"api_name": key, "json_path": json_path, "maximum_length": field.length.to_string()}),
                ));
            }
        }
        changes.insert(key.clone(), value);
    }
    for field in state.fields(module).iter().filter(|f| f.system_mandatory) {
        let present = match changes.get(&field.api_name) {
            Some(Some(_)) => true,
            Some(None) => false,
            None => existing.is_some_and(|r| r.get(&field.api_name).is_some()),
        };
        if !present {
            return Err(mandatory(
                &field.api_name,
                &format!("{path}.{}", field.api_name),
            ));
        }
    }
    if module == Module::Deals {
        deal_pipeline(state, &mut changes, path, existing)?;
    }
    Ok(changes)
}

/// Checks a non-null input value of a field of `kind`; returns the value to store.
fn convert(
    state: &State,
    kind: Kind,
    key: &str,
    json_path: &str,
    raw: &Value,
) -> Result<Value, Value> {
    let wrong_type = || invalid_type(key, json_path, kind.expected());
    match kind {
        Kind::Text | Kind::TextArea | Kind::Phone | Kind::Picklist | Kind::Stage => match raw {
            Value::String(s) => Ok(json!(s)),
            _ => Err(wrong_type()),
        },
        Kind::Email => match raw {
            Value::String(s) if valid_email(s) => Ok(json!(s.trim())),
            Value::String(_) => Err(invalid(key, json_path)),
            _ => Err(wrong_type()),
        },
        Kind::Currency => match raw {
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(raw.clone()),
            _ => Err(wrong_type()),
        },
        Kind::Integer => match raw {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(raw.clone()),
            _ => Err(wrong_type()),
        },
        Kind::Date => match raw {
            Value::String(s) if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => Ok(json!(s)),
            _ => Err(wrong_type()),
        },
        Kind::DateTime | Kind::Owner => Err(wrong_type()),
        Kind::Lookup(target) => {
            let Some(id) = raw.get("id").and_then(id_of) else {
                return Err(wrong_type());
            };
            match state.record(target, &id) {
                Some(record) => Ok(json!({"name": record.display_name(), "id": record.id_text()})),
                None => Err(error_item(
                    "INVALID_DATA",
                    "invalid data",
                    json!({"api_name": key, "json_path": format!("{json_path}.id"), "id": id}),
                )),
            }
        }
        Kind::Pipeline => {
            let name = match raw {
                Value::String(s) => Some(s.clone()),
                Value::Object(map) => map
                    .get("id")
                    .and_then(id_of)
                    .or_else(|| map.get("name").and_then(Value::as_str).map(str::to_owned)),
                _ => None,
            };
            match name.as_deref().and_then(|n| state.pipeline(n)) {
                Some(p) => Ok(p.reference()),
                None => Err(invalid(key, json_path)),
            }
        }
    }
}

/// A deal's pipeline and stage: the pipeline given, else the current one, else the default
/// pipeline (written on creation); the stage must be an actual value of that pipeline
/// (`MAPPING_MISMATCH` otherwise).
fn deal_pipeline(
    state: &State,
    changes: &mut Changes,
    path: &str,
    existing: Option<&Record>,
) -> Result<(), Value> {
    let pipeline = match changes.get("Pipeline") {
        Some(Some(p)) => p
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| state.pipeline(id)),
        _ => None,
    }
    .or_else(|| existing.map(|r| state.pipeline_of(r)))
    .unwrap_or_else(|| state.default_pipeline());
    if existing.is_none() || matches!(changes.get("Pipeline"), Some(None)) {
        changes.insert("Pipeline".to_owned(), Some(pipeline.reference()));
    }
    let stage = match changes.get("Stage") {
        Some(Some(Value::String(s))) => Some(s.clone()),
        Some(_) => None,
        None => existing.map(|r| r.text("Stage").to_owned()),
    };
    if let Some(stage) = stage {
        if pipeline.stage(&stage).is_none() {
            return Err(error_item(
                "MAPPING_MISMATCH",
                "Pipeline doesn't contain the Stage",
                json!({"api_name": "Stage", "json_path": format!("{path}.Stage"), "mapped_field": "Pipeline"}),
            ));
        }
    }
    Ok(())
}

/// Whether two stored values are the same for duplicate checks (text case-insensitively).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
        _ => a == b,
    }
}

/// The record of `module` (other than `exclude`; converted leads left out) whose `field`
/// equals `value`.
pub(super) fn find_duplicate(
    state: &State,
    module: Module,
    field: &str,
    value: &Value,
    exclude: Option<u64>,
) -> Option<u64> {
    state
        .records(module)
        .values()
        .filter(|r| Some(r.id) != exclude && !r.is_converted())
        .find(|r| r.get(field).is_some_and(|v| same_value(v, value)))
        .map(|r| r.id)
}

/// `DUPLICATE_DATA` for `field` matching record `id`.
pub(super) fn duplicate_error(module: Module, field: &str, json_path: &str, id: u64) -> Value {
    error_item(
        "DUPLICATE_DATA",
        "duplicate data",
        json!({
            "api_name": field,
            "json_path": json_path,
            "id": id.to_string(),
            "more_records": false,
            "duplicate_record": {
                "id": id.to_string(),
                "module": {"api_name": module.api_name(), "id": module.id()},
                "Owner": {"name": super::model::USER_NAME, "id": USER_ID},
            },
        }),
    )
}

/// Fields whose values must stay unique: the module's unique fields and `extra` (an insert's
/// `duplicate_check_fields`). Returns the first conflict as a `DUPLICATE_DATA` error.
pub(super) fn check_unique(
    state: &State,
    module: Module,
    changes: &Changes,
    extra: &[String],
    path: &str,
    exclude: Option<u64>,
) -> Result<(), Value> {
    let mut names: Vec<String> = extra.to_vec();
    for field in state.fields(module).iter().filter(|f| f.unique) {
        if !names.contains(&field.api_name) {
            names.push(field.api_name.clone());
        }
    }
    for name in names {
        let Some(Some(value)) = changes.get(&name) else {
            continue;
        };
        if let Some(other) = find_duplicate(state, module, &name, value, exclude) {
            return Err(duplicate_error(
                module,
                &name,
                &format!("{path}.{name}"),
                other,
            ));
        }
    }
    Ok(())
}

/// Creates a record from validated `changes`; records an insert change. Returns its id.
pub(super) fn create(state: &mut State, module: Module, changes: Changes) -> u64 {
    let now = state.now();
    let id = state.new_id();
    let values = changes
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    state.records_mut(module).insert(
        id,
        Record {
            id,
            module,
            values,
            created: now,
            modified: now,
            conversion: None,
        },
    );
    state.changes.push(Change {
        module,
        op: Op::Insert,
        id: id.to_string(),
        fields: Vec::new(),
        values: Map::new(),
    });
    id
}

/// Applies validated `changes` to record `id`: only values that differ are written; the
/// modification time moves and an update change is recorded when something changed. Returns
/// the changed field names.
pub(super) fn update(state: &mut State, module: Module, id: u64, changes: Changes) -> Vec<String> {
    let now = state.now();
    let Some(record) = state.records_mut(module).get_mut(&id) else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    let mut values = Map::new();
    for (name, value) in changes {
        if record.values.get(&name) == value.as_ref() {
            continue;
        }
        match &value {
            Some(v) => {
                record.values.insert(name.clone(), v.clone());
            }
            None => {
                record.values.remove(&name);
            }
        }
        values.insert(name.clone(), value.unwrap_or(Value::Null));
        changed.push(name);
    }
    if changed.is_empty() {
        return changed;
    }
    record.modified = now;
    state.changes.push(Change {
        module,
        op: Op::Update,
        id: id.to_string(),
        fields: changed.clone(),
        values,
    });
    changed
}

/// Deletes record `id`; records a delete change. Returns whether it existed.
pub(super) fn delete(state: &mut State, module: Module, id: u64) -> bool {
    if state.records_mut(module).remove(&id).is_none() {
        return false;
    }
    state.changes.push(Change {
        module,
        op: Op::Delete,
        id: id.to_string(),
        fields: Vec::new(),
        values: Map::new(),
    });
    true
}

/// The `details` of a successful write: ids, times and users.
pub(super) fn success_details(record: &Record) -> Value {
    json!({
        "Modified_Time": record.field_json("Modified_Time"),
        "Modified_By": super::model::user_ref(),
        "Created_Time": record.field_json("Created_Time"),
        "id": record.id_text(),
        "Created_By": super::model::user_ref(),
    })
}

/// What a lead conversion creates a deal from (validated).
#[derive(Debug, Clone)]
pub(super) struct DealSpec {
    pub(super) changes: Changes,
}

/// Validates the `Deals` object of a conversion (`path` = `$.data[0].Deals`): `Deal_Name`,
/// `Closing_Date`, `Pipeline` and `Stage` are mandatory (conversion docs), the stage must be in
/// the pipeline (`MAPPING_MISMATCH`), other keys are checked like a deal insert.
pub(super) fn validate_conversion_deal(
    state: &State,
    input: &Map<String, Value>,
    path: &str,
) -> Result<DealSpec, Value> {
    for name in ["Deal_Name", "Closing_Date", "Pipeline", "Stage"] {
        let present = match input.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
        };
        if !present {
            return Err(mandatory(name, &format!("{path}.{name}")));
        }
    }
    let mut input = input.clone();
    // Conversion-only keys.
    input.remove("Contact_Role");
    let changes = validate(state, Module::Deals, &input, path, None).map_err(|mut e| {
        if e["code"] == "MAPPING_MISMATCH" {
            e["message"] = json!("Pipeline doesn`t contain the Stage");
        }
        e
    })?;
    Ok(DealSpec { changes })
}

/// Converts lead `lead_id`: uses contact `existing_contact` or creates a contact from the lead
/// (name, e-mail, phones, lead source, description and — with the conversion mapping — the
/// referral code), creates the deal when `deal` is given (with `Contact_Name`, the lead source
/// and, mapped, the referral code), and marks the lead converted. Records the changes: Contacts
/// insert, Deals insert, Leads update (`$converted`). Returns `(contact id, deal id)`.
pub(super) fn convert_lead(
    state: &mut State,
    opts: &ZohoSimOptions,
    lead_id: u64,
    existing_contact: Option<u64>,
    deal: Option<DealSpec>,
) -> Result<(String, Option<String>), Value> {
    let Some(lead) = state.records(Module::Leads).get(&lead_id).cloned() else {
        return Err(invalid_id(&lead_id.to_string()));
    };
    let referral = &opts.referral_code_field;
    let mapped_referral = if opts.conversion_mapping {
        lead.get(referral).cloned()
    } else {
        None
    };
    let mut deal_changes = deal.map(|d| d.changes);
    if let Some(changes) = deal_changes.as_mut() {
        if let Some(code) = &mapped_referral {
            changes
                .entry(referral.clone())
                .or_insert(Some(code.clone()));
        }
        if let Some(source) = lead.get("Lead_Source") {
            changes
                .entry("Lead_Source".to_owned())
                .or_insert(Some(source.clone()));
        }
        check_unique(state, Module::Deals, changes, &[], "$.data[0].Deals", None)?;
    }
    let contact_changes = if existing_contact.is_none() {
        let mut changes = Changes::new();
        for name in [
            "First_Name",
            "Last_Name",
            "Email",
            "Phone",
            "Mobile",
            "Lead_Source",
            "Description",
        ] {
            if let Some(v) = lead.get(name) {
                changes.insert(name.to_owned(), Some(v.clone()));
            }
        }
        if let Some(code) = &mapped_referral {
            changes.insert(referral.clone(), Some(code.clone()));
        }
        check_unique(
            state,
            Module::Contacts,
            &changes,
            &[],
            "$.data[0].Contacts",
            None,
        )?;
        Some(changes)
    } else {
        None
    };

    let contact_id = match (existing_contact, contact_changes) {
        (Some(id), _) => id,
        (None, changes) => create(state, Module::Contacts, changes.unwrap_or_default()),
    };
    let contact = state.records(Module::Contacts)[&contact_id].clone();
    let deal_id = deal_changes.map(|mut changes| {
        changes.insert(
            "Contact_Name".to_owned(),
            Some(json!({"name": contact.display_name(), "id": contact.id_text()})),
        );
        create(state, Module::Deals, changes)
    });
    let now = state.now();
    if let Some(lead) = state.records_mut(Module::Leads).get_mut(&lead_id) {
        lead.conversion = Some(Conversion {
            contact: contact_id.to_string(),
            deal: deal_id.map(|d| d.to_string()),
            time: now,
        });
        lead.modified = now;
    }
    let mut values = Map::new();
    values.insert("$converted".to_owned(), json!(true));
    state.changes.push(Change {
        module: Module::Leads,
        op: Op::Update,
        id: lead_id.to_string(),
        fields: vec!["$converted".to_owned()],
        values,
    });
    Ok((contact_id.to_string(), deal_id.map(|d| d.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(valid_email("a@b.co"));
        assert!(valid_email(" Ann@Example.com "));
        assert!(!valid_email("ann"));
        assert!(!valid_email("@b.co"));
        assert!(!valid_email("a@"));
        assert!(!valid_email("a b@c.d"));
    }

    #[test]
    fn duplicate_values_compare_text_case_insensitively() {
        assert!(same_value(&json!("ANN@x.io"), &json!("ann@x.io ")));
        assert!(!same_value(&json!("1"), &json!(1)));
        assert_eq!(id_of(&json!(12)), Some("12".to_owned()));
        assert_eq!(id_of(&json!(" ")), None);
    }
}
