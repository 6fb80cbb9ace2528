//! Enrichment: Zoho notifications carry only record ids, so the records of a delivery are read
//! together (`GET /crm/v8/{module}?ids=...`, 100 per call):
//!
//! - deals: `Stage`, `Pipeline`, `Layout`, the contact (`Contact_Name`, a `related` object) and
//!   the referral code; a created deal, or an edit that touched `Stage` (or did not say which
//!   fields), and a workflow webhook's stage change, becomes `stage_changed` with the current
//!   stage, plus `status_changed` `won` /
//!   `lost` when the stage's forecast type is Closed Won / Closed Lost (pipelines API, per
//!   layout, cached) — never a label match;
//! - leads: the referral code and email; a converted lead (`$converted`) adds `lead_converted
//!   {lead_id, deal_id}` from its `$converted_detail`;
//! - a created deal that carries a referral code is matched with the converted lead of that
//!   code (a search of converted leads): that also adds `lead_converted {lead_id, deal_id}`;
//! - contacts: the referral code and email.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use refsync_core::{Change, CrmEvent, EventObject, ObjectKind, Result};
use serde_json::Value;

use crate::NAME;
use crate::client::{Client, text};
use crate::config::Config;

fn module(kind: &ObjectKind) -> Option<&'static str> {
    match kind {
        ObjectKind::Lead => Some("Leads"),
        ObjectKind::Deal => Some("Deals"),
        ObjectKind::Contact => Some("Contacts"),
        _ => None,
    }
}

fn string_field(r: &Value, field: &str) -> Option<String> {
    match r.get(field)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Object(o) => o.get("name").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// The lead conversion a converted lead record shows, as an event.
fn conversion(lead: &str, deal: Option<String>, at: Option<DateTime<Utc>>) -> CrmEvent {
    let mut e = CrmEvent::new(
        NAME,
        ObjectKind::Lead,
        lead,
        Change::LeadConverted {
            lead_id: lead.to_owned(),
            deal_id: deal.clone(),
        },
    );
    e.delivery_id = Some(format!("lead_converted:{lead}"));
    e.occurred_at = at;
    if let Some(d) = deal {
        e.related = vec![EventObject {
            kind: ObjectKind::Deal,
            id: d,
        }];
    }
    e
}

/// Enriches one delivery's events (see the module documentation).
pub(crate) async fn enrich_all(
    client: &Client,
    config: &Config,
    events: Vec<CrmEvent>,
) -> Result<Vec<CrmEvent>> {
    // module → ids to read.
    let mut wanted: HashMap<&'static str, Vec<String>> = HashMap::new();
    for e in &events {
        if e.change == Change::Deleted {
            continue;
        }
        if let Some(m) = module(&e.object.kind) {
            let ids = wanted.entry(m).or_default();
            if !ids.contains(&e.object.id) {
                ids.push(e.object.id.clone());
            }
        }
    }
    // The referral-code field of each module (absent in a module: not read there).
    let mut code_fields: HashMap<&'static str, String> = HashMap::new();
    for m in wanted.keys().copied().chain(["Leads"]) {
        if let Ok(f) = client.resolve_field(m, &config.referral_code_field).await {
            code_fields.insert(m, f);
        }
    }
    let mut records: HashMap<(&'static str, String), Value> = HashMap::new();
    for (m, ids) in &wanted {
        let mut fields: Vec<&str> = match *m {
            "Deals" => vec!["Stage", "Pipeline", "Layout", "Contact_Name", "Deal_Name"],
            _ => vec!["Email", "Last_Name"],
        };
        if let Some(f) = code_fields.get(m) {
            fields.push(f);
        }
        for r in client.records(m, ids, &fields).await? {
            if let Some(id) = r.get("id").and_then(text) {
                records.insert((m, id), r);
            }
        }
    }
    // Created deals carrying a referral code: the converted leads of those codes.
    let mut converted_by_code: HashMap<String, Value> = HashMap::new();
    let created_codes: Vec<String> = events
        .iter()
        .filter(|e| e.object.kind == ObjectKind::Deal && e.change == Change::Created)
        .filter_map(|e| {
            let r = records.get(&("Deals", e.object.id.clone()))?;
            string_field(r, code_fields.get("Deals")?)
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if let (false, Some(lead_code)) = (created_codes.is_empty(), code_fields.get("Leads")) {
        for lead in client
            .search_equal("Leads", lead_code, &created_codes, Some("true"))
            .await?
        {
            if let Some(code) = string_field(&lead, lead_code) {
                converted_by_code.insert(code.to_lowercase(), lead);
            }
        }
    }

    let mut out = Vec::with_capacity(events.len());
    let mut conversions = HashSet::new();
    for mut event in events {
        let Some(m) = module(&event.object.kind).filter(|_| event.change != Change::Deleted) else {
            out.push(event);
            continue;
        };
        let Some(r) = records.get(&(m, event.object.id.clone())) else {
            out.push(event);
            continue;
        };
        if event.referral_code.is_none() {
            event.referral_code = code_fields.get(m).and_then(|f| string_field(r, f));
        }
        if event.email.is_none() && m != "Deals" {
            event.email = string_field(r, "Email").map(|e| e.to_lowercase());
        }
        match m {
            "Leads" => {
                let converted = r.get("$converted").and_then(Value::as_bool) == Some(true);
                let lead = event.object.id.clone();
                out.push(event);
                if converted && conversions.insert(lead.clone()) {
                    let detail = r.get("$converted_detail");
                    let deal = detail.and_then(|d| d.get("deal")).and_then(text);
                    let at = time(detail.and_then(|d| d.get("converted_time")));
                    out.push(conversion(&lead, deal, at));
                }
            }
            "Deals" => {
                if let Some(contact) = r.pointer("/Contact_Name/id").and_then(text) {
                    let obj = EventObject {
                        kind: ObjectKind::Contact,
                        id: contact,
                    };
                    if !event.related.contains(&obj) {
                        event.related.push(obj);
                    }
                }
                let stage_touched = match &event.change {
                    // A workflow webhook's stage is re-read from the record like the others.
                    Change::Created | Change::StageChanged { .. } => true,
                    Change::Updated { fields } => {
                        fields.is_empty() || fields.iter().any(|f| f == "Stage")
                    }
                    _ => false,
                };
                let stage = string_field(r, "Stage").filter(|_| stage_touched);
                let deal = event.object.id.clone();
                let base = event.delivery_id.clone().unwrap_or_default();
                let code = event.referral_code.clone();
                let created = event.change == Change::Created;
                let mut extra = Vec::new();
                if let Some(stage) = stage {
                    let pipeline = string_field(r, "Pipeline");
                    let layout = r.pointer("/Layout/id").and_then(text);
                    let forecast = match &layout {
                        Some(l) => client.forecast_type(l, &stage).await?,
                        None => None,
                    };
                    let stage_event = CrmEvent {
                        change: Change::StageChanged {
                            pipeline,
                            from: None,
                            to: stage.clone(),
                        },
                        delivery_id: Some(format!("{base}:stage:{stage}")),
                        ..event.clone()
                    };
                    extra.push(stage_event);
                    match forecast.as_deref() {
                        Some("Closed Won") | Some("Closed Lost") => {
                            let won = forecast.as_deref() == Some("Closed Won");
                            extra.push(CrmEvent {
                                change: Change::StatusChanged {
                                    from: None,
                                    to: if won { "won" } else { "lost" }.to_owned(),
                                },
                                delivery_id: Some(format!("{base}:status:{stage}")),
                                ..event.clone()
                            });
                        }
                        Some(_) => {}
                        None => {
                            tracing::warn!(connector = NAME, %stage, "deal stage not found in the layout's pipelines; its won/lost status is unknown")
                        }
                    }
                }
                // A created deal keeps its `created` event; an edit is its stage change.
                if created || extra.is_empty() {
                    out.push(event);
                }
                out.extend(extra);
                if created
                    && let Some(lead) = code
                        .as_ref()
                        .and_then(|c| converted_by_code.get(&c.to_lowercase()))
                    && let Some(lead_id) = lead.get("id").and_then(text)
                {
                    let detail = lead.get("$converted_detail");
                    let recorded = detail.and_then(|d| d.get("deal")).and_then(text);
                    // The lead's own conversion record names its deal when Zoho made one.
                    if recorded.as_ref().is_none_or(|d| *d == deal)
                        && conversions.insert(lead_id.clone())
                    {
                        let at = time(detail.and_then(|d| d.get("converted_time")));
                        out.push(conversion(&lead_id, Some(deal.clone()), at));
                    }
                }
            }
            _ => out.push(event),
        }
    }
    Ok(out)
}
