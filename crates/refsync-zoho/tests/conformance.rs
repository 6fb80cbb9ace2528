//! The refsync-testkit conformance suite for refsync-zoho, run on `tests/fixtures/`.
//!
//! `cargo test -p refsync-zoho --test conformance` runs it; `REFSYNC_BLESS=1` writes the
//! `<stem>.expected.json` files of the fixtures (review them before committing). Tests the
//! connector's capabilities do not call for are skipped with their reason.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{
    DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, Registry, RuleSpec, WebhookRequest,
};
use refsync_testkit::conformance::Harness;
use refsync_testkit::sim::{Simulator, send_webhook};
use refsync_testkit::zoho::{ZohoSim, ZohoSimOptions};
use serde_json::{Value, json};

const CLIENT_ID: &str = "1000.CONFORMANCE";
const CLIENT_SECRET: &str = "conformance-client-secret-zoho";
const REFRESH_TOKEN: &str = "1000.conformance-refresh-token";
/// Not the official sample's token: the sample as published must be refused here.
const TOKEN: &str = "conformance-notification-token-zoho";
/// The official sample's channel (tests/fixtures/notification_callback_leads_insert).
const CHANNEL: &str = "1000000068001";

struct ZohoHarness;

#[async_trait::async_trait]
impl Harness for ZohoHarness {
    fn register(&self, registry: &mut Registry) {
        refsync_zoho::register(registry);
    }

    fn connector(&self) -> &'static str {
        refsync_zoho::NAME
    }

    fn settings(&self, simulator: Option<&str>) -> Value {
        // Without a simulator: an unreachable loopback port.
        let base = simulator.unwrap_or("http://127.0.0.1:9");
        json!({
            "auth": { "type": "self_client", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                      "refresh_token": REFRESH_TOKEN, "accounts_url": base },
            "api_domain": base,
            "notification_token": TOKEN,
            "channel_id": CHANNEL,
        })
    }

    fn secrets(&self) -> Vec<String> {
        vec![
            CLIENT_SECRET.to_owned(),
            REFRESH_TOKEN.to_owned(),
            TOKEN.to_owned(),
        ]
    }

    fn authenticate(&self, request: &mut WebhookRequest, now: DateTime<Utc>) -> Result<(), String> {
        // Zoho signs nothing: a notification is a JSON body echoing the channel's token and id.
        // The suite's own sample bodies are wrapped into one.
        let _ = now;
        let mut body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        match body.as_object_mut() {
            Some(o) if o.contains_key("channel_id") => {
                o.insert("token".into(), json!(TOKEN));
                o.insert("channel_id".into(), json!(CHANNEL));
            }
            _ => {
                body = json!({
                    "server_time": 1718117126473_i64, "query_params": {}, "module": "Leads",
                    "resource_uri": "https://www.zohoapis.com/crm/v8/Leads", "ids": ["5725767000003000064"],
                    "affected_fields": [], "operation": "insert", "channel_id": CHANNEL, "token": TOKEN,
                    "payload": body,
                });
            }
        }
        request.body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn signs_body(&self) -> bool {
        // The token authenticates the sender, not the bytes: a changed body keeps its token.
        false
    }

    fn replay_window(&self) -> Option<Duration> {
        // No timestamp is signed; redeliveries are caught by deduplication.
        None
    }

    fn push_spec(&self) -> Result<PushSpec, String> {
        let fields = FieldMapping::from_pairs([
            ("Email", "{Email}"),
            ("First_Name", "{First Name}"),
            ("Referral_Code", "{Referral Code}"),
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
        let sim = ZohoSim::start(ZohoSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN))
            .await
            .map_err(|e| e.to_string())?;
        Ok(sim.into_simulator())
    }

    async fn records(&self, simulator: &Simulator, email: &str) -> Result<Vec<Value>, String> {
        // A token of our own, then the search the connector would make.
        let token_url = simulator.url(&format!(
            "/oauth/v2/token?grant_type=refresh_token&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&refresh_token={REFRESH_TOKEN}"
        ));
        let (status, body) = send_webhook(&token_url, &WebhookRequest::post("", Vec::new()))
            .await
            .map_err(|e| e.to_string())?;
        let token: Value =
            serde_json::from_slice(&body).map_err(|e| format!("token {status}: {e}"))?;
        let access = token["access_token"].as_str().ok_or("no access token")?;
        let path = format!(
            "/crm/v8/Leads/search?email={}",
            email.replace('+', "%2B").replace('@', "%40")
        );
        let request = WebhookRequest {
            method: "GET".into(),
            ..WebhookRequest::default()
        }
        .with_header("Authorization", format!("Zoho-oauthtoken {access}"));
        let (status, body) = send_webhook(&simulator.url(&path), &request)
            .await
            .map_err(|e| e.to_string())?;
        match status {
            200 => {
                let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                Ok(v["data"].as_array().cloned().unwrap_or_default())
            }
            204 => Ok(Vec::new()),
            _ => Err(format!(
                "GET {path}: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }

    fn api_path_prefix(&self) -> Option<&'static str> {
        // The simulator also serves the accounts server (`/oauth/v2/token`).
        Some("/crm/")
    }

    fn rules(&self) -> Vec<RuleSpec> {
        [r#"{"rule":"lead_converted"}"#, r#"{"rule":"deal_won"}"#]
            .iter()
            .map(|r| serde_json::from_str(r).expect("rule spec"))
            .collect()
    }
}

refsync_testkit::conformance_main!(ZohoHarness);
