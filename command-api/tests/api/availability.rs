//! PostgreSQL going away and coming back.

use command_api::auth::Role;
use tonic::Code;

use crate::helpers::{http_get, new_order_id, place_order, spawn_app_with, Options};

#[tokio::test]
async fn commands_get_unavailable_while_postgres_is_unreachable_and_succeed_after() {
    let app = spawn_app_with(Options {
        through_proxy: true,
        ..Options::default()
    })
    .await;
    app.seed_menu_and_stock(10).await;
    let proxy = app.proxy.as_ref().unwrap();
    let mut customer = app.orders(Role::Customer, "c-1");
    let order_id = new_order_id();
    let request = place_order("during-outage", &order_id, "c-1", &[("LATTE-12", 1)]);

    proxy.cut();
    let status = customer.place_order(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{}", status.message());
    let (health, _) = http_get(app.admin_address, "/health").await;
    assert_eq!(health, 503);

    proxy.restore();
    // The client retries with the same key, as it was told to.
    let placed = customer.place_order(request).await.unwrap().into_inner();
    assert_eq!(placed.commit.unwrap().aggregate_id, order_id);
    let (health, _) = http_get(app.admin_address, "/health").await;
    assert_eq!(health, 200);
    app.stop().await;
}
