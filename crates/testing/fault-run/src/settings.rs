//! What a fault run does: how long, how many faults, which ones, and where the binaries are.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use service_kit::cli::GrpcClientTls;

/// Drives orderpipe's real processes (two command APIs, relay, two projector workers, the
/// flows) under load and injects faults at random moments: kill -9 and restart of each process,
/// a pause (SIGSTOP/SIGCONT) longer than every lease and timeout, a silent network cut between a
/// command API and PostgreSQL, a command-API outage longer than the flows' retry windows, a
/// PostgreSQL restart, an emulator stopped and restarted. Clients place orders with sandbox
/// test cards and retry with their idempotency keys, as a real client would. At the end it
/// checks that every acknowledged command's events are in the store exactly once and nothing a
/// client was told failed, every event reached Kinesis, every projection equals a fresh replay,
/// nothing was charged, reserved or credited twice, and that the flows stranded nothing.
///
/// It expects the environment of a stack of its own (DATABASE_URL, AWS_ENDPOINT_URL_*, the
/// resource names): run it through `scripts/fault-run.sh`, which starts that stack, runs this
/// binary and tears the stack down.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct RunSettings {
    /// How long the load and the faults last, in seconds.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// How many faults to inject over that time (spread evenly, at random moments within each
    /// slot; every enabled kind is used before any is used again).
    #[arg(long, default_value_t = 24)]
    pub faults: u32,
    /// The random seed (printed; give it again to repeat a run's fault schedule).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent clients, each taking orders through their lifecycle.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Where the command-api, relay, projectors, flows and replay binaries are.
    #[arg(long, default_value = "target/debug")]
    pub bin_dir: PathBuf,
    /// The command that restarts one server of the run's stack, given `postgres`, `kinesis` or
    /// `dynamodb` as its last argument (scripts/fault-run.sh passes `scripts/stack.sh restart`).
    #[arg(long, num_args = 1..)]
    pub restart_command: Vec<String>,
    /// Leave out the PostgreSQL restart (for a stack whose PostgreSQL others use).
    #[arg(long)]
    pub no_postgres_restart: bool,
    /// Directory for the processes' logs and the report (report.md, report.json).
    #[arg(long, default_value = "target/fault-run")]
    pub out_dir: PathBuf,
    /// How long the payment processor has to capture or decline a charge before the order is
    /// rejected (the flows' `payments.charge_deadline_ms`); the end checks fail on an order whose
    /// charge is unresolved for longer (plus the time the processor needs to act on it).
    #[arg(long, default_value_t = 30)]
    pub payment_deadline_seconds: u64,
    /// How long the pipeline may take to settle after the last fault before the checks fail.
    #[arg(long, default_value_t = 300)]
    pub settle_seconds: u64,
    /// TLS to the command APIs it starts (the load, the checks and the flows call them), which
    /// serve TLS as their environment says (`ORDERPIPE_GRPC__TLS__*`; the flows take their CA
    /// and certificate from `ORDERPIPE_COMMAND_API__TLS__*`, as `scripts/up.sh --tls` exports).
    #[command(flatten)]
    pub tls: GrpcClientTls,
}

impl RunSettings {
    /// The load's duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    /// The flows' payment deadline.
    pub fn payment_deadline(&self) -> Duration {
        Duration::from_secs(self.payment_deadline_seconds)
    }

    /// The settling deadline.
    pub fn settle_timeout(&self) -> Duration {
        Duration::from_secs(self.settle_seconds)
    }
}
