#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
pub mod config;
mod events;
mod mapping;
mod state;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::registry::{normalize_settings, parse_settings};
use refsync_core::{
    BuildContext, Capabilities, Change, Connector, ConnectorDescriptor, ConnectorInfo, CrmEvent,
    CrmObjectRef, DuplicatePolicy, Error, ObjectKind, Placeholder, PushAction, PushOutcome,
    PushSpec, ReferredUser, Registry, Result, Verification, WebhookRequest,
};
use refsync_http::oauth::TokenManager;
use serde_json::{Value, json};

use crate::mapping::Target;

pub use crate::config::Config;

use crate::client::Client;

/// The registry name of this connector; also the `source` of its events and its facade feature.
pub const NAME: &str = "pipedrive";

/// Static facts about the connector. Keep `capabilities` equal to `[package.metadata.refsync]`
/// in Cargo.toml (the conformance test `info::matches_manifest` checks it).
pub const INFO: ConnectorInfo = ConnectorInfo {
    name: NAME,
    display_name: "Pipedrive",
    // Persons and deals through API v2, leads, fields and webhooks through v1 (leads have no
    // v2 write endpoint); webhooks v2 (v1 deliveries are parsed too).
    api_version: "v1+v2",
    capabilities: Capabilities {
        webhooks: true,
        push: true,
        duplicate_lookup: true,
        enrich: true,
        subscriptions: true,
        reconcile: true,
        ..Capabilities::NONE
    },
    // The guide's required mappings; Title defaults to the campaign name (or source).
    required_mappings: &[
        Placeholder::FirstName,
        Placeholder::Email,
        Placeholder::ReferralCode,
    ],
};

/// The objects refsync subscribes to (webhooks v2, every action).
const SUBSCRIBED_OBJECTS: [&str; 3] = ["deal", "lead", "person"];

/// The Pipedrive connector: build it with [`PipedriveConnector::new`] or through the registry.
#[derive(Debug)]
pub struct PipedriveConnector {
    config: Config,
    client: Client,
}

impl PipedriveConnector {
    /// Builds the connector from checked settings; `oauth` is the instance's token manager when
    /// `auth.type = "oauth"`.
    pub fn new(config: Config, oauth: Option<TokenManager>) -> Result<Self> {
        config.validate()?;
        let client = Client::new(&config, oauth)?;
        Ok(Self { config, client })
    }

    /// The settings the connector was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The key of the referral-code field: as configured, or resolved from its label.
    fn referral_code_key(&self) -> Option<String> {
        self.config
            .referral_code_key()
            .map(str::to_owned)
            .or_else(|| self.client.resolved_referral_code_key())
    }

    async fn push(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        // Checked before any call, so an invalid push never writes.
        spec.fields.check_required(INFO.required_mappings)?;
        let mut resolved = HashMap::new();
        for (entity, name) in mapping::fields_to_resolve(spec)? {
            let field = self.client.resolve_field(entity, &name).await?;
            resolved.insert((entity, name), field);
        }
        let b = mapping::bodies(user, spec, &resolved)?;
        let existing = match spec.duplicates {
            DuplicatePolicy::AlwaysCreate => None,
            _ => self.client.find_person(&b.email).await?,
        };
        let person_link = |id: u64| CrmObjectRef {
            kind: ObjectKind::Person,
            id: id.to_string(),
        };
        let mut warnings = Vec::new();
        let (action, person) = match existing {
            None => (
                PushAction::Created,
                self.client
                    .create_person(&b.email, b.person_create.clone())
                    .await?,
            ),
            Some(id) if spec.duplicates == DuplicatePolicy::UpdateExisting => {
                if is_non_empty(&b.person_update) {
                    self.client
                        .update_person(id, b.person_update.clone())
                        .await?;
                }
                (PushAction::Updated, id)
            }
            Some(id) => (PushAction::LinkedExisting, id),
        };
        let mut links = vec![person_link(person)];
        let target = match (b.target, action) {
            (Target::Person, _) => None,
            (t, PushAction::Created) => Some(self.create_target(t, person, &b).await?),
            (t, _) => {
                let found = self.existing_target(t, person).await?;
                match (found, action) {
                    (Some(obj), PushAction::Updated) => {
                        if is_non_empty(&b.target_update) {
                            match obj.kind {
                                ObjectKind::Lead => {
                                    self.client
                                        .update_lead(&obj.id, b.target_update.clone())
                                        .await?
                                }
                                _ => {
                                    let id = obj.id.parse().map_err(|_| {
                                        Error::unexpected("Pipedrive deal id is not a number")
                                    })?;
                                    self.client.update_deal(id, b.target_update.clone()).await?
                                }
                            }
                        }
                        Some(obj)
                    }
                    (Some(obj), _) => Some(obj),
                    (None, PushAction::Updated) => Some(self.create_target(t, person, &b).await?),
                    (None, _) => {
                        warnings.push(format!(
                            "person {person} already exists and was left as it is; it has no open {} to link, so the referral qualifies through a {} created for this person later",
                            if t == Target::Lead { "lead" } else { "deal" },
                            if t == Target::Lead { "lead or deal" } else { "deal" },
                        ));
                        None
                    }
                }
            }
        };
        links.extend(target);
        Ok(PushOutcome {
            action,
            links,
            warnings,
        })
    }

    async fn create_target(
        &self,
        target: Target,
        person: u64,
        b: &mapping::Bodies,
    ) -> Result<CrmObjectRef> {
        let mut body = b.target_create.clone();
        body["person_id"] = json!(person);
        Ok(match target {
            Target::Lead => CrmObjectRef {
                kind: ObjectKind::Lead,
                id: self.client.create_lead(body).await?,
            },
            _ => CrmObjectRef {
                kind: ObjectKind::Deal,
                id: self.client.create_deal(body).await?.to_string(),
            },
        })
    }

    async fn existing_target(&self, target: Target, person: u64) -> Result<Option<CrmObjectRef>> {
        Ok(match target {
            Target::Lead => self
                .client
                .lead_of_person(person)
                .await?
                .map(|id| CrmObjectRef {
                    kind: ObjectKind::Lead,
                    id,
                }),
            _ => self
                .client
                .open_deal_of_person(person)
                .await?
                .map(|id| CrmObjectRef {
                    kind: ObjectKind::Deal,
                    id: id.to_string(),
                }),
        })
    }

    async fn subscriptions(&self, callback_url: &str) -> Result<Vec<String>> {
        let existing = self.client.webhooks().await?;
        let mut ids = Vec::new();
        for object in SUBSCRIBED_OBJECTS {
            let mine: Vec<&Value> = existing
                .iter()
                .filter(|w| {
                    w.get("subscription_url").and_then(Value::as_str) == Some(callback_url)
                        && w.get("event_object").and_then(Value::as_str) == Some(object)
                })
                .collect();
            let good = mine
                .iter()
                .find(|w| webhook_is_current(w, self.client.webhook_user()));
            if let Some(w) = good {
                ids.push(value_id(w));
                // Duplicates deliver every event twice (a known n8n bug): keep one.
                for extra in mine.iter().filter(|x| value_id(x) != value_id(w)) {
                    tracing::warn!(connector = NAME, webhook = %value_id(extra), object, "deleting a duplicate webhook");
                    self.client.delete_webhook(&value_id(extra)).await?;
                }
                continue;
            }
            for stale in &mine {
                tracing::warn!(connector = NAME, webhook = %value_id(stale), object, "replacing an outdated webhook (not version 2.0, inactive, or other credentials)");
                self.client.delete_webhook(&value_id(stale)).await?;
            }
            if mine.is_empty() {
                tracing::info!(
                    connector = NAME,
                    object,
                    "no webhook for {object} (never created, or deleted by Pipedrive after 3 days of failed deliveries): creating it"
                );
            }
            ids.push(self.client.create_webhook(callback_url, object).await?);
        }
        Ok(ids)
    }

    async fn reconcile_since(&self, since: DateTime<Utc>) -> Result<Vec<CrmEvent>> {
        let key = self.client.resolve_referral_code_key().await?;
        let deals = self.client.deals_updated_since(since).await?;
        let mut out = Vec::new();
        for deal in &deals {
            out.extend(state::deal_state_events(deal, key.as_deref(), since));
        }
        Ok(out)
    }
}

fn is_non_empty(v: &Value) -> bool {
    v.as_object().is_some_and(|o| !o.is_empty())
}

fn value_id(w: &Value) -> String {
    match w.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// A webhook refsync can keep: version 2.0, all actions, active, our Basic user.
fn webhook_is_current(w: &Value, user: &str) -> bool {
    let active = match w.get("is_active") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        None => true,
        _ => false,
    };
    active
        && w.get("version").and_then(Value::as_str) == Some("2.0")
        && w.get("event_action").and_then(Value::as_str) == Some("*")
        && w.get("http_auth_user").and_then(Value::as_str) == Some(user)
}

#[async_trait]
impl Connector for PipedriveConnector {
    fn info(&self) -> ConnectorInfo {
        INFO
    }

    fn verify(&self, request: &WebhookRequest, now: DateTime<Utc>) -> Result<Verification> {
        events::verify(&self.config, request, now)
            .map_err(|e| e.with_connector(NAME).with_operation("verify"))
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
        let key = self.referral_code_key();
        events::parse(&self.config, key.as_deref(), request)
            .map_err(|e| e.with_connector(NAME).with_operation("parse"))
    }

    /// Fills the referral code of a deal or lead event that lacks it when the field is named by
    /// its label (resolved on first use) by reading the object; deleted objects stay as they
    /// are.
    async fn enrich(&self, mut event: CrmEvent) -> Result<CrmEvent> {
        // Once the label is resolved, `parse` reads the field itself: an event without a code
        // then has none, and is not worth an API call.
        if event.referral_code.is_some()
            || self.config.referral_code_key().is_some()
            || self.client.resolved_referral_code_key().is_some()
            || matches!(event.change, Change::Deleted)
        {
            return Ok(event);
        }
        let Some(key) = self
            .client
            .resolve_referral_code_key()
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("enrich"))?
        else {
            return Ok(event);
        };
        let code = match event.object.kind {
            ObjectKind::Deal => self.client.get_deal(&event.object.id).await?,
            ObjectKind::Lead => self.client.get_lead(&event.object.id).await?,
            _ => None,
        }
        .and_then(|object| {
            // v2 deals nest custom fields, v1 leads keep them at the root: both are read.
            object
                .as_object()
                .and_then(|o| events::referral_code(o, &key))
        });
        event.referral_code = code;
        Ok(event)
    }

    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        self.push(user, spec)
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("push_referral"))
    }

    /// `GET /v1/users/me`; checks the token's company against `company_id`, and resolves the
    /// referral-code field when it is named by its label.
    async fn health_check(&self) -> Result<()> {
        async {
            let company = self.client.me().await?;
            if let (Some(want), Some(got)) = (&self.config.company_id, &company)
                && want != got
            {
                return Err(Error::config(format!(
                    "the API token belongs to Pipedrive company {got}, but company_id is {want}"
                )));
            }
            self.client.resolve_referral_code_key().await?;
            Ok(())
        }
        .await
        .map_err(|e: Error| e.with_connector(NAME).with_operation("health_check"))
    }

    async fn ensure_subscriptions(&self, callback_url: &str) -> Result<Vec<String>> {
        self.subscriptions(callback_url).await.map_err(|e| {
            e.with_connector(NAME)
                .with_operation("ensure_subscriptions")
        })
    }

    /// Deals updated since `since`, as their current state: a `stage_changed` (from `null`)
    /// and, unless open, a `status_changed` per deal, plus `created` for deals added since.
    /// Delivery ids are `reconcile:<deal>:<update_time>`, so polling twice changes nothing.
    async fn reconcile(&self, since: DateTime<Utc>) -> Result<Vec<CrmEvent>> {
        self.reconcile_since(since)
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("reconcile"))
    }
}

/// Builds the connector from an instance's `[settings]` (the registry's constructor).
fn build(settings: &serde_json::Value, context: &BuildContext) -> Result<Arc<dyn Connector>> {
    let config: Config = parse_settings(settings)?;
    tracing::debug!(connector = NAME, base_url = ?config.base_url, "building connector");
    let oauth = context.get::<TokenManager>().cloned();
    Ok(Arc::new(PipedriveConnector::new(config, oauth)?))
}

/// Adds this connector to `registry` (the facade calls it when the `pipedrive` feature is on).
pub fn register(registry: &mut Registry) {
    registry.register_connector(ConnectorDescriptor {
        info: INFO,
        build,
        normalize_settings: normalize_settings::<Config>,
    });
}
