//! The outbox relay (BRIEF §3.3): publishes every commit of the event store's outbox to the
//! Kinesis log (the `commit_log` envelope), at least once, and per aggregate in order. Once
//! every reader unpacks, a record may pack up to `relay.max_commits_per_record` commits of one
//! shard (a `commit_log` container, KPL-style; the default, 1, writes plain envelopes), so a
//! shard carries more than its 1,000 records/s in commits; its partition key is its first
//! commit's aggregate id. A record that is not full may linger up to `relay.max_linger_ms` for
//! more commits of its shard (KPL's `RecordMaxBufferedTime`).
//!
//! - **One active relay per deployment**: the holder of a PostgreSQL session advisory lock on a
//!   dedicated connection; standby relays try every second and take over when the holder's
//!   session ends. A relay whose lock connection fails stops publishing at once.
//! - **Order per aggregate**: a PutRecords call carries an aggregate's commits in one record
//!   only, in commit order, and an aggregate whose record was refused sends nothing more until
//!   that record is stored.
//! - **One shard per record**: the relay keeps the stream's shard map ([`shard_map`]) and
//!   refreshes it when a record lands elsewhere than predicted (a reshard), publishing again
//!   the commits whose aggregate now belongs to another shard.
//! - **Woken on commit**: the group commit's `NOTIFY` wakes the active relay at once
//!   ([`event_store::CommitWakeup`]); the outbox poll stays as the fallback.
//! - **At least once**: an outbox row is removed only after its record was acknowledged, so a
//!   crash in between publishes the commit again; readers skip sequences they have applied.
//!
//! [`app::Application`] wires it; [`record_log::RecordLog`] is the port to the log, with
//! its Kinesis adapter.

pub mod app;
mod health;
mod leadership;
mod publisher;
pub mod record_log;
mod round;
pub mod settings;
pub mod shard_map;
mod waiting_since;
mod wave_trace;

pub use round::{MAX_CALL_BYTES, MAX_RECORD_BYTES};
