#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod events;
pub mod mapping;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::registry::{normalize_settings, parse_settings};
use refsync_core::{
    Capabilities, Connector, ConnectorDescriptor, ConnectorInfo, CrmEvent, CrmObjectRef, Error,
    Placeholder, PushAction, PushOutcome, PushSpec, ReferredUser, Registry, Result, Verification,
    WebhookRequest,
};

pub use config::GenericWebhookConfig;

/// Registry name; also the `source` of the events this connector produces.
pub const NAME: &str = "generic-webhook";

/// Static facts.
pub const INFO: ConnectorInfo = ConnectorInfo {
    name: NAME,
    display_name: "Generic webhook",
    api_version: "n/a (declarative)",
    capabilities: Capabilities {
        webhooks: true,
        push: true,
        ..Capabilities::NONE
    },
    required_mappings: &[Placeholder::Email, Placeholder::ReferralCode],
};

/// The generic-webhook connector.
#[derive(Debug)]
pub struct GenericWebhook {
    config: GenericWebhookConfig,
    push: Option<client::PushClient>,
}

impl GenericWebhook {
    /// Builds the connector, checking the settings.
    pub fn new(config: GenericWebhookConfig) -> Result<Self> {
        config.validate().map_err(|e| e.with_connector(NAME))?;
        let push = config
            .push
            .clone()
            .map(client::PushClient::new)
            .transpose()?;
        Ok(GenericWebhook { config, push })
    }
}

/// Registers the connector.
pub fn register(registry: &mut Registry) {
    registry.register_connector(ConnectorDescriptor {
        info: INFO,
        build: |settings, _| Ok(Arc::new(GenericWebhook::new(parse_settings(settings)?)?)),
        normalize_settings: normalize_settings::<GenericWebhookConfig>,
    });
}

#[async_trait]
impl Connector for GenericWebhook {
    fn info(&self) -> ConnectorInfo {
        INFO
    }

    fn verify(&self, request: &WebhookRequest, now: DateTime<Utc>) -> Result<Verification> {
        events::verify(&self.config, request, now)
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
        events::parse(&self.config, request)
    }

    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        let op = |e: Error| e.with_connector(NAME).with_operation("push_referral");
        spec.fields
            .check_required(INFO.required_mappings)
            .map_err(op)?;
        let Some(client) = &self.push else {
            return Err(op(Error::config(
                "no [settings.push] target is configured: this instance cannot push",
            )));
        };
        let target = self.config.push.as_ref().and_then(|p| p.body.as_ref());
        let body = mapping::render_body(target, user, spec);
        let response = client.send(body).await?;
        let id = self
            .config
            .push
            .as_ref()
            .and_then(|p| p.response_id.as_deref())
            .and_then(|ptr| response.json_value().ok()?.pointer(ptr).cloned())
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        Ok(PushOutcome {
            action: PushAction::Delivered,
            links: id
                .map(|id| CrmObjectRef {
                    kind: spec.object.clone(),
                    id,
                })
                .into_iter()
                .collect(),
            warnings: Vec::new(),
        })
    }

    async fn health_check(&self) -> Result<()> {
        match &self.push {
            Some(c) => c.health().await,
            None => Err(
                Error::unsupported("no [settings.push] target is configured").with_connector(NAME),
            ),
        }
    }
}
