//! The Kinesis consumer runtime: what the Kinesis Client Library would do if it existed for Rust.
//!
//! One [`Worker`] process runs every projection it is given (a
//! [`Projection`](commit_log::projection::Projection): the read models of `read-models`, the
//! saga and notifications of `flows`). Each projection is its own consumer
//! group: its leases are keyed `<projection>#<shard_id>` in a DynamoDB table, so it has its own
//! checkpoints and a slow projection never holds back another.
//!
//! - [`leases`]: the lease table (owner, counter, checkpoint, parent shards); every write is one
//!   conditional single-item write, so the runtime works on dynalite (no transactions).
//! - [`worker`]: shard discovery, lease renewal, expiry, balanced taking and stealing, and the
//!   shard consumers it starts and stops.
//! - `consumer` (private): reads one shard, decodes records, applies them through the
//!   [`Projection`](commit_log::projection::Projection), handles poison records, checkpoints.
//! - `shard_reader` (private): one reader per shard per process, shared by the consumer
//!   groups: one GetRecords pace per shard whatever the number of groups.
//! - [`dead_letters`] and [`parked`]: where poison records go, and the parked commits of a
//!   stopped aggregate (poison, or not understood by this build, and every later commit);
//!   [`redrive`] applies them once the projection is fixed, or on its own once a build that
//!   understands them runs.
//! - [`settings`]: the settings keys every consuming process shares (the stream, the worker's
//!   default name).
//! - [`kinesis`]: thin per-operation wrappers over the SDK that keep its error as an
//!   [`AwsCallError`], classified as retryable or not by `aws-support`, in one place.

mod apply_trace;
mod consumer;
pub mod dead_letters;
pub mod kinesis;
pub mod leases;
mod meters;
pub mod parked;
pub mod redrive;
pub mod settings;
mod shard_reader;
pub mod worker;

/// The resources this crate's code uses: the event stream, the lease and parked tables, the
/// dead-letter queue (each declared beside its code; listed here for the manifest and the
/// binaries' defaults).
pub fn resources() -> aws_support::resources::Resources {
    aws_support::resources::Resources {
        streams: vec![settings::EVENT_STREAM],
        tables: vec![LeaseTable::RESOURCE, ParkedStore::RESOURCE],
        queues: vec![dead_letters::DeadLetterQueue::RESOURCE],
    }
}

pub use leases::{Checkpoint, Lease, LeaseTable, SequenceNumber};
pub use parked::{ParkedKind, ParkedRecord, ParkedStore};
pub use redrive::{redrive, redrive_all, redrive_with, resume, RedriveOutcome, ResumeReport};
pub use shard_reader::GetRecordsCalls;
pub use worker::{Worker, WorkerConfig, WorkerHealth};

use aws_support::AwsCallError;

/// Why the runtime stopped or an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An AWS call failed for good (or a retryable one was not retried here).
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    /// The lease table holds an item the runtime cannot read.
    #[error("lease item {key:?} is malformed: {reason}")]
    MalformedLease {
        /// Its `lease_key` (may be empty when that is what is missing).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record of the shard is a log container of a version this build does not read: the
    /// shard stops there (checkpointed before it) until a build that reads it runs.
    #[error("shard {shard_id} stops at record {sequence_number}: {reason}")]
    UnknownContainer {
        /// The shard.
        shard_id: String,
        /// The record it stops at.
        sequence_number: String,
        /// What this build does not read.
        reason: String,
    },
    /// The parked table holds an item the runtime cannot read.
    #[error("parked item is malformed: {0}")]
    MalformedParked(String),
}
