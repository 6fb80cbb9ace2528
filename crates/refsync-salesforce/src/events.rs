//! Webhook verification and parsing: pure and synchronous, so they run on fixtures and can be
//! fuzzed.
//!
//! Salesforce has no signed JSON webhooks. What reaches refsync is an **Outbound Message**, the
//! action of a Workflow Rule (or of a record-triggered Flow): a SOAP 1.1 `POST` with
//! `Content-Type: text/xml` and `SOAPAction: ""` whose body is (the sandbox capture in
//! `tests/fixtures/`, shortened):
//!
//! ```xml
//! <soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
//!     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
//!  <soapenv:Body>
//!   <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
//!    <OrganizationId>00D5w000004qGTOEA2</OrganizationId>
//!    <ActionId>04k5w000000TSwMAAW</ActionId>
//!    <SessionId xsi:nil="true"/>
//!    <EnterpriseUrl>…</EnterpriseUrl>
//!    <PartnerUrl>…</PartnerUrl>
//!    <Notification>
//!     <Id>04l5w00005286hAAAQ</Id>
//!     <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
//!      <sf:Id>0065w000023STAmAAO</sf:Id>
//!      <sf:IsClosed>false</sf:IsClosed>
//!      <sf:IsWon>false</sf:IsWon>
//!      <sf:LastModifiedDate>2020-05-09T03:04:32.000Z</sf:LastModifiedDate>
//!      <sf:StageName>Negotiation/Review</sf:StageName>
//!     </sObject>
//!    </Notification>
//!   </notifications>
//!  </soapenv:Body>
//! </soapenv:Envelope>
//! ```
//!
//! - `notifications` (namespace `http://soap.sforce.com/2005/09/outbound`) carries the org's
//!   `OrganizationId` (15 or 18 characters; the first 15 are the id, the last 3 a case
//!   checksum), the outbound message's `ActionId`, a `SessionId` only when "Send Session ID" is
//!   ticked (else `xsi:nil="true"` or left out), `EnterpriseUrl`, `PartnerUrl`, and **1 to 100
//!   `Notification`s**;
//! - each `Notification` has its own `Id` (`04l…`) and one `sObject` whose `xsi:type`
//!   (`sf:Lead`, `sf:Opportunity`, `sf:Contact`, …) names the object; its children, in
//!   `urn:sobject.enterprise.soap.sforce.com`, are only the fields chosen in the outbound
//!   message's definition, as text (`true` / `false`, ISO dates); `xsi:nil="true"` is null;
//! - the record's data is read **when the message is sent**, not when the rule fired, so it is
//!   the latest state; delivery is **at least once and unordered**: failed messages are retried
//!   with back-off (at most two hours apart) for 24 hours, then dropped. A message is a
//!   success only when the receiver answers with the SOAP `notificationsResponse` carrying
//!   `<Ack>true</Ack>` ([`ack`]); anything else, a plain `200` included, is resent.
//!
//! Elements are matched by namespace and local name, so any prefix works (`s:Envelope`,
//! `ns2:notifications`). The body is parsed with `roxmltree`, which refuses DTDs: no external
//! entities, no entity expansion. Bodies over [`MAX_BODY`] are refused before parsing.
//!
//! ## Authentication
//!
//! Outbound messages are **not signed**. refsync requires two things ([`verify`]): a secret
//! token in the endpoint URL configured on the outbound message
//! (`https://…/hooks/salesforce?token=<secret>`, compared in constant time), and an
//! `OrganizationId` on the allow-list (first 15 characters, case-sensitive). The org id is not
//! secret, so it never authenticates alone. Nothing covers a timestamp: a replayed message is
//! caught by the delivery-id deduplication downstream.
//!
//! See `shared/research/crm-salesforce-woo-intercom-stripe.md` sections 4.4 a) and 4.6.

use chrono::{DateTime, Utc};
use refsync_core::{
    Change, CrmEvent, Error, EventObject, ObjectKind, Result, Secret, Verification, WebhookReply,
    WebhookRequest,
};
use refsync_http::signature::secrets_equal;
use roxmltree::{Document, Node, ParsingOptions};

use crate::NAME;

/// The largest body accepted (1 MiB): 100 notifications of a few dozen fields take far less.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// The most notifications one outbound message carries (Salesforce's documented maximum).
const MAX_NOTIFICATIONS: usize = 100;

/// SOAP 1.1 envelope namespace.
const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// Namespace of `notifications`, `Notification` and their children.
const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
/// Namespace of the sObject's fields (the enterprise WSDL).
const SOBJECT_NS: &str = "urn:sobject.enterprise.soap.sforce.com";
/// XML Schema instance namespace (`xsi:type`, `xsi:nil`).
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The query parameter of the endpoint URL carrying the token.
const TOKEN_PARAM: &str = "token";

/// The reply Salesforce needs to consider a message delivered.
const ACK: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<soapenv:Body>"#,
    r#"<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    r#"<Ack>true</Ack>"#,
    r#"</notificationsResponse>"#,
    r#"</soapenv:Body>"#,
    r#"</soapenv:Envelope>"#,
);

// ---------------------------------------------------------------- the message

/// An outbound message, read from the XML.
#[derive(Debug)]
struct Message {
    /// `OrganizationId` as sent (15 or 18 ASCII letters and digits).
    organization_id: String,
    /// `ActionId`: the outbound message definition.
    action_id: String,
    /// The notifications, in document order.
    notifications: Vec<Notification>,
}

impl Message {
    /// The org's 15-character id (the message's id is checked to have 15 or 18 characters).
    fn org15(&self) -> &str {
        self.organization_id
            .get(..15)
            .unwrap_or(&self.organization_id)
    }
}

/// One `Notification`.
#[derive(Debug)]
struct Notification {
    /// The notification's `Id` (`04l…`), stable across resends.
    id: String,
    /// The sObject, when the notification has one with an `xsi:type`.
    object: Option<SObject>,
}

/// A notification's `sObject`.
#[derive(Debug)]
struct SObject {
    /// The object's API name from `xsi:type` (`Lead`, `Opportunity`, …).
    object_type: String,
    /// The fields with a value (not nil, not empty after trimming), first occurrence of a name
    /// only, in document order.
    fields: Vec<(String, String)>,
}

impl SObject {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn is_true(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }

    /// The names of the fields with a value except `Id`, sorted.
    fn field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .fields
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| n != "Id")
            .collect();
        names.sort();
        names
    }
}

/// Reads `body` as an outbound message. Errors are short, one-line validation reasons.
fn message(body: &[u8]) -> Result<Message> {
    if body.len() > MAX_BODY {
        return Err(Error::validation(format!(
            "the body has {} bytes, more than the {MAX_BODY} an outbound message may have",
            body.len()
        )));
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(Error::validation("the body is not UTF-8 text"));
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // `allow_dtd: false` (the default, spelled out): a `<!DOCTYPE` is an error, so there are no
    // external entities and no entity expansion.
    let options = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::DtdDetected => {
            Error::validation("the body has a DTD (<!DOCTYPE>), which outbound messages never have")
        }
        e => Error::validation(one_line(&format!("the body is not well-formed XML: {e}"))),
    })?;

    let envelope = doc.root_element();
    if !is(envelope, SOAP_NS, "Envelope") {
        return Err(Error::validation("the body is not a SOAP envelope"));
    }
    let notifications = child(envelope, SOAP_NS, "Body")
        .and_then(|b| child(b, OUTBOUND_NS, "notifications"))
        .ok_or_else(|| {
            Error::validation("the SOAP body has no outbound-message notifications element")
        })?;

    let organization_id = child(notifications, OUTBOUND_NS, "OrganizationId")
        .and_then(value)
        .ok_or_else(|| Error::validation("the message has no OrganizationId"))?;
    if !is_salesforce_id(&organization_id) {
        return Err(Error::validation(
            "the OrganizationId is not a Salesforce id (15 or 18 letters and digits)",
        ));
    }
    let action_id = child(notifications, OUTBOUND_NS, "ActionId")
        .and_then(value)
        .ok_or_else(|| Error::validation("the message has no ActionId"))?;

    let elements: Vec<Node<'_, '_>> = notifications
        .children()
        .filter(|n| is(*n, OUTBOUND_NS, "Notification"))
        .collect();
    if elements.is_empty() {
        return Err(Error::validation("the message has no Notification"));
    }
    if elements.len() > MAX_NOTIFICATIONS {
        return Err(Error::validation(format!(
            "the message has {} notifications, more than the {MAX_NOTIFICATIONS} Salesforce sends",
            elements.len()
        )));
    }
    let notifications = elements
        .into_iter()
        .map(|n| {
            let id = child(n, OUTBOUND_NS, "Id")
                .and_then(value)
                .ok_or_else(|| Error::validation("a Notification has no Id"))?;
            let object = child(n, OUTBOUND_NS, "sObject").and_then(sobject);
            Ok(Notification { id, object })
        })
        .collect::<Result<Vec<_>>>()?;

    Ok(Message {
        organization_id,
        action_id,
        notifications,
    })
}

/// An `sObject` element: its type from `xsi:type` (the part after the prefix) and its fields
/// in the sObject namespace. Without a type it is none.
fn sobject(node: Node<'_, '_>) -> Option<SObject> {
    let xsi_type = node.attribute((XSI_NS, "type"))?.trim();
    let object_type = xsi_type
        .rsplit_once(':')
        .map_or(xsi_type, |(_, local)| local)
        .to_owned();
    if object_type.is_empty() {
        return None;
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    for field in node
        .children()
        .filter(|n| n.is_element() && n.tag_name().namespace() == Some(SOBJECT_NS))
    {
        let name = field.tag_name().name();
        if fields.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(v) = value(field) {
            fields.push((name.to_owned(), v));
        }
    }
    Some(SObject {
        object_type,
        fields,
    })
}

/// An element's value: its text, trimmed; `xsi:nil="true"` and empty text are none.
fn value(node: Node<'_, '_>) -> Option<String> {
    let nil = node
        .attribute((XSI_NS, "nil"))
        .is_some_and(|v| matches!(v.trim(), "true" | "1"));
    if nil {
        return None;
    }
    let text: String = node
        .children()
        .filter(Node::is_text)
        .filter_map(|n| n.text())
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Whether `node` is the element `name` in namespace `ns`.
fn is(node: Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

/// The first child element `name` in namespace `ns`.
fn child<'a, 'input>(node: Node<'a, 'input>, ns: &str, name: &str) -> Option<Node<'a, 'input>> {
    node.children().find(|n| is(*n, ns, name))
}

/// A Salesforce id: 15 or 18 ASCII letters and digits.
fn is_salesforce_id(id: &str) -> bool {
    matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `text` on one line (control characters become spaces), cut at 160 characters.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(160)
        .collect()
}

// ---------------------------------------------------------------- verify

/// What verify needs from the settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VerifyOptions<'a> {
    /// The secret in the endpoint URL configured on the outbound message: query parameter
    /// `token`.
    pub endpoint_token: &'a Secret,
    /// The allowed organization ids, 15 or 18 characters; their first 15 are compared
    /// (case-sensitive).
    pub organization_ids: &'a [String],
}

/// Checks the endpoint token (constant time) and the message's `OrganizationId` against the
/// allow-list (`salesforce-token+org`).
///
/// The token is the `token` query parameter of the URL the message was sent to
/// (percent-decoded; `+` stays a plus). The body must be an outbound message whose
/// `OrganizationId`'s first 15 characters equal the first 15 of an allowed id (allowed ids
/// shorter than 15 characters match nothing). An empty token or allow-list refuses everything.
///
/// Errors are unauthorized, with a one-line reason that never contains the token.
pub(crate) fn verify(opts: &VerifyOptions<'_>, request: &WebhookRequest) -> Result<Verification> {
    let expected = opts.endpoint_token.expose();
    if expected.is_empty() {
        return Err(Error::unauthorized(
            "the endpoint token is empty: set it to a long random value and add ?token=<it> to the outbound message's endpoint URL",
        ));
    }
    if opts.organization_ids.iter().all(|id| id.trim().is_empty()) {
        return Err(Error::unauthorized(
            "no organization is allowed: configure organization_ids with your org's id (Setup > Company Information)",
        ));
    }
    let provided: Vec<Vec<u8>> = request
        .query()
        .unwrap_or_default()
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(k, _)| percent_decode(k.as_bytes()) == TOKEN_PARAM.as_bytes())
        .map(|(_, v)| percent_decode(v.as_bytes()))
        .filter(|v| !v.is_empty())
        .collect();
    if provided.is_empty() {
        return Err(Error::unauthorized(
            "the endpoint URL carries no token (…?token=<secret>)",
        ));
    }
    // Every candidate is compared (no early exit), each in constant time.
    let matched = provided.iter().fold(false, |matched, candidate| {
        matched | secrets_equal(candidate, expected.as_bytes())
    });
    if !matched {
        return Err(Error::unauthorized("endpoint token mismatch"));
    }

    let Ok(message) = message(&request.body) else {
        return Err(Error::unauthorized("not a Salesforce outbound message"));
    };
    let org15 = message.org15();
    let allowed = opts
        .organization_ids
        .iter()
        .filter_map(|id| id.trim().get(..15))
        .any(|id| id == org15);
    if !allowed {
        // The id is checked to be 15 or 18 letters and digits, and org ids are not secret.
        return Err(Error::unauthorized(format!(
            "message from organization {}, not an allowed one",
            message.organization_id
        )));
    }
    Ok(Verification::Verified {
        scheme: "salesforce-token+org".into(),
    })
}

/// Percent-decodes `%XX` escapes (invalid ones are kept as they are); `+` is left alone.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        let escaped = (b == b'%')
            .then(|| {
                let h = input.get(i + 1).copied().and_then(nibble)?;
                let l = input.get(i + 2).copied().and_then(nibble)?;
                Some(h << 4 | l)
            })
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

// ---------------------------------------------------------------- parse

/// What parse needs from the settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParseOptions {
    /// API name of the field holding the referral code (e.g. `Referral_Code__c`).
    pub referral_code_field: Option<String>,
}

impl ParseOptions {
    fn code_field(&self) -> Option<&str> {
        self.referral_code_field
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
    }
}

/// Turns a verified outbound message into canonical events, in document order. Never panics.
///
/// Per notification, by the sObject's type:
/// - `Lead`: `IsConverted` true → `lead_converted` (`deal_id` = `ConvertedOpportunityId`,
///   related: the `ConvertedContactId` contact and the deal); else `updated` with the fields;
///   the email (`Email`, lower-cased) and referral code are read;
/// - `Opportunity` (a deal): `StageName` → `stage_changed` to it (no pipeline, no `from`: the
///   message has no previous value), then `IsWon` true → `status_changed` to `won`, else
///   `IsClosed` true → `lost`; with neither a stage nor a close, `updated`. Related: the
///   `ContactId` contact;
/// - `Contact`: `updated`, with email and referral code;
/// - other objects, and notifications without an sObject type or `Id` field: no events.
///
/// `updated` lists the names of the fields with a value except `Id`, sorted. Every event has
/// the `OrganizationId` as account, `LastModifiedDate` (else `SystemModstamp`) as time, and
/// the delivery id `{org15}:{ActionId}:{Notification Id}:{converted|stage|status|updated}`,
/// which a resend of the same message repeats.
///
/// A body that is not an outbound message is a validation error.
pub(crate) fn parse(opts: &ParseOptions, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
    let message = message(&request.body)?;
    let mut events = Vec::new();
    for notification in &message.notifications {
        events.extend(notification_events(opts, &message, notification));
    }
    Ok(events)
}

fn notification_events(
    opts: &ParseOptions,
    message: &Message,
    notification: &Notification,
) -> Vec<CrmEvent> {
    let Some(object) = &notification.object else {
        return Vec::new();
    };
    let Some(id) = object.get("Id") else {
        return Vec::new();
    };
    // (kind suffix of the delivery id, change, related objects)
    let mut changes: Vec<(&str, Change, Vec<EventObject>)> = Vec::new();
    let kind = match object.object_type.as_str() {
        "Lead" => {
            if object.is_true("IsConverted") {
                let deal = object.get("ConvertedOpportunityId");
                let related = [
                    (ObjectKind::Contact, object.get("ConvertedContactId")),
                    (ObjectKind::Deal, deal),
                ]
                .into_iter()
                .filter_map(|(kind, id)| related(kind, id))
                .collect();
                let change = Change::LeadConverted {
                    lead_id: id.to_owned(),
                    deal_id: deal.map(str::to_owned),
                };
                changes.push(("converted", change, related));
            } else {
                changes.push(("updated", updated(object), Vec::new()));
            }
            ObjectKind::Lead
        }
        "Opportunity" => {
            let related: Vec<EventObject> = related(ObjectKind::Contact, object.get("ContactId"))
                .into_iter()
                .collect();
            if let Some(stage) = object.get("StageName") {
                let change = Change::StageChanged {
                    pipeline: None,
                    from: None,
                    to: stage.to_owned(),
                };
                changes.push(("stage", change, related.clone()));
            }
            let status = if object.is_true("IsWon") {
                Some("won")
            } else if object.is_true("IsClosed") {
                Some("lost")
            } else {
                None
            };
            if let Some(status) = status {
                let change = Change::StatusChanged {
                    from: None,
                    to: status.to_owned(),
                };
                changes.push(("status", change, related.clone()));
            }
            if changes.is_empty() {
                changes.push(("updated", updated(object), related));
            }
            ObjectKind::Deal
        }
        "Contact" => {
            changes.push(("updated", updated(object), Vec::new()));
            ObjectKind::Contact
        }
        _ => return Vec::new(),
    };

    let occurred_at = ["LastModifiedDate", "SystemModstamp"]
        .into_iter()
        .filter_map(|f| object.get(f))
        .find_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let referral_code = opts
        .code_field()
        .and_then(|f| object.get(f))
        .map(str::to_owned);
    let email = match kind {
        ObjectKind::Lead | ObjectKind::Contact => object.get("Email").map(str::to_lowercase),
        _ => None,
    };
    let org15 = message.org15();
    changes
        .into_iter()
        .map(|(suffix, change, related)| {
            let mut e = CrmEvent::new(NAME, kind.clone(), id, change);
            e.delivery_id = Some(format!(
                "{org15}:{}:{}:{suffix}",
                message.action_id, notification.id
            ));
            e.occurred_at = occurred_at;
            e.referral_code = referral_code.clone();
            e.email = email.clone();
            e.account = Some(message.organization_id.clone());
            e.related = related;
            e
        })
        .collect()
}

fn updated(object: &SObject) -> Change {
    Change::Updated {
        fields: object.field_names(),
    }
}

fn related(kind: ObjectKind, id: Option<&str>) -> Option<EventObject> {
    id.map(|id| EventObject {
        kind,
        id: id.to_owned(),
    })
}

// ---------------------------------------------------------------- reply

/// The SOAP Ack Salesforce needs for an accepted message: the `notificationsResponse`
/// envelope (namespace `http://soap.sforce.com/2005/09/outbound`) with `<Ack>true</Ack>`.
pub(crate) fn ack() -> WebhookReply {
    WebhookReply {
        status: 200,
        content_type: "text/xml; charset=utf-8".into(),
        body: ACK.as_bytes().to_vec(),
    }
}

/// Whether the request looks like an outbound message (a SOAP envelope with notifications):
/// used to decide whether to answer with [`ack`]. True exactly when [`parse`] accepts the
/// body.
pub(crate) fn is_outbound_message(request: &WebhookRequest) -> bool {
    message(&request.body).is_ok()
}

#[cfg(test)]
mod tests;
