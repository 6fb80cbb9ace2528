//! Webhook verification and parsing: pure and synchronous, so they run on fixtures and can be
//! fuzzed.

use chrono::{DateTime, Utc};
use refsync_core::{CrmEvent, Error, Result, Verification, WebhookRequest};

use crate::config::Config;

/// Checks the request's credentials in constant time (and its timestamp against `now` when
/// Salesforce signs one). Errors are unauthorized, with a one-line reason and no secret.
// TODO(salesforce): verify as Salesforce signs (header name, HMAC algorithm and encoding, signed
// content, timestamp tolerance); use the helpers of `refsync_http::signature` and return
// `Verification::Verified { scheme: "hmac-sha256".into() }` on success.
pub(crate) fn verify(
    config: &Config,
    request: &WebhookRequest,
    now: DateTime<Utc>,
) -> Result<Verification> {
    let _ = (&config.webhook_secret, request, now);
    Err(Error::unauthorized(
        "TODO(salesforce): verify webhooks as the vendor signs them",
    ))
}

/// Turns a verified request into canonical events: unknown event types yield no events; a
/// malformed body is a validation error. Never panics.
// TODO(salesforce): parse Salesforce's payloads into `CrmEvent`s (see docs/events.md); copy real
// payloads into tests/fixtures/ and bless their expected events.
pub(crate) fn parse(request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
    let _ = request;
    Err(Error::unsupported(
        "TODO(salesforce): parse webhook payloads",
    ))
}
