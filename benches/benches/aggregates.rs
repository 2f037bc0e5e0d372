//! Command handling and event application per aggregate (criterion): `handle` of a typical
//! command on a typical state, and `apply` of the events it yields.
//!
//! `cargo bench -p benches --bench aggregates`. In cqrs-es 0.5 `handle` applies its events
//! through the event sink as it decides, so the `handle` figure includes their application; the
//! `apply` figure is the application alone. `handle` is async; a current-thread runtime's
//! `block_on` drives it, whose overhead is part of every `handle` figure alike.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use benches::order_flow::{completed_order, new_order_id, ORDER_TOTAL_CENTS};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use domain::inventory::{InventoryCommand, StockLine, StoreInventory};
use domain::loyalty::{LoyaltyAccount, LoyaltyCommand};
use domain::menu::{Category, MenuCommand};
use domain::{CustomerId, FixedMenu, ItemName, Menu, Money, Order, OrderServices};
use domain::{Quantity, Sku, StoreId};
use tokio::runtime::Runtime;

/// Handles `command` on `aggregate` (which the sink updates) and returns the events.
fn handle<A: Aggregate>(
    rt: &Runtime,
    aggregate: &mut A,
    command: A::Command,
    services: &A::Services,
) -> Vec<A::Event> {
    rt.block_on(async {
        let sink = EventSink::default();
        aggregate.handle(command, services, &sink).await.unwrap();
        sink.collect().await
    })
}

/// The state `given` commands leave.
fn state_after<A: Aggregate>(rt: &Runtime, given: &[A::Command], services: &A::Services) -> A
where
    A::Command: Clone,
{
    let mut aggregate = A::default();
    for command in given {
        handle(rt, &mut aggregate, command.clone(), services);
    }
    aggregate
}

/// Benches `handle(command)` on the state after `given`, and `apply` of its events on that state.
fn bench_aggregate<A: Aggregate>(
    c: &mut Criterion,
    name: &str,
    given: &[A::Command],
    command: A::Command,
    services: &A::Services,
) where
    A::Command: Clone,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut state: A = state_after(&rt, given, services);
    let events = handle(&rt, &mut state, command.clone(), services);
    let mut group = c.benchmark_group(name);
    group.bench_function("handle", |b| {
        b.iter_batched(
            || (state_after::<A>(&rt, given, services), command.clone()),
            |(mut aggregate, command)| handle(&rt, &mut aggregate, command, services),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("apply", |b| {
        b.iter_batched(
            || (state_after::<A>(&rt, given, services), events.clone()),
            |(mut aggregate, events)| {
                for event in events {
                    aggregate.apply(event);
                }
                aggregate
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn order(c: &mut Criterion) {
    let services = OrderServices::new(Arc::new(FixedMenu::sample()));
    let flow = completed_order(new_order_id(), "s1", "c1");
    bench_aggregate::<Order>(c, "order/PlaceOrder", &[], flow[0].clone(), &services);
    bench_aggregate::<Order>(
        c,
        "order/RecordPaymentCaptured",
        &flow[..2],
        flow[2].clone(),
        &services,
    );
}

fn inventory(c: &mut Criterion) {
    let store = StoreId::parse("s1").unwrap();
    let stock = |sku: &str| InventoryCommand::SetStock {
        store_id: store.clone(),
        sku: Sku::parse(sku).unwrap(),
        on_hand: 1_000,
        low_stock_threshold: 5,
    };
    let line = |sku: &str, quantity| StockLine {
        sku: Sku::parse(sku).unwrap(),
        quantity: Quantity::new(quantity).unwrap(),
    };
    bench_aggregate::<StoreInventory>(
        c,
        "inventory/ReserveStock",
        &[stock("LATTE-12"), stock("CROISSANT")],
        InventoryCommand::ReserveStock {
            order_id: new_order_id(),
            lines: vec![line("LATTE-12", 2), line("CROISSANT", 1)],
        },
        &(),
    );
}

fn loyalty(c: &mut Criterion) {
    let earn = || LoyaltyCommand::EarnPoints {
        customer_id: CustomerId::parse("c1").unwrap(),
        order_id: new_order_id(),
        amount: Money::from_cents(ORDER_TOTAL_CENTS),
    };
    bench_aggregate::<LoyaltyAccount>(c, "loyalty/EarnPoints", &[earn(), earn()], earn(), &());
}

fn menu(c: &mut Criterion) {
    bench_aggregate::<Menu>(
        c,
        "menu/AddMenuItem",
        &[],
        MenuCommand::AddMenuItem {
            sku: Sku::parse("LATTE-12").unwrap(),
            name: ItemName::parse("Latte 12oz").unwrap(),
            price: Money::from_cents(450),
            category: Category::Drink,
        },
        &(),
    );
}

criterion_group!(aggregates, order, inventory, loyalty, menu);
criterion_main!(aggregates);
