//! The engine end to end over loopback HTTP: a SQLite store in a temp dir, the ledger platform
//! (SQLite), a generic-webhook instance with Standard Webhooks auth.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{
    CampaignRef, DuplicatePolicy, Error, ErrorKind, FieldMapping, NewUser, ObjectKind,
    PlatformUser, PushSpec, QualifyCall, QualifyOutcome, ReferralKey, ReferralPlatform,
    ReferredUser, ReferrerRef, Registry, Result, Reward, RuleSpec, Secret,
};
use refsync_engine::config::{EngineConfig, InstanceEntry};
use refsync_engine::store::{
    DeliveryFilter, DeliveryStatus, JobFilter, JobState, Store, open_store,
};
use refsync_engine::{Engine, Instance};
use refsync_ledger::{Ledger, Metric, NewCampaign, NewRewardRule, Recipient, RewardQuery, Trigger};
use refsync_testkit::sim::{RecordedRequest, SimResponse, Simulator};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN: &str = "admin-token-for-tests";
const FIXTURE: &str =
    include_str!("../../refsync-generic-webhook/tests/fixtures/synthetic-v2_deal_won.json");

fn settings(object_id: &str, push_base: Option<&str>) -> Value {
    let mut s = json!({
        "auth": { "type": "standard_webhooks", "secret": SECRET },
        "events": {
            "delivery_id": "/meta/id",
            "occurred_at": "/meta/timestamp",
            "object_kind": "/meta/entity",
            "object_id": object_id,
            "change": "/meta/action",
            "change_types": { "create": "created", "change": "updated", "delete": "deleted" },
            "account": "/meta/company_id",
            "email": "/data/emails/0/value",
            "stage": "/data/stage_id",
            "previous_stage": "/previous/stage_id",
            "pipeline": "/data/pipeline_id",
            "status": "/data/status",
            "previous_status": "/previous/status",
            "referral_code": "/data/custom_fields/a1b2c3d4e5f60718293a4b5c6d7e8f9012345678/value"
        }
    });
    if let Some(base) = push_base {
        s["push"] = json!({
            "url": format!("{base}/receive"),
            "body": { "email": "{Email}", "code": "{Referral Code}", "fields": "{fields}" },
            "response_id": "/id"
        });
    }
    s
}

fn entry(name: &str, campaign: &str, settings: Value, push: bool) -> InstanceEntry {
    InstanceEntry {
        name: name.into(),
        connector: refsync_generic_webhook::NAME.into(),
        campaign: Some(campaign.into()),
        settings,
        push: push.then(|| PushSpec {
            object: ObjectKind::Deal,
            fields: FieldMapping::from_pairs([
                ("email", "{Email}"),
                ("referral_code", "{Referral Code}"),
                ("first_name", "{First Name}"),
            ])
            .unwrap(),
            duplicates: DuplicatePolicy::UpdateExisting,
            defaults: BTreeMap::new(),
        }),
        rules: vec![
            RuleSpec::DealWon {},
            RuleSpec::DealStageChanged {
                to: "3".into(),
                pipeline: Some("1".into()),
            },
        ],
        oauth: None,
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    refsync_generic_webhook::register(&mut r);
    refsync_ledger::register(&mut r);
    r
}

/// A deal-won body for `code` (None: no referral code) about deal `deal`, vendor id `id`.
fn deal_won(code: Option<&str>, deal: &str, id: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
    match code {
        Some(c) => {
            v["data"]["custom_fields"]["a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"]["value"] =
                json!(c);
        }
        None => {
            v["data"]["custom_fields"] = json!({});
        }
    }
    v["meta"]["entity_id"] = json!(deal);
    v["data"]["id"] = json!(deal);
    v["meta"]["id"] = json!(id);
    serde_json::to_vec(&v).unwrap()
}

fn sign(body: &[u8], msg_id: &str) -> Vec<(String, String)> {
    let now = Utc::now().timestamp();
    let sig = refsync_http::standard_webhooks::sign(SECRET, msg_id, now, body).unwrap();
    vec![
        ("webhook-id".into(), msg_id.into()),
        ("webhook-timestamp".into(), now.to_string()),
        ("webhook-signature".into(), sig),
    ]
}

/// A platform that fails `n` times (Unavailable, or RateLimited with `retry_after`) before
/// delegating to the ledger.
#[derive(Debug)]
struct Flaky {
    inner: Ledger,
    failures: AtomicU32,
    retry_after: Option<Duration>,
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl ReferralPlatform for Flaky {
    fn name(&self) -> &'static str {
        "flaky-ledger"
    }
    async fn create_user(&self, user: &NewUser) -> Result<PlatformUser> {
        ReferralPlatform::create_user(&self.inner, user).await
    }
    async fn get_user(&self, key: &ReferralKey) -> Result<Option<PlatformUser>> {
        ReferralPlatform::get_user(&self.inner, key).await
    }
    async fn qualify(&self, call: &QualifyCall) -> Result<QualifyOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(match self.retry_after {
                Some(d) => Error::new(
                    ErrorKind::RateLimited {
                        retry_after: Some(d),
                    },
                    "429",
                ),
                None => Error::new(ErrorKind::Unavailable, "503 from the platform"),
            });
        }
        ReferralPlatform::qualify(&self.inner, call).await
    }
    async fn unqualify(&self, call: &QualifyCall) -> Result<QualifyOutcome> {
        ReferralPlatform::unqualify(&self.inner, call).await
    }
    async fn rewards_due(&self) -> Result<Vec<Reward>> {
        ReferralPlatform::rewards_due(&self.inner).await
    }
    async fn issue_reward(&self, id: &str) -> Result<Reward> {
        ReferralPlatform::issue_reward(&self.inner, id).await
    }
    async fn cancel_reward(&self, id: &str) -> Result<Reward> {
        ReferralPlatform::cancel_reward(&self.inner, id).await
    }
}

struct World {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    campaign: i64,
    bob_code: String,
    bob_id: i64,
    store: Arc<dyn Store>,
    engine: Engine,
    base: String,
    http: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
}

async fn ledger_world(ledger: &Ledger) -> (i64, String, i64) {
    let c = ledger
        .create_campaign(&NewCampaign {
            name: "Spring".into(),
            link_base_url: None,
        })
        .await
        .unwrap()
        .id;
    ledger
        .add_reward_rule(
            c,
            &NewRewardRule {
                recipient: Recipient::Referrer,
                trigger: Trigger::WhenQualified,
                metric: Metric::Amount,
                value: "1000".into(),
                cap_per_referrer: None,
            },
        )
        .await
        .unwrap();
    let user = |name: &str, email: &str, referrer: Option<ReferrerRef>| NewUser {
        campaign_id: c.to_string(),
        first_name: name.into(),
        email: email.into(),
        referrer,
        meta: BTreeMap::new(),
        notify: false,
    };
    let ann = ledger
        .add_user(&user("Ann", "ann@example.com", None))
        .await
        .unwrap();
    let bob = ledger
        .add_user(&user(
            "Bob",
            "bob@example.com",
            Some(ReferrerRef::Code(ann.code.clone())),
        ))
        .await
        .unwrap();
    (c, bob.code, bob.id)
}

async fn world(
    store_url: Option<String>,
    flaky: Option<(u32, Option<Duration>)>,
    push_base: Option<&str>,
    object_id: &str,
) -> (World, Option<Arc<Flaky>>) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&format!(
        "sqlite://{}",
        dir.path().join("ledger.db").display()
    ))
    .await
    .unwrap();
    let (campaign, bob_code, bob_id) = ledger_world(&ledger).await;
    let store_url =
        store_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("engine.db").display()));
    let store = open_store(&store_url).await.unwrap();
    let mut config = EngineConfig::default();
    config.server.admin_token = Some(Secret::new(ADMIN));
    config.server.body_limit_bytes = 64 * 1024;
    config.worker.max_age_secs = 3600;
    let (platform, flaky): (Arc<dyn ReferralPlatform>, _) = match flaky {
        Some((n, retry_after)) => {
            let f = Arc::new(Flaky {
                inner: ledger.clone(),
                failures: AtomicU32::new(n),
                retry_after,
                calls: AtomicU32::new(0),
            });
            (f.clone(), Some(f))
        }
        None => (Arc::new(ledger.clone()), None),
    };
    let reg = registry();
    let inst = Instance::from_entry(
        &entry(
            "crm",
            &campaign.to_string(),
            settings(object_id, push_base),
            push_base.is_some(),
        ),
        &reg,
    )
    .unwrap();
    let engine = Engine::with_parts(store.clone(), platform, vec![inst], config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = engine.router();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (
        World {
            _dir: dir,
            ledger,
            campaign,
            bob_code,
            bob_id,
            store,
            engine,
            base,
            http: reqwest::Client::new(),
            _server: server,
        },
        flaky,
    )
}

impl World {
    async fn post_hook(
        &self,
        instance: &str,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> u16 {
        let mut req = self
            .http
            .post(format!("{}/hooks/{instance}", self.base))
            .header("content-type", "application/json");
        for (n, v) in headers {
            req = req.header(n, v);
        }
        req.body(body).send().await.unwrap().status().as_u16()
    }

    async fn post_signed(&self, body: Vec<u8>, msg_id: &str) -> u16 {
        let h = sign(&body, msg_id);
        self.post_hook("crm", body, h).await
    }

    async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Processes deliveries and jobs at `now` until nothing is left to claim (bounded).
    async fn drain(&self, now: DateTime<Utc>) {
        for _ in 0..20 {
            let a = self.engine.process_deliveries_once(now).await.unwrap();
            let b = self.engine.send_jobs_once(now).await.unwrap();
            if a == 0 && b == 0 {
                return;
            }
        }
        panic!("work did not drain");
    }

    async fn qualifications(&self) -> usize {
        self.ledger.qualifications(self.bob_id).await.unwrap().len()
    }

    async fn due_rewards(&self) -> usize {
        self.ledger
            .rewards(&RewardQuery {
                campaign_id: Some(self.campaign),
                ..RewardQuery::default()
            })
            .await
            .unwrap()
            .items
            .len()
    }

    async fn deliveries(&self) -> Vec<refsync_engine::store::Delivery> {
        self.store
            .list_deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
    }
}

const OBJECT_ID: &str = "/meta/entity_id";

async fn main_story(store_url: Option<String>) {
    let (w, _) = world(store_url, None, None, OBJECT_ID).await;
    let body = deal_won(Some(&w.bob_code), "8", "evt-1");
    assert_eq!(w.post_signed(body.clone(), "msg_1").await, 200);
    w.drain(Utc::now()).await;
    assert_eq!(w.qualifications().await, 1);
    assert_eq!(w.due_rewards().await, 1);
    // Both rules fired (stage 3 and won) in one delivery: one qualify job.
    let jobs = w.store.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state, JobState::Done);
    assert!(jobs[0].idempotency_key.starts_with("qualify:"));

    // Same webhook again: deduplicated at ingest.
    assert_eq!(w.post_signed(body.clone(), "msg_1").await, 200);
    // Again with a different vendor id (a new body): a new delivery, no new qualification.
    assert_eq!(
        w.post_signed(deal_won(Some(&w.bob_code), "8", "evt-2"), "msg_2")
            .await,
        200
    );
    w.drain(Utc::now()).await;
    assert_eq!(w.deliveries().await.len(), 2);
    assert_eq!(w.qualifications().await, 1);
    assert_eq!(w.due_rewards().await, 1);
    assert_eq!(
        w.store
            .list_jobs(&JobFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );

    // The timeline says why.
    let key = format!("code:{}", w.bob_code);
    let (status, tl) = w
        .admin_get(&format!("/admin/referrals/{key}/timeline"))
        .await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"event"), "{kinds:?}");
    assert!(kinds.contains(&"decision"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "qualified").count(),
        1,
        "{kinds:?}"
    );

    // Metrics.
    let text = w
        .http
        .get(format!("{}/metrics", w.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "refsync_deliveries_received_total{instance=\"crm\"} 3",
        "refsync_deliveries_deduplicated_total{instance=\"crm\"} 1",
        "refsync_jobs{state=\"done\"} 1",
        "refsync_upstream_calls_total{target=\"platform\",name=\"ledger\",outcome=\"ok\"} 1",
        "refsync_queue_depth 0",
        "refsync_oldest_pending_job_age_seconds",
        "refsync_upstream_call_seconds_count{target=\"platform\",name=\"ledger\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn deal_won_qualifies_once_over_http_on_sqlite() {
    main_story(None).await;
}

#[tokio::test]
async fn deal_won_qualifies_once_on_postgres() {
    // PgSchema prints why when it skips (REFSYNC_TEST_POSTGRES_URL unset).
    let Some(pg) = refsync_testkit::services::PgSchema::create("engine", "engine").await else {
        return;
    };
    main_story(Some(pg.url().to_owned())).await;
}

#[tokio::test]
async fn bad_requests_store_nothing() {
    let (w, _) = world(None, None, None, OBJECT_ID).await;
    let body = deal_won(Some(&w.bob_code), "8", "evt-1");
    // Bad signature.
    let mut h = sign(&body, "msg_1");
    h[2].1 = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    assert_eq!(w.post_hook("crm", body.clone(), h).await, 401);
    // No signature.
    assert_eq!(w.post_hook("crm", body.clone(), vec![]).await, 401);
    // Oversized (the limit is 64 KiB here).
    let big = vec![b' '; 65 * 1024];
    let h = sign(&big, "msg_big");
    assert_eq!(w.post_hook("crm", big, h).await, 413);
    // Unknown instance.
    let h = sign(&body, "msg_1");
    assert_eq!(w.post_hook("nope", body, h).await, 404);
    assert!(w.deliveries().await.is_empty());
    // Health.
    for path in ["/healthz", "/readyz"] {
        let r = w
            .http
            .get(format!("{}{path}", w.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let text = w.engine.metrics_text(Utc::now()).await.unwrap();
    assert!(
        text.contains(
            "refsync_deliveries_rejected_total{instance=\"crm\",reason=\"unauthorized\"} 2"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn admin_endpoints_require_the_token() {
    let (w, _) = world(None, None, None, OBJECT_ID).await;
    for path in [
        "/admin/deliveries",
        "/admin/dead-letters",
        "/admin/referrals/code:X/timeline",
    ] {
        let r = w
            .http
            .get(format!("{}{path}", w.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = w
            .http
            .get(format!("{}{path}", w.base))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert_eq!(w.admin_get(path).await.0, 200, "{path}");
    }
    assert_eq!(w.admin_get("/admin/jobs?state=dead").await.0, 200);
    for path in [
        "/admin/deliveries/1/replay",
        "/admin/replay?status=dead",
        "/admin/jobs/1/replay",
    ] {
        let r = w
            .http
            .post(format!("{}{path}", w.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let r = w
        .http
        .post(format!("{}/referrals", w.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn malformed_bodies_are_dead_letters_replayable_after_a_config_fix() {
    // The instance's object id pointer is wrong: valid deliveries do not parse.
    let (w, _) = world(None, None, None, "/meta/no_such_field").await;
    assert_eq!(w.post_signed(b"not json {".to_vec(), "msg_x").await, 200);
    let body = deal_won(Some(&w.bob_code), "8", "evt-1");
    assert_eq!(w.post_signed(body, "msg_1").await, 200);
    w.drain(Utc::now()).await;
    let (status, dead) = w.admin_get("/admin/dead-letters").await;
    assert_eq!(status, 200);
    let dead = dead["deliveries"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        assert!(
            d["last_error"].as_str().unwrap().contains("unparseable"),
            "{d}"
        );
    }
    assert_eq!(w.qualifications().await, 0);

    // Fix the config, replay by filter.
    let inst = Instance::from_entry(
        &entry(
            "crm",
            &w.campaign.to_string(),
            settings(OBJECT_ID, None),
            false,
        ),
        &registry(),
    )
    .unwrap();
    w.engine.set_instance(inst);
    let r = w
        .http
        .post(format!("{}/admin/replay?status=dead&instance=crm", w.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["replayed"], 2);
    w.drain(Utc::now()).await;
    assert_eq!(w.qualifications().await, 1);
    let statuses: Vec<DeliveryStatus> = w.deliveries().await.iter().map(|d| d.status).collect();
    // The non-JSON body is still dead (no config fixes it); the other one is processed.
    assert_eq!(
        statuses,
        vec![DeliveryStatus::Dead, DeliveryStatus::Processed]
    );
    // Replay by id: the dead one stays dead, with its reason.
    let id = w.deliveries().await[0].id;
    let r = w
        .http
        .post(format!("{}/admin/deliveries/{id}/replay", w.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    w.drain(Utc::now()).await;
    assert_eq!(w.deliveries().await[0].status, DeliveryStatus::Dead);
}

async fn retries(retry_after: Option<Duration>) {
    let (w, flaky) = world(None, Some((3, retry_after)), None, OBJECT_ID).await;
    let flaky = flaky.unwrap();
    let body = deal_won(Some(&w.bob_code), "8", "evt-1");
    assert_eq!(w.post_signed(body, "msg_1").await, 200);
    let mut now = Utc::now();
    w.drain(now).await;
    assert_eq!(w.qualifications().await, 0);
    let mut done = false;
    for _ in 0..10 {
        let job = w
            .store
            .list_jobs(&JobFilter::default())
            .await
            .unwrap()
            .remove(0);
        if job.state == JobState::Done {
            done = true;
            break;
        }
        assert_eq!(job.state, JobState::Pending, "{job:?}");
        assert!(job.next_attempt_at > now, "retry later, not now");
        if let Some(d) = retry_after {
            let wait = (job.next_attempt_at - now).to_std().unwrap();
            // (times are stored with microsecond precision)
            assert!(
                wait + Duration::from_millis(1) >= d,
                "Retry-After honoured: {wait:?}"
            );
        }
        // Not due yet: nothing to claim.
        assert_eq!(w.engine.send_jobs_once(now).await.unwrap(), 0);
        now = job.next_attempt_at;
        w.drain(now).await;
    }
    assert!(done);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
    assert_eq!(w.qualifications().await, 1);
    assert_eq!(w.due_rewards().await, 1);
    let text = w.engine.metrics_text(now).await.unwrap();
    if retry_after.is_some() {
        assert!(
            text.contains(
                "refsync_upstream_429_total{target=\"platform\",name=\"flaky-ledger\"} 3"
            ),
            "{text}"
        );
    }
}

#[tokio::test]
async fn unavailable_platform_is_retried_with_backoff() {
    retries(None).await;
}

#[tokio::test]
async fn rate_limited_platform_is_retried_after_retry_after() {
    retries(Some(Duration::from_secs(30))).await;
}

#[tokio::test]
async fn a_failing_job_becomes_a_dead_letter_after_max_age() {
    let (w, flaky) = world(None, Some((u32::MAX, None)), None, OBJECT_ID).await;
    let flaky = flaky.unwrap();
    assert_eq!(
        w.post_signed(deal_won(Some(&w.bob_code), "8", "evt-1"), "msg_1")
            .await,
        200
    );
    let mut now = Utc::now();
    for _ in 0..200 {
        w.drain(now).await;
        let job = w
            .store
            .list_jobs(&JobFilter::default())
            .await
            .unwrap()
            .remove(0);
        if job.state == JobState::Dead {
            assert!(job.last_error.as_deref().unwrap().contains("503"));
            let (status, dead) = w.admin_get("/admin/jobs?state=dead").await;
            assert_eq!(status, 200);
            assert_eq!(dead["jobs"].as_array().unwrap().len(), 1);
            // A later event for the same referral does not queue a second qualify.
            assert_eq!(
                w.post_signed(deal_won(Some(&w.bob_code), "8", "evt-2"), "msg_2")
                    .await,
                200
            );
            w.drain(now).await;
            assert_eq!(
                w.store
                    .list_jobs(&JobFilter::default())
                    .await
                    .unwrap()
                    .len(),
                1
            );
            // Replayed after the outage (the platform works again): qualified once.
            flaky.failures.store(0, Ordering::SeqCst);
            let r = w
                .http
                .post(format!("{}/admin/jobs/{}/replay", w.base, job.id))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            w.drain(Utc::now()).await;
            assert_eq!(w.qualifications().await, 1);
            return;
        }
        now = job.next_attempt_at;
    }
    panic!("never dead");
}

#[tokio::test]
async fn pushed_referral_is_linked_and_a_later_webhook_qualifies_it() {
    let sim = Simulator::start(|req: &RecordedRequest| match req.path.as_str() {
        "/receive" => SimResponse::json(200, &json!({"id": "deal-77"})),
        _ => SimResponse::json(404, &json!({})),
    })
    .await
    .unwrap();
    let (w, _) = world(None, None, Some(&sim.base_url()), OBJECT_ID).await;
    let user = ReferredUser {
        first_name: "Bob".into(),
        email: "bob@example.com".into(),
        referral_code: w.bob_code.clone(),
        campaign: CampaignRef {
            id: w.campaign.to_string(),
            name: Some("Spring".into()),
        },
        ..ReferredUser::default()
    };
    let payload = json!({"instance": "crm", "user": user});
    let r = w
        .http
        .post(format!("{}/referrals", w.base))
        .header("x-refsync-token", "wrong")
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = w
        .http
        .post(format!("{}/referrals", w.base))
        .header("x-refsync-token", ADMIN)
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    w.drain(Utc::now()).await;
    let pushed = sim.requests_to("POST", "/receive");
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].json().unwrap()["code"], json!(w.bob_code));
    let key = format!("code:{}", w.bob_code);
    let links = w.store.links_by_referral(&key).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].object.id, "deal-77");

    // The CRM later reports the deal won, without any referral code: the link qualifies it.
    assert_eq!(
        w.post_signed(deal_won(None, "deal-77", "evt-9"), "msg_9")
            .await,
        200
    );
    w.drain(Utc::now()).await;
    assert_eq!(w.qualifications().await, 1);
    assert_eq!(w.due_rewards().await, 1);
}

#[tokio::test]
async fn ingest_without_http_and_run_with_graceful_shutdown() {
    let (w, _) = world(None, None, None, OBJECT_ID).await;
    let body = deal_won(Some(&w.bob_code), "8", "evt-1");
    let mut req = refsync_core::WebhookRequest::post("/hooks/crm", body.clone());
    for (n, v) in sign(&body, "msg_1") {
        req.set_header(&n, v);
    }
    let out = w
        .engine
        .ingest("crm", req.clone(), Utc::now())
        .await
        .unwrap();
    assert!(matches!(
        out,
        refsync_engine::IngestOutcome::Accepted { .. }
    ));
    let out = w.engine.ingest("crm", req, Utc::now()).await.unwrap();
    assert!(matches!(
        out,
        refsync_engine::IngestOutcome::Duplicate { .. }
    ));

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let engine = w.engine.clone();
    let runner = tokio::spawn(async move {
        engine
            .run(async {
                let _ = rx.await;
            })
            .await;
    });
    // Bounded poll (no timing assertion): wait until the job is done.
    let mut done = false;
    for _ in 0..400 {
        let jobs = w.store.list_jobs(&JobFilter::default()).await.unwrap();
        if jobs.iter().any(|j| j.state == JobState::Done) {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tx.send(()).unwrap();
    runner.await.unwrap();
    assert!(done);
    assert_eq!(w.qualifications().await, 1);
}

#[tokio::test]
async fn engine_new_builds_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    config.store.url = Secret::new(format!(
        "sqlite://{}",
        dir.path().join("engine.db").display()
    ));
    config.platform = refsync_engine::config::PlatformConfig::Ledger(
        json!({"database_url": format!("sqlite://{}", dir.path().join("ledger.db").display())})
            .as_object()
            .unwrap()
            .clone(),
    );
    config
        .instances
        .push(entry("crm", "1", settings(OBJECT_ID, None), false));
    let engine = Engine::new(config.clone(), &registry()).await.unwrap();
    assert_eq!(engine.instance_names(), vec!["crm".to_owned()]);
    // An unknown connector is a config error.
    config.instances[0].connector = "nope".into();
    let err = Engine::new(config, &registry()).await.unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Config);
}
