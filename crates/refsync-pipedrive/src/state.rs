//! Events from an object's current state (API v2 shape), for `reconcile`: pure.

use chrono::{DateTime, Utc};
use refsync_core::{Change, CrmEvent, EventObject, ObjectKind};
use serde_json::Value;

use crate::NAME;
use crate::events::{id_string, referral_code, time};

fn id_text(v: Option<&Value>) -> Option<String> {
    v.and_then(id_string)
}

/// A deal's current state as events: `created` when it was added at or after `since`, its
/// stage (`stage_changed` from `null`) and, unless open, its status (`status_changed` from
/// `null`). The delivery id, `reconcile:<deal>:<update_time>`, is the same on every poll of an
/// unchanged deal.
pub(crate) fn deal_state_events(
    deal: &Value,
    referral_code_key: Option<&str>,
    since: DateTime<Utc>,
) -> Vec<CrmEvent> {
    let Some(id) = id_text(deal.get("id")) else {
        return Vec::new();
    };
    let updated = deal.get("update_time").and_then(time);
    let added = deal.get("add_time").and_then(time);
    let delivery = format!(
        "reconcile:{id}:{}",
        deal.get("update_time")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
    );
    let code = referral_code_key
        .zip(deal.as_object())
        .and_then(|(k, d)| referral_code(d, k));
    let mut related = Vec::new();
    if let Some(p) = id_text(deal.get("person_id")) {
        related.push(EventObject {
            kind: ObjectKind::Person,
            id: p,
        });
    }
    let mut changes = Vec::new();
    if added.is_some_and(|a| a >= since) {
        changes.push(Change::Created);
    }
    if let Some(stage) = id_text(deal.get("stage_id")) {
        changes.push(Change::StageChanged {
            pipeline: id_text(deal.get("pipeline_id")),
            from: None,
            to: stage,
        });
    }
    if let Some(status) = deal.get("status").and_then(Value::as_str)
        && status != "open"
    {
        changes.push(Change::StatusChanged {
            from: None,
            to: status.to_lowercase(),
        });
    }
    changes
        .into_iter()
        .map(|change| CrmEvent {
            delivery_id: Some(delivery.clone()),
            occurred_at: updated.or(added),
            referral_code: code.clone(),
            related: related.clone(),
            ..CrmEvent::new(NAME, ObjectKind::Deal, id.clone(), change)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_won_deal_reconciles_to_stage_and_status_with_a_stable_id() {
        let key = "5f1e2d3c4b5a69788796a5b4c3d2e1f001234567";
        let deal = json!({
            "id": 8, "person_id": 3, "pipeline_id": 1, "stage_id": 4, "status": "won",
            "add_time": "2026-01-01T10:00:00Z", "update_time": "2026-01-02T10:00:00Z",
            "custom_fields": { key: "ADA-42" }
        });
        let since = "2026-01-01T12:00:00Z".parse().unwrap();
        let ev = deal_state_events(&deal, Some(key), since);
        let changes: Vec<&str> = ev.iter().map(|e| e.change.type_name()).collect();
        assert_eq!(changes, ["stage_changed", "status_changed"]);
        assert!(
            ev.iter()
                .all(|e| e.referral_code.as_deref() == Some("ADA-42"))
        );
        assert!(
            ev.iter()
                .all(|e| e.delivery_id.as_deref() == Some("reconcile:8:2026-01-02T10:00:00Z"))
        );
        assert_eq!(ev[0].related[0].id, "3");
        // added after `since`: also created
        let early = "2025-12-31T00:00:00Z".parse().unwrap();
        assert_eq!(
            deal_state_events(&deal, Some(key), early)[0].change,
            Change::Created
        );
        // no id, no events
        assert!(deal_state_events(&json!({"stage_id": 1}), None, since).is_empty());
    }
}
