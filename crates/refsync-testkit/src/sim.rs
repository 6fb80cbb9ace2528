//! The simulator framework every CRM simulator is built on.
//!
//! A [`Simulator`] is a real HTTP/1.1 server on `127.0.0.1:<random port>` that hands every
//! request to a stateful [`SimHandler`], records it, and can inject faults ([`FaultRule`]):
//! any status code, `429` with `Retry-After`, `5xx`, added latency, or a connection dropped
//! without a response. Keep-alive works, so pooled clients such as `reqwest` behave as they do
//! against the real vendor.
//!
//! ```no_run
//! use refsync_testkit::sim::{Fault, FaultRule, RecordedRequest, SimResponse, Simulator};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let next_id = AtomicU64::new(1);
//! let sim = Simulator::start(move |req: &RecordedRequest| {
//!     let id = next_id.fetch_add(1, Ordering::SeqCst);
//!     SimResponse::json(201, &serde_json::json!({ "id": id, "path": req.path }))
//! })
//! .await?;
//! sim.inject(FaultRule::new(Fault::RateLimited { retry_after_secs: 2 }).on("POST", "/v1/persons"));
//! // point the connector at sim.base_url(), then inspect sim.requests()
//! # Ok(()) }
//! ```
//!
//! The server is bounded: after [`SimOptions::max_requests`] requests it answers `503` without
//! calling the handler or recording anything, bodies larger than [`SimOptions::max_body`] get
//! `413`, and at most [`MAX_CONNECTIONS`] connections are served at once.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Most connections a simulator serves at the same time; further connections are closed at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Largest response body [`send_webhook`] reads (16 MiB).
const MAX_WEBHOOK_RESPONSE: usize = 16 * 1024 * 1024;

/// How long [`send_webhook`] waits for the whole exchange before giving up.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Limits of a [`Simulator`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Requests served (recorded and handled or faulted) before the server answers every further
    /// request with `503 request budget exhausted`. Default 10 000.
    pub max_requests: usize,
    /// Largest accepted request body in bytes; larger bodies get `413`. Default 4 MiB.
    pub max_body: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            max_requests: 10_000,
            max_body: 4 * 1024 * 1024,
        }
    }
}

/// The behaviour of a simulated service: answers one recorded request.
///
/// Implementations keep their state behind interior mutability (a `Mutex`, atomics): the handler
/// is shared by all connections. Closures `Fn(&RecordedRequest) -> SimResponse` implement it
/// (annotate the argument: `|req: &RecordedRequest| ...`). The handler runs on the server's
/// task, so it should answer quickly and never block on I/O.
pub trait SimHandler: Send + Sync + 'static {
    /// Answers `req`. Called once per request that is not faulted (see [`Fault`]).
    fn handle(&self, req: &RecordedRequest) -> SimResponse;

    /// Called for every recorded request as soon as it has been read, before faults (and their
    /// latency) apply and before [`SimHandler::handle`]; each call is paired with one
    /// [`SimHandler::finished`] for the same request once its answer is produced or it is
    /// dropped. Lets a handler count the requests in flight (e.g. a vendor's concurrency
    /// limit). Does nothing by default.
    fn started(&self, _req: &RecordedRequest) {}

    /// The end of a request announced by [`SimHandler::started`]. Does nothing by default.
    fn finished(&self, _req: &RecordedRequest) {}
}

/// Calls [`SimHandler::finished`] when dropped (also when the request future is cancelled).
struct InFlight<'a> {
    handler: &'a dyn SimHandler,
    req: &'a RecordedRequest,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.handler.finished(self.req);
    }
}

impl<F> SimHandler for F
where
    F: Fn(&RecordedRequest) -> SimResponse + Send + Sync + 'static,
{
    fn handle(&self, req: &RecordedRequest) -> SimResponse {
        self(req)
    }
}

/// A request as the simulator received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, upper case (`"POST"`).
    pub method: String,
    /// The path, as sent (still percent-encoded), e.g. `/v1/persons`.
    pub path: String,
    /// The raw query string without `?`, if the URL had one.
    pub query: Option<String>,
    /// Headers in arrival order (names lower case).
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, or `None` when it is empty or not JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The query string split into percent-decoded `(name, value)` pairs (`+` is a space).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(parse_urlencoded)
            .unwrap_or_default()
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The body parsed as `application/x-www-form-urlencoded` pairs (empty when it is not UTF-8).
    pub fn form(&self) -> Vec<(String, String)> {
        std::str::from_utf8(&self.body)
            .map(parse_urlencoded)
            .unwrap_or_default()
    }

    /// The body as (lossy) UTF-8 text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `path` plus `?query` when there is one.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }
}

/// Splits `a=1&b=x+y` into percent-decoded pairs; `+` decodes to a space.
pub fn parse_urlencoded(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(name, true), percent_decode(value, true))
        })
        .collect()
}

/// Percent-decodes `input` (invalid escapes are kept as they are; invalid UTF-8 is replaced).
/// With `plus_as_space`, `+` decodes to a space (form encoding).
pub fn percent_decode(input: &str, plus_as_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the simulator answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimResponse {
    /// HTTP status code (an invalid code is sent as 500).
    pub status: u16,
    /// Response headers (invalid names or values are skipped).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl SimResponse {
    /// A JSON response with `content-type: application/json`.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        SimResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// A response without a body.
    pub fn empty(status: u16) -> Self {
        SimResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: &str) -> Self {
        SimResponse {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// Adds a header (builder style).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn into_hyper(self) -> Response<Body> {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.append(name, value);
            }
        }
        response
    }
}

/// A fault the simulator injects instead of (or before) calling the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answers with this status, headers and body (401, 403, 404, 409, 422, ...).
    Status {
        /// The status code.
        status: u16,
        /// Response headers.
        headers: Vec<(String, String)>,
        /// Response body.
        body: Vec<u8>,
    },
    /// `429` with `Retry-After: <secs>` and the JSON body `{"error":"rate limited"}`.
    RateLimited {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// A server error (meant for 5xx) with a JSON body `{"error":"simulated server error","status":N}`.
    ServerError {
        /// The status code.
        status: u16,
    },
    /// Answers with `status` and a JSON body whose `message` repeats everything the request
    /// carried — every header value, the path with its query, the body — as a careless or
    /// hostile server might: a client must not copy any of it into its errors or logs.
    Echo {
        /// The status code.
        status: u16,
    },
    /// Sleeps this long, then runs the handler normally.
    Latency(Duration),
    /// Closes the connection without sending any response (the client sees a connection error
    /// or an incomplete message).
    DropConnection,
}

impl Fault {
    /// A [`Fault::Status`] with a JSON body.
    pub fn status_json(status: u16, body: &serde_json::Value) -> Fault {
        Fault::Status {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// A queued fault: applies to the next `times` requests that match `method` and `path_prefix`.
///
/// Rules are checked in insertion order before the handler; the first matching rule with
/// applications left is used (and one application is consumed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// What to do.
    pub fault: Fault,
    /// How many matching requests it applies to; `usize::MAX` means always.
    pub times: usize,
    /// Only requests with this method (case-insensitive; `None` or `"*"` = any).
    pub method: Option<String>,
    /// Only requests whose path starts with this (`None` = any).
    pub path_prefix: Option<String>,
}

impl FaultRule {
    /// A rule applying `fault` once, to any request.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            times: 1,
            method: None,
            path_prefix: None,
        }
    }

    /// Applies to the next `n` matching requests.
    #[must_use]
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    /// Applies to every matching request until [`Simulator::clear_faults`].
    #[must_use]
    pub fn always(self) -> Self {
        self.times(usize::MAX)
    }

    /// Only requests with `method` (`"*"` = any) whose path starts with `path_prefix`.
    #[must_use]
    pub fn on(mut self, method: &str, path_prefix: &str) -> Self {
        self.method = (method != "*" && !method.is_empty()).then(|| method.to_owned());
        self.path_prefix = (!path_prefix.is_empty()).then(|| path_prefix.to_owned());
        self
    }

    fn matches(&self, req: &RecordedRequest) -> bool {
        self.times > 0
            && self
                .method
                .as_deref()
                .is_none_or(|m| m == "*" || m.eq_ignore_ascii_case(&req.method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| req.path.starts_with(p))
    }
}

struct Shared {
    handler: Box<dyn SimHandler>,
    options: SimOptions,
    log: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<VecDeque<FaultRule>>,
    served: AtomicUsize,
    connections: AtomicUsize,
}

/// Locks ignoring poisoning: a panicking handler must not wedge the simulator.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running simulated service. Dropping it stops the server and closes its connections.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .field("options", &self.shared.options)
            .field("served", &self.served())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts a simulator with default [`SimOptions`]. Must be called inside a Tokio runtime.
    pub async fn start(handler: impl SimHandler) -> std::io::Result<Simulator> {
        Self::start_with(handler, SimOptions::default()).await
    }

    /// Starts a simulator with `options` on `127.0.0.1:0`.
    pub async fn start_with(
        handler: impl SimHandler,
        options: SimOptions,
    ) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            options,
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            served: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Simulator { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `base_url() + path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// Every request received since start (or the last [`clear_requests`](Self::clear_requests)),
    /// in order, including faulted ones; requests refused because the budget is exhausted are
    /// not recorded.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// The recorded requests with this method whose path starts with `path_prefix`.
    pub fn requests_to(&self, method: &str, path_prefix: &str) -> Vec<RecordedRequest> {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    /// The recorded requests whose path starts with `path_prefix`, as `"METHOD /path"` — what
    /// call-count assertions compare.
    pub fn calls(&self, path_prefix: &str) -> Vec<String> {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Forgets the recorded requests (the served count and budget are unchanged).
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Queues a fault rule (applied before the handler, in insertion order).
    pub fn inject(&self, rule: FaultRule) {
        lock(&self.shared.faults).push_back(rule);
    }

    /// Removes all queued fault rules.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Fault rules that still have applications left.
    pub fn pending_faults(&self) -> Vec<FaultRule> {
        lock(&self.shared.faults).iter().cloned().collect()
    }

    /// Requests served since start (handled, faulted or rejected for size; not reset by
    /// [`clear_requests`](Self::clear_requests)); at most [`SimOptions::max_requests`].
    pub fn served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// TCP connections accepted since start (shows whether clients reuse kept-alive
    /// connections).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stops the server and waits for its accept loop to end; open connections are closed.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // Resolves (as cancelled) once the accept task, its listener and connections are dropped.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in this set: when the accept task is aborted the set is dropped,
    // which aborts every connection too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        drop(stream);
                        continue;
                    }
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(_) => {
                    // e.g. too many open files: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The error a service returns to make hyper close the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("simulated dropped connection")
    }
}

impl std::error::Error for DropConnection {}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { handle_request(&shared, req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle_request(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let within_budget = shared
        .served
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < shared.options.max_requests).then_some(n + 1)
        })
        .is_ok();
    if !within_budget {
        return Ok(SimResponse::text(503, "request budget exhausted").into_hyper());
    }

    let (parts, body) = req.into_parts();
    let mut recorded = RecordedRequest {
        method: parts.method.as_str().to_ascii_uppercase(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    };

    let max_body = shared.options.max_body;
    let declared_too_large = recorded
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|len| len > max_body as u64);
    let body = if declared_too_large {
        None
    } else {
        axum::body::to_bytes(Body::new(body), max_body).await.ok()
    };
    let Some(body) = body else {
        lock(&shared.log).push(recorded);
        return Ok(SimResponse::json(
            413,
            &serde_json::json!({ "error": "request body too large or unreadable", "max_body": max_body }),
        )
        .with_header("connection", "close")
        .into_hyper());
    };
    recorded.body = body.to_vec();
    lock(&shared.log).push(recorded.clone());
    shared.handler.started(&recorded);
    let _in_flight = InFlight {
        handler: shared.handler.as_ref(),
        req: &recorded,
    };

    let fault = {
        let mut faults = lock(&shared.faults);
        let found = faults.iter().position(|rule| rule.matches(&recorded));
        found.map(|index| {
            let rule = &mut faults[index];
            let fault = rule.fault.clone();
            if rule.times != usize::MAX {
                rule.times -= 1;
            }
            if rule.times == 0 {
                faults.remove(index);
            }
            fault
        })
    };

    let response = match fault {
        None => shared.handler.handle(&recorded),
        Some(Fault::Status {
            status,
            headers,
            body,
        }) => SimResponse {
            status,
            headers,
            body,
        },
        Some(Fault::RateLimited { retry_after_secs }) => {
            SimResponse::json(429, &serde_json::json!({ "error": "rate limited" }))
                .with_header("retry-after", retry_after_secs.to_string())
        }
        Some(Fault::ServerError { status }) => SimResponse::json(
            status,
            &serde_json::json!({ "error": "simulated server error", "status": status }),
        ),
        Some(Fault::Echo { status }) => {
            let mut echoed: Vec<String> = recorded.headers.iter().map(|(_, v)| v.clone()).collect();
            echoed.push(recorded.path_and_query());
            echoed.push(String::from_utf8_lossy(&recorded.body).into_owned());
            SimResponse::json(
                status,
                &serde_json::json!({ "error": "echo", "message": echoed.join(" ") }),
            )
        }
        Some(Fault::Latency(delay)) => {
            tokio::time::sleep(delay).await;
            shared.handler.handle(&recorded)
        }
        Some(Fault::DropConnection) => return Err(DropConnection),
    };
    Ok(response.into_hyper())
}

fn invalid_input(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message.into())
}

/// Sends `request` (method, headers, body) to `url` over plain HTTP/1.1, for end-to-end tests
/// of a running engine or server; returns the status and body of the answer.
///
/// `url` must be an absolute `http://host:port/path?query` URL; `request.url` is ignored (put
/// the same URL there if a signature covers it). `Host` and `Content-Length` are set from `url`
/// and the body. Gives up after 60 seconds.
pub async fn send_webhook(
    url: &str,
    request: &refsync_core::WebhookRequest,
) -> std::io::Result<(u16, Vec<u8>)> {
    match tokio::time::timeout(WEBHOOK_TIMEOUT, send_webhook_inner(url, request)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {url} within {WEBHOOK_TIMEOUT:?}"),
        )),
    }
}

async fn send_webhook_inner(
    url: &str,
    request: &refsync_core::WebhookRequest,
) -> std::io::Result<(u16, Vec<u8>)> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| invalid_input(format!("invalid url {url:?}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid_input(format!(
            "send_webhook needs an absolute http:// url, got {url:?}"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| invalid_input(format!("url without host: {url:?}")))?;
    let port = uri.port_u16().unwrap_or(80);
    let host_header = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let connect_host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = TcpStream::connect((connect_host, port)).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    let driver = tokio::spawn(connection);

    let method = hyper::Method::from_bytes(request.method.trim().as_bytes())
        .map_err(|e| invalid_input(format!("invalid method {:?}: {e}", request.method)))?;
    let path_and_query = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut builder = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, host_header);
    for (name, value) in &request.headers {
        if name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| invalid_input(format!("invalid header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| invalid_input(format!("invalid value for header {name}: {e}")))?;
        builder = builder.header(name, value);
    }
    let http_request = builder
        .body(Body::from(request.body.clone()))
        .map_err(|e| invalid_input(e.to_string()))?;
    let response = sender
        .send_request(http_request)
        .await
        .map_err(std::io::Error::other);
    let result = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            axum::body::to_bytes(Body::new(response.into_body()), MAX_WEBHOOK_RESPONSE)
                .await
                .map(|bytes| (status, bytes.to_vec()))
                .map_err(std::io::Error::other)
        }
        Err(e) => Err(e),
    };
    driver.abort();
    result
}
