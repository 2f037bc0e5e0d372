//! The advance buttons: each moves an order one step through the kitchen by calling the command
//! API over gRPC with the barista's own token, so the command API's rules (role, store, the
//! order's state) decide, and the dashboard shows its answer.

use std::time::Duration;

use proto::v1 as pb;
use proto::v1::order_service_client::OrderServiceClient;
use serde::Deserialize;
use service_kit::grpc_tls::{self, ClientTlsSettings, GrpcTlsError};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use uuid::Uuid;

/// One step of an order through the kitchen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Accepted and paid -> Preparing (`StartPreparing`).
    StartPreparing,
    /// Preparing -> Ready (`MarkReady`).
    MarkReady,
    /// Ready -> Completed (`CompleteOrder`).
    Complete,
}

impl Step {
    /// The step's name, as the API takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::StartPreparing => "start_preparing",
            Step::MarkReady => "mark_ready",
            Step::Complete => "complete",
        }
    }

    /// The command's idempotency key: one per order and step, so a double tap or a retry
    /// after a timeout is the same command (the command API scopes keys per caller).
    pub fn idempotency_key(self, order_id: Uuid) -> String {
        format!("dashboard-{}-{order_id}", self.as_str())
    }
}

/// What the command API answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advanced {
    /// The event types appended (empty when the key was seen before).
    pub event_types: Vec<String>,
    /// Whether this was the stored outcome of an earlier tap.
    pub replayed: bool,
}

/// A client of the command API's order service.
#[derive(Debug, Clone)]
pub struct CommandApi {
    orders: OrderServiceClient<Channel>,
    timeout: Duration,
}

/// The command API's address is not a URL, or its TLS files are not usable.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct InvalidUrl(#[from] GrpcTlsError);

impl CommandApi {
    /// A client that connects on first use (the dashboard starts while the API is down and
    /// reports UNAVAILABLE on the button until it is back), over TLS when `url` is `https://`.
    pub fn connect_lazy(
        url: &str,
        tls: &ClientTlsSettings,
        timeout: Duration,
    ) -> Result<Self, InvalidUrl> {
        let endpoint = grpc_tls::client_endpoint("command_api", url, tls)?;
        Ok(Self {
            orders: OrderServiceClient::new(endpoint.connect_timeout(timeout).connect_lazy()),
            timeout,
        })
    }

    /// Moves `order_id` one `step` on, as the caller whose `authorization` header
    /// (`Bearer <token>`) is given.
    pub async fn advance(
        &self,
        authorization: &str,
        order_id: Uuid,
        step: Step,
    ) -> Result<Advanced, tonic::Status> {
        let body = pb::OrderTransitionRequest {
            idempotency_key: step.idempotency_key(order_id),
            order_id: order_id.to_string(),
        };
        let mut request = tonic::Request::new(body);
        request.set_timeout(self.timeout);
        let header = MetadataValue::try_from(authorization).map_err(|_| {
            tonic::Status::unauthenticated("authorization must be 'Bearer <token>'")
        })?;
        request.metadata_mut().insert("authorization", header);
        let mut orders = self.orders.clone();
        let result = match step {
            Step::StartPreparing => orders.start_preparing(request).await,
            Step::MarkReady => orders.mark_ready(request).await,
            Step::Complete => orders.complete_order(request).await,
        }?
        .into_inner();
        Ok(Advanced {
            event_types: result.event_types,
            replayed: result.replayed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_has_one_key_per_order() {
        let order = Uuid::nil();
        assert_eq!(
            Step::StartPreparing.idempotency_key(order),
            Step::StartPreparing.idempotency_key(order)
        );
        assert_ne!(
            Step::StartPreparing.idempotency_key(order),
            Step::MarkReady.idempotency_key(order)
        );
    }
}
