//! The one table of request limits: how many repeated items each request may carry. Every
//! limit is checked right after authentication, before the request is fingerprinted or any of
//! its fields is parsed, so an oversized request costs a count, not a parse of each item. The
//! README's "Request limits" table lists the same rows (a test below keeps them in step).
//!
//! Everything else a request carries is bounded by its field's value object (`Sku::parse`,
//! `Note::parse`, `Quantity::new`, ...) and the whole message by `grpc.max_message_bytes`.

use std::borrow::Cow;

use domain::inventory::StoreInventory;
use domain::order::OrderLineRequest;
use domain::{Order, ValidationError};
use proto::v1 as pb;

use crate::error::ApiError;

/// The most items of one repeated field of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The RPC whose request carries the field.
    pub rpc: &'static str,
    /// The field, `lines[].customisations` for a field of every line.
    pub field: &'static str,
    /// The most items accepted.
    pub max: usize,
}

/// Lines of one order.
pub const PLACE_ORDER_LINES: Limit = Limit {
    rpc: "PlaceOrder",
    field: "lines",
    max: Order::MAX_LINES,
};

/// Customisations of one order line.
pub const PLACE_ORDER_CUSTOMISATIONS: Limit = Limit {
    rpc: "PlaceOrder",
    field: "lines[].customisations",
    max: OrderLineRequest::MAX_CUSTOMISATIONS,
};

/// Lines of one reservation: an order's lines, so the same cap.
pub const RESERVE_STOCK_LINES: Limit = Limit {
    rpc: "ReserveStock",
    field: "lines",
    max: StoreInventory::MAX_RESERVATION_LINES,
};

/// Every limit, in the README's order.
pub const ALL: [Limit; 3] = [
    PLACE_ORDER_LINES,
    PLACE_ORDER_CUSTOMISATIONS,
    RESERVE_STOCK_LINES,
];

impl Limit {
    /// Refuses `count` items at `field` (the concrete field, e.g. `lines[3].customisations`)
    /// when it exceeds the limit.
    fn check(
        &self,
        field: impl Into<Cow<'static, str>>,
        count: usize,
    ) -> Result<(), ValidationError> {
        if count > self.max {
            return Err(ValidationError::new(
                field,
                format!("at most {} allowed, got {count}", self.max),
            ));
        }
        Ok(())
    }
}

/// A request with limits on its repeated fields.
pub(crate) trait Limited {
    /// Every limit the request exceeds, as field violations; empty when within all of them.
    fn limit_violations(&self) -> Vec<ValidationError>;

    /// INVALID_ARGUMENT naming every field over its limit.
    fn check_limits(&self) -> Result<(), ApiError> {
        let violations = self.limit_violations();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(violations))
        }
    }
}

impl Limited for pb::PlaceOrderRequest {
    fn limit_violations(&self) -> Vec<ValidationError> {
        if let Err(violation) = PLACE_ORDER_LINES.check("lines", self.lines.len()) {
            // The lines are not looked into: there may be any number of them.
            return vec![violation];
        }
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(index, line)| {
                PLACE_ORDER_CUSTOMISATIONS
                    .check(
                        format!("lines[{index}].customisations"),
                        line.customisations.len(),
                    )
                    .err()
            })
            .collect()
    }
}

impl Limited for pb::ReserveStockRequest {
    fn limit_violations(&self) -> Vec<ValidationError> {
        RESERVE_STOCK_LINES
            .check("lines", self.lines.len())
            .err()
            .into_iter()
            .collect()
    }
}

/// Command requests with no repeated field: nothing to count.
macro_rules! unlimited {
    ($($request:ty),+ $(,)?) => {
        $(impl Limited for $request {
            fn limit_violations(&self) -> Vec<ValidationError> {
                Vec::new()
            }
        })+
    };
}

unlimited!(
    pb::OrderTransitionRequest,
    pb::RejectOrderRequest,
    pb::RecordPaymentCapturedRequest,
    pb::RecordPaymentDeclinedRequest,
    pb::RecordPaymentRefundedRequest,
    pb::CancelOrderRequest,
    pb::SetStockRequest,
    pb::RestockRequest,
    pb::AdjustStockRequest,
    pb::ReleaseReservationRequest,
    pb::CommitReservationRequest,
    pb::EarnPointsRequest,
    pb::RedeemPointsRequest,
    pb::AddMenuItemRequest,
    pb::ChangePriceRequest,
    pb::SetAvailabilityRequest,
    pb::ReceiveDeliveryRequest,
);

#[cfg(test)]
mod tests {
    use super::ALL;

    #[test]
    fn the_readme_lists_every_limit() {
        let readme = include_str!("../../../README.md");
        for limit in ALL {
            let row = format!("| `{}` | `{}` | {} |", limit.rpc, limit.field, limit.max);
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }
}
