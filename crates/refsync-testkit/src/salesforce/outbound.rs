//! Outbound messages: the definitions (workflow rule "created, and every time it's edited"
//! with an outbound message action), the notification queue, the SOAP envelope built at send
//! time, the acknowledgement check and sending.

use chrono::{DateTime, Utc};

use super::model::{Kind, NOTIFICATION_PREFIX, SObject, State, java_double};
use super::{
    API_VERSION, MAX_NOTIFICATIONS_PER_MESSAGE, OutboundMessage, SalesforceSimOptions, xml,
};

/// The SOAP 1.1 envelope namespace.
pub(super) const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The namespace of `notifications` and `notificationsResponse`.
pub(super) const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
/// The enterprise sObject namespace (`sf:` prefix).
pub(super) const SOBJECT_NS: &str = "urn:sobject.enterprise.soap.sforce.com";

/// How long a notification stays queued before Salesforce drops it.
pub(super) fn max_age() -> chrono::Duration {
    chrono::Duration::hours(24)
}

/// An outbound message definition.
#[derive(Debug, Clone)]
pub(super) struct Definition {
    pub(super) action_id: String,
    pub(super) sobject: SObject,
    /// `Id` first, then the chosen fields in ASCII order (as Salesforce writes them).
    pub(super) fields: Vec<String>,
    pub(super) endpoint_url: String,
    pub(super) send_session_id: bool,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Queued {
    pub(super) notification_id: String,
    pub(super) action_id: String,
    pub(super) record_id: String,
    pub(super) queued_at: DateTime<Utc>,
}

/// The outbound-message state of the org.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) definitions: Vec<Definition>,
    /// Notifications not yet part of a message, in queue order.
    pub(super) pending: Vec<Queued>,
    /// Messages sent before and not acknowledged, as their notifications (resent as they are).
    pub(super) retry: Vec<Vec<Queued>>,
    pub(super) acked: u64,
    pub(super) nacked: u64,
    /// Notifications dropped after 24 hours in the queue.
    pub(super) dropped: u64,
    /// The session outbound messages carry while it is valid.
    pub(super) session: Option<String>,
}

/// Queues a notification for every definition on `sobject` (a record was created or edited).
pub(super) fn record_saved(state: &mut State, sobject: SObject, record_id: &str) {
    let actions: Vec<String> = state
        .outbox
        .definitions
        .iter()
        .filter(|d| d.sobject == sobject)
        .map(|d| d.action_id.clone())
        .collect();
    for action_id in actions {
        let notification_id = state.new_id(NOTIFICATION_PREFIX);
        let queued_at = state.now();
        state.outbox.pending.push(Queued {
            notification_id,
            action_id,
            record_id: record_id.to_owned(),
            queued_at,
        });
    }
}

/// Drops notifications queued 24 hours ago or earlier (counted in `dropped`).
pub(super) fn drop_expired(state: &mut State) {
    let cutoff = state.now() - max_age();
    let outbox = &mut state.outbox;
    let mut dropped = 0u64;
    outbox.retry.retain(|group| {
        let expired = group.first().is_some_and(|q| q.queued_at <= cutoff);
        if expired {
            dropped += group.len() as u64;
        }
        !expired
    });
    let before = outbox.pending.len();
    outbox.pending.retain(|q| q.queued_at > cutoff);
    dropped += (before - outbox.pending.len()) as u64;
    outbox.dropped += dropped;
}

/// The messages the queue makes now: the unacknowledged ones as they were, then the pending
/// notifications grouped per definition (in order of first appearance) by at most 100.
pub(super) fn groups(outbox: &Outbox) -> Vec<Vec<Queued>> {
    let mut groups: Vec<Vec<Queued>> = outbox.retry.clone();
    let mut actions: Vec<&str> = Vec::new();
    for q in &outbox.pending {
        if !actions.contains(&q.action_id.as_str()) {
            actions.push(&q.action_id);
        }
    }
    for action in actions {
        let of_action: Vec<Queued> = outbox
            .pending
            .iter()
            .filter(|q| q.action_id == action)
            .cloned()
            .collect();
        groups.extend(
            of_action
                .chunks(MAX_NOTIFICATIONS_PER_MESSAGE)
                .map(<[Queued]>::to_vec),
        );
    }
    groups
}

/// Escapes text for XML content.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A field value as the enterprise WSDL writes it; `None` for null (left out).
fn soap_value(kind: Kind, value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(match kind {
            Kind::Integer => n.to_string(),
            _ => java_double(n.as_f64().unwrap_or_default()),
        }),
        serde_json::Value::String(s) => Some(match kind {
            // REST `...000+0000` → SOAP `...000Z`.
            Kind::DateTime => s
                .strip_suffix("+0000")
                .map_or_else(|| s.clone(), |t| format!("{t}Z")),
            _ => s.clone(),
        }),
        other => Some(other.to_string()),
    }
}

/// `{base}/services/Soap/{c|u}/62.0/{org15}`.
fn soap_url(base_url: &str, kind: char, org15: &str) -> String {
    format!("{base_url}/services/Soap/{kind}/{API_VERSION}/{org15}")
}

/// Builds the message of `group` with the records' data as they are now.
fn build(
    state: &mut State,
    opts: &SalesforceSimOptions,
    base_url: &str,
    group: Vec<Queued>,
) -> Option<OutboundMessage> {
    let action_id = group.first()?.action_id.clone();
    let definition = state
        .outbox
        .definitions
        .iter()
        .find(|d| d.action_id == action_id)?
        .clone();
    let org15 = &opts.organization_id[..15];
    let session_id = if definition.send_session_id {
        let valid = state
            .outbox
            .session
            .as_deref()
            .is_some_and(|s| state.session_valid(s, opts.session_lifetime));
        if !valid {
            let session = state.issue_session(org15);
            state.outbox.session = Some(session);
        }
        state.outbox.session.clone()
    } else {
        None
    };
    let sobject = definition.sobject.name();
    let mut body = String::new();
    body.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    body.push_str(&format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n"
    ));
    body.push_str(" <soapenv:Body>\n");
    body.push_str(&format!("  <notifications xmlns=\"{OUTBOUND_NS}\">\n"));
    body.push_str(&format!(
        "   <OrganizationId>{}</OrganizationId>\n",
        opts.organization_id
    ));
    body.push_str(&format!("   <ActionId>{action_id}</ActionId>\n"));
    match &session_id {
        Some(session) => body.push_str(&format!("   <SessionId>{}</SessionId>\n", escape(session))),
        None => body.push_str("   <SessionId xsi:nil=\"true\"/>\n"),
    }
    body.push_str(&format!(
        "   <EnterpriseUrl>{}</EnterpriseUrl>\n",
        escape(&soap_url(base_url, 'c', org15))
    ));
    body.push_str(&format!(
        "   <PartnerUrl>{}</PartnerUrl>\n",
        escape(&soap_url(base_url, 'u', org15))
    ));
    for q in &group {
        body.push_str("   <Notification>\n");
        body.push_str(&format!("    <Id>{}</Id>\n", q.notification_id));
        body.push_str(&format!(
            "    <sObject xsi:type=\"sf:{sobject}\" xmlns:sf=\"{SOBJECT_NS}\">\n"
        ));
        let record = state.record(definition.sobject, &q.record_id);
        match record {
            Some(record) => {
                for name in &definition.fields {
                    let kind = state
                        .field(definition.sobject, name)
                        .map_or(Kind::Text(255), |f| f.kind);
                    if let Some(text) = soap_value(kind, &state.field_value(record, name)) {
                        body.push_str(&format!("     <sf:{name}>{}</sf:{name}>\n", escape(&text)));
                    }
                }
            }
            None => body.push_str(&format!("     <sf:Id>{}</sf:Id>\n", q.record_id)),
        }
        body.push_str("    </sObject>\n");
        body.push_str("   </Notification>\n");
    }
    body.push_str("  </notifications>\n");
    // The trailing space after </soapenv:Body> is in Salesforce's own messages (fixture).
    body.push_str(" </soapenv:Body> \n");
    body.push_str("</soapenv:Envelope>\n");
    let request = refsync_core::WebhookRequest {
        method: "POST".to_owned(),
        url: definition.endpoint_url.clone(),
        headers: vec![
            (
                "Content-Type".to_owned(),
                "text/xml; charset=utf-8".to_owned(),
            ),
            ("SOAPAction".to_owned(), "\"\"".to_owned()),
        ],
        body: body.clone().into_bytes(),
    };
    Some(OutboundMessage {
        url: definition.endpoint_url,
        body,
        notification_ids: group.iter().map(|q| q.notification_id.clone()).collect(),
        action_id,
        sobject: sobject.to_owned(),
        record_ids: group.iter().map(|q| q.record_id.clone()).collect(),
        session_id,
        request,
        queued: group,
    })
}

/// Takes every queued notification (expired ones dropped) and builds the messages.
pub(super) fn take(
    state: &mut State,
    opts: &SalesforceSimOptions,
    base_url: &str,
) -> Vec<OutboundMessage> {
    drop_expired(state);
    let groups = groups(&state.outbox);
    state.outbox.retry.clear();
    state.outbox.pending.clear();
    groups
        .into_iter()
        .filter_map(|g| build(state, opts, base_url, g))
        .collect()
}

/// Puts an unacknowledged message back for the next delivery (same notifications).
pub(super) fn requeue(state: &mut State, message: &OutboundMessage) {
    if !message.queued.is_empty() {
        state.outbox.retry.push(message.queued.clone());
    }
}

/// Whether an answer acknowledges a message: a 2xx status and a SOAP 1.1 envelope whose body
/// holds `notificationsResponse` with `Ack` `true` (both in the outbound namespace).
pub(super) fn is_ack(status: u16, body: &[u8]) -> bool {
    if !(200..300).contains(&status) {
        return false;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let Ok(root) = xml::parse(text) else {
        return false;
    };
    if !root.is(SOAP_ENV_NS, "Envelope") {
        return false;
    }
    root.children_named(SOAP_ENV_NS, "Body")
        .flat_map(|b| b.children_named(OUTBOUND_NS, "notificationsResponse"))
        .flat_map(|r| r.children_named(OUTBOUND_NS, "Ack"))
        .any(|ack| matches!(ack.text.trim(), "true" | "1"))
}

/// The fields of a definition: `Id`, then the chosen fields (canonical names, no duplicates) in
/// ASCII order. Panics on an unknown field.
pub(super) fn definition_fields(state: &State, sobject: SObject, fields: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in fields {
        let field = state.field(sobject, name).unwrap_or_else(|| {
            panic!(
                "SalesforceSim::add_outbound_message: {} has no field {name:?}",
                sobject.name()
            )
        });
        if field.name != "Id" && !names.contains(&field.name) {
            names.push(field.name.clone());
        }
    }
    names.sort();
    names.insert(0, "Id".to_owned());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
  <soapenv:Body>
    <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">
      <Ack>true</Ack>
    </notificationsResponse>
  </soapenv:Body>
</soapenv:Envelope>"#;

    #[test]
    fn acknowledgements() {
        assert!(is_ack(200, ACK.as_bytes()));
        assert!(is_ack(202, ACK.as_bytes()));
        assert!(!is_ack(500, ACK.as_bytes()));
        assert!(!is_ack(200, b"OK"));
        assert!(!is_ack(200, b""));
        assert!(!is_ack(200, ACK.replace("true", "false").as_bytes()));
        // Other prefixes are fine; the namespaces are what counts.
        let prefixed = r#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><o:notificationsResponse xmlns:o="http://soap.sforce.com/2005/09/outbound"><o:Ack>true</o:Ack></o:notificationsResponse></S:Body></S:Envelope>"#;
        assert!(is_ack(200, prefixed.as_bytes()));
        // Ack outside the outbound namespace, SOAP 1.2, or not in the Body: refused.
        let unqualified = r#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><notificationsResponse><Ack>true</Ack></notificationsResponse></S:Body></S:Envelope>"#;
        assert!(!is_ack(200, unqualified.as_bytes()));
        let soap12 = ACK.replace(
            "http://schemas.xmlsoap.org/soap/envelope/",
            "http://www.w3.org/2003/05/soap-envelope",
        );
        assert!(!is_ack(200, soap12.as_bytes()));
        assert!(!is_ack(
            200,
            ACK.replace("</soapenv:Envelope>", "").as_bytes()
        ));
    }

    #[test]
    fn values_in_soap() {
        assert_eq!(
            soap_value(Kind::Boolean, &serde_json::json!(false)).as_deref(),
            Some("false")
        );
        assert_eq!(
            soap_value(Kind::Currency, &serde_json::json!(45000.0)).as_deref(),
            Some("45000.0")
        );
        assert_eq!(
            soap_value(
                Kind::DateTime,
                &serde_json::json!("2020-05-08T13:40:22.000+0000")
            )
            .as_deref(),
            Some("2020-05-08T13:40:22.000Z")
        );
        assert_eq!(soap_value(Kind::Text(10), &serde_json::Value::Null), None);
        assert_eq!(escape("a<b&c>"), "a&lt;b&amp;c&gt;");
    }
}
