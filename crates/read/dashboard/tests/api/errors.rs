//! The read API's answers to callers it must refuse: no token, a bad token, another store's
//! staff, roles without a board, unknown stores and orders, malformed requests.

use auth_tokens::Role;

use crate::helpers::{TestDashboard, KNOWN_STORE};

const STORE_ROUTES: [&str; 6] = [
    "board",
    "orders",
    "metrics",
    "stock-warnings",
    "reorders",
    "events",
];

#[tokio::test]
async fn every_store_route_needs_a_valid_token() {
    let dashboard = TestDashboard::start().await;
    for route in STORE_ROUTES {
        let path = format!("/api/stores/{KNOWN_STORE}/{route}");
        for token in [None, Some("not-a-jwt")] {
            let response = dashboard.get(&path, token).await;
            assert_eq!(response.status, 401, "{path} with {token:?}");
            assert_eq!(response.body["error"], "unauthenticated", "{path}");
        }
    }
    dashboard.stop().await;
}

#[tokio::test]
async fn another_stores_staff_and_roles_without_a_board_are_forbidden() {
    let dashboard = TestDashboard::start().await;
    let other_barista = dashboard.token(Role::Barista, "ana", Some("s2"));
    let other_manager = dashboard.token(Role::StoreManager, "bo", Some("s2"));
    let service = dashboard.token(Role::Service, "saga", None);
    let customer = dashboard.token(Role::Customer, "c-1", None);
    for route in STORE_ROUTES {
        let path = format!("/api/stores/{KNOWN_STORE}/{route}");
        for token in [&other_barista, &other_manager, &service, &customer] {
            let response = dashboard.get(&path, Some(token)).await;
            assert_eq!(response.status, 403, "{path}");
            assert_eq!(response.body["error"], "forbidden", "{path}");
        }
    }
    let response = dashboard
        .get(
            &format!("/api/stores/{KNOWN_STORE}/orders"),
            Some(&other_barista),
        )
        .await;
    assert_eq!(
        response.body["message"],
        "this token is for store s2, not s1"
    );
    dashboard.stop().await;
}

#[tokio::test]
async fn a_store_the_views_do_not_know_is_not_found() {
    let dashboard = TestDashboard::start().await;
    let token = dashboard.token(Role::Barista, "ana", Some("nowhere"));
    for route in STORE_ROUTES {
        let path = format!("/api/stores/nowhere/{route}");
        let response = dashboard.get(&path, Some(&token)).await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.body["error"], "unknown_store", "{path}");
        assert_eq!(response.body["message"], "unknown store nowhere");
    }
    dashboard.stop().await;
}

#[tokio::test]
async fn the_stores_own_staff_read_its_board() {
    let dashboard = TestDashboard::start().await;
    let token = dashboard.token(Role::Barista, "ana", Some(KNOWN_STORE));

    let board = dashboard
        .get(&format!("/api/stores/{KNOWN_STORE}/board"), Some(&token))
        .await;
    assert_eq!(board.status, 200, "{:?}", board.body);
    assert_eq!(board.body["board"]["store_id"], KNOWN_STORE);
    assert_eq!(
        board.body["board"]["orders"]["pending"],
        serde_json::json!([])
    );
    assert_eq!(board.body["board"]["metrics"]["orders_today"], 0);
    assert!(board.body["generated_at"].is_string());

    let warnings = dashboard
        .get(
            &format!("/api/stores/{KNOWN_STORE}/stock-warnings"),
            Some(&token),
        )
        .await;
    assert_eq!(warnings.status, 200);
    assert_eq!(warnings.body, serde_json::json!([]));

    let health = dashboard.get("/health", None).await;
    assert_eq!(health.status, 200, "the views answer");

    let me = dashboard.get("/api/me", Some(&token)).await;
    assert_eq!(
        me.body,
        serde_json::json!({ "subject": "ana", "role": "barista", "store_id": KNOWN_STORE })
    );
    dashboard.stop().await;
}

#[tokio::test]
async fn order_routes_refuse_bad_ids_bodies_and_unknown_orders() {
    let dashboard = TestDashboard::start().await;
    let token = dashboard.token(Role::Barista, "ana", Some(KNOWN_STORE));
    let unknown = "0194f1a2-0000-7000-8000-000000000000";

    let history = dashboard
        .get(&format!("/api/orders/{unknown}/history"), Some(&token))
        .await;
    assert_eq!(history.status, 404);
    assert_eq!(history.body["error"], "unknown_order");

    let not_a_uuid = dashboard
        .get("/api/orders/latte/history", Some(&token))
        .await;
    assert_eq!(not_a_uuid.status, 400);

    let no_token = dashboard
        .post(
            &format!("/api/orders/{unknown}/advance"),
            None,
            &serde_json::json!({ "step": "mark_ready" }),
        )
        .await;
    assert_eq!(no_token.status, 401);

    let bad_step = dashboard
        .post(
            &format!("/api/orders/{unknown}/advance"),
            Some(&token),
            &serde_json::json!({ "step": "brew" }),
        )
        .await;
    assert_eq!(bad_step.status, 400);
    assert_eq!(bad_step.body["error"], "bad_request");

    let customer = dashboard.token(Role::Customer, "c-1", None);
    let not_staff = dashboard
        .post(
            &format!("/api/orders/{unknown}/advance"),
            Some(&customer),
            &serde_json::json!({ "step": "mark_ready" }),
        )
        .await;
    assert_eq!(not_staff.status, 403);
    dashboard.stop().await;
}

#[tokio::test]
async fn health_turns_503_when_a_view_cannot_be_read() {
    let dashboard = TestDashboard::start().await;
    assert_eq!(dashboard.get("/health", None).await.status, 200);
    dashboard
        .dynamodb
        .delete_table()
        .table_name(&dashboard.tables.orders)
        .send()
        .await
        .unwrap();
    let health = dashboard.get("/health", None).await;
    assert_eq!(health.status, 503, "the orders table is gone");
    dashboard.stop().await;
}

#[tokio::test]
async fn health_turns_503_while_no_token_key_is_loaded() {
    // Started before the issuer published its JWKS: the dashboard runs (its views are fine),
    // but it cannot verify a single token, so it must not be put in service.
    let dashboard = TestDashboard::start_before_the_keys_are_published().await;
    let health = dashboard.get("/health", None).await;
    assert_eq!(
        health.status, 503,
        "no key to verify a token with: {health:?}"
    );
    dashboard.stop().await;
}
