//! Replay: rebuilds a read model from the event store's history into a fresh target, and
//! compares two targets.
//!
//! - [`rebuild`]: streams the store in commit order (constant memory, upcasters applied by
//!   [`commit_log::LoggedCommit::from_recorded`]) into a [`Projection`](commit_log::projection::Projection),
//!   in batches, up to an optional [`Until`] bound, recording its progress in the target's
//!   [`ProgressTable`] so an interrupted rebuild resumes where it stopped.
//! - [`rebuild_from_stream`]: the same from the Kinesis log, shards in parent-first order.
//! - [`verify`]: compares two schemas of one database table by table (row counts, checksums)
//!   and lists every row present on one side only.
//! - [`swap_in`]: catches a rebuilt schema up with the store and renames it to the live name in
//!   one transaction that holds the live projector's lock, so no reader or projector transaction
//!   sees anything between the old view and the new one.
//! - [`rebuild_aggregate`] and [`swap_aggregate_in`]: one aggregate's rows, rebuilt apart and
//!   put into the live schema under the live projector's lock.
//! - [`empty_schema`]: empties a live schema for an in-place rebuild.
//! - [`view_status`]: what a schema's markers reflect of the store, for `replay list`.
//! - [`ReadModel`]: the projections replay builds into a schema (`history`, `analytics`).
//! - [`dynamodb`]: the active-orders view's targets (pairs of tables), their progress, their
//!   comparison, and the swap that moves the view alias ([`ViewKind`] tells the two kinds apart).
//! - [`report`]: sales reports from the analytics view (`replay report`), read only.
//! - [`operations`]: the `replay` subcommands built from the above, as the operator runs them
//!   (the binary parses the arguments and calls [`operations::run`]).
//!
//! Resumption relies on the projections' idempotency, not on a shared transaction: the
//! projections commit their own transactions, so progress is stored after each batch and a
//! batch applied again after a crash changes nothing.

mod aggregate_swap;
mod bulk;
mod commits;
pub mod dynamodb;
mod error;
mod from_stream;
mod in_place;
pub mod operations;
mod progress;
mod rebuild;
pub mod report;
pub mod settings;
mod status;
mod swap;
mod target;
mod verify;

pub use aggregate_swap::swap_aggregate_in;
pub use bulk::{finish_bulk_load, load_rows, rebuild_bulk, BulkOptions, BulkOutcome, RowsLoaded};
pub use error::ReplayError;
pub use from_stream::{rebuild_from_stream, StreamSource, StreamStart};
pub use in_place::empty_schema;
pub use progress::{ProgressStore, ProgressTable};
pub use rebuild::{
    rebuild, rebuild_aggregate, resolve_through, AggregateRef, RebuildOptions, RebuildProgress,
    Until,
};
pub use status::{view_status, ViewMarkers, ViewStatus};
pub use swap::{swap_in, SwapPlan};
pub use target::{drop_schema, schema_exists, ReadModel, ViewKind};
pub use verify::{verify, Comparison, Skipped, TableDifference};
