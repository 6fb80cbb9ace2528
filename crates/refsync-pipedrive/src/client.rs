//! Calls to the Pipedrive API through refsync-http's client: retries with backoff honouring
//! `Retry-After` and `x-ratelimit-reset`, a client-side burst limit, a pause when
//! `x-ratelimit-remaining` reaches 0, HTTP status → `ErrorKind`, secrets kept out of errors.
//!
//! Endpoints: persons are v2 (`/api/v2/persons`, `/api/v2/persons/search`), deals are v2
//! (`/api/v2/deals`), leads are v1 only (`/v1/leads`), fields and webhooks are v1
//! (`/v1/dealFields`, `/v1/personFields`, `/v1/webhooks`), the health check is `/v1/users/me`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use refsync_core::{Error, ErrorKind, Result};
use refsync_http::oauth::TokenManager;
use refsync_http::{ApiRequest, ApiResponse, Auth, HttpClient, RateLimit, RateLimiter};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::NAME;
use crate::config::{AuthConfig, Config, DEFAULT_BASE_URL, is_field_key};

/// Pipedrive allows 10 search requests per rolling 2 seconds, whatever the plan.
const SEARCHES_PER_2S: u32 = 10;

/// A custom (or standard) field of deals/leads or persons, from `/v1/dealFields` or
/// `/v1/personFields`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) field_type: String,
    /// Whether it is a custom field (`edit_flag`); standard fields have plain keys.
    pub(crate) custom: bool,
    /// `enum`/`set` options: (id, label).
    pub(crate) options: Vec<(Value, String)>,
}

/// Which field list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FieldEntity {
    /// Deal fields (leads share them).
    Deal,
    /// Person fields.
    Person,
}

impl FieldEntity {
    fn path(self) -> &'static str {
        match self {
            FieldEntity::Deal => "/v1/dealFields",
            FieldEntity::Person => "/v1/personFields",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            FieldEntity::Deal => "deal/lead",
            FieldEntity::Person => "person",
        }
    }
}

/// The Pipedrive API client.
pub(crate) struct Client {
    config: Config,
    oauth: Option<TokenManager>,
    http: OnceCell<HttpClient>,
    burst: RateLimiter,
    search_limiter: RateLimiter,
    /// Lower-cased email → (when cached, person id).
    search_cache: Mutex<HashMap<String, (Instant, u64)>>,
    fields: Mutex<HashMap<FieldEntity, Vec<Field>>>,
    referral_code_key: Mutex<Option<String>>,
    /// Set when a response said `x-ratelimit-remaining: 0`: no request before this instant.
    pause_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.config.base_url)
            .field("oauth", &self.oauth.is_some())
            .finish_non_exhaustive()
    }
}

/// The `data` of a Pipedrive `{success, data}` answer.
fn data(resp: &ApiResponse) -> Result<Value> {
    let mut v = resp.json_value()?;
    Ok(v.get_mut("data").map(Value::take).unwrap_or(Value::Null))
}

/// A numeric Pipedrive id from `v[key]` (number or numeric string).
pub(crate) fn id_of(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        Value::Object(o) => o.get("value").and_then(|v| v.as_u64()),
        _ => None,
    }
}

fn unexpected(what: &str) -> Error {
    Error::unexpected(format!("Pipedrive answered {what}"))
}

impl Client {
    /// A client per `config`; with OAuth, `oauth` is the instance's token manager.
    pub(crate) fn new(config: &Config, oauth: Option<TokenManager>) -> Result<Client> {
        if matches!(config.auth, AuthConfig::Oauth {}) && oauth.is_none() {
            return Err(Error::config(format!(
                "{NAME}: auth type \"oauth\" needs an [instances.oauth] table (client_id, client_secret, auth_url = \"https://oauth.pipedrive.com/oauth/authorize\", token_url = \"https://oauth.pipedrive.com/oauth/token\") and `refsync oauth authorize <instance>`"
            )));
        }
        if let Some(url) = &config.base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(Error::config(format!(
                "{NAME}: base_url must be an absolute http(s) URL, got {url:?}"
            )));
        }
        Ok(Client {
            config: config.clone(),
            oauth,
            http: OnceCell::new(),
            burst: RateLimiter::new(RateLimit::new(config.burst_per_2s, Duration::from_secs(2))),
            search_limiter: RateLimiter::new(RateLimit::new(
                SEARCHES_PER_2S,
                Duration::from_secs(2),
            )),
            search_cache: Mutex::new(HashMap::new()),
            fields: Mutex::new(HashMap::new()),
            referral_code_key: Mutex::new(None),
            pause_until: Mutex::new(None),
        })
    }

    /// The HTTP client, built on first use (with OAuth the base URL may come from the token's
    /// `api_domain`).
    async fn http(&self) -> Result<&HttpClient> {
        self.http
            .get_or_try_init(|| async {
                let (auth, base) = match (&self.config.auth, &self.oauth) {
                    (AuthConfig::ApiToken { token }, _) => (
                        Auth::Header {
                            name: "x-api-token".into(),
                            value: token.clone(),
                        },
                        self.config.base_url.clone(),
                    ),
                    (AuthConfig::Oauth {}, Some(tm)) => {
                        let base = match &self.config.base_url {
                            Some(b) => Some(b.clone()),
                            None => tm.token().await?.extra_str("api_domain").map(str::to_owned),
                        };
                        (Auth::OAuth2(tm.clone()), base)
                    }
                    (AuthConfig::Oauth {}, None) => {
                        return Err(Error::config("oauth without a token manager"));
                    }
                };
                HttpClient::builder(NAME)
                    .base_url(
                        base.unwrap_or_else(|| DEFAULT_BASE_URL.to_owned())
                            .trim_end_matches('/')
                            .to_owned(),
                    )
                    .auth(auth)
                    .build()
            })
            .await
    }

    /// Sends `req` within the burst limit, pausing while Pipedrive says no requests remain.
    async fn send(&self, req: ApiRequest) -> Result<ApiResponse> {
        let pause = *lock(&self.pause_until);
        if let Some(until) = pause {
            let now = Instant::now();
            if until > now {
                tokio::time::sleep(until - now).await;
            }
        }
        self.burst.acquire().await;
        let http = self.http().await?;
        let resp = http.send(req).await;
        if let Ok(r) = &resp {
            self.note_rate_headers(r);
        }
        resp
    }

    /// Reads `x-ratelimit-remaining` / `x-ratelimit-reset` (often absent: then nothing).
    fn note_rate_headers(&self, r: &ApiResponse) {
        let remaining = r
            .header("x-ratelimit-remaining")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let reset = r
            .header("x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut pause = lock(&self.pause_until);
        *pause = match (remaining, reset) {
            (Some(0), Some(secs)) => {
                tracing::info!(
                    connector = NAME,
                    reset_secs = secs,
                    "Pipedrive burst budget used up; pausing"
                );
                Some(Instant::now() + Duration::from_secs(secs.min(60)))
            }
            _ => None,
        };
    }

    // --- fields ---

    /// The field list of `entity` (cached; `refresh` re-reads it).
    pub(crate) async fn fields(&self, entity: FieldEntity, refresh: bool) -> Result<Vec<Field>> {
        if !refresh && let Some(f) = lock(&self.fields).get(&entity) {
            return Ok(f.clone());
        }
        let mut out = Vec::new();
        let mut start = 0u64;
        loop {
            let resp = self
                .send(
                    ApiRequest::get(entity.path())
                        .query("start", start.to_string())
                        .query("limit", "500")
                        .operation("fields"),
                )
                .await?;
            let body = resp.json_value()?;
            for f in body
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(key), Some(name)) = (
                    f.get("key").and_then(Value::as_str),
                    f.get("name").and_then(Value::as_str),
                ) else {
                    continue;
                };
                out.push(Field {
                    key: key.to_owned(),
                    name: name.to_owned(),
                    field_type: f
                        .get("field_type")
                        .and_then(Value::as_str)
                        .unwrap_or("varchar")
                        .to_owned(),
                    custom: f.get("edit_flag").and_then(Value::as_bool).unwrap_or(false)
                        || is_field_key(key),
                    options: f
                        .get("options")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|o| {
                            Some((o.get("id")?.clone(), o.get("label")?.as_str()?.to_owned()))
                        })
                        .collect(),
                });
            }
            let pagination = body.pointer("/additional_data/pagination");
            let more = pagination
                .and_then(|p| p.get("more_items_in_collection"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match pagination
                .and_then(|p| p.get("next_start"))
                .and_then(Value::as_u64)
            {
                Some(next) if more && next > start => start = next,
                _ => break,
            }
        }
        lock(&self.fields).insert(entity, out.clone());
        Ok(out)
    }

    /// Resolves a field named by key or label (case-insensitive) among the custom and standard
    /// fields of `entity`; re-reads the list once before giving up.
    pub(crate) async fn resolve_field(&self, entity: FieldEntity, name: &str) -> Result<Field> {
        for refresh in [false, true] {
            let fields = self.fields(entity, refresh).await?;
            if let Some(f) = fields.iter().find(|f| f.key == name) {
                return Ok(f.clone());
            }
            let by_label: Vec<&Field> = fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(name.trim()))
                .collect();
            match by_label.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                many => {
                    return Err(Error::config(format!(
                        "{NAME}: {} fields named {name:?}: {} — use the key instead",
                        many.len(),
                        many.iter()
                            .map(|f| f.key.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        let fields = self.fields(entity, false).await?;
        let custom: Vec<String> = fields
            .iter()
            .filter(|f| f.custom)
            .map(|f| format!("{:?}", f.name))
            .collect();
        Err(Error::config(format!(
            "{NAME}: no {} field {name:?} in this Pipedrive account; custom fields: {} (create it in Settings > Data fields, or fix [push.fields])",
            entity.noun(),
            if custom.is_empty() {
                "none".to_owned()
            } else {
                custom.join(", ")
            }
        )))
    }

    /// The referral-code field key resolved from its label, once resolved.
    pub(crate) fn resolved_referral_code_key(&self) -> Option<String> {
        lock(&self.referral_code_key).clone()
    }

    /// Resolves `referral_code_field` when it is a label (no call when it is a key).
    pub(crate) async fn resolve_referral_code_key(&self) -> Result<Option<String>> {
        let Some(name) = self.config.referral_code_field.as_deref() else {
            return Ok(None);
        };
        if is_field_key(name) {
            return Ok(Some(name.to_owned()));
        }
        if let Some(k) = self.resolved_referral_code_key() {
            return Ok(Some(k));
        }
        let f = self.resolve_field(FieldEntity::Deal, name).await?;
        *lock(&self.referral_code_key) = Some(f.key.clone());
        Ok(Some(f.key))
    }

    // --- persons ---

    /// Finds a person by exact email (case-insensitive); cached, and serialised under
    /// Pipedrive's search limit.
    pub(crate) async fn find_person(&self, email: &str) -> Result<Option<u64>> {
        let key = email.trim().to_lowercase();
        let ttl = Duration::from_secs(self.config.search_cache_secs);
        if let Some((at, id)) = lock(&self.search_cache).get(&key).copied()
            && at.elapsed() < ttl
        {
            return Ok(Some(id));
        }
        self.search_limiter.acquire().await;
        let resp = self
            .send(
                ApiRequest::get("/api/v2/persons/search")
                    .query("term", email.trim())
                    .query("fields", "email")
                    .query("exact_match", "true")
                    .query("limit", "10")
                    .operation("search_persons"),
            )
            .await?;
        let d = data(&resp)?;
        let id = d
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("item"))
            .filter_map(|item| id_of(item, "id"))
            .min();
        if let Some(id) = id {
            self.remember_person(&key, id);
        }
        Ok(id)
    }

    fn remember_person(&self, email: &str, id: u64) {
        lock(&self.search_cache).insert(email.trim().to_lowercase(), (Instant::now(), id));
    }

    /// Creates a person; the new id is cached for its email (Pipedrive's search index lags).
    pub(crate) async fn create_person(&self, email: &str, body: Value) -> Result<u64> {
        let resp = self
            .send(ApiRequest::post_json("/api/v2/persons", body).operation("create_person"))
            .await?;
        let id = id_of(&data(&resp)?, "id").ok_or_else(|| unexpected("a person without id"))?;
        self.remember_person(email, id);
        Ok(id)
    }

    /// Updates a person (PATCH: only the given fields change).
    pub(crate) async fn update_person(&self, id: u64, body: Value) -> Result<()> {
        self.send(
            ApiRequest::patch_json(format!("/api/v2/persons/{id}"), body)
                .operation("update_person"),
        )
        .await?;
        Ok(())
    }

    // --- leads and deals ---

    /// Creates a lead (v1) and returns its id (a UUID).
    pub(crate) async fn create_lead(&self, body: Value) -> Result<String> {
        let resp = self
            .send(ApiRequest::post_json("/v1/leads", body).operation("create_lead"))
            .await?;
        data(&resp)?
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| unexpected("a lead without id"))
    }

    /// Updates a lead (v1 PATCH).
    pub(crate) async fn update_lead(&self, id: &str, body: Value) -> Result<()> {
        self.send(ApiRequest::patch_json(format!("/v1/leads/{id}"), body).operation("update_lead"))
            .await?;
        Ok(())
    }

    /// The person's newest non-archived lead, if any.
    pub(crate) async fn lead_of_person(&self, person: u64) -> Result<Option<String>> {
        let resp = self
            .send(
                ApiRequest::get("/v1/leads")
                    .query("person_id", person.to_string())
                    .query("archived_status", "not_archived")
                    .query("limit", "100")
                    .operation("list_leads"),
            )
            .await?;
        Ok(data(&resp)?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.get("id").and_then(Value::as_str))
            .next_back()
            .map(str::to_owned))
    }

    /// Creates a deal (v2) and returns its id.
    pub(crate) async fn create_deal(&self, body: Value) -> Result<u64> {
        let resp = self
            .send(ApiRequest::post_json("/api/v2/deals", body).operation("create_deal"))
            .await?;
        id_of(&data(&resp)?, "id").ok_or_else(|| unexpected("a deal without id"))
    }

    /// Updates a deal (v2 PATCH).
    pub(crate) async fn update_deal(&self, id: u64, body: Value) -> Result<()> {
        self.send(
            ApiRequest::patch_json(format!("/api/v2/deals/{id}"), body).operation("update_deal"),
        )
        .await?;
        Ok(())
    }

    /// The person's newest open deal, if any.
    pub(crate) async fn open_deal_of_person(&self, person: u64) -> Result<Option<u64>> {
        let resp = self
            .send(
                ApiRequest::get("/api/v2/deals")
                    .query("person_id", person.to_string())
                    .query("status", "open")
                    .query("limit", "100")
                    .operation("list_deals"),
            )
            .await?;
        Ok(data(&resp)?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| id_of(d, "id"))
            .max())
    }

    /// A deal by id (v2 shape), or `None` when it does not exist.
    pub(crate) async fn get_deal(&self, id: &str) -> Result<Option<Value>> {
        match self
            .send(ApiRequest::get(format!("/api/v2/deals/{id}")).operation("get_deal"))
            .await
        {
            Ok(resp) => Ok(Some(data(&resp)?)),
            Err(e) if e.kind() == &ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A lead by id (v1 shape), or `None` when it does not exist (or was converted).
    pub(crate) async fn get_lead(&self, id: &str) -> Result<Option<Value>> {
        match self
            .send(ApiRequest::get(format!("/v1/leads/{id}")).operation("get_lead"))
            .await
        {
            Ok(resp) => Ok(Some(data(&resp)?)),
            Err(e) if e.kind() == &ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deals updated at or after `since`, every page (v2 cursor paging).
    pub(crate) async fn deals_updated_since(&self, since: DateTime<Utc>) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut req = ApiRequest::get("/api/v2/deals")
                .query(
                    "updated_since",
                    since.to_rfc3339_opts(SecondsFormat::Secs, true),
                )
                .query("limit", "500")
                .operation("reconcile");
            if let Some(c) = &cursor {
                req = req.query("cursor", c.clone());
            }
            let body = self.send(req).await?.json_value()?;
            out.extend(
                body.get("data")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            match body
                .pointer("/additional_data/next_cursor")
                .and_then(Value::as_str)
            {
                Some(c) if !c.is_empty() && cursor.as_deref() != Some(c) => {
                    cursor = Some(c.to_owned())
                }
                _ => break,
            }
        }
        Ok(out)
    }

    // --- webhooks ---

    /// Every webhook of the account (v1).
    pub(crate) async fn webhooks(&self) -> Result<Vec<Value>> {
        let resp = self
            .send(ApiRequest::get("/v1/webhooks").operation("list_webhooks"))
            .await?;
        Ok(data(&resp)?.as_array().cloned().unwrap_or_default())
    }

    /// Creates a webhooks-v2 subscription for `object` towards `url` with the Basic credentials.
    pub(crate) async fn create_webhook(&self, url: &str, object: &str) -> Result<String> {
        let mut body = json!({
            "subscription_url": url,
            "event_action": "*",
            "event_object": object,
            "version": "2.0",
            "name": format!("refsync {object}"),
            "http_auth_user": self.config.webhook_user,
            "http_auth_password": self.config.webhook_password.expose(),
        });
        if let Some(user) = self.config.webhook_user_id {
            body["user_id"] = json!(user);
        }
        let resp = self
            .send(
                ApiRequest::post_json("/v1/webhooks", body)
                    .operation("create_webhook")
                    .idempotent(false),
            )
            .await?;
        let d = data(&resp)?;
        Ok(match d.get("id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => return Err(unexpected("a webhook without id")),
        })
    }

    /// Deletes webhook `id`.
    pub(crate) async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.send(ApiRequest::delete(format!("/v1/webhooks/{id}")).operation("delete_webhook"))
            .await?;
        Ok(())
    }

    /// `GET /v1/users/me`: the token works; returns the user's company id.
    pub(crate) async fn me(&self) -> Result<Option<String>> {
        let resp = self
            .send(ApiRequest::get("/v1/users/me").operation("health_check"))
            .await?;
        Ok(data(&resp)?.get("company_id").map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
    }

    /// The Basic user the webhooks are created with.
    pub(crate) fn webhook_user(&self) -> &str {
        &self.config.webhook_user
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
