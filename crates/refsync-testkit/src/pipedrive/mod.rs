//! A stateful, in-memory Pipedrive over real loopback HTTP, built on the
//! [`Simulator`] framework: the Pipedrive connector's conformance suite and
//! end-to-end tests through refsync's engine talk to it exactly as they would to
//! `https://<company>.pipedrive.com`.
//!
//! ```no_run
//! use refsync_testkit::pipedrive::{PipedriveSim, PipedriveSimOptions, REFERRAL_CODE_KEY};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let sim = PipedriveSim::start(PipedriveSimOptions::new("token")).await?;
//! // point the connector at sim.base_url(); it creates a webhook, a person and a lead ...
//! # let lead_id = String::new();
//! let deal_id = sim.convert_lead(&lead_id, Some(3)).expect("lead exists");
//! sim.set_deal_status(deal_id, "won").unwrap();
//! for (delivery, answer) in sim.deliver().await {
//!     assert_eq!(answer?.0, 200, "{} was refused", delivery.body["meta"]["id"]);
//! }
//! # let _ = REFERRAL_CODE_KEY;
//! # Ok(()) }
//! ```
//!
//! # What is simulated
//!
//! - **Auth**: `x-api-token: <token>` or `Authorization: Bearer <token>`; anything else is
//!   `401 {"success":false,"error":"unauthorized access","errorCode":401}`. Unknown routes are
//!   `404 {"success":false,"error":"Not found"}`.
//! - **API v1** (shapes valid against the official v1 OpenAPI description):
//!   `GET /v1/users/me`, `GET /v1/dealFields`, `GET /v1/personFields` (`start`/`limit`),
//!   `POST /v1/leads`, `GET /v1/leads` (`person_id`, `organization_id`, `owner_id`,
//!   `archived_status`, `start`, `limit`), `GET|PATCH|DELETE /v1/leads/{id}`,
//!   `GET|POST /v1/webhooks`, `DELETE /v1/webhooks/{id}`, `GET /v1/pipelines`,
//!   `GET /v1/stages` (`pipeline_id`).
//! - **API v2**: `GET /api/v2/persons/search` (`term`, `fields`, `exact_match`, `limit`,
//!   `cursor`), `POST /api/v2/persons`, `GET|PATCH /api/v2/persons/{id}`, `POST|GET
//!   /api/v2/deals` (list: `person_id`, `status`, `stage_id`, `pipeline_id`, `owner_id`,
//!   `updated_since`, `updated_until`, `cursor`, `limit`; sorted by `update_time` then `id`),
//!   `GET|PATCH|DELETE /api/v2/deals/{id}`, `GET /api/v2/pipelines`, `GET /api/v2/stages`.
//! - **Validation** as Pipedrive does it: required fields, a lead needs a person or an
//!   organization, unknown custom field keys and unknown stages are `400`, at most 40 webhooks.
//! - **Rate limiting**: `x-ratelimit-limit|remaining|reset` headers on every answer (burst
//!   window of 2 s, limit 40, not enforced) when [`PipedriveSimOptions::rate_limit_headers`] is
//!   on; the search burst limit ([`PipedriveSimOptions::search_burst`] per rolling 2 s) *is*
//!   enforced with `429 {"success":false,"error":"Too many requests","errorCode":429}`.
//! - **Webhooks**: every change through the API (`meta.change_source: "api"`) or through the
//!   UI-like actions ([`PipedriveSim::convert_lead`], [`PipedriveSim::move_deal`],
//!   [`PipedriveSim::set_deal_status`], [`PipedriveSim::delete_deal`]; `"app"`) records one
//!   delivery per active matching webhook in an outbox ([`PipedriveSim::take_outbox`],
//!   [`PipedriveSim::deliver`]). Version `2.0` webhooks get webhooks v2 bodies with exactly the
//!   keys of Pipedrive's published samples (`meta`/`data`/`previous`, `previous` holding only the
//!   changed keys; custom fields as `{"type", "value"}`); version `1.0` webhooks (the default of
//!   `POST /v1/webhooks` when `version` is absent, as in the v1 description) get v1 bodies
//!   (`v`, `meta`, `current`, `previous`, `event`, full v1 objects with custom fields at the
//!   root). `http_auth_user`/`http_auth_password` become an `Authorization: Basic` header.
//!   Matching: `event_action` `create|change|delete`, `added|updated|deleted` or `*`;
//!   `event_object` `deal`, `lead`, `person` or `*`.
//!
//! # What is not simulated
//!
//! Organizations (an `org_id` / `organization_id` is accepted and stored as given), activities,
//! notes, products, users other than the token's, OAuth, the daily token budget, the general
//! burst limit (only reported in headers), form-encoded v1 bodies, the `api_token` query
//! parameter, webhook retries, bans and automatic deletion (use
//! [`PipedriveSim::delete_webhook_as_pipedrive`]), merges, lead events for v1 webhooks (v1
//! webhooks never supported leads), the asynchronous lead conversion API, filters
//! (`filter_id`), sorting options and visibility (`visible_to` is stored, never enforced).
//! Times come from [`chrono::Utc::now`]; [`PipedriveSim::set_deal_update_time`] back-dates a deal
//! for reconciliation tests.

mod api;
mod events;
mod model;
mod ops;

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::sim::{SimOptions, Simulator};
use model::State;

/// Key of the default deal field "Referral Code" (leads share the deal fields).
pub const REFERRAL_CODE_KEY: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f001234567";
/// Key of the default deal field "Referrer Email".
pub const REFERRER_EMAIL_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
/// Key of the default deal field "Referrer First Name".
pub const REFERRER_FIRST_NAME_KEY: &str = "b2c3d4e5f60718293a4b5c6d7e8f901234567891";
/// Key of the default deal field "Campaign".
pub const CAMPAIGN_KEY: &str = "c3d4e5f60718293a4b5c6d7e8f90123456789012";
/// Key of the default deal field "Referral Link".
pub const REFERRAL_LINK_KEY: &str = "d4e5f60718293a4b5c6d7e8f9012345678901234";
/// Key of the default person field "Referral Code (person)".
pub const PERSON_REFERRAL_CODE_KEY: &str = "e5f60718293a4b5c6d7e8f901234567890123456";

/// At most this many webhooks exist at once (Pipedrive's per-user limit).
pub const MAX_WEBHOOKS: usize = 40;

/// The burst limit reported in the `x-ratelimit-limit` header (API token, Growth plan).
pub const RATE_LIMIT_BURST: usize = 40;

/// Which object type a custom field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldEntity {
    /// A deal field (leads share the deal fields).
    Deal,
    /// A person field.
    Person,
}

/// A custom field of the simulated account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomField {
    /// The 40-character lower-case hex key.
    pub key: String,
    /// The label shown in Pipedrive.
    pub name: String,
    /// The field type (`varchar`, `text`, `double`, ...); values are not checked against it.
    pub field_type: String,
    /// Deal (and lead) or person.
    pub entity: FieldEntity,
}

impl CustomField {
    /// A `varchar` field.
    pub fn varchar(key: &str, name: &str, entity: FieldEntity) -> CustomField {
        CustomField {
            key: key.to_owned(),
            name: name.to_owned(),
            field_type: "varchar".to_owned(),
            entity,
        }
    }
}

/// The default custom fields: five deal fields and one person field, all `varchar`.
pub fn default_custom_fields() -> Vec<CustomField> {
    vec![
        CustomField::varchar(REFERRAL_CODE_KEY, "Referral Code", FieldEntity::Deal),
        CustomField::varchar(REFERRER_EMAIL_KEY, "Referrer Email", FieldEntity::Deal),
        CustomField::varchar(
            REFERRER_FIRST_NAME_KEY,
            "Referrer First Name",
            FieldEntity::Deal,
        ),
        CustomField::varchar(CAMPAIGN_KEY, "Campaign", FieldEntity::Deal),
        CustomField::varchar(REFERRAL_LINK_KEY, "Referral Link", FieldEntity::Deal),
        CustomField::varchar(
            PERSON_REFERRAL_CODE_KEY,
            "Referral Code (person)",
            FieldEntity::Person,
        ),
    ]
}

/// Settings of a [`PipedriveSim`].
#[derive(Debug, Clone)]
pub struct PipedriveSimOptions {
    /// The API token accepted in `x-api-token` or `Authorization: Bearer`.
    pub api_token: String,
    /// The company id (webhook `meta.company_id`, `/v1/users/me`). Default 8087566.
    pub company_id: u64,
    /// The company subdomain: webhook `meta.host` is `<company_domain>.pipedrive.com`.
    /// Default `refsync-sim`.
    pub company_domain: String,
    /// The token's user id (owner and creator of everything). Default 12415231.
    pub user_id: u64,
    /// The account's custom fields. Default [`default_custom_fields`].
    pub custom_fields: Vec<CustomField>,
    /// Send `x-ratelimit-*` headers. Default true.
    pub rate_limit_headers: bool,
    /// Searches allowed per rolling 2 seconds before `429`. Default 10.
    pub search_burst: u32,
    /// Requests the server handles before answering `503` ([`SimOptions::max_requests`]).
    /// Default 10 000.
    pub max_requests: usize,
}

impl PipedriveSimOptions {
    /// The defaults with this API token.
    pub fn new(api_token: &str) -> PipedriveSimOptions {
        PipedriveSimOptions {
            api_token: api_token.to_owned(),
            ..PipedriveSimOptions::default()
        }
    }
}

impl Default for PipedriveSimOptions {
    fn default() -> Self {
        PipedriveSimOptions {
            api_token: "pipedrive-sim-token".to_owned(),
            company_id: 8_087_566,
            company_domain: "refsync-sim".to_owned(),
            user_id: 12_415_231,
            custom_fields: default_custom_fields(),
            rate_limit_headers: true,
            search_burst: 10,
            max_requests: SimOptions::default().max_requests,
        }
    }
}

/// A webhook delivery Pipedrive would make.
#[derive(Debug, Clone)]
pub struct OutgoingWebhook {
    /// The webhook's `subscription_url`.
    pub url: String,
    /// The request: `POST`, `Content-Type: application/json`, `Authorization: Basic ...` when
    /// the webhook has `http_auth_user`, the body as bytes; `url` = the subscription URL.
    pub request: refsync_core::WebhookRequest,
    /// The body as JSON (webhooks v1 or v2 per the webhook's version).
    pub body: Value,
}

/// State shared by the HTTP handler and the [`PipedriveSim`] handle.
#[derive(Debug)]
struct Inner {
    opts: PipedriveSimOptions,
    state: Mutex<State>,
    /// When the simulated account was "created" (pipeline and stage times, `/users/me`).
    epoch: DateTime<Utc>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulated Pipedrive account. Dropping it stops the server.
#[derive(Debug)]
pub struct PipedriveSim {
    sim: Simulator,
    inner: Arc<Inner>,
}

impl PipedriveSim {
    /// Starts the simulator on `127.0.0.1:<random port>` (inside a Tokio runtime).
    pub async fn start(opts: PipedriveSimOptions) -> std::io::Result<PipedriveSim> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new()),
            epoch: model::now_secs(),
            opts,
        });
        let sim_options = SimOptions {
            max_requests: inner.opts.max_requests,
            ..SimOptions::default()
        };
        let sim = Simulator::start_with(api::Handler::new(Arc::clone(&inner)), sim_options).await?;
        Ok(PipedriveSim { sim, inner })
    }

    /// `http://127.0.0.1:PORT`: the connector's base URL (it appends `/v1/...` and
    /// `/api/v2/...`).
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }

    /// The underlying simulator: request log and fault injection.
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }

    /// The underlying simulator alone, for harnesses that keep only a [`Simulator`] (the
    /// conformance suite); the state lives on in its handler and stays reachable through the
    /// API.
    pub fn into_simulator(self) -> Simulator {
        self.sim
    }

    /// The options the simulator runs with.
    pub fn options(&self) -> &PipedriveSimOptions {
        &self.inner.opts
    }

    /// The current state, deleted items excluded: `{persons, leads, deals, webhooks, pipelines,
    /// stages}`. Persons, deals, pipelines and stages in API v2 shape, leads and webhooks in API
    /// v1 shape (webhooks with their real `http_auth_password`, which the API never returns).
    pub fn state(&self) -> Value {
        let state = self.inner.lock();
        let opts = &self.inner.opts;
        let epoch = &self.inner.epoch;
        json!({
            "persons": state.persons.values().filter(|p| !p.deleted).map(model::Person::api_v2).collect::<Vec<_>>(),
            "leads": state.leads.iter().filter(|l| !l.deleted).map(|l| l.v1(&opts.company_domain)).collect::<Vec<_>>(),
            "deals": state.deals.values().filter(|d| !d.deleted).map(model::Deal::api_v2).collect::<Vec<_>>(),
            "webhooks": state.hooks.values().map(|h| {
                let mut v = h.v1(opts.company_id);
                v["http_auth_password"] = json!(h.http_auth_password);
                v
            }).collect::<Vec<_>>(),
            "pipelines": state.pipelines.iter().map(|p| state.pipeline_v2(p, epoch)).collect::<Vec<_>>(),
            "stages": state.stages.iter().map(|s| state.stage_v2(s, epoch)).collect::<Vec<_>>(),
        })
    }

    /// Persons (API v2 shape) having `email` among their addresses, compared case-insensitively.
    pub fn persons_with_email(&self, email: &str) -> Vec<Value> {
        let state = self.inner.lock();
        state
            .persons
            .values()
            .filter(|p| !p.deleted && p.has_email(email))
            .map(model::Person::api_v2)
            .collect()
    }

    /// Live leads (API v1 shape) of person `person_id`.
    pub fn leads_of_person(&self, person_id: u64) -> Vec<Value> {
        let state = self.inner.lock();
        state
            .leads
            .iter()
            .filter(|l| !l.deleted && l.person_id == Some(person_id))
            .map(|l| l.v1(&self.inner.opts.company_domain))
            .collect()
    }

    /// Live deals (API v2 shape) of person `person_id`.
    pub fn deals_of_person(&self, person_id: u64) -> Vec<Value> {
        let state = self.inner.lock();
        state
            .deals
            .values()
            .filter(|d| !d.deleted && d.person_id == Some(person_id))
            .map(model::Deal::api_v2)
            .collect()
    }

    /// Converts a lead into a deal as a user does in the UI: a new open deal with the lead's
    /// title, person, organization, owner, value and custom fields, in `stage_id` (its pipeline)
    /// or the first stage of pipeline 1; then the lead is deleted. Records `create.deal`, then
    /// `delete.lead` (same `correlation_id`). Returns the deal id.
    pub fn convert_lead(&self, lead_id: &str, stage_id: Option<u64>) -> Result<u64, String> {
        let mut state = self.inner.lock();
        ops::convert_lead(&mut state, &self.inner.opts, lead_id, stage_id)
    }

    /// Moves a deal to `stage_id` (the pipeline follows the stage) as a user does in the UI.
    /// Records `change.deal` with `previous` `{stage_id, pipeline_id (if changed),
    /// stage_change_time, update_time}`. Moving to the current stage changes nothing.
    pub fn move_deal(&self, deal_id: u64, stage_id: u64) -> Result<(), String> {
        let mut state = self.inner.lock();
        ops::move_deal(&mut state, &self.inner.opts, deal_id, stage_id, "app").map(|_| ())
    }

    /// Marks a deal `open`, `won` or `lost` as a user does in the UI. Records `change.deal` with
    /// `previous` `{status, the won/lost/close times that changed, update_time}`. Setting the
    /// current status changes nothing.
    pub fn set_deal_status(&self, deal_id: u64, status: &str) -> Result<(), String> {
        if !matches!(status, "open" | "won" | "lost") {
            return Err(format!("invalid status {status:?} (open, won or lost)"));
        }
        let mut state = self.inner.lock();
        ops::update_deal(
            &mut state,
            &self.inner.opts,
            deal_id,
            |deal, now| deal.set_status(status, now),
            &[],
            "app",
        )
        .map(|_| ())
        .ok_or_else(|| format!("deal {deal_id} does not exist"))
    }

    /// Deletes a deal as a user does in the UI; records `delete.deal`.
    pub fn delete_deal(&self, deal_id: u64) -> Result<(), String> {
        let mut state = self.inner.lock();
        if ops::delete_deal(&mut state, &self.inner.opts, deal_id, "app") {
            Ok(())
        } else {
            Err(format!("deal {deal_id} does not exist"))
        }
    }

    /// Back-dates (or forwards) a deal's `update_time` without recording a webhook, for
    /// `updated_since` reconciliation tests.
    pub fn set_deal_update_time(&self, deal_id: u64, at: DateTime<Utc>) -> Result<(), String> {
        let mut state = self.inner.lock();
        let deal = state
            .deals
            .get_mut(&deal_id)
            .ok_or_else(|| format!("deal {deal_id} does not exist"))?;
        deal.update_time = at;
        Ok(())
    }

    /// Removes a webhook the way Pipedrive does after 3 days without a successful delivery:
    /// it disappears from `GET /v1/webhooks` and receives nothing any more.
    pub fn delete_webhook_as_pipedrive(&self, webhook_id: u64) {
        self.inner.lock().hooks.remove(&webhook_id);
    }

    /// The deliveries recorded since the last take, in order.
    pub fn take_outbox(&self) -> Vec<OutgoingWebhook> {
        std::mem::take(&mut self.inner.lock().outbox)
    }

    /// Takes the outbox and POSTs every delivery with [`crate::sim::send_webhook`], in order;
    /// returns each delivery with its answer (status and body) or I/O error. The webhook's
    /// `last_delivery_time` and `last_http_status` are updated.
    pub async fn deliver(&self) -> Vec<(OutgoingWebhook, std::io::Result<(u16, Vec<u8>)>)> {
        let outbox = self.take_outbox();
        let mut results = Vec::with_capacity(outbox.len());
        for delivery in outbox {
            let answer = crate::sim::send_webhook(&delivery.url, &delivery.request).await;
            let hook_id = delivery.body["meta"]["webhook_id"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok());
            if let (Some(id), Ok((status, _))) = (hook_id, &answer) {
                if let Some(hook) = self.inner.lock().hooks.get_mut(&id) {
                    hook.last_delivery_time = Some(model::now_secs());
                    hook.last_http_status = Some(*status);
                }
            }
            results.push((delivery, answer));
        }
        results
    }
}
