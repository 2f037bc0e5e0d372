//! The saga's port to the payments queue: put a charge or refund request on it. The real
//! adapter is the payments FIFO queue ([`PaymentQueue`]); [`InMemoryPaymentRequests`] stands in
//! for it in tests.

use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::payments::{PaymentQueue, PaymentRequest};

/// A payment request that could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("payment request not sent: {source}")]
pub struct RequestNotSent {
    /// Whether sending again may succeed (the queue was unreachable or throttled).
    pub transient: bool,
    /// The queue's error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Where the saga's payment requests go.
#[async_trait]
pub trait PaymentRequests: Send + Sync {
    /// Sends `request`; sending one twice is harmless (deduplicated by its request id).
    async fn send(&self, request: &PaymentRequest) -> Result<(), RequestNotSent>;
}

#[async_trait]
impl PaymentRequests for PaymentQueue {
    async fn send(&self, request: &PaymentRequest) -> Result<(), RequestNotSent> {
        PaymentQueue::send(self, request)
            .await
            .map_err(|error| RequestNotSent {
                transient: error.is_retryable(),
                source: Box::new(error),
            })
    }
}

/// Payment requests kept in memory, for tests; it can be told to fail.
#[derive(Default)]
pub struct InMemoryPaymentRequests {
    sent: Mutex<Vec<PaymentRequest>>,
    failing: Mutex<Option<bool>>,
}

impl InMemoryPaymentRequests {
    /// An empty queue that takes every request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every send fails from now on, transiently or for good.
    pub fn fail(&self, transient: bool) {
        *lock(&self.failing) = Some(transient);
    }

    /// The requests sent, in order.
    pub fn sent(&self) -> Vec<PaymentRequest> {
        lock(&self.sent).clone()
    }
}

#[async_trait]
impl PaymentRequests for InMemoryPaymentRequests {
    async fn send(&self, request: &PaymentRequest) -> Result<(), RequestNotSent> {
        if let Some(transient) = *lock(&self.failing) {
            return Err(RequestNotSent {
                transient,
                source: "the in-memory queue was told to fail".into(),
            });
        }
        lock(&self.sent).push(request.clone());
        Ok(())
    }
}
