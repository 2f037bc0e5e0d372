//! A dashboard on port 0 over empty views of its own, and tokens to call it with.

use std::time::Duration;

use auth_tokens::Role;
use aws_sdk_dynamodb::types::AttributeValue;
use dashboard::app::Application;
use dashboard::live::LiveBoards;
use dashboard::settings::{
    AdminSettings, BoardSettings, CommandApiSettings, HttpSettings, LogSettings, Settings,
};
use read_models::settings::{ReadModelDatabase, ViewTables};
use read_models::{ActiveOrdersProjection, ActiveOrdersTables, HistoryProjection, SchemaName};
use service_kit::settings::LogFormat;
use test_support::http::{request, JsonResponse};
use test_support::{aws_test_config, fresh_database, unique_name, TestDatabase, TestTokenKeys};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The store the views know (it has stock).
pub const KNOWN_STORE: &str = "s1";

/// Creates view tables where [`KNOWN_STORE`] exists (one stock item).
pub async fn create_known_store_tables(
    dynamodb: &aws_sdk_dynamodb::Client,
    tables: &ActiveOrdersTables,
) {
    ActiveOrdersProjection::create_tables(dynamodb, tables)
        .await
        .unwrap();
    dynamodb
        .put_item()
        .table_name(&tables.stores)
        .item("pk", AttributeValue::S(format!("STORE#{KNOWN_STORE}")))
        .item("sk", AttributeValue::S("SKU#LATTE-12".into()))
        .item("sku", AttributeValue::S("LATTE-12".into()))
        .item("on_hand", AttributeValue::N("20".into()))
        .item("reserved", AttributeValue::N("0".into()))
        .send()
        .await
        .unwrap();
}

/// The running dashboard.
pub struct TestDashboard {
    pub address: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The configured view tables.
    pub tables: ActiveOrdersTables,
    /// The views table the dashboard reads the alias from (not created: no alias, the
    /// configured tables are live).
    pub views_table: String,
    /// The dashboard's live boards, to count their pollers.
    pub live: LiveBoards,
    /// The issuer's key pair: the dashboard holds only its JWKS file.
    keys: TestTokenKeys,
    /// The history database the dashboard reads (schema `history`).
    pub history_db: TestDatabase,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

/// Whether the issuer's JWKS file exists when the dashboard starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeysPublished {
    Yes,
    No,
}

impl TestDashboard {
    /// Empty views where only [`KNOWN_STORE`] exists (one stock item), and the dashboard over
    /// them. The command API is not running: the tests here never reach it.
    pub async fn start() -> Self {
        Self::start_with(KeysPublished::Yes).await
    }

    /// [`Self::start`], but the issuer has not published its keys yet: the JWKS file is missing.
    pub async fn start_before_the_keys_are_published() -> Self {
        Self::start_with(KeysPublished::No).await
    }

    async fn start_with(published: KeysPublished) -> Self {
        let sdk = aws_test_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let tables = ActiveOrdersTables {
            orders: unique_name("dashboard-orders"),
            stores: unique_name("dashboard-stores"),
        };
        create_known_store_tables(&dynamodb, &tables).await;
        let views_table = unique_name("views");
        let history_db = fresh_database().await;
        let schema = SchemaName::parse("history").unwrap();
        HistoryProjection::create_schema(&history_db.pool, &schema)
            .await
            .unwrap();

        let keys = TestTokenKeys::new();
        if published == KeysPublished::No {
            std::fs::remove_file(keys.jwks_url()).unwrap();
        }
        let app = Application::build(Settings {
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port: 0,
            },
            admin: AdminSettings {
                host: "127.0.0.1".into(),
                port: 0,
            },
            aws: Default::default(),
            dynamodb: ViewTables {
                active_orders_table: tables.orders.clone(),
                store_metrics_table: tables.stores.clone(),
                // A views table that does not exist means "the configured tables are live".
                views_table: views_table.clone(),
            },
            history: ReadModelDatabase {
                database: history_db.settings(None),
                schema: schema.as_str().into(),
            },
            auth: keys.auth_settings(),
            command_api: CommandApiSettings {
                // Nothing listens there; no test of this file sends a command.
                url: "http://127.0.0.1:9".into(),
                timeout_ms: 1_000,
                tls: Default::default(),
            },
            board: BoardSettings {
                poll_interval_ms: 100,
            },
            log: LogSettings {
                format: LogFormat::Pretty,
                filter: "warn".into(),
                otlp_endpoint: None,
            },
        })
        .await
        .unwrap();
        let address = format!("http://{}", app.http_address());
        let live = app.live_boards();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            address,
            dynamodb,
            tables,
            views_table,
            live,
            keys,
            history_db,
            stop: Some(stop),
            server,
        }
    }

    /// Writes an open order of [`KNOWN_STORE`] into the view, as the projector lays it out:
    /// one latte with oat milk.
    pub async fn put_open_order(&self, order_id: &str, status: &str) {
        self.put_open_order_in(&self.tables, order_id, status).await;
    }

    /// [`Self::put_open_order`] into `tables`.
    pub async fn put_open_order_in(
        &self,
        tables: &ActiveOrdersTables,
        order_id: &str,
        status: &str,
    ) {
        let s = |value: &str| AttributeValue::S(value.to_owned());
        let placed_at = "2026-01-01T08:00:00.000000Z";
        let line = AttributeValue::M(
            [
                ("sku".to_owned(), s("LATTE-12")),
                ("name".to_owned(), s("Latte 12oz")),
                ("quantity".to_owned(), AttributeValue::N("1".into())),
                (
                    "customisations".to_owned(),
                    AttributeValue::L(vec![s("oat milk")]),
                ),
            ]
            .into(),
        );
        self.dynamodb
            .put_item()
            .table_name(&tables.orders)
            .item("pk", s(&format!("ORDER#{order_id}")))
            .item("sk", s("ORDER"))
            .item("order_id", s(order_id))
            .item("store_id", s(KNOWN_STORE))
            .item("customer_id", s("c-1"))
            .item("status", s(status))
            .item("placed_at", s(placed_at))
            .item("total_cents", AttributeValue::N("450".into()))
            .item("items", AttributeValue::L(vec![line]))
            .item("gsi2pk", s(&format!("STORE#{KNOWN_STORE}")))
            .item("gsi2sk", s(&format!("{placed_at}#{order_id}")))
            .send()
            .await
            .unwrap();
    }

    /// A token for `subject` in `role`, of `store` for staff.
    pub fn token(&self, role: Role, subject: &str, store: Option<&str>) -> String {
        self.token_valid_for(role, subject, store, Duration::from_secs(600))
    }

    /// A token as [`TestDashboard::token`], expiring after `ttl`.
    pub fn token_valid_for(
        &self,
        role: Role,
        subject: &str,
        store: Option<&str>,
        ttl: Duration,
    ) -> String {
        self.keys.issuer().mint(subject, role, store, ttl).unwrap()
    }

    /// `GET path` with `token`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> JsonResponse {
        request("GET", &format!("{}{path}", self.address), token, None).await
    }

    /// `POST path` with `token` and a JSON body.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> JsonResponse {
        request(
            "POST",
            &format!("{}{path}", self.address),
            token,
            Some(body),
        )
        .await
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await.unwrap().unwrap();
    }
}
