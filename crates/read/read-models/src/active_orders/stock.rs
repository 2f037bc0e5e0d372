//! Inventory commits: one item per store and SKU (stock, reservations, low-stock warning, the
//! open reorder) and the store inventory's marker item.
//!
//! A commit may touch several SKUs. Each SKU item records the last inventory sequence applied to
//! it (`applied_sequence`) and is updated on the condition that it is older than the commit, so
//! every SKU write is idempotent on its own; the marker (`sk = INVENTORY`, `last_sequence`) is
//! advanced last, conditioned on the value read. A crash in between leaves some SKUs written: the
//! retry skips them by their condition and finishes the rest.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use commit_log::{DomainEvent, LoggedCommit};
use domain::inventory::InventoryEvent;
use time::OffsetDateTime;

use super::update::{n, s, OnConditionFailed, Update};
use super::{dynamodb_failure, Target};
use crate::order_changes::sortable_time;
use crate::progress::{unapplied, Step};
use commit_log::projection::ProjectionError;

/// A change of the low-stock state.
#[derive(Debug, Clone, Copy)]
enum Warning {
    Raised {
        available: u32,
        threshold: u32,
        at: OffsetDateTime,
    },
    Cleared {
        available: u32,
    },
}

/// A change of the SKU's open reorder (the last in a commit wins: a delivery and the next
/// reorder it calls for may share one).
#[derive(Debug, Clone, Copy)]
enum OpenReorder {
    Opened {
        number: u64,
        quantity: u32,
        at: OffsetDateTime,
    },
    Delivered,
}

/// What one commit does to one SKU.
#[derive(Debug, Default)]
struct SkuChange {
    /// A count replaced on-hand stock (deltas after it in the commit are folded into it).
    on_hand: Option<i64>,
    on_hand_delta: i64,
    reserved_delta: i64,
    threshold: Option<u32>,
    warning: Option<Warning>,
    reorder: Option<u32>,
    open_reorder: Option<OpenReorder>,
}

impl SkuChange {
    fn add_on_hand(&mut self, delta: i64) {
        match &mut self.on_hand {
            Some(on_hand) => *on_hand += delta,
            None => self.on_hand_delta += delta,
        }
    }
}

/// Applies one store inventory's commits in order, starting from the marker the projection
/// remembers (read when it remembers none, or when the remembered one shows a gap: another
/// writer may have moved it on). Whatever fails, the inventory is forgotten, so the retry reads
/// its marker again.
pub(super) async fn apply(
    target: &Target<'_>,
    commits: Vec<(usize, &LoggedCommit)>,
) -> Result<(), ProjectionError> {
    let Some((_, first)) = commits.first() else {
        return Ok(());
    };
    let store_id = first.aggregate_id.clone();
    let remembered = target.memory().inventories.get(&store_id).copied();
    let result = apply_from(target, &commits, remembered).await;
    let mut memory = target.memory();
    match result {
        Ok(last_sequence) => memory.remember_inventory(&store_id, last_sequence),
        Err(_) => {
            memory.inventories.remove(&store_id);
        }
    }
    result.map(drop)
}

/// [`apply`] from `remembered`; returns the marker after the commits.
async fn apply_from(
    target: &Target<'_>,
    commits: &[(usize, &LoggedCommit)],
    mut remembered: Option<u64>,
) -> Result<u64, ProjectionError> {
    let mut marker: Option<u64> = None;
    for &(index, commit) in commits {
        let store_id = &commit.aggregate_id;
        let last_applied = match marker {
            Some(known) => known,
            None => match remembered.take() {
                Some(guess) if !matches!(Step::of(commit, guess), Step::Gap { .. }) => guess,
                _ => load_marker(target, index, store_id).await?,
            },
        };
        let applied = match Step::of(commit, last_applied) {
            Step::Skip => {
                marker = Some(last_applied);
                continue;
            }
            Step::Gap { applied } => return Err(target.gap(index, commit, applied)),
            Step::Apply { applied } => applied,
        };
        let mut changes: BTreeMap<String, SkuChange> = BTreeMap::new();
        for event in unapplied(commit, applied) {
            let DomainEvent::Inventory(inventory_event) = &event.event else {
                return Err(ProjectionError::Poison {
                    index,
                    reason: "an inventory commit holds a non-inventory event".into(),
                });
            };
            fold(&mut changes, inventory_event, event.recorded_at);
        }
        // Each SKU item is conditioned on its own marker, so they are written at once.
        futures::future::try_join_all(
            changes
                .iter()
                .map(|(sku, change)| write_sku(target, index, commit, applied, sku, change)),
        )
        .await?;
        advance_marker(target, index, commit, applied).await?;
        marker = Some(commit.last_sequence());
    }
    Ok(marker.unwrap_or_default())
}

fn fold(changes: &mut BTreeMap<String, SkuChange>, event: &InventoryEvent, at: OffsetDateTime) {
    fn change<'a>(
        changes: &'a mut BTreeMap<String, SkuChange>,
        sku: &domain::Sku,
    ) -> &'a mut SkuChange {
        changes.entry(sku.to_string()).or_default()
    }
    match event {
        InventoryEvent::StockSet {
            sku,
            on_hand,
            low_stock_threshold,
            ..
        } => {
            let change = change(changes, sku);
            change.on_hand = Some(i64::from(*on_hand));
            change.on_hand_delta = 0;
            change.threshold = Some(*low_stock_threshold);
        }
        InventoryEvent::StockRestocked { sku, quantity } => {
            change(changes, sku).add_on_hand(i64::from(*quantity));
        }
        InventoryEvent::StockAdjusted { sku, delta, .. } => {
            change(changes, sku).add_on_hand(i64::from(*delta));
        }
        InventoryEvent::StockReserved { lines, .. } => {
            for line in lines {
                change(changes, &line.sku).reserved_delta += i64::from(line.quantity.get());
            }
        }
        InventoryEvent::ReservationReleased { lines, .. } => {
            for line in lines {
                change(changes, &line.sku).reserved_delta -= i64::from(line.quantity.get());
            }
        }
        InventoryEvent::ReservationCommitted { lines, .. } => {
            for line in lines {
                let change = change(changes, &line.sku);
                change.reserved_delta -= i64::from(line.quantity.get());
                change.add_on_hand(-i64::from(line.quantity.get()));
            }
        }
        InventoryEvent::LowStockWarningRaised {
            sku,
            available,
            threshold,
        } => {
            change(changes, sku).warning = Some(Warning::Raised {
                available: *available,
                threshold: *threshold,
                at,
            });
        }
        InventoryEvent::ReorderRequested {
            sku,
            suggested_quantity,
            reorder_number,
        } => {
            let change = change(changes, sku);
            change.reorder = Some(*suggested_quantity);
            // A 1.0 suggestion (number 0) opened no reorder.
            if *reorder_number > 0 {
                change.open_reorder = Some(OpenReorder::Opened {
                    number: *reorder_number,
                    quantity: *suggested_quantity,
                    at,
                });
            }
        }
        InventoryEvent::DeliveryReceived { sku, quantity, .. } => {
            let change = change(changes, sku);
            change.add_on_hand(i64::from(*quantity));
            change.open_reorder = Some(OpenReorder::Delivered);
        }
        InventoryEvent::LowStockWarningCleared { sku, available } => {
            let change = change(changes, sku);
            change.warning = Some(Warning::Cleared {
                available: *available,
            });
            change.reorder = None;
        }
    }
}

fn key(store_id: &str, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(format!("STORE#{store_id}"))),
        ("sk".to_owned(), s(sk)),
    ])
}

async fn load_marker(
    target: &Target<'_>,
    index: usize,
    store_id: &str,
) -> Result<u64, ProjectionError> {
    let output = target
        .client
        .get_item()
        .table_name(&target.tables.stores)
        .set_key(Some(key(store_id, "INVENTORY".into())))
        .consistent_read(true)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .map_err(|e| dynamodb_failure(index, e))?;
    target
        .usage
        .read(output.consumed_capacity().and_then(|c| c.capacity_units()));
    Ok(output
        .item()
        .and_then(|item| item.get("last_sequence"))
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

async fn write_sku(
    target: &Target<'_>,
    index: usize,
    commit: &LoggedCommit,
    applied: u64,
    sku: &str,
    change: &SkuChange,
) -> Result<(), ProjectionError> {
    let mut update = Update::default();
    update.set("store_id", s(&commit.aggregate_id));
    update.set("sku", s(sku));
    update.set("applied_sequence", n(commit.last_sequence()));
    update.set("updated_at", s(sortable_time(commit.committed_at)));
    match change.on_hand {
        Some(on_hand) => update.set("on_hand", n(on_hand)),
        None => update.add("on_hand", n(change.on_hand_delta)),
    }
    update.add("reserved", n(change.reserved_delta));
    // A warning states the threshold it crossed; one attribute may be set once per update.
    let threshold = match change.warning {
        Some(Warning::Raised { threshold, .. }) => Some(threshold),
        _ => change.threshold,
    };
    if let Some(threshold) = threshold {
        update.set("low_stock_threshold", n(threshold));
    }
    match change.warning {
        Some(Warning::Raised { available, at, .. }) => {
            update.set("low_stock", AttributeValue::Bool(true));
            update.set("low_stock_available", n(available));
            update.set("low_stock_since", s(sortable_time(at)));
        }
        Some(Warning::Cleared { available }) => {
            update.set("low_stock", AttributeValue::Bool(false));
            update.set("low_stock_available", n(available));
            update.remove("low_stock_since");
        }
        None => {}
    }
    match (change.reorder, change.warning) {
        (Some(quantity), _) => update.set("reorder_suggested", n(quantity)),
        (None, Some(Warning::Cleared { .. })) => update.remove("reorder_suggested"),
        _ => {}
    }
    // The open reorder outlives the warning (stock corrected above the threshold before the
    // delivery): only its delivery closes it.
    match change.open_reorder {
        Some(OpenReorder::Opened {
            number,
            quantity,
            at,
        }) => {
            update.set("open_reorder_number", n(number));
            update.set("open_reorder_quantity", n(quantity));
            update.set("open_reorder_since", s(sortable_time(at)));
        }
        Some(OpenReorder::Delivered) => {
            update.remove("open_reorder_number");
            update.remove("open_reorder_quantity");
            update.remove("open_reorder_since");
        }
        None => {}
    }
    let marker = update.name("applied_sequence");
    let expected = update.value(n(applied));
    let condition = format!("attribute_not_exists({marker}) OR {marker} <= {expected}");
    update
        .send(
            target,
            &target.tables.stores,
            key(&commit.aggregate_id, format!("SKU#{sku}")),
            condition,
            OnConditionFailed::AlreadyApplied,
            index,
        )
        .await
}

async fn advance_marker(
    target: &Target<'_>,
    index: usize,
    commit: &LoggedCommit,
    applied: u64,
) -> Result<(), ProjectionError> {
    let mut update = Update::default();
    update.set("store_id", s(&commit.aggregate_id));
    update.set("last_sequence", n(commit.last_sequence()));
    let marker = update.name("last_sequence");
    let expected = update.value(n(applied));
    let condition = format!("attribute_not_exists({marker}) OR {marker} = {expected}");
    update
        .send(
            target,
            &target.tables.stores,
            key(&commit.aggregate_id, "INVENTORY".into()),
            condition,
            OnConditionFailed::MarkerMoved,
            index,
        )
        .await
}
