//! `refsync oauth authorize <instance>`: the OAuth2 authorization-code flow on loopback.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use refsync_engine::StoreTokenStore;
use refsync_engine::store::open_store;
use refsync_http::oauth::{StoredToken, TokenManager, token_http_client};
use refsync_http::signature::constant_time_eq;
use tokio::sync::oneshot;

use crate::serve::{init_logging_with_default, load_config, runtime};

/// `refsync oauth`.
#[derive(Debug, clap::Args)]
pub(crate) struct OauthArgs {
    #[command(subcommand)]
    command: OauthCommand,
}

#[derive(Debug, clap::Subcommand)]
enum OauthCommand {
    /// Authorize an instance (authorization-code flow): prints the URL to open, receives the
    /// redirect on 127.0.0.1 and stores the tokens in the store (never prints them).
    Authorize(AuthorizeArgs),
}

#[derive(Debug, clap::Args)]
struct AuthorizeArgs {
    /// The connector instance (it needs an `[instances.oauth]` table).
    instance: String,
    /// The configuration file.
    #[arg(long, short = 'c', default_value = "refsync.toml")]
    config: PathBuf,
    /// The loopback port to receive the redirect on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Give up after this many seconds without a redirect.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

type Failure = (u8, String);

fn fail(msg: impl Into<String>) -> Failure {
    (1, msg.into())
}

pub(crate) fn run(args: OauthArgs) -> ExitCode {
    match args.command {
        OauthCommand::Authorize(args) => authorize(&args),
    }
}

fn authorize(args: &AuthorizeArgs) -> ExitCode {
    init_logging_with_default("warn");
    let registry = refsync::default_registry();
    let config = match load_config(&registry, &args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("refsync oauth authorize: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(authorize_flow(args, config)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err((code, msg)) => {
            eprintln!("refsync oauth authorize: {}", msg.replace('\n', " "));
            ExitCode::from(code)
        }
    }
}

async fn authorize_flow(
    args: &AuthorizeArgs,
    config: refsync_engine::config::EngineConfig,
) -> Result<String, Failure> {
    let name = &args.instance;
    let entry = config
        .instances
        .iter()
        .find(|i| &i.name == name)
        .ok_or_else(|| {
            (
                crate::USAGE,
                format!("no instance named {name:?} in {}", args.config.display()),
            )
        })?;
    let mut oauth = entry.oauth.clone().ok_or_else(|| {
        (
            crate::USAGE,
            format!(
                "instance {name:?} has no [instances.oauth] table (client_id, client_secret, auth_url, token_url)"
            ),
        )
    })?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| fail(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    let port = listener
        .local_addr()
        .map_err(|e| fail(format!("cannot read the listen address: {e}")))?
        .port();
    let callback = format!("http://127.0.0.1:{port}/callback");
    if oauth.redirect_url.is_none() {
        oauth.redirect_url = Some(callback.clone());
    }

    let store = open_store(config.store.url.expose())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let result = async {
        let http = token_http_client(Duration::from_secs(30)).map_err(|e| fail(e.to_string()))?;
        let manager = TokenManager::new(
            oauth,
            Arc::new(StoreTokenStore::new(store.clone())),
            name.clone(),
            http,
        )
        .map_err(|e| (crate::USAGE, e.to_string()))?;
        let state = random_state();
        println!("open this URL in a browser to authorize {name}:");
        println!("{}", manager.authorize_url(&state));
        println!("waiting for the redirect on {callback}");
        let token = receive_callback(listener, manager, state, args.timeout).await?;
        let expires = token.expires_at.map_or_else(
            || "no expiry given".to_owned(),
            |at| format!("expires at {}", at.to_rfc3339()),
        );
        Ok(format!("stored tokens for {name} ({expires})"))
    }
    .await;
    store.close().await;
    result
}

/// 32 random bytes, hex.
fn random_state() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Callback {
    manager: TokenManager,
    state: String,
    /// Taken by the first callback request; later requests are refused.
    done: Mutex<Option<oneshot::Sender<Result<StoredToken, Failure>>>>,
}

async fn receive_callback(
    listener: tokio::net::TcpListener,
    manager: TokenManager,
    state: String,
    timeout_secs: u64,
) -> Result<StoredToken, Failure> {
    let (tx, rx) = oneshot::channel();
    let shared = Arc::new(Callback {
        manager,
        state,
        done: Mutex::new(Some(tx)),
    });
    let app = axum::Router::new()
        .route("/callback", get(callback))
        .with_state(shared);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    let outcome = match tokio::time::timeout(Duration::from_secs(timeout_secs), rx).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(fail(
            "the redirect request was dropped before the code was exchanged; run the command again",
        )),
        Err(_) => Err(fail(format!(
            "no redirect received within {timeout_secs} s; run the command again"
        ))),
    };
    let _ = stop_tx.send(());
    // Let the browser get its page; never hang on a kept-alive connection.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    outcome
}

async fn callback(
    State(shared): State<Arc<Callback>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(done) = shared
        .done
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return (
            StatusCode::GONE,
            page("Already handled", "This authorization was already handled."),
        )
            .into_response();
    };
    let outcome = handle(&shared, &query).await;
    let response = match &outcome {
        Ok(_) => (
            StatusCode::OK,
            page(
                "Authorized",
                "refsync stored the tokens. You can close this window.",
            ),
        ),
        Err((_, reason)) => (
            StatusCode::BAD_REQUEST,
            page("Authorization failed", &format!("refsync: {reason}")),
        ),
    };
    let _ = done.send(outcome);
    response.into_response()
}

async fn handle(
    shared: &Callback,
    query: &HashMap<String, String>,
) -> Result<StoredToken, Failure> {
    let state_ok = query
        .get("state")
        .is_some_and(|s| constant_time_eq(s.as_bytes(), shared.state.as_bytes()));
    if let Some(error) = query.get("error") {
        let description = query
            .get("error_description")
            .map(|d| format!(": {}", one_line(d)))
            .unwrap_or_default();
        return Err(fail(format!(
            "the authorization server returned error {}{description}",
            one_line(error)
        )));
    }
    if !state_ok {
        return Err(fail(
            "the redirect's state does not match (a stale or forged redirect); run the command again",
        ));
    }
    let code = query
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| fail("the redirect has no code"))?;
    shared
        .manager
        .exchange_code(code)
        .await
        .map_err(|e| fail(e.to_string()))
}

/// `s` on one line, at most 200 characters (it comes from the network).
fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn page(title: &str, message: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body><h1>{}</h1><p>{}</p></body></html>",
        escape(title),
        escape(title),
        escape(message)
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
