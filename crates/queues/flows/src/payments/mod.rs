//! Payments: the saga puts [`PaymentRequest`]s on the payments FIFO queue ([`PaymentQueue`]);
//! the [`processor`] takes them to a [`PaymentGateway`] and sends the results back as commands.
//!
//! The queue is FIFO with one message group per order, so an order's charge and refund are
//! handled in order, and each request's deduplication id is derived from what caused it, so a
//! redelivered event within SQS's five-minute deduplication window sends nothing new. Past it, a
//! second request reaches the processor, whose gateway call is idempotent per request id and
//! whose result command carries a key derived from the same id: nothing is charged or recorded
//! twice.

mod gateway;
pub mod processor;

pub use gateway::{
    ChargeOutcome, ChargeRequest, GatewayError, LedgerEntry, PaymentGateway, RefundRequest,
    SandboxGateway, TestCard,
};

use aws_support::AwsCallError;
use serde::{Deserialize, Serialize};
use service_kit::trace_context;
use time::OffsetDateTime;

use crate::sqs::{Outgoing, SqsQueue};

/// The schema version this build writes and reads.
pub const PAYMENT_REQUEST_VERSION: u32 = 1;

/// A message on the payments queue (JSON, `docs/flows/payment-request.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// [`PAYMENT_REQUEST_VERSION`].
    pub schema_version: u32,
    /// Unique per order and kind (`<order id>/charge`, `<order id>/refund`): the gateway's
    /// idempotency id and the root of the result command's idempotency key.
    pub request_id: String,
    /// The order.
    pub order_id: String,
    /// What to do.
    #[serde(flatten)]
    pub action: PaymentAction,
}

/// What a payment request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PaymentAction {
    /// Capture the order total.
    Charge {
        /// The store (for the gateway's merchant reference).
        store_id: String,
        /// The customer.
        customer_id: String,
        /// The order total, in cents.
        amount_cents: i64,
        /// The payment token given with the order.
        payment_token: String,
        /// When the saga requested the charge: the payment deadline runs from here. Absent in
        /// requests written before the deadline existed (only the delivery limit applies then).
        #[serde(
            default,
            with = "time::serde::rfc3339::option",
            skip_serializing_if = "Option::is_none"
        )]
        requested_at: Option<OffsetDateTime>,
    },
    /// Give a captured payment back (the order was cancelled or rejected after capture).
    Refund {
        /// The amount, in cents.
        amount_cents: i64,
        /// Why.
        reason: String,
    },
}

impl PaymentRequest {
    /// The charge of `order_id`'s total, requested now.
    pub fn charge(
        order_id: &str,
        store_id: &str,
        customer_id: &str,
        amount_cents: i64,
        payment_token: &str,
    ) -> Self {
        Self {
            schema_version: PAYMENT_REQUEST_VERSION,
            request_id: format!("{order_id}/charge"),
            order_id: order_id.to_owned(),
            action: PaymentAction::Charge {
                store_id: store_id.to_owned(),
                customer_id: customer_id.to_owned(),
                amount_cents,
                payment_token: payment_token.to_owned(),
                requested_at: Some(OffsetDateTime::now_utc()),
            },
        }
    }

    /// The refund of `order_id`'s captured payment.
    pub fn refund(order_id: &str, amount_cents: i64, reason: &str) -> Self {
        Self {
            schema_version: PAYMENT_REQUEST_VERSION,
            request_id: format!("{order_id}/refund"),
            order_id: order_id.to_owned(),
            action: PaymentAction::Refund {
                amount_cents,
                reason: reason.to_owned(),
            },
        }
    }
}

/// A payment request could not be put on the payments queue.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request does not serialize (a timestamp out of RFC 3339's range): sending it again
    /// cannot help.
    #[error("the payment request does not serialize")]
    Encode(#[source] serde_json::Error),
    /// SQS did not take it.
    #[error("cannot send to the payments queue")]
    Queue(#[source] AwsCallError),
}

impl SendError {
    /// Whether sending the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Encode(_) => false,
            SendError::Queue(error) => error.retryable,
        }
    }
}

/// The sending side of the payments FIFO queue.
#[derive(Clone)]
pub struct PaymentQueue {
    queue: SqsQueue,
}

impl PaymentQueue {
    /// The queue at `queue_url` (a `.fifo` queue).
    pub fn new(sqs: aws_sdk_sqs::Client, queue_url: String) -> Self {
        Self {
            queue: SqsQueue::new(sqs, queue_url),
        }
    }

    /// Sends `request`: message group = the order, deduplication id = the request id, so a
    /// request sent twice within five minutes is stored once.
    pub async fn send(&self, request: &PaymentRequest) -> Result<(), SendError> {
        let body = serde_json::to_string(request).map_err(SendError::Encode)?;
        let mut message =
            Outgoing::new(&body).in_group(&request.order_id, request.request_id.replace('/', "-"));
        // The saga step's trace, which the processor continues. An attribute, not the body:
        // the FIFO queue's deduplication and the processor's parsing see the request only.
        if let Some(traceparent) = trace_context::current() {
            message = message.attribute(trace_context::TRACEPARENT, traceparent);
        }
        self.queue.send(message).await.map_err(SendError::Queue)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_charge_request_has_a_documented_flat_json_shape() {
        let mut request = PaymentRequest::charge("o-1", "s1", "c-1", 1275, "4242424242424242");
        if let PaymentAction::Charge { requested_at, .. } = &mut request.action {
            *requested_at = Some(time::macros::datetime!(2026-12-07 04:05:06 UTC));
        }
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "schema_version": 1, "request_id": "o-1/charge", "order_id": "o-1",
                "kind": "charge", "store_id": "s1", "customer_id": "c-1",
                "amount_cents": 1275, "payment_token": "4242424242424242",
                "requested_at": "2026-12-07T04:05:06Z"
            })
        );
        assert_eq!(
            serde_json::from_value::<PaymentRequest>(json).unwrap(),
            request
        );
    }

    #[test]
    fn a_charge_request_written_before_the_deadline_existed_still_reads() {
        let json = serde_json::json!({
            "schema_version": 1, "request_id": "o-1/charge", "order_id": "o-1",
            "kind": "charge", "store_id": "s1", "customer_id": "c-1",
            "amount_cents": 1275, "payment_token": "4242424242424242"
        });
        let request: PaymentRequest = serde_json::from_value(json).unwrap();
        assert!(matches!(
            request.action,
            PaymentAction::Charge {
                requested_at: None,
                ..
            }
        ));
    }
}
