//! Webhook deliveries: which subscriptions an event reaches and the v1 / v2 bodies they get.

use chrono::{DateTime, Utc};
use refsync_core::WebhookRequest;
use serde_json::{Value, json};

use super::model::{State, ms_time};
use super::{OutgoingWebhook, PipedriveSimOptions};

/// One change of one object, in both payload generations.
#[derive(Debug, Clone)]
pub(super) struct Event {
    /// `create`, `change` or `delete`.
    pub(super) action: &'static str,
    /// `deal`, `lead` or `person`.
    pub(super) entity: &'static str,
    /// The object id (a number, or the lead's UUID string).
    pub(super) entity_id: Value,
    /// Webhooks v2 `data` (null for deletes).
    pub(super) data: Value,
    /// Webhooks v2 `previous`: null (create), the changed keys (change), the last state (delete).
    pub(super) previous: Value,
    /// Webhooks v1 `current` / `previous` (full v1 objects); `None` when v1 webhooks do not get
    /// this event (leads).
    pub(super) v1: Option<(Value, Value)>,
    /// `app` (UI actions) or `api`.
    pub(super) change_source: &'static str,
    /// Shared by the events of one operation.
    pub(super) correlation_id: String,
    pub(super) at: DateTime<Utc>,
}

fn v1_action(action: &str) -> &'static str {
    match action {
        "create" => "added",
        "change" => "updated",
        _ => "deleted",
    }
}

/// Records a delivery of `event` to every active webhook subscribed to it.
pub(super) fn emit(state: &mut State, opts: &PipedriveSimOptions, event: &Event) {
    let event_id = state.uuid();
    let host = format!("{}.pipedrive.com", opts.company_domain);
    let hooks: Vec<_> = state
        .hooks
        .values()
        .filter(|h| h.matches(event.action, event.entity))
        .cloned()
        .collect();
    for hook in hooks {
        let body = if hook.version == "2.0" {
            let entity_id = match &event.entity_id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            json!({
                "data": event.data,
                "previous": event.previous,
                "meta": {
                    "action": event.action,
                    "company_id": opts.company_id.to_string(),
                    "correlation_id": event.correlation_id,
                    "entity_id": entity_id,
                    "entity": event.entity,
                    "id": event_id,
                    "is_bulk_edit": false,
                    "timestamp": ms_time(&event.at),
                    "type": "general",
                    "user_id": opts.user_id.to_string(),
                    "version": "2.0",
                    "webhook_id": hook.id.to_string(),
                    "webhook_owner_id": hook.owner_id.to_string(),
                    "change_source": event.change_source,
                    "attempt": 1,
                    "host": host,
                }
            })
        } else {
            let Some((current, previous)) = &event.v1 else {
                continue;
            };
            let action = v1_action(event.action);
            json!({
                "v": 1,
                "matches_filters": {"current": []},
                "meta": {
                    "v": 1,
                    "action": action,
                    "object": event.entity,
                    "change_source": event.change_source,
                    "id": event.entity_id,
                    "company_id": opts.company_id,
                    "user_id": opts.user_id,
                    "host": host,
                    "timestamp": event.at.timestamp(),
                    "timestamp_micro": event.at.timestamp_micros(),
                    "permitted_user_ids": [opts.user_id],
                    "trans_pending": false,
                    "is_bulk_update": false,
                    "pipedrive_service_name": false,
                    "matches_filters": {"current": []},
                    "webhook_id": hook.id.to_string(),
                },
                "retry": 0,
                "current": current,
                "previous": previous,
                "event": format!("{action}.{}", event.entity),
            })
        };
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        if let Some(user) = &hook.http_auth_user {
            let password = hook.http_auth_password.as_deref().unwrap_or("");
            headers.push((
                "Authorization".to_owned(),
                refsync_http::signature::basic_auth_header(user, password),
            ));
        }
        headers.push(("User-Agent".to_owned(), "Pipedrive Webhooks".to_owned()));
        let request = WebhookRequest {
            method: "POST".to_owned(),
            url: hook.subscription_url.clone(),
            headers,
            body: body.to_string().into_bytes(),
        };
        state.outbox.push(OutgoingWebhook {
            url: hook.subscription_url.clone(),
            request,
            body,
        });
    }
}
