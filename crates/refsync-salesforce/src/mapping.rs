//! Referred user + push spec → the fields of the Salesforce record (pure, no I/O).

use std::collections::BTreeMap;

use refsync_core::{PushSpec, ReferredUser, Result};

use crate::INFO;

/// The CRM fields to write for `user`: the configured defaults, then the rendered mapping.
/// Fails with a validation error naming each required placeholder the mapping lacks.
// TODO(salesforce): turn these into Salesforce's request shape (custom field keys, option ids,
// nested objects) in client.rs, and check that `spec.object` is a kind Salesforce supports.
pub(crate) fn fields(
    user: &ReferredUser,
    spec: &PushSpec,
) -> Result<BTreeMap<String, serde_json::Value>> {
    spec.fields.check_required(INFO.required_mappings)?;
    let mut fields = spec.defaults.clone();
    for (key, value) in spec.fields.render(user) {
        fields.insert(key, serde_json::Value::String(value));
    }
    Ok(fields)
}
