//! The port every read model implements, and the contract the runtime relies on.

use crate::LoggedCommit;
use async_trait::async_trait;

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
