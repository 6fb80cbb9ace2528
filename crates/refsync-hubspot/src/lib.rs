#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
pub mod config;
mod enrich;
mod events;
mod mapping;
mod push;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::registry::{normalize_settings, parse_settings};
use refsync_core::{
    BuildContext, Capabilities, Connector, ConnectorDescriptor, ConnectorInfo, CrmEvent, Error,
    Placeholder, PushOutcome, PushSpec, ReferredUser, Registry, Result, Verification,
    WebhookRequest,
};
use refsync_http::oauth::TokenManager;

pub use crate::config::{Config, SignatureVersion};

use crate::client::Client;
use crate::events::{ParseOptions, VerifyOptions};

/// The registry name of this connector; also the `source` of its events and its facade feature.
pub const NAME: &str = "hubspot";

/// How old a v3-signed request may be (HubSpot's SDKs: 5 minutes).
const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);

/// Static facts about the connector. Keep `capabilities` equal to `[package.metadata.refsync]`
/// in Cargo.toml (the conformance test `info::matches_manifest` checks it).
pub const INFO: ConnectorInfo = ConnectorInfo {
    name: NAME,
    display_name: "HubSpot",
    // CRM objects, associations, properties and pipelines API v3; webhooks API v3 payloads.
    api_version: "crm-v3",
    capabilities: Capabilities {
        webhooks: true,
        push: true,
        duplicate_lookup: true,
        enrich: true,
        batching: true,
        ..Capabilities::NONE
    },
    // Contacts are keyed by email; the referral code is what qualifies them later.
    required_mappings: &[Placeholder::Email, Placeholder::ReferralCode],
};

/// The HubSpot connector: build it with [`HubSpotConnector::new`] or through the registry.
#[derive(Debug)]
pub struct HubSpotConnector {
    config: Config,
    client: Client,
    parse_options: ParseOptions,
}

impl HubSpotConnector {
    /// Builds the connector from checked settings; `oauth` is the instance's token manager when
    /// `auth.type = "oauth"`.
    pub fn new(config: Config, oauth: Option<TokenManager>) -> Result<Self> {
        config.validate()?;
        let client = Client::new(&config, oauth)?;
        let parse_options = ParseOptions {
            portal_id: config.portal_id,
            app_id: config.app_id,
            contact_code_property: Some(config.referral_code_property.clone()),
            deal_code_property: Some(config.deal_referral_code_property.clone()),
            conversion_lifecycle_stages: config
                .conversion_lifecycle_stages
                .iter()
                .map(|s| s.trim().to_lowercase())
                .collect(),
        };
        Ok(Self {
            config,
            client,
            parse_options,
        })
    }

    /// The settings the connector was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

#[async_trait]
impl Connector for HubSpotConnector {
    fn info(&self) -> ConnectorInfo {
        INFO
    }

    /// v3 (`X-HubSpot-Signature-v3`, HMAC-SHA256 of method, URL, body and timestamp, 5-minute
    /// window), or v1/v2 where `signature_versions` allows them; constant-time comparisons.
    fn verify(&self, request: &WebhookRequest, now: DateTime<Utc>) -> Result<Verification> {
        let opts = VerifyOptions {
            client_secret: &self.config.client_secret,
            versions: &self.config.signature_versions,
            webhook_url: self.config.webhook_url.as_deref(),
            tolerance: SIGNATURE_TOLERANCE,
        };
        events::verify(&opts, request, now)
            .map_err(|e| e.with_connector(NAME).with_operation("verify"))
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
        events::parse(&self.parse_options, request)
            .map_err(|e| e.with_connector(NAME).with_operation("parse"))
    }

    /// The event itself, enriched (the events `enrich_batch` derives from it are dropped).
    async fn enrich(&self, event: CrmEvent) -> Result<CrmEvent> {
        let enriched = self.enrich_batch(vec![event.clone()]).await?;
        Ok(enriched.into_iter().next().unwrap_or(event))
    }

    /// See the `enrich` module: deals, their contacts and stages are read in batch calls; a
    /// closed-won (closed-lost) stage adds `status_changed` `won` (`lost`); a contact's first
    /// deal adds `lead_converted`.
    async fn enrich_batch(&self, events: Vec<CrmEvent>) -> Result<Vec<CrmEvent>> {
        enrich::enrich_all(&self.client, &self.config, events)
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("enrich"))
    }

    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        self.push_referrals(std::slice::from_ref(user), spec)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::unexpected("no push result")))
    }

    /// Contacts upserted by email 100 per call (and deals by their unique referral-code
    /// property); see the `push` module for the calls each duplicate policy makes.
    async fn push_referrals(
        &self,
        users: &[ReferredUser],
        spec: &PushSpec,
    ) -> Vec<Result<PushOutcome>> {
        push::push_many(&self.client, &self.config, users, spec)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| e.with_connector(NAME).with_operation("push_referral")))
            .collect()
    }

    /// Reads one contact (checks the token and the `crm.objects.contacts.read` scope).
    async fn health_check(&self) -> Result<()> {
        self.client
            .ping()
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("health_check"))
    }
}

/// Builds the connector from an instance's `[settings]` (the registry's constructor); the
/// context's `TokenManager` serves `auth.type = "oauth"`.
fn build(settings: &serde_json::Value, context: &BuildContext) -> Result<Arc<dyn Connector>> {
    let config: Config = parse_settings(settings)?;
    tracing::debug!(connector = NAME, base_url = %config.base_url, "building connector");
    let oauth = context.get::<TokenManager>().cloned();
    Ok(Arc::new(HubSpotConnector::new(config, oauth)?))
}

/// Adds this connector to `registry` (the facade calls it when the `hubspot` feature is on).
pub fn register(registry: &mut Registry) {
    registry.register_connector(ConnectorDescriptor {
        info: INFO,
        build,
        normalize_settings: normalize_settings::<Config>,
    });
}
