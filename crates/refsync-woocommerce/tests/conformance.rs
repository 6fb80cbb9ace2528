//! The refsync-testkit conformance suite for refsync-woocommerce, run on `tests/fixtures/`.
//!
//! `cargo test -p refsync-woocommerce --test conformance` runs it; `REFSYNC_BLESS=1` writes the
//! `<stem>.expected.json` files of the fixtures (review them before committing). Tests the
//! connector's capabilities do not call for are skipped with their reason.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{
    DuplicatePolicy, FieldMapping, ObjectKind, PushSpec, Registry, RuleSpec, WebhookRequest,
};
use refsync_http::signature::{basic_auth_header, hmac_sha256_base64};
use refsync_testkit::conformance::Harness;
use refsync_testkit::sim::{Simulator, send_webhook};
use refsync_testkit::woocommerce::{REST_PREFIX, WooSim, WooSimOptions};
use serde_json::{Value, json};

const CONSUMER_KEY: &str = "ck_conformance_0123456789abcdef";
const CONSUMER_SECRET: &str = "cs_conformance_0123456789abcdef";
const WEBHOOK_SECRET: &str = "conformance-webhook-secret-woocommerce";

struct WoocommerceHarness;

#[async_trait::async_trait]
impl Harness for WoocommerceHarness {
    fn register(&self, registry: &mut Registry) {
        refsync_woocommerce::register(registry);
    }

    fn connector(&self) -> &'static str {
        refsync_woocommerce::NAME
    }

    fn settings(&self, simulator: Option<&str>) -> Value {
        json!({
            // The simulator serves plain HTTP on loopback as a store "behind HTTPS" would
            // (Basic auth); without one, an unreachable loopback port.
            "store_url": simulator.unwrap_or("http://127.0.0.1:9"),
            "auth": "basic",
            "consumer_key": CONSUMER_KEY,
            "consumer_secret": CONSUMER_SECRET,
            "webhook_secret": WEBHOOK_SECRET,
            "referral_code_meta_key": "referral_code",
            "coupon": { "code": "ref-{random}", "amount": "10" },
        })
    }

    fn secrets(&self) -> Vec<String> {
        vec![
            CONSUMER_KEY.to_owned(),
            CONSUMER_SECRET.to_owned(),
            WEBHOOK_SECRET.to_owned(),
        ]
    }

    fn authenticate(&self, request: &mut WebhookRequest, now: DateTime<Utc>) -> Result<(), String> {
        // As WooCommerce: base64(HMAC-SHA256(raw body, webhook secret)); no timestamp is signed.
        let _ = now;
        let signature = hmac_sha256_base64(WEBHOOK_SECRET.as_bytes(), &request.body);
        request.set_header("X-WC-Webhook-Signature", signature);
        Ok(())
    }

    fn signs_body(&self) -> bool {
        true
    }

    fn replay_window(&self) -> Option<Duration> {
        // WooCommerce signs no timestamp; redeliveries are caught by deduplication.
        None
    }

    fn push_spec(&self) -> Result<PushSpec, String> {
        let fields = FieldMapping::from_pairs([
            ("email", "{Email}"),
            ("first_name", "{First Name}"),
            ("meta.referral_code", "{Referral Code}"),
            ("meta.referred_by", "{Referrer Email}"),
            ("meta.referral_coupon", "{Coupon}"),
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
        let sim = WooSim::start(WooSimOptions::new(CONSUMER_KEY, CONSUMER_SECRET))
            .await
            .map_err(|e| e.to_string())?;
        Ok(sim.into_simulator())
    }

    async fn records(&self, simulator: &Simulator, email: &str) -> Result<Vec<Value>, String> {
        let path = format!(
            "{REST_PREFIX}/customers?role=all&email={}",
            email.replace('+', "%2B")
        );
        let request = WebhookRequest {
            method: "GET".into(),
            ..WebhookRequest::default()
        }
        .with_header(
            "Authorization",
            basic_auth_header(CONSUMER_KEY, CONSUMER_SECRET),
        );
        let (status, body) = send_webhook(&simulator.url(&path), &request)
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!(
                "GET {path}: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let customers: Vec<Value> =
            serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))?;
        Ok(customers)
    }

    fn rules(&self) -> Vec<RuleSpec> {
        [
            r#"{"rule":"coupon_used"}"#,
            r#"{"rule":"unqualify_on_status","statuses":["refunded","cancelled"]}"#,
        ]
        .iter()
        .map(|r| serde_json::from_str(r).expect("rule spec"))
        .collect()
    }

    fn one_record_per_email(&self) -> Option<&'static str> {
        Some("WooCommerce keeps one customer per email")
    }
}

refsync_testkit::conformance_main!(WoocommerceHarness);
