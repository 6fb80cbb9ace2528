//! [`Config`]: the settings of one Referral Factory account.

use std::time::Duration;

use refsync_core::{Error, Result, Secret};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::NAME;

/// The default v2 base URL (the host differs between Referral Factory's documents, hence
/// configurable).
pub const DEFAULT_BASE_URL_V2: &str = "https://referral-factory.com/api/v2";
/// The default base URL in v1 compatibility mode.
pub const DEFAULT_BASE_URL_V1: &str = "https://referral-factory.com/api/v1";
/// Referral Factory's documented limit: 600 calls per minute per token.
pub const MAX_CALLS_PER_MINUTE: u32 = 600;
/// The default budget: 10 % below the limit.
pub const DEFAULT_CALLS_PER_MINUTE: u32 = 540;

/// Which API flavour to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    /// The current API: `referrer {field, value}`, `PUT /users/qualification`, `{data: ...}`
    /// envelopes, server-side filters.
    #[default]
    V2,
    /// Compatibility with v1: `referrer_code`, `PUT /users/{id}` with
    /// `{campaign_id, qualified}`, unwrapped objects, and campaign filtering done by the client
    /// (v1 ignores `campaign_id` on `GET /users`).
    V1,
}

/// Settings of a Referral Factory client (the `[settings]` of the `referral-factory` platform).
///
/// ```
/// # use refsync_referral_factory::Config;
/// let c: Config = serde_json::from_value(serde_json::json!({"token": "rf-token"})).unwrap();
/// assert_eq!(c.base_url(), "https://referral-factory.com/api/v2");
/// assert_eq!(c.rate_limit_per_minute, 540);
/// c.validate().unwrap();
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the API. Default `https://referral-factory.com/api/v2`
    /// (`https://referral-factory.com/api/v1` with `api_version = "v1"`). Some documents give
    /// `https://api.referral-factory.com/api/v2`; the embedded ledger serves the same paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `v2` (default) or `v1` (compatibility mode).
    #[serde(default)]
    pub api_version: ApiVersion,
    /// The API token (Settings → API; Bearer). Referral Factory keeps one active token per
    /// account: generating a new one invalidates the old one. Optional only when
    /// `inbound_webhook_url` is set (accounts without API access can still qualify by code or
    /// coupon through the inbound webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Client-side budget in calls per minute, shared by every call of this client (token
    /// bucket). Default 540; at most 600 — Referral Factory's limit, and three abuses block the
    /// IP for 7 days.
    #[serde(default = "default_rate")]
    pub rate_limit_per_minute: u32,
    /// Time allowed per try, in seconds (default 10).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Tries per call, the first included (default 4). 429s are retried for every call (after
    /// `Retry-After`); 5xx and timeouts only for idempotent calls (reads, qualification).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The inbound webhook URL (`https://referral-factory.com/webhook/{token}/qualify`, shown in
    /// Settings → webhooks). It is a credential: keep it private. When set without `token`,
    /// qualification goes through it (form `code=` or `coupon=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_webhook_url: Option<Secret>,
    /// Whether created users get Referral Factory's welcome notification when the caller does
    /// not say (default `false`).
    #[serde(default)]
    pub notify: bool,
    /// How long the circuit breaker stays open after two 429s within a minute, in seconds
    /// (default 300). Each failed probe doubles it, up to `breaker_max_cooldown_secs`.
    #[serde(default = "default_cooldown")]
    pub breaker_cooldown_secs: u64,
    /// The longest cool-down, in seconds (default 3600).
    #[serde(default = "default_max_cooldown")]
    pub breaker_max_cooldown_secs: u64,
}

fn default_rate() -> u32 {
    DEFAULT_CALLS_PER_MINUTE
}
fn default_timeout() -> u64 {
    10
}
fn default_attempts() -> u32 {
    4
}
fn default_cooldown() -> u64 {
    300
}
fn default_max_cooldown() -> u64 {
    3600
}

impl Config {
    /// A v2 config with `token` and every default.
    pub fn new(token: impl Into<Secret>) -> Self {
        Config {
            base_url: None,
            api_version: ApiVersion::V2,
            token: Some(token.into()),
            rate_limit_per_minute: default_rate(),
            timeout_secs: default_timeout(),
            max_attempts: default_attempts(),
            inbound_webhook_url: None,
            notify: false,
            breaker_cooldown_secs: default_cooldown(),
            breaker_max_cooldown_secs: default_max_cooldown(),
        }
    }

    /// Sets `base_url`.
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The base URL in effect (the configured one, else the default of the API version),
    /// without a trailing `/`.
    pub fn base_url(&self) -> &str {
        match &self.base_url {
            Some(url) => url.trim().trim_end_matches('/'),
            None => match self.api_version {
                ApiVersion::V2 => DEFAULT_BASE_URL_V2,
                ApiVersion::V1 => DEFAULT_BASE_URL_V1,
            },
        }
    }

    /// The per-try timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Checks the settings; errors are [`Config`](refsync_core::ErrorKind::Config) and never
    /// quote secrets.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Error::config(m).with_connector(NAME);
        if self.rate_limit_per_minute > MAX_CALLS_PER_MINUTE {
            return Err(err(format!(
                "rate_limit_per_minute = {} is above Referral Factory's limit of {MAX_CALLS_PER_MINUTE} calls per minute per token; \
                 three abuses block the IP for 7 days. Use {DEFAULT_CALLS_PER_MINUTE} (the default) or less",
                self.rate_limit_per_minute
            )));
        }
        if self.rate_limit_per_minute == 0 {
            return Err(err(
                "rate_limit_per_minute must be at least 1 (default 540)".to_owned(),
            ));
        }
        if self.timeout_secs == 0 {
            return Err(err(
                "timeout_secs must be at least 1 (default 10)".to_owned()
            ));
        }
        if self.breaker_cooldown_secs == 0 {
            return Err(err(
                "breaker_cooldown_secs must be at least 1 (default 300)".to_owned(),
            ));
        }
        if self.breaker_max_cooldown_secs < self.breaker_cooldown_secs {
            return Err(err(format!(
                "breaker_max_cooldown_secs ({}) must not be below breaker_cooldown_secs ({})",
                self.breaker_max_cooldown_secs, self.breaker_cooldown_secs
            )));
        }
        let base = Url::parse(self.base_url())
            .map_err(|e| err(format!("base_url is not a valid URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(err("base_url must be an http(s) URL with a host".to_owned()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(err("base_url must not have a query or fragment".to_owned()));
        }
        if let Some(token) = &self.token {
            if token.expose().trim().is_empty() {
                return Err(err(
                    "token is empty; copy the API token from Referral Factory (Settings → API)"
                        .to_owned(),
                ));
            }
        }
        if let Some(hook) = &self.inbound_webhook_url {
            webhook_url(hook).map_err(err)?;
        }
        if self.token.is_none() && self.inbound_webhook_url.is_none() {
            return Err(err(
                "token is required (Referral Factory → Settings → API); without API access, set inbound_webhook_url to qualify through the inbound webhook"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// Parses the inbound webhook URL; the message never quotes it (it holds a credential).
pub(crate) fn webhook_url(hook: &Secret) -> std::result::Result<Url, String> {
    let url = Url::parse(hook.expose().trim()).map_err(|_| {
        "inbound_webhook_url is not a valid URL (the value is not shown)".to_owned()
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(
            "inbound_webhook_url must be an http(s) URL like https://referral-factory.com/webhook/<token>/qualify (the value is not shown)"
                .to_owned(),
        );
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use refsync_core::ErrorKind;

    #[allow(clippy::needless_pass_by_value)] // json! literals at every call site
    fn parse(v: serde_json::Value) -> Result<Config> {
        let c: Config = refsync_core::registry::parse_settings(&v)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults() {
        let c = parse(serde_json::json!({"token": "t0ken"})).unwrap();
        assert_eq!(c.base_url(), DEFAULT_BASE_URL_V2);
        assert_eq!(c.api_version, ApiVersion::V2);
        assert_eq!(c.rate_limit_per_minute, 540);
        assert_eq!(c.timeout(), Duration::from_secs(10));
        assert_eq!(c.max_attempts, 4);
        assert_eq!(c.breaker_cooldown_secs, 300);
        assert_eq!(c.breaker_max_cooldown_secs, 3600);
        assert!(!c.notify);
        let v1 = parse(serde_json::json!({"token": "t0ken", "api_version": "v1"})).unwrap();
        assert_eq!(v1.base_url(), DEFAULT_BASE_URL_V1);
        let custom = parse(serde_json::json!({
            "token": "t0ken", "base_url": "https://api.referral-factory.com/api/v2/"
        }))
        .unwrap();
        assert_eq!(custom.base_url(), "https://api.referral-factory.com/api/v2");
    }

    #[test]
    fn above_600_names_the_limit_and_the_block() {
        let e =
            parse(serde_json::json!({"token": "t0ken", "rate_limit_per_minute": 601})).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
        assert!(e.message().contains("600"), "{e}");
        assert!(e.message().contains("7 days"), "{e}");
        parse(serde_json::json!({"token": "t0ken", "rate_limit_per_minute": 600})).unwrap();
        assert!(parse(serde_json::json!({"token": "t", "rate_limit_per_minute": 0})).is_err());
    }

    #[test]
    fn unknown_fields_and_missing_credentials_are_config_errors() {
        let e = parse(serde_json::json!({"token": "t0ken", "tokne": 1})).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
        let e = parse(serde_json::json!({})).unwrap_err();
        assert!(e.message().contains("token is required"), "{e}");
        let e = parse(serde_json::json!({"token": "  "})).unwrap_err();
        assert!(e.message().contains("empty"), "{e}");
        // Webhook only: allowed.
        parse(serde_json::json!({
            "inbound_webhook_url": "https://referral-factory.com/webhook/abc123/qualify"
        }))
        .unwrap();
    }

    #[test]
    fn errors_never_quote_secrets() {
        let e = parse(serde_json::json!({
            "token": "t0ken", "inbound_webhook_url": "not a url s3cr3t-hook"
        }))
        .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = parse(serde_json::json!({
            "token": "t0ken", "inbound_webhook_url": "ftp://host/webhook/s3cr3t-hook/qualify"
        }))
        .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let c = parse(serde_json::json!({
            "token": "s3cr3t-token",
            "inbound_webhook_url": "https://referral-factory.com/webhook/s3cr3t-hook/qualify"
        }))
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn bad_base_url_and_breaker_settings() {
        for bad in ["ftp://x/api", "not a url", "https://x/api?x=1"] {
            let e = parse(serde_json::json!({"token": "t0ken", "base_url": bad})).unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Config, "{bad}");
        }
        assert!(parse(serde_json::json!({"token": "t0ken", "timeout_secs": 0})).is_err());
        assert!(
            parse(serde_json::json!({
                "token": "t0ken", "breaker_cooldown_secs": 600, "breaker_max_cooldown_secs": 60
            }))
            .is_err()
        );
    }
}
