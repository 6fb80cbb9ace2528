//! Tests of the HubSpot simulator over real HTTP (reqwest) on loopback, with every CRM
//! response checked against HubSpot's OpenAPI descriptions copied unchanged to
//! tests/data/hubspot (see tests/data/SOURCE.md), and every request of a scripted,
//! connector-like session checked too.
//!
//! Documented exceptions to the spec check:
//! - HubSpot serves deals on `/crm/v3/objects/deals` and on `/crm/v3/objects/0-3` (the type
//!   name or its id); the description names only `/crm/v3/objects/0-3`, so requests to the
//!   `deals` form are validated with the path rewritten to `0-3` ([`spec_path`]); likewise
//!   `0-1` is rewritten to `contacts`.
//! - HubSpot returns `null` for a requested property that has no value ("If a requested
//!   property is defined but a deal doesn't have a value, it will be returned as null", deals
//!   API guide), while the description declares property values as strings: exactly the errors
//!   `…/properties/<name>: expected string, got null` are ignored by [`spec_errors`].
//! - The OAuth token endpoint has no description in the copied set and is not validated.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use refsync_testkit::hubspot::{
    HubSpotSim, HubSpotSimOptions, MAX_ATTEMPT_NUMBER, USER_AGENT, sign_v1, sign_v3,
};
use refsync_testkit::openapi::OpenApi;
use refsync_testkit::sim::{RecordedRequest, SimResponse, Simulator};
use serde_json::{Value, json};

const TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";
const SECRET: &str = "app-client-secret-0123";

const SPEC_FILES: &[&str] = &[
    "contacts.json",
    "deals.json",
    "associations.json",
    "pipelines.json",
    "properties.json",
    "leads.json",
    "webhooks.json",
];

/// A real delivery body (dj-hubspot test fixture, see its .source.txt).
const DJ_FIXTURE: &str =
    include_str!("data/hubspot/deal_propertychange_dealstage_closedwon_djhubspot.json");
/// HubSpot's documentation sample (contact propertyChange + creation).
const DOCS_FIXTURE: &str =
    include_str!("data/hubspot/docs_example_batch_contact_propertychange_and_creation.json");

fn specs() -> &'static [OpenApi] {
    static SPECS: OnceLock<Vec<OpenApi>> = OnceLock::new();
    SPECS.get_or_init(|| {
        SPEC_FILES
            .iter()
            .map(|f| {
                OpenApi::load(format!(
                    "{}/tests/data/hubspot/{f}",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap_or_else(|e| panic!("{f}: {e}"))
            })
            .collect()
    })
}

/// The path the descriptions name: `/crm/v3/objects/deals…` → `/crm/v3/objects/0-3…` (HubSpot
/// documents both; the deals description only the id form), `/0-1…` → `/contacts…`.
fn spec_path(path: &str) -> String {
    for (from, to) in [
        ("/crm/v3/objects/deals", "/crm/v3/objects/0-3"),
        ("/crm/v3/objects/0-1", "/crm/v3/objects/contacts"),
    ] {
        if let Some(rest) = path.strip_prefix(from) {
            if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
                return format!("{to}{rest}");
            }
        }
    }
    path.to_owned()
}

fn spec_for(method: &str, path: &str) -> Option<&'static OpenApi> {
    let path = spec_path(path.split('?').next().unwrap_or(path));
    specs()
        .iter()
        .find(|s| s.operation_for(method, &path).is_some())
}

/// Drops the documented exception: `null` values of requested properties.
fn spec_errors(result: Result<(), Vec<String>>) -> Vec<String> {
    result
        .err()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            let null_property = e
                .strip_suffix(": expected string, got null")
                .and_then(|head| head.rsplit_once("/properties/"))
                .is_some_and(|(_, name)| !name.is_empty() && !name.contains('/'));
            !null_property
        })
        .collect()
}

/// Every recorded CRM request validates against its description (rewritten as
/// [`spec_path`] says); returns how many were checked.
fn assert_requests_valid(sim: &HubSpotSim) -> usize {
    let mut checked = 0;
    for req in sim.simulator().requests() {
        if !req.path.starts_with("/crm/") {
            continue;
        }
        let spec = spec_for(&req.method, &req.path)
            .unwrap_or_else(|| panic!("no description has {} {}", req.method, req.path));
        let mut rewritten = req.clone();
        rewritten.path = spec_path(&req.path);
        let errors = spec_errors(spec.validate_recorded(&rewritten));
        assert!(
            errors.is_empty(),
            "request not valid: {errors:#?}\n{}",
            req.body_text()
        );
        checked += 1;
    }
    checked
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A reqwest client that checks every CRM response against the descriptions.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(sim: &HubSpotSim) -> Api {
        Api::with_token(sim, Some(TOKEN))
    }

    fn with_token(sim: &HubSpotSim, token: Option<&str>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: sim.base_url(),
            token: token.map(str::to_owned),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(m, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
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
        if path.starts_with("/crm/") {
            if let Some(spec) = spec_for(method, path) {
                let bare = spec_path(path.split('?').next().unwrap_or(path));
                let errors = spec_errors(spec.validate_response(method, &bare, status, &body));
                assert!(
                    errors.is_empty(),
                    "response not valid: {errors:#?}\n{body:#}"
                );
            }
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
}

async fn start_with(opts: HubSpotSimOptions) -> (HubSpotSim, Api) {
    let sim = HubSpotSim::start(opts).await.unwrap();
    let api = Api::new(&sim);
    (sim, api)
}

async fn start() -> (HubSpotSim, Api) {
    start_with(HubSpotSimOptions::new(TOKEN, SECRET)).await
}

async fn create_contact(api: &Api, properties: Value) -> String {
    let answer = api
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": properties, "associations": []}),
        )
        .await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    answer.body["id"].as_str().unwrap().to_owned()
}

async fn create_deal(api: &Api, properties: Value, contact: Option<&str>) -> Value {
    let associations = match contact {
        Some(id) => {
            json!([{"to": {"id": id}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]}])
        }
        None => json!([]),
    };
    let answer = api
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": properties, "associations": associations}),
        )
        .await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    answer.body
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
            SimResponse::json(answer.load(Ordering::SeqCst), &json!({"ok": true}))
        })
        .await
        .unwrap();
        Receiver { sim, status }
    }

    fn url(&self) -> String {
        self.sim.url("/webhooks/hubspot?tenant=t1")
    }

    fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.sim.requests()
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

async fn token_call(sim: &HubSpotSim, pairs: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/v1/token", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn events_of<'a>(events: &'a [Value], subscription_type: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["subscriptionType"] == subscription_type)
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

/// The keys of the first object in a JSON text, in the order they appear.
fn key_order(text: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(text).unwrap();
    let first = if value.is_array() {
        value[0].clone()
    } else {
        value
    };
    let mut found: Vec<(usize, String)> = first
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (text.find(&format!("\"{k}\"")).unwrap(), k.clone()))
        .collect();
    found.sort();
    found.into_iter().map(|(_, k)| k).collect()
}

// ----- auth ------------------------------------------------------------------------------------

#[tokio::test]
async fn private_app_token_is_required() {
    let (sim, api) = start().await;
    let ok = api.get("/crm/v3/properties/contacts").await;
    assert_eq!(ok.status, 200);

    for token in [None, Some("pat-na1-wrong")] {
        let answer = Api::with_token(&sim, token)
            .get("/crm/v3/objects/contacts")
            .await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body["status"], "error");
        assert_eq!(answer.body["category"], "INVALID_AUTHENTICATION");
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap()
                .starts_with("Authentication credentials not found.")
        );
        assert_eq!(answer.body["correlationId"].as_str().unwrap().len(), 36);
        assert_eq!(answer.header("x-hubspot-ratelimit-max"), Some("190"));
    }
    // Basic or a token in another header is not accepted either.
    let basic = reqwest::Client::new()
        .get(format!("{}/crm/v3/objects/contacts", sim.base_url()))
        .basic_auth(TOKEN, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
}

#[tokio::test]
async fn oauth_code_token_refresh_and_expiry() {
    let (sim, _) = start().await;
    let code = sim.authorization_code().to_owned();
    assert_eq!(code, "sim-code");
    let grant = [
        ("grant_type", "authorization_code"),
        ("client_id", "sim-client"),
        ("client_secret", SECRET),
        ("redirect_uri", "https://app.example.com/oauth/hubspot"),
        ("code", code.as_str()),
    ];
    let (status, token) = token_call(&sim, &grant).await;
    assert_eq!(status, 200, "{token:#}");
    assert_eq!(
        keys(&token),
        ["access_token", "expires_in", "refresh_token", "token_type"]
    );
    assert_eq!(token["expires_in"], 1800);
    assert_eq!(token["token_type"], "bearer");
    let access = token["access_token"].as_str().unwrap().to_owned();
    let refresh = token["refresh_token"].as_str().unwrap().to_owned();

    let oauth_api = Api::with_token(&sim, Some(&access));
    assert_eq!(oauth_api.get("/crm/v3/pipelines/deals").await.status, 200);

    // Client and grant errors.
    let mut bad = grant;
    bad[1].1 = "other-client";
    let (status, body) = token_call(&sim, &bad).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (400, Some("BAD_CLIENT_ID"))
    );
    let mut bad = grant;
    bad[2].1 = "wrong-secret";
    let (status, body) = token_call(&sim, &bad).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (400, Some("BAD_CLIENT_SECRET"))
    );
    let mut bad = grant;
    bad[4].1 = "other-code";
    let (status, body) = token_call(&sim, &bad).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (400, Some("BAD_AUTH_CODE"))
    );
    let (status, body) = token_call(&sim, &grant[..4]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (400, Some("BAD_AUTH_CODE"))
    );
    let (status, body) = token_call(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "sim-client"),
            ("client_secret", SECRET),
            ("refresh_token", "na1-unknown"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (400, Some("BAD_REFRESH_TOKEN"))
    );
    assert!(body["correlationId"].is_string());
    assert_eq!(sim.oauth_refreshes(), 0);

    // Refresh: a new access token, the same refresh token; the old access token still works.
    let refresh_grant = [
        ("grant_type", "refresh_token"),
        ("client_id", "sim-client"),
        ("client_secret", SECRET),
        ("refresh_token", refresh.as_str()),
    ];
    let (status, refreshed) = token_call(&sim, &refresh_grant).await;
    assert_eq!(status, 200, "{refreshed:#}");
    assert_eq!(refreshed["refresh_token"], refresh.as_str());
    let access2 = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(access2, access);
    assert_eq!(sim.oauth_refreshes(), 1);
    assert_eq!(oauth_api.get("/crm/v3/pipelines/deals").await.status, 200);

    // Expiry: every issued access token answers 401; private tokens are unaffected; the
    // refresh token keeps working.
    sim.expire_access_tokens();
    for token in [&access, &access2] {
        let answer = Api::with_token(&sim, Some(token))
            .get("/crm/v3/pipelines/deals")
            .await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body["category"], "EXPIRED_AUTHENTICATION");
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap()
                .starts_with("The OAuth token used to make this call expired")
        );
    }
    assert_eq!(
        Api::new(&sim).get("/crm/v3/pipelines/deals").await.status,
        200
    );
    let (status, again) = token_call(&sim, &refresh_grant).await;
    assert_eq!(status, 200);
    assert_eq!(sim.oauth_refreshes(), 2);
    let fresh = Api::with_token(&sim, again["access_token"].as_str());
    assert_eq!(fresh.get("/crm/v3/pipelines/deals").await.status, 200);
}

#[tokio::test]
async fn oauth_redirect_uri_and_lifetime_options() {
    let mut opts = HubSpotSimOptions::new(TOKEN, SECRET);
    opts.redirect_uri = Some("https://app.example.com/cb".to_owned());
    opts.access_token_lifetime = Duration::from_millis(300);
    let (sim, _) = start_with(opts).await;
    let grant = |uri: &'static str| {
        [
            ("grant_type", "authorization_code"),
            ("client_id", "sim-client"),
            ("client_secret", SECRET),
            ("redirect_uri", uri),
            ("code", "sim-code"),
        ]
    };
    let (status, body) = token_call(&sim, &grant("https://evil.example.com/cb")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (400, Some("BAD_REDIRECT_URI"))
    );
    let (status, token) = token_call(&sim, &grant("https://app.example.com/cb")).await;
    assert_eq!(status, 200);
    assert_eq!(token["expires_in"], 0);
    let api = Api::with_token(&sim, token["access_token"].as_str());
    assert_eq!(api.get("/crm/v3/pipelines/deals").await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = api.get("/crm/v3/pipelines/deals").await;
    assert_eq!(expired.status, 401);
    assert_eq!(expired.body["category"], "EXPIRED_AUTHENTICATION");
}

// ----- contacts --------------------------------------------------------------------------------

#[tokio::test]
async fn contact_create_read_patch_and_errors() {
    let (sim, api) = start().await;
    let created = api
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"email": "Ann@Example.com", "firstname": "Ann", "referral_code": "REF-ANN"}, "associations": []}),
        )
        .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        keys(&created.body),
        ["archived", "createdAt", "id", "properties", "updatedAt"]
    );
    let props = &created.body["properties"];
    assert_eq!(props["email"], "ann@example.com", "stored lower-cased");
    assert_eq!(props["hs_object_id"], id.as_str());
    assert!(props["createdate"].as_str().unwrap().ends_with('Z'));
    assert_eq!(props["lastmodifieddate"], props["createdate"]);
    assert!(props.as_object().unwrap().values().all(Value::is_string));

    // Default read: the default properties, null when not set.
    let read = api.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(
        keys(&read.body["properties"]),
        [
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname"
        ]
    );
    assert_eq!(read.body["properties"]["lastname"], Value::Null);
    assert!(read.body.get("associations").is_none());

    // By e-mail (any case, percent-encoded), named properties (unknown names ignored).
    let by_email = api
        .get("/crm/v3/objects/contacts/ANN%40example.com?idProperty=email&properties=referral_code,phone,nonexistent")
        .await;
    assert_eq!(by_email.status, 200, "{:#}", by_email.body);
    assert_eq!(by_email.body["id"], id.as_str());
    assert_eq!(
        keys(&by_email.body["properties"]),
        [
            "createdate",
            "hs_object_id",
            "lastmodifieddate",
            "phone",
            "referral_code"
        ]
    );
    assert_eq!(by_email.body["properties"]["referral_code"], "REF-ANN");
    assert_eq!(by_email.body["properties"]["phone"], Value::Null);

    // PATCH: values as text (a number is taken as text), history kept.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let patched = api
        .patch(
            &format!("/crm/v3/objects/contacts/{id}"),
            json!({"properties": {"lastname": "Smith", "phone": 5551234, "lifecyclestage": "lead"}}),
        )
        .await;
    assert_eq!(patched.status, 200, "{:#}", patched.body);
    assert_eq!(patched.body["properties"]["phone"], "5551234");
    assert_ne!(patched.body["updatedAt"], created.body["updatedAt"]);
    let history = api
        .get(&format!(
            "/crm/v3/objects/contacts/{id}?propertiesWithHistory=lastname,firstname"
        ))
        .await;
    assert_eq!(
        history.body["propertiesWithHistory"]["lastname"][0]["value"],
        "Smith"
    );
    assert_eq!(
        history.body["propertiesWithHistory"]["firstname"][0]["sourceType"],
        "API"
    );
    // Clearing with "" removes the value.
    api.patch(
        &format!("/crm/v3/objects/contacts/{id}"),
        json!({"properties": {"phone": ""}}),
    )
    .await;
    assert!(sim.contact_by_email("ann@example.com").unwrap()["properties"]["phone"].is_null());

    // 409 on a duplicate e-mail, case-insensitive.
    let duplicate = api
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"email": "ANN@example.COM"}, "associations": []}),
        )
        .await;
    assert_eq!(duplicate.status, 409);
    assert_eq!(duplicate.body["category"], "CONFLICT");
    assert_eq!(
        duplicate.body["message"],
        format!("Contact already exists. Existing ID: {id}")
    );

    // Unknown property, invalid e-mail, read-only property, invalid option: 400.
    let unknown = api
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"email": "bob@example.com", "favourite_colour": "red"}, "associations": []}),
        )
        .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.body["category"], "VALIDATION_ERROR");
    let message = unknown.body["message"].as_str().unwrap();
    assert!(message.starts_with("Property values were not valid: "));
    assert!(message.contains(r#"Property \"favourite_colour\" does not exist"#));
    assert!(message.contains("PROPERTY_DOESNT_EXIST"));
    assert_eq!(unknown.body["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    assert!(sim.contact_by_email("bob@example.com").is_none());
    for (properties, code) in [
        (json!({"email": "not-an-email"}), "INVALID_EMAIL"),
        (json!({"hs_object_id": "5"}), "READ_ONLY_VALUE"),
        (json!({"lifecyclestage": "hot"}), "INVALID_OPTION"),
    ] {
        let answer = api
            .post(
                "/crm/v3/objects/contacts",
                json!({"properties": properties, "associations": []}),
            )
            .await;
        assert_eq!(answer.status, 400, "{properties}");
        assert!(answer.body["message"].as_str().unwrap().contains(code));
    }

    // 404, and an idProperty that is not unique.
    let missing = api.get("/crm/v3/objects/contacts/999999").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["category"], "OBJECT_NOT_FOUND");
    let patch_missing = api
        .patch(
            "/crm/v3/objects/contacts/999999",
            json!({"properties": {"firstname": "X"}}),
        )
        .await;
    assert_eq!(patch_missing.status, 404);
    let not_unique = api
        .get("/crm/v3/objects/contacts/Ann?idProperty=firstname")
        .await;
    assert_eq!(not_unique.status, 400);
    assert!(
        not_unique.body["message"]
            .as_str()
            .unwrap()
            .contains("hasUniqueValue")
    );
    assert_eq!(sim.contacts().len(), 1);
}

#[tokio::test]
async fn contact_batch_upsert_new_and_existing() {
    let (sim, api) = start().await;
    let existing = create_contact(
        &api,
        json!({"email": "ann@example.com", "firstname": "Ann"}),
    )
    .await;
    let answer = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [
                {"id": "ANN@example.com", "idProperty": "email", "properties": {"referral_code": "REF-1"}},
                {"id": "bob@example.com", "idProperty": "email", "properties": {"firstname": "Bob"}},
            ]}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:#}", answer.body);
    assert_eq!(answer.body["status"], "COMPLETE");
    let results = answer.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["id"], existing.as_str());
    assert_eq!(results[0]["new"], false);
    assert_eq!(results[0]["properties"]["referral_code"], "REF-1");
    assert_eq!(results[0]["properties"]["firstname"], "Ann");
    assert_eq!(results[1]["new"], true);
    assert_eq!(results[1]["properties"]["email"], "bob@example.com");
    assert_eq!(results[1]["properties"]["firstname"], "Bob");
    assert_eq!(sim.contacts().len(), 2);

    // Upserting the same values again changes nothing.
    let again = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"id": "bob@example.com", "idProperty": "email", "properties": {"firstname": "Bob"}}]}),
        )
        .await;
    assert_eq!(again.body["results"][0]["new"], false);

    // Duplicate ids (case-insensitively) → 400 naming them.
    let duplicate = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [
                {"id": "cat@example.com", "idProperty": "email", "properties": {}},
                {"id": "CAT@example.com", "idProperty": "email", "properties": {}},
            ]}),
        )
        .await;
    assert_eq!(duplicate.status, 400);
    assert_eq!(duplicate.body["category"], "VALIDATION_ERROR");
    assert!(
        duplicate.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Duplicate IDs found in batch input")
    );
    assert_eq!(duplicate.body["context"]["ids"], json!(["CAT@example.com"]));

    // An invalid e-mail fails the whole call, naming the input; nothing is written.
    let invalid = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [
                {"id": "dan@example.com", "idProperty": "email", "properties": {}},
                {"id": "not-an-email", "idProperty": "email", "properties": {}},
            ]}),
        )
        .await;
    assert_eq!(invalid.status, 400);
    let message = invalid.body["message"].as_str().unwrap();
    assert!(message.contains("not-an-email"), "{message}");
    assert!(message.contains("INVALID_EMAIL"), "{message}");
    assert!(sim.contact_by_email("dan@example.com").is_none());

    // Unknown property: whole call 400.
    let unknown = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"id": "eve@example.com", "idProperty": "email", "properties": {"shoe_size": "9"}}]}),
        )
        .await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.body["message"]
            .as_str()
            .unwrap()
            .contains(r#"Property \"shoe_size\" does not exist"#)
    );

    // More than 100 inputs, no idProperty, a non-unique idProperty.
    let many: Vec<Value> = (0..101)
        .map(
            |i| json!({"id": format!("u{i}@example.com"), "idProperty": "email", "properties": {}}),
        )
        .collect();
    let too_many = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({ "inputs": many }),
        )
        .await;
    assert_eq!(too_many.status, 400);
    let no_id_property = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"id": "x@example.com", "properties": {}}]}),
        )
        .await;
    assert_eq!(no_id_property.status, 400);
    let by_name = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"id": "Ann", "idProperty": "firstname", "properties": {}}]}),
        )
        .await;
    assert_eq!(by_name.status, 400);
    assert_eq!(sim.contacts().len(), 2);
}

#[tokio::test]
async fn contact_batch_read_create_update() {
    let (sim, api) = start().await;
    let ann = create_contact(
        &api,
        json!({"email": "ann@example.com", "firstname": "Ann"}),
    )
    .await;
    let read = api
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"inputs": [{"id": ann}, {"id": "424242"}], "properties": ["email"], "propertiesWithHistory": ["firstname"]}),
        )
        .await;
    assert_eq!(read.status, 207, "{:#}", read.body);
    assert_eq!(read.body["numErrors"], 1);
    let error = &read.body["errors"][0];
    assert_eq!(error["status"], "error");
    assert_eq!(error["category"], "OBJECT_NOT_FOUND");
    assert_eq!(error["context"]["ids"], json!(["424242"]));
    let result = &read.body["results"][0];
    assert_eq!(result["properties"]["email"], "ann@example.com");
    assert_eq!(
        result["propertiesWithHistory"]["firstname"][0]["value"],
        "Ann"
    );

    let by_email = api
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"idProperty": "email", "inputs": [{"id": "ANN@EXAMPLE.COM"}], "properties": [], "propertiesWithHistory": []}),
        )
        .await;
    assert_eq!(by_email.status, 200);
    assert_eq!(by_email.body["results"][0]["id"], ann.as_str());

    let deal = create_deal(&api, json!({"dealname": "D"}), None).await;
    let deal_id = deal["id"].as_str().unwrap();
    let created = api
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({"inputs": [
                {"properties": {"email": "bob@example.com"}, "associations": [
                    {"to": {"id": deal_id}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 4}]}
                ]},
                {"properties": {"email": "cat@example.com"}, "associations": []},
            ]}),
        )
        .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    let bob = created.body["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sim.contacts_of_deal(deal_id), vec![bob.clone()]);
    assert_eq!(sim.deals_of_contact(&bob), vec![deal_id.to_owned()]);

    // The same e-mail twice in one create batch, and a wrong association type id.
    let twice = api
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({"inputs": [
                {"properties": {"email": "dup@example.com"}, "associations": []},
                {"properties": {"email": "DUP@example.com"}, "associations": []},
            ]}),
        )
        .await;
    assert_eq!(twice.status, 400);
    let wrong_type = api
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"email": "eve@example.com"}, "associations": [
                {"to": {"id": deal_id}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]}
            ]}),
        )
        .await;
    assert_eq!(wrong_type.status, 400);
    assert!(sim.contact_by_email("eve@example.com").is_none());

    let updated = api
        .post(
            "/crm/v3/objects/contacts/batch/update",
            json!({"inputs": [
                {"id": ann, "properties": {"lastname": "Lee"}},
                {"id": "cat@example.com", "idProperty": "email", "properties": {"firstname": "Cat"}},
                {"id": "999999", "properties": {"firstname": "Nobody"}},
            ]}),
        )
        .await;
    assert_eq!(updated.status, 207, "{:#}", updated.body);
    assert_eq!(updated.body["results"].as_array().unwrap().len(), 2);
    assert_eq!(
        updated.body["errors"][0]["context"]["ids"],
        json!(["999999"])
    );
    assert_eq!(
        sim.contact_by_email("cat@example.com").unwrap()["properties"]["firstname"],
        "Cat"
    );
    assert_eq!(sim.contacts().len(), 3);
}

#[tokio::test]
async fn contact_list_pages_with_after() {
    let (_sim, api) = start().await;
    for i in 0..5 {
        create_contact(&api, json!({"email": format!("p{i}@example.com")})).await;
    }
    let first = api
        .get("/crm/v3/objects/contacts?limit=2&properties=email")
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["results"].as_array().unwrap().len(), 2);
    let after = first.body["paging"]["next"]["after"].as_str().unwrap();
    let rest = api
        .get(&format!("/crm/v3/objects/contacts?limit=10&after={after}"))
        .await;
    assert_eq!(rest.body["results"].as_array().unwrap().len(), 3);
    assert!(rest.body.get("paging").is_none());
}

// ----- deals -----------------------------------------------------------------------------------

#[tokio::test]
async fn deals_on_both_paths_with_pipeline_rules() {
    let (sim, api) = start().await;
    let ann = create_contact(&api, json!({"email": "ann@example.com"})).await;
    let deal = create_deal(
        &api,
        json!({"dealname": "Ann's deal", "amount": 300}),
        Some(&ann),
    )
    .await;
    let id = deal["id"].as_str().unwrap().to_owned();
    assert_eq!(deal["properties"]["pipeline"], "default");
    assert_eq!(deal["properties"]["dealstage"], "appointmentscheduled");
    assert_eq!(deal["properties"]["hs_is_closed_won"], "false");
    assert_eq!(deal["properties"]["amount"], "300");
    assert_eq!(deal["properties"]["hs_object_id"], id.as_str());
    assert!(deal["properties"]["hs_lastmodifieddate"].is_string());
    assert_eq!(sim.contacts_of_deal(&id), vec![ann.clone()]);

    // The same deal on /0-3, with its associations.
    let read = api
        .get(&format!(
            "/crm/v3/objects/0-3/{id}?associations=contacts&properties=dealstage,hs_is_closed_won"
        ))
        .await;
    assert_eq!(read.status, 200, "{:#}", read.body);
    assert_eq!(
        read.body["associations"]["contacts"]["results"],
        json!([{"id": ann, "type": "deal_to_contact"}])
    );
    assert_eq!(read.body["properties"]["dealstage"], "appointmentscheduled");
    let default_read = api.get(&format!("/crm/v3/objects/deals/{id}")).await;
    assert_eq!(
        keys(&default_read.body["properties"]),
        [
            "amount",
            "closedate",
            "createdate",
            "dealname",
            "dealstage",
            "hs_lastmodifieddate",
            "hs_object_id",
            "pipeline"
        ]
    );
    let contact_side = api
        .get(&format!(
            "/crm/v3/objects/contacts/{ann}?associations=deals"
        ))
        .await;
    assert_eq!(
        contact_side.body["associations"]["deals"]["results"],
        json!([{"id": id, "type": "contact_to_deal"}])
    );

    // Won: hs_is_closed_won follows the stage.
    let won = api
        .patch(
            &format!("/crm/v3/objects/0-3/{id}"),
            json!({"properties": {"dealstage": "closedwon"}}),
        )
        .await;
    assert_eq!(won.status, 200);
    assert_eq!(won.body["properties"]["hs_is_closed_won"], "true");
    assert_eq!(won.body["properties"]["hs_is_closed"], "true");
    let lost = api
        .patch(
            &format!("/crm/v3/objects/deals/{id}"),
            json!({"properties": {"dealstage": "closedlost"}}),
        )
        .await;
    assert_eq!(lost.body["properties"]["hs_is_closed_won"], "false");
    assert_eq!(lost.body["properties"]["hs_is_closed"], "true");

    // Unknown stage, unknown pipeline, a custom stage outside its pipeline: 400.
    let (pipeline, stages) = sim.add_pipeline(
        "Partners",
        &[
            ("New", false, 0.1),
            ("Signed", true, 1.0),
            ("Dropped", true, 0.0),
        ],
    );
    for properties in [
        json!({"dealstage": "nonsense"}),
        json!({"pipeline": "nope"}),
        json!({"dealstage": stages[0]}),
    ] {
        let answer = api
            .post(
                "/crm/v3/objects/deals",
                json!({"properties": properties, "associations": []}),
            )
            .await;
        assert_eq!(answer.status, 400, "{properties}");
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap()
                .contains("INVALID_OPTION")
        );
    }
    // A custom pipeline without a stage gets its first stage; its won stage counts as won.
    let custom = create_deal(&api, json!({"dealname": "P", "pipeline": pipeline}), None).await;
    assert_eq!(custom["properties"]["dealstage"], stages[0].as_str());
    let custom_id = custom["id"].as_str().unwrap();
    let signed = api
        .patch(
            &format!("/crm/v3/objects/deals/{custom_id}"),
            json!({"properties": {"dealstage": stages[1]}}),
        )
        .await;
    assert_eq!(signed.body["properties"]["hs_is_closed_won"], "true");
    // Moving to another pipeline needs a stage of that pipeline.
    let switch = api
        .patch(
            &format!("/crm/v3/objects/deals/{custom_id}"),
            json!({"properties": {"pipeline": "default"}}),
        )
        .await;
    assert_eq!(switch.status, 400);
    let switch = api
        .patch(
            &format!("/crm/v3/objects/deals/{custom_id}"),
            json!({"properties": {"pipeline": "default", "dealstage": "qualifiedtobuy"}}),
        )
        .await;
    assert_eq!(switch.status, 200);
    // Calculated properties are read-only; amounts must be numbers.
    for properties in [
        json!({"hs_is_closed_won": "true"}),
        json!({"amount": "lots"}),
    ] {
        let answer = api
            .patch(
                &format!("/crm/v3/objects/deals/{id}"),
                json!({ "properties": properties }),
            )
            .await;
        assert_eq!(answer.status, 400, "{properties}");
    }
    assert_eq!(sim.deals().len(), 2);
    assert_eq!(
        sim.deal(&id).unwrap()["properties"]["dealstage"],
        "closedlost"
    );
}

#[tokio::test]
async fn deal_batches_and_unique_property_upsert() {
    let (sim, api) = start().await;
    // Upsert needs a unique idProperty.
    let not_unique = api
        .post(
            "/crm/v3/objects/deals/batch/upsert",
            json!({"inputs": [{"id": "Deal A", "idProperty": "dealname", "properties": {}}]}),
        )
        .await;
    assert_eq!(not_unique.status, 400);
    let message = not_unique.body["message"].as_str().unwrap();
    assert!(
        message.contains("dealname") && message.contains("hasUniqueValue=true"),
        "{message}"
    );
    let missing = api
        .post(
            "/crm/v3/objects/deals/batch/upsert",
            json!({"inputs": [{"id": "R-1", "idProperty": "referral_id", "properties": {}}]}),
        )
        .await;
    assert_eq!(missing.status, 400);

    sim.add_property("deals", "referral_id", true);
    assert_eq!(
        sim.property("deals", "referral_id").unwrap()["hasUniqueValue"],
        true
    );
    let upsert = |dealname: &str| json!({"inputs": [{"id": "R-1", "idProperty": "referral_id", "properties": {"dealname": dealname}}]});
    let first = api
        .post("/crm/v3/objects/0-3/batch/upsert", upsert("Referral R-1"))
        .await;
    assert_eq!(first.status, 200, "{:#}", first.body);
    assert_eq!(first.body["results"][0]["new"], true);
    assert_eq!(first.body["results"][0]["properties"]["referral_id"], "R-1");
    assert_eq!(
        first.body["results"][0]["properties"]["dealstage"],
        "appointmentscheduled"
    );
    let id = first.body["results"][0]["id"].as_str().unwrap().to_owned();
    let second = api
        .post("/crm/v3/objects/deals/batch/upsert", upsert("Renamed"))
        .await;
    assert_eq!(second.body["results"][0]["new"], false);
    assert_eq!(second.body["results"][0]["id"], id.as_str());
    assert_eq!(sim.deals().len(), 1);

    // GET by the unique property; a second deal may not take the same value (409).
    let by_ref = api
        .get("/crm/v3/objects/deals/R-1?idProperty=referral_id")
        .await;
    assert_eq!(by_ref.body["id"], id.as_str());
    let other = create_deal(&api, json!({"dealname": "Other"}), None).await;
    let clash = api
        .patch(
            &format!("/crm/v3/objects/deals/{}", other["id"].as_str().unwrap()),
            json!({"properties": {"referral_id": "R-1"}}),
        )
        .await;
    assert_eq!(clash.status, 409);
    assert_eq!(clash.body["category"], "CONFLICT");

    // Batch create, read, update on deals.
    let created = api
        .post(
            "/crm/v3/objects/deals/batch/create",
            json!({"inputs": [
                {"properties": {"dealname": "B1", "dealstage": "qualifiedtobuy"}, "associations": []},
                {"properties": {"dealname": "B2"}, "associations": []},
            ]}),
        )
        .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    let b1 = created.body["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = api
        .post(
            "/crm/v3/objects/0-3/batch/read",
            json!({"inputs": [{"id": b1}], "properties": ["dealstage", "closedate"], "propertiesWithHistory": ["dealstage"]}),
        )
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.body["results"][0]["properties"]["closedate"],
        Value::Null
    );
    let updated = api
        .post(
            "/crm/v3/objects/deals/batch/update",
            json!({"inputs": [{"id": b1, "properties": {"dealstage": "closedwon"}}]}),
        )
        .await;
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.body["results"][0]["properties"]["hs_is_closed_won"],
        "true"
    );
    let history = api
        .post(
            "/crm/v3/objects/deals/batch/read",
            json!({"inputs": [{"id": b1}], "properties": [], "propertiesWithHistory": ["dealstage"]}),
        )
        .await;
    let stages: Vec<&str> = history.body["results"][0]["propertiesWithHistory"]["dealstage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["value"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["closedwon", "qualifiedtobuy"], "newest first");

    // The properties API creates unique properties too.
    let created_property = api
        .post(
            "/crm/v3/properties/deals",
            json!({"name": "external_ref", "label": "External ref", "type": "string", "fieldType": "text", "groupName": "dealinformation", "hasUniqueValue": true}),
        )
        .await;
    assert_eq!(created_property.status, 201);
    let by_external = api
        .post(
            "/crm/v3/objects/deals/batch/upsert",
            json!({"inputs": [{"id": "X-9", "idProperty": "external_ref", "properties": {"dealname": "X"}}]}),
        )
        .await;
    assert_eq!(by_external.status, 200, "{:#}", by_external.body);
    assert_eq!(by_external.body["results"][0]["new"], true);
}

// ----- associations, pipelines, properties ---------------------------------------------------

#[tokio::test]
async fn associations_read_create_archive() {
    let (sim, api) = start().await;
    let ann = create_contact(&api, json!({"email": "ann@example.com"})).await;
    let bob = create_contact(&api, json!({"email": "bob@example.com"})).await;
    let deal = create_deal(&api, json!({"dealname": "D"}), None).await;
    let deal = deal["id"].as_str().unwrap().to_owned();

    let create =
        json!({"inputs": [{"from": {"id": deal}, "to": {"id": ann}, "type": "deal_to_contact"}]});
    let created = api
        .post(
            "/crm/v3/associations/deals/contacts/batch/create",
            create.clone(),
        )
        .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    assert_eq!(
        created.body["results"],
        json!([{"from": {"id": deal}, "to": {"id": ann}, "type": "deal_to_contact"}])
    );
    // Idempotent: the same association again is fine and records no events.
    let events_before = sim.pending_events().len();
    let again = api
        .post("/crm/v3/associations/deal/contact/batch/create", create)
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(sim.pending_events().len(), events_before);
    // From the contact side, singular names, the other direction's type.
    let from_contact = api
        .post(
            "/crm/v3/associations/contact/deal/batch/create",
            json!({"inputs": [{"from": {"id": bob}, "to": {"id": deal}, "type": "contact_to_deal"}]}),
        )
        .await;
    assert_eq!(from_contact.status, 201);
    assert_eq!(sim.contacts_of_deal(&deal), vec![ann.clone(), bob.clone()]);

    let read = api
        .post(
            "/crm/v3/associations/deals/contacts/batch/read",
            json!({"inputs": [{"id": deal}]}),
        )
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["status"], "COMPLETE");
    assert_eq!(
        read.body["results"],
        json!([{"from": {"id": deal}, "to": [
            {"id": ann, "type": "deal_to_contact"},
            {"id": bob, "type": "deal_to_contact"},
        ]}])
    );
    let lonely = create_contact(&api, json!({"email": "cat@example.com"})).await;
    let read = api
        .post(
            "/crm/v3/associations/contacts/deals/batch/read",
            json!({"inputs": [{"id": ann}, {"id": lonely}, {"id": "777"}]}),
        )
        .await;
    assert_eq!(
        read.body["results"],
        json!([{"from": {"id": ann}, "to": [{"id": deal, "type": "contact_to_deal"}]}]),
        "ids without associations are left out"
    );

    // Wrong type for the direction, unknown objects, unknown object types.
    let wrong = api
        .post(
            "/crm/v3/associations/deals/contacts/batch/create",
            json!({"inputs": [{"from": {"id": deal}, "to": {"id": ann}, "type": "contact_to_deal"}]}),
        )
        .await;
    assert_eq!(wrong.status, 400);
    let unknown = api
        .post(
            "/crm/v3/associations/deals/contacts/batch/create",
            json!({"inputs": [{"from": {"id": deal}, "to": {"id": "31337"}, "type": "deal_to_contact"}]}),
        )
        .await;
    assert_eq!(unknown.status, 207);
    assert_eq!(
        unknown.body["errors"][0]["context"]["ids"],
        json!(["31337"])
    );
    let companies = api
        .post(
            "/crm/v3/associations/deals/companies/batch/read",
            json!({"inputs": [{"id": deal}]}),
        )
        .await;
    assert_eq!(companies.status, 400);

    let archived = api
        .post(
            "/crm/v3/associations/deals/contacts/batch/archive",
            json!({"inputs": [{"from": {"id": deal}, "to": {"id": ann}, "type": "deal_to_contact"}]}),
        )
        .await;
    assert_eq!(archived.status, 204);
    assert_eq!(archived.body, Value::Null);
    assert_eq!(sim.contacts_of_deal(&deal), vec![bob]);
    assert!(sim.deals_of_contact(&ann).is_empty());
}

#[tokio::test]
async fn pipelines_and_stages() {
    let (sim, api) = start().await;
    let all = api.get("/crm/v3/pipelines/deals").await;
    assert_eq!(all.status, 200);
    let default = &all.body["results"][0];
    assert_eq!(default["id"], "default");
    assert_eq!(default["archived"], false);
    let stages = default["stages"].as_array().unwrap();
    let ids: Vec<&str> = stages.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "appointmentscheduled",
            "qualifiedtobuy",
            "presentationscheduled",
            "decisionmakerboughtin",
            "contractsent",
            "closedwon",
            "closedlost"
        ]
    );
    assert_eq!(
        stages[0]["metadata"],
        json!({"isClosed": "false", "probability": "0.2"})
    );
    assert_eq!(
        stages[5]["metadata"],
        json!({"isClosed": "true", "probability": "1.0"})
    );
    assert_eq!(
        stages[6]["metadata"],
        json!({"isClosed": "true", "probability": "0.0"})
    );
    for key in [
        "label",
        "displayOrder",
        "createdAt",
        "updatedAt",
        "archived",
    ] {
        assert!(stages[0].get(key).is_some(), "{key}");
    }

    let (id, stage_ids) = sim.add_pipeline("Partners", &[("New", false, 0.1), ("Won", true, 1.0)]);
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(stage_ids.len(), 2);
    assert_eq!(stage_ids[0].len(), 36, "UUID stage ids");
    let stages = api
        .get(&format!("/crm/v3/pipelines/deals/{id}/stages"))
        .await;
    assert_eq!(stages.status, 200);
    assert_eq!(stages.body["results"][1]["id"], stage_ids[1].as_str());
    assert_eq!(stages.body["results"][1]["metadata"]["probability"], "1.0");
    let one = api
        .get(&format!(
            "/crm/v3/pipelines/0-3/{id}/stages/{}",
            stage_ids[0]
        ))
        .await;
    assert_eq!(one.body["label"], "New");
    let pipeline = api.get(&format!("/crm/v3/pipelines/deals/{id}")).await;
    assert_eq!(pipeline.body["label"], "Partners");
    assert_eq!(
        api.get("/crm/v3/pipelines/deals").await.body["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let missing = api.get("/crm/v3/pipelines/deals/12345").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["category"], "OBJECT_NOT_FOUND");
    assert_eq!(api.get("/crm/v3/pipelines/contacts").await.status, 400);
    // The dealstage property lists every stage as an option.
    let dealstage = sim.property("deals", "dealstage").unwrap();
    assert_eq!(dealstage["options"].as_array().unwrap().len(), 9);
}

#[tokio::test]
async fn properties_list_create_and_read() {
    let (sim, api) = start().await;
    let list = api.get("/crm/v3/properties/contacts").await;
    assert_eq!(list.status, 200);
    let names: Vec<&str> = list.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "email",
        "firstname",
        "lastname",
        "phone",
        "company",
        "website",
        "lifecyclestage",
        "hs_object_id",
        "createdate",
        "lastmodifieddate",
        "referral_code",
    ] {
        assert!(names.contains(&name), "{name}");
    }
    let code = api.get("/crm/v3/properties/contacts/referral_code").await;
    assert_eq!(code.status, 200);
    assert_eq!(code.body["type"], "string");
    assert_eq!(code.body["fieldType"], "text");
    assert_eq!(code.body["hasUniqueValue"], false);
    assert!(code.body.get("hubspotDefined").is_none());
    let email = api.get("/crm/v3/properties/0-1/email").await;
    assert_eq!(email.body["hubspotDefined"], true);
    assert_eq!(api.get("/crm/v3/properties/deals/nope").await.status, 404);

    let body = json!({
        "name": "referrer_email", "label": "Referrer email", "type": "string",
        "fieldType": "text", "groupName": "contactinformation", "hasUniqueValue": true,
    });
    let created = api.post("/crm/v3/properties/contacts", body.clone()).await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    assert_eq!(created.body["name"], "referrer_email");
    assert_eq!(created.body["hasUniqueValue"], true);
    let exists = api.post("/crm/v3/properties/contacts", body).await;
    assert_eq!(exists.status, 409);
    assert_eq!(exists.body["category"], "OBJECT_ALREADY_EXISTS");
    let bad_type = api
        .post(
            "/crm/v3/properties/contacts",
            json!({"name": "x_y", "label": "X", "type": "text", "fieldType": "text", "groupName": "contactinformation"}),
        )
        .await;
    assert_eq!(bad_type.status, 400);
    // The new property can be written (and, being unique, used as idProperty).
    let id = create_contact(
        &api,
        json!({"email": "a@example.com", "referrer_email": "r@example.com"}),
    )
    .await;
    let read = api
        .get("/crm/v3/objects/contacts/r@example.com?idProperty=referrer_email")
        .await;
    assert_eq!(read.body["id"], id.as_str());
    assert!(sim.property("contacts", "referrer_email").is_some());
    sim.add_property("contact", "partner_code", false);
    assert_eq!(
        sim.property("0-1", "partner_code").unwrap()["label"],
        "Partner Code"
    );
}

// ----- limits and faults -------------------------------------------------------------------------

#[tokio::test]
async fn rolling_rate_limit_answers_429_and_counts() {
    let mut opts = HubSpotSimOptions::new(TOKEN, SECRET);
    opts.burst_per_10s = 3;
    let (sim, api) = start_with(opts).await;
    for remaining in ["2", "1", "0"] {
        let answer = api.get("/crm/v3/pipelines/deals").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-hubspot-ratelimit-max"), Some("3"));
        assert_eq!(
            answer.header("x-hubspot-ratelimit-remaining"),
            Some(remaining)
        );
        assert_eq!(
            answer.header("x-hubspot-ratelimit-interval-milliseconds"),
            Some("10000")
        );
    }
    let limited = api.get("/crm/v3/pipelines/deals").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["status"], "error");
    assert_eq!(
        limited.body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert_eq!(limited.body["errorType"], "RATE_LIMIT");
    assert_eq!(limited.body["policyName"], "TEN_SECONDLY_ROLLING");
    assert!(limited.body["correlationId"].is_string());
    assert_eq!(limited.header("x-hubspot-ratelimit-remaining"), Some("0"));
    assert_eq!(api.get("/crm/v3/pipelines/deals").await.status, 429);
    assert_eq!(sim.rate_limit_violations(), 2);
    // The OAuth endpoint is not limited.
    let (status, _) = token_call(
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "sim-client"),
            ("client_secret", SECRET),
            ("redirect_uri", "https://x.example/cb"),
            ("code", "sim-code"),
        ],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn fail_next_injects_hubspot_errors() {
    let (sim, api) = start().await;
    sim.fail_next(423, 1);
    sim.fail_next(500, 2);
    sim.fail_next(429, 1);
    let locked = api.get("/crm/v3/pipelines/deals").await;
    assert_eq!(locked.status, 423);
    assert_eq!(locked.body["status"], "error");
    assert_eq!(locked.body["category"], "LOCKED");
    assert!(locked.body["correlationId"].is_string());
    assert!(locked.header("x-hubspot-ratelimit-max").is_some());
    // The OAuth endpoint does not consume injected failures.
    let (status, _) = token_call(&sim, &[("grant_type", "refresh_token")]).await;
    assert_eq!(status, 400);
    for _ in 0..2 {
        let answer = api.get("/crm/v3/pipelines/deals").await;
        assert_eq!(answer.status, 500);
        assert_eq!(answer.body["category"], "INTERNAL_ERROR");
    }
    let limited = api.get("/crm/v3/pipelines/deals").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["errorType"], "RATE_LIMIT");
    assert_eq!(sim.rate_limit_violations(), 1);
    assert_eq!(api.get("/crm/v3/pipelines/deals").await.status, 200);
    // Everything is in the request log.
    assert_eq!(
        sim.simulator()
            .requests_to("GET", "/crm/v3/pipelines/deals")
            .len(),
        5
    );
}

// ----- webhook events ---------------------------------------------------------------------------

#[tokio::test]
async fn events_are_recorded_per_subscription_only() {
    let (sim, api) = start().await;
    let id = create_contact(
        &api,
        json!({"email": "ann@example.com", "firstname": "Ann", "lifecyclestage": "lead", "referral_code": "REF-1"}),
    )
    .await;
    let events = sim.pending_events();
    let types: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e["subscriptionType"].as_str().unwrap(),
                e["propertyName"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("contact.creation", None),
            ("contact.propertyChange", Some("lifecyclestage")),
            ("contact.propertyChange", Some("referral_code")),
        ],
        "firstname and email are not subscribed"
    );
    let creation = &events[0];
    assert_eq!(
        keys(creation),
        [
            "appId",
            "attemptNumber",
            "changeFlag",
            "changeSource",
            "eventId",
            "objectId",
            "occurredAt",
            "portalId",
            "subscriptionId",
            "subscriptionType"
        ]
    );
    assert_eq!(creation["objectId"], id.parse::<u64>().unwrap());
    assert_eq!(creation["changeFlag"], "CREATED");
    assert_eq!(creation["changeSource"], "API");
    assert_eq!(creation["portalId"], 62515);
    assert_eq!(creation["appId"], 54321);
    assert_eq!(creation["attemptNumber"], 0);
    let change = &events[1];
    assert_eq!(change["propertyValue"], "lead");
    assert!(change["eventId"].is_u64());
    assert_eq!(
        change["eventId"], creation["eventId"],
        "one change, one eventId"
    );
    let subscriptions = sim.subscriptions();
    let lifecycle_sub = subscriptions
        .iter()
        .find(|(_, t, p)| t == "contact.propertyChange" && p.as_deref() == Some("lifecyclestage"))
        .unwrap();
    assert_eq!(change["subscriptionId"], lifecycle_sub.0);
    let times: Vec<i64> = events
        .iter()
        .map(|e| e["occurredAt"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");

    // Unchanged values record nothing; a UI edit records CRM_UI.
    api.patch(
        &format!("/crm/v3/objects/contacts/{id}"),
        json!({"properties": {"lifecyclestage": "lead", "firstname": "Anna"}}),
    )
    .await;
    assert_eq!(sim.pending_events().len(), 3);
    sim.set_contact_property(&id, "referral_code", "REF-2")
        .unwrap();
    let events = sim.pending_events();
    assert_eq!(events.len(), 4);
    assert_eq!(events[3]["changeSource"], "CRM_UI");
    assert_eq!(events[3]["propertyValue"], "REF-2");
    assert!(events[3]["occurredAt"].as_i64() > events[2]["occurredAt"].as_i64());
    assert_ne!(events[3]["eventId"], events[2]["eventId"]);
    // Clearing records the empty value.
    sim.set_contact_property(&id, "referral_code", "").unwrap();
    assert_eq!(sim.pending_events()[4]["propertyValue"], "");
    assert!(
        sim.set_contact_property(&id, "nonexistent", "x")
            .unwrap_err()
            .contains("does not exist")
    );
    assert!(sim.set_contact_property("999", "firstname", "x").is_err());

    // Other subscriptions: only what is subscribed is recorded.
    let mut opts = HubSpotSimOptions::new(TOKEN, SECRET);
    opts.subscriptions = vec![
        (
            "deal.propertyChange".to_owned(),
            Some("dealstage".to_owned()),
        ),
        ("contact.propertyChange".to_owned(), None),
    ];
    let (sim2, api2) = start_with(opts).await;
    let c = create_contact(&api2, json!({"email": "x@example.com", "firstname": "X"})).await;
    let names: Vec<String> = sim2
        .pending_events()
        .iter()
        .map(|e| e["propertyName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["createdate", "email", "firstname", "hs_object_id"]);
    let deal = sim2.create_deal_ui(&[("dealname", "D")], &[&c]).unwrap();
    sim2.move_deal(&deal, "contractsent").unwrap();
    let deal_events: Vec<Value> = sim2
        .pending_events()
        .into_iter()
        .filter(|e| e["subscriptionType"].as_str().unwrap().starts_with("deal."))
        .collect();
    assert_eq!(deal_events.len(), 2, "{deal_events:#?}");
    assert_eq!(deal_events[0]["propertyValue"], "appointmentscheduled");
    assert_eq!(deal_events[1]["propertyValue"], "contractsent");
    assert!(deal_events.iter().all(|e| e["changeSource"] == "CRM_UI"));
}

#[tokio::test]
async fn deal_and_association_events_in_both_directions() {
    let (sim, api) = start().await;
    let ann = create_contact(&api, json!({"email": "ann@example.com"})).await;
    sim.take_batches();
    let deal = sim
        .create_deal_ui(&[("dealname", "Ann's deal"), ("amount", "100")], &[&ann])
        .unwrap();
    let events = sim.pending_events();
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["subscriptionType"].as_str().unwrap(),
                e["propertyName"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "deal.creation ",
            "deal.propertyChange dealstage",
            "deal.propertyChange pipeline",
            "deal.associationChange ",
            "contact.associationChange ",
        ]
    );
    assert!(events.iter().all(|e| e["changeSource"] == "CRM_UI"));
    let deal_assoc = &events[3];
    assert_eq!(
        keys(deal_assoc),
        [
            "appId",
            "associationRemoved",
            "associationType",
            "attemptNumber",
            "changeSource",
            "eventId",
            "fromObjectId",
            "isPrimaryAssociation",
            "objectId",
            "occurredAt",
            "portalId",
            "subscriptionId",
            "subscriptionType",
            "toObjectId"
        ]
    );
    assert_eq!(deal_assoc["associationType"], "DEAL_TO_CONTACT");
    assert_eq!(deal_assoc["fromObjectId"], deal.parse::<u64>().unwrap());
    assert_eq!(deal_assoc["objectId"], deal_assoc["fromObjectId"]);
    assert_eq!(deal_assoc["toObjectId"], ann.parse::<u64>().unwrap());
    assert_eq!(deal_assoc["associationRemoved"], false);
    assert_eq!(deal_assoc["isPrimaryAssociation"], false);
    let contact_assoc = &events[4];
    assert_eq!(contact_assoc["associationType"], "CONTACT_TO_DEAL");
    assert_eq!(contact_assoc["fromObjectId"], ann.parse::<u64>().unwrap());
    assert_eq!(contact_assoc["toObjectId"], deal.parse::<u64>().unwrap());
    assert_eq!(contact_assoc["objectId"], contact_assoc["fromObjectId"]);
    assert_eq!(contact_assoc["eventId"], deal_assoc["eventId"]);

    // Stage moves: to a custom pipeline's stage, the pipeline follows.
    sim.take_batches();
    let (pipeline, stages) = sim.add_pipeline("Partners", &[("Signed", true, 1.0)]);
    sim.move_deal(&deal, &stages[0]).unwrap();
    let moved = sim.pending_events();
    assert_eq!(moved.len(), 2);
    assert_eq!(moved[0]["propertyName"], "dealstage");
    assert_eq!(moved[0]["propertyValue"], stages[0].as_str());
    assert_eq!(moved[1]["propertyName"], "pipeline");
    assert_eq!(moved[1]["propertyValue"], pipeline.as_str());
    assert_eq!(
        sim.deal(&deal).unwrap()["properties"]["hs_is_closed_won"],
        "true"
    );
    sim.move_deal(&deal, &stages[0]).unwrap();
    assert_eq!(sim.pending_events().len(), 2, "same stage: nothing");
    assert!(sim.move_deal(&deal, "nowhere").is_err());
    assert!(sim.move_deal("424242", "closedwon").is_err());

    // API associations from the contact side: the contact's event first; API source.
    sim.take_batches();
    let bob = create_contact(&api, json!({"email": "bob@example.com"})).await;
    sim.take_batches();
    api.post(
        "/crm/v3/associations/contacts/deals/batch/create",
        json!({"inputs": [{"from": {"id": bob}, "to": {"id": deal}, "type": "contact_to_deal"}]}),
    )
    .await;
    let api_events = sim.pending_events();
    assert_eq!(api_events.len(), 2);
    assert_eq!(
        api_events[0]["subscriptionType"],
        "contact.associationChange"
    );
    assert_eq!(api_events[1]["subscriptionType"], "deal.associationChange");
    assert!(api_events.iter().all(|e| e["changeSource"] == "API"));
    // Removal records associationRemoved: true; a UI association of an existing pair nothing.
    sim.take_batches();
    sim.associate_ui(&deal, &bob).unwrap();
    assert!(sim.pending_events().is_empty());
    api.post(
        "/crm/v3/associations/deals/contacts/batch/archive",
        json!({"inputs": [{"from": {"id": deal}, "to": {"id": bob}, "type": "deal_to_contact"}]}),
    )
    .await;
    let removed = sim.pending_events();
    assert_eq!(removed.len(), 2);
    assert!(removed.iter().all(|e| e["associationRemoved"] == true));
    sim.take_batches();
    sim.associate_ui(&deal, &bob).unwrap();
    assert_eq!(sim.pending_events().len(), 2);
    assert!(sim.associate_ui(&deal, "999").is_err());

    // create_deal_ui validates like the API.
    assert!(
        sim.create_deal_ui(&[("dealstage", "nowhere")], &[])
            .is_err()
    );
    assert!(sim.create_deal_ui(&[("dealname", "x")], &["999"]).is_err());
    assert!(
        sim.create_deal_ui(&[("dealstage", &stages[0])], &[])
            .is_err()
    );
    assert!(
        sim.create_deal_ui(&[("pipeline", &pipeline), ("dealstage", &stages[0])], &[])
            .is_ok()
    );
    // Deal creation over the API with associations records API events.
    sim.take_batches();
    create_deal(&api, json!({"dealname": "API deal"}), Some(&ann)).await;
    let api_deal_events = sim.pending_events();
    assert_eq!(events_of(&api_deal_events, "deal.creation").len(), 1);
    assert_eq!(
        events_of(&api_deal_events, "deal.associationChange").len(),
        1
    );
    assert_eq!(
        events_of(&api_deal_events, "contact.associationChange").len(),
        1
    );
    assert!(api_deal_events.iter().all(|e| e["changeSource"] == "API"));
}

#[tokio::test]
async fn event_shapes_match_real_payloads() {
    let (sim, _) = start().await;
    let deal = sim.create_deal_ui(&[("dealname", "D")], &[]).unwrap();
    sim.move_deal(&deal, "closedwon").unwrap();
    let batches = sim.take_batches();
    assert_eq!(batches.len(), 1);
    let body = String::from_utf8(batches[0].body.clone()).unwrap();
    let ours: Vec<Value> = serde_json::from_str(&body).unwrap();
    let stage_change = ours
        .iter()
        .rev()
        .find(|e| e["propertyName"] == "dealstage")
        .unwrap();
    assert_eq!(stage_change["propertyValue"], "closedwon");

    // Same keys, in the same order, as the captured delivery (dj-hubspot).
    let real: Vec<Value> = serde_json::from_str(DJ_FIXTURE).unwrap();
    assert_eq!(keys(stage_change), keys(&real[0]));
    let position = body.find("\"propertyName\":\"dealstage\",\"propertyValue\":\"closedwon\"");
    let ours_text = &body[body[..position.unwrap()].rfind('{').unwrap()..];
    let ours_text = &ours_text[..=ours_text.find('}').unwrap()];
    assert_eq!(key_order(ours_text), key_order(DJ_FIXTURE));

    // The docs' creation sample: same keys plus changeFlag (and subscriptionType, which the
    // docs sample misnames eventType).
    let docs: Vec<Value> = serde_json::from_str(DOCS_FIXTURE).unwrap();
    let creation = ours
        .iter()
        .find(|e| e["subscriptionType"] == "deal.creation")
        .unwrap();
    let mut expected = keys(&docs[1]);
    expected.retain(|k| k != "eventType");
    expected.extend(["changeFlag".to_owned(), "subscriptionType".to_owned()]);
    expected.sort();
    assert_eq!(keys(creation), expected);
    let mut expected = keys(&docs[0]);
    expected.retain(|k| k != "eventType");
    expected.push("subscriptionType".to_owned());
    expected.sort();
    assert_eq!(keys(stage_change), expected);
}

// ----- webhook delivery -------------------------------------------------------------------------

/// Checks the headers and signatures of a received webhook request.
fn assert_signed(req: &RecordedRequest, url: &str, versions: &[&str]) {
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("user-agent"), Some(USER_AGENT));
    let timestamp: i64 = req
        .header("x-hubspot-request-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert!((now - timestamp).abs() < 60_000, "timestamp in ms");
    if versions.contains(&"v3") {
        assert_eq!(
            req.header("x-hubspot-signature-v3"),
            Some(sign_v3(SECRET, "POST", url, &req.body, timestamp).as_str())
        );
        // Cross-check with an independent HMAC implementation.
        let mut message = format!("POST{url}").into_bytes();
        message.extend_from_slice(&req.body);
        message.extend_from_slice(timestamp.to_string().as_bytes());
        assert_eq!(
            req.header("x-hubspot-signature-v3").unwrap(),
            refsync_http::signature::hmac_sha256_base64(SECRET.as_bytes(), &message)
        );
    } else {
        assert!(req.header("x-hubspot-signature-v3").is_none());
    }
    if versions.contains(&"v1") {
        assert_eq!(
            req.header("x-hubspot-signature"),
            Some(sign_v1(SECRET, &req.body).as_str())
        );
        assert_eq!(req.header("x-hubspot-signature-version"), Some("v1"));
    } else {
        assert!(req.header("x-hubspot-signature").is_none());
        assert!(req.header("x-hubspot-signature-version").is_none());
    }
}

#[test]
fn official_v3_signature_vector() {
    assert_eq!(
        sign_v3(
            "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
            "POST",
            "https://www.example.com/webhook_uri",
            b"{'example_field':'example_value'}",
            1_693_657_560_000,
        ),
        "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
    );
    // v1 = hex(sha256(secret + body)), e.g. the FIPS "abc" vector split in two.
    assert_eq!(
        sign_v1("ab", b"c"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[tokio::test]
async fn deliver_posts_signed_batches_of_batch_size() {
    let receiver = Receiver::start(200).await;
    let mut opts = HubSpotSimOptions::new(TOKEN, SECRET);
    opts.batch_size = 3;
    opts.target_url = Some(receiver.url());
    let (sim, api) = start_with(opts).await;
    for i in 0..7 {
        // One creation event each (no subscribed property set).
        create_contact(&api, json!({"email": format!("c{i}@example.com")})).await;
    }
    assert_eq!(sim.pending_events().len(), 7);
    let delivered = sim.deliver().await;
    let sizes: Vec<usize> = delivered.iter().map(|(b, _)| b.events.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    for (batch, answer) in &delivered {
        assert_eq!(answer.as_ref().unwrap().0, 200);
        assert_eq!(batch.attempt, 0);
        assert_eq!(batch.url, receiver.url());
    }
    assert!(sim.pending_events().is_empty());
    assert!(sim.failed_batches().is_empty());
    let received = receiver.requests();
    assert_eq!(received.len(), 3);
    let mut object_ids = Vec::new();
    for (req, (batch, _)) in received.iter().zip(&delivered) {
        assert_eq!(req.body, batch.body);
        assert_signed(req, &receiver.url(), &["v1", "v3"]);
        let events: Vec<Value> = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(events, batch.events);
        object_ids.extend(events.iter().map(|e| e["objectId"].as_u64().unwrap()));
    }
    let mut sorted = object_ids.clone();
    sorted.sort_unstable();
    assert_eq!(object_ids, sorted, "in order");
    // Nothing pending: nothing sent.
    assert!(sim.deliver().await.is_empty());

    // Only v3 when configured so.
    let receiver3 = Receiver::start(204).await;
    let mut opts = HubSpotSimOptions::new(TOKEN, SECRET);
    opts.signature_versions = vec!["v3"];
    let (sim3, api3) = start_with(opts).await;
    create_contact(&api3, json!({"email": "x@example.com"})).await;
    // No target URL yet: nothing is sent and the events stay pending.
    assert!(sim3.deliver().await.is_empty());
    assert_eq!(sim3.pending_events().len(), 1);
    sim3.set_target_url(&receiver3.url());
    let delivered = sim3.deliver().await;
    assert_eq!(delivered[0].1.as_ref().unwrap().0, 204);
    assert_signed(&receiver3.requests()[0], &receiver3.url(), &["v3"]);

    // Unknown signature versions and an empty batch size are refused at start.
    let mut bad = HubSpotSimOptions::new(TOKEN, SECRET);
    bad.signature_versions = vec!["v2"];
    assert!(HubSpotSim::start(bad).await.is_err());
    let mut bad = HubSpotSimOptions::new(TOKEN, SECRET);
    bad.batch_size = 0;
    assert!(HubSpotSim::start(bad).await.is_err());
}

#[tokio::test]
async fn failed_batches_are_retried_with_the_next_attempt_number() {
    let receiver = Receiver::start(500).await;
    let mut opts = HubSpotSimOptions::new(TOKEN, SECRET);
    opts.target_url = Some(receiver.url());
    let (sim, api) = start_with(opts).await;
    create_contact(
        &api,
        json!({"email": "ann@example.com", "lifecyclestage": "lead"}),
    )
    .await;
    let first = sim.deliver().await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1.as_ref().unwrap().0, 500);
    let failed = sim.failed_batches();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempt, 1);
    assert!(failed[0].events.iter().all(|e| e["attemptNumber"] == 1));

    let second = sim.redeliver_failed().await;
    assert_eq!(second[0].0.attempt, 1);
    assert_eq!(sim.failed_batches()[0].attempt, 2);
    receiver.set_status(200);
    let third = sim.redeliver_failed().await;
    assert_eq!(third[0].1.as_ref().unwrap().0, 200);
    assert!(sim.failed_batches().is_empty());

    let bodies: Vec<Vec<Value>> = receiver
        .requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let attempts: Vec<u64> = bodies
        .iter()
        .map(|b| b[0]["attemptNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [0, 1, 2]);
    // The same events (ids, times) each time, only attemptNumber moves.
    let strip = |events: &Vec<Value>| -> Vec<Value> {
        events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.as_object_mut().unwrap().remove("attemptNumber");
                e
            })
            .collect()
    };
    assert_eq!(strip(&bodies[0]), strip(&bodies[2]));
    for req in receiver.requests() {
        assert_signed(&req, &receiver.url(), &["v1", "v3"]);
    }

    // A dead endpoint: HubSpot gives up after attempt 10.
    receiver.set_status(503);
    create_contact(&api, json!({"email": "bob@example.com"})).await;
    sim.deliver().await;
    let mut rounds = 0;
    while !sim.failed_batches().is_empty() {
        rounds += 1;
        assert!(rounds <= 20, "retries never end");
        let sent = sim.redeliver_failed().await;
        assert!(sent[0].0.attempt <= MAX_ATTEMPT_NUMBER);
    }
    assert_eq!(rounds, MAX_ATTEMPT_NUMBER as usize);
    let last: Vec<Value> =
        serde_json::from_slice(&receiver.requests().last().unwrap().body).unwrap();
    assert_eq!(last[0]["attemptNumber"], MAX_ATTEMPT_NUMBER);
}

#[tokio::test]
async fn unreachable_or_slow_targets_count_as_failures() {
    // A receiver that never answers in time.
    let slow = Simulator::start(|_: &RecordedRequest| SimResponse::empty(200))
        .await
        .unwrap();
    slow.inject(
        refsync_testkit::sim::FaultRule::new(refsync_testkit::sim::Fault::Latency(
            Duration::from_millis(800),
        ))
        .always(),
    );
    let mut opts = HubSpotSimOptions::new(TOKEN, SECRET);
    opts.webhook_timeout = Duration::from_millis(200);
    opts.target_url = Some(slow.url("/hook"));
    let (sim, api) = start_with(opts).await;
    create_contact(&api, json!({"email": "ann@example.com"})).await;
    let delivered = sim.deliver().await;
    let error = delivered[0].1.as_ref().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(sim.failed_batches()[0].attempt, 1);
    assert_eq!(
        sim.failed_batches()[0]
            .request
            .headers
            .iter()
            .find(|(n, _)| n == "X-HubSpot-Timeout-Millis")
            .map(|(_, v)| v.as_str()),
        Some("200")
    );
}

fn assert_send<T: Send>(_: &T) {}

#[tokio::test]
async fn take_batches_then_send_signs_at_send_time() {
    let receiver = Receiver::start(200).await;
    let (sim, api) = start().await;
    sim.set_target_url(&receiver.url());
    create_contact(&api, json!({"email": "ann@example.com"})).await;
    let batches = sim.take_batches();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert!(sim.pending_events().is_empty());
    // The delivery futures can be spawned.
    assert_send(&sim.send(batch));
    assert_send(&sim.deliver());
    assert_send(&sim.redeliver_failed());
    assert_eq!(batch.request.url, receiver.url());
    assert_eq!(batch.request.body, batch.body);
    sim.send(batch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    sim.send(batch).await.unwrap();
    let received = receiver.requests();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body, received[1].body, "resent as is");
    assert_ne!(
        received[0].header("x-hubspot-request-timestamp"),
        received[1].header("x-hubspot-request-timestamp")
    );
    for req in &received {
        assert_signed(req, &receiver.url(), &["v1", "v3"]);
    }
    // send never queues retries.
    receiver.set_status(500);
    assert_eq!(sim.send(batch).await.unwrap().0, 500);
    assert!(sim.failed_batches().is_empty());
}

// ----- the whole session against the descriptions ------------------------------------------------

/// A connector-like session over every simulated endpoint: every response is checked in
/// [`Api::call`], every request here.
#[tokio::test]
async fn scripted_session_validates_against_the_openapi_descriptions() {
    let (sim, api) = start().await;
    api.get("/crm/v3/properties/contacts").await;
    api.get("/crm/v3/properties/deals").await;
    let created = api
        .post(
            "/crm/v3/properties/deals",
            json!({"name": "referral_id", "label": "Referral id", "type": "string", "fieldType": "text", "groupName": "dealinformation", "hasUniqueValue": true}),
        )
        .await;
    assert_eq!(created.status, 201);
    api.get("/crm/v3/properties/deals/referral_id").await;
    api.get("/crm/v3/pipelines/deals").await;
    api.get("/crm/v3/pipelines/0-3/default").await;
    api.get("/crm/v3/pipelines/deals/default/stages").await;
    api.get("/crm/v3/pipelines/deals/default/stages/closedwon")
        .await;

    let upsert = api
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [
                {"id": "ann@example.com", "idProperty": "email", "properties": {"firstname": "Ann", "referral_code": "REF-ANN"}},
                {"id": "bob@example.com", "idProperty": "email", "properties": {"firstname": "Bob"}},
            ]}),
        )
        .await;
    assert_eq!(upsert.status, 200);
    let ann = upsert.body["results"][0]["id"].as_str().unwrap().to_owned();
    api.get("/crm/v3/objects/contacts/ann%40example.com?idProperty=email&properties=email,referral_code,phone&associations=deals")
        .await;
    api.patch(
        &format!("/crm/v3/objects/contacts/{ann}"),
        json!({"properties": {"lifecyclestage": "opportunity"}}),
    )
    .await;
    create_contact(&api, json!({"email": "cat@example.com"})).await;
    let read = api
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"idProperty": "email", "inputs": [{"id": "ann@example.com"}, {"id": "zed@example.com"}], "properties": ["email", "phone"], "propertiesWithHistory": ["lifecyclestage"]}),
        )
        .await;
    assert_eq!(read.status, 207);
    api.post(
        "/crm/v3/objects/contacts/batch/create",
        json!({"inputs": [{"properties": {"email": "dan@example.com"}, "associations": []}]}),
    )
    .await;
    api.post(
        "/crm/v3/objects/contacts/batch/update",
        json!({"inputs": [{"id": ann, "properties": {"phone": "+1 555 0100"}}, {"id": "1", "properties": {}}]}),
    )
    .await;
    api.get("/crm/v3/objects/contacts?limit=2&properties=email")
        .await;

    let deal = create_deal(
        &api,
        json!({"dealname": "Ann's deal", "referral_id": "R-ANN"}),
        Some(&ann),
    )
    .await;
    let deal_id = deal["id"].as_str().unwrap().to_owned();
    api.post(
        "/crm/v3/objects/0-3/batch/upsert",
        json!({"inputs": [{"id": "R-BOB", "idProperty": "referral_id", "properties": {"dealname": "Bob's deal"}}]}),
    )
    .await;
    api.get(&format!(
        "/crm/v3/objects/deals/{deal_id}?associations=contacts&properties=dealstage,pipeline,hs_is_closed_won"
    ))
    .await;
    api.patch(
        &format!("/crm/v3/objects/0-3/{deal_id}"),
        json!({"properties": {"dealstage": "closedwon", "amount": "250"}}),
    )
    .await;
    api.post(
        "/crm/v3/objects/deals/batch/read",
        json!({"inputs": [{"id": deal_id}], "properties": ["dealstage"], "propertiesWithHistory": ["dealstage"]}),
    )
    .await;
    api.post(
        "/crm/v3/objects/deals/batch/create",
        json!({"inputs": [{"properties": {"dealname": "Batch deal"}, "associations": [
            {"to": {"id": ann}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]}
        ]}]}),
    )
    .await;
    api.post(
        "/crm/v3/objects/deals/batch/update",
        json!({"inputs": [{"id": "R-BOB", "idProperty": "referral_id", "properties": {"dealstage": "closedlost"}}]}),
    )
    .await;
    api.get("/crm/v3/objects/deals?limit=10").await;

    let bob = sim.contact_by_email("bob@example.com").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(
        "/crm/v3/associations/deals/contacts/batch/create",
        json!({"inputs": [{"from": {"id": deal_id}, "to": {"id": bob}, "type": "deal_to_contact"}]}),
    )
    .await;
    api.post(
        "/crm/v3/associations/contacts/deals/batch/read",
        json!({"inputs": [{"id": ann}, {"id": bob}]}),
    )
    .await;
    api.post(
        "/crm/v3/associations/deals/contacts/batch/archive",
        json!({"inputs": [{"from": {"id": deal_id}, "to": {"id": bob}, "type": "deal_to_contact"}]}),
    )
    .await;

    // Errors are HubSpot error bodies (the descriptions' default response).
    assert_eq!(
        api.get("/crm/v3/objects/contacts/4242424").await.status,
        404
    );
    assert_eq!(
        api.post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"email": "ann@example.com"}, "associations": []})
        )
        .await
        .status,
        409
    );
    assert_eq!(
        api.post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"nope": "x"}, "associations": []})
        )
        .await
        .status,
        400
    );
    sim.fail_next(423, 1);
    assert_eq!(api.get("/crm/v3/pipelines/deals").await.status, 423);
    let no_token = Api::with_token(&sim, None)
        .get("/crm/v3/pipelines/deals")
        .await;
    assert_eq!(no_token.status, 401);

    let checked = assert_requests_valid(&sim);
    assert_eq!(checked, sim.simulator().requests().len());
    assert!(checked >= 30, "{checked}");
}

#[test]
fn the_spec_exceptions_are_narrow() {
    let kept = vec![
        "GET /x: response 200: /properties: expected object, got null".to_owned(),
        "GET /x: response 200: /properties/a/b: expected string, got null".to_owned(),
        "GET /x: response 200: /properties/email: expected string, got integer".to_owned(),
    ];
    assert_eq!(spec_errors(Err(kept.clone())), kept);
    let dropped = vec![
        "GET /x: response 200: /properties/phone: expected string, got null".to_owned(),
        "POST /y: response 207: /results/0/properties/closedate: expected string, got null"
            .to_owned(),
    ];
    assert!(spec_errors(Err(dropped)).is_empty());
    assert_eq!(
        spec_path("/crm/v3/objects/deals/5"),
        "/crm/v3/objects/0-3/5"
    );
    assert_eq!(spec_path("/crm/v3/objects/deals"), "/crm/v3/objects/0-3");
    assert_eq!(
        spec_path("/crm/v3/objects/dealsx"),
        "/crm/v3/objects/dealsx"
    );
    assert_eq!(
        spec_path("/crm/v3/objects/0-1/batch/read"),
        "/crm/v3/objects/contacts/batch/read"
    );
    // The validator is active: a batch answer without its required fields fails, and a null
    // property value is reported (then dropped by the exception, alone).
    let upsert = spec_for("POST", "/crm/v3/objects/contacts/batch/upsert").unwrap();
    let raw = upsert
        .validate_response(
            "POST",
            "/crm/v3/objects/contacts/batch/upsert",
            200,
            &json!({"results": [{"id": "1", "properties": {"phone": null}, "createdAt": "x", "updatedAt": "x", "archived": false, "new": true}]}),
        )
        .unwrap_err();
    assert_eq!(raw.len(), 4, "{raw:#?}");
    assert_eq!(spec_errors(Err(raw)).len(), 3);
    // Without the rewrite, the deals description does not know the `deals` path.
    assert!(spec_for("GET", "/crm/v3/objects/0-3/1").is_some());
    assert!(
        specs()
            .iter()
            .all(|s| s.operation_for("GET", "/crm/v3/objects/deals/1").is_none())
    );
}
