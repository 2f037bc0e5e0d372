//! The purchase-orders flow against the SQS emulator: one message per reorder, however often the
//! log delivers the commit that opened it.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use commit_log::projection::Projection;
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::inventory::InventoryEvent;
use domain::Sku;
use flows::purchase_orders::{PurchaseOrder, PurchaseOrders};
use flows::sqs::{Receive, SqsQueue};
use test_support::{aws_test_config, unique_name};
use time::OffsetDateTime;

const RECEIVE: Receive<'static> = Receive {
    max_messages: 10,
    wait: Duration::from_secs(1),
    visibility: Duration::from_secs(30),
    system_attributes: &[
        MessageSystemAttributeName::MessageGroupId,
        MessageSystemAttributeName::MessageDeduplicationId,
    ],
    message_attributes: true,
};

fn latte() -> Sku {
    Sku::parse("LATTE-12").unwrap()
}

/// Store `store`'s inventory commit of `events` from `first_sequence`.
fn commit(store: &str, first_sequence: u64, events: Vec<InventoryEvent>) -> LoggedCommit {
    let at = OffsetDateTime::from_unix_timestamp(1_796_000_000 + first_sequence as i64).unwrap();
    LoggedCommit {
        aggregate_type: "inventory".into(),
        aggregate_id: store.into(),
        committed_at: at,
        correlation_id: String::new(),
        causation_id: String::new(),
        actor: "service:flows-order-saga".into(),
        traceparent: String::new(),
        events: events
            .into_iter()
            .enumerate()
            .map(|(i, event)| LoggedEvent {
                sequence: first_sequence + i as u64,
                position: 100 + first_sequence + i as u64,
                recorded_at: at,
                event: DomainEvent::Inventory(event),
            })
            .collect(),
    }
}

fn low_stock(available: u32) -> InventoryEvent {
    InventoryEvent::LowStockWarningRaised {
        sku: latte(),
        available,
        threshold: 5,
    }
}

fn reorder(reorder_number: u64, suggested_quantity: u32) -> InventoryEvent {
    InventoryEvent::ReorderRequested {
        sku: latte(),
        suggested_quantity,
        reorder_number,
    }
}

/// Every message on the queue now, deleted as read.
async fn drain(queue: &SqsQueue) -> Vec<(PurchaseOrder, String, String)> {
    let mut all = Vec::new();
    loop {
        let received = queue.receive(&RECEIVE).await.unwrap();
        if received.is_empty() {
            return all;
        }
        for message in received {
            let system = |name| {
                message
                    .attributes()
                    .and_then(|a| a.get(&name))
                    .cloned()
                    .unwrap_or_default()
            };
            all.push((
                serde_json::from_str(message.body().unwrap()).unwrap(),
                system(MessageSystemAttributeName::MessageGroupId),
                system(MessageSystemAttributeName::MessageDeduplicationId),
            ));
            queue
                .delete(message.receipt_handle().unwrap())
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_redelivered_reorder_and_a_repeated_low_stock_event_put_one_purchase_order() {
    let sqs = aws_sdk_sqs::Client::new(&aws_test_config().await);
    let url = support::queue(&sqs, &unique_name("purchase-orders"), true).await;
    let queue = SqsQueue::new(sqs.clone(), url.clone());
    let flow = PurchaseOrders::new(sqs, url);
    let store = unique_name("store");

    // The crossing that opened reorder 1; the log delivers it again (a retried batch, a lease
    // taken over), and the store crosses its threshold a second time while reorder 1 is open:
    // the inventory raises only the warning then.
    let opened = commit(&store, 3, vec![low_stock(4), reorder(1, 6)]);
    let crossed_again = commit(&store, 5, vec![low_stock(2)]);
    flow.apply(std::slice::from_ref(&opened)).await.unwrap();
    flow.apply(&[opened.clone(), crossed_again]).await.unwrap();
    flow.apply(std::slice::from_ref(&opened)).await.unwrap();

    let sent = drain(&queue).await;
    assert_eq!(sent.len(), 1, "one purchase order per reorder: {sent:?}");
    let (order, group, deduplication_id) = &sent[0];
    assert_eq!(order.purchase_order_id, format!("{store}/reorder/1"));
    assert_eq!(order.store_id, store);
    assert_eq!((order.reorder_number, order.quantity), (1, 6));
    assert_eq!(order.sku, "LATTE-12");
    assert_eq!(group, &store, "one message group per store");
    assert_eq!(deduplication_id, &order.purchase_order_id);

    // The delivery closed reorder 1 and left the stock low: reorder 2 is a new purchase order.
    let delivered = commit(
        &store,
        6,
        vec![
            InventoryEvent::DeliveryReceived {
                reorder_number: 1,
                sku: latte(),
                quantity: 1,
            },
            reorder(2, 7),
        ],
    );
    flow.apply(&[delivered]).await.unwrap();
    let sent = drain(&queue).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0.purchase_order_id, format!("{store}/reorder/2"));
    assert_eq!(sent[0].0.quantity, 7);
}
