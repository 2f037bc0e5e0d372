//! The payment processor: one payments-queue message -> one gateway call -> one command.
//!
//! A crash anywhere is safe: before the gateway call nothing happened; after it, the message
//! comes back and the call is repeated with the same idempotency id (the gateway answers with
//! the first outcome, charging nothing more); after the command, the command is repeated with the
//! same key (the API answers with the stored outcome, appending nothing).
//!
//! **The payment deadline.** A charge the gateway does not resolve (timeouts, outages) is
//! retried until `payments.charge_deadline_ms` after the saga requested it (past the queue's
//! delivery limit the consumer requeues it; a request without a deadline, written by an older
//! build, is given up at the queue's second-to-last delivery instead); then it is given up: the order is
//! rejected (`RejectOrder`, reason "payment not confirmed in time", key `<request id>/expired`),
//! which makes the saga release its stock, and the charge is cancelled or refunded at the
//! gateway (refund id `<order id>/refund`, the same as any other refund of the order), so a
//! capture the gateway completes later is given back. A charge past its deadline is never
//! attempted again. Whoever enforces the deadline is the charge message itself: it stays in the
//! queue (invisible between tries, retried within the deadline, requeued rather than
//! dead-lettered) until it is resolved or given up, so a crashed processor's successor sees it
//! again. A give-up that meets an unavailable command API is retried the same way.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proto::v1 as pb;
use time::OffsetDateTime;

use super::{
    ChargeOutcome, ChargeRequest, GatewayError, PaymentAction, PaymentGateway, PaymentRequest,
    RefundRequest, PAYMENT_REQUEST_VERSION,
};
use crate::command_client::{Cause, CommandClient, CommandError};
use crate::queue::{Handled, Message, MessageHandler};

/// The rejection detail of an order whose payment deadline passed (the customer is told it).
pub const NOT_CONFIRMED: &str = "payment not confirmed in time";

/// Handles the payments queue.
pub struct PaymentProcessor {
    gateway: Arc<dyn PaymentGateway>,
    commands: Arc<CommandClient>,
    gateway_timeout: Duration,
    charge_deadline: Duration,
}

/// What to do with a charge the gateway did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unresolved {
    /// Try again, within this long at most (`None`: no deadline known, the usual backoff).
    RetryWithin(Option<Duration>),
    /// Give the charge up now.
    GiveUp(GiveUpReason),
}

/// Why a charge is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GiveUpReason {
    /// Its deadline passed.
    Deadline,
    /// It has no deadline (a request written before deadlines existed) and the queue will
    /// deliver it at most once more.
    DeliveryLimit,
}

impl GiveUpReason {
    fn label(self) -> &'static str {
        match self {
            GiveUpReason::Deadline => "deadline",
            GiveUpReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Decides about a charge the gateway left unresolved at `now`: given up once its `deadline`
/// passed, else retried no later than the deadline (the consumer requeues it past the queue's
/// delivery limit). A request without a deadline is given up when at most one delivery is left
/// (one spare for a crash during the last try) instead of being retried for ever.
fn unresolved(
    now: OffsetDateTime,
    deadline: Option<OffsetDateTime>,
    deliveries_left: Option<u32>,
) -> Unresolved {
    if deadline.is_some_and(|deadline| now >= deadline) {
        return Unresolved::GiveUp(GiveUpReason::Deadline);
    }
    if deadline.is_none() && deliveries_left.is_some_and(|left| left <= 1) {
        return Unresolved::GiveUp(GiveUpReason::DeliveryLimit);
    }
    Unresolved::RetryWithin(
        deadline.map(|deadline| Duration::try_from(deadline - now).unwrap_or(Duration::ZERO)),
    )
}

impl PaymentProcessor {
    /// A processor calling `gateway` (each call bounded by `gateway_timeout`, after which it
    /// counts as a timeout) and recording results through `commands`; a charge unresolved
    /// `charge_deadline` after its request is given up (see the module documentation).
    pub fn new(
        gateway: Arc<dyn PaymentGateway>,
        commands: Arc<CommandClient>,
        gateway_timeout: Duration,
        charge_deadline: Duration,
    ) -> Self {
        Self {
            gateway,
            commands,
            gateway_timeout,
            charge_deadline,
        }
    }

    async fn charge(
        &self,
        request: &PaymentRequest,
        amount_cents: i64,
        payment_token: &str,
        requested_at: Option<OffsetDateTime>,
        message: &Message,
        cause: &Cause,
    ) -> Result<(), Handled> {
        let deadline = requested_at.map(|at| at + self.charge_deadline);
        // Past its deadline a charge is never attempted again (a redelivery, a redrive).
        if deadline.is_some_and(|deadline| OffsetDateTime::now_utc() >= deadline) {
            return self
                .give_up(request, amount_cents, GiveUpReason::Deadline, cause)
                .await;
        }
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
                return match unresolved(
                    OffsetDateTime::now_utc(),
                    deadline,
                    message.deliveries_left,
                ) {
                    Unresolved::GiveUp(why) => {
                        tracing::warn!(order_id = %request.order_id, error = %error, why = why.label(), "payment gateway call failed; giving the charge up");
                        self.give_up(request, amount_cents, why, cause).await
                    }
                    Unresolved::RetryWithin(within) => {
                        tracing::warn!(order_id = %request.order_id, error = %error, "payment gateway call failed; will retry");
                        Err(within.map_or(Handled::Retry, Handled::RetryWithin))
                    }
                };
            }
        };
        recorded
            .map(|_| ())
            .map_err(|error| command_failure(&error))
    }

    /// Gives an unresolved charge up: rejects the order unless it was paid or has ended (the
    /// saga then releases its stock), and cancels or refunds the charge at the gateway, so a
    /// capture completing later is given back. Every step is idempotent (keys derived from the
    /// request), so a crash or a duplicate message repeats it harmlessly.
    async fn give_up(
        &self,
        request: &PaymentRequest,
        amount_cents: i64,
        why: GiveUpReason,
        cause: &Cause,
    ) -> Result<(), Handled> {
        let order = self
            .commands
            .get_order(&request.order_id, cause)
            .await
            .map_err(|error| command_failure(&error))?;
        if order.payment_captured {
            // Paid by an earlier delivery: nothing to give up (a refund, if the order ended,
            // is the saga's).
            return Ok(());
        }
        metrics::counter!("orderpipe_flows_payments_total", "outcome" => "given_up", "why" => why.label())
            .increment(1);
        if matches!(
            order.status(),
            pb::OrderStatus::Placed | pb::OrderStatus::Accepted
        ) {
            let rejected = self
                .commands
                .reject_order(
                    pb::RejectOrderRequest {
                        idempotency_key: format!("{}/expired", request.request_id),
                        order_id: request.order_id.clone(),
                        reason: pb::RejectionReason::Other as i32,
                        detail: NOT_CONFIRMED.to_owned(),
                    },
                    cause,
                )
                .await;
            match rejected {
                Ok(_) => {
                    tracing::warn!(order_id = %request.order_id, why = why.label(), "payment not confirmed in time; order rejected")
                }
                // Moved on meanwhile (cancelled, paid by hand): its own path compensates.
                Err(CommandError::Refused { status, .. }) => {
                    tracing::info!(order_id = %request.order_id, reason = status.message(), "order not rejected after its payment deadline")
                }
                Err(error) => return Err(command_failure(&error)),
            }
        }
        self.refund_charge(&request.order_id, amount_cents, cause)
            .await
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
    if error.is_transient() {
        Handled::Retry
    } else {
        Handled::DeadLetter(error.to_string())
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
                requested_at,
                ..
            } => {
                self.charge(
                    &request,
                    *amount_cents,
                    payment_token,
                    *requested_at,
                    message,
                    &cause,
                )
                .await
            }
            PaymentAction::Refund { amount_cents, .. } => {
                self.refund_charge(&request.order_id, *amount_cents, &cause)
                    .await
            }
        };
        // Timeouts and outages back off by receive count (a charge within its deadline); a
        // charge is given up before the queue's maxReceiveCount, anything else past it goes to
        // the dead-letter queue.
        match result {
            Ok(()) => Handled::Done,
            Err(handled) => handled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-07 04:00:00 UTC);

    #[test]
    fn an_unresolved_charge_is_retried_within_its_deadline() {
        let deadline = Some(datetime!(2026-12-07 04:00:30 UTC));
        assert_eq!(
            unresolved(NOW, deadline, Some(3)),
            Unresolved::RetryWithin(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            unresolved(NOW, None, None),
            Unresolved::RetryWithin(None),
            "a request without a deadline on a queue without a limit backs off as usual"
        );
    }

    #[test]
    fn an_unresolved_charge_is_given_up_at_its_deadline() {
        assert_eq!(
            unresolved(NOW, Some(NOW), Some(3)),
            Unresolved::GiveUp(GiveUpReason::Deadline)
        );
        assert_eq!(
            unresolved(NOW, Some(datetime!(2026-12-07 03:00:00 UTC)), None),
            Unresolved::GiveUp(GiveUpReason::Deadline)
        );
    }

    #[test]
    fn a_charge_within_its_deadline_is_retried_whatever_the_deliveries_left() {
        let deadline = Some(datetime!(2026-12-07 05:00:00 UTC));
        for left in [2, 1, 0] {
            assert_eq!(
                unresolved(NOW, deadline, Some(left)),
                Unresolved::RetryWithin(Some(Duration::from_secs(3_600))),
                "{left} deliveries left"
            );
        }
    }

    #[test]
    fn a_charge_without_a_deadline_is_given_up_before_the_queue_would_dead_letter_it() {
        assert_eq!(
            unresolved(NOW, None, Some(2)),
            Unresolved::RetryWithin(None)
        );
        for left in [1, 0] {
            assert_eq!(
                unresolved(NOW, None, Some(left)),
                Unresolved::GiveUp(GiveUpReason::DeliveryLimit),
                "{left} deliveries left"
            );
        }
    }
}
