//! Tests of the simulator framework with a real HTTP client (reqwest).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use refsync_testkit::sim::{
    Fault, FaultRule, RecordedRequest, SimHandler, SimOptions, SimResponse, Simulator,
    parse_urlencoded, percent_decode, send_webhook,
};
use serde_json::{Value, json};

/// A tiny stateful CRM: POST /v1/persons creates, GET /v1/persons/{id} reads, GET /v1/count.
#[derive(Default)]
struct Crm {
    persons: Mutex<BTreeMap<u64, Value>>,
    next_id: AtomicUsize,
    calls: AtomicUsize,
}

impl SimHandler for Crm {
    fn handle(&self, req: &RecordedRequest) -> SimResponse {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("POST", ["v1", "persons"]) => {
                let Some(body) = req.json() else {
                    return SimResponse::json(400, &json!({"error": "body must be JSON"}));
                };
                let id = self.next_id.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                let mut person = body;
                person["id"] = json!(id);
                self.persons.lock().unwrap().insert(id, person.clone());
                SimResponse::json(201, &json!({"success": true, "data": person}))
            }
            ("GET", ["v1", "persons", id]) => {
                let person = id
                    .parse::<u64>()
                    .ok()
                    .and_then(|id| self.persons.lock().unwrap().get(&id).cloned());
                match person {
                    Some(p) => SimResponse::json(200, &json!({"success": true, "data": p})),
                    None => {
                        SimResponse::json(404, &json!({"success": false, "error": "not found"}))
                    }
                }
            }
            ("GET", ["v1", "count"]) => {
                SimResponse::text(200, &self.persons.lock().unwrap().len().to_string())
            }
            _ => SimResponse::empty(404),
        }
    }
}

fn new_client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

async fn create_person(client: &reqwest::Client, sim: &Simulator, name: &str) -> reqwest::Response {
    client
        .post(sim.url("/v1/persons"))
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn stateful_handler_keeps_state_across_requests_and_connections() {
    let sim = Simulator::start(Crm::default()).await.unwrap();
    assert!(sim.base_url().starts_with("http://127.0.0.1:"));
    let client = new_client();

    for (i, name) in ["Ann", "Bob", "Cid"].into_iter().enumerate() {
        let response = create_person(&client, &sim, name).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["id"], json!(i + 1));
    }
    let body: Value = client
        .get(sim.url("/v1/persons/2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["name"], "Bob");

    // A second, independent client sees the same state.
    let other = new_client();
    let count = other.get(sim.url("/v1/count")).send().await.unwrap();
    assert_eq!(count.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(count.text().await.unwrap(), "3");
    let missing = other.get(sim.url("/v1/persons/99")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    assert_eq!(sim.served(), 6);
    let log = sim.requests();
    assert_eq!(log.len(), 6);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/v1/persons");
    assert_eq!(log[0].json(), Some(json!({"name": "Ann"})));
    assert_eq!(log[0].header("Content-Type"), Some("application/json"));
    assert_eq!(log[3].method, "GET");
    assert_eq!(log[3].path, "/v1/persons/2");
    assert!(log[3].body.is_empty());
    assert_eq!(sim.requests_to("POST", "/v1/persons").len(), 3);

    sim.clear_requests();
    assert!(sim.requests().is_empty());
    assert_eq!(sim.served(), 6, "served is not reset by clear_requests");
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let sim = Simulator::start(Crm::default()).await.unwrap();
    let client = new_client();
    for i in 0..5 {
        let response = create_person(&client, &sim, &format!("p{i}")).await;
        assert_eq!(response.status(), 201);
        response.bytes().await.unwrap();
    }
    assert_eq!(
        sim.connections(),
        1,
        "sequential requests share one pooled connection"
    );
}

#[tokio::test]
async fn concurrent_requests_all_counted() {
    let crm = std::sync::Arc::new(Crm::default());
    let handler = {
        let crm = std::sync::Arc::clone(&crm);
        move |req: &RecordedRequest| crm.handle(req)
    };
    let sim = Simulator::start(handler).await.unwrap();
    let client = new_client();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = client.clone();
        let url = sim.url("/v1/persons");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({ "name": format!("n{i}") }))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 201);
    }
    assert_eq!(crm.calls.load(Ordering::SeqCst), 20);
    assert_eq!(crm.persons.lock().unwrap().len(), 20);
    let mut ids: Vec<u64> = crm.persons.lock().unwrap().keys().copied().collect();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    assert_eq!(sim.requests().len(), 20);
}

#[tokio::test]
async fn query_headers_and_form_are_recorded_and_decoded() {
    let sim = Simulator::start(|req: &RecordedRequest| {
        SimResponse::json(200, &json!({"term": req.query_param("term")}))
            .with_header("x-request-id", "abc")
    })
    .await
    .unwrap();
    let response = new_client()
        .post(sim.url("/v1/persons/search?term=Jane%20Doe&fields=email&fields=name&plus=a+b"))
        .header("X-Custom", "Value-1")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("code=R%26F%3D1&campaign=spring+sale&empty=")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "abc");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"term": "Jane Doe"})
    );

    let req = &sim.requests()[0];
    assert_eq!(
        req.query.as_deref(),
        Some("term=Jane%20Doe&fields=email&fields=name&plus=a+b")
    );
    assert_eq!(
        req.query_pairs(),
        vec![
            ("term".to_owned(), "Jane Doe".to_owned()),
            ("fields".to_owned(), "email".to_owned()),
            ("fields".to_owned(), "name".to_owned()),
            ("plus".to_owned(), "a b".to_owned()),
        ]
    );
    assert_eq!(req.query_param("fields").as_deref(), Some("email"));
    assert_eq!(req.query_param("nope"), None);
    assert_eq!(req.header("x-custom"), Some("Value-1"));
    assert_eq!(req.header("X-CUSTOM"), Some("Value-1"));
    assert_eq!(
        req.form(),
        vec![
            ("code".to_owned(), "R&F=1".to_owned()),
            ("campaign".to_owned(), "spring sale".to_owned()),
            ("empty".to_owned(), String::new()),
        ]
    );
    assert_eq!(req.json(), None, "a form body is not JSON");
    assert_eq!(
        req.path_and_query(),
        "/v1/persons/search?term=Jane%20Doe&fields=email&fields=name&plus=a+b"
    );
}

#[test]
fn url_decoding_helpers() {
    assert_eq!(percent_decode("a%20b+c", false), "a b+c");
    assert_eq!(percent_decode("a%20b+c", true), "a b c");
    assert_eq!(percent_decode("%C3%A4%", false), "ä%");
    assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    assert_eq!(percent_decode("%+1%-1", false), "%+1%-1");
    assert_eq!(percent_decode("%FF", false), "\u{FFFD}");
    assert_eq!(
        parse_urlencoded("a=1&&b&c=%3D"),
        vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), String::new()),
            ("c".to_owned(), "=".to_owned())
        ]
    );
    let empty = RecordedRequest {
        method: "GET".into(),
        path: "/".into(),
        query: None,
        headers: vec![],
        body: vec![0xff, 0xfe],
    };
    assert!(empty.query_pairs().is_empty());
    assert!(empty.form().is_empty());
    assert_eq!(empty.json(), None);
}

#[tokio::test]
async fn status_faults_apply_the_given_number_of_times_then_the_handler_runs() {
    let crm = std::sync::Arc::new(Crm::default());
    let handler = {
        let crm = std::sync::Arc::clone(&crm);
        move |req: &RecordedRequest| crm.handle(req)
    };
    let sim = Simulator::start(handler).await.unwrap();
    let client = new_client();

    for status in [401u16, 403, 404, 409, 422] {
        sim.inject(FaultRule::new(Fault::Status {
            status,
            headers: vec![("x-fault".into(), status.to_string())],
            body: format!("{{\"status\":{status}}}").into_bytes(),
        }));
        let response = create_person(&client, &sim, "x").await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["x-fault"], status.to_string().as_str());
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({ "status": status })
        );
    }
    assert_eq!(
        crm.calls.load(Ordering::SeqCst),
        0,
        "faulted requests skip the handler"
    );

    sim.inject(FaultRule::new(Fault::status_json(422, &json!({"errors": ["bad"]}))).times(2));
    assert_eq!(create_person(&client, &sim, "a").await.status(), 422);
    assert_eq!(sim.pending_faults().len(), 1);
    assert_eq!(sim.pending_faults()[0].times, 1);
    assert_eq!(create_person(&client, &sim, "b").await.status(), 422);
    assert!(sim.pending_faults().is_empty());
    assert_eq!(create_person(&client, &sim, "c").await.status(), 201);
    assert_eq!(crm.calls.load(Ordering::SeqCst), 1);
    // Faulted requests are recorded too.
    assert_eq!(sim.requests().len(), 8);
}

#[tokio::test]
async fn rate_limited_fault_sends_429_with_retry_after() {
    let sim = Simulator::start(Crm::default()).await.unwrap();
    sim.inject(FaultRule::new(Fault::RateLimited {
        retry_after_secs: 7,
    }));
    let client = new_client();
    let response = create_person(&client, &sim, "x").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "rate limited"})
    );
    assert_eq!(create_person(&client, &sim, "x").await.status(), 201);
}

#[tokio::test]
async fn server_error_fault_sends_5xx_with_json_body() {
    let sim = Simulator::start(Crm::default()).await.unwrap();
    sim.inject(FaultRule::new(Fault::ServerError { status: 503 }));
    sim.inject(FaultRule::new(Fault::ServerError { status: 500 }));
    let client = new_client();
    let first = create_person(&client, &sim, "x").await;
    assert_eq!(first.status(), 503);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["status"], 503);
    assert!(body["error"].is_string());
    assert_eq!(create_person(&client, &sim, "x").await.status(), 500);
    assert_eq!(create_person(&client, &sim, "x").await.status(), 201);
}

#[tokio::test]
async fn latency_fault_delays_then_runs_the_handler() {
    let crm = std::sync::Arc::new(Crm::default());
    let handler = {
        let crm = std::sync::Arc::clone(&crm);
        move |req: &RecordedRequest| crm.handle(req)
    };
    let sim = Simulator::start(handler).await.unwrap();
    let delay = Duration::from_millis(300);
    sim.inject(FaultRule::new(Fault::Latency(delay)));
    let started = Instant::now();
    let response = create_person(&new_client(), &sim, "slow").await;
    // Loose lower bound only: the machine may be slow, never faster than the injected sleep.
    assert!(started.elapsed() >= delay);
    assert_eq!(response.status(), 201);
    assert_eq!(
        crm.calls.load(Ordering::SeqCst),
        1,
        "the handler ran after the delay"
    );
}

#[tokio::test]
async fn latency_fault_lets_client_timeouts_fire() {
    let sim = Simulator::start(Crm::default()).await.unwrap();
    sim.inject(FaultRule::new(Fault::Latency(Duration::from_secs(30))));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = client.get(sim.url("/v1/count")).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
}

#[tokio::test]
async fn drop_connection_fault_gives_a_connection_error_and_the_server_recovers() {
    let crm = std::sync::Arc::new(Crm::default());
    let handler = {
        let crm = std::sync::Arc::clone(&crm);
        move |req: &RecordedRequest| crm.handle(req)
    };
    let sim = Simulator::start(handler).await.unwrap();
    let client = new_client();
    // Warm the pool so the drop happens on a kept-alive connection.
    assert_eq!(create_person(&client, &sim, "first").await.status(), 201);

    sim.inject(FaultRule::new(Fault::DropConnection));
    let error = client
        .post(sim.url("/v1/persons"))
        .json(&json!({"name": "dropped"}))
        .send()
        .await
        .expect_err("the connection is closed without a response");
    assert!(!error.is_status());
    assert!(error.status().is_none());
    assert_eq!(
        crm.calls.load(Ordering::SeqCst),
        1,
        "the handler did not run"
    );
    assert_eq!(sim.requests().len(), 2, "the dropped request is recorded");
    assert_eq!(sim.requests()[1].json(), Some(json!({"name": "dropped"})));

    // The same client works again (on a new connection).
    assert_eq!(create_person(&client, &sim, "after").await.status(), 201);
    assert!(sim.connections() >= 2);

    // And on a fresh connection too.
    sim.inject(FaultRule::new(Fault::DropConnection));
    assert!(new_client().get(sim.url("/v1/count")).send().await.is_err());
}

#[tokio::test]
async fn rules_match_method_and_path_prefix_and_always_until_cleared() {
    let sim = Simulator::start(Crm::default()).await.unwrap();
    let client = new_client();
    sim.inject(
        FaultRule::new(Fault::ServerError { status: 502 })
            .on("GET", "/v1/persons")
            .always(),
    );
    sim.inject(
        FaultRule::new(Fault::Status {
            status: 401,
            headers: vec![],
            body: vec![],
        })
        .on("*", "/v1/count"),
    );

    // POST does not match the GET rule.
    assert_eq!(create_person(&client, &sim, "x").await.status(), 201);
    for _ in 0..3 {
        let r = client.get(sim.url("/v1/persons/1")).send().await.unwrap();
        assert_eq!(r.status(), 502);
    }
    // lower-case method in the rule matches too
    sim.inject(FaultRule::new(Fault::ServerError { status: 504 }).on("post", "/v1/"));
    assert_eq!(create_person(&client, &sim, "y").await.status(), 504);

    let r = client.get(sim.url("/v1/count")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.get(sim.url("/v1/count")).send().await.unwrap();
    assert_eq!(r.status(), 200, "times(1) rule is used up");

    assert_eq!(sim.pending_faults().len(), 1);
    sim.clear_faults();
    assert!(sim.pending_faults().is_empty());
    let r = client.get(sim.url("/v1/persons/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A rule with times(0) never applies.
    sim.inject(FaultRule::new(Fault::ServerError { status: 500 }).times(0));
    let r = client.get(sim.url("/v1/count")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn request_budget_is_bounded() {
    let options = SimOptions {
        max_requests: 3,
        ..SimOptions::default()
    };
    let sim = Simulator::start_with(Crm::default(), options)
        .await
        .unwrap();
    let client = new_client();
    for _ in 0..3 {
        assert_eq!(create_person(&client, &sim, "x").await.status(), 201);
    }
    for _ in 0..2 {
        let r = create_person(&client, &sim, "x").await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.text().await.unwrap(), "request budget exhausted");
    }
    assert_eq!(sim.served(), 3);
    assert_eq!(sim.requests().len(), 3, "refused requests are not recorded");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let options = SimOptions {
        max_body: 64,
        ..SimOptions::default()
    };
    let sim = Simulator::start_with(Crm::default(), options)
        .await
        .unwrap();
    let client = new_client();
    let big = "x".repeat(1000);
    let r = client
        .post(sim.url("/v1/persons"))
        .json(&json!({ "name": big }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A body just under the limit is fine.
    assert_eq!(
        create_person(&new_client(), &sim, "small").await.status(),
        201
    );
}

#[tokio::test]
async fn invalid_status_and_headers_from_a_handler_do_not_break_the_server() {
    let sim = Simulator::start(|_: &RecordedRequest| {
        SimResponse::empty(42)
            .with_header("bad header", "x")
            .with_header("x-ok", "fine")
            .with_header("x-bad-value", "line\nbreak")
    })
    .await
    .unwrap();
    let r = new_client().get(sim.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["x-ok"], "fine");
    assert!(r.headers().get("x-bad-value").is_none());
}

#[tokio::test]
async fn send_webhook_posts_method_headers_and_body() {
    let sim = Simulator::start(|req: &RecordedRequest| {
        SimResponse::json(
            202,
            &json!({
                "method": req.method,
                "signature": req.header("x-signature"),
                "bytes": req.body.len(),
            }),
        )
    })
    .await
    .unwrap();
    let body = br#"[{"eventId":1,"subscriptionType":"contact.creation"}]"#.to_vec();
    let url = sim.url("/webhooks/hubspot?tenant=a%20b");
    let request = refsync_core::WebhookRequest::post(url.clone(), body.clone())
        .with_header("Content-Type", "application/json")
        .with_header("X-Signature", "sig")
        .with_header("Content-Length", "1"); // replaced by the real length
    let (status, answer) = send_webhook(&url, &request).await.unwrap();
    assert_eq!(status, 202);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        answer,
        json!({"method": "POST", "signature": "sig", "bytes": body.len()})
    );
    let recorded = &sim.requests()[0];
    assert_eq!(recorded.path, "/webhooks/hubspot");
    assert_eq!(recorded.query_param("tenant").as_deref(), Some("a b"));
    assert_eq!(recorded.body, body);
    assert_eq!(
        recorded.header("host"),
        Some(sim.base_url().trim_start_matches("http://"))
    );

    // Other methods work too.
    let mut put = request.clone();
    put.method = "PUT".into();
    let (status, answer) = send_webhook(&url, &put).await.unwrap();
    assert_eq!(status, 202);
    assert_eq!(
        serde_json::from_slice::<Value>(&answer).unwrap()["method"],
        "PUT"
    );

    // Bad URLs are input errors, not panics.
    for bad in ["/relative", "https://127.0.0.1:1/x", "not a url", ""] {
        let err = send_webhook(bad, &request).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad}: {err}");
    }
}

#[tokio::test]
async fn send_webhook_reports_dropped_connections_as_errors() {
    let sim = Simulator::start(Crm::default()).await.unwrap();
    sim.inject(FaultRule::new(Fault::DropConnection));
    let url = sim.url("/v1/persons");
    let request = refsync_core::WebhookRequest::post(url.clone(), b"{}".to_vec());
    assert!(send_webhook(&url, &request).await.is_err());
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let sim = Simulator::start(Crm::default()).await.unwrap();
    let client = new_client();
    assert_eq!(create_person(&client, &sim, "x").await.status(), 201);
    let url = sim.url("/v1/count");
    sim.shutdown().await;
    // The listener is closed and kept-alive connections are gone.
    assert!(client.get(&url).send().await.is_err());
    assert!(reqwest::get(&url).await.is_err());

    let sim = Simulator::start(Crm::default()).await.unwrap();
    let url = sim.url("/v1/count");
    assert!(reqwest::get(&url).await.is_ok());
    drop(sim);
    // Abort is asynchronous: give the runtime a bounded number of turns to drop the listener.
    let mut stopped = false;
    for _ in 0..200 {
        if reqwest::get(&url).await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stopped, "the server stops after drop");
}

#[tokio::test]
async fn debug_output_names_the_address() {
    let sim = Simulator::start(Crm::default()).await.unwrap();
    let debug = format!("{sim:?}");
    assert!(debug.contains(&sim.addr().to_string()), "{debug}");
}
