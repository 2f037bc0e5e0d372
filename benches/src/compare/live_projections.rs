//! (d): the live projections as the `projectors` process runs them. The commits are read from
//! the store first (through replay's reader, untimed), then handed to the projection's `apply`
//! in batches of `runtime.batch_size` commits, one batch after the other, as one shard's
//! consumer hands it what one GetRecords call returned when it is behind (one commit per
//! record). Only the `apply` calls are timed: reading and decoding the log is the consumer's
//! work, not the projection's, and replay's rate (which includes reading the store) is (c).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::LoggedCommit;
use event_store::PgEventStore;
use read_models::{ActiveOrdersProjection, ActiveOrdersTables, DynamoDbCalls, HistoryProjection};
use replay::{rebuild, ProgressTable, RebuildOptions, Until};
use sqlx::PgPool;
use test_support::unique_name;

use super::raw_rates::{self, Rate};
use super::rebuilds::{fresh_schema, RebuildError, BATCH_COMMITS};
use crate::resources::delete_tables;

/// The records one GetRecords call returns at most, as the projectors are configured by default
/// (`runtime.batch_size`): the batch a consumer that is behind applies at once.
pub fn projector_batch_commits() -> Result<usize, RebuildError> {
    use projectors::settings::{LayeredSettings, Settings};
    let settings = Settings::built_in().map_err(|e| RebuildError::Setup(e.to_string()))?;
    Ok(settings.runtime.batch_size as usize)
}

/// The first `through` positions of `store` as the log carries them: one [`LoggedCommit`] per
/// commit, in commit order.
pub async fn read_commits(
    store: &PgEventStore,
    views: &PgPool,
    through: i64,
) -> Result<Vec<LoggedCommit>, RebuildError> {
    // The reader keeps its progress in a PostgreSQL schema; this one holds nothing else.
    let schema = fresh_schema("commits_read")?;
    sqlx::query(&format!("CREATE SCHEMA {}", schema.as_str()))
        .execute(views)
        .await
        .map_err(|e| RebuildError::Setup(e.to_string()))?;
    let progress = ProgressTable::new(views.clone(), schema);
    progress.create().await?;
    let collected = CollectedCommits::default();
    let options = RebuildOptions {
        until: Some(Until::Position(through)),
        batch_commits: BATCH_COMMITS,
    };
    rebuild(store, &collected, &progress, &options, |_| {}).await?;
    Ok(collected.into_commits())
}

/// Applies `commits` to a fresh history schema of `views`, live-sized batches; events applied per
/// second of `apply`.
pub async fn history_rate(
    views: &PgPool,
    commits: &[LoggedCommit],
    batch_commits: usize,
) -> Result<Rate, RebuildError> {
    let schema = fresh_schema("history_live")?;
    HistoryProjection::create_schema(views, &schema)
        .await
        .map_err(|e| RebuildError::Setup(e.to_string()))?;
    let projection = HistoryProjection::new(views.clone(), schema);
    apply_in_batches(&projection, commits, batch_commits).await
}

/// Applies `commits` to the active-orders projection writing into `tables` (which must exist),
/// live-sized batches; events applied per second of `apply`, and the DynamoDB calls it made.
pub async fn active_orders_rate(
    client: aws_sdk_dynamodb::Client,
    tables: ActiveOrdersTables,
    commits: &[LoggedCommit],
    batch_commits: usize,
) -> Result<(Rate, DynamoDbCalls), RebuildError> {
    let projection = ActiveOrdersProjection::new(client, tables);
    let rate = apply_in_batches(&projection, commits, batch_commits).await?;
    Ok((rate, projection.usage()))
}

/// The like-for-like reference of the active-orders projection: the items the projection left
/// in `tables` (order items as it wrote them: open orders with both indexes' keys, ended ones
/// as tombstones; the store-day metrics items with their entries), each put once with
/// `concurrency` PutItem writers into fresh tables of the same shapes (indexes included). Items
/// per second; the fresh tables are deleted afterwards.
pub async fn view_items_put_rate(
    client: &aws_sdk_dynamodb::Client,
    tables: &ActiveOrdersTables,
    concurrency: usize,
) -> Result<Rate, RebuildError> {
    let copies = ActiveOrdersTables {
        orders: unique_name("bench-raw-view-orders"),
        stores: unique_name("bench-raw-view-stores"),
    };
    ActiveOrdersProjection::create_tables(client, &copies)
        .await
        .map_err(|e| RebuildError::Setup(e.to_string()))?;
    let mut rate = Rate {
        units: 0,
        seconds: 0.0,
    };
    for (from, into) in [
        (&tables.orders, &copies.orders),
        (&tables.stores, &copies.stores),
    ] {
        let items = scan(client, from).await?;
        let put = raw_rates::put_items(client, into, items, concurrency)
            .await
            .map_err(|e| RebuildError::Setup(format!("raw PutItem of the view's items: {e}")))?;
        rate.units += put.units;
        rate.seconds += put.seconds;
    }
    delete_tables(client, &[&copies.orders, &copies.stores]).await;
    Ok(rate)
}

/// Every item of `table`.
async fn scan(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Vec<raw_rates::Item>, RebuildError> {
    let mut items = Vec::new();
    let mut start_key = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(|e| RebuildError::Setup(format!("scan of {table}: {e}")))?;
        items.extend_from_slice(page.items());
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start_key = Some(key.clone()),
            _ => return Ok(items),
        }
    }
}

/// Hands `commits` to `projection` in batches of `batch_commits`, in order, each once it
/// succeeded (a transient failure is tried again, as the consumer does); the events applied
/// over the time spent in `apply`.
pub async fn apply_in_batches(
    projection: &dyn Projection,
    commits: &[LoggedCommit],
    batch_commits: usize,
) -> Result<Rate, RebuildError> {
    let mut applying = Duration::ZERO;
    for batch in commits.chunks(batch_commits.max(1)) {
        loop {
            let started = Instant::now();
            let applied = projection.apply(batch).await;
            applying += started.elapsed();
            match applied {
                Ok(()) => break,
                Err(ProjectionError::Transient(_)) => continue,
                Err(refused) => {
                    return Err(RebuildError::Setup(format!(
                        "{} refused a batch: {refused}",
                        projection.name()
                    )))
                }
            }
        }
    }
    Ok(Rate {
        units: commits.iter().map(|c| c.events.len() as u64).sum(),
        seconds: applying.as_secs_f64(),
    })
}

/// A projection that only keeps what it is given: replay's reader, used to cut the store into
/// commits without timing the projections on it.
#[derive(Default)]
struct CollectedCommits(Mutex<Vec<LoggedCommit>>);

impl CollectedCommits {
    fn into_commits(self) -> Vec<LoggedCommit> {
        self.0.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Projection for CollectedCommits {
    fn name(&self) -> &'static str {
        "compare_commits"
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(commits);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commit_log::{DomainEvent, LoggedEvent};
    use domain::{MenuEvent, Sku};

    /// Records the size of every batch it is given.
    #[derive(Default)]
    struct BatchSizes(Mutex<Vec<usize>>);

    #[async_trait]
    impl Projection for BatchSizes {
        fn name(&self) -> &'static str {
            "batch_sizes"
        }

        async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
            self.0.lock().expect("not poisoned").push(commits.len());
            Ok(())
        }
    }

    fn commit(position: u64) -> LoggedCommit {
        let at = time::OffsetDateTime::UNIX_EPOCH;
        LoggedCommit {
            aggregate_type: "menu".into(),
            aggregate_id: "menu".into(),
            committed_at: at,
            correlation_id: String::new(),
            causation_id: String::new(),
            actor: String::new(),
            traceparent: String::new(),
            events: vec![LoggedEvent {
                sequence: position,
                position,
                recorded_at: at,
                event: DomainEvent::Menu(MenuEvent::MenuItemAvailabilityChanged {
                    sku: Sku::parse("LATTE-12").expect("a valid SKU"),
                    available: true,
                }),
            }],
        }
    }

    #[tokio::test]
    async fn the_projection_gets_the_consumers_batches_in_log_order() {
        let commits: Vec<_> = (1..=1200).map(commit).collect();
        let sizes = BatchSizes::default();
        let rate = apply_in_batches(&sizes, &commits, 500)
            .await
            .expect("applied");
        assert_eq!(*sizes.0.lock().expect("not poisoned"), [500, 500, 200]);
        assert_eq!(rate.units, 1200, "every event counted once");
    }

    #[test]
    fn the_batch_is_the_projectors_get_records_limit() {
        assert_eq!(projector_batch_commits().expect("the defaults load"), 500);
    }
}
