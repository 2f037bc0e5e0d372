//! A charge that never resolves cannot strand an order: past the payment deadline the order is
//! rejected, its stock released, and a capture the gateway completes late is refunded, once.

use std::sync::Arc;
use std::time::Duration;

use flows::notifications::NotificationKind;
use flows::payments::{ChargeOutcome, PaymentAction, PaymentRequest, SandboxGateway, TestCard};
use proto::v1 as pb;
use time::OffsetDateTime;

use crate::flows::{events_about, intake_order, order, order_id_of, stock, Rig};
use crate::support::{eventually, Pipeline, STORE};
use crate::workload::{open_the_store, Clients};

/// What the customer is told when the payment deadline passed.
const NOT_CONFIRMED: &str = "payment not confirmed in time";

async fn is_rejected(pipeline: &Pipeline, order_id: &str) -> bool {
    let mut clients = Clients::new(pipeline);
    order(&mut clients, order_id)
        .await
        .is_some_and(|o| o.status() == pb::OrderStatus::Rejected)
}

fn all_stock_free() -> Vec<(String, u32, u32)> {
    vec![("CROISSANT".into(), 20, 0), ("LATTE-12".into(), 20, 0)]
}

#[tokio::test]
async fn a_charge_that_never_answers_rejects_the_order_at_its_deadline_and_releases_its_stock() {
    let pipeline = Pipeline::start().await;
    let mut rig = Rig::new(&pipeline).await;
    rig.settings.payments.charge_deadline_ms = 2_000;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    // The timeout card: every gateway call times out.
    let body = intake_order("ubereats", "UE-NEVER", "c-never", TestCard::Timeout);
    rig.drop_intake(&body).await;
    let order_id = order_id_of(&body);
    eventually("the order rejected past its payment deadline", || {
        is_rejected(&pipeline, &order_id)
    })
    .await;
    eventually("its stock released", || {
        let mut clients = Clients::new(&pipeline);
        async move { stock(&mut clients).await == all_stock_free() }
    })
    .await;
    let seen = rig.notifications(1).await;
    assert_eq!(
        seen[0].message,
        NotificationKind::OrderRejected {
            order_id: order_id.clone(),
            store_id: STORE.into(),
            reason: NOT_CONFIRMED.into(),
        }
    );
    // Resolved, not dead-lettered: nothing waits for an operator.
    assert!(rig
        .dead_letters("payments")
        .list(10)
        .await
        .unwrap()
        .is_empty());
    assert!(rig.sandbox.timeouts() >= 1);
    assert!(rig.sandbox.ledger().is_empty(), "nothing captured");
    flows.abort();
    pipeline.stop().await;
}

#[tokio::test]
async fn a_capture_completing_after_the_deadline_is_refunded_once_and_the_order_rejected() {
    let pipeline = Pipeline::start().await;
    let mut rig = Rig::new(&pipeline).await;
    // The slow card's capture completes 6 s after the first call, whoever still waits for it;
    // each call gives up after 1 s, and the deadline is 3 s after the request.
    rig.sandbox = SandboxGateway::new(Duration::from_secs(6));
    rig.settings.payments.gateway_timeout_ms = 1_000;
    rig.settings.payments.charge_deadline_ms = 3_000;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    let body = intake_order("ubereats", "UE-LATE", "c-late", TestCard::SlowApprove);
    rig.drop_intake(&body).await;
    let order_id = order_id_of(&body);
    eventually("the order rejected past its payment deadline", || {
        is_rejected(&pipeline, &order_id)
    })
    .await;
    eventually("the late capture refunded", || async {
        let ledger = rig.sandbox.ledger();
        ledger.len() == 1
            && matches!(ledger[0].outcome, ChargeOutcome::Captured { .. })
            && ledger[0].refunded
    })
    .await;
    eventually("its stock released", || {
        let mut clients = Clients::new(&pipeline);
        async move { stock(&mut clients).await == all_stock_free() }
    })
    .await;

    // The saga's charge request delivered again, long past the queue's deduplication window
    // and the deadline: nothing is charged again and nothing refunded twice.
    let mut again = PaymentRequest::charge(
        &order_id,
        STORE,
        "c-late",
        1_225,
        TestCard::SlowApprove.token(),
    );
    if let PaymentAction::Charge { requested_at, .. } = &mut again.action {
        *requested_at = Some(OffsetDateTime::now_utc() - time::Duration::hours(1));
    }
    rig.sqs
        .send_message()
        .queue_url(rig.settings.sqs.payments_queue_url.as_deref().unwrap())
        .message_body(serde_json::to_string(&again).unwrap())
        .message_group_id(&order_id)
        .message_deduplication_id(format!("{}-late-copy", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap();
    eventually("the late copy handled", || async {
        rig.sandbox.ledger()[0].refund_calls >= 2
    })
    .await;
    let ledger = rig.sandbox.ledger();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].refund_ids.len(), 1, "one refund: {ledger:?}");
    for (event, expected) in [
        ("OrderRejected", 1),
        ("ReservationReleased", 1),
        ("PaymentCaptured", 0),
    ] {
        assert_eq!(
            events_about(&pipeline, event, &order_id).await,
            expected,
            "{event} events of the order"
        );
    }
    assert!(rig
        .dead_letters("payments")
        .list(10)
        .await
        .unwrap()
        .is_empty());
    flows.abort();
    pipeline.stop().await;
}

/// Makes the event store's database refuse every `PaymentCaptured` write with a transient
/// error (SQLSTATE 57P03), as during a failover: the command API answers UNAVAILABLE to
/// `RecordPaymentCaptured` and nothing else.
async fn refuse_captures(pipeline: &Pipeline, refuse: bool) {
    let statements: &[&str] = if refuse {
        &[
            "CREATE FUNCTION refuse_captures() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF NEW.event_type = 'PaymentCaptured' THEN \
                 RAISE EXCEPTION 'the test refuses captures' USING ERRCODE = '57P03'; \
               END IF; \
               RETURN NEW; \
             END $$",
            "CREATE TRIGGER refuse_captures BEFORE INSERT ON events \
             FOR EACH ROW EXECUTE FUNCTION refuse_captures()",
        ]
    } else {
        &["DROP TRIGGER refuse_captures ON events"]
    };
    for statement in statements {
        sqlx::query(statement)
            .execute(&pipeline.events_db.pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_outage_longer_than_the_queues_deliveries_dead_letters_no_payment() {
    let pipeline = Pipeline::start().await;
    let rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    refuse_captures(&pipeline, true).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    let body = intake_order("ubereats", "UE-OUTAGE", "c-outage", TestCard::Approve);
    rig.drop_intake(&body).await;
    let order_id = order_id_of(&body);
    // The card is charged, the capture cannot be recorded: every delivery fails transiently.
    // Five deliveries (the queue's maxReceiveCount) take about ten seconds here; the outage
    // lasts longer.
    eventually("the charge made", || async {
        !rig.sandbox.ledger().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(
        rig.sandbox.ledger()[0].calls > 5,
        "tried past the queue's delivery limit: {:?}",
        rig.sandbox.ledger()
    );
    refuse_captures(&pipeline, false).await;

    eventually("the payment recorded once the database is back", || {
        let mut clients = Clients::new(&pipeline);
        let order_id = order_id.clone();
        async move {
            order(&mut clients, &order_id)
                .await
                .is_some_and(|o| o.status() == pb::OrderStatus::Accepted && o.payment_captured)
        }
    })
    .await;
    assert!(rig
        .dead_letters("payments")
        .list(10)
        .await
        .unwrap()
        .is_empty());
    let ledger = rig.sandbox.ledger();
    assert_eq!(ledger.len(), 1, "one charge: {ledger:?}");
    assert!(!ledger[0].refunded);
    assert_eq!(
        events_about(&pipeline, "PaymentCaptured", &order_id).await,
        1
    );
    flows.abort();
    pipeline.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_while_its_charge_is_in_flight_is_refunded_when_the_capture_lands() {
    let pipeline = Pipeline::start().await;
    let mut rig = Rig::new(&pipeline).await;
    // The capture takes 4 s; the call waits for it (the gateway timeout is the default minute).
    rig.sandbox = SandboxGateway::new(Duration::from_secs(4));
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    let body = intake_order("ubereats", "UE-RACE", "c-race", TestCard::SlowApprove);
    rig.drop_intake(&body).await;
    let order_id = order_id_of(&body);
    eventually("the charge in flight", || async {
        rig.sandbox.charges_in_flight() == 1
    })
    .await;
    // Cancelled while the gateway is still capturing: nothing is captured on the order yet.
    clients
        .barista
        .cancel_order(pb::CancelOrderRequest {
            idempotency_key: format!("cancel-{order_id}"),
            order_id: order_id.clone(),
            reason: "the customer changed their mind".into(),
        })
        .await
        .unwrap();
    eventually("the late capture refunded and the stock released", || {
        let mut clients = Clients::new(&pipeline);
        let rig = &rig;
        async move {
            rig.sandbox.ledger().first().is_some_and(|c| c.refunded)
                && stock(&mut clients).await == all_stock_free()
        }
    })
    .await;
    let ledger = rig.sandbox.ledger();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].refund_ids.len(), 1, "one refund: {ledger:?}");
    assert_eq!(
        order(&mut clients, &order_id).await.unwrap().status(),
        pb::OrderStatus::Cancelled
    );
    flows.abort();
    pipeline.stop().await;
}
