//! Builds the application from settings and runs it until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use domain::inventory::StoreInventory;
use domain::loyalty::LoyaltyAccount;
use domain::order::OrderServices;
use domain::{Menu, Order};
use event_store::{PgEventStore, StoreConfig};
use proto::v1::inventory_service_server::InventoryServiceServer;
use proto::v1::loyalty_service_server::LoyaltyServiceServer;
use proto::v1::menu_service_server::MenuServiceServer;
use proto::v1::order_history_service_server::OrderHistoryServiceServer;
use proto::v1::order_service_server::OrderServiceServer;
use proto::v1::subscription_service_server::SubscriptionServiceServer;
use read_models::{HistoryQueries, SchemaName};
use service_kit::grpc_tls::GrpcTlsError;
use service_kit::{admin, trace_context};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::auth::TokenAuthority;
use crate::call::CORRELATION_HEADER;
use crate::commit_feed::CommitFeed;
use crate::deadline::Deadline;
use crate::executor::{AggregateLocks, CommandExecutor};
use crate::grpc::{
    Api, InventoryGrpc, LoyaltyGrpc, MenuGrpc, OrderHistoryGrpc, OrdersGrpc, SubscriptionsGrpc,
};
use crate::health::CommandApiHealth;
use crate::menu_catalog::StoredMenu;
use crate::settings::{Settings, SettingsError};

/// How many per-aggregate lock stripes a process keeps.
const LOCK_STRIPES: usize = 1024;
/// How stale the menu used for pricing may be.
const MENU_MAX_AGE: Duration = Duration::from_secs(1);

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// The event store could not be opened (database unreachable, migration failed).
    #[error("cannot open the event store: {0}")]
    Store(#[from] event_store::StoreError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] service_kit::admin::BindError),
    /// The TLS files in `grpc.tls` are missing, unreadable or do not belong together.
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] GrpcTlsError),
    /// tonic refused the TLS configuration.
    #[error("cannot serve TLS: grpc.tls refused")]
    TlsRefused(#[source] tonic::transport::Error),
    /// The issuer's public keys could not be loaded: no token could be verified.
    #[error("cannot load the token keys: {0}")]
    TokenKeys(#[from] auth_tokens::JwksError),
}

/// The command API, built and bound, not yet serving.
pub struct Application {
    settings: Settings,
    api: Arc<Api>,
    store: PgEventStore,
    grpc_server: Server,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
}

impl Application {
    /// Opens the event store (applying migrations), wires the services and binds both listeners.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // First: a bad certificate stops the start before the database is touched.
        let grpc_server = grpc_server(&settings)?;
        let tokens = TokenAuthority::connect(&settings.auth).await?;
        let store = PgEventStore::open(
            settings.database.pool()?,
            StoreConfig {
                snapshot_every: settings.store.snapshot_every,
                group_commit: settings.store.group_commit(),
            },
        )
        .await?;
        let locks = Arc::new(AggregateLocks::new(LOCK_STRIPES));
        let retries = settings.store.conflict_retries;
        let cache = settings.store.aggregate_cache;
        let menu = store
            .aggregate_store::<Menu>(vec![])
            .with_snapshot_version(Menu::SNAPSHOT_VERSION)
            .with_cache(cache);
        let pricing = OrderServices::new(Arc::new(StoredMenu::new(menu.clone(), MENU_MAX_AGE)));
        let api = Arc::new(Api {
            orders: CommandExecutor::new(
                store
                    .aggregate_store::<Order>(vec![])
                    .with_snapshot_version(Order::SNAPSHOT_VERSION)
                    .with_cache(cache),
                pricing,
                locks.clone(),
                retries,
            ),
            inventory: CommandExecutor::new(
                store
                    .aggregate_store::<StoreInventory>(vec![])
                    .with_snapshot_version(StoreInventory::SNAPSHOT_VERSION)
                    .with_cache(cache),
                (),
                locks.clone(),
                retries,
            ),
            loyalty: CommandExecutor::new(
                store
                    .aggregate_store::<LoyaltyAccount>(vec![])
                    .with_snapshot_version(LoyaltyAccount::SNAPSHOT_VERSION)
                    .with_cache(cache),
                (),
                locks.clone(),
                retries,
            ),
            menu: CommandExecutor::new(menu, (), locks, retries),
            tokens,
            history: HistoryQueries::new(
                settings.history.database.pool()?,
                SchemaName::parse(&settings.history.schema).map_err(|error| {
                    StartupError::Settings(SettingsError::Rejected(format!(
                        "history.schema (ORDERPIPE_HISTORY__SCHEMA): {error}"
                    )))
                })?,
            ),
            feed: CommitFeed::new(store.clone()),
        });
        let grpc_listener = admin::bind(&settings.grpc.host, settings.grpc.port).await?;
        let admin_listener = admin::bind(&settings.admin.host, settings.admin.port).await?;
        Ok(Self {
            settings,
            api,
            store,
            grpc_server,
            grpc_listener,
            admin_listener,
        })
    }

    /// The bound gRPC address (its port is the real one when the settings said 0).
    pub fn grpc_address(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound admin HTTP address.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops taking requests, reports NOT_SERVING, and
    /// waits up to the configured grace period for in-flight commands.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<OrderServiceServer<OrdersGrpc>>().await;
        health
            .set_serving::<InventoryServiceServer<InventoryGrpc>>()
            .await;
        health
            .set_serving::<LoyaltyServiceServer<LoyaltyGrpc>>()
            .await;
        health.set_serving::<MenuServiceServer<MenuGrpc>>().await;
        health
            .set_serving::<OrderHistoryServiceServer<OrderHistoryGrpc>>()
            .await;
        health
            .set_serving::<SubscriptionServiceServer<SubscriptionsGrpc>>()
            .await;
        // Both reflection versions: v1 for current clients, v1alpha for the many tools (grpcurl,
        // Python's grpcio-reflection) that still ask for it.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(std::io::Error::other)?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(std::io::Error::other)?;

        let max_message = self.settings.grpc.max_message_bytes;
        // Not `Server::timeout`: it answers CANCELLED. See `deadline`.
        let limit = self.settings.grpc.request_timeout();
        let api = self.api;
        let grpc = self
            .grpc_server
            .trace_fn(|request| {
                let correlation_id = request
                    .headers()
                    .get(CORRELATION_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                // Calls without the header get an id generated in `Call`, recorded then.
                let span = tracing::info_span!(
                    "grpc",
                    rpc = %request.uri().path(),
                    correlation_id = tracing::field::Empty,
                    otel.name = %request.uri().path(),
                    otel.kind = "server",
                );
                if !correlation_id.is_empty() {
                    span.record("correlation_id", correlation_id);
                }
                // The caller's trace (a flow's step, a client's request) goes on here; the
                // commit stores this span's context (`Call::metadata`).
                if let Some(traceparent) = request
                    .headers()
                    .get(trace_context::TRACEPARENT)
                    .and_then(|value| value.to_str().ok())
                {
                    trace_context::continue_trace(&span, traceparent);
                }
                span
            })
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(Deadline::new(
                OrderServiceServer::new(OrdersGrpc::new(api.clone()))
                    .max_decoding_message_size(max_message),
                limit,
            ))
            .add_service(Deadline::new(
                InventoryServiceServer::new(InventoryGrpc::new(api.clone()))
                    .max_decoding_message_size(max_message),
                limit,
            ))
            .add_service(Deadline::new(
                LoyaltyServiceServer::new(LoyaltyGrpc::new(api.clone()))
                    .max_decoding_message_size(max_message),
                limit,
            ))
            .add_service(Deadline::new(
                OrderHistoryServiceServer::new(OrderHistoryGrpc::new(api.clone()))
                    .max_decoding_message_size(max_message),
                limit,
            ))
            .add_service(Deadline::new(
                MenuServiceServer::new(MenuGrpc::new(api.clone()))
                    .max_decoding_message_size(max_message),
                limit,
            ))
            // The deadline bounds opening the stream (checks and the first read), not its life.
            .add_service(Deadline::new(
                SubscriptionServiceServer::new(SubscriptionsGrpc::new(api.clone()))
                    .max_decoding_message_size(max_message),
                limit,
            ))
            // Without TCP_NODELAY (which `serve_with_incoming` leaves to the incoming stream),
            // Nagle's algorithm holds small responses for the peer's delayed ACK: ~40 ms tails.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.grpc_listener).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            );

        // Prunes expired idempotency keys in the background; stops with the servers.
        let pruner = tokio::spawn({
            let store = self.store.clone();
            let retention = self.settings.idempotency.retention();
            let stop = stopped(stop_rx.clone());
            async move { store.run_key_pruner(retention, stop).await }
        });

        let admin = admin::serve(
            self.admin_listener,
            Arc::new(CommandApiHealth::new(self.store.clone())),
            stopped(stop_rx),
        );

        let grace = self.settings.grpc.shutdown_grace();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            for service in [
                "orderpipe.v1.OrderService",
                "orderpipe.v1.InventoryService",
                "orderpipe.v1.LoyaltyService",
                "orderpipe.v1.MenuService",
                "orderpipe.v1.OrderHistoryService",
                "orderpipe.v1.SubscriptionService",
            ] {
                health
                    .set_service_status(service, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            let _ = stop_tx.send(true);
            // Open streams end now (UNAVAILABLE, with where to resume) instead of holding the
            // server open for the whole grace period.
            api.feed.close();
            // Returns only when the grace period is over: whichever finishes first wins below.
            tokio::time::sleep(grace).await;
        };

        tokio::select! {
            result = async { tokio::try_join!(
                async { grpc.await.map_err(std::io::Error::other) },
                admin,
            ) } => { result?; }
            () = signal => {
                tracing::warn!("grace period over; dropping requests still in flight");
            }
        }
        pruner.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// The gRPC server: TLS (and mTLS) as `grpc.tls` says, checked before anything listens, or
/// plaintext when it says nothing.
fn grpc_server(settings: &Settings) -> Result<Server, StartupError> {
    let tls = &settings.grpc.tls;
    match tls.server_config("grpc.tls")? {
        None => {
            tracing::info!("gRPC is plaintext (grpc.tls is not set)");
            Ok(Server::builder())
        }
        Some(config) => {
            tracing::info!(
                client_certificates_required = tls.requires_client_certificates(),
                "gRPC serves TLS"
            );
            Server::builder()
                .tls_config(config)
                .map_err(StartupError::TlsRefused)
        }
    }
}

/// Completes once the stop flag is raised.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
