//! CRM calls per pushed referral, per connector, in bulk — and the effect of batching.
//!
//! Each measurement pushes `n` referred users through the real engine (SQLite store in a temp
//! dir, the embedded ledger as the platform) into one connector instance talking HTTP to the
//! testkit's simulator of its CRM over loopback, as the connectors' bulk end-to-end tests do:
//! every push is enqueued, then the engine's delivery worker and sender run until a round finds
//! nothing to do. Every request the simulator received during that push phase is counted:
//! record writes and reads, property / field metadata reads and OAuth token calls alike.
//! Any push left unfinished (failed, waiting for a retry, or dead) makes the measurement fail.
//!
//! What is measured ([`crm_push_costs`]), one row per connector / object / setting:
//!
//! - **HubSpot** contacts (batch upsert by email) and deals (the contact upserted, then a batch
//!   read and a batch create of the deals): batching;
//! - **Zoho CRM** leads (upsert): batching;
//! - **Salesforce** leads (sObject Collections upsert by the External ID holding the referral
//!   code; with `[push.defaults]` as in its end-to-end test, so each batch also queries which
//!   codes exist): batching;
//! - **Pipedrive** leads (a person found by email or created, then a lead): one referral at a
//!   time;
//! - **WooCommerce** customers (found by email or created, with a unique coupon made from a
//!   pattern): one referral at a time.
//!
//! Batching connectors are measured twice: with the engine's default `[worker] push_batch`
//! (100) and with `push_batch = 1`. With `push_batch = 1` the engine's `[worker] concurrency`
//! is lowered to 1 as well: the sender's first claim takes up to `concurrency` jobs of any kind,
//! pushes included, and hands the pushes among them to the connector together — so with the
//! default concurrency (4), `push_batch = 1` still pushes 4 referrals per call. In general the
//! concurrency used is `min(default concurrency, push_batch)`.
//!
//! The simulated accounts' rate limits and the connectors' client-side pacing
//! (`requests_per_10s`, `burst_per_2s`, `requests_per_second`) are raised so the measurement
//! is not paced: pacing changes when calls are made, not how many. Pipedrive's person-search
//! limit (10 per 2 s) is a constant of its client, so pushing into Pipedrive takes at least
//! `n / 5` seconds; the time allowed for each measurement grows with `n` accordingly. The
//! WooCommerce simulator answers at most 10 000 requests, enough for a few thousand referrals.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use refsync_core::{
    CampaignRef, DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, ReferredUser, Referrer,
    Registry,
};
use refsync_engine::config::{EngineConfig, WorkerConfig};
use refsync_engine::store::{JobFilter, JobState, open_store};
use refsync_engine::testing::LoopbackEngine;
use refsync_engine::{Engine, Instance, PushRequest};
use refsync_ledger::testing::Friends;
use refsync_testkit::hubspot::{HubSpotSim, HubSpotSimOptions};
use refsync_testkit::pipedrive::{PipedriveSim, PipedriveSimOptions};
use refsync_testkit::salesforce::{SalesforceSim, SalesforceSimOptions, TEST_PRIVATE_KEY_PEM};
use refsync_testkit::sim::Simulator;
use refsync_testkit::woocommerce::{WooSim, WooSimOptions};
use refsync_testkit::zoho::{ZohoSim, ZohoSimOptions};
use serde_json::{Value, json};

/// The cost of pushing referrals into one connector's CRM with one engine setting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CostRow {
    /// The connector (`hubspot`, `zoho`, `salesforce`, `pipedrive`, `woocommerce`).
    pub connector: String,
    /// The object pushed (`contact`, `deal`, `lead`, `customer`).
    pub object: String,
    /// The engine's `[worker] push_batch` used.
    pub push_batch: usize,
    /// Referrals pushed.
    pub referrals: usize,
    /// Every request the simulator got during the push phase (metadata reads and OAuth token
    /// calls included).
    pub crm_calls: usize,
    /// `crm_calls / referrals`.
    pub calls_per_referral: f64,
    /// Whether the connector declares `Capabilities::batching`.
    pub batching: bool,
}

/// Pushes `n` referrals per connector/setting; `progress` gets one short line per step ("hubspot
/// contact, push_batch 100: 1000 referrals → 12 calls").
///
/// # Errors
/// A set-up failure (simulator, store, ledger, connector settings), a push that did not
/// complete (with the first failures' reasons), `n == 0`, or a measurement that took longer than
/// its bound (120 s plus 300 ms per referral).
pub async fn crm_push_costs(
    n: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<CostRow>, String> {
    if n == 0 {
        return Err("crm_push_costs: n must be at least 1".to_owned());
    }
    let default_batch = WorkerConfig::default().push_batch;
    let mut rows = Vec::new();
    for case in Case::ALL {
        let (row, token_calls) = measure(case, n, default_batch).await?;
        progress(&row_line(&row, token_calls));
        let batching = row.batching;
        rows.push(row);
        if batching && default_batch != 1 {
            let (row, token_calls) = measure(case, n, 1).await?;
            progress(&row_line(&row, token_calls));
            rows.push(row);
        }
    }
    Ok(rows)
}

/// `"hubspot contact, push_batch 100: 1000 referrals → 12 calls (0.012 per referral)"`, with the
/// OAuth token calls among them when there were any.
fn row_line(row: &CostRow, token_calls: usize) -> String {
    let tokens = if token_calls > 0 {
        format!(", {token_calls} of them OAuth token calls")
    } else {
        String::new()
    };
    format!(
        "{} {}, push_batch {}: {} referrals → {} calls ({:.3} per referral{tokens})",
        row.connector,
        row.object,
        row.push_batch,
        row.referrals,
        row.crm_calls,
        row.calls_per_referral
    )
}

// ---------------------------------------------------------------------------------------------
// The measured set-ups

/// One connector / object pair: how its simulator is started and its instance configured.
#[derive(Debug, Clone, Copy)]
enum Case {
    HubSpotContact,
    HubSpotDeal,
    ZohoLead,
    SalesforceLead,
    PipedriveLead,
    WooCommerceCustomer,
}

/// A started simulator with the connector settings and push spec that talk to it.
struct Crm {
    sim: Box<dyn SimLog>,
    settings: Value,
    push: PushSpec,
}

/// The request log of a started simulator (each testkit simulator wraps a [`Simulator`]).
trait SimLog: Send + Sync {
    fn log(&self) -> &Simulator;
}

macro_rules! sim_log {
    ($($t:ty),*) => {$(
        impl SimLog for $t {
            fn log(&self) -> &Simulator {
                self.simulator()
            }
        }
    )*};
}
sim_log!(HubSpotSim, ZohoSim, SalesforceSim, PipedriveSim, WooSim);

/// Requests a simulator answers before `503` (default 10 000): above what any run needs.
const MAX_REQUESTS: usize = 10_000_000;
/// Rate limits and client-side pacing, raised out of the way (see the module docs).
const UNLIMITED: u32 = 1_000_000;

const API_TOKEN: &str = "pat-na1-bench-0123456789abcdef";
const CLIENT_ID: &str = "bench-client-id";
const CLIENT_SECRET: &str = "bench-client-secret-0123456789";
const REFRESH_TOKEN: &str = "bench-refresh-token";
const HOOK_SECRET: &str = "bench-webhook-secret-0123456789";
const SALESFORCE_USER: &str = "integration@bench.example";
const WOO_KEY: &str = "ck_bench0123456789abcdef";
const WOO_SECRET: &str = "cs_bench0123456789abcdef";

impl Case {
    const ALL: [Case; 6] = [
        Case::HubSpotContact,
        Case::HubSpotDeal,
        Case::ZohoLead,
        Case::SalesforceLead,
        Case::PipedriveLead,
        Case::WooCommerceCustomer,
    ];

    /// The connector's registry name.
    fn connector(self) -> &'static str {
        match self {
            Case::HubSpotContact | Case::HubSpotDeal => "hubspot",
            Case::ZohoLead => "zoho",
            Case::SalesforceLead => "salesforce",
            Case::PipedriveLead => "pipedrive",
            Case::WooCommerceCustomer => "woocommerce",
        }
    }

    /// The object, as reported.
    fn object(self) -> &'static str {
        match self {
            Case::HubSpotContact => "contact",
            Case::HubSpotDeal => "deal",
            Case::ZohoLead | Case::SalesforceLead | Case::PipedriveLead => "lead",
            Case::WooCommerceCustomer => "customer",
        }
    }

    /// Starts the simulator and returns it with the instance's settings and push spec — those
    /// of the connector's end-to-end tests, with rate limits out of the way.
    async fn start(self, dir: &Path) -> Result<Crm, String> {
        let started = |what: std::io::Error| format!("{}: simulator: {what}", self.connector());
        match self {
            Case::HubSpotContact | Case::HubSpotDeal => {
                let mut opts = HubSpotSimOptions::new(API_TOKEN, CLIENT_SECRET);
                opts.burst_per_10s = UNLIMITED;
                opts.max_requests = MAX_REQUESTS;
                opts.custom_deal_properties = Vec::new();
                let sim = HubSpotSim::start(opts).await.map_err(started)?;
                // The deal key must have unique values; the app's admin created it.
                sim.add_property("deals", "referral_code", true);
                let settings = json!({
                    "base_url": sim.base_url(),
                    "auth": { "type": "private_app", "token": API_TOKEN },
                    "client_secret": CLIENT_SECRET,
                    "portal_id": sim.options().portal_id,
                    "requests_per_10s": UNLIMITED,
                });
                let object = match self {
                    Case::HubSpotDeal => ObjectKind::Deal,
                    _ => ObjectKind::Contact,
                };
                let push = push_spec(
                    object,
                    &[
                        ("email", "{Email}"),
                        ("firstname", "{First Name}"),
                        ("referral_code", "{Referral Code}"),
                    ],
                    json!({}),
                )?;
                Ok(Crm {
                    sim: Box::new(sim),
                    settings,
                    push,
                })
            }
            Case::ZohoLead => {
                let mut opts = ZohoSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN);
                opts.daily_credits = u64::from(UNLIMITED) * 1000;
                opts.max_requests = MAX_REQUESTS;
                let sim = ZohoSim::start(opts).await.map_err(started)?;
                let settings = json!({
                    // No api_domain: it comes from the token response, as in production.
                    "auth": { "type": "self_client", "client_id": CLIENT_ID,
                              "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN,
                              "accounts_url": sim.base_url() },
                    "notification_token": HOOK_SECRET,
                    "channel_id": "4200000000001",
                });
                let push = push_spec(
                    ObjectKind::Lead,
                    &[
                        ("Email", "{Email}"),
                        ("First_Name", "{First Name}"),
                        ("Referral Code", "{Referral Code}"),
                    ],
                    json!({}),
                )?;
                Ok(Crm {
                    sim: Box::new(sim),
                    settings,
                    push,
                })
            }
            Case::SalesforceLead => {
                let mut opts = SalesforceSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN);
                opts.jwt_username = SALESFORCE_USER.to_owned();
                opts.daily_api_allocation = u64::from(UNLIMITED) * 1000;
                opts.max_requests = MAX_REQUESTS;
                let org = opts.organization_id.clone();
                let sim = SalesforceSim::start(opts).await.map_err(started)?;
                let key = dir.join("salesforce.pem");
                tokio::fs::write(&key, TEST_PRIVATE_KEY_PEM)
                    .await
                    .map_err(|e| format!("salesforce: writing the JWT key: {e}"))?;
                let settings = json!({
                    "auth": { "type": "jwt_bearer", "client_id": CLIENT_ID,
                              "username": SALESFORCE_USER,
                              "private_key_file": key.display().to_string(),
                              "login_url": sim.base_url() },
                    "endpoint_token": HOOK_SECRET,
                    // The 15-character form of the org id.
                    "organization_ids": [org.get(..15).unwrap_or(&org)],
                });
                let push = push_spec(
                    ObjectKind::Lead,
                    &[
                        ("Email", "{Email}"),
                        ("FirstName", "{First Name}"),
                        ("Referral_Code__c", "{Referral Code}"),
                    ],
                    json!({"LeadSource": "Referral"}),
                )?;
                Ok(Crm {
                    sim: Box::new(sim),
                    settings,
                    push,
                })
            }
            Case::PipedriveLead => {
                let mut opts = PipedriveSimOptions::new(API_TOKEN);
                opts.search_burst = UNLIMITED;
                opts.max_requests = MAX_REQUESTS;
                let sim = PipedriveSim::start(opts).await.map_err(started)?;
                let settings = json!({
                    "base_url": sim.base_url(),
                    "auth": { "type": "api_token", "token": API_TOKEN },
                    "webhook_user": "refsync-bench",
                    "webhook_password": HOOK_SECRET,
                    "company_id": sim.options().company_id.to_string(),
                    "referral_code_field": "Referral Code",
                    "burst_per_2s": UNLIMITED,
                });
                let push = push_spec(
                    ObjectKind::Lead,
                    &[
                        ("first_name", "{First Name}"),
                        ("email", "{Email}"),
                        ("Referral Code", "{Referral Code}"),
                        ("Referrer Email", "{Referrer Email}"),
                        ("Referrer First Name", "{Referrer First Name}"),
                    ],
                    json!({}),
                )?;
                Ok(Crm {
                    sim: Box::new(sim),
                    settings,
                    push,
                })
            }
            Case::WooCommerceCustomer => {
                let sim = WooSim::start(WooSimOptions::new(WOO_KEY, WOO_SECRET))
                    .await
                    .map_err(started)?;
                let settings = json!({
                    "store_url": sim.base_url(),
                    "consumer_key": WOO_KEY,
                    "consumer_secret": WOO_SECRET,
                    // The simulated store is "behind HTTPS": Basic auth.
                    "auth": "basic",
                    "webhook_secret": HOOK_SECRET,
                    "referral_code_meta_key": "referral_code",
                    "coupon": {"code": "friend-{random}", "amount": "15", "expires_after_days": 30},
                    "requests_per_second": UNLIMITED,
                });
                let push = push_spec(
                    ObjectKind::Contact,
                    &[
                        ("email", "{Email}"),
                        ("first_name", "{First Name}"),
                        ("meta.referral_code", "{Referral Code}"),
                        ("meta.referral_coupon", "{Coupon}"),
                        ("meta.referred_by", "{Referrer Email}"),
                    ],
                    json!({}),
                )?;
                Ok(Crm {
                    sim: Box::new(sim),
                    settings,
                    push,
                })
            }
        }
    }
}

/// A push spec updating existing records, with `fields` and `defaults` (a JSON object).
fn push_spec(
    object: ObjectKind,
    fields: &[(&str, &str)],
    defaults: Value,
) -> Result<PushSpec, String> {
    let fields = FieldMapping::from_pairs(fields.iter().copied())
        .map_err(|e| format!("push spec fields: {e}"))?;
    let defaults: BTreeMap<String, Value> =
        serde_json::from_value(defaults).map_err(|e| format!("push spec defaults: {e}"))?;
    Ok(PushSpec {
        object,
        fields,
        duplicates: DuplicatePolicy::UpdateExisting,
        defaults,
    })
}

// ---------------------------------------------------------------------------------------------
// One measurement

const INSTANCE: &str = "crm";

/// How long one measurement may take: 120 s, plus 300 ms per referral (Pipedrive's client
/// allows itself 5 person searches a second).
fn time_bound(n: usize) -> Duration {
    let per_referral = Duration::from_millis(300);
    Duration::from_secs(120)
        .saturating_add(per_referral.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// Pushes `n` referrals into `case`'s simulator with `push_batch`; returns the row and how many
/// of the calls were OAuth token calls.
async fn measure(case: Case, n: usize, push_batch: usize) -> Result<(CostRow, usize), String> {
    let what = format!(
        "{} {}, push_batch {push_batch}",
        case.connector(),
        case.object()
    );
    let dir = tempfile::tempdir().map_err(|e| format!("{what}: temp dir: {e}"))?;
    let bound = time_bound(n);
    let started = Instant::now();
    match tokio::time::timeout(bound, measure_in(case, n, push_batch, dir.path())).await {
        Ok(r) => r.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: {n} referrals not pushed within {} s (gave up after {:.0} s)",
            bound.as_secs(),
            started.elapsed().as_secs_f64()
        )),
    }
}

async fn measure_in(
    case: Case,
    n: usize,
    push_batch: usize,
    dir: &Path,
) -> Result<(CostRow, usize), String> {
    let Friends {
        ledger, campaign, ..
    } = Friends::open(dir, "Spring friends", &[], "bob@example.com")
        .await
        .map_err(|e| format!("ledger: {e}"))?;
    let crm = case.start(dir).await?;
    let mut registry = Registry::new();
    refsync_hubspot::register(&mut registry);
    refsync_zoho::register(&mut registry);
    refsync_salesforce::register(&mut registry);
    refsync_pipedrive::register(&mut registry);
    refsync_woocommerce::register(&mut registry);
    let connector = registry
        .build_connector(case.connector(), &crm.settings)
        .map_err(|e| format!("connector settings: {e}"))?;
    let batching = connector.info().capabilities.batching;
    let instance = Instance::new(
        INSTANCE,
        connector,
        Vec::new(),
        Some(campaign.to_string()),
        Some(crm.push),
    );
    let live = LoopbackEngine::serve(engine(dir, ledger, instance, push_batch).await?)
        .await
        .map_err(|e| format!("engine listener: {e}"))?;

    let log = crm.sim.log();
    log.clear_requests();
    for user in referred_users(n, campaign) {
        let request = PushRequest {
            instance: INSTANCE.to_owned(),
            user,
        };
        live.engine
            .enqueue_push(request, Utc::now())
            .await
            .map_err(|e| format!("enqueue a push: {e}"))?;
    }
    drain(&live.engine).await?;
    check_all_pushed(&live.engine, n).await?;
    let requests = log.requests();
    let token_calls = requests
        .iter()
        .filter(|r| r.path.contains("oauth") && r.path.ends_with("/token"))
        .count();
    let crm_calls = requests.len();
    let row = CostRow {
        connector: case.connector().to_owned(),
        object: case.object().to_owned(),
        push_batch,
        referrals: n,
        crm_calls,
        calls_per_referral: crm_calls as f64 / n as f64,
        batching,
    };
    Ok((row, token_calls))
}

/// The engine: an SQLite store in `dir`, the ledger as its platform, `instance`, and
/// `[worker] push_batch` (with `concurrency` at most `push_batch`, see the module docs).
async fn engine(
    dir: &Path,
    ledger: refsync_ledger::Ledger,
    instance: Instance,
    push_batch: usize,
) -> Result<Engine, String> {
    let store = open_store(&format!("sqlite://{}", dir.join("engine.db").display()))
        .await
        .map_err(|e| format!("engine store: {e}"))?;
    let mut config = EngineConfig::default();
    config.worker.push_batch = push_batch;
    config.worker.concurrency = config.worker.concurrency.min(push_batch).max(1);
    Engine::with_parts(store, Arc::new(ledger), vec![instance], config)
        .map_err(|e| format!("engine: {e}"))
}

/// `n` distinct friends referred by Ann in `campaign`.
fn referred_users(n: usize, campaign: i64) -> impl Iterator<Item = ReferredUser> {
    (0..n).map(move |i| ReferredUser {
        first_name: "Friend".into(),
        email: format!("friend{i}@example.com"),
        referral_code: format!("R-{i}"),
        campaign: CampaignRef {
            id: campaign.to_string(),
            name: Some("Spring friends".into()),
        },
        referrer: Some(Referrer {
            first_name: Some("Ann".into()),
            email: Some("ann@example.com".into()),
            ..Referrer::default()
        }),
        ..ReferredUser::default()
    })
}

/// Runs the delivery worker and the sender until a round finds nothing to do (as
/// `LoopbackEngine::settle`, without its limit of 20 rounds: one push per call takes `n`).
async fn drain(engine: &Engine) -> Result<(), String> {
    loop {
        let now = Utc::now();
        let deliveries = engine
            .process_deliveries_once(now)
            .await
            .map_err(|e| format!("delivery worker: {e}"))?;
        let jobs = engine
            .send_jobs_once(now)
            .await
            .map_err(|e| format!("sender: {e}"))?;
        if deliveries == 0 && jobs == 0 {
            return Ok(());
        }
    }
}

/// Fails unless exactly `n` push jobs exist and all are done; names the first failures.
async fn check_all_pushed(engine: &Engine, n: usize) -> Result<(), String> {
    let filter = JobFilter {
        kind: Some("push".into()),
        ..JobFilter::default()
    };
    let jobs = engine
        .store()
        .list_jobs(&filter)
        .await
        .map_err(|e| format!("listing push jobs: {e}"))?;
    let unfinished: Vec<_> = jobs.iter().filter(|j| j.state != JobState::Done).collect();
    if !unfinished.is_empty() {
        let first: Vec<String> = unfinished
            .iter()
            .take(5)
            .map(|j| {
                format!(
                    "{} ({}, {} attempts): {}",
                    j.payload["user"]["email"].as_str().unwrap_or("?"),
                    j.state.as_str(),
                    j.attempts,
                    j.last_error.as_deref().unwrap_or("no error recorded")
                )
            })
            .collect();
        return Err(format!(
            "{} of {} pushes did not complete; first: {}",
            unfinished.len(),
            jobs.len(),
            first.join("; ")
        ));
    }
    if jobs.len() != n {
        return Err(format!("{} push jobs for {n} referrals", jobs.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn collect(lines: &Mutex<Vec<String>>) -> impl Fn(&str) + Sync + '_ {
        move |line: &str| {
            lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.to_owned())
        }
    }

    /// The honest invariants: every push costs calls, batching saves calls, and a connector
    /// without batch endpoints costs at least one call per referral.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batching_saves_calls() {
        let lines = Mutex::new(Vec::new());
        let rows = crm_push_costs(120, &collect(&lines)).await.unwrap();
        let lines = lines.into_inner().unwrap();
        assert_eq!(lines.len(), rows.len(), "{lines:#?}");
        for row in &rows {
            assert!(row.crm_calls > 0, "{row:?}");
            assert_eq!(row.referrals, 120);
        }
        let batching: Vec<&CostRow> = rows.iter().filter(|r| r.batching).collect();
        assert!(!batching.is_empty(), "{rows:#?}");
        for r in batching.iter().filter(|r| r.push_batch != 1) {
            let single = batching
                .iter()
                .find(|s| s.connector == r.connector && s.object == r.object && s.push_batch == 1)
                .unwrap_or_else(|| panic!("no push_batch = 1 row for {r:?}"));
            assert!(single.crm_calls > r.crm_calls, "{single:?} vs {r:?}");
        }
        let pipedrive = rows.iter().find(|r| r.connector == "pipedrive").unwrap();
        assert!(!pipedrive.batching);
        assert!(pipedrive.calls_per_referral >= 1.0, "{pipedrive:?}");
    }

    /// The numbers for 1,000 referrals: `cargo test -p refsync-bench --lib cost -- --ignored
    /// --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "slow: pushes 1,000 referrals per connector and setting"]
    #[allow(clippy::print_stderr)]
    async fn costs_for_1000_referrals() {
        let rows = crm_push_costs(1000, &|line: &str| eprintln!("{line}"))
            .await
            .unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&rows).unwrap());
    }
}
