//! `loadgen`: the morning rush through the real pipeline (see `--help`).

use std::path::PathBuf;
use std::time::Duration;

use benches::loadgen::profile::{OrderMix, RushProfile, StorePicker};
use benches::loadgen::{self, LoadOptions};
use clap::Parser;
use service_kit::cli::GrpcClientTls;

/// Drives the real pipeline with a morning rush and reports what a user would feel.
///
/// Creates a fresh database, Kinesis stream, DynamoDB tables and queue on the running local stack
/// (source its env file first: `source .stack/env`), starts command-api, relay and projectors as
/// separate processes on free ports, then runs concurrent gRPC clients through a ramp up, a
/// sustained peak and a ramp down. Each client places orders at a store (a share of them at a few
/// hot stores) and takes each to its fate: completed (9 commands, with stock and loyalty),
/// cancelled (2) or left open (3).
///
/// Prints a progress line a second, then writes report.md and report.json to --out: commands/s
/// and latency percentiles per phase and per RPC, end-to-end freshness (PlaceOrder acknowledged
/// -> the order visible in the DynamoDB active-orders view) p50/p99, the largest projector lag
/// and outbox backlog, and the peak resident memory of each process.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Clients at the peak.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Clients at the start of the ramp up and the end of the ramp down.
    #[arg(long, default_value_t = 1)]
    base_clients: usize,
    /// Seconds of ramp up.
    #[arg(long, default_value_t = 10)]
    ramp_up: u64,
    /// Seconds at the peak.
    #[arg(long, default_value_t = 30)]
    sustain: u64,
    /// Seconds of ramp down.
    #[arg(long, default_value_t = 10)]
    ramp_down: u64,
    /// Orders started per second at the peak, scaled down on the ramps (an arrival rate, as
    /// customers arrive). Unset: a closed loop, every client starts its next order as soon as the
    /// last one ends, which finds the write side's ceiling and starves the rest of the pipeline
    /// when everything shares one machine.
    #[arg(long)]
    orders_per_second: Option<f64>,
    /// How orders end, as weights COMPLETED,CANCELLED,OPEN.
    #[arg(long, default_value = "80,10,10")]
    mix: OrderMix,
    /// Stores ordered from.
    #[arg(long, default_value_t = 50)]
    stores: usize,
    /// How many of them are hot.
    #[arg(long, default_value_t = 5)]
    hot_stores: usize,
    /// The share of orders that goes to the hot stores (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    hot_share: f64,
    /// Shards of the run's Kinesis stream.
    #[arg(long, default_value_t = 2)]
    shards: i32,
    /// Projectors processes: the second and later ones take a share of the shards' leases (the
    /// leases balance between workers). The bill, the analytics loads and the GetRecords rate
    /// are read from the first one only.
    #[arg(long, default_value_t = 1)]
    projectors: usize,
    /// Watch every n-th order for freshness.
    #[arg(long, default_value_t = 10)]
    freshness_every: u64,
    /// Keep a WatchOrder stream open on every order from its placing until it ends (the
    /// customer app tracking each order), to compare command latency and view freshness with
    /// and without watchers.
    #[arg(long)]
    watchers: bool,
    /// The relay's linger (relay.max_linger_ms): how long a record that is not full waits for
    /// more commits of its shard. Unset: the relay's default. The relay packs up to 100
    /// commits per record (every reader of the run unpacks).
    #[arg(long)]
    relay_linger_ms: Option<u64>,
    /// Where the active-orders view records each store inventory's progress
    /// (dynamodb.inventory_marker): item (the marker item after every batch, the projectors'
    /// default, for deployments with older writers) or sku_items (the SKU items themselves,
    /// one write fewer per inventory and batch; every writer of the run is this build).
    #[arg(long, default_value = "sku_items")]
    inventory_marker: read_models::InventoryMarker,
    /// Seconds to wait after the rush for the outbox and the view to catch up.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
    /// Where command-api, relay and projectors are (default: this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where report.md, report.json and the processes' logs go.
    #[arg(long, default_value = "target/loadgen")]
    out: PathBuf,
    /// TLS to the command API it starts, which serves TLS as its environment says
    /// (`ORDERPIPE_GRPC__TLS__*`, as `scripts/up.sh --tls` exports them).
    #[command(flatten)]
    tls: GrpcClientTls,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(cli.projectors > 0, "--projectors must be at least 1");
    anyhow::ensure!(
        cli.orders_per_second
            .is_none_or(|rate| rate > 0.0 && rate.is_finite()),
        "--orders-per-second must be a positive number"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&cli.hot_share),
        "--hot-share must be between 0 and 1"
    );
    let bin_dir = match cli.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| {
                anyhow::anyhow!("cannot tell this binary's directory; pass --bin-dir")
            })?,
    };
    let report = loadgen::run(LoadOptions {
        bin_dir,
        out_dir: cli.out.clone(),
        profile: RushProfile {
            base_clients: cli.base_clients,
            peak_clients: cli.clients,
            ramp_up: Duration::from_secs(cli.ramp_up),
            sustain: Duration::from_secs(cli.sustain),
            ramp_down: Duration::from_secs(cli.ramp_down),
            peak_orders_per_second: cli.orders_per_second,
        },
        mix: cli.mix,
        stores: StorePicker::new("store", cli.stores, cli.hot_stores, cli.hot_share),
        shards: cli.shards,
        projectors: cli.projectors,
        freshness_every: cli.freshness_every,
        watchers: cli.watchers,
        drain_timeout: Duration::from_secs(cli.drain_timeout),
        relay_linger_ms: cli.relay_linger_ms,
        inventory_marker: cli.inventory_marker,
        tls: cli.tls.clone(),
    })
    .await?;
    println!("{}", report.to_markdown());
    eprintln!("loadgen: report written to {}", cli.out.display());
    Ok(())
}
