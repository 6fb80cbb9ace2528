//! The delivery worker: parse → enrich → history → rules → jobs → timeline.

use chrono::{DateTime, Utc};
use refsync_core::rules::{decide, derive_lead_conversion, resolve_referral};
use refsync_core::{
    Change, CrmEvent, CrmObjectRef, ObjectKind, QualifyAction, ReferralHistory, Result,
};
use serde_json::json;
use tracing::Instrument;

use crate::engine::{Engine, Instance, parse_referral_key, retryable};
use crate::store::{CrmObject, Delivery, NewJob, TimelineEntry};

/// What to do with a delivery after a failed step.
enum Failure {
    Retry(String, Option<std::time::Duration>),
    Dead(String),
}

impl Engine {
    /// Claims due deliveries and processes each one; returns how many were claimed.
    ///
    /// # Errors
    /// Store errors.
    pub async fn process_deliveries_once(&self, now: DateTime<Utc>) -> Result<usize> {
        let limit = i64::try_from(self.inner.config.worker.concurrency.max(1) * 8).unwrap_or(32);
        let claimed = self
            .inner
            .store
            .claim_deliveries(
                &self.inner.worker_id,
                now,
                limit,
                self.inner.config.worker.delivery_lease(),
            )
            .await?;
        let n = claimed.len();
        for d in claimed {
            let span = tracing::info_span!("delivery", instance = %d.instance, delivery_id = d.id, attempt = d.attempts);
            self.process_delivery(d, now).instrument(span).await?;
        }
        Ok(n)
    }

    async fn process_delivery(&self, d: Delivery, now: DateTime<Utc>) -> Result<()> {
        let store = &self.inner.store;
        let outcome = match self.instance(&d.instance) {
            None => Err(Failure::Dead(format!(
                "no connector instance named {:?} (removed from the config?)",
                d.instance
            ))),
            Some(inst) => self.handle_delivery(&inst, &d, now).await?,
        };
        match outcome {
            Ok(()) => {
                store.mark_delivery_processed(d.id, now).await?;
                tracing::info!("delivery processed");
            }
            Err(Failure::Retry(err, retry_after)) => {
                let at = Engine::after(now, self.delay(d.attempts, retry_after));
                let age = (now - d.received_at).to_std().unwrap_or_default();
                if age >= self.inner.config.worker.max_age() {
                    store
                        .mark_delivery_dead(d.id, &format!("gave up after max age: {err}"), now)
                        .await?;
                    self.inner.metrics.inc_dead(&d.instance);
                } else {
                    store.retry_delivery(d.id, &err, at, now).await?;
                    tracing::warn!(error = %err, retry_at = %at, "delivery will be retried");
                }
            }
            Err(Failure::Dead(reason)) => {
                store.mark_delivery_dead(d.id, &reason, now).await?;
                self.inner.metrics.inc_dead(&d.instance);
                tracing::warn!(%reason, "delivery dead-lettered");
            }
        }
        Ok(())
    }

    /// Outer `Result`: store errors; inner: what to do with the delivery.
    async fn handle_delivery(
        &self,
        inst: &Instance,
        d: &Delivery,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<(), Failure>> {
        let request = Engine::request_from_stored(&d.headers, &d.body);
        let reconciled = d.headers.get("origin").and_then(|o| o.as_str())
            == Some(crate::upkeep::ORIGIN_RECONCILE);
        let parsed = if reconciled {
            serde_json::from_slice::<Vec<CrmEvent>>(&d.body)
                .map_err(|e| refsync_core::Error::validation(format!("reconciled events: {e}")))
        } else {
            inst.connector.parse(&request)
        };
        let events = match parsed {
            Ok(events) => events,
            Err(e) => {
                return Ok(Err(Failure::Dead(format!(
                    "unparseable body: {}",
                    e.message()
                ))));
            }
        };
        let enriched = match inst.connector.enrich_batch(events).await {
            Ok(e) => e,
            Err(e) if retryable(&e) => {
                self.inner.metrics.upstream(
                    "connector",
                    inst.connector.info().name,
                    outcome_of(&e),
                );
                return Ok(Err(Failure::Retry(
                    format!("enrich: {}", e.message()),
                    e.retry_after(),
                )));
            }
            Err(e) => {
                return Ok(Err(Failure::Dead(format!("enrich: {}", e.message()))));
            }
        };
        for event in enriched {
            // A derived lead conversion is handled like an event of the same delivery.
            let mut next = Some(event);
            while let Some(event) = next.take() {
                next = self.handle_event(inst, d, &event, now).await?;
            }
        }
        Ok(Ok(()))
    }

    async fn handle_event(
        &self,
        inst: &Instance,
        d: &Delivery,
        event: &CrmEvent,
        now: DateTime<Utc>,
    ) -> Result<Option<CrmEvent>> {
        let store = &self.inner.store;
        let object = CrmObject {
            instance: inst.name.clone(),
            kind: event.object.kind.as_string(),
            id: event.object.id.clone(),
        };
        let mut history = ReferralHistory {
            campaign: inst.campaign.clone(),
            ..ReferralHistory::default()
        };
        if let Some(link) = store.link_by_object(&object).await? {
            history.referral = parse_referral_key(&link.referral_key);
        } else {
            // An object the engine has no link for belongs to the referral of a related object
            // it knows (a deal created for a pushed person).
            for related in &event.related {
                let related = CrmObject {
                    instance: inst.name.clone(),
                    kind: related.kind.as_string(),
                    id: related.id.clone(),
                };
                if let Some(link) = store.link_by_object(&related).await? {
                    history.referral = parse_referral_key(&link.referral_key);
                    break;
                }
            }
        }
        let referral = resolve_referral(event, &history, inst.campaign.as_deref());
        let key = referral.as_ref().map(|k| k.canonical());
        let event_json = serde_json::to_value(event).unwrap_or(json!(null));
        if let Some(key) = &key {
            // Links learnt from the event: the object itself (its referral may have come from the
            // event's own referral code), and the deal a converted lead became — so later
            // webhooks about that deal find the referral without carrying its code.
            store.put_link(key, &object, now).await?;
            if let Change::LeadConverted {
                deal_id: Some(deal),
                ..
            } = &event.change
            {
                let deal = CrmObject {
                    instance: inst.name.clone(),
                    kind: ObjectKind::Deal.as_string(),
                    id: deal.clone(),
                };
                store.put_link(key, &deal, now).await?;
            }
            history.links = store
                .links_by_referral(key)
                .await?
                .into_iter()
                .filter(|l| l.object.instance == inst.name)
                .map(|l| CrmObjectRef {
                    kind: ObjectKind::parse(&l.object.kind),
                    id: l.object.id,
                })
                .collect();
            let mut seen_this = false;
            for entry in store.timeline(key).await? {
                if entry.kind != "event" {
                    continue;
                }
                if let Ok(e) = serde_json::from_value::<CrmEvent>(entry.detail) {
                    if &e == event {
                        seen_this = true;
                    } else {
                        history.events.push(e);
                    }
                }
            }
            if !seen_this {
                store
                    .append_timeline(
                        key,
                        &TimelineEntry {
                            at: now,
                            kind: "event".into(),
                            message: format!(
                                "{} {} {} {} (delivery {})",
                                inst.name,
                                event.object.kind,
                                event.object.id,
                                event.change.type_name(),
                                d.id
                            ),
                            detail: event_json,
                        },
                    )
                    .await?;
            }
        }
        let derived = key
            .as_ref()
            .and_then(|_| derive_lead_conversion(event, &history));
        let decisions = decide(&inst.rules, event, &history, inst.campaign.as_deref());
        for decision in decisions {
            let Some(call) = decision.call else {
                tracing::debug!(
                    rule = decision.verdict.rule(),
                    reason = decision.verdict.reason(),
                    "skip"
                );
                if let Some(key) = &key {
                    store
                        .append_timeline(
                            key,
                            &TimelineEntry {
                                at: now,
                                kind: "skipped".into(),
                                message: format!(
                                    "rule {} did not fire: {}",
                                    decision.verdict.rule(),
                                    decision.verdict.reason()
                                ),
                                detail: json!({"delivery": d.id, "rule": decision.verdict.rule()}),
                            },
                        )
                        .await?;
                }
                continue;
            };
            let (kind, idempotency_key) = match call.action {
                QualifyAction::Qualify => ("qualify", format!("qualify:{}", call.referral_key())),
                QualifyAction::Unqualify => ("unqualify", call.idempotency_key()),
            };
            let outcome = store
                .enqueue(&NewJob {
                    kind: kind.into(),
                    idempotency_key: idempotency_key.clone(),
                    payload: json!({"instance": inst.name, "call": call, "delivery": d.id}),
                    run_at: now,
                })
                .await?;
            let tkey = call.referral.canonical();
            let message = if outcome.is_created() {
                format!(
                    "rule {} fired: {} → {kind} queued (job {})",
                    call.rule,
                    call.reason,
                    outcome.job().id
                )
            } else {
                format!(
                    "rule {} fired: {} → {kind} already queued once for this referral (job {}, {}): not sent again",
                    call.rule,
                    call.reason,
                    outcome.job().id,
                    outcome.job().state.as_str()
                )
            };
            tracing::info!(%idempotency_key, created = outcome.is_created(), "decision");
            store
                .append_timeline(
                    &tkey,
                    &TimelineEntry {
                        at: now,
                        kind: "decision".into(),
                        message,
                        detail: json!({"delivery": d.id, "rule": call.rule, "job": outcome.job().id, "created": outcome.is_created()}),
                    },
                )
                .await?;
        }
        if let Some(derived) = &derived {
            tracing::info!(
                lead = %derived.object.id,
                "lead conversion derived from a deleted lead and a created deal"
            );
        }
        Ok(derived)
    }
}

pub(crate) fn outcome_of(e: &refsync_core::Error) -> &'static str {
    if matches!(e.kind(), refsync_core::ErrorKind::RateLimited { .. }) {
        "rate_limited"
    } else {
        "error"
    }
}
