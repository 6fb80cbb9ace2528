//! Pushing referred people into Leads or Contacts, 200 per sObject Collections call, keyed by
//! the External ID field that holds the referral code, so a retried push never duplicates.
//!
//! Calls per batch of up to 200 referrals:
//! - `update_existing` without `[push.defaults]`: 1 upsert by the external id;
//! - `update_existing` with defaults: a SOQL query of the existing codes, then upserts (the new
//!   records with their defaults, the existing ones without);
//! - `link_existing`: a SOQL duplicate search by email (leads: not converted), then an upsert
//!   of the new records;
//! - `always_create`: 1 create (a code that exists is refused as a conflict: the field is
//!   unique).

use std::collections::HashMap;

use refsync_core::batch::{Indexed, or_one_by_one, rounds_by_key};
use refsync_core::{
    CrmObjectRef, DuplicatePolicy, Error, ErrorKind, ObjectKind, PushAction, PushOutcome, PushSpec,
    ReferredUser, Result,
};
use serde_json::{Map, Value};

use crate::client::{Client, Written, soql_literal};
use crate::config::{Config, MAX_BATCH};
use crate::mapping::{self, Record};
use crate::{INFO, NAME};

/// Pushes `users` with `spec`: one result per user, in order.
pub(crate) async fn push_many(
    client: &Client,
    config: &Config,
    users: &[ReferredUser],
    spec: &PushSpec,
) -> Vec<Result<PushOutcome>> {
    let prepared = spec
        .fields
        .check_required(INFO.required_mappings)
        .and_then(|()| mapping::sobject_of(spec));
    let sobject = match prepared {
        Ok(s) => s,
        Err(e) => return users.iter().map(|_| Err(e.detached())).collect(),
    };
    let external_id = config.external_id_field.as_str();
    let mut results: Vec<Option<Result<PushOutcome>>> = users.iter().map(|_| None).collect();
    let mut items = Vec::new();
    for (i, user) in users.iter().enumerate() {
        match mapping::record(user, spec, sobject, external_id) {
            Ok(r) => items.push((i, r)),
            Err(e) => results[i] = Some(Err(e.with_connector(NAME))),
        }
    }
    let push = Push {
        client,
        sobject,
        external_id,
        policy: spec.duplicates,
    };
    for round in rounds_by_key(items, |(_, r)| r.code.to_lowercase()) {
        for chunk in round.chunks(MAX_BATCH) {
            for (i, r) in or_one_by_one(chunk, |c| push.chunk(c)).await {
                results[i] = Some(r);
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::unexpected("push result missing"))))
        .collect()
}

struct Push<'a> {
    client: &'a Client,
    sobject: &'static str,
    external_id: &'a str,
    policy: DuplicatePolicy,
}

fn refused(sobject: &str, code: &str, message: &str, key: &str) -> Error {
    let (kind, hint) = match code {
        "DUPLICATE_VALUE" => (
            ErrorKind::Conflict,
            " (a record with this referral code exists: use update_existing or link_existing)",
        ),
        "DUPLICATE_EXTERNAL_ID" | "MULTIPLE_CHOICES" => (
            ErrorKind::Conflict,
            " (several records have this referral code: mark the field Unique and merge them)",
        ),
        "DUPLICATES_DETECTED" => (
            ErrorKind::Conflict,
            " (an org duplicate rule blocked the save; set duplicate_rule_allow_save if the rule allows saving)",
        ),
        _ => (ErrorKind::Validation, ""),
    };
    Error::new(
        kind,
        format!("{NAME}: Salesforce refused the {sobject} for {key:?}: {code}: {message}{hint}"),
    )
    .with_connector(NAME)
}

impl Push<'_> {
    fn kind(&self) -> ObjectKind {
        if self.sobject == "Lead" {
            ObjectKind::Lead
        } else {
            ObjectKind::Contact
        }
    }

    fn outcome(&self, id: String, action: PushAction) -> Result<PushOutcome> {
        Ok(PushOutcome {
            action,
            links: vec![CrmObjectRef {
                kind: self.kind(),
                id,
            }],
            warnings: Vec::new(),
        })
    }

    /// Writes `records` (upsert by the external id, or create) and maps the answers.
    async fn write(
        &self,
        records: &[(usize, &Record, Map<String, Value>)],
        create: bool,
        action: impl Fn(bool) -> PushAction,
    ) -> Result<Indexed<PushOutcome>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let bodies: Vec<Map<String, Value>> = records.iter().map(|(_, _, b)| b.clone()).collect();
        let written = if create {
            self.client.create(self.sobject, &bodies).await?
        } else {
            self.client
                .upsert(self.sobject, self.external_id, &bodies)
                .await?
        };
        Ok(records
            .iter()
            .zip(written)
            .map(|((i, r, _), w)| {
                (
                    *i,
                    match w {
                        Written::Ok { id, created } => self.outcome(id, action(created)),
                        Written::Refused { code, message } => {
                            Err(refused(self.sobject, &code, &message, &r.code))
                        }
                    },
                )
            })
            .collect())
    }

    async fn chunk(&self, chunk: &[(usize, Record)]) -> Result<Indexed<PushOutcome>> {
        let all = |r: &Record| {
            let mut m = r.defaults.clone();
            m.extend(r.fields.clone());
            m
        };
        let created_or_updated = |created: bool| {
            if created {
                PushAction::Created
            } else {
                PushAction::Updated
            }
        };
        match self.policy {
            DuplicatePolicy::AlwaysCreate => {
                let recs: Vec<_> = chunk.iter().map(|(i, r)| (*i, r, all(r))).collect();
                self.write(&recs, true, |_| PushAction::Created).await
            }
            DuplicatePolicy::UpdateExisting if chunk.iter().all(|(_, r)| r.defaults.is_empty()) => {
                let recs: Vec<_> = chunk
                    .iter()
                    .map(|(i, r)| (*i, r, r.fields.clone()))
                    .collect();
                self.write(&recs, false, created_or_updated).await
            }
            DuplicatePolicy::UpdateExisting => {
                let codes: Vec<String> = chunk.iter().map(|(_, r)| soql_literal(&r.code)).collect();
                let soql = format!(
                    "SELECT Id, {ext} FROM {obj} WHERE {ext} IN ({})",
                    codes.join(", "),
                    ext = self.external_id,
                    obj = self.sobject
                );
                let found = self.client.query(&soql).await?;
                let existing: Vec<String> = found
                    .iter()
                    .filter_map(|r| r.get(self.external_id).and_then(Value::as_str))
                    .map(str::to_lowercase)
                    .collect();
                let (old, new): (Vec<_>, Vec<_>) = chunk
                    .iter()
                    .partition(|(_, r)| existing.contains(&r.code.to_lowercase()));
                let new: Vec<_> = new.into_iter().map(|(i, r)| (*i, r, all(r))).collect();
                let old: Vec<_> = old
                    .into_iter()
                    .map(|(i, r)| (*i, r, r.fields.clone()))
                    .collect();
                let mut out = self.write(&new, false, created_or_updated).await?;
                out.extend(self.write(&old, false, created_or_updated).await?);
                Ok(out)
            }
            DuplicatePolicy::LinkExisting => {
                let emails: Vec<String> =
                    chunk.iter().map(|(_, r)| soql_literal(&r.email)).collect();
                let converted = if self.sobject == "Lead" {
                    " AND IsConverted = false"
                } else {
                    ""
                };
                let soql = format!(
                    "SELECT Id, Email FROM {} WHERE Email IN ({}){converted}",
                    self.sobject,
                    emails.join(", ")
                );
                let found = self.client.query(&soql).await?;
                let by_email: HashMap<String, String> = found
                    .iter()
                    .filter_map(|r| {
                        Some((
                            r.get("Email")?.as_str()?.trim().to_lowercase(),
                            r.get("Id")?.as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                let mut out = Vec::new();
                let mut new = Vec::new();
                for (i, r) in chunk {
                    match by_email.get(&r.email) {
                        Some(id) => {
                            out.push((*i, self.outcome(id.clone(), PushAction::LinkedExisting)))
                        }
                        None => new.push((*i, r, all(r))),
                    }
                }
                out.extend(self.write(&new, false, created_or_updated).await?);
                Ok(out)
            }
        }
    }
}
