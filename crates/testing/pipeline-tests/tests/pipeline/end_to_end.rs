//! One morning's commands end up, in order, on the log and in every read model.

use aws_sdk_dynamodb::types::AttributeValue;
use read_models::OPEN_BY_STORE_INDEX;
use test_support::replay;

use crate::support::{Pipeline, STORE};
use crate::workload::{open_the_store, run_order, Clients, Fate};

#[tokio::test]
async fn commands_flow_from_grpc_through_kinesis_into_every_read_model() {
    let pipeline = Pipeline::start().await;
    let views = pipeline.views("live").await;
    let worker = pipeline.spawn_worker(&views, "live");
    let mut clients = Clients::new(&pipeline);

    let mut commits = open_the_store(&mut clients, 20).await;
    let mut orders = Vec::new();
    for (customer, fate) in [
        ("c-1", Fate::Completed),
        ("c-2", Fate::Open),
        ("c-3", Fate::Cancelled),
    ] {
        let (order, order_commits) = run_order(&pipeline, &mut clients, customer, fate).await;
        orders.push(order);
        commits += order_commits;
    }
    let [completed, open, cancelled] = [&orders[0], &orders[1], &orders[2]];

    // The log: every commit once, in order per aggregate, each aggregate on one shard.
    pipeline.wait_published().await;
    let seen = replay(&pipeline.stream.read_all().await);
    assert_eq!(seen.commits_applied, commits);
    assert_eq!(
        seen.last_sequence[&("order".to_owned(), completed.clone())],
        6
    );
    pipeline.wait_caught_up(&views).await;

    // DynamoDB: the barista board shows the open order only.
    let board: Vec<String> = pipeline
        .dynamodb
        .query()
        .table_name(&views.tables.orders)
        .index_name(OPEN_BY_STORE_INDEX)
        .key_condition_expression("gsi2pk = :store")
        .expression_attribute_values(":store", AttributeValue::S(format!("STORE#{STORE}")))
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .filter_map(|item| item.get("order_id")?.as_s().ok().cloned())
        .collect();
    assert_eq!(board, vec![open.clone()]);

    // History: every order's status, the completed order's timeline, the loyalty points.
    let pool = &pipeline.views_db.pool;
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "SELECT order_id::text, status FROM history_live.orders ORDER BY customer_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        statuses,
        vec![
            (completed.clone(), "completed".to_owned()),
            (open.clone(), "accepted".to_owned()),
            (cancelled.clone(), "cancelled".to_owned()),
        ]
    );
    let timeline: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM history_live.order_status_changes WHERE order_id = $1::uuid",
    )
    .bind(completed)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        timeline, 6,
        "placed, accepted, paid, preparing, ready, completed"
    );
    let points: Option<i64> = sqlx::query_scalar(
        "SELECT sum(points)::bigint FROM history_live.loyalty_ledger WHERE customer_id = 'c-1'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        points,
        Some(122),
        "10 points per dollar of $12.25 at Bronze"
    );

    // Analytics: one fact per order and per order line.
    let facts: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT order_id, status, total_cents FROM analytics_live.fact_orders ORDER BY customer_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        facts,
        vec![
            (completed.clone(), "completed".to_owned(), 1225),
            (open.clone(), "accepted".to_owned(), 1225),
            (cancelled.clone(), "cancelled".to_owned(), 1225),
        ]
    );
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics_live.fact_order_items")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(items, 6);

    pipeline.stop().await;
    worker.await.unwrap();
}
