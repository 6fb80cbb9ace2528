//! The outgoing side: sends the push request.

use std::time::Duration;

use refsync_core::{Error, Result};
use refsync_http::{ApiRequest, ApiResponse, Auth, HttpClient, RetryPolicy};
use serde_json::Value;

use crate::NAME;
use crate::config::PushTarget;

/// Sends push requests to the configured target.
#[derive(Debug, Clone)]
pub struct PushClient {
    http: HttpClient,
    target: PushTarget,
}

impl PushClient {
    /// Builds the client for `target`.
    pub fn new(target: PushTarget) -> Result<Self> {
        // Only the origin goes into the client (whose Debug shows its base URL); the full URL,
        // which may carry a token, is passed per request.
        let origin = crate::config::origin(target.url.expose()).ok_or_else(|| {
            Error::config("push.url must be an absolute http(s) URL with a host")
                .with_connector(NAME)
        })?;
        let http = HttpClient::builder(NAME)
            .base_url(origin)
            .timeout(Duration::from_secs(target.timeout_secs))
            .auth(Auth::None)
            // Pushes are POSTs: the client retries only 429s (the receiver said it did nothing);
            // other failures go back to the caller, whose outbox decides.
            .retry(RetryPolicy::default())
            .build()?;
        Ok(PushClient { http, target })
    }

    /// Sends `body`; returns the response.
    pub async fn send(&self, body: Value) -> Result<ApiResponse> {
        let url = self.target.url.expose().to_owned();
        let mut req = match self.target.method.to_ascii_uppercase().as_str() {
            "PUT" => ApiRequest::put_json(url, body).idempotent(false),
            "PATCH" => ApiRequest::patch_json(url, body),
            _ => ApiRequest::post_json(url, body),
        }
        .operation("push_referral");
        for (k, v) in &self.target.headers {
            req = req.secret_header(k.clone(), v.clone());
        }
        self.http.send(req).await
    }

    /// GETs `health_url`, when configured.
    pub async fn health(&self) -> Result<()> {
        let Some(url) = &self.target.health_url else {
            return Err(Error::unsupported(
                "no push.health_url is configured: the receiver cannot be probed without sending a referral",
            )
            .with_connector(NAME)
            .with_operation("health_check"));
        };
        let mut req = ApiRequest::get(url.expose().to_owned()).operation("health_check");
        for (k, v) in &self.target.headers {
            req = req.secret_header(k.clone(), v.clone());
        }
        self.http.send(req).await.map(|_| ())
    }
}
