//! The three read models against real stores (dynalite, PostgreSQL): what a barista dashboard,
//! a support agent and an analyst read after the log is applied, and that redelivery, replay in
//! other batch sizes and gaps behave.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::inventory::{InventoryEvent, StockLine};
use domain::loyalty::LoyaltyEvent;
use domain::menu::Category;
use domain::order::{OrderEvent, PricedLine};
use domain::{
    CustomerId, Customisation, ExternalRef, ItemName, MenuEvent, Money, Note, OrderId, Points,
    Quantity, Reason, Sku, StoreId, Tier,
};
use read_models::{
    ActiveOrdersProjection, ActiveOrdersTables, AnalyticsProjection, HistoryProjection, SchemaName,
    BY_STATUS_INDEX, OPEN_BY_STORE_INDEX,
};
use sqlx::PgPool;
use test_support::{aws_test_config, fresh_database, unique_name};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

// ------------------------------------------------------------------ the log a test applies

const STORE: &str = "store-1";
const OTHER_STORE: &str = "store-2";
/// 08:00 UTC on a business day; the other times are minutes after it.
const MORNING: OffsetDateTime = datetime!(2025-03-03 08:00 UTC);

fn minutes(n: i64) -> OffsetDateTime {
    MORNING + Duration::minutes(n)
}

fn order_id(n: u128) -> String {
    OrderId::from(uuid::Uuid::from_u128(0x1000 + n)).to_string()
}

/// Builds commits with consecutive global positions, as the relay would deliver them.
#[derive(Default)]
struct Log {
    position: u64,
    commits: Vec<LoggedCommit>,
}

impl Log {
    fn commit(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        first_sequence: u64,
        at: OffsetDateTime,
        events: Vec<DomainEvent>,
    ) -> LoggedCommit {
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                self.position += 1;
                LoggedEvent {
                    sequence: first_sequence + i as u64,
                    position: self.position,
                    recorded_at: at,
                    event,
                }
            })
            .collect();
        let commit = LoggedCommit {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            committed_at: at,
            correlation_id: "flow".into(),
            causation_id: String::new(),
            actor: String::new(),
            traceparent: String::new(),
            events,
        };
        self.commits.push(commit.clone());
        commit
    }

    fn order(&mut self, id: &str, sequence: u64, at: OffsetDateTime, events: Vec<OrderEvent>) {
        let events = events.into_iter().map(DomainEvent::Order).collect();
        self.commit("order", id, sequence, at, events);
    }

    /// An order's life from placement; `steps` of: accepted, paid, preparing, ready, completed.
    fn order_life(
        &mut self,
        n: u128,
        store: &str,
        customer: &str,
        placed_minute: i64,
        steps: usize,
    ) -> String {
        let id = order_id(n);
        let latte = line("LATTE-12", "Latte", 2, &["oat milk", "extra shot"], 450);
        let croissant = line("CROISSANT", "Croissant", 1, &[], 300);
        let total = latte.line_total + croissant.line_total;
        self.order(
            &id,
            1,
            minutes(placed_minute),
            vec![OrderEvent::OrderPlaced {
                order_id: OrderId::parse(&id).unwrap(),
                store_id: StoreId::parse(store).unwrap(),
                customer_id: CustomerId::parse(customer).unwrap(),
                lines: vec![latte, croissant],
                note: Note::parse("no lid please").unwrap(),
                total,
                payment_token: None,
            }],
        );
        let later = [
            OrderEvent::OrderAccepted {},
            OrderEvent::PaymentCaptured {
                payment_id: ExternalRef::parse(&format!("pay-{n}")).unwrap(),
                amount: total,
            },
            OrderEvent::PreparationStarted {},
            OrderEvent::OrderMarkedReady {},
            OrderEvent::OrderCompleted {},
        ];
        // Preparation takes 4 minutes; every other step 1.
        let offsets = [1, 2, 3, 7, 8];
        for (step, event) in later.into_iter().enumerate().take(steps) {
            self.order(
                &id,
                step as u64 + 2,
                minutes(placed_minute + offsets[step]),
                vec![event],
            );
        }
        id
    }

    fn inventory(&mut self, store: &str, sequence: u64, minute: i64, events: Vec<InventoryEvent>) {
        let events = events.into_iter().map(DomainEvent::Inventory).collect();
        self.commit("inventory", store, sequence, minutes(minute), events);
    }

    fn loyalty(&mut self, customer: &str, sequence: u64, minute: i64, events: Vec<LoyaltyEvent>) {
        let events = events.into_iter().map(DomainEvent::Loyalty).collect();
        self.commit("loyalty", customer, sequence, minutes(minute), events);
    }
}

fn line(sku: &str, name: &str, quantity: u32, customisations: &[&str], cents: i64) -> PricedLine {
    let quantity = Quantity::new(quantity).unwrap();
    PricedLine {
        sku: Sku::parse(sku).unwrap(),
        name: ItemName::parse(name).unwrap(),
        quantity,
        customisations: customisations
            .iter()
            .map(|c| Customisation::parse(c).unwrap())
            .collect(),
        unit_price: Money::from_cents(cents),
        line_total: Money::from_cents(cents) * quantity,
    }
}

fn stock_line(sku: &str, quantity: u32) -> StockLine {
    StockLine {
        sku: Sku::parse(sku).unwrap(),
        quantity: Quantity::new(quantity).unwrap(),
    }
}

/// A morning at store-1 (and one order at store-2):
/// - order 1: placed 08:00, completed (prep 4 min);
/// - order 2: placed 08:05, ready (prep 4 min);
/// - order 3: placed 08:10, only placed;
/// - order 4: placed 08:12, cancelled;
/// - order 5: store-2, placed 08:20, preparing;
/// - store-1 inventory: counts, reservations, a low-stock warning on LATTE-12;
/// - loyalty for c-1: two earnings, the second upgrading to Silver, and a redemption;
/// - the menu: two items and a price change.
fn morning() -> Vec<LoggedCommit> {
    let mut log = Log::default();
    log.commit(
        "menu",
        "menu",
        1,
        minutes(-60),
        vec![
            DomainEvent::Menu(MenuEvent::MenuItemAdded {
                sku: Sku::parse("LATTE-12").unwrap(),
                name: ItemName::parse("Latte").unwrap(),
                price: Money::from_cents(450),
                category: Category::Drink,
            }),
            DomainEvent::Menu(MenuEvent::MenuItemAdded {
                sku: Sku::parse("CROISSANT").unwrap(),
                name: ItemName::parse("Croissant").unwrap(),
                price: Money::from_cents(300),
                category: Category::Food,
            }),
        ],
    );
    log.inventory(
        STORE,
        1,
        -30,
        vec![InventoryEvent::StockSet {
            store_id: StoreId::parse(STORE).unwrap(),
            sku: Sku::parse("LATTE-12").unwrap(),
            on_hand: 6,
            low_stock_threshold: 3,
        }],
    );
    log.inventory(
        STORE,
        2,
        -29,
        vec![InventoryEvent::StockSet {
            store_id: StoreId::parse(STORE).unwrap(),
            sku: Sku::parse("CROISSANT").unwrap(),
            on_hand: 20,
            low_stock_threshold: 2,
        }],
    );
    let first = log.order_life(1, STORE, "c-1", 0, 5);
    log.inventory(
        STORE,
        3,
        1,
        vec![InventoryEvent::StockReserved {
            order_id: OrderId::parse(&first).unwrap(),
            lines: vec![stock_line("LATTE-12", 2), stock_line("CROISSANT", 1)],
        }],
    );
    let second = log.order_life(2, STORE, "c-2", 5, 4);
    log.inventory(
        STORE,
        4,
        6,
        vec![
            InventoryEvent::StockReserved {
                order_id: OrderId::parse(&second).unwrap(),
                lines: vec![stock_line("LATTE-12", 2), stock_line("CROISSANT", 1)],
            },
            InventoryEvent::LowStockWarningRaised {
                sku: Sku::parse("LATTE-12").unwrap(),
                available: 2,
                threshold: 3,
            },
            InventoryEvent::ReorderRequested {
                sku: Sku::parse("LATTE-12").unwrap(),
                suggested_quantity: 4,
                reorder_number: 1,
            },
        ],
    );
    log.inventory(
        STORE,
        7,
        8,
        vec![InventoryEvent::ReservationCommitted {
            order_id: OrderId::parse(&first).unwrap(),
            lines: vec![stock_line("LATTE-12", 2), stock_line("CROISSANT", 1)],
        }],
    );
    log.order_life(3, STORE, "c-1", 10, 0);
    let fourth = log.order_life(4, STORE, "c-3", 12, 1);
    log.order(
        &fourth,
        3,
        minutes(14),
        vec![OrderEvent::OrderCancelled {
            reason: Reason::parse("customer changed their mind").unwrap(),
            refund_due: false,
            stock_reserved: false,
        }],
    );
    log.order_life(5, OTHER_STORE, "c-1", 20, 3);
    log.loyalty(
        "c-1",
        1,
        9,
        vec![LoyaltyEvent::PointsEarned {
            customer_id: CustomerId::parse("c-1").unwrap(),
            order_id: OrderId::parse(&first).unwrap(),
            amount: Money::from_cents(1200),
            tier: Tier::Bronze,
            points: Points(120),
        }],
    );
    log.loyalty(
        "c-1",
        2,
        30,
        vec![
            LoyaltyEvent::PointsEarned {
                customer_id: CustomerId::parse("c-1").unwrap(),
                order_id: OrderId::parse(&order_id(5)).unwrap(),
                amount: Money::from_cents(9000),
                tier: Tier::Bronze,
                points: Points(900),
            },
            LoyaltyEvent::TierUpgraded {
                from: Tier::Bronze,
                to: Tier::Silver,
            },
        ],
    );
    log.loyalty(
        "c-1",
        4,
        40,
        vec![LoyaltyEvent::PointsRedeemed {
            points: Points(500),
            reference: ExternalRef::parse("free-drink-1").unwrap(),
        }],
    );
    log.commit(
        "menu",
        "menu",
        3,
        minutes(45),
        vec![DomainEvent::Menu(MenuEvent::MenuItemPriceChanged {
            sku: Sku::parse("LATTE-12").unwrap(),
            price: Money::from_cents(475),
        })],
    );
    log.commits
}

/// The commits in a deterministic shuffled order (a small LCG: no randomness crate needed).
fn shuffled(commits: &[LoggedCommit], seed: u64) -> Vec<LoggedCommit> {
    let mut out = commits.to_vec();
    let mut state = seed;
    for i in (1..out.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.swap(i, (state >> 33) as usize % (i + 1));
    }
    out
}

/// Applies `commits` in batches of the given sizes (cycled), as a live consumer would.
async fn apply_in_batches(projection: &dyn Projection, commits: &[LoggedCommit], sizes: &[usize]) {
    let mut rest = commits;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at((*size).min(rest.len()));
        projection.apply(batch).await.unwrap();
        rest = tail;
    }
}

/// A commit of a new order that starts at sequence 2: something before it is missing.
fn gap_commit() -> LoggedCommit {
    let mut log = Log {
        position: 1000,
        ..Log::default()
    };
    log.commit(
        "order",
        &order_id(99),
        2,
        minutes(50),
        vec![DomainEvent::Order(OrderEvent::OrderAccepted {})],
    )
}

/// A commit that is fine on its own: a new order placed.
fn fine_commit() -> LoggedCommit {
    let mut log = Log {
        position: 2000,
        ..Log::default()
    };
    log.order_life(98, STORE, "c-9", 55, 0);
    log.commits.remove(0)
}

async fn assert_gap_is_poison(projection: &dyn Projection) {
    let error = projection
        .apply(&[fine_commit(), gap_commit()])
        .await
        .unwrap_err();
    match error {
        ProjectionError::Poison { index, reason } => {
            assert_eq!(index, 1);
            assert!(reason.starts_with("gap"), "{reason}");
        }
        other => panic!("expected poison, got {other:?}"),
    }
}

// ------------------------------------------------------------------ DynamoDB active orders

struct Dashboard {
    client: Client,
    tables: ActiveOrdersTables,
}

impl Dashboard {
    async fn new() -> (Dashboard, ActiveOrdersProjection) {
        let client = aws_support::dynamodb(&aws_test_config().await);
        let tables = ActiveOrdersTables {
            orders: unique_name("active-orders"),
            stores: unique_name("store-metrics"),
        };
        ActiveOrdersProjection::create_tables(&client, &tables)
            .await
            .unwrap();
        // A second call finds the tables and changes nothing.
        ActiveOrdersProjection::create_tables(&client, &tables)
            .await
            .unwrap();
        let projection = ActiveOrdersProjection::new(client.clone(), tables.clone());
        (Dashboard { client, tables }, projection)
    }

    /// The store's open orders, oldest first: one query on the sparse index.
    async fn open_orders(&self, store: &str) -> Vec<HashMap<String, AttributeValue>> {
        self.client
            .query()
            .table_name(&self.tables.orders)
            .index_name(OPEN_BY_STORE_INDEX)
            .key_condition_expression("gsi2pk = :store")
            .expression_attribute_values(":store", s(&format!("STORE#{store}")))
            .send()
            .await
            .unwrap()
            .items()
            .to_vec()
    }

    /// The store's open orders in one status, longest in it first.
    async fn in_status(&self, store: &str, status: &str) -> Vec<String> {
        let items = self
            .client
            .query()
            .table_name(&self.tables.orders)
            .index_name(BY_STATUS_INDEX)
            .key_condition_expression("gsi1pk = :key")
            .expression_attribute_values(":key", s(&format!("STORE#{store}#STATUS#{status}")))
            .send()
            .await
            .unwrap()
            .items()
            .to_vec();
        items.iter().map(|item| text(item, "order_id")).collect()
    }

    async fn metrics(&self, store: &str, day: &str) -> HashMap<String, AttributeValue> {
        self.client
            .get_item()
            .table_name(&self.tables.stores)
            .key("pk", s(&format!("STORE#{store}")))
            .key("sk", s(&format!("DAY#{day}")))
            .send()
            .await
            .unwrap()
            .item()
            .cloned()
            .unwrap()
    }

    /// The store's SKUs under their low-stock threshold.
    async fn low_stock(&self, store: &str) -> Vec<HashMap<String, AttributeValue>> {
        self.client
            .query()
            .table_name(&self.tables.stores)
            .key_condition_expression("pk = :store AND begins_with(sk, :sku)")
            .filter_expression("low_stock = :yes")
            .expression_attribute_values(":store", s(&format!("STORE#{store}")))
            .expression_attribute_values(":sku", s("SKU#"))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await
            .unwrap()
            .items()
            .to_vec()
    }

    async fn order(&self, id: &str) -> HashMap<String, AttributeValue> {
        self.client
            .get_item()
            .table_name(&self.tables.orders)
            .key("pk", s(&format!("ORDER#{id}")))
            .key("sk", s("ORDER"))
            .send()
            .await
            .unwrap()
            .item()
            .cloned()
            .unwrap()
    }

    /// Both tables, every item, in a stable order: for comparing whole views.
    async fn everything(&self) -> Vec<String> {
        let mut all = Vec::new();
        for table in [&self.tables.orders, &self.tables.stores] {
            let items = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .send()
                .await
                .unwrap();
            for item in items.items() {
                let item = AttributeValue::M(item.clone());
                all.push(format!("{table}: {}", canonical(&item)));
            }
        }
        all.sort();
        all
    }
}

/// An attribute value as text with map keys sorted (the SDK's maps have no order).
fn canonical(value: &AttributeValue) -> String {
    match value {
        AttributeValue::M(fields) => {
            let mut fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{k}={}", canonical(v)))
                .collect();
            fields.sort();
            format!("{{{}}}", fields.join(", "))
        }
        AttributeValue::L(values) => {
            let values: Vec<String> = values.iter().map(canonical).collect();
            format!("[{}]", values.join(", "))
        }
        other => format!("{other:?}"),
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    item[name].as_s().unwrap().clone()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    item[name].as_n().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_open_orders_metrics_and_stock_warnings() {
    let (dashboard, projection) = Dashboard::new().await;
    let log = morning();
    apply_in_batches(&projection, &log, &[3, 1, 7]).await;

    let open = dashboard.open_orders(STORE).await;
    let ids: Vec<String> = open.iter().map(|item| text(item, "order_id")).collect();
    assert_eq!(
        ids,
        vec![order_id(2), order_id(3)],
        "oldest first; ended orders left"
    );
    let second = &open[0];
    assert_eq!(text(second, "status"), "ready");
    assert_eq!(text(second, "note"), "no lid please");
    assert_eq!(text(second, "placed_at"), "2025-03-03T08:05:00.000000Z");
    let items = second["items"].as_l().unwrap();
    let latte = items[0].as_m().unwrap();
    assert_eq!(text(latte, "sku"), "LATTE-12");
    assert_eq!(number(latte, "quantity"), 2);
    let customisations: Vec<&str> = latte["customisations"]
        .as_l()
        .unwrap()
        .iter()
        .map(|c| c.as_s().unwrap().as_str())
        .collect();
    assert_eq!(customisations, ["oat milk", "extra shot"]);
    let timeline: Vec<(String, String)> = second["timeline"]
        .as_l()
        .unwrap()
        .iter()
        .map(|entry| {
            let entry = entry.as_m().unwrap();
            (text(entry, "event"), text(entry, "at"))
        })
        .collect();
    assert_eq!(timeline.len(), 5);
    assert_eq!(
        timeline[4],
        (
            "order_marked_ready".into(),
            "2025-03-03T08:12:00.000000Z".into()
        )
    );

    assert_eq!(dashboard.in_status(STORE, "ready").await, vec![order_id(2)]);
    assert_eq!(
        dashboard.in_status(STORE, "placed").await,
        vec![order_id(3)]
    );
    assert!(dashboard.in_status(STORE, "completed").await.is_empty());
    assert_eq!(dashboard.open_orders(OTHER_STORE).await.len(), 1);

    let completed = dashboard.order(&order_id(1)).await;
    assert_eq!(text(&completed, "status"), "completed");
    assert!(completed.contains_key("expires_at"), "a tombstone expires");
    assert!(!completed.contains_key("gsi2pk"));

    let metrics = dashboard.metrics(STORE, "2025-03-03").await;
    assert_eq!(number(&metrics, "orders_placed"), 4);
    assert_eq!(number(&metrics, "orders_active"), 2);
    assert_eq!(number(&metrics, "orders_completed"), 1);
    assert_eq!(number(&metrics, "orders_cancelled"), 1);
    assert_eq!(number(&metrics, "prep_count"), 2);
    assert_eq!(
        number(&metrics, "prep_ms_total") / number(&metrics, "prep_count"),
        240_000
    );
    assert!(
        !metrics
            .keys()
            .any(|k| k == &format!("order#{}", order_id(1))),
        "ended orders leave no entry behind"
    );

    let warnings = dashboard.low_stock(STORE).await;
    assert_eq!(warnings.len(), 1);
    let latte = &warnings[0];
    assert_eq!(text(latte, "sku"), "LATTE-12");
    assert_eq!(number(latte, "low_stock_available"), 2);
    assert_eq!(number(latte, "reorder_suggested"), 4);
    assert_eq!(number(latte, "on_hand") - number(latte, "reserved"), 2);
}

#[tokio::test]
async fn the_dashboard_view_ignores_redelivery_and_refuses_gaps() {
    let (dashboard, projection) = Dashboard::new().await;
    let log = morning();
    projection.apply(&log).await.unwrap();
    let once = dashboard.everything().await;

    projection.apply(&log).await.unwrap();
    for seed in 1..4 {
        projection.apply(&shuffled(&log, seed)).await.unwrap();
    }
    assert_eq!(dashboard.everything().await, once);

    assert_gap_is_poison(&projection).await;
    let placed_before_the_gap = dashboard.open_orders(STORE).await;
    assert!(placed_before_the_gap
        .iter()
        .any(|item| text(item, "order_id") == order_id(98)));
}

#[tokio::test]
async fn completing_an_order_takes_it_off_the_board() {
    let (dashboard, projection) = Dashboard::new().await;
    let mut log = Log::default();
    let id = log.order_life(7, STORE, "c-7", 0, 4);
    projection.apply(&log.commits).await.unwrap();
    assert_eq!(dashboard.open_orders(STORE).await.len(), 1);

    log.commits.clear();
    log.order(&id, 6, minutes(9), vec![OrderEvent::OrderCompleted {}]);
    projection.apply(&log.commits).await.unwrap();
    assert!(dashboard.open_orders(STORE).await.is_empty());
    assert!(dashboard.in_status(STORE, "ready").await.is_empty());
    // A late duplicate of its placement cannot bring it back.
    let mut again = Log::default();
    again.order_life(7, STORE, "c-7", 0, 0);
    projection.apply(&again.commits).await.unwrap();
    assert!(dashboard.open_orders(STORE).await.is_empty());
    let metrics = dashboard.metrics(STORE, "2025-03-03").await;
    assert_eq!(number(&metrics, "orders_placed"), 1);
    assert_eq!(number(&metrics, "orders_active"), 0);
}

#[tokio::test]
async fn a_retry_after_a_crash_between_the_metrics_and_the_order_write_counts_once() {
    let (dashboard, projection) = Dashboard::new().await;
    let mut log = Log::default();
    let id = log.order_life(8, STORE, "c-8", 0, 4);
    let ready = log.commits.pop().unwrap();
    projection.apply(&log.commits).await.unwrap();
    // What the lost run did before it crashed: it counted the ready commit (sequence 5) in the
    // metrics item, but never advanced the order item.
    dashboard
        .client
        .update_item()
        .table_name(&dashboard.tables.stores)
        .key("pk", s(&format!("STORE#{STORE}")))
        .key("sk", s("DAY#2025-03-03"))
        .update_expression("SET #entry = :five ADD prep_count :one, prep_ms_total :four_minutes")
        .expression_attribute_names("#entry", format!("order#{id}"))
        .expression_attribute_values(":five", AttributeValue::N("5".into()))
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .expression_attribute_values(":four_minutes", AttributeValue::N("240000".into()))
        .send()
        .await
        .unwrap();

    projection.apply(&[ready]).await.unwrap();

    let metrics = dashboard.metrics(STORE, "2025-03-03").await;
    assert_eq!(number(&metrics, "prep_count"), 1);
    assert_eq!(number(&metrics, "prep_ms_total"), 240_000);
    assert_eq!(dashboard.in_status(STORE, "ready").await, vec![id]);
}

#[tokio::test]
async fn a_redelivery_after_a_crash_between_the_tombstone_and_the_metrics_cleanup_mends_it() {
    let (dashboard, projection) = Dashboard::new().await;
    let mut log = Log::default();
    let id = log.order_life(9, STORE, "c-9", 0, 4);
    log.order(&id, 6, minutes(9), vec![OrderEvent::OrderCompleted {}]);
    projection.apply(&log.commits).await.unwrap();
    let entry = format!("order#{id}");
    let metrics = dashboard.metrics(STORE, "2025-03-03").await;
    assert!(
        !metrics.contains_key(&entry),
        "an ended order keeps no entry"
    );
    // What the lost run left when it crashed after writing the tombstone (step 3) and before
    // removing the order's metrics entry (step 4).
    dashboard
        .client
        .update_item()
        .table_name(&dashboard.tables.stores)
        .key("pk", s(&format!("STORE#{STORE}")))
        .key("sk", s("DAY#2025-03-03"))
        .update_expression("SET #entry = :six")
        .expression_attribute_names("#entry", &entry)
        .expression_attribute_values(":six", AttributeValue::N("6".into()))
        .send()
        .await
        .unwrap();

    // The successor gets the ending commit again from the last checkpoint.
    let completed = log.commits.last().unwrap().clone();
    projection.apply(&[completed]).await.unwrap();

    let metrics = dashboard.metrics(STORE, "2025-03-03").await;
    assert!(!metrics.contains_key(&entry), "{metrics:?}");
    assert_eq!(number(&metrics, "orders_completed"), 1);
    assert_eq!(number(&metrics, "orders_active"), 0);
}

// ------------------------------------------------------------------ PostgreSQL history

/// Every row of every table of `schema`, as text, in a stable order.
async fn dump(pool: &PgPool, schema: &str, tables: &[&str]) -> Vec<String> {
    let mut rows = Vec::new();
    for table in tables {
        // Test-only SQL naming known tables of a schema the test created.
        let sql = format!("SELECT t::text FROM {schema}.{table} t ORDER BY 1");
        let table_rows: Vec<(String,)> = sqlx::query_as(&sql).fetch_all(pool).await.unwrap();
        rows.extend(
            table_rows
                .into_iter()
                .map(|(row,)| format!("{table}: {row}")),
        );
    }
    rows
}

const HISTORY_TABLES: &[&str] = &[
    "applied_sequences",
    "orders",
    "order_items",
    "order_status_changes",
    "loyalty_ledger",
    "stock_movements",
];

#[tokio::test]
async fn history_answers_support_by_customer_and_by_store_and_day() {
    let database = fresh_database().await;
    let schema = SchemaName::parse("history").unwrap();
    HistoryProjection::create_schema(&database.pool, &schema)
        .await
        .unwrap();
    HistoryProjection::create_schema(&database.pool, &schema)
        .await
        .unwrap();
    let projection = HistoryProjection::new(database.pool.clone(), schema);
    apply_in_batches(&projection, &morning(), &[2, 5]).await;

    let by_customer: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT order_id::text, store_id, status, total_cents FROM history.orders \
         WHERE customer_id = 'c-1' ORDER BY placed_at DESC",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(
        by_customer,
        vec![
            (order_id(5), OTHER_STORE.into(), "preparing".into(), 1200),
            (order_id(3), STORE.into(), "placed".into(), 1200),
            (order_id(1), STORE.into(), "completed".into(), 1200),
        ]
    );

    let timeline: Vec<(i64, String, Option<String>, OffsetDateTime)> = sqlx::query_as(
        "SELECT sequence, event_type, status, changed_at FROM history.order_status_changes \
         WHERE order_id = $1::uuid ORDER BY sequence",
    )
    .bind(order_id(1))
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(timeline.len(), 6);
    assert_eq!(timeline[2].1, "payment_captured");
    assert_eq!(timeline[2].2, None);
    assert_eq!(
        timeline[5],
        (
            6,
            "order_completed".into(),
            Some("completed".into()),
            minutes(8)
        )
    );

    let store_day: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT o.order_id::text, o.status, count(i.*) FROM history.orders o \
         JOIN history.order_items i USING (order_id) \
         WHERE o.store_id = $1 AND o.placed_at >= $2 AND o.placed_at < $2 + interval '1 day' \
         GROUP BY o.order_id, o.status, o.placed_at ORDER BY o.placed_at",
    )
    .bind(STORE)
    .bind(datetime!(2025-03-03 00:00 UTC))
    .fetch_all(&database.pool)
    .await
    .unwrap();
    let statuses: Vec<&str> = store_day.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["completed", "ready", "placed", "cancelled"]);
    assert!(store_day.iter().all(|(_, _, lines)| *lines == 2));

    let customisations: Vec<String> = sqlx::query_scalar(
        "SELECT customisations FROM history.order_items WHERE order_id = $1::uuid AND line_no = 0",
    )
    .bind(order_id(1))
    .fetch_one(&database.pool)
    .await
    .unwrap();
    assert_eq!(customisations, ["oat milk", "extra shot"]);

    let (balance, tier): (i64, String) = sqlx::query_as(
        "SELECT sum(points)::bigint, max(tier) FILTER (WHERE entry_type = 'tier_upgraded') \
         FROM history.loyalty_ledger WHERE customer_id = 'c-1'",
    )
    .fetch_one(&database.pool)
    .await
    .unwrap();
    assert_eq!((balance, tier.as_str()), (120 + 900 - 500, "silver"));

    let latte: Vec<(String, i64)> = sqlx::query_as(
        "SELECT movement, quantity FROM history.stock_movements \
         WHERE store_id = $1 AND sku = 'LATTE-12' ORDER BY recorded_at, sequence, line_no",
    )
    .bind(STORE)
    .fetch_all(&database.pool)
    .await
    .unwrap();
    let movements: Vec<&str> = latte.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        movements,
        [
            "counted",
            "reserved",
            "reserved",
            "low_stock_warning",
            "reorder_requested",
            "consumed"
        ]
    );
}

#[tokio::test]
async fn history_is_the_same_live_replayed_and_redelivered_and_refuses_gaps() {
    let database = fresh_database().await;
    let live = SchemaName::parse("history").unwrap();
    let replay = SchemaName::parse("history_replay").unwrap();
    for schema in [&live, &replay] {
        HistoryProjection::create_schema(&database.pool, schema)
            .await
            .unwrap();
    }
    let log = morning();
    let live_projection = HistoryProjection::new(database.pool.clone(), live);
    apply_in_batches(&live_projection, &log, &[1, 4, 2]).await;
    let replay_projection = HistoryProjection::new(database.pool.clone(), replay);
    replay_projection.apply(&log).await.unwrap();

    let built = dump(&database.pool, "history", HISTORY_TABLES).await;
    assert_eq!(
        built,
        dump(&database.pool, "history_replay", HISTORY_TABLES).await
    );

    live_projection.apply(&log).await.unwrap();
    live_projection.apply(&shuffled(&log, 7)).await.unwrap();
    assert_eq!(dump(&database.pool, "history", HISTORY_TABLES).await, built);

    assert_gap_is_poison(&live_projection).await;
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM history.orders WHERE order_id = $1::uuid")
            .bind(order_id(98))
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert_eq!(kept, 1, "the commit before the gap is applied");
}

#[tokio::test]
async fn a_nul_in_a_note_is_refused_as_deterministic_and_fails_only_its_own_commit() {
    let database = fresh_database().await;
    let schema = SchemaName::parse("history").unwrap();
    HistoryProjection::create_schema(&database.pool, &schema)
        .await
        .unwrap();
    let projection = HistoryProjection::new(database.pool.clone(), schema);
    let mut log = Log::default();
    let fine = log.order_life(1, STORE, "c-1", 0, 1);
    // PostgreSQL stores no NUL in text: no retry will ever write this note.
    let nul = order_id(2);
    log.order(
        &nul,
        1,
        minutes(5),
        vec![OrderEvent::OrderPlaced {
            order_id: OrderId::parse(&nul).unwrap(),
            store_id: StoreId::parse(STORE).unwrap(),
            customer_id: CustomerId::parse("c-2").unwrap(),
            lines: vec![line("LATTE-12", "Latte", 1, &[], 450)],
            // Read as the log holds it (the command API refuses such a note now; events written
            // before that still carry it).
            note: serde_json::from_value::<Note>(serde_json::json!("no\u{0}sugar")).unwrap(),
            total: Money::from_cents(450),
            payment_token: None,
        }],
    );
    let other = log.order_life(3, STORE, "c-3", 6, 0);

    let error = projection.apply(&log.commits).await.unwrap_err();
    assert!(
        !matches!(error, ProjectionError::Transient(_)),
        "a refused value is not a dependency failure, retrying cannot help: {error:?}"
    );
    // The runtime finds the commit by applying one at a time: only the NUL one fails.
    for commit in &log.commits {
        let outcome = projection.apply(std::slice::from_ref(commit)).await;
        if commit.aggregate_id == nul {
            assert!(
                matches!(outcome, Err(ProjectionError::Refused(_))),
                "{outcome:?}"
            );
        } else {
            outcome.unwrap();
        }
    }
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT order_id::text FROM history.orders ORDER BY order_id")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    assert_eq!(kept, vec![fine, other]);
}

// ------------------------------------------------------------------ Redshift analytics

const ANALYTICS_TABLES: &[&str] = &[
    "applied_sequences",
    "dim_store",
    "dim_item",
    "dim_hour",
    "fact_orders",
    "fact_order_items",
    "fact_loyalty",
    "fact_stock_movements",
];

#[tokio::test]
async fn analytics_answers_sales_by_item_store_and_hour() {
    let database = fresh_database().await;
    let schema = SchemaName::parse("analytics").unwrap();
    AnalyticsProjection::create_schema(&database.pool, &schema)
        .await
        .unwrap();
    AnalyticsProjection::create_schema(&database.pool, &schema)
        .await
        .unwrap();
    let projection = AnalyticsProjection::new(database.pool.clone(), schema);
    apply_in_batches(&projection, &morning(), &[4, 3]).await;

    let sales: Vec<(String, Option<String>, String, i16, i64, i64)> = sqlx::query_as(
        "SELECT i.sku, d.name, i.store_id, h.hour_of_day, SUM(i.quantity)::bigint, \
                SUM(i.line_total_cents)::bigint \
         FROM analytics.fact_order_items i \
         JOIN analytics.fact_orders o ON o.order_id = i.order_id \
         JOIN analytics.dim_hour h ON h.hour_key = i.hour_key \
         LEFT JOIN analytics.dim_item d ON d.sku = i.sku \
         WHERE o.status <> 'cancelled' AND o.status <> 'rejected' \
         GROUP BY i.sku, d.name, i.store_id, h.hour_of_day \
         ORDER BY i.store_id, i.sku",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(
        sales,
        vec![
            (
                "CROISSANT".into(),
                Some("Croissant".into()),
                STORE.into(),
                8,
                3,
                900
            ),
            (
                "LATTE-12".into(),
                Some("Latte".into()),
                STORE.into(),
                8,
                6,
                2700
            ),
            (
                "CROISSANT".into(),
                Some("Croissant".into()),
                OTHER_STORE.into(),
                8,
                1,
                300
            ),
            (
                "LATTE-12".into(),
                Some("Latte".into()),
                OTHER_STORE.into(),
                8,
                2,
                900
            ),
        ]
    );

    let prep: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT status, prep_seconds FROM analytics.fact_orders WHERE store_id = $1 \
         ORDER BY placed_at",
    )
    .bind(STORE)
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(
        prep,
        vec![
            ("completed".into(), Some(240)),
            ("ready".into(), Some(240)),
            ("placed".into(), None),
            ("cancelled".into(), None),
        ]
    );

    let latte_price: i64 =
        sqlx::query_scalar("SELECT price_cents FROM analytics.dim_item WHERE sku = 'LATTE-12'")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert_eq!(latte_price, 475, "the price change is in the dimension");
    let stores: Vec<String> =
        sqlx::query_scalar("SELECT store_id FROM analytics.dim_store ORDER BY store_id")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    assert_eq!(stores, [STORE, OTHER_STORE]);
    let points: i64 = sqlx::query_scalar(
        "SELECT SUM(points)::bigint FROM analytics.fact_loyalty WHERE customer_id = 'c-1'",
    )
    .fetch_one(&database.pool)
    .await
    .unwrap();
    assert_eq!(points, 520);
}

#[tokio::test]
async fn analytics_is_the_same_live_replayed_and_redelivered_and_refuses_gaps() {
    let database = fresh_database().await;
    let live = SchemaName::parse("analytics").unwrap();
    let replay = SchemaName::parse("analytics_replay").unwrap();
    for schema in [&live, &replay] {
        AnalyticsProjection::create_schema(&database.pool, schema)
            .await
            .unwrap();
    }
    let log = morning();
    let live_projection = AnalyticsProjection::new(database.pool.clone(), live);
    apply_in_batches(&live_projection, &log, &[1, 3, 2]).await;
    let replay_projection = AnalyticsProjection::new(database.pool.clone(), replay);
    replay_projection.apply(&log).await.unwrap();

    let built = dump(&database.pool, "analytics", ANALYTICS_TABLES).await;
    assert_eq!(
        built,
        dump(&database.pool, "analytics_replay", ANALYTICS_TABLES).await
    );

    live_projection.apply(&log).await.unwrap();
    live_projection.apply(&shuffled(&log, 11)).await.unwrap();
    assert_eq!(
        dump(&database.pool, "analytics", ANALYTICS_TABLES).await,
        built
    );

    assert_gap_is_poison(&live_projection).await;
}

/// What one analytics load sends does not grow with the commits it carries (below 1,000 rows a
/// table): the same statements for 10 orders as for 400, none of them DDL, and the staging
/// tables are empty again after each load.
#[tokio::test]
async fn an_analytics_load_sends_as_many_statements_for_ten_orders_as_for_four_hundred() {
    let database = fresh_database().await;
    let mut sent = Vec::new();
    for (orders, name) in [(10u128, "analytics_small"), (400, "analytics_large")] {
        let schema = SchemaName::parse(name).unwrap();
        AnalyticsProjection::create_schema(&database.pool, &schema)
            .await
            .unwrap();
        let mut log = Log::default();
        for n in 0..orders {
            log.order_life(n, STORE, &format!("c-{}", n % 7), (n % 50) as i64, 5);
        }
        let projection = AnalyticsProjection::new(database.pool.clone(), schema);
        projection.apply(&log.commits).await.unwrap();
        let (flushes, statements) = projection.sent();
        println!(
            "{name}: {} commits in {flushes} load(s), {statements} statements",
            log.commits.len()
        );
        sent.push((flushes, statements));
        let orders_loaded: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {name}.fact_orders"))
                .fetch_one(&database.pool)
                .await
                .unwrap();
        assert_eq!(orders_loaded, orders as i64);
        let staged: i64 = sqlx::query_scalar(&format!(
            "SELECT (SELECT count(*) FROM {name}.stage_fact_orders) \
                  + (SELECT count(*) FROM {name}.stage_fact_order_items) \
                  + (SELECT count(*) FROM {name}.stage_applied_sequences)"
        ))
        .fetch_one(&database.pool)
        .await
        .unwrap();
        assert_eq!(staged, 0, "the staging tables are emptied by each load");
    }
    assert_eq!(
        sent[0], sent[1],
        "(loads, statements) for 10 and 400 orders"
    );
    // Search path, lock, the markers' read (every order is placed in the load: no earlier
    // orders to read), dim_store 4, dim_hour 3, fact_orders and fact_order_items 4 each, the
    // markers 4, the commit (no loyalty, stock or menu rows).
    assert_eq!(sent[0], (1, 2 + 1 + 4 + 3 + 4 + 4 + 4 + 1));
}
