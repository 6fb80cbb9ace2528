//! The simulator's in-memory records (contacts, deals, properties, pipelines, associations,
//! OAuth tokens) and their wire shapes (CRM v3 JSON).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::events::Event;
use super::{HubSpotSimOptions, OutgoingBatch};

/// `2024-05-01T10:00:00.123Z`: how CRM v3 writes times (`createdAt`, `createdate`, ...).
pub(super) fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The time of `ms` milliseconds since the epoch (the epoch itself when out of range).
pub(super) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// splitmix64: spreads the bits of a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `referral_code` → `Referral Code` (the label the UI proposes for an internal name).
pub(super) fn label_of(name: &str) -> String {
    name.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `0.2` → `"0.2"`, `1.0` → `"1.0"` (HubSpot's stage probability strings).
pub(super) fn probability_string(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.1}")
    } else {
        format!("{p}")
    }
}

/// The CRM object types the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ObjectType {
    Contact,
    Deal,
}

impl ObjectType {
    /// The type from a path segment: the plural name (`contacts`, `deals`) or the type id
    /// (`0-1`, `0-3`); with `singular`, also `contact` / `deal` (associations and webhooks).
    pub(super) fn parse(segment: &str, singular: bool) -> Option<ObjectType> {
        match segment.to_ascii_lowercase().as_str() {
            "contacts" | "0-1" => Some(ObjectType::Contact),
            "deals" | "0-3" => Some(ObjectType::Deal),
            "contact" if singular => Some(ObjectType::Contact),
            "deal" if singular => Some(ObjectType::Deal),
            _ => None,
        }
    }

    /// `contacts` / `deals`.
    pub(super) fn plural(self) -> &'static str {
        match self {
            ObjectType::Contact => "contacts",
            ObjectType::Deal => "deals",
        }
    }

    /// `contact` / `deal` (webhook subscription types).
    pub(super) fn singular(self) -> &'static str {
        match self {
            ObjectType::Contact => "contact",
            ObjectType::Deal => "deal",
        }
    }

    /// `CONTACT` / `DEAL` (error messages).
    pub(super) fn upper(self) -> &'static str {
        match self {
            ObjectType::Contact => "CONTACT",
            ObjectType::Deal => "DEAL",
        }
    }

    /// The property holding the last-modified time.
    pub(super) fn modified_property(self) -> &'static str {
        match self {
            ObjectType::Contact => "lastmodifieddate",
            ObjectType::Deal => "hs_lastmodifieddate",
        }
    }

    /// Properties `GET` returns when the request names none.
    pub(super) fn default_properties(self) -> &'static [&'static str] {
        match self {
            ObjectType::Contact => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
            ObjectType::Deal => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
        }
    }

    /// Properties returned whatever the request names.
    pub(super) fn always_properties(self) -> [&'static str; 3] {
        ["createdate", "hs_object_id", self.modified_property()]
    }

    /// The association type name from this type to the other (`contact_to_deal`).
    pub(super) fn association_to_other(self) -> &'static str {
        match self {
            ObjectType::Contact => "contact_to_deal",
            ObjectType::Deal => "deal_to_contact",
        }
    }

    /// The HubSpot-defined association type id from this type to the other (contact→deal 4,
    /// deal→contact 3).
    pub(super) fn association_type_id(self) -> i64 {
        match self {
            ObjectType::Contact => 4,
            ObjectType::Deal => 3,
        }
    }

    pub(super) fn other(self) -> ObjectType {
        match self {
            ObjectType::Contact => ObjectType::Deal,
            ObjectType::Deal => ObjectType::Contact,
        }
    }
}

/// A property definition (`/crm/v3/properties/{objectType}`).
#[derive(Debug, Clone)]
pub(super) struct PropertyDef {
    pub(super) name: String,
    pub(super) label: String,
    /// `string`, `number`, `enumeration`, `datetime`, `date`, `bool`, `phone_number`.
    pub(super) type_: String,
    pub(super) field_type: String,
    pub(super) group_name: String,
    pub(super) description: String,
    pub(super) has_unique_value: bool,
    pub(super) hubspot_defined: bool,
    pub(super) calculated: bool,
    /// The value cannot be written through the API (ids, modification times, calculated).
    pub(super) read_only_value: bool,
    /// `(label, value)` of an enumeration (not used for `dealstage` / `pipeline`, whose options
    /// are the pipelines).
    pub(super) options: Vec<(String, String)>,
    pub(super) display_order: i64,
    pub(super) form_field: bool,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

impl PropertyDef {
    #[allow(clippy::too_many_arguments)]
    fn standard(
        name: &str,
        label: &str,
        type_: &str,
        field_type: &str,
        group: &str,
        read_only: bool,
        calculated: bool,
        options: &[(&str, &str)],
    ) -> PropertyDef {
        PropertyDef {
            name: name.to_owned(),
            label: label.to_owned(),
            type_: type_.to_owned(),
            field_type: field_type.to_owned(),
            group_name: group.to_owned(),
            description: String::new(),
            has_unique_value: false,
            hubspot_defined: true,
            calculated,
            read_only_value: read_only,
            options: options
                .iter()
                .map(|(l, v)| ((*l).to_owned(), (*v).to_owned()))
                .collect(),
            display_order: -1,
            form_field: !read_only,
            created_at: DateTime::<Utc>::default(),
            updated_at: DateTime::<Utc>::default(),
        }
    }

    /// A custom single-line text property, as created in the UI.
    pub(super) fn custom_text(
        ty: ObjectType,
        name: &str,
        unique: bool,
        at: DateTime<Utc>,
    ) -> PropertyDef {
        PropertyDef {
            name: name.to_owned(),
            label: label_of(name),
            type_: "string".to_owned(),
            field_type: "text".to_owned(),
            group_name: default_group(ty).to_owned(),
            description: String::new(),
            has_unique_value: unique,
            hubspot_defined: false,
            calculated: false,
            read_only_value: false,
            options: Vec::new(),
            display_order: -1,
            form_field: true,
            created_at: at,
            updated_at: at,
        }
    }
}

/// The group custom properties go to by default.
pub(super) fn default_group(ty: ObjectType) -> &'static str {
    match ty {
        ObjectType::Contact => "contactinformation",
        ObjectType::Deal => "dealinformation",
    }
}

const LIFECYCLE_STAGES: &[(&str, &str)] = &[
    ("Subscriber", "subscriber"),
    ("Lead", "lead"),
    ("Marketing Qualified Lead", "marketingqualifiedlead"),
    ("Sales Qualified Lead", "salesqualifiedlead"),
    ("Opportunity", "opportunity"),
    ("Customer", "customer"),
    ("Evangelist", "evangelist"),
    ("Other", "other"),
];

const BOOL_OPTIONS: &[(&str, &str)] = &[("True", "true"), ("False", "false")];

fn standard_contact_properties() -> Vec<PropertyDef> {
    let g = "contactinformation";
    vec![
        PropertyDef::standard("email", "Email", "string", "text", g, false, false, &[]),
        PropertyDef::standard(
            "firstname",
            "First Name",
            "string",
            "text",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "lastname",
            "Last Name",
            "string",
            "text",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "phone",
            "Phone Number",
            "string",
            "phonenumber",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "company",
            "Company Name",
            "string",
            "text",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "website",
            "Website URL",
            "string",
            "text",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            g,
            false,
            false,
            LIFECYCLE_STAGES,
        ),
        PropertyDef::standard(
            "hs_object_id",
            "Record ID",
            "number",
            "number",
            g,
            true,
            false,
            &[],
        ),
        PropertyDef::standard(
            "createdate",
            "Create Date",
            "datetime",
            "date",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "lastmodifieddate",
            "Last Modified Date",
            "datetime",
            "date",
            g,
            true,
            false,
            &[],
        ),
    ]
}

fn standard_deal_properties() -> Vec<PropertyDef> {
    let g = "dealinformation";
    vec![
        PropertyDef::standard(
            "dealname",
            "Deal Name",
            "string",
            "text",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "dealstage",
            "Deal Stage",
            "enumeration",
            "radio",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "pipeline",
            "Pipeline",
            "enumeration",
            "select",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard("amount", "Amount", "number", "number", g, false, false, &[]),
        PropertyDef::standard(
            "closedate",
            "Close Date",
            "datetime",
            "date",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "createdate",
            "Create Date",
            "datetime",
            "date",
            g,
            false,
            false,
            &[],
        ),
        PropertyDef::standard(
            "hs_lastmodifieddate",
            "Last Modified Date",
            "datetime",
            "date",
            g,
            true,
            false,
            &[],
        ),
        PropertyDef::standard(
            "hs_object_id",
            "Record ID",
            "number",
            "number",
            g,
            true,
            false,
            &[],
        ),
        PropertyDef::standard(
            "hs_is_closed_won",
            "Is Closed Won",
            "bool",
            "booleancheckbox",
            g,
            true,
            true,
            BOOL_OPTIONS,
        ),
        PropertyDef::standard(
            "hs_is_closed",
            "Is Deal Closed?",
            "bool",
            "booleancheckbox",
            g,
            true,
            true,
            BOOL_OPTIONS,
        ),
    ]
}

/// One past value of a property (`propertiesWithHistory`).
#[derive(Debug, Clone)]
pub(super) struct HistoryEntry {
    pub(super) value: String,
    pub(super) timestamp: DateTime<Utc>,
    /// `API`, `CRM_UI` (who wrote it).
    pub(super) source_type: &'static str,
}

/// A contact or a deal.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) id: u64,
    /// Set properties (never empty strings: clearing removes the key).
    pub(super) props: BTreeMap<String, String>,
    /// Every value each property had, newest first ("" = cleared).
    pub(super) history: BTreeMap<String, Vec<HistoryEntry>>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

impl Record {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.props.get(name).map(String::as_str)
    }

    fn base_json(&self, properties: Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("id".to_owned(), json!(self.id.to_string()));
        out.insert("properties".to_owned(), Value::Object(properties));
        out.insert("createdAt".to_owned(), json!(iso(&self.created_at)));
        out.insert("updatedAt".to_owned(), json!(iso(&self.updated_at)));
        out.insert("archived".to_owned(), json!(false));
        out
    }

    /// The shape of create / update / upsert answers: every set property.
    pub(super) fn to_json_all(&self) -> Value {
        let properties = self
            .props
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        Value::Object(self.base_json(properties))
    }

    /// The shape of reads: the requested `properties` (null when not set) plus the three
    /// always-returned ones, and `propertiesWithHistory` for `history` (only names that exist).
    pub(super) fn to_json(
        &self,
        ty: ObjectType,
        properties: &[String],
        history: &[String],
    ) -> Value {
        let mut props = Map::new();
        for name in properties
            .iter()
            .map(String::as_str)
            .chain(ty.always_properties())
        {
            props.insert(
                name.to_owned(),
                self.get(name).map_or(Value::Null, |v| json!(v)),
            );
        }
        let mut out = self.base_json(props);
        if !history.is_empty() {
            let mut with_history = Map::new();
            for name in history {
                let entries: Vec<Value> = self
                    .history
                    .get(name)
                    .map(|list| {
                        list.iter()
                            .map(|h| {
                                json!({
                                    "value": h.value,
                                    "timestamp": iso(&h.timestamp),
                                    "sourceType": h.source_type,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                with_history.insert(name.clone(), Value::Array(entries));
            }
            out.insert(
                "propertiesWithHistory".to_owned(),
                Value::Object(with_history),
            );
        }
        Value::Object(out)
    }
}

/// A deal stage.
#[derive(Debug, Clone)]
pub(super) struct Stage {
    pub(super) id: String,
    pub(super) label: String,
    pub(super) display_order: i64,
    pub(super) closed: bool,
    pub(super) probability: f64,
    pub(super) created_at: DateTime<Utc>,
}

impl Stage {
    pub(super) fn is_closed_won(&self) -> bool {
        self.closed && self.probability >= 1.0
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "displayOrder": self.display_order,
            "metadata": {
                "isClosed": if self.closed { "true" } else { "false" },
                "probability": probability_string(self.probability),
            },
            "id": self.id,
            "createdAt": iso(&self.created_at),
            "updatedAt": iso(&self.created_at),
            "archived": false,
            "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
        })
    }
}

/// A deal pipeline.
#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    pub(super) id: String,
    pub(super) label: String,
    pub(super) display_order: i64,
    pub(super) created_at: DateTime<Utc>,
    pub(super) stages: Vec<Stage>,
}

impl Pipeline {
    pub(super) fn stage(&self, id: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "displayOrder": self.display_order,
            "id": self.id,
            "stages": self.stages.iter().map(Stage::to_json).collect::<Vec<_>>(),
            "createdAt": iso(&self.created_at),
            "updatedAt": iso(&self.created_at),
            "archived": false,
        })
    }
}

fn default_pipeline() -> Pipeline {
    let stages: &[(&str, &str, bool, f64)] = &[
        ("appointmentscheduled", "Appointment Scheduled", false, 0.2),
        ("qualifiedtobuy", "Qualified To Buy", false, 0.4),
        (
            "presentationscheduled",
            "Presentation Scheduled",
            false,
            0.6,
        ),
        (
            "decisionmakerboughtin",
            "Decision Maker Bought-In",
            false,
            0.8,
        ),
        ("contractsent", "Contract Sent", false, 0.9),
        ("closedwon", "Closed Won", true, 1.0),
        ("closedlost", "Closed Lost", true, 0.0),
    ];
    // Default pipelines and their stages have createdAt = 0 (pipelines API docs).
    let epoch = DateTime::<Utc>::default();
    Pipeline {
        id: "default".to_owned(),
        label: "Sales Pipeline".to_owned(),
        display_order: 0,
        created_at: epoch,
        stages: stages
            .iter()
            .enumerate()
            .map(|(i, (id, label, closed, probability))| Stage {
                id: (*id).to_owned(),
                label: (*label).to_owned(),
                display_order: i as i64,
                closed: *closed,
                probability: *probability,
                created_at: epoch,
            })
            .collect(),
    }
}

/// A webhook subscription of the app.
#[derive(Debug, Clone)]
pub(super) struct Subscription {
    pub(super) id: u64,
    /// `contact.creation`, `deal.propertyChange`, ...
    pub(super) event_type: String,
    /// For `propertyChange`: the property; `None` matches every property.
    pub(super) property: Option<String>,
}

/// An OAuth access token issued by `/oauth/v1/token`.
#[derive(Debug, Clone)]
pub(super) struct AccessToken {
    pub(super) expires_at: Instant,
}

/// Everything the simulator knows.
#[derive(Debug)]
pub(super) struct State {
    pub(super) contacts: BTreeMap<u64, Record>,
    pub(super) deals: BTreeMap<u64, Record>,
    pub(super) contact_props: BTreeMap<String, PropertyDef>,
    pub(super) deal_props: BTreeMap<String, PropertyDef>,
    /// `(deal id, contact id)`.
    pub(super) associations: BTreeSet<(u64, u64)>,
    pub(super) pipelines: Vec<Pipeline>,
    pub(super) subscriptions: Vec<Subscription>,
    pub(super) target_url: Option<String>,
    /// Recorded, not yet taken webhook events.
    pub(super) pending: Vec<Event>,
    /// Batches whose delivery failed, waiting for [`super::HubSpotSim::redeliver_failed`].
    pub(super) failed: Vec<OutgoingBatch>,
    pub(super) access_tokens: BTreeMap<String, AccessToken>,
    pub(super) refresh_tokens: BTreeSet<String>,
    pub(super) oauth_refreshes: u64,
    /// Arrival times of the requests counted in the rolling window.
    pub(super) recent: VecDeque<Instant>,
    pub(super) rate_limit_violations: u64,
    /// Statuses queued by `fail_next`.
    pub(super) fail_queue: VecDeque<u16>,
    next_contact_id: u64,
    next_deal_id: u64,
    next_pipeline_id: u64,
    next_event_id: u64,
    last_ms: i64,
    uuid_seed: u64,
    uuid_counter: u64,
}

impl State {
    pub(super) fn new(opts: &HubSpotSimOptions) -> State {
        let now = Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or_default() as u64;
        let mut state = State {
            contacts: BTreeMap::new(),
            deals: BTreeMap::new(),
            contact_props: BTreeMap::new(),
            deal_props: BTreeMap::new(),
            associations: BTreeSet::new(),
            pipelines: vec![default_pipeline()],
            subscriptions: opts
                .subscriptions
                .iter()
                .enumerate()
                .map(|(i, (event_type, property))| Subscription {
                    id: 1_940_001 + i as u64,
                    event_type: event_type.clone(),
                    property: property.clone(),
                })
                .collect(),
            target_url: opts.target_url.clone(),
            pending: Vec::new(),
            failed: Vec::new(),
            access_tokens: BTreeMap::new(),
            refresh_tokens: BTreeSet::new(),
            oauth_refreshes: 0,
            recent: VecDeque::new(),
            rate_limit_violations: 0,
            fail_queue: VecDeque::new(),
            next_contact_id: 1_001,
            next_deal_id: 5_000_001,
            next_pipeline_id: 75_000_001,
            next_event_id: 3_816_279_001,
            last_ms: 0,
            uuid_seed: mix(nanos ^ u64::from(std::process::id()).rotate_left(32)),
            uuid_counter: 0,
        };
        for def in standard_contact_properties() {
            state.contact_props.insert(def.name.clone(), def);
        }
        for def in standard_deal_properties() {
            state.deal_props.insert(def.name.clone(), def);
        }
        for name in &opts.custom_contact_properties {
            let def = PropertyDef::custom_text(ObjectType::Contact, name, false, now);
            state.contact_props.entry(name.clone()).or_insert(def);
        }
        for name in &opts.custom_deal_properties {
            let def = PropertyDef::custom_text(ObjectType::Deal, name, false, now);
            state.deal_props.entry(name.clone()).or_insert(def);
        }
        state
    }

    /// A fresh, v4-shaped UUID (no randomness source needed: a seeded counter).
    pub(super) fn uuid(&mut self) -> String {
        self.uuid_counter += 1;
        let a = mix(self.uuid_seed ^ self.uuid_counter);
        let b = mix(a ^ self.uuid_counter.rotate_left(17));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// `n` random-looking characters from `[A-Za-z0-9]`.
    pub(super) fn token_chars(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| {
                self.uuid_counter += 1;
                let r = mix(self.uuid_seed ^ self.uuid_counter.rotate_left(7));
                ALPHABET[(r % ALPHABET.len() as u64) as usize] as char
            })
            .collect()
    }

    /// Now in whole milliseconds, strictly later than every earlier tick: object times and
    /// `occurredAt` of events never repeat, so ordering tests are meaningful.
    pub(super) fn tick(&mut self) -> DateTime<Utc> {
        let now = Utc::now().timestamp_millis();
        self.last_ms = now.max(self.last_ms + 1);
        from_ms(self.last_ms)
    }

    /// A new event id (one per change: the events of one change share it).
    pub(super) fn event_id(&mut self) -> u64 {
        self.next_event_id += 1;
        self.next_event_id
    }

    pub(super) fn new_record_id(&mut self, ty: ObjectType) -> u64 {
        let counter = match ty {
            ObjectType::Contact => &mut self.next_contact_id,
            ObjectType::Deal => &mut self.next_deal_id,
        };
        let id = *counter;
        *counter += 1;
        id
    }

    pub(super) fn new_pipeline_id(&mut self) -> String {
        let id = self.next_pipeline_id;
        self.next_pipeline_id += 1;
        id.to_string()
    }

    pub(super) fn records(&self, ty: ObjectType) -> &BTreeMap<u64, Record> {
        match ty {
            ObjectType::Contact => &self.contacts,
            ObjectType::Deal => &self.deals,
        }
    }

    pub(super) fn records_mut(&mut self, ty: ObjectType) -> &mut BTreeMap<u64, Record> {
        match ty {
            ObjectType::Contact => &mut self.contacts,
            ObjectType::Deal => &mut self.deals,
        }
    }

    pub(super) fn props(&self, ty: ObjectType) -> &BTreeMap<String, PropertyDef> {
        match ty {
            ObjectType::Contact => &self.contact_props,
            ObjectType::Deal => &self.deal_props,
        }
    }

    pub(super) fn props_mut(&mut self, ty: ObjectType) -> &mut BTreeMap<String, PropertyDef> {
        match ty {
            ObjectType::Contact => &mut self.contact_props,
            ObjectType::Deal => &mut self.deal_props,
        }
    }

    /// The record of type `ty` whose `id_property` is `value`: `hs_object_id` (or `None`)
    /// means the record id; e-mail addresses compare case-insensitively.
    pub(super) fn find(
        &self,
        ty: ObjectType,
        id_property: Option<&str>,
        value: &str,
    ) -> Option<u64> {
        match id_property {
            None | Some("hs_object_id") => value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|id| self.records(ty).contains_key(id)),
            Some(name) => {
                let wanted = value.trim();
                self.records(ty)
                    .values()
                    .find(|r| {
                        r.get(name).is_some_and(|v| {
                            if name == "email" {
                                v.eq_ignore_ascii_case(wanted)
                            } else {
                                v == wanted
                            }
                        })
                    })
                    .map(|r| r.id)
            }
        }
    }

    /// Whether `name` can identify records of `ty` (`idProperty`): `email` for contacts and
    /// properties created with `hasUniqueValue`.
    pub(super) fn is_id_property(&self, ty: ObjectType, name: &str) -> bool {
        (ty == ObjectType::Contact && name == "email")
            || self.props(ty).get(name).is_some_and(|p| p.has_unique_value)
    }

    pub(super) fn pipeline(&self, id: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    /// The pipeline holding stage `stage_id`.
    pub(super) fn pipeline_of_stage(&self, stage_id: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.stage(stage_id).is_some())
    }

    /// Deals associated with `contact_id`, by id.
    pub(super) fn deals_of_contact(&self, contact_id: u64) -> Vec<u64> {
        self.associations
            .iter()
            .filter(|(_, c)| *c == contact_id)
            .map(|(d, _)| *d)
            .collect()
    }

    /// Contacts associated with `deal_id`, by id.
    pub(super) fn contacts_of_deal(&self, deal_id: u64) -> Vec<u64> {
        self.associations
            .range((deal_id, 0)..=(deal_id, u64::MAX))
            .map(|(_, c)| *c)
            .collect()
    }

    /// Ids of the objects associated with `id` (of type `ty`).
    pub(super) fn associated(&self, ty: ObjectType, id: u64) -> Vec<u64> {
        match ty {
            ObjectType::Contact => self.deals_of_contact(id),
            ObjectType::Deal => self.contacts_of_deal(id),
        }
    }

    /// The property definition as the properties API returns it (`dealstage` and `pipeline`
    /// list the pipelines' stages and the pipelines as options).
    pub(super) fn property_json(&self, ty: ObjectType, def: &PropertyDef) -> Value {
        let options: Vec<Value> = if ty == ObjectType::Deal && def.name == "dealstage" {
            self.pipelines
                .iter()
                .flat_map(|p| p.stages.iter())
                .map(|s| {
                    json!({"label": s.label, "value": s.id, "displayOrder": s.display_order, "hidden": false})
                })
                .collect()
        } else if ty == ObjectType::Deal && def.name == "pipeline" {
            self.pipelines
                .iter()
                .map(|p| {
                    json!({"label": p.label, "value": p.id, "displayOrder": p.display_order, "hidden": false})
                })
                .collect()
        } else {
            def.options
                .iter()
                .enumerate()
                .map(|(i, (label, value))| {
                    json!({"label": label, "value": value, "displayOrder": i, "hidden": false})
                })
                .collect()
        };
        let mut out = json!({
            "updatedAt": iso(&def.updated_at),
            "createdAt": iso(&def.created_at),
            "name": def.name,
            "label": def.label,
            "type": def.type_,
            "fieldType": def.field_type,
            "description": def.description,
            "groupName": def.group_name,
            "options": options,
            "displayOrder": def.display_order,
            "calculated": def.calculated,
            "externalOptions": false,
            "hasUniqueValue": def.has_unique_value,
            "hidden": false,
            "modificationMetadata": {
                "archivable": !def.hubspot_defined,
                "readOnlyDefinition": def.hubspot_defined,
                "readOnlyValue": def.read_only_value,
            },
            "formField": def.form_field,
            "dataSensitivity": "non_sensitive",
            "archived": false,
        });
        if def.hubspot_defined {
            out["hubspotDefined"] = json!(true);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_probabilities() {
        assert_eq!(label_of("referral_code"), "Referral Code");
        assert_eq!(label_of("x"), "X");
        assert_eq!(probability_string(1.0), "1.0");
        assert_eq!(probability_string(0.0), "0.0");
        assert_eq!(probability_string(0.2), "0.2");
    }

    #[test]
    fn object_types_parse_by_name_and_id() {
        assert_eq!(ObjectType::parse("0-3", false), Some(ObjectType::Deal));
        assert_eq!(ObjectType::parse("deals", false), Some(ObjectType::Deal));
        assert_eq!(ObjectType::parse("deal", false), None);
        assert_eq!(ObjectType::parse("deal", true), Some(ObjectType::Deal));
        assert_eq!(ObjectType::parse("0-1", false), Some(ObjectType::Contact));
        assert_eq!(ObjectType::parse("companies", true), None);
    }
}
