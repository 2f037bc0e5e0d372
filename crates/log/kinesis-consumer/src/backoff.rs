//! Exponential backoff for retried AWS calls and projection retries.

use std::time::Duration;

/// Doubles the delay after every failure, up to a cap; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the following one is twice as long (capped). Up to a quarter of
    /// the delay is random, so workers throttled together do not retry in lockstep.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter_range = delay.as_millis() as u64 / 4 + 1;
        let jitter = u64::from(std::process::id() ^ subsec_nanos()) % jitter_range;
        delay - Duration::from_millis(jitter.min(delay.as_millis() as u64))
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

fn subsec_nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert!((75..=100).contains(&delays[0]), "{delays:?}");
        assert!((150..=200).contains(&delays[1]), "{delays:?}");
        assert!((262..=350).contains(&delays[2]), "{delays:?}");
        assert!((262..=350).contains(&delays[3]), "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
