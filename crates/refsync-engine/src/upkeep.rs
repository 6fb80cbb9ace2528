//! Upkeep of connector instances: webhook subscriptions (`ensure_subscriptions`) and polling for
//! changes webhooks missed (`reconcile`). Reconciled events are stored as a delivery like any
//! webhook (deduplicated by their delivery ids), so the worker, the rules and the "qualified at
//! most once" guarantee treat them exactly as webhook events.

use chrono::{DateTime, Utc};
use refsync_core::{CrmEvent, Error, ErrorKind, Result};

use crate::engine::Engine;
use crate::ingress::IngestOutcome;
use crate::store::{InsertOutcome, NewDelivery};

/// The marker in a stored delivery's request metadata that its body is canonical events from
/// `reconcile`, not a vendor payload. It is set only here: webhook requests cannot carry it,
/// since the metadata is built by the engine, not copied from the request.
pub(crate) const ORIGIN_RECONCILE: &str = "reconcile";

/// What one reconcile run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Events the connector returned.
    pub events: usize,
    /// How they were stored (`None` when there were none).
    pub outcome: Option<IngestOutcome>,
}

impl Engine {
    /// The URL the CRM should call for `instance`: `<server.public_base_url>/hooks/<instance>`.
    pub fn hook_url(&self, instance: &str) -> Option<String> {
        self.inner
            .config
            .server
            .public_base_url
            .as_deref()
            .map(|base| format!("{}/hooks/{instance}", base.trim_end_matches('/')))
    }

    /// Creates or repairs the CRM's webhook subscriptions of `instance` towards `callback_url`
    /// (default: [`Engine::hook_url`]); returns the subscription ids.
    ///
    /// # Errors
    /// Not found for an unknown instance; config when no URL is known; the connector's errors
    /// (unsupported when it cannot manage subscriptions).
    pub async fn ensure_subscriptions(
        &self,
        instance: &str,
        callback_url: Option<&str>,
    ) -> Result<Vec<String>> {
        let inst = self.instance(instance).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no connector instance named {instance:?}"),
            )
        })?;
        let url = match callback_url {
            Some(u) => u.to_owned(),
            None => self.hook_url(instance).ok_or_else(|| {
                Error::config(
                    "server.public_base_url is not set: the CRM needs a public URL to call",
                )
            })?,
        };
        let ids = inst.connector.ensure_subscriptions(&url).await?;
        tracing::info!(instance, subscriptions = ?ids, "webhook subscriptions in place");
        Ok(ids)
    }

    /// Asks `instance`'s connector for changes since `since` and stores them as one delivery
    /// (deduplicated by the events' delivery ids, so polling the same window twice changes
    /// nothing).
    ///
    /// # Errors
    /// Not found for an unknown instance; the connector's errors; store errors.
    pub async fn reconcile(
        &self,
        instance: &str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ReconcileReport> {
        let inst = self.instance(instance).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no connector instance named {instance:?}"),
            )
        })?;
        let events = inst.connector.reconcile(since).await?;
        let n = events.len();
        let outcome = if events.is_empty() {
            None
        } else {
            Some(self.ingest_events(instance, &events, now).await?)
        };
        tracing::info!(instance, events = n, since = %since, "reconciled");
        Ok(ReconcileReport { events: n, outcome })
    }

    /// Stores canonical events produced by the engine itself (reconcile) as one delivery.
    pub(crate) async fn ingest_events(
        &self,
        instance: &str,
        events: &[CrmEvent],
        now: DateTime<Utc>,
    ) -> Result<IngestOutcome> {
        let mut ids: Vec<&str> = events
            .iter()
            .filter_map(|e| e.delivery_id.as_deref())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let body = serde_json::to_vec(events)
            .map_err(|e| Error::unexpected(format!("events do not serialize: {e}")))?;
        let dedup_key = if ids.is_empty() {
            crate::ingress::body_hash(&body)
        } else {
            format!("ids:{}", ids.join(","))
        };
        let new = NewDelivery {
            instance: instance.to_owned(),
            dedup_key,
            headers: serde_json::json!({
                "method": "POST",
                "url": "",
                "headers": [],
                "origin": ORIGIN_RECONCILE,
            }),
            body,
            received_at: now,
        };
        Ok(match self.inner.store.insert_delivery(&new).await? {
            InsertOutcome::Inserted(id) => IngestOutcome::Accepted { id },
            InsertOutcome::Duplicate(id) => IngestOutcome::Duplicate { id },
        })
    }

    /// One upkeep round for every instance: subscriptions where the connector manages them and
    /// a public URL is set, then reconcile since `since` where the connector can. Errors are
    /// logged per instance, never fatal.
    pub async fn upkeep_once(&self, since: DateTime<Utc>, now: DateTime<Utc>) {
        for name in self.instance_names() {
            let Some(inst) = self.instance(&name) else {
                continue;
            };
            let caps = inst.connector.info().capabilities;
            if caps.subscriptions
                && self.hook_url(&name).is_some()
                && let Err(e) = self.ensure_subscriptions(&name, None).await
            {
                tracing::warn!(instance = %name, error = %e, "ensure_subscriptions failed");
            }
            if caps.reconcile
                && let Err(e) = self.reconcile(&name, since, now).await
            {
                tracing::warn!(instance = %name, error = %e, "reconcile failed");
            }
        }
    }
}
