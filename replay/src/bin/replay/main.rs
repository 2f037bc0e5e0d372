//! `replay`: rebuild a read model from the event store into a fresh target, swap it in, or
//! verify the live one against a rebuild.

mod output;
mod schemas;
mod tables;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use commit_log::projection::Projection;
use event_store::{PgEventStore, StoreConfig};
use replay::settings::Settings;
use replay::{
    rebuild, rebuild_aggregate, rebuild_from_stream, AggregateRef, ProgressStore, RebuildOptions,
    RebuildProgress, StreamSource, StreamStart, Until, ViewKind,
};

/// Where a rebuild reads its commits.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// The event store, every aggregate.
    Store,
    /// The event store, one aggregate.
    Aggregate(&'a AggregateRef),
    /// The Kinesis stream.
    Stream(&'a StreamSource),
}

/// Runs a rebuild of `projection` from `source`, with the progress bar on stderr.
pub async fn run_rebuild(
    store: &PgEventStore,
    projection: &dyn Projection,
    progress: &dyn ProgressStore,
    options: &RebuildOptions,
    source: Source<'_>,
) -> anyhow::Result<RebuildProgress> {
    let mut line = output::ProgressLine::new(projection.name());
    let show = |p: &RebuildProgress| line.show(p);
    let done = match source {
        Source::Store => rebuild(store, projection, progress, options, show).await,
        Source::Aggregate(one) => {
            rebuild_aggregate(store, projection, progress, options, one, show).await
        }
        Source::Stream(stream) => {
            rebuild_from_stream(stream, projection, options.batch_commits, show).await
        }
    };
    line.finish();
    Ok(done?)
}

/// What `replay rebuild` was asked, parsed (the projection and `--aggregate` apart).
pub struct RebuildRequest {
    /// `--target`.
    pub target: Option<String>,
    /// `--until`.
    pub until: Option<Until>,
    /// `--swap`.
    pub swap: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--from-stream [--since]`: read the Kinesis stream instead of the store.
    pub from_stream: Option<StreamSource>,
}

/// orderpipe's replay tool: rebuilds a read model (active_orders, history or analytics) from the
/// event store into a fresh target, swaps it in, or verifies the live view against a rebuild.
///
/// The event store is read in commit order with the upcasters applied, in batches of
/// replay.batch_commits commits. history and analytics build into a schema of their database
/// and keep their progress in its replay_progress table; active_orders builds into two new
/// DynamoDB tables (<target>-orders, <target>-stores) and keeps its progress in the views table
/// (dynamodb.views_table), whose alias item names the live tables. Running the same command
/// again after an interruption resumes where it stopped.
///
/// Settings come from built-in defaults, then the optional --config TOML file, then
/// ORDERPIPE_<SECTION>__<KEY> environment variables: ORDERPIPE_DATABASE__URL (the event store),
/// ORDERPIPE_HISTORY__DATABASE__URL, ORDERPIPE_ANALYTICS__DATABASE__URL (the read models, as for
/// the projectors), ORDERPIPE_DYNAMODB__{ACTIVE_ORDERS,STORE_METRICS,VIEWS}_TABLE,
/// ORDERPIPE_AWS__REGION / ORDERPIPE_AWS__ENDPOINT_URL (or AWS_ENDPOINT_URL_DYNAMODB),
/// ORDERPIPE_REPLAY__BATCH_COMMITS.
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
    /// Build PROJECTION into a new target (--target), which is kept, not swapped in (or, with
    /// --swap, swapped in). Refuses an existing target unless it is an earlier rebuild's, which
    /// it then resumes (and catches up to the log's current end, or to --until).
    Rebuild {
        /// active_orders, history or analytics.
        projection: String,
        /// history/analytics: the schema to build into (lowercase letters, digits, _);
        /// active_orders: the base name of the two tables (<target>-orders, <target>-stores).
        /// Required without --swap; with --swap the default is <live schema>_rebuild_<unix
        /// seconds> / <dynamodb.active_orders_table>-rebuild-<unix seconds>.
        #[arg(long, required_unless_present_any = ["swap", "in_place"])]
        target: Option<String>,
        /// Stop at this global position (a commit it splits is left out) or at this RFC 3339
        /// time (the log up to the first event recorded after it): an as-of view for analysts.
        #[arg(long, value_name = "POSITION|RFC3339", conflicts_with = "swap")]
        until: Option<String>,
        /// history/analytics: rebuild one aggregate only (TYPE/ID: order/<uuid>,
        /// inventory/<store>, loyalty/<customer>), read through the store's per-aggregate
        /// index, into --target (default <live>_agg_<unix seconds>). With --swap its rows then
        /// replace the aggregate's rows in the live schema, in one transaction holding the live
        /// projector's lock, and the target is dropped. Analytics dimensions (shared by all
        /// aggregates) are left as they are.
        #[arg(long, value_name = "TYPE/ID")]
        aggregate: Option<String>,
        /// Read the commits from the Kinesis stream (kinesis.stream_name) instead of the event
        /// store: every shard from its trim horizon (or from --since), parents before
        /// children. Onto an empty target this needs the whole history still in the stream
        /// (an aggregate whose first commits expired is reported as a gap). Keeps no
        /// progress of its own: run again, it reads the stream again and skips what is
        /// applied. With --swap, the catch-up before the swap reads the store.
        #[arg(long, conflicts_with_all = ["until", "aggregate"])]
        from_stream: bool,
        /// With --from-stream: start at the first record added at or after this RFC 3339 time
        /// (AT_TIMESTAMP), onto a target that holds the view as of then (e.g. built with
        /// --until the same time). Refused outside the stream's retention.
        #[arg(long, value_name = "RFC3339", requires = "from_stream")]
        since: Option<String>,
        /// Then swap the target in for the live view. history/analytics: in one transaction
        /// that holds the live projector's lock, catch it up with the log and rename live to
        /// <live>_old_<unix seconds> and the target to live. active_orders: catch up, move the
        /// view alias to the new tables (the projector and the dashboard follow it from their
        /// next batch / read), catch up with the log's end read after the move, end the
        /// handover. Readers see the old view until the swap and the new one after. The old
        /// schema or tables are kept (drop them when satisfied). Run again after an
        /// interruption, it finishes the swap; for active_orders the same command without
        /// --target finds the unfinished swap (the one in handover, else the rebuild marked
        /// to replace the live tables) and resumes it.
        #[arg(long)]
        swap: bool,
        /// Rebuild the live view where it stands: empty its tables, then rebuild into them.
        /// Readers see an empty, then a growing view, and the live projector of PROJECTION
        /// must be stopped meanwhile (its commits would arrive as gaps and be dead-lettered).
        /// Asks to type the projection's name to confirm, unless --yes. For when a second
        /// copy of the view does not fit; prefer --swap.
        #[arg(long, conflicts_with_all = ["target", "swap", "until", "aggregate"])]
        in_place: bool,
        /// Confirms --in-place without asking (scripts).
        #[arg(long, requires = "in_place")]
        yes: bool,
        /// Print what would be rebuilt (target, positions, events) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// active_orders: end a swap's handover left unfinished (the alias stuck in handover after
    /// an interrupted `rebuild --swap`). --finish catches the tables the alias names up with
    /// the log and ends the handover (as running the swap again does); --abort moves the alias
    /// back to the tables live before the swap, catches those up (reading the whole log: they
    /// lack what the projector wrote to the abandoned tables meanwhile) and ends the
    /// handover. Either, run again after an interruption, resumes.
    Handover {
        /// Finish the swap.
        #[arg(long, required_unless_present = "abort", conflicts_with = "abort")]
        finish: bool,
        /// Roll the swap back.
        #[arg(long)]
        abort: bool,
    },
    /// For history and analytics: the configured live schema, whether it exists, its number of
    /// aggregates, the events of the store it reflects and does not reflect yet, the highest
    /// position among the reflected events, and the store's last position. For active_orders:
    /// the tables the view alias names and their approximate sizes. The live projector's own
    /// lag (its Kinesis checkpoints) is shown by `projectors leases`.
    List,
    /// Rebuild PROJECTION into a scratch target, compare it with the live view table by table
    /// (row / item counts, every differing row or item), then drop the scratch target.
    /// history/analytics: compare while the live projector is caught up and no commands
    /// arrive, or live changes show up as differences. active_orders may run in production:
    /// it streams both sides, skips ended orders past their TTL that DynamoDB deleted from the
    /// live table, and compares an item only when its aggregate stands at the same sequence on
    /// both sides, re-checking the others after 5 s (the scratch caught up again); it prints
    /// how many it skipped and why.
    Verify {
        /// active_orders, history or analytics.
        projection: String,
        /// history/analytics: the live schema; default: the configured one (history.schema,
        /// analytics.schema). active_orders always compares the tables the alias names.
        #[arg(long)]
        live: Option<String>,
        /// The scratch schema (default <projection>_verify_<unix seconds>) or, for
        /// active_orders, tables' base name (default
        /// <dynamodb.active_orders_table>-verify-<unix seconds>).
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
            aggregate,
            from_stream,
            since,
            swap,
            in_place,
            yes,
            dry_run,
        } => {
            let kind: ViewKind = projection.parse()?;
            let from_stream = if from_stream {
                Some(stream_source(&settings, since.as_deref()).await?)
            } else {
                None
            };
            let request = RebuildRequest {
                target,
                until: until.as_deref().map(str::parse::<Until>).transpose()?,
                swap,
                dry_run,
                from_stream,
            };
            let aggregate = aggregate
                .as_deref()
                .map(str::parse::<AggregateRef>)
                .transpose()?;
            if in_place {
                if !dry_run {
                    confirm_in_place(&projection, yes)?;
                }
                return match kind {
                    ViewKind::Schema(model) => {
                        schemas::rebuild_schema_in_place(&settings, model, dry_run).await
                    }
                    ViewKind::ActiveOrders => {
                        tables::rebuild_tables_in_place(&settings, dry_run).await
                    }
                };
            }
            match (kind, aggregate) {
                (ViewKind::Schema(model), None) => {
                    schemas::rebuild_schema(&settings, model, &request).await
                }
                (ViewKind::Schema(model), Some(aggregate)) => {
                    schemas::rebuild_aggregate_rows(&settings, model, &aggregate, &request).await
                }
                (ViewKind::ActiveOrders, None) => tables::rebuild_tables(&settings, &request).await,
                (ViewKind::ActiveOrders, Some(_)) => anyhow::bail!(
                    "--aggregate is for history and analytics: the active-orders view keeps \
                     per-store daily counters that one order's rows cannot be taken out of \
                     exactly; rebuild the view with --swap instead"
                ),
            }
        }
        Command::Handover { finish: _, abort } => tables::end_handover(&settings, abort).await,
        Command::List => {
            let store = open_store(&settings).await?;
            tables::list_tables(&settings, &store).await?;
            schemas::list_schemas(&settings, &store).await?;
            Ok(true)
        }
        Command::Verify {
            projection,
            live,
            scratch,
        } => match projection.parse()? {
            ViewKind::Schema(model) => {
                schemas::verify_schema(&settings, model, live, scratch).await
            }
            ViewKind::ActiveOrders => {
                if live.is_some() {
                    anyhow::bail!(
                        "--live is for history and analytics; active_orders compares the tables \
                         the view alias names"
                    );
                }
                tables::verify_tables(&settings, scratch).await
            }
        },
    }
}

/// The stream `--from-stream` reads, from `--since` or the trim horizon.
async fn stream_source(settings: &Settings, since: Option<&str>) -> anyhow::Result<StreamSource> {
    let start = match since {
        None => StreamStart::TrimHorizon,
        Some(text) => StreamStart::At(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--since takes an RFC 3339 time, got {text:?}"))?,
        ),
    };
    Ok(StreamSource {
        client: aws_sdk_kinesis::Client::new(&aws_support::sdk_config(&settings.aws).await),
        stream: settings.kinesis.stream_name.clone(),
        start,
    })
}

/// `--in-place` empties a live view: the operator types the projection's name to go on, or
/// passed --yes. Without a terminal to ask at, only --yes goes on.
fn confirm_in_place(projection: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("--in-place empties the live {projection} view: confirm with --yes");
    }
    eprint!(
        "This empties the live {projection} view and rebuilds it; readers see it empty meanwhile, \
         and its projector must be stopped.\nType {projection} to go on: "
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != projection {
        anyhow::bail!("not confirmed; nothing changed");
    }
    Ok(())
}

/// Opening the store also checks it is reachable (it runs the store's migrations, a no-op on an
/// up-to-date store).
async fn open_store(settings: &Settings) -> anyhow::Result<PgEventStore> {
    PgEventStore::open(settings.database.pool()?, StoreConfig::default())
        .await
        .context("cannot reach the event store (database settings)")
}
