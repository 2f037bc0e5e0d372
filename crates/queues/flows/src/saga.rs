//! The order saga: a process manager driven by the log, run as a consumer group of the projector
//! runtime (its own leases and checkpoints, poison commits to the dead-letter queue and parked).
//!
//! | event | the saga |
//! |---|---|
//! | `OrderPlaced` (order still Placed) | `ReserveStock`; reserved -> `AcceptOrder` (refused: `ReleaseReservation`); refused -> `RejectOrder(OUT_OF_STOCK)` |
//! | `OrderPlaced` (order already Rejected or Cancelled) | `ReleaseReservation` (an interrupted earlier run may have reserved) |
//! | `OrderAccepted` (order Accepted, not paid, has a payment token) | a charge request on the payments FIFO queue |
//! | `OrderRejected` / `OrderCancelled` | `ReleaseReservation`, always; a refund request when the payment was captured |
//! | `OrderCompleted` | `CommitReservation` and `EarnPoints` |
//!
//! Compensation is unconditional: a release is sent on every path to a terminal status, and
//! the inventory's "this order holds no reservation" refusal counts as done, so a release
//! repeated by redelivery or by the two paths above frees the stock once.
//!
//! Every command's idempotency key is `saga/<order id>/<sequence>/<step>`: the event that caused
//! it and the step. A commit delivered again (relay retry, worker crash before its checkpoint,
//! lease stolen) sends the same commands with the same keys, and the API answers with the stored
//! outcomes without appending anything; payment requests are deduplicated by the queue and the
//! processor (see [`crate::payments`]).

use std::sync::Arc;

use async_trait::async_trait;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use cqrs_es::Aggregate;
use domain::OrderEvent;
use proto::v1 as pb;
use service_kit::error_chain;

use crate::command_client::{Cause, CommandClient, CommandError};
use crate::payments::{PaymentQueue, PaymentRequest};

/// The saga's name in the lease table, metrics and dead letters.
pub const SAGA_NAME: &str = "order_saga";

/// How the API words a refused reservation of an order that already holds one (the domain's
/// `InventoryError::AlreadyReserved`; a test keeps the two in step). The API answers
/// FAILED_PRECONDITION for it as for missing stock, but the stock is held for the order: the
/// saga goes on and accepts it.
const ALREADY_RESERVED: &str = "already holds a reservation";

/// The order process manager.
pub struct OrderSaga {
    commands: Arc<CommandClient>,
    payments: PaymentQueue,
}

/// Why one reaction failed.
enum StepError {
    /// Retry the batch later.
    Transient(String),
    /// This commit can never be handled.
    Poison(String),
}

impl From<CommandError> for StepError {
    fn from(error: CommandError) -> Self {
        if error.is_transient() {
            StepError::Transient(error.to_string())
        } else {
            StepError::Poison(error.to_string())
        }
    }
}

/// A command's outcome, with a refusal as a normal answer.
fn refused<T>(result: Result<T, CommandError>) -> Result<Result<T, String>, CommandError> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(CommandError::Refused { status, .. }) => Ok(Err(status.message().to_owned())),
        Err(other) => Err(other),
    }
}

impl OrderSaga {
    /// A saga sending commands through `commands` and payment requests to `payments`.
    pub fn new(commands: Arc<CommandClient>, payments: PaymentQueue) -> Self {
        Self { commands, payments }
    }

    async fn react(&self, commit: &LoggedCommit, logged: &LoggedEvent) -> Result<(), StepError> {
        let DomainEvent::Order(event) = &logged.event else {
            return Ok(());
        };
        let order_id = commit.aggregate_id.as_str();
        let step = Step {
            order_id,
            sequence: logged.sequence,
            cause: Cause {
                correlation_id: order_id.to_owned(),
                causation_id: format!("{}/{order_id}/{}", commit.aggregate_type, logged.sequence),
            },
        };
        match event {
            OrderEvent::OrderPlaced {
                store_id, lines, ..
            } => {
                let stock = lines
                    .iter()
                    .map(|line| pb::StockLine {
                        sku: line.sku.to_string(),
                        quantity: line.quantity.get(),
                    })
                    .collect();
                self.reserve_and_accept(&step, store_id.as_str(), stock)
                    .await
            }
            OrderEvent::OrderAccepted {} => self.request_payment(&step).await,
            OrderEvent::OrderRejected {
                reason, refund_due, ..
            } => self.undo(&step, *refund_due, &reason.to_string()).await,
            OrderEvent::OrderCancelled {
                reason, refund_due, ..
            } => self.undo(&step, *refund_due, reason.as_str()).await,
            OrderEvent::OrderCompleted {} => self.complete(&step).await,
            OrderEvent::PaymentCaptured { .. }
            | OrderEvent::PaymentDeclined { .. }
            | OrderEvent::PaymentRefunded { .. }
            | OrderEvent::PreparationStarted {}
            | OrderEvent::OrderMarkedReady {} => Ok(()),
        }
    }

    async fn order(&self, step: &Step<'_>) -> Result<pb::Order, StepError> {
        Ok(self.commands.get_order(step.order_id, &step.cause).await?)
    }

    async fn reserve_and_accept(
        &self,
        step: &Step<'_>,
        store_id: &str,
        lines: Vec<pb::StockLine>,
    ) -> Result<(), StepError> {
        match self.order(step).await?.status() {
            pb::OrderStatus::Placed => {}
            // This step may have reserved in an earlier run that was interrupted (a crash, an
            // outage) before the acceptance, and the order ended meanwhile: its end event says
            // nothing was reserved, because the order never got to Accepted. Release whatever
            // is held; "nothing held" is the usual answer.
            pb::OrderStatus::Cancelled | pb::OrderStatus::Rejected => {
                return self
                    .release(step, store_id, "order ended before its acceptance")
                    .await;
            }
            // A late redelivery of OrderPlaced finds the order moved on: nothing left to decide.
            _ => return Ok(()),
        }
        let reserved = refused(
            self.commands
                .reserve_stock(
                    pb::ReserveStockRequest {
                        idempotency_key: step.key("reserve-stock"),
                        store_id: store_id.to_owned(),
                        order_id: step.order_id.to_owned(),
                        lines,
                    },
                    &step.cause,
                )
                .await,
        )?;
        let not_reserved = match reserved {
            Ok(_) => None,
            // A client reserved the stock for this order itself: it is held, go on.
            Err(why) if why.contains(ALREADY_RESERVED) => None,
            Err(why) => Some(why),
        };
        if let Some(why) = not_reserved {
            metrics::counter!("orderpipe_flows_saga_steps_total", "step" => "reject_out_of_stock")
                .increment(1);
            tracing::info!(order_id = step.order_id, reason = %why, "stock not reserved; rejecting");
            let rejected = refused(
                self.commands
                    .reject_order(
                        pb::RejectOrderRequest {
                            idempotency_key: step.key("reject"),
                            order_id: step.order_id.to_owned(),
                            reason: pb::RejectionReason::OutOfStock as i32,
                            detail: String::new(),
                        },
                        &step.cause,
                    )
                    .await,
            )?;
            if let Err(why) = rejected {
                tracing::info!(order_id = step.order_id, reason = %why, "order moved on before the rejection");
            }
            return Ok(());
        }
        let accepted = refused(
            self.commands
                .accept_order(step.key("accept"), step.order_id, &step.cause)
                .await,
        )?;
        metrics::counter!("orderpipe_flows_saga_steps_total", "step" => "reserve_and_accept")
            .increment(1);
        if let Err(why) = accepted {
            // Cancelled (or rejected by hand) between the reservation and the acceptance.
            tracing::info!(order_id = step.order_id, reason = %why, "order not accepted; releasing its stock");
            self.release(step, store_id, "order not accepted").await?;
        }
        Ok(())
    }

    async fn request_payment(&self, step: &Step<'_>) -> Result<(), StepError> {
        let order = self.order(step).await?;
        if order.status() != pb::OrderStatus::Accepted || order.payment_captured {
            return Ok(());
        }
        if order.payment_token.is_empty() {
            tracing::info!(
                order_id = step.order_id,
                "no payment token: the store records the payment itself"
            );
            return Ok(());
        }
        let request = PaymentRequest::charge(
            step.order_id,
            &order.store_id,
            &order.customer_id,
            order.total.map_or(0, |m| m.cents),
            &order.payment_token,
        );
        self.payments.send(&request).await.map_err(|error| {
            if error.is_retryable() {
                StepError::Transient(error_chain(&error))
            } else {
                StepError::Poison(error_chain(&error))
            }
        })?;
        metrics::counter!("orderpipe_flows_saga_steps_total", "step" => "request_payment")
            .increment(1);
        Ok(())
    }

    /// Undoes what an order held when it ended (rejected or cancelled). The release is sent
    /// whatever the event's `stock_reserved` says: that flag only knows whether the order got
    /// to Accepted, not whether a reservation step was interrupted before the acceptance, and
    /// a release of nothing is refused harmlessly.
    async fn undo(&self, step: &Step<'_>, refund_due: bool, reason: &str) -> Result<(), StepError> {
        let order = self.order(step).await?;
        self.release(step, &order.store_id, reason).await?;
        if refund_due {
            let request =
                PaymentRequest::refund(step.order_id, order.total.map_or(0, |m| m.cents), reason);
            self.payments.send(&request).await.map_err(|error| {
                if error.is_retryable() {
                    StepError::Transient(error_chain(&error))
                } else {
                    StepError::Poison(error_chain(&error))
                }
            })?;
            metrics::counter!("orderpipe_flows_saga_steps_total", "step" => "request_refund")
                .increment(1);
        }
        Ok(())
    }

    async fn release(
        &self,
        step: &Step<'_>,
        store_id: &str,
        reason: &str,
    ) -> Result<(), StepError> {
        let released = refused(
            self.commands
                .release_reservation(
                    pb::ReleaseReservationRequest {
                        idempotency_key: step.key("release-stock"),
                        store_id: store_id.to_owned(),
                        order_id: step.order_id.to_owned(),
                        reason: truncate(reason, 200),
                    },
                    &step.cause,
                )
                .await,
        )?;
        // The inventory refuses only "this order holds no reservation" (never made, already
        // released or committed): the stock is free either way.
        let outcome = match released {
            Ok(_) => "release_stock",
            Err(why) => {
                tracing::info!(order_id = step.order_id, reason = %why, "nothing to release");
                "release_nothing_held"
            }
        };
        metrics::counter!("orderpipe_flows_saga_steps_total", "step" => outcome).increment(1);
        Ok(())
    }

    async fn complete(&self, step: &Step<'_>) -> Result<(), StepError> {
        let order = self.order(step).await?;
        let committed = refused(
            self.commands
                .commit_reservation(
                    pb::CommitReservationRequest {
                        idempotency_key: step.key("commit-stock"),
                        store_id: order.store_id.clone(),
                        order_id: step.order_id.to_owned(),
                    },
                    &step.cause,
                )
                .await,
        )?;
        if let Err(why) = committed {
            tracing::warn!(order_id = step.order_id, reason = %why, "no reservation to commit");
        }
        let earned = refused(
            self.commands
                .earn_points(
                    pb::EarnPointsRequest {
                        idempotency_key: step.key("earn-points"),
                        customer_id: order.customer_id.clone(),
                        order_id: step.order_id.to_owned(),
                        amount: order.total,
                    },
                    &step.cause,
                )
                .await,
        )?;
        if let Err(why) = earned {
            tracing::warn!(order_id = step.order_id, reason = %why, "points not earned");
        }
        metrics::counter!("orderpipe_flows_saga_steps_total", "step" => "complete").increment(1);
        Ok(())
    }
}

/// The event a reaction answers.
struct Step<'a> {
    order_id: &'a str,
    sequence: u64,
    cause: Cause,
}

impl Step<'_> {
    /// The idempotency key of `step` caused by this event.
    fn key(&self, step: &str) -> String {
        format!("saga/{}/{}/{step}", self.order_id, self.sequence)
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[async_trait]
impl Projection for OrderSaga {
    fn name(&self) -> &'static str {
        SAGA_NAME
    }

    /// Reacts to every order event in order. Refusals are outcomes (logged); an unavailable API
    /// or queue retries the batch (every step is idempotent); anything else is poison for that
    /// commit, which parks the rest of its order until an operator redrives it.
    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        for (index, commit) in commits.iter().enumerate() {
            if commit.aggregate_type != domain::Order::TYPE {
                continue;
            }
            for event in &commit.events {
                match self.react(commit, event).await {
                    Ok(()) => {}
                    Err(StepError::Transient(reason)) => {
                        return Err(ProjectionError::Transient(reason.into()))
                    }
                    Err(StepError::Poison(reason)) => {
                        return Err(ProjectionError::Poison { index, reason })
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_already_reserved_wording_is_the_domains() {
        let order_id = domain::OrderId::from(uuid::Uuid::from_u128(7));
        let error = domain::InventoryError::AlreadyReserved { order_id };
        assert!(error.to_string().contains(ALREADY_RESERVED), "{error}");
    }

    #[test]
    fn keys_name_the_order_the_event_and_the_step() {
        let step = Step {
            order_id: "5f0c",
            sequence: 3,
            cause: Cause::default(),
        };
        assert_eq!(step.key("earn-points"), "saga/5f0c/3/earn-points");
    }
}
