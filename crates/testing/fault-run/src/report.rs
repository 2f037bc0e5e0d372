//! The run's summary: what was sent, what was injected, what the checks found; printed as
//! Markdown and written as `report.md` and `report.json`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::checks::Verdict;
use crate::faults::Injected;
use crate::load::OrderCounts;

/// Everything a fault run measured.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// The RNG seed (repeat the fault schedule with `--seed`).
    pub seed: u64,
    /// The bounds the processes ran with and the fault lengths derived from them.
    pub timeouts: String,
    /// How long the load and the faults lasted, in seconds.
    pub load_seconds: f64,
    /// Concurrent clients.
    pub clients: usize,
    /// Commands acknowledged.
    pub commands_acknowledged: usize,
    /// Of those, acknowledged only after one or more retries with the same key.
    pub acknowledged_after_retry: usize,
    /// Requests sent again after a retryable failure.
    pub retries: u64,
    /// Failures with INTERNAL among those (retried like the others).
    pub internal_errors: u64,
    /// Attempts the clients gave up waiting for (a paused or cut-off server).
    pub client_deadlines: u64,
    /// Answers with CANCELLED (none expected).
    pub cancelled_answers: usize,
    /// Commands the API refused (none expected).
    pub refused: Vec<String>,
    /// Commands never answered before the run gave up (none expected).
    pub unanswered: Vec<String>,
    /// Orders taken through their lifecycle, by end.
    pub orders: OrderCounts,
    /// Every fault, in order.
    pub faults: Vec<Injected>,
    /// Processes that exited on their own (and were started again), by name.
    pub unexpected_exits: BTreeMap<String, u32>,
    /// Seconds from the end of the load until every check passed (or gave up).
    pub settle_seconds: f64,
    /// The checks.
    pub verdicts: Vec<Verdict>,
}

impl RunReport {
    /// True when every check held and every command was answered without a refusal.
    pub fn nothing_lost(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
            && self.refused.is_empty()
            && self.unanswered.is_empty()
    }

    /// Faults by kind ("kill -9 relay": 3, ...).
    pub fn faults_by_kind(&self) -> BTreeMap<&str, usize> {
        let mut by_kind = BTreeMap::new();
        for fault in &self.faults {
            *by_kind.entry(fault.fault.as_str()).or_default() += 1;
        }
        by_kind
    }

    /// The summary as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let verdict = if self.nothing_lost() {
            "nothing lost"
        } else {
            "FAILED"
        };
        out += &format!("## Fault run {} ({verdict})\n\n", self.started_at);
        out += "| figure | value |\n|---|---|\n";
        for (figure, value) in [
            ("seed", self.seed.to_string()),
            ("load duration", format!("{:.0} s", self.load_seconds)),
            ("clients", self.clients.to_string()),
            (
                "commands acknowledged",
                self.commands_acknowledged.to_string(),
            ),
            (
                "acknowledged after a retry (same key)",
                self.acknowledged_after_retry.to_string(),
            ),
            ("retried requests", self.retries.to_string()),
            ("of which INTERNAL", self.internal_errors.to_string()),
            (
                "orders completed / open / cancelled / rejected / left to the deadline",
                format!(
                    "{} / {} / {} / {} / {}",
                    self.orders.completed,
                    self.orders.open,
                    self.orders.cancelled,
                    self.orders.rejected,
                    self.orders.left_unpaid
                ),
            ),
            (
                "attempts given up at the client's deadline",
                self.client_deadlines.to_string(),
            ),
            ("answers CANCELLED", self.cancelled_answers.to_string()),
            ("faults injected", self.faults.len().to_string()),
            ("commands refused", self.refused.len().to_string()),
            ("commands unanswered", self.unanswered.len().to_string()),
            (
                "settled after the load in",
                format!("{:.0} s", self.settle_seconds),
            ),
        ] {
            out += &format!("| {figure} | {value} |\n");
        }
        out += &format!("\nTimeouts: {}.\n", self.timeouts);
        out += "\n| fault | times |\n|---|---|\n";
        for (kind, times) in self.faults_by_kind() {
            out += &format!("| {kind} | {times} |\n");
        }
        let exits: Vec<String> = self
            .unexpected_exits
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        if !exits.is_empty() {
            out += &format!(
                "\nProcesses that exited on their own and were started again: {}.\n",
                exits.join(", ")
            );
        }
        out += "\n| check | result | detail |\n|---|---|---|\n";
        for v in &self.verdicts {
            let result = if v.passed { "pass" } else { "FAIL" };
            out += &format!(
                "| {} | {result} | {} |\n",
                v.check,
                v.detail.replace('|', "\\|")
            );
        }
        for (title, list) in [("Refused", &self.refused), ("Unanswered", &self.unanswered)] {
            if !list.is_empty() {
                out += &format!("\n{title}:\n");
                for line in list.iter().take(20) {
                    out += &format!("- {line}\n");
                }
            }
        }
        out
    }
}
