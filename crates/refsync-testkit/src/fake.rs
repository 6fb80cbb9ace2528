//! [`FakeConnector`]: the reference connector that passes the whole conformance suite, and
//! [`fake_crm`], the simulated CRM it talks to over real loopback HTTP.
//!
//! It is small on purpose: read it to see what each conformance test expects.
//!
//! Wire format (made up for this connector; there is no vendor behind it):
//! - webhooks are JSON `{"delivery_id", "occurred_at", "object": {"kind", "id"}, "stage",
//!   "previous_stage", "pipeline", "status", "converted_deal", "referral_code", "email"}`, signed
//!   with `X-Fake-Timestamp: <unix seconds>` and `X-Fake-Signature: hex(HMAC-SHA256(secret,
//!   "<timestamp>.<body>"))`, accepted within `tolerance_secs` (default 300);
//! - the CRM API has `GET /me`, `GET /records?email=`, `POST /records`, `PATCH /records/{id}`,
//!   all behind `Authorization: Bearer <api_token>`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::registry::{normalize_settings, parse_settings};
use refsync_core::{
    Capabilities, Change, Connector, ConnectorDescriptor, ConnectorInfo, CrmEvent, CrmObjectRef,
    DuplicatePolicy, Error, ObjectKind, Placeholder, PushAction, PushOutcome, PushSpec,
    ReferredUser, Registry, Result, Secret, Verification, WebhookRequest,
};
use refsync_http::{ApiRequest, Auth, HttpClient, SignatureEncoding};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::sim::{RecordedRequest, SimResponse, Simulator};

/// Registry name.
pub const NAME: &str = "fake";

/// Static info: every capability the suite can test without a vendor.
pub const INFO: ConnectorInfo = ConnectorInfo {
    name: NAME,
    display_name: "Fake CRM (reference)",
    api_version: "n/a",
    capabilities: Capabilities {
        webhooks: true,
        push: true,
        duplicate_lookup: true,
        ..Capabilities::NONE
    },
    required_mappings: &[
        Placeholder::FirstName,
        Placeholder::Email,
        Placeholder::ReferralCode,
    ],
};

/// Settings of the fake connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeConfig {
    /// Base URL of the fake CRM API.
    pub base_url: String,
    /// Bearer token for the API.
    pub api_token: Secret,
    /// HMAC secret of the webhooks.
    pub webhook_secret: Secret,
    /// Replay window in seconds.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u64,
}

fn default_tolerance() -> u64 {
    300
}

/// The reference connector.
#[derive(Debug)]
pub struct FakeConnector {
    config: FakeConfig,
    client: HttpClient,
}

/// Registers the fake connector.
pub fn register(registry: &mut Registry) {
    registry.register_connector(ConnectorDescriptor {
        info: INFO,
        build: |settings, _| Ok(Arc::new(FakeConnector::new(parse_settings(settings)?)?)),
        normalize_settings: normalize_settings::<FakeConfig>,
    });
}

impl FakeConnector {
    /// Builds the connector.
    pub fn new(config: FakeConfig) -> Result<Self> {
        let client = HttpClient::builder(NAME)
            .base_url(config.base_url.clone())
            .auth(Auth::Bearer(config.api_token.clone()))
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(FakeConnector { config, client })
    }
}

/// Signs a fake webhook: returns the headers to add.
pub fn sign(secret: &str, body: &[u8], at: DateTime<Utc>) -> Vec<(String, String)> {
    let ts = at.timestamp().to_string();
    let mut msg = format!("{ts}.").into_bytes();
    msg.extend_from_slice(body);
    vec![
        ("X-Fake-Timestamp".into(), ts),
        (
            "X-Fake-Signature".into(),
            refsync_http::hmac_sha256_hex(secret.as_bytes(), &msg),
        ),
    ]
}

#[derive(Debug, Deserialize)]
struct FakeWebhook {
    delivery_id: Option<String>,
    occurred_at: Option<DateTime<Utc>>,
    object: FakeObject,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    previous_stage: Option<String>,
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    converted_deal: Option<String>,
    #[serde(default)]
    referral_code: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FakeObject {
    kind: String,
    id: IdValue,
}

/// Vendors send ids as numbers or strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdValue {
    Int(i64),
    Text(String),
}

impl IdValue {
    fn into_string(self) -> String {
        match self {
            IdValue::Int(i) => i.to_string(),
            IdValue::Text(s) => s,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Record {
    id: u64,
}

fn err(e: Error, op: &'static str) -> Error {
    e.with_connector(NAME).with_operation(op)
}

#[async_trait]
impl Connector for FakeConnector {
    fn info(&self) -> ConnectorInfo {
        INFO
    }

    fn verify(&self, request: &WebhookRequest, now: DateTime<Utc>) -> Result<Verification> {
        let op = |m: &str| err(Error::unauthorized(m.to_owned()), "verify");
        let ts = request
            .header("X-Fake-Timestamp")
            .ok_or_else(|| op("missing X-Fake-Timestamp header"))?;
        let sig = request
            .header("X-Fake-Signature")
            .ok_or_else(|| op("missing X-Fake-Signature header"))?;
        refsync_http::check_timestamp(ts, now, Duration::from_secs(self.config.tolerance_secs))
            .map_err(|e| err(e, "verify"))?;
        let mut msg = format!("{ts}.").into_bytes();
        msg.extend_from_slice(&request.body);
        if refsync_http::verify_hmac_sha256(
            self.config.webhook_secret.expose().as_bytes(),
            &msg,
            sig,
            SignatureEncoding::Hex,
        ) {
            Ok(Verification::Verified {
                scheme: "hmac-sha256".into(),
            })
        } else {
            Err(op("signature does not match"))
        }
    }

    fn parse(&self, request: &WebhookRequest) -> Result<Vec<CrmEvent>> {
        let hook: FakeWebhook = serde_json::from_slice(&request.body).map_err(|e| {
            err(
                Error::validation(format!("not a fake webhook: {e}")),
                "parse",
            )
        })?;
        let kind = ObjectKind::parse(&hook.object.kind);
        let id = hook.object.id.into_string();
        let mut changes = Vec::new();
        if let Some(deal_id) = hook.converted_deal {
            changes.push(Change::LeadConverted {
                lead_id: id.clone(),
                deal_id: Some(deal_id),
            });
        }
        if let Some(to) = hook.stage {
            changes.push(Change::StageChanged {
                pipeline: hook.pipeline,
                from: hook.previous_stage,
                to,
            });
        }
        if let Some(to) = hook.status {
            changes.push(Change::StatusChanged { from: None, to });
        }
        if changes.is_empty() {
            changes.push(Change::Updated { fields: Vec::new() });
        }
        Ok(changes
            .into_iter()
            .map(|change| CrmEvent {
                delivery_id: hook.delivery_id.clone(),
                occurred_at: hook.occurred_at,
                referral_code: hook.referral_code.clone(),
                email: hook.email.clone(),
                ..CrmEvent::new(NAME, kind.clone(), id.clone(), change)
            })
            .collect())
    }

    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        spec.fields
            .check_required(INFO.required_mappings)
            .map_err(|e| err(e, "push_referral"))?;
        let fields = spec.fields.render(user);
        let link = |id: u64| {
            vec![CrmObjectRef {
                kind: spec.object.clone(),
                id: id.to_string(),
            }]
        };
        if spec.duplicates != DuplicatePolicy::AlwaysCreate {
            let existing: Vec<Record> = self
                .client
                .send(
                    ApiRequest::get("/records")
                        .query("email", &user.email)
                        .operation("push_referral"),
                )
                .await?
                .json()?;
            if let Some(r) = existing.first() {
                if spec.duplicates == DuplicatePolicy::LinkExisting {
                    return Ok(PushOutcome {
                        action: PushAction::LinkedExisting,
                        links: link(r.id),
                        warnings: vec![],
                    });
                }
                self.client
                    .send(
                        ApiRequest::patch_json(
                            format!("/records/{}", r.id),
                            json!({ "fields": fields }),
                        )
                        .operation("push_referral"),
                    )
                    .await?;
                return Ok(PushOutcome {
                    action: PushAction::Updated,
                    links: link(r.id),
                    warnings: vec![],
                });
            }
        }
        let created: Record = self
            .client
            .send(
                ApiRequest::post_json("/records", json!({ "email": user.email, "fields": fields }))
                    .operation("push_referral"),
            )
            .await?
            .json()?;
        Ok(PushOutcome {
            action: PushAction::Created,
            links: link(created.id),
            warnings: vec![],
        })
    }

    async fn health_check(&self) -> Result<()> {
        self.client
            .send(ApiRequest::get("/me").operation("health_check"))
            .await
            .map(|_| ())
    }
}

/// State of the fake CRM.
#[derive(Debug, Default)]
struct FakeCrm {
    token: String,
    records: Mutex<Vec<Value>>,
}

impl FakeCrm {
    fn handle(&self, req: &RecordedRequest) -> SimResponse {
        let auth_ok = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| refsync_http::constant_time_eq(t.as_bytes(), self.token.as_bytes()));
        if !auth_ok {
            return SimResponse::json(401, &json!({"error": "invalid token"}));
        }
        let Ok(mut records) = self.records.lock() else {
            return SimResponse::json(500, &json!({"error": "state poisoned"}));
        };
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("GET", ["me"]) => SimResponse::json(200, &json!({"ok": true})),
            ("GET", ["records"]) => {
                let email = req.query_param("email").unwrap_or_default().to_lowercase();
                let found: Vec<Value> = records
                    .iter()
                    .filter(|r| r["email"].as_str().map(str::to_lowercase) == Some(email.clone()))
                    .cloned()
                    .collect();
                SimResponse::json(200, &Value::Array(found))
            }
            ("POST", ["records"]) => {
                let Some(body) = req.json() else {
                    return SimResponse::json(400, &json!({"error": "body must be JSON"}));
                };
                if body["email"].as_str().is_none_or(str::is_empty) {
                    return SimResponse::json(422, &json!({"error": "email is required"}));
                }
                let id = records.len() as u64 + 1;
                let record = json!({"id": id, "email": body["email"], "fields": body["fields"]});
                records.push(record.clone());
                SimResponse::json(201, &record)
            }
            ("PATCH", ["records", id]) => {
                let Some(body) = req.json() else {
                    return SimResponse::json(400, &json!({"error": "body must be JSON"}));
                };
                match records
                    .iter_mut()
                    .find(|r| r["id"].as_u64().is_some_and(|n| id.parse() == Ok(n)))
                {
                    Some(r) => {
                        if let (Some(fields), Some(new)) =
                            (r["fields"].as_object_mut(), body["fields"].as_object())
                        {
                            for (k, v) in new {
                                fields.insert(k.clone(), v.clone());
                            }
                        }
                        SimResponse::json(200, r)
                    }
                    None => SimResponse::json(404, &json!({"error": "no such record"})),
                }
            }
            _ => SimResponse::json(404, &json!({"error": "no such route"})),
        }
    }
}

/// Starts the fake CRM on loopback; requests must carry `Bearer <token>`.
pub async fn fake_crm(token: &str) -> std::io::Result<Simulator> {
    let crm = Arc::new(FakeCrm {
        token: token.to_owned(),
        records: Mutex::default(),
    });
    Simulator::start(move |req: &RecordedRequest| crm.handle(req)).await
}
