//! The comparison run (`compare`): in one run, on one machine's PostgreSQL and emulators, each of
//! our figures beside its reference, and the ratio.
//!
//! | part | ours | reference |
//! |---|---|---|
//! | (a) | commands/s and latency of the order lifecycle through our gRPC API (the command API as a process of its own, the clients in this one), and through cqrs-es on our event store | the same commands through plain cqrs-es + postgres-es; for the gRPC path also tonic's empty-call ceiling: health checks on the same server over the same connections |
//! | (b) | events/s through our gRPC API | batched multi-row INSERTs of event-sized rows (the ceiling) |
//! | (c) | replay (history, analytics) events/s: into a fresh schema as a bulk load (1, 2, 4 writers), and through the live path | `COPY (SELECT ... FROM events ORDER BY position) TO STDOUT` |
//! | (d) | the live projections, fed the log's commits in the projectors' batches ([`live_projections`]): active-orders items written/s (the target), events/s, DynamoDB calls per event; history events/s | DynamoDB PutItem/s on the emulator; batched INSERTs on one connection |

pub mod command_path;
pub mod live_projections;
pub mod raw_rates;
pub mod rebuilds;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use event_store::{PgEventStore, StoreConfig};
use read_models::{ActiveOrdersProjection, ActiveOrdersTables};
use replay::ReadModel;
use service_kit::cli::GrpcClientTls;
use sqlx::PgPool;
use test_support::{aws_test_config, fresh_database, unique_name, TestDatabase, TestTokenKeys};
use tonic::transport::Endpoint;

use self::raw_rates::Rate;
use self::report::{CompareReport, Ratio, ReplayMemory};
use crate::api_flow::{self, ApiClients};
use crate::loadgen::cluster::{command_api_env, free_address, ClusterError, Process};
use crate::loadgen::{machine, now_rfc3339};
use crate::resources::{check_environment, checkpoint, create_error, delete_tables, ResourceError};

/// Writer connections of the bulk rebuilds measured in (c) (`replay.bulk_writers`).
const BULK_WRITERS: [usize; 3] = [1, 2, 4];

/// What the issues ask of each figure (issue 16 for the command path, issue 8 for the rest).
mod targets {
    /// gRPC commands/s at least this many times the baseline's.
    pub const GRPC_VS_BASELINE: f64 = 2.0;
    /// Commands/s of our store under cqrs-es at least this many times the baseline's.
    pub const STORE_VS_BASELINE: f64 = 3.0;
    /// gRPC commands/s at least this share of tonic's empty-call ceiling.
    pub const GRPC_VS_EMPTY_CALLS: f64 = 0.4;
    /// Events/s at least this share of the batched-insert ceiling.
    pub const EVENTS_VS_CEILING: f64 = 0.5;
    /// p99 latency over gRPC under this many milliseconds.
    pub const P99_MS: f64 = 10.0;
    /// Replay at least this share of the COPY read rate.
    pub const REPLAY_VS_COPY: f64 = 0.5;
    /// Projectors at least this share of the raw write rate.
    pub const PROJECTOR_VS_RAW: f64 = 0.8;
}

/// How the comparison runs.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Concurrent clients on every command path.
    pub clients: usize,
    /// How long each command path runs per round.
    pub seconds: u64,
    /// Rounds of (a) and (b), interleaved: baseline, ours, ours over gRPC, ceiling.
    pub rounds: usize,
    /// Connections of the batched-insert ceiling.
    pub ceiling_connections: usize,
    /// Rows per INSERT of the ceiling (the event store's most commits per group, 256).
    pub batch_rows: usize,
    /// Events the active-orders projector applies (and items the raw PutItem run writes).
    pub projector_events: i64,
    /// Where the release binaries are: `command-api` (required: the gRPC path runs it as a
    /// process of its own) and `replay` (for its memory as the history grows; skipped when
    /// absent).
    pub bin_dir: PathBuf,
    /// Where the command API's log goes.
    pub log_dir: PathBuf,
    /// TLS to the command API (none: plaintext).
    pub tls: GrpcClientTls,
}

/// Why the comparison failed.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The environment or the run's resources.
    #[error(transparent)]
    Resources(#[from] ResourceError),
    /// PostgreSQL.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The event store.
    #[error(transparent)]
    Store(#[from] event_store::StoreError),
    /// The command API.
    #[error("the command API did not start: {0}")]
    Api(String),
    /// The command API's process.
    #[error(transparent)]
    Process(#[from] ClusterError),
    /// DynamoDB.
    #[error("dynamodb: {0}")]
    Dynamo(#[from] Box<aws_sdk_dynamodb::Error>),
    /// A rebuild.
    #[error(transparent)]
    Rebuild(#[from] rebuilds::RebuildError),
}

/// Runs (a) to (d) and returns the report (the caller prints or writes it).
pub async fn run(options: &CompareOptions) -> Result<CompareReport, CompareError> {
    check_environment()?;
    let started_at = now_rfc3339();
    let clients = options.clients.max(1);
    let duration = Duration::from_secs(options.seconds.max(1));
    // Each command path writes a database of its own, so each pays for its own tables' growth
    // (index pages touched, full-page images after a checkpoint) and not for another path's.
    let baseline_db = fresh_database().await;
    let direct_db = fresh_database().await;
    let events_db = fresh_database().await;
    let views_db = fresh_database().await;
    // A connection per client on every path, so the pool is never the difference.
    let baseline_pool = pool(&baseline_db, clients)?;
    let events_pool = pool(&events_db, clients)?;
    let views_pool = pool(&views_db, 8)?;
    command_path::create_baseline_schema(&baseline_pool).await?;
    let direct_store =
        PgEventStore::open(pool(&direct_db, clients)?, StoreConfig::default()).await?;
    let store = PgEventStore::open(events_pool.clone(), StoreConfig::default()).await?;
    // The command API verifies with the JWKS of a key pair made for this run.
    let keys = TestTokenKeys::new();
    let (api, api_endpoint) = start_api(options, &events_db, &keys.jwks_url(), clients).await?;
    let api_channels = api_flow::channels(&api_endpoint, clients);
    ApiClients::new(api_channels[0].clone(), keys.issuer())
        .map_err(|e| CompareError::Api(e.to_string()))?
        .open_stores(&["bench-store".to_owned()], 1)
        .await
        .map_err(|e| CompareError::Api(e.to_string()))?;

    let mut paths = Vec::new();
    let mut ceiling_runs = Vec::new();
    for round in 1..=options.rounds.max(1) {
        // One line as each part starts, so a profiler can be pointed at one of them.
        checkpoint(&baseline_pool, "compare").await;
        eprintln!("compare: round {round}: (a) cqrs-es + postgres-es");
        paths.push(command_path::baseline(baseline_pool.clone(), clients, duration).await);
        checkpoint(&baseline_pool, "compare").await;
        eprintln!("compare: round {round}: (a) cqrs-es + our event store");
        paths.push(command_path::event_store(&direct_store, clients, duration).await);
        checkpoint(&baseline_pool, "compare").await;
        eprintln!("compare: round {round}: (a) gRPC command API");
        paths.push(command_path::grpc(&api_channels, keys.issuer(), clients, duration).await);
        eprintln!("compare: round {round}: (a) tonic's empty-call ceiling");
        paths.push(command_path::empty_calls(&api_channels, clients, duration).await);
        checkpoint(&baseline_pool, "compare").await;
        eprintln!("compare: round {round}: (b) batched-insert ceiling");
        let payload = sample_payload(&events_pool).await?;
        ceiling_runs.push(
            raw_rates::batched_inserts(
                &baseline_pool,
                options.ceiling_connections,
                options.batch_rows,
                &payload,
                duration,
            )
            .await?,
        );
    }
    api.stop().await;

    let sum = |name: &str| {
        let runs: Vec<_> = paths.iter().filter(|p| p.path.starts_with(name)).collect();
        let commands: u64 = runs.iter().map(|p| p.commands).sum();
        let seconds: f64 = runs.iter().map(|p| p.seconds).sum();
        let p99 = runs.iter().map(|p| p.latency.p99_ms).fold(0.0, f64::max);
        (
            Rate {
                units: commands,
                seconds,
            }
            .per_second(),
            p99,
        )
    };
    let (baseline_rate, baseline_p99) = sum("cqrs-es + postgres-es");
    let (direct_rate, _) = sum("cqrs-es + our event store");
    let (grpc_rate, grpc_p99) = sum("gRPC");
    let (empty_call_rate, _) = sum(command_path::EMPTY_CALLS);
    let ceiling = total(&ceiling_runs);
    let mut ratios = vec![
        Ratio {
            part: "(a)",
            what: format!("commands/s at {clients} clients, gRPC command API"),
            ours: grpc_rate,
            reference: baseline_rate,
            reference_name: "cqrs-es + postgres-es".into(),
            unit: "commands/s",
            target: Some(targets::GRPC_VS_BASELINE),
        },
        Ratio {
            part: "(a)",
            what: format!("commands/s at {clients} clients, cqrs-es on our event store (no gRPC)"),
            ours: direct_rate,
            reference: baseline_rate,
            reference_name: "cqrs-es + postgres-es".into(),
            unit: "commands/s",
            target: Some(targets::STORE_VS_BASELINE),
        },
        Ratio {
            part: "(a)",
            what: format!("calls/s at {clients} clients, gRPC command API"),
            ours: grpc_rate,
            reference: empty_call_rate,
            reference_name: "tonic's empty-call ceiling (health Check, same server)".into(),
            unit: "calls/s",
            target: Some(targets::GRPC_VS_EMPTY_CALLS),
        },
        Ratio {
            part: "(a)",
            what: format!("p99 latency at {clients} clients, gRPC command API"),
            ours: grpc_p99,
            reference: baseline_p99,
            reference_name: "cqrs-es + postgres-es".into(),
            unit: "ms",
            target: Some(targets::P99_MS),
        },
        Ratio {
            part: "(b)",
            what: "events/s, gRPC command API (one event per command)".into(),
            ours: grpc_rate,
            reference: ceiling,
            reference_name: format!(
                "{}-row INSERTs on {} connections",
                options.batch_rows, options.ceiling_connections
            ),
            unit: "events/s",
            target: Some(targets::EVENTS_VS_CEILING),
        },
    ];

    checkpoint(&baseline_pool, "compare").await;
    eprintln!("compare: (c) replay against COPY");
    for model in [ReadModel::History, ReadModel::Analytics] {
        let copy = raw_rates::copy_out_events(&events_pool).await?;
        for writers in BULK_WRITERS {
            let bulk = rebuilds::bulk_rate(&store, &views_pool, model, writers).await?;
            ratios.push(Ratio {
                part: "(c)",
                what: format!(
                    "replay {} into a fresh schema, bulk load, {writers} writer(s) ({} events)",
                    model.name(),
                    bulk.units
                ),
                ours: bulk.per_second(),
                reference: copy.per_second(),
                reference_name: "COPY of the events table".into(),
                unit: "events/s",
                target: Some(targets::REPLAY_VS_COPY),
            });
        }
        let replayed = rebuilds::replay_rate(&store, &views_pool, model).await?;
        ratios.push(Ratio {
            part: "(c)",
            what: format!(
                "replay {} through the live path ({} events)",
                model.name(),
                replayed.units
            ),
            ours: replayed.per_second(),
            reference: copy.per_second(),
            reference_name: "COPY of the events table".into(),
            unit: "events/s",
            target: None,
        });
    }
    let last = store.last_position().await?;
    let mut replay_memory = Vec::new();
    if let Some(bin_dir) = Some(&options.bin_dir).filter(|dir| dir.join("replay").is_file()) {
        for through in [last / 4, last] {
            let peak_mib =
                rebuilds::replay_process_peak_mib(bin_dir, &events_db.url, &views_db.url, through)
                    .await?;
            replay_memory.push(ReplayMemory {
                events: through,
                peak_mib,
            });
        }
    }

    eprintln!("compare: (d) projectors against raw writes");
    let sdk = aws_test_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let through = options.projector_events.min(last);
    let raw_table = unique_name("bench-raw-puts");
    // The small-item reference of earlier runs: seven short attributes, and no indexes (the
    // stores table's shape); the like-for-like one follows the projection's run.
    ActiveOrdersProjection::STORES_SHAPE
        .create(&dynamodb, &raw_table)
        .await
        .map_err(|e| create_error("the raw-puts table", e))?;
    let puts = raw_rates::dynamodb_puts(&dynamodb, &raw_table, through as u64, 16)
        .await
        .map_err(Box::new)?;
    let tables = ActiveOrdersTables {
        orders: unique_name("bench-active-orders"),
        stores: unique_name("bench-store-metrics"),
    };
    ActiveOrdersProjection::create_tables(&dynamodb, &tables)
        .await
        .map_err(|e| rebuilds::RebuildError::Setup(e.to_string()))?;
    let batch_commits = live_projections::projector_batch_commits()?;
    let commits = live_projections::read_commits(&store, &views_pool, through).await?;
    let (projected, calls) = live_projections::active_orders_rate(
        dynamodb.clone(),
        tables.clone(),
        &commits,
        batch_commits,
    )
    .await?;
    // The projector's items written per second against the raw writers' (each PutItem one
    // item): what the target counts. Its events/s and calls per event beside it.
    let items_written = Rate {
        units: calls.writes,
        seconds: projected.seconds,
    };
    ratios.push(Ratio {
        part: "(d)",
        what: format!(
            "active-orders projector, items written ({} writes for {} events, batches of {batch_commits} commits)",
            calls.writes, projected.units
        ),
        ours: items_written.per_second(),
        reference: puts.per_second(),
        reference_name: "PutItem, 16 writers".into(),
        unit: "items/s",
        target: Some(targets::PROJECTOR_VS_RAW),
    });
    // The like-for-like reference: the view's own items (indexes, sizes) put into tables of its
    // shapes. The row above keeps the small-item reference earlier runs used.
    let view_puts = live_projections::view_items_put_rate(&dynamodb, &tables, 16).await?;
    ratios.push(Ratio {
        part: "(d)",
        what: format!(
            "active-orders projector, items written, against the view's own {} items",
            view_puts.units
        ),
        ours: items_written.per_second(),
        reference: view_puts.per_second(),
        reference_name: "PutItem of the same items into tables of the same shapes, 16 writers"
            .into(),
        unit: "items/s",
        target: Some(targets::PROJECTOR_VS_RAW),
    });
    ratios.push(Ratio {
        part: "(d)",
        what: format!("active-orders projector ({} events)", projected.units),
        ours: projected.per_second(),
        reference: puts.per_second(),
        reference_name: "PutItem, 16 writers".into(),
        unit: "events/s",
        target: None,
    });
    let events = projected.units.max(1) as f64;
    ratios.push(Ratio {
        part: "(d)",
        what: format!(
            "active-orders projector, DynamoDB calls per event ({} GetItem + {} UpdateItem or PutItem; {:.0} write units)",
            calls.reads, calls.writes, calls.write_units
        ),
        ours: (calls.reads + calls.writes) as f64 / events,
        reference: 1.0,
        reference_name: "PutItem: one call per item".into(),
        unit: "calls/event",
        target: None,
    });
    // The live history projection on the whole log, then the raw reference on the same
    // database, one connection, straight after.
    let all_commits = live_projections::read_commits(&store, &views_pool, last).await?;
    let history = live_projections::history_rate(&views_pool, &all_commits, batch_commits).await?;
    let payload = sample_payload(&events_pool).await?;
    let one_connection =
        raw_rates::batched_inserts(&views_pool, 1, options.batch_rows, &payload, duration).await?;
    ratios.push(Ratio {
        part: "(d)",
        what: format!(
            "history projector, live batches of {batch_commits} commits ({} events)",
            history.units
        ),
        ours: history.per_second(),
        reference: one_connection.per_second(),
        reference_name: format!("{}-row INSERTs, 1 connection", options.batch_rows),
        unit: "events/s",
        target: Some(targets::PROJECTOR_VS_RAW),
    });

    delete_tables(&dynamodb, &[&raw_table, &tables.orders, &tables.stores]).await;
    Ok(CompareReport {
        started_at,
        machine: machine(),
        ratios,
        paths,
        replay_memory,
    })
}

fn total(runs: &[Rate]) -> f64 {
    Rate {
        units: runs.iter().map(|r| r.units).sum(),
        seconds: runs.iter().map(|r| r.seconds).sum(),
    }
    .per_second()
}

fn pool(database: &TestDatabase, connections: usize) -> Result<PgPool, CompareError> {
    let mut settings = database.settings(None);
    settings.max_connections = u32::try_from(connections).unwrap_or(u32::MAX);
    settings.acquire_timeout_ms = 30_000;
    settings
        .pool()
        .map_err(|e| CompareError::Api(format!("database settings: {e}")))
}

/// A real OrderPlaced payload from the store, so the raw rows are the size of real events.
async fn sample_payload(events: &PgPool) -> Result<String, sqlx::Error> {
    let payload: Option<String> = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE event_type = 'OrderPlaced' LIMIT 1",
    )
    .fetch_optional(events)
    .await?;
    Ok(payload.unwrap_or_else(|| "{}".to_owned()))
}

/// The command API as a process of its own (the release binary in `options.bin_dir`) on free
/// ports, with a pool of `clients` connections, so the clients in this process and the server
/// do not share one: the figures are the server's.
async fn start_api(
    options: &CompareOptions,
    events: &TestDatabase,
    jwks_url: &str,
    clients: usize,
) -> Result<(Process, Endpoint), CompareError> {
    let grpc = free_address().map_err(ClusterError::from)?;
    let admin = free_address().map_err(ClusterError::from)?;
    std::fs::create_dir_all(&options.log_dir).map_err(ClusterError::from)?;
    let process = Process::start(
        &options.bin_dir,
        "command-api",
        "serve",
        command_api_env(&events.url, grpc, admin, jwks_url, clients),
        &options.log_dir.join("command-api.log"),
        grpc,
    )
    .await?;
    let endpoint = options
        .tls
        .endpoint("compare", &grpc.to_string())
        .map_err(|e| CompareError::Api(e.to_string()))?;
    Ok((process, endpoint))
}
