//! [`HttpClient`]: a reqwest client (rustls) for one upstream with auth, rate limiting, retries
//! that honour `Retry-After`, and errors mapped to [`ErrorKind`] without secrets.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use refsync_core::{Error, ErrorKind, Result, Secret};
use serde::de::DeserializeOwned;
use url::Url;

use crate::backoff::RetryPolicy;
use crate::oauth::TokenManager;
use crate::ratelimit::{RateLimit, RateLimiter};
use crate::signature::excerpt;
use crate::status::{ErrorResponse, error_parts, parse_retry_after};

/// How requests are authenticated. `Debug` never shows secret values (nor the Basic user,
/// which some vendors use as the API key).
#[derive(Clone)]
pub enum Auth {
    /// No authentication.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// HTTP Basic auth.
    Basic {
        /// The user name (for Stripe-style APIs, the API key).
        user: String,
        /// The password (may be empty).
        password: Secret,
    },
    /// A custom header, e.g. `x-api-key` or Zoho's `Authorization: Zoho-oauthtoken ...`.
    Header {
        /// The header name.
        name: String,
        /// The header value.
        value: Secret,
    },
    /// A query parameter, e.g. Pipedrive's `api_token`.
    Query {
        /// The parameter name.
        name: String,
        /// The parameter value.
        value: Secret,
    },
    /// Several query parameters, e.g. WooCommerce's `consumer_key` and `consumer_secret` for
    /// servers that drop the `Authorization` header.
    QueryPairs(Vec<(String, Secret)>),
    /// A bearer token from an OAuth2 [`TokenManager`] (refreshed ahead of expiry, and once on
    /// HTTP 401).
    OAuth2(TokenManager),
    /// One-legged OAuth 1.0a ([`crate::oauth1`]): every attempt is signed afresh (new nonce and
    /// timestamp) over the method, the URL and its query; the `oauth_*` parameters go in the
    /// query. WooCommerce requires it of stores served over plain HTTP.
    OAuth1 {
        /// The consumer key.
        consumer_key: Secret,
        /// The consumer secret.
        consumer_secret: Secret,
        /// The HMAC to sign with.
        method: crate::oauth1::SignatureMethod,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const R: &str = "[redacted]";
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.debug_tuple("Bearer").field(&R).finish(),
            Auth::Basic { .. } => f
                .debug_struct("Basic")
                .field("user", &R)
                .field("password", &R)
                .finish(),
            Auth::Header { name, .. } => f
                .debug_struct("Header")
                .field("name", name)
                .field("value", &R)
                .finish(),
            Auth::Query { name, .. } => f
                .debug_struct("Query")
                .field("name", name)
                .field("value", &R)
                .finish(),
            Auth::QueryPairs(pairs) => f
                .debug_struct("QueryPairs")
                .field(
                    "names",
                    &pairs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                )
                .field("values", &R)
                .finish(),
            Auth::OAuth2(tm) => f.debug_tuple("OAuth2").field(tm).finish(),
            Auth::OAuth1 { method, .. } => f
                .debug_struct("OAuth1")
                .field("consumer_key", &R)
                .field("consumer_secret", &R)
                .field("method", method)
                .finish(),
        }
    }
}

impl Auth {
    /// The secret strings this auth may put on the wire, to scrub from error messages.
    fn secrets(&self, oauth_sent: Option<&Secret>) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Auth::None => {}
            Auth::Bearer(token) => out.push(token.expose().to_owned()),
            Auth::Basic { user, password } => {
                out.push(user.clone());
                out.push(password.expose().to_owned());
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{user}:{}", password.expose())),
                );
            }
            Auth::Header { value, .. } => out.push(value.expose().to_owned()),
            Auth::Query { value, .. } => {
                out.push(value.expose().to_owned());
                out.push(url::form_urlencoded::byte_serialize(value.expose().as_bytes()).collect());
            }
            Auth::QueryPairs(pairs) => {
                for (_, value) in pairs {
                    out.push(value.expose().to_owned());
                    out.push(
                        url::form_urlencoded::byte_serialize(value.expose().as_bytes()).collect(),
                    );
                }
            }
            Auth::OAuth2(_) => {
                if let Some(token) = oauth_sent {
                    out.push(token.expose().to_owned());
                }
            }
            Auth::OAuth1 {
                consumer_key,
                consumer_secret,
                ..
            } => {
                out.push(consumer_key.expose().to_owned());
                out.push(consumer_secret.expose().to_owned());
            }
        }
        // Very short values would garble messages and are not meaningful secrets.
        out.retain(|s| s.len() >= 4);
        out
    }
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// JSON (`Content-Type: application/json`).
    Json(serde_json::Value),
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
    /// Raw bytes with their content type.
    Bytes {
        /// The `Content-Type`.
        content_type: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// One API call, relative to the client's base URL.
#[derive(Clone)]
pub struct ApiRequest {
    /// The HTTP method.
    pub method: Method,
    /// Path joined to the base URL (`/persons` or `persons`); an absolute `http(s)://` URL is
    /// used as is.
    pub path: String,
    /// Query parameters, appended in order.
    pub query: Vec<(String, String)>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Extra request headers whose values are credentials: sent marked sensitive and scrubbed
    /// from error messages like the client's own auth.
    pub secret_headers: Vec<(String, Secret)>,
    /// The body, if any.
    pub body: Option<Body>,
    /// The operation name for errors and logs (`push_referral`, `get_deal`, ...); default
    /// `"request"`.
    pub operation: &'static str,
    /// Whether the call may be repeated safely: 5xx, timeouts and connection errors are retried
    /// only for idempotent requests. Default: `true` for GET/HEAD/PUT/DELETE/OPTIONS, `false`
    /// for POST/PATCH.
    pub idempotent: bool,
}

impl fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values of query parameters and headers may be credentials: names only.
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "query",
                &self.query.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field(
                "secret_headers",
                &self
                    .secret_headers
                    .iter()
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>(),
            )
            .field(
                "body",
                &self.body.as_ref().map(|b| match b {
                    Body::Json(_) => "json",
                    Body::Form(_) => "form",
                    Body::Bytes { .. } => "bytes",
                }),
            )
            .field("operation", &self.operation)
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

impl ApiRequest {
    /// A request with `method` to `path`, no body.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        ApiRequest {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            secret_headers: Vec::new(),
            body: None,
            operation: "request",
            idempotent,
        }
    }
    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    /// `DELETE path`.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }
    /// `POST path` with a JSON body.
    pub fn post_json(path: impl Into<String>, value: serde_json::Value) -> Self {
        Self::new(Method::POST, path).body(Body::Json(value))
    }
    /// `PUT path` with a JSON body.
    pub fn put_json(path: impl Into<String>, value: serde_json::Value) -> Self {
        Self::new(Method::PUT, path).body(Body::Json(value))
    }
    /// `PATCH path` with a JSON body.
    pub fn patch_json(path: impl Into<String>, value: serde_json::Value) -> Self {
        Self::new(Method::PATCH, path).body(Body::Json(value))
    }
    /// `POST path` with a form body.
    pub fn post_form<K: Into<String>, V: Into<String>>(
        path: impl Into<String>,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::new(Method::POST, path).body(Body::Form(pairs))
    }
    /// Appends a query parameter.
    #[must_use]
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }
    /// Adds a request header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Adds a request header whose value is a credential (an API key a receiver expects): it is
    /// sent marked sensitive and never appears in errors or logs.
    #[must_use]
    pub fn secret_header(mut self, name: impl Into<String>, value: Secret) -> Self {
        self.secret_headers.push((name.into(), value));
        self
    }
    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: Body) -> Self {
        self.body = Some(body);
        self
    }
    /// Names the operation (errors and logs).
    #[must_use]
    pub fn operation(mut self, operation: &'static str) -> Self {
        self.operation = operation;
        self
    }
    /// Marks the request as safe (or not) to repeat, e.g. a POST with an idempotency key.
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// A 2xx response.
#[derive(Clone)]
pub struct ApiResponse {
    /// The HTTP status (2xx).
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The response body.
    pub body: Vec<u8>,
    /// The connector that made the call (for error context).
    pub connector: &'static str,
    /// The operation of the request (for error context).
    pub operation: &'static str,
}

impl fmt::Debug for ApiResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiResponse")
            .field("status", &self.status)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("connector", &self.connector)
            .field("operation", &self.operation)
            .finish()
    }
}

impl ApiResponse {
    /// Decodes the body as JSON into `T`; an [`Unexpected`](ErrorKind::Unexpected) error naming
    /// the operation when it does not fit.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::unexpected(format!(
                "could not decode the {} response from {}: {}",
                self.operation,
                self.connector,
                excerpt(&e.to_string(), 200)
            ))
            .with_connector(self.connector)
            .with_operation(self.operation)
        })
    }
    /// The body as a JSON value.
    pub fn json_value(&self) -> Result<serde_json::Value> {
        self.json()
    }
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// A header value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The HTTP client of one connector (cheap to clone: clones share the connection pool, the
/// rate limiter and the token manager). `Debug` never shows secrets.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: &'static str,
    base_url: String,
    client: reqwest::Client,
    auth: Auth,
    limiter: Option<RateLimiter>,
    retry: RetryPolicy,
    timeout: Duration,
    token_scheme: &'static str,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("connector", &self.inner.connector)
            .field("base_url", &self.inner.base_url)
            .field("auth", &self.inner.auth)
            .field("rate_limiter", &self.inner.limiter)
            .field("retry", &self.inner.retry)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// Builds an [`HttpClient`]; see [`HttpClient::builder`].
pub struct HttpClientBuilder {
    connector: &'static str,
    base_url: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    auth: Auth,
    limiter: Option<RateLimiter>,
    retry: RetryPolicy,
    user_agent: String,
    default_headers: Vec<(String, String)>,
    token_scheme: &'static str,
}

impl fmt::Debug for HttpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClientBuilder")
            .field("connector", &self.connector)
            .field("base_url", &self.base_url)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl HttpClientBuilder {
    /// The scheme of the `Authorization` header for [`Auth::Bearer`] and [`Auth::OAuth2`]
    /// tokens (default `Bearer`; Zoho wants `Zoho-oauthtoken`).
    #[must_use]
    pub fn token_scheme(mut self, scheme: &'static str) -> Self {
        self.token_scheme = scheme;
        self
    }
    /// The base URL that request paths are joined to (`https://api.pipedrive.com/v1`). Must be
    /// http(s). Without one, every request path must be an absolute URL.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }
    /// Total time allowed per try, from connecting to the end of the body (default 10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Time allowed to connect (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// How requests authenticate (default [`Auth::None`]).
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    /// Limits this client to `limit` (its own bucket).
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.limiter = Some(RateLimiter::new(limit));
        self
    }
    /// Shares `limiter` with other clients of the same upstream account.
    #[must_use]
    pub fn rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }
    /// The retry policy (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// The `User-Agent` (default `refsync/<version>`).
    #[must_use]
    pub fn user_agent(mut self, user_agent: &str) -> Self {
        self.user_agent = user_agent.to_owned();
        self
    }
    /// A header sent with every request (e.g. an API version header). Validated by
    /// [`build`](Self::build).
    #[must_use]
    pub fn default_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.default_headers.push((name.into(), value.into()));
        self
    }

    /// Builds the client; a [`Config`](ErrorKind::Config) error for a base URL that is not
    /// http(s) or an invalid header.
    pub fn build(self) -> Result<HttpClient> {
        let connector = self.connector;
        let config_err = |msg: String| Error::config(msg).with_connector(connector);
        let base_url = match &self.base_url {
            None => String::new(),
            Some(raw) => {
                let parsed = Url::parse(raw.trim())
                    .map_err(|e| config_err(format!("base_url is not a valid URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(config_err(format!(
                        "base_url must be an http(s) URL, not {}:",
                        excerpt(parsed.scheme(), 20)
                    )));
                }
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(config_err("base_url has no host".to_owned()));
                }
                raw.trim().trim_end_matches('/').to_owned()
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in &self.default_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config_err(format!("invalid default header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| config_err(format!("invalid value for default header {name}")))?;
            headers.insert(name, value);
        }
        // Redirects are not followed: a redirect to another host would carry the credentials
        // there (and turn a POST into a bodiless GET that "succeeds"). A 3xx is an error that
        // asks for the final URL.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent.as_str())
            .default_headers(headers)
            .build()
            .map_err(|e| {
                config_err("could not build the HTTP client".to_owned())
                    .with_source(e.without_url())
            })?;
        Ok(HttpClient {
            inner: Arc::new(Inner {
                connector,
                base_url,
                client,
                auth: self.auth,
                limiter: self.limiter,
                retry: self.retry,
                timeout: self.timeout,
                token_scheme: self.token_scheme,
            }),
        })
    }
}

/// The outcome of one try.
enum TryOutcome {
    Done(ApiResponse),
    Failed {
        error: Error,
        /// Whether trying again may help (per status / transport error and idempotency).
        retryable: bool,
        /// The wait the server asked for, if any.
        server_wait: Option<Duration>,
        /// HTTP 401 with an OAuth2 token: the token that was rejected.
        rejected_token: Option<Secret>,
    },
}

impl HttpClient {
    /// Starts a builder for `connector` (its name in errors and logs).
    pub fn builder(connector: &'static str) -> HttpClientBuilder {
        HttpClientBuilder {
            connector,
            base_url: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            auth: Auth::None,
            limiter: None,
            retry: RetryPolicy::default(),
            user_agent: concat!("refsync/", env!("CARGO_PKG_VERSION")).to_owned(),
            default_headers: Vec::new(),
            token_scheme: "Bearer",
        }
    }

    /// The base URL (without trailing `/`; empty when none was set).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }
    /// The connector name.
    pub fn connector(&self) -> &'static str {
        self.inner.connector
    }
    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }
    /// The rate limiter, if any.
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.inner.limiter.as_ref()
    }
    /// The underlying reqwest client (timeouts and default headers applied; no auth, no
    /// retries, no rate limiting).
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner.client
    }

    /// Sends `req` and returns the 2xx response, or the classified error.
    ///
    /// - Waits on the rate limiter before every try; adds auth.
    /// - Non-2xx → [`error_from_response`](crate::error_from_response) (connector + operation
    ///   context), with any credential the client sent scrubbed from the message.
    /// - Retries, up to `max_attempts` tries in all: 429 always (waiting at least the
    ///   `Retry-After` / vendor reset); 5xx, 408, timeouts and connection errors only for
    ///   idempotent requests (5xx honour a `Retry-After` too). If the server asks for a wait
    ///   longer than `max_retry_after`, the error is returned at once (with `retry_after` for
    ///   429).
    /// - With [`Auth::OAuth2`], an HTTP 401 triggers one token refresh and one more try (not
    ///   counted in `max_attempts`).
    /// - Timeouts and connection errors are [`Unavailable`](ErrorKind::Unavailable); a timeout
    ///   (or other failure after connecting) of a non-idempotent request is marked not
    ///   retryable, since it may have been processed.
    pub async fn send(&self, req: ApiRequest) -> Result<ApiResponse> {
        let inner = &*self.inner;
        let url = self.resolve_url(&req)?;
        let body = prepare_body(&req)?;
        let mut max_attempts = inner.retry.max_attempts.max(1);
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(limiter) = &inner.limiter {
                limiter.acquire().await;
            }
            match self.try_once(&req, &url, body.as_ref(), attempt).await? {
                TryOutcome::Done(response) => return Ok(response),
                TryOutcome::Failed {
                    error,
                    retryable,
                    server_wait,
                    rejected_token,
                } => {
                    if let (Some(rejected), Auth::OAuth2(tm), false) =
                        (rejected_token, &inner.auth, refreshed)
                    {
                        refreshed = true;
                        max_attempts += 1;
                        tracing::info!(
                            connector = inner.connector,
                            operation = req.operation,
                            attempt,
                            "HTTP 401 with an OAuth token: refreshing it and trying again"
                        );
                        tm.refresh_rejected(&rejected).await.map_err(|e| {
                            e.with_connector(inner.connector)
                                .with_operation(req.operation)
                        })?;
                        continue;
                    }
                    if !retryable || attempt >= max_attempts {
                        return Err(error);
                    }
                    if let Some(wait) = server_wait {
                        if wait > inner.retry.max_retry_after {
                            tracing::warn!(
                                connector = inner.connector,
                                operation = req.operation,
                                attempt,
                                retry_after_s = wait.as_secs_f64(),
                                "upstream asks for a longer wait than max_retry_after; giving up"
                            );
                            return Err(error);
                        }
                    }
                    let delay = inner.retry.delay(attempt, server_wait, &mut rand::rng());
                    tracing::warn!(
                        connector = inner.connector,
                        operation = req.operation,
                        attempt,
                        kind = error.kind().as_str(),
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "retrying after error: {}",
                        error.message()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn try_once(
        &self,
        req: &ApiRequest,
        url: &Url,
        body: Option<&PreparedBody>,
        attempt: u32,
    ) -> Result<TryOutcome> {
        let inner = &*self.inner;
        let ctx = |e: Error| {
            e.with_connector(inner.connector)
                .with_operation(req.operation)
        };
        let mut url = url.clone();
        let mut oauth_sent: Option<Secret> = None;
        let mut auth_header: Option<HeaderValue> = None;
        match &inner.auth {
            Auth::None | Auth::Basic { .. } => {}
            Auth::Bearer(token) => {
                auth_header = Some(bearer(inner.token_scheme, token).map_err(ctx)?);
            }
            Auth::Header { .. } => {}
            Auth::Query { name, value } => {
                url.query_pairs_mut().append_pair(name, value.expose());
            }
            Auth::QueryPairs(pairs) => {
                let mut q = url.query_pairs_mut();
                for (name, value) in pairs {
                    q.append_pair(name, value.expose());
                }
            }
            Auth::OAuth1 {
                consumer_key,
                consumer_secret,
                method,
            } => {
                let query: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let mut base = url.clone();
                base.set_query(None);
                base.set_fragment(None);
                let consumer = crate::oauth1::Consumer {
                    key: consumer_key.expose(),
                    secret: consumer_secret.expose(),
                    method: *method,
                };
                let oauth = crate::oauth1::sign(
                    req.method.as_str(),
                    base.as_str(),
                    &query,
                    &consumer,
                    &crate::oauth1::nonce(),
                    chrono::Utc::now().timestamp(),
                );
                let mut q = url.query_pairs_mut();
                for (name, value) in &oauth {
                    q.append_pair(name, value);
                }
            }
            Auth::OAuth2(tm) => {
                let token = tm.access_token().await.map_err(ctx)?;
                auth_header = Some(bearer(inner.token_scheme, &token).map_err(ctx)?);
                oauth_sent = Some(token);
            }
        }
        let mut rb = inner.client.request(req.method.clone(), url);
        if let Some(value) = auth_header {
            rb = rb.header(AUTHORIZATION, value);
        }
        match &inner.auth {
            Auth::Basic { user, password } => rb = rb.basic_auth(user, Some(password.expose())),
            Auth::Header { name, value } => {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ctx(Error::config(format!("invalid auth header name {name:?}")))
                })?;
                let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                    ctx(Error::config(format!(
                        "the value of auth header {name} is not a valid header value"
                    )))
                })?;
                value.set_sensitive(true);
                rb = rb.header(name, value);
            }
            _ => {}
        }
        for (name, value) in &req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ctx(Error::unexpected(format!("invalid header name {name:?}"))))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                ctx(Error::unexpected(format!(
                    "invalid value for header {name}"
                )))
            })?;
            rb = rb.header(name, value);
        }
        for (name, value) in &req.secret_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ctx(Error::config(format!("invalid header name {name:?}"))))?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                ctx(Error::config(format!(
                    "the value of header {name} is not a valid header value"
                )))
            })?;
            value.set_sensitive(true);
            rb = rb.header(name, value);
        }
        if let Some(body) = body {
            rb = rb
                .header(CONTENT_TYPE, body.content_type.clone())
                .body(body.bytes.clone());
        }

        let started = Instant::now();
        let mut scrub_list = inner.auth.secrets(oauth_sent.as_ref());
        scrub_list.extend(
            req.secret_headers
                .iter()
                .map(|(_, v)| v.expose().to_owned())
                .filter(|v| v.len() >= 4),
        );
        let response = match rb.send().await {
            Ok(response) => response,
            Err(e) => return Ok(self.transport_failure(e, req, attempt, started, &scrub_list)),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => return Ok(self.transport_failure(e, req, attempt, started, &scrub_list)),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if (200..300).contains(&status) {
            tracing::debug!(
                connector = inner.connector,
                operation = req.operation,
                method = %req.method,
                status,
                attempt,
                elapsed_ms,
                "HTTP call succeeded"
            );
            return Ok(TryOutcome::Done(ApiResponse {
                status,
                headers,
                body: bytes,
                connector: inner.connector,
                operation: req.operation,
            }));
        }
        let now = SystemTime::now();
        // Scrub before the message is cut to length: a cut through a secret would leave a
        // prefix of it that no longer matches.
        let body = scrub(&String::from_utf8_lossy(&bytes), &scrub_list);
        let (kind, message) = error_parts(inner.connector, status, &headers, body.as_bytes(), now);
        let error = ctx(Error::new(kind.clone(), scrub(&message, &scrub_list)))
            .with_source(ErrorResponse::new(status, body));
        tracing::debug!(
            connector = inner.connector,
            operation = req.operation,
            method = %req.method,
            status,
            attempt,
            elapsed_ms,
            kind = kind.as_str(),
            "HTTP call failed"
        );
        let (retryable, server_wait) = match kind {
            ErrorKind::RateLimited { retry_after } => (true, retry_after),
            ErrorKind::Unavailable => (
                req.idempotent,
                headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, now)),
            ),
            _ => (false, None),
        };
        let rejected_token = if status == 401 { oauth_sent } else { None };
        Ok(TryOutcome::Failed {
            error,
            retryable,
            server_wait,
            rejected_token,
        })
    }

    fn transport_failure(
        &self,
        e: reqwest::Error,
        req: &ApiRequest,
        attempt: u32,
        started: Instant,
        scrub_list: &[String],
    ) -> TryOutcome {
        let inner = &*self.inner;
        let connector = inner.connector;
        // A failure before the request was sent (connecting) cannot have had an effect.
        let maybe_processed = !e.is_connect();
        let mut message = if e.is_timeout() && !e.is_connect() {
            format!(
                "no complete response from {connector} within {} s (timeout)",
                inner.timeout.as_secs_f64()
            )
        } else if e.is_connect() {
            format!("could not connect to {connector}")
        } else {
            format!("request to {connector} failed")
        };
        if maybe_processed && !req.idempotent {
            message.push_str("; the request may have been processed");
        }
        tracing::debug!(
            connector,
            operation = req.operation,
            method = %req.method,
            attempt,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            timeout = e.is_timeout(),
            connect = e.is_connect(),
            "HTTP call failed without a response"
        );
        let mut error = Error::new(ErrorKind::Unavailable, scrub(&message, scrub_list))
            .with_connector(connector)
            .with_operation(req.operation)
            .with_source(e.without_url());
        if maybe_processed && !req.idempotent {
            error = error.with_retryable(false);
        }
        TryOutcome::Failed {
            error,
            retryable: req.idempotent,
            server_wait: None,
            rejected_token: None,
        }
    }

    fn resolve_url(&self, req: &ApiRequest) -> Result<Url> {
        let inner = &*self.inner;
        let ctx = |e: Error| {
            e.with_connector(inner.connector)
                .with_operation(req.operation)
        };
        let path = req.path.trim();
        let is_absolute = ["http://", "https://"].iter().any(|scheme| {
            path.get(..scheme.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
        });
        let joined = if is_absolute {
            path.to_owned()
        } else if inner.base_url.is_empty() {
            return Err(ctx(Error::config(
                "relative request path but the client has no base_url",
            )));
        } else if path.is_empty() {
            inner.base_url.clone()
        } else {
            format!("{}/{}", inner.base_url, path.trim_start_matches('/'))
        };
        let mut url = Url::parse(&joined)
            .map_err(|e| ctx(Error::config(format!("cannot build the request URL: {e}"))))?;
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&req.query);
        }
        Ok(url)
    }
}

struct PreparedBody {
    content_type: HeaderValue,
    bytes: Vec<u8>,
}

fn prepare_body(req: &ApiRequest) -> Result<Option<PreparedBody>> {
    let ctx = |e: Error| e.with_operation(req.operation);
    Ok(match &req.body {
        None => None,
        Some(Body::Json(value)) => Some(PreparedBody {
            content_type: HeaderValue::from_static("application/json"),
            bytes: serde_json::to_vec(value).map_err(|e| {
                ctx(Error::unexpected("could not serialize the JSON body").with_source(e))
            })?,
        }),
        Some(Body::Form(pairs)) => {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            ser.extend_pairs(pairs);
            Some(PreparedBody {
                content_type: HeaderValue::from_static("application/x-www-form-urlencoded"),
                bytes: ser.finish().into_bytes(),
            })
        }
        Some(Body::Bytes {
            content_type,
            bytes,
        }) => Some(PreparedBody {
            content_type: HeaderValue::from_str(content_type).map_err(|_| {
                ctx(Error::unexpected(format!(
                    "invalid content type {:?}",
                    excerpt(content_type, 60)
                )))
            })?,
            bytes: bytes.clone(),
        }),
    })
}

fn bearer(scheme: &str, token: &Secret) -> Result<HeaderValue> {
    let mut value =
        HeaderValue::from_str(&format!("{scheme} {}", token.expose())).map_err(|_| {
            Error::config("the bearer token contains characters not allowed in a header")
        })?;
    value.set_sensitive(true);
    Ok(value)
}

fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_defaults() {
        assert!(ApiRequest::get("/x").idempotent);
        assert!(ApiRequest::delete("/x").idempotent);
        assert!(ApiRequest::put_json("/x", serde_json::json!({})).idempotent);
        assert!(!ApiRequest::post_json("/x", serde_json::json!({})).idempotent);
        assert!(!ApiRequest::patch_json("/x", serde_json::json!({})).idempotent);
        assert!(!ApiRequest::post_form("/x", [("a", "b")]).idempotent);
        assert!(
            ApiRequest::post_json("/x", serde_json::json!({}))
                .idempotent(true)
                .idempotent
        );
        assert_eq!(ApiRequest::get("/x").operation, "request");
    }

    fn client(base: &str) -> HttpClient {
        HttpClient::builder("acme").base_url(base).build().unwrap()
    }

    #[test]
    fn url_joining() {
        let c = client("https://api.example.com/v1/");
        assert_eq!(c.base_url(), "https://api.example.com/v1");
        let u = |r: ApiRequest| c.resolve_url(&r).unwrap().to_string();
        assert_eq!(
            u(ApiRequest::get("/persons")),
            "https://api.example.com/v1/persons"
        );
        assert_eq!(
            u(ApiRequest::get("persons/5")),
            "https://api.example.com/v1/persons/5"
        );
        assert_eq!(u(ApiRequest::get("")), "https://api.example.com/v1");
        assert_eq!(
            u(ApiRequest::get("/search")
                .query("term", "a b&c")
                .query("x", "1")),
            "https://api.example.com/v1/search?term=a+b%26c&x=1"
        );
        assert_eq!(
            u(ApiRequest::get("HTTPS://other.example.com/abs?q=1")),
            "https://other.example.com/abs?q=1"
        );
        let none = HttpClient::builder("acme").build().unwrap();
        assert_eq!(none.base_url(), "");
        assert_eq!(
            none.resolve_url(&ApiRequest::get("/x")).unwrap_err().kind(),
            &ErrorKind::Config
        );
    }

    #[test]
    fn builder_rejects_bad_config() {
        for bad in [
            "ftp://example.com",
            "not a url",
            "file:///etc/passwd",
            "mailto:a@b",
        ] {
            let e = HttpClient::builder("acme")
                .base_url(bad)
                .build()
                .unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Config, "{bad}");
            assert_eq!(e.connector(), Some("acme"));
        }
        let e = HttpClient::builder("acme")
            .default_header("bad header", "x")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
        let e = HttpClient::builder("acme")
            .default_header("x-ok", "bad\nvalue")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
    }

    #[test]
    fn debug_hides_secrets() {
        let auths = [
            Auth::Bearer(Secret::new("s3cr3t-bearer")),
            Auth::Basic {
                user: "sk_live_s3cr3t".into(),
                password: Secret::new("s3cr3t-pw"),
            },
            Auth::Header {
                name: "x-api-key".into(),
                value: Secret::new("s3cr3t-key"),
            },
            Auth::Query {
                name: "api_token".into(),
                value: Secret::new("s3cr3t-query"),
            },
            Auth::QueryPairs(vec![
                ("consumer_key".into(), Secret::new("ck_s3cr3t")),
                ("consumer_secret".into(), Secret::new("cs_s3cr3t")),
            ]),
            Auth::OAuth1 {
                consumer_key: Secret::new("ck_s3cr3t"),
                consumer_secret: Secret::new("cs_s3cr3t"),
                method: crate::oauth1::SignatureMethod::HmacSha256,
            },
        ];
        for auth in auths {
            let c = HttpClient::builder("acme")
                .base_url("https://api.example.com")
                .auth(auth.clone())
                .build()
                .unwrap();
            let dbg = format!("{auth:?} {c:?}");
            assert!(!dbg.contains("s3cr3t"), "{dbg}");
        }
        let req = ApiRequest::get("/x")
            .query("api_token", "s3cr3t")
            .header("x-sig", "s3cr3t");
        assert!(!format!("{req:?}").contains("s3cr3t"));
    }

    #[test]
    fn scrubbing() {
        let auth = Auth::Basic {
            user: "user1".into(),
            password: Secret::new("pa55word"),
        };
        let secrets = auth.secrets(None);
        let header = crate::basic_auth_header("user1", "pa55word");
        let msg = format!("echo: {header} user1 pa55word");
        let out = scrub(&msg, &secrets);
        assert!(!out.contains("pa55word") && !out.contains("user1"));
        assert!(!out.contains(header.trim_start_matches("Basic ")));
        let q = Auth::Query {
            name: "t".into(),
            value: Secret::new("a b+c"),
        };
        assert_eq!(scrub("x a+b%2Bc y", &q.secrets(None)), "x [redacted] y");
    }

    #[test]
    fn response_json_errors_name_the_operation() {
        let r = ApiResponse {
            status: 200,
            headers: HeaderMap::new(),
            body: b"{\"id\": \"x\"}".to_vec(),
            connector: "acme",
            operation: "get_deal",
        };
        #[derive(serde::Deserialize, Debug)]
        struct Deal {
            #[allow(dead_code)]
            id: u64,
        }
        let e = r.json::<Deal>().unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Unexpected);
        assert_eq!(e.operation(), Some("get_deal"));
        assert!(e.message().contains("get_deal"), "{}", e.message());
        assert_eq!(r.json_value().unwrap()["id"], "x");
        assert_eq!(r.text(), "{\"id\": \"x\"}");
    }
}
