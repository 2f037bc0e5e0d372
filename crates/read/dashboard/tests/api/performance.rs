//! `/api/stores/{store}/metrics`' barista and store performance, computed from known times:
//! orders written into the history through its projection, with the actors the log carries.

use auth_tokens::Role;
use commit_log::projection::Projection;
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::{CustomerId, Money, Note, OrderEvent, OrderId, StoreId};
use read_models::{HistoryProjection, SchemaName};
use serde_json::json;
use time::{Duration, OffsetDateTime, Time};

use crate::helpers::{TestDashboard, KNOWN_STORE};

const ANA: &str = "barista:s1:ana";
const BO: &str = "barista:s1:bo";

/// Today (UTC, the dashboard's business day) at 06:00 plus `minutes`.
fn at(minutes: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_time(Time::from_hms(6, 0, 0).unwrap())
        + Duration::minutes(minutes)
}

fn commit(order: &str, sequence: u64, minute: i64, actor: &str, event: OrderEvent) -> LoggedCommit {
    LoggedCommit {
        aggregate_type: "order".into(),
        aggregate_id: order.into(),
        committed_at: at(minute),
        correlation_id: String::new(),
        causation_id: String::new(),
        actor: actor.into(),
        traceparent: String::new(),
        events: vec![LoggedEvent {
            sequence,
            position: sequence,
            recorded_at: at(minute),
            event: DomainEvent::Order(event),
        }],
    }
}

/// An order placed at `placed`, started by `started_by` a minute later, and made ready by
/// `ready` at minute `ready_at`, if given.
fn order(n: u128, placed: i64, started_by: &str, ready: Option<(&str, i64)>) -> Vec<LoggedCommit> {
    let id = OrderId::from(uuid::Uuid::from_u128(0x5000 + n)).to_string();
    let mut commits = vec![
        commit(
            &id,
            1,
            placed,
            "customer:c-1",
            OrderEvent::OrderPlaced {
                order_id: OrderId::parse(&id).unwrap(),
                store_id: StoreId::parse(KNOWN_STORE).unwrap(),
                customer_id: CustomerId::parse("c-1").unwrap(),
                lines: vec![],
                note: Note::parse("").unwrap(),
                total: Money::from_cents(450),
                payment_token: None,
            },
        ),
        commit(
            &id,
            2,
            placed,
            "service:flows-order-saga",
            OrderEvent::OrderAccepted {},
        ),
        commit(
            &id,
            3,
            placed + 1,
            started_by,
            OrderEvent::PreparationStarted {},
        ),
    ];
    if let Some((by, minute)) = ready {
        commits.push(commit(&id, 4, minute, by, OrderEvent::OrderMarkedReady {}));
    }
    commits
}

#[tokio::test]
async fn the_metrics_give_each_baristas_orders_and_prep_times_and_the_stores_p90_wait() {
    let dashboard = TestDashboard::start().await;
    let history = HistoryProjection::new(
        dashboard.history_db.pool.clone(),
        SchemaName::parse("history").unwrap(),
    );
    let commits: Vec<LoggedCommit> = [
        // Prep 3 min, wait 4: started and made ready by ana.
        order(1, 0, ANA, Some((ANA, 4))),
        // Prep 5 min, wait 6: started by bo, made ready by ana.
        order(2, 2, BO, Some((ANA, 8))),
        // Prep 1 min, wait 2: bo's.
        order(3, 5, BO, Some((BO, 7))),
        // Started by ana, not ready yet.
        order(4, 10, ANA, None),
    ]
    .concat();
    history.apply(&commits).await.unwrap();

    let token = dashboard.token(Role::StoreManager, "mia", Some(KNOWN_STORE));
    let response = dashboard
        .get(&format!("/api/stores/{KNOWN_STORE}/metrics"), Some(&token))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = &response.body;
    assert_eq!(body["orders_ready"], 3);
    // Waits 2, 4 and 6 minutes: the nearest-rank 90th percentile is 6.
    assert_eq!(body["p90_wait_ms"], 360_000);
    assert_eq!(
        body["baristas"],
        json!([
            {
                "actor": ANA,
                "orders_started": 2,
                "orders_prepared": 2,
                "average_prep_ms": 240_000,
                "p90_prep_ms": 300_000,
            },
            {
                "actor": BO,
                "orders_started": 2,
                "orders_prepared": 1,
                "average_prep_ms": 60_000,
                "p90_prep_ms": 60_000,
            },
        ])
    );
    // The view's figures are still there beside them.
    assert!(body.get("orders_today").is_some(), "{body}");
    assert!(body.get("average_prep_ms").is_some(), "{body}");
    dashboard.stop().await;
}

#[tokio::test]
async fn a_day_without_ready_orders_has_no_wait_and_no_baristas() {
    let dashboard = TestDashboard::start().await;
    let token = dashboard.token(Role::Barista, "ana", Some(KNOWN_STORE));
    let response = dashboard
        .get(&format!("/api/stores/{KNOWN_STORE}/metrics"), Some(&token))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["orders_ready"], 0);
    assert_eq!(response.body["p90_wait_ms"], serde_json::Value::Null);
    assert_eq!(response.body["baristas"], json!([]));
    dashboard.stop().await;
}
