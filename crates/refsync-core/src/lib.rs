#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod batch;
mod connector;
mod domain;
mod error;
mod event;
mod mapping;
mod platform;
pub mod registry;
pub mod rules;
mod secret;

pub use connector::{Capabilities, Connector, ConnectorInfo, WebhookReply};
pub use domain::{CampaignRef, ReferralKey, ReferredUser, Referrer};
pub use error::{Error, ErrorKind, Result};
pub use event::{Change, CrmEvent, EventObject, ObjectKind, Verification, WebhookRequest};
pub use mapping::{
    CrmObjectRef, DuplicatePolicy, FieldMapping, Placeholder, PushAction, PushOutcome, PushSpec,
    Template,
};
pub use platform::{
    NewUser, PlatformUser, QualifyOutcome, ReferralPlatform, ReferrerRef, Reward, RewardStatus,
};
pub use registry::{
    BuildConnector, BuildContext, BuildPlatform, ConnectorDescriptor, InstanceConfig,
    NormalizeSettings, PlatformDescriptor, Registry,
};
pub use rules::{
    Decision, EventDecisions, QualificationRule, QualifyAction, QualifyCall, ReferralHistory,
    RuleSpec, Verdict,
};
pub use secret::Secret;

#[cfg(feature = "mock")]
pub use connector::MockConnector;
#[cfg(feature = "mock")]
pub use platform::MockReferralPlatform;
#[cfg(feature = "mock")]
pub use rules::MockQualificationRule;

/// Re-exported so connector crates implement [`Connector`] with the same macro version.
pub use async_trait::async_trait;
