//! Reorder automation: every reorder a store's inventory opens (`ReorderRequested` with its
//! number) becomes one purchase order on the purchase-orders queue
//! (`docs/flows/purchase-order.schema.json`) for the supplier integration, which answers with
//! `InventoryService.ReceiveDelivery` once the goods arrive.
//!
//! "No duplicate while a reorder is open" is decided by the inventory aggregate: it opens at most
//! one reorder per SKU until its delivery, so a store that keeps falling below a threshold never
//! asks for a second. This flow only has to keep the log's at-least-once delivery from sending
//! one reorder twice: the message's `purchase_order_id` (`<store>/reorder/<number>`) is stable
//! per reorder and is the FIFO queue's deduplication id, so SQS drops a redelivered commit's copy
//! within its five-minute window, and the supplier deduplicates by the same id beyond it (a
//! replay of old history; moto, the local emulator, forgets an id once its message is deleted). The message group is the store, so one store's purchase orders are
//! read in the order they were opened.

use async_trait::async_trait;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::inventory::InventoryEvent;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

use crate::sqs::{Outgoing, SqsQueue};

/// The projection's name in the lease table, metrics and dead letters.
pub const PURCHASE_ORDERS_NAME: &str = "purchase_orders";

/// The schema version this build writes.
pub const PURCHASE_ORDER_VERSION: u32 = 1;

/// One purchase order message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOrder {
    /// [`PURCHASE_ORDER_VERSION`].
    pub schema_version: u32,
    /// Stable per reorder: `<store id>/reorder/<reorder number>`; the supplier's idempotency key.
    pub purchase_order_id: String,
    /// The store to deliver to.
    pub store_id: String,
    /// The reorder's number at the store: what `ReceiveDelivery` names.
    pub reorder_number: u64,
    /// The item.
    pub sku: String,
    /// How many to deliver.
    pub quantity: u32,
    /// When the reorder was opened (RFC 3339, UTC).
    pub requested_at: String,
}

impl PurchaseOrder {
    /// The purchase order `logged` of `commit` opens, if it opens one. A 1.0 `ReorderRequested`
    /// (number 0) was a suggestion from before reorders were tracked and opened nothing.
    pub fn of(commit: &LoggedCommit, logged: &LoggedEvent) -> Option<Self> {
        let DomainEvent::Inventory(InventoryEvent::ReorderRequested {
            sku,
            suggested_quantity,
            reorder_number,
        }) = &logged.event
        else {
            return None;
        };
        if *reorder_number == 0 {
            return None;
        }
        let store_id = &commit.aggregate_id;
        Some(PurchaseOrder {
            schema_version: PURCHASE_ORDER_VERSION,
            purchase_order_id: format!("{store_id}/reorder/{reorder_number}"),
            store_id: store_id.clone(),
            reorder_number: *reorder_number,
            sku: sku.to_string(),
            quantity: *suggested_quantity,
            requested_at: logged.recorded_at.format(&Rfc3339).unwrap_or_default(),
        })
    }
}

/// Turns opened reorders into purchase order messages.
pub struct PurchaseOrders {
    queue: SqsQueue,
}

impl PurchaseOrders {
    /// Sends to the FIFO queue at `queue_url`.
    pub fn new(sqs: aws_sdk_sqs::Client, queue_url: String) -> Self {
        Self {
            queue: SqsQueue::new(sqs, queue_url),
        }
    }

    async fn send(&self, index: usize, order: &PurchaseOrder) -> Result<(), ProjectionError> {
        let body = serde_json::to_string(order).map_err(|e| ProjectionError::Poison {
            index,
            reason: format!("the purchase order does not serialize: {e}"),
        })?;
        let message = Outgoing::new(&body)
            .in_group(&order.store_id, &order.purchase_order_id)
            .attribute("purchase_order_id", &order.purchase_order_id);
        self.queue
            .send(message)
            .await
            .map_err(|error| crate::sqs::projection_error(index, error, "purchase order"))?;
        metrics::counter!("orderpipe_flows_purchase_orders_total").increment(1);
        Ok(())
    }
}

#[async_trait]
impl Projection for PurchaseOrders {
    fn name(&self) -> &'static str {
        PURCHASE_ORDERS_NAME
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        for (index, commit) in commits.iter().enumerate() {
            for order in commit
                .events
                .iter()
                .filter_map(|logged| PurchaseOrder::of(commit, logged))
            {
                self.send(index, &order).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use domain::Sku;
    use time::OffsetDateTime;

    fn commit(events: Vec<InventoryEvent>) -> LoggedCommit {
        let at = OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap();
        LoggedCommit {
            aggregate_type: "inventory".into(),
            aggregate_id: "s1".into(),
            committed_at: at,
            correlation_id: String::new(),
            causation_id: String::new(),
            actor: String::new(),
            traceparent: String::new(),
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, event)| LoggedEvent {
                    sequence: 7 + i as u64,
                    position: 70 + i as u64,
                    recorded_at: at,
                    event: DomainEvent::Inventory(event),
                })
                .collect(),
        }
    }

    fn requested(reorder_number: u64) -> InventoryEvent {
        InventoryEvent::ReorderRequested {
            sku: Sku::parse("LATTE-12").unwrap(),
            suggested_quantity: 6,
            reorder_number,
        }
    }

    #[test]
    fn an_opened_reorder_is_one_purchase_order_named_by_store_and_number() {
        let commit = commit(vec![
            InventoryEvent::LowStockWarningRaised {
                sku: Sku::parse("LATTE-12").unwrap(),
                available: 4,
                threshold: 5,
            },
            requested(3),
        ]);
        let orders: Vec<PurchaseOrder> = commit
            .events
            .iter()
            .filter_map(|logged| PurchaseOrder::of(&commit, logged))
            .collect();
        assert_eq!(
            orders,
            [PurchaseOrder {
                schema_version: 1,
                purchase_order_id: "s1/reorder/3".into(),
                store_id: "s1".into(),
                reorder_number: 3,
                sku: "LATTE-12".into(),
                quantity: 6,
                requested_at: "2026-11-30T00:53:20Z".into(),
            }]
        );
    }

    #[test]
    fn a_version_1_0_suggestion_orders_nothing() {
        let commit = commit(vec![requested(0)]);
        assert_eq!(PurchaseOrder::of(&commit, &commit.events[0]), None);
    }
}
