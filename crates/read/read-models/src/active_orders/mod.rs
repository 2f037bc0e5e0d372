//! The barista dashboard's view in DynamoDB: open orders, per-store daily metrics and low-stock
//! warnings.
//!
//! Two tables, every write idempotent on its own through a single-item condition expression (no
//! transactions, no TTL API needed, so dynalite runs it as well as DynamoDB):
//!
//! - **orders** table: one item per order, `pk = ORDER#<order id>`, `sk = ORDER`, holding the
//!   order's `last_sequence` (the idempotency marker, checked by every write). While the order is
//!   open it carries the keys of two sparse indexes: [`OPEN_BY_STORE_INDEX`]
//!   (`gsi2pk = STORE#<store>`, `gsi2sk = <placed at>#<order id>`: the store's open orders,
//!   oldest first) and [`BY_STATUS_INDEX`] (`gsi1pk = STORE#<store>#STATUS#<status>`,
//!   `gsi1sk = <entered that status at>#<order id>`). When the order is completed, cancelled or
//!   rejected the index keys are removed (the item leaves both indexes) and the item stays as a
//!   tombstone with an `expires_at` TTL, so a late duplicate finds its sequence and changes
//!   nothing.
//! - **stores** table, `pk = STORE#<store>`: `sk = DAY#<YYYY-MM-DD>` metrics per UTC business
//!   day, `sk = SKU#<sku>` stock and low-stock state per SKU, `sk = INVENTORY` the store
//!   inventory's `last_sequence`.

mod alias;
mod orders;
mod stock;
mod update;

pub use alias::{AliasError, LiveView, ViewAlias};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity};
use aws_sdk_dynamodb::Client;
use aws_support::resources::TableResource;
use aws_support::tables::{IndexShape, KeyAttribute, TableShape};
use commit_log::LoggedCommit;
use futures::stream::{self, StreamExt};

use super::progress::{gap, INVENTORY, ORDER};
use super::SetupError;
use commit_log::projection::{Projection, ProjectionError};

/// The index of a store's open orders, oldest first (`gsi2pk = STORE#<store>`,
/// `gsi2sk = <placed at>#<order id>`).
pub const OPEN_BY_STORE_INDEX: &str = "open-by-store";
/// The index of a store's open orders in one status, longest in it first
/// (`gsi1pk = STORE#<store>#STATUS#<status>`, `gsi1sk = <entered the status at>#<order id>`).
pub const BY_STATUS_INDEX: &str = "by-status";
/// How long an ended order's tombstone stays before TTL removes it. A duplicate of one of its
/// commits arriving later than this would find no marker; the log's redelivery window (from
/// the last checkpoint) is far shorter.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many items are written at the same time (orders, store days, inventories); one
/// aggregate's writes are always made one after the other.
const CONCURRENT_WRITES: usize = 16;

/// How many aggregates' last applied sequences the projection remembers; past it, it forgets
/// them all and reads each again when it next meets it (a worker holds the leases of a few
/// shards, whose open orders are far fewer).
const REMEMBERED_AGGREGATES: usize = 200_000;

/// The two tables of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveOrdersTables {
    /// One item per order (settings key `dynamodb.active_orders_table`).
    pub orders: String,
    /// Per-store metrics, stock and inventory marker (settings key
    /// `dynamodb.store_metrics_table`).
    pub stores: String,
}

/// The active-orders projection (name `active_orders`).
///
/// It remembers what it last wrote or read of each order (its `last_sequence` and what the
/// metrics need) and each inventory's marker, so a later batch of the same aggregate reads
/// nothing first. What it remembers is only a guess: another writer (a lease stolen meanwhile
/// and taken back, replay's catch-up during a swap) may have moved the item since. Every write
/// stays conditioned on the marker it expects, so a stale guess fails its condition (or shows
/// a gap) and the aggregate is read again and redone; it never loses or doubles an update.
#[derive(Debug, Clone)]
pub struct ActiveOrdersProjection {
    client: Client,
    tables: Tables,
    inventory_marker: InventoryMarker,
    memory: Arc<Mutex<Memory>>,
    usage: Arc<DynamoDbUsage>,
}

/// What the projection remembers of the aggregates it wrote, for one pair of tables.
#[derive(Debug, Default)]
struct Memory {
    /// The orders table the entries describe: a swap to other tables forgets them.
    orders_table: String,
    orders: HashMap<String, orders::OrderSnapshot>,
    inventories: HashMap<String, u64>,
}

impl Memory {
    fn remember_order(&mut self, order_id: &str, snapshot: orders::OrderSnapshot) {
        self.make_room();
        self.orders.insert(order_id.to_owned(), snapshot);
    }

    fn remember_inventory(&mut self, store_id: &str, last_sequence: u64) {
        self.make_room();
        self.inventories.insert(store_id.to_owned(), last_sequence);
    }

    fn make_room(&mut self) {
        if self.orders.len() + self.inventories.len() >= REMEMBERED_AGGREGATES {
            self.orders.clear();
            self.inventories.clear();
        }
    }
}

/// The DynamoDB calls the projection made and the capacity units they consumed, as DynamoDB
/// (or the emulator) reported them through `ReturnConsumedCapacity`; a call that reports none
/// (a refused condition) counts one unit, what an item under 1 KB costs. Also exported as the
/// counters [`DYNAMODB_CALLS`] and [`DYNAMODB_CAPACITY_UNITS`].
#[derive(Debug, Default)]
pub struct DynamoDbUsage {
    reads: AtomicU64,
    writes: AtomicU64,
    read_milli_units: AtomicU64,
    write_milli_units: AtomicU64,
}

/// Counter `{projection, kind = read | write}`: DynamoDB calls of a projection.
pub const DYNAMODB_CALLS: &str = "orderpipe_projector_dynamodb_calls_total";
/// Counter `{projection, kind = read | write, item}`: DynamoDB capacity units a projection
/// consumed, in thousandths (read and write request units on on-demand tables), by the kind of
/// item written or read ([`ViewItem::label`]: where the bill goes).
pub const DYNAMODB_CAPACITY_UNITS: &str = "orderpipe_projector_dynamodb_milli_capacity_units_total";

/// A copy of [`DynamoDbUsage`]'s counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DynamoDbCalls {
    /// GetItem calls.
    pub reads: u64,
    /// UpdateItem and PutItem calls.
    pub writes: u64,
    /// Read request units consumed.
    pub read_units: f64,
    /// Write request units consumed.
    pub write_units: f64,
}

impl DynamoDbUsage {
    fn read(&self, item: ViewItem, capacity: Option<&ConsumedCapacity>) {
        let units = capacity.and_then(ConsumedCapacity::capacity_units);
        self.count(&self.reads, &self.read_milli_units, "read", item, units);
    }

    fn wrote(&self, item: ViewItem, units: Option<f64>) {
        self.count(&self.writes, &self.write_milli_units, "write", item, units);
    }

    fn count(
        &self,
        calls: &AtomicU64,
        milli: &AtomicU64,
        kind: &'static str,
        item: ViewItem,
        units: Option<f64>,
    ) {
        let milli_units = (units.unwrap_or(1.0) * 1000.0).round() as u64;
        calls.fetch_add(1, Ordering::Relaxed);
        milli.fetch_add(milli_units, Ordering::Relaxed);
        metrics::counter!(DYNAMODB_CALLS, "projection" => "active_orders", "kind" => kind)
            .increment(1);
        metrics::counter!(
            DYNAMODB_CAPACITY_UNITS,
            "projection" => "active_orders",
            "kind" => kind,
            "item" => item.label()
        )
        .increment(milli_units);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> DynamoDbCalls {
        DynamoDbCalls {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            read_units: self.read_milli_units.load(Ordering::Relaxed) as f64 / 1000.0,
            write_units: self.write_milli_units.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

/// Where the projection records how far each store inventory is applied (settings key
/// `dynamodb.inventory_marker`). Either way it reads both the marker item and the SKU items'
/// own sequences, so tables written either way are read right by this build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryMarker {
    /// The `INVENTORY` item, advanced after every batch's SKU writes: what every build reads.
    #[default]
    Item,
    /// The SKU items' `applied_sequence`, the marker item written only when a batch's last
    /// commit of the inventory touches no SKU: one write unit and one call fewer per inventory
    /// and batch. Builds before this one read only the marker item and would find a gap behind
    /// it: set it once every writer of the view (projectors, replay) runs this build or later.
    SkuItems,
}

impl InventoryMarker {
    /// Its settings value.
    pub fn as_str(self) -> &'static str {
        match self {
            InventoryMarker::Item => "item",
            InventoryMarker::SkuItems => "sku_items",
        }
    }
}

impl std::str::FromStr for InventoryMarker {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "item" => Ok(InventoryMarker::Item),
            "sku_items" => Ok(InventoryMarker::SkuItems),
            other => Err(format!(
                "unknown inventory marker {other:?}: expected item or sku_items"
            )),
        }
    }
}

/// The kinds of item the view holds, told apart by their sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewItem {
    /// An order (`sk = ORDER`).
    Order,
    /// A store's metrics of one day (`sk = DAY#...`).
    StoreDay,
    /// A store's stock of one SKU (`sk = SKU#...`).
    Stock,
    /// A store inventory's marker (`sk = INVENTORY`).
    InventoryMarker,
}

impl ViewItem {
    /// The kind of the item at `key`.
    fn of(key: &HashMap<String, AttributeValue>) -> ViewItem {
        let sort_key = key.get("sk").and_then(|sk| sk.as_s().ok());
        match sort_key.map(String::as_str) {
            Some(sk) if sk.starts_with("DAY#") => ViewItem::StoreDay,
            Some(sk) if sk.starts_with("SKU#") => ViewItem::Stock,
            Some(stock::MARKER_SORT_KEY) => ViewItem::InventoryMarker,
            _ => ViewItem::Order,
        }
    }

    /// Its value of the `item` label of [`DYNAMODB_CAPACITY_UNITS`].
    pub fn label(self) -> &'static str {
        match self {
            ViewItem::Order => "order",
            ViewItem::StoreDay => "store_day",
            ViewItem::Stock => "stock",
            ViewItem::InventoryMarker => "inventory_marker",
        }
    }
}

/// Where the projection writes.
#[derive(Debug, Clone)]
enum Tables {
    /// Always these tables (a rebuild's target).
    Fixed(ActiveOrdersTables),
    /// The tables the alias names when a batch starts (the live projector).
    Following(ViewAlias),
}

/// The tables one batch writes to, resolved once when it starts.
struct Target<'a> {
    client: &'a Client,
    tables: ActiveOrdersTables,
    /// A swap is catching these tables up: see [`Target::gap`].
    handover: bool,
    inventory_marker: InventoryMarker,
    memory: &'a Mutex<Memory>,
    usage: &'a DynamoDbUsage,
}

impl Target<'_> {
    /// What the projection remembers of these tables.
    fn memory(&self) -> MutexGuard<'_, Memory> {
        // A panic while holding the lock leaves at worst a stale guess, which the conditional
        // writes catch.
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if memory.orders_table != self.tables.orders {
            *memory = Memory {
                orders_table: self.tables.orders.clone(),
                ..Memory::default()
            };
        }
        memory
    }

    /// A commit whose predecessor the tables lack. Normally poison; during a swap's handover the
    /// predecessor is on its way (replay's catch-up writes it), so the batch is retried.
    fn gap(&self, index: usize, commit: &LoggedCommit, applied: u64) -> ProjectionError {
        let error = gap(index, commit, applied);
        match error {
            ProjectionError::Poison { reason, .. } if self.handover => {
                ProjectionError::Transient(format!("{reason} (a swap is catching up)").into())
            }
            other => other,
        }
    }
}

impl ActiveOrdersProjection {
    /// A projection writing to `tables` through `client`.
    pub fn new(client: Client, tables: ActiveOrdersTables) -> Self {
        Self {
            client,
            tables: Tables::Fixed(tables),
            inventory_marker: InventoryMarker::default(),
            memory: Arc::default(),
            usage: Arc::default(),
        }
    }

    /// A projection writing to the tables `alias` names when each batch starts, so that a view
    /// replay swaps in takes the live writes from the next batch on.
    pub fn following(alias: ViewAlias) -> Self {
        Self {
            client: alias.client().clone(),
            tables: Tables::Following(alias),
            inventory_marker: InventoryMarker::default(),
            memory: Arc::default(),
            usage: Arc::default(),
        }
    }

    /// The orders table's key schema: `pk`, `sk`, and the two sparse indexes of open orders.
    pub const ORDERS_SHAPE: TableShape = TableShape {
        hash: KeyAttribute::string("pk"),
        range: Some(KeyAttribute::string("sk")),
        indexes: &[
            IndexShape {
                name: OPEN_BY_STORE_INDEX,
                hash: "gsi2pk",
                range: "gsi2sk",
            },
            IndexShape {
                name: BY_STATUS_INDEX,
                hash: "gsi1pk",
                range: "gsi1sk",
            },
        ],
    };

    /// The stores table's key schema: `pk`, `sk`.
    pub const STORES_SHAPE: TableShape = TableShape {
        hash: KeyAttribute::string("pk"),
        range: Some(KeyAttribute::string("sk")),
        indexes: &[],
    };

    /// The live orders table, as the local stack and the deployment create it (settings key
    /// `dynamodb.active_orders_table`). Its tombstones expire by `expires_at`.
    pub const ORDERS_RESOURCE: TableResource = TableResource {
        name: "active-orders",
        settings_key: "dynamodb.active_orders_table",
        shape: Self::ORDERS_SHAPE,
        time_to_live: Some("expires_at"),
    };

    /// The live stores table, as the local stack and the deployment create it (settings key
    /// `dynamodb.store_metrics_table`).
    pub const STORES_RESOURCE: TableResource = TableResource {
        name: "store-metrics",
        settings_key: "dynamodb.store_metrics_table",
        shape: Self::STORES_SHAPE,
        time_to_live: None,
    };

    /// Creates both tables with their indexes (on-demand billing) and waits until they are
    /// active; tables that exist already are left as they are. TTL on `expires_at` is switched
    /// on by the deployment (CDK): the local emulators have no `UpdateTimeToLive`.
    pub async fn create_tables(
        client: &Client,
        tables: &ActiveOrdersTables,
    ) -> Result<(), SetupError> {
        Self::ORDERS_SHAPE.create(client, &tables.orders).await?;
        Ok(Self::STORES_SHAPE.create(client, &tables.stores).await?)
    }

    async fn target(&self) -> Result<Target<'_>, ProjectionError> {
        let (tables, handover) = match &self.tables {
            Tables::Fixed(tables) => (tables.clone(), false),
            Tables::Following(alias) => {
                let live = alias
                    .live()
                    .await
                    .map_err(|e| ProjectionError::Transient(Box::new(e)))?;
                (live.tables, live.handover)
            }
        };
        Ok(Target {
            client: &self.client,
            tables,
            handover,
            inventory_marker: self.inventory_marker,
            memory: &self.memory,
            usage: &self.usage,
        })
    }

    /// The projection with the inventories' progress recorded as `marker` says.
    pub fn with_inventory_marker(mut self, marker: InventoryMarker) -> Self {
        self.inventory_marker = marker;
        self
    }

    /// The DynamoDB calls and capacity units this projection (and its clones) used so far.
    pub fn usage(&self) -> DynamoDbCalls {
        self.usage.snapshot()
    }
}

#[async_trait]
impl Projection for ActiveOrdersProjection {
    fn name(&self) -> &'static str {
        "active_orders"
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        let target = self.target().await?;
        let mut order_groups = Vec::new();
        let mut inventory_groups = Vec::new();
        for group in group_by_aggregate(commits) {
            match group
                .first()
                .map(|(_, commit)| commit.aggregate_type.as_str())
            {
                Some(ORDER) => order_groups.push(group),
                Some(INVENTORY) => inventory_groups.push(group),
                // Loyalty and menu events have no place on the barista dashboard.
                _ => {}
            }
        }
        // A loop, not a closure: a closure over the borrowed groups would make the future
        // higher-ranked over their lifetime, which async-trait's `Send` future cannot name.
        let mut inventories = Vec::new();
        for group in inventory_groups {
            inventories.push(stock::apply(&target, group));
        }
        let (mut results, inventory_results) = futures::join!(
            orders::apply(&target, order_groups),
            stream::iter(inventories)
                .buffer_unordered(CONCURRENT_WRITES)
                .collect::<Vec<_>>()
        );
        results.extend(inventory_results);
        // Every aggregate stopped at its own first failure, so every commit before the lowest
        // poison index is applied; a transient failure anywhere means "retry the batch".
        let mut poison: Option<ProjectionError> = None;
        for result in results {
            match result {
                Ok(()) => {}
                Err(failure @ (ProjectionError::Transient(_) | ProjectionError::Refused(_))) => {
                    return Err(failure)
                }
                Err(ProjectionError::Poison { index, reason }) => {
                    let lower = match &poison {
                        Some(ProjectionError::Poison { index: seen, .. }) => index < *seen,
                        _ => true,
                    };
                    if lower {
                        poison = Some(ProjectionError::Poison { index, reason });
                    }
                }
            }
        }
        poison.map_or(Ok(()), Err)
    }
}

/// The batch split per aggregate, each group in log order with the commits' batch indexes.
fn group_by_aggregate(commits: &[LoggedCommit]) -> Vec<Vec<(usize, &LoggedCommit)>> {
    let mut groups: Vec<Vec<(usize, &LoggedCommit)>> = Vec::new();
    let mut position: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::new();
    for (index, commit) in commits.iter().enumerate() {
        let key = (commit.aggregate_type.as_str(), commit.aggregate_id.as_str());
        let slot = *position.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push((index, commit));
    }
    groups
}

/// How a failed DynamoDB call ends `apply`: an item the view cannot hold (validation, e.g.
/// larger than 400 KB) is poison for its commit; everything else (throttling, an unreachable
/// endpoint, a missing table or permission an operator must fix) is retried, never dropped.
fn dynamodb_failure<E>(index: usize, error: aws_sdk_dynamodb::error::SdkError<E>) -> ProjectionError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let validation = error
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
        == Some("ValidationException");
    if validation && !aws_support::is_retryable(&error) {
        ProjectionError::Poison {
            index,
            reason: format!("DynamoDB refused the view's write: {error}"),
        }
    } else {
        ProjectionError::Transient(Box::new(error))
    }
}
