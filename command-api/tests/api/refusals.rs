//! Every refusal carries its reason as a stable code in a `google.rpc.ErrorInfo` detail
//! (domain `orderpipe.v1`), so callers act on the code and never on the message's wording.
//! The codes are spelt out here, not taken from the server's crates: they are the contract.

use command_api::auth::Role;
use proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{new_order_id, place_order, spawn_app, transition, STORE};

/// The gRPC code and the `ErrorInfo` reason of a refused call, after checking its domain.
fn refusal<T: std::fmt::Debug>(outcome: Result<T, Status>) -> (Code, String) {
    let status = outcome.expect_err("the call must be refused");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo detail on {status:?}"));
    assert_eq!(info.domain, "orderpipe.v1", "{status:?}");
    (status.code(), info.reason)
}

fn stock(sku: &str, quantity: u32) -> pb::StockLine {
    pb::StockLine {
        sku: sku.into(),
        quantity,
    }
}

#[tokio::test]
async fn inventory_refusals_carry_their_codes() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(3).await;
    let order_id = new_order_id();
    let mut inventory = app.inventory(Role::Service, "order-saga");
    let reserve = |key: &str, quantity: u32| pb::ReserveStockRequest {
        idempotency_key: key.into(),
        store_id: STORE.into(),
        order_id: order_id.clone(),
        lines: vec![stock("LATTE-12", quantity)],
    };

    assert_eq!(
        refusal(inventory.reserve_stock(reserve("too-many", 4)).await),
        (Code::FailedPrecondition, "OUT_OF_STOCK".into())
    );
    inventory.reserve_stock(reserve("first", 1)).await.unwrap();
    assert_eq!(
        refusal(inventory.reserve_stock(reserve("second", 1)).await),
        (Code::FailedPrecondition, "ALREADY_RESERVED".into())
    );
    assert_eq!(
        refusal(
            inventory
                .release_reservation(pb::ReleaseReservationRequest {
                    idempotency_key: "release-other".into(),
                    store_id: STORE.into(),
                    order_id: new_order_id(),
                    reason: "cancelled".into(),
                })
                .await
        ),
        (Code::NotFound, "NO_SUCH_RESERVATION".into())
    );
    assert_eq!(
        refusal(
            inventory
                .get_inventory(pb::GetInventoryRequest {
                    store_id: "store-without-stock".into(),
                })
                .await
        ),
        (Code::NotFound, "INVENTORY_NOT_FOUND".into())
    );
    app.stop().await;
}

#[tokio::test]
async fn order_refusals_carry_their_codes() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();
    let mut barista = app.orders(Role::Barista, "ana");
    barista
        .place_order(place_order("p", &order_id, "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap();

    assert_eq!(
        refusal(barista.mark_ready(transition("r", &order_id)).await),
        (Code::FailedPrecondition, "ILLEGAL_TRANSITION".into())
    );
    barista
        .accept_order(transition("a", &order_id))
        .await
        .unwrap();
    assert_eq!(
        refusal(barista.start_preparing(transition("s", &order_id)).await),
        (Code::FailedPrecondition, "PAYMENT_NOT_CAPTURED".into())
    );
    assert_eq!(
        refusal(
            barista
                .place_order(place_order("p-again", &order_id, "c-1", &[("LATTE-12", 1)]))
                .await
        ),
        (Code::FailedPrecondition, "ORDER_ALREADY_EXISTS".into())
    );
    assert_eq!(
        refusal(
            barista
                .place_order(place_order(
                    "p-2",
                    &new_order_id(),
                    "c-1",
                    &[("FLAT-WHITE", 1)]
                ))
                .await
        ),
        (Code::InvalidArgument, "UNKNOWN_SKU".into())
    );
    assert_eq!(
        refusal(
            barista
                .accept_order(transition("a-2", &new_order_id()))
                .await
        ),
        (Code::NotFound, "ORDER_NOT_FOUND".into())
    );
    assert_eq!(
        refusal(
            barista
                .get_order(pb::GetOrderRequest {
                    order_id: new_order_id(),
                })
                .await
        ),
        (Code::NotFound, "ORDER_NOT_FOUND".into())
    );
    app.stop().await;
}

#[tokio::test]
async fn loyalty_and_menu_refusals_carry_their_codes() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let mut loyalty = app.loyalty(Role::Service, "order-saga");
    let order_id = new_order_id();
    let earn = |key: &str| pb::EarnPointsRequest {
        idempotency_key: key.into(),
        customer_id: "c-1".into(),
        order_id: order_id.clone(),
        amount: Some(pb::Money { cents: 450 }),
    };
    loyalty.earn_points(earn("earn")).await.unwrap();
    assert_eq!(
        refusal(loyalty.earn_points(earn("earn-again")).await),
        (Code::FailedPrecondition, "POINTS_ALREADY_EARNED".into())
    );
    assert_eq!(
        refusal(
            loyalty
                .redeem_points(pb::RedeemPointsRequest {
                    idempotency_key: "redeem".into(),
                    customer_id: "c-1".into(),
                    points: 1_000_000,
                    reference: "reward".into(),
                })
                .await
        ),
        (Code::FailedPrecondition, "INSUFFICIENT_POINTS".into())
    );
    assert_eq!(
        refusal(
            loyalty
                .get_loyalty_account(pb::GetLoyaltyAccountRequest {
                    customer_id: "c-nobody".into(),
                })
                .await
        ),
        (Code::NotFound, "LOYALTY_ACCOUNT_NOT_FOUND".into())
    );
    assert_eq!(
        refusal(
            app.menu(Role::Service, "back-office")
                .add_menu_item(pb::AddMenuItemRequest {
                    idempotency_key: "again".into(),
                    sku: "LATTE-12".into(),
                    name: "Latte 12oz".into(),
                    price: Some(pb::Money { cents: 450 }),
                    category: pb::MenuCategory::Drink as i32,
                })
                .await
        ),
        (Code::FailedPrecondition, "SKU_ALREADY_ON_MENU".into())
    );
    app.stop().await;
}
