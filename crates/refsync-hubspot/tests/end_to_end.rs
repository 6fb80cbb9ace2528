//! The HubSpot story through real parts: the engine (SQLite file store) serving its webhook
//! endpoint on loopback, the HubSpot connector talking HTTP to the testkit's HubSpot simulator,
//! the simulator delivering v3-signed webhook batches back to the engine, and the embedded
//! ledger (SQLite file) as the referral platform.
//!
//! Bob, invited by Ann, is pushed as a contact. The sales team creates a deal for him in
//! HubSpot (nobody pushed that deal); when it is won the referral qualifies — exactly once,
//! whatever HubSpot duplicates, regroups or reorders. Every request the connector sends is
//! validated against HubSpot's OpenAPI descriptions.

use std::collections::BTreeMap;
use std::sync::Arc;

use refsync_core::{
    CampaignRef, DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, ReferredUser, Registry,
    RuleSpec,
};
use refsync_engine::Instance;
use refsync_engine::testing::{LoopbackEngine, sqlite_engine};
use refsync_ledger::testing::Friends;
use refsync_ledger::{Ledger, User};
use refsync_testkit::hubspot::{HubSpotSim, HubSpotSimOptions, OutgoingBatch};
use refsync_testkit::openapi::OpenApi;
use serde_json::json;

const TOKEN: &str = "pat-na1-e2e-0123456789abcdef";
const CLIENT_SECRET: &str = "e2e-client-secret-0123456789";
const INSTANCE: &str = "crm";

struct World {
    live: LoopbackEngine,
    sim: HubSpotSim,
    ledger: Ledger,
    campaign: i64,
    bob: User,
    _dir: tempfile::TempDir,
}

struct Setup {
    rules: Vec<&'static str>,
    object: ObjectKind,
    /// Events per webhook request (HubSpot: up to 100).
    batch_size: usize,
    /// The app's webhook subscriptions, when not the simulator's default set.
    subscriptions: Option<Vec<(String, Option<String>)>>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            rules: vec![r#"{"rule":"deal_won"}"#],
            object: ObjectKind::Contact,
            batch_size: 100,
            subscriptions: None,
        }
    }
}

async fn world(setup: Setup) -> World {
    let dir = tempfile::tempdir().unwrap();
    let Friends {
        ledger,
        campaign,
        bob,
        ..
    } = Friends::open(dir.path(), "Spring friends", &[], "bob@example.com")
        .await
        .unwrap();

    let mut opts = HubSpotSimOptions::new(TOKEN, CLIENT_SECRET);
    opts.batch_size = setup.batch_size;
    if let Some(subscriptions) = setup.subscriptions {
        opts.subscriptions = subscriptions;
    }
    opts.custom_deal_properties = Vec::new();
    let sim = HubSpotSim::start(opts).await.unwrap();
    // The deal key must have unique values; the app's admin created it.
    sim.add_property("deals", "referral_code", true);

    // HubSpot signs the target URL, so the instance is told its URL: the engine's port is
    // bound before the instance is built.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hooks/{INSTANCE}", listener.local_addr().unwrap());
    let rules = setup
        .rules
        .iter()
        .map(|r| {
            serde_json::from_str::<RuleSpec>(r)
                .unwrap()
                .build()
                .unwrap()
        })
        .collect();
    let push = PushSpec {
        object: setup.object,
        fields: FieldMapping::from_pairs([
            ("email", "{Email}"),
            ("firstname", "{First Name}"),
            ("referral_code", "{Referral Code}"),
        ])
        .unwrap(),
        duplicates: DuplicatePolicy::UpdateExisting,
        defaults: BTreeMap::new(),
    };
    let mut registry = Registry::new();
    refsync_hubspot::register(&mut registry);
    let connector = registry
        .build_connector(
            "hubspot",
            &json!({
                "base_url": sim.base_url(),
                "auth": { "type": "private_app", "token": TOKEN },
                "client_secret": CLIENT_SECRET,
                "portal_id": sim.options().portal_id,
                "webhook_url": hook,
            }),
        )
        .unwrap();
    let instance = Instance::new(
        INSTANCE,
        connector,
        rules,
        Some(campaign.to_string()),
        Some(push),
    );
    let engine = sqlite_engine(dir.path(), Arc::new(ledger.clone()), vec![instance]).await;
    let live = LoopbackEngine::serve_on(listener, engine).unwrap();
    sim.set_target_url(&hook);
    World {
        live,
        sim,
        ledger,
        campaign,
        bob,
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
        self.sim
            .contact_by_email("bob@example.com")
            .expect("Bob is a contact")["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sends `batches` to the engine as given, each answered 2xx, then settles.
    async fn send_all(&self, batches: &[&OutgoingBatch]) {
        for b in batches {
            let (status, body) = self.sim.send(b).await.unwrap();
            assert!(
                (200..300).contains(&status),
                "engine answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        self.settle().await;
    }

    /// Delivers what is pending, in order, then settles.
    async fn deliver(&self) {
        for (batch, answer) in self.sim.deliver().await {
            let (status, body) = answer.unwrap();
            assert!(
                (200..300).contains(&status),
                "engine answered {status} to {:?}: {}",
                batch.events,
                String::from_utf8_lossy(&body)
            );
        }
        self.settle().await;
    }

    async fn qualifications(&self) -> usize {
        self.ledger.qualifications(self.bob.id).await.unwrap().len()
    }
}

/// Every CRM request the connector sent validates against HubSpot's descriptions (deal paths
/// are validated on `/crm/v3/objects/0-3`, the id form the description names: HubSpot accepts
/// the type name or its id). Returns how many were checked.
fn assert_requests_follow_the_specs(sim: &HubSpotSim) -> usize {
    let specs: Vec<OpenApi> = [
        "contacts",
        "deals",
        "associations",
        "pipelines",
        "properties",
    ]
    .iter()
    .map(|f| {
        OpenApi::load(format!(
            "{}/../refsync-testkit/tests/data/hubspot/{f}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    })
    .collect();
    let deals_by_id = |path: &str| match path.strip_prefix("/crm/v3/objects/deals") {
        Some(rest) => format!("/crm/v3/objects/0-3{rest}"),
        None => path.to_owned(),
    };
    OpenApi::check_requests(
        &specs,
        &sim.simulator().requests(),
        "/crm/",
        deals_by_id,
        |_, _| false,
    )
    .unwrap_or_else(|problems| panic!("requests do not follow the specs: {problems:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_deal_of_the_pushed_contact_qualifies_once_despite_duplicated_and_reordered_batches()
{
    let w = world(Setup {
        batch_size: 2,
        ..Setup::default()
    })
    .await;
    let bob = w.push_bob().await;
    let contact = w.sim.contact_by_email("bob@example.com").unwrap();
    assert_eq!(contact["properties"]["referral_code"], json!(w.bob.code));
    w.deliver().await; // the contact's creation events
    assert_eq!(w.qualifications().await, 0);

    // The sales team creates a deal for Bob and works it.
    let deal = w
        .sim
        .create_deal_ui(
            &[
                ("dealname", "Bob's order"),
                ("dealstage", "appointmentscheduled"),
            ],
            &[&bob],
        )
        .unwrap();
    w.sim.move_deal(&deal, "qualifiedtobuy").unwrap();
    w.deliver().await;
    assert_eq!(
        w.qualifications().await,
        0,
        "an open deal qualifies nothing"
    );

    w.sim.move_deal(&deal, "closedwon").unwrap();
    w.sim.move_deal(&deal, "closedwon").unwrap(); // no change: no event
    let batches = w.sim.take_batches();
    assert!(!batches.is_empty());
    // Each batch twice, in reverse order, and the first one again as a HubSpot retry.
    let mut order: Vec<&OutgoingBatch> = batches.iter().rev().collect();
    order.extend(batches.iter());
    order.push(&batches[0]);
    w.send_all(&order).await;
    assert_eq!(w.qualifications().await, 1, "won: qualified once");

    // Lost, won again: still one qualification.
    w.sim.move_deal(&deal, "closedlost").unwrap();
    w.sim.move_deal(&deal, "closedwon").unwrap();
    w.deliver().await;
    assert_eq!(w.qualifications().await, 1);

    let checked = assert_requests_follow_the_specs(&w.sim);
    assert!(checked >= 5, "only {checked} requests checked");
}

/// Cross-object qualification with nothing but the stage subscription: the deal's contacts come
/// from enrichment (the association API), not from association webhooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_finds_the_contact_of_a_deal_nobody_pushed() {
    let w = world(Setup {
        subscriptions: Some(vec![(
            "deal.propertyChange".to_owned(),
            Some("dealstage".to_owned()),
        )]),
        ..Setup::default()
    })
    .await;
    let bob = w.push_bob().await;
    let deal = w
        .sim
        .create_deal_ui(&[("dealstage", "closedwon")], &[&bob])
        .unwrap();
    assert!(
        w.sim
            .pending_events()
            .iter()
            .all(|e| e["subscriptionType"] == "deal.propertyChange"),
        "{:?}",
        w.sim.pending_events()
    );
    w.deliver().await;
    assert_eq!(
        w.qualifications().await,
        1,
        "deal {deal} won, found through its contact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_won_older_than_a_recorded_lost_is_stale() {
    let w = world(Setup {
        batch_size: 1,
        ..Setup::default()
    })
    .await;
    let bob = w.push_bob().await;
    w.deliver().await;
    let deal = w
        .sim
        .create_deal_ui(&[("dealstage", "contractsent")], &[&bob])
        .unwrap();
    w.deliver().await;
    w.sim.move_deal(&deal, "closedwon").unwrap();
    w.sim.move_deal(&deal, "closedlost").unwrap();
    let batches = w.sim.take_batches();
    assert_eq!(
        batches.len(),
        2,
        "{:?}",
        batches.iter().map(|b| &b.events).collect::<Vec<_>>()
    );
    // The `lost` arrives first; the older `won` then decides nothing.
    w.send_all(&[&batches[1], &batches[0]]).await;
    assert_eq!(w.qualifications().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_deal_of_the_referred_contact_is_the_lead_conversion() {
    let w = world(Setup {
        rules: vec![r#"{"rule":"lead_converted_at_stage","stage":"contractsent"}"#],
        ..Setup::default()
    })
    .await;
    let bob = w.push_bob().await;
    w.deliver().await;
    // A deal created and then associated with Bob (two steps, as in the UI).
    let deal = w
        .sim
        .create_deal_ui(&[("dealstage", "appointmentscheduled")], &[])
        .unwrap();
    w.sim.associate_ui(&deal, &bob).unwrap();
    w.deliver().await;
    assert_eq!(
        w.qualifications().await,
        0,
        "converted, not at the stage yet"
    );
    // A second, newer deal reaching the stage is not the conversion.
    let other = w
        .sim
        .create_deal_ui(&[("dealstage", "appointmentscheduled")], &[&bob])
        .unwrap();
    w.sim.move_deal(&other, "contractsent").unwrap();
    w.deliver().await;
    assert_eq!(w.qualifications().await, 0, "not the converted deal");
    w.sim.move_deal(&deal, "contractsent").unwrap();
    w.deliver().await;
    assert_eq!(w.qualifications().await, 1, "converted deal at the stage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_pipelines_closed_won_stage_qualifies_and_a_won_label_does_not() {
    let w = world(Setup::default()).await;
    let bob = w.push_bob().await;
    w.deliver().await;
    // "Won" is only a label here (open, probability 0.9); "Signed" is closed won.
    let (pipeline, stages) = w.sim.add_pipeline(
        "Partners",
        &[
            ("New", false, 0.1),
            ("Won", false, 0.9),
            ("Signed", true, 1.0),
        ],
    );
    let deal = w
        .sim
        .create_deal_ui(
            &[("pipeline", &pipeline), ("dealstage", &stages[0])],
            &[&bob],
        )
        .unwrap();
    w.sim.move_deal(&deal, &stages[1]).unwrap();
    w.deliver().await;
    assert_eq!(
        w.qualifications().await,
        0,
        "a stage labelled Won is not won"
    );
    w.sim.move_deal(&deal, &stages[2]).unwrap();
    w.deliver().await;
    assert_eq!(w.qualifications().await, 1, "closed won (probability 1.0)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_deal_reaching_a_stage_qualifies() {
    let w = world(Setup {
        rules: vec![r#"{"rule":"deal_stage_changed","to":"contractsent","pipeline":"default"}"#],
        object: ObjectKind::Deal,
        ..Setup::default()
    })
    .await;
    let bob = w.push_bob().await;
    let deals = w.sim.deals_of_contact(&bob);
    assert_eq!(deals.len(), 1, "the push created one deal for Bob");
    let deal = w.sim.deal(&deals[0]).unwrap();
    assert_eq!(deal["properties"]["referral_code"], json!(w.bob.code));
    assert_eq!(deal["properties"]["dealname"], json!("Spring friends: Bob"));
    // Pushing again finds the deal by its code: no second deal.
    w.push_bob().await;
    assert_eq!(w.sim.deals_of_contact(&bob).len(), 1);
    w.deliver().await;
    assert_eq!(w.qualifications().await, 0);
    w.sim.move_deal(&deals[0], "contractsent").unwrap();
    w.deliver().await;
    assert_eq!(w.qualifications().await, 1);
    assert_requests_follow_the_specs(&w.sim);
}

/// Bulk pushes cost a handful of calls: the engine hands the push jobs it claims together to
/// the connector, which upserts 100 contacts per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_pushes_use_batch_calls() {
    for object in [ObjectKind::Contact, ObjectKind::Deal] {
        let w = world(Setup {
            object: object.clone(),
            ..Setup::default()
        })
        .await;
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
        assert_eq!(w.sim.contacts().len(), n);
        let calls = w.sim.simulator().calls("/crm/");
        let per_referral = calls.len() as f64 / n as f64;
        // Property lists (once per object type), then per 100 referrals: the contact upsert
        // and, for deals, a batch read and a batch create.
        let expected = if object == ObjectKind::Deal {
            2 + 3 * 3
        } else {
            1 + 3
        };
        assert_eq!(
            calls.len(),
            expected,
            "{object}: {per_referral:.3} calls per referral: {calls:?}"
        );
        let upserts = calls
            .iter()
            .filter(|c| *c == "POST /crm/v3/objects/contacts/batch/upsert")
            .count();
        assert_eq!(upserts, 3, "250 contacts in 3 upserts of at most 100");
        if object == ObjectKind::Deal {
            assert_eq!(w.sim.deals().len(), n);
        }
        assert!(per_referral <= 0.05, "{per_referral}");
        assert_eq!(w.sim.rate_limit_violations(), 0);
        assert_requests_follow_the_specs(&w.sim);
    }
}

/// One bad record in a batch fails alone; the others are pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_an_invalid_email_fails_only_that_referral() {
    let w = world(Setup::default()).await;
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
    assert_eq!(w.sim.contacts().len(), 4);
    assert_eq!(w.live.unfinished_push_emails().await, ["not-an-email"]);
}
