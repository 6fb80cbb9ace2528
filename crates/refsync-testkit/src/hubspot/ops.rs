//! Operations shared by the API handlers and the UI-like actions: property validation as
//! HubSpot does it, creating and updating records, associating them; each records the webhook
//! events of the change.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::HubSpotSimOptions;
use super::events::{self, Source};
use super::model::{HistoryEntry, ObjectType, Record, State, iso};

/// An error answer: HubSpot's `{"status":"error","message","correlationId","category",...}`
/// (the correlation id is added when the answer is built).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) category: &'static str,
    pub(super) message: String,
    /// `context`: names to arrays of strings.
    pub(super) context: Option<Value>,
    /// `errors`: `ErrorDetail` objects.
    pub(super) errors: Vec<Value>,
}

impl ApiError {
    pub(super) fn new(status: u16, category: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            category,
            message: message.into(),
            context: None,
            errors: Vec::new(),
        }
    }

    /// `400 VALIDATION_ERROR`.
    pub(super) fn validation(message: impl Into<String>) -> Self {
        ApiError::new(400, "VALIDATION_ERROR", message)
    }

    /// `404 OBJECT_NOT_FOUND`.
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(404, "OBJECT_NOT_FOUND", message)
    }

    /// `409 CONFLICT`.
    pub(super) fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(409, "CONFLICT", message)
    }

    #[must_use]
    pub(super) fn with_context(mut self, key: &str, values: &[String]) -> Self {
        let mut context = self.context.take().unwrap_or_else(|| json!({}));
        context[key] = json!(values);
        self.context = Some(context);
        self
    }

    /// The JSON body with `correlation_id`.
    pub(super) fn body(&self, correlation_id: &str) -> Value {
        let mut body = json!({
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id,
            "category": self.category,
        });
        if let Some(context) = &self.context {
            body["context"] = context.clone();
        }
        if !self.errors.is_empty() {
            body["errors"] = Value::Array(self.errors.clone());
        }
        body
    }
}

/// One invalid property value (an item of "Property values were not valid: [...]").
#[derive(Debug, Clone)]
struct PropError {
    name: String,
    message: String,
    error: &'static str,
}

/// `400 VALIDATION_ERROR` "Property values were not valid: [...]" as HubSpot words it: the
/// message embeds a JSON array of `{isValid, message, error, name, localizedErrorMessage,
/// portalId}`, `errors` lists `{message, code, context: {propertyName: [...]}}`.
fn property_errors(errors: &[PropError], portal_id: u64) -> ApiError {
    let items: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{{\"isValid\":false,\"message\":{m},\"error\":{code},\"name\":{n},\"localizedErrorMessage\":{m},\"portalId\":{portal_id}}}",
                m = json!(e.message),
                code = json!(e.error),
                n = json!(e.name),
            )
        })
        .collect();
    let mut error = ApiError::validation(format!(
        "Property values were not valid: [{}]",
        items.join(",")
    ));
    error.errors = errors
        .iter()
        .map(|e| json!({"message": e.message, "code": e.error, "context": {"propertyName": [e.name]}}))
        .collect();
    error
}

/// The `properties` of an input as `(name, value)` strings: numbers and booleans are written
/// as text, `null` clears (""); a missing `properties` is empty.
pub(super) fn input_properties(value: Option<&Value>) -> Result<Vec<(String, String)>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    _ => {
                        return Err(ApiError::validation(format!(
                            "Invalid input JSON on property \"{name}\": property values must be strings"
                        )));
                    }
                };
                Ok((name.clone(), text))
            })
            .collect(),
        Some(_) => Err(ApiError::validation(
            "Invalid input JSON: `properties` must be an object of property names to values",
        )),
    }
}

/// A plausible e-mail address: one `@` with text on both sides, no spaces.
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

fn options_list(values: impl Iterator<Item = String>) -> String {
    format!("[{}]", values.collect::<Vec<_>>().join(", "))
}

/// Validates the property values of a create (`existing` = `None`) or an update of `existing`,
/// as HubSpot does: every name must be a property of the type, read-only properties cannot be
/// written, e-mail addresses, numbers, booleans and enumeration options are checked, a deal's
/// stage must be in its pipeline (new deals default to pipeline `default` and its first
/// stage), unique values must stay unique. Returns the values to write (e-mail addresses
/// lower-cased; "" clears).
pub(super) fn validate(
    state: &State,
    opts: &HubSpotSimOptions,
    ty: ObjectType,
    input: Vec<(String, String)>,
    existing: Option<u64>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let defs = state.props(ty);
    let mut errors = Vec::new();
    let mut changes = BTreeMap::new();
    for (name, raw) in input {
        let Some(def) = defs.get(&name) else {
            errors.push(PropError {
                message: format!("Property \"{name}\" does not exist"),
                error: "PROPERTY_DOESNT_EXIST",
                name,
            });
            continue;
        };
        if def.read_only_value {
            errors.push(PropError {
                message: format!("\"{name}\" is a read only property; its value cannot be set."),
                error: "READ_ONLY_VALUE",
                name,
            });
            continue;
        }
        let mut value = raw;
        if !value.is_empty() {
            if ty == ObjectType::Contact && name == "email" {
                if !valid_email(&value) {
                    errors.push(PropError {
                        message: format!("Email address {value} is invalid"),
                        error: "INVALID_EMAIL",
                        name,
                    });
                    continue;
                }
                value = value.trim().to_lowercase();
            } else if def.type_ == "number" && value.trim().parse::<f64>().is_err() {
                errors.push(PropError {
                    message: format!("{value} was not a valid number."),
                    error: "INVALID_FLOAT",
                    name,
                });
                continue;
            } else if def.type_ == "bool" && !matches!(value.as_str(), "true" | "false") {
                errors.push(PropError {
                    message: format!("{value} was not a valid boolean (true or false)."),
                    error: "INVALID_BOOLEAN",
                    name,
                });
                continue;
            } else if def.type_ == "enumeration"
                && !def.options.is_empty()
                && !def.options.iter().any(|(_, v)| *v == value)
            {
                errors.push(PropError {
                    message: format!(
                        "{value} was not one of the allowed options: {}",
                        options_list(def.options.iter().map(|(_, v)| v.clone()))
                    ),
                    error: "INVALID_OPTION",
                    name,
                });
                continue;
            }
        }
        changes.insert(name, value);
    }
    if ty == ObjectType::Deal {
        deal_pipeline(state, existing, &mut changes, &mut errors);
    }
    if !errors.is_empty() {
        return Err(property_errors(&errors, opts.portal_id));
    }
    for (name, value) in &changes {
        if value.is_empty() || !state.is_id_property(ty, name) {
            continue;
        }
        if let Some(other) = state.find(ty, Some(name), value) {
            if Some(other) != existing {
                return Err(if ty == ObjectType::Contact && name == "email" {
                    ApiError::conflict(format!("Contact already exists. Existing ID: {other}"))
                } else {
                    ApiError::conflict(format!(
                        "A {} with the unique value \"{value}\" for property \"{name}\" already exists. Existing ID: {other}",
                        ty.singular()
                    ))
                });
            }
        }
    }
    Ok(changes)
}

/// Resolves a deal's `pipeline` and `dealstage`: the pipeline given, else the current one, else
/// `default`; the stage given, else the current one when it belongs to the pipeline, else (new
/// deals only) the pipeline's first stage. Both are written to `changes` on creation and when
/// they change.
fn deal_pipeline(
    state: &State,
    existing: Option<u64>,
    changes: &mut BTreeMap<String, String>,
    errors: &mut Vec<PropError>,
) {
    let current = existing.and_then(|id| state.deals.get(&id));
    let current_pipeline = current.and_then(|d| d.get("pipeline")).map(str::to_owned);
    let current_stage = current.and_then(|d| d.get("dealstage")).map(str::to_owned);
    let all_pipelines = || options_list(state.pipelines.iter().map(|p| p.id.clone()));

    let pipeline_id = match changes.get("pipeline") {
        Some(p) => p.clone(),
        None => current_pipeline
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
    };
    let Some(pipeline) = state.pipeline(&pipeline_id) else {
        errors.push(PropError {
            message: format!(
                "{pipeline_id} was not one of the allowed options: {}",
                all_pipelines()
            ),
            error: "INVALID_OPTION",
            name: "pipeline".to_owned(),
        });
        return;
    };
    let stage_id = match changes.get("dealstage") {
        Some(s) => s.clone(),
        None => match (&current_stage, current.is_some()) {
            (Some(s), _) if pipeline.stage(s).is_some() => s.clone(),
            (Some(s), true) => s.clone(),
            _ => pipeline
                .stages
                .first()
                .map(|s| s.id.clone())
                .unwrap_or_default(),
        },
    };
    if pipeline.stage(&stage_id).is_none() {
        errors.push(PropError {
            message: format!(
                "{stage_id} was not one of the allowed options for pipeline {}: {}",
                pipeline.id,
                options_list(pipeline.stages.iter().map(|s| s.id.clone()))
            ),
            error: "INVALID_OPTION",
            name: "dealstage".to_owned(),
        });
        return;
    }
    if current.is_none() || current_pipeline.as_deref() != Some(pipeline_id.as_str()) {
        changes.insert("pipeline".to_owned(), pipeline_id.clone());
    }
    if current.is_none() || current_stage.as_deref() != Some(stage_id.as_str()) {
        changes.insert("dealstage".to_owned(), stage_id);
    }
}

/// `hs_is_closed_won` and `hs_is_closed` of a deal in `stage_id` of `pipeline_id`.
fn closed_flags(state: &State, pipeline_id: &str, stage_id: &str) -> [(String, String); 2] {
    let stage = state.pipeline(pipeline_id).and_then(|p| p.stage(stage_id));
    let won = stage.is_some_and(|s| s.is_closed_won());
    let closed = stage.is_some_and(|s| s.closed);
    [
        ("hs_is_closed_won".to_owned(), won.to_string()),
        ("hs_is_closed".to_owned(), closed.to_string()),
    ]
}

fn push_history(
    record: &mut Record,
    name: &str,
    value: &str,
    at: chrono::DateTime<chrono::Utc>,
    source: Source,
) {
    record.history.entry(name.to_owned()).or_default().insert(
        0,
        HistoryEntry {
            value: value.to_owned(),
            timestamp: at,
            source_type: source.as_str(),
        },
    );
}

/// Creates a record from validated `changes` and records its events; returns its id.
pub(super) fn create(
    state: &mut State,
    opts: &HubSpotSimOptions,
    ty: ObjectType,
    changes: BTreeMap<String, String>,
    source: Source,
) -> u64 {
    let now = state.tick();
    let id = state.new_record_id(ty);
    let mut props: BTreeMap<String, String> =
        changes.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    props.insert("hs_object_id".to_owned(), id.to_string());
    props
        .entry("createdate".to_owned())
        .or_insert_with(|| iso(&now));
    props.insert(ty.modified_property().to_owned(), iso(&now));
    if ty == ObjectType::Deal {
        let pipeline = props.get("pipeline").cloned().unwrap_or_default();
        let stage = props.get("dealstage").cloned().unwrap_or_default();
        for (name, value) in closed_flags(state, &pipeline, &stage) {
            props.insert(name, value);
        }
    }
    let mut record = Record {
        id,
        props: BTreeMap::new(),
        history: BTreeMap::new(),
        created_at: now,
        updated_at: now,
    };
    for (name, value) in &props {
        push_history(&mut record, name, value, now, source);
    }
    record.props = props;
    let changed: Vec<(String, String)> = record
        .props
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    state.records_mut(ty).insert(id, record);
    events::record_object_change(state, opts, ty, id, true, &changed, source);
    id
}

/// Applies validated `changes` to record `id`: only values that differ are written (each gets
/// a history entry and a `propertyChange` event); the modification time moves when something
/// changed. Returns whether anything changed.
pub(super) fn update(
    state: &mut State,
    opts: &HubSpotSimOptions,
    ty: ObjectType,
    id: u64,
    changes: BTreeMap<String, String>,
    source: Source,
) -> bool {
    let Some(record) = state.records(ty).get(&id) else {
        return false;
    };
    let mut changed: Vec<(String, String)> = changes
        .into_iter()
        .filter(|(name, value)| record.get(name).unwrap_or("") != value.as_str())
        .collect();
    if ty == ObjectType::Deal {
        let after = |name: &str| {
            changed
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .or_else(|| record.get(name).map(str::to_owned))
                .unwrap_or_default()
        };
        let flags = closed_flags(state, &after("pipeline"), &after("dealstage"));
        for (name, value) in flags {
            if record.get(&name).unwrap_or("") != value {
                changed.push((name, value));
            }
        }
    }
    if changed.is_empty() {
        return false;
    }
    let now = state.tick();
    let Some(record) = state.records_mut(ty).get_mut(&id) else {
        return false;
    };
    for (name, value) in &changed {
        if value.is_empty() {
            record.props.remove(name);
        } else {
            record.props.insert(name.clone(), value.clone());
        }
        push_history(record, name, value, now, source);
    }
    let modified = iso(&now);
    record
        .props
        .insert(ty.modified_property().to_owned(), modified.clone());
    push_history(record, ty.modified_property(), &modified, now, source);
    record.updated_at = now;
    events::record_object_change(state, opts, ty, id, false, &changed, source);
    true
}

/// Associates deal and contact (both must exist); records both `associationChange` events when
/// the association is new. Returns whether it is new.
pub(super) fn associate(
    state: &mut State,
    opts: &HubSpotSimOptions,
    deal_id: u64,
    contact_id: u64,
    source: Source,
    from: ObjectType,
) -> bool {
    if !state.associations.insert((deal_id, contact_id)) {
        return false;
    }
    events::record_association(state, opts, deal_id, contact_id, false, source, from);
    true
}

/// Removes an association; records both `associationChange` events (`associationRemoved`
/// true) when it existed. Returns whether it existed.
pub(super) fn dissociate(
    state: &mut State,
    opts: &HubSpotSimOptions,
    deal_id: u64,
    contact_id: u64,
    source: Source,
    from: ObjectType,
) -> bool {
    if !state.associations.remove(&(deal_id, contact_id)) {
        return false;
    }
    events::record_association(state, opts, deal_id, contact_id, true, source, from);
    true
}

/// The targets of a create input's `associations` (`[{to: {id}, types: [{associationCategory,
/// associationTypeId}]}]`): each target must exist and be of the other type, each type must be
/// `HUBSPOT_DEFINED` with the id of this direction (deal→contact 3, contact→deal 4).
pub(super) fn create_associations(
    state: &State,
    ty: ObjectType,
    value: Option<&Value>,
) -> Result<Vec<u64>, ApiError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::validation(
                "Invalid input JSON: `associations` must be an array",
            ));
        }
    };
    let other = ty.other();
    let mut targets = Vec::new();
    for item in items {
        let id_text = match item.pointer("/to/id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(ApiError::validation(
                    "Invalid input JSON: each association needs `to.id`",
                ));
            }
        };
        let types = item
            .get("types")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::validation("Invalid input JSON: each association needs `types`")
            })?;
        for spec in types {
            let category = spec.get("associationCategory").and_then(Value::as_str);
            let type_id = spec.get("associationTypeId").and_then(Value::as_i64);
            if category != Some("HUBSPOT_DEFINED") || type_id != Some(ty.association_type_id()) {
                return Err(ApiError::validation(format!(
                    "{} {} is not a valid association type from {} to {} (use HUBSPOT_DEFINED {})",
                    category.unwrap_or("(no category)"),
                    type_id.map_or_else(|| "(no id)".to_owned(), |t| t.to_string()),
                    ty.plural(),
                    other.plural(),
                    ty.association_type_id()
                )));
            }
        }
        let Some(id) = state.find(other, None, &id_text) else {
            return Err(ApiError::validation(format!(
                "One or more associations are invalid: {} {id_text} does not exist",
                other.upper()
            ))
            .with_context("ids", &[id_text]));
        };
        if !targets.contains(&id) {
            targets.push(id);
        }
    }
    Ok(targets)
}

/// Associates the new record `id` of `ty` with each of `targets`.
pub(super) fn associate_all(
    state: &mut State,
    opts: &HubSpotSimOptions,
    ty: ObjectType,
    id: u64,
    targets: &[u64],
    source: Source,
) {
    for target in targets {
        let (deal, contact) = match ty {
            ObjectType::Deal => (id, *target),
            ObjectType::Contact => (*target, id),
        };
        associate(state, opts, deal, contact, source, ty);
    }
}

/// `record id` text → an existing id of `ty`, or the user-facing error.
pub(super) fn existing(state: &State, ty: ObjectType, id: &str) -> Result<u64, String> {
    state
        .find(ty, None, id)
        .ok_or_else(|| format!("{} {id} does not exist", ty.singular()))
}

/// A UI edit: validates like the API and applies with `changeSource` `CRM_UI`.
pub(super) fn ui_update(
    state: &mut State,
    opts: &HubSpotSimOptions,
    ty: ObjectType,
    id: &str,
    values: Vec<(String, String)>,
) -> Result<(), String> {
    let id = existing(state, ty, id)?;
    let changes = validate(state, opts, ty, values, Some(id)).map_err(|e| e.message)?;
    update(state, opts, ty, id, changes, Source::Ui);
    Ok(())
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
        assert!(!valid_email("a@b@c"));
    }

    #[test]
    fn property_error_message_embeds_the_details() {
        let e = property_errors(
            &[PropError {
                name: "x".into(),
                message: "Property \"x\" does not exist".into(),
                error: "PROPERTY_DOESNT_EXIST",
            }],
            62515,
        );
        assert_eq!(e.status, 400);
        assert_eq!(
            e.message,
            r#"Property values were not valid: [{"isValid":false,"message":"Property \"x\" does not exist","error":"PROPERTY_DOESNT_EXIST","name":"x","localizedErrorMessage":"Property \"x\" does not exist","portalId":62515}]"#
        );
        let body = e.body("c");
        assert_eq!(body["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
        assert_eq!(body["category"], "VALIDATION_ERROR");
    }
}
