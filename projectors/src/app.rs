//! The `projectors run` process: the worker plus the admin endpoint, built from settings.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use aws_config::SdkConfig;
use service_kit::admin;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use commit_log::projection::Projection;
use kinesis_consumer::Worker;
use read_models::settings::ReadModelDatabase;
use read_models::{
    ActiveOrdersProjection, AnalyticsProjection, HistoryProjection, SchemaName, SetupError,
};
use service_kit::settings::SettingsError;

use crate::metered::Metered;
use crate::settings::Settings;

/// Every read model this build runs, by name.
pub const PROJECTIONS: [&str; 3] = ["active_orders", "history", "analytics"];

/// Why the process could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad or missing settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// `runtime.projections` names a projection this build does not have.
    #[error("unknown projection {0:?} (this build has: active_orders, history, analytics)")]
    UnknownProjection(String),
    /// A read model's schema could not be prepared.
    #[error("cannot prepare the {projection} read model: {source}")]
    Setup {
        /// The projection.
        projection: &'static str,
        /// Why.
        source: SetupError,
    },
    /// The admin listener could not be bound.
    #[error(transparent)]
    Bind(#[from] service_kit::admin::BindError),
    /// The admin endpoint failed.
    #[error("admin endpoint failed: {0}")]
    Admin(#[source] std::io::Error),
}

/// Builds the read models `names` lists (all when empty), preparing the PostgreSQL schemas
/// (their migrations are safe to run at every start, from several processes). The DynamoDB
/// tables come from the deployment.
pub async fn build_projections(
    settings: &Settings,
    sdk: &SdkConfig,
    names: &[String],
) -> Result<Vec<Arc<dyn Projection>>, AppError> {
    let all: Vec<String> = PROJECTIONS.iter().map(|n| (*n).to_owned()).collect();
    let names = if names.is_empty() { &all[..] } else { names };
    let mut projections: Vec<Arc<dyn Projection>> = Vec::new();
    for name in names {
        match name.as_str() {
            "active_orders" => projections.push(Arc::new(
                ActiveOrdersProjection::following(
                    settings
                        .dynamodb
                        .views()
                        .active_orders_alias(aws_support::dynamodb(sdk)),
                )
                .with_inventory_marker(settings.dynamodb.inventory_marker),
            )),
            "history" => {
                let (pool, schema) = read_model_database("history", &settings.history)?;
                HistoryProjection::create_schema(&pool, &schema)
                    .await
                    .map_err(|source| AppError::Setup {
                        projection: "history",
                        source,
                    })?;
                projections.push(Arc::new(HistoryProjection::new(pool, schema)));
            }
            "analytics" => {
                let (pool, schema) = read_model_database("analytics", &settings.analytics)?;
                AnalyticsProjection::create_schema(&pool, &schema)
                    .await
                    .map_err(|source| AppError::Setup {
                        projection: "analytics",
                        source,
                    })?;
                projections.push(Arc::new(
                    AnalyticsProjection::new(pool, schema)
                        .with_flush(settings.analytics_flush.policy()),
                ));
            }
            other => return Err(AppError::UnknownProjection(other.to_owned())),
        }
    }
    Ok(projections)
}

fn read_model_database(
    projection: &'static str,
    database: &ReadModelDatabase,
) -> Result<(PgPool, SchemaName), AppError> {
    let schema = SchemaName::parse(&database.schema).map_err(|_| {
        SettingsError::Rejected(format!(
            "{projection}.schema must be a plain lowercase identifier"
        ))
    })?;
    Ok((database.database.pool()?, schema))
}

/// The projector process, built and bound, not yet running.
pub struct Application {
    worker: Worker,
    admin_listener: TcpListener,
}

impl Application {
    /// Builds the read models and the worker, and binds the admin listener.
    pub async fn build(settings: &Settings) -> Result<Self, AppError> {
        let config = settings.worker_config()?;
        let sdk = aws_support::sdk_config(&settings.aws).await;
        let projections = build_projections(settings, &sdk, &settings.projection_names())
            .await?
            .into_iter()
            .map(|projection| Arc::new(Metered::new(projection)) as Arc<dyn Projection>)
            .collect();
        let admin_listener =
            service_kit::admin::bind(&settings.admin.host, settings.admin.port).await?;
        Ok(Self {
            worker: Worker::new(&sdk, config, projections),
            admin_listener,
        })
    }

    /// The bound admin address (the real port when the settings said 0).
    pub fn admin_address(&self) -> Result<SocketAddr, AppError> {
        self.admin_listener.local_addr().map_err(AppError::Admin)
    }

    /// Runs until `shutdown` completes, then stops gracefully: current batches finish and are
    /// checkpointed, leases are released, and the admin endpoint stops last.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let (stop, stopped) = watch::channel(false);
        let admin = tokio::spawn(admin::serve(
            self.admin_listener,
            self.worker.health(),
            async move {
                let mut stopped = stopped;
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ));
        self.worker.run(shutdown).await;
        let _ = stop.send(true);
        match admin.await {
            Ok(result) => result.map_err(AppError::Admin),
            Err(join) => Err(AppError::Admin(std::io::Error::other(join))),
        }
    }
}
