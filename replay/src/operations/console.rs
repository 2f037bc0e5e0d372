//! What the operator sees and answers: the progress line a rebuild keeps on stderr, a
//! comparison's report, and the confirmation `--in-place` asks for.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::{Comparison, RebuildProgress, ReplayError};

/// Prints every differing table and row of `comparison`, `live` being the live view's name.
pub fn print_comparison(comparison: &Comparison, live: &str) {
    let count = |rows: Option<i64>| rows.map_or_else(|| "missing".to_owned(), |n| n.to_string());
    for difference in &comparison.differences {
        println!(
            "table {}: live {} rows, rebuilt {} rows",
            difference.table,
            count(difference.left_rows),
            count(difference.right_rows)
        );
        for row in &difference.only_in_left {
            println!("  - only live:    {row}");
        }
        for row in &difference.only_in_right {
            println!("  + only rebuilt: {row}");
        }
    }
    for skipped in &comparison.skipped {
        println!("skipped {} item(s): {}", skipped.count, skipped.reason);
        for example in &skipped.examples {
            println!("  ~ {example}");
        }
    }
    if comparison.is_equal() {
        println!(
            "{live}: {} tables equal to a rebuild from the event store",
            comparison.tables_compared
        );
    } else {
        println!(
            "{live}: {} of the tables differ from a rebuild from the event store",
            comparison.differences.len()
        );
    }
}

/// A progress bar on stderr, redrawn after every batch (at most ten times a second): the
/// share of positions done, the position, events applied, events/s and the ETA. When stderr is
/// not a terminal (a log file, CI), a plain line every ten seconds instead.
pub struct ProgressLine {
    name: &'static str,
    started: Instant,
    drawn: Option<Instant>,
    terminal: bool,
}

impl ProgressLine {
    const WIDTH: usize = 30;

    /// A line for the rebuild of projection `name`, drawn on the first progress.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
            drawn: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Redraws the line for `progress` (unless it was drawn too recently and is not the end).
    pub fn show(&mut self, progress: &RebuildProgress) {
        let every = if self.terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(10)
        };
        let finished = progress.applied_through == progress.through;
        if !finished && self.drawn.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = progress.events as f64 / seconds;
        if progress.through < progress.applied_through {
            // No known end (a stream): no bar, no ETA.
            let text = format!(
                "{} highest position {}, {} events, {:.0} events/s",
                self.name, progress.applied_through, progress.events, rate
            );
            self.draw(&text);
            return;
        }
        let total = (progress.through - progress.started_after).max(1) as f64;
        let done = (progress.applied_through - progress.started_after).max(0) as f64;
        let share = (done / total).clamp(0.0, 1.0);
        let left = (progress.through - progress.applied_through).max(0) as f64;
        let eta = if rate > 0.0 { left / rate } else { 0.0 };
        let filled = (share * Self::WIDTH as f64).round() as usize;
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(Self::WIDTH - filled));
        let text = format!(
            "{} [{bar}] {:>3.0}% position {}/{}, {} events, {:.0} events/s, ETA {:.0}s",
            self.name,
            share * 100.0,
            progress.applied_through,
            progress.through,
            progress.events,
            rate,
            eta
        );
        self.draw(&text);
    }

    fn draw(&mut self, text: &str) {
        if self.terminal {
            eprint!("\r{text}   ");
        } else {
            eprintln!("{text}");
        }
        self.drawn = Some(Instant::now());
    }

    /// Ends the line on a terminal, so what follows starts on a line of its own.
    pub fn finish(&self) {
        if self.terminal && self.drawn.is_some() {
            eprintln!();
        }
    }
}

/// `--in-place` empties a live view: the operator types the projection's name to go on, or
/// passed `--yes` (`confirmed`). Without a terminal to ask at, only `--yes` goes on.
pub fn confirm_in_place(projection: &str, confirmed: bool) -> Result<(), ReplayError> {
    if confirmed {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        refuse!("--in-place empties the live {projection} view: confirm with --yes");
    }
    eprint!(
        "This empties the live {projection} view and rebuilds it; readers see it empty meanwhile, \
         and its projector must be stopped.\nType {projection} to go on: "
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != projection {
        refuse!("not confirmed; nothing changed");
    }
    Ok(())
}
