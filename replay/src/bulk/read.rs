//! The bulk rebuild's reader: the events table through `COPY (SELECT ...) TO STDOUT` in binary
//! format, each event's payload and metadata kept as the JSON text PostgreSQL sends.
//!
//! The one reader task feeds every writer, so what it does per event bounds the whole rebuild
//! (see docs/performance.md, "Rebuilds as bulk loads"). Through a `SELECT` it decoded each
//! `jsonb` into a `serde_json::Value` that a writer then parsed again into the event; here it
//! only cuts the binary rows, and each writer decodes its commits' payloads once, straight into
//! the typed events ([`StoredEvent::decode_commit`]). The binary format spares PostgreSQL the
//! integers' and timestamps' text output and the client their parsing.

use commit_log::{DecodeError, DomainEvent, LoggedCommit, LoggedEvent};
use event_store::{PgEventStore, StoreError};
use futures::{Stream, StreamExt, TryStreamExt};
use sqlx::postgres::PgPoolCopyExt;
use time::OffsetDateTime;

use crate::commits::CommitPart;
use crate::error::ReplayError;

/// An event as the reader hands it to a writer: its header decoded, its payload and metadata
/// still JSON text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredEvent {
    pub(crate) global_position: i64,
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
    pub(crate) event_type: String,
    pub(crate) event_version: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) metadata: Vec<u8>,
    pub(crate) recorded_at: OffsetDateTime,
}

impl CommitPart for StoredEvent {
    fn global_position(&self) -> i64 {
        self.global_position
    }

    fn continues(&self, previous: &Self) -> bool {
        // `jsonb` prints one way for one value, so equal text is equal metadata.
        self.global_position == previous.global_position + 1
            && self.sequence == previous.sequence + 1
            && self.aggregate_id == previous.aggregate_id
            && self.aggregate_type == previous.aggregate_type
            && self.recorded_at == previous.recorded_at
            && self.metadata == previous.metadata
    }
}

impl StoredEvent {
    /// `events`, one commit's in order, as the live path's [`LoggedCommit::from_recorded`]
    /// would make them.
    pub(crate) fn decode_commit(events: &[StoredEvent]) -> Result<LoggedCommit, ReplayError> {
        let position = events.first().map_or(0, |e| e.global_position);
        let decode = || {
            let first = events.first().ok_or(DecodeError::Empty)?;
            let logged = events
                .iter()
                .map(|event| {
                    let parsed = DomainEvent::parse_json(
                        &event.aggregate_type,
                        &event.event_type,
                        &event.event_version,
                        &event.payload,
                    )?;
                    Ok(LoggedEvent::stored(
                        event.sequence,
                        event.global_position,
                        event.recorded_at,
                        parsed,
                    ))
                })
                .collect::<Result<Vec<_>, DecodeError>>()?;
            let metadata =
                serde_json::from_slice(&first.metadata).map_err(|source| DecodeError::Payload {
                    event_type: first.event_type.clone(),
                    event_version: first.event_version.clone(),
                    source,
                })?;
            LoggedCommit::from_stored(
                &first.aggregate_type,
                &first.aggregate_id,
                &metadata,
                logged,
            )
        };
        decode().map_err(|source| ReplayError::Decode { position, source })
    }
}

/// The events with `after < position <= through`, in commit order, streamed from one `COPY`
/// (constant memory).
pub(crate) fn read_range(
    store: &PgEventStore,
    after: i64,
    through: i64,
) -> impl Stream<Item = Result<StoredEvent, ReplayError>> + Send + '_ {
    // `COPY` takes no parameters; the bounds are integers, printed as such.
    let statement = format!(
        "COPY (SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload, metadata, recorded_at FROM events \
         WHERE global_position > {after} AND global_position <= {through} \
         ORDER BY global_position) TO STDOUT (FORMAT binary)"
    );
    futures::stream::once(async move {
        let chunks = store
            .pool()
            .copy_out_raw(&statement)
            .await
            .map_err(StoreError::from)?;
        Ok::<_, ReplayError>(
            chunks
                .map_err(|e| ReplayError::Store(StoreError::from(e)))
                .scan(BinaryRows::default(), |rows, chunk| {
                    let events = chunk.and_then(|chunk| rows.push(&chunk));
                    std::future::ready(Some(events))
                })
                .map_ok(|events| futures::stream::iter(events.into_iter().map(Ok)))
                .try_flatten(),
        )
    })
    .try_flatten()
}

/// The signature that opens PostgreSQL's binary `COPY` format.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Columns of the statement in [`read_range`].
const COLUMNS: i16 = 9;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const POSTGRES_EPOCH_MICROS: i128 = 946_684_800_000_000;
/// The only `jsonb` binary format version.
const JSONB_VERSION: u8 = 1;

/// Cuts the binary `COPY` stream, in whatever chunks it arrives, into events.
#[derive(Debug, Default)]
struct BinaryRows {
    /// Bytes received and not yet cut into whole rows.
    pending: Vec<u8>,
    header_read: bool,
}

impl BinaryRows {
    /// Takes the next chunk; the events it completes.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<StoredEvent>, ReplayError> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut at = 0;
        if !self.header_read {
            match header_length(&self.pending)? {
                Some(length) => {
                    at = length;
                    self.header_read = true;
                }
                None => return Ok(events),
            }
        }
        while let Some((event, length)) = row(&self.pending[at..])? {
            at += length;
            match event {
                Some(event) => events.push(event),
                None => break,
            }
        }
        self.pending.drain(..at);
        Ok(events)
    }
}

fn malformed(what: &str) -> ReplayError {
    ReplayError::MalformedCopy(what.to_owned())
}

/// The header's length, once `bytes` hold all of it.
fn header_length(bytes: &[u8]) -> Result<Option<usize>, ReplayError> {
    let fixed = SIGNATURE.len() + 8;
    if bytes.len() < fixed {
        return Ok(None);
    }
    if &bytes[..SIGNATURE.len()] != SIGNATURE {
        return Err(malformed("no binary COPY signature"));
    }
    let extension = u32::from_be_bytes(bytes[fixed - 4..fixed].try_into().expect("4 bytes"));
    let length = fixed + extension as usize;
    Ok((bytes.len() >= length).then_some(length))
}

/// The row at the start of `bytes` and its length once they hold all of it; `Some((None, _))`
/// for the trailer that ends the data.
fn row(bytes: &[u8]) -> Result<Option<(Option<StoredEvent>, usize)>, ReplayError> {
    let mut cursor = Cursor { bytes, at: 0 };
    let Some(columns) = cursor.take(2) else {
        return Ok(None);
    };
    let columns = i16::from_be_bytes(columns.try_into().expect("2 bytes"));
    if columns == -1 {
        return Ok(Some((None, 2)));
    }
    if columns != COLUMNS {
        return Err(malformed("a row with another number of columns"));
    }
    let mut fields: [&[u8]; COLUMNS as usize] = [&[]; COLUMNS as usize];
    for field in &mut fields {
        let Some(length) = cursor.take(4) else {
            return Ok(None);
        };
        let length = i32::from_be_bytes(length.try_into().expect("4 bytes"));
        // Every column of the events table is NOT NULL.
        let length = usize::try_from(length).map_err(|_| malformed("a NULL column"))?;
        let Some(value) = cursor.take(length) else {
            return Ok(None);
        };
        *field = value;
    }
    let [position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at] =
        fields;
    let event = StoredEvent {
        global_position: bigint(position)?,
        aggregate_type: text(aggregate_type)?,
        aggregate_id: text(aggregate_id)?,
        sequence: bigint(sequence)?,
        event_type: text(event_type)?,
        event_version: text(event_version)?,
        payload: jsonb(payload)?,
        metadata: jsonb(metadata)?,
        recorded_at: timestamptz(recorded_at)?,
    };
    Ok(Some((Some(event), cursor.at)))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// The next `length` bytes, if there are that many.
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        let value = self.bytes.get(self.at..self.at.checked_add(length)?)?;
        self.at += length;
        Some(value)
    }
}

fn bigint(value: &[u8]) -> Result<i64, ReplayError> {
    Ok(i64::from_be_bytes(
        value
            .try_into()
            .map_err(|_| malformed("a bigint not of 8 bytes"))?,
    ))
}

fn text(value: &[u8]) -> Result<String, ReplayError> {
    String::from_utf8(value.to_vec()).map_err(|_| malformed("text that is not UTF-8"))
}

fn jsonb(value: &[u8]) -> Result<Vec<u8>, ReplayError> {
    match value.split_first() {
        Some((&JSONB_VERSION, json)) => Ok(json.to_vec()),
        _ => Err(malformed("a jsonb of an unknown binary version")),
    }
}

fn timestamptz(value: &[u8]) -> Result<OffsetDateTime, ReplayError> {
    let micros = bigint(value)? as i128;
    OffsetDateTime::from_unix_timestamp_nanos((micros + POSTGRES_EPOCH_MICROS) * 1_000)
        .map_err(|_| malformed("a timestamp out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(bytes: &mut Vec<u8>, value: &[u8]) {
        bytes.extend_from_slice(&(value.len() as i32).to_be_bytes());
        bytes.extend_from_slice(value);
    }

    fn binary_copy(rows: usize) -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&4u32.to_be_bytes());
        bytes.extend_from_slice(b"skip");
        for position in 1..=rows as i64 {
            bytes.extend_from_slice(&COLUMNS.to_be_bytes());
            field(&mut bytes, &position.to_be_bytes());
            field(&mut bytes, b"order");
            field(&mut bytes, b"o-1");
            field(&mut bytes, &position.to_be_bytes());
            field(&mut bytes, b"OrderAccepted");
            field(&mut bytes, b"1.0");
            field(&mut bytes, b"\x01{\"a\": 1}");
            field(&mut bytes, b"\x01{}");
            // 2000-01-01 00:00:01 UTC.
            field(&mut bytes, &1_000_000i64.to_be_bytes());
        }
        bytes.extend_from_slice(&(-1i16).to_be_bytes());
        bytes
    }

    #[test]
    fn rows_are_cut_whatever_the_chunks() {
        let bytes = binary_copy(3);
        for chunk_size in [1, 7, 64, bytes.len()] {
            let mut rows = BinaryRows::default();
            let mut events = Vec::new();
            for chunk in bytes.chunks(chunk_size) {
                events.extend(rows.push(chunk).expect("well-formed"));
            }
            assert_eq!(events.len(), 3, "chunks of {chunk_size}");
            let last = &events[2];
            assert_eq!(last.global_position, 3);
            assert_eq!(last.aggregate_id, "o-1");
            assert_eq!(last.payload, b"{\"a\": 1}");
            assert_eq!(last.metadata, b"{}");
            assert_eq!(last.recorded_at.unix_timestamp(), 946_684_801);
        }
    }

    #[test]
    fn a_stream_that_is_not_binary_copy_is_refused() {
        let mut rows = BinaryRows::default();
        let refused = rows.push(b"1\torder\to-1\t1\tOrderAccepted\t1.0\t{}\t{}\t2000-01-01\n");
        assert!(matches!(refused, Err(ReplayError::MalformedCopy(_))));
    }
}
