use chrono::TimeZone;
use proptest::prelude::*;
use refsync_core::ErrorKind;

use super::*;

// ---------------------------------------------------------------- fixtures and helpers

/// Real outbound message captured from a sandbox org (see the `.source.txt`): one Opportunity
/// notification; the author elided SessionId, EnterpriseUrl and PartnerUrl to `...`.
const SANDBOX: &[u8] =
    include_bytes!("../../tests/fixtures/outbound-message-opportunity-sandbox-capture.xml");
const SANDBOX_SOURCE: &str =
    include_str!("../../tests/fixtures/outbound-message-opportunity-sandbox-capture.source.txt");

/// The capture's organization, as sent (18 characters) and its 15-character form.
const ORG18: &str = "00D5w000004qGTOEA2";
const ORG15: &str = "00D5w000004qGTO";
/// The capture's ActionId and notification Id.
const ACTION: &str = "04k5w000000TSwMAAW";
const NOTIFICATION: &str = "04l5w00005286hAAAQ";

/// Our endpoint token.
const TOKEN: &str = "sf-endpoint-token-9f3c1a7e5b";
const URL: &str = "https://refsync.example/hooks/salesforce?token=sf-endpoint-token-9f3c1a7e5b";

fn token() -> Secret {
    Secret::new(TOKEN)
}

fn orgs(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

fn vopts<'a>(token: &'a Secret, organization_ids: &'a [String]) -> VerifyOptions<'a> {
    VerifyOptions {
        endpoint_token: token,
        organization_ids,
    }
}

fn popts() -> ParseOptions {
    ParseOptions {
        referral_code_field: Some("Referral_Code__c".into()),
    }
}

fn post(url: &str, body: impl Into<Vec<u8>>) -> WebhookRequest {
    WebhookRequest::post(url, body)
        .with_header("Content-Type", "text/xml; charset=utf-8")
        .with_header("SOAPAction", "\"\"")
}

fn verify_with(ids: &[&str], request: &WebhookRequest) -> Result<Verification> {
    let t = token();
    let ids = orgs(ids);
    verify(&vopts(&t, &ids), request)
}

fn unauthorized(result: Result<Verification>) -> String {
    let e = result.expect_err("verify must refuse");
    assert_eq!(e.kind(), &ErrorKind::Unauthorized, "{e}");
    let text = format!("{e} / {e:?}");
    assert!(!text.contains('\n'), "{text}");
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(!text.contains("9f3c1a7e"), "token leaked: {text}");
    e.message().to_owned()
}

fn verified(result: Result<Verification>) -> String {
    match result.expect("verify must accept") {
        Verification::Verified { scheme } => scheme,
        other => panic!("not verified: {other:?}"),
    }
}

fn validation(result: Result<Vec<CrmEvent>>) -> String {
    let e = result.expect_err("parse must refuse");
    assert_eq!(e.kind(), &ErrorKind::Validation, "{e}");
    assert!(!e.message().contains('\n'), "{e:?}");
    e.message().to_owned()
}

fn parse_body(body: impl Into<Vec<u8>>) -> Vec<CrmEvent> {
    parse(&popts(), &post(URL, body)).expect("parse")
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn obj(kind: ObjectKind, id: &str) -> EventObject {
    EventObject {
        kind,
        id: id.to_owned(),
    }
}

/// Escapes text for XML content.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// Synthetic outbound messages. The only public capture is the sandbox Opportunity above, so
// leads (converted or not), contacts, won / lost opportunities, nil values, several
// notifications and other prefixes are built here, following the envelope of Salesforce's
// "Outbound Messaging" docs and that capture: SOAP 1.1 envelope, `notifications` in
// http://soap.sforce.com/2005/09/outbound with OrganizationId, ActionId, SessionId (nillable),
// EnterpriseUrl, PartnerUrl and 1–100 Notification {Id, sObject xsi:type="sf:<Object>"} whose
// fields are in urn:sobject.enterprise.soap.sforce.com. The ids are made up in Salesforce's
// formats (00Q lead, 006 opportunity, 003 contact, 04l notification).

/// The synthetic messages' ActionId.
const SYN_ACTION: &str = "04k5w000000TSxAAAW";

/// A synthetic `Notification`: each field is `(name, Some(text))`, or `(name, None)` for
/// `xsi:nil="true"`.
fn notification(id: &str, object: &str, fields: &[(&str, Option<&str>)]) -> String {
    let fields: String = fields
        .iter()
        .map(|(name, v)| match v {
            Some(v) => format!("<sf:{name}>{}</sf:{name}>\n", esc(v)),
            None => format!("<sf:{name} xsi:nil=\"true\"/>\n"),
        })
        .collect();
    format!(
        "<Notification>\n<Id>{id}</Id>\n<sObject xsi:type=\"sf:{object}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n{fields}</sObject>\n</Notification>\n"
    )
}

/// A synthetic outbound message of `notifications` from the capture's org, with a nil
/// SessionId (the usual case: "Send Session ID" unticked).
fn message_of(notifications: &[String]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{ORG18}</OrganizationId>
   <ActionId>{SYN_ACTION}</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/60.0/{ORG15}</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/60.0/{ORG15}</PartnerUrl>
{}  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
"#,
        notifications.concat()
    )
}

fn converted_lead() -> String {
    notification(
        "04l5w00005286iAAAQ",
        "Lead",
        &[
            ("Id", Some("00Q5w00001tLmNoEAK")),
            ("ConvertedContactId", Some("0035w000035gh1AAAQ")),
            ("ConvertedDate", Some("2024-03-01")),
            ("ConvertedOpportunityId", Some("0065w000023SUvWAAW")),
            ("Email", Some("Ada.Lovelace@Example.COM")),
            ("IsConverted", Some("true")),
            ("LastModifiedDate", Some("2024-03-01T10:15:00.000Z")),
            ("Referral_Code__c", Some("  ADA-42 ")),
            ("Status", Some("Closed - Converted")),
            ("SystemModstamp", Some("2024-03-01T10:15:01.000Z")),
        ],
    )
}

fn opportunity(id: &str, notification_id: &str, fields: &[(&str, Option<&str>)]) -> String {
    let mut all = vec![("Id", Some(id))];
    all.extend_from_slice(fields);
    notification(notification_id, "Opportunity", &all)
}

fn delivery(action: &str, notification: &str, kind: &str) -> String {
    format!("{ORG15}:{action}:{notification}:{kind}")
}

// ---------------------------------------------------------------- the real capture

#[test]
fn the_fixture_is_the_sandbox_capture() {
    assert!(SANDBOX_SOURCE.contains("sandbox"), "{SANDBOX_SOURCE}");
    let text = std::str::from_utf8(SANDBOX).unwrap();
    assert!(text.contains("<soapenv:Body> \n") || text.contains("</soapenv:Body> "));
    assert!(text.contains("<SessionId>...</SessionId>"));
}

#[test]
fn the_sandbox_capture_parses() {
    let events = parse_body(SANDBOX);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.source, "salesforce");
    assert_eq!(e.object, obj(ObjectKind::Deal, "0065w000023STAmAAO"));
    assert_eq!(
        e.change,
        Change::StageChanged {
            pipeline: None,
            from: None,
            to: "Negotiation/Review".into(),
        }
    );
    assert_eq!(e.account.as_deref(), Some(ORG18));
    assert_eq!(e.occurred_at, Some(at(2020, 5, 9, 3, 4, 32)));
    assert_eq!(
        e.delivery_id.as_deref(),
        Some("00D5w000004qGTO:04k5w000000TSwMAAW:04l5w00005286hAAAQ:stage")
    );
    assert_eq!(e.delivery_id, Some(delivery(ACTION, NOTIFICATION, "stage")));
    assert_eq!(
        e.related,
        vec![obj(ObjectKind::Contact, "0035w000035gg9GAAQ")]
    );
    assert_eq!(e.referral_code, None);
    assert_eq!(e.email, None);
    // Without a referral-code field configured, the same.
    let again = parse(&ParseOptions::default(), &post(URL, SANDBOX)).unwrap();
    assert_eq!(again, events);
}

#[test]
fn the_sandbox_capture_verifies_with_the_15_or_18_character_org_id() {
    let request = post(URL, SANDBOX);
    for ids in [
        &[ORG15][..],
        &[ORG18],
        &["00D000000000001", ORG15],
        &[" 00D5w000004qGTO\n"],
        &["00D5w000004qGTOAAA"], // other checksum characters: only the first 15 count
    ] {
        assert_eq!(
            verified(verify_with(ids, &request)),
            "salesforce-token+org",
            "{ids:?}"
        );
    }
}

#[test]
fn the_token_is_read_from_the_query_of_a_path_or_an_absolute_url() {
    for url in [
        "/hooks/salesforce?token=sf-endpoint-token-9f3c1a7e5b",
        "https://refsync.example/hooks/salesforce?instance=a&token=sf-endpoint-token-9f3c1a7e5b#frag",
        "/hooks/salesforce?token=wrong&token=sf-endpoint-token-9f3c1a7e5b",
        // Percent-encoded.
        "/hooks/salesforce?token=sf%2Dendpoint%2dtoken-9f3c1a7e5b",
        "/hooks/salesforce?%74oken=sf-endpoint-token-9f3c1a7e5b",
    ] {
        verified(verify_with(&[ORG15], &post(url, SANDBOX)));
    }
    // A token with reserved characters, sent percent-encoded; `+` stays a plus.
    let t = Secret::new("a+b/c=d&e");
    let ids = orgs(&[ORG15]);
    let request = post("/hooks/salesforce?token=a+b%2Fc%3Dd%26e", SANDBOX);
    verified(verify(&vopts(&t, &ids), &request));
    let spaced = post("/hooks/salesforce?token=a%20b%2Fc%3Dd%26e", SANDBOX);
    assert_eq!(
        unauthorized(verify(&vopts(&t, &ids), &spaced)),
        "endpoint token mismatch"
    );
}

#[test]
fn a_wrong_organization_is_refused() {
    let request = post(URL, SANDBOX);
    for ids in [
        &["00D5w000004qGTP"][..],
        &["00D5w000004qGTPEA2"],
        &["00d5w000004qgto"], // case-sensitive
        &["00D5w000004qGT"],  // shorter than 15: never matches
        &["00D5w000004qGT", "0"],
        &["EA2"],
    ] {
        let m = unauthorized(verify_with(ids, &request));
        assert_eq!(
            m, "message from organization 00D5w000004qGTOEA2, not an allowed one",
            "{ids:?}"
        );
    }
}

#[test]
fn an_empty_allow_list_refuses_everything() {
    let request = post(URL, SANDBOX);
    for ids in [&[][..], &[""], &["  ", ""]] {
        let m = unauthorized(verify_with(ids, &request));
        assert!(m.contains("organization_ids"), "{m}");
    }
}

#[test]
fn a_wrong_or_missing_token_is_refused() {
    for url in [
        "/hooks/salesforce?token=sf-endpoint-token-9f3c1a7e5c",
        "/hooks/salesforce?token=sf-endpoint-token-9f3c1a7e5b%20",
        "/hooks/salesforce?token=SF-ENDPOINT-TOKEN-9F3C1A7E5B",
        "/hooks/salesforce?token=sf-endpoint-token",
        "/hooks/salesforce?token=guess&token=another",
    ] {
        assert_eq!(
            unauthorized(verify_with(&[ORG15], &post(url, SANDBOX))),
            "endpoint token mismatch",
            "{url}"
        );
    }
    for url in [
        "/hooks/salesforce",
        "https://refsync.example/hooks/salesforce",
        "/hooks/salesforce?",
        "/hooks/salesforce?token=",
        "/hooks/salesforce?token",
        "/hooks/salesforce?tok=sf-endpoint-token-9f3c1a7e5b",
        "/hooks/salesforce?xtoken=sf-endpoint-token-9f3c1a7e5b",
        "/hooks/salesforce#token=sf-endpoint-token-9f3c1a7e5b",
    ] {
        assert_eq!(
            unauthorized(verify_with(&[ORG15], &post(url, SANDBOX))),
            "the endpoint URL carries no token (…?token=<secret>)",
            "{url}"
        );
    }
    // The token in a header does not count.
    let request = post("/hooks/salesforce", SANDBOX).with_header("X-Refsync-Token", TOKEN);
    unauthorized(verify_with(&[ORG15], &request));
}

#[test]
fn an_empty_configured_token_refuses_everything() {
    let empty = Secret::new("");
    let ids = orgs(&[ORG15]);
    for url in ["/hooks/salesforce?token=", "/hooks/salesforce", URL] {
        let m = unauthorized(verify(&vopts(&empty, &ids), &post(url, SANDBOX)));
        assert!(m.contains("endpoint token is empty"), "{m}");
    }
}

#[test]
fn verify_refuses_what_is_not_an_outbound_message() {
    for body in [
        &b""[..],
        b"{\"OrganizationId\": \"00D5w000004qGTOEA2\"}",
        b"<notifications/>",
        ACK.as_bytes(),
    ] {
        assert_eq!(
            unauthorized(verify_with(&[ORG15], &post(URL, body))),
            "not a Salesforce outbound message"
        );
    }
}

#[test]
fn the_token_never_appears_in_errors() {
    // `unauthorized` checks `{}` and `{:?}` of every refusal; here the token is also the
    // wrong value sent and a near miss.
    let near = format!("/hooks/salesforce?token={TOKEN}x");
    let m = unauthorized(verify_with(&[ORG15], &post(&near, SANDBOX)));
    assert!(!m.contains(TOKEN));
    let m = unauthorized(verify_with(&["00D000000000001"], &post(URL, SANDBOX)));
    assert!(!m.contains(TOKEN));
    let m = unauthorized(verify_with(&[ORG15], &post(URL, "<x/>")));
    assert!(!m.contains(TOKEN));
    let e = verify_with(&[ORG15], &post(&near, SANDBOX)).unwrap_err();
    let request = format!("{:?}", post(URL, SANDBOX));
    assert!(!request.contains(TOKEN), "{request}");
    assert!(!format!("{e:?}").contains("9f3c1a7e"));
}

// ---------------------------------------------------------------- synthetic messages

#[test]
fn a_converted_lead_is_a_lead_conversion_with_its_deal_and_contact() {
    let body = message_of(&[converted_lead()]);
    let events = parse_body(body.clone());
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.object, obj(ObjectKind::Lead, "00Q5w00001tLmNoEAK"));
    assert_eq!(
        e.change,
        Change::LeadConverted {
            lead_id: "00Q5w00001tLmNoEAK".into(),
            deal_id: Some("0065w000023SUvWAAW".into()),
        }
    );
    assert_eq!(
        e.related,
        vec![
            obj(ObjectKind::Contact, "0035w000035gh1AAAQ"),
            obj(ObjectKind::Deal, "0065w000023SUvWAAW"),
        ]
    );
    assert_eq!(e.referral_code.as_deref(), Some("ADA-42"));
    assert_eq!(e.email.as_deref(), Some("ada.lovelace@example.com"));
    assert_eq!(e.account.as_deref(), Some(ORG18));
    assert_eq!(e.occurred_at, Some(at(2024, 3, 1, 10, 15, 0)));
    assert_eq!(
        e.delivery_id,
        Some(delivery(SYN_ACTION, "04l5w00005286iAAAQ", "converted"))
    );
    // Verified like the capture.
    verified(verify_with(&[ORG15], &post(URL, body)));
}

#[test]
fn a_lead_converted_without_an_opportunity_has_no_deal() {
    let lead = notification(
        "04l5w00005286jAAAQ",
        "Lead",
        &[
            ("Id", Some("00Q5w00001tLmNpEAK")),
            ("IsConverted", Some("true")),
            ("ConvertedOpportunityId", None),
            ("ConvertedContactId", Some("0035w000035gh2AAAQ")),
        ],
    );
    let events = parse_body(message_of(&[lead]));
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].change,
        Change::LeadConverted {
            lead_id: "00Q5w00001tLmNpEAK".into(),
            deal_id: None,
        }
    );
    assert_eq!(
        events[0].related,
        vec![obj(ObjectKind::Contact, "0035w000035gh2AAAQ")]
    );
    assert_eq!(events[0].occurred_at, None);
}

#[test]
fn an_unconverted_lead_is_an_update_of_its_fields() {
    let lead = notification(
        "04l5w00005286kAAAQ",
        "Lead",
        &[
            ("Id", Some("00Q5w00001tLmNqEAK")),
            ("Status", Some("Working - Contacted")),
            ("IsConverted", Some("false")),
            ("Email", Some(" Grace@Example.org ")),
            ("Company", None),
            ("Referral_Code__c", Some("")),
            ("SystemModstamp", Some("2024-03-02T08:00:00.000Z")),
        ],
    );
    let events = parse_body(message_of(&[lead]));
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.object, obj(ObjectKind::Lead, "00Q5w00001tLmNqEAK"));
    assert_eq!(
        e.change,
        Change::Updated {
            fields: vec![
                "Email".into(),
                "IsConverted".into(),
                "Status".into(),
                "SystemModstamp".into()
            ],
        }
    );
    assert_eq!(e.email.as_deref(), Some("grace@example.org"));
    assert_eq!(e.referral_code, None);
    assert!(e.related.is_empty());
    // LastModifiedDate absent: SystemModstamp.
    assert_eq!(e.occurred_at, Some(at(2024, 3, 2, 8, 0, 0)));
    assert_eq!(
        e.delivery_id,
        Some(delivery(SYN_ACTION, "04l5w00005286kAAAQ", "updated"))
    );
}

#[test]
fn a_won_opportunity_is_a_stage_change_and_a_won_status() {
    let won = opportunity(
        "0065w000023SUvWAAW",
        "04l5w00005286lAAAQ",
        &[
            ("ContactId", Some("0035w000035gh1AAAQ")),
            ("IsClosed", Some("true")),
            ("IsWon", Some("true")),
            ("LastModifiedDate", Some("2024-03-05T12:00:00Z")),
            ("Referral_Code__c", Some("ADA-42")),
            // Orgs rename stages: the label is reported as it is, `won` comes from IsWon.
            ("StageName", Some("Ganada & Cerrada")),
        ],
    );
    let events = parse_body(message_of(&[won]));
    assert_eq!(events.len(), 2, "{events:?}");
    let contact = vec![obj(ObjectKind::Contact, "0035w000035gh1AAAQ")];
    assert_eq!(
        events[0].change,
        Change::StageChanged {
            pipeline: None,
            from: None,
            to: "Ganada & Cerrada".into(),
        }
    );
    assert_eq!(
        events[1].change,
        Change::StatusChanged {
            from: None,
            to: "won".into(),
        }
    );
    for (e, kind) in events.iter().zip(["stage", "status"]) {
        assert_eq!(e.object, obj(ObjectKind::Deal, "0065w000023SUvWAAW"));
        assert_eq!(e.related, contact);
        assert_eq!(e.referral_code.as_deref(), Some("ADA-42"));
        assert_eq!(e.email, None);
        assert_eq!(e.account.as_deref(), Some(ORG18));
        assert_eq!(e.occurred_at, Some(at(2024, 3, 5, 12, 0, 0)));
        assert_eq!(
            e.delivery_id,
            Some(delivery(SYN_ACTION, "04l5w00005286lAAAQ", kind))
        );
    }
    assert_ne!(events[0].delivery_id, events[1].delivery_id);
}

#[test]
fn a_closed_opportunity_that_is_not_won_is_lost() {
    let lost = opportunity(
        "0065w000023SUvXAAW",
        "04l5w00005286mAAAQ",
        &[
            ("IsClosed", Some("true")),
            ("IsWon", Some("false")),
            ("StageName", Some("Closed Lost")),
        ],
    );
    let events = parse_body(message_of(&[lost]));
    let changes: Vec<&Change> = events.iter().map(|e| &e.change).collect();
    assert_eq!(
        changes,
        [
            &Change::StageChanged {
                pipeline: None,
                from: None,
                to: "Closed Lost".into(),
            },
            &Change::StatusChanged {
                from: None,
                to: "lost".into(),
            },
        ]
    );
    assert!(events[0].related.is_empty());

    // Without a stage field in the message: the status alone.
    let closed = opportunity(
        "0065w000023SUvYAAW",
        "04l5w00005286nAAAQ",
        &[("IsClosed", Some("true")), ("IsWon", Some("false"))],
    );
    let events = parse_body(message_of(&[closed]));
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].change,
        Change::StatusChanged {
            from: None,
            to: "lost".into(),
        }
    );
    assert_eq!(
        events[0].delivery_id,
        Some(delivery(SYN_ACTION, "04l5w00005286nAAAQ", "status"))
    );
}

#[test]
fn an_open_opportunity_without_a_stage_is_an_update() {
    let open = opportunity(
        "0065w000023SUvZAAW",
        "04l5w00005286oAAAQ",
        &[
            ("Amount", Some("1200.0")),
            ("IsClosed", Some("false")),
            ("StageName", None),
            ("ContactId", Some("0035w000035gh3AAAQ")),
        ],
    );
    let events = parse_body(message_of(&[open]));
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].change,
        Change::Updated {
            fields: vec!["Amount".into(), "ContactId".into(), "IsClosed".into()],
        }
    );
    assert_eq!(
        events[0].related,
        vec![obj(ObjectKind::Contact, "0035w000035gh3AAAQ")]
    );
    assert_eq!(
        events[0].delivery_id,
        Some(delivery(SYN_ACTION, "04l5w00005286oAAAQ", "updated"))
    );
}

#[test]
fn a_contact_is_an_update_with_email_and_code() {
    let contact = notification(
        "04l5w00005286pAAAQ",
        "Contact",
        &[
            ("Id", Some("0035w000035gh1AAAQ")),
            ("Email", Some("ADA@example.com")),
            ("Referral_Code__c", Some("ADA-42")),
            ("LastModifiedDate", Some("not a date")),
            ("SystemModstamp", Some("2024-03-06T09:30:00.000+02:00")),
        ],
    );
    let events = parse_body(message_of(&[contact]));
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.object, obj(ObjectKind::Contact, "0035w000035gh1AAAQ"));
    assert_eq!(
        e.change,
        Change::Updated {
            fields: vec![
                "Email".into(),
                "LastModifiedDate".into(),
                "Referral_Code__c".into(),
                "SystemModstamp".into()
            ],
        }
    );
    assert_eq!(e.email.as_deref(), Some("ada@example.com"));
    assert_eq!(e.referral_code.as_deref(), Some("ADA-42"));
    // An unreadable LastModifiedDate falls back to SystemModstamp.
    assert_eq!(e.occurred_at, Some(at(2024, 3, 6, 7, 30, 0)));
    // Another referral-code field: none.
    let other = ParseOptions {
        referral_code_field: Some("Code__c".into()),
    };
    let events = parse(
        &other,
        &post(
            URL,
            message_of(&[notification(
                "04l5w00005286pAAAQ",
                "Contact",
                &[
                    ("Id", Some("0035w000035gh1AAAQ")),
                    ("Referral_Code__c", Some("X")),
                ],
            )]),
        ),
    )
    .unwrap();
    assert_eq!(events[0].referral_code, None);
}

#[test]
fn nil_values_are_absent() {
    // The synthetic messages all have `<SessionId xsi:nil="true"/>`; here the fields are nil.
    let lead = notification(
        "04l5w00005286qAAAQ",
        "Lead",
        &[
            ("Id", Some("00Q5w00001tLmNrEAK")),
            ("Email", None),
            ("IsConverted", Some("true")),
            ("ConvertedContactId", None),
            ("ConvertedOpportunityId", None),
            ("Referral_Code__c", None),
            ("LastModifiedDate", None),
        ],
    );
    let body = message_of(&[lead]);
    assert!(body.contains(r#"<SessionId xsi:nil="true"/>"#));
    let events = parse_body(body.clone());
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        e.change,
        Change::LeadConverted {
            lead_id: "00Q5w00001tLmNrEAK".into(),
            deal_id: None,
        }
    );
    assert!(e.related.is_empty());
    assert_eq!(
        (&e.email, &e.referral_code, e.occurred_at),
        (&None, &None, None)
    );
    verified(verify_with(&[ORG15], &post(URL, body)));
}

#[test]
fn nil_wins_over_content() {
    // A nil element's content means nothing (XML Schema): it stays absent even with text.
    let body = message_of(&[opportunity(
        "0065w000023SUw0AAG",
        "04l5w00005286rAAAQ",
        &[("IsClosed", Some("false"))],
    )])
    .replace(
        "<sf:IsClosed>false</sf:IsClosed>",
        r#"<sf:IsClosed>false</sf:IsClosed><sf:StageName xsi:nil="true">Prospecting</sf:StageName><sf:IsWon xsi:nil="1">true</sf:IsWon>"#,
    );
    let events = parse_body(body);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].change,
        Change::Updated {
            fields: vec!["IsClosed".into()],
        }
    );
}

#[test]
fn a_session_id_may_be_set_nil_or_left_out() {
    let body = message_of(&[converted_lead()]);
    let expected = parse_body(body.clone());
    for session in [
        "",
        "<SessionId>00D5w000004qGTO!AQ4AQFake.Session</SessionId>",
        "<SessionId></SessionId>",
    ] {
        let variant = body.replace(r#"<SessionId xsi:nil="true"/>"#, session);
        assert_ne!(variant, body);
        assert_eq!(parse_body(variant.clone()), expected, "{session}");
        verified(verify_with(&[ORG15], &post(URL, variant)));
    }
}

#[test]
fn several_notifications_give_events_in_document_order() {
    let body = message_of(&[
        converted_lead(),
        opportunity(
            "0065w000023SUvWAAW",
            "04l5w00005286sAAAQ",
            &[
                ("IsWon", Some("true")),
                ("IsClosed", Some("true")),
                ("StageName", Some("Closed Won")),
            ],
        ),
        notification(
            "04l5w00005286tAAAQ",
            "Contact",
            &[("Id", Some("0035w000035gh1AAAQ"))],
        ),
    ]);
    let events = parse_body(body.clone());
    let got: Vec<(String, &str, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                format!("{}/{}", e.object.kind, e.object.id),
                e.change.type_name(),
                e.delivery_id.as_deref(),
            )
        })
        .collect();
    let ids = [
        delivery(SYN_ACTION, "04l5w00005286iAAAQ", "converted"),
        delivery(SYN_ACTION, "04l5w00005286sAAAQ", "stage"),
        delivery(SYN_ACTION, "04l5w00005286sAAAQ", "status"),
        delivery(SYN_ACTION, "04l5w00005286tAAAQ", "updated"),
    ];
    assert_eq!(
        got,
        vec![
            (
                "lead/00Q5w00001tLmNoEAK".into(),
                "lead_converted",
                Some(ids[0].as_str())
            ),
            (
                "deal/0065w000023SUvWAAW".into(),
                "stage_changed",
                Some(ids[1].as_str())
            ),
            (
                "deal/0065w000023SUvWAAW".into(),
                "status_changed",
                Some(ids[2].as_str())
            ),
            (
                "contact/0035w000035gh1AAAQ".into(),
                "updated",
                Some(ids[3].as_str())
            ),
        ]
    );
    assert_eq!(events[3].change, Change::Updated { fields: Vec::new() });
    verified(verify_with(&[ORG18], &post(URL, body)));
}

#[test]
fn a_resent_message_gives_the_same_delivery_ids() {
    let body = message_of(&[
        converted_lead(),
        opportunity(
            "0065w000023SUvWAAW",
            "04l5w00005286sAAAQ",
            &[("IsWon", Some("true")), ("StageName", Some("Closed Won"))],
        ),
    ]);
    let first = parse_body(body.clone());
    let second = parse_body(body.clone());
    assert_eq!(first, second);
    // A resend reads the record again: newer data, other whitespace, same ids.
    let resent = body
        .replace("2024-03-01T10:15:00.000Z", "2024-03-01T11:00:00.000Z")
        .replace("\n", "\r\n  ");
    let third = parse_body(resent);
    let ids = |events: &[CrmEvent]| -> Vec<Option<String>> {
        events.iter().map(|e| e.delivery_id.clone()).collect()
    };
    assert_eq!(ids(&first), ids(&third));
    assert_ne!(first[0].occurred_at, third[0].occurred_at);
    // All distinct.
    let mut all = ids(&first);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), first.len());
    // A 15-character OrganizationId gives the same ids as the 18-character one.
    let short = parse_body(body.replace(ORG18, ORG15));
    assert_eq!(ids(&first), ids(&short));
    assert_eq!(short[0].account.as_deref(), Some(ORG15));
}

#[test]
fn other_objects_give_no_events() {
    let account = notification(
        "04l5w00005286uAAAQ",
        "Account",
        &[("Id", Some("0015w00002BFDeLAAX")), ("Name", Some("Acme"))],
    );
    let body = message_of(std::slice::from_ref(&account));
    assert_eq!(parse_body(body.clone()), Vec::new());
    verified(verify_with(&[ORG15], &post(URL, body)));
    // Mixed with a known object, only the known one.
    let events = parse_body(message_of(&[account, converted_lead()]));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object.kind, ObjectKind::Lead);
    // A custom object, an sObject without type or without Id.
    let custom = notification(
        "04l5w00005286vAAAQ",
        "Referral__c",
        &[("Id", Some("a005w0000"))],
    );
    let no_id = notification("04l5w00005286wAAAQ", "Lead", &[("Email", Some("x@y.z"))]);
    let untyped = message_of(&[converted_lead()]).replace(r#" xsi:type="sf:Lead""#, "");
    assert_eq!(parse_body(message_of(&[custom, no_id])), Vec::new());
    assert_eq!(parse_body(untyped), Vec::new());
}

#[test]
fn other_prefixes_parse_the_same() {
    let body = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
<s:Header/>
<s:Body><ns2:notifications xmlns:ns2="http://soap.sforce.com/2005/09/outbound">
<ns2:OrganizationId>{ORG18}</ns2:OrganizationId><ns2:ActionId>{ACTION}</ns2:ActionId>
<ns2:SessionId i:nil="true"/>
<ns2:Notification><ns2:Id>{NOTIFICATION}</ns2:Id>
<ns2:sObject i:type="ent:Opportunity" xmlns:ent="urn:sobject.enterprise.soap.sforce.com">
<ent:Id>0065w000023STAmAAO</ent:Id><ent:ContactId>0035w000035gg9GAAQ</ent:ContactId>
<ent:StageName><![CDATA[Negotiation/Review]]></ent:StageName>
<ent:IsWon i:nil="true">true</ent:IsWon>
<ent:LastModifiedDate>2020-05-09T03:04:32.000Z</ent:LastModifiedDate>
</ns2:sObject></ns2:Notification></ns2:notifications></s:Body></s:Envelope>"#
    );
    let events = parse_body(body.clone());
    assert_eq!(events, parse_body(SANDBOX));
    verified(verify_with(&[ORG15], &post(URL, body)));
}

#[test]
fn names_in_other_namespaces_do_not_count() {
    let text = std::str::from_utf8(SANDBOX).unwrap();
    // `notifications` without its namespace.
    let bare = text.replace(
        r#"<notifications xmlns="http://soap.sforce.com/2005/09/outbound">"#,
        "<notifications>",
    );
    validation(parse(&popts(), &post(URL, bare)));
    // The envelope in SOAP 1.2's namespace.
    let soap12 = text.replace(
        "http://schemas.xmlsoap.org/soap/envelope/",
        "http://www.w3.org/2003/05/soap-envelope",
    );
    assert!(validation(parse(&popts(), &post(URL, soap12))).contains("SOAP envelope"));
    // Fields in the partner namespace are not fields.
    let partner = text.replace(
        "urn:sobject.enterprise.soap.sforce.com",
        "urn:sobject.partner.soap.sforce.com",
    );
    assert_eq!(parse_body(partner), Vec::new());
}

#[test]
fn a_dtd_is_refused_without_expansion() {
    // Billion laughs: with expansion this would be 10^9 "lol"s.
    let bomb = format!(
        r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
{}"#,
        message_of(&[notification(
            "04l5w00005286xAAAQ",
            "Lead",
            &[("Id", Some("00Q5w00001tLmNsEAK")), ("Status", Some("X"))],
        )])
        .trim_start_matches(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
        .replace("<sf:Status>X</sf:Status>", "<sf:Status>&lol9;</sf:Status>")
    );
    // A harmless internal entity and an external one (XXE) are refused the same way: any DTD.
    let message = message_of(&[converted_lead()]);
    let body_only = message.trim_start_matches(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let internal = format!(
        "<!DOCTYPE soapenv:Envelope [<!ENTITY org \"{ORG18}\">]>{}",
        body_only.replace(&format!(">{ORG18}<"), ">&org;<")
    );
    let external = format!(
        "<!DOCTYPE soapenv:Envelope [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}",
        body_only.replace("Closed - Converted", "&xxe;")
    );
    for body in [bomb, internal, external] {
        let m = validation(parse(&popts(), &post(URL, body.clone())));
        assert!(m.contains("DTD"), "{m}");
        assert!(!is_outbound_message(&post(URL, body.clone())));
        assert_eq!(
            unauthorized(verify_with(&[ORG15], &post(URL, body))),
            "not a Salesforce outbound message"
        );
    }
}

#[test]
fn predefined_entities_and_character_references_are_read() {
    let body = message_of(&[opportunity(
        "0065w000023SUw1AAG",
        "04l5w00005286yAAAQ",
        &[("StageName", Some("R&D <Review>"))],
    )])
    .replace("R&amp;D", "R&#38;D");
    let events = parse_body(body);
    assert_eq!(
        events[0].change,
        Change::StageChanged {
            pipeline: None,
            from: None,
            to: "R&D <Review>".into(),
        }
    );
}

#[test]
fn bodies_over_max_body_are_refused_before_parsing() {
    let mut big = SANDBOX.to_vec();
    big.resize(MAX_BODY, b' ');
    assert_eq!(parse_body(big.clone()), parse_body(SANDBOX));
    verified(verify_with(&[ORG15], &post(URL, big.clone())));
    big.push(b' ');
    let m = validation(parse(&popts(), &post(URL, big.clone())));
    assert!(m.contains("1048576"), "{m}");
    assert!(!is_outbound_message(&post(URL, big.clone())));
    assert_eq!(
        unauthorized(verify_with(&[ORG15], &post(URL, big))),
        "not a Salesforce outbound message"
    );
}

#[test]
fn what_is_not_an_outbound_message_is_a_validation_error() {
    let text = std::str::from_utf8(SANDBOX).unwrap();
    let many: Vec<String> = (0..101)
        .map(|i| {
            notification(
                &format!("04l5w00005{i:06}AAQ"),
                "Contact",
                &[("Id", Some("0035w000035gh1AAAQ"))],
            )
        })
        .collect();
    let hundred = message_of(&many[..100]);
    assert_eq!(parse_body(hundred).len(), 100);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "not well-formed"),
        (b"{\"a\":1}".to_vec(), "not well-formed"),
        (vec![0xff, 0xfe, b'<'], "UTF-8"),
        (b"<Envelope/>".to_vec(), "SOAP envelope"),
        (
            b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body/></s:Envelope>"
                .to_vec(),
            "notifications",
        ),
        (ACK.as_bytes().to_vec(), "notifications"),
        (text.replace(ORG18, "").into_bytes(), "OrganizationId"),
        (text.replace(ORG18, "00D5w000004qGTOE").into_bytes(), "OrganizationId"),
        (text.replace(ORG18, "00D5w000004qGTO:A2").into_bytes(), "OrganizationId"),
        (text.replace(ACTION, " ").into_bytes(), "ActionId"),
        (text.replace(NOTIFICATION, "").into_bytes(), "Id"),
        (message_of(&[]).into_bytes(), "no Notification"),
        (message_of(&many).into_bytes(), "101"),
        (text.replace("</soapenv:Envelope>", "").into_bytes(), "not well-formed"),
        (text.replace("xmlns:sf=", "xmlns:sx=").into_bytes(), "not well-formed"),
    ];
    for (body, needle) in cases {
        let request = post(URL, body);
        let m = validation(parse(&popts(), &request));
        assert!(m.contains(needle), "{needle}: {m}");
        assert!(!is_outbound_message(&request), "{m}");
    }
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let mut body = "\u{feff}".as_bytes().to_vec();
    body.extend_from_slice(SANDBOX);
    assert_eq!(parse_body(body), parse_body(SANDBOX));
}

// ---------------------------------------------------------------- ack

#[test]
fn the_ack_is_the_notifications_response() {
    let reply = ack();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "text/xml; charset=utf-8");
    assert_eq!(
        std::str::from_utf8(&reply.body).unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soapenv:Body>\
         <notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\">\
         <Ack>true</Ack>\
         </notificationsResponse>\
         </soapenv:Body>\
         </soapenv:Envelope>"
    );
    // Namespaces as Salesforce reads them.
    let text = std::str::from_utf8(&reply.body).unwrap();
    let doc = Document::parse(text).unwrap();
    let response = child(doc.root_element(), SOAP_NS, "Body")
        .and_then(|b| child(b, OUTBOUND_NS, "notificationsResponse"))
        .unwrap();
    let ack = child(response, OUTBOUND_NS, "Ack").unwrap();
    assert_eq!(ack.text(), Some("true"));
}

#[test]
fn outbound_messages_are_recognised() {
    assert!(is_outbound_message(&post(URL, SANDBOX)));
    assert!(is_outbound_message(&post(
        "/x",
        message_of(&[converted_lead()])
    )));
    // Even a message of objects refsync ignores still needs its Ack.
    assert!(is_outbound_message(&post(
        URL,
        message_of(&[notification("04l5w00005286zAAAQ", "Task", &[])])
    )));
    for body in [
        &b""[..],
        b"{}",
        b"<notifications xmlns=\"http://soap.sforce.com/2005/09/outbound\"/>",
        ACK.as_bytes(),
        b"<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body/></soapenv:Envelope>",
    ] {
        assert!(!is_outbound_message(&post(URL, body)));
    }
}

// ---------------------------------------------------------------- helpers

#[test]
fn percent_decoding_keeps_invalid_escapes() {
    assert_eq!(percent_decode(b"a%2Fb%2fc"), b"a/b/c");
    assert_eq!(percent_decode(b"%"), b"%");
    assert_eq!(percent_decode(b"%4"), b"%4");
    assert_eq!(percent_decode(b"%zz%41"), b"%zzA");
    assert_eq!(percent_decode(b"a+b"), b"a+b");
    assert_eq!(percent_decode("é%C3%A9".as_bytes()), "éé".as_bytes());
}

#[test]
fn error_text_is_one_line() {
    assert_eq!(one_line("a\nb\r\tc"), "a b  c");
    assert_eq!(one_line(&"x".repeat(500)).len(), 160);
}

// ---------------------------------------------------------------- properties

fn check(request: &WebhookRequest, ids: &[String], field: Option<String>) {
    let t = token();
    let verdict = verify(&vopts(&t, ids), request);
    if let Err(e) = &verdict {
        assert_eq!(e.kind(), &ErrorKind::Unauthorized);
        assert!(!e.message().contains('\n'));
        assert!(!format!("{e} {e:?}").contains(TOKEN));
    }
    let parsed = parse(
        &ParseOptions {
            referral_code_field: field,
        },
        request,
    );
    assert_eq!(is_outbound_message(request), parsed.is_ok());
    match parsed {
        Ok(events) => {
            for e in events {
                assert_eq!(e.source, "salesforce");
                assert!(e.delivery_id.is_some());
                assert!(!e.object.id.is_empty());
                assert!(e.account.is_some());
            }
        }
        Err(e) => {
            assert_eq!(e.kind(), &ErrorKind::Validation);
            assert!(!e.message().contains('\n'), "{e:?}");
            assert!(verdict.is_err(), "verify accepted what parse refuses");
        }
    }
}

fn arb_url() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(URL.to_owned()),
        ".{0,40}",
        "/[a-z_%0-9A-F?=&+#]{0,40}",
        "[a-z%0-9=&]{0,20}".prop_map(|q| format!("/h?{q}&token={TOKEN}")),
    ]
}

fn arb_ids() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![Just(ORG15.to_owned()), Just(ORG18.to_owned()), ".{0,20}"],
        0..3,
    )
}

/// Pieces inserted into the capture: markup that changes the meaning or breaks the XML.
const SNIPPETS: &[&str] = &[
    "<",
    ">",
    "</",
    "&",
    "&amp;",
    "&#0;",
    "&#x1F600;",
    "<!DOCTYPE x>",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    " xsi:nil=\"true\"",
    " xmlns=\"\"",
    " xmlns:sf=\"urn:other\"",
    "<sf:IsWon>true</sf:IsWon>",
    "<sf:IsConverted>true</sf:IsConverted>",
    "<Notification><Id>04l</Id></Notification>",
    "\u{feff}",
    "é",
    ":",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_and_verify_never_panic_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..1024),
        url in arb_url(),
        ids in arb_ids(),
        field in prop::option::of(prop_oneof![Just("Referral_Code__c".to_owned()), ".{0,6}"]),
    ) {
        check(&post(&url, body), &ids, field);
    }

    #[test]
    fn parse_and_verify_never_panic_on_a_truncated_capture(
        cut in 0..=SANDBOX.len(),
        ids in arb_ids(),
    ) {
        check(&post(URL, &SANDBOX[..cut]), &ids, Some("Referral_Code__c".into()));
    }

    #[test]
    fn parse_and_verify_never_panic_on_a_capture_with_flipped_bytes(
        flips in prop::collection::vec((0..SANDBOX.len(), any::<u8>()), 1..8),
        ids in arb_ids(),
    ) {
        let mut body = SANDBOX.to_vec();
        for (at, byte) in flips {
            body[at] = byte;
        }
        check(&post(URL, body), &ids, Some("Referral_Code__c".into()));
    }

    #[test]
    fn parse_and_verify_never_panic_on_a_capture_with_inserted_markup(
        inserts in prop::collection::vec((0..SANDBOX.len(), prop::sample::select(SNIPPETS)), 1..5),
        ids in arb_ids(),
    ) {
        let mut body = SANDBOX.to_vec();
        for (at, snippet) in inserts {
            let at = at.min(body.len());
            body.splice(at..at, snippet.bytes());
        }
        check(&post(URL, body), &ids, Some("Referral_Code__c".into()));
    }

    #[test]
    fn a_synthetic_message_with_the_right_token_and_org_always_verifies(
        stage in prop::option::of("[ -~]{1,30}"),
        won in prop::option::of(any::<bool>()),
        closed in prop::option::of(any::<bool>()),
        code in prop::option::of("[A-Za-z0-9-]{1,12}"),
    ) {
        let bool_text = |b: bool| if b { "true" } else { "false" };
        let fields = [
            ("StageName", stage.as_deref()),
            ("IsWon", won.map(bool_text)),
            ("IsClosed", closed.map(bool_text)),
            ("Referral_Code__c", code.as_deref()),
        ];
        let body = message_of(&[opportunity("0065w000023SUw2AAG", "04l5w000052870AAAQ", &fields)]);
        let request = post(URL, body);
        prop_assert_eq!(verified(verify_with(&[ORG15], &request)), "salesforce-token+org");
        let events = parse(&popts(), &request).unwrap();
        prop_assert!(!events.is_empty() && events.len() <= 2);
        let stage = stage.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let has_stage = events.iter().any(|e| matches!(&e.change, Change::StageChanged { to, .. } if Some(to) == stage.as_ref()));
        prop_assert_eq!(has_stage, stage.is_some());
        let status = events.iter().find_map(|e| match &e.change {
            Change::StatusChanged { to, .. } => Some(to.clone()),
            _ => None,
        });
        let expected = if won == Some(true) { Some("won") } else if closed == Some(true) { Some("lost") } else { None };
        prop_assert_eq!(status.as_deref(), expected);
    }
}
