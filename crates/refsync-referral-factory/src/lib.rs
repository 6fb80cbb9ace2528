#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod breaker;
mod client;
mod config;
mod model;
mod ops;
mod pages;
mod platform;
mod query;

/// The registry name of this platform.
pub const NAME: &str = "referral-factory";

pub use breaker::{BreakerSettings, BreakerState, CircuitBreaker, Clock, ManualClock, TokioClock};
pub use client::{
    DEFAULT_RATE_LIMIT_BACKOFF, ReferralFactory, ReferralFactoryBuilder, UNAUTHORIZED_MESSAGE,
};
pub use config::{
    ApiVersion, Config, DEFAULT_BASE_URL_V1, DEFAULT_BASE_URL_V2, DEFAULT_CALLS_PER_MINUTE,
    MAX_CALLS_PER_MINUTE,
};
pub use model::{Campaign, MetaField, Page, PageMeta, RewardItem, RewardMetric, RewardView, User};
pub use ops::{CreateUser, WebhookKey};
pub use pages::Pages;
pub use platform::register;
pub use query::{Direction, Filter, FilterOp, ListQuery, MAX_PER_PAGE};
