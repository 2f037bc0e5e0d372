//! Cutting the store's event stream back into commits.
//!
//! The store keeps no commit id with the events (the outbox rows that have the boundaries are
//! deleted once relayed), so the boundary is inferred: one commit is one aggregate's consecutive
//! events at consecutive positions, written by one statement (same `recorded_at`) for one command
//! (same metadata). Two commits of one aggregate that agree on all of that (written in the same
//! group-commit statement with identical metadata) come out as one; that is harmless, because a
//! projection derives nothing from where a commit ends: the events, their times and the commit
//! metadata are the same either way.

use event_store::RecordedEvent;

/// An event as a reader of the store takes it, enough to tell where its commit ends.
pub(crate) trait CommitPart {
    /// Its global position.
    fn global_position(&self) -> i64;
    /// True when it continues the commit `previous` belongs to.
    fn continues(&self, previous: &Self) -> bool;
}

impl CommitPart for RecordedEvent {
    fn global_position(&self) -> i64 {
        self.global_position
    }

    fn continues(&self, previous: &Self) -> bool {
        same_commit(previous, self)
    }
}

/// Cuts events read in position order into commits, up to a bound: a commit the bound splits is
/// left out whole, as commits are applied entirely or not at all.
#[derive(Debug)]
pub(crate) struct CommitCutter<E = RecordedEvent> {
    pending: Vec<E>,
    through: i64,
    done: bool,
}

impl<E: CommitPart> CommitCutter<E> {
    /// Cuts up to position `through`.
    pub(crate) fn new(through: i64) -> Self {
        Self {
            pending: Vec::new(),
            through,
            done: false,
        }
    }

    /// Takes the next event (one past the bound tells whether the commit holding the bound ends
    /// there); the commit it completes, if any.
    pub(crate) fn push(&mut self, event: E) -> Option<Vec<E>> {
        if self
            .pending
            .last()
            .is_some_and(|last| event.continues(last))
        {
            if event.global_position() > self.through {
                // The bound splits this commit: it is left out whole.
                self.pending.clear();
                self.done = true;
            } else {
                self.pending.push(event);
            }
            return None;
        }
        let completed = (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending));
        if event.global_position() > self.through {
            self.done = true;
        } else {
            self.pending.push(event);
        }
        completed
    }

    /// True once past the bound: nothing more is taken.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The last commit, when the events ended before the bound told where it ends.
    pub(crate) fn finish(self) -> Option<Vec<E>> {
        (!self.pending.is_empty()).then_some(self.pending)
    }
}

/// True when `next` continues the commit `previous` belongs to.
pub(crate) fn same_commit(previous: &RecordedEvent, next: &RecordedEvent) -> bool {
    next.global_position == previous.global_position + 1
        && next.sequence == previous.sequence + 1
        && next.aggregate_id == previous.aggregate_id
        && next.aggregate_type == previous.aggregate_type
        && next.recorded_at == previous.recorded_at
        && next.metadata == previous.metadata
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn event(position: i64, id: &str, sequence: i64) -> RecordedEvent {
        RecordedEvent {
            global_position: position,
            aggregate_type: "inventory".into(),
            aggregate_id: id.into(),
            sequence,
            event_type: "StockRestocked".into(),
            event_version: "1".into(),
            payload: json!({}),
            metadata: json!({"idempotency_key": "k1"}),
            recorded_at: datetime!(2025-03-03 08:00 UTC),
        }
    }

    #[test]
    fn consecutive_events_of_one_statement_and_command_are_one_commit() {
        assert!(same_commit(&event(1, "s1", 1), &event(2, "s1", 2)));
    }

    #[test]
    fn another_aggregate_a_gap_another_statement_or_command_starts_a_commit() {
        let first = event(1, "s1", 1);
        assert!(!same_commit(&first, &event(2, "s2", 2)));
        assert!(!same_commit(&first, &event(3, "s1", 2)));
        assert!(!same_commit(&first, &event(2, "s1", 3)));
        let later = RecordedEvent {
            recorded_at: datetime!(2025-03-03 08:00:01 UTC),
            ..event(2, "s1", 2)
        };
        assert!(!same_commit(&first, &later));
        let other_command = RecordedEvent {
            metadata: json!({"idempotency_key": "k2"}),
            ..event(2, "s1", 2)
        };
        assert!(!same_commit(&first, &other_command));
    }
}
