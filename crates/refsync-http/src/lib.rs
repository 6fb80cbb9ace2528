#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod backoff;
pub mod client;
pub mod oauth;
pub mod oauth1;
pub mod ratelimit;
pub mod signature;
pub mod status;

pub use backoff::RetryPolicy;
pub use client::{ApiRequest, ApiResponse, Auth, Body, HttpClient, HttpClientBuilder};
pub use oauth::{
    ClientAuth, MemoryTokenStore, OAuthConfig, StoredToken, TokenManager, TokenStore,
    token_http_client,
};
pub use ratelimit::{RateLimit, RateLimiter, TokenBucket};
pub use signature::{
    SignatureEncoding, basic_auth_header, basic_auth_matches, check_timestamp, constant_time_eq,
    hmac_sha1_base64, hmac_sha1_hex, hmac_sha256, hmac_sha256_base64, hmac_sha256_hex,
    secrets_equal, standard_webhooks, verify_hmac_sha1, verify_hmac_sha256,
};
pub use status::{
    ErrorResponse, error_from_response, error_kind_for_status, error_response, parse_retry_after,
    retry_after_from_headers,
};
