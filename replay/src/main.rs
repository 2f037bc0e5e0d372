//! `replay`: rebuild a read model from the event store into a fresh schema, or verify the live
//! one against a rebuild.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use event_store::{PgEventStore, StoreConfig};
use projectors::projections::SchemaName;
use replay::settings::Settings;
use replay::{
    drop_schema, rebuild, resolve_through, schema_exists, swap_in, verify, view_status, Comparison,
    ProgressTable, ReadModel, RebuildOptions, RebuildProgress, SwapPlan, Until, ViewStatus,
};
use sqlx::PgPool;

/// orderpipe's replay tool: rebuilds a read model (history or analytics) from the event store.
///
/// The event store is read in commit order with the upcasters applied, in batches of
/// replay.batch_commits commits, into a schema of the read model's database. Progress is kept in
/// that schema's replay_progress table, so running the same command again after an interruption
/// resumes where it stopped.
///
/// Settings come from built-in defaults, then the optional --config TOML file, then
/// ORDERPIPE_<SECTION>__<KEY> environment variables: ORDERPIPE_DATABASE__URL (the event store),
/// ORDERPIPE_HISTORY__DATABASE__URL, ORDERPIPE_ANALYTICS__DATABASE__URL (the read models, as for
/// the projectors), ORDERPIPE_REPLAY__BATCH_COMMITS.
///
/// Exit status: 0 done (verify: no difference), 1 verify found differences, 2 an error.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// A TOML settings file layered over the defaults.
    #[arg(long, global = true, env = "ORDERPIPE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build PROJECTION (history or analytics) into the new schema --target, which is kept, not
    /// swapped in (or, with --swap, swapped in). Refuses an existing schema unless it is an
    /// earlier rebuild's target, which it then resumes (and catches up to the log's current end,
    /// or to --until).
    Rebuild {
        /// history or analytics.
        projection: String,
        /// The schema to build into (lowercase letters, digits, _). Required without --swap;
        /// with --swap the default is <live schema>_rebuild_<unix seconds>.
        #[arg(long, required_unless_present = "swap")]
        target: Option<String>,
        /// Stop at this global position (a commit it splits is left out) or at this RFC 3339
        /// time (the log up to the first event recorded after it): an as-of view for analysts.
        #[arg(long, value_name = "POSITION|RFC3339", conflicts_with = "swap")]
        until: Option<String>,
        /// Then swap the rebuilt schema in for the live one (history.schema / analytics.schema):
        /// in one transaction that holds the live projector's lock, catch it up with the log and
        /// rename live to <live>_old_<unix seconds> and the rebuilt schema to live. Readers see
        /// the old view until the commit and the new one after. The old schema is kept (drop it
        /// when satisfied).
        #[arg(long)]
        swap: bool,
        /// Print what would be rebuilt (target, positions, events) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// For history and analytics: the configured live schema, whether it exists, its number of
    /// aggregates, the events of the store it reflects and does not reflect yet, the highest
    /// position among the reflected events, and the store's last position. The live projector's
    /// own lag (its Kinesis checkpoints) is shown by `projectors leases`.
    List,
    /// Rebuild PROJECTION into a scratch schema, compare it with the live schema table by table
    /// (row counts, checksums, every differing row), then drop the scratch schema. Compare while
    /// the live projector is caught up and no commands arrive, or live changes show up as
    /// differences.
    Verify {
        /// history or analytics.
        projection: String,
        /// The live schema; default: the projection's configured schema (history.schema,
        /// analytics.schema).
        #[arg(long)]
        live: Option<String>,
        /// The scratch schema; default: <projection>_verify_<unix seconds>.
        #[arg(long)]
        scratch: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(false): verify found differences.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Rebuild {
            projection,
            target,
            until,
            swap,
            dry_run,
        } => {
            let model: ReadModel = projection.parse()?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let live = &settings.read_model(model).schema;
            let target = match target {
                Some(name) => schema_name("--target", &name)?,
                None => schema_name("--target", &format!("{live}_rebuild_{now}"))?,
            };
            let swap = if swap {
                let plan = SwapPlan {
                    live: schema_name(&format!("{}.schema", model.name()), live)?,
                    rebuilt: target.clone(),
                    retired: schema_name("the retired schema", &format!("{live}_old_{now}"))?,
                };
                if plan.live == plan.rebuilt {
                    bail!("--target {target} is the live schema; choose another");
                }
                Some(plan)
            } else {
                None
            };
            let until = until.as_deref().map(str::parse::<Until>).transpose()?;
            let store = open_store(&settings).await?;
            let pool = read_model_pool(&settings, model)?;
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
                return Ok(true);
            }
            let done = build(&store, &pool, model, &target, &options).await?;
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
            Ok(true)
        }
        Command::List => {
            let store = open_store(&settings).await?;
            for model in [ReadModel::History, ReadModel::Analytics] {
                let schema = schema_name(
                    &format!("{}.schema", model.name()),
                    &settings.read_model(model).schema,
                )?;
                let pool = read_model_pool(&settings, model)?;
                let status = view_status(&store, &pool, model, &schema)
                    .await
                    .with_context(|| format!("cannot read the {} view's markers", model.name()))?;
                print_status(model, &status);
            }
            Ok(true)
        }
        Command::Verify {
            projection,
            live,
            scratch,
        } => {
            let model: ReadModel = projection.parse()?;
            let live = schema_name(
                "--live",
                live.as_deref()
                    .unwrap_or(&settings.read_model(model).schema),
            )?;
            let scratch = match scratch {
                Some(name) => schema_name("--scratch", &name)?,
                None => schema_name("--scratch", &default_scratch(model))?,
            };
            let store = open_store(&settings).await?;
            let pool = read_model_pool(&settings, model)?;
            if !schema_exists(&pool, &live)
                .await
                .with_context(|| unreachable(model))?
            {
                bail!("the live schema {live} does not exist");
            }
            if schema_exists(&pool, &scratch).await? {
                bail!("the scratch schema {scratch} already exists; choose another --scratch");
            }
            let options = RebuildOptions {
                until: None,
                batch_commits: settings.replay.batch_commits,
            };
            // The scratch schema goes whatever happens, so a failed verify leaves nothing behind.
            let compared = async {
                build(&store, &pool, model, &scratch, &options).await?;
                Ok::<_, anyhow::Error>(verify(&pool, &live, &scratch).await?)
            }
            .await;
            drop_schema(&pool, &scratch)
                .await
                .with_context(|| format!("cannot drop the scratch schema {scratch}"))?;
            let comparison = compared?;
            print_comparison(&comparison, &live);
            Ok(comparison.is_equal())
        }
    }
}

fn schema_name(option: &str, value: &str) -> anyhow::Result<SchemaName> {
    SchemaName::parse(value).with_context(|| format!("{option} is not a valid schema name"))
}

fn default_scratch(model: ReadModel) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    format!("{}_verify_{now}", model.name())
}

fn unreachable(model: ReadModel) -> String {
    format!(
        "cannot reach the {} database ({}.database settings)",
        model.name(),
        model.name()
    )
}

/// Opening the store also checks it is reachable (it runs the store's migrations, a no-op on an
/// up-to-date store).
async fn open_store(settings: &Settings) -> anyhow::Result<PgEventStore> {
    PgEventStore::open(settings.database.pool()?, StoreConfig::default())
        .await
        .context("cannot reach the event store (database settings)")
}

fn read_model_pool(settings: &Settings, model: ReadModel) -> anyhow::Result<PgPool> {
    Ok(settings.read_model(model).database.pool()?)
}

/// Whether `target` is an earlier rebuild to resume (true) or new (false); an existing schema
/// that replay did not start (a live view) is refused.
async fn check_target(
    pool: &PgPool,
    model: ReadModel,
    target: &SchemaName,
) -> anyhow::Result<bool> {
    if !schema_exists(pool, target)
        .await
        .with_context(|| unreachable(model))?
    {
        return Ok(false);
    }
    if ProgressTable::exists(pool, target).await? {
        return Ok(true);
    }
    bail!(
        "schema {target} exists and was not created by replay (no replay_progress table); \
         choose a new --target"
    )
}

/// The live schema must exist (there is nothing to swap otherwise) and the retired name be free.
async fn check_swap(pool: &PgPool, plan: &SwapPlan) -> anyhow::Result<()> {
    if !schema_exists(pool, &plan.live).await? {
        bail!(
            "the live schema {} does not exist; build it with --target {} instead",
            plan.live,
            plan.live
        );
    }
    if schema_exists(pool, &plan.retired).await? {
        bail!(
            "schema {} already exists; try again in a second",
            plan.retired
        );
    }
    Ok(())
}

async fn build(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    target: &SchemaName,
    options: &RebuildOptions,
) -> anyhow::Result<RebuildProgress> {
    model.create_schema(pool, target).await?;
    let progress = ProgressTable::new(pool.clone(), target.clone());
    progress.create().await?;
    let projection = model.projection(pool.clone(), target.clone());
    let mut line = ProgressLine::new(model.name());
    let done = rebuild(store, projection.as_ref(), &progress, options, |p| {
        line.show(p)
    })
    .await;
    line.finish();
    Ok(done?)
}

async fn print_plan(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    target: &SchemaName,
    resuming: bool,
    until: Option<Until>,
) -> anyhow::Result<()> {
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

fn print_comparison(comparison: &Comparison, live: &SchemaName) {
    let count = |rows: Option<i64>| rows.map_or_else(|| "missing".to_owned(), |n| n.to_string());
    for difference in &comparison.differences {
        println!(
            "table {}: live {} rows, rebuilt {} rows",
            difference.table,
            count(difference.left_rows),
            count(difference.right_rows)
        );
        for row in &difference.only_in_left {
            println!("  - only live:    {row}");
        }
        for row in &difference.only_in_right {
            println!("  + only rebuilt: {row}");
        }
    }
    if comparison.is_equal() {
        println!(
            "{live}: {} tables equal to a rebuild from the event store",
            comparison.tables_compared
        );
    } else {
        println!(
            "{live}: {} of the tables differ from a rebuild from the event store",
            comparison.differences.len()
        );
    }
}

/// One line on stderr, rewritten after every batch: position, events/s, ETA.
struct ProgressLine {
    name: &'static str,
    started: Instant,
    shown: bool,
}

impl ProgressLine {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
            shown: false,
        }
    }

    fn show(&mut self, progress: &RebuildProgress) {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = progress.events as f64 / seconds;
        let left = (progress.through - progress.applied_through).max(0) as f64;
        let eta = if rate > 0.0 { left / rate } else { 0.0 };
        eprint!(
            "\r{}: position {}/{}, {} events, {:.0} events/s, ETA {:.0}s   ",
            self.name, progress.applied_through, progress.through, progress.events, rate, eta
        );
        self.shown = true;
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
