//! The admin HTTP endpoint: `/metrics` for Prometheus, `/health` for load balancers and
//! orchestrators (ready only while the event store's database answers).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    database: PgPool,
}

/// The admin routes.
pub fn router(metrics: PrometheusHandle, database: PgPool) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(health))
        .with_state(AdminState { metrics, database })
}

async fn render_metrics(State(state): State<AdminState>) -> String {
    state.metrics.render()
}

async fn health(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    let ping = sqlx::query("SELECT 1").execute(&state.database);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n"),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "event store database unreachable\n",
        ),
    }
}
