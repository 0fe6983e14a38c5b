//! Operations and FinOps without I/O: the price catalog and the cost of a call, and
//! Bedrock's runtime metrics.
//!
//! This crate knows records (`logbook-record`) and nothing of HTTP, the journal or the
//! query engine. The server stamps every record with [`pricing::Catalog::price_record`]
//! just before it is journaled.

pub mod alarms;
pub mod budgets;
pub mod metrics;
pub mod pricing;
pub mod series;

pub use metrics::Metrics;
pub use pricing::{Catalog, CatalogError, Priced};
