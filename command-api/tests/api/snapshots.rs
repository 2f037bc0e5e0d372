//! Snapshots through the real server (the test app snapshots every 3 events).

use command_api::auth::Role;
use proto::v1 as pb;
use tonic::Code;

use crate::helpers::{metric_value, new_order_id, spawn_app, STORE};

#[tokio::test]
async fn an_inventory_snapshot_from_before_closed_reservations_does_not_let_an_order_reserve_twice()
{
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let mut manager = app.inventory(Role::StoreManager, "manager");
    let order_id = new_order_id();
    let reserve = |key: &str| pb::ReserveStockRequest {
        idempotency_key: key.into(),
        store_id: STORE.into(),
        order_id: order_id.clone(),
        lines: vec![pb::StockLine {
            sku: "LATTE-12".into(),
            quantity: 1,
        }],
    };
    manager.reserve_stock(reserve("reserve-1")).await.unwrap();
    manager
        .release_reservation(pb::ReleaseReservationRequest {
            idempotency_key: "release-1".into(),
            store_id: STORE.into(),
            order_id: order_id.clone(),
            reason: "order cancelled".into(),
        })
        .await
        .unwrap();
    // Crosses the snapshot boundary at 6 events: the snapshot remembers the closed reservation.
    manager
        .restock(pb::RestockRequest {
            idempotency_key: "restock-1".into(),
            store_id: STORE.into(),
            sku: "MOCHA-16".into(),
            quantity: 1,
        })
        .await
        .unwrap();
    let snapshot_at: i64 =
        sqlx::query_scalar("SELECT version FROM snapshots WHERE aggregate_type = 'inventory'")
            .fetch_one(&app.database.pool)
            .await
            .unwrap();
    assert_eq!(snapshot_at, 6);

    // What the build before StoreInventory remembered closed reservations snapshotted: the same
    // state without the list, under schema version 1.
    sqlx::query(
        "UPDATE snapshots SET schema_version = 1, payload = payload - 'closed_reservations'
         WHERE aggregate_type = 'inventory'",
    )
    .execute(&app.database.pool)
    .await
    .unwrap();

    // Trusted, that snapshot would let the order reserve again; replayed, the release is seen.
    let status = manager
        .reserve_stock(reserve("reserve-2"))
        .await
        .expect_err("the order's reservation was released");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let ignored = metric_value(
        app.admin_address,
        r#"orderpipe_store_snapshots_ignored_total{aggregate_type="inventory",reason="schema_version"}"#,
    )
    .await;
    assert!(
        ignored >= Some(1.0),
        "the ignored snapshot is counted: {ignored:?}"
    );
    app.stop().await;
}
