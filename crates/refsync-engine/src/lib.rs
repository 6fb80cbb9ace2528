#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod engine;
pub mod ingress;
pub mod metrics;
pub mod sender;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;
pub mod upkeep;
pub mod worker;

pub use engine::{Engine, Instance, parse_referral_key};
pub use ingress::{IngestOutcome, body_hash};
pub use sender::PushRequest;
pub use tokens::StoreTokenStore;
pub use upkeep::ReconcileReport;
