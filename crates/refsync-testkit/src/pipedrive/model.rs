//! The simulator's in-memory records and their wire shapes (API v1, API v2, webhooks v1/v2).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde_json::{Map, Value, json};

use super::{CustomField, FieldEntity, OutgoingWebhook};

/// `2022-11-24T13:18:55Z` (API v2 and webhooks v2 deal/person times).
pub(super) fn v2_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `2022-11-24T15:35:58.675Z` (lead times, webhook `meta.timestamp`).
pub(super) fn ms_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `2022-11-24 13:18:55` (API v1 and webhooks v1 times).
pub(super) fn v1_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn opt_time(t: &Option<DateTime<Utc>>, f: fn(&DateTime<Utc>) -> String) -> Value {
    t.as_ref().map_or(Value::Null, |t| Value::String(f(t)))
}

/// Now, truncated to whole seconds (Pipedrive stores deal and person times in seconds).
pub(super) fn now_secs() -> DateTime<Utc> {
    let now = Utc::now();
    now.with_nanosecond(0).unwrap_or(now)
}

/// Now, truncated to milliseconds (lead times).
pub(super) fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    now.with_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
}

/// `visible_to` as API v2 sends it (an integer).
fn visible_int(v: &str) -> Value {
    v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n))
}

/// An e-mail address or phone number of a person.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Channel {
    pub(super) value: String,
    pub(super) primary: bool,
    pub(super) label: String,
}

impl Channel {
    fn to_json(&self) -> Value {
        json!({"value": self.value, "primary": self.primary, "label": self.label})
    }
}

fn channels(list: &[Channel]) -> Value {
    Value::Array(list.iter().map(Channel::to_json).collect())
}

/// A person.
#[derive(Debug, Clone)]
pub(super) struct Person {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) owner_id: u64,
    pub(super) org_id: Option<u64>,
    pub(super) emails: Vec<Channel>,
    pub(super) phones: Vec<Channel>,
    pub(super) visible_to: String,
    pub(super) label_ids: Vec<u64>,
    pub(super) custom_fields: BTreeMap<String, Value>,
    pub(super) add_time: DateTime<Utc>,
    pub(super) update_time: DateTime<Utc>,
    pub(super) deleted: bool,
}

impl Person {
    fn first_last(&self) -> (Value, Value) {
        let name = self.name.trim();
        match name.split_once(' ') {
            Some((first, last)) => (json!(first), json!(last.trim())),
            None => (json!(name), Value::Null),
        }
    }

    pub(super) fn has_email(&self, email: &str) -> bool {
        self.emails
            .iter()
            .any(|e| e.value.trim().eq_ignore_ascii_case(email.trim()))
    }

    pub(super) fn primary_email(&self) -> Option<&str> {
        self.emails
            .iter()
            .find(|e| e.primary)
            .or_else(|| self.emails.first())
            .map(|e| e.value.as_str())
    }

    /// API v2 shape (`GET /api/v2/persons/{id}`).
    pub(super) fn api_v2(&self) -> Value {
        let (first, last) = self.first_last();
        json!({
            "id": self.id,
            "name": self.name,
            "first_name": first,
            "last_name": last,
            "owner_id": self.owner_id,
            "org_id": self.org_id,
            "add_time": v2_time(&self.add_time),
            "update_time": v2_time(&self.update_time),
            "emails": channels(&self.emails),
            "phones": channels(&self.phones),
            "is_deleted": self.deleted,
            "visible_to": visible_int(&self.visible_to),
            "label_ids": self.label_ids,
            "picture_id": null,
            "custom_fields": plain_custom(&self.custom_fields),
        })
    }

    /// Webhooks v2 `data` shape (as in `v2_person_create.json`).
    pub(super) fn hook_v2(&self, fields: &[CustomField]) -> Value {
        let (first, last) = self.first_last();
        json!({
            "add_time": v2_time(&self.add_time),
            "custom_fields": typed_custom(&self.custom_fields, fields),
            "emails": channels(&self.emails),
            "first_name": first,
            "id": self.id,
            "label": self.label_ids.first(),
            "last_name": last,
            "name": self.name,
            "org_id": self.org_id,
            "owner_id": self.owner_id,
            "phones": channels(&self.phones),
            "update_time": v2_time(&self.update_time),
            "visible_to": self.visible_to,
        })
    }

    /// API v1 / webhooks v1 shape (custom fields at the root).
    pub(super) fn v1(&self, company_id: u64) -> Value {
        let (first, last) = self.first_last();
        let mut out = json!({
            "id": self.id,
            "company_id": company_id,
            "owner_id": self.owner_id,
            "org_id": self.org_id,
            "name": self.name,
            "first_name": first,
            "last_name": last,
            "email": channels(&self.emails),
            "phone": channels(&self.phones),
            "primary_email": self.primary_email(),
            "label": self.label_ids.first(),
            "add_time": v1_time(&self.add_time),
            "update_time": v1_time(&self.update_time),
            "visible_to": self.visible_to,
            "active_flag": !self.deleted,
        });
        root_custom(&mut out, &self.custom_fields);
        out
    }

    /// The item of a `GET /api/v2/persons/search` result.
    pub(super) fn search_item(&self) -> Value {
        json!({
            "id": self.id,
            "type": "person",
            "name": self.name,
            "phones": self.phones.iter().map(|p| p.value.clone()).collect::<Vec<_>>(),
            "emails": self.emails.iter().map(|e| e.value.clone()).collect::<Vec<_>>(),
            "primary_email": self.primary_email(),
            "visible_to": visible_int(&self.visible_to),
            "owner": {"id": self.owner_id},
            "organization": self.org_id.map(|id| json!({"id": id, "name": null, "address": null})),
            "custom_fields": [],
            "notes": [],
            "update_time": v2_time(&self.update_time),
        })
    }
}

/// A lead.
#[derive(Debug, Clone)]
pub(super) struct Lead {
    pub(super) id: String,
    pub(super) title: String,
    pub(super) owner_id: u64,
    pub(super) creator_id: u64,
    pub(super) person_id: Option<u64>,
    pub(super) organization_id: Option<u64>,
    pub(super) label_ids: Vec<String>,
    /// `{amount, currency}` or null.
    pub(super) value: Value,
    pub(super) expected_close_date: Option<String>,
    pub(super) visible_to: String,
    pub(super) was_seen: bool,
    pub(super) is_archived: bool,
    pub(super) source_name: String,
    pub(super) origin: String,
    pub(super) custom_fields: BTreeMap<String, Value>,
    pub(super) add_time: DateTime<Utc>,
    pub(super) update_time: DateTime<Utc>,
    pub(super) deleted: bool,
}

impl Lead {
    /// API v1 shape (`/v1/leads`), custom fields at the root.
    pub(super) fn v1(&self, company_domain: &str) -> Value {
        let mut out = json!({
            "id": self.id,
            "title": self.title,
            "owner_id": self.owner_id,
            "creator_id": self.creator_id,
            "label_ids": self.label_ids,
            "person_id": self.person_id,
            "organization_id": self.organization_id,
            "source_name": self.source_name,
            "origin": self.origin,
            "origin_id": null,
            "channel": null,
            "channel_id": null,
            "is_archived": self.is_archived,
            "was_seen": self.was_seen,
            "value": self.value,
            "expected_close_date": self.expected_close_date,
            "next_activity_id": null,
            "add_time": ms_time(&self.add_time),
            "update_time": ms_time(&self.update_time),
            "visible_to": self.visible_to,
            "cc_email": format!("{company_domain}+lead{}@pipedrivemail.com", &self.id[..8]),
        });
        root_custom(&mut out, &self.custom_fields);
        out
    }

    /// Webhooks v2 `data` shape (as in `v2_lead_create.json`).
    pub(super) fn hook_v2(&self, fields: &[CustomField]) -> Value {
        json!({
            "add_time": ms_time(&self.add_time),
            "channel": null,
            "channel_id": null,
            "creator_id": self.creator_id,
            "custom_fields": typed_custom(&self.custom_fields, fields),
            "expected_close_date": self.expected_close_date,
            "id": self.id,
            "is_archived": self.is_archived,
            "label_ids": self.label_ids,
            "next_activity_id": null,
            "organization_id": self.organization_id,
            "origin": self.origin,
            "origin_id": null,
            "owner_id": self.owner_id,
            "person_id": self.person_id,
            "source_name": self.source_name,
            "title": self.title,
            "update_time": ms_time(&self.update_time),
            "was_seen": self.was_seen,
            "value": self.value,
        })
    }
}

/// A deal.
#[derive(Debug, Clone)]
pub(super) struct Deal {
    pub(super) id: u64,
    pub(super) title: String,
    pub(super) creator_user_id: u64,
    pub(super) owner_id: u64,
    pub(super) person_id: Option<u64>,
    pub(super) org_id: Option<u64>,
    pub(super) pipeline_id: u64,
    pub(super) stage_id: u64,
    /// A JSON number.
    pub(super) value: Value,
    pub(super) currency: String,
    pub(super) status: String,
    pub(super) visible_to: String,
    pub(super) label_ids: Vec<u64>,
    pub(super) custom_fields: BTreeMap<String, Value>,
    pub(super) expected_close_date: Option<String>,
    pub(super) probability: Value,
    pub(super) lost_reason: Option<String>,
    pub(super) origin: String,
    pub(super) add_time: DateTime<Utc>,
    pub(super) update_time: DateTime<Utc>,
    pub(super) stage_change_time: Option<DateTime<Utc>>,
    pub(super) won_time: Option<DateTime<Utc>>,
    pub(super) first_won_time: Option<DateTime<Utc>>,
    pub(super) lost_time: Option<DateTime<Utc>>,
    pub(super) close_time: Option<DateTime<Utc>>,
    pub(super) deleted: bool,
}

impl Deal {
    /// Sets `status` with the times Pipedrive maintains alongside it.
    pub(super) fn set_status(&mut self, status: &str, now: DateTime<Utc>) {
        if self.status == status {
            return;
        }
        self.status = status.to_owned();
        match status {
            "won" => {
                self.won_time = Some(now);
                self.first_won_time.get_or_insert(now);
                self.lost_time = None;
                self.close_time = Some(now);
            }
            "lost" => {
                self.lost_time = Some(now);
                self.won_time = None;
                self.close_time = Some(now);
            }
            _ => {
                self.won_time = None;
                self.lost_time = None;
                self.close_time = None;
            }
        }
    }

    fn v2_common(&self, custom: Value) -> Value {
        let mut out = json!({
            "add_time": v2_time(&self.add_time),
            "channel": null,
            "channel_id": null,
            "close_time": opt_time(&self.close_time, v2_time),
            "creator_user_id": self.creator_user_id,
            "currency": self.currency,
            "custom_fields": {},
            "expected_close_date": self.expected_close_date,
            "first_won_time": opt_time(&self.first_won_time, v2_time),
            "id": self.id,
            "label_ids": self.label_ids,
            "lost_reason": self.lost_reason,
            "lost_time": opt_time(&self.lost_time, v2_time),
            "org_id": self.org_id,
            "origin": self.origin,
            "origin_id": null,
            "owner_id": self.owner_id,
            "person_id": self.person_id,
            "pipeline_id": self.pipeline_id,
            "probability": self.probability,
            "stage_change_time": opt_time(&self.stage_change_time, v2_time),
            "stage_id": self.stage_id,
            "status": self.status,
            "title": self.title,
            "update_time": v2_time(&self.update_time),
            "value": self.value,
            "visible_to": self.visible_to,
            "won_time": opt_time(&self.won_time, v2_time),
        });
        out["custom_fields"] = custom;
        out
    }

    /// API v2 shape: the webhook shape with plain custom field values, an integer `visible_to`
    /// and `is_deleted`.
    pub(super) fn api_v2(&self) -> Value {
        let mut out = self.v2_common(plain_custom(&self.custom_fields));
        out["visible_to"] = visible_int(&self.visible_to);
        out["is_deleted"] = json!(self.deleted);
        out
    }

    /// Webhooks v2 `data` shape (exactly the keys of `v2_deal_create.json`).
    pub(super) fn hook_v2(&self, fields: &[CustomField]) -> Value {
        self.v2_common(typed_custom(&self.custom_fields, fields))
    }

    /// API v1 / webhooks v1 shape (custom fields at the root).
    pub(super) fn v1(&self) -> Value {
        let t = |t: &Option<DateTime<Utc>>| opt_time(t, v1_time);
        let mut out = json!({
            "id": self.id,
            "creator_user_id": self.creator_user_id,
            "user_id": self.owner_id,
            "person_id": self.person_id,
            "org_id": self.org_id,
            "stage_id": self.stage_id,
            "title": self.title,
            "value": self.value,
            "currency": self.currency,
            "add_time": v1_time(&self.add_time),
            "update_time": v1_time(&self.update_time),
            "stage_change_time": t(&self.stage_change_time),
            "active": self.status == "open" && !self.deleted,
            "deleted": self.deleted,
            "status": self.status,
            "probability": self.probability,
            "next_activity_date": null,
            "lost_reason": self.lost_reason,
            "visible_to": self.visible_to,
            "close_time": t(&self.close_time),
            "pipeline_id": self.pipeline_id,
            "won_time": t(&self.won_time),
            "first_won_time": t(&self.first_won_time),
            "lost_time": t(&self.lost_time),
            "expected_close_date": self.expected_close_date,
            "label": self.label_ids.first().map(ToString::to_string),
            "origin": self.origin,
        });
        root_custom(&mut out, &self.custom_fields);
        out
    }
}

/// A webhook subscription.
#[derive(Debug, Clone)]
pub(super) struct Hook {
    pub(super) id: u64,
    pub(super) subscription_url: String,
    pub(super) event_action: String,
    pub(super) event_object: String,
    pub(super) version: String,
    pub(super) user_id: u64,
    pub(super) owner_id: u64,
    pub(super) http_auth_user: Option<String>,
    pub(super) http_auth_password: Option<String>,
    pub(super) name: Option<String>,
    pub(super) add_time: DateTime<Utc>,
    pub(super) last_delivery_time: Option<DateTime<Utc>>,
    pub(super) last_http_status: Option<u16>,
}

impl Hook {
    /// `/v1/webhooks` shape; the password is never returned.
    pub(super) fn v1(&self, company_id: u64) -> Value {
        json!({
            "id": self.id,
            "company_id": company_id,
            "owner_id": self.owner_id,
            "user_id": self.user_id,
            "event_action": self.event_action,
            "event_object": self.event_object,
            "subscription_url": self.subscription_url,
            "version": self.version,
            "name": self.name,
            "is_active": 1,
            "add_time": v2_time(&self.add_time),
            "remove_time": null,
            "type": "general",
            "http_auth_user": self.http_auth_user,
            "http_auth_password": null,
            "additional_data": {},
            "remove_reason": null,
            "last_delivery_time": opt_time(&self.last_delivery_time, v2_time),
            "last_http_status": self.last_http_status,
            "admin_id": self.owner_id,
        })
    }

    /// Whether this webhook subscribes to `action` (`create|change|delete`) on `entity`.
    pub(super) fn matches(&self, action: &str, entity: &str) -> bool {
        let action_ok = match self.event_action.as_str() {
            "*" => true,
            "added" | "create" => action == "create",
            "updated" | "change" => action == "change",
            "deleted" | "delete" => action == "delete",
            _ => false,
        };
        action_ok && (self.event_object == "*" || self.event_object == entity)
    }
}

/// A pipeline.
#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) order_nr: u64,
}

/// A stage.
#[derive(Debug, Clone)]
pub(super) struct Stage {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) pipeline_id: u64,
    pub(super) order_nr: u64,
}

/// Custom field values as API v2 responses carry them: `{key: value}`.
fn plain_custom(values: &BTreeMap<String, Value>) -> Value {
    Value::Object(
        values
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// Custom field values as webhooks v2 carry them: `{key: {"type": ..., "value": ...}}`.
fn typed_custom(values: &BTreeMap<String, Value>, fields: &[CustomField]) -> Value {
    Value::Object(
        values
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                let field_type = fields
                    .iter()
                    .find(|f| &f.key == k)
                    .map_or("varchar", |f| f.field_type.as_str());
                (k.clone(), json!({"type": field_type, "value": v}))
            })
            .collect(),
    )
}

/// Puts every custom field key at the root of a v1 object (null when unset).
fn root_custom(out: &mut Value, values: &BTreeMap<String, Value>) {
    if let Some(map) = out.as_object_mut() {
        for (k, v) in values {
            map.insert(k.clone(), v.clone());
        }
    }
}

/// The keys whose values differ between `old` and `new` (webhooks v2 `previous`), with the old
/// values; `custom_fields` is compared per key. `forced` keys are included whenever present.
pub(super) fn diff_previous(old: &Value, new: &Value, forced: &[&str]) -> Value {
    let mut out = Map::new();
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return Value::Null;
    };
    for (key, old_value) in old {
        let new_value = new.get(key).unwrap_or(&Value::Null);
        if key == "custom_fields" {
            let empty = Map::new();
            let old_custom = old_value.as_object().unwrap_or(&empty);
            let new_custom = new_value.as_object().unwrap_or(&empty);
            let mut changed = Map::new();
            for k in old_custom.keys().chain(new_custom.keys()) {
                let o = old_custom.get(k).unwrap_or(&Value::Null);
                let n = new_custom.get(k).unwrap_or(&Value::Null);
                if o != n {
                    changed.insert(k.clone(), o.clone());
                }
            }
            if !changed.is_empty() {
                out.insert(key.clone(), Value::Object(changed));
            }
        } else if old_value != new_value || forced.contains(&key.as_str()) {
            out.insert(key.clone(), old_value.clone());
        }
    }
    Value::Object(out)
}

/// splitmix64: spreads the bits of a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything the simulator knows.
#[derive(Debug)]
pub(super) struct State {
    pub(super) persons: BTreeMap<u64, Person>,
    /// Leads in creation order.
    pub(super) leads: Vec<Lead>,
    pub(super) deals: BTreeMap<u64, Deal>,
    pub(super) hooks: BTreeMap<u64, Hook>,
    pub(super) pipelines: Vec<Pipeline>,
    pub(super) stages: Vec<Stage>,
    pub(super) next_person_id: u64,
    pub(super) next_deal_id: u64,
    pub(super) next_hook_id: u64,
    uuid_seed: u64,
    uuid_counter: u64,
    pub(super) outbox: Vec<OutgoingWebhook>,
    /// Arrival times of recent requests (rate limit headers) and searches (search burst).
    pub(super) recent_requests: VecDeque<Instant>,
    pub(super) recent_searches: VecDeque<Instant>,
}

impl State {
    pub(super) fn new() -> State {
        let epoch = Utc::now();
        let pipelines = vec![
            Pipeline {
                id: 1,
                name: "Sales".into(),
                order_nr: 1,
            },
            Pipeline {
                id: 2,
                name: "Referrals".into(),
                order_nr: 2,
            },
        ];
        let names = [
            (1, "Qualified"),
            (1, "Contact made"),
            (1, "Demo scheduled"),
            (1, "Proposal made"),
            (1, "Negotiations started"),
            (2, "Referred"),
            (2, "Meeting booked"),
            (2, "Customer"),
        ];
        let mut stages = Vec::new();
        let mut order = BTreeMap::new();
        for (index, (pipeline_id, name)) in names.iter().enumerate() {
            let nr = order.entry(*pipeline_id).or_insert(0u64);
            *nr += 1;
            stages.push(Stage {
                id: index as u64 + 1,
                name: (*name).to_owned(),
                pipeline_id: *pipeline_id,
                order_nr: *nr,
            });
        }
        let nanos = epoch.timestamp_nanos_opt().unwrap_or_default() as u64;
        State {
            persons: BTreeMap::new(),
            leads: Vec::new(),
            deals: BTreeMap::new(),
            hooks: BTreeMap::new(),
            pipelines,
            stages,
            next_person_id: 1,
            next_deal_id: 1,
            next_hook_id: 4_710_827,
            uuid_seed: mix(nanos ^ (std::process::id() as u64).rotate_left(32)),
            uuid_counter: 0,
            outbox: Vec::new(),
            recent_requests: VecDeque::new(),
            recent_searches: VecDeque::new(),
        }
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

    pub(super) fn stage(&self, id: u64) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    pub(super) fn first_stage(&self, pipeline_id: u64) -> Option<&Stage> {
        self.stages
            .iter()
            .filter(|s| s.pipeline_id == pipeline_id)
            .min_by_key(|s| s.order_nr)
    }

    pub(super) fn pipeline(&self, id: u64) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    pub(super) fn live_person(&self, id: u64) -> Option<&Person> {
        self.persons.get(&id).filter(|p| !p.deleted)
    }

    pub(super) fn live_deal(&self, id: u64) -> Option<&Deal> {
        self.deals.get(&id).filter(|d| !d.deleted)
    }

    pub(super) fn live_lead_index(&self, id: &str) -> Option<usize> {
        self.leads.iter().position(|l| l.id == id && !l.deleted)
    }

    pub(super) fn pipeline_v1(&self, p: &Pipeline, epoch: &DateTime<Utc>) -> Value {
        json!({
            "id": p.id,
            "name": p.name,
            "url_title": p.name.to_ascii_lowercase(),
            "order_nr": p.order_nr,
            "active": true,
            "deal_probability": true,
            "add_time": v1_time(epoch),
            "update_time": v1_time(epoch),
            "selected": p.id == 1,
        })
    }

    pub(super) fn pipeline_v2(&self, p: &Pipeline, epoch: &DateTime<Utc>) -> Value {
        json!({
            "id": p.id,
            "name": p.name,
            "order_nr": p.order_nr,
            "is_deleted": false,
            "is_deal_probability_enabled": true,
            "add_time": v2_time(epoch),
            "update_time": v2_time(epoch),
            "is_selected": p.id == 1,
        })
    }

    pub(super) fn stage_v1(&self, s: &Stage, epoch: &DateTime<Utc>) -> Value {
        let pipeline_name = self.pipeline(s.pipeline_id).map(|p| p.name.clone());
        json!({
            "id": s.id,
            "order_nr": s.order_nr,
            "name": s.name,
            "active_flag": true,
            "deal_probability": 100,
            "pipeline_id": s.pipeline_id,
            "rotten_flag": false,
            "add_time": v1_time(epoch),
            "update_time": v1_time(epoch),
            "pipeline_name": pipeline_name,
            "pipeline_deal_probability": true,
        })
    }

    pub(super) fn stage_v2(&self, s: &Stage, epoch: &DateTime<Utc>) -> Value {
        json!({
            "id": s.id,
            "order_nr": s.order_nr,
            "name": s.name,
            "is_deleted": false,
            "deal_probability": 100,
            "pipeline_id": s.pipeline_id,
            "is_deal_rot_enabled": false,
            "days_to_rotten": null,
            "add_time": v2_time(epoch),
            "update_time": v2_time(epoch),
        })
    }
}

/// Whether `key` looks like a custom field key (40 lower-case hex characters).
pub(super) fn is_field_key(key: &str) -> bool {
    key.len() == 40 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The custom field `key` of `entity`, if configured.
pub(super) fn custom_field<'a>(
    fields: &'a [CustomField],
    entity: FieldEntity,
    key: &str,
) -> Option<&'a CustomField> {
    fields.iter().find(|f| f.entity == entity && f.key == key)
}
