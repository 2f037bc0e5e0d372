use std::fmt;

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::values::{CustomerId, Customisation, ExternalRef, ItemName, Money, Note, OrderId};
use crate::values::{PaymentToken, Quantity, Reason, Sku, StoreId};

/// One order line as priced by the server when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    /// The item.
    pub sku: Sku,
    /// The item's name when ordered.
    pub name: ItemName,
    /// How many.
    pub quantity: Quantity,
    /// The customer's customisations.
    pub customisations: Vec<Customisation>,
    /// The menu price when ordered.
    pub unit_price: Money,
    /// `unit_price * quantity`.
    pub line_total: Money,
}

/// Why an order was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectionReason {
    /// The store could not reserve stock for every line.
    OutOfStock,
    /// The payment was declined.
    PaymentDeclined,
    /// Anything else, explained.
    Other(Reason),
}

impl fmt::Display for RejectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectionReason::OutOfStock => f.write_str("out of stock"),
            RejectionReason::PaymentDeclined => f.write_str("payment declined"),
            RejectionReason::Other(reason) => reason.fmt(f),
        }
    }
}

/// What happened to an order.
///
/// Events carry no timestamps: the event store stamps each one, which keeps `handle`
/// deterministic. Variants without data are empty structs so every event serializes as
/// `{"Type": {...}}` and can gain fields in a later version. Shipped events are never edited:
/// a change of shape is a new `event_version` plus an upcaster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The order was placed and priced.
    OrderPlaced {
        /// The order.
        order_id: OrderId,
        /// The store making it.
        store_id: StoreId,
        /// Who it is for.
        customer_id: CustomerId,
        /// The priced lines.
        lines: Vec<PricedLine>,
        /// The customer's note.
        note: Note,
        /// The sum of the line totals.
        total: Money,
        /// How the order is to be paid (version 1.1). Version 1.0 events have no such field;
        /// they read as `None`, which is exactly what an upcaster from 1.0 would write, so the
        /// default is the upcaster.
        #[serde(default)]
        payment_token: Option<PaymentToken>,
    },
    /// Stock was reserved and the store accepted the order.
    OrderAccepted {},
    /// The order was rejected.
    OrderRejected {
        /// Why.
        reason: RejectionReason,
        /// A captured payment must be refunded.
        refund_due: bool,
        /// A stock reservation must be released.
        stock_reserved: bool,
    },
    /// The payment was captured.
    PaymentCaptured {
        /// The gateway's payment id.
        payment_id: ExternalRef,
        /// The amount captured, equal to the order total.
        amount: Money,
    },
    /// The payment was declined; an `OrderRejected` follows in the same commit.
    PaymentDeclined {
        /// The gateway's explanation.
        reason: Reason,
    },
    /// The captured payment was given back (the order was cancelled or rejected after capture).
    PaymentRefunded {
        /// The gateway's refund id.
        refund_id: ExternalRef,
        /// The amount refunded, equal to the amount captured.
        amount: Money,
    },
    /// The kitchen started making the order.
    PreparationStarted {},
    /// The order is ready.
    OrderMarkedReady {},
    /// The order was handed over.
    OrderCompleted {},
    /// The order was cancelled before preparation.
    OrderCancelled {
        /// Why.
        reason: Reason,
        /// A captured payment must be refunded.
        refund_due: bool,
        /// A stock reservation must be released.
        stock_reserved: bool,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            OrderEvent::OrderPlaced { .. } => "OrderPlaced",
            OrderEvent::OrderAccepted {} => "OrderAccepted",
            OrderEvent::OrderRejected { .. } => "OrderRejected",
            OrderEvent::PaymentCaptured { .. } => "PaymentCaptured",
            OrderEvent::PaymentDeclined { .. } => "PaymentDeclined",
            OrderEvent::PaymentRefunded { .. } => "PaymentRefunded",
            OrderEvent::PreparationStarted {} => "PreparationStarted",
            OrderEvent::OrderMarkedReady {} => "OrderMarkedReady",
            OrderEvent::OrderCompleted {} => "OrderCompleted",
            OrderEvent::OrderCancelled { .. } => "OrderCancelled",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            OrderEvent::OrderPlaced { .. } => "1.1",
            _ => "1.0",
        }
        .to_owned()
    }
}
