//! Swapping rebuilt active-orders tables in by moving the view alias.

use event_store::PgEventStore;
use read_models::{ActiveOrdersProjection, ActiveOrdersTables, LiveView, ViewAlias};

use super::{copy_table_settings, SettingsCopied, TablesProgress};
use crate::error::ReplayError;
use crate::rebuild::{rebuild, RebuildOptions, RebuildProgress};

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablesSwap {
    /// The tables that were live before; kept for the operator to delete.
    pub retired: ActiveOrdersTables,
    /// What the catch-ups after the rebuild applied.
    pub tail: RebuildProgress,
    /// The live tables' settings given to the rebuilt ones (empty when resuming a handover:
    /// they were given before the alias moved).
    pub settings: Vec<SettingsCopied>,
}

/// Makes `rebuilt` (built by a rebuild recording into `progress`) the live view:
///
/// 1. catch it up with the store's end once more, so the next steps have little to do, and
///    give its tables the live tables' settings ([`copy_table_settings`]: TTL, point-in-time
///    recovery, KMS key, deletion protection, tags);
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
    if live.rolling_back {
        return Err(ReplayError::RollingBack(live.tables.orders));
    }
    let mut settings = Vec::new();
    let (retired, before_move) = if live.tables == *rebuilt {
        let Some(previous) = live.previous.filter(|_| live.handover) else {
            return Err(ReplayError::AlreadyLive(rebuilt.orders.clone()));
        };
        (previous, None)
    } else {
        let caught_up = rebuild(store, &projection, progress, &options, &mut on_batch).await?;
        for (from, to) in [
            (&live.tables.orders, &rebuilt.orders),
            (&live.tables.stores, &rebuilt.stores),
        ] {
            settings.push(copy_table_settings(alias.client(), from, to).await?);
        }
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
    Ok(TablesSwap {
        retired,
        tail,
        settings,
    })
}

/// What [`finish_handover`] or [`roll_back_handover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverEnd {
    /// The tables the alias names now, handover over.
    pub live: ActiveOrdersTables,
    /// The other tables of the swap (the old ones after a finish, the abandoned rebuild after a
    /// rollback); kept for the operator to delete.
    pub other: Option<ActiveOrdersTables>,
    /// What the catch-up applied.
    pub tail: RebuildProgress,
}

/// Finishes whatever handover the alias is in (a swap's, or a rollback's): catches the tables
/// it names up with the store's end read now, then clears `handover`. Refused when no handover
/// is going on. Run again after an interruption, it resumes (the catch-up's progress is in the
/// views table).
pub async fn finish_handover(
    store: &PgEventStore,
    alias: &ViewAlias,
    views_table: &str,
    batch_commits: usize,
    on_batch: impl FnMut(&RebuildProgress),
) -> Result<HandoverEnd, ReplayError> {
    let live = in_handover(alias).await?;
    let progress = TablesProgress::new(alias.client().clone(), views_table, live.tables.clone());
    // A rollback's tables were live before, so they hold no progress item yet: the catch-up
    // starts from the store's first position and skips what they hold.
    progress.start().await?;
    let projection = ActiveOrdersProjection::new(alias.client().clone(), live.tables.clone());
    let options = RebuildOptions {
        until: None,
        batch_commits,
    };
    let tail = rebuild(store, &projection, &progress, &options, on_batch).await?;
    alias.end_handover(&live.tables).await?;
    progress.remove().await?;
    Ok(HandoverEnd {
        live: live.tables,
        other: live.previous,
        tail,
    })
}

/// Rolls an unfinished swap back: the alias goes back to the tables live before the swap
/// (still in handover, so the live projector retries the gaps it meets there instead of
/// dead-lettering them), which are then caught up from the store's first position (they lack
/// what the projector wrote to the abandoned tables during the handover, and nothing says from
/// where: every commit is read, and what the tables hold is skipped), and the handover ends.
/// Run again after an interruption, it resumes the catch-up. The abandoned tables and their
/// rebuild progress are kept (a later `--swap` resumes them; delete them to start afresh).
pub async fn roll_back_handover(
    store: &PgEventStore,
    alias: &ViewAlias,
    views_table: &str,
    batch_commits: usize,
    on_batch: impl FnMut(&RebuildProgress),
) -> Result<HandoverEnd, ReplayError> {
    let live = in_handover(alias).await?;
    if !live.rolling_back {
        let Some(previous) = live.previous else {
            return Err(ReplayError::NoHandover(live.tables.orders));
        };
        alias.begin_rollback(&live.tables, &previous).await?;
    }
    finish_handover(store, alias, views_table, batch_commits, on_batch).await
}

/// What the alias names now, refused unless a handover is going on.
async fn in_handover(alias: &ViewAlias) -> Result<LiveView, ReplayError> {
    let live = alias.live().await?;
    if !live.handover {
        return Err(ReplayError::NoHandover(live.tables.orders));
    }
    Ok(live)
}
