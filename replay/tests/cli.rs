//! The `replay` binary as an operator runs it: its exit statuses, its errors for bad input, and a
//! rebuild, swap and verify of the DynamoDB view end to end.

// Unwrapping is how a test says "this must work".
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use common::{write_history, write_orders};
use event_store::{PgEventStore, StoreConfig};
use projectors::projections::ActiveOrdersProjection;
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
    let configured = projectors::projections::ActiveOrdersTables {
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
