//! Typed, layered settings: a binary's built-in defaults (TOML, and the names of the resources it
//! uses), then an optional TOML file, then `ORDERPIPE_<SECTION>__<KEY>` environment variables
//! (e.g. `ORDERPIPE_DATABASE__PORT=5432`). Every binary's settings type implements
//! [`LayeredSettings`], which loads, validates and lists the keys the same way for all of them.

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

/// A binary's built-in defaults: TOML text, and values its code gives (the resources' default
/// names, declared once beside the code that uses each resource, see
/// `aws_support::resources`).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Defaults as TOML text.
    pub toml: &'static str,
    /// Defaults given by code, as (dotted settings key, value); the TOML text wins where both
    /// give one.
    pub values: Vec<(&'static str, String)>,
}

impl Defaults {
    /// The defaults as the first layer of a configuration.
    fn builder(
        &self,
    ) -> Result<config::ConfigBuilder<config::builder::DefaultState>, SettingsError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(self.toml, config::FileFormat::Toml));
        for (key, value) in &self.values {
            builder = builder.set_default(*key, value.as_str())?;
        }
        Ok(builder)
    }

    /// The defaults alone, as a configuration (what `settings_keys` asks whether a key has a
    /// default).
    pub fn config(&self) -> Result<config::Config, SettingsError> {
        Ok(self.builder()?.build()?)
    }
}

/// A binary's settings: built-in defaults, then an optional TOML file, then `ORDERPIPE_*`
/// environment variables, then [`LayeredSettings::validate`]. A binary implements the
/// defaults and the validation; loading, the defaults alone (for tests) and the list of keys
/// (`<binary> settings-keys`) are the same for every binary.
pub trait LayeredSettings: DeserializeOwned {
    /// The built-in defaults as TOML text.
    const DEFAULTS: &'static str;

    /// Built-in defaults given by code, as (dotted settings key, value): the names of the
    /// resources the binary uses (`aws_support::resources::Resources::default_names`). None
    /// unless the binary says so.
    fn default_values() -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Rejects values that parse but that the binary cannot work with (the message names the
    /// key). Accepts everything unless the binary says otherwise.
    fn validate(&self) -> Result<(), SettingsError> {
        Ok(())
    }

    /// Every built-in default.
    fn defaults() -> Defaults {
        Defaults {
            toml: Self::DEFAULTS,
            values: Self::default_values(),
        }
    }

    /// Loads the defaults, then `file` if given, then `ORDERPIPE_*` environment variables, and
    /// validates the result.
    fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let settings: Self = load(&Self::defaults(), file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults alone, not validated, ignoring files and the environment: for
    /// tests, which must not depend on the variables of the shell that runs them (and which
    /// then point the settings at their own resources).
    fn built_in() -> Result<Self, SettingsError> {
        load_defaults(&Self::defaults())
    }

    /// Every settings key the binary reads (its `ORDERPIPE_*` variable) and whether a
    /// deployment must set it: what `<binary> settings-keys` prints.
    fn keys() -> Vec<crate::settings_keys::SettingKey> {
        crate::settings_keys::settings_keys::<Self>(&Self::defaults())
    }

    /// What every binary's `main` does first. For its `settings-keys` subcommand
    /// (`print_keys`), prints the keys and gives `None`: printing needs no settings, and
    /// loading them needs the required keys. Otherwise loads the settings ([`Self::load`]).
    fn load_unless_printing_keys(
        print_keys: bool,
        file: Option<&Path>,
    ) -> Result<Option<Self>, SettingsError> {
        if print_keys {
            crate::settings_keys::print(&Self::keys());
            return Ok(None);
        }
        Self::load(file).map(Some)
    }
}

/// Loads `T` from `defaults`, then `file` if given, then `ORDERPIPE_*` variables.
pub fn load<T: DeserializeOwned>(
    defaults: &Defaults,
    file: Option<&Path>,
) -> Result<T, SettingsError> {
    let mut builder = defaults.builder()?;
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
pub fn load_defaults<T: DeserializeOwned>(defaults: &Defaults) -> Result<T, SettingsError> {
    Ok(defaults.config()?.try_deserialize()?)
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
    /// Bounds PostgreSQL enforces on every session of the pool, and its TCP keepalive.
    #[serde(default)]
    pub session: SessionSettings,
}

/// Settings sent to PostgreSQL when a connection starts (the startup packet's `options`), so
/// they hold for every statement on every pooled connection at no cost per statement.
///
/// A timeout of 0 leaves the server's own setting (usually: none). The defaults here are what
/// every process gets; a binary with stricter needs sets them in its own defaults (the command
/// API does).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SessionSettings {
    /// `statement_timeout`: the longest any statement may run, lock waits included.
    pub statement_timeout_ms: u64,
    /// `lock_timeout`: the longest a statement waits for a lock.
    pub lock_timeout_ms: u64,
    /// `idle_in_transaction_session_timeout`: how long an open transaction may wait for this
    /// process (paused, cut off) before PostgreSQL ends the session and releases its locks.
    pub idle_in_transaction_timeout_ms: u64,
    /// `tcp_keepalives_idle`: seconds of silence before the server probes this client; with
    /// the interval and count below, a client host that vanished without closing (power loss, a
    /// silent network cut) is noticed and its session and locks ended within about
    /// idle + interval x count seconds instead of the kernel's default two hours.
    pub tcp_keepalives_idle_s: u32,
    /// `tcp_keepalives_interval`: seconds between unanswered probes.
    pub tcp_keepalives_interval_s: u32,
    /// `tcp_keepalives_count`: unanswered probes before the server drops the connection.
    pub tcp_keepalives_count: u32,
    /// `tcp_user_timeout`: how long data the server sent may stay unacknowledged before it
    /// drops the connection (covers a cut while the server is sending, where keepalive does not
    /// probe).
    pub tcp_user_timeout_ms: u64,
    /// `application_name`: shown in `pg_stat_activity`, so an operator sees which process holds
    /// what.
    pub application_name: Option<String>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            statement_timeout_ms: 0,
            lock_timeout_ms: 0,
            idle_in_transaction_timeout_ms: 0,
            tcp_keepalives_idle_s: 30,
            tcp_keepalives_interval_s: 10,
            tcp_keepalives_count: 3,
            tcp_user_timeout_ms: 30_000,
            application_name: None,
        }
    }
}

impl SessionSettings {
    /// The settings as startup parameters (`-c name=value`), zeros left out.
    pub fn startup_parameters(&self) -> Vec<(&'static str, String)> {
        [
            ("statement_timeout", self.statement_timeout_ms),
            ("lock_timeout", self.lock_timeout_ms),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_timeout_ms,
            ),
            ("tcp_keepalives_idle", u64::from(self.tcp_keepalives_idle_s)),
            (
                "tcp_keepalives_interval",
                u64::from(self.tcp_keepalives_interval_s),
            ),
            ("tcp_keepalives_count", u64::from(self.tcp_keepalives_count)),
            ("tcp_user_timeout", self.tcp_user_timeout_ms),
        ]
        .into_iter()
        .filter(|(_, value)| *value > 0)
        .map(|(name, value)| (name, value.to_string()))
        .collect()
    }

    fn apply(&self, options: PgConnectOptions) -> PgConnectOptions {
        let options = options.options(self.startup_parameters());
        match &self.application_name {
            Some(name) => options.application_name(name),
            None => options,
        }
    }
}

impl DatabaseSettings {
    /// Connection options from the URL or the parts, with the [`SessionSettings`].
    pub fn connect_options(&self) -> Result<PgConnectOptions, SettingsError> {
        Ok(self.session.apply(self.server_options()?))
    }

    fn server_options(&self) -> Result<PgConnectOptions, SettingsError> {
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
    /// Where to send traces (OTLP over gRPC), e.g. `http://127.0.0.1:4317`. Unset, the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` variables are read;
    /// with none of them set, no trace is recorded (see [`crate::telemetry`]).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A binary's settings in miniature: a name given by code, a batch size by TOML.
    #[derive(Debug, Deserialize)]
    struct Sample {
        table: String,
        batch: u32,
    }

    impl LayeredSettings for Sample {
        const DEFAULTS: &'static str = "batch = 10\n";

        fn default_values() -> Vec<(&'static str, String)> {
            vec![("table", "orderpipe-things".into())]
        }

        fn validate(&self) -> Result<(), SettingsError> {
            if self.batch == 0 {
                return Err(SettingsError::Rejected("batch must be at least 1".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn code_given_defaults_sit_under_a_file_and_the_result_is_validated() {
        let built_in = Sample::built_in().unwrap();
        assert_eq!(
            (built_in.table.as_str(), built_in.batch),
            ("orderpipe-things", 10)
        );
        let keys = Sample::keys();
        assert!(keys.iter().all(|key| !key.required), "{keys:?}");

        let dir = std::env::temp_dir().join(format!("service-kit-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("override.toml");
        std::fs::write(&file, "table = \"mine\"\nbatch = 3\n").unwrap();
        let loaded = Sample::load(Some(&file)).unwrap();
        assert_eq!((loaded.table.as_str(), loaded.batch), ("mine", 3));

        std::fs::write(&file, "batch = 0\n").unwrap();
        let refused = Sample::load(Some(&file)).unwrap_err().to_string();
        assert!(refused.contains("batch must be at least 1"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn session_settings_become_startup_parameters_without_the_zeros() {
        let settings = SessionSettings {
            statement_timeout_ms: 5_000,
            idle_in_transaction_timeout_ms: 1_000,
            ..SessionSettings::default()
        };
        let parameters = settings.startup_parameters();
        assert!(parameters.contains(&("statement_timeout", "5000".into())));
        assert!(parameters.contains(&("idle_in_transaction_session_timeout", "1000".into())));
        assert!(parameters.contains(&("tcp_keepalives_idle", "30".into())));
        assert!(!parameters.iter().any(|(name, _)| *name == "lock_timeout"));
    }
}
