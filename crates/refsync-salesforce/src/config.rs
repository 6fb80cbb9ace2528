//! Settings of the Salesforce connector: the `[settings]` table of an instance config.
//!
//! ```toml
//! [instances.settings]
//! auth = { type = "jwt_bearer", client_id = "3MVG9...", username = "integration@acme.com",
//!          private_key_file = "/etc/refsync/salesforce.key" }
//! endpoint_token = "${env:SALESFORCE_ENDPOINT_TOKEN}"   # ?token=... in the outbound message URL
//! organization_ids = ["00D5w000004qGTO"]
//! external_id_field = "Referral_Code__c"
//! ```

use refsync_core::{Error, Result, Secret};
use serde::{Deserialize, Serialize};

use crate::NAME;

/// Records per sObject Collections call.
pub const MAX_BATCH: usize = 200;

/// Settings of the Salesforce connector (read with `refsync_core::registry::parse_settings`).
///
/// Unknown keys are rejected so typos are caught; secrets are [`Secret`]s, which `Debug`,
/// logs and errors print as `[redacted]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The REST API version, pinned (default `62.0`).
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// How refsync gets access tokens.
    pub auth: AuthConfig,
    /// The org's instance URL (`https://acme.my.salesforce.com`). Default: the `instance_url` of
    /// the token response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<String>,
    /// The secret in the outbound messages' endpoint URL (`…/hooks/<instance>?token=<secret>`),
    /// at least 24 characters: outbound messages carry no signature.
    pub endpoint_token: Secret,
    /// Organization ids whose outbound messages are accepted (15 or 18 characters; the first 15
    /// are compared).
    pub organization_ids: Vec<String>,
    /// The External ID field (unique) holding the referral code on Leads and Contacts — pushes
    /// upsert by it — and, with the lead field mapping, on Opportunities (default
    /// `Referral_Code__c`).
    #[serde(default = "default_external_id")]
    pub external_id_field: String,
    /// Sends `Sforce-Duplicate-Rule-Header: allowSave=true` so duplicate rules that allow saving
    /// do not block pushes (default false: a `DUPLICATES_DETECTED` refusal fails the push).
    #[serde(default)]
    pub duplicate_rule_allow_save: bool,
    /// Percent of the org's daily API allocation refsync leaves to other integrations: when
    /// `Sforce-Limit-Info` says less is left, calls wait (default 10).
    #[serde(default = "default_reserve")]
    pub api_reserve_percent: u8,
}

/// How the connector gets access tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// OAuth 2.0 JWT bearer flow (server to server): an RS256 assertion signed with the private
    /// key whose certificate is uploaded to the connected app; the user must be pre-authorised.
    /// No refresh token: a new assertion is made when the session expires.
    JwtBearer {
        /// The connected app's consumer key.
        client_id: String,
        /// The Salesforce user refsync acts as.
        username: String,
        /// Path of the PEM private key (PKCS#8 or PKCS#1).
        private_key_file: String,
        /// The login host (default `https://login.salesforce.com`; sandboxes
        /// `https://test.salesforce.com`, or the My Domain URL). Also the assertion's audience.
        #[serde(default = "default_login_url")]
        login_url: String,
    },
    /// OAuth 2.0 web server flow: the instance's `[instances.oauth]` table names the connected
    /// app, and `refsync oauth authorize <instance>` stores the tokens; an `INVALID_SESSION_ID`
    /// answer refreshes the session once.
    Oauth {},
}

fn default_api_version() -> String {
    "62.0".to_owned()
}
fn default_external_id() -> String {
    "Referral_Code__c".to_owned()
}
fn default_reserve() -> u8 {
    10
}
fn default_login_url() -> String {
    "https://login.salesforce.com".to_owned()
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

impl Config {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::config(format!("{NAME}: {msg}")));
        let v = self.api_version.trim();
        if v.split('.').count() != 2 || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return bad(format!("api_version must look like \"62.0\", got {v:?}"));
        }
        if self.endpoint_token.expose().len() < 24 {
            return bad(
                "endpoint_token must be at least 24 characters (outbound messages carry no signature: the URL's token is the proof)"
                    .to_owned(),
            );
        }
        if self.organization_ids.is_empty() {
            return bad(
                "organization_ids is empty: name the org(s) whose outbound messages are accepted"
                    .to_owned(),
            );
        }
        for id in &self.organization_ids {
            if !(id.len() == 15 || id.len() == 18) || !id.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return bad(format!(
                    "organization id {id:?} must be 15 or 18 letters and digits (Setup > Company Information)"
                ));
            }
        }
        if self.external_id_field.trim().is_empty() {
            return bad("external_id_field is empty".to_owned());
        }
        if self.api_reserve_percent > 90 {
            return bad("api_reserve_percent must be at most 90".to_owned());
        }
        if let Some(url) = &self.instance_url
            && !is_http_url(url)
        {
            return bad(format!("instance_url must be an http(s) URL, got {url:?}"));
        }
        if let AuthConfig::JwtBearer {
            client_id,
            username,
            private_key_file,
            login_url,
        } = &self.auth
        {
            if client_id.trim().is_empty() || username.trim().is_empty() {
                return bad("auth: client_id and username are required".to_owned());
            }
            if private_key_file.trim().is_empty() {
                return bad("auth.private_key_file is empty".to_owned());
            }
            if !is_http_url(login_url) {
                return bad(format!(
                    "auth.login_url must be https://login.salesforce.com, https://test.salesforce.com or your My Domain URL, got {login_url:?}"
                ));
            }
        }
        Ok(())
    }
}
