#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub use refsync_core as core;
pub use refsync_core::*;

mod generated;
pub use generated::*;

#[cfg(feature = "ledger")]
pub use refsync_ledger as ledger;
#[cfg(feature = "referral-factory")]
pub use refsync_referral_factory as referral_factory;

/// Registers every referral platform compiled into this build (features `referral-factory`,
/// `ledger`).
pub fn install_default_platforms(registry: &mut Registry) {
    #[cfg(feature = "referral-factory")]
    refsync_referral_factory::register(registry);
    #[cfg(feature = "ledger")]
    refsync_ledger::register(registry);
    let _ = registry;
}

/// A registry with every connector and platform compiled into this build.
pub fn default_registry() -> Registry {
    let mut registry = Registry::new();
    install_default_connectors(&mut registry);
    install_default_platforms(&mut registry);
    registry
}
