//! `/api/stores/{store}/reorders`: the open reorders the active-orders projection keeps per SKU,
//! written through the projection from inventory commits.

use auth_tokens::Role;
use commit_log::projection::Projection;
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::inventory::InventoryEvent;
use domain::{Sku, StoreId};
use read_models::ActiveOrdersProjection;
use serde_json::json;
use time::OffsetDateTime;

use crate::helpers::{TestDashboard, KNOWN_STORE};

fn beans() -> Sku {
    Sku::parse("BEANS-1KG").unwrap()
}

fn commit(first_sequence: u64, events: Vec<InventoryEvent>) -> LoggedCommit {
    let at = OffsetDateTime::from_unix_timestamp(1_796_000_000 + first_sequence as i64).unwrap();
    LoggedCommit {
        aggregate_type: "inventory".into(),
        aggregate_id: KNOWN_STORE.into(),
        committed_at: at,
        correlation_id: String::new(),
        causation_id: String::new(),
        actor: "store_manager:s1:mia".into(),
        traceparent: String::new(),
        events: events
            .into_iter()
            .enumerate()
            .map(|(i, event)| LoggedEvent {
                sequence: first_sequence + i as u64,
                position: first_sequence + i as u64,
                recorded_at: at,
                event: DomainEvent::Inventory(event),
            })
            .collect(),
    }
}

#[tokio::test]
async fn open_reorders_show_until_their_delivery_and_outlive_the_warning() {
    let dashboard = TestDashboard::start().await;
    let projection =
        ActiveOrdersProjection::new(dashboard.dynamodb.clone(), dashboard.tables.clone());
    let token = dashboard.token(Role::Barista, "ana", Some(KNOWN_STORE));
    let reorders = || async {
        let response = dashboard
            .get(&format!("/api/stores/{KNOWN_STORE}/reorders"), Some(&token))
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
        response.body
    };
    assert_eq!(reorders().await, json!([]));

    // Counted at 3 under a threshold of 5: warned, reorder 1 for 7.
    projection
        .apply(&[commit(
            1,
            vec![
                InventoryEvent::StockSet {
                    store_id: StoreId::parse(KNOWN_STORE).unwrap(),
                    sku: beans(),
                    on_hand: 3,
                    low_stock_threshold: 5,
                },
                InventoryEvent::LowStockWarningRaised {
                    sku: beans(),
                    available: 3,
                    threshold: 5,
                },
                InventoryEvent::ReorderRequested {
                    sku: beans(),
                    suggested_quantity: 7,
                    reorder_number: 1,
                },
            ],
        )])
        .await
        .unwrap();
    let open = reorders().await;
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open[0]["sku"], "BEANS-1KG");
    assert_eq!(open[0]["reorder_number"], 1);
    assert_eq!(open[0]["quantity"], 7);
    assert_eq!(open[0]["available"], 3);
    assert!(open[0]["since"].is_string(), "{open}");

    // A recount above the threshold clears the warning; the reorder stays open.
    projection
        .apply(&[commit(
            4,
            vec![
                InventoryEvent::StockSet {
                    store_id: StoreId::parse(KNOWN_STORE).unwrap(),
                    sku: beans(),
                    on_hand: 6,
                    low_stock_threshold: 5,
                },
                InventoryEvent::LowStockWarningCleared {
                    sku: beans(),
                    available: 6,
                },
            ],
        )])
        .await
        .unwrap();
    assert_eq!(reorders().await[0]["reorder_number"], 1);
    let board = dashboard
        .get(&format!("/api/stores/{KNOWN_STORE}/board"), Some(&token))
        .await;
    assert_eq!(board.body["board"]["open_reorders"][0]["sku"], "BEANS-1KG");
    assert_eq!(board.body["board"]["stock_warnings"], json!([]));

    // The delivery closes it.
    projection
        .apply(&[commit(
            6,
            vec![InventoryEvent::DeliveryReceived {
                reorder_number: 1,
                sku: beans(),
                quantity: 7,
            }],
        )])
        .await
        .unwrap();
    assert_eq!(reorders().await, json!([]));
    dashboard.stop().await;
}
