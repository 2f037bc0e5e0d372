//! Projector workers: they consume the Kinesis log and build orderpipe's read models.
//!
//! - [`projection`]: the `Projection` port and its idempotency contract.
//! - [`projections`]: the read models (DynamoDB active orders, PostgreSQL history, Redshift
//!   analytics).
//! - [`runtime`]: what the Kinesis Client Library would do if it existed for Rust: shard
//!   discovery, leases and checkpoints in DynamoDB, resharding, polling, poison records.

pub mod projection;
pub mod projections;
pub mod runtime;
