//! `refsync demo`: the story of DESIGN.md ("Embedded defaults") end to end, over loopback HTTP.
//!
//! A SQLite store and a SQLite ledger in a temporary directory (or `--dir`); a simulated
//! Pipedrive account (the testkit's [`PipedriveSim`]: persons, leads, deals, fields, webhooks)
//! that the Pipedrive connector pushes to and that sends webhooks v2 with HTTP Basic auth to
//! the engine's `/hooks/pipedrive`; the real engine serving HTTP with its workers. The story is
//! the Referral Factory ↔ Pipedrive guide's: push as a lead, the lead converts into a deal, the
//! deal reaches the stage, the deal is won — one qualification.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use refsync::{CampaignRef, NewUser, ReferralKey, ReferredUser, Referrer, ReferrerRef};
use refsync::{RewardStatus, WebhookRequest};
use refsync_engine::Engine;
use refsync_engine::store::{DeliveryFilter, DeliveryStatus};
use refsync_ledger::{Ledger, Metric, NewCampaign, NewRewardRule, Recipient, RewardQuery, Trigger};
use refsync_testkit::pipedrive::{OutgoingWebhook, PipedriveSim, PipedriveSimOptions};
use refsync_testkit::sim::send_webhook;
use serde_json::{Value, json};

/// `refsync demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Keep serving after the story (prints the URLs); stop with Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// Keep the SQLite files here instead of a temporary directory (removed at exit).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The simulated Pipedrive's API token (demo only).
const CRM_TOKEN: &str = "demo-pipedrive-api-token";
/// The webhooks' HTTP Basic credentials (demo only).
const HOOK_USER: &str = "refsync-demo";
const HOOK_PASSWORD: &str = "demo-webhook-password-3f9a1c";
/// The demo's admin token (demo only).
const ADMIN_TOKEN: &str = "demo-admin-token";
/// The instance name (`/hooks/pipedrive`).
const INSTANCE: &str = "pipedrive";
/// The stage the converted deal must reach (pipeline 1 "Sales", stage 3 "Demo scheduled").
const STAGE: u64 = 3;

type Failure = String;

fn step(msg: impl AsRef<str>) {
    println!("==> {}", msg.as_ref());
    let _ = std::io::stdout().flush();
}

fn info(msg: impl AsRef<str>) {
    println!("    {}", msg.as_ref());
    let _ = std::io::stdout().flush();
}

pub(crate) fn run(args: &DemoArgs) -> ExitCode {
    crate::serve::init_logging_with_default("warn");
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "refsync-demo-{}-{:x}",
                std::process::id(),
                Utc::now().timestamp_micros()
            )),
            true,
        ),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("refsync demo: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let rt = match crate::serve::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("refsync demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(story(&dir, args.keep_running));
    drop(rt);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refsync demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_text(dir: &Path, crm: &str, company: u64, campaign: i64) -> String {
    let store = dir.join("refsync.db");
    let ledger = dir.join("ledger.db");
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"

[store]
url = "sqlite://{store}"

[platform]
type = "ledger"
database_url = "sqlite://{ledger}"
link_base_url = "https://example.com/r"

[worker]
backoff_base_secs = 1
backoff_max_secs = 5
# The demo subscribes once, below; `refsync serve` re-checks subscriptions and reconciles
# every upkeep_interval_secs (default 900).
upkeep_interval_secs = 0

[[instances]]
name = "{INSTANCE}"
connector = "pipedrive"
campaign = "{campaign}"

[instances.settings]
base_url = "{crm}"
auth = {{ type = "api_token", token = "{CRM_TOKEN}" }}
webhook_user = "{HOOK_USER}"
webhook_password = "{HOOK_PASSWORD}"
company_id = "{company}"
referral_code_field = "Referral Code"

[instances.push]
object = "lead"

[instances.push.fields]
first_name = "{{First Name}}"
email = "{{Email}}"
title = "{{First Name}}, referred by {{Referrer First Name}}"
"Referral Code" = "{{Referral Code}}"
"Referrer Email" = "{{Referrer Email}}"
"Referrer First Name" = "{{Referrer First Name}}"
"Referral Link" = "{{Referral Link}}"

# The guide's option 2 (converted and at stage {STAGE}), and option 4 (won) as a second rule:
# both fire in this story, the referral is qualified once.
[[instances.rules]]
rule = "lead_converted_at_stage"
stage = "{STAGE}"

[[instances.rules]]
rule = "deal_won"
"#,
        store = store.display(),
        ledger = ledger.display(),
    )
}

/// Polls `f` every 50 ms, at most 600 times (30 s), until it returns `Some`.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(v) = f().await {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("gave up waiting for {what}"))
}

async fn http(
    url: &str,
    method: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<(u16, Value), Failure> {
    let request = WebhookRequest {
        method: method.into(),
        url: url.into(),
        headers,
        body,
    };
    let (status, body) = send_webhook(url, &request)
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Pipedrive's deliveries (HTTP Basic auth, webhooks v2) sent to the engine; one line each.
async fn pipedrive_webhooks(hooks: &[OutgoingWebhook]) -> Result<Vec<String>, Failure> {
    let mut lines = Vec::new();
    for hook in hooks {
        let (status, body) = send_webhook(&hook.url, &hook.request)
            .await
            .map_err(|e| format!("POST {}: {e}", hook.url))?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 {
            return Err(format!(
                "the engine answered {status} to a Pipedrive webhook: {answer}"
            ));
        }
        lines.push(format!(
            "{}.{} {} → {} (delivery {})",
            hook.body["meta"]["action"].as_str().unwrap_or("?"),
            hook.body["meta"]["entity"].as_str().unwrap_or("?"),
            hook.body["meta"]["entity_id"].as_str().unwrap_or("?"),
            answer["status"].as_str().unwrap_or("?"),
            answer["delivery"]
        ));
    }
    Ok(lines)
}

async fn wait_processed(engine: &Engine, what: &str) -> Result<(), Failure> {
    wait_for(what, || async {
        let pending = engine
            .store()
            .list_deliveries(&DeliveryFilter {
                status: Some(DeliveryStatus::Received),
                ..DeliveryFilter::default()
            })
            .await
            .ok()?;
        pending.is_empty().then_some(())
    })
    .await
}

#[allow(clippy::too_many_lines)]
async fn story(dir: &Path, keep_running: bool) -> Result<(), Failure> {
    step(format!("embedded defaults in {}", dir.display()));
    let ledger_url = format!("sqlite://{}", dir.join("ledger.db").display());
    let ledger = Ledger::open(&ledger_url)
        .await
        .map_err(|e| e.to_string())?
        .with_link_base_url(Some("https://example.com/r".into()));
    info(format!("ledger: {ledger_url}"));

    let crm = PipedriveSim::start(PipedriveSimOptions::new(CRM_TOKEN))
        .await
        .map_err(|e| format!("simulated Pipedrive: {e}"))?;
    info(format!(
        "simulated Pipedrive on {} (company {}, deal field \"Referral Code\")",
        crm.base_url(),
        crm.options().company_id
    ));

    step("a campaign and its reward rule are created");
    let campaign = ledger
        .create_campaign(&NewCampaign {
            name: "Friends of Acme".into(),
            link_base_url: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    ledger
        .add_reward_rule(
            campaign.id,
            &NewRewardRule {
                recipient: Recipient::Referrer,
                trigger: Trigger::WhenQualified,
                metric: Metric::Amount,
                value: "5000".into(),
                cap_per_referrer: None,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    info(format!(
        "campaign {} \"{}\": the referrer earns 5000 when her friend qualifies",
        campaign.id, campaign.name
    ));

    // The engine, from a real refsync.toml.
    let text = config_text(dir, &crm.base_url(), crm.options().company_id, campaign.id);
    let config_path = dir.join("refsync.toml");
    std::fs::write(&config_path, &text).map_err(|e| e.to_string())?;
    let registry = refsync::default_registry();
    let config = refsync_engine::config::Loader::new()
        .file_name(config_path.display().to_string())
        .registry(&registry)
        .parse(&text)
        .map_err(|e| e.to_string())?;
    let engine = Engine::new(config, &registry)
        .await
        .map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let server = {
        let engine = engine.clone();
        tokio::spawn(async move {
            crate::serve::serve(
                engine,
                async move {
                    let _ = stop_rx.await;
                },
                move |addr| {
                    let _ = addr_tx.send(addr);
                },
            )
            .await
        })
    };
    let addr = addr_rx
        .await
        .map_err(|_| "the engine did not start".to_owned())?;
    let base = format!("http://{addr}");
    let hook_url = format!("{base}/hooks/{INSTANCE}");
    step(format!(
        "refsync serves on {base} (config {})",
        config_path.display()
    ));

    step("refsync creates its Pipedrive webhooks (version 2.0, HTTP Basic auth)");
    let ids = engine
        .ensure_subscriptions(INSTANCE, Some(&hook_url))
        .await
        .map_err(|e| e.to_string())?;
    info(format!(
        "webhooks {} for deal, lead and person → {hook_url}",
        ids.join(", ")
    ));

    let result = async {
        step("a referrer joins");
        let alice = ledger
            .add_user(&NewUser {
                campaign_id: campaign.id.to_string(),
                first_name: "Alice".into(),
                email: "alice@example.com".into(),
                referrer: None,
                meta: Default::default(),
                notify: false,
            })
            .await
            .map_err(|e| e.to_string())?;
        info(format!("Alice <{}> has referral code {}", alice.email, alice.code));

        step("she invites a friend");
        let bob = ledger
            .add_user(&NewUser {
                campaign_id: campaign.id.to_string(),
                first_name: "Bob".into(),
                email: "bob@example.com".into(),
                referrer: Some(ReferrerRef::Code(alice.code.clone())),
                meta: Default::default(),
                notify: false,
            })
            .await
            .map_err(|e| e.to_string())?;
        info(format!(
            "Bob <{}> signed up with Alice's link: Person Invited, referral code {}",
            bob.email, bob.code
        ));
        let key = ReferralKey::Code { code: bob.code.clone() }.canonical();

        step("Bob is pushed to Pipedrive: POST /referrals");
        let user = ReferredUser {
            id: Some(bob.id.to_string()),
            first_name: bob.first_name.clone(),
            last_name: None,
            email: bob.email.clone(),
            referral_code: bob.code.clone(),
            referral_link: bob.url.clone(),
            campaign: CampaignRef {
                id: campaign.id.to_string(),
                name: Some(campaign.name.clone()),
            },
            referrer: Some(Referrer {
                id: Some(alice.id.to_string()),
                code: Some(alice.code.clone()),
                first_name: Some(alice.first_name.clone()),
                email: Some(alice.email.clone()),
            }),
            source: Some("Referred".into()),
            coupon: bob.coupon.clone(),
            meta: Default::default(),
        };
        let body = serde_json::to_vec(&json!({"instance": INSTANCE, "user": user}))
            .map_err(|e| e.to_string())?;
        let (status, answer) = http(
            &format!("{base}/referrals"),
            "POST",
            vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Refsync-Token".into(), ADMIN_TOKEN.into()),
            ],
            body,
        )
        .await?;
        if status != 202 {
            return Err(format!("POST /referrals answered {status}: {answer}"));
        }
        info(format!("202: push job {}", answer["job"]));
        let lead = wait_for("the lead to be linked", || async {
            let links = engine.store().links_by_referral(&key).await.ok()?;
            links.into_iter().find(|l| l.object.kind == "lead")
        })
        .await?;
        let lead_id = lead.object.id.clone();
        let person = crm.persons_with_email(&bob.email);
        info(format!(
            "Pipedrive has person {} and lead {lead_id} (\"{}\", Referral Code {}); linked {key} <-> lead {lead_id}",
            person.first().map_or_else(String::new, |p| p["id"].to_string()),
            crm.state()["leads"][0]["title"].as_str().unwrap_or("?"),
            crm.state()["leads"][0][refsync_testkit::pipedrive::REFERRAL_CODE_KEY]
                .as_str()
                .unwrap_or("?"),
        ));
        for line in pipedrive_webhooks(&crm.take_outbox()).await? {
            info(format!("webhook {line}"));
        }
        wait_processed(&engine, "the creation webhooks").await?;

        step("a salesperson converts the lead into a deal (Pipedrive deletes the lead and creates the deal)");
        let deal_id = crm.convert_lead(&lead_id, None)?;
        for line in pipedrive_webhooks(&crm.take_outbox()).await? {
            info(format!("webhook {line}"));
        }
        wait_processed(&engine, "the conversion webhooks").await?;
        info(format!(
            "deal {deal_id} carries the referral code: refsync sees lead {lead_id} converted into deal {deal_id}"
        ));

        step(format!("the deal moves to stage {STAGE} (option 2: converted and at stage {STAGE} qualifies)"));
        crm.move_deal(deal_id, STAGE)?;
        for line in pipedrive_webhooks(&crm.take_outbox()).await? {
            info(format!("webhook {line}"));
        }
        wait_processed(&engine, "the stage webhook").await?;

        step("the deal is won, and Pipedrive redelivers the webhook");
        crm.set_deal_status(deal_id, "won")?;
        let won = crm.take_outbox();
        for line in pipedrive_webhooks(&won).await? {
            info(format!("webhook {line}"));
        }
        for line in pipedrive_webhooks(&won).await? {
            info(format!("redelivery {line}"));
        }
        wait_processed(&engine, "the won webhook").await?;
        let qualified = wait_for("the qualification", || async {
            let u = ledger.user_by_id(bob.id).await.ok()??;
            u.qualified_at
        })
        .await?;
        let qualifications = ledger
            .qualifications(bob.id)
            .await
            .map_err(|e| e.to_string())?;
        info(format!(
            "Bob is qualified at {} ({} qualification{})",
            qualified.to_rfc3339(),
            qualifications.len(),
            if qualifications.len() == 1 { "" } else { "s" }
        ));

        step("a reward becomes due");
        let due = ledger
            .rewards(&RewardQuery {
                status: Some(RewardStatus::Due),
                campaign_id: Some(campaign.id),
                ..RewardQuery::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        for r in &due.items {
            info(format!("reward {} due: {}", r.id, r.describe()));
        }
        if due.items.is_empty() {
            return Err("no reward became due".into());
        }

        step(format!("the timeline of {key} (GET /admin/referrals/{key}/timeline)"));
        let (status, timeline) = http(
            &format!("{base}/admin/referrals/{key}/timeline"),
            "GET",
            vec![("Authorization".into(), format!("Bearer {ADMIN_TOKEN}"))],
            Vec::new(),
        )
        .await?;
        if status != 200 {
            return Err(format!("the timeline answered {status}: {timeline}"));
        }
        let entries = timeline
            .get("entries")
            .or_else(|| timeline.get("timeline"))
            .unwrap_or(&timeline)
            .as_array()
            .cloned()
            .unwrap_or_default();
        for e in &entries {
            println!(
                "    {}  {:<10} {}",
                e["at"].as_str().unwrap_or(""),
                e["kind"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            );
        }

        step("the ledger's users");
        let users = crate::ledger::users(&ledger, Some(campaign.id))
            .await
            .map_err(|e| e.to_string())?;
        for line in users.lines() {
            println!("    {line}");
        }
        let deals = crm.state()["deals"].as_array().map_or(0, Vec::len);
        step(format!(
            "done: 1 lead converted into {deals} deal in Pipedrive, {} qualification, {} reward due",
            qualifications.len(),
            due.items.len()
        ));
        Ok(())
    }
    .await;

    if result.is_ok() && keep_running {
        println!();
        println!("refsync keeps serving (Ctrl-C to stop):");
        println!(
            "  webhooks       POST {hook_url}  (HTTP Basic {HOOK_USER}:{HOOK_PASSWORD}, demo only)"
        );
        println!("  referrals      POST {base}/referrals  (X-Refsync-Token: {ADMIN_TOKEN})");
        println!(
            "  admin API      GET  {base}/admin/deliveries  (Authorization: Bearer {ADMIN_TOKEN})"
        );
        println!("  metrics        GET  {base}/metrics");
        println!(
            "  simulated Pipedrive  {}  (x-api-token: {CRM_TOKEN})",
            crm.base_url()
        );
        let _ = std::io::stdout().flush();
        crate::serve::shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(e.to_string()),
    }
    drop(crm);
    ledger.close().await;
    result
}
