//! The [`ReferralPlatform`] trait: where qualify calls go (Referral Factory's API or the
//! embedded ledger).

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ReferralKey;
use crate::error::Result;
use crate::rules::QualifyCall;

/// How a new user names their referrer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum ReferrerRef {
    /// By platform user id.
    Id(String),
    /// By the referrer's referral code.
    Code(String),
    /// By the referrer's email.
    Email(String),
}

/// A user to create on the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    /// Campaign id.
    pub campaign_id: String,
    /// First name.
    pub first_name: String,
    /// Email.
    pub email: String,
    /// Who referred them (makes them a "Person Invited").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<ReferrerRef>,
    /// Campaign custom fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Whether the platform sends its welcome notification.
    #[serde(default)]
    pub notify: bool,
}

/// A user as the platform knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformUser {
    /// Platform user id.
    pub id: String,
    /// Campaign id.
    pub campaign_id: String,
    /// Their referral code.
    pub code: String,
    /// Their sharing link.
    #[serde(default)]
    pub url: Option<String>,
    /// First name.
    pub first_name: String,
    /// Email.
    pub email: String,
    /// Id of the user who referred them.
    #[serde(default)]
    pub referrer_id: Option<String>,
    /// When they qualified; `None` while pending.
    #[serde(default)]
    pub qualified_at: Option<DateTime<Utc>>,
    /// Coupon issued to them, if any.
    #[serde(default)]
    pub coupon: Option<String>,
}

/// The result of a qualify or unqualify call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum QualifyOutcome {
    /// The referral is now qualified (rewards become due).
    Qualified {
        /// The user, when the platform returned it.
        user: Option<PlatformUser>,
    },
    /// It already was; nothing was changed (idempotent).
    AlreadyQualified {
        /// When it qualified.
        qualified_at: Option<DateTime<Utc>>,
    },
    /// The qualification was reverted.
    Unqualified,
    /// It was not qualified; nothing was changed.
    NotQualified,
}

/// State of a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardStatus {
    /// Earned, not yet issued.
    Due,
    /// Issued to the recipient.
    Issued,
    /// Cancelled.
    Cancelled,
}

/// A reward on the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reward {
    /// Reward id (what issue/cancel take).
    pub id: String,
    /// The user who receives it.
    pub recipient_id: String,
    /// `amount`, `commission`, `coupon` or `custom`.
    pub metric: String,
    /// Status.
    pub status: RewardStatus,
    /// Amount in minor units or points, when the metric has one.
    #[serde(default)]
    pub amount: Option<i64>,
    /// Coupon code, for coupon rewards.
    #[serde(default)]
    pub coupon: Option<String>,
}

/// A referral platform.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ReferralPlatform: Send + Sync + fmt::Debug {
    /// The registry name (`referral-factory`, `ledger`).
    fn name(&self) -> &'static str;
    /// Creates a user, with referrer attribution when given.
    async fn create_user(&self, user: &NewUser) -> Result<PlatformUser>;
    /// Looks a user up; `None` when there is no such user.
    async fn get_user(&self, key: &ReferralKey) -> Result<Option<PlatformUser>>;
    /// Qualifies the referral (idempotent: an already-qualified referral reports so).
    async fn qualify(&self, call: &QualifyCall) -> Result<QualifyOutcome>;
    /// Reverts a qualification.
    async fn unqualify(&self, call: &QualifyCall) -> Result<QualifyOutcome>;
    /// Rewards that are due.
    async fn rewards_due(&self) -> Result<Vec<Reward>>;
    /// Issues a due reward.
    async fn issue_reward(&self, id: &str) -> Result<Reward>;
    /// Cancels a due reward.
    async fn cancel_reward(&self, id: &str) -> Result<Reward>;
}
