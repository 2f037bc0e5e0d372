//! The payment processor: one payments-queue message -> one gateway call -> one command.
//!
//! A crash anywhere is safe: before the gateway call nothing happened; after it, the message
//! comes back and the call is repeated with the same idempotency id (the gateway answers with
//! the first outcome, charging nothing more); after the command, the command is repeated with the
//! same key (the API answers with the stored outcome, appending nothing).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proto::v1 as pb;

use super::{
    ChargeOutcome, ChargeRequest, GatewayError, PaymentAction, PaymentGateway, PaymentRequest,
    RefundRequest, PAYMENT_REQUEST_VERSION,
};
use crate::command_client::{Cause, CommandClient, CommandError};
use crate::queue::{Handled, Message, MessageHandler};

/// Handles the payments queue.
pub struct PaymentProcessor {
    gateway: Arc<dyn PaymentGateway>,
    commands: Arc<CommandClient>,
    gateway_timeout: Duration,
}

impl PaymentProcessor {
    /// A processor calling `gateway` (each call bounded by `gateway_timeout`, after which it
    /// counts as a timeout) and recording results through `commands`.
    pub fn new(
        gateway: Arc<dyn PaymentGateway>,
        commands: Arc<CommandClient>,
        gateway_timeout: Duration,
    ) -> Self {
        Self {
            gateway,
            commands,
            gateway_timeout,
        }
    }

    async fn charge(
        &self,
        request: &PaymentRequest,
        amount_cents: i64,
        payment_token: &str,
        cause: &Cause,
    ) -> Result<(), Handled> {
        let charge = ChargeRequest {
            idempotency_id: request.request_id.clone(),
            amount_cents,
            payment_token: payment_token.to_owned(),
        };
        let outcome = tokio::time::timeout(self.gateway_timeout, self.gateway.charge(&charge))
            .await
            .unwrap_or(Err(GatewayError::Timeout));
        let recorded = match outcome {
            Ok(ChargeOutcome::Captured { payment_id }) => {
                metrics::counter!("orderpipe_flows_payments_total", "outcome" => "captured")
                    .increment(1);
                let recorded = self
                    .commands
                    .record_payment_captured(
                        pb::RecordPaymentCapturedRequest {
                            idempotency_key: format!("{}/captured", request.request_id),
                            order_id: request.order_id.clone(),
                            payment_id: payment_id.clone(),
                            amount: Some(pb::Money {
                                cents: amount_cents,
                            }),
                        },
                        cause,
                    )
                    .await;
                if let Err(CommandError::Refused { status, .. }) = &recorded {
                    // The order ended (cancelled, rejected) before the payment was recorded:
                    // the money must go back.
                    tracing::warn!(order_id = %request.order_id, reason = status.message(), "captured payment cannot be recorded; refunding");
                    return self
                        .refund_charge(&request.order_id, amount_cents, cause)
                        .await;
                }
                recorded
            }
            Ok(ChargeOutcome::Declined { reason }) => {
                metrics::counter!("orderpipe_flows_payments_total", "outcome" => "declined")
                    .increment(1);
                let recorded = self
                    .commands
                    .record_payment_declined(
                        pb::RecordPaymentDeclinedRequest {
                            idempotency_key: format!("{}/declined", request.request_id),
                            order_id: request.order_id.clone(),
                            reason,
                        },
                        cause,
                    )
                    .await;
                match recorded {
                    // The order ended meanwhile: nothing was charged, nothing to undo.
                    Err(CommandError::Refused { .. }) => return Ok(()),
                    other => other,
                }
            }
            Err(error) => {
                metrics::counter!("orderpipe_flows_payments_total", "outcome" => "gateway_failed")
                    .increment(1);
                tracing::warn!(order_id = %request.order_id, error = %error, "payment gateway call failed; will retry");
                return Err(Handled::Retry);
            }
        };
        recorded
            .map(|_| ())
            .map_err(|error| command_failure(&error))
    }

    async fn refund_charge(
        &self,
        order_id: &str,
        amount_cents: i64,
        cause: &Cause,
    ) -> Result<(), Handled> {
        let refund = RefundRequest {
            idempotency_id: format!("{order_id}/refund"),
            charge_id: format!("{order_id}/charge"),
            amount_cents,
        };
        match tokio::time::timeout(self.gateway_timeout, self.gateway.refund(&refund)).await {
            Ok(Ok(refund_id)) => {
                metrics::counter!("orderpipe_flows_payments_total", "outcome" => "refunded")
                    .increment(1);
                tracing::info!(order_id, amount_cents, "payment refunded");
                let recorded = self
                    .commands
                    .record_payment_refunded(
                        pb::RecordPaymentRefundedRequest {
                            idempotency_key: format!("{}/recorded", refund.idempotency_id),
                            order_id: order_id.to_owned(),
                            refund_id,
                            amount: Some(pb::Money {
                                cents: amount_cents,
                            }),
                        },
                        cause,
                    )
                    .await;
                match recorded {
                    // Nothing captured on the order (the capture itself could not be
                    // recorded because the order had ended): the refund stands alone.
                    Ok(_) | Err(CommandError::Refused { .. }) => Ok(()),
                    Err(error) => Err(command_failure(&error)),
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(order_id, error = %error, "refund failed; will retry");
                Err(Handled::Retry)
            }
            Err(_) => Err(Handled::Retry),
        }
    }
}

/// What a failed result command means for the message.
fn command_failure(error: &CommandError) -> Handled {
    match error {
        CommandError::Unavailable { .. } => Handled::Retry,
        other => Handled::DeadLetter(other.to_string()),
    }
}

#[async_trait]
impl MessageHandler for PaymentProcessor {
    async fn handle(&self, message: &Message) -> Handled {
        let request: PaymentRequest = match serde_json::from_str(&message.body) {
            Ok(request) => request,
            Err(error) => return Handled::DeadLetter(format!("not a payment request: {error}")),
        };
        if request.schema_version != PAYMENT_REQUEST_VERSION {
            return Handled::DeadLetter(format!(
                "payment request schema_version {} is not supported (this build reads {PAYMENT_REQUEST_VERSION})",
                request.schema_version
            ));
        }
        let cause = Cause {
            correlation_id: request.order_id.clone(),
            causation_id: format!("sqs:{}", message.id),
        };
        let result = match &request.action {
            PaymentAction::Charge {
                amount_cents,
                payment_token,
                ..
            } => {
                self.charge(&request, *amount_cents, payment_token, &cause)
                    .await
            }
            PaymentAction::Refund { amount_cents, .. } => {
                self.refund_charge(&request.order_id, *amount_cents, &cause)
                    .await
            }
        };
        // Timeouts and outages back off by receive count; past the queue's maxReceiveCount SQS
        // moves the message to the dead-letter queue.
        match result {
            Ok(()) => Handled::Done,
            Err(handled) => handled,
        }
    }
}
