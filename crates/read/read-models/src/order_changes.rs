//! What a run of an order's events changes, folded once and written by every projection in its
//! own shape (a DynamoDB update, history rows, analytics rows).

use domain::order::{OrderEvent, PricedLine};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// An order's status as the read models name it (stable text, independent of the domain's
/// `Debug` output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Placed,
    Accepted,
    Preparing,
    Ready,
    Completed,
    Cancelled,
    Rejected,
}

impl Status {
    /// The name stored in every view.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Placed => "placed",
            Status::Accepted => "accepted",
            Status::Preparing => "preparing",
            Status::Ready => "ready",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Rejected => "rejected",
        }
    }

    /// Parses a stored name.
    pub(crate) fn parse(name: &str) -> Option<Status> {
        [
            Status::Placed,
            Status::Accepted,
            Status::Preparing,
            Status::Ready,
            Status::Completed,
            Status::Cancelled,
            Status::Rejected,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }

    /// The order is over: it leaves the active views.
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Cancelled | Status::Rejected
        )
    }
}

/// What `OrderPlaced` says.
#[derive(Debug, Clone)]
pub(crate) struct PlacedOrder {
    pub(crate) store_id: String,
    pub(crate) customer_id: String,
    pub(crate) note: String,
    pub(crate) total_cents: i64,
    pub(crate) lines: Vec<PricedLine>,
    pub(crate) placed_at: OffsetDateTime,
}

/// One entry of an order's timeline: every event, with the status it led to when it changed it.
#[derive(Debug, Clone)]
pub(crate) struct TimelineEntry {
    pub(crate) sequence: u64,
    pub(crate) event: &'static str,
    pub(crate) status: Option<Status>,
    pub(crate) at: OffsetDateTime,
    pub(crate) detail: Option<String>,
    /// Who issued the command (the commit's actor), where the history records it.
    pub(crate) actor: Option<String>,
}

/// The changes a run of one order's events makes. Fields are `None` when the run says nothing
/// about them.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderChanges {
    pub(crate) placed: Option<PlacedOrder>,
    /// The status after the run.
    pub(crate) status: Option<Status>,
    /// When the run last changed the status.
    pub(crate) status_at: Option<OffsetDateTime>,
    pub(crate) accepted_at: Option<OffsetDateTime>,
    pub(crate) payment_captured_at: Option<OffsetDateTime>,
    pub(crate) payment_id: Option<String>,
    pub(crate) captured_cents: Option<i64>,
    pub(crate) payment_declined: bool,
    pub(crate) preparing_at: Option<OffsetDateTime>,
    pub(crate) ready_at: Option<OffsetDateTime>,
    /// Completed, cancelled or rejected.
    pub(crate) ended_at: Option<OffsetDateTime>,
    pub(crate) end_reason: Option<String>,
    pub(crate) refund_due: Option<bool>,
    pub(crate) timeline: Vec<TimelineEntry>,
}

impl OrderChanges {
    /// Folds one event, recorded at `at` with `sequence`, into the changes.
    pub(crate) fn apply(&mut self, sequence: u64, at: OffsetDateTime, event: &OrderEvent) {
        let mut detail = None;
        let status = match event {
            OrderEvent::OrderPlaced {
                store_id,
                customer_id,
                lines,
                note,
                total,
                ..
            } => {
                self.placed = Some(PlacedOrder {
                    store_id: store_id.to_string(),
                    customer_id: customer_id.to_string(),
                    note: note.to_string(),
                    total_cents: total.cents(),
                    lines: lines.clone(),
                    placed_at: at,
                });
                Some(Status::Placed)
            }
            OrderEvent::OrderAccepted {} => {
                self.accepted_at = Some(at);
                Some(Status::Accepted)
            }
            OrderEvent::PaymentCaptured { payment_id, amount } => {
                self.payment_captured_at = Some(at);
                self.payment_id = Some(payment_id.to_string());
                self.captured_cents = Some(amount.cents());
                detail = Some(payment_id.to_string());
                None
            }
            OrderEvent::PaymentDeclined { reason } => {
                self.payment_declined = true;
                detail = Some(reason.to_string());
                None
            }
            OrderEvent::PaymentRefunded { refund_id, .. } => {
                detail = Some(refund_id.to_string());
                None
            }
            OrderEvent::PreparationStarted {} => {
                self.preparing_at = Some(at);
                Some(Status::Preparing)
            }
            OrderEvent::OrderMarkedReady {} => {
                self.ready_at = Some(at);
                Some(Status::Ready)
            }
            OrderEvent::OrderCompleted {} => {
                self.ended_at = Some(at);
                Some(Status::Completed)
            }
            OrderEvent::OrderCancelled {
                reason, refund_due, ..
            } => {
                self.ended_at = Some(at);
                self.end_reason = Some(reason.to_string());
                self.refund_due = Some(*refund_due);
                detail = Some(reason.to_string());
                Some(Status::Cancelled)
            }
            OrderEvent::OrderRejected {
                reason, refund_due, ..
            } => {
                self.ended_at = Some(at);
                self.end_reason = Some(reason.to_string());
                self.refund_due = Some(*refund_due);
                detail = Some(reason.to_string());
                Some(Status::Rejected)
            }
        };
        if let Some(status) = status {
            self.status = Some(status);
            self.status_at = Some(at);
        }
        self.timeline.push(TimelineEntry {
            sequence,
            event: event_name(event),
            status,
            at,
            detail,
            actor: None,
        });
    }

    /// Records `actor` (empty: not known) as who issued the event [`Self::apply`] folded last.
    pub(crate) fn record_actor(&mut self, actor: &str) {
        if let Some(entry) = self.timeline.last_mut() {
            entry.actor = (!actor.is_empty()).then(|| actor.to_owned());
        }
    }
}

/// The event's stored name, in the views' snake case.
fn event_name(event: &OrderEvent) -> &'static str {
    match event {
        OrderEvent::OrderPlaced { .. } => "order_placed",
        OrderEvent::OrderAccepted {} => "order_accepted",
        OrderEvent::OrderRejected { .. } => "order_rejected",
        OrderEvent::PaymentCaptured { .. } => "payment_captured",
        OrderEvent::PaymentDeclined { .. } => "payment_declined",
        OrderEvent::PaymentRefunded { .. } => "payment_refunded",
        OrderEvent::PreparationStarted {} => "preparation_started",
        OrderEvent::OrderMarkedReady {} => "order_marked_ready",
        OrderEvent::OrderCompleted {} => "order_completed",
        OrderEvent::OrderCancelled { .. } => "order_cancelled",
    }
}

/// A UTC timestamp in fixed-width RFC 3339 (microseconds), so text order is time order: the form
/// of every time in DynamoDB keys and attributes.
pub(crate) fn sortable_time(at: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    at.to_offset(UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.to_string())
}

/// Serializes a time as [`sortable_time`] text (PostgreSQL reads it as `timestamptz`).
pub(crate) fn serialize_time<S: serde::Serializer>(
    at: &OffsetDateTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&sortable_time(*at))
}

/// Parses a time written by [`sortable_time`].
pub(crate) fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// The UTC business day of `at` (`YYYY-MM-DD`): the events carry no store time zone.
pub(crate) fn business_day(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC).date().to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_sort_as_text_and_read_back() {
        let early = datetime!(2025-03-01 09:05:00.5 +01:00);
        let late = datetime!(2025-03-01 08:10:00 UTC);
        assert_eq!(sortable_time(early), "2025-03-01T08:05:00.500000Z");
        assert!(sortable_time(early) < sortable_time(late));
        assert_eq!(parse_time(&sortable_time(early)).unwrap(), early);
        assert_eq!(
            business_day(datetime!(2025-03-01 00:30 +02:00)),
            "2025-02-28"
        );
    }

    #[test]
    fn statuses_round_trip_and_final_ones_are_known() {
        for status in [Status::Placed, Status::Ready, Status::Rejected] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert!(Status::Completed.is_final() && Status::Cancelled.is_final());
        assert!(!Status::Ready.is_final());
    }
}
