//! What every deployment relies on: gRPC health, reflection, metrics, graceful shutdown.

use std::time::{Duration, Instant};

use command_api::auth::Role;
use futures::StreamExt;
use proto::v1::order_service_client::OrderServiceClient;
use sqlx::{Connection, PgConnection};
use test_support::TestDatabase;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::helpers::{http_get, new_order_id, place_order, spawn_app, spawn_app_with, Options};

#[tokio::test]
async fn health_reflection_and_metrics_answer() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;

    let health = HealthClient::new(app.channel())
        .check(HealthCheckRequest {
            service: "orderpipe.v1.OrderService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    // A generic client discovers the services through reflection.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(app.channel())
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(response)) = responses.next().await else {
        panic!("no reflection response");
    };
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "orderpipe.v1.OrderService",
        "orderpipe.v1.InventoryService",
        "orderpipe.v1.LoyaltyService",
        "orderpipe.v1.MenuService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&service.to_owned()),
            "{service} missing from {services:?}"
        );
    }

    app.orders(Role::Customer, "c-1")
        .place_order(place_order("m", &new_order_id(), "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap();
    let (status, metrics) = http_get(app.admin_address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"orderpipe_command_duration_seconds_count{rpc="PlaceOrder",outcome="committed"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("orderpipe_store_commit_batch_size"),
        "{metrics}"
    );
    app.stop().await;
}

/// Sessions of `database` waiting for a lock.
async fn sessions_waiting_for_a_lock(database: &TestDatabase) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&database.pool)
    .await
    .unwrap()
}

/// Waits until `condition` holds, polling; panics with `what` after ten seconds.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_commands_then_refuses_new_connections() {
    const IN_FLIGHT: usize = 5;
    let app = spawn_app_with(Options {
        // Room for the steps below on a busy machine; the commands finish in milliseconds.
        shutdown_grace_ms: Some(10_000),
        ..Options::default()
    })
    .await;
    app.seed_menu_and_stock(50).await;
    let before = app.event_count().await;

    // Every command loads its aggregate (and the menu) from the snapshots table first: with
    // that table locked, each one waits inside the server on a connection of its own, where
    // pg_stat_activity counts it.
    let mut holder = PgConnection::connect(&app.database.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let in_flight: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let mut customer = app.orders(Role::Customer, "c-1");
            tokio::spawn(async move {
                customer
                    .place_order(place_order(
                        &format!("k{i}"),
                        &new_order_id(),
                        "c-1",
                        &[("LATTE-12", 1)],
                    ))
                    .await
            })
        })
        .collect();
    wait_until("every command is in flight, held by the lock", || async {
        sessions_waiting_for_a_lock(&app.database).await == IN_FLIGHT as i64
    })
    .await;

    let address = app.grpc_address;
    let database = app.database.clone();
    let stopping = tokio::spawn(app.stop());
    wait_until("the listener is closed", || async {
        tokio::net::TcpStream::connect(address).await.is_err()
    })
    .await;
    // A new client dials a new connection, which nobody accepts any more. (A call sent on
    // the draining connection races its GOAWAY: hyper may answer it CANCELLED, which the
    // command clients retry with the same key.)
    let mut newcomer = OrderServiceClient::new(
        Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy(),
    );
    let refused = newcomer
        .place_order(place_order(
            "late",
            &new_order_id(),
            "c-2",
            &[("LATTE-12", 1)],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the commands in flight"
    );

    // The commands in flight go on once the lock is released, within the grace period.
    holder.close().await.unwrap();
    for call in in_flight {
        let placed = call.await.unwrap().expect("an in-flight command completes");
        assert!(!placed.into_inner().commit.unwrap().replayed);
    }
    stopping.await.unwrap();
    let stored = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(
        stored - before,
        IN_FLIGHT as i64,
        "every acknowledged command is stored, the refused one is not"
    );
}
