//! Rebuilds from a real event store into fresh schemas, compared with views built live.

// Unwrapping is how a test says "this must work".
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use commit_log::LoggedCommit;
use cqrs_es::CqrsFramework;
use domain::inventory::{InventoryCommand, StoreInventory};
use domain::loyalty::{LoyaltyAccount, LoyaltyCommand};
use domain::values::{CustomerId, Money, OrderId, Sku, StoreId};
use event_store::{AggregateStore, PgEventStore, StoreConfig};
use futures::TryStreamExt;
use interruption::FailAfter;
use projectors::projections::SchemaName;
use replay::{rebuild, verify, ProgressTable, ReadModel, RebuildOptions, ReplayError, Until};
use sqlx::PgPool;
use test_support::{fresh_database, unique_name};

const MODELS: [ReadModel; 2] = [ReadModel::History, ReadModel::Analytics];

/// Commits written concurrently to several inventories and loyalty accounts, so they interleave
/// and group commits batch them.
async fn write_history(store: &PgEventStore) {
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

/// The true commits, from the outbox (no relay runs here), in commit order: what the projectors
/// receive live.
async fn logged_commits(store: &PgEventStore) -> Vec<LoggedCommit> {
    let ranges: Vec<(i64, i64)> =
        sqlx::query_as("SELECT first_position, last_position FROM outbox ORDER BY 1")
            .fetch_all(store.pool())
            .await
            .unwrap();
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

/// Builds `model` into a new schema by applying `commits` one at a time, as the live projector
/// may.
async fn build_live(pool: &PgPool, model: ReadModel, commits: &[LoggedCommit]) -> SchemaName {
    let schema = new_schema("live");
    model.create_schema(pool, &schema).await.unwrap();
    let projection = model.projection(pool.clone(), schema.clone());
    for commit in commits {
        projection
            .apply(std::slice::from_ref(commit))
            .await
            .unwrap();
    }
    schema
}

fn new_schema(prefix: &str) -> SchemaName {
    SchemaName::parse(&unique_name(prefix).replace('-', "_").to_lowercase()).unwrap()
}

/// A fresh replay target with its progress table.
async fn target(pool: &PgPool, model: ReadModel) -> (SchemaName, ProgressTable) {
    let schema = new_schema("replay");
    model.create_schema(pool, &schema).await.unwrap();
    let progress = ProgressTable::new(pool.clone(), schema.clone());
    progress.create().await.unwrap();
    (schema, progress)
}

fn options(until: Option<Until>, batch_commits: usize) -> RebuildOptions {
    RebuildOptions {
        until,
        batch_commits,
    }
}

async fn assert_same(pool: &PgPool, left: &SchemaName, right: &SchemaName) {
    let comparison = verify(pool, left, right).await.unwrap();
    assert!(comparison.tables_compared >= 6, "{comparison:?}");
    assert!(
        comparison.is_equal(),
        "{left} and {right} differ: {comparison:#?}"
    );
}

struct Setup {
    store: PgEventStore,
    views: PgPool,
    commits: Vec<LoggedCommit>,
}

async fn setup() -> Setup {
    let events = fresh_database().await;
    let store = PgEventStore::open(events.pool.clone(), StoreConfig::default())
        .await
        .unwrap();
    write_history(&store).await;
    let commits = logged_commits(&store).await;
    Setup {
        store,
        views: fresh_database().await.pool,
        commits,
    }
}

#[tokio::test]
async fn a_rebuild_equals_the_view_built_live() {
    let s = setup().await;
    for model in MODELS {
        let live = build_live(&s.views, model, &s.commits).await;
        let (schema, progress) = target(&s.views, model).await;
        let projection = model.projection(s.views.clone(), schema.clone());
        let mut batches = 0;
        let done = rebuild(
            &s.store,
            projection.as_ref(),
            &progress,
            &options(None, 4),
            |_| batches += 1,
        )
        .await
        .unwrap();
        let last = s.store.last_position().await.unwrap();
        assert_eq!((done.started_after, done.applied_through), (0, last));
        assert_eq!(done.events, last as u64);
        assert!(batches > 1, "{} commits in batches of 4", s.commits.len());
        assert_eq!(progress.load(model.name()).await.unwrap(), Some(last));
        assert_same(&s.views, &live, &schema).await;
    }
}

#[tokio::test]
async fn an_as_of_rebuild_equals_the_view_of_the_commits_up_to_the_bound() {
    let s = setup().await;
    // A bound inside a commit of several events: that commit is left out whole.
    let split = s
        .commits
        .iter()
        .skip(s.commits.len() / 3)
        .find(|c| c.events.len() > 1)
        .expect("a commit of several events");
    let inside = split.first_position() as i64;
    let at_end = s.commits[s.commits.len() / 2].last_position() as i64;
    for model in MODELS {
        for bound in [inside, at_end] {
            let up_to: Vec<_> = s
                .commits
                .iter()
                .filter(|c| c.last_position() as i64 <= bound)
                .cloned()
                .collect();
            let live = build_live(&s.views, model, &up_to).await;
            let (schema, progress) = target(&s.views, model).await;
            let projection = model.projection(s.views.clone(), schema.clone());
            let options = options(Some(Until::Position(bound)), 3);
            let done = rebuild(&s.store, projection.as_ref(), &progress, &options, |_| {})
                .await
                .unwrap();
            let expected_end = up_to.last().map_or(0, |c| c.last_position() as i64);
            assert_eq!(done.applied_through, expected_end);
            assert_same(&s.views, &live, &schema).await;
        }
    }
}

#[tokio::test]
async fn a_bound_past_the_log_is_refused() {
    let s = setup().await;
    let (schema, progress) = target(&s.views, ReadModel::History).await;
    let projection = ReadModel::History.projection(s.views.clone(), schema);
    let last = s.store.last_position().await.unwrap();
    let result = rebuild(
        &s.store,
        projection.as_ref(),
        &progress,
        &options(Some(Until::Position(last + 1)), 10),
        |_| {},
    )
    .await;
    assert!(
        matches!(result, Err(ReplayError::BeyondLog { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_interrupted_rebuild_resumes_and_ends_equal() {
    let s = setup().await;
    for model in MODELS {
        let live = build_live(&s.views, model, &s.commits).await;
        let (schema, progress) = target(&s.views, model).await;
        let interrupted = FailAfter::new(model.projection(s.views.clone(), schema.clone()), 2);
        let result = rebuild(&s.store, &interrupted, &progress, &options(None, 3), |_| {}).await;
        assert!(
            matches!(result, Err(ReplayError::Apply { .. })),
            "{result:?}"
        );
        let stopped_at = progress
            .load(model.name())
            .await
            .unwrap()
            .expect("progress");
        assert!(stopped_at > 0);

        let projection = model.projection(s.views.clone(), schema.clone());
        let done = rebuild(
            &s.store,
            projection.as_ref(),
            &progress,
            &options(None, 3),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(done.started_after, stopped_at);
        assert_eq!(done.applied_through, s.store.last_position().await.unwrap());
        assert_same(&s.views, &live, &schema).await;
    }
}

#[tokio::test]
async fn verify_lists_every_differing_row() {
    let s = setup().await;
    let model = ReadModel::History;
    let left = build_live(&s.views, model, &s.commits).await;
    let right = build_live(&s.views, model, &s.commits).await;
    assert_same(&s.views, &left, &right).await;

    let changed = format!(
        "UPDATE {right}.stock_movements SET quantity = quantity + 100 \
         WHERE (store_id, sequence, line_no) = \
               (SELECT store_id, sequence, line_no FROM {right}.stock_movements ORDER BY 1, 2, 3 LIMIT 1)"
    );
    sqlx::query(&changed).execute(&s.views).await.unwrap();
    let deleted = format!(
        "DELETE FROM {right}.loyalty_ledger WHERE (customer_id, sequence) = \
         (SELECT customer_id, sequence FROM {right}.loyalty_ledger ORDER BY 1, 2 LIMIT 1)"
    );
    sqlx::query(&deleted).execute(&s.views).await.unwrap();

    let comparison = verify(&s.views, &left, &right).await.unwrap();
    assert!(!comparison.is_equal());
    let tables: Vec<_> = comparison
        .differences
        .iter()
        .map(|d| d.table.as_str())
        .collect();
    assert_eq!(tables, ["loyalty_ledger", "stock_movements"]);
    let ledger = &comparison.differences[0];
    assert_eq!(ledger.left_rows.unwrap(), ledger.right_rows.unwrap() + 1);
    assert_eq!(
        (ledger.only_in_left.len(), ledger.only_in_right.len()),
        (1, 0)
    );
    let stock = &comparison.differences[1];
    assert_eq!(stock.left_rows, stock.right_rows);
    assert_eq!(
        (stock.only_in_left.len(), stock.only_in_right.len()),
        (1, 1)
    );
    assert_ne!(stock.only_in_left, stock.only_in_right);
}

/// A projection that fails every batch after its first `batches`: an interruption.
mod interruption {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use commit_log::LoggedCommit;
    use projectors::projection::{Projection, ProjectionError};

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
                return Err(ProjectionError::Transient("interrupted".into()));
            }
            self.left.store(left - 1, Ordering::SeqCst);
            self.inner.apply(commits).await
        }
    }
}
