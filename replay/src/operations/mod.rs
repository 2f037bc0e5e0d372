//! What the operator runs: the `replay` subcommands, carried out from the settings and the
//! parsed arguments to the lines printed on stdout (the progress line goes to stderr).
//!
//! - [`run`]: carries out one [`Operation`], choosing the schema or the table flavour of it;
//! - `schemas`: rebuild, swap, list and verify of the schema read models (history, analytics);
//! - `tables`: the same for the DynamoDB active-orders view, plus ending a swap's handover;
//! - [`console`]: what the operator sees and answers: the progress line, a comparison's
//!   report, the `--in-place` confirmation.
//!
//! The `replay` binary parses the arguments into an [`Operation`] and calls [`run`].

/// Refuses what the operator asked: returns [`ReplayError::Refused`] with the formatted
/// message (why, and what to do instead).
macro_rules! refuse {
    ($($message:tt)*) => {
        return Err($crate::ReplayError::Refused(format!($($message)*)))
    };
}

pub mod console;
mod schemas;
mod tables;

use aws_support::AwsSettings;
use commit_log::projection::Projection;
use event_store::{PgEventStore, StoreConfig};

use crate::settings::Settings;
use crate::{
    rebuild, rebuild_aggregate, rebuild_from_stream, AggregateRef, Comparison, ProgressStore,
    RebuildOptions, RebuildProgress, ReplayError, StreamSource, StreamStart, Until, ViewKind,
};

/// One `replay` subcommand, its arguments parsed.
#[derive(Debug, Clone)]
pub enum Operation {
    /// `replay rebuild`: build a view into a new target, optionally swapping it in.
    Rebuild(RebuildRequest),
    /// `replay handover --finish|--abort`: end a swap's handover left unfinished.
    Handover {
        /// Roll the swap back (else finish it).
        abort: bool,
    },
    /// `replay list`: every view's live target and what it reflects of the store.
    List,
    /// `replay verify`: compare a live view with a scratch rebuild.
    Verify {
        /// The view.
        view: ViewKind,
        /// history/analytics: the live schema (default: the configured one).
        live: Option<String>,
        /// The scratch schema or tables' base name (default: a fresh name).
        scratch: Option<String>,
    },
}

/// What `replay rebuild` was asked.
#[derive(Debug, Clone)]
pub struct RebuildRequest {
    /// The view to rebuild.
    pub view: ViewKind,
    /// `--target`: the schema, or the tables' base name.
    pub target: Option<String>,
    /// `--until`.
    pub until: Option<Until>,
    /// `--aggregate`: one aggregate only.
    pub aggregate: Option<AggregateRef>,
    /// `--from-stream [--since]`: read the Kinesis stream (from this start) instead of the store.
    pub from_stream: Option<StreamStart>,
    /// `--swap`.
    pub swap: bool,
    /// `--in-place`: rebuild the live view where it stands.
    pub in_place: bool,
    /// `--yes`: `--in-place` confirmed without asking.
    pub confirmed: bool,
    /// `--dry-run`.
    pub dry_run: bool,
}

/// How an operation ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (verify: no difference).
    Done,
    /// Verify found differences (printed).
    Differences,
}

impl Outcome {
    /// A verify's outcome: done when the two sides are equal.
    fn of(comparison: &Comparison) -> Self {
        if comparison.is_equal() {
            Outcome::Done
        } else {
            Outcome::Differences
        }
    }
}

/// Carries out `operation` with `settings`, printing what it did.
pub async fn run(settings: &Settings, operation: Operation) -> Result<Outcome, ReplayError> {
    match operation {
        Operation::Rebuild(request) => rebuild_view(settings, request).await,
        Operation::Handover { abort } => tables::end_handover(settings, abort).await,
        Operation::List => {
            let store = open_store(settings).await?;
            tables::list_tables(settings, &store).await?;
            schemas::list_schemas(settings, &store).await?;
            Ok(Outcome::Done)
        }
        Operation::Verify {
            view,
            live,
            scratch,
        } => match view {
            ViewKind::Schema(model) => schemas::verify_schema(settings, model, live, scratch).await,
            ViewKind::ActiveOrders => {
                if live.is_some() {
                    return Err(ReplayError::Refused(
                        "--live is for history and analytics; active_orders compares the tables \
                         the view alias names"
                            .into(),
                    ));
                }
                tables::verify_tables(settings, scratch).await
            }
        },
    }
}

/// `replay rebuild`, by the kind of view and of rebuild.
async fn rebuild_view(
    settings: &Settings,
    request: RebuildRequest,
) -> Result<Outcome, ReplayError> {
    if request.in_place {
        if !request.dry_run {
            console::confirm_in_place(view_name(request.view), request.confirmed)?;
        }
        return match request.view {
            ViewKind::Schema(model) => {
                schemas::rebuild_schema_in_place(settings, model, request.dry_run).await
            }
            ViewKind::ActiveOrders => {
                tables::rebuild_tables_in_place(settings, request.dry_run).await
            }
        };
    }
    let source = match request.from_stream {
        Some(start) => {
            Some(stream_source(&settings.aws, &settings.kinesis.stream_name, start).await)
        }
        None => None,
    };
    let target = Target {
        name: request.target,
        until: request.until,
        swap: request.swap,
        dry_run: request.dry_run,
        from_stream: source,
    };
    match (request.view, request.aggregate) {
        (ViewKind::Schema(model), None) => schemas::rebuild_schema(settings, model, &target).await,
        (ViewKind::Schema(model), Some(aggregate)) => {
            schemas::rebuild_aggregate_rows(settings, model, &aggregate, &target).await
        }
        (ViewKind::ActiveOrders, None) => tables::rebuild_tables(settings, &target).await,
        (ViewKind::ActiveOrders, Some(_)) => Err(ReplayError::Refused(
            "--aggregate is for history and analytics: the active-orders view keeps per-store \
             daily counters that one order's rows cannot be taken out of exactly; rebuild the \
             view with --swap instead"
                .into(),
        )),
    }
}

/// The name the operator types to confirm `--in-place`: the projection's.
fn view_name(view: ViewKind) -> &'static str {
    match view {
        ViewKind::Schema(model) => model.name(),
        ViewKind::ActiveOrders => tables::NAME,
    }
}

/// Where a rebuild goes and how far, as `schemas` and `tables` take it.
struct Target {
    /// `--target`.
    name: Option<String>,
    /// `--until`.
    until: Option<Until>,
    /// `--swap`.
    swap: bool,
    /// `--dry-run`.
    dry_run: bool,
    /// `--from-stream`: the stream to read instead of the store.
    from_stream: Option<StreamSource>,
}

impl Target {
    /// `--target`, `--until`, `--swap` and `--dry-run`.
    fn options(&self) -> (&Option<String>, Option<Until>, bool, bool) {
        (&self.name, self.until, self.swap, self.dry_run)
    }

    /// Where the rebuild reads its commits: the stream if asked, else the store.
    fn source(&self) -> Source<'_> {
        self.from_stream
            .as_ref()
            .map_or(Source::Store, Source::Stream)
    }
}

/// Where a rebuild reads its commits.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The event store, every aggregate.
    Store,
    /// The event store, one aggregate.
    Aggregate(&'a AggregateRef),
    /// The Kinesis stream.
    Stream(&'a StreamSource),
}

/// Runs a rebuild of `projection` from `source`, with the progress line on stderr.
async fn run_rebuild(
    store: &PgEventStore,
    projection: &dyn Projection,
    progress: &dyn ProgressStore,
    options: &RebuildOptions,
    source: Source<'_>,
) -> Result<RebuildProgress, ReplayError> {
    let mut line = console::ProgressLine::new(projection.name());
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
    done
}

/// The stream `--from-stream` reads, from `start`.
async fn stream_source(aws: &AwsSettings, stream: &str, start: StreamStart) -> StreamSource {
    StreamSource {
        client: aws_sdk_kinesis::Client::new(&aws_support::sdk_config(aws).await),
        stream: stream.to_owned(),
        start,
    }
}

/// Opening the store also checks it is reachable (it runs the store's migrations, a no-op on an
/// up-to-date store).
async fn open_store(settings: &Settings) -> Result<PgEventStore, ReplayError> {
    PgEventStore::open(settings.database.pool()?, StoreConfig::default())
        .await
        .map_err(ReplayError::StoreUnreachable)
}
