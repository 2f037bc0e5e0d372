//! Swapping a rebuilt schema in for the live one, atomically for readers and the live projector.
//!
//! The live projector names its schema (`set_config('search_path', 'history', true)` at the
//! start of every transaction), never its OID, and the first table every apply touches is the
//! schema's `applied_sequences` (`SELECT ... FOR UPDATE` in history, `LOCK` in analytics). So
//! one transaction that locks the live `applied_sequences` in ACCESS EXCLUSIVE mode, catches the
//! rebuilt schema up with the store, and renames both schemas, is a point no projector
//! transaction straddles: the ones that started before it finished (the lock waits for them),
//! the ones that start during it wait on the lock and, once it is released, look the name up
//! again and find the rebuilt schema (PostgreSQL re-resolves a relation name whose catalog
//! changed while it waited for the lock, and re-plans cached statements when a schema is
//! renamed).
//!
//! Why nothing is lost or applied twice: every commit the live projector applied to the old
//! schema was in the store when it did, so it is at or below the store's end read under the
//! lock, and the catch-up puts it into the rebuilt schema. After the swap the projector goes on
//! from its Kinesis checkpoint; whatever it delivers again is at or below the rebuilt schema's
//! per-aggregate markers and is skipped, and the next commit of each aggregate follows its
//! marker without a gap.

use event_store::PgEventStore;
use read_models::SchemaName;
use sqlx::PgPool;

use crate::error::ReplayError;
use read_models::analytics_sql::replay::{drop_progress, lock_live_markers, rename_schema};

use crate::progress::ProgressTable;
use crate::rebuild::{rebuild, RebuildOptions, RebuildProgress};
use crate::target::ReadModel;

/// The schemas a swap moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapPlan {
    /// The schema the live projector and readers use, by name.
    pub live: SchemaName,
    /// The rebuilt schema (a `replay rebuild` target) that takes the live name.
    pub rebuilt: SchemaName,
    /// The name the old live schema gets; kept for the operator to inspect and drop.
    pub retired: SchemaName,
}

/// Catches `plan.rebuilt` up with the store and swaps it in for `plan.live` in one transaction
/// (see the module documentation), returning the catch-up done under the lock.
///
/// `plan.rebuilt` must be a rebuild target built close to the store's end beforehand (the
/// catch-up holds the live projector's lock, so it should be a small tail). `pool` needs two
/// connections: one holds the lock, the other applies the tail.
pub async fn swap_in(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    plan: &SwapPlan,
    batch_commits: usize,
    on_batch: impl FnMut(&RebuildProgress),
) -> Result<RebuildProgress, ReplayError> {
    let mut tx = pool.begin().await?;
    sqlx::query(&lock_live_markers(&plan.live))
        .execute(&mut *tx)
        .await?;
    let progress = ProgressTable::new(pool.clone(), plan.rebuilt.clone());
    let projection = model.projection(pool.clone(), plan.rebuilt.clone());
    let options = RebuildOptions {
        until: None,
        batch_commits,
    };
    // Other connections of the pool: the rebuilt schema's tables are not locked by `tx`.
    let tail = rebuild(store, projection.as_ref(), &progress, &options, on_batch).await?;
    sqlx::query(&drop_progress(&plan.rebuilt))
        .execute(&mut *tx)
        .await?;
    for (from, to) in [(&plan.live, &plan.retired), (&plan.rebuilt, &plan.live)] {
        sqlx::query(&rename_schema(from, to))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(tail)
}
