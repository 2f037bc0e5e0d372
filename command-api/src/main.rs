//! `command-api`: serve the gRPC command API, or mint a development token.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use command_api::app::Application;
use command_api::auth::{Role, TokenAuthority};
use command_api::settings::{LayeredSettings, Settings};
use service_kit::{cli::SettingsFile, shutdown, telemetry};

/// orderpipe's gRPC command API: places and moves orders, manages stock, loyalty and the menu.
///
/// Settings come from built-in defaults, then the optional --config TOML file, then
/// ORDERPIPE_<SECTION>__<KEY> environment variables (see README "Configuration").
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
    /// Serve gRPC (health, reflection and the orderpipe.v1 services) and the admin endpoint
    /// (/metrics, /health) until SIGINT or SIGTERM.
    Serve,
    /// Print a signed bearer token for local use, with the configured secret.
    MintToken {
        /// The role the token grants.
        #[arg(long, value_enum)]
        role: Role,
        /// Who the token is for: the customer id for customers, a name otherwise.
        #[arg(long)]
        subject: String,
        /// The store, for baristas and store managers.
        #[arg(long)]
        store: Option<String>,
        /// How long the token is valid, in minutes.
        #[arg(long, default_value_t = 480)]
        ttl_minutes: u64,
    },
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
            let _telemetry = telemetry::init_telemetry("command-api", &settings.log)?;
            let app = Application::build(settings)
                .await
                .context("command-api could not start")?;
            tracing::info!(
                grpc = %app.grpc_address(),
                admin = %app.admin_address(),
                "command-api listening"
            );
            app.run_until_stopped(shutdown::signal()).await?;
        }
        Command::MintToken {
            role,
            subject,
            store,
            ttl_minutes,
        } => {
            let token = TokenAuthority::new(&settings.auth).mint(
                &subject,
                role,
                store.as_deref(),
                Duration::from_secs(ttl_minutes * 60),
            )?;
            println!("{token}");
        }
    }
    Ok(())
}
