//! The simulator's in-memory org: modules and their fields, records, the Deals pipeline, watch
//! channels, OAuth tokens, credits, and the wire shapes (CRM API v8 JSON).

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Map, Value, json};

use super::{OutgoingNotification, ZohoSimOptions};

/// `2024-05-01T10:00:00+00:00`: how Zoho writes record times (ISO 8601 with offset, no
/// milliseconds).
pub(super) fn iso(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// `t` in its own offset, without milliseconds (`channel_expiry`).
pub(super) fn iso_offset(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// `t + by`, saturating at the latest representable time.
pub(super) fn later(t: DateTime<Utc>, by: chrono::Duration) -> DateTime<Utc> {
    t.checked_add_signed(by).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// splitmix64: spreads the bits of a counter.
pub(super) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The org id prefix of every id the simulator makes (as in the pipelines fixture).
const ORG_PREFIX: u64 = 3_652_397_000_000_000_000;

/// The simulated user: owner, creator and modifier of every record.
pub(super) const USER_ID: &str = "3652397000000186017";
pub(super) const USER_NAME: &str = "Patricia Boyle";
pub(super) const USER_EMAIL: &str = "p.boyle@zylker.example";

/// The modules the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Module {
    Leads,
    Contacts,
    Deals,
}

impl Module {
    pub(super) const ALL: [Module; 3] = [Module::Leads, Module::Contacts, Module::Deals];

    /// The module from its API name (case-insensitive, as Zoho accepts `leads` too).
    pub(super) fn parse(name: &str) -> Option<Module> {
        match name.to_ascii_lowercase().as_str() {
            "leads" => Some(Module::Leads),
            "contacts" => Some(Module::Contacts),
            "deals" => Some(Module::Deals),
            _ => None,
        }
    }

    pub(super) fn api_name(self) -> &'static str {
        match self {
            Module::Leads => "Leads",
            Module::Contacts => "Contacts",
            Module::Deals => "Deals",
        }
    }

    /// The module id (`resource_id` of watch channels, `module.id` of conditions).
    pub(super) fn id(self) -> &'static str {
        match self {
            Module::Leads => "3652397000000002175",
            Module::Contacts => "3652397000000002179",
            Module::Deals => "3652397000000002181",
        }
    }

    /// The id of the module's only layout, "Standard".
    pub(super) fn layout_id(self) -> &'static str {
        match self {
            Module::Leads => "3652397000000091055",
            Module::Contacts => "3652397000000091033",
            Module::Deals => "3652397000000091023",
        }
    }

    /// The system-defined duplicate check field (upsert).
    pub(super) fn system_duplicate_field(self) -> &'static str {
        match self {
            Module::Leads | Module::Contacts => "Email",
            Module::Deals => "Deal_Name",
        }
    }
}

/// What a field holds and how its values are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    TextArea,
    Email,
    Phone,
    Picklist,
    /// Deals `Stage`: a picklist whose values are the stages of the deal's pipeline.
    Stage,
    /// Deals `Pipeline`: `{name, id}` of a pipeline.
    Pipeline,
    Currency,
    Integer,
    Date,
    /// `Created_Time` / `Modified_Time` (read-only).
    DateTime,
    /// A lookup to a record of the module (`{id, name}`).
    Lookup(Module),
    /// `Owner`, `Created_By`, `Modified_By`: the user.
    Owner,
}

impl Kind {
    /// `data_type` in the fields metadata.
    pub(super) fn data_type(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::TextArea => "textarea",
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Picklist | Kind::Stage | Kind::Pipeline => "picklist",
            Kind::Currency => "currency",
            Kind::Integer => "integer",
            Kind::Date => "date",
            Kind::DateTime => "datetime",
            Kind::Lookup(_) => "lookup",
            Kind::Owner => "ownerlookup",
        }
    }

    /// `json_type` in the fields metadata.
    pub(super) fn json_type(self) -> &'static str {
        match self {
            Kind::Currency => "double",
            Kind::Integer => "integer",
            Kind::Lookup(_) | Kind::Owner | Kind::Pipeline => "jsonobject",
            _ => "string",
        }
    }

    /// The `expected_data_type` of an `INVALID_DATA` error for a value of the wrong JSON type.
    pub(super) fn expected(self) -> &'static str {
        match self {
            Kind::Currency => "double",
            Kind::Integer => "integer",
            Kind::Date => "date",
            Kind::DateTime => "datetime",
            Kind::Lookup(_) | Kind::Owner => "jsonobject",
            _ => "string",
        }
    }

    /// Text-like kinds: what search `equals` treats as a contains-match.
    pub(super) fn is_text(self) -> bool {
        matches!(self, Kind::Text | Kind::TextArea)
    }
}

/// A field of a module (fields metadata API).
#[derive(Debug, Clone)]
pub(super) struct FieldDef {
    pub(super) api_name: String,
    pub(super) label: String,
    pub(super) kind: Kind,
    pub(super) system_mandatory: bool,
    /// System fields the API never writes (`Created_Time`, ...).
    pub(super) read_only: bool,
    pub(super) custom: bool,
    /// "Do not allow duplicate values".
    pub(super) unique: bool,
    pub(super) id: String,
    pub(super) length: u32,
}

/// The fields of `module`: Zoho's standard fields the simulator knows, then the referral-code
/// custom field.
fn standard_fields(module: Module, opts: &ZohoSimOptions, next_id: &mut u64) -> Vec<FieldDef> {
    use Kind::*;
    let common_tail: &[(&str, &str, Kind, bool, bool)] = &[
        ("Created_By", "Created By", Owner, false, true),
        ("Modified_By", "Modified By", Owner, false, true),
        ("Created_Time", "Created Time", DateTime, false, true),
        ("Modified_Time", "Modified Time", DateTime, false, true),
    ];
    // (api_name, label, kind, system_mandatory, read_only)
    let specific: Vec<(&str, &str, Kind, bool, bool)> = match module {
        Module::Leads => vec![
            ("Owner", "Lead Owner", Owner, false, false),
            ("Company", "Company", Text, false, false),
            ("First_Name", "First Name", Text, false, false),
            ("Last_Name", "Last Name", Text, true, false),
            ("Email", "Email", Email, false, false),
            ("Phone", "Phone", Phone, false, false),
            ("Mobile", "Mobile", Phone, false, false),
            ("Lead_Source", "Lead Source", Picklist, false, false),
            ("Lead_Status", "Lead Status", Picklist, false, false),
            ("Description", "Description", TextArea, false, false),
        ],
        Module::Contacts => vec![
            ("Owner", "Contact Owner", Owner, false, false),
            ("First_Name", "First Name", Text, false, false),
            ("Last_Name", "Last Name", Text, true, false),
            ("Email", "Email", Email, false, false),
            ("Phone", "Phone", Phone, false, false),
            ("Mobile", "Mobile", Phone, false, false),
            ("Lead_Source", "Lead Source", Picklist, false, false),
            ("Description", "Description", TextArea, false, false),
        ],
        Module::Deals => vec![
            ("Owner", "Deal Owner", Owner, false, false),
            ("Deal_Name", "Deal Name", Text, true, false),
            ("Stage", "Stage", Stage, true, false),
            ("Pipeline", "Pipeline", Pipeline, false, false),
            ("Closing_Date", "Closing Date", Date, false, false),
            ("Amount", "Amount", Currency, false, false),
            ("Probability", "Probability (%)", Integer, false, false),
            (
                "Contact_Name",
                "Contact Name",
                Lookup(Module::Contacts),
                false,
                false,
            ),
            ("Lead_Source", "Lead Source", Picklist, false, false),
            ("Description", "Description", TextArea, false, false),
        ],
    };
    let mut fields: Vec<FieldDef> = specific
        .iter()
        .chain(common_tail)
        .map(|(api_name, label, kind, mandatory, read_only)| {
            *next_id += 2;
            FieldDef {
                api_name: (*api_name).to_owned(),
                label: (*label).to_owned(),
                kind: *kind,
                system_mandatory: *mandatory,
                read_only: *read_only,
                custom: false,
                unique: false,
                id: (ORG_PREFIX + *next_id).to_string(),
                length: field_length(*kind),
            }
        })
        .collect();
    *next_id += 2;
    let referral = &opts.referral_code_field;
    fields.push(FieldDef {
        api_name: referral.clone(),
        label: referral.replace('_', " "),
        kind: Kind::Text,
        system_mandatory: false,
        read_only: false,
        custom: true,
        unique: module == Module::Deals && opts.referral_code_unique_on_deals,
        id: (ORG_PREFIX + *next_id).to_string(),
        length: 255,
    });
    fields
}

fn field_length(kind: Kind) -> u32 {
    match kind {
        Kind::TextArea => 32_000,
        Kind::Phone => 30,
        Kind::Email => 100,
        Kind::Currency => 16,
        Kind::Integer => 9,
        Kind::Lookup(_) | Kind::Owner | Kind::DateTime | Kind::Date => 120,
        _ => 255,
    }
}

/// A stage of a pipeline (`maps` of the pipelines API).
#[derive(Debug, Clone)]
pub(super) struct Stage {
    pub(super) display_value: String,
    pub(super) actual_value: String,
    pub(super) id: String,
    pub(super) sequence_number: u32,
    /// `Open`, `Closed Won`, `Closed Lost`.
    pub(super) forecast_type: String,
}

impl Stage {
    fn forecast_category(&self) -> Value {
        match self.forecast_type.as_str() {
            "Closed Won" => json!({"name": "Closed", "id": "3652397000000006789"}),
            "Closed Lost" => json!({"name": "Omitted", "id": "3652397000000006791"}),
            _ => json!({"name": "Pipeline", "id": "3652397000000006787"}),
        }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "display_value": self.display_value,
            "sequence_number": self.sequence_number,
            "forecast_category": self.forecast_category(),
            "actual_value": self.actual_value,
            "id": self.id,
            "forecast_type": self.forecast_type,
        })
    }
}

/// A Deals pipeline of the standard layout.
#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    pub(super) display_value: String,
    pub(super) actual_value: String,
    pub(super) id: String,
    pub(super) default: bool,
    pub(super) stages: Vec<Stage>,
}

impl Pipeline {
    pub(super) fn stage(&self, actual_value: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.actual_value == actual_value)
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "display_value": self.display_value,
            "default": self.default,
            "maps": self.stages.iter().map(Stage::to_json).collect::<Vec<_>>(),
            "actual_value": self.actual_value,
            "id": self.id,
        })
    }

    /// `{"name": actual value, "id"}`: how records carry their pipeline.
    pub(super) fn reference(&self) -> Value {
        json!({"name": self.actual_value, "id": self.id})
    }
}

/// The "Standard (Standard)" pipeline of Zoho's pipelines sample (fixture
/// `pipelines_get_response.json`): display and actual values, ids and forecast types as there.
pub(super) fn standard_pipeline() -> Pipeline {
    let stages: &[(&str, &str, &str, &str)] = &[
        (
            "Qualification",
            "Qualification",
            "3652397000000006801",
            "Open",
        ),
        (
            "Needs Analysis",
            "Needs Analysis",
            "3652397000000006803",
            "Open",
        ),
        (
            "Value Proposition",
            "Value Proposition",
            "3652397000000006805",
            "Open",
        ),
        (
            "Identify Decision Makers",
            "Id. Decision Makers",
            "3652397000000006807",
            "Open",
        ),
        (
            "Proposal/Price Quote",
            "Proposal/Price Quote",
            "3652397000000006811",
            "Open",
        ),
        (
            "Negotiation/Review",
            "Negotiation/Review",
            "3652397000000006813",
            "Open",
        ),
        (
            "Closed Won",
            "Closed Won",
            "3652397000000006815",
            "Closed Won",
        ),
        (
            "Closed Lost",
            "Closed Lost",
            "3652397000000006817",
            "Closed Lost",
        ),
        (
            "Closed-Lost to Competition",
            "Closed Lost to Competition",
            "3652397000000006819",
            "Closed Lost",
        ),
    ];
    Pipeline {
        display_value: "Standard (Standard)".to_owned(),
        actual_value: "Standard (Standard)".to_owned(),
        id: "3652397000003097001".to_owned(),
        default: true,
        stages: stages
            .iter()
            .enumerate()
            .map(|(i, (display, actual, id, forecast))| Stage {
                display_value: (*display).to_owned(),
                actual_value: (*actual).to_owned(),
                id: (*id).to_owned(),
                sequence_number: i as u32 + 1,
                forecast_type: (*forecast).to_owned(),
            })
            .collect(),
    }
}

/// What happened to a converted lead (`$converted_detail`).
#[derive(Debug, Clone)]
pub(super) struct Conversion {
    pub(super) contact: String,
    pub(super) deal: Option<String>,
    pub(super) time: DateTime<Utc>,
}

/// A record of one of the modules.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) id: u64,
    pub(super) module: Module,
    /// Set field values (never null), in Zoho's JSON shape: lookups as `{name, id}`.
    pub(super) values: BTreeMap<String, Value>,
    pub(super) created: DateTime<Utc>,
    pub(super) modified: DateTime<Utc>,
    /// Leads only: set once converted.
    pub(super) conversion: Option<Conversion>,
}

/// `{"name", "id"}` of the simulated user (`Created_By`, `Modified_By`).
pub(super) fn user_ref() -> Value {
    json!({"name": USER_NAME, "id": USER_ID})
}

/// `{"name", "id", "email"}` of the simulated user (`Owner`).
pub(super) fn owner_ref() -> Value {
    json!({"name": USER_NAME, "id": USER_ID, "email": USER_EMAIL})
}

impl Record {
    pub(super) fn id_text(&self) -> String {
        self.id.to_string()
    }

    pub(super) fn get(&self, field: &str) -> Option<&Value> {
        self.values.get(field)
    }

    /// A string value of `field` ("" when unset or not a string).
    pub(super) fn text(&self, field: &str) -> &str {
        self.values.get(field).and_then(Value::as_str).unwrap_or("")
    }

    pub(super) fn is_converted(&self) -> bool {
        self.conversion.is_some()
    }

    /// `First_Name Last_Name` (Contacts, Leads) or `Deal_Name`: the `name` of lookups.
    pub(super) fn display_name(&self) -> String {
        match self.module {
            Module::Deals => self.text("Deal_Name").to_owned(),
            _ => {
                let first = self.text("First_Name");
                let last = self.text("Last_Name");
                if first.is_empty() {
                    last.to_owned()
                } else {
                    format!("{first} {last}")
                }
            }
        }
    }

    /// The value of a field as reads show it (system fields included; `null` when unset).
    pub(super) fn field_json(&self, name: &str) -> Value {
        match name {
            "id" => json!(self.id_text()),
            "Created_Time" => json!(iso(&self.created)),
            "Modified_Time" => json!(iso(&self.modified)),
            "Created_By" | "Modified_By" => user_ref(),
            "Owner" => owner_ref(),
            "Layout" => json!({"id": self.module.layout_id(), "name": "Standard"}),
            _ => self.values.get(name).cloned().unwrap_or(Value::Null),
        }
    }

    /// The record with every field of its module (`null` when unset), the system fields and,
    /// for Leads, `$converted` / `$converted_detail`.
    pub(super) fn to_json_all(&self, fields: &[FieldDef]) -> Value {
        let mut out = Map::new();
        out.insert("id".to_owned(), json!(self.id_text()));
        for field in fields {
            out.insert(field.api_name.clone(), self.field_json(&field.api_name));
        }
        out.insert("Layout".to_owned(), self.field_json("Layout"));
        self.add_meta(&mut out);
        Value::Object(out)
    }

    /// The record with `id` and the named fields only (reads with `fields=`).
    pub(super) fn to_json_fields(&self, names: &[String]) -> Value {
        let mut out = Map::new();
        out.insert("id".to_owned(), json!(self.id_text()));
        for name in names {
            out.insert(name.clone(), self.field_json(name));
        }
        self.add_meta(&mut out);
        Value::Object(out)
    }

    fn add_meta(&self, out: &mut Map<String, Value>) {
        if self.module != Module::Leads {
            return;
        }
        out.insert("$converted".to_owned(), json!(self.is_converted()));
        let detail = match &self.conversion {
            Some(c) => json!({
                "contact": c.contact,
                "deal": c.deal,
                "account": null,
                "converted_time": iso(&c.time),
            }),
            None => json!({}),
        };
        out.insert("$converted_detail".to_owned(), detail);
    }
}

/// What a watch channel subscribes to for one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WatchOp {
    Create,
    Edit,
    Delete,
    All,
}

impl WatchOp {
    pub(super) fn parse(op: &str) -> Option<WatchOp> {
        match op {
            "create" => Some(WatchOp::Create),
            "edit" => Some(WatchOp::Edit),
            "delete" => Some(WatchOp::Delete),
            "all" => Some(WatchOp::All),
            _ => None,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            WatchOp::Create => "create",
            WatchOp::Edit => "edit",
            WatchOp::Delete => "delete",
            WatchOp::All => "all",
        }
    }

    pub(super) fn covers(self, op: Op) -> bool {
        matches!(
            (self, op),
            (WatchOp::All, _)
                | (WatchOp::Create, Op::Insert)
                | (WatchOp::Edit, Op::Update)
                | (WatchOp::Delete, Op::Delete)
        )
    }
}

/// A record change, as notifications name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// A watch channel (`/actions/watch`).
#[derive(Debug, Clone)]
pub(super) struct Channel {
    /// As given (numbers become their decimal text): callbacks carry it as a string.
    pub(super) id: String,
    /// `(module, operation)` subscriptions, in the order given.
    pub(super) events: Vec<(Module, WatchOp)>,
    pub(super) notify_url: String,
    pub(super) token: Option<String>,
    pub(super) expiry: DateTime<FixedOffset>,
    pub(super) return_affected_field_values: bool,
    pub(super) notify_on_related_action: bool,
    /// Validated `notification_condition` items (as given).
    pub(super) conditions: Vec<Value>,
}

impl Channel {
    /// The modules the channel watches, in first-mention order.
    pub(super) fn modules(&self) -> Vec<Module> {
        let mut out = Vec::new();
        for (module, _) in &self.events {
            if !out.contains(module) {
                out.push(*module);
            }
        }
        out
    }

    /// `Deals.create`-style event names of `module`.
    pub(super) fn event_names(&self, module: Module) -> Vec<String> {
        self.events
            .iter()
            .filter(|(m, _)| *m == module)
            .map(|(m, op)| format!("{}.{}", m.api_name(), op.as_str()))
            .collect()
    }

    /// The condition items that apply to `module`.
    pub(super) fn conditions_of(&self, module: Module) -> Vec<Value> {
        self.conditions
            .iter()
            .filter(|c| {
                c.pointer("/module/api_name")
                    .and_then(Value::as_str)
                    .and_then(Module::parse)
                    == Some(module)
            })
            .cloned()
            .collect()
    }
}

/// One record change of the API call or UI action in progress (notifications are built from
/// them when it ends).
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub(super) module: Module,
    pub(super) op: Op,
    pub(super) id: String,
    /// Changed field API names (empty for inserts and deletes).
    pub(super) fields: Vec<String>,
    /// The new values of `fields`.
    pub(super) values: Map<String, Value>,
}

/// An OAuth access token issued by `/oauth/v2/token`.
#[derive(Debug, Clone)]
pub(super) struct AccessToken {
    pub(super) expires_at: DateTime<Utc>,
}

/// Everything the simulator knows.
#[derive(Debug)]
pub(super) struct State {
    /// How far the simulated clock is ahead of the real one ([`super::ZohoSim::advance_clock`]).
    pub(super) clock_offset: chrono::Duration,
    pub(super) records: BTreeMap<Module, BTreeMap<u64, Record>>,
    pub(super) fields: BTreeMap<Module, Vec<FieldDef>>,
    pub(super) pipelines: Vec<Pipeline>,
    pub(super) channels: BTreeMap<String, Channel>,
    /// Changes of the call in progress.
    pub(super) changes: Vec<Change>,
    /// Built callbacks not yet taken.
    pub(super) outbox: Vec<OutgoingNotification>,
    pub(super) access_tokens: HashMap<String, AccessToken>,
    /// Refresh tokens and the times each minted an access token (rolling window).
    pub(super) refresh_tokens: HashMap<String, VecDeque<DateTime<Utc>>>,
    pub(super) token_refreshes: u64,
    /// Credits charged in the rolling 24 hours: `(time, credits)`.
    pub(super) credits: VecDeque<(DateTime<Utc>, u64)>,
    pub(super) rate_limited: u64,
    /// Statuses queued by `fail_next`.
    pub(super) fail_queue: VecDeque<u16>,
    next_id: u64,
    seed: u64,
    counter: u64,
    last_server_ms: i64,
}

impl State {
    pub(super) fn new(opts: &ZohoSimOptions) -> State {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        let mut next_field_id = 2_000_000;
        let mut fields = BTreeMap::new();
        for module in Module::ALL {
            fields.insert(module, standard_fields(module, opts, &mut next_field_id));
        }
        let mut refresh_tokens = HashMap::new();
        refresh_tokens.insert(opts.refresh_token.clone(), VecDeque::new());
        State {
            clock_offset: chrono::Duration::zero(),
            records: Module::ALL.iter().map(|m| (*m, BTreeMap::new())).collect(),
            fields,
            pipelines: vec![standard_pipeline()],
            channels: BTreeMap::new(),
            changes: Vec::new(),
            outbox: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens,
            token_refreshes: 0,
            credits: VecDeque::new(),
            rate_limited: 0,
            fail_queue: VecDeque::new(),
            next_id: 3_000_001,
            seed: mix(nanos ^ u64::from(std::process::id()).rotate_left(32)),
            counter: 0,
            last_server_ms: 0,
        }
    }

    /// The simulated time: the real time plus every [`super::ZohoSim::advance_clock`].
    pub(super) fn now(&self) -> DateTime<Utc> {
        later(Utc::now(), self.clock_offset)
    }

    /// Now in milliseconds, strictly later than every earlier call (`server_time`).
    pub(super) fn server_ms(&mut self) -> i64 {
        let now = self.now().timestamp_millis();
        self.last_server_ms = now.max(self.last_server_ms + 1);
        self.last_server_ms
    }

    /// A new record id (one sequence for every module, like Zoho's org-wide ids).
    pub(super) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        ORG_PREFIX + self.next_id * 3
    }

    /// `n` random-looking lower-case hex digits.
    pub(super) fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| {
                self.counter += 1;
                let r = mix(self.seed ^ self.counter.rotate_left(7));
                char::from_digit((r % 16) as u32, 16).unwrap_or('0')
            })
            .collect()
    }

    pub(super) fn fields(&self, module: Module) -> &[FieldDef] {
        self.fields.get(&module).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(super) fn field(&self, module: Module, api_name: &str) -> Option<&FieldDef> {
        self.fields(module).iter().find(|f| f.api_name == api_name)
    }

    pub(super) fn records(&self, module: Module) -> &BTreeMap<u64, Record> {
        static EMPTY: BTreeMap<u64, Record> = BTreeMap::new();
        self.records.get(&module).unwrap_or(&EMPTY)
    }

    pub(super) fn records_mut(&mut self, module: Module) -> &mut BTreeMap<u64, Record> {
        self.records.entry(module).or_default()
    }

    /// The record `id` (decimal text) of `module`.
    pub(super) fn record(&self, module: Module, id: &str) -> Option<&Record> {
        id.trim()
            .parse::<u64>()
            .ok()
            .and_then(|id| self.records(module).get(&id))
    }

    pub(super) fn default_pipeline(&self) -> &Pipeline {
        self.pipelines
            .iter()
            .find(|p| p.default)
            .unwrap_or(&self.pipelines[0])
    }

    /// The pipeline named (actual or display value) or with that id.
    pub(super) fn pipeline(&self, name_or_id: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| {
            p.actual_value == name_or_id || p.display_value == name_or_id || p.id == name_or_id
        })
    }

    /// The pipeline a deal is in (its `Pipeline`, else the default one).
    pub(super) fn pipeline_of(&self, deal: &Record) -> &Pipeline {
        deal.get("Pipeline")
            .and_then(|p| p.get("id"))
            .and_then(Value::as_str)
            .and_then(|id| self.pipeline(id))
            .unwrap_or_else(|| self.default_pipeline())
    }

    /// A new stage id.
    pub(super) fn new_stage_id(&mut self) -> String {
        self.new_id().to_string()
    }

    /// Forgets channels whose expiry has passed (Zoho garbage-collects them).
    pub(super) fn collect_expired_channels(&mut self) {
        let now = self.now();
        self.channels.retain(|_, c| c.expiry > now);
    }

    /// Forgets credits older than 24 hours; returns the credits used in the window.
    pub(super) fn credits_in_window(&mut self) -> u64 {
        let cutoff = self.now() - chrono::Duration::hours(24);
        while self.credits.front().is_some_and(|(t, _)| *t <= cutoff) {
            self.credits.pop_front();
        }
        self.credits.iter().map(|(_, c)| c).sum()
    }

    /// The record JSON of every field of its module.
    pub(super) fn record_json(&self, record: &Record) -> Value {
        record.to_json_all(self.fields(record.module))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_an_offset_and_no_millis() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(iso(&t), "2024-05-01T10:00:00+00:00");
        let t = DateTime::parse_from_rfc3339("2023-12-31T09:58:09+05:30").unwrap();
        assert_eq!(iso_offset(&t), "2023-12-31T09:58:09+05:30");
    }

    #[test]
    fn watch_ops_cover_operations() {
        assert!(WatchOp::All.covers(Op::Delete));
        assert!(WatchOp::Create.covers(Op::Insert));
        assert!(!WatchOp::Create.covers(Op::Update));
        assert!(WatchOp::Edit.covers(Op::Update));
        assert_eq!(Module::parse("deals"), Some(Module::Deals));
        assert_eq!(Module::parse("Accounts"), None);
    }
}
