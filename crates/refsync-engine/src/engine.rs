//! The [`Engine`]: the store, the platform and the connector instances, with the ingest path
//! (also mounted as HTTP by [`Engine::router`]) and the workers.
//!
//! # Exactly once
//!
//! - Deliveries are deduplicated at ingest on (instance, dedup key): the sorted vendor event
//!   ids of the body (`ids:<id>,<id>`), or `sha256:<hex>` of the body when it carries none.
//! - A qualify job's idempotency key is `qualify:<QualifyCall::referral_key()>`, that is
//!   `qualify:<campaign>:<referral>` **without the rule**: whichever rules fire, on whichever
//!   redelivery (same body or not), the engine sends at most one qualify call per referral
//!   and campaign, ever (the key is a unique constraint with no expiry). The rule that fired
//!   first is in the payload and in the timeline; later rules firing are recorded as
//!   "already queued". Unqualify jobs use [`refsync_core::QualifyCall::idempotency_key`]
//!   (one per rule).
//! - Push jobs are keyed `push:<instance>:<campaign>:<referral code>`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{
    BuildContext, Connector, Error, ErrorKind, PushSpec, QualificationRule, ReferralKey,
    ReferralPlatform, Registry, Result, WebhookRequest,
};
use refsync_http::RetryPolicy;
use refsync_http::oauth::{TokenManager, token_http_client};

use crate::config::{EngineConfig, InstanceEntry};
use crate::metrics::Metrics;
use crate::store::{Store, open_store};
use crate::tokens::StoreTokenStore;

/// A configured connector instance: its connector, rules, campaign and push spec.
#[derive(Debug)]
pub struct Instance {
    /// The instance name (`/hooks/{name}`).
    pub name: String,
    /// The connector.
    pub connector: Arc<dyn Connector>,
    /// The qualification rules, in order.
    pub rules: Vec<Box<dyn QualificationRule>>,
    /// The campaign it works for.
    pub campaign: Option<String>,
    /// What to push into the CRM.
    pub push: Option<PushSpec>,
}

impl Instance {
    /// Builds an instance from its config entry through `registry` (connector, rules, and the
    /// push spec checked against the connector's required mappings).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an unknown connector, bad settings, rules or push spec.
    pub fn from_entry(entry: &InstanceEntry, registry: &Registry) -> Result<Instance> {
        Self::from_entry_with(entry, registry, &BuildContext::for_instance(&entry.name))
    }

    /// [`Instance::from_entry`] with what the host provides the connector (see
    /// [`BuildContext`]); the engine adds the instance's OAuth2 token manager.
    pub fn from_entry_with(
        entry: &InstanceEntry,
        registry: &Registry,
        context: &BuildContext,
    ) -> Result<Instance> {
        let connector =
            registry.build_connector_with(&entry.connector, &entry.settings, context)?;
        let config = entry.instance_config();
        let rules = config.build_rules()?;
        config.check_push(&connector.info())?;
        Ok(Instance {
            name: entry.name.clone(),
            connector,
            rules,
            campaign: entry.campaign.clone(),
            push: entry.push.clone(),
        })
    }

    /// An instance from its parts (tests and embedders).
    pub fn new(
        name: impl Into<String>,
        connector: Arc<dyn Connector>,
        rules: Vec<Box<dyn QualificationRule>>,
        campaign: Option<String>,
        push: Option<PushSpec>,
    ) -> Instance {
        Instance {
            name: name.into(),
            connector,
            rules,
            campaign,
            push,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) platform: Arc<dyn ReferralPlatform>,
    pub(crate) instances: RwLock<HashMap<String, Arc<Instance>>>,
    pub(crate) config: EngineConfig,
    pub(crate) metrics: Metrics,
    pub(crate) worker_id: String,
    pub(crate) retry: RetryPolicy,
}

/// The engine. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("worker_id", &self.inner.worker_id)
            .field("instances", &self.instance_names())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine from its config: opens the store, builds every instance and the
    /// platform through `registry`.
    ///
    /// # Errors
    /// Config errors (unknown connector or platform, bad settings, rules, push specs, duplicate
    /// instance names) and store errors.
    pub async fn new(config: EngineConfig, registry: &Registry) -> Result<Engine> {
        let store = open_store(config.store.url.expose()).await?;
        let mut instances = Vec::new();
        for entry in &config.instances {
            let mut context = BuildContext::for_instance(&entry.name);
            if let Some(oauth) = &entry.oauth {
                // Tokens stored by `refsync oauth authorize <name>`, refreshed single-flight.
                let manager = TokenManager::new(
                    oauth.clone(),
                    Arc::new(StoreTokenStore::new(store.clone())),
                    entry.name.clone(),
                    token_http_client(std::time::Duration::from_secs(30))?,
                )
                .map_err(|e| prefix(&e, &format!("instance {:?}", entry.name)))?;
                context.insert(manager);
            }
            instances.push(
                Instance::from_entry_with(entry, registry, &context)
                    .map_err(|e| prefix(&e, &format!("instance {:?}", entry.name)))?,
            );
        }
        let name = config.platform.name();
        let descriptor = registry.platform(name).ok_or_else(|| {
            Error::config(format!(
                "platform {name:?} is not compiled in (known: {})",
                registry
                    .platforms()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let platform = (descriptor.build)(config.platform.settings()).await?;
        Engine::with_parts(store, platform, instances, config)
    }

    /// Builds the engine from its parts (`config.instances` and `config.platform` are not
    /// used; `config.server` and `config.worker` are).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for two instances with the same name.
    pub fn with_parts(
        store: Arc<dyn Store>,
        platform: Arc<dyn ReferralPlatform>,
        instances: Vec<Instance>,
        config: EngineConfig,
    ) -> Result<Engine> {
        let mut map = HashMap::new();
        for i in instances {
            let name = i.name.clone();
            if map.insert(name.clone(), Arc::new(i)).is_some() {
                return Err(Error::config(format!("duplicate instance name {name:?}")));
            }
        }
        let retry = RetryPolicy {
            max_attempts: u32::MAX,
            base: config.worker.backoff_base(),
            max_delay: config.worker.backoff_max(),
            max_retry_after: config.worker.max_age(),
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                platform,
                instances: RwLock::new(map),
                config,
                metrics: Metrics::default(),
                worker_id: format!("refsync-{}-{:x}", std::process::id(), rand::random::<u32>()),
                retry,
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The platform.
    pub fn platform(&self) -> &Arc<dyn ReferralPlatform> {
        &self.inner.platform
    }

    /// The config.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The configured instance names, sorted.
    pub fn instance_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .instances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// One instance.
    pub fn instance(&self, name: &str) -> Option<Arc<Instance>> {
        self.inner
            .instances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Whether some instance pushes through a connector with batch endpoints (then pushes are
    /// claimed `push_batch` at a time).
    pub(crate) fn pushes_in_batches(&self) -> bool {
        self.inner
            .instances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|i| i.push.is_some() && i.connector.info().capabilities.batching)
    }

    /// Adds or replaces an instance (e.g. after a config fix, before replaying its dead
    /// letters). Work already claimed keeps the old one.
    pub fn set_instance(&self, instance: Instance) {
        self.inner
            .instances
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(instance.name.clone(), Arc::new(instance));
    }

    /// The retry delay for the `attempt`-th failure, honouring a `Retry-After`.
    pub(crate) fn delay(&self, attempt: i64, retry_after: Option<Duration>) -> Duration {
        let attempt = u32::try_from(attempt.max(1)).unwrap_or(u32::MAX);
        self.inner
            .retry
            .delay(attempt, retry_after, &mut rand::rng())
            .max(Duration::from_millis(1))
    }

    /// Stored headers for a request (secrets left out): `{method, url, headers: [[n, v]]}`.
    pub(crate) fn stored_headers(request: &WebhookRequest) -> serde_json::Value {
        let kept: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|(n, _)| !is_secret_header(n))
            .cloned()
            .collect();
        serde_json::json!({ "method": request.method, "url": request.url, "headers": kept })
    }

    /// Rebuilds a request from a stored delivery.
    pub(crate) fn request_from_stored(headers: &serde_json::Value, body: &[u8]) -> WebhookRequest {
        let headers_list = headers
            .get("headers")
            .and_then(|h| serde_json::from_value::<Vec<(String, String)>>(h.clone()).ok())
            .unwrap_or_default();
        WebhookRequest {
            method: headers
                .get("method")
                .and_then(|v| v.as_str())
                .unwrap_or("POST")
                .to_owned(),
            url: headers
                .get("url")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
            headers: headers_list,
            body: body.to_vec(),
        }
    }

    /// Convenience for times: `now + d`.
    pub(crate) fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
        now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    }
}

fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-refsync-token",
    ]
    .contains(&n.as_str())
        || n.contains("signature")
        || n.contains("token")
        || n.contains("secret")
        || n.contains("api-key")
        || n.contains("hmac")
}

fn prefix(e: &Error, what: &str) -> Error {
    let kind = e.kind().clone();
    Error::new(kind, format!("{what}: {}", e.message()))
}

/// The referral key string used for links and timelines: [`ReferralKey::canonical`].
pub fn referral_key_string(key: &ReferralKey) -> String {
    key.canonical()
}

/// Parses a canonical referral key (`code:X`, `id:X`, `coupon:X`, `email:CAMPAIGN:EMAIL`).
pub fn parse_referral_key(s: &str) -> Option<ReferralKey> {
    let (kind, rest) = s.split_once(':')?;
    match kind {
        "code" => Some(ReferralKey::Code { code: rest.into() }),
        "id" => Some(ReferralKey::Id { id: rest.into() }),
        "coupon" => Some(ReferralKey::Coupon {
            coupon: rest.into(),
        }),
        "email" => {
            let (campaign, email) = rest.split_once(':')?;
            Some(ReferralKey::Email {
                email: email.into(),
                campaign: campaign.into(),
            })
        }
        _ => None,
    }
}

/// Whether an error should be retried.
pub(crate) fn retryable(e: &Error) -> bool {
    e.is_retryable()
        || matches!(
            e.kind(),
            ErrorKind::RateLimited { .. } | ErrorKind::Unavailable
        )
}
