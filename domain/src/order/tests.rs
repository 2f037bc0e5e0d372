#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;

use super::*;
use crate::error::ErrorKind;
use crate::menu::MenuItemView;
use crate::test_support::{customer, order_id, qty, reason, sku, store};
use crate::values::{Actor, Customisation, ExternalRef, ItemName, Money, Note, PaymentToken};

fn services() -> OrderServices {
    OrderServices::new(Arc::new(FixedMenu::sample()))
}

fn test() -> TestFramework<Order> {
    TestFramework::with(services())
}

fn result(given: Vec<OrderEvent>, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
    test().given(given).when(command).inspect_result()
}

fn owner() -> Actor {
    Actor::Customer(customer("c1"))
}

fn staff() -> Actor {
    Actor::StoreStaff(store("s1"))
}

fn line(code: &str, quantity: u32, customisations: &[&str]) -> OrderLineRequest {
    OrderLineRequest {
        sku: sku(code),
        quantity: qty(quantity),
        customisations: customisations
            .iter()
            .map(|c| Customisation::parse(c).unwrap())
            .collect(),
    }
}

fn place(lines: Vec<OrderLineRequest>, actor: Actor) -> OrderCommand {
    OrderCommand::PlaceOrder {
        order_id: order_id(1),
        store_id: store("s1"),
        customer_id: customer("c1"),
        lines,
        note: Note::parse("no lid please").unwrap(),
        payment_token: Some(card()),
        actor,
    }
}

fn card() -> PaymentToken {
    PaymentToken::parse("4242424242424242").unwrap()
}

fn usual_place(actor: Actor) -> OrderCommand {
    place(
        vec![
            line("LATTE-12", 2, &["oat milk"]),
            line("CROISSANT", 1, &[]),
        ],
        actor,
    )
}

/// Two oat lattes at $4.50 and a croissant at $3.75: $12.75.
fn placed() -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: order_id(1),
        store_id: store("s1"),
        customer_id: customer("c1"),
        lines: vec![
            PricedLine {
                sku: sku("LATTE-12"),
                name: ItemName::parse("Latte 12oz").unwrap(),
                quantity: qty(2),
                customisations: vec![Customisation::parse("oat milk").unwrap()],
                unit_price: Money::from_cents(450),
                line_total: Money::from_cents(900),
            },
            PricedLine {
                sku: sku("CROISSANT"),
                name: ItemName::parse("Butter croissant").unwrap(),
                quantity: qty(1),
                customisations: vec![],
                unit_price: Money::from_cents(375),
                line_total: Money::from_cents(375),
            },
        ],
        note: Note::parse("no lid please").unwrap(),
        total: Money::from_cents(1275),
        payment_token: Some(card()),
    }
}

fn captured() -> OrderEvent {
    OrderEvent::PaymentCaptured {
        payment_id: ExternalRef::parse("pay_1").unwrap(),
        amount: Money::from_cents(1275),
    }
}

fn capture(cents: i64) -> OrderCommand {
    OrderCommand::RecordPaymentCaptured {
        payment_id: ExternalRef::parse("pay_1").unwrap(),
        amount: Money::from_cents(cents),
        actor: Actor::Service,
    }
}

fn accepted() -> OrderEvent {
    OrderEvent::OrderAccepted {}
}

/// The history of an order that reached `status` along the happy path (payment captured).
fn history_until(status: OrderStatus) -> Vec<OrderEvent> {
    let path = [
        (OrderStatus::Placed, placed()),
        (OrderStatus::Accepted, accepted()),
        (OrderStatus::Accepted, captured()),
        (OrderStatus::Preparing, OrderEvent::PreparationStarted {}),
        (OrderStatus::Ready, OrderEvent::OrderMarkedReady {}),
        (OrderStatus::Completed, OrderEvent::OrderCompleted {}),
    ];
    let rank = |s| path.iter().position(|(p, _)| *p == s).unwrap();
    path.iter()
        .filter(|(s, _)| rank(*s) <= rank(status))
        .map(|(_, e)| e.clone())
        .collect()
}

fn cancelled() -> OrderEvent {
    OrderEvent::OrderCancelled {
        reason: reason("changed my mind"),
        refund_due: false,
        stock_reserved: false,
    }
}

fn cancel(actor: Actor) -> OrderCommand {
    OrderCommand::CancelOrder {
        reason: reason("changed my mind"),
        actor,
    }
}

// --- placing ---

#[test]
fn places_an_order_priced_from_the_menu() {
    test()
        .given_no_previous_events()
        .when(usual_place(owner()))
        .then_expect_events(vec![placed()]);
}

#[test]
fn staff_of_the_store_and_services_may_place_for_a_customer() {
    for actor in [staff(), Actor::Service] {
        assert_eq!(result(vec![], usual_place(actor)), Ok(vec![placed()]));
    }
}

#[test]
fn nobody_else_may_place_the_order() {
    for actor in [
        Actor::Customer(customer("c2")),
        Actor::StoreStaff(store("s2")),
    ] {
        let err = result(vec![], usual_place(actor.clone())).unwrap_err();
        assert_eq!(
            err,
            OrderError::NotPermitted {
                actor,
                command: "PlaceOrder"
            }
        );
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    }
}

#[test]
fn an_order_needs_a_line() {
    test()
        .given_no_previous_events()
        .when(place(vec![], owner()))
        .then_expect_error(OrderError::EmptyOrder);
}

#[test]
fn an_order_has_at_most_fifty_lines() {
    assert!(result(vec![], place(vec![line("ESPRESSO", 1, &[]); 50], owner())).is_ok());
    test()
        .given_no_previous_events()
        .when(place(vec![line("ESPRESSO", 1, &[]); 51], owner()))
        .then_expect_error(OrderError::TooManyLines { count: 51, max: 50 });
}

#[test]
fn a_line_has_at_most_ten_customisations() {
    let eleven: Vec<String> = (0..11).map(|i| format!("shot {i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    test()
        .given_no_previous_events()
        .when(place(vec![line("LATTE-12", 1, &eleven)], owner()))
        .then_expect_error(OrderError::TooManyCustomisations {
            sku: sku("LATTE-12"),
            count: 11,
            max: 10,
        });
}

#[test]
fn unknown_and_unavailable_items_are_refused() {
    let err = result(vec![], place(vec![line("TEAPOT", 1, &[])], owner())).unwrap_err();
    assert_eq!(err, OrderError::UnknownSku { sku: sku("TEAPOT") });
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    let err = result(
        vec![],
        place(vec![line("PUMPKIN-SPICE-12", 1, &[])], owner()),
    )
    .unwrap_err();
    assert_eq!(
        err,
        OrderError::ItemUnavailable {
            sku: sku("PUMPKIN-SPICE-12")
        }
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn prices_come_from_the_catalogue_given() {
    let cheap = MenuItemView {
        sku: sku("ESPRESSO"),
        name: ItemName::parse("Espresso").unwrap(),
        price: Money::from_cents(199),
        available: true,
    };
    let services = OrderServices::new(Arc::new(FixedMenu::new([cheap])));
    let events = TestFramework::<Order>::with(services)
        .given_no_previous_events()
        .when(place(vec![line("ESPRESSO", 3, &[])], owner()))
        .inspect_result()
        .unwrap();
    let [OrderEvent::OrderPlaced { total, .. }] = events.as_slice() else {
        panic!("expected one OrderPlaced, got {events:?}");
    };
    assert_eq!(*total, Money::from_cents(597));
}

#[test]
fn a_menu_outage_is_unavailable() {
    let menu = Arc::new(FixedMenu::sample());
    menu.set_unavailable(true);
    let err = TestFramework::<Order>::with(OrderServices::new(menu))
        .given_no_previous_events()
        .when(usual_place(owner()))
        .inspect_result()
        .unwrap_err();
    assert!(matches!(err, OrderError::MenuUnavailable(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[test]
fn an_order_is_placed_once() {
    test()
        .given(vec![placed()])
        .when(usual_place(owner()))
        .then_expect_error(OrderError::AlreadyExists {
            order_id: order_id(1),
        });
}

#[test]
fn commands_on_a_missing_order_are_not_found() {
    let err = result(
        vec![],
        OrderCommand::AcceptOrder {
            actor: Actor::Service,
        },
    )
    .unwrap_err();
    assert_eq!(err, OrderError::NotFound);
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

// --- lifecycle ---

#[test]
fn the_happy_path_runs_to_completion() {
    let steps = [
        (
            OrderCommand::AcceptOrder {
                actor: Actor::Service,
            },
            accepted(),
        ),
        (capture(1275), captured()),
        (
            OrderCommand::StartPreparing { actor: staff() },
            OrderEvent::PreparationStarted {},
        ),
        (
            OrderCommand::MarkReady { actor: staff() },
            OrderEvent::OrderMarkedReady {},
        ),
        (
            OrderCommand::CompleteOrder { actor: staff() },
            OrderEvent::OrderCompleted {},
        ),
    ];
    let mut history = vec![placed()];
    for (command, event) in steps {
        test()
            .given(history.clone())
            .when(command)
            .then_expect_events(vec![event.clone()]);
        history.push(event);
    }
}

#[test]
fn payment_may_be_captured_before_acceptance() {
    test()
        .given(vec![placed()])
        .when(capture(1275))
        .then_expect_events(vec![captured()]);
}

#[test]
fn payment_is_captured_once_and_for_the_total() {
    test()
        .given(vec![placed(), captured()])
        .when(capture(1275))
        .then_expect_error(OrderError::PaymentAlreadyCaptured);
    test()
        .given(vec![placed()])
        .when(capture(1200))
        .then_expect_error(OrderError::PaymentAmountMismatch {
            total: Money::from_cents(1275),
            captured: Money::from_cents(1200),
        });
}

#[test]
fn a_declined_payment_rejects_the_order_and_says_what_to_undo() {
    let declined = OrderCommand::RecordPaymentDeclined {
        reason: reason("card declined"),
        actor: Actor::Service,
    };
    for (history, stock_reserved) in [(vec![placed()], false), (vec![placed(), accepted()], true)] {
        test()
            .given(history)
            .when(declined.clone())
            .then_expect_events(vec![
                OrderEvent::PaymentDeclined {
                    reason: reason("card declined"),
                },
                OrderEvent::OrderRejected {
                    reason: RejectionReason::PaymentDeclined,
                    refund_due: false,
                    stock_reserved,
                },
            ]);
    }
    test()
        .given(vec![placed(), captured()])
        .when(declined)
        .then_expect_error(OrderError::PaymentAlreadyCaptured);
}

#[test]
fn an_order_may_be_rejected_before_preparation() {
    test()
        .given(vec![placed()])
        .when(OrderCommand::RejectOrder {
            reason: RejectionReason::OutOfStock,
            actor: Actor::Service,
        })
        .then_expect_events(vec![OrderEvent::OrderRejected {
            reason: RejectionReason::OutOfStock,
            refund_due: false,
            stock_reserved: false,
        }]);
    test()
        .given(history_until(OrderStatus::Accepted))
        .when(OrderCommand::RejectOrder {
            reason: RejectionReason::Other(reason("machine broken")),
            actor: staff(),
        })
        .then_expect_events(vec![OrderEvent::OrderRejected {
            reason: RejectionReason::Other(reason("machine broken")),
            refund_due: true,
            stock_reserved: true,
        }]);
}

#[test]
fn preparation_needs_acceptance_and_a_captured_payment() {
    let start = || OrderCommand::StartPreparing { actor: staff() };
    test()
        .given(vec![placed(), accepted()])
        .when(start())
        .then_expect_error(OrderError::PaymentNotCaptured);
    test()
        .given(vec![placed(), captured()])
        .when(start())
        .then_expect_error(OrderError::IllegalTransition {
            from: OrderStatus::Placed,
            command: "StartPreparing",
        });
}

#[test]
fn cancelling_records_refund_and_stock_release_due() {
    test()
        .given(vec![placed()])
        .when(cancel(owner()))
        .then_expect_events(vec![cancelled()]);
    test()
        .given(history_until(OrderStatus::Accepted))
        .when(cancel(owner()))
        .then_expect_events(vec![OrderEvent::OrderCancelled {
            reason: reason("changed my mind"),
            refund_due: true,
            stock_reserved: true,
        }]);
}

#[test]
fn every_other_transition_is_illegal() {
    use OrderStatus::{Accepted, Cancelled, Completed, Placed, Preparing, Ready, Rejected};
    let rejected = OrderEvent::OrderRejected {
        reason: RejectionReason::OutOfStock,
        refund_due: false,
        stock_reserved: false,
    };
    let accept = || OrderCommand::AcceptOrder {
        actor: Actor::Service,
    };
    let ready = || OrderCommand::MarkReady { actor: staff() };
    let complete = || OrderCommand::CompleteOrder { actor: staff() };
    let reject = || OrderCommand::RejectOrder {
        reason: RejectionReason::OutOfStock,
        actor: Actor::Service,
    };
    let cases = [
        (history_until(Placed), ready(), Placed),
        (history_until(Placed), complete(), Placed),
        (history_until(Accepted), accept(), Accepted),
        (history_until(Accepted), complete(), Accepted),
        (history_until(Preparing), cancel(staff()), Preparing),
        (history_until(Preparing), reject(), Preparing),
        (history_until(Preparing), capture(1275), Preparing),
        (history_until(Preparing), complete(), Preparing),
        (history_until(Ready), ready(), Ready),
        (history_until(Completed), cancel(staff()), Completed),
        (vec![placed(), rejected.clone()], accept(), Rejected),
        (vec![placed(), rejected], capture(1275), Rejected),
        (vec![placed(), cancelled()], accept(), Cancelled),
        (vec![placed(), cancelled()], cancel(owner()), Cancelled),
    ];
    for (history, command, from) in cases {
        let name = command.name();
        let err = result(history, command).unwrap_err();
        assert_eq!(
            err,
            OrderError::IllegalTransition {
                from,
                command: name
            }
        );
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    }
}

// --- who may act ---

#[test]
fn customers_may_cancel_their_own_orders_only() {
    let err = result(vec![placed()], cancel(Actor::Customer(customer("c2")))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(
        result(vec![placed()], cancel(owner())),
        Ok(vec![cancelled()])
    );
}

#[test]
fn customers_may_not_move_their_order_through_the_kitchen() {
    let commands = [
        OrderCommand::AcceptOrder { actor: owner() },
        OrderCommand::StartPreparing { actor: owner() },
        OrderCommand::MarkReady { actor: owner() },
        OrderCommand::RecordPaymentCaptured {
            payment_id: ExternalRef::parse("pay_1").unwrap(),
            amount: Money::from_cents(1275),
            actor: owner(),
        },
    ];
    for command in commands {
        let err = result(history_until(OrderStatus::Accepted), command).unwrap_err();
        assert!(matches!(err, OrderError::NotPermitted { .. }), "{err:?}");
    }
}

#[test]
fn staff_act_on_their_own_store_only() {
    let other_staff = Actor::StoreStaff(store("s2"));
    test()
        .given(vec![placed()])
        .when(OrderCommand::AcceptOrder {
            actor: other_staff.clone(),
        })
        .then_expect_error(OrderError::NotPermitted {
            actor: other_staff,
            command: "AcceptOrder",
        });
    test()
        .given(vec![placed()])
        .when(OrderCommand::AcceptOrder { actor: staff() })
        .then_expect_events(vec![accepted()]);
}

#[test]
fn permission_is_checked_before_the_transition() {
    // An outsider learns nothing about the order's status from the error.
    let err = result(
        history_until(OrderStatus::Completed),
        cancel(Actor::Customer(customer("c2"))),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
}

#[test]
fn visibility_follows_ownership() {
    let mut order = Order::default();
    assert!(!order.visible_to(&Actor::Service));
    order.apply(placed());
    assert!(order.visible_to(&owner()));
    assert!(order.visible_to(&staff()));
    assert!(order.visible_to(&Actor::Service));
    assert!(!order.visible_to(&Actor::Customer(customer("c2"))));
    assert!(!order.visible_to(&Actor::StoreStaff(store("s2"))));
}

// --- state ---

#[test]
fn replay_builds_the_state_and_a_snapshot_round_trips() {
    let mut order = Order::default();
    for event in history_until(OrderStatus::Ready) {
        order.apply(event);
    }
    let state = order.state().unwrap();
    assert_eq!(state.status, OrderStatus::Ready);
    assert_eq!(state.total, Money::from_cents(1275));
    assert_eq!(
        state.payment,
        PaymentStatus::Captured {
            payment_id: ExternalRef::parse("pay_1").unwrap(),
            amount: Money::from_cents(1275),
        }
    );
    let json = serde_json::to_string(&order).unwrap();
    assert_eq!(serde_json::from_str::<Order>(&json).unwrap(), order);
}

#[test]
fn events_are_externally_tagged_with_their_type() {
    let json = serde_json::to_value(accepted()).unwrap();
    assert_eq!(json, serde_json::json!({ "OrderAccepted": {} }));
    assert_eq!(cqrs_es::DomainEvent::event_type(&placed()), "OrderPlaced");
    assert_eq!(cqrs_es::DomainEvent::event_version(&placed()), "1.1");
    assert_eq!(cqrs_es::DomainEvent::event_version(&accepted()), "1.0");
}

#[test]
fn the_payment_token_travels_with_the_placed_order() {
    let placed_event = result(vec![], usual_place(owner())).unwrap();
    assert!(matches!(
        &placed_event[..],
        [OrderEvent::OrderPlaced { payment_token: Some(token), .. }] if *token == card()
    ));
    let mut order = Order::default();
    order.apply(placed());
    assert_eq!(order.state().unwrap().payment_token, Some(card()));
}

#[test]
fn a_version_1_0_order_placed_without_a_payment_token_still_reads() {
    let mut payload = serde_json::to_value(placed()).unwrap();
    payload["OrderPlaced"]
        .as_object_mut()
        .unwrap()
        .remove("payment_token");
    let event: OrderEvent = serde_json::from_value(payload).unwrap();
    assert!(matches!(
        event,
        OrderEvent::OrderPlaced {
            payment_token: None,
            ..
        }
    ));
    assert_eq!(cqrs_es::DomainEvent::event_version(&event), "1.1");
}

fn refund(cents: i64) -> OrderCommand {
    OrderCommand::RecordPaymentRefunded {
        refund_id: ExternalRef::parse("refund_1").unwrap(),
        amount: Money::from_cents(cents),
        actor: Actor::Service,
    }
}

fn cancelled_with(refund_due: bool) -> OrderEvent {
    OrderEvent::OrderCancelled {
        reason: reason("courier never came"),
        refund_due,
        stock_reserved: true,
    }
}

#[test]
fn a_captured_payment_of_a_cancelled_order_is_refunded_once_in_full() {
    let paid_then_cancelled = vec![placed(), accepted(), captured(), cancelled_with(true)];
    test()
        .given(paid_then_cancelled.clone())
        .when(refund(1275))
        .then_expect_events(vec![OrderEvent::PaymentRefunded {
            refund_id: ExternalRef::parse("refund_1").unwrap(),
            amount: Money::from_cents(1275),
        }]);
    test()
        .given(paid_then_cancelled.clone())
        .when(refund(1000))
        .then_expect_error(OrderError::RefundAmountMismatch {
            captured: Money::from_cents(1275),
            refunded: Money::from_cents(1000),
        });
    let mut refunded = paid_then_cancelled;
    refunded.push(OrderEvent::PaymentRefunded {
        refund_id: ExternalRef::parse("refund_1").unwrap(),
        amount: Money::from_cents(1275),
    });
    test()
        .given(refunded)
        .when(refund(1275))
        .then_expect_error(OrderError::PaymentAlreadyRefunded);
}

#[test]
fn only_an_ended_order_with_a_captured_payment_is_refunded() {
    test()
        .given(vec![placed(), accepted(), cancelled_with(false)])
        .when(refund(1275))
        .then_expect_error(OrderError::NothingToRefund);
    test()
        .given(history_until(OrderStatus::Ready))
        .when(refund(1275))
        .then_expect_error(OrderError::IllegalTransition {
            from: OrderStatus::Ready,
            command: "RecordPaymentRefunded",
        });
}

/// A catalogue whose price of every item goes up a cent each time it is asked for the menu, as
/// if the menu changed between any two calls.
struct ChangingMenu(std::sync::atomic::AtomicI64);

#[async_trait::async_trait]
impl MenuCatalog for ChangingMenu {
    async fn current_menu(&self) -> Result<Arc<dyn PriceList>, CatalogUnavailable> {
        let price = Money::from_cents(self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let items = crate::menu::sample_menu()
            .iter()
            .map(|item| MenuItemView {
                price,
                ..item.view()
            })
            .collect::<Vec<_>>();
        FixedMenu::new(items).current_menu().await
    }
}

#[test]
fn every_line_of_an_order_is_priced_from_one_menu() {
    let services = OrderServices::new(Arc::new(ChangingMenu(100.into())));
    let lines = vec![
        line("LATTE-12", 1, &[]),
        line("CROISSANT", 1, &[]),
        line("LATTE-12", 2, &[]),
    ];
    let events = TestFramework::<Order>::with(services)
        .given_no_previous_events()
        .when(place(lines, owner()))
        .inspect_result()
        .unwrap();
    let [OrderEvent::OrderPlaced { lines, total, .. }] = events.as_slice() else {
        panic!("expected one OrderPlaced, got {events:?}");
    };
    assert!(
        lines
            .iter()
            .all(|line| line.unit_price == Money::from_cents(100)),
        "{lines:?}"
    );
    assert_eq!(*total, Money::from_cents(400));
}

fn folded(events: Vec<OrderEvent>) -> Order {
    let mut order = Order::default();
    for event in events {
        order.apply(event);
    }
    order
}

#[test]
fn an_order_has_ended_once_completed_or_refused_with_nothing_left_to_refund() {
    for status in [
        OrderStatus::Placed,
        OrderStatus::Accepted,
        OrderStatus::Preparing,
        OrderStatus::Ready,
    ] {
        assert!(!folded(history_until(status)).has_ended(), "{status}");
    }
    assert!(folded(history_until(OrderStatus::Completed)).has_ended());
    assert!(folded(vec![placed(), cancelled()]).has_ended());
    // Cancelled after the capture: the refund is still to come.
    let mut refund_due = vec![placed(), accepted(), captured(), cancelled()];
    assert!(!folded(refund_due.clone()).has_ended());
    refund_due.push(OrderEvent::PaymentRefunded {
        refund_id: ExternalRef::parse("refund_1").unwrap(),
        amount: Money::from_cents(1275),
    });
    assert!(folded(refund_due).has_ended());
    assert!(!Order::default().has_ended(), "an order never placed");
}
