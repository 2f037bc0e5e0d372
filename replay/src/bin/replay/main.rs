//! `replay`: rebuild a read model from the event store into a fresh target, swap it in, or
//! verify the live one against a rebuild. The arguments are parsed here; the library's
//! [`replay::operations`] carries them out.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use replay::operations::{Operation, Outcome, RebuildRequest};
use replay::report::{Format, GroupBy, ReportRequest};
use replay::settings::{LayeredSettings, Settings};
use replay::StreamStart;
use service_kit::cli::SettingsFile;

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
/// history and analytics into a new schema (rebuild --target/--swap, with or without --until,
/// and verify's scratch schema) are written as a bulk load: the store read in order, the
/// commits handed by aggregate to replay.bulk_writers connections that stream rows with COPY,
/// secondary indexes, foreign keys and the progress written at the end in one transaction. A
/// bulk load interrupted before that step is dropped and started over when run again (it never
/// looks complete); a finished one resumes like any rebuild. The live path (batches of
/// replay.batch_commits through the projection) is used instead to resume an existing target,
/// for --aggregate, --from-stream and --in-place, on Redshift (it takes no COPY FROM STDIN;
/// replay asks the database's version()), and everywhere with replay.bulk_writers = 0.
///
/// Settings come from built-in defaults, then the optional --config TOML file, then
/// ORDERPIPE_<SECTION>__<KEY> environment variables: ORDERPIPE_DATABASE__URL (the event store),
/// ORDERPIPE_HISTORY__DATABASE__URL, ORDERPIPE_ANALYTICS__DATABASE__URL (the read models, as for
/// the projectors), ORDERPIPE_DYNAMODB__{ACTIVE_ORDERS,STORE_METRICS,VIEWS}_TABLE,
/// ORDERPIPE_AWS__REGION / ORDERPIPE_AWS__ENDPOINT_URL (or AWS_ENDPOINT_URL_DYNAMODB),
/// ORDERPIPE_REPLAY__BATCH_COMMITS, ORDERPIPE_REPLAY__BULK_WRITERS.
///
/// Exit status: 0 done (verify: no difference), 1 verify found differences, 2 an error.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    settings: SettingsFile,
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
    /// Print sales, order counts, average ticket and preparation times from the analytics
    /// view, for orders placed from --from through --to (UTC days, both included) that were
    /// not cancelled or rejected, one row per item, hour of day, store or loyalty tier.
    /// Reads the live schema (analytics.schema), or with --schema an as-of schema built by
    /// `replay rebuild analytics --target S --until T`; read only. Money: dollars in the
    /// table, integer cents in CSV and JSON.
    ///
    /// Example: replay report --from 2026-03-01 --to 2026-03-07 --by item --format csv
    /// --output week.csv
    Report {
        /// The first day, YYYY-MM-DD (UTC).
        #[arg(long, value_parser = date_argument)]
        from: time::Date,
        /// The last day, YYYY-MM-DD (UTC), included; at most 366 days after --from.
        #[arg(long, value_parser = date_argument)]
        to: time::Date,
        /// item, hour, store or tier (the tier the order earned loyalty points at; none when
        /// it earned none).
        #[arg(long, value_parser = choice_argument::<GroupBy>)]
        by: GroupBy,
        /// Only this store's orders.
        #[arg(long)]
        store: Option<String>,
        /// table (default), csv or json.
        #[arg(long, default_value = "table", value_parser = choice_argument::<Format>)]
        format: Format,
        /// Write the report to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        /// The analytics schema to read instead of the live one (an as-of rebuild).
        #[arg(long)]
        schema: Option<String>,
    },
    /// Print every settings key replay reads (its ORDERPIPE_* environment variable), one a
    /// line, with "required" (no default: a deployment must set it) or "optional".
    SettingsKeys,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Differences) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    if let Command::Report {
        from,
        to,
        by,
        store,
        format,
        output,
        schema,
    } = cli.command
    {
        let request = ReportRequest::new(from, to, by, store)?;
        let settings = Settings::load(cli.settings.path())?;
        let schema = read_models::SchemaName::parse(
            schema.as_deref().unwrap_or(&settings.analytics.schema),
        )?;
        let pool = settings.analytics.database.pool()?;
        let report = replay::report::sales_report(&pool, &schema, &request).await?;
        let text = replay::report::render(&report, format);
        match output {
            Some(path) => std::fs::write(&path, text)
                .with_context(|| format!("cannot write the report to {}", path.display()))?,
            None => print!("{text}"),
        }
        return Ok(Outcome::Done);
    }
    let Some(operation) = operation(cli.command)? else {
        service_kit::settings_keys::print(&Settings::keys());
        return Ok(Outcome::Done);
    };
    let settings = Settings::load(cli.settings.path())?;
    Ok(replay::operations::run(&settings, operation).await?)
}

/// The subcommand's arguments, parsed into what the library takes; `None` for
/// `settings-keys`, which needs no settings.
fn operation(command: Command) -> anyhow::Result<Option<Operation>> {
    Ok(Some(match command {
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
        } => Operation::Rebuild(RebuildRequest {
            view: projection.parse()?,
            from_stream: from_stream
                .then(|| stream_start(since.as_deref()))
                .transpose()?,
            until: until.as_deref().map(str::parse).transpose()?,
            aggregate: aggregate.as_deref().map(str::parse).transpose()?,
            target,
            swap,
            in_place,
            confirmed: yes,
            dry_run,
        }),
        Command::Handover { finish: _, abort } => Operation::Handover { abort },
        Command::List => Operation::List,
        Command::Verify {
            projection,
            live,
            scratch,
        } => Operation::Verify {
            view: projection.parse()?,
            live,
            scratch,
        },
        Command::SettingsKeys => return Ok(None),
        Command::Report { .. } => unreachable!("run handles report before operations"),
    }))
}

/// A `--from` / `--to` date, refused by clap (exit status 2) when it is not YYYY-MM-DD.
fn date_argument(text: &str) -> Result<time::Date, replay::report::ReportError> {
    replay::report::parse_date(text)
}

/// A `--by` / `--format` choice, refused by clap with the valid ones.
fn choice_argument<T: std::str::FromStr>(text: &str) -> Result<T, T::Err> {
    text.parse()
}

/// Where `--from-stream` starts: at `--since`, or at the trim horizon.
fn stream_start(since: Option<&str>) -> anyhow::Result<StreamStart> {
    Ok(match since {
        None => StreamStart::TrimHorizon,
        Some(text) => StreamStart::At(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--since takes an RFC 3339 time, got {text:?}"))?,
        ),
    })
}
