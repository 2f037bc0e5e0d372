//! The dashboard follows the view alias: a view replay swaps in is served from the next read.

use auth_tokens::Role;
use read_models::{ActiveOrdersTables, ViewAlias};
use test_support::unique_name;

use crate::helpers::{create_known_store_tables, TestDashboard, KNOWN_STORE};

fn pending_ids(board: &serde_json::Value) -> Vec<String> {
    board["board"]["orders"]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["order_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_board_follows_a_swapped_in_view_from_the_next_read() {
    let dashboard = TestDashboard::start().await;
    let token = dashboard.token(Role::Barista, "ana", Some(KNOWN_STORE));
    let board_path = format!("/api/stores/{KNOWN_STORE}/board");
    dashboard
        .put_open_order("order-in-the-old-view", "placed")
        .await;
    let before = dashboard.get(&board_path, Some(&token)).await;
    assert_eq!(pending_ids(&before.body), ["order-in-the-old-view"]);

    // A rebuilt view in new tables, swapped in as `replay rebuild active_orders --swap` does.
    let rebuilt = ActiveOrdersTables {
        orders: unique_name("rebuilt-orders"),
        stores: unique_name("rebuilt-stores"),
    };
    create_known_store_tables(&dashboard.dynamodb, &rebuilt).await;
    dashboard
        .put_open_order_in(&rebuilt, "order-in-the-rebuilt-view", "accepted")
        .await;
    ViewAlias::create_table(&dashboard.dynamodb, &dashboard.views_table)
        .await
        .unwrap();
    let alias = ViewAlias::new(
        dashboard.dynamodb.clone(),
        &dashboard.views_table,
        dashboard.tables.clone(),
    );
    alias
        .begin_handover(&dashboard.tables, &rebuilt)
        .await
        .unwrap();
    alias.end_handover(&rebuilt).await.unwrap();

    let after = dashboard.get(&board_path, Some(&token)).await;
    assert_eq!(after.status, 200, "{:?}", after.body);
    assert_eq!(pending_ids(&after.body), ["order-in-the-rebuilt-view"]);
    dashboard.stop().await;
}
