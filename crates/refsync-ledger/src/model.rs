//! The ledger's own types: campaigns, users, reward rules, rewards, coupons, list queries and
//! qualification results.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use refsync_core::{Error, PlatformUser, QualifyOutcome, Reward, RewardStatus};
use serde::{Deserialize, Serialize};

/// A referral campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    /// Campaign id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Base of the users' referral links (`<base>/<code>`), when configured.
    pub link_base_url: Option<String>,
    /// When the campaign was created.
    pub created_at: DateTime<Utc>,
}

/// A campaign to create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCampaign {
    /// Display name (required, not blank).
    pub name: String,
    /// Base of the referral links; defaults to the ledger's `link_base_url` setting.
    #[serde(default)]
    pub link_base_url: Option<String>,
}

/// Whether a user joined on their own or was referred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserType {
    /// Joined to refer others ("Person Referring"); cannot be qualified.
    PersonReferring,
    /// Referred by someone ("Person Invited", a lead); qualifies once.
    PersonInvited,
}

impl UserType {
    /// The wire form (`person_referring`, `person_invited`).
    pub fn as_str(self) -> &'static str {
        match self {
            UserType::PersonReferring => "person_referring",
            UserType::PersonInvited => "person_invited",
        }
    }
    /// The label Referral Factory's dashboard uses.
    pub fn label(self) -> &'static str {
        match self {
            UserType::PersonReferring => "Person Referring",
            UserType::PersonInvited => "Person Invited",
        }
    }
}

/// A user of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub id: i64,
    /// Campaign id.
    pub campaign_id: i64,
    /// Who referred them (`None` for a Person Referring).
    pub referrer_id: Option<i64>,
    /// Their unique referral code.
    pub code: String,
    /// Their referral link (`<link base>/<code>`), when the campaign has a link base.
    pub url: Option<String>,
    /// First name.
    pub first_name: String,
    /// Email as given.
    pub email: String,
    /// Person Referring or Person Invited.
    pub user_type: UserType,
    /// How they were added (`Api`, `Added`...).
    pub source: String,
    /// Campaign custom fields, in the order given.
    pub meta: Vec<MetaField>,
    /// When they joined.
    pub signed_up_at: DateTime<Utc>,
    /// When they qualified; `None` while pending.
    pub qualified_at: Option<DateTime<Utc>>,
    /// The coupon assigned to them, if any.
    pub coupon: Option<String>,
}

impl User {
    /// The core form of the user.
    pub fn to_platform_user(&self) -> PlatformUser {
        PlatformUser {
            id: self.id.to_string(),
            campaign_id: self.campaign_id.to_string(),
            code: self.code.clone(),
            url: self.url.clone(),
            first_name: self.first_name.clone(),
            email: self.email.clone(),
            referrer_id: self.referrer_id.map(|r| r.to_string()),
            qualified_at: self.qualified_at,
            coupon: self.coupon.clone(),
        }
    }
}

/// One campaign custom field of a user (`{field, value}` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaField {
    /// Field name.
    pub field: String,
    /// Value.
    pub value: String,
}

/// Who receives the rewards of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// The Person Referring.
    Referrer,
    /// The Person Invited.
    Invited,
    /// Both: one reward each.
    Both,
}

/// When a rule's rewards become due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// When the Person Invited is created with a referrer.
    WhenInvited,
    /// When the Person Invited qualifies (cancelled again, while still due, by an unqualify).
    WhenQualified,
}

/// What kind of reward a rule gives (Referral Factory's reward metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A fixed amount (minor units or points).
    Amount,
    /// A commission (an integer: percent or minor units, as the program defines it).
    Commission,
    /// A coupon code.
    Coupon,
    /// Anything else, described in words.
    Custom,
}

/// Every metric, in wire order.
pub const METRICS: [Metric; 4] = [
    Metric::Amount,
    Metric::Commission,
    Metric::Coupon,
    Metric::Custom,
];

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The wire / database form.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                let t = s.trim().to_ascii_lowercase().replace('-', "_");
                match t.as_str() {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(Error::validation(format!(
                        "{s:?} is not one of: {}",
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}

text_enum!(Recipient { Referrer => "referrer", Invited => "invited", Both => "both" });
text_enum!(Trigger { WhenInvited => "when_invited", WhenQualified => "when_qualified" });
text_enum!(Metric { Amount => "amount", Commission => "commission", Coupon => "coupon", Custom => "custom" });

impl FromStr for UserType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "person_referring" => Ok(UserType::PersonReferring),
            "person_invited" => Ok(UserType::PersonInvited),
            _ => Err(Error::unexpected(format!("unknown user type {s:?}"))),
        }
    }
}

/// A reward rule of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardRule {
    /// Rule id (`reward_id` of the rewards it produces).
    pub id: i64,
    /// Campaign id.
    pub campaign_id: i64,
    /// Who receives the reward.
    pub recipient: Recipient,
    /// When it becomes due.
    pub trigger: Trigger,
    /// What it is.
    pub metric: Metric,
    /// Amount, for `amount` and `commission`.
    pub amount: Option<i64>,
    /// Coupon code (`coupon`) or description (`custom`).
    pub value: Option<String>,
    /// At most this many referrals of one referrer earn this rule's rewards.
    pub cap_per_referrer: Option<i64>,
}

/// A reward rule to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRewardRule {
    /// Who receives the reward.
    pub recipient: Recipient,
    /// When it becomes due.
    pub trigger: Trigger,
    /// What it is.
    pub metric: Metric,
    /// The value: an integer for `amount` / `commission`, a coupon code for `coupon`, a
    /// description for `custom`.
    pub value: String,
    /// At most this many referrals of one referrer earn this rule's rewards (≥ 1).
    #[serde(default)]
    pub cap_per_referrer: Option<i64>,
}

/// A reward: made due by a rule for one referral, then issued or cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardRecord {
    /// Reward id.
    pub id: i64,
    /// The rule that made it due (`reward_id` on the wire).
    pub rule_id: i64,
    /// Campaign id.
    pub campaign_id: i64,
    /// Who receives it.
    pub recipient_id: i64,
    /// The Person Invited whose invitation or qualification made it due.
    pub referral_id: i64,
    /// That referral's referrer.
    pub referrer_id: i64,
    /// The rule's trigger.
    pub trigger: Trigger,
    /// What it is.
    pub metric: Metric,
    /// Amount, for `amount` and `commission`.
    pub amount: Option<i64>,
    /// Coupon code (`coupon`) or description (`custom`).
    pub value: Option<String>,
    /// Due, issued or cancelled.
    pub status: RewardStatus,
    /// When it became due.
    pub created_at: DateTime<Utc>,
    /// When it was issued.
    pub issued_at: Option<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Why it was cancelled (`unqualified`, `cancelled`).
    pub cancel_reason: Option<String>,
}

impl RewardRecord {
    /// The core form of the reward.
    pub fn to_reward(&self) -> Reward {
        Reward {
            id: self.id.to_string(),
            recipient_id: self.recipient_id.to_string(),
            metric: self.metric.as_str().to_owned(),
            status: self.status,
            amount: self.amount,
            coupon: self.coupon().map(str::to_owned),
        }
    }
    /// The coupon code, for coupon rewards.
    pub fn coupon(&self) -> Option<&str> {
        match self.metric {
            Metric::Coupon => self.value.as_deref(),
            _ => None,
        }
    }
    /// `amount 1000`, `coupon WELCOME10`, `custom a T-shirt`.
    pub fn describe(&self) -> String {
        match (self.metric, self.amount, &self.value) {
            (m, Some(a), _) => format!("{m} {a}"),
            (m, None, Some(v)) => format!("{m} {v}"),
            (m, None, None) => m.to_string(),
        }
    }
}

/// The text form of a reward status.
pub fn status_str(status: RewardStatus) -> &'static str {
    match status {
        RewardStatus::Due => "due",
        RewardStatus::Issued => "issued",
        RewardStatus::Cancelled => "cancelled",
    }
}

pub(crate) fn parse_status(s: &str) -> Result<RewardStatus, Error> {
    match s {
        "due" => Ok(RewardStatus::Due),
        "issued" => Ok(RewardStatus::Issued),
        "cancelled" => Ok(RewardStatus::Cancelled),
        _ => Err(Error::unexpected(format!("unknown reward status {s:?}"))),
    }
}

/// The result of adding a batch of coupon codes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponBatch {
    /// Codes added.
    pub added: usize,
    /// Codes skipped because they already exist (coupons are unique across the ledger,
    /// compared case-insensitively) or repeat within the batch.
    pub duplicates: Vec<String>,
}

/// Coupon pool usage of a campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponStats {
    /// Codes in the pool.
    pub total: i64,
    /// Codes assigned to users.
    pub assigned: i64,
    /// Assigned codes redeemed (used to qualify).
    pub redeemed: i64,
}

impl CouponStats {
    /// Codes still available.
    pub fn unused(&self) -> i64 {
        self.total - self.assigned
    }
}

/// One qualification of a user, kept for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualificationRecord {
    /// Record id.
    pub id: i64,
    /// The qualified user.
    pub user_id: i64,
    /// When it qualified.
    pub qualified_at: DateTime<Utc>,
    /// How (`id`, `code`, `email`, `coupon`, then the caller's label).
    pub via: String,
    /// When it was reverted, if it was.
    pub unqualified_at: Option<DateTime<Utc>>,
}

/// The result of [`crate::Ledger::qualify`] or [`crate::Ledger::unqualify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Qualification {
    /// The user is now qualified; `rewards` became due (created or restored) with it.
    Qualified {
        /// The user, as qualified.
        user: User,
        /// The rewards that became due.
        rewards: Vec<RewardRecord>,
    },
    /// The user already was qualified; nothing changed.
    AlreadyQualified {
        /// The user (with the original `qualified_at`).
        user: User,
    },
    /// The qualification was reverted; `cancelled` due rewards were cancelled.
    Unqualified {
        /// The user, now pending.
        user: User,
        /// Rewards cancelled by the reversal (issued rewards are never taken back).
        cancelled: Vec<RewardRecord>,
    },
    /// The user was not qualified; nothing changed.
    NotQualified {
        /// The user.
        user: User,
    },
    /// Nothing was done: the key names no referral and is ignored by design (a coupon this
    /// ledger did not issue, as Referral Factory ignores unknown coupons).
    Ignored {
        /// Why.
        reason: String,
    },
}

impl Qualification {
    /// The user concerned, unless ignored.
    pub fn user(&self) -> Option<&User> {
        match self {
            Qualification::Qualified { user, .. }
            | Qualification::AlreadyQualified { user }
            | Qualification::Unqualified { user, .. }
            | Qualification::NotQualified { user } => Some(user),
            Qualification::Ignored { .. } => None,
        }
    }
    /// A short message (`qualified`, `already qualified`, `unqualified`, `not qualified`,
    /// `ignored: ...`).
    pub fn message(&self) -> String {
        match self {
            Qualification::Qualified { .. } => "qualified".into(),
            Qualification::AlreadyQualified { .. } => "already qualified".into(),
            Qualification::Unqualified { .. } => "unqualified".into(),
            Qualification::NotQualified { .. } => "not qualified".into(),
            Qualification::Ignored { reason } => format!("ignored: {reason}"),
        }
    }
    /// The core outcome. `Ignored` becomes [`QualifyOutcome::NotQualified`] ("nothing was
    /// changed"): the core enum has no separate variant for it.
    pub fn to_outcome(&self) -> QualifyOutcome {
        match self {
            Qualification::Qualified { user, .. } => QualifyOutcome::Qualified {
                user: Some(user.to_platform_user()),
            },
            Qualification::AlreadyQualified { user } => QualifyOutcome::AlreadyQualified {
                qualified_at: user.qualified_at,
            },
            Qualification::Unqualified { .. } => QualifyOutcome::Unqualified,
            Qualification::NotQualified { .. } | Qualification::Ignored { .. } => {
                QualifyOutcome::NotQualified
            }
        }
    }
}

/// A comparison of a list filter (`filter[<field>][<op>]=<value>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    /// `=`; the value `null` matches missing values.
    Equal,
    /// `>`.
    Gt,
    /// `<`.
    Lt,
    /// `>=`.
    Gte,
    /// `<=`.
    Lte,
    /// Case-insensitive `LIKE` with `%` wildcards (text fields).
    Like,
}

text_enum!(FilterOp { Equal => "equal", Gt => "gt", Lt => "lt", Gte => "gte", Lte => "lte", Like => "like" });

/// One list filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// The field (as on the wire: `email`, `qualified_at`, `reward_id`...).
    pub field: String,
    /// The comparison.
    pub op: FilterOp,
    /// The value (times may be RFC 3339 or a prefix such as `2026-01-31`).
    pub value: String,
}

impl Filter {
    /// A filter.
    pub fn new(field: impl Into<String>, op: FilterOp, value: impl Into<String>) -> Self {
        Filter {
            field: field.into(),
            op,
            value: value.into(),
        }
    }
}

/// Which page of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagination {
    /// 1-based page number (0 is read as 1).
    pub page: u32,
    /// Items per page, 1 to [`MAX_PER_PAGE`] (smaller or larger values are read as the
    /// nearest bound).
    pub per_page: u32,
}

/// The largest page size of a list (Referral Factory's `per_page` limit).
pub const MAX_PER_PAGE: u32 = 250;

impl Pagination {
    /// The page as lists read it: `page` at least 1, `per_page` within 1..=[`MAX_PER_PAGE`].
    pub fn clamped(self) -> Pagination {
        Pagination {
            page: self.page.max(1),
            per_page: self.per_page.clamp(1, MAX_PER_PAGE),
        }
    }
    /// How many items come before this page (no overflow for any page number).
    pub fn offset(self) -> u64 {
        let p = self.clamped();
        u64::from(p.page - 1).saturating_mul(u64::from(p.per_page))
    }
}

/// Filters, order and page of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Filters, all of which must match.
    pub filters: Vec<Filter>,
    /// Field to order by (default `id`).
    pub order_by: Option<String>,
    /// Descending order.
    pub descending: bool,
    /// The page; `None` returns every row.
    pub page: Option<Pagination>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Matching items across all pages.
    pub total: i64,
    /// This page number (1 when unpaginated).
    pub page: u32,
    /// Page size (the item count when unpaginated).
    pub per_page: u32,
}

impl<T> Page<T> {
    /// The number of the last page (at least 1).
    pub fn last_page(&self) -> u32 {
        if self.per_page == 0 || self.total <= 0 {
            return 1;
        }
        u32::try_from(
            self.total
                .saturating_add(i64::from(self.per_page) - 1)
                .saturating_div(i64::from(self.per_page)),
        )
        .unwrap_or(u32::MAX)
        .max(1)
    }
}

/// Which rewards to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardQuery {
    /// Only this status.
    pub status: Option<RewardStatus>,
    /// Only this metric.
    pub metric: Option<Metric>,
    /// Only this campaign.
    pub campaign_id: Option<i64>,
    /// Only rewards received by, or made due by, this user.
    pub user_id: Option<i64>,
    /// Filters, order and page.
    pub list: ListQuery,
}

/// A field-level validation message, attached as the [`std::error::Error::source`] of a
/// [`refsync_core::Error`] so the HTTP API can answer `{"errors": {"<field>": [...]}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The request field (`email`, `referrer`, `campaign_id`, `filter[id][gt]`...).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// The request field an error is about, when it carries a [`FieldError`].
pub fn error_field(error: &Error) -> Option<&FieldError> {
    std::error::Error::source(error).and_then(|s| s.downcast_ref::<FieldError>())
}

/// A validation error about `field`.
pub(crate) fn field_error(
    kind: refsync_core::ErrorKind,
    field: &str,
    message: impl Into<String>,
) -> Error {
    let message = message.into();
    Error::new(kind, message.clone()).with_source(FieldError {
        field: field.to_owned(),
        message,
    })
}

/// A [`refsync_core::ErrorKind::Validation`] error about `field`.
pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Error {
    field_error(refsync_core::ErrorKind::Validation, field, message)
}
