#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
pub mod config;
mod coupon;
mod events;
mod mapping;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::registry::{normalize_settings, parse_settings};
use refsync_core::{
    BuildContext, Capabilities, Connector, ConnectorDescriptor, ConnectorInfo, CrmEvent,
    CrmObjectRef, DuplicatePolicy, Error, ErrorKind, ObjectKind, Placeholder, PushAction,
    PushOutcome, PushSpec, ReferredUser, Registry, Result, Verification, WebhookReply,
    WebhookRequest,
};
use serde_json::{Value, json};

pub use crate::config::Config;
pub use crate::events::normalize_coupon_code;

use crate::client::{Client, id_text};
use crate::config::{CouponConfig, CouponSource};
use crate::mapping::Target;

/// The registry name of this connector; also the `source` of its events and its facade feature.
pub const NAME: &str = "woocommerce";

/// Static facts about the connector. Keep `capabilities` equal to `[package.metadata.refsync]`
/// in Cargo.toml (the conformance test `info::matches_manifest` checks it).
pub const INFO: ConnectorInfo = ConnectorInfo {
    name: NAME,
    display_name: "WooCommerce",
    // REST API v3 (`/wp-json/wc/v3`, WooCommerce 3.5+; `modified_after` needs 5.8+), webhooks
    // with API version `wp_api_v3` (legacy wrapped bodies are parsed too).
    api_version: "wc/v3",
    capabilities: Capabilities {
        webhooks: true,
        push: true,
        duplicate_lookup: true,
        subscriptions: true,
        reconcile: true,
        ..Capabilities::NONE
    },
    // A customer needs its email; the referral code goes to a `meta.<key>` field so the shop
    // can see who was referred.
    required_mappings: &[Placeholder::Email, Placeholder::ReferralCode],
};

/// The order topics refsync subscribes to (coupon uses and status changes live on orders).
pub const TOPICS: [&str; 3] = ["order.created", "order.updated", "order.deleted"];

/// The WooCommerce connector: build it with [`WoocommerceConnector::new`] or through the registry.
#[derive(Debug)]
pub struct WoocommerceConnector {
    config: Config,
    client: Client,
    code_pattern: Option<coupon::CodePattern>,
    /// What parse needs, normalised once from the settings (parse runs per webhook).
    parse_options: events::ParseOptions,
}

/// What issuing a coupon did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Issued {
    Created,
    Existing,
}

impl WoocommerceConnector {
    /// Builds the connector from checked settings.
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let client = Client::new(&config)?;
        let code_pattern = match &config.coupon {
            Some(c) if c.source == CouponSource::Create => {
                Some(coupon::CodePattern::parse(&c.code)?)
            }
            _ => None,
        };
        let parse_options = config.parse_options();
        Ok(Self {
            config,
            client,
            code_pattern,
            parse_options,
        })
    }

    /// The settings the connector was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The coupon code `user` gets, decided before any call: rendered from the pattern
    /// (`source = "create"`), or the platform's coupon (`source = "platform"`).
    fn coupon_code(&self, user: &ReferredUser) -> Result<String> {
        if let Some(pattern) = &self.code_pattern {
            return pattern.render(user, self.config.webhook_secret.expose().as_bytes());
        }
        user.coupon
            .as_deref()
            .map(normalize_coupon_code)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                Error::validation(format!(
                    "coupon.source = \"platform\", but the referral platform gave {} no coupon: add coupons to the campaign (Referral Factory coupon rewards, or `refsync ledger campaign coupons add`), or let refsync create one (coupon.source = \"create\")",
                    user.email
                ))
            })
    }

    async fn issue_coupon(
        &self,
        c: &CouponConfig,
        code: &str,
        user: &ReferredUser,
    ) -> Result<Issued> {
        let owner_ok = |existing: &Value| -> Result<()> {
            let owner = existing
                .as_object()
                .and_then(|o| events::meta_value(o, coupon::REFERRAL_META_KEY));
            match owner {
                Some(o) if o.trim().eq_ignore_ascii_case(user.referral_code.trim()) => Ok(()),
                Some(_) => Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "coupon {code} already exists in the store for another referral: use {{random}} in coupon.code"
                    ),
                )),
                None if c.source == CouponSource::Platform => Ok(()),
                None => Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "coupon {code} already exists in the store and was not issued by refsync: change coupon.code (add {{random}})"
                    ),
                )),
            }
        };
        if let Some(existing) = self.client.find_coupon(code).await? {
            owner_ok(&existing)?;
            return Ok(Issued::Existing);
        }
        let body = coupon::coupon_body(c, code, user, Utc::now())?;
        match self.client.create_coupon(body).await {
            Ok(_) => Ok(Issued::Created),
            // A concurrent push of the same referral may have created it first.
            Err(e) if e.kind() == &ErrorKind::Validation => {
                match self.client.find_coupon(code).await? {
                    Some(existing) => {
                        owner_ok(&existing)?;
                        Ok(Issued::Existing)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn push(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        // Everything that can be checked is checked before any call, so an invalid push never
        // writes.
        let target = mapping::target(spec)?;
        spec.fields.check_required(INFO.required_mappings)?;
        let mut user = user.clone();
        let coupon = match (&self.config.coupon, target) {
            (None, Target::Coupon) => {
                return Err(Error::validation(
                    "push object = \"coupon\" needs a [settings.coupon] table saying which coupon to issue",
                ));
            }
            (None, Target::Customer) => None,
            (Some(c), _) => {
                let code = self.coupon_code(&user)?;
                // `{Coupon}` in the mapping is the coupon the friend gets in this store.
                user.coupon = Some(code.clone());
                Some((c, code))
            }
        };
        let bodies = match target {
            Target::Customer => Some(mapping::customer(&user, spec)?),
            Target::Coupon => None,
        };
        let mut links = Vec::new();
        let mut action = PushAction::LinkedExisting;
        if let Some((c, code)) = &coupon {
            if self.issue_coupon(c, code, &user).await? == Issued::Created {
                action = PushAction::Created;
            }
            links.push(CrmObjectRef {
                kind: ObjectKind::Coupon,
                id: code.clone(),
            });
        }
        if let Some(b) = bodies {
            let (customer_action, id) = self.push_customer(&b, spec.duplicates).await?;
            action = customer_action;
            links.insert(
                0,
                CrmObjectRef {
                    kind: ObjectKind::Contact,
                    id,
                },
            );
        }
        Ok(PushOutcome {
            action,
            links,
            warnings: Vec::new(),
        })
    }

    async fn push_customer(
        &self,
        b: &mapping::CustomerBodies,
        duplicates: DuplicatePolicy,
    ) -> Result<(PushAction, String)> {
        let existing = match duplicates {
            DuplicatePolicy::AlwaysCreate => None,
            _ => self.client.find_customer(&b.email).await?,
        };
        let Some(existing) = existing else {
            return match self.client.create_customer(b.create.clone()).await {
                Ok(c) => Ok((PushAction::Created, id_text(&c))),
                Err(e) if e.kind() == &ErrorKind::Validation => {
                    match self.client.find_customer(&b.email).await? {
                        Some(c) if duplicates == DuplicatePolicy::AlwaysCreate => Err(Error::new(
                            ErrorKind::Conflict,
                            format!(
                                "WooCommerce allows one customer per email, and {} exists (customer {}): use duplicates = \"update_existing\" or \"link_existing\"",
                                b.email,
                                id_text(&c)
                            ),
                        )),
                        // Created meanwhile by someone else: treat it as found.
                        Some(c) => self.existing_customer(&c, b, duplicates).await,
                        None => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
        };
        self.existing_customer(&existing, b, duplicates).await
    }

    async fn existing_customer(
        &self,
        c: &Value,
        b: &mapping::CustomerBodies,
        duplicates: DuplicatePolicy,
    ) -> Result<(PushAction, String)> {
        let id = id_text(c);
        if duplicates != DuplicatePolicy::UpdateExisting {
            return Ok((PushAction::LinkedExisting, id));
        }
        let numeric: u64 = id
            .parse()
            .map_err(|_| Error::unexpected("WooCommerce customer id is not a number"))?;
        if b.update.as_object().is_some_and(|o| !o.is_empty()) {
            self.client
                .update_customer(numeric, b.update.clone())
                .await?;
        }
        Ok((PushAction::Updated, id))
    }

    async fn subscriptions(&self, callback_url: &str) -> Result<Vec<String>> {
        let hooks = self.client.webhooks().await?;
        let mut ids = Vec::new();
        for topic in TOPICS {
            let mine: Vec<&Value> = hooks
                .iter()
                .filter(|w| {
                    w.get("delivery_url").and_then(Value::as_str) == Some(callback_url)
                        && w.get("topic").and_then(Value::as_str) == Some(topic)
                })
                .collect();
            let Some((keep, extra)) = mine.split_first() else {
                tracing::info!(connector = NAME, topic, "creating the {topic} webhook");
                ids.push(
                    self.client
                        .create_webhook(json!({
                            "name": format!("refsync {topic}"),
                            "topic": topic,
                            "delivery_url": callback_url,
                            "secret": self.config.webhook_secret.expose(),
                            "status": "active",
                        }))
                        .await?,
                );
                continue;
            };
            let id = id_text(keep);
            let status = keep.get("status").and_then(Value::as_str).unwrap_or("");
            if status != "active" {
                tracing::warn!(
                    connector = NAME,
                    webhook = %id,
                    topic,
                    status,
                    "re-enabling a webhook that is not active (WooCommerce disables one after about 5 failed deliveries); reconcile picks up the orders changed meanwhile"
                );
            }
            // The secret cannot be read back, so it is always written.
            self.client
                .update_webhook(
                    &id,
                    json!({"secret": self.config.webhook_secret.expose(), "status": "active"}),
                )
                .await?;
            for x in extra {
                tracing::warn!(connector = NAME, webhook = %id_text(x), topic, "deleting a duplicate webhook (it would deliver every order twice)");
                self.client.delete_webhook(&id_text(x)).await?;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    async fn reconcile_since(&self, since: DateTime<Utc>) -> Result<Vec<CrmEvent>> {
        let opts = &self.parse_options;
        let orders = self.client.orders_modified_since(since).await?;
        let account = self.config.store_url.trim_end_matches('/');
        Ok(orders
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|o| events::order_events(opts, o, Some(account)))
            .collect())
    }
}

#[async_trait]
impl Connector for WoocommerceConnector {
    fn info(&self) -> ConnectorInfo {
        INFO
    }

    /// `X-WC-Webhook-Signature`: base64 HMAC-SHA256 of the raw body with `webhook_secret`.
    /// WooCommerce signs no timestamp, so there is no replay window: a replayed delivery has
    /// the delivery id of the order state it shows and is deduplicated.
    fn verify(&self, request: &WebhookRequest, _now: DateTime<Utc>) -> Result<Verification> {
        events::verify(&self.config.webhook_secret, request)
            .map_err(|e| e.with_connector(NAME).with_operation("verify"))
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
        events::parse(&self.parse_options, request)
            .map_err(|e| e.with_connector(NAME).with_operation("parse"))
    }

    /// WooCommerce's unsigned ping (`webhook_id=N`) when a webhook is created or activated: it
    /// wants a 200, or it reports the webhook as failing.
    fn handshake(&self, request: &WebhookRequest) -> Option<WebhookReply> {
        events::is_ping(request).then(WebhookReply::ok)
    }

    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        self.push(user, spec)
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("push_referral"))
    }

    async fn health_check(&self) -> Result<()> {
        self.client
            .health_check()
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("health_check"))
    }

    /// Creates the `order.created`, `order.updated` and `order.deleted` webhooks with
    /// `webhook_secret`, re-enables ones WooCommerce disabled after failed deliveries, and
    /// deletes duplicates.
    async fn ensure_subscriptions(&self, callback_url: &str) -> Result<Vec<String>> {
        self.subscriptions(callback_url).await.map_err(|e| {
            e.with_connector(NAME)
                .with_operation("ensure_subscriptions")
        })
    }

    /// Orders modified since `since`, as the events their current state gives (WooCommerce
    /// does not retry failed deliveries and merges pending ones, so statuses can be missed).
    /// Delivery ids are those of the webhooks, so a state already delivered changes nothing.
    async fn reconcile(&self, since: DateTime<Utc>) -> Result<Vec<CrmEvent>> {
        self.reconcile_since(since)
            .await
            .map_err(|e| e.with_connector(NAME).with_operation("reconcile"))
    }
}

/// Builds the connector from an instance's `[settings]` (the registry's constructor). The
/// context carries what the host provides, e.g. an OAuth2 `TokenManager` for instances with an
/// `[instances.oauth]` table.
fn build(settings: &serde_json::Value, _context: &BuildContext) -> Result<Arc<dyn Connector>> {
    let config: Config = parse_settings(settings)?;
    tracing::debug!(connector = NAME, store_url = %config.store_url, "building connector");
    Ok(Arc::new(WoocommerceConnector::new(config)?))
}

/// Adds this connector to `registry` (the facade calls it when the `woocommerce` feature is on).
pub fn register(registry: &mut Registry) {
    registry.register_connector(ConnectorDescriptor {
        info: INFO,
        build,
        normalize_settings: normalize_settings::<Config>,
    });
}
