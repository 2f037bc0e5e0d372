//! The morning-rush load generator: the real pipeline as separate processes on fresh resources,
//! driven over gRPC by a ramp-up / sustain / ramp-down of concurrent clients, measured end to end.
//!
//! | module | job |
//! |---|---|
//! | [`profile`] | the rush's shape: clients over time, hot stores, the order mix |
//! | [`cluster`] | command-api, relay and projectors as child processes; their memory and metrics |
//! | [`relay_rates`] | the relay's commits and records per second and commits per record |
//! | [`recorder`] | every call's latency and outcome |
//! | [`freshness`] | acknowledgement -> visible in the DynamoDB active-orders view and in analytics |
//! | [`freshness_split`] | that view's freshness split into relay, log wait, batch and write |
//! | [`backlog`] | events the history projector has not applied yet |
//! | [`bill`] | the AWS billable units and dollars per order |
//! | [`report`] | the results as JSON and Markdown |
//! | [`watchers`] | `--watchers`: a WatchOrder stream on every order while it is open |

pub mod backlog;
pub mod bill;
pub mod cluster;
pub mod freshness;
pub mod freshness_split;
pub mod profile;
pub mod recorder;
pub mod relay_rates;
pub mod report;
pub mod watchers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_kit::cli::GrpcClientTls;
use service_kit::grpc_tls::GrpcTlsError;

use self::bill::{Bill, BillableUnits};
use self::cluster::{scrape_max, scrape_quantile, scrape_sum, scrape_sum_of, Cluster};
use self::freshness::{FreshnessProbe, FreshnessSampler, ProbedView};
use self::freshness_split::FreshnessSplit;
use self::profile::{OrderMix, OrderPacer, Phase, RushProfile, StorePicker};
use self::recorder::Recorder;
use self::relay_rates::RelayWatch;
use self::report::{AnalyticsLoads, LoadReport, PhaseFigures, ProcessMemory, Tick};
use self::watchers::{WatcherFigures, Watchers};
use crate::api_flow::{self, ApiClients, TokenError, CLIENTS_PER_CONNECTION};
use crate::memory::memory_of;
use crate::resources::{checkpoint, PipelineResources, ResourceError};
use read_models::{InventoryMarker, ViewItem};

/// Connections the watchers' streams share (each takes a share of the run's open orders).
const WATCHER_CONNECTIONS: usize = 16;

/// Stock each store starts with, per SKU: more than any run orders.
const OPENING_STOCK: u32 = 10_000_000;

/// How a load run goes.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the `command-api`, `relay` and `projectors` binaries are.
    pub bin_dir: PathBuf,
    /// Where the report and the processes' logs go.
    pub out_dir: PathBuf,
    /// The rush.
    pub profile: RushProfile,
    /// How orders end.
    pub mix: OrderMix,
    /// Where orders go.
    pub stores: StorePicker,
    /// Shards of the run's Kinesis stream.
    pub shards: i32,
    /// Projectors processes (at least one); several share the shards' leases.
    pub projectors: usize,
    /// Every n-th order is watched for freshness.
    pub freshness_every: u64,
    /// A WatchOrder stream on every order while it is open ([`watchers`]).
    pub watchers: bool,
    /// How long to wait after the profile for the views to catch up.
    pub drain_timeout: Duration,
    /// The relay's `relay.max_linger_ms` (`None`: its default).
    pub relay_linger_ms: Option<u64>,
    /// The projectors' `dynamodb.inventory_marker`.
    pub inventory_marker: InventoryMarker,
    /// TLS to the command API (none: plaintext).
    pub tls: GrpcClientTls,
}

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The run's resources could not be made.
    #[error(transparent)]
    Resources(#[from] ResourceError),
    /// The pipeline did not start.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// The gRPC client could not be set up.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The stores could not be opened.
    #[error("cannot put the menu and stock in place: {0}")]
    Setup(#[from] tonic::Status),
    /// The report could not be written.
    #[error("cannot write the report: {0}")]
    Write(#[from] std::io::Error),
    /// The TLS options do not make a client.
    #[error(transparent)]
    Tls(#[from] GrpcTlsError),
}

/// What the progress ticker keeps between ticks.
#[derive(Default)]
struct Watch {
    max_lag: Option<f64>,
    /// The projectors' GetRecords count on their busiest shard at the last tick, and when.
    last_get_records: Option<(f64, Duration)>,
    max_get_records_rate: Option<f64>,
    relay: RelayWatch,
    max_backlog: Option<f64>,
    max_history_behind: Option<i64>,
    timeline: Vec<Tick>,
}

/// Runs the rush and writes `report.json` and `report.md` into `options.out_dir`.
pub async fn run(options: LoadOptions) -> Result<LoadReport, LoadError> {
    let started_at = now_rfc3339();
    eprintln!("loadgen: creating a fresh database, stream, tables and queue");
    let resources = PipelineResources::create(options.shards).await?;
    // What earlier work left dirty (a comparison run writes gigabytes) is flushed first, so the
    // rush does not share the disk with that checkpoint.
    checkpoint(&resources.events_db.pool, "loadgen").await;
    eprintln!("loadgen: starting command-api, relay and projectors");
    let cluster = Cluster::start(
        &options.bin_dir,
        &options.out_dir.join("logs"),
        &resources,
        options.projectors,
        options.relay_linger_ms,
        options.inventory_marker,
    )
    .await?;
    let result = drive(&options, &resources, &cluster).await;
    let relay_p99 = scrape_quantile(
        cluster.relay_admin,
        "orderpipe_relay_commit_to_log_seconds",
        0.99,
    )
    .await;
    let analytics_loads = AnalyticsLoads::scrape(cluster.projectors_admin).await;
    let freshness_split =
        FreshnessSplit::scrape(cluster.relay_admin, &cluster.projectors_admins).await;
    cluster
        .save_metrics(&options.out_dir.join("metrics"))
        .await?;
    let memory = cluster
        .memory()
        .into_iter()
        .map(|(process, usage)| ProcessMemory {
            process: process.to_owned(),
            peak_mib: usage.map_or(0.0, |u| u.peak_mib()),
        })
        .chain(memory_of(std::process::id()).map(|u| ProcessMemory {
            process: "loadgen".to_owned(),
            peak_mib: u.peak_mib(),
        }))
        .collect();
    // After the memory figures: reading the stream back is the load generator's own work.
    let units = billable_units(&resources, &cluster).await;
    cluster.stop().await;
    resources.remove().await;
    let (recorded, freshness, analytics_freshness, watch, watcher_figures) = result?;

    let profile = options.profile;
    let phases = [
        (Phase::RampUp, profile.ramp_up),
        (Phase::Sustain, profile.sustain),
        (Phase::RampDown, profile.ramp_down),
    ]
    .into_iter()
    .filter(|(_, length)| !length.is_zero())
    .map(|(phase, length)| {
        let calls = recorded.by_phase.get(&phase).cloned().unwrap_or_default();
        PhaseFigures {
            phase: phase.name(),
            seconds: length.as_secs_f64(),
            commands: calls.latencies.count(),
            commands_per_second: calls.latencies.count() as f64 / length.as_secs_f64(),
            errors: calls.errors,
            latency: calls.latencies.summary(),
        }
    })
    .collect();
    let report = LoadReport {
        started_at,
        machine: machine(),
        profile,
        mix: options.mix,
        stores: format!(
            "{} ({} hot, taking {:.0}% of orders)",
            options.stores.stores.len(),
            options.stores.hot,
            options.stores.hot_share * 100.0
        ),
        phases,
        by_rpc: recorded
            .by_rpc
            .iter()
            .map(|(rpc, l)| ((*rpc).to_owned(), l.summary()))
            .collect(),
        errors: recorded.errors,
        freshness: freshness.latencies.summary(),
        freshness_missing: freshness.missing + freshness.pending as u64,
        freshness_split,
        analytics_freshness: analytics_freshness.latencies.summary(),
        analytics_freshness_missing: analytics_freshness.missing
            + analytics_freshness.pending as u64,
        max_projector_lag_ms: watch.max_lag,
        max_get_records_per_shard_per_second: watch.max_get_records_rate,
        max_outbox_backlog: watch.max_backlog,
        relay_commit_to_log_p99_ms: relay_p99.map(|seconds| seconds * 1000.0),
        relay_packing: watch.relay.figures(options.shards),
        max_history_events_behind: watch.max_history_behind,
        analytics_loads,
        memory,
        timeline: watch.timeline,
        bill: units.map(|units| Bill::new(units, recorded.orders, recorded.completed_orders)),
        watchers: watcher_figures,
    };
    std::fs::create_dir_all(&options.out_dir)?;
    std::fs::write(
        options.out_dir.join("report.json"),
        serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(options.out_dir.join("report.md"), report.to_markdown())?;
    Ok(report)
}

/// What a run recorded: the calls, freshness in the DynamoDB view and in analytics, the watch,
/// and the watchers' figures (`--watchers`).
type Driven = (
    recorder::Recorded,
    freshness::Freshness,
    freshness::Freshness,
    Watch,
    Option<WatcherFigures>,
);

/// Opens the stores, runs the clients through the profile with a progress line a second, then
/// waits for the views to catch up.
async fn drive(
    options: &LoadOptions,
    resources: &PipelineResources,
    cluster: &Cluster,
) -> Result<Driven, LoadError> {
    let endpoint = options
        .tls
        .endpoint("loadgen", &cluster.grpc_address.to_string())?;
    let channels = api_flow::channels(&endpoint, options.profile.peak_clients);
    let mut setup = ApiClients::new(channels[0].clone(), cluster.keys.issuer())?;
    setup
        .open_stores(&options.stores.stores, OPENING_STOCK)
        .await?;

    let recorder = Arc::new(Recorder::default());
    let (probe, sampler) = FreshnessProbe::start(
        ProbedView::ActiveOrders {
            client: aws_sdk_dynamodb::Client::new(&resources.sdk),
            table: resources.active_orders.orders.clone(),
        },
        options.freshness_every,
    );
    let (analytics_probe, analytics_sampler) = FreshnessProbe::start(
        ProbedView::Analytics {
            pool: resources.views_db.pool.clone(),
        },
        options.freshness_every,
    );
    let sampler = sampler.and(analytics_sampler);
    let watchers = match options.watchers {
        true => Some(Watchers::new(
            api_flow::channels(&endpoint, WATCHER_CONNECTIONS * CLIENTS_PER_CONNECTION)
                .into_iter()
                .map(|channel| {
                    ApiClients::new(channel, cluster.keys.issuer()).map(|api| api.orders())
                })
                .collect::<Result<_, _>>()?,
        )),
        false => None,
    };
    let started = Instant::now();
    let pacer = OrderPacer::new(options.profile, started).map(Arc::new);
    let mut clients = Vec::new();
    for index in 0..options.profile.peak_clients {
        let api = ApiClients::new(
            channels[index % channels.len()].clone(),
            cluster.keys.issuer(),
        )?;
        clients.push(tokio::spawn(client(
            index,
            api,
            options.clone(),
            recorder.clone(),
            OnPlaced {
                sampler: sampler.clone(),
                watchers: watchers.clone(),
            },
            pacer.clone(),
            started,
        )));
    }
    drop(sampler);

    let mut watch = Watch::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed();
        let phase = options.profile.phase_at(elapsed);
        recorder.enter(phase);
        tick(
            options, resources, cluster, &recorder, &probe, &mut watch, elapsed,
        )
        .await;
        if phase == Phase::Done {
            break;
        }
    }
    for handle in clients {
        let _ = handle.await;
    }

    eprintln!("loadgen: profile done; waiting for the outbox and the view to catch up");
    let deadline = Instant::now() + options.drain_timeout;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let backlog = scrape_max(cluster.relay_admin, "orderpipe_outbox_backlog").await;
        tick(
            options,
            resources,
            cluster,
            &recorder,
            &probe,
            &mut watch,
            started.elapsed(),
        )
        .await;
        if probe.snapshot().pending == 0 && backlog.is_some_and(|b| b == 0.0) {
            break;
        }
    }
    // The analytics view loads in micro-batches: give it its flush interval and a poll more.
    let patience = Instant::now() + Duration::from_secs(30);
    while analytics_probe.snapshot().pending > 0 && Instant::now() < patience {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let freshness = probe.stop();
    let analytics_freshness = analytics_probe.stop();
    let watcher_figures = watchers.map(|watchers| watchers.stop());
    Ok((
        recorder.take(),
        freshness,
        analytics_freshness,
        watch,
        watcher_figures,
    ))
}

/// What follows an order from the moment PlaceOrder is acknowledged.
#[derive(Clone)]
struct OnPlaced {
    /// The freshness probe's sampler.
    sampler: FreshnessSampler,
    /// `--watchers`: a WatchOrder stream on it.
    watchers: Option<Watchers>,
}

impl OnPlaced {
    fn placed(&self, order_id: &str, at: Instant) {
        self.sampler.offer(order_id, at);
        if let Some(watchers) = &self.watchers {
            watchers.watch(order_id);
        }
    }
}

/// One client: runs orders back to back (or at the pacer's slots) while the profile counts it as
/// active.
async fn client(
    index: usize,
    mut api: ApiClients,
    options: LoadOptions,
    recorder: Arc<Recorder>,
    on_placed: OnPlaced,
    pacer: Option<Arc<OrderPacer>>,
    started: Instant,
) {
    let mut rng = fastrand::Rng::new();
    loop {
        let elapsed = started.elapsed();
        if options.profile.phase_at(elapsed) == Phase::Done {
            return;
        }
        if index >= options.profile.clients_at(elapsed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if let Some(pacer) = &pacer {
            pacer.wait_turn().await;
        }
        let store = options.stores.pick(|| rng.f64()).to_owned();
        let fate = options.mix.pick(rng.f64());
        let customer = format!("customer-{}", rng.u32(0..100_000));
        // A failed call ends the order; the recorder counted it, the next order starts.
        let ran = api
            .run_order(fate, &store, &customer, recorder.as_ref(), |id, at| {
                on_placed.placed(id, at)
            })
            .await;
        if ran.is_ok() {
            recorder.finished(fate);
        }
    }
}

/// The billable units the run caused (see [`bill`]), once the views have caught up; `None`
/// when the projectors' counters cannot be read.
async fn billable_units(resources: &PipelineResources, cluster: &Cluster) -> Option<BillableUnits> {
    let projectors = cluster.projectors_admin;
    let milli_units = |kind: &'static str| {
        scrape_sum(
            projectors,
            read_models::DYNAMODB_CAPACITY_UNITS,
            ("kind", kind),
        )
    };
    let calls =
        |kind: &'static str| scrape_sum(projectors, read_models::DYNAMODB_CALLS, ("kind", kind));
    let put_payload_units = match resources.stream.put_payload_units().await {
        Ok(units) => units as f64,
        Err(error) => {
            eprintln!("loadgen: cannot read the stream back for its PUT payload units: {error}");
            return None;
        }
    };
    Some(BillableUnits {
        kinesis_put_payload_units: put_payload_units,
        kinesis_get_records_calls: scrape_sum(
            projectors,
            "orderpipe_projector_get_records_total",
            ("", ""),
        )
        .await?,
        dynamodb_write_units: milli_units("write").await? / 1000.0,
        dynamodb_write_units_by_item: write_units_by_item(projectors).await,
        dynamodb_read_units: milli_units("read").await.unwrap_or(0.0) / 1000.0,
        dynamodb_write_calls: calls("write").await?,
        dynamodb_read_calls: calls("read").await.unwrap_or(0.0),
        sqs_requests: scrape_sum(projectors, "orderpipe_projector_dlq_total", ("", ""))
            .await
            .unwrap_or(0.0),
    })
}

/// The active-orders view's write units by the kind of item written.
async fn write_units_by_item(projectors: SocketAddr) -> [(&'static str, f64); 4] {
    let mut by_item = [
        ViewItem::Order,
        ViewItem::StoreDay,
        ViewItem::Stock,
        ViewItem::InventoryMarker,
    ]
    .map(|item| (item.label(), 0.0));
    for (item, units) in &mut by_item {
        let labels = [("kind", "write"), ("item", *item)];
        let milli = scrape_sum_of(projectors, read_models::DYNAMODB_CAPACITY_UNITS, &labels).await;
        *units = milli.unwrap_or(0.0) / 1000.0;
    }
    by_item
}

/// One progress line, and what it saw for the report.
async fn tick(
    options: &LoadOptions,
    resources: &PipelineResources,
    cluster: &Cluster,
    recorder: &Recorder,
    probe: &FreshnessProbe,
    watch: &mut Watch,
    elapsed: Duration,
) {
    let window = recorder.take_window();
    let backlog = scrape_max(cluster.relay_admin, "orderpipe_outbox_backlog").await;
    let lag = scrape_max(
        cluster.projectors_admin,
        "orderpipe_projector_millis_behind_latest",
    )
    .await;
    let max = |current: Option<f64>, seen: Option<f64>| match (current, seen) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    // A counter per shard: its rise since the last tick is the calls per second there.
    let get_records = scrape_max(
        cluster.projectors_admin,
        "orderpipe_projector_get_records_total",
    )
    .await;
    let get_records_rate = match (get_records, watch.last_get_records) {
        (Some(now), Some((before, at))) if elapsed > at && now >= before => {
            Some((now - before) / (elapsed - at).as_secs_f64())
        }
        _ => None,
    };
    if let Some(calls) = get_records {
        watch.last_get_records = Some((calls, elapsed));
    }
    watch.max_get_records_rate = max(watch.max_get_records_rate, get_records_rate);
    let relay_rates = watch.relay.sample(cluster.relay_admin, elapsed).await;
    let history_behind =
        backlog::history_events_behind(&resources.events_db.pool, &resources.views_db.pool).await;
    watch.max_history_behind = watch.max_history_behind.max(history_behind);
    watch.max_lag = max(watch.max_lag, lag);
    watch.max_backlog = max(watch.max_backlog, backlog);
    let clients = options.profile.clients_at(elapsed);
    let freshness = probe.snapshot();
    let api_rss = cluster
        .memory()
        .first()
        .and_then(|(_, usage)| *usage)
        .map_or(0.0, |u| u.resident_kib as f64 / 1024.0);
    eprintln!(
        "[{:>4}s {:<9}] clients {:>3} | {:>5} cmd/s p99 {:>6.1} ms | errors {:>4} | outbox {:>5} | history behind {:>6} events | fresh p99 {:>6.0} ms ({} waiting) | api {:>4.0} MiB",
        elapsed.as_secs(),
        options.profile.phase_at(elapsed).name(),
        clients,
        window.count(),
        window.quantile_ms(0.99),
        recorder.error_count(),
        backlog.map_or("-".to_owned(), |b| format!("{b:.0}")),
        history_behind.map_or("-".to_owned(), |b| b.to_string()),
        freshness.latencies.quantile_ms(0.99),
        freshness.pending,
        api_rss,
    );
    watch.timeline.push(Tick {
        second: elapsed.as_secs(),
        clients,
        commands: window.count(),
        p99_ms: window.quantile_ms(0.99),
        outbox_backlog: backlog,
        projector_lag_ms: lag,
        history_events_behind: history_behind,
        get_records_per_shard_per_second: get_records_rate,
        relay_commits_per_second: relay_rates.map(|rates| rates.commits),
        relay_records_per_second: relay_rates.map(|rates| rates.records),
    });
}

/// `nproc` and total memory, for the report.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores, {memory_gib:.0} GiB")
}

/// The current time in RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
