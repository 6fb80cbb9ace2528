//! Tests of the Pipedrive simulator over real HTTP (reqwest), with every v1 request and
//! response checked against Pipedrive's v1 OpenAPI description (tests/data/pipedrive).
//!
//! Documented exception to the spec check: this copy of the description is older than
//! webhooks v2, so `POST /v1/webhooks` lists only `added|updated|merged|deleted|*` for
//! `event_action` and no `lead` for `event_object`. Pipedrive accepts the v2 words
//! (`create|change|delete`, `lead`) on the same endpoint, and so does the simulator; the exact
//! enum errors for those values (and only those) are ignored by [`spec_errors`]. Error statuses
//! the description does not declare for an operation (e.g. `400` on `POST /v1/leads`) are not
//! response-checked.

use std::sync::OnceLock;

use chrono::{Duration, Utc};
use refsync_testkit::openapi::OpenApi;
use refsync_testkit::pipedrive::{
    MAX_WEBHOOKS, PERSON_REFERRAL_CODE_KEY, PipedriveSim, PipedriveSimOptions, REFERRAL_CODE_KEY,
};
use refsync_testkit::sim::{RecordedRequest, SimResponse, Simulator};
use serde_json::{Value, json};

const TOKEN: &str = "sim-token-123";

/// Pipedrive's published webhooks v2 sample "Create deal" (webhooks v2 migration guide; the
/// same as /work/shared/fixtures/pipedrive/v2_deal_create.json).
const V2_DEAL_CREATE: &str = r#"{
    "data": {"add_time": "2022-11-24T13:18:55Z", "channel": null, "channel_id": null,
        "close_time": null, "creator_user_id": 12415231, "currency": "EUR", "custom_fields": {},
        "expected_close_date": null, "first_won_time": null, "id": 8, "label_ids": [],
        "lost_reason": null, "lost_time": null, "org_id": 1, "origin": "ManuallyCreated",
        "origin_id": null, "owner_id": 12415231, "person_id": 8, "pipeline_id": 1,
        "probability": null, "stage_change_time": null, "stage_id": 2, "status": "open",
        "title": "Sample Org deal", "update_time": null, "value": 100, "visible_to": "3",
        "won_time": null},
    "previous": null,
    "meta": {"action": "create", "company_id": "8087566",
        "correlation_id": "4095519f-02cb-44bc-bd2f-551d5383f202", "entity_id": "8",
        "entity": "deal", "id": "71825ee0-0054-4267-b5fd-d28b7a414212", "is_bulk_edit": false,
        "timestamp": "2022-11-24T13:18:56.089Z", "type": "general", "user_id": "12415231",
        "version": "2.0", "webhook_id": "4710827", "webhook_owner_id": "12094821",
        "change_source": "app", "attempt": 1, "host": "pd-us.pipedrive.com"}
}"#;

/// `data` keys of the published samples "Create lead" and "Create person".
const V2_LEAD_DATA_KEYS: &[&str] = &[
    "add_time",
    "channel",
    "channel_id",
    "creator_id",
    "custom_fields",
    "expected_close_date",
    "id",
    "is_archived",
    "label_ids",
    "next_activity_id",
    "organization_id",
    "origin",
    "origin_id",
    "owner_id",
    "person_id",
    "source_name",
    "title",
    "update_time",
    "was_seen",
    "value",
];
const V2_PERSON_DATA_KEYS: &[&str] = &[
    "add_time",
    "custom_fields",
    "emails",
    "first_name",
    "id",
    "label",
    "last_name",
    "name",
    "org_id",
    "owner_id",
    "phones",
    "update_time",
    "visible_to",
];

fn spec() -> &'static OpenApi {
    static SPEC: OnceLock<OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| {
        OpenApi::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/pipedrive/openapi-v1.yaml"
        ))
        .expect("pipedrive v1 spec")
    })
}

/// Drops the documented exception: v2 webhook words in `event_action` / `event_object`.
fn spec_errors(result: Result<(), Vec<String>>) -> Vec<String> {
    result
        .err()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            let v2_word = ["\"create\"", "\"change\"", "\"delete\""]
                .iter()
                .any(|w| e.contains(&format!("body: /event_action: {w} is not one of")))
                || e.contains("body: /event_object: \"lead\" is not one of");
            !(e.starts_with("POST /v1/webhooks: ") && v2_word)
        })
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    k.sort();
    k
}

/// A reqwest client that checks every `/v1` response against the description.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Api {
    fn new(sim: &PipedriveSim) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: sim.base_url(),
            token: TOKEN.to_owned(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path))
            .header("x-api-token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let bare_path = path.split('?').next().unwrap_or(path);
        let documented = spec().operation_for(method.as_str(), bare_path).is_some();
        if path.starts_with("/v1/") && !documented {
            // Only the deliberate unknown-route probes get here.
            assert_eq!(status, 404, "{path} is not in the description");
        }
        if path.starts_with("/v1/") && documented {
            let errors: Vec<String> =
                spec_errors(spec().validate_response(method.as_str(), path, status, &body))
                    .into_iter()
                    .filter(|e| !(status >= 400 && e.contains("status not declared")))
                    .collect();
            assert!(
                errors.is_empty(),
                "response not valid: {errors:#?}\n{body:#}"
            );
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

/// Every recorded `/v1` request validates against the description.
fn assert_v1_requests_valid(sim: &PipedriveSim) {
    let mut checked = 0;
    for req in sim.simulator().requests() {
        // Requests to routes the description does not have are the deliberate unknown-route
        // probes (answered 404, checked in `Api::call`).
        if !req.path.starts_with("/v1/") || spec().operation_for(&req.method, &req.path).is_none() {
            continue;
        }
        checked += 1;
        let errors = spec_errors(spec().validate_recorded(&req));
        assert!(
            errors.is_empty(),
            "request not valid: {errors:#?}\n{}",
            req.body_text()
        );
    }
    assert!(checked > 0 || sim.simulator().requests().is_empty());
}

async fn start() -> (PipedriveSim, Api) {
    let sim = PipedriveSim::start(PipedriveSimOptions::new(TOKEN))
        .await
        .unwrap();
    let api = Api::new(&sim);
    (sim, api)
}

async fn add_webhook(api: &Api, action: &str, object: &str, version: Option<&str>) -> u64 {
    let mut body = json!({
        "subscription_url": "https://hooks.example.com/pipedrive",
        "event_action": action,
        "event_object": object,
    });
    if let Some(v) = version {
        body["version"] = json!(v);
    }
    let answer = api.post("/v1/webhooks", body).await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    answer.body["data"]["id"].as_u64().unwrap()
}

async fn add_person(api: &Api, name: &str, email: &str) -> u64 {
    let answer = api
        .post(
            "/api/v2/persons",
            json!({"name": name, "emails": [{"value": email, "primary": true, "label": "work"}]}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:#}", answer.body);
    answer.body["data"]["id"].as_u64().unwrap()
}

async fn add_lead(api: &Api, person_id: u64, code: &str) -> String {
    let answer = api
        .post(
            "/v1/leads",
            json!({
                "title": "Referral: Ann",
                "person_id": person_id,
                "value": {"amount": 300, "currency": "EUR"},
                REFERRAL_CODE_KEY: code,
            }),
        )
        .await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    answer.body["data"]["id"].as_str().unwrap().to_owned()
}

/// A receiver that records webhook deliveries and answers 200.
async fn receiver() -> Simulator {
    Simulator::start(|_: &RecordedRequest| SimResponse::json(200, &json!({"ok": true})))
        .await
        .unwrap()
}

async fn add_webhook_to(
    api: &Api,
    url: &str,
    action: &str,
    object: &str,
    version: Option<&str>,
    auth: Option<(&str, &str)>,
) -> u64 {
    let mut body = json!({"subscription_url": url, "event_action": action, "event_object": object});
    if let Some(v) = version {
        body["version"] = json!(v);
    }
    if let Some((user, password)) = auth {
        body["http_auth_user"] = json!(user);
        body["http_auth_password"] = json!(password);
    }
    let answer = api.post("/v1/webhooks", body).await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    answer.body["data"]["id"].as_u64().unwrap()
}

// ----- auth, routing, headers ------------------------------------------------------------------

#[tokio::test]
async fn auth_is_required_and_checked() {
    let (sim, api) = start().await;
    let http = reqwest::Client::new();
    let unauthorized = json!({"success": false, "error": "unauthorized access", "errorCode": 401});

    let none = http
        .get(sim_url(&sim, "/v1/users/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 401);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body, unauthorized);
    spec()
        .validate_response("GET", "/v1/users/me", 401, &body)
        .unwrap();

    for (name, value) in [
        ("x-api-token", "wrong"),
        ("authorization", "Bearer wrong"),
        ("authorization", "Basic c2ltLXRva2VuLTEyMw=="),
    ] {
        let answer = http
            .get(sim_url(&sim, "/api/v2/deals"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 401, "{name}: {value}");
        assert_eq!(answer.json::<Value>().await.unwrap(), unauthorized);
    }

    let bearer = http
        .get(sim_url(&sim, "/v1/users/me"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 200);

    let me = api.get("/v1/users/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["success"], json!(true));
    assert_eq!(me.body["data"]["id"], json!(12415231));
    assert_eq!(me.body["data"]["company_id"], json!(8087566));
    assert_eq!(me.body["data"]["company_domain"], json!("refsync-sim"));
    for header in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(me.headers.contains_key(header), "missing {header}");
    }

    let missing = api.get("/v1/nothing/here").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body,
        json!({"success": false, "error": "Not found"})
    );
    let missing = api.get("/api/v2/nothing").await;
    assert_eq!(missing.status, 404);
    assert_v1_requests_valid(&sim);
}

fn sim_url(sim: &PipedriveSim, path: &str) -> String {
    format!("{}{}", sim.base_url(), path)
}

#[tokio::test]
async fn rate_limit_headers_can_be_turned_off() {
    let sim = PipedriveSim::start(PipedriveSimOptions {
        rate_limit_headers: false,
        ..PipedriveSimOptions::new(TOKEN)
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let me = api.get("/v1/users/me").await;
    assert_eq!(me.status, 200);
    assert!(!me.headers.contains_key("x-ratelimit-limit"));
}

// ----- fields, pipelines, stages ---------------------------------------------------------------

#[tokio::test]
async fn fields_pipelines_and_stages() {
    let (sim, api) = start().await;
    let deal_fields = api.get("/v1/dealFields").await;
    assert_eq!(deal_fields.status, 200);
    let data = deal_fields.body["data"].as_array().unwrap();
    let code = data
        .iter()
        .find(|f| f["key"] == json!(REFERRAL_CODE_KEY))
        .expect("referral code field");
    assert_eq!(code["name"], json!("Referral Code"));
    assert_eq!(code["field_type"], json!("varchar"));
    assert_eq!(code["edit_flag"], json!(true));
    assert_eq!(code["active_flag"], json!(true));
    assert_eq!(code["mandatory_flag"], json!(false));
    let title = data.iter().find(|f| f["key"] == json!("title")).unwrap();
    assert_eq!(title["edit_flag"], json!(false));
    for name in [
        "Referrer Email",
        "Referrer First Name",
        "Campaign",
        "Referral Link",
    ] {
        let field = data.iter().find(|f| f["name"] == json!(name)).unwrap();
        let key = field["key"].as_str().unwrap();
        assert_eq!(key.len(), 40);
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    assert!(
        !data
            .iter()
            .any(|f| f["key"] == json!(PERSON_REFERRAL_CODE_KEY)),
        "person fields are not deal fields"
    );
    assert_eq!(
        deal_fields.body["additional_data"]["pagination"]["more_items_in_collection"],
        json!(false)
    );

    // Offset paging.
    let page = api.get("/v1/dealFields?start=0&limit=5").await;
    assert_eq!(page.body["data"].as_array().unwrap().len(), 5);
    let pagination = &page.body["additional_data"]["pagination"];
    assert_eq!(pagination["more_items_in_collection"], json!(true));
    assert_eq!(pagination["next_start"], json!(5));
    let total = data.len();
    let mut seen = 0;
    let mut start = 0;
    loop {
        let page = api
            .get(&format!("/v1/dealFields?start={start}&limit=7"))
            .await;
        seen += page.body["data"].as_array().unwrap().len();
        match page.body["additional_data"]["pagination"]["next_start"].as_u64() {
            Some(next) => start = next,
            None => break,
        }
    }
    assert_eq!(seen, total);

    let person_fields = api.get("/v1/personFields").await;
    let data = person_fields.body["data"].as_array().unwrap();
    let code = data
        .iter()
        .find(|f| f["key"] == json!(PERSON_REFERRAL_CODE_KEY))
        .unwrap();
    assert_eq!(code["name"], json!("Referral Code (person)"));
    for key in ["name", "email", "phone"] {
        assert!(data.iter().any(|f| f["key"] == json!(key)), "{key}");
    }

    let pipelines = api.get("/v1/pipelines").await;
    let names: Vec<&str> = pipelines.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Sales", "Referrals"]);
    let stages = api.get("/v1/stages?pipeline_id=2").await;
    let ids: Vec<u64> = stages.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [6, 7, 8]);
    let stages = api.get("/v1/stages?pipeline_id=1").await;
    let names: Vec<&str> = stages.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Qualified",
            "Contact made",
            "Demo scheduled",
            "Proposal made",
            "Negotiations started"
        ]
    );
    assert_eq!(
        api.get("/v1/stages").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        8
    );

    let v2 = api.get("/api/v2/pipelines").await;
    assert_eq!(v2.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(v2.body["additional_data"]["next_cursor"], Value::Null);
    let v2 = api.get("/api/v2/stages?pipeline_id=1").await;
    assert_eq!(v2.body["data"].as_array().unwrap().len(), 5);
    assert_eq!(v2.body["data"][0]["pipeline_id"], json!(1));
    assert_v1_requests_valid(&sim);
}

// ----- persons and search ------------------------------------------------------------------------

#[tokio::test]
async fn person_create_then_search_is_case_insensitive() {
    let (sim, api) = start().await;
    add_webhook(&api, "create", "person", Some("2.0")).await;
    let created = api
        .post(
            "/api/v2/persons",
            json!({
                "name": "Ann Lee",
                "emails": [{"value": "Ann.Lee@Example.com", "label": "work"}],
                "phones": [{"value": "+372 555 0101", "primary": true}],
                "custom_fields": {PERSON_REFERRAL_CODE_KEY: "ANN-42"},
            }),
        )
        .await;
    assert_eq!(created.status, 200, "{:#}", created.body);
    let person = &created.body["data"];
    let id = person["id"].as_u64().unwrap();
    assert_eq!(person["first_name"], json!("Ann"));
    assert_eq!(person["last_name"], json!("Lee"));
    assert_eq!(
        person["emails"],
        json!([{"value": "Ann.Lee@Example.com", "primary": true, "label": "work"}])
    );
    assert_eq!(
        person["custom_fields"][PERSON_REFERRAL_CODE_KEY],
        json!("ANN-42")
    );
    assert_eq!(person["is_deleted"], json!(false));
    assert_eq!(person["owner_id"], json!(12415231));

    let found = api
        .get("/api/v2/persons/search?term=ann.lee%40EXAMPLE.COM&fields=email&exact_match=true")
        .await;
    assert_eq!(found.status, 200, "{:#}", found.body);
    let items = found.body["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0]["item"];
    assert_eq!(item["id"], json!(id));
    assert_eq!(item["type"], json!("person"));
    assert_eq!(item["emails"], json!(["Ann.Lee@Example.com"]));
    assert_eq!(item["owner"], json!({"id": 12415231}));
    assert!(items[0]["result_score"].is_number());
    assert_eq!(found.body["additional_data"]["next_cursor"], Value::Null);

    let none = api
        .get("/api/v2/persons/search?term=nobody%40example.com&fields=email&exact_match=true")
        .await;
    assert_eq!(none.body["data"]["items"], json!([]));
    // Exact match does not match substrings.
    let partial = api
        .get("/api/v2/persons/search?term=lee%40example.com&fields=email&exact_match=true")
        .await;
    assert_eq!(partial.body["data"]["items"], json!([]));
    let fuzzy = api
        .get("/api/v2/persons/search?term=lee%40example&fields=email")
        .await;
    assert_eq!(fuzzy.body["data"]["items"].as_array().unwrap().len(), 1);
    let short = api.get("/api/v2/persons/search?term=a&fields=email").await;
    assert_eq!(short.status, 400);
    let one_exact = api
        .get("/api/v2/persons/search?term=a&fields=email&exact_match=true")
        .await;
    assert_eq!(one_exact.status, 200);

    assert_eq!(sim.persons_with_email("ANN.LEE@example.COM").len(), 1);
    assert_eq!(
        api.get(&format!("/api/v2/persons/{id}")).await.body["data"]["name"],
        json!("Ann Lee")
    );

    // PATCH merges fields and custom fields per key.
    let patched = api
        .patch(
            &format!("/api/v2/persons/{id}"),
            json!({"name": "Ann Lee-Smith"}),
        )
        .await;
    assert_eq!(patched.status, 200);
    assert_eq!(
        patched.body["data"]["custom_fields"][PERSON_REFERRAL_CODE_KEY],
        json!("ANN-42")
    );
    assert_eq!(
        patched.body["data"]["emails"][0]["value"],
        json!("Ann.Lee@Example.com")
    );
    let bad = api
        .patch(
            &format!("/api/v2/persons/{id}"),
            json!({"custom_fields": {REFERRAL_CODE_KEY: "deal field on a person"}}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        api.post("/api/v2/persons", json!({"emails": []}))
            .await
            .status,
        400
    );
    assert_eq!(api.get("/api/v2/persons/999").await.status, 404);

    // The API create was announced to the person webhook (a change is not: create only).
    let outbox = sim.take_outbox();
    assert_eq!(outbox.len(), 1);
    let body = &outbox[0].body;
    assert_eq!(body["meta"]["action"], json!("create"));
    assert_eq!(body["meta"]["entity"], json!("person"));
    assert_eq!(body["meta"]["change_source"], json!("api"));
    assert_eq!(body["meta"]["entity_id"], json!(id.to_string()));
    assert_eq!(keys(&body["data"]), sorted(V2_PERSON_DATA_KEYS));
    assert_eq!(body["data"]["visible_to"], json!("3"));
    assert_eq!(
        body["data"]["custom_fields"][PERSON_REFERRAL_CODE_KEY],
        json!({"type": "varchar", "value": "ANN-42"})
    );
    assert_v1_requests_valid(&sim);
}

#[tokio::test]
async fn search_burst_is_limited() {
    let sim = PipedriveSim::start(PipedriveSimOptions {
        search_burst: 3,
        ..PipedriveSimOptions::new(TOKEN)
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let path = "/api/v2/persons/search?term=x%40example.com&fields=email&exact_match=true";
    for _ in 0..3 {
        let answer = api.get(path).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["x-ratelimit-limit"], "3");
    }
    let limited = api.get(path).await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.body,
        json!({"success": false, "error": "Too many requests", "errorCode": 429})
    );
    assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
    assert!(limited.headers.contains_key("x-ratelimit-reset"));
    // Other endpoints are not affected.
    assert_eq!(api.get("/api/v2/deals").await.status, 200);
    // The window rolls.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(api.get(path).await.status, 200);

    // The default burst is 10 per 2 s.
    let (_sim, api) = start().await;
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(api.get(path).await.status);
    }
    assert_eq!(statuses[..10], [200; 10]);
    assert_eq!(statuses[10], 429);
}

// ----- leads ---------------------------------------------------------------------------------------

#[tokio::test]
async fn leads_need_a_person_or_organization_and_known_fields() {
    let (sim, api) = start().await;
    add_webhook(&api, "*", "lead", Some("2.0")).await;
    let person = add_person(&api, "Ann", "ann@example.com").await;

    let orphan = api
        .post(
            "/v1/leads",
            json!({"title": "Orphan", "value": {"amount": 1, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(orphan.status, 400);
    assert_eq!(orphan.body["success"], json!(false));
    let unknown_key = api
        .post(
            "/v1/leads",
            json!({"title": "X", "person_id": person, "0000000000000000000000000000000000000000": "x"}),
        )
        .await;
    assert_eq!(unknown_key.status, 400);
    let unknown_field = api
        .post(
            "/v1/leads",
            json!({"title": "X", "person_id": person, "referral_code": "x"}),
        )
        .await;
    assert_eq!(unknown_field.status, 400);
    let missing_person = api
        .post("/v1/leads", json!({"title": "X", "person_id": 4242}))
        .await;
    assert_eq!(missing_person.status, 400);
    let with_org = api
        .post(
            "/v1/leads",
            json!({"title": "Org lead", "organization_id": 7, "value": {"amount": 5, "currency": "USD"}}),
        )
        .await;
    assert_eq!(with_org.status, 201);
    assert_eq!(with_org.body["data"]["person_id"], Value::Null);

    let created = api
        .post(
            "/v1/leads",
            json!({
                "title": "Referral: Ann",
                "person_id": person,
                "value": {"amount": 300, "currency": "EUR"},
                "was_seen": false,
                "expected_close_date": "2030-01-31",
                REFERRAL_CODE_KEY: "REF-1",
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    let lead = &created.body["data"];
    let id = lead["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "v4-shaped uuid");
    assert_eq!(lead["source_name"], json!("API"));
    assert_eq!(lead["origin"], json!("API"));
    assert_eq!(lead["is_archived"], json!(false));
    assert_eq!(lead["owner_id"], json!(12415231));
    assert_eq!(lead["creator_id"], json!(12415231));
    assert_eq!(lead["next_activity_id"], Value::Null);
    assert_eq!(lead[REFERRAL_CODE_KEY], json!("REF-1"));
    assert!(lead["cc_email"].is_string());

    let fetched = api.get(&format!("/v1/leads/{id}")).await;
    assert_eq!(fetched.body["data"], *lead);
    let patched = api
        .patch(
            &format!("/v1/leads/{id}"),
            json!({"title": "Referral: Ann (hot)", "value": {"amount": 500, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.body["data"]["title"], json!("Referral: Ann (hot)"));
    assert_eq!(patched.body["data"][REFERRAL_CODE_KEY], json!("REF-1"));
    let unlink = api
        .patch(&format!("/v1/leads/{id}"), json!({"person_id": null}))
        .await;
    assert_eq!(
        unlink.status, 400,
        "a lead keeps a person or an organization"
    );

    let listed = api
        .get(&format!(
            "/v1/leads?person_id={person}&archived_status=not_archived"
        ))
        .await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    let archived = api
        .get(&format!(
            "/v1/leads?person_id={person}&archived_status=archived"
        ))
        .await;
    assert_eq!(archived.body["data"], json!([]));
    assert_eq!(sim.leads_of_person(person).len(), 1);
    assert_eq!(
        api.get("/v1/leads/00000000-0000-4000-8000-000000000000")
            .await
            .status,
        404
    );

    // Webhooks: create (org lead), create, change (title, value).
    let outbox = sim.take_outbox();
    let events: Vec<String> = outbox
        .iter()
        .map(|o| {
            format!("{}.{}", o.body["meta"]["action"], o.body["meta"]["entity"]).replace('"', "")
        })
        .collect();
    assert_eq!(events, ["create.lead", "create.lead", "change.lead"]);
    assert_eq!(keys(&outbox[1].body["data"]), sorted(V2_LEAD_DATA_KEYS));
    assert_eq!(
        outbox[1].body["data"]["custom_fields"][REFERRAL_CODE_KEY],
        json!({"type": "varchar", "value": "REF-1"})
    );
    let previous = &outbox[2].body["previous"];
    assert_eq!(previous["title"], json!("Referral: Ann"));
    assert_eq!(previous["value"], json!({"amount": 300, "currency": "EUR"}));
    assert!(previous.get("update_time").is_some());
    assert!(previous.get("person_id").is_none(), "only changed keys");
    assert_v1_requests_valid(&sim);
}

// ----- UI actions and webhook bodies ----------------------------------------------------------

#[tokio::test]
async fn convert_lead_emits_create_deal_then_delete_lead() {
    let (sim, api) = start().await;
    add_webhook(&api, "*", "*", Some("2.0")).await;
    let person = add_person(&api, "Ann", "ann@example.com").await;
    let lead = add_lead(&api, person, "REF-ANN").await;
    sim.take_outbox();

    let deal_id = sim.convert_lead(&lead, None).unwrap();
    let outbox = sim.take_outbox();
    assert_eq!(outbox.len(), 2);
    let (create, delete) = (&outbox[0].body, &outbox[1].body);
    assert_eq!(create["meta"]["action"], json!("create"));
    assert_eq!(create["meta"]["entity"], json!("deal"));
    assert_eq!(create["meta"]["change_source"], json!("app"));
    assert_eq!(create["meta"]["entity_id"], json!(deal_id.to_string()));
    assert_eq!(create["previous"], Value::Null);
    let deal = &create["data"];
    assert_eq!(deal["person_id"], json!(person));
    assert_eq!(deal["title"], json!("Referral: Ann"));
    assert_eq!(deal["status"], json!("open"));
    assert_eq!(deal["pipeline_id"], json!(1));
    assert_eq!(deal["stage_id"], json!(1));
    assert_eq!(deal["value"], json!(300));
    assert_eq!(
        deal["custom_fields"][REFERRAL_CODE_KEY],
        json!({"type": "varchar", "value": "REF-ANN"})
    );

    assert_eq!(delete["meta"]["action"], json!("delete"));
    assert_eq!(delete["meta"]["entity"], json!("lead"));
    assert_eq!(delete["meta"]["entity_id"], json!(lead));
    assert_eq!(delete["data"], Value::Null);
    assert_eq!(delete["previous"]["id"], json!(lead));
    assert_eq!(delete["previous"]["person_id"], json!(person));
    assert_eq!(
        create["meta"]["correlation_id"],
        delete["meta"]["correlation_id"]
    );
    assert_ne!(create["meta"]["id"], delete["meta"]["id"]);

    // The lead is gone, the deal exists.
    assert!(sim.leads_of_person(person).is_empty());
    assert_eq!(api.get(&format!("/v1/leads/{lead}")).await.status, 404);
    let deals = sim.deals_of_person(person);
    assert_eq!(deals.len(), 1);
    assert_eq!(
        deals[0]["custom_fields"][REFERRAL_CODE_KEY],
        json!("REF-ANN")
    );
    let fetched = api.get(&format!("/api/v2/deals/{deal_id}")).await;
    assert_eq!(
        fetched.body["data"]["custom_fields"][REFERRAL_CODE_KEY],
        json!("REF-ANN")
    );
    assert_eq!(
        sim.convert_lead(&lead, None).unwrap_err(),
        format!("lead {lead} does not exist")
    );

    // Into a given stage: the pipeline follows.
    let lead2 = add_lead(&api, person, "REF-2").await;
    let deal2 = sim.convert_lead(&lead2, Some(7)).unwrap();
    let fetched = api.get(&format!("/api/v2/deals/{deal2}")).await;
    assert_eq!(fetched.body["data"]["stage_id"], json!(7));
    assert_eq!(fetched.body["data"]["pipeline_id"], json!(2));
    let lead3 = add_lead(&api, person, "REF-3").await;
    assert!(sim.convert_lead(&lead3, Some(99)).is_err());
    assert_v1_requests_valid(&sim);
}

#[tokio::test]
async fn move_deal_and_status_changes_carry_previous() {
    let (sim, api) = start().await;
    add_webhook(&api, "change", "deal", Some("2.0")).await;
    let person = add_person(&api, "Ann", "ann@example.com").await;
    let lead = add_lead(&api, person, "REF-ANN").await;
    let deal = sim.convert_lead(&lead, Some(2)).unwrap();
    assert!(sim.take_outbox().is_empty(), "change.deal only");

    sim.move_deal(deal, 3).unwrap();
    let outbox = sim.take_outbox();
    assert_eq!(outbox.len(), 1);
    let body = &outbox[0].body;
    assert_eq!(body["meta"]["action"], json!("change"));
    assert_eq!(body["meta"]["change_source"], json!("app"));
    assert_eq!(body["data"]["stage_id"], json!(3));
    assert_eq!(body["previous"]["stage_id"], json!(2));
    assert!(
        body["previous"].get("pipeline_id").is_none(),
        "same pipeline"
    );
    assert_eq!(body["previous"]["stage_change_time"], Value::Null);
    assert!(body["previous"].get("update_time").is_some());
    assert!(body["data"]["stage_change_time"].is_string());

    // Across pipelines: pipeline_id is in previous too.
    sim.move_deal(deal, 6).unwrap();
    let body = &sim.take_outbox()[0].body;
    assert_eq!(body["data"]["pipeline_id"], json!(2));
    assert_eq!(body["previous"]["pipeline_id"], json!(1));
    assert_eq!(body["previous"]["stage_id"], json!(3));
    assert!(body["previous"]["stage_change_time"].is_string());
    assert_eq!(
        keys(&body["previous"]),
        sorted(&[
            "pipeline_id",
            "stage_change_time",
            "stage_id",
            "update_time"
        ])
    );

    // Same stage: nothing happens.
    sim.move_deal(deal, 6).unwrap();
    assert!(sim.take_outbox().is_empty());
    assert!(sim.move_deal(deal, 99).is_err());
    assert!(sim.move_deal(999, 1).is_err());

    sim.set_deal_status(deal, "won").unwrap();
    let body = &sim.take_outbox()[0].body;
    assert_eq!(body["data"]["status"], json!("won"));
    assert_eq!(body["previous"]["status"], json!("open"));
    assert_eq!(body["previous"]["won_time"], Value::Null);
    assert_eq!(body["previous"]["close_time"], Value::Null);
    assert!(body["data"]["won_time"].is_string());
    assert!(body["data"]["first_won_time"].is_string());
    assert!(body["previous"].get("lost_time").is_none(), "unchanged");

    sim.set_deal_status(deal, "lost").unwrap();
    let body = &sim.take_outbox()[0].body;
    assert_eq!(body["previous"]["status"], json!("won"));
    assert!(body["previous"]["won_time"].is_string());
    assert!(body["data"]["lost_time"].is_string());
    assert!(sim.set_deal_status(deal, "maybe").is_err());

    // Through the API: change_source api.
    let patched = api
        .patch(
            &format!("/api/v2/deals/{deal}"),
            json!({"stage_id": 8, "status": "open"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{:#}", patched.body);
    let body = &sim.take_outbox()[0].body;
    assert_eq!(body["meta"]["change_source"], json!("api"));
    assert_eq!(body["previous"]["stage_id"], json!(6));
    assert_eq!(body["previous"]["status"], json!("lost"));

    sim.delete_deal(deal).unwrap();
    assert!(sim.take_outbox().is_empty(), "delete is not subscribed");
    assert_eq!(api.get(&format!("/api/v2/deals/{deal}")).await.status, 404);
    assert!(sim.deals_of_person(person).is_empty());
    assert!(sim.delete_deal(deal).is_err());
}

#[tokio::test]
async fn webhook_bodies_have_the_published_v2_shape() {
    let (sim, api) = start().await;
    add_webhook(&api, "*", "deal", Some("2.0")).await;
    let person = add_person(&api, "Ann", "ann@example.com").await;
    let lead = add_lead(&api, person, "REF-ANN").await;
    let deal = sim.convert_lead(&lead, None).unwrap();
    sim.move_deal(deal, 2).unwrap();
    sim.delete_deal(deal).unwrap();
    let outbox = sim.take_outbox();
    let actions: Vec<&str> = outbox
        .iter()
        .map(|o| o.body["meta"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create", "change", "delete"]);

    let fixture: Value = serde_json::from_str(V2_DEAL_CREATE).unwrap();
    for delivery in &outbox {
        let body = &delivery.body;
        assert_eq!(keys(body), keys(&fixture));
        assert_eq!(keys(&body["meta"]), keys(&fixture["meta"]));
        let meta = &body["meta"];
        for key in [
            "company_id",
            "correlation_id",
            "entity_id",
            "id",
            "timestamp",
            "user_id",
            "webhook_id",
            "webhook_owner_id",
            "host",
        ] {
            assert!(meta[key].is_string(), "meta.{key} is a string");
        }
        assert_eq!(meta["company_id"], json!("8087566"));
        assert_eq!(meta["user_id"], json!("12415231"));
        assert_eq!(meta["version"], json!("2.0"));
        assert_eq!(meta["type"], json!("general"));
        assert_eq!(meta["attempt"], json!(1));
        assert_eq!(meta["is_bulk_edit"], json!(false));
        assert_eq!(meta["host"], json!("refsync-sim.pipedrive.com"));
        let timestamp = meta["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok());
        assert!(
            timestamp.ends_with('Z') && timestamp.len() == 24,
            "{timestamp}"
        );
        let uuid = meta["id"].as_str().unwrap();
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.matches('-').count(), 4);
        let full = if meta["action"] == json!("delete") {
            &body["previous"]
        } else {
            &body["data"]
        };
        assert_eq!(keys(full), keys(&fixture["data"]));
        assert_eq!(full["visible_to"], json!("3"));
        // The request carries the body and JSON content type.
        assert_eq!(delivery.request.method, "POST");
        assert_eq!(delivery.url, "https://hooks.example.com/pipedrive");
        assert_eq!(delivery.request.url, delivery.url);
        assert_eq!(
            serde_json::from_slice::<Value>(&delivery.request.body).unwrap(),
            *body
        );
        assert!(
            delivery
                .request
                .headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("content-type") && v == "application/json")
        );
        assert!(
            !delivery
                .request
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("authorization")),
            "no credentials, no Authorization"
        );
    }
    let ids: std::collections::BTreeSet<String> = outbox
        .iter()
        .map(|o| o.body["meta"]["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 3, "a fresh event id per event");
    assert_eq!(outbox[2].body["data"], Value::Null);
    assert_v1_requests_valid(&sim);
}

// ----- delivery, versions, auth ------------------------------------------------------------------

#[tokio::test]
async fn deliver_posts_v2_with_basic_auth_and_v1_bodies_to_v1_webhooks() {
    let (sim, api) = start().await;
    let rx = receiver().await;
    let v2_url = rx.url("/hooks/v2?conn=1");
    let v1_url = rx.url("/hooks/v1");
    let v2 = add_webhook_to(
        &api,
        &v2_url,
        "*",
        "*",
        Some("2.0"),
        Some(("refsync", "s3cret")),
    )
    .await;
    // No version given: 1.0, as the v1 description says.
    let v1 = add_webhook_to(&api, &v1_url, "*", "deal", None, None).await;
    let listed = api.get("/v1/webhooks").await;
    let hooks = listed.body["data"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    let v1_hook = hooks.iter().find(|h| h["id"] == json!(v1)).unwrap();
    assert_eq!(v1_hook["version"], json!("1.0"));
    let v2_hook = hooks.iter().find(|h| h["id"] == json!(v2)).unwrap();
    assert_eq!(v2_hook["http_auth_user"], json!("refsync"));
    assert_eq!(v2_hook["http_auth_password"], Value::Null, "never returned");
    assert_eq!(v2_hook["is_active"], json!(1));
    let state = sim.state();
    let stored = state["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == json!(v2))
        .unwrap();
    assert_eq!(stored["http_auth_password"], json!("s3cret"));

    let person = add_person(&api, "Ann", "ann@example.com").await;
    let lead = add_lead(&api, person, "REF-ANN").await;
    let deal = sim.convert_lead(&lead, None).unwrap();
    sim.set_deal_status(deal, "won").unwrap();

    let results = sim.deliver().await;
    // v2: create.person, create.lead, create.deal, delete.lead, change.deal;
    // v1 (deals only): added.deal, updated.deal.
    assert_eq!(results.len(), 7);
    for (delivery, answer) in &results {
        let (status, _) = answer.as_ref().expect("delivered");
        assert_eq!(*status, 200, "{}", delivery.url);
    }
    assert!(sim.take_outbox().is_empty());

    let received = rx.requests();
    assert_eq!(received.len(), 7);
    let v2_received: Vec<&RecordedRequest> =
        received.iter().filter(|r| r.path == "/hooks/v2").collect();
    assert_eq!(v2_received.len(), 5);
    for req in &v2_received {
        assert_eq!(req.method, "POST");
        assert_eq!(req.query.as_deref(), Some("conn=1"));
        assert_eq!(
            req.header("authorization"),
            Some(refsync_http::signature::basic_auth_header("refsync", "s3cret").as_str())
        );
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.json().unwrap()["meta"]["version"], json!("2.0"));
    }
    let v1_received: Vec<Value> = received
        .iter()
        .filter(|r| r.path == "/hooks/v1")
        .map(|r| r.json().unwrap())
        .collect();
    assert_eq!(v1_received.len(), 2);
    assert!(
        received
            .iter()
            .filter(|r| r.path == "/hooks/v1")
            .all(|r| r.header("authorization").is_none())
    );
    let added = &v1_received[0];
    assert_eq!(added["v"], json!(1));
    assert_eq!(added["event"], json!("added.deal"));
    assert_eq!(added["retry"], json!(0));
    assert_eq!(added["previous"], Value::Null);
    assert_eq!(added["meta"]["v"], json!(1));
    assert_eq!(added["meta"]["action"], json!("added"));
    assert_eq!(added["meta"]["object"], json!("deal"));
    assert_eq!(added["meta"]["id"], json!(deal));
    assert_eq!(added["meta"]["company_id"], json!(8087566));
    assert_eq!(added["meta"]["user_id"], json!(12415231));
    assert_eq!(added["meta"]["webhook_id"], json!(v1.to_string()));
    assert!(added["meta"]["timestamp"].is_u64());
    assert!(added["meta"]["timestamp_micro"].is_u64());
    assert_eq!(added["current"]["id"], json!(deal));
    assert_eq!(
        added["current"][REFERRAL_CODE_KEY],
        json!("REF-ANN"),
        "custom fields at the root"
    );
    assert!(added["current"].get("custom_fields").is_none());
    let updated = &v1_received[1];
    assert_eq!(updated["event"], json!("updated.deal"));
    assert_eq!(updated["meta"]["action"], json!("updated"));
    assert_eq!(updated["current"]["status"], json!("won"));
    assert_eq!(updated["previous"]["status"], json!("open"));
    assert_eq!(
        updated["previous"]["stage_id"],
        json!(1),
        "v1 previous is the full object"
    );

    // Delivery results are reflected on the webhook.
    let listed = api.get("/v1/webhooks").await;
    let hook = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == json!(v2))
        .unwrap()
        .clone();
    assert_eq!(hook["last_http_status"], json!(200));
    assert!(hook["last_delivery_time"].is_string());
    assert_v1_requests_valid(&sim);
}

#[tokio::test]
async fn webhook_matching_by_action_and_object() {
    let (sim, api) = start().await;
    let updated_deal = add_webhook(&api, "updated", "deal", Some("2.0")).await;
    let added_person = add_webhook(&api, "added", "person", Some("2.0")).await;
    let delete_any = add_webhook(&api, "delete", "*", Some("2.0")).await;
    let person = add_person(&api, "Ann", "ann@example.com").await;
    let lead = add_lead(&api, person, "X").await;
    let deal = sim.convert_lead(&lead, None).unwrap();
    sim.move_deal(deal, 4).unwrap();
    sim.delete_deal(deal).unwrap();
    let seen: Vec<(String, String)> = sim
        .take_outbox()
        .iter()
        .map(|o| {
            let meta = &o.body["meta"];
            (
                meta["webhook_id"].as_str().unwrap().to_owned(),
                format!(
                    "{}.{}",
                    meta["action"].as_str().unwrap(),
                    meta["entity"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (added_person.to_string(), "create.person".to_owned()),
            (delete_any.to_string(), "delete.lead".to_owned()),
            (updated_deal.to_string(), "change.deal".to_owned()),
            (delete_any.to_string(), "delete.deal".to_owned()),
        ]
    );
    assert_v1_requests_valid(&sim);
}

#[tokio::test]
async fn deleted_webhooks_receive_nothing() {
    let (sim, api) = start().await;
    let rx = receiver().await;
    let by_api = add_webhook_to(&api, &rx.url("/a"), "*", "*", Some("2.0"), None).await;
    let by_pipedrive = add_webhook_to(&api, &rx.url("/b"), "*", "deal", Some("2.0"), None).await;

    let deleted = api
        .call("DELETE", &format!("/v1/webhooks/{by_api}"), None)
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["success"], json!(true));
    assert_eq!(deleted.body["data"]["id"], json!(by_api));
    let again = api
        .call("DELETE", &format!("/v1/webhooks/{by_api}"), None)
        .await;
    assert_eq!(again.status, 404);
    sim.delete_webhook_as_pipedrive(by_pipedrive);
    assert_eq!(api.get("/v1/webhooks").await.body["data"], json!([]));

    let person = add_person(&api, "Ann", "ann@example.com").await;
    let lead = add_lead(&api, person, "X").await;
    sim.convert_lead(&lead, None).unwrap();
    assert!(sim.deliver().await.is_empty());
    assert!(rx.requests().is_empty());
    assert_v1_requests_valid(&sim);
}

#[tokio::test]
async fn webhooks_are_capped_at_forty_and_validated() {
    let (sim, api) = start().await;
    for i in 0..MAX_WEBHOOKS {
        let answer = api
            .post(
                "/v1/webhooks",
                json!({
                    "subscription_url": format!("https://hooks.example.com/{i}"),
                    "event_action": "*",
                    "event_object": "deal",
                    "version": "2.0",
                }),
            )
            .await;
        assert_eq!(answer.status, 201);
    }
    let over = api
        .post(
            "/v1/webhooks",
            json!({"subscription_url": "https://hooks.example.com/41", "event_action": "*", "event_object": "deal"}),
        )
        .await;
    assert_eq!(over.status, 400);
    assert_eq!(over.body["success"], json!(false));
    assert_eq!(
        api.get("/v1/webhooks").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        40
    );

    // Deleting one frees a slot.
    let first = api.get("/v1/webhooks").await.body["data"][0]["id"]
        .as_u64()
        .unwrap();
    api.call("DELETE", &format!("/v1/webhooks/{first}"), None)
        .await;
    let again = api
        .post(
            "/v1/webhooks",
            json!({"subscription_url": "https://hooks.example.com/41", "event_action": "*", "event_object": "deal"}),
        )
        .await;
    assert_eq!(again.status, 201);
    assert_v1_requests_valid(&sim);

    // Invalid subscriptions (these requests are deliberately outside the description).
    let (_sim, api) = start().await;
    for body in [
        json!({"event_action": "*", "event_object": "deal"}),
        json!({"subscription_url": "https://x.example", "event_action": "moved", "event_object": "deal"}),
        json!({"subscription_url": "https://x.example", "event_action": "*", "event_object": "invoice"}),
        json!({"subscription_url": "https://x.example", "event_action": "*", "event_object": "deal", "version": "3.0"}),
        json!({"subscription_url": "ftp://x.example", "event_action": "*", "event_object": "deal"}),
    ] {
        let answer = api.post("/v1/webhooks", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}");
    }
}

// ----- deals API ---------------------------------------------------------------------------------

#[tokio::test]
async fn deal_create_defaults_and_validation() {
    let (sim, api) = start().await;
    add_webhook(&api, "create", "deal", Some("2.0")).await;
    let person = add_person(&api, "Ann", "ann@example.com").await;
    let created = api
        .post(
            "/api/v2/deals",
            json!({
                "title": "Ann deal",
                "person_id": person,
                "value": 250,
                "currency": "USD",
                "custom_fields": {REFERRAL_CODE_KEY: "REF-9"},
            }),
        )
        .await;
    assert_eq!(created.status, 200, "{:#}", created.body);
    let deal = &created.body["data"];
    assert_eq!(deal["pipeline_id"], json!(1));
    assert_eq!(deal["stage_id"], json!(1));
    assert_eq!(deal["status"], json!("open"));
    assert_eq!(deal["value"], json!(250));
    assert_eq!(
        deal["custom_fields"],
        json!({REFERRAL_CODE_KEY: "REF-9"}),
        "plain values"
    );
    assert_eq!(deal["is_deleted"], json!(false));
    let in_pipeline = api
        .post("/api/v2/deals", json!({"title": "P2", "pipeline_id": 2}))
        .await;
    assert_eq!(in_pipeline.body["data"]["stage_id"], json!(6));
    let won = api
        .post(
            "/api/v2/deals",
            json!({"title": "Won", "stage_id": 5, "status": "won"}),
        )
        .await;
    assert_eq!(won.body["data"]["pipeline_id"], json!(1));
    assert!(won.body["data"]["won_time"].is_string());

    for body in [
        json!({"title": "x", "stage_id": 99}),
        json!({"title": "x", "stage_id": 6, "pipeline_id": 1}),
        json!({"title": "x", "pipeline_id": 9}),
        json!({"value": 1}),
        json!({"title": "x", "status": "maybe"}),
        json!({"title": "x", "custom_fields": {PERSON_REFERRAL_CODE_KEY: "person field"}}),
        json!({"title": "x", "person_id": 777}),
        json!({"title": "x", "nonsense": 1}),
    ] {
        let answer = api.post("/api/v2/deals", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(answer.body["success"], json!(false));
    }

    let outbox = sim.take_outbox();
    assert_eq!(outbox.len(), 3);
    assert!(
        outbox
            .iter()
            .all(|o| o.body["meta"]["change_source"] == json!("api"))
    );
    assert_eq!(
        outbox[0].body["data"]["custom_fields"][REFERRAL_CODE_KEY],
        json!({"type": "varchar", "value": "REF-9"})
    );

    // PATCH merges custom fields per key; a null clears one.
    let id = deal["id"].as_u64().unwrap();
    let patched = api
        .patch(
            &format!("/api/v2/deals/{id}"),
            json!({"custom_fields": {refsync_testkit::pipedrive::CAMPAIGN_KEY: "spring"}}),
        )
        .await;
    assert_eq!(
        patched.body["data"]["custom_fields"][REFERRAL_CODE_KEY],
        json!("REF-9")
    );
    assert_eq!(
        patched.body["data"]["custom_fields"][refsync_testkit::pipedrive::CAMPAIGN_KEY],
        json!("spring")
    );
    let cleared = api
        .patch(
            &format!("/api/v2/deals/{id}"),
            json!({"custom_fields": {REFERRAL_CODE_KEY: null}}),
        )
        .await;
    assert!(
        cleared.body["data"]["custom_fields"]
            .get(REFERRAL_CODE_KEY)
            .is_none()
    );
    assert_eq!(
        api.patch("/api/v2/deals/999", json!({"title": "x"}))
            .await
            .status,
        404
    );

    let state = sim.state();
    for key in [
        "persons",
        "leads",
        "deals",
        "webhooks",
        "pipelines",
        "stages",
    ] {
        assert!(state[key].is_array(), "{key}");
    }
    assert_eq!(state["deals"].as_array().unwrap().len(), 3);
    assert_eq!(state["stages"].as_array().unwrap().len(), 8);
    let deleted = api
        .call("DELETE", &format!("/api/v2/deals/{id}"), None)
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        sim.state()["deals"].as_array().unwrap().len(),
        2,
        "deleted deals are excluded"
    );
}

#[tokio::test]
async fn deals_list_updated_since_and_cursor_paging() {
    let (sim, api) = start().await;
    let person = add_person(&api, "Ann", "ann@example.com").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let answer = api
            .post(
                "/api/v2/deals",
                json!({"title": format!("Deal {i}"), "person_id": if i < 3 { Some(person) } else { None }}),
            )
            .await;
        ids.push(answer.body["data"]["id"].as_u64().unwrap());
    }
    let now = Utc::now();
    // Deal 0 is the most recently updated, then 1; 2..4 are old.
    sim.set_deal_update_time(ids[0], now + Duration::seconds(10))
        .unwrap();
    sim.set_deal_update_time(ids[1], now + Duration::seconds(5))
        .unwrap();
    for (n, id) in ids[2..].iter().enumerate() {
        sim.set_deal_update_time(*id, now - Duration::days(3) + Duration::seconds(n as i64))
            .unwrap();
    }

    let list = |answer: &Answer| -> Vec<u64> {
        answer.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_u64().unwrap())
            .collect()
    };
    let all = api.get("/api/v2/deals").await;
    assert_eq!(
        list(&all),
        [ids[2], ids[3], ids[4], ids[1], ids[0]],
        "by update_time"
    );
    assert_eq!(all.body["additional_data"]["next_cursor"], Value::Null);

    let since = (now - Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let recent = api
        .get(&format!(
            "/api/v2/deals?updated_since={}",
            since.replace('+', "%2B")
        ))
        .await;
    assert_eq!(list(&recent), [ids[1], ids[0]]);
    let of_person = api
        .get(&format!(
            "/api/v2/deals?person_id={person}&updated_since={since}"
        ))
        .await;
    assert_eq!(list(&of_person), [ids[1], ids[0]]);
    assert_eq!(
        list(&api.get(&format!("/api/v2/deals?person_id={person}")).await),
        [ids[2], ids[1], ids[0]]
    );
    assert_eq!(
        api.get("/api/v2/deals?updated_since=yesterday")
            .await
            .status,
        400
    );

    // Cursor paging visits everything once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v2/deals?limit=2&cursor={c}"),
            None => "/api/v2/deals?limit=2".to_owned(),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, 200);
        pages += 1;
        seen.extend(list(&page));
        match page.body["additional_data"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, list(&all));
    assert_eq!(api.get("/api/v2/deals?cursor=garbage").await.status, 400);

    // Status filter.
    sim.set_deal_status(ids[4], "won").unwrap();
    assert_eq!(list(&api.get("/api/v2/deals?status=won").await), [ids[4]]);
    sim.delete_deal(ids[3]).unwrap();
    assert_eq!(
        list(&api.get("/api/v2/deals?status=deleted").await),
        [ids[3]]
    );
    assert_eq!(
        api.get("/api/v2/deals").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn faults_and_request_log_come_from_the_simulator() {
    use refsync_testkit::sim::{Fault, FaultRule};
    let (sim, api) = start().await;
    sim.simulator()
        .inject(FaultRule::new(Fault::ServerError { status: 503 }).on("GET", "/v1/users/me"));
    assert_eq!(api.get("/v1/users/me").await.status, 503);
    assert_eq!(api.get("/v1/users/me").await.status, 200);
    assert_eq!(sim.simulator().requests_to("GET", "/v1/users/me").len(), 2);
}

#[tokio::test]
async fn the_spec_exception_is_exactly_the_v2_webhook_words() {
    let (sim, api) = start().await;
    add_webhook(&api, "change", "lead", Some("2.0")).await;
    let recorded = sim.simulator().requests_to("POST", "/v1/webhooks");
    let raw = spec().validate_recorded(&recorded[0]).unwrap_err();
    assert_eq!(raw.len(), 2, "{raw:#?}");
    assert!(raw[0].starts_with("POST /v1/webhooks: body: /event_action: \"change\" is not one of"));
    assert!(raw[1].starts_with("POST /v1/webhooks: body: /event_object: \"lead\" is not one of"));
    assert!(spec_errors(Err(raw)).is_empty());
    // Anything else is still reported.
    let other = vec![
        "POST /v1/webhooks: body: /version: \"3.0\" is not one of [\"1.0\", \"2.0\"]".to_owned(),
    ];
    assert_eq!(spec_errors(Err(other.clone())), other);
}
