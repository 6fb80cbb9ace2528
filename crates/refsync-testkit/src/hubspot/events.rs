//! Webhook events: which subscriptions a change reaches, the event objects (keys in HubSpot's
//! order), batches, signed requests and sending.

use std::time::Duration;

use refsync_core::WebhookRequest;
use serde_json::{Map, Value, json};

use super::model::{ObjectType, State};
use super::{HubSpotSimOptions, OutgoingBatch, USER_AGENT, sign_v1, sign_v3};

/// Who made a change: `changeSource` of the events and `sourceType` of property history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A call to the CRM API (`API`).
    Api,
    /// A user in HubSpot's UI (`CRM_UI`).
    Ui,
}

impl Source {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Source::Api => "API",
            Source::Ui => "CRM_UI",
        }
    }
}

/// One webhook event, kept as ordered key/value pairs: `head` comes before `attemptNumber`,
/// `tail` after it (HubSpot's key order).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    head: Vec<(&'static str, Value)>,
    tail: Vec<(&'static str, Value)>,
}

impl Event {
    fn fields(&self, attempt: u32) -> impl Iterator<Item = (&'static str, Value)> + '_ {
        self.head
            .iter()
            .cloned()
            .chain(std::iter::once(("attemptNumber", json!(attempt))))
            .chain(self.tail.iter().cloned())
    }

    /// The event as JSON text, keys in HubSpot's order.
    pub(super) fn to_text(&self, attempt: u32) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.fields(attempt).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(key.to_owned()).to_string());
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push('}');
        out
    }

    /// The event as a JSON value.
    pub(super) fn to_value(&self, attempt: u32) -> Value {
        let map: Map<String, Value> = self
            .fields(attempt)
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Value::Object(map)
    }
}

/// The fields every event shares, from `eventId` to `subscriptionType`.
fn common(
    state: &mut State,
    opts: &HubSpotSimOptions,
    event_id: u64,
    subscription_id: u64,
    subscription_type: &str,
) -> Vec<(&'static str, Value)> {
    let occurred_at = state.tick().timestamp_millis();
    vec![
        ("eventId", json!(event_id)),
        ("subscriptionId", json!(subscription_id)),
        ("portalId", json!(opts.portal_id)),
        ("appId", json!(opts.app_id)),
        ("occurredAt", json!(occurred_at)),
        ("subscriptionType", json!(subscription_type)),
    ]
}

/// Subscriptions of `event_type` (`contact.creation`, ...) matching `property` (for
/// `propertyChange`: a subscription without property name matches every property).
fn matching(state: &State, event_type: &str, property: Option<&str>) -> Vec<u64> {
    state
        .subscriptions
        .iter()
        .filter(|s| s.event_type == event_type)
        .filter(|s| match (&s.property, property) {
            (Some(wanted), Some(name)) => wanted == name,
            _ => true,
        })
        .map(|s| s.id)
        .collect()
}

/// Properties nobody can subscribe to (HubSpot refuses subscriptions on the modification
/// times).
fn unsubscribable(name: &str) -> bool {
    matches!(name, "lastmodifieddate" | "hs_lastmodifieddate")
}

/// Records the events of one change of object `id`: `<type>.creation` when `created`, then one
/// `<type>.propertyChange` per changed property (new value, "" when cleared), for each matching
/// subscription. All share one `eventId`.
pub(super) fn record_object_change(
    state: &mut State,
    opts: &HubSpotSimOptions,
    ty: ObjectType,
    id: u64,
    created: bool,
    changed: &[(String, String)],
    source: Source,
) {
    let event_id = state.event_id();
    if created {
        let event_type = format!("{}.creation", ty.singular());
        for subscription in matching(state, &event_type, None) {
            let mut head = vec![
                ("objectId", json!(id)),
                ("changeSource", json!(source.as_str())),
            ];
            head.extend(common(state, opts, event_id, subscription, &event_type));
            state.pending.push(Event {
                head,
                tail: vec![("changeFlag", json!("CREATED"))],
            });
        }
    }
    let event_type = format!("{}.propertyChange", ty.singular());
    for (name, value) in changed {
        if unsubscribable(name) {
            continue;
        }
        for subscription in matching(state, &event_type, Some(name)) {
            let mut head = vec![
                ("objectId", json!(id)),
                ("propertyName", json!(name)),
                ("propertyValue", json!(value)),
                ("changeSource", json!(source.as_str())),
            ];
            head.extend(common(state, opts, event_id, subscription, &event_type));
            state.pending.push(Event {
                head,
                tail: Vec::new(),
            });
        }
    }
}

/// Records both directions of a deal–contact association change (`deal.associationChange`
/// `DEAL_TO_CONTACT` and `contact.associationChange` `CONTACT_TO_DEAL`), the side the change
/// was made from first; both share one `eventId`. `objectId` is the event's `fromObjectId`.
pub(super) fn record_association(
    state: &mut State,
    opts: &HubSpotSimOptions,
    deal_id: u64,
    contact_id: u64,
    removed: bool,
    source: Source,
    from: ObjectType,
) {
    let event_id = state.event_id();
    let sides = match from {
        ObjectType::Deal => [ObjectType::Deal, ObjectType::Contact],
        ObjectType::Contact => [ObjectType::Contact, ObjectType::Deal],
    };
    for side in sides {
        let event_type = format!("{}.associationChange", side.singular());
        let (association_type, from_id, to_id) = match side {
            ObjectType::Deal => ("DEAL_TO_CONTACT", deal_id, contact_id),
            ObjectType::Contact => ("CONTACT_TO_DEAL", contact_id, deal_id),
        };
        for subscription in matching(state, &event_type, None) {
            let mut head = vec![("objectId", json!(from_id))];
            head.extend(common(state, opts, event_id, subscription, &event_type));
            state.pending.push(Event {
                head,
                tail: vec![
                    ("changeSource", json!(source.as_str())),
                    ("associationType", json!(association_type)),
                    ("fromObjectId", json!(from_id)),
                    ("toObjectId", json!(to_id)),
                    ("associationRemoved", json!(removed)),
                    ("isPrimaryAssociation", json!(false)),
                ],
            });
        }
    }
}

/// The body of a batch: a JSON array of its events with `attemptNumber` = `attempt`.
fn batch_body(events: &[Event], attempt: u32) -> Vec<u8> {
    let parts: Vec<String> = events.iter().map(|e| e.to_text(attempt)).collect();
    format!("[{}]", parts.join(",")).into_bytes()
}

/// The webhook request for `body` to `url`, signed as configured with `timestamp_ms`.
pub(super) fn signed_request(
    opts: &HubSpotSimOptions,
    url: &str,
    body: &[u8],
    timestamp_ms: i64,
) -> WebhookRequest {
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("User-Agent".to_owned(), USER_AGENT.to_owned()),
        (
            "X-HubSpot-Timeout-Millis".to_owned(),
            opts.webhook_timeout.as_millis().to_string(),
        ),
        (
            "X-HubSpot-Request-Timestamp".to_owned(),
            timestamp_ms.to_string(),
        ),
    ];
    if opts.signature_versions.contains(&"v3") {
        headers.push((
            "X-HubSpot-Signature-v3".to_owned(),
            sign_v3(&opts.client_secret, "POST", url, body, timestamp_ms),
        ));
    }
    if opts.signature_versions.contains(&"v1") {
        headers.push((
            "X-HubSpot-Signature".to_owned(),
            sign_v1(&opts.client_secret, body),
        ));
        headers.push(("X-HubSpot-Signature-Version".to_owned(), "v1".to_owned()));
    }
    WebhookRequest {
        method: "POST".to_owned(),
        url: url.to_owned(),
        headers,
        body: body.to_vec(),
    }
}

/// A batch of `events` for attempt `attempt`, its body and signed request built now.
pub(super) fn build_batch(
    opts: &HubSpotSimOptions,
    url: &str,
    events: Vec<Event>,
    attempt: u32,
) -> OutgoingBatch {
    let body = batch_body(&events, attempt);
    let timestamp_ms = chrono::Utc::now().timestamp_millis();
    let request = signed_request(opts, url, &body, timestamp_ms);
    OutgoingBatch {
        events: events.iter().map(|e| e.to_value(attempt)).collect(),
        attempt,
        url: url.to_owned(),
        body,
        request,
        raw: events,
    }
}

/// Takes every pending event and cuts them into batches of at most `batch_size`.
pub(super) fn take_batches(state: &mut State, opts: &HubSpotSimOptions) -> Vec<OutgoingBatch> {
    let url = state.target_url.clone().unwrap_or_default();
    let pending = std::mem::take(&mut state.pending);
    let size = opts.batch_size.max(1);
    pending
        .chunks(size)
        .map(|chunk| build_batch(opts, &url, chunk.to_vec(), 0))
        .collect()
}

/// The batch to queue after `batch` failed: the same events with `attemptNumber` + 1; `None`
/// once HubSpot would give up.
pub(super) fn retry_of(opts: &HubSpotSimOptions, batch: &OutgoingBatch) -> Option<OutgoingBatch> {
    (batch.attempt < super::MAX_ATTEMPT_NUMBER)
        .then(|| build_batch(opts, &batch.url, batch.raw.clone(), batch.attempt + 1))
}

/// POSTs `batch` with a fresh timestamp and signatures; gives up after `timeout`.
pub(super) async fn send(
    opts: &HubSpotSimOptions,
    batch: &OutgoingBatch,
) -> std::io::Result<(u16, Vec<u8>)> {
    if batch.url.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no webhook target URL is set (HubSpotSimOptions::target_url / set_target_url)",
        ));
    }
    let timestamp_ms = chrono::Utc::now().timestamp_millis();
    let request = signed_request(opts, &batch.url, &batch.body, timestamp_ms);
    let timeout: Duration = opts.webhook_timeout;
    match tokio::time::timeout(timeout, crate::sim::send_webhook(&batch.url, &request)).await {
        Ok(answer) => answer,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_text_keeps_hubspot_key_order() {
        let event = Event {
            head: vec![("objectId", json!(7)), ("propertyName", json!("dealstage"))],
            tail: vec![("changeFlag", json!("CREATED"))],
        };
        assert_eq!(
            event.to_text(2),
            r#"{"objectId":7,"propertyName":"dealstage","attemptNumber":2,"changeFlag":"CREATED"}"#
        );
        assert_eq!(
            event.to_value(0),
            json!({"objectId": 7, "propertyName": "dealstage", "attemptNumber": 0, "changeFlag": "CREATED"})
        );
        assert_eq!(batch_body(&[event.clone(), event], 1).first(), Some(&b'['));
    }
}
