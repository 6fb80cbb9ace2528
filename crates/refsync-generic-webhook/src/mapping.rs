//! Rendering of the push request body: pure, no I/O.

use std::collections::BTreeMap;

use refsync_core::{PushSpec, ReferredUser, Template};
use serde_json::{Value, json};

use crate::config::FIELDS_MARKER;

/// The JSON body sent for `user`: the configured template with every string leaf rendered, or
/// the default `{"object", "referral_code", "email", "fields"}` shape.
pub fn render_body(template: Option<&Value>, user: &ReferredUser, spec: &PushSpec) -> Value {
    let fields: BTreeMap<String, String> = spec.fields.render(user);
    let fields = Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    );
    match template {
        Some(t) => render(t, user, &fields),
        None => json!({
            "object": spec.object,
            "referral_code": user.referral_code,
            "email": user.email,
            "fields": fields,
            "defaults": spec.defaults,
        }),
    }
}

fn render(t: &Value, user: &ReferredUser, fields: &Value) -> Value {
    match t {
        Value::String(s) if s == FIELDS_MARKER => fields.clone(),
        // Templates were checked when the settings were loaded; a string that does not parse is
        // sent as written.
        Value::String(s) => match Template::parse(s) {
            Ok(tpl) => tpl.render(user).map_or(Value::Null, Value::String),
            Err(_) => Value::String(s.clone()),
        },
        Value::Array(a) => Value::Array(a.iter().map(|x| render(x, user, fields)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), render(x, user, fields)))
                .collect(),
        ),
        other => other.clone(),
    }
}
