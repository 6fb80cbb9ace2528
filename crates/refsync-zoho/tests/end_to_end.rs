//! The Zoho story through real parts: the engine (SQLite file store) serving its webhook
//! endpoint on loopback, the Zoho connector talking HTTP to the testkit's Zoho simulator (OAuth
//! self client, records, conversion, pipelines, notification channels), the simulator notifying
//! the engine, and the embedded ledger (SQLite file) as the referral platform.
//!
//! Bob, invited by Ann, is pushed as a lead. A salesperson converts him into a contact and a
//! deal, and wins the deal: the referral qualifies exactly once — across a channel renewal and a
//! channel Zoho dropped, with notifications duplicated and reordered.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use refsync_core::{
    CampaignRef, DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, ReferredUser, Registry,
    RuleSpec, WebhookRequest,
};
use refsync_engine::Instance;
use refsync_engine::testing::{LoopbackEngine, sqlite_engine};
use refsync_ledger::testing::Friends;
use refsync_ledger::{Ledger, User};
use refsync_testkit::openapi::OpenApi;
use refsync_testkit::sim::{Fault, FaultRule, send_webhook};
use refsync_testkit::zoho::{OutgoingNotification, ZohoSim, ZohoSimOptions};
use serde_json::{Value, json};

const CLIENT_ID: &str = "1000.E2E";
const CLIENT_SECRET: &str = "e2e-client-secret-0123456789";
const REFRESH_TOKEN: &str = "1000.e2e-refresh-token";
const TOKEN: &str = "e2e-notification-token-0123456789";
const CHANNEL: &str = "4200000000001";
const WORKFLOW_SECRET: &str = "e2e-workflow-secret-0123456789";
const INSTANCE: &str = "crm";
const HOUR: Duration = Duration::from_secs(3600);

struct World {
    live: LoopbackEngine,
    sim: ZohoSim,
    ledger: Ledger,
    campaign: i64,
    bob: User,
    hook: String,
    _dir: tempfile::TempDir,
}

async fn world(rules: &[&str], object: ObjectKind, defaults: Value) -> World {
    world_with(
        rules,
        object,
        defaults,
        true,
        &["Leads", "Contacts", "Deals"],
    )
    .await
}

/// `conversion_mapping`: whether Zoho's lead-conversion mapping carries the referral code to
/// the contact and the deal; `watch`: the modules the channel watches.
async fn world_with(
    rules: &[&str],
    object: ObjectKind,
    defaults: Value,
    conversion_mapping: bool,
    watch: &[&str],
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let Friends {
        ledger,
        campaign,
        bob,
        ..
    } = Friends::open(dir.path(), "Spring friends", &[], "bob@example.com")
        .await
        .unwrap();
    let mut opts = ZohoSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN);
    opts.conversion_mapping = conversion_mapping;
    let sim = ZohoSim::start(opts).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hooks/{INSTANCE}", listener.local_addr().unwrap());
    let mut registry = Registry::new();
    refsync_zoho::register(&mut registry);
    let connector = registry
        .build_connector(
            "zoho",
            &json!({
                // No api_domain: it comes from the token response, as in production.
                "auth": { "type": "self_client", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                          "refresh_token": REFRESH_TOKEN, "accounts_url": sim.base_url() },
                "notification_token": TOKEN,
                "channel_id": CHANNEL,
                "workflow_secret": WORKFLOW_SECRET,
                "watch_modules": watch,
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
        object,
        fields: FieldMapping::from_pairs([
            ("Email", "{Email}"),
            ("First_Name", "{First Name}"),
            ("Referral Code", "{Referral Code}"),
        ])
        .unwrap(),
        duplicates: DuplicatePolicy::UpdateExisting,
        defaults: serde_json::from_value(defaults).unwrap(),
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
    World {
        live,
        sim,
        ledger,
        campaign,
        bob,
        hook,
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

    /// What `refsync serve`'s upkeep round does for the channel.
    async fn upkeep(&self) -> Vec<String> {
        self.live
            .engine
            .ensure_subscriptions(INSTANCE, Some(&self.hook))
            .await
            .unwrap()
    }

    async fn push(&self, users: Vec<ReferredUser>) {
        self.live.push(INSTANCE, users).await;
    }

    async fn push_bob(&self) -> String {
        let bob = referred("Bob", "bob@example.com", &self.bob.code, self.campaign);
        self.push(vec![bob]).await;
        let leads = self.sim.find_by_email("Leads", "bob@example.com");
        assert_eq!(leads.len(), 1, "{leads:?}");
        leads[0]["id"].as_str().unwrap().to_owned()
    }

    /// Sends `notes` as given (each must be accepted), then settles.
    async fn send_all(&self, notes: &[&OutgoingNotification]) {
        for n in notes {
            let (status, body) = self.sim.send(n).await.unwrap();
            assert!(
                (200..300).contains(&status),
                "engine answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        self.settle().await;
    }

    /// Delivers the pending notifications twice, the second time in reverse order.
    async fn deliver_twice(&self) {
        let notes = self.sim.take_notifications();
        let mut order: Vec<&OutgoingNotification> = notes.iter().collect();
        order.extend(notes.iter().rev());
        self.send_all(&order).await;
    }

    /// A channel as an earlier run left it: the same id, token and URL, expiring in an hour
    /// (made with the simulator's OAuth and watch API, as a Zoho client would). `sim_ahead`:
    /// how far the test has advanced the simulator's clock past the real one.
    async fn old_channel_expiring_soon(&self, sim_ahead: Duration) {
        let http = reqwest::Client::new();
        let token: Value = http
            .post(self.sim.token_url())
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("refresh_token", REFRESH_TOKEN),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let access = token["access_token"].as_str().unwrap();
        let ahead = chrono::Duration::from_std(sim_ahead).unwrap();
        let expiry = (Utc::now() + ahead + chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let resp = http
            .post(format!("{}/crm/v8/actions/watch", self.sim.base_url()))
            .header("Authorization", format!("Zoho-oauthtoken {access}"))
            .json(&json!({"watch": [{
                "channel_id": CHANNEL, "events": ["Leads.all", "Contacts.all", "Deals.all"],
                "notify_url": self.hook, "token": TOKEN, "channel_expiry": expiry,
            }]}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text().await);
        self.sim.simulator().clear_requests();
    }

    async fn qualifications(&self) -> usize {
        self.ledger.qualifications(self.bob.id).await.unwrap().len()
    }
}

/// Every CRM request the connector sent validates against Zoho's v8 descriptions.
fn assert_requests_follow_the_specs(sim: &ZohoSim) -> usize {
    let specs: Vec<OpenApi> = [
        "record",
        "notifications",
        "pipeline",
        "fields",
        "convert_lead",
    ]
    .iter()
    .map(|f| {
        OpenApi::load(format!(
            "{}/../refsync-testkit/tests/data/zoho/{f}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    })
    .collect();
    // The one gap tolerated: notifications.json types the watch `channel_id` as an object,
    // while Zoho's docs say a number and its own sample request sends a string (as refsync
    // does).
    let channel_id_gap = |req: &refsync_testkit::sim::RecordedRequest, e: &str| {
        req.path == "/crm/v8/actions/watch"
            && e.contains("/channel_id: expected object, got string")
    };
    OpenApi::check_requests(
        &specs,
        &sim.simulator().requests(),
        "/crm/",
        str::to_owned,
        channel_id_gap,
    )
    .unwrap_or_else(|problems| panic!("requests do not follow the specs: {problems:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_pushed_converted_and_won_qualifies_once_across_channel_renewals() {
    let w = world(
        &[r#"{"rule":"lead_converted_at_stage","stage":"Closed Won"}"#],
        ObjectKind::Lead,
        json!({}),
    )
    .await;
    // The channel exists from an earlier run and expires within the hour: the upkeep renews it.
    w.old_channel_expiring_soon(Duration::ZERO).await;
    let before = w.sim.channels()[0]["channel_expiry"].clone();
    assert_eq!(w.upkeep().await, [CHANNEL]);
    let channels = w.sim.channels();
    // Zoho lists the channel once per watched module.
    assert_eq!(channels.len(), 3, "{channels:?}");
    assert!(channels.iter().all(|c| c["channel_id"] == json!(CHANNEL)));
    assert_ne!(channels[0]["channel_expiry"], before, "renewed");
    assert_eq!(
        w.sim
            .simulator()
            .requests_to("PUT", "/crm/v8/actions/watch")
            .len(),
        1
    );
    // Running the upkeep again changes nothing.
    let calls = w.sim.simulator().requests().len();
    w.upkeep().await;
    let again: Vec<String> = w.sim.simulator().requests()[calls..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(again, ["GET /crm/v8/actions/watch"]);
    let lead = w.push_bob().await;
    let record = w.sim.record("Leads", &lead).unwrap();
    assert_eq!(record["Referral_Code"], json!(w.bob.code));
    w.deliver_twice().await;
    assert_eq!(w.qualifications().await, 0);

    // Converted into a contact and a deal, still open.
    let (_, deal) = w
        .sim
        .convert_lead_ui(&lead, Some(("Bob's order", "Qualification")))
        .unwrap();
    let deal = deal.expect("a deal");
    w.deliver_twice().await;
    assert_eq!(w.qualifications().await, 0, "converted, not won yet");

    // The channel is about to expire again and Zoho drops it (2 hours on, past its expiry):
    // the upkeep creates it again.
    w.old_channel_expiring_soon(Duration::ZERO).await;
    w.sim.advance_clock(2 * HOUR);
    assert!(w.sim.channels().is_empty(), "expired and dropped by Zoho");
    w.upkeep().await;
    assert_eq!(w.sim.channels().len(), 3, "re-created");
    assert_eq!(
        w.sim
            .simulator()
            .requests_to("POST", "/crm/v8/actions/watch")
            .len(),
        1
    );
    // Zoho drops it between the upkeep's look and its renewal: the renewal answers
    // NOT_SUBSCRIBED (injected once), and the upkeep creates it again.
    w.old_channel_expiring_soon(2 * HOUR).await;
    w.sim.simulator().inject(
        FaultRule::new(Fault::Status {
            status: 400,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: br#"{"watch":[{"code":"NOT_SUBSCRIBED","details":{"channel_id":"4200000000001"},"message":"Not subscribed for actions-watch of the given channel","status":"error"}]}"#.to_vec(),
        })
        .on("PUT", "/crm/v8/actions/watch"),
    );
    w.upkeep().await;
    assert_eq!(
        w.sim
            .simulator()
            .requests_to("POST", "/crm/v8/actions/watch")
            .len(),
        1,
        "re-created after NOT_SUBSCRIBED"
    );
    let expiry = w.sim.channels()[0]["channel_expiry"]
        .as_str()
        .unwrap()
        .to_owned();
    let expiry = chrono::DateTime::parse_from_rfc3339(&expiry).unwrap();
    assert!(expiry > Utc::now() + chrono::Duration::days(6), "{expiry}");

    // Won: one qualification, whatever the order and the duplicates.
    w.sim.set_deal_stage_ui(&deal, "Closed Won").unwrap();
    w.deliver_twice().await;
    assert_eq!(w.qualifications().await, 1);
    w.sim.set_deal_stage_ui(&deal, "Closed Lost").unwrap();
    w.sim.set_deal_stage_ui(&deal, "Closed Won").unwrap();
    w.deliver_twice().await;
    assert_eq!(w.qualifications().await, 1);
    let checked = assert_requests_follow_the_specs(&w.sim);
    assert!(checked >= 5, "only {checked} requests checked");
}

/// A renamed won stage ("Signed", forecast type Closed Won) is won; a stage named "Won" that is
/// open is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn won_is_the_forecast_type_never_the_label() {
    let w = world(&[r#"{"rule":"deal_won"}"#], ObjectKind::Lead, json!({})).await;
    w.sim.add_stage("Won", "Won", "Open");
    w.sim.add_stage("Signed", "Signed", "Closed Won");
    w.upkeep().await;
    let lead = w.push_bob().await;
    let (_, deal) = w
        .sim
        .convert_lead_ui(&lead, Some(("Bob's order", "Qualification")))
        .unwrap();
    let deal = deal.unwrap();
    w.deliver_twice().await;
    w.sim.set_deal_stage_ui(&deal, "Won").unwrap();
    w.deliver_twice().await;
    assert_eq!(w.qualifications().await, 0, "a stage labelled Won is open");
    w.sim.set_deal_stage_ui(&deal, "Signed").unwrap();
    w.deliver_twice().await;
    assert_eq!(w.qualifications().await, 1);
}

/// A workflow-rule webhook ("Stage is Closed Won" → POST with merge fields) qualifies the deal
/// the conversion linked; a wrong secret is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_webhook_with_its_secret_qualifies() {
    let w = world(&[r#"{"rule":"deal_won"}"#], ObjectKind::Lead, json!({})).await;
    // No channel: only the workflow rule notifies.
    let lead = w.push_bob().await;
    let (_, deal) = w
        .sim
        .convert_lead_ui(&lead, Some(("Bob's order", "Qualification")))
        .unwrap();
    let deal = deal.unwrap();
    w.sim.set_deal_stage_ui(&deal, "Closed Won").unwrap();
    let body = format!("module=Deals&id={deal}&stage=Closed+Won");
    let request = |secret: &str| {
        WebhookRequest::post("", body.clone().into_bytes())
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_header("X-Refsync-Token", secret)
    };
    let (status, _) = send_webhook(&w.hook, &request("wrong-secret-0123456789"))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, body) = send_webhook(&w.hook, &request(WORKFLOW_SECRET))
        .await
        .unwrap();
    assert!(
        (200..300).contains(&status),
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    w.settle().await;
    assert_eq!(
        w.qualifications().await,
        1,
        "the deal carries Bob's code (conversion mapping)"
    );
}

/// Bulk pushes cost a handful of calls: 250 leads in 3 upserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_pushes_use_batch_calls() {
    let w = world(&[r#"{"rule":"deal_won"}"#], ObjectKind::Lead, json!({})).await;
    let n = 250;
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
    assert_eq!(w.sim.records("Leads").len(), n);
    let calls = w.sim.simulator().calls("/crm/");
    let upserts = calls
        .iter()
        .filter(|c| *c == "POST /crm/v8/Leads/upsert")
        .count();
    assert_eq!(upserts, 3, "{calls:?}");
    // The fields list once, then the three upserts.
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(w.sim.rate_limited(), 0);
    assert_requests_follow_the_specs(&w.sim);
}

/// One record Zoho refuses fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_fails_only_its_referral() {
    let w = world(&[r#"{"rule":"deal_won"}"#], ObjectKind::Lead, json!({})).await;
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
    assert_eq!(w.sim.records("Leads").len(), 4);
    assert_eq!(w.live.unfinished_push_emails().await, ["not-an-email"]);
}

/// Without the lead-conversion mapping the deal carries no referral code: the conversion is
/// seen on the lead itself (`$converted`, `$converted_detail.deal`), and links the deal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_is_seen_on_the_lead_without_the_mapping() {
    let w = world_with(
        &[r#"{"rule":"lead_converted_at_stage","stage":"Closed Won"}"#],
        ObjectKind::Lead,
        json!({}),
        false,
        &["Leads", "Contacts", "Deals"],
    )
    .await;
    w.upkeep().await;
    let lead = w.push_bob().await;
    let (_, deal) = w
        .sim
        .convert_lead_ui(&lead, Some(("Bob's order", "Qualification")))
        .unwrap();
    let deal = deal.unwrap();
    assert!(w.sim.record("Deals", &deal).unwrap()["Referral_Code"].is_null());
    w.deliver_twice().await;
    w.sim.set_deal_stage_ui(&deal, "Closed Won").unwrap();
    w.deliver_twice().await;
    assert_eq!(w.qualifications().await, 1);
}

/// With the mapping but without lead notifications, the created deal's referral code finds the
/// converted lead (a search of converted leads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_is_found_from_the_deal_without_lead_notifications() {
    let w = world_with(
        &[r#"{"rule":"lead_converted"}"#],
        ObjectKind::Lead,
        json!({}),
        true,
        &["Contacts", "Deals"],
    )
    .await;
    w.upkeep().await;
    let lead = w.push_bob().await;
    w.sim
        .convert_lead_ui(&lead, Some(("Bob's order", "Qualification")))
        .unwrap();
    w.deliver_twice().await;
    assert_eq!(w.qualifications().await, 1);
}
