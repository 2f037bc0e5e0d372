//! Reorder automation end to end: stock falls below its threshold through the API, the relay
//! puts the commit on Kinesis, the flows' `purchase_orders` worker puts one purchase order on
//! the supplier's FIFO queue; a second low-stock crossing and a crashed and restarted worker
//! (its consumer group reading the log again from the start, before the supplier read the
//! queue) put no second one; the delivery,
//! recorded with the number the purchase order carries, restocks and closes the reorder.

use std::sync::Arc;

use flows::app::LOG_GROUPS;
use flows::purchase_orders::PurchaseOrder;
use proto::v1 as pb;

use crate::flows::Rig;
use crate::support::{Pipeline, STORE};
use crate::workload::{open_the_store, Clients};

/// Every purchase order on the queue now (read messages are deleted).
async fn purchase_orders(rig: &Rig) -> Vec<PurchaseOrder> {
    let url = rig
        .settings
        .sqs
        .purchase_orders_queue_url
        .as_deref()
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let batch = rig.receive_json(url).await;
        if batch.is_empty() {
            return seen;
        }
        seen.extend(
            batch
                .into_iter()
                .map(|body| serde_json::from_value(body).unwrap()),
        );
    }
}

async fn adjust(clients: &mut Clients, key: &str, delta: i32) -> Vec<String> {
    clients
        .inventory
        .adjust_stock(pb::AdjustStockRequest {
            idempotency_key: key.into(),
            store_id: STORE.into(),
            sku: "LATTE-12".into(),
            delta,
            reason: "counted again".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .event_types
}

#[tokio::test]
async fn a_low_stock_store_sends_one_purchase_order_and_the_delivery_closes_it() {
    let pipeline = Pipeline::start().await;
    let mut rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    // 20 lattes, threshold 5.
    open_the_store(&mut clients, 20).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    assert_eq!(
        adjust(&mut clients, "broken-tray", -17).await,
        ["StockAdjusted", "LowStockWarningRaised", "ReorderRequested"]
    );
    // Up above the threshold and down again: a second low-stock event, no second reorder.
    adjust(&mut clients, "found-some", 10).await;
    assert_eq!(
        adjust(&mut clients, "dropped-more", -10).await,
        ["StockAdjusted", "LowStockWarningRaised"]
    );
    pipeline.wait_published().await;
    pipeline
        .wait_groups_caught_up(&rig.settings.dynamodb.leases_table, LOG_GROUPS.len())
        .await;
    // The worker crashes; a new one in new consumer groups reads every commit again, before
    // the supplier has read the queue: the purchase order is sent again under its id.
    flows.abort();
    rig.new_consumer_groups(&pipeline).await;
    let flows = rig.spawn("flows-2", Arc::new(rig.sandbox.clone())).await;
    pipeline
        .wait_groups_caught_up(&rig.settings.dynamodb.leases_table, LOG_GROUPS.len())
        .await;

    let seen = purchase_orders(&rig).await;
    assert_eq!(
        seen.len(),
        1,
        "one purchase order for the supplier: {seen:?}"
    );
    let order = &seen[0];
    assert_eq!(order.purchase_order_id, format!("{STORE}/reorder/1"));
    assert_eq!(
        (
            order.store_id.as_str(),
            order.reorder_number,
            order.sku.as_str(),
            order.quantity
        ),
        (STORE, 1, "LATTE-12", 7)
    );

    let received = clients
        .inventory
        .receive_delivery(pb::ReceiveDeliveryRequest {
            idempotency_key: "delivery-1".into(),
            store_id: STORE.into(),
            reorder_number: order.reorder_number,
            sku: order.sku.clone(),
            quantity: order.quantity,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        received.event_types,
        ["DeliveryReceived", "LowStockWarningCleared"]
    );
    let latte = clients
        .inventory
        .get_inventory(pb::GetInventoryRequest {
            store_id: STORE.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .levels
        .into_iter()
        .find(|level| level.sku == "LATTE-12")
        .unwrap();
    assert_eq!((latte.on_hand, latte.open_reorder_number), (10, 0));
    flows.abort();
    pipeline.stop().await;
}
