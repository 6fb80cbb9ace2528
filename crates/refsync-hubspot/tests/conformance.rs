//! The refsync-testkit conformance suite for refsync-hubspot, run on `tests/fixtures/`.
//!
//! `cargo test -p refsync-hubspot --test conformance` runs it; `REFSYNC_BLESS=1` writes the
//! `<stem>.expected.json` files of the fixtures (review them before committing). Tests the
//! connector's capabilities do not call for are skipped with their reason.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{
    DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, Registry, RuleSpec, WebhookRequest,
};
use refsync_testkit::conformance::Harness;
use refsync_testkit::hubspot::{HubSpotSim, HubSpotSimOptions, sign_v3};
use refsync_testkit::sim::{Simulator, send_webhook};
use serde_json::{Value, json};

const TOKEN: &str = "pat-na1-conformance-token-hubspot";
const CLIENT_SECRET: &str = "conformance-client-secret-hubspot";

struct HubSpotHarness;

#[async_trait::async_trait]
impl Harness for HubSpotHarness {
    fn register(&self, registry: &mut Registry) {
        refsync_hubspot::register(registry);
    }

    fn connector(&self) -> &'static str {
        refsync_hubspot::NAME
    }

    fn settings(&self, simulator: Option<&str>) -> Value {
        json!({
            // Without a simulator: an unreachable loopback port.
            "base_url": simulator.unwrap_or("http://127.0.0.1:9"),
            "auth": { "type": "private_app", "token": TOKEN },
            "client_secret": CLIENT_SECRET,
            "signature_versions": ["v3"],
        })
    }

    fn secrets(&self) -> Vec<String> {
        vec![TOKEN.to_owned(), CLIENT_SECRET.to_owned()]
    }

    fn authenticate(&self, request: &mut WebhookRequest, now: DateTime<Utc>) -> Result<(), String> {
        // As HubSpot signs v3: base64 HMAC-SHA256 of method + URL + body + timestamp (ms),
        // computed by the simulator's own signer (written from HubSpot's docs).
        let ts = now.timestamp_millis();
        let sig = sign_v3(
            CLIENT_SECRET,
            &request.method,
            &request.url,
            &request.body,
            ts,
        );
        request.set_header("X-HubSpot-Request-Timestamp", ts.to_string());
        request.set_header("X-HubSpot-Signature-v3", sig);
        Ok(())
    }

    fn signs_body(&self) -> bool {
        true
    }

    fn replay_window(&self) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }

    fn push_spec(&self) -> Result<PushSpec, String> {
        let fields = FieldMapping::from_pairs([
            ("email", "{Email}"),
            ("firstname", "{First Name}"),
            ("referral_code", "{Referral Code}"),
        ])
        .map_err(|e| e.to_string())?;
        Ok(PushSpec {
            object: ObjectKind::Contact,
            fields,
            duplicates: DuplicatePolicy::UpdateExisting,
            defaults: BTreeMap::new(),
        })
    }

    async fn simulator(&self) -> Result<Simulator, String> {
        let sim = HubSpotSim::start(HubSpotSimOptions::new(TOKEN, CLIENT_SECRET))
            .await
            .map_err(|e| e.to_string())?;
        Ok(sim.into_simulator())
    }

    async fn records(&self, simulator: &Simulator, email: &str) -> Result<Vec<Value>, String> {
        let path = format!(
            "/crm/v3/objects/contacts/{}?idProperty=email&properties=email,firstname,referral_code",
            email.replace('+', "%2B").replace('@', "%40")
        );
        let request = WebhookRequest {
            method: "GET".into(),
            ..WebhookRequest::default()
        }
        .with_header("Authorization", format!("Bearer {TOKEN}"));
        let (status, body) = send_webhook(&simulator.url(&path), &request)
            .await
            .map_err(|e| e.to_string())?;
        match status {
            200 => Ok(vec![
                serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))?,
            ]),
            404 => Ok(Vec::new()),
            _ => Err(format!(
                "GET {path}: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }

    fn rules(&self) -> Vec<RuleSpec> {
        [
            r#"{"rule":"deal_won"}"#,
            r#"{"rule":"deal_stage_changed","to":"contractsent"}"#,
            r#"{"rule":"lead_converted"}"#,
        ]
        .iter()
        .map(|r| serde_json::from_str(r).expect("rule spec"))
        .collect()
    }

    fn one_record_per_email(&self) -> Option<&'static str> {
        Some("HubSpot keeps one contact per email")
    }
}

refsync_testkit::conformance_main!(HubSpotHarness);
