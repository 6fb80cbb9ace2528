//! Operator commands on a configured refsync: `push`, `qualify`, `replay`, `dlq`.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use refsync::{QualifyAction, QualifyCall, QualifyOutcome, ReferralKey, ReferredUser};
use refsync_engine::store::{DeliveryFilter, DeliveryStatus, JobFilter, JobState, TimelineEntry};
use refsync_engine::{Engine, PushRequest};
use serde_json::json;

use crate::serve::{init_logging, load_config, runtime};

type Failure = (u8, String);

fn fail(e: impl std::fmt::Display) -> Failure {
    (1, e.to_string())
}

/// `refsync push`.
#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// The configuration file.
    #[arg(long, short = 'c', default_value = "refsync.toml")]
    config: PathBuf,
    /// The connector instance to push into (it needs an `[instances.push]` spec).
    #[arg(long)]
    instance: String,
    /// The referred user, as JSON (`first_name`, `email`, `referral_code`, `campaign: {id}`...;
    /// `-` for standard input).
    #[arg(long)]
    user: PathBuf,
    /// POST to a running `refsync serve` at this base URL (`http://127.0.0.1:8080`) instead of
    /// enqueueing into the store directly; uses `server.admin_token` as `X-Refsync-Token`.
    #[arg(long)]
    url: Option<String>,
}

/// `refsync qualify`: the manual path.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("key").required(true).args(["code", "email", "coupon"])))]
pub(crate) struct QualifyArgs {
    /// The configuration file.
    #[arg(long, short = 'c', default_value = "refsync.toml")]
    config: PathBuf,
    /// The referral code of the Person Invited.
    #[arg(long)]
    code: Option<String>,
    /// The email of the Person Invited (with --campaign).
    #[arg(long, requires = "campaign")]
    email: Option<String>,
    /// The campaign id (required with --email).
    #[arg(long)]
    campaign: Option<String>,
    /// A coupon the Person Invited used.
    #[arg(long)]
    coupon: Option<String>,
}

/// `refsync replay`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["delivery", "status"])))]
pub(crate) struct ReplayArgs {
    /// The configuration file.
    #[arg(long, short = 'c', default_value = "refsync.toml")]
    config: PathBuf,
    /// One delivery id.
    #[arg(long)]
    delivery: Option<i64>,
    /// Every delivery with this status (`dead`).
    #[arg(long, value_parser = ["dead"])]
    status: Option<String>,
    /// Only this connector instance (with --status).
    #[arg(long, requires = "status")]
    instance: Option<String>,
}

/// `refsync dlq`.
#[derive(Debug, clap::Args)]
pub(crate) struct DlqArgs {
    /// The configuration file.
    #[arg(long, short = 'c', default_value = "refsync.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// Dead deliveries and dead jobs, with their reasons.
    List,
    /// One dead delivery: instance, dedup key, reason, headers (secrets never stored) and body.
    Show {
        /// The delivery id.
        id: i64,
    },
    /// Requeues one dead delivery (a running `refsync serve` processes it).
    Replay {
        /// The delivery id.
        id: i64,
    },
}

/// Runs `f` with an engine built from the config at `path` on a fresh runtime.
fn with_engine<F, Fut>(path: &std::path::Path, name: &str, f: F) -> ExitCode
where
    F: FnOnce(Engine) -> Fut,
    Fut: std::future::Future<Output = Result<String, Failure>>,
{
    init_logging();
    let registry = refsync::default_registry();
    let config = match load_config(&registry, path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("refsync {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let engine = match Engine::new(config, &registry).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("refsync {name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = f(engine.clone()).await;
        engine.store().close().await;
        match result {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err((code, msg)) => {
                eprintln!("refsync {name}: {msg}");
                ExitCode::from(code)
            }
        }
    })
}

pub(crate) fn push(args: &PushArgs) -> ExitCode {
    let text = if args.user.as_os_str() == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            eprintln!("refsync push: reading stdin: {e}");
            return ExitCode::from(crate::USAGE);
        }
        s
    } else {
        match std::fs::read_to_string(&args.user) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("refsync push: cannot read {}: {e}", args.user.display());
                return ExitCode::from(crate::USAGE);
            }
        }
    };
    let user: ReferredUser = match serde_json::from_str(&text) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("refsync push: {}: {e}", args.user.display());
            return ExitCode::from(crate::USAGE);
        }
    };
    let request = PushRequest {
        instance: args.instance.clone(),
        user,
    };
    if let Some(url) = args.url.clone() {
        return push_http(args, &url, &request);
    }
    with_engine(&args.config, "push", |engine| async move {
        let (job, created) = engine
            .enqueue_push(request, Utc::now())
            .await
            .map_err(fail)?;
        Ok(if created {
            format!("push queued as job {job} (a running `refsync serve` sends it)\n")
        } else {
            format!("already queued as job {job}; nothing changed\n")
        })
    })
}

fn push_http(args: &PushArgs, url: &str, request: &PushRequest) -> ExitCode {
    let registry = refsync::default_registry();
    let config = match load_config(&registry, &args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(token) = config
        .server
        .admin_token
        .as_ref()
        .map(|s| s.expose().to_owned())
    else {
        eprintln!(
            "refsync push --url: the config has no server.admin_token (POST /referrals needs it)"
        );
        return ExitCode::from(crate::USAGE);
    };
    let endpoint = format!("{}/referrals", url.trim_end_matches('/'));
    let body = serde_json::to_vec(request).unwrap_or_default();
    let webhook = refsync::WebhookRequest {
        method: "POST".into(),
        url: endpoint.clone(),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Refsync-Token".into(), token),
        ],
        body,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("refsync push: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(refsync_testkit::sim::send_webhook(&endpoint, &webhook)) {
        Ok((status, body)) if (200..300).contains(&status) => {
            println!("{status} {}", String::from_utf8_lossy(&body));
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!(
                "refsync push: {endpoint} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("refsync push: {endpoint}: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn qualify(args: &QualifyArgs) -> ExitCode {
    let referral = if let Some(code) = &args.code {
        ReferralKey::Code { code: code.clone() }
    } else if let (Some(email), Some(campaign)) = (&args.email, &args.campaign) {
        ReferralKey::Email {
            email: email.clone(),
            campaign: campaign.clone(),
        }
    } else if let Some(coupon) = &args.coupon {
        ReferralKey::Coupon {
            coupon: coupon.clone(),
        }
    } else {
        eprintln!("refsync qualify: one of --code, --email with --campaign, --coupon");
        return ExitCode::from(crate::USAGE);
    };
    let call = QualifyCall {
        action: QualifyAction::Qualify,
        campaign: args.campaign.clone(),
        referral: referral.clone(),
        rule: "manual".into(),
        reason: "refsync qualify (manual)".into(),
    };
    with_engine(&args.config, "qualify", |engine| async move {
        let outcome = engine.platform().qualify(&call).await.map_err(fail)?;
        let key = referral.canonical();
        let (kind, message) = match &outcome {
            QualifyOutcome::Qualified { .. } => ("qualified", "qualified (manual)".to_owned()),
            QualifyOutcome::AlreadyQualified { qualified_at } => (
                "already_qualified",
                match qualified_at {
                    Some(t) => format!("already qualified at {}; nothing changed", t.to_rfc3339()),
                    None => "already qualified; nothing changed".to_owned(),
                },
            ),
            QualifyOutcome::Unqualified | QualifyOutcome::NotQualified => {
                ("not_qualified", "not qualified".to_owned())
            }
        };
        engine
            .store()
            .append_timeline(
                &key,
                &TimelineEntry {
                    at: Utc::now(),
                    kind: format!("manual_{kind}"),
                    message: message.clone(),
                    detail: json!({"rule": "manual"}),
                },
            )
            .await
            .map_err(fail)?;
        Ok(format!("{key}: {message}\n"))
    })
}

pub(crate) fn replay(args: ReplayArgs) -> ExitCode {
    with_engine(&args.config, "replay", |engine| async move {
        let store = engine.store().clone();
        if let Some(id) = args.delivery {
            return requeue_one(&engine, id).await;
        }
        let filter = DeliveryFilter {
            instance: args.instance.clone(),
            status: Some(DeliveryStatus::Dead),
            ..DeliveryFilter::default()
        };
        let dead = store.list_deliveries(&filter).await.map_err(fail)?;
        let total = dead.len();
        if total == 0 {
            return Ok("no dead deliveries to replay\n".to_owned());
        }
        let mut done = 0usize;
        for (i, d) in dead.iter().enumerate() {
            if store
                .requeue_delivery(d.id, Utc::now())
                .await
                .map_err(fail)?
            {
                done += 1;
            }
            let n = i + 1;
            if n == total || n % 100 == 0 || total <= 20 {
                eprintln!("replay: {n}/{total} (delivery {} of {})", d.id, d.instance);
            }
        }
        Ok(format!(
            "{done} of {total} dead deliveries requeued (a running `refsync serve` processes them)\n"
        ))
    })
}

async fn requeue_one(engine: &Engine, id: i64) -> Result<String, Failure> {
    let store = engine.store();
    if store.get_delivery(id).await.map_err(fail)?.is_none() {
        return Err(fail(format!("no delivery {id}")));
    }
    if store.requeue_delivery(id, Utc::now()).await.map_err(fail)? {
        Ok(format!(
            "delivery {id} requeued (a running `refsync serve` processes it)\n"
        ))
    } else {
        Err(fail(format!(
            "delivery {id} is not a dead letter; nothing changed"
        )))
    }
}

pub(crate) fn dlq(args: DlqArgs) -> ExitCode {
    let config = args.config.clone();
    with_engine(&config, "dlq", |engine| async move {
        let store = engine.store().clone();
        match args.command {
            DlqCommand::List => {
                let deliveries = store
                    .list_deliveries(&DeliveryFilter {
                        status: Some(DeliveryStatus::Dead),
                        ..DeliveryFilter::default()
                    })
                    .await
                    .map_err(fail)?;
                let jobs = store
                    .list_jobs(&JobFilter {
                        state: Some(JobState::Dead),
                        ..JobFilter::default()
                    })
                    .await
                    .map_err(fail)?;
                if deliveries.is_empty() && jobs.is_empty() {
                    return Ok("no dead letters\n".to_owned());
                }
                let mut rows = vec![vec![
                    "ID".to_owned(),
                    "TYPE".to_owned(),
                    "INSTANCE/KIND".to_owned(),
                    "RECEIVED".to_owned(),
                    "REASON".to_owned(),
                ]];
                for d in &deliveries {
                    rows.push(vec![
                        d.id.to_string(),
                        "delivery".into(),
                        d.instance.clone(),
                        d.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        one_line(d.last_error.as_deref()),
                    ]);
                }
                for j in &jobs {
                    rows.push(vec![
                        j.id.to_string(),
                        "job".into(),
                        j.kind.clone(),
                        j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        one_line(j.last_error.as_deref()),
                    ]);
                }
                Ok(crate::table::table(&rows))
            }
            DlqCommand::Show { id } => {
                let d = store
                    .get_delivery(id)
                    .await
                    .map_err(fail)?
                    .ok_or_else(|| fail(format!("no delivery {id}")))?;
                let out = json!({
                    "id": d.id,
                    "instance": d.instance,
                    "status": d.status.as_str(),
                    "dedup_key": d.dedup_key,
                    "received_at": d.received_at,
                    "attempts": d.attempts,
                    "reason": d.last_error,
                    "request": d.headers,
                    "body": String::from_utf8_lossy(&d.body),
                });
                Ok(serde_json::to_string_pretty(&out).unwrap_or_default() + "\n")
            }
            DlqCommand::Replay { id } => requeue_one(&engine, id).await,
        }
    })
}

fn one_line(s: Option<&str>) -> String {
    let s = s.unwrap_or("").lines().next().unwrap_or("");
    if s.chars().count() > 80 {
        s.chars().take(77).collect::<String>() + "..."
    } else {
        s.to_owned()
    }
}
