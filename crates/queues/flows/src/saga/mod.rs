//! The order saga: a process manager driven by the log, run as a consumer group of the projector
//! runtime (its own leases and checkpoints, poison commits to the dead-letter queue and parked).
//!
//! It is three pieces:
//! - [`decision`]: what to do, a pure function of the event and the order as the saga knows it
//!   ([`decision::decide`]), and of each command's answer ([`decision::after`]); no I/O;
//! - two ports, each with its real adapter and an in-memory fake: [`gateway::CommandGateway`]
//!   (the command API, through the flows' [`CommandClient`](crate::command_client::CommandClient))
//!   and [`payment_requests::PaymentRequests`] (the payments FIFO queue);
//! - [`OrderSaga`], the [`Projection`]: for each order event it reads the order, asks the
//!   decision, and carries the steps out through the ports.
//!
//! | event | the saga |
//! |---|---|
//! | `OrderPlaced` (order still Placed) | `ReserveStock`; reserved or `ALREADY_RESERVED` -> `AcceptOrder` (refused: `ReleaseReservation`); any other refusal -> `RejectOrder(OUT_OF_STOCK)` |
//! | `OrderPlaced` (order already Rejected or Cancelled) | `ReleaseReservation` (an interrupted earlier run may have reserved) |
//! | `OrderAccepted` (order Accepted, not paid, has a payment token) | a charge request on the payments FIFO queue |
//! | `OrderRejected` / `OrderCancelled` | `ReleaseReservation`, always; a refund request when the payment was captured |
//! | `OrderCompleted` | `CommitReservation` and `EarnPoints` |
//!
//! A refusal is an answer, acted on by its reason code (the API's `ErrorInfo`), never by its
//! message. Compensation is unconditional: a release is sent on every path to a terminal
//! status, and the inventory's "this order holds no reservation" refusal counts as done, so a
//! release repeated by redelivery or by the two paths above frees the stock once.
//!
//! Every command's idempotency key is `saga/<order id>/<sequence>/<step>`: the event that caused
//! it and the step. A commit delivered again (relay retry, worker crash before its checkpoint,
//! lease stolen) sends the same commands with the same keys, and the API answers with the stored
//! outcomes without appending anything; payment requests are deduplicated by the queue and the
//! processor (see [`crate::payments`]).

pub mod decision;
pub mod gateway;
pub mod payment_requests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::{DomainEvent, LoggedCommit, LoggedEvent};
use cqrs_es::Aggregate;
use tracing::Instrument;

use crate::command_client::{Cause, CommandError};
use crate::flow_trace;
use crate::payments::PaymentRequest;
use decision::{Answer, Step};
use gateway::CommandGateway;
use payment_requests::{PaymentRequests, RequestNotSent};

/// The saga's name in the lease table, metrics and dead letters.
pub const SAGA_NAME: &str = "order_saga";

/// The order process manager.
pub struct OrderSaga {
    commands: Arc<dyn CommandGateway>,
    payments: Arc<dyn PaymentRequests>,
}

/// Why one reaction failed.
#[derive(Debug)]
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

impl From<RequestNotSent> for StepError {
    fn from(error: RequestNotSent) -> Self {
        if error.transient {
            StepError::Transient(error.to_string())
        } else {
            StepError::Poison(error.to_string())
        }
    }
}

impl OrderSaga {
    /// A saga sending commands through `commands` and payment requests to `payments`.
    pub fn new(commands: Arc<dyn CommandGateway>, payments: Arc<dyn PaymentRequests>) -> Self {
        Self { commands, payments }
    }

    /// Carries out what `logged` calls for: reads the order, then takes the decided steps in
    /// order, each answer's follow-ups before the steps after it.
    async fn react(&self, commit: &LoggedCommit, logged: &LoggedEvent) -> Result<(), StepError> {
        let DomainEvent::Order(event) = &logged.event else {
            return Ok(());
        };
        if !decision::concerns(event) {
            return Ok(());
        }
        let order_id = commit.aggregate_id.as_str();
        let reaction = Reaction {
            order_id,
            sequence: logged.sequence,
            cause: Cause {
                correlation_id: order_id.to_owned(),
                causation_id: format!("{}/{order_id}/{}", commit.aggregate_type, logged.sequence),
            },
        };
        let order = self.commands.order(order_id, &reaction.cause).await?;
        let mut pending = VecDeque::from(decision::decide(event, &order));
        while let Some(step) = pending.pop_front() {
            let answer = self.take(&reaction, &step).await?;
            for next in decision::after(&step, answer, &order).into_iter().rev() {
                pending.push_front(next);
            }
        }
        Ok(())
    }

    async fn take(&self, reaction: &Reaction<'_>, step: &Step) -> Result<Answer, StepError> {
        let order_id = reaction.order_id;
        let answer = match step {
            Step::Command(command) => {
                let key = reaction.key(command.key_name());
                self.commands
                    .send(order_id, key, command, &reaction.cause)
                    .await?
            }
            Step::RequestCharge {
                store_id,
                customer_id,
                amount_cents,
                payment_token,
            } => {
                let request = PaymentRequest::charge(
                    order_id,
                    store_id,
                    customer_id,
                    *amount_cents,
                    payment_token,
                );
                self.payments.send(&request).await?;
                Answer::Done
            }
            Step::RequestRefund {
                amount_cents,
                reason,
            } => {
                let request = PaymentRequest::refund(order_id, *amount_cents, reason);
                self.payments.send(&request).await?;
                Answer::Done
            }
        };
        let outcome = match answer {
            Answer::Done => "done",
            Answer::Refused(_) => "refused",
        };
        tracing::debug!(order_id, step = step.label(), outcome, "saga step");
        metrics::counter!("orderpipe_flows_saga_steps_total", "step" => step.label(), "answer" => outcome)
            .increment(1);
        Ok(answer)
    }
}

/// The event a reaction answers.
struct Reaction<'a> {
    order_id: &'a str,
    sequence: u64,
    cause: Cause,
}

impl Reaction<'_> {
    /// The idempotency key of the step named `step` caused by this event.
    fn key(&self, step: &str) -> String {
        format!("saga/{}/{}/{step}", self.order_id, self.sequence)
    }
}

/// The in-memory fakes' lock: a test that panicked while holding it leaves data still worth
/// reading.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            let step = flow_trace::commit_step("saga.react", commit);
            for event in &commit.events {
                match self.react(commit, event).instrument(step.clone()).await {
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
