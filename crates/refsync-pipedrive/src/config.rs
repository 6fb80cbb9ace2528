//! Settings of the Pipedrive connector: the `[settings]` table of an instance config.
//!
//! ```toml
//! [instances.settings]
//! base_url = "https://acme.pipedrive.com"          # default https://api.pipedrive.com
//! auth = { type = "api_token", token = "${env:PIPEDRIVE_API_TOKEN}" }
//! webhook_user = "refsync"
//! webhook_password = "${env:PIPEDRIVE_WEBHOOK_PASSWORD}"
//! company_id = "8087566"                            # deliveries for other companies are refused
//! referral_code_field = "Referral Code"             # deal/lead custom field: its key or its label
//! ```

use refsync_core::{Error, Result, Secret};
use serde::{Deserialize, Serialize};

use crate::NAME;

/// The API host every account can use; company hosts (`https://acme.pipedrive.com`) work too.
pub const DEFAULT_BASE_URL: &str = "https://api.pipedrive.com";

/// Settings of the Pipedrive connector (read with `refsync_core::registry::parse_settings`).
///
/// Unknown keys are rejected so typos are caught; secrets are [`Secret`]s, which `Debug`,
/// logs and errors print as `[redacted]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the Pipedrive API without a path (`/v1/...` and `/api/v2/...` are appended),
    /// e.g. `https://acme.pipedrive.com`. With OAuth the token's `api_domain` is used unless this
    /// is set. Tests point it at the simulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// How refsync authenticates to the API.
    pub auth: AuthConfig,
    /// The HTTP Basic user Pipedrive sends with every webhook (set on the webhook; refsync
    /// creates the webhooks with it).
    pub webhook_user: String,
    /// The HTTP Basic password of the webhooks: a long random value, kept secret.
    pub webhook_password: Secret,
    /// The Pipedrive company (account) id. When set, deliveries whose `meta.company_id` differs
    /// are refused, so a webhook of another account cannot qualify referrals here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<String>,
    /// The deal custom field that holds the referral code (leads share deal fields), by its
    /// 40-character key or by its label. A label is resolved through `/v1/dealFields` on first
    /// use; until then webhooks are parsed without a referral code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_code_field: Option<String>,
    /// The Pipedrive user id webhooks are created for (events are filtered by that user's
    /// permissions; use an admin to see everything). Default: the token's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_user_id: Option<u64>,
    /// Seconds a person search result is cached (searches are limited to 10 per 2 seconds and
    /// cost 20 tokens each). Default 300.
    #[serde(default = "default_search_cache_secs")]
    pub search_cache_secs: u64,
    /// Requests per 2-second window the client allows itself (the plan's burst limit: API token
    /// Lite 20, Growth 40, Premium 100, Ultimate 120; OAuth apps 80 to 480). Default 20.
    #[serde(default = "default_burst")]
    pub burst_per_2s: u32,
}

/// How the connector authenticates to Pipedrive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// A personal API token, sent as the `x-api-token` header.
    ApiToken {
        /// The token (Settings > Personal preferences > API).
        token: Secret,
    },
    /// OAuth 2.0: the instance's `[instances.oauth]` table names the app, and
    /// `refsync oauth authorize <instance>` stores the tokens; refsync refreshes the 60-minute
    /// access token ahead of expiry (which also keeps the refresh token's 60-day idle limit at
    /// bay while the bridge runs).
    Oauth {},
}

fn default_search_cache_secs() -> u64 {
    300
}

fn default_burst() -> u32 {
    20
}

/// Whether `s` is shaped like a Pipedrive custom field key (40 lower-case hex characters).
pub fn is_field_key(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Config {
    /// Checks what serde cannot (the client checks `base_url` when it is built).
    pub fn validate(&self) -> Result<()> {
        if let AuthConfig::ApiToken { token } = &self.auth
            && token.is_empty()
        {
            return Err(Error::config(format!("{NAME}: auth.token is empty")));
        }
        if self.webhook_user.trim().is_empty() {
            return Err(Error::config(format!(
                "{NAME}: webhook_user is empty (Pipedrive authenticates webhooks only with HTTP Basic auth)"
            )));
        }
        if self.webhook_password.expose().len() < 16 {
            return Err(Error::config(format!(
                "{NAME}: webhook_password must be at least 16 characters (it is the only proof a webhook comes from Pipedrive)"
            )));
        }
        if let Some(f) = &self.referral_code_field
            && f.trim().is_empty()
        {
            return Err(Error::config(format!(
                "{NAME}: referral_code_field is empty (give the field's key or label, or leave it out)"
            )));
        }
        if self.burst_per_2s == 0 {
            return Err(Error::config(format!(
                "{NAME}: burst_per_2s must be at least 1"
            )));
        }
        Ok(())
    }

    /// The referral-code field's key, when it is configured as a key (not a label).
    pub fn referral_code_key(&self) -> Option<&str> {
        self.referral_code_field
            .as_deref()
            .filter(|f| is_field_key(f))
    }
}
