//! `HttpClient` against real loopback HTTP servers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{any, get};
use common::{Counter, closed_port_url, serve};
use refsync_core::{ErrorKind, Secret};
use refsync_http::{ApiRequest, Auth, HttpClient, RateLimit, RetryPolicy};

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(60),
    }
}

fn client(url: &str, retry: RetryPolicy) -> HttpClient {
    HttpClient::builder("acme")
        .base_url(url)
        .retry(retry)
        .build()
        .unwrap()
}

/// A server that answers `fail_first` requests with `status` (+ headers), then 200 `{"ok":true}`.
async fn flaky(
    fail_first: usize,
    status: StatusCode,
    headers: Vec<(&'static str, &'static str)>,
) -> (common::Server, Counter) {
    let counter = Counter::default();
    let c = counter.clone();
    let router = Router::new().route(
        "/{*path}",
        any(move || {
            let c = c.clone();
            let headers = headers.clone();
            async move {
                let mut h = HeaderMap::new();
                if c.hit() <= fail_first {
                    for (k, v) in headers {
                        h.insert(k, v.parse().unwrap());
                    }
                    (status, h, r#"{"message":"try later"}"#.to_owned())
                } else {
                    h.insert("content-type", "application/json".parse().unwrap());
                    (StatusCode::OK, h, r#"{"ok":true}"#.to_owned())
                }
            }
        }),
    );
    (serve(router).await, counter)
}

#[tokio::test]
async fn get_is_retried_after_503_then_succeeds() {
    let (server, hits) = flaky(2, StatusCode::SERVICE_UNAVAILABLE, vec![]).await;
    let c = client(&server.url, fast_retry(4));
    let res = c
        .send(ApiRequest::get("/deals/1").operation("get_deal"))
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.json_value().unwrap()["ok"], true);
    assert_eq!(hits.get(), 3);
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let (server, hits) = flaky(100, StatusCode::BAD_GATEWAY, vec![]).await;
    let c = client(&server.url, fast_retry(3));
    let err = c.send(ApiRequest::get("/x")).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert_eq!(hits.get(), 3);
    assert_eq!(err.message(), "HTTP 502 from acme: try later");
}

#[tokio::test]
async fn post_is_not_retried_on_503() {
    let (server, hits) = flaky(100, StatusCode::SERVICE_UNAVAILABLE, vec![]).await;
    let c = client(&server.url, fast_retry(4));
    let err = c
        .send(
            ApiRequest::post_json("/persons", serde_json::json!({"name": "A"}))
                .operation("push_referral"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unavailable);
    assert_eq!(err.operation(), Some("push_referral"));
    assert_eq!(err.connector(), Some("acme"));
    assert_eq!(hits.get(), 1);

    // Marked idempotent (e.g. it carries an idempotency key), it is retried.
    let err = c
        .send(ApiRequest::post_json("/persons", serde_json::json!({})).idempotent(true))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unavailable);
    assert_eq!(hits.get(), 1 + 4);
}

#[tokio::test]
async fn too_many_requests_with_retry_after_1_is_honoured() {
    let counter = Counter::default();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (c2, a2) = (counter.clone(), arrivals.clone());
    let router = Router::new().route(
        "/persons",
        axum::routing::post(move || {
            let (c, a) = (c2.clone(), a2.clone());
            async move {
                a.lock().unwrap().push(Instant::now());
                if c.hit() == 1 {
                    (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "{}")
                        .into_response_parts()
                } else {
                    (
                        StatusCode::CREATED,
                        [("content-type", "application/json")],
                        r#"{"id":7}"#,
                    )
                        .into_response_parts()
                }
            }
        }),
    );
    let server = serve(router).await;
    // The policy's own backoff is tiny: any wait of ~1 s comes from Retry-After.
    let c = client(&server.url, fast_retry(3));
    // 429 is retried even for POST: the request was not processed.
    let res = c
        .send(ApiRequest::post_json("/persons", serde_json::json!({})))
        .await
        .unwrap();
    assert_eq!(res.status, 201);
    assert_eq!(counter.get(), 2);
    let arrivals = arrivals.lock().unwrap();
    assert!(
        arrivals[1].duration_since(arrivals[0]) >= Duration::from_millis(900),
        "retried too early"
    );
}

/// Turns a tuple response into one concrete type so `if` branches agree.
trait IntoParts {
    fn into_response_parts(self) -> axum::response::Response;
}
impl<T: axum::response::IntoResponse> IntoParts for T {
    fn into_response_parts(self) -> axum::response::Response {
        self.into_response()
    }
}

#[tokio::test]
async fn retry_after_beyond_max_is_returned_as_rate_limited() {
    let (server, hits) = flaky(
        100,
        StatusCode::TOO_MANY_REQUESTS,
        vec![("retry-after", "120")],
    )
    .await;
    let c = client(&server.url, fast_retry(4));
    let started = Instant::now();
    let err = c
        .send(ApiRequest::get("/x").operation("list"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert!(err.is_retryable());
    assert_eq!(hits.get(), 1);
    // It did not sleep (generous bound: only guards against a 120 s sleep).
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn vendor_reset_header_is_used_and_429_gives_up_after_max_attempts() {
    // Pipedrive-style: no Retry-After, x-ratelimit-reset in seconds.
    let (server, hits) = flaky(
        100,
        StatusCode::TOO_MANY_REQUESTS,
        vec![("x-ratelimit-reset", "0")],
    )
    .await;
    let c = client(&server.url, fast_retry(3));
    let err = c.send(ApiRequest::get("/x")).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::RateLimited {
            retry_after: Some(Duration::ZERO)
        }
    );
    assert_eq!(hits.get(), 3);
}

#[tokio::test]
async fn long_retry_after_on_503_is_not_slept_through() {
    let (server, hits) = flaky(
        100,
        StatusCode::SERVICE_UNAVAILABLE,
        vec![("retry-after", "3600")],
    )
    .await;
    let c = client(&server.url, fast_retry(4));
    let err = c.send(ApiRequest::get("/x")).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unavailable);
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn status_mapping_over_the_wire() {
    let router = Router::new().route(
        "/status/{code}",
        get(
            |axum::extract::Path(code): axum::extract::Path<u16>| async move {
                let body = match code {
                    422 => r#"{"success":false,"error":"Field 'email' is invalid"}"#,
                    _ => "",
                };
                (StatusCode::from_u16(code).unwrap(), JSON, body)
            },
        ),
    );
    let server = serve(router).await;
    let c = client(&server.url, RetryPolicy::none());
    for (code, kind) in [
        (400, ErrorKind::Validation),
        (401, ErrorKind::Unauthorized),
        (403, ErrorKind::Forbidden),
        (404, ErrorKind::NotFound),
        (409, ErrorKind::Conflict),
        (410, ErrorKind::NotFound),
        (422, ErrorKind::Validation),
        (500, ErrorKind::Unavailable),
    ] {
        let err = c
            .send(ApiRequest::get(format!("/status/{code}")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &kind, "{code}");
    }
    let err = c
        .send(ApiRequest::get("/status/422").operation("push_referral"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "validation (acme, push_referral): HTTP 422 from acme: Field 'email' is invalid"
    );
}

#[tokio::test]
async fn unauthorized_errors_never_contain_the_secret() {
    const SECRET: &str = "s3cr3t-bearer-token-0123456789";
    // A hostile server that echoes the credentials it received, in the body.
    let hits = Counter::default();
    let h2 = hits.clone();
    let router = Router::new().route(
        "/{*path}",
        any(move |uri: Uri, headers: HeaderMap| {
            let h = h2.clone();
            async move {
                h.hit();
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let key = headers
                    .get("x-api-key")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let body = serde_json::json!({
                    "message": format!("invalid credentials: {auth} {key} for {uri}")
                });
                (StatusCode::UNAUTHORIZED, JSON, body.to_string())
            }
        }),
    );
    let server = serve(router).await;
    let auths = [
        Auth::Bearer(Secret::new(SECRET)),
        Auth::Basic {
            user: "api-user".into(),
            password: Secret::new(SECRET),
        },
        Auth::Header {
            name: "x-api-key".into(),
            value: Secret::new(SECRET),
        },
        Auth::Query {
            name: "api_token".into(),
            value: Secret::new(SECRET),
        },
        Auth::QueryPairs(vec![
            ("consumer_key".into(), Secret::new("ck_public_part")),
            ("consumer_secret".into(), Secret::new(SECRET)),
        ]),
        Auth::OAuth1 {
            consumer_key: Secret::new("ck_public_part"),
            consumer_secret: Secret::new(SECRET),
            method: refsync_http::oauth1::SignatureMethod::HmacSha256,
        },
    ];
    for auth in auths {
        let c = HttpClient::builder("acme")
            .base_url(&server.url)
            .auth(auth.clone())
            .retry(fast_retry(4))
            .build()
            .unwrap();
        let before = hits.get();
        let err = c
            .send(ApiRequest::get("/persons").operation("list_persons"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Unauthorized, "{auth:?}");
        assert!(!err.is_retryable());
        assert_eq!(hits.get(), before + 1, "401 is not retried");
        let shown = format!("{err} | {err:?} | {c:?} | {auth:?}");
        assert!(!shown.contains(SECRET), "secret leaked: {shown}");
        assert!(!shown.contains("s3cr3t"), "secret leaked: {shown}");
        let b64 = refsync_http::basic_auth_header("api-user", SECRET);
        assert!(!shown.contains(b64.trim_start_matches("Basic ")), "{shown}");
        assert!(
            err.message()
                .starts_with("HTTP 401 from acme: invalid credentials")
        );
        // The raw answer is reachable for vendor-specific details, scrubbed too.
        let raw = refsync_http::error_response(&err).expect("the HTTP answer is the source");
        assert_eq!(raw.status(), 401);
        assert!(raw.body().contains("invalid credentials"), "{}", raw.body());
        assert!(
            !raw.body().contains(SECRET),
            "secret leaked: {}",
            raw.body()
        );
        assert!(raw.json().is_some());
    }
}

#[tokio::test]
async fn auth_and_bodies_on_the_wire() {
    let seen: Arc<Mutex<Vec<(String, HeaderMap, String)>>> = Arc::default();
    let s2 = seen.clone();
    let router = Router::new().route(
        "/{*path}",
        any(move |uri: Uri, headers: HeaderMap, body: String| {
            let s = s2.clone();
            async move {
                s.lock().unwrap().push((uri.to_string(), headers, body));
                (StatusCode::OK, JSON, "{}")
            }
        }),
    );
    let server = serve(router).await;
    let make = |auth: Auth| {
        HttpClient::builder("acme")
            .base_url(format!("{}/v1/", server.url))
            .auth(auth)
            .user_agent("refsync-test/1")
            .default_header("x-api-version", "2024-01")
            .build()
            .unwrap()
    };
    make(Auth::Bearer(Secret::new("tok")))
        .send(ApiRequest::get("persons").query("term", "a b"))
        .await
        .unwrap();
    HttpClient::builder("zoho")
        .base_url(server.url.clone())
        .auth(Auth::Bearer(Secret::new("z0h0")))
        .token_scheme("Zoho-oauthtoken")
        .build()
        .unwrap()
        .send(ApiRequest::get("/crm/v8/Leads"))
        .await
        .unwrap();
    make(Auth::Basic {
        user: "u".into(),
        password: Secret::new("p"),
    })
    .send(ApiRequest::post_json(
        "/persons",
        serde_json::json!({"name": "Ann"}),
    ))
    .await
    .unwrap();
    make(Auth::Header {
        name: "x-api-key".into(),
        value: Secret::new("k3y"),
    })
    .send(ApiRequest::post_form(
        "/hook",
        [("code", "R1"), ("x", "a&b")],
    ))
    .await
    .unwrap();
    make(Auth::Query {
        name: "api_token".into(),
        value: Secret::new("q t"),
    })
    .send(ApiRequest::delete("/persons/5").header("x-trace", "1"))
    .await
    .unwrap();

    let mut seen = seen.lock().unwrap();
    let (_, zoho, _) = seen.remove(1);
    assert_eq!(zoho["authorization"], "Zoho-oauthtoken z0h0");
    let (uri, h, _) = &seen[0];
    assert_eq!(uri, "/v1/persons?term=a+b");
    assert_eq!(h["authorization"], "Bearer tok");
    assert_eq!(h["user-agent"], "refsync-test/1");
    assert_eq!(h["x-api-version"], "2024-01");
    assert_eq!(h["accept"], "application/json");

    let (uri, h, body) = &seen[1];
    assert_eq!(uri, "/v1/persons");
    assert_eq!(
        h["authorization"],
        refsync_http::basic_auth_header("u", "p")
    );
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(body, r#"{"name":"Ann"}"#);

    let (_, h, body) = &seen[2];
    assert_eq!(h["x-api-key"], "k3y");
    assert_eq!(h["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(body, "code=R1&x=a%26b");

    let (uri, h, _) = &seen[3];
    assert_eq!(uri, "/v1/persons/5?api_token=q+t");
    assert_eq!(h["x-trace"], "1");
    assert!(h.get("authorization").is_none());
}

#[tokio::test]
async fn timeout_is_unavailable() {
    let router = Router::new().route(
        "/slow",
        any(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    );
    let server = serve(router).await;
    let c = HttpClient::builder("acme")
        .base_url(&server.url)
        .timeout(Duration::from_millis(200))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let err = c
        .send(ApiRequest::get("/slow").operation("get_deal"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert!(err.message().contains("timeout"), "{}", err.message());
    assert!(
        !err.to_string().contains("127.0.0.1"),
        "no URL in errors: {err}"
    );

    // A POST that timed out may have been processed: not retryable.
    let err = c
        .send(ApiRequest::post_json("/slow", serde_json::json!({})))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unavailable);
    assert!(!err.is_retryable());
    assert!(err.message().contains("may have been processed"));
}

#[tokio::test]
async fn connection_refused_is_unavailable_and_retried_for_get() {
    let url = closed_port_url().await;
    let c = client(&url, fast_retry(2));
    let err = c
        .send(ApiRequest::get("/x").query("api_token", "s3cr3t"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unavailable);
    assert!(
        err.message().contains("could not connect"),
        "{}",
        err.message()
    );
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    // Nothing was sent, so even a POST stays retryable for the caller.
    let err = c
        .send(ApiRequest::post_json("/x", serde_json::json!({})))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
}

#[tokio::test]
async fn rate_limiter_spaces_calls() {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a2 = arrivals.clone();
    let router = Router::new().route(
        "/x",
        get(move || {
            let a = a2.clone();
            async move {
                a.lock().unwrap().push(Instant::now());
                "{}"
            }
        }),
    );
    let server = serve(router).await;
    let c = HttpClient::builder("acme")
        .base_url(&server.url)
        .rate_limit(RateLimit::new(2, Duration::from_millis(300)))
        .build()
        .unwrap();
    let started = Instant::now();
    for _ in 0..3 {
        c.send(ApiRequest::get("/x")).await.unwrap();
    }
    // The third call had to wait for the first token to come back.
    assert!(started.elapsed() >= Duration::from_millis(290));
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), 3);
    assert!(arrivals[2] >= arrivals[1] && arrivals[1] >= arrivals[0]);
}

#[test]
fn send_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let c = HttpClient::builder("acme").build().unwrap();
    let fut = c.send(ApiRequest::get("https://example.invalid/"));
    assert_send(&fut);
}

#[tokio::test]
async fn redirects_are_not_followed_so_credentials_stay_home() {
    // The other origin counts requests: it must never see one.
    let elsewhere_hits = Counter::default();
    let c = elsewhere_hits.clone();
    let elsewhere = serve(Router::new().route(
        "/{*path}",
        any(move || {
            let c = c.clone();
            async move {
                c.hit();
                StatusCode::OK
            }
        }),
    ))
    .await;
    let target = format!("{}/stolen", elsewhere.url);
    let redirecting = serve(Router::new().route(
        "/{*path}",
        any(move || {
            let target = target.clone();
            async move { (StatusCode::FOUND, [("location", target)], "") }
        }),
    ))
    .await;
    let http = HttpClient::builder("acme")
        .base_url(&redirecting.url)
        .auth(Auth::Header {
            name: "X-Api-Key".into(),
            value: Secret::new("redirect-secret-1234"),
        })
        .retry(fast_retry(1))
        .build()
        .unwrap();
    let err = http
        .send(ApiRequest::post_json("/hook", serde_json::json!({"a": 1})))
        .await
        .expect_err("a 302 is not a success");
    assert_eq!(err.kind(), &ErrorKind::Unexpected);
    assert!(
        err.message().contains("redirects are not followed"),
        "{err}"
    );
    assert_eq!(elsewhere_hits.get(), 0, "the redirect target was called");
}

#[tokio::test]
async fn secret_request_headers_are_scrubbed_from_errors() {
    // A server that echoes every header value it received in its error body.
    let router = Router::new().route(
        "/{*path}",
        any(|headers: HeaderMap| async move {
            let all: Vec<String> = headers
                .values()
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .collect();
            (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/json")],
                serde_json::json!({"message": format!("bad request: {}", all.join(" "))})
                    .to_string(),
            )
        }),
    );
    let server = serve(router).await;
    let http = client(&server.url, fast_retry(1));
    let err = http
        .send(
            ApiRequest::post_json("/receive", serde_json::json!({}))
                .secret_header("X-Push-Key", Secret::new("push-key-s3cr3t-99")),
        )
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("bad request"), "{shown}");
    assert!(
        !shown.contains("push-key-s3cr3t-99"),
        "secret leaked: {shown}"
    );
}

#[tokio::test]
async fn a_secret_at_the_cut_of_a_long_vendor_message_does_not_leak_a_prefix() {
    const SECRET: &str = "s3cr3t-bearer-token-at-the-cut-0123456789";
    // The echoed token straddles the 300-character cut of the vendor message.
    let router = Router::new().route(
        "/{*path}",
        any(|headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let message = format!("{} {auth}", "x".repeat(280));
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                [("content-type", "application/json")],
                serde_json::json!({ "message": message }).to_string(),
            )
        }),
    );
    let server = serve(router).await;
    let c = HttpClient::builder("acme")
        .base_url(&server.url)
        .auth(Auth::Bearer(Secret::new(SECRET)))
        .retry(fast_retry(1))
        .build()
        .unwrap();
    let err = c.send(ApiRequest::get("/x")).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("s3cr3t-bearer"),
        "a prefix of the secret leaked: {shown}"
    );
}
