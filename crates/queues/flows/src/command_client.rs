//! A gRPC client of the command API for the flows: the `service` role, a caller-chosen
//! idempotency key on every command, retries of what may succeed later, and one classification
//! of every other failure.
//!
//! A refused command (FAILED_PRECONDITION, NOT_FOUND) is a business outcome the caller decides
//! about (an order cancelled meanwhile, stock that ran out), never something to retry; it comes
//! with the API's reason code ([`ErrorReason`], from the `google.rpc.ErrorInfo` detail), which is
//! what callers act on: the message is for people and its wording may change.

use std::future::Future;
use std::time::Duration;

use domain::ErrorReason;
use proto::v1 as pb;
use proto::v1::inventory_service_client::InventoryServiceClient;
use proto::v1::loyalty_service_client::LoyaltyServiceClient;
use proto::v1::order_service_client::OrderServiceClient;
use secrecy::{ExposeSecret, SecretString};
use service_kit::{trace_context, Backoff};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

/// The waits between tries of one command: up to 100 ms first, doubling up to 2 s.
const COMMAND_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// Each attempt's deadline unless [`CommandClient::with_call_timeout`] sets another.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What one attempt's answer means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A business outcome (FAILED_PRECONDITION, NOT_FOUND): the caller decides.
    Refused,
    /// May succeed later with the same key: retry.
    Retry,
    /// The request itself is wrong: retrying cannot help.
    Rejected,
}

/// Classifies a failed attempt by its gRPC code, in one place.
///
/// CANCELLED is retried: the command API never answers it (an out-of-time command answers
/// DEADLINE_EXCEEDED), so it comes from this side: tonic's own deadline (`grpc-timeout`
/// expired) or a connection dropped mid-call when the API stopped. Either way the command may
/// or may not have committed, and a retry with the same key settles it.
fn classify(code: Code) -> Answer {
    match code {
        Code::FailedPrecondition | Code::NotFound => Answer::Refused,
        Code::Unavailable
        | Code::Aborted
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Unknown => Answer::Retry,
        _ => Answer::Rejected,
    }
}

/// Why a command or query did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The business refused it (illegal transition, not enough stock, no such order): an
    /// outcome to act on, not to retry.
    #[error("{rpc} refused ({}): {}", .reason.map_or("no reason code", ErrorReason::code), .status.message())]
    Refused {
        /// The RPC.
        rpc: &'static str,
        /// Why, from the answer's `ErrorInfo` detail: `None` when it has none or a code this
        /// build does not know (a newer API's), a refusal nothing specific can be done about.
        reason: Option<ErrorReason>,
        /// The API's answer.
        status: Status,
    },
    /// The API or its database stayed unavailable through every retry; trying later is safe
    /// (same idempotency key).
    #[error("{rpc} unavailable after retries: {}", .status.message())]
    Unavailable {
        /// The RPC.
        rpc: &'static str,
        /// The last answer.
        status: Status,
    },
    /// The request itself is wrong (invalid, not permitted, bad credentials): retrying cannot
    /// help; a bug, a configuration error, or bad input that passed the caller's validation.
    #[error("{rpc} rejected ({:?}): {}", .status.code(), .status.message())]
    Rejected {
        /// The RPC.
        rpc: &'static str,
        /// The API's answer.
        status: Status,
    },
    /// The service token cannot travel in a gRPC header (it is not visible ASCII).
    #[error("the service token cannot be sent: {0}")]
    Token(String),
}

impl CommandError {
    /// The refusal `status` is, with the reason code it carries.
    fn refused(rpc: &'static str, status: Status) -> Self {
        CommandError::Refused {
            rpc,
            reason: refusal_reason(&status),
            status,
        }
    }

    /// The error a call's last answer `status` is, by its gRPC code ([`classify`]): a
    /// retryable code that is still the answer after every retry is [`CommandError::Unavailable`].
    pub fn classified(rpc: &'static str, status: Status) -> Self {
        match classify(status.code()) {
            Answer::Refused => CommandError::refused(rpc, status),
            Answer::Retry => CommandError::Unavailable { rpc, status },
            Answer::Rejected => CommandError::Rejected { rpc, status },
        }
    }

    /// Whether the same call may succeed later: the API (or its database) stayed unavailable
    /// through every retry. The caller retries it until it is back, and never parks anything
    /// for it. Every other failure (a refusal, a rejected request, a token that cannot be
    /// sent) comes back the same every time.
    pub fn is_transient(&self) -> bool {
        matches!(self, CommandError::Unavailable { .. })
    }

    /// The gRPC code of the answer, if there was one.
    pub fn code(&self) -> Option<Code> {
        match self {
            CommandError::Refused { status, .. }
            | CommandError::Unavailable { status, .. }
            | CommandError::Rejected { status, .. } => Some(status.code()),
            CommandError::Token(_) => None,
        }
    }
}

/// The reason code of a refusal: the `reason` of its `google.rpc.ErrorInfo` detail in the
/// command API's domain ([`proto::ERROR_DOMAIN`]). The message is never read.
fn refusal_reason(status: &Status) -> Option<ErrorReason> {
    status
        .get_details_error_info()
        .filter(|info| info.domain == proto::ERROR_DOMAIN)
        .and_then(|info| ErrorReason::from_code(&info.reason))
}

/// What caused a command: carried to the API as `x-correlation-id` / `x-causation-id`, so the
/// events it appends can be traced back.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    /// The business flow (an order id).
    pub correlation_id: String,
    /// The event or message that led to the command.
    pub causation_id: String,
}

/// The command API as one flow sees it.
pub struct CommandClient {
    channel: Channel,
    /// `Bearer <service token>`: a token the issuer minted; the flows hold no signing key.
    authorization: SecretString,
    attempts: u32,
    call_timeout: Duration,
}

impl CommandClient {
    /// A client on `channel` calling with `service_token` (a `service` token the issuer
    /// minted: its subject scopes the idempotency keys); transient failures are tried
    /// `attempts` times in all.
    pub fn new(channel: Channel, service_token: &SecretString, attempts: u32) -> Self {
        Self {
            channel,
            authorization: SecretString::from(format!("Bearer {}", service_token.expose_secret())),
            attempts: attempts.max(1),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Gives each attempt `timeout` (sent as `grpc-timeout`, enforced on this side too), so a
    /// paused or silently cut-off API delays a flow by at most that per attempt.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Sends `message` with `send`, each attempt within the call timeout, retrying what
    /// [`classify`] says may succeed later (retrying with the same key is safe).
    async fn call<M, R, F, Fut>(
        &self,
        rpc: &'static str,
        message: M,
        cause: &Cause,
        send: F,
    ) -> Result<R, CommandError>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let mut attempt = 0;
        let mut backoff = COMMAND_RETRY;
        loop {
            attempt += 1;
            let mut request = Request::new(message.clone());
            request.set_timeout(self.call_timeout);
            let metadata = request.metadata_mut();
            let mut authorization = MetadataValue::try_from(self.authorization.expose_secret())
                .map_err(|_| CommandError::Token("not visible ASCII".into()))?;
            authorization.set_sensitive(true);
            metadata.insert("authorization", authorization);
            for (name, value) in [
                ("x-correlation-id", &cause.correlation_id),
                ("x-causation-id", &cause.causation_id),
            ] {
                if let (false, Ok(value)) = (value.is_empty(), MetadataValue::try_from(value)) {
                    metadata.insert(name, value);
                }
            }
            // The flow step's span: the command's span on the API continues it.
            if let Some(Ok(value)) = trace_context::current().map(MetadataValue::try_from) {
                metadata.insert(trace_context::TRACEPARENT, value);
            }
            let status = match send(self.channel.clone(), request).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => status,
            };
            if classify(status.code()) != Answer::Retry || attempt >= self.attempts {
                return Err(CommandError::classified(rpc, status));
            }
            tracing::debug!(rpc, attempt, code = ?status.code(), "retrying command");
            tokio::time::sleep(backoff.failed()).await;
        }
    }

    /// `OrderService/PlaceOrder`.
    pub async fn place_order(
        &self,
        request: pb::PlaceOrderRequest,
        cause: &Cause,
    ) -> Result<pb::PlaceOrderResponse, CommandError> {
        self.call(
            "PlaceOrder",
            request,
            cause,
            |channel, request| async move {
                OrderServiceClient::new(channel).place_order(request).await
            },
        )
        .await
    }

    /// `OrderService/GetOrder`.
    pub async fn get_order(
        &self,
        order_id: &str,
        cause: &Cause,
    ) -> Result<pb::Order, CommandError> {
        let request = pb::GetOrderRequest {
            order_id: order_id.to_owned(),
        };
        self.call("GetOrder", request, cause, |channel, request| async move {
            OrderServiceClient::new(channel).get_order(request).await
        })
        .await
    }

    /// `OrderService/AcceptOrder`.
    pub async fn accept_order(
        &self,
        key: String,
        order_id: &str,
        cause: &Cause,
    ) -> Result<pb::CommitResult, CommandError> {
        let request = pb::OrderTransitionRequest {
            idempotency_key: key,
            order_id: order_id.to_owned(),
        };
        self.call(
            "AcceptOrder",
            request,
            cause,
            |channel, request| async move {
                OrderServiceClient::new(channel).accept_order(request).await
            },
        )
        .await
    }

    /// `OrderService/RejectOrder`.
    pub async fn reject_order(
        &self,
        request: pb::RejectOrderRequest,
        cause: &Cause,
    ) -> Result<pb::CommitResult, CommandError> {
        self.call(
            "RejectOrder",
            request,
            cause,
            |channel, request| async move {
                OrderServiceClient::new(channel).reject_order(request).await
            },
        )
        .await
    }

    /// `OrderService/RecordPaymentCaptured`.
    pub async fn record_payment_captured(
        &self,
        request: pb::RecordPaymentCapturedRequest,
        cause: &Cause,
    ) -> Result<pb::CommitResult, CommandError> {
        self.call(
            "RecordPaymentCaptured",
            request,
            cause,
            |channel, request| async move {
                OrderServiceClient::new(channel)
                    .record_payment_captured(request)
                    .await
            },
        )
        .await
    }

    /// `OrderService/RecordPaymentDeclined`.
    pub async fn record_payment_declined(
        &self,
        request: pb::RecordPaymentDeclinedRequest,
        cause: &Cause,
    ) -> Result<pb::CommitResult, CommandError> {
        self.call(
            "RecordPaymentDeclined",
            request,
            cause,
            |channel, request| async move {
                OrderServiceClient::new(channel)
                    .record_payment_declined(request)
                    .await
            },
        )
        .await
    }

    /// `OrderService/RecordPaymentRefunded`.
    pub async fn record_payment_refunded(
        &self,
        request: pb::RecordPaymentRefundedRequest,
        cause: &Cause,
    ) -> Result<pb::CommitResult, CommandError> {
        self.call(
            "RecordPaymentRefunded",
            request,
            cause,
            |channel, request| async move {
                OrderServiceClient::new(channel)
                    .record_payment_refunded(request)
                    .await
            },
        )
        .await
    }

    /// `InventoryService/ReserveStock`.
    pub async fn reserve_stock(
        &self,
        request: pb::ReserveStockRequest,
        cause: &Cause,
    ) -> Result<pb::CommitResult, CommandError> {
        self.call(
            "ReserveStock",
            request,
            cause,
            |channel, request| async move {
                InventoryServiceClient::new(channel)
                    .reserve_stock(request)
                    .await
            },
        )
        .await
    }

    /// `InventoryService/ReleaseReservation`.
    pub async fn release_reservation(
        &self,
        request: pb::ReleaseReservationRequest,
        cause: &Cause,
    ) -> Result<pb::CommitResult, CommandError> {
        self.call(
            "ReleaseReservation",
            request,
            cause,
            |channel, request| async move {
                InventoryServiceClient::new(channel)
                    .release_reservation(request)
                    .await
            },
        )
        .await
    }

    /// `InventoryService/CommitReservation`.
    pub async fn commit_reservation(
        &self,
        request: pb::CommitReservationRequest,
        cause: &Cause,
    ) -> Result<pb::CommitResult, CommandError> {
        self.call(
            "CommitReservation",
            request,
            cause,
            |channel, request| async move {
                InventoryServiceClient::new(channel)
                    .commit_reservation(request)
                    .await
            },
        )
        .await
    }

    /// `LoyaltyService/EarnPoints`.
    pub async fn earn_points(
        &self,
        request: pb::EarnPointsRequest,
        cause: &Cause,
    ) -> Result<pb::CommitResult, CommandError> {
        self.call(
            "EarnPoints",
            request,
            cause,
            |channel, request| async move {
                LoyaltyServiceClient::new(channel)
                    .earn_points(request)
                    .await
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    fn refusal(message: &str, domain: &str, code: &str) -> Status {
        Status::with_error_details(
            Code::FailedPrecondition,
            message,
            ErrorDetails::with_error_info(code, domain, HashMap::new()),
        )
    }

    #[test]
    fn a_refusal_is_read_by_its_code_never_by_its_message() {
        for (message, code, reason) in [
            (
                "order 5f0c already holds a reservation",
                "OUT_OF_STOCK",
                ErrorReason::OutOfStock,
            ),
            (
                "the reservation exists",
                "ALREADY_RESERVED",
                ErrorReason::AlreadyReserved,
            ),
        ] {
            let error =
                CommandError::refused("ReserveStock", refusal(message, proto::ERROR_DOMAIN, code));
            assert!(
                matches!(error, CommandError::Refused { reason: Some(read), .. } if read == reason),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_refusal_without_a_code_of_ours_has_no_reason() {
        for status in [
            Status::failed_precondition("order 5f0c already holds a reservation"),
            refusal("x", "another.service", "ALREADY_RESERVED"),
            refusal("x", proto::ERROR_DOMAIN, "A_CODE_FROM_A_NEWER_API"),
        ] {
            assert_eq!(refusal_reason(&status), None, "{status:?}");
        }
    }

    #[test]
    fn an_answer_that_may_have_committed_is_retried_with_the_same_key() {
        // CANCELLED is what tonic reports for its own expired deadline and for a connection
        // dropped mid-call (a command API stopped during an outage): retried, never a
        // rejection that would park the saga's commit as poison.
        for code in [
            Code::Unavailable,
            Code::Aborted,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::ResourceExhausted,
            Code::Unknown,
        ] {
            assert_eq!(classify(code), Answer::Retry, "{code:?}");
        }
        for code in [Code::FailedPrecondition, Code::NotFound] {
            assert_eq!(classify(code), Answer::Refused, "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Unauthenticated,
        ] {
            assert_eq!(classify(code), Answer::Rejected, "{code:?}");
        }
    }
}
