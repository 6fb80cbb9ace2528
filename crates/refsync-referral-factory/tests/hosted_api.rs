//! What only the hosted API does, against wiremock on loopback: 429 storms and the circuit
//! breaker, the rate limit, retries of 5xx and timeouts, 422 conflicts, pagination, v1 mode,
//! the inbound webhook. Time: a `ManualClock` for the breaker and retry waits, paused tokio
//! time for the rate limiter; no assertion depends on wall-clock timing.

use std::sync::Arc;
use std::time::Duration;

use refsync_core::{
    ErrorKind, NewUser, QualifyAction, QualifyCall, QualifyOutcome, ReferralKey, ReferralPlatform,
    ReferrerRef, RewardStatus,
};
use refsync_http::{RateLimit, RateLimiter, RetryPolicy};
use refsync_referral_factory::{
    ApiVersion, BreakerState, Config, CreateUser, Direction, FilterOp, ListQuery, ManualClock,
    ReferralFactory, RewardMetric, RewardView, UNAUTHORIZED_MESSAGE, WebhookKey,
};
use serde_json::{Value, json};
use wiremock::matchers::{
    body_json, body_partial_json, body_string, header, method, path, query_param,
};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const TOKEN: &str = "rf-s3cr3t-token-0123456789";

fn config(server: &MockServer) -> Config {
    Config::new(TOKEN).with_base_url(format!("{}/api/v2", server.uri()))
}

fn client_with(config: Config) -> (ReferralFactory, ManualClock) {
    let clock = ManualClock::new();
    let client = ReferralFactory::builder(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (client, clock)
}

fn client(server: &MockServer) -> (ReferralFactory, ManualClock) {
    client_with(config(server))
}

fn user(id: u64, code: &str, email: &str, qualified_at: Option<&str>) -> Value {
    json!({
        "id": id, "campaign_id": 3, "referrer_id": null, "code": code,
        "url": format!("https://r.example/{code}"), "first_name": "Ann", "email": email,
        "reach": 0, "source": "Api", "type": "person_invited",
        "signed_up_at": "2024-05-01T10:00:00Z", "qualified_at": qualified_at,
        "unsubscribed_at": null, "meta": [], "coupon": null
    })
}

/// Answers `body` (a user, under `data` or not) with `qualified_at` set to the time of the
/// answer, as Referral Factory does for a fresh qualification (it documents no message beside
/// the user); `format` is the time format (RFC 3339 when `None`). The stamps are kept.
#[derive(Clone)]
struct QualifiedNow {
    body: Value,
    format: Option<&'static str>,
    message: Option<&'static str>,
    stamps: Arc<std::sync::Mutex<Vec<String>>>,
}

impl QualifiedNow {
    fn new(body: Value) -> Self {
        QualifiedNow {
            body,
            format: None,
            message: None,
            stamps: Arc::default(),
        }
    }
    fn format(mut self, format: &'static str) -> Self {
        self.format = Some(format);
        self
    }
    fn message(mut self, message: &'static str) -> Self {
        self.message = Some(message);
        self
    }
    fn stamps(&self) -> Vec<String> {
        self.stamps.lock().unwrap().clone()
    }
}

impl Respond for QualifiedNow {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let now = chrono::Utc::now();
        let stamp = match self.format {
            Some(f) => now.format(f).to_string(),
            None => now.to_rfc3339(),
        };
        self.stamps.lock().unwrap().push(stamp.clone());
        let mut body = self.body.clone();
        match body.get_mut("data") {
            Some(data) => data["qualified_at"] = json!(stamp),
            None => body["qualified_at"] = json!(stamp),
        }
        if let Some(m) = self.message {
            body["message"] = json!(m);
        }
        ResponseTemplate::new(200).set_body_json(body)
    }
}

async fn hits(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

fn rate_limited() -> ResponseTemplate {
    ResponseTemplate::new(429)
        .insert_header("retry-after", "1")
        .set_body_json(json!({"code": 429, "message": "Too Many Attempts."}))
}

fn id_key(id: &str) -> ReferralKey {
    ReferralKey::Id { id: id.into() }
}

// ---- users ------------------------------------------------------------------------------------

#[tokio::test]
async fn create_user_sends_the_v2_body_with_bearer_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(json!({
            "campaign_id": 3, "first_name": "Bob", "email": "bob@example.com", "notify": true,
            "referrer": {"field": "code", "value": "ANN1"},
            "meta": [{"field": "company", "value": "Acme"}]
        })))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"data": user(8, "BOB1", "bob@example.com", None)})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&server);
    cfg.notify = true;
    let (c, _) = client_with(cfg);
    let u = c
        .add_user(
            &CreateUser::new("3", "Bob", "bob@example.com")
                .referrer(ReferrerRef::Code("ANN1".into()))
                .meta("company", "Acme"),
        )
        .await
        .unwrap();
    assert_eq!(u.id, "8");
    assert_eq!(u.code.as_deref(), Some("BOB1"));
    assert!(u.is_person_invited());
}

#[tokio::test]
async fn referrer_by_id_and_email_in_v2() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users"))
        .and(body_partial_json(
            json!({"referrer": {"field": "id", "value": 12}, "notify": false}),
        ))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"data": user(9, "C9", "c@x.com", None)})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users"))
        .and(body_partial_json(
            json!({"referrer": {"field": "email", "value": "ann@x.com"}}),
        ))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"data": user(10, "D10", "d@x.com", None)})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    // Through the trait, as the engine calls it.
    let p: &dyn ReferralPlatform = &c;
    let made = p
        .create_user(&NewUser {
            campaign_id: "3".into(),
            first_name: "C".into(),
            email: "c@x.com".into(),
            referrer: Some(ReferrerRef::Id("12".into())),
            meta: Default::default(),
            notify: false,
        })
        .await
        .unwrap();
    assert_eq!(
        (
            made.id.as_str(),
            made.code.as_str(),
            made.campaign_id.as_str()
        ),
        ("9", "C9", "3")
    );
    c.add_user(
        &CreateUser::new("3", "D", "d@x.com").referrer(ReferrerRef::Email("ann@x.com".into())),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn get_user_by_id_code_and_email() {
    let server = MockServer::start().await;
    for (p, body) in [
        (
            "/api/v2/users/12",
            user(12, "ANN1", "ann@example.com", None),
        ),
        (
            "/api/v2/users/ANN1",
            user(12, "ANN1", "ann@example.com", None),
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": body})))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/api/v2/users/ann+x@example.com"))
        .and(query_param("campaign_id", "3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user(
            13,
            "ANN2",
            "ann+x@example.com",
            None,
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/404"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"code": 404, "message": "Not found"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    assert_eq!(
        c.find_user(&id_key("12"))
            .await
            .unwrap()
            .unwrap()
            .code
            .as_deref(),
        Some("ANN1")
    );
    let by_code = c
        .get_user(&ReferralKey::Code {
            code: "ANN1".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_code.id, "12");
    // Unwrapped objects are accepted too.
    let by_email = c
        .find_user(&ReferralKey::Email {
            email: "ann+x@example.com".into(),
            campaign: "3".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email.id, "13");
    // 404 is "no such user", not retried.
    assert_eq!(c.find_user(&id_key("404")).await.unwrap(), None);
}

// ---- pagination --------------------------------------------------------------------------------

#[tokio::test]
async fn list_users_follows_links_next_with_filters_and_never_leaves_the_origin() {
    let server = MockServer::start().await;
    let base = format!("{}/api/v2", server.uri());
    // Page 1: matched on every parameter the query sets.
    Mock::given(method("GET"))
        .and(path("/api/v2/users"))
        .and(query_param("campaign_id", "3"))
        .and(query_param("filter[email][like]", "%@example.com"))
        .and(query_param("filter[qualified_at][gte]", "2024-01-01"))
        .and(query_param("order_by", "signed_up_at"))
        .and(query_param("order_direction", "desc"))
        .and(query_param("with", "referrer,rewards"))
        .and(query_param("fields", "id,email,code"))
        .and(query_param("per_page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [user(1, "A", "a@example.com", None), user(2, "B", "b@example.com", None)],
            "links": {"first": null, "last": null, "prev": null,
                      "next": format!("{base}/users?page=2&per_page=2&campaign_id=3")},
            "meta": {"current_page": 1, "per_page": 2, "total": 5, "last_page": 3}
        })))
        .expect(1)
        .mount(&server)
        .await;
    // Page 2 says page 3 is on another host: the client must stay on its own origin.
    Mock::given(method("GET"))
        .and(path("/api/v2/users"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [user(3, "C", "c@example.com", None), user(4, "D", "d@example.com", None)],
            "links": {"next": "http://elsewhere.invalid/api/v2/users?page=3&per_page=2&campaign_id=3"},
            "meta": {"current_page": 2, "per_page": 2, "total": 5, "last_page": 3}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users"))
        .and(query_param("page", "3"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [user(5, "E", "e@example.com", Some("2024-06-01T00:00:00Z"))],
            "links": {"next": null},
            "meta": {"current_page": 3, "per_page": 2, "total": 5, "last_page": 3}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let q = ListQuery::new()
        .campaign("3")
        .filter("email", FilterOp::Like, "%@example.com")
        .filter("qualified_at", FilterOp::Gte, "2024-01-01")
        .order_by("signed_up_at", Direction::Desc)
        .with("referrer")
        .with("rewards")
        .fields(["id", "email", "code"])
        .per_page(2);
    let mut pages = c.list_users(&q).unwrap();
    let first = pages.next_page().await.unwrap().unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.meta.as_ref().unwrap().total, Some(5));
    let rest = pages.collect_all().await.unwrap();
    let ids: Vec<&str> = rest.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["3", "4", "5"]);
    assert!(rest[2].qualified_at.is_some());
    assert_eq!(hits(&server).await, 3);
}

#[tokio::test]
async fn per_page_above_250_is_rejected_before_any_call() {
    let server = MockServer::start().await;
    let (c, _) = client(&server);
    let e = c.list_users(&ListQuery::new().per_page(251)).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Validation);
    assert!(e.message().contains("250"), "{e}");
    assert!(
        c.list_rewards(
            RewardView::Due,
            RewardMetric::Amount,
            &ListQuery::new().per_page(500)
        )
        .is_err()
    );
    assert_eq!(hits(&server).await, 0);
}

/// The ledger's `links.next` may be relative (path and query): it is resolved on the
/// configured origin; a protocol-relative one naming another host is not followed there.
#[tokio::test]
async fn a_relative_links_next_is_resolved_on_the_configured_origin() {
    let server = MockServer::start().await;
    let bearer = format!("Bearer {TOKEN}");
    Mock::given(method("GET"))
        .and(path("/api/v2/users"))
        .and(query_param("per_page", "2"))
        .and(|r: &Request| !r.url.query_pairs().any(|(k, _)| k == "page"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [user(1, "A", "a@example.com", None), user(2, "B", "b@example.com", None)],
            "links": {"next": "/api/v2/users?per_page=2&page=2"},
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users"))
        .and(query_param("page", "2"))
        .and(header("authorization", bearer.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [user(3, "C", "c@example.com", None), user(4, "D", "d@example.com", None)],
            "links": {"next": "//elsewhere.invalid/api/v2/users?per_page=2&page=3"},
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users"))
        .and(query_param("page", "3"))
        .and(header("authorization", bearer.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [user(5, "E", "e@example.com", None)],
            "links": {"next": null},
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let all = c
        .list_users(&ListQuery::new().per_page(2))
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"]);
    assert_eq!(hits(&server).await, 3);
}

// ---- 429, the circuit breaker, the rate limit -----------------------------------------------

#[tokio::test]
async fn retry_after_is_honoured_and_a_long_one_is_returned() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/1"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": user(1, "A", "a@x.com", None)})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/2"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .mount(&server)
        .await;
    let (c, clock) = client(&server);
    c.find_user(&id_key("1")).await.unwrap().unwrap();
    assert_eq!(hits(&server).await, 2);
    assert_eq!(clock.sleeps().len(), 1);
    assert!(
        clock.sleeps()[0] >= Duration::from_secs(7),
        "{:?}",
        clock.sleeps()
    );
    // One 429 is not a storm.
    assert!(matches!(
        c.breaker().state(),
        BreakerState::Closed { recent_429s: 1 }
    ));

    // More than max_retry_after (60 s): not slept through, handed to the caller (the outbox).
    clock.advance(Duration::from_secs(120));
    let e = c.find_user(&id_key("2")).await.unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert_eq!(hits(&server).await, 3);
}

#[tokio::test]
async fn a_429_storm_opens_the_breaker_and_nothing_reaches_the_server_while_open() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(rate_limited())
        .mount(&server)
        .await;
    let (c, clock) = client(&server);

    // First 429: waits Retry-After and tries again; second 429 within 60 s: open.
    let e = c.find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(hits(&server).await, 2);
    assert_eq!(
        e.kind(),
        &ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(300))
        }
    );
    assert!(e.is_retryable());
    assert!(e.message().contains("circuit breaker open"), "{e}");
    assert!(e.message().contains("7 days"), "{e}");

    // While open: every call fails fast, whatever it is, and the server sees nothing.
    for i in 0..20 {
        clock.advance(Duration::from_secs(10));
        let e = match i % 4 {
            0 => c.find_user(&id_key("1")).await.unwrap_err(),
            1 => c
                .add_user(&CreateUser::new("3", "A", "a@x.com"))
                .await
                .unwrap_err(),
            2 => c
                .qualify_user(&ReferralKey::Code { code: "A".into() })
                .await
                .unwrap_err(),
            _ => c
                .list_users(&ListQuery::new())
                .unwrap()
                .next_page()
                .await
                .unwrap_err(),
        };
        let remaining = Duration::from_secs(300 - 10 * (i + 1));
        assert_eq!(
            e.kind(),
            &ErrorKind::RateLimited {
                retry_after: Some(remaining)
            },
            "{e}"
        );
    }
    assert_eq!(
        hits(&server).await,
        2,
        "no request while the breaker is open"
    );
    assert_eq!(
        c.breaker().state(),
        BreakerState::Open {
            remaining: Duration::from_secs(100),
            cooldown: Duration::from_secs(300)
        }
    );

    // Cool-down over: half-open. The upstream is fine again; of three concurrent calls exactly
    // one (the probe) reaches it, the others fail fast while it is in flight.
    clock.advance(Duration::from_secs(100));
    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": user(1, "A", "a@x.com", None)}))
                .set_delay(Duration::from_millis(50)),
        )
        .mount(&server)
        .await;
    let one = id_key("1");
    let (a, b, d) = tokio::join!(c.find_user(&one), c.find_user(&one), c.find_user(&one));
    let results = [a, b, d];
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r.kind(), ErrorKind::RateLimited { .. }));
        assert!(r.message().contains("half-open"), "{r}");
    }
    assert_eq!(hits(&server).await, 1);
    // The probe succeeded: closed, calls flow.
    assert_eq!(c.breaker().state(), BreakerState::Closed { recent_429s: 0 });
    c.find_user(&id_key("1")).await.unwrap();
    c.find_user(&id_key("1")).await.unwrap();
    assert_eq!(hits(&server).await, 3);
}

#[tokio::test]
async fn a_rate_limited_probe_reopens_with_a_doubled_cooldown_capped_at_an_hour() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(rate_limited())
        .mount(&server)
        .await;
    let (c, clock) = client(&server);
    c.find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(hits(&server).await, 2);
    let mut cooldown = 300;
    for probe in 1..=6 {
        clock.advance(Duration::from_secs(cooldown));
        let e = c.find_user(&id_key("1")).await.unwrap_err();
        cooldown = (cooldown * 2).min(3600);
        assert_eq!(
            e.kind(),
            &ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(cooldown))
            },
            "probe {probe}: {e}"
        );
        // Exactly one request per probe: a failed probe is not retried.
        assert_eq!(hits(&server).await, 2 + probe);
    }
    assert_eq!(cooldown, 3600);
}

#[tokio::test]
async fn the_breaker_cooldown_is_configurable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(rate_limited())
        .mount(&server)
        .await;
    let mut cfg = config(&server);
    cfg.breaker_cooldown_secs = 90;
    let (c, _) = client_with(cfg);
    let e = c.find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(90)));
}

/// Referral Factory's rate limit as it behaves: the first request is answered 429 with
/// `Retry-After: n`, and so is every request before those n seconds are over (on the test's
/// manual clock). Every request is logged as (time on the clock, status).
#[derive(Clone)]
struct Limited {
    clock: ManualClock,
    retry_after: Duration,
    until: Arc<std::sync::Mutex<Option<Duration>>>,
    log: Arc<std::sync::Mutex<Vec<(Duration, u16)>>>,
}

impl Limited {
    fn new(clock: &ManualClock, retry_after_secs: u64) -> Self {
        Limited {
            clock: clock.clone(),
            retry_after: Duration::from_secs(retry_after_secs),
            until: Arc::default(),
            log: Arc::default(),
        }
    }
    fn log(&self) -> Vec<(Duration, u16)> {
        self.log.lock().unwrap().clone()
    }
}

impl Respond for Limited {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let now = self.clock.elapsed();
        let mut until = self.until.lock().unwrap();
        let until = *until.get_or_insert(now + self.retry_after);
        let status = if now < until { 429 } else { 200 };
        self.log.lock().unwrap().push((now, status));
        if status == 429 {
            let wait = (until - now).as_secs_f64().ceil();
            ResponseTemplate::new(429)
                .insert_header("retry-after", wait.to_string().as_str())
                .set_body_json(json!({"code": 429, "message": "Too Many Attempts."}))
        } else {
            ResponseTemplate::new(200).set_body_json(json!({"data": user(1, "A", "a@x.com", None)}))
        }
    }
}

#[tokio::test]
async fn after_a_429_no_call_goes_out_until_its_retry_after_is_over() {
    let server = MockServer::start().await;
    let clock = ManualClock::new();
    let limited = Limited::new(&clock, 3);
    Mock::given(method("GET"))
        .respond_with(limited.clone())
        .mount(&server)
        .await;
    // No retries: the call that gets the 429 hands it back at once.
    let c = ReferralFactory::builder(config(&server))
        .clock(Arc::new(clock.clone()))
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let e = c.find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        }
    );
    // 0.3 s later three other calls (clones share the state) start together: they wait until
    // the 3 s are over, and none of them is answered 429.
    clock.advance(Duration::from_millis(300));
    let (c1, c2, c3) = (c.clone(), c.clone(), c.clone());
    let one = id_key("1");
    let (a, b, d) = tokio::join!(c1.find_user(&one), c2.find_user(&one), c3.find_user(&one));
    for r in [a, b, d] {
        r.unwrap().unwrap();
    }
    let log = limited.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(log[0], (Duration::ZERO, 429));
    for &(at, status) in &log[1..] {
        assert_eq!(status, 200, "{log:?}");
        assert!(
            at >= Duration::from_secs(3),
            "sent before Retry-After was over: {log:?}"
        );
    }
    assert_eq!(clock.sleeps(), [Duration::from_millis(2700)]);
    // One 429 in all: the breaker is not near opening.
    assert_eq!(c.breaker().state(), BreakerState::Closed { recent_429s: 1 });
}

#[tokio::test]
async fn a_retry_after_longer_than_a_minute_makes_the_other_calls_fail_fast() {
    let server = MockServer::start().await;
    let clock = ManualClock::new();
    let limited = Limited::new(&clock, 120);
    Mock::given(method("GET"))
        .respond_with(limited.clone())
        .mount(&server)
        .await;
    let c = ReferralFactory::builder(config(&server))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    // Above max_retry_after (60 s): handed to the caller, not slept through.
    let e = c.find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(120)));
    // 20 s later another call fails fast with the time left, without a request.
    clock.advance(Duration::from_secs(20));
    let e = c.clone().find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(100))
        }
    );
    assert!(e.message().contains("Retry-After"), "{e}");
    assert!(e.message().contains("7-day"), "{e}");
    assert_eq!(limited.log().len(), 1);
    assert!(clock.sleeps().is_empty());
    // Once it is over, calls flow.
    clock.advance(Duration::from_secs(100));
    c.find_user(&id_key("1")).await.unwrap().unwrap();
    assert_eq!(
        limited.log(),
        [(Duration::ZERO, 429), (Duration::from_secs(120), 200)]
    );
    assert!(matches!(c.breaker().state(), BreakerState::Closed { .. }));
}

/// Keeps tokio's paused clock from auto-advancing while requests are on the wire (a
/// `spawn_blocking` task inhibits auto-advance), so time moves only with `advance`.
struct HoldClock {
    release: std::sync::mpsc::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl HoldClock {
    fn new() -> Self {
        let (release, rx) = std::sync::mpsc::channel::<()>();
        let task = tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        HoldClock { release, task }
    }
    async fn release(self) {
        let _ = self.release.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn no_more_calls_than_the_rate_limit_allows() {
    let hold = HoldClock::new();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": user(1, "A", "a@x.com", None)})),
        )
        .mount(&server)
        .await;
    let mut cfg = config(&server);
    cfg.rate_limit_per_minute = 3;
    // The default (tokio) clock: the limiter and the client share paused time.
    let c = ReferralFactory::new(cfg).unwrap();
    // The default limiter keeps a spent token half a second past the minute: Referral Factory
    // counts arrivals, which can lag the start of a call.
    assert_eq!(
        c.rate_limiter().limit(),
        RateLimit::new(3, Duration::from_millis(60_500))
    );
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..7 {
        let c = c.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            c.find_user(&id_key("1")).await.unwrap();
            done_tx.send(()).unwrap();
        });
    }
    let t0 = tokio::time::Instant::now();
    for (window, expected_total) in [(0u64, 3usize), (1, 6), (2, 7)] {
        let already = if window == 0 {
            0
        } else {
            [3, 6][window as usize - 1]
        };
        if window > 0 {
            // A spent token comes back 60.5 s after it was spent (pinned below).
            tokio::time::advance(Duration::from_millis(60_500)).await;
        }
        for _ in already..expected_total {
            done.recv().await.unwrap();
        }
        assert_eq!(
            hits(&server).await,
            expected_total,
            "after {} s of (paused) time",
            t0.elapsed().as_secs()
        );
        assert!(done.try_recv().is_err(), "a call went out early");
    }
    assert_eq!(t0.elapsed(), Duration::from_millis(121_000));
    hold.release().await;
}

#[test]
fn the_builder_refuses_a_rate_limiter_above_600_calls_a_minute() {
    let build = |limit: RateLimit| {
        ReferralFactory::builder(Config::new(TOKEN))
            .rate_limiter(RateLimiter::new(limit))
            .build()
    };
    for limit in [
        RateLimit::per_minute(601),
        RateLimit::per_second(11),
        // Ten a second, 600 a minute on average, but 9 bursts of 70 fit in one minute.
        RateLimit::new(70, Duration::from_secs(7)),
        // 1000 an hour may all go in one minute.
        RateLimit::per_hour(1000),
        RateLimit::new(1, Duration::ZERO),
    ] {
        let e = build(limit).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config, "{limit:?}");
        assert!(e.message().contains("600 calls per minute"), "{e}");
        assert!(e.message().contains("7 days"), "{e}");
    }
    for limit in [
        RateLimit::per_minute(600),
        RateLimit::per_minute(540),
        RateLimit::per_second(10),
        RateLimit::new(100, Duration::from_secs(10)),
        RateLimit::per_hour(600),
    ] {
        build(limit).unwrap_or_else(|e| panic!("{limit:?}: {e}"));
    }
}

// ---- retries: 5xx and timeouts only for idempotent calls --------------------------------------

#[tokio::test]
async fn server_errors_are_retried_only_for_idempotent_calls() {
    let server = MockServer::start().await;
    let unavailable = || {
        ResponseTemplate::new(503)
            .set_body_json(json!({"code": 503, "message": "Service Unavailable"}))
    };
    Mock::given(method("GET"))
        .respond_with(unavailable())
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(unavailable())
        .mount(&server)
        .await;
    // PUT qualification: two failures, then success.
    Mock::given(method("PUT"))
        .respond_with(unavailable())
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/users/qualification"))
        .and(body_json(json!({"code": "ANN1", "qualified": true})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": user(1, "ANN1", "a@x.com", Some("2024-06-01T00:00:00Z"))}),
        ))
        .mount(&server)
        .await;
    let (c, clock) = client(&server);

    let e = c.find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unavailable);
    assert!(e.is_retryable());
    assert_eq!(hits(&server).await, 4, "GET: 4 tries");
    assert_eq!(clock.sleeps().len(), 3);

    let e = c
        .add_user(&CreateUser::new("3", "A", "a@x.com"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unavailable);
    assert_eq!(hits(&server).await, 5, "POST /users: one try");

    let e = c.issue_due_reward("5").await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unavailable);
    assert_eq!(hits(&server).await, 6, "POST /rewards/issue: one try");

    let u = c
        .set_qualification(
            &ReferralKey::Code {
                code: "ANN1".into(),
            },
            true,
        )
        .await
        .unwrap();
    assert!(u.qualified_at.is_some());
    assert_eq!(hits(&server).await, 9, "PUT qualification: retried");
    // 5xx are answers, not rate limits: the breaker stays closed.
    assert_eq!(c.breaker().state(), BreakerState::Closed { recent_429s: 0 });
}

#[tokio::test]
async fn timeouts_are_retried_only_for_idempotent_calls() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let mut cfg = config(&server);
    cfg.timeout_secs = 1;
    cfg.max_attempts = 2;
    let (c, _) = client_with(cfg);

    let e = c.find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unavailable);
    assert!(e.message().contains("timeout"), "{e}");
    assert!(e.is_retryable());
    assert_eq!(hits(&server).await, 2, "GET: retried after a timeout");

    let e = c
        .add_user(&CreateUser::new("3", "A", "a@x.com"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unavailable);
    assert!(
        !e.is_retryable(),
        "a timed-out POST may have been processed"
    );
    assert!(e.message().contains("may have been processed"), "{e}");
    assert_eq!(hits(&server).await, 3, "POST /users: not retried");
    // Timeouts say nothing about rate limits.
    assert_eq!(c.breaker().state(), BreakerState::Closed { recent_429s: 0 });
}

// ---- errors people can act on -----------------------------------------------------------------

#[tokio::test]
async fn email_already_exists_is_a_permanent_conflict() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "code": 422, "message": "The given data was invalid.",
            "errors": {"email": [{"field": "email", "message": "The email has already been taken."}]}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let e = c
        .add_user(&CreateUser::new("3", "A", "a@x.com"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Conflict);
    assert!(!e.is_retryable());
    assert_eq!(
        e.message(),
        "email already exists in campaign 3: Referral Factory keeps the first referrer; not retried"
    );
    assert_eq!(e.operation(), Some("create_user"));
    assert_eq!(e.connector(), Some("referral-factory"));
}

#[tokio::test]
async fn other_422s_carry_referral_factorys_field_messages() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "code": 422, "message": "The given data was invalid.",
            "errors": {
                "email": [{"field": "email", "message": "The email must be a valid email address."}],
                "referrer": [{"field": "referrer", "message": "The selected referrer is invalid."}]
            }
        })))
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let e = c
        .add_user(
            &CreateUser::new("3", "A", "not-an-email").referrer(ReferrerRef::Code("NOPE".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Validation);
    assert!(
        e.message()
            .contains("email: The email must be a valid email address."),
        "{e}"
    );
    assert!(
        e.message()
            .contains("referrer: The selected referrer is invalid."),
        "{e}"
    );
    assert_eq!(hits(&server).await, 1);
}

/// Answers with `status` and a body echoing every credential it received.
struct Echo(u16);

impl Respond for Echo {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        ResponseTemplate::new(self.0).set_body_json(json!({
            "code": self.0,
            "message": format!("rejected {auth} at {}", req.url),
            "errors": {"token": [{"field": "token", "message": format!("bad {auth}")}]}
        }))
    }
}

#[tokio::test]
async fn no_error_message_ever_contains_the_token_or_the_webhook_url() {
    let hook_token = "h00k-s3cr3t-path-token";
    for status in [400u16, 401, 403, 404, 409, 422, 429, 500, 503] {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(Echo(status))
            .mount(&server)
            .await;
        let mut cfg = config(&server);
        cfg.inbound_webhook_url =
            Some(format!("{}/webhook/{hook_token}/qualify", server.uri()).into());
        let (c, _) = client_with(cfg);
        let mut errors = vec![
            c.add_user(&CreateUser::new("3", "A", "a@x.com"))
                .await
                .unwrap_err(),
            c.set_qualification(&ReferralKey::Code { code: "A".into() }, true)
                .await
                .unwrap_err(),
            c.qualify_via_webhook(&WebhookKey::Code("A".into()))
                .await
                .unwrap_err(),
        ];
        if status != 404 {
            errors.push(c.find_user(&id_key("1")).await.unwrap_err());
        }
        for e in &errors {
            let shown = format!("{e} | {e:?} | {c:?}");
            assert!(
                !shown.contains("s3cr3t"),
                "HTTP {status} leaked a secret: {shown}"
            );
        }
        if status == 401 {
            assert_eq!(errors[0].kind(), &ErrorKind::Unauthorized);
            assert_eq!(errors[0].message(), UNAUTHORIZED_MESSAGE);
        }
    }
}

#[tokio::test]
async fn unauthorized_says_what_to_do() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": 401, "message": "Unauthenticated."})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let e = c.find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unauthorized);
    assert!(!e.is_retryable());
    assert!(e.message().contains("Settings → API"), "{e}");
    assert!(e.message().contains("invalidates the old one"), "{e}");
}

// ---- qualification ----------------------------------------------------------------------------

fn call(action: QualifyAction, referral: ReferralKey) -> QualifyCall {
    QualifyCall {
        action,
        campaign: Some("3".into()),
        referral,
        rule: "deal_won".into(),
        reason: "deal 8 won".into(),
    }
}

/// v2 qualifies in one call, no look-up first: an answer whose `qualified_at` is older than
/// the call (and no "qualified" message) means it was already qualified. Unqualifying still
/// looks the user up, and a pending user is not unqualified at all (no call).
#[tokio::test]
async fn qualify_is_one_call_and_an_old_qualified_at_means_already_qualified() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/DONE"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": user(1, "DONE", "d@x.com", Some("2024-06-01T12:00:00Z"))}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/PEND"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": user(2, "PEND", "p@x.com", None)})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/users/qualification"))
        .and(body_json(json!({"code": "DONE", "qualified": true})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": user(1, "DONE", "d@x.com", Some("2024-06-01T12:00:00Z"))}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/users/qualification"))
        .and(body_json(json!({"code": "PEND", "qualified": true})))
        .respond_with(QualifiedNow::new(
            json!({"data": user(2, "PEND", "p@x.com", None)}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/users/qualification"))
        .and(body_json(json!({"code": "DONE", "qualified": false})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": user(1, "DONE", "d@x.com", None)})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let p: &dyn ReferralPlatform = &c;
    let done = ReferralKey::Code {
        code: "DONE".into(),
    };
    let pend = ReferralKey::Code {
        code: "PEND".into(),
    };
    match p
        .qualify(&call(QualifyAction::Qualify, done.clone()))
        .await
        .unwrap()
    {
        QualifyOutcome::AlreadyQualified { qualified_at } => {
            assert_eq!(
                qualified_at.unwrap().to_rfc3339(),
                "2024-06-01T12:00:00+00:00"
            );
        }
        other => panic!("{other:?}"),
    }
    match p
        .qualify(&call(QualifyAction::Qualify, pend.clone()))
        .await
        .unwrap()
    {
        QualifyOutcome::Qualified { user: Some(u) } => assert!(u.qualified_at.is_some()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.unqualify(&call(QualifyAction::Unqualify, pend))
            .await
            .unwrap(),
        QualifyOutcome::NotQualified
    );
    assert_eq!(
        p.unqualify(&call(QualifyAction::Unqualify, done))
            .await
            .unwrap(),
        QualifyOutcome::Unqualified
    );
}

#[tokio::test]
async fn qualify_by_email_and_coupon_bodies() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/e@x.com"))
        .and(query_param("campaign_id", "3"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": user(4, "E4", "e@x.com", None)})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(body_json(
            json!({"email": "e@x.com", "campaign_id": 3, "qualified": true}),
        ))
        .respond_with(QualifiedNow::new(
            json!({"data": user(4, "E4", "e@x.com", None)}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    // The coupon search finds nobody (the filter may be unsupported): the PUT decides.
    Mock::given(method("GET"))
        .and(path("/api/v2/users"))
        .and(query_param("filter[coupon][equal]", "SAVE-1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": [], "links": {"next": null}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(body_json(json!({"coupon": "SAVE-1", "qualified": true})))
        .respond_with(QualifiedNow::new(
            json!({"data": user(5, "F5", "f@x.com", None)}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    assert!(matches!(
        c.qualify_user(&ReferralKey::Email {
            email: "e@x.com".into(),
            campaign: "3".into()
        })
        .await
        .unwrap(),
        QualifyOutcome::Qualified { .. }
    ));
    assert!(matches!(
        c.qualify_user(&ReferralKey::Coupon {
            coupon: "SAVE-1".into()
        })
        .await
        .unwrap(),
        QualifyOutcome::Qualified { .. }
    ));
}

/// Someone else qualified the referral between our look-up (pending) and our call: the answer
/// says so, by its message (the ledger's) or, without one, by a `qualified_at` from before the
/// call. A retried call whose first try may have been processed keeps its own qualification.
#[tokio::test]
async fn a_qualify_answered_already_qualified_is_reported_as_already_qualified() {
    let server = MockServer::start().await;
    for (id, code) in [(1, "RACE"), (2, "OLD"), (3, "FRESH"), (4, "RETRY")] {
        Mock::given(method("GET"))
            .and(path(format!("/api/v2/users/{code}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"data": user(id, code, "x@x.com", None)})),
            )
            .mount(&server)
            .await;
    }
    let put = |code: &str| {
        Mock::given(method("PUT"))
            .and(path("/api/v2/users/qualification"))
            .and(body_json(json!({"code": code, "qualified": true})))
    };
    // Qualified a moment ago by someone else: only the message tells.
    let race = QualifiedNow::new(json!({"data": user(1, "RACE", "x@x.com", None)}))
        .message("already qualified");
    put("RACE")
        .respond_with(race.clone())
        .expect(1)
        .mount(&server)
        .await;
    // No message (Referral Factory documents none): qualified before the call.
    put("OLD")
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": user(2, "OLD", "x@x.com", Some("2024-06-01T12:00:00Z"))}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    // No message, qualified by this call.
    put("FRESH")
        .respond_with(QualifiedNow::new(
            json!({"data": user(3, "FRESH", "x@x.com", None)}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    // The first try may have been processed (503); the second is told "already qualified",
    // with the qualified_at of the first try.
    put("RETRY")
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    put("RETRY")
        .respond_with(
            QualifiedNow::new(json!({"data": user(4, "RETRY", "x@x.com", None)}))
                .message("already qualified"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let key = |code: &str| ReferralKey::Code { code: code.into() };

    match c.qualify_user(&key("RACE")).await.unwrap() {
        QualifyOutcome::AlreadyQualified {
            qualified_at: Some(at),
        } => assert_eq!(
            at,
            chrono::DateTime::parse_from_rfc3339(&race.stamps()[0]).unwrap()
        ),
        other => panic!("{other:?}"),
    }
    match c.qualify_user(&key("OLD")).await.unwrap() {
        QualifyOutcome::AlreadyQualified {
            qualified_at: Some(at),
        } => assert_eq!(at.to_rfc3339(), "2024-06-01T12:00:00+00:00"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.qualify_user(&key("FRESH")).await.unwrap(),
        QualifyOutcome::Qualified { user: Some(_) }
    ));
    assert!(matches!(
        c.qualify_user(&key("RETRY")).await.unwrap(),
        QualifyOutcome::Qualified { user: Some(_) }
    ));
}

#[tokio::test]
async fn an_unqualify_answered_not_qualified_changed_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/DONE"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": user(1, "DONE", "d@x.com", Some("2024-06-01T12:00:00Z"))}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(body_json(json!({"code": "DONE", "qualified": false})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": user(1, "DONE", "d@x.com", None), "message": "not qualified"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    assert_eq!(
        c.unqualify_user(&ReferralKey::Code {
            code: "DONE".into()
        })
        .await
        .unwrap(),
        QualifyOutcome::NotQualified
    );
}

#[tokio::test]
async fn concurrent_qualifies_of_one_key_share_one_call() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/PEND"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": user(2, "PEND", "p@x.com", None)})),
        )
        .expect(0)
        .mount(&server)
        .await;
    let qualified = QualifiedNow::new(json!({"data": user(2, "PEND", "p@x.com", None)}));
    Mock::given(method("PUT"))
        .and(body_json(json!({"code": "PEND", "qualified": true})))
        .respond_with(qualified.clone())
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(body_json(json!({"code": "PEND", "qualified": true})))
        .respond_with(
            QualifiedNow::new(json!({"data": user(2, "PEND", "p@x.com", None)}))
                .message("already qualified"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let key = ReferralKey::Code {
        code: "PEND".into(),
    };
    let q = || {
        let c = c.clone();
        let key = key.clone();
        async move { c.qualify_user(&key).await.unwrap() }
    };
    let (a, b, d, e, f, g, h, i) = tokio::join!(q(), q(), q(), q(), q(), q(), q(), q());
    let outcomes = [a, b, d, e, f, g, h, i];
    let at = chrono::DateTime::parse_from_rfc3339(&qualified.stamps()[0]).unwrap();
    let fresh: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, QualifyOutcome::Qualified { user: Some(u) } if u.qualified_at == Some(at.into())))
        .collect();
    assert_eq!(fresh.len(), 1, "{outcomes:?}");
    let joined = outcomes
        .iter()
        .filter(|o| {
            **o == QualifyOutcome::AlreadyQualified {
                qualified_at: Some(at.into()),
            }
        })
        .count();
    assert_eq!(joined, 7, "{outcomes:?}");
    assert_eq!(hits(&server).await, 1, "one qualify call, no look-up");
    // Done: the next call is a call of its own (and told it was already qualified).
    assert!(matches!(
        c.qualify_user(&key).await.unwrap(),
        QualifyOutcome::AlreadyQualified { .. }
    ));
    assert_eq!(hits(&server).await, 2);
}

#[tokio::test]
async fn calls_that_joined_a_failed_qualify_get_its_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/ANN1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": user(1, "ANN1", "a@x.com", None)})),
        )
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "code": 422, "message": "The given data was invalid.",
            "errors": {"code": [{"field": "code", "message": "Only people invited can qualify."}]}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let key = ReferralKey::Code {
        code: "ANN1".into(),
    };
    let (a, b, d) = tokio::join!(
        c.qualify_user(&key),
        c.qualify_user(&key),
        c.qualify_user(&key)
    );
    for r in [a, b, d] {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Validation);
        assert!(
            e.message().contains("Only people invited can qualify."),
            "{e}"
        );
        assert_eq!(e.operation(), Some("qualify"));
        assert_eq!(
            refsync_http::error_response(&e).map(|r| r.status()),
            Some(422)
        );
    }
}

#[tokio::test]
async fn a_cancelled_shared_qualify_lets_a_waiting_call_make_it() {
    use std::future::Future;
    use std::task::Poll;

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/PEND"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": user(2, "PEND", "p@x.com", None)})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(QualifiedNow::new(
            json!({"data": user(2, "PEND", "p@x.com", None)}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let key = ReferralKey::Code {
        code: "PEND".into(),
    };
    let mut first = Box::pin(c.qualify_user(&key));
    let mut second = Box::pin(c.qualify_user(&key));
    // Start both (the first is on the wire, the second waits for it), then drop the first.
    std::future::poll_fn(|cx| {
        assert!(first.as_mut().poll(cx).is_pending());
        assert!(second.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    drop(first);
    assert!(matches!(
        second.await.unwrap(),
        QualifyOutcome::Qualified { user: Some(_) }
    ));
}

#[tokio::test]
async fn inbound_webhook_qualifies_with_a_form_body_and_no_token() {
    let server = MockServer::start().await;
    let hook = format!("{}/webhook/h00ktoken42/qualify", server.uri());
    Mock::given(method("POST"))
        .and(path("/webhook/h00ktoken42/qualify"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("code=ANN+1"))
        .and(|r: &Request| !r.headers.contains_key("authorization"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"message": "qualified"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/webhook/h00ktoken42/qualify"))
        .and(body_string("code=ANN+1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"message": "already qualified"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/webhook/h00ktoken42/qualify"))
        .and(body_string("coupon=SAVE-9"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"message": "qualified"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/webhook/h00ktoken42/qualify"))
        .and(body_string("code=NOPE"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "not found"})))
        .mount(&server)
        .await;
    // A webhook-only account: no token.
    let cfg: Config = serde_json::from_value(json!({
        "base_url": format!("{}/api/v2", server.uri()),
        "inbound_webhook_url": hook,
    }))
    .unwrap();
    let (c, _) = client_with(cfg);
    let p: &dyn ReferralPlatform = &c;
    let code = ReferralKey::Code {
        code: "ANN 1".into(),
    };
    assert_eq!(
        p.qualify(&call(QualifyAction::Qualify, code.clone()))
            .await
            .unwrap(),
        QualifyOutcome::Qualified { user: None }
    );
    assert_eq!(
        p.qualify(&call(QualifyAction::Qualify, code))
            .await
            .unwrap(),
        QualifyOutcome::AlreadyQualified { qualified_at: None }
    );
    assert_eq!(
        p.qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Coupon {
                coupon: "SAVE-9".into()
            }
        ))
        .await
        .unwrap(),
        QualifyOutcome::Qualified { user: None }
    );
    let e = p
        .qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Code {
                code: "NOPE".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NotFound);
    // What the webhook cannot do, and API calls without a token, say so without a request.
    let before = hits(&server).await;
    let e = p
        .qualify(&call(
            QualifyAction::Qualify,
            ReferralKey::Email {
                email: "a@x.com".into(),
                campaign: "3".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unsupported);
    let e = p
        .unqualify(&call(
            QualifyAction::Unqualify,
            ReferralKey::Code {
                code: "ANN 1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Unsupported);
    let e = c.find_user(&id_key("1")).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Config);
    assert!(e.message().contains("Settings → API"), "{e}");
    assert_eq!(hits(&server).await, before);
}

// ---- v1 compatibility -------------------------------------------------------------------------

#[tokio::test]
async fn v1_mode_paths_and_bodies() {
    let server = MockServer::start().await;
    let v1_user = |id: u64, campaign: u64, code: &str, q: Option<&str>| {
        json!({"id": id, "campaign_id": campaign, "code": code, "email": format!("{}@x.com", code.to_lowercase()),
               "first_name": "X", "qualified_at": q, "url": "https://r.example/x"})
    };
    Mock::given(method("POST"))
        .and(path("/api/v1/users"))
        .and(body_json(json!({
            "campaign_id": 3, "first_name": "Bob", "email": "bob@x.com", "notify": false,
            "referrer_code": "ANN1"
        })))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": 8, "code": "BOB1", "url": "https://r.example/BOB1"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users/8"))
        .respond_with(ResponseTemplate::new(200).set_body_json(v1_user(8, 3, "BOB1", None)))
        .mount(&server)
        .await;
    // v1 ignores campaign_id on GET /users: it answers users of every campaign.
    Mock::given(method("GET"))
        .and(path("/api/v1/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [v1_user(7, 4, "OTHER", None), v1_user(8, 3, "BOB1", None), v1_user(9, 4, "BOB1X", None)],
            "links": {"next": null}
        })))
        .mount(&server)
        .await;
    // v1 times as `YYYY-MM-DD HH:MM:SS` (UTC).
    let qualified = QualifiedNow::new(v1_user(8, 3, "BOB1", None)).format("%Y-%m-%d %H:%M:%S");
    Mock::given(method("PUT"))
        .and(path("/api/v1/users/8"))
        .and(body_json(json!({"campaign_id": 3, "qualified": true})))
        .respond_with(qualified.clone())
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = Config::new(TOKEN).with_base_url(format!("{}/api/v1", server.uri()));
    cfg.api_version = ApiVersion::V1;
    let (c, _) = client_with(cfg);

    let made = c
        .add_user(
            &CreateUser::new("3", "Bob", "bob@x.com").referrer(ReferrerRef::Code("ANN1".into())),
        )
        .await
        .unwrap();
    assert_eq!(
        (made.id.as_str(), made.code.as_deref()),
        ("8", Some("BOB1"))
    );
    assert_eq!(
        c.find_user(&id_key("8"))
            .await
            .unwrap()
            .unwrap()
            .campaign_id
            .as_deref(),
        Some("3")
    );

    // Client-side campaign filtering.
    let users = c
        .list_users(&ListQuery::new().campaign("3"))
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        ["8"]
    );

    // Qualify by code: found by listing, then PUT /users/{id} {campaign_id, qualified}.
    match c
        .qualify_user(&ReferralKey::Code {
            code: "BOB1".into(),
        })
        .await
        .unwrap()
    {
        QualifyOutcome::Qualified { user: Some(u) } => {
            assert_eq!(
                u.qualified_at
                    .unwrap()
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
                qualified.stamps()[0]
            );
        }
        other => panic!("{other:?}"),
    }
}

// ---- rewards ----------------------------------------------------------------------------------

#[tokio::test]
async fn rewards_lists_issue_and_cancel() {
    let server = MockServer::start().await;
    let reward = |id: u64, metric: &str, status: &str| {
        json!({"id": id, "reward_id": 1, "recipient_id": 7, "metric": metric, "amount": 10,
               "coupon": null, "can_be_issued": true, "status": status,
               "issued_at": null, "created_at": "2024-06-02T00:00:00Z"})
    };
    Mock::given(method("GET"))
        .and(path("/api/v2/rewards/due/amount"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"data": [reward(5, "amount", "due")], "links": {"next": null}}),
            ),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/rewards/due/coupon"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"data": [reward(6, "coupon", "due")], "links": {"next": null}}),
            ),
        )
        .mount(&server)
        .await;
    // No commission rewards on this account.
    Mock::given(method("GET"))
        .and(path("/api/v2/rewards/due/commission"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not found"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/rewards/due/custom"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/rewards/dashboard/amount"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": [reward(5, "amount", "due"), reward(4, "amount", "issued")]}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/rewards/issue/5"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": reward(5, "amount", "issued")})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/rewards/cancel/6"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": reward(6, "coupon", "cancelled")})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/rewards/issue/99"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not found"})))
        .mount(&server)
        .await;
    let (c, _) = client(&server);
    let p: &dyn ReferralPlatform = &c;
    let mut due = p.rewards_due().await.unwrap();
    due.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(due.len(), 2);
    assert_eq!(
        (due[0].id.as_str(), due[0].metric.as_str(), due[0].amount),
        ("5", "amount", Some(10))
    );
    assert!(
        due.iter()
            .all(|r| r.status == RewardStatus::Due && r.recipient_id == "7")
    );
    let all = c
        .list_rewards(
            RewardView::Dashboard,
            RewardMetric::Amount,
            &ListQuery::new(),
        )
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        p.issue_reward("5").await.unwrap().status,
        RewardStatus::Issued
    );
    assert_eq!(
        p.cancel_reward("6").await.unwrap().status,
        RewardStatus::Cancelled
    );
    assert_eq!(
        p.issue_reward("99").await.unwrap_err().kind(),
        &ErrorKind::NotFound
    );
}
