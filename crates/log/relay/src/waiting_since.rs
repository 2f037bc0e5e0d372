//! Since when each outbox commit has waited, on the relay's own clock: a record lingers
//! (`relay.max_linger_ms`) until its oldest commit has waited that long.
//!
//! A commit waits from its commit, which the database stamps (`recorded_at`). The relay's clock
//! may disagree with the database's, so it also remembers when it first read each commit and
//! takes the earlier of the two: a relay clock ahead of the database's shortens the linger, one
//! behind it cannot lengthen it beyond the linger counted from the first read.

use std::collections::HashMap;
use std::time::Instant;

use event_store::OutboxCommit;
use time::OffsetDateTime;

/// When this relay first read each commit still in the outbox.
#[derive(Debug, Default)]
pub(crate) struct WaitingSince {
    first_read: HashMap<i64, Instant>,
}

impl WaitingSince {
    /// Each of `commits` (a fresh outbox read, at `now` on both clocks) with since when it has
    /// waited. Forgets the commits no longer read: published, or by another relay.
    pub fn stamp(
        &mut self,
        commits: Vec<OutboxCommit>,
        now: Instant,
        now_utc: OffsetDateTime,
    ) -> Vec<(OutboxCommit, Instant)> {
        let mut first_read = HashMap::with_capacity(commits.len());
        let stamped = commits
            .into_iter()
            .map(|commit| {
                let read = *self.first_read.get(&commit.first_position).unwrap_or(&now);
                first_read.insert(commit.first_position, read);
                let committed = commit.events.first().and_then(|event| {
                    let waited = now_utc - event.recorded_at;
                    now.checked_sub(waited.try_into().ok()?)
                });
                let since = committed.map_or(read, |committed| committed.min(read));
                (commit, since)
            })
            .collect();
        self.first_read = first_read;
        stamped
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use event_store::RecordedEvent;
    use serde_json::json;

    fn committed_at(position: i64, recorded_at: OffsetDateTime) -> OutboxCommit {
        OutboxCommit {
            first_position: position,
            aggregate_type: "menu".into(),
            aggregate_id: "a".into(),
            events: vec![RecordedEvent {
                global_position: position,
                aggregate_type: "menu".into(),
                aggregate_id: "a".into(),
                sequence: position,
                event_type: "MenuItemAvailabilityChanged".into(),
                event_version: "1.0".into(),
                payload: json!({}),
                metadata: json!({}),
                recorded_at,
            }],
        }
    }

    #[test]
    fn a_commit_waits_from_its_commit_and_never_from_later_than_its_first_read() {
        let start = Instant::now() + Duration::from_secs(60);
        let start_utc = OffsetDateTime::now_utc();
        let mut waiting = WaitingSince::default();

        // Committed 5 ms before the read on the database's clock.
        let stamped = waiting.stamp(
            vec![committed_at(1, start_utc - Duration::from_millis(5))],
            start,
            start_utc,
        );
        assert_eq!(stamped[0].1, start - Duration::from_millis(5));

        // A database clock ahead of the relay's: the commit seems to come from the future, so
        // it waits from its first read, and still does when read again later.
        let ahead = start_utc + Duration::from_secs(2);
        let stamped = waiting.stamp(vec![committed_at(2, ahead)], start, start_utc);
        assert_eq!(stamped[0].1, start);
        let later = start + Duration::from_millis(30);
        let stamped = waiting.stamp(
            vec![committed_at(2, ahead)],
            later,
            start_utc + Duration::from_millis(30),
        );
        assert_eq!(stamped[0].1, start);
    }
}
