//! `refsync-bench`: the benchmark harness (usually run through `cargo xtask bench`).
//!
//! - `refsync-bench run --refsync <bin>`: every scenario, the table on stdout, the report under
//!   `--out` (`report.json`, `report.txt`, `ingest-latency.svg`);
//! - `refsync-bench load --url <url> --payloads <dir>`: the load generator alone, against any
//!   server (for example another tool on the same machine);
//! - `refsync-bench gen --out <dir>`: write the signed Pipedrive / HubSpot / WooCommerce mix as
//!   a payload folder.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: its output is the point

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use refsync_bench::loadgen::{self, LoadSpec, Target};
use refsync_bench::payloads::{Templates, read_folder, write_folder};
use refsync_bench::scenarios::{RunOptions, render_tables, run_all};

#[derive(Debug, Parser)]
#[command(name = "refsync-bench", about = "The refsync benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every scenario (ingest, drain, cost, footprint; micro results read from criterion).
    Run {
        /// The `refsync` binary to measure (a release build for real numbers).
        #[arg(long)]
        refsync: PathBuf,
        /// Where to write the report.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Criterion's output directory (`<target dir>/criterion`), for the micro results.
        #[arg(long)]
        criterion_dir: Option<PathBuf>,
        /// The tiny version (CI): every scenario, a few hundred deliveries.
        #[arg(long)]
        smoke: bool,
        /// Also run ingest on PostgreSQL (reads the server URL from REFSYNC_TEST_POSTGRES_URL;
        /// each run gets a fresh schema).
        #[arg(long)]
        postgres: bool,
        /// Offered loads of the open-loop ingest runs, deliveries/s (comma-separated).
        #[arg(long, value_delimiter = ',')]
        rates: Option<Vec<f64>>,
        /// Seconds of load per offered rate.
        #[arg(long)]
        level_secs: Option<f64>,
        /// Deliveries of the closed-loop (maximum throughput) run.
        #[arg(long)]
        max_count: Option<usize>,
        /// Connections of the load generator.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Qualifications of the drain run.
        #[arg(long)]
        drain_qualifications: Option<usize>,
        /// Referrals per connector of the cost run.
        #[arg(long)]
        cost_referrals: Option<usize>,
        /// Scenarios to leave out (comma-separated: ingest, drain, cost).
        #[arg(long, value_delimiter = ',', value_parser = ["ingest", "drain", "cost"])]
        skip: Vec<String>,
    },
    /// Send a payload folder's requests to a server and print what it measured.
    Load {
        /// The server: http://IP:PORT[/path] (request paths are joined to it; plain bodies
        /// are POSTed to it).
        #[arg(long)]
        url: String,
        /// The payload folder (`.http` files, or one body per file).
        #[arg(long)]
        payloads: PathBuf,
        /// Offered requests per second (open loop); without it, a closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// Connections.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Send at most this many requests (default: every request once).
        #[arg(long)]
        count: Option<usize>,
        /// Seconds before a request counts as failed.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Print the result as JSON on stdout (progress stays on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Write `count` signed, unique deliveries (Pipedrive, HubSpot, WooCommerce in turn) as a
    /// payload folder. HubSpot's signatures expire after 5 minutes.
    Gen {
        /// The folder to write.
        #[arg(long)]
        out: PathBuf,
        /// How many deliveries.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// A run number: deliveries of different runs never collide.
        #[arg(long, default_value_t = 1)]
        run: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Load {
            url,
            payloads,
            rate,
            concurrency,
            count,
            timeout_secs,
            json,
        } => load(
            &url,
            &payloads,
            rate,
            concurrency,
            count,
            timeout_secs,
            json,
        ),
        Command::Gen { out, count, run } => {
            let templates = Templates::new();
            let now_ms = i64::try_from(loadgen::unix_ms(std::time::SystemTime::now())).unwrap_or(0);
            let requests: Vec<_> = (0..count as u64)
                .map(|i| templates.mixed(run, i, now_ms))
                .collect();
            match write_folder(&out, &requests, 5000) {
                Ok(()) => {
                    eprintln!("wrote {count} deliveries to {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Run {
            refsync,
            out,
            criterion_dir,
            smoke,
            postgres,
            rates,
            level_secs,
            max_count,
            concurrency,
            drain_qualifications,
            cost_referrals,
            skip,
        } => {
            let mut opts = if smoke {
                RunOptions::smoke(refsync, out)
            } else {
                RunOptions::full(refsync, out)
            };
            opts.criterion_dir = criterion_dir;
            if postgres {
                match refsync_testkit::services::postgres_url("the PostgreSQL ingest benchmark") {
                    Some(url) => opts.postgres = Some(url),
                    None => eprintln!("bench: PostgreSQL runs skipped"),
                }
            }
            opts.rates = rates.unwrap_or(opts.rates);
            opts.level_secs = level_secs.unwrap_or(opts.level_secs);
            opts.max_count = max_count.unwrap_or(opts.max_count);
            opts.concurrency = concurrency.unwrap_or(opts.concurrency);
            opts.drain_qualifications = drain_qualifications.unwrap_or(opts.drain_qualifications);
            opts.cost_referrals = cost_referrals.unwrap_or(opts.cost_referrals);
            opts.skip = skip;
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(&format!("cannot start the runtime: {e}")),
            };
            match runtime.block_on(run_all(&opts)) {
                Ok(report) => {
                    println!("{}", render_tables(&report));
                    println!(
                        "report: {} (report.json, report.txt, ingest-latency.svg)",
                        opts.out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("refsync-bench: {message}");
    ExitCode::FAILURE
}

fn load(
    url: &str,
    payloads: &std::path::Path,
    rate: Option<f64>,
    concurrency: usize,
    count: Option<usize>,
    timeout_secs: u64,
    json: bool,
) -> ExitCode {
    let target = match Target::parse(url) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let mut requests = match read_folder(payloads) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if let Some(n) = count {
        requests.truncate(n);
    }
    if requests.is_empty() {
        return fail(&format!("no requests in {}", payloads.display()));
    }
    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return fail("--rate must be a positive number");
    }
    let raw: Vec<Vec<u8>> = requests.iter().map(|r| target.serialize(r)).collect();
    let n = raw.len();
    eprintln!(
        "load: {n} requests to {url}, {}, {concurrency} connections",
        rate.map_or_else(|| "closed loop".to_owned(), |r| format!("{r}/s offered"))
    );
    // One thread: the generator shares the machine with the server it measures.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let spec = LoadSpec {
        rate,
        concurrency,
        timeout: Duration::from_secs(timeout_secs),
    };
    let result = runtime.block_on(loadgen::run(
        &target,
        Arc::new(raw),
        spec,
        &|done, total| {
            eprintln!("load: {done}/{total}");
        },
    ));
    let ms = |us: u64| us as f64 / 1000.0;
    eprintln!(
        "load: {} acked of {} in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; statuses {:?}; {} without answer",
        result.acked(),
        result.sent,
        result.elapsed_s,
        result.acked_rps,
        ms(result.latency.p50_us),
        ms(result.latency.p90_us),
        ms(result.latency.p99_us),
        ms(result.latency.max_us),
        result.statuses,
        result.errors
    );
    if json {
        match serde_json::to_string(&result) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(&e.to_string()),
        }
    }
    ExitCode::SUCCESS
}
