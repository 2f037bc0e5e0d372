//! (a) The command path: the same order lifecycle on the same `Order` aggregate through plain
//! cqrs-es + postgres-es (the baseline), through cqrs-es on our event store, and through our
//! gRPC command API, each with the same number of concurrent clients for the same time; and the
//! ceiling of any gRPC call on that server: tonic's empty call.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_es::{CqrsFramework, EventStore};
use domain::{FixedMenu, Order, OrderServices};
use serde::Serialize;
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::api_flow::{ApiClients, CallObserver, Fate};
use crate::latency::{Latencies, LatencySummary};
use crate::order_flow::{completed_order, new_order_id};

/// postgres-es's tables, as its repository's `db/init.sql` creates them (the crate does not ship
/// a migration; the view table and demo rows of that file are left out).
const POSTGRES_ES_SCHEMA: [&str; 2] = [
    "CREATE TABLE events (
        aggregate_type text NOT NULL,
        aggregate_id   text NOT NULL,
        sequence       bigint CHECK (sequence >= 0) NOT NULL,
        event_type     text NOT NULL,
        event_version  text NOT NULL,
        payload        json NOT NULL,
        metadata       json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    "CREATE TABLE snapshots (
        aggregate_type   text NOT NULL,
        aggregate_id     text NOT NULL,
        last_sequence    bigint CHECK (last_sequence >= 0) NOT NULL,
        current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
        payload          json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
];

/// One path's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PathFigures {
    /// Which path.
    pub path: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Commands acknowledged.
    pub commands: u64,
    /// Failed commands.
    pub errors: u64,
    /// Wall time.
    pub seconds: f64,
    /// Commands (and events: one per command) per second.
    pub commands_per_second: f64,
    /// Latency of the acknowledged commands.
    pub latency: LatencySummary,
}

/// Creates postgres-es's tables in `pool`'s database (which must not hold our event store: both
/// use a table named `events`).
pub async fn create_baseline_schema(pool: &PgPool) -> Result<(), sqlx::Error> {
    for statement in POSTGRES_ES_SCHEMA {
        sqlx::query(statement).execute(pool).await?;
    }
    Ok(())
}

/// The baseline: cqrs-es's `PersistedEventStore` over postgres-es, no snapshots (an order has six
/// events; loading them all is what a snapshot would save).
pub async fn baseline(pool: PgPool, clients: usize, duration: Duration) -> PathFigures {
    let cqrs = postgres_es::postgres_cqrs(pool, vec![], services());
    run_cqrs(
        "cqrs-es + postgres-es (baseline)",
        Arc::new(cqrs),
        clients,
        duration,
    )
    .await
}

/// Aggregates our store keeps in memory on the direct path: the command API's default.
const AGGREGATE_CACHE: usize = 10_000;

/// The path name of [`empty_calls`].
pub const EMPTY_CALLS: &str = "tonic's empty-call ceiling";

/// cqrs-es on our event store (group commit, outbox, snapshots every 50, the aggregate cache),
/// without gRPC.
pub async fn event_store(
    store: &event_store::PgEventStore,
    clients: usize,
    duration: Duration,
) -> PathFigures {
    let store = store
        .aggregate_store::<Order>(vec![])
        .with_cache(AGGREGATE_CACHE);
    let cqrs = CqrsFramework::new(store, vec![], services());
    run_cqrs(
        "cqrs-es + our event store",
        Arc::new(cqrs),
        clients,
        duration,
    )
    .await
}

/// Our whole command path: gRPC, auth, parsing, idempotency keys, the executor, the event store.
/// The clients take turns over `channels` (see [`crate::api_flow::CLIENTS_PER_CONNECTION`]).
pub async fn grpc(
    channels: &[Channel],
    issuer: &auth_tokens::TokenIssuer,
    clients: usize,
    duration: Duration,
) -> PathFigures {
    let apis: Result<Vec<ApiClients>, _> = channels
        .iter()
        .map(|channel| ApiClients::new(channel.clone(), issuer))
        .collect();
    let apis = match apis {
        Ok(apis) if !apis.is_empty() => Arc::new(apis),
        _ => return failed_path("gRPC command API (ours)", clients),
    };
    let turn = Arc::new(AtomicUsize::new(0));
    drive(
        "gRPC command API (ours)",
        clients,
        duration,
        move |observer| {
            let mut api = apis[turn.fetch_add(1, Ordering::Relaxed) % apis.len()].clone();
            async move {
                let _ = api
                    .run_order(
                        Fate::OrderOnly,
                        "bench-store",
                        "bench-customer",
                        &observer,
                        |_, _| {},
                    )
                    .await;
            }
        },
    )
    .await
}

/// What any gRPC call costs on the command API's server: the standard health `Check` (a map
/// lookup, no database, no token), from the same clients over the same connections as
/// [`grpc`], one call per order step. The command path's share of it says how much of the
/// server's capacity its own work takes.
pub async fn empty_calls(channels: &[Channel], clients: usize, duration: Duration) -> PathFigures {
    let turn = Arc::new(AtomicUsize::new(0));
    let channels = Arc::new(channels.to_vec());
    drive(EMPTY_CALLS, clients, duration, move |observer| {
        let channel = channels[turn.fetch_add(1, Ordering::Relaxed) % channels.len()].clone();
        async move {
            let mut health = HealthClient::new(channel);
            let started = Instant::now();
            let outcome = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            observer.observe(
                "Check",
                started.elapsed(),
                outcome.map(|_| ()).map_err(|status| status.code()),
            );
        }
    })
    .await
}

fn services() -> OrderServices {
    OrderServices::new(Arc::new(FixedMenu::sample()))
}

fn failed_path(path: &str, clients: usize) -> PathFigures {
    PathFigures {
        path: path.to_owned(),
        clients,
        commands: 0,
        errors: 1,
        seconds: 0.0,
        commands_per_second: 0.0,
        latency: Latencies::default().summary(),
    }
}

async fn run_cqrs<ES>(
    path: &str,
    cqrs: Arc<CqrsFramework<Order, ES>>,
    clients: usize,
    duration: Duration,
) -> PathFigures
where
    ES: EventStore<Order> + 'static,
    ES::AC: Send,
{
    drive(path, clients, duration, move |observer| {
        let cqrs = cqrs.clone();
        async move {
            let id = new_order_id();
            let aggregate_id = id.to_string();
            for command in completed_order(id, "bench-store", "bench-customer") {
                let started = Instant::now();
                let outcome = cqrs.execute(&aggregate_id, command).await;
                let failed = outcome.is_err();
                observer.observe(
                    "order",
                    started.elapsed(),
                    outcome.map(|_| ()).map_err(|_| Code::Internal),
                );
                if failed {
                    return;
                }
            }
        }
    })
    .await
}

/// What every client of one path records.
#[derive(Clone, Default)]
struct PathObserver(Arc<Mutex<(Latencies, u64)>>);

impl CallObserver for PathObserver {
    fn observe(&self, _rpc: &'static str, elapsed: Duration, outcome: Result<(), Code>) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => guard.0.record(elapsed),
            Err(_) => guard.1 += 1,
        }
    }
}

/// Runs `order` in a loop on `clients` tasks until `duration` has passed (each finishes the order
/// it is in), then sums up.
async fn drive<F, Fut>(path: &str, clients: usize, duration: Duration, order: F) -> PathFigures
where
    F: Fn(PathObserver) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let observer = PathObserver::default();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let observer = observer.clone();
            let order = order.clone();
            tokio::spawn(async move {
                while started.elapsed() < duration {
                    order(observer.clone()).await;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (latencies, errors) = observer.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    PathFigures {
        path: path.to_owned(),
        clients,
        commands: latencies.count(),
        errors,
        seconds,
        commands_per_second: latencies.count() as f64 / seconds,
        latency: latencies.summary(),
    }
}
