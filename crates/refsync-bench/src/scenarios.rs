//! The benchmark run (`refsync-bench run`, behind `cargo xtask bench`): ingest, drain, cost,
//! footprint and the micro results, assembled into one [`Report`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use refsync_ledger::Ledger;
use serde::Serialize;

use crate::cost::CostRow;
use crate::loadgen::{LoadResult, unix_ms};
use crate::payloads::{Request, Templates, instances_toml, write_folder};
use crate::server::{RssSampler, Serve, run_load_process};

/// What to run, and how big.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `refsync` binary under test.
    pub refsync: PathBuf,
    /// Where the report goes (`report.json`, `report.md`, `ingest-latency.svg`).
    pub out: PathBuf,
    /// Criterion's output directory (`<target>/criterion`), for the micro results.
    pub criterion_dir: Option<PathBuf>,
    /// The tiny version CI runs.
    pub smoke: bool,
    /// A PostgreSQL server URL for the PostgreSQL ingest runs (`None`: SQLite only).
    pub postgres: Option<String>,
    /// Offered loads of the open-loop ingest runs (deliveries/s).
    pub rates: Vec<f64>,
    /// Seconds of load per offered rate.
    pub level_secs: f64,
    /// Deliveries of the closed-loop (maximum throughput) run.
    pub max_count: usize,
    /// Connections of the load generator.
    pub concurrency: usize,
    /// Qualifications of the drain run.
    pub drain_qualifications: usize,
    /// Referrals per connector of the cost run.
    pub cost_referrals: usize,
    /// Scenarios not to run (`ingest`, `drain`, `cost`).
    pub skip: Vec<String>,
}

impl RunOptions {
    /// The full run (about 10 minutes on 2 cores).
    pub fn full(refsync: PathBuf, out: PathBuf) -> Self {
        RunOptions {
            refsync,
            out,
            criterion_dir: None,
            smoke: false,
            postgres: None,
            rates: vec![500.0, 1000.0, 2000.0, 5000.0, 10_000.0],
            level_secs: 5.0,
            max_count: 60_000,
            concurrency: 64,
            drain_qualifications: 1200,
            cost_referrals: 1000,
            skip: Vec::new(),
        }
    }

    /// The smoke run: every scenario, tiny (well under a minute).
    pub fn smoke(refsync: PathBuf, out: PathBuf) -> Self {
        RunOptions {
            smoke: true,
            rates: vec![200.0],
            level_secs: 1.0,
            max_count: 300,
            concurrency: 8,
            drain_qualifications: 20,
            cost_referrals: 120,
            ..RunOptions::full(refsync, out)
        }
    }
}

/// Progress lines on stderr.
pub fn progress(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "bench: {line}");
}

// ---- ingest ---------------------------------------------------------------------------------

/// One ingest run: a fresh `refsync serve` on a fresh store, one load.
#[derive(Debug, Clone, Serialize)]
pub struct IngestRow {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// What the load generator measured.
    pub load: LoadResult,
    /// Deliveries found in the store after `kill -9` right after the load (must equal the
    /// acknowledged ones: an acknowledged delivery is durable).
    pub stored_after_kill: u64,
    /// From spawn to listening, ms.
    pub startup_ms: f64,
    /// Resident memory one second after start (KiB).
    pub idle_rss_kib: u64,
    /// The largest resident memory sampled during the load (KiB).
    pub load_rss_kib: u64,
    /// Calls the server made to the CRM APIs while processing (the deliveries need none).
    pub crm_calls: usize,
}

/// A CRM API stand-in that counts calls and answers 404.
struct CrmCounter {
    base: String,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CrmCounter {
    async fn start() -> Result<CrmCounter, String> {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { (axum::http::StatusCode::NOT_FOUND, "not found") }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let base = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(CrmCounter { base, calls, task })
    }
}

/// The store backends of the ingest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// SQLite with the default `synchronous=normal` (durable against a crash of refsync).
    Sqlite,
    /// SQLite with `synchronous=full` (also durable against power loss).
    SqliteFull,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::SqliteFull => "sqlite-full",
            Backend::Postgres => "postgres",
        }
    }
}

/// A store for one run: a SQLite file in the run's directory, or a fresh PostgreSQL schema.
enum Store {
    Sqlite(PathBuf, Backend),
    Postgres(refsync_testkit::services::PgSchema),
}

impl Store {
    /// The URL refsync is configured with.
    fn url(&self) -> String {
        match self {
            Store::Sqlite(p, Backend::SqliteFull) => {
                format!("sqlite://{}?synchronous=full", p.display())
            }
            Store::Sqlite(p, _) => format!("sqlite://{}", p.display()),
            Store::Postgres(s) => s.url().to_owned(),
        }
    }

    fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_, b) => b.name(),
            Store::Postgres(_) => Backend::Postgres.name(),
        }
    }

    /// Rows of the deliveries table.
    async fn count_deliveries(&self) -> Result<u64, String> {
        use sqlx::Connection as _;
        let q = "SELECT COUNT(*) FROM deliveries";
        let n: i64 = match self {
            Store::Sqlite(path, _) => {
                let mut c =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .map_err(|e| format!("open the store: {e}"))?;
                sqlx::query_scalar(q)
                    .fetch_one(&mut c)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Store::Postgres(_) => {
                let mut c = sqlx::PgConnection::connect(&self.url())
                    .await
                    .map_err(|e| format!("open the store: {e}"))?;
                sqlx::query_scalar(q)
                    .fetch_one(&mut c)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

fn serve_config(store_url: &str, platform: &str, instances: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_token = "bench-admin-token-0123456789"

[store]
url = "{store_url}"

{platform}

[worker]
upkeep_interval_secs = 0

{instances}"#
    )
}

/// Runs one ingest level: `count` deliveries at `rate` (or closed loop) into a fresh server.
async fn ingest_level(
    opts: &RunOptions,
    crm: &CrmCounter,
    backend: Backend,
    run: u64,
    rate: Option<f64>,
    count: usize,
) -> Result<IngestRow, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let store = if backend == Backend::Postgres {
        Store::Postgres(
            refsync_testkit::services::PgSchema::create("refsync_bench", "the ingest benchmark")
                .await
                .ok_or("no PostgreSQL URL")?,
        )
    } else {
        Store::Sqlite(dir.path().join("refsync.db"), backend)
    };
    let platform = format!(
        "[platform]\ntype = \"ledger\"\ndatabase_url = \"sqlite://{}\"",
        dir.path().join("ledger.db").display()
    );
    let config = dir.path().join("refsync.toml");
    std::fs::write(
        &config,
        serve_config(&store.url(), &platform, &instances_toml("1", &crm.base)),
    )
    .map_err(|e| e.to_string())?;

    // Payloads first (HubSpot's signed timestamps stay fresh: the run takes seconds).
    let templates = Templates::new();
    let now_ms = i64::try_from(unix_ms(SystemTime::now())).unwrap_or(0);
    let requests: Vec<Request> = (0..count as u64)
        .map(|i| templates.mixed(run, i, now_ms))
        .collect();
    let payloads = dir.path().join("payloads");
    write_folder(&payloads, &requests, 5000)?;
    drop(requests);

    let serve = Serve::start(&opts.refsync, &config)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss_kib = serve.memory_kib().map_or(0, |m| m.0);
    let crm_before = crm.calls.load(Ordering::Relaxed);
    let sampler = RssSampler::start(serve.pid());
    let url = serve.base_url();
    let concurrency = opts.concurrency;
    let load =
        tokio::task::spawn_blocking(move || run_load_process(&url, &payloads, rate, concurrency))
            .await
            .map_err(|e| e.to_string())??;
    let load_rss_kib = sampler.finish();
    let crm_calls = crm.calls.load(Ordering::Relaxed) - crm_before;
    let startup_ms = serve.startup.as_secs_f64() * 1000.0;
    if load.errors > 0 || load.acked() < load.sent {
        progress(&format!(
            "server stderr (last lines):\n{}",
            serve.stderr_tail()
        ));
    }
    // A crash right after the last acknowledgement: every acknowledged delivery must be there.
    serve.kill9();
    let stored_after_kill = store.count_deliveries().await?;
    Ok(IngestRow {
        backend: store.backend().to_owned(),
        load,
        stored_after_kill,
        startup_ms,
        idle_rss_kib,
        load_rss_kib,
        crm_calls,
    })
}

/// Every ingest level on SQLite, then on PostgreSQL when configured.
async fn ingest(opts: &RunOptions) -> Result<Vec<IngestRow>, String> {
    let crm = CrmCounter::start().await?;
    let mut rows = Vec::new();
    let mut backends = vec![Backend::Sqlite, Backend::SqliteFull];
    if opts.postgres.is_some() {
        backends.push(Backend::Postgres);
    }
    let mut run: u64 = u64::from(std::process::id()) % 1000 * 100;
    for backend in backends {
        let name = backend.name();
        let mut levels: Vec<(Option<f64>, usize)> = opts
            .rates
            .iter()
            .map(|&r| (Some(r), ((r * opts.level_secs) as usize).max(100)))
            .collect();
        levels.push((None, opts.max_count));
        for (rate, count) in levels {
            run += 1;
            let shown = rate.map_or_else(|| "max (closed loop)".to_owned(), |r| format!("{r}/s"));
            progress(&format!("ingest {name}: {count} deliveries at {shown}"));
            let row = ingest_level(opts, &crm, backend, run, rate, count).await?;
            progress(&format!(
                "ingest {name} {shown}: {:.0} acked/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} stored after kill -9 of {} acked",
                row.load.acked_rps,
                ms(row.load.latency.p50_us),
                ms(row.load.latency.p99_us),
                ms(row.load.latency.max_us),
                row.stored_after_kill,
                row.load.acked()
            ));
            // The smoke run (CI) is there to catch a harness that rotted: a delivery that was
            // refused (a signature the connector no longer accepts) or lost fails it. A full run
            // reports such rows instead.
            if opts.smoke
                && (row.load.acked() != row.load.sent
                    || row.stored_after_kill != row.load.acked() as u64)
            {
                return Err(format!(
                    "ingest {name} {shown}: {} of {} acknowledged (statuses {:?}, {} without answer), {} stored after kill -9",
                    row.load.acked(),
                    row.load.sent,
                    row.load.statuses,
                    row.load.errors,
                    row.stored_after_kill
                ));
            }
            rows.push(row);
        }
    }
    crm.task.abort();
    Ok(rows)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

// ---- drain ------------------------------------------------------------------------------------

/// The drain run: qualifications queued faster than the platform allows, then drained.
#[derive(Debug, Clone, Serialize)]
pub struct DrainResult {
    /// Qualifying deliveries sent (one referral each).
    pub qualifications: usize,
    /// The platform's limit enforced by the stand-in (calls per 60 s window).
    pub platform_limit_per_minute: usize,
    /// refsync's `rate_limit_per_minute`.
    pub configured_per_minute: u32,
    /// Referrals qualified exactly once at the end (the ledger's records).
    pub qualified_once: usize,
    /// Referrals qualified more than once (must be 0).
    pub qualified_twice: usize,
    /// Every call the platform received.
    pub platform_calls: usize,
    /// Calls refused for exceeding the window (must be 0).
    pub violations: usize,
    /// The most calls that arrived in any 60 s window.
    pub max_calls_in_window: usize,
    /// From the last acknowledgement to the last successful qualification, seconds.
    pub drain_s: f64,
    /// `qualifications / 10` seconds: the issue's steady-rate ideal.
    pub ideal_steady_s: f64,
    /// The least time any client can take without a violation: a full window at once, then
    /// one window per further `limit` calls.
    pub ideal_window_s: f64,
    /// From the last acknowledgement, when the first qualification call started, seconds.
    pub first_call_after_s: f64,
}

impl DrainResult {
    /// Platform calls per qualification.
    pub fn calls_per_qualification(&self) -> f64 {
        self.platform_calls as f64 / self.qualifications.max(1) as f64
    }
}

#[derive(Default)]
struct PlatformLog {
    /// Accepted calls of the last 60 s.
    window: VecDeque<Instant>,
    arrivals: Vec<Instant>,
    first_arrival: Option<SystemTime>,
    violations: usize,
    qualified_at: Vec<SystemTime>,
}

#[derive(Clone)]
struct Platform {
    log: Arc<Mutex<PlatformLog>>,
    limit: usize,
}

/// Referral Factory's limit as its stand-in enforces it: at most `limit` calls arrive in
/// any 60 s window; more is a violation (429, the call is not served).
async fn enforce(
    axum::extract::State(p): axum::extract::State<Platform>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let now = Instant::now();
    let qualify = request.uri().path().ends_with("/users/qualification");
    {
        let mut log = p.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.arrivals.push(now);
        log.first_arrival.get_or_insert_with(SystemTime::now);
        while log
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            log.window.pop_front();
        }
        if log.window.len() >= p.limit {
            log.violations += 1;
            return (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded",
            )
                .into_response();
        }
        log.window.push_back(now);
    }
    let response = next.run(request).await;
    if qualify && response.status().is_success() {
        p.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .qualified_at
            .push(SystemTime::now());
    }
    response
}

const RF_TOKEN: &str = "bench-referral-factory-token-0123456789";
const PLATFORM_LIMIT: usize = 600;

/// The drain run (see [`DrainResult`]).
async fn drain(opts: &RunOptions) -> Result<DrainResult, String> {
    let n = opts.drain_qualifications;
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let ledger = Ledger::open(&format!(
        "sqlite://{}",
        dir.path().join("platform.db").display()
    ))
    .await
    .map_err(|e| e.to_string())?;
    progress(&format!(
        "drain: creating {n} referred users on the platform"
    ));
    let (campaign, users) = refsync_ledger::testing::invited_users(&ledger, "Drain", n)
        .await
        .map_err(|e| e.to_string())?;
    let platform = Platform {
        log: Arc::new(Mutex::new(PlatformLog::default())),
        limit: PLATFORM_LIMIT,
    };
    let app = refsync_ledger::http::router(
        ledger.clone(),
        refsync_ledger::http::HttpOptions::new(RF_TOKEN),
    )
    .layer(axum::middleware::from_fn_with_state(
        platform.clone(),
        enforce,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let configured = u32::try_from(PLATFORM_LIMIT).unwrap_or(600);
    let platform_toml = format!(
        "[platform]\ntype = \"referral-factory\"\nbase_url = \"{base}/api/v2\"\ntoken = \"{RF_TOKEN}\"\nrate_limit_per_minute = {configured}"
    );
    // The CRM API is never called: the deliveries carry their codes.
    let instances =
        crate::payloads::pipedrive_instance_toml(&campaign.to_string(), "http://127.0.0.1:9");
    let config = dir.path().join("refsync.toml");
    let store = format!("sqlite://{}", dir.path().join("refsync.db").display());
    std::fs::write(&config, serve_config(&store, &platform_toml, &instances))
        .map_err(|e| e.to_string())?;
    let templates = Templates::new();
    let requests: Vec<Request> = users
        .iter()
        .enumerate()
        .map(|(i, (code, _))| templates.pipedrive_won(7, i as u64, code))
        .collect();
    let payloads = dir.path().join("payloads");
    write_folder(&payloads, &requests, 5000)?;

    let serve = Serve::start(&opts.refsync, &config)?;
    let url = serve.base_url();
    progress(&format!(
        "drain: {n} qualifying deliveries; the platform allows {PLATFORM_LIMIT} calls per minute"
    ));
    let load = tokio::task::spawn_blocking(move || run_load_process(&url, &payloads, None, 16))
        .await
        .map_err(|e| e.to_string())??;
    if load.acked() != n {
        return Err(format!(
            "drain: only {} of {n} deliveries acknowledged: {:?}",
            load.acked(),
            load.statuses
        ));
    }
    let last_ack = std::time::UNIX_EPOCH + Duration::from_millis(load.finished_unix_ms);
    let ideal_window_s = (n.div_ceil(PLATFORM_LIMIT).saturating_sub(1) * 60) as f64;
    let deadline = Instant::now() + Duration::from_secs_f64(ideal_window_s + 120.0);
    let mut last_report = Instant::now();
    loop {
        let done = platform
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .qualified_at
            .len();
        if done >= n {
            break;
        }
        if Instant::now() > deadline {
            let tail = serve.stderr_tail();
            return Err(format!(
                "drain: {done} of {n} qualified after {:.0} s; server stderr:\n{tail}",
                ideal_window_s + 120.0
            ));
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            progress(&format!("drain: {done}/{n} qualified"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.terminate();
    server.abort();
    let log = std::mem::take(&mut *platform.log.lock().unwrap_or_else(PoisonError::into_inner));
    let last_qualified = log.qualified_at.iter().max().copied().unwrap_or(last_ack);
    let since_ack = |t: SystemTime| {
        t.duration_since(last_ack)
            .map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64())
    };
    let arrivals: Vec<Duration> = log
        .arrivals
        .iter()
        .map(|t| t.duration_since(log.arrivals[0]))
        .collect();
    let mut qualified_once = 0;
    let mut qualified_twice = 0;
    for (_, id) in &users {
        match ledger.qualifications(*id).await.map(|q| q.len()) {
            Ok(1) => qualified_once += 1,
            Ok(k) if k > 1 => qualified_twice += 1,
            _ => {}
        }
    }
    Ok(DrainResult {
        qualifications: n,
        platform_limit_per_minute: PLATFORM_LIMIT,
        configured_per_minute: configured,
        qualified_once,
        qualified_twice,
        platform_calls: log.arrivals.len(),
        violations: log.violations,
        max_calls_in_window: crate::report::max_in_window(&arrivals, Duration::from_secs(60)),
        drain_s: since_ack(last_qualified),
        ideal_steady_s: n as f64 / 10.0,
        ideal_window_s,
        first_call_after_s: log.first_arrival.map_or(0.0, since_ack),
    })
}

// ---- micro --------------------------------------------------------------------------------

/// One connector's verify + parse + rules benchmark (criterion's `micro` group).
#[derive(Debug, Clone, Serialize)]
pub struct MicroRow {
    /// The connector.
    pub connector: String,
    /// Events per iteration (its fixture payloads).
    pub events_per_iteration: u64,
    /// Criterion's mean time per iteration, ns.
    pub mean_ns: f64,
    /// Events per second on one core.
    pub events_per_s: f64,
}

/// Reads criterion's results of group `micro` (`<dir>/micro/<id>/new/{estimates,benchmark}.json`).
pub fn read_micro(criterion_dir: &Path) -> Vec<MicroRow> {
    let group = criterion_dir.join("micro");
    let Ok(entries) = std::fs::read_dir(&group) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path().join("new");
        let read = |name: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&std::fs::read(dir.join(name)).ok()?).ok()
        };
        let (Some(estimates), Some(benchmark)) = (read("estimates.json"), read("benchmark.json"))
        else {
            continue;
        };
        let Some(mean_ns) = estimates["mean"]["point_estimate"].as_f64() else {
            continue;
        };
        let events = benchmark["throughput"]["Elements"].as_u64().unwrap_or(0);
        let connector = benchmark["value_str"]
            .as_str()
            .or_else(|| benchmark["function_id"].as_str())
            .map_or_else(
                || entry.file_name().to_string_lossy().into_owned(),
                str::to_owned,
            );
        rows.push(MicroRow {
            connector,
            events_per_iteration: events,
            mean_ns,
            events_per_s: events as f64 / (mean_ns * 1e-9).max(1e-12),
        });
    }
    rows.sort_by(|a, b| a.connector.cmp(&b.connector));
    rows
}

// ---- the report ---------------------------------------------------------------------------

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// `/proc/cpuinfo`'s model name.
    pub cpu_model: String,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// This machine.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_owned()),
            memory_mib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
        }
    }
}

/// Size and start-up of the binary, memory of the server.
#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    /// The `refsync` binary, bytes.
    pub binary_bytes: u64,
    /// Median spawn-to-listening time over the ingest runs, ms.
    pub startup_ms_median: f64,
    /// The largest idle resident memory (1 s after start), MiB.
    pub idle_rss_mib: f64,
    /// The largest resident memory during any SQLite ingest run at or below the p99 target's
    /// load (2,000/s), MiB.
    pub rss_at_2000_mib: f64,
    /// The largest resident memory during any ingest run, MiB.
    pub peak_rss_mib: f64,
}

/// One target of the issue and its measured value.
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    /// What is measured.
    pub what: String,
    /// The target.
    pub target: String,
    /// The measured value.
    pub measured: String,
    /// Met (`None`: not measured in this run).
    pub met: Option<bool>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `smoke` or `full`.
    pub kind: String,
    /// The machine.
    pub machine: Machine,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// Ingest runs.
    pub ingest: Vec<IngestRow>,
    /// The drain run.
    pub drain: Option<DrainResult>,
    /// CRM calls per pushed referral.
    pub cost: Vec<CostRow>,
    /// Footprint.
    pub footprint: Footprint,
    /// Micro benchmarks (empty when criterion's results are not there).
    pub micro: Vec<MicroRow>,
    /// The targets.
    pub targets: Vec<TargetRow>,
}

/// Runs every scenario and writes the report files; returns the report.
///
/// # Errors
/// A scenario that could not run (the message says which and why).
pub async fn run_all(opts: &RunOptions) -> Result<Report, String> {
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| format!("cannot create {}: {e}", opts.out.display()))?;
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let binary_bytes = std::fs::metadata(&opts.refsync)
        .map_err(|e| format!("{}: {e}", opts.refsync.display()))?
        .len();
    let skip = |name: &str| {
        let skipped = opts.skip.iter().any(|s| s == name);
        if skipped {
            progress(&format!("{name}: skipped"));
        }
        skipped
    };
    let ingest = if skip("ingest") {
        Vec::new()
    } else {
        ingest(opts).await?
    };
    let drain = if skip("drain") {
        None
    } else {
        let d = drain(opts).await?;
        progress(&format!(
            "drain: {} qualifications in {:.1} s after the last ack (window ideal {:.1} s, steady ideal {:.1} s), {} violations",
            d.qualifications, d.drain_s, d.ideal_window_s, d.ideal_steady_s, d.violations
        ));
        Some(d)
    };
    let cost = if skip("cost") {
        Vec::new()
    } else {
        progress(&format!(
            "cost: pushing {} referrals per connector",
            opts.cost_referrals
        ));
        crate::cost::crm_push_costs(opts.cost_referrals, &|line: &str| {
            progress(&format!("cost: {line}"));
        })
        .await?
    };
    let micro = opts
        .criterion_dir
        .as_deref()
        .map(read_micro)
        .unwrap_or_default();
    let mut startups: Vec<f64> = ingest.iter().map(|r| r.startup_ms).collect();
    startups.sort_by(f64::total_cmp);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let footprint = Footprint {
        binary_bytes,
        startup_ms_median: startups.get(startups.len() / 2).copied().unwrap_or(0.0),
        idle_rss_mib: mib(ingest.iter().map(|r| r.idle_rss_kib).max().unwrap_or(0)),
        rss_at_2000_mib: mib(ingest
            .iter()
            .filter(|r| r.backend == "sqlite" && r.load.offered_rps.is_some_and(|o| o <= 2000.0))
            .map(|r| r.load_rss_kib)
            .max()
            .unwrap_or(0)),
        peak_rss_mib: mib(ingest.iter().map(|r| r.load_rss_kib).max().unwrap_or(0)),
    };
    let mut report = Report {
        kind: if opts.smoke { "smoke" } else { "full" }.into(),
        machine: Machine::detect(),
        started_at,
        ingest,
        drain,
        cost,
        footprint,
        micro,
        targets: Vec::new(),
    };
    report.targets = targets(&report);
    write_outputs(opts, &report)?;
    Ok(report)
}

/// The issue's targets against the report.
pub fn targets(r: &Report) -> Vec<TargetRow> {
    let mut t = Vec::new();
    let sqlite_max = r
        .ingest
        .iter()
        .filter(|i| i.backend == "sqlite")
        .map(|i| i.load.acked_rps)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let durable = r
        .ingest
        .iter()
        .all(|i| i.stored_after_kill >= i.load.acked() as u64);
    t.push(TargetRow {
        what: "ingest on SQLite, durable (acked deliveries all stored after kill -9)".into(),
        target: ">= 10,000 deliveries/s".into(),
        measured: sqlite_max.map_or_else(
            || "not run".into(),
            |v| {
                format!(
                    "{v:.0}/s; {}",
                    if durable {
                        "all acked deliveries found after kill -9"
                    } else {
                        "SOME ACKED DELIVERIES MISSING after kill -9"
                    }
                )
            },
        ),
        met: sqlite_max.map(|v| v >= 10_000.0 && durable),
    });
    let at_2000 = r
        .ingest
        .iter()
        .find(|i| i.backend == "sqlite" && i.load.offered_rps == Some(2000.0));
    t.push(TargetRow {
        what: "ack latency p99 at 2,000 deliveries/s (SQLite)".into(),
        target: "<= 10 ms".into(),
        measured: at_2000.map_or_else(
            || "not run".into(),
            |i| format!("{:.2} ms", ms(i.load.latency.p99_us)),
        ),
        met: at_2000.map(|i| i.load.latency.p99_us <= 10_000 && i.load.acked() == i.load.sent),
    });
    if let Some(d) = &r.drain {
        let dev = (d.drain_s - d.ideal_window_s) / d.ideal_window_s.max(1e-9) * 100.0;
        t.push(TargetRow {
            what: format!(
                "drain of {} qualifications at {}/min",
                d.qualifications, d.platform_limit_per_minute
            ),
            target: "within 2 % of the rate-limit ideal, 0 violations".into(),
            measured: format!(
                "{:.1} s (window ideal {:.1} s: {dev:+.1} %; steady ideal {:.1} s), {} violations",
                d.drain_s, d.ideal_window_s, d.ideal_steady_s, d.violations
            ),
            met: Some(
                d.violations == 0
                    && d.qualified_twice == 0
                    && d.qualified_once == d.qualifications
                    && (d.ideal_window_s == 0.0 || dev <= 2.0),
            ),
        });
        t.push(TargetRow {
            what: "platform calls per qualification".into(),
            target: "<= 1.0".into(),
            measured: format!("{:.3}", d.calls_per_qualification()),
            met: Some(d.calls_per_qualification() <= 1.0),
        });
    }
    let batching: Vec<&CostRow> = r
        .cost
        .iter()
        .filter(|c| c.batching && c.push_batch > 1)
        .collect();
    if !batching.is_empty() {
        let worst = batching
            .iter()
            .map(|c| c.calls_per_referral)
            .fold(0.0, f64::max);
        t.push(TargetRow {
            what: "CRM calls per referral, bulk push to batching CRMs".into(),
            target: "<= 0.05".into(),
            measured: batching
                .iter()
                .map(|c| format!("{} {}: {:.3}", c.connector, c.object, c.calls_per_referral))
                .collect::<Vec<_>>()
                .join("; "),
            met: Some(worst <= 0.05),
        });
    }
    let rss = r.footprint.rss_at_2000_mib;
    t.push(TargetRow {
        what: "server RSS under load (SQLite, up to 2,000/s)".into(),
        target: "<= 64 MiB".into(),
        measured: format!(
            "{rss:.1} MiB (peak of any run: {:.1} MiB)",
            r.footprint.peak_rss_mib
        ),
        met: (rss > 0.0).then_some(rss <= 64.0),
    });
    if r.micro.is_empty() {
        t.push(TargetRow {
            what: "verify + parse + rules, events/s on one core".into(),
            target: ">= 100,000 for every connector".into(),
            measured: "not run".into(),
            met: None,
        });
    } else {
        let slowest = r
            .micro
            .iter()
            .min_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
        t.push(TargetRow {
            what: "verify + parse + rules, events/s on one core".into(),
            target: ">= 100,000 for every connector".into(),
            measured: slowest.map_or_else(String::new, |s| {
                format!("slowest: {} {:.0}/s", s.connector, s.events_per_s)
            }),
            met: slowest.map(|s| s.events_per_s >= 100_000.0),
        });
    }
    t
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "not measured",
    }
}

/// The report as text tables (stdout and report.md share them).
pub fn render_tables(r: &Report) -> String {
    use crate::report::table;
    let mut out = String::new();
    let rows: Vec<Vec<String>> = r
        .ingest
        .iter()
        .map(|i| {
            vec![
                i.backend.clone(),
                i.load.offered_rps.map_or_else(
                    || format!("max (C={})", i.load.concurrency),
                    |o| format!("{o:.0}"),
                ),
                format!("{}", i.load.sent),
                format!("{:.0}", i.load.acked_rps),
                format!("{:.2}", ms(i.load.latency.p50_us)),
                format!("{:.2}", ms(i.load.latency.p90_us)),
                format!("{:.2}", ms(i.load.latency.p99_us)),
                format!("{:.2}", ms(i.load.latency.max_us)),
                format!("{}", i.load.sent - i.load.acked()),
                format!("{}", i.stored_after_kill),
                format!("{:.1}", i.load_rss_kib as f64 / 1024.0),
            ]
        })
        .collect();
    out.push_str("Ingest (acknowledgement latency, ms)\n");
    out.push_str(&table(
        &[
            "store",
            "offered/s",
            "sent",
            "acked/s",
            "p50",
            "p90",
            "p99",
            "max",
            "not acked",
            "stored after kill -9",
            "RSS MiB",
        ],
        &rows,
    ));
    if let Some(d) = &r.drain {
        out.push_str("\nDrain\n");
        out.push_str(&table(
            &[
                "qualifications",
                "limit/min",
                "drain s",
                "window ideal s",
                "steady ideal s",
                "violations",
                "max in 60 s",
                "calls/qualification",
                "qualified once",
            ],
            &[vec![
                d.qualifications.to_string(),
                d.platform_limit_per_minute.to_string(),
                format!("{:.2}", d.drain_s),
                format!("{:.1}", d.ideal_window_s),
                format!("{:.1}", d.ideal_steady_s),
                d.violations.to_string(),
                d.max_calls_in_window.to_string(),
                format!("{:.3}", d.calls_per_qualification()),
                d.qualified_once.to_string(),
            ]],
        ));
    }
    if !r.cost.is_empty() {
        out.push_str("\nCRM calls per pushed referral\n");
        let rows: Vec<Vec<String>> = r
            .cost
            .iter()
            .map(|c| {
                vec![
                    c.connector.clone(),
                    c.object.clone(),
                    c.push_batch.to_string(),
                    c.referrals.to_string(),
                    c.crm_calls.to_string(),
                    format!("{:.3}", c.calls_per_referral),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "connector",
                "object",
                "push_batch",
                "referrals",
                "CRM calls",
                "calls/referral",
            ],
            &rows,
        ));
    }
    out.push_str("\nFootprint\n");
    let f = &r.footprint;
    out.push_str(&table(
        &[
            "binary MiB",
            "start-up ms (median)",
            "idle RSS MiB",
            "RSS <= 2,000/s MiB",
            "peak RSS MiB",
        ],
        &[vec![
            format!("{:.1}", f.binary_bytes as f64 / (1024.0 * 1024.0)),
            format!("{:.0}", f.startup_ms_median),
            format!("{:.1}", f.idle_rss_mib),
            format!("{:.1}", f.rss_at_2000_mib),
            format!("{:.1}", f.peak_rss_mib),
        ]],
    ));
    if !r.micro.is_empty() {
        out.push_str("\nMicro: verify + parse + rules (one core)\n");
        let rows: Vec<Vec<String>> = r
            .micro
            .iter()
            .map(|m| {
                vec![
                    m.connector.clone(),
                    m.events_per_iteration.to_string(),
                    format!("{:.1}", m.mean_ns / 1000.0),
                    format!("{:.0}", m.events_per_s),
                ]
            })
            .collect();
        out.push_str(&table(
            &["connector", "events/iteration", "µs/iteration", "events/s"],
            &rows,
        ));
    }
    out.push_str("\nTargets\n");
    let rows: Vec<Vec<String>> = r
        .targets
        .iter()
        .map(|t| {
            vec![
                t.what.clone(),
                t.target.clone(),
                t.measured.clone(),
                met(t.met).to_owned(),
            ]
        })
        .collect();
    out.push_str(&table(&["target", "goal", "measured", ""], &rows));
    out
}

/// The SVG plot: p50 and p99 against offered load, per backend (open-loop runs).
pub fn latency_plot(r: &Report) -> String {
    use crate::report::{Series, line_chart_svg};
    let mut series = Vec::new();
    for backend in ["sqlite", "sqlite-full", "postgres"] {
        let runs: Vec<&IngestRow> = r
            .ingest
            .iter()
            .filter(|i| i.backend == backend && i.load.offered_rps.is_some())
            .collect();
        if runs.is_empty() {
            continue;
        }
        for (label, pick, dashed) in [
            (
                "p50",
                (|l: &crate::report::Latency| l.p50_us) as fn(&_) -> u64,
                false,
            ),
            ("p99", |l: &crate::report::Latency| l.p99_us, true),
        ] {
            series.push(Series {
                label: format!("{backend} {label}"),
                points: runs
                    .iter()
                    .map(|i| (i.load.offered_rps.unwrap_or(0.0), ms(pick(&i.load.latency))))
                    .collect(),
                dashed,
            });
        }
    }
    line_chart_svg(
        &format!(
            "refsync serve: acknowledgement latency ({} CPUs)",
            r.machine.cpus
        ),
        "offered load, deliveries/s (log scale)",
        "latency, ms (log scale)",
        &series,
        Some((10.0, "p99 target at 2,000/s: 10 ms")),
    )
}

fn write_outputs(opts: &RunOptions, r: &Report) -> Result<(), String> {
    let write = |name: &str, bytes: &[u8]| {
        let path = opts.out.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(
        "report.json",
        &serde_json::to_vec_pretty(r).map_err(|e| e.to_string())?,
    )?;
    write("report.txt", render_tables(r).as_bytes())?;
    write("ingest-latency.svg", latency_plot(r).as_bytes())?;
    Ok(())
}
