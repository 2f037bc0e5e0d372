//! The aggregate cache with two API instances on one database: each instance's cached aggregate
//! goes stale whenever the other one commits, and every command must still land, in order.

use command_api::auth::Role;
use proto::v1 as pb;

use crate::helpers::{metric_value, spawn_app_with, Options, STORE};

/// The command API's default.
const CACHED: usize = 10_000;

const STALE: &str =
    "orderpipe_store_aggregate_cache_total{aggregate_type=\"inventory\",outcome=\"stale\"}";

#[tokio::test]
async fn interleaved_commands_through_two_instances_lose_nothing_and_keep_their_order() {
    let first = spawn_app_with(Options {
        aggregate_cache: CACHED,
        ..Options::default()
    })
    .await;
    let second = spawn_app_with(Options {
        database: Some(first.database.clone()),
        aggregate_cache: CACHED,
        ..Options::default()
    })
    .await;
    first.seed_menu_and_stock(0).await;
    // Metrics are shared by every app of the test binary, and only grow.
    let stale_before = metric_value(first.admin_address, STALE)
        .await
        .unwrap_or(0.0);

    // Each instance's second command on the store finds its cached inventory one commit behind.
    let quantities: Vec<u32> = (1..=12).collect();
    for (i, quantity) in quantities.iter().enumerate() {
        let app = if i % 2 == 0 { &first } else { &second };
        app.inventory(Role::StoreManager, "manager")
            .restock(pb::RestockRequest {
                idempotency_key: format!("delivery-{i}"),
                store_id: STORE.into(),
                sku: "CROISSANT".into(),
                quantity: *quantity,
            })
            .await
            .unwrap_or_else(|status| panic!("restock {i} through instance {}: {status}", i % 2));
    }

    let stale_after = metric_value(first.admin_address, STALE)
        .await
        .unwrap_or(0.0);
    assert!(
        stale_after - stale_before >= (quantities.len() - 2) as f64,
        "every command after each instance's first used a stale cached aggregate \
         ({stale_before} -> {stale_after})"
    );
    let restocked: Vec<i64> = sqlx::query_scalar(
        "SELECT (payload #>> '{StockRestocked,quantity}')::bigint FROM events
         WHERE aggregate_type = 'inventory' AND event_type = 'StockRestocked'
         ORDER BY sequence",
    )
    .fetch_all(&first.database.pool)
    .await
    .unwrap();
    assert_eq!(
        restocked,
        quantities.iter().map(|&q| i64::from(q)).collect::<Vec<_>>(),
        "every restock stored once, in the order it was acknowledged"
    );
    let sequences: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_type = 'inventory' AND aggregate_id = $1
         ORDER BY sequence",
    )
    .bind(STORE)
    .fetch_all(&first.database.pool)
    .await
    .unwrap();
    assert!(
        sequences.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "no gap in the inventory's sequence: {sequences:?}"
    );
    // Both instances see the sum, whichever cached what.
    for app in [&first, &second] {
        let croissant = app.stock_level("CROISSANT").await;
        assert_eq!(croissant.on_hand, quantities.iter().sum::<u32>());
    }
    second.stop().await;
    first.stop().await;
}
