//! The log record of one commit (BRIEF §3.3): one Kinesis record carries one commit of one
//! aggregate in a versioned protobuf envelope (`orderpipe.v1.CommitEnvelope`).
//!
//! The relay [`encode`]s a stored commit; projectors, the saga and replay [`decode`] records (or
//! read stored events with [`LoggedCommit::from_recorded`]) into typed domain events. Readers
//! refuse envelope versions they do not know; such a record is poison, for the dead-letter queue.
//! When an event gets a new `event_version`, its upcaster belongs in [`DomainEvent::parse`].

use cqrs_es::Aggregate;
use domain::inventory::{InventoryEvent, StoreInventory};
use domain::loyalty::{LoyaltyAccount, LoyaltyEvent};
use domain::{Menu, MenuEvent, Order, OrderEvent};
use event_store::{metadata, RecordedEvent};
use prost::Message;
use proto::v1 as pb;
use time::OffsetDateTime;

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// A domain event of any aggregate type.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    /// An order's event.
    Order(OrderEvent),
    /// A store inventory's event.
    Inventory(InventoryEvent),
    /// A loyalty account's event.
    Loyalty(LoyaltyEvent),
    /// The menu's event.
    Menu(MenuEvent),
}

impl DomainEvent {
    /// Parses a stored payload of `aggregate_type`.
    pub fn parse(
        aggregate_type: &str,
        event_type: &str,
        event_version: &str,
        payload: serde_json::Value,
    ) -> Result<Self, DecodeError> {
        let invalid = |source| DecodeError::Payload {
            event_type: event_type.to_owned(),
            event_version: event_version.to_owned(),
            source,
        };
        Ok(match aggregate_type {
            Order::TYPE => DomainEvent::Order(serde_json::from_value(payload).map_err(invalid)?),
            StoreInventory::TYPE => {
                DomainEvent::Inventory(serde_json::from_value(payload).map_err(invalid)?)
            }
            LoyaltyAccount::TYPE => {
                DomainEvent::Loyalty(serde_json::from_value(payload).map_err(invalid)?)
            }
            Menu::TYPE => DomainEvent::Menu(serde_json::from_value(payload).map_err(invalid)?),
            other => return Err(DecodeError::UnknownAggregateType(other.to_owned())),
        })
    }
}

/// One event of a logged commit.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Its sequence within the aggregate, from 1.
    pub sequence: u64,
    /// Its global position in commit order, from 1.
    pub position: u64,
    /// When it became durable.
    pub recorded_at: OffsetDateTime,
    /// The event.
    pub event: DomainEvent,
}

/// One commit of one aggregate, as carried by one log record.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedCommit {
    /// `order`, `inventory`, `loyalty` or `menu`.
    pub aggregate_type: String,
    /// The aggregate's id (also the record's partition key).
    pub aggregate_id: String,
    /// When the commit became durable.
    pub committed_at: OffsetDateTime,
    /// The business flow the command belonged to (may be empty).
    pub correlation_id: String,
    /// What caused the command (may be empty).
    pub causation_id: String,
    /// The events, in sequence order; never empty.
    pub events: Vec<LoggedEvent>,
}

impl LoggedCommit {
    /// The first event's sequence.
    pub fn first_sequence(&self) -> u64 {
        self.events.first().map_or(0, |e| e.sequence)
    }

    /// The last event's sequence: what a projection records as applied for the aggregate.
    pub fn last_sequence(&self) -> u64 {
        self.events.last().map_or(0, |e| e.sequence)
    }

    /// The first event's global position.
    pub fn first_position(&self) -> u64 {
        self.events.first().map_or(0, |e| e.position)
    }

    /// The last event's global position.
    pub fn last_position(&self) -> u64 {
        self.events.last().map_or(0, |e| e.position)
    }

    /// A commit read straight from the store (replay): `events` are one commit's events, in
    /// order.
    pub fn from_recorded(events: &[RecordedEvent]) -> Result<Self, DecodeError> {
        let first = events.first().ok_or(DecodeError::Empty)?;
        let logged = events
            .iter()
            .map(|event| {
                Ok(LoggedEvent {
                    sequence: event.sequence as u64,
                    position: event.global_position as u64,
                    recorded_at: event.recorded_at,
                    event: DomainEvent::parse(
                        &event.aggregate_type,
                        &event.event_type,
                        &event.event_version,
                        event.payload.clone(),
                    )?,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let commit = LoggedCommit {
            aggregate_type: first.aggregate_type.clone(),
            aggregate_id: first.aggregate_id.clone(),
            committed_at: first.recorded_at,
            correlation_id: metadata_field(&first.metadata, metadata::CORRELATION_ID),
            causation_id: metadata_field(&first.metadata, metadata::CAUSATION_ID),
            events: logged,
        };
        commit.check_contiguous()?;
        Ok(commit)
    }

    fn check_contiguous(&self) -> Result<(), DecodeError> {
        // Checked: a crafted envelope may carry u64::MAX, where `+ 1` panics (debug) or wraps
        // to 0 (release) and compares as if contiguous.
        let contiguous = self.events.windows(2).all(|pair| {
            follows(pair[0].sequence, pair[1].sequence)
                && follows(pair[0].position, pair[1].position)
        });
        if !contiguous || self.first_sequence() == 0 || self.first_position() == 0 {
            return Err(DecodeError::Inconsistent(
                "event sequences and positions must be contiguous and start at 1 or later".into(),
            ));
        }
        // The store keeps both as BIGINT and every projection records them the same way: a
        // larger value cannot be a real commit, and would turn negative in a checkpoint.
        if self.last_sequence() > MAX_STORED || self.last_position() > MAX_STORED {
            return Err(DecodeError::Inconsistent(format!(
                "event sequences and positions must be at most {MAX_STORED}"
            )));
        }
        Ok(())
    }
}

/// The largest sequence or global position the store can hold (its columns are BIGINT).
const MAX_STORED: u64 = i64::MAX as u64;

/// Whether `next` is the value right after `previous`, without overflowing.
fn follows(previous: u64, next: u64) -> bool {
    previous.checked_add(1) == Some(next)
}

/// Why a stored commit could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// No events.
    #[error("a commit has at least one event")]
    Empty,
    /// The events are not one aggregate's consecutive events.
    #[error("the events are not one aggregate's consecutive events")]
    NotOneCommit,
}

/// Why a log record could not be decoded. Every variant is final: retrying cannot help, the
/// record is poison.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a protobuf `CommitEnvelope`.
    #[error("not a commit envelope: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// An envelope version this build does not read.
    #[error("envelope version {0} is not supported (this build reads {ENVELOPE_VERSION})")]
    UnsupportedVersion(u32),
    /// An aggregate type this build does not know.
    #[error("unknown aggregate type {0:?}")]
    UnknownAggregateType(String),
    /// The envelope has no events.
    #[error("the commit has no events")]
    Empty,
    /// The envelope contradicts itself.
    #[error("inconsistent envelope: {0}")]
    Inconsistent(String),
    /// An event's payload does not parse as that event.
    #[error("event {event_type} v{event_version} does not parse: {source}")]
    Payload {
        /// The event type.
        event_type: String,
        /// The event version.
        event_version: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// Encodes one stored commit (its events in order, as read from the store) as a log record.
pub fn encode(events: &[RecordedEvent]) -> Result<Vec<u8>, EncodeError> {
    let first = events.first().ok_or(EncodeError::Empty)?;
    let last = events.last().ok_or(EncodeError::Empty)?;
    let one_commit = events.windows(2).all(|pair| {
        pair[1].aggregate_type == pair[0].aggregate_type
            && pair[1].aggregate_id == pair[0].aggregate_id
            && pair[0].sequence.checked_add(1) == Some(pair[1].sequence)
            && pair[0].global_position.checked_add(1) == Some(pair[1].global_position)
    });
    if !one_commit {
        return Err(EncodeError::NotOneCommit);
    }
    let envelope = pb::CommitEnvelope {
        envelope_version: ENVELOPE_VERSION,
        aggregate_type: first.aggregate_type.clone(),
        aggregate_id: first.aggregate_id.clone(),
        first_sequence: first.sequence as u64,
        last_sequence: last.sequence as u64,
        first_position: first.global_position as u64,
        last_position: last.global_position as u64,
        committed_at: Some(timestamp(first.recorded_at)),
        correlation_id: metadata_field(&first.metadata, metadata::CORRELATION_ID),
        causation_id: metadata_field(&first.metadata, metadata::CAUSATION_ID),
        events: events
            .iter()
            .map(|event| pb::LoggedEvent {
                sequence: event.sequence as u64,
                position: event.global_position as u64,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload_json: event.payload.to_string().into_bytes(),
                recorded_at: Some(timestamp(event.recorded_at)),
            })
            .collect(),
    };
    Ok(envelope.encode_to_vec())
}

/// Decodes one log record.
pub fn decode(record: &[u8]) -> Result<LoggedCommit, DecodeError> {
    let envelope = pb::CommitEnvelope::decode(record)?;
    if envelope.envelope_version != ENVELOPE_VERSION {
        return Err(DecodeError::UnsupportedVersion(envelope.envelope_version));
    }
    if envelope.events.is_empty() {
        return Err(DecodeError::Empty);
    }
    let events = envelope
        .events
        .into_iter()
        .map(|event| {
            let payload = serde_json::from_slice(&event.payload_json).map_err(|source| {
                DecodeError::Payload {
                    event_type: event.event_type.clone(),
                    event_version: event.event_version.clone(),
                    source,
                }
            })?;
            Ok(LoggedEvent {
                sequence: event.sequence,
                position: event.position,
                recorded_at: datetime(event.recorded_at)?,
                event: DomainEvent::parse(
                    &envelope.aggregate_type,
                    &event.event_type,
                    &event.event_version,
                    payload,
                )?,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let commit = LoggedCommit {
        aggregate_type: envelope.aggregate_type,
        aggregate_id: envelope.aggregate_id,
        committed_at: datetime(envelope.committed_at)?,
        correlation_id: envelope.correlation_id,
        causation_id: envelope.causation_id,
        events,
    };
    commit.check_contiguous()?;
    let ranges_agree = commit.first_sequence() == envelope.first_sequence
        && commit.last_sequence() == envelope.last_sequence
        && commit.first_position() == envelope.first_position
        && commit.last_position() == envelope.last_position;
    if !ranges_agree {
        return Err(DecodeError::Inconsistent(
            "the header's ranges disagree with its events".into(),
        ));
    }
    Ok(commit)
}

fn metadata_field(metadata: &serde_json::Value, key: &str) -> String {
    metadata
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

fn datetime(at: Option<prost_types::Timestamp>) -> Result<OffsetDateTime, DecodeError> {
    let at = at.ok_or_else(|| DecodeError::Inconsistent("a timestamp is missing".into()))?;
    let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| DecodeError::Inconsistent("a timestamp is out of range".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn recorded(sequence: i64, position: i64, payload: serde_json::Value) -> RecordedEvent {
        RecordedEvent {
            global_position: position,
            aggregate_type: "menu".into(),
            aggregate_id: "menu".into(),
            sequence,
            event_type: "MenuItemAvailabilityChanged".into(),
            event_version: "1.0".into(),
            payload,
            metadata: json!({"correlation_id": "flow-1"}),
            recorded_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        }
    }

    fn availability(available: bool) -> serde_json::Value {
        json!({"MenuItemAvailabilityChanged": {"sku": "LATTE-12", "available": available}})
    }

    #[test]
    fn a_commit_survives_encode_and_decode() {
        let events = [
            recorded(4, 10, availability(false)),
            recorded(5, 11, availability(true)),
        ];

        let decoded = decode(&encode(&events).unwrap()).unwrap();

        assert_eq!(decoded, LoggedCommit::from_recorded(&events).unwrap());
        assert_eq!((decoded.first_sequence(), decoded.last_sequence()), (4, 5));
        assert_eq!(
            (decoded.first_position(), decoded.last_position()),
            (10, 11)
        );
        assert_eq!(decoded.correlation_id, "flow-1");
        assert!(matches!(decoded.events[0].event, DomainEvent::Menu(_)));
    }

    #[test]
    fn garbage_unknown_versions_and_bad_payloads_are_poison() {
        assert!(matches!(
            decode(b"\xff\xff not protobuf"),
            Err(DecodeError::Protobuf(_))
        ));

        let mut envelope =
            pb::CommitEnvelope::decode(&*encode(&[recorded(1, 1, availability(true))]).unwrap())
                .unwrap();
        envelope.envelope_version = 2;
        assert!(matches!(
            decode(&envelope.encode_to_vec()),
            Err(DecodeError::UnsupportedVersion(2))
        ));

        let bad_payload = encode(&[recorded(1, 1, json!({"NoSuchEvent": {}}))]).unwrap();
        assert!(matches!(
            decode(&bad_payload),
            Err(DecodeError::Payload { .. })
        ));
    }

    #[test]
    fn events_of_different_aggregates_are_not_one_commit() {
        let mut other = recorded(2, 2, availability(true));
        other.aggregate_id = "another".into();
        assert!(matches!(
            encode(&[recorded(1, 1, availability(true)), other]),
            Err(EncodeError::NotOneCommit)
        ));
    }
}
