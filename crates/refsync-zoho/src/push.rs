//! Pushing referred people in batches of 100 into Leads, Contacts or Deals.
//!
//! Calls per batch of up to 100 referrals (after the first push has read the module's fields):
//! - `update_existing` without `[push.defaults]`: 1 upsert (`duplicate_check_fields`);
//! - `update_existing` with defaults: searches (10 values per call: Zoho's criteria limit), an
//!   insert of the new records with their defaults, an upsert of the existing ones without;
//! - `link_existing`: the searches, and an insert of the new records;
//! - `always_create`: 1 insert (Zoho keeps duplicates; the search is skipped).
//!
//! A batch Zoho refuses as a whole is retried one referral per call, so one bad record fails
//! alone; Zoho's per-record refusals (`MANDATORY_NOT_FOUND`, `INVALID_DATA`...) fail only their
//! referral.

use std::collections::HashMap;

use refsync_core::batch::{Indexed, or_one_by_one, rounds_by_key};
use refsync_core::{
    CrmObjectRef, DuplicatePolicy, Error, ErrorKind, ObjectKind, PushAction, PushOutcome, PushSpec,
    ReferredUser, Result,
};
use serde_json::{Map, Value};

use crate::client::{Client, Written, text};
use crate::config::{Config, MAX_BATCH};
use crate::mapping::{self, Record};
use crate::{INFO, NAME};

/// What a push of one module needs: API names.
struct Plan {
    module: &'static str,
    kind: ObjectKind,
    names: HashMap<String, String>,
    code_field: String,
    check_field: String,
}

async fn plan(client: &Client, config: &Config, spec: &PushSpec) -> Result<Plan> {
    let module = mapping::module_of(spec)?;
    let mut names = HashMap::new();
    for key in mapping::keys(spec) {
        let api = client.resolve_field(module, &key).await?;
        names.insert(key, api);
    }
    let code_field = client
        .resolve_field(module, &config.referral_code_field)
        .await?;
    let check_field = match &config.duplicate_check_field {
        Some(f) => client.resolve_field(module, f).await?,
        None if module == "Deals" => code_field.clone(),
        None => "Email".to_owned(),
    };
    let kind = match module {
        "Leads" => ObjectKind::Lead,
        "Deals" => ObjectKind::Deal,
        _ => ObjectKind::Contact,
    };
    Ok(Plan {
        module,
        kind,
        names,
        code_field,
        check_field,
    })
}

/// Pushes `users` with `spec`: one result per user, in order.
pub(crate) async fn push_many(
    client: &Client,
    config: &Config,
    users: &[ReferredUser],
    spec: &PushSpec,
) -> Vec<Result<PushOutcome>> {
    // Checked before any call (even the token's), so an invalid push never writes.
    if let Err(e) = spec.fields.check_required(INFO.required_mappings) {
        return users.iter().map(|_| Err(e.detached())).collect();
    }
    let plan = match plan(client, config, spec).await {
        Ok(p) => p,
        Err(e) => return users.iter().map(|_| Err(e.detached())).collect(),
    };
    let mut results: Vec<Option<Result<PushOutcome>>> = users.iter().map(|_| None).collect();
    let mut items = Vec::new();
    for (i, user) in users.iter().enumerate() {
        match mapping::record(
            user,
            spec,
            plan.module,
            &plan.names,
            &plan.code_field,
            &plan.check_field,
        ) {
            Ok(r) => items.push((i, r)),
            Err(e) => results[i] = Some(Err(e.with_connector(NAME))),
        }
    }
    // A batch may name a record once: repeated keys go to later rounds.
    let rounds = rounds_by_key(items, |(_, r)| r.key.to_lowercase());
    for round in rounds {
        for chunk in round.chunks(MAX_BATCH) {
            let outcome =
                or_one_by_one(chunk, |c| push_chunk(client, &plan, c, spec.duplicates)).await;
            for (i, r) in outcome {
                results[i] = Some(r);
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::unexpected("push result missing"))))
        .collect()
}

fn refused(message: &str) -> Error {
    let kind = if message.starts_with("DUPLICATE_DATA") {
        ErrorKind::Conflict
    } else {
        ErrorKind::Validation
    };
    Error::new(kind, format!("{NAME}: Zoho refused the record: {message}")).with_connector(NAME)
}

fn outcome(kind: &ObjectKind, id: String, action: PushAction) -> Result<PushOutcome> {
    Ok(PushOutcome {
        action,
        links: vec![CrmObjectRef {
            kind: kind.clone(),
            id,
        }],
        warnings: Vec::new(),
    })
}

/// Writes `records` and turns Zoho's per-record answers into results.
async fn write(
    client: &Client,
    plan: &Plan,
    records: &[(usize, Map<String, Value>)],
    check: Option<&str>,
    action: impl Fn(bool) -> PushAction,
) -> Result<Indexed<PushOutcome>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let bodies: Vec<Map<String, Value>> = records.iter().map(|(_, r)| r.clone()).collect();
    let written = client.write(plan.module, &bodies, check).await?;
    Ok(records
        .iter()
        .zip(written)
        .map(|((i, _), w)| {
            (
                *i,
                match w {
                    Written::Ok { id, created } => outcome(&plan.kind, id, action(created)),
                    Written::Refused(m) => Err(refused(&m)),
                },
            )
        })
        .collect())
}

async fn push_chunk(
    client: &Client,
    plan: &Plan,
    chunk: &[(usize, Record)],
    policy: DuplicatePolicy,
) -> Result<Indexed<PushOutcome>> {
    let with_defaults = |r: &Record| {
        let mut all = r.defaults.clone();
        all.extend(r.fields.clone());
        all
    };
    let check = plan.check_field.as_str();
    let created_or_updated = |created: bool| {
        if created {
            PushAction::Created
        } else {
            PushAction::Updated
        }
    };
    if policy == DuplicatePolicy::AlwaysCreate {
        let all: Vec<_> = chunk.iter().map(|(i, r)| (*i, with_defaults(r))).collect();
        return write(client, plan, &all, None, |_| PushAction::Created).await;
    }
    if policy == DuplicatePolicy::UpdateExisting && chunk.iter().all(|(_, r)| r.defaults.is_empty())
    {
        let all: Vec<_> = chunk.iter().map(|(i, r)| (*i, r.fields.clone())).collect();
        return write(client, plan, &all, Some(check), created_or_updated).await;
    }
    let keys: Vec<String> = chunk.iter().map(|(_, r)| r.key.clone()).collect();
    let found = client.search_equal(plan.module, check, &keys, None).await?;
    let existing: HashMap<String, String> = found
        .iter()
        .filter_map(|r| {
            let key = r.get(check).and_then(Value::as_str)?.trim().to_lowercase();
            Some((key, r.get("id").and_then(text)?))
        })
        .collect();
    let mut out = Vec::new();
    let mut create = Vec::new();
    let mut update = Vec::new();
    for (i, r) in chunk {
        match existing.get(&r.key.to_lowercase()) {
            None => create.push((*i, with_defaults(r))),
            Some(_) if policy == DuplicatePolicy::UpdateExisting => {
                update.push((*i, r.fields.clone()));
            }
            Some(id) => out.push((
                *i,
                outcome(&plan.kind, id.clone(), PushAction::LinkedExisting),
            )),
        }
    }
    out.extend(write(client, plan, &create, None, |_| PushAction::Created).await?);
    out.extend(write(client, plan, &update, Some(check), |_| PushAction::Updated).await?);
    Ok(out)
}
