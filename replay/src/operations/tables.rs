//! `replay` on the DynamoDB active-orders view.

use aws_sdk_dynamodb::Client;
use event_store::PgEventStore;
use read_models::{ActiveOrdersProjection, ActiveOrdersTables, ViewAlias};

use super::console::{print_comparison, ProgressLine};
use super::{open_store, run_rebuild, Outcome, Source, Target};
use crate::dynamodb::{
    compare_views, drop_tables, empty_tables, existing_tables, finish_handover, roll_back_handover,
    swap_in_tables, target_tables, HandoverEnd, TablesProgress, VerifyOptions,
};
use crate::settings::Settings;
use crate::{resolve_through, ProgressStore, RebuildOptions, RebuildProgress, ReplayError};

/// The view's name, as its projection reports it.
pub(super) const NAME: &str = "active_orders";

/// The DynamoDB client and the view alias, the views table created if missing.
async fn connect(settings: &Settings) -> Result<(Client, ViewAlias), ReplayError> {
    let client = aws_support::dynamodb(&aws_support::sdk_config(&settings.aws).await);
    ViewAlias::create_table(&client, &settings.dynamodb.views_table)
        .await
        .map_err(ReplayError::ViewsTableUnreachable)?;
    let alias = settings.dynamodb.active_orders_alias(client.clone());
    Ok((client, alias))
}

fn progress_of(
    settings: &Settings,
    client: &Client,
    target: &ActiveOrdersTables,
) -> TablesProgress {
    TablesProgress::new(
        client.clone(),
        &settings.dynamodb.views_table,
        target.clone(),
    )
}

/// `replay rebuild active_orders`.
pub async fn rebuild_tables(settings: &Settings, request: &Target) -> Result<Outcome, ReplayError> {
    let (target, until, swap, dry_run) = request.options();
    let request_source = request.source();
    let store = open_store(settings).await?;
    let (client, alias) = connect(settings).await?;
    let live = alias.live().await?;
    if live.rolling_back {
        refuse!(
            "a rollback to {} is in handover; finish it first with `replay handover --abort`",
            live.tables.orders
        );
    }
    let (target, base) = match target {
        Some(base) => (target_tables(base)?, base.clone()),
        None => {
            let resumable = swap_to_resume(settings, &client, &live).await?;
            match resumable {
                Some(target) => {
                    println!(
                        "resuming the unfinished swap to {} and {}",
                        target.orders, target.stores
                    );
                    let base = target.orders.clone();
                    (target, base)
                }
                None => {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    let base = format!("{}-rebuild-{now}", settings.dynamodb.active_orders_table);
                    (target_tables(&base)?, base)
                }
            }
        }
    };
    let progress = progress_of(settings, &client, &target);
    let resuming = progress.exists().await?;
    let finishing_swap = live.tables == target && live.handover;
    if live.tables == target && !finishing_swap {
        refuse!(
            "--target {base} is the live view ({}); choose another",
            target.orders
        );
    }
    let existing = existing_tables(&client, &target).await?;
    if !existing.is_empty() && !resuming && !finishing_swap {
        refuse!(
            "table(s) {} exist and were not created by replay (no rebuild progress in {}); \
             choose a new --target",
            existing.join(", "),
            settings.dynamodb.views_table
        );
    }
    let options = RebuildOptions {
        until,
        batch_commits: settings.replay.batch_commits,
    };
    if dry_run {
        let after = progress.load(NAME).await?.unwrap_or(0);
        let through = resolve_through(&store, until).await?;
        let state = if resuming { "resume" } else { "create" };
        println!(
            "dry run: would {state} tables {} and {} and apply {NAME} positions {} to {} \
             ({} events); nothing changed",
            target.orders,
            target.stores,
            after + 1,
            through,
            (through - after).max(0),
        );
        if swap {
            println!(
                "dry run: would then move the view alias from {} to {} and keep the old tables",
                live.tables.orders, target.orders
            );
        }
        return Ok(Outcome::Done);
    }
    if !finishing_swap {
        if swap {
            // Marked before the first batch, so an interruption anywhere leaves it findable.
            ActiveOrdersProjection::create_tables(&client, &target).await?;
            progress.start().await?;
            progress.mark_for_swap(&live.tables).await?;
        }
        let done = build(
            &store,
            &client,
            &target,
            &progress,
            &options,
            request_source,
        )
        .await?;
        println!(
            "{NAME} rebuilt into tables {} and {}: {} events in {} commits, positions {} to {}",
            target.orders,
            target.stores,
            done.events,
            done.commits,
            done.started_after + 1,
            done.applied_through,
        );
    }
    if swap {
        let mut line = ProgressLine::new(NAME);
        let swapped = swap_in_tables(
            &store,
            &alias,
            &target,
            &progress,
            settings.replay.batch_commits,
            |p| line.show(p),
        )
        .await;
        line.finish();
        let swapped = swapped?;
        for copied in &swapped.settings {
            if !copied.applied.is_empty() {
                println!(
                    "{} got the live table's {}",
                    copied.table,
                    copied.applied.join(", ")
                );
            }
            if !copied.unsupported.is_empty() {
                println!(
                    "warning: this DynamoDB endpoint cannot read or set {} on {}: check them by \
                     hand",
                    copied.unsupported.join(", "),
                    copied.table
                );
            }
        }
        println!(
            "swapped in: the view alias names {} and {}, caught up {} more events through \
             position {}; the old tables {} and {} are kept (delete them when satisfied)",
            target.orders,
            target.stores,
            swapped.tail.events,
            swapped.tail.applied_through,
            swapped.retired.orders,
            swapped.retired.stores
        );
    }
    Ok(Outcome::Done)
}

/// Which unfinished swap `replay rebuild active_orders --swap` without `--target` resumes: the
/// one in handover, else the one rebuild marked to replace the live tables. Several such
/// rebuilds are refused: the operator names one with `--target`.
async fn swap_to_resume(
    settings: &Settings,
    client: &Client,
    live: &read_models::LiveView,
) -> Result<Option<ActiveOrdersTables>, ReplayError> {
    if live.handover {
        return Ok(Some(live.tables.clone()));
    }
    let mut pending =
        TablesProgress::swaps_of(client, &settings.dynamodb.views_table, &live.tables).await?;
    match pending.len() {
        0 | 1 => Ok(pending.pop()),
        _ => {
            let names: Vec<&str> = pending.iter().map(|t| t.orders.as_str()).collect();
            refuse!(
                "{} unfinished rebuilds are marked to replace {}: {}; name the one to resume \
                 with --target (its base name: the orders table without -orders)",
                pending.len(),
                live.tables.orders,
                names.join(", ")
            )
        }
    }
}

/// `replay handover --finish|--abort`: ends a swap's handover left unfinished, by catching up
/// the tables the alias names (finish) or by going back to the tables live before and catching
/// those up (abort).
pub async fn end_handover(settings: &Settings, abort: bool) -> Result<Outcome, ReplayError> {
    let store = open_store(settings).await?;
    let (_, alias) = connect(settings).await?;
    let mut line = ProgressLine::new(NAME);
    let views = &settings.dynamodb.views_table;
    let batch = settings.replay.batch_commits;
    let ended = if abort {
        roll_back_handover(&store, &alias, views, batch, |p| line.show(p)).await
    } else {
        finish_handover(&store, &alias, views, batch, |p| line.show(p)).await
    };
    line.finish();
    let HandoverEnd { live, other, tail } = ended?;
    let verb = if abort { "rolled back" } else { "finished" };
    let other = other.map_or_else(String::new, |o| {
        let role = if abort { "abandoned" } else { "old" };
        format!(
            "; the {role} tables {} and {} are kept (delete them when satisfied)",
            o.orders, o.stores
        )
    });
    println!(
        "handover {verb}: the view alias names {} and {}, caught up {} events through position \
         {}{other}",
        live.orders, live.stores, tail.events, tail.applied_through
    );
    Ok(Outcome::Done)
}

/// `replay rebuild active_orders --in-place` (confirmed by the caller): empties the live tables
/// (those the alias names) and rebuilds into them; run again after an interruption, it resumes.
pub async fn rebuild_tables_in_place(
    settings: &Settings,
    dry_run: bool,
) -> Result<Outcome, ReplayError> {
    let store = open_store(settings).await?;
    let (client, alias) = connect(settings).await?;
    let live = alias.live().await?;
    if live.handover {
        refuse!(
            "a swap to {} is not finished; finish it with `replay handover --finish` (or roll \
             it back with `--abort`) first",
            live.tables.orders
        );
    }
    let live = live.tables;
    let progress = progress_of(settings, &client, &live);
    let resuming = progress.exists().await?;
    if dry_run {
        let after = progress.load(NAME).await?.unwrap_or(0);
        let through = resolve_through(&store, None).await?;
        let first = if resuming {
            "resume"
        } else {
            "empty the live tables and"
        };
        println!(
            "dry run: would {first} rebuild {} and {} in place, positions {} to {}; nothing changed",
            live.orders,
            live.stores,
            after + 1,
            through
        );
        return Ok(Outcome::Done);
    }
    if resuming {
        println!(
            "resuming the in-place rebuild of {} and {}",
            live.orders, live.stores
        );
    } else {
        // Emptied before the progress item exists: an interruption in between empties again.
        empty_tables(&client, &live).await?;
    }
    let options = RebuildOptions {
        until: None,
        batch_commits: settings.replay.batch_commits,
    };
    let done = build(&store, &client, &live, &progress, &options, Source::Store).await?;
    progress.remove().await?;
    println!(
        "{NAME} rebuilt in place in {} and {}: {} events in {} commits, through position {}",
        live.orders, live.stores, done.events, done.commits, done.applied_through
    );
    Ok(Outcome::Done)
}

/// `replay verify active_orders`: the live tables (the alias's) against a scratch rebuild.
pub async fn verify_tables(
    settings: &Settings,
    scratch: Option<String>,
) -> Result<Outcome, ReplayError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let base = scratch
        .unwrap_or_else(|| format!("{}-verify-{now}", settings.dynamodb.active_orders_table));
    let scratch = target_tables(&base)?;
    let store = open_store(settings).await?;
    let (client, alias) = connect(settings).await?;
    let live = alias.live().await?.tables;
    if live.orders == scratch.orders || live.stores == scratch.stores {
        refuse!("--scratch {base} names the live tables; choose another");
    }
    let existing = existing_tables(&client, &live).await?;
    if existing.len() < 2 {
        refuse!(
            "the live tables {} and {} do not both exist",
            live.orders,
            live.stores
        );
    }
    if !existing_tables(&client, &scratch).await?.is_empty() {
        refuse!("scratch table(s) for {base} already exist; choose another --scratch");
    }
    let progress = progress_of(settings, &client, &scratch);
    let options = RebuildOptions {
        until: None,
        batch_commits: settings.replay.batch_commits,
    };
    // The scratch tables go whatever happens, so a failed verify leaves nothing behind.
    let compared = async {
        build(
            &store,
            &client,
            &scratch,
            &progress,
            &options,
            Source::Store,
        )
        .await?;
        // The re-check catches the scratch tables up with the store's end again, so commits
        // the live projector applied meanwhile are on both sides.
        let catch_up = || async {
            let projection = ActiveOrdersProjection::new(client.clone(), scratch.clone());
            crate::rebuild(&store, &projection, &progress, &options, |_| {}).await?;
            Ok(())
        };
        let options = VerifyOptions::default();
        compare_views(&client, &live, &scratch, &options, catch_up).await
    }
    .await;
    drop_tables(&client, &scratch)
        .await
        .map_err(|e| ReplayError::ScratchLeft {
            what: format!("delete the scratch tables of {base}"),
            source: Box::new(e),
        })?;
    progress.remove().await?;
    let comparison = compared?;
    print_comparison(&comparison, &format!("{} + {}", live.orders, live.stores));
    Ok(Outcome::of(&comparison))
}

/// `replay list`, the active-orders line: the tables the alias names, whether a swap is
/// finishing, and their approximate item counts (DynamoDB refreshes them every few hours).
pub async fn list_tables(settings: &Settings, store: &PgEventStore) -> Result<(), ReplayError> {
    let (client, alias) = connect(settings).await?;
    let live = alias.live().await?;
    let mut counts = Vec::new();
    for table in [&live.tables.orders, &live.tables.stores] {
        let count = match client.describe_table().table_name(table).send().await {
            Ok(output) => output
                .table()
                .and_then(|t| t.item_count())
                .map_or_else(|| "?".to_owned(), |n| format!("~{n} items")),
            Err(_) => "missing".to_owned(),
        };
        counts.push(format!("{table} ({count})"));
    }
    let state = match (live.handover, live.rolling_back) {
        (true, true) => ", a rollback is catching up (`replay handover --abort` finishes it)",
        (true, false) => ", a swap is catching up (`replay handover --finish|--abort`)",
        _ => "",
    };
    let previous = live.previous.map_or_else(String::new, |p| {
        format!("; previous tables {} and {}", p.orders, p.stores)
    });
    println!(
        "{NAME}: tables {}{state}{previous}; store's last position {} (per-aggregate markers only: \
         the live projector's lag is `projectors leases`)",
        counts.join(" and "),
        store.last_position().await?
    );
    Ok(())
}

async fn build(
    store: &PgEventStore,
    client: &Client,
    target: &ActiveOrdersTables,
    progress: &TablesProgress,
    options: &RebuildOptions,
    source: Source<'_>,
) -> Result<RebuildProgress, ReplayError> {
    ActiveOrdersProjection::create_tables(client, target).await?;
    progress.start().await?;
    let projection = ActiveOrdersProjection::new(client.clone(), target.clone());
    run_rebuild(store, &projection, progress, options, source).await
}
