//! REST API authentication as `WC_REST_Authentication` does it: HTTP Basic / query keys over
//! HTTPS, OAuth 1.0a one-legged signatures otherwise (and as a fallback over HTTPS).
//!
//! The OAuth verifier is written from the behaviour of `class-wc-rest-authentication.php`
//! (`get_oauth_parameters`, `check_oauth_signature`, `normalize_parameters`,
//! `join_with_equals_sign`, `check_oauth_timestamp_and_nonce`), independently of any signer in
//! the workspace.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::WooSimOptions;
use super::model::State;
use crate::sim::{RecordedRequest, SimResponse, percent_decode};

/// The timestamp window and nonce memory (15 minutes).
pub(super) const OAUTH_WINDOW_SECS: i64 = 15 * 60;

/// The outcome of authentication.
#[derive(Debug)]
pub(super) enum Auth {
    /// Valid credentials.
    Authenticated,
    /// No credentials at all: the permission check of the route answers (401).
    Anonymous,
    /// Credentials that failed: answered before routing.
    Failed(SimResponse),
}

/// A WordPress REST error response `{"code","message","data":{"status"}}`.
pub(super) fn wp_error(status: u16, code: &str, message: &str) -> SimResponse {
    wp_error_with(status, code, message, json!({"status": status}))
}

pub(super) fn wp_error_with(status: u16, code: &str, message: &str, data: Value) -> SimResponse {
    let mut body = json!({"code": code, "message": message});
    body["data"] = data;
    SimResponse {
        status,
        headers: vec![(
            "content-type".to_owned(),
            "application/json; charset=UTF-8".to_owned(),
        )],
        body: super::events::php_json(&body).into_bytes(),
    }
}

fn auth_error(message: &str) -> Auth {
    Auth::Failed(wp_error(
        401,
        "woocommerce_rest_authentication_error",
        message,
    ))
}

/// PHP's `rawurlencode`: RFC 3986 unreserved characters kept, every other byte `%XX` (upper
/// case).
pub(super) fn rawurlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The OAuth 1.0a string to sign, as WooCommerce builds it:
/// `METHOD&rawurlencode(base_url)&k1%3Dv1%26k2%3Dv2...` where the parameters (without
/// `oauth_signature`) are sorted by key (byte order) and each key and value is
/// `rawurlencode(rawurldecode(x))` with `%` then encoded again as `%25`.
pub(super) fn string_to_sign(
    method: &str,
    base_url: &str,
    params: &BTreeMap<String, String>,
) -> String {
    let pairs: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "oauth_signature")
        .map(|(k, v)| {
            let k = rawurlencode(&percent_decode(k, false)).replace('%', "%25");
            let v = rawurlencode(&percent_decode(v, false)).replace('%', "%25");
            format!("{k}%3D{v}")
        })
        .collect();
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        rawurlencode(base_url),
        pairs.join("%26")
    )
}

/// `base64(HMAC-<algo>(consumer_secret + "&", string_to_sign))`; `None` for an unsupported
/// method.
pub(super) fn oauth_signature(method: &str, consumer_secret: &str, base: &str) -> Option<String> {
    let key = format!("{consumer_secret}&");
    match method {
        "HMAC-SHA1" => Some(refsync_http::signature::hmac_sha1_base64(
            key.as_bytes(),
            base.as_bytes(),
        )),
        "HMAC-SHA256" => Some(refsync_http::signature::hmac_sha256_base64(
            key.as_bytes(),
            base.as_bytes(),
        )),
        _ => None,
    }
}

/// `$_GET` merged with `$_POST` (form bodies) and the `Authorization: OAuth ...` parameters,
/// later sources overriding earlier ones, last value of a repeated name winning.
fn oauth_params(req: &RecordedRequest) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = req.query_pairs().into_iter().collect();
    let is_form = req.header("content-type").is_some_and(|ct| {
        ct.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if is_form {
        params.extend(req.form());
    }
    if let Some(header) = req.header("authorization") {
        let header = header.trim();
        if header.len() > 6 && header[..6].eq_ignore_ascii_case("oauth ") {
            for part in header[6..].split(',') {
                let Some((k, v)) = part.trim().split_once('=') else {
                    continue;
                };
                let k = percent_decode(k.trim(), false);
                let v = percent_decode(v.trim().trim_matches('"'), false);
                if k.starts_with("oauth_") {
                    params.insert(k, v);
                }
            }
        }
    }
    params
}

/// PHP's `empty()` on a string.
fn php_empty(v: Option<&String>) -> bool {
    v.is_none_or(|v| v.is_empty() || v == "0")
}

fn basic_credentials(req: &RecordedRequest) -> Option<(String, String)> {
    let query = req.query_pairs();
    let get = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if let (Some(key), Some(secret)) = (get("consumer_key"), get("consumer_secret")) {
        if !key.is_empty() && !secret.is_empty() {
            return Some((key, secret));
        }
    }
    let header = req.header("authorization")?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (!user.is_empty() && !password.is_empty()).then(|| (user.to_owned(), password.to_owned()))
}

/// Authenticates `req`. `base_url` is `http://127.0.0.1:PORT`; with `opts.https` the OAuth base
/// URL uses `https://` (WooCommerce signs with the scheme the store sees). `now` is the Unix
/// time.
pub(super) fn authenticate(
    opts: &WooSimOptions,
    base_url: &str,
    state: &mut State,
    req: &RecordedRequest,
    now: i64,
) -> Auth {
    if opts.https {
        if let Some((key, secret)) = basic_credentials(req) {
            if key != opts.consumer_key {
                return auth_error("Consumer key is invalid.");
            }
            if !refsync_http::signature::constant_time_eq(
                secret.as_bytes(),
                opts.consumer_secret.as_bytes(),
            ) {
                return auth_error("Consumer secret is invalid.");
            }
            return Auth::Authenticated;
        }
    }

    let params = oauth_params(req);
    const REQUIRED: [&str; 5] = [
        "oauth_consumer_key",
        "oauth_timestamp",
        "oauth_nonce",
        "oauth_signature",
        "oauth_signature_method",
    ];
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|name| php_empty(params.get(*name)))
        .collect();
    if missing.len() == REQUIRED.len() {
        return Auth::Anonymous;
    }
    if !missing.is_empty() {
        let noun = if missing.len() == 1 {
            "parameter"
        } else {
            "parameters"
        };
        return Auth::Failed(wp_error(
            401,
            "woocommerce_rest_authentication_missing_parameter",
            &format!("Missing OAuth {noun} {}", missing.join(", ")),
        ));
    }
    let get = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    if get("oauth_consumer_key") != opts.consumer_key {
        return auth_error("Consumer key is invalid.");
    }

    let url_base = if opts.https {
        base_url.replacen("http://", "https://", 1)
    } else {
        base_url.to_owned()
    };
    let base = string_to_sign(&req.method, &format!("{url_base}{}", req.path), &params);
    let provided = percent_decode(&get("oauth_signature").replace(' ', "+"), false);
    let Some(expected) =
        oauth_signature(get("oauth_signature_method"), &opts.consumer_secret, &base)
    else {
        return auth_error("Invalid signature - signature method is invalid.");
    };
    if !refsync_http::signature::constant_time_eq(expected.as_bytes(), provided.as_bytes()) {
        return auth_error("Invalid signature - provided signature does not match.");
    }

    let Ok(timestamp) = get("oauth_timestamp").trim().parse::<i64>() else {
        return auth_error("Invalid timestamp.");
    };
    if timestamp < now - OAUTH_WINDOW_SECS || timestamp > now + OAUTH_WINDOW_SECS {
        return auth_error("Invalid timestamp.");
    }
    let nonce = get("oauth_nonce").to_owned();
    let used = state.nonces.entry(opts.consumer_key.clone()).or_default();
    used.retain(|(_, ts)| *ts >= now - OAUTH_WINDOW_SECS);
    if used.iter().any(|(n, _)| *n == nonce) {
        return auth_error("Invalid nonce - nonce has already been used.");
    }
    used.push((nonce, timestamp));
    Auth::Authenticated
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ck_4b1d";
    const SECRET: &str = "cs_s3cr3t";

    fn opts(https: bool) -> WooSimOptions {
        WooSimOptions {
            https,
            ..WooSimOptions::new(KEY, SECRET)
        }
    }

    fn request(method: &str, path: &str, query: &str) -> RecordedRequest {
        RecordedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: Some(query.to_owned()),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The base string of this request, written out by hand:
    ///
    /// - method `GET`;
    /// - base URL `http://127.0.0.1:8080/wp-json/wc/v3/customers`, rawurlencoded:
    ///   `http%3A%2F%2F127.0.0.1%3A8080%2Fwp-json%2Fwc%2Fv3%2Fcustomers`;
    /// - parameters sorted by key: `email=a+b@example.com` (sent as `a%2Bb%40example.com`),
    ///   `oauth_consumer_key=ck_4b1d`, `oauth_nonce=n0nce`, `oauth_signature_method=HMAC-SHA1`,
    ///   `oauth_timestamp=1700000000`, `per_page=5`; each value rawurlencoded (`a%2Bb%40example.com`),
    ///   then `key=value` rawurlencoded again (`=` → `%3D`, `%` → `%25`), joined with `%26`.
    const HAND_BASE: &str = "GET&http%3A%2F%2F127.0.0.1%3A8080%2Fwp-json%2Fwc%2Fv3%2Fcustomers&\
        email%3Da%252Bb%2540example.com%26\
        oauth_consumer_key%3Dck_4b1d%26\
        oauth_nonce%3Dn0nce%26\
        oauth_signature_method%3DHMAC-SHA1%26\
        oauth_timestamp%3D1700000000%26\
        per_page%3D5";

    /// base64(HMAC-SHA1("cs_s3cr3t&", HAND_BASE)), computed outside Rust with
    /// `printf '%s' "$BASE" | openssl dgst -sha1 -hmac 'cs_s3cr3t&' -binary | base64`.
    const HAND_SIGNATURE: &str = "UO/Z+82ROa2petjWOMaB1dmcOoI=";

    const QUERY: &str = "per_page=5&email=a%2Bb%40example.com&oauth_consumer_key=ck_4b1d\
        &oauth_timestamp=1700000000&oauth_nonce=n0nce&oauth_signature_method=HMAC-SHA1";

    #[test]
    fn base_string_matches_the_hand_computed_vector() {
        let req = request("GET", "/wp-json/wc/v3/customers", QUERY);
        let params = oauth_params(&req);
        let base = string_to_sign(
            "GET",
            "http://127.0.0.1:8080/wp-json/wc/v3/customers",
            &params,
        );
        assert_eq!(base, HAND_BASE);
        assert_eq!(
            oauth_signature("HMAC-SHA1", SECRET, &base).as_deref(),
            Some(HAND_SIGNATURE)
        );
    }

    #[test]
    fn verifier_accepts_the_vector_once_and_checks_timestamp() {
        let mut state = State::new();
        let signed = format!("{QUERY}&oauth_signature={}", rawurlencode(HAND_SIGNATURE));
        let req = request("GET", "/wp-json/wc/v3/customers", &signed);
        let base_url = "http://127.0.0.1:8080";
        let now = 1_700_000_000 + 60;
        assert!(matches!(
            authenticate(&opts(false), base_url, &mut state, &req, now),
            Auth::Authenticated
        ));
        let again = authenticate(&opts(false), base_url, &mut state, &req, now);
        assert!(
            matches!(&again, Auth::Failed(r) if String::from_utf8_lossy(&r.body).contains("nonce has already been used")),
            "{again:?}"
        );
        let stale = authenticate(
            &opts(false),
            base_url,
            &mut State::new(),
            &req,
            1_700_000_000 + OAUTH_WINDOW_SECS + 1,
        );
        assert!(
            matches!(&stale, Auth::Failed(r) if String::from_utf8_lossy(&r.body).contains("Invalid timestamp.")),
            "{stale:?}"
        );
        // Over HTTPS the base URL is https://, so the http:// signature no longer matches.
        let https = authenticate(&opts(true), base_url, &mut State::new(), &req, now);
        assert!(
            matches!(&https, Auth::Failed(r) if String::from_utf8_lossy(&r.body).contains("signature does not match")),
            "{https:?}"
        );
        // A '+' sent unencoded in the signature decodes to a space; WooCommerce restores it.
        let plus = format!("{QUERY}&oauth_signature={HAND_SIGNATURE}");
        let req = request("GET", "/wp-json/wc/v3/customers", &plus);
        assert!(matches!(
            authenticate(&opts(false), base_url, &mut State::new(), &req, now),
            Auth::Authenticated
        ));
    }

    #[test]
    fn rawurlencode_is_rfc3986() {
        assert_eq!(
            rawurlencode("a-b.c_d~e f+g/é"),
            "a-b.c_d~e%20f%2Bg%2F%C3%A9"
        );
    }
}
