//! The error vocabulary shared by every aggregate.
//!
//! Each aggregate has its own error enum; every variant names its [`ErrorReason`], a stable code
//! that callers act on (the API sends it in a `google.rpc.ErrorInfo` detail), and each reason
//! has one [`ErrorKind`], which the gRPC layer maps to a status code in one place.

use std::borrow::Cow;

/// What kind of failure an error is, independent of the aggregate that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule regardless of current state.
    InvalidArgument,
    /// The request is well formed but the current state does not allow it.
    FailedPrecondition,
    /// The aggregate (or an entity inside it) does not exist.
    NotFound,
    /// The actor may not do this to this aggregate.
    PermissionDenied,
    /// A dependency needed to decide is down; retrying later may succeed.
    Unavailable,
}

/// A value that failed to parse into a value object, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The request field at fault, e.g. `sku` or, after [`ValidationError::at`], `lines[2].sku`.
    pub field: Cow<'static, str>,
    /// Why the value was refused, as a sentence a client developer can act on.
    pub message: String,
}

impl ValidationError {
    /// An error for `field` explained by `message`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error reported at another field path: a value object knows only its own name,
    /// the caller knows where in the request it sat.
    #[must_use]
    pub fn at(self, field: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field: field.into(),
            ..self
        }
    }

    /// Always [`ErrorKind::InvalidArgument`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// Declares [`ErrorReason`] from one table: variant, wire code, kind.
macro_rules! error_reasons {
    ($($(#[$doc:meta])* $variant:ident = $code:literal => $kind:ident,)+) => {
        /// Why a command or query was refused, as a stable machine-readable code: the API puts
        /// [`ErrorReason::code`] in the `reason` of a `google.rpc.ErrorInfo` detail (domain
        /// `orderpipe.v1`) on every refusal, so callers act on the code, never on the message,
        /// whose wording may change. A code, once shipped, keeps its spelling and its kind.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorReason {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [ErrorReason] = &[$(ErrorReason::$variant,)+];

            /// The code on the wire (`UPPER_SNAKE_CASE`).
            pub const fn code(self) -> &'static str {
                match self {
                    $(ErrorReason::$variant => $code,)+
                }
            }

            /// The kind of failure, hence the gRPC status code, every refusal for this reason has.
            pub const fn kind(self) -> ErrorKind {
                match self {
                    $(ErrorReason::$variant => ErrorKind::$kind,)+
                }
            }

            /// The reason `code` names, or `None` for a code this build does not know (a newer
            /// server's): the caller treats it as a refusal without a reason it can act on.
            pub fn from_code(code: &str) -> Option<Self> {
                match code {
                    $($code => Some(ErrorReason::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_reasons! {
    /// No such order.
    OrderNotFound = "ORDER_NOT_FOUND" => NotFound,
    /// `PlaceOrder` for an order id that exists already.
    OrderAlreadyExists = "ORDER_ALREADY_EXISTS" => FailedPrecondition,
    /// The actor may not send this command for this order.
    NotPermitted = "NOT_PERMITTED" => PermissionDenied,
    /// An order without lines.
    EmptyOrder = "EMPTY_ORDER" => InvalidArgument,
    /// An order or a reservation with more lines than allowed.
    TooManyLines = "TOO_MANY_LINES" => InvalidArgument,
    /// A line with more customisations than allowed.
    TooManyCustomisations = "TOO_MANY_CUSTOMISATIONS" => InvalidArgument,
    /// An order names an item that is not on the menu.
    UnknownSku = "UNKNOWN_SKU" => InvalidArgument,
    /// An order names an item that is off sale.
    ItemUnavailable = "ITEM_UNAVAILABLE" => FailedPrecondition,
    /// The menu could not be read to price the order; retry later.
    MenuUnavailable = "MENU_UNAVAILABLE" => Unavailable,
    /// The order's status does not allow the command (e.g. cancelling an order in preparation).
    IllegalTransition = "ILLEGAL_TRANSITION" => FailedPrecondition,
    /// The order's payment was captured already.
    PaymentAlreadyCaptured = "PAYMENT_ALREADY_CAPTURED" => FailedPrecondition,
    /// The captured amount is not the order total.
    PaymentAmountMismatch = "PAYMENT_AMOUNT_MISMATCH" => FailedPrecondition,
    /// Preparation needs a captured payment.
    PaymentNotCaptured = "PAYMENT_NOT_CAPTURED" => FailedPrecondition,
    /// A refund of an order without a captured payment.
    NothingToRefund = "NOTHING_TO_REFUND" => FailedPrecondition,
    /// The order's payment was refunded already.
    PaymentAlreadyRefunded = "PAYMENT_ALREADY_REFUNDED" => FailedPrecondition,
    /// The refunded amount is not the captured amount.
    RefundAmountMismatch = "REFUND_AMOUNT_MISMATCH" => FailedPrecondition,
    /// The store has no inventory.
    InventoryNotFound = "INVENTORY_NOT_FOUND" => NotFound,
    /// A command named a store other than the inventory's.
    WrongStore = "WRONG_STORE" => InvalidArgument,
    /// The item is not stocked at this store.
    SkuNotStocked = "SKU_NOT_STOCKED" => FailedPrecondition,
    /// Not enough available stock for the reservation; nothing was reserved.
    OutOfStock = "OUT_OF_STOCK" => FailedPrecondition,
    /// The order already holds a reservation at this store: the stock is held for it.
    AlreadyReserved = "ALREADY_RESERVED" => FailedPrecondition,
    /// The order's reservation was released or committed already; an order reserves once.
    ReservationClosed = "RESERVATION_CLOSED" => FailedPrecondition,
    /// The order holds no reservation at this store (never made, released or committed).
    NoSuchReservation = "NO_SUCH_RESERVATION" => NotFound,
    /// A reservation without lines.
    EmptyReservation = "EMPTY_RESERVATION" => InvalidArgument,
    /// A restock or adjustment that changes nothing.
    NoStockChange = "NO_STOCK_CHANGE" => InvalidArgument,
    /// On-hand stock would exceed what can be counted.
    StockOverflow = "STOCK_OVERFLOW" => InvalidArgument,
    /// An adjustment would leave negative stock.
    NegativeStock = "NEGATIVE_STOCK" => FailedPrecondition,
    /// On-hand stock would fall below what orders have reserved.
    BelowReserved = "BELOW_RESERVED" => FailedPrecondition,
    /// The store never requested the reorder a delivery names.
    NoSuchReorder = "NO_SUCH_REORDER" => NotFound,
    /// The delivery of that reorder was already received: the reorder is closed.
    ReorderAlreadyDelivered = "REORDER_ALREADY_DELIVERED" => FailedPrecondition,
    /// A delivery names another SKU than its reorder's.
    DeliveryOfWrongSku = "DELIVERY_OF_WRONG_SKU" => FailedPrecondition,
    /// The customer has no loyalty account yet.
    LoyaltyAccountNotFound = "LOYALTY_ACCOUNT_NOT_FOUND" => NotFound,
    /// A command named a customer other than the account's.
    WrongCustomer = "WRONG_CUSTOMER" => InvalidArgument,
    /// Points earned on a negative amount.
    NegativeAmount = "NEGATIVE_AMOUNT" => InvalidArgument,
    /// The order has earned its points already.
    PointsAlreadyEarned = "POINTS_ALREADY_EARNED" => FailedPrecondition,
    /// A redemption of zero points.
    NothingToRedeem = "NOTHING_TO_REDEEM" => InvalidArgument,
    /// The balance does not cover the redemption.
    InsufficientPoints = "INSUFFICIENT_POINTS" => FailedPrecondition,
    /// The item is on the menu already.
    SkuAlreadyOnMenu = "SKU_ALREADY_ON_MENU" => FailedPrecondition,
    /// A menu command names an item that is not on the menu.
    MenuItemNotFound = "MENU_ITEM_NOT_FOUND" => NotFound,
    /// A menu price out of range.
    InvalidPrice = "INVALID_PRICE" => InvalidArgument,
}

/// An aggregate's error: a business rule's refusal that knows its [`ErrorReason`].
pub trait DomainError: std::error::Error + Send + Sync + 'static {
    /// Why, as a stable code.
    fn reason(&self) -> ErrorReason;

    /// How the API should report it: its reason's kind.
    fn kind(&self) -> ErrorKind {
        self.reason().kind()
    }
}

/// Implements [`DomainError`] and an inherent `kind()` for error enums that name their reason
/// with an inherent `reason()`.
macro_rules! domain_errors {
    ($($error:ty),+ $(,)?) => {
        $(
            impl $error {
                /// How the API should classify this error: its reason's kind.
                pub fn kind(&self) -> ErrorKind {
                    self.reason().kind()
                }
            }

            impl DomainError for $error {
                fn reason(&self) -> ErrorReason {
                    <$error>::reason(self)
                }
            }
        )+
    };
}

domain_errors!(
    crate::order::OrderError,
    crate::inventory::InventoryError,
    crate::loyalty::LoyaltyError,
    crate::menu::MenuError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_upper_snake_case_code_that_reads_back() {
        let mut seen = std::collections::HashSet::new();
        for reason in ErrorReason::ALL {
            let code = reason.code();
            assert!(seen.insert(code), "{code} names two reasons");
            assert!(
                !code.is_empty()
                    && code
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "{code}"
            );
            assert_eq!(ErrorReason::from_code(code), Some(*reason));
        }
        assert_eq!(ErrorReason::from_code("A_CODE_FROM_A_NEWER_SERVER"), None);
        assert_eq!(ErrorReason::from_code("out_of_stock"), None);
    }
}
