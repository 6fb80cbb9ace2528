#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod conformance;
pub mod fake;
pub mod hubspot;
pub mod openapi;
pub mod pipedrive;
pub mod salesforce;
pub mod services;
pub mod sim;
pub mod woocommerce;
pub mod zoho;
