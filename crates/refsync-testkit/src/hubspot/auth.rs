//! Credentials: bearer tokens (private-app tokens and OAuth access tokens), the OAuth token
//! endpoint, and the webhook signatures (written from HubSpot's "validating requests" docs,
//! independent of refsync-http).

use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::model::{AccessToken, State};
use super::{HubSpotSimOptions, Inner};
use crate::sim::{RecordedRequest, SimResponse};

/// `X-HubSpot-Signature-v3`: `base64(HMAC-SHA256(key = secret, message = method + url + body +
/// timestamp))`, the timestamp in milliseconds as decimal text (the value of
/// `X-HubSpot-Request-Timestamp`).
pub fn sign_v3(secret: &str, method: &str, url: &str, body: &[u8], timestamp_ms: i64) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(method.as_bytes());
    mac.update(url.as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `X-HubSpot-Signature` version 1: lower-case hex `SHA-256(secret + body)`.
pub fn sign_v1(secret: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(secret.as_bytes());
    hasher.update(body);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The message HubSpot answers 401 with when the token is missing or unknown.
pub(super) const NO_CREDENTIALS: &str = "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview";

/// What the `Authorization` header of a request amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Credentials {
    /// A private-app token or an OAuth access token still valid.
    Valid,
    /// No bearer token, or one the simulator never issued.
    Invalid,
    /// An OAuth access token that expired this long ago.
    Expired(Duration),
}

/// Checks `Authorization: Bearer <token>`.
pub(super) fn check(state: &State, opts: &HubSpotSimOptions, req: &RecordedRequest) -> Credentials {
    let token = req.header("authorization").and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Credentials::Invalid;
    };
    if opts.access_tokens.iter().any(|t| t == token) {
        return Credentials::Valid;
    }
    match state.access_tokens.get(token) {
        Some(issued) => {
            let now = Instant::now();
            if now < issued.expires_at {
                Credentials::Valid
            } else {
                Credentials::Expired(now.duration_since(issued.expires_at))
            }
        }
        None => Credentials::Invalid,
    }
}

/// An OAuth error answer: `{"status": "<CODE>", "message", "correlationId"}`.
fn oauth_error(state: &mut State, status: u16, code: &str, message: &str) -> SimResponse {
    let correlation_id = state.uuid();
    SimResponse::json(
        status,
        &json!({"status": code, "message": message, "correlationId": correlation_id}),
    )
}

/// Issues an access token (and, with `refresh` = `None`, a new refresh token); returns the
/// token answer.
fn issue(state: &mut State, opts: &HubSpotSimOptions, refresh: Option<String>) -> SimResponse {
    let access_token = format!("CJ{}", state.token_chars(110));
    state.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            expires_at: Instant::now() + opts.access_token_lifetime,
        },
    );
    let refresh_token = match refresh {
        Some(r) => r,
        None => {
            let r = format!("na1-{}", state.uuid());
            state.refresh_tokens.insert(r.clone());
            r
        }
    };
    SimResponse::json(
        200,
        &json!({
            "token_type": "bearer",
            "refresh_token": refresh_token,
            "access_token": access_token,
            "expires_in": opts.access_token_lifetime.as_secs(),
        }),
    )
}

/// `POST /oauth/v1/token` (form-encoded): `authorization_code` and `refresh_token` grants.
pub(super) fn token_endpoint(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let opts = &inner.opts;
    let mut state = inner.lock();
    if req.method != "POST" {
        return oauth_error(&mut state, 405, "METHOD_NOT_ALLOWED", "use POST");
    }
    let form = req.form();
    let param = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if param("client_id") != Some(opts.client_id.as_str()) {
        return oauth_error(
            &mut state,
            400,
            "BAD_CLIENT_ID",
            "missing or invalid client_id",
        );
    }
    if param("client_secret") != Some(opts.client_secret.as_str()) {
        return oauth_error(
            &mut state,
            400,
            "BAD_CLIENT_SECRET",
            "missing or invalid client_secret",
        );
    }
    match param("grant_type") {
        Some("authorization_code") => {
            if param("code") != Some(opts.authorization_code.as_str()) {
                return oauth_error(
                    &mut state,
                    400,
                    "BAD_AUTH_CODE",
                    "missing or unknown auth code",
                );
            }
            let Some(redirect_uri) = param("redirect_uri") else {
                return oauth_error(&mut state, 400, "BAD_REDIRECT_URI", "missing redirect_uri");
            };
            if opts
                .redirect_uri
                .as_deref()
                .is_some_and(|expected| expected != redirect_uri)
            {
                return oauth_error(
                    &mut state,
                    400,
                    "BAD_REDIRECT_URI",
                    "redirect_uri does not match initial authorization redirect_uri",
                );
            }
            issue(&mut state, opts, None)
        }
        Some("refresh_token") => {
            let Some(refresh) =
                param("refresh_token").filter(|r| state.refresh_tokens.contains(*r))
            else {
                return oauth_error(
                    &mut state,
                    400,
                    "BAD_REFRESH_TOKEN",
                    "missing or unknown refresh token",
                );
            };
            let refresh = refresh.to_owned();
            state.oauth_refreshes += 1;
            issue(&mut state, opts, Some(refresh))
        }
        _ => oauth_error(
            &mut state,
            400,
            "BAD_GRANT_TYPE",
            "grant_type must be authorization_code or refresh_token",
        ),
    }
}

/// The 401 answer for `credentials` (never `Valid`).
pub(super) fn unauthorized(state: &mut State, credentials: Credentials) -> Value {
    let correlation_id = state.uuid();
    match credentials {
        Credentials::Expired(ago) => json!({
            "status": "error",
            "message": format!("The OAuth token used to make this call expired {} second(s) ago.", ago.as_secs()),
            "correlationId": correlation_id,
            "category": "EXPIRED_AUTHENTICATION",
        }),
        _ => json!({
            "status": "error",
            "message": NO_CREDENTIALS,
            "correlationId": correlation_id,
            "category": "INVALID_AUTHENTICATION",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_matches_the_official_vector() {
        assert_eq!(
            sign_v3(
                "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
                "POST",
                "https://www.example.com/webhook_uri",
                b"{'example_field':'example_value'}",
                1_693_657_560_000,
            ),
            "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
        );
    }

    #[test]
    fn v1_is_sha256_of_secret_and_body() {
        // sha256("abc") (FIPS 180-2 example): secret "a" + body "bc".
        assert_eq!(
            sign_v1("a", b"bc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
