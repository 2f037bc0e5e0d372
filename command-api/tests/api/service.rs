//! What every deployment relies on: gRPC health, reflection, metrics, graceful shutdown.

use command_api::auth::Role;
use futures::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::helpers::{http_get, new_order_id, place_order, spawn_app};

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

#[tokio::test]
async fn shutdown_finishes_in_flight_commands_then_refuses_new_connections() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(50).await;
    let in_flight: Vec<_> = (0..20)
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
    tokio::task::yield_now().await;
    let address = app.grpc_address;
    let database = app.database.clone();
    app.stop().await;

    // Whatever was acknowledged is stored; nothing acknowledged is missing.
    let mut acknowledged = 0;
    for call in in_flight {
        if call.await.unwrap().is_ok() {
            acknowledged += 1;
        }
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert!(
        stored >= acknowledged,
        "{stored} stored < {acknowledged} acknowledged"
    );
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still listening"
    );
}
