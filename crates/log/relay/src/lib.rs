//! The outbox relay (BRIEF §3.3): publishes every commit of the event store's outbox to the
//! Kinesis log, one record per commit (the `commit_log` envelope), partition key = aggregate id,
//! at least once, and per aggregate in order.
//!
//! - **One active relay per deployment**: the holder of a PostgreSQL session advisory lock on a
//!   dedicated connection; standby relays try every second and take over when the holder's
//!   session ends. A relay whose lock connection fails stops publishing at once.
//! - **Order per aggregate**: a PutRecords call carries at most one commit per aggregate, and an
//!   aggregate whose record was refused sends nothing more until that record is stored.
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
mod wave_trace;

pub use round::{MAX_CALL_BYTES, MAX_RECORD_BYTES};
