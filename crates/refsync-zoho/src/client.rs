//! Calls to the Zoho CRM API v8 through refsync-http's client: `Authorization:
//! Zoho-oauthtoken`, the API domain of the data centre (from the token response), at most
//! `max_concurrency` calls in flight (Zoho's sub-concurrency limit is 10), retries with backoff,
//! and a clear rate-limit error when the daily credits are used up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use refsync_core::{Error, ErrorKind, Result};
use refsync_http::oauth::{
    ClientAuth, MemoryTokenStore, OAuthConfig, StoredToken, TokenManager, token_http_client,
};
use refsync_http::{ApiRequest, ApiResponse, Auth, HttpClient};
use serde_json::{Map, Value, json};
use tokio::sync::{OnceCell, Semaphore};

use crate::NAME;
use crate::config::{AuthConfig, Config, DEFAULT_API_DOMAIN};

/// How long to wait when the daily credits are used up (they come back on a rolling 24 h).
const CREDITS_WAIT: Duration = Duration::from_secs(3600);

/// A field of a module, from `/crm/v8/settings/fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) api_name: String,
    pub(crate) label: String,
}

/// The outcome of one record of an insert or upsert, in input order.
#[derive(Debug, Clone)]
pub(crate) enum Written {
    /// Created (`true`) or updated (`false`), with the record id.
    Ok { id: String, created: bool },
    /// Refused, with Zoho's code and message.
    Refused(String),
}

/// The Zoho API client.
pub(crate) struct Client {
    config: Config,
    tokens: TokenManager,
    http: OnceCell<HttpClient>,
    slots: Arc<Semaphore>,
    fields: Mutex<HashMap<String, Vec<Field>>>,
    /// layout id → stage (actual and display value) → forecast type.
    stages: Mutex<HashMap<String, HashMap<String, String>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("api_domain", &self.config.api_domain)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A string id from a JSON value (Zoho sends ids as strings; numbers are accepted).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `data` array of an answer (`204 No Content` is an empty list).
fn data(resp: &ApiResponse) -> Result<Vec<Value>> {
    if resp.status == 204 || resp.body.is_empty() {
        return Ok(Vec::new());
    }
    let body = resp.json_value()?;
    Ok(body
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

impl Client {
    /// A client per `config`; `oauth` is the instance's token manager with `auth.type = "oauth"`.
    pub(crate) fn new(config: &Config, oauth: Option<TokenManager>) -> Result<Client> {
        let tokens = match (&config.auth, oauth) {
            (AuthConfig::Oauth {}, Some(tm)) => tm,
            (AuthConfig::Oauth {}, None) => {
                return Err(Error::config(format!(
                    "{NAME}: auth type \"oauth\" needs an [instances.oauth] table (client_id, client_secret, auth_url = \"https://accounts.zoho.com/oauth/v2/auth\", token_url = \"https://accounts.zoho.com/oauth/v2/token\" — the accounts server of your data centre —, client_auth = \"request_body\", authorize_params = {{ access_type = \"offline\", prompt = \"consent\" }}, scopes) and `refsync oauth authorize <instance>`; or use auth type \"self_client\""
                )));
            }
            (
                AuthConfig::SelfClient {
                    client_id,
                    client_secret,
                    refresh_token,
                    accounts_url,
                },
                _,
            ) => {
                let base = accounts_url.trim_end_matches('/');
                let oauth = OAuthConfig {
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    auth_url: format!("{base}/oauth/v2/auth"),
                    token_url: format!("{base}/oauth/v2/token"),
                    redirect_url: None,
                    scopes: Vec::new(),
                    client_auth: ClientAuth::RequestBody,
                    authorize_params: Default::default(),
                };
                // No access token yet: the first call refreshes, and the token is then reused
                // for its hour (a refresh token mints at most 10 per 10 minutes).
                let seed = StoredToken {
                    access_token: String::new().into(),
                    refresh_token: Some(refresh_token.clone()),
                    expires_at: Utc.timestamp_opt(0, 0).single(),
                    extra: Map::new(),
                };
                let key = format!("{NAME}:self_client:{client_id}");
                TokenManager::new(
                    oauth,
                    Arc::new(MemoryTokenStore::with_token(key.clone(), seed)),
                    key,
                    token_http_client(Duration::from_secs(30))?,
                )?
            }
        };
        Ok(Client {
            config: config.clone(),
            tokens,
            http: OnceCell::new(),
            slots: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
            fields: Mutex::new(HashMap::new()),
            stages: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTP client, built on first use: the API domain comes from the token response.
    async fn http(&self) -> Result<&HttpClient> {
        self.http
            .get_or_try_init(|| async {
                let domain = match &self.config.api_domain {
                    Some(d) => d.clone(),
                    None => self
                        .tokens
                        .token()
                        .await?
                        .extra_str("api_domain")
                        .unwrap_or(DEFAULT_API_DOMAIN)
                        .to_owned(),
                };
                HttpClient::builder(NAME)
                    .base_url(domain.trim_end_matches('/').to_owned())
                    .auth(Auth::OAuth2(self.tokens.clone()))
                    .token_scheme("Zoho-oauthtoken")
                    .build()
            })
            .await
    }

    /// Sends `req` within the concurrency limit; used-up credits become a rate limit of an hour.
    pub(crate) async fn send(&self, req: ApiRequest) -> Result<ApiResponse> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::unexpected("the concurrency limiter was closed"))?;
        let http = self.http().await?;
        match http.send(req).await {
            Ok(resp) => {
                if let Some(left) = resp.header("x-api-credits-remaining") {
                    tracing::warn!(
                        connector = NAME,
                        credits_remaining = left,
                        "more than half of Zoho's daily API credits are used"
                    );
                }
                Ok(resp)
            }
            Err(e) if matches!(e.kind(), ErrorKind::RateLimited { .. }) => {
                let m = e.message().to_ascii_lowercase();
                if m.contains("limit_reached") || m.contains("credit") {
                    Err(Error::new(
                        ErrorKind::RateLimited {
                            retry_after: Some(CREDITS_WAIT),
                        },
                        format!(
                            "{NAME}: Zoho's daily API credits are used up (they return on a rolling 24 hours; buy more or lower the load); retrying in an hour: {}",
                            e.message()
                        ),
                    )
                    .with_connector(NAME))
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    // --- fields ---

    /// The fields of `module` (cached; `refresh` re-reads them).
    pub(crate) async fn fields(&self, module: &str, refresh: bool) -> Result<Vec<Field>> {
        if !refresh && let Some(f) = lock(&self.fields).get(module) {
            return Ok(f.clone());
        }
        let resp = self
            .send(
                ApiRequest::get("/crm/v8/settings/fields")
                    .query("module", module)
                    .operation("fields"),
            )
            .await?;
        let body = resp.json_value()?;
        let list: Vec<Field> = body
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some(Field {
                    api_name: f.get("api_name")?.as_str()?.to_owned(),
                    label: f
                        .get("field_label")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                })
            })
            .collect();
        lock(&self.fields).insert(module.to_owned(), list.clone());
        Ok(list)
    }

    /// The API name of the field `name` (an API name or a label, case-insensitive) of `module`;
    /// re-reads the list once before giving up with the module's fields in the message.
    pub(crate) async fn resolve_field(&self, module: &str, name: &str) -> Result<String> {
        let want = name.trim();
        for refresh in [false, true] {
            let fields = self.fields(module, refresh).await?;
            if let Some(f) = fields.iter().find(|f| f.api_name == want) {
                return Ok(f.api_name.clone());
            }
            let by_label: Vec<&Field> = fields
                .iter()
                .filter(|f| {
                    f.label.eq_ignore_ascii_case(want) || f.api_name.eq_ignore_ascii_case(want)
                })
                .collect();
            match by_label.as_slice() {
                [one] => return Ok(one.api_name.clone()),
                [] => {}
                many => {
                    return Err(Error::config(format!(
                        "{NAME}: {} fields of {module} match {want:?}: {} — use the API name",
                        many.len(),
                        many.iter()
                            .map(|f| f.api_name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        let fields = self.fields(module, false).await?;
        let mut names: Vec<&str> = fields.iter().map(|f| f.api_name.as_str()).collect();
        names.sort_unstable();
        Err(Error::config(format!(
            "{NAME}: {module} has no field {want:?} (API name or label); its fields: {} (Setup > Developer Hub > APIs > API Names)",
            names.join(", ")
        )))
    }

    // --- records ---

    /// `POST /crm/v8/{module}/upsert` (or a plain insert without `duplicate_check`): one
    /// outcome per record, in order.
    pub(crate) async fn write(
        &self,
        module: &str,
        records: &[Map<String, Value>],
        duplicate_check: Option<&str>,
    ) -> Result<Vec<Written>> {
        let mut body = json!({ "data": records });
        let path = match duplicate_check {
            Some(field) => {
                body["duplicate_check_fields"] = json!([field]);
                format!("/crm/v8/{module}/upsert")
            }
            None => format!("/crm/v8/{module}"),
        };
        if !self.config.trigger_workflows {
            body["trigger"] = json!([]);
        }
        let resp = self
            .send(ApiRequest::post_json(path, body).operation("write_records"))
            .await?;
        let rows = data(&resp)?;
        Ok(records
            .iter()
            .enumerate()
            .map(|(i, _)| match rows.get(i) {
                Some(r) if r.get("status").and_then(Value::as_str) == Some("success") => {
                    match r.pointer("/details/id").and_then(text) {
                        Some(id) => Written::Ok {
                            id,
                            created: r.get("action").and_then(Value::as_str) != Some("update"),
                        },
                        None => Written::Refused("Zoho's answer has no record id".into()),
                    }
                }
                Some(r) => Written::Refused(format!(
                    "{}: {}{}",
                    r.get("code").and_then(Value::as_str).unwrap_or("ERROR"),
                    r.get("message").and_then(Value::as_str).unwrap_or(""),
                    r.pointer("/details/api_name")
                        .and_then(Value::as_str)
                        .map(|f| format!(" (field {f})"))
                        .unwrap_or_default()
                )),
                None => Written::Refused("Zoho's answer has no row for this record".into()),
            })
            .collect())
    }

    /// Records of `module` whose `field` equals one of `values` (at most 10 per call: Zoho's
    /// criteria limit). Zoho's `equals` on text matches as "contains", so the matches are
    /// checked exactly (case-insensitively) here.
    pub(crate) async fn search_equal(
        &self,
        module: &str,
        field: &str,
        values: &[String],
        converted: Option<&str>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for chunk in values.chunks(10) {
            let criteria = chunk
                .iter()
                .map(|v| format!("({field}:equals:{})", escape_criteria(v)))
                .collect::<Vec<_>>()
                .join("or");
            let mut req = ApiRequest::get(format!("/crm/v8/{module}/search"))
                .query("criteria", format!("({criteria})"))
                .operation("search");
            if let Some(c) = converted {
                req = req.query("converted", c);
            }
            let rows = data(&self.send(req).await?)?;
            out.extend(rows.into_iter().filter(|r| {
                r.get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|got| chunk.iter().any(|v| v.eq_ignore_ascii_case(got.trim())))
            }));
        }
        Ok(out)
    }

    /// `GET /crm/v8/{module}?ids=...&fields=...` in chunks of 100; converted leads included.
    pub(crate) async fn records(
        &self,
        module: &str,
        ids: &[String],
        fields: &[&str],
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(100) {
            let mut req = ApiRequest::get(format!("/crm/v8/{module}"))
                .query("ids", chunk.join(","))
                .query("fields", fields.join(","))
                .operation("get_records");
            if module == "Leads" {
                req = req.query("converted", "both");
            }
            out.extend(data(&self.send(req).await?)?);
        }
        Ok(out)
    }

    // --- pipelines ---

    /// The forecast type (`Open`, `Closed Won`, `Closed Lost`) of deal stage `stage` in layout
    /// `layout` (pipelines cached per layout; an unknown stage re-reads them once).
    pub(crate) async fn forecast_type(&self, layout: &str, stage: &str) -> Result<Option<String>> {
        for refresh in [false, true] {
            if !refresh && let Some(t) = lock(&self.stages).get(layout).and_then(|m| m.get(stage)) {
                return Ok(Some(t.clone()));
            }
            if refresh || !lock(&self.stages).contains_key(layout) {
                let map = self.read_pipelines(layout).await?;
                let found = map.get(stage).cloned();
                lock(&self.stages).insert(layout.to_owned(), map);
                if found.is_some() || refresh {
                    return Ok(found);
                }
            }
        }
        Ok(None)
    }

    async fn read_pipelines(&self, layout: &str) -> Result<HashMap<String, String>> {
        let resp = self
            .send(
                ApiRequest::get("/crm/v8/settings/pipeline")
                    .query("layout_id", layout)
                    .operation("pipelines"),
            )
            .await?;
        let body = resp.json_value()?;
        let mut map = HashMap::new();
        for p in body
            .get("pipeline")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for s in p
                .get("maps")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(kind) = s.get("forecast_type").and_then(Value::as_str) else {
                    continue;
                };
                // Records hold the actual value; the display value is accepted too.
                for key in ["actual_value", "display_value"] {
                    if let Some(v) = s.get(key).and_then(Value::as_str) {
                        map.entry(v.to_owned()).or_insert_with(|| kind.to_owned());
                    }
                }
            }
        }
        Ok(map)
    }

    // --- notification channels ---

    /// The channel `channel_id`, if Zoho has it: Zoho lists one entry per watched module, merged
    /// here into `{events (all), channel_expiry (the earliest), notify_url (when all agree)}`.
    pub(crate) async fn channel(&self, channel_id: &str) -> Result<Option<Value>> {
        let resp = self
            .send(
                ApiRequest::get("/crm/v8/actions/watch")
                    .query("channel_id", channel_id)
                    .operation("get_channel"),
            )
            .await?;
        if resp.status == 204 || resp.body.is_empty() {
            return Ok(None);
        }
        let body = resp.json_value()?;
        let entries: Vec<&Value> = body
            .get("watch")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|w| w.get("channel_id").and_then(text).as_deref() == Some(channel_id))
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let mut events: Vec<String> = entries
            .iter()
            .flat_map(|w| {
                w.get("events")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect();
        events.sort();
        events.dedup();
        let expiry = entries
            .iter()
            .filter_map(|w| w.get("channel_expiry").and_then(Value::as_str))
            .filter_map(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .min()
            .map(|d| d.to_rfc3339());
        let urls: Vec<&str> = entries
            .iter()
            .filter_map(|w| w.get("notify_url").and_then(Value::as_str))
            .collect();
        let url = urls
            .first()
            .filter(|first| urls.iter().all(|u| u == *first))
            .copied();
        Ok(Some(
            json!({"events": events, "channel_expiry": expiry, "notify_url": url}),
        ))
    }

    /// Creates (`replace = false`, POST) or replaces (PUT) the channel described by `watch`.
    /// A replace of a channel Zoho no longer has is `NotFound` (`NOT_SUBSCRIBED`).
    pub(crate) async fn put_channel(&self, watch: Value, replace: bool) -> Result<()> {
        let body = json!({ "watch": [watch] });
        let req = if replace {
            ApiRequest::put_json("/crm/v8/actions/watch", body)
        } else {
            ApiRequest::post_json("/crm/v8/actions/watch", body)
        };
        let resp = match self.send(req.operation("watch")).await {
            Err(e) if e.message().contains("NOT_SUBSCRIBED") => {
                return Err(Error::new(ErrorKind::NotFound, e.message().to_owned()));
            }
            other => other?,
        };
        // 202 answers carry per-channel errors.
        let body = resp.json_value().unwrap_or(Value::Null);
        for w in body
            .get("watch")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if w.get("status").and_then(Value::as_str) == Some("error") {
                let code = w.get("code").and_then(Value::as_str).unwrap_or("ERROR");
                let message = w.get("message").and_then(Value::as_str).unwrap_or("");
                let kind = if code == "NOT_SUBSCRIBED" {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Validation
                };
                return Err(Error::new(kind, format!("{NAME}: watch {code}: {message}")));
            }
        }
        Ok(())
    }

    /// One lead, for the health check (token, API domain and scope).
    pub(crate) async fn ping(&self) -> Result<()> {
        self.send(
            ApiRequest::get("/crm/v8/Leads")
                .query("fields", "Last_Name")
                .query("per_page", "1")
                .operation("health_check"),
        )
        .await?;
        Ok(())
    }
}

/// Escapes a criteria value as Zoho asks: `(`, `)`, `,` and `\` with a backslash.
pub(crate) fn escape_criteria(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '(' | ')' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criteria_values_are_escaped() {
        assert_eq!(escape_criteria("a(b),c\\d"), "a\\(b\\)\\,c\\\\d");
        assert_eq!(escape_criteria("ann@example.com"), "ann@example.com");
    }
}
