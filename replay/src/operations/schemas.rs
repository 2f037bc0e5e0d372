//! `replay` on the schema read models (`history`, `analytics`).

use event_store::PgEventStore;
use read_models::SchemaName;
use sqlx::PgPool;

use super::console::{print_comparison, ProgressLine};
use super::{open_store, run_rebuild, Outcome, Source, Target};
use crate::bulk::{bulk_load_unfinished, takes_bulk_loads};
use crate::settings::Settings;
use crate::{
    drop_schema, empty_schema, rebuild_bulk, resolve_through, schema_exists, swap_aggregate_in,
    swap_in, verify, view_status, AggregateRef, BulkOptions, ProgressStore, ProgressTable,
    ReadModel, RebuildOptions, RebuildProgress, ReplayError, SwapPlan, Until, ViewStatus,
};

/// `replay rebuild history|analytics`.
pub async fn rebuild_schema(
    settings: &Settings,
    model: ReadModel,
    request: &Target,
) -> Result<Outcome, ReplayError> {
    let (target, until, swap, dry_run) = request.options();
    let request_source = request.source();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let live = &settings.read_model(model).schema;
    let target = match target {
        Some(name) => schema_name("--target", name)?,
        None => schema_name("--target", &format!("{live}_rebuild_{now}"))?,
    };
    let swap = if swap {
        let plan = SwapPlan {
            live: schema_name(&format!("{}.schema", model.name()), live)?,
            rebuilt: target.clone(),
            retired: schema_name("the retired schema", &format!("{live}_old_{now}"))?,
        };
        if plan.live == plan.rebuilt {
            refuse!("--target {target} is the live schema; choose another");
        }
        Some(plan)
    } else {
        None
    };
    let store = open_store(settings).await?;
    let pool = read_model_pool(settings, model)?;
    let resuming = check_target(&pool, model, &target).await?;
    if let Some(plan) = &swap {
        check_swap(&pool, plan).await?;
    }
    let options = RebuildOptions {
        until,
        batch_commits: settings.replay.batch_commits,
    };
    if dry_run {
        print_plan(&store, &pool, model, &target, resuming, until).await?;
        if let Some(plan) = &swap {
            println!(
                "dry run: would then swap {} in for {} and keep the old view as {}",
                plan.rebuilt, plan.live, plan.retired
            );
        }
        return Ok(Outcome::Done);
    }
    let done = build(
        &store,
        &pool,
        model,
        &target,
        (&options, settings.replay.bulk_writers),
        request_source,
    )
    .await?;
    println!(
        "{} rebuilt into schema {target}: {} events in {} commits, positions {} to {}",
        model.name(),
        done.events,
        done.commits,
        done.started_after + 1,
        done.applied_through,
    );
    if let Some(plan) = &swap {
        let mut line = ProgressLine::new(model.name());
        let tail = swap_in(
            &store,
            &pool,
            model,
            plan,
            settings.replay.batch_commits,
            |p| line.show(p),
        )
        .await;
        line.finish();
        let tail = tail?;
        println!(
            "swapped in as {}: caught up {} more events under the lock, through position {}; \
             the old view is kept as schema {} (drop it when satisfied)",
            plan.live, tail.events, tail.applied_through, plan.retired
        );
    }
    Ok(Outcome::Done)
}

/// `replay rebuild history|analytics --aggregate TYPE/ID`: the aggregate alone into a target,
/// kept, or with --swap put into the live schema and dropped.
pub async fn rebuild_aggregate_rows(
    settings: &Settings,
    model: ReadModel,
    aggregate: &AggregateRef,
    request: &Target,
) -> Result<Outcome, ReplayError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let live = live_schema(settings, model)?;
    let target = match &request.name {
        Some(name) => schema_name("--target", name)?,
        None => schema_name("--target", &format!("{live}_agg_{now}"))?,
    };
    if target == live {
        refuse!("--target {target} is the live schema; choose another");
    }
    let store = open_store(settings).await?;
    let pool = read_model_pool(settings, model)?;
    let resuming = check_target(&pool, model, &target).await?;
    if request.swap && !schema_exists(&pool, &live).await? {
        refuse!("the live schema {live} does not exist; there are no rows to replace");
    }
    if request.dry_run {
        let through = resolve_through(&store, request.until).await?;
        let state = if resuming { "resume" } else { "create" };
        println!(
            "dry run: would {state} schema {target} with {aggregate}'s commits through position \
             {through}{}; nothing changed",
            if request.swap {
                format!(", then replace its rows in {live}")
            } else {
                String::new()
            }
        );
        return Ok(Outcome::Done);
    }
    let options = RebuildOptions {
        until: request.until,
        batch_commits: settings.replay.batch_commits,
    };
    let done = build(
        &store,
        &pool,
        model,
        &target,
        (&options, settings.replay.bulk_writers),
        Source::Aggregate(aggregate),
    )
    .await?;
    println!(
        "{aggregate} rebuilt into schema {target}: {} events in {} commits",
        done.events, done.commits
    );
    if request.swap {
        let tail = swap_aggregate_in(
            &store,
            &pool,
            model,
            (&live, &target),
            aggregate,
            settings.replay.batch_commits,
        )
        .await?;
        drop_schema(&pool, &target).await?;
        println!(
            "{aggregate}'s rows replaced in {live} (caught up {} more events under the lock); \
             schema {target} dropped",
            tail.events
        );
    }
    Ok(Outcome::Done)
}

/// `replay rebuild history|analytics --in-place` (confirmed by the caller): empties the live
/// schema's tables and rebuilds into them; run again after an interruption, it resumes.
pub async fn rebuild_schema_in_place(
    settings: &Settings,
    model: ReadModel,
    dry_run: bool,
) -> Result<Outcome, ReplayError> {
    let live = live_schema(settings, model)?;
    let store = open_store(settings).await?;
    let pool = read_model_pool(settings, model)?;
    if !read_model_has(&pool, model, &live).await? {
        refuse!("the live schema {live} does not exist; build it with --target {live}");
    }
    let resuming = ProgressTable::exists(&pool, &live).await?;
    if dry_run {
        if !resuming {
            println!("dry run: would empty every table of the live schema {live}");
        }
        print_plan(&store, &pool, model, &live, resuming, None).await?;
        return Ok(Outcome::Done);
    }
    if resuming {
        println!("resuming the in-place rebuild of {live}");
    } else {
        empty_schema(&pool, model, &live).await?;
    }
    let options = RebuildOptions {
        until: None,
        batch_commits: settings.replay.batch_commits,
    };
    let done = build(
        &store,
        &pool,
        model,
        &live,
        (&options, settings.replay.bulk_writers),
        Source::Store,
    )
    .await?;
    ProgressTable::new(pool, live.clone()).drop_table().await?;
    println!(
        "{} rebuilt in place in schema {live}: {} events in {} commits, through position {}",
        model.name(),
        done.events,
        done.commits,
        done.applied_through,
    );
    Ok(Outcome::Done)
}

/// `replay list`, the schema read models' lines.
pub async fn list_schemas(settings: &Settings, store: &PgEventStore) -> Result<(), ReplayError> {
    for model in [ReadModel::History, ReadModel::Analytics] {
        let schema = live_schema(settings, model)?;
        let pool = read_model_pool(settings, model)?;
        let status = view_status(store, &pool, model, &schema)
            .await
            .map_err(|e| ReplayError::Markers {
                model: model.name(),
                source: Box::new(e),
            })?;
        print_status(model, &status);
    }
    Ok(())
}

/// `replay verify history|analytics`.
pub async fn verify_schema(
    settings: &Settings,
    model: ReadModel,
    live: Option<String>,
    scratch: Option<String>,
) -> Result<Outcome, ReplayError> {
    let live = schema_name(
        "--live",
        live.as_deref()
            .unwrap_or(&settings.read_model(model).schema),
    )?;
    let scratch = match scratch {
        Some(name) => schema_name("--scratch", &name)?,
        None => schema_name("--scratch", &default_scratch(model))?,
    };
    let store = open_store(settings).await?;
    let pool = read_model_pool(settings, model)?;
    if !read_model_has(&pool, model, &live).await? {
        refuse!("the live schema {live} does not exist");
    }
    if schema_exists(&pool, &scratch).await? {
        refuse!("the scratch schema {scratch} already exists; choose another --scratch");
    }
    let options = RebuildOptions {
        until: None,
        batch_commits: settings.replay.batch_commits,
    };
    // The scratch schema goes whatever happens, so a failed verify leaves nothing behind.
    let compared = async {
        build(
            &store,
            &pool,
            model,
            &scratch,
            (&options, settings.replay.bulk_writers),
            Source::Store,
        )
        .await?;
        verify(&pool, &live, &scratch).await
    }
    .await;
    drop_schema(&pool, &scratch)
        .await
        .map_err(|e| ReplayError::ScratchLeft {
            what: format!("drop the scratch schema {scratch}"),
            source: Box::new(e),
        })?;
    let comparison = compared?;
    print_comparison(&comparison, live.as_str());
    Ok(Outcome::of(&comparison))
}

fn schema_name(option: &str, value: &str) -> Result<SchemaName, ReplayError> {
    SchemaName::parse(value).map_err(|source| ReplayError::InvalidSchemaName {
        option: option.to_owned(),
        source,
    })
}

fn default_scratch(model: ReadModel) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    format!("{}_verify_{now}", model.name())
}

/// Whether `schema` exists in `model`'s database, which not answering is reported as such.
async fn read_model_has(
    pool: &PgPool,
    model: ReadModel,
    schema: &SchemaName,
) -> Result<bool, ReplayError> {
    schema_exists(pool, schema)
        .await
        .map_err(|error| ReplayError::ReadModelUnreachable {
            model: model.name(),
            source: Box::new(error),
        })
}

/// The live schema of `model`, as configured (`<model>.schema`).
fn live_schema(settings: &Settings, model: ReadModel) -> Result<SchemaName, ReplayError> {
    schema_name(
        &format!("{}.schema", model.name()),
        &settings.read_model(model).schema,
    )
}

fn read_model_pool(settings: &Settings, model: ReadModel) -> Result<PgPool, ReplayError> {
    Ok(settings.read_model(model).database.pool()?)
}

/// Whether `target` is an earlier rebuild to resume (true) or new (false); an existing schema
/// that replay did not start (a live view) is refused.
async fn check_target(
    pool: &PgPool,
    model: ReadModel,
    target: &SchemaName,
) -> Result<bool, ReplayError> {
    if !read_model_has(pool, model, target).await? {
        return Ok(false);
    }
    if ProgressTable::exists(pool, target).await? || bulk_load_unfinished(pool, target).await? {
        return Ok(true);
    }
    refuse!(
        "schema {target} exists and was not created by replay (no replay_progress table); \
         choose a new --target"
    )
}

/// The live schema must exist (there is nothing to swap otherwise) and the retired name be free.
async fn check_swap(pool: &PgPool, plan: &SwapPlan) -> Result<(), ReplayError> {
    if !schema_exists(pool, &plan.live).await? {
        refuse!(
            "the live schema {} does not exist; build it with --target {} instead",
            plan.live,
            plan.live
        );
    }
    if schema_exists(pool, &plan.retired).await? {
        refuse!(
            "schema {} already exists; try again in a second",
            plan.retired
        );
    }
    Ok(())
}

/// Builds `model` into `target`: as a bulk load when the target is new (or an unfinished bulk
/// load, started over) and read from the whole store, on PostgreSQL; else through the live
/// path, resuming.
async fn build(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    target: &SchemaName,
    (options, bulk_writers): (&RebuildOptions, usize),
    source: Source<'_>,
) -> Result<RebuildProgress, ReplayError> {
    let fresh = !schema_exists(pool, target).await? || bulk_load_unfinished(pool, target).await?;
    if bulk_writers > 0
        && fresh
        && matches!(source, Source::Store)
        && takes_bulk_loads(pool).await?
    {
        let bulk = BulkOptions {
            until: options.until,
            writers: bulk_writers,
            batch_commits: options.batch_commits,
        };
        let mut line = ProgressLine::new(model.name());
        let done = rebuild_bulk(store, pool, model, target, &bulk, |p| line.show(p)).await;
        line.finish();
        let done = done?;
        if done.restarted {
            println!(
                "schema {target} held an unfinished bulk rebuild (interrupted): dropped and \
                 rebuilt from the start"
            );
        }
        return Ok(done.progress);
    }
    model.create_schema(pool, target).await?;
    let progress = ProgressTable::new(pool.clone(), target.clone());
    progress.create().await?;
    let projection = model.projection(pool.clone(), target.clone());
    run_rebuild(store, projection.as_ref(), &progress, options, source).await
}

async fn print_plan(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    target: &SchemaName,
    resuming: bool,
    until: Option<Until>,
) -> Result<(), ReplayError> {
    let after = if resuming {
        ProgressTable::new(pool.clone(), target.clone())
            .load(model.name())
            .await?
            .unwrap_or(0)
    } else {
        0
    };
    let through = resolve_through(store, until).await?;
    let state = if resuming { "resume" } else { "create" };
    // Positions are gap-free, so the event count is their difference.
    println!(
        "dry run: would {state} schema {target} and apply {} positions {} to {} ({} events); nothing changed",
        model.name(),
        after + 1,
        through,
        (through - after).max(0),
    );
    Ok(())
}

fn print_status(model: ReadModel, status: &ViewStatus) {
    let Some(view) = &status.view else {
        println!(
            "{}: schema {} does not exist; the store has {} of its events, last position {}",
            model.name(),
            status.schema,
            status.store_events,
            status.store_last_position
        );
        return;
    };
    let highest = view
        .highest_position
        .map_or_else(|| "none".to_owned(), |p| p.to_string());
    println!(
        "{}: schema {}, {} aggregates, {} events reflected, {} not yet (of the store's {}), \
         highest reflected position {highest}, store's last position {}",
        model.name(),
        status.schema,
        view.aggregates,
        view.events_reflected,
        status.events_behind(),
        status.store_events,
        status.store_last_position
    );
}
