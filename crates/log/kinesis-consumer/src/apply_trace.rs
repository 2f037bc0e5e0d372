//! The spans of one `apply` of a batch. The batch serves many orders, so it has a span of its
//! own, `project.apply_batch`, linked to each commit's trace; each commit gets a
//! `project.apply` span in its own trace (a child of its command's span) lasting the batch's
//! apply. A projection that does its own work per commit (the flows) makes its spans children
//! of the commit's trace too.
//!
//! With traces off ([`trace_context::recording`]) no span is created.

use commit_log::LoggedCommit;
use service_kit::trace_context;
use tracing::Span;

/// The open spans of one apply attempt; dropping it ends them.
pub(crate) struct ApplyTrace {
    batch: Span,
    /// Ended with the batch.
    _commits: Vec<Span>,
}

impl ApplyTrace {
    /// Opens the spans of `projection` applying `commits`.
    pub fn start(projection: &'static str, commits: &[LoggedCommit]) -> Self {
        if !trace_context::recording() {
            return Self {
                batch: Span::none(),
                _commits: Vec::new(),
            };
        }
        let batch = tracing::info_span!("project.apply_batch", projection, commits = commits.len());
        let commits = commits
            .iter()
            .filter(|commit| !commit.traceparent.is_empty())
            .map(|commit| {
                trace_context::link(&batch, &commit.traceparent);
                let span = tracing::info_span!(
                    parent: None,
                    "project.apply",
                    projection,
                    aggregate_type = %commit.aggregate_type,
                    aggregate_id = %commit.aggregate_id,
                    first_sequence = commit.first_sequence(),
                    last_sequence = commit.last_sequence(),
                );
                trace_context::continue_trace(&span, &commit.traceparent);
                span
            })
            .collect();
        Self {
            batch,
            _commits: commits,
        }
    }

    /// The batch's span, to run the apply in.
    pub fn batch(&self) -> Span {
        self.batch.clone()
    }
}
