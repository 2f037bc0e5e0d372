//! Resuming stopped aggregates: apply an aggregate's parked commits in log order and remove each
//! one applied, stopping at the first that fails again.
//!
//! Two callers: the operator's `redrive` once a projection is fixed ([`redrive`],
//! [`redrive_all`]), and every worker on its own ([`resume`]): at start and then periodically
//! it resumes the aggregates that need no operator, those stopped at a commit the previous build
//! did not understand and this one does (the upgrade after a rolling deploy), and those whose
//! head is a commit parked behind one that a redrive has since applied.

use std::collections::BTreeMap;

use commit_log::{LoggedCommit, Vocabulary};
use service_kit::error_chain;

use crate::parked::{ParkedKind, ParkedStore};
use crate::RuntimeError;
use commit_log::projection::{Projection, ProjectionError};

/// What a redrive of one aggregate did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveOutcome {
    /// Parked commits applied and removed.
    pub applied: usize,
    /// The first commit that failed again: its position and why. It and the commits after it
    /// stay parked.
    pub stopped_at: Option<(u64, String)>,
    /// Commits still parked when it stopped.
    pub remaining: usize,
}

/// Applies the parked commits of one aggregate through `projection`, oldest first, reading them
/// with everything this build knows.
///
/// A shard consumer that sees the aggregate still parked keeps parking its new commits
/// meanwhile, so the redrive reads the parked list again until it is empty; a commit parked
/// just after that last read waits at the head of the queue, where the next [`resume`] pass
/// (or redrive) applies it (it is never applied out of order).
pub async fn redrive(
    projection: &dyn Projection,
    parked: &ParkedStore,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<RedriveOutcome, RuntimeError> {
    redrive_with(
        projection,
        parked,
        aggregate_type,
        aggregate_id,
        Vocabulary::this_build(),
    )
    .await
}

/// [`redrive`], reading the records with `vocabulary`.
pub async fn redrive_with(
    projection: &dyn Projection,
    parked: &ParkedStore,
    aggregate_type: &str,
    aggregate_id: &str,
    vocabulary: &Vocabulary,
) -> Result<RedriveOutcome, RuntimeError> {
    let mut outcome = RedriveOutcome::default();
    loop {
        let records = parked
            .list(projection.name(), aggregate_type, aggregate_id)
            .await?;
        if records.is_empty() {
            return Ok(outcome);
        }
        for (done, record) in records.iter().enumerate() {
            let failure = match commit_log::decode_with(&record.data, vocabulary) {
                Ok(commit) => match apply_one(projection, commit).await {
                    Ok(()) => None,
                    Err(error) => {
                        let reason = error_chain(&error);
                        // Understood and refused for good: it waits for an operator now, whatever
                        // parked it (a build that did not know it, or a predecessor).
                        if !error.is_transient() && record.kind != ParkedKind::Poison {
                            parked.mark_poison(record, &reason).await?;
                        }
                        Some(reason)
                    }
                },
                Err(error) if error.is_poison() => {
                    Some(format!("undecodable record: {}", error_chain(&error)))
                }
                Err(not_understood) => Some(error_chain(&not_understood)),
            };
            if let Some(reason) = failure {
                tracing::warn!(
                    projection = projection.name(),
                    aggregate_type,
                    aggregate_id,
                    position = record.position,
                    %reason,
                    "redrive stopped"
                );
                outcome.stopped_at = Some((record.position, reason));
                outcome.remaining = records.len() - done;
                return Ok(outcome);
            }
            parked.remove(record).await?;
            outcome.applied += 1;
        }
    }
}

/// Redrives every aggregate with parked commits for `projection`; the outcome of each.
pub async fn redrive_all(
    projection: &dyn Projection,
    parked: &ParkedStore,
) -> Result<Vec<(String, String, RedriveOutcome)>, RuntimeError> {
    let mut outcomes = Vec::new();
    for (aggregate_type, aggregate_id) in parked.aggregates(projection.name()).await? {
        let outcome = redrive(projection, parked, &aggregate_type, &aggregate_id).await?;
        outcomes.push((aggregate_type, aggregate_id, outcome));
    }
    Ok(outcomes)
}

/// What one [`resume`] pass did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeReport {
    /// The aggregates it redrove, with what each redrive did.
    pub resumed: Vec<(String, String, RedriveOutcome)>,
    /// Aggregates still stopped, by what their head waits for: [`ParkedKind::Poison`] (an
    /// operator) or [`ParkedKind::NotUnderstood`] (a build that knows the event).
    pub waiting: BTreeMap<ParkedKind, usize>,
}

/// Resumes, for `projection`, every stopped aggregate that needs no operator: its head is a
/// commit `vocabulary` now understands (an upgraded build), or a commit parked behind one that
/// is no longer there. Aggregates stopped at poison wait for `redrive`.
///
/// Every worker runs it, at start and periodically; two passes on one aggregate at once apply
/// the same commits in the same order, which the projections' per-aggregate markers (and the
/// flows' idempotency keys) make harmless.
pub async fn resume(
    projection: &dyn Projection,
    parked: &ParkedStore,
    vocabulary: &Vocabulary,
) -> Result<ResumeReport, RuntimeError> {
    let mut report = ResumeReport::default();
    for (aggregate_type, aggregate_id) in parked.aggregates(projection.name()).await? {
        let records = parked
            .list(projection.name(), &aggregate_type, &aggregate_id)
            .await?;
        let Some(head) = records.first() else {
            continue;
        };
        let resumable = match head.kind {
            ParkedKind::Poison => false,
            ParkedKind::Behind => true,
            ParkedKind::NotUnderstood => commit_log::decode_with(&head.data, vocabulary).is_ok(),
        };
        if !resumable {
            *report.waiting.entry(head.kind).or_default() += 1;
            continue;
        }
        let outcome = redrive_with(
            projection,
            parked,
            &aggregate_type,
            &aggregate_id,
            vocabulary,
        )
        .await?;
        tracing::info!(
            projection = projection.name(),
            aggregate_type,
            aggregate_id,
            applied = outcome.applied,
            stopped = outcome.stopped_at.is_some(),
            "stopped aggregate resumed"
        );
        if let Some((position, _)) = &outcome.stopped_at {
            // What it waits for now: the kind of the record it stopped at, as the table says.
            let kind = parked
                .list(projection.name(), &aggregate_type, &aggregate_id)
                .await?
                .into_iter()
                .find(|record| record.position == *position)
                .map_or(head.kind, |record| record.kind);
            *report.waiting.entry(kind).or_default() += 1;
        }
        report.resumed.push((aggregate_type, aggregate_id, outcome));
    }
    Ok(report)
}

/// The operator's report of a redrive: one line per aggregate.
pub fn describe_redrive(outcomes: &[(String, String, RedriveOutcome)]) -> String {
    if outcomes.is_empty() {
        return "nothing parked\n".to_owned();
    }
    let mut report = String::new();
    for (kind, id, outcome) in outcomes {
        let line = match &outcome.stopped_at {
            None => format!("{kind}/{id}: {} applied, none left\n", outcome.applied),
            Some((position, reason)) => format!(
                "{kind}/{id}: {} applied; stopped at position {position} ({reason}); {} still parked\n",
                outcome.applied, outcome.remaining
            ),
        };
        report.push_str(&line);
    }
    report
}

async fn apply_one(
    projection: &dyn Projection,
    commit: LoggedCommit,
) -> Result<(), ProjectionError> {
    projection.apply(std::slice::from_ref(&commit)).await
}
