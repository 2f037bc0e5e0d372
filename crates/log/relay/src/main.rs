//! `relay`: publish the event store's outbox to the Kinesis log.

use anyhow::Context;
use clap::{Parser, Subcommand};
use relay::app::Application;
use relay::settings::{LayeredSettings, Settings};
use service_kit::{cli::SettingsFile, shutdown, telemetry};

/// orderpipe's outbox relay: publishes every commit of the event store to the Kinesis stream,
/// at least once and in order per aggregate. By default one plain record per commit (partition
/// key = aggregate id), which every reader reads, so the relay may be upgraded before its
/// readers. relay.max_commits_per_record above 1 packs that many commits of one shard per
/// record: raise it only once every reader runs a build that unpacks. relay.max_linger_ms then
/// holds a record that is not full up to that long for more commits (denser records, that
/// much more latency at most).
///
/// Run several for availability: they elect one active relay through a PostgreSQL advisory lock
/// (relay.lock_key); the others stand by and take over within about a second when it stops.
///
/// Settings come from built-in defaults, then the optional --config TOML file, then
/// ORDERPIPE_<SECTION>__<KEY> environment variables, e.g. ORDERPIPE_KINESIS__STREAM_NAME,
/// ORDERPIPE_DATABASE__URL, ORDERPIPE_RELAY__BATCH_SIZE (see docs/architecture.md, "The relay").
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
    /// Relay the outbox to Kinesis and serve the admin endpoint (/metrics, /health) until
    /// SIGINT or SIGTERM; then finish the PutRecords call in flight and release the lock.
    Run,
    /// Print every settings key this binary reads (its ORDERPIPE_* environment variable), one a
    /// line, with "required" (no default: a deployment must set it) or "optional".
    SettingsKeys,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let print_keys = matches!(cli.command, Command::SettingsKeys);
    let Some(settings) = Settings::load_unless_printing_keys(print_keys, cli.settings.path())?
    else {
        return Ok(());
    };
    match cli.command {
        Command::SettingsKeys => {}
        Command::Run => {
            // Kept to the end of the run: dropping it flushes the spans not yet exported.
            let _telemetry = telemetry::init_telemetry("relay", &settings.log)?;
            let app = Application::build(settings)
                .await
                .context("relay could not start")?;
            tracing::info!(admin = %app.admin_address(), "relay started");
            app.run_until_stopped(shutdown::signal()).await?;
        }
    }
    Ok(())
}
