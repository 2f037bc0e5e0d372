//! The flows' spans, each a step of an order's trace: a reaction to a commit from the log
//! continues the commit's trace, a queue message's handling continues the trace of whoever sent
//! it (its `traceparent` attribute). Commands sent and messages queued within such a span carry
//! its `traceparent` on ([`crate::command_client`], [`crate::payments::PaymentQueue`]), so the
//! saga's commands and the payment processor's join the order's trace.
//!
//! With traces off ([`trace_context::recording`]) no span is created.

use commit_log::LoggedCommit;
use service_kit::trace_context;
use tracing::Span;

/// The span of `step` (e.g. `saga.react`) handling `commit`, in the commit's trace.
pub(crate) fn commit_step(step: &'static str, commit: &LoggedCommit) -> Span {
    if !trace_context::recording() || commit.traceparent.is_empty() {
        return Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "flow.step",
        otel.name = step,
        aggregate_type = %commit.aggregate_type,
        aggregate_id = %commit.aggregate_id,
        last_sequence = commit.last_sequence(),
    );
    trace_context::continue_trace(&span, &commit.traceparent);
    span
}

/// The span of handling a message of the queue named `queue`, in the sender's trace when the
/// message carries one (else the root of a new trace).
pub(crate) fn message_step(
    queue: &'static str,
    message_id: &str,
    traceparent: Option<&str>,
) -> Span {
    if !trace_context::recording() {
        return Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "flow.message",
        otel.name = %format_args!("{queue}.handle"),
        queue,
        message_id,
    );
    if let Some(traceparent) = traceparent {
        trace_context::continue_trace(&span, traceparent);
    }
    span
}
