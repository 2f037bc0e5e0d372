//! `projectors`: run the projector worker, redrive parked commits, list leases.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use kinesis_consumer::redrive::describe_redrive;
use kinesis_consumer::{redrive, redrive_all, LeaseTable, ParkedStore};
use service_kit::{cli::SettingsFile, shutdown, telemetry};

use projectors::app::{build_projections, Application};
use projectors::settings::{LayeredSettings, Settings};

/// orderpipe's projector worker: consumes the Kinesis log and builds the read models.
///
/// Each projection is its own consumer group with its own leases and checkpoints in DynamoDB;
/// several `projectors run` processes share the shards between them. A commit that cannot be
/// applied for good goes to the SQS dead-letter queue and is parked with the later commits of
/// its aggregate until an operator fixes the projection and runs `redrive`; one this build does
/// not understand (an event type or version newer than it) is parked the same way and resumed
/// in order by a build that understands it, at its start or by `redrive`. A failing dependency
/// is retried until it is back; it parks nothing.
///
/// Settings come from built-in defaults, then the optional --config TOML file, then
/// ORDERPIPE_<SECTION>__<KEY> environment variables (e.g. ORDERPIPE_SQS__PROJECTOR_DLQ_URL,
/// ORDERPIPE_RUNTIME__LEASE_DURATION_MS); see docs/architecture.md "Projector runtime".
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
    /// Run the worker with the projections in runtime.projections (default: all) and the admin
    /// endpoint (/metrics, /health) until SIGINT or SIGTERM; then finish the current batches,
    /// checkpoint them and release the leases.
    Run,
    /// Apply parked commits again, oldest first, after the projection was fixed; stops at the
    /// first commit of an aggregate that fails again (it and its successors stay parked).
    Redrive {
        /// The projection whose parked commits to apply.
        #[arg(long)]
        projection: String,
        /// One aggregate, as TYPE/ID (e.g. order/5f0c...); default: every parked aggregate.
        #[arg(long, value_name = "TYPE/ID")]
        aggregate: Option<String>,
    },
    /// List the leases: projection, shard, owner, checkpoint, milliseconds behind the tip.
    Leases,
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
            let _telemetry = telemetry::init_telemetry("projectors", &settings.log)?;
            let app = Application::build(&settings)
                .await
                .context("projectors could not start")?;
            tracing::info!(admin = %app.admin_address()?, "projectors running");
            app.run_until_stopped(shutdown::signal()).await?;
        }
        Command::Redrive {
            projection,
            aggregate,
        } => {
            let sdk = aws_support::sdk_config(&settings.aws).await;
            let projection = build_projections(&settings, &sdk, &[projection])
                .await?
                .pop()
                .context("no projection built")?;
            let parked =
                ParkedStore::new(aws_support::dynamodb(&sdk), &settings.dynamodb.parked_table);
            let outcomes = match aggregate {
                Some(aggregate) => {
                    let (kind, id) = aggregate
                        .split_once('/')
                        .context("--aggregate takes TYPE/ID, e.g. order/1234")?;
                    let outcome = redrive(projection.as_ref(), &parked, kind, id).await?;
                    vec![(kind.to_owned(), id.to_owned(), outcome)]
                }
                None => redrive_all(projection.as_ref(), &parked).await?,
            };
            print!("{}", describe_redrive(&outcomes));
            if outcomes.iter().any(|(_, _, o)| o.stopped_at.is_some()) {
                bail!("some parked commits failed again and stay parked");
            }
        }
        Command::Leases => {
            let sdk = aws_support::sdk_config(&settings.aws).await;
            let leases =
                LeaseTable::new(aws_support::dynamodb(&sdk), &settings.dynamodb.leases_table)
                    .list()
                    .await?;
            println!(
                "{:<16} {:<24} {:<28} {:>10} {:<58}",
                "PROJECTION", "SHARD", "OWNER", "MS_BEHIND", "CHECKPOINT"
            );
            for lease in leases {
                println!(
                    "{:<16} {:<24} {:<28} {:>10} {:<58}",
                    lease.projection,
                    lease.shard_id,
                    lease.owner.as_deref().unwrap_or("-"),
                    lease
                        .millis_behind_latest
                        .map_or_else(|| "-".to_owned(), |m| m.to_string()),
                    lease.checkpoint,
                );
            }
        }
    }
    Ok(())
}
