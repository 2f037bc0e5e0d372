//! `flows`: run the asynchronous flows, or inspect and redrive their dead-letter queues.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flows::app::Application;
use flows::dead_letters::DeadLetters;
use flows::payments::TestCard;
use flows::settings::{LayeredSettings, Settings};
use flows::sqs::{Outgoing, SqsQueue};
use kinesis_consumer::redrive::describe_redrive;
use service_kit::{cli::SettingsFile, shutdown, telemetry};

/// orderpipe's asynchronous flows: the order saga, customer notifications and purchase orders
/// for reorders (driven by the Kinesis log), the payment processor (payments FIFO queue) and delivery-platform intake
/// (intake queue).
///
/// The saga reserves stock, accepts or rejects orders, requests payments, releases or commits
/// stock and earns loyalty points, all through the command API with the `service` role and
/// idempotency keys derived from the events, so nothing applies twice. The default payment
/// gateway is a sandbox with test cards: 4242424242424242 approves, 4000000000000002 declines,
/// 4000000000009995 declines (insufficient funds), 4000000000000119 times out,
/// 4000000000000077 approves slowly.
///
/// A log commit the saga or notifications cannot handle for good is parked with the rest of its
/// aggregate (`flows redrive` applies it once the cause is gone); one this build does not
/// understand waits for a build that does, which resumes it on its own.
///
/// Settings come from built-in defaults, then the optional --config TOML file, then
/// ORDERPIPE_<SECTION>__<KEY> environment variables (ORDERPIPE_AUTH__SERVICE_TOKEN,
/// ORDERPIPE_COMMAND_API__URL, ORDERPIPE_SQS__INTAKE_QUEUE_URL, ...); see
/// docs/architecture.md "Asynchronous flows".
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
    /// Run the workers of flows.workers (default: order_saga, notifications, purchase_orders,
    /// payments, intake)
    /// and the admin endpoint (/metrics, /health) until SIGINT or SIGTERM.
    Run,
    /// Inspect or redrive a dead-letter queue: intake, payments, notifications or
    /// purchase_orders.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Apply the parked commits of a log consumer group again, oldest first, once the cause is
    /// gone (the command API is reachable again, a bug is fixed, a build that knows a new event
    /// runs); each aggregate stops at its first commit that fails again (it and its successors
    /// stay parked).
    Redrive {
        /// The consumer group: order_saga (or saga), notifications or purchase_orders.
        #[arg(long, value_parser = ["order_saga", "saga", "notifications", "purchase_orders"])]
        group: String,
        /// One aggregate, as TYPE/ID (e.g. order/5f0c...); default: every parked aggregate.
        #[arg(long, value_name = "TYPE/ID")]
        aggregate: Option<String>,
    },
    /// Print the sandbox gateway's test cards.
    TestCards,
    /// Drop a file's contents on the intake queue as a delivery platform would (for trying the
    /// flow locally; the file is sent as it is, valid or not).
    SendIntake {
        /// A JSON intake order, e.g. docs/flows/intake-order.example.json.
        file: PathBuf,
    },
    /// Print every settings key this binary reads (its ORDERPIPE_* environment variable), one a
    /// line, with "required" (no default: a deployment must set it) or "optional".
    SettingsKeys,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead-lettered messages with why they are there (they stay in the queue).
    List {
        /// intake, payments, notifications or purchase_orders.
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        max: usize,
    },
    /// Print one dead-lettered message: its reason and its whole body.
    Show {
        /// intake, payments, notifications or purchase_orders.
        queue: String,
        /// The message id `list` printed.
        message_id: String,
    },
    /// Send dead-lettered messages back to their queue: one (--message-id), optionally with a
    /// corrected body (--body-file), or all of them.
    Redrive {
        /// intake, payments, notifications or purchase_orders.
        queue: String,
        /// Only this message; default: every message in the dead-letter queue.
        #[arg(long)]
        message_id: Option<String>,
        /// Replace the message's body with this file's contents (needs --message-id).
        #[arg(long, requires = "message_id")]
        body_file: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::TestCards = cli.command {
        for (token, card) in TestCard::ALL {
            println!("{token}  {card:?}");
        }
        return Ok(());
    }
    let print_keys = matches!(cli.command, Command::SettingsKeys);
    let Some(settings) = Settings::load_unless_printing_keys(print_keys, cli.settings.path())?
    else {
        return Ok(());
    };
    match cli.command {
        // Printed by `load_unless_printing_keys`; test cards above: neither needs settings.
        Command::SettingsKeys => {}
        Command::Run => {
            // Kept to the end of the run: dropping it flushes the spans not yet exported.
            let _telemetry = telemetry::init_telemetry("flows", &settings.log)?;
            let app = Application::build(&settings)
                .await
                .context("flows could not start")?;
            tracing::info!(admin = %app.admin_address()?, workers = ?settings.worker_names(), "flows running");
            app.run_until_stopped(shutdown::signal()).await?;
        }
        Command::Dlq { command } => dead_letters(&settings, command).await?,
        Command::Redrive { group, aggregate } => {
            let aggregate = match &aggregate {
                Some(aggregate) => Some(
                    aggregate
                        .split_once('/')
                        .context("--aggregate takes TYPE/ID, e.g. order/1234")?,
                ),
                None => None,
            };
            let outcomes = flows::app::redrive(&settings, &group, aggregate).await?;
            print!("{}", describe_redrive(&outcomes));
            if outcomes.iter().any(|(_, _, o)| o.stopped_at.is_some()) {
                anyhow::bail!("some parked commits failed again and stay parked");
            }
        }
        Command::SendIntake { file } => {
            let body = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let queue = settings.queue(flows::settings::INTAKE)?;
            let sdk = aws_support::sdk_config(&settings.aws).await;
            let message_id = SqsQueue::new(aws_support::sqs(&sdk), &queue.queue_url)
                .send(Outgoing::new(&body))
                .await
                .context("cannot send to the intake queue")?;
            println!("sent message {message_id} to {}", queue.queue_url);
        }
        Command::TestCards => {}
    }
    Ok(())
}

async fn dead_letters(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    let queue_name = match &command {
        DlqCommand::List { queue, .. }
        | DlqCommand::Show { queue, .. }
        | DlqCommand::Redrive { queue, .. } => queue.clone(),
    };
    let sdk = aws_support::sdk_config(&settings.aws).await;
    let letters = DeadLetters::new(aws_support::sqs(&sdk), settings.queue(&queue_name)?);
    match command {
        DlqCommand::List { max, .. } => {
            let listed = letters.list(max).await?;
            if listed.is_empty() {
                println!("the {queue_name} dead-letter queue is empty");
            }
            for letter in listed {
                let body: String = letter.body.chars().take(60).collect();
                println!("{}  {}\n    body: {body}", letter.message_id, letter.reason);
            }
        }
        DlqCommand::Show { message_id, .. } => {
            let letter = letters.show(&message_id).await?;
            println!("message id:   {}", letter.message_id);
            println!("reason:       {}", letter.reason);
            if let Some(source) = &letter.source_queue {
                println!("source queue: {source}");
            }
            if let Some(group) = &letter.group_id {
                println!("group:        {group}");
            }
            println!("body:\n{}", letter.body);
        }
        DlqCommand::Redrive {
            message_id,
            body_file,
            ..
        } => {
            let body = match &body_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let moved = letters
                .redrive(message_id.as_deref(), body.as_deref())
                .await?;
            println!("{moved} message(s) sent back to the {queue_name} queue");
        }
    }
    Ok(())
}
