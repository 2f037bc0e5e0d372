//! Builds the dashboard from settings and runs it until told to stop.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use auth_tokens::TokenAuthority;
use read_models::{SchemaName, SetupError, ViewAlias};
use service_kit::admin::{self, HealthCheck};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::advance::{CommandApi, InvalidUrl};
use crate::history::OrderHistoryReader;
use crate::http::{self, AppState};
use crate::live::LiveBoards;
use crate::settings::{Settings, SettingsError};
use crate::views::{live_tables, ActiveOrdersView};

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// `history.schema` is not a schema name.
    #[error("history.schema: {0}")]
    Schema(#[from] SetupError),
    /// `command_api.url` is not a URL.
    #[error(transparent)]
    CommandApi(#[from] InvalidUrl),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] admin::BindError),
    /// `auth.jwks_url` can never name a JWKS (empty, or not a URL).
    #[error("auth.jwks_url: {0}")]
    TokenKeys(#[from] auth_tokens::JwksError),
}

/// The dashboard, built and bound, not yet serving.
pub struct Application {
    state: Arc<AppState>,
    alias: ViewAlias,
    http_listener: TcpListener,
    admin_listener: TcpListener,
    stop: watch::Sender<bool>,
}

impl Application {
    /// Wires the view readers and the command API client and binds both listeners. Nothing is
    /// contacted yet: the dashboard starts while its dependencies are down and `/health` says so.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let sdk = aws_support::sdk_config(&settings.aws).await;
        let dynamodb = aws_support::dynamodb(&sdk);
        let alias = settings.dynamodb.active_orders_alias(dynamodb);
        let view = ActiveOrdersView::new(alias.clone());
        let history = OrderHistoryReader::new(
            settings.history.database.pool()?,
            SchemaName::parse(&settings.history.schema)?,
        );
        let tokens = TokenAuthority::start(&settings.auth).await?;
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(AppState {
            tokens,
            live: LiveBoards::new(view.clone(), settings.board.poll_interval(), stopped),
            view,
            history,
            commands: CommandApi::connect_lazy(
                &settings.command_api.url,
                &settings.command_api.tls,
                Duration::from_millis(settings.command_api.timeout_ms),
            )?,
        });
        let http_listener = admin::bind(&settings.http.host, settings.http.port).await?;
        let admin_listener = admin::bind(&settings.admin.host, settings.admin.port).await?;
        Ok(Self {
            state,
            alias,
            http_listener,
            admin_listener,
            stop,
        })
    }

    /// The bound address of the page and the API (its port is the real one when the settings
    /// said 0).
    pub fn http_address(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The live boards (their pollers, counted).
    pub fn live_boards(&self) -> LiveBoards {
        self.state.live.clone()
    }

    /// The bound admin address.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops the pollers (which ends every live
    /// stream), finishes the requests in flight and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = self.stop;
        let stopped = |mut receiver: watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        };
        let health: Arc<dyn HealthCheck> = Arc::new(ViewsHealth {
            alias: self.alias,
            history: self.state.history.pool().clone(),
            tokens: self.state.tokens.clone(),
        });
        let web = axum::serve(
            self.http_listener,
            http::router(self.state.clone(), health.clone()),
        )
        .with_graceful_shutdown(stopped(stop.subscribe()))
        .into_future();
        let admin = admin::serve(self.admin_listener, health, stopped(stop.subscribe()));
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: ending live streams and requests in flight");
            let _ = stop.send(true);
        };
        let (web, admin, ()) = tokio::join!(web, admin, signal);
        web?;
        admin?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Healthy while the issuer's token keys are loaded and both views answer: the DynamoDB orders
/// table (its live name) and the history database, each within two seconds.
struct ViewsHealth {
    alias: ViewAlias,
    history: PgPool,
    /// Without the issuer's keys no request can be authorised, however healthy the views are.
    tokens: TokenAuthority,
}

impl HealthCheck for ViewsHealth {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if !self.tokens.keys_loaded() {
                return Err(
                    "the token issuer's keys (auth.jwks_url) are not loaded yet: \
                            no token can be verified"
                        .to_owned(),
                );
            }
            let dynamodb = async {
                let tables = live_tables(&self.alias)
                    .await
                    .map_err(|error| error.to_string())?;
                self.alias
                    .client()
                    .describe_table()
                    .table_name(&tables.orders)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|_| format!("DynamoDB table {} unreachable", tables.orders))
            };
            let history = async {
                sqlx::query("SELECT 1")
                    .execute(&self.history)
                    .await
                    .map(|_| ())
                    .map_err(|_| "history database unreachable".to_owned())
            };
            let within = Duration::from_secs(2);
            let timed_out = |what: &str| format!("{what} did not answer within 2 s");
            let (dynamodb, history) = tokio::join!(
                tokio::time::timeout(within, dynamodb),
                tokio::time::timeout(within, history),
            );
            dynamodb.map_err(|_| timed_out("DynamoDB"))??;
            history.map_err(|_| timed_out("the history database"))??;
            Ok(())
        })
    }
}
