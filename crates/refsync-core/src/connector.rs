//! The [`Connector`] trait: one implementation per CRM, shop or webhook source.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::domain::ReferredUser;
use crate::error::{Error, Result};
use crate::event::{CrmEvent, Verification, WebhookRequest};
use crate::mapping::{Placeholder, PushOutcome, PushSpec};

/// What a connector can do. The conformance suite picks its tests from this.
///
/// Build it with struct-update syntax from [`Capabilities::NONE`] so new fields default to off:
/// `Capabilities { webhooks: true, ..Capabilities::NONE }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Receives webhooks: `verify` and `parse` are implemented.
    pub webhooks: bool,
    /// Pushes referred users: `push_referral` is implemented.
    pub push: bool,
    /// Looks up existing records, so the three duplicate policies are enforced by the connector
    /// (a one-way sender such as the generic webhook leaves that to the receiver).
    pub duplicate_lookup: bool,
    /// `enrich` fetches data the webhook lacks.
    pub enrich: bool,
    /// `ensure_subscriptions` creates the CRM's webhook subscriptions.
    pub subscriptions: bool,
    /// `reconcile` polls for changes missed while webhooks were down.
    pub reconcile: bool,
    /// Pushes close together are coalesced into batch calls.
    pub batching: bool,
}

impl Capabilities {
    /// Nothing enabled.
    pub const NONE: Capabilities = Capabilities {
        webhooks: false,
        push: false,
        duplicate_lookup: false,
        enrich: false,
        subscriptions: false,
        reconcile: false,
        batching: false,
    };

    /// The names of the enabled capabilities, in declaration order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.webhooks, "webhooks"),
            (self.push, "push"),
            (self.duplicate_lookup, "duplicate_lookup"),
            (self.enrich, "enrich"),
            (self.subscriptions, "subscriptions"),
            (self.reconcile, "reconcile"),
            (self.batching, "batching"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// Static facts about a connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectorInfo {
    /// The registry name (`pipedrive`, `generic-webhook`); also the `source` of its events.
    pub name: &'static str,
    /// The name people know (`Pipedrive`).
    pub display_name: &'static str,
    /// The vendor API version the connector is pinned to (`v1+v2`, `2026-03`, `n/a`).
    pub api_version: &'static str,
    /// What it can do.
    pub capabilities: Capabilities,
    /// Placeholders a push mapping must include (checked at config load and on push).
    #[serde(serialize_with = "placeholders_as_text")]
    pub required_mappings: &'static [Placeholder],
}

fn placeholders_as_text<S: Serializer>(
    ps: &&'static [Placeholder],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(ps.len()))?;
    for p in ps.iter() {
        seq.serialize_element(&p.to_string())?;
    }
    seq.end()
}

/// An HTTP answer a vendor expects instead of refsync's default JSON one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

impl WebhookReply {
    /// `200` with an empty body.
    pub fn ok() -> Self {
        WebhookReply {
            status: 200,
            content_type: "text/plain; charset=utf-8".into(),
            body: Vec::new(),
        }
    }
}

/// A CRM, shop or webhook source.
///
/// `verify` and `parse` are pure and synchronous (no I/O), so they can be fuzzed and tested on
/// fixtures; everything that talks to the vendor is async. The trait is object safe: the engine
/// holds `Arc<dyn Connector>` picked at run time from the [`crate::Registry`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// Name, pinned API version and capabilities.
    fn info(&self) -> ConnectorInfo;

    /// Checks the request's credentials (signature, basic auth or token) in constant time, and
    /// its timestamp against `now` where the vendor signs one. Errors are
    /// [`crate::ErrorKind::Unauthorized`] with a one-line reason that contains no secret.
    fn verify(&self, request: &WebhookRequest, now: DateTime<Utc>) -> Result<Verification>;

    /// Turns a (verified) request into canonical events. Pure; never panics on any input.
    /// Unknown event types yield no events, not an error; a malformed body is
    /// [`crate::ErrorKind::Validation`].
    fn parse(&self, request: &WebhookRequest) -> Result<Vec<CrmEvent>>;

    /// Recognises a vendor handshake that is not an event — e.g. WooCommerce's unsigned ping
    /// (`webhook_id=N`) when a webhook is created — and returns the reply it needs. Called before
    /// `verify`; a handshake is answered and never stored, so detection must be strict. Pure.
    fn handshake(&self, request: &WebhookRequest) -> Option<WebhookReply> {
        let _ = request;
        None
    }

    /// The reply to send once a delivery is accepted (stored or a duplicate), when the vendor
    /// needs a specific one (Salesforce outbound messages want a SOAP `Ack`). `None`: refsync's
    /// JSON answer. Pure.
    fn acknowledgement(&self, request: &WebhookRequest) -> Option<WebhookReply> {
        let _ = request;
        None
    }

    /// Fetches what the webhook lacks (pipeline, stage, referral code, associations).
    async fn enrich(&self, event: CrmEvent) -> Result<CrmEvent> {
        Ok(event)
    }

    /// Enriches the events of one delivery together, so a connector can fetch what they lack
    /// in batch calls. It may also add events (HubSpot adds `status_changed` `won` to a stage
    /// change into a closed-won stage) or drop them; the result is evaluated in order. The
    /// default enriches each event with [`Connector::enrich`].
    async fn enrich_batch(&self, events: Vec<CrmEvent>) -> Result<Vec<CrmEvent>> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            out.push(self.enrich(event).await?);
        }
        Ok(out)
    }

    /// Creates or updates the referred person in the CRM per `spec`.
    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome>;

    /// Pushes several referred people with the same `spec`: one result per user, in order, so
    /// one bad record fails alone. Connectors with batch endpoints override it (HubSpot upserts
    /// 100 contacts per call); the default pushes one after the other. The engine hands the
    /// push jobs it claims together to this method.
    async fn push_referrals(
        &self,
        users: &[ReferredUser],
        spec: &PushSpec,
    ) -> Vec<Result<PushOutcome>> {
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            out.push(self.push_referral(user, spec).await);
        }
        out
    }

    /// Checks connectivity and credentials.
    async fn health_check(&self) -> Result<()>;

    /// Creates (or repairs) the CRM's webhook subscriptions towards `callback_url`; returns the
    /// subscription ids.
    async fn ensure_subscriptions(&self, callback_url: &str) -> Result<Vec<String>> {
        let _ = callback_url;
        Err(
            Error::unsupported("this connector cannot manage webhook subscriptions")
                .with_connector(self.info().name),
        )
    }

    /// Polls for changes since `since` that webhooks may have missed.
    async fn reconcile(&self, since: DateTime<Utc>) -> Result<Vec<CrmEvent>> {
        let _ = since;
        Err(Error::unsupported("this connector cannot reconcile").with_connector(self.info().name))
    }
}

/// Serializes a list of placeholders, for `refsync connectors --json`.
impl Serialize for Placeholder {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
