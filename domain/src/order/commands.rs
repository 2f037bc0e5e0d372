use serde::{Deserialize, Serialize};

use super::RejectionReason;
use crate::values::{Actor, CustomerId, Customisation, ExternalRef, Money, Note, OrderId};
use crate::values::{PaymentToken, Quantity, Reason, Sku, StoreId};

/// One line as the client asks for it: no price, the server prices it from the menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineRequest {
    /// The item.
    pub sku: Sku,
    /// How many.
    pub quantity: Quantity,
    /// At most [`OrderLineRequest::MAX_CUSTOMISATIONS`], e.g. "oat milk", "extra shot".
    pub customisations: Vec<Customisation>,
}

impl OrderLineRequest {
    /// The most customisations one line may carry.
    pub const MAX_CUSTOMISATIONS: usize = 10;
}

/// What can be asked of an order. Every command names its [`Actor`]; the aggregate decides
/// whether that actor may act on this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderCommand {
    /// Places a new order, priced by the server.
    PlaceOrder {
        /// The new order's id, which is also its aggregate id.
        order_id: OrderId,
        /// The store that will make it.
        store_id: StoreId,
        /// Who it is for.
        customer_id: CustomerId,
        /// 1 to [`super::Order::MAX_LINES`] lines.
        lines: Vec<OrderLineRequest>,
        /// The customer's note, possibly empty.
        note: Note,
        /// How the order is to be paid; `None` when the store takes payment itself (a store
        /// manager then records it with `RecordPaymentCaptured`).
        payment_token: Option<PaymentToken>,
        /// Who places it: the customer themselves, staff of the store, or a service.
        actor: Actor,
    },
    /// The store has reserved stock for the order.
    AcceptOrder {
        /// Who sends the command.
        actor: Actor,
    },
    /// The order cannot be fulfilled.
    RejectOrder {
        /// Why.
        reason: RejectionReason,
        /// Who sends the command.
        actor: Actor,
    },
    /// The payment gateway captured the payment.
    RecordPaymentCaptured {
        /// The gateway's payment id.
        payment_id: ExternalRef,
        /// What was captured; must equal the order total.
        amount: Money,
        /// Who sends the command.
        actor: Actor,
    },
    /// The payment gateway declined the payment; the order is rejected.
    RecordPaymentDeclined {
        /// The gateway's explanation.
        reason: Reason,
        /// Who sends the command.
        actor: Actor,
    },
    /// The payment gateway gave the captured payment of a cancelled or rejected order back.
    RecordPaymentRefunded {
        /// The gateway's refund id.
        refund_id: ExternalRef,
        /// What was refunded; must equal what was captured.
        amount: Money,
        /// Who sends the command.
        actor: Actor,
    },
    /// The kitchen starts making the order.
    StartPreparing {
        /// Who sends the command.
        actor: Actor,
    },
    /// The order is ready for pickup or hand-off.
    MarkReady {
        /// Who sends the command.
        actor: Actor,
    },
    /// The order was handed over.
    CompleteOrder {
        /// Who sends the command.
        actor: Actor,
    },
    /// The order is called off before preparation starts.
    CancelOrder {
        /// Why.
        reason: Reason,
        /// Who sends the command.
        actor: Actor,
    },
}

impl OrderCommand {
    /// The command's name, as used in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            OrderCommand::PlaceOrder { .. } => "PlaceOrder",
            OrderCommand::AcceptOrder { .. } => "AcceptOrder",
            OrderCommand::RejectOrder { .. } => "RejectOrder",
            OrderCommand::RecordPaymentCaptured { .. } => "RecordPaymentCaptured",
            OrderCommand::RecordPaymentDeclined { .. } => "RecordPaymentDeclined",
            OrderCommand::RecordPaymentRefunded { .. } => "RecordPaymentRefunded",
            OrderCommand::StartPreparing { .. } => "StartPreparing",
            OrderCommand::MarkReady { .. } => "MarkReady",
            OrderCommand::CompleteOrder { .. } => "CompleteOrder",
            OrderCommand::CancelOrder { .. } => "CancelOrder",
        }
    }

    /// Who sends the command.
    pub fn actor(&self) -> &Actor {
        match self {
            OrderCommand::PlaceOrder { actor, .. }
            | OrderCommand::AcceptOrder { actor }
            | OrderCommand::RejectOrder { actor, .. }
            | OrderCommand::RecordPaymentCaptured { actor, .. }
            | OrderCommand::RecordPaymentDeclined { actor, .. }
            | OrderCommand::RecordPaymentRefunded { actor, .. }
            | OrderCommand::StartPreparing { actor }
            | OrderCommand::MarkReady { actor }
            | OrderCommand::CompleteOrder { actor }
            | OrderCommand::CancelOrder { actor, .. } => actor,
        }
    }
}
