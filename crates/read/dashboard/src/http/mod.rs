//! The dashboard's HTTP surface: the page ([`page`]) and the JSON read API ([`api`]), with
//! access rules ([`access`]) and errors ([`error`]) in one place each.

pub mod access;
pub mod api;
pub mod error;
pub mod page;

use std::sync::Arc;
use std::time::Instant;

use auth_tokens::TokenAuthority;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use service_kit::admin::HealthCheck;

use crate::advance::CommandApi;
use crate::history::OrderHistoryReader;
use crate::live::LiveBoards;
use crate::views::ActiveOrdersView;

/// What every handler reads.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Token verification.
    pub tokens: TokenAuthority,
    /// The DynamoDB view.
    pub view: ActiveOrdersView,
    /// The PostgreSQL history.
    pub history: OrderHistoryReader,
    /// The live boards.
    pub live: LiveBoards,
    /// The command API, for the advance buttons.
    pub commands: CommandApi,
}

/// The page, the API, and `/health` (the admin endpoint's check, here too because a load
/// balancer checks the port it sends traffic to; `/metrics` stays on the admin port).
pub fn router(state: Arc<AppState>, health: Arc<dyn HealthCheck>) -> Router {
    page::routes()
        .merge(api::routes(state))
        .route(
            "/health",
            get(move || async move {
                match health.check().await {
                    Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                    Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
                }
            }),
        )
        .layer(middleware::from_fn(record))
}

/// Counts requests by method and status, and times them (SSE streams are timed to their
/// first byte).
async fn record(request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("orderpipe_dashboard_http_requests_total", "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("orderpipe_dashboard_http_request_seconds")
        .record(started.elapsed().as_secs_f64());
    response
}
