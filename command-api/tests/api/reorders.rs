//! Reorders through the API: low stock opens one numbered reorder per SKU, a repeated low-stock
//! crossing orders nothing more, `ReceiveDelivery` restocks against the reorder and closes it,
//! and a bad delivery is refused with its reason and changes nothing.

use command_api::auth::Role;
use proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{new_order_id, spawn_app, TestApp, STORE};

fn delivery(
    key: &str,
    reorder_number: u64,
    sku: &str,
    quantity: u32,
) -> pb::ReceiveDeliveryRequest {
    pb::ReceiveDeliveryRequest {
        idempotency_key: key.into(),
        store_id: STORE.into(),
        reorder_number,
        sku: sku.into(),
        quantity,
    }
}

/// Reserves `quantity` of LATTE-12 for a new order, as the saga does; the event types committed.
async fn reserve_lattes(app: &TestApp, quantity: u32) -> Vec<String> {
    let order = new_order_id();
    app.inventory(Role::Service, "flows-order-saga")
        .reserve_stock(pb::ReserveStockRequest {
            idempotency_key: format!("reserve-{order}"),
            store_id: STORE.into(),
            order_id: order,
            lines: vec![pb::StockLine {
                sku: "LATTE-12".into(),
                quantity,
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .event_types
}

/// The gRPC code and the `ErrorInfo` reason of a refused call.
fn refusal<T: std::fmt::Debug>(outcome: Result<T, Status>) -> (Code, String) {
    let status = outcome.expect_err("the call must be refused");
    let reason = status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default();
    (status.code(), reason)
}

#[tokio::test]
async fn low_stock_orders_once_and_the_delivery_restocks_and_closes_the_reorder() {
    let app = spawn_app().await;
    // 10 lattes, threshold 2.
    app.seed_menu_and_stock(10).await;

    assert_eq!(
        reserve_lattes(&app, 9).await,
        ["StockReserved", "LowStockWarningRaised", "ReorderRequested"]
    );
    let level = app.stock_level("LATTE-12").await;
    assert_eq!(
        (level.open_reorder_number, level.open_reorder_quantity),
        (1, 3),
        "reorder 1 brings the available 1 to twice the threshold"
    );

    // The stock is corrected above the threshold and falls below it again: a second low-stock
    // event, but reorder 1 is still open, so nothing more is ordered.
    app.inventory(Role::StoreManager, "manager")
        .adjust_stock(pb::AdjustStockRequest {
            idempotency_key: "found-a-box".into(),
            store_id: STORE.into(),
            sku: "LATTE-12".into(),
            delta: 5,
            reason: "found a box".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        reserve_lattes(&app, 5).await,
        ["StockReserved", "LowStockWarningRaised"]
    );
    assert_eq!(app.stock_level("LATTE-12").await.open_reorder_number, 1);

    let before = app.stock_level("LATTE-12").await;
    let received = app
        .inventory(Role::StoreManager, "manager")
        .receive_delivery(delivery("delivery-1", 1, "LATTE-12", 12))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        received.event_types,
        ["DeliveryReceived", "LowStockWarningCleared"]
    );
    let after = app.stock_level("LATTE-12").await;
    assert_eq!(after.on_hand, before.on_hand + 12);
    assert_eq!(after.open_reorder_number, 0, "the reorder is closed");
    assert!(!after.low_stock);

    // The same delivery retried under its key is the first answer, not a second restock.
    let retried = app
        .inventory(Role::StoreManager, "manager")
        .receive_delivery(delivery("delivery-1", 1, "LATTE-12", 12))
        .await
        .unwrap()
        .into_inner();
    assert!(retried.replayed);
    assert_eq!(app.stock_level("LATTE-12").await.on_hand, after.on_hand);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_delivery_is_refused_with_its_reason_and_changes_nothing() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    reserve_lattes(&app, 9).await;
    let mut inventory = app.inventory(Role::Service, "supplier-integration");
    let events_before = app.event_count().await;

    let tried = [
        // A reorder the store never requested.
        (
            delivery("unknown", 7, "LATTE-12", 3),
            Code::NotFound,
            "NO_SUCH_REORDER",
        ),
        // Reorder 1 is for LATTE-12.
        (
            delivery("wrong-sku", 1, "CROISSANT", 3),
            Code::FailedPrecondition,
            "DELIVERY_OF_WRONG_SKU",
        ),
        // Nothing delivered; no reorder named.
        (
            delivery("nothing", 1, "LATTE-12", 0),
            Code::InvalidArgument,
            "",
        ),
        (
            delivery("no-reorder", 0, "LATTE-12", 3),
            Code::InvalidArgument,
            "",
        ),
        (
            delivery("bad-sku", 1, "not a sku!", 3),
            Code::InvalidArgument,
            "",
        ),
    ];
    for (request, code, reason) in tried {
        let what = format!("{request:?}");
        let (got_code, got_reason) = refusal(inventory.receive_delivery(request).await);
        assert_eq!((got_code, got_reason.as_str()), (code, reason), "{what}");
    }
    let status = inventory
        .receive_delivery(delivery("both-bad", 0, "LATTE-12", 0))
        .await
        .unwrap_err();
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(
        fields,
        ["reorder_number", "quantity"],
        "every field at once"
    );
    assert_eq!(app.event_count().await, events_before, "nothing changed");

    // Delivered once; a second delivery of the same reorder is refused.
    inventory
        .receive_delivery(delivery("first", 1, "LATTE-12", 3))
        .await
        .unwrap();
    assert_eq!(
        refusal(
            inventory
                .receive_delivery(delivery("again", 1, "LATTE-12", 3))
                .await
        ),
        (Code::FailedPrecondition, "REORDER_ALREADY_DELIVERED".into())
    );

    // Baristas may not receive deliveries.
    let denied = app
        .inventory(Role::Barista, "ana")
        .receive_delivery(delivery("barista", 1, "LATTE-12", 3))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    app.stop().await;
}
