#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub use refsync_core as core;
pub use refsync_core::*;

mod generated;
pub use generated::*;

/// A registry with every connector compiled into this build.
pub fn default_registry() -> Registry {
    let mut registry = Registry::new();
    install_default_connectors(&mut registry);
    registry
}
