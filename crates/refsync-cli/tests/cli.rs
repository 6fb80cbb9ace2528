//! The `refsync` binary, run as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

fn refsync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refsync"))
        .args(args)
        .output()
        .expect("run refsync")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(file: &str) -> String {
    root()
        .join("examples/generic-webhook")
        .join(file)
        .display()
        .to_string()
}

#[test]
fn connectors_lists_generic_webhook_with_capabilities() {
    let out = refsync(&["connectors"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("generic-webhook"))
        .expect("generic-webhook row");
    assert!(
        line.contains("webhooks, push") && line.contains("{Referral Code}"),
        "{line}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&refsync(&["connectors", "--json"]).stdout).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "generic-webhook")
    );
}

#[test]
fn inspect_prints_events_and_verdicts() {
    let out = refsync(&[
        "inspect",
        "--connector",
        "generic-webhook",
        "--config",
        &example("instance.toml"),
        "--header",
        "X-Refsync-Token: change-me-to-a-long-random-token",
        &example("synthetic-deal-won.json"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(
        v["events"][0]["object"],
        serde_json::json!({"kind": "deal", "id": "8"})
    );
    assert_eq!(
        v["events"][0]["change"],
        serde_json::json!({"type": "status_changed", "from": null, "to": "won"})
    );
    assert_eq!(v["events"][0]["referral_code"], "ADA-42");
    let decisions = &v["verdicts"][0]["decisions"];
    assert_eq!(decisions[0]["verdict"], "qualify");
    assert_eq!(
        decisions[0]["call"]["referral"],
        serde_json::json!({"by": "code", "code": "ADA-42"})
    );
    assert_eq!(decisions[1]["verdict"], "skip");
}

#[test]
fn bad_token_exits_non_zero_with_one_line_reason() {
    let out = refsync(&[
        "inspect",
        "--connector",
        "generic-webhook",
        "--config",
        &example("instance.toml"),
        "--header",
        "X-Refsync-Token: wrong",
        &example("synthetic-deal-won.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("token does not match"), "{err}");
    assert!(
        !err.contains("change-me-to-a-long-random-token"),
        "the secret leaked: {err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_signature_with_hmac_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hmac.json");
    std::fs::write(&cfg, r#"{"settings": {"auth": {"type": "hmac", "header": "X-Sig", "secret": "topsecret-1"},
        "events": {"object_kind": {"value": "deal"}, "object_id": "/deal/id", "status": "/deal/status"}}}"#).unwrap();
    let body = std::fs::read(example("synthetic-deal-won.json")).unwrap();
    let good = refsync_http::hmac_sha256_hex(b"topsecret-1", &body);
    let ok = refsync(&[
        "inspect",
        "--connector",
        "generic-webhook",
        "--config",
        cfg.to_str().unwrap(),
        "-H",
        &format!("X-Sig: {good}"),
        &example("synthetic-deal-won.json"),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = refsync(&[
        "inspect",
        "--connector",
        "generic-webhook",
        "--config",
        cfg.to_str().unwrap(),
        "-H",
        "X-Sig: 00ff",
        &example("synthetic-deal-won.json"),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("signature does not match"));
    let skipped = refsync(&[
        "inspect",
        "--connector",
        "generic-webhook",
        "--config",
        cfg.to_str().unwrap(),
        "--no-verify",
        &example("synthetic-deal-won.json"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&skipped.stdout).unwrap();
    assert_eq!(v["verified"], serde_json::Value::Null);
    assert!(
        v.get("verdicts").is_none(),
        "no rules configured, so no verdicts"
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let out = refsync(&[
        "inspect",
        "--connector",
        "nope",
        &example("synthetic-deal-won.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown connector \"nope\"; compiled in: generic-webhook")
    );
    let out = refsync(&[
        "inspect",
        "--connector",
        "generic-webhook",
        &example("synthetic-deal-won.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing field `auth`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_errors_never_print_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let body = example("synthetic-deal-won.json");
    // A syntax error on the line that holds the secret, and a token written as a number.
    for (name, text, says) in [
        (
            "syntax.toml",
            "[settings.auth]\ntype = \"token\"\nheader = \"X-T\"\ntoken = \"s3cr3t-tok-value\" x\n",
            "syntax.toml: line 4",
        ),
        (
            "number.toml",
            "[settings.auth]\ntype = \"token\"\nheader = \"X-T\"\ntoken = 98765432123\n",
            "invalid settings at auth: a secret must be a string",
        ),
    ] {
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, text).unwrap();
        let out = refsync(&[
            "inspect",
            "--connector",
            "generic-webhook",
            "--config",
            cfg.to_str().unwrap(),
            &body,
        ]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("s3cr3t-tok-value") && !err.contains("98765432123"),
            "{name}: secret printed: {err}"
        );
        assert!(err.contains(says), "{name}: expected {says:?} in: {err}");
    }
}

/// The Basic header of examples/pipedrive/instance.toml (`refsync:change-me-to-a-long-random-password`).
const PIPEDRIVE_BASIC: &str =
    "Authorization: Basic cmVmc3luYzpjaGFuZ2UtbWUtdG8tYS1sb25nLXJhbmRvbS1wYXNzd29yZA==";

fn pipedrive_fixture(name: &str) -> String {
    root()
        .join("crates/refsync-pipedrive/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn inspect_turns_real_pipedrive_deliveries_into_events_and_verdicts() {
    let config = root()
        .join("examples/pipedrive/instance.toml")
        .display()
        .to_string();
    // The official v2 "create deal" example: created, then its stage.
    let out = refsync(&[
        "inspect",
        "--connector",
        "pipedrive",
        "--config",
        &config,
        "-H",
        PIPEDRIVE_BASIC,
        &pipedrive_fixture("v2_deal_create.json"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["change"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["created", "stage_changed"]);
    assert_eq!(v["events"][1]["change"]["to"], "2");
    assert_eq!(
        v["events"][0]["delivery_id"],
        "71825ee0-0054-4267-b5fd-d28b7a414212"
    );
    // A v1 delivery (synthetic, from the documented v1 shape) of the same kind of move as the
    // v2 one gives the same change, with the referral code from the root key.
    for fixture in [
        "synthetic-v1_deal_updated_stage.json",
        "synthetic-v2_deal_stage_change.json",
    ] {
        let out = refsync(&[
            "inspect",
            "--connector",
            "pipedrive",
            "--config",
            &config,
            "-H",
            PIPEDRIVE_BASIC,
            &pipedrive_fixture(fixture),
        ]);
        assert!(
            out.status.success(),
            "{fixture}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["events"][0]["change"]["type"], "stage_changed",
            "{fixture}"
        );
        assert_eq!(v["events"][0]["change"]["to"], "3", "{fixture}");
        assert_eq!(v["events"][0]["referral_code"], "ADA-42", "{fixture}");
    }
    // Without the Basic credentials: rejected, exit 1, no secret in the reason.
    let out = refsync(&[
        "inspect",
        "--connector",
        "pipedrive",
        "--config",
        &config,
        &pipedrive_fixture("v2_deal_create.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP Basic"), "{err}");
    assert!(
        !err.contains("change-me-to-a-long-random-password"),
        "{err}"
    );
}

/// The webhook secret of examples/woocommerce/instance.toml.
const WOOCOMMERCE_SECRET: &str = "change-me-to-a-long-random-webhook-secret";

fn woocommerce_fixture(name: &str) -> std::path::PathBuf {
    root()
        .join("crates/refsync-woocommerce/tests/fixtures")
        .join(name)
}

#[test]
fn inspect_turns_real_woocommerce_orders_into_coupon_events() {
    let config = root()
        .join("examples/woocommerce/instance.toml")
        .display()
        .to_string();
    let inspect = |fixture: &str, signature: Option<String>| {
        let path = woocommerce_fixture(fixture);
        let mut args = vec![
            "inspect".to_owned(),
            "--connector".into(),
            "woocommerce".into(),
            "--config".into(),
            config.clone(),
            "-H".into(),
            "X-WC-Webhook-Topic: order.updated".into(),
        ];
        if let Some(s) = signature {
            args.push("-H".into());
            args.push(format!("X-WC-Webhook-Signature: {s}"));
        }
        args.push(path.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refsync(&args)
    };
    let sign = |fixture: &str| {
        let body = std::fs::read(woocommerce_fixture(fixture)).unwrap();
        refsync_http::signature::hmac_sha256_base64(WOOCOMMERCE_SECRET.as_bytes(), &body)
    };
    // The official "Retrieve an order" example (the body of an order.updated webhook): a
    // processing order without coupons is reported as paid.
    let fixture = "order-retrieve-docs-v3.json";
    let out = inspect(fixture, Some(sign(fixture)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["events"][0]["change"]["type"], "status_changed");
    assert_eq!(v["events"][0]["change"]["to"], "paid");
    assert_eq!(v["events"][0]["delivery_id"], "order:727:processing:");
    // An order paid with a coupon: its use qualifies (the referral found by the coupon).
    let fixture = "synthetic-order-updated-processing-with-coupon.json";
    let out = inspect(fixture, Some(sign(fixture)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"][0]["change"]["type"], "coupon_used");
    assert_eq!(v["events"][0]["change"]["code"], "ada-42");
    assert_eq!(
        v["verdicts"][0]["decisions"][0]["verdict"], "qualify",
        "{v}"
    );
    // Unsigned, or signed with another secret: rejected, exit 1, no secret in the reason.
    for signature in [None, Some("bm90IHRoZSBzaWduYXR1cmU=".to_owned())] {
        let out = inspect(fixture, signature);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("X-WC-Webhook-Signature") || err.contains("signature mismatch"),
            "{err}"
        );
        assert!(!err.contains(WOOCOMMERCE_SECRET), "{err}");
    }
}

/// The client secret of examples/hubspot/instance.toml.
const HUBSPOT_SECRET: &str = "change-me-to-the-apps-client-secret";
/// The target URL of examples/hubspot/instance.toml (`webhook_url`).
const HUBSPOT_URL: &str = "https://refsync.example.com/hooks/hubspot";

#[test]
fn inspect_verifies_hubspot_v3_signatures_on_real_deliveries() {
    let config = root()
        .join("examples/hubspot/instance.toml")
        .display()
        .to_string();
    let fixture = root()
        .join("crates/refsync-hubspot/tests/fixtures/deal_propertychange_dealstage_closedwon_djhubspot.json");
    let body = std::fs::read(&fixture).unwrap();
    // Signed as HubSpot signs v3 (by the testkit's own signer), at a fixed time.
    let ts: i64 = 1_764_072_000_000;
    let now = "2025-11-25T12:01:00Z"; // one minute later
    let sign =
        |secret: &str| refsync_testkit::hubspot::sign_v3(secret, "POST", HUBSPOT_URL, &body, ts);
    let inspect = |signature: &str, now: &str| {
        let ts_header = format!("X-HubSpot-Request-Timestamp: {ts}");
        let sig_header = format!("X-HubSpot-Signature-v3: {signature}");
        let path = fixture.display().to_string();
        refsync(&[
            "inspect",
            "--connector",
            "hubspot",
            "--config",
            &config,
            "--url",
            HUBSPOT_URL,
            "--now",
            now,
            "-H",
            &ts_header,
            "-H",
            &sig_header,
            &path,
        ])
    };
    let out = inspect(&sign(HUBSPOT_SECRET), now);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true, "{v}");
    let event = &v["events"][0];
    assert_eq!(event["object"]["kind"], "deal");
    assert_eq!(event["object"]["id"], "697680835");
    assert_eq!(event["change"]["type"], "stage_changed");
    assert_eq!(event["change"]["to"], "closedwon");
    assert_eq!(event["occurred_at"], "2019-04-24T11:36:55.815Z");
    // Another secret, or the same signature six minutes later: rejected, exit 1, and the
    // reason names neither the secret nor the expected signature.
    for (signature, at) in [
        (sign("another-secret"), now),
        (sign(HUBSPOT_SECRET), "2025-11-25T12:06:01Z"),
    ] {
        let out = inspect(&signature, at);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("v3") || err.contains("replay window"), "{err}");
        assert!(!err.contains(HUBSPOT_SECRET), "{err}");
        assert!(!err.contains(&sign(HUBSPOT_SECRET)), "{err}");
    }
}

#[test]
fn inspect_turns_the_official_zoho_notification_into_a_lead_event() {
    let config = root()
        .join("examples/zoho/instance.toml")
        .display()
        .to_string();
    let fixture =
        root().join("crates/refsync-zoho/tests/fixtures/notification_callback_leads_insert.json");
    let path = fixture.display().to_string();
    let out = refsync(&["inspect", "--connector", "zoho", "--config", &config, &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["events"][0]["object"]["kind"], "lead");
    assert_eq!(v["events"][0]["object"]["id"], "5725767000003000064");
    assert_eq!(v["events"][0]["change"]["type"], "created");
    // The same body with another token: refused, exit 1, the configured token not printed.
    let body = std::fs::read_to_string(&fixture).unwrap().replace(
        "TOKEN_FOR_VERIFICATION_OF_1000000068001",
        "forged-token-0123456789",
    );
    let forged =
        std::env::temp_dir().join(format!("refsync-zoho-forged-{}.json", std::process::id()));
    std::fs::write(&forged, body).unwrap();
    let forged_path = forged.display().to_string();
    let out = refsync(&[
        "inspect",
        "--connector",
        "zoho",
        "--config",
        &config,
        &forged_path,
    ]);
    let _ = std::fs::remove_file(&forged);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token mismatch"), "{err}");
    assert!(!err.contains("TOKEN_FOR_VERIFICATION"), "{err}");
}

#[test]
fn inspect_turns_a_real_salesforce_outbound_message_into_stage_events() {
    let config = root()
        .join("examples/salesforce/instance.toml")
        .display()
        .to_string();
    let fixture = root()
        .join("crates/refsync-salesforce/tests/fixtures/outbound-message-opportunity-sandbox-capture.xml")
        .display()
        .to_string();
    let token = "change-me-to-a-long-random-endpoint-token";
    let inspect = |url: &str| {
        refsync(&[
            "inspect",
            "--connector",
            "salesforce",
            "--config",
            &config,
            "--url",
            url,
            &fixture,
        ])
    };
    let out = inspect(&format!("/hooks/salesforce?token={token}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true, "{v}");
    let event = &v["events"][0];
    assert_eq!(event["object"]["kind"], "deal");
    assert_eq!(event["object"]["id"], "0065w000023STAmAAO");
    assert_eq!(event["change"]["type"], "stage_changed");
    assert_eq!(event["change"]["to"], "Negotiation/Review");
    assert_eq!(event["account"], "00D5w000004qGTOEA2");
    // Not won (IsWon false): no status event.
    assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
    // Without the token: refused, exit 1, the token not printed.
    let out = inspect("/hooks/salesforce");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");
    assert!(!err.contains(token), "{err}");
}
