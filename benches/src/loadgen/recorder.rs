//! What the load generator's clients report: every call's latency by phase and RPC, the errors,
//! the orders that ran to their end, and a one-second window for the progress display.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::Code;

use super::profile::Phase;
use crate::api_flow::{CallObserver, Fate};
use crate::latency::Latencies;

/// Calls seen in one phase.
#[derive(Debug, Default, Clone)]
pub struct PhaseCalls {
    /// Successful calls' latencies.
    pub latencies: Latencies,
    /// Failed calls.
    pub errors: u64,
}

#[derive(Default)]
struct Inner {
    phase: Option<Phase>,
    by_phase: BTreeMap<Phase, PhaseCalls>,
    by_rpc: BTreeMap<&'static str, Latencies>,
    errors: BTreeMap<String, u64>,
    window: Latencies,
    orders: u64,
    completed_orders: u64,
}

/// Shared by every client task.
#[derive(Default)]
pub struct Recorder(Mutex<Inner>);

/// Everything recorded, once the run is over.
pub struct Recorded {
    /// Calls per phase.
    pub by_phase: BTreeMap<Phase, PhaseCalls>,
    /// Successful calls' latencies per RPC.
    pub by_rpc: BTreeMap<&'static str, Latencies>,
    /// Failed calls per gRPC status code.
    pub errors: BTreeMap<String, u64>,
    /// Orders that ran all their commands.
    pub orders: u64,
    /// Of them, completed ones.
    pub completed_orders: u64,
}

impl Recorder {
    /// Calls from now on count towards `phase`.
    pub fn enter(&self, phase: Phase) {
        self.lock().phase = Some(phase);
    }

    /// The calls since the last call of this function (the progress display's window).
    pub fn take_window(&self) -> Latencies {
        std::mem::take(&mut self.lock().window)
    }

    /// An order of `fate` ran all its commands.
    pub fn finished(&self, fate: Fate) {
        let mut inner = self.lock();
        inner.orders += 1;
        if fate == Fate::Completed {
            inner.completed_orders += 1;
        }
    }

    /// Failed calls so far.
    pub fn error_count(&self) -> u64 {
        self.lock().errors.values().sum()
    }

    /// Everything recorded so far, taken out (call once the clients have stopped).
    pub fn take(&self) -> Recorded {
        let mut inner = self.lock();
        Recorded {
            by_phase: std::mem::take(&mut inner.by_phase),
            by_rpc: std::mem::take(&mut inner.by_rpc),
            errors: std::mem::take(&mut inner.errors),
            orders: std::mem::take(&mut inner.orders),
            completed_orders: std::mem::take(&mut inner.completed_orders),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A client that panicked while recording left plain counters behind: keep going.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CallObserver for Recorder {
    fn observe(&self, rpc: &'static str, elapsed: Duration, outcome: Result<(), Code>) {
        let mut inner = self.lock();
        let phase = inner.phase.unwrap_or(Phase::RampUp);
        match outcome {
            Ok(()) => {
                inner
                    .by_phase
                    .entry(phase)
                    .or_default()
                    .latencies
                    .record(elapsed);
                inner.by_rpc.entry(rpc).or_default().record(elapsed);
                inner.window.record(elapsed);
            }
            Err(code) => {
                inner.by_phase.entry(phase).or_default().errors += 1;
                *inner.errors.entry(format!("{rpc}: {code:?}")).or_default() += 1;
            }
        }
    }
}
