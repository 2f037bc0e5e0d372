//! Terse constructors for test fixtures; every literal here is known to be valid.
#![allow(clippy::unwrap_used)]

use crate::values::{CustomerId, OrderId, Quantity, Reason, Sku, StoreId};

pub fn sku(value: &str) -> Sku {
    Sku::parse(value).unwrap()
}

pub fn qty(value: u32) -> Quantity {
    Quantity::new(value).unwrap()
}

pub fn store(value: &str) -> StoreId {
    StoreId::parse(value).unwrap()
}

pub fn customer(value: &str) -> CustomerId {
    CustomerId::parse(value).unwrap()
}

pub fn reason(value: &str) -> Reason {
    Reason::parse(value).unwrap()
}

/// A distinct, readable order id per small number.
pub fn order_id(n: u128) -> OrderId {
    OrderId::from(uuid::Uuid::from_u128(n))
}
