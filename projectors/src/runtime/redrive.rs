//! The operator's redrive: once a projection is fixed, apply an aggregate's parked commits in
//! log order and remove each one applied, stopping at the first that fails again.

use commit_log::LoggedCommit;

use crate::projection::Projection;
use crate::runtime::parked::ParkedStore;
use crate::runtime::{error_chain, RuntimeError};

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

/// Applies the parked commits of one aggregate through `projection`, oldest first.
///
/// A shard consumer that sees the aggregate still parked keeps parking its new commits
/// meanwhile, so the redrive reads the parked list again until it is empty; a commit parked
/// just after that last read waits for the next redrive (it is never applied out of order).
pub async fn redrive(
    projection: &dyn Projection,
    parked: &ParkedStore,
    aggregate_type: &str,
    aggregate_id: &str,
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
            let failure = match commit_log::decode(&record.data) {
                Ok(commit) => apply_one(projection, commit).await.err(),
                Err(error) => Some(format!("undecodable record: {}", error_chain(&error))),
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

async fn apply_one(projection: &dyn Projection, commit: LoggedCommit) -> Result<(), String> {
    projection
        .apply(std::slice::from_ref(&commit))
        .await
        .map_err(|error| error_chain(&error))
}
