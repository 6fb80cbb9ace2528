//! The simulator's in-memory org: Salesforce ids, the objects and their fields, records,
//! opportunity stages, sessions, API usage, and the wire formats of values (REST JSON and the
//! outbound-message XML).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::outbound::Outbox;
use super::{API_VERSION, SalesforceSimOptions};

/// The simulated integration user: owner, creator and modifier of every record (the user of
/// the outbound-message capture in `tests/data/salesforce`).
pub(super) const USER_ID: &str = "0055w00000BhqR0AAJ";

/// The instance part of every id the simulator makes (as in the fixtures' `5w` ids).
const POD: &str = "5w";

/// The base-62 digits of Salesforce ids.
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 3-character suffix of an 18-character id: for each 5-character chunk of the 15-character
/// id, a bit per upper-case letter, read as an index into `A-Z0-5`.
pub(super) fn checksum(id15: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    id15.as_bytes()
        .chunks(5)
        .map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_uppercase())
                .fold(0usize, |n, (i, _)| n | (1 << i));
            ALPHABET[n] as char
        })
        .collect()
}

/// `id` as an 18-character id when it is a well-formed 15- or 18-character id (an 18-character
/// id must carry the right checksum).
pub(super) fn normalize_id(id: &str) -> Option<String> {
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        15 => Some(format!("{id}{}", checksum(id))),
        18 if checksum(&id[..15]) == id[15..].to_ascii_uppercase() => {
            Some(format!("{}{}", &id[..15], checksum(&id[..15])))
        }
        _ => None,
    }
}

/// An 18-character id with key prefix `prefix` and sequence number `n`.
pub(super) fn make_id(prefix: &str, mut n: u64) -> String {
    let mut digits = [b'0'; 9];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    let id15 = format!(
        "{prefix}{POD}0{}",
        std::str::from_utf8(&digits).unwrap_or("000000000")
    );
    let suffix = checksum(&id15);
    format!("{id15}{suffix}")
}

/// `2020-05-08T13:40:22.000+0000`: how REST JSON writes date-times (Salesforce keeps whole
/// seconds).
pub(super) fn rest_datetime(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S.000+0000").to_string()
}

/// `t + by`, saturating at the latest representable time.
pub(super) fn later(t: DateTime<Utc>, by: chrono::Duration) -> DateTime<Utc> {
    t.checked_add_signed(by).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The last day of `day`'s calendar quarter (the `CloseDate` lead conversion gives a new
/// opportunity: the CDC fixture converts on 2024-04-26 and closes on 2024-06-30).
pub(super) fn end_of_quarter(day: NaiveDate) -> NaiveDate {
    let last_month = (day.month0() / 3) * 3 + 3;
    let (year, next) = if last_month == 12 {
        (day.year() + 1, 1)
    } else {
        (day.year(), last_month + 1)
    };
    NaiveDate::from_ymd_opt(year, next, 1)
        .and_then(|d| d.pred_opt())
        .unwrap_or(day)
}

/// A Java `Double.toString` rendering (`45000.0`, `1.0E7`): how SOAP writes currency and
/// percent values.
pub(super) fn java_double(v: f64) -> String {
    if v == 0.0 {
        return "0.0".to_owned();
    }
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".to_owned()
        } else if v > 0.0 {
            "Infinity".to_owned()
        } else {
            "-Infinity".to_owned()
        };
    }
    let abs = v.abs();
    if (1e-3..1e7).contains(&abs) {
        let text = format!("{v}");
        if text.contains('.') {
            text
        } else {
            format!("{text}.0")
        }
    } else {
        let text = format!("{v:E}");
        match text.split_once('E') {
            Some((mantissa, exponent)) if !mantissa.contains('.') => {
                format!("{mantissa}.0E{exponent}")
            }
            _ => text,
        }
    }
}

/// splitmix64: spreads the bits of a counter.
pub(super) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The objects the REST API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum SObject {
    Lead,
    Contact,
    Opportunity,
}

impl SObject {
    pub(super) const ALL: [SObject; 3] = [SObject::Lead, SObject::Contact, SObject::Opportunity];

    /// The object from its API name (case-insensitive, as Salesforce accepts it).
    pub(super) fn parse(name: &str) -> Option<SObject> {
        SObject::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(name))
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            SObject::Lead => "Lead",
            SObject::Contact => "Contact",
            SObject::Opportunity => "Opportunity",
        }
    }

    pub(super) fn key_prefix(self) -> &'static str {
        match self {
            SObject::Lead => "00Q",
            SObject::Contact => "003",
            SObject::Opportunity => "006",
        }
    }

    /// Whether the object has the external id field (Lead and Contact).
    pub(super) fn has_external_id(self) -> bool {
        matches!(self, SObject::Lead | SObject::Contact)
    }
}

/// Key prefixes of the other ids the simulator makes.
pub(super) const ACCOUNT_PREFIX: &str = "001";
pub(super) const STAGE_PREFIX: &str = "01J";
pub(super) const ACTION_PREFIX: &str = "04k";
pub(super) const NOTIFICATION_PREFIX: &str = "04l";

/// What a reference field points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Account,
    Contact,
    Opportunity,
    User,
}

/// What a field holds and how its values are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The record id.
    Id,
    /// Text with a maximum length.
    Text(usize),
    /// Long text (cannot be filtered in SOQL).
    TextArea(usize),
    Email,
    Phone,
    /// A picklist that accepts any value (`LeadSource`, `Status`).
    Picklist,
    /// `Opportunity.StageName`: one of the org's opportunity stages.
    Stage,
    Boolean,
    Date,
    DateTime,
    Currency,
    Percent,
    /// A number (SOQL of `OpportunityStage.SortOrder`).
    Integer,
    Reference(Target),
}

impl Kind {
    /// The type name `JSON_PARSER_ERROR` messages use.
    pub(super) fn json_type(self) -> &'static str {
        match self {
            Kind::Boolean => "boolean",
            Kind::Currency | Kind::Percent => "double",
            Kind::Integer => "int",
            Kind::Date => "date",
            Kind::DateTime => "datetime",
            _ => "string",
        }
    }

    /// Text-like kinds: compared case-insensitively.
    pub(super) fn is_text(self) -> bool {
        matches!(
            self,
            Kind::Text(_)
                | Kind::TextArea(_)
                | Kind::Email
                | Kind::Phone
                | Kind::Picklist
                | Kind::Stage
        )
    }

    pub(super) fn is_id(self) -> bool {
        matches!(self, Kind::Id | Kind::Reference(_))
    }

    /// The length limit of text values.
    pub(super) fn max_len(self) -> Option<usize> {
        match self {
            Kind::Text(n) | Kind::TextArea(n) => Some(n),
            Kind::Email => Some(80),
            Kind::Phone => Some(40),
            Kind::Picklist | Kind::Stage => Some(255),
            _ => None,
        }
    }
}

/// A field of an object.
#[derive(Debug, Clone)]
pub(super) struct FieldDef {
    pub(super) name: String,
    pub(super) label: String,
    pub(super) kind: Kind,
    /// Createable and updateable through the API.
    pub(super) writable: bool,
    /// Required on create (and cannot be cleared).
    pub(super) required: bool,
}

/// The fields of `sobject`, in the order reads list them; `external_id_field` is the custom
/// text field of all three objects.
pub(super) fn object_fields(sobject: SObject, external_id_field: &str) -> Vec<FieldDef> {
    use Kind::*;
    // (name, label, kind, writable, required)
    type Spec = (&'static str, &'static str, Kind, bool, bool);
    let head: &[Spec] = &[
        ("Id", "Record ID", Id, false, false),
        ("IsDeleted", "Deleted", Boolean, false, false),
    ];
    let specific: &[Spec] = match sobject {
        SObject::Lead => &[
            ("LastName", "Last Name", Text(80), true, true),
            ("FirstName", "First Name", Text(40), true, false),
            ("Name", "Full Name", Text(121), false, false),
            ("Title", "Title", Text(128), true, false),
            ("Company", "Company", Text(255), true, true),
            ("Phone", "Phone", Phone, true, false),
            ("Email", "Email", Email, true, false),
            ("Description", "Description", TextArea(32000), true, false),
            ("LeadSource", "Lead Source", Picklist, true, false),
            ("Status", "Status", Picklist, true, false),
            ("OwnerId", "Owner ID", Reference(Target::User), true, false),
            ("IsConverted", "Converted", Boolean, false, false),
            ("ConvertedDate", "Converted Date", Date, false, false),
            (
                "ConvertedAccountId",
                "Converted Account ID",
                Reference(Target::Account),
                false,
                false,
            ),
            (
                "ConvertedContactId",
                "Converted Contact ID",
                Reference(Target::Contact),
                false,
                false,
            ),
            (
                "ConvertedOpportunityId",
                "Converted Opportunity ID",
                Reference(Target::Opportunity),
                false,
                false,
            ),
        ],
        SObject::Contact => &[
            (
                "AccountId",
                "Account ID",
                Reference(Target::Account),
                true,
                false,
            ),
            ("LastName", "Last Name", Text(80), true, true),
            ("FirstName", "First Name", Text(40), true, false),
            ("Name", "Full Name", Text(121), false, false),
            ("Title", "Title", Text(128), true, false),
            ("Phone", "Business Phone", Phone, true, false),
            ("Email", "Email", Email, true, false),
            (
                "Description",
                "Contact Description",
                TextArea(32000),
                true,
                false,
            ),
            ("LeadSource", "Lead Source", Picklist, true, false),
            ("OwnerId", "Owner ID", Reference(Target::User), true, false),
        ],
        SObject::Opportunity => &[
            (
                "AccountId",
                "Account ID",
                Reference(Target::Account),
                true,
                false,
            ),
            (
                "ContactId",
                "Contact ID",
                Reference(Target::Contact),
                true,
                false,
            ),
            ("Name", "Name", Text(120), true, true),
            ("Description", "Description", TextArea(32000), true, false),
            ("StageName", "Stage", Stage, true, true),
            ("Amount", "Amount", Currency, true, false),
            ("Probability", "Probability (%)", Percent, true, false),
            ("CloseDate", "Close Date", Date, true, true),
            ("LeadSource", "Lead Source", Picklist, true, false),
            ("IsClosed", "Closed", Boolean, false, false),
            ("IsWon", "Won", Boolean, false, false),
            (
                "ForecastCategory",
                "Forecast Category",
                Picklist,
                false,
                false,
            ),
            (
                "ForecastCategoryName",
                "Forecast Category",
                Picklist,
                false,
                false,
            ),
            ("OwnerId", "Owner ID", Reference(Target::User), true, false),
        ],
    };
    let tail: &[Spec] = &[
        ("CreatedDate", "Created Date", DateTime, false, false),
        (
            "CreatedById",
            "Created By ID",
            Reference(Target::User),
            false,
            false,
        ),
        (
            "LastModifiedDate",
            "Last Modified Date",
            DateTime,
            false,
            false,
        ),
        (
            "LastModifiedById",
            "Last Modified By ID",
            Reference(Target::User),
            false,
            false,
        ),
        ("SystemModstamp", "System Modstamp", DateTime, false, false),
    ];
    let mut fields: Vec<FieldDef> = head
        .iter()
        .chain(specific)
        .chain(tail)
        .map(|(name, label, kind, writable, required)| FieldDef {
            name: (*name).to_owned(),
            label: (*label).to_owned(),
            kind: *kind,
            writable: *writable,
            required: *required,
        })
        .collect();
    fields.push(FieldDef {
        name: external_id_field.to_owned(),
        label: external_id_field.trim_end_matches("__c").replace('_', " "),
        kind: Text(255),
        writable: true,
        required: false,
    });
    fields
}

/// An opportunity stage (`OpportunityStage`).
#[derive(Debug, Clone)]
pub(super) struct Stage {
    pub(super) id: String,
    pub(super) label: String,
    pub(super) is_closed: bool,
    pub(super) is_won: bool,
    pub(super) probability: f64,
    /// `Pipeline`, `Closed` or `Omitted`.
    pub(super) forecast_category: &'static str,
    pub(super) sort_order: i64,
}

impl Stage {
    /// The row SOQL reads of `OpportunityStage`.
    pub(super) fn row(&self) -> Map<String, Value> {
        let mut row = Map::new();
        row.insert("Id".into(), json!(self.id));
        row.insert("MasterLabel".into(), json!(self.label));
        row.insert("ApiName".into(), json!(self.label));
        row.insert("IsActive".into(), json!(true));
        row.insert("IsClosed".into(), json!(self.is_closed));
        row.insert("IsWon".into(), json!(self.is_won));
        row.insert("DefaultProbability".into(), json!(self.probability));
        row.insert("ForecastCategory".into(), json!(self.forecast_category));
        row.insert("ForecastCategoryName".into(), json!(self.forecast_category));
        row.insert("SortOrder".into(), json!(self.sort_order));
        row
    }
}

/// The fields of `OpportunityStage` SOQL may read.
pub(super) fn stage_fields() -> Vec<(String, Kind)> {
    [
        ("Id", Kind::Id),
        ("MasterLabel", Kind::Text(255)),
        ("ApiName", Kind::Text(255)),
        ("IsActive", Kind::Boolean),
        ("IsClosed", Kind::Boolean),
        ("IsWon", Kind::Boolean),
        ("DefaultProbability", Kind::Percent),
        ("ForecastCategory", Kind::Picklist),
        ("ForecastCategoryName", Kind::Picklist),
        ("SortOrder", Kind::Integer),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_owned(), k))
    .collect()
}

/// Salesforce's default stages: label, closed, won, default probability.
const DEFAULT_STAGES: &[(&str, bool, bool, f64)] = &[
    ("Prospecting", false, false, 10.0),
    ("Qualification", false, false, 10.0),
    ("Needs Analysis", false, false, 20.0),
    ("Value Proposition", false, false, 50.0),
    ("Id. Decision Makers", false, false, 60.0),
    ("Perception Analysis", false, false, 70.0),
    ("Proposal/Price Quote", false, false, 75.0),
    ("Negotiation/Review", false, false, 90.0),
    ("Closed Won", true, true, 100.0),
    ("Closed Lost", true, false, 0.0),
];

/// The forecast category a stage gets: won stages `Closed`, lost ones `Omitted`, open ones
/// `Pipeline`.
pub(super) fn forecast_category(is_closed: bool, is_won: bool) -> &'static str {
    match (is_closed, is_won) {
        (_, true) => "Closed",
        (true, false) => "Omitted",
        (false, false) => "Pipeline",
    }
}

/// A record of one of the objects.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) id: String,
    pub(super) sobject: SObject,
    /// Stored field values (never null), REST JSON shapes: dates `YYYY-MM-DD`, numbers as
    /// doubles, ids 18 characters.
    pub(super) values: BTreeMap<String, Value>,
    pub(super) created: DateTime<Utc>,
    pub(super) modified: DateTime<Utc>,
}

impl Record {
    /// A string value of `field` ("" when unset).
    pub(super) fn text(&self, field: &str) -> &str {
        self.values.get(field).and_then(Value::as_str).unwrap_or("")
    }

    pub(super) fn is_converted(&self) -> bool {
        self.values.get("IsConverted") == Some(&Value::Bool(true))
    }
}

/// An access token the token endpoint issued (or the session of outbound messages).
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) issued_at: DateTime<Utc>,
}

/// Everything the simulator knows.
#[derive(Debug)]
pub(super) struct State {
    /// How far the simulated clock is ahead of the real one.
    pub(super) clock_offset: chrono::Duration,
    pub(super) fields: BTreeMap<SObject, Vec<FieldDef>>,
    pub(super) records: BTreeMap<SObject, Vec<Record>>,
    /// Accounts made by lead conversions: id and name.
    pub(super) accounts: Vec<(String, String)>,
    pub(super) stages: Vec<Stage>,
    pub(super) sessions: HashMap<String, Session>,
    pub(super) refresh_tokens: HashSet<String>,
    pub(super) token_requests: u64,
    /// Times of the API calls of the rolling 24 hours.
    pub(super) api_calls: VecDeque<DateTime<Utc>>,
    /// Statuses queued by `fail_next`.
    pub(super) fail_queue: VecDeque<u16>,
    pub(super) outbox: Outbox,
    counters: HashMap<&'static str, u64>,
    seed: u64,
    counter: u64,
}

impl State {
    pub(super) fn new(opts: &SalesforceSimOptions) -> State {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        let mut state = State {
            clock_offset: chrono::Duration::zero(),
            fields: SObject::ALL
                .iter()
                .map(|o| (*o, object_fields(*o, &opts.external_id_field)))
                .collect(),
            records: SObject::ALL.iter().map(|o| (*o, Vec::new())).collect(),
            accounts: Vec::new(),
            stages: Vec::new(),
            sessions: HashMap::new(),
            refresh_tokens: std::iter::once(opts.refresh_token.clone()).collect(),
            token_requests: 0,
            api_calls: VecDeque::new(),
            fail_queue: VecDeque::new(),
            outbox: Outbox::default(),
            counters: HashMap::new(),
            seed: mix(nanos ^ u64::from(std::process::id()).rotate_left(32)),
            counter: 0,
        };
        for (label, closed, won, probability) in DEFAULT_STAGES {
            state.add_stage(label, *closed, *won, *probability);
        }
        state
    }

    /// The simulated time: the real time plus every `advance_clock`.
    pub(super) fn now(&self) -> DateTime<Utc> {
        later(Utc::now(), self.clock_offset)
    }

    /// A new id with key prefix `prefix` (one sequence per prefix).
    pub(super) fn new_id(&mut self, prefix: &'static str) -> String {
        let n = self.counters.entry(prefix).or_insert(0x1F_3A00);
        *n += 1;
        make_id(prefix, *n)
    }

    /// `n` random-looking characters of `alphabet`.
    pub(super) fn random(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n)
            .map(|_| {
                self.counter += 1;
                let r = mix(self.seed ^ self.counter.rotate_left(7));
                alphabet[(r % alphabet.len() as u64) as usize] as char
            })
            .collect()
    }

    pub(super) fn fields(&self, sobject: SObject) -> &[FieldDef] {
        self.fields.get(&sobject).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The field named `name` (case-insensitive) of `sobject`.
    pub(super) fn field(&self, sobject: SObject, name: &str) -> Option<&FieldDef> {
        self.fields(sobject)
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    pub(super) fn records(&self, sobject: SObject) -> &[Record] {
        self.records.get(&sobject).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(super) fn records_mut(&mut self, sobject: SObject) -> &mut Vec<Record> {
        self.records.entry(sobject).or_default()
    }

    /// The record `id` (15 or 18 characters) of `sobject`.
    pub(super) fn record(&self, sobject: SObject, id: &str) -> Option<&Record> {
        let id = normalize_id(id)?;
        self.records(sobject).iter().find(|r| r.id == id)
    }

    pub(super) fn record_mut(&mut self, sobject: SObject, id: &str) -> Option<&mut Record> {
        let id = normalize_id(id)?;
        self.records_mut(sobject).iter_mut().find(|r| r.id == id)
    }

    /// Whether a record of the kind `target` with this id exists.
    pub(super) fn exists(&self, target: Target, id: &str) -> bool {
        let Some(id) = normalize_id(id) else {
            return false;
        };
        match target {
            Target::Account => self.accounts.iter().any(|(a, _)| *a == id),
            Target::Contact => self.record(SObject::Contact, &id).is_some(),
            Target::Opportunity => self.record(SObject::Opportunity, &id).is_some(),
            Target::User => id == USER_ID,
        }
    }

    /// The stage labelled `label` (exactly, as the picklist API value).
    pub(super) fn stage(&self, label: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.label == label)
    }

    /// Adds a stage definition (labels are unique).
    pub(super) fn add_stage(
        &mut self,
        label: &str,
        is_closed: bool,
        is_won: bool,
        probability: f64,
    ) {
        let id = self.new_id(STAGE_PREFIX);
        let sort_order = self.stages.len() as i64 + 1;
        self.stages.push(Stage {
            id,
            label: label.to_owned(),
            is_closed,
            is_won,
            probability,
            forecast_category: forecast_category(is_closed, is_won),
            sort_order,
        });
    }

    /// The value of `field` of `record` as REST shows it (computed fields included; `null`
    /// when unset).
    pub(super) fn field_value(&self, record: &Record, field: &str) -> Value {
        let stage = || {
            record
                .values
                .get("StageName")
                .and_then(Value::as_str)
                .and_then(|s| self.stage(s))
        };
        match field {
            "Id" => json!(record.id),
            "IsDeleted" => json!(false),
            "OwnerId" | "CreatedById" | "LastModifiedById" => json!(USER_ID),
            "CreatedDate" => json!(rest_datetime(&record.created)),
            "LastModifiedDate" | "SystemModstamp" => json!(rest_datetime(&record.modified)),
            "Name" if record.sobject != SObject::Opportunity => {
                let first = record.text("FirstName");
                let last = record.text("LastName");
                json!(if first.is_empty() {
                    last.to_owned()
                } else {
                    format!("{first} {last}")
                })
            }
            "IsConverted" => json!(record.is_converted()),
            "IsClosed" => json!(stage().is_some_and(|s| s.is_closed)),
            "IsWon" => json!(stage().is_some_and(|s| s.is_won)),
            "ForecastCategory" | "ForecastCategoryName" => {
                stage().map_or(Value::Null, |s| json!(s.forecast_category))
            }
            _ => record.values.get(field).cloned().unwrap_or(Value::Null),
        }
    }

    /// `/services/data/v62.0/sobjects/{Object}/{id}`.
    pub(super) fn record_url(sobject: &str, id: &str) -> String {
        format!("/services/data/v{API_VERSION}/sobjects/{sobject}/{id}")
    }

    /// The record as `GET /sobjects/{Object}/{id}` answers it: `attributes` and every field,
    /// or only `fields` (canonical names) when given.
    pub(super) fn record_json(&self, record: &Record, fields: Option<&[String]>) -> Value {
        let mut out = Map::new();
        out.insert(
            "attributes".to_owned(),
            json!({
                "type": record.sobject.name(),
                "url": State::record_url(record.sobject.name(), &record.id),
            }),
        );
        match fields {
            Some(names) => {
                for name in names {
                    out.insert(name.clone(), self.field_value(record, name));
                }
            }
            None => {
                for field in self.fields(record.sobject) {
                    out.insert(field.name.clone(), self.field_value(record, &field.name));
                }
            }
        }
        Value::Object(out)
    }

    /// The rows SOQL reads of `sobject`: every field by canonical name.
    pub(super) fn rows(&self, sobject: SObject) -> Vec<Map<String, Value>> {
        self.records(sobject)
            .iter()
            .map(|r| {
                self.fields(sobject)
                    .iter()
                    .map(|f| (f.name.clone(), self.field_value(r, &f.name)))
                    .collect()
            })
            .collect()
    }

    /// Forgets API calls older than 24 hours; returns the calls of the window.
    pub(super) fn api_usage(&mut self) -> u64 {
        let cutoff = self.now() - chrono::Duration::hours(24);
        while self.api_calls.front().is_some_and(|t| *t <= cutoff) {
            self.api_calls.pop_front();
        }
        self.api_calls.len() as u64
    }

    /// Issues a new session (access token) for the integration user.
    pub(super) fn issue_session(&mut self, org15: &str) -> String {
        const TOKEN_CHARS: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
        let token = format!("{org15}!AQ{}", self.random(96, TOKEN_CHARS));
        let issued_at = self.now();
        self.sessions.insert(token.clone(), Session { issued_at });
        token
    }

    /// Whether `token` is a session that has not expired.
    pub(super) fn session_valid(&self, token: &str, lifetime: std::time::Duration) -> bool {
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
        self.sessions
            .get(token)
            .is_some_and(|s| self.now() < later(s.issued_at, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_real_ids() {
        for id in [
            "0065w000023STAmAAO",
            "0015w00002BFDeLAAX",
            "0035w000035gg9GAAQ",
            "0055w00000BhqR0AAJ",
            "00D5w000004qGTOEA2",
            "04k5w000000TSwMAAW",
            "04l5w00005286hAAAQ",
            "00Q5f000005bwLFEAY",
            "0065f00000UloqVAAR",
        ] {
            assert_eq!(checksum(&id[..15]), &id[15..], "{id}");
            assert_eq!(normalize_id(&id[..15]).as_deref(), Some(id));
            assert_eq!(normalize_id(id).as_deref(), Some(id));
        }
        assert_eq!(normalize_id("0065w000023STAmAAA"), None);
        assert_eq!(normalize_id("not-an-id"), None);
        let id = make_id("00Q", 12345);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("00Q5w0"));
        assert_eq!(normalize_id(&id).as_deref(), Some(id.as_str()));
    }

    #[test]
    fn values_are_written_as_salesforce_does() {
        assert_eq!(java_double(45000.0), "45000.0");
        assert_eq!(java_double(80.0), "80.0");
        assert_eq!(java_double(0.5), "0.5");
        assert_eq!(java_double(12_500_000.0), "1.25E7");
        assert_eq!(java_double(10_000_000.0), "1.0E7");
        assert_eq!(java_double(0.0001), "1.0E-4");
        assert_eq!(java_double(0.0), "0.0");
        let t = DateTime::parse_from_rfc3339("2020-05-08T13:40:22Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rest_datetime(&t), "2020-05-08T13:40:22.000+0000");
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(end_of_quarter(day("2024-04-26")), day("2024-06-30"));
        assert_eq!(end_of_quarter(day("2024-12-01")), day("2024-12-31"));
        assert_eq!(end_of_quarter(day("2024-01-01")), day("2024-03-31"));
    }
}
