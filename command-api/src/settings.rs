//! Typed, layered configuration: built-in defaults, then an optional TOML file, then
//! `ORDERPIPE_<SECTION>__<KEY>` environment variables (e.g. `ORDERPIPE_GRPC__PORT=50051`).

use std::time::Duration;

pub use auth_tokens::AuthSettings;
use event_store::GroupCommitConfig;
pub use read_models::settings::ReadModelDatabase;
use serde::Deserialize;
pub use service_kit::grpc_tls::ServerTlsSettings;
pub use service_kit::settings::{
    AdminSettings, DatabaseSettings, LayeredSettings, LogFormat, LogSettings, SettingsError,
};

/// Everything the command API reads at start-up.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The gRPC listener.
    pub grpc: GrpcSettings,
    /// The admin HTTP listener (`/metrics`, `/health`).
    pub admin: AdminSettings,
    /// The event store's PostgreSQL.
    pub database: DatabaseSettings,
    /// The history view, read only (ListOrders, ListLoyaltyTransactions): the projectors' keys
    /// (`ORDERPIPE_HISTORY__DATABASE__*`, `ORDERPIPE_HISTORY__SCHEMA`), ideally pointing at an
    /// Aurora reader endpoint. A pool of its own, so queries never take the event store's
    /// connections.
    pub history: ReadModelDatabase,
    /// Bearer-token verification.
    pub auth: AuthSettings,
    /// Event store tuning.
    pub store: StoreSettings,
    /// How long idempotency keys are kept (the section may be left out: its defaults apply).
    #[serde(default)]
    pub idempotency: IdempotencySettings,
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
    /// Upper bound on any request's time; a client's shorter `grpc-timeout` wins. A call that
    /// runs out answers DEADLINE_EXCEEDED.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// TLS, and mTLS when `client_ca_file` is set; left out: plaintext (the local default).
    #[serde(default)]
    pub tls: ServerTlsSettings,
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
    /// How many aggregates of each type a process keeps in memory as its own commits left
    /// them, so a command on one of them reads nothing from the database (0: none). Each
    /// costs the aggregate's state; several processes on one database stay correct (the
    /// commit's version check refuses a stale entry, which is then reloaded).
    pub aggregate_cache: usize,
    /// The bounds on every wait of the group-commit writer.
    #[serde(default)]
    pub writer: WriterSettings,
}

/// The bounds on the group-commit writer's waits (see `event_store::GroupCommitConfig`). The
/// defaults keep a healthy burst working (a batch takes milliseconds) while a stalled process
/// holding the position counter delays the others by about `idle_in_transaction_timeout_ms`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct WriterSettings {
    /// How long a batch waits for the position counter.
    pub lock_timeout_ms: u64,
    /// The bound on each statement of a batch.
    pub statement_timeout_ms: u64,
    /// How long a batch's transaction may wait for this process before PostgreSQL ends it.
    pub idle_in_transaction_timeout_ms: u64,
    /// The bound on a batch as a whole, measured by the writer.
    pub batch_timeout_ms: u64,
    /// A batch running longer than this turns `/health` 503.
    pub stuck_after_ms: u64,
}

impl Default for WriterSettings {
    fn default() -> Self {
        let defaults = GroupCommitConfig::default();
        let millis = |duration: Duration| duration.as_millis() as u64;
        Self {
            lock_timeout_ms: millis(defaults.lock_timeout),
            statement_timeout_ms: millis(defaults.statement_timeout),
            idle_in_transaction_timeout_ms: millis(defaults.idle_in_transaction_timeout),
            batch_timeout_ms: millis(defaults.batch_timeout),
            stuck_after_ms: millis(defaults.stuck_after),
        }
    }
}

impl StoreSettings {
    /// The group-commit writer's configuration.
    pub fn group_commit(&self) -> GroupCommitConfig {
        GroupCommitConfig {
            max_batch_commits: self.max_batch_commits,
            lock_timeout: Duration::from_millis(self.writer.lock_timeout_ms),
            statement_timeout: Duration::from_millis(self.writer.statement_timeout_ms),
            idle_in_transaction_timeout: Duration::from_millis(
                self.writer.idle_in_transaction_timeout_ms,
            ),
            batch_timeout: Duration::from_millis(self.writer.batch_timeout_ms),
            stuck_after: Duration::from_millis(self.writer.stuck_after_ms),
            ..GroupCommitConfig::default()
        }
    }
}

/// Retention of client idempotency keys; any field left out takes its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IdempotencySettings {
    /// How long a key is kept after its command committed: a retry within it returns the first
    /// outcome; after it (once pruned) the retry is a new command.
    pub retention_secs: u64,
    /// Pause between pruning passes.
    pub prune_interval_ms: u64,
    /// Keys deleted per statement.
    pub prune_batch: u32,
}

impl Default for IdempotencySettings {
    /// The event store's defaults: keys kept 7 days, pruned every minute, 1,000 at a time.
    fn default() -> Self {
        let retention = event_store::KeyRetention::default();
        Self {
            retention_secs: retention.retention.as_secs(),
            prune_interval_ms: retention.prune_interval.as_millis() as u64,
            prune_batch: retention.prune_batch,
        }
    }
}

impl IdempotencySettings {
    /// As the event store's pruner takes them.
    pub fn retention(&self) -> event_store::KeyRetention {
        event_store::KeyRetention {
            retention: Duration::from_secs(self.retention_secs),
            prune_interval: Duration::from_millis(self.prune_interval_ms),
            prune_batch: self.prune_batch,
        }
    }
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

# Every pooled session (loads, outcome reads, health pings); the writer's batches set their own
# tighter bounds ([store.writer]). TCP keepalive keeps its service-kit defaults.
[database.session]
statement_timeout_ms = 5000
lock_timeout_ms = 2000
idle_in_transaction_timeout_ms = 5000
application_name = "orderpipe-command-api"

# The history view's database (the projectors write it; this process only reads). Small pool,
# tight bounds: a slow query costs its caller, never a command. Where it is:
# read_models::settings::history_location_defaults.
[history.database]
max_connections = 4
acquire_timeout_ms = 2000

[history.database.session]
statement_timeout_ms = 3000
lock_timeout_ms = 1000
idle_in_transaction_timeout_ms = 5000
application_name = "orderpipe-command-api-history"

[auth]
issuer = "orderpipe"
audience = "orderpipe-api"

[store]
snapshot_every = 50
max_batch_commits = 256
conflict_retries = 8
aggregate_cache = 10000

[store.writer]
lock_timeout_ms = 2000
statement_timeout_ms = 3000
idle_in_transaction_timeout_ms = 1000
batch_timeout_ms = 4000
stuck_after_ms = 1000

[log]
format = "json"
filter = "info"
"#;

impl LayeredSettings for Settings {
    const DEFAULTS: &'static str = DEFAULTS;

    /// The history database's location (the view it answers ListOrders from).
    fn default_values() -> Vec<(&'static str, String)> {
        read_models::settings::history_location_defaults()
    }

    fn validate(&self) -> Result<(), SettingsError> {
        self.auth.validate().map_err(SettingsError::Rejected)?;
        let writer = &self.store.writer;
        if writer.lock_timeout_ms == 0 || writer.batch_timeout_ms == 0 {
            return Err(SettingsError::Rejected(
                "store.writer.lock_timeout_ms and batch_timeout_ms must be above 0: \
                 an unbounded wait lets one stalled process stop every writer"
                    .into(),
            ));
        }
        if self.idempotency.retention_secs < 3600 {
            // Shorter than the longest a client may reasonably retry (the saga's and the
            // queues' redeliveries span minutes to hours): a retry would run twice.
            return Err(SettingsError::Rejected(
                "idempotency.retention_secs must be at least 3600".into(),
            ));
        }
        if self.idempotency.prune_batch == 0 || self.idempotency.prune_interval_ms == 0 {
            return Err(SettingsError::Rejected(
                "idempotency.prune_batch and idempotency.prune_interval_ms must be above 0".into(),
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
