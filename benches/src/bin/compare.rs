//! `compare`: our figures beside their raw references, measured in one run (see `--help`).

use std::path::PathBuf;

use anyhow::Context;
use benches::compare::{self, CompareOptions};
use clap::Parser;
use service_kit::cli::GrpcClientTls;

/// Runs, in one run, each of orderpipe's performance comparisons and prints the ratios as a
/// Markdown table:
///
/// (a) the order lifecycle (place, accept, pay, prepare, ready, complete) through our gRPC command
/// API (the release `command-api` as a process of its own, the clients in this one) and through
/// cqrs-es on our event store, against the same commands through plain cqrs-es + postgres-es,
/// and the gRPC path against tonic's empty-call ceiling on the same server; (b) our events/s against batched multi-row INSERTs of event-sized rows; (c) replay
/// of history and analytics against a raw COPY of the events table; (d) the active-orders
/// projector against raw DynamoDB PutItem calls, and the history projector against batched
/// INSERTs on one connection.
///
/// Every database, table and stream is created fresh on the running local stack (source its env
/// file first: `source .stack/env`); nothing of the stack's own pipeline is touched.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Concurrent clients on every command path.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds each command path (and the insert ceiling) runs per round.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds of (a) and (b); the paths take turns within each round.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Connections of the batched-insert ceiling.
    #[arg(long, default_value_t = 4)]
    ceiling_connections: usize,
    /// Rows per INSERT of the ceiling.
    #[arg(long, default_value_t = 256)]
    batch_rows: usize,
    /// Events the active-orders projector applies (and items the raw PutItem run writes).
    #[arg(long, default_value_t = 5_000)]
    projector_events: i64,
    /// Directory of the release binaries: `command-api` (run as a process of its own for the
    /// gRPC path) and `replay` (its memory at two history sizes; skipped when absent). Default:
    /// this binary's directory.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write report.md and report.json here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// TLS to the command API it starts, which serves TLS as its environment says
    /// (`ORDERPIPE_GRPC__TLS__*`, as `scripts/up.sh --tls` exports them).
    #[command(flatten)]
    tls: GrpcClientTls,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = cli
        .bin_dir
        .or_else(|| std::env::current_exe().ok()?.parent().map(PathBuf::from))
        .context("cannot tell this binary's directory; pass --bin-dir")?;
    if !bin_dir.join("replay").is_file() {
        eprintln!("compare: no replay binary found; skipping its memory measurement");
    }
    let log_dir = cli
        .out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("orderpipe-compare"));
    let report = compare::run(&CompareOptions {
        clients: cli.clients,
        seconds: cli.seconds,
        rounds: cli.rounds,
        ceiling_connections: cli.ceiling_connections,
        batch_rows: cli.batch_rows,
        projector_events: cli.projector_events,
        bin_dir,
        log_dir,
        tls: cli.tls.clone(),
    })
    .await?;
    let markdown = report.to_markdown();
    println!("{markdown}");
    if let Some(out) = cli.out {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        std::fs::write(out.join("report.md"), &markdown)?;
        std::fs::write(
            out.join("report.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
    }
    Ok(())
}
