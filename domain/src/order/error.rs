use super::{CatalogUnavailable, OrderStatus};
use crate::error::ErrorReason;
use crate::values::{Actor, Money, OrderId, Sku};

/// Why an order refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// A command other than `PlaceOrder` addressed an order that was never placed.
    #[error("no such order")]
    NotFound,
    /// `PlaceOrder` addressed an order that exists already.
    #[error("order {order_id} already exists")]
    AlreadyExists {
        /// The order.
        order_id: OrderId,
    },
    /// The actor may not send this command for this order.
    #[error("{actor} may not {command} this order")]
    NotPermitted {
        /// Who tried.
        actor: Actor,
        /// What they tried.
        command: &'static str,
    },
    /// An order needs at least one line.
    #[error("an order needs at least one line")]
    EmptyOrder,
    /// An order has more lines than [`super::Order::MAX_LINES`].
    #[error("an order may have at most {max} lines, got {count}")]
    TooManyLines {
        /// Lines asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A line has more customisations than allowed.
    #[error("a line may have at most {max} customisations, the line for {sku} has {count}")]
    TooManyCustomisations {
        /// The line's item.
        sku: Sku,
        /// Customisations asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A line names an item that is not on the menu.
    #[error("{sku} is not on the menu")]
    UnknownSku {
        /// The item.
        sku: Sku,
    },
    /// A line names an item that is on the menu but off sale.
    #[error("{sku} is not available at the moment")]
    ItemUnavailable {
        /// The item.
        sku: Sku,
    },
    /// The menu could not be read, so the order could not be priced.
    #[error("the menu is unavailable, try again later: {0}")]
    MenuUnavailable(CatalogUnavailable),
    /// The command is not allowed in the order's current status.
    #[error("{command} is not allowed for an order that is {from}")]
    IllegalTransition {
        /// The order's status.
        from: OrderStatus,
        /// The refused command.
        command: &'static str,
    },
    /// A payment was already captured for this order.
    #[error("the payment for this order was already captured")]
    PaymentAlreadyCaptured,
    /// The captured amount differs from the order total.
    #[error("the captured amount {captured} does not match the order total {total}")]
    PaymentAmountMismatch {
        /// The order total.
        total: Money,
        /// The amount reported as captured.
        captured: Money,
    },
    /// Preparation needs a captured payment.
    #[error("the order cannot be prepared before its payment is captured")]
    PaymentNotCaptured,
    /// Only a captured payment can be refunded.
    #[error("the order has no captured payment to refund")]
    NothingToRefund,
    /// The payment was refunded already.
    #[error("the payment for this order was already refunded")]
    PaymentAlreadyRefunded,
    /// A refund gives back exactly what was captured.
    #[error("the refunded amount {refunded} does not match the captured amount {captured}")]
    RefundAmountMismatch {
        /// What was captured.
        captured: Money,
        /// The amount reported as refunded.
        refunded: Money,
    },
}

impl OrderError {
    /// Why, as the stable code the API sends.
    pub fn reason(&self) -> ErrorReason {
        match self {
            OrderError::NotFound => ErrorReason::OrderNotFound,
            OrderError::AlreadyExists { .. } => ErrorReason::OrderAlreadyExists,
            OrderError::NotPermitted { .. } => ErrorReason::NotPermitted,
            OrderError::EmptyOrder => ErrorReason::EmptyOrder,
            OrderError::TooManyLines { .. } => ErrorReason::TooManyLines,
            OrderError::TooManyCustomisations { .. } => ErrorReason::TooManyCustomisations,
            OrderError::UnknownSku { .. } => ErrorReason::UnknownSku,
            OrderError::ItemUnavailable { .. } => ErrorReason::ItemUnavailable,
            OrderError::MenuUnavailable(_) => ErrorReason::MenuUnavailable,
            OrderError::IllegalTransition { .. } => ErrorReason::IllegalTransition,
            OrderError::PaymentAlreadyCaptured => ErrorReason::PaymentAlreadyCaptured,
            OrderError::PaymentAmountMismatch { .. } => ErrorReason::PaymentAmountMismatch,
            OrderError::PaymentNotCaptured => ErrorReason::PaymentNotCaptured,
            OrderError::NothingToRefund => ErrorReason::NothingToRefund,
            OrderError::PaymentAlreadyRefunded => ErrorReason::PaymentAlreadyRefunded,
            OrderError::RefundAmountMismatch { .. } => ErrorReason::RefundAmountMismatch,
        }
    }
}
