//! `dashboard`: serve the barista dashboard and its read API.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dashboard::app::Application;
use dashboard::settings::{LayeredSettings, Settings};
use service_kit::{cli::SettingsFile, shutdown, telemetry};

/// orderpipe's barista dashboard: a live board of a store's open orders, today's metrics and
/// low-stock warnings, read from the projected views (DynamoDB active orders, PostgreSQL
/// history); its buttons move orders on through the command API with the barista's token.
///
/// Settings come from built-in defaults, then the optional --config TOML file, then
/// ORDERPIPE_<SECTION>__<KEY> environment variables: ORDERPIPE_HTTP__PORT (8080),
/// ORDERPIPE_ADMIN__PORT (9093), ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE,
/// ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE, ORDERPIPE_HISTORY__DATABASE__URL,
/// ORDERPIPE_AUTH__JWKS_URL (required; the token issuer's public keys), ORDERPIPE_COMMAND_API__URL
/// (http://127.0.0.1:50051), ORDERPIPE_BOARD__POLL_INTERVAL_MS (400). See docs/architecture.md
/// ("The barista dashboard").
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
    /// Serve the page and the read API, and the admin endpoint (/metrics, /health), until
    /// SIGINT or SIGTERM. Prints the page's address.
    Serve,
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
        Command::Serve => {
            // Kept to the end of the run: dropping it flushes the spans not yet exported.
            let _telemetry = telemetry::init_telemetry("dashboard", &settings.log)?;
            let app = Application::build(settings)
                .await
                .context("the dashboard could not start")?;
            tracing::info!(
                http = %app.http_address(),
                admin = %app.admin_address(),
                "dashboard listening"
            );
            println!("dashboard: http://{}/", app.http_address());
            app.run_until_stopped(shutdown::signal()).await?;
        }
    }
    Ok(())
}
