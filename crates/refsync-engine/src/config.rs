//! `refsync.toml`: the engine's configuration ([`EngineConfig`]), loading ([`load`]) and
//! checking ([`check`]) with every problem reported at `file:line:column` with a hint.
//!
//! Any string value may be written `"${env:NAME}"` or `"${file:/path}"` (also inside a longer
//! string, e.g. `"postgres://refsync:${env:PG_PASSWORD}@db/refsync"`); references are resolved
//! at load. `$${` writes a literal `${`. A file's content is used without its trailing newline;
//! a relative path is relative to the directory of the config file. Inline secrets work but are
//! discouraged: keep them in the environment or in files readable only by the service user.
//!
//! Problems never quote the source text nor the value of a secret or wrongly typed string, and
//! values of four characters or more that came from `${env:…}` / `${file:…}` are redacted from
//! every message.
//!
//! The `[platform]` settings are checked when the platform is built (the Registry's builder is
//! asynchronous and may open a database), not by [`check`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use refsync_core::{InstanceConfig, PushSpec, Registry, RuleSpec, Secret};
use refsync_http::OAuthConfig;
use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The whole `refsync.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// `[server]`: the HTTP listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[store]`: where deliveries, jobs and links are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[platform]`: the referral platform qualify calls go to.
    #[serde(default)]
    pub platform: PlatformConfig,
    /// `[[instances]]`: the configured connector instances.
    #[serde(default)]
    pub instances: Vec<InstanceEntry>,
    /// `[worker]`: retries and concurrency.
    #[serde(default)]
    pub worker: WorkerConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address (default `127.0.0.1:8080`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes (default 1 MiB); larger bodies get 413.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Bearer token of the admin API; without it the admin API is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,
    /// The externally visible base URL (`https://refsync.example.com`), used to print webhook
    /// URLs (`<public_base_url>/hooks/<name>`) and OAuth redirects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            body_limit_bytes: default_body_limit(),
            admin_token: None,
            public_base_url: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_body_limit() -> usize {
    1024 * 1024
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path` (default `sqlite://refsync.db`, created on first run) or
    /// `postgres://user:password@host/db`. Kept secret: it may hold a password.
    #[serde(default = "default_store_url")]
    pub url: Secret,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: default_store_url(),
        }
    }
}

fn default_store_url() -> Secret {
    Secret::new("sqlite://refsync.db")
}

impl StoreConfig {
    /// Whether the store is PostgreSQL (otherwise SQLite).
    pub fn is_postgres(&self) -> bool {
        let u = self.url.expose();
        u.starts_with("postgres://") || u.starts_with("postgresql://")
    }
}

/// `[platform]`: `type` selects the platform; the other keys are its settings (see
/// `docs/platforms.md`), validated when the Registry's platform builder builds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum PlatformConfig {
    /// Referral Factory's hosted API (`referral-factory`).
    ReferralFactory(serde_json::Map<String, serde_json::Value>),
    /// The embedded ledger (`ledger`); the default, with the ledger's default settings.
    Ledger(serde_json::Map<String, serde_json::Value>),
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig::Ledger(serde_json::Map::new())
    }
}

impl PlatformConfig {
    /// The registry name of the platform (`referral-factory` or `ledger`).
    pub fn name(&self) -> &'static str {
        match self {
            PlatformConfig::ReferralFactory(_) => "referral-factory",
            PlatformConfig::Ledger(_) => "ledger",
        }
    }
    /// The platform settings (every key but `type`), for the Registry's platform builder.
    pub fn settings(&self) -> serde_json::Value {
        match self {
            PlatformConfig::ReferralFactory(m) | PlatformConfig::Ledger(m) => {
                serde_json::Value::Object(m.clone())
            }
        }
    }
}

/// One `[[instances]]` entry: a [`refsync_core::InstanceConfig`] plus its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceEntry {
    /// Unique, URL-safe name (`[A-Za-z0-9_-]`, at most 64 characters): webhooks for this
    /// instance are received at `/hooks/{name}`.
    pub name: String,
    /// Connector name (`generic-webhook`, `pipedrive`...).
    pub connector: String,
    /// Referral platform campaign id the instance works for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The connector's settings (see `docs/connectors/<connector>.md`).
    #[serde(default = "empty_object")]
    pub settings: serde_json::Value,
    /// What to push into the CRM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSpec>,
    /// Qualification rules, evaluated in order on every event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// `[instances.oauth]`: the OAuth2 application the instance authorizes with
    /// (`refsync oauth authorize <name>` runs the authorization-code flow and stores the tokens
    /// under `oauth:<name>` in the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthConfig>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl InstanceEntry {
    /// The instance as a [`refsync_core::InstanceConfig`].
    pub fn instance_config(&self) -> InstanceConfig {
        InstanceConfig {
            connector: Some(self.connector.clone()),
            campaign: self.campaign.clone(),
            settings: self.settings.clone(),
            push: self.push.clone(),
            rules: self.rules.clone(),
        }
    }
}

/// `[worker]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// A job still failing after this many seconds becomes a dead letter (default 86400: 24 h).
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
    /// First retry delay in seconds; it doubles on each attempt, with jitter (default 2).
    #[serde(default = "default_backoff_base")]
    pub backoff_base_secs: u64,
    /// Longest retry delay in seconds (default 900: 15 min).
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: u64,
    /// Jobs processed at the same time (default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Push jobs a sender claims at once when an instance pushes through a connector with batch
    /// endpoints (HubSpot; default 100). Those of one instance go to the connector together, so
    /// pushes that arrive close together are coalesced into a few calls. Pushes of other
    /// instances claimed with them run one after the other within `job_lease_secs`: lower this
    /// when such pushes are slow. Without a batching connector, pushes are claimed like other
    /// jobs (`concurrency`).
    #[serde(default = "default_push_batch")]
    pub push_batch: usize,
    /// How long a worker holds a claimed delivery, in seconds (default 120). When a process
    /// dies, its deliveries are taken over after this long.
    #[serde(default = "default_delivery_lease")]
    pub delivery_lease_secs: u64,
    /// How long a worker holds a claimed job, in seconds (default 300). When a process dies, its
    /// jobs are taken over after this long; keep it above the longest platform call (timeouts and
    /// Retry-After waits included), or a slow call may be repeated (qualify is idempotent).
    #[serde(default = "default_job_lease")]
    pub job_lease_secs: u64,
    /// Seconds between upkeep rounds of `refsync serve` (default 900): webhook subscriptions
    /// re-checked (and re-created if the CRM deleted them) and changes since the last round
    /// reconciled, for connectors that can. `0` turns upkeep off.
    #[serde(default = "default_upkeep_interval")]
    pub upkeep_interval_secs: u64,
    /// How far back the first reconcile after start looks, in seconds (default 86400: 24 h).
    #[serde(default = "default_reconcile_lookback")]
    pub reconcile_lookback_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            max_age_secs: default_max_age(),
            backoff_base_secs: default_backoff_base(),
            backoff_max_secs: default_backoff_max(),
            concurrency: default_concurrency(),
            push_batch: default_push_batch(),
            delivery_lease_secs: default_delivery_lease(),
            job_lease_secs: default_job_lease(),
            upkeep_interval_secs: default_upkeep_interval(),
            reconcile_lookback_secs: default_reconcile_lookback(),
        }
    }
}

impl WorkerConfig {
    /// [`WorkerConfig::delivery_lease_secs`] as a duration.
    pub fn delivery_lease(&self) -> Duration {
        Duration::from_secs(self.delivery_lease_secs)
    }
    /// [`WorkerConfig::job_lease_secs`] as a duration.
    pub fn job_lease(&self) -> Duration {
        Duration::from_secs(self.job_lease_secs)
    }
    /// [`WorkerConfig::max_age_secs`] as a duration.
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }
    /// [`WorkerConfig::backoff_base_secs`] as a duration.
    pub fn backoff_base(&self) -> Duration {
        Duration::from_secs(self.backoff_base_secs)
    }
    /// [`WorkerConfig::backoff_max_secs`] as a duration.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_secs(self.backoff_max_secs)
    }
}

fn default_max_age() -> u64 {
    24 * 3600
}
fn default_backoff_base() -> u64 {
    2
}
fn default_backoff_max() -> u64 {
    900
}
fn default_delivery_lease() -> u64 {
    120
}
fn default_job_lease() -> u64 {
    300
}
fn default_upkeep_interval() -> u64 {
    900
}
fn default_reconcile_lookback() -> u64 {
    86_400
}
fn default_concurrency() -> usize {
    4
}
fn default_push_batch() -> usize {
    100
}

// ---------------------------------------------------------------------------------------------
// Problems

/// One problem in a config file, at a position, with a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File name as given to the loader.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong. Never quotes the source line nor a secret value.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, " (hint: {})", self.hint)?;
        }
        Ok(())
    }
}

/// Every problem found while loading a config file (at least one).
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------------
// Environment

/// Where `${env:NAME}` references are looked up.
pub trait EnvSource {
    /// The value of variable `name`, if set (and valid Unicode).
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points

/// Default file name used by [`check`] and [`parse`] in problem positions.
pub const DEFAULT_FILE_NAME: &str = "refsync.toml";

/// Loads `path`: syntax, `${env:…}` / `${file:…}` references (from the process environment),
/// types, unknown keys and the checks that need no [`Registry`] (instance names, URLs, worker
/// limits). Use [`load_checked`] to also check connectors, settings, push mappings and rules.
pub fn load(path: impl AsRef<Path>) -> Result<EngineConfig, ConfigErrors> {
    Loader::new().load(path)
}

/// [`load`] plus every [`check`] that needs the registry.
pub fn load_checked(
    path: impl AsRef<Path>,
    registry: &Registry,
) -> Result<EngineConfig, ConfigErrors> {
    Loader::new().registry(registry).load(path)
}

/// Parses config `text` (problems are reported in [`DEFAULT_FILE_NAME`]).
pub fn parse(text: &str) -> Result<EngineConfig, ConfigErrors> {
    Loader::new().parse(text)
}

/// Checks config `text` and returns every problem (empty when the config is valid): TOML syntax,
/// unknown keys, wrong types, duplicate or invalid instance names, unknown connectors, invalid
/// connector settings, push mappings missing required placeholders, rules that do not build,
/// unresolved `${env:…}` / `${file:…}`. References are looked up in the process environment.
pub fn check(text: &str, registry: &Registry) -> Vec<Problem> {
    Loader::new().registry(registry).check(text)
}

/// Loads or checks a config with explicit options: the file name shown in problems, the
/// directory relative `${file:…}` paths start from, the environment and the registry.
pub struct Loader<'a> {
    file_name: String,
    base_dir: Option<PathBuf>,
    env: &'a dyn EnvSource,
    registry: Option<&'a Registry>,
}

impl fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("file_name", &self.file_name)
            .field("base_dir", &self.base_dir)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Default for Loader<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Loader<'a> {
    /// File name [`DEFAULT_FILE_NAME`], the current directory, the process environment, no
    /// registry.
    pub fn new() -> Self {
        Loader {
            file_name: DEFAULT_FILE_NAME.to_owned(),
            base_dir: None,
            env: &ProcessEnv,
            registry: None,
        }
    }
    /// The file name shown in problems.
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = name.into();
        self
    }
    /// The directory relative `${file:…}` paths are resolved from.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }
    /// Where `${env:…}` is looked up.
    pub fn env(mut self, env: &'a dyn EnvSource) -> Self {
        self.env = env;
        self
    }
    /// Enables the checks that need the registry (connectors, settings, push, rules).
    pub fn registry(mut self, registry: &'a Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Reads and parses `path`. Unless set, the file name shown is `path` and relative
    /// `${file:…}` paths start from its directory.
    pub fn load(mut self, path: impl AsRef<Path>) -> Result<EngineConfig, ConfigErrors> {
        let path = path.as_ref();
        if self.file_name == DEFAULT_FILE_NAME {
            self.file_name = path.display().to_string();
        }
        if self.base_dir.is_none() {
            self.base_dir = path.parent().map(Path::to_path_buf);
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            problems: vec![Problem {
                file: self.file_name.clone(),
                line: 1,
                column: 1,
                message: format!("cannot read the config file: {}", e.kind()),
                hint: "check the path and the file's permissions".to_owned(),
            }],
        })?;
        self.parse(&text)
    }

    /// Parses `text`.
    pub fn parse(&self, text: &str) -> Result<EngineConfig, ConfigErrors> {
        let (config, problems) = self.analyze(text);
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(ConfigErrors { problems }),
        }
    }

    /// Every problem in `text`.
    pub fn check(&self, text: &str) -> Vec<Problem> {
        self.analyze(text).1
    }

    fn analyze(&self, text: &str) -> (Option<EngineConfig>, Vec<Problem>) {
        let mut a = Analysis {
            text,
            problems: Vec::new(),
            secrets: Vec::new(),
            unresolved: Vec::new(),
        };
        let config = a.run(self);
        let Analysis {
            mut problems,
            secrets,
            ..
        } = a;
        problems.sort_by_key(|p| p.0.start);
        let problems: Vec<Problem> = problems
            .into_iter()
            .map(|(span, message, hint)| {
                let (line, column) = line_col(text, span.start);
                Problem {
                    file: self.file_name.clone(),
                    line,
                    column,
                    message: redact(&message, &secrets),
                    hint: redact(&hint, &secrets),
                }
            })
            .collect();
        (config, problems)
    }
}

// ---------------------------------------------------------------------------------------------
// Analysis

const SECTIONS: &[&str] = &["server", "store", "platform", "instances", "worker"];

struct Analysis<'t> {
    text: &'t str,
    problems: Vec<(Range<usize>, String, String)>,
    /// Values resolved from references, redacted from every message.
    secrets: Vec<String>,
    /// Spans of strings holding an unresolved reference.
    unresolved: Vec<Range<usize>>,
}

impl<'t> Analysis<'t> {
    fn report(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        // A follow-on problem of an unresolved reference is noise.
        if self
            .unresolved
            .iter()
            .any(|u| span.start <= u.start && u.end <= span.end && span.len() < 2 * u.len() + 8)
        {
            return;
        }
        self.problems.push((span, message.into(), hint.into()));
    }

    fn run(&mut self, loader: &Loader<'_>) -> Option<EngineConfig> {
        let (doc, errors) = DeTable::parse_recoverable(self.text);
        if !errors.is_empty() {
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                self.report(
                    span,
                    format!("TOML syntax error: {}", e.message()),
                    "fix the TOML syntax at this position (strings need quotes, tables [name], arrays of tables [[name]])",
                );
            }
            return None;
        }
        let mut doc = doc.into_inner();
        // Resolve references first, so that every later check sees the real values.
        for (_, v) in doc.iter_mut() {
            self.resolve(v, loader);
        }

        let mut config = EngineConfig::default();
        let mut ok = true;
        let mut instance_values: Vec<Spanned<DeValue<'t>>> = Vec::new();
        for (key, value) in doc.iter() {
            let name: &str = key.get_ref();
            match name {
                "server" => {
                    let (s, _, clean) = self.section::<ServerConfig>(value);
                    ok &= clean;
                    if let Some(s) = s {
                        config.server = s;
                    }
                }
                "store" => {
                    let (s, _, clean) = self.section::<StoreConfig>(value);
                    ok &= clean;
                    if let Some(s) = s {
                        config.store = s;
                    }
                }
                "worker" => {
                    let (s, _, clean) = self.section::<WorkerConfig>(value);
                    ok &= clean;
                    if let Some(s) = s {
                        config.worker = s;
                    }
                }
                "platform" => match self.platform(value) {
                    Some(p) => config.platform = p,
                    None => ok = false,
                },
                "instances" => match value.get_ref() {
                    DeValue::Array(items) => {
                        for item in items.iter() {
                            let (entry, pruned, clean) = self.section::<InstanceEntry>(item);
                            ok &= clean;
                            if let Some(entry) = entry {
                                config.instances.push(entry);
                                instance_values.push(pruned);
                            }
                        }
                    }
                    other => {
                        self.report(
                            value.span(),
                            format!(
                                "`instances` must be an array of tables, found {}",
                                other.type_str()
                            ),
                            "write each instance as an [[instances]] table",
                        );
                        ok = false;
                    }
                },
                other => {
                    self.report(
                        key.span(),
                        format!("unknown key `{other}` at the top level"),
                        with_suggestion(
                            other,
                            SECTIONS,
                            format!("known sections: {}", SECTIONS.join(", ")),
                        ),
                    );
                    ok = false;
                }
            }
        }

        self.semantic(&config, &instance_values, &doc, loader.registry);
        if ok { Some(config) } else { None }
    }

    // --- references ---------------------------------------------------------------------------

    fn resolve(&mut self, v: &mut Spanned<DeValue<'t>>, loader: &Loader<'_>) {
        let span = v.span();
        match v.get_mut() {
            DeValue::String(s) => {
                if !s.contains("${") {
                    return;
                }
                match self.expand(s, loader) {
                    Ok(out) => *s = out.into(),
                    Err((msg, hint)) => {
                        self.report(span.clone(), msg, hint);
                        self.unresolved.push(span);
                        *s = String::new().into();
                    }
                }
            }
            DeValue::Array(a) => {
                for x in a.iter_mut() {
                    self.resolve(x, loader);
                }
            }
            DeValue::Table(t) => {
                for (_, x) in t.iter_mut() {
                    self.resolve(x, loader);
                }
            }
            _ => {}
        }
    }

    /// Expands every reference in `s`; the first failure is returned.
    fn expand(&mut self, s: &str, loader: &Loader<'_>) -> Result<String, (String, String)> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            if rest[..i].ends_with('$') {
                // `$${` → literal `${`.
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                return Err((
                    "unterminated `${` reference".to_owned(),
                    "write `${env:NAME}` or `${file:/path}`, or `$${` for a literal `${`"
                        .to_owned(),
                ));
            };
            let reference = &after[..end];
            let value = if let Some(name) = reference.strip_prefix("env:") {
                match loader.env.var(name) {
                    Some(v) => v,
                    None => {
                        return Err((
                            format!("environment variable `{name}` is not set"),
                            format!("export {name} before starting refsync"),
                        ));
                    }
                }
            } else if let Some(path) = reference.strip_prefix("file:") {
                let mut p = PathBuf::from(path);
                if p.is_relative() {
                    if let Some(base) = &loader.base_dir {
                        p = base.join(p);
                    }
                }
                match std::fs::read_to_string(&p) {
                    Ok(v) => v.trim_end_matches(['\n', '\r']).to_owned(),
                    Err(e) => {
                        return Err((
                            format!("cannot read file `{path}`: {}", e.kind()),
                            "check the path (relative paths start from the config file's directory) and its permissions".to_owned(),
                        ));
                    }
                }
            } else {
                let kind = reference.split(':').next().unwrap_or_default();
                return Err((
                    format!("unknown reference kind `{kind}`"),
                    "write `${env:NAME}` or `${file:/path}`, or `$${` for a literal `${`"
                        .to_owned(),
                ));
            };
            if value.len() >= 4 {
                self.secrets.push(value.clone());
            }
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    // --- typed sections -----------------------------------------------------------------------

    /// Deserializes one section, reporting every problem: after each error the offending entry
    /// is removed and deserialization is retried. Returns the value parsed from what is left
    /// (for the checks that follow), that remainder, and whether there was no error.
    fn section<T: DeserializeOwned>(
        &mut self,
        value: &Spanned<DeValue<'t>>,
    ) -> (Option<T>, Spanned<DeValue<'t>>, bool) {
        let mut v = value.clone();
        let mut removed: Vec<String> = Vec::new();
        let mut clean = true;
        for _ in 0..64 {
            let err = match T::deserialize(v.clone().into_deserializer()) {
                Ok(t) => return (Some(t), v, clean),
                Err(e) => e,
            };
            clean = false;
            let message = err.message().to_owned();
            if let Some(field) = backticked_after(&message, "missing field ") {
                if removed.contains(&field) {
                    return (None, v, false);
                }
            }
            let mut span = err.span().unwrap_or_else(|| value.span());
            self.report_serde(span.clone(), &message, &v);
            if let Some(unknown) = backticked_after(&message, "unknown variant ") {
                // A tagged value (a rule, an auth type): drop the whole array element or entry.
                if let Some(at) = find_string_value(&v, &unknown) {
                    if remove_element(&mut v, &at) {
                        continue;
                    }
                    span = at;
                }
            }
            match remove_at(&mut v, &span) {
                Some(key) => removed.push(key),
                None => return (None, v, false),
            }
        }
        (None, v, false)
    }

    fn report_serde(&mut self, span: Range<usize>, message: &str, within: &Spanned<DeValue<'t>>) {
        let message = scrub(message);
        if let Some(unknown) = backticked_after(&message, "unknown field ") {
            let known = expected_list(&message);
            let known_refs: Vec<&str> = known.iter().map(String::as_str).collect();
            let fallback = if known.is_empty() {
                "this table takes no keys".to_owned()
            } else {
                format!("known keys: {}", known.join(", "))
            };
            self.report(
                span,
                format!("unknown key `{unknown}`"),
                with_suggestion(&unknown, &known_refs, fallback),
            );
        } else if let Some(unknown) = backticked_after(&message, "unknown variant ") {
            let known = expected_list(&message);
            let known_refs: Vec<&str> = known.iter().map(String::as_str).collect();
            let span = find_string_value(within, &unknown).unwrap_or(span);
            self.report(
                span,
                format!("unknown value `{unknown}`"),
                with_suggestion(
                    &unknown,
                    &known_refs,
                    format!("expected one of: {}", known.join(", ")),
                ),
            );
        } else if let Some(field) = backticked_after(&message, "missing field ") {
            self.report(
                span,
                format!("missing key `{field}`"),
                format!("add `{field} = …` to this table"),
            );
        } else if message.starts_with("invalid type") {
            self.report(span, message, "change the value to the expected type");
        } else {
            self.report(span, message, "see docs/configuration.md");
        }
    }

    fn platform(&mut self, value: &Spanned<DeValue<'t>>) -> Option<PlatformConfig> {
        const KINDS: &[&str] = &["referral-factory", "ledger"];
        let DeValue::Table(t) = value.get_ref() else {
            self.report(
                value.span(),
                format!(
                    "`platform` must be a table, found {}",
                    value.get_ref().type_str()
                ),
                "write [platform] with type = \"referral-factory\" or \"ledger\"",
            );
            return None;
        };
        let Some(kind) = t.get("type") else {
            self.report(
                value.span(),
                "missing key `type` in [platform]",
                "add type = \"referral-factory\" or type = \"ledger\"",
            );
            return None;
        };
        match kind.get_ref().as_str() {
            Some(k) if KINDS.contains(&k) => {}
            Some(k) => {
                self.report(
                    kind.span(),
                    format!("unknown platform `{k}`"),
                    with_suggestion(k, KINDS, "expected referral-factory or ledger".to_owned()),
                );
                return None;
            }
            None => {
                self.report(
                    kind.span(),
                    "`type` must be a string",
                    "write type = \"referral-factory\" or type = \"ledger\"",
                );
                return None;
            }
        }
        match PlatformConfig::deserialize(value.clone().into_deserializer()) {
            Ok(p) => Some(p),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                self.report_serde(span, e.message(), value);
                None
            }
        }
    }

    // --- checks beyond types ------------------------------------------------------------------

    fn semantic(
        &mut self,
        config: &EngineConfig,
        instances: &[Spanned<DeValue<'t>>],
        doc: &DeTable<'t>,
        registry: Option<&Registry>,
    ) {
        if let Some(url) = &config.server.public_base_url {
            if !is_http_url(url) {
                let span = lookup(doc, &["server", "public_base_url"]).unwrap_or(0..0);
                self.report(
                    span,
                    "server.public_base_url must be an absolute http(s) URL",
                    "e.g. public_base_url = \"https://refsync.example.com\"",
                );
            }
        }
        if config.server.body_limit_bytes == 0 {
            let span = lookup(doc, &["server", "body_limit_bytes"]).unwrap_or(0..0);
            self.report(
                span,
                "server.body_limit_bytes must be above 0",
                "the default is 1048576 (1 MiB)",
            );
        }
        let url = config.store.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            let span = lookup(doc, &["store", "url"]).unwrap_or(0..0);
            self.report(
                span,
                "store.url must start with sqlite:, postgres:// or postgresql:// (the value is not shown)",
                "e.g. url = \"sqlite://refsync.db\" or url = \"${env:DATABASE_URL}\"",
            );
        }
        let w = &config.worker;
        for (key, zero) in [
            ("concurrency", w.concurrency == 0),
            ("max_age_secs", w.max_age_secs == 0),
            ("backoff_base_secs", w.backoff_base_secs == 0),
            ("delivery_lease_secs", w.delivery_lease_secs == 0),
            ("job_lease_secs", w.job_lease_secs == 0),
            ("push_batch", w.push_batch == 0),
        ] {
            if zero {
                let span = lookup(doc, &["worker", key]).unwrap_or(0..0);
                self.report(
                    span,
                    format!("worker.{key} must be above 0"),
                    "remove it to use the default",
                );
            }
        }
        if w.backoff_base_secs > w.backoff_max_secs {
            let span = lookup(doc, &["worker", "backoff_base_secs"]).unwrap_or(0..0);
            self.report(
                span,
                "worker.backoff_base_secs is above worker.backoff_max_secs",
                "the first delay must not exceed the longest one",
            );
        }

        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (entry, value) in config.instances.iter().zip(instances) {
            let name_span = field_span(value, "name").unwrap_or_else(|| value.span());
            if !valid_name(&entry.name) {
                self.report(
                    name_span.clone(),
                    format!("instance name {:?} is not URL-safe", entry.name),
                    "use 1 to 64 letters, digits, `-` or `_` (it is the path /hooks/{name})",
                );
            }
            if let Some(first) = seen.get(entry.name.as_str()) {
                let (line, _) = line_col(self.text, *first);
                self.report(
                    name_span.clone(),
                    format!("duplicate instance name {:?}", entry.name),
                    format!("first defined on line {line}; instance names must be unique"),
                );
            } else {
                seen.insert(&entry.name, name_span.start);
            }
            if let Some(oauth) = &entry.oauth {
                self.check_oauth(oauth, value);
            }
            if let Some(registry) = registry {
                self.check_instance(entry, value, registry);
            }
        }
    }

    fn check_oauth(&mut self, oauth: &OAuthConfig, value: &Spanned<DeValue<'t>>) {
        let urls = [
            ("auth_url", Some(&oauth.auth_url)),
            ("token_url", Some(&oauth.token_url)),
            ("redirect_url", oauth.redirect_url.as_ref()),
        ];
        for (key, url) in urls {
            if url.is_some_and(|u| !is_http_url(u)) {
                let span = lookup_value(value, &["oauth", key])
                    .or_else(|| field_span(value, "oauth"))
                    .unwrap_or_else(|| value.span());
                self.report(
                    span,
                    format!("oauth.{key} must be an absolute http(s) URL"),
                    "see the vendor's OAuth documentation (e.g. https://oauth.pipedrive.com/oauth/token)",
                );
            }
        }
    }

    fn check_instance(
        &mut self,
        entry: &InstanceEntry,
        value: &Spanned<DeValue<'t>>,
        registry: &Registry,
    ) {
        let connector_span = field_span(value, "connector").unwrap_or_else(|| value.span());
        let Some(descriptor) = registry.connector(&entry.connector) else {
            let known: Vec<&str> = registry.connectors().map(|d| d.info.name).collect();
            let list = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            let hint = match closest(&entry.connector, &known) {
                Some(s) => format!("compiled in: {list}; did you mean {s:?}?"),
                None => format!("compiled in: {list}"),
            };
            self.report(
                connector_span,
                format!("unknown connector {:?}", entry.connector),
                hint,
            );
            return;
        };
        let settings_value = value.get_ref().get("settings");
        let settings_span = settings_value
            .map(|s| s.span())
            .unwrap_or_else(|| value.span());
        let has_unresolved = self
            .unresolved
            .iter()
            .any(|u| settings_span.start <= u.start && u.end <= settings_span.end);
        if !has_unresolved {
            let result = (descriptor.normalize_settings)(&entry.settings).and_then(|_| {
                // The check builds the connector as `serve` does; an [instances.oauth]
                // table gives it a token manager (over an empty in-memory store: nothing is
                // called here).
                let mut context = refsync_core::BuildContext::for_instance(&entry.name);
                if let Some(oauth) = &entry.oauth {
                    let manager = refsync_http::oauth::TokenManager::new(
                        oauth.clone(),
                        std::sync::Arc::new(refsync_http::oauth::MemoryTokenStore::default()),
                        entry.name.clone(),
                        refsync_http::oauth::token_http_client(std::time::Duration::from_secs(30))?,
                    )?;
                    context.insert(manager);
                }
                (descriptor.build)(&entry.settings, &context).map(|_| ())
            });
            if let Err(e) = result {
                let message = e.message().to_owned();
                let span = settings_value
                    .and_then(|s| settings_error_span(s, &message))
                    .unwrap_or_else(|| settings_span.clone());
                let message = scrub(&message);
                let hint = match backticked_after(&message, "unknown field ") {
                    Some(unknown) => {
                        let known = expected_list(&message);
                        let refs: Vec<&str> = known.iter().map(String::as_str).collect();
                        with_suggestion(
                            &unknown,
                            &refs,
                            format!("see docs/connectors/{}.md", entry.connector),
                        )
                    }
                    None => format!("see docs/connectors/{}.md", entry.connector),
                };
                self.report(
                    span,
                    format!("invalid {} settings: {message}", entry.connector),
                    hint,
                );
            }
        }
        if let Err(e) = entry.instance_config().check_push(&descriptor.info) {
            let span = lookup_value(value, &["push", "fields"])
                .or_else(|| field_span(value, "push"))
                .unwrap_or_else(|| value.span());
            let required: Vec<String> = descriptor
                .info
                .required_mappings
                .iter()
                .map(|p| format!("{{{p}}}"))
                .collect();
            self.report(
                span,
                e.message().to_owned(),
                format!(
                    "map every required placeholder in [push.fields]: {}",
                    required.join(", ")
                ),
            );
        }
        let rule_spans: Vec<Range<usize>> = match value.get_ref().get("rules").map(|r| r.get_ref())
        {
            Some(DeValue::Array(a)) => a.iter().map(|x| x.span()).collect(),
            _ => Vec::new(),
        };
        for (i, rule) in entry.rules.iter().enumerate() {
            if let Err(e) = rule.build() {
                let span = rule_spans.get(i).cloned().unwrap_or_else(|| value.span());
                self.report(
                    span,
                    format!("rule {} does not build: {}", i + 1, e.message()),
                    "see the rules table in docs/configuration.md",
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

/// Drops the quoted value serde puts in `invalid type` / `invalid value` messages: it may be a
/// secret written in the wrong place.
fn scrub(message: &str) -> String {
    for prefix in ["invalid type: string ", "invalid value: string "] {
        if let Some(pos) = message.find(prefix) {
            let start = pos + prefix.len();
            if let Some(comma) = message[start..].rfind(", expected") {
                return format!(
                    "{}{}{}",
                    &message[..pos],
                    prefix.trim_end(),
                    &message[start + comma..]
                );
            }
        }
    }
    message.to_owned()
}

/// The first backticked word after `marker`.
fn backticked_after(message: &str, marker: &str) -> Option<String> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// The backticked names after "expected" in a serde message.
fn expected_list(message: &str) -> Vec<String> {
    let Some(i) = message.find("expected") else {
        return Vec::new();
    };
    message[i..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn with_suggestion(unknown: &str, known: &[&str], fallback: String) -> String {
    match closest(unknown, known) {
        Some(s) => format!("did you mean `{s}`? {fallback}"),
        None => fallback,
    }
}

/// The closest known name, when it is close enough.
fn closest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let u = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (levenshtein(&u, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.chars().count().max(u.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

/// Removes the deepest table entry or array element whose key or value contains `span`;
/// returns the removed key (or an empty string for an array element). Children are searched
/// first: the span of a `[header]` table does not cover its keys.
fn remove_at(v: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<String> {
    let contains = |r: &Range<usize>| r.start <= span.start && span.end <= r.end;
    match v.get_mut() {
        DeValue::Table(t) => {
            for (_, x) in t.iter_mut() {
                if let Some(r) = remove_at(x, span) {
                    return Some(r);
                }
            }
            let key = t
                .iter()
                .find(|(k, x)| contains(&k.span()) || contains(&x.span()))
                .map(|(k, _)| k.get_ref().to_string())?;
            t.remove(key.as_str());
            Some(key)
        }
        DeValue::Array(a) => {
            for x in a.iter_mut() {
                if let Some(r) = remove_at(x, span) {
                    return Some(r);
                }
            }
            let idx = a.iter().position(|x| contains(&x.span()))?;
            *a = a
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != idx)
                .map(|(_, x)| x.clone())
                .collect();
            Some(String::new())
        }
        _ => None,
    }
}

/// Removes the innermost array element that contains `span`.
fn remove_element(v: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    let inside = |r: &Range<usize>| r.start <= span.start && span.end <= r.end;
    match v.get_mut() {
        DeValue::Table(t) => t
            .iter_mut()
            .any(|(_, x)| inside(&x.span()) && remove_element(x, span)),
        DeValue::Array(a) => {
            let Some(idx) = a.iter().position(|x| inside(&x.span())) else {
                return false;
            };
            if a.get_mut(idx).is_some_and(|x| remove_element(x, span)) {
                return true;
            }
            *a = a
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != idx)
                .map(|(_, x)| x.clone())
                .collect();
            true
        }
        _ => false,
    }
}

/// Span of a string value equal to `needle` inside `v`.
fn find_string_value(v: &Spanned<DeValue<'_>>, needle: &str) -> Option<Range<usize>> {
    match v.get_ref() {
        DeValue::String(s) if s.as_ref() == needle => Some(v.span()),
        DeValue::Table(t) => t.values().find_map(|x| find_string_value(x, needle)),
        DeValue::Array(a) => a.iter().find_map(|x| find_string_value(x, needle)),
        _ => None,
    }
}

fn field_span(v: &Spanned<DeValue<'_>>, key: &str) -> Option<Range<usize>> {
    v.get_ref().get(key).map(|x| x.span())
}

fn lookup_value(v: &Spanned<DeValue<'_>>, path: &[&str]) -> Option<Range<usize>> {
    let mut cur = v;
    for p in path {
        cur = cur.get_ref().get(*p)?;
    }
    Some(cur.span())
}

fn lookup(doc: &DeTable<'_>, path: &[&str]) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    lookup_value(doc.get(*first)?, rest)
}

/// Maps a connector settings error (`invalid settings at auth.token: …`, `events.stage: …`,
/// `push.url must be …`) to the deepest position of that path inside `settings`.
fn settings_error_span(settings: &Spanned<DeValue<'_>>, message: &str) -> Option<Range<usize>> {
    let path = if let Some(rest) = message.strip_prefix("invalid settings at ") {
        rest.split(": ").next()?.to_owned()
    } else {
        let first = message.split([' ', ':']).next()?;
        if first.contains('.') || settings.get_ref().get(first).is_some() {
            first.to_owned()
        } else {
            return None;
        }
    };
    let unknown = backticked_after(message, "unknown field ");
    let mut cur = settings;
    let mut found = false;
    for seg in path.split('.') {
        let (name, index) = match seg.find('[') {
            Some(i) => (
                &seg[..i],
                seg[i + 1..].trim_end_matches(']').parse::<usize>().ok(),
            ),
            None => (seg, None),
        };
        // An unknown key: point at the key itself.
        if index.is_none() && unknown.as_deref() == Some(name) {
            if let DeValue::Table(t) = cur.get_ref() {
                if let Some((k, _)) = t.get_key_value(name) {
                    return Some(k.span());
                }
            }
        }
        let Some(next) = cur.get_ref().get(name) else {
            break;
        };
        cur = next;
        found = true;
        if let Some(i) = index {
            match cur.get_ref().get(i) {
                Some(x) => cur = x,
                None => break,
            }
        }
    }
    found.then(|| cur.span())
}
