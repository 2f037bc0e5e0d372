//! `command-api`: serve the gRPC command API; as the token issuer's tool, generate a key pair
//! or mint a token.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use auth_tokens::{publish_key, SigningKey, TokenIssuer};
use clap::{Parser, Subcommand};
use command_api::app::Application;
use command_api::auth::Role;
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
    /// Print a bearer token signed with an ES256 private key (the issuer's tool: the server
    /// itself holds no private key and verifies against the JWKS at auth.jwks_url).
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
        #[command(flatten)]
        issuer: IssuerArgs,
    },
    /// Generate an ES256 key pair: the private key as a PKCS#8 PEM file (readable by its owner
    /// only; never overwritten) and its public key added to a JWKS file (made if missing; the
    /// keys already there stay, so the next key can be published before it signs).
    Keygen {
        /// Where the private key is written (must not exist).
        #[arg(long)]
        private_key: PathBuf,
        /// The JWKS file the public key is added to.
        #[arg(long)]
        jwks: PathBuf,
    },
    /// Print every settings key this binary reads (its ORDERPIPE_* environment variable), one a
    /// line, with "required" (no default: a deployment must set it) or "optional".
    SettingsKeys,
}

/// Who signs: the private key and the claims every token of this issuer carries.
#[derive(clap::Args)]
struct IssuerArgs {
    /// The issuer's ES256 private key (PKCS#8 PEM), as `keygen` writes it.
    #[arg(long = "private-key", env = "ORDERPIPE_TOKEN_SIGNING_KEY")]
    private_key: PathBuf,
    /// The `iss` claim (the verifiers' auth.issuer).
    #[arg(long, env = "ORDERPIPE_AUTH__ISSUER", default_value = "orderpipe")]
    issuer: String,
    /// The `aud` claim (the verifiers' auth.audience).
    #[arg(
        long,
        env = "ORDERPIPE_AUTH__AUDIENCE",
        default_value = "orderpipe-api"
    )]
    audience: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::SettingsKeys => service_kit::settings_keys::print(&Settings::keys()),
        Command::Serve => {
            let settings = Settings::load(cli.settings.path())?;
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
            issuer,
        } => {
            let key = SigningKey::from_pem_file(&issuer.private_key)?;
            let token = TokenIssuer::new(&key, &issuer.issuer, &issuer.audience).mint(
                &subject,
                role,
                store.as_deref(),
                Duration::from_secs(ttl_minutes * 60),
            )?;
            println!("{token}");
        }
        Command::Keygen { private_key, jwks } => {
            let key = SigningKey::generate()?;
            key.write_pem_file(&private_key)?;
            publish_key(&jwks, &key)?;
            println!("{}", key.kid());
        }
    }
    Ok(())
}
