//! The saga's decision table, given/when/then like the domain's aggregate tests, and the
//! executor carrying it out through the in-memory ports.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use commit_log::projection::{Projection, ProjectionError};
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use domain::order::{PricedLine, RejectionReason};
use domain::{ErrorReason, ItemName, Money, OrderEvent, Quantity, Reason, Sku};
use proto::v1 as pb;
use time::OffsetDateTime;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::decision::{after, concerns, decide, Answer, Command, KnownOrder, Step};
use super::gateway::{InMemoryCommandGateway, SentCommand};
use super::payment_requests::InMemoryPaymentRequests;
use super::OrderSaga;
use crate::payments::{PaymentAction, PaymentRequest};

const ORDER: &str = "5f0c6c1e-3f5a-4c55-9a0e-000000000001";
const CARD: &str = "4242424242424242";
const TOTAL: i64 = 1275;

// ---- given: the order as the saga reads it ----

fn order(status: pb::OrderStatus) -> KnownOrder {
    KnownOrder {
        status,
        store_id: "s1".into(),
        customer_id: "c-1".into(),
        total_cents: TOTAL,
        payment_token: Some(CARD.into()),
        payment_captured: false,
    }
}

fn paid(status: pb::OrderStatus) -> KnownOrder {
    KnownOrder {
        payment_captured: true,
        ..order(status)
    }
}

fn without_card(status: pb::OrderStatus) -> KnownOrder {
    KnownOrder {
        payment_token: None,
        ..order(status)
    }
}

// ---- when: an event ----

fn placed() -> OrderEvent {
    let line = |sku: &str, quantity: u32, cents: i64| PricedLine {
        sku: Sku::parse(sku).unwrap(),
        name: ItemName::parse(sku).unwrap(),
        quantity: Quantity::new(quantity).unwrap(),
        customisations: Vec::new(),
        unit_price: Money::from_cents(cents),
        line_total: Money::from_cents(cents * i64::from(quantity)),
    };
    OrderEvent::OrderPlaced {
        order_id: domain::OrderId::parse(ORDER).unwrap(),
        store_id: domain::StoreId::parse("s1").unwrap(),
        customer_id: domain::CustomerId::parse("c-1").unwrap(),
        lines: vec![line("LATTE-12", 2, 450), line("CROISSANT", 1, 375)],
        note: domain::Note::parse("").unwrap(),
        total: Money::from_cents(TOTAL),
        payment_token: Some(domain::PaymentToken::parse(CARD).unwrap()),
    }
}

fn rejected(reason: RejectionReason, refund_due: bool, stock_reserved: bool) -> OrderEvent {
    OrderEvent::OrderRejected {
        reason,
        refund_due,
        stock_reserved,
    }
}

fn cancelled(refund_due: bool, stock_reserved: bool) -> OrderEvent {
    OrderEvent::OrderCancelled {
        reason: Reason::parse("customer changed their mind").unwrap(),
        refund_due,
        stock_reserved,
    }
}

fn events_the_saga_ignores() -> Vec<OrderEvent> {
    vec![
        OrderEvent::PaymentCaptured {
            payment_id: domain::ExternalRef::parse("pay_1").unwrap(),
            amount: Money::from_cents(TOTAL),
        },
        OrderEvent::PaymentDeclined {
            reason: Reason::parse("card declined").unwrap(),
        },
        OrderEvent::PaymentRefunded {
            refund_id: domain::ExternalRef::parse("ref_1").unwrap(),
            amount: Money::from_cents(TOTAL),
        },
        OrderEvent::PreparationStarted {},
        OrderEvent::OrderMarkedReady {},
    ]
}

// ---- then: the steps ----

fn reserve() -> Step {
    let line = |sku: &str, quantity: u32| pb::StockLine {
        sku: sku.into(),
        quantity,
    };
    Step::Command(Command::ReserveStock {
        store_id: "s1".into(),
        lines: vec![line("LATTE-12", 2), line("CROISSANT", 1)],
    })
}

fn accept() -> Step {
    Step::Command(Command::AcceptOrder)
}

fn reject() -> Step {
    Step::Command(Command::RejectOutOfStock)
}

fn release(reason: &str) -> Step {
    Step::Command(Command::ReleaseReservation {
        store_id: "s1".into(),
        reason: reason.into(),
    })
}

fn commit() -> Step {
    Step::Command(Command::CommitReservation {
        store_id: "s1".into(),
    })
}

fn earn() -> Step {
    Step::Command(Command::EarnPoints {
        customer_id: "c-1".into(),
        amount_cents: TOTAL,
    })
}

fn charge() -> Step {
    Step::RequestCharge {
        store_id: "s1".into(),
        customer_id: "c-1".into(),
        amount_cents: TOTAL,
        payment_token: CARD.into(),
    }
}

fn refund(reason: &str) -> Step {
    Step::RequestRefund {
        amount_cents: TOTAL,
        reason: reason.into(),
    }
}

fn refused(reason: ErrorReason) -> Answer {
    Answer::Refused(Some(reason))
}

const CANCELLED_BECAUSE: &str = "customer changed their mind";

#[test]
fn given_the_order_when_an_event_then_the_steps() {
    use pb::OrderStatus::*;
    let cases: Vec<(&str, KnownOrder, OrderEvent, Vec<Step>)> = vec![
        (
            "a placed order reserves its stock",
            order(Placed),
            placed(),
            vec![reserve()],
        ),
        (
            "a late OrderPlaced finds the order accepted: nothing left to decide",
            order(Accepted),
            placed(),
            vec![],
        ),
        (
            "a late OrderPlaced finds the order in preparation",
            paid(Preparing),
            placed(),
            vec![],
        ),
        (
            "a late OrderPlaced finds the order completed",
            paid(Completed),
            placed(),
            vec![],
        ),
        (
            "after a crash between reserving and accepting, the order was cancelled: release",
            order(Cancelled),
            placed(),
            vec![release("order ended before its acceptance")],
        ),
        (
            "after an outage between reserving and accepting, the order was rejected: release",
            order(Rejected),
            placed(),
            vec![release("order ended before its acceptance")],
        ),
        (
            "an accepted order with a card is charged",
            order(Accepted),
            OrderEvent::OrderAccepted {},
            vec![charge()],
        ),
        (
            "an accepted order paid already is not charged again",
            paid(Accepted),
            OrderEvent::OrderAccepted {},
            vec![],
        ),
        (
            "an accepted order without a card is paid at the store",
            without_card(Accepted),
            OrderEvent::OrderAccepted {},
            vec![],
        ),
        (
            "an OrderAccepted of an order cancelled since is not charged",
            order(Cancelled),
            OrderEvent::OrderAccepted {},
            vec![],
        ),
        (
            "a rejected order releases its stock even when its event says none was reserved",
            order(Rejected),
            rejected(RejectionReason::OutOfStock, false, false),
            vec![release("out of stock")],
        ),
        (
            "a declined order releases the stock it held",
            order(Rejected),
            rejected(RejectionReason::PaymentDeclined, false, true),
            vec![release("payment declined")],
        ),
        (
            "an order rejected after its payment was captured releases and is refunded",
            paid(Rejected),
            rejected(
                RejectionReason::Other(Reason::parse("payment not confirmed in time").unwrap()),
                true,
                true,
            ),
            vec![
                release("payment not confirmed in time"),
                refund("payment not confirmed in time"),
            ],
        ),
        (
            "a cancelled order releases whatever its event says was reserved",
            order(Cancelled),
            cancelled(false, false),
            vec![release(CANCELLED_BECAUSE)],
        ),
        (
            "an order cancelled after capture releases and is refunded",
            paid(Cancelled),
            cancelled(true, true),
            vec![release(CANCELLED_BECAUSE), refund(CANCELLED_BECAUSE)],
        ),
        (
            "a completed order commits its stock and earns its points",
            paid(Completed),
            OrderEvent::OrderCompleted {},
            vec![commit(), earn()],
        ),
    ];
    for (name, given, when, then) in cases {
        assert!(concerns(&when), "{name}: the saga must read the order");
        assert_eq!(decide(&when, &given), then, "{name}");
    }
}

#[test]
fn given_any_order_when_an_event_the_saga_ignores_then_it_does_not_even_read_the_order() {
    for event in events_the_saga_ignores() {
        assert!(!concerns(&event), "{event:?}");
        assert_eq!(decide(&event, &paid(pb::OrderStatus::Accepted)), vec![]);
    }
}

#[test]
fn given_a_step_when_its_answer_then_what_follows() {
    use pb::OrderStatus::Placed;
    let cases: Vec<(&str, Step, Answer, Vec<Step>)> = vec![
        (
            "stock reserved: accept",
            reserve(),
            Answer::Done,
            vec![accept()],
        ),
        (
            "a client reserved for this order already: the stock is held, accept",
            reserve(),
            refused(ErrorReason::AlreadyReserved),
            vec![accept()],
        ),
        (
            "not enough stock: reject",
            reserve(),
            refused(ErrorReason::OutOfStock),
            vec![reject()],
        ),
        (
            "an item the store does not stock: reject",
            reserve(),
            refused(ErrorReason::SkuNotStocked),
            vec![reject()],
        ),
        (
            "a store without inventory: reject",
            reserve(),
            refused(ErrorReason::InventoryNotFound),
            vec![reject()],
        ),
        (
            "a refusal without a code this build knows: nothing was reserved, reject",
            reserve(),
            Answer::Refused(None),
            vec![reject()],
        ),
        ("accepted: done", accept(), Answer::Done, vec![]),
        (
            "cancelled between the reservation and the acceptance: release",
            accept(),
            refused(ErrorReason::IllegalTransition),
            vec![release("order not accepted")],
        ),
        (
            "the acceptance refused for any reason: release",
            accept(),
            Answer::Refused(None),
            vec![release("order not accepted")],
        ),
        ("rejected: done", reject(), Answer::Done, vec![]),
        (
            "the order moved on before the rejection: its own end compensates",
            reject(),
            refused(ErrorReason::IllegalTransition),
            vec![],
        ),
        ("released", release(CANCELLED_BECAUSE), Answer::Done, vec![]),
        (
            "nothing held to release (never made, released or committed): done",
            release(CANCELLED_BECAUSE),
            refused(ErrorReason::NoSuchReservation),
            vec![],
        ),
        (
            "no reservation to commit",
            commit(),
            refused(ErrorReason::NoSuchReservation),
            vec![],
        ),
        (
            "points earned already",
            earn(),
            refused(ErrorReason::PointsAlreadyEarned),
            vec![],
        ),
        ("charge requested", charge(), Answer::Done, vec![]),
        (
            "refund requested",
            refund(CANCELLED_BECAUSE),
            Answer::Done,
            vec![],
        ),
    ];
    for (name, step, answer, then) in cases {
        assert_eq!(after(&step, answer, &order(Placed)), then, "{name}");
    }
}

#[test]
fn idempotency_keys_name_never_change() {
    // Stored with every outcome since the first release: a renamed step would run again on
    // a redelivered event.
    let names: Vec<_> = [
        reserve(),
        accept(),
        reject(),
        release("r"),
        commit(),
        earn(),
    ]
    .into_iter()
    .map(|step| match step {
        Step::Command(command) => command.key_name(),
        other => panic!("{other:?}"),
    })
    .collect();
    assert_eq!(
        names,
        [
            "reserve-stock",
            "accept",
            "reject",
            "release-stock",
            "commit-stock",
            "earn-points"
        ]
    );
}

// ---- the executor, through the in-memory ports ----

struct Harness {
    commands: Arc<InMemoryCommandGateway>,
    payments: Arc<InMemoryPaymentRequests>,
    saga: OrderSaga,
}

fn harness(given: KnownOrder) -> Harness {
    let commands = Arc::new(InMemoryCommandGateway::new());
    commands.set_order(ORDER, given);
    let payments = Arc::new(InMemoryPaymentRequests::new());
    let saga = OrderSaga::new(commands.clone(), payments.clone());
    Harness {
        commands,
        payments,
        saga,
    }
}

/// A commit of `events` to the order, its first at `sequence`.
fn commit_of(sequence: u64, events: Vec<OrderEvent>) -> LoggedCommit {
    let at = OffsetDateTime::UNIX_EPOCH;
    LoggedCommit {
        aggregate_type: "order".into(),
        aggregate_id: ORDER.into(),
        committed_at: at,
        correlation_id: String::new(),
        causation_id: String::new(),
        actor: String::new(),
        traceparent: String::new(),
        events: events
            .into_iter()
            .zip(sequence..)
            .map(|(event, sequence)| LoggedEvent {
                sequence,
                position: sequence,
                recorded_at: at,
                event: DomainEvent::Order(event),
            })
            .collect(),
    }
}

/// A refusal as the command API sends it: `code`, a message, and the reason in `ErrorInfo`.
fn api_refusal(code: Code, message: &str, reason: ErrorReason) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason.code(), proto::ERROR_DOMAIN, HashMap::new()),
    )
}

fn sent_as(key_step: &str, step: Step) -> SentCommand {
    let Step::Command(command) = step else {
        panic!("{step:?} is no command")
    };
    SentCommand {
        order_id: ORDER.into(),
        key: format!("saga/{ORDER}/1/{key_step}"),
        command,
    }
}

#[tokio::test]
async fn a_refused_reservation_is_acted_on_by_its_code_whatever_the_message_says() {
    // Each message reads like the other code: the old saga matched the text and did the wrong
    // thing in both rows.
    let already_reserved_message = format!("order {ORDER} already holds a reservation");
    for (reason, message, then) in [
        (
            ErrorReason::AlreadyReserved,
            "not enough stock of LATTE-12 at store s1",
            sent_as("accept", accept()),
        ),
        (
            ErrorReason::OutOfStock,
            already_reserved_message.as_str(),
            sent_as("reject", reject()),
        ),
    ] {
        let h = harness(order(pb::OrderStatus::Placed));
        h.commands.answer_with(
            "reserve-stock",
            api_refusal(Code::FailedPrecondition, message, reason),
        );

        h.saga.apply(&[commit_of(1, vec![placed()])]).await.unwrap();

        assert_eq!(
            h.commands.sent(),
            [sent_as("reserve-stock", reserve()), then],
            "{reason:?}"
        );
    }
}

#[tokio::test]
async fn an_acceptance_refused_after_the_reservation_releases_the_stock_under_the_events_key() {
    let h = harness(order(pb::OrderStatus::Placed));
    h.commands.answer_with(
        "accept",
        api_refusal(
            Code::FailedPrecondition,
            "AcceptOrder is not allowed for an order that is Cancelled",
            ErrorReason::IllegalTransition,
        ),
    );

    h.saga.apply(&[commit_of(1, vec![placed()])]).await.unwrap();

    assert_eq!(
        h.commands.sent(),
        [
            sent_as("reserve-stock", reserve()),
            sent_as("accept", accept()),
            sent_as("release-stock", release("order not accepted")),
        ]
    );
}

#[tokio::test]
async fn an_order_cancelled_after_capture_releases_its_stock_and_asks_for_its_refund() {
    let h = harness(paid(pb::OrderStatus::Cancelled));
    h.commands.answer_with(
        "release-stock",
        api_refusal(
            Code::NotFound,
            "holds no reservation",
            ErrorReason::NoSuchReservation,
        ),
    );

    h.saga
        .apply(&[commit_of(1, vec![cancelled(true, true)])])
        .await
        .unwrap();

    assert_eq!(
        h.commands.sent(),
        [sent_as("release-stock", release(CANCELLED_BECAUSE))]
    );
    assert_eq!(
        h.payments.sent(),
        [PaymentRequest::refund(ORDER, TOTAL, CANCELLED_BECAUSE)]
    );
}

#[tokio::test]
async fn an_accepted_order_is_charged_on_the_payments_queue() {
    let h = harness(order(pb::OrderStatus::Accepted));

    h.saga
        .apply(&[commit_of(2, vec![OrderEvent::OrderAccepted {}])])
        .await
        .unwrap();

    let sent = h.payments.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].request_id, format!("{ORDER}/charge"));
    assert!(
        matches!(
            &sent[0].action,
            PaymentAction::Charge { amount_cents: TOTAL, payment_token, requested_at: Some(_), .. }
                if payment_token == CARD
        ),
        "{sent:?}"
    );
    assert_eq!(h.commands.sent(), []);
}

#[tokio::test]
async fn events_the_saga_ignores_read_nothing_and_send_nothing() {
    let h = harness(paid(pb::OrderStatus::Preparing));

    h.saga
        .apply(&[commit_of(3, events_the_saga_ignores())])
        .await
        .unwrap();

    assert_eq!(h.commands.reads(), 0);
    assert_eq!(h.commands.sent(), []);
    assert_eq!(h.payments.sent(), []);
}

#[tokio::test]
async fn an_unavailable_api_or_queue_retries_the_batch_and_a_lasting_failure_is_poison() {
    let unavailable = harness(order(pb::OrderStatus::Placed));
    unavailable
        .commands
        .answer_with("reserve-stock", Status::unavailable("database down"));
    let outcome = unavailable
        .saga
        .apply(&[commit_of(1, vec![placed()])])
        .await;
    assert!(
        matches!(outcome, Err(ProjectionError::Transient(_))),
        "{outcome:?}"
    );

    let misconfigured = harness(paid(pb::OrderStatus::Completed));
    misconfigured.commands.answer_with(
        "earn-points",
        Status::permission_denied("service role required"),
    );
    let commits = [
        commit_of(4, events_the_saga_ignores()),
        commit_of(9, vec![OrderEvent::OrderCompleted {}]),
    ];
    let outcome = misconfigured.saga.apply(&commits).await;
    assert!(
        matches!(outcome, Err(ProjectionError::Poison { index: 1, .. })),
        "{outcome:?}"
    );

    for (transient, poison) in [(true, false), (false, true)] {
        let h = harness(order(pb::OrderStatus::Accepted));
        h.payments.fail(transient);
        let outcome = h
            .saga
            .apply(&[commit_of(2, vec![OrderEvent::OrderAccepted {}])])
            .await;
        assert_eq!(
            (
                matches!(outcome, Err(ProjectionError::Transient(_))),
                matches!(outcome, Err(ProjectionError::Poison { index: 0, .. }))
            ),
            (transient, poison),
            "{outcome:?}"
        );
    }
}
