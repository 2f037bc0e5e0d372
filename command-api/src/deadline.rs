//! Every call's time limit, answered as DEADLINE_EXCEEDED.
//!
//! tonic's `Server::timeout` answers a call that runs out of time with CANCELLED, which no gRPC
//! client retries and which tells the caller nothing about its command. Each command service is
//! wrapped in [`Deadline`] instead: the call's deadline is the server's request limit or the
//! client's `grpc-timeout`, whichever is sooner; the commit it makes carries that deadline to
//! the event store's writer (which never writes it afterwards, see
//! [`event_store::with_commit_deadline`]); and a call still running at the deadline is dropped
//! and answered DEADLINE_EXCEEDED. Whether such a command committed is settled by retrying it
//! with the same idempotency key: the retry returns the stored outcome, or runs it.

use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;

/// A gRPC service whose calls end at their deadline with DEADLINE_EXCEEDED.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S> Deadline<S> {
    /// `inner`, with every call limited to `limit` (or the client's shorter `grpc-timeout`).
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<S: NamedService> NamedService for Deadline<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<Body>> + NamedService,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let limit = client_timeout(request.headers()).map_or(self.limit, |t| t.min(self.limit));
        let deadline = tokio::time::Instant::now() + limit;
        let call = event_store::with_commit_deadline(deadline, self.inner.call(request));
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, call).await {
                Ok(response) => response,
                Err(_) => {
                    metrics::counter!("orderpipe_command_deadline_exceeded_total").increment(1);
                    tracing::warn!(
                        service = S::NAME,
                        limit_ms = limit.as_millis() as u64,
                        "call ran out of time"
                    );
                    Ok(Status::deadline_exceeded(format!(
                        "the call ran out of its {} ms; it may or may not have been committed: \
                         retry with the same idempotency_key to get its outcome",
                        limit.as_millis()
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// The client's `grpc-timeout` header: at most 8 digits and a unit (`H`ours, `M`inutes,
/// `S`econds, `m`illis, `u`micros, `n`anos). A malformed header is ignored (the server's limit
/// applies), as gRPC's specification asks.
fn client_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().expect("ascii"));
        client_timeout(&headers)
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in ["", "S", "5", "123456789S", "1.5S", "-1S", "5x"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
    }
}
