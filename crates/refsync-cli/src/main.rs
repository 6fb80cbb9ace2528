//! The `refsync` command.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use refsync::rules::decide_delivery;
use refsync::{InstanceConfig, ReferralHistory, Registry, Verification, WebhookRequest};
use serde_json::{Value, json};

mod demo;
mod ledger;
mod oauth;
mod ops;
mod serve;
mod table;

/// refsync: connect a referral program to the systems where referred people convert.
#[derive(Debug, Parser)]
#[command(name = "refsync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the connectors compiled into this binary, with their capabilities.
    Connectors {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a refsync.toml: every problem with file:line:column and a hint; exits 1 when there
    /// is any.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short = 'c', default_value = "refsync.toml")]
        config: PathBuf,
    },
    /// Verify and parse a webhook body offline; print the canonical events (and rule verdicts
    /// when the config has rules) as JSON. A rejected payload exits 1 with a one-line reason.
    Inspect(InspectArgs),
    /// The embedded referral ledger: campaigns, users, qualification, rewards.
    Ledger(ledger::LedgerArgs),
    /// Run the service: webhooks, referrals to push, health, metrics, the admin API, and the
    /// workers, until SIGTERM / SIGINT.
    Serve(serve::ServeArgs),
    /// The whole story on embedded defaults, over loopback HTTP with a simulated CRM.
    Demo(demo::DemoArgs),
    /// Push a referred user into a connector instance's CRM.
    Push(ops::PushArgs),
    /// Qualify a referral by hand (calls the configured platform once; idempotent).
    Qualify(ops::QualifyArgs),
    /// Requeue deliveries: one by id, or every dead letter.
    Replay(ops::ReplayArgs),
    /// Dead letters: list, show, replay.
    Dlq(ops::DlqArgs),
    /// OAuth2: authorize an instance and store its tokens.
    Oauth(oauth::OauthArgs),
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// Connector name (see `refsync connectors`).
    #[arg(long)]
    connector: String,
    /// Instance config (TOML or JSON): `[settings]`, optional `campaign`, `[[rules]]`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// HTTP method of the request.
    #[arg(long, default_value = "POST")]
    method: String,
    /// URL the request was sent to (signature schemes that sign the URL use it).
    #[arg(long)]
    url: Option<String>,
    /// Verify as of this time (RFC 3339), e.g. to check a captured delivery.
    #[arg(long)]
    now: Option<String>,
    /// Skip verification (print `"verified": null`).
    #[arg(long)]
    no_verify: bool,
    /// The body file (`-` for standard input).
    body: PathBuf,
}

/// Exit code of a rejected payload (bad signature, unparseable body).
const REJECTED: u8 = 1;
/// Exit code of a usage or config error.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = refsync::default_registry();
    match cli.command {
        Command::Connectors { json } => {
            print!("{}", connectors(&registry, json));
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => check_config(&registry, &config),
        Command::Inspect(args) => match inspect(&registry, &args) {
            Ok(out) => {
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err((code, reason)) => {
                eprintln!("refsync inspect: {}", reason.replace('\n', " "));
                ExitCode::from(code)
            }
        },
        Command::Ledger(args) => ledger::run(args),
        Command::Serve(args) => serve::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Push(args) => ops::push(&args),
        Command::Qualify(args) => ops::qualify(&args),
        Command::Replay(args) => ops::replay(args),
        Command::Dlq(args) => ops::dlq(args),
        Command::Oauth(args) => oauth::run(args),
    }
}

fn connectors(registry: &Registry, json: bool) -> String {
    if json {
        let list: Vec<Value> = registry
            .connectors()
            .map(|c| serde_json::to_value(&c.info).unwrap_or(Value::Null))
            .collect();
        return serde_json::to_string_pretty(&list).unwrap_or_default() + "\n";
    }
    let mut rows = vec![[
        "NAME".to_owned(),
        "CONNECTOR".to_owned(),
        "API".to_owned(),
        "CAPABILITIES".to_owned(),
        "REQUIRED MAPPINGS".to_owned(),
    ]];
    for c in registry.connectors() {
        let i = &c.info;
        rows.push([
            i.name.to_owned(),
            i.display_name.to_owned(),
            i.api_version.to_owned(),
            i.capabilities.names().join(", "),
            i.required_mappings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    if rows.len() == 1 {
        return "no connectors compiled in (build with --features all, or one feature per connector)\n".to_owned();
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    table::table(&rows)
}

fn check_config(registry: &Registry, path: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("refsync check-config: cannot read {}: {e}", path.display());
            return ExitCode::from(USAGE);
        }
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let problems = refsync_engine::config::Loader::new()
        .file_name(path.display().to_string())
        .base_dir(base_dir)
        .registry(registry)
        .check(&text);
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        println!("{p}");
    }
    eprintln!(
        "refsync check-config: {} problem{} in {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        path.display()
    );
    ExitCode::from(REJECTED)
}

type Failure = (u8, String);

fn usage(msg: impl Into<String>) -> Failure {
    (USAGE, msg.into())
}

fn read_config(path: &Path) -> Result<InstanceConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        // toml's Display quotes the offending source line, which may hold a secret: report the
        // message and the position only.
        toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: ")
            });
            format!("{}{}", at.unwrap_or_default(), e.message().trim())
        })
    };
    parsed.map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn content_type_for(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()? {
        "json" => Some("application/json"),
        "xml" => Some("text/xml; charset=utf-8"),
        "form" | "urlencoded" => Some("application/x-www-form-urlencoded"),
        _ => None,
    }
}

fn inspect(registry: &Registry, args: &InspectArgs) -> Result<Value, Failure> {
    let config = match &args.config {
        Some(p) => read_config(p)?,
        None => InstanceConfig {
            connector: None,
            campaign: None,
            settings: json!({}),
            push: None,
            rules: Vec::new(),
        },
    };
    if let Some(c) = &config.connector {
        if c != &args.connector {
            return Err(usage(format!(
                "the config is for connector {c:?}, not {:?}",
                args.connector
            )));
        }
    }
    let connector = registry
        .build_connector(&args.connector, &config.settings)
        .map_err(|e| usage(e.to_string()))?;
    if let Some(d) = registry.connector(&args.connector) {
        config
            .check_push(&d.info)
            .map_err(|e| usage(e.to_string()))?;
    }
    let rules = config.build_rules().map_err(|e| usage(e.to_string()))?;
    let now: DateTime<Utc> = match &args.now {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| {
                usage(format!(
                    "--now {t:?}: {e} (expected RFC 3339, e.g. 2026-01-31T12:00:00Z)"
                ))
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let body = if args.body.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| usage(format!("reading stdin: {e}")))?;
        buf
    } else {
        std::fs::read(&args.body)
            .map_err(|e| usage(format!("cannot read {}: {e}", args.body.display())))?
    };
    let mut request = WebhookRequest {
        method: args.method.to_ascii_uppercase(),
        url: args
            .url
            .clone()
            .unwrap_or_else(|| format!("/hooks/{}", args.connector)),
        headers: Vec::new(),
        body,
    };
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| usage(format!("--header {h:?}: expected 'Name: value'")))?;
        request
            .headers
            .push((name.trim().to_owned(), value.trim().to_owned()));
    }
    if request.header("content-type").is_none() {
        if let Some(ct) = content_type_for(&args.body) {
            request.headers.push(("Content-Type".into(), ct.into()));
        }
    }

    let verified = if args.no_verify {
        Value::Null
    } else {
        match connector.verify(&request, now) {
            Ok(Verification::Verified { .. }) => Value::Bool(true),
            Ok(Verification::Unverified { .. }) => Value::Bool(false),
            Err(e) => return Err((REJECTED, format!("rejected: {e}"))),
        }
    };
    let events = connector
        .parse(&request)
        .map_err(|e| (REJECTED, format!("rejected: {e}")))?;
    let mut out = json!({ "verified": verified, "events": events });
    if !rules.is_empty() {
        let verdicts = decide_delivery(
            &rules,
            &events,
            ReferralHistory::default(),
            config.campaign.as_deref(),
        );
        out["verdicts"] = serde_json::to_value(verdicts).unwrap_or(Value::Null);
    }
    Ok(out)
}
