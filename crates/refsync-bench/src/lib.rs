//! The benchmark harness of refsync, run by `cargo xtask bench` (see docs/benchmarks.md).
//!
//! - [`payloads`]: signed, unique Pipedrive / HubSpot / WooCommerce deliveries, written as a
//!   payload folder of `.http` files;
//! - [`loadgen`]: the load generator (open loop at an offered rate, or closed loop), which
//!   runs against any URL with any payload folder;
//! - [`report`]: percentiles, the stdout table, the JSON and the SVG plot;
//! - [`cost`]: CRM calls per pushed referral, per connector, against the testkit simulators.

pub mod cost;
pub mod loadgen;
pub mod payloads;
pub mod report;
pub mod scenarios;
pub mod server;
