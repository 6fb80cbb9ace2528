//! `TokenManager` against a real loopback token endpoint.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use chrono::{TimeDelta, Utc};
use common::{Counter, closed_port_url, serve};
use refsync_core::{ErrorKind, Secret};
use refsync_http::{
    ApiRequest, Auth, ClientAuth, HttpClient, MemoryTokenStore, OAuthConfig, RetryPolicy,
    StoredToken, TokenManager, TokenStore,
};

const CLIENT_SECRET: &str = "client-s3cr3t-value";
const REFRESH: &str = "refresh-s3cr3t-value";

/// What the token endpoint received.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Received>>>);

/// Headers and form fields of one token request.
type Received = (HeaderMap, HashMap<String, String>);

/// A token endpoint that answers `status` + `body` after `delay`, counting requests.
async fn token_endpoint(
    status: StatusCode,
    body: serde_json::Value,
    delay: Duration,
) -> (common::Server, Counter, Seen) {
    let counter = Counter::default();
    let seen = Seen::default();
    let (c, s) = (counter.clone(), seen.clone());
    let router = Router::new().route(
        "/oauth/token",
        post(move |headers: HeaderMap, form: String| {
            let (c, s, body) = (c.clone(), s.clone(), body.clone());
            async move {
                c.hit();
                let form: HashMap<String, String> = url::form_urlencoded::parse(form.as_bytes())
                    .into_owned()
                    .collect();
                s.0.lock().unwrap().push((headers, form));
                tokio::time::sleep(delay).await;
                (
                    status,
                    [("content-type", "application/json")],
                    body.to_string(),
                )
            }
        }),
    );
    (serve(router).await, counter, seen)
}

fn config(base: &str, client_auth: ClientAuth) -> OAuthConfig {
    OAuthConfig {
        client_id: "client-1".into(),
        client_secret: Secret::new(CLIENT_SECRET),
        auth_url: format!("{base}/oauth/authorize"),
        token_url: format!("{base}/oauth/token"),
        redirect_url: Some("https://app.example.com/cb".into()),
        scopes: vec!["crm".into()],
        client_auth,
        authorize_params: Default::default(),
    }
}

fn token(access: &str, expires_in: Option<i64>) -> StoredToken {
    let mut t = StoredToken::new(access);
    t.refresh_token = Some(Secret::new(REFRESH));
    t.expires_at = expires_in.map(|s| Utc::now() + TimeDelta::seconds(s));
    t.extra
        .insert("api_domain".into(), "https://www.zohoapis.eu".into());
    t
}

fn manager(base: &str, store: Arc<MemoryTokenStore>) -> TokenManager {
    TokenManager::new(
        config(base, ClientAuth::Basic),
        store,
        "acct-1",
        refsync_http::token_http_client(Duration::from_secs(5)).unwrap(),
    )
    .unwrap()
}

fn fresh_response() -> serde_json::Value {
    serde_json::json!({
        "access_token": "new-access",
        "token_type": "Bearer",
        "expires_in": 3600,
        "api_domain": "https://www.zohoapis.com"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_refresh() {
    let (server, hits, seen) =
        token_endpoint(StatusCode::OK, fresh_response(), Duration::from_millis(200)).await;
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("old-access", Some(-60)),
    ));
    let tm = manager(&server.url, store.clone());

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let tm = tm.clone();
        tasks.spawn(async move { tm.access_token().await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().unwrap().expose(), "new-access");
    }
    assert_eq!(hits.get(), 1, "exactly one refresh call");

    // The refresh request itself.
    let (headers, form) = seen.0.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], REFRESH);
    assert!(
        headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Basic "),
        "client_auth basic"
    );
    assert!(!form.contains_key("client_secret"));

    // Persisted: the old refresh token is kept (none returned), extra fields updated.
    let stored = store.load("acct-1").await.unwrap().unwrap();
    assert_eq!(stored.access_token.expose(), "new-access");
    assert_eq!(stored.refresh_token.as_ref().unwrap().expose(), REFRESH);
    assert_eq!(
        stored.extra_str("api_domain"),
        Some("https://www.zohoapis.com")
    );
    let left = stored.expires_at.unwrap() - Utc::now();
    assert!(left > TimeDelta::minutes(50) && left <= TimeDelta::minutes(60));

    // Now fresh: no further calls.
    assert_eq!(tm.access_token().await.unwrap().expose(), "new-access");
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn refreshes_ahead_of_expiry() {
    let (server, hits, _) = token_endpoint(StatusCode::OK, fresh_response(), Duration::ZERO).await;

    // Valid for an hour: used as is.
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("still-good", Some(3600)),
    ));
    let tm = manager(&server.url, store);
    assert_eq!(tm.access_token().await.unwrap().expose(), "still-good");
    assert_eq!(hits.get(), 0);

    // Expires in 2 minutes, inside the default 5-minute margin: refreshed first.
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("expiring", Some(120)),
    ));
    let tm = manager(&server.url, store);
    assert_eq!(tm.access_token().await.unwrap().expose(), "new-access");
    assert_eq!(hits.get(), 1);

    // Same token with a 1-minute margin: not yet.
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("expiring", Some(120)),
    ));
    let tm = manager(&server.url, store).refresh_ahead(Duration::from_secs(60));
    assert_eq!(tm.access_token().await.unwrap().expose(), "expiring");
    assert_eq!(hits.get(), 1);

    // No expiry known: never refreshed ahead; force_refresh still works.
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("forever", None),
    ));
    let tm = manager(&server.url, store);
    assert_eq!(tm.access_token().await.unwrap().expose(), "forever");
    assert_eq!(hits.get(), 1);
    assert_eq!(tm.force_refresh().await.unwrap().expose(), "new-access");
    assert_eq!(hits.get(), 2);
    assert_eq!(
        tm.token().await.unwrap().extra_str("api_domain"),
        Some("https://www.zohoapis.com")
    );
}

#[tokio::test]
async fn invalid_grant_is_unauthorized_without_secrets() {
    let (server, hits, _) = token_endpoint(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"error": "invalid_grant", "error_description": "Token has been revoked"}),
        Duration::ZERO,
    )
    .await;
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("old", Some(-1)),
    ));
    let tm = manager(&server.url, store);
    let err = tm.access_token().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert!(
        err.message()
            .starts_with("refresh token rejected; re-authorize"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("invalid_grant"));
    let shown = format!("{err} {err:?} {tm:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn token_endpoint_down_is_unavailable() {
    let (server, _, _) = token_endpoint(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({"message": "maintenance"}),
        Duration::ZERO,
    )
    .await;
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("old", Some(-1)),
    ));
    let err = manager(&server.url, store.clone())
        .access_token()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unavailable);

    let url = closed_port_url().await;
    let err = manager(&url, store).access_token().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unavailable);
    assert!(!format!("{err:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn missing_token_or_refresh_token_is_unauthorized() {
    let url = closed_port_url().await;
    let tm = manager(&url, Arc::new(MemoryTokenStore::default()));
    let err = tm.access_token().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert!(err.message().contains("authorize first"));

    let mut t = token("old", Some(-1));
    t.refresh_token = None;
    let tm = manager(&url, Arc::new(MemoryTokenStore::with_token("acct-1", t)));
    let err = tm.access_token().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert!(err.message().contains("re-authorize"));
}

#[tokio::test]
async fn exchange_code_stores_the_token() {
    let (server, _, seen) = token_endpoint(
        StatusCode::OK,
        serde_json::json!({
            "access_token": "first-access", "token_type": "bearer", "expires_in": 1800,
            "refresh_token": "first-refresh", "instance_url": "https://na1.salesforce.com"
        }),
        Duration::ZERO,
    )
    .await;
    let store = Arc::new(MemoryTokenStore::default());
    let tm = TokenManager::new(
        config(&server.url, ClientAuth::RequestBody),
        store.clone(),
        "acct-2",
        refsync_http::token_http_client(Duration::from_secs(5)).unwrap(),
    )
    .unwrap();
    assert!(tm.authorize_url("xyz").contains("state=xyz"));
    let t = tm.exchange_code("the-code").await.unwrap();
    assert_eq!(t.access_token.expose(), "first-access");
    assert_eq!(t.refresh_token.as_ref().unwrap().expose(), "first-refresh");
    assert_eq!(
        t.extra_str("instance_url"),
        Some("https://na1.salesforce.com")
    );
    assert!(!t.extra.contains_key("access_token"));

    let (headers, form) = seen.0.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "the-code");
    assert_eq!(form["redirect_uri"], "https://app.example.com/cb");
    assert_eq!(form["client_id"], "client-1");
    assert_eq!(form["client_secret"], CLIENT_SECRET);
    assert!(headers.get("authorization").is_none());

    let stored = store.load("acct-2").await.unwrap().unwrap();
    assert_eq!(stored.access_token.expose(), "first-access");
    assert_eq!(tm.access_token().await.unwrap().expose(), "first-access");
}

/// An API that accepts only `new-access`, and a token endpoint that issues it.
async fn api_and_token_endpoint(api_always_401: bool) -> (common::Server, Counter, Counter) {
    let token_hits = Counter::default();
    let api_hits = Counter::default();
    let (t, a) = (token_hits.clone(), api_hits.clone());
    let router = Router::new()
        .route(
            "/oauth/token",
            post(move || {
                let t = t.clone();
                async move {
                    t.hit();
                    (
                        StatusCode::OK,
                        [("content-type", "application/json")],
                        fresh_response().to_string(),
                    )
                }
            }),
        )
        .route(
            "/api/deals",
            get(move |headers: HeaderMap| {
                let a = a.clone();
                async move {
                    a.hit();
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    if !api_always_401 && auth == Some("Bearer new-access") {
                        (StatusCode::OK, r#"{"data":[]}"#.to_owned())
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            format!(r#"{{"message":"bad token {}"}}"#, auth.unwrap_or("")),
                        )
                    }
                }
            }),
        );
    (serve(router).await, token_hits, api_hits)
}

#[tokio::test]
async fn http_client_refreshes_once_on_401() {
    let (server, token_hits, api_hits) = api_and_token_endpoint(false).await;
    // The stored token looks valid (no expiry) but the API has revoked it.
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("revoked-access", None),
    ));
    let tm = manager(&server.url, store);
    let c = HttpClient::builder("acme")
        .base_url(format!("{}/api", server.url))
        .auth(Auth::OAuth2(tm))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let res = c.send(ApiRequest::get("/deals")).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(token_hits.get(), 1);
    assert_eq!(api_hits.get(), 2);
}

#[tokio::test]
async fn http_client_gives_up_after_one_refresh() {
    let (server, token_hits, api_hits) = api_and_token_endpoint(true).await;
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("revoked-access", None),
    ));
    let c = HttpClient::builder("acme")
        .base_url(format!("{}/api", server.url))
        .auth(Auth::OAuth2(manager(&server.url, store)))
        .build()
        .unwrap();
    let err = c
        .send(ApiRequest::get("/deals").operation("list_deals"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized);
    assert_eq!(err.operation(), Some("list_deals"));
    assert_eq!(token_hits.get(), 1);
    assert_eq!(api_hits.get(), 2);
    // The server echoed the token it got; the error does not.
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("new-access"), "{shown}");
    assert!(!shown.contains("revoked-access"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_401s_share_one_refresh() {
    let (server, token_hits, _) = api_and_token_endpoint(false).await;
    let store = Arc::new(MemoryTokenStore::with_token(
        "acct-1",
        token("revoked-access", None),
    ));
    let c = HttpClient::builder("acme")
        .base_url(format!("{}/api", server.url))
        .auth(Auth::OAuth2(manager(&server.url, store)))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let c = c.clone();
        tasks.spawn(async move { c.send(ApiRequest::get("/deals")).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().unwrap().status, 200);
    }
    assert_eq!(token_hits.get(), 1);
}

#[test]
fn token_manager_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let tm = manager("http://127.0.0.1:9", Arc::new(MemoryTokenStore::default()));
    assert_send(&tm.access_token());
    assert_send(&tm.force_refresh());
    assert_send(&tm.exchange_code("c"));
}
