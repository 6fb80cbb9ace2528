//! Conformance suite for the generic-webhook connector.
//!
//! The fixtures are real Pipedrive webhooks v2 deliveries (copied unchanged from the shared
//! fixtures) plus one synthetic won deal built from them (see its .source.txt), read through a
//! generic mapping: the point is that a declarative mapping handles a
//! real vendor body. Inbound auth here is the Standard Webhooks scheme; the other schemes are
//! covered in `tests/auth.rs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{
    DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, Registry, RuleSpec, WebhookRequest,
};
use refsync_testkit::conformance::Harness;
use refsync_testkit::sim::{RecordedRequest, SimResponse, Simulator};
use serde_json::{Value, json};

const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PUSH_KEY: &str = "push-api-key-7f3a9c";

struct GenericHarness;

#[async_trait::async_trait]
impl Harness for GenericHarness {
    fn register(&self, registry: &mut Registry) {
        refsync_generic_webhook::register(registry);
    }
    fn connector(&self) -> &'static str {
        refsync_generic_webhook::NAME
    }
    fn settings(&self, simulator: Option<&str>) -> Value {
        let base = simulator.unwrap_or("http://127.0.0.1:9");
        json!({
            "auth": { "type": "standard_webhooks", "secret": SIGNING_SECRET },
            "events": {
                "delivery_id": "/meta/id",
                "occurred_at": "/meta/timestamp",
                "object_kind": "/meta/entity",
                "object_id": "/meta/entity_id",
                "change": "/meta/action",
                "change_types": { "create": "created", "change": "updated", "delete": "deleted" },
                "account": "/meta/company_id",
                "email": "/data/emails/0/value",
                "stage": "/data/stage_id",
                "previous_stage": "/previous/stage_id",
                "pipeline": "/data/pipeline_id",
                "status": "/data/status",
                "previous_status": "/previous/status",
                "referral_code": "/data/custom_fields/a1b2c3d4e5f60718293a4b5c6d7e8f9012345678/value"
            },
            "push": {
                "url": format!("{base}/receive"),
                "headers": { "X-Api-Key": PUSH_KEY },
                "body": { "email": "{Email}", "code": "{Referral Code}", "name": "{First Name}", "fields": "{fields}" },
                "response_id": "/id",
                "health_url": format!("{base}/health")
            }
        })
    }
    fn secrets(&self) -> Vec<String> {
        vec![SIGNING_SECRET.into(), PUSH_KEY.into()]
    }
    fn authenticate(&self, request: &mut WebhookRequest, now: DateTime<Utc>) -> Result<(), String> {
        let id = "msg_conformance_1";
        let sig = refsync_http::standard_webhooks::sign(
            SIGNING_SECRET,
            id,
            now.timestamp(),
            &request.body,
        )
        .map_err(|e| e.to_string())?;
        request.set_header("webhook-id", id);
        request.set_header("webhook-timestamp", now.timestamp().to_string());
        request.set_header("webhook-signature", sig);
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
                ("email", "{Email}"),
                ("referral_code", "{Referral Code}"),
                ("referrer", "{Referrer First Name} <{Referrer Email}>"),
                ("campaign", "{Campaign Name}"),
                ("link", "{Referral Link}"),
            ])
            .map_err(|e| e.to_string())?,
            duplicates: DuplicatePolicy::UpdateExisting,
            defaults: Default::default(),
        })
    }
    async fn simulator(&self) -> Result<Simulator, String> {
        let received = std::sync::atomic::AtomicU64::new(0);
        Simulator::start(move |req: &RecordedRequest| {
            if req.header("x-api-key") != Some(PUSH_KEY) {
                return SimResponse::json(401, &json!({"error": "missing or wrong X-Api-Key"}));
            }
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "/health") => SimResponse::json(200, &json!({"ok": true})),
                ("POST", "/receive") if req.json().is_some() => {
                    let n = received.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    SimResponse::json(200, &json!({"id": format!("rcv-{n}")}))
                }
                ("POST", "/receive") => {
                    SimResponse::json(400, &json!({"error": "body must be JSON"}))
                }
                _ => SimResponse::json(404, &json!({"error": "no such route"})),
            }
        })
        .await
        .map_err(|e| e.to_string())
    }
    async fn records(&self, simulator: &Simulator, email: &str) -> Result<Vec<Value>, String> {
        // The receiver keeps nothing: what it received is the request log.
        Ok(simulator
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/receive")
            .filter_map(|r| r.json())
            .filter(|b| b["email"] == email)
            .collect())
    }
    fn rules(&self) -> Vec<RuleSpec> {
        vec![
            RuleSpec::DealWon {},
            RuleSpec::DealStageChanged {
                to: "3".into(),
                pipeline: Some("1".into()),
            },
        ]
    }
}

refsync_testkit::conformance_main!(GenericHarness);
