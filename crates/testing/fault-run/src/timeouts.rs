//! The leases, timeouts and retry windows the run configures its processes with, and the fault
//! lengths derived from them: a pause or a silent network cut outlasts every lease, lock and
//! request timeout; a command-api outage outlasts every retry window of the flows. Both are
//! printed at the start of a run and written in the report.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use service_kit::Backoff;

use crate::faults::FaultTimings;

/// How much longer than the longest timeout a pause, cut or outage lasts, so the timeout has
/// surely fired (and the process reacting to it has had time to act) before the fault ends.
const MARGIN: Duration = Duration::from_secs(5);

/// The flows' command client's waits between tries of one command
/// (`crates/queues/flows/src/command_client.rs`, `COMMAND_RETRY`: 100 ms doubling to 2 s).
const COMMAND_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// The projector runtime's waits between tries of one batch
/// (`crates/log/kinesis-consumer/src/consumer.rs`, `APPLY_RETRY`: 100 ms doubling to 30 s).
const APPLY_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));

/// Every bound the run sets on its processes, by what it bounds.
#[derive(Debug, Clone, Serialize)]
pub struct RunTimeouts {
    /// A projector worker's lease (`ORDERPIPE_RUNTIME__LEASE_DURATION_MS` of `projectors`).
    pub projector_lease: Duration,
    /// The flows worker's lease on the log (`ORDERPIPE_RUNTIME__LEASE_DURATION_MS` of `flows`).
    pub flows_lease: Duration,
    /// The command-api's bound on any request (`ORDERPIPE_GRPC__REQUEST_TIMEOUT_MS`).
    pub api_request: Duration,
    /// How long a process waits for a pooled database connection
    /// (`ORDERPIPE_DATABASE__ACQUIRE_TIMEOUT_MS`).
    pub database_acquire: Duration,
    /// The command-api's sessions: the longest statement
    /// (`ORDERPIPE_DATABASE__SESSION__STATEMENT_TIMEOUT_MS`).
    pub database_statement: Duration,
    /// The command-api's sessions: the longest lock wait
    /// (`ORDERPIPE_DATABASE__SESSION__LOCK_TIMEOUT_MS`).
    pub database_lock: Duration,
    /// The command-api's sessions: how long an open transaction may wait for its process before
    /// PostgreSQL ends it (`ORDERPIPE_DATABASE__SESSION__IDLE_IN_TRANSACTION_TIMEOUT_MS`).
    pub database_idle_in_transaction: Duration,
    /// The command-api's group-commit writer: the bound on a batch as a whole
    /// (`ORDERPIPE_STORE__WRITER__BATCH_TIMEOUT_MS`; its lock, statement and idle bounds are
    /// set below the session's).
    pub writer_batch: Duration,
    /// The load clients' deadline per request.
    pub client_request: Duration,
    /// Tries of one command by the flows' command client (`ORDERPIPE_COMMAND_API__ATTEMPTS`).
    pub flows_command_attempts: u32,
    /// Tries of one batch by a log consumer of the flows before it parks
    /// (`ORDERPIPE_RUNTIME__MAX_APPLY_ATTEMPTS`).
    pub flows_apply_attempts: u32,
    /// First delay before a failed queue message is received again
    /// (`ORDERPIPE_SQS__RETRY_INITIAL_MS`), doubled per receive.
    pub queue_retry_initial: Duration,
    /// The longest such delay (`ORDERPIPE_SQS__RETRY_MAX_MS`).
    pub queue_retry_max: Duration,
    /// Long polling per receive (`ORDERPIPE_SQS__WAIT_TIME_SECONDS`).
    pub queue_wait: Duration,
    /// Receives of a message before SQS dead-letters it (the payments queue's redrive policy).
    pub max_receive_count: u32,
}

impl RunTimeouts {
    /// The longest lease, lock or request timeout: what a pause or a silent cut must outlast.
    pub fn longest_timeout(&self) -> Duration {
        [
            self.projector_lease,
            self.flows_lease,
            self.api_request,
            self.database_acquire,
            self.database_statement,
            self.database_lock,
            self.database_idle_in_transaction,
            self.writer_batch,
            self.client_request,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }

    /// How long the saga or notifications keep retrying a commit whose commands meet an absent
    /// command-api before they park it (an upper bound: a refused connection fails at once).
    pub fn log_consumer_retry_window(&self) -> Duration {
        let one_batch = backoff_total(COMMAND_RETRY, self.flows_command_attempts);
        one_batch * self.flows_apply_attempts
            + backoff_total(APPLY_RETRY, self.flows_apply_attempts)
    }

    /// How long a payment message keeps coming back while its result command fails before SQS
    /// dead-letters it.
    pub fn queue_retry_window(&self) -> Duration {
        let per_receive =
            backoff_total(COMMAND_RETRY, self.flows_command_attempts) + self.queue_wait;
        backoff_total(
            Backoff::new(self.queue_retry_initial, self.queue_retry_max),
            self.max_receive_count,
        ) + per_receive * self.max_receive_count
    }

    /// How long a commit on one command-api may take while another is paused or cut off
    /// holding the position counter: PostgreSQL ends the stalled transaction after the idle or
    /// statement bound (the writer's batch bound ends its own wait first), plus the client's
    /// retry backoff (at most 2 s) and a second for the commit itself.
    pub fn other_writer_bound(&self) -> Duration {
        self.database_idle_in_transaction
            .max(self.database_statement)
            .max(self.writer_batch)
            + Duration::from_secs(3)
    }

    /// The fault lengths these bounds call for.
    pub fn fault_timings(&self) -> FaultTimings {
        FaultTimings {
            pause: self.longest_timeout() + MARGIN,
            api_outage: self
                .log_consumer_retry_window()
                .max(self.queue_retry_window())
                + MARGIN,
        }
    }
}

/// The longest `policy` waits in all between `tries` tries (every wait at its ceiling).
fn backoff_total(policy: Backoff, tries: u32) -> Duration {
    policy.longest_wait(tries.saturating_sub(1))
}

impl fmt::Display for RunTimeouts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let timings = self.fault_timings();
        write!(
            f,
            "a pause or silent cut lasts {:.1} s (the longest timeout, {:.1} s, plus {:.0} s: \
             leases {:.1} s projectors / {:.1} s flows, request {:.1} s API / {:.1} s clients, \
             connection acquire {:.1} s, statement {:.1} s, lock {:.1} s, idle in transaction \
             {:.1} s, writer batch {:.1} s); a command-api outage lasts {:.1} s (the longest retry \
             window plus {:.0} s: {:.1} s saga/notifications, {:.1} s payments queue)",
            timings.pause.as_secs_f64(),
            self.longest_timeout().as_secs_f64(),
            MARGIN.as_secs_f64(),
            self.projector_lease.as_secs_f64(),
            self.flows_lease.as_secs_f64(),
            self.api_request.as_secs_f64(),
            self.client_request.as_secs_f64(),
            self.database_acquire.as_secs_f64(),
            self.database_statement.as_secs_f64(),
            self.database_lock.as_secs_f64(),
            self.database_idle_in_transaction.as_secs_f64(),
            self.writer_batch.as_secs_f64(),
            timings.api_outage.as_secs_f64(),
            MARGIN.as_secs_f64(),
            self.log_consumer_retry_window().as_secs_f64(),
            self.queue_retry_window().as_secs_f64(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> RunTimeouts {
        RunTimeouts {
            projector_lease: Duration::from_secs(3),
            flows_lease: Duration::from_secs(3),
            api_request: Duration::from_secs(5),
            database_acquire: Duration::from_secs(3),
            database_statement: Duration::from_secs(5),
            database_lock: Duration::from_secs(2),
            database_idle_in_transaction: Duration::from_secs(5),
            writer_batch: Duration::from_secs(4),
            client_request: Duration::from_secs(6),
            flows_command_attempts: 3,
            flows_apply_attempts: 4,
            queue_retry_initial: Duration::from_secs(1),
            queue_retry_max: Duration::from_secs(4),
            queue_wait: Duration::from_secs(1),
            max_receive_count: 5,
        }
    }

    #[test]
    fn a_pause_outlasts_every_timeout_and_an_outage_every_retry_window() {
        let timeouts = timeouts();
        let timings = timeouts.fault_timings();
        assert_eq!(timings.pause, Duration::from_secs(11));
        // 4 batches of (100 + 200 ms) plus 100 + 200 + 400 ms between them.
        assert_eq!(
            timeouts.log_consumer_retry_window(),
            Duration::from_millis(1_900)
        );
        // 1 + 2 + 4 + 4 s between 5 receives, each up to 300 ms of command retries + 1 s poll.
        assert_eq!(timeouts.queue_retry_window(), Duration::from_millis(17_500));
        assert_eq!(timings.api_outage, Duration::from_millis(22_500));
    }
}
