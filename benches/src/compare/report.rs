//! The comparison's results: one row per ratio, the command paths in detail, as Markdown and JSON.

use std::fmt::Write;

use serde::Serialize;

use super::command_path::PathFigures;

/// One figure of ours beside its reference.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// `(a)` .. `(d)`.
    pub part: &'static str,
    /// What is compared.
    pub what: String,
    /// Our figure.
    pub ours: f64,
    /// The reference figure, measured in the same run.
    pub reference: f64,
    /// The reference's name.
    pub reference_name: String,
    /// The unit of both figures.
    pub unit: &'static str,
    /// The target, when the issue sets one: a least ratio (`ratio >= target`), or for latency
    /// (`unit` = `ms`) a most value of ours.
    pub target: Option<f64>,
}

impl Ratio {
    /// ours / reference.
    pub fn ratio(&self) -> f64 {
        if self.reference > 0.0 {
            self.ours / self.reference
        } else {
            0.0
        }
    }

    /// Whether the target is reached; `None` without a target.
    pub fn met(&self) -> Option<bool> {
        let target = self.target?;
        Some(if self.unit == "ms" {
            self.ours < target
        } else {
            self.ratio() >= target
        })
    }
}

/// A peak resident memory of the replay process at a history size.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayMemory {
    /// Events rebuilt.
    pub events: i64,
    /// Peak resident memory of the `replay` process, MiB.
    pub peak_mib: f64,
}

/// Everything one comparison run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// When it ran.
    pub started_at: String,
    /// `nproc` and memory.
    pub machine: String,
    /// The ratios.
    pub ratios: Vec<Ratio>,
    /// Every command-path run, in the order they ran.
    pub paths: Vec<PathFigures>,
    /// The replay process's memory as the history grows.
    pub replay_memory: Vec<ReplayMemory>,
}

impl CompareReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Comparison run, {} ({})\n",
            self.started_at, self.machine
        );
        md.push_str("| part | ours | reference (same run) | ratio | target | met |\n");
        md.push_str("|---|---:|---:|---:|---|---|\n");
        for r in &self.ratios {
            let (target, met) = match (r.target, r.met()) {
                (Some(t), Some(met)) if r.unit == "ms" => (format!("< {t:.0} ms"), yes_no(met)),
                (Some(t), Some(met)) => (format!(">= {t:.2}"), yes_no(met)),
                _ => (String::new(), ""),
            };
            let _ = writeln!(
                md,
                "| {} {} | {} {unit} | {}: {} {unit} | {:.2} | {target} | {met} |",
                r.part,
                r.what,
                figure(r.ours),
                r.reference_name,
                figure(r.reference),
                r.ratio(),
                unit = r.unit,
            );
        }
        md.push_str(
            "\nThe log's targets of issue 16 come from the load run (`loadgen`): commits per \
             Kinesis record at the rush load (target >= 5), and the relay's share of ack -> \
             Kinesis, p99 (target < 20 ms; the relay's commit -> acknowledged histogram).\n",
        );
        md.push_str("\n| command path | clients | commands | errors | seconds | commands/s | p50 ms | p99 ms |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &self.paths {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} |",
                p.path,
                p.clients,
                p.commands,
                p.errors,
                p.seconds,
                p.commands_per_second,
                p.latency.p50_ms,
                p.latency.p99_ms
            );
        }
        if !self.replay_memory.is_empty() {
            md.push_str(
                "\n| replay history, events | peak resident memory of `replay` |\n|---:|---:|\n",
            );
            for m in &self.replay_memory {
                let _ = writeln!(md, "| {} | {:.1} MiB |", m.events, m.peak_mib);
            }
        }
        md
    }
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

fn figure(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(ours: f64, reference: f64, unit: &'static str, target: f64) -> Ratio {
        Ratio {
            part: "(a)",
            what: "x".into(),
            ours,
            reference,
            reference_name: "y".into(),
            unit,
            target: Some(target),
        }
    }

    #[test]
    fn a_ratio_target_is_a_floor_and_a_latency_target_a_ceiling() {
        assert_eq!(ratio(300.0, 100.0, "commands/s", 3.0).met(), Some(true));
        assert_eq!(ratio(299.0, 100.0, "commands/s", 3.0).met(), Some(false));
        assert_eq!(ratio(24.0, 90.0, "ms", 25.0).met(), Some(true));
        assert_eq!(ratio(26.0, 1.0, "ms", 25.0).met(), Some(false));
    }
}
