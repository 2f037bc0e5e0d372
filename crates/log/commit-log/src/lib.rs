//! The log record of commits (BRIEF §3.3): each commit of one aggregate is a versioned protobuf
//! envelope (`orderpipe.v1.CommitEnvelope`), and one Kinesis record carries either one envelope
//! or a [`container`] of several commits of one shard.
//!
//! The relay [`encode`]s a stored commit; projectors, the saga and replay [`decode`] records (or
//! read stored events with [`LoggedCommit::from_recorded`]) into typed domain events. When an
//! event gets a new `event_version`, its upcaster belongs in [`DomainEvent::parse`].
//!
//! A decode error is one of two kinds ([`DecodeError::is_poison`]):
//! - **poison**: the bytes are not a commit envelope, or the envelope contradicts itself or
//!   carries a payload that is not the event it names. No build will ever read it: the reader
//!   sends it to its dead-letter queue with the reason.
//! - **not understood** ([`DecodeError::NotUnderstood`]): a well-formed envelope carrying an
//!   aggregate type, event type or version (or a newer envelope version) that this build's
//!   [`Vocabulary`] does not know: a writer deployed before its readers. It comes with its
//!   [`CommitHeader`], so the reader can stop that aggregate and resume it, in order, once a
//!   build that knows the event runs; it is never skipped.
//!
//! Every reader [`unpack`]s a record into its commits' envelopes first, then decodes each one.
//!
//! [`projection`] holds the port every consumer of these commits implements, whichever way
//! they arrive (the Kinesis consumer runtime, replay from the event store).

pub mod container;
pub mod projection;
mod vocabulary;

pub use container::{unpack, Container, UnpackError};

pub use vocabulary::{EventVersion, Vocabulary};

use std::fmt;

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
        Self::deserialize(aggregate_type, event_type, event_version, payload)
    }

    /// Parses a stored payload of `aggregate_type` given as its JSON text: straight into the
    /// typed event, without the `serde_json::Value` that [`Self::parse`] takes (replay's bulk
    /// rebuild reads the store's `jsonb` as text and decodes each payload once). Fails as
    /// [`Self::parse`] fails, with the same message.
    pub fn parse_json(
        aggregate_type: &str,
        event_type: &str,
        event_version: &str,
        payload: &[u8],
    ) -> Result<Self, DecodeError> {
        let mut json = serde_json::Deserializer::from_slice(payload);
        let parsed = Self::deserialize(aggregate_type, event_type, event_version, &mut json)
            .and_then(|event| {
                json.end()
                    .map_err(|source| invalid_payload(event_type, event_version, source))?;
                Ok(event)
            });
        parsed.or_else(|_| {
            // Parsed again through a `Value` for the error only: text's errors name a line and
            // column, and a payload refused must read the same whichever way it was decoded.
            let value = serde_json::from_slice(payload)
                .map_err(|source| invalid_payload(event_type, event_version, source))?;
            Self::parse(aggregate_type, event_type, event_version, value)
        })
    }

    /// The one place that maps an aggregate type to its event type (and, when an event gets a
    /// new version, its upcaster), whatever holds the payload.
    fn deserialize<'de, D>(
        aggregate_type: &str,
        event_type: &str,
        event_version: &str,
        payload: D,
    ) -> Result<Self, DecodeError>
    where
        D: serde::Deserializer<'de, Error = serde_json::Error>,
    {
        use serde::Deserialize as _;
        let invalid = |source| invalid_payload(event_type, event_version, source);
        Ok(match aggregate_type {
            Order::TYPE => DomainEvent::Order(OrderEvent::deserialize(payload).map_err(invalid)?),
            StoreInventory::TYPE => {
                DomainEvent::Inventory(InventoryEvent::deserialize(payload).map_err(invalid)?)
            }
            LoyaltyAccount::TYPE => {
                DomainEvent::Loyalty(LoyaltyEvent::deserialize(payload).map_err(invalid)?)
            }
            Menu::TYPE => DomainEvent::Menu(MenuEvent::deserialize(payload).map_err(invalid)?),
            other => return Err(DecodeError::UnknownAggregateType(other.to_owned())),
        })
    }

    /// The event's type name, as stored and carried in the envelope.
    pub fn event_type(&self) -> String {
        use cqrs_es::DomainEvent as _;
        match self {
            DomainEvent::Order(event) => event.event_type(),
            DomainEvent::Inventory(event) => event.event_type(),
            DomainEvent::Loyalty(event) => event.event_type(),
            DomainEvent::Menu(event) => event.event_type(),
        }
    }

    /// The version this build writes of the event's type.
    pub fn event_version(&self) -> String {
        use cqrs_es::DomainEvent as _;
        match self {
            DomainEvent::Order(event) => event.event_version(),
            DomainEvent::Inventory(event) => event.event_version(),
            DomainEvent::Loyalty(event) => event.event_version(),
            DomainEvent::Menu(event) => event.event_version(),
        }
    }
}

/// What a log record says about its commit outside the events: enough to keep the commit in
/// its aggregate's order (park it, apply it later) without understanding its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitHeader {
    /// The aggregate type (`order`, `inventory`, ... or one this build does not know).
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The first event's sequence.
    pub first_sequence: u64,
    /// The last event's sequence.
    pub last_sequence: u64,
    /// The first event's global position.
    pub first_position: u64,
    /// The last event's global position.
    pub last_position: u64,
}

impl CommitHeader {
    /// The header of `envelope`, checked to be one aggregate's contiguous range of its events.
    fn of(envelope: &pb::CommitEnvelope) -> Result<Self, DecodeError> {
        let header = CommitHeader {
            aggregate_type: envelope.aggregate_type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            first_sequence: envelope.first_sequence,
            last_sequence: envelope.last_sequence,
            first_position: envelope.first_position,
            last_position: envelope.last_position,
        };
        let events = envelope.events.len() as u64;
        let spans = |first: u64, last: u64| {
            first >= 1 && last >= first && last.checked_sub(first) == events.checked_sub(1)
        };
        let sane = !header.aggregate_type.is_empty()
            && !header.aggregate_id.is_empty()
            && spans(header.first_sequence, header.last_sequence)
            && spans(header.first_position, header.last_position);
        if sane {
            Ok(header)
        } else {
            Err(DecodeError::Inconsistent(
                "the header does not describe one aggregate's contiguous events".into(),
            ))
        }
    }
}

impl fmt::Display for CommitHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} sequences {}..={} positions {}..={}",
            self.aggregate_type,
            self.aggregate_id,
            self.first_sequence,
            self.last_sequence,
            self.first_position,
            self.last_position
        )
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

impl LoggedEvent {
    /// A stored event, its sequence and position as the store keeps them (`BIGINT`, from 1).
    pub fn stored(
        sequence: i64,
        position: i64,
        recorded_at: OffsetDateTime,
        event: DomainEvent,
    ) -> Self {
        Self {
            sequence: sequence as u64,
            position: position as u64,
            recorded_at,
            event,
        }
    }
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
    /// Who issued the command (the caller's subject, e.g. `barista:s1:ana`; may be empty).
    pub actor: String,
    /// The W3C `traceparent` of the command's span (empty when none was recorded): the trace
    /// every step that handles this commit continues.
    pub traceparent: String,
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

    /// Its header.
    pub fn header(&self) -> CommitHeader {
        CommitHeader {
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            first_sequence: self.first_sequence(),
            last_sequence: self.last_sequence(),
            first_position: self.first_position(),
            last_position: self.last_position(),
        }
    }

    /// A commit read straight from the store (replay): `events` are one commit's events, in
    /// order.
    pub fn from_recorded(events: &[RecordedEvent]) -> Result<Self, DecodeError> {
        let first = events.first().ok_or(DecodeError::Empty)?;
        let logged = events
            .iter()
            .map(|event| {
                let parsed = DomainEvent::parse(
                    &event.aggregate_type,
                    &event.event_type,
                    &event.event_version,
                    event.payload.clone(),
                )?;
                Ok(LoggedEvent::stored(
                    event.sequence,
                    event.global_position,
                    event.recorded_at,
                    parsed,
                ))
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Self::from_stored(
            &first.aggregate_type,
            &first.aggregate_id,
            &first.metadata,
            logged,
        )
    }

    /// A commit of stored events already decoded (replay's bulk rebuild decodes the payloads
    /// itself, see [`DomainEvent::parse_json`]): `metadata` is the command's, `events` in order;
    /// the commit is as durable as its first event. Checked like [`Self::from_recorded`].
    pub fn from_stored(
        aggregate_type: &str,
        aggregate_id: &str,
        metadata: &serde_json::Value,
        events: Vec<LoggedEvent>,
    ) -> Result<Self, DecodeError> {
        let committed_at = events.first().ok_or(DecodeError::Empty)?.recorded_at;
        let commit = LoggedCommit {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            committed_at,
            correlation_id: metadata_field(metadata, metadata::CORRELATION_ID),
            causation_id: metadata_field(metadata, metadata::CAUSATION_ID),
            actor: metadata_field(metadata, metadata::ACTOR),
            traceparent: metadata_field(metadata, metadata::TRACEPARENT),
            events,
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

/// Why a log record could not be decoded. Every variant is final for this build: retrying
/// cannot help. [`DecodeError::NotUnderstood`] waits for a build that knows the event; every
/// other variant is poison ([`DecodeError::is_poison`]).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A well-formed envelope this build does not understand: a newer envelope version, or an
    /// aggregate type, event type or event version its [`Vocabulary`] lacks. Not poison: the
    /// aggregate waits, in order, for a build that knows it.
    #[error("not understood by this build: {what} ({header})")]
    NotUnderstood {
        /// The commit's header, to keep it in its aggregate's order.
        header: CommitHeader,
        /// What this build does not know, e.g. `event OrderNoteAmended v1.0`.
        what: String,
    },
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

impl DecodeError {
    /// Whether no build can ever read the record (dead-letter it). `false` only for
    /// [`DecodeError::NotUnderstood`], which a newer build reads.
    pub fn is_poison(&self) -> bool {
        !matches!(self, DecodeError::NotUnderstood { .. })
    }

    /// The header of a commit this build does not understand.
    pub fn not_understood(&self) -> Option<&CommitHeader> {
        match self {
            DecodeError::NotUnderstood { header, .. } => Some(header),
            _ => None,
        }
    }
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
        actor: metadata_field(&first.metadata, metadata::ACTOR),
        traceparent: metadata_field(&first.metadata, metadata::TRACEPARENT),
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

/// Why a whole log record could not be read (readers that stop at the first problem: replay,
/// test readers).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record is not a container this build reads.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// One of its commits does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Every commit one log record carries, unpacked ([`unpack`]) and decoded, in order.
pub fn decode_record(record: &[u8]) -> Result<Vec<LoggedCommit>, RecordError> {
    Ok(unpack(record)?
        .into_iter()
        .map(decode)
        .collect::<Result<_, _>>()?)
}

/// Decodes one commit envelope with everything this build knows ([`Vocabulary::this_build`]).
pub fn decode(record: &[u8]) -> Result<LoggedCommit, DecodeError> {
    decode_with(record, Vocabulary::this_build())
}

/// Decodes one commit envelope (a single-commit record, or one commit of a container, see
/// [`unpack`]), reading only the events `vocabulary` knows.
pub fn decode_with(record: &[u8], vocabulary: &Vocabulary) -> Result<LoggedCommit, DecodeError> {
    let envelope = pb::CommitEnvelope::decode(record)?;
    let not_understood = |what: String| match CommitHeader::of(&envelope) {
        Ok(header) => DecodeError::NotUnderstood { header, what },
        Err(inconsistent) => inconsistent,
    };
    if envelope.envelope_version > ENVELOPE_VERSION {
        return Err(not_understood(format!(
            "envelope version {} (this build reads {ENVELOPE_VERSION})",
            envelope.envelope_version
        )));
    }
    if envelope.envelope_version != ENVELOPE_VERSION {
        return Err(DecodeError::UnsupportedVersion(envelope.envelope_version));
    }
    if envelope.events.is_empty() {
        return Err(DecodeError::Empty);
    }
    if !vocabulary.knows_aggregate(&envelope.aggregate_type) {
        return Err(not_understood(format!(
            "aggregate type {:?}",
            envelope.aggregate_type
        )));
    }
    let mut events = Vec::with_capacity(envelope.events.len());
    for event in &envelope.events {
        let what = || format!("event {} v{}", event.event_type, event.event_version);
        let Some(reads_up_to) = vocabulary.event(&envelope.aggregate_type, &event.event_type)
        else {
            return Err(not_understood(what()));
        };
        let version = EventVersion::parse(&event.event_version).ok_or_else(|| {
            DecodeError::Inconsistent(format!(
                "event version {:?} is not major.minor",
                event.event_version
            ))
        })?;
        if reads_up_to.is_some_and(|newest| version > newest) {
            return Err(not_understood(what()));
        }
        let payload =
            serde_json::from_slice(&event.payload_json).map_err(|source| DecodeError::Payload {
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                source,
            })?;
        let parsed = match DomainEvent::parse(
            &envelope.aggregate_type,
            &event.event_type,
            &event.event_version,
            payload,
        ) {
            Ok(parsed) => parsed,
            // A newer version's new shape is for a newer build; at a version this build
            // writes, a payload that does not parse is poison.
            Err(_)
                if version
                    > reads_up_to.unwrap_or_else(|| {
                        vocabulary::written_version(&envelope.aggregate_type, &event.event_type)
                    }) =>
            {
                return Err(not_understood(what()))
            }
            Err(error) => return Err(error),
        };
        if parsed.event_type() != event.event_type {
            return Err(DecodeError::Inconsistent(format!(
                "the envelope says {} but the payload is {}",
                event.event_type,
                parsed.event_type()
            )));
        }
        // Parsing a newer version as the one this build writes would drop what it added.
        let written = EventVersion::parse(&parsed.event_version());
        if reads_up_to.is_none() && written.is_some_and(|written| version > written) {
            return Err(not_understood(what()));
        }
        events.push(LoggedEvent {
            sequence: event.sequence,
            position: event.position,
            recorded_at: datetime(event.recorded_at)?,
            event: parsed,
        });
    }
    let commit = LoggedCommit {
        aggregate_type: envelope.aggregate_type,
        aggregate_id: envelope.aggregate_id,
        committed_at: datetime(envelope.committed_at)?,
        correlation_id: envelope.correlation_id,
        causation_id: envelope.causation_id,
        actor: envelope.actor,
        traceparent: envelope.traceparent,
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

fn invalid_payload(
    event_type: &str,
    event_version: &str,
    source: serde_json::Error,
) -> DecodeError {
    DecodeError::Payload {
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        source,
    }
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
            metadata: json!({
                "correlation_id": "flow-1",
                "actor": "barista:s1:ana",
                "traceparent": TRACEPARENT,
            }),
            recorded_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        }
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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
        assert_eq!(decoded.actor, "barista:s1:ana", "who issued the command");
        assert_eq!(decoded.traceparent, TRACEPARENT);
        assert!(matches!(decoded.events[0].event, DomainEvent::Menu(_)));
    }

    #[test]
    fn a_payload_parsed_from_its_text_is_the_event_parsed_from_its_value_and_fails_alike() {
        let parse_both = |payload: serde_json::Value| {
            let text = serde_json::to_vec(&payload).unwrap();
            let from_value =
                DomainEvent::parse("menu", "E", "1.0", payload).map_err(|e| e.to_string());
            let from_text =
                DomainEvent::parse_json("menu", "E", "1.0", &text).map_err(|e| e.to_string());
            (from_value, from_text)
        };
        for payload in [
            availability(true),
            json!({"NoSuchEvent": {}}),
            json!({"MenuItemAvailabilityChanged": {"sku": "LATTE-12"}}),
        ] {
            let (from_value, from_text) = parse_both(payload);
            assert_eq!(from_text, from_value);
        }
        assert!(DomainEvent::parse_json("menu", "E", "1.0", b"{} trailing").is_err());
        assert!(matches!(
            DomainEvent::parse_json("nope", "E", "1.0", b"{}"),
            Err(DecodeError::UnknownAggregateType(_))
        ));
    }

    #[test]
    fn a_record_from_a_writer_without_traces_decodes_with_no_trace() {
        let mut event = recorded(1, 1, availability(true));
        event.metadata = json!({"correlation_id": "flow-1"});

        let decoded = decode(&encode(&[event]).unwrap()).unwrap();

        assert_eq!(decoded.traceparent, "");
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
        envelope.envelope_version = 0;
        let error = decode(&envelope.encode_to_vec()).unwrap_err();
        assert!(matches!(error, DecodeError::UnsupportedVersion(0)));
        assert!(error.is_poison());

        // A known event type whose payload is another event, or not that event at all.
        let mut mislabelled = recorded(
            1,
            1,
            json!({"MenuItemPriceChanged": {"sku": "LATTE-12", "price": 350}}),
        );
        mislabelled.event_type = "MenuItemAvailabilityChanged".into();
        let error = decode(&encode(&[mislabelled]).unwrap()).unwrap_err();
        assert!(matches!(error, DecodeError::Inconsistent(_)), "{error}");
        let bad_payload = encode(&[recorded(1, 1, json!({"NoSuchEvent": {}}))]).unwrap();
        let error = decode(&bad_payload).unwrap_err();
        assert!(matches!(error, DecodeError::Payload { .. }), "{error}");
        assert!(error.is_poison());
        let mut bad_version = recorded(1, 1, availability(true));
        bad_version.event_version = "one".into();
        assert!(decode(&encode(&[bad_version]).unwrap())
            .unwrap_err()
            .is_poison());
    }

    fn not_understood_parts(error: DecodeError) -> (CommitHeader, String) {
        match error {
            DecodeError::NotUnderstood { header, what } => (header, what),
            other => panic!("expected not understood, got poison: {other}"),
        }
    }

    #[test]
    fn an_unknown_event_type_is_not_understood_with_its_header_not_poison() {
        let mut retired = recorded(7, 41, json!({"MenuItemRetired": {"sku": "LATTE-12"}}));
        retired.event_type = "MenuItemRetired".into();
        let next = recorded(8, 42, availability(true));

        let error = decode(&encode(&[retired, next]).unwrap()).unwrap_err();

        assert!(!error.is_poison());
        let (header, what) = not_understood_parts(error);
        assert_eq!(what, "event MenuItemRetired v1.0");
        assert_eq!(
            header,
            CommitHeader {
                aggregate_type: "menu".into(),
                aggregate_id: "menu".into(),
                first_sequence: 7,
                last_sequence: 8,
                first_position: 41,
                last_position: 42,
            }
        );
    }

    #[test]
    fn a_newer_event_version_is_not_understood_even_when_it_parses() {
        // v1.1 of an event this build writes at v1.0: serde would read it and drop whatever
        // 1.1 added.
        let mut newer = recorded(1, 1, availability(true));
        newer.event_version = "1.1".into();
        let (_, what) =
            not_understood_parts(decode(&encode(&[newer.clone()]).unwrap()).unwrap_err());
        assert_eq!(what, "event MenuItemAvailabilityChanged v1.1");

        // v2.0 with a shape this build cannot parse at all: still not poison.
        newer.event_version = "2.0".into();
        newer.payload = json!({"MenuItemAvailabilityChanged": {"skus": ["LATTE-12"]}});
        let (_, what) = not_understood_parts(decode(&encode(&[newer]).unwrap()).unwrap_err());
        assert_eq!(what, "event MenuItemAvailabilityChanged v2.0");
    }

    #[test]
    fn an_older_build_does_not_understand_what_was_added_since_and_this_build_does() {
        let mut added = recorded(
            3,
            9,
            json!({"MenuItemPriceChanged": {"sku": "LATTE-12", "price": 350}}),
        );
        added.event_type = "MenuItemPriceChanged".into();
        let record = encode(&[added]).unwrap();
        let older = Vocabulary::this_build()
            .clone()
            .without_event("menu", "MenuItemPriceChanged");

        let (header, _) = not_understood_parts(decode_with(&record, &older).unwrap_err());
        assert_eq!((header.first_position, header.last_position), (9, 9));
        assert!(decode(&record).is_ok(), "the upgraded build reads it");

        let one_point_oh = EventVersion::parse("1.0").unwrap();
        let before_tokens =
            Vocabulary::this_build()
                .clone()
                .reading_up_to("order", "OrderPlaced", one_point_oh);
        let mut placed = recorded(
            1,
            1,
            json!({"OrderPlaced": {
            "order_id": "5cab9d76-5e8f-4dc8-b04b-3c054cbb5a9b", "store_id": "store-2",
            "customer_id": "customer-1", "lines": [], "note": "", "total": 0,
            "payment_token": "4242424242424242"}}),
        );
        placed.aggregate_type = "order".into();
        placed.aggregate_id = "5cab9d76-5e8f-4dc8-b04b-3c054cbb5a9b".into();
        placed.event_type = "OrderPlaced".into();
        placed.event_version = "1.1".into();
        let record = encode(&[placed.clone()]).unwrap();
        assert!(!decode_with(&record, &before_tokens)
            .unwrap_err()
            .is_poison());
        assert!(decode(&record).is_ok());
        placed.event_version = "1.0".into();
        assert!(decode_with(&encode(&[placed]).unwrap(), &before_tokens).is_ok());
    }

    #[test]
    fn a_newer_envelope_or_aggregate_type_is_not_understood_unless_its_header_is_broken() {
        let record = encode(&[recorded(5, 20, availability(true))]).unwrap();
        let mut envelope = pb::CommitEnvelope::decode(&*record).unwrap();
        envelope.envelope_version = 2;
        let (header, what) = not_understood_parts(decode(&envelope.encode_to_vec()).unwrap_err());
        assert_eq!(what, "envelope version 2 (this build reads 1)");
        assert_eq!(header.first_sequence, 5);

        let mut envelope = pb::CommitEnvelope::decode(&*record).unwrap();
        envelope.aggregate_type = "voucher".into();
        let (_, what) = not_understood_parts(decode(&envelope.encode_to_vec()).unwrap_err());
        assert_eq!(what, "aggregate type \"voucher\"");

        // Without a usable header it cannot be kept in order: poison.
        envelope.aggregate_id = String::new();
        assert!(decode(&envelope.encode_to_vec()).unwrap_err().is_poison());
        let mut envelope = pb::CommitEnvelope::decode(&*record).unwrap();
        envelope.envelope_version = 2;
        envelope.last_position = 99;
        assert!(decode(&envelope.encode_to_vec()).unwrap_err().is_poison());
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
