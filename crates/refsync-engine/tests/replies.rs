//! Vendor-specific replies: a handshake is answered and never stored (and needs no credentials);
//! an accepted delivery can get the vendor's own acknowledgement.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use refsync_core::{
    Connector, ConnectorInfo, CrmEvent, PushOutcome, PushSpec, ReferredUser, Result, Verification,
    WebhookReply, WebhookRequest,
};
use refsync_engine::config::EngineConfig;
use refsync_engine::store::{DeliveryFilter, open_store};
use refsync_engine::{Engine, Instance};
use serde_json::json;

/// The generic webhook (token auth), plus WooCommerce-style ping handling and a SOAP-style ack.
#[derive(Debug)]
struct Shop(Arc<dyn Connector>);

#[refsync_core::async_trait]
impl Connector for Shop {
    fn info(&self) -> ConnectorInfo {
        self.0.info()
    }
    fn handshake(&self, request: &WebhookRequest) -> Option<WebhookReply> {
        let form = request
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        let body = std::str::from_utf8(&request.body).ok()?;
        let id = body.strip_prefix("webhook_id=")?;
        (form && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(WebhookReply::ok)
    }
    fn acknowledgement(&self, _request: &WebhookRequest) -> Option<WebhookReply> {
        Some(WebhookReply {
            status: 200,
            content_type: "text/xml; charset=utf-8".into(),
            body: b"<Ack>true</Ack>".to_vec(),
        })
    }
    fn verify(&self, request: &WebhookRequest, now: DateTime<Utc>) -> Result<Verification> {
        self.0.verify(request, now)
    }
    fn parse(&self, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
        self.0.parse(request)
    }
    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        self.0.push_referral(user, spec).await
    }
    async fn health_check(&self) -> Result<()> {
        self.0.health_check().await
    }
}

#[tokio::test]
async fn handshakes_are_answered_without_storing_and_acks_are_the_vendors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&format!(
        "sqlite://{}",
        dir.path().join("engine.db").display()
    ))
    .await
    .unwrap();
    let ledger = refsync_ledger::Ledger::open("sqlite::memory:")
        .await
        .unwrap();
    let mut registry = refsync_core::Registry::new();
    refsync_generic_webhook::register(&mut registry);
    let inner = registry
        .build_connector(
            "generic-webhook",
            &json!({ "auth": { "type": "token", "header": "X-Token", "token": "shop-token-123" },
                     "events": { "object_kind": { "value": "order" }, "object_id": "/id", "status": "/status" } }),
        )
        .unwrap();
    let instance = Instance::new("shop", Arc::new(Shop(inner)), Vec::new(), None, None);
    let engine = Engine::with_parts(
        store.clone(),
        Arc::new(ledger),
        vec![instance],
        EngineConfig::default(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, engine.router()).await });
    let http = reqwest::Client::new();
    let post = |body: &'static str, form: bool, token: Option<&str>| {
        let mut rb = http.post(format!("{base}/hooks/shop")).body(body);
        rb = rb.header(
            "content-type",
            if form {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            },
        );
        if let Some(t) = token {
            rb = rb.header("X-Token", t.to_owned());
        }
        rb.send()
    };

    // The unsigned creation ping: 200, empty, nothing stored.
    let ping = post("webhook_id=42", true, None).await.unwrap();
    assert_eq!(ping.status(), 200);
    assert!(ping.bytes().await.unwrap().is_empty());
    assert!(
        store
            .list_deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Anything else without credentials is still refused.
    let not_a_ping = post("webhook_id=42&status=paid", true, None).await.unwrap();
    assert_eq!(not_a_ping.status(), 401);
    assert!(
        store
            .list_deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .is_empty()
    );

    // An accepted delivery gets the vendor's acknowledgement, and is stored.
    let order = post(
        r#"{"id": 7, "status": "processing"}"#,
        false,
        Some("shop-token-123"),
    )
    .await
    .unwrap();
    assert_eq!(order.status(), 200);
    assert_eq!(order.headers()["content-type"], "text/xml; charset=utf-8");
    assert_eq!(order.text().await.unwrap(), "<Ack>true</Ack>");
    assert_eq!(
        store
            .list_deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    server.abort();
}
