//! Exponential back-off with jitter, capped: after the n-th failure in a row the relay waits
//! between half and all of `min(max, initial * 2^(n-1))`. The jitter keeps relays of several
//! deployments (or a relay and the SDK's own retries) from hitting a throttled shard in step.

use std::time::Duration;

/// Back-off state across failures in a row.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Starts with no failures.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// Records a failure and returns how long to wait before trying again.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // 2^20 times any sensible initial wait is far past any sensible cap.
        let exponent = (self.failures - 1).min(20);
        let ceiling = self.initial.saturating_mul(1 << exponent).min(self.max);
        ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
    }

    /// Records a success: the next failure starts from the initial wait again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_the_cap_and_reset_on_success() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let mut backoff = Backoff::new(initial, max);
        for ceiling_ms in [100, 200, 400, 800, 1000, 1000] {
            let wait = backoff.failed();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        for _ in 0..100 {
            assert!(backoff.failed() <= max, "never above the cap");
        }
        backoff.succeeded();
        assert!(backoff.failed() <= initial);
    }
}
