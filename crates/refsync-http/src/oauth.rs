//! OAuth2 (authorization code + refresh token) on the `oauth2` crate: a [`TokenManager`] that
//! keeps one account's token fresh, refreshes ahead of expiry and shares one refresh among
//! concurrent callers (single flight), persisting through a [`TokenStore`].
//!
//! The token endpoint is called through our own reqwest 0.13 client (the `oauth2` crate's
//! `reqwest` feature would pull reqwest 0.12).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse as _, TokenUrl,
};
use refsync_core::{Error, ErrorKind, Result, Secret};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::signature::{constant_time_eq, excerpt};
use crate::status::retry_after_from_headers;

/// How the client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic `client_id:client_secret` (RFC 6749 default; Pipedrive).
    #[default]
    Basic,
    /// `client_id` and `client_secret` as form fields (HubSpot, Zoho).
    RequestBody,
}

/// One OAuth2 application's configuration. `Debug` never shows the client secret; `PartialEq`
/// compares it in constant time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The application's client id.
    pub client_id: String,
    /// The application's client secret (empty for public clients).
    pub client_secret: Secret,
    /// The authorization endpoint (where the user grants access).
    pub auth_url: String,
    /// The token endpoint (code exchange and refresh), e.g. per-data-centre for Zoho.
    pub token_url: String,
    /// The redirect URI registered with the vendor, when the vendor requires it.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// Scopes to request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How to send the client credentials to the token endpoint (default `basic`).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Extra query parameters for the authorization URL (Zoho: `access_type=offline`,
    /// `prompt=consent`).
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
}

impl PartialEq for OAuthConfig {
    fn eq(&self, other: &Self) -> bool {
        self.client_id == other.client_id
            && constant_time_eq(
                self.client_secret.expose().as_bytes(),
                other.client_secret.expose().as_bytes(),
            )
            && self.auth_url == other.auth_url
            && self.token_url == other.token_url
            && self.redirect_url == other.redirect_url
            && self.scopes == other.scopes
            && self.client_auth == other.client_auth
            && self.authorize_params == other.authorize_params
    }
}

/// A persisted token. `Debug` shows neither token nor the values of `extra`.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredToken {
    /// The bearer access token.
    pub access_token: Secret,
    /// The refresh token, when the vendor issued one.
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// When the access token expires, when the vendor said (`expires_in`).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Other fields of the token response, e.g. Zoho `api_domain`, Salesforce `instance_url`.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_at", &self.expires_at)
            .field("extra_keys", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl StoredToken {
    /// A token with only an access token (no refresh token, no expiry).
    pub fn new(access_token: impl Into<Secret>) -> Self {
        StoredToken {
            access_token: access_token.into(),
            refresh_token: None,
            expires_at: None,
            extra: Map::new(),
        }
    }

    /// Whether the access token expires within `ahead` of `now` (never, without `expires_at`).
    pub fn expires_within(&self, now: DateTime<Utc>, ahead: Duration) -> bool {
        let ahead = TimeDelta::from_std(ahead).unwrap_or(TimeDelta::MAX);
        self.expires_at
            .is_some_and(|at| at.signed_duration_since(now) <= ahead)
    }

    /// A string field of `extra` (e.g. `api_domain`).
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }
}

/// Where tokens live between runs (the engine keeps them in its store, `refsync_engine::StoreTokenStore`:
/// protect the database like the config file).
#[async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// The token stored under `key`, if any.
    async fn load(&self, key: &str) -> Result<Option<StoredToken>>;
    /// Stores `token` under `key`, replacing what was there.
    async fn save(&self, key: &str, token: &StoredToken) -> Result<()>;
}

/// A [`TokenStore`] in memory (tests, short-lived tools).
#[derive(Default)]
pub struct MemoryTokenStore {
    tokens: Mutex<HashMap<String, StoredToken>>,
}

impl fmt::Debug for MemoryTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("MemoryTokenStore")
            .field("keys", &tokens.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MemoryTokenStore {
    /// A store holding `token` under `key`.
    pub fn with_token(key: impl Into<String>, token: StoredToken) -> Self {
        let store = MemoryTokenStore::default();
        store
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.into(), token);
        store
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self, key: &str) -> Result<Option<StoredToken>> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(tokens.get(key).cloned())
    }
    async fn save(&self, key: &str, token: &StoredToken) -> Result<()> {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.insert(key.to_owned(), token.clone());
        Ok(())
    }
}

/// Token-response fields beyond RFC 6749's (kept in [`StoredToken::extra`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ExtraFields {
    #[serde(flatten)]
    fields: Map<String, Value>,
}
impl ExtraTokenFields for ExtraFields {}

type TokenResp = StandardTokenResponse<ExtraFields, BasicTokenType>;
type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TokenResp,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A reqwest client suitable for token endpoints: no redirects (the `oauth2` crate's advice
/// against SSRF), rustls, the given timeout.
pub fn token_http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| Error::config("could not build the OAuth HTTP client").with_source(e))
}

/// Keeps one account's OAuth2 token fresh. Clones share the cache and the refresh lock.
///
/// - [`access_token`](Self::access_token) refreshes when the token expires within
///   `refresh_ahead` (default 5 min); concurrent callers share one refresh (single flight).
/// - Before refreshing it re-reads the store, so another instance's fresh token is adopted.
/// - A refresh keeps the old refresh token when the vendor returns none (Zoho, HubSpot) and
///   merges `extra` fields.
/// - Refresh failures: `invalid_grant` (and other token-endpoint rejections) →
///   [`Unauthorized`](ErrorKind::Unauthorized) ("refresh token rejected; re-authorize");
///   network errors, timeouts and 5xx → [`Unavailable`](ErrorKind::Unavailable); 429 →
///   [`RateLimited`](ErrorKind::RateLimited).
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
    refresh_ahead: Duration,
}

struct Inner {
    config: OAuthConfig,
    client: OAuthClient,
    store: Arc<dyn TokenStore>,
    key: String,
    http: reqwest::Client,
    cache: Mutex<Option<StoredToken>>,
    refresh_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("key", &self.inner.key)
            .field("client_id", &self.inner.config.client_id)
            .field("token_url", &self.inner.config.token_url)
            .field("refresh_ahead", &self.refresh_ahead)
            .field("store", &self.inner.store)
            .finish()
    }
}

const OP_REFRESH: &str = "oauth_refresh";
const OP_EXCHANGE: &str = "oauth_exchange_code";

impl TokenManager {
    /// A manager for the token stored under `key` in `store`, calling the token endpoint with
    /// `http` (see [`token_http_client`]).
    ///
    /// Fails with a [`Config`](ErrorKind::Config) error when a URL in `config` is invalid.
    pub fn new(
        config: OAuthConfig,
        store: Arc<dyn TokenStore>,
        key: impl Into<String>,
        http: reqwest::Client,
    ) -> Result<Self> {
        let url_err = |field: &'static str| {
            move |e: oauth2::url::ParseError| {
                Error::config(format!("OAuth {field} is not a valid URL: {e}"))
            }
        };
        let mut client = oauth2::Client::new(ClientId::new(config.client_id.clone()))
            .set_auth_uri(AuthUrl::new(config.auth_url.clone()).map_err(url_err("auth_url"))?)
            .set_token_uri(TokenUrl::new(config.token_url.clone()).map_err(url_err("token_url"))?)
            .set_auth_type(match config.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::RequestBody => AuthType::RequestBody,
            });
        if !config.client_secret.is_empty() {
            client = client
                .set_client_secret(ClientSecret::new(config.client_secret.expose().to_owned()));
        }
        if let Some(redirect) = &config.redirect_url {
            client = client.set_redirect_uri(
                RedirectUrl::new(redirect.clone()).map_err(url_err("redirect_url"))?,
            );
        }
        Ok(TokenManager {
            inner: Arc::new(Inner {
                config,
                client,
                store,
                key: key.into(),
                http,
                cache: Mutex::new(None),
                refresh_lock: tokio::sync::Mutex::new(()),
            }),
            refresh_ahead: Duration::from_secs(300),
        })
    }

    /// Refresh when the token expires within `ahead` (default 5 minutes).
    #[must_use]
    pub fn refresh_ahead(mut self, ahead: Duration) -> Self {
        self.refresh_ahead = ahead;
        self
    }

    /// The store key of this account.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The URL to send the user to, with `state` (CSRF token), the scopes, the redirect URI and
    /// the extra authorize parameters.
    pub fn authorize_url(&self, state: &str) -> String {
        let state = state.to_owned();
        let mut request = self
            .inner
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.inner.config.scopes.iter().cloned().map(Scope::new));
        for (k, v) in &self.inner.config.authorize_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        request.url().0.to_string()
    }

    /// Exchanges an authorization code for a token, stores and caches it.
    pub async fn exchange_code(&self, code: &str) -> Result<StoredToken> {
        let _guard = self.inner.refresh_lock.lock().await;
        let http = self.http_fn();
        let response = self
            .inner
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .request_async(&http)
            .await
            .map_err(|e| map_token_error(e, "authorization code rejected; authorize again"))
            .map_err(|e| e.with_operation(OP_EXCHANGE))?;
        let token = to_stored(&response, None, Utc::now());
        self.persist(&token)
            .await
            .map_err(|e| e.with_operation(OP_EXCHANGE))?;
        Ok(token)
    }

    /// A valid access token, refreshed first when it expires within `refresh_ahead`.
    pub async fn access_token(&self) -> Result<Secret> {
        Ok(self.token().await?.access_token)
    }

    /// The whole current token (e.g. for `extra["api_domain"]`), refreshed like
    /// [`access_token`](Self::access_token).
    pub async fn token(&self) -> Result<StoredToken> {
        if let Some(token) = self.cached_fresh() {
            return Ok(token);
        }
        let _guard = self.inner.refresh_lock.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(token) = self.cached_fresh() {
            return Ok(token);
        }
        let stored = self.load_stored().await?;
        if !stored.expires_within(Utc::now(), self.refresh_ahead) {
            self.set_cache(&stored);
            return Ok(stored);
        }
        self.refresh_from(&stored).await
    }

    /// Refreshes now, whatever the expiry (still one refresh at a time).
    pub async fn force_refresh(&self) -> Result<Secret> {
        let _guard = self.inner.refresh_lock.lock().await;
        let stored = match self.cached() {
            Some(token) => token,
            None => self.load_stored().await?,
        };
        Ok(self.refresh_from(&stored).await?.access_token)
    }

    /// Refreshes because the upstream rejected `rejected` (HTTP 401), unless the token has
    /// changed since (another caller refreshed already, here or in another instance): then the
    /// current token is returned without a second refresh.
    pub async fn refresh_rejected(&self, rejected: &Secret) -> Result<Secret> {
        let _guard = self.inner.refresh_lock.lock().await;
        let is_rejected = |t: &StoredToken| {
            constant_time_eq(
                t.access_token.expose().as_bytes(),
                rejected.expose().as_bytes(),
            )
        };
        if let Some(token) = self.cached() {
            if !is_rejected(&token) {
                return Ok(token.access_token);
            }
        }
        let stored = self.load_stored().await?;
        if !is_rejected(&stored) && !stored.expires_within(Utc::now(), self.refresh_ahead) {
            self.set_cache(&stored);
            return Ok(stored.access_token);
        }
        Ok(self.refresh_from(&stored).await?.access_token)
    }

    /// Calls the token endpoint with `current`'s refresh token, then stores and caches the
    /// result. The caller holds the refresh lock.
    async fn refresh_from(&self, current: &StoredToken) -> Result<StoredToken> {
        let refresh_token = current.refresh_token.as_ref().ok_or_else(|| {
            Error::unauthorized(format!(
                "the OAuth token for '{}' has expired and there is no refresh token; re-authorize",
                self.inner.key
            ))
            .with_operation(OP_REFRESH)
        })?;
        let refresh_token = RefreshToken::new(refresh_token.expose().to_owned());
        tracing::debug!(key = %self.inner.key, "refreshing OAuth token");
        let http = self.http_fn();
        let response = self
            .inner
            .client
            .exchange_refresh_token(&refresh_token)
            .request_async(&http)
            .await
            .map_err(|e| map_token_error(e, "refresh token rejected; re-authorize"))
            .map_err(|e| e.with_operation(OP_REFRESH))?;
        let token = to_stored(&response, Some(current), Utc::now());
        self.persist(&token)
            .await
            .map_err(|e| e.with_operation(OP_REFRESH))?;
        tracing::info!(key = %self.inner.key, expires_at = ?token.expires_at, "OAuth token refreshed");
        Ok(token)
    }

    async fn persist(&self, token: &StoredToken) -> Result<()> {
        // Cache first: even if the store fails, this process keeps the working token.
        self.set_cache(token);
        self.inner.store.save(&self.inner.key, token).await
    }

    async fn load_stored(&self) -> Result<StoredToken> {
        self.inner
            .store
            .load(&self.inner.key)
            .await?
            .ok_or_else(|| {
                Error::unauthorized(format!(
                    "no OAuth token stored for '{}'; authorize first",
                    self.inner.key
                ))
            })
    }

    fn cached(&self) -> Option<StoredToken> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn cached_fresh(&self) -> Option<StoredToken> {
        self.cached()
            .filter(|t| !t.expires_within(Utc::now(), self.refresh_ahead))
    }

    fn set_cache(&self, token: &StoredToken) {
        *self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
    }

    /// The `oauth2::AsyncHttpClient` over our reqwest client.
    fn http_fn(
        &self,
    ) -> impl Fn(
        oauth2::HttpRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse>> + Send>,
    > + use<> {
        let http = self.inner.http.clone();
        move |request| Box::pin(send_token_request(http.clone(), request))
    }
}

async fn send_token_request(
    http: reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse> {
    let request = reqwest::Request::try_from(request)
        .map_err(|e| Error::unexpected("invalid token request").with_source(e.without_url()))?;
    let response = http.execute(request).await.map_err(|e| {
        let what = if e.is_timeout() {
            "the token endpoint timed out"
        } else if e.is_connect() {
            "could not connect to the token endpoint"
        } else {
            "the token endpoint request failed"
        };
        Error::new(ErrorKind::Unavailable, what).with_source(e.without_url())
    })?;
    let status = response.status();
    if status.is_server_error() || status.as_u16() == 408 {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!("the token endpoint answered HTTP {}", status.as_u16()),
        ));
    }
    if status.as_u16() == 429 {
        let retry_after =
            retry_after_from_headers(response.headers(), std::time::SystemTime::now());
        return Err(Error::new(
            ErrorKind::RateLimited { retry_after },
            "the token endpoint answered HTTP 429",
        ));
    }
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            "reading the token endpoint response failed",
        )
        .with_source(e.without_url())
    })?;
    let mut out = http::Response::new(body.to_vec());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

fn map_token_error(
    err: RequestTokenError<Error, BasicErrorResponse>,
    rejected_message: &str,
) -> Error {
    match err {
        RequestTokenError::Request(e) => e,
        RequestTokenError::ServerResponse(resp) => {
            let code = resp.error().as_ref().to_owned();
            let description = resp.error_description().map(|d| excerpt(d, 200));
            rejection(&code, description.as_deref(), rejected_message)
        }
        RequestTokenError::Parse(_, body) => parse_failure(&body, rejected_message),
        RequestTokenError::Other(message) => {
            Error::unexpected(format!("token endpoint: {}", excerpt(&message, 200)))
        }
    }
}

/// A token response that did not parse. Zoho answers 200 with `{"error": "invalid_code"}`;
/// otherwise the body is never copied into the error (it may hold tokens).
fn parse_failure(body: &[u8], rejected_message: &str) -> Error {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .map(|s| excerpt(s, 200))
    };
    match field("error") {
        Some(code) => rejection(
            &excerpt(&code, 60),
            field("error_description").as_deref(),
            rejected_message,
        ),
        None => Error::unexpected("the token endpoint answered with an unreadable token response"),
    }
}

fn rejection(code: &str, description: Option<&str>, rejected_message: &str) -> Error {
    let is_grant = code == BasicErrorResponseType::InvalidGrant.as_ref()
        || code == "invalid_code"
        || code == "invalid_token";
    let head = if is_grant {
        rejected_message.to_owned()
    } else {
        "the token endpoint rejected the client; check client_id / client_secret / redirect_url"
            .to_owned()
    };
    match description {
        Some(d) => Error::unauthorized(format!("{head} ({code}: {d})")),
        None => Error::unauthorized(format!("{head} ({code})")),
    }
}

fn to_stored(
    response: &TokenResp,
    previous: Option<&StoredToken>,
    now: DateTime<Utc>,
) -> StoredToken {
    let expires_at = response
        .expires_in()
        .and_then(|d| TimeDelta::from_std(d).ok())
        .and_then(|d| now.checked_add_signed(d));
    let refresh_token = response
        .refresh_token()
        .map(|t| Secret::new(t.secret().clone()))
        .or_else(|| previous.and_then(|p| p.refresh_token.clone()));
    let mut extra = previous.map(|p| p.extra.clone()).unwrap_or_default();
    for (k, v) in &response.extra_fields().fields {
        extra.insert(k.clone(), v.clone());
    }
    StoredToken {
        access_token: Secret::new(response.access_token().secret().clone()),
        refresh_token,
        expires_at,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OAuthConfig {
        OAuthConfig {
            client_id: "cid".into(),
            client_secret: Secret::new("client-s3cr3t"),
            auth_url: "https://accounts.example.com/oauth/authorize".into(),
            token_url: "https://accounts.example.com/oauth/token".into(),
            redirect_url: Some("https://app.example.com/callback".into()),
            scopes: vec!["contacts".into(), "deals:read".into()],
            client_auth: ClientAuth::RequestBody,
            authorize_params: BTreeMap::from([("access_type".into(), "offline".into())]),
        }
    }

    fn manager(config: OAuthConfig) -> Result<TokenManager> {
        TokenManager::new(
            config,
            Arc::new(MemoryTokenStore::default()),
            "acct-1",
            reqwest::Client::new(),
        )
    }

    #[test]
    fn authorize_url_has_everything() {
        let m = manager(config()).unwrap();
        let url = url::Url::parse(&m.authorize_url("st4te")).unwrap();
        let q: HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(url.host_str(), Some("accounts.example.com"));
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["state"], "st4te");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["scope"], "contacts deals:read");
        assert_eq!(q["redirect_uri"], "https://app.example.com/callback");
        assert_eq!(q["access_type"], "offline");
        assert!(!url.as_str().contains("client-s3cr3t"));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        let mut c = config();
        c.token_url = "not a url".into();
        assert_eq!(manager(c).unwrap_err().kind(), &ErrorKind::Config);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let m = manager(config()).unwrap();
        let mut t = StoredToken::new("acc-s3cr3t");
        t.refresh_token = Some(Secret::new("ref-s3cr3t"));
        t.extra
            .insert("id_token".into(), Value::String("jwt-s3cr3t".into()));
        let dbg = format!("{m:?} {t:?} {:?}", config());
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("id_token"));
    }

    #[test]
    fn config_serde() {
        let json = serde_json::json!({
            "client_id": "a", "client_secret": "b",
            "auth_url": "https://x/a", "token_url": "https://x/t"
        });
        let c: OAuthConfig = serde_json::from_value(json).unwrap();
        assert_eq!(c.client_auth, ClientAuth::Basic);
        assert!(c.scopes.is_empty());
        let bad = serde_json::json!({
            "client_id": "a", "client_secret": "b",
            "auth_url": "https://x/a", "token_url": "https://x/t", "typo": 1
        });
        assert!(serde_json::from_value::<OAuthConfig>(bad).is_err());
    }

    #[test]
    fn stored_token_expiry() {
        let now = Utc::now();
        let mut t = StoredToken::new("a");
        assert!(!t.expires_within(now, Duration::from_secs(300)));
        t.expires_at = Some(now + TimeDelta::seconds(120));
        assert!(t.expires_within(now, Duration::from_secs(300)));
        assert!(!t.expires_within(now, Duration::from_secs(60)));
        t.extra
            .insert("api_domain".into(), "https://www.zohoapis.eu".into());
        assert_eq!(t.extra_str("api_domain"), Some("https://www.zohoapis.eu"));
        let back: StoredToken = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.access_token.expose(), "a");
        assert_eq!(back.expires_at, t.expires_at);
    }

    #[test]
    fn token_error_mapping() {
        let invalid_grant: BasicErrorResponse = serde_json::from_value(serde_json::json!({
            "error": "invalid_grant", "error_description": "token revoked"
        }))
        .unwrap();
        let e = map_token_error(
            RequestTokenError::ServerResponse(invalid_grant),
            "refresh token rejected; re-authorize",
        );
        assert_eq!(e.kind(), &ErrorKind::Unauthorized);
        assert_eq!(
            e.message(),
            "refresh token rejected; re-authorize (invalid_grant: token revoked)"
        );
        let e = map_token_error(
            RequestTokenError::Request(Error::new(ErrorKind::Unavailable, "down")),
            "x",
        );
        assert_eq!(e.kind(), &ErrorKind::Unavailable);
        let e = parse_failure(
            br#"{"error":"invalid_code"}"#,
            "authorization code rejected",
        );
        assert_eq!(e.kind(), &ErrorKind::Unauthorized);
        assert!(e.message().starts_with("authorization code rejected"));
        let e = parse_failure(br#"{"access_token":"leaky-s3cr3t"}"#, "x");
        assert_eq!(e.kind(), &ErrorKind::Unexpected);
        assert!(!format!("{e} {e:?}").contains("s3cr3t"));
        let e = parse_failure(b"<html>", "x");
        assert_eq!(e.kind(), &ErrorKind::Unexpected);
    }
}
