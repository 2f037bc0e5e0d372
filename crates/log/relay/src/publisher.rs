//! The relay's loops: standing by for the lock, publishing while holding it, and reporting the
//! outbox backlog.
//!
//! A round reads the oldest commits from the outbox, sends them in waves ([`crate::round`]) and
//! removes each wave's acknowledged commits before the next wave goes out. Refused records stay
//! in the outbox and block their aggregate until a later round, after a back-off, publishes them.
//! A record is only ever removed after Kinesis acknowledged it, so a crash between the two
//! publishes it again on restart: the log is at-least-once, and per aggregate in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_store::{PgEventStore, StoreError};
use service_kit::{error_chain, Backoff};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tracing::Instrument;

use crate::health::RelayStatus;
use crate::leadership::{Candidate, Leadership, LockError};
use crate::record_log::{PutOutcome, RecordLog, RecordLogError, THROTTLED};
use crate::round::{Round, Unpublishable, Wave};
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
    published: usize,
    /// Kinesis refused a record or failed a call: slow down before the next round.
    refused: bool,
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
                    if report.published > 0 {
                        // More may be waiting: read again at once.
                        continue;
                    }
                    // Empty, or only commits that cannot be published (already reported).
                    tracing::trace!(read = report.read, "nothing to publish");
                    if wakeup.wait(stop, self.poll_interval).await {
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
        let (mut round, unpublishable) = Round::plan(commits);
        self.report_unpublishable(&unpublishable);

        // A stop lets the wave in flight finish with its removals, then ends the round.
        while !*stop.borrow() {
            let Some(Wave {
                commits,
                records,
                traceparents,
            }) = round.next_wave()
            else {
                break;
            };
            // Right before the put: a relay that may have lost the lock must not publish.
            leadership.check().await.map_err(RoundError::LockLost)?;
            let sent = records.len();
            let trace = WaveTrace::start(&commits, &traceparents);
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

            let mut stored = Vec::with_capacity(sent);
            let mut refusals = Vec::new();
            for ((first_position, aggregate), outcome) in commits.into_iter().zip(outcomes) {
                match outcome {
                    PutOutcome::Stored { .. } => stored.push(first_position),
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
                            first_position,
                            aggregate_type = %aggregate.0,
                            aggregate_id = %aggregate.1,
                            error_code = %error_code,
                            error_message = %error_message,
                            "record refused; its aggregate waits for the next round"
                        );
                        refusals.push(error_code);
                        round.block(aggregate);
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
            metrics::counter!("orderpipe_relay_records_total").increment(stored.len() as u64);
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
