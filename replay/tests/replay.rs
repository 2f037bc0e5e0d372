//! Rebuilds from a real event store into fresh schemas, compared with views built live.

// Unwrapping is how a test says "this must work".
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use commit_log::LoggedCommit;
use common::FailAfter;
use common::{fresh_store, write_history, write_orders, Setup};
use cqrs_es::CqrsFramework;
use domain::inventory::{InventoryCommand, StoreInventory};
use domain::values::{Sku, StoreId};
use event_store::{AggregateStore, PgEventStore};
use futures::TryStreamExt;
use read_models::SchemaName;
use replay::{
    rebuild, swap_in, verify, view_status, ProgressStore, ProgressTable, ReadModel, RebuildOptions,
    ReplayError, SwapPlan, Until,
};
use sqlx::PgPool;
use test_support::unique_name;

const MODELS: [ReadModel; 2] = [ReadModel::History, ReadModel::Analytics];

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

async fn setup() -> Setup {
    let store = fresh_store().await;
    write_history(&store).await;
    write_orders(&store).await;
    Setup::of(store).await
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

/// Redshift does not enforce primary keys, so a load bug can leave a row twice: verify (the
/// same SQL on Redshift and PostgreSQL, without `EXCEPT ALL`) counts copies, and a value changed
/// in a boolean column shows on both sides.
#[tokio::test]
async fn verify_of_analytics_finds_a_duplicated_row_and_a_changed_boolean() {
    let s = setup().await;
    let left = build_live(&s.views, ReadModel::Analytics, &s.commits).await;
    let right = build_live(&s.views, ReadModel::Analytics, &s.commits).await;
    assert!(verify(&s.views, &left, &right).await.unwrap().is_equal());
    // The table loses its (PostgreSQL-enforced) primary key, as on Redshift.
    let drop_key =
        format!("ALTER TABLE {right}.fact_order_items DROP CONSTRAINT fact_order_items_pkey");
    sqlx::query(&drop_key).execute(&s.views).await.unwrap();
    let duplicate = format!(
        "INSERT INTO {right}.fact_order_items \
         SELECT * FROM {right}.fact_order_items ORDER BY order_id, line_no LIMIT 1"
    );
    sqlx::query(&duplicate).execute(&s.views).await.unwrap();
    // The test log has no menu events: the same menu item on both sides, then flipped on one.
    for schema in [&left, &right] {
        let item = format!(
            "INSERT INTO {schema}.dim_item VALUES \
             ('TEA-1', 'Tea', 'drink', 300, true, '2025-03-03 08:00:00')"
        );
        sqlx::query(&item).execute(&s.views).await.unwrap();
    }
    let flipped =
        format!("UPDATE {right}.dim_item SET available = NOT available WHERE sku = 'TEA-1'");
    assert_eq!(
        sqlx::query(&flipped)
            .execute(&s.views)
            .await
            .unwrap()
            .rows_affected(),
        1
    );

    let comparison = verify(&s.views, &left, &right).await.unwrap();
    let tables: Vec<_> = comparison
        .differences
        .iter()
        .map(|d| d.table.as_str())
        .collect();
    assert_eq!(tables, ["dim_item", "fact_order_items"]);
    let items = &comparison.differences[0];
    assert_eq!(
        (items.only_in_left.len(), items.only_in_right.len()),
        (1, 1)
    );
    let (before, after) = (&items.only_in_left[0], &items.only_in_right[0]);
    assert!(
        (before.contains(",t,") && after.contains(",f,"))
            || (before.contains(",f,") && after.contains(",t,")),
        "{before} / {after}"
    );
    let lines = &comparison.differences[1];
    assert_eq!(lines.right_rows.unwrap(), lines.left_rows.unwrap() + 1);
    assert_eq!(lines.only_in_left.len(), 1, "{lines:?}");
    assert_eq!(lines.only_in_right.len(), 1, "{lines:?}");
    assert!(lines.only_in_right[0].ends_with(" x 2"), "{lines:?}");
}

#[tokio::test]
async fn an_in_place_rebuild_empties_the_live_view_and_ends_equal() {
    let s = setup().await;
    for model in MODELS {
        let reference = build_live(&s.views, model, &s.commits).await;
        let live = build_live(&s.views, model, &s.commits).await;
        // What a projection bug left behind: every row's quantity off by 100. Rebuilding on
        // top would keep them (every marker says "applied"); emptying first fixes them.
        let table = stock_table(model);
        let bogus = format!("UPDATE {live}.{table} SET quantity = quantity + 100");
        sqlx::query(&bogus).execute(&s.views).await.unwrap();
        assert!(!verify(&s.views, &reference, &live)
            .await
            .unwrap()
            .is_equal());

        replay::empty_schema(&s.views, model, &live).await.unwrap();
        assert_eq!(count(&s.views, &live, table).await.unwrap(), 0);
        let progress = ProgressTable::new(s.views.clone(), live.clone());
        assert!(ProgressTable::exists(&s.views, &live).await.unwrap());
        let projection = model.projection(s.views.clone(), live.clone());
        rebuild(
            &s.store,
            projection.as_ref(),
            &progress,
            &options(None, 7),
            |_| {},
        )
        .await
        .unwrap();
        progress.drop_table().await.unwrap();
        assert!(!ProgressTable::exists(&s.views, &live).await.unwrap());
        assert_same(&s.views, &reference, &live).await;
    }
}

#[tokio::test]
async fn one_aggregate_rebuilt_apart_replaces_its_rows_and_no_others() {
    let s = setup().await;
    let orders: Vec<&str> = {
        let mut ids: Vec<&str> = s
            .commits
            .iter()
            .filter(|c| c.aggregate_type == "order")
            .map(|c| c.aggregate_id.as_str())
            .collect();
        ids.dedup();
        ids
    };
    let (fixed, untouched) = (orders[0], orders[1]);
    for model in MODELS {
        let reference = build_live(&s.views, model, &s.commits).await;
        let live = build_live(&s.views, model, &s.commits).await;
        // A bug wrote the wrong customer on two orders; one of them is rebuilt.
        let (table, _) = model.aggregate_rows("order")[0];
        for id in [fixed, untouched] {
            let tamper = format!(
                "UPDATE {live}.{table} SET customer_id = 'tampered' WHERE order_id::text = $1"
            );
            sqlx::query(&tamper)
                .bind(id)
                .execute(&s.views)
                .await
                .unwrap();
        }
        let aggregate: replay::AggregateRef = format!("order/{fixed}").parse().unwrap();
        let (rebuilt, progress) = target(&s.views, model).await;
        let projection = model.projection(s.views.clone(), rebuilt.clone());
        let alone = replay::rebuild_aggregate(
            &s.store,
            projection.as_ref(),
            &progress,
            &options(None, 2),
            &aggregate,
            |_| {},
        )
        .await
        .unwrap();
        let its_events = s
            .commits
            .iter()
            .filter(|c| c.aggregate_id == fixed)
            .map(|c| c.events.len() as u64)
            .sum::<u64>();
        assert_eq!(
            alone.events, its_events,
            "only the aggregate's events are read"
        );
        replay::swap_aggregate_in(&s.store, &s.views, model, (&live, &rebuilt), &aggregate, 10)
            .await
            .unwrap();
        // Exactly the untouched order's row still differs.
        let comparison = verify(&s.views, &reference, &live).await.unwrap();
        assert_eq!(comparison.differences.len(), 1, "{comparison:#?}");
        let difference = &comparison.differences[0];
        assert_eq!(difference.table, table);
        assert_eq!(difference.only_in_right.len(), 1);
        assert!(difference.only_in_right[0].contains(untouched));
        assert!(difference.only_in_right[0].contains("tampered"));
    }
}

/// The table of stock movements, which the test history fills in both read models.
fn stock_table(model: ReadModel) -> &'static str {
    match model {
        ReadModel::History => "stock_movements",
        ReadModel::Analytics => "fact_stock_movements",
    }
}

async fn count(pool: &PgPool, schema: &SchemaName, table: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(r#"SELECT count(*) FROM "{schema}".{table}"#))
        .fetch_one(pool)
        .await
}

/// Rebuilds `model` into a new replay target up to the store's end, then swaps it in for `live`.
async fn rebuild_and_swap(s: &Setup, model: ReadModel, live: &SchemaName) -> SchemaName {
    let (rebuilt, progress) = target(&s.views, model).await;
    let projection = model.projection(s.views.clone(), rebuilt.clone());
    rebuild(
        &s.store,
        projection.as_ref(),
        &progress,
        &options(None, 2),
        |_| {},
    )
    .await
    .unwrap();
    let plan = SwapPlan {
        live: live.clone(),
        rebuilt,
        retired: new_schema("retired"),
    };
    swap_in(&s.store, &s.views, model, &plan, 2, |_| {})
        .await
        .unwrap();
    assert!(replay::schema_exists(&s.views, &plan.retired)
        .await
        .unwrap());
    assert!(!replay::schema_exists(&s.views, &plan.rebuilt)
        .await
        .unwrap());
    assert!(
        !ProgressTable::exists(&s.views, live).await.unwrap(),
        "the live schema must not look like a replay target"
    );
    plan.retired
}

#[tokio::test]
async fn a_reader_sees_the_old_view_until_the_swap_and_the_new_one_after() {
    let s = setup().await;
    for model in MODELS {
        let table = stock_table(model);
        let live = build_live(&s.views, model, &s.commits).await;
        let new = count(&s.views, &live, table).await.unwrap();
        // The old view is wrong (half its rows lost), which is why it is being rebuilt.
        let lose_half = format!(
            r#"DELETE FROM "{live}".{table} WHERE ctid IN
               (SELECT ctid FROM "{live}".{table} ORDER BY random() LIMIT {})"#,
            new / 2
        );
        sqlx::query(&lose_half).execute(&s.views).await.unwrap();
        let old = count(&s.views, &live, table).await.unwrap();
        assert!(old < new);

        let swapped = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn({
            let (pool, live, swapped, stop) =
                (s.views.clone(), live.clone(), swapped.clone(), stop.clone());
            async move {
                // (whether the swap had returned when the query started, the count it saw)
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let after_swap = swapped.load(Ordering::SeqCst);
                    seen.push((after_swap, count(&pool, &live, table).await));
                }
                seen
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        rebuild_and_swap(&s, model, &live).await;
        swapped.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::SeqCst);
        let seen = reader.await.unwrap();

        let counts: Vec<i64> = seen
            .iter()
            .map(|(_, result)| *result.as_ref().expect("no reader query fails"))
            .collect();
        assert!(
            counts.iter().all(|c| *c == old || *c == new),
            "a reader saw something else than the old ({old}) or new ({new}) view: {counts:?}"
        );
        let switched = counts
            .iter()
            .position(|c| *c == new)
            .expect("new view seen");
        assert!(switched > 0, "the old view was seen first");
        assert!(
            counts[switched..].iter().all(|c| *c == new),
            "the old view came back after the new one"
        );
        assert!(seen
            .iter()
            .filter(|(after_swap, _)| *after_swap)
            .all(|(_, c)| *c.as_ref().unwrap() == new));
        assert!(seen.iter().any(|(after_swap, _)| *after_swap));
    }
}

/// What the live projector does: applies the store's commits after `delivered`, one at a time,
/// in commit order (the outbox, as no relay runs here), to the schema named `live`, until told to
/// stop and nothing is left. Returns how many commits it applied before and after the swap.
async fn project_live(
    store: PgEventStore,
    pool: PgPool,
    model: ReadModel,
    live: SchemaName,
    mut delivered: i64,
    swapped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (usize, usize) {
    let projection = model.projection(pool, live);
    let (mut before, mut after) = (0, 0);
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let ranges: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT first_position, last_position FROM outbox WHERE first_position > $1 ORDER BY 1",
        )
        .bind(delivered)
        .fetch_all(store.pool())
        .await
        .unwrap();
        if ranges.is_empty() && stopping {
            return (before, after);
        }
        for (first, last) in ranges {
            let events: Vec<_> = store
                .read_range(first - 1, last)
                .try_collect()
                .await
                .unwrap();
            let commit = LoggedCommit::from_recorded(&events).unwrap();
            let was_swapped = swapped.load(Ordering::SeqCst);
            projection.apply(&[commit]).await.unwrap();
            if was_swapped {
                after += 1;
            } else {
                before += 1;
            }
            delivered = last;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Restocks two new stores until told to stop.
async fn keep_writing(store: PgEventStore, stop: Arc<AtomicBool>) {
    let inventory: CqrsFramework<StoreInventory, AggregateStore<StoreInventory>> =
        CqrsFramework::new(store.aggregate_store(vec![]), vec![], ());
    let ids: Vec<String> = (0..2)
        .map(|i| format!("{}-{i}", unique_name("w")))
        .collect();
    let sku = Sku::parse("MOCHA-12").unwrap();
    for id in &ids {
        let command = InventoryCommand::SetStock {
            store_id: StoreId::parse(id).unwrap(),
            sku: sku.clone(),
            on_hand: 50,
            low_stock_threshold: 5,
        };
        inventory.execute(id, command).await.unwrap();
    }
    while !stop.load(Ordering::SeqCst) {
        for id in &ids {
            let command = InventoryCommand::Restock {
                sku: sku.clone(),
                quantity: 1,
            };
            inventory.execute(id, command).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

#[tokio::test]
async fn a_live_projection_applying_commits_around_the_swap_ends_equal_to_a_full_rebuild() {
    let s = setup().await;
    for model in MODELS {
        let live = build_live(&s.views, model, &s.commits).await;
        let delivered = s.store.last_position().await.unwrap();
        let (swapped, stop_writing, stop_projecting) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let writer = tokio::spawn(keep_writing(s.store.clone(), stop_writing.clone()));
        let projector = tokio::spawn(project_live(
            s.store.clone(),
            s.views.clone(),
            model,
            live.clone(),
            delivered,
            swapped.clone(),
            stop_projecting.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let retired = rebuild_and_swap(&s, model, &live).await;
        swapped.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop_writing.store(true, Ordering::SeqCst);
        writer.await.unwrap();
        stop_projecting.store(true, Ordering::SeqCst);
        let (before, after) = projector.await.unwrap();
        assert!(
            before > 0 && after > 0,
            "{before} commits before the swap, {after} after"
        );

        let (full, progress) = target(&s.views, model).await;
        let projection = model.projection(s.views.clone(), full.clone());
        rebuild(
            &s.store,
            projection.as_ref(),
            &progress,
            &options(None, 50),
            |_| {},
        )
        .await
        .unwrap();
        assert_same(&s.views, &full, &live).await;
        // The retired view stopped at the swap: behind the new live one.
        let stock = stock_table(model);
        assert!(
            count(&s.views, &retired, stock).await.unwrap()
                < count(&s.views, &live, stock).await.unwrap()
        );
    }
}

#[tokio::test]
async fn list_reports_what_a_view_reflects_of_the_store() {
    let s = setup().await;
    for model in MODELS {
        let missing = new_schema("missing");
        let status = view_status(&s.store, &s.views, model, &missing)
            .await
            .unwrap();
        assert_eq!(status.view, None);
        assert_eq!(status.events_behind(), status.store_events);

        let behind = &s.commits[..s.commits.len() - 3];
        let live = build_live(&s.views, model, behind).await;
        let status = view_status(&s.store, &s.views, model, &live).await.unwrap();
        let view = status.view.clone().unwrap();
        let last = s.store.last_position().await.unwrap();
        assert_eq!(status.store_last_position, last);
        // Every event of the test history is of a type both models read.
        assert_eq!(status.store_events, last);
        let left_out: i64 = s.commits[s.commits.len() - 3..]
            .iter()
            .map(|c| c.events.len() as i64)
            .sum();
        assert_eq!(status.events_behind(), left_out);
        let highest = behind.iter().map(|c| c.last_position() as i64).max();
        assert_eq!(view.highest_position, highest);
        let aggregates = behind
            .iter()
            .map(|c| (&c.aggregate_type, &c.aggregate_id))
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(view.aggregates, aggregates.len() as i64);

        let caught_up = build_live(&s.views, model, &s.commits).await;
        let status = view_status(&s.store, &s.views, model, &caught_up)
            .await
            .unwrap();
        assert_eq!(status.events_behind(), 0);
        assert_eq!(status.view.unwrap().highest_position, Some(last));
    }
}
