//! The refsync-testkit conformance suite for refsync-pipedrive, run on `tests/fixtures/`.
//!
//! `cargo test -p refsync-pipedrive --test conformance` runs it; `REFSYNC_BLESS=1` writes the
//! `<stem>.expected.json` files of the fixtures (review them before committing). Tests the
//! connector's capabilities do not call for are skipped with their reason. The CRM side is the
//! testkit's Pipedrive simulator (`refsync_testkit::pipedrive`), over loopback HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{
    DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, Registry, RuleSpec, WebhookRequest,
};
use refsync_testkit::conformance::Harness;
use refsync_testkit::pipedrive::{self, PipedriveSim, PipedriveSimOptions};
use refsync_testkit::sim::{Simulator, send_webhook};
use serde_json::{Value, json};

const API_TOKEN: &str = "conformance-api-token-pipedrive";
const WEBHOOK_USER: &str = "refsync-conformance";
const WEBHOOK_PASSWORD: &str = "conformance-webhook-password-pipedrive";
/// The key of the "Referral Code" deal field in the simulator and the synthetic fixtures.
const REFERRAL_CODE_KEY: &str = pipedrive::REFERRAL_CODE_KEY;

struct PipedriveHarness;

#[async_trait::async_trait]
impl Harness for PipedriveHarness {
    fn register(&self, registry: &mut Registry) {
        refsync_pipedrive::register(registry);
    }

    fn connector(&self) -> &'static str {
        refsync_pipedrive::NAME
    }

    fn settings(&self, simulator: Option<&str>) -> Value {
        json!({
            "base_url": simulator.unwrap_or("http://127.0.0.1:9"),
            "auth": { "type": "api_token", "token": API_TOKEN },
            "webhook_user": WEBHOOK_USER,
            "webhook_password": WEBHOOK_PASSWORD,
            "referral_code_field": REFERRAL_CODE_KEY,
        })
    }

    fn secrets(&self) -> Vec<String> {
        vec![API_TOKEN.to_owned(), WEBHOOK_PASSWORD.to_owned()]
    }

    fn authenticate(&self, request: &mut WebhookRequest, now: DateTime<Utc>) -> Result<(), String> {
        // Pipedrive sends the webhook's HTTP Basic credentials with every delivery; nothing is
        // signed, so `now` plays no part.
        let _ = now;
        request.set_header(
            "Authorization",
            refsync_http::signature::basic_auth_header(WEBHOOK_USER, WEBHOOK_PASSWORD),
        );
        Ok(())
    }

    fn signs_body(&self) -> bool {
        // Basic auth does not cover the body.
        false
    }

    fn replay_window(&self) -> Option<Duration> {
        // Pipedrive signs no timestamp.
        None
    }

    fn push_spec(&self) -> Result<PushSpec, String> {
        // Standard person fields, a custom field by its label and one by its key, as the guide's
        // mapping step does.
        let fields = FieldMapping::from_pairs([
            ("email", "{Email}"),
            ("first_name", "{First Name}"),
            ("Referral Code", "{Referral Code}"),
            (pipedrive::REFERRER_EMAIL_KEY, "{Referrer Email}"),
        ])
        .map_err(|e| e.to_string())?;
        Ok(PushSpec {
            object: ObjectKind::Lead,
            fields,
            duplicates: DuplicatePolicy::UpdateExisting,
            defaults: BTreeMap::new(),
        })
    }

    async fn simulator(&self) -> Result<Simulator, String> {
        let sim = PipedriveSim::start(PipedriveSimOptions::new(API_TOKEN))
            .await
            .map_err(|e| e.to_string())?;
        Ok(sim.into_simulator())
    }

    fn rules(&self) -> Vec<RuleSpec> {
        // The guide's four options (and the unqualify rule) so each fixture records what
        // every option decides on it.
        [
            r#"{"rule":"lead_converted"}"#,
            r#"{"rule":"lead_converted_at_stage","stage":"3"}"#,
            r#"{"rule":"deal_stage_changed","to":"3","pipeline":"1"}"#,
            r#"{"rule":"deal_won"}"#,
            r#"{"rule":"unqualify_on_status","statuses":["lost","deleted"]}"#,
        ]
        .iter()
        .map(|r| serde_json::from_str(r).expect("rule spec"))
        .collect()
    }

    async fn records(&self, simulator: &Simulator, email: &str) -> Result<Vec<Value>, String> {
        // Through the public API, as an operator would look: the persons with that email, each
        // with its leads.
        let search = api_get(
            simulator,
            &format!(
                "/api/v2/persons/search?term={}&fields=email&exact_match=true",
                email.replace('+', "%2B")
            ),
        )
        .await?;
        let mut out = Vec::new();
        for item in search["data"]["items"].as_array().into_iter().flatten() {
            let id = item["item"]["id"]
                .as_u64()
                .ok_or("search item without id")?;
            let person = api_get(simulator, &format!("/api/v2/persons/{id}")).await?;
            let leads = api_get(simulator, &format!("/v1/leads?person_id={id}")).await?;
            out.push(json!({ "person": person["data"], "leads": leads["data"] }));
        }
        Ok(out)
    }
}

async fn api_get(sim: &Simulator, path: &str) -> Result<Value, String> {
    let request = WebhookRequest {
        method: "GET".into(),
        ..WebhookRequest::default()
    }
    .with_header("x-api-token", API_TOKEN);
    let (status, body) = send_webhook(&sim.url(path), &request)
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!(
            "GET {path}: HTTP {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))
}

refsync_testkit::conformance_main!(PipedriveHarness);
