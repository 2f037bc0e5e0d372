//! The `flows` binary's settings: built-in defaults, then an optional TOML file, then
//! `ORDERPIPE_<SECTION>__<KEY>` environment variables (e.g. `ORDERPIPE_SQS__INTAKE_QUEUE_URL`).

use std::time::Duration;

use aws_support::AwsSettings;
pub use kinesis_consumer::settings::KinesisSettings;
use kinesis_consumer::WorkerConfig;
use secrecy::SecretString;
use serde::Deserialize;
pub use service_kit::grpc_tls::ClientTlsSettings;
pub use service_kit::settings::{AdminSettings, LayeredSettings, LogSettings, SettingsError};

use crate::dead_letters::QueuePair;
use crate::notifications::NOTIFICATIONS_NAME;
use crate::purchase_orders::PURCHASE_ORDERS_NAME;
use crate::saga::SAGA_NAME;

/// Every worker this build has: the log consumers, then the queue consumers.
pub const WORKERS: [&str; 5] = [
    SAGA_NAME,
    NOTIFICATIONS_NAME,
    PURCHASE_ORDERS_NAME,
    PAYMENTS,
    INTAKE,
];
/// The payments queue consumer's name.
pub const PAYMENTS: &str = "payments";
/// The intake queue consumer's name.
pub const INTAKE: &str = "intake";
/// The notifications queue's name (written, not consumed here).
pub const NOTIFICATIONS: &str = "notifications";
/// The purchase-orders queue's name (written for the supplier integration, not consumed here).
pub const PURCHASE_ORDERS: &str = PURCHASE_ORDERS_NAME;

/// Everything `flows` reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Which workers run.
    pub flows: FlowsSettings,
    /// The command API every effect goes through.
    pub command_api: CommandApiSettings,
    /// The service token the flows call the command API with.
    #[serde(default)]
    pub auth: FlowsAuthSettings,
    /// Where the AWS clients point.
    #[serde(default)]
    pub aws: AwsSettings,
    /// The log.
    pub kinesis: KinesisSettings,
    /// The lease and parked tables of the log consumers.
    pub dynamodb: DynamoDbSettings,
    /// The queues.
    pub sqs: SqsSettings,
    /// The log consumers' leases and batches.
    pub runtime: RuntimeSettings,
    /// The payment gateway.
    pub payments: PaymentSettings,
    /// The admin HTTP listener (`/metrics`, `/health`).
    pub admin: AdminSettings,
    /// Logging.
    pub log: LogSettings,
}

/// Which workers run.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowsSettings {
    /// Comma-separated subset of `order_saga,notifications,purchase_orders,payments,intake`;
    /// empty: all (one
    /// deployment may run each in its own service).
    pub workers: String,
}

/// The command API.
#[derive(Debug, Clone, Deserialize)]
pub struct CommandApiSettings {
    /// Its gRPC endpoint: `http://127.0.0.1:50051` (plaintext) or `https://…` (TLS, as `tls`
    /// says).
    pub url: String,
    /// Tries of a command that keeps meeting UNAVAILABLE or ABORTED before giving up (the
    /// worker then retries the whole batch or message later).
    pub attempts: u32,
    /// Each attempt's deadline, sent as `grpc-timeout` and enforced by the client too, so a
    /// paused or silently cut-off API delays a flow by at most this per attempt.
    pub call_timeout_ms: u64,
    /// The CA to trust and the client certificate to present for an `https://` URL.
    #[serde(default)]
    pub tls: ClientTlsSettings,
}

/// The flows' credentials for the command API. The flows verify no token and mint none: they
/// hold a `service` token the issuer minted (`command-api mint-token --role service`; in AWS
/// the issuer's, kept in Secrets Manager), never a signing key. Needed by `run` only (not by
/// `dlq`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlowsAuthSettings {
    /// The `service` bearer token (`ORDERPIPE_AUTH__SERVICE_TOKEN`); its subject scopes the
    /// flows' idempotency keys, so every flows process of a deployment uses the same subject.
    pub service_token: Option<SecretString>,
}

/// The log consumers' DynamoDB tables (shared with the projectors: every lease and parked key
/// starts with the consumer group's name).
#[derive(Debug, Clone, Deserialize)]
pub struct DynamoDbSettings {
    /// Leases and checkpoints.
    pub leases_table: String,
    /// Commits parked behind a poison commit of their order.
    pub parked_table: String,
}

/// The queues (URLs as `scripts/stack.sh` exports them).
#[derive(Debug, Clone, Deserialize)]
pub struct SqsSettings {
    /// Poison log records of the saga and notifications.
    pub projector_dlq_url: Option<String>,
    /// Delivery-platform orders.
    pub intake_queue_url: Option<String>,
    /// Their dead-letter queue.
    pub intake_dlq_url: Option<String>,
    /// Payment requests (FIFO).
    pub payments_queue_url: Option<String>,
    /// Their dead-letter queue (FIFO).
    pub payments_dlq_url: Option<String>,
    /// Customer notifications.
    pub notifications_queue_url: Option<String>,
    /// Their dead-letter queue (for the notification sender's failures).
    pub notifications_dlq_url: Option<String>,
    /// Purchase orders for the supplier integration (FIFO, one group per store).
    pub purchase_orders_queue_url: Option<String>,
    /// Their dead-letter queue (FIFO, for the supplier integration's failures).
    pub purchase_orders_dlq_url: Option<String>,
    /// Long-polling wait per ReceiveMessage, 0 to 20 seconds.
    pub wait_time_seconds: u64,
    /// How long a received message stays invisible (extended while it is handled).
    pub visibility_timeout_seconds: u64,
    /// Messages per ReceiveMessage, 1 to 10.
    pub max_messages: i32,
    /// Delay before a transiently failed message (gateway timeout, API unavailable) is
    /// delivered again, doubled per delivery (whole seconds in SQS, at least one).
    pub retry_initial_ms: u64,
    /// The longest such delay.
    pub retry_max_ms: u64,
}

/// The log consumers' leases and batches (as in the projectors' `runtime` section).
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeSettings {
    /// This worker's name in the lease table; unset: `flows-<hostname>-<pid>`.
    pub worker_id: Option<String>,
    /// A lease not renewed for this long may be taken by another worker.
    pub lease_duration_ms: u64,
    /// Most records per GetRecords call.
    pub batch_size: u32,
    /// Tries of a batch that keeps failing transiently after which its shard counts as stalled
    /// (alarm gauge); the batch is retried until it passes.
    pub max_apply_attempts: u32,
    /// Least time between two GetRecords calls of this process on one shard, the saga and
    /// notifications together (at least 200; the default 400 leaves the other half of Kinesis's
    /// five calls per second per shard to the `projectors` process).
    pub poll_interval_ms: u64,
    /// How often the shard list is read for new shards, and stopped aggregates that need no
    /// operator are resumed.
    pub shard_sync_interval_ms: u64,
}

/// The payment gateway.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentSettings {
    /// `sandbox`, the deterministic test-mode gateway (the only one this build has).
    pub gateway: String,
    /// A gateway call that takes longer counts as a timeout (and is retried).
    pub gateway_timeout_ms: u64,
    /// How long the sandbox's slow test card takes to approve.
    pub sandbox_slow_ms: u64,
    /// The payment deadline: a charge still unresolved this long after the saga requested it
    /// (the gateway timing out or unreachable) is given up: the order is rejected, its stock
    /// released, and the charge cancelled or refunded at the gateway should it still capture
    /// (`docs/architecture.md`, "Compensation and the payment deadline").
    pub charge_deadline_ms: u64,
}

/// Built-in defaults; the stream's and the tables' names come from their declarations
/// ([`LayeredSettings::default_values`]).
const DEFAULTS: &str = r#"
[flows]
workers = ""

[command_api]
url = "http://127.0.0.1:50051"
attempts = 5
call_timeout_ms = 10000

[sqs]
wait_time_seconds = 20
visibility_timeout_seconds = 30
max_messages = 10
retry_initial_ms = 2000
retry_max_ms = 120000

[runtime]
lease_duration_ms = 10000
batch_size = 100
max_apply_attempts = 8
poll_interval_ms = 400
shard_sync_interval_ms = 60000

[payments]
gateway = "sandbox"
gateway_timeout_ms = 60000
sandbox_slow_ms = 45000
charge_deadline_ms = 300000

[admin]
host = "127.0.0.1"
port = 9093

[log]
format = "json"
filter = "info"
"#;

impl LayeredSettings for Settings {
    const DEFAULTS: &'static str = DEFAULTS;

    /// The names of the stream and of the log consumers' tables (the queues' URLs have none).
    fn default_values() -> Vec<(&'static str, String)> {
        crate::queues::resources().default_names()
    }

    fn validate(&self) -> Result<(), SettingsError> {
        for name in self.worker_names() {
            if !WORKERS.contains(&name.as_str()) {
                return Err(rejected(&format!(
                    "flows.workers: unknown worker {name:?} (this build has: {})",
                    WORKERS.join(", ")
                )));
            }
        }
        if self.command_api.call_timeout_ms < 100 {
            return Err(rejected("command_api.call_timeout_ms must be at least 100"));
        }
        if self.sqs.wait_time_seconds > 20 {
            return Err(rejected("sqs.wait_time_seconds must be 0 to 20"));
        }
        if !(1..=10).contains(&self.sqs.max_messages) {
            return Err(rejected("sqs.max_messages must be 1 to 10"));
        }
        if self.sqs.visibility_timeout_seconds < 2 {
            return Err(rejected(
                "sqs.visibility_timeout_seconds must be at least 2",
            ));
        }
        if self.runtime.poll_interval_ms < 200 {
            return Err(rejected("runtime.poll_interval_ms must be at least 200"));
        }
        if self.runtime.lease_duration_ms < 300 {
            return Err(rejected("runtime.lease_duration_ms must be at least 300"));
        }
        if self.payments.charge_deadline_ms < 1_000 {
            return Err(rejected(
                "payments.charge_deadline_ms must be at least 1000",
            ));
        }
        if self.payments.gateway != "sandbox" {
            return Err(rejected(
                "payments.gateway: only \"sandbox\" exists in this build",
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// The workers to run (every one when `flows.workers` is empty).
    pub fn worker_names(&self) -> Vec<String> {
        let listed: Vec<String> = self
            .flows
            .workers
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        if listed.is_empty() {
            WORKERS.iter().map(|name| (*name).to_owned()).collect()
        } else {
            listed
        }
    }

    /// The service token the flows call the command API with; `run` needs it.
    pub fn service_token(&self) -> Result<SecretString, SettingsError> {
        self.auth.service_token.clone().ok_or_else(|| {
            rejected(
                "auth.service_token (ORDERPIPE_AUTH__SERVICE_TOKEN) is required to run the flows: \
                 a service token minted by the issuer (command-api mint-token --role service)",
            )
        })
    }

    /// Whether `worker` runs.
    pub fn runs(&self, worker: &str) -> bool {
        self.worker_names().iter().any(|name| name == worker)
    }

    /// The log consumers' worker configuration; needs `sqs.projector_dlq_url`.
    pub fn worker_config(&self) -> Result<WorkerConfig, SettingsError> {
        Ok(WorkerConfig {
            worker_id: self
                .runtime
                .worker_id
                .clone()
                .unwrap_or_else(default_worker_id),
            stream_name: self.kinesis.stream_name.clone(),
            leases_table: self.dynamodb.leases_table.clone(),
            parked_table: self.dynamodb.parked_table.clone(),
            dead_letter_queue_url: required(&self.sqs.projector_dlq_url, "sqs.projector_dlq_url")?,
            lease_duration: Duration::from_millis(self.runtime.lease_duration_ms),
            batch_size: self.runtime.batch_size,
            max_apply_attempts: self.runtime.max_apply_attempts,
            poll_interval: Duration::from_millis(self.runtime.poll_interval_ms),
            shard_sync_interval: Duration::from_millis(self.runtime.shard_sync_interval_ms),
        })
    }

    /// The queue `name` (`intake`, `payments`, `notifications`, `purchase_orders`) and its
    /// dead-letter queue.
    pub fn queue(&self, name: &str) -> Result<QueuePair, SettingsError> {
        let sqs = &self.sqs;
        let (name, queue, dlq) = match name {
            INTAKE => (INTAKE, &sqs.intake_queue_url, &sqs.intake_dlq_url),
            PAYMENTS => (PAYMENTS, &sqs.payments_queue_url, &sqs.payments_dlq_url),
            NOTIFICATIONS => (
                NOTIFICATIONS,
                &sqs.notifications_queue_url,
                &sqs.notifications_dlq_url,
            ),
            PURCHASE_ORDERS => (
                PURCHASE_ORDERS,
                &sqs.purchase_orders_queue_url,
                &sqs.purchase_orders_dlq_url,
            ),
            other => {
                return Err(rejected(&format!(
                    "unknown queue {other:?} (intake, payments, notifications, purchase_orders)"
                )))
            }
        };
        Ok(QueuePair {
            name,
            queue_url: required(queue, &format!("sqs.{name}_queue_url"))?,
            dead_letter_url: required(dlq, &format!("sqs.{name}_dlq_url"))?,
        })
    }
}

fn required(value: &Option<String>, key: &str) -> Result<String, SettingsError> {
    value.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
        rejected(&format!(
            "{key} (ORDERPIPE_{}) is required",
            key.to_uppercase().replacen('.', "__", 1)
        ))
    })
}

fn rejected(message: &str) -> SettingsError {
    SettingsError::Rejected(message.to_owned())
}

/// `flows-<hostname>-<pid>`, so the lease table shows which process kind holds a lease.
fn default_worker_id() -> String {
    format!("flows-{}", kinesis_consumer::settings::default_worker_id())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_run_every_worker_and_name_missing_queues_by_their_variable() {
        let mut settings = Settings::built_in().unwrap();
        settings.validate().unwrap();
        assert_eq!(settings.kinesis.stream_name, "orderpipe-events");
        assert_eq!(settings.dynamodb.parked_table, "orderpipe-projector-parked");
        assert!(
            settings.service_token().is_err(),
            "run needs a service token"
        );
        assert_eq!(settings.worker_names(), WORKERS);
        assert_eq!(settings.admin.port, 9093);
        let missing = settings.queue("intake").unwrap_err().to_string();
        assert!(
            missing.contains("ORDERPIPE_SQS__INTAKE_QUEUE_URL"),
            "{missing}"
        );
        assert!(settings.queue("kitchen").is_err());
        settings.flows.workers = "payments, intake".into();
        assert!(settings.runs("intake") && !settings.runs("order_saga"));
        settings.flows.workers = "payments,kitchen".into();
        assert!(settings.validate().is_err());
    }
}
