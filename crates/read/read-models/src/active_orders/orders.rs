//! Order commits: the order item, and the store's daily metrics item.
//!
//! Per commit, without transactions:
//! 1. the order item's `last_sequence` decides skip / apply / gap (read once per batch);
//! 2. the metrics item counts the commit, conditioned on its per-order entry
//!    (`order#<id>` = last sequence counted) being older than the commit: a retry after a crash
//!    between steps 2 and 3 finds the entry and counts nothing twice;
//! 3. the order item is updated, conditioned on `last_sequence` still being the one read;
//! 4. once the order has ended, its metrics entry is replaced by its fingerprint in the item's
//!    `ended` number set (see [`ENDED`]), so metrics items stay small; a crash between steps 3
//!    and 4 is mended when the ending commit is delivered again (it is skipped, but step 4
//!    runs).
//!
//! Why step 4 leaves a fingerprint rather than nothing: two writers can overlap on one order (a
//! lease stolen from a slow worker, the live projector and replay's catch-up during a swap's
//! handover). A writer that read the order before the other one ended it reaches step 2 with a
//! stale `last_sequence`; had the entry simply been removed, its condition would find no entry
//! and count the order a second time. The fingerprint makes step 2's condition fail for an
//! ended order however late the stale writer comes, for as long as the day's item lives.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use commit_log::{DomainEvent, LoggedCommit};
use time::OffsetDateTime;

use super::update::{n, s, OnConditionFailed, Update};
use super::{dynamodb_failure, Target, TOMBSTONE_TTL};
use crate::order_changes::{business_day, parse_time, sortable_time, OrderChanges, Status};
use crate::progress::{unapplied, Step};
use commit_log::projection::ProjectionError;

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
        snapshot = Some(apply_commit(target, index, commit, before).await?);
    }
    Ok(())
}

/// Applies one commit onto `before`, the order as this writer last read or wrote it (which
/// another writer may have moved on since), and returns the order after it.
async fn apply_commit(
    target: &Target<'_>,
    index: usize,
    commit: &LoggedCommit,
    before: OrderSnapshot,
) -> Result<OrderSnapshot, ProjectionError> {
    let applied = match Step::of(commit, before.last_sequence) {
        Step::Skip => {
            // The redelivered last commit of an ended order: the crash that caused the
            // redelivery may have come between its tombstone (step 3) and the removal of its
            // metrics entry (step 4). Removing again changes nothing otherwise.
            let ended = before.status.is_some_and(Status::is_final);
            if ended && commit.last_sequence() == before.last_sequence {
                if let Some(key) = before.metrics_key(&commit.aggregate_id) {
                    forget(target, index, &key, before.last_sequence).await?;
                }
            }
            return Ok(before);
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
    Ok(after)
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

    /// The order's fingerprint in the item's [`ENDED`] set.
    fn fingerprint(&self) -> String {
        fingerprint(&self.order_id).to_string()
    }
}

/// The metrics item's number set of the fingerprints of its ended orders: what is left of an
/// order's entry once it ended. About 20 bytes per order instead of the entry's ~45, and never
/// removed (the item is one store's one day). Two orders of one store and day sharing a
/// fingerprint (odds about n²/2⁶⁵ for n orders: 3·10⁻¹⁴ for a thousand) would leave the later
/// one uncounted; nothing else depends on it.
const ENDED: &str = "ended";

/// 64-bit FNV-1a of the order id: stable across builds and platforms (unlike std's hasher),
/// which the stored set depends on.
fn fingerprint(order_id: &str) -> u64 {
    order_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
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
/// than the commit, or on the order having neither an entry nor an ended fingerprint (its
/// first count). A failed condition means this commit is already counted, or the order has
/// ended since this writer read it (another writer counted everything up to its end).
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
    let ended = update.name(ENDED);
    let counted_up_to = update.value(n(applied));
    let fingerprint = update.value(n(key.fingerprint()));
    let condition = format!(
        "(attribute_not_exists({entry}) AND NOT contains({ended}, {fingerprint})) \
         OR {entry} <= {counted_up_to}"
    );
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

/// Replaces an ended order's entry in the metrics item by its fingerprint in [`ENDED`]. Only
/// the entry of this final commit is replaced; if this step is lost, the entry merely stays.
async fn forget(
    target: &Target<'_>,
    index: usize,
    key: &MetricsKey,
    last_sequence: u64,
) -> Result<(), ProjectionError> {
    let mut update = Update::default();
    update.remove(&key.entry());
    update.add(ENDED, AttributeValue::Ns(vec![key.fingerprint()]));
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

#[cfg(test)]
mod tests {
    use commit_log::LoggedEvent;
    use domain::order::OrderEvent;
    use domain::{CustomerId, Money, Note, OrderId, StoreId};
    use test_support::{aws_test_config, unique_name};
    use time::macros::datetime;

    use super::*;
    use crate::active_orders::{ActiveOrdersProjection, ActiveOrdersTables};

    const STORE: &str = "store-overlap";

    fn commit(order_id: &str, sequence: u64, minute: i64, event: OrderEvent) -> LoggedCommit {
        let at = datetime!(2025-03-03 08:00 UTC) + time::Duration::minutes(minute);
        LoggedCommit {
            aggregate_type: "order".into(),
            aggregate_id: order_id.into(),
            committed_at: at,
            correlation_id: "overlap".into(),
            causation_id: String::new(),
            events: vec![LoggedEvent {
                sequence,
                position: sequence,
                recorded_at: at,
                event: DomainEvent::Order(event),
            }],
        }
    }

    fn placed(order_id: &str) -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: OrderId::parse(order_id).expect("an order id"),
            store_id: StoreId::parse(STORE).expect("a store id"),
            customer_id: CustomerId::parse("c-overlap").expect("a customer id"),
            lines: Vec::new(),
            note: Note::parse("").expect("an empty note"),
            total: Money::from_cents(0),
            payment_token: None,
        }
    }

    async fn metrics(target: &Target<'_>) -> HashMap<String, AttributeValue> {
        target
            .client
            .get_item()
            .table_name(&target.tables.stores)
            .key("pk", s(format!("STORE#{STORE}")))
            .key("sk", s("DAY#2025-03-03"))
            .consistent_read(true)
            .send()
            .await
            .expect("the metrics item is readable")
            .item
            .expect("the metrics item exists")
    }

    fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Two writers on one order (a lease stolen from a slow worker, or replay's catch-up next to
    /// the live projector): the slow one read the order before the other ended it, and only
    /// then reaches its metrics step, after the other has already cleaned the order's entry up.
    #[tokio::test]
    async fn a_second_writer_with_a_stale_read_does_not_count_an_ended_order_again() {
        let client = aws_support::dynamodb(&aws_test_config().await);
        let tables = ActiveOrdersTables {
            orders: unique_name("overlap-orders"),
            stores: unique_name("overlap-stores"),
        };
        ActiveOrdersProjection::create_tables(&client, &tables)
            .await
            .expect("tables");
        let target = Target {
            client: &client,
            tables,
            handover: false,
        };
        let id = OrderId::from(uuid::Uuid::new_v4()).to_string();
        let life = [
            commit(&id, 1, 0, placed(&id)),
            commit(&id, 2, 1, OrderEvent::OrderAccepted {}),
            commit(&id, 3, 2, OrderEvent::PreparationStarted {}),
            commit(&id, 4, 6, OrderEvent::OrderMarkedReady {}),
            commit(&id, 5, 7, OrderEvent::OrderCompleted {}),
        ];
        let (completed, earlier) = life.split_last().expect("a life");
        let indexed: Vec<(usize, &LoggedCommit)> = earlier.iter().enumerate().collect();
        apply(&target, &indexed)
            .await
            .expect("the order's life so far");

        // The slow writer reads the order (ready, sequence 4)...
        let stale = load(&target, 0, &id).await.expect("the order");
        // ...the other writer completes it, counts it and cleans its entry up...
        apply(&target, &[(0, completed)]).await.expect("completed");
        let after_first = metrics(&target).await;
        assert_eq!(number(&after_first, "orders_completed"), 1);
        assert!(!after_first.contains_key(&format!("order#{id}")));
        // ...then the slow writer goes on from what it read.
        let second = apply_commit(&target, 0, completed, stale).await;

        let after_second = metrics(&target).await;
        assert_eq!(
            number(&after_second, "orders_completed"),
            1,
            "completed counted twice: {after_second:?}"
        );
        assert_eq!(number(&after_second, "orders_active"), 0);
        assert_eq!(number(&after_second, "orders_placed"), 1);
        // Its order write finds the marker moved: a transient failure, whose retry re-reads
        // the order and skips the commit.
        assert!(
            matches!(second, Err(ProjectionError::Transient(_))),
            "{second:?}"
        );
        apply(&target, &[(0, completed)]).await.expect("the retry");
        assert_eq!(number(&metrics(&target).await, "orders_completed"), 1);
    }

    /// The same for the order's first commit: a writer that read no order yet counts its
    /// placement after the other writer has placed, ended and cleaned it up.
    #[tokio::test]
    async fn a_second_writer_that_read_no_order_does_not_count_an_ended_order_again() {
        let client = aws_support::dynamodb(&aws_test_config().await);
        let tables = ActiveOrdersTables {
            orders: unique_name("overlap-orders"),
            stores: unique_name("overlap-stores"),
        };
        ActiveOrdersProjection::create_tables(&client, &tables)
            .await
            .expect("tables");
        let target = Target {
            client: &client,
            tables,
            handover: false,
        };
        let id = OrderId::from(uuid::Uuid::new_v4()).to_string();
        let first = commit(&id, 1, 0, placed(&id));
        let cancelled = commit(
            &id,
            2,
            1,
            OrderEvent::OrderCancelled {
                reason: domain::Reason::parse("changed my mind").expect("a reason"),
                refund_due: false,
                stock_reserved: false,
            },
        );
        let stale = load(&target, 0, &id).await.expect("no order yet");
        apply(&target, &[(0, &first), (1, &cancelled)])
            .await
            .expect("placed and cancelled");
        let _ = apply_commit(&target, 0, &first, stale).await;

        let counted = metrics(&target).await;
        assert_eq!(number(&counted, "orders_placed"), 1, "{counted:?}");
        assert_eq!(number(&counted, "orders_cancelled"), 1);
        assert_eq!(number(&counted, "orders_active"), 0);
    }
}
