//! Calls to the HubSpot CRM API v3 through refsync-http's client: retries with backoff
//! (429 waits for the rolling window HubSpot reports in `X-HubSpot-RateLimit-*`), a
//! client-side limit of `requests_per_10s`, `423 Locked` (heavy upsert bursts) waited out,
//! HTTP status → `ErrorKind`, secrets kept out of errors.
//!
//! Only batch endpoints read and write records (`/crm/v3/objects/{contacts,deals}/batch/*`,
//! `/crm/v3/associations/{from}/{to}/batch/*`), so 100 referrals cost one call per step. The
//! search API is never used: its index lags behind writes and it is limited to 5 requests per
//! second.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use refsync_core::{Error, ErrorKind, Result};
use refsync_http::oauth::TokenManager;
use refsync_http::{ApiRequest, ApiResponse, Auth, HttpClient, RateLimit};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::NAME;
use crate::config::{AuthConfig, Config};

/// How long HubSpot asks callers to wait after `423 Locked` ("at least 2 seconds").
const LOCKED_WAIT: Duration = Duration::from_secs(2);
/// Tries of a call answered `423 Locked`.
const LOCKED_TRIES: u32 = 3;

/// A CRM object type refsync reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ObjectType {
    Contacts,
    Deals,
}

impl ObjectType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ObjectType::Contacts => "contacts",
            ObjectType::Deals => "deals",
        }
    }
    fn group(self) -> &'static str {
        match self {
            ObjectType::Contacts => "contactinformation",
            ObjectType::Deals => "dealinformation",
        }
    }
}

/// A property as `/crm/v3/properties/{type}` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Property {
    pub(crate) name: String,
    pub(crate) unique: bool,
}

/// A deal stage, from the pipelines API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stage {
    pub(crate) pipeline: String,
    /// `Some(true)`: closed won; `Some(false)`: closed lost; `None`: open.
    pub(crate) won: Option<bool>,
}

/// One input of a batch upsert.
#[derive(Debug, Clone)]
pub(crate) struct UpsertInput {
    pub(crate) id: String,
    pub(crate) properties: BTreeMap<String, String>,
}

/// One record of a batch answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) properties: BTreeMap<String, String>,
    /// Upserts only: whether the record was created.
    pub(crate) new: bool,
}

/// The HubSpot API client.
pub(crate) struct Client {
    config: Config,
    oauth: Option<TokenManager>,
    http: OnceCell<HttpClient>,
    properties: Mutex<HashMap<ObjectType, Vec<Property>>>,
    stages: Mutex<Option<HashMap<String, Stage>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.config.base_url)
            .field("oauth", &self.oauth.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn record(v: &Value) -> Option<Record> {
    Some(Record {
        id: text(v.get("id")?)?,
        properties: v
            .get("properties")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
                    .collect()
            })
            .unwrap_or_default(),
        new: v.get("new").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The `results` of a batch answer (200, or 207 with `errors` for the inputs that failed).
fn records(resp: &ApiResponse) -> Result<Vec<Record>> {
    let body = resp.json_value()?;
    Ok(body
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(record)
        .collect())
}

/// The messages of a 207 answer's `errors`.
fn batch_errors(resp: &ApiResponse) -> Vec<String> {
    resp.json_value()
        .ok()
        .and_then(|b| b.get("errors").and_then(Value::as_array).cloned())
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("message").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

impl Client {
    /// A client per `config`; with OAuth, `oauth` is the instance's token manager.
    pub(crate) fn new(config: &Config, oauth: Option<TokenManager>) -> Result<Client> {
        if matches!(config.auth, AuthConfig::Oauth {}) && oauth.is_none() {
            return Err(Error::config(format!(
                "{NAME}: auth type \"oauth\" needs an [instances.oauth] table (client_id, client_secret, auth_url = \"https://app.hubspot.com/oauth/authorize\", token_url = \"https://api.hubapi.com/oauth/v1/token\", client_auth = \"request_body\", scopes) and `refsync oauth authorize <instance>`"
            )));
        }
        Ok(Client {
            config: config.clone(),
            oauth,
            http: OnceCell::new(),
            properties: Mutex::new(HashMap::new()),
            stages: Mutex::new(None),
        })
    }

    async fn http(&self) -> Result<&HttpClient> {
        self.http
            .get_or_try_init(|| async {
                let auth = match (&self.config.auth, &self.oauth) {
                    (AuthConfig::PrivateApp { token }, _) => Auth::Bearer(token.clone()),
                    (AuthConfig::Oauth {}, Some(tm)) => Auth::OAuth2(tm.clone()),
                    (AuthConfig::Oauth {}, None) => {
                        return Err(Error::config("oauth without a token manager"));
                    }
                };
                HttpClient::builder(NAME)
                    .base_url(self.config.base_url.trim_end_matches('/').to_owned())
                    .auth(auth)
                    .rate_limit(RateLimit::new(
                        self.config.requests_per_10s,
                        Duration::from_secs(10),
                    ))
                    .build()
            })
            .await
    }

    /// Sends `req`; `423 Locked` is waited out (2 s) up to three tries, then reported as a
    /// rate limit so the job is retried later.
    async fn send(&self, req: ApiRequest) -> Result<ApiResponse> {
        let http = self.http().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            match http.send(req.clone()).await {
                Err(e) if e.message().starts_with("HTTP 423") => {
                    if tries >= LOCKED_TRIES {
                        return Err(Error::new(
                            ErrorKind::RateLimited {
                                retry_after: Some(LOCKED_WAIT),
                            },
                            e.message().to_owned(),
                        )
                        .with_connector(NAME));
                    }
                    tracing::warn!(
                        connector = NAME,
                        "HubSpot answered 423 Locked (too many writes at once); waiting 2 s"
                    );
                    tokio::time::sleep(LOCKED_WAIT).await;
                }
                other => return other,
            }
        }
    }

    // --- properties ---

    /// The properties of `object` (cached; `refresh` re-reads them).
    pub(crate) async fn properties(
        &self,
        object: ObjectType,
        refresh: bool,
    ) -> Result<Vec<Property>> {
        if !refresh && let Some(p) = lock(&self.properties).get(&object) {
            return Ok(p.clone());
        }
        let resp = self
            .send(
                ApiRequest::get(format!("/crm/v3/properties/{}", object.as_str()))
                    .operation("properties"),
            )
            .await?;
        let body = resp.json_value()?;
        let list: Vec<Property> = body
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(Property {
                    name: p.get("name")?.as_str()?.to_owned(),
                    unique: p
                        .get("hasUniqueValue")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            })
            .collect();
        lock(&self.properties).insert(object, list.clone());
        Ok(list)
    }

    /// Creates a text property (`unique`: with unique values).
    pub(crate) async fn create_property(
        &self,
        object: ObjectType,
        name: &str,
        unique: bool,
    ) -> Result<()> {
        let label = name
            .split('_')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ");
        let body = json!({
            "name": name, "label": label, "type": "string", "fieldType": "text",
            "groupName": object.group(), "hasUniqueValue": unique,
            "description": "Written by refsync (referral program).",
        });
        match self
            .send(
                ApiRequest::post_json(format!("/crm/v3/properties/{}", object.as_str()), body)
                    .operation("create_property"),
            )
            .await
        {
            // Created meanwhile by someone else: fine.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::Conflict) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(
            connector = NAME,
            object = object.as_str(),
            property = name,
            unique,
            "created a HubSpot property"
        );
        lock(&self.properties).remove(&object);
        Ok(())
    }

    // --- records ---

    /// `POST /crm/v3/objects/{type}/batch/upsert` by `id_property`: one record per input that
    /// succeeded, and the messages of those that failed.
    pub(crate) async fn batch_upsert(
        &self,
        object: ObjectType,
        id_property: &str,
        inputs: &[UpsertInput],
    ) -> Result<(Vec<Record>, Vec<String>)> {
        let inputs: Vec<Value> = inputs
            .iter()
            .map(|i| json!({"id": i.id, "idProperty": id_property, "properties": i.properties}))
            .collect();
        let resp = self
            .send(
                ApiRequest::post_json(
                    format!("/crm/v3/objects/{}/batch/upsert", object.as_str()),
                    json!({ "inputs": inputs }),
                )
                .operation("batch_upsert"),
            )
            .await?;
        Ok((records(&resp)?, batch_errors(&resp)))
    }

    /// `POST /crm/v3/objects/{type}/batch/read`, by record id or by a unique property; ids that
    /// do not exist are simply absent from the answer.
    pub(crate) async fn batch_read(
        &self,
        object: ObjectType,
        id_property: Option<&str>,
        ids: &[String],
        properties: &[&str],
    ) -> Result<Vec<Record>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut body = json!({
            "inputs": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            "properties": properties,
            "propertiesWithHistory": [],
        });
        if let Some(p) = id_property {
            body["idProperty"] = json!(p);
        }
        let resp = self
            .send(
                ApiRequest::post_json(
                    format!("/crm/v3/objects/{}/batch/read", object.as_str()),
                    body,
                )
                .operation("batch_read"),
            )
            .await?;
        records(&resp)
    }

    /// `POST /crm/v3/objects/{type}/batch/create`; `associate[i]`: contact to associate the
    /// new deal `i` with (deals only).
    pub(crate) async fn batch_create(
        &self,
        object: ObjectType,
        properties: &[BTreeMap<String, String>],
        associate: &[Option<String>],
    ) -> Result<(Vec<Record>, Vec<String>)> {
        let inputs: Vec<Value> = properties
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let associations = match associate.get(i).cloned().flatten() {
                    Some(contact) => json!([{
                        "to": {"id": contact},
                        // HubSpot-defined association type 3: deal to contact.
                        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]
                    }]),
                    None => json!([]),
                };
                json!({"properties": p, "associations": associations})
            })
            .collect();
        let resp = self
            .send(
                ApiRequest::post_json(
                    format!("/crm/v3/objects/{}/batch/create", object.as_str()),
                    json!({ "inputs": inputs }),
                )
                .operation("batch_create"),
            )
            .await?;
        Ok((records(&resp)?, batch_errors(&resp)))
    }

    /// `POST /crm/v3/objects/{type}/batch/update`: `(id, properties)` per record.
    pub(crate) async fn batch_update(
        &self,
        object: ObjectType,
        inputs: &[(String, BTreeMap<String, String>)],
    ) -> Result<(Vec<Record>, Vec<String>)> {
        if inputs.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let inputs: Vec<Value> = inputs
            .iter()
            .map(|(id, p)| json!({"id": id, "properties": p}))
            .collect();
        let resp = self
            .send(
                ApiRequest::post_json(
                    format!("/crm/v3/objects/{}/batch/update", object.as_str()),
                    json!({ "inputs": inputs }),
                )
                .operation("batch_update"),
            )
            .await?;
        Ok((records(&resp)?, batch_errors(&resp)))
    }

    // --- associations ---

    /// `POST /crm/v3/associations/{from}/{to}/batch/read`: the ids associated with each id.
    pub(crate) async fn associations(
        &self,
        from: ObjectType,
        to: ObjectType,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<String>>> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let resp = self
            .send(
                ApiRequest::post_json(
                    format!(
                        "/crm/v3/associations/{}/{}/batch/read",
                        from.as_str(),
                        to.as_str()
                    ),
                    json!({"inputs": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()}),
                )
                .operation("associations"),
            )
            .await?;
        let body = resp.json_value()?;
        for r in body
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(from) = r.pointer("/from/id").and_then(text) else {
                continue;
            };
            let to: Vec<String> = r
                .get("to")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("id").and_then(text))
                .collect();
            out.entry(from).or_insert_with(Vec::new).extend(to);
        }
        Ok(out)
    }

    /// `POST /crm/v3/associations/deals/contacts/batch/create` (idempotent).
    pub(crate) async fn associate_deals(&self, pairs: &[(String, String)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let inputs: Vec<Value> = pairs
            .iter()
            .map(|(deal, contact)| {
                json!({"from": {"id": deal}, "to": {"id": contact}, "type": "deal_to_contact"})
            })
            .collect();
        self.send(
            ApiRequest::post_json(
                "/crm/v3/associations/deals/contacts/batch/create",
                json!({ "inputs": inputs }),
            )
            .operation("associate"),
        )
        .await?;
        Ok(())
    }

    // --- pipelines ---

    /// The deal stage `id` (cached; an unknown id re-reads the pipelines once).
    pub(crate) async fn stage(&self, id: &str) -> Result<Option<Stage>> {
        if let Some(s) = lock(&self.stages).as_ref().and_then(|m| m.get(id)) {
            return Ok(Some(s.clone()));
        }
        let resp = self
            .send(ApiRequest::get("/crm/v3/pipelines/deals").operation("pipelines"))
            .await?;
        let body = resp.json_value()?;
        let mut map = HashMap::new();
        for p in body
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(pipeline) = p.get("id").and_then(text) else {
                continue;
            };
            for s in p
                .get("stages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(sid) = s.get("id").and_then(text) else {
                    continue;
                };
                let meta = |k: &str| s.pointer(&format!("/metadata/{k}")).and_then(text);
                let closed = meta("isClosed").is_some_and(|v| v == "true");
                let probability = meta("probability").and_then(|p| p.parse::<f64>().ok());
                // Closed won = closed with probability 1.0; never a label match.
                let won = closed.then(|| probability.is_some_and(|p| p >= 1.0));
                map.insert(
                    sid,
                    Stage {
                        pipeline: pipeline.clone(),
                        won,
                    },
                );
            }
        }
        let found = map.get(id).cloned();
        *lock(&self.stages) = Some(map);
        Ok(found)
    }

    /// One contact, for the health check.
    pub(crate) async fn ping(&self) -> Result<()> {
        self.send(
            ApiRequest::get("/crm/v3/objects/contacts")
                .query("limit", "1")
                .operation("health_check"),
        )
        .await?;
        Ok(())
    }
}
