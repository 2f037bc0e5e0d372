//! The port every read model implements, and the contract the runtime relies on.

use std::time::Duration;

use crate::LoggedCommit;
use async_trait::async_trait;

/// How a consumer groups what it reads before it calls [`Projection::apply`] (and checkpoints):
/// the records read so far are applied once `max_commits` of them are waiting, or once the
/// oldest has waited `max_wait`, whichever comes first. Nothing waiting is checkpointed, so a
/// crash between flushes reads the waiting records again and nothing is lost or applied twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Apply as soon as this many commits wait (at least 1).
    pub max_commits: usize,
    /// Apply once the oldest waiting commit has waited this long (checked after every
    /// GetRecords answer, so a flush may come up to one poll interval later).
    pub max_wait: Duration,
}

impl FlushPolicy {
    /// Apply every GetRecords answer at once: the default, for views read live.
    pub const EVERY_READ: FlushPolicy = FlushPolicy {
        max_commits: 1,
        max_wait: Duration::ZERO,
    };

    /// Whether `waiting` commits, the oldest read `waited` ago, are due.
    pub fn is_due(&self, waiting: usize, waited: Duration) -> bool {
        waiting > 0 && (waiting >= self.max_commits.max(1) || waited >= self.max_wait)
    }
}

/// A read model built from the log.
///
/// Contract:
/// - `apply` receives commits in log order for each aggregate (commits of different aggregates
///   may interleave). It applies them in the order given and stops at the first one it cannot
///   apply.
/// - It is idempotent per aggregate: it records the last applied sequence of each aggregate (or
///   an equivalent marker) atomically with the view change, and a commit whose events it has
///   already applied changes nothing. Redelivery after a crash, a relay retry or a replay is
///   therefore harmless.
/// - A commit that starts past the next expected sequence of its aggregate (a gap: something
///   earlier was not applied) is not applied; it is reported as [`ProjectionError::Poison`] so
///   the runtime parks it with the rest of that aggregate.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The projection's stable name (`active_orders`, `history`, `analytics`): leases,
    /// checkpoints, parked records and metrics are keyed by it.
    fn name(&self) -> &'static str;

    /// How the runtime groups records into `apply` calls: by default every GetRecords answer
    /// at once; a warehouse load prefers fewer, larger calls.
    fn flush_policy(&self) -> FlushPolicy {
        FlushPolicy::EVERY_READ
    }

    /// Applies `commits`; see the trait's contract.
    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError>;
}

/// Why `apply` stopped. Every failure is classified here, once, as transient (retry the
/// batch until the dependency is back; never parked) or deterministic (this commit will fail
/// the same way every time: parked, with its aggregate's later commits behind it).
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A dependency failed (throttled, unreachable, timed out, a connection reset, a marker
    /// moved by a racing writer). Commits before the failure may or may not be applied;
    /// retrying the same batch is safe, and the runtime retries it until it succeeds.
    #[error("projection dependency failed: {0}")]
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `commits[index]` can never be applied (a gap, data the view cannot hold). Every commit
    /// before it was applied.
    #[error("commit {index} cannot be applied: {reason}")]
    Poison {
        /// Its index in the slice given to `apply`.
        index: usize,
        /// Why, for the dead-letter queue.
        reason: String,
    },
    /// Some commit of the batch can never be applied, but the store refused the batch as a
    /// whole (one set-based statement), so which one is not known. Nothing of the batch was
    /// kept (or what was is idempotent): the runtime applies the commits one at a time to find
    /// the one that fails and parks exactly that one.
    #[error("the batch was refused: {0}")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ProjectionError {
    /// Whether trying the same batch again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ProjectionError::Transient(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_is_due_by_size_or_by_age_and_never_empty() {
        let policy = FlushPolicy {
            max_commits: 100,
            max_wait: Duration::from_secs(5),
        };
        assert!(!policy.is_due(0, Duration::from_secs(60)));
        assert!(!policy.is_due(99, Duration::from_secs(4)));
        assert!(policy.is_due(100, Duration::ZERO));
        assert!(policy.is_due(1, Duration::from_secs(5)));
        assert!(FlushPolicy::EVERY_READ.is_due(1, Duration::ZERO));
    }
}
