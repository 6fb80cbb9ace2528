//! Settings of the Zoho CRM connector: the `[settings]` table of an instance config.
//!
//! ```toml
//! [instances.settings]
//! auth = { type = "self_client", client_id = "1000.X", client_secret = "${env:ZOHO_CLIENT_SECRET}",
//!          refresh_token = "${env:ZOHO_REFRESH_TOKEN}", accounts_url = "https://accounts.zoho.eu" }
//! notification_token = "${env:ZOHO_NOTIFICATION_TOKEN}"   # echoed in every notification
//! channel_id = "1000000068001"
//! referral_code_field = "Referral_Code"
//! ```

use refsync_core::{Error, Result, Secret};
use serde::{Deserialize, Serialize};

use crate::NAME;

/// Zoho's API domain in the US data centre; the token response's `api_domain` wins.
pub const DEFAULT_API_DOMAIN: &str = "https://www.zohoapis.com";

/// Records per insert, update or upsert call.
pub const MAX_BATCH: usize = 100;

/// The longest channel expiry Zoho accepts (API v4 and later): a week.
pub const MAX_CHANNEL_EXPIRY_HOURS: u64 = 168;

/// Settings of the Zoho CRM connector (read with `refsync_core::registry::parse_settings`).
///
/// Unknown keys are rejected so typos are caught; secrets are [`Secret`]s, which `Debug`,
/// logs and errors print as `[redacted]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The API domain (`https://www.zohoapis.eu`...). Default: the `api_domain` of the token
    /// response (Zoho names the data centre there), else `https://www.zohoapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_domain: Option<String>,
    /// How refsync gets access tokens.
    pub auth: AuthConfig,
    /// The token set on the notification channel (at most 50 characters, at least 16): Zoho
    /// echoes it in every notification, and it is the only proof a notification comes from
    /// Zoho.
    pub notification_token: Secret,
    /// The notification channel's id: a number you choose, unique in the Zoho organisation.
    pub channel_id: String,
    /// Modules the channel watches (all operations): default `["Leads", "Contacts", "Deals"]`.
    #[serde(default = "default_watch_modules")]
    pub watch_modules: Vec<String>,
    /// Hours a channel lives before it must be renewed (default and maximum 168, a week).
    #[serde(default = "default_channel_expiry")]
    pub channel_expiry_hours: u64,
    /// Renew the channel when it expires within this many hours (default 48). refsync serve's
    /// upkeep round (every 15 minutes by default) checks it.
    #[serde(default = "default_renew_before")]
    pub renew_before_hours: u64,
    /// The API name (or label) of the field holding the referral code on Leads, Contacts and
    /// Deals (default `Referral_Code`). Lead conversion carries it to the contact and the deal
    /// only when the lead-conversion mapping maps it (Setup > Customization > Modules and Fields
    /// > Leads > Lead Conversion Mapping).
    #[serde(default = "default_code_field")]
    pub referral_code_field: String,
    /// The field pushes find existing records by (`duplicate_check_fields`): default `Email`
    /// for leads and contacts, the referral-code field for deals (it must then be unique: "Do
    /// not allow duplicate values").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_check_field: Option<String>,
    /// Whether pushes run the module's workflow rules, approvals and blueprints (default true).
    #[serde(default = "default_true")]
    pub trigger_workflows: bool,
    /// The secret of workflow-rule webhooks (Setup > Automation > Actions > Webhooks), sent as
    /// the URL parameter `refsync_token` or the header `X-Refsync-Token`. Without it such
    /// webhooks are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_secret: Option<Secret>,
    /// API calls in flight at once (default 10: Zoho's sub-concurrency limit for heavy calls).
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
}

/// How the connector gets access tokens (Zoho has no static API keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// A "Self Client" (Zoho API console): its refresh token, generated once for the
    /// organisation. refsync refreshes the one-hour access token itself, ahead of expiry and once
    /// for all concurrent callers (a refresh token mints at most 10 access tokens per 10
    /// minutes).
    SelfClient {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
        /// The refresh token (generated with `access_type=offline`).
        refresh_token: Secret,
        /// The accounts server of the organisation's data centre (default
        /// `https://accounts.zoho.com`; `.eu`, `.in`, `.com.au`, `.jp`, `.com.cn`, `.ca`, `.sa`).
        #[serde(default = "default_accounts_url")]
        accounts_url: String,
    },
    /// OAuth 2.0 web flow: the instance's `[instances.oauth]` table names the app (token URL of
    /// the data centre, `client_auth = "request_body"`, `authorize_params = { access_type =
    /// "offline", prompt = "consent" }`), and `refsync oauth authorize <instance>` stores the
    /// tokens.
    Oauth {},
}

fn default_watch_modules() -> Vec<String> {
    ["Leads", "Contacts", "Deals"].map(String::from).to_vec()
}
fn default_channel_expiry() -> u64 {
    MAX_CHANNEL_EXPIRY_HOURS
}
fn default_renew_before() -> u64 {
    48
}
fn default_code_field() -> String {
    "Referral_Code".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_concurrency() -> usize {
    10
}
fn default_accounts_url() -> String {
    "https://accounts.zoho.com".to_owned()
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

impl Config {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::config(format!("{NAME}: {msg}")));
        let token = self.notification_token.expose();
        if token.len() < 16 || token.len() > 50 {
            return bad(format!(
                "notification_token must be 16 to 50 characters (Zoho accepts at most 50), got {}",
                token.len()
            ));
        }
        if self.channel_id.is_empty()
            || self.channel_id.len() > 18
            || !self.channel_id.bytes().all(|b| b.is_ascii_digit())
        {
            return bad(format!(
                "channel_id must be a number (digits only, at most 18), got {:?}",
                self.channel_id
            ));
        }
        if self.watch_modules.is_empty() {
            return bad("watch_modules is empty".to_owned());
        }
        if self.channel_expiry_hours == 0 || self.channel_expiry_hours > MAX_CHANNEL_EXPIRY_HOURS {
            return bad(format!(
                "channel_expiry_hours must be 1 to {MAX_CHANNEL_EXPIRY_HOURS} (Zoho's maximum, a week)"
            ));
        }
        if self.renew_before_hours >= self.channel_expiry_hours {
            return bad(
                "renew_before_hours must be less than channel_expiry_hours (or the channel is renewed on every check)"
                    .to_owned(),
            );
        }
        if self.referral_code_field.trim().is_empty() {
            return bad("referral_code_field is empty".to_owned());
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency must be at least 1".to_owned());
        }
        if let Some(d) = &self.api_domain
            && !is_http_url(d)
        {
            return bad(format!("api_domain must be an http(s) URL, got {d:?}"));
        }
        if let Some(s) = &self.workflow_secret
            && s.expose().len() < 16
        {
            return bad("workflow_secret must be at least 16 characters".to_owned());
        }
        if let AuthConfig::SelfClient {
            client_id,
            client_secret,
            refresh_token,
            accounts_url,
        } = &self.auth
        {
            if client_id.trim().is_empty() || client_secret.is_empty() || refresh_token.is_empty() {
                return bad(
                    "auth: client_id, client_secret and refresh_token are required".to_owned(),
                );
            }
            if !is_http_url(accounts_url) {
                return bad(format!(
                    "auth.accounts_url must be the data centre's accounts server (https://accounts.zoho.com, .eu, .in...), got {accounts_url:?}"
                ));
            }
        }
        Ok(())
    }
}
