//! The source of truth of orderpipe: an event store on PostgreSQL (Aurora PostgreSQL in AWS) that
//! implements cqrs-es's [`cqrs_es::EventStore`] directly.
//!
//! - Appends use optimistic concurrency per aggregate: a commit decided on a stale version is
//!   refused with [`cqrs_es::AggregateError::AggregateConflict`] and the caller reloads.
//! - Commits from concurrent commands are grouped into one transaction by a per-process writer
//!   ([`GroupCommitter`]); each transaction takes its range of global positions from a one-row
//!   counter, so positions are gap-free in commit order even with several writer processes.
//! - Every commit writes its outbox row in the same transaction; the relay reads the outbox
//!   oldest first ([`PgEventStore::read_outbox`]), removes what the log acknowledged and watches
//!   the backlog.
//! - Snapshots store the aggregate exactly as the command context holds it after the commit,
//!   with the schema version its aggregate type declares; a snapshot of another version, or one
//!   that no longer decodes, is ignored and the events replayed.
//! - A store may keep the aggregates this process committed in memory
//!   ([`AggregateStore::with_cache`]): the next command on one loads nothing, and the commit's
//!   version check refuses a command decided on an entry another process has moved past.
//! - A commit may carry a client idempotency key ([`metadata::IDEMPOTENCY_KEY`]); its outcome can
//!   be read back with [`AggregateStore::commit_outcome`].

mod aggregate_cache;
mod aggregate_store;
mod commit_wakeup;
mod committer;
mod deadline;
mod error;
mod idempotency;
pub mod metadata;
mod outbox;
mod reader;
mod writer_transaction;

use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use sqlx::{Executor, PgPool};

pub use aggregate_store::{
    AggregateStore, CommitOutcome, LoadedAggregate, DEFAULT_SNAPSHOT_VERSION,
};
pub use commit_wakeup::CommitWakeup;
pub use committer::{GroupCommitConfig, GroupCommitter};
pub use deadline::with_commit_deadline;
pub use error::{EventNotUnderstood, StoreError};
pub use idempotency::KeyRetention;
pub use outbox::{OutboxBacklog, OutboxCommit};
pub use reader::{EventHeader, RecordedEvent};

/// The PostgreSQL `NOTIFY` channel every group commit announces itself on, once its outbox rows
/// are visible; the relay and the command API's commit feed listen on it ([`CommitWakeup`])
/// instead of waiting for their next poll.
pub const OUTBOX_CHANNEL: &str = "orderpipe_outbox";

/// Tuning of the event store.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Take a snapshot each time an aggregate's version crosses a multiple of this; 0 disables
    /// snapshots.
    pub snapshot_every: u64,
    /// How commits are grouped into transactions.
    pub group_commit: GroupCommitConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            snapshot_every: 50,
            group_commit: GroupCommitConfig::default(),
        }
    }
}

/// The event store of one database: hands out per-aggregate stores that share one connection
/// pool and one group-commit writer, and reads the whole log in commit order.
#[derive(Debug, Clone)]
pub struct PgEventStore {
    pool: PgPool,
    committer: GroupCommitter,
    config: StoreConfig,
}

impl PgEventStore {
    /// Applies the schema migrations (idempotent; safe with several instances starting at once,
    /// sqlx serialises them with an advisory lock) and starts the group-commit writer.
    pub async fn open(pool: PgPool, config: StoreConfig) -> Result<Self, StoreError> {
        // The pool's sessions may carry statement and lock timeouts sized for commands; a
        // migration (an index build, another instance's migration lock) may rightly take longer.
        // It runs on a connection of its own without them, closed afterwards.
        let mut connection = pool.acquire().await?;
        connection
            .execute(
                "SET statement_timeout = 0; SET lock_timeout = 0; \
                 SET idle_in_transaction_session_timeout = 0",
            )
            .await?;
        sqlx::migrate!("./migrations").run(&mut *connection).await?;
        connection.close().await?;
        let committer = GroupCommitter::start(pool.clone(), config.group_commit);
        Ok(Self {
            pool,
            committer,
            config,
        })
    }

    /// The store for aggregate type `A`, with the upcasters that bring its old event versions to
    /// the current shape.
    pub fn aggregate_store<A: Aggregate>(
        &self,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> AggregateStore<A> {
        AggregateStore::new(
            self.pool.clone(),
            self.committer.clone(),
            self.config.snapshot_every,
            upcasters,
        )
    }

    /// The connection pool, for health checks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the group-commit writer gets its batches through (see
    /// [`GroupCommitter::health`]).
    pub fn writer_health(&self) -> Result<(), String> {
        self.committer.health()
    }
}
