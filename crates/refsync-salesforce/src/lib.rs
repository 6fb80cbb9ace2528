#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
pub mod config;
mod events;
mod mapping;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::registry::{normalize_settings, parse_settings};
use refsync_core::{
    BuildContext, Capabilities, Connector, ConnectorDescriptor, ConnectorInfo, CrmEvent,
    Placeholder, PushOutcome, PushSpec, ReferredUser, Registry, Result, Verification,
    WebhookRequest,
};

pub use crate::config::Config;

use crate::client::Client;

/// The registry name of this connector; also the `source` of its events and its facade feature.
pub const NAME: &str = "salesforce";

/// Static facts about the connector. Keep `capabilities` equal to `[package.metadata.refsync]`
/// in Cargo.toml (the conformance test `info::matches_manifest` checks it).
pub const INFO: ConnectorInfo = ConnectorInfo {
    name: NAME,
    display_name: "Salesforce",
    // TODO(salesforce): pin the vendor API version the connector is written against.
    api_version: "unpinned",
    capabilities: Capabilities {
        webhooks: true,
        push: true,
        duplicate_lookup: true,
        ..Capabilities::NONE
    },
    // TODO(salesforce): the placeholders Salesforce cannot do without (e.g. a required name field).
    required_mappings: &[
        Placeholder::Email,
        Placeholder::FirstName,
        Placeholder::ReferralCode,
    ],
};

/// The Salesforce connector: build it with [`SalesforceConnector::new`] or through the registry.
#[derive(Debug)]
pub struct SalesforceConnector {
    config: Config,
    client: Client,
}

impl SalesforceConnector {
    /// Builds the connector from checked settings.
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let client = Client::new(&config)?;
        Ok(Self { config, client })
    }

    /// The settings the connector was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

#[async_trait]
impl Connector for SalesforceConnector {
    fn info(&self) -> ConnectorInfo {
        INFO
    }

    fn verify(&self, request: &WebhookRequest, now: DateTime<Utc>) -> Result<Verification> {
        events::verify(&self.config, request, now)
            .map_err(|e| e.with_connector(NAME).with_operation("verify"))
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
        events::parse(request).map_err(|e| e.with_connector(NAME).with_operation("parse"))
    }

    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        let fields = mapping::fields(user, spec)
            .map_err(|e| e.with_connector(NAME).with_operation("push_referral"))?;
        self.client
            .push_referral(user, &fields, spec)
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("push_referral"))
    }

    async fn health_check(&self) -> Result<()> {
        self.client
            .health_check()
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("health_check"))
    }
}

/// Builds the connector from an instance's `[settings]` (the registry's constructor). The
/// context carries what the host provides, e.g. an OAuth2 `TokenManager` for instances with an
/// `[instances.oauth]` table.
fn build(settings: &serde_json::Value, _context: &BuildContext) -> Result<Arc<dyn Connector>> {
    let config: Config = parse_settings(settings)?;
    tracing::debug!(connector = NAME, base_url = %config.base_url, "building connector");
    Ok(Arc::new(SalesforceConnector::new(config)?))
}

/// Adds this connector to `registry` (the facade calls it when the `salesforce` feature is on).
pub fn register(registry: &mut Registry) {
    registry.register_connector(ConnectorDescriptor {
        info: INFO,
        build,
        normalize_settings: normalize_settings::<Config>,
    });
}
