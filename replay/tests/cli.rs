//! The `replay` binary as an operator runs it: its exit statuses, its errors for bad input, and a
//! rebuild, swap and verify of the DynamoDB view end to end.

// Unwrapping is how a test says "this must work".
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use commit_log::projection::Projection;
use common::{write_history, write_orders};
use event_store::{PgEventStore, StoreConfig};
use read_models::ActiveOrdersProjection;
use replay::dynamodb::target_tables;
use test_support::{aws_test_config, fresh_database, unique_name};

/// A store with history, an empty history database, and fresh DynamoDB table names.
struct Operator {
    env: Vec<(&'static str, String)>,
    store: PgEventStore,
}

impl Operator {
    async fn new() -> Self {
        let events = fresh_database().await;
        let views = fresh_database().await;
        let store = PgEventStore::open(events.pool.clone(), StoreConfig::default())
            .await
            .unwrap();
        write_orders(&store).await;
        write_history(&store).await;
        let env = vec![
            ("ORDERPIPE_DATABASE__URL", events.url.clone()),
            ("ORDERPIPE_HISTORY__DATABASE__URL", views.url.clone()),
            ("ORDERPIPE_ANALYTICS__DATABASE__URL", views.url.clone()),
            (
                "ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE",
                unique_name("cli-orders"),
            ),
            (
                "ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE",
                unique_name("cli-stores"),
            ),
            ("ORDERPIPE_DYNAMODB__VIEWS_TABLE", unique_name("cli-views")),
            ("ORDERPIPE_REPLAY__BATCH_COMMITS", "4".to_owned()),
        ];
        Self { env, store }
    }

    fn var(&self, name: &str) -> &str {
        &self.env.iter().find(|(k, _)| *k == name).unwrap().1
    }

    /// Runs the binary (blocking this test's thread: the child needs nothing from it).
    async fn replay(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_replay"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_exit_status_2() {
    let operator = Operator::new().await;
    let last = operator.store.last_position().await.unwrap();
    let beyond = (last + 10).to_string();
    let cases: [(&[&str], &str); 9] = [
        (
            &["rebuild", "orders", "--target", "x_1"],
            "unknown projection \"orders\"",
        ),
        (
            &["rebuild", "history", "--target", "Not-A-Schema"],
            "--target is not a valid schema name",
        ),
        (
            &[
                "rebuild", "history", "--target", "h_asof", "--until", &beyond,
            ],
            "past the end of the log",
        ),
        (
            &[
                "rebuild",
                "history",
                "--target",
                "h_asof",
                "--until",
                "yesterday",
            ],
            "--until takes a global position",
        ),
        (
            &[
                "rebuild",
                "history",
                "--target",
                "h_one",
                "--aggregate",
                "customer/c-1",
            ],
            "--aggregate takes TYPE/ID",
        ),
        (
            &[
                "rebuild",
                "active_orders",
                "--swap",
                "--aggregate",
                "order/x",
            ],
            "--aggregate is for history and analytics",
        ),
        (
            &[
                "rebuild",
                "history",
                "--target",
                "h_s",
                "--from-stream",
                "--since",
                "soon",
            ],
            "--since takes an RFC 3339 time",
        ),
        (
            &[
                "rebuild",
                "history",
                "--target",
                "h_s",
                "--from-stream",
                "--until",
                "3",
            ],
            "cannot be used with",
        ),
        (
            // Without a terminal to ask at, --in-place needs --yes; nothing is emptied.
            &["rebuild", "active_orders", "--in-place"],
            "confirm with --yes",
        ),
    ];
    for (args, expected) in cases {
        let output = operator.replay(args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        assert!(
            text(&output).contains(expected),
            "{args:?} said: {}",
            text(&output)
        );
    }
    // An unreachable event store.
    let mut unreachable = Operator::new().await;
    unreachable.env[0].1 = "postgres://postgres@127.0.0.1:1/none".to_owned();
    let output = unreachable.replay(&["list"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("cannot reach the event store"),
        "{}",
        text(&output)
    );
}

#[tokio::test]
async fn an_operator_rebuilds_swaps_and_verifies_the_active_orders_view() {
    let operator = Operator::new().await;
    // The live view exists but is empty, as after a projector bug dropped everything.
    let client = aws_support::dynamodb(&aws_test_config().await);
    let configured = read_models::ActiveOrdersTables {
        orders: operator
            .var("ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE")
            .to_owned(),
        stores: operator
            .var("ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE")
            .to_owned(),
    };
    ActiveOrdersProjection::create_tables(&client, &configured)
        .await
        .unwrap();

    let verify = operator.replay(&["verify", "active_orders"]).await;
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(
        text(&verify).contains("+ only rebuilt:"),
        "{}",
        text(&verify)
    );

    let base = unique_name("cli-rebuild");
    let dry = operator
        .replay(&[
            "rebuild",
            "active_orders",
            "--swap",
            "--target",
            &base,
            "--dry-run",
        ])
        .await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    assert!(text(&dry).contains("nothing changed"), "{}", text(&dry));
    let target = target_tables(&base).unwrap();
    let tables = client.list_tables().send().await.unwrap();
    assert!(
        !tables.table_names().contains(&target.orders),
        "a dry run created a table"
    );

    let swap = operator
        .replay(&["rebuild", "active_orders", "--swap", "--target", &base])
        .await;
    assert_eq!(swap.status.code(), Some(0), "{}", text(&swap));
    assert!(text(&swap).contains("swapped in"), "{}", text(&swap));

    let list = operator.replay(&["list"]).await;
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    assert!(text(&list).contains(&target.orders), "{}", text(&list));

    let verify = operator.replay(&["verify", "active_orders"]).await;
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    assert!(
        text(&verify).contains("2 tables equal"),
        "{}",
        text(&verify)
    );

    let in_place = operator
        .replay(&["rebuild", "active_orders", "--in-place", "--yes"])
        .await;
    assert_eq!(in_place.status.code(), Some(0), "{}", text(&in_place));
    assert!(
        text(&in_place).contains("rebuilt in place"),
        "{}",
        text(&in_place)
    );
    let verify = operator.replay(&["verify", "active_orders"]).await;
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
}

#[tokio::test]
async fn an_operator_rebuilds_one_aggregate_into_the_live_history() {
    let operator = Operator::new().await;
    let built = operator
        .replay(&["rebuild", "history", "--target", "history"])
        .await;
    assert_eq!(built.status.code(), Some(0), "{}", text(&built));
    let order: String = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'order' ORDER BY global_position LIMIT 1",
    )
    .fetch_one(operator.store.pool())
    .await
    .unwrap();
    let aggregate = format!("order/{order}");
    let swapped = operator
        .replay(&["rebuild", "history", "--aggregate", &aggregate, "--swap"])
        .await;
    assert_eq!(swapped.status.code(), Some(0), "{}", text(&swapped));
    assert!(
        text(&swapped).contains("rows replaced in history"),
        "{}",
        text(&swapped)
    );
    let verify = operator.replay(&["verify", "history"]).await;
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
}

#[tokio::test]
async fn the_binary_reads_the_configured_stream_with_from_stream() {
    let mut operator = Operator::new().await;
    let stream = test_support::TestStream::create(2).await;
    operator
        .env
        .push(("ORDERPIPE_KINESIS__STREAM_NAME", stream.name.clone()));
    let output = operator
        .replay(&[
            "rebuild",
            "history",
            "--target",
            "from_empty_stream",
            "--from-stream",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("0 events in 0 commits"),
        "{}",
        text(&output)
    );
}

// ------------------------------------------------------------------ interrupted swaps

impl Operator {
    fn configured(&self) -> read_models::ActiveOrdersTables {
        read_models::ActiveOrdersTables {
            orders: self
                .var("ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE")
                .to_owned(),
            stores: self
                .var("ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE")
                .to_owned(),
        }
    }

    fn alias(&self, client: &aws_sdk_dynamodb::Client) -> read_models::ViewAlias {
        read_models::ViewAlias::new(
            client.clone(),
            self.var("ORDERPIPE_DYNAMODB__VIEWS_TABLE"),
            self.configured(),
        )
    }

    /// The configured (live) tables, built from the store as the live projector would have,
    /// and the views table, as they stand before any swap.
    async fn live_view(&self, client: &aws_sdk_dynamodb::Client) {
        let live = self.configured();
        ActiveOrdersProjection::create_tables(client, &live)
            .await
            .unwrap();
        let commits = common::logged_commits(&self.store).await;
        ActiveOrdersProjection::new(client.clone(), live)
            .apply(&commits)
            .await
            .unwrap();
        read_models::ViewAlias::create_table(client, self.var("ORDERPIPE_DYNAMODB__VIEWS_TABLE"))
            .await
            .unwrap();
    }

    /// What `replay rebuild active_orders --swap` (no --target) leaves when it is interrupted
    /// during its rebuild, after `batches` batches: the tables of a timestamped target, its
    /// progress item marked as a swap of the live tables. Written item by item as the tool
    /// writes them, so this state is the same for any build of it.
    async fn interrupted_swap_rebuild(
        &self,
        client: &aws_sdk_dynamodb::Client,
        batches: usize,
    ) -> read_models::ActiveOrdersTables {
        use aws_sdk_dynamodb::types::AttributeValue;
        let base = format!(
            "{}-rebuild-{}",
            self.var("ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE"),
            time::OffsetDateTime::now_utc().unix_timestamp() - 3600
        );
        let target = target_tables(&base).unwrap();
        ActiveOrdersProjection::create_tables(client, &target)
            .await
            .unwrap();
        let progress = replay::dynamodb::TablesProgress::new(
            client.clone(),
            self.var("ORDERPIPE_DYNAMODB__VIEWS_TABLE"),
            target.clone(),
        );
        progress.start().await.unwrap();
        client
            .update_item()
            .table_name(self.var("ORDERPIPE_DYNAMODB__VIEWS_TABLE"))
            .key(
                "name",
                AttributeValue::S(format!("rebuild#{}", target.orders)),
            )
            .update_expression("SET swap_of = :live")
            .expression_attribute_values(":live", AttributeValue::S(self.configured().orders))
            .send()
            .await
            .unwrap();
        let projection = common::FailAfter::new(
            Box::new(ActiveOrdersProjection::new(client.clone(), target.clone())),
            batches,
        );
        let options = replay::RebuildOptions {
            until: None,
            batch_commits: 4,
        };
        let interrupted =
            replay::rebuild(&self.store, &projection, &progress, &options, |_| {}).await;
        assert!(interrupted.is_err(), "the rebuild was not interrupted");
        target
    }

    /// What a swap interrupted after moving the alias leaves: the rebuilt tables complete up
    /// to the move, the alias on them in handover.
    async fn interrupted_handover(
        &self,
        client: &aws_sdk_dynamodb::Client,
    ) -> read_models::ActiveOrdersTables {
        let target = target_tables(&unique_name("cli-handover")).unwrap();
        ActiveOrdersProjection::create_tables(client, &target)
            .await
            .unwrap();
        let progress = replay::dynamodb::TablesProgress::new(
            client.clone(),
            self.var("ORDERPIPE_DYNAMODB__VIEWS_TABLE"),
            target.clone(),
        );
        progress.start().await.unwrap();
        let projection = ActiveOrdersProjection::new(client.clone(), target.clone());
        let options = replay::RebuildOptions {
            until: None,
            batch_commits: 4,
        };
        replay::rebuild(&self.store, &projection, &progress, &options, |_| {})
            .await
            .unwrap();
        self.alias(client)
            .begin_handover(&self.configured(), &target)
            .await
            .unwrap();
        target
    }
}

/// The tables whose name starts with `prefix`.
async fn tables_named(client: &aws_sdk_dynamodb::Client, prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut pages = client.list_tables().into_paginator().items().send();
    while let Some(name) = pages.next().await {
        let name = name.unwrap();
        if name.starts_with(prefix) {
            names.push(name);
        }
    }
    names
}

#[tokio::test]
async fn a_swap_interrupted_during_its_rebuild_resumes_without_target() {
    let operator = Operator::new().await;
    let client = aws_support::dynamodb(&aws_test_config().await);
    operator.live_view(&client).await;
    let target = operator.interrupted_swap_rebuild(&client, 2).await;

    // The operator runs the same command again.
    let again = operator
        .replay(&["rebuild", "active_orders", "--swap"])
        .await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("swapped in"), "{}", text(&again));

    let live = operator.alias(&client).live().await.unwrap();
    assert_eq!(live.tables, target, "another rebuild was swapped in");
    assert!(!live.handover);
    let rebuilds = tables_named(
        &client,
        &format!(
            "{}-rebuild-",
            operator.var("ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE")
        ),
    )
    .await;
    assert_eq!(
        rebuilds,
        vec![target.orders.clone(), target.stores.clone()],
        "a second set of tables was built"
    );
    let verify = operator.replay(&["verify", "active_orders"]).await;
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
}

#[tokio::test]
async fn a_swap_interrupted_in_handover_is_finished_by_running_it_again() {
    let operator = Operator::new().await;
    let client = aws_support::dynamodb(&aws_test_config().await);
    operator.live_view(&client).await;
    let target = operator.interrupted_handover(&client).await;

    let again = operator
        .replay(&["rebuild", "active_orders", "--swap"])
        .await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("swapped in"), "{}", text(&again));
    let live = operator.alias(&client).live().await.unwrap();
    assert_eq!(live.tables, target);
    assert!(!live.handover, "the alias is still in handover");
    let rebuilds = tables_named(
        &client,
        &format!(
            "{}-rebuild-",
            operator.var("ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE")
        ),
    )
    .await;
    assert!(rebuilds.is_empty(), "new tables were built: {rebuilds:?}");
    let verify = operator.replay(&["verify", "active_orders"]).await;
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
}

#[tokio::test]
async fn a_stuck_handover_is_finished_or_rolled_back_by_replay_handover() {
    let operator = Operator::new().await;
    let client = aws_support::dynamodb(&aws_test_config().await);
    operator.live_view(&client).await;

    // Nothing to end: a clear refusal, nothing changed.
    let nothing = operator.replay(&["handover", "--finish"]).await;
    assert_eq!(nothing.status.code(), Some(2), "{}", text(&nothing));
    assert!(
        text(&nothing).contains("no swap is in handover"),
        "{}",
        text(&nothing)
    );
    let neither = operator.replay(&["handover"]).await;
    assert_eq!(neither.status.code(), Some(2), "{}", text(&neither));

    let abandoned = operator.interrupted_handover(&client).await;
    // During the handover the live projector wrote new orders to the new tables only.
    let before = common::logged_commits(&operator.store).await.len();
    common::write_orders(&operator.store).await;
    let commits = common::logged_commits(&operator.store).await;
    ActiveOrdersProjection::following(operator.alias(&client))
        .apply(&commits[before..])
        .await
        .unwrap();

    let abort = operator.replay(&["handover", "--abort"]).await;
    assert_eq!(abort.status.code(), Some(0), "{}", text(&abort));
    assert!(text(&abort).contains("rolled back"), "{}", text(&abort));
    let live = operator.alias(&client).live().await.unwrap();
    assert_eq!(live.tables, operator.configured());
    assert!(!live.handover, "{live:?}");
    assert_eq!(live.previous, Some(abandoned.clone()));
    // The old tables got what the projector wrote to the abandoned ones meanwhile.
    let verify = operator.replay(&["verify", "active_orders"]).await;
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));

    // And a handover finished by `--finish`: the same stuck state again.
    let target = operator.interrupted_handover(&client).await;
    let finish = operator.replay(&["handover", "--finish"]).await;
    assert_eq!(finish.status.code(), Some(0), "{}", text(&finish));
    let live = operator.alias(&client).live().await.unwrap();
    assert_eq!(live.tables, target);
    assert!(!live.handover);
    let verify = operator.replay(&["verify", "active_orders"]).await;
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
}

#[tokio::test]
async fn verify_in_production_skips_ended_orders_that_ttl_deleted_and_says_so() {
    let operator = Operator::new().await;
    // The orders ended ten days ago: their tombstones are past their TTL (seven days).
    sqlx::query("UPDATE events SET recorded_at = recorded_at - interval '10 days'")
        .execute(operator.store.pool())
        .await
        .unwrap();
    let client = aws_support::dynamodb(&aws_test_config().await);
    operator.live_view(&client).await;
    // DynamoDB's TTL has deleted them from the live table.
    let live = operator.configured();
    let tombstones: Vec<_> = client
        .scan()
        .table_name(&live.orders)
        .filter_expression("attribute_exists(expires_at)")
        .send()
        .await
        .unwrap()
        .items()
        .to_vec();
    assert_eq!(tombstones.len(), 4, "completed twice, cancelled, rejected");
    for tombstone in &tombstones {
        client
            .delete_item()
            .table_name(&live.orders)
            .key("pk", tombstone["pk"].clone())
            .key("sk", tombstone["sk"].clone())
            .send()
            .await
            .unwrap();
    }

    let verify = operator.replay(&["verify", "active_orders"]).await;
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    assert!(
        text(&verify).contains("skipped 4 item(s): ended orders past their TTL"),
        "{}",
        text(&verify)
    );
}
