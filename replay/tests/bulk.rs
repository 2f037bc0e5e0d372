//! Rebuilds into fresh schemas written as bulk loads (`COPY`, several writers), compared with
//! the views built live from the same store.

// Unwrapping is how a test says "this must work".
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use commit_log::LoggedCommit;
use common::{fresh_store, write_history, write_orders, Setup};
use cqrs_es::CqrsFramework;
use domain::order::{FixedMenu, Order, OrderCommand, OrderLineRequest, OrderServices};
use domain::values::{
    Actor, CustomerId, ExternalRef, Money, Note, OrderId, Quantity, Reason, Sku, StoreId,
};
use event_store::{AggregateStore, PgEventStore};
use read_models::SchemaName;
use replay::{
    load_rows, rebuild, rebuild_bulk, verify, BulkOptions, ProgressStore, ProgressTable, ReadModel,
    RebuildOptions, Until,
};
use sqlx::PgPool;
use test_support::unique_name;

const MODELS: [ReadModel; 2] = [ReadModel::History, ReadModel::Analytics];

fn new_schema(prefix: &str) -> SchemaName {
    SchemaName::parse(&unique_name(prefix).replace('-', "_").to_lowercase()).unwrap()
}

/// `model` built by applying `commits` one at a time, as the live projector may.
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

/// `writers` writers; each writes its ended orders after every commit, so a commit of an order
/// after the one that ended it finds the order's rows written, as it does in a long history.
fn bulk(until: Option<Until>, writers: usize) -> BulkOptions {
    BulkOptions {
        until,
        writers,
        batch_commits: 1,
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

/// An order cancelled after its payment was captured, then refunded: a commit after the one
/// that ended it, which a bulk writer has written already.
async fn write_refunded_order(store: &PgEventStore) {
    let services = OrderServices::new(Arc::new(FixedMenu::sample()));
    let orders: CqrsFramework<Order, AggregateStore<Order>> =
        CqrsFramework::new(store.aggregate_store(vec![]), vec![], services);
    let order_id = OrderId::from(uuid::Uuid::new_v4());
    let id = order_id.to_string();
    let store_id = StoreId::parse(&unique_name("store")).unwrap();
    let customer = CustomerId::parse("c-refunded").unwrap();
    for command in [
        OrderCommand::PlaceOrder {
            order_id,
            store_id: store_id.clone(),
            customer_id: customer.clone(),
            lines: vec![OrderLineRequest {
                sku: Sku::parse("LATTE-12").unwrap(),
                quantity: Quantity::new(2).unwrap(),
                customisations: vec![],
            }],
            note: Note::parse("tab\tand \\ backslash").unwrap(),
            payment_token: None,
            actor: Actor::Customer(customer),
        },
        OrderCommand::AcceptOrder {
            actor: Actor::Service,
        },
        OrderCommand::RecordPaymentCaptured {
            payment_id: ExternalRef::parse("pay-refunded").unwrap(),
            amount: Money::from_cents(900),
            actor: Actor::Service,
        },
        OrderCommand::CancelOrder {
            reason: Reason::parse("spilled").unwrap(),
            actor: Actor::StoreStaff(store_id.clone()),
        },
        OrderCommand::RecordPaymentRefunded {
            refund_id: ExternalRef::parse("refund-1").unwrap(),
            amount: Money::from_cents(900),
            actor: Actor::Service,
        },
    ] {
        orders.execute(&id, command).await.unwrap();
    }
}

async fn setup() -> Setup {
    let store = fresh_store().await;
    write_history(&store).await;
    write_orders(&store).await;
    write_refunded_order(&store).await;
    Setup::of(store).await
}

async fn progress_of(pool: &PgPool, schema: &SchemaName, model: ReadModel) -> Option<i64> {
    ProgressTable::new(pool.clone(), schema.clone())
        .load(model.name())
        .await
        .unwrap()
}

/// Runs `statement` on the store's database (a test spoiling or mending its events).
async fn change_store(s: &Setup, statement: &str) {
    sqlx::query(statement)
        .execute(s.store.pool())
        .await
        .unwrap();
}

async fn holds_table(pool: &PgPool, schema: &SchemaName, table: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name = $2)",
    )
    .bind(schema.as_str())
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_bulk_rebuild_equals_the_view_built_live() {
    let s = setup().await;
    let last = s.store.last_position().await.unwrap();
    for model in MODELS {
        let live = build_live(&s.views, model, &s.commits).await;
        for writers in [1, 3] {
            let target = new_schema("bulk");
            let done = rebuild_bulk(
                &s.store,
                &s.views,
                model,
                &target,
                &bulk(None, writers),
                |_| {},
            )
            .await
            .unwrap();
            assert_eq!(done.progress.applied_through, last);
            assert_eq!(done.progress.events, last as u64);
            assert!(!done.restarted);
            // The refund came after the order's rows were written: the live path applied it.
            assert_eq!(done.deferred_orders, 1, "{model:?}");
            assert_eq!(progress_of(&s.views, &target, model).await, Some(last));
            assert!(!holds_table(&s.views, &target, "replay_bulk_load").await);
            assert_same(&s.views, &live, &target).await;
        }
    }
    // The indexes and foreign keys set aside during the load are back.
    let target = new_schema("bulk");
    rebuild_bulk(
        &s.store,
        &s.views,
        ReadModel::History,
        &target,
        &bulk(None, 2),
        |_| {},
    )
    .await
    .unwrap();
    let (indexes, keys): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_indexes WHERE schemaname = $1 \
                   AND indexname IN ('orders_by_customer_newest', 'orders_by_store_newest', \
                   'orders_ready_by_store', 'loyalty_ledger_by_order', \
                   'stock_movements_by_store_and_time', 'stock_movements_by_store_sku')), \
                (SELECT count(*) FROM pg_constraint WHERE contype = 'f' \
                   AND connamespace = $1::regnamespace)",
    )
    .bind(target.as_str())
    .fetch_one(&s.views)
    .await
    .unwrap();
    assert_eq!((indexes, keys), (6, 2));
}

#[tokio::test]
async fn an_as_of_bulk_rebuild_equals_the_view_of_the_commits_up_to_the_bound() {
    let s = setup().await;
    let bound = s.commits[s.commits.len() / 2].last_position() as i64;
    let before: Vec<LoggedCommit> = s
        .commits
        .iter()
        .filter(|c| c.last_position() as i64 <= bound)
        .cloned()
        .collect();
    for model in MODELS {
        let live = build_live(&s.views, model, &before).await;
        let target = new_schema("bulk_asof");
        let done = rebuild_bulk(
            &s.store,
            &s.views,
            model,
            &target,
            &bulk(Some(Until::Position(bound)), 2),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(done.progress.applied_through, bound);
        assert_same(&s.views, &live, &target).await;
    }
}

#[tokio::test]
async fn a_bulk_rebuild_interrupted_before_its_final_step_never_looks_complete_and_is_started_over()
{
    let s = setup().await;
    let last = s.store.last_position().await.unwrap();
    for model in MODELS {
        let live = build_live(&s.views, model, &s.commits).await;
        let target = new_schema("bulk_cut");
        // Every row and marker written, then the process stops: no final step.
        let loaded = load_rows(&s.store, &s.views, model, &target, &bulk(None, 2), |_| {})
            .await
            .unwrap();
        drop(loaded);
        assert_eq!(progress_of(&s.views, &target, model).await, None);
        assert!(holds_table(&s.views, &target, "replay_bulk_load").await);
        let done = rebuild_bulk(&s.store, &s.views, model, &target, &bulk(None, 2), |_| {})
            .await
            .unwrap();
        assert!(done.restarted);
        assert_eq!(progress_of(&s.views, &target, model).await, Some(last));
        assert_same(&s.views, &live, &target).await;
    }
}

/// Runs the live path (one commit per batch, so its error names the commit) and the bulk path
/// on the store as it is; both must fail. Their messages, and the bulk path's target.
async fn refusals(s: &Setup, model: ReadModel) -> (String, String, SchemaName) {
    let schema = new_schema("live_refuses");
    model.create_schema(&s.views, &schema).await.unwrap();
    let progress = ProgressTable::new(s.views.clone(), schema.clone());
    progress.create().await.unwrap();
    let projection = model.projection(s.views.clone(), schema.clone());
    let options = RebuildOptions {
        until: None,
        batch_commits: 1,
    };
    let live = rebuild(&s.store, projection.as_ref(), &progress, &options, |_| {})
        .await
        .unwrap_err()
        .to_string();
    let target = new_schema("bulk_refuses");
    let bulk = rebuild_bulk(&s.store, &s.views, model, &target, &bulk(None, 3), |_| {})
        .await
        .unwrap_err()
        .to_string();
    (live, bulk, target)
}

/// Both paths refuse the store as it is, with the same message, the bulk path's target left
/// unfinished. The message, and that target.
async fn both_refuse(s: &Setup, model: ReadModel) -> (String, SchemaName) {
    let (live, bulk, target) = refusals(s, model).await;
    assert_eq!(bulk, live, "{model:?}");
    assert_eq!(progress_of(&s.views, &target, model).await, None);
    assert!(holds_table(&s.views, &target, "replay_bulk_load").await);
    (live, target)
}

#[tokio::test]
async fn a_commit_the_live_path_refuses_is_refused_the_same_way_and_a_rerun_starts_over() {
    let s = setup().await;
    // A gap: an inventory's last commit moved past sequences never written.
    change_store(
        &s,
        "UPDATE events SET sequence = sequence + 100 WHERE global_position = (\
           SELECT max(global_position) FROM events WHERE aggregate_type = 'inventory')",
    )
    .await;
    let mut stopped = Vec::new();
    for model in MODELS {
        let (refusal, target) = both_refuse(&s, model).await;
        assert!(refusal.contains("gap: inventory"), "{refusal}");
        stopped.push((model, target));
    }
    // The store mended, a bulk load stopped halfway through its rows is started over.
    change_store(
        &s,
        "UPDATE events SET sequence = sequence - 100 WHERE sequence > 100",
    )
    .await;
    for (model, target) in stopped {
        let done = rebuild_bulk(&s.store, &s.views, model, &target, &bulk(None, 3), |_| {})
            .await
            .unwrap();
        assert!(done.restarted);
        let live = build_live(&s.views, model, &s.commits).await;
        assert_same(&s.views, &live, &target).await;
    }
    // An event type this build does not know.
    change_store(
        &s,
        "UPDATE events SET payload = '{\"OrderTeleported\": {}}' WHERE global_position = (\
           SELECT max(global_position) FROM events WHERE aggregate_type = 'order')",
    )
    .await;
    for model in MODELS {
        let (refusal, _) = both_refuse(&s, model).await;
        assert!(refusal.contains("does not decode"), "{refusal}");
    }
}

/// Every index (primary keys included) and constraint of `schema`, its name out of the
/// definitions.
async fn indexes_and_constraints(pool: &PgPool, schema: &SchemaName) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT replace(pg_get_indexdef(indexrelid), $1 || '.', '') FROM pg_index \
           WHERE indexrelid::regclass::text LIKE $1 || '.%' \
         UNION ALL \
         SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) \
           FROM pg_constraint WHERE connamespace = $1::regnamespace \
         ORDER BY 1",
    )
    .bind(schema.as_str())
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|definition: String| definition.replace(&format!("{schema}."), ""))
    .collect()
}

#[tokio::test]
async fn a_bulk_rebuild_ends_with_every_key_index_and_constraint_of_a_fresh_schema() {
    let s = setup().await;
    for model in MODELS {
        let fresh = new_schema("fresh");
        model.create_schema(&s.views, &fresh).await.unwrap();
        ProgressTable::new(s.views.clone(), fresh.clone())
            .create()
            .await
            .unwrap();
        let target = new_schema("bulk_keys");
        rebuild_bulk(&s.store, &s.views, model, &target, &bulk(None, 2), |_| {})
            .await
            .unwrap();
        let expected = indexes_and_constraints(&s.views, &fresh).await;
        assert!(
            expected.iter().any(|d| d.contains("PRIMARY KEY")),
            "{expected:#?}"
        );
        assert_eq!(
            indexes_and_constraints(&s.views, &target).await,
            expected,
            "{model:?}"
        );
    }
}

/// History's order ids are `uuid` columns: the bulk load sends them as their 16 bytes, and an
/// id that is not a uuid (for PostgreSQL) stops it as it stops the live path, named, with the
/// target left unfinished.
#[tokio::test]
async fn an_order_id_that_is_not_a_uuid_is_refused_by_both_paths_and_named() {
    let s = setup().await;
    change_store(
        &s,
        "UPDATE events SET aggregate_id = 'not-a-uuid' WHERE aggregate_id = (\
           SELECT min(aggregate_id) FROM events WHERE aggregate_type = 'order')",
    )
    .await;
    let (live, bulk, target) = refusals(&s, ReadModel::History).await;
    let named = "invalid input syntax for type uuid: \"not-a-uuid\"";
    assert!(live.contains(named), "{live}");
    assert!(bulk.contains(named), "{bulk}");
    assert!(holds_table(&s.views, &target, "replay_bulk_load").await);
}
