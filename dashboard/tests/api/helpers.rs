//! A dashboard on port 0 over empty views of its own, and tokens to call it with.

use std::time::Duration;

use auth_tokens::{AuthSettings, Role, TokenAuthority};
use aws_sdk_dynamodb::types::AttributeValue;
use dashboard::settings::{
    AdminSettings, BoardSettings, CommandApiSettings, HttpSettings, LogSettings, Settings,
    ViewTables,
};
use dashboard::startup::Application;
use projectors::projections::{
    ActiveOrdersProjection, ActiveOrdersTables, HistoryProjection, SchemaName,
};
use projectors::runtime::settings::ReadModelDatabase;
use secrecy::SecretString;
use service_kit::settings::LogFormat;
use test_support::http::{request, JsonResponse};
use test_support::{aws_test_config, fresh_database, unique_name, TestDatabase};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "dashboard-test-secret-dashboard-test-0001";
/// The store the views know (it has stock).
pub const KNOWN_STORE: &str = "s1";

pub fn auth() -> AuthSettings {
    AuthSettings {
        jwt_secret: SecretString::from(SECRET),
        issuer: "orderpipe".into(),
        audience: "orderpipe-api".into(),
    }
}

/// The running dashboard.
pub struct TestDashboard {
    pub address: String,
    tokens: TokenAuthority,
    _history_db: TestDatabase,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl TestDashboard {
    /// Empty views where only [`KNOWN_STORE`] exists (one stock item), and the dashboard over
    /// them. The command API is not running: the tests here never reach it.
    pub async fn start() -> Self {
        let sdk = aws_test_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let tables = ActiveOrdersTables {
            orders: unique_name("dashboard-orders"),
            stores: unique_name("dashboard-stores"),
        };
        ActiveOrdersProjection::create_tables(&dynamodb, &tables)
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
        let history_db = fresh_database().await;
        let schema = SchemaName::parse("history").unwrap();
        HistoryProjection::create_schema(&history_db.pool, &schema)
            .await
            .unwrap();

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
            },
            history: ReadModelDatabase {
                database: history_db.settings(None),
                schema: schema.as_str().into(),
            },
            auth: auth(),
            command_api: CommandApiSettings {
                // Nothing listens there; no test of this file sends a command.
                url: "http://127.0.0.1:9".into(),
                timeout_ms: 1_000,
            },
            board: BoardSettings {
                poll_interval_ms: 100,
            },
            log: LogSettings {
                format: LogFormat::Pretty,
                filter: "warn".into(),
            },
        })
        .await
        .unwrap();
        let address = format!("http://{}", app.http_address());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            address,
            tokens: TokenAuthority::new(&auth()),
            _history_db: history_db,
            stop: Some(stop),
            server,
        }
    }

    /// A token for `subject` in `role`, of `store` for staff.
    pub fn token(&self, role: Role, subject: &str, store: Option<&str>) -> String {
        self.tokens
            .mint(subject, role, store, Duration::from_secs(600))
            .unwrap()
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
