//! The pipeline under test: a fresh event store, stream and views, the real command API and
//! relay running in-process, and projector workers a test starts (and kills) itself.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use auth_tokens::client::Bearer;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::types::ShardIteratorType;
use command_api::auth::Role;
use command_api::settings::{
    AdminSettings, AuthSettings, GrpcSettings, LogFormat, LogSettings, Settings as ApiSettings,
    StoreSettings,
};
use commit_log::projection::Projection;
use commit_log::Vocabulary;
use kinesis_consumer::dead_letters::DeadLetterQueue;
use kinesis_consumer::{Checkpoint, LeaseTable, ParkedStore, Worker, WorkerConfig};
use read_models::{
    ActiveOrdersProjection, ActiveOrdersTables, AnalyticsProjection, HistoryProjection, SchemaName,
};
use relay::record_log::KinesisLog;
use relay::settings::{KinesisSettings, RelaySettings, Settings as RelaySettingsRoot};
use secrecy::SecretString;
use test_support::{
    aws_test_config, fresh_database, unique_name, TestDatabase, TestStream, TestTokenKeys, PATIENCE,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const STORE: &str = "s1";
/// Most records per GetRecords call of the test projector workers.
pub const WORKER_BATCH: u32 = 25;
/// Most commits the pipeline's relay packs into one record (every reader here unpacks).
pub const COMMITS_PER_RECORD: u32 = 100;

pub const HISTORY_TABLES: &[&str] = &[
    "applied_sequences",
    "orders",
    "order_items",
    "order_status_changes",
    "loyalty_ledger",
    "stock_movements",
];
pub const ANALYTICS_TABLES: &[&str] = &[
    "applied_sequences",
    "fact_orders",
    "fact_order_items",
    "fact_loyalty",
    "fact_stock_movements",
    "dim_store",
    "dim_item",
    "dim_hour",
];

/// Waits until `check` holds, or fails the test with `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One set of read models: tables, schemas and the consumer group's lease table.
#[derive(Clone)]
pub struct Views {
    pub tables: ActiveOrdersTables,
    pub history: SchemaName,
    pub analytics: SchemaName,
    pub leases_table: String,
    pub parked_table: String,
    pub dead_letters: String,
}

/// The running command API and relay, on their own database and stream.
pub struct Pipeline {
    pub events_db: TestDatabase,
    pub views_db: TestDatabase,
    pub sdk: SdkConfig,
    pub stream: TestStream,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub channel: Channel,
    pub grpc_address: std::net::SocketAddr,
    /// The issuer's key pair: the services under test hold only its JWKS file.
    keys: TestTokenKeys,
    stop: watch::Sender<bool>,
    api: JoinHandle<std::io::Result<()>>,
    relay: JoinHandle<std::io::Result<()>>,
}

pub fn quiet_log() -> LogSettings {
    LogSettings {
        format: LogFormat::Pretty,
        filter: "warn".into(),
        otlp_endpoint: None,
    }
}

pub fn loopback() -> AdminSettings {
    AdminSettings {
        host: "127.0.0.1".into(),
        port: 0,
    }
}

impl Pipeline {
    /// Starts the command API and the relay on a fresh database and a two-shard stream.
    pub async fn start() -> Self {
        let events_db = fresh_database().await;
        let views_db = fresh_database().await;
        let sdk = aws_test_config().await;
        let stream = TestStream::create(2).await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let (stop, _) = watch::channel(false);
        let keys = TestTokenKeys::new();

        let api = command_api::app::Application::build(ApiSettings {
            grpc: GrpcSettings {
                host: "127.0.0.1".into(),
                port: 0,
                max_message_bytes: 65_536,
                request_timeout_ms: 10_000,
                shutdown_grace_ms: 2_000,
                // Plaintext: TLS on this hop is command-api's tests/api/tls.rs.
                tls: Default::default(),
            },
            admin: loopback(),
            database: events_db.settings(None),
            history: command_api::settings::ReadModelDatabase {
                database: views_db.settings(None),
                schema: "history".into(),
            },
            auth: keys.auth_settings(),
            idempotency: command_api::settings::IdempotencySettings::default(),
            store: StoreSettings {
                snapshot_every: 50,
                max_batch_commits: 256,
                conflict_retries: 8,
                aggregate_cache: 10_000,
                writer: Default::default(),
            },
            log: quiet_log(),
        })
        .await
        .unwrap();
        let grpc_address = api.grpc_address();
        let channel = Channel::from_shared(format!("http://{grpc_address}"))
            .unwrap()
            .connect_lazy();
        let api = tokio::spawn(api.run_until_stopped(stopped(&stop)));

        let relay = relay::app::Application::build_with_log(
            RelaySettingsRoot {
                database: events_db.settings(None),
                admin: loopback(),
                log: quiet_log(),
                aws: Default::default(),
                kinesis: KinesisSettings {
                    stream_name: stream.name.clone(),
                },
                relay: RelaySettings {
                    batch_size: 500,
                    poll_interval_ms: 20,
                    lock_key: 7_000_001,
                    standby_retry_ms: 200,
                    retry_initial_ms: 50,
                    retry_max_ms: 1_000,
                    // Every reader here unpacks: the pipeline runs with packed records.
                    max_commits_per_record: COMMITS_PER_RECORD as usize,
                    max_linger_ms: 0,
                },
            },
            Arc::new(KinesisLog::new(&stream.client, stream.name.clone())),
        )
        .await
        .unwrap();
        let relay = tokio::spawn(relay.run_until_stopped(stopped(&stop)));

        Self {
            events_db,
            views_db,
            sdk,
            stream,
            dynamodb,
            channel,
            grpc_address,
            keys,
            stop,
            api,
            relay,
        }
    }

    /// A client credential for `subject` in `role` (staff belong to [`STORE`]).
    pub fn bearer(&self, role: Role, subject: &str) -> Bearer {
        Bearer::new(&self.token(role, subject)).expect("a minted token is ASCII")
    }

    /// A bearer token for `subject` in `role` (staff belong to [`STORE`]).
    pub fn token(&self, role: Role, subject: &str) -> String {
        let store = matches!(role, Role::Barista | Role::StoreManager).then_some(STORE);
        self.keys.mint(subject, role, store)
    }

    /// The token settings of the pipeline's command API (other services under test verify its
    /// tokens with the same JWKS).
    pub fn auth(&self) -> AuthSettings {
        self.keys.auth_settings()
    }

    /// A `service` token for the flows, as the issuer (`scripts/up.sh`) mints one for them.
    pub fn service_token(&self) -> SecretString {
        SecretString::from(self.keys.mint("flows", Role::Service, None))
    }

    /// Empty read models named after `name`, and their own consumer group.
    pub async fn views(&self, name: &str) -> Views {
        let views = Views {
            tables: ActiveOrdersTables {
                orders: unique_name(&format!("{name}-active-orders")),
                stores: unique_name(&format!("{name}-store-metrics")),
            },
            history: SchemaName::parse(&format!("history_{name}")).unwrap(),
            analytics: SchemaName::parse(&format!("analytics_{name}")).unwrap(),
            leases_table: unique_name(&format!("{name}-leases")),
            parked_table: unique_name(&format!("{name}-parked")),
            dead_letters: DeadLetterQueue::create_queue(
                &aws_sdk_sqs::Client::new(&self.sdk),
                &unique_name(name),
            )
            .await
            .unwrap(),
        };
        ActiveOrdersProjection::create_tables(&self.dynamodb, &views.tables)
            .await
            .unwrap();
        LeaseTable::create_table(&self.dynamodb, &views.leases_table)
            .await
            .unwrap();
        ParkedStore::create_table(&self.dynamodb, &views.parked_table)
            .await
            .unwrap();
        HistoryProjection::create_schema(&self.views_db.pool, &views.history)
            .await
            .unwrap();
        AnalyticsProjection::create_schema(&self.views_db.pool, &views.analytics)
            .await
            .unwrap();
        views
    }

    /// A projector worker building `views`, running until the pipeline stops (or its task is
    /// aborted: a crash).
    pub fn spawn_worker(&self, views: &Views, worker_id: &str) -> JoinHandle<()> {
        self.spawn_worker_reading(views, worker_id, Vocabulary::this_build().clone())
    }

    /// [`Pipeline::spawn_worker`] of a build that reads only the events `vocabulary` knows (an
    /// older build, in a rolling deploy).
    pub fn spawn_worker_reading(
        &self,
        views: &Views,
        worker_id: &str,
        vocabulary: Vocabulary,
    ) -> JoinHandle<()> {
        self.spawn_worker_of(views, worker_id, self.projections(views), vocabulary)
    }

    /// The three read models of `views`, as a projector process builds them.
    pub fn projections(&self, views: &Views) -> Vec<Arc<dyn Projection>> {
        vec![
            Arc::new(ActiveOrdersProjection::new(
                self.dynamodb.clone(),
                views.tables.clone(),
            )),
            Arc::new(HistoryProjection::new(
                self.views_db.pool.clone(),
                views.history.clone(),
            )),
            Arc::new(AnalyticsProjection::new(
                self.views_db.pool.clone(),
                views.analytics.clone(),
            )),
        ]
    }

    /// A projector worker running `projections` in the consumer group of `views` (batches of
    /// [`WORKER_BATCH`] records), until the pipeline stops or its task is aborted.
    pub fn spawn_worker_of(
        &self,
        views: &Views,
        worker_id: &str,
        projections: Vec<Arc<dyn Projection>>,
        vocabulary: Vocabulary,
    ) -> JoinHandle<()> {
        let worker = Worker::new(
            &self.sdk,
            WorkerConfig {
                worker_id: worker_id.into(),
                stream_name: self.stream.name.clone(),
                leases_table: views.leases_table.clone(),
                parked_table: views.parked_table.clone(),
                dead_letter_queue_url: views.dead_letters.clone(),
                lease_duration: Duration::from_secs(2),
                batch_size: WORKER_BATCH,
                max_apply_attempts: 3,
                poll_interval: Duration::from_millis(200),
                shard_sync_interval: Duration::from_secs(5),
            },
            projections,
        )
        .with_vocabulary(vocabulary);
        tokio::spawn(worker.run(stopped(&self.stop)))
    }

    /// Waits until the relay has published every commit.
    pub async fn wait_published(&self) {
        eventually("the relay to empty the outbox", || async {
            let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&self.events_db.pool)
                .await
                .unwrap();
            waiting == 0
        })
        .await;
    }

    /// Waits until every consumer group of `views` has checkpointed the last record of every
    /// shard (call after [`Pipeline::wait_published`]).
    pub async fn wait_caught_up(&self, views: &Views) {
        self.wait_groups_caught_up(&views.leases_table, 3).await;
    }

    /// Waits until the `groups` consumer groups whose leases are in `leases_table` have
    /// checkpointed the last record of every shard (call after [`Pipeline::wait_published`]).
    pub async fn wait_groups_caught_up(&self, leases_table: &str, groups: usize) {
        let last = self.last_sequence_per_shard().await;
        let shards = self
            .stream
            .client
            .list_shards()
            .stream_name(&self.stream.name)
            .send()
            .await
            .unwrap()
            .shards()
            .len();
        let leases = LeaseTable::new(self.dynamodb.clone(), leases_table);
        eventually("the consumers to catch up with the stream", || async {
            let leases = leases.list().await.unwrap();
            // A shard no record went to has nothing to catch up with.
            leases.len() == groups * shards
                && leases.iter().all(
                    |lease| match (&lease.checkpoint, last.get(&lease.shard_id)) {
                        (_, None) => true,
                        (Checkpoint::After(sequence), Some(last)) => sequence.as_str() == last,
                        _ => false,
                    },
                )
        })
        .await;
    }

    async fn last_sequence_per_shard(&self) -> HashMap<String, String> {
        let client = &self.stream.client;
        let shards = client
            .list_shards()
            .stream_name(&self.stream.name)
            .send()
            .await
            .unwrap();
        let mut last = HashMap::new();
        for shard in shards.shards() {
            let mut iterator = client
                .get_shard_iterator()
                .stream_name(&self.stream.name)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator;
            while let Some(current) = iterator {
                let page = client
                    .get_records()
                    .shard_iterator(current)
                    .send()
                    .await
                    .unwrap();
                if page.records().is_empty() {
                    break;
                }
                if let Some(record) = page.records().last() {
                    last.insert(
                        shard.shard_id().to_owned(),
                        record.sequence_number().to_owned(),
                    );
                }
                iterator = page.next_shard_iterator;
            }
        }
        last
    }

    /// Everything `views` hold, as sorted lines: every row of the history and analytics
    /// schemas, every DynamoDB item.
    pub async fn dump(&self, views: &Views) -> Vec<String> {
        let mut lines = Vec::new();
        for (schema, tables) in [
            (views.history.as_str(), HISTORY_TABLES),
            (views.analytics.as_str(), ANALYTICS_TABLES),
        ] {
            for table in tables {
                // Test-only SQL over schemas and tables this test created.
                let sql = format!("SELECT t::text FROM {schema}.{table} t ORDER BY 1");
                let rows: Vec<String> = sqlx::query_scalar(&sql)
                    .fetch_all(&self.views_db.pool)
                    .await
                    .unwrap();
                lines.extend(rows.into_iter().map(|row| format!("{table}: {row}")));
            }
        }
        for (kind, table) in [
            ("orders", &views.tables.orders),
            ("stores", &views.tables.stores),
        ] {
            let items = self.dynamodb.scan().table_name(table).send().await.unwrap();
            let mut rendered: Vec<String> = items
                .items()
                .iter()
                .map(|item| format!("{kind}: {}", canonical_item(item)))
                .collect();
            rendered.sort();
            lines.extend(rendered);
        }
        lines
    }

    /// Stops the command API, the relay and every worker still running.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.api.await.unwrap().unwrap();
        self.relay.await.unwrap().unwrap();
    }
}

/// Completes when the pipeline stops.
fn stopped(stop: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut stopped = stop.subscribe();
    async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }
}

/// An item as text with its attributes in name order (maps and sets sorted too).
fn canonical_item(item: &HashMap<String, AttributeValue>) -> String {
    let mut names: Vec<&String> = item.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| format!("{name}={}", canonical(&item[name])))
        .collect::<Vec<_>>()
        .join(",")
}

fn canonical(value: &AttributeValue) -> String {
    match value {
        AttributeValue::M(map) => format!("{{{}}}", canonical_item(map)),
        AttributeValue::L(list) => {
            format!(
                "[{}]",
                list.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        AttributeValue::Ss(set) | AttributeValue::Ns(set) => {
            let mut set = set.clone();
            set.sort();
            format!("{set:?}")
        }
        other => format!("{other:?}"),
    }
}
