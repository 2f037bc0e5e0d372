//! The one error type of the replay library.

use commit_log::DecodeError;
use event_store::StoreError;
use projectors::projection::ProjectionError;
use projectors::projections::SetupError;

/// Why a rebuild or a comparison failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A projection this tool does not know.
    #[error("unknown projection {0:?} (replay builds: history, analytics)")]
    UnknownProjection(String),
    /// A projection this build cannot replay yet.
    #[error(
        "projection {0:?} cannot be replayed by this build yet (replay builds: history, analytics)"
    )]
    UnsupportedProjection(String),
    /// `--until` is neither a position nor an RFC 3339 time.
    #[error("--until takes a global position (e.g. 1200) or an RFC 3339 time (e.g. 2025-03-03T08:00:00Z), got {0:?}")]
    InvalidUntil(String),
    /// `--until` names a position the log has not reached.
    #[error("position {requested} is past the end of the log (last position {last})")]
    BeyondLog {
        /// The position asked for.
        requested: i64,
        /// The log's last position.
        last: i64,
    },
    /// Reading the event store failed.
    #[error("cannot read the event store: {0}")]
    Store(#[from] StoreError),
    /// A stored commit does not decode (an event shape without an upcaster).
    #[error("the commit at position {position} does not decode: {source}")]
    Decode {
        /// The commit's first global position.
        position: i64,
        /// Why.
        source: DecodeError,
    },
    /// The projection refused or failed a batch. Progress up to the previous batch is stored, so
    /// running the rebuild again resumes there.
    #[error("{projection} failed to apply the batch starting at position {position}: {source}")]
    Apply {
        /// The projection.
        projection: &'static str,
        /// The batch's first global position.
        position: u64,
        /// Why.
        source: ProjectionError,
    },
    /// The target schema could not be created.
    #[error("cannot create the target schema: {0}")]
    Setup(#[from] SetupError),
    /// A table whose name is not a plain lowercase identifier, which the comparison does not
    /// quote into SQL.
    #[error("table {0:?} is not a plain lowercase identifier and cannot be compared")]
    UnsupportedTableName(String),
    /// The target database refused or failed.
    #[error("target database error: {0}")]
    Database(#[from] sqlx::Error),
}
