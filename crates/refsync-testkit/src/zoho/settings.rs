//! Metadata endpoints: `GET /crm/v8/settings/fields?module=` and
//! `GET /crm/v8/settings/pipeline?layout_id=`.

use serde_json::{Value, json};

use super::ZohoSimOptions;
use super::model::{FieldDef, Kind, Module, State};
use super::ops::ApiError;
use crate::sim::{RecordedRequest, SimResponse};

const LEAD_SOURCES: &[&str] = &[
    "-None-",
    "Advertisement",
    "Cold Call",
    "Employee Referral",
    "External Referral",
    "Online Store",
    "Partner",
    "Public Relations",
    "Sales Email Alias",
    "Seminar Partner",
    "Internal Seminar",
    "Trade Show",
    "Web Download",
    "Web Research",
    "Chat",
];

const LEAD_STATUSES: &[&str] = &[
    "-None-",
    "Attempted to Contact",
    "Contact in Future",
    "Contacted",
    "Junk Lead",
    "Lost Lead",
    "Not Contacted",
    "Pre-Qualified",
    "Not Qualified",
];

/// The `ui_type` Zoho gives fields of `kind`.
fn ui_type(kind: Kind) -> i64 {
    match kind {
        Kind::Text => 1,
        Kind::TextArea => 3,
        Kind::Email => 25,
        Kind::Phone => 33,
        Kind::Picklist | Kind::Stage | Kind::Pipeline => 2,
        Kind::Currency => 36,
        Kind::Integer => 32,
        Kind::Date => 24,
        Kind::DateTime => 333,
        Kind::Lookup(_) => 133,
        Kind::Owner => 8,
    }
}

fn picklist_values(state: &State, field: &FieldDef) -> Vec<Value> {
    let simple = |values: &[&str]| -> Vec<Value> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({
                    "display_value": v,
                    "sequence_number": i + 1,
                    "reference_value": v,
                    "colour_code": null,
                    "actual_value": v,
                    "id": format!("{}{:03}", &field.id[..field.id.len() - 3], i + 1),
                    "type": "used",
                })
            })
            .collect()
    };
    match (field.kind, field.api_name.as_str()) {
        (Kind::Stage, _) => state
            .default_pipeline()
            .stages
            .iter()
            .map(|s| {
                let mut v = s.to_json();
                v["colour_code"] = Value::Null;
                v["type"] = json!("used");
                v["reference_value"] = json!(s.display_value);
                v
            })
            .collect(),
        (Kind::Pipeline, _) => state
            .pipelines
            .iter()
            .enumerate()
            .map(|(i, p)| {
                json!({
                    "display_value": p.display_value,
                    "sequence_number": i + 1,
                    "reference_value": p.display_value,
                    "colour_code": null,
                    "actual_value": p.actual_value,
                    "id": p.id,
                    "type": "used",
                    "maps": [{
                        "api_name": "Stage",
                        "pick_list_values": p.stages.iter().map(|s| json!({
                            "display_value": s.display_value,
                            "sequence_number": s.sequence_number,
                            "reference_value": s.display_value,
                            "colour_code": null,
                            "actual_value": s.actual_value,
                            "id": s.id,
                            "type": "used",
                            "forecast_type": s.forecast_type,
                        })).collect::<Vec<_>>(),
                    }],
                })
            })
            .collect(),
        (Kind::Picklist, "Lead_Status") => simple(LEAD_STATUSES),
        (Kind::Picklist, _) => simple(LEAD_SOURCES),
        _ => Vec::new(),
    }
}

/// `convert_mapping` of a field: where lead conversion copies a Leads field.
fn convert_mapping(module: Module, field: &FieldDef, opts: &ZohoSimOptions) -> Value {
    if module != Module::Leads {
        return json!({});
    }
    let to_contact = matches!(
        field.api_name.as_str(),
        "First_Name" | "Last_Name" | "Email" | "Phone" | "Mobile" | "Lead_Source" | "Description"
    );
    let referral = field.api_name == opts.referral_code_field && opts.conversion_mapping;
    json!({
        "Contacts": (to_contact || referral).then(|| field.api_name.clone()),
        "Deals": (referral || field.api_name == "Lead_Source").then(|| field.api_name.clone()),
        "Accounts": (field.api_name == "Company").then(|| "Account_Name".to_owned()),
    })
}

/// A field as the fields metadata API returns it: every key Zoho's v8 description requires.
fn field_json(state: &State, opts: &ZohoSimOptions, module: Module, field: &FieldDef) -> Value {
    let writable = !field.read_only;
    let lookup = match field.kind {
        Kind::Lookup(target) => json!({
            "display_label": field.label,
            "api_name": field.api_name,
            "module": {"api_name": target.api_name(), "id": target.id()},
            "id": field.id,
            "query_details": {},
            "revalidate_filter_during_edit": false,
            "show_fields": [],
        }),
        _ => json!({}),
    };
    let mut head = json!({
        "associated_module": null,
        "webhook": true,
        "operation_type": {
            "web_update": writable,
            "api_create": writable,
            "web_create": writable,
            "api_update": writable,
        },
        "colour_code_enabled_by_system": false,
        "field_label": field.label,
        "tooltip": null,
        "type": "used",
        "field_read_only": field.read_only,
        "customizable_properties": [],
        "display_label": field.label,
        "read_only": field.read_only,
        "association_details": null,
        "businesscard_supported": false,
        "multi_module_lookup": {},
        "id": field.id,
        "created_time": null,
        "filterable": true,
        "visible": true,
        "refer_from_field": null,
        "profiles": [{"permission_type": "read_write", "name": "Administrator", "id": "3652397000000026011"}],
        "view_type": {"view": true, "edit": writable, "quick_create": field.system_mandatory, "create": writable},
        "separator": false,
        "searchable": true,
    });
    let rest = json!({
        "external": null,
        "api_name": field.api_name,
        "unique": if field.unique { json!({"casesensitive": "0"}) } else { json!({}) },
        "enable_colour_code": false,
        "pick_list_values": picklist_values(state, field),
        "system_mandatory": field.system_mandatory,
        "virtual_field": false,
        "json_type": field.kind.json_type(),
        "crypt": null,
        "created_source": if field.custom { "crm" } else { "default" },
        "display_type": 1,
        "ui_type": ui_type(field.kind),
        "modified_time": null,
        "email_parser": {"fields_update_supported": false, "record_operations_supported": true},
        "currency": if field.kind == Kind::Currency { json!({"rounding_option": "normal", "precision": 2}) } else { json!({}) },
        "custom_field": field.custom,
        "lookup": lookup,
        "rollup_summary": {},
        "length": field.length,
        "column_name": field.api_name.to_ascii_uppercase(),
        "sub_module": null,
        "formula": {},
        "decimal_place": if field.kind == Kind::Currency { json!(2) } else { Value::Null },
    });
    let tail = json!({
        "mass_update": false,
        "blueprint_supported": field.kind == Kind::Picklist || field.kind == Kind::Stage,
        "available_in_user_layout": true,
        "display_field": field.api_name == "Last_Name" || field.api_name == "Deal_Name",
        "multiuserlookup": null,
        "multiselectlookup": {},
        "pick_list_values_sorted_lexically": false,
        "sortable": true,
        "layout_associations": [{"api_name": "Standard", "name": "Standard", "id": module.layout_id()}],
        "quick_sequence_number": "1",
        "data_type": field.kind.data_type(),
        "subform": null,
        "history_tracking": null,
        "convert_mapping": convert_mapping(module, field, opts),
        "autonumber": {"prefix": null, "suffix": null, "start_number": null, "starting_number_length": 0},
        "auto_number": {},
        "category": 0,
        "show_type": 7,
        "file_upolad_optionlist": [],
        "allowed_modules": [],
        "additional_column": null,
        "common.picklist": null,
        "hipaa_compliance_enabled": false,
        "hipaa_compliance": null,
        "_update_existing_records": false,
        "number_separator": false,
        "textarea": if field.kind == Kind::TextArea { json!({"type": "large"}) } else { Value::Null },
        "sharing_properties": null,
        "static_field": false,
    });
    for part in [rest, tail] {
        if let (Some(out), Value::Object(part)) = (head.as_object_mut(), part) {
            out.extend(part);
        }
    }
    head
}

/// The fields of `module` as the metadata API lists them.
pub(super) fn fields_json(state: &State, opts: &ZohoSimOptions, module: Module) -> Vec<Value> {
    state
        .fields(module)
        .iter()
        .map(|f| field_json(state, opts, module, f))
        .collect()
}

/// `GET /crm/v8/settings/fields?module=Leads`.
pub(super) fn fields(
    state: &State,
    opts: &ZohoSimOptions,
    req: &RecordedRequest,
) -> Result<SimResponse, ApiError> {
    let Some(name) = req.query_param("module").filter(|m| !m.is_empty()) else {
        return Err(ApiError::param_missing("module"));
    };
    let module = Module::parse(&name).ok_or_else(|| ApiError::invalid_module(&name))?;
    Ok(SimResponse::json(
        200,
        &json!({ "fields": fields_json(state, opts, module) }),
    ))
}

/// `{"pipeline": [...]}` of the Deals layout.
pub(super) fn pipelines_json(state: &State) -> Value {
    json!({"pipeline": state.pipelines.iter().map(|p| p.to_json()).collect::<Vec<_>>()})
}

/// `GET /crm/v8/settings/pipeline?layout_id=` (the Deals layout; `layout_id` is mandatory).
pub(super) fn pipelines(state: &State, req: &RecordedRequest) -> Result<SimResponse, ApiError> {
    let Some(layout) = req.query_param("layout_id").filter(|l| !l.is_empty()) else {
        return Err(ApiError::param_missing("layout_id"));
    };
    if layout != Module::Deals.layout_id() {
        return Err(ApiError::new(
            400,
            "INVALID_DATA",
            "invalid data",
            json!({"param_name": "layout_id"}),
        ));
    }
    Ok(SimResponse::json(200, &pipelines_json(state)))
}
