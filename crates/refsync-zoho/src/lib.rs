#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
pub mod config;
mod enrich;
mod events;
mod mapping;
mod push;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration as TimeDelta, SecondsFormat, Utc};
use refsync_core::registry::{normalize_settings, parse_settings};
use refsync_core::{
    BuildContext, Capabilities, Connector, ConnectorDescriptor, ConnectorInfo, CrmEvent, Error,
    ErrorKind, Placeholder, PushOutcome, PushSpec, ReferredUser, Registry, Result, Verification,
    WebhookRequest,
};
use refsync_http::oauth::TokenManager;
use serde_json::{Value, json};

pub use crate::config::Config;

use crate::client::Client;
use crate::events::{ParseOptions, VerifyOptions};

/// The registry name of this connector; also the `source` of its events and its facade feature.
pub const NAME: &str = "zoho";

/// Static facts about the connector. Keep `capabilities` equal to `[package.metadata.refsync]`
/// in Cargo.toml (the conformance test `info::matches_manifest` checks it).
pub const INFO: ConnectorInfo = ConnectorInfo {
    name: NAME,
    display_name: "Zoho CRM",
    // Records, upsert, search, fields, pipelines and notifications of API v8.
    api_version: "v8",
    capabilities: Capabilities {
        webhooks: true,
        push: true,
        duplicate_lookup: true,
        enrich: true,
        subscriptions: true,
        batching: true,
        ..Capabilities::NONE
    },
    // Leads and contacts are found by email; the referral code is what qualifies them later.
    required_mappings: &[Placeholder::Email, Placeholder::ReferralCode],
};

/// The Zoho CRM connector: build it with [`ZohoConnector::new`] or through the registry.
#[derive(Debug)]
pub struct ZohoConnector {
    config: Config,
    client: Client,
    parse_options: ParseOptions,
}

impl ZohoConnector {
    /// Builds the connector from checked settings; `oauth` is the instance's token manager when
    /// `auth.type = "oauth"`.
    pub fn new(config: Config, oauth: Option<TokenManager>) -> Result<Self> {
        config.validate()?;
        let client = Client::new(&config, oauth)?;
        let parse_options = ParseOptions {
            referral_code_field: Some(config.referral_code_field.clone()),
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

    /// The watch request of this instance's channel, expiring `channel_expiry_hours` from `now`.
    fn watch(&self, callback_url: &str, now: DateTime<Utc>) -> Value {
        let expiry =
            now + TimeDelta::hours(i64::try_from(self.config.channel_expiry_hours).unwrap_or(168));
        let events: Vec<String> = self
            .config
            .watch_modules
            .iter()
            .map(|m| format!("{m}.all"))
            .collect();
        json!({
            "channel_id": self.config.channel_id,
            "events": events,
            "notify_url": callback_url,
            "token": self.config.notification_token.expose(),
            // Zoho refuses expiry times with milliseconds.
            "channel_expiry": expiry.to_rfc3339_opts(SecondsFormat::Secs, true),
            "return_affected_field_values": true,
        })
    }

    /// Creates the channel, or renews it when it expires within `renew_before_hours` or
    /// watches something else; a channel Zoho already dropped (`NOT_SUBSCRIBED`) is re-created.
    async fn subscriptions(&self, callback_url: &str) -> Result<Vec<String>> {
        let now = Utc::now();
        let id = self.config.channel_id.clone();
        let want = self.watch(callback_url, now);
        let current = self.client.channel(&id).await?;
        let Some(current) = current else {
            tracing::info!(connector = NAME, channel = %id, "no notification channel (never created, or expired and dropped by Zoho): creating it");
            self.client.put_channel(want, false).await?;
            return Ok(vec![id]);
        };
        let expires = current
            .get("channel_expiry")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        let renew_at =
            now + TimeDelta::hours(i64::try_from(self.config.renew_before_hours).unwrap_or(48));
        let same_url = current.get("notify_url").and_then(Value::as_str) == Some(callback_url);
        let mut events: Vec<String> = current
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect();
        events.sort();
        let mut wanted: Vec<String> = want["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect();
        wanted.sort();
        if same_url && events == wanted && expires.is_some_and(|e| e > renew_at) {
            return Ok(vec![id]);
        }
        tracing::info!(connector = NAME, channel = %id, expires = ?expires, "renewing the notification channel");
        match self.client.put_channel(want.clone(), true).await {
            Err(e) if matches!(e.kind(), ErrorKind::NotFound) => {
                tracing::warn!(connector = NAME, channel = %id, "Zoho no longer has the channel (NOT_SUBSCRIBED): re-creating it");
                self.client.put_channel(want, false).await?;
            }
            other => other?,
        }
        Ok(vec![id])
    }
}

#[async_trait]
impl Connector for ZohoConnector {
    fn info(&self) -> ConnectorInfo {
        INFO
    }

    /// Notifications: the channel's token (constant time) and id; workflow-rule webhooks: the
    /// workflow secret in the URL or a header.
    fn verify(&self, request: &WebhookRequest, _now: DateTime<Utc>) -> Result<Verification> {
        let opts = VerifyOptions {
            notification_token: &self.config.notification_token,
            channel_id: &self.config.channel_id,
            workflow_secret: self.config.workflow_secret.as_ref(),
        };
        events::verify(&opts, request).map_err(|e| e.with_connector(NAME).with_operation("verify"))
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

    /// See the `enrich` module: the delivery's records read by ids, stages resolved through
    /// the pipelines, conversions added.
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

    /// 100 records per call; see the `push` module for the calls of each duplicate policy.
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

    /// Reads one lead (token, data centre, scope).
    async fn health_check(&self) -> Result<()> {
        self.client
            .ping()
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("health_check"))
    }

    /// The notification channel towards `callback_url`: created, renewed before it expires,
    /// re-created when Zoho dropped it.
    async fn ensure_subscriptions(&self, callback_url: &str) -> Result<Vec<String>> {
        self.subscriptions(callback_url).await.map_err(|e| {
            e.with_connector(NAME)
                .with_operation("ensure_subscriptions")
        })
    }
}

/// Builds the connector from an instance's `[settings]` (the registry's constructor); the
/// context's `TokenManager` serves `auth.type = "oauth"`.
fn build(settings: &serde_json::Value, context: &BuildContext) -> Result<Arc<dyn Connector>> {
    let config: Config = parse_settings(settings)?;
    tracing::debug!(connector = NAME, api_domain = ?config.api_domain, "building connector");
    let oauth = context.get::<TokenManager>().cloned();
    Ok(Arc::new(ZohoConnector::new(config, oauth)?))
}

/// Adds this connector to `registry` (the facade calls it when the `zoho` feature is on).
pub fn register(registry: &mut Registry) {
    registry.register_connector(ConnectorDescriptor {
        info: INFO,
        build,
        normalize_settings: normalize_settings::<Config>,
    });
}
