//! Settings of the HubSpot connector: the `[settings]` table of an instance config.
//!
//! ```toml
//! [instances.settings]
//! auth = { type = "private_app", token = "${env:HUBSPOT_TOKEN}" }   # or { type = "oauth" }
//! client_secret = "${env:HUBSPOT_CLIENT_SECRET}"    # the app's client secret: signs webhooks
//! webhook_url = "https://refsync.example.com/hooks/hubspot"   # the target URL set in HubSpot
//! portal_id = 62515                                 # events of other accounts are ignored
//! referral_code_property = "referral_code"          # contact property (internal name)
//! ```

use refsync_core::{Error, Result, Secret};
use serde::{Deserialize, Serialize};

pub use crate::events::SignatureVersion;

use crate::NAME;

/// HubSpot's API host.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

/// HubSpot's batch endpoints take at most 100 inputs.
pub const MAX_BATCH: usize = 100;

/// Settings of the HubSpot connector (read with `refsync_core::registry::parse_settings`).
///
/// Unknown keys are rejected so typos are caught; secrets are [`Secret`]s, which `Debug`,
/// logs and errors print as `[redacted]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the API (default `https://api.hubapi.com`). Tests point it at the simulator.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// How refsync authenticates to the API.
    pub auth: AuthConfig,
    /// The app's client secret (Development > your app > Auth): HubSpot signs webhooks with
    /// it. With OAuth it is also `[instances.oauth] client_secret`.
    pub client_secret: Secret,
    /// Signature schemes accepted (default `["v3"]`). HubSpot signs webhooks of OAuth apps
    /// with v3 (timestamped, 5-minute replay window); legacy and private-app webhooks carry
    /// only v1 (`"v1"`), workflow webhooks v2 (`"v2"`): neither has a timestamp.
    #[serde(default = "default_signature_versions")]
    pub signature_versions: Vec<SignatureVersion>,
    /// The exact URL HubSpot calls (the app's target URL), which v2 and v3 sign. Default: rebuilt
    /// from the request (`X-Forwarded-Proto`/`X-Forwarded-Host` or `Host`, then the path and
    /// query); set it when a proxy rewrites the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The HubSpot account (portal, "Hub ID"). When set, webhook events of other accounts are
    /// ignored: one app's target URL receives the events of every installing account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_id: Option<u64>,
    /// The app id. When set, webhook events of other apps are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<u64>,
    /// The contact property (internal name, not its label) that holds the referral code
    /// (default `referral_code`).
    #[serde(default = "default_code_property")]
    pub referral_code_property: String,
    /// The deal property (internal name) that holds the referral code on deals refsync creates
    /// (default `referral_code`). It must have unique values (`hasUniqueValue`): pushes upsert
    /// deals by it, so a retried push never creates a second deal.
    #[serde(default = "default_code_property")]
    pub deal_referral_code_property: String,
    /// Creates mapped contact and deal properties that do not exist yet (text properties; the
    /// deal's referral-code property with unique values). Default `false`: a missing property
    /// is a configuration error that names it.
    #[serde(default)]
    pub create_missing_properties: bool,
    /// When the first deal associated with a referred contact counts as the lead's conversion
    /// (a `lead_converted` event; default `true`).
    #[serde(default = "default_true")]
    pub first_deal_is_conversion: bool,
    /// Contact lifecycle stages (`lifecyclestage` values, e.g. `salesqualifiedlead`,
    /// `opportunity`) whose reaching counts as the lead's conversion (default none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conversion_lifecycle_stages: Vec<String>,
    /// Requests per rolling 10 seconds the client allows itself (default 100: HubSpot's
    /// lowest limit, free and starter private apps; public OAuth apps get 110, professional
    /// and enterprise private apps 190).
    #[serde(default = "default_burst")]
    pub requests_per_10s: u32,
}

/// How the connector authenticates to HubSpot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// A private app's access token (Settings > Integrations > Private apps), sent as
    /// `Authorization: Bearer`.
    PrivateApp {
        /// The token.
        token: Secret,
    },
    /// OAuth 2.0: the instance's `[instances.oauth]` table names the app, and
    /// `refsync oauth authorize <instance>` stores the tokens; refsync refreshes the 30-minute
    /// access token ahead of expiry, once for all concurrent callers.
    Oauth {},
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}
fn default_signature_versions() -> Vec<SignatureVersion> {
    vec![SignatureVersion::V3]
}
fn default_code_property() -> String {
    "referral_code".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_burst() -> u32 {
    100
}

/// Whether `name` can be a HubSpot property's internal name (lower-case letters, digits and
/// `_`, starting with a letter).
pub(crate) fn is_property_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Config {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        if let AuthConfig::PrivateApp { token } = &self.auth
            && token.is_empty()
        {
            return Err(Error::config(format!("{NAME}: auth.token is empty")));
        }
        if self.client_secret.is_empty() {
            return Err(Error::config(format!(
                "{NAME}: client_secret is empty (HubSpot signs webhooks with the app's client secret)"
            )));
        }
        if self.signature_versions.is_empty() {
            return Err(Error::config(format!(
                "{NAME}: signature_versions is empty; accept at least \"v3\""
            )));
        }
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return Err(Error::config(format!(
                "{NAME}: base_url must be an absolute http(s) URL, got {:?}",
                self.base_url
            )));
        }
        if let Some(url) = &self.webhook_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(Error::config(format!(
                "{NAME}: webhook_url must be the absolute URL HubSpot calls, got {url:?}"
            )));
        }
        for (key, name) in [
            ("referral_code_property", &self.referral_code_property),
            (
                "deal_referral_code_property",
                &self.deal_referral_code_property,
            ),
        ] {
            if !is_property_name(name) {
                return Err(Error::config(format!(
                    "{NAME}: {key} {name:?} is not a property's internal name (lower case, digits and _; the label shown in HubSpot is not the name)"
                )));
            }
        }
        if self.requests_per_10s == 0 {
            return Err(Error::config(format!(
                "{NAME}: requests_per_10s must be at least 1"
            )));
        }
        Ok(())
    }
}
