//! Typed, layered configuration: built-in defaults, then an optional TOML file, then
//! `ORDERPIPE_<SECTION>__<KEY>` environment variables (e.g. `ORDERPIPE_GRPC__PORT=50051`).

use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Everything the command API reads at start-up.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The gRPC listener.
    pub grpc: GrpcSettings,
    /// The admin HTTP listener (`/metrics`, `/health`).
    pub admin: AdminSettings,
    /// The event store's PostgreSQL.
    pub database: DatabaseSettings,
    /// Bearer-token verification.
    pub auth: AuthSettings,
    /// Event store tuning.
    pub store: StoreSettings,
    /// Logging.
    pub log: LogSettings,
}

/// The gRPC listener and its limits.
#[derive(Debug, Clone, Deserialize)]
pub struct GrpcSettings {
    /// Address to bind, e.g. `127.0.0.1` or `0.0.0.0`.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// Largest request message accepted, in bytes; larger ones get RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
    /// Upper bound on any request's time; a client's shorter `grpc-timeout` wins.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
}

/// The admin HTTP listener.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
}

/// Where the event store lives: a full `url`, or its parts (as AWS Secrets Manager hands them
/// out for Aurora).
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// A full connection URL; when set, the parts below are ignored.
    pub url: Option<SecretString>,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// User name.
    pub username: String,
    /// Password, if the server asks for one.
    pub password: Option<SecretString>,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection before a command fails with UNAVAILABLE.
    pub acquire_timeout_ms: u64,
}

/// Verification of the HS256 bearer tokens.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// The shared signing secret (at least 32 bytes).
    pub jwt_secret: SecretString,
    /// The expected `iss` claim.
    pub issuer: String,
    /// The expected `aud` claim.
    pub audience: String,
}

/// Event store tuning.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    /// Snapshot an aggregate every this many events (0: never).
    pub snapshot_every: u64,
    /// The most commits grouped into one transaction.
    pub max_batch_commits: usize,
    /// How many times a command is reloaded and handled again after a concurrent change before
    /// the caller gets ABORTED.
    pub conflict_retries: u32,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// `json` (one object per line, for machines) or `pretty` (for a terminal).
    pub format: LogFormat,
    /// A tracing filter such as `info` or `command_api=debug,sqlx=warn`.
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable lines.
    Pretty,
}

const DEFAULTS: &str = r#"
[grpc]
host = "127.0.0.1"
port = 50051
max_message_bytes = 65536
request_timeout_ms = 5000
shutdown_grace_ms = 10000

[admin]
host = "127.0.0.1"
port = 9090

[database]
host = "127.0.0.1"
port = 5432
name = "orderpipe"
username = "postgres"
max_connections = 16
acquire_timeout_ms = 3000

[auth]
issuer = "orderpipe"
audience = "orderpipe-api"

[store]
snapshot_every = 50
max_batch_commits = 256
conflict_retries = 8

[log]
format = "json"
filter = "info"
"#;

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A source was unreadable or a value had the wrong type; the message names the key.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    /// A value parsed but makes no sense.
    #[error("invalid configuration: {0}")]
    Rejected(String),
}

impl Settings {
    /// Loads defaults, then `file` if given, then `ORDERPIPE_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("ORDERPIPE")
                    .prefix_separator("_")
                    .separator("__"),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.auth.jwt_secret.expose_secret().len() < 32 {
            return Err(SettingsError::Rejected(
                "auth.jwt_secret (ORDERPIPE_AUTH__JWT_SECRET) must be at least 32 bytes".into(),
            ));
        }
        if self.grpc.max_message_bytes < 1024 {
            return Err(SettingsError::Rejected(
                "grpc.max_message_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }
}

impl GrpcSettings {
    /// The request time limit.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

impl DatabaseSettings {
    /// Connection options from the URL or the parts.
    pub fn connect_options(&self) -> Result<PgConnectOptions, SettingsError> {
        match &self.url {
            Some(url) => url.expose_secret().parse().map_err(|_| {
                // The URL may hold a password: never echo it.
                SettingsError::Rejected("database.url is not a valid PostgreSQL URL".into())
            }),
            None => {
                let options = PgConnectOptions::new()
                    .host(&self.host)
                    .port(self.port)
                    .database(&self.name)
                    .username(&self.username);
                Ok(match &self.password {
                    Some(password) => options.password(password.expose_secret()),
                    None => options,
                })
            }
        }
    }

    /// A lazily connecting pool: the API starts even while PostgreSQL is down and answers
    /// UNAVAILABLE until it is back.
    pub fn pool(&self) -> Result<PgPool, SettingsError> {
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            .connect_lazy_with(self.connect_options()?))
    }
}
