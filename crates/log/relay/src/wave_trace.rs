//! The spans of one PutRecords call. The call serves many orders, so it has a span of its own,
//! `relay.put_records`, linked to each commit's trace; each commit gets a `relay.publish` span
//! in its own trace (a child of its command's span), from the call's start to Kinesis's answer
//! for the record that carries it.
//!
//! With traces off ([`trace_context::recording`]) no span is created.

use service_kit::trace_context;
use tracing::Span;

use crate::record_log::PutOutcome;
use crate::round::PackedRecord;

/// The open spans of one call in flight.
pub(crate) struct WaveTrace {
    call: Span,
    /// Per record, in the call's order, its commits' spans; empty when traces are off.
    commits: Vec<Vec<Span>>,
}

impl WaveTrace {
    /// Opens the spans of a call carrying `records`.
    pub fn start(records: &[PackedRecord]) -> Self {
        if !trace_context::recording() {
            return Self {
                call: Span::none(),
                commits: Vec::new(),
            };
        }
        let call = tracing::info_span!("relay.put_records", records = records.len());
        let commits = records
            .iter()
            .map(|record| {
                record
                    .commits
                    .iter()
                    .map(|commit| {
                        if commit.traceparent.is_empty() {
                            return Span::none();
                        }
                        trace_context::link(&call, &commit.traceparent);
                        let (aggregate_type, aggregate_id) = &commit.aggregate;
                        let span = tracing::info_span!(
                            parent: None,
                            "relay.publish",
                            %aggregate_type,
                            %aggregate_id,
                            first_position = commit.first_position,
                            commits_in_record = record.commits.len(),
                            outcome = tracing::field::Empty,
                        );
                        trace_context::continue_trace(&span, &commit.traceparent);
                        span
                    })
                    .collect()
            })
            .collect();
        Self { call, commits }
    }

    /// The call's span, to run the call in.
    pub fn call(&self) -> Span {
        self.call.clone()
    }

    /// Ends every commit's span with Kinesis's answer for its record (`None`: the call failed
    /// as a whole).
    pub fn answered(self, outcomes: Option<&[PutOutcome]>) {
        for (index, spans) in self.commits.into_iter().enumerate() {
            let outcome = match outcomes.and_then(|outcomes| outcomes.get(index)) {
                Some(PutOutcome::Stored { .. }) => "stored",
                Some(PutOutcome::Refused { .. }) => "refused",
                None => "failed",
            };
            for span in spans {
                span.record("outcome", outcome);
            }
        }
    }
}
