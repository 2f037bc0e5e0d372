#![allow(clippy::unwrap_used)]

use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;

use super::*;
use crate::error::ErrorKind;
use crate::test_support::{order_id, qty, reason, sku, store};

fn test() -> TestFramework<StoreInventory> {
    TestFramework::with(())
}

fn result(
    given: Vec<InventoryEvent>,
    command: InventoryCommand,
) -> Result<Vec<InventoryEvent>, InventoryError> {
    test().given(given).when(command).inspect_result()
}

/// LATTE-12: 10 on hand, warning below 5.
fn latte_stocked() -> InventoryEvent {
    InventoryEvent::StockSet {
        store_id: store("s1"),
        sku: sku("LATTE-12"),
        on_hand: 10,
        low_stock_threshold: 5,
    }
}

fn croissant_stocked(on_hand: u32) -> InventoryEvent {
    InventoryEvent::StockSet {
        store_id: store("s1"),
        sku: sku("CROISSANT"),
        on_hand,
        low_stock_threshold: 0,
    }
}

fn line(code: &str, quantity: u32) -> StockLine {
    StockLine {
        sku: sku(code),
        quantity: qty(quantity),
    }
}

fn reserve(order: u128, lines: Vec<StockLine>) -> InventoryCommand {
    InventoryCommand::ReserveStock {
        order_id: order_id(order),
        lines,
    }
}

fn reserved(order: u128, lines: Vec<StockLine>) -> InventoryEvent {
    InventoryEvent::StockReserved {
        order_id: order_id(order),
        lines,
    }
}

/// LATTE-12 crossing its threshold of 5 with no reorder open: the warning and reorder `number`.
fn raised(number: u64, available: u32, suggested_quantity: u32) -> [InventoryEvent; 2] {
    [warned(available), reorder(number, suggested_quantity)]
}

fn warned(available: u32) -> InventoryEvent {
    InventoryEvent::LowStockWarningRaised {
        sku: sku("LATTE-12"),
        available,
        threshold: 5,
    }
}

fn reorder(number: u64, suggested_quantity: u32) -> InventoryEvent {
    InventoryEvent::ReorderRequested {
        sku: sku("LATTE-12"),
        suggested_quantity,
        reorder_number: number,
    }
}

fn adjust(delta: i32) -> InventoryCommand {
    InventoryCommand::AdjustStock {
        sku: sku("LATTE-12"),
        delta,
        reason: reason("dropped a tray"),
    }
}

// --- setting and correcting stock ---

#[test]
fn the_first_set_stock_creates_the_inventory() {
    test()
        .given_no_previous_events()
        .when(InventoryCommand::SetStock {
            store_id: store("s1"),
            sku: sku("LATTE-12"),
            on_hand: 10,
            low_stock_threshold: 5,
        })
        .then_expect_events(vec![latte_stocked()]);
}

#[test]
fn stock_set_below_its_threshold_warns_at_once() {
    let mut expected = vec![InventoryEvent::StockSet {
        store_id: store("s1"),
        sku: sku("LATTE-12"),
        on_hand: 2,
        low_stock_threshold: 5,
    }];
    expected.extend(raised(1, 2, 8));
    test()
        .given_no_previous_events()
        .when(InventoryCommand::SetStock {
            store_id: store("s1"),
            sku: sku("LATTE-12"),
            on_hand: 2,
            low_stock_threshold: 5,
        })
        .then_expect_events(expected);
}

#[test]
fn set_stock_belongs_to_one_store() {
    test()
        .given(vec![latte_stocked()])
        .when(InventoryCommand::SetStock {
            store_id: store("s2"),
            sku: sku("LATTE-12"),
            on_hand: 1,
            low_stock_threshold: 0,
        })
        .then_expect_error(InventoryError::WrongStore {
            expected: store("s1"),
            got: store("s2"),
        });
}

#[test]
fn set_stock_cannot_go_below_what_is_reserved() {
    test()
        .given(vec![
            latte_stocked(),
            reserved(1, vec![line("LATTE-12", 4)]),
        ])
        .when(InventoryCommand::SetStock {
            store_id: store("s1"),
            sku: sku("LATTE-12"),
            on_hand: 3,
            low_stock_threshold: 5,
        })
        .then_expect_error(InventoryError::BelowReserved {
            sku: sku("LATTE-12"),
            on_hand: 3,
            reserved: 4,
        });
}

#[test]
fn commands_need_an_inventory_and_a_stocked_sku() {
    let restock = |code: &str| InventoryCommand::Restock {
        sku: sku(code),
        quantity: 5,
    };
    assert_eq!(
        result(vec![], restock("LATTE-12")),
        Err(InventoryError::NotFound)
    );
    let err = result(vec![latte_stocked()], restock("ESPRESSO")).unwrap_err();
    assert_eq!(
        err,
        InventoryError::UnknownSku {
            store_id: store("s1"),
            sku: sku("ESPRESSO")
        }
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn restocking_adds_stock_and_must_add_something_countable() {
    let restock = |quantity| InventoryCommand::Restock {
        sku: sku("LATTE-12"),
        quantity,
    };
    test()
        .given(vec![latte_stocked()])
        .when(restock(20))
        .then_expect_events(vec![InventoryEvent::StockRestocked {
            sku: sku("LATTE-12"),
            quantity: 20,
        }]);
    test()
        .given(vec![latte_stocked()])
        .when(restock(0))
        .then_expect_error(InventoryError::NoStockChange {
            sku: sku("LATTE-12"),
        });
    test()
        .given(vec![latte_stocked()])
        .when(restock(u32::MAX))
        .then_expect_error(InventoryError::StockOverflow {
            sku: sku("LATTE-12"),
        });
}

#[test]
fn an_adjustment_never_makes_stock_negative() {
    test()
        .given(vec![latte_stocked()])
        .when(adjust(-11))
        .then_expect_error(InventoryError::NegativeStock {
            sku: sku("LATTE-12"),
            on_hand: 10,
            delta: -11,
        });
    test()
        .given(vec![latte_stocked()])
        .when(adjust(0))
        .then_expect_error(InventoryError::NoStockChange {
            sku: sku("LATTE-12"),
        });
}

#[test]
fn an_adjustment_never_takes_reserved_stock() {
    test()
        .given(vec![
            latte_stocked(),
            reserved(1, vec![line("LATTE-12", 8)]),
        ])
        .when(adjust(-3))
        .then_expect_error(InventoryError::BelowReserved {
            sku: sku("LATTE-12"),
            on_hand: 7,
            reserved: 8,
        });
}

#[test]
fn an_adjustment_may_cross_the_threshold_either_way() {
    let mut expected = vec![InventoryEvent::StockAdjusted {
        sku: sku("LATTE-12"),
        delta: -6,
        reason: reason("dropped a tray"),
    }];
    expected.extend(raised(1, 4, 6));
    test()
        .given(vec![latte_stocked()])
        .when(adjust(-6))
        .then_expect_events(expected);
}

// --- reservations ---

#[test]
fn reserves_every_line() {
    let lines = vec![line("LATTE-12", 2), line("CROISSANT", 1)];
    test()
        .given(vec![latte_stocked(), croissant_stocked(3)])
        .when(reserve(1, lines.clone()))
        .then_expect_events(vec![reserved(1, lines)]);
}

#[test]
fn reserves_all_lines_or_none() {
    let err = result(
        vec![latte_stocked(), croissant_stocked(2)],
        reserve(1, vec![line("LATTE-12", 2), line("CROISSANT", 3)]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "not enough stock of CROISSANT at store s1: 2 available, 3 requested"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn lines_of_the_same_sku_are_reserved_together() {
    test()
        .given(vec![
            latte_stocked(),
            reserved(1, vec![line("LATTE-12", 7)]),
        ])
        .when(reserve(2, vec![line("LATTE-12", 2), line("LATTE-12", 2)]))
        .then_expect_error(InventoryError::InsufficientStock {
            store_id: store("s1"),
            sku: sku("LATTE-12"),
            available: 3,
            requested: 4,
        });
}

#[test]
fn a_reservation_names_stocked_skus() {
    test()
        .given(vec![latte_stocked()])
        .when(reserve(1, vec![line("LATTE-12", 1), line("TEAPOT", 1)]))
        .then_expect_error(InventoryError::UnknownSku {
            store_id: store("s1"),
            sku: sku("TEAPOT"),
        });
}

#[test]
fn an_order_reserves_once() {
    test()
        .given(vec![
            latte_stocked(),
            reserved(1, vec![line("LATTE-12", 1)]),
        ])
        .when(reserve(1, vec![line("LATTE-12", 1)]))
        .then_expect_error(InventoryError::AlreadyReserved {
            order_id: order_id(1),
        });
}

fn released(order: u128, lines: Vec<StockLine>) -> InventoryEvent {
    InventoryEvent::ReservationReleased {
        order_id: order_id(order),
        lines,
        reason: reason("order cancelled"),
    }
}

fn committed(order: u128, lines: Vec<StockLine>) -> InventoryEvent {
    InventoryEvent::ReservationCommitted {
        order_id: order_id(order),
        lines,
    }
}

#[test]
fn an_order_cannot_reserve_again_after_its_reservation_was_released() {
    let err = result(
        vec![
            latte_stocked(),
            reserved(1, vec![line("LATTE-12", 2)]),
            released(1, vec![line("LATTE-12", 2)]),
        ],
        reserve(1, vec![line("LATTE-12", 2)]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        InventoryError::ReservationClosed {
            order_id: order_id(1)
        }
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn an_order_cannot_reserve_again_after_its_reservation_was_committed() {
    test()
        .given(vec![
            latte_stocked(),
            reserved(1, vec![line("LATTE-12", 2)]),
            committed(1, vec![line("LATTE-12", 2)]),
        ])
        .when(reserve(1, vec![line("LATTE-12", 1)]))
        .then_expect_error(InventoryError::ReservationClosed {
            order_id: order_id(1),
        });
}

#[test]
fn other_orders_still_reserve_after_one_reservation_closed() {
    test()
        .given(vec![
            latte_stocked(),
            reserved(1, vec![line("LATTE-12", 2)]),
            released(1, vec![line("LATTE-12", 2)]),
        ])
        .when(reserve(2, vec![line("LATTE-12", 2)]))
        .then_expect_events(vec![reserved(2, vec![line("LATTE-12", 2)])]);
}

#[test]
fn closed_reservations_are_remembered_for_the_most_recent_orders_only() {
    // The memory is bounded (it travels in every snapshot of the store): after
    // RECENTLY_CLOSED_RESERVATIONS later closures, the oldest order is forgotten.
    let limit = StoreInventory::RECENTLY_CLOSED_RESERVATIONS as u128;
    let mut history = vec![latte_stocked()];
    for order in 1..=limit + 1 {
        history.push(reserved(order, vec![line("LATTE-12", 1)]));
        history.push(released(order, vec![line("LATTE-12", 1)]));
    }
    assert_eq!(
        result(history.clone(), reserve(2, vec![line("LATTE-12", 1)])),
        Err(InventoryError::ReservationClosed {
            order_id: order_id(2)
        })
    );
    assert_eq!(
        result(history, reserve(1, vec![line("LATTE-12", 1)])),
        Ok(vec![reserved(1, vec![line("LATTE-12", 1)])]),
        "the oldest closure fell out of the window"
    );
}

#[test]
fn a_reservation_has_at_most_an_orders_lines() {
    let lines = |count: usize| vec![line("LATTE-12", 1); count];
    let mut history = vec![latte_stocked()];
    history.push(InventoryEvent::StockRestocked {
        sku: sku("LATTE-12"),
        quantity: 90,
    });
    let err = result(history.clone(), reserve(1, lines(51))).unwrap_err();
    assert_eq!(err, InventoryError::TooManyLines { count: 51, max: 50 });
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(result(history, reserve(1, lines(50))).is_ok());
}

#[test]
fn a_reservation_is_not_empty() {
    test()
        .given(vec![latte_stocked()])
        .when(reserve(1, vec![]))
        .then_expect_error(InventoryError::EmptyReservation);
}

#[test]
fn the_last_item_can_be_reserved_but_not_one_more() {
    let all = vec![latte_stocked(), reserved(1, vec![line("LATTE-12", 10)])];
    let mut inventory = StoreInventory::default();
    all.iter().for_each(|e| inventory.apply(e.clone()));
    assert_eq!(inventory.stock(&sku("LATTE-12")).unwrap().available(), 0);
    let err = result(all, reserve(2, vec![line("LATTE-12", 1)])).unwrap_err();
    assert!(matches!(
        err,
        InventoryError::InsufficientStock { available: 0, .. }
    ));
}

#[test]
fn releasing_gives_the_stock_back() {
    test()
        .given(vec![
            latte_stocked(),
            reserved(1, vec![line("LATTE-12", 2)]),
        ])
        .when(InventoryCommand::ReleaseReservation {
            order_id: order_id(1),
            reason: reason("order cancelled"),
        })
        .then_expect_events(vec![InventoryEvent::ReservationReleased {
            order_id: order_id(1),
            lines: vec![line("LATTE-12", 2)],
            reason: reason("order cancelled"),
        }]);
}

#[test]
fn releasing_or_committing_needs_a_reservation() {
    let err = result(
        vec![latte_stocked()],
        InventoryCommand::CommitReservation {
            order_id: order_id(9),
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        InventoryError::NoSuchReservation {
            order_id: order_id(9)
        }
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A reservation is settled once: released, it cannot be released again.
    test()
        .given(vec![
            latte_stocked(),
            reserved(1, vec![line("LATTE-12", 2)]),
            InventoryEvent::ReservationReleased {
                order_id: order_id(1),
                lines: vec![line("LATTE-12", 2)],
                reason: reason("order cancelled"),
            },
        ])
        .when(InventoryCommand::ReleaseReservation {
            order_id: order_id(1),
            reason: reason("order cancelled"),
        })
        .then_expect_error(InventoryError::NoSuchReservation {
            order_id: order_id(1),
        });
}

#[test]
fn committing_consumes_the_reserved_items() {
    let history = vec![latte_stocked(), reserved(1, vec![line("LATTE-12", 3)])];
    let committed = InventoryEvent::ReservationCommitted {
        order_id: order_id(1),
        lines: vec![line("LATTE-12", 3)],
    };
    test()
        .given(history.clone())
        .when(InventoryCommand::CommitReservation {
            order_id: order_id(1),
        })
        .then_expect_events(vec![committed.clone()]);

    let mut inventory = StoreInventory::default();
    history
        .into_iter()
        .chain([committed])
        .for_each(|e| inventory.apply(e));
    let level = inventory.stock(&sku("LATTE-12")).unwrap();
    assert_eq!(
        (level.on_hand, level.reserved, level.available()),
        (7, 0, 7)
    );
    assert_eq!(inventory.reservation(&order_id(1)), None);
}

// --- low stock ---

#[test]
fn low_stock_is_raised_once_per_crossing() {
    let mut crossing = vec![reserved(1, vec![line("LATTE-12", 6)])];
    crossing.extend(raised(1, 4, 6));
    test()
        .given(vec![latte_stocked()])
        .when(reserve(1, vec![line("LATTE-12", 6)]))
        .then_expect_events(crossing.clone());

    // Already below the threshold: no second warning.
    let mut history = vec![latte_stocked()];
    history.extend(crossing);
    test()
        .given(history)
        .when(reserve(2, vec![line("LATTE-12", 1)]))
        .then_expect_events(vec![reserved(2, vec![line("LATTE-12", 1)])]);
}

#[test]
fn low_stock_clears_at_the_threshold_and_re_arms_but_never_orders_twice_while_a_reorder_is_open() {
    let mut history = vec![latte_stocked(), reserved(1, vec![line("LATTE-12", 6)])];
    history.extend(raised(1, 4, 6));
    let released = InventoryEvent::ReservationReleased {
        order_id: order_id(1),
        lines: vec![line("LATTE-12", 6)],
        reason: reason("order rejected"),
    };
    let cleared = InventoryEvent::LowStockWarningCleared {
        sku: sku("LATTE-12"),
        available: 10,
    };
    test()
        .given(history.clone())
        .when(InventoryCommand::ReleaseReservation {
            order_id: order_id(1),
            reason: reason("order rejected"),
        })
        .then_expect_events(vec![released.clone(), cleared.clone()]);

    history.extend([released, cleared]);
    // Reorder 1 is still open: the second crossing warns, and orders nothing.
    test()
        .given(history)
        .when(reserve(2, vec![line("LATTE-12", 8)]))
        .then_expect_events(vec![reserved(2, vec![line("LATTE-12", 8)]), warned(2)]);
}

#[test]
fn a_restock_to_exactly_the_threshold_clears_the_warning() {
    let mut history = vec![latte_stocked(), reserved(1, vec![line("LATTE-12", 7)])];
    history.extend(raised(1, 3, 7));
    test()
        .given(history)
        .when(InventoryCommand::Restock {
            sku: sku("LATTE-12"),
            quantity: 2,
        })
        .then_expect_events(vec![
            InventoryEvent::StockRestocked {
                sku: sku("LATTE-12"),
                quantity: 2,
            },
            InventoryEvent::LowStockWarningCleared {
                sku: sku("LATTE-12"),
                available: 5,
            },
        ]);
}

#[test]
fn a_zero_threshold_never_warns() {
    test()
        .given(vec![croissant_stocked(1)])
        .when(reserve(1, vec![line("CROISSANT", 1)]))
        .then_expect_events(vec![reserved(1, vec![line("CROISSANT", 1)])]);
}

// --- reorders and deliveries ---

/// LATTE-12 with 4 available (6 reserved by order 1), warned and reorder 1 open for 6.
fn reorder_open() -> Vec<InventoryEvent> {
    let mut history = vec![latte_stocked(), reserved(1, vec![line("LATTE-12", 6)])];
    history.extend(raised(1, 4, 6));
    history
}

fn receive(number: u64, code: &str, quantity: u32) -> InventoryCommand {
    InventoryCommand::ReceiveDelivery {
        reorder_number: number,
        sku: sku(code),
        quantity,
    }
}

fn delivered(number: u64, quantity: u32) -> InventoryEvent {
    InventoryEvent::DeliveryReceived {
        reorder_number: number,
        sku: sku("LATTE-12"),
        quantity,
    }
}

#[test]
fn a_low_stock_crossing_opens_a_numbered_reorder() {
    let mut inventory = StoreInventory::default();
    reorder_open().into_iter().for_each(|e| inventory.apply(e));
    assert_eq!(
        inventory.open_reorder(&sku("LATTE-12")),
        Some(&OpenReorder {
            reorder_number: 1,
            suggested_quantity: 6
        })
    );
    assert_eq!(inventory.open_reorders().count(), 1);
}

#[test]
fn a_delivery_restocks_closes_its_reorder_and_clears_the_warning() {
    let mut history = reorder_open();
    test()
        .given(history.clone())
        .when(receive(1, "LATTE-12", 6))
        .then_expect_events(vec![
            delivered(1, 6),
            InventoryEvent::LowStockWarningCleared {
                sku: sku("LATTE-12"),
                available: 10,
            },
        ]);

    // Closed: the next crossing opens reorder 2.
    history.extend([
        delivered(1, 6),
        InventoryEvent::LowStockWarningCleared {
            sku: sku("LATTE-12"),
            available: 10,
        },
    ]);
    let mut crossing = vec![reserved(2, vec![line("LATTE-12", 7)])];
    crossing.extend(raised(2, 3, 7));
    test()
        .given(history)
        .when(reserve(2, vec![line("LATTE-12", 7)]))
        .then_expect_events(crossing);
}

#[test]
fn a_delivery_that_leaves_stock_low_requests_the_next_reorder() {
    let mut history = vec![latte_stocked(), reserved(1, vec![line("LATTE-12", 8)])];
    history.extend(raised(1, 2, 8));
    test()
        .given(history)
        .when(receive(1, "LATTE-12", 1))
        .then_expect_events(vec![delivered(1, 1), reorder(2, 7)]);
}

#[test]
fn a_repeated_low_stock_event_never_orders_twice() {
    // Stock falls further, is corrected up and down across the threshold: reorder 1 stays the
    // only one until its delivery.
    let mut history = reorder_open();
    history.push(reserved(2, vec![line("LATTE-12", 1)]));
    test()
        .given(history.clone())
        .when(adjust(3))
        .then_expect_events(vec![
            InventoryEvent::StockAdjusted {
                sku: sku("LATTE-12"),
                delta: 3,
                reason: reason("dropped a tray"),
            },
            InventoryEvent::LowStockWarningCleared {
                sku: sku("LATTE-12"),
                available: 6,
            },
        ]);
    history.extend([
        InventoryEvent::StockAdjusted {
            sku: sku("LATTE-12"),
            delta: 3,
            reason: reason("dropped a tray"),
        },
        InventoryEvent::LowStockWarningCleared {
            sku: sku("LATTE-12"),
            available: 6,
        },
    ]);
    test()
        .given(history)
        .when(adjust(-3))
        .then_expect_events(vec![
            InventoryEvent::StockAdjusted {
                sku: sku("LATTE-12"),
                delta: -3,
                reason: reason("dropped a tray"),
            },
            warned(3),
        ]);
}

#[test]
fn a_delivery_names_a_reorder_the_store_requested() {
    for number in [0, 2] {
        assert_eq!(
            result(reorder_open(), receive(number, "LATTE-12", 6)),
            Err(InventoryError::NoSuchReorder {
                store_id: store("s1"),
                reorder_number: number,
            }),
            "reorder {number}"
        );
    }
    assert_eq!(
        result(vec![], receive(1, "LATTE-12", 6)),
        Err(InventoryError::NotFound)
    );
}

#[test]
fn a_reorder_is_delivered_once() {
    let mut history = reorder_open();
    history.extend([
        delivered(1, 6),
        InventoryEvent::LowStockWarningCleared {
            sku: sku("LATTE-12"),
            available: 10,
        },
    ]);
    let refused = result(history, receive(1, "LATTE-12", 6));
    assert_eq!(
        refused,
        Err(InventoryError::ReorderAlreadyDelivered { reorder_number: 1 })
    );
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn a_delivery_is_of_its_reorders_sku_and_adds_something_countable() {
    let mut history = reorder_open();
    history.push(croissant_stocked(4));
    assert_eq!(
        result(history.clone(), receive(1, "CROISSANT", 6)),
        Err(InventoryError::DeliveryOfWrongSku {
            reorder_number: 1,
            expected: sku("LATTE-12"),
            got: sku("CROISSANT"),
        })
    );
    assert_eq!(
        result(history.clone(), receive(1, "LATTE-12", 0)),
        Err(InventoryError::NoStockChange {
            sku: sku("LATTE-12")
        })
    );
    history.push(InventoryEvent::StockRestocked {
        sku: sku("LATTE-12"),
        quantity: u32::MAX - 10,
    });
    assert_eq!(
        result(history, receive(1, "LATTE-12", 1)),
        Err(InventoryError::StockOverflow {
            sku: sku("LATTE-12")
        })
    );
}

#[test]
fn a_version_1_0_reorder_suggestion_reads_as_unnumbered_and_opens_nothing() {
    let suggestion: InventoryEvent = serde_json::from_value(serde_json::json!({
        "ReorderRequested": {"sku": "LATTE-12", "suggested_quantity": 6}
    }))
    .unwrap();
    assert_eq!(suggestion, reorder(0, 6));
    let history = vec![
        latte_stocked(),
        reserved(1, vec![line("LATTE-12", 6)]),
        warned(4),
        suggestion,
    ];
    let mut inventory = StoreInventory::default();
    history.iter().cloned().for_each(|e| inventory.apply(e));
    assert_eq!(inventory.open_reorders().count(), 0);
    // Still low with nothing open: the next change of the SKU opens reorder 1.
    test()
        .given(history)
        .when(reserve(2, vec![line("LATTE-12", 1)]))
        .then_expect_events(vec![reserved(2, vec![line("LATTE-12", 1)]), reorder(1, 7)]);
}

// --- state ---

#[test]
fn a_snapshot_round_trips_through_json() {
    let mut inventory = StoreInventory::default();
    let mut history = vec![
        latte_stocked(),
        croissant_stocked(4),
        reserved(1, vec![line("LATTE-12", 6), line("CROISSANT", 1)]),
        reserved(2, vec![line("CROISSANT", 1)]),
        released(2, vec![line("CROISSANT", 1)]),
    ];
    history.extend(raised(1, 4, 6));
    history.into_iter().for_each(|e| inventory.apply(e));
    assert_eq!(inventory.store_id(), Some(&store("s1")));
    assert!(inventory.stock(&sku("LATTE-12")).unwrap().warning_active);
    let json = serde_json::to_string(&inventory).unwrap();
    let restored = serde_json::from_str::<StoreInventory>(&json).unwrap();
    assert_eq!(restored, inventory);
    assert!(
        restored.reservation_closed(&order_id(2)),
        "the snapshot remembers closed reservations"
    );
    assert!(!restored.reservation_closed(&order_id(1)), "still open");
    assert_eq!(
        restored
            .open_reorder(&sku("LATTE-12"))
            .map(|r| r.reorder_number),
        Some(1),
        "the snapshot remembers open reorders"
    );
}
