//! Tests of the WooCommerce simulator over real HTTP (reqwest) on loopback.
//!
//! Object shapes are checked against the WooCommerce REST API docs' examples copied unchanged to
//! tests/data/woocommerce (see SOURCE.md there). Webhook receivers are plain [`Simulator`]s that
//! record every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use chrono::{Duration, Utc};
use refsync_http::signature::{hmac_sha1_base64, hmac_sha256_base64};
use refsync_testkit::sim::{RecordedRequest, SimResponse, Simulator};
use refsync_testkit::woocommerce::{NewOrder, WooSim, WooSimOptions};
use serde_json::{Value, json};

const CK: &str = "ck_5f0e1d2c3b4a59687766554433221100aabbccdd";
const CS: &str = "cs_00112233445566778899aabbccddeeff01234567";

const ORDER_FIXTURE: &str = include_str!("data/woocommerce/order-retrieve-docs-v3.json");
const COUPON_FIXTURE: &str = include_str!("data/woocommerce/coupon-retrieve-docs-v3.json");
const CUSTOMER_FIXTURE: &str = include_str!("data/woocommerce/customer-retrieve-docs-v3.json");

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Same key set at every object level; arrays of objects compare their first elements when both
/// sides have one.
fn assert_same_keys(actual: &Value, expected: &Value, path: &str) {
    assert_eq!(
        sorted_keys(actual),
        sorted_keys(expected),
        "key set differs at {path}"
    );
    for (key, exp) in expected.as_object().unwrap() {
        let act = &actual[key];
        match (act, exp) {
            (Value::Object(_), Value::Object(_)) => {
                assert_same_keys(act, exp, &format!("{path}.{key}"));
            }
            (Value::Array(a), Value::Array(e)) => {
                if let (Some(a0 @ Value::Object(_)), Some(e0 @ Value::Object(_))) =
                    (a.first(), e.first())
                {
                    assert_same_keys(a0, e0, &format!("{path}.{key}[0]"));
                }
            }
            _ => {}
        }
    }
}

// ----- HTTP helpers ----------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cred {
    Basic,
    Query,
    None,
}

struct Api {
    http: reqwest::Client,
    base: String,
    cred: Cred,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    raw: Vec<u8>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn id(&self) -> u64 {
        self.body["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no id in {}", self.body))
    }
}

impl Api {
    fn new(sim: &WooSim, cred: Cred) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: sim.base_url(),
            cred,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut url = format!("{}/wp-json/wc/v3{}", self.base, path);
        if self.cred == Cred::Query {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}consumer_key={CK}&consumer_secret={CS}");
        }
        self.send(method, &url, body).await
    }

    async fn send(&self, method: &str, url: &str, body: Option<Value>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, url);
        if self.cred == Cred::Basic {
            request = request.basic_auth(CK, Some(CS));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.bytes().await.unwrap().to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            raw,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.call("PUT", path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call("DELETE", path, None).await
    }
}

async fn start() -> (WooSim, Api) {
    start_with(WooSimOptions::new(CK, CS)).await
}

async fn start_with(opts: WooSimOptions) -> (WooSim, Api) {
    let sim = WooSim::start(opts).await.unwrap();
    let api = Api::new(&sim, Cred::Basic);
    (sim, api)
}

/// A webhook receiver recording every request and answering `status` (changeable).
struct Receiver {
    sim: Simulator,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let status = Arc::new(AtomicU16::new(status));
        let answer = Arc::clone(&status);
        let sim = Simulator::start(move |_: &RecordedRequest| {
            let code = answer.load(Ordering::SeqCst);
            SimResponse::json(code, &json!({"received": true}))
        })
        .await
        .unwrap();
        Receiver { sim, status }
    }

    fn url(&self) -> String {
        self.sim.url("/hooks/woocommerce")
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.sim.requests()
    }

    /// Requests that carry a signature (deliveries, not pings).
    fn deliveries(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.header("x-wc-webhook-signature").is_some())
            .collect()
    }
}

async fn add_webhook(api: &Api, topic: &str, url: &str, secret: &str) -> u64 {
    let answer = api
        .post(
            "/webhooks",
            json!({"name": format!("refsync {topic}"), "topic": topic, "delivery_url": url, "secret": secret}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.id()
}

async fn add_customer(api: &Api, body: Value) -> Value {
    let answer = api.post("/customers", body).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.body
}

async fn add_coupon(api: &Api, body: Value) -> Value {
    let answer = api.post("/coupons", body).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.body
}

// ----- OAuth 1.0a, signed by hand (RFC 5849 §3.4.1 with rawurlencode) ---------------------------

fn enc(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct OAuth<'a> {
    key: &'a str,
    secret: &'a str,
    method: &'a str,
    timestamp: i64,
    nonce: &'a str,
}

impl OAuth<'_> {
    fn sha1(nonce: &str) -> OAuth<'_> {
        OAuth {
            key: CK,
            secret: CS,
            method: "HMAC-SHA1",
            timestamp: Utc::now().timestamp(),
            nonce,
        }
    }

    /// The full URL with the oauth_* parameters and the signature.
    fn url(&self, http_method: &str, base: &str, path: &str, params: &[(&str, &str)]) -> String {
        let mut all: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.push(("oauth_consumer_key".into(), self.key.into()));
        all.push(("oauth_nonce".into(), self.nonce.into()));
        all.push(("oauth_signature_method".into(), self.method.into()));
        all.push(("oauth_timestamp".into(), self.timestamp.to_string()));
        all.sort();
        let normalized: Vec<String> = all
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let normalized = normalized.join("&");
        let base_string = format!(
            "{http_method}&{}&{}",
            enc(&format!("{base}{path}")),
            enc(&normalized)
        );
        let key = format!("{}&", self.secret);
        let signature = if self.method == "HMAC-SHA256" {
            hmac_sha256_base64(key.as_bytes(), base_string.as_bytes())
        } else {
            hmac_sha1_base64(key.as_bytes(), base_string.as_bytes())
        };
        format!(
            "{base}{path}?{normalized}&oauth_signature={}",
            enc(&signature)
        )
    }
}

// ----- shapes ----------------------------------------------------------------------------------

#[tokio::test]
async fn objects_have_exactly_the_fixture_keys() {
    let (sim, api) = start().await;
    let customer = add_customer(
        &api,
        json!({
            "email": "john.doe@example.com", "first_name": "John", "last_name": "Doe",
            "billing": {"first_name": "John", "city": "San Francisco", "email": "john.doe@example.com", "phone": "(555) 555-5555"},
            "shipping": {"first_name": "John", "country": "US"}
        }),
    )
    .await;
    assert_same_keys(&customer, &fixture(CUSTOMER_FIXTURE), "customer(POST)");
    let customer_id = customer["id"].as_u64().unwrap();
    let fetched = api.get(&format!("/customers/{customer_id}")).await;
    assert_same_keys(&fetched.body, &fixture(CUSTOMER_FIXTURE), "customer(GET)");

    let coupon = add_coupon(
        &api,
        json!({"code": "10off", "amount": "10", "discount_type": "percent"}),
    )
    .await;
    assert_same_keys(&coupon, &fixture(COUPON_FIXTURE), "coupon(POST)");

    let order_id = sim
        .place_order(NewOrder {
            customer_id,
            coupon_codes: vec!["10OFF".into()],
            ..NewOrder::new("john.doe@example.com")
        })
        .unwrap();
    let order = api.get(&format!("/orders/{order_id}")).await;
    assert_eq!(order.status, 200, "{}", order.body);
    assert_same_keys(&order.body, &fixture(ORDER_FIXTURE), "order");
    assert_eq!(order.body["coupon_lines"][0]["code"], "10off");
    assert_eq!(
        sorted_keys(&order.body["coupon_lines"][0]),
        ["code", "discount", "discount_tax", "id", "meta_data"]
    );

    // The handle's views are the same REST JSON.
    assert_same_keys(
        &sim.order(order_id).unwrap(),
        &fixture(ORDER_FIXTURE),
        "order()",
    );
    assert_same_keys(
        &sim.coupon_by_code("10OFF").unwrap(),
        &fixture(COUPON_FIXTURE),
        "coupon_by_code()",
    );
    assert_same_keys(
        &sim.customers_with_email("JOHN.DOE@example.com")[0],
        &fixture(CUSTOMER_FIXTURE),
        "customers_with_email()",
    );
    let state = sim.state();
    for (list, fixture_text) in [
        ("customers", CUSTOMER_FIXTURE),
        ("coupons", COUPON_FIXTURE),
        ("orders", ORDER_FIXTURE),
    ] {
        assert_eq!(state[list].as_array().unwrap().len(), 1, "{list}");
        assert_same_keys(&state[list][0], &fixture(fixture_text), list);
    }
}

#[tokio::test]
async fn webhook_bodies_have_the_fixture_keys_too() {
    let (sim, api) = start().await;
    let receiver = Receiver::start(200).await;
    add_webhook(&api, "order.created", &receiver.url(), "s3cret").await;
    add_webhook(&api, "coupon.created", &receiver.url(), "s3cret").await;
    add_webhook(&api, "customer.created", &receiver.url(), "s3cret").await;
    sim.wait_pings().await;
    add_customer(&api, json!({"email": "a@example.com"})).await;
    add_coupon(&api, json!({"code": "abc"})).await;
    sim.place_order(NewOrder::new("a@example.com")).unwrap();
    let delivered = sim.deliver().await;
    assert_eq!(delivered.len(), 3);
    for (delivery, answer) in &delivered {
        assert_eq!(answer.as_ref().unwrap().0, 200);
        let body: Value = serde_json::from_slice(&delivery.body).unwrap();
        let topic = delivery
            .request
            .headers
            .iter()
            .find(|(n, _)| n == "X-WC-Webhook-Topic")
            .map(|(_, v)| v.clone())
            .unwrap();
        let expected = match topic.as_str() {
            "order.created" => ORDER_FIXTURE,
            "coupon.created" => COUPON_FIXTURE,
            "customer.created" => CUSTOMER_FIXTURE,
            other => panic!("unexpected topic {other}"),
        };
        assert_same_keys(&body, &fixture(expected), &topic);
    }
}

// ----- auth ------------------------------------------------------------------------------------

#[tokio::test]
async fn basic_and_query_keys_work_only_over_https() {
    let (sim, api) = start().await;
    assert_eq!(api.get("/customers").await.status, 200);
    let query = Api::new(&sim, Cred::Query);
    let answer = query.get("/customers?per_page=5").await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let http = reqwest::Client::new();
    let url = format!("{}/wp-json/wc/v3/customers", sim.base_url());
    let wrong_key = http
        .get(&url)
        .basic_auth("ck_nope", Some(CS))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), 401);
    let body: Value = wrong_key.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": "woocommerce_rest_authentication_error", "message": "Consumer key is invalid.", "data": {"status": 401}})
    );
    let wrong_secret = http
        .get(&url)
        .basic_auth(CK, Some("cs_nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_secret.status(), 401);
    let body: Value = wrong_secret.json().await.unwrap();
    assert_eq!(body["code"], "woocommerce_rest_authentication_error");
    assert_eq!(body["message"], "Consumer secret is invalid.");
    let wrong_query = http
        .get(format!("{url}?consumer_key=ck_nope&consumer_secret={CS}"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_query.status(), 401);

    let none = Api::new(&sim, Cred::None);
    let answer = none.get("/customers").await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.body,
        json!({"code": "woocommerce_rest_cannot_view", "message": "Sorry, you cannot list resources.", "data": {"status": 401}})
    );
    assert_eq!(
        none.post("/coupons", json!({"code": "x"})).await.body["code"],
        "woocommerce_rest_cannot_create"
    );
    let unknown = api.get("/products").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.body,
        json!({"code": "rest_no_route", "message": "No route was found matching the URL and request method.", "data": {"status": 404}})
    );
    assert_eq!(api.post("/orders", json!({})).await.status, 404);

    // A plain-HTTP store: neither Basic nor query keys authenticate.
    let (plain, basic) = start_with(WooSimOptions {
        https: false,
        ..WooSimOptions::new(CK, CS)
    })
    .await;
    let answer = basic.get("/customers").await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.body["code"], "woocommerce_rest_cannot_view");
    let answer = Api::new(&plain, Cred::Query).get("/customers").await;
    assert_eq!(answer.status, 401, "{}", answer.body);
}

#[tokio::test]
async fn oauth1_signatures_are_verified_on_a_plain_http_store() {
    let (sim, _) = start_with(WooSimOptions {
        https: false,
        ..WooSimOptions::new(CK, CS)
    })
    .await;
    let api = Api::new(&sim, Cred::None);
    let base = sim.base_url();
    let path = "/wp-json/wc/v3/customers";

    // POST with a JSON body (not signed) and HMAC-SHA256.
    let signer = OAuth {
        method: "HMAC-SHA256",
        ..OAuth::sha1("nonce-create-1")
    };
    let url = signer.url("POST", &base, path, &[]);
    let created = api
        .send(
            "POST",
            &url,
            Some(json!({"email": "o+auth@example.com", "first_name": "Zoë"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);

    // GET with parameters that need encoding ('+', '@', non-ASCII, space, '/'), HMAC-SHA1;
    // unknown parameters are ignored by the endpoint but still signed.
    let url = OAuth::sha1("nonce-get-1").url(
        "GET",
        &base,
        path,
        &[
            ("email", "o+auth@example.com"),
            ("search", "zoë"),
            ("x_note", "a b/c~*"),
        ],
    );
    let found = api.send("GET", &url, None).await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(
        found.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        found.body
    );
    let url =
        OAuth::sha1("nonce-get-2").url("GET", &base, path, &[("email", "o+auth@example.com")]);
    let found = api.send("GET", &url, None).await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.body[0]["first_name"], "Zoë");

    // The same URL again: the nonce is spent.
    let reused = api.send("GET", &url, None).await;
    assert_eq!(reused.status, 401);
    assert_eq!(
        reused.body["message"],
        "Invalid nonce - nonce has already been used."
    );

    // A tampered parameter after signing.
    let url = OAuth::sha1("nonce-bad-sig").url("GET", &base, path, &[("per_page", "5")]);
    let tampered = api
        .send("GET", &url.replace("per_page=5", "per_page=6"), None)
        .await;
    assert_eq!(tampered.status, 401);
    assert_eq!(
        tampered.body,
        json!({"code": "woocommerce_rest_authentication_error", "message": "Invalid signature - provided signature does not match.", "data": {"status": 401}})
    );

    // The wrong secret.
    let url = OAuth {
        secret: "cs_wrong",
        ..OAuth::sha1("nonce-wrong-secret")
    }
    .url("GET", &base, path, &[]);
    assert_eq!(api.send("GET", &url, None).await.status, 401);

    // Signed over https:// while the store is http://.
    let https_base = base.replacen("http://", "https://", 1);
    let url = OAuth::sha1("nonce-scheme").url("GET", &https_base, path, &[]);
    let url = url.replacen("https://", "http://", 1);
    let answer = api.send("GET", &url, None).await;
    assert_eq!(
        answer.body["message"],
        "Invalid signature - provided signature does not match."
    );

    // A correctly signed but stale request (16 minutes old).
    let url = OAuth {
        timestamp: Utc::now().timestamp() - 16 * 60,
        ..OAuth::sha1("nonce-stale")
    }
    .url("GET", &base, path, &[]);
    let stale = api.send("GET", &url, None).await;
    assert_eq!(stale.status, 401);
    assert_eq!(stale.body["message"], "Invalid timestamp.");

    // An unknown key, an unsupported method, a missing parameter.
    let url = OAuth {
        key: "ck_unknown",
        ..OAuth::sha1("nonce-key")
    }
    .url("GET", &base, path, &[]);
    assert_eq!(
        api.send("GET", &url, None).await.body["message"],
        "Consumer key is invalid."
    );
    let url = OAuth {
        method: "PLAINTEXT",
        ..OAuth::sha1("nonce-method")
    }
    .url("GET", &base, path, &[]);
    assert_eq!(
        api.send("GET", &url, None).await.body["message"],
        "Invalid signature - signature method is invalid."
    );
    let missing = api
        .send(
            "GET",
            &format!("{base}{path}?oauth_consumer_key={CK}"),
            None,
        )
        .await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.body["code"],
        "woocommerce_rest_authentication_missing_parameter"
    );
}

// ----- customers -------------------------------------------------------------------------------

#[tokio::test]
async fn customers_create_find_duplicate_and_meta() {
    let (sim, api) = start().await;
    let anna = add_customer(
        &api,
        json!({"email": "Anna.Smith@Example.com", "first_name": "Anna", "meta_data": [{"key": "referral_code", "value": "ANNA10"}]}),
    )
    .await;
    assert_eq!(anna["username"], "anna.smith");
    assert_eq!(anna["role"], "customer");
    assert_eq!(anna["email"], "Anna.Smith@Example.com");
    assert!(anna["date_created_gmt"].as_str().unwrap().len() == 19);
    let id = anna["id"].as_u64().unwrap();
    assert_eq!(anna["meta_data"][0]["key"], "referral_code");
    let meta_id = anna["meta_data"][0]["id"].as_u64().unwrap();

    let duplicate = api
        .post("/customers", json!({"email": "anna.smith@example.COM"}))
        .await;
    assert_eq!(duplicate.status, 400);
    assert_eq!(
        duplicate.body,
        json!({"code": "registration-error-email-exists", "message": "An account is already registered with your email address. <a href=\"#\" class=\"showlogin\">Please log in.</a>", "data": {"status": 400}})
    );
    // The raw body escapes '/' as PHP does.
    assert!(String::from_utf8_lossy(&duplicate.raw).contains(r"<\/a>"));
    assert_eq!(
        api.post("/customers", json!({"first_name": "x"}))
            .await
            .body["code"],
        "rest_missing_callback_param"
    );
    assert_eq!(
        api.post("/customers", json!({"email": "not-an-email"}))
            .await
            .status,
        400
    );

    // Same local part: a suffixed username.
    let other = add_customer(&api, json!({"email": "anna.smith@example.org"})).await;
    assert!(
        other["username"]
            .as_str()
            .unwrap()
            .starts_with("anna.smith-"),
        "{other}"
    );

    let found = api.get("/customers?email=ANNA.SMITH%40example.com").await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body.as_array().unwrap().len(), 1);
    assert_eq!(found.body[0]["id"], json!(id));
    assert_eq!(found.header("x-wp-total").as_deref(), Some("1"));
    assert_eq!(
        api.get("/customers?email=nobody%40example.com").await.body,
        json!([])
    );

    // meta_data: without id replaces by key (keeps the id), with id updates that entry, new keys
    // are added, null deletes.
    let updated = api
        .put(
            &format!("/customers/{id}"),
            json!({"meta_data": [{"key": "referral_code", "value": "ANNA20"}, {"key": "campaign", "value": "spring"}]}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(
        updated.body["meta_data"],
        json!([{"id": meta_id, "key": "referral_code", "value": "ANNA20"}, {"id": meta_id + 1, "key": "campaign", "value": "spring"}])
    );
    let updated = api
        .put(
            &format!("/customers/{id}"),
            json!({"meta_data": [{"id": meta_id + 1, "key": "campaign", "value": "summer"}, {"key": "referral_code", "value": null}], "last_name": "Smith"}),
        )
        .await;
    assert_eq!(
        updated.body["meta_data"],
        json!([{"id": meta_id + 1, "key": "campaign", "value": "summer"}])
    );
    assert_eq!(updated.body["last_name"], "Smith");
    assert_eq!(
        sim.customers_with_email("anna.smith@example.com")[0]["last_name"],
        "Smith"
    );

    let missing = api.get("/customers/9999").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["code"], "woocommerce_rest_invalid_id");
    assert_eq!(
        api.put("/customers/9999", json!({"first_name": "x"}))
            .await
            .status,
        404
    );
    assert_eq!(
        api.put(
            &format!("/customers/{id}"),
            json!({"email": "anna.smith@example.org"})
        )
        .await
        .status,
        400,
        "e-mail of another customer"
    );
}

// ----- coupons ---------------------------------------------------------------------------------

#[tokio::test]
async fn coupons_are_stored_in_normal_form_and_unique() {
    let (sim, api) = start().await;
    let coupon = add_coupon(
        &api,
        json!({"code": "  Ref&amp;ANNA ", "amount": "10", "discount_type": "percent", "individual_use": true,
               "usage_limit": 3, "email_restrictions": ["Bob@Example.com"], "date_expires": "2030-01-31T23:59:59",
               "meta_data": [{"key": "referrer", "value": "anna"}]}),
    )
    .await;
    assert_eq!(coupon["code"], "ref&anna");
    assert_eq!(coupon["amount"], "10.00");
    assert_eq!(coupon["usage_limit"], 3);
    assert_eq!(coupon["usage_limit_per_user"], Value::Null);
    assert_eq!(coupon["email_restrictions"], json!(["bob@example.com"]));
    assert_eq!(coupon["date_expires"], "2030-01-31T23:59:59");
    assert_eq!(coupon["date_expires_gmt"], "2030-01-31T23:59:59");
    assert_eq!(coupon["usage_count"], 0);
    assert_eq!(coupon["used_by"], json!([]));
    let id = coupon["id"].as_u64().unwrap();

    let duplicate = api.post("/coupons", json!({"code": "REF&ANNA"})).await;
    assert_eq!(duplicate.status, 400);
    assert_eq!(
        duplicate.body,
        json!({"code": "woocommerce_rest_coupon_code_already_exists", "message": "The coupon code already exists", "data": {"status": 400}})
    );
    let bad_type = api
        .post("/coupons", json!({"code": "x1", "discount_type": "bogus"}))
        .await;
    assert_eq!(bad_type.status, 400);
    assert_eq!(bad_type.body["code"], "rest_invalid_param");
    assert_eq!(
        api.post("/coupons", json!({"amount": "5"})).await.body["code"],
        "rest_missing_callback_param"
    );

    let by_code = api.get("/coupons?code=REF%26Anna").await;
    assert_eq!(
        by_code.body.as_array().unwrap().len(),
        1,
        "{}",
        by_code.body
    );
    assert_eq!(sim.coupon_by_code("REF&amp;anna").unwrap()["id"], json!(id));
    add_coupon(&api, json!({"code": "summer-sale"})).await;
    let search = api.get("/coupons?search=SUMMER").await;
    assert_eq!(search.body.as_array().unwrap().len(), 1);
    assert_eq!(sim.coupons().len(), 2);

    let updated = api
        .put(
            &format!("/coupons/{id}"),
            json!({"amount": 12.5, "date_expires": null, "usage_limit": null}),
        )
        .await;
    assert_eq!(updated.body["amount"], "12.50");
    assert_eq!(updated.body["date_expires"], Value::Null);
    assert_eq!(updated.body["usage_limit"], Value::Null);
    assert_eq!(
        api.put(&format!("/coupons/{id}"), json!({"code": "SUMMER-SALE"}))
            .await
            .body["code"],
        "woocommerce_rest_coupon_code_already_exists"
    );

    // DELETE without force trashes (still readable by id, gone from lists and code lookups).
    let trashed = api.delete(&format!("/coupons/{id}")).await;
    assert_eq!(trashed.status, 200);
    assert_eq!(api.get(&format!("/coupons/{id}")).await.status, 200);
    assert_eq!(api.get("/coupons?code=ref%26anna").await.body, json!([]));
    assert!(sim.coupon_by_code("ref&anna").is_none());
    assert_eq!(api.delete(&format!("/coupons/{id}")).await.status, 410);
    assert_eq!(
        api.delete(&format!("/coupons/{id}?force=true"))
            .await
            .status,
        200
    );
    assert_eq!(api.get(&format!("/coupons/{id}")).await.status, 404);
}

// ----- checkout --------------------------------------------------------------------------------

#[tokio::test]
async fn place_order_validates_coupons_and_counts_usage() {
    let (sim, api) = start().await;
    let limited = add_coupon(
        &api,
        json!({"code": "ONCE", "amount": "5", "usage_limit": 1}),
    )
    .await;
    add_coupon(&api, json!({"code": "bob-only", "amount": "10", "discount_type": "percent", "email_restrictions": ["bob@example.com", "*@staff.example"]})).await;
    add_coupon(
        &api,
        json!({"code": "old", "amount": "1", "date_expires": "2020-01-01T00:00:00"}),
    )
    .await;
    let single = add_coupon(
        &api,
        json!({"code": "solo", "amount": "1", "individual_use": true}),
    )
    .await;
    let _ = single;

    let unknown = sim.place_order(NewOrder {
        coupon_codes: vec!["NOPE".into()],
        ..NewOrder::new("bob@example.com")
    });
    assert_eq!(unknown, Err("Coupon \"nope\" does not exist!".to_owned()));
    let expired = sim.place_order(NewOrder {
        coupon_codes: vec!["OLD".into()],
        ..NewOrder::new("bob@example.com")
    });
    assert_eq!(expired, Err("This coupon has expired.".to_owned()));
    let not_bob = sim.place_order(NewOrder {
        coupon_codes: vec!["Bob-Only".into()],
        ..NewOrder::new("eve@example.com")
    });
    assert!(not_bob.unwrap_err().contains("is not yours"));
    assert!(
        sim.place_order(NewOrder {
            coupon_codes: vec!["bob-only".into()],
            ..NewOrder::new("ann@STAFF.example")
        })
        .is_ok(),
        "wildcard restriction"
    );
    assert!(
        sim.place_order(NewOrder {
            coupon_codes: vec!["solo".into(), "once".into()],
            ..NewOrder::new("bob@example.com")
        })
        .unwrap_err()
        .contains("cannot be used in conjunction")
    );

    let first = sim
        .place_order(NewOrder {
            coupon_codes: vec!["once".into(), "BOB-ONLY".into()],
            total: "90.00".into(),
            ..NewOrder::new("Bob@Example.com")
        })
        .unwrap();
    let order = sim.order(first).unwrap();
    assert_eq!(order["status"], "pending");
    assert_eq!(order["date_paid"], Value::Null);
    assert_eq!(order["total"], "90.00");
    assert_eq!(order["discount_total"], "14.00");
    assert_eq!(order["coupon_lines"][0]["code"], "once");
    assert_eq!(order["coupon_lines"][0]["discount"], "5.00");
    assert_eq!(order["coupon_lines"][1]["discount"], "9.00");
    assert_ne!(
        order["coupon_lines"][0]["id"], limited["id"],
        "item id, not coupon id"
    );
    assert_eq!(order["billing"]["email"], "Bob@Example.com");
    let once = sim.coupon_by_code("once").unwrap();
    assert_eq!(once["usage_count"], 1);
    assert_eq!(once["used_by"], json!(["Bob@Example.com"]));

    let limit = sim.place_order(NewOrder {
        coupon_codes: vec!["ONCE".into()],
        ..NewOrder::new("carol@example.com")
    });
    assert_eq!(
        limit,
        Err("Coupon usage limit has been reached.".to_owned())
    );

    // Cancelling releases the use; paying sets date_paid once; refunded keeps it.
    sim.set_order_status(first, "cancelled").unwrap();
    assert_eq!(sim.coupon_by_code("once").unwrap()["usage_count"], 0);
    assert_eq!(sim.coupon_by_code("once").unwrap()["used_by"], json!([]));
    let second = sim
        .place_order(NewOrder {
            coupon_codes: vec!["ONCE".into()],
            status: "processing".into(),
            ..NewOrder::new("carol@example.com")
        })
        .unwrap();
    let paid = sim.order(second).unwrap();
    assert!(paid["date_paid_gmt"].is_string());
    sim.set_order_status(second, "completed").unwrap();
    sim.set_order_status(second, "refunded").unwrap();
    let refunded = sim.order(second).unwrap();
    assert_eq!(refunded["date_paid_gmt"], paid["date_paid_gmt"]);
    assert!(refunded["date_completed_gmt"].is_string());
    assert_eq!(sim.coupon_by_code("once").unwrap()["usage_count"], 1);

    assert!(sim.set_order_status(second, "shipped").is_err());
    assert!(sim.set_order_status(9999, "completed").is_err());
    assert!(
        sim.place_order(NewOrder {
            customer_id: 9999,
            ..NewOrder::new("x@example.com")
        })
        .is_err()
    );
}

// ----- webhooks: ping, deliveries, merging, failures ---------------------------------------------

/// On a multi-threaded runtime the ping is answered before the REST call returns, as in
/// WooCommerce: `pings()` needs no waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_active_webhook_pings_the_delivery_url() {
    let (sim, api) = start().await;
    let receiver = Receiver::start(200).await;
    let created = api
        .post(
            "/webhooks",
            json!({"name": "refsync", "topic": "order.updated", "delivery_url": receiver.url(), "secret": "top-secret"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.id();
    assert_eq!(created.body["status"], "active");
    assert_eq!(created.body["resource"], "order");
    assert_eq!(created.body["event"], "updated");
    assert_eq!(
        created.body["hooks"],
        json!(["woocommerce_update_order", "woocommerce_order_refunded"])
    );
    assert!(
        created.body.get("secret").is_none(),
        "the secret is never returned"
    );
    assert_eq!(
        sorted_keys(&created.body),
        [
            "_links",
            "date_created",
            "date_created_gmt",
            "date_modified",
            "date_modified_gmt",
            "delivery_url",
            "event",
            "hooks",
            "id",
            "name",
            "resource",
            "status",
            "topic"
        ]
    );
    assert!(
        api.get(&format!("/webhooks/{id}"))
            .await
            .body
            .get("secret")
            .is_none()
    );
    assert_eq!(sim.webhooks()[0]["secret"], "top-secret");
    assert_eq!(sim.webhooks()[0]["failure_count"], 0);

    assert_eq!(sim.pings(), vec![(id, 200)]);
    let pings = receiver.requests();
    assert_eq!(pings.len(), 1);
    let ping = &pings[0];
    assert_eq!(ping.method, "POST");
    assert_eq!(ping.path, "/hooks/woocommerce");
    assert_eq!(ping.body_text(), format!("webhook_id={id}"));
    assert_eq!(
        ping.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        ping.headers
            .iter()
            .all(|(n, _)| !n.starts_with("x-wc-webhook")),
        "unsigned"
    );

    // Paused at creation: no ping. A delivery URL answering 404: recorded, creation succeeds.
    let paused = api
        .post(
            "/webhooks",
            json!({"topic": "order.created", "delivery_url": receiver.url(), "status": "paused"}),
        )
        .await;
    assert_eq!(paused.status, 201);
    assert!(
        paused.body["name"]
            .as_str()
            .unwrap()
            .starts_with("Webhook created on ")
    );
    let missing = Receiver::start(404).await;
    let other = add_webhook(&api, "order.created", &missing.url(), "x").await;
    assert_eq!(sim.pings(), vec![(id, 200), (other, 404)]);
    assert_eq!(receiver.requests().len(), 1);

    // Activating the paused one pings it; an unreachable URL is recorded as 0.
    let paused_id = paused.id();
    let activated = api
        .put(
            &format!("/webhooks/{paused_id}"),
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(activated.status, 200, "{}", activated.body);
    assert_eq!(sim.pings().last(), Some(&(paused_id, 200)));
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dead = api
        .post(
            "/webhooks",
            json!({"topic": "order.created", "delivery_url": format!("http://127.0.0.1:{closed}/none")}),
        )
        .await;
    assert_eq!(dead.status, 201);
    assert_eq!(sim.pings().last(), Some(&(dead.id(), 0)));
    assert_eq!(
        sim.wait_pings().await.len(),
        4,
        "nothing was left in flight"
    );
}

/// The ping's receiver may call the store's API while the ping is in flight (the state is not
/// locked during the ping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_can_call_the_api_during_the_ping() {
    let (sim, api) = start().await;
    let store = sim.base_url();
    let receiver = Simulator::start(move |_: &RecordedRequest| {
        // The receiver's handler is synchronous: it hands its worker over (block_in_place, as
        // any blocking handler on a multi-threaded runtime must) and calls the store, bounded
        // by the client's timeout.
        let url = format!("{store}/wp-json/wc/v3/webhooks");
        let status = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .build()
                    .unwrap()
                    .get(url)
                    .basic_auth(CK, Some(CS))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        });
        SimResponse::json(if status == 200 { 200 } else { 500 }, &json!({}))
    })
    .await
    .unwrap();
    let id = add_webhook(&api, "order.created", &receiver.url("/hook"), "k").await;
    assert_eq!(sim.pings(), vec![(id, 200)]);
}

#[tokio::test]
async fn deliveries_are_signed_over_the_raw_php_encoded_body() {
    let (sim, api) = start().await;
    let receiver = Receiver::start(200).await;
    let secret = "s3cr3t/with&chars";
    let hook = add_webhook(&api, "order.created", &receiver.url(), secret).await;
    sim.wait_pings().await;
    let customer = add_customer(
        &api,
        json!({"email": "jose@example.com", "first_name": "José", "last_name": "Müller/Ørsted"}),
    )
    .await;
    let order_id = sim
        .place_order(NewOrder {
            customer_id: customer["id"].as_u64().unwrap(),
            ..NewOrder::new("jose@example.com")
        })
        .unwrap();

    let delivered = sim.deliver().await;
    assert_eq!(delivered.len(), 1);
    let (delivery, answer) = &delivered[0];
    assert_eq!(answer.as_ref().unwrap().0, 200);
    assert_eq!(delivery.webhook_id, hook);
    assert_eq!(delivery.request.method, "POST");
    assert_eq!(delivery.request.url, receiver.url());
    assert_eq!(delivery.request.body, delivery.body);

    let received = receiver.deliveries();
    assert_eq!(received.len(), 1);
    let req = &received[0];
    assert_eq!(req.body, delivery.body, "sent exactly as built");
    let text = req.body_text();
    assert!(text.contains(r#""first_name":"Jos\u00e9""#), "{text}");
    assert!(text.contains(r"M\u00fcller\/\u00d8rsted"), "{text}");
    assert!(text.contains(r"http:\/\/127.0.0.1:"), "{text}");
    assert!(text.is_ascii());

    let signature = req.header("x-wc-webhook-signature").unwrap();
    assert_eq!(signature, hmac_sha256_base64(secret.as_bytes(), &req.body));
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<Value>(&req.body).unwrap()).unwrap();
    assert_ne!(
        hmac_sha256_base64(secret.as_bytes(), &reserialised),
        signature,
        "a verifier that re-serialises must fail"
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.header("user-agent"),
        Some("WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)")
    );
    assert_eq!(
        req.header("x-wc-webhook-source"),
        Some("https://shop.example.com/")
    );
    assert_eq!(req.header("x-wc-webhook-topic"), Some("order.created"));
    assert_eq!(req.header("x-wc-webhook-resource"), Some("order"));
    assert_eq!(req.header("x-wc-webhook-event"), Some("created"));
    assert_eq!(
        req.header("x-wc-webhook-id"),
        Some(hook.to_string().as_str())
    );
    let delivery_id = req.header("x-wc-webhook-delivery-id").unwrap().to_owned();
    assert_eq!(delivery_id.len(), 32);
    assert!(delivery_id.bytes().all(|b| b.is_ascii_hexdigit()));
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["id"], json!(order_id));

    // A resend: same body and signature, new delivery id.
    let (status, _) = sim.send(delivery).await.unwrap();
    assert_eq!(status, 200);
    let again = receiver.deliveries();
    assert_eq!(again.len(), 2);
    assert_eq!(again[1].body, req.body);
    assert_eq!(again[1].header("x-wc-webhook-signature"), Some(signature));
    assert_ne!(
        again[1].header("x-wc-webhook-delivery-id"),
        Some(delivery_id.as_str())
    );

    // order.deleted carries only the id.
    let deleted_hook = add_webhook(&api, "order.deleted", &receiver.url(), secret).await;
    sim.wait_pings().await;
    sim.delete_order(order_id).unwrap();
    let outbox = sim.take_outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].webhook_id, deleted_hook);
    assert_eq!(
        outbox[0].body,
        format!("{{\"id\":{order_id}}}").into_bytes()
    );
    assert_eq!(sim.order(order_id).unwrap()["status"], "trash");
    assert!(sim.take_outbox().is_empty(), "taken");
}

#[tokio::test]
async fn pending_deliveries_merge_and_carry_the_state_at_send_time() {
    let (sim, api) = start().await;
    let receiver = Receiver::start(200).await;
    let updated = add_webhook(&api, "order.updated", &receiver.url(), "k").await;
    let created = add_webhook(&api, "order.created", &receiver.url(), "k").await;
    sim.wait_pings().await;
    let first = sim.place_order(NewOrder::new("a@example.com")).unwrap();
    let second = sim.place_order(NewOrder::new("b@example.com")).unwrap();
    sim.set_order_status(first, "processing").unwrap();
    sim.touch_order(first).unwrap();
    sim.set_order_status(first, "completed").unwrap();
    sim.set_order_status(second, "on-hold").unwrap();
    assert_eq!(
        sim.pending_deliveries(),
        vec![
            (created, first),
            (created, second),
            (updated, first),
            (updated, second)
        ]
    );

    let delivered = sim.deliver().await;
    assert_eq!(delivered.len(), 4);
    let bodies: Vec<(u64, Value)> = delivered
        .iter()
        .map(|(d, _)| (d.webhook_id, serde_json::from_slice(&d.body).unwrap()))
        .collect();
    // Even order.created carries the final status: the body is built at send time.
    assert_eq!(bodies[0].1["status"], "completed");
    assert_eq!(bodies[2].0, updated);
    assert_eq!(bodies[2].1["id"], json!(first));
    assert_eq!(bodies[2].1["status"], "completed");
    assert!(bodies[2].1["date_paid_gmt"].is_string());
    assert_eq!(bodies[3].1["status"], "on-hold");

    // Once taken, a new change queues again; inactive webhooks get nothing queued.
    sim.touch_order(first).unwrap();
    assert_eq!(sim.pending_deliveries(), vec![(updated, first)]);
    let paused = api
        .put(&format!("/webhooks/{updated}"), json!({"status": "paused"}))
        .await;
    assert_eq!(paused.body["status"], "paused");
    sim.touch_order(second).unwrap();
    assert_eq!(
        sim.pending_deliveries(),
        vec![(updated, first)],
        "paused: not queued"
    );
    // The delivery queued while active is still sent (the scheduled action runs regardless).
    assert_eq!(sim.deliver().await.len(), 1);
    sim.delete_webhook_as_admin(created);
    sim.place_order(NewOrder::new("c@example.com")).unwrap();
    assert!(sim.take_outbox().is_empty());
}

#[tokio::test]
async fn failing_deliveries_disable_the_webhook_and_put_active_revives_it() {
    let (sim, api) = start().await;
    let receiver = Receiver::start(200).await;
    let hook = add_webhook(&api, "order.updated", &receiver.url(), "k").await;
    sim.wait_pings().await;
    let order = sim.place_order(NewOrder::new("a@example.com")).unwrap();
    receiver.status.store(500, Ordering::SeqCst);
    let max = sim.options().max_delivery_failures;

    // failures 1..=max+1 only count; the next one (count already > max) disables.
    for attempt in 1..=max + 1 {
        sim.touch_order(order).unwrap();
        let delivered = sim.deliver().await;
        assert_eq!(delivered.len(), 1, "attempt {attempt}");
        assert_eq!(delivered[0].1.as_ref().unwrap().0, 500);
        let state = &sim.webhooks()[0];
        assert_eq!(state["status"], "active", "attempt {attempt}");
        assert_eq!(state["failure_count"], json!(attempt));
    }
    sim.touch_order(order).unwrap();
    assert_eq!(sim.deliver().await.len(), 1);
    assert_eq!(sim.webhooks()[0]["status"], "disabled");
    assert_eq!(
        api.get(&format!("/webhooks/{hook}")).await.body["status"],
        "disabled"
    );
    let listed = api.get("/webhooks?status=disabled").await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(api.get("/webhooks?status=active").await.body, json!([]));

    // Disabled: nothing more is queued or delivered.
    sim.touch_order(order).unwrap();
    assert!(sim.deliver().await.is_empty());
    assert_eq!(receiver.deliveries().len() as u32, max + 2);

    // PUT status active: re-enabled, failure count reset, pinged.
    receiver.status.store(200, Ordering::SeqCst);
    let revived = api
        .put(&format!("/webhooks/{hook}"), json!({"status": "active"}))
        .await;
    assert_eq!(revived.status, 200, "{}", revived.body);
    assert_eq!(revived.body["status"], "active");
    assert_eq!(sim.webhooks()[0]["failure_count"], 0);
    assert_eq!(sim.wait_pings().await, vec![(hook, 200), (hook, 200)]);
    sim.touch_order(order).unwrap();
    let delivered = sim.deliver().await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].1.as_ref().unwrap().0, 200);

    // A success resets the count; an unreachable URL counts as a failure.
    receiver.status.store(500, Ordering::SeqCst);
    sim.touch_order(order).unwrap();
    sim.deliver().await;
    assert_eq!(sim.webhooks()[0]["failure_count"], 1);
    receiver.status.store(302, Ordering::SeqCst);
    sim.touch_order(order).unwrap();
    sim.deliver().await;
    assert_eq!(
        sim.webhooks()[0]["failure_count"],
        0,
        "302 counts as success"
    );
    sim.disable_webhook(hook);
    assert_eq!(sim.webhooks()[0]["status"], "disabled");
}

#[tokio::test]
async fn webhook_rest_validation_and_rest_topics() {
    let (sim, api) = start().await;
    let receiver = Receiver::start(200).await;
    let bad_topic = api
        .post(
            "/webhooks",
            json!({"topic": "order.paid", "delivery_url": receiver.url()}),
        )
        .await;
    assert_eq!(bad_topic.status, 400);
    assert_eq!(bad_topic.body["code"], "rest_invalid_param");
    let missing = api
        .post("/webhooks", json!({"topic": "order.created"}))
        .await;
    assert_eq!(missing.body["code"], "rest_missing_callback_param");
    let bad_url = api
        .post(
            "/webhooks",
            json!({"topic": "order.created", "delivery_url": "ftp://x"}),
        )
        .await;
    assert_eq!(bad_url.status, 400);
    let bad_status = api
        .post(
            "/webhooks",
            json!({"topic": "order.created", "delivery_url": receiver.url(), "status": "on"}),
        )
        .await;
    assert_eq!(bad_status.body["code"], "rest_invalid_param");

    let customer_hook = add_webhook(&api, "customer.updated", &receiver.url(), "k").await;
    let coupon_hook = add_webhook(&api, "coupon.deleted", &receiver.url(), "k").await;
    sim.wait_pings().await;
    let customer = add_customer(&api, json!({"email": "c@example.com"})).await;
    let coupon = add_coupon(&api, json!({"code": "gone"})).await;
    assert!(
        sim.take_outbox().is_empty(),
        "created topics have no webhook"
    );
    let customer_id = customer["id"].as_u64().unwrap();
    api.put(
        &format!("/customers/{customer_id}"),
        json!({"first_name": "Cee"}),
    )
    .await;
    api.delete(&format!("/coupons/{}?force=true", coupon["id"]))
        .await;
    let outbox = sim.take_outbox();
    assert_eq!(outbox.len(), 2);
    assert_eq!(outbox[0].webhook_id, customer_hook);
    let body: Value = serde_json::from_slice(&outbox[0].body).unwrap();
    assert_eq!(body["first_name"], "Cee");
    assert_eq!(outbox[1].webhook_id, coupon_hook);
    assert_eq!(
        outbox[1].body,
        format!("{{\"id\":{}}}", coupon["id"]).into_bytes()
    );

    let no_force = api.delete(&format!("/webhooks/{customer_hook}")).await;
    assert_eq!(no_force.status, 501);
    assert_eq!(
        no_force.body["code"],
        "woocommerce_rest_trash_not_supported"
    );
    assert_eq!(
        api.delete(&format!("/webhooks/{customer_hook}?force=true"))
            .await
            .status,
        200
    );
    assert_eq!(
        api.get(&format!("/webhooks/{customer_hook}")).await.status,
        400
    );
    assert_eq!(api.get("/webhooks").await.body.as_array().unwrap().len(), 1);
    let renamed = api
        .put(
            &format!("/webhooks/{coupon_hook}"),
            json!({"name": "renamed", "secret": "new", "topic": "coupon.updated"}),
        )
        .await;
    assert_eq!(renamed.body["name"], "renamed");
    assert_eq!(renamed.body["topic"], "coupon.updated");
    assert_eq!(sim.webhooks()[0]["secret"], "new");
    assert_eq!(
        sim.wait_pings().await.len(),
        2,
        "a PUT that keeps it active does not ping"
    );
}

// ----- orders list -----------------------------------------------------------------------------

#[tokio::test]
async fn orders_modified_after_filter_and_pagination() {
    let (sim, api) = start().await;
    let now = Utc::now();
    let mut ids = Vec::new();
    for i in 0..12i64 {
        let id = sim
            .place_order(NewOrder::new(&format!("o{i}@example.com")))
            .unwrap();
        // Spread the modification times over the past 12 hours, oldest first.
        sim.set_order_modified(id, now - Duration::hours(12 - i))
            .unwrap();
        ids.push(id);
    }
    let since = (now - Duration::hours(7) - Duration::minutes(30)).format("%Y-%m-%dT%H:%M:%S");
    let first = api
        .get(&format!(
            "/orders?modified_after={since}&orderby=modified&order=asc&per_page=3"
        ))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-wp-total").as_deref(), Some("7"));
    assert_eq!(first.header("x-wp-totalpages").as_deref(), Some("3"));
    let page_ids = |a: &Answer| -> Vec<u64> {
        a.body
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(page_ids(&first), ids[5..8].to_vec());

    // Follow the Link header (bounded).
    let mut seen = page_ids(&first);
    let mut link = first.header("link");
    for _ in 0..5 {
        let Some(header) = link.take() else { break };
        let next = header
            .split(", ")
            .find(|l| l.ends_with("rel=\"next\""))
            .map(|l| {
                l.trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_owned()
            });
        let Some(next) = next else { break };
        let answer = api.send("GET", &next, None).await;
        assert_eq!(answer.status, 200);
        seen.extend(page_ids(&answer));
        link = answer.header("link");
    }
    assert_eq!(seen, ids[5..].to_vec());

    // An offset in the date, default ordering (date desc), status filter.
    let utc_plus_two = (now - Duration::hours(7) - Duration::minutes(30) + Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:%S+02:00");
    let offset = api
        .get(&format!(
            "/orders?modified_after={}&per_page=100",
            utc_plus_two.to_string().replace('+', "%2B")
        ))
        .await;
    assert_eq!(offset.header("x-wp-total").as_deref(), Some("7"));
    let all = api.get("/orders?per_page=100").await;
    let mut desc = ids.clone();
    desc.reverse();
    assert_eq!(page_ids(&all), desc);
    sim.set_order_status(ids[0], "completed").unwrap();
    let completed = api.get("/orders?status=completed").await;
    assert_eq!(page_ids(&completed), vec![ids[0]]);
    assert_eq!(completed.header("link"), None);
    sim.delete_order(ids[1]).unwrap();
    assert_eq!(
        api.get("/orders").await.header("x-wp-total").as_deref(),
        Some("11")
    );
    assert_eq!(
        page_ids(&api.get("/orders?status=trash").await),
        vec![ids[1]]
    );

    // Touching moves date_modified to now: it shows up after the cut-off.
    sim.touch_order(ids[0]).unwrap();
    let touched = api
        .get(&format!("/orders?modified_after={since}&per_page=100"))
        .await;
    assert_eq!(touched.header("x-wp-total").as_deref(), Some("8"));

    let too_many = api.get("/orders?per_page=101").await;
    assert_eq!(too_many.status, 400);
    assert_eq!(too_many.body["code"], "rest_invalid_param");
    assert_eq!(api.get("/orders?page=0").await.status, 400);
    assert_eq!(
        api.get("/orders?modified_after=yesterday").await.status,
        400
    );
    assert_eq!(api.get("/orders?orderby=total").await.status, 400);
    let page_two = api.get("/orders?per_page=10&page=2").await;
    assert_eq!(page_two.body.as_array().unwrap().len(), 1);
    assert!(page_two.header("link").unwrap().contains("rel=\"prev\""));
    let missing = api.get("/orders/99999").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body["code"],
        "woocommerce_rest_shop_order_invalid_id"
    );
}

#[tokio::test]
async fn the_simulator_keeps_the_request_log_and_faults() {
    let (sim, api) = start().await;
    sim.simulator().inject(
        refsync_testkit::sim::FaultRule::new(refsync_testkit::sim::Fault::ServerError {
            status: 503,
        })
        .on("GET", "/wp-json/wc/v3/orders"),
    );
    assert_eq!(api.get("/orders").await.status, 503);
    assert_eq!(api.get("/orders").await.status, 200);
    assert_eq!(
        sim.simulator()
            .requests_to("GET", "/wp-json/wc/v3/orders")
            .len(),
        2
    );
    let plain = sim.into_simulator();
    assert!(plain.base_url().starts_with("http://127.0.0.1:"));
}
