//! The one retry policy of every orderpipe process: exponential backoff, capped, with full
//! jitter. The relay (PutRecords and the outbox), the projector runtime (AWS calls and batches a
//! projection failed transiently), the flows' command client (gRPC) and their SQS consumer
//! (visibility by receive count) all wait by it. It lives here rather than in `aws-support`
//! because half of what it paces is not an AWS call: PostgreSQL, the command API, a projection.
//!
//! **Why full jitter.** Before retry `n` the wait is drawn uniformly from zero to the ceiling
//! `min(max, initial * 2^(n-1))` (AWS Architecture Blog, "Exponential Backoff And Jitter"):
//! - of the exponential variants it spreads clients retrying together the most, so it does the
//!   least total work against a throttled shard or a recovering dependency, at a completion
//!   time as short as decorrelated jitter's and shorter than equal jitter's ("half plus a
//!   random half", whose fixed half keeps retries in step);
//! - it is a pure function of the retry number: a caller whose count lives elsewhere (SQS's
//!   receive count of a message) uses the same rule as one counting failures in a row. Decorrelated
//!   jitter needs the previous wait, which a redelivered message does not carry;
//! - its ceilings are the plain doubling every caller was tuned with, so each caller's longest
//!   wait, and the retry windows the fault run adds up from them ([`Backoff::longest_wait`]),
//!   are unchanged. Only the shortest wait drops to zero, which a single caller may see but a
//!   crowd of callers does not.

use std::time::Duration;

/// Exponential backoff with full jitter, capped (see the [module documentation](self)). A copy
/// of a policy constant is a fresh state: [`Backoff::failed`] counts failures in a row,
/// [`Backoff::succeeded`] starts again from the first wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// The ceiling starts at `initial` and doubles per retry up to `max`; no failures yet.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// Records a failure and returns how long to wait before trying again.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay(self.failures)
    }

    /// Records a success: the next failure waits as little as the first one.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// The wait before retry `retry` (1: the first retry, after the first failure): uniform
    /// between zero and [`Backoff::ceiling`].
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(fastrand::f64())
    }

    /// The longest wait before retry `retry`: `initial` doubled per retry after the first,
    /// capped at `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        // 2^20 times any sensible initial wait is far past any sensible cap.
        let doublings = retry.saturating_sub(1).min(20);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }

    /// The longest the first `retries` retries can wait in all: the sum of their ceilings.
    pub fn longest_wait(&self, retries: u32) -> Duration {
        (1..=retries).map(|retry| self.ceiling(retry)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));

    #[test]
    fn ceilings_double_from_the_first_wait_up_to_the_cap() {
        let ceilings: Vec<u128> = (1..=7).map(|n| POLICY.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(
            POLICY.ceiling(0),
            Duration::from_millis(100),
            "no retry yet"
        );
        assert_eq!(
            POLICY.ceiling(u32::MAX),
            Duration::from_millis(1000),
            "no overflow"
        );
    }

    #[test]
    fn every_wait_lies_between_zero_and_its_ceiling_and_spreads_over_it() {
        for retry in 1..=8 {
            let ceiling = POLICY.ceiling(retry);
            let waits: Vec<Duration> = (0..2_000).map(|_| POLICY.delay(retry)).collect();
            assert!(waits.iter().all(|wait| *wait <= ceiling), "retry {retry}");
            // Full jitter: both the low and the high quarter of the range are drawn (with 2,000
            // draws, missing either has a chance of about 1e-250).
            assert!(
                waits.iter().any(|wait| *wait < ceiling / 4),
                "retry {retry}"
            );
            assert!(
                waits.iter().any(|wait| *wait > ceiling * 3 / 4),
                "retry {retry}"
            );
        }
    }

    #[test]
    fn failures_in_a_row_raise_the_ceiling_and_a_success_resets_it() {
        let mut backoff = POLICY;
        for _ in 0..100 {
            assert!(backoff.failed() <= POLICY.max, "never above the cap");
        }
        backoff.succeeded();
        assert!(backoff.failed() <= POLICY.initial);
        assert!(backoff.failed() <= POLICY.initial * 2);
        assert_eq!(POLICY.failures, 0, "the constant itself is never advanced");
    }

    #[test]
    fn the_longest_wait_of_several_retries_adds_their_ceilings() {
        assert_eq!(POLICY.longest_wait(0), Duration::ZERO);
        assert_eq!(POLICY.longest_wait(1), Duration::from_millis(100));
        assert_eq!(
            POLICY.longest_wait(6),
            Duration::from_millis(100 + 200 + 400 + 800 + 1000 + 1000)
        );
    }
}
