//! HTTP status → [`ErrorKind`] in one place, `Retry-After` and vendor rate-limit headers, and
//! the error built from a non-2xx vendor response.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use refsync_core::{Error, ErrorKind};
use serde_json::Value;

use crate::signature::excerpt;

/// Longest vendor message (in characters) copied into an error.
pub const MAX_VENDOR_MESSAGE_CHARS: usize = 300;

/// Maps an HTTP status to the [`ErrorKind`] a caller acts on.
///
/// | status | kind |
/// |---|---|
/// | 1xx, 2xx, 3xx | `None` for 2xx/3xx; 1xx and anything outside 100..=599 → `Unexpected` |
/// | 400, 422 and every 4xx not listed | `Validation` |
/// | 401 | `Unauthorized` |
/// | 403 | `Forbidden` |
/// | 404, 410 | `NotFound` |
/// | 408 | `Unavailable` |
/// | 409 | `Conflict` |
/// | 429 | `RateLimited { retry_after }` |
/// | 5xx | `Unavailable` |
pub fn error_kind_for_status(status: u16, retry_after: Option<Duration>) -> Option<ErrorKind> {
    Some(match status {
        200..=399 => return None,
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 | 410 => ErrorKind::NotFound,
        408 => ErrorKind::Unavailable,
        409 => ErrorKind::Conflict,
        429 => ErrorKind::RateLimited { retry_after },
        400..=499 => ErrorKind::Validation,
        500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Unexpected,
    })
}

/// Parses a `Retry-After` value: delta-seconds (an integer, or a decimal number as some servers
/// send) or an HTTP-date (a date in the past means "now": zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = value.parse().ok()?;
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How long the upstream asks us to wait, from the response headers.
///
/// Consulted in this order, first usable value wins:
///
/// 1. `Retry-After` (RFC 9110: delta-seconds or HTTP-date), see [`parse_retry_after`].
/// 2. `RateLimit` (IETF httpapi draft structured form, e.g. `"default";r=0;t=10`): the `t`
///    parameter in seconds.
/// 3. `RateLimit-Reset` (IETF draft, Rewardful), `X-RateLimit-Reset` (Pipedrive burst window,
///    Intercom, GitHub-style), `X-Rate-Limit-Reset`: a number that is
///    - seconds until the reset when below 10^9,
///    - a unix epoch in seconds when between 10^9 and 10^11,
///    - a unix epoch in milliseconds above 10^11.
///
///    An epoch in the past gives zero.
/// 4. HubSpot: when `X-HubSpot-RateLimit-Remaining` is `0`,
///    `X-HubSpot-RateLimit-Interval-Milliseconds` (the rolling window length: an upper bound).
///
/// Unparseable values are skipped. Zoho and Salesforce send no usable reset header.
pub fn retry_after_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());

    if let Some(d) = get("retry-after").and_then(|v| parse_retry_after(v, now)) {
        return Some(d);
    }
    if let Some(d) = get("ratelimit").and_then(parse_structured_ratelimit) {
        return Some(d);
    }
    for name in ["ratelimit-reset", "x-ratelimit-reset", "x-rate-limit-reset"] {
        if let Some(d) = get(name).and_then(|v| parse_reset(v, now)) {
            return Some(d);
        }
    }
    if get("x-hubspot-ratelimit-remaining").map(str::trim) == Some("0") {
        if let Some(ms) = get("x-hubspot-ratelimit-interval-milliseconds")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    None
}

fn parse_structured_ratelimit(value: &str) -> Option<Duration> {
    value
        .split([';', ','])
        .filter_map(|param| param.trim().split_once('='))
        .find(|(k, _)| k.trim() == "t")
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn parse_reset(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let n: f64 = value.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    let secs = if n < 1e9 {
        n
    } else if n < 1e11 {
        (n - now_secs).max(0.0)
    } else {
        (n / 1000.0 - now_secs).max(0.0)
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Longest vendor body (in bytes) kept in an [`ErrorResponse`].
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The non-2xx answer behind an [`Error`] returned by
/// [`HttpClient::send`](crate::HttpClient::send): its status and body, for callers that read
/// vendor-specific error details (field messages, error codes). Credentials the client sent are
/// scrubbed from the body; it is cut to [`MAX_ERROR_BODY_BYTES`]. `Display` shows only the
/// status. Reach it with [`error_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    status: u16,
    body: String,
}

impl ErrorResponse {
    pub(crate) fn new(status: u16, mut body: String) -> Self {
        if body.len() > MAX_ERROR_BODY_BYTES {
            let mut end = MAX_ERROR_BODY_BYTES;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
        }
        ErrorResponse { status, body }
    }
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// The response body (credentials scrubbed, cut to [`MAX_ERROR_BODY_BYTES`]).
    pub fn body(&self) -> &str {
        &self.body
    }
    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} response", self.status)
    }
}

impl std::error::Error for ErrorResponse {}

/// The upstream's answer behind `error`, when it came from a non-2xx HTTP response (and not
/// from a timeout, a connection failure or a local check).
pub fn error_response(error: &Error) -> Option<&ErrorResponse> {
    std::error::Error::source(error)?.downcast_ref::<ErrorResponse>()
}

/// Builds the error for a non-2xx response.
///
/// Kind from [`error_kind_for_status`] (with [`retry_after_from_headers`] for 429); message
/// `HTTP 422 from <connector>: <vendor message>`, where the vendor message is taken from a JSON
/// body's `message` / `error` / `error_description` / `errors` fields when present (the shapes of
/// HubSpot, Pipedrive, Zoho, Salesforce, Intercom, Stripe, WooCommerce, Referral Factory and
/// OAuth), else an excerpt of the body; either way cut to [`MAX_VENDOR_MESSAGE_CHARS`] characters.
/// The error carries `connector` and `operation` as context.
pub fn error_from_response(
    connector: &str,
    operation: &'static str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Error {
    let (kind, message) = error_parts(connector, status, headers, body, SystemTime::now());
    Error::new(kind, message)
        .with_connector(connector)
        .with_operation(operation)
}

pub(crate) fn error_parts(
    connector: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> (ErrorKind, String) {
    let retry_after = if status == 429 {
        retry_after_from_headers(headers, now)
    } else {
        None
    };
    let kind = error_kind_for_status(status, retry_after).unwrap_or(ErrorKind::Unexpected);
    if (300..400).contains(&status) {
        return (
            kind,
            format!(
                "HTTP {status} from {connector}: redirects are not followed (credentials must not travel to another URL); configure the final URL"
            ),
        );
    }
    let vendor = vendor_message(body).unwrap_or_else(|| {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no response body")
            .to_owned()
    });
    (kind, format!("HTTP {status} from {connector}: {vendor}"))
}

/// The vendor's own words from an error body, cut to [`MAX_VENDOR_MESSAGE_CHARS`].
fn vendor_message(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let message = match serde_json::from_str::<Value>(text) {
        Ok(json) => json_message(&json).unwrap_or_else(|| collapse_whitespace(text)),
        Err(_) => collapse_whitespace(text),
    };
    if message.is_empty() {
        return None;
    }
    Some(excerpt(&message, MAX_VENDOR_MESSAGE_CHARS))
}

fn json_message(json: &Value) -> Option<String> {
    match json {
        // Salesforce: [{"message": "...", "errorCode": "..."}]
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(json_message).collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        Value::Object(map) => {
            let mut parts: Vec<String> = Vec::new();
            let code = ["code", "errorCode", "error_code", "errorType"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str))
                .filter(|c| !c.trim().is_empty());
            let description = map.get("error_description").and_then(scalar_text);
            let primary = map
                .get("message")
                .and_then(scalar_text)
                .or_else(|| match map.get("error") {
                    // Stripe: {"error": {"message": ...}}
                    Some(inner @ Value::Object(_)) => json_message(inner),
                    // OAuth: {"error": "invalid_grant", "error_description": "..."}
                    Some(v) => scalar_text(v).map(|e| match &description {
                        Some(d) => format!("{e}: {d}"),
                        None => e,
                    }),
                    None => None,
                })
                .or_else(|| description.clone())
                .or_else(|| map.get("detail").and_then(scalar_text));
            match (code, primary) {
                (Some(code), Some(msg)) if !msg.contains(code) => {
                    parts.push(format!("{msg} ({code})"))
                }
                (_, Some(msg)) => parts.push(msg),
                (Some(code), None) => parts.push(code.to_owned()),
                (None, None) => {}
            }
            if let Some(errors) = map.get("errors") {
                let details = errors_detail(errors);
                if !details.is_empty() {
                    parts.push(details);
                }
            }
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        _ => None,
    }
}

/// `errors` as an array of strings/objects (Intercom, HubSpot) or a field → messages map
/// (Laravel style, Referral Factory).
fn errors_detail(errors: &Value) -> String {
    match errors {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Object(_) => json_message(item),
                other => scalar_text(other),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(map) => map
            .iter()
            .map(|(field, v)| {
                let msgs = match v {
                    Value::Array(items) => items
                        .iter()
                        .filter_map(scalar_text)
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => scalar_text(other).unwrap_or_default(),
                };
                format!("{field}: {msgs}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => scalar_text(other).unwrap_or_default(),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(collapse_whitespace(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn status_table() {
        let ra = Some(Duration::from_secs(7));
        let table: &[(u16, Option<ErrorKind>)] = &[
            (200, None),
            (201, None),
            (204, None),
            (301, None),
            (304, None),
            (400, Some(ErrorKind::Validation)),
            (401, Some(ErrorKind::Unauthorized)),
            (403, Some(ErrorKind::Forbidden)),
            (404, Some(ErrorKind::NotFound)),
            (405, Some(ErrorKind::Validation)),
            (408, Some(ErrorKind::Unavailable)),
            (409, Some(ErrorKind::Conflict)),
            (410, Some(ErrorKind::NotFound)),
            (413, Some(ErrorKind::Validation)),
            (422, Some(ErrorKind::Validation)),
            (423, Some(ErrorKind::Validation)),
            (429, Some(ErrorKind::RateLimited { retry_after: ra })),
            (500, Some(ErrorKind::Unavailable)),
            (502, Some(ErrorKind::Unavailable)),
            (503, Some(ErrorKind::Unavailable)),
            (504, Some(ErrorKind::Unavailable)),
            (599, Some(ErrorKind::Unavailable)),
            (100, Some(ErrorKind::Unexpected)),
            (0, Some(ErrorKind::Unexpected)),
            (600, Some(ErrorKind::Unexpected)),
        ];
        for (status, kind) in table {
            assert_eq!(&error_kind_for_status(*status, ra), kind, "status {status}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = at(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        // 1_700_000_000 = Tue, 14 Nov 2023 22:13:20 GMT
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "soon", "-1", "1e3", "Tue, 99 Nov 2023", "NaN", "."] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn vendor_rate_headers() {
        let now = at(1_700_000_000);
        let h = |pairs| retry_after_from_headers(&headers(pairs), now);
        assert_eq!(h(&[("retry-after", "3")]), Some(Duration::from_secs(3)));
        // Retry-After wins over vendor headers.
        assert_eq!(
            h(&[("retry-after", "3"), ("x-ratelimit-reset", "60")]),
            Some(Duration::from_secs(3))
        );
        // Unparseable Retry-After falls through.
        assert_eq!(
            h(&[("retry-after", "later"), ("x-ratelimit-reset", "2")]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            h(&[("ratelimit", "\"default\";r=0;t=10")]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            h(&[("ratelimit-reset", "17")]),
            Some(Duration::from_secs(17))
        );
        // Pipedrive burst window: seconds until reset.
        assert_eq!(
            h(&[("x-ratelimit-reset", "2")]),
            Some(Duration::from_secs(2))
        );
        // Intercom / GitHub: unix epoch seconds.
        assert_eq!(
            h(&[("x-ratelimit-reset", "1700000045")]),
            Some(Duration::from_secs(45))
        );
        // Epoch milliseconds.
        assert_eq!(
            h(&[("x-rate-limit-reset", "1700000001500")]),
            Some(Duration::from_millis(1500))
        );
        // Epoch in the past.
        assert_eq!(
            h(&[("x-ratelimit-reset", "1600000000")]),
            Some(Duration::ZERO)
        );
        assert_eq!(
            h(&[
                ("x-hubspot-ratelimit-remaining", "0"),
                ("x-hubspot-ratelimit-interval-milliseconds", "10000")
            ]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            h(&[
                ("x-hubspot-ratelimit-remaining", "5"),
                ("x-hubspot-ratelimit-interval-milliseconds", "10000")
            ]),
            None
        );
        assert_eq!(h(&[]), None);
    }

    fn message_for(status: u16, body: &str) -> String {
        error_from_response(
            "acme",
            "push_referral",
            status,
            &HeaderMap::new(),
            body.as_bytes(),
        )
        .message()
        .to_owned()
    }

    #[test]
    fn vendor_messages() {
        assert_eq!(
            message_for(
                422,
                r#"{"status":"error","message":"Property values were not valid","correlationId":"x"}"#
            ),
            "HTTP 422 from acme: Property values were not valid"
        );
        assert_eq!(
            message_for(
                400,
                r#"{"success":false,"error":"Field 'name' is required","error_info":"see docs"}"#
            ),
            "HTTP 400 from acme: Field 'name' is required"
        );
        assert_eq!(
            message_for(
                400,
                r#"[{"message":"Required fields are missing: [LastName]","errorCode":"REQUIRED_FIELD_MISSING","fields":["LastName"]}]"#
            ),
            "HTTP 400 from acme: Required fields are missing: [LastName] (REQUIRED_FIELD_MISSING)"
        );
        assert_eq!(
            message_for(
                401,
                r#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#
            ),
            "HTTP 401 from acme: invalid oauth token (INVALID_TOKEN)"
        );
        assert_eq!(
            message_for(
                400,
                r#"{"error":{"type":"invalid_request_error","message":"No such customer: 'cus_1'"}}"#
            ),
            "HTTP 400 from acme: No such customer: 'cus_1'"
        );
        assert_eq!(
            message_for(
                400,
                r#"{"error":"invalid_grant","error_description":"refresh token expired"}"#
            ),
            "HTTP 400 from acme: invalid_grant: refresh token expired"
        );
        assert_eq!(
            message_for(
                422,
                r#"{"type":"error.list","errors":[{"code":"parameter_invalid","message":"Email is invalid"}]}"#
            ),
            "HTTP 422 from acme: Email is invalid (parameter_invalid)"
        );
        assert_eq!(
            message_for(
                422,
                r#"{"code":422,"message":"The given data was invalid.","errors":{"email":["The email field is required."]}}"#
            ),
            "HTTP 422 from acme: The given data was invalid.; email: The email field is required."
        );
        assert_eq!(
            message_for(502, "<html>\n  <body>Bad   gateway</body>\n</html>"),
            "HTTP 502 from acme: <html> <body>Bad gateway</body> </html>"
        );
        assert_eq!(message_for(404, ""), "HTTP 404 from acme: Not Found");
        assert_eq!(message_for(418, "  "), "HTTP 418 from acme: I'm a teapot");
        // JSON without a message field: the body itself.
        assert_eq!(
            message_for(409, r#"{"id":5}"#),
            r#"HTTP 409 from acme: {"id":5}"#
        );
    }

    #[test]
    fn long_bodies_are_cut_on_char_boundaries() {
        let body = "é".repeat(1000);
        let m = message_for(500, &body);
        let vendor = m.strip_prefix("HTTP 500 from acme: ").unwrap();
        assert_eq!(vendor.chars().count(), MAX_VENDOR_MESSAGE_CHARS + 1);
        assert!(vendor.ends_with('…'));
        let json = format!(r#"{{"message":"{}"}}"#, "x".repeat(5000));
        let m = message_for(422, &json);
        assert!(m.chars().count() < 340, "{}", m.len());
    }

    #[test]
    fn error_carries_context_and_retry_after() {
        let e = error_from_response(
            "pipedrive",
            "push_referral",
            429,
            &headers(&[("retry-after", "5")]),
            b"{\"error\":\"Rate limit exceeded\"}",
        );
        assert_eq!(
            e.kind(),
            &ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(e.connector(), Some("pipedrive"));
        assert_eq!(e.operation(), Some("push_referral"));
        assert_eq!(
            e.to_string(),
            "rate_limited (pipedrive, push_referral): HTTP 429 from pipedrive: Rate limit exceeded (retry after 5 s)"
        );
        // Retry-After on a 503 does not turn it into RateLimited.
        let e = error_from_response("x", "op", 503, &headers(&[("retry-after", "5")]), b"");
        assert_eq!(e.kind(), &ErrorKind::Unavailable);
        assert_eq!(e.retry_after(), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(value in ".{0,80}", digits in "[0-9.]{0,40}", now in any::<u64>()) {
            let now = UNIX_EPOCH.checked_add(Duration::from_secs(now % (1u64 << 40))).unwrap_or(UNIX_EPOCH);
            let _ = parse_retry_after(&value, now);
            let _ = parse_retry_after(&digits, now);
            for name in ["retry-after", "ratelimit", "x-ratelimit-reset", "ratelimit-reset"] {
                if let Ok(v) = HeaderValue::from_str(&digits) {
                    let mut h = HeaderMap::new();
                    h.insert(name, v);
                    let _ = retry_after_from_headers(&h, now);
                }
                if let Ok(v) = HeaderValue::from_str(&value) {
                    let mut h = HeaderMap::new();
                    h.insert(name, v);
                    let _ = retry_after_from_headers(&h, now);
                }
            }
        }

        #[test]
        fn error_from_response_never_panics(status in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..600), text in ".{0,400}") {
            let e = error_from_response("c", "op", status, &HeaderMap::new(), &body);
            prop_assert!(e.message().chars().count() <= MAX_VENDOR_MESSAGE_CHARS + 40);
            let _ = error_from_response("c", "op", status, &HeaderMap::new(), text.as_bytes());
        }
    }
}
