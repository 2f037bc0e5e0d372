//! Swapping rebuilt active-orders tables in by moving the view alias.

use event_store::PgEventStore;
use projectors::projections::{ActiveOrdersProjection, ActiveOrdersTables, ViewAlias};

use super::TablesProgress;
use crate::error::ReplayError;
use crate::rebuild::{rebuild, RebuildOptions, RebuildProgress};

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablesSwap {
    /// The tables that were live before; kept for the operator to delete.
    pub retired: ActiveOrdersTables,
    /// What the catch-ups after the rebuild applied.
    pub tail: RebuildProgress,
}

/// Makes `rebuilt` (built by a rebuild recording into `progress`) the live view:
///
/// 1. catch it up with the store's end once more, so the next steps have little to do;
/// 2. move the alias to it with `handover` set (conditional on the alias still naming the live
///    tables): readers and the projector's next batches use the new tables from here on;
/// 3. catch it up with the store's end read *after* the move: every commit the projector applied
///    to the old tables was already in the store when it resolved the alias, so this covers it,
///    while gaps the projector meets meanwhile are retried, not dead-lettered;
/// 4. clear `handover` and forget the rebuild's progress.
///
/// Run again after an interruption, it resumes: an alias already on `rebuilt` in handover goes
/// straight to step 3.
pub async fn swap_in_tables(
    store: &PgEventStore,
    alias: &ViewAlias,
    rebuilt: &ActiveOrdersTables,
    progress: &TablesProgress,
    batch_commits: usize,
    mut on_batch: impl FnMut(&RebuildProgress),
) -> Result<TablesSwap, ReplayError> {
    let projection = ActiveOrdersProjection::new(alias.client().clone(), rebuilt.clone());
    let options = RebuildOptions {
        until: None,
        batch_commits,
    };
    let live = alias.live().await?;
    let (retired, before_move) = if live.tables == *rebuilt {
        let Some(previous) = live.previous.filter(|_| live.handover) else {
            return Err(ReplayError::AlreadyLive(rebuilt.orders.clone()));
        };
        (previous, None)
    } else {
        let caught_up = rebuild(store, &projection, progress, &options, &mut on_batch).await?;
        alias.begin_handover(&live.tables, rebuilt).await?;
        (live.tables, Some(caught_up))
    };
    let after_move = rebuild(store, &projection, progress, &options, &mut on_batch).await?;
    alias.end_handover(rebuilt).await?;
    progress.remove().await?;
    let tail = match before_move {
        Some(before) => RebuildProgress {
            started_after: before.started_after,
            commits: before.commits + after_move.commits,
            events: before.events + after_move.events,
            ..after_move
        },
        None => after_move,
    };
    Ok(TablesSwap { retired, tail })
}
