//! The conformance suite every connector runs, chosen by its declared [`Capabilities`].
//!
//! A connector's `tests/conformance.rs` implements [`Harness`] and ends with
//! [`conformance_main!`](crate::conformance_main); the suite is a `harness = false` test binary
//! (libtest-mimic), so `cargo test`, `cargo nextest` and filters work as usual. Test names are
//! stable: `docs/connector-spec.md` maps each MUST to one of them.
//!
//! Nothing the connector has not built passes: a capability it declares but does not implement
//! fails with the connector's own error, and a test that does not apply is skipped with its
//! reason printed (at start-up and in the test's ignore reason).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use refsync_core::rules::decide_delivery;
use refsync_core::{
    CampaignRef, Connector, ConnectorDescriptor, CrmEvent, DuplicatePolicy, ErrorKind, PushAction,
    PushOutcome, PushSpec, ReferralHistory, ReferredUser, Referrer, Registry, RuleSpec,
    Verification, WebhookRequest,
};
use serde_json::{Value, json};

use crate::sim::{Fault, FaultRule, Simulator};

/// What a connector's test file provides so the suite can run against it.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// Registers the connector under test (the crate's `register`).
    fn register(&self, registry: &mut Registry);
    /// The connector's registry name.
    fn connector(&self) -> &'static str;
    /// Valid settings; `simulator` is the base URL of the running simulator, when there is one.
    fn settings(&self, simulator: Option<&str>) -> Value;
    /// The secret values used in [`Harness::settings`]; they must never be printed.
    fn secrets(&self) -> Vec<String>;
    /// Adds valid credentials to `request` as the vendor would at `now` (signature, basic auth,
    /// token).
    fn authenticate(&self, request: &mut WebhookRequest, now: DateTime<Utc>) -> Result<(), String>;
    /// Whether the vendor's credentials cover the body (a signature): enables the tamper test.
    fn signs_body(&self) -> bool;
    /// The replay window, when the vendor signs a timestamp: enables the stale-request test.
    fn replay_window(&self) -> Option<Duration>;
    /// A push spec that satisfies the connector's required mappings.
    fn push_spec(&self) -> Result<PushSpec, String>;
    /// Starts the connector's CRM simulator.
    async fn simulator(&self) -> Result<Simulator, String>;
    /// The records the simulator holds for `email`, as JSON (for the duplicate-policy tests).
    async fn records(&self, simulator: &Simulator, email: &str) -> Result<Vec<Value>, String>;
    /// Rules whose verdicts on the fixture events are recorded in the expected files.
    fn rules(&self) -> Vec<RuleSpec> {
        Vec::new()
    }
    /// `Some(reason)` when the vendor keeps one record per email (a WooCommerce customer), so
    /// `always_create` cannot make a second one: the suite then checks that a second push of
    /// the same person is refused with a conflict that names the other policies, and that
    /// nothing was duplicated.
    fn one_record_per_email(&self) -> Option<&'static str> {
        None
    }

    /// The path prefix of the CRM API on the simulator, when other endpoints share its base URL
    /// (Zoho's token endpoint): the suite then injects faults only there, and counts only those
    /// requests as writes. `None` (default): every path is the API.
    fn api_path_prefix(&self) -> Option<&'static str> {
        None
    }
}

/// `rule` limited to the harness's API paths.
fn on_api<H: Harness>(harness: &H, rule: FaultRule) -> FaultRule {
    match harness.api_path_prefix() {
        Some(prefix) => rule.on("*", prefix),
        None => rule,
    }
}

/// Runs the conformance suite for `$harness` on `tests/fixtures` of the calling crate.
///
/// ```text
/// refsync_testkit::conformance_main!(MyHarness);
/// ```
#[macro_export]
macro_rules! conformance_main {
    ($harness:expr) => {
        fn main() -> ::std::process::ExitCode {
            $crate::conformance::Suite::new($harness)
                .fixtures(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
                .manifest_dir(env!("CARGO_MANIFEST_DIR"))
                .run()
        }
    };
}

/// The suite runner.
#[derive(Debug)]
pub struct Suite<H> {
    harness: Arc<H>,
    fixtures: Option<PathBuf>,
    manifest_dir: Option<PathBuf>,
}

/// Environment variable that makes fixture tests write their expected files.
pub const BLESS_ENV: &str = "REFSYNC_BLESS";

/// HTTP statuses the error-mapping tests inject, with the kind each must map to.
pub const ERROR_CASES: &[(u16, &str)] = &[
    (401, "unauthorized"),
    (403, "forbidden"),
    (404, "not_found"),
    (409, "conflict"),
    (422, "validation"),
    (429, "rate_limited"),
    (500, "unavailable"),
    (503, "unavailable"),
];

/// The Retry-After the 429 test sends; longer than any sane client sleeps, so the connector
/// must hand it back in [`ErrorKind::RateLimited`].
pub const RETRY_AFTER_SECS: u64 = 120;

type TestResult = Result<Completion, Failed>;

fn fail(msg: impl std::fmt::Display) -> Failed {
    Failed::from(msg.to_string())
}

impl<H: Harness> Suite<H> {
    /// A suite for `harness`.
    pub fn new(harness: H) -> Self {
        Suite {
            harness: Arc::new(harness),
            fixtures: None,
            manifest_dir: None,
        }
    }

    /// The fixtures folder (payload files with `<stem>.expected.json` beside them).
    #[must_use]
    pub fn fixtures(mut self, dir: impl Into<PathBuf>) -> Self {
        self.fixtures = Some(dir.into());
        self
    }

    /// The connector crate's folder, to check its `Cargo.toml` metadata against `info()`.
    #[must_use]
    pub fn manifest_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.manifest_dir = Some(dir.into());
        self
    }

    /// Builds the trials and runs them with libtest's command-line arguments.
    pub fn run(self) -> ExitCode {
        let args = Arguments::from_args();
        let trials = self.trials();
        libtest_mimic::run(&args, trials).exit_code()
    }

    /// The trials, selected by the connector's capabilities.
    pub fn trials(&self) -> Vec<Trial> {
        let mut registry = Registry::new();
        self.harness.register(&mut registry);
        let Some(descriptor) = registry.connector(self.harness.connector()).cloned() else {
            let name = self.harness.connector();
            return vec![Trial::test("info::registered", move || {
                Err(fail(format!(
                    "Harness::register did not register a connector named {name:?}"
                )))
            })];
        };
        let caps = descriptor.info.capabilities;
        let fixtures = self
            .fixtures
            .as_ref()
            .map(|d| discover_fixtures(d))
            .unwrap_or_default();
        let ctx = Arc::new(Ctx {
            harness: self.harness.clone(),
            descriptor,
            sample: fixtures.first().and_then(|f| fixture_request(f).ok()),
        });
        let mut trials = Vec::new();
        let mut skips: Vec<(String, String)> = Vec::new();
        let mut add = |trials: &mut Vec<Trial>, name: &str, skip: Option<String>, f: TrialFn<H>| {
            let ctx = ctx.clone();
            match skip {
                Some(reason) => {
                    skips.push((name.to_owned(), reason.clone()));
                    trials.push(
                        Trial::test(name, || Ok(()))
                            .with_ignored_flag(true)
                            .with_kind(short(&reason)),
                    );
                }
                None => trials.push(Trial::ignorable_test(name, move || f(&ctx))),
            }
        };

        // info and config
        if let Some(dir) = &self.manifest_dir {
            let dir = dir.clone();
            add(
                &mut trials,
                "info::matches_manifest",
                None,
                Box::new(move |ctx| info_matches_manifest(ctx, &dir)),
            );
        }
        add(
            &mut trials,
            "config::builds_from_settings",
            None,
            Box::new(config_builds),
        );
        add(
            &mut trials,
            "config::round_trip",
            None,
            Box::new(config_round_trip),
        );
        add(
            &mut trials,
            "config::rejects_unknown_fields",
            None,
            Box::new(config_rejects_unknown),
        );
        add(
            &mut trials,
            "secrets::absent_from_debug_logs_and_errors",
            None,
            Box::new(secrets_absent),
        );

        // webhooks
        let no_webhooks = (!caps.webhooks)
            .then(|| "connector does not declare the `webhooks` capability".to_owned());
        add(
            &mut trials,
            "verify::accepts_valid",
            no_webhooks.clone(),
            Box::new(verify_accepts_valid),
        );
        add(
            &mut trials,
            "verify::rejects_missing_auth",
            no_webhooks.clone(),
            Box::new(verify_rejects_missing),
        );
        add(
            &mut trials,
            "verify::rejects_wrong_secret",
            no_webhooks.clone(),
            Box::new(verify_rejects_wrong_secret),
        );
        let tamper_skip = no_webhooks.clone().or_else(|| {
            (!self.harness.signs_body()).then(|| {
                "the vendor's credentials do not cover the body (no signature); duplicates and tampering are caught downstream"
                    .to_owned()
            })
        });
        add(
            &mut trials,
            "verify::rejects_tampered_body",
            tamper_skip,
            Box::new(verify_rejects_tampered),
        );
        let stale_skip = no_webhooks.clone().or_else(|| {
            self.harness.replay_window().is_none().then(|| {
                "the vendor signs no timestamp; replays are caught by delivery deduplication"
                    .to_owned()
            })
        });
        add(
            &mut trials,
            "verify::rejects_stale_timestamp",
            stale_skip.clone(),
            Box::new(verify_rejects_stale),
        );
        add(
            &mut trials,
            "verify::accepts_within_window",
            stale_skip,
            Box::new(verify_accepts_within_window),
        );
        add(
            &mut trials,
            "parse::never_panics_on_arbitrary_bytes",
            no_webhooks.clone(),
            Box::new(parse_never_panics),
        );

        if caps.webhooks {
            add(
                &mut trials,
                "parse::never_panics_on_mutated_fixtures",
                fixtures
                    .is_empty()
                    .then(|| "no JSON fixtures to mutate".to_owned()),
                Box::new(parse_never_panics_mutated),
            );
            if fixtures.is_empty() {
                let dir = self.fixtures.clone().unwrap_or_default();
                add(
                    &mut trials,
                    "parse::fixtures_present",
                    None,
                    Box::new(move |_| {
                        Err(fail(format!(
                            "no fixtures in {}: copy real payloads there unchanged (with their .source.txt), then run with {BLESS_ENV}=1 to write the expected events and review them",
                            dir.display()
                        )))
                    }),
                );
            }
        }
        for fixture in fixtures {
            let name = format!("parse::fixture::{}", fixture.name);
            let skip = no_webhooks.clone();
            add(
                &mut trials,
                &name,
                skip,
                Box::new(move |ctx| parse_fixture(ctx, &fixture)),
            );
        }

        // push
        let no_push =
            (!caps.push).then(|| "connector does not declare the `push` capability".to_owned());
        let no_lookup = no_push.clone().or_else(|| {
            (!caps.duplicate_lookup).then(|| {
                "connector does not declare `duplicate_lookup`: it cannot see existing records, the receiver applies the policy"
                    .to_owned()
            })
        });
        add(
            &mut trials,
            "push::create",
            no_push.clone(),
            Box::new(push_create),
        );
        add(
            &mut trials,
            "push::update_existing",
            no_lookup.clone(),
            Box::new(|c| push_duplicate(c, DuplicatePolicy::UpdateExisting)),
        );
        add(
            &mut trials,
            "push::link_existing",
            no_lookup.clone(),
            Box::new(|c| push_duplicate(c, DuplicatePolicy::LinkExisting)),
        );
        add(
            &mut trials,
            "push::always_create",
            no_lookup,
            Box::new(|c| push_duplicate(c, DuplicatePolicy::AlwaysCreate)),
        );
        add(
            &mut trials,
            "push::missing_required_mapping",
            no_push.clone(),
            Box::new(push_missing_mapping),
        );
        for (status, kind) in ERROR_CASES {
            let (status, kind) = (*status, *kind);
            add(
                &mut trials,
                &format!("errors::http_{status}_is_{kind}"),
                no_push.clone(),
                Box::new(move |c| error_mapping(c, status, kind)),
            );
        }
        add(
            &mut trials,
            "health::ok_against_simulator",
            None,
            Box::new(health_ok),
        );
        add(
            &mut trials,
            "health::unauthorized_is_reported",
            None,
            Box::new(health_unauthorized),
        );

        if !skips.is_empty() {
            let mut out = std::io::stderr().lock();
            for (name, reason) in &skips {
                let _ = writeln!(out, "conformance: skip {name}: {reason}");
            }
        }
        trials
    }
}

fn short(reason: &str) -> String {
    let mut s: String = reason.chars().take(60).collect();
    if reason.chars().count() > 60 {
        s.push('…');
    }
    format!("skip: {s}")
}

type TrialFn<H> = Box<dyn FnOnce(&Ctx<H>) -> TestResult + Send>;

struct Ctx<H> {
    harness: Arc<H>,
    descriptor: ConnectorDescriptor,
    /// The first fixture's request: the verify tests sign a realistic body.
    sample: Option<WebhookRequest>,
}

impl<H: Harness> Ctx<H> {
    fn build(&self, settings: &Value) -> Result<Arc<dyn Connector>, Failed> {
        (self.descriptor.build)(settings, &refsync_core::BuildContext::default()).map_err(|e| {
            fail(format!(
                "building the connector from Harness::settings failed: {e}"
            ))
        })
    }
    fn offline(&self) -> Result<Arc<dyn Connector>, Failed> {
        self.build(&self.harness.settings(None))
    }
    fn secrets(&self) -> Vec<String> {
        self.harness
            .secrets()
            .into_iter()
            .filter(|s| s.len() >= 4)
            .collect()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance suite")
}

fn pass() -> TestResult {
    Ok(Completion::Completed)
}

// ---------------------------------------------------------------- info and config

fn info_matches_manifest<H: Harness>(ctx: &Ctx<H>, dir: &Path) -> TestResult {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
        .map_err(|e| fail(format!("reading Cargo.toml: {e}")))?;
    let meta = ManifestMeta::parse(&manifest);
    let info = &ctx.descriptor.info;
    if meta.connector.as_deref() != Some(info.name) {
        return Err(fail(format!(
            "[package.metadata.refsync] connector = {:?}, but info().name = {:?}",
            meta.connector, info.name
        )));
    }
    let declared: Vec<&str> = info.capabilities.names();
    if !meta
        .capabilities
        .iter()
        .map(String::as_str)
        .eq(declared.iter().copied())
    {
        return Err(fail(format!(
            "[package.metadata.refsync] capabilities = {:?}, but info().capabilities = {declared:?}; keep them equal (xtask tidy and the docs read the manifest)",
            meta.capabilities
        )));
    }
    pass()
}

/// `[package.metadata.refsync]` of a connector crate.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ManifestMeta {
    /// `connector = "..."`.
    pub connector: Option<String>,
    /// `capabilities = [...]`.
    pub capabilities: Vec<String>,
}

impl ManifestMeta {
    /// Reads the block from Cargo.toml text (our own well-formed files: one key per line).
    pub fn parse(manifest: &str) -> ManifestMeta {
        let mut meta = ManifestMeta::default();
        let mut inside = false;
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                inside = line == "[package.metadata.refsync]";
                continue;
            }
            if !inside {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim();
                match k.trim() {
                    "connector" => meta.connector = Some(v.trim_matches('"').to_owned()),
                    "capabilities" => {
                        meta.capabilities = v
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .split(',')
                            .map(|s| s.trim().trim_matches('"').to_owned())
                            .filter(|s| !s.is_empty())
                            .collect();
                    }
                    _ => {}
                }
            }
        }
        meta
    }
}

fn config_builds<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    ctx.offline()?;
    pass()
}

fn config_round_trip<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let normalize = ctx.descriptor.normalize_settings;
    let settings = ctx.harness.settings(None);
    let once =
        normalize(&settings).map_err(|e| fail(format!("normalize_settings(settings): {e}")))?;
    let twice =
        normalize(&once).map_err(|e| fail(format!("normalize_settings(normalized): {e}")))?;
    if once != twice {
        return Err(fail(format!(
            "config does not round-trip:\nfirst:  {once}\nsecond: {twice}"
        )));
    }
    ctx.build(&once)?;
    pass()
}

const UNKNOWN_FIELD: &str = "refsync_conformance_unknown_field";

fn config_rejects_unknown<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let mut settings = ctx.harness.settings(None);
    let Some(obj) = settings.as_object_mut() else {
        return Err(fail("Harness::settings must return a JSON object"));
    };
    obj.insert(UNKNOWN_FIELD.into(), json!(true));
    match (ctx.descriptor.build)(&settings, &refsync_core::BuildContext::default()) {
        Ok(_) => Err(fail(format!(
            "an unknown settings field ({UNKNOWN_FIELD}) was accepted; use #[serde(deny_unknown_fields)] so typos are caught"
        ))),
        Err(e) if *e.kind() != ErrorKind::Config => {
            Err(fail(format!("expected a config error, got {e}")))
        }
        Err(e) if !e.to_string().contains(UNKNOWN_FIELD) => Err(fail(format!(
            "the error does not name the unknown field: {e}"
        ))),
        Err(_) => pass(),
    }
}

/// A `tracing` writer that keeps everything written, for the secrets test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secrets_absent<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let secrets = ctx.secrets();
    if secrets.is_empty() {
        return Err(fail(
            "Harness::secrets returned no secret (of 4+ characters) to look for",
        ));
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let mut texts: Vec<(String, String)> = Vec::new();
    let caps = ctx.descriptor.info.capabilities;
    let outcome: Result<(), Failed> = tracing::subscriber::with_default(subscriber, || {
        let conn = ctx.offline()?;
        texts.push(("Debug of the connector".into(), format!("{conn:?}")));
        // Errors from bad settings.
        let mut bad = ctx.harness.settings(None);
        if let Some(obj) = bad.as_object_mut() {
            obj.insert(UNKNOWN_FIELD.into(), json!(1));
        }
        if let Err(e) = (ctx.descriptor.build)(&bad, &refsync_core::BuildContext::default()) {
            texts.push(("config error".into(), format!("{e} / {e:?}")));
        }
        if caps.webhooks {
            let req = sample_request(ctx);
            texts.push(("Debug of an authenticated request".into(), {
                let mut r = req.clone();
                let _ = ctx.harness.authenticate(&mut r, Utc::now());
                format!("{r:?}")
            }));
            if let Err(e) = conn.verify(&req, Utc::now()) {
                texts.push(("verify error".into(), format!("{e} / {e:?}")));
            }
            let mut tampered = req;
            let _ = ctx.harness.authenticate(&mut tampered, Utc::now());
            tampered.body.extend_from_slice(b" ");
            if let Err(e) = conn.verify(&tampered, Utc::now()) {
                texts.push(("verify error (tampered)".into(), format!("{e} / {e:?}")));
            }
        }
        if caps.push {
            let rt = rt();
            rt.block_on(async {
                let sim = ctx.harness.simulator().await.map_err(fail)?;
                sim.inject(on_api(
                    &*ctx.harness,
                    // A careless server that echoes every credential it received.
                    FaultRule::new(Fault::Echo { status: 401 }).always(),
                ));
                let conn = ctx.build(&ctx.harness.settings(Some(&sim.base_url())))?;
                if let Ok(spec) = ctx.harness.push_spec() {
                    if let Err(e) = conn.push_referral(&test_user("secrets"), &spec).await {
                        texts.push(("push error (401)".into(), format!("{e} / {e:?}")));
                    }
                }
                if let Err(e) = conn.health_check().await {
                    texts.push(("health_check error (401)".into(), format!("{e} / {e:?}")));
                }
                Ok::<(), Failed>(())
            })?;
        }
        Ok(())
    });
    outcome?;
    let logs = String::from_utf8_lossy(&captured.0.lock().map(|v| v.clone()).unwrap_or_default())
        .into_owned();
    texts.push(("tracing output".into(), logs));
    for (what, text) in &texts {
        for s in &secrets {
            if text.contains(s.as_str()) {
                return Err(fail(format!("a secret value appears in the {what}")));
            }
        }
    }
    pass()
}

// ---------------------------------------------------------------- verify

fn sample_request<H: Harness>(ctx: &Ctx<H>) -> WebhookRequest {
    ctx.sample.clone().unwrap_or_else(|| {
        WebhookRequest::post(
            "https://refsync.example/hooks/conformance",
            br#"{"conformance":true}"#.to_vec(),
        )
        .with_header("Content-Type", "application/json")
    })
}

/// A rejection test proves nothing against a `verify` that rejects everything (a stub): each one
/// first checks that a correctly authenticated request is accepted.
fn require_accepts_valid<H: Harness>(ctx: &Ctx<H>, conn: &dyn Connector) -> Result<(), Failed> {
    let now = Utc::now();
    let mut req = sample_request(ctx);
    ctx.harness
        .authenticate(&mut req, now)
        .map_err(|e| fail(format!("precondition: Harness::authenticate failed: {e}")))?;
    conn.verify(&req, now).map(|_| ()).map_err(|e| {
        fail(format!(
            "precondition: verify must accept a correctly authenticated request before its rejections mean anything (see verify::accepts_valid): {e}"
        ))
    })
}

/// Likewise, "parse never panics" proves little against a `parse` that returns an error for
/// everything: the connector must parse the sample fixture first.
fn require_parses_sample<H: Harness>(ctx: &Ctx<H>, conn: &dyn Connector) -> Result<(), Failed> {
    if ctx.sample.is_none() {
        return Err(fail(
            "precondition: no fixture to start from (see parse::fixtures_present)",
        ));
    }
    conn.parse(&sample_request(ctx)).map(|_| ()).map_err(|e| {
        fail(format!("precondition: parse must accept the first fixture before fuzzing it means anything: {e}"))
    })
}

fn verify_accepts_valid<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let conn = ctx.offline()?;
    let now = Utc::now();
    let mut req = sample_request(ctx);
    ctx.harness.authenticate(&mut req, now).map_err(fail)?;
    match conn.verify(&req, now) {
        Ok(Verification::Verified { .. }) => pass(),
        Ok(Verification::Unverified { reason }) => Err(fail(format!(
            "verify accepted the request without checking credentials ({reason}); the harness settings must configure authentication"
        ))),
        Err(e) => Err(fail(format!(
            "verify rejected a correctly authenticated request: {e}"
        ))),
    }
}

fn expect_unauthorized(result: refsync_core::Result<Verification>, what: &str) -> TestResult {
    match result {
        Ok(v) => Err(fail(format!("verify accepted {what}: {v:?}"))),
        Err(e) if *e.kind() != ErrorKind::Unauthorized => Err(fail(format!(
            "verify rejected {what}, but with {} instead of unauthorized: {e}",
            e.kind()
        ))),
        Err(e) if e.message().contains('\n') => {
            Err(fail(format!("the reason must be one line: {e:?}")))
        }
        Err(_) => pass(),
    }
}

fn verify_rejects_missing<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let conn = ctx.offline()?;
    require_accepts_valid(ctx, conn.as_ref())?;
    expect_unauthorized(
        conn.verify(&sample_request(ctx), Utc::now()),
        "a request without credentials",
    )
}

fn replace_secrets(value: &mut Value, secrets: &[String]) -> usize {
    match value {
        Value::String(s) if secrets.iter().any(|x| x == s) => {
            s.insert_str(0, "wrong-");
            1
        }
        Value::Array(a) => a.iter_mut().map(|v| replace_secrets(v, secrets)).sum(),
        Value::Object(o) => o.values_mut().map(|v| replace_secrets(v, secrets)).sum(),
        _ => 0,
    }
}

fn verify_rejects_wrong_secret<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let mut settings = ctx.harness.settings(None);
    if replace_secrets(&mut settings, &ctx.harness.secrets()) == 0 {
        return Err(fail(
            "none of Harness::secrets appears as a string value in Harness::settings",
        ));
    }
    require_accepts_valid(ctx, ctx.offline()?.as_ref())?;
    let conn = ctx.build(&settings)?;
    let now = Utc::now();
    let mut req = sample_request(ctx);
    ctx.harness.authenticate(&mut req, now).map_err(fail)?;
    expect_unauthorized(
        conn.verify(&req, now),
        "a request authenticated with another secret",
    )
}

fn verify_rejects_tampered<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let conn = ctx.offline()?;
    require_accepts_valid(ctx, conn.as_ref())?;
    let now = Utc::now();
    let mut req = sample_request(ctx);
    ctx.harness.authenticate(&mut req, now).map_err(fail)?;
    match req
        .body
        .iter()
        .position(|b| b.is_ascii_digit() || b.is_ascii_alphabetic())
    {
        Some(i) => req.body[i] = if req.body[i] == b'1' { b'2' } else { b'1' },
        None => req.body.push(b' '),
    }
    expect_unauthorized(
        conn.verify(&req, now),
        "a request whose body changed after signing",
    )
}

fn verify_rejects_stale<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let window = ctx.harness.replay_window().unwrap_or_default();
    let conn = ctx.offline()?;
    require_accepts_valid(ctx, conn.as_ref())?;
    let now = Utc::now();
    let signed_at =
        now - chrono::Duration::from_std(window + Duration::from_secs(60)).unwrap_or_default();
    let mut req = sample_request(ctx);
    ctx.harness
        .authenticate(&mut req, signed_at)
        .map_err(fail)?;
    expect_unauthorized(
        conn.verify(&req, now),
        "a request signed outside the replay window",
    )
}

fn verify_accepts_within_window<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let window = ctx.harness.replay_window().unwrap_or_default();
    let conn = ctx.offline()?;
    let now = Utc::now();
    let signed_at = now - chrono::Duration::from_std(window / 2).unwrap_or_default();
    let mut req = sample_request(ctx);
    ctx.harness
        .authenticate(&mut req, signed_at)
        .map_err(fail)?;
    conn.verify(&req, now).map_err(|e| {
        fail(format!(
            "a request signed within the replay window was rejected: {e}"
        ))
    })?;
    pass()
}

// ---------------------------------------------------------------- parse

fn parse_never_panics<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    use proptest::test_runner::{Config, TestRunner};
    let conn = ctx.offline()?;
    require_parses_sample(ctx, conn.as_ref())?;
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let base = sample_request(ctx);
    runner
        .run(
            &proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            |bytes| {
                let mut req = base.clone();
                req.body = bytes;
                let _ = conn.parse(&req);
                let _ = conn.verify(&req, Utc::now());
                Ok(())
            },
        )
        .map_err(|e| fail(format!("parse or verify panicked: {e}")))?;
    pass()
}

fn parse_never_panics_mutated<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    use proptest::test_runner::{Config, TestRunner};
    let conn = ctx.offline()?;
    require_parses_sample(ctx, conn.as_ref())?;
    let base = sample_request(ctx);
    let Ok(doc) = serde_json::from_slice::<Value>(&base.body) else {
        return Ok(Completion::ignored_with("the sample fixture is not JSON"));
    };
    let paths = json_paths(&doc);
    let replacements = [
        json!(null),
        json!(0),
        json!(-1.5),
        json!(""),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
        json!(u64::MAX),
        json!([null, {"id": null}]),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let n_paths = paths.len().max(1);
    runner
        .run(
            &(
                0..n_paths,
                0..replacements.len(),
                0..n_paths,
                0..replacements.len(),
            ),
            |(p1, r1, p2, r2)| {
                let mut d = doc.clone();
                for (p, r) in [(p1, r1), (p2, r2)] {
                    if let Some(slot) = paths.get(p).and_then(|ptr| d.pointer_mut(ptr)) {
                        *slot = replacements[r].clone();
                    }
                }
                let mut req = base.clone();
                req.body = serde_json::to_vec(&d).unwrap_or_default();
                let _ = conn.parse(&req);
                Ok(())
            },
        )
        .map_err(|e| fail(format!("parse panicked on a mutated fixture: {e}")))?;
    pass()
}

fn json_paths(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, c) in o {
                    walk(
                        c,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out.retain(|p| !p.is_empty());
    out
}

/// One payload file with its optional request description and expected events.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// File name without extension.
    pub name: String,
    /// Path of the payload.
    pub body: PathBuf,
    /// `<stem>.request.json`: `{"method", "url", "headers": {...}}`, when present.
    pub request: Option<PathBuf>,
    /// `<stem>.expected.json`.
    pub expected: PathBuf,
}

const NOT_PAYLOADS: &[&str] = &[".expected.json", ".request.json", ".source.txt", ".md"];

/// Finds the payload files of a fixtures folder, sorted by name.
pub fn discover_fixtures(dir: &Path) -> Vec<Fixture> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let fixtures: Vec<Fixture> = files
        .iter()
        .filter_map(|p| {
            let file = p.file_name()?.to_str()?;
            if NOT_PAYLOADS.iter().any(|s| file.ends_with(s)) || file.starts_with('.') {
                return None;
            }
            let stem = file.rsplit_once('.').map_or(file, |(s, _)| s).to_owned();
            let request = dir.join(format!("{stem}.request.json"));
            Some(Fixture {
                name: stem.clone(),
                body: p.clone(),
                request: request.exists().then_some(request),
                expected: dir.join(format!("{stem}.expected.json")),
            })
        })
        .collect();
    fixtures
}

/// The webhook request a fixture stands for.
pub fn fixture_request(f: &Fixture) -> Result<WebhookRequest, String> {
    let body = std::fs::read(&f.body).map_err(|e| format!("reading {}: {e}", f.body.display()))?;
    let ext = f.body.extension().and_then(|e| e.to_str()).unwrap_or("");
    let content_type = match ext {
        "json" => "application/json",
        "xml" => "text/xml; charset=utf-8",
        "form" | "urlencoded" => "application/x-www-form-urlencoded",
        _ => "application/octet-stream",
    };
    let mut req = WebhookRequest::post("https://refsync.example/hooks/conformance", body)
        .with_header("Content-Type", content_type);
    if let Some(path) = &f.request {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let desc: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(m) = desc.get("method").and_then(Value::as_str) {
            req.method = m.to_owned();
        }
        if let Some(u) = desc.get("url").and_then(Value::as_str) {
            req.url = u.to_owned();
        }
        if let Some(h) = desc.get("headers").and_then(Value::as_object) {
            for (k, v) in h {
                req.set_header(k, v.as_str().unwrap_or_default());
            }
        }
    }
    Ok(req)
}

/// What a fixture is expected to produce: the events (or the parse error) and the rules'
/// decisions on each event, in order.
pub fn expected_output(conn: &dyn Connector, req: &WebhookRequest, rules: &[RuleSpec]) -> Value {
    match conn.parse(req) {
        Err(e) => json!({ "error": { "kind": e.kind().as_str(), "message": e.message() } }),
        Ok(events) => {
            let built: Vec<_> = rules.iter().filter_map(|r| r.build().ok()).collect();
            let mut out = json!({ "events": events });
            if !built.is_empty() {
                let verdicts = decide_delivery(&built, &events, ReferralHistory::default(), None);
                out["verdicts"] = serde_json::to_value(verdicts).unwrap_or(Value::Null);
            }
            out
        }
    }
}

fn parse_fixture<H: Harness>(ctx: &Ctx<H>, f: &Fixture) -> TestResult {
    let conn = ctx.offline()?;
    let req = fixture_request(f).map_err(fail)?;
    for r in ctx.harness.rules() {
        r.build()
            .map_err(|e| fail(format!("Harness::rules: {e}")))?;
    }
    let actual = expected_output(conn.as_ref(), &req, &ctx.harness.rules());
    let pretty = serde_json::to_string_pretty(&actual).unwrap_or_default() + "\n";
    if std::env::var_os(BLESS_ENV).is_some() {
        std::fs::write(&f.expected, &pretty)
            .map_err(|e| fail(format!("writing {}: {e}", f.expected.display())))?;
        let _ = writeln!(std::io::stderr(), "blessed {}", f.expected.display());
        return pass();
    }
    let Ok(text) = std::fs::read_to_string(&f.expected) else {
        return Err(fail(format!(
            "{} is missing: run with {BLESS_ENV}=1 to write it, then review it. Output now:\n{pretty}",
            f.expected.display()
        )));
    };
    let expected: Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("{}: {e}", f.expected.display())))?;
    if expected != actual {
        let mut msg = format!(
            "{} differs from what parse produced now.\nexpected:\n{}\nactual:\n{pretty}",
            f.expected.display(),
            serde_json::to_string_pretty(&expected).unwrap_or_default()
        );
        let _ = write!(
            msg,
            "(if the change is intended, run with {BLESS_ENV}=1 and review the diff)"
        );
        return Err(fail(msg));
    }
    // Events must serialize to the canonical form and back.
    if let Some(events) = actual.get("events") {
        serde_json::from_value::<Vec<CrmEvent>>(events.clone())
            .map_err(|e| fail(format!("events do not read back: {e}")))?;
    }
    pass()
}

// ---------------------------------------------------------------- push

/// The referred user the push tests send; `tag` keeps emails and codes unique per test.
pub fn test_user(tag: &str) -> ReferredUser {
    ReferredUser {
        id: None,
        first_name: "Ada".into(),
        last_name: Some("Lovelace".into()),
        email: format!("ada+{tag}@example.com"),
        referral_code: format!("REF-{}", tag.to_uppercase()),
        referral_link: Some(format!(
            "https://refer.example/r/REF-{}",
            tag.to_uppercase()
        )),
        campaign: CampaignRef {
            id: "42".into(),
            name: Some("Spring Referral".into()),
        },
        referrer: Some(Referrer {
            id: Some("7".into()),
            code: Some("BOB7".into()),
            first_name: Some("Bob".into()),
            email: Some("bob@example.com".into()),
        }),
        source: Some("Referred".into()),
        coupon: None,
        meta: BTreeMap::from([("Company".to_owned(), "Analytical Engines".to_owned())]),
    }
}

struct PushEnv {
    sim: Simulator,
    conn: Arc<dyn Connector>,
    spec: PushSpec,
}

async fn push_env<H: Harness>(ctx: &Ctx<H>) -> Result<PushEnv, Failed> {
    let spec = ctx.harness.push_spec().map_err(fail)?;
    let sim = ctx.harness.simulator().await.map_err(fail)?;
    let conn = ctx.build(&ctx.harness.settings(Some(&sim.base_url())))?;
    Ok(PushEnv { sim, conn, spec })
}

fn check_links(o: &PushOutcome) -> Result<(), Failed> {
    if o.links.is_empty() && o.action != PushAction::Delivered {
        return Err(fail(format!("push outcome links no CRM object: {o:?}")));
    }
    Ok(())
}

fn push_create<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    rt().block_on(async {
        let env = push_env(ctx).await?;
        let user = test_user("create");
        let out = env
            .conn
            .push_referral(&user, &env.spec)
            .await
            .map_err(|e| fail(format!("push_referral: {e}")))?;
        let want = if ctx.descriptor.info.capabilities.duplicate_lookup {
            PushAction::Created
        } else {
            PushAction::Delivered
        };
        if out.action != want && out.action != PushAction::Created {
            return Err(fail(format!("expected {want:?}, got {out:?}")));
        }
        check_links(&out)?;
        if env.sim.requests().is_empty() {
            return Err(fail(
                "push reported success but the simulator received no request",
            ));
        }
        let records = ctx
            .harness
            .records(&env.sim, &user.email)
            .await
            .map_err(fail)?;
        if records.len() != 1 {
            return Err(fail(format!(
                "expected 1 record for {}, the simulator has {}: {records:?}",
                user.email,
                records.len()
            )));
        }
        let text = records[0].to_string();
        for value in [&user.referral_code, &user.email] {
            if !text.contains(value.as_str()) {
                return Err(fail(format!(
                    "the record does not contain {value:?}: {text}"
                )));
            }
        }
        pass()
    })
}

fn push_duplicate<H: Harness>(ctx: &Ctx<H>, policy: DuplicatePolicy) -> TestResult {
    rt().block_on(async {
        let env = push_env(ctx).await?;
        let tag = format!("{policy:?}").to_lowercase();
        let user = test_user(&tag);
        let mut spec = env.spec.clone();
        spec.duplicates = policy;
        let first = env.conn.push_referral(&user, &spec).await.map_err(|e| fail(format!("first push: {e}")))?;
        if first.action != PushAction::Created {
            return Err(fail(format!("first push of a new person: expected Created, got {first:?}")));
        }
        let mut again = user.clone();
        again.first_name = "Adeline".into();
        if policy == DuplicatePolicy::AlwaysCreate
            && let Some(reason) = ctx.harness.one_record_per_email()
        {
            return match env.conn.push_referral(&again, &spec).await {
                Ok(o) => Err(fail(format!("{reason}: a second always_create push must be refused, it gave {o:?}"))),
                Err(e) if *e.kind() != ErrorKind::Conflict => Err(fail(format!("{reason}: expected a conflict, got {e}"))),
                Err(e) if !e.message().contains("update_existing") => Err(fail(format!("the refusal should name the policies that work: {e}"))),
                Err(_) => {
                    let records = ctx.harness.records(&env.sim, &user.email).await.map_err(fail)?;
                    if records.len() == 1 { pass() } else { Err(fail(format!("expected the one record, got {records:?}"))) }
                }
            };
        }
        let second = env.conn.push_referral(&again, &spec).await.map_err(|e| fail(format!("second push: {e}")))?;
        check_links(&second)?;
        let records = ctx.harness.records(&env.sim, &user.email).await.map_err(fail)?;
        let texts: Vec<String> = records.iter().map(Value::to_string).collect();
        let renamed = texts.iter().filter(|t| t.contains("Adeline")).count();
        let (want_action, want_records, want_renamed) = match policy {
            DuplicatePolicy::UpdateExisting => (PushAction::Updated, 1, 1),
            DuplicatePolicy::LinkExisting => (PushAction::LinkedExisting, 1, 0),
            DuplicatePolicy::AlwaysCreate => (PushAction::Created, 2, 1),
        };
        if second.action != want_action {
            return Err(fail(format!("second push with {policy:?}: expected {want_action:?}, got {second:?}")));
        }
        if records.len() != want_records || renamed != want_renamed {
            return Err(fail(format!(
                "with {policy:?} the simulator should hold {want_records} record(s), {want_renamed} with the new first name; it holds {}: {texts:?}",
                records.len()
            )));
        }
        if policy == DuplicatePolicy::LinkExisting && second.links != first.links {
            return Err(fail(format!("link_existing must link the existing record: first {:?}, second {:?}", first.links, second.links)));
        }
        pass()
    })
}

fn push_missing_mapping<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    let required = ctx.descriptor.info.required_mappings;
    if required.is_empty() {
        return Ok(Completion::ignored_with(
            "the connector declares no required mapping",
        ));
    }
    rt().block_on(async {
        let env = push_env(ctx).await?;
        for placeholder in required {
            let mut spec = env.spec.clone();
            spec.fields
                .0
                .retain(|_, t| !t.placeholders().any(|p| p == placeholder));
            env.sim.clear_requests();
            match env.conn.push_referral(&test_user("missing"), &spec).await {
                Ok(o) => {
                    return Err(fail(format!(
                        "push without a mapping for {placeholder} succeeded: {o:?}"
                    )));
                }
                Err(e) if *e.kind() != ErrorKind::Validation && *e.kind() != ErrorKind::Config => {
                    return Err(fail(format!(
                        "missing {placeholder}: expected a validation error, got {e}"
                    )));
                }
                Err(e) if !e.message().contains(&placeholder.to_string()) => {
                    return Err(fail(format!("the error does not name {placeholder}: {e}")));
                }
                Err(_) => {}
            }
            let writes: Vec<_> = env
                .sim
                .requests()
                .into_iter()
                .filter(|r| r.method != "GET")
                .filter(|r| {
                    ctx.harness
                        .api_path_prefix()
                        .is_none_or(|p| r.path.starts_with(p))
                })
                .collect();
            if !writes.is_empty() {
                return Err(fail(format!(
                    "an invalid push wrote to the CRM: {:?}",
                    writes
                        .iter()
                        .map(|r| format!("{} {}", r.method, r.path))
                        .collect::<Vec<_>>()
                )));
            }
        }
        pass()
    })
}

fn error_mapping<H: Harness>(ctx: &Ctx<H>, status: u16, kind: &str) -> TestResult {
    rt().block_on(async {
        let env = push_env(ctx).await?;
        let fault = match status {
            429 => Fault::RateLimited { retry_after_secs: RETRY_AFTER_SECS },
            500..=599 => Fault::ServerError { status },
            _ => Fault::Status {
                status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: json!({"error": "injected by the conformance suite", "message": format!("injected {status}")}).to_string().into_bytes(),
            },
        };
        env.sim.inject(on_api(&*ctx.harness, FaultRule::new(fault).always()));
        let err = match env.conn.push_referral(&test_user(&format!("err{status}")), &env.spec).await {
            Ok(o) => return Err(fail(format!("push succeeded although every call answered {status}: {o:?}"))),
            Err(e) => e,
        };
        if err.kind().as_str() != kind {
            return Err(fail(format!("HTTP {status}: expected {kind}, got {}: {err}", err.kind())));
        }
        let retryable = matches!(status, 429 | 500..=599);
        if err.is_retryable() != retryable {
            return Err(fail(format!("HTTP {status}: retryable should be {retryable}: {err}")));
        }
        if status == 429 && err.retry_after() != Some(Duration::from_secs(RETRY_AFTER_SECS)) {
            return Err(fail(format!("HTTP 429 with Retry-After: {RETRY_AFTER_SECS}: the error must carry it, got {:?}", err.retry_after())));
        }
        if err.connector().is_none() {
            return Err(fail(format!("the error does not say which connector it came from: {err:?}")));
        }
        pass()
    })
}

fn health_ok<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    rt().block_on(async {
        let sim = ctx.harness.simulator().await.map_err(fail)?;
        let conn = ctx.build(&ctx.harness.settings(Some(&sim.base_url())))?;
        conn.health_check()
            .await
            .map_err(|e| fail(format!("health_check against the simulator: {e}")))?;
        pass()
    })
}

fn health_unauthorized<H: Harness>(ctx: &Ctx<H>) -> TestResult {
    rt().block_on(async {
        let sim = ctx.harness.simulator().await.map_err(fail)?;
        sim.inject(on_api(
            &*ctx.harness,
            FaultRule::new(Fault::Status {
                status: 401,
                headers: vec![],
                body: br#"{"error":"invalid token"}"#.to_vec(),
            })
            .always(),
        ));
        let conn = ctx.build(&ctx.harness.settings(Some(&sim.base_url())))?;
        match conn.health_check().await {
            Ok(()) => Err(fail("health_check passed although the CRM answered 401")),
            Err(e) if *e.kind() == ErrorKind::Unauthorized => pass(),
            Err(e) => Err(fail(format!(
                "health_check on 401: expected unauthorized, got {e}"
            ))),
        }
    })
}
