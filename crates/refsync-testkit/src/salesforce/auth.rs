//! OAuth: `POST /services/oauth2/token` (authorization code, refresh token and JWT bearer
//! grants; the RS256 assertion is verified here with the `rsa` crate, independently of any
//! connector code), the session check of API calls, and the identity endpoints.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::model::{State, USER_ID};
use super::{API_VERSION, Inner, JWT_CLOCK_SKEW, JWT_MAX_LIFETIME};
use crate::sim::{RecordedRequest, SimResponse};

/// The audiences a JWT assertion may name besides the simulator's own base URL.
pub(super) const LOGIN_AUDIENCES: [&str; 2] = [
    "https://login.salesforce.com",
    "https://test.salesforce.com",
];

/// The scope of tokens of the code and refresh grants.
const SCOPE: &str = "api refresh_token";

/// Reads an RSA public key from PEM: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`) or PKCS#1
/// (`BEGIN RSA PUBLIC KEY`).
pub(super) fn parse_public_key(pem: &str) -> Result<RsaPublicKey, String> {
    RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
        .map_err(|e| format!("not an RSA public key in PEM: {e}"))
}

/// Signs `claims` as an RS256 JWT (header `{"alg":"RS256","typ":"JWT"}`) with an RSA private
/// key in PEM (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA PRIVATE KEY`), for tests that
/// craft their own assertions (see [`super::TEST_PRIVATE_KEY_PEM`]).
pub fn sign_jwt(private_key_pem: &str, claims: &Value) -> Result<String, String> {
    let key = RsaPrivateKey::from_pkcs8_pem(private_key_pem.trim())
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(private_key_pem.trim()))
        .map_err(|e| format!("not an RSA private key in PEM: {e}"))?;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let digest = Sha256::digest(signing_input.as_bytes());
    let signature = key
        .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
        .map_err(|e| format!("signing failed: {e}"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// `400 {"error", "error_description"}`, Salesforce's OAuth error answer.
fn oauth_error(error: &str, description: &str) -> SimResponse {
    SimResponse::json(
        400,
        &json!({"error": error, "error_description": description}),
    )
}

/// `401 [{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`.
pub(super) fn invalid_session() -> SimResponse {
    SimResponse::json(
        401,
        &json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
    )
}

/// The bearer token of `Authorization: Bearer <token>` (or the older `OAuth <token>`).
pub(super) fn bearer(req: &RecordedRequest) -> Option<&str> {
    let (scheme, token) = req.header("authorization")?.trim().split_once(' ')?;
    let token = token.trim();
    ((scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        && !token.is_empty())
    .then_some(token)
}

/// Whether the request carries a session that works.
pub(super) fn check(state: &State, inner: &Inner, req: &RecordedRequest) -> bool {
    bearer(req).is_some_and(|t| state.session_valid(t, inner.opts.session_lifetime))
}

/// `{base}/id/{org}/{user}`: the identity URL (`id` of token answers).
pub(super) fn identity_url(inner: &Inner) -> String {
    format!(
        "{}/id/{}/{USER_ID}",
        inner.base_url(),
        inner.opts.organization_id
    )
}

/// The common part of a token answer.
fn token_answer(inner: &Inner, state: &mut State, with_signature: bool) -> Value {
    let org15 = &inner.opts.organization_id[..15];
    let access_token = state.issue_session(org15);
    let id = identity_url(inner);
    let mut answer = json!({
        "access_token": access_token,
        "instance_url": inner.base_url(),
        "id": id,
        "token_type": "Bearer",
    });
    if with_signature {
        let issued_at = state.now().timestamp_millis().to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(inner.opts.client_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(issued_at.as_bytes());
        answer["issued_at"] = json!(issued_at);
        answer["signature"] = json!(STANDARD.encode(mac.finalize().into_bytes()));
        answer["scope"] = json!(SCOPE);
    } else {
        answer["scope"] = json!("api");
    }
    answer
}

/// `POST /services/oauth2/token` (form-encoded).
pub(super) fn token_endpoint(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let opts = &inner.opts;
    let mut state = inner.lock();
    state.token_requests += 1;
    if req.method != "POST" {
        return SimResponse::json(
            405,
            &json!({"error": "invalid_request", "error_description": "must use HTTP POST"}),
        );
    }
    let form = req.form();
    let param = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let client_ok = || -> Result<(), SimResponse> {
        if param("client_id") != Some(opts.client_id.as_str()) {
            return Err(oauth_error(
                "invalid_client_id",
                "client identifier invalid",
            ));
        }
        if param("client_secret") != Some(opts.client_secret.as_str()) {
            return Err(oauth_error("invalid_client", "invalid client credentials"));
        }
        Ok(())
    };
    match param("grant_type") {
        Some("authorization_code") => {
            if let Err(e) = client_ok() {
                return e;
            }
            if param("redirect_uri").is_none() {
                return oauth_error(
                    "redirect_uri_mismatch",
                    "redirect_uri must match configuration",
                );
            }
            if param("code") != Some(opts.authorization_code.as_str()) {
                return oauth_error("invalid_grant", "authentication failure");
            }
            const REFRESH_CHARS: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
            let refresh_token = format!("5Aep861{}", state.random(80, REFRESH_CHARS));
            state.refresh_tokens.insert(refresh_token.clone());
            let mut answer = token_answer(inner, &mut state, true);
            answer["refresh_token"] = json!(refresh_token);
            SimResponse::json(200, &answer)
        }
        Some("refresh_token") => {
            if let Err(e) = client_ok() {
                return e;
            }
            let known = param("refresh_token").is_some_and(|t| state.refresh_tokens.contains(t));
            if !known {
                return oauth_error("invalid_grant", "expired access/refresh token");
            }
            SimResponse::json(200, &token_answer(inner, &mut state, true))
        }
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let now = state.now().timestamp();
            match check_assertion(inner, param("assertion").unwrap_or(""), now) {
                Ok(()) => SimResponse::json(200, &token_answer(inner, &mut state, false)),
                Err(e) => e,
            }
        }
        _ => oauth_error("unsupported_grant_type", "grant type not supported"),
    }
}

/// Verifies a JWT bearer assertion at `now` (Unix seconds): RS256 signature with the app's
/// certificate key, then `iss`, `aud`, `exp`, `sub`.
fn check_assertion(inner: &Inner, assertion: &str, now: i64) -> Result<(), SimResponse> {
    let invalid = || oauth_error("invalid_grant", "invalid assertion");
    let parts: Vec<&str> = assertion.trim().split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(invalid());
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('='));
    let header: Value = decode(header)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(invalid());
    }
    let signature = decode(signature).map_err(|_| invalid())?;
    let signing_input = &assertion.trim()[..assertion.trim().rfind('.').unwrap_or(0)];
    let digest = Sha256::digest(signing_input.as_bytes());
    inner
        .jwt_key
        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
        .map_err(|_| invalid())?;
    let claims: Value = decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .ok_or_else(invalid)?;
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if claim("iss") != Some(inner.opts.client_id.as_str()) {
        return Err(oauth_error(
            "invalid_client_id",
            "client identifier invalid",
        ));
    }
    let base = inner.base_url();
    let audience_ok = claim("aud").is_some_and(|aud| {
        let aud = aud.trim_end_matches('/');
        aud == base || LOGIN_AUDIENCES.contains(&aud)
    });
    if !audience_ok {
        return Err(oauth_error("invalid_grant", "audience is invalid"));
    }
    let exp = claims
        .get("exp")
        .and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f as i64)))
        .ok_or_else(invalid)?;
    let skew = JWT_CLOCK_SKEW.as_secs() as i64;
    if exp <= now - skew {
        return Err(oauth_error("invalid_grant", "expired authorization code"));
    }
    if exp > now + JWT_MAX_LIFETIME.as_secs() as i64 + skew {
        return Err(invalid());
    }
    if claim("sub") != Some(inner.opts.jwt_username.as_str()) {
        return Err(oauth_error(
            "invalid_grant",
            "user hasn't approved this consumer",
        ));
    }
    Ok(())
}

/// `GET /services/oauth2/userinfo` and `GET /id/{org}/{user}` with a valid session: who the
/// token belongs to. Other tokens get `403 Bad_OAuth_Token`.
pub(super) fn identity(inner: &Inner, req: &RecordedRequest) -> SimResponse {
    let state = inner.lock();
    if !check(&state, inner, req) {
        return SimResponse::text(403, "Bad_OAuth_Token");
    }
    let opts = &inner.opts;
    let base = inner.base_url();
    let org15 = &opts.organization_id[..15];
    let urls = json!({
        "enterprise": format!("{base}/services/Soap/c/{API_VERSION}/{org15}"),
        "partner": format!("{base}/services/Soap/u/{API_VERSION}/{org15}"),
        "rest": format!("{base}/services/data/v{{version}}/"),
        "sobjects": format!("{base}/services/data/v{{version}}/sobjects/"),
        "query": format!("{base}/services/data/v{{version}}/query/"),
    });
    let id = identity_url(inner);
    if req.path.starts_with("/id/") {
        if req.path.trim_end_matches('/') != format!("/id/{}/{USER_ID}", opts.organization_id) {
            return SimResponse::text(404, "Not Found");
        }
        return SimResponse::json(
            200,
            &json!({
                "id": id,
                "asserted_user": true,
                "user_id": USER_ID,
                "organization_id": opts.organization_id,
                "username": opts.jwt_username,
                "nick_name": "integration",
                "display_name": "Integration User",
                "email": opts.jwt_username,
                "active": true,
                "user_type": "STANDARD",
                "urls": urls,
            }),
        );
    }
    SimResponse::json(
        200,
        &json!({
            "sub": id,
            "user_id": USER_ID,
            "organization_id": opts.organization_id,
            "preferred_username": opts.jwt_username,
            "nickname": "integration",
            "name": "Integration User",
            "email": opts.jwt_username,
            "active": true,
            "user_type": "STANDARD",
            "urls": urls,
        }),
    )
}
