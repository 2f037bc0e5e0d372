//! Typed, layered settings: a binary's built-in defaults (TOML), then an optional TOML file, then
//! `ORDERPIPE_<SECTION>__<KEY>` environment variables (e.g. `ORDERPIPE_DATABASE__PORT=5432`).

use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

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

/// Loads `T` from `defaults` (TOML text), then `file` if given, then `ORDERPIPE_*` variables.
pub fn load<T: DeserializeOwned>(defaults: &str, file: Option<&Path>) -> Result<T, SettingsError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(defaults, config::FileFormat::Toml));
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file).required(true));
    }
    Ok(builder
        .add_source(
            config::Environment::with_prefix("ORDERPIPE")
                .prefix_separator("_")
                .separator("__"),
        )
        .build()?
        .try_deserialize()?)
}

/// Loads `T` from `defaults` alone, ignoring files and the environment: for tests of a binary's
/// defaults, which must not depend on the variables of the shell that runs them.
pub fn load_defaults<T: DeserializeOwned>(defaults: &str) -> Result<T, SettingsError> {
    Ok(config::Config::builder()
        .add_source(config::File::from_str(defaults, config::FileFormat::Toml))
        .build()?
        .try_deserialize()?)
}

/// A PostgreSQL database: a full `url`, or its parts (as AWS Secrets Manager hands them out for
/// Aurora).
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
    /// How long to wait for a connection before the operation fails as unavailable.
    pub acquire_timeout_ms: u64,
}

impl DatabaseSettings {
    /// Connection options from the URL or the parts.
    pub fn connect_options(&self) -> Result<PgConnectOptions, SettingsError> {
        match &self.url {
            Some(url) => url.expose_secret().parse().map_err(|_| {
                // The URL may hold a password: never echo it.
                SettingsError::Rejected("database url is not a valid PostgreSQL URL".into())
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

    /// A lazily connecting pool: the process starts even while PostgreSQL is down and reports
    /// unavailable until it is back.
    pub fn pool(&self) -> Result<PgPool, SettingsError> {
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            .connect_lazy_with(self.connect_options()?))
    }
}

/// The admin HTTP listener (`/metrics`, `/health`).
#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
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
