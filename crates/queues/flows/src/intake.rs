//! Delivery-platform intake: external platforms drop orders on the intake queue as JSON
//! ([`IntakeOrder`], schema `docs/flows/intake-order.schema.json`, version 1); each is validated
//! and placed through the command API.
//!
//! Deduplication is by (platform, external order id): the order id is the UUIDv5 of that pair and
//! the idempotency key is `intake/<platform>/<external order id>`, so a duplicate message (or the
//! platform sending the same order twice) places one order. A message that can never be placed
//! (malformed JSON, an unknown schema version, invalid fields, an unknown SKU, the same external
//! id with different content) goes to the dead-letter queue with the reason; once corrected, the
//! operator re-drives it (`flows dlq redrive intake --body-file`).

use std::sync::Arc;

use async_trait::async_trait;
use domain::{
    CustomerId, Customisation, Note, PaymentToken, Quantity, Sku, StoreId, ValidationError,
};
use proto::v1 as pb;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::command_client::{Cause, CommandClient, CommandError};
use crate::queue::{Handled, Message, MessageHandler};

/// The schema version this build reads.
pub const INTAKE_VERSION: u32 = 1;

/// The UUIDv5 namespace of intake order ids (a fixed random UUID: ids never change).
pub const INTAKE_NAMESPACE: Uuid = Uuid::from_u128(0x5c7e_1f4a_9b2d_4e61_a3c8_0d9f_6b21_7e44);

/// An order as a delivery platform sends it (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeOrder {
    /// Must be [`INTAKE_VERSION`].
    pub schema_version: u32,
    /// The platform's name: 1 to 32 characters of `a-z 0-9 -` (e.g. `ubereats`).
    pub platform: String,
    /// The platform's own order id: 1 to 64 printable ASCII characters, no spaces.
    pub external_order_id: String,
    /// The store that makes it.
    pub store_id: String,
    /// The loyalty customer it is for.
    pub customer_id: String,
    /// 1 to 50 lines.
    pub lines: Vec<IntakeLine>,
    /// The customer's note.
    #[serde(default)]
    pub note: String,
    /// How it is paid.
    pub payment: IntakePayment,
}

/// One line of an intake order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeLine {
    /// The item.
    pub sku: String,
    /// 1 to 99.
    pub quantity: u32,
    /// e.g. "oat milk".
    #[serde(default)]
    pub customisations: Vec<String>,
}

/// How an intake order is paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakePayment {
    /// The payment gateway's token for the customer's card (a test card in the sandbox).
    pub payment_token: String,
}

impl IntakeOrder {
    /// Parses and validates a message body, listing every problem found.
    pub fn parse(body: &str) -> Result<Self, String> {
        let order: IntakeOrder = serde_json::from_str(body).map_err(|e| {
            format!("not a valid intake order (schema version {INTAKE_VERSION}): {e}")
        })?;
        if order.schema_version != INTAKE_VERSION {
            return Err(format!(
                "schema_version {} is not supported (this build reads {INTAKE_VERSION})",
                order.schema_version
            ));
        }
        let mut problems: Vec<String> = Vec::new();
        let mut check = |field: &str, result: Result<(), ValidationError>| {
            if let Err(error) = result {
                problems.push(format!("{field}: {}", error.message));
            }
        };
        let platform_ok = (1..=32).contains(&order.platform.len())
            && order
                .platform
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !platform_ok {
            check(
                "platform",
                Err(ValidationError::new(
                    "platform",
                    "must be 1 to 32 characters of a-z, 0-9 and '-'",
                )),
            );
        }
        let external_ok = (1..=64).contains(&order.external_order_id.len())
            && order
                .external_order_id
                .bytes()
                .all(|b| b.is_ascii_graphic());
        if !external_ok {
            check(
                "external_order_id",
                Err(ValidationError::new(
                    "external_order_id",
                    "must be 1 to 64 printable ASCII characters without spaces",
                )),
            );
        }
        check("store_id", StoreId::parse(&order.store_id).map(drop));
        check(
            "customer_id",
            CustomerId::parse(&order.customer_id).map(drop),
        );
        check("note", Note::parse(&order.note).map(drop));
        check(
            "payment.payment_token",
            PaymentToken::parse(&order.payment.payment_token).map(drop),
        );
        if order.lines.is_empty() || order.lines.len() > domain::Order::MAX_LINES {
            check(
                "lines",
                Err(ValidationError::new("lines", "must have 1 to 50 lines")),
            );
        }
        for (index, line) in order.lines.iter().enumerate() {
            check(
                &format!("lines[{index}].sku"),
                Sku::parse(&line.sku).map(drop),
            );
            check(
                &format!("lines[{index}].quantity"),
                Quantity::new(line.quantity).map(drop),
            );
            for (c, text) in line.customisations.iter().enumerate() {
                check(
                    &format!("lines[{index}].customisations[{c}]"),
                    Customisation::parse(text).map(drop),
                );
            }
        }
        if problems.is_empty() {
            Ok(order)
        } else {
            Err(format!("invalid intake order: {}", problems.join("; ")))
        }
    }

    /// The order id: UUIDv5 of `<platform>/<external order id>` in [`INTAKE_NAMESPACE`].
    pub fn order_id(&self) -> Uuid {
        let mut hasher = Sha1::new();
        hasher.update(INTAKE_NAMESPACE.as_bytes());
        hasher.update(format!("{}/{}", self.platform, self.external_order_id).as_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_sha1_bytes(bytes).into_uuid()
    }

    /// The PlaceOrder request: its idempotency key is the (platform, external id) pair.
    pub fn place_order_request(&self) -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            idempotency_key: format!("intake/{}/{}", self.platform, self.external_order_id),
            order_id: self.order_id().to_string(),
            store_id: self.store_id.clone(),
            customer_id: self.customer_id.clone(),
            lines: self
                .lines
                .iter()
                .map(|line| pb::OrderLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    customisations: line.customisations.clone(),
                })
                .collect(),
            note: self.note.clone(),
            payment_token: self.payment.payment_token.clone(),
        }
    }
}

/// Handles the intake queue.
pub struct IntakeHandler {
    commands: Arc<CommandClient>,
}

impl IntakeHandler {
    /// Places orders through `commands`.
    pub fn new(commands: Arc<CommandClient>) -> Self {
        Self { commands }
    }
}

#[async_trait]
impl MessageHandler for IntakeHandler {
    async fn handle(&self, message: &Message) -> Handled {
        let order = match IntakeOrder::parse(&message.body) {
            Ok(order) => order,
            Err(reason) => {
                metrics::counter!("orderpipe_flows_intake_total", "outcome" => "invalid")
                    .increment(1);
                return Handled::DeadLetter(reason);
            }
        };
        let request = order.place_order_request();
        let cause = Cause {
            correlation_id: request.order_id.clone(),
            causation_id: format!("intake:{}/{}", order.platform, order.external_order_id),
        };
        match self.commands.place_order(request, &cause).await {
            Ok(placed) => {
                let outcome = if placed.commit.is_some_and(|c| c.replayed) {
                    "duplicate"
                } else {
                    "placed"
                };
                metrics::counter!("orderpipe_flows_intake_total", "outcome" => outcome)
                    .increment(1);
                tracing::info!(platform = %order.platform, external_order_id = %order.external_order_id, order_id = %order.order_id(), outcome, "intake order");
                Handled::Done
            }
            Err(CommandError::Unavailable { .. }) => Handled::Retry,
            Err(error) => {
                metrics::counter!("orderpipe_flows_intake_total", "outcome" => "refused")
                    .increment(1);
                Handled::DeadLetter(format!("the order was not placed: {error}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1,
            "platform": "ubereats",
            "external_order_id": "UE-1001",
            "store_id": "s1",
            "customer_id": "c-1",
            "lines": [{"sku": "LATTE-12", "quantity": 2, "customisations": ["oat milk"]}],
            "note": "ring twice",
            "payment": {"payment_token": "4242424242424242"}
        })
    }

    #[test]
    fn a_valid_order_places_with_a_stable_id_and_key() {
        let order = IntakeOrder::parse(&valid().to_string()).unwrap();
        let request = order.place_order_request();
        assert_eq!(request.idempotency_key, "intake/ubereats/UE-1001");
        assert_eq!(order.order_id().get_version_num(), 5);
        assert_eq!(
            IntakeOrder::parse(&valid().to_string()).unwrap().order_id(),
            order.order_id()
        );
        let mut other = valid();
        other["external_order_id"] = "UE-1002".into();
        assert_ne!(
            IntakeOrder::parse(&other.to_string()).unwrap().order_id(),
            order.order_id()
        );
    }

    #[test]
    fn the_documented_example_is_valid() {
        let example = include_str!("../../../../docs/flows/intake-order.example.json");
        let order = IntakeOrder::parse(example).unwrap();
        assert_eq!(order.place_order_request().lines.len(), 2);
    }

    #[test]
    fn every_problem_is_listed() {
        let mut bad = valid();
        bad["platform"] = "Uber Eats".into();
        bad["lines"][0]["sku"] = "latte".into();
        bad["lines"][0]["quantity"] = 0.into();
        let reason = IntakeOrder::parse(&bad.to_string()).unwrap_err();
        assert!(reason.contains("platform"), "{reason}");
        assert!(reason.contains("lines[0].sku"), "{reason}");
        assert!(reason.contains("lines[0].quantity"), "{reason}");
    }

    #[test]
    fn malformed_json_unknown_fields_and_versions_are_refused() {
        assert!(IntakeOrder::parse("{").is_err());
        let mut unknown = valid();
        unknown["tip"] = 100.into();
        assert!(IntakeOrder::parse(&unknown.to_string()).is_err());
        let mut version = valid();
        version["schema_version"] = 2.into();
        assert!(IntakeOrder::parse(&version.to_string())
            .unwrap_err()
            .contains("schema_version 2"));
    }
}
