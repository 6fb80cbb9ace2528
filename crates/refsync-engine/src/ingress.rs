//! Ingest: verify → dedup key → persist. The HTTP side is in [`crate::admin`]'s router.

use chrono::{DateTime, Utc};
use refsync_core::{Error, ErrorKind, Result, WebhookReply, WebhookRequest};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::engine::Engine;
use crate::store::{InsertOutcome, NewDelivery};

/// What ingest did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngestOutcome {
    /// A vendor handshake (not an event): answered with this reply, nothing stored.
    Handshake {
        /// The reply the vendor expects.
        reply: WebhookReply,
    },
    /// Stored as a new delivery, to be processed by the workers.
    Accepted {
        /// The delivery id.
        id: i64,
    },
    /// Already stored (same vendor event ids or same body): nothing changed.
    Duplicate {
        /// The existing delivery id.
        id: i64,
    },
    /// Signed, but the body does not parse: stored as a dead letter with the reason
    /// (replayable after a config fix).
    DeadLettered {
        /// The delivery id.
        id: i64,
        /// Why.
        reason: String,
    },
}

impl IngestOutcome {
    /// The delivery id (none for a handshake).
    pub fn id(&self) -> Option<i64> {
        match self {
            IngestOutcome::Accepted { id }
            | IngestOutcome::Duplicate { id }
            | IngestOutcome::DeadLettered { id, .. } => Some(*id),
            IngestOutcome::Handshake { .. } => None,
        }
    }
}

/// `sha256:<hex>` of a body.
pub fn body_hash(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Engine {
    /// Ingests one webhook request for `instance`: verify (nothing is stored when it fails),
    /// compute the dedup key, persist.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown instance; [`ErrorKind::Unauthorized`] when the
    /// connector rejects the request (nothing stored); store errors.
    pub async fn ingest(
        &self,
        instance: &str,
        request: WebhookRequest,
        now: DateTime<Utc>,
    ) -> Result<IngestOutcome> {
        let span = tracing::info_span!("ingest", instance = %instance, delivery_id = tracing::field::Empty);
        self.ingest_inner(instance, request, now)
            .instrument(span)
            .await
    }

    async fn ingest_inner(
        &self,
        instance: &str,
        request: WebhookRequest,
        now: DateTime<Utc>,
    ) -> Result<IngestOutcome> {
        let m = &self.inner.metrics;
        let Some(inst) = self.instance(instance) else {
            // A fixed label: request paths must not create metric series.
            m.inc_rejected("(unknown)", "unknown_instance");
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no connector instance named {instance:?}"),
            ));
        };
        if let Some(reply) = inst.connector.handshake(&request) {
            tracing::info!("vendor handshake answered, nothing stored");
            return Ok(IngestOutcome::Handshake { reply });
        }
        if let Err(e) = inst.connector.verify(&request, now) {
            m.inc_rejected(instance, "unauthorized");
            tracing::info!(reason = %e.message(), "webhook rejected");
            let msg = e.message().lines().next().unwrap_or("invalid credentials");
            return Err(Error::unauthorized(msg.to_owned()));
        }
        m.inc_received(instance);
        let parsed = inst.connector.parse(&request);
        let dedup_key = match &parsed {
            Ok(events) => {
                let mut ids: Vec<&str> = events
                    .iter()
                    .filter_map(|e| e.delivery_id.as_deref())
                    .filter(|s| !s.is_empty())
                    .collect();
                if ids.is_empty() {
                    body_hash(&request.body)
                } else {
                    ids.sort_unstable();
                    ids.dedup();
                    format!("ids:{}", ids.join(","))
                }
            }
            Err(_) => body_hash(&request.body),
        };
        let new = NewDelivery {
            instance: instance.to_owned(),
            dedup_key,
            headers: Engine::stored_headers(&request),
            body: request.body,
            received_at: now,
        };
        let outcome = self.inner.store.insert_delivery(&new).await?;
        let stored_id = match outcome {
            InsertOutcome::Inserted(id) | InsertOutcome::Duplicate(id) => id,
        };
        tracing::Span::current().record("delivery_id", stored_id);
        match (outcome, parsed) {
            (InsertOutcome::Duplicate(id), _) => {
                m.inc_deduplicated(instance);
                tracing::info!(id, "duplicate delivery");
                Ok(IngestOutcome::Duplicate { id })
            }
            (InsertOutcome::Inserted(id), Ok(_)) => {
                tracing::info!(id, "delivery stored");
                Ok(IngestOutcome::Accepted { id })
            }
            (InsertOutcome::Inserted(id), Err(e)) => {
                let reason = format!("unparseable body: {}", e.message());
                self.inner
                    .store
                    .mark_delivery_dead(id, &reason, now)
                    .await?;
                m.inc_dead(instance);
                tracing::warn!(id, %reason, "delivery dead-lettered");
                Ok(IngestOutcome::DeadLettered { id, reason })
            }
        }
    }
}
