//! Calls to the Salesforce REST API (`{instance_url}/services/data/v{api_version}/`):
//! sessions from the JWT bearer flow (made here, single-flight, a new assertion when the session
//! expires) or the web server flow (refsync-http's token manager), `INVALID_SESSION_ID` answered
//! with one new session, `Sforce-Limit-Info` read on every answer so refsync stops before the
//! org's daily allocation is used up.

use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use refsync_core::{Error, ErrorKind, Result, Secret};
use refsync_http::oauth::TokenManager;
use refsync_http::{ApiRequest, ApiResponse, Auth, HttpClient};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::NAME;
use crate::config::{AuthConfig, Config};

/// How long to wait when the daily allocation is (nearly) used up.
const ALLOCATION_WAIT: Duration = Duration::from_secs(3600);

/// A session: the access token and the org's instance URL.
#[derive(Clone)]
struct Session {
    token: Secret,
    instance_url: String,
}

/// The JWT bearer flow: assertions signed with the connected app's key.
struct Jwt {
    client_id: String,
    username: String,
    login_url: String,
    /// The PEM key file, read on first use (so offline tools like `refsync inspect` need no key).
    key_file: String,
    key: OnceCell<EncodingKey>,
    http: HttpClient,
    session: tokio::sync::Mutex<Option<Session>>,
}

impl Jwt {
    /// The current session, or a new one (one caller makes it; the others wait for it).
    async fn session(&self, rejected: Option<&Secret>) -> Result<Session> {
        let mut current = self.session.lock().await;
        if let Some(s) = current.as_ref()
            && rejected.is_none_or(|r| r.expose() != s.token.expose())
        {
            return Ok(s.clone());
        }
        let claims = json!({
            "iss": self.client_id,
            "sub": self.username,
            "aud": self.login_url,
            // Salesforce accepts an expiry at most 3 minutes ahead.
            "exp": Utc::now().timestamp() + 170,
        });
        let key = self
            .key
            .get_or_try_init(|| async {
                let pem = std::fs::read(&self.key_file).map_err(|e| {
                    Error::config(format!(
                        "{NAME}: cannot read auth.private_key_file {:?}: {e}",
                        self.key_file
                    ))
                })?;
                EncodingKey::from_rsa_pem(&pem).map_err(|e| {
                    Error::config(format!(
                        "{NAME}: auth.private_key_file {:?} is not an RSA private key in PEM: {e}",
                        self.key_file
                    ))
                })
            })
            .await?;
        let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
            .map_err(|e| Error::config(format!("{NAME}: could not sign the JWT assertion: {e}")))?;
        let resp = self
            .http
            .send(
                ApiRequest::post_form(
                    "/services/oauth2/token",
                    [
                        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        ("assertion", assertion.as_str()),
                    ],
                )
                .operation("jwt_bearer"),
            )
            .await
            .map_err(|e| {
                if matches!(e.kind(), ErrorKind::Validation | ErrorKind::Unauthorized) {
                    Error::unauthorized(format!(
                        "{NAME}: the JWT bearer flow was refused ({}); check the connected app's certificate, that {} is pre-authorised, and login_url",
                        e.message(),
                        self.username
                    ))
                } else {
                    e
                }
            })?;
        let body = resp.json_value()?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::unexpected(format!("{NAME}: the token answer has no access_token"))
            })?;
        let instance_url = body
            .get("instance_url")
            .and_then(Value::as_str)
            .unwrap_or(&self.login_url)
            .trim_end_matches('/')
            .to_owned();
        let session = Session {
            token: Secret::new(token.to_owned()),
            instance_url,
        };
        *current = Some(session.clone());
        Ok(session)
    }
}

/// What a write of one record gave, in input order.
#[derive(Debug, Clone)]
pub(crate) enum Written {
    /// Saved: the id, and whether it was created.
    Ok { id: String, created: bool },
    /// Refused: the error code and message.
    Refused { code: String, message: String },
}

/// The Salesforce API client.
pub(crate) struct Client {
    config: Config,
    jwt: Option<Jwt>,
    oauth: Option<TokenManager>,
    /// Web server flow: the HTTP client on the instance URL.
    oauth_http: OnceCell<HttpClient>,
    /// JWT flow: HTTP clients per instance URL (normally one).
    jwt_http: Mutex<Option<(String, HttpClient)>>,
    /// `(used, allocation)` from the last `Sforce-Limit-Info`.
    usage: Mutex<Option<(u64, u64)>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("api_version", &self.config.api_version)
            .field("jwt", &self.jwt.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `api-usage=12/15000` from `Sforce-Limit-Info`.
pub(crate) fn api_usage(header: &str) -> Option<(u64, u64)> {
    let usage = header
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("api-usage="))?;
    let (used, max) = usage.split_once('/')?;
    Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
}

impl Client {
    /// A client per `config`; `oauth` is the instance's token manager with `auth.type = "oauth"`.
    pub(crate) fn new(config: &Config, oauth: Option<TokenManager>) -> Result<Client> {
        let (jwt, oauth) = match (&config.auth, oauth) {
            (AuthConfig::Oauth {}, Some(tm)) => (None, Some(tm)),
            (AuthConfig::Oauth {}, None) => {
                return Err(Error::config(format!(
                    "{NAME}: auth type \"oauth\" needs an [instances.oauth] table (client_id, client_secret, auth_url = \"https://login.salesforce.com/services/oauth2/authorize\", token_url = \"https://login.salesforce.com/services/oauth2/token\", client_auth = \"request_body\", scopes = [\"api\", \"refresh_token\"]) and `refsync oauth authorize <instance>`; or auth type \"jwt_bearer\""
                )));
            }
            (
                AuthConfig::JwtBearer {
                    client_id,
                    username,
                    private_key_file,
                    login_url,
                },
                _,
            ) => {
                let login = login_url.trim_end_matches('/').to_owned();
                let http = HttpClient::builder(NAME).base_url(login.clone()).build()?;
                (
                    Some(Jwt {
                        client_id: client_id.clone(),
                        username: username.clone(),
                        login_url: login,
                        key_file: private_key_file.clone(),
                        key: OnceCell::new(),
                        http,
                        session: tokio::sync::Mutex::new(None),
                    }),
                    None,
                )
            }
        };
        Ok(Client {
            config: config.clone(),
            jwt,
            oauth,
            oauth_http: OnceCell::new(),
            jwt_http: Mutex::new(None),
            usage: Mutex::new(None),
        })
    }

    fn data_path(&self, rest: &str) -> String {
        format!("/services/data/v{}/{rest}", self.config.api_version.trim())
    }

    fn http_for(&self, instance_url: &str) -> Result<HttpClient> {
        let mut slot = lock(&self.jwt_http);
        if let Some((url, http)) = slot.as_ref()
            && url == instance_url
        {
            return Ok(http.clone());
        }
        let http = HttpClient::builder(NAME)
            .base_url(instance_url.to_owned())
            .build()?;
        *slot = Some((instance_url.to_owned(), http.clone()));
        Ok(http)
    }

    async fn oauth_http(&self, tm: &TokenManager) -> Result<&HttpClient> {
        self.oauth_http
            .get_or_try_init(|| async {
                let base = match &self.config.instance_url {
                    Some(u) => u.clone(),
                    None => tm
                        .token()
                        .await?
                        .extra_str("instance_url")
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            Error::config(format!(
                                "{NAME}: the stored token has no instance_url; set instance_url"
                            ))
                        })?,
                };
                HttpClient::builder(NAME)
                    .base_url(base.trim_end_matches('/').to_owned())
                    .auth(Auth::OAuth2(tm.clone()))
                    .build()
            })
            .await
    }

    /// Refuses to call when the org's allocation is within the reserve.
    fn check_allocation(&self) -> Result<()> {
        let Some((used, max)) = *lock(&self.usage) else {
            return Ok(());
        };
        let reserve = max * u64::from(self.config.api_reserve_percent) / 100;
        if max > 0 && used + reserve >= max {
            return Err(Error::new(
                ErrorKind::RateLimited {
                    retry_after: Some(ALLOCATION_WAIT),
                },
                format!(
                    "{NAME}: the org has used {used} of its {max} daily API requests; refsync leaves the last {}% to other integrations and waits an hour",
                    self.config.api_reserve_percent
                ),
            )
            .with_connector(NAME));
        }
        Ok(())
    }

    fn note_usage(&self, resp: &ApiResponse) {
        if let Some(u) = resp.header("sforce-limit-info").and_then(api_usage) {
            *lock(&self.usage) = Some(u);
        }
    }

    /// Sends `req` with the session; `INVALID_SESSION_ID` (401) makes one new session.
    pub(crate) async fn send(&self, mut req: ApiRequest) -> Result<ApiResponse> {
        self.check_allocation()?;
        if self.config.duplicate_rule_allow_save {
            req = req.header(
                "Sforce-Duplicate-Rule-Header",
                "allowSave=true, includeRecordDetails=true, runAsCurrentUser=true",
            );
        }
        let result = match (&self.jwt, &self.oauth) {
            (Some(jwt), _) => {
                let mut rejected: Option<Secret> = None;
                loop {
                    let session = jwt.session(rejected.as_ref()).await?;
                    let base = self
                        .config
                        .instance_url
                        .clone()
                        .unwrap_or_else(|| session.instance_url.clone());
                    let http = self.http_for(base.trim_end_matches('/'))?;
                    let attempt = req.clone().secret_header(
                        "Authorization",
                        Secret::new(format!("Bearer {}", session.token.expose())),
                    );
                    match http.send(attempt).await {
                        Err(e)
                            if matches!(e.kind(), ErrorKind::Unauthorized)
                                && rejected.is_none() =>
                        {
                            tracing::info!(
                                connector = NAME,
                                "session expired (INVALID_SESSION_ID): making a new one"
                            );
                            rejected = Some(session.token);
                        }
                        other => break other,
                    }
                }
            }
            (None, Some(tm)) => self.oauth_http(tm).await?.send(req).await,
            (None, None) => Err(Error::config("no Salesforce credentials")),
        };
        match result {
            Ok(resp) => {
                self.note_usage(&resp);
                Ok(resp)
            }
            Err(e) if e.message().contains("REQUEST_LIMIT_EXCEEDED") => Err(Error::new(
                ErrorKind::RateLimited {
                    retry_after: Some(ALLOCATION_WAIT),
                },
                format!(
                    "{NAME}: the org's daily API allocation is used up (REQUEST_LIMIT_EXCEEDED); retrying in an hour"
                ),
            )
            .with_connector(NAME)),
            Err(e) => Err(e),
        }
    }

    fn written(rows: &[Value], n: usize) -> Vec<Written> {
        (0..n)
            .map(|i| match rows.get(i) {
                Some(r) if r.get("success").and_then(Value::as_bool) == Some(true) => {
                    match r.get("id").and_then(Value::as_str) {
                        Some(id) => Written::Ok {
                            id: id.to_owned(),
                            created: r.get("created").and_then(Value::as_bool).unwrap_or(true),
                        },
                        None => Written::Refused {
                            code: "NO_ID".into(),
                            message: "Salesforce's answer has no id".into(),
                        },
                    }
                }
                Some(r) => {
                    let e = r
                        .get("errors")
                        .and_then(Value::as_array)
                        .and_then(|a| a.first())
                        .cloned()
                        .unwrap_or(Value::Null);
                    Written::Refused {
                        code: e
                            .get("statusCode")
                            .or_else(|| e.get("errorCode"))
                            .and_then(Value::as_str)
                            .unwrap_or("ERROR")
                            .to_owned(),
                        message: e
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    }
                }
                None => Written::Refused {
                    code: "NO_RESULT".into(),
                    message: "Salesforce's answer has no row for this record".into(),
                },
            })
            .collect()
    }

    /// sObject Collections upsert by `external_id` (≤ 200 records; each carries the field).
    pub(crate) async fn upsert(
        &self,
        sobject: &str,
        external_id: &str,
        records: &[Map<String, Value>],
    ) -> Result<Vec<Written>> {
        let body = json!({
            "allOrNone": false,
            "records": records.iter().map(|r| with_type(sobject, r)).collect::<Vec<_>>(),
        });
        let resp = self
            .send(
                ApiRequest::patch_json(
                    self.data_path(&format!("composite/sobjects/{sobject}/{external_id}")),
                    body,
                )
                .operation("upsert"),
            )
            .await?;
        let rows = resp.json_value()?;
        Ok(Self::written(
            rows.as_array().map(Vec::as_slice).unwrap_or(&[]),
            records.len(),
        ))
    }

    /// sObject Collections create (≤ 200 records).
    pub(crate) async fn create(
        &self,
        sobject: &str,
        records: &[Map<String, Value>],
    ) -> Result<Vec<Written>> {
        let body = json!({
            "allOrNone": false,
            "records": records.iter().map(|r| with_type(sobject, r)).collect::<Vec<_>>(),
        });
        let resp = self
            .send(
                ApiRequest::post_json(self.data_path("composite/sobjects"), body)
                    .operation("create"),
            )
            .await?;
        let rows = resp.json_value()?;
        Ok(Self::written(
            rows.as_array().map(Vec::as_slice).unwrap_or(&[]),
            records.len(),
        ))
    }

    /// A SOQL query's records (first page: refsync's queries are bounded by their `IN` lists).
    pub(crate) async fn query(&self, soql: &str) -> Result<Vec<Value>> {
        let resp = self
            .send(
                ApiRequest::get(self.data_path("query"))
                    .query("q", soql)
                    .operation("query"),
            )
            .await?;
        let body = resp.json_value()?;
        Ok(body
            .get("records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// `GET /limits` (credentials, instance, API access).
    pub(crate) async fn ping(&self) -> Result<()> {
        self.send(ApiRequest::get(self.data_path("limits")).operation("health_check"))
            .await?;
        Ok(())
    }
}

fn with_type(sobject: &str, record: &Map<String, Value>) -> Value {
    let mut r = record.clone();
    r.insert("attributes".into(), json!({ "type": sobject }));
    Value::Object(r)
}

/// A SOQL string literal: quotes and backslashes escaped.
pub(crate) fn soql_literal(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if matches!(c, '\'' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_info_and_soql_literals() {
        assert_eq!(api_usage("api-usage=18/5000"), Some((18, 5000)));
        assert_eq!(
            api_usage("api-bursts=1/10, api-usage=7/15000"),
            Some((7, 15000))
        );
        assert_eq!(api_usage("per-app-api-usage=2/250(appName=x)"), None);
        assert_eq!(soql_literal("o'neil\\x"), "'o\\'neil\\\\x'");
    }
}
