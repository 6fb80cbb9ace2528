//! Self-test: the reference FakeConnector passes the whole conformance suite.

use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{
    DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, Registry, RuleSpec, WebhookRequest,
};
use refsync_testkit::conformance::Harness;
use refsync_testkit::fake;
use refsync_testkit::sim::Simulator;
use serde_json::{Value, json};

const TOKEN: &str = "fake-api-token-0123456789";
const SECRET: &str = "fake-webhook-secret-abcdef";

struct FakeHarness;

#[async_trait::async_trait]
impl Harness for FakeHarness {
    fn register(&self, registry: &mut Registry) {
        fake::register(registry);
    }
    fn connector(&self) -> &'static str {
        fake::NAME
    }
    fn settings(&self, simulator: Option<&str>) -> Value {
        json!({
            "base_url": simulator.unwrap_or("http://127.0.0.1:9"),
            "api_token": TOKEN,
            "webhook_secret": SECRET,
        })
    }
    fn secrets(&self) -> Vec<String> {
        vec![TOKEN.into(), SECRET.into()]
    }
    fn authenticate(&self, request: &mut WebhookRequest, now: DateTime<Utc>) -> Result<(), String> {
        for (k, v) in fake::sign(SECRET, &request.body, now) {
            request.set_header(&k, v);
        }
        Ok(())
    }
    fn signs_body(&self) -> bool {
        true
    }
    fn replay_window(&self) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
    fn push_spec(&self) -> Result<PushSpec, String> {
        Ok(PushSpec {
            object: ObjectKind::Contact,
            fields: FieldMapping::from_pairs([
                ("first_name", "{First Name}"),
                ("email", "{Email}"),
                ("referral_code", "{Referral Code}"),
                ("referred_by", "{Referrer First Name} <{Referrer Email}>"),
                ("campaign", "{Campaign Name}"),
            ])
            .map_err(|e| e.to_string())?,
            duplicates: DuplicatePolicy::UpdateExisting,
            defaults: Default::default(),
        })
    }
    async fn simulator(&self) -> Result<Simulator, String> {
        fake::fake_crm(TOKEN).await.map_err(|e| e.to_string())
    }
    async fn records(&self, simulator: &Simulator, email: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/records", simulator.base_url());
        let resp = reqwest::Client::new()
            .get(url)
            .query(&[("email", email)])
            .bearer_auth(TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        resp.json().await.map_err(|e| e.to_string())
    }
    fn rules(&self) -> Vec<RuleSpec> {
        vec![
            RuleSpec::DealWon {},
            RuleSpec::LeadConvertedAtStage { stage: "3".into() },
        ]
    }
}

// The testkit is not a connector crate (no `[package.metadata.refsync]`), so the suite runs
// without the manifest check that `conformance_main!` adds.
fn main() -> std::process::ExitCode {
    refsync_testkit::conformance::Suite::new(FakeHarness)
        .fixtures(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
        .run()
}
