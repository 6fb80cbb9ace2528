//! The accounts server's `POST /oauth/v2/token` (authorization code and refresh grants, the
//! per-refresh-token minting limit) and the `Zoho-oauthtoken` check of API calls.

use chrono::Duration;
use serde_json::{Value, json};

use super::Inner;
use super::model::{AccessToken, State};
use crate::sim::{RecordedRequest, SimResponse};

/// The scopes a token answer names.
pub(super) const SCOPES: &str = "ZohoCRM.modules.ALL ZohoCRM.settings.ALL ZohoCRM.notifications.ALL ZohoSearch.securesearch.READ";

/// The window of the minting limit per refresh token.
pub(super) fn minting_window() -> Duration {
    Duration::minutes(10)
}

/// `401 INVALID_TOKEN`, Zoho's answer to a missing, unknown or expired access token.
pub(super) fn invalid_token() -> Value {
    json!({"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"})
}

/// Whether `Authorization: Zoho-oauthtoken <token>` names an access token that has not expired.
/// Other schemes (`Bearer`) are refused, as by Zoho.
pub(super) fn check(state: &State, req: &RecordedRequest) -> bool {
    let token = req.header("authorization").and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("zoho-oauthtoken")
            .then(|| rest.trim())
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return false;
    };
    state
        .access_tokens
        .get(token)
        .is_some_and(|t| state.now() < t.expires_at)
}

/// An OAuth error: HTTP 200 with `{"error": code}`, as Zoho's accounts server answers.
fn oauth_error(code: &str) -> SimResponse {
    SimResponse::json(200, &json!({ "error": code }))
}

fn issue_access_token(state: &mut State, inner: &Inner) -> String {
    let token = format!("1000.{}.{}", state.hex(32), state.hex(32));
    let expires_at = super::model::later(
        state.now(),
        chrono_duration(inner.opts.access_token_lifetime),
    );
    state
        .access_tokens
        .insert(token.clone(), AccessToken { expires_at });
    token
}

pub(super) fn chrono_duration(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// `POST /oauth/v2/token`: parameters from the query string or a form body (Zoho takes both).
pub(super) fn token_endpoint(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let opts = &inner.opts;
    if req.method != "POST" {
        return SimResponse::json(
            405,
            &json!({"error": "invalid_request", "error_description": "use POST"}),
        );
    }
    let mut params = req.query_pairs();
    params.extend(req.form());
    let param = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let mut state = inner.lock();
    if param("client_id") != Some(opts.client_id.as_str())
        || param("client_secret") != Some(opts.client_secret.as_str())
    {
        return oauth_error("invalid_client");
    }
    let api_domain = inner.base_url();
    match param("grant_type") {
        Some("authorization_code") => {
            if param("code") != Some(opts.authorization_code.as_str()) {
                return oauth_error("invalid_code");
            }
            if param("redirect_uri").is_none() {
                return oauth_error("invalid_redirect_uri");
            }
            let refresh_token = format!("1000.{}.{}", state.hex(32), state.hex(32));
            state
                .refresh_tokens
                .insert(refresh_token.clone(), Default::default());
            let access_token = issue_access_token(&mut state, inner);
            SimResponse::json(
                200,
                &json!({
                    "access_token": access_token,
                    "refresh_token": refresh_token,
                    "scope": SCOPES,
                    "api_domain": api_domain,
                    "token_type": "Bearer",
                    "expires_in": opts.access_token_lifetime.as_secs(),
                }),
            )
        }
        Some("refresh_token") => {
            let Some(refresh) = param("refresh_token").map(str::to_owned) else {
                return oauth_error("invalid_code");
            };
            let now = state.now();
            let cutoff = now - minting_window();
            let Some(minted) = state.refresh_tokens.get_mut(&refresh) else {
                return oauth_error("invalid_code");
            };
            while minted.front().is_some_and(|t| *t <= cutoff) {
                minted.pop_front();
            }
            if minted.len() >= opts.max_tokens_per_refresh_token {
                return SimResponse::json(
                    400,
                    &json!({
                        "error_description": "You have made too many requests continuously. Please try again after some time.",
                        "error": "Access Denied",
                        "status": "failure",
                    }),
                );
            }
            minted.push_back(now);
            state.token_refreshes += 1;
            let access_token = issue_access_token(&mut state, inner);
            SimResponse::json(
                200,
                &json!({
                    "access_token": access_token,
                    "scope": SCOPES,
                    "api_domain": api_domain,
                    "token_type": "Bearer",
                    "expires_in": opts.access_token_lifetime.as_secs(),
                }),
            )
        }
        _ => oauth_error("unsupported_grant_type"),
    }
}
