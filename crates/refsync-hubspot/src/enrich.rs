//! Enrichment: HubSpot webhooks carry only the changed property, so the events of a delivery
//! are completed together, in batch calls:
//!
//! - deals (not deleted): `batch/read` of `dealstage`, `pipeline`, `createdate` and the
//!   referral-code property, and their associated contacts (`associations/deals/contacts`),
//!   which become the event's `related` objects — so a deal nobody pushed qualifies the referral
//!   of the contact it belongs to (cross-object qualification);
//! - stage ids resolve through the pipelines API (cached): a stage change into a closed-won
//!   stage (closed, probability 1.0) adds `status_changed` → `won`, into a closed-lost stage
//!   `lost` — never a label match; a created deal adds its current stage the same way;
//! - lead conversion (`first_deal_is_conversion`): when a deal is the first (oldest) deal of an
//!   associated contact, a `lead_converted {lead_id: contact, deal_id: deal}` event on the
//!   contact is added (its delivery id names both, so it is recorded once);
//! - contacts without a referral code: `batch/read` of the referral-code property and email.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use refsync_core::{Change, CrmEvent, EventObject, ObjectKind, Result};

use crate::NAME;
use crate::client::{Client, ObjectType, Record};
use crate::config::{Config, MAX_BATCH};

async fn read_all(
    client: &Client,
    object: ObjectType,
    ids: &[String],
    properties: &[&str],
) -> Result<HashMap<String, Record>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(MAX_BATCH) {
        for r in client.batch_read(object, None, chunk, properties).await? {
            out.insert(r.id.clone(), r);
        }
    }
    Ok(out)
}

async fn associated(
    client: &Client,
    from: ObjectType,
    to: ObjectType,
    ids: &[String],
) -> Result<HashMap<String, Vec<String>>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(MAX_BATCH) {
        out.extend(client.associations(from, to, chunk).await?);
    }
    Ok(out)
}

fn created_at(r: &Record) -> Option<DateTime<Utc>> {
    let v = r.properties.get("createdate")?;
    DateTime::parse_from_rfc3339(v)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            v.parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
        })
}

/// Orders deals oldest first (creation time, then numeric id).
fn age_key(r: &Record) -> (Option<DateTime<Utc>>, u128, String) {
    (
        created_at(r),
        r.id.parse::<u128>().unwrap_or(u128::MAX),
        r.id.clone(),
    )
}

fn distinct(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// Enriches one delivery's events (see the module documentation).
pub(crate) async fn enrich_all(
    client: &Client,
    config: &Config,
    events: Vec<CrmEvent>,
) -> Result<Vec<CrmEvent>> {
    let deal_ids = distinct(
        events
            .iter()
            .filter(|e| e.object.kind == ObjectKind::Deal && e.change != Change::Deleted)
            .map(|e| e.object.id.clone()),
    );
    let contact_ids = distinct(
        events
            .iter()
            .filter(|e| {
                e.object.kind == ObjectKind::Contact
                    && e.change != Change::Deleted
                    && e.referral_code.is_none()
            })
            .map(|e| e.object.id.clone()),
    );
    let code_prop = config.deal_referral_code_property.as_str();
    let deal_props = ["dealstage", "pipeline", "createdate", code_prop];
    let mut deals = read_all(client, ObjectType::Deals, &deal_ids, &deal_props).await?;
    let found: Vec<String> = deal_ids
        .iter()
        .filter(|d| deals.contains_key(*d))
        .cloned()
        .collect();
    let deal_contacts = associated(client, ObjectType::Deals, ObjectType::Contacts, &found).await?;

    // contact → its first (oldest) deal.
    let mut first_deal: HashMap<String, String> = HashMap::new();
    if config.first_deal_is_conversion && !deal_contacts.is_empty() {
        let contacts = distinct(deal_contacts.values().flatten().cloned());
        let contact_deals =
            associated(client, ObjectType::Contacts, ObjectType::Deals, &contacts).await?;
        let unread: Vec<String> = distinct(
            contact_deals
                .values()
                .flatten()
                .filter(|d| !deals.contains_key(*d))
                .cloned(),
        );
        deals.extend(read_all(client, ObjectType::Deals, &unread, &deal_props).await?);
        for (contact, ids) in &contact_deals {
            if let Some(first) = ids
                .iter()
                .filter_map(|d| deals.get(d))
                .min_by_key(|r| age_key(r))
            {
                first_deal.insert(contact.clone(), first.id.clone());
            }
        }
    }

    let contact_records = read_all(
        client,
        ObjectType::Contacts,
        &contact_ids,
        &[config.referral_code_property.as_str(), "email"],
    )
    .await?;

    let mut out = Vec::with_capacity(events.len());
    let mut conversions = HashSet::new();
    for mut event in events {
        match event.object.kind {
            ObjectKind::Deal if event.change != Change::Deleted => {
                let Some(deal) = deals.get(&event.object.id) else {
                    out.push(event);
                    continue;
                };
                let contacts = deal_contacts
                    .get(&event.object.id)
                    .cloned()
                    .unwrap_or_default();
                for c in &contacts {
                    let obj = EventObject {
                        kind: ObjectKind::Contact,
                        id: c.clone(),
                    };
                    if !event.related.contains(&obj) {
                        event.related.push(obj);
                    }
                }
                if event.referral_code.is_none() {
                    event.referral_code = deal
                        .properties
                        .get(code_prop)
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty());
                }
                let stage_to = match &event.change {
                    Change::StageChanged { to, .. } => Some(to.clone()),
                    Change::Created => deal.properties.get("dealstage").cloned(),
                    _ => None,
                };
                let base_id = event.delivery_id.clone().unwrap_or_default();
                let created = matches!(event.change, Change::Created);
                let mut extra = Vec::new();
                if let Some(to) = stage_to.filter(|s| !s.is_empty()) {
                    let stage = client.stage(&to).await?;
                    let pipeline = stage
                        .as_ref()
                        .map(|s| s.pipeline.clone())
                        .or_else(|| deal.properties.get("pipeline").cloned());
                    let stage_event = CrmEvent {
                        change: Change::StageChanged {
                            pipeline,
                            from: None,
                            to: to.clone(),
                        },
                        delivery_id: Some(if created {
                            format!("{base_id}:stage")
                        } else {
                            base_id.clone()
                        }),
                        ..event.clone()
                    };
                    if let Some(won) = stage.as_ref().and_then(|s| s.won) {
                        extra.push(CrmEvent {
                            change: Change::StatusChanged {
                                from: None,
                                to: if won { "won" } else { "lost" }.to_owned(),
                            },
                            delivery_id: Some(format!("{base_id}:status")),
                            ..event.clone()
                        });
                    } else if stage.is_none() {
                        tracing::warn!(connector = NAME, stage = %to, "deal stage not found in any pipeline; its won/lost status is unknown");
                    }
                    if created {
                        extra.insert(0, stage_event);
                    } else {
                        event = stage_event;
                    }
                }
                let deal_id = event.object.id.clone();
                let when = created_at(deal).or(event.occurred_at);
                out.push(event);
                out.extend(extra);
                for c in contacts {
                    if first_deal.get(&c) == Some(&deal_id) && conversions.insert(c.clone()) {
                        let mut conv = CrmEvent::new(
                            NAME,
                            ObjectKind::Contact,
                            c.clone(),
                            Change::LeadConverted {
                                lead_id: c.clone(),
                                deal_id: Some(deal_id.clone()),
                            },
                        );
                        conv.delivery_id = Some(format!("lead_converted:{c}:{deal_id}"));
                        conv.occurred_at = when;
                        conv.related = vec![EventObject {
                            kind: ObjectKind::Deal,
                            id: deal_id.clone(),
                        }];
                        out.push(conv);
                    }
                }
            }
            ObjectKind::Contact => {
                if let Some(r) = contact_records.get(&event.object.id) {
                    if event.referral_code.is_none() {
                        event.referral_code = r
                            .properties
                            .get(&config.referral_code_property)
                            .map(|c| c.trim().to_owned())
                            .filter(|c| !c.is_empty());
                    }
                    if event.email.is_none() {
                        event.email = r.properties.get("email").cloned();
                    }
                }
                out.push(event);
            }
            _ => out.push(event),
        }
    }
    Ok(out)
}
