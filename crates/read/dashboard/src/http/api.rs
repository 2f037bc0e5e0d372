//! The JSON read API over the views, the live stream and the advance command:
//!
//! | route | returns |
//! |---|---|
//! | `GET /api/me` | who the token is for: `subject`, `role`, `store_id` |
//! | `GET /api/stores/{store}/board` | the whole board (orders by column, metrics, warnings) |
//! | `GET /api/stores/{store}/orders` | open orders by column (`pending`, `preparing`, `ready`) |
//! | `GET /api/stores/{store}/metrics` | today's figures (UTC day), with per-barista figures and the store's p90 wait (history) |
//! | `GET /api/stores/{store}/stock-warnings` | low-stock SKUs |
//! | `GET /api/stores/{store}/reorders` | open reorders: purchase orders awaiting their delivery |
//! | `GET /api/stores/{store}/events` | server-sent events: `board` on every change, `unavailable`, `expired` (then the stream ends) |
//! | `GET /api/orders/{id}/history` | the order's lines and timeline, from the history |
//! | `POST /api/orders/{id}/advance` | `{"step": "start_preparing" \| "mark_ready" \| "complete"}` |
//!
//! Every route takes `Authorization: Bearer <token>`; store routes answer 401 without a valid
//! token, 403 for anyone but the store's staff, 404 for a store the view does not know.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use auth_tokens::Principal;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::StoreId;
use futures::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::access::{caller, caller_until, require_staff, require_staff_of, store_of};
use super::error::HttpError;
use super::AppState;
use crate::advance::Step;
use crate::board::{Board, DayMetrics, OpenReorder, OrdersByColumn, StockWarning};
use crate::history::OrderHistory;
use crate::live::Update;
use crate::performance::{PerformanceReader, StorePerformance};

type Shared = State<Arc<AppState>>;

/// The API routes.
pub fn routes(state: Arc<AppState>) -> axum::Router {
    Router::new()
        .route("/api/me", get(me))
        .route("/api/stores/{store}/board", get(board))
        .route("/api/stores/{store}/orders", get(orders))
        .route("/api/stores/{store}/metrics", get(day_metrics))
        .route("/api/stores/{store}/stock-warnings", get(stock_warnings))
        .route("/api/stores/{store}/reorders", get(open_reorders))
        .route("/api/stores/{store}/events", get(events))
        .route("/api/orders/{order_id}/history", get(history))
        .route("/api/orders/{order_id}/advance", post(advance))
        .with_state(state)
}

async fn me(State(state): Shared, headers: HeaderMap) -> Result<Json<Value>, HttpError> {
    let principal = caller(&state.tokens, &headers)?;
    let store = store_of(&principal).map(ToString::to_string);
    let name = match &principal {
        Principal::Barista { name, .. }
        | Principal::StoreManager { name, .. }
        | Principal::Service(name) => name.clone(),
        Principal::Customer(id) => id.to_string(),
    };
    Ok(Json(json!({
        "subject": name,
        "role": principal.role().to_string(),
        "store_id": store,
    })))
}

/// The store in the path, if the caller works there and the view knows it.
async fn known_store_of_staff(
    state: &AppState,
    headers: &HeaderMap,
    store: &str,
) -> Result<StoreId, HttpError> {
    let principal = caller(&state.tokens, headers)?;
    known_store_of(state, &principal, store).await
}

/// `store`, if the view knows it and `principal` is its staff.
async fn known_store_of(
    state: &AppState,
    principal: &Principal,
    store: &str,
) -> Result<StoreId, HttpError> {
    let store = StoreId::parse(store)
        .map_err(|error| HttpError::BadRequest(format!("store id: {error}")))?;
    require_staff_of(principal, &store)?;
    if !state.view.store_known(&store).await? {
        return Err(HttpError::UnknownStore(store));
    }
    Ok(store)
}

/// A board with the server's time, so the page's age timers do not depend on the tablet's
/// clock being right.
#[derive(Debug, Serialize)]
struct Stamped<'a> {
    generated_at: String,
    board: &'a Board,
}

fn stamped(board: &Board) -> Value {
    json!(Stamped {
        generated_at: crate::now_rfc3339(),
        board,
    })
}

async fn board(
    State(state): Shared,
    headers: HeaderMap,
    Path(store): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let store = known_store_of_staff(&state, &headers, &store).await?;
    let board = state.view.board(&store, &crate::today()).await?;
    Ok(Json(stamped(&board)))
}

async fn orders(
    State(state): Shared,
    headers: HeaderMap,
    Path(store): Path<String>,
) -> Result<Json<OrdersByColumn>, HttpError> {
    let store = known_store_of_staff(&state, &headers, &store).await?;
    Ok(Json(state.view.open_orders(&store).await?))
}

/// The day's figures from the view, and its performance from the history.
#[derive(Debug, Serialize)]
struct StoreMetrics {
    #[serde(flatten)]
    day: DayMetrics,
    #[serde(flatten)]
    performance: StorePerformance,
}

async fn day_metrics(
    State(state): Shared,
    headers: HeaderMap,
    Path(store): Path<String>,
) -> Result<Json<StoreMetrics>, HttpError> {
    let store = known_store_of_staff(&state, &headers, &store).await?;
    let today = crate::today();
    let performance = PerformanceReader::new(state.history.clone());
    let (day, performance) = tokio::join!(
        state.view.day_metrics(&store, &today),
        performance.day(store.as_str(), &today),
    );
    Ok(Json(StoreMetrics {
        day: day?,
        performance: performance?,
    }))
}

async fn open_reorders(
    State(state): Shared,
    headers: HeaderMap,
    Path(store): Path<String>,
) -> Result<Json<Vec<OpenReorder>>, HttpError> {
    let store = known_store_of_staff(&state, &headers, &store).await?;
    Ok(Json(state.view.open_reorders(&store).await?))
}

async fn stock_warnings(
    State(state): Shared,
    headers: HeaderMap,
    Path(store): Path<String>,
) -> Result<Json<Vec<StockWarning>>, HttpError> {
    let store = known_store_of_staff(&state, &headers, &store).await?;
    Ok(Json(state.view.stock_warnings(&store).await?))
}

/// Server-sent events of a store's board: the current board at once, then every change,
/// until the token stops being accepted: then an `expired` event, and the stream ends (the
/// page's reconnection is then refused with 401 and it asks for a new sign-in).
///
/// The page reads this with `fetch` (not `EventSource`, which cannot send an `Authorization`
/// header), so the token never appears in a URL, a server log or the browser history.
async fn events(
    State(state): Shared,
    headers: HeaderMap,
    Path(store): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    let (principal, accepted_until) = caller_until(&state.tokens, &headers)?;
    let store = known_store_of(&state, &principal, &store).await?;
    let mut updates = state.live.watch(&store);
    // The first `changed` returns at once with whatever the poller already has.
    updates.mark_changed();
    let left = accepted_until
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let expiry = Box::pin(tokio::time::sleep(left));
    let stream = stream::unfold(Some((updates, expiry)), |live| async move {
        let (mut updates, mut expiry) = live?;
        loop {
            let changed = tokio::select! {
                () = &mut expiry => {
                    metrics::counter!("orderpipe_dashboard_streams_expired_total").increment(1);
                    let event = Event::default().event("expired").data(
                        json!({ "message": "your token expired: sign in again" }).to_string(),
                    );
                    // Sent, then the stream ends.
                    return Some((Ok(event), None));
                }
                changed = updates.changed() => changed,
            };
            // Ends when the poller stops (shutdown), which ends the response.
            changed.ok()?;
            let update = updates.borrow_and_update().clone();
            let event = match update {
                None => continue,
                Some(Update::Board(board)) => Event::default()
                    .event("board")
                    .data(stamped(&board).to_string()),
                Some(Update::Unavailable) => Event::default().event("unavailable").data(
                    json!({ "message": "the board's view cannot be read right now" }).to_string(),
                ),
            };
            return Some((Ok(event), Some((updates, expiry))));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn order_id(path: &str) -> Result<Uuid, HttpError> {
    Uuid::parse_str(path)
        .map_err(|_| HttpError::BadRequest(format!("order id {path:?} is not a UUID")))
}

async fn history(
    State(state): Shared,
    headers: HeaderMap,
    Path(order): Path<String>,
) -> Result<Json<OrderHistory>, HttpError> {
    let principal = caller(&state.tokens, &headers)?;
    let order_id = order_id(&order)?;
    let history = state
        .history
        .order(order_id)
        .await?
        .ok_or_else(|| HttpError::UnknownOrder(order_id.to_string()))?;
    let store = StoreId::parse(&history.store_id)
        .map_err(|error| HttpError::ViewUnavailable(Box::new(error)))?;
    require_staff_of(&principal, &store)?;
    Ok(Json(history))
}

/// The body of an advance request.
#[derive(Debug, Deserialize)]
struct AdvanceRequest {
    step: Step,
}

async fn advance(
    State(state): Shared,
    headers: HeaderMap,
    Path(order): Path<String>,
    body: Result<Json<AdvanceRequest>, JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let principal = caller(&state.tokens, &headers)?;
    let order_id = order_id(&order)?;
    let Json(AdvanceRequest { step }) = body.map_err(|rejection| {
        HttpError::BadRequest(format!(
            "expected {{\"step\": \"start_preparing\" | \"mark_ready\" | \"complete\"}}: {}",
            rejection.body_text()
        ))
    })?;
    // Only staff have a board; whether the order is in their store is the command API's
    // check (it reads the order), answered as 403 like every other refusal of it.
    require_staff(&principal)?;
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let outcome = state.commands.advance(authorization, order_id, step).await;
    let label = match &outcome {
        Ok(_) => "ok".to_owned(),
        Err(status) => format!("{:?}", status.code()),
    };
    metrics::counter!("orderpipe_dashboard_advance_total", "step" => step.as_str(), "outcome" => label)
        .increment(1);
    let advanced = outcome.map_err(HttpError::Refused)?;
    Ok(Json(json!({
        "order_id": order_id,
        "step": step.as_str(),
        "event_types": advanced.event_types,
        "replayed": advanced.replayed,
    })))
}
