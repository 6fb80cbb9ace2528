//! The benchmark's deliveries: signed, unique webhooks in the shapes Pipedrive, HubSpot and
//! WooCommerce send, and the payload folder format the load generator reads.
//!
//! Every delivery starts from one of the connectors' public fixtures (embedded unchanged with
//! `include_str!`); the generator only changes the ids and timestamps that make each delivery
//! unique (so none is deduplicated) and signs it the way the vendor does:
//!
//! - Pipedrive webhooks v2 (`v2_deal_change_custom_field.json`): HTTP Basic auth;
//! - HubSpot (`docs_example_batch_contact_propertychange_and_creation.json`, 2 events): the v3
//!   signature (HMAC-SHA256 of method + URL + body + timestamp, base64) over `webhook_url`;
//! - WooCommerce (`synthetic-order-updated-processing-with-coupon.json`, `order.updated`):
//!   base64 HMAC-SHA256 of the body in `X-WC-Webhook-Signature`.
//!
//! ## Payload folders
//!
//! A folder of `.http` files, read in name order. Each file holds one or more requests
//! separated by a line starting with `###` (the format of common HTTP client plugins):
//!
//! ```text
//! POST /hooks/pipedrive
//! Content-Type: application/json
//! Authorization: Basic cmVmc3luYzpzZWNyZXQ=
//!
//! {"data": …}
//! ###
//! POST /hooks/hubspot
//! …
//! ```
//!
//! The request line's target is a path (joined to the load generator's `--url`) or a full
//! URL. Any other file in the folder (say `order.json`) is one request: `POST` to `--url`
//! itself, its bytes as the body, `Content-Type` from the extension. So the same load can be
//! pointed at another tool with that tool's own payloads.

use std::path::Path;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// One HTTP request of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `POST`, usually.
    pub method: String,
    /// A path (`/hooks/pipedrive`, joined to the base URL), a full URL, or empty (the base URL).
    pub target: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

/// The vendors whose deliveries the ingest benchmark mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Pipedrive webhooks v2, Basic auth.
    Pipedrive,
    /// HubSpot webhooks, v3 signature.
    Hubspot,
    /// WooCommerce webhooks, body HMAC.
    Woocommerce,
}

impl Vendor {
    /// Every vendor of the mix, in mix order.
    pub const ALL: [Vendor; 3] = [Vendor::Pipedrive, Vendor::Hubspot, Vendor::Woocommerce];

    /// The instance (and connector) name in the benchmark's config.
    pub fn instance(self) -> &'static str {
        match self {
            Vendor::Pipedrive => "pipedrive",
            Vendor::Hubspot => "hubspot",
            Vendor::Woocommerce => "woocommerce",
        }
    }
}

/// The benchmark's webhook credentials: the same values go into the served config
/// ([`instances_toml`]) and into the signatures.
pub mod secrets {
    /// Pipedrive Basic auth user.
    pub const PIPEDRIVE_USER: &str = "refsync-bench";
    /// Pipedrive Basic auth password.
    pub const PIPEDRIVE_PASSWORD: &str = "bench-pipedrive-webhook-password-0123456789";
    /// HubSpot app client secret (v3 signatures).
    pub const HUBSPOT_CLIENT_SECRET: &str = "bench-hubspot-client-secret-0123456789abcdef";
    /// The URL HubSpot signs (as behind a reverse proxy: the served port does not matter).
    pub const HUBSPOT_WEBHOOK_URL: &str = "https://refsync.example.com/hooks/hubspot";
    /// WooCommerce webhook secret.
    pub const WOO_WEBHOOK_SECRET: &str = "bench-woocommerce-webhook-secret-0123456789";
    /// The Pipedrive custom field holding the referral code.
    pub const PIPEDRIVE_CODE_FIELD: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f001234567";
}

const PIPEDRIVE_CHANGE: &str =
    include_str!("../../refsync-pipedrive/tests/fixtures/v2_deal_change_custom_field.json");
const PIPEDRIVE_WON: &str =
    include_str!("../../refsync-pipedrive/tests/fixtures/synthetic-v2_deal_won.json");
const HUBSPOT_BATCH: &str = include_str!(
    "../../refsync-hubspot/tests/fixtures/docs_example_batch_contact_propertychange_and_creation.json"
);
const WOO_ORDER: &str = include_str!(
    "../../refsync-woocommerce/tests/fixtures/synthetic-order-updated-processing-with-coupon.json"
);

/// The parsed templates (parsed once per generator).
#[derive(Debug, Clone)]
pub struct Templates {
    pipedrive_change: Value,
    pipedrive_won: Value,
    hubspot: Value,
    woo: Value,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

fn parse(name: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("embedded fixture {name}: {e}"))
}

impl Templates {
    /// Parses the embedded fixtures.
    pub fn new() -> Self {
        Templates {
            pipedrive_change: parse("v2_deal_change_custom_field", PIPEDRIVE_CHANGE),
            pipedrive_won: parse("synthetic-v2_deal_won", PIPEDRIVE_WON),
            hubspot: parse("docs_example_batch_contact…", HUBSPOT_BATCH),
            woo: parse("synthetic-order-updated-processing-with-coupon", WOO_ORDER),
        }
    }

    /// Delivery number `seq` of the mix (Pipedrive, HubSpot, WooCommerce in turn), unique
    /// within `run` (a per-run number that keeps runs apart too) and signed for `now_ms`
    /// (HubSpot's signed timestamp: it must be within 5 minutes of the server's clock).
    pub fn mixed(&self, run: u64, seq: u64, now_ms: i64) -> Request {
        let vendor = Vendor::ALL[usize::try_from(seq % 3).unwrap_or(0)];
        self.delivery(vendor, run, seq, now_ms)
    }

    /// One delivery of `vendor`; see [`mixed`](Self::mixed).
    pub fn delivery(&self, vendor: Vendor, run: u64, seq: u64, now_ms: i64) -> Request {
        // A different object per delivery: ids stay far apart per run.
        let id = run * 10_000_000 + seq + 1;
        match vendor {
            Vendor::Pipedrive => {
                let mut v = self.pipedrive_change.clone();
                v["data"]["id"] = json!(id);
                v["meta"]["entity_id"] = json!(id.to_string());
                v["meta"]["id"] = json!(uuid_like(run, seq));
                pipedrive_request(&v)
            }
            Vendor::Hubspot => {
                let mut v = self.hubspot.clone();
                if let Some(events) = v.as_array_mut() {
                    for (k, e) in (0u64..).zip(events.iter_mut()) {
                        e["objectId"] = json!(id * 2 + k);
                        e["eventId"] = json!(id * 2 + k);
                        e["occurredAt"] = json!(now_ms);
                    }
                }
                hubspot_request(&v, now_ms)
            }
            Vendor::Woocommerce => {
                let mut v = self.woo.clone();
                v["id"] = json!(id);
                v["order_key"] = json!(format!("wc_order_bench{id}"));
                woo_request(&v)
            }
        }
    }

    /// A Pipedrive "deal won" carrying `code` in the referral-code field: one qualification.
    pub fn pipedrive_won(&self, run: u64, seq: u64, code: &str) -> Request {
        let id = run * 10_000_000 + seq + 1;
        let mut v = self.pipedrive_won.clone();
        v["data"]["id"] = json!(id);
        v["data"]["custom_fields"][secrets::PIPEDRIVE_CODE_FIELD]["value"] = json!(code);
        v["meta"]["entity_id"] = json!(id.to_string());
        v["meta"]["id"] = json!(uuid_like(run, seq));
        pipedrive_request(&v)
    }
}

/// A UUID-shaped unique id (Pipedrive's `meta.id` is a UUID).
fn uuid_like(run: u64, seq: u64) -> String {
    let hi = run & 0xffff_ffff;
    format!(
        "{hi:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (seq >> 48) & 0xffff,
        (seq >> 36) & 0xfff,
        (seq >> 24) & 0xfff,
        seq & 0xff_ffff_ffff
    )
}

fn to_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn pipedrive_request(v: &Value) -> Request {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        secrets::PIPEDRIVE_USER,
        secrets::PIPEDRIVE_PASSWORD
    ));
    Request {
        method: "POST".into(),
        target: "/hooks/pipedrive".into(),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Authorization".into(), format!("Basic {basic}")),
        ],
        body: to_body(v),
    }
}

fn hmac_base64(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn hubspot_request(v: &Value, now_ms: i64) -> Request {
    let body = to_body(v);
    let ts = now_ms.to_string();
    let sig = hmac_base64(
        secrets::HUBSPOT_CLIENT_SECRET,
        &[
            b"POST",
            secrets::HUBSPOT_WEBHOOK_URL.as_bytes(),
            &body,
            ts.as_bytes(),
        ],
    );
    Request {
        method: "POST".into(),
        target: "/hooks/hubspot".into(),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-HubSpot-Signature-v3".into(), sig),
            ("X-HubSpot-Request-Timestamp".into(), ts),
        ],
        body,
    }
}

fn woo_request(v: &Value) -> Request {
    let body = to_body(v);
    let sig = hmac_base64(secrets::WOO_WEBHOOK_SECRET, &[&body]);
    Request {
        method: "POST".into(),
        target: "/hooks/woocommerce".into(),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-WC-Webhook-Topic".into(), "order.updated".into()),
            ("X-WC-Webhook-Resource".into(), "order".into()),
            ("X-WC-Webhook-Event".into(), "updated".into()),
            (
                "X-WC-Webhook-Source".into(),
                "https://shop.example.com/".into(),
            ),
            ("X-WC-Webhook-ID".into(), "27".into()),
            ("X-WC-Webhook-Signature".into(), sig),
        ],
        body,
    }
}

/// The `[[instances]]` of the three connectors, with the credentials of [`secrets`]; the
/// CRM APIs (not called by these deliveries' processing) point at `crm_base`.
pub fn instances_toml(campaign: &str, crm_base: &str) -> String {
    let pipedrive = pipedrive_instance_toml(campaign, crm_base);
    format!(
        r#"{pipedrive}
[[instances]]
name = "hubspot"
connector = "hubspot"
campaign = "{campaign}"
[instances.settings]
auth = {{ type = "private_app", token = "bench-hubspot-token" }}
base_url = "{crm_base}"
client_secret = "{hs_secret}"
signature_versions = ["v3"]
webhook_url = "{hs_url}"
referral_code_property = "referral_code"
[[instances.rules]]
rule = "deal_won"

[[instances]]
name = "woocommerce"
connector = "woocommerce"
campaign = "{campaign}"
[instances.settings]
store_url = "{crm_base}"
consumer_key = "ck_bench"
consumer_secret = "cs_bench"
webhook_secret = "{woo_secret}"
paid_statuses = ["completed"]
referral_code_meta_key = "referral_code"
[[instances.rules]]
rule = "coupon_used"
"#,
        hs_secret = secrets::HUBSPOT_CLIENT_SECRET,
        hs_url = secrets::HUBSPOT_WEBHOOK_URL,
        woo_secret = secrets::WOO_WEBHOOK_SECRET,
    )
}

/// The Pipedrive `[[instances]]` (rule `deal_won`, referral code in
/// [`secrets::PIPEDRIVE_CODE_FIELD`]) with the credentials of [`secrets`].
pub fn pipedrive_instance_toml(campaign: &str, crm_base: &str) -> String {
    format!(
        r#"[[instances]]
name = "pipedrive"
connector = "pipedrive"
campaign = "{campaign}"
[instances.settings]
auth = {{ type = "api_token", token = "bench-pipedrive-api-token" }}
base_url = "{crm_base}"
webhook_user = "{user}"
webhook_password = "{password}"
company_id = "8087566"
referral_code_field = "{field}"
[[instances.rules]]
rule = "deal_won"
"#,
        user = secrets::PIPEDRIVE_USER,
        password = secrets::PIPEDRIVE_PASSWORD,
        field = secrets::PIPEDRIVE_CODE_FIELD,
    )
}

// ---- payload folders ----------------------------------------------------------------------

/// Writes `requests` as `.http` files of at most `per_file` requests each
/// (`0000.http`, `0001.http`…).
///
/// # Errors
/// I/O errors, with the path.
pub fn write_folder(dir: &Path, requests: &[Request], per_file: usize) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (n, chunk) in requests.chunks(per_file.max(1)).enumerate() {
        let mut out = Vec::new();
        for (k, r) in chunk.iter().enumerate() {
            if k > 0 {
                out.extend_from_slice(b"\n###\n");
            }
            out.extend_from_slice(format!("{} {}\n", r.method, r.target).as_bytes());
            for (name, value) in &r.headers {
                out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
            }
            out.push(b'\n');
            out.extend_from_slice(&r.body);
        }
        let path = dir.join(format!("{n:04}.http"));
        std::fs::write(&path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Reads a payload folder (see the module docs), files in name order.
///
/// # Errors
/// An unreadable folder or file, or a malformed `.http` request, with the file name.
pub fn read_folder(dir: &Path) -> Result<Vec<Request>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the payload folder {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if path.extension().is_some_and(|e| e == "http") {
            let parsed = parse_http_file(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            out.extend(parsed);
        } else {
            let content_type = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => "application/json",
                Some("xml") => "text/xml; charset=utf-8",
                Some("txt") => "text/plain; charset=utf-8",
                Some("form") => "application/x-www-form-urlencoded",
                _ => "application/octet-stream",
            };
            out.push(Request {
                method: "POST".into(),
                target: String::new(),
                headers: vec![("Content-Type".into(), content_type.into())],
                body: bytes,
            });
        }
    }
    Ok(out)
}

/// Parses the requests of one `.http` file.
///
/// # Errors
/// A request without a request line, or a header line without `:`.
pub fn parse_http_file(bytes: &[u8]) -> Result<Vec<Request>, String> {
    let mut out = Vec::new();
    for (n, chunk) in split_requests(bytes).into_iter().enumerate() {
        let chunk = trim_leading_blank_lines(chunk);
        if chunk.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(parse_one(chunk).map_err(|e| format!("request {}: {e}", n + 1))?);
    }
    Ok(out)
}

/// Splits on lines starting with `###`; the newline before a separator belongs to it.
fn split_requests(bytes: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    while line_start <= bytes.len() {
        let line_end = bytes[line_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| line_start + p);
        if bytes[line_start..line_end].starts_with(b"###") {
            let end = line_start.saturating_sub(1).max(start);
            parts.push(&bytes[start..end]);
            start = (line_end + 1).min(bytes.len());
        }
        line_start = line_end + 1;
    }
    parts.push(&bytes[start.min(bytes.len())..]);
    parts
}

fn trim_leading_blank_lines(mut b: &[u8]) -> &[u8] {
    loop {
        let end = b.iter().position(|&c| c == b'\n');
        match end {
            Some(e) if b[..e].iter().all(u8::is_ascii_whitespace) => b = &b[e + 1..],
            _ => return b,
        }
    }
}

fn parse_one(chunk: &[u8]) -> Result<Request, String> {
    let mut lines_end = 0;
    let mut head_lines = Vec::new();
    let mut rest = chunk;
    loop {
        let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
            // No blank line: everything is head, no body.
            head_lines.push(rest);
            lines_end = chunk.len();
            break;
        };
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        lines_end += nl + 1;
        rest = &rest[nl + 1..];
        if line.is_empty() {
            break;
        }
        head_lines.push(line);
    }
    let body = chunk[lines_end.min(chunk.len())..].to_vec();
    let mut lines = head_lines.into_iter();
    let request_line = lines
        .next()
        .map(|l| String::from_utf8_lossy(l).trim().to_owned())
        .filter(|l| !l.is_empty())
        .ok_or("no request line (`POST /path`)")?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("POST").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    for line in lines {
        let line = String::from_utf8_lossy(line);
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header line without `:`: {line:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Request {
        method,
        target,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_files_round_trip_with_separators_and_bodies_that_contain_newlines() {
        let t = Templates::new();
        let mut with_newlines: Vec<Request> =
            (0..7).map(|i| t.mixed(3, i, 1_700_000_000_000)).collect();
        with_newlines[0].body = b"{\n  \"a\": 1\n}\n".to_vec();
        let dir = tempfile::tempdir().expect("tempdir");
        write_folder(dir.path(), &with_newlines, 3).expect("write");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 3);
        assert_eq!(read_folder(dir.path()).expect("read"), with_newlines);
    }

    #[test]
    fn plain_files_are_bodies_posted_to_the_base_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.json"), b"{\"x\":1}").expect("write");
        let got = read_folder(dir.path()).expect("read");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].target, "");
        assert_eq!(got[0].body, b"{\"x\":1}");
        assert_eq!(
            got[0].headers,
            vec![("Content-Type".to_owned(), "application/json".to_owned())]
        );
    }

    #[test]
    fn a_header_without_colon_is_an_error_naming_the_request() {
        let err = parse_http_file(b"POST /a\nbad header\n\n{}").expect_err("malformed");
        assert!(
            err.contains("request 1") && err.contains("bad header"),
            "{err}"
        );
    }

    #[test]
    fn every_delivery_of_a_run_is_unique_and_runs_do_not_collide() {
        let t = Templates::new();
        let mut bodies = std::collections::HashSet::new();
        for run in 1..3 {
            for i in 0..300 {
                assert!(bodies.insert(t.mixed(run, i, 1).body), "run {run} seq {i}");
            }
        }
    }
}
