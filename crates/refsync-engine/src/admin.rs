//! The HTTP side: [`Engine::router`] (webhooks, referrals to push, health, metrics, admin API).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use refsync_core::{Error, ErrorKind, WebhookRequest};
use serde::Deserialize;
use serde_json::json;

use crate::engine::Engine;
use crate::ingress::IngestOutcome;
use crate::sender::PushRequest;
use crate::store::{DeliveryFilter, DeliveryStatus, JobFilter, JobState};

fn error_response(e: &Error) -> Response {
    let status = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Validation | ErrorKind::Config => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let message = e.message().lines().next().unwrap_or("").to_owned();
    (
        status,
        axum::Json(json!({"error": e.kind().as_str(), "message": message})),
    )
        .into_response()
}

impl Engine {
    /// The HTTP routes (mount them in your own axum app, or serve them):
    ///
    /// - `POST /hooks/{instance}`: webhooks (401 bad auth, 404 unknown instance, 413 over the
    ///   body limit, 200 once stored);
    /// - `POST /referrals`: `{instance, user}` to push, with header `X-Refsync-Token` equal to
    ///   `server.admin_token` (202);
    /// - `GET /healthz`, `GET /readyz`, `GET /metrics`;
    /// - admin, with `Authorization: Bearer <server.admin_token>`: `GET /admin/deliveries`
    ///   (`?status=&instance=`), `GET /admin/dead-letters`,
    ///   `POST /admin/deliveries/{id}/replay`, `POST /admin/replay?status=dead&instance=`,
    ///   `GET /admin/referrals/{key}/timeline`, `GET /admin/jobs?state=&kind=`,
    ///   `POST /admin/jobs/{id}/replay` (dead jobs only; a done job never runs again).
    pub fn router(&self) -> Router {
        let limit = self.inner.config.server.body_limit_bytes;
        Router::new()
            .route("/hooks/{instance}", post(hook))
            .route("/referrals", post(referral))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/admin/deliveries", get(list_deliveries))
            .route("/admin/dead-letters", get(dead_letters))
            .route("/admin/deliveries/{id}/replay", post(replay_one))
            .route("/admin/replay", post(replay_filter))
            .route("/admin/referrals/{key}/timeline", get(timeline))
            .route("/admin/jobs", get(list_jobs))
            .route("/admin/jobs/{id}/replay", post(replay_job))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self.clone())
    }
}

async fn hook(
    State(engine): State<Engine>,
    Path(instance): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let label = if engine.instance(&instance).is_some() {
                instance.as_str()
            } else {
                "(unknown)"
            };
            engine.inner.metrics.inc_rejected(label, "body");
            return rejection.into_response();
        }
    };
    let request = WebhookRequest {
        method: method.to_string(),
        url: uri.to_string(),
        headers: headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    // The vendor-specific acknowledgement (e.g. a SOAP Ack), decided from the request alone.
    let ack = engine
        .instance(&instance)
        .and_then(|i| i.connector.acknowledgement(&request));
    let (status, delivery) = match engine.ingest(&instance, request, Utc::now()).await {
        Ok(IngestOutcome::Handshake { reply }) => return reply_response(reply),
        Ok(IngestOutcome::Accepted { id }) => ("accepted", id),
        Ok(IngestOutcome::Duplicate { id }) => ("duplicate", id),
        Ok(IngestOutcome::DeadLettered { id, .. }) => ("dead_lettered", id),
        Err(e) => return error_response(&e),
    };
    match ack {
        Some(reply) => reply_response(reply),
        None => (
            StatusCode::OK,
            axum::Json(json!({"status": status, "delivery": delivery})),
        )
            .into_response(),
    }
}

fn reply_response(reply: refsync_core::WebhookReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let content_type = HeaderValue::from_str(&reply.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    (status, [(header::CONTENT_TYPE, content_type)], reply.body).into_response()
}

fn admin_token(engine: &Engine) -> Option<&str> {
    engine
        .inner
        .config
        .server
        .admin_token
        .as_ref()
        .map(|s| s.expose())
        .filter(|s| !s.is_empty())
}

fn check_bearer(engine: &Engine, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(expected) = admin_token(engine) else {
        return Err(Box::new(error_response(&Error::new(
            ErrorKind::Forbidden,
            "the admin API is disabled (no server.admin_token)",
        ))));
    };
    let provided = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if refsync_http::secrets_equal(provided.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Box::new(error_response(&Error::unauthorized(
            "missing or wrong bearer token",
        ))))
    }
}

async fn referral(
    State(engine): State<Engine>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Some(expected) = admin_token(&engine) else {
        return error_response(&Error::new(
            ErrorKind::Forbidden,
            "POST /referrals is disabled (no server.admin_token)",
        ));
    };
    let provided = headers
        .get("x-refsync-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !refsync_http::secrets_equal(provided.as_bytes(), expected.as_bytes()) {
        return error_response(&Error::unauthorized("missing or wrong X-Refsync-Token"));
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let request: PushRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_response(&Error::validation(format!("bad body: {e}"))),
    };
    match engine.enqueue_push(request, Utc::now()).await {
        Ok((job, created)) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"job": job, "created": created})),
        )
            .into_response(),
        Err(e) => error_response(&e),
    }
}

async fn readyz(State(engine): State<Engine>) -> Response {
    match engine.inner.store.job_stats(Utc::now()).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store: {}", e.message()),
        )
            .into_response(),
    }
}

async fn metrics(State(engine): State<Engine>) -> Response {
    match engine.metrics_text(Utc::now()).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(e) => error_response(&e),
    }
}

#[derive(Debug, Deserialize)]
struct DeliveryQuery {
    status: Option<String>,
    instance: Option<String>,
    limit: Option<i64>,
    after_id: Option<i64>,
}

fn parse_status(s: Option<&str>) -> Result<Option<DeliveryStatus>, Error> {
    match s {
        None | Some("") => Ok(None),
        Some("received") => Ok(Some(DeliveryStatus::Received)),
        Some("processed") => Ok(Some(DeliveryStatus::Processed)),
        Some("dead") => Ok(Some(DeliveryStatus::Dead)),
        Some(other) => Err(Error::validation(format!(
            "unknown status {other:?} (received, processed, dead)"
        ))),
    }
}

fn filter_of(q: &DeliveryQuery) -> Result<DeliveryFilter, Error> {
    Ok(DeliveryFilter {
        instance: q.instance.clone().filter(|s| !s.is_empty()),
        status: parse_status(q.status.as_deref())?,
        after_id: q.after_id,
        limit: Some(q.limit.unwrap_or(100).clamp(1, 1000)),
        ..DeliveryFilter::default()
    })
}

fn delivery_json(d: &crate::store::Delivery) -> serde_json::Value {
    json!({
        "id": d.id,
        "instance": d.instance,
        "dedup_key": d.dedup_key,
        "status": d.status,
        "attempts": d.attempts,
        "received_at": d.received_at,
        "next_attempt_at": d.next_attempt_at,
        "last_error": d.last_error,
        "updated_at": d.updated_at,
        "body": String::from_utf8_lossy(&d.body),
    })
}

async fn list(engine: &Engine, filter: DeliveryFilter) -> Response {
    match engine.inner.store.list_deliveries(&filter).await {
        Ok(list) => axum::Json(json!({
            "deliveries": list.iter().map(delivery_json).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => error_response(&e),
    }
}

async fn list_deliveries(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Query(q): Query<DeliveryQuery>,
) -> Response {
    if let Err(r) = check_bearer(&engine, &headers) {
        return *r;
    }
    match filter_of(&q) {
        Ok(f) => list(&engine, f).await,
        Err(e) => error_response(&e),
    }
}

async fn dead_letters(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Query(q): Query<DeliveryQuery>,
) -> Response {
    if let Err(r) = check_bearer(&engine, &headers) {
        return *r;
    }
    match filter_of(&q) {
        Ok(mut f) => {
            f.status = Some(DeliveryStatus::Dead);
            list(&engine, f).await
        }
        Err(e) => error_response(&e),
    }
}

async fn replay_one(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = check_bearer(&engine, &headers) {
        return *r;
    }
    match engine.inner.store.requeue_delivery(id, Utc::now()).await {
        Ok(true) => axum::Json(json!({"replayed": 1})).into_response(),
        Ok(false) => error_response(&Error::new(
            ErrorKind::NotFound,
            format!("no delivery {id}"),
        )),
        Err(e) => error_response(&e),
    }
}

async fn replay_filter(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Query(q): Query<DeliveryQuery>,
) -> Response {
    if let Err(r) = check_bearer(&engine, &headers) {
        return *r;
    }
    let mut f = match filter_of(&q) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    f.limit = None;
    if f.status.is_none() {
        f.status = Some(DeliveryStatus::Dead);
    }
    match engine.inner.store.requeue_deliveries(&f, Utc::now()).await {
        Ok(n) => axum::Json(json!({"replayed": n})).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn timeline(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    if let Err(r) = check_bearer(&engine, &headers) {
        return *r;
    }
    match engine.inner.store.timeline(&key).await {
        Ok(entries) => axum::Json(json!({"referral": key, "timeline": entries})).into_response(),
        Err(e) => error_response(&e),
    }
}

#[derive(Debug, Deserialize)]
struct JobQuery {
    state: Option<String>,
    kind: Option<String>,
    limit: Option<i64>,
    after_id: Option<i64>,
}

async fn list_jobs(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Query(q): Query<JobQuery>,
) -> Response {
    if let Err(r) = check_bearer(&engine, &headers) {
        return *r;
    }
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some("pending") => Some(JobState::Pending),
        Some("leased") => Some(JobState::Leased),
        Some("done") => Some(JobState::Done),
        Some("dead") => Some(JobState::Dead),
        Some(other) => {
            return error_response(&Error::validation(format!(
                "unknown state {other:?} (pending, leased, done, dead)"
            )));
        }
    };
    let filter = JobFilter {
        kind: q.kind.filter(|s| !s.is_empty()),
        state,
        after_id: q.after_id,
        limit: Some(q.limit.unwrap_or(100).clamp(1, 1000)),
    };
    match engine.inner.store.list_jobs(&filter).await {
        Ok(jobs) => axum::Json(json!({ "jobs": jobs })).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn replay_job(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = check_bearer(&engine, &headers) {
        return *r;
    }
    match engine.inner.store.requeue_job(id, Utc::now()).await {
        Ok(true) => axum::Json(json!({"replayed": 1})).into_response(),
        Ok(false) => error_response(&Error::new(
            ErrorKind::Conflict,
            format!("job {id} does not exist or is not dead"),
        )),
        Err(e) => error_response(&e),
    }
}
