//! The refsync-testkit conformance suite for refsync-salesforce, run on `tests/fixtures/`.
//!
//! `cargo test -p refsync-salesforce --test conformance` runs it; `REFSYNC_BLESS=1` writes the
//! `<stem>.expected.json` files of the fixtures (review them before committing). Tests the
//! connector's capabilities do not call for are skipped with their reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{
    DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, Registry, RuleSpec, WebhookRequest,
};
use refsync_testkit::conformance::Harness;
use refsync_testkit::salesforce::{SalesforceSim, SalesforceSimOptions, TEST_PRIVATE_KEY_PEM};
use refsync_testkit::sim::{Simulator, send_webhook};
use serde_json::{Value, json};

const CLIENT_ID: &str = "3MVG9conformance";
const CLIENT_SECRET: &str = "conformance-client-secret-salesforce";
const REFRESH_TOKEN: &str = "conformance-refresh-token";
const USERNAME: &str = "integration@conformance.example";
const ENDPOINT_TOKEN: &str = "conformance-endpoint-token-salesforce";
/// The organization of the captured outbound message (tests/fixtures).
const ORG: &str = "00D5w000004qGTOEA2";

/// The test key, written once to a file (the JWT bearer flow reads a key file).
fn key_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "refsync-salesforce-conformance-{}.pem",
            std::process::id()
        ));
        std::fs::write(&path, TEST_PRIVATE_KEY_PEM).expect("write the test key");
        path
    })
}

struct SalesforceHarness;

#[async_trait::async_trait]
impl Harness for SalesforceHarness {
    fn register(&self, registry: &mut Registry) {
        refsync_salesforce::register(registry);
    }

    fn connector(&self) -> &'static str {
        refsync_salesforce::NAME
    }

    fn settings(&self, simulator: Option<&str>) -> Value {
        // Without a simulator: an unreachable loopback port.
        let base = simulator.unwrap_or("http://127.0.0.1:9");
        json!({
            "auth": { "type": "jwt_bearer", "client_id": CLIENT_ID, "username": USERNAME,
                      "private_key_file": key_file().display().to_string(), "login_url": base },
            "endpoint_token": ENDPOINT_TOKEN,
            "organization_ids": [ORG],
        })
    }

    fn secrets(&self) -> Vec<String> {
        vec![ENDPOINT_TOKEN.to_owned()]
    }

    fn authenticate(&self, request: &mut WebhookRequest, now: DateTime<Utc>) -> Result<(), String> {
        // Outbound messages are signed by nothing: the endpoint URL carries the token.
        let _ = now;
        let base = request.url.split('?').next().unwrap_or("").to_owned();
        request.url = format!("{base}?token={ENDPOINT_TOKEN}");
        Ok(())
    }

    fn signs_body(&self) -> bool {
        false
    }

    fn replay_window(&self) -> Option<Duration> {
        None
    }

    fn push_spec(&self) -> Result<PushSpec, String> {
        let fields = FieldMapping::from_pairs([
            ("Email", "{Email}"),
            ("FirstName", "{First Name}"),
            ("Referral_Code__c", "{Referral Code}"),
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
        let mut opts = SalesforceSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN);
        opts.jwt_username = USERNAME.to_owned();
        let sim = SalesforceSim::start(opts)
            .await
            .map_err(|e| e.to_string())?;
        Ok(sim.into_simulator())
    }

    async fn records(&self, simulator: &Simulator, email: &str) -> Result<Vec<Value>, String> {
        // A session of our own (refresh token grant), then the query the connector would make.
        let token_url = simulator.url(&format!(
            "/services/oauth2/token?grant_type=refresh_token&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&refresh_token={REFRESH_TOKEN}"
        ));
        let form = format!(
            "grant_type=refresh_token&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&refresh_token={REFRESH_TOKEN}"
        );
        let request = WebhookRequest::post("", form.into_bytes())
            .with_header("Content-Type", "application/x-www-form-urlencoded");
        let (status, body) = send_webhook(&token_url, &request)
            .await
            .map_err(|e| e.to_string())?;
        let token: Value =
            serde_json::from_slice(&body).map_err(|e| format!("token {status}: {e}"))?;
        let access = token["access_token"].as_str().ok_or("no access token")?;
        let soql = format!(
            "SELECT Id, Email, FirstName, LastName, Referral_Code__c FROM Lead WHERE Email = '{email}'"
        );
        let path = format!(
            "/services/data/v62.0/query?q={}",
            soql.replace('%', "%25")
                .replace(' ', "%20")
                .replace('\'', "%27")
                .replace('+', "%2B")
                .replace('@', "%40")
                .replace(',', "%2C")
                .replace('=', "%3D")
        );
        let get = WebhookRequest {
            method: "GET".into(),
            ..WebhookRequest::default()
        }
        .with_header("Authorization", format!("Bearer {access}"));
        let (status, body) = send_webhook(&simulator.url(&path), &get)
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!(
                "GET {path}: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(v["records"].as_array().cloned().unwrap_or_default())
    }

    fn rules(&self) -> Vec<RuleSpec> {
        [r#"{"rule":"lead_converted"}"#, r#"{"rule":"deal_won"}"#]
            .iter()
            .map(|r| serde_json::from_str(r).expect("rule spec"))
            .collect()
    }

    fn one_record_per_email(&self) -> Option<&'static str> {
        // The same referral pushed twice: its code, the unique External ID, exists already.
        Some("Salesforce keeps one record per referral code (a unique External ID field)")
    }

    fn api_path_prefix(&self) -> Option<&'static str> {
        // The simulator also serves the login host (`/services/oauth2/token`).
        Some("/services/data/")
    }
}

refsync_testkit::conformance_main!(SalesforceHarness);
