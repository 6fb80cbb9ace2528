#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
pub mod config;
mod events;
mod mapping;
mod push;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::registry::{normalize_settings, parse_settings};
use refsync_core::{
    BuildContext, Capabilities, Connector, ConnectorDescriptor, ConnectorInfo, CrmEvent, Error,
    Placeholder, PushOutcome, PushSpec, ReferredUser, Registry, Result, Verification, WebhookReply,
    WebhookRequest,
};
use refsync_http::oauth::TokenManager;

pub use crate::config::Config;

use crate::client::Client;
use crate::events::{ParseOptions, VerifyOptions};

/// The registry name of this connector; also the `source` of its events and its facade feature.
pub const NAME: &str = "salesforce";

/// Static facts about the connector. Keep `capabilities` equal to `[package.metadata.refsync]`
/// in Cargo.toml (the conformance test `info::matches_manifest` checks it).
pub const INFO: ConnectorInfo = ConnectorInfo {
    name: NAME,
    display_name: "Salesforce",
    // REST API (version pinned in the settings, default 62.0); SOAP outbound messages.
    api_version: "REST v62.0 + outbound messages",
    capabilities: Capabilities {
        webhooks: true,
        push: true,
        duplicate_lookup: true,
        batching: true,
        ..Capabilities::NONE
    },
    // Records are keyed by the referral code (external id); the email finds duplicates.
    required_mappings: &[Placeholder::Email, Placeholder::ReferralCode],
};

/// The Salesforce connector: build it with [`SalesforceConnector::new`] or through the registry.
#[derive(Debug)]
pub struct SalesforceConnector {
    config: Config,
    client: Client,
    parse_options: ParseOptions,
}

impl SalesforceConnector {
    /// Builds the connector from checked settings; `oauth` is the instance's token manager when
    /// `auth.type = "oauth"`. The JWT bearer flow's key file is read here.
    pub fn new(config: Config, oauth: Option<TokenManager>) -> Result<Self> {
        config.validate()?;
        let client = Client::new(&config, oauth)?;
        let parse_options = ParseOptions {
            referral_code_field: Some(config.external_id_field.clone()),
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
impl Connector for SalesforceConnector {
    fn info(&self) -> ConnectorInfo {
        INFO
    }

    /// Outbound messages carry no signature: the endpoint URL's `token` (constant time) and
    /// the message's OrganizationId (allow-list) are checked.
    fn verify(&self, request: &WebhookRequest, _now: DateTime<Utc>) -> Result<Verification> {
        let opts = VerifyOptions {
            endpoint_token: &self.config.endpoint_token,
            organization_ids: &self.config.organization_ids,
        };
        events::verify(&opts, request).map_err(|e| e.with_connector(NAME).with_operation("verify"))
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
        events::parse(&self.parse_options, request)
            .map_err(|e| e.with_connector(NAME).with_operation("parse"))
    }

    /// An accepted outbound message is answered with the SOAP `notificationsResponse` Ack;
    /// anything else makes Salesforce resend it for 24 hours.
    fn acknowledgement(&self, request: &WebhookRequest) -> Option<WebhookReply> {
        events::is_outbound_message(request).then(events::ack)
    }

    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        self.push_referrals(std::slice::from_ref(user), spec)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::unexpected("no push result")))
    }

    /// 200 records per sObject Collections call; see the `push` module.
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

    /// `GET /limits`: credentials, instance and API access.
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
    tracing::debug!(connector = NAME, api_version = %config.api_version, "building connector");
    let oauth = context.get::<TokenManager>().cloned();
    Ok(Arc::new(SalesforceConnector::new(config, oauth)?))
}

/// Adds this connector to `registry` (the facade calls it when the `salesforce` feature is on).
pub fn register(registry: &mut Registry) {
    registry.register_connector(ConnectorDescriptor {
        info: INFO,
        build,
        normalize_settings: normalize_settings::<Config>,
    });
}
