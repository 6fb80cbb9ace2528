//! Pushing referred people in batches: contacts by email (batch upsert, or batch read then
//! batch create/update), then deals by their unique referral-code property, created already
//! associated with their contact.
//!
//! Calls per batch of up to 100 referrals (after the first push has read the property list):
//! - contact only, `update_existing`, no contact defaults: 1 (upsert);
//! - contact only, otherwise: 2 (read, create) or 3 (plus update);
//! - with deals: 2 more (read deals, create the missing ones) and, for `update_existing` with
//!   existing deals, 2 more (update them, associate them).
//!
//! A batch HubSpot refuses as a whole (400: one invalid email refuses all) is retried one
//! referral per call, so one bad record fails alone.

use std::collections::{BTreeMap, HashMap};

use refsync_core::{
    CrmObjectRef, DuplicatePolicy, Error, ErrorKind, ObjectKind, PushAction, PushOutcome, PushSpec,
    ReferredUser, Result,
};

use crate::NAME;
use refsync_core::batch::{Indexed, or_one_by_one, rounds_by_key};

use crate::client::{Client, ObjectType, UpsertInput};
use crate::config::{Config, MAX_BATCH};
use crate::mapping::{self, Properties, Target};

/// Pushes `users` with `spec`: one result per user, in order.
pub(crate) async fn push_many(
    client: &Client,
    config: &Config,
    users: &[ReferredUser],
    spec: &PushSpec,
) -> Vec<Result<PushOutcome>> {
    let mut results: Vec<Option<Result<PushOutcome>>> = users.iter().map(|_| None).collect();
    let prepared = async {
        let target = Target::of(spec)?;
        ensure_properties(client, config, spec).await?;
        Ok::<_, Error>(target)
    }
    .await;
    let target = match prepared {
        Ok(t) => t,
        Err(e) => return users.iter().map(|_| Err(e.detached())).collect(),
    };
    let mut items = Vec::new();
    for (i, user) in users.iter().enumerate() {
        match mapping::properties(user, spec, config) {
            Ok(p) => items.push((i, p)),
            Err(e) => results[i] = Some(Err(e.with_connector(NAME))),
        }
    }
    // A batch may name an email once: repeated emails go to later rounds.
    for round in rounds_by_key(items, |(_, p)| p.email.clone()) {
        for chunk in round.chunks(MAX_BATCH) {
            let written = or_one_by_one(chunk, |c| {
                push_chunk(client, config, c, target, spec.duplicates)
            })
            .await;
            for (i, r) in written {
                results[i] = Some(r);
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::unexpected("push result missing"))))
        .collect()
}

/// Checks that every property the push writes exists (creating it when allowed), and that the
/// deal key has unique values.
async fn ensure_properties(client: &Client, config: &Config, spec: &PushSpec) -> Result<()> {
    let (contact, deal) = mapping::properties_used(spec, config)?;
    for (object, names) in [(ObjectType::Contacts, contact), (ObjectType::Deals, deal)] {
        if names.is_empty() {
            continue;
        }
        let mut known = client.properties(object, false).await?;
        if names.iter().any(|n| !known.iter().any(|p| p.name == *n)) {
            known = client.properties(object, true).await?;
        }
        let key =
            (object == ObjectType::Deals).then_some(config.deal_referral_code_property.as_str());
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !known.iter().any(|p| p.name == **n))
            .collect();
        if !missing.is_empty() {
            if !config.create_missing_properties {
                return Err(Error::config(format!(
                    "{NAME}: the {} propert{} {} do{} not exist in this HubSpot account (create {} in Settings > Properties with these internal names, or set create_missing_properties = true)",
                    object.as_str().trim_end_matches('s'),
                    if missing.len() == 1 { "y" } else { "ies" },
                    missing
                        .iter()
                        .map(|m| format!("{m:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if missing.len() == 1 { "es" } else { "" },
                    if missing.len() == 1 { "it" } else { "them" },
                )));
            }
            for name in missing {
                client
                    .create_property(object, name, key == Some(name.as_str()))
                    .await?;
            }
            known = client.properties(object, true).await?;
        }
        if let Some(key) = key
            && !known.iter().any(|p| p.name == key && p.unique)
        {
            return Err(Error::config(format!(
                "{NAME}: the deal property {key:?} does not have unique values; refsync finds the deal of a referral by it (batch read and upsert need a unique property): create a property with \"unique values\" and name it in deal_referral_code_property"
            )));
        }
    }
    Ok(())
}

fn contact_ref(id: &str) -> CrmObjectRef {
    CrmObjectRef {
        kind: ObjectKind::Contact,
        id: id.to_owned(),
    }
}

fn missing(what: &str, key: &str, errors: &[String]) -> Error {
    let why = if errors.is_empty() {
        "HubSpot's answer does not list it".to_owned()
    } else {
        errors.join("; ")
    };
    Error::validation(format!("{NAME}: {what} {key:?} was not written: {why}")).with_connector(NAME)
}

/// Pushes one chunk (distinct emails, at most 100).
async fn push_chunk(
    client: &Client,
    config: &Config,
    chunk: &[(usize, Properties)],
    target: Target,
    policy: DuplicatePolicy,
) -> Result<Indexed<PushOutcome>> {
    // email → (action, contact id), or the error of that referral.
    let mut contacts: HashMap<String, Result<(PushAction, String)>> = HashMap::new();
    let upsert_only = policy == DuplicatePolicy::UpdateExisting
        && chunk.iter().all(|(_, p)| p.contact_defaults.is_empty());
    if upsert_only {
        let inputs: Vec<UpsertInput> = chunk
            .iter()
            .map(|(_, p)| UpsertInput {
                id: p.email.clone(),
                properties: p.contact.clone(),
            })
            .collect();
        let (records, errors) = client
            .batch_upsert(ObjectType::Contacts, "email", &inputs)
            .await?;
        let by_email = match_by(
            &records,
            "email",
            chunk.iter().map(|(_, p)| p.email.as_str()),
        );
        for (_, p) in chunk {
            let r = match by_email.get(&p.email) {
                Some(rec) => Ok((
                    if rec.new {
                        PushAction::Created
                    } else {
                        PushAction::Updated
                    },
                    rec.id.clone(),
                )),
                None => Err(missing("contact", &p.email, &errors)),
            };
            contacts.insert(p.email.clone(), r);
        }
    } else {
        let emails: Vec<String> = chunk.iter().map(|(_, p)| p.email.clone()).collect();
        let existing = client
            .batch_read(ObjectType::Contacts, Some("email"), &emails, &["email"])
            .await?;
        let existing = match_by(&existing, "email", emails.iter().map(String::as_str));
        let mut to_create = Vec::new();
        let mut to_update = Vec::new();
        for (_, p) in chunk {
            match (existing.get(&p.email), policy) {
                (None, _) => to_create.push(p),
                (Some(rec), DuplicatePolicy::UpdateExisting) => {
                    to_update.push((rec.id.clone(), p.contact.clone()));
                    contacts.insert(p.email.clone(), Ok((PushAction::Updated, rec.id.clone())));
                }
                (Some(rec), DuplicatePolicy::LinkExisting) => {
                    contacts.insert(
                        p.email.clone(),
                        Ok((PushAction::LinkedExisting, rec.id.clone())),
                    );
                }
                (Some(rec), DuplicatePolicy::AlwaysCreate) => {
                    contacts.insert(
                        p.email.clone(),
                        Err(Error::new(
                            ErrorKind::Conflict,
                            format!(
                                "{NAME}: contact {} already has email {:?}, and HubSpot keeps one contact per email: always_create cannot make a second one (use update_existing or link_existing)",
                                rec.id, p.email
                            ),
                        )
                        .with_connector(NAME)),
                    );
                }
            }
        }
        if !to_create.is_empty() {
            let props: Vec<BTreeMap<String, String>> = to_create
                .iter()
                .map(|p| {
                    let mut all = p.contact_defaults.clone();
                    all.extend(p.contact.clone());
                    all
                })
                .collect();
            let (records, errors) = client
                .batch_create(ObjectType::Contacts, &props, &[])
                .await?;
            let by_email = match_by(
                &records,
                "email",
                to_create.iter().map(|p| p.email.as_str()),
            );
            for p in to_create {
                let r = match by_email.get(&p.email) {
                    Some(rec) => Ok((PushAction::Created, rec.id.clone())),
                    None => Err(missing("contact", &p.email, &errors)),
                };
                contacts.insert(p.email.clone(), r);
            }
        }
        client
            .batch_update(ObjectType::Contacts, &to_update)
            .await?;
    }

    let mut deals: HashMap<String, Result<String>> = HashMap::new();
    if target == Target::Deal {
        let ready: Vec<(&Properties, &String, PushAction)> = chunk
            .iter()
            .filter_map(|(_, p)| match contacts.get(&p.email) {
                Some(Ok((action, id))) => Some((p, id, *action)),
                _ => None,
            })
            .collect();
        let key = config.deal_referral_code_property.as_str();
        let codes: Vec<String> = ready.iter().map(|(p, _, _)| p.code.clone()).collect();
        let existing = client
            .batch_read(ObjectType::Deals, Some(key), &codes, &[key])
            .await?;
        let existing = match_by(&existing, key, codes.iter().map(String::as_str));
        let mut create = Vec::new();
        let mut update = Vec::new();
        let mut associate = Vec::new();
        for (p, contact, _) in &ready {
            match existing.get(&p.code.to_lowercase()) {
                None => create.push((*p, (*contact).clone())),
                Some(rec) => {
                    if policy == DuplicatePolicy::UpdateExisting {
                        update.push((rec.id.clone(), p.deal.clone()));
                        associate.push((rec.id.clone(), (*contact).clone()));
                    }
                    deals.insert(p.code.clone(), Ok(rec.id.clone()));
                }
            }
        }
        if !create.is_empty() {
            let props: Vec<BTreeMap<String, String>> = create
                .iter()
                .map(|(p, _)| {
                    let mut all = p.deal_defaults.clone();
                    all.extend(p.deal.clone());
                    all
                })
                .collect();
            let with: Vec<Option<String>> = create.iter().map(|(_, c)| Some(c.clone())).collect();
            let (records, errors) = client
                .batch_create(ObjectType::Deals, &props, &with)
                .await?;
            let by_code = match_by(&records, key, create.iter().map(|(p, _)| p.code.as_str()));
            for (p, _) in create {
                let r = match by_code.get(&p.code.to_lowercase()) {
                    Some(rec) => Ok(rec.id.clone()),
                    None => Err(missing("deal of referral", &p.code, &errors)),
                };
                deals.insert(p.code.clone(), r);
            }
        }
        client.batch_update(ObjectType::Deals, &update).await?;
        client.associate_deals(&associate).await?;
    }

    Ok(chunk
        .iter()
        .map(|(i, p)| {
            let r = match contacts.remove(&p.email) {
                Some(Ok((action, contact))) => {
                    let mut links = vec![contact_ref(&contact)];
                    match deals.remove(&p.code) {
                        Some(Ok(deal)) => {
                            links.push(CrmObjectRef {
                                kind: ObjectKind::Deal,
                                id: deal,
                            });
                            Ok(PushOutcome {
                                action,
                                links,
                                warnings: Vec::new(),
                            })
                        }
                        Some(Err(e)) => Err(e),
                        None if target == Target::Deal => {
                            Err(Error::unexpected("deal step skipped").with_connector(NAME))
                        }
                        None => Ok(PushOutcome {
                            action,
                            links,
                            warnings: Vec::new(),
                        }),
                    }
                }
                Some(Err(e)) => Err(e),
                None => Err(Error::unexpected("contact step skipped").with_connector(NAME)),
            };
            (*i, r)
        })
        .collect())
}

/// Records keyed by the lower-cased value of `property` (look up lower-cased); when HubSpot's answer lacks the
/// property and there is one record per key, they are matched in order.
fn match_by<'a>(
    records: &[crate::client::Record],
    property: &str,
    keys: impl Iterator<Item = &'a str>,
) -> HashMap<String, crate::client::Record> {
    let keys: Vec<String> = keys.map(str::to_lowercase).collect();
    let mut out: HashMap<String, crate::client::Record> = records
        .iter()
        .filter_map(|r| {
            let v = r.properties.get(property)?.trim().to_lowercase();
            Some((v, r.clone()))
        })
        .collect();
    if out.is_empty() && records.len() == keys.len() {
        out = keys.into_iter().zip(records.iter().cloned()).collect();
    }
    out
}
