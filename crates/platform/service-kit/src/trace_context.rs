//! One trace per order across processes: the W3C `traceparent` of the span that caused a piece
//! of work, carried with it (gRPC metadata, the event metadata of a commit, the log envelope,
//! an SQS message attribute) and continued or linked where the work is done.
//!
//! Everything here is a no-op until [`crate::telemetry`] installs a trace export: call sites
//! check [`recording`] before they create a per-commit span or parse a `traceparent`, so a
//! process without a collector pays one atomic load per batch.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and metadata key, and message attribute) that carries a trace context.
pub const TRACEPARENT: &str = "traceparent";

static RECORDING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces: spans of the pipeline are created only then.
pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

pub(crate) fn start_recording() {
    RECORDING.store(true, Ordering::Relaxed);
}

/// The `traceparent` of the current span, to send along with the work it causes; `None` when
/// traces are off or there is no span.
pub fn current() -> Option<String> {
    if !recording() {
        return None;
    }
    traceparent_of(&Span::current())
}

/// The `traceparent` naming `span`, if it is part of a trace.
pub fn traceparent_of(span: &Span) -> Option<String> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Makes `span` a child of the span `traceparent` names (from another process), so it joins
/// that trace. An empty or malformed `traceparent` leaves `span` the root of a new trace.
pub fn continue_trace(span: &Span, traceparent: &str) {
    if let Some(remote) = remote_span(traceparent) {
        // Fails only if the span already started its OpenTelemetry span: then it keeps its
        // trace, which is all that is left to do.
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

/// Links `span` to the span `traceparent` names: one batch serving many orders is linked to
/// each order's trace instead of belonging to one of them.
pub fn link(span: &Span, traceparent: &str) {
    if let Some(remote) = remote_span(traceparent) {
        span.add_link(remote);
    }
}

fn remote_span(traceparent: &str) -> Option<SpanContext> {
    if !recording() || traceparent.is_empty() {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&OneHeader(traceparent));
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// A carrier holding only a `traceparent`.
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_back_as_the_span_it_names() {
        start_recording();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let remote = remote_span(traceparent).expect("a valid traceparent");
        assert_eq!(
            remote.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(remote.span_id().to_string(), "00f067aa0ba902b7");
        assert!(remote.is_sampled());
    }

    #[test]
    fn malformed_traceparents_name_no_span() {
        start_recording();
        for bad in [
            "",
            "not a traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(remote_span(bad).is_none(), "{bad:?} was accepted");
        }
    }
}
