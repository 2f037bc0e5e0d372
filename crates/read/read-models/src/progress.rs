//! The per-aggregate idempotency rule every projection shares: what to do with a commit given
//! the last sequence already applied for its aggregate.

use std::collections::HashMap;

use commit_log::{LoggedCommit, LoggedEvent};

use commit_log::projection::ProjectionError;

/// The order aggregate's type (`domain::Order`'s `Aggregate::TYPE`).
pub(crate) const ORDER: &str = "order";
/// The store inventory aggregate's type.
pub(crate) const INVENTORY: &str = "inventory";
/// The loyalty account aggregate's type.
pub(crate) const LOYALTY: &str = "loyalty";
/// The menu aggregate's type.
pub(crate) const MENU: &str = "menu";

/// What to do with one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Every event of it is already applied.
    Skip,
    /// Apply the events after `applied` (all of them unless a replay overlaps).
    Apply {
        /// The last sequence applied before this commit.
        applied: u64,
    },
    /// Something before it was never applied.
    Gap {
        /// The last sequence applied.
        applied: u64,
    },
}

impl Step {
    /// The step for `commit` when `applied` is its aggregate's last applied sequence (0: none).
    pub(crate) fn of(commit: &LoggedCommit, applied: u64) -> Step {
        if commit.last_sequence() <= applied {
            Step::Skip
        } else if commit.first_sequence() > applied + 1 {
            Step::Gap { applied }
        } else {
            Step::Apply { applied }
        }
    }
}

/// Last applied sequence per (aggregate type, id), and whether this batch changed it.
pub(crate) type Applied = HashMap<(String, String), (u64, bool)>;

/// Walks `commits` in order and hands each commit of a `tracked` aggregate type that is not yet
/// (fully) applied to `add`, with its aggregate's last applied sequence, moving `applied` on.
/// Stops at the first gap or at the first commit `add` refuses, and returns that poison error.
pub(crate) fn gather(
    commits: &[LoggedCommit],
    tracked: &[&str],
    applied: &mut Applied,
    mut add: impl FnMut(&LoggedCommit, u64) -> Result<(), String>,
) -> Option<ProjectionError> {
    for (index, commit) in commits.iter().enumerate() {
        if !tracked.contains(&commit.aggregate_type.as_str()) {
            continue;
        }
        let key = (commit.aggregate_type.clone(), commit.aggregate_id.clone());
        let last = applied.get(&key).map_or(0, |(sequence, _)| *sequence);
        match Step::of(commit, last) {
            Step::Skip => {}
            Step::Gap { applied } => return Some(gap(index, commit, applied)),
            Step::Apply { applied: before } => {
                if let Err(reason) = add(commit, before) {
                    return Some(ProjectionError::Poison { index, reason });
                }
                applied.insert(key, (commit.last_sequence(), true));
            }
        }
    }
    None
}

/// The events of `commit` after `applied`.
pub(crate) fn unapplied(commit: &LoggedCommit, applied: u64) -> impl Iterator<Item = &LoggedEvent> {
    commit.events.iter().filter(move |e| e.sequence > applied)
}

/// The poison error for a gap at `index`.
pub(crate) fn gap(index: usize, commit: &LoggedCommit, applied: u64) -> ProjectionError {
    ProjectionError::Poison {
        index,
        reason: format!(
            "gap: {} {} has sequence {} applied, the commit starts at {}",
            commit.aggregate_type,
            commit.aggregate_id,
            applied,
            commit.first_sequence()
        ),
    }
}

/// How a failed database call ends `apply` (the one place the PostgreSQL read models classify
/// their failures). The database refusing the data itself (SQLSTATE class 22, e.g. a NUL byte
/// or a value out of range; a NOT NULL or CHECK violation; a program limit such as a row too
/// large) fails the same way every time: the batch is refused and the runtime finds the
/// commit. Everything else (connection lost or refused, pool timeout, statement timeout,
/// serialization failure, deadlock, a unique violation from a racing writer, a missing schema
/// an operator must restore) is retried until it passes, never parked.
pub(crate) fn database_failure(error: sqlx::Error) -> ProjectionError {
    let refused = match &error {
        sqlx::Error::Database(database) => {
            database.code().is_some_and(|code| refuses_the_data(&code))
        }
        _ => false,
    };
    if refused {
        ProjectionError::Refused(Box::new(error))
    } else {
        ProjectionError::Transient(Box::new(error))
    }
}

/// SQLSTATEs that mean "this data can never be written here".
fn refuses_the_data(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("54") || code == "23502" || code == "23514"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use commit_log::DomainEvent;
    use domain::{MenuEvent, Sku};
    use time::OffsetDateTime;

    fn commit(first: u64, last: u64) -> LoggedCommit {
        let event = |sequence| LoggedEvent {
            sequence,
            position: sequence,
            recorded_at: OffsetDateTime::UNIX_EPOCH,
            event: DomainEvent::Menu(MenuEvent::MenuItemAvailabilityChanged {
                sku: Sku::parse("LATTE-12").unwrap(),
                available: true,
            }),
        };
        LoggedCommit {
            aggregate_type: "menu".into(),
            aggregate_id: "menu".into(),
            committed_at: OffsetDateTime::UNIX_EPOCH,
            correlation_id: String::new(),
            causation_id: String::new(),
            actor: String::new(),
            traceparent: String::new(),
            events: (first..=last).map(event).collect(),
        }
    }

    #[test]
    fn only_data_the_database_refuses_is_deterministic() {
        for code in ["22021", "22003", "22001", "23502", "23514", "54000"] {
            assert!(refuses_the_data(code), "{code}");
        }
        // Unique violations (a racing writer), serialization failures, deadlocks, lock and
        // statement timeouts, admin shutdowns, a missing table: retried.
        for code in [
            "23505", "40001", "40P01", "55P03", "57014", "57P01", "42P01",
        ] {
            assert!(!refuses_the_data(code), "{code}");
        }
    }

    #[test]
    fn applied_commits_are_skipped_next_ones_applied_and_gaps_refused() {
        assert_eq!(Step::of(&commit(1, 2), 2), Step::Skip);
        assert_eq!(Step::of(&commit(1, 2), 5), Step::Skip);
        assert_eq!(Step::of(&commit(3, 4), 2), Step::Apply { applied: 2 });
        assert_eq!(Step::of(&commit(1, 1), 0), Step::Apply { applied: 0 });
        assert_eq!(Step::of(&commit(4, 4), 2), Step::Gap { applied: 2 });
    }

    #[test]
    fn an_overlapping_commit_applies_only_its_new_events() {
        let overlapping = commit(2, 4);
        assert_eq!(Step::of(&overlapping, 3), Step::Apply { applied: 3 });
        let sequences: Vec<u64> = unapplied(&overlapping, 3).map(|e| e.sequence).collect();
        assert_eq!(sequences, vec![4]);
    }
}
