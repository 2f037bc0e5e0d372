//! The relay's loops: standing by for the lock, publishing while holding it, and reporting the
//! outbox backlog.
//!
//! A round reads the oldest commits from the outbox, sends them in waves ([`crate::round`]) and
//! removes each wave's acknowledged commits before the next wave goes out. Refused records stay
//! in the outbox and block their aggregate until a later round, after a back-off, publishes them.
//! A record is only ever removed after Kinesis acknowledged it, so a crash between the two
//! publishes it again on restart: the log is at-least-once, and per aggregate in order.
//!
//! Records pack several commits of one shard ([`crate::round`]), so the relay keeps the stream's
//! shard map. PutRecords says which shard each record landed in; one that landed elsewhere than
//! the map said means the stream was split or merged since: the map is read again, and every
//! commit of that record whose aggregate now maps to another shard than the one it landed in
//! stays in the outbox with its aggregate blocked, so the next round publishes it on its
//! aggregate's shard before anything later of it. Readers of sibling shards run in parallel:
//! without that copy, the aggregate's next commit on its own shard would arrive after a gap.
//!
//! With a linger (`relay.max_linger_ms`), a round that finds only records still lingering
//! publishes nothing and the relay waits until the oldest has lingered (or a commit wakes it
//! first, which may fill a record), then reads the outbox again. A stop during the wait leaves
//! those commits in the outbox, for the next active relay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_store::{PgEventStore, StoreError};
use service_kit::{error_chain, Backoff};
use sqlx::postgres::PgConnectOptions;
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::Instrument;

use crate::health::RelayStatus;
use crate::leadership::{Candidate, Leadership, LockError};
use crate::record_log::{PutOutcome, RecordLog, RecordLogError, THROTTLED};
use crate::round::{Packing, Round, Unpublishable, Wave};
use crate::shard_map::ShardMap;
use crate::waiting_since::WaitingSince;
use event_store::CommitWakeup;

use crate::wave_trace::WaveTrace;

/// How often every relay, active or standby, reports the outbox backlog.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);

/// The active relay's work, between taking the lock and losing or releasing it.
pub(crate) struct Publisher {
    pub store: PgEventStore,
    pub log: Arc<dyn RecordLog>,
    pub batch_size: u32,
    pub poll_interval: Duration,
    /// Where to listen for commits (see [`event_store::CommitWakeup`]).
    pub commit_listener: PgConnectOptions,
    pub backoff: Backoff,
    pub status: Arc<RelayStatus>,
    /// How records are filled: commits per record, and the linger.
    pub packing: Packing,
    /// The stream's open shards, as last read.
    pub shards: ShardMap,
    /// Since when each commit in the outbox has waited.
    pub waiting_since: WaitingSince,
}

/// Why the active relay stopped publishing.
enum Ended {
    /// Shutdown was asked for; the lock is still held and should be released.
    Stopped,
    /// The lock connection failed: another relay may be active now.
    LockLost(LockError),
}

/// What one round did.
#[derive(Debug, Default)]
struct RoundReport {
    read: usize,
    /// Commits acknowledged and removed from the outbox.
    published: usize,
    /// Commits acknowledged on a shard their aggregate no longer maps to: published again by
    /// the next round.
    misrouted: usize,
    /// Kinesis refused a record or failed a call: slow down before the next round.
    refused: bool,
    /// When the oldest commit held back to linger will have waited out the linger.
    lingers_until: Option<Instant>,
}

enum RoundError {
    LockLost(LockError),
    Database(StoreError),
}

/// Stands by until this relay holds the lock, publishes while it does, and goes back to standby
/// when the lock connection is lost, until `stop` turns true. Then it finishes the PutRecords
/// call in flight and its removals, and releases the lock.
pub(crate) async fn run(
    mut candidate: Candidate,
    mut publisher: Publisher,
    standby_retry: Duration,
    mut stop: watch::Receiver<bool>,
) {
    metrics::gauge!("orderpipe_relay_active").set(0.0);
    while !*stop.borrow() {
        match candidate.try_lead().await {
            Ok(Some(mut leadership)) => {
                tracing::info!("took the relay lock: this relay publishes");
                metrics::gauge!("orderpipe_relay_active").set(1.0);
                let ended = publisher.publish(&mut leadership, &mut stop).await;
                metrics::gauge!("orderpipe_relay_active").set(0.0);
                match ended {
                    Ended::Stopped => {
                        leadership.release().await;
                        tracing::info!("released the relay lock");
                        return;
                    }
                    Ended::LockLost(error) => tracing::warn!(
                        error = %error_chain(&error),
                        "lost the relay lock connection: stopped publishing, standing by"
                    ),
                }
            }
            Ok(None) => tracing::debug!("another relay holds the lock: standing by"),
            Err(error) => tracing::warn!(
                error = %error_chain(&error),
                "cannot reach PostgreSQL for the relay lock: standing by"
            ),
        }
        if stopped_within(&mut stop, standby_retry).await {
            break;
        }
    }
}

impl Publisher {
    async fn publish(
        &mut self,
        leadership: &mut Leadership,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let wakeup = CommitWakeup::start(self.commit_listener.clone(), "orderpipe-relay-wakeup");
        loop {
            if *stop.borrow() {
                return Ended::Stopped;
            }
            if let Err(error) = leadership.check().await {
                return Ended::LockLost(error);
            }
            let wait = match self.round(leadership, stop).await {
                Ok(report) if report.refused => self.backoff.failed(),
                Ok(report) => {
                    self.backoff.succeeded();
                    if report.published > 0 || report.misrouted > 0 {
                        // More may be waiting: read again at once.
                        continue;
                    }
                    // Empty, lingering, or only commits that cannot be published (already
                    // reported).
                    tracing::trace!(read = report.read, "nothing to publish now");
                    let wait = report.lingers_until.map_or(self.poll_interval, |until| {
                        until
                            .saturating_duration_since(Instant::now())
                            .min(self.poll_interval)
                    });
                    if wakeup.wait(stop, wait).await {
                        return Ended::Stopped;
                    }
                    continue;
                }
                Err(RoundError::LockLost(error)) => return Ended::LockLost(error),
                Err(RoundError::Database(error)) => {
                    metrics::counter!("orderpipe_relay_retries_total", "reason" => "database")
                        .increment(1);
                    tracing::warn!(error = %error_chain(&error), "outbox unreachable; backing off");
                    self.backoff.failed()
                }
            };
            if stopped_within(stop, wait).await {
                return Ended::Stopped;
            }
        }
    }

    async fn round(
        &mut self,
        leadership: &mut Leadership,
        stop: &watch::Receiver<bool>,
    ) -> Result<RoundReport, RoundError> {
        let commits = self
            .store
            .read_outbox(self.batch_size)
            .await
            .map_err(RoundError::Database)?;
        let mut report = RoundReport {
            read: commits.len(),
            ..RoundReport::default()
        };
        let commits = self
            .waiting_since
            .stamp(commits, Instant::now(), OffsetDateTime::now_utc());
        let (mut round, unpublishable) = Round::plan(commits);
        self.report_unpublishable(&unpublishable);
        if self.shards.is_empty() && self.packing.max_commits_per_record > 1 {
            self.refresh_shards().await;
        }

        // A stop lets the wave in flight finish with its removals, then ends the round.
        while !*stop.borrow() {
            let Some(Wave { records: packed }) =
                round.next_wave(&self.shards, self.packing, Instant::now())
            else {
                report.lingers_until = round.lingers_until(self.packing.max_linger);
                break;
            };
            // Right before the put: a relay that may have lost the lock must not publish.
            leadership.check().await.map_err(RoundError::LockLost)?;
            let sent = packed.len();
            let trace = WaveTrace::start(&packed);
            let (records, packed): (Vec<_>, Vec<_>) = packed
                .into_iter()
                .map(|packed| (packed.record, (packed.shard_id, packed.commits)))
                .unzip();
            metrics::histogram!("orderpipe_relay_records_per_put").record(sent as f64);
            let started = Instant::now();
            let result = self.log.put(records).instrument(trace.call()).await;
            metrics::histogram!("orderpipe_relay_publish_seconds").record(started.elapsed());
            trace.answered(result.as_deref().ok());
            let outcomes = match result {
                Ok(outcomes) if outcomes.len() == sent => outcomes,
                Ok(outcomes) => {
                    self.put_failed(&RecordLogError::MismatchedResults {
                        sent,
                        answered: outcomes.len(),
                    });
                    report.refused = true;
                    return Ok(report);
                }
                Err(error) => {
                    self.put_failed(&error);
                    report.refused = true;
                    return Ok(report);
                }
            };
            self.status.set_put_failure(None);

            // A record that landed on another shard than the map said: the map is stale.
            let stale = packed.iter().zip(&outcomes).any(|((predicted, _), outcome)| {
                matches!((predicted, outcome), (Some(predicted), PutOutcome::Stored { shard_id, .. }) if predicted != shard_id)
            });
            if stale {
                metrics::counter!("orderpipe_relay_shard_map_refreshes_total").increment(1);
                tracing::info!("a record landed on a shard the map did not predict: the stream was resharded; reading its shards again");
                self.refresh_shards().await;
            }
            let mut stored = Vec::with_capacity(sent);
            let mut records_stored = 0;
            let mut refusals = Vec::new();
            for ((predicted, commits), outcome) in packed.into_iter().zip(outcomes) {
                match outcome {
                    PutOutcome::Stored { shard_id, .. } => {
                        metrics::histogram!("orderpipe_relay_commits_per_record")
                            .record(commits.len() as f64);
                        records_stored += 1;
                        for commit in commits {
                            if predicted.as_ref().is_some_and(|p| *p != shard_id)
                                && self.shards.shard_of(commit.hash_key) != Some(shard_id.as_str())
                            {
                                // Its aggregate's later commits go to another shard, read in
                                // parallel with this one: published again there (by a later
                                // round, before anything later of it), it arrives in order;
                                // this copy is a duplicate readers skip by its sequence.
                                metrics::counter!("orderpipe_relay_retries_total", "reason" => "resharded")
                                    .increment(1);
                                report.misrouted += 1;
                                round.block(commit.aggregate);
                            } else {
                                stored.push(commit.first_position);
                            }
                        }
                    }
                    PutOutcome::Refused {
                        error_code,
                        error_message,
                    } => {
                        let reason = if error_code == THROTTLED {
                            "throttled"
                        } else {
                            "record_refused"
                        };
                        metrics::counter!("orderpipe_relay_retries_total", "reason" => reason)
                            .increment(1);
                        tracing::debug!(
                            commits = commits.len(),
                            first_position = commits.first().map(|c| c.first_position),
                            error_code = %error_code,
                            error_message = %error_message,
                            "record refused; its aggregates wait for the next round"
                        );
                        refusals.push(error_code);
                        for commit in commits {
                            round.block(commit.aggregate);
                        }
                    }
                }
            }
            if !refusals.is_empty() {
                report.refused = true;
                tracing::warn!(
                    refused = refusals.len(),
                    sent,
                    first_code = %refusals[0],
                    "Kinesis refused records; they go again after a back-off"
                );
            }
            metrics::counter!("orderpipe_relay_commits_total").increment(stored.len() as u64);
            metrics::counter!("orderpipe_relay_records_total").increment(records_stored as u64);
            let waited = self
                .store
                .remove_published(&stored)
                .await
                .map_err(RoundError::Database)?;
            for in_outbox in waited {
                metrics::histogram!("orderpipe_relay_commit_to_log_seconds").record(in_outbox);
            }
            report.published += stored.len();
        }
        Ok(report)
    }

    /// Reads the stream's open shards into the map; on failure the map is emptied, so records
    /// carry one commit each (always placed right) until a later round reads it.
    async fn refresh_shards(&mut self) {
        match self.log.open_shards().await {
            Ok(shards) => self.shards = ShardMap::new(shards),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot list the stream's shards; one commit per record until it can");
                self.shards = ShardMap::default();
            }
        }
    }

    fn put_failed(&self, error: &RecordLogError) {
        let (reason, retryable) = if error.is_retryable() {
            ("request_failed", true)
        } else {
            ("request_rejected", false)
        };
        metrics::counter!("orderpipe_relay_retries_total", "reason" => reason).increment(1);
        let error = error_chain(error);
        if retryable {
            tracing::warn!(error = %error, "PutRecords failed; backing off");
        } else {
            tracing::error!(error = %error, "PutRecords rejected; check the stream and permissions");
        }
        self.status
            .set_put_failure(Some(format!("PutRecords failed: {error}")));
    }

    fn report_unpublishable(&self, unpublishable: &[Unpublishable]) {
        for commit in unpublishable {
            tracing::error!(
                first_position = commit.first_position,
                aggregate_type = %commit.aggregate.0,
                aggregate_id = %commit.aggregate.1,
                reason = %commit.reason,
                "commit cannot be published; its aggregate is held back until it is dealt with"
            );
        }
        self.status
            .set_unpublishable(unpublishable.first().map(|commit| {
                format!(
                    "commit at position {} of {} {} cannot be published: {}",
                    commit.first_position, commit.aggregate.0, commit.aggregate.1, commit.reason
                )
            }));
    }
}

/// Sets `orderpipe_outbox_backlog` and `orderpipe_outbox_oldest_age_seconds` every second
/// until `stop`. Every relay reports, standby ones too: the backlog belongs to the database, and
/// a backlog that grows while no relay is active is exactly what an alarm should see.
pub(crate) async fn report_backlog(store: PgEventStore, mut stop: watch::Receiver<bool>) {
    loop {
        match store.outbox_backlog().await {
            Ok(backlog) => {
                metrics::gauge!("orderpipe_outbox_backlog").set(backlog.commits as f64);
                metrics::gauge!("orderpipe_outbox_oldest_age_seconds")
                    .set(backlog.oldest_age.map_or(0.0, |age| age.as_secs_f64()));
            }
            Err(error) => {
                tracing::debug!(error = %error_chain(&error), "cannot read the outbox backlog")
            }
        }
        if stopped_within(&mut stop, BACKLOG_INTERVAL).await {
            return;
        }
    }
}

/// Waits `wait`, or less if `stop` turns true; returns whether it did.
async fn stopped_within(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(wait) => false,
        // An error means the sender is gone: the application is dropping, so stop too.
        _ = stop.wait_for(|stopped| *stopped) => true,
    };
    stopped || *stop.borrow()
}
