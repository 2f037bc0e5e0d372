//! Spawns the real relay against a fresh database and a fresh kinesalite stream, writes commits
//! through the event store, and reads the stream back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::CqrsFramework;
use domain::inventory::{InventoryCommand, StoreInventory};
use domain::values::{Sku, StoreId};
use event_store::{AggregateStore, PgEventStore, StoreConfig};
use relay::app::Application;
use relay::record_log::{KinesisLog, RecordLog};
use relay::settings::{
    AdminSettings, AwsSettings, KinesisSettings, LogFormat, LogSettings, RelaySettings, Settings,
};
pub use test_support::{replay, TestStream, PATIENCE};
use test_support::{unique_name, CuttableProxy, TestDatabase};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The real Kinesis adapter on a test stream.
pub fn kinesis_log(stream: &TestStream) -> KinesisLog {
    KinesisLog::new(&stream.client, stream.name.clone())
}

/// Writes commits through cqrs-es and the event store, like the command API does.
pub struct Writer {
    pub store: PgEventStore,
    cqrs: Arc<CqrsFramework<StoreInventory, AggregateStore<StoreInventory>>>,
    pub commits: usize,
}

impl Writer {
    pub async fn open(database: &TestDatabase) -> Self {
        let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
            .await
            .expect("event store");
        let cqrs = Arc::new(CqrsFramework::new(
            store.aggregate_store::<StoreInventory>(vec![]),
            vec![],
            (),
        ));
        Self {
            store,
            cqrs,
            commits: 0,
        }
    }

    /// `commits_each` commits on each of `stores` inventories, the stores writing concurrently
    /// so their commits interleave in the outbox. The first commit of a store has three events
    /// (stock set below its threshold: a warning and a reorder request), later ones one or two.
    pub async fn write(&mut self, stores: &[String], commits_each: usize) {
        let writers = stores.iter().map(|store| {
            let cqrs = self.cqrs.clone();
            let store = store.clone();
            async move {
                let sku = Sku::parse("LATTE-12").expect("sku");
                cqrs.execute(
                    &store,
                    InventoryCommand::SetStock {
                        store_id: StoreId::parse(&store).expect("store id"),
                        sku: sku.clone(),
                        on_hand: 5,
                        low_stock_threshold: 10,
                    },
                )
                .await
                .expect("SetStock");
                for _ in 1..commits_each {
                    cqrs.execute(
                        &store,
                        InventoryCommand::Restock {
                            sku: sku.clone(),
                            quantity: 1,
                        },
                    )
                    .await
                    .expect("Restock");
                }
            }
        });
        futures::future::join_all(writers).await;
        self.commits += stores.len() * commits_each;
    }

    /// The current sequence of every aggregate in the store.
    pub async fn versions(&self) -> HashMap<(String, String), u64> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, max(sequence) FROM events \
             GROUP BY aggregate_type, aggregate_id",
        )
        .fetch_all(self.store.pool())
        .await
        .expect("versions");
        rows.into_iter()
            .map(|(t, id, version)| ((t, id), version as u64))
            .collect()
    }

    pub async fn outbox_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(self.store.pool())
            .await
            .expect("outbox count")
    }
}

/// `count` store ids unique to this test.
pub fn stores(count: usize) -> Vec<String> {
    let prefix = unique_name("store");
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// A running relay.
pub struct TestRelay {
    pub admin_address: SocketAddr,
    pub proxy: Option<CuttableProxy>,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a relay on `database` publishing through `log`; with `through_proxy`, its database
/// connections (pool and lock) pass a [`CuttableProxy`].
pub async fn spawn_relay(
    database: &TestDatabase,
    log: Arc<dyn RecordLog>,
    through_proxy: bool,
) -> TestRelay {
    spawn_relay_polling(database, log, through_proxy, 20).await
}

/// [`spawn_relay`], polling the outbox every `poll_interval_ms` when it finds nothing.
pub async fn spawn_relay_polling(
    database: &TestDatabase,
    log: Arc<dyn RecordLog>,
    through_proxy: bool,
    poll_interval_ms: u64,
) -> TestRelay {
    spawn_relay_packing(database, log, through_proxy, poll_interval_ms, PACKED).await
}

/// `relay.max_commits_per_record` where every reader unpacks (the tests' readers do), which the
/// tests use unless they say.
pub const PACKED: usize = 100;

/// [`spawn_relay_polling`], packing at most `max_commits_per_record` commits per record.
pub async fn spawn_relay_packing(
    database: &TestDatabase,
    log: Arc<dyn RecordLog>,
    through_proxy: bool,
    poll_interval_ms: u64,
    max_commits_per_record: usize,
) -> TestRelay {
    spawn_relay_lingering(
        database,
        log,
        through_proxy,
        poll_interval_ms,
        max_commits_per_record,
        0,
    )
    .await
}

/// [`spawn_relay_packing`], holding a record that is not full back for up to `max_linger_ms`.
pub async fn spawn_relay_lingering(
    database: &TestDatabase,
    log: Arc<dyn RecordLog>,
    through_proxy: bool,
    poll_interval_ms: u64,
    max_commits_per_record: usize,
    max_linger_ms: u64,
) -> TestRelay {
    let proxy = match through_proxy {
        true => Some(database.proxy().await),
        false => None,
    };
    let settings = Settings {
        database: database.settings(proxy.as_ref()),
        admin: AdminSettings {
            host: "127.0.0.1".into(),
            port: 0,
        },
        log: LogSettings {
            format: LogFormat::Pretty,
            filter: "warn".into(),
            otlp_endpoint: None,
        },
        aws: AwsSettings::default(),
        kinesis: KinesisSettings {
            // The log passed in is what counts; the name only has to be valid.
            stream_name: "set-by-the-log".into(),
        },
        relay: RelaySettings {
            // Small rounds, so a test's commits take several rounds and waves.
            batch_size: 40,
            poll_interval_ms,
            lock_key: 7,
            standby_retry_ms: 200,
            retry_initial_ms: 10,
            retry_max_ms: 200,
            max_commits_per_record,
            max_linger_ms,
        },
    };
    service_kit::telemetry::init_logging(&settings.log);
    let app = Application::build_with_log(settings, log)
        .await
        .expect("relay starts");
    let admin_address = app.admin_address();
    let (shutdown, stop) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stop.await;
    }));
    TestRelay {
        admin_address,
        proxy,
        shutdown: Some(shutdown),
        running: Some(running),
    }
}

impl TestRelay {
    /// Asks for a graceful shutdown and waits for it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(running) = self.running.take() {
            tokio::time::timeout(PATIENCE, running)
                .await
                .expect("the relay stops in time")
                .expect("the relay task")
                .expect("the relay stops cleanly");
        }
    }

    /// Waits until the relay process ended on its own, and returns how.
    pub async fn ended(mut self) -> std::io::Result<()> {
        let running = self.running.take().expect("running");
        tokio::time::timeout(PATIENCE, running)
            .await
            .expect("the relay ends in time")
            .expect("the relay task")
    }

    /// `/health`'s status code.
    pub async fn health(&self) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.admin_address)
            .await
            .expect("admin endpoint");
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin_address
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("an HTTP status line")
    }

    /// Waits until `/health` answers `status`.
    pub async fn wait_for_health(&self, status: u16) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.health().await != status {
            assert!(
                tokio::time::Instant::now() < deadline,
                "/health never answered {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
