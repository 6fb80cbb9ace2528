//! A stateful, in-memory Zoho CRM org (API v8, its accounts server's OAuth token endpoint and
//! notification channels) over real loopback HTTP, built on the [`Simulator`] framework: the
//! Zoho connector's conformance suite and end-to-end tests talk to it as they would to
//! `https://www.zohoapis.com` and `https://accounts.zoho.com`.
//!
//! ```no_run
//! use refsync_testkit::zoho::{ZohoSim, ZohoSimOptions};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let sim = ZohoSim::start(ZohoSimOptions::new("1000.CLIENT", "secret", "1000.refresh")).await?;
//! // The connector refreshes at sim.token_url(), then calls {api_domain}/crm/v8/... and
//! // subscribes a channel at /crm/v8/actions/watch with a notify_url; a lead is pushed ...
//! let lead = &sim.find_by_email("Leads", "ann@example.com")[0];
//! let lead_id = lead["id"].as_str().unwrap();
//! let (_contact, deal) = sim
//!     .convert_lead_ui(lead_id, Some(("Ann's deal", "Qualification")))
//!     .expect("an unconverted lead");
//! sim.set_deal_stage_ui(&deal.expect("a deal"), "Closed Won")
//!     .expect("a stage of the deal's pipeline");
//! for (notification, answer) in sim.deliver().await {
//!     assert_eq!(answer?.0, 200, "{} refused", notification.body);
//! }
//! # Ok(()) }
//! ```
//!
//! Status marks as in the workspace research (`crm-pipedrive-hubspot-zoho.md`, section 3):
//! \[V\] read in official docs or Zoho's v8 OpenAPI descriptions (`tests/data/zoho`), \[S\] from
//! third-party code or reports, \[U\] an assumption of the simulator.
//!
//! # What is simulated
//!
//! - **OAuth** (the accounts server, on the same base URL): `POST /oauth/v2/token` with the
//!   parameters in the query string or a form body (Zoho takes both).
//!   `grant_type=authorization_code` (`code` = [`ZohoSimOptions::authorization_code`],
//!   `client_id`, `client_secret`, a `redirect_uri`) answers `{access_token, refresh_token,
//!   scope, api_domain, token_type: "Bearer", expires_in}`; `grant_type=refresh_token` answers
//!   the same without `refresh_token`. [`ZohoSimOptions::refresh_token`] works from the start;
//!   `api_domain` is [`ZohoSim::base_url`]. Errors are HTTP **200** with `{"error":
//!   "invalid_client"}` (wrong client id or secret), `{"error": "invalid_code"}` (unknown code
//!   or refresh token), `invalid_redirect_uri`, `unsupported_grant_type` (methods other than
//!   `POST` get `405`) — Zoho's accounts
//!   server answers OAuth errors with 200 \[S\] (Weble/ZohoBooksApi#84 shows
//!   `IdentityProviderException(code: 200): invalid_code`). A refresh token mints at most
//!   [`ZohoSimOptions::max_tokens_per_refresh_token`] access tokens per rolling 10 minutes
//!   \[V\]; the next refresh gets **400** `{"error": "Access Denied", "error_description": "You
//!   have made too many requests continuously. Please try again after some time.", "status":
//!   "failure"}`. Access tokens expire after [`ZohoSimOptions::access_token_lifetime`] on the
//!   simulator's clock. API calls need `Authorization: Zoho-oauthtoken <access token>`; any
//!   other scheme (`Bearer` too), an unknown or an expired token gets **401**
//!   `{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}`.
//! - **Records** of `Leads`, `Contacts` and `Deals` under `/crm/v8/{Module}` (module names
//!   case-insensitive; others are `400 INVALID_MODULE`): `POST` insert and `PUT` update (≤ 100
//!   records; `data`, `trigger` accepted and ignored, `duplicate_check_fields`), `PUT /{id}`,
//!   `POST /upsert`, `GET` (v8 requires `fields`, else `400 REQUIRED_PARAM_MISSING`; `ids`,
//!   `page`, `per_page` ≤ 200, `info {per_page, count, page, sort_by, sort_order,
//!   more_records}`, `204` when empty), `GET /{id}` (`fields` optional; `204` for an unknown id
//!   \[U\]), `GET /search`, `DELETE ?ids=` and `DELETE /{id}`. Writes answer `{"data": [...]}`
//!   in input order, one item per record: `{"code":"SUCCESS","details":{Modified_Time,
//!   Modified_By, Created_Time, id, Created_By},"message":"record added"|"record updated",
//!   "status":"success"}` (upsert adds `action` insert|update and `duplicate_field`, `null` on
//!   insert) or the record's error in place; HTTP 201 (insert) / 200 when every record
//!   succeeded, **207** for a mix (Zoho answers partial bulk success with 207 Multi-Status \[S\]
//!   zoho/embeddedApp-js-sdk#14), 400 when none did. Record errors: `MANDATORY_NOT_FOUND`
//!   (Leads and Contacts need `Last_Name`, Deals `Deal_Name` and `Stage` \[V\] insert docs;
//!   `details {api_name, json_path}`), `INVALID_DATA` (unknown field API name, a value of the
//!   wrong JSON type with `expected_data_type`, an `Email` without `@`, text longer than the
//!   field, a lookup to a missing record, an unknown `Pipeline`, an unknown update `id`: "the
//!   id given seems to be invalid"), `MAPPING_MISMATCH` ("Pipeline doesn't contain the Stage"),
//!   `DUPLICATE_DATA` (`details {api_name, json_path, id, duplicate_record}`), `CONVERTED_RECORD`
//!   ("can't update the converted record"). Insert checks unique fields and the
//!   `duplicate_check_fields` given against existing records; upsert finds the record to
//!   update by `duplicate_check_fields` in the order given (only the system field — `Email` for
//!   Leads and Contacts, `Deal_Name` for Deals — or unique fields; others are `400
//!   INVALID_DATA`), then the remaining unique fields; without it the system field first
//!   \[V-copy\] upsert docs. [`ZohoSimOptions::referral_code_field`] is a custom text field of
//!   all three modules, unique on Deals when
//!   [`ZohoSimOptions::referral_code_unique_on_deals`]. Text comparisons of duplicate checks
//!   ignore case; converted leads take no part in them.
//! - **Record shape**: `id`, every field of the module (`null` when unset), `Owner`,
//!   `Created_By`, `Modified_By` (the simulated user), `Created_Time` and `Modified_Time`
//!   (`2024-05-01T10:00:00+00:00`: offset, no milliseconds; on the simulator's clock), `Layout
//!   {id, name: "Standard"}`; Deals carry `Pipeline {name: "Standard (Standard)", id}` (a name
//!   or `{id}`/`{name}` is accepted on writes; new deals get the default pipeline — real Zoho
//!   may require `Pipeline` when pipelines are enabled \[V-copy\], the simulator defaults it),
//!   `Stage` (an actual value of the deal's pipeline) and `Contact_Name {name, id}`. Leads carry
//!   `$converted` and `$converted_detail` (`{}`, or `{contact, deal, account: null,
//!   converted_time}` once converted): these `$` keys are Zoho's record format as third-party
//!   code shows it \[S\]; Zoho's descriptions do not list them. Reads with `fields=` return `id`,
//!   those fields and, for Leads, the `$` keys. Picklists other than `Stage` accept any value
//!   (Zoho adds unknown picklist values).
//! - **Search**: `GET /{Module}/search?criteria=((Field:operator:value)and(...))` (`and`/`or`,
//!   nesting, `\(`, `\)`, `\,`, `\\` escapes, at most 10 conditions; operators `equals`,
//!   `not_equal`, `starts_with`, `in`, and `greater_than`, `greater_equal`, `less_than`,
//!   `less_equal` on numbers and dates; errors `400 INVALID_QUERY`), or `email=` (exact,
//!   case-insensitive), `phone=`, `word=`; `fields`, `page`, `per_page`, `converted`; `204`
//!   when nothing matches. As Zoho documents, **`equals` on a text field (single or multi line)
//!   matches when the value contains the text** ("ABC" matches "ABC Inc"; case-insensitive)
//!   \[V-copy\]: a connector must re-check exact equality. Other fields compare exactly (e-mail
//!   addresses, phones and picklists case-insensitively; lookups by id, `Pipeline` by name).
//! - **Leads and conversion**: reads and searches of Leads hide converted leads unless
//!   `converted=true` or `both` (default `false` \[V\] spec; also with `ids=` \[U\]); `GET
//!   /Leads/{id}` shows them. `POST /crm/v8/Leads/{id}/actions/convert` (body optional,
//!   `{"data": [{Contacts: {id}, Deals: {...}, ...}]}`; costs 5 credits) and
//!   [`ZohoSim::convert_lead_ui`]: the contact is `Contacts.id` when given, else an existing
//!   contact with the lead's e-mail (Zoho's order of preference \[V-copy\]; it is left as it
//!   is), else a new contact from the lead's names, e-mail, phones, lead source and
//!   description; with `Deals` (mandatory `Deal_Name`, `Closing_Date`, `Pipeline`, `Stage`
//!   \[V-copy\] convert docs) a deal is created with `Contact_Name` and the lead source; `Accounts`
//!   (not simulated) is refused with `INVALID_DATA`. With the
//!   **lead conversion mapping** ([`ZohoSimOptions::conversion_mapping`], default on) the lead's
//!   referral code is copied to the new contact and deal; off, it is lost. The fields API shows
//!   the mapping (`convert_mapping` of the Leads fields). The lead gets `$converted: true`.
//!   Answer `{"data":[{"code":"SUCCESS","details":{"Contacts":{name,id},"Deals":{name,id}|null,
//!   "Accounts":null},"message":"The record has been converted successfully","status":
//!   "success"}]}`; errors `400` `ID_ALREADY_CONVERTED` / `INVALID_DATA` `{resource_path_index:
//!   1}` for the lead in the URL, `{"data":[error]}` for the body (`MANDATORY_NOT_FOUND`,
//!   `MAPPING_MISMATCH` "Pipeline doesn`t contain the Stage", `INVALID_DATA`, `DUPLICATE_DATA`
//!   of a unique referral code). A conversion records, in this order, a Contacts insert (when
//!   a contact is created), a Deals insert (when a deal is), and a Leads update with
//!   `affected_fields ["$converted"]` — the Leads update is an assumption \[U\].
//! - **Fields**: `GET /crm/v8/settings/fields?module=` (`module` mandatory) lists every field
//!   with the keys Zoho's v8 description requires (`api_name`, `field_label`, `data_type`,
//!   `json_type`, `id`, `system_mandatory`, `unique` (`{"casesensitive": "0"}` for unique
//!   fields, `{}` otherwise), `custom_field`, `pick_list_values` (Stage: the pipeline's
//!   stages), `convert_mapping`, `layout_associations` (the layout ids), ...). Keys Zoho answers
//!   with `null` are `null`.
//! - **Pipelines**: `GET /crm/v8/settings/pipeline?layout_id=` (`layout_id` mandatory, the
//!   Deals layout's, see [`ZohoSim::layout_id`]) answers `{"pipeline": [...]}` in the shape of
//!   Zoho's sample (`display_value`, `actual_value`, `default`, `id`, `maps[{display_value,
//!   actual_value, id, sequence_number, forecast_category {name, id}, forecast_type}]`). The
//!   org has the sample's "Standard (Standard)" pipeline (display and actual values may
//!   differ: "Identify Decision Makers" / "Id. Decision Makers"); [`ZohoSim::add_stage`] adds
//!   stages (e.g. a won stage "Signed").
//! - **Watch channels** `/crm/v8/actions/watch`: `POST` enables (`{"watch": [{channel_id
//!   (number or digits), events ["Deals.all", "Leads.create", ... — create|edit|delete|all of
//!   Leads, Contacts, Deals], notify_url, token (≤ 50 characters), channel_expiry,
//!   return_affected_field_values, notify_on_related_action, notification_condition}]}`;
//!   `201` with Zoho's success shape, one `events` entry per module with `channel_expiry`,
//!   `resource_uri`, `resource_id`, `resource_name`, `channel_id`, `notification_condition`).
//!   `channel_expiry` must be ISO 8601 with an offset and **without milliseconds**, in the
//!   future (else `INVALID_DATA`); without it, or when it is more than
//!   [`ZohoSimOptions::max_channel_expiry`] ahead, the channel lives **one hour** (the enable
//!   docs: "If it is not specified or set for more than a week, the default expiry time is for
//!   one hour" \[V-copy\]). Enabling an existing channel replaces the events of the modules given
//!   and its other settings \[U\]. `GET` lists one entry per channel and module (`channel_id`,
//!   `module` filters; `204` when none). `PUT` replaces a channel, `PATCH` updates what is given
//!   (with `_delete_events: true` removes the events given; a channel without events is
//!   gone), `DELETE ?channel_ids=` disables. An unknown or expired channel is `400
//!   {"watch":[{"code":"NOT_SUBSCRIBED",...}]}` \[S\] (the frigg changelog in the research).
//!   Invalid items are `MANDATORY_NOT_FOUND` / `INVALID_DATA` in place; `400` when every item
//!   failed, `207` for a mix. Expired channels are garbage-collected (they vanish from `GET`,
//!   stop notifying, and `PUT`/`PATCH` answer `NOT_SUBSCRIBED`).
//! - **Notifications**: every record change — API calls and the UI-like actions
//!   ([`ZohoSim::convert_lead_ui`], [`ZohoSim::set_deal_stage_ui`],
//!   [`ZohoSim::update_record_ui`]) — matching a live channel's events records a callback in an
//!   outbox: `{server_time (ms), query_params (of the notify_url), module, resource_uri
//!   ({api_domain}/crm/v8/{Module}), ids (strings), affected_fields (changed field API names;
//!   `[]` for insert and delete), operation (insert|update|delete), channel_id (a string),
//!   token}` in the key order of Zoho's sample, plus `affected_values: [{record_id, values}]`
//!   (updates; the key of a third-party capture \[S\]) with `return_affected_field_values`.
//!   Changes of one module and operation in one API call or action are batched into one
//!   notification with several ids. A `notification_condition` (`field_selection` groups with
//!   `and`/`or`) filters update notifications by the changed fields; inserts and deletes always
//!   notify \[U\]. An update that changes nothing notifies nothing. Callbacks wait in the outbox
//!   ([`ZohoSim::take_notifications`]) until [`ZohoSim::deliver`] POSTs them (JSON,
//!   `Content-Type: application/json`).
//! - **Limits**: credits per rolling 24 hours on the simulator's clock
//!   ([`ZohoSimOptions::daily_credits`]): 1 per call, 1 per 10 records of insert, update and
//!   upsert, 5 per conversion \[V\]/\[S\] — every authenticated call is charged, whatever its
//!   answer; once more than half are used every API answer carries
//!   `X-API-CREDITS-REMAINING` \[S\]; with none left calls get **429** `{"code":"LIMIT_REACHED",
//!   ...}`. More than [`ZohoSimOptions::max_concurrency`] API requests in flight at once get
//!   **429** `{"code":"TOO_MANY_REQUESTS","message":"concurrency limit exceeded",...}` (the
//!   real messages are not documented \[U\]; to hold requests in flight, inject
//!   [`crate::sim::Fault::Latency`] through [`ZohoSim::simulator`]). [`ZohoSim::fail_next`]
//!   makes the next API calls answer a status with a Zoho error body. The accounts server is
//!   neither limited nor failed by these; faults injected through [`ZohoSim::simulator`] do
//!   reach it (one server): scope them with `FaultRule::on(method, "/crm/")`.
//!
//! # What is not simulated
//!
//! Accounts and every other module, tags, attachments, notes, layouts and custom views APIs;
//! COQL, bulk and composite APIs; `If-Modified-Since`, sorting, `page_token`; API versions
//! other than v8; workflows, approvals, blueprints (`trigger` is accepted and ignored); field
//! permissions and scopes (every token may do everything); the authorization endpoint
//! (`/oauth/v2/auth`), multiple data centres, token revocation, the 20-refresh-tokens and
//! 30-access-tokens caps; the authorization code is reusable; lead conversion into accounts,
//! `overwrite`, `assign_to`, `carry_over_tags`; `notify_on_related_action` (stored, not acted
//! on); delivery retries and ordering (Zoho documents none: a callback is sent once, by
//! [`ZohoSim::deliver`] or [`ZohoSim::send`]); the sub-concurrency limit of heavy calls.

mod api;
mod auth;
mod model;
mod ops;
mod search;
mod settings;
mod watch;

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::sim::{SimOptions, Simulator};
use model::{Module, State};

/// Most records one insert, update, upsert or delete call takes.
pub const MAX_RECORDS_PER_CALL: usize = 100;

/// How long [`ZohoSim::send`] waits for a notify URL to answer.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`ZohoSim`].
#[derive(Debug, Clone)]
pub struct ZohoSimOptions {
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// A refresh token that works from the start.
    pub refresh_token: String,
    /// The authorization code the token endpoint accepts. Default `sim-code`.
    pub authorization_code: String,
    /// How long access tokens work (`expires_in`). Default 3600 s.
    pub access_token_lifetime: Duration,
    /// Access tokens one refresh token may mint per rolling 10 minutes. Default 10.
    pub max_tokens_per_refresh_token: usize,
    /// The API name of the referral-code custom field of Leads, Contacts and Deals. Default
    /// `Referral_Code`.
    pub referral_code_field: String,
    /// Whether the referral-code field of Deals is unique ("Do not allow duplicate values"),
    /// so upserts may name it in `duplicate_check_fields`. Default true.
    pub referral_code_unique_on_deals: bool,
    /// The lead conversion mapping of the referral-code field: Leads → Contacts and Deals.
    /// Default true; false loses the code on conversion.
    pub conversion_mapping: bool,
    /// API credits per rolling 24 hours. Default 50 000.
    pub daily_credits: u64,
    /// API requests allowed in flight at once. Default 10.
    pub max_concurrency: usize,
    /// The longest `channel_expiry` a channel may ask for. Default 7 days.
    pub max_channel_expiry: Duration,
    /// Requests the server handles before answering `503` ([`SimOptions::max_requests`]).
    /// Default 10 000.
    pub max_requests: usize,
}

impl ZohoSimOptions {
    /// The OAuth client and a working refresh token; code `sim-code`, tokens for 3600 s, 10
    /// tokens per refresh token per 10 minutes, `Referral_Code` (unique on Deals, mapped on
    /// conversion), 50 000 credits, 10 concurrent requests, channels up to 7 days.
    pub fn new(client_id: &str, client_secret: &str, refresh_token: &str) -> Self {
        ZohoSimOptions {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            refresh_token: refresh_token.to_owned(),
            authorization_code: "sim-code".to_owned(),
            access_token_lifetime: Duration::from_secs(3600),
            max_tokens_per_refresh_token: 10,
            referral_code_field: "Referral_Code".to_owned(),
            referral_code_unique_on_deals: true,
            conversion_mapping: true,
            daily_credits: 50_000,
            max_concurrency: 10,
            max_channel_expiry: Duration::from_secs(7 * 24 * 3600),
            max_requests: SimOptions::default().max_requests,
        }
    }
}

/// A notification callback, as Zoho POSTs it to a channel's `notify_url`.
#[derive(Debug, Clone)]
pub struct OutgoingNotification {
    /// The channel's `notify_url`.
    pub url: String,
    /// The body (the request's bytes are the same JSON, keys in Zoho's order).
    pub body: Value,
    /// The channel id (as the body carries it: a string).
    pub channel_id: String,
    /// `Leads`, `Contacts` or `Deals`.
    pub module: String,
    /// `insert`, `update` or `delete`.
    pub operation: String,
    /// The record ids.
    pub ids: Vec<String>,
    /// The request [`ZohoSim::send`] makes: `POST`, `Content-Type: application/json`, the body.
    pub request: refsync_core::WebhookRequest,
}

/// State shared by the HTTP handler and the [`ZohoSim`] handle.
#[derive(Debug)]
struct Inner {
    opts: ZohoSimOptions,
    state: Mutex<State>,
    /// API requests received and not yet answered.
    in_flight: AtomicUsize,
    base_url: OnceLock<String>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`: the api domain and accounts server.
    fn base_url(&self) -> String {
        self.base_url.get().cloned().unwrap_or_default()
    }
}

/// A running simulated Zoho CRM org. Dropping it stops the server.
#[derive(Debug)]
pub struct ZohoSim {
    sim: Simulator,
    inner: Arc<Inner>,
}

fn module_of(name: &str) -> Result<Module, String> {
    Module::parse(name).ok_or_else(|| format!("unknown module {name:?} (Leads, Contacts or Deals)"))
}

impl ZohoSim {
    /// Starts the simulator on `127.0.0.1:<random port>` (inside a Tokio runtime). Fails with
    /// `InvalidInput` for an empty referral-code field name.
    pub async fn start(opts: ZohoSimOptions) -> std::io::Result<ZohoSim> {
        if opts.referral_code_field.trim().is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "referral_code_field must not be empty",
            ));
        }
        let sim_options = SimOptions {
            max_requests: opts.max_requests,
            ..SimOptions::default()
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(&opts)),
            opts,
            in_flight: AtomicUsize::new(0),
            base_url: OnceLock::new(),
        });
        let sim = Simulator::start_with(api::Handler::new(Arc::clone(&inner)), sim_options).await?;
        let _ = inner.base_url.set(sim.base_url());
        Ok(ZohoSim { sim, inner })
    }

    /// `http://127.0.0.1:PORT`: both the API domain (`api_domain` of token answers) and the
    /// accounts server.
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }

    /// `{base}/oauth/v2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/v2/token", self.base_url())
    }

    /// The underlying simulator: request log and fault injection.
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }

    /// The underlying simulator alone, for harnesses that keep only a [`Simulator`]; the org
    /// lives on in its handler and stays reachable through the API.
    pub fn into_simulator(self) -> Simulator {
        self.sim
    }

    /// The options the simulator runs with.
    pub fn options(&self) -> &ZohoSimOptions {
        &self.inner.opts
    }

    /// The id of `module`'s only layout ("Standard"), e.g. for `GET
    /// /settings/pipeline?layout_id=` with the Deals layout; `None` for unknown modules.
    pub fn layout_id(&self, module: &str) -> Option<String> {
        Module::parse(module).map(|m| m.layout_id().to_owned())
    }

    // ----- state inspection ------------------------------------------------------------------

    /// Every record of `module` (converted leads included) with every field and the system
    /// fields, by id; empty for unknown modules.
    pub fn records(&self, module: &str) -> Vec<Value> {
        let Ok(module) = module_of(module) else {
            return Vec::new();
        };
        let state = self.inner.lock();
        state
            .records(module)
            .values()
            .map(|r| state.record_json(r))
            .collect()
    }

    /// Record `id` of `module`, as [`ZohoSim::records`] shows it.
    pub fn record(&self, module: &str, id: &str) -> Option<Value> {
        let module = module_of(module).ok()?;
        let state = self.inner.lock();
        state.record(module, id).map(|r| state.record_json(r))
    }

    /// The records of `module` whose `Email` is `email` (case-insensitive), converted leads
    /// included.
    pub fn find_by_email(&self, module: &str, email: &str) -> Vec<Value> {
        let Ok(module) = module_of(module) else {
            return Vec::new();
        };
        let state = self.inner.lock();
        state
            .records(module)
            .values()
            .filter(|r| r.text("Email").eq_ignore_ascii_case(email.trim()))
            .map(|r| state.record_json(r))
            .collect()
    }

    /// The Deals pipelines as `GET /settings/pipeline` answers them (`{"pipeline": [...]}`).
    pub fn pipelines(&self) -> Value {
        settings::pipelines_json(&self.inner.lock())
    }

    /// The fields of `module` as `GET /settings/fields` lists them.
    pub fn fields(&self, module: &str) -> Vec<Value> {
        let Ok(module) = module_of(module) else {
            return Vec::new();
        };
        settings::fields_json(&self.inner.lock(), &self.inner.opts, module)
    }

    /// The live watch channels as `GET /actions/watch` lists them (one entry per channel and
    /// module); expired channels are collected first.
    pub fn channels(&self) -> Vec<Value> {
        let api_domain = self.inner.base_url();
        let mut state = self.inner.lock();
        state.collect_expired_channels();
        state
            .channels
            .values()
            .flat_map(|c| watch::channel_entries(c, &api_domain))
            .collect()
    }

    // ----- settings and UI-like actions ------------------------------------------------------

    /// Adds a stage to the default ("Standard (Standard)") pipeline as an admin does in the
    /// setup: `display` and `actual` values and the forecast type (`Open`, `Closed Won`,
    /// `Closed Lost`). Returns the stage id.
    ///
    /// # Panics
    ///
    /// For another forecast type.
    pub fn add_stage(&self, display: &str, actual: &str, forecast_type: &str) -> String {
        assert!(
            matches!(forecast_type, "Open" | "Closed Won" | "Closed Lost"),
            "ZohoSim::add_stage: forecast type {forecast_type:?} is not Open, Closed Won or Closed Lost"
        );
        let mut state = self.inner.lock();
        let id = state.new_stage_id();
        let pipeline = state
            .pipelines
            .iter_mut()
            .find(|p| p.default)
            .expect("the default pipeline exists");
        let sequence_number = pipeline.stages.len() as u32 + 1;
        pipeline.stages.push(model::Stage {
            display_value: display.to_owned(),
            actual_value: actual.to_owned(),
            id: id.clone(),
            sequence_number,
            forecast_type: forecast_type.to_owned(),
        });
        id
    }

    /// Runs a UI-like action on the state and turns its changes into notifications.
    fn ui<T>(&self, action: impl FnOnce(&mut State) -> Result<T, String>) -> Result<T, String> {
        let api_domain = self.inner.base_url();
        let mut state = self.inner.lock();
        state.collect_expired_channels();
        let result = action(&mut state);
        if result.is_err() {
            state.changes.clear();
        }
        watch::flush(&mut state, &api_domain);
        result
    }

    /// A user converts lead `lead_id` in the UI, creating a deal `(Deal_Name, Stage)` in the
    /// default pipeline (closing in 30 days) when given; the referral code follows the
    /// conversion mapping. The contact is an existing one with the lead's e-mail, else a new
    /// one. Records the notifications a conversion fires. Returns `(contact id, deal id)`.
    pub fn convert_lead_ui(
        &self,
        lead_id: &str,
        deal: Option<(&str, &str)>,
    ) -> Result<(String, Option<String>), String> {
        let opts = &self.inner.opts;
        self.ui(|state| {
            let lead = state
                .record(Module::Leads, lead_id)
                .cloned()
                .ok_or_else(|| format!("lead {lead_id} does not exist"))?;
            if lead.is_converted() {
                return Err(format!("lead {lead_id} is already converted"));
            }
            let deal = match deal {
                Some((name, stage)) => {
                    let closing = model::later(state.now(), chrono::Duration::days(30))
                        .format("%Y-%m-%d")
                        .to_string();
                    let input = api::ui_input(&[
                        ("Deal_Name", json!(name)),
                        ("Stage", json!(stage)),
                        ("Closing_Date", json!(closing)),
                        ("Pipeline", json!(state.default_pipeline().actual_value)),
                    ]);
                    Some(
                        ops::validate_conversion_deal(state, &input, "$.Deals")
                            .map_err(|e| e.to_string())?,
                    )
                }
                None => None,
            };
            let email = lead.text("Email").to_owned();
            let contact = if email.is_empty() {
                None
            } else {
                ops::find_duplicate(state, Module::Contacts, "Email", &json!(email), None)
            };
            ops::convert_lead(state, opts, lead.id, contact, deal).map_err(|e| e.to_string())
        })
    }

    /// A user moves deal `deal_id` to stage `stage` (an actual value of the deal's pipeline) in
    /// the UI. Records a Deals update (`affected_fields ["Stage"]`) when the stage changed.
    pub fn set_deal_stage_ui(&self, deal_id: &str, stage: &str) -> Result<(), String> {
        self.update_record_ui("Deals", deal_id, &[("Stage", json!(stage))])
    }

    /// A user edits record `id` of `module` in the UI (validated as the API does; `null`
    /// clears). Records an update notification when something changed.
    pub fn update_record_ui(
        &self,
        module: &str,
        id: &str,
        fields: &[(&str, Value)],
    ) -> Result<(), String> {
        let module = module_of(module)?;
        self.ui(|state| {
            let existing = state
                .record(module, id)
                .cloned()
                .ok_or_else(|| format!("{} record {id} does not exist", module.api_name()))?;
            if existing.is_converted() {
                return Err(format!("lead {id} is converted and cannot be edited"));
            }
            let input = api::ui_input(fields);
            let changes = ops::validate(state, module, &input, "$", Some(&existing))
                .map_err(|e| e.to_string())?;
            ops::check_unique(state, module, &changes, &[], "$", Some(existing.id))
                .map_err(|e| e.to_string())?;
            ops::update(state, module, existing.id, changes);
            Ok(())
        })
    }

    /// Moves the simulator's clock forward (at most 100 years at a time): access tokens and
    /// channels expire (expired channels are garbage-collected), the 10-minute minting window
    /// and the 24-hour credit window roll. Record times, expiries and `server_time` follow the
    /// simulator's clock.
    pub fn advance_clock(&self, by: Duration) {
        let mut state = self.inner.lock();
        let by = auth::chrono_duration(by).min(chrono::Duration::days(365 * 100));
        state.clock_offset = state
            .clock_offset
            .checked_add(&by)
            .unwrap_or(state.clock_offset);
        state.collect_expired_channels();
    }

    // ----- notifications ---------------------------------------------------------------------

    /// Takes every pending callback from the outbox, in the order the changes happened.
    pub fn take_notifications(&self) -> Vec<OutgoingNotification> {
        std::mem::take(&mut self.inner.lock().outbox)
    }

    /// Takes the pending callbacks and POSTs each to its notify URL, once (Zoho documents no
    /// retries); returns each with the answer (status and body) or the error.
    pub async fn deliver(&self) -> Vec<(OutgoingNotification, std::io::Result<(u16, Vec<u8>)>)> {
        let notifications = self.take_notifications();
        let mut results = Vec::with_capacity(notifications.len());
        for notification in notifications {
            let answer = self.send(&notification).await;
            results.push((notification, answer));
        }
        results
    }

    /// POSTs `notification` to its URL (an `http://` URL); gives up after
    /// [`NOTIFY_TIMEOUT`].
    pub async fn send(
        &self,
        notification: &OutgoingNotification,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        watch::send(notification, NOTIFY_TIMEOUT).await
    }

    // ----- limits and faults -----------------------------------------------------------------

    /// Successful refresh-token grants so far.
    pub fn token_refreshes(&self) -> u64 {
        self.inner.lock().token_refreshes
    }

    /// Credits used in the rolling 24 hours.
    pub fn credits_used(&self) -> u64 {
        self.inner.lock().credits_in_window()
    }

    /// `429` answers given so far (credits, concurrency, injected).
    pub fn rate_limited(&self) -> u64 {
        self.inner.lock().rate_limited
    }

    /// The next `n` API calls (not the token endpoint) answer `status` with a Zoho error body
    /// (`401` INVALID_TOKEN, `429` TOO_MANY_REQUESTS, `400` INVALID_DATA, `403` NO_PERMISSION,
    /// `404` INVALID_URL_PATTERN, otherwise INTERNAL_ERROR) instead of being handled. Queued
    /// after earlier `fail_next` calls.
    pub fn fail_next(&self, status: u16, n: usize) {
        self.inner
            .lock()
            .fail_queue
            .extend(std::iter::repeat_n(status, n));
    }
}
