//! The explicit [`Registry`] of connectors and platforms. No global state: embedders own it.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorInfo};
use crate::error::{Error, Result};
use crate::mapping::PushSpec;
use crate::platform::ReferralPlatform;
use crate::rules::{QualificationRule, RuleSpec};

/// Builds a connector from its JSON settings (the `[settings]` table of an instance config) and
/// what the host provides ([`BuildContext`]).
pub type BuildConnector = fn(&serde_json::Value, &BuildContext) -> Result<Arc<dyn Connector>>;

/// What the host gives a connector at build time besides its settings: the instance name and
/// typed extensions, such as the OAuth2 token manager the engine keeps for an instance with an
/// `[instances.oauth]` table (`refsync_http::oauth::TokenManager`). A connector that needs an
/// extension the host did not provide fails with a config error that says what to set up.
#[derive(Clone, Default)]
pub struct BuildContext {
    /// The instance the connector is built for, when there is one.
    pub instance: Option<String>,
    extensions: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext")
            .field("instance", &self.instance)
            .field("extensions", &self.extensions.len())
            .finish()
    }
}

impl BuildContext {
    /// A context for instance `name`.
    pub fn for_instance(name: impl Into<String>) -> Self {
        BuildContext {
            instance: Some(name.into()),
            ..BuildContext::default()
        }
    }

    /// Adds (or replaces) the extension of type `T`.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> &mut Self {
        self.extensions.insert(TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// The extension of type `T`, if the host provided one.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.extensions
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }
}

/// Parses settings into the connector's typed config and serializes them back: the config
/// round-trip, with defaults filled in. Unknown fields are a [`crate::ErrorKind::Config`] error.
pub type NormalizeSettings = fn(&serde_json::Value) -> Result<serde_json::Value>;

/// Builds a platform from its JSON settings.
pub type BuildPlatform =
    fn(
        serde_json::Value,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<dyn ReferralPlatform>>> + Send>>;

/// How to make a connector: its static info and its constructor.
#[derive(Clone)]
pub struct ConnectorDescriptor {
    /// Static info; `info.name` is the registry key.
    pub info: ConnectorInfo,
    /// Constructor.
    pub build: BuildConnector,
    /// Config round-trip (typed config → JSON), see [`NormalizeSettings`].
    pub normalize_settings: NormalizeSettings,
}

impl fmt::Debug for ConnectorDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorDescriptor")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// How to make a platform.
#[derive(Clone, Copy)]
pub struct PlatformDescriptor {
    /// Registry key.
    pub name: &'static str,
    /// Constructor.
    pub build: BuildPlatform,
}

impl fmt::Debug for PlatformDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformDescriptor")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Connectors and platforms by name. Each connector crate exports `register(&mut Registry)`;
/// the `refsync` facade's `install_default_connectors` calls those of the enabled features.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    connectors: BTreeMap<&'static str, ConnectorDescriptor>,
    platforms: BTreeMap<&'static str, PlatformDescriptor>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds (or replaces) a connector.
    pub fn register_connector(&mut self, descriptor: ConnectorDescriptor) -> &mut Self {
        self.connectors.insert(descriptor.info.name, descriptor);
        self
    }
    /// Adds (or replaces) a platform.
    pub fn register_platform(&mut self, descriptor: PlatformDescriptor) -> &mut Self {
        self.platforms.insert(descriptor.name, descriptor);
        self
    }
    /// The connector named `name`.
    pub fn connector(&self, name: &str) -> Option<&ConnectorDescriptor> {
        self.connectors.get(name)
    }
    /// All connectors, by name.
    pub fn connectors(&self) -> impl Iterator<Item = &ConnectorDescriptor> {
        self.connectors.values()
    }
    /// The platform named `name`.
    pub fn platform(&self, name: &str) -> Option<&PlatformDescriptor> {
        self.platforms.get(name)
    }
    /// All platforms, by name.
    pub fn platforms(&self) -> impl Iterator<Item = &PlatformDescriptor> {
        self.platforms.values()
    }

    /// Builds connector `name` from `settings` with an empty [`BuildContext`]; an unknown name
    /// is a config error listing the compiled-in ones.
    pub fn build_connector(
        &self,
        name: &str,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Connector>> {
        self.build_connector_with(name, settings, &BuildContext::default())
    }

    /// Builds connector `name` from `settings` and `context`.
    pub fn build_connector_with(
        &self,
        name: &str,
        settings: &serde_json::Value,
        context: &BuildContext,
    ) -> Result<Arc<dyn Connector>> {
        let d = self.connector(name).ok_or_else(|| {
            let known: Vec<&str> = self.connectors.keys().copied().collect();
            Error::config(format!(
                "unknown connector {name:?}; compiled in: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        (d.build)(settings, context).map_err(|e| {
            if e.connector().is_none() {
                e.with_connector(d.info.name)
            } else {
                e
            }
        })
    }
}

/// One configured connector instance: which connector, its settings, what to push and which
/// rules qualify. The TOML form is documented in `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Connector name (`generic-webhook`, `pipedrive`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// Referral platform campaign id the instance works for (needed to qualify by email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Connector settings (the connector's own config struct).
    #[serde(default = "empty_object")]
    pub settings: serde_json::Value,
    /// What to push into the CRM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSpec>,
    /// Qualification rules, evaluated in order on every event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
}

/// Deserializes `settings` into `C` and serializes it back; the standard
/// [`ConnectorDescriptor::normalize_settings`] implementation.
///
/// ```
/// # use refsync_core::registry::normalize_settings;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config { url: String }
/// let v = serde_json::json!({"url": "https://x"});
/// assert_eq!(normalize_settings::<Config>(&v).unwrap(), v);
/// assert!(normalize_settings::<Config>(&serde_json::json!({"url": "x", "nope": 1})).is_err());
/// ```
pub fn normalize_settings<C>(settings: &serde_json::Value) -> Result<serde_json::Value>
where
    C: Serialize + serde::de::DeserializeOwned,
{
    let typed = parse_settings::<C>(settings)?;
    serde_json::to_value(&typed)
        .map_err(|e| Error::unexpected(format!("settings do not serialize: {e}")))
}

/// Deserializes connector settings into `C`; errors are [`crate::ErrorKind::Config`] and name the
/// path of the offending setting (`invalid settings at auth.token: ...`).
pub fn parse_settings<C: serde::de::DeserializeOwned>(settings: &serde_json::Value) -> Result<C> {
    serde_path_to_error::deserialize(settings).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::config(format!("invalid settings: {inner}"))
        } else {
            Error::config(format!("invalid settings at {path}: {inner}"))
        }
    })
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl InstanceConfig {
    /// Builds the rules.
    pub fn build_rules(&self) -> Result<Vec<Box<dyn QualificationRule>>> {
        self.rules.iter().map(RuleSpec::build).collect()
    }

    /// Checks the push mapping against the connector's required mappings.
    pub fn check_push(&self, info: &ConnectorInfo) -> Result<()> {
        match &self.push {
            Some(p) => p
                .fields
                .check_required(info.required_mappings)
                .map_err(|e| {
                    Error::config(format!(
                        "[push] of a {} instance: {}",
                        info.name,
                        e.message()
                    ))
                }),
            None => Ok(()),
        }
    }
}
