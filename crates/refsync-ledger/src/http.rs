//! The ledger's HTTP API: the subset of Referral Factory's API that refsync speaks
//! (`docs/referral-factory-api.md`), as an axum [`Router`] an engine can mount.
//!
//! - `/api/v2/...` and `/api/v1/...`, behind `Authorization: Bearer <api token>` (compared in
//!   constant time);
//! - `POST /webhook/{token}/qualify` with a form body `code=` or `coupon=`, the URL token being
//!   the only authentication;
//! - errors as `{"code": <status>, "message": "...", "errors": {"<field>": [{"field", "message"}]}}`
//!   (`errors` on 422 only).
//!
//! ```no_run
//! # async fn serve() -> refsync_core::Result<()> {
//! use refsync_ledger::{Ledger, http};
//! let ledger = Ledger::open("sqlite://ledger.db").await?;
//! let app = http::router(
//!     ledger,
//!     http::HttpOptions::new("a-long-random-api-token")
//!         .with_webhook_token("another-long-random-token")
//!         .with_public_base_url("https://ledger.example.com"),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, OriginalUri, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use refsync_core::{Error, ErrorKind, NewUser, ReferralKey, ReferrerRef, RewardStatus, Secret};
use serde_json::{Map, Value, json};

use crate::db::format_time;
use crate::ledger::{Ledger, parse_id};
use crate::model::{
    Campaign, Filter, FilterOp, ListQuery, Metric, Page, Pagination, Qualification, RewardQuery,
    RewardRecord, User, error_field, status_str,
};

/// Default request body limit (64 KiB).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Largest `per_page`.
pub use crate::model::MAX_PER_PAGE;
/// `per_page` when not given.
pub const DEFAULT_PER_PAGE: u32 = 25;

/// How the API is served.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The Bearer token of `/api/...`. An empty token rejects every API request.
    pub api_token: Secret,
    /// The token of `POST /webhook/{token}/qualify`; `None` (or empty) disables the webhook.
    pub webhook_token: Option<Secret>,
    /// Public base URL (`https://ledger.example.com`) of the `links` of lists; without it the
    /// links are relative (`/api/v2/users?page=2`), never built from the request's `Host`
    /// header (which the caller chooses).
    pub public_base_url: Option<String>,
    /// Largest accepted request body, in bytes (larger bodies get 413).
    pub body_limit: usize,
}

impl HttpOptions {
    /// Options with an API token, no webhook, relative list links and the default body limit.
    pub fn new(api_token: impl Into<Secret>) -> Self {
        HttpOptions {
            api_token: api_token.into(),
            webhook_token: None,
            public_base_url: None,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
    /// Enables the inbound webhook with this URL token.
    #[must_use]
    pub fn with_webhook_token(mut self, token: impl Into<Secret>) -> Self {
        self.webhook_token = Some(token.into());
        self
    }
    /// Sets the public base URL of list links.
    #[must_use]
    pub fn with_public_base_url(mut self, url: impl Into<String>) -> Self {
        self.public_base_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }
    /// Sets the body limit.
    #[must_use]
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
}

struct AppState {
    ledger: Ledger,
    options: HttpOptions,
}

type St = State<Arc<AppState>>;

/// The API as a router (state included): mount it with `Router::merge`, or serve it alone.
pub fn router(ledger: Ledger, options: HttpOptions) -> Router {
    let limit = options.body_limit;
    let state = Arc::new(AppState { ledger, options });
    let v2 = Router::new()
        .route("/campaigns", get(v2_campaigns))
        .route("/users", get(v2_list_users).post(v2_create_user))
        .route("/users/qualification", put(v2_qualification))
        .route("/users/{identifier}", get(v2_get_user))
        .route("/rewards/{list}/{metric}", get(v2_rewards))
        .route("/rewards/issue/{id}", post(v2_issue))
        .route("/rewards/cancel/{id}", post(v2_cancel));
    let v1 = Router::new()
        .route("/campaigns", get(v1_campaigns))
        .route("/campaigns/{id}", get(v1_campaign))
        .route("/users", get(v1_list_users).post(v1_create_user))
        .route("/users/{id}", get(v1_get_user).put(v1_update_user));
    let api = Router::new()
        .nest("/api/v2", v2)
        .nest("/api/v1", v1)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(api)
        .route("/webhook/{token}/qualify", post(webhook_qualify))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

// ----- errors ------------------------------------------------------------------------------

/// An error answer: `{code, message, errors}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    errors: BTreeMap<String, Vec<String>>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// A 422 with field errors.
    fn invalid(errors: BTreeMap<String, Vec<String>>) -> Self {
        let message = errors
            .values()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_else(|| "The given data was invalid.".to_owned());
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message,
            errors,
        }
    }
    fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = BTreeMap::new();
        errors.insert(field.to_owned(), vec![message.into()]);
        Self::invalid(errors)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Validation | ErrorKind::Conflict => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "ledger API: server error");
            return ApiError::new(
                status,
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "The ledger database is unavailable; try again later."
                } else {
                    "Server error."
                },
            );
        }
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            let field = error_field(&e).map_or("error", |f| f.field.as_str());
            return ApiError::field(field, e.message());
        }
        ApiError::new(status, e.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.status.as_u16(), "message": self.message });
        if !self.errors.is_empty() {
            let errors: Map<String, Value> = self
                .errors
                .iter()
                .map(|(field, messages)| {
                    let list: Vec<Value> = messages
                        .iter()
                        .map(|m| json!({ "field": field, "message": m }))
                        .collect();
                    (field.clone(), Value::Array(list))
                })
                .collect();
            body["errors"] = Value::Object(errors);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(status: StatusCode, body: Value) -> ApiResult {
    Ok((status, axum::Json(body)).into_response())
}

async fn not_found() -> ApiError {
    ApiError::not_found("Not found.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.")
}

fn body_error(r: &BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request body is too large.",
        )
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}

fn path_error(r: &PathRejection) -> ApiError {
    ApiError::not_found(format!("Not found: {}", r.body_text()))
}

// ----- auth --------------------------------------------------------------------------------

async fn require_token(State(state): St, request: Request, next: Next) -> Response {
    let expected = state.options.api_token.expose();
    let provided = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match provided {
        Some(token)
            if !expected.is_empty()
                && refsync_http::secrets_equal(token.as_bytes(), expected.as_bytes()) =>
        {
            next.run(request).await
        }
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated: send Authorization: Bearer <API token>. The token is missing or wrong (generating a new token invalidates the old one).",
        )
        .into_response(),
    }
}

// ----- request parsing ---------------------------------------------------------------------

/// A JSON object body (an empty body is an empty object).
fn json_body(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "The body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("The body is not valid JSON: {e}"),
        )),
    }
}

/// A string (numbers are accepted and printed).
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An id: an integer, or a string of digits.
fn id_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().filter(|&i| i > 0),
        Value::String(s) => parse_id(s),
        _ => None,
    }
}

fn bool_of(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().and_then(|i| match i {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[derive(Default)]
struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }
    fn check(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.0))
        }
    }
}

/// The `NewUser` of a create request; `v1` takes `referrer_code` instead of `referrer`.
fn new_user(body: &Map<String, Value>, v1: bool) -> Result<NewUser, ApiError> {
    let mut errors = FieldErrors::default();
    let campaign_id = match body.get("campaign_id") {
        None | Some(Value::Null) => {
            errors.add("campaign_id", "The campaign id field is required.");
            String::new()
        }
        Some(v) => match id_of(v) {
            Some(i) => i.to_string(),
            None => {
                errors.add("campaign_id", "The campaign id must be an integer.");
                String::new()
            }
        },
    };
    let mut text = |name: &str, label: &str| match body.get(name).and_then(text_of) {
        Some(s) if !s.trim().is_empty() => s,
        _ => {
            errors.add(name, format!("The {label} field is required."));
            String::new()
        }
    };
    let first_name = text("first_name", "first name");
    let email = text("email", "email");
    let referrer = if v1 {
        match body.get("referrer_code") {
            None | Some(Value::Null) => None,
            Some(v) => match text_of(v) {
                Some(c) if !c.trim().is_empty() => Some(ReferrerRef::Code(c)),
                _ => {
                    errors.add("referrer_code", "The referrer code must be a string.");
                    None
                }
            },
        }
    } else {
        match body.get("referrer") {
            None | Some(Value::Null) => None,
            Some(Value::Object(r)) => {
                let value = r.get("value").and_then(text_of).unwrap_or_default();
                match (
                    r.get("field").and_then(Value::as_str),
                    value.trim().is_empty(),
                ) {
                    (_, true) => {
                        errors.add("referrer", "The referrer value is required.");
                        None
                    }
                    (Some("id"), false) => Some(ReferrerRef::Id(value)),
                    (Some("code"), false) => Some(ReferrerRef::Code(value)),
                    (Some("email"), false) => Some(ReferrerRef::Email(value)),
                    _ => {
                        errors.add(
                            "referrer",
                            "The referrer field must be one of: id, code, email.",
                        );
                        None
                    }
                }
            }
            Some(_) => {
                errors.add("referrer", "The referrer must be an object {field, value}.");
                None
            }
        }
    };
    let mut meta = BTreeMap::new();
    match body.get("meta") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                match (
                    item.get("field").and_then(text_of),
                    item.get("value").map(|v| text_of(v).unwrap_or_default()),
                ) {
                    (Some(f), Some(v)) => {
                        meta.insert(f, v);
                    }
                    _ => errors.add("meta", "Each meta item must be {field, value}."),
                }
            }
        }
        Some(Value::Object(m)) => {
            for (k, v) in m {
                meta.insert(k.clone(), text_of(v).unwrap_or_default());
            }
        }
        Some(_) => errors.add("meta", "The meta must be a list of {field, value}."),
    }
    let notify = body.get("notify").and_then(bool_of).unwrap_or(false);
    errors.check()?;
    Ok(NewUser {
        campaign_id,
        first_name,
        email,
        referrer,
        meta,
        notify,
    })
}

/// List parameters.
struct ListParams {
    list: ListQuery,
    campaign_id: Option<i64>,
    with_referrer: bool,
    with_rewards: bool,
    fields: Option<Vec<String>>,
}

fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Bad query string: {e}")))
}

fn list_params(
    pairs: &[(String, String)],
    allowed_fields: &[&str],
    relations: bool,
) -> Result<ListParams, ApiError> {
    let mut errors = FieldErrors::default();
    let mut p = ListParams {
        list: ListQuery {
            page: Some(Pagination {
                page: 1,
                per_page: DEFAULT_PER_PAGE,
            }),
            ..ListQuery::default()
        },
        campaign_id: None,
        with_referrer: false,
        with_rewards: false,
        fields: None,
    };
    let mut page = 1;
    let mut per_page = DEFAULT_PER_PAGE;
    for (k, v) in pairs {
        if let Some(rest) = k.strip_prefix("filter[") {
            // filter[field][op] or filter[field] (equal)
            let (field, op) = match rest.split_once("][") {
                Some((f, op)) => (f, op.strip_suffix(']').unwrap_or(op)),
                None => (rest.strip_suffix(']').unwrap_or(rest), "equal"),
            };
            match op.parse::<FilterOp>() {
                Ok(op) => p.list.filters.push(Filter::new(field, op, v.clone())),
                Err(_) => errors.add(
                    k,
                    format!("Unknown filter operator {op:?}: use equal, gt, lt, gte, lte or like."),
                ),
            }
            continue;
        }
        match k.as_str() {
            "order_by" => p.list.order_by = Some(v.trim().to_owned()).filter(|s| !s.is_empty()),
            "order_direction" => match v.trim().to_ascii_lowercase().as_str() {
                "asc" | "" => p.list.descending = false,
                "desc" => p.list.descending = true,
                _ => errors.add(k, "The order direction must be asc or desc."),
            },
            "per_page" => match v.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_PER_PAGE).contains(&n) => per_page = n,
                _ => errors.add(
                    k,
                    format!("The per page must be an integer between 1 and {MAX_PER_PAGE}."),
                ),
            },
            "page" => match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => page = n,
                _ => errors.add(k, "The page must be a positive integer."),
            },
            "campaign_id" => match parse_id(v) {
                Some(c) => p.campaign_id = Some(c),
                None => errors.add(k, "The campaign id must be an integer."),
            },
            "with" => {
                for rel in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match rel {
                        "referrer" if relations => p.with_referrer = true,
                        "rewards" if relations => p.with_rewards = true,
                        _ => errors.add(k, format!("Unknown relation {rel:?}.")),
                    }
                }
            }
            "fields" => {
                let list: Vec<String> = v
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                for f in &list {
                    if !allowed_fields.contains(&f.as_str()) {
                        errors.add(k, format!("Unknown field {f:?}."));
                    }
                }
                p.fields = Some(list);
            }
            _ => {}
        }
    }
    errors.check()?;
    p.list.page = Some(Pagination { page, per_page });
    Ok(p)
}

// ----- JSON shapes -------------------------------------------------------------------------

const USER_KEYS: &[&str] = &[
    "id",
    "campaign_id",
    "referrer_id",
    "code",
    "url",
    "first_name",
    "email",
    "reach",
    "source",
    "type",
    "signed_up_at",
    "qualified_at",
    "unsubscribed_at",
    "meta",
    "coupon",
];

const REWARD_KEYS: &[&str] = &[
    "id",
    "reward_id",
    "campaign_id",
    "recipient_id",
    "referral_id",
    "referrer_id",
    "metric",
    "amount",
    "coupon",
    "value",
    "can_be_issued",
    "status",
    "trigger",
    "issued_at",
    "cancelled_at",
    "created_at",
];

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "campaign_id": u.campaign_id,
        "referrer_id": u.referrer_id,
        "code": u.code,
        "url": u.url,
        "first_name": u.first_name,
        "email": u.email,
        "reach": 0,
        "source": u.source,
        "type": u.user_type.as_str(),
        "signed_up_at": format_time(u.signed_up_at),
        "qualified_at": u.qualified_at.map(format_time),
        "unsubscribed_at": Value::Null,
        "meta": u.meta,
        "coupon": u.coupon,
    })
}

fn reward_json(r: &RewardRecord) -> Value {
    json!({
        "id": r.id,
        "reward_id": r.rule_id,
        "campaign_id": r.campaign_id,
        "recipient_id": r.recipient_id,
        "referral_id": r.referral_id,
        "referrer_id": r.referrer_id,
        "metric": r.metric.as_str(),
        "amount": r.amount,
        "coupon": r.coupon(),
        "value": r.value,
        "can_be_issued": r.status == RewardStatus::Due,
        "status": status_str(r.status),
        "trigger": r.trigger.as_str(),
        "issued_at": r.issued_at.map(format_time),
        "cancelled_at": r.cancelled_at.map(format_time),
        "created_at": format_time(r.created_at),
    })
}

fn campaign_json(c: &Campaign) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "url": c.link_base_url,
        "created_at": format_time(c.created_at),
    })
}

/// Keeps only `fields` (plus `keep`) of an object.
fn select_fields(mut v: Value, fields: Option<&[String]>, keep: &[&str]) -> Value {
    if let (Some(fields), Value::Object(m)) = (fields, &mut v) {
        m.retain(|k, _| fields.iter().any(|f| f == k) || keep.contains(&k.as_str()));
    }
    v
}

/// The prefix of list links: the configured public base URL, or nothing — relative links
/// (path and query), which the client resolves against the URL it called. Never the request's
/// `Host` header: a client (or anyone in between) must not choose where `links.next` points.
fn link_base(state: &AppState) -> &str {
    state.options.public_base_url.as_deref().unwrap_or_default()
}

fn page_url(base: &str, uri: &OriginalUri, pairs: &[(String, String)], page: u32) -> String {
    let mut out: Vec<(String, String)> =
        pairs.iter().filter(|(k, _)| k != "page").cloned().collect();
    out.push(("page".to_owned(), page.to_string()));
    let query = serde_urlencoded::to_string(&out).unwrap_or_default();
    format!("{base}{}?{query}", uri.0.path())
}

fn list_json<T>(
    data: &[Value],
    page: &Page<T>,
    base: &str,
    uri: &OriginalUri,
    pairs: &[(String, String)],
) -> Value {
    let last = page.last_page();
    let offset = Pagination {
        page: page.page,
        per_page: page.per_page,
    }
    .offset();
    let url = |n: u32| Value::String(page_url(base, uri, pairs, n));
    json!({
        "data": data,
        "links": {
            "first": url(1),
            "last": url(last),
            "prev": if page.page > 1 { url(page.page - 1) } else { Value::Null },
            "next": if page.page < last { url(page.page + 1) } else { Value::Null },
        },
        "meta": {
            "current_page": page.page,
            "per_page": page.per_page,
            "total": page.total,
            "last_page": last,
            "from": if page.items.is_empty() { Value::Null } else { json!(offset.saturating_add(1)) },
            "to": if page.items.is_empty() { Value::Null } else { json!(offset.saturating_add(page.items.len() as u64)) },
        },
    })
}

/// Users as JSON with the requested relations and fields.
async fn users_json(
    ledger: &Ledger,
    users: &[User],
    with_referrer: bool,
    with_rewards: bool,
    fields: Option<&[String]>,
) -> Result<Vec<Value>, ApiError> {
    let mut referrers: HashMap<i64, Value> = HashMap::new();
    if with_referrer {
        for id in users.iter().filter_map(|u| u.referrer_id) {
            if let std::collections::hash_map::Entry::Vacant(e) = referrers.entry(id) {
                let r = ledger.user_by_id(id).await?;
                e.insert(r.as_ref().map_or(Value::Null, user_json));
            }
        }
    }
    let rewards = if with_rewards {
        let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
        ledger.rewards_involving(&ids).await?
    } else {
        Vec::new()
    };
    let mut keep = Vec::new();
    if with_referrer {
        keep.push("referrer");
    }
    if with_rewards {
        keep.push("rewards");
    }
    Ok(users
        .iter()
        .map(|u| {
            let mut v = user_json(u);
            if with_referrer {
                v["referrer"] = u
                    .referrer_id
                    .and_then(|id| referrers.get(&id).cloned())
                    .unwrap_or(Value::Null);
            }
            if with_rewards {
                v["rewards"] = Value::Array(
                    rewards
                        .iter()
                        .filter(|r| r.recipient_id == u.id || r.referral_id == u.id)
                        .map(reward_json)
                        .collect(),
                );
            }
            select_fields(v, fields, &keep)
        })
        .collect())
}

// ----- v2 ----------------------------------------------------------------------------------

async fn v2_campaigns(State(state): St, uri: OriginalUri, RawQuery(raw): RawQuery) -> ApiResult {
    let pairs = query_pairs(raw.as_deref())?;
    let p = list_params(&pairs, &["id", "name", "url", "created_at"], false)?;
    let all = state.ledger.campaigns().await?;
    let Some(Pagination { page, per_page }) = p.list.page else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server error.",
        ));
    };
    let total = all.len();
    let start = usize::try_from(page - 1)
        .unwrap_or(usize::MAX)
        .saturating_mul(per_page as usize);
    let items: Vec<Campaign> = all
        .into_iter()
        .skip(start)
        .take(per_page as usize)
        .collect();
    let data = items
        .iter()
        .map(|c| select_fields(campaign_json(c), p.fields.as_deref(), &[]))
        .collect::<Vec<_>>();
    let page = Page {
        items,
        total: i64::try_from(total).unwrap_or(i64::MAX),
        page,
        per_page,
    };
    ok(
        StatusCode::OK,
        list_json(&data, &page, link_base(&state), &uri, &pairs),
    )
}

async fn v2_create_user(State(state): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = body.map_err(|r| body_error(&r))?;
    let user = new_user(&json_body(&body)?, false)?;
    let created = state.ledger.add_user(&user).await?;
    ok(StatusCode::CREATED, json!({ "data": user_json(&created) }))
}

async fn v2_get_user(
    State(state): St,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let Path(identifier) = path.map_err(|r| path_error(&r))?;
    let pairs = query_pairs(raw.as_deref())?;
    let p = list_params(&pairs, USER_KEYS, true)?;
    let user = state
        .ledger
        .find_user(&identifier, p.campaign_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No user {identifier}.")))?;
    let mut data = users_json(
        &state.ledger,
        std::slice::from_ref(&user),
        p.with_referrer,
        p.with_rewards,
        p.fields.as_deref(),
    )
    .await?;
    ok(StatusCode::OK, json!({ "data": data.pop() }))
}

async fn v2_list_users(State(state): St, uri: OriginalUri, RawQuery(raw): RawQuery) -> ApiResult {
    let pairs = query_pairs(raw.as_deref())?;
    let p = list_params(&pairs, USER_KEYS, true)?;
    let page = state.ledger.users(p.campaign_id, &p.list).await?;
    let data = users_json(
        &state.ledger,
        &page.items,
        p.with_referrer,
        p.with_rewards,
        p.fields.as_deref(),
    )
    .await?;
    ok(
        StatusCode::OK,
        list_json(&data, &page, link_base(&state), &uri, &pairs),
    )
}

/// The referral key of a qualification request.
fn qualification_key(body: &Map<String, Value>) -> Result<ReferralKey, ApiError> {
    let get = |k: &str| {
        body.get(k)
            .and_then(text_of)
            .filter(|s| !s.trim().is_empty())
    };
    if let Some(id) = get("id") {
        return Ok(ReferralKey::Id { id });
    }
    if let Some(code) = get("code") {
        return Ok(ReferralKey::Code { code });
    }
    if let Some(email) = get("email") {
        return match body.get("campaign_id").and_then(id_of) {
            Some(c) => Ok(ReferralKey::Email {
                email,
                campaign: c.to_string(),
            }),
            None => Err(ApiError::field(
                "campaign_id",
                "The campaign id field is required when email is present.",
            )),
        };
    }
    if let Some(coupon) = get("coupon") {
        return Ok(ReferralKey::Coupon { coupon });
    }
    Err(ApiError::field(
        "identifier",
        "One of id, code, email (with campaign_id) or coupon is required.",
    ))
}

async fn apply_qualification(
    ledger: &Ledger,
    key: &ReferralKey,
    qualified: bool,
) -> Result<(User, String), ApiError> {
    let q = if qualified {
        ledger.qualify(key).await?
    } else {
        ledger.unqualify(key).await?
    };
    match &q {
        Qualification::Ignored { reason } => Err(ApiError::not_found(format!(
            "{reason} (ignored, as coupons not issued by the platform are)"
        ))),
        other => match other.user() {
            Some(u) => Ok((u.clone(), other.message())),
            None => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Server error.",
            )),
        },
    }
}

fn qualified_flag(body: &Map<String, Value>) -> Result<bool, ApiError> {
    match body.get("qualified") {
        None | Some(Value::Null) => Ok(true),
        Some(v) => bool_of(v).ok_or_else(|| {
            ApiError::field("qualified", "The qualified field must be true or false.")
        }),
    }
}

async fn v2_qualification(State(state): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = json_body(&body.map_err(|r| body_error(&r))?)?;
    let qualified = qualified_flag(&body)?;
    let key = qualification_key(&body)?;
    let (user, message) = apply_qualification(&state.ledger, &key, qualified).await?;
    ok(
        StatusCode::OK,
        json!({ "data": user_json(&user), "message": message }),
    )
}

async fn v2_rewards(
    State(state): St,
    uri: OriginalUri,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let Path((list, metric)) = path.map_err(|r| path_error(&r))?;
    let status = match list.as_str() {
        "due" => Some(RewardStatus::Due),
        "issued" => Some(RewardStatus::Issued),
        "dashboard" => None,
        _ => return Err(ApiError::not_found("Not found.")),
    };
    let metric: Metric = metric.parse().map_err(|_| {
        ApiError::not_found(format!(
            "Unknown reward metric {metric:?}: use amount, commission, coupon or custom."
        ))
    })?;
    let pairs = query_pairs(raw.as_deref())?;
    let p = list_params(&pairs, REWARD_KEYS, false)?;
    let page = state
        .ledger
        .rewards(&RewardQuery {
            status,
            metric: Some(metric),
            campaign_id: p.campaign_id,
            user_id: None,
            list: p.list.clone(),
        })
        .await?;
    let data = page
        .items
        .iter()
        .map(|r| select_fields(reward_json(r), p.fields.as_deref(), &[]))
        .collect::<Vec<_>>();
    ok(
        StatusCode::OK,
        list_json(&data, &page, link_base(&state), &uri, &pairs),
    )
}

fn reward_path(path: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let Path(id) = path.map_err(|r| path_error(&r))?;
    parse_id(&id).ok_or_else(|| ApiError::not_found(format!("No reward {id}.")))
}

async fn v2_issue(State(state): St, path: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = reward_path(path)?;
    let r = state.ledger.issue_reward(id).await?;
    ok(StatusCode::OK, json!({ "data": reward_json(&r) }))
}

async fn v2_cancel(State(state): St, path: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = reward_path(path)?;
    let r = state.ledger.cancel_reward(id).await?;
    ok(StatusCode::OK, json!({ "data": reward_json(&r) }))
}

// ----- v1 ----------------------------------------------------------------------------------

async fn v1_campaigns(state: St, uri: OriginalUri, raw: RawQuery) -> ApiResult {
    v2_campaigns(state, uri, raw).await
}

async fn v1_campaign(State(state): St, path: Result<Path<String>, PathRejection>) -> ApiResult {
    let Path(id) = path.map_err(|r| path_error(&r))?;
    let c = match parse_id(&id) {
        Some(i) => state.ledger.campaign(i).await?,
        None => None,
    };
    let c = c.ok_or_else(|| ApiError::not_found(format!("No campaign {id}.")))?;
    ok(StatusCode::OK, campaign_json(&c))
}

async fn v1_create_user(State(state): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = body.map_err(|r| body_error(&r))?;
    let user = new_user(&json_body(&body)?, true)?;
    let created = state.ledger.add_user(&user).await?;
    ok(StatusCode::CREATED, user_json(&created))
}

async fn v1_get_user(State(state): St, path: Result<Path<String>, PathRejection>) -> ApiResult {
    let Path(identifier) = path.map_err(|r| path_error(&r))?;
    let user = state
        .ledger
        .find_user(&identifier, None)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No user {identifier}.")))?;
    ok(StatusCode::OK, user_json(&user))
}

async fn v1_update_user(
    State(state): St,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Path(id) = path.map_err(|r| path_error(&r))?;
    let body = json_body(&body.map_err(|r| body_error(&r))?)?;
    let user_id = parse_id(&id).ok_or_else(|| ApiError::not_found(format!("No user {id}.")))?;
    let user = state
        .ledger
        .user_by_id(user_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No user {id}.")))?;
    if let Some(c) = body.get("campaign_id").filter(|v| !v.is_null()) {
        if id_of(c) != Some(user.campaign_id) {
            return Err(ApiError::not_found(format!(
                "No user {id} in campaign {}.",
                text_of(c).unwrap_or_default()
            )));
        }
    }
    let Some(q) = body.get("qualified").filter(|v| !v.is_null()) else {
        return Err(ApiError::field(
            "qualified",
            "The qualified field is required (this ledger updates only the qualification).",
        ));
    };
    let qualified = bool_of(q).ok_or_else(|| {
        ApiError::field("qualified", "The qualified field must be true or false.")
    })?;
    let (user, _) = apply_qualification(
        &state.ledger,
        &ReferralKey::Id {
            id: user_id.to_string(),
        },
        qualified,
    )
    .await?;
    ok(StatusCode::OK, user_json(&user))
}

async fn v1_list_users(State(state): St, uri: OriginalUri, RawQuery(raw): RawQuery) -> ApiResult {
    let pairs = query_pairs(raw.as_deref())?;
    let mut p = list_params(&pairs, USER_KEYS, false)?;
    // Referral Factory's v1 ignores campaign_id here; so do we (clients filter themselves).
    p.campaign_id = None;
    let page = state.ledger.users(None, &p.list).await?;
    let data = page.items.iter().map(user_json).collect::<Vec<_>>();
    ok(
        StatusCode::OK,
        list_json(&data, &page, link_base(&state), &uri, &pairs),
    )
}

// ----- inbound webhook -------------------------------------------------------------------

async fn webhook_qualify(
    State(state): St,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Path(token) = path.map_err(|r| path_error(&r))?;
    let expected = state
        .options
        .webhook_token
        .as_ref()
        .map(Secret::expose)
        .filter(|t| !t.is_empty());
    let Some(expected) = expected else {
        return Err(ApiError::not_found("Not found."));
    };
    if !refsync_http::secrets_equal(token.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Invalid webhook token: use the URL shown by the ledger's settings.",
        ));
    }
    let body = body.map_err(|r| body_error(&r))?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let form: Map<String, Value> = if is_json {
        json_body(&body)?
    } else {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Bad form body: {e}")))?
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect()
    };
    let get = |k: &str| {
        form.get(k)
            .and_then(text_of)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let key = match (get("code"), get("coupon")) {
        (Some(code), _) => ReferralKey::Code { code },
        (None, Some(coupon)) => ReferralKey::Coupon { coupon },
        (None, None) => {
            return Err(ApiError::field(
                "code",
                "The code (or coupon) field is required.",
            ));
        }
    };
    let q = state.ledger.qualify(&key).await?;
    ok(StatusCode::OK, json!({ "message": q.message() }))
}
