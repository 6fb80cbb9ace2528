//! The HTTP API over real loopback HTTP (axum on 127.0.0.1:0, reqwest), on SQLite and
//! PostgreSQL.

mod common;

use common::TestDb;
use refsync_ledger::http::{HttpOptions, router};
use refsync_ledger::{Ledger, Metric, NewRewardRule, Recipient, Trigger};
use reqwest::StatusCode;
use serde_json::{Value, json};

suite!(
    auth_is_required_and_constant_time_compared,
    create_and_get_users_v2,
    validation_and_conflict_errors,
    list_users_filters_with_fields_and_pagination,
    qualification_v2_is_idempotent,
    rewards_lists_issue_and_cancel,
    inbound_webhook,
    v1_compatibility,
    body_limit_and_unknown_routes,
    list_links_never_come_from_the_host_header,
    users_by_email_are_matched_exactly,
);

const TOKEN: &str = "test-api-token-0123456789";
const HOOK: &str = "hook-token-abcdef";

struct Server {
    base: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(ledger: Ledger, options: HttpOptions) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(ledger, options);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        task,
    }
}

async fn server(db: &TestDb) -> Server {
    serve(
        db.ledger.clone(),
        HttpOptions::new(TOKEN).with_webhook_token(HOOK),
    )
    .await
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    /// A campaign (through the Rust API: the HTTP subset has no campaign creation).
    async fn campaign(&self, ledger: &Ledger) -> i64 {
        ledger
            .create_campaign(&refsync_ledger::NewCampaign {
                name: "Spring".into(),
                link_base_url: Some("https://example.com/r".into()),
            })
            .await
            .unwrap()
            .id
    }
    async fn user(&self, campaign: i64, name: &str, email: &str, referrer: Option<Value>) -> Value {
        let mut body = json!({"campaign_id": campaign, "first_name": name, "email": email});
        if let Some(r) = referrer {
            body["referrer"] = r;
        }
        let (status, body) = self.post("/api/v2/users", body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"].clone()
    }
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], json!(expected.as_u16()), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

// ----- cases ---------------------------------------------------------------------------------

async fn auth_is_required_and_constant_time_compared(db: &TestDb) {
    let s = server(db).await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut req = s.http.get(s.url("/api/v2/users"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
        assert!(!body.to_string().contains(TOKEN));
    }
    let resp = s
        .http
        .get(s.url("/api/v1/users"))
        .header("Authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "scheme is case-insensitive");

    // An empty configured token rejects everything.
    let closed = serve(db.ledger.clone(), HttpOptions::new("")).await;
    let resp = closed
        .http
        .get(closed.url("/api/v2/users"))
        .header("Authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

async fn create_and_get_users_v2(db: &TestDb) {
    let s = server(db).await;
    let c = s.campaign(&db.ledger).await;
    let ann = s.user(c, "Ann", "ann@example.com", None).await;
    assert_eq!(ann["type"], "person_referring");
    assert_eq!(ann["campaign_id"], json!(c));
    assert!(ann["id"].is_i64());
    let code = ann["code"].as_str().unwrap().to_owned();
    assert_eq!(ann["url"], json!(format!("https://example.com/r/{code}")));
    assert_eq!(ann["qualified_at"], Value::Null);
    assert!(ann["signed_up_at"].as_str().unwrap().ends_with('Z'));

    let (status, body) = s
        .post(
            "/api/v2/users",
            json!({
                "campaign_id": c.to_string(),
                "first_name": "Bob",
                "email": "bob@example.com",
                "referrer": {"field": "email", "value": "ANN@example.com"},
                "meta": [{"field": "company", "value": "Acme"}],
                "notify": true,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let bob = &body["data"];
    assert_eq!(bob["referrer_id"], ann["id"]);
    assert_eq!(bob["type"], "person_invited");
    assert_eq!(bob["meta"], json!([{"field": "company", "value": "Acme"}]));
    let by_id = s
        .user(
            c,
            "Cy",
            "cy@example.com",
            Some(json!({"field": "id", "value": ann["id"]})),
        )
        .await;
    assert_eq!(by_id["referrer_id"], ann["id"]);
    let by_code = s
        .user(
            c,
            "Di",
            "di@example.com",
            Some(json!({"field": "code", "value": code})),
        )
        .await;
    assert_eq!(by_code["referrer_id"], ann["id"]);

    let bob_id = bob["id"].as_i64().unwrap();
    let bob_code = bob["code"].as_str().unwrap();
    for path in [
        format!("/api/v2/users/{bob_id}"),
        format!("/api/v2/users/{bob_code}"),
        format!("/api/v2/users/bob@example.com?campaign_id={c}"),
        "/api/v2/users/BOB@example.com".to_owned(),
    ] {
        let (status, body) = s.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["data"]["id"], json!(bob_id), "{path}");
    }
    let (status, body) = s
        .get(&format!(
            "/api/v2/users/{bob_id}?with=referrer,rewards&fields=id,email"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = body["data"].as_object().unwrap();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["email", "id", "referrer", "rewards"]);
    assert_eq!(body["data"]["referrer"]["email"], "ann@example.com");

    for path in [
        "/api/v2/users/99999",
        "/api/v2/users/NOPE2345",
        "/api/v2/users/x@example.com",
    ] {
        let (status, body) = s.get(path).await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
    }
}

async fn validation_and_conflict_errors(db: &TestDb) {
    let s = server(db).await;
    let c = s.campaign(&db.ledger).await;
    let ann = s.user(c, "Ann", "ann.lee@gmail.com", None).await;

    let (status, body) = s.post("/api/v2/users", json!({})).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["campaign_id", "first_name", "email"] {
        let list = body["errors"][field]
            .as_array()
            .unwrap_or_else(|| panic!("{field}: {body}"));
        assert_eq!(list[0]["field"], field);
        assert!(list[0]["message"].as_str().unwrap().contains("required"));
    }

    // Email already exists (normalized): 422 with errors.email.
    let (status, body) = s
        .post(
            "/api/v2/users",
            json!({"campaign_id": c, "first_name": "Ann", "email": "AnnLee+2@googlemail.com"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["errors"]["email"][0]["message"],
        "email already exists"
    );
    assert_eq!(body["message"], "email already exists");

    // Self-referral.
    let (status, body) = s
        .post(
            "/api/v2/users",
            json!({"campaign_id": c, "first_name": "Me", "email": "a.nnlee@gmail.com",
                   "referrer": {"field": "code", "value": ann["code"]}}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["errors"]["email"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Self-referral")
    );

    // Invalid referrer, bad referrer shape, unknown campaign, invalid email.
    for (payload, field) in [
        (
            json!({"campaign_id": c, "first_name": "X", "email": "x@example.com",
                "referrer": {"field": "code", "value": "NOPE2345"}}),
            "referrer",
        ),
        (
            json!({"campaign_id": c, "first_name": "X", "email": "x@example.com",
                "referrer": {"field": "phone", "value": "1"}}),
            "referrer",
        ),
        (
            json!({"campaign_id": 9999, "first_name": "X", "email": "x@example.com"}),
            "campaign_id",
        ),
        (
            json!({"campaign_id": "abc", "first_name": "X", "email": "x@example.com"}),
            "campaign_id",
        ),
        (
            json!({"campaign_id": c, "first_name": "X", "email": "nope"}),
            "email",
        ),
    ] {
        let (status, body) = s.post("/api/v2/users", payload.clone()).await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body["errors"][field].is_array(), "{payload}: {body}");
    }

    // Not JSON: 400.
    let resp = s
        .http
        .post(s.url("/api/v2/users"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_error(status, &body, StatusCode::BAD_REQUEST);
}

async fn list_users_filters_with_fields_and_pagination(db: &TestDb) {
    let s = server(db).await;
    let c = s.campaign(&db.ledger).await;
    let ann = s.user(c, "Ann", "ann@example.com", None).await;
    let mut ids = vec![ann["id"].as_i64().unwrap()];
    for i in 0..6 {
        let u = s
            .user(
                c,
                &format!("F{i}"),
                &format!("f{i}@example.org"),
                Some(json!({"field": "code", "value": ann["code"]})),
            )
            .await;
        ids.push(u["id"].as_i64().unwrap());
    }

    // Follow links.next from page 1 to the end (bounded): relative links (no public base URL).
    let mut url = Some(format!(
        "/api/v2/users?campaign_id={c}&per_page=3&order_by=id&order_direction=asc"
    ));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(u) = url.take() {
        pages += 1;
        assert!(pages <= 10, "pagination does not end");
        assert!(u.starts_with("/api/v2/users?"), "relative: {u}");
        let resp = s
            .http
            .get(s.url(&u))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["meta"]["total"], json!(7));
        assert_eq!(body["meta"]["per_page"], json!(3));
        assert_eq!(body["meta"]["last_page"], json!(3));
        for d in body["data"].as_array().unwrap() {
            seen.push(d["id"].as_i64().unwrap());
        }
        url = body["links"]["next"].as_str().map(str::to_owned);
        if url.is_none() {
            assert_eq!(body["meta"]["current_page"], json!(3));
            assert!(body["links"]["prev"].as_str().unwrap().contains("page=2"));
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);

    let (status, body) = s
        .get(&format!(
            "/api/v2/users?campaign_id={c}&filter[email][like]=%25@example.org&filter[id][gt]={}&order_by=first_name&order_direction=desc&fields=id,first_name&with=referrer",
            ids[2]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = body["data"].as_array().unwrap();
    let names: Vec<&str> = data
        .iter()
        .map(|d| d["first_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["F5", "F4", "F3", "F2"]);
    assert!(data[0].get("email").is_none(), "field selection");
    assert_eq!(data[0]["referrer"]["id"], ann["id"]);

    let (status, body) = s
        .get(&format!(
            "/api/v2/users?filter[type][equal]=person_referring&filter[campaign_id]={c}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["meta"]["total"], json!(1));

    for bad in [
        "per_page=0",
        "per_page=251",
        "page=0",
        "filter[secret][equal]=1",
        "filter[id][between]=1",
        "order_by=password",
        "order_direction=up",
        "with=friends",
        "fields=id,password",
    ] {
        let (status, body) = s.get(&format!("/api/v2/users?{bad}")).await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body["errors"].is_object(), "{bad}: {body}");
    }
}

async fn qualification_v2_is_idempotent(db: &TestDb) {
    let s = server(db).await;
    let c = s.campaign(&db.ledger).await;
    db.ledger
        .add_coupons(c, &["HTTP-COUPON".into()])
        .await
        .unwrap();
    let ann = s.user(c, "Ann", "ann@example.com", None).await;
    let bob = s
        .user(
            c,
            "Bob",
            "bob@example.com",
            Some(json!({"field": "code", "value": ann["code"]})),
        )
        .await;
    assert_eq!(bob["coupon"], "HTTP-COUPON");

    let (status, body) = s
        .put(
            "/api/v2/users/qualification",
            json!({"qualified": true, "code": bob["code"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "qualified");
    let at = body["data"]["qualified_at"].clone();
    assert!(at.is_string());

    for again in [
        json!({"qualified": true, "id": bob["id"]}),
        json!({"qualified": "true", "email": "BOB@example.com", "campaign_id": c}),
        json!({"coupon": "http-coupon"}),
    ] {
        let (status, body) = s.put("/api/v2/users/qualification", again.clone()).await;
        assert_eq!(status, StatusCode::OK, "{again}: {body}");
        assert_eq!(body["message"], "already qualified");
        assert_eq!(body["data"]["qualified_at"], at, "unchanged");
    }

    let (status, body) = s
        .put(
            "/api/v2/users/qualification",
            json!({"qualified": false, "id": bob["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "unqualified");
    assert_eq!(body["data"]["qualified_at"], Value::Null);

    for (payload, expected) in [
        (json!({"code": "NOPE2345"}), StatusCode::NOT_FOUND),
        (json!({"coupon": "NOT-OURS"}), StatusCode::NOT_FOUND),
        (
            json!({"email": "bob@example.com"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"qualified": true}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"qualified": "maybe", "id": bob["id"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"code": ann["code"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, body) = s.put("/api/v2/users/qualification", payload.clone()).await;
        assert_error(status, &body, expected);
        if expected == StatusCode::UNPROCESSABLE_ENTITY {
            assert!(body["errors"].is_object(), "{payload}: {body}");
        }
    }
}

async fn rewards_lists_issue_and_cancel(db: &TestDb) {
    let s = server(db).await;
    let c = s.campaign(&db.ledger).await;
    for (recipient, metric, value) in [
        (Recipient::Referrer, Metric::Amount, "1000"),
        (Recipient::Invited, Metric::Coupon, "WELCOME"),
    ] {
        db.ledger
            .add_reward_rule(
                c,
                &NewRewardRule {
                    recipient,
                    trigger: Trigger::WhenQualified,
                    metric,
                    value: value.into(),
                    cap_per_referrer: None,
                },
            )
            .await
            .unwrap();
    }
    let ann = s.user(c, "Ann", "ann@example.com", None).await;
    let bob = s
        .user(
            c,
            "Bob",
            "bob@example.com",
            Some(json!({"field": "id", "value": ann["id"]})),
        )
        .await;
    s.put("/api/v2/users/qualification", json!({"code": bob["code"]}))
        .await;

    let (status, body) = s.get("/api/v2/rewards/due/amount").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let due = body["data"].as_array().unwrap();
    assert_eq!(due.len(), 1);
    let r = &due[0];
    assert_eq!(r["recipient_id"], ann["id"]);
    assert_eq!(r["amount"], json!(1000));
    assert_eq!(r["status"], "due");
    assert_eq!(r["can_be_issued"], json!(true));
    assert_eq!(r["issued_at"], Value::Null);
    assert!(r["reward_id"].is_i64());
    let (_, coupons) = s.get("/api/v2/rewards/due/coupon?fields=id,coupon").await;
    assert_eq!(
        coupons["data"],
        json!([{"id": coupons["data"][0]["id"], "coupon": "WELCOME"}])
    );

    let id = r["id"].as_i64().unwrap();
    let (status, body) = s
        .post(&format!("/api/v2/rewards/issue/{id}"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "issued");
    assert!(body["data"]["issued_at"].is_string());
    let (status, body) = s
        .post(&format!("/api/v2/rewards/issue/{id}"), json!({}))
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = s
        .post(&format!("/api/v2/rewards/cancel/{id}"), json!({}))
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, issued) = s.get("/api/v2/rewards/issued/amount").await;
    assert_eq!(issued["data"].as_array().unwrap().len(), 1);
    let (_, none) = s.get("/api/v2/rewards/due/amount").await;
    assert!(none["data"].as_array().unwrap().is_empty());
    assert_eq!(none["links"]["next"], Value::Null);

    let coupon_id = coupons["data"][0]["id"].as_i64().unwrap();
    let (status, body) = s
        .post(&format!("/api/v2/rewards/cancel/{coupon_id}"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");
    assert_eq!(body["data"]["can_be_issued"], json!(false));

    let (_, all) = s.get("/api/v2/rewards/dashboard/coupon").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    let (status, body) = s.get("/api/v2/rewards/due/bitcoin").await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = s.post("/api/v2/rewards/issue/99999", json!({})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = s
        .get(&format!(
            "/api/v2/rewards/dashboard/amount?filter[recipient_id][equal]={}&filter[status]=issued",
            ann["id"]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["meta"]["total"], json!(1));
}

async fn inbound_webhook(db: &TestDb) {
    let s = server(db).await;
    let c = s.campaign(&db.ledger).await;
    db.ledger
        .add_coupons(c, &["HOOK-1".into(), "HOOK-2".into()])
        .await
        .unwrap();
    let ann = s.user(c, "Ann", "ann@example.com", None).await;
    let bob = s
        .user(
            c,
            "Bob",
            "bob@example.com",
            Some(json!({"field": "code", "value": ann["code"]})),
        )
        .await;
    let cy = s
        .user(
            c,
            "Cy",
            "cy@example.com",
            Some(json!({"field": "code", "value": ann["code"]})),
        )
        .await;
    let hook = |token: &str| s.url(&format!("/webhook/{token}/qualify"));
    let form = |token: &str, body: Vec<(&str, String)>| s.http.post(hook(token)).form(&body).send();

    let resp = form(
        HOOK,
        vec![("code", bob["code"].as_str().unwrap().to_owned())],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"message": "qualified"})
    );
    let resp = form(
        HOOK,
        vec![("code", bob["code"].as_str().unwrap().to_lowercase())],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"message": "already qualified"})
    );

    // Coupon: Cy holds HOOK-2.
    assert_eq!(cy["coupon"], "HOOK-2");
    let resp = form(HOOK, vec![("coupon", "hook-2".into())]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["message"], "qualified");
    // Unknown coupons are ignored (200, says so); unknown codes are 404.
    let resp = form(HOOK, vec![("coupon", "SOMEONE-ELSES".into())])
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let msg = resp.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.starts_with("ignored"), "{msg}");
    let resp = form(HOOK, vec![("code", "NOPE2345".into())]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = form(HOOK, vec![("other", "x".into())]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Wrong token: nothing happens.
    let resp = form(
        "wrong-token",
        vec![("code", bob["code"].as_str().unwrap().into())],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The Bearer token does not matter here, and the API token does not open the webhook.
    let resp = form(TOKEN, vec![("code", bob["code"].as_str().unwrap().into())])
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Without a webhook token the route is not there.
    let no_hook = serve(db.ledger.clone(), HttpOptions::new(TOKEN)).await;
    let resp = no_hook
        .http
        .post(no_hook.url(&format!("/webhook/{HOOK}/qualify")))
        .form(&[("code", "X")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

async fn v1_compatibility(db: &TestDb) {
    let s = serve(
        db.ledger.clone(),
        HttpOptions::new(TOKEN).with_public_base_url("https://ledger.example.com/"),
    )
    .await;
    let c = s.campaign(&db.ledger).await;
    let (status, ann) = s
        .post(
            "/api/v1/users",
            json!({"campaign_id": c, "first_name": "Ann", "email": "ann@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ann}");
    assert!(ann.get("data").is_none(), "unwrapped");
    let (status, bob) = s
        .post(
            "/api/v1/users",
            json!({"campaign_id": c, "first_name": "Bob", "email": "bob@example.com", "referrer_code": ann["code"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bob}");
    assert_eq!(bob["referrer_id"], ann["id"]);
    let (status, body) = s
        .post(
            "/api/v1/users",
            json!({"campaign_id": c, "first_name": "X", "email": "x@example.com", "referrer_code": "NOPE2345"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = s
        .post(
            "/api/v1/users",
            json!({"campaign_id": c, "first_name": "Ann", "email": "ann@example.com"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["errors"]["email"][0]["message"],
        "email already exists"
    );

    let bob_id = bob["id"].as_i64().unwrap();
    let (status, got) = s.get(&format!("/api/v1/users/{bob_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["email"], "bob@example.com");

    let (status, q) = s
        .put(
            &format!("/api/v1/users/{bob_id}"),
            json!({"campaign_id": c, "qualified": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert!(q["qualified_at"].is_string());
    let (_, q2) = s
        .put(
            &format!("/api/v1/users/{bob_id}"),
            json!({"campaign_id": c, "qualified": true}),
        )
        .await;
    assert_eq!(q2["qualified_at"], q["qualified_at"], "idempotent");
    let (status, body) = s
        .put(
            &format!("/api/v1/users/{bob_id}"),
            json!({"campaign_id": c + 1, "qualified": true}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = s
        .put(
            &format!("/api/v1/users/{bob_id}"),
            json!({"first_name": "B"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);

    // GET /users ignores campaign_id, like Referral Factory's v1.
    let other = s.campaign(&db.ledger).await;
    s.post(
        "/api/v1/users",
        json!({"campaign_id": other, "first_name": "Zed", "email": "zed@example.com"}),
    )
    .await;
    let (status, list) = s
        .get(&format!("/api/v1/users?campaign_id={c}&per_page=2"))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["meta"]["total"], json!(3));
    let next = list["links"]["next"].as_str().unwrap();
    assert!(
        next.starts_with("https://ledger.example.com/api/v1/users?") && next.contains("page=2"),
        "{next}"
    );

    let (status, camps) = s.get("/api/v1/campaigns").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(camps["data"].as_array().unwrap().len(), 2);
    assert_eq!(camps["data"][0]["url"], "https://example.com/r");
    let (status, one) = s.get(&format!("/api/v1/campaigns/{c}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["name"], "Spring");
    let (status, v2) = s.get("/api/v2/campaigns?per_page=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v2["meta"]["last_page"], json!(2));
}

async fn body_limit_and_unknown_routes(db: &TestDb) {
    let s = serve(
        db.ledger.clone(),
        HttpOptions::new(TOKEN).with_body_limit(1024),
    )
    .await;
    let big = json!({"campaign_id": 1, "first_name": "x".repeat(4096), "email": "a@b.c"});
    let (status, body) = s.post("/api/v2/users", big).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body) = s.get("/api/v2/nothing-here").await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = s.get("/elsewhere").await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = s.call(reqwest::Method::DELETE, "/api/v2/users", None).await;
    assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED);
}

async fn list_links_never_come_from_the_host_header(db: &TestDb) {
    let c = db
        .ledger
        .create_campaign(&refsync_ledger::NewCampaign {
            name: "A".into(),
            link_base_url: None,
        })
        .await
        .unwrap()
        .id;
    for i in 0..3 {
        db.ledger
            .add_user(&refsync_core::NewUser {
                campaign_id: c.to_string(),
                first_name: format!("U{i}"),
                email: format!("u{i}@example.com"),
                referrer: None,
                meta: Default::default(),
                notify: false,
            })
            .await
            .unwrap();
    }
    let get = |s: &Server, path: &str| {
        s.http
            .get(s.url(path))
            .bearer_auth(TOKEN)
            .header(reqwest::header::HOST, "evil.example")
            .send()
    };
    // Without a public base URL: relative links (path and query), whatever Host says.
    let s = server(db).await;
    for path in [
        "/api/v2/users?per_page=1&page=2",
        "/api/v1/users?per_page=1&page=2",
        "/api/v2/campaigns?per_page=1",
        "/api/v2/rewards/due/amount?per_page=1",
    ] {
        let resp = get(&s, path).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let body: Value = resp.json().await.unwrap();
        let prefix = path.split('?').next().unwrap();
        for link in ["first", "last", "prev", "next"] {
            let Some(url) = body["links"][link].as_str() else {
                continue;
            };
            assert!(!url.contains("evil"), "{path} {link}: {url}");
            assert!(
                url.starts_with(&format!("{prefix}?")),
                "{path} {link}: {url}"
            );
        }
    }
    let body: Value = get(&s, "/api/v2/users?per_page=1&page=2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["links"]["next"], "/api/v2/users?per_page=1&page=3");
    assert_eq!(body["links"]["prev"], "/api/v2/users?per_page=1&page=1");
    drop(s);

    // With one: absolute links under it.
    let s = serve(
        db.ledger.clone(),
        HttpOptions::new(TOKEN).with_public_base_url("https://ledger.example.com/"),
    )
    .await;
    let body: Value = get(&s, "/api/v2/users?per_page=1&page=2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["links"]["next"],
        "https://ledger.example.com/api/v2/users?per_page=1&page=3"
    );
}

async fn users_by_email_are_matched_exactly(db: &TestDb) {
    let s = server(db).await;
    let c = s.campaign(&db.ledger).await;
    let cat = s.user(c, "Cat", "catjones+crm@gmail.com", None).await;
    // `+` is literal in a path; `%2B` in a query string.
    for path in [
        format!("/api/v2/users/catjones+crm@gmail.com?campaign_id={c}"),
        "/api/v2/users/CatJones+CRM@Gmail.com".to_owned(),
        format!("/api/v2/users/catjones%2Bcrm%40gmail.com?campaign_id={c}"),
        format!("/api/v2/users?campaign_id={c}&filter[email][equal]=CATJONES%2Bcrm%40gmail.com"),
        format!("/api/v2/users?campaign_id={c}&filter[email]=%20catjones%2Bcrm%40gmail.com%20"),
    ] {
        let (status, body) = s.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let data = if body["data"].is_array() {
            assert_eq!(body["meta"]["total"], json!(1), "{path}: {body}");
            body["data"][0].clone()
        } else {
            body["data"].clone()
        };
        assert_eq!(data["id"], cat["id"], "{path}");
        assert_eq!(data["email"], "catjones+crm@gmail.com", "{path}");
    }
    // Other forms of the same (normalized) address: 404, and an empty filter result, alike.
    for other in ["catjones@gmail.com", "cat.jones+crm@gmail.com"] {
        let (status, body) = s
            .get(&format!("/api/v2/users/{other}?campaign_id={c}"))
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
        let (status, body) = s
            .get(&format!(
                "/api/v2/users?campaign_id={c}&filter[email][equal]={}",
                other.replace('+', "%2B")
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["meta"]["total"], json!(0), "{other}: {body}");
    }
    // ...but still the same person for "email already exists".
    let (status, body) = s
        .post(
            "/api/v2/users",
            json!({"campaign_id": c, "first_name": "Cat", "email": "cat.jones@gmail.com"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["errors"]["email"][0]["message"],
        "email already exists"
    );
}
