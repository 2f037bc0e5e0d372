//! The admin HTTP endpoint: `/metrics` for Prometheus, `/health` for load balancers and
//! orchestrators (200 while the process's dependencies answer, 503 with the reason otherwise).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

/// What `/health` asks: `Ok` when the process can do its work, else why not.
pub trait HealthCheck: Send + Sync + 'static {
    /// Checks the dependencies.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Healthy while the database answers `SELECT 1` within two seconds.
pub struct DatabaseHealth(pub PgPool);

impl HealthCheck for DatabaseHealth {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let ping = sqlx::query("SELECT 1").execute(&self.0);
            match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => Ok(()),
                _ => Err("database unreachable".to_owned()),
            }
        })
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    health: Arc<dyn HealthCheck>,
}

/// The admin routes.
pub fn router(metrics: PrometheusHandle, health: Arc<dyn HealthCheck>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(health_status))
        .with_state(AdminState { metrics, health })
}

async fn render_metrics(State(state): State<AdminState>) -> String {
    state.metrics.render()
}

async fn health_status(State(state): State<AdminState>) -> (StatusCode, String) {
    match state.health.check().await {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {address}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub address: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds `host:port` (port 0 picks a free one; the listener knows which).
pub async fn bind(host: &str, port: u16) -> Result<tokio::net::TcpListener, BindError> {
    let address = format!("{host}:{port}");
    tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| BindError { address, source })
}

/// Serves the admin routes on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<dyn HealthCheck>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(crate::telemetry::metrics_handle(), health))
        .with_graceful_shutdown(shutdown)
        .await
}
