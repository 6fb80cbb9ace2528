//! The coupon story through real parts: the engine (SQLite file store) serving its webhook
//! endpoint on loopback, the WooCommerce connector talking HTTP to the testkit's WooCommerce
//! simulator, the simulator delivering signed order webhooks back to the engine, and the
//! embedded ledger (SQLite file) as the referral platform.
//!
//! Bob, invited by Ann, is pushed: he becomes a customer and gets a unique coupon. When an
//! order paid with it arrives the referral qualifies — exactly once, whether WooCommerce
//! delivers the order twice, merges its updates, sends it created-then-updated, or loses the
//! delivery (reconcile finds it).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use refsync_core::{
    CampaignRef, DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, ReferredUser, Referrer,
    Registry, RuleSpec,
};
use refsync_engine::testing::{LoopbackEngine, sqlite_engine};
use refsync_engine::{Instance, PushRequest};
use refsync_ledger::testing::Friends;
use refsync_ledger::{Ledger, User};
use refsync_testkit::sim::send_webhook;
use refsync_testkit::woocommerce::{NewOrder, OutgoingWebhook, WooSim, WooSimOptions};
use serde_json::{Value, json};

const KEY: &str = "ck_e2e0123456789abcdef";
const SECRET: &str = "cs_e2e0123456789abcdef";
const HOOK_SECRET: &str = "e2e-webhook-secret-9876543210";
const INSTANCE: &str = "shop";

const COUPON_USED: &str = r#"{"rule":"coupon_used"}"#;
const UNQUALIFY: &str = r#"{"rule":"unqualify_on_status","statuses":["refunded","cancelled"]}"#;

struct World {
    live: LoopbackEngine,
    sim: WooSim,
    ledger: Ledger,
    bob: User,
    email: String,
    hook: String,
    _dir: tempfile::TempDir,
}

struct Setup {
    /// The store as WordPress sees it: HTTPS (Basic auth) or plain HTTP (OAuth 1.0a only).
    https: bool,
    coupon: Value,
    rules: Vec<&'static str>,
    /// Coupon codes the ledger campaign hands out (`coupon.source = "platform"`).
    ledger_coupons: Vec<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            https: true,
            coupon: json!({"code": "friend-{random}", "amount": "15", "expires_after_days": 30}),
            rules: vec![COUPON_USED],
            ledger_coupons: Vec::new(),
        }
    }
}

async fn world(setup: Setup) -> World {
    let dir = tempfile::tempdir().unwrap();
    let email = "bob+referral1@example.com".to_owned();
    let Friends {
        ledger,
        campaign,
        bob,
        ..
    } = Friends::open(dir.path(), "Spring friends", &setup.ledger_coupons, &email)
        .await
        .unwrap();

    let mut opts = WooSimOptions::new(KEY, SECRET);
    opts.https = setup.https;
    let sim = WooSim::start(opts).await.unwrap();
    let mut registry = Registry::new();
    refsync_woocommerce::register(&mut registry);
    let connector = registry
        .build_connector(
            "woocommerce",
            &json!({
                "store_url": sim.base_url(),
                "consumer_key": KEY,
                "consumer_secret": SECRET,
                // auto: Basic over HTTPS; the simulator is plain HTTP on loopback, so a store
                // "behind HTTPS" is told explicitly, and a plain-HTTP one gets OAuth 1.0a.
                "auth": if setup.https { "basic" } else { "auto" },
                "webhook_secret": HOOK_SECRET,
                "referral_code_meta_key": "referral_code",
                "coupon": setup.coupon,
            }),
        )
        .unwrap();
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
        object: ObjectKind::Contact,
        fields: FieldMapping::from_pairs([
            ("email", "{Email}"),
            ("first_name", "{First Name}"),
            ("meta.referral_code", "{Referral Code}"),
            ("meta.referral_coupon", "{Coupon}"),
            ("meta.referred_by", "{Referrer Email}"),
        ])
        .unwrap(),
        duplicates: DuplicatePolicy::UpdateExisting,
        defaults: BTreeMap::new(),
    };
    let instance = Instance::new(
        INSTANCE,
        connector,
        rules,
        Some(campaign.to_string()),
        Some(push),
    );
    let engine = sqlite_engine(dir.path(), Arc::new(ledger.clone()), vec![instance]).await;
    let live = LoopbackEngine::serve(engine).await.unwrap();
    let hook = live.hook_url(INSTANCE);
    World {
        live,
        sim,
        ledger,
        bob,
        email,
        hook,
        _dir: dir,
    }
}

impl World {
    /// Runs the engine's workers until nothing is left to do.
    async fn settle(&self) {
        self.live.settle().await;
    }

    /// Subscribes (as `refsync serve` does) and pushes Bob.
    async fn subscribe_and_push(&self) {
        let ids = self
            .live
            .engine
            .ensure_subscriptions(INSTANCE, Some(&self.hook))
            .await
            .unwrap();
        assert_eq!(ids.len(), 3, "order.created/updated/deleted: {ids:?}");
        let user = ReferredUser {
            first_name: self.bob.first_name.clone(),
            email: self.email.clone(),
            referral_code: self.bob.code.clone(),
            campaign: CampaignRef {
                id: self.bob.campaign_id.to_string(),
                name: Some("Spring friends".into()),
            },
            referrer: Some(Referrer {
                first_name: Some("Ann".into()),
                email: Some("ann@example.com".into()),
                ..Referrer::default()
            }),
            coupon: self.bob.coupon.clone(),
            ..ReferredUser::default()
        };
        self.live
            .engine
            .enqueue_push(
                PushRequest {
                    instance: INSTANCE.into(),
                    user,
                },
                Utc::now(),
            )
            .await
            .unwrap();
        self.settle().await;
    }

    /// Sends `hooks` to the engine, each twice, in reverse order, then settles.
    async fn deliver(&self, hooks: &[OutgoingWebhook]) {
        for hook in hooks.iter().rev().chain(hooks.iter()) {
            assert_eq!(hook.url, self.hook, "the webhook targets the engine");
            let (status, body) = send_webhook(&hook.url, &hook.request).await.unwrap();
            assert!(
                (200..300).contains(&status),
                "engine answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        self.settle().await;
    }

    /// The coupon the push issued to Bob.
    fn coupon(&self) -> Value {
        let customers = self.sim.customers_with_email(&self.email);
        assert_eq!(customers.len(), 1, "one customer for Bob: {customers:?}");
        let meta = customers[0]["meta_data"].as_array().unwrap();
        let code = meta
            .iter()
            .find(|m| m["key"] == "referral_coupon")
            .and_then(|m| m["value"].as_str())
            .expect("the customer carries the coupon code in its meta")
            .to_owned();
        self.sim
            .coupon_by_code(&code)
            .unwrap_or_else(|| panic!("coupon {code} exists in the store"))
    }

    fn order_with(&self, code: &str) -> u64 {
        let mut order = NewOrder::new(&self.email);
        order.coupon_codes = vec![code.to_owned()];
        self.sim.place_order(order).unwrap()
    }

    async fn qualifications(&self) -> usize {
        self.ledger.qualifications(self.bob.id).await.unwrap().len()
    }

    async fn qualified(&self) -> bool {
        self.ledger
            .user_by_id(self.bob.id)
            .await
            .unwrap()
            .unwrap()
            .qualified_at
            .is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupon_issued_then_paid_order_qualifies_once() {
    let w = world(Setup::default()).await;
    w.subscribe_and_push().await;
    // The three webhooks were created with the secret, and their pings were answered 200
    // without storing anything.
    let hooks = w.sim.webhooks();
    assert_eq!(hooks.len(), 3);
    for h in &hooks {
        assert_eq!(h["secret"], HOOK_SECRET);
        assert_eq!(h["status"], "active");
        assert_eq!(h["delivery_url"], json!(w.hook));
    }
    let pings = w.sim.pings();
    assert_eq!(pings.len(), 3, "{pings:?}");
    assert!(pings.iter().all(|(_, status)| *status == 200), "{pings:?}");
    assert_eq!(
        w.live
            .engine
            .process_deliveries_once(Utc::now())
            .await
            .unwrap(),
        0
    );

    let coupon = w.coupon();
    let code = coupon["code"].as_str().unwrap().to_owned();
    assert!(
        code.starts_with("friend-") && code.len() == "friend-".len() + 8,
        "{code}"
    );
    assert_eq!(coupon["usage_limit"], 1);
    assert_eq!(coupon["email_restrictions"], json!([w.email]));
    assert!(coupon["date_expires_gmt"].is_string(), "{coupon}");
    assert_eq!(w.qualifications().await, 0, "nothing qualifies on the push");

    // Someone else cannot use Bob's coupon (email restriction, checked by the store).
    let mut stranger = NewOrder::new("eve@example.com");
    stranger.coupon_codes = vec![code.clone()];
    assert!(w.sim.place_order(stranger).is_err());

    // Bob checks out with the coupon in upper case: order.created while pending qualifies
    // nothing (order.created fires before payment).
    let order = w.order_with(&code.to_uppercase());
    w.deliver(&w.sim.take_outbox()).await;
    assert_eq!(w.qualifications().await, 0, "a pending order is not paid");

    w.sim.set_order_status(order, "processing").unwrap();
    w.deliver(&w.sim.take_outbox()).await;
    assert_eq!(w.qualifications().await, 1, "paid: qualified");

    // Completion, a note on the order, and every delivery once more change nothing.
    w.sim.set_order_status(order, "completed").unwrap();
    let completed = w.sim.take_outbox();
    w.deliver(&completed).await;
    w.sim.touch_order(order).unwrap();
    w.deliver(&w.sim.take_outbox()).await;
    w.deliver(&completed).await;
    assert_eq!(w.qualifications().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_and_created_then_updated_deliveries_qualify_once() {
    let w = world(Setup::default()).await;
    w.subscribe_and_push().await;
    let code = w.coupon()["code"].as_str().unwrap().to_owned();
    // Placed and paid before WooCommerce's queue runs: the order.updated deliveries merge into
    // one, and order.created is built at send time too — both show the paid order.
    let order = w.order_with(&code);
    w.sim.set_order_status(order, "on-hold").unwrap();
    w.sim.set_order_status(order, "processing").unwrap();
    let hooks = w.sim.take_outbox();
    let topics: Vec<&str> = hooks
        .iter()
        .map(|h| h.request.header("x-wc-webhook-topic").unwrap())
        .collect();
    assert_eq!(
        topics.len(),
        2,
        "one created, one (merged) updated: {topics:?}"
    );
    w.deliver(&hooks).await;
    assert_eq!(w.qualifications().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_unqualifies_and_other_coupons_qualify_nothing() {
    let w = world(Setup {
        rules: vec![COUPON_USED, UNQUALIFY],
        ..Setup::default()
    })
    .await;
    w.subscribe_and_push().await;
    let code = w.coupon()["code"].as_str().unwrap().to_owned();

    // A paid order with a coupon that is nobody's referral coupon: no qualification.
    let other = w.sim.place_order(NewOrder::new(&w.email)).unwrap();
    w.sim.set_order_status(other, "completed").unwrap();
    w.deliver(&w.sim.take_outbox()).await;
    assert_eq!(w.qualifications().await, 0);
    // Refunding that unrelated order unqualifies nothing either (Bob is not qualified, and the
    // order carries no referral coupon).
    w.sim.set_order_status(other, "refunded").unwrap();
    w.deliver(&w.sim.take_outbox()).await;

    let order = w.order_with(&code);
    w.sim.set_order_status(order, "completed").unwrap();
    w.deliver(&w.sim.take_outbox()).await;
    assert!(w.qualified().await, "paid with the coupon: qualified");
    w.sim.set_order_status(order, "refunded").unwrap();
    w.deliver(&w.sim.take_outbox()).await;
    assert!(!w.qualified().await, "refunded: unqualified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_batch_coupon_is_made_sure_of_in_the_store_and_qualifies() {
    let w = world(Setup {
        coupon: json!({"source": "platform", "amount": "10", "discount_type": "fixed_cart"}),
        ledger_coupons: vec!["SPRING-0001".into(), "SPRING-0002".into()],
        ..Setup::default()
    })
    .await;
    let assigned = w.bob.coupon.clone().expect("the ledger assigned a coupon");
    w.subscribe_and_push().await;
    let coupon = w
        .sim
        .coupon_by_code(&assigned)
        .expect("the platform's coupon now exists in the store");
    assert_eq!(coupon["discount_type"], "fixed_cart");
    let order = w.order_with(&assigned);
    w.sim.set_order_status(order, "processing").unwrap();
    w.deliver(&w.sim.take_outbox()).await;
    assert_eq!(w.qualifications().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finds_a_lost_payment_and_upkeep_re_enables_a_disabled_webhook() {
    let w = world(Setup::default()).await;
    w.subscribe_and_push().await;
    let code = w.coupon()["code"].as_str().unwrap().to_owned();
    // WooCommerce disabled the order.updated webhook after failed deliveries: the payment is
    // never delivered.
    let updated = w
        .sim
        .webhooks()
        .into_iter()
        .find(|h| h["topic"] == "order.updated")
        .unwrap();
    let updated_id = updated["id"].as_u64().unwrap();
    w.sim.disable_webhook(updated_id);
    let before = Utc::now() - chrono::Duration::seconds(5);
    let order = w.order_with(&code);
    w.sim.set_order_status(order, "processing").unwrap();
    let sent = w.sim.take_outbox();
    assert!(
        sent.iter()
            .all(|h| h.request.header("x-wc-webhook-topic") != Some("order.updated")),
        "a disabled webhook delivers nothing"
    );
    // Only order.created is delivered, built when the order was already paid... unless it was
    // not queued at all; either way reconcile must settle it. Deliver nothing.
    assert_eq!(w.qualifications().await, 0);

    let report = w
        .live
        .engine
        .reconcile(INSTANCE, before, Utc::now())
        .await
        .unwrap();
    assert!(report.events >= 2, "coupon use and paid status: {report:?}");
    w.settle().await;
    assert_eq!(w.qualifications().await, 1);

    // The next upkeep re-enables the webhook (and WooCommerce pings it again).
    let pings_before = w.sim.pings().len();
    w.live
        .engine
        .ensure_subscriptions(INSTANCE, Some(&w.hook))
        .await
        .unwrap();
    let h = w
        .sim
        .webhooks()
        .into_iter()
        .find(|h| h["id"].as_u64() == Some(updated_id))
        .unwrap();
    assert_eq!(h["status"], "active");
    assert_eq!(h["secret"], HOOK_SECRET);
    assert_eq!(w.sim.pings().len(), pings_before + 1);
    assert_eq!(w.sim.webhooks().len(), 3, "nothing duplicated");

    // The late deliveries and a second reconcile change nothing.
    w.deliver(&sent).await;
    w.live
        .engine
        .reconcile(INSTANCE, before, Utc::now())
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.qualifications().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_store_is_reached_with_oauth1_signatures() {
    // The simulator refuses Basic auth here, like WordPress without TLS: every call of the
    // push and of the subscriptions must carry a valid OAuth 1.0a signature.
    let w = world(Setup {
        https: false,
        ..Setup::default()
    })
    .await;
    w.subscribe_and_push().await;
    let code = w.coupon()["code"].as_str().unwrap().to_owned();
    let requests = w.sim.simulator().requests();
    assert!(requests.len() >= 6, "{}", requests.len());
    for r in &requests {
        assert!(r.header("authorization").is_none());
        assert!(
            r.query_param("oauth_signature").is_some(),
            "{} {} is signed",
            r.method,
            r.path
        );
    }
    let order = w.order_with(&code);
    w.sim.set_order_status(order, "completed").unwrap();
    w.deliver(&w.sim.take_outbox()).await;
    assert_eq!(w.qualifications().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_twice_reuses_the_coupon_and_the_customer() {
    // The connector alone (the engine runs a push once per referral; a retry after a crash
    // between the coupon and the customer, or a re-sync, calls the connector again).
    let sim = WooSim::start(WooSimOptions::new(KEY, SECRET))
        .await
        .unwrap();
    let mut registry = Registry::new();
    refsync_woocommerce::register(&mut registry);
    let connector = registry
        .build_connector(
            "woocommerce",
            &json!({
                "store_url": sim.base_url(),
                "consumer_key": KEY,
                "consumer_secret": SECRET,
                "auth": "basic",
                "webhook_secret": HOOK_SECRET,
                "coupon": {"amount": "15"},
            }),
        )
        .unwrap();
    let spec = PushSpec {
        object: ObjectKind::Contact,
        fields: FieldMapping::from_pairs([
            ("email", "{Email}"),
            ("first_name", "{First Name}"),
            ("meta.referral_code", "{Referral Code}"),
        ])
        .unwrap(),
        duplicates: DuplicatePolicy::UpdateExisting,
        defaults: BTreeMap::new(),
    };
    let user = |code: &str, email: &str| ReferredUser {
        first_name: "Bob".into(),
        email: email.into(),
        referral_code: code.into(),
        campaign: CampaignRef {
            id: "7".into(),
            name: None,
        },
        ..ReferredUser::default()
    };
    let first = connector
        .push_referral(&user("BOB1", "bob@example.com"), &spec)
        .await
        .unwrap();
    assert_eq!(first.action, refsync_core::PushAction::Created);
    let again = connector
        .push_referral(&user("BOB1", "bob@example.com"), &spec)
        .await
        .unwrap();
    assert_eq!(again.action, refsync_core::PushAction::Updated);
    assert_eq!(again.links, first.links, "same customer, same coupon");
    assert_eq!(sim.coupons().len(), 1, "no second coupon");
    assert_eq!(sim.customers_with_email("bob@example.com").len(), 1);
    // Another friend gets another coupon.
    let carol = connector
        .push_referral(&user("CAROL2", "carol@example.com"), &spec)
        .await
        .unwrap();
    assert_ne!(carol.links[1], first.links[1]);
    assert_eq!(sim.coupons().len(), 2);
    // link_existing leaves the customer alone; always_create is refused clearly, since
    // WooCommerce keeps one customer per email.
    let mut link = spec.clone();
    link.duplicates = DuplicatePolicy::LinkExisting;
    let linked = connector
        .push_referral(&user("BOB1", "bob@example.com"), &link)
        .await
        .unwrap();
    assert_eq!(linked.action, refsync_core::PushAction::LinkedExisting);
    let mut always = spec.clone();
    always.duplicates = DuplicatePolicy::AlwaysCreate;
    let e = connector
        .push_referral(&user("BOB1", "bob@example.com"), &always)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &refsync_core::ErrorKind::Conflict, "{e}");
    assert!(e.message().contains("one customer per email"), "{e}");
}
