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

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::Client;
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

/// How many aggregates are written at the same time; one aggregate's commits are always
/// written one after the other.
const CONCURRENT_AGGREGATES: usize = 16;

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
#[derive(Debug, Clone)]
pub struct ActiveOrdersProjection {
    client: Client,
    tables: Tables,
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
}

impl Target<'_> {
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
        }
    }

    /// A projection writing to the tables `alias` names when each batch starts, so that a view
    /// replay swaps in takes the live writes from the next batch on.
    pub fn following(alias: ViewAlias) -> Self {
        Self {
            client: alias.client().clone(),
            tables: Tables::Following(alias),
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
        })
    }
}

/// Applies one aggregate's commits (`(index in the batch, commit)`, in log order).
async fn apply_aggregate(
    target: &Target<'_>,
    commits: Vec<(usize, &LoggedCommit)>,
) -> Result<(), ProjectionError> {
    let Some((_, first)) = commits.first() else {
        return Ok(());
    };
    match first.aggregate_type.as_str() {
        ORDER => orders::apply(target, &commits).await,
        INVENTORY => stock::apply(target, &commits).await,
        // Loyalty and menu events have no place on the barista dashboard.
        _ => Ok(()),
    }
}

#[async_trait]
impl Projection for ActiveOrdersProjection {
    fn name(&self) -> &'static str {
        "active_orders"
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        // A loop, not a closure: a closure over the borrowed groups would make the future
        // higher-ranked over their lifetime, which async-trait's `Send` future cannot name.
        let target = self.target().await?;
        let mut writes = Vec::new();
        for group in group_by_aggregate(commits) {
            writes.push(apply_aggregate(&target, group));
        }
        let results: Vec<Result<(), ProjectionError>> = stream::iter(writes)
            .buffer_unordered(CONCURRENT_AGGREGATES)
            .collect()
            .await;
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
