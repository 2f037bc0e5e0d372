//! The rows of a rebuild into a fresh schema, as `COPY ... FROM STDIN (FORMAT binary)` streams
//! (`copy_binary.rs` encodes each type): replay's bulk rebuild (`replay/src/bulk/`) feeds each
//! writer's commits to a [`BulkRows`] and streams what it gives into the target with `COPY`,
//! without the live path's per-batch marker reads.
//!
//! The rows come from the mapping the live projections use (`ChangeBatch`, `OrderChanges`,
//! `history_rows`, the analytics row types), so a bulk rebuild writes what the live path
//! writes. What it may hold is bounded, not proportional to the history:
//! - an order is folded in memory while it is open (its `orders` / `fact_orders` row is its
//!   current state) and written, with its items, timeline and marker, once it ends, or when
//!   more than `keep_open` orders are open (the ones seen first);
//! - a commit of an order already written (a refund after a cancellation, or an order evicted
//!   while open) is [`Added::Deferred`]: replay applies that aggregate's remaining commits
//!   through the live projection once the markers are in;
//! - loyalty and stock rows (append-only) go out with every [`BulkRows::write_ended`];
//! - the last sequence of each loyalty account, inventory and the menu (aggregates that live as
//!   long as the business, counted by customers and stores, not by events), written as markers
//!   at the end, and the analytics dimensions (stores, hours, menu items).

mod analytics;
mod history;

use commit_log::projection::ProjectionError;
use commit_log::LoggedCommit;

use crate::analytics::{AppliedRow, Batch, Dimensions};
use crate::copy_binary::CopyBinary;
pub use crate::copy_binary::NotAUuid;
use crate::history::NewestCommit;
use crate::order_changes::OrderChanges;
use crate::progress::{gather, Applied, INVENTORY, LOYALTY, MENU, ORDER};

/// Rows for one table, a whole binary `COPY` stream, with the statement that loads them (table
/// names unqualified: the writer's session selects the schema).
#[derive(Debug)]
pub struct CopyData {
    /// `COPY <table> (<columns>) FROM STDIN (FORMAT binary)`.
    pub statement: &'static str,
    /// The rows: header, rows, trailer.
    pub data: Vec<u8>,
    /// How many.
    pub rows: u64,
}

/// What [`BulkRows::add`] did with a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Its rows are held or buffered (or it changes nothing in the view).
    Taken,
    /// It belongs to an order whose rows were already written: apply that aggregate's commits
    /// after its marker through the live projection once the markers are in.
    Deferred,
}

/// Which read model's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    History,
    Analytics,
}

/// One writer's rows of a bulk rebuild (see the module documentation).
#[derive(Debug)]
pub struct BulkRows {
    model: Model,
    held: Batch,
    applied: Applied,
    keep_open: usize,
    newest: NewestCommit,
    dimensions: Dimensions,
    tables: Vec<CopyBinary>,
}

/// What every writer of one rebuild contributes to shared rows (history's `view_progress`, the
/// analytics dimensions), merged and written once at the end.
#[derive(Debug)]
pub struct BulkShared {
    model: Model,
    newest: NewestCommit,
    dimensions: Dimensions,
    items: Vec<crate::analytics::DimItem>,
}

impl BulkRows {
    /// The history view's rows, holding at most `keep_open` open orders.
    pub fn history(keep_open: usize) -> Self {
        Self::new(Model::History, keep_open)
    }

    /// The analytics view's rows, holding at most `keep_open` open orders.
    pub fn analytics(keep_open: usize) -> Self {
        Self::new(Model::Analytics, keep_open)
    }

    fn new(model: Model, keep_open: usize) -> Self {
        let tables = match model {
            Model::History => history::TABLES.len(),
            Model::Analytics => analytics::TABLES.len(),
        };
        Self {
            model,
            held: Batch::default(),
            applied: Applied::new(),
            keep_open,
            newest: NewestCommit::default(),
            dimensions: Dimensions::default(),
            tables: (0..tables).map(|_| CopyBinary::default()).collect(),
        }
    }

    /// Adds one commit, in its aggregate's order. A commit the live projection would refuse (a
    /// gap, an event of another aggregate type) is refused the same way: the same
    /// [`ProjectionError::Poison`] reason, at index 0.
    pub fn add(&mut self, commit: &LoggedCommit) -> Result<Added, ProjectionError> {
        if commit.aggregate_type == ORDER
            && commit.first_sequence() > 1
            && !self.held.changes.holds_order(&commit.aggregate_id)
        {
            return Ok(Added::Deferred);
        }
        let tracked: &[&str] = match self.model {
            Model::History => &[ORDER, INVENTORY, LOYALTY],
            Model::Analytics => &[ORDER, INVENTORY, LOYALTY, MENU],
        };
        let held = &mut self.held;
        let model = self.model;
        let stopped = gather(
            std::slice::from_ref(commit),
            tracked,
            &mut self.applied,
            |commit, before| match model {
                Model::History => held.changes.add(commit, before).map(drop),
                Model::Analytics => held.add(commit, before),
            },
        );
        if let Some(error) = stopped {
            return Err(error);
        }
        if tracked.contains(&commit.aggregate_type.as_str()) {
            self.newest.saw(commit);
        }
        Ok(Added::Taken)
    }

    /// Bytes of rows buffered since the last [`Self::take_rows`] (rows [`Self::write_ended`]
    /// has not written yet not counted).
    pub fn buffered_bytes(&self) -> usize {
        self.tables.iter().map(CopyBinary::len).sum()
    }

    /// Writes into the buffers the orders that ended (and the oldest open ones past
    /// `keep_open`) with their markers, and the loyalty and stock rows so far, letting them go.
    /// Refused when an order id is not a `uuid` (history's `order_id` columns are).
    pub fn write_ended(&mut self) -> Result<(), NotAUuid> {
        let orders = self.held.changes.take_orders(self.keep_open);
        self.write_orders(&orders)?;
        self.write_ledgers()
    }

    /// The buffered rows, one [`CopyData`] per table that has some, emptying the buffers.
    pub fn take_rows(&mut self) -> Vec<CopyData> {
        self.drain()
    }

    /// Everything still held: every open order, the markers of the other aggregates, and this
    /// writer's share of the shared rows. Refused as [`Self::write_ended`] is.
    pub fn finish(mut self) -> Result<(Vec<CopyData>, BulkShared), NotAUuid> {
        let orders = self.held.changes.take_orders(0);
        self.write_orders(&orders)?;
        self.write_ledgers()?;
        let markers: Vec<AppliedRow> = self.applied.drain().map(AppliedRow::of).collect();
        for marker in &markers {
            self.write_marker(marker);
        }
        let items = analytics::items(&self.held);
        let rows = self.drain();
        let shared = BulkShared {
            model: self.model,
            newest: self.newest,
            dimensions: std::mem::take(&mut self.dimensions),
            items,
        };
        Ok((rows, shared))
    }

    fn write_orders(&mut self, orders: &[(String, OrderChanges)]) -> Result<(), NotAUuid> {
        for (order_id, changes) in orders {
            match self.model {
                Model::History => history::write_order(&mut self.tables, order_id, changes)?,
                Model::Analytics => analytics::write_order(
                    &mut self.tables,
                    &mut self.dimensions,
                    order_id,
                    changes,
                ),
            }
            let key = (ORDER.to_owned(), order_id.clone());
            if let Some(applied) = self.applied.remove(&key) {
                self.write_marker(&AppliedRow::of((key, applied)));
            }
        }
        Ok(())
    }

    fn write_ledgers(&mut self) -> Result<(), NotAUuid> {
        let changes = &mut self.held.changes;
        match self.model {
            Model::History => history::write_ledgers(&mut self.tables, changes)?,
            Model::Analytics => {
                self.dimensions.see_ledgers(changes);
                analytics::write_ledgers(&mut self.tables, changes);
            }
        }
        changes.loyalty.clear();
        changes.stock.clear();
        Ok(())
    }

    fn write_marker(&mut self, marker: &AppliedRow) {
        match self.model {
            Model::History => history::write_marker(&mut self.tables, marker),
            Model::Analytics => analytics::write_marker(&mut self.tables, marker),
        }
    }

    fn drain(&mut self) -> Vec<CopyData> {
        let statements = match self.model {
            Model::History => history::TABLES,
            Model::Analytics => analytics::TABLES,
        };
        statements
            .iter()
            .zip(&mut self.tables)
            .filter_map(|(statement, table)| {
                let (data, rows) = table.take();
                (rows > 0).then_some(CopyData {
                    statement,
                    data,
                    rows,
                })
            })
            .collect()
    }
}

impl BulkShared {
    /// Adds another writer's share.
    pub fn merge(&mut self, other: BulkShared) {
        if other.newest.position > self.newest.position {
            self.newest = other.newest;
        }
        self.dimensions.merge(other.dimensions);
        self.items.extend(other.items);
    }

    /// The shared rows, to write once.
    pub fn into_rows(self) -> Vec<CopyData> {
        match self.model {
            Model::History => history::shared_rows(self.newest),
            Model::Analytics => analytics::shared_rows(self.dimensions, &self.items),
        }
    }
}
