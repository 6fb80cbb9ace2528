//! A stateful, in-memory HubSpot account (CRM API v3, OAuth and app webhooks) over real
//! loopback HTTP, built on the [`Simulator`] framework: the HubSpot connector's conformance
//! suite and end-to-end tests talk to it as they would to `https://api.hubapi.com`.
//!
//! ```no_run
//! use refsync_testkit::hubspot::{HubSpotSim, HubSpotSimOptions};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let sim = HubSpotSim::start(HubSpotSimOptions::new("pat-na1-token", "client-secret")).await?;
//! sim.set_target_url("http://127.0.0.1:8080/webhooks/hubspot");
//! // point the connector at sim.base_url(); it upserts contacts by e-mail ...
//! let contact = sim.contact_by_email("ann@example.com").expect("pushed");
//! let contact_id = contact["id"].as_str().unwrap();
//! let deal = sim
//!     .create_deal_ui(&[("dealname", "Ann's deal")], &[contact_id])
//!     .expect("valid deal");
//! sim.move_deal(&deal, "closedwon").unwrap();
//! for (batch, answer) in sim.deliver().await {
//!     assert_eq!(answer?.0, 200, "{} events refused", batch.events.len());
//! }
//! # Ok(()) }
//! ```
//!
//! # What is simulated
//!
//! - **Auth**: `Authorization: Bearer <token>` with one of
//!   [`HubSpotSimOptions::access_tokens`] (private-app tokens) or an OAuth access token the
//!   simulator issued and that has not expired; otherwise `401` `INVALID_AUTHENTICATION`
//!   ("Authentication credentials not found. ...") or, for an expired OAuth token, `401`
//!   `EXPIRED_AUTHENTICATION` ("The OAuth token used to make this call expired N second(s)
//!   ago."). **OAuth** `POST /oauth/v1/token` (form-encoded): `grant_type=authorization_code`
//!   (`code` = [`HubSpotSim::authorization_code`], a `redirect_uri`, which must equal
//!   [`HubSpotSimOptions::redirect_uri`] when set) and `grant_type=refresh_token` (the refresh
//!   token keeps working and is returned again), both with `client_id` and `client_secret`;
//!   answers `{token_type, refresh_token, access_token, expires_in}`; errors are `400
//!   {"status":"BAD_CLIENT_ID"|"BAD_CLIENT_SECRET"|"BAD_AUTH_CODE"|"BAD_REDIRECT_URI"|
//!   "BAD_REFRESH_TOKEN"|"BAD_GRANT_TYPE","message","correlationId"}`. Access tokens expire
//!   after [`HubSpotSimOptions::access_token_lifetime`] or at [`HubSpotSim::expire_access_tokens`].
//! - **Objects** `contacts` and `deals` under `/crm/v3/objects/{type}`, deals also under
//!   `/crm/v3/objects/0-3` (and contacts under `0-1`): `GET` list (`limit` ≤ 100, `after`),
//!   `POST` create (`properties`, `associations` `[{to:{id}, types:[{associationCategory:
//!   "HUBSPOT_DEFINED", associationTypeId: 3}]}]`; 3 = deal→contact, 4 = contact→deal),
//!   `GET|PATCH /{id}` (`idProperty`; `properties`, `propertiesWithHistory` and `associations`
//!   as comma lists or repeated), `POST /batch/read` (`idProperty`, `properties`,
//!   `propertiesWithHistory`; unknown ids → `207` with an `OBJECT_NOT_FOUND` error listing
//!   them), `/batch/create`, `/batch/update` (unknown ids → `207`), `/batch/upsert` (by
//!   `idProperty`: `email` for contacts or a property created with `hasUniqueValue`; results
//!   carry `new`). Batches take at most 100 inputs; duplicate ids are `400` "Duplicate IDs
//!   found in batch input"; any invalid value fails the whole batch call.
//! - **Property values** are strings (numbers and booleans in requests are taken as text,
//!   `null` or "" clears). Names must be properties of the type (`400 VALIDATION_ERROR`
//!   "Property values were not valid: [...]" with `PROPERTY_DOESNT_EXIST` `Property "x" does
//!   not exist`); read-only properties (`hs_object_id`, `lastmodifieddate`,
//!   `hs_lastmodifieddate`, `hs_is_closed_won`, `hs_is_closed`) are `READ_ONLY_VALUE`; e-mail
//!   addresses must look like one (`INVALID_EMAIL`; stored lower-cased, unique among contacts:
//!   `409 CONFLICT` "Contact already exists. Existing ID: N"), numbers (`INVALID_FLOAT`),
//!   booleans, enumeration options (`lifecyclestage`; `INVALID_OPTION`); values of properties
//!   with `hasUniqueValue` are unique (`409`). Records get `hs_object_id`, `createdate`, the
//!   modification time (`lastmodifieddate` / `hs_lastmodifieddate`) and a history of every
//!   value. Reads return the requested properties (`null` when not set, unknown names ignored)
//!   plus `createdate`, `hs_object_id` and the modification time; without `properties` the
//!   type's default set.
//! - **Deals**: `pipeline` and `dealstage` hold ids; new deals default to pipeline `default`
//!   and its first stage (`appointmentscheduled`), the stage must belong to the pipeline
//!   (`INVALID_OPTION`); `hs_is_closed_won` / `hs_is_closed` ("true"/"false") follow the stage
//!   (closed and probability 1.0 = won).
//! - **Associations v3** deal ⇄ contact: `POST /crm/v3/associations/{from}/{to}/batch/read`
//!   (objects without associations are left out), `/batch/create` (type `deal_to_contact` or
//!   `contact_to_deal` matching the direction; idempotent; unknown objects → `207`),
//!   `/batch/archive` (`204`). `{from}`/`{to}`: `contacts`, `deals`, singular or type ids.
//! - **Pipelines**: `GET /crm/v3/pipelines/deals`, `/{pipelineId}`, `/{pipelineId}/stages`,
//!   `/{pipelineId}/stages/{stageId}`; the default pipeline "Sales Pipeline" (stages
//!   `appointmentscheduled` 0.2 … `contractsent` 0.9, `closedwon` closed 1.0, `closedlost`
//!   closed 0.0; `metadata` values are strings) and pipelines added with
//!   [`HubSpotSim::add_pipeline`] (numeric ids, UUID stage ids).
//! - **Properties**: `GET|POST /crm/v3/properties/{contacts|deals}` (`409
//!   OBJECT_ALREADY_EXISTS` when the name exists; `hasUniqueValue` honoured), `GET
//!   /{propertyName}`. Seeded: the standard properties above and
//!   [`HubSpotSimOptions::custom_contact_properties`] / `custom_deal_properties`.
//! - **Rate limit**: every API answer carries `X-HubSpot-RateLimit-Max`, `-Remaining` and
//!   `-Interval-Milliseconds: 10000`; more than [`HubSpotSimOptions::burst_per_10s`]
//!   authenticated requests in a rolling 10 s window are answered `429 {"status":"error",
//!   "message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT",
//!   "correlationId","policyName":"TEN_SECONDLY_ROLLING","category":"RATE_LIMITS"}`.
//!   [`HubSpotSim::fail_next`] makes the next API calls answer a status with a HubSpot-like
//!   error body (`423 LOCKED`, `429`, `500`, ...). The OAuth endpoint is neither limited nor
//!   failed by these.
//! - **Webhooks** (an app's subscriptions, [`HubSpotSimOptions::subscriptions`]): creating an
//!   object records `<type>.creation` (`changeFlag` `CREATED`), then one `<type>.propertyChange`
//!   per property set at creation or changed later (new value; "" when cleared; only when the
//!   value actually changed, only subscribed properties); an association created or removed
//!   records `deal.associationChange` (`DEAL_TO_CONTACT`, from the deal to the contact) and
//!   `contact.associationChange` (`CONTACT_TO_DEAL`) with `objectId` = `fromObjectId`,
//!   `toObjectId`, `associationRemoved`, `isPrimaryAssociation` false — each only for a
//!   matching subscription. `changeSource` is
//!   `API` for API calls and `CRM_UI` for the UI-like actions ([`HubSpotSim::create_deal_ui`],
//!   [`HubSpotSim::move_deal`], [`HubSpotSim::associate_ui`],
//!   [`HubSpotSim::set_contact_property`], [`HubSpotSim::set_deal_property`]). `occurredAt`
//!   strictly increases over the simulator's life; `eventId` is shared by every event of one
//!   change (as HubSpot warns, it is not unique). Events wait in a queue
//!   ([`HubSpotSim::pending_events`]) and are POSTed as JSON arrays of at most
//!   [`HubSpotSimOptions::batch_size`] to the target URL with `Content-Type`, HubSpot's
//!   `User-Agent`, `X-HubSpot-Timeout-Millis`, `X-HubSpot-Request-Timestamp` (ms, set when
//!   sent), `X-HubSpot-Signature-v3` (over `POST` + target URL + body + timestamp) and
//!   `X-HubSpot-Signature` (v1) + `X-HubSpot-Signature-Version: v1`, as configured. A
//!   non-2xx answer, an error or no answer within [`HubSpotSimOptions::webhook_timeout`] keeps
//!   the batch for [`HubSpotSim::redeliver_failed`] with `attemptNumber` + 1, up to attempt
//!   [`MAX_ATTEMPT_NUMBER`] (10 retries, as HubSpot).
//!
//! # What is not simulated
//!
//! Companies, tickets, leads and other objects; search (`/search`, eventually consistent in
//! HubSpot); deletion, archiving, merge and restore (and their events); the v4 associations
//! API and association labels; lifecycle-stage ordering rules (HubSpot refuses moving
//! `lifecyclestage` backwards); date and datetime value checks (stored as given); owners,
//! property groups, pipeline editing through the API; the webhooks settings and subscriptions
//! API (subscriptions come from the options); the daily limit, the search limit and `423` on
//! heavy upsert bursts (inject them with [`HubSpotSim::fail_next`]); scopes (every token may
//! do everything); retry delays (redelivery happens when the test calls
//! [`HubSpotSim::redeliver_failed`]); webhook concurrency and throttling; `sourceId` and the
//! v2 signature. The OAuth v3 / date-versioned token endpoints and token introspection are
//! not served; the authorization code can be used any number of times.

mod api;
mod auth;
mod events;
mod model;
mod ops;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sim::{SimOptions, Simulator};
pub use auth::{sign_v1, sign_v3};
use events::Source;
use model::{ObjectType, State};

/// The `User-Agent` of webhook requests (as observed on real deliveries).
pub const USER_AGENT: &str =
    "HubSpot Connect 2.0 (http://dev.hubspot.com/) - WebhooksExecutorDaemon-executor";

/// Most inputs a batch endpoint accepts.
pub const MAX_BATCH_INPUTS: usize = 100;

/// The last `attemptNumber` a batch is sent with (attempt 0 plus 10 retries), as HubSpot.
pub const MAX_ATTEMPT_NUMBER: u32 = 10;

/// The rolling window of the burst limit, in milliseconds (`X-HubSpot-RateLimit-Interval-Milliseconds`).
pub const RATE_LIMIT_INTERVAL_MS: u64 = 10_000;

/// Settings of a [`HubSpotSim`].
#[derive(Debug, Clone)]
pub struct HubSpotSimOptions {
    /// Bearer tokens accepted as they are (private-app tokens).
    pub access_tokens: Vec<String>,
    /// The OAuth app's client id (token endpoint). Default `sim-client`.
    pub client_id: String,
    /// The OAuth app's client secret: token endpoint and webhook signatures.
    pub client_secret: String,
    /// The authorization code the token endpoint accepts. Default `sim-code`.
    pub authorization_code: String,
    /// The `redirect_uri` the token endpoint requires with an authorization code; `None`
    /// (default) accepts any non-empty one.
    pub redirect_uri: Option<String>,
    /// How long issued OAuth access tokens work (`expires_in`). Default 30 minutes.
    pub access_token_lifetime: Duration,
    /// The account id (`portalId` of events). Default 62515.
    pub portal_id: u64,
    /// The app id (`appId` of events). Default 54321.
    pub app_id: u64,
    /// Where webhooks are POSTed (the app's target URL); `None` until set.
    pub target_url: Option<String>,
    /// Most events per webhook request. Default 100.
    pub batch_size: usize,
    /// Which signatures webhook requests carry: `"v1"`, `"v3"`. Default both.
    pub signature_versions: Vec<&'static str>,
    /// How long a webhook request may take before it counts as failed. Default 5 s.
    pub webhook_timeout: Duration,
    /// Requests allowed per rolling 10 seconds before `429`. Default 190.
    pub burst_per_10s: u32,
    /// The app's webhook subscriptions: `(eventType, propertyName)`, e.g.
    /// `("deal.propertyChange", Some("dealstage"))`; a `propertyChange` subscription without a
    /// property name gets every property.
    pub subscriptions: Vec<(String, Option<String>)>,
    /// Custom contact properties (single-line text) that exist from the start. Default
    /// `["referral_code"]`.
    pub custom_contact_properties: Vec<String>,
    /// Custom deal properties (single-line text) that exist from the start. Default none.
    pub custom_deal_properties: Vec<String>,
    /// Requests the server handles before answering `503` ([`SimOptions::max_requests`]).
    /// Default 10 000.
    pub max_requests: usize,
}

impl HubSpotSimOptions {
    /// Accepts bearer `token`; app `sim-client` / `client_secret`; portal 62515, app 54321;
    /// batches of 100, signatures v1 and v3, 190 requests per 10 s; the subscriptions
    /// `contact.creation`, `contact.propertyChange` on `lifecyclestage` and `referral_code`,
    /// `deal.creation`, `deal.propertyChange` on `dealstage` and `pipeline`,
    /// `deal.associationChange`, `contact.associationChange`.
    pub fn new(token: &str, client_secret: &str) -> Self {
        let sub = |t: &str, p: Option<&str>| (t.to_owned(), p.map(str::to_owned));
        HubSpotSimOptions {
            access_tokens: vec![token.to_owned()],
            client_id: "sim-client".to_owned(),
            client_secret: client_secret.to_owned(),
            authorization_code: "sim-code".to_owned(),
            redirect_uri: None,
            access_token_lifetime: Duration::from_secs(1800),
            portal_id: 62_515,
            app_id: 54_321,
            target_url: None,
            batch_size: 100,
            signature_versions: vec!["v1", "v3"],
            webhook_timeout: Duration::from_secs(5),
            burst_per_10s: 190,
            subscriptions: vec![
                sub("contact.creation", None),
                sub("contact.propertyChange", Some("lifecyclestage")),
                sub("contact.propertyChange", Some("referral_code")),
                sub("deal.creation", None),
                sub("deal.propertyChange", Some("dealstage")),
                sub("deal.propertyChange", Some("pipeline")),
                sub("deal.associationChange", None),
                sub("contact.associationChange", None),
            ],
            custom_contact_properties: vec!["referral_code".to_owned()],
            custom_deal_properties: Vec::new(),
            max_requests: SimOptions::default().max_requests,
        }
    }
}

/// A batch of webhook events, as HubSpot POSTs it.
#[derive(Debug, Clone)]
pub struct OutgoingBatch {
    /// The events, as in the body (`attemptNumber` = [`OutgoingBatch::attempt`]).
    pub events: Vec<Value>,
    /// 0 for the first delivery, +1 per retry.
    pub attempt: u32,
    /// The target URL the batch goes to (and that the v3 signature covers).
    pub url: String,
    /// The body: a JSON array of the events, keys in HubSpot's order.
    pub body: Vec<u8>,
    /// The request as built when the batch was made (timestamp and signatures of that moment;
    /// [`HubSpotSim::send`] signs again at send time).
    pub request: refsync_core::WebhookRequest,
    /// The events in order, for rebuilding the body of a retry.
    raw: Vec<events::Event>,
}

/// State shared by the HTTP handler and the [`HubSpotSim`] handle.
#[derive(Debug)]
struct Inner {
    opts: HubSpotSimOptions,
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn invalid_input(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

/// A running simulated HubSpot account. Dropping it stops the server.
#[derive(Debug)]
pub struct HubSpotSim {
    sim: Simulator,
    inner: Arc<Inner>,
}

impl HubSpotSim {
    /// Starts the simulator on `127.0.0.1:<random port>` (inside a Tokio runtime). Fails with
    /// `InvalidInput` for an unknown signature version or a batch size of 0.
    pub async fn start(opts: HubSpotSimOptions) -> std::io::Result<HubSpotSim> {
        if let Some(v) = opts
            .signature_versions
            .iter()
            .find(|v| !matches!(**v, "v1" | "v3"))
        {
            return Err(invalid_input(format!(
                "unknown signature version {v:?} (v1 or v3)"
            )));
        }
        if opts.batch_size == 0 {
            return Err(invalid_input("batch_size must be at least 1".to_owned()));
        }
        let sim_options = SimOptions {
            max_requests: opts.max_requests,
            ..SimOptions::default()
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(&opts)),
            opts,
        });
        let sim = Simulator::start_with(api::Handler::new(Arc::clone(&inner)), sim_options).await?;
        Ok(HubSpotSim { sim, inner })
    }

    /// `http://127.0.0.1:PORT`: the connector's API base URL (it appends `/crm/v3/...` and
    /// `/oauth/v1/token`).
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }

    /// The underlying simulator: request log and fault injection.
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }

    /// The underlying simulator alone, for harnesses that keep only a [`Simulator`]; the
    /// account lives on in its handler and stays reachable through the API.
    pub fn into_simulator(self) -> Simulator {
        self.sim
    }

    /// The options the simulator runs with (the target URL as given at start).
    pub fn options(&self) -> &HubSpotSimOptions {
        &self.inner.opts
    }

    /// The authorization code `POST /oauth/v1/token` accepts (as if the user had installed
    /// the app and HubSpot had redirected with `?code=...`).
    pub fn authorization_code(&self) -> &str {
        &self.inner.opts.authorization_code
    }

    /// Sets the app's webhook target URL.
    pub fn set_target_url(&self, url: &str) {
        self.inner.lock().target_url = Some(url.to_owned());
    }

    /// The subscriptions: `(subscriptionId, eventType, propertyName)`.
    pub fn subscriptions(&self) -> Vec<(u64, String, Option<String>)> {
        self.inner
            .lock()
            .subscriptions
            .iter()
            .map(|s| (s.id, s.event_type.clone(), s.property.clone()))
            .collect()
    }

    // ----- state inspection ------------------------------------------------------------------

    /// The contact with this e-mail address (case-insensitive): `{id, properties (every set
    /// property), createdAt, updatedAt, archived}`.
    pub fn contact_by_email(&self, email: &str) -> Option<Value> {
        let state = self.inner.lock();
        state
            .find(ObjectType::Contact, Some("email"), email)
            .and_then(|id| state.contacts.get(&id))
            .map(model::Record::to_json_all)
    }

    /// Every contact (shape of [`HubSpotSim::contact_by_email`]), by id.
    pub fn contacts(&self) -> Vec<Value> {
        let state = self.inner.lock();
        state
            .contacts
            .values()
            .map(model::Record::to_json_all)
            .collect()
    }

    /// Deal `id` with every set property.
    pub fn deal(&self, id: &str) -> Option<Value> {
        let state = self.inner.lock();
        state
            .find(ObjectType::Deal, None, id)
            .and_then(|id| state.deals.get(&id))
            .map(model::Record::to_json_all)
    }

    /// Every deal, by id.
    pub fn deals(&self) -> Vec<Value> {
        let state = self.inner.lock();
        state
            .deals
            .values()
            .map(model::Record::to_json_all)
            .collect()
    }

    /// Ids of the deals associated with contact `contact_id`, ascending.
    pub fn deals_of_contact(&self, contact_id: &str) -> Vec<String> {
        let state = self.inner.lock();
        contact_id
            .trim()
            .parse::<u64>()
            .map(|id| state.deals_of_contact(id))
            .unwrap_or_default()
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// Ids of the contacts associated with deal `deal_id`, ascending.
    pub fn contacts_of_deal(&self, deal_id: &str) -> Vec<String> {
        let state = self.inner.lock();
        deal_id
            .trim()
            .parse::<u64>()
            .map(|id| state.contacts_of_deal(id))
            .unwrap_or_default()
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// Property `name` of `object_type` (`contacts`/`contact`/`0-1`, `deals`/`deal`/`0-3`) as
    /// the properties API returns it.
    pub fn property(&self, object_type: &str, name: &str) -> Option<Value> {
        let ty = ObjectType::parse(object_type, true)?;
        let state = self.inner.lock();
        state
            .props(ty)
            .get(name)
            .map(|def| state.property_json(ty, def))
    }

    /// Creates a single-line text property as a user does in the UI (no effect when the name
    /// exists); `unique` = "Require unique values" (`hasUniqueValue`), which makes it usable as
    /// `idProperty`.
    ///
    /// # Panics
    ///
    /// When `object_type` is not contacts or deals (`contacts`/`contact`/`0-1`,
    /// `deals`/`deal`/`0-3`).
    pub fn add_property(&self, object_type: &str, name: &str, unique: bool) {
        let Some(ty) = ObjectType::parse(object_type, true) else {
            panic!(
                "HubSpotSim::add_property: unknown object type {object_type:?} (contacts or deals)"
            );
        };
        let mut state = self.inner.lock();
        let now = state.tick();
        let def = model::PropertyDef::custom_text(ty, name, unique, now);
        state.props_mut(ty).entry(name.to_owned()).or_insert(def);
    }

    /// Adds a deal pipeline as a user does in the settings: `stages` are `(label, closed,
    /// probability)`. Returns the pipeline id (numeric) and the stage ids (opaque UUIDs), in
    /// order.
    pub fn add_pipeline(&self, label: &str, stages: &[(&str, bool, f64)]) -> (String, Vec<String>) {
        let mut state = self.inner.lock();
        let now = state.tick();
        let id = state.new_pipeline_id();
        let stages: Vec<model::Stage> = stages
            .iter()
            .enumerate()
            .map(|(i, (label, closed, probability))| model::Stage {
                id: state.uuid(),
                label: (*label).to_owned(),
                display_order: i as i64,
                closed: *closed,
                probability: *probability,
                created_at: now,
            })
            .collect();
        let stage_ids = stages.iter().map(|s| s.id.clone()).collect();
        let display_order = state.pipelines.len() as i64;
        state.pipelines.push(model::Pipeline {
            id: id.clone(),
            label: label.to_owned(),
            display_order,
            created_at: now,
            stages,
        });
        (id, stage_ids)
    }

    // ----- UI-like actions -------------------------------------------------------------------

    /// A user creates a deal in the UI with these properties (validated as the API does; the
    /// stage must belong to the deal's pipeline, `default` unless `pipeline` is given) and
    /// associates it with `contact_ids` (which must exist). Records `deal.creation`, the
    /// `propertyChange`s and both `associationChange`s with `changeSource` `CRM_UI`. Returns
    /// the deal id.
    pub fn create_deal_ui(
        &self,
        properties: &[(&str, &str)],
        contact_ids: &[&str],
    ) -> Result<String, String> {
        let opts = &self.inner.opts;
        let mut state = self.inner.lock();
        let contacts = contact_ids
            .iter()
            .map(|id| ops::existing(&state, ObjectType::Contact, id))
            .collect::<Result<Vec<u64>, String>>()?;
        let values = properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let changes =
            ops::validate(&state, opts, ObjectType::Deal, values, None).map_err(|e| e.message)?;
        let id = ops::create(&mut state, opts, ObjectType::Deal, changes, Source::Ui);
        ops::associate_all(
            &mut state,
            opts,
            ObjectType::Deal,
            id,
            &contacts,
            Source::Ui,
        );
        Ok(id.to_string())
    }

    /// A user drags deal `deal_id` to stage `stage_id` (of any pipeline: the deal's `pipeline`
    /// follows the stage). Records the `propertyChange`s of what changed (`dealstage`,
    /// `pipeline`, ...), `CRM_UI`. Moving to the current stage changes nothing.
    pub fn move_deal(&self, deal_id: &str, stage_id: &str) -> Result<(), String> {
        let opts = &self.inner.opts;
        let mut state = self.inner.lock();
        let pipeline = state
            .pipeline_of_stage(stage_id)
            .map(|p| p.id.clone())
            .ok_or_else(|| format!("stage {stage_id} is in no pipeline"))?;
        ops::ui_update(
            &mut state,
            opts,
            ObjectType::Deal,
            deal_id,
            vec![
                ("pipeline".to_owned(), pipeline),
                ("dealstage".to_owned(), stage_id.to_owned()),
            ],
        )
    }

    /// A user associates a deal and a contact in the UI (both must exist). Records
    /// `deal.associationChange` and `contact.associationChange` (`CRM_UI`) when the association
    /// is new.
    pub fn associate_ui(&self, deal_id: &str, contact_id: &str) -> Result<(), String> {
        let opts = &self.inner.opts;
        let mut state = self.inner.lock();
        let deal = ops::existing(&state, ObjectType::Deal, deal_id)?;
        let contact = ops::existing(&state, ObjectType::Contact, contact_id)?;
        ops::associate(
            &mut state,
            opts,
            deal,
            contact,
            Source::Ui,
            ObjectType::Deal,
        );
        Ok(())
    }

    /// A user edits a contact property in the UI (validated as the API does; "" clears).
    /// Records a `contact.propertyChange` (`CRM_UI`) when the value changed and is subscribed.
    pub fn set_contact_property(
        &self,
        contact_id: &str,
        name: &str,
        value: &str,
    ) -> Result<(), String> {
        let opts = &self.inner.opts;
        let mut state = self.inner.lock();
        let values = vec![(name.to_owned(), value.to_owned())];
        ops::ui_update(&mut state, opts, ObjectType::Contact, contact_id, values)
    }

    /// A user edits a deal property in the UI, like [`HubSpotSim::set_contact_property`].
    pub fn set_deal_property(&self, deal_id: &str, name: &str, value: &str) -> Result<(), String> {
        let opts = &self.inner.opts;
        let mut state = self.inner.lock();
        let values = vec![(name.to_owned(), value.to_owned())];
        ops::ui_update(&mut state, opts, ObjectType::Deal, deal_id, values)
    }

    // ----- webhooks --------------------------------------------------------------------------

    /// The events recorded and not yet taken, in order (`attemptNumber` 0).
    pub fn pending_events(&self) -> Vec<Value> {
        self.inner
            .lock()
            .pending
            .iter()
            .map(|e| e.to_value(0))
            .collect()
    }

    /// Takes every pending event and cuts them into batches of at most
    /// [`HubSpotSimOptions::batch_size`], bodies and signed requests built now for the current
    /// target URL ("" when none is set: [`HubSpotSim::send`] then fails). The batches are the
    /// caller's: nothing is retried unless they go through [`HubSpotSim::deliver`].
    pub fn take_batches(&self) -> Vec<OutgoingBatch> {
        let mut state = self.inner.lock();
        events::take_batches(&mut state, &self.inner.opts)
    }

    /// Takes the pending events ([`HubSpotSim::take_batches`]) and POSTs each batch; a batch
    /// answered with a non-2xx status, an error or nothing in time is kept for
    /// [`HubSpotSim::redeliver_failed`] with `attemptNumber` + 1. Without a target URL nothing
    /// is sent and the events stay pending.
    pub async fn deliver(&self) -> Vec<(OutgoingBatch, std::io::Result<(u16, Vec<u8>)>)> {
        if self.inner.lock().target_url.is_none() {
            return Vec::new();
        }
        let batches = self.take_batches();
        self.send_all(batches).await
    }

    /// Sends the batches kept after failed deliveries (each with its `attemptNumber`); those
    /// failing again are kept with `attemptNumber` + 1 until attempt [`MAX_ATTEMPT_NUMBER`] has
    /// failed (then HubSpot gives up, and so does the simulator).
    pub async fn redeliver_failed(&self) -> Vec<(OutgoingBatch, std::io::Result<(u16, Vec<u8>)>)> {
        let batches = std::mem::take(&mut self.inner.lock().failed);
        self.send_all(batches).await
    }

    /// The batches waiting for [`HubSpotSim::redeliver_failed`].
    pub fn failed_batches(&self) -> Vec<OutgoingBatch> {
        self.inner.lock().failed.clone()
    }

    async fn send_all(
        &self,
        batches: Vec<OutgoingBatch>,
    ) -> Vec<(OutgoingBatch, std::io::Result<(u16, Vec<u8>)>)> {
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            let answer = self.send(&batch).await;
            let delivered = matches!(&answer, Ok((status, _)) if (200..300).contains(status));
            if !delivered {
                if let Some(retry) = events::retry_of(&self.inner.opts, &batch) {
                    self.inner.lock().failed.push(retry);
                }
            }
            results.push((batch, answer));
        }
        results
    }

    /// POSTs `batch` to its URL as it is (same body and `attemptNumber`) with a fresh
    /// `X-HubSpot-Request-Timestamp` and signatures; nothing is kept for a retry. Gives up
    /// after [`HubSpotSimOptions::webhook_timeout`].
    pub async fn send(&self, batch: &OutgoingBatch) -> std::io::Result<(u16, Vec<u8>)> {
        events::send(&self.inner.opts, batch).await
    }

    // ----- limits, tokens, faults ------------------------------------------------------------

    /// `429` answers given so far (the rolling limit and injected ones).
    pub fn rate_limit_violations(&self) -> u64 {
        self.inner.lock().rate_limit_violations
    }

    /// Successful `refresh_token` grants so far.
    pub fn oauth_refreshes(&self) -> u64 {
        self.inner.lock().oauth_refreshes
    }

    /// Every OAuth access token issued so far expires now (`401 EXPIRED_AUTHENTICATION`);
    /// refresh tokens keep working. Private-app tokens are not affected.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for token in self.inner.lock().access_tokens.values_mut() {
            token.expires_at = token.expires_at.min(now);
        }
    }

    /// The next `n` API calls (not the OAuth endpoint) answer `status` with HubSpot's error
    /// body for it (`423` LOCKED, `429` RATE_LIMIT, `500` INTERNAL_ERROR, ...) instead of being
    /// handled. Queued after earlier `fail_next` calls.
    pub fn fail_next(&self, status: u16, n: usize) {
        self.inner
            .lock()
            .fail_queue
            .extend(std::iter::repeat_n(status, n));
    }
}
