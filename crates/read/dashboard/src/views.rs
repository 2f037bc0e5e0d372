//! Reads of the DynamoDB active-orders view (written by `projectors`, layout in
//! `read_models::ActiveOrdersProjection`'s docs): a store's open orders through the
//! sparse `open-by-store` index, its day's metrics item and its SKU items that are low on stock
//! or have a reorder open. The dashboard never reads the event store.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use domain::StoreId;
use read_models::{ActiveOrdersTables, ViewAlias, OPEN_BY_STORE_INDEX};

use crate::board::{
    Board, BoardItem, BoardOrder, DayMetrics, OpenReorder, OrdersByColumn, StockWarning,
};

type Item = HashMap<String, AttributeValue>;

/// Why the view could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// DynamoDB refused or could not be reached.
    #[error("reading {table} failed: {source}")]
    DynamoDb {
        /// The table.
        table: String,
        /// The SDK's error, kept whole.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An item lacks what every item of its kind has: a bug in the projection or a foreign
    /// writer.
    #[error("unreadable item in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: String,
        /// What is wrong.
        reason: String,
    },
}

/// The tables the view is served from now: those the view alias names (the configured pair
/// until `replay rebuild active_orders --swap` moves it). Asked on every read rather than once
/// at start-up, so a swapped-in view is served from the next read on.
pub async fn live_tables(alias: &ViewAlias) -> Result<ActiveOrdersTables, ViewError> {
    alias
        .live()
        .await
        .map(|live| live.tables)
        .map_err(|source| ViewError::DynamoDb {
            table: alias.table().to_owned(),
            source: Box::new(source),
        })
}

/// The active-orders view, read-only.
#[derive(Debug, Clone)]
pub struct ActiveOrdersView {
    client: Client,
    alias: ViewAlias,
}

impl ActiveOrdersView {
    /// A reader of the view whose live tables `alias` names.
    pub fn new(alias: ViewAlias) -> Self {
        Self {
            client: alias.client().clone(),
            alias,
        }
    }

    /// Whether the view knows the store at all: its stock, inventory marker or metrics. A store
    /// that was never stocked and never took an order is unknown.
    pub async fn store_known(&self, store: &StoreId) -> Result<bool, ViewError> {
        let tables = live_tables(&self.alias).await?;
        let output = self
            .client
            .query()
            .table_name(&tables.stores)
            .key_condition_expression("pk = :store")
            .expression_attribute_values(":store", store_key(store))
            .projection_expression("pk")
            .limit(1)
            .send()
            .await
            .map_err(|e| failed(&tables.stores, e))?;
        Ok(output.count() > 0)
    }

    /// The whole board of `store` on `business_day` (`YYYY-MM-DD`, UTC).
    pub async fn board(&self, store: &StoreId, business_day: &str) -> Result<Board, ViewError> {
        let tables = live_tables(&self.alias).await?;
        let (orders, metrics, stock) = tokio::try_join!(
            self.open_orders_in(&tables, store),
            self.day_metrics_in(&tables, store, business_day),
            self.stock_in(&tables, store),
        )?;
        Ok(Board {
            store_id: store.to_string(),
            metrics: with_active(metrics, orders.len()),
            orders: OrdersByColumn::from_open(orders),
            stock_warnings: stock.warnings,
            open_reorders: stock.open_reorders,
        })
    }

    /// The store's open orders by column, oldest first.
    pub async fn open_orders(&self, store: &StoreId) -> Result<OrdersByColumn, ViewError> {
        let tables = live_tables(&self.alias).await?;
        Ok(OrdersByColumn::from_open(
            self.open_orders_in(&tables, store).await?,
        ))
    }

    /// The store's metrics of `business_day`; `active` counts the orders on the board now.
    pub async fn day_metrics(
        &self,
        store: &StoreId,
        business_day: &str,
    ) -> Result<DayMetrics, ViewError> {
        let tables = live_tables(&self.alias).await?;
        let (orders, metrics) = tokio::try_join!(
            self.open_orders_in(&tables, store),
            self.day_metrics_in(&tables, store, business_day),
        )?;
        Ok(with_active(metrics, orders.len()))
    }

    /// The store's low-stock SKUs, by SKU.
    pub async fn stock_warnings(&self, store: &StoreId) -> Result<Vec<StockWarning>, ViewError> {
        let tables = live_tables(&self.alias).await?;
        Ok(self.stock_in(&tables, store).await?.warnings)
    }

    /// The store's open reorders (purchase orders awaiting their delivery), by SKU.
    pub async fn open_reorders(&self, store: &StoreId) -> Result<Vec<OpenReorder>, ViewError> {
        let tables = live_tables(&self.alias).await?;
        Ok(self.stock_in(&tables, store).await?.open_reorders)
    }

    async fn open_orders_in(
        &self,
        tables: &ActiveOrdersTables,
        store: &StoreId,
    ) -> Result<Vec<BoardOrder>, ViewError> {
        let mut orders = Vec::new();
        let mut start: Option<Item> = None;
        // A store's open orders are few (the board's size), but a page is at most 1 MB: follow
        // the pages rather than show a silently cut board.
        loop {
            let output = self
                .client
                .query()
                .table_name(&tables.orders)
                .index_name(OPEN_BY_STORE_INDEX)
                .key_condition_expression("gsi2pk = :store")
                .expression_attribute_values(":store", store_key(store))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed(&tables.orders, e))?;
            for item in output.items() {
                orders.push(board_order(item).map_err(|reason| ViewError::Corrupt {
                    table: tables.orders.clone(),
                    reason,
                })?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(orders),
            }
        }
    }

    async fn day_metrics_in(
        &self,
        tables: &ActiveOrdersTables,
        store: &StoreId,
        business_day: &str,
    ) -> Result<DayMetrics, ViewError> {
        let output = self
            .client
            .get_item()
            .table_name(&tables.stores)
            .key("pk", store_key(store))
            .key("sk", AttributeValue::S(format!("DAY#{business_day}")))
            .projection_expression(
                "orders_placed, orders_active, orders_completed, orders_cancelled, \
                 orders_rejected, prep_ms_total, prep_count",
            )
            .send()
            .await
            .map_err(|e| failed(&tables.stores, e))?;
        let item = output.item.unwrap_or_default();
        let count = |name: &str| number(&item, name).unwrap_or(0);
        let prepared = count("prep_count");
        Ok(DayMetrics {
            business_day: business_day.to_owned(),
            orders_today: count("orders_placed"),
            active: count("orders_active"),
            completed: count("orders_completed"),
            cancelled: count("orders_cancelled"),
            rejected: count("orders_rejected"),
            average_prep_ms: (prepared > 0).then(|| count("prep_ms_total") / prepared),
        })
    }

    /// The SKU items that are low on stock or have a reorder open, in one query: the board
    /// shows both, and most SKUs are neither.
    async fn stock_in(
        &self,
        tables: &ActiveOrdersTables,
        store: &StoreId,
    ) -> Result<StockNeeds, ViewError> {
        let mut needs = StockNeeds::default();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&tables.stores)
                .key_condition_expression("pk = :store AND begins_with(sk, :sku)")
                .filter_expression("low_stock = :low OR attribute_exists(open_reorder_number)")
                .expression_attribute_values(":store", store_key(store))
                .expression_attribute_values(":sku", AttributeValue::S("SKU#".into()))
                .expression_attribute_values(":low", AttributeValue::Bool(true))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed(&tables.stores, e))?;
            for item in output.items() {
                let sku = text(item, "sku").ok_or_else(|| ViewError::Corrupt {
                    table: tables.stores.clone(),
                    reason: "a stock item without sku".into(),
                })?;
                let on_hand = number(item, "on_hand").unwrap_or(0);
                let reserved = number(item, "reserved").unwrap_or(0);
                if let Some(reorder_number) = number(item, "open_reorder_number") {
                    needs.open_reorders.push(OpenReorder {
                        sku: sku.clone(),
                        reorder_number,
                        quantity: number(item, "open_reorder_quantity").unwrap_or(0),
                        since: text(item, "open_reorder_since"),
                        available: on_hand - reserved,
                    });
                }
                if item.get("low_stock").and_then(|v| v.as_bool().ok()) == Some(&true) {
                    needs.warnings.push(StockWarning {
                        sku,
                        available: on_hand - reserved,
                        threshold: number(item, "low_stock_threshold").unwrap_or(0),
                        since: text(item, "low_stock_since"),
                        reorder_suggested: number(item, "reorder_suggested"),
                    });
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(needs),
            }
        }
    }
}

/// A store's SKUs that need attention: low on stock, or awaiting a delivery.
#[derive(Debug, Default)]
struct StockNeeds {
    warnings: Vec<StockWarning>,
    open_reorders: Vec<OpenReorder>,
}

/// The day's metrics with `active` taken from the board: the orders open now, whatever day they
/// were placed on (the day item only counts that day's).
fn with_active(metrics: DayMetrics, open_orders: usize) -> DayMetrics {
    DayMetrics {
        active: i64::try_from(open_orders).unwrap_or(i64::MAX),
        ..metrics
    }
}

fn store_key(store: &StoreId) -> AttributeValue {
    AttributeValue::S(format!("STORE#{store}"))
}

fn failed<E>(table: &str, error: aws_sdk_dynamodb::error::SdkError<E>) -> ViewError
where
    E: std::error::Error + Send + Sync + 'static,
{
    ViewError::DynamoDb {
        table: table.to_owned(),
        source: Box::new(error),
    }
}

fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn number(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

fn board_order(item: &Item) -> Result<BoardOrder, String> {
    let required = |name: &str| text(item, name).ok_or_else(|| format!("an order without {name}"));
    let items = match item.get("items") {
        Some(AttributeValue::L(lines)) => lines.iter().map(board_item).collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok(BoardOrder {
        order_id: required("order_id")?,
        status: required("status")?,
        placed_at: required("placed_at")?,
        status_at: text(item, "status_at"),
        customer_id: required("customer_id")?,
        items,
        note: text(item, "note"),
        payment_status: text(item, "payment_status"),
        total_cents: number(item, "total_cents").unwrap_or(0),
    })
}

fn board_item(value: &AttributeValue) -> Result<BoardItem, String> {
    let AttributeValue::M(line) = value else {
        return Err("an order line that is not a map".into());
    };
    let customisations = match line.get("customisations") {
        Some(AttributeValue::L(list)) => {
            list.iter().filter_map(|c| c.as_s().ok().cloned()).collect()
        }
        _ => Vec::new(),
    };
    Ok(BoardItem {
        sku: text(line, "sku").ok_or("an order line without sku")?,
        name: text(line, "name").unwrap_or_default(),
        quantity: number(line, "quantity")
            .and_then(|q| u32::try_from(q).ok())
            .ok_or("an order line without a quantity")?,
        customisations,
    })
}
