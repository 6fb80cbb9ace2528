//! Settings of the Salesforce connector: the `[settings]` table of an instance config.

use refsync_core::{Error, Result, Secret};
use serde::{Deserialize, Serialize};

use crate::NAME;

/// Settings of the Salesforce connector (read with `refsync_core::registry::parse_settings`).
///
/// Unknown keys are rejected so typos are caught; secrets are [`Secret`]s, which `Debug`,
/// logs and errors print as `[redacted]`.
// TODO(salesforce): replace `api_token` with Salesforce's auth scheme (API key header, OAuth2
// client credentials...) and add the settings the connector needs (custom field keys,
// pipeline ids...). Document every field: docs/connectors/salesforce.md repeats them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the Salesforce API, e.g. `https://api.example.com` (no trailing slash).
    /// Tests point it at the simulator.
    pub base_url: String,
    /// API token refsync authenticates with.
    pub api_token: Secret,
    /// Secret Salesforce signs its webhooks with.
    pub webhook_secret: Secret,
}

impl Config {
    /// Checks what serde cannot (the client checks `base_url` when it is built).
    pub fn validate(&self) -> Result<()> {
        if self.api_token.is_empty() {
            return Err(Error::config(format!("{NAME}: api_token is empty")));
        }
        if self.webhook_secret.is_empty() {
            return Err(Error::config(format!("{NAME}: webhook_secret is empty")));
        }
        Ok(())
    }
}
