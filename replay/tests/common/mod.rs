//! What the replay tests share: a history written through the real aggregates into a real
//! event store, and the commits the projectors would receive for it.

// Unwrapping is how a test says "this must work"; each test binary uses a part of this module.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aws_sdk_kinesis::primitives::Blob;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::LoggedCommit;
use cqrs_es::CqrsFramework;
use domain::inventory::{InventoryCommand, StoreInventory};
use domain::loyalty::{LoyaltyAccount, LoyaltyCommand};
use domain::order::{
    FixedMenu, Order, OrderCommand, OrderLineRequest, OrderServices, RejectionReason,
};
use domain::values::{
    Actor, CustomerId, Customisation, ExternalRef, Money, Note, OrderId, Quantity, Reason, Sku,
    StoreId,
};
use event_store::{AggregateStore, PgEventStore, StoreConfig};
use futures::TryStreamExt;
use sqlx::PgPool;
use test_support::{fresh_database, unique_name, TestStream};

/// Commits written concurrently to several inventories and loyalty accounts, so they interleave
/// and group commits batch them.
pub async fn write_history(store: &PgEventStore) {
    let inventory: Arc<CqrsFramework<StoreInventory, AggregateStore<StoreInventory>>> = Arc::new(
        CqrsFramework::new(store.aggregate_store(vec![]), vec![], ()),
    );
    let loyalty: Arc<CqrsFramework<LoyaltyAccount, AggregateStore<LoyaltyAccount>>> = Arc::new(
        CqrsFramework::new(store.aggregate_store(vec![]), vec![], ()),
    );
    let prefix = unique_name("s");
    let stores = (0..3).map(|i| {
        let cqrs = inventory.clone();
        let id = format!("{prefix}-{i}");
        async move {
            let sku = Sku::parse("LATTE-12").unwrap();
            // Below its threshold: one commit of several events (count, warning, reorder).
            cqrs.execute(
                &id,
                InventoryCommand::SetStock {
                    store_id: StoreId::parse(&id).unwrap(),
                    sku: sku.clone(),
                    on_hand: 5,
                    low_stock_threshold: 10,
                },
            )
            .await
            .unwrap();
            for quantity in 1..=6 {
                cqrs.execute(
                    &id,
                    InventoryCommand::Restock {
                        sku: sku.clone(),
                        quantity,
                    },
                )
                .await
                .unwrap();
            }
        }
    });
    let customers = (0..2).map(|i| {
        let cqrs = loyalty.clone();
        let id = format!("{prefix}-c{i}");
        async move {
            for cents in [2_500, 40_000, 700] {
                cqrs.execute(
                    &id,
                    LoyaltyCommand::EarnPoints {
                        customer_id: CustomerId::parse(&id).unwrap(),
                        order_id: OrderId::from(uuid::Uuid::new_v4()),
                        amount: Money::from_cents(cents),
                    },
                )
                .await
                .unwrap();
            }
        }
    });
    futures::join!(
        futures::future::join_all(stores),
        futures::future::join_all(customers)
    );
}

/// An event store on a test database of its own.
pub async fn fresh_store() -> PgEventStore {
    let events = test_support::fresh_database().await;
    PgEventStore::open(events.pool, StoreConfig::default())
        .await
        .unwrap()
}

/// The true commits, from the outbox (no relay runs here), in commit order: what the projectors
/// receive live.
pub async fn logged_commits(store: &PgEventStore) -> Vec<LoggedCommit> {
    let ranges = commits_after(store, 0).await;
    let mut commits = Vec::new();
    for (first, last) in ranges {
        let events: Vec<_> = store
            .read_range(first - 1, last)
            .try_collect()
            .await
            .unwrap();
        commits.push(LoggedCommit::from_recorded(&events).unwrap());
    }
    commits
}

/// Publishes the commit at positions `first..=last` to `stream` as the relay does (one record,
/// partition key = aggregate id); the shard it went to and its sequence number.
pub async fn publish(
    store: &PgEventStore,
    stream: &TestStream,
    first: i64,
    last: i64,
) -> (String, String) {
    let events: Vec<_> = store
        .read_range(first - 1, last)
        .try_collect()
        .await
        .unwrap();
    let put = stream
        .client
        .put_record()
        .stream_name(&stream.name)
        .partition_key(&events[0].aggregate_id)
        .data(Blob::new(commit_log::encode(&events).unwrap()))
        .send()
        .await
        .unwrap();
    (put.shard_id, put.sequence_number)
}

/// The outbox's commits after `position`, as (first, last) positions in commit order.
pub async fn commits_after(store: &PgEventStore, position: i64) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT first_position, last_position FROM outbox WHERE first_position > $1 ORDER BY 1",
    )
    .bind(position)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// What an order goes through in [`write_orders`].
#[derive(Debug, Clone, Copy)]
enum Fate {
    Completed,
    Preparing,
    Placed,
    Cancelled,
    Rejected,
}

/// Orders of one store through every fate, written concurrently: open ones (placed,
/// preparing), ended ones (completed, cancelled, rejected), with customisations and notes, so
/// the active-orders view has board items, tombstones and metrics.
pub async fn write_orders(store: &PgEventStore) {
    let services = OrderServices::new(Arc::new(FixedMenu::sample()));
    let orders: Arc<CqrsFramework<Order, AggregateStore<Order>>> = Arc::new(CqrsFramework::new(
        store.aggregate_store(vec![]),
        vec![],
        services,
    ));
    let store_id = StoreId::parse(&unique_name("store")).unwrap();
    let fates = [
        Fate::Completed,
        Fate::Preparing,
        Fate::Placed,
        Fate::Cancelled,
        Fate::Rejected,
        Fate::Completed,
    ];
    let runs = fates.into_iter().enumerate().map(|(i, fate)| {
        let cqrs = orders.clone();
        let store_id = store_id.clone();
        async move {
            let order_id = OrderId::from(uuid::Uuid::new_v4());
            let id = order_id.to_string();
            let customer = CustomerId::parse(&format!("c-{i}")).unwrap();
            let staff = Actor::StoreStaff(store_id.clone());
            let mut commands = vec![OrderCommand::PlaceOrder {
                order_id,
                store_id: store_id.clone(),
                customer_id: customer.clone(),
                lines: vec![OrderLineRequest {
                    sku: Sku::parse("LATTE-12").unwrap(),
                    quantity: Quantity::new(2).unwrap(),
                    customisations: vec![Customisation::parse("oat milk").unwrap()],
                }],
                note: Note::parse(&format!("for table {i}")).unwrap(),
                payment_token: None,
                actor: Actor::Customer(customer),
            }];
            let accepted_and_paid = [
                OrderCommand::AcceptOrder {
                    actor: Actor::Service,
                },
                OrderCommand::RecordPaymentCaptured {
                    payment_id: ExternalRef::parse(&format!("pay-{i}")).unwrap(),
                    amount: Money::from_cents(900),
                    actor: Actor::Service,
                },
            ];
            match fate {
                Fate::Placed => {}
                Fate::Rejected => commands.push(OrderCommand::RejectOrder {
                    reason: RejectionReason::OutOfStock,
                    actor: Actor::Service,
                }),
                Fate::Cancelled => {
                    commands.extend(accepted_and_paid);
                    commands.push(OrderCommand::CancelOrder {
                        reason: Reason::parse("changed my mind").unwrap(),
                        actor: staff,
                    });
                }
                Fate::Preparing => {
                    commands.extend(accepted_and_paid);
                    commands.push(OrderCommand::StartPreparing { actor: staff });
                }
                Fate::Completed => {
                    commands.extend(accepted_and_paid);
                    commands.push(OrderCommand::StartPreparing {
                        actor: staff.clone(),
                    });
                    commands.push(OrderCommand::MarkReady {
                        actor: staff.clone(),
                    });
                    commands.push(OrderCommand::CompleteOrder { actor: staff });
                }
            }
            for command in commands {
                cqrs.execute(&id, command).await.unwrap();
            }
        }
    });
    futures::future::join_all(runs).await;
}

/// A projection that fails every batch after its first `batches` (poison, so the rebuild stops
/// at once, as a crash would): an interruption.
pub struct FailAfter {
    inner: Box<dyn Projection>,
    left: AtomicUsize,
}

impl FailAfter {
    pub fn new(inner: Box<dyn Projection>, batches: usize) -> Self {
        Self {
            inner,
            left: AtomicUsize::new(batches),
        }
    }
}

#[async_trait::async_trait]
impl Projection for FailAfter {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        let left = self.left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(ProjectionError::Poison {
                index: 0,
                reason: "interrupted".into(),
            });
        }
        self.left.store(left - 1, Ordering::SeqCst);
        self.inner.apply(commits).await
    }
}

/// A store holding a written history, a fresh database for the views, and the commits the
/// projectors would receive for that history.
pub struct Setup {
    pub store: PgEventStore,
    pub views: PgPool,
    pub commits: Vec<LoggedCommit>,
}

impl Setup {
    /// `store`, once its history is written, beside a fresh views database.
    pub async fn of(store: PgEventStore) -> Setup {
        let commits = logged_commits(&store).await;
        Setup {
            store,
            views: fresh_database().await.pool,
            commits,
        }
    }
}
