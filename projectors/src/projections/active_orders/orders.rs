//! Order commits: the order item, and the store's daily metrics item.
//!
//! Per commit, without transactions:
//! 1. the order item's `last_sequence` decides skip / apply / gap (read once per batch);
//! 2. the metrics item counts the commit, conditioned on its per-order entry
//!    (`order#<id>` = last sequence counted) being older than the commit: a retry after a crash
//!    between steps 2 and 3 finds the entry and counts nothing twice;
//! 3. the order item is updated, conditioned on `last_sequence` still being the one read;
//! 4. once the order has ended, its metrics entry is removed (the tombstone's `last_sequence`
//!    guards from then on), so metrics items stay small; a crash between steps 3 and 4 is
//!    mended when the ending commit is delivered again (it is skipped, but step 4 runs).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use commit_log::{DomainEvent, LoggedCommit};
use time::OffsetDateTime;

use super::update::{n, s, OnConditionFailed, Update};
use super::{dynamodb_failure, Target, TOMBSTONE_TTL};
use crate::projection::ProjectionError;
use crate::projections::order_changes::{
    business_day, parse_time, sortable_time, OrderChanges, Status,
};
use crate::projections::progress::{unapplied, Step};

/// What the projection needs to know about an order it has seen: read from the order item.
#[derive(Debug, Clone, Default)]
struct OrderSnapshot {
    last_sequence: u64,
    store_id: Option<String>,
    placed_at: Option<OffsetDateTime>,
    preparing_at: Option<OffsetDateTime>,
    status: Option<Status>,
}

impl OrderSnapshot {
    /// Where the order is counted, once it has been placed.
    fn metrics_key(&self, order_id: &str) -> Option<MetricsKey> {
        Some(MetricsKey {
            store_id: self.store_id.clone()?,
            day: business_day(self.placed_at?),
            order_id: order_id.to_owned(),
        })
    }

    fn after(&self, changes: &OrderChanges, last_sequence: u64) -> OrderSnapshot {
        OrderSnapshot {
            last_sequence,
            store_id: changes
                .placed
                .as_ref()
                .map(|placed| placed.store_id.clone())
                .or_else(|| self.store_id.clone()),
            placed_at: changes
                .placed
                .as_ref()
                .map(|placed| placed.placed_at)
                .or(self.placed_at),
            preparing_at: changes.preparing_at.or(self.preparing_at),
            status: changes.status.or(self.status),
        }
    }
}

/// Applies one order's commits in order.
pub(super) async fn apply(
    target: &Target<'_>,
    commits: &[(usize, &LoggedCommit)],
) -> Result<(), ProjectionError> {
    let mut snapshot: Option<OrderSnapshot> = None;
    for &(index, commit) in commits {
        let before = match snapshot.take() {
            Some(known) => known,
            None => load(target, index, &commit.aggregate_id).await?,
        };
        let applied = match Step::of(commit, before.last_sequence) {
            Step::Skip => {
                // The redelivered last commit of an ended order: the crash that caused the
                // redelivery may have come between its tombstone (step 3) and the removal of
                // its metrics entry (step 4). Removing again changes nothing otherwise.
                let ended = before.status.is_some_and(Status::is_final);
                if ended && commit.last_sequence() == before.last_sequence {
                    if let Some(key) = before.metrics_key(&commit.aggregate_id) {
                        forget(target, index, &key, before.last_sequence).await?;
                    }
                }
                snapshot = Some(before);
                continue;
            }
            Step::Gap { applied } => return Err(target.gap(index, commit, applied)),
            Step::Apply { applied } => applied,
        };
        let mut changes = OrderChanges::default();
        for event in unapplied(commit, applied) {
            let DomainEvent::Order(order_event) = &event.event else {
                return Err(ProjectionError::Poison {
                    index,
                    reason: "an order commit holds a non-order event".into(),
                });
            };
            changes.apply(event.sequence, event.recorded_at, order_event);
        }
        let after = before.after(&changes, commit.last_sequence());
        let (Some(store_id), Some(placed_at)) = (&after.store_id, after.placed_at) else {
            return Err(ProjectionError::Poison {
                index,
                reason: "order events before OrderPlaced".into(),
            });
        };
        let metrics_key = MetricsKey {
            store_id: store_id.clone(),
            day: business_day(placed_at),
            order_id: commit.aggregate_id.clone(),
        };
        let counts = Counts::of(&before, &changes);
        if counts.any() {
            count(target, index, &metrics_key, &counts, applied, commit).await?;
        }
        write_order(target, index, commit, applied, &after, &changes).await?;
        // Once ended (by this commit, or earlier with a crash before step 4), the tombstone's
        // marker guards the order: its metrics entry goes.
        if after.status.is_some_and(Status::is_final) {
            forget(target, index, &metrics_key, commit.last_sequence()).await?;
        }
        snapshot = Some(after);
    }
    Ok(())
}

fn order_key(order_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(format!("ORDER#{order_id}"))),
        ("sk".to_owned(), s("ORDER")),
    ])
}

async fn load(
    target: &Target<'_>,
    index: usize,
    order_id: &str,
) -> Result<OrderSnapshot, ProjectionError> {
    let output = target
        .client
        .get_item()
        .table_name(&target.tables.orders)
        .set_key(Some(order_key(order_id)))
        .consistent_read(true)
        .projection_expression("last_sequence, store_id, placed_at, preparing_at, #status")
        .expression_attribute_names("#status", "status")
        .send()
        .await
        .map_err(|e| dynamodb_failure(index, e))?;
    let Some(item) = output.item() else {
        return Ok(OrderSnapshot::default());
    };
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let last_sequence = item
        .get("last_sequence")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ProjectionError::Poison {
            index,
            reason: format!("order item {order_id} has no readable last_sequence"),
        })?;
    Ok(OrderSnapshot {
        last_sequence,
        store_id: text("store_id"),
        placed_at: text("placed_at").as_deref().and_then(parse_time),
        preparing_at: text("preparing_at").as_deref().and_then(parse_time),
        status: text("status").as_deref().and_then(Status::parse),
    })
}

/// Writes the order item: conditioned on the marker read, advancing it to the commit's last
/// sequence together with the view change.
async fn write_order(
    target: &Target<'_>,
    index: usize,
    commit: &LoggedCommit,
    applied: u64,
    after: &OrderSnapshot,
    changes: &OrderChanges,
) -> Result<(), ProjectionError> {
    let mut update = Update::default();
    let store_id = after.store_id.clone().unwrap_or_default();
    update.set("last_sequence", n(commit.last_sequence()));
    if let Some(placed) = &changes.placed {
        update.set("order_id", s(&commit.aggregate_id));
        update.set("store_id", s(&placed.store_id));
        update.set("customer_id", s(&placed.customer_id));
        update.set("placed_at", s(sortable_time(placed.placed_at)));
        update.set("total_cents", n(placed.total_cents));
        update.set(
            "items",
            AttributeValue::L(placed.lines.iter().map(line).collect()),
        );
        // DynamoDB keeps no empty strings in older emulators; no note is no attribute.
        if !placed.note.is_empty() {
            update.set("note", s(&placed.note));
        }
        if !after.status.is_some_and(Status::is_final) {
            update.set("gsi2pk", s(format!("STORE#{store_id}")));
            update.set(
                "gsi2sk",
                s(format!(
                    "{}#{}",
                    sortable_time(placed.placed_at),
                    commit.aggregate_id
                )),
            );
        }
    }
    let times = [
        ("accepted_at", changes.accepted_at),
        ("payment_captured_at", changes.payment_captured_at),
        ("preparing_at", changes.preparing_at),
        ("ready_at", changes.ready_at),
        ("ended_at", changes.ended_at),
    ];
    for (attribute, at) in times {
        if let Some(at) = at {
            update.set(attribute, s(sortable_time(at)));
        }
    }
    if let Some(payment_id) = &changes.payment_id {
        update.set("payment_status", s("captured"));
        update.set("payment_id", s(payment_id));
    } else if changes.payment_declined {
        update.set("payment_status", s("declined"));
    }
    if let Some(reason) = &changes.end_reason {
        update.set("end_reason", s(reason));
    }
    if let (Some(status), Some(status_at)) = (changes.status, changes.status_at) {
        update.set("status", s(status.as_str()));
        update.set("status_at", s(sortable_time(status_at)));
        if status.is_final() {
            for key in ["gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"] {
                if changes.placed.is_none() || key.starts_with("gsi1") {
                    update.remove(key);
                }
            }
            let expires_at = status_at + TOMBSTONE_TTL;
            update.set("expires_at", n(expires_at.unix_timestamp()));
        } else {
            update.set(
                "gsi1pk",
                s(format!("STORE#{store_id}#STATUS#{}", status.as_str())),
            );
            update.set(
                "gsi1sk",
                s(format!(
                    "{}#{}",
                    sortable_time(status_at),
                    commit.aggregate_id
                )),
            );
        }
    }
    update.append(
        "timeline",
        changes
            .timeline
            .iter()
            .map(|entry| {
                let mut fields = HashMap::from([
                    ("event".to_owned(), s(entry.event)),
                    ("at".to_owned(), s(sortable_time(entry.at))),
                    ("sequence".to_owned(), n(entry.sequence)),
                ]);
                if let Some(status) = entry.status {
                    fields.insert("status".to_owned(), s(status.as_str()));
                }
                if let Some(detail) = &entry.detail {
                    fields.insert("detail".to_owned(), s(detail));
                }
                AttributeValue::M(fields)
            })
            .collect(),
    );
    let marker = update.name("last_sequence");
    let pk = update.name("pk");
    let expected = update.value(n(applied));
    let condition = format!("attribute_not_exists({pk}) OR {marker} = {expected}");
    update
        .send(
            target.client,
            &target.tables.orders,
            order_key(&commit.aggregate_id),
            condition,
            OnConditionFailed::MarkerMoved,
            index,
        )
        .await
}

fn line(line: &domain::order::PricedLine) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("sku".to_owned(), s(line.sku.as_str())),
        ("name".to_owned(), s(line.name.as_str())),
        ("quantity".to_owned(), n(line.quantity.get())),
        (
            "customisations".to_owned(),
            AttributeValue::L(line.customisations.iter().map(|c| s(c.as_str())).collect()),
        ),
        ("unit_price_cents".to_owned(), n(line.unit_price.cents())),
        ("line_total_cents".to_owned(), n(line.line_total.cents())),
    ]))
}

/// The metrics item an order counts in: its store's item for the UTC day it was placed on.
struct MetricsKey {
    store_id: String,
    day: String,
    order_id: String,
}

impl MetricsKey {
    fn key(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), s(format!("STORE#{}", self.store_id))),
            ("sk".to_owned(), s(format!("DAY#{}", self.day))),
        ])
    }

    /// The attribute recording the last sequence of this order counted in the item.
    fn entry(&self) -> String {
        format!("order#{}", self.order_id)
    }
}

/// What one commit adds to the store's metrics.
#[derive(Debug, Default)]
struct Counts {
    placed: i64,
    active: i64,
    completed: i64,
    cancelled: i64,
    rejected: i64,
    prep_ms: i64,
    prepared: i64,
}

impl Counts {
    fn of(before: &OrderSnapshot, changes: &OrderChanges) -> Counts {
        let mut counts = Counts::default();
        if changes.placed.is_some() {
            counts.placed = 1;
            counts.active = 1;
        }
        let was_final = before.status.is_some_and(Status::is_final);
        if let (Some(status), false) = (changes.status, was_final) {
            match status {
                Status::Completed => counts.completed = 1,
                Status::Cancelled => counts.cancelled = 1,
                Status::Rejected => counts.rejected = 1,
                _ => {}
            }
            if status.is_final() {
                counts.active -= 1;
            }
        }
        let preparing_at = changes.preparing_at.or(before.preparing_at);
        if let (Some(ready_at), Some(preparing_at)) = (changes.ready_at, preparing_at) {
            counts.prep_ms = i64::try_from((ready_at - preparing_at).whole_milliseconds())
                .unwrap_or(i64::MAX)
                .max(0);
            counts.prepared = 1;
        }
        counts
    }

    fn any(&self) -> bool {
        self.placed != 0
            || self.active != 0
            || self.completed != 0
            || self.cancelled != 0
            || self.rejected != 0
            || self.prepared != 0
    }
}

/// Counts the commit in the metrics item, once: conditioned on the order's entry being older
/// than the commit (a failed condition means this commit is already counted).
async fn count(
    target: &Target<'_>,
    index: usize,
    key: &MetricsKey,
    counts: &Counts,
    applied: u64,
    commit: &LoggedCommit,
) -> Result<(), ProjectionError> {
    let mut update = Update::default();
    update.set("store_id", s(&key.store_id));
    update.set("business_day", s(&key.day));
    update.set(&key.entry(), n(commit.last_sequence()));
    let counters = [
        ("orders_placed", counts.placed),
        ("orders_active", counts.active),
        ("orders_completed", counts.completed),
        ("orders_cancelled", counts.cancelled),
        ("orders_rejected", counts.rejected),
        ("prep_ms_total", counts.prep_ms),
        ("prep_count", counts.prepared),
    ];
    for (attribute, delta) in counters {
        update.add(attribute, n(delta));
    }
    let entry = update.name(&key.entry());
    let counted_up_to = update.value(n(applied));
    let condition = format!("attribute_not_exists({entry}) OR {entry} <= {counted_up_to}");
    update
        .send(
            target.client,
            &target.tables.stores,
            key.key(),
            condition,
            OnConditionFailed::AlreadyApplied,
            index,
        )
        .await
}

/// Removes an ended order's entry from the metrics item. Only the entry of this final commit is
/// removed; if this step is lost, the entry merely stays.
async fn forget(
    target: &Target<'_>,
    index: usize,
    key: &MetricsKey,
    last_sequence: u64,
) -> Result<(), ProjectionError> {
    let mut update = Update::default();
    update.remove(&key.entry());
    let entry = update.name(&key.entry());
    let last = update.value(n(last_sequence));
    // False when the entry is gone already: nothing to do.
    let condition = format!("{entry} <= {last}");
    update
        .send(
            target.client,
            &target.tables.stores,
            key.key(),
            condition,
            OnConditionFailed::AlreadyApplied,
            index,
        )
        .await
}
