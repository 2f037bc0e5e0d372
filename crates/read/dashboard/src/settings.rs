//! The `dashboard` binary's settings: built-in defaults, then an optional TOML file, then
//! `ORDERPIPE_<SECTION>__<KEY>` environment variables (e.g. `ORDERPIPE_HTTP__PORT=8080`).
//! The table names, the history database and the auth keys are the ones the projectors and the
//! command API read, so one environment serves every process.

use std::time::Duration;

use auth_tokens::AuthSettings;
use aws_support::AwsSettings;
use read_models::settings::{ReadModelDatabase, ViewTables};
use serde::Deserialize;
pub use service_kit::grpc_tls::ClientTlsSettings;
pub use service_kit::settings::{AdminSettings, LayeredSettings, LogSettings, SettingsError};

/// Everything the dashboard reads at start-up.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The page and the read API.
    pub http: HttpSettings,
    /// The admin listener (`/metrics`, `/health`).
    pub admin: AdminSettings,
    /// Where the AWS clients point.
    #[serde(default)]
    pub aws: AwsSettings,
    /// The DynamoDB active-orders view.
    pub dynamodb: ViewTables,
    /// The PostgreSQL order history (one order's timeline).
    pub history: ReadModelDatabase,
    /// Bearer-token verification, the command API's keys.
    pub auth: AuthSettings,
    /// Where the advance buttons send their commands.
    pub command_api: CommandApiSettings,
    /// Live updates.
    pub board: BoardSettings,
    /// Logging.
    pub log: LogSettings,
}

/// The HTTP listener of the page and the read API.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// Address to bind (`0.0.0.0` to reach it from a tablet on the shop's network).
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
}

/// The gRPC command API.
#[derive(Debug, Clone, Deserialize)]
pub struct CommandApiSettings {
    /// Its address: `http://127.0.0.1:50051` (plaintext) or `https://…` (TLS, as `tls` says).
    pub url: String,
    /// Upper bound on one command's time.
    pub timeout_ms: u64,
    /// The CA to trust and the client certificate to present for an `https://` URL.
    #[serde(default)]
    pub tls: ClientTlsSettings,
}

/// Live updates of a store's board.
#[derive(Debug, Clone, Deserialize)]
pub struct BoardSettings {
    /// How often a watched store's view is read. The page sees a change within this interval
    /// plus one read; keep it under a second.
    pub poll_interval_ms: u64,
}

impl BoardSettings {
    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// Built-in defaults; the view's table names and the history database's location come from
/// their declarations ([`LayeredSettings::default_values`]).
const DEFAULTS: &str = r#"
[http]
host = "127.0.0.1"
port = 8080

[admin]
host = "127.0.0.1"
port = 9093

[history.database]
max_connections = 4
acquire_timeout_ms = 3000

[auth]
issuer = "orderpipe"
audience = "orderpipe-api"

[command_api]
url = "http://127.0.0.1:50051"
timeout_ms = 5000

[board]
poll_interval_ms = 400

[log]
format = "json"
filter = "info"
"#;

impl LayeredSettings for Settings {
    const DEFAULTS: &'static str = DEFAULTS;

    /// The names of the active-orders view's tables.
    /// The view tables' names and the history database's location.
    fn default_values() -> Vec<(&'static str, String)> {
        let mut values = read_models::resources().default_names();
        values.extend(read_models::settings::history_location_defaults());
        values
    }

    fn validate(&self) -> Result<(), SettingsError> {
        self.auth.validate().map_err(SettingsError::Rejected)?;
        if !(50..=1000).contains(&self.board.poll_interval_ms) {
            return Err(SettingsError::Rejected(
                "board.poll_interval_ms must be between 50 and 1000 (live updates within a second)"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The defaults alone (never the shell's environment), with a JWKS location added.
    fn defaults() -> Settings {
        let mut defaults = Settings::defaults();
        defaults
            .values
            .push(("auth.jwks_url", "/run/jwks.json".into()));
        service_kit::settings::load_defaults(&defaults).unwrap()
    }

    #[test]
    fn defaults_read_the_stack_tables_and_poll_within_a_second() {
        let settings = defaults();
        assert!(settings.validate().is_ok());
        assert_eq!(
            (
                settings.dynamodb.active_orders_table.as_str(),
                settings.dynamodb.store_metrics_table.as_str(),
                settings.dynamodb.views_table.as_str()
            ),
            (
                "orderpipe-active-orders",
                "orderpipe-store-metrics",
                "orderpipe-views"
            )
        );
        assert!(settings.board.poll_interval() < Duration::from_secs(1));
    }

    #[test]
    fn no_jwks_an_unbounded_fetch_or_a_slow_poll_is_refused() {
        let mut no_jwks = defaults();
        no_jwks.auth.jwks_url = String::new();
        let mut unbounded_fetch = defaults();
        unbounded_fetch.auth.jwks_fetch_timeout_ms = 0;
        let mut slow = defaults();
        slow.board.poll_interval_ms = 5_000;
        for settings in [no_jwks, unbounded_fetch, slow] {
            assert!(matches!(
                settings.validate(),
                Err(SettingsError::Rejected(_))
            ));
        }
    }
}
