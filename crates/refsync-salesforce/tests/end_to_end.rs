//! The Salesforce story through real parts: the engine (SQLite file store) serving its webhook
//! endpoint on loopback, the Salesforce connector talking HTTP to the testkit's Salesforce
//! simulator (JWT bearer flow, sObjects, collections, SOQL), the simulator sending outbound
//! messages to the engine and checking its Ack, and the embedded ledger as the platform.
//!
//! Bob, invited by Ann, is pushed as a lead. A salesperson converts him with an opportunity
//! and wins it: the referral qualifies exactly once — also when Salesforce resends a message.

use std::sync::Arc;

use refsync_core::{
    CampaignRef, DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, ReferredUser, Registry,
    RuleSpec, WebhookRequest,
};
use refsync_engine::Instance;
use refsync_engine::testing::{LoopbackEngine, sqlite_engine};
use refsync_ledger::testing::Friends;
use refsync_ledger::{Ledger, User};
use refsync_testkit::salesforce::{
    OutboundMessage, SalesforceSim, SalesforceSimOptions, TEST_PRIVATE_KEY_PEM,
};
use refsync_testkit::sim::send_webhook;
use serde_json::json;

const CLIENT_ID: &str = "3MVG9e2e";
const CLIENT_SECRET: &str = "e2e-client-secret-salesforce";
const REFRESH_TOKEN: &str = "e2e-refresh-token";
const USERNAME: &str = "integration@acme.example";
const ENDPOINT_TOKEN: &str = "e2e-endpoint-token-0123456789abcdef";
const INSTANCE: &str = "crm";

struct World {
    live: LoopbackEngine,
    sim: SalesforceSim,
    ledger: Ledger,
    campaign: i64,
    bob: User,
    /// The outbound message endpoint, with its token.
    endpoint: String,
    _dir: tempfile::TempDir,
}

async fn world(rules: &[&str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let Friends {
        ledger,
        campaign,
        bob,
        ..
    } = Friends::open(dir.path(), "Spring friends", &[], "bob@example.com")
        .await
        .unwrap();
    let mut opts = SalesforceSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN);
    opts.jwt_username = USERNAME.to_owned();
    let org = opts.organization_id.clone();
    let sim = SalesforceSim::start(opts).await.unwrap();
    let key = dir.path().join("salesforce.pem");
    std::fs::write(&key, TEST_PRIVATE_KEY_PEM).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!(
        "http://{}/hooks/{INSTANCE}?token={ENDPOINT_TOKEN}",
        listener.local_addr().unwrap()
    );
    let mut registry = Registry::new();
    refsync_salesforce::register(&mut registry);
    let connector = registry
        .build_connector(
            "salesforce",
            &json!({
                "auth": { "type": "jwt_bearer", "client_id": CLIENT_ID, "username": USERNAME,
                          "private_key_file": key.display().to_string(), "login_url": sim.base_url() },
                "endpoint_token": ENDPOINT_TOKEN,
                // The 15-character form of the org id.
                "organization_ids": [&org[..15]],
            }),
        )
        .unwrap();
    let rules = rules
        .iter()
        .map(|r| {
            serde_json::from_str::<RuleSpec>(r)
                .unwrap()
                .build()
                .unwrap()
        })
        .collect();
    let push = PushSpec {
        object: ObjectKind::Lead,
        fields: FieldMapping::from_pairs([
            ("Email", "{Email}"),
            ("FirstName", "{First Name}"),
            ("Referral_Code__c", "{Referral Code}"),
        ])
        .unwrap(),
        duplicates: DuplicatePolicy::UpdateExisting,
        defaults: serde_json::from_value(json!({"LeadSource": "Referral"})).unwrap(),
    };
    let instance = Instance::new(
        INSTANCE,
        connector,
        rules,
        Some(campaign.to_string()),
        Some(push),
    );
    let engine = sqlite_engine(dir.path(), Arc::new(ledger.clone()), vec![instance]).await;
    let live = LoopbackEngine::serve_on(listener, engine).unwrap();
    // The admin's outbound messages (workflow rules on create and edit).
    sim.add_outbound_message(
        "Lead",
        &[
            "Id",
            "Email",
            "Referral_Code__c",
            "IsConverted",
            "ConvertedOpportunityId",
            "ConvertedContactId",
            "LastModifiedDate",
        ],
        &endpoint,
        false,
    );
    sim.add_outbound_message(
        "Opportunity",
        &[
            "Id",
            "StageName",
            "IsClosed",
            "IsWon",
            "ContactId",
            "LastModifiedDate",
        ],
        &endpoint,
        false,
    );
    World {
        live,
        sim,
        ledger,
        campaign,
        bob,
        endpoint,
        _dir: dir,
    }
}

fn referred(name: &str, email: &str, code: &str, campaign: i64) -> ReferredUser {
    ReferredUser {
        first_name: name.into(),
        email: email.into(),
        referral_code: code.into(),
        campaign: CampaignRef {
            id: campaign.to_string(),
            name: Some("Spring friends".into()),
        },
        ..ReferredUser::default()
    }
}

impl World {
    async fn settle(&self) {
        self.live.settle().await;
    }

    async fn push(&self, users: Vec<ReferredUser>) {
        self.live.push(INSTANCE, users).await;
    }

    async fn push_bob(&self) -> String {
        let bob = referred("Bob", "bob@example.com", &self.bob.code, self.campaign);
        self.push(vec![bob]).await;
        let leads = self.sim.find_by_email("Lead", "bob@example.com");
        assert_eq!(leads.len(), 1, "{leads:?}");
        leads[0]["Id"].as_str().unwrap().to_owned()
    }

    /// Delivers the queued messages; every one must be acknowledged.
    async fn deliver(&self) {
        for (m, answer) in self.sim.deliver().await {
            let (status, body) = answer.unwrap();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            assert!(
                String::from_utf8_lossy(&body).contains("<Ack>true</Ack>"),
                "message {:?} not acknowledged: {}",
                m.notification_ids,
                String::from_utf8_lossy(&body)
            );
        }
        self.settle().await;
    }

    async fn qualifications(&self) -> usize {
        self.ledger.qualifications(self.bob.id).await.unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_pushed_converted_and_won_qualifies_once_even_when_resent() {
    let w = world(&[r#"{"rule":"lead_converted_at_stage","stage":"Closed Won"}"#]).await;
    let lead = w.push_bob().await;
    let record = w.sim.record("Lead", &lead).unwrap();
    assert_eq!(record["Referral_Code__c"], json!(w.bob.code));
    assert_eq!(record["Company"], json!("[not provided]"));
    assert_eq!(record["LeadSource"], json!("Referral"));
    w.deliver().await;
    assert_eq!(w.qualifications().await, 0);

    let (_, opp) = w
        .sim
        .convert_lead_ui(&lead, Some(("Bob's order", "Qualification")))
        .unwrap();
    let opp = opp.expect("an opportunity");
    w.deliver().await;
    assert_eq!(w.qualifications().await, 0, "converted, not won");

    w.sim.set_stage_ui(&opp, "Closed Won").unwrap();
    let messages = w.sim.take_messages();
    assert!(!messages.is_empty());
    // Salesforce resends: every message twice, the second time in reverse order.
    for m in messages.iter().chain(messages.iter().rev()) {
        let (status, body) = w.sim.send(m).await.unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("<Ack>true</Ack>"));
    }
    w.settle().await;
    assert_eq!(w.qualifications().await, 1);
    assert_eq!(w.sim.queued_messages(), 0);
}

/// Won is `IsWon`, never a stage label: a renamed won stage qualifies, a stage called "Won"
/// that is open does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn won_is_is_won_never_the_label() {
    let w = world(&[r#"{"rule":"deal_won"}"#]).await;
    w.sim.add_stage("Won", false, false);
    w.sim.add_stage("Firmado", true, true);
    let lead = w.push_bob().await;
    let (_, opp) = w
        .sim
        .convert_lead_ui(&lead, Some(("Bob's order", "Qualification")))
        .unwrap();
    let opp = opp.unwrap();
    w.deliver().await;
    w.sim.set_stage_ui(&opp, "Won").unwrap();
    w.deliver().await;
    assert_eq!(w.qualifications().await, 0);
    w.sim.set_stage_ui(&opp, "Firmado").unwrap();
    w.deliver().await;
    assert_eq!(w.qualifications().await, 1);
}

/// A message without the endpoint token, or from another org, is refused (401) and not acked;
/// Salesforce keeps it queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_messages_are_refused_and_not_acknowledged() {
    let w = world(&[r#"{"rule":"deal_won"}"#]).await;
    w.push_bob().await;
    let messages: Vec<OutboundMessage> = w.sim.take_messages();
    let m = &messages[0];
    let without_token = w.endpoint.split('?').next().unwrap().to_owned();
    let request = WebhookRequest::post("", m.body.clone().into_bytes())
        .with_header("Content-Type", "text/xml; charset=utf-8")
        .with_header("SOAPAction", "\"\"");
    let (status, body) = send_webhook(&without_token, &request).await.unwrap();
    assert_eq!(status, 401);
    assert!(!String::from_utf8_lossy(&body).contains("<Ack>"));
    let other_org = m.body.replace("00D5w000004qGTO", "00D000000000001");
    let request = WebhookRequest::post("", other_org.into_bytes())
        .with_header("Content-Type", "text/xml; charset=utf-8");
    let (status, _) = send_webhook(&w.endpoint, &request).await.unwrap();
    assert_eq!(status, 401);
}

/// Bulk pushes: the engine hands over `[worker] push_batch` (100 by default) pushes at a time,
/// so 450 leads take 5 collection upserts (each could take 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_pushes_use_collections() {
    let w = world(&[r#"{"rule":"deal_won"}"#]).await;
    let n = 450;
    let users: Vec<ReferredUser> = (0..n)
        .map(|i| {
            referred(
                "Friend",
                &format!("friend{i}@example.com"),
                &format!("R-{i}"),
                w.campaign,
            )
        })
        .collect();
    w.sim.simulator().clear_requests();
    w.push(users).await;
    assert_eq!(w.sim.records("Lead").len(), n);
    let calls = w.sim.simulator().calls("/services/data/");
    // With [push.defaults], each batch is a query of the codes and an upsert of the new leads.
    let upserts = calls
        .iter()
        .filter(|c| {
            c.starts_with("PATCH /services/data/v62.0/composite/sobjects/Lead/Referral_Code__c")
        })
        .count();
    assert_eq!(upserts, 5, "{calls:?}");
    assert_eq!(calls.len(), 10, "{calls:?}");
}

/// One refused record fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_fails_only_its_referral() {
    let w = world(&[r#"{"rule":"deal_won"}"#]).await;
    let mut users: Vec<ReferredUser> = (0..5)
        .map(|i| {
            referred(
                "Friend",
                &format!("f{i}@example.com"),
                &format!("R-{i}"),
                w.campaign,
            )
        })
        .collect();
    users[2].email = "not-an-email".into();
    w.push(users).await;
    assert_eq!(w.sim.records("Lead").len(), 4);
    assert_eq!(w.live.unfinished_push_emails().await, ["not-an-email"]);
}
