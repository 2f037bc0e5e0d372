//! The one error type of the replay library.

use commit_log::projection::ProjectionError;
use commit_log::DecodeError;
use event_store::StoreError;
use read_models::{AliasError, SetupError};
use service_kit::settings::SettingsError;

/// Why a rebuild or a comparison failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A projection this tool does not know.
    #[error("unknown projection {0:?} (replay builds: active_orders, history, analytics)")]
    UnknownProjection(String),
    /// `--until` is neither a position nor an RFC 3339 time.
    #[error("--until takes a global position (e.g. 1200) or an RFC 3339 time (e.g. 2025-03-03T08:00:00Z), got {0:?}")]
    InvalidUntil(String),
    /// `--aggregate` is not `TYPE/ID`.
    #[error("--aggregate takes TYPE/ID with TYPE one of order, inventory, loyalty, menu (e.g. order/4a3c6c39-...), got {0:?}")]
    InvalidAggregate(String),
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
    /// The event store's binary `COPY` output (the bulk rebuild's reader) is not what was
    /// asked for.
    #[error("cannot read the event store: its binary COPY output holds {0}")]
    MalformedCopy(String),
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
    /// A bulk rebuild met a value its target's column cannot take (the live path's statement
    /// refuses it too).
    #[error("the bulk rebuild cannot write a row: {0}")]
    BulkRow(#[from] read_models::bulk::NotAUuid),
    /// The target database refused or failed.
    #[error("target database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A DynamoDB target's base name that makes invalid table names.
    #[error(
        "invalid target {0:?}: DynamoDB table names take 3 to 255 characters of a-z A-Z 0-9 _ . -"
    )]
    InvalidTableName(String),
    /// DynamoDB refused or failed.
    #[error("DynamoDB error on table {table}: {source}")]
    DynamoDb {
        /// The table.
        table: String,
        /// The SDK's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The views table holds a progress item this tool did not write.
    #[error("the replay progress of {0} in the views table is malformed")]
    MalformedProgress(String),
    /// Reading or moving the view alias failed.
    #[error(transparent)]
    Alias(#[from] AliasError),
    /// Reading the Kinesis stream failed.
    #[error("cannot read the stream {stream}: {source}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record of the stream is not a commit envelope this build can decode.
    #[error("a record of shard {shard} does not decode: {reason}")]
    MalformedRecord {
        /// The shard.
        shard: String,
        /// Which record and why.
        reason: String,
    },
    /// `--since` is before the oldest record the stream still keeps.
    #[error("{requested} is outside the stream's retention ({hours} hours: nothing older than {horizon} is kept)")]
    OutsideRetention {
        /// The start asked for.
        requested: time::OffsetDateTime,
        /// The oldest time the stream keeps.
        horizon: time::OffsetDateTime,
        /// The stream's retention period.
        hours: i32,
    },
    /// `--since` is in the future.
    #[error("--since {0} is in the future")]
    FutureStart(time::OffsetDateTime),
    /// The tables are live already, with no swap left to finish.
    #[error("{0} is already the live active-orders view; nothing to swap")]
    AlreadyLive(String),
    /// `replay handover` with no handover going on.
    #[error("no swap is in handover: the view alias names {0}, caught up; nothing to finish or roll back")]
    NoHandover(String),
    /// A swap was asked while a rollback is catching the old tables up.
    #[error("a rollback to {0} is in handover; finish it first with `replay handover --abort`")]
    RollingBack(String),
    /// What the operator asked cannot be done as asked (a target that is the live view, a
    /// schema replay did not create, a swap with nothing to replace, an unconfirmed
    /// `--in-place`...): the message says why and what to do instead. Nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A schema or scratch name given on the command line (or in the settings) that is not a
    /// valid schema name.
    #[error("{option} is not a valid schema name")]
    InvalidSchemaName {
        /// The option or setting that named it.
        option: String,
        /// Why.
        source: SetupError,
    },
    /// The event store did not answer (opening it checks it is reachable).
    #[error("cannot reach the event store (database settings)")]
    StoreUnreachable(#[source] StoreError),
    /// A read model's database did not answer.
    #[error("cannot reach the {model} database ({model}.database settings)")]
    ReadModelUnreachable {
        /// The read model.
        model: &'static str,
        /// Why.
        source: Box<ReplayError>,
    },
    /// DynamoDB did not answer, or the views table could not be created.
    #[error("cannot reach DynamoDB or create the views table (aws, dynamodb settings)")]
    ViewsTableUnreachable(#[source] SetupError),
    /// A view's markers (what it reflects of the store) could not be read.
    #[error("cannot read the {model} view's markers")]
    Markers {
        /// The read model.
        model: &'static str,
        /// Why.
        source: Box<ReplayError>,
    },
    /// A verify's scratch target could not be removed; it is left behind for the operator.
    #[error("cannot {what}")]
    ScratchLeft {
        /// What was left, as "drop the scratch schema x" or "delete the scratch tables of x".
        what: String,
        /// Why.
        source: Box<ReplayError>,
    },
    /// A read model's database settings do not make a pool.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The operator's terminal could not be read (the `--in-place` confirmation).
    #[error("cannot read the confirmation: {0}")]
    Console(#[from] std::io::Error),
}

impl ReplayError {
    /// A failed read of `stream`, its source kept.
    pub(crate) fn stream<E>(stream: &str, error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        ReplayError::Stream {
            stream: stream.to_owned(),
            source: Box::new(error),
        }
    }

    /// A failed DynamoDB call on `table`, its source kept.
    pub(crate) fn dynamodb<E>(table: &str, error: aws_sdk_dynamodb::error::SdkError<E>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        ReplayError::DynamoDb {
            table: table.to_owned(),
            source: Box::new(error),
        }
    }
}
