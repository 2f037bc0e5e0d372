//! Where a commit's time goes between the store and a view: every projection the process runs is
//! wrapped so that each `apply` records how old its commits were when it started (the store's
//! commit -> the relay's put -> GetRecords' interval -> the consumer handing it over) and how
//! long the write took, and how many commits each batch carried. With the relay's
//! `orderpipe_relay_commit_to_log_seconds` this splits a view's freshness into relay, log wait,
//! batch and write (`loadgen` prints the split).

use async_trait::async_trait;
use commit_log::projection::{FlushPolicy, Projection, ProjectionError};
use commit_log::LoggedCommit;
use time::OffsetDateTime;

/// Histogram `{projection}`: seconds from a commit's durability in the store to the start of
/// the `apply` that carried it (one sample per commit; the same clock on one machine, a
/// skewed one across machines).
pub const COMMIT_AGE_AT_APPLY: &str = "orderpipe_projection_commit_age_at_apply_seconds";
/// Histogram `{projection}`: seconds one `apply` took (a batch's write, successful or not).
pub const APPLY_SECONDS: &str = "orderpipe_projection_apply_seconds";
/// Counter `{projection}`: `apply` calls (batches).
pub const BATCHES: &str = "orderpipe_projection_batches_total";
/// Counter `{projection}`: commits handed to `apply` (with [`BATCHES`], commits per batch).
pub const BATCH_COMMITS: &str = "orderpipe_projection_batch_commits_total";

/// A projection whose applies are measured; behaves exactly as the one it wraps.
pub struct Metered<P: ?Sized> {
    inner: std::sync::Arc<P>,
}

impl<P: Projection + ?Sized> Metered<P> {
    /// Measures `inner`.
    pub fn new(inner: std::sync::Arc<P>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl<P: Projection + ?Sized> Projection for Metered<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn flush_policy(&self) -> FlushPolicy {
        self.inner.flush_policy()
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        let projection = self.inner.name();
        let now = OffsetDateTime::now_utc();
        let age = metrics::histogram!(COMMIT_AGE_AT_APPLY, "projection" => projection);
        for commit in commits {
            age.record((now - commit.committed_at).as_seconds_f64().max(0.0));
        }
        metrics::counter!(BATCHES, "projection" => projection).increment(1);
        metrics::counter!(BATCH_COMMITS, "projection" => projection)
            .increment(commits.len() as u64);
        let started = std::time::Instant::now();
        let applied = self.inner.apply(commits).await;
        metrics::histogram!(APPLY_SECONDS, "projection" => projection).record(started.elapsed());
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Recording(Mutex<Vec<usize>>);

    #[async_trait]
    impl Projection for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }

        fn flush_policy(&self) -> FlushPolicy {
            FlushPolicy {
                max_commits: 7,
                max_wait: std::time::Duration::from_secs(3),
            }
        }

        async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
            self.0.lock().expect("not poisoned").push(commits.len());
            Err(ProjectionError::Poison {
                index: 0,
                reason: "refused on purpose".into(),
            })
        }
    }

    #[tokio::test]
    async fn the_wrapped_projection_is_unchanged_to_its_consumer() {
        let inner = Arc::new(Recording::default());
        let metered = Metered::new(inner.clone());
        assert_eq!(metered.name(), "recording");
        assert_eq!(metered.flush_policy(), inner.flush_policy());
        let outcome = metered.apply(&[]).await;
        assert!(matches!(
            outcome,
            Err(ProjectionError::Poison { index: 0, .. })
        ));
        assert_eq!(*inner.0.lock().expect("not poisoned"), [0]);
    }
}
