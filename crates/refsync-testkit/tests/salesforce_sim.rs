//! Tests of the Salesforce simulator over real HTTP (reqwest) on loopback.
//!
//! There is no Salesforce OpenAPI description in the workspace, so instead of a spec check
//! every REST answer goes through [`check_shape`]: the shapes the REST API Developer Guide
//! documents for each resource (save results `{id, success, errors}` (+ `created` for upserts),
//! error arrays `[{message, errorCode, fields?}]`, `300` URL lists, sObject Collections results
//! with `{statusCode, message, fields}` errors, query results `{totalSize, done, records}` with
//! `attributes {type, url}`, `/limits`), and every REST answer but an unauthenticated `401`
//! must carry `Sforce-Limit-Info: api-usage=N/M`. Token answers are checked key for key.
//! Outbound messages are parsed with roxmltree and compared with the captured message in
//! `tests/data/salesforce`; conversion results with the CDC conversion fixtures there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use refsync_testkit::salesforce::{
    ACK_RESPONSE, API_VERSION, JWT_CLOCK_SKEW, JWT_MAX_LIFETIME, MAX_NOTIFICATIONS_PER_MESSAGE,
    SalesforceSim, SalesforceSimOptions, TEST_PRIVATE_KEY_PEM, TEST_PUBLIC_KEY_PEM, is_ack,
    sign_jwt,
};
use refsync_testkit::sim::{RecordedRequest, SimResponse, Simulator};
use serde_json::{Map, Value, json};
use sha2::Sha256;

const CLIENT_ID: &str = "3MVG9simClientId.refsync";
const CLIENT_SECRET: &str = "sim-consumer-secret-0123456789";
const REFRESH: &str = "5Aep861sim.refresh.token";
const JWT_USER: &str = "integration@refsync-sim.example";
const ORG: &str = "00D5w000004qGTOEA2";

const OTHER_APP_KEY: &str = include_str!("data/salesforce/other-app-private-key.pem");
const OM_FIXTURE: &str =
    include_str!("data/salesforce/outbound-message-opportunity-sandbox-capture.xml");
const CDC_CONTACT: &str =
    include_str!("data/salesforce/cdc-pubsub-lead-conversion-2-contact-create.json");
const CDC_OPPORTUNITY: &str =
    include_str!("data/salesforce/cdc-pubsub-lead-conversion-3-opportunity-create.json");
const CDC_LEAD: &str =
    include_str!("data/salesforce/cdc-pubsub-lead-conversion-4-lead-update-converted.json");

const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
const SOBJECT_NS: &str = "urn:sobject.enterprise.soap.sforce.com";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

fn v(path: &str) -> String {
    format!("/services/data/v{API_VERSION}{path}")
}

// ----- documented shapes -------------------------------------------------------------------------

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn is_id18(v: &Value, prefix: &str) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 18 && s.starts_with(prefix) && s.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// `[{message, errorCode, fields?}]` (REST API guide, "Status Codes and Error Responses").
fn check_error_array(body: &Value) -> Result<(), String> {
    let items = body.as_array().ok_or("error answer is not an array")?;
    if items.is_empty() {
        return Err("empty error array".into());
    }
    for item in items {
        let k = keys(item);
        let allowed = ["errorCode", "fields", "message"];
        if !k.iter().all(|k| allowed.contains(&k.as_str()))
            || !item["message"].is_string()
            || !item["errorCode"].is_string()
        {
            return Err(format!("bad error item {item}"));
        }
        if let Some(fields) = item.get("fields")
            && !fields
                .as_array()
                .is_some_and(|f| f.iter().all(Value::is_string))
        {
            return Err(format!("bad fields in {item}"));
        }
    }
    Ok(())
}

/// `{id, success: true, errors: []}` (+ `created` for upserts).
fn check_save_result(body: &Value, upsert: bool) -> Result<(), String> {
    let mut expected = vec!["errors", "id", "success"];
    if upsert {
        expected.insert(0, "created");
    }
    if keys(body) != expected
        || body["success"] != true
        || body["errors"] != json!([])
        || body["id"].as_str().is_none_or(|s| s.len() != 18)
        || (upsert && !body["created"].is_boolean())
    {
        return Err(format!("bad save result {body}"));
    }
    Ok(())
}

/// An sObject Collections result item.
fn check_collection_item(item: &Value, upsert: bool) -> Result<(), String> {
    if item["success"] == true {
        return check_save_result(item, upsert && item.get("created").is_some());
    }
    if keys(item) != ["errors", "success"] || item["success"] != false {
        return Err(format!("bad failed item {item}"));
    }
    let errors = item["errors"].as_array().ok_or("errors not an array")?;
    if errors.is_empty() {
        return Err("a failed item without errors".into());
    }
    for e in errors {
        if keys(e) != ["fields", "message", "statusCode"]
            || !e["fields"].is_array()
            || !e["statusCode"].is_string()
        {
            return Err(format!("bad collection error {e}"));
        }
    }
    Ok(())
}

/// `attributes {type, url}` of a record.
fn check_attributes(record: &Value) -> Result<(), String> {
    let attributes = &record["attributes"];
    let (Some(t), Some(url)) = (attributes["type"].as_str(), attributes["url"].as_str()) else {
        return Err(format!("bad attributes in {record}"));
    };
    if keys(attributes) != ["type", "url"] || !url.starts_with(&v(&format!("/sobjects/{t}/"))) {
        return Err(format!("bad attributes in {record}"));
    }
    Ok(())
}

/// The shape Salesforce documents for this resource and status.
fn check_shape(method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
    let rest = path
        .split('?')
        .next()
        .unwrap_or(path)
        .trim_start_matches(&v("/"));
    let segments: Vec<&str> = rest.split('/').collect();
    match status {
        204 => (body.is_null())
            .then_some(())
            .ok_or("204 with a body".into()),
        300 => {
            let items = body.as_array().ok_or("300 is not an array")?;
            if items.len() < 2
                || !items
                    .iter()
                    .all(|u| u.as_str().is_some_and(|u| u.starts_with(&v("/sobjects/"))))
            {
                return Err(format!("bad 300 {body}"));
            }
            Ok(())
        }
        400..=599 => check_error_array(body),
        _ => match (method, segments.as_slice()) {
            ("POST", ["sobjects", _]) => check_save_result(body, false),
            ("PATCH", ["sobjects", _, _, _]) => check_save_result(body, true),
            ("GET", ["sobjects", _, _] | ["sobjects", _, _, _]) => check_attributes(body),
            ("POST", ["composite", "sobjects"]) | ("PATCH", ["composite", "sobjects", _, _]) => {
                body.as_array()
                    .ok_or("collection answer is not an array")?
                    .iter()
                    .try_for_each(|i| check_collection_item(i, method == "PATCH"))
            }
            ("GET", ["query"]) => {
                if keys(body) != ["done", "records", "totalSize"]
                    || body["done"] != true
                    || body["totalSize"].as_u64()
                        != body["records"].as_array().map(|r| r.len() as u64)
                {
                    return Err(format!("bad query result {body}"));
                }
                body["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .try_for_each(check_attributes)
            }
            ("GET", ["limits"]) => {
                let daily = &body["DailyApiRequests"];
                (keys(daily) == ["Max", "Remaining"]
                    && daily["Max"].is_u64()
                    && daily["Remaining"].is_u64())
                .then_some(())
                .ok_or(format!("bad limits {body}"))
            }
            _ => Ok(()),
        },
    }
}

// ----- clients -----------------------------------------------------------------------------------

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn error_code(&self) -> &str {
        self.body[0]["errorCode"].as_str().unwrap_or("")
    }

    fn id(&self) -> String {
        self.body["id"].as_str().expect("an id").to_owned()
    }
}

/// A REST client that checks every answer's shape and limit header.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(m, format!("{}{}", self.base, path))
            .header("Authorization", format!("Bearer {}", self.token));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        if let Err(e) = check_shape(method, path, status, &body) {
            panic!("{method} {path} → {status}: {e}\n{body:#}");
        }
        let limit = headers
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok());
        if status == 401 {
            assert!(limit.is_none(), "a 401 names no org usage");
        } else {
            let limit = limit.unwrap_or_else(|| panic!("{method} {path}: no Sforce-Limit-Info"));
            let (used, allocation) = limit
                .strip_prefix("api-usage=")
                .and_then(|u| u.split_once('/'))
                .unwrap_or_else(|| panic!("bad Sforce-Limit-Info {limit}"));
            assert!(used.parse::<u64>().is_ok() && allocation.parse::<u64>().is_ok());
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call("PATCH", path, Some(body)).await
    }

    async fn query(&self, soql: &str) -> Answer {
        let encoded: String = form(&[("q", soql)]).trim_start_matches("q=").to_owned();
        self.get(&v(&format!("/query?q={encoded}"))).await
    }
}

/// `application/x-www-form-urlencoded` text of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn token_call(sim: &SalesforceSim, pairs: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(sim.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(
        response.headers().get("sforce-limit-info").is_none(),
        "the token endpoint is not counted"
    );
    (status, response.json().await.unwrap())
}

async fn refresh(sim: &SalesforceSim, refresh_token: &str) -> (u16, Value) {
    token_call(
        sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

async fn jwt_grant(sim: &SalesforceSim, assertion: &str) -> (u16, Value) {
    token_call(
        sim,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ],
    )
    .await
}

/// A client with a fresh session (as a connector gets after a refresh).
async fn authorized(sim: &SalesforceSim) -> Api {
    let (status, answer) = refresh(sim, REFRESH).await;
    assert_eq!(status, 200, "{answer}");
    Api {
        http: reqwest::Client::new(),
        base: answer["instance_url"].as_str().unwrap().to_owned(),
        token: answer["access_token"].as_str().unwrap().to_owned(),
    }
}

fn options() -> SalesforceSimOptions {
    SalesforceSimOptions::new(CLIENT_ID, CLIENT_SECRET, REFRESH)
}

async fn start_with(opts: SalesforceSimOptions) -> (SalesforceSim, Api) {
    let sim = SalesforceSim::start(opts).await.unwrap();
    let api = authorized(&sim).await;
    (sim, api)
}

async fn start() -> (SalesforceSim, Api) {
    start_with(options()).await
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(aud: &str, exp: i64) -> Value {
    json!({"iss": CLIENT_ID, "sub": JWT_USER, "aud": aud, "exp": exp})
}

fn lead(last: &str, company: &str, email: &str) -> Value {
    json!({"LastName": last, "Company": company, "Email": email})
}

/// Creates a lead; returns its id.
async fn create_lead(api: &Api, body: Value) -> String {
    let answer = api.post(&v("/sobjects/Lead"), body).await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    answer.id()
}

/// An outbound-message endpoint recording every request and answering a changeable status and
/// body.
struct Receiver {
    sim: Simulator,
    answer: Arc<Mutex<(u16, String)>>,
}

impl Receiver {
    async fn start(status: u16, body: &str) -> Receiver {
        let answer = Arc::new(Mutex::new((status, body.to_owned())));
        let shared = Arc::clone(&answer);
        let sim = Simulator::start(move |_: &RecordedRequest| {
            let (status, body) = shared.lock().unwrap().clone();
            SimResponse {
                status,
                headers: vec![("content-type".into(), "text/xml; charset=utf-8".into())],
                body: body.into_bytes(),
            }
        })
        .await
        .unwrap();
        Receiver { sim, answer }
    }

    async fn acking() -> Receiver {
        Receiver::start(200, ACK_RESPONSE).await
    }

    fn set(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }

    fn url(&self) -> String {
        self.sim.url("/hooks/salesforce?tenant=t1")
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.sim.requests()
    }
}

// ----- OAuth -------------------------------------------------------------------------------------

/// Form parameters of a token call, the expected `error` and `error_description`.
type TokenCase<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);

#[tokio::test]
async fn oauth_code_and_refresh_grants_and_their_errors() {
    let sim = SalesforceSim::start(options()).await.unwrap();
    assert_eq!(sim.instance_url(), sim.base_url());
    assert_eq!(sim.options().organization_id, ORG);
    let (status, answer) = token_call(
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("code", "sim-code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("redirect_uri", "https://app.example/callback"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        keys(&answer),
        [
            "access_token",
            "id",
            "instance_url",
            "issued_at",
            "refresh_token",
            "scope",
            "signature",
            "token_type"
        ],
        "no expires_in: Salesforce sends none"
    );
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["instance_url"], sim.base_url());
    let id_url = format!("{}/id/{ORG}/{}", sim.base_url(), sim.user_id());
    assert_eq!(answer["id"], id_url);
    assert!(
        answer["access_token"]
            .as_str()
            .unwrap()
            .starts_with("00D5w000004qGTO!")
    );
    // signature = base64(HMAC-SHA256(client secret, id + issued_at)).
    let issued_at = answer["issued_at"].as_str().unwrap();
    assert!(issued_at.parse::<i64>().unwrap() > 1_600_000_000_000);
    let mut mac = Hmac::<Sha256>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{id_url}{issued_at}").as_bytes());
    assert_eq!(
        answer["signature"],
        STANDARD.encode(mac.finalize().into_bytes())
    );
    // The code grant's refresh token and the configured one both work; a refresh answer has no
    // refresh token.
    let new_refresh = answer["refresh_token"].as_str().unwrap().to_owned();
    for token in [REFRESH, new_refresh.as_str()] {
        let (status, answer) = refresh(&sim, token).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            keys(&answer),
            [
                "access_token",
                "id",
                "instance_url",
                "issued_at",
                "scope",
                "signature",
                "token_type"
            ]
        );
    }
    // The token works.
    let (_, answer) = refresh(&sim, REFRESH).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: sim.instance_url(),
        token: answer["access_token"].as_str().unwrap().to_owned(),
    };
    assert_eq!(api.get(&v("/limits")).await.status, 200);

    let code_grant =
        |code: &'static str, id: &'static str, secret: &'static str, redirect: &'static str| {
            vec![
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", id),
                ("client_secret", secret),
                ("redirect_uri", redirect),
            ]
        };
    let cases: Vec<TokenCase<'_>> = vec![
        (
            code_grant("sim-code", "other", CLIENT_SECRET, "https://a"),
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            code_grant("sim-code", CLIENT_ID, "wrong", "https://a"),
            "invalid_client",
            "invalid client credentials",
        ),
        (
            code_grant("bad-code", CLIENT_ID, CLIENT_SECRET, "https://a"),
            "invalid_grant",
            "authentication failure",
        ),
        (
            code_grant("sim-code", CLIENT_ID, CLIENT_SECRET, ""),
            "redirect_uri_mismatch",
            "redirect_uri must match configuration",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("refresh_token", "5Aep-unknown"),
            ],
            "invalid_grant",
            "expired access/refresh token",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("refresh_token", REFRESH),
            ],
            "invalid_client",
            "invalid client credentials",
        ),
        (
            vec![("grant_type", "password")],
            "unsupported_grant_type",
            "grant type not supported",
        ),
        (vec![], "unsupported_grant_type", "grant type not supported"),
    ];
    for (pairs, error, description) in cases {
        let (status, answer) = token_call(&sim, &pairs).await;
        assert_eq!(status, 400, "{pairs:?}");
        assert_eq!(
            answer,
            json!({"error": error, "error_description": description}),
            "{pairs:?}"
        );
    }
    let get = reqwest::get(sim.token_url()).await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(sim.token_requests(), 13);
    assert_eq!(sim.api_usage().0, 1, "token calls are not API calls");
}

#[tokio::test]
async fn jwt_bearer_grant_verifies_signature_and_claims() {
    let sim = SalesforceSim::start(options()).await.unwrap();
    for aud in [
        "https://login.salesforce.com",
        "https://test.salesforce.com",
        &sim.base_url(),
    ] {
        let assertion = sign_jwt(TEST_PRIVATE_KEY_PEM, &claims(aud, now_secs() + 120)).unwrap();
        let (status, answer) = jwt_grant(&sim, &assertion).await;
        assert_eq!(status, 200, "{aud}: {answer}");
        assert_eq!(
            keys(&answer),
            ["access_token", "id", "instance_url", "scope", "token_type"],
            "no refresh token in the JWT bearer flow"
        );
        let api = Api {
            http: reqwest::Client::new(),
            base: answer["instance_url"].as_str().unwrap().to_owned(),
            token: answer["access_token"].as_str().unwrap().to_owned(),
        };
        assert_eq!(api.get(&v("/limits")).await.status, 200);
    }
    let login = "https://login.salesforce.com";
    let good = sign_jwt(TEST_PRIVATE_KEY_PEM, &claims(login, now_secs() + 120)).unwrap();
    // A flipped byte of the signature.
    let (signing_input, signature) = good.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    let flipped = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(bytes));
    // Claims changed after signing.
    let (header, _) = signing_input.split_once('.').unwrap();
    let mut evil = claims(login, now_secs() + 120);
    evil["sub"] = json!("admin@victim.example");
    let tampered = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(evil.to_string())
    );
    // An HS256 token signed with the client secret, and a token without signature.
    let hs_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let hs_payload = URL_SAFE_NO_PAD.encode(claims(login, now_secs() + 60).to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{hs_header}.{hs_payload}").as_bytes());
    let hs256 = format!(
        "{hs_header}.{hs_payload}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    let none_alg = format!(
        "{}.{hs_payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#)
    );
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims(login, now_secs() + 120);
        change(&mut c);
        sign_jwt(TEST_PRIVATE_KEY_PEM, &c).unwrap()
    };
    let skew = JWT_CLOCK_SKEW.as_secs() as i64;
    let max = JWT_MAX_LIFETIME.as_secs() as i64;
    let cases: Vec<(String, &str, &str)> = vec![
        (
            sign_jwt(OTHER_APP_KEY, &claims(login, now_secs() + 120)).unwrap(),
            "invalid_grant",
            "invalid assertion",
        ),
        (flipped, "invalid_grant", "invalid assertion"),
        (tampered, "invalid_grant", "invalid assertion"),
        (hs256, "invalid_grant", "invalid assertion"),
        (none_alg, "invalid_grant", "invalid assertion"),
        ("not.a.jwt".to_owned(), "invalid_grant", "invalid assertion"),
        (String::new(), "invalid_grant", "invalid assertion"),
        (
            with(&|c| c["sub"] = json!("someone@else.example")),
            "invalid_grant",
            "user hasn't approved this consumer",
        ),
        (
            with(&|c| c["aud"] = json!("https://evil.example")),
            "invalid_grant",
            "audience is invalid",
        ),
        (
            with(&|c| c["aud"] = json!("https://login.salesforce.com.evil.example")),
            "invalid_grant",
            "audience is invalid",
        ),
        (
            with(&|c| c["iss"] = json!("another-app")),
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            with(&|c| c["exp"] = json!(now_secs() - skew - 5)),
            "invalid_grant",
            "expired authorization code",
        ),
        (
            with(&|c| c["exp"] = json!(now_secs() + max + skew + 60)),
            "invalid_grant",
            "invalid assertion",
        ),
        (
            with(&|c| c["exp"] = json!("soon")),
            "invalid_grant",
            "invalid assertion",
        ),
    ];
    for (assertion, error, description) in cases {
        let (status, answer) = jwt_grant(&sim, &assertion).await;
        assert_eq!(status, 400, "{assertion}");
        assert_eq!(
            answer,
            json!({"error": error, "error_description": description}),
            "{assertion}"
        );
    }
    // Within the skew on both sides.
    for exp in [now_secs() - skew + 10, now_secs() + max + skew - 10] {
        let (status, answer) = jwt_grant(&sim, &with(&|c| c["exp"] = json!(exp))).await;
        assert_eq!(status, 200, "{answer}");
    }
    // `exp` is judged on the simulator's clock.
    sim.advance_clock(Duration::from_secs(600));
    let (_, answer) = jwt_grant(&sim, &good).await;
    assert_eq!(answer["error_description"], "expired authorization code");

    // The app's certificate key is an option; PKCS#1 public keys are read too.
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::DecodePrivateKey;
    let other = rsa::RsaPrivateKey::from_pkcs8_pem(OTHER_APP_KEY).unwrap();
    let mut opts = options();
    opts.jwt_public_key_pem = other
        .to_public_key()
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .unwrap();
    opts.jwt_username = "ops@example.org".to_owned();
    let sim = SalesforceSim::start(opts).await.unwrap();
    let mut c = claims(login, now_secs() + 100);
    c["sub"] = json!("ops@example.org");
    assert_eq!(
        jwt_grant(&sim, &sign_jwt(OTHER_APP_KEY, &c).unwrap())
            .await
            .0,
        200
    );
    assert_eq!(
        jwt_grant(&sim, &sign_jwt(TEST_PRIVATE_KEY_PEM, &c).unwrap())
            .await
            .1["error_description"],
        "invalid assertion"
    );
    assert!(TEST_PUBLIC_KEY_PEM.starts_with("-----BEGIN PUBLIC KEY-----"));
}

#[tokio::test]
async fn sessions_expire_and_answer_invalid_session_id() {
    let mut opts = options();
    opts.session_lifetime = Duration::from_secs(3600);
    let (sim, api) = start_with(opts).await;
    assert_eq!(api.get(&v("/limits")).await.status, 200);
    sim.expire_sessions();
    let refused = api.get(&v("/limits")).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    // Refresh tokens still work.
    let api = authorized(&sim).await;
    assert_eq!(api.get(&v("/limits")).await.status, 200);
    // Sessions end after their lifetime on the simulator's clock.
    sim.advance_clock(Duration::from_secs(3599));
    assert_eq!(api.get(&v("/limits")).await.status, 200);
    sim.advance_clock(Duration::from_secs(2));
    assert_eq!(api.get(&v("/limits")).await.status, 401);
    // No token, another scheme, garbage.
    let api = authorized(&sim).await;
    for auth in [
        None,
        Some(format!("Basic {}", api.token)),
        Some("Bearer nope".to_owned()),
    ] {
        let mut request = reqwest::Client::new().get(format!("{}{}", api.base, v("/limits")));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }
    // `OAuth <token>` is the older scheme and works.
    let response = reqwest::Client::new()
        .get(format!("{}{}", api.base, v("/limits")))
        .header("Authorization", format!("OAuth {}", api.token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // The identity endpoints tell who the token is.
    let who = reqwest::Client::new()
        .get(format!("{}/services/oauth2/userinfo", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(who.status().as_u16(), 200);
    let who: Value = who.json().await.unwrap();
    assert_eq!(who["organization_id"], ORG);
    assert_eq!(who["user_id"], sim.user_id());
    let id = reqwest::Client::new()
        .get(format!("{}/id/{ORG}/{}", api.base, sim.user_id()))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(id.status().as_u16(), 200);
    let bad = reqwest::Client::new()
        .get(format!("{}/services/oauth2/userinfo", api.base))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 403);
}

// ----- records -----------------------------------------------------------------------------------

#[tokio::test]
async fn create_read_and_update_with_documented_errors() {
    let (sim, api) = start().await;
    let id = create_lead(
        &api,
        json!({"FirstName": "Ann", "LastName": "Lee", "Company": "Acme", "Email": "Ann@Example.com", "LeadSource": "Partner Referral", "referral_code__c": "REF-1"}),
    )
    .await;
    assert!(is_id18(&json!(id), "00Q5w0"));
    let record = api.get(&v(&format!("/sobjects/Lead/{id}"))).await;
    assert_eq!(record.status, 200);
    let body = &record.body;
    assert_eq!(
        body["attributes"],
        json!({"type": "Lead", "url": v(&format!("/sobjects/Lead/{id}"))})
    );
    assert_eq!(body["Id"], id);
    assert_eq!(body["Name"], "Ann Lee");
    assert_eq!(body["Email"], "Ann@Example.com");
    assert_eq!(
        body["Referral_Code__c"], "REF-1",
        "field names are case-insensitive"
    );
    assert_eq!(body["Status"], "Open - Not Contacted");
    assert_eq!(body["IsConverted"], false);
    assert_eq!(body["ConvertedContactId"], Value::Null);
    assert_eq!(body["Phone"], Value::Null);
    assert_eq!(body["OwnerId"], sim.user_id());
    let created = body["CreatedDate"].as_str().unwrap();
    assert!(
        created.len() == 28 && created.ends_with(".000+0000"),
        "{created}"
    );
    assert_eq!(sim.record("Lead", &id).unwrap(), *body);
    assert_eq!(
        sim.record("Lead", &id[..15]).unwrap()["Id"],
        id,
        "15-character ids work"
    );
    // fields=
    let some = api
        .get(&v(&format!(
            "/sobjects/Lead/{}?fields=Email,lastname",
            &id[..15]
        )))
        .await;
    assert_eq!(keys(&some.body), ["Email", "LastName", "attributes"]);
    let bad_fields = api
        .get(&v(&format!("/sobjects/Lead/{id}?fields=Nope")))
        .await;
    assert_eq!(
        (bad_fields.status, bad_fields.error_code()),
        (400, "INVALID_FIELD")
    );

    // Update: 204, then visible.
    let updated = api
        .patch(
            &v(&format!("/sobjects/Lead/{id}")),
            json!({"Phone": "+1 555 0100", "FirstName": null}),
        )
        .await;
    assert_eq!(updated.status, 204);
    let record = sim.record("Lead", &id).unwrap();
    assert_eq!(record["Phone"], "+1 555 0100");
    assert_eq!(record["FirstName"], Value::Null);
    assert_eq!(record["Name"], "Lee");

    // Documented errors of create.
    let missing = api
        .post(&v("/sobjects/Lead"), json!({"LastName": "Lee"}))
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.body,
        json!([{"message": "Required fields are missing: [Company]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Company"]}])
    );
    let both = api
        .post(
            &v("/sobjects/Lead"),
            json!({"FirstName": "Ann", "Company": ""}),
        )
        .await;
    assert_eq!(both.body[0]["fields"], json!(["LastName", "Company"]));
    assert_eq!(
        both.body[0]["message"],
        "Required fields are missing: [LastName, Company]"
    );
    let email = api
        .post(&v("/sobjects/Lead"), lead("Lee", "Acme", "not-an-email"))
        .await;
    assert_eq!(
        email.body,
        json!([{"message": "Email: invalid email address: not-an-email", "errorCode": "INVALID_EMAIL_ADDRESS", "fields": ["Email"]}])
    );
    let unknown = api
        .post(
            &v("/sobjects/Lead"),
            json!({"LastName": "Lee", "Company": "Acme", "Nickname__c": "x"}),
        )
        .await;
    assert_eq!(
        unknown.body,
        json!([{"message": "No such column 'Nickname__c' on sobject of type Lead", "errorCode": "INVALID_FIELD"}])
    );
    let read_only = api
        .post(
            &v("/sobjects/Lead"),
            json!({"LastName": "Lee", "Company": "Acme", "IsConverted": true}),
        )
        .await;
    assert_eq!(read_only.error_code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
    assert_eq!(read_only.body[0]["fields"], json!(["IsConverted"]));
    let with_id = api
        .post(
            &v("/sobjects/Lead"),
            json!({"LastName": "Lee", "Company": "Acme", "Id": id}),
        )
        .await;
    assert_eq!(with_id.error_code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
    let wrong_type = api
        .post(
            &v("/sobjects/Lead"),
            json!({"LastName": ["Lee"], "Company": "Acme"}),
        )
        .await;
    assert_eq!(wrong_type.error_code(), "JSON_PARSER_ERROR");
    let too_long = api
        .post(
            &v("/sobjects/Lead"),
            json!({"LastName": "x".repeat(81), "Company": "Acme"}),
        )
        .await;
    assert_eq!(too_long.error_code(), "STRING_TOO_LONG");
    let not_json = api
        .http
        .post(format!("{}{}", api.base, v("/sobjects/Lead")))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);
    let not_json: Value = not_json.json().await.unwrap();
    assert_eq!(not_json[0]["errorCode"], "JSON_PARSER_ERROR");
    // Two errors at once: a bad e-mail and a missing field.
    let two = api
        .post(
            &v("/sobjects/Lead"),
            json!({"LastName": "Lee", "Email": "x"}),
        )
        .await;
    let codes: Vec<&str> = two
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["errorCode"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["INVALID_EMAIL_ADDRESS", "REQUIRED_FIELD_MISSING"]);

    // Contacts and opportunities.
    let contact = api
        .post(
            &v("/sobjects/contact"),
            json!({"LastName": "Kim", "Email": "kim@example.com"}),
        )
        .await;
    assert_eq!(contact.status, 201);
    assert!(contact.id().starts_with("003"));
    let account = api
        .post(
            &v("/sobjects/Contact"),
            json!({"LastName": "Kim", "AccountId": "0015w00002BFDeLAAX"}),
        )
        .await;
    assert_eq!(account.error_code(), "INVALID_CROSS_REFERENCE_KEY");
    let malformed = api
        .post(
            &v("/sobjects/Contact"),
            json!({"LastName": "Kim", "AccountId": "nope"}),
        )
        .await;
    assert_eq!(malformed.error_code(), "MALFORMED_ID");
    let opportunity = api
        .post(&v("/sobjects/Opportunity"), json!({"Name": "Deal", "StageName": "Qualification", "CloseDate": "2026-09-30", "Amount": 1200}))
        .await;
    assert_eq!(opportunity.status, 201);
    let o = sim.record("Opportunity", &opportunity.id()).unwrap();
    assert_eq!(
        (
            o["Amount"].clone(),
            o["Probability"].clone(),
            o["IsWon"].clone()
        ),
        (json!(1200.0), json!(10.0), json!(false))
    );
    let bad_stage = api
        .post(
            &v("/sobjects/Opportunity"),
            json!({"Name": "Deal", "StageName": "Won-ish", "CloseDate": "2026-09-30"}),
        )
        .await;
    assert_eq!(
        bad_stage.body,
        json!([{"message": "Stage: bad value for restricted picklist field: Won-ish", "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "fields": ["StageName"]}])
    );
    let bad_date = api
        .post(
            &v("/sobjects/Opportunity"),
            json!({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "30/09/2026"}),
        )
        .await;
    assert_eq!(bad_date.error_code(), "JSON_PARSER_ERROR");

    // Reads of what does not exist; updates with Id in the body; other versions and objects.
    let absent = api.get(&v("/sobjects/Lead/00Q5w00000ZZZZZ")).await;
    assert_eq!(
        absent.body,
        json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
    );
    let not_an_id = api.get(&v("/sobjects/Lead/hello")).await;
    assert_eq!(
        not_an_id.body,
        json!([{"errorCode": "NOT_FOUND", "message": "Provided external ID field does not exist or is not accessible: hello"}])
    );
    let id_in_body = api
        .patch(
            &v(&format!("/sobjects/Lead/{id}")),
            json!({"Id": id, "Title": "CEO"}),
        )
        .await;
    assert_eq!(
        id_in_body.body,
        json!([{"message": "The Id field should not be specified in the sobject data.", "errorCode": "INVALID_FIELD"}])
    );
    let clear_required = api
        .patch(
            &v(&format!("/sobjects/Lead/{id}")),
            json!({"Company": null}),
        )
        .await;
    assert_eq!(clear_required.error_code(), "REQUIRED_FIELD_MISSING");
    let old_version = api
        .get(&format!("/services/data/v58.0/sobjects/Lead/{id}"))
        .await;
    assert_eq!(old_version.status, 404);
    assert_eq!(old_version.error_code(), "NOT_FOUND");
    assert_eq!(
        api.post(&v("/sobjects/Account"), json!({"Name": "A"}))
            .await
            .status,
        404
    );
    let method = api
        .call("PUT", &v(&format!("/sobjects/Lead/{id}")), Some(json!({})))
        .await;
    assert_eq!(
        (method.status, method.error_code()),
        (405, "METHOD_NOT_ALLOWED")
    );
    // The version list needs no session.
    let versions: Value = reqwest::get(format!("{}/services/data/", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(versions[0]["version"], API_VERSION);
    assert_eq!(versions[0]["url"], format!("/services/data/v{API_VERSION}"));
    // Inspection helpers.
    assert_eq!(sim.records("Lead").len(), 1);
    assert_eq!(sim.find_by_email("Lead", "ann@EXAMPLE.com").len(), 1);
    assert!(sim.records("Account").is_empty());
}

#[tokio::test]
async fn upsert_by_external_id_creates_updates_and_answers_300() {
    let (sim, api) = start().await;
    let path = v("/sobjects/Lead/Referral_Code__c/REF-42");
    let created = api
        .patch(&path, lead("Lee", "Acme", "ann@example.com"))
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["created"], true);
    let id = created.id();
    assert_eq!(
        sim.record("Lead", &id).unwrap()["Referral_Code__c"],
        "REF-42"
    );
    // Same value, other case: the same record is updated (a case-insensitive unique field).
    let updated = api
        .patch(
            &v("/sobjects/Lead/referral_code__c/ref-42"),
            json!({"Title": "CFO"}),
        )
        .await;
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.body,
        json!({"id": id, "success": true, "errors": [], "created": false})
    );
    let record = sim.record("Lead", &id).unwrap();
    assert_eq!(
        (record["Title"].clone(), record["Referral_Code__c"].clone()),
        (json!("CFO"), json!("REF-42"))
    );
    assert_eq!(sim.records("Lead").len(), 1);
    // Read by external id.
    let read = api.get(&v("/sobjects/Lead/Referral_Code__c/REF-42")).await;
    assert_eq!(read.body["Id"], id);
    assert_eq!(
        api.get(&v("/sobjects/Lead/Referral_Code__c/NOPE"))
            .await
            .status,
        404
    );
    // The field in the body, and Id, are refused.
    let in_body = api
        .patch(&path, json!({"Referral_Code__c": "REF-42", "Title": "x"}))
        .await;
    assert_eq!(
        in_body.body,
        json!([{"message": "The Referral_Code__c field should not be specified in the sobject data.", "errorCode": "INVALID_FIELD"}])
    );
    let new_with_field = api
        .patch(
            &v("/sobjects/Lead/Referral_Code__c/REF-43"),
            json!({"referral_code__c": "REF-43", "LastName": "A", "Company": "B"}),
        )
        .await;
    assert_eq!(new_with_field.error_code(), "INVALID_FIELD");
    // Not an external id field, or an object without one.
    let email = api
        .patch(
            &v("/sobjects/Lead/Email/ann@example.com"),
            json!({"Title": "x"}),
        )
        .await;
    assert_eq!(
        email.body,
        json!([{"errorCode": "NOT_FOUND", "message": "Provided external ID field does not exist or is not accessible: Email"}])
    );
    let opp = api
        .patch(
            &v("/sobjects/Opportunity/Referral_Code__c/X"),
            json!({"Name": "x"}),
        )
        .await;
    assert_eq!(opp.status, 404);
    // updateOnly without a match.
    let update_only = api
        .patch(
            &v("/sobjects/Lead/Referral_Code__c/REF-99?updateOnly=true"),
            lead("X", "Y", "x@example.com"),
        )
        .await;
    assert_eq!(
        (update_only.status, update_only.error_code()),
        (404, "NOT_FOUND")
    );
    // A create by upsert is validated like a create.
    let missing = api
        .patch(
            &v("/sobjects/Lead/Referral_Code__c/REF-77"),
            json!({"LastName": "Lee"}),
        )
        .await;
    assert_eq!(missing.body[0]["fields"], json!(["Company"]));
    // Unique: a create with a taken value fails.
    let duplicate = api
        .post(
            &v("/sobjects/Lead"),
            json!({"LastName": "B", "Company": "C", "Referral_Code__c": "ref-42"}),
        )
        .await;
    assert_eq!(
        duplicate.body,
        json!([{"message": format!("duplicate value found: Referral_Code__c duplicates value on record with id: {id}"), "errorCode": "DUPLICATE_VALUE", "fields": []}])
    );
    // Converted leads are still matched, and cannot be updated.
    sim.convert_lead_ui(&id, None).unwrap();
    let converted = api.patch(&path, json!({"Title": "CEO"})).await;
    assert_eq!(
        converted.body,
        json!([{"message": "cannot reference converted lead", "errorCode": "CANNOT_UPDATE_CONVERTED_LEAD", "fields": []}])
    );
    let by_id = api
        .patch(&v(&format!("/sobjects/Lead/{id}")), json!({"Title": "CEO"}))
        .await;
    assert_eq!(by_id.error_code(), "CANNOT_UPDATE_CONVERTED_LEAD");
    // Contacts have the field too (the conversion mapped it).
    let contact = api
        .patch(
            &v("/sobjects/Contact/Referral_Code__c/REF-42"),
            json!({"Title": "CFO"}),
        )
        .await;
    assert_eq!(contact.body["created"], false);

    // Without uniqueness, duplicates set up in the UI make upserts answer 300.
    let mut opts = options();
    opts.external_id_unique = false;
    let (sim, api) = start_with(opts).await;
    let mut ids = Vec::new();
    for last in ["One", "Two"] {
        ids.push(
            sim.create_record_ui(
                "Lead",
                &[
                    ("LastName", json!(last)),
                    ("Company", json!("Acme")),
                    ("Referral_Code__c", json!("DUP-1")),
                ],
            )
            .unwrap(),
        );
    }
    let before = sim.records("Lead");
    let multiple = api
        .patch(
            &v("/sobjects/Lead/Referral_Code__c/dup-1"),
            json!({"Title": "x"}),
        )
        .await;
    assert_eq!(multiple.status, 300);
    assert_eq!(
        multiple.body,
        json!(
            ids.iter()
                .map(|i| v(&format!("/sobjects/Lead/{i}")))
                .collect::<Vec<_>>()
        )
    );
    assert_eq!(sim.records("Lead"), before, "nothing written");
    assert_eq!(
        api.get(&v("/sobjects/Lead/Referral_Code__c/DUP-1"))
            .await
            .status,
        300
    );
}

#[tokio::test]
async fn sobject_collections_create_and_upsert_with_errors_in_place() {
    let (sim, api) = start().await;
    let records = json!([
        {"attributes": {"type": "Lead"}, "LastName": "A", "Company": "Acme", "Referral_Code__c": "C-1"},
        {"attributes": {"type": "Lead"}, "LastName": "B"},
        {"attributes": {"type": "Contact"}, "LastName": "C", "Email": "c@example.com"},
        {"attributes": {"type": "Account"}, "Name": "D"},
        {"attributes": {"type": "Lead"}, "LastName": "E", "Company": "Acme", "Id": "00Q5w00000ZZZZZ"},
    ]);
    let answer = api
        .post(
            &v("/composite/sobjects"),
            json!({"allOrNone": false, "records": records}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let items = answer.body.as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["success"], true);
    assert_eq!(
        items[1],
        json!({"success": false, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Company]", "fields": ["Company"]}]})
    );
    assert_eq!(items[2]["success"], true);
    assert!(items[2]["id"].as_str().unwrap().starts_with("003"));
    assert_eq!(items[3]["errors"][0]["statusCode"], "INVALID_TYPE");
    assert_eq!(
        items[4]["errors"][0]["statusCode"],
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    );
    assert_eq!(sim.records("Lead").len(), 1);
    assert_eq!(sim.records("Contact").len(), 1);
    assert_eq!(sim.api_usage().0, 1, "one call");

    // allOrNone: one failure rolls everything back.
    let answer = api
        .post(
            &v("/composite/sobjects"),
            json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Lead"}, "LastName": "F", "Company": "Acme"},
                {"attributes": {"type": "Lead"}, "LastName": "G", "Company": "Acme", "Email": "bad"},
            ]}),
        )
        .await;
    assert_eq!(
        answer.body[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(
        answer.body[1]["errors"][0]["statusCode"],
        "INVALID_EMAIL_ADDRESS"
    );
    assert_eq!(sim.records("Lead").len(), 1);
    // Limits and malformed bodies fail the whole call.
    let many: Vec<Value> = (0..201)
        .map(|i| json!({"attributes": {"type": "Lead"}, "LastName": i.to_string(), "Company": "A"}))
        .collect();
    let too_many = api
        .post(&v("/composite/sobjects"), json!({"records": many}))
        .await;
    assert_eq!(
        (too_many.status, too_many.error_code()),
        (400, "EXCEEDED_ID_LIMIT")
    );
    let untyped = api
        .post(
            &v("/composite/sobjects"),
            json!({"records": [{"LastName": "x"}]}),
        )
        .await;
    assert_eq!(untyped.status, 400);

    // Upsert: new and existing records in order, created flags, errors in place.
    let upsert = api
        .patch(
            &v("/composite/sobjects/Lead/Referral_Code__c"),
            json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Lead"}, "Referral_Code__c": "c-1", "Title": "Updated"},
                {"attributes": {"type": "Lead"}, "Referral_Code__c": "C-2", "LastName": "New", "Company": "Acme"},
                {"attributes": {"type": "Lead"}, "LastName": "NoCode", "Company": "Acme"},
                {"attributes": {"type": "Lead"}, "Referral_Code__c": "C-3", "LastName": "Twice", "Company": "Acme"},
                {"attributes": {"type": "Lead"}, "Referral_Code__c": "c-3", "LastName": "Twice", "Company": "Acme"},
                {"attributes": {"type": "Lead"}, "Referral_Code__c": "C-4", "LastName": "NoCompany"},
                {"attributes": {"type": "Contact"}, "Referral_Code__c": "C-5", "LastName": "Other"},
            ]}),
        )
        .await;
    let items = upsert.body.as_array().unwrap();
    let first_id = sim.records("Lead")[0]["Id"].clone();
    assert_eq!(
        items[0],
        json!({"id": first_id, "success": true, "errors": [], "created": false})
    );
    assert_eq!(items[1]["created"], true);
    assert_eq!(items[2]["errors"][0]["statusCode"], "MISSING_ARGUMENT");
    assert_eq!(items[3]["errors"][0]["statusCode"], "DUPLICATE_VALUE");
    assert_eq!(items[4]["errors"][0]["statusCode"], "DUPLICATE_VALUE");
    assert_eq!(
        items[5]["errors"][0]["statusCode"],
        "REQUIRED_FIELD_MISSING"
    );
    assert_eq!(items[6]["errors"][0]["statusCode"], "INVALID_TYPE");
    assert_eq!(
        sim.record("Lead", first_id.as_str().unwrap()).unwrap()["Title"],
        "Updated"
    );
    assert_eq!(sim.records("Lead").len(), 2);
    // A converted lead is matched and refused in place.
    sim.convert_lead_ui(first_id.as_str().unwrap(), None)
        .unwrap();
    let converted = api
        .patch(
            &v("/composite/sobjects/Lead/Referral_Code__c"),
            json!({"records": [{"attributes": {"type": "Lead"}, "Referral_Code__c": "C-1", "Title": "x"}]}),
        )
        .await;
    assert_eq!(
        converted.body[0]["errors"][0]["statusCode"],
        "CANNOT_UPDATE_CONVERTED_LEAD"
    );
    let wrong_field = api
        .patch(&v("/composite/sobjects/Lead/Email"), json!({"records": []}))
        .await;
    assert_eq!(wrong_field.status, 404);

    // Several matches (no uniqueness): DUPLICATE_EXTERNAL_ID in place; allOrNone rolls back.
    let mut opts = options();
    opts.external_id_unique = false;
    let (sim, api) = start_with(opts).await;
    for _ in 0..2 {
        sim.create_record_ui(
            "Contact",
            &[
                ("LastName", json!("Dup")),
                ("Referral_Code__c", json!("D-1")),
            ],
        )
        .unwrap();
    }
    let answer = api
        .patch(
            &v("/composite/sobjects/Contact/Referral_Code__c"),
            json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Contact"}, "Referral_Code__c": "NEW-1", "LastName": "Fresh"},
                {"attributes": {"type": "Contact"}, "Referral_Code__c": "D-1", "Title": "x"},
            ]}),
        )
        .await;
    assert_eq!(
        answer.body[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(
        answer.body[1]["errors"][0]["statusCode"],
        "DUPLICATE_EXTERNAL_ID"
    );
    assert_eq!(sim.records("Contact").len(), 2);
}

#[tokio::test]
async fn soql_subset_with_in_escapes_and_case_insensitive_email() {
    let (sim, api) = start().await;
    let ann = create_lead(&api, lead("O'Hara", "Acme", "Ann@Example.com")).await;
    let bob = create_lead(&api, lead("Smith", "Beta", "bob@example.com")).await;
    let carl = create_lead(&api, json!({"LastName": "Back\\slash", "Company": "Gamma"})).await;
    sim.convert_lead_ui(&bob, None).unwrap();
    api.post(
        &v("/sobjects/Contact"),
        json!({"LastName": "Ann", "Email": "ann@example.com"}),
    )
    .await;

    let q = api
        .query("SELECT Id, Email FROM Lead WHERE Email = 'ann@EXAMPLE.com' AND IsConverted = false")
        .await;
    assert_eq!(q.body["totalSize"], 1);
    let rec = &q.body["records"][0];
    assert_eq!(keys(rec), ["Email", "Id", "attributes"]);
    assert_eq!(
        rec["attributes"],
        json!({"type": "Lead", "url": v(&format!("/sobjects/Lead/{ann}"))})
    );
    // Converted leads are returned unless filtered.
    let all = api
        .query("select id from lead where email in ('ann@example.com', 'BOB@example.com')")
        .await;
    assert_eq!(all.body["totalSize"], 2);
    let unconverted = api
        .query("SELECT Id FROM Lead WHERE Email IN ('ann@example.com','bob@example.com') AND IsConverted = false")
        .await;
    assert_eq!(unconverted.body["records"][0]["Id"], ann);
    // Escaped quotes and backslashes.
    let quoted = api
        .query("SELECT LastName FROM Lead WHERE LastName = 'o\\'hara'")
        .await;
    assert_eq!(quoted.body["records"][0]["LastName"], "O'Hara");
    let slash = api
        .query("SELECT Id FROM Lead WHERE LastName = 'Back\\\\slash'")
        .await;
    assert_eq!(slash.body["records"][0]["Id"], carl);
    // OR with parentheses, ORDER BY, LIMIT, LIKE.
    let or = api
        .query("SELECT LastName FROM Lead WHERE (Company = 'acme' OR Company = 'GAMMA') AND IsConverted = false ORDER BY LastName DESC LIMIT 1")
        .await;
    assert_eq!(
        or.body["records"],
        json!([{"attributes": {"type": "Lead", "url": v(&format!("/sobjects/Lead/{ann}"))}, "LastName": "O'Hara"}])
    );
    let like = api
        .query("SELECT Id FROM Lead WHERE Company LIKE 'b%'")
        .await;
    assert_eq!(like.body["records"][0]["Id"], bob);
    let by_id = api
        .query(&format!("SELECT Id FROM Lead WHERE Id = '{}'", &ann[..15]))
        .await;
    assert_eq!(by_id.body["totalSize"], 1);
    let contacts = api
        .query("SELECT Id, Email FROM Contact WHERE Email = 'ANN@example.com'")
        .await;
    assert_eq!(contacts.body["totalSize"], 1);
    // Won stages by definition, not by label.
    sim.add_stage("Firmado", true, true);
    let won = api
        .query("SELECT MasterLabel FROM OpportunityStage WHERE IsWon = true")
        .await;
    let labels: Vec<&str> = won.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["MasterLabel"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Closed Won", "Firmado"]);
    // Errors.
    for (soql, code) in [
        (
            "SELECT Id FROM Lead WHERE Email = 'a' AND Company = 'b' OR Company = 'c'",
            "MALFORMED_QUERY",
        ),
        (
            "SELECT Id FROM Lead WHERE Email = 'unterminated",
            "MALFORMED_QUERY",
        ),
        ("SELECT Nope__c FROM Lead", "INVALID_FIELD"),
        ("SELECT Id FROM Account", "INVALID_TYPE"),
        (
            "SELECT Id FROM Lead WHERE IsConverted = 'false'",
            "INVALID_QUERY_FILTER_OPERATOR",
        ),
        ("SELEC Id FROM Lead", "MALFORMED_QUERY"),
    ] {
        let answer = api.query(soql).await;
        assert_eq!((answer.status, answer.error_code()), (400, code), "{soql}");
    }
    let message = api.query("SELECT Id, Nope FROM Lead").await.body[0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("ERROR at Row:1:Column:12\nNo such column 'Nope' on entity 'Lead'."),
        "{message}"
    );
    let no_q = api.get(&v("/query")).await;
    assert_eq!((no_q.status, no_q.error_code()), (400, "MALFORMED_QUERY"));
}

// ----- conversion and stages ---------------------------------------------------------------------

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn lead_conversion_sets_the_conversion_fields_and_maps_the_external_id() {
    let (sim, api) = start().await;
    let cdc_opportunity = fixture(CDC_OPPORTUNITY);
    let lead_id = create_lead(
        &api,
        json!({"FirstName": "Brenda", "LastName": "Mcclure", "Company": "Cardinal Inc.", "Email": "brenda@cardinal.net", "Phone": "(847) 262-5000", "Title": "CFO", "LeadSource": "Web", "Referral_Code__c": "REF-7"}),
    )
    .await;
    let name = cdc_opportunity["Name"].as_str().unwrap();
    let stage = cdc_opportunity["StageName"].as_str().unwrap();
    let (contact_id, opportunity_id) = sim.convert_lead_ui(&lead_id, Some((name, stage))).unwrap();
    let opportunity_id = opportunity_id.unwrap();
    let converted_lead = sim.record("Lead", &lead_id).unwrap();
    let contact = sim.record("Contact", &contact_id).unwrap();
    let opportunity = sim.record("Opportunity", &opportunity_id).unwrap();
    let today = chrono::Utc::now().date_naive();

    // The lead update of the CDC conversion example: the same fields, same meaning.
    let cdc_lead = fixture(CDC_LEAD);
    for field in [
        "Status",
        "IsConverted",
        "ConvertedDate",
        "ConvertedAccountId",
        "ConvertedContactId",
        "ConvertedOpportunityId",
    ] {
        assert!(
            cdc_lead.get(field).is_some() && converted_lead.get(field).is_some(),
            "{field}"
        );
    }
    assert_eq!(converted_lead["Status"], cdc_lead["Status"]);
    assert_eq!(converted_lead["IsConverted"], true);
    assert_eq!(
        converted_lead["ConvertedDate"],
        today.format("%Y-%m-%d").to_string(),
        "a date only"
    );
    assert_eq!(converted_lead["ConvertedContactId"], contact_id);
    assert_eq!(converted_lead["ConvertedOpportunityId"], opportunity_id);
    let account_id = converted_lead["ConvertedAccountId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(account_id.starts_with("001") && account_id.len() == 18);

    // The contact: from the lead's fields, on the account.
    let cdc_contact = fixture(CDC_CONTACT);
    assert_eq!(contact["AccountId"], account_id);
    for field in ["Email", "Phone", "Title", "LeadSource"] {
        assert_eq!(contact[field], cdc_contact[field], "{field}");
    }
    assert_eq!(contact["FirstName"], cdc_contact["Name"]["FirstName"]);
    assert_eq!(contact["LastName"], cdc_contact["Name"]["LastName"]);
    assert_eq!(contact["Referral_Code__c"], "REF-7", "lead field mapping");

    // The opportunity: stage-derived fields as in the CDC example, closing at quarter end.
    for field in [
        "Name",
        "StageName",
        "IsClosed",
        "IsWon",
        "ForecastCategory",
        "ForecastCategoryName",
        "LeadSource",
        "ContactId",
    ] {
        assert_eq!(opportunity[field], cdc_opportunity[field], "{field}");
    }
    assert_eq!(opportunity["Probability"], json!(10.0));
    assert_eq!(cdc_opportunity["Probability"], json!(10));
    assert_eq!(opportunity["AccountId"], account_id);
    assert_eq!(
        opportunity["Referral_Code__c"], "REF-7",
        "lead field mapping"
    );
    let close =
        chrono::NaiveDate::parse_from_str(opportunity["CloseDate"].as_str().unwrap(), "%Y-%m-%d")
            .unwrap();
    use chrono::Datelike;
    assert!(
        close >= today && close.month() % 3 == 0 && close.succ_opt().unwrap().day() == 1,
        "{close}"
    );

    // Converting again, unknown leads, unknown stages.
    assert!(
        sim.convert_lead_ui(&lead_id, None)
            .unwrap_err()
            .contains("already converted")
    );
    assert!(sim.convert_lead_ui("00Q5w00000ZZZZZ", None).is_err());
    let other = create_lead(&api, lead("Other", "Acme", "o@example.com")).await;
    let err = sim
        .convert_lead_ui(&other, Some(("Deal", "Nope")))
        .unwrap_err();
    assert!(
        err.contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        "{err}"
    );
    assert_eq!(
        sim.record("Lead", &other).unwrap()["IsConverted"],
        false,
        "nothing written"
    );
    assert_eq!(sim.records("Contact").len(), 1);
    // Without an opportunity.
    let (_, none) = sim.convert_lead_ui(&other, None).unwrap();
    assert!(none.is_none());
    assert_eq!(
        sim.record("Lead", &other).unwrap()["ConvertedOpportunityId"],
        Value::Null
    );
    // UI edits of converted leads are refused too.
    assert!(
        sim.update_record_ui("Lead", &other, &[("Title", json!("x"))])
            .unwrap_err()
            .contains("CANNOT_UPDATE_CONVERTED_LEAD")
    );
    // Through the API, the conversion shows in queries.
    let converted = api
        .query("SELECT Id, ConvertedOpportunityId FROM Lead WHERE IsConverted = true")
        .await;
    assert_eq!(converted.body["totalSize"], 2);
}

#[tokio::test]
async fn stages_decide_is_won_for_renamed_and_translated_stages() {
    let (sim, api) = start().await;
    sim.add_stage("Pre-Calificación", false, false);
    sim.add_stage("Firmado", true, true);
    let created = api
        .post(
            &v("/sobjects/Opportunity"),
            json!({"Name": "Deal", "StageName": "Firmado", "CloseDate": "2026-06-30"}),
        )
        .await;
    let id = created.id();
    let o = sim.record("Opportunity", &id).unwrap();
    assert_eq!(
        (
            o["IsClosed"].clone(),
            o["IsWon"].clone(),
            o["Probability"].clone(),
            o["ForecastCategory"].clone()
        ),
        (json!(true), json!(true), json!(100.0), json!("Closed"))
    );
    sim.set_stage_ui(&id, "Pre-Calificación").unwrap();
    let o = sim.record("Opportunity", &id).unwrap();
    assert_eq!(
        (
            o["IsClosed"].clone(),
            o["IsWon"].clone(),
            o["Probability"].clone()
        ),
        (json!(false), json!(false), json!(10.0))
    );
    sim.set_stage_ui(&id, "Closed Lost").unwrap();
    let o = sim.record("Opportunity", &id).unwrap();
    assert_eq!(
        (
            o["IsClosed"].clone(),
            o["IsWon"].clone(),
            o["Probability"].clone(),
            o["ForecastCategoryName"].clone()
        ),
        (json!(true), json!(false), json!(0.0), json!("Omitted"))
    );
    // A stage moved with an explicit probability keeps it.
    let moved = api
        .patch(
            &v(&format!("/sobjects/Opportunity/{id}")),
            json!({"StageName": "Negotiation/Review", "Probability": 80}),
        )
        .await;
    assert_eq!(moved.status, 204);
    assert_eq!(
        sim.record("Opportunity", &id).unwrap()["Probability"],
        json!(80.0)
    );
    let readonly = api
        .patch(
            &v(&format!("/sobjects/Opportunity/{id}")),
            json!({"IsWon": true}),
        )
        .await;
    assert_eq!(readonly.error_code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
    assert!(sim.set_stage_ui(&id, "Ganado").is_err());
    assert!(sim.set_stage_ui("0065w00000ZZZZZ", "Closed Won").is_err());
    let duplicate = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.add_stage("Firmado", true, true)
    }));
    assert!(duplicate.is_err(), "labels are unique");
}

// ----- outbound messages -------------------------------------------------------------------------

/// The element children of `node`.
fn elements<'a>(node: roxmltree::Node<'a, 'a>) -> Vec<roxmltree::Node<'a, 'a>> {
    node.children().filter(|c| c.is_element()).collect()
}

fn name_of(node: roxmltree::Node<'_, '_>) -> (Option<String>, String) {
    (
        node.tag_name().namespace().map(str::to_owned),
        node.tag_name().name().to_owned(),
    )
}

/// A parsed notification: its id and `("xsi:type", type)` then the sObject's fields (local
/// name, text).
type Notification = (String, Vec<(String, String)>);

/// The sObject children (local names and texts) of every notification, checking the envelope
/// structure on the way.
fn parse_message(xml: &str) -> (Map<String, Value>, Vec<Notification>) {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let envelope = doc.root_element();
    assert_eq!(name_of(envelope), (Some(SOAP_NS.into()), "Envelope".into()));
    assert_eq!(envelope.tag_name().name(), "Envelope");
    let body = elements(envelope);
    assert_eq!(body.len(), 1);
    assert_eq!(name_of(body[0]), (Some(SOAP_NS.into()), "Body".into()));
    let notifications = elements(body[0]);
    assert_eq!(notifications.len(), 1);
    assert_eq!(
        name_of(notifications[0]),
        (Some(OUTBOUND_NS.into()), "notifications".into())
    );
    let children = elements(notifications[0]);
    let names: Vec<String> = children
        .iter()
        .map(|c| c.tag_name().name().to_owned())
        .collect();
    let header_names = [
        "OrganizationId",
        "ActionId",
        "SessionId",
        "EnterpriseUrl",
        "PartnerUrl",
    ];
    assert_eq!(&names[..5], header_names);
    assert!(names[5..].iter().all(|n| n == "Notification"));
    assert!((1..=MAX_NOTIFICATIONS_PER_MESSAGE).contains(&(names.len() - 5)));
    let mut header = Map::new();
    for c in &children[..5] {
        assert_eq!(c.tag_name().namespace(), Some(OUTBOUND_NS));
        let value = if c.attribute((XSI_NS, "nil")) == Some("true") {
            assert!(c.text().is_none());
            Value::Null
        } else {
            json!(c.text().unwrap_or(""))
        };
        header.insert(c.tag_name().name().to_owned(), value);
    }
    let mut out = Vec::new();
    for n in &children[5..] {
        let parts = elements(*n);
        assert_eq!(parts.len(), 2);
        assert_eq!(name_of(parts[0]), (Some(OUTBOUND_NS.into()), "Id".into()));
        assert_eq!(
            name_of(parts[1]),
            (Some(OUTBOUND_NS.into()), "sObject".into())
        );
        let sobject = parts[1];
        let xsi_type = sobject.attribute((XSI_NS, "type")).unwrap();
        let (prefix, type_name) = xsi_type.split_once(':').unwrap();
        assert_eq!(sobject.lookup_namespace_uri(Some(prefix)), Some(SOBJECT_NS));
        let fields: Vec<(String, String)> = elements(sobject)
            .iter()
            .map(|f| {
                assert_eq!(f.tag_name().namespace(), Some(SOBJECT_NS));
                (
                    f.tag_name().name().to_owned(),
                    f.text().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let mut all = vec![("xsi:type".to_owned(), type_name.to_owned())];
        all.extend(fields);
        out.push((parts[0].text().unwrap().to_owned(), all));
    }
    (header, out)
}

#[tokio::test]
async fn outbound_messages_have_the_fixtures_envelope_and_data_at_send_time() {
    let (sim, api) = start().await;
    let receiver = Receiver::acking().await;
    // The fields of the captured message that the simulator's Opportunity has.
    let (_, captured) = parse_message(OM_FIXTURE);
    let captured_fields: Vec<String> = captured[0].1[1..].iter().map(|(n, _)| n.clone()).collect();
    let known: Vec<&str> = captured_fields
        .iter()
        .map(String::as_str)
        .filter(|f| {
            [
                "Id",
                "AccountId",
                "Amount",
                "CloseDate",
                "ContactId",
                "CreatedById",
                "CreatedDate",
                "IsClosed",
                "IsDeleted",
                "IsWon",
                "LastModifiedById",
                "LastModifiedDate",
                "LeadSource",
                "Name",
                "OwnerId",
                "Probability",
                "StageName",
                "SystemModstamp",
            ]
            .contains(f)
        })
        .collect();
    assert_eq!(known.len(), 18);
    // Given in another order: Salesforce writes Id first, then ASCII order.
    let mut shuffled = known.clone();
    shuffled.reverse();
    let action = sim.add_outbound_message("Opportunity", &shuffled, &receiver.url(), false);
    assert!(action.starts_with("04k5w0") && action.len() == 18);

    let lead_id = create_lead(&api, json!({"LastName": "Lee", "Company": "Backpackers, Inc.", "LeadSource": "External Referral"})).await;
    let (contact, opportunity) = sim
        .convert_lead_ui(
            &lead_id,
            Some(("Backpackers, Inc. (Sample)", "Prospecting")),
        )
        .unwrap();
    let opportunity = opportunity.unwrap();
    // Data at send time: two later edits, the message shows the last state.
    api.patch(
        &v(&format!("/sobjects/Opportunity/{opportunity}")),
        json!({"Amount": 45000, "ContactId": contact}),
    )
    .await;
    sim.set_stage_ui(&opportunity, "Negotiation/Review")
        .unwrap();
    assert_eq!(sim.queued_notifications(), 3, "create + two edits");
    assert_eq!(sim.queued_messages(), 1);
    let messages = sim.take_messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.action_id, action);
    assert_eq!(message.sobject, "Opportunity");
    assert_eq!(message.url, receiver.url());
    assert_eq!(message.record_ids, vec![opportunity.clone(); 3]);
    assert_eq!(message.session_id, None);

    // Same layout as the capture, line by line where values do not differ.
    let fixture_lines: Vec<&str> = OM_FIXTURE.lines().collect();
    let lines: Vec<&str> = message.body.lines().collect();
    assert_eq!(lines[..4], fixture_lines[..4]);
    assert_eq!(
        lines[lines.len() - 4..],
        fixture_lines[fixture_lines.len() - 4..],
        "incl. the space after </soapenv:Body>"
    );
    assert!(lines.contains(&"   <SessionId xsi:nil=\"true\"/>"));
    assert!(lines.contains(&"    <sObject xsi:type=\"sf:Opportunity\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">"));

    let (header, notifications) = parse_message(&message.body);
    assert_eq!(header["OrganizationId"], ORG);
    assert_eq!(header["ActionId"], action);
    assert_eq!(header["SessionId"], Value::Null);
    assert_eq!(
        header["EnterpriseUrl"],
        format!(
            "{}/services/Soap/c/{API_VERSION}/{}",
            sim.base_url(),
            &ORG[..15]
        )
    );
    assert_eq!(
        header["PartnerUrl"],
        format!(
            "{}/services/Soap/u/{API_VERSION}/{}",
            sim.base_url(),
            &ORG[..15]
        )
    );
    assert_eq!(notifications.len(), 3);
    let ids: Vec<&str> = notifications.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, message.notification_ids);
    assert!(ids.iter().all(|id| id.starts_with("04l") && id.len() == 18));
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3, "one id per notification");
    for (_, fields) in &notifications {
        assert_eq!(fields[0], ("xsi:type".to_owned(), "Opportunity".to_owned()));
        let names: Vec<&str> = fields[1..].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, known, "the capture's order");
        let value = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(value("Id"), opportunity);
        assert_eq!(value("StageName"), "Negotiation/Review");
        assert_eq!(value("Amount"), "45000.0");
        assert_eq!(value("Probability"), "90.0");
        assert_eq!(value("IsWon"), "false");
        assert_eq!(value("IsDeleted"), "false");
        assert_eq!(value("ContactId"), contact);
        assert_eq!(value("LeadSource"), "External Referral");
        assert_eq!(value("Name"), "Backpackers, Inc. (Sample)");
        let close = value("CloseDate");
        assert!(
            chrono::NaiveDate::parse_from_str(close, "%Y-%m-%d").is_ok(),
            "{close}"
        );
        for dt in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
            let t = value(dt);
            assert!(t.len() == 24 && t.ends_with(".000Z"), "{t}");
            assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");
        }
    }
    // Sending: SOAP 1.1 headers, acknowledged.
    let answer = sim.send(message).await.unwrap();
    assert!(is_ack(answer.0, &answer.1));
    assert_eq!(sim.acked(), 1);
    let request = &receiver.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path_and_query(), "/hooks/salesforce?tenant=t1");
    assert_eq!(
        request.header("content-type"),
        Some("text/xml; charset=utf-8")
    );
    assert_eq!(request.header("soapaction"), Some("\"\""));
    assert_eq!(request.body_text(), message.body);
    assert_eq!(sim.queued_messages(), 0, "taken");
}

#[tokio::test]
async fn outbound_session_id_is_a_working_session() {
    let (sim, api) = start().await;
    let receiver = Receiver::acking().await;
    sim.add_outbound_message(
        "Lead",
        &["Email", "IsConverted", "ConvertedOpportunityId", "Status"],
        &receiver.url(),
        true,
    );
    // A field the object does not have is refused at definition time.
    let bad = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.add_outbound_message("Lead", &["StageName"], "http://127.0.0.1:1/x", false)
    }));
    assert!(bad.is_err());
    let lead_id = create_lead(&api, lead("Lee", "Acme", "a&b@example.com")).await;
    sim.convert_lead_ui(&lead_id, Some(("Deal", "Prospecting")))
        .unwrap();
    let messages = sim.take_messages();
    assert_eq!(messages.len(), 1);
    let (header, notifications) = parse_message(&messages[0].body);
    let session = header["SessionId"].as_str().unwrap();
    assert_eq!(messages[0].session_id.as_deref(), Some(session));
    // The receiver can call back with it.
    let callback = Api {
        http: reqwest::Client::new(),
        base: sim.base_url(),
        token: session.to_owned(),
    };
    assert_eq!(callback.get(&v("/limits")).await.status, 200);
    // Create, then the conversion's lead update (Require Validation for Converted Leads).
    assert_eq!(notifications.len(), 2);
    let last = &notifications[1].1;
    let value = |name: &str| last.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(
        value("Email").as_deref(),
        Some("a&b@example.com"),
        "escaped and read back"
    );
    assert_eq!(value("IsConverted").as_deref(), Some("true"));
    assert_eq!(value("Status").as_deref(), Some("Closed - Converted"));
    assert!(value("ConvertedOpportunityId").unwrap().starts_with("006"));
    assert!(messages[0].body.contains("a&amp;b@example.com"));
    // Without the setting, conversions do not fire the lead's workflow.
    let mut opts = options();
    opts.require_validation_for_converted_leads = false;
    let (sim, api) = start_with(opts).await;
    sim.add_outbound_message("Lead", &["IsConverted", "Phone"], &receiver.url(), false);
    let lead_id = create_lead(&api, lead("Lee", "Acme", "x@example.com")).await;
    sim.convert_lead_ui(&lead_id, None).unwrap();
    assert_eq!(sim.queued_notifications(), 1, "the create only");
    // Null fields are left out.
    let (_, notifications) = parse_message(&sim.take_messages()[0].body);
    assert_eq!(
        notifications[0].1.len(),
        3,
        "xsi:type, Id, IsConverted: no Phone"
    );
}

#[tokio::test]
async fn more_than_100_notifications_make_several_messages_in_queue_order() {
    let (sim, api) = start().await;
    let receiver = Receiver::acking().await;
    let leads = sim.add_outbound_message("Lead", &["LastName"], &receiver.url(), false);
    let contacts = sim.add_outbound_message("Contact", &["LastName"], &receiver.url(), false);
    for chunk in 0..2 {
        let records: Vec<Value> = (0..125)
            .map(|i| json!({"attributes": {"type": "Lead"}, "LastName": format!("L{}", chunk * 125 + i), "Company": "Acme"}))
            .collect();
        let answer = api
            .post(&v("/composite/sobjects"), json!({"records": records}))
            .await;
        assert!(
            answer
                .body
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["success"] == true)
        );
    }
    api.post(&v("/sobjects/Contact"), json!({"LastName": "C0"}))
        .await;
    assert_eq!(sim.queued_notifications(), 251);
    assert_eq!(sim.queued_messages(), 4);
    let messages = sim.take_messages();
    let sizes: Vec<(String, usize)> = messages
        .iter()
        .map(|m| (m.action_id.clone(), m.notification_ids.len()))
        .collect();
    assert_eq!(
        sizes,
        [
            (leads.clone(), 100),
            (leads.clone(), 100),
            (leads, 50),
            (contacts, 1)
        ]
    );
    let lead_ids: Vec<String> = sim
        .records("Lead")
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .collect();
    let in_messages: Vec<String> = messages[..3]
        .iter()
        .flat_map(|m| m.record_ids.clone())
        .collect();
    assert_eq!(in_messages, lead_ids, "queue order");
    for m in &messages[..3] {
        let (_, notifications) = parse_message(&m.body);
        assert_eq!(notifications.len(), m.notification_ids.len());
        let names: Vec<&str> = notifications.iter().map(|(_, f)| f[2].1.as_str()).collect();
        let expected: Vec<String> = m
            .record_ids
            .iter()
            .map(|id| {
                sim.record("Lead", id).unwrap()["LastName"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, expected);
    }
    let mut all: Vec<&String> = messages.iter().flat_map(|m| &m.notification_ids).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 251);
    // allOrNone rollbacks take their notifications back.
    let answer = api
        .post(
            &v("/composite/sobjects"),
            json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Lead"}, "LastName": "ok", "Company": "A"},
                {"attributes": {"type": "Lead"}, "LastName": "bad"},
            ]}),
        )
        .await;
    assert_eq!(answer.body[1]["success"], false);
    assert_eq!(sim.queued_notifications(), 0);
}

#[tokio::test]
async fn only_an_ack_envelope_completes_a_message() {
    let (sim, api) = start().await;
    let receiver = Receiver::start(200, "OK").await;
    sim.add_outbound_message("Lead", &["Email"], &receiver.url(), false);
    create_lead(&api, lead("Lee", "Acme", "a@example.com")).await;
    create_lead(&api, lead("Kim", "Acme", "k@example.com")).await;

    // A plain 200 "OK" is not an acknowledgement: the message stays and comes back unchanged.
    let first = sim.deliver().await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1.as_ref().unwrap().0, 200);
    assert_eq!(
        (sim.acked(), sim.nacked(), sim.queued_messages()),
        (0, 1, 1)
    );
    let ids: Vec<String> = first[0].0.notification_ids.clone();
    // New changes meanwhile go into their own message.
    create_lead(&api, lead("New", "Acme", "n@example.com")).await;
    // Other wrong answers: an Ack of false, an Ack with a 500, SOAP 1.2, an unqualified Ack.
    let wrong = [
        (200, ACK_RESPONSE.replace(">true<", ">false<")),
        (500, ACK_RESPONSE.to_owned()),
        (
            200,
            ACK_RESPONSE.replace(
                "http://schemas.xmlsoap.org/soap/envelope/",
                "http://www.w3.org/2003/05/soap-envelope",
            ),
        ),
        (
            200,
            ACK_RESPONSE.replace(" xmlns=\"http://soap.sforce.com/2005/09/outbound\"", ""),
        ),
        (204, String::new()),
    ];
    for (status, body) in &wrong {
        receiver.set(*status, body);
        let again = sim.deliver().await;
        assert_eq!(again.len(), 2, "{body}");
        assert_eq!(
            again[0].0.notification_ids, ids,
            "resent with the same notification ids"
        );
        assert_eq!(again[0].0.body, first[0].0.body, "same records, same data");
    }
    assert_eq!((sim.acked(), sim.nacked()), (0, 1 + 2 * wrong.len() as u64));
    // A receiver that is down: not an answer, still queued.
    let down = Receiver::acking().await;
    let down_url = down.url();
    drop(down);
    sim.add_outbound_message("Contact", &["LastName"], &down_url, false);
    api.post(&v("/sobjects/Contact"), json!({"LastName": "C"}))
        .await;
    // A proper Ack (any prefixes) completes the messages.
    receiver.set(200, r#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><o:notificationsResponse xmlns:o="http://soap.sforce.com/2005/09/outbound"><o:Ack>true</o:Ack></o:notificationsResponse></S:Body></S:Envelope>"#);
    let done = sim.deliver().await;
    assert_eq!(done.len(), 3);
    assert!(done[2].1.is_err(), "connection refused");
    assert_eq!(sim.acked(), 2);
    assert_eq!(
        sim.queued_messages(),
        1,
        "only the undelivered contact message"
    );
    assert_eq!(sim.take_messages()[0].sobject, "Contact");
    assert!(sim.deliver().await.is_empty());
    let received: Vec<RecordedRequest> = receiver.requests();
    assert_eq!(received.len(), 1 + 2 * wrong.len() + 2);
}

#[tokio::test]
async fn unacknowledged_messages_are_dropped_after_24_hours() {
    let (sim, api) = start().await;
    let receiver = Receiver::start(503, "busy").await;
    sim.add_outbound_message("Lead", &["Email"], &receiver.url(), false);
    create_lead(&api, lead("Lee", "Acme", "a@example.com")).await;
    assert_eq!(sim.deliver().await.len(), 1);
    sim.advance_clock(Duration::from_secs(12 * 3600));
    let api = authorized(&sim).await;
    create_lead(&api, lead("Kim", "Acme", "k@example.com")).await;
    sim.advance_clock(Duration::from_secs(11 * 3600));
    let deliveries = sim.deliver().await;
    assert_eq!(deliveries.len(), 2, "still within 24 hours");
    assert_eq!(sim.queued_notifications(), 2);
    sim.advance_clock(Duration::from_secs(3600));
    assert_eq!(sim.queued_notifications(), 1, "the first is 24 hours old");
    assert_eq!(sim.dropped(), 1);
    let last = sim.deliver().await;
    assert_eq!(last.len(), 1);
    sim.advance_clock(Duration::from_secs(12 * 3600));
    assert!(sim.deliver().await.is_empty());
    assert_eq!((sim.dropped(), sim.queued_messages()), (2, 0));
}

// ----- limits ------------------------------------------------------------------------------------

#[tokio::test]
async fn api_usage_is_reported_and_the_allocation_enforced() {
    let mut opts = options();
    opts.daily_api_allocation = 5;
    let (sim, api) = start_with(opts).await;
    let first = api.get(&v("/limits")).await;
    assert_eq!(first.header("sforce-limit-info"), Some("api-usage=1/5"));
    assert_eq!(
        first.body,
        json!({"DailyApiRequests": {"Max": 5, "Remaining": 4}})
    );
    let created = api
        .post(&v("/sobjects/Lead"), lead("Lee", "Acme", "a@example.com"))
        .await;
    assert_eq!(created.header("sforce-limit-info"), Some("api-usage=2/5"));
    let failed = api.post(&v("/sobjects/Lead"), json!({})).await;
    assert_eq!(failed.status, 400);
    assert_eq!(
        failed.header("sforce-limit-info"),
        Some("api-usage=3/5"),
        "errors count"
    );
    // Injected failures answer with the header and are not counted.
    sim.fail_next(503, 1);
    sim.fail_next(500, 1);
    sim.fail_next(401, 1);
    let unavailable = api.get(&v("/limits")).await;
    assert_eq!(
        (unavailable.status, unavailable.error_code()),
        (503, "SERVER_UNAVAILABLE")
    );
    assert_eq!(
        unavailable.header("sforce-limit-info"),
        Some("api-usage=3/5")
    );
    assert_eq!(
        api.get(&v("/limits")).await.error_code(),
        "UNKNOWN_EXCEPTION"
    );
    let session = api
        .http
        .get(format!("{}{}", api.base, v("/limits")))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(session.status().as_u16(), 401);
    assert_eq!(sim.api_usage(), (3, 5));
    api.query("SELECT Id FROM Lead").await;
    let last = api.get(&v("/limits")).await;
    assert_eq!(last.header("sforce-limit-info"), Some("api-usage=5/5"));
    assert_eq!(last.body["DailyApiRequests"]["Remaining"], 0);
    for _ in 0..2 {
        let refused = api.get(&v("/limits")).await;
        assert_eq!(refused.status, 403);
        assert_eq!(
            refused.body,
            json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
        );
        assert_eq!(refused.header("sforce-limit-info"), Some("api-usage=5/5"));
    }
    assert_eq!(sim.api_usage(), (5, 5));
    // The token endpoint still works; the window rolls after 24 hours.
    assert_eq!(refresh(&sim, REFRESH).await.0, 200);
    sim.advance_clock(Duration::from_secs(24 * 3600));
    let api = authorized(&sim).await;
    assert_eq!(
        api.get(&v("/limits")).await.header("sforce-limit-info"),
        Some("api-usage=1/5")
    );
}

#[tokio::test]
async fn the_simulator_is_bounded_and_checks_its_options() {
    let mut opts = options();
    opts.max_requests = 3;
    let sim = SalesforceSim::start(opts).await.unwrap();
    assert_eq!(sim.options().max_requests, 3);
    let (_, answer) = refresh(&sim, REFRESH).await;
    let token = answer["access_token"].as_str().unwrap().to_owned();
    let base = sim.base_url();
    let simulator = sim.into_simulator();
    let http = reqwest::Client::new();
    let call = || {
        http.get(format!("{base}{}", v("/limits")))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(call().await.unwrap().status().as_u16(), 200);
    assert_eq!(call().await.unwrap().status().as_u16(), 200);
    assert_eq!(call().await.unwrap().status().as_u16(), 503);
    assert_eq!(simulator.served(), 3);
    // A 15-character org id is completed; bad options are refused.
    let mut short = options();
    short.organization_id = ORG[..15].to_owned();
    assert_eq!(
        SalesforceSim::start(short)
            .await
            .unwrap()
            .options()
            .organization_id,
        ORG
    );
    let bad_options: [fn(&mut SalesforceSimOptions); 5] = [
        |o| o.organization_id = "0015w00002BFDeLAAX".into(),
        |o| o.organization_id = "nope".into(),
        |o| o.external_id_field = "Email".into(),
        |o| o.external_id_field = " ".into(),
        |o| {
            o.jwt_public_key_pem =
                "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----".into()
        },
    ];
    for change in bad_options {
        let mut opts = options();
        change(&mut opts);
        let err = SalesforceSim::start(opts).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
    // UI-like helpers validate as the API does.
    let sim = SalesforceSim::start(options()).await.unwrap();
    let err = sim
        .create_record_ui("Lead", &[("LastName", json!("x"))])
        .unwrap_err();
    assert!(err.contains("REQUIRED_FIELD_MISSING"), "{err}");
    assert!(sim.create_record_ui("Account", &[]).is_err());
    let id = sim
        .create_record_ui(
            "Contact",
            &[("LastName", json!("x")), ("Email", json!("x@example.com"))],
        )
        .unwrap();
    sim.update_record_ui("Contact", &id, &[("Title", json!("Boss"))])
        .unwrap();
    assert_eq!(
        sim.find_by_email("Contact", "X@example.com")[0]["Title"],
        "Boss"
    );
}
