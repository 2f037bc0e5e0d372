//! Rebuilding a history or analytics view into a fresh schema as a bulk load.
//!
//! A fresh schema has no live readers and no order to keep between aggregates, so instead of
//! the live path's batches (read the markers, decide, write) the commits are read from the
//! store in order, cut into commits as [`crate::rebuild`] cuts them, handed by aggregate hash to
//! `replay.bulk_writers` writers, each with its own connection and transaction, which turn
//! them into rows with the live projections' mapping ([`read_models::bulk`]) and stream them
//! with `COPY ... FROM STDIN (FORMAT binary)`. Then:
//! 1. the primary keys and secondary indexes, left out while the rows stream in, are built,
//!    tables side by side; the rows every writer contributes to (history's `view_progress`,
//!    the analytics dimensions) are written once;
//! 2. the orders with commits after their rows were written (a refund after a cancellation)
//!    get those commits through the live projection, whose markers are now in place;
//! 3. one transaction puts back the foreign keys, records the progress and drops the schema's
//!    `replay_bulk_load` mark.
//!
//! The store is read with a binary `COPY` whose payloads stay JSON text until a writer decodes
//! them ([`read`]), so that the one reader keeps up with the writers.
//!
//! Until step 3 commits, the schema holds that mark, and a rebuild finding it knows the rows
//! are incomplete: it drops the schema and starts over ([`BulkOutcome::restarted`]). A finished
//! bulk rebuild is an ordinary replay target: run again, it resumes through the live path.

mod read;
mod schema;
mod writer;

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use async_trait::async_trait;
use event_store::PgEventStore;
use futures::TryStreamExt;
use read_models::bulk::BulkShared;
use read_models::SchemaName;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use self::read::StoredEvent;
use self::schema::SetAside;
use self::writer::{ToWriter, Written};
use crate::commits::CommitCutter;
use crate::error::ReplayError;
use crate::progress::{ProgressStore, ProgressTable};
use crate::rebuild::{rebuild_aggregate, resolve_through};
use crate::target::{drop_schema, ReadModel};
use crate::{AggregateRef, RebuildOptions, RebuildProgress, Until};

pub(crate) use self::schema::{bulk_load_unfinished, takes_bulk_loads};

/// Commits handed to a writer at a time.
const COMMITS_PER_MESSAGE: usize = 256;
/// Messages waiting per writer: how far the reader may run ahead.
const MESSAGES_AHEAD: usize = 4;
/// Commits between two progress reports.
const REPORT_EVERY_COMMITS: u64 = 5_000;

/// How a bulk rebuild runs.
#[derive(Debug, Clone, Copy)]
pub struct BulkOptions {
    /// Stop here; `None`: the end of the log when the rebuild starts.
    pub until: Option<Until>,
    /// Writer connections (at least 1).
    pub writers: usize,
    /// Commits a writer takes between two writes of its ended orders (and per `apply` of the
    /// live path, for the deferred orders): `replay.batch_commits`.
    pub batch_commits: usize,
}

/// How a bulk rebuild ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Positions, commits and events, as [`crate::rebuild`] reports them.
    pub progress: RebuildProgress,
    /// The target held an unfinished bulk rebuild, which was dropped and started over.
    pub restarted: bool,
    /// Orders whose later commits went through the live path.
    pub deferred_orders: usize,
}

/// Rows written into a fresh target, before the final step: what [`finish_bulk_load`] needs.
#[derive(Debug)]
pub struct RowsLoaded {
    target: SchemaName,
    model: ReadModel,
    set_aside: SetAside,
    progress: RebuildProgress,
    restarted: bool,
    deferred_orders: usize,
}

/// Rebuilds `model` into `target` as a bulk load: [`load_rows`] then [`finish_bulk_load`].
/// `target` must be absent or hold an unfinished bulk load (see the module documentation).
pub async fn rebuild_bulk(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    target: &SchemaName,
    options: &BulkOptions,
    on_progress: impl FnMut(&RebuildProgress),
) -> Result<BulkOutcome, ReplayError> {
    let loaded = load_rows(store, pool, model, target, options, on_progress).await?;
    finish_bulk_load(pool, loaded).await
}

/// Everything of a bulk rebuild but its final step: the target created (or, holding an
/// unfinished bulk load, dropped and created again), every row and marker written, the deferred
/// orders applied. The target still reads as unfinished.
pub async fn load_rows(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    target: &SchemaName,
    options: &BulkOptions,
    mut on_progress: impl FnMut(&RebuildProgress),
) -> Result<RowsLoaded, ReplayError> {
    let restarted = bulk_load_unfinished(pool, target).await?;
    if restarted {
        drop_schema(pool, target).await?;
    }
    let through = resolve_through(store, options.until).await?;
    schema::mark_bulk_load(pool, target).await?;
    model.create_schema(pool, target).await?;
    ProgressTable::new(pool.clone(), target.clone())
        .create()
        .await?;
    let set_aside = schema::set_aside(pool, target).await?;

    let connect = (*pool.connect_options()).clone();
    let mut writers = JoinSet::new();
    let mut senders = Vec::new();
    for _ in 0..options.writers.max(1) {
        let (sender, receiver) = mpsc::channel(MESSAGES_AHEAD);
        senders.push(sender);
        writers.spawn(writer::run(
            connect.clone(),
            (target.clone(), model),
            options.batch_commits.max(1),
            receiver,
        ));
    }
    let mut progress = RebuildProgress {
        started_after: 0,
        applied_through: 0,
        through,
        commits: 0,
        events: 0,
    };
    let read = route(store, through, &senders, &mut progress, &mut on_progress).await;
    if read.is_ok() {
        for sender in &senders {
            // A writer that stopped already reports why below.
            let _ = sender.send(ToWriter::End).await;
        }
    }
    drop(senders);
    let written = match (read, gather(writers).await) {
        // The reader stopped because a writer did: the writer's error says why.
        (Err(ReplayError::Refused(_)), Err(writer)) => return Err(writer),
        (Err(read), _) => return Err(read),
        (Ok(()), written) => written?,
    };
    schema::restore_indexes(pool, &set_aside).await?;

    let mut connection = pool.acquire().await?;
    let mut shared: Option<BulkShared> = None;
    let mut deferred = BTreeSet::new();
    for part in written {
        deferred.extend(part.deferred);
        match &mut shared {
            Some(all) => all.merge(part.shared),
            None => shared = Some(part.shared),
        }
    }
    if let Some(shared) = shared {
        let mut tx = sqlx::Connection::begin(&mut *connection).await?;
        sqlx::query(read_models::analytics_sql::SET_SEARCH_PATH)
            .bind(target.as_str())
            .execute(&mut *tx)
            .await?;
        writer::send(&mut tx, shared.into_rows()).await?;
        tx.commit().await?;
    }
    apply_deferred(store, pool, model, target, options, through, &deferred).await?;
    progress.applied_through = through;
    on_progress(&progress);
    Ok(RowsLoaded {
        target: target.clone(),
        model,
        set_aside,
        progress,
        restarted,
        deferred_orders: deferred.len(),
    })
}

/// The final step: the foreign keys back, the progress recorded, the mark dropped, in
/// one transaction.
pub async fn finish_bulk_load(
    pool: &PgPool,
    loaded: RowsLoaded,
) -> Result<BulkOutcome, ReplayError> {
    let mut connection = pool.acquire().await?;
    schema::finish(
        &mut connection,
        &loaded.target,
        &loaded.set_aside,
        loaded.model.name(),
        loaded.progress.through,
    )
    .await?;
    Ok(BulkOutcome {
        progress: loaded.progress,
        restarted: loaded.restarted,
        deferred_orders: loaded.deferred_orders,
    })
}

/// Reads the store through `through` and hands each commit to the writer owning its aggregate.
async fn route(
    store: &PgEventStore,
    through: i64,
    senders: &[mpsc::Sender<ToWriter>],
    progress: &mut RebuildProgress,
    on_progress: &mut impl FnMut(&RebuildProgress),
) -> Result<(), ReplayError> {
    let events = read::read_range(store, 0, through + 1);
    futures::pin_mut!(events);
    let mut cutter = CommitCutter::new(through);
    let mut waiting: Vec<Vec<Vec<StoredEvent>>> = senders.iter().map(|_| Vec::new()).collect();
    let mut hand = |commit: Vec<StoredEvent>, progress: &mut RebuildProgress| {
        progress.commits += 1;
        progress.events += commit.len() as u64;
        progress.applied_through = commit.last().map_or(0, |e| e.global_position);
        let owner = owner(&commit[0], senders.len());
        waiting[owner].push(commit);
        (waiting[owner].len() >= COMMITS_PER_MESSAGE)
            .then(|| (owner, std::mem::take(&mut waiting[owner])))
    };
    while let Some(event) = events.try_next().await? {
        if let Some(commit) = cutter.push(event) {
            if let Some((owner, batch)) = hand(commit, progress) {
                deliver(&senders[owner], batch).await?;
            }
            if progress.commits.is_multiple_of(REPORT_EVERY_COMMITS) {
                on_progress(progress);
            }
        }
        if cutter.is_done() {
            break;
        }
    }
    if let Some(commit) = cutter.finish() {
        if let Some((owner, batch)) = hand(commit, progress) {
            deliver(&senders[owner], batch).await?;
        }
    }
    for (sender, batch) in senders.iter().zip(waiting) {
        if !batch.is_empty() {
            deliver(sender, batch).await?;
        }
    }
    Ok(())
}

/// The writer owning `event`'s aggregate: a hash of its type and id, so all its commits go to
/// one writer, in order.
fn owner(event: &StoredEvent, writers: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    event.aggregate_type.hash(&mut hasher);
    event.aggregate_id.hash(&mut hasher);
    (hasher.finish() % writers as u64) as usize
}

async fn deliver(
    sender: &mpsc::Sender<ToWriter>,
    batch: Vec<Vec<StoredEvent>>,
) -> Result<(), ReplayError> {
    sender
        .send(ToWriter::Commits(batch))
        .await
        .map_err(|_| ReplayError::Refused("a bulk writer stopped".into()))
}

/// Every writer's result; the first failure (a writer's own error rather than the "stopped"
/// of the others) if any.
async fn gather(
    mut writers: JoinSet<Result<Written, ReplayError>>,
) -> Result<Vec<Written>, ReplayError> {
    let mut written = Vec::new();
    let mut failure: Option<ReplayError> = None;
    while let Some(joined) = writers.join_next().await {
        match joined {
            Ok(Ok(part)) => written.push(part),
            Ok(Err(error)) => {
                let own = !matches!(error, ReplayError::Refused(_));
                if failure.is_none() || own {
                    failure = Some(error);
                }
            }
            Err(panic) => {
                failure = Some(ReplayError::Refused(format!(
                    "a bulk writer failed: {panic}"
                )))
            }
        }
    }
    failure.map_or(Ok(written), Err)
}

/// Applies, through the live projection, the commits of `orders` after their markers.
async fn apply_deferred(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    target: &SchemaName,
    options: &BulkOptions,
    through: i64,
    orders: &BTreeSet<String>,
) -> Result<(), ReplayError> {
    let projection = model.projection(pool.clone(), target.clone());
    let live_path = RebuildOptions {
        until: Some(Until::Position(through)),
        batch_commits: options.batch_commits,
    };
    for order in orders {
        let aggregate = AggregateRef {
            aggregate_type: "order".into(),
            aggregate_id: order.clone(),
        };
        rebuild_aggregate(
            store,
            projection.as_ref(),
            &NoProgress,
            &live_path,
            &aggregate,
            |_| {},
        )
        .await?;
    }
    Ok(())
}

/// The deferred orders keep no progress of their own: the markers skip what is applied, and the
/// bulk load's mark makes an interruption start over.
struct NoProgress;

#[async_trait]
impl ProgressStore for NoProgress {
    async fn load(&self, _projection: &str) -> Result<Option<i64>, ReplayError> {
        Ok(None)
    }

    async fn save(&self, _projection: &str, _position: i64) -> Result<(), ReplayError> {
        Ok(())
    }
}
