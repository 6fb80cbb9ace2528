//! Operations on the state shared by the API handlers and the UI-like actions; each one records
//! the webhook deliveries Pipedrive would send.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::PipedriveSimOptions;
use super::events::{Event, emit};
use super::model::{Deal, Lead, Person, State, diff_previous, now_millis, now_secs};

/// Who made a change: the UI (`app`) or the API (`api`).
pub(super) type Source = &'static str;

/// Records `event` for an object that went from `old` to `new` (each `(v2 webhook shape, v1
/// shape)`; `None` = did not exist / no longer exists). A change whose only differences are in
/// `forced` keys or `update_time` is not emitted.
#[allow(clippy::too_many_arguments)]
fn record(
    state: &mut State,
    opts: &PipedriveSimOptions,
    entity: &'static str,
    entity_id: Value,
    old: Option<&(Value, Value)>,
    new: Option<&(Value, Value)>,
    forced: &[&str],
    source: Source,
    correlation_id: Option<&str>,
    v1_enabled: bool,
) {
    let (action, data, previous) = match (old, new) {
        (None, Some((new2, _))) => ("create", new2.clone(), Value::Null),
        (Some((old2, _)), Some((new2, _))) => {
            let mut previous = diff_previous(old2, new2, &["update_time"]);
            let meaningful = previous
                .as_object()
                .is_some_and(|m| m.keys().any(|k| k != "update_time"));
            if !meaningful {
                return;
            }
            if let (Some(map), Some(old_map)) = (previous.as_object_mut(), old2.as_object()) {
                for key in forced {
                    if let Some(v) = old_map.get(*key) {
                        map.insert((*key).to_owned(), v.clone());
                    }
                }
            }
            ("change", new2.clone(), previous)
        }
        (Some((old2, _)), None) => ("delete", Value::Null, old2.clone()),
        (None, None) => return,
    };
    let v1 = v1_enabled.then(|| {
        (
            new.map_or(Value::Null, |(_, v1)| v1.clone()),
            old.map_or(Value::Null, |(_, v1)| v1.clone()),
        )
    });
    let correlation_id = match correlation_id {
        Some(c) => c.to_owned(),
        None => state.uuid(),
    };
    let event = Event {
        action,
        entity,
        entity_id,
        data,
        previous,
        v1,
        change_source: source,
        correlation_id,
        at: Utc::now(),
    };
    emit(state, opts, &event);
}

fn deal_shapes(deal: &Deal, opts: &PipedriveSimOptions) -> (Value, Value) {
    (deal.hook_v2(&opts.custom_fields), deal.v1())
}

fn person_shapes(person: &Person, opts: &PipedriveSimOptions) -> (Value, Value) {
    (
        person.hook_v2(&opts.custom_fields),
        person.v1(opts.company_id),
    )
}

fn lead_shapes(lead: &Lead, opts: &PipedriveSimOptions) -> (Value, Value) {
    (
        lead.hook_v2(&opts.custom_fields),
        lead.v1(&opts.company_domain),
    )
}

/// Inserts a new person and records `create.person`.
pub(super) fn insert_person(
    state: &mut State,
    opts: &PipedriveSimOptions,
    mut person: Person,
    source: Source,
) -> Person {
    person.id = state.next_person_id;
    state.next_person_id += 1;
    let now = now_secs();
    person.add_time = now;
    person.update_time = now;
    state.persons.insert(person.id, person.clone());
    let new = person_shapes(&person, opts);
    record(
        state,
        opts,
        "person",
        json!(person.id),
        None,
        Some(&new),
        &[],
        source,
        None,
        true,
    );
    person
}

/// Applies `change` to person `id` and records `change.person` when something changed.
pub(super) fn update_person(
    state: &mut State,
    opts: &PipedriveSimOptions,
    id: u64,
    change: impl FnOnce(&mut Person),
    source: Source,
) -> Option<Person> {
    let old = state.live_person(id)?.clone();
    let mut new = old.clone();
    change(&mut new);
    let old_shapes = person_shapes(&old, opts);
    if person_shapes(&new, opts).0 != old_shapes.0 {
        new.update_time = now_secs();
    }
    state.persons.insert(id, new.clone());
    let new_shapes = person_shapes(&new, opts);
    record(
        state,
        opts,
        "person",
        json!(id),
        Some(&old_shapes),
        Some(&new_shapes),
        &[],
        source,
        None,
        true,
    );
    Some(new)
}

/// Inserts a new lead and records `create.lead`.
pub(super) fn insert_lead(
    state: &mut State,
    opts: &PipedriveSimOptions,
    mut lead: Lead,
    source: Source,
) -> Lead {
    lead.id = state.uuid();
    let now = now_millis();
    lead.add_time = now;
    lead.update_time = now;
    state.leads.push(lead.clone());
    let new = lead_shapes(&lead, opts);
    record(
        state,
        opts,
        "lead",
        json!(lead.id),
        None,
        Some(&new),
        &[],
        source,
        None,
        false,
    );
    lead
}

/// Applies `change` to lead `id` and records `change.lead` when something changed. The change
/// may refuse with a message (validation after merging).
pub(super) fn update_lead(
    state: &mut State,
    opts: &PipedriveSimOptions,
    id: &str,
    change: impl FnOnce(&mut Lead) -> Result<(), String>,
    source: Source,
) -> Option<Result<Lead, String>> {
    let index = state.live_lead_index(id)?;
    let old = state.leads[index].clone();
    let mut new = old.clone();
    if let Err(e) = change(&mut new) {
        return Some(Err(e));
    }
    let old_shapes = lead_shapes(&old, opts);
    if lead_shapes(&new, opts).0 != old_shapes.0 {
        new.update_time = now_millis();
    }
    state.leads[index] = new.clone();
    let new_shapes = lead_shapes(&new, opts);
    record(
        state,
        opts,
        "lead",
        json!(id),
        Some(&old_shapes),
        Some(&new_shapes),
        &[],
        source,
        None,
        false,
    );
    Some(Ok(new))
}

/// Marks lead `id` deleted and records `delete.lead`.
pub(super) fn delete_lead(
    state: &mut State,
    opts: &PipedriveSimOptions,
    id: &str,
    source: Source,
    correlation_id: Option<&str>,
) -> bool {
    let Some(index) = state.live_lead_index(id) else {
        return false;
    };
    state.leads[index].deleted = true;
    let old = state.leads[index].clone();
    let old_shapes = lead_shapes(&old, opts);
    record(
        state,
        opts,
        "lead",
        json!(id),
        Some(&old_shapes),
        None,
        &[],
        source,
        correlation_id,
        false,
    );
    true
}

/// Inserts a new deal and records `create.deal`.
pub(super) fn insert_deal(
    state: &mut State,
    opts: &PipedriveSimOptions,
    mut deal: Deal,
    source: Source,
    correlation_id: Option<&str>,
) -> Deal {
    deal.id = state.next_deal_id;
    state.next_deal_id += 1;
    let now = now_secs();
    deal.add_time = now;
    deal.update_time = now;
    let status = std::mem::replace(&mut deal.status, "open".to_owned());
    deal.set_status(&status, now);
    state.deals.insert(deal.id, deal.clone());
    let new = deal_shapes(&deal, opts);
    record(
        state,
        opts,
        "deal",
        json!(deal.id),
        None,
        Some(&new),
        &[],
        source,
        correlation_id,
        true,
    );
    deal
}

/// Applies `change` to deal `id` (which gets the current time to stamp status and stage
/// times) and records `change.deal` when something changed; `forced` keys always appear in
/// `previous` then.
pub(super) fn update_deal(
    state: &mut State,
    opts: &PipedriveSimOptions,
    id: u64,
    change: impl FnOnce(&mut Deal, DateTime<Utc>),
    forced: &[&str],
    source: Source,
) -> Option<Deal> {
    let old = state.live_deal(id)?.clone();
    let mut new = old.clone();
    let now = now_secs();
    change(&mut new, now);
    let old_shapes = deal_shapes(&old, opts);
    if deal_shapes(&new, opts).0 != old_shapes.0 {
        new.update_time = now;
    }
    state.deals.insert(id, new.clone());
    let new_shapes = deal_shapes(&new, opts);
    record(
        state,
        opts,
        "deal",
        json!(id),
        Some(&old_shapes),
        Some(&new_shapes),
        forced,
        source,
        None,
        true,
    );
    Some(new)
}

/// Marks deal `id` deleted and records `delete.deal`.
pub(super) fn delete_deal(
    state: &mut State,
    opts: &PipedriveSimOptions,
    id: u64,
    source: Source,
) -> bool {
    let Some(old) = state.live_deal(id).cloned() else {
        return false;
    };
    if let Some(deal) = state.deals.get_mut(&id) {
        deal.deleted = true;
        deal.update_time = now_secs();
    }
    let old_shapes = deal_shapes(&old, opts);
    record(
        state,
        opts,
        "deal",
        json!(id),
        Some(&old_shapes),
        None,
        &[],
        source,
        None,
        true,
    );
    true
}

/// Moves deal `id` to `stage_id` (the pipeline follows the stage).
pub(super) fn move_deal(
    state: &mut State,
    opts: &PipedriveSimOptions,
    id: u64,
    stage_id: u64,
    source: Source,
) -> Result<Deal, String> {
    let stage = state
        .stage(stage_id)
        .cloned()
        .ok_or_else(|| format!("stage {stage_id} does not exist"))?;
    let current = state
        .live_deal(id)
        .ok_or_else(|| format!("deal {id} does not exist"))?;
    if current.stage_id == stage_id {
        return Ok(current.clone());
    }
    update_deal(
        state,
        opts,
        id,
        |deal, now| {
            deal.stage_id = stage.id;
            deal.pipeline_id = stage.pipeline_id;
            deal.stage_change_time = Some(now);
        },
        &["stage_change_time", "update_time"],
        source,
    )
    .ok_or_else(|| format!("deal {id} does not exist"))
}

/// Converts lead `lead_id` into a new deal (UI action): `create.deal`, then `delete.lead`.
pub(super) fn convert_lead(
    state: &mut State,
    opts: &PipedriveSimOptions,
    lead_id: &str,
    stage_id: Option<u64>,
) -> Result<u64, String> {
    let index = state
        .live_lead_index(lead_id)
        .ok_or_else(|| format!("lead {lead_id} does not exist"))?;
    let lead = state.leads[index].clone();
    let stage = match stage_id {
        Some(id) => state.stage(id).cloned(),
        None => state.first_stage(1).cloned(),
    }
    .ok_or_else(|| format!("stage {stage_id:?} does not exist"))?;
    let (value, currency) = match &lead.value {
        Value::Object(v) => (
            v.get("amount").cloned().unwrap_or(json!(0)),
            v.get("currency")
                .and_then(Value::as_str)
                .unwrap_or("EUR")
                .to_owned(),
        ),
        _ => (json!(0), "EUR".to_owned()),
    };
    let deal = Deal {
        id: 0,
        title: lead.title.clone(),
        creator_user_id: opts.user_id,
        owner_id: lead.owner_id,
        person_id: lead.person_id,
        org_id: lead.organization_id,
        pipeline_id: stage.pipeline_id,
        stage_id: stage.id,
        value,
        currency,
        status: "open".to_owned(),
        visible_to: lead.visible_to.clone(),
        label_ids: Vec::new(),
        custom_fields: lead.custom_fields.clone(),
        expected_close_date: lead.expected_close_date,
        probability: Value::Null,
        lost_reason: None,
        origin: "ManuallyCreated".to_owned(),
        add_time: Utc::now(),
        update_time: Utc::now(),
        stage_change_time: None,
        won_time: None,
        first_won_time: None,
        lost_time: None,
        close_time: None,
        deleted: false,
    };
    let correlation_id = state.uuid();
    let deal = insert_deal(state, opts, deal, "app", Some(&correlation_id));
    delete_lead(state, opts, lead_id, "app", Some(&correlation_id));
    Ok(deal.id)
}

/// Custom field values with nulls removed (a null clears a field).
pub(super) fn merge_custom(target: &mut BTreeMap<String, Value>, changes: BTreeMap<String, Value>) {
    for (k, v) in changes {
        if v.is_null() {
            target.remove(&k);
        } else {
            target.insert(k, v);
        }
    }
}
