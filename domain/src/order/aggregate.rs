use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::RejectionReason;
use super::{OrderCommand, OrderError, OrderEvent, OrderLineRequest, OrderServices, PricedLine};
use crate::values::{Actor, CustomerId, ExternalRef, Money, Note, OrderId, PaymentToken, StoreId};

/// Where an order is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Placed and priced, waiting for stock.
    Placed,
    /// Stock is reserved.
    Accepted,
    /// The kitchen is making it.
    Preparing,
    /// Ready for pickup.
    Ready,
    /// Handed over (final).
    Completed,
    /// Refused: no stock, payment declined... (final).
    Rejected,
    /// Called off before preparation (final).
    Cancelled,
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What is known about an order's payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// No outcome from the payment gateway yet.
    Pending,
    /// The total was captured.
    Captured {
        /// The gateway's payment id.
        payment_id: ExternalRef,
        /// The amount captured.
        amount: Money,
    },
    /// The gateway declined the payment.
    Declined,
    /// The captured payment was given back.
    Refunded {
        /// The gateway's refund id.
        refund_id: ExternalRef,
        /// The amount refunded.
        amount: Money,
    },
}

/// Everything known about a placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// The order's id.
    pub id: OrderId,
    /// The store making it.
    pub store_id: StoreId,
    /// Who it is for.
    pub customer_id: CustomerId,
    /// The priced lines.
    pub lines: Vec<PricedLine>,
    /// The customer's note.
    pub note: Note,
    /// The sum of the line totals.
    pub total: Money,
    /// Where it is in its lifecycle.
    pub status: OrderStatus,
    /// Its payment.
    pub payment: PaymentStatus,
    /// How it is to be paid, if the customer gave a payment method.
    #[serde(default)]
    pub payment_token: Option<PaymentToken>,
}

/// The order aggregate; its id is the order id. Empty until `OrderPlaced`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    state: Option<OrderState>,
}

impl Order {
    /// The schema version of this aggregate's snapshots: bump it whenever the serialised state or
    /// `apply` changes, so the event store replays snapshots an older build wrote instead of
    /// trusting them.
    pub const SNAPSHOT_VERSION: u32 = 1;

    /// The most lines one order may have.
    pub const MAX_LINES: usize = 50;

    /// The order, if it was placed.
    pub fn state(&self) -> Option<&OrderState> {
        self.state.as_ref()
    }

    /// Whether nothing more will happen to the order: completed, or rejected or cancelled with
    /// no captured payment left to refund. A watcher's stream ends here.
    pub fn has_ended(&self) -> bool {
        self.state.as_ref().is_some_and(|state| match state.status {
            OrderStatus::Completed => true,
            OrderStatus::Rejected | OrderStatus::Cancelled => {
                !matches!(state.payment, PaymentStatus::Captured { .. })
            }
            _ => false,
        })
    }

    /// Whether `actor` may see this order: its customer, staff of its store, or a service.
    pub fn visible_to(&self, actor: &Actor) -> bool {
        self.state
            .as_ref()
            .is_some_and(|state| concerns(actor, &state.store_id, &state.customer_id))
    }

    fn set_status(&mut self, status: OrderStatus) {
        if let Some(state) = &mut self.state {
            state.status = status;
        }
    }

    fn set_payment(&mut self, payment: PaymentStatus) {
        if let Some(state) = &mut self.state {
            state.payment = payment;
        }
    }
}

/// Whether an order of `customer_id` at `store_id` is any business of `actor`.
fn concerns(actor: &Actor, store_id: &StoreId, customer_id: &CustomerId) -> bool {
    match actor {
        Actor::Service => true,
        Actor::StoreStaff(store) => store == store_id,
        Actor::Customer(customer) => customer == customer_id,
    }
}

/// Decides `PlaceOrder` for an order that does not exist yet, pricing it from the menu.
async fn place(command: OrderCommand, services: &OrderServices) -> Result<OrderEvent, OrderError> {
    let OrderCommand::PlaceOrder {
        order_id,
        store_id,
        customer_id,
        lines,
        note,
        payment_token,
        actor,
    } = command
    else {
        return Err(OrderError::NotFound);
    };
    if !concerns(&actor, &store_id, &customer_id) {
        return Err(OrderError::NotPermitted {
            actor,
            command: "PlaceOrder",
        });
    }
    if lines.is_empty() {
        return Err(OrderError::EmptyOrder);
    }
    if lines.len() > Order::MAX_LINES {
        return Err(OrderError::TooManyLines {
            count: lines.len(),
            max: Order::MAX_LINES,
        });
    }
    if let Some(line) = lines
        .iter()
        .find(|line| line.customisations.len() > OrderLineRequest::MAX_CUSTOMISATIONS)
    {
        return Err(OrderError::TooManyCustomisations {
            sku: line.sku.clone(),
            count: line.customisations.len(),
            max: OrderLineRequest::MAX_CUSTOMISATIONS,
        });
    }
    // One menu for the whole order: a price change lands between orders, never inside one.
    let menu = services
        .menu
        .current_menu()
        .await
        .map_err(OrderError::MenuUnavailable)?;
    let mut priced = Vec::with_capacity(lines.len());
    for line in lines {
        let item = menu.item(&line.sku).ok_or_else(|| OrderError::UnknownSku {
            sku: line.sku.clone(),
        })?;
        if !item.available {
            return Err(OrderError::ItemUnavailable { sku: line.sku });
        }
        priced.push(PricedLine {
            sku: line.sku,
            name: item.name,
            quantity: line.quantity,
            customisations: line.customisations,
            unit_price: item.price,
            line_total: item.price * line.quantity,
        });
    }
    let total = priced.iter().map(|line| line.line_total).sum();
    Ok(OrderEvent::OrderPlaced {
        order_id,
        store_id,
        customer_id,
        lines: priced,
        note,
        total,
        payment_token,
    })
}

impl OrderState {
    /// Decides every command on an existing order; pure and synchronous.
    fn decide(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        use OrderCommand as C;
        use OrderStatus::{Accepted, Cancelled, Placed, Preparing, Ready, Rejected};

        if let C::PlaceOrder { .. } = command {
            return Err(OrderError::AlreadyExists { order_id: self.id });
        }
        self.authorize(&command)?;
        let name = command.name();
        let captured = matches!(self.payment, PaymentStatus::Captured { .. });
        let events = match (command, self.status) {
            (C::AcceptOrder { .. }, Placed) => vec![OrderEvent::OrderAccepted {}],
            (C::RejectOrder { reason, .. }, Placed | Accepted) => vec![self.rejected(reason)],
            (
                C::RecordPaymentCaptured { .. } | C::RecordPaymentDeclined { .. },
                Placed | Accepted,
            ) if captured => return Err(OrderError::PaymentAlreadyCaptured),
            (C::RecordPaymentCaptured { amount, .. }, Placed | Accepted)
                if amount != self.total =>
            {
                return Err(OrderError::PaymentAmountMismatch {
                    total: self.total,
                    captured: amount,
                })
            }
            (
                C::RecordPaymentCaptured {
                    payment_id, amount, ..
                },
                Placed | Accepted,
            ) => vec![OrderEvent::PaymentCaptured { payment_id, amount }],
            (C::RecordPaymentDeclined { reason, .. }, Placed | Accepted) => vec![
                OrderEvent::PaymentDeclined { reason },
                self.rejected(RejectionReason::PaymentDeclined),
            ],
            (
                C::RecordPaymentRefunded {
                    refund_id, amount, ..
                },
                Rejected | Cancelled,
            ) => vec![self.refunded(refund_id, amount)?],
            (C::StartPreparing { .. }, Accepted) if !captured => {
                return Err(OrderError::PaymentNotCaptured)
            }
            (C::StartPreparing { .. }, Accepted) => vec![OrderEvent::PreparationStarted {}],
            (C::MarkReady { .. }, Preparing) => vec![OrderEvent::OrderMarkedReady {}],
            (C::CompleteOrder { .. }, Ready) => vec![OrderEvent::OrderCompleted {}],
            (C::CancelOrder { reason, .. }, Placed | Accepted) => {
                vec![OrderEvent::OrderCancelled {
                    reason,
                    refund_due: captured,
                    stock_reserved: self.status == Accepted,
                }]
            }
            (_, from) => {
                return Err(OrderError::IllegalTransition {
                    from,
                    command: name,
                })
            }
        };
        Ok(events)
    }

    /// Customers may only cancel their own orders (placing is decided in [`place`]); staff may
    /// do anything to their store's orders; services anything.
    fn authorize(&self, command: &OrderCommand) -> Result<(), OrderError> {
        let actor = command.actor();
        let customer_may_send = matches!(command, OrderCommand::CancelOrder { .. });
        let permitted = concerns(actor, &self.store_id, &self.customer_id)
            && (customer_may_send || !matches!(actor, Actor::Customer(_)));
        if permitted {
            Ok(())
        } else {
            Err(OrderError::NotPermitted {
                actor: actor.clone(),
                command: command.name(),
            })
        }
    }

    /// The refund of a captured payment, once and for what was captured.
    fn refunded(&self, refund_id: ExternalRef, amount: Money) -> Result<OrderEvent, OrderError> {
        match &self.payment {
            PaymentStatus::Captured {
                amount: captured, ..
            } if *captured != amount => Err(OrderError::RefundAmountMismatch {
                captured: *captured,
                refunded: amount,
            }),
            PaymentStatus::Captured { .. } => Ok(OrderEvent::PaymentRefunded { refund_id, amount }),
            PaymentStatus::Refunded { .. } => Err(OrderError::PaymentAlreadyRefunded),
            PaymentStatus::Pending | PaymentStatus::Declined => Err(OrderError::NothingToRefund),
        }
    }

    /// The rejection event, telling the saga what to undo.
    fn rejected(&self, reason: RejectionReason) -> OrderEvent {
        OrderEvent::OrderRejected {
            reason,
            refund_due: matches!(self.payment, PaymentStatus::Captured { .. }),
            stock_reserved: self.status == OrderStatus::Accepted,
        }
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = OrderServices;

    async fn handle(
        &mut self,
        command: OrderCommand,
        services: &OrderServices,
        sink: &EventSink<Self>,
    ) -> Result<(), OrderError> {
        let events = match &self.state {
            Some(state) => state.decide(command)?,
            None => vec![place(command, services).await?],
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: OrderEvent) {
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                store_id,
                customer_id,
                lines,
                note,
                total,
                payment_token,
            } => {
                self.state = Some(OrderState {
                    id: order_id,
                    store_id,
                    customer_id,
                    lines,
                    note,
                    total,
                    status: OrderStatus::Placed,
                    payment: PaymentStatus::Pending,
                    payment_token,
                });
            }
            OrderEvent::OrderAccepted {} => self.set_status(OrderStatus::Accepted),
            OrderEvent::OrderRejected { .. } => self.set_status(OrderStatus::Rejected),
            OrderEvent::PaymentCaptured { payment_id, amount } => {
                self.set_payment(PaymentStatus::Captured { payment_id, amount });
            }
            OrderEvent::PaymentDeclined { .. } => self.set_payment(PaymentStatus::Declined),
            OrderEvent::PaymentRefunded { refund_id, amount } => {
                self.set_payment(PaymentStatus::Refunded { refund_id, amount });
            }
            OrderEvent::PreparationStarted {} => self.set_status(OrderStatus::Preparing),
            OrderEvent::OrderMarkedReady {} => self.set_status(OrderStatus::Ready),
            OrderEvent::OrderCompleted {} => self.set_status(OrderStatus::Completed),
            OrderEvent::OrderCancelled { .. } => self.set_status(OrderStatus::Cancelled),
        }
    }
}
