//! OAuth 1.0a "one-legged" request signing (RFC 5849 §3.4, no token): what WooCommerce
//! requires from REST clients of a store served over plain HTTP.
//!
//! The signature covers the method, the URL without its query, and every query parameter plus
//! the `oauth_*` ones (never the body). [`sign`] is pure: the caller supplies the nonce and the
//! timestamp, so it can be tested against fixed vectors; [`HttpClient`](crate::HttpClient)
//! signs each attempt afresh with [`Auth::OAuth1`](crate::Auth::OAuth1).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha1::Sha1;
use sha2::Sha256;

/// The HMAC behind the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureMethod {
    /// `HMAC-SHA1` (RFC 5849's only HMAC method).
    HmacSha1,
    /// `HMAC-SHA256` (accepted by WooCommerce; the default).
    #[default]
    HmacSha256,
}

impl SignatureMethod {
    /// The `oauth_signature_method` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMethod::HmacSha1 => "HMAC-SHA1",
            SignatureMethod::HmacSha256 => "HMAC-SHA256",
        }
    }
}

/// RFC 3986 percent-encoding as OAuth 1.0a wants it: unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) stay, every other byte becomes `%XX` (upper-case hex).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The signature base string (RFC 5849 §3.4.1): `METHOD&enc(base_url)&enc(normalized params)`,
/// where the parameters are encoded, sorted by name then value, and joined as `k=v` with `&`.
/// `base_url` is scheme, host, port (when not the default) and path, without query.
pub fn base_string(method: &str, base_url: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(base_url),
        percent_encode(&normalized)
    )
}

/// The `oauth_signature` for `base` with `consumer_secret` (and no token secret): base64 of the
/// HMAC keyed with `enc(consumer_secret) + "&"`.
pub fn signature(method: SignatureMethod, consumer_secret: &str, base: &str) -> String {
    let key = format!("{}&", percent_encode(consumer_secret));
    let raw = match method {
        SignatureMethod::HmacSha1 => {
            let mut mac =
                Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
            mac.update(base.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        SignatureMethod::HmacSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .expect("HMAC accepts any key length");
            mac.update(base.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The client credentials of one-legged OAuth 1.0a.
#[derive(Clone, Copy)]
pub struct Consumer<'a> {
    /// The consumer key (WooCommerce `ck_...`).
    pub key: &'a str,
    /// The consumer secret (WooCommerce `cs_...`).
    pub secret: &'a str,
    /// The HMAC to sign with.
    pub method: SignatureMethod,
}

impl std::fmt::Debug for Consumer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("key", &"[redacted]")
            .field("secret", &"[redacted]")
            .field("method", &self.method)
            .finish()
    }
}

/// The `oauth_*` parameters (signature included) to add to the query of a `method` request to
/// `base_url` whose own query parameters are `query`. Pure: `nonce` and `timestamp` (Unix
/// seconds) come from the caller.
pub fn sign(
    method: &str,
    base_url: &str,
    query: &[(String, String)],
    consumer: &Consumer<'_>,
    nonce: &str,
    timestamp: i64,
) -> Vec<(String, String)> {
    let mut oauth = vec![
        ("oauth_consumer_key".to_owned(), consumer.key.to_owned()),
        ("oauth_nonce".to_owned(), nonce.to_owned()),
        (
            "oauth_signature_method".to_owned(),
            consumer.method.as_str().to_owned(),
        ),
        ("oauth_timestamp".to_owned(), timestamp.to_string()),
    ];
    let mut all: Vec<(String, String)> = query.to_vec();
    all.extend(oauth.iter().cloned());
    let base = base_string(method, base_url, &all);
    oauth.push((
        "oauth_signature".to_owned(),
        signature(consumer.method, consumer.secret, &base),
    ));
    oauth
}

/// A fresh nonce: 32 random alphanumeric characters (WooCommerce's documented length).
pub fn nonce() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| {
            let i = rng.random_range(0..62u8);
            char::from(match i {
                0..=9 => b'0' + i,
                10..=35 => b'a' + (i - 10),
                _ => b'A' + (i - 36),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    /// RFC 5849 §3.4.1.1's example: the base string is given in full by the RFC (the example
    /// has a token and a body parameter; the construction is the same).
    #[test]
    fn base_string_matches_rfc_5849_example() {
        let params = vec![
            p("b5", "=%3D"),
            p("a3", "a"),
            p("c@", ""),
            p("a2", "r b"),
            p("oauth_consumer_key", "9djdj82h48djs9d2"),
            p("oauth_token", "kkk9d7dh3k39sjv7"),
            p("oauth_signature_method", "HMAC-SHA1"),
            p("oauth_timestamp", "137131201"),
            p("oauth_nonce", "7d8f3e4a"),
            p("c2", ""),
            p("a3", "2 q"),
        ];
        let expected = "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2\
%26oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201\
%26oauth_token%3Dkkk9d7dh3k39sjv7";
        assert_eq!(
            base_string("post", "http://example.com/request", &params),
            expected
        );
    }

    /// The widely used Twitter documentation vector ("Creating a signature"): its parameters
    /// give the documented base string, and its signing key (consumer secret + "&" + token
    /// secret) the documented HMAC-SHA1 signature. One-legged signing uses the same key rule
    /// without a token secret.
    #[test]
    fn base_string_and_hmac_sha1_match_a_published_vector() {
        let params = vec![
            p(
                "status",
                "Hello Ladies + Gentlemen, a signed OAuth request!",
            ),
            p("include_entities", "true"),
            p("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
            p("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            p("oauth_signature_method", "HMAC-SHA1"),
            p("oauth_timestamp", "1318622958"),
            p(
                "oauth_token",
                "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
            ),
            p("oauth_version", "1.0"),
        ];
        let base = base_string(
            "POST",
            "https://api.twitter.com/1.1/statuses/update.json",
            &params,
        );
        assert_eq!(
            base,
            "POST&https%3A%2F%2Fapi.twitter.com%2F1.1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%3DkYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1318622958%26oauth_token%3D370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%26status%3DHello%2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521"
        );
        // The vector's key includes a token secret, which one-legged signing has none of:
        // check the documented HMAC over our base string directly.
        let key =
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw&LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE";
        let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(base.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sig, "hCtSmYh+iHYCEqBWrE7C7hYmtUk=");
        // One-legged: the key is enc(consumer secret) + "&".
        let one_legged = signature(
            SignatureMethod::HmacSha1,
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            &base,
        );
        let mut mac =
            Hmac::<Sha1>::new_from_slice(b"kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw&").unwrap();
        mac.update(base.as_bytes());
        assert_eq!(
            one_legged,
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn sign_adds_the_oauth_parameters_and_covers_the_query() {
        let q = vec![p("modified_after", "2026-11-21T10:00:00"), p("page", "2")];
        fn c(secret: &str) -> Consumer<'_> {
            Consumer {
                key: "ck_1",
                secret,
                method: SignatureMethod::HmacSha256,
            }
        }
        let a = sign(
            "GET",
            "http://shop.test/wp-json/wc/v3/orders",
            &q,
            &c("cs_2"),
            "n1",
            1_700_000_000,
        );
        let names: Vec<&str> = a.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "oauth_consumer_key",
                "oauth_nonce",
                "oauth_signature_method",
                "oauth_timestamp",
                "oauth_signature"
            ]
        );
        let sig = &a[4].1;
        // Recompute independently from the documented construction.
        let mut all = q.clone();
        all.extend(a[..4].iter().cloned());
        let base = base_string("GET", "http://shop.test/wp-json/wc/v3/orders", &all);
        assert!(
            base.contains("modified_after%3D2026-11-21T10%253A00%253A00"),
            "{base}"
        );
        assert_eq!(sig, &signature(SignatureMethod::HmacSha256, "cs_2", &base));
        // Any change to the query, method, URL, nonce or secret changes the signature.
        let other = |q: &[(String, String)], m: &str, u: &str, n: &str, s: &str| {
            sign(m, u, q, &c(s), n, 1_700_000_000)[4].1.clone()
        };
        let url = "http://shop.test/wp-json/wc/v3/orders";
        assert_ne!(&other(&q[..1], "GET", url, "n1", "cs_2"), sig);
        assert_ne!(&other(&q, "POST", url, "n1", "cs_2"), sig);
        assert_ne!(
            &other(
                &q,
                "GET",
                "http://shop.test/wp-json/wc/v3/coupons",
                "n1",
                "cs_2"
            ),
            sig
        );
        assert_ne!(&other(&q, "GET", url, "n2", "cs_2"), sig);
        assert_ne!(&other(&q, "GET", url, "n1", "cs_3"), sig);
        assert_eq!(&other(&q, "GET", url, "n1", "cs_2"), sig);
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("a b+c/é"), "a%20b%2Bc%2F%C3%A9");
    }

    #[test]
    fn nonces_are_32_alphanumerics_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
