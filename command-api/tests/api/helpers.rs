//! Spawns the real command API on port 0 against a fresh database, and gives tests clients
//! that carry a bearer token of a chosen role.

use std::net::SocketAddr;
use std::time::Duration;

use auth_tokens::client::{AuthedChannel, Bearer};
use command_api::app::Application;
use command_api::auth::Role;
use command_api::settings::{
    AdminSettings, AuthSettings, GrpcSettings, IdempotencySettings, LogFormat, LogSettings,
    ReadModelDatabase, ServerTlsSettings, Settings, StoreSettings,
};
use proto::v1 as pb;
use proto::v1::inventory_service_client::InventoryServiceClient;
use proto::v1::loyalty_service_client::LoyaltyServiceClient;
use proto::v1::menu_service_client::MenuServiceClient;
use proto::v1::order_history_service_client::OrderHistoryServiceClient;
use proto::v1::order_service_client::OrderServiceClient;
use test_support::{fresh_database, CuttableProxy, TestDatabase, TestTokenKeys};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const STORE: &str = "s1";
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// The schema the test apps read the history view from.
pub const HISTORY_SCHEMA: &str = "history";
/// The test apps' idempotency key retention (the shortest the settings allow); tests backdate
/// keys rather than wait for it.
pub const IDEMPOTENCY_RETENTION_SECS: u64 = 3600;

/// A running command API.
pub struct TestApp {
    pub grpc_address: SocketAddr,
    pub admin_address: SocketAddr,
    pub database: TestDatabase,
    /// The issuer's key pair: the app holds only its JWKS file; tests mint with the private key.
    pub keys: TestTokenKeys,
    /// Present when the app reaches PostgreSQL through a proxy the test can cut.
    pub proxy: Option<CuttableProxy>,
    channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// How to start the app.
#[derive(Default)]
pub struct Options {
    /// Route the database connection through a [`CuttableProxy`].
    pub through_proxy: bool,
    /// Share this database with another app (two processes on one store).
    pub database: Option<TestDatabase>,
    /// The server's request limit instead of 10 s.
    pub request_timeout_ms: Option<u64>,
    /// Reloads after a conflict before ABORTED, instead of 8.
    pub conflict_retries: Option<u32>,
    /// How long shutdown waits for in-flight commands, instead of 2 s.
    pub shutdown_grace_ms: Option<u64>,
    /// Aggregates the app keeps in memory per type. 0 (the default): none, so every command
    /// reads the database, which some tests change behind the app's back (a snapshot an older
    /// build would have written).
    pub aggregate_cache: usize,
    /// The listener's TLS (default: plaintext). A TLS app's [`TestApp::channel`] is plaintext
    /// and so refused: its tests build their own (`tls.rs`).
    pub tls: ServerTlsSettings,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// What [`spawn_app_with`] starts the app with, before it starts it.
pub struct Prepared {
    pub settings: Settings,
    pub database: TestDatabase,
    pub proxy: Option<CuttableProxy>,
    /// The issuer's key pair: the app holds only its JWKS file.
    pub keys: TestTokenKeys,
}

/// The database (and proxy) and the settings an app of `options` runs with.
pub async fn prepare(options: Options) -> Prepared {
    let database = match options.database {
        Some(database) => database,
        None => fresh_database().await,
    };
    let proxy = match options.through_proxy {
        true => Some(database.proxy().await),
        false => None,
    };
    let keys = TestTokenKeys::new();
    let settings = Settings {
        grpc: GrpcSettings {
            host: "127.0.0.1".into(),
            port: 0,
            max_message_bytes: MAX_MESSAGE_BYTES,
            request_timeout_ms: options.request_timeout_ms.unwrap_or(10_000),
            shutdown_grace_ms: options.shutdown_grace_ms.unwrap_or(2_000),
            tls: options.tls,
        },
        admin: AdminSettings {
            host: "127.0.0.1".into(),
            port: 0,
        },
        database: database.settings(proxy.as_ref()),
        // The history view in the same test database, schema `history` (made by
        // `project_history`), read through a pool of its own as in production.
        history: ReadModelDatabase {
            database: database.settings(None),
            schema: HISTORY_SCHEMA.into(),
        },
        auth: AuthSettings {
            // A key published while the app runs is fetched a second after its first token.
            jwks_min_refetch_secs: 1,
            ..keys.auth_settings()
        },
        store: StoreSettings {
            snapshot_every: 3,
            max_batch_commits: 256,
            conflict_retries: options.conflict_retries.unwrap_or(8),
            aggregate_cache: options.aggregate_cache,
            writer: Default::default(),
        },
        log: LogSettings {
            format: LogFormat::Pretty,
            filter: "warn".into(),
            otlp_endpoint: None,
        },
        idempotency: IdempotencySettings {
            retention_secs: IDEMPOTENCY_RETENTION_SECS,
            prune_interval_ms: 100,
            prune_batch: 100,
        },
    };
    Prepared {
        settings,
        database,
        proxy,
        keys,
    }
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let Prepared {
        settings,
        database,
        proxy,
        keys,
    } = prepare(options).await;
    let app = Application::build(settings).await.expect("app starts");
    let grpc_address = app.grpc_address();
    let admin_address = app.admin_address();
    let (shutdown, stop) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stop.await;
    }));
    let channel = Channel::from_shared(format!("http://{grpc_address}"))
        .expect("valid URI")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    TestApp {
        grpc_address,
        admin_address,
        database,
        keys,
        proxy,
        channel,
        shutdown: Some(shutdown),
        running: Some(running),
    }
}

impl TestApp {
    /// A token for `subject` in `role` (staff tokens belong to [`STORE`]).
    pub fn token(&self, role: Role, subject: &str) -> String {
        let store = matches!(role, Role::Barista | Role::StoreManager).then_some(STORE);
        self.keys.mint(subject, role, store)
    }

    pub fn bearer(&self, token: Option<&str>) -> Bearer {
        token.map_or_else(Bearer::anonymous, |token| {
            Bearer::new(token).expect("a minted token is ASCII")
        })
    }

    pub fn orders_as(&self, token: Option<&str>) -> OrderServiceClient<AuthedChannel> {
        OrderServiceClient::with_interceptor(self.channel.clone(), self.bearer(token))
    }

    pub fn orders(&self, role: Role, subject: &str) -> OrderServiceClient<AuthedChannel> {
        self.orders_as(Some(&self.token(role, subject)))
    }

    pub fn inventory(&self, role: Role, subject: &str) -> InventoryServiceClient<AuthedChannel> {
        InventoryServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer(Some(&self.token(role, subject))),
        )
    }

    pub fn loyalty(&self, role: Role, subject: &str) -> LoyaltyServiceClient<AuthedChannel> {
        LoyaltyServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer(Some(&self.token(role, subject))),
        )
    }

    pub fn menu(&self, role: Role, subject: &str) -> MenuServiceClient<AuthedChannel> {
        MenuServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer(Some(&self.token(role, subject))),
        )
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Puts two drinks and a pastry on the menu and stocks store [`STORE`].
    pub async fn seed_menu_and_stock(&self, stock: u32) {
        let mut menu = self.menu(Role::Service, "back-office");
        for (sku, name, cents, category) in [
            ("LATTE-12", "Latte 12oz", 450, pb::MenuCategory::Drink),
            ("MOCHA-16", "Mocha 16oz", 525, pb::MenuCategory::Drink),
            ("CROISSANT", "Butter croissant", 325, pb::MenuCategory::Food),
        ] {
            menu.add_menu_item(pb::AddMenuItemRequest {
                idempotency_key: format!("seed-{sku}"),
                sku: sku.into(),
                name: name.into(),
                price: Some(pb::Money { cents }),
                category: category as i32,
            })
            .await
            .expect("menu item added");
            self.inventory(Role::StoreManager, "manager")
                .set_stock(pb::SetStockRequest {
                    idempotency_key: format!("seed-stock-{sku}"),
                    store_id: STORE.into(),
                    sku: sku.into(),
                    on_hand: stock,
                    low_stock_threshold: 2,
                })
                .await
                .expect("stock set");
        }
    }

    /// Store [`STORE`]'s stock level of `sku`, as a store manager reads it.
    pub async fn stock_level(&self, sku: &str) -> pb::StockLevel {
        self.inventory(Role::StoreManager, "manager")
            .get_inventory(pb::GetInventoryRequest {
                store_id: STORE.into(),
            })
            .await
            .expect("inventory read")
            .into_inner()
            .levels
            .into_iter()
            .find(|level| level.sku == sku)
            .expect("the SKU is stocked")
    }

    /// Number of events in the store.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.database.pool)
            .await
            .expect("count events")
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("app task")
                .expect("app stopped cleanly");
        }
    }
}

/// The history view of a test app: built from its event store by replay's rebuild, the path
/// an operator's rebuild takes (the same projection the projectors run on the log).
impl TestApp {
    pub fn history(&self, role: Role, subject: &str) -> OrderHistoryServiceClient<AuthedChannel> {
        OrderHistoryServiceClient::with_interceptor(
            self.channel.clone(),
            self.bearer(Some(&self.token(role, subject))),
        )
    }

    /// Creates the history schema (once) and applies every commit stored since the last call,
    /// in batches of 3 commits, so views are built across many `apply` calls.
    pub async fn project_history(&self) {
        let pool = self.database.pool.clone();
        let schema = read_models::SchemaName::parse(HISTORY_SCHEMA).unwrap();
        read_models::HistoryProjection::create_schema(&pool, &schema)
            .await
            .expect("history schema");
        let progress = replay::ProgressTable::new(pool.clone(), schema.clone());
        progress.create().await.expect("replay progress table");
        let store = event_store::PgEventStore::open(pool.clone(), Default::default())
            .await
            .expect("event store");
        replay::rebuild(
            &store,
            &read_models::HistoryProjection::new(pool, schema),
            &progress,
            &replay::RebuildOptions {
                until: None,
                batch_commits: 3,
            },
            |_| {},
        )
        .await
        .expect("history rebuilt from the store");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A place-order request for `customer` at [`STORE`].
pub fn place_order(
    key: &str,
    order_id: &str,
    customer: &str,
    lines: &[(&str, u32)],
) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        idempotency_key: key.into(),
        order_id: order_id.into(),
        store_id: STORE.into(),
        customer_id: customer.into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| pb::OrderLine {
                sku: (*sku).into(),
                quantity: *quantity,
                customisations: vec!["oat milk".into()],
            })
            .collect(),
        note: "extra hot, please".into(),
        payment_token: String::new(),
    }
}

pub fn new_order_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn transition(key: &str, order_id: &str) -> pb::OrderTransitionRequest {
    pb::OrderTransitionRequest {
        idempotency_key: key.into(),
        order_id: order_id.into(),
    }
}

/// A plain HTTP/1.1 GET (the admin endpoint needs nothing more): status code and body.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("admin endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `series` (name and labels, as Prometheus prints them) on the app's
/// `/metrics`, if present. Metrics are process-wide: every app of a test binary shares them.
pub async fn metric_value(address: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = http_get(address, "/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}
