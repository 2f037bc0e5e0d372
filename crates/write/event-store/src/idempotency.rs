//! Retention of client idempotency keys: a key is kept for a configured window, then deleted by
//! a background pruner, after which a retry with it is treated as a new command.
//!
//! At the brief's 5 million orders a day, with about eight keyed commands per order, keys grow
//! by some 40 million rows a day if nothing removes them. The pruner deletes expired keys in
//! small batches, each its own short transaction with bounded lock and statement timeouts,
//! oldest first through the `committed_at` index. It never touches the position counter the
//! committer serialises on, and deleting old rows does not block inserting new ones, so commits
//! go on while it runs. Several processes may prune at once: `SKIP LOCKED` hands each its own
//! rows instead of making them wait for each other.

use std::future::Future;
use std::time::Duration;

use crate::error::StoreError;
use crate::PgEventStore;

/// One batch: the oldest expired keys, at most `$2`, skipping rows another pruner holds. The
/// cutoff is on the database's clock, the clock that stamped `committed_at`.
const PRUNE_BATCH: &str = "\
DELETE FROM command_idempotency
WHERE idempotency_key IN (
    SELECT idempotency_key FROM command_idempotency
    WHERE committed_at < statement_timestamp() - make_interval(secs => $1)
    ORDER BY committed_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)";

/// Bounds for one batch's transaction: a pruner must never hold anything for long.
const BATCH_TIMEOUTS: &str = "\
SELECT set_config('statement_timeout', '5s', true), set_config('lock_timeout', '1s', true)";

/// How long idempotency keys are kept and how they are pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRetention {
    /// How long a key is kept after its commit. A retry within it returns the first outcome; a
    /// retry after it (once the key is pruned) is a new command.
    pub retention: Duration,
    /// Pause between pruning passes; a pass deletes batches until none is full.
    pub prune_interval: Duration,
    /// Keys deleted per statement (and per transaction).
    pub prune_batch: u32,
}

impl Default for KeyRetention {
    /// Keys are kept for 7 days and pruned every minute, 1,000 at a time.
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(60),
            prune_batch: 1_000,
        }
    }
}

impl PgEventStore {
    /// Deletes up to `batch` of the oldest keys committed more than `retention` ago, in one
    /// short transaction; returns how many it deleted.
    pub async fn prune_expired_keys(
        &self,
        retention: Duration,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(BATCH_TIMEOUTS).execute(&mut *tx).await?;
        let deleted = sqlx::query(PRUNE_BATCH)
            .bind(retention.as_secs_f64())
            .bind(i64::from(batch.max(1)))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    /// Prunes expired keys every `prune_interval` until `stop` completes. A pass deletes full
    /// batches until one comes back short; a failed batch (database down, a timeout) is logged
    /// and the pass retried at the next interval. Counts deleted keys in
    /// `orderpipe_store_idempotency_keys_pruned_total` and failed batches in
    /// `orderpipe_store_idempotency_prune_errors_total`.
    pub async fn run_key_pruner(&self, config: KeyRetention, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = self.prune_pass(config) => {}
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(config.prune_interval) => {}
            }
        }
    }

    async fn prune_pass(&self, config: KeyRetention) {
        let mut pass_total = 0;
        loop {
            match self
                .prune_expired_keys(config.retention, config.prune_batch)
                .await
            {
                Ok(deleted) => {
                    metrics::counter!("orderpipe_store_idempotency_keys_pruned_total")
                        .increment(deleted);
                    pass_total += deleted;
                    if deleted < u64::from(config.prune_batch.max(1)) {
                        break;
                    }
                }
                Err(error) => {
                    metrics::counter!("orderpipe_store_idempotency_prune_errors_total")
                        .increment(1);
                    tracing::warn!(%error, "pruning idempotency keys failed; retrying later");
                    break;
                }
            }
        }
        if pass_total > 0 {
            tracing::info!(
                pruned = pass_total,
                retention_secs = config.retention.as_secs(),
                "expired idempotency keys pruned"
            );
        }
    }
}
