//! The active-orders projection remembers each order's last applied sequence between batches
//! and counts a batch's orders of one store and day in one update. These tests hold it to the
//! same results as reading everything every time, against dynalite: when another process wrote
//! meanwhile (a lease lost and taken back), when a batch is delivered again, when one
//! batch holds many orders of one store and day, and when it holds many commits of one store's
//! inventory (written once per SKU).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use commit_log::projection::Projection;
use commit_log::projection::ProjectionError;
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::inventory::{InventoryEvent, StockLine};
use domain::order::OrderEvent;
use domain::{CustomerId, Money, Note, OrderId, Quantity, Sku, StoreId};
use read_models::{ActiveOrdersProjection, ActiveOrdersTables, InventoryMarker};
use test_support::{aws_test_config, unique_name};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const DAY: &str = "2025-03-03";

fn at(minute: i64) -> OffsetDateTime {
    datetime!(2025-03-03 08:00 UTC) + Duration::minutes(minute)
}

fn commit(order_id: &str, sequence: u64, event: OrderEvent) -> LoggedCommit {
    one_event_commit("order", order_id, sequence, DomainEvent::Order(event))
}

/// Commit `sequence` of an aggregate, holding one event.
fn one_event_commit(
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
    event: DomainEvent,
) -> LoggedCommit {
    LoggedCommit {
        aggregate_type: aggregate_type.into(),
        aggregate_id: aggregate_id.into(),
        committed_at: at(sequence as i64),
        correlation_id: "memory".into(),
        causation_id: String::new(),
        actor: String::new(),
        traceparent: String::new(),
        events: vec![LoggedEvent {
            sequence,
            position: sequence,
            recorded_at: at(sequence as i64),
            event,
        }],
    }
}

fn placed(order_id: &str, store: &str) -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: OrderId::parse(order_id).unwrap(),
        store_id: StoreId::parse(store).unwrap(),
        customer_id: CustomerId::parse("c-memory").unwrap(),
        lines: Vec::new(),
        note: Note::parse("").unwrap(),
        total: Money::from_cents(450),
        payment_token: None,
    }
}

/// An order's whole life, one event per commit: placed, accepted, preparing, ready, completed.
fn life(order_id: &str, store: &str) -> Vec<LoggedCommit> {
    vec![
        commit(order_id, 1, placed(order_id, store)),
        commit(order_id, 2, OrderEvent::OrderAccepted {}),
        commit(order_id, 3, OrderEvent::PreparationStarted {}),
        commit(order_id, 4, OrderEvent::OrderMarkedReady {}),
        commit(order_id, 5, OrderEvent::OrderCompleted {}),
    ]
}

fn new_order_id() -> String {
    OrderId::from(uuid::Uuid::new_v4()).to_string()
}

struct View {
    client: Client,
    tables: ActiveOrdersTables,
}

impl View {
    async fn new() -> View {
        let client = aws_support::dynamodb(&aws_test_config().await);
        let tables = ActiveOrdersTables {
            orders: unique_name("memory-orders"),
            stores: unique_name("memory-stores"),
        };
        ActiveOrdersProjection::create_tables(&client, &tables)
            .await
            .unwrap();
        View { client, tables }
    }

    /// A view of its own built by applying `commits` one per batch.
    async fn one_by_one(commits: &[LoggedCommit]) -> View {
        let view = View::new().await;
        let process = view.process();
        for commit in commits {
            process.apply(std::slice::from_ref(commit)).await.unwrap();
        }
        view
    }

    /// A projector process of its own: nothing remembered.
    fn process(&self) -> ActiveOrdersProjection {
        ActiveOrdersProjection::new(self.client.clone(), self.tables.clone())
    }

    /// A process of its own recording the inventories' progress in the SKU items only.
    fn sku_items_process(&self) -> ActiveOrdersProjection {
        self.process()
            .with_inventory_marker(InventoryMarker::SkuItems)
    }

    async fn item(&self, table: &str, pk: String, sk: &str) -> HashMap<String, AttributeValue> {
        self.client
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(pk))
            .key("sk", AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .unwrap_or_default()
    }

    async fn metrics(&self, store: &str) -> HashMap<String, AttributeValue> {
        self.item(
            &self.tables.stores,
            format!("STORE#{store}"),
            &format!("DAY#{DAY}"),
        )
        .await
    }

    /// Every item of both tables, by table and key.
    async fn everything(&self) -> Vec<HashMap<String, AttributeValue>> {
        let mut items = Vec::new();
        for table in [&self.tables.orders, &self.tables.stores] {
            let mut start_key = None;
            loop {
                let page = self
                    .client
                    .scan()
                    .table_name(table)
                    .consistent_read(true)
                    .set_exclusive_start_key(start_key)
                    .send()
                    .await
                    .unwrap();
                items.extend_from_slice(page.items());
                match page.last_evaluated_key() {
                    Some(key) if !key.is_empty() => start_key = Some(key.clone()),
                    _ => break,
                }
            }
        }
        items.sort_by_key(|item| format!("{:?}{:?}", item.get("pk"), item.get("sk")));
        // A number set's order is the store's, not the view's.
        for item in &mut items {
            if let Some(AttributeValue::Ns(set)) = item.get_mut("ended") {
                set.sort();
            }
        }
        items
    }

    /// The sequences of the order's timeline entries, in the order they were appended.
    async fn timeline(&self, order_id: &str) -> Vec<i64> {
        let order = self
            .item(&self.tables.orders, format!("ORDER#{order_id}"), "ORDER")
            .await;
        order
            .get("timeline")
            .and_then(|v| v.as_l().ok())
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|entry| entry.as_m().ok())
                    .map(|entry| number_of(entry.get("sequence")))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn number_of(value: Option<&AttributeValue>) -> i64 {
    value
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    number_of(item.get(name))
}

/// Counted once: placed, completed, prepared; nothing left active, no entry left.
fn assert_counted_once(metrics: &HashMap<String, AttributeValue>, order_id: &str) {
    assert_eq!(number(metrics, "orders_placed"), 1, "{metrics:?}");
    assert_eq!(number(metrics, "orders_completed"), 1, "{metrics:?}");
    assert_eq!(number(metrics, "orders_active"), 0, "{metrics:?}");
    assert_eq!(number(metrics, "prep_count"), 1, "{metrics:?}");
    assert_eq!(number(metrics, "prep_ms_total"), 60_000, "{metrics:?}");
    assert!(
        !metrics.contains_key(&format!("order#{order_id}")),
        "{metrics:?}"
    );
}

/// Process A applies the order's first commits and remembers sequence 2; it loses the lease,
/// and process B (nothing remembered) goes on from the last checkpoint to sequence 4. A takes
/// the lease back and gets the commits after its own checkpoint: its remembered sequence is
/// stale, the order write's condition fails, A reads the order and applies only what is new.
#[tokio::test]
async fn a_lease_taken_back_after_another_process_wrote_rereads_and_neither_loses_nor_doubles() {
    let view = View::new().await;
    let store = "store-lease";
    let id = new_order_id();
    let life = life(&id, store);
    let (a, b) = (view.process(), view.process());

    a.apply(&life[..2]).await.unwrap();
    assert_eq!(a.usage().reads, 0, "a new order is not read");
    b.apply(&life[..4]).await.unwrap();
    assert_eq!(
        b.usage().reads,
        1,
        "B assumed a new order, was refused and read it"
    );
    a.apply(&life[2..]).await.unwrap();

    assert_eq!(
        a.usage().reads,
        1,
        "A read the order once, after its condition failed"
    );
    assert_eq!(view.timeline(&id).await, vec![1, 2, 3, 4, 5]);
    assert_counted_once(&view.metrics(store).await, &id);
}

/// The same, but A's checkpoint was moved on by B: A's next commit starts past what A
/// remembers. That is a gap only in A's memory, so A reads the order rather than parking it.
#[tokio::test]
async fn a_remembered_sequence_that_shows_a_gap_is_read_again_not_parked() {
    let view = View::new().await;
    let store = "store-gap";
    let id = new_order_id();
    let life = life(&id, store);
    let (a, b) = (view.process(), view.process());

    a.apply(&life[..2]).await.unwrap();
    b.apply(&life[..4]).await.unwrap();
    a.apply(&life[4..]).await.unwrap();

    assert_eq!(a.usage().reads, 1);
    assert_eq!(view.timeline(&id).await, vec![1, 2, 3, 4, 5]);
    assert_counted_once(&view.metrics(store).await, &id);
}

/// 25 orders of one store and day and 3 of another in one batch: each store day is counted by
/// one update per 20 orders, and each order item written once; delivering the batch again to a
/// process that remembers nothing changes no figure; the next batch completes some of them.
#[tokio::test]
async fn a_batch_counts_several_orders_of_one_store_and_day_together_and_once() {
    let view = View::new().await;
    let (busy, quiet) = ("store-busy", "store-quiet");
    let busy_orders: Vec<String> = (0..25).map(|_| new_order_id()).collect();
    let quiet_orders: Vec<String> = (0..3).map(|_| new_order_id()).collect();
    let lives: Vec<Vec<LoggedCommit>> = busy_orders
        .iter()
        .map(|id| life(id, busy))
        .chain(quiet_orders.iter().map(|id| life(id, quiet)))
        .collect();
    // Placed, accepted and preparing, commits of different orders interleaved.
    let first: Vec<LoggedCommit> = (0..3)
        .flat_map(|step| lives.iter().map(move |life| life[step].clone()))
        .collect();
    let process = view.process();
    process.apply(&first).await.unwrap();

    let usage = process.usage();
    assert_eq!(usage.reads, 0);
    // 28 order items, two updates for the busy store's 25 orders, one for the quiet store's 3.
    assert_eq!(usage.writes, 28 + 2 + 1, "{usage:?}");
    let busy_metrics = view.metrics(busy).await;
    assert_eq!(number(&busy_metrics, "orders_placed"), 25);
    assert_eq!(number(&busy_metrics, "orders_active"), 25);
    assert_eq!(number(&view.metrics(quiet).await, "orders_placed"), 3);

    view.process().apply(&first).await.unwrap();
    let again = view.metrics(busy).await;
    assert_eq!(number(&again, "orders_placed"), 25, "{again:?}");
    assert_eq!(number(&again, "orders_active"), 25);
    assert_eq!(number(&view.metrics(quiet).await, "orders_placed"), 3);

    // Ready and completed for the first ten busy orders, in the process that remembers them.
    let ending: Vec<LoggedCommit> = (3..5)
        .flat_map(|step| lives[..10].iter().map(move |life| life[step].clone()))
        .collect();
    process.apply(&ending).await.unwrap();
    let ended = view.metrics(busy).await;
    assert_eq!(number(&ended, "orders_completed"), 10, "{ended:?}");
    assert_eq!(number(&ended, "orders_active"), 15);
    assert_eq!(number(&ended, "prep_count"), 10);
    for id in &busy_orders[..10] {
        assert!(!ended.contains_key(&format!("order#{id}")));
        assert_eq!(view.timeline(id).await, vec![1, 2, 3, 4, 5]);
    }
    // An open order's entry stands at its last counted commit (placed, 1), where applying the
    // commits one by one leaves it, not at the fold's last: a rebuild compares equal.
    for id in &busy_orders[10..] {
        assert_eq!(number(&ended, &format!("order#{id}")), 1);
    }
}

/// 45 orders of one store and day, each a whole life, interleaved in one batch: counted by three
/// metrics updates (20 orders at most each, queued on the one item) with each chunk's order
/// items written as its update is done; every order item written once. The view equals the one
/// the same commits make applied one per batch, and a second process given the batch again
/// changes nothing.
#[tokio::test]
async fn a_batch_of_whole_lives_writes_each_order_once_and_equals_applying_commit_by_commit() {
    let store = "store-lives";
    let lives: Vec<Vec<LoggedCommit>> = (0..45).map(|_| life(&new_order_id(), store)).collect();
    // The first 40 end in the batch; the last 5 stay open (placed and accepted only).
    let batch: Vec<LoggedCommit> = (0..5)
        .flat_map(|step| {
            lives
                .iter()
                .enumerate()
                .filter(move |(order, _)| step < 2 || *order < 40)
                .map(move |(_, life)| life[step].clone())
        })
        .collect();

    let folded = View::new().await;
    let process = folded.process();
    process.apply(&batch).await.unwrap();
    let usage = process.usage();
    assert_eq!(usage.reads, 0, "{usage:?}");
    assert_eq!(usage.writes, 45 + 3, "{usage:?}");

    let one_by_one = View::one_by_one(&batch).await;
    let view = folded.everything().await;
    assert_eq!(view.len(), 45 + 1);
    let expected = one_by_one.everything().await;
    for (folded_item, expected_item) in view.iter().zip(&expected) {
        assert_eq!(folded_item, expected_item);
    }
    let metrics = folded.metrics(store).await;
    assert_eq!(number(&metrics, "orders_placed"), 45, "{metrics:?}");
    assert_eq!(number(&metrics, "orders_completed"), 40);
    assert_eq!(number(&metrics, "orders_active"), 5);
    assert_eq!(number(&metrics, "prep_count"), 40);

    folded.process().apply(&batch).await.unwrap();
    assert_eq!(
        folded.everything().await,
        view,
        "the redelivery changed the view"
    );
}

/// Commit `sequence` of `store`'s inventory, one event.
fn inventory_commit(store: &str, sequence: u64, event: InventoryEvent) -> LoggedCommit {
    one_event_commit("inventory", store, sequence, DomainEvent::Inventory(event))
}

fn lines(skus: &[(&str, u32)]) -> Vec<StockLine> {
    skus.iter()
        .map(|(sku, quantity)| StockLine {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::new(*quantity).unwrap(),
        })
        .collect()
}

/// A store's inventory through a rush: stock counted for three SKUs, then orders reserving,
/// committing and releasing, a warning raised, a reorder opened, the warning cleared, and a
/// count that replaces stock after deltas; every kind of change a SKU item folds.
fn inventory_rush(store: &str) -> Vec<LoggedCommit> {
    let sku = |name: &str| Sku::parse(name).unwrap();
    let order = |n: u32| OrderId::from(uuid::Uuid::from_u128(u128::from(n) + 1));
    let mut events = Vec::new();
    for name in ["BEAN", "MILK", "CUP"] {
        events.push(InventoryEvent::StockSet {
            store_id: StoreId::parse(store).unwrap(),
            sku: sku(name),
            on_hand: 20,
            low_stock_threshold: 5,
        });
    }
    for n in 0..6 {
        events.push(InventoryEvent::StockReserved {
            order_id: order(n),
            lines: lines(&[("BEAN", 2), ("MILK", 1)]),
        });
    }
    for n in 0..4 {
        events.push(InventoryEvent::ReservationCommitted {
            order_id: order(n),
            lines: lines(&[("BEAN", 2), ("MILK", 1)]),
        });
    }
    events.push(InventoryEvent::ReservationReleased {
        order_id: order(4),
        lines: lines(&[("BEAN", 2), ("MILK", 1)]),
        reason: domain::Reason::parse("customer cancelled").unwrap(),
    });
    events.push(InventoryEvent::LowStockWarningRaised {
        sku: sku("BEAN"),
        available: 4,
        threshold: 5,
    });
    events.push(InventoryEvent::ReorderRequested {
        sku: sku("BEAN"),
        suggested_quantity: 6,
        reorder_number: 1,
    });
    events.push(InventoryEvent::StockRestocked {
        sku: sku("BEAN"),
        quantity: 10,
    });
    events.push(InventoryEvent::LowStockWarningCleared {
        sku: sku("BEAN"),
        available: 14,
    });
    events.push(InventoryEvent::StockAdjusted {
        sku: sku("CUP"),
        delta: -3,
        reason: domain::Reason::parse("broken").unwrap(),
    });
    events.push(InventoryEvent::StockSet {
        store_id: StoreId::parse(store).unwrap(),
        sku: sku("CUP"),
        on_hand: 12,
        low_stock_threshold: 4,
    });
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| inventory_commit(store, i as u64 + 1, event))
        .collect()
}

/// The stores table's items of `store`: its SKUs and its inventory marker.
async fn stock_items(view: &View, store: &str) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    for sk in ["SKU#BEAN", "SKU#MILK", "SKU#CUP", "INVENTORY"] {
        items.push(
            view.item(&view.tables.stores, format!("STORE#{store}"), sk)
                .await,
        );
    }
    items
}

/// A batch of one inventory's commits writes each SKU it touches once and the marker once, and
/// leaves the items that applying the commits one per batch leaves; given again to a process
/// that remembers nothing, it changes nothing.
#[tokio::test]
async fn a_batch_of_one_inventorys_commits_writes_each_sku_once_and_equals_one_by_one() {
    let store = "store-stock";
    let rush = inventory_rush(store);

    let folded = View::new().await;
    let process = folded.process();
    process.apply(&rush).await.unwrap();
    let usage = process.usage();
    assert_eq!(usage.writes, 3 + 1, "three SKUs and the marker: {usage:?}");

    let one_by_one = View::one_by_one(&rush).await;
    let items = stock_items(&folded, store).await;
    assert_eq!(items, stock_items(&one_by_one, store).await);
    let bean = &items[0];
    assert_eq!(number(bean, "on_hand"), 20 - 8 + 10, "{bean:?}");
    assert_eq!(number(bean, "reserved"), 2 * 6 - 2 * 4 - 2, "{bean:?}");
    assert_eq!(bean.get("low_stock"), Some(&AttributeValue::Bool(false)));
    assert!(!bean.contains_key("reorder_suggested"), "{bean:?}");
    assert_eq!(number(bean, "open_reorder_number"), 1, "{bean:?}");
    assert_eq!(
        number(&items[2], "on_hand"),
        12,
        "the count after the adjustment"
    );
    assert_eq!(number(&items[2], "low_stock_threshold"), 4);
    assert_eq!(number(&items[3], "last_sequence"), rush.len() as i64);

    folded.process().apply(&rush).await.unwrap();
    assert_eq!(
        stock_items(&folded, store).await,
        items,
        "the redelivery changed the view"
    );
}

/// An attempt wrote the SKUs of a shorter run (its batch ended at commit 8) and crashed before
/// the marker. The retry's batch runs on past commit 8: the SKUs the first attempt wrote are
/// written commit by commit (what they hold skipped, the rest applied), the others folded; the
/// items end as one by one.
#[tokio::test]
async fn a_run_longer_than_the_one_a_crashed_attempt_wrote_applies_only_what_is_missing() {
    let store = "store-stock-crash";
    let rush = inventory_rush(store);

    let view = View::new().await;
    view.process().apply(&rush[..8]).await.unwrap();
    // The crash: the SKU items hold commits 1-8, the marker does not.
    view.client
        .delete_item()
        .table_name(&view.tables.stores)
        .key("pk", AttributeValue::S(format!("STORE#{store}")))
        .key("sk", AttributeValue::S("INVENTORY".into()))
        .send()
        .await
        .unwrap();
    view.process().apply(&rush).await.unwrap();

    let one_by_one = View::one_by_one(&rush).await;
    assert_eq!(
        stock_items(&view, store).await,
        stock_items(&one_by_one, store).await
    );
}

/// The SKU items of [`inventory_rush`], without the marker.
async fn sku_items(view: &View, store: &str) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = stock_items(view, store).await;
    items.pop();
    items
}

/// With the SKU items recording the progress, a batch writes its SKUs and no marker, and the SKU
/// items end as with the marker; a redelivery to a process that remembers nothing changes
/// nothing, and a process writing the marker item takes the inventory on from there.
#[tokio::test]
async fn with_the_sku_items_as_marker_a_batch_writes_no_marker_and_every_mode_reads_on() {
    let store = "store-sku-marker";
    let rush = inventory_rush(store);

    let view = View::new().await;
    let process = view.sku_items_process();
    process.apply(&rush).await.unwrap();
    assert_eq!(process.usage().writes, 3, "the three SKUs only");
    let marker = stock_items(&view, store).await.pop().unwrap();
    assert!(marker.is_empty(), "no marker item: {marker:?}");

    let with_marker = View::new().await;
    with_marker.process().apply(&rush).await.unwrap();
    let items = sku_items(&view, store).await;
    assert_eq!(items, sku_items(&with_marker, store).await);

    view.sku_items_process().apply(&rush).await.unwrap();
    assert_eq!(sku_items(&view, store).await, items, "the redelivery");

    let next = inventory_commit(
        store,
        rush.len() as u64 + 1,
        InventoryEvent::StockRestocked {
            sku: Sku::parse("MILK").unwrap(),
            quantity: 5,
        },
    );
    view.process()
        .apply(std::slice::from_ref(&next))
        .await
        .unwrap();
    let milk = &sku_items(&view, store).await[1];
    assert_eq!(
        number(milk, "on_hand"),
        number(&items[1], "on_hand") + 5,
        "{milk:?}"
    );
    let marker = stock_items(&view, store).await.pop().unwrap();
    assert_eq!(number(&marker, "last_sequence"), rush.len() as i64 + 1);
}

/// A batch wrote two of the three SKUs its commits touch and died before the third (no marker
/// says so). The retry, delivered from the last checkpoint to a process that remembers nothing,
/// writes the third and skips what the other two hold: the items end as one by one.
#[tokio::test]
async fn a_batch_cut_between_two_sku_writes_is_finished_by_the_retry_without_a_marker() {
    let store = "store-sku-cut";
    let rush = inventory_rush(store);
    let checkpoint = 8;

    let view = View::new().await;
    view.sku_items_process()
        .apply(&rush[..checkpoint])
        .await
        .unwrap();
    let milk_at_checkpoint = sku_items(&view, store).await.remove(1);
    view.sku_items_process()
        .apply(&rush[checkpoint..])
        .await
        .unwrap();
    // The cut: MILK as the dying batch left it, before its write.
    view.client
        .put_item()
        .table_name(&view.tables.stores)
        .set_item(Some(milk_at_checkpoint))
        .send()
        .await
        .unwrap();
    view.sku_items_process()
        .apply(&rush[checkpoint..])
        .await
        .unwrap();

    let one_by_one = View::one_by_one(&rush).await;
    assert_eq!(
        sku_items(&view, store).await,
        sku_items(&one_by_one, store).await
    );
}

/// Two writers overlap on one inventory without a marker item (a lease stolen from a slow
/// process and its batch delivered late): the slow one wrote commits 1-5, the other, knowing
/// nothing, gets 1-10, then the slow one gets 6 to the end. Each skips SKU by SKU what the
/// other wrote and applies the rest once: the items stand as one by one at each step.
#[tokio::test]
async fn a_writer_that_remembers_less_than_another_wrote_neither_loses_nor_doubles_stock() {
    let store = "store-sku-overlap";
    let rush = inventory_rush(store);

    let view = View::new().await;
    let slow = view.sku_items_process();
    slow.apply(&rush[..5]).await.unwrap();
    view.sku_items_process().apply(&rush[..10]).await.unwrap();
    let first_ten = View::one_by_one(&rush[..10]).await;
    assert_eq!(
        sku_items(&view, store).await,
        sku_items(&first_ten, store).await,
        "the other writer, from what the slow one left"
    );
    slow.apply(&rush[5..]).await.unwrap();

    let one_by_one = View::one_by_one(&rush).await;
    assert_eq!(
        sku_items(&view, store).await,
        sku_items(&one_by_one, store).await
    );
}

/// Without a marker item, a commit past everything the SKU items hold is still a gap.
#[tokio::test]
async fn a_gap_behind_the_sku_items_is_still_refused() {
    let store = "store-sku-gap";
    let rush = inventory_rush(store);

    let view = View::new().await;
    view.sku_items_process().apply(&rush[..5]).await.unwrap();
    let refused = view.sku_items_process().apply(&rush[6..]).await;
    assert!(
        matches!(refused, Err(ProjectionError::Poison { index: 0, .. })),
        "{refused:?}"
    );
}
