//! Calls to the WooCommerce REST API (`<store>/wp-json/wc/v3`) through refsync-http's client:
//! retries with backoff honouring `Retry-After`, a client-side rate limit, HTTP status →
//! `ErrorKind`, secrets kept out of errors. Auth: HTTP Basic over HTTPS, query keys, or
//! one-legged OAuth 1.0a signatures over plain HTTP.

use chrono::{DateTime, Utc};
use refsync_core::{Error, ErrorKind, Result};
use refsync_http::oauth1::SignatureMethod;
use refsync_http::{ApiRequest, Auth, HttpClient, RateLimit};
use serde_json::Value;

use crate::NAME;
use crate::config::{AuthMode, Config};

/// WordPress's maximum page size.
const PER_PAGE: u32 = 100;
/// Pages read per listing before giving up with a warning (10,000 objects).
const MAX_PAGES: u32 = 100;

/// The WooCommerce API client.
#[derive(Debug)]
pub(crate) struct Client {
    http: HttpClient,
    auth: AuthMode,
}

impl Client {
    /// A client for `config.store_url`.
    pub(crate) fn new(config: &Config) -> Result<Client> {
        let mode = config.effective_auth()?;
        let auth = match mode {
            AuthMode::Basic | AuthMode::Auto => Auth::Basic {
                user: config.consumer_key.expose().to_owned(),
                password: config.consumer_secret.clone(),
            },
            AuthMode::Query => Auth::QueryPairs(vec![
                ("consumer_key".into(), config.consumer_key.clone()),
                ("consumer_secret".into(), config.consumer_secret.clone()),
            ]),
            AuthMode::Oauth1 => Auth::OAuth1 {
                consumer_key: config.consumer_key.clone(),
                consumer_secret: config.consumer_secret.clone(),
                method: SignatureMethod::HmacSha256,
            },
        };
        let base = format!("{}/wp-json/wc/v3", config.store_url.trim_end_matches('/'));
        let http = HttpClient::builder(NAME)
            .base_url(base)
            .auth(auth)
            .rate_limit(RateLimit::per_second(config.requests_per_second))
            .build()?;
        Ok(Client { http, auth: mode })
    }

    /// Turns a 401 into advice: the usual causes differ by auth mode.
    fn explain(&self, e: Error) -> Error {
        if e.kind() != &ErrorKind::Unauthorized {
            return e;
        }
        let hint = match self.auth {
            AuthMode::Basic | AuthMode::Auto => {
                "check consumer_key/consumer_secret and that the key has read/write permission; if the server drops the Authorization header (some Apache/FastCGI set-ups), use auth = \"query\""
            }
            AuthMode::Query => {
                "check consumer_key/consumer_secret and that the key has read/write permission"
            }
            AuthMode::Oauth1 => {
                "check consumer_key/consumer_secret, that store_url is the site address WordPress reports (http vs https, www), and that this machine's clock is right (WooCommerce refuses OAuth timestamps more than 15 minutes off)"
            }
        };
        Error::unauthorized(format!("{} ({hint})", e.message()))
    }

    async fn send_json(&self, req: ApiRequest) -> Result<Value> {
        let resp = self.http.send(req).await.map_err(|e| self.explain(e))?;
        resp.json_value()
    }

    /// All pages of a list endpoint (`per_page=100` until a short page).
    async fn list(
        &self,
        path: &str,
        query: &[(&str, String)],
        operation: &'static str,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut req = ApiRequest::get(path)
                .query("per_page", PER_PAGE.to_string())
                .query("page", page.to_string())
                .operation(operation);
            for (k, v) in query {
                req = req.query(*k, v.clone());
            }
            let items = match self.send_json(req).await? {
                Value::Array(items) => items,
                other => {
                    return Err(Error::unexpected(format!(
                        "{path} answered {} instead of a list",
                        kind_of(&other)
                    )));
                }
            };
            let n = items.len();
            out.extend(items);
            if n < PER_PAGE as usize {
                return Ok(out);
            }
        }
        tracing::warn!(
            connector = NAME,
            path,
            read = out.len(),
            "listing stopped after {MAX_PAGES} pages"
        );
        Ok(out)
    }

    /// The customer (any WordPress role) with `email`, if any.
    pub(crate) async fn find_customer(&self, email: &str) -> Result<Option<Value>> {
        let found = self
            .send_json(
                ApiRequest::get("/customers")
                    .query("email", email)
                    .query("role", "all")
                    .operation("find_customer"),
            )
            .await?;
        Ok(found
            .as_array()
            .and_then(|a| {
                a.iter().find(|c| {
                    c.get("email")
                        .and_then(Value::as_str)
                        .is_some_and(|e| e.eq_ignore_ascii_case(email))
                })
            })
            .cloned())
    }

    /// `POST /customers`.
    pub(crate) async fn create_customer(&self, body: Value) -> Result<Value> {
        self.send_json(ApiRequest::post_json("/customers", body).operation("create_customer"))
            .await
    }

    /// `PUT /customers/{id}`.
    pub(crate) async fn update_customer(&self, id: u64, body: Value) -> Result<Value> {
        self.send_json(
            ApiRequest::put_json(format!("/customers/{id}"), body).operation("update_customer"),
        )
        .await
    }

    /// The coupon with `code` (WooCommerce's normal form), if any.
    pub(crate) async fn find_coupon(&self, code: &str) -> Result<Option<Value>> {
        let found = self
            .send_json(
                ApiRequest::get("/coupons")
                    .query("code", code)
                    .operation("find_coupon"),
            )
            .await?;
        Ok(found
            .as_array()
            .and_then(|a| {
                a.iter().find(|c| {
                    c.get("code")
                        .and_then(Value::as_str)
                        .is_some_and(|c| crate::events::normalize_coupon_code(c) == code)
                })
            })
            .cloned())
    }

    /// `POST /coupons`.
    pub(crate) async fn create_coupon(&self, body: Value) -> Result<Value> {
        self.send_json(ApiRequest::post_json("/coupons", body).operation("create_coupon"))
            .await
    }

    /// Every webhook of the store.
    pub(crate) async fn webhooks(&self) -> Result<Vec<Value>> {
        self.list("/webhooks", &[], "list_webhooks").await
    }

    /// `POST /webhooks`; returns its id.
    pub(crate) async fn create_webhook(&self, body: Value) -> Result<String> {
        let w = self
            .send_json(ApiRequest::post_json("/webhooks", body).operation("create_webhook"))
            .await?;
        Ok(id_text(&w))
    }

    /// `PUT /webhooks/{id}`.
    pub(crate) async fn update_webhook(&self, id: &str, body: Value) -> Result<()> {
        self.send_json(
            ApiRequest::put_json(format!("/webhooks/{id}"), body).operation("update_webhook"),
        )
        .await
        .map(|_| ())
    }

    /// `DELETE /webhooks/{id}?force=true` (webhooks cannot be trashed).
    pub(crate) async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.send_json(
            ApiRequest::delete(format!("/webhooks/{id}"))
                .query("force", "true")
                .operation("delete_webhook"),
        )
        .await
        .map(|_| ())
    }

    /// Orders modified since `since` (GMT), oldest first.
    pub(crate) async fn orders_modified_since(&self, since: DateTime<Utc>) -> Result<Vec<Value>> {
        self.list(
            "/orders",
            &[
                (
                    "modified_after",
                    since.format("%Y-%m-%dT%H:%M:%S").to_string(),
                ),
                ("dates_are_gmt", "true".into()),
                ("orderby", "modified".into()),
                ("order", "asc".into()),
            ],
            "list_orders",
        )
        .await
    }

    /// A cheap authenticated read: one order.
    pub(crate) async fn health_check(&self) -> Result<()> {
        self.send_json(
            ApiRequest::get("/orders")
                .query("per_page", "1")
                .operation("health_check"),
        )
        .await
        .map(|_| ())
    }
}

/// An object's `id` as text (`""` when absent).
pub(crate) fn id_text(v: &Value) -> String {
    match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
