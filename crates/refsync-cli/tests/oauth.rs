//! `refsync oauth authorize`, run as a user would: the real binary, a SQLite store, a loopback
//! token endpoint, and the browser's redirect sent with reqwest.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use refsync_engine::store::open_store;

const INSTANCE: &str = "crm";
const ACCESS: &str = "access-token-7f3a9c";
const REFRESH: &str = "refresh-token-b81e42";
const CLIENT_SECRET: &str = "client-secret-55d0e1";

/// A token endpoint that accepts `grant_type=authorization_code` with `good-code`; records the
/// form bodies it got.
async fn token_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/token",
        post(move |_headers: HeaderMap, body: String| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(body.clone());
                let form: Vec<(String, String)> = body
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let has = |k: &str, v: &str| form.iter().any(|(a, b)| a == k && b == v);
                if has("grant_type", "authorization_code") && has("code", "good-code") {
                    let json = format!(
                        r#"{{"access_token":"{ACCESS}","refresh_token":"{REFRESH}","token_type":"bearer","expires_in":3600}}"#
                    );
                    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json)
                        .into_response()
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"error":"invalid_grant"}"#.to_owned(),
                    )
                        .into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/token"), seen)
}

fn write_config(dir: &Path, token_url: &str) -> (std::path::PathBuf, String) {
    let store_url = format!("sqlite://{}", dir.join("refsync.db").display());
    let text = format!(
        r#"[store]
url = "{store_url}"

[[instances]]
name = "{INSTANCE}"
connector = "generic-webhook"

[instances.settings]
auth = {{ type = "token", header = "X-Token", token = "tok-123456" }}

[instances.settings.events]
object_kind = {{ value = "deal" }}
object_id = "/id"

[instances.oauth]
client_id = "app-1"
client_secret = "{CLIENT_SECRET}"
auth_url = "https://crm.example.com/oauth/authorize"
token_url = "{token_url}"
scopes = ["deals:read"]
"#
    );
    let path = dir.join("refsync.toml");
    std::fs::write(&path, text).unwrap();
    (path, store_url)
}

struct Started {
    child: Child,
    authorize_url: String,
    callback: String,
    stdout_lines: Vec<String>,
    stdout: BufReader<std::process::ChildStdout>,
}

/// Starts `refsync oauth authorize` and reads stdout up to the "waiting for" line.
fn start(config: &Path, extra: &[&str]) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_refsync"))
        .args(["oauth", "authorize", INSTANCE, "-c"])
        .arg(config)
        .args(["--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let callback = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "stdout ended early: {lines:?}"
        );
        let line = line.trim_end().to_owned();
        lines.push(line.clone());
        if let Some(rest) = line.strip_prefix("waiting for the redirect on ") {
            break rest.to_owned();
        }
    };
    let authorize_url = lines
        .iter()
        .find(|l| l.starts_with("https://crm.example.com/oauth/authorize?"))
        .expect("authorization URL printed")
        .clone();
    Started {
        child,
        authorize_url,
        callback,
        stdout_lines: lines,
        stdout,
    }
}

fn query_param(url: &str, key: &str) -> Option<String> {
    url.split_once('?')?
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// Waits for the process; its exit code, whole stdout and stderr.
fn finish(mut s: Started) -> (i32, String, String) {
    let status = s.child.wait().unwrap();
    let mut rest = String::new();
    s.stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    s.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let stdout = s.stdout_lines.join("\n") + "\n" + &rest;
    (status.code().unwrap_or(-1), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn authorize_exchanges_the_code_and_stores_the_tokens() {
    let (token_url, seen) = token_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, store_url) = write_config(dir.path(), &token_url);

    let started = tokio::task::spawn_blocking({
        let config = config.clone();
        move || start(&config, &[])
    })
    .await
    .unwrap();
    assert!(started.callback.starts_with("http://127.0.0.1:"));
    assert!(started.callback.ends_with("/callback"));
    let url = &started.authorize_url;
    assert_eq!(query_param(url, "client_id").as_deref(), Some("app-1"));
    assert_eq!(query_param(url, "response_type").as_deref(), Some("code"));
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    let state = query_param(url, "state").expect("state");
    assert!(state.len() >= 32);

    let response = reqwest::get(format!("{}?code=good-code&state={state}", started.callback))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("Authorized"), "{page}");
    assert!(!page.contains(ACCESS));

    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || finish(started))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("stored tokens for {INSTANCE} (expires at ")),
        "{stdout}"
    );
    for secret in [ACCESS, REFRESH, CLIENT_SECRET] {
        assert!(!stdout.contains(secret), "{secret} in stdout: {stdout}");
        assert!(!stderr.contains(secret), "{secret} in stderr: {stderr}");
    }
    let form = seen.lock().unwrap().join("\n");
    assert!(form.contains("grant_type=authorization_code"), "{form}");
    assert!(
        form.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{form}"
    );

    let store = open_store(&store_url).await.unwrap();
    let raw = store
        .get_token(&format!("oauth:{INSTANCE}"))
        .await
        .unwrap()
        .expect("token stored");
    store.close().await;
    let token: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(token["access_token"], ACCESS);
    assert_eq!(token["refresh_token"], REFRESH);
    assert!(token["expires_at"].is_string(), "{token}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_state_exits_1_and_stores_nothing() {
    let (token_url, seen) = token_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, store_url) = write_config(dir.path(), &token_url);
    let started = tokio::task::spawn_blocking(move || start(&config, &[]))
        .await
        .unwrap();
    let response = reqwest::get(format!(
        "{}?code=good-code&state=forged-state",
        started.callback
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || finish(started))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("state does not match"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(seen.lock().unwrap().is_empty(), "the code was exchanged");
    let store = open_store(&store_url).await.unwrap();
    assert!(store.get_token("oauth:crm").await.unwrap().is_none());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_redirect_exits_1_with_the_reason() {
    let (token_url, _seen) = token_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_config(dir.path(), &token_url);
    let started = tokio::task::spawn_blocking(move || start(&config, &[]))
        .await
        .unwrap();
    let state = query_param(&started.authorize_url, "state").unwrap();
    let response = reqwest::get(format!(
        "{}?error=access_denied&state={state}",
        started.callback
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || finish(started))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("access_denied"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_redirect_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_config(dir.path(), "http://127.0.0.1:9/token");
    let started = tokio::task::spawn_blocking(move || start(&config, &["--timeout", "1"]))
        .await
        .unwrap();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || finish(started))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("no redirect received within 1 s"),
        "{stderr}"
    );
}

#[test]
fn an_instance_without_oauth_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = write_config(dir.path(), "http://127.0.0.1:9/token");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text[..text.find("[instances.oauth]").unwrap()].to_owned();
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_refsync"))
        .args(["oauth", "authorize", INSTANCE, "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no [instances.oauth] table"),
        "{stderr}"
    );
}
