//! Display: the progress line a rebuild keeps on stderr, and a comparison's report.

use std::time::Instant;

use replay::{Comparison, RebuildProgress};

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

/// One line on stderr, rewritten after every batch: position, events/s, ETA.
pub struct ProgressLine {
    name: &'static str,
    started: Instant,
    shown: bool,
}

impl ProgressLine {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
            shown: false,
        }
    }

    pub fn show(&mut self, progress: &RebuildProgress) {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = progress.events as f64 / seconds;
        let left = (progress.through - progress.applied_through).max(0) as f64;
        let eta = if rate > 0.0 { left / rate } else { 0.0 };
        eprint!(
            "\r{}: position {}/{}, {} events, {:.0} events/s, ETA {:.0}s   ",
            self.name, progress.applied_through, progress.through, progress.events, rate, eta
        );
        self.shown = true;
    }

    pub fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
