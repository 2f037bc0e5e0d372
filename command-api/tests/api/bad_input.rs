//! Every class of bad input gets its status and changes nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use auth_tokens::{SigningKey, TokenIssuer};
use command_api::auth::{Claims, Role};
use proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{
    new_order_id, place_order, spawn_app, transition, TestApp, MAX_MESSAGE_BYTES,
};

/// Sends `attempt` and checks it failed with `code` without appending an event.
async fn refused<T: std::fmt::Debug>(
    app: &TestApp,
    code: Code,
    attempt: impl std::future::Future<Output = Result<T, Status>>,
) -> Status {
    let before = app.event_count().await;
    let status = attempt.await.expect_err("the request must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        app.event_count().await,
        before,
        "a refused request appended events"
    );
    status
}

fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .into_iter()
                .map(|violation| violation.field)
                .collect()
        })
        .unwrap_or_default()
}

fn signed(claims: &Claims, issuer: &TokenIssuer) -> String {
    issuer.sign(claims).unwrap()
}

fn claims(role: Role, exp_offset_seconds: i64, issuer: &str) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Claims {
        sub: "c-1".into(),
        role,
        store_id: None,
        iss: issuer.into(),
        aud: "orderpipe-api".into(),
        iat: now,
        exp: now.saturating_add_signed(exp_offset_seconds),
    }
}

#[tokio::test]
async fn malformed_orders_are_refused_with_every_field_violation() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let mut customer = app.orders(Role::Customer, "c-1");

    // Quantity 0 and 100 (the limit is 99), a lowercase SKU and a bad order id, all at once.
    let mut request = place_order(
        "bad-1",
        "not-a-uuid",
        "c-1",
        &[("LATTE-12", 0), ("MOCHA-16", 100)],
    );
    request.lines.push(pb::OrderLine {
        sku: "latte".into(),
        quantity: 1,
        customisations: vec![],
    });
    let status = refused(&app, Code::InvalidArgument, customer.place_order(request)).await;
    assert_eq!(
        violated_fields(&status),
        vec![
            "order_id",
            "lines[0].quantity",
            "lines[1].quantity",
            "lines[2].sku"
        ]
    );

    // An empty order.
    let empty = place_order("bad-2", &new_order_id(), "c-1", &[]);
    let status = refused(&app, Code::InvalidArgument, customer.place_order(empty)).await;
    assert_eq!(violated_fields(&status), vec!["lines"]);

    // A SKU that is not on the menu: well formed, so the domain refuses it.
    let unknown = place_order("bad-3", &new_order_id(), "c-1", &[("FLAT-WHITE", 1)]);
    let status = refused(&app, Code::InvalidArgument, customer.place_order(unknown)).await;
    assert!(
        status.message().contains("FLAT-WHITE"),
        "{}",
        status.message()
    );

    // A missing idempotency key.
    let keyless = place_order("", &new_order_id(), "c-1", &[("LATTE-12", 1)]);
    let status = refused(&app, Code::InvalidArgument, customer.place_order(keyless)).await;
    assert_eq!(violated_fields(&status), vec!["idempotency_key"]);
    app.stop().await;
}

#[tokio::test]
async fn many_long_bad_values_still_get_invalid_argument_with_bounded_details() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let mut customer = app.orders(Role::Customer, "c-1");
    // 40 lines whose SKUs are 320 characters of junk, and a junk order id: the violations
    // once quoted every value and the status outgrew HTTP/2's header limit (the client saw a
    // protocol error, found by the request fuzzer).
    let junk = "<script>'; DROP TABLE events; --".repeat(10);
    let lines: Vec<(&str, u32)> = (0..40).map(|_| (junk.as_str(), 1)).collect();
    let request = place_order("long-1", &junk, "c-1", &lines);
    let status = refused(&app, Code::InvalidArgument, customer.place_order(request)).await;
    let fields = violated_fields(&status);
    assert_eq!(fields.len(), 10, "{fields:?}");
    assert_eq!(fields[0], "order_id");
    assert!(
        status.message().ends_with("and 31 more"),
        "{}",
        status.message()
    );
    assert!(status.message().len() < 4_000, "{}", status.message().len());
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_before_it_is_decoded() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let mut request = place_order("big", &new_order_id(), "c-1", &[("LATTE-12", 1)]);
    request.note = "x".repeat(MAX_MESSAGE_BYTES + 1);

    let status = refused(
        &app,
        Code::OutOfRange,
        app.orders(Role::Customer, "c-1").place_order(request),
    )
    .await;
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn missing_expired_foreign_and_tampered_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order = || place_order("auth", &new_order_id(), "c-1", &[("LATTE-12", 1)]);
    let valid = app.token(Role::Customer, "c-1");
    // One character of the signature changed (a middle one: all six of its bits count).
    let signature_start = valid.rfind('.').unwrap() + 1;
    let mut tampered = valid.clone().into_bytes();
    let target = &mut tampered[signature_start + 10];
    *target = if *target == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let issuer = app.keys.issuer();
    let expired = signed(&claims(Role::Customer, -3600, "orderpipe"), issuer);
    let foreign_issuer = signed(&claims(Role::Customer, 3600, "elsewhere"), issuer);
    // Signed by a key that is not in the JWKS the API reads.
    let unpublished_key = SigningKey::generate().unwrap();
    let unpublished = signed(
        &claims(Role::Customer, 3600, "orderpipe"),
        &TokenIssuer::new(&unpublished_key, "orderpipe", "orderpipe-api"),
    );

    let status = refused(
        &app,
        Code::Unauthenticated,
        app.orders_as(None).place_order(order()),
    )
    .await;
    assert_eq!(status.message(), "missing bearer token");
    for (token, why) in [
        (expired, "token expired"),
        (foreign_issuer, "token from an unknown issuer"),
        (unpublished, "token signed with an unknown key"),
        (tampered, "token signature invalid"),
    ] {
        let status = refused(
            &app,
            Code::Unauthenticated,
            app.orders_as(Some(&token)).place_order(order()),
        )
        .await;
        assert_eq!(status.message(), why);
    }
    app.stop().await;
}

#[tokio::test]
async fn callers_outside_their_role_or_scope_are_denied() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();
    app.orders(Role::Customer, "c-1")
        .place_order(place_order("p", &order_id, "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap();

    // A customer may not work the kitchen.
    refused(
        &app,
        Code::PermissionDenied,
        app.orders(Role::Customer, "c-1")
            .start_preparing(transition("x", &order_id)),
    )
    .await;
    // A customer may not place an order for someone else, nor read or cancel theirs.
    refused(
        &app,
        Code::PermissionDenied,
        app.orders(Role::Customer, "c-2").place_order(place_order(
            "p2",
            &new_order_id(),
            "c-1",
            &[("LATTE-12", 1)],
        )),
    )
    .await;
    refused(
        &app,
        Code::PermissionDenied,
        app.orders(Role::Customer, "c-2")
            .get_order(pb::GetOrderRequest {
                order_id: order_id.clone(),
            }),
    )
    .await;
    refused(
        &app,
        Code::PermissionDenied,
        app.orders(Role::Customer, "c-2")
            .cancel_order(pb::CancelOrderRequest {
                idempotency_key: "c".into(),
                order_id: order_id.clone(),
                reason: "changed my mind".into(),
            }),
    )
    .await;
    // A barista may not restock; a manager may not touch another store's stock.
    refused(
        &app,
        Code::PermissionDenied,
        app.inventory(Role::Barista, "ana")
            .restock(pb::RestockRequest {
                idempotency_key: "r".into(),
                store_id: "s1".into(),
                sku: "LATTE-12".into(),
                quantity: 5,
            }),
    )
    .await;
    refused(
        &app,
        Code::PermissionDenied,
        app.inventory(Role::StoreManager, "mo")
            .restock(pb::RestockRequest {
                idempotency_key: "r".into(),
                store_id: "s2".into(),
                sku: "LATTE-12".into(),
                quantity: 5,
            }),
    )
    .await;
    // Only services earn loyalty points.
    refused(
        &app,
        Code::PermissionDenied,
        app.loyalty(Role::Customer, "c-1")
            .earn_points(pb::EarnPointsRequest {
                idempotency_key: "e".into(),
                customer_id: "c-1".into(),
                order_id: order_id.clone(),
                amount: Some(pb::Money { cents: 100_000 }),
            }),
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn illegal_transitions_and_unknown_orders_are_refused() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let order_id = new_order_id();
    let mut barista = app.orders(Role::Barista, "ana");
    barista
        .place_order(place_order("p", &order_id, "c-1", &[("LATTE-12", 1)]))
        .await
        .unwrap();

    let status = refused(
        &app,
        Code::FailedPrecondition,
        barista.mark_ready(transition("r", &order_id)),
    )
    .await;
    assert!(
        status.message().contains("MarkReady"),
        "{}",
        status.message()
    );
    refused(
        &app,
        Code::FailedPrecondition,
        barista.start_preparing(transition("s", &order_id)),
    )
    .await;
    refused(
        &app,
        Code::NotFound,
        barista.accept_order(transition("a", &new_order_id())),
    )
    .await;
    refused(
        &app,
        Code::NotFound,
        barista.get_order(pb::GetOrderRequest {
            order_id: new_order_id(),
        }),
    )
    .await;
    app.stop().await;
}

/// A place-order request of `lines` lines of malformed SKUs: each line would be a violation if
/// it were parsed.
fn order_of_bad_lines(key: &str, lines: usize) -> pb::PlaceOrderRequest {
    let bad: Vec<(&str, u32)> = (0..lines).map(|_| ("not a sku", 0)).collect();
    place_order(key, &new_order_id(), "c-1", &bad)
}

#[tokio::test]
async fn a_place_order_one_line_over_the_limit_is_refused_before_its_lines_are_parsed() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(10).await;
    let mut customer = app.orders(Role::Customer, "c-1");

    // 51 lines (the limit is 50), every one of them malformed: the count alone refuses it, with
    // one violation at `lines`, instead of 102 parse errors from lines that were never needed.
    let status = refused(
        &app,
        Code::InvalidArgument,
        customer.place_order(order_of_bad_lines("limit-1", 51)),
    )
    .await;
    assert_eq!(violated_fields(&status), vec!["lines"]);
    assert!(
        status.message().contains("at most 50"),
        "{}",
        status.message()
    );

    // 50 malformed lines are within the limit: they are parsed and each is reported.
    let status = refused(
        &app,
        Code::InvalidArgument,
        customer.place_order(order_of_bad_lines("limit-2", 50)),
    )
    .await;
    assert_eq!(violated_fields(&status)[0], "lines[0].sku");

    // 11 customisations on one line (the limit is 10).
    let mut request = place_order("limit-3", &new_order_id(), "c-1", &[("LATTE-12", 1)]);
    request.lines[0].customisations = (0..11).map(|n| format!("extra {n}")).collect();
    let status = refused(&app, Code::InvalidArgument, customer.place_order(request)).await;
    assert_eq!(violated_fields(&status), vec!["lines[0].customisations"]);
    app.stop().await;
}

#[tokio::test]
async fn a_reservation_one_line_over_the_limit_is_refused() {
    let app = spawn_app().await;
    app.seed_menu_and_stock(99).await;
    let mut manager = app.inventory(Role::StoreManager, "manager");
    let reservation = |key: &str, lines: usize| pb::ReserveStockRequest {
        idempotency_key: key.into(),
        store_id: crate::helpers::STORE.into(),
        order_id: new_order_id(),
        lines: (0..lines)
            .map(|_| pb::StockLine {
                sku: "LATTE-12".into(),
                quantity: 1,
            })
            .collect(),
    };

    // 51 lines of one unit each: ReserveStock had no line cap at all.
    let status = refused(
        &app,
        Code::InvalidArgument,
        manager.reserve_stock(reservation("reserve-51", 51)),
    )
    .await;
    assert_eq!(violated_fields(&status), vec!["lines"]);

    // 50 lines are accepted.
    manager
        .reserve_stock(reservation("reserve-50", 50))
        .await
        .expect("50 lines are within the limit");
    app.stop().await;
}
