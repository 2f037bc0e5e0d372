//! Loyalty and inventory events as ledger rows, and orders as their changes: the shape history
//! and analytics both store, gathered per batch by [`ChangeBatch`].

use std::collections::HashMap;

use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::inventory::InventoryEvent;
use domain::loyalty::LoyaltyEvent;
use domain::Tier;
use serde::Serialize;
use time::OffsetDateTime;

use super::order_changes::{serialize_time, OrderChanges};
use super::progress::{unapplied, INVENTORY, LOYALTY, MENU, ORDER};

/// The order changes, loyalty entries and stock movements of one batch of commits.
#[derive(Debug, Default)]
pub(crate) struct ChangeBatch {
    /// Orders in first-seen order with their changes in this batch.
    pub(crate) orders: Vec<(String, OrderChanges)>,
    order_index: HashMap<String, usize>,
    pub(crate) loyalty: Vec<LoyaltyEntry>,
    pub(crate) stock: Vec<StockMovement>,
}

impl ChangeBatch {
    /// Adds the events of `commit` after `applied`, and returns its menu events for the caller
    /// to keep or ignore. An event of another aggregate type than the commit's is refused (the
    /// commit is poison).
    pub(crate) fn add<'c>(
        &mut self,
        commit: &'c LoggedCommit,
        applied: u64,
    ) -> Result<Vec<&'c LoggedEvent>, String> {
        let id = &commit.aggregate_id;
        let mut menu_events = Vec::new();
        for event in unapplied(commit, applied) {
            match (&event.event, commit.aggregate_type.as_str()) {
                (DomainEvent::Order(order_event), ORDER) => {
                    let slot = *self.order_index.entry(id.clone()).or_insert_with(|| {
                        self.orders.push((id.clone(), OrderChanges::default()));
                        self.orders.len() - 1
                    });
                    let changes = &mut self.orders[slot].1;
                    changes.apply(event.sequence, event.recorded_at, order_event);
                    changes.record_actor(&commit.actor);
                }
                (DomainEvent::Loyalty(loyalty_event), LOYALTY) => self.loyalty.push(
                    LoyaltyEntry::of(id, event.sequence, event.recorded_at, loyalty_event),
                ),
                (DomainEvent::Inventory(inventory_event), INVENTORY) => {
                    self.stock.extend(StockMovement::of(
                        id,
                        event.sequence,
                        event.recorded_at,
                        inventory_event,
                    ));
                }
                (DomainEvent::Menu(_), MENU) => menu_events.push(event),
                _ => {
                    return Err(format!(
                        "a {} commit holds an event of another aggregate type",
                        commit.aggregate_type
                    ))
                }
            }
        }
        Ok(menu_events)
    }

    /// Takes out the orders that ended (completed, cancelled, rejected) and, past `keep_open`
    /// orders, the ones seen first: what a bulk rebuild writes before the end of the log.
    pub(crate) fn take_orders(&mut self, keep_open: usize) -> Vec<(String, OrderChanges)> {
        let open = self
            .orders
            .iter()
            .filter(|(_, changes)| !changes.status.is_some_and(|s| s.is_final()))
            .count();
        let mut evict = open.saturating_sub(keep_open);
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.orders)
            .into_iter()
            .partition(|(_, changes)| {
                if changes.status.is_some_and(|s| s.is_final()) {
                    return true;
                }
                let oldest = evict > 0;
                evict = evict.saturating_sub(1);
                oldest
            });
        self.orders = kept;
        self.order_index = self
            .orders
            .iter()
            .enumerate()
            .map(|(slot, (id, _))| (id.clone(), slot))
            .collect();
        taken
    }

    /// Whether the order `id` is held.
    pub(crate) fn holds_order(&self, id: &str) -> bool {
        self.order_index.contains_key(id)
    }
}

/// One loyalty ledger entry: points earned (+), redeemed (-) or a tier upgrade (0).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoyaltyEntry {
    pub(crate) customer_id: String,
    pub(crate) sequence: i64,
    pub(crate) entry_type: &'static str,
    pub(crate) points: i64,
    pub(crate) order_id: Option<String>,
    pub(crate) amount_cents: Option<i64>,
    /// Earned: the tier whose multiplier applied; upgrade: the new tier.
    pub(crate) tier: Option<&'static str>,
    pub(crate) reference: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    pub(crate) recorded_at: OffsetDateTime,
}

impl LoyaltyEntry {
    /// The entry `event` of `customer_id` makes.
    pub(crate) fn of(
        customer_id: &str,
        sequence: u64,
        recorded_at: OffsetDateTime,
        event: &LoyaltyEvent,
    ) -> LoyaltyEntry {
        let mut entry = LoyaltyEntry {
            customer_id: customer_id.to_owned(),
            sequence: sequence as i64,
            entry_type: "",
            points: 0,
            order_id: None,
            amount_cents: None,
            tier: None,
            reference: None,
            recorded_at,
        };
        match event {
            LoyaltyEvent::PointsEarned {
                order_id,
                amount,
                tier,
                points,
                ..
            } => {
                entry.entry_type = "earned";
                entry.points = points_as_i64(points.0);
                entry.order_id = Some(order_id.to_string());
                entry.amount_cents = Some(amount.cents());
                entry.tier = Some(tier_name(*tier));
            }
            LoyaltyEvent::TierUpgraded { to, .. } => {
                entry.entry_type = "tier_upgraded";
                entry.tier = Some(tier_name(*to));
            }
            LoyaltyEvent::PointsRedeemed { points, reference } => {
                entry.entry_type = "redeemed";
                entry.points = -points_as_i64(points.0);
                entry.reference = Some(reference.to_string());
            }
        }
        entry
    }
}

/// One stock movement: a line of an inventory event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StockMovement {
    pub(crate) store_id: String,
    pub(crate) sequence: i64,
    pub(crate) line_no: i32,
    pub(crate) sku: String,
    pub(crate) movement: &'static str,
    /// Counted: the new on-hand stock; adjusted: the signed change; low-stock signals: the
    /// available stock (or suggested reorder); otherwise the quantity moved.
    pub(crate) quantity: i64,
    pub(crate) order_id: Option<String>,
    pub(crate) reason: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    pub(crate) recorded_at: OffsetDateTime,
}

impl StockMovement {
    /// The movements `event` of `store_id`'s inventory makes.
    pub(crate) fn of(
        store_id: &str,
        sequence: u64,
        recorded_at: OffsetDateTime,
        event: &InventoryEvent,
    ) -> Vec<StockMovement> {
        let row = |line_no: usize,
                   sku: &domain::Sku,
                   movement: &'static str,
                   quantity: i64,
                   order_id: Option<String>,
                   reason: Option<String>| StockMovement {
            store_id: store_id.to_owned(),
            sequence: sequence as i64,
            line_no: line_no as i32,
            sku: sku.to_string(),
            movement,
            quantity,
            order_id,
            reason,
            recorded_at,
        };
        let lines = |movement: &'static str,
                     order_id: &domain::OrderId,
                     lines: &[domain::inventory::StockLine],
                     reason: Option<String>| {
            lines
                .iter()
                .enumerate()
                .map(|(line_no, line)| {
                    row(
                        line_no,
                        &line.sku,
                        movement,
                        i64::from(line.quantity.get()),
                        Some(order_id.to_string()),
                        reason.clone(),
                    )
                })
                .collect()
        };
        match event {
            InventoryEvent::StockSet { sku, on_hand, .. } => {
                vec![row(0, sku, "counted", i64::from(*on_hand), None, None)]
            }
            InventoryEvent::StockRestocked { sku, quantity } => {
                vec![row(0, sku, "restocked", i64::from(*quantity), None, None)]
            }
            InventoryEvent::StockAdjusted { sku, delta, reason } => vec![row(
                0,
                sku,
                "adjusted",
                i64::from(*delta),
                None,
                Some(reason.to_string()),
            )],
            InventoryEvent::StockReserved {
                order_id,
                lines: reserved,
            } => lines("reserved", order_id, reserved, None),
            InventoryEvent::ReservationReleased {
                order_id,
                lines: released,
                reason,
            } => lines("released", order_id, released, Some(reason.to_string())),
            InventoryEvent::ReservationCommitted {
                order_id,
                lines: consumed,
            } => lines("consumed", order_id, consumed, None),
            InventoryEvent::LowStockWarningRaised { sku, available, .. } => vec![row(
                0,
                sku,
                "low_stock_warning",
                i64::from(*available),
                None,
                None,
            )],
            InventoryEvent::ReorderRequested {
                sku,
                suggested_quantity,
                reorder_number,
            } => vec![row(
                0,
                sku,
                "reorder_requested",
                i64::from(*suggested_quantity),
                None,
                // A 1.0 suggestion (number 0) opened no reorder.
                (*reorder_number > 0).then(|| format!("reorder {reorder_number}")),
            )],
            InventoryEvent::DeliveryReceived {
                reorder_number,
                sku,
                quantity,
            } => vec![row(
                0,
                sku,
                "delivered",
                i64::from(*quantity),
                None,
                Some(format!("reorder {reorder_number}")),
            )],
            InventoryEvent::LowStockWarningCleared { sku, available } => vec![row(
                0,
                sku,
                "low_stock_cleared",
                i64::from(*available),
                None,
                None,
            )],
        }
    }
}

/// The stored name of a tier.
pub(crate) fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Bronze => "bronze",
        Tier::Silver => "silver",
        Tier::Gold => "gold",
        Tier::Platinum => "platinum",
    }
}

/// Points fit i64 by far (a balance is bounded by what money can buy); saturate rather than wrap.
fn points_as_i64(points: u64) -> i64 {
    i64::try_from(points).unwrap_or(i64::MAX)
}
