//! A stateful, in-memory Salesforce org (REST API v62.0, the OAuth token endpoint with the web
//! server, refresh token and JWT bearer flows, and outbound messages) over real loopback HTTP,
//! built on the [`Simulator`] framework: the Salesforce connector's conformance suite and
//! end-to-end tests talk to it as they would to `https://login.salesforce.com` and the org's
//! `instance_url`.
//!
//! ```no_run
//! use refsync_testkit::salesforce::{SalesforceSim, SalesforceSimOptions, is_ack};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let sim = SalesforceSim::start(SalesforceSimOptions::new("3MVG9sim", "secret", "5Aep861sim")).await?;
//! sim.add_outbound_message("Opportunity", &["StageName", "IsWon"], "http://127.0.0.1:8080/hooks/sf", false);
//! // The connector gets a token at {base}/services/oauth2/token and upserts a lead ...
//! let lead = &sim.find_by_email("Lead", "ann@example.com")[0];
//! let lead_id = lead["Id"].as_str().unwrap();
//! let (_contact, opportunity) = sim
//!     .convert_lead_ui(lead_id, Some(("Ann's deal", "Prospecting")))
//!     .expect("an unconverted lead");
//! sim.set_stage_ui(&opportunity.expect("an opportunity"), "Closed Won").unwrap();
//! for (message, answer) in sim.deliver().await {
//!     // The receiver must answer with a notificationsResponse envelope (see ACK_RESPONSE).
//!     let (status, body) = answer?;
//!     assert!(is_ack(status, &body), "{:?} not acknowledged", message.notification_ids);
//! }
//! # Ok(()) }
//! ```
//!
//! Status marks as in the workspace research (`crm-salesforce-woo-intercom-stripe.md`, section
//! 4): \[V\] read in Salesforce's documentation or a captured Salesforce message (the fixtures
//! in `tests/data/salesforce`), \[S\] from third-party code, reports or secondary summaries,
//! \[U\] an assumption of the simulator. There is no Salesforce OpenAPI description in the
//! workspace: the tests check answers against the shapes the REST API guide documents.
//!
//! # What is simulated
//!
//! - **One host**: [`SalesforceSim::base_url`] serves both the login host and the instance;
//!   token answers give it as `instance_url` ([`SalesforceSim::instance_url`]).
//! - **OAuth** `POST /services/oauth2/token`, form-encoded \[V\]:
//!   `grant_type=authorization_code` (`code` = [`SalesforceSimOptions::authorization_code`],
//!   `client_id`, `client_secret`, any non-empty `redirect_uri`) and `grant_type=refresh_token`
//!   (`refresh_token`, `client_id`, `client_secret`; [`SalesforceSimOptions::refresh_token`]
//!   and every refresh token a code grant issued keep working) answer `{access_token,
//!   instance_url, id: "<base>/id/<org>/<user>", token_type: "Bearer", issued_at (ms),
//!   signature (base64 HMAC-SHA256 of id + issued_at with the client secret), scope}`, plus a
//!   new `refresh_token` for the code grant; **no `expires_in`** (Salesforce sends none \[S\]).
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an `assertion`: an RS256 JWT
//!   whose signature is verified here with the `rsa` crate (PKCS#1 v1.5, SHA-256) against
//!   [`SalesforceSimOptions::jwt_public_key_pem`] \[V\], `iss` = client id, `aud` = the base
//!   URL, `https://login.salesforce.com` or `https://test.salesforce.com` \[V\], `exp` in the
//!   future and at most [`JWT_MAX_LIFETIME`] (3 minutes) ahead \[V\], both with
//!   [`JWT_CLOCK_SKEW`], `sub` = [`SalesforceSimOptions::jwt_username`] (the pre-authorised
//!   user); it answers `{access_token, scope, instance_url, id, token_type}` without refresh
//!   token \[V\] (nor `issued_at` / `signature`, as Salesforce's collection shows it \[S\]).
//!   Errors are `400 {"error", "error_description"}` \[V\]: `invalid_client_id` "client
//!   identifier invalid" (wrong client id or `iss`), `invalid_client` "invalid client
//!   credentials", `redirect_uri_mismatch`, `invalid_grant` with "authentication failure"
//!   (code), "expired access/refresh token", "invalid assertion" (format, algorithm,
//!   signature, `exp` too far ahead \[U\]), "audience is invalid", "expired authorization
//!   code" (`exp` passed), "user hasn't approved this consumer" (`sub`) \[S\];
//!   `unsupported_grant_type`. Access tokens look like Salesforce's (`<org15>!AQ...`) and work
//!   for [`SalesforceSimOptions::session_lifetime`] from issue on the simulator's clock (the
//!   real timeout counts inactivity \[U\]) or until [`SalesforceSim::expire_sessions`].
//!   `GET /services/oauth2/userinfo` and the identity URL answer who the token is \[U\]
//!   (shapes abridged), e.g. for a receiver that checks an outbound message's `SessionId`.
//! - **REST** under `/services/data/v62.0/` with `Authorization: Bearer <token>` (or `OAuth`);
//!   other versions answer `404 [{"errorCode":"NOT_FOUND","message":"The requested resource
//!   does not exist"}]`; missing, unknown or expired tokens `401
//!   [{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]` \[V\].
//!   `GET /services/data/` lists the version. Objects `Lead`, `Contact`, `Opportunity`
//!   (names case-insensitive; others `404`). Errors are arrays of `{message, errorCode,
//!   fields?}` \[V\]:
//!   - `POST /sobjects/{Object}` → `201 {"id","success":true,"errors":[]}` \[V\];
//!   - `GET /sobjects/{Object}/{id}` (15 or 18 characters; `fields=` optional) → the record with
//!     `attributes {type, url}` and every field; a segment that is not an id answers `404`
//!     "Provided external ID field does not exist or is not accessible: …" \[S\];
//!   - `PATCH /sobjects/{Object}/{id}` → `204` \[V\];
//!   - `GET|PATCH /sobjects/{Lead|Contact}/{ExternalIdField}/{value}`: read, or upsert → `201
//!     {"id","success":true,"errors":[],"created":true}` / `200 {...,"created":false}` (API
//!     46.0+) \[V\]; several matches → `300` with the matching records' URLs, nothing written
//!     \[V\]; `updateOnly=true` without a match → `404` \[V\]; the external id field or `Id` in
//!     the body → `400 INVALID_FIELD` "The … field should not be specified in the sobject
//!     data." \[V\]; another field → `404` as above \[S\]. Matching ignores case (a
//!     case-insensitive unique field) and includes converted leads \[V\], whose update fails
//!     with `CANNOT_UPDATE_CONVERTED_LEAD` "cannot reference converted lead" \[S\];
//!   - sObject Collections \[V\]: `POST /composite/sobjects` `{allOrNone, records:
//!     [{attributes: {type}, ...}]}` and `PATCH /composite/sobjects/{Lead|Contact}/{Field}`
//!     (each record carries the field), at most [`MAX_COLLECTION_RECORDS`] (more: `400
//!     EXCEEDED_ID_LIMIT` \[S\]) → `200` with one result per record, in order: `{id, success:
//!     true, errors: []}` (+ `created` for upserts) or `{success: false, errors: [{statusCode,
//!     message, fields}]}` in place; `allOrNone: true` rolls everything back and reports
//!     `ALL_OR_NONE_OPERATION_ROLLED_BACK` for the others \[V\]. Upserts report several matches
//!     as `DUPLICATE_EXTERNAL_ID` \[V\], a value repeated in the call as `DUPLICATE_VALUE`
//!     \[S\], a record without the field as `MISSING_ARGUMENT` \[U\], a record of another type
//!     as `INVALID_TYPE` \[U\]; a record without `attributes.type` fails the call \[U\];
//!   - `GET /query?q=` — the SOQL subset of the `soql` module: `SELECT` fields `FROM` an object
//!     (`OpportunityStage` too, read-only) with `WHERE` (`=`, `!=`, `<>`, `<`, `<=`, `>`,
//!     `>=`, `[NOT] IN (...)`, `LIKE`, `NOT`, `AND` / `OR` with parentheses; escaped quotes),
//!     `ORDER BY`, `LIMIT` → `{"totalSize", "done": true, "records": [{"attributes": {"type",
//!     "url"}, ...selected fields}]}` \[V\]. String comparisons ignore case (e-mail addresses
//!     included, as SOQL does for all but case-sensitive unique fields \[V\]); converted leads
//!     are returned unless filtered (`IsConverted = false`). Errors `MALFORMED_QUERY`,
//!     `INVALID_FIELD`, `INVALID_TYPE`, `INVALID_QUERY_FILTER_OPERATOR` with the query line, a
//!     caret and `ERROR at Row:1:Column:N` \[S\];
//!   - `GET /limits` → `{"DailyApiRequests": {"Max", "Remaining"}}` \[V\].
//! - **Fields and validation**: Lead `LastName` (80) and `Company` required \[S\], Contact
//!   `LastName`, Opportunity `Name`, `StageName`, `CloseDate` \[V\]; `REQUIRED_FIELD_MISSING`
//!   `"Required fields are missing: [Company]"` with `fields` \[V\]; `INVALID_EMAIL_ADDRESS`
//!   "Email: invalid email address: x" \[S\]; `STRING_TOO_LONG`; unknown fields
//!   `INVALID_FIELD` "No such column 'X' on sobject of type Lead" \[S\]; read-only fields
//!   (`Id`, `Name` of people, `IsConverted`, `Converted*`, `IsClosed`, `IsWon`,
//!   `ForecastCategory*`, system fields) `INVALID_FIELD_FOR_INSERT_UPDATE` \[S\]; wrong JSON
//!   types `JSON_PARSER_ERROR` \[S\]; a stage that does not exist
//!   `INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST` \[U\]; lookups (`AccountId`, `ContactId`,
//!   `OwnerId`) must name existing records (`MALFORMED_ID`, `INVALID_CROSS_REFERENCE_KEY`)
//!   \[S\]. Field names are case-insensitive; blank text is stored as `null` \[S\]. Reads show
//!   every field, `null` when unset; date-times `2024-05-01T10:00:00.000+0000`, dates
//!   `2024-05-01` \[V\]. [`SalesforceSimOptions::external_id_field`] is a text field of all three
//!   objects, External ID + Unique (case-insensitive) on Lead and Contact (uniqueness optional:
//!   [`SalesforceSimOptions::external_id_unique`]; `DUPLICATE_VALUE` "duplicate value found:
//!   … duplicates value on record with id: …" \[S\]).
//! - **Stages**: `OpportunityStage` definitions with `IsClosed` / `IsWon`, default probability
//!   and forecast category; Salesforce's defaults (Prospecting 10 % … Negotiation/Review 90 %
//!   open, Closed Won closed and won, Closed Lost closed) \[S\] and [`SalesforceSim::add_stage`]
//!   (a translated or renamed stage). An opportunity's `IsClosed`, `IsWon`, `ForecastCategory`
//!   and `ForecastCategoryName` derive from its `StageName`; `Probability` takes the stage's
//!   default when created without one or moved to another stage without one \[S\].
//! - **Lead conversion** ([`SalesforceSim::convert_lead_ui`], as `convertLead` does \[V\]): an
//!   account (an id and a name only), a contact (names, e-mail, phone, title, lead source,
//!   description, `AccountId`) and, when asked, an opportunity (`AccountId`, `LeadSource`,
//!   `CloseDate` at the end of the quarter and `ContactId` null, as the CDC conversion fixture
//!   shows \[V\]); the lead gets `IsConverted` true, `Status` "Closed - Converted",
//!   `ConvertedDate`, `ConvertedContactId`, `ConvertedAccountId`, `ConvertedOpportunityId`
//!   (`null` without opportunity) \[V\]. The external id field is copied to the contact and
//!   the opportunity, as a lead field mapping does \[U: the mapping is an org setting\].
//! - **Outbound messages** ([`SalesforceSim::add_outbound_message`]: a workflow rule "created,
//!   and every time it's edited" with an outbound message action): every save of a record of
//!   the object — API, UI-like actions, conversion (the lead's own update only with
//!   [`SalesforceSimOptions::require_validation_for_converted_leads`] \[S\]) — queues a
//!   notification with its own `04l…` id \[V\]. Messages are built when sent, with the
//!   records' data **at send time** \[V\], up to [`MAX_NOTIFICATIONS_PER_MESSAGE`]
//!   notifications each, per definition, in queue order \[V\]: a SOAP 1.1 `POST` with
//!   `Content-Type: text/xml; charset=utf-8` and `SOAPAction: ""` \[V\], the envelope laid out
//!   as the captured message (`soapenv`, `xsd`, `xsi`, the outbound namespace, `sObject
//!   xsi:type="sf:Lead"` with the `sf:` enterprise namespace, `Id` first and the chosen fields
//!   in ASCII order, the trailing space after `</soapenv:Body>`) \[V\]; `OrganizationId`,
//!   `ActionId`, `SessionId` (a valid session when the definition sends it, else `xsi:nil`)
//!   \[V\], `EnterpriseUrl` / `PartnerUrl` `<base>/services/Soap/{c|u}/62.0/<org15>` \[V\];
//!   booleans `true`/`false`, dates ISO, date-times `…000Z`, numbers as Java doubles
//!   (`45000.0`) \[V\]; `null` fields are left out \[U\]. A message is done only when the
//!   answer is 2xx **and** a SOAP envelope with `notificationsResponse` / `Ack` `true` in the
//!   outbound namespace \[V\] ([`is_ack`]); anything else (a plain `200 OK` too) keeps it
//!   queued and the next [`SalesforceSim::deliver`] resends it with the same notification ids
//!   \[V\]; notifications queued 24 hours ago (simulator clock,
//!   [`SalesforceSim::advance_clock`]) are dropped \[V\].
//! - **Limits**: every authenticated REST call counts against
//!   [`SalesforceSimOptions::daily_api_allocation`] over a rolling 24 hours \[V\] and its answer
//!   carries `Sforce-Limit-Info: api-usage=<used>/<allocation>` \[V\] (the `401` of an unknown
//!   session carries none \[U\]); at the allocation, calls answer `403
//!   [{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]` \[V\]
//!   without counting. [`SalesforceSim::fail_next`] injects Salesforce-like failures. The token
//!   and identity endpoints are neither counted nor failed.
//!
//! # What is not simulated
//!
//! Accounts (beyond the ids conversions make), cases, tasks and every other object; describe,
//! `DELETE`, `HEAD`, composite (`/composite`, `/composite/batch`, `/composite/tree`), sObject
//! Collections retrieve / update / delete, Bulk API, `queryAll`, `nextRecordsUrl` paging (every
//! answer is `done`), relationship fields, aggregates and date literals such as `TODAY` in
//! SOQL; upsert by `Id` (`/sobjects/Lead/Id/...`); duplicate rules (`DUPLICATES_DETECTED`,
//! `Sforce-Duplicate-Rule-Header`), validation rules, triggers, assignment rules, record types,
//! field-level security and sharing; the authorization endpoint (`/services/oauth2/authorize`),
//! PKCE, token revocation and introspection, refresh-token rotation and expiry, single-use and
//! expiring authorization codes, the client credentials and username-password flows; the
//! concurrent long-running request limit, `api-bursts`; outbound message retry back-off (a
//! message is resent when the test calls [`SalesforceSim::deliver`]), HTTPS and mutual TLS
//! (endpoints are `http://` on loopback; Salesforce requires HTTPS with `SessionId`),
//! deleted-record notifications, Flow-triggered outbound messages, Change Data Capture and
//! Platform Events (the CDC fixtures are only used to check conversion fields).
//!
//! # Test keys
//!
//! **[`TEST_PRIVATE_KEY_PEM`] and [`TEST_PUBLIC_KEY_PEM`] are a throwaway RSA key pair
//! committed to this repository for tests only. They are public: never use them, or anything
//! signed with them, outside tests.**

mod api;
mod auth;
mod model;
mod ops;
mod outbound;
mod soql;
mod xml;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde_json::Value;

use crate::sim::{SimOptions, Simulator};
pub use auth::sign_jwt;
use model::{SObject, State, USER_ID, normalize_id};
use ops::Mode;

/// The REST API version the simulator serves (`/services/data/v62.0/`).
pub const API_VERSION: &str = "62.0";

/// **A TEST-ONLY RSA private key (2048 bits, PKCS#8 PEM), public in this repository**: signs
/// JWT bearer assertions in tests. Never use it outside tests.
pub const TEST_PRIVATE_KEY_PEM: &str = include_str!("test-private-key.pem");

/// **The TEST-ONLY public key (SubjectPublicKeyInfo PEM)** of [`TEST_PRIVATE_KEY_PEM`]: the
/// default [`SalesforceSimOptions::jwt_public_key_pem`] (the connected app's certificate key).
pub const TEST_PUBLIC_KEY_PEM: &str = include_str!("test-public-key.pem");

/// Most notifications one outbound message carries.
pub const MAX_NOTIFICATIONS_PER_MESSAGE: usize = 100;

/// Most records one sObject Collections call takes.
pub const MAX_COLLECTION_RECORDS: usize = 200;

/// How far ahead a JWT assertion's `exp` may be.
pub const JWT_MAX_LIFETIME: Duration = Duration::from_secs(180);

/// The clock skew allowed on both sides of a JWT assertion's `exp`.
pub const JWT_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The answer a receiver gives to acknowledge an outbound message (Salesforce's documented
/// `notificationsResponse` envelope).
pub const ACK_RESPONSE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\">\n <soapenv:Body>\n  <notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\">\n   <Ack>true</Ack>\n  </notificationsResponse>\n </soapenv:Body>\n</soapenv:Envelope>\n";

/// Whether an answer (`status`, `body`) acknowledges an outbound message: a 2xx status and a
/// well-formed SOAP 1.1 envelope whose body holds `notificationsResponse` with `Ack` `true` (or
/// `1`, the other `xsd:boolean` spelling), both in the namespace
/// `http://soap.sforce.com/2005/09/outbound` (prefixes are free).
pub fn is_ack(status: u16, body: &[u8]) -> bool {
    outbound::is_ack(status, body)
}

/// Settings of a [`SalesforceSim`].
#[derive(Debug, Clone)]
pub struct SalesforceSimOptions {
    /// The connected app's consumer key (`client_id`, JWT `iss`).
    pub client_id: String,
    /// The connected app's consumer secret.
    pub client_secret: String,
    /// A refresh token that works from the start.
    pub refresh_token: String,
    /// The authorization code the token endpoint accepts (any number of times). Default
    /// `sim-code`.
    pub authorization_code: String,
    /// The pre-authorised user of the JWT bearer flow (`sub`). Default
    /// `integration@refsync-sim.example`.
    pub jwt_username: String,
    /// The connected app's certificate key that verifies JWT assertions (PEM: `PUBLIC KEY` or
    /// `RSA PUBLIC KEY`). Default [`TEST_PUBLIC_KEY_PEM`].
    pub jwt_public_key_pem: String,
    /// The org id, 18 (or 15) characters. Default `00D5w000004qGTOEA2` (the fixture's).
    pub organization_id: String,
    /// The API name of the custom text field of Lead, Contact and Opportunity; External ID on
    /// Lead and Contact. Default `Referral_Code__c`.
    pub external_id_field: String,
    /// Whether the external id field is also Unique (case-insensitive) on Lead and Contact.
    /// Default true; false lets duplicates exist, so upserts can match several records.
    pub external_id_unique: bool,
    /// The lead setting "Require Validation for Converted Leads": the lead's own update during
    /// a conversion runs workflow (queues the lead's outbound messages). Default true.
    pub require_validation_for_converted_leads: bool,
    /// REST calls allowed per rolling 24 hours (a Developer Edition's 15 000 by default).
    pub daily_api_allocation: u64,
    /// How long an access token works after it is issued. Default 2 hours.
    pub session_lifetime: Duration,
    /// Requests the server handles before answering `503` ([`SimOptions::max_requests`]).
    /// Default 10 000.
    pub max_requests: usize,
}

impl SalesforceSimOptions {
    /// The connected app and a working refresh token; code `sim-code`, JWT user
    /// `integration@refsync-sim.example` with [`TEST_PUBLIC_KEY_PEM`], org
    /// `00D5w000004qGTOEA2`, `Referral_Code__c` (unique), conversions running lead workflow,
    /// 15 000 calls a day, 2-hour sessions.
    pub fn new(client_id: &str, client_secret: &str, refresh_token: &str) -> Self {
        SalesforceSimOptions {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            refresh_token: refresh_token.to_owned(),
            authorization_code: "sim-code".to_owned(),
            jwt_username: "integration@refsync-sim.example".to_owned(),
            jwt_public_key_pem: TEST_PUBLIC_KEY_PEM.to_owned(),
            organization_id: "00D5w000004qGTOEA2".to_owned(),
            external_id_field: "Referral_Code__c".to_owned(),
            external_id_unique: true,
            require_validation_for_converted_leads: true,
            daily_api_allocation: 15_000,
            session_lifetime: Duration::from_secs(2 * 3600),
            max_requests: SimOptions::default().max_requests,
        }
    }
}

/// An outbound message: one SOAP `POST` with up to 100 notifications of one definition.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The definition's endpoint URL.
    pub url: String,
    /// The SOAP envelope (UTF-8 XML).
    pub body: String,
    /// The notification ids (`04l…`), in order; the same on every resend.
    pub notification_ids: Vec<String>,
    /// The definition's id (`04k…`).
    pub action_id: String,
    /// The object (`Lead`, `Contact`, `Opportunity`).
    pub sobject: String,
    /// The record id of each notification.
    pub record_ids: Vec<String>,
    /// The `SessionId` the message carries, when the definition sends one.
    pub session_id: Option<String>,
    /// The request [`SalesforceSim::send`] makes: `POST`, `Content-Type`, `SOAPAction`, body.
    pub request: refsync_core::WebhookRequest,
    queued: Vec<outbound::Queued>,
}

/// State shared by the HTTP handler and the [`SalesforceSim`] handle.
#[derive(Debug)]
struct Inner {
    opts: SalesforceSimOptions,
    state: Mutex<State>,
    base_url: OnceLock<String>,
    jwt_key: rsa::RsaPublicKey,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`: the login host and the instance.
    fn base_url(&self) -> String {
        self.base_url.get().cloned().unwrap_or_default()
    }
}

/// A running simulated Salesforce org. Dropping it stops the server.
#[derive(Debug)]
pub struct SalesforceSim {
    sim: Simulator,
    inner: Arc<Inner>,
}

fn invalid_input(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

fn object_of(name: &str) -> Result<SObject, String> {
    SObject::parse(name)
        .ok_or_else(|| format!("unknown object {name:?} (Lead, Contact or Opportunity)"))
}

impl SalesforceSim {
    /// Starts the simulator on `127.0.0.1:<random port>` (inside a Tokio runtime). Fails with
    /// `InvalidInput` for an org id that is not a 15/18-character `00D` id, an external id field
    /// name that is empty or a standard field's, or a JWT key that is not an RSA public key.
    pub async fn start(mut opts: SalesforceSimOptions) -> std::io::Result<SalesforceSim> {
        let org = normalize_id(opts.organization_id.trim())
            .filter(|id| id.starts_with("00D"))
            .ok_or_else(|| {
                invalid_input(format!(
                    "organization_id {:?} is not an org id",
                    opts.organization_id
                ))
            })?;
        opts.organization_id = org;
        let ext = opts.external_id_field.trim().to_owned();
        let clashes = model::object_fields(SObject::Lead, "")
            .iter()
            .chain(&model::object_fields(SObject::Opportunity, ""))
            .chain(&model::object_fields(SObject::Contact, ""))
            .any(|f| f.name.eq_ignore_ascii_case(&ext));
        if ext.is_empty() || clashes || !ext.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid_input(format!(
                "external_id_field {:?} must be a custom field name",
                opts.external_id_field
            )));
        }
        opts.external_id_field = ext;
        let jwt_key = auth::parse_public_key(&opts.jwt_public_key_pem).map_err(invalid_input)?;
        let sim_options = SimOptions {
            max_requests: opts.max_requests,
            ..SimOptions::default()
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(&opts)),
            opts,
            base_url: OnceLock::new(),
            jwt_key,
        });
        let sim = Simulator::start_with(api::Handler::new(Arc::clone(&inner)), sim_options).await?;
        let _ = inner.base_url.set(sim.base_url());
        Ok(SalesforceSim { sim, inner })
    }

    /// `http://127.0.0.1:PORT`: the login host (token endpoint) and the instance.
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }

    /// The `instance_url` of token answers: [`SalesforceSim::base_url`].
    pub fn instance_url(&self) -> String {
        self.base_url()
    }

    /// `{base}/services/oauth2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/services/oauth2/token", self.base_url())
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

    /// The options the simulator runs with (the org id as 18 characters).
    pub fn options(&self) -> &SalesforceSimOptions {
        &self.inner.opts
    }

    /// The id of the simulated integration user (owner of every record, the JWT user).
    pub fn user_id(&self) -> &'static str {
        USER_ID
    }

    // ----- state inspection ------------------------------------------------------------------

    /// Every record of `sobject` (converted leads included) as `GET /sobjects/{Object}/{id}`
    /// shows it, in creation order; empty for unknown objects.
    pub fn records(&self, sobject: &str) -> Vec<Value> {
        let Ok(sobject) = object_of(sobject) else {
            return Vec::new();
        };
        let state = self.inner.lock();
        state
            .records(sobject)
            .iter()
            .map(|r| state.record_json(r, None))
            .collect()
    }

    /// Record `id` (15 or 18 characters) of `sobject`, as [`SalesforceSim::records`] shows it.
    pub fn record(&self, sobject: &str, id: &str) -> Option<Value> {
        let sobject = object_of(sobject).ok()?;
        let state = self.inner.lock();
        state
            .record(sobject, id)
            .map(|r| state.record_json(r, None))
    }

    /// The records of `sobject` whose `Email` is `email` (case-insensitive), converted leads
    /// included.
    pub fn find_by_email(&self, sobject: &str, email: &str) -> Vec<Value> {
        let Ok(sobject) = object_of(sobject) else {
            return Vec::new();
        };
        let state = self.inner.lock();
        state
            .records(sobject)
            .iter()
            .filter(|r| r.text("Email").eq_ignore_ascii_case(email.trim()))
            .map(|r| state.record_json(r, None))
            .collect()
    }

    // ----- setup and UI-like actions ---------------------------------------------------------

    /// Adds an opportunity stage as an admin does (e.g. a translated "Pre-Calificación" or a
    /// renamed won stage "Firmado"): closed and won flags; probability 100 % for won, 0 % for
    /// lost, 10 % for open stages.
    ///
    /// # Panics
    ///
    /// When the label exists, or for a won stage that is not closed.
    pub fn add_stage(&self, master_label: &str, is_closed: bool, is_won: bool) {
        assert!(
            is_closed || !is_won,
            "SalesforceSim::add_stage: a won stage is closed"
        );
        let mut state = self.inner.lock();
        assert!(
            state.stage(master_label).is_none(),
            "SalesforceSim::add_stage: stage {master_label:?} exists"
        );
        let probability = match (is_closed, is_won) {
            (_, true) => 100.0,
            (true, false) => 0.0,
            (false, false) => 10.0,
        };
        state.add_stage(master_label, is_closed, is_won, probability);
    }

    /// Defines an outbound message on `sobject` with `fields` (`Id` always comes along) sent to
    /// `endpoint_url` (an `http://` URL), with the session id or not, and the workflow rule
    /// that fires it on every create and edit of the object. Returns its id (`04k…`).
    ///
    /// # Panics
    ///
    /// For an unknown object or field.
    pub fn add_outbound_message(
        &self,
        sobject: &str,
        fields: &[&str],
        endpoint_url: &str,
        send_session_id: bool,
    ) -> String {
        let sobject = object_of(sobject)
            .unwrap_or_else(|e| panic!("SalesforceSim::add_outbound_message: {e}"));
        let mut state = self.inner.lock();
        let fields = outbound::definition_fields(&state, sobject, fields);
        let action_id = state.new_id(model::ACTION_PREFIX);
        state.outbox.definitions.push(outbound::Definition {
            action_id: action_id.clone(),
            sobject,
            fields,
            endpoint_url: endpoint_url.to_owned(),
            send_session_id,
        });
        action_id
    }

    /// A user creates a record of `sobject` in the UI (validated as the API validates it;
    /// outbound messages fire). Returns its id.
    pub fn create_record_ui(
        &self,
        sobject: &str,
        fields: &[(&str, Value)],
    ) -> Result<String, String> {
        let sobject = object_of(sobject)?;
        let input = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut state = self.inner.lock();
        let changes = ops::validate(
            &state,
            &self.inner.opts,
            sobject,
            &input,
            None,
            Mode::Create,
        )
        .map_err(|e| ops::SfError::text(&e))?;
        Ok(ops::create(&mut state, sobject, changes))
    }

    /// A user edits record `id` of `sobject` in the UI (validated as the API validates it;
    /// `null` clears; outbound messages fire).
    pub fn update_record_ui(
        &self,
        sobject: &str,
        id: &str,
        fields: &[(&str, Value)],
    ) -> Result<(), String> {
        let sobject = object_of(sobject)?;
        let input = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut state = self.inner.lock();
        let existing = state
            .record(sobject, id)
            .cloned()
            .ok_or_else(|| format!("{} {id} does not exist", sobject.name()))?;
        if existing.is_converted() {
            return Err(ops::SfError::text(&[ops::converted_lead()]));
        }
        let changes = ops::validate(
            &state,
            &self.inner.opts,
            sobject,
            &input,
            Some(&existing),
            Mode::Update,
        )
        .map_err(|e| ops::SfError::text(&e))?;
        ops::update(&mut state, sobject, &existing.id, changes);
        Ok(())
    }

    /// A user converts lead `lead_id` (see the module docs), creating an opportunity `(Name,
    /// StageName)` when given. Returns `(contact id, opportunity id)`.
    pub fn convert_lead_ui(
        &self,
        lead_id: &str,
        opportunity: Option<(&str, &str)>,
    ) -> Result<(String, Option<String>), String> {
        let mut state = self.inner.lock();
        ops::convert_lead(&mut state, &self.inner.opts, lead_id, opportunity)
    }

    /// A user moves opportunity `opportunity_id` to stage `stage_name` (a stage's label); the
    /// probability follows the stage; outbound messages fire.
    pub fn set_stage_ui(&self, opportunity_id: &str, stage_name: &str) -> Result<(), String> {
        self.update_record_ui(
            "Opportunity",
            opportunity_id,
            &[("StageName", Value::String(stage_name.to_owned()))],
        )
    }

    /// Moves the simulator's clock forward (at most 100 years at a time): sessions expire, the
    /// 24-hour API window rolls, queued notifications age (dropped after 24 hours). Record
    /// times follow the simulator's clock.
    pub fn advance_clock(&self, by: Duration) {
        let mut state = self.inner.lock();
        let by = chrono::Duration::from_std(by)
            .unwrap_or(chrono::Duration::MAX)
            .min(chrono::Duration::days(365 * 100));
        state.clock_offset = state
            .clock_offset
            .checked_add(&by)
            .unwrap_or(state.clock_offset);
    }

    // ----- outbound messages -----------------------------------------------------------------

    /// Takes the queued notifications (those queued 24 hours ago dropped) and builds the
    /// messages now, with the records' current data: first the messages sent before and not
    /// acknowledged (same notifications), then the new notifications per definition, up to 100
    /// each. The caller owns them: [`SalesforceSim::deliver`] puts unacknowledged ones back.
    pub fn take_messages(&self) -> Vec<OutboundMessage> {
        let base_url = self.inner.base_url();
        let mut state = self.inner.lock();
        outbound::take(&mut state, &self.inner.opts, &base_url)
    }

    /// Takes the queued messages and POSTs each once; a message not acknowledged ([`is_ack`])
    /// or not answered goes back to the queue with the same notifications, to be resent by the
    /// next `deliver`. Returns each message with the answer (status and body) or the error.
    pub async fn deliver(&self) -> Vec<(OutboundMessage, std::io::Result<(u16, Vec<u8>)>)> {
        let messages = self.take_messages();
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            let answer = self.send(&message).await;
            let acked = matches!(&answer, Ok((status, body)) if is_ack(*status, body));
            if !acked {
                outbound::requeue(&mut self.inner.lock(), &message);
            }
            results.push((message, answer));
        }
        results
    }

    /// POSTs `message` to its URL (an `http://` URL; gives up after 60 seconds) and counts the
    /// answer as acknowledged or not ([`SalesforceSim::acked`], [`SalesforceSim::nacked`]); the
    /// queue is not touched.
    pub async fn send(&self, message: &OutboundMessage) -> std::io::Result<(u16, Vec<u8>)> {
        let answer = crate::sim::send_webhook(&message.url, &message.request).await;
        if let Ok((status, body)) = &answer {
            let mut state = self.inner.lock();
            if is_ack(*status, body) {
                state.outbox.acked += 1;
            } else {
                state.outbox.nacked += 1;
            }
        }
        answer
    }

    /// The messages the queue would make now.
    pub fn queued_messages(&self) -> usize {
        let mut state = self.inner.lock();
        outbound::drop_expired(&mut state);
        outbound::groups(&state.outbox).len()
    }

    /// The notifications queued now (in messages to resend or new).
    pub fn queued_notifications(&self) -> usize {
        let mut state = self.inner.lock();
        outbound::drop_expired(&mut state);
        state.outbox.pending.len() + state.outbox.retry.iter().map(Vec::len).sum::<usize>()
    }

    /// Messages answered with a valid acknowledgement.
    pub fn acked(&self) -> u64 {
        self.inner.lock().outbox.acked
    }

    /// Answers that were not a valid acknowledgement (connection errors are not answers and
    /// are not counted).
    pub fn nacked(&self) -> u64 {
        self.inner.lock().outbox.nacked
    }

    /// Notifications dropped after 24 hours in the queue.
    pub fn dropped(&self) -> u64 {
        let mut state = self.inner.lock();
        outbound::drop_expired(&mut state);
        state.outbox.dropped
    }

    // ----- limits, sessions and faults -------------------------------------------------------

    /// `(used, allocation)`: REST calls of the rolling 24 hours and the daily allocation.
    pub fn api_usage(&self) -> (u64, u64) {
        let used = self.inner.lock().api_usage();
        (used, self.inner.opts.daily_api_allocation)
    }

    /// Requests to the token endpoint so far (whatever their outcome).
    pub fn token_requests(&self) -> u64 {
        self.inner.lock().token_requests
    }

    /// Ends every session: each access token issued so far (and the session of outbound
    /// messages) now answers `INVALID_SESSION_ID`; refresh tokens keep working.
    pub fn expire_sessions(&self) {
        let mut state = self.inner.lock();
        state.sessions.clear();
        state.outbox.session = None;
    }

    /// The next `n` REST calls (not the token or identity endpoints) answer `status` with a
    /// Salesforce error body (`401` INVALID_SESSION_ID, `403` REQUEST_LIMIT_EXCEEDED, `404`
    /// NOT_FOUND, `400` UNABLE_TO_LOCK_ROW, `503` SERVER_UNAVAILABLE, otherwise
    /// UNKNOWN_EXCEPTION) and, except for `401`, `Sforce-Limit-Info`, without being counted.
    /// Queued after earlier `fail_next` calls.
    pub fn fail_next(&self, status: u16, n: usize) {
        self.inner
            .lock()
            .fail_queue
            .extend(std::iter::repeat_n(status, n));
    }
}
