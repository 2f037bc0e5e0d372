//! Typed, layered configuration: built-in defaults, then an optional TOML file, then
//! `ORDERPIPE_<SECTION>__<KEY>` environment variables (e.g. `ORDERPIPE_KINESIS__STREAM_NAME`).

use std::time::Duration;

pub use aws_support::AwsSettings;
use serde::Deserialize;
pub use service_kit::settings::{
    AdminSettings, DatabaseSettings, LayeredSettings, LogFormat, LogSettings, SettingsError,
};

/// The most records one PutRecords call accepts (a Kinesis limit).
pub const MAX_RECORDS_PER_CALL: usize = 500;

/// Everything the relay reads at start-up.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The event store's PostgreSQL (the same settings as the command API's).
    pub database: DatabaseSettings,
    /// The admin HTTP listener (`/metrics`, `/health`).
    pub admin: AdminSettings,
    /// Logging.
    pub log: LogSettings,
    /// Where the AWS clients point; every field is optional.
    #[serde(default)]
    pub aws: AwsSettings,
    /// The log the relay publishes to.
    pub kinesis: KinesisSettings,
    /// Batching, pacing and leadership.
    pub relay: RelaySettings,
}

/// The Kinesis stream.
#[derive(Debug, Clone, Deserialize)]
pub struct KinesisSettings {
    /// The stream's name.
    pub stream_name: String,
}

/// How the relay batches, waits and elects its one active instance.
#[derive(Debug, Clone, Deserialize)]
pub struct RelaySettings {
    /// How many outbox commits one round reads; they go out in PutRecords calls of at most 500
    /// records.
    pub batch_size: u32,
    /// How long an idle relay waits before looking at the outbox again.
    pub poll_interval_ms: u64,
    /// The PostgreSQL advisory lock id that elects the active relay; every relay of one
    /// deployment uses the same id.
    pub lock_key: i64,
    /// How often a standby relay tries to take the lock.
    pub standby_retry_ms: u64,
    /// The first back-off after a failed publish; it doubles with every failure in a row.
    pub retry_initial_ms: u64,
    /// The longest back-off.
    pub retry_max_ms: u64,
    /// At most this many commits of one shard share a Kinesis record (a container, which
    /// only readers since containers unpack). The default, 1, writes one plain commit envelope
    /// per record, which every reader reads, so a relay may be upgraded before its readers
    /// (writers ship before readers); raise it once every reader runs a build that unpacks.
    pub max_commits_per_record: usize,
    /// How long a record that is not full may wait, from its oldest commit, for more commits
    /// of its shard (KPL's `RecordMaxBufferedTime`): denser records for this much added
    /// latency at most. 0 publishes as soon as a commit is read; no effect while
    /// `max_commits_per_record` is 1.
    pub max_linger_ms: u64,
}

const DEFAULTS: &str = r#"
[database]
host = "127.0.0.1"
port = 5432
name = "orderpipe"
username = "postgres"
max_connections = 4
acquire_timeout_ms = 3000

[admin]
host = "127.0.0.1"
port = 9091

[log]
format = "json"
filter = "info"

[relay]
batch_size = 500
poll_interval_ms = 50
# "relay" in ASCII.
lock_key = 491328954745
standby_retry_ms = 1000
retry_initial_ms = 100
retry_max_ms = 10000
max_commits_per_record = 1
max_linger_ms = 0
"#;

/// No resource names among the defaults: the stream's name (`kinesis.stream_name`) is one a
/// deployment must set for the relay.
impl LayeredSettings for Settings {
    const DEFAULTS: &'static str = DEFAULTS;

    /// Rejects values the relay cannot work with.
    fn validate(&self) -> Result<(), SettingsError> {
        if self.kinesis.stream_name.trim().is_empty() {
            return Err(SettingsError::Rejected(
                "kinesis.stream_name (ORDERPIPE_KINESIS__STREAM_NAME) is empty".into(),
            ));
        }
        if self.relay.batch_size == 0 {
            return Err(SettingsError::Rejected(
                "relay.batch_size must be at least 1".into(),
            ));
        }
        if self.relay.max_commits_per_record == 0 {
            return Err(SettingsError::Rejected(
                "relay.max_commits_per_record must be at least 1 (1: one commit per record)".into(),
            ));
        }
        if self.relay.retry_initial_ms == 0 || self.relay.retry_max_ms < self.relay.retry_initial_ms
        {
            return Err(SettingsError::Rejected(
                "relay.retry_initial_ms must be above 0 and at most relay.retry_max_ms".into(),
            ));
        }
        Ok(())
    }
}

impl RelaySettings {
    /// The idle wait.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The longest a record that is not full waits for more commits.
    pub fn max_linger(&self) -> Duration {
        Duration::from_millis(self.max_linger_ms)
    }

    /// The standby's wait between attempts to take the lock.
    pub fn standby_retry(&self) -> Duration {
        Duration::from_millis(self.standby_retry_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_defaults_load_with_only_the_stream_name_missing() {
        let defaults = service_kit::settings::Defaults {
            values: vec![("kinesis.stream_name", "events".into())],
            ..Settings::defaults()
        };
        let settings: Settings = service_kit::settings::load_defaults(&defaults).unwrap();
        settings.validate().unwrap();
        assert_eq!(settings.relay.batch_size, 500);
        assert_eq!(settings.relay.poll_interval(), Duration::from_millis(50));
        assert_eq!(
            settings.relay.max_commits_per_record, 1,
            "plain envelopes unless every reader is known to unpack"
        );
        assert_eq!(settings.relay.max_linger(), Duration::ZERO);
        assert!(settings.aws.endpoint_url.is_none());
    }
}
