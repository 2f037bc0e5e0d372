//! The order lifecycle every command-path benchmark runs, as domain commands: the same commands
//! for the cqrs-es + postgres-es baseline and for our event store, so they compare like for like.

use domain::order::OrderLineRequest;
use domain::{Actor, CustomerId, Customisation, ExternalRef, Money, Note, OrderCommand, OrderId};
use domain::{Quantity, Sku, StoreId};

/// Two oat-milk lattes at $4.50 and a croissant at $3.75 on [`domain::menu::sample_menu`].
pub const ORDER_TOTAL_CENTS: i64 = 2 * 450 + 375;

/// The SKUs and quantities of every benchmark order.
pub const ORDER_LINES: [(&str, u32); 2] = [("LATTE-12", 2), ("CROISSANT", 1)];

/// The commands that take a new order from placed to completed, in order: place, accept, record
/// the payment, start preparing, mark ready, complete. Each yields one event.
pub fn completed_order(order_id: OrderId, store: &str, customer: &str) -> Vec<OrderCommand> {
    let actor = Actor::Service;
    let parse = "benchmark constants are valid";
    let lines = ORDER_LINES
        .iter()
        .map(|&(sku, quantity)| OrderLineRequest {
            sku: Sku::parse(sku).expect(parse),
            quantity: Quantity::new(quantity).expect(parse),
            customisations: if sku == "LATTE-12" {
                vec![Customisation::parse("oat milk").expect(parse)]
            } else {
                vec![]
            },
        })
        .collect();
    vec![
        OrderCommand::PlaceOrder {
            order_id,
            store_id: StoreId::parse(store).expect(parse),
            customer_id: CustomerId::parse(customer).expect(parse),
            lines,
            note: Note::parse("no sugar").expect(parse),
            payment_token: None,
            actor: actor.clone(),
        },
        OrderCommand::AcceptOrder {
            actor: actor.clone(),
        },
        OrderCommand::RecordPaymentCaptured {
            payment_id: ExternalRef::parse("pay_bench").expect(parse),
            amount: Money::from_cents(ORDER_TOTAL_CENTS),
            actor: actor.clone(),
        },
        OrderCommand::StartPreparing {
            actor: actor.clone(),
        },
        OrderCommand::MarkReady {
            actor: actor.clone(),
        },
        OrderCommand::CompleteOrder { actor },
    ]
}

/// A fresh order id.
pub fn new_order_id() -> OrderId {
    OrderId::parse(&uuid::Uuid::new_v4().to_string()).expect("a v4 UUID is an order id")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use cqrs_es::event_sink::EventSink;
    use cqrs_es::Aggregate;
    use domain::{FixedMenu, Order, OrderServices};

    use super::*;

    #[tokio::test]
    async fn the_flow_completes_an_order_with_one_event_per_command() {
        let services = OrderServices::new(Arc::new(FixedMenu::sample()));
        let mut order = Order::default();
        for command in completed_order(new_order_id(), "s1", "c1") {
            let sink = EventSink::default();
            order.handle(command, &services, &sink).await.unwrap();
            assert_eq!(sink.collect().await.len(), 1);
        }
        assert_eq!(
            format!("{:?}", order.state().map(|s| s.status)),
            "Some(Completed)"
        );
    }
}
