//! Webhook signature helpers: HMAC-SHA256 / HMAC-SHA1, constant-time comparison, timestamp
//! windows, HTTP Basic auth and [Standard Webhooks](https://www.standardwebhooks.com).
//!
//! Everything here is pure and synchronous and never panics, whatever the input: these functions
//! run on attacker-controlled bytes before anything else looks at a delivery.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use refsync_core::{Error, Result};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// HMAC-SHA256 of `msg` under `key` (any key length).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of every length: `new_from_slice` only fails for fixed-size-key MACs.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA1 of `msg` under `key` (any key length). Only for vendors that still sign with SHA-1.
pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return [0; 20];
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 as lower-case hex.
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    to_hex(&hmac_sha256(key, msg))
}

/// HMAC-SHA256 as standard base64 with padding.
pub fn hmac_sha256_base64(key: &[u8], msg: &[u8]) -> String {
    STANDARD.encode(hmac_sha256(key, msg))
}

/// HMAC-SHA1 as lower-case hex.
pub fn hmac_sha1_hex(key: &[u8], msg: &[u8]) -> String {
    to_hex(&hmac_sha1(key, msg))
}

/// HMAC-SHA1 as standard base64 with padding.
pub fn hmac_sha1_base64(key: &[u8], msg: &[u8]) -> String {
    STANDARD.encode(hmac_sha1(key, msg))
}

/// Compares two byte strings in constant time (for equal lengths); different lengths are
/// unequal.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Compares two secrets (tokens, passwords) in constant time without revealing their lengths:
/// both sides are hashed with SHA-256 first, so the comparison always covers 32 bytes.
/// Use this for static tokens; [`constant_time_eq`] is for values of public, fixed length such
/// as HMAC signatures.
pub fn secrets_equal(provided: &[u8], expected: &[u8]) -> bool {
    bool::from(Sha256::digest(provided).ct_eq(&Sha256::digest(expected)))
}

/// How a vendor encodes the signature it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Hexadecimal (accepted in either case).
    Hex,
    /// Base64 (standard or URL-safe alphabet, with or without padding).
    Base64,
}

/// Verifies an HMAC-SHA256 signature of `msg` under `secret`.
///
/// `provided` is decoded per `encoding` (hex in either case, or base64 in the standard or
/// URL-safe alphabet with or without padding) after trimming whitespace and an optional
/// `sha256=` prefix (GitHub style), then compared with the expected MAC in constant time.
/// Undecodable input is simply a mismatch.
pub fn verify_hmac_sha256(
    secret: &[u8],
    msg: &[u8],
    provided: &str,
    encoding: SignatureEncoding,
) -> bool {
    match decode_signature(provided, "sha256=", encoding) {
        Some(sig) => constant_time_eq(&hmac_sha256(secret, msg), &sig),
        None => false,
    }
}

/// Verifies an HMAC-SHA1 signature, like [`verify_hmac_sha256`] (the optional prefix is `sha1=`).
pub fn verify_hmac_sha1(
    secret: &[u8],
    msg: &[u8],
    provided: &str,
    encoding: SignatureEncoding,
) -> bool {
    match decode_signature(provided, "sha1=", encoding) {
        Some(sig) => constant_time_eq(&hmac_sha1(secret, msg), &sig),
        None => false,
    }
}

/// Parses a webhook timestamp and checks that it lies within `tolerance` of `now` (either side).
///
/// Accepted forms: unix seconds, unix milliseconds (any integer above 10^11 is taken as
/// milliseconds) and RFC 3339. Returns the parsed instant, or an
/// [`Unauthorized`](refsync_core::ErrorKind::Unauthorized) error such as
/// `timestamp 1700000000 is 3600 s old, outside the 300 s window` when the timestamp is
/// unparseable or outside the window.
pub fn check_timestamp(
    timestamp: &str,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<DateTime<Utc>> {
    let trimmed = timestamp.trim();
    let parsed = parse_timestamp(trimmed).ok_or_else(|| {
        Error::unauthorized(format!(
            "unparseable timestamp \"{}\"",
            excerpt(trimmed, 40)
        ))
    })?;
    check_window(trimmed, parsed, now, tolerance)?;
    Ok(parsed)
}

fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = s.parse().ok()?;
        if n > 100_000_000_000 {
            DateTime::from_timestamp_millis(n)
        } else {
            DateTime::from_timestamp(n, 0)
        }
    } else {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

fn check_window(
    shown: &str,
    ts: DateTime<Utc>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<()> {
    let tolerance_delta = TimeDelta::from_std(tolerance).unwrap_or(TimeDelta::MAX);
    let age = now.signed_duration_since(ts);
    if age.abs() <= tolerance_delta {
        return Ok(());
    }
    let direction = if age > TimeDelta::zero() {
        "old"
    } else {
        "in the future"
    };
    Err(Error::unauthorized(format!(
        "timestamp {} is {} s {direction}, outside the {} s window",
        excerpt(shown, 40),
        age.num_seconds().unsigned_abs(),
        tolerance.as_secs()
    )))
}

/// Checks an `Authorization: Basic ...` header value against the expected credentials.
///
/// The scheme is matched case-insensitively; user and password are both compared (always both,
/// through SHA-256 digests, so neither their content nor their length leaks through timing).
pub fn basic_auth_matches(header_value: Option<&str>, user: &str, password: &str) -> bool {
    let Some(value) = header_value else {
        return false;
    };
    let value = value.trim();
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let (got_user, got_password) = (&decoded[..colon], &decoded[colon + 1..]);
    let user_ok = Sha256::digest(got_user).ct_eq(&Sha256::digest(user.as_bytes()));
    let password_ok = Sha256::digest(got_password).ct_eq(&Sha256::digest(password.as_bytes()));
    bool::from(user_ok & password_ok)
}

/// An `Authorization` header value for HTTP Basic auth: `Basic base64(user:password)`.
pub fn basic_auth_header(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// [Standard Webhooks](https://www.standardwebhooks.com) signatures (also used by Svix).
///
/// Signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`; the key is the base64 decoding
/// of the secret after an optional `whsec_` prefix; the `webhook-signature` header holds
/// space-separated `v1,<base64 signature>` entries, any of which may match (key rotation).
pub mod standard_webhooks {
    use super::*;

    /// Signs a delivery; returns the `webhook-signature` entry `v1,<base64>`.
    ///
    /// Fails with a [`Config`](refsync_core::ErrorKind::Config) error when the secret is not
    /// base64 (after the optional `whsec_` prefix).
    pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
        let key = decode_secret(secret)?;
        let content = signed_content(id, &timestamp.to_string(), body);
        Ok(format!(
            "v1,{}",
            STANDARD.encode(hmac_sha256(&key, &content))
        ))
    }

    /// Verifies a delivery from its `webhook-id`, `webhook-timestamp` (unix seconds) and
    /// `webhook-signature` headers and the raw body.
    ///
    /// Fails with an [`Unauthorized`](refsync_core::ErrorKind::Unauthorized) error carrying a
    /// one-line reason (missing header, stale or future timestamp, no matching signature), or a
    /// [`Config`](refsync_core::ErrorKind::Config) error when the secret itself is not base64.
    /// Error messages never contain the secret or the expected signature.
    pub fn verify(
        secret: &str,
        id: &str,
        timestamp: &str,
        body: &[u8],
        signature_header: &str,
        now: DateTime<Utc>,
        tolerance: Duration,
    ) -> Result<()> {
        let key = decode_secret(secret)?;
        if id.trim().is_empty() {
            return Err(Error::unauthorized("missing webhook-id header"));
        }
        let timestamp = timestamp.trim();
        if timestamp.is_empty() {
            return Err(Error::unauthorized("missing webhook-timestamp header"));
        }
        if signature_header.trim().is_empty() {
            return Err(Error::unauthorized("missing webhook-signature header"));
        }
        let seconds: i64 = timestamp.parse().map_err(|_| {
            Error::unauthorized(format!(
                "webhook-timestamp \"{}\" is not unix seconds",
                excerpt(timestamp, 40)
            ))
        })?;
        let ts = DateTime::from_timestamp(seconds, 0).ok_or_else(|| {
            Error::unauthorized(format!("webhook-timestamp {seconds} is out of range"))
        })?;
        check_window(timestamp, ts, now, tolerance)?;

        let expected = hmac_sha256(&key, &signed_content(id, timestamp, body));
        let mut saw_v1 = false;
        let mut matched = false;
        for entry in signature_header.split_ascii_whitespace() {
            let Some((version, sig)) = entry.split_once(',') else {
                continue;
            };
            if version != "v1" {
                continue;
            }
            saw_v1 = true;
            if let Some(sig) = decode_base64(sig) {
                // No early exit: every entry is checked.
                matched |= constant_time_eq(&expected, &sig);
            }
        }
        if matched {
            Ok(())
        } else if saw_v1 {
            Err(Error::unauthorized(
                "no webhook-signature v1 entry matches the payload",
            ))
        } else {
            Err(Error::unauthorized(
                "webhook-signature has no v1 entry (expected \"v1,<base64>\")",
            ))
        }
    }

    fn decode_secret(secret: &str) -> Result<Vec<u8>> {
        let raw = secret.trim();
        let raw = raw.strip_prefix("whsec_").unwrap_or(raw);
        match decode_base64(raw) {
            Some(key) if !key.is_empty() => Ok(key),
            _ => Err(Error::config(
                "the Standard Webhooks secret is not base64 (after the optional whsec_ prefix)",
            )),
        }
    }

    fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
        let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
        content.extend_from_slice(id.as_bytes());
        content.push(b'.');
        content.extend_from_slice(timestamp.as_bytes());
        content.push(b'.');
        content.extend_from_slice(body);
        content
    }
}

fn decode_signature(provided: &str, prefix: &str, encoding: SignatureEncoding) -> Option<Vec<u8>> {
    let s = provided.trim();
    let s = match s.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => &s[prefix.len()..],
        _ => s,
    };
    match encoding {
        SignatureEncoding::Hex => from_hex(s),
        SignatureEncoding::Base64 => decode_base64(s),
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .into_iter()
        .find_map(|engine| engine.decode(s).ok())
}

/// Lower-case hex SHA-256 of `parts` concatenated — unkeyed digests some vendors sign with
/// (HubSpot v1: `secret + body`; v2: `secret + method + URL + body`).
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    to_hex(&hasher.finalize())
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// The first `max` characters of `s` (on a char boundary), with `…` when cut.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn sha256_hex_concatenates_its_parts() {
        // FIPS 180-2 example: SHA-256("abc").
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(&[b"abc"]), abc);
        assert_eq!(sha256_hex(&[b"a", b"", b"bc"]), abc);
    }

    // RFC 4231 test case 2.
    const RFC4231_KEY: &[u8] = b"Jefe";
    const RFC4231_MSG: &[u8] = b"what do ya want for nothing?";
    const RFC4231_HEX: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn rfc4231_case_2() {
        assert_eq!(hmac_sha256_hex(RFC4231_KEY, RFC4231_MSG), RFC4231_HEX);
        assert_eq!(to_hex(&hmac_sha256(RFC4231_KEY, RFC4231_MSG)), RFC4231_HEX);
        assert_eq!(
            hmac_sha256_base64(RFC4231_KEY, RFC4231_MSG),
            STANDARD.encode(from_hex(RFC4231_HEX).unwrap())
        );
    }

    #[test]
    fn rfc2202_sha1_case_2() {
        assert_eq!(
            hmac_sha1_hex(b"Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hmac_sha1_base64(b"Jefe", b"what do ya want for nothing?"),
            STANDARD.encode(from_hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79").unwrap())
        );
    }

    #[test]
    fn empty_key_and_message_are_fine() {
        // Well-known HMAC-SHA256("", "").
        assert_eq!(
            hmac_sha256_hex(b"", b""),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"
        );
    }

    #[test]
    fn verify_accepts_hex_any_case_base64_and_prefix() {
        let b64 = hmac_sha256_base64(RFC4231_KEY, RFC4231_MSG);
        for provided in [
            RFC4231_HEX.to_owned(),
            RFC4231_HEX.to_uppercase(),
            format!("sha256={RFC4231_HEX}"),
            format!("SHA256={RFC4231_HEX}"),
            format!("  {RFC4231_HEX}\n"),
        ] {
            assert!(
                verify_hmac_sha256(RFC4231_KEY, RFC4231_MSG, &provided, SignatureEncoding::Hex),
                "{provided}"
            );
        }
        for provided in [
            b64.clone(),
            b64.trim_end_matches('=').to_owned(),
            format!("sha256={b64}"),
        ] {
            assert!(
                verify_hmac_sha256(
                    RFC4231_KEY,
                    RFC4231_MSG,
                    &provided,
                    SignatureEncoding::Base64
                ),
                "{provided}"
            );
        }
        // Wrong encoding, wrong key, tampered message, truncated or empty signature.
        assert!(!verify_hmac_sha256(
            RFC4231_KEY,
            RFC4231_MSG,
            RFC4231_HEX,
            SignatureEncoding::Base64
        ));
        assert!(!verify_hmac_sha256(
            b"jefe",
            RFC4231_MSG,
            RFC4231_HEX,
            SignatureEncoding::Hex
        ));
        assert!(!verify_hmac_sha256(
            RFC4231_KEY,
            b"what do ya want for nothing!",
            RFC4231_HEX,
            SignatureEncoding::Hex
        ));
        assert!(!verify_hmac_sha256(
            RFC4231_KEY,
            RFC4231_MSG,
            &RFC4231_HEX[..62],
            SignatureEncoding::Hex
        ));
        assert!(!verify_hmac_sha256(
            RFC4231_KEY,
            RFC4231_MSG,
            "",
            SignatureEncoding::Hex
        ));
    }

    #[test]
    fn verify_sha1_with_prefix() {
        let sig = hmac_sha1_hex(b"secret", b"body");
        assert!(verify_hmac_sha1(
            b"secret",
            b"body",
            &format!("sha1={sig}"),
            SignatureEncoding::Hex
        ));
        let b64 = hmac_sha1_base64(b"secret", b"body");
        assert!(verify_hmac_sha1(
            b"secret",
            b"body",
            &b64,
            SignatureEncoding::Base64
        ));
        assert!(!verify_hmac_sha1(
            b"secret",
            b"body2",
            &sig,
            SignatureEncoding::Hex
        ));
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn timestamps_in_all_forms() {
        let tol = Duration::from_secs(300);
        assert_eq!(check_timestamp("1700000000", now(), tol).unwrap(), now());
        assert_eq!(check_timestamp("1700000000000", now(), tol).unwrap(), now());
        assert_eq!(
            check_timestamp("2023-11-14T22:13:20Z", now(), tol).unwrap(),
            now()
        );
        assert_eq!(
            check_timestamp("2023-11-14T23:13:20+01:00", now(), tol).unwrap(),
            now()
        );
        assert!(check_timestamp("1699999800", now(), tol).is_ok());
        assert!(check_timestamp("1700000299", now(), tol).is_ok());
    }

    #[test]
    fn stale_future_and_garbage_timestamps() {
        let tol = Duration::from_secs(300);
        let err = check_timestamp("1699996400", now(), tol).unwrap_err();
        assert_eq!(err.kind(), &refsync_core::ErrorKind::Unauthorized);
        assert_eq!(
            err.message(),
            "timestamp 1699996400 is 3600 s old, outside the 300 s window"
        );
        let err = check_timestamp("1700003600", now(), tol).unwrap_err();
        assert_eq!(
            err.message(),
            "timestamp 1700003600 is 3600 s in the future, outside the 300 s window"
        );
        for bad in ["", "abc", "-5", "17e8", "99999999999999999999999"] {
            let err = check_timestamp(bad, now(), tol).unwrap_err();
            assert_eq!(err.kind(), &refsync_core::ErrorKind::Unauthorized, "{bad}");
        }
    }

    #[test]
    fn basic_auth_round_trip() {
        let header = basic_auth_header("pipedrive", "hunter2:with:colons");
        assert!(header.starts_with("Basic "));
        assert!(basic_auth_matches(
            Some(&header),
            "pipedrive",
            "hunter2:with:colons"
        ));
        let lower = header.replacen("Basic", "basic", 1);
        assert!(basic_auth_matches(
            Some(&lower),
            "pipedrive",
            "hunter2:with:colons"
        ));
        assert!(!basic_auth_matches(Some(&header), "pipedrive", "hunter2"));
        assert!(!basic_auth_matches(
            Some(&header),
            "other",
            "hunter2:with:colons"
        ));
        assert!(!basic_auth_matches(None, "pipedrive", "x"));
        assert!(!basic_auth_matches(Some("Bearer abc"), "pipedrive", "x"));
        assert!(!basic_auth_matches(Some("Basic !!!"), "pipedrive", "x"));
        assert!(!basic_auth_matches(
            Some(&format!("Basic {}", STANDARD.encode("nocolon"))),
            "nocolon",
            ""
        ));
    }

    mod sw {
        use super::*;
        use crate::signature::standard_webhooks::{sign, verify};

        // The example from the Standard Webhooks specification test vectors.
        const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        const TS: i64 = 1_614_265_330;
        const BODY: &[u8] = br#"{"test": 2432232314}"#;
        const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

        fn at(ts: i64) -> DateTime<Utc> {
            Utc.timestamp_opt(ts, 0).unwrap()
        }
        const TOL: Duration = Duration::from_secs(300);

        #[test]
        fn spec_vector_and_round_trip() {
            let sig = sign(SECRET, ID, TS, BODY).unwrap();
            assert_eq!(sig, EXPECTED);
            verify(SECRET, ID, &TS.to_string(), BODY, &sig, at(TS), TOL).unwrap();
            // Without the whsec_ prefix, and among several entries (rotation).
            let header = format!("v1,AAAA v1a,xyz {sig}");
            verify(
                SECRET.trim_start_matches("whsec_"),
                ID,
                &TS.to_string(),
                BODY,
                &header,
                at(TS + 10),
                TOL,
            )
            .unwrap();
        }

        #[test]
        fn tampered_stale_and_missing() {
            let sig = sign(SECRET, ID, TS, BODY).unwrap();
            let ts = TS.to_string();
            let unauthorized = |r: Result<()>| {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), &refsync_core::ErrorKind::Unauthorized, "{e}");
                assert!(!e.to_string().contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
                assert!(!e.to_string().contains("g0hM9SsE"));
                assert!(!e.message().contains('\n'));
                e.message().to_owned()
            };
            let m = unauthorized(verify(SECRET, ID, &ts, b"{}", &sig, at(TS), TOL));
            assert!(m.contains("no webhook-signature v1 entry matches"), "{m}");
            let m = unauthorized(verify(SECRET, "msg_other", &ts, BODY, &sig, at(TS), TOL));
            assert!(m.contains("matches"), "{m}");
            let m = unauthorized(verify(SECRET, ID, &ts, BODY, &sig, at(TS + 301), TOL));
            assert!(m.contains("301 s old"), "{m}");
            let m = unauthorized(verify(SECRET, ID, &ts, BODY, &sig, at(TS - 400), TOL));
            assert!(m.contains("in the future"), "{m}");
            let m = unauthorized(verify(SECRET, "", &ts, BODY, &sig, at(TS), TOL));
            assert!(m.contains("webhook-id"), "{m}");
            let m = unauthorized(verify(SECRET, ID, "", BODY, &sig, at(TS), TOL));
            assert!(m.contains("webhook-timestamp"), "{m}");
            let m = unauthorized(verify(SECRET, ID, &ts, BODY, "", at(TS), TOL));
            assert!(m.contains("webhook-signature"), "{m}");
            let m = unauthorized(verify(SECRET, ID, "soon", BODY, &sig, at(TS), TOL));
            assert!(m.contains("not unix seconds"), "{m}");
            let m = unauthorized(verify(SECRET, ID, &ts, BODY, "v2,abc", at(TS), TOL));
            assert!(m.contains("no v1 entry"), "{m}");
        }

        #[test]
        fn bad_secret_is_config_error() {
            let e = sign("whsec_!!!", ID, TS, BODY).unwrap_err();
            assert_eq!(e.kind(), &refsync_core::ErrorKind::Config);
            let e = verify("", ID, "1", BODY, "v1,x", at(1), TOL).unwrap_err();
            assert_eq!(e.kind(), &refsync_core::ErrorKind::Config);
        }
    }

    proptest! {
        #[test]
        fn verify_helpers_never_panic(
            key in proptest::collection::vec(any::<u8>(), 0..80),
            msg in proptest::collection::vec(any::<u8>(), 0..200),
            provided in ".{0,120}",
        ) {
            let _ = verify_hmac_sha256(&key, &msg, &provided, SignatureEncoding::Hex);
            let _ = verify_hmac_sha256(&key, &msg, &provided, SignatureEncoding::Base64);
            let _ = verify_hmac_sha1(&key, &msg, &provided, SignatureEncoding::Hex);
            let _ = verify_hmac_sha1(&key, &msg, &provided, SignatureEncoding::Base64);
            let _ = basic_auth_matches(Some(&provided), "u", "p");
        }

        #[test]
        fn timestamp_and_standard_webhooks_never_panic(
            ts in ".{0,40}",
            digits in "[0-9]{0,25}",
            header in ".{0,200}",
            secret in ".{0,60}",
            body in proptest::collection::vec(any::<u8>(), 0..100),
            tol in any::<u64>(),
        ) {
            let tol = Duration::from_secs(tol);
            let _ = check_timestamp(&ts, now(), tol);
            let _ = check_timestamp(&digits, now(), tol);
            let _ = standard_webhooks::verify(&secret, "id", &ts, &body, &header, now(), tol);
            let _ = standard_webhooks::verify(SECRET_B64, "id", &digits, &body, &header, now(), tol);
            let _ = standard_webhooks::sign(&secret, "id", 0, &body);
        }

        #[test]
        fn sign_verify_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            id in "[a-zA-Z0-9_]{1,30}",
            ts in 1_000_000_000i64..2_000_000_000i64,
        ) {
            let sig = standard_webhooks::sign(SECRET_B64, &id, ts, &body).unwrap();
            let at = Utc.timestamp_opt(ts, 0).unwrap();
            prop_assert!(standard_webhooks::verify(
                SECRET_B64, &id, &ts.to_string(), &body, &sig, at, Duration::from_secs(300)
            ).is_ok());
        }
    }

    const SECRET_B64: &str = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=";
}

#[cfg(test)]
mod secrets_equal_tests {
    use super::secrets_equal;

    #[test]
    fn equal_only_for_identical_secrets_of_any_length() {
        assert!(secrets_equal(b"tok-123456", b"tok-123456"));
        assert!(!secrets_equal(b"tok-123456", b"tok-123457"));
        assert!(!secrets_equal(b"tok", b"tok-123456"));
        assert!(!secrets_equal(b"", b"x"));
        assert!(secrets_equal(b"", b""));
    }
}
