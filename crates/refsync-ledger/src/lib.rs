#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod db;
pub mod http;
mod ledger;
mod model;
mod normalize;
mod platform;
mod query;
#[cfg(feature = "testing")]
pub mod testing;

pub use db::{Backend, redact_url as redact_database_url};
pub use ledger::{DEFAULT_DATABASE_URL, Ledger, LedgerSettings};
pub use model::{
    Campaign, CouponBatch, CouponStats, FieldError, Filter, FilterOp, ListQuery, MAX_PER_PAGE,
    METRICS, MetaField, Metric, NewCampaign, NewRewardRule, Page, Pagination, Qualification,
    QualificationRecord, Recipient, RewardQuery, RewardRecord, RewardRule, Trigger, User, UserType,
    error_field, status_str,
};
pub use normalize::{CODE_ALPHABET, CODE_LEN, normalize_email};
pub use platform::{NAME, register};
