//! `refsync demo`: the story of DESIGN.md ("Embedded defaults") end to end, over loopback HTTP.
//!
//! A SQLite store and a SQLite ledger in a temporary directory (or `--dir`); a simulated CRM (a
//! testkit [`Simulator`]) that keeps the leads pushed to it and sends signed webhooks (Standard
//! Webhooks) to the engine's `/hooks/crm`; the real engine serving HTTP with its workers. The
//! CRM connector is `generic-webhook`: the Pipedrive connector arrives with its own issue.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use refsync::{CampaignRef, NewUser, ReferralKey, ReferredUser, Referrer, ReferrerRef};
use refsync::{RewardStatus, WebhookRequest};
use refsync_engine::Engine;
use refsync_engine::store::{DeliveryFilter, DeliveryStatus};
use refsync_ledger::{Ledger, Metric, NewCampaign, NewRewardRule, Recipient, RewardQuery, Trigger};
use refsync_testkit::sim::{RecordedRequest, SimResponse, Simulator, send_webhook};
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

/// The simulated CRM's Standard Webhooks signing secret (demo only).
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The simulated CRM's API token (demo only).
const CRM_TOKEN: &str = "demo-crm-token";
/// The demo's admin token (demo only).
const ADMIN_TOKEN: &str = "demo-admin-token";
/// The CRM's "won" stage.
const WON_STAGE: &str = "5";

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

/// The simulated CRM: leads (`POST /leads`, Bearer token) with their fields.
#[derive(Default)]
struct Crm {
    leads: Mutex<Vec<Value>>,
}

impl Crm {
    fn handle(&self, req: &RecordedRequest) -> SimResponse {
        if req.header("authorization") != Some(&format!("Bearer {CRM_TOKEN}")) {
            return SimResponse::json(401, &json!({"error": "missing or wrong token"}));
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/leads") => {
                let Some(body) = req.json() else {
                    return SimResponse::json(400, &json!({"error": "body must be JSON"}));
                };
                let mut leads = self.leads.lock().unwrap_or_else(|e| e.into_inner());
                let id = format!("lead-{}", leads.len() + 1);
                leads.push(json!({"id": id, "fields": body["fields"]}));
                SimResponse::json(201, &json!({"id": id}))
            }
            _ => SimResponse::json(404, &json!({"error": "no such route"})),
        }
    }
}

fn config_text(dir: &Path, crm: &str, campaign: i64) -> String {
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

[[instances]]
name = "crm"
connector = "generic-webhook"
campaign = "{campaign}"

[instances.settings.auth]
type = "standard_webhooks"
secret = "{SIGNING_SECRET}"

[instances.settings.events]
delivery_id = "/id"
object_kind = "/object"
object_id = "/data/id"
change = "/event"
change_types = {{ "lead.converted" = "lead_converted", "deal.stage_changed" = "stage_changed", "deal.won" = "status_changed" }}
stage = "/data/stage_id"
status = "/data/status"
converted_deal_id = "/data/deal_id"
referral_code = "/data/referral_code"
email = "/data/email"

[instances.settings.push]
url = "{crm}/leads"
headers = {{ "Authorization" = "Bearer {CRM_TOKEN}" }}
response_id = "/id"

[instances.push]
object = "lead"

[instances.push.fields]
email = "{{Email}}"
referral_code = "{{Referral Code}}"
name = "{{First Name}}"
note = "Referred by {{Referrer First Name}} <{{Referrer Email}}>"

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

/// The CRM sends a signed webhook (Standard Webhooks) to the engine.
async fn crm_webhook(hook_url: &str, id: &str, body: &Value) -> Result<String, Failure> {
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let ts = Utc::now().timestamp();
    let sig = refsync_http::signature::standard_webhooks::sign(SIGNING_SECRET, id, ts, &body)
        .map_err(|e| e.to_string())?;
    let (status, answer) = http(
        hook_url,
        "POST",
        vec![
            ("Content-Type".into(), "application/json".into()),
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), ts.to_string()),
            ("webhook-signature".into(), sig),
        ],
        body,
    )
    .await?;
    if status != 200 {
        return Err(format!(
            "the engine answered {status} to webhook {id}: {answer}"
        ));
    }
    Ok(format!(
        "{} (delivery {})",
        answer["status"].as_str().unwrap_or("?"),
        answer["delivery"]
    ))
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

    let crm_state = Arc::new(Crm::default());
    let crm = {
        let s = crm_state.clone();
        Simulator::start(move |req: &RecordedRequest| s.handle(req))
            .await
            .map_err(|e| format!("simulated CRM: {e}"))?
    };
    info(format!(
        "simulated CRM on {} (connector generic-webhook; the Pipedrive connector arrives with its own issue)",
        crm.base_url()
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
    let text = config_text(dir, &crm.base_url(), campaign.id);
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
    let hook_url = format!("{base}/hooks/crm");
    step(format!(
        "refsync serves on {base} (config {})",
        config_path.display()
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

        step("Bob is pushed to the CRM: POST /referrals");
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
        let body = serde_json::to_vec(&json!({"instance": "crm", "user": user}))
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
        info(format!(
            "the CRM created lead {lead_id}; linked {key} <-> crm lead {lead_id}"
        ));

        step("the lead converts into a deal (webhook lead.converted: the deal is linked to the referral through the lead)");
        let deal_id = "deal-1";
        let converted = json!({
            "id": "evt-1", "event": "lead.converted", "object": "lead",
            "data": {"id": lead_id, "deal_id": deal_id, "email": bob.email}
        });
        info(format!("engine: {}", crm_webhook(&hook_url, "evt-1", &converted).await?));
        wait_processed(&engine, "the lead.converted webhook").await?;

        step("the deal moves to stage 3 (webhook deal.stage_changed)");
        let stage = json!({
            "id": "evt-2", "event": "deal.stage_changed", "object": "deal",
            "data": {"id": deal_id, "stage_id": "3", "status": "open", "email": bob.email}
        });
        info(format!("engine: {}", crm_webhook(&hook_url, "evt-2", &stage).await?));
        wait_processed(&engine, "the deal.stage_changed webhook").await?;

        step("the deal is won (webhook deal.won), and the CRM redelivers it");
        let won = json!({
            "id": "evt-3", "event": "deal.won", "object": "deal",
            "data": {"id": deal_id, "stage_id": WON_STAGE, "status": "won", "email": bob.email}
        });
        info(format!("engine: {}", crm_webhook(&hook_url, "evt-3", &won).await?));
        info(format!(
            "engine (redelivery): {}",
            crm_webhook(&hook_url, "evt-3", &won).await?
        ));
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
        let leads = crm_state.leads.lock().unwrap_or_else(|e| e.into_inner()).len();
        step(format!(
            "done: 1 lead in the CRM ({leads} stored), {} qualification, {} reward due",
            qualifications.len(),
            due.items.len()
        ));
        Ok(())
    }
    .await;

    if result.is_ok() && keep_running {
        println!();
        println!("refsync keeps serving (Ctrl-C to stop):");
        println!("  webhooks       POST {hook_url}  (Standard Webhooks, demo secret)");
        println!("  referrals      POST {base}/referrals  (X-Refsync-Token: {ADMIN_TOKEN})");
        println!(
            "  admin API      GET  {base}/admin/deliveries  (Authorization: Bearer {ADMIN_TOKEN})"
        );
        println!("  metrics        GET  {base}/metrics");
        println!("  simulated CRM  {}", crm.base_url());
        let _ = std::io::stdout().flush();
        crate::serve::shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(e.to_string()),
    }
    crm.shutdown().await;
    ledger.close().await;
    result
}
