//! `replay report` on analytics facts projected by the real `AnalyticsProjection` into a real
//! PostgreSQL (the Redshift stand-in): each grouping, each format, the store filter, an as-of
//! schema, and bad arguments refused.

// Unwrapping is how a test says "this must work".
#![allow(clippy::unwrap_used)]

use commit_log::projection::Projection;
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::loyalty::{LoyaltyEvent, Tier};
use domain::order::{OrderEvent, PricedLine};
use domain::values::{
    CustomerId, ExternalRef, ItemName, Money, Note, OrderId, Points, Quantity, Reason, Sku, StoreId,
};
use read_models::{AnalyticsProjection, SchemaName};
use replay::report::{render, sales_report, Format, GroupBy, ReportRequest, ReportRow};
use test_support::{fresh_database, TestDatabase};
use time::macros::{date, datetime};
use time::{Duration, OffsetDateTime};

/// Positions handed out in commit order, as the store does.
struct Log {
    position: u64,
    commits: Vec<LoggedCommit>,
}

impl Log {
    fn commit(
        &mut self,
        kind: &str,
        id: &str,
        first: u64,
        at: OffsetDateTime,
        events: Vec<DomainEvent>,
    ) {
        let events = events
            .into_iter()
            .enumerate()
            .map(|(index, event)| {
                self.position += 1;
                LoggedEvent {
                    sequence: first + index as u64,
                    position: self.position,
                    recorded_at: at,
                    event,
                }
            })
            .collect();
        self.commits.push(LoggedCommit {
            aggregate_type: kind.into(),
            aggregate_id: id.into(),
            committed_at: at,
            correlation_id: String::new(),
            causation_id: String::new(),
            actor: String::new(),
            traceparent: String::new(),
            events,
        });
    }
}

fn line(sku: &str, name: &str, quantity: u32, cents: i64) -> PricedLine {
    PricedLine {
        sku: Sku::parse(sku).unwrap(),
        name: ItemName::parse(name).unwrap(),
        quantity: Quantity::new(quantity).unwrap(),
        customisations: vec![],
        unit_price: Money::from_cents(cents),
        line_total: Money::from_cents(cents * i64::from(quantity)),
    }
}

enum Fate {
    /// Prepared for this many seconds, then completed.
    Completed(i64),
    Open,
    Cancelled,
}

/// One order's life as commits: placed at `at`, then its fate; earning `tier`'s points.
fn order(
    log: &mut Log,
    store: &str,
    customer: &str,
    at: OffsetDateTime,
    lines: Vec<PricedLine>,
    fate: Fate,
    earned_at_tier: Option<(Tier, u64)>,
) {
    let order_id = OrderId::from(uuid::Uuid::new_v4());
    let id = order_id.to_string();
    let total = Money::from_cents(lines.iter().map(|l| l.line_total.cents()).sum());
    log.commit(
        "order",
        &id,
        1,
        at,
        vec![DomainEvent::Order(OrderEvent::OrderPlaced {
            order_id,
            store_id: StoreId::parse(store).unwrap(),
            customer_id: CustomerId::parse(customer).unwrap(),
            lines,
            note: Note::parse("").unwrap(),
            total,
            payment_token: None,
        })],
    );
    let minute = Duration::minutes(1);
    match fate {
        Fate::Open => {}
        Fate::Cancelled => log.commit(
            "order",
            &id,
            2,
            at + minute,
            vec![DomainEvent::Order(OrderEvent::OrderCancelled {
                reason: Reason::parse("changed my mind").unwrap(),
                refund_due: false,
                stock_reserved: false,
            })],
        ),
        Fate::Completed(prep_seconds) => {
            let events = [
                (at + minute, OrderEvent::OrderAccepted {}),
                (
                    at + minute,
                    OrderEvent::PaymentCaptured {
                        payment_id: ExternalRef::parse("pay-1").unwrap(),
                        amount: total,
                    },
                ),
                (at + 2 * minute, OrderEvent::PreparationStarted {}),
                (
                    at + 2 * minute + Duration::seconds(prep_seconds),
                    OrderEvent::OrderMarkedReady {},
                ),
                (at + 10 * minute, OrderEvent::OrderCompleted {}),
            ];
            for (index, (when, event)) in events.into_iter().enumerate() {
                log.commit(
                    "order",
                    &id,
                    2 + index as u64,
                    when,
                    vec![DomainEvent::Order(event)],
                );
            }
            if let Some((tier, points)) = earned_at_tier {
                log.commit(
                    "loyalty",
                    customer,
                    1,
                    at + 10 * minute,
                    vec![DomainEvent::Loyalty(LoyaltyEvent::PointsEarned {
                        customer_id: CustomerId::parse(customer).unwrap(),
                        order_id,
                        amount: total,
                        tier,
                        points: Points(points),
                    })],
                );
            }
        }
    }
}

/// 2026-03-02: s1 sells two orders in the 08 hour (prepared in 180 s and 60 s, earning at
/// bronze and silver), s2 one open order at 09 and one cancelled; 2026-03-03: one more at s1.
async fn projected_sales() -> (TestDatabase, SchemaName) {
    let database = fresh_database().await;
    let schema = SchemaName::parse("analytics").unwrap();
    AnalyticsProjection::create_schema(&database.pool, &schema)
        .await
        .unwrap();
    let mut log = Log {
        position: 0,
        commits: vec![],
    };
    let latte = |n| line("LATTE-12", "Latte 12oz", n, 450);
    let croissant = |n| line("CROISSANT", "Butter croissant", n, 325);
    order(
        &mut log,
        "s1",
        "c1",
        datetime!(2026-03-02 08:10 UTC),
        vec![latte(2)],
        Fate::Completed(180),
        Some((Tier::Bronze, 90)),
    );
    order(
        &mut log,
        "s1",
        "c2",
        datetime!(2026-03-02 08:40 UTC),
        vec![latte(1), croissant(1)],
        Fate::Completed(60),
        Some((Tier::Silver, 96)),
    );
    order(
        &mut log,
        "s2",
        "c3",
        datetime!(2026-03-02 09:05 UTC),
        vec![croissant(1)],
        Fate::Open,
        None,
    );
    order(
        &mut log,
        "s2",
        "c4",
        datetime!(2026-03-02 09:30 UTC),
        vec![latte(1)],
        Fate::Cancelled,
        None,
    );
    order(
        &mut log,
        "s1",
        "c5",
        datetime!(2026-03-03 10:00 UTC),
        vec![latte(1)],
        Fate::Open,
        None,
    );
    let projection = AnalyticsProjection::new(database.pool.clone(), schema.clone());
    for batch in log.commits.chunks(4) {
        projection.apply(batch).await.unwrap();
    }
    (database, schema)
}

/// (key, orders, units, sales, average ticket, average prep tenths)
type Figures = (String, i64, i64, i64, Option<i64>, Option<i64>);

fn figures(rows: &[ReportRow]) -> Vec<Figures> {
    rows.iter()
        .map(|r| {
            (
                r.key.clone(),
                r.orders,
                r.units,
                r.sales_cents,
                r.average_ticket_cents(),
                r.average_prep_tenths(),
            )
        })
        .collect()
}

fn row(key: &str, orders: i64, units: i64, sales: i64, ticket: i64, prep: Option<i64>) -> Figures {
    (key.into(), orders, units, sales, Some(ticket), prep)
}

#[tokio::test]
async fn each_grouping_sums_the_projected_orders_of_the_range() {
    let (database, schema) = projected_sales().await;
    let day = date!(2026 - 03 - 02);
    let report = |by, store: Option<&str>, to| {
        let request = ReportRequest::new(day, to, by, store.map(str::to_owned)).unwrap();
        let pool = database.pool.clone();
        let schema = schema.clone();
        async move { sales_report(&pool, &schema, &request).await.unwrap() }
    };

    let by_store = report(GroupBy::Store, None, day).await;
    assert_eq!(
        figures(&by_store.rows),
        [
            row("s1", 2, 4, 1675, 838, Some(1200)),
            row("s2", 1, 1, 325, 325, None)
        ],
        "the cancelled order and the next day's are left out"
    );
    let by_item = report(GroupBy::Item, None, day).await;
    assert_eq!(
        figures(&by_item.rows),
        [
            row("LATTE-12", 2, 3, 1350, 675, Some(1200)),
            row("CROISSANT", 2, 2, 650, 325, Some(600)),
        ]
    );
    assert_eq!(by_item.rows[0].name, "");
    let by_hour = report(GroupBy::Hour, None, day).await;
    assert_eq!(
        figures(&by_hour.rows),
        [
            row("08", 2, 4, 1675, 838, Some(1200)),
            row("09", 1, 1, 325, 325, None)
        ]
    );
    let by_tier = report(GroupBy::Tier, None, day).await;
    assert_eq!(
        figures(&by_tier.rows),
        [
            row("bronze", 1, 2, 900, 900, Some(1800)),
            row("silver", 1, 2, 775, 775, Some(600)),
            row("none", 1, 1, 325, 325, None),
        ]
    );
    let one_store = report(GroupBy::Item, Some("s2"), day).await;
    assert_eq!(
        figures(&one_store.rows),
        [row("CROISSANT", 1, 1, 325, 325, None)]
    );
    let two_days = report(GroupBy::Store, None, day + Duration::DAY).await;
    assert_eq!(
        figures(&two_days.rows),
        [
            row("s1", 3, 5, 2125, 708, Some(1200)),
            row("s2", 1, 1, 325, 325, None)
        ]
    );
    let nothing = report(GroupBy::Store, Some("s9"), day).await;
    assert!(nothing.rows.is_empty());
    assert!(render(&nothing, Format::Table).contains("(no orders in this range)"));
}

#[tokio::test]
async fn table_csv_and_json_print_the_same_figures() {
    let (database, schema) = projected_sales().await;
    let day = date!(2026 - 03 - 02);
    let request = ReportRequest::new(day, day, GroupBy::Store, None).unwrap();
    let report = sales_report(&database.pool, &schema, &request)
        .await
        .unwrap();

    assert_eq!(
        render(&report, Format::Csv),
        "store,name,orders,units,sales_cents,avg_ticket_cents,avg_prep_seconds\n\
         s1,,2,4,1675,838,120.0\n\
         s2,,1,1,325,325,\n"
    );
    let json: serde_json::Value = serde_json::from_str(&render(&report, Format::Json)).unwrap();
    assert_eq!(json["by"], "store");
    assert_eq!(json["from"], "2026-03-02");
    assert_eq!(json["rows"][0]["key"], "s1");
    assert_eq!(json["rows"][0]["sales_cents"], 1675);
    assert_eq!(json["rows"][0]["avg_ticket_cents"], 838);
    assert_eq!(json["rows"][0]["avg_prep_seconds"], 120.0);
    assert_eq!(json["rows"][1]["avg_prep_seconds"], serde_json::Value::Null);
    let table = render(&report, Format::Table);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("Sales by store from 2026-03-02 to 2026-03-02"),
        "{table}"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["store", "orders", "units", "sales", "avg", "ticket", "avg", "prep", "(s)"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["s1", "2", "4", "$16.75", "$8.38", "120.0"]
    );
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["s2", "1", "1", "$3.25", "$3.25", "-"]
    );
}

fn replay(database: &TestDatabase, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .env("ORDERPIPE_ANALYTICS__DATABASE__URL", &database.url)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_cli_writes_a_report_to_a_file_and_refuses_bad_arguments() {
    let (database, _) = projected_sales().await;
    let output = std::env::temp_dir().join(format!("report-{}.csv", uuid::Uuid::new_v4()));
    let path = output.to_str().unwrap();
    let ran = replay(
        &database,
        &[
            "report",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-02",
            "--by",
            "hour",
            "--format",
            "csv",
            "--output",
            path,
        ],
    );
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(ran.stdout.is_empty(), "the report went to the file");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "hour,name,orders,units,sales_cents,avg_ticket_cents,avg_prep_seconds\n\
         08,,2,4,1675,838,120.0\n\
         09,,1,1,325,325,\n"
    );
    std::fs::remove_file(&output).unwrap();
    let ran = replay(
        &database,
        &[
            "report",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-02",
            "--by",
            "tier",
        ],
    );
    assert!(ran.status.success());
    let table = String::from_utf8(ran.stdout).unwrap();
    assert!(
        table.contains("bronze") && table.contains("$9.00"),
        "{table}"
    );

    for (args, says) in [
        (
            vec!["--from", "2026-02-30", "--to", "2026-03-02", "--by", "item"],
            "is not a date",
        ),
        (
            vec!["--from", "03/02/2026", "--to", "2026-03-02", "--by", "item"],
            "is not a date",
        ),
        (
            vec!["--from", "2026-03-05", "--to", "2026-03-02", "--by", "item"],
            "is before --from",
        ),
        (
            vec!["--from", "2024-01-01", "--to", "2026-03-02", "--by", "item"],
            "more than 366 days",
        ),
        (
            vec![
                "--from",
                "2026-03-02",
                "--to",
                "2026-03-02",
                "--by",
                "weekday",
            ],
            "use item, hour, store or tier",
        ),
        (
            vec![
                "--from",
                "2026-03-02",
                "--to",
                "2026-03-02",
                "--by",
                "item",
                "--format",
                "xml",
            ],
            "use table, csv or json",
        ),
        (
            vec![
                "--from",
                "2026-03-02",
                "--to",
                "2026-03-02",
                "--by",
                "item",
                "--store",
                "s1; DROP",
            ],
            "is not a store id",
        ),
        (
            vec![
                "--from",
                "2026-03-02",
                "--to",
                "2026-03-02",
                "--by",
                "item",
                "--schema",
                "nope",
            ],
            "analytics database refused",
        ),
        (vec!["--to", "2026-03-02", "--by", "item"], "--from"),
    ] {
        let ran = replay(&database, &[&["report"], args.as_slice()].concat());
        let stderr = String::from_utf8_lossy(&ran.stderr);
        assert_eq!(ran.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(ran.stdout.is_empty(), "{args:?}");
    }
    let help = replay(&database, &["report", "--help"]);
    let help = String::from_utf8(help.stdout).unwrap();
    for word in [
        "--from",
        "--to",
        "--by",
        "--store",
        "--format",
        "--output",
        "--schema",
        "average ticket",
    ] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
}
