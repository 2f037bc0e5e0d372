//! The shape of a morning rush: how many clients are active when, which stores they order from,
//! and how their orders end.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api_flow::Fate;

/// The phase of the rush at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Clients join linearly up to the peak.
    RampUp,
    /// The peak holds.
    Sustain,
    /// Clients leave linearly.
    RampDown,
    /// The profile is over.
    Done,
}

impl Phase {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::RampUp => "ramp-up",
            Phase::Sustain => "sustain",
            Phase::RampDown => "ramp-down",
            Phase::Done => "done",
        }
    }
}

/// Ramp up, sustain, ramp down.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RushProfile {
    /// Clients at the start and end of the ramps (at least 1).
    pub base_clients: usize,
    /// Clients during the sustain phase.
    pub peak_clients: usize,
    /// How long the ramp up takes.
    #[serde(serialize_with = "seconds")]
    pub ramp_up: Duration,
    /// How long the peak holds.
    #[serde(serialize_with = "seconds")]
    pub sustain: Duration,
    /// How long the ramp down takes.
    #[serde(serialize_with = "seconds")]
    pub ramp_down: Duration,
    /// Orders started per second at the peak (scaled with the active clients on the ramps);
    /// `None`: every client starts its next order as soon as the last one ends.
    pub peak_orders_per_second: Option<f64>,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl RushProfile {
    /// The whole profile's length.
    pub fn total(&self) -> Duration {
        self.ramp_up + self.sustain + self.ramp_down
    }

    /// The phase at `elapsed` since the start.
    pub fn phase_at(&self, elapsed: Duration) -> Phase {
        if elapsed < self.ramp_up {
            Phase::RampUp
        } else if elapsed < self.ramp_up + self.sustain {
            Phase::Sustain
        } else if elapsed < self.total() {
            Phase::RampDown
        } else {
            Phase::Done
        }
    }

    /// How many clients are active at `elapsed` (0 once the profile is over).
    pub fn clients_at(&self, elapsed: Duration) -> usize {
        let base = self.base_clients.max(1).min(self.peak_clients);
        let span = (self.peak_clients - base) as f64;
        let ramp = |done: Duration, length: Duration| {
            if length.is_zero() {
                1.0
            } else {
                (done.as_secs_f64() / length.as_secs_f64()).clamp(0.0, 1.0)
            }
        };
        match self.phase_at(elapsed) {
            Phase::RampUp => base + (span * ramp(elapsed, self.ramp_up)).round() as usize,
            Phase::Sustain => self.peak_clients,
            Phase::RampDown => {
                let done = elapsed - self.ramp_up - self.sustain;
                self.peak_clients - (span * ramp(done, self.ramp_down)).round() as usize
            }
            Phase::Done => 0,
        }
    }
}

/// Spaces the clients' order starts to the profile's rate: orders arrive as customers do, at a
/// rate, instead of as fast as the clients can go (a closed loop that saturates whatever part is
/// slowest and leaves nothing to the rest of the pipeline on a shared machine). A client that
/// falls behind its slot starts at once; missed slots are not made up in a burst.
#[derive(Debug)]
pub struct OrderPacer {
    profile: RushProfile,
    peak_rate: f64,
    started: Instant,
    next_slot: Mutex<Instant>,
}

impl OrderPacer {
    /// A pacer for `profile` from `started`; `None` when the profile sets no rate.
    pub fn new(profile: RushProfile, started: Instant) -> Option<Self> {
        let peak_rate = profile.peak_orders_per_second.filter(|rate| *rate > 0.0)?;
        Some(Self {
            profile,
            peak_rate,
            started,
            next_slot: Mutex::new(started),
        })
    }

    /// Waits for the next order's slot.
    pub async fn wait_turn(&self) {
        let slot = {
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let active = self.profile.clients_at(now - self.started).max(1);
            let rate = self.peak_rate * active as f64 / self.profile.peak_clients.max(1) as f64;
            let slot = (*next).max(now);
            *next = slot + Duration::from_secs_f64(1.0 / rate);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// Which store an order goes to: a share of the orders goes to a few hot stores (the busy
/// stations of the rush), the rest spreads over the other stores.
#[derive(Debug, Clone, Serialize)]
pub struct StorePicker {
    /// Every store's id; the first `hot` are the hot ones.
    pub stores: Vec<String>,
    /// How many stores are hot.
    pub hot: usize,
    /// The share of orders that goes to a hot store (0.0..=1.0).
    pub hot_share: f64,
}

impl StorePicker {
    /// `count` stores named `<prefix>-<n>`, the first `hot` of them hot.
    pub fn new(prefix: &str, count: usize, hot: usize, hot_share: f64) -> Self {
        let count = count.max(1);
        Self {
            stores: (0..count).map(|n| format!("{prefix}-{n}")).collect(),
            hot: hot.min(count),
            hot_share: hot_share.clamp(0.0, 1.0),
        }
    }

    /// A store for the next order, drawn with `random` (uniform in `0.0..1.0`) twice.
    pub fn pick(&self, mut random: impl FnMut() -> f64) -> &str {
        let count = self.stores.len();
        let index = |low: usize, high: usize, r: f64| {
            low + ((r * (high - low) as f64) as usize).min(high - low - 1)
        };
        let chosen = if self.hot > 0 && (self.hot == count || random() < self.hot_share) {
            index(0, self.hot, random())
        } else if self.hot < count {
            index(self.hot, count, random())
        } else {
            index(0, count, random())
        };
        &self.stores[chosen]
    }
}

/// How orders end, as relative weights: `completed,cancelled,open`, e.g. `80,10,10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OrderMix {
    /// Weight of orders taken to completion.
    pub completed: u32,
    /// Weight of orders cancelled after placing.
    pub cancelled: u32,
    /// Weight of orders left open (accepted, on the board).
    pub open: u32,
}

impl OrderMix {
    /// The fate of the next order, from `random` uniform in `0.0..1.0`.
    pub fn pick(&self, random: f64) -> Fate {
        let total = f64::from(self.completed + self.cancelled + self.open);
        let point = random * total;
        if point < f64::from(self.completed) {
            Fate::Completed
        } else if point < f64::from(self.completed + self.cancelled) {
            Fate::Cancelled
        } else {
            Fate::Open
        }
    }
}

/// A malformed `--mix`.
#[derive(Debug, thiserror::Error)]
#[error(
    "--mix takes three weights COMPLETED,CANCELLED,OPEN (e.g. 80,10,10), not at all zero: {0:?}"
)]
pub struct InvalidMix(String);

impl FromStr for OrderMix {
    type Err = InvalidMix;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let weights: Vec<u32> = value
            .split(',')
            .map(|part| part.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| InvalidMix(value.to_owned()))?;
        match weights[..] {
            [completed, cancelled, open] if completed + cancelled + open > 0 => Ok(Self {
                completed,
                cancelled,
                open,
            }),
            _ => Err(InvalidMix(value.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn profile() -> RushProfile {
        RushProfile {
            base_clients: 2,
            peak_clients: 32,
            ramp_up: Duration::from_secs(10),
            sustain: Duration::from_secs(20),
            ramp_down: Duration::from_secs(10),
            peak_orders_per_second: None,
        }
    }

    #[test]
    fn clients_ramp_up_hold_and_ramp_down() {
        let p = profile();
        let at = |s: u64| p.clients_at(Duration::from_secs(s));
        assert_eq!((at(0), at(5), at(10), at(29)), (2, 17, 32, 32));
        assert_eq!((at(30), at(35), at(39), at(40)), (32, 17, 5, 0));
        assert_eq!(p.phase_at(Duration::from_secs(12)), Phase::Sustain);
    }

    #[test]
    fn the_hot_share_of_orders_goes_to_hot_stores() {
        let picker = StorePicker::new("s", 10, 2, 0.75);
        let mut rng = fastrand::Rng::with_seed(7);
        let hot = (0..10_000)
            .filter(|_| ["s-0", "s-1"].contains(&picker.pick(|| rng.f64())))
            .count();
        assert!((7_000..8_000).contains(&hot), "{hot}");
    }

    #[test]
    fn the_mix_parses_and_picks_by_weight() {
        let mix: OrderMix = "80,10,10".parse().unwrap();
        assert_eq!(mix.pick(0.79), Fate::Completed);
        assert_eq!(mix.pick(0.85), Fate::Cancelled);
        assert_eq!(mix.pick(0.95), Fate::Open);
        assert!("0,0,0".parse::<OrderMix>().is_err());
        assert!("80,20".parse::<OrderMix>().is_err());
    }
}
