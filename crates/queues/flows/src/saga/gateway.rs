//! The saga's port to the command API: read an order, send a command. The real adapter is the
//! flows' [`CommandClient`]; [`InMemoryCommandGateway`] stands in for it in tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use proto::v1 as pb;
use tonic::Status;

use super::decision::{Answer, Command, KnownOrder};
use super::lock;
use crate::command_client::{Cause, CommandClient, CommandError};

/// The calls the saga makes to the command API.
#[async_trait]
pub trait CommandGateway: Send + Sync {
    /// The order as the API shows it now (`GetOrder`). A refusal is an error here: the saga
    /// handles events of orders that exist.
    async fn order(&self, order_id: &str, cause: &Cause) -> Result<KnownOrder, CommandError>;

    /// Sends `command` about `order_id` under idempotency key `key`. A refusal is an
    /// [`Answer`], with its reason code; an error is anything else (unavailable, rejected).
    async fn send(
        &self,
        order_id: &str,
        key: String,
        command: &Command,
        cause: &Cause,
    ) -> Result<Answer, CommandError>;
}

/// A command's result as the saga's answer: a refusal is logged and becomes
/// [`Answer::Refused`] with its code, the only part of it the saga acts on.
fn answer<T>(order_id: &str, sent: Result<T, CommandError>) -> Result<Answer, CommandError> {
    match sent {
        Ok(_) => Ok(Answer::Done),
        Err(CommandError::Refused {
            rpc,
            reason,
            status,
        }) => {
            tracing::info!(
                order_id,
                rpc,
                reason = reason.map(domain::ErrorReason::code),
                message = status.message(),
                "command refused"
            );
            Ok(Answer::Refused(reason))
        }
        Err(other) => Err(other),
    }
}

impl From<pb::Order> for KnownOrder {
    fn from(order: pb::Order) -> Self {
        Self {
            status: order.status(),
            total_cents: order.total.map_or(0, |total| total.cents),
            payment_token: Some(order.payment_token).filter(|token| !token.is_empty()),
            payment_captured: order.payment_captured,
            store_id: order.store_id,
            customer_id: order.customer_id,
        }
    }
}

#[async_trait]
impl CommandGateway for CommandClient {
    async fn order(&self, order_id: &str, cause: &Cause) -> Result<KnownOrder, CommandError> {
        Ok(self.get_order(order_id, cause).await?.into())
    }

    async fn send(
        &self,
        order_id: &str,
        key: String,
        command: &Command,
        cause: &Cause,
    ) -> Result<Answer, CommandError> {
        let order = order_id.to_owned();
        match command {
            Command::ReserveStock { store_id, lines } => {
                let request = pb::ReserveStockRequest {
                    idempotency_key: key,
                    store_id: store_id.clone(),
                    order_id: order,
                    lines: lines.clone(),
                };
                answer(order_id, self.reserve_stock(request, cause).await)
            }
            Command::AcceptOrder => answer(order_id, self.accept_order(key, order_id, cause).await),
            Command::RejectOutOfStock => {
                let request = pb::RejectOrderRequest {
                    idempotency_key: key,
                    order_id: order,
                    reason: pb::RejectionReason::OutOfStock as i32,
                    detail: String::new(),
                };
                answer(order_id, self.reject_order(request, cause).await)
            }
            Command::ReleaseReservation { store_id, reason } => {
                let request = pb::ReleaseReservationRequest {
                    idempotency_key: key,
                    store_id: store_id.clone(),
                    order_id: order,
                    reason: reason.clone(),
                };
                answer(order_id, self.release_reservation(request, cause).await)
            }
            Command::CommitReservation { store_id } => {
                let request = pb::CommitReservationRequest {
                    idempotency_key: key,
                    store_id: store_id.clone(),
                    order_id: order,
                };
                answer(order_id, self.commit_reservation(request, cause).await)
            }
            Command::EarnPoints {
                customer_id,
                amount_cents,
            } => {
                let request = pb::EarnPointsRequest {
                    idempotency_key: key,
                    customer_id: customer_id.clone(),
                    order_id: order,
                    amount: Some(pb::Money {
                        cents: *amount_cents,
                    }),
                };
                answer(order_id, self.earn_points(request, cause).await)
            }
        }
    }
}

/// A command the in-memory gateway received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    /// The order it was about.
    pub order_id: String,
    /// Its idempotency key.
    pub key: String,
    /// The command.
    pub command: Command,
}

/// An in-memory command API for tests: orders as set, every command recorded and answered as
/// scripted. A scripted answer is a gRPC status as the API would send it, read the way the real
/// client reads it (by its `ErrorInfo` code), so a test can show the message is never read.
#[derive(Default)]
pub struct InMemoryCommandGateway {
    orders: Mutex<HashMap<String, KnownOrder>>,
    answers: Mutex<HashMap<&'static str, Status>>,
    sent: Mutex<Vec<SentCommand>>,
    reads: Mutex<usize>,
}

impl InMemoryCommandGateway {
    /// A gateway knowing no order and accepting every command.
    pub fn new() -> Self {
        Self::default()
    }

    /// `GetOrder` of `order_id` answers `order` from now on.
    pub fn set_order(&self, order_id: &str, order: KnownOrder) {
        lock(&self.orders).insert(order_id.to_owned(), order);
    }

    /// Every command whose [`Command::key_name`] is `key_name` fails with `status` from now
    /// on: a refusal (FAILED_PRECONDITION, NOT_FOUND) or another failure, classified by its
    /// gRPC code as the real client classifies it (UNAVAILABLE as given up after retries).
    pub fn answer_with(&self, key_name: &'static str, status: Status) {
        lock(&self.answers).insert(key_name, status);
    }

    /// The commands received, in order.
    pub fn sent(&self) -> Vec<SentCommand> {
        lock(&self.sent).clone()
    }

    /// How many times an order was read.
    pub fn reads(&self) -> usize {
        *lock(&self.reads)
    }
}

#[async_trait]
impl CommandGateway for InMemoryCommandGateway {
    async fn order(&self, order_id: &str, _cause: &Cause) -> Result<KnownOrder, CommandError> {
        *lock(&self.reads) += 1;
        lock(&self.orders)
            .get(order_id)
            .cloned()
            .ok_or_else(|| CommandError::classified("GetOrder", Status::not_found("no such order")))
    }

    async fn send(
        &self,
        order_id: &str,
        key: String,
        command: &Command,
        _cause: &Cause,
    ) -> Result<Answer, CommandError> {
        lock(&self.sent).push(SentCommand {
            order_id: order_id.to_owned(),
            key,
            command: command.clone(),
        });
        let scripted = lock(&self.answers).get(command.key_name()).cloned();
        let sent = match scripted {
            None => Ok(()),
            Some(status) => Err(CommandError::classified(command.key_name(), status)),
        };
        answer(order_id, sent)
    }
}
