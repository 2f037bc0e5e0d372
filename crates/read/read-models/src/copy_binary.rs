//! Rows as PostgreSQL's `COPY ... FROM STDIN (FORMAT binary)`, and the one interface
//! ([`RowSink`]) through which a read model's row hands its columns either to a bound statement
//! (the live projection) or to such a buffer (replay's bulk rebuild), so both write the same
//! values.
//!
//! Binary, not text: PostgreSQL then reads each value with its type's `recv` function instead of
//! parsing text (`uuid_in`, `int8in`, `ParseDateTime` were the writing backends' top costs in the
//! bulk rebuild's profile, docs/performance.md), and the client writes integers and times as
//! their bytes instead of formatting them and escaping every string. The price is exactness:
//! every value must be sent as its column's own type (a `bigint` as 8 bytes, a `uuid` as 16, a
//! `text[]` with the `text` element type), or PostgreSQL refuses the whole `COPY`. The encoding,
//! per the PostgreSQL manual ("COPY", "Binary Format") and each type's `recv` function:
//!
//! | column | bytes |
//! |---|---|
//! | `text`, `varchar(n)` | the UTF-8 bytes (PostgreSQL still checks the encoding and `n`) |
//! | `smallint` / `integer` / `bigint` | 2 / 4 / 8 bytes, big-endian |
//! | `boolean` | one byte, 1 or 0 |
//! | `timestamp`, `timestamptz` | `bigint` microseconds since 2000-01-01 00:00:00 (UTC for `timestamptz`) |
//! | `date` | `integer` days since 2000-01-01 |
//! | `uuid` | its 16 bytes, from text read as `uuid_in` reads it |
//! | `text[]` | dimensions, a has-NULLs flag, the element type's OID (25), each dimension's length and lower bound (1), then each element as a field |
//!
//! A stream is an 11-byte signature, a flags word and a header extension length (both 0); each
//! row is its field count (`int16`) and then each field as its length (`int32`, -1 for NULL)
//! and its bytes; a field count of -1 ends the stream.

use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Takes a row's columns in table order, one call per column, typed as the column is.
pub(crate) trait RowSink {
    /// A `text` / `VARCHAR` column.
    fn text(&mut self, value: Option<&str>);
    /// A `BIGINT` column.
    fn bigint(&mut self, value: Option<i64>);
    /// An `INTEGER` column.
    fn integer(&mut self, value: Option<i32>);
    /// A `SMALLINT` column.
    fn smallint(&mut self, value: i16);
    /// A `BOOLEAN` column.
    fn boolean(&mut self, value: Option<bool>);
    /// A `TIMESTAMP` (no zone: UTC wall time) column.
    fn timestamp(&mut self, value: Option<PrimitiveDateTime>);
    /// A `DATE` column.
    fn date(&mut self, value: Date);
}

/// The start of every binary `COPY` stream: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The field count that ends the stream.
const TRAILER: [u8; 2] = (-1i16).to_be_bytes();
/// The length that stands for NULL.
const NULL: [u8; 4] = (-1i32).to_be_bytes();
/// `text`'s type OID, the element type of a `text[]`.
const TEXT_OID: u32 = 25;
/// 2000-01-01, PostgreSQL's epoch for times and dates: as a Unix time in microseconds, and as a
/// Julian day.
const POSTGRES_EPOCH_UNIX_MICROS: i128 = 946_684_800_000_000;
const POSTGRES_EPOCH_JULIAN_DAY: i32 = 2_451_545;

/// A value a `uuid` column does not take: PostgreSQL's own words for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid input syntax for type uuid: {0:?}")]
pub struct NotAUuid(pub String);

/// One table's rows in `COPY` binary format.
#[derive(Debug, Default)]
pub(crate) struct CopyBinary {
    /// The stream so far (with its header once a row is started; without its trailer).
    data: Vec<u8>,
    /// Where the current row's field count goes, once the row has a column.
    row_start: Option<usize>,
    /// The current row's columns so far.
    columns: i16,
    rows: u64,
}

impl CopyBinary {
    /// The stream of the rows so far, and how many (nothing when there are none), emptying
    /// the buffer. The next buffer starts at this one's size (a table's rows come in similar
    /// amounts): grown from empty, it would be reallocated some twenty times on its way to a
    /// MiB.
    pub(crate) fn take(&mut self) -> (Vec<u8>, u64) {
        let rows = std::mem::take(&mut self.rows);
        let next = Vec::with_capacity(self.data.len() + TRAILER.len());
        let mut data = std::mem::replace(&mut self.data, next);
        if rows > 0 {
            data.extend_from_slice(&TRAILER);
        }
        (data, rows)
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    /// Ends the current row.
    pub(crate) fn end_row(&mut self) {
        if let Some(at) = self.row_start.take() {
            self.data[at..at + 2].copy_from_slice(&self.columns.to_be_bytes());
        }
        self.columns = 0;
        self.rows += 1;
    }

    /// Starts the next field: the stream's header before the first row, the row's field count
    /// (filled in by [`Self::end_row`]) before its first field.
    fn next_column(&mut self) {
        if self.row_start.is_none() {
            if self.data.is_empty() {
                self.data.extend_from_slice(HEADER);
            }
            self.row_start = Some(self.data.len());
            self.data.extend_from_slice(&[0, 0]);
        }
        self.columns += 1;
    }

    fn field(&mut self, value: Option<&[u8]>) {
        self.next_column();
        match value {
            Some(bytes) => {
                self.data
                    .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                self.data.extend_from_slice(bytes);
            }
            None => self.data.extend_from_slice(&NULL),
        }
    }

    /// A `timestamptz` column.
    pub(crate) fn timestamptz(&mut self, value: Option<OffsetDateTime>) {
        self.timestamp(value.map(|at| {
            let at = at.to_offset(UtcOffset::UTC);
            PrimitiveDateTime::new(at.date(), at.time())
        }));
    }

    /// A `uuid` column, `value` read as PostgreSQL's `uuid_in` reads text (so a value the live
    /// path's `::uuid` cast takes is taken, and one it refuses is refused).
    pub(crate) fn uuid(&mut self, value: Option<&str>) -> Result<(), NotAUuid> {
        match value {
            Some(text) => {
                let bytes = parse_uuid(text).ok_or_else(|| NotAUuid(text.to_owned()))?;
                self.field(Some(&bytes));
            }
            None => self.field(None),
        }
        Ok(())
    }

    /// A `text[]` column: one dimension from 1 (none for an empty array, as `'{}'` reads),
    /// without NULLs.
    pub(crate) fn text_array<'a>(&mut self, values: impl ExactSizeIterator<Item = &'a str>) {
        self.next_column();
        let length_at = self.data.len();
        self.data.extend_from_slice(&[0; 4]);
        let count = values.len() as i32;
        let dimensions: i32 = if count == 0 { 0 } else { 1 };
        self.data.extend_from_slice(&dimensions.to_be_bytes());
        self.data.extend_from_slice(&0i32.to_be_bytes());
        self.data.extend_from_slice(&TEXT_OID.to_be_bytes());
        if count > 0 {
            self.data.extend_from_slice(&count.to_be_bytes());
            self.data.extend_from_slice(&1i32.to_be_bytes());
        }
        for value in values {
            self.data
                .extend_from_slice(&(value.len() as i32).to_be_bytes());
            self.data.extend_from_slice(value.as_bytes());
        }
        let length = (self.data.len() - length_at - 4) as i32;
        self.data[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }
}

impl RowSink for CopyBinary {
    fn text(&mut self, value: Option<&str>) {
        self.field(value.map(str::as_bytes));
    }

    fn bigint(&mut self, value: Option<i64>) {
        self.field(value.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    fn integer(&mut self, value: Option<i32>) {
        self.field(value.map(i32::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    fn smallint(&mut self, value: i16) {
        self.field(Some(&value.to_be_bytes()));
    }

    fn boolean(&mut self, value: Option<bool>) {
        self.field(value.map(|v| [u8::from(v)]).as_ref().map(|b| &b[..]));
    }

    fn timestamp(&mut self, value: Option<PrimitiveDateTime>) {
        // Whole microseconds, rounded down as the text format's `.{microsecond:06}` was.
        let micros = value.map(|at| {
            let micros = at.assume_utc().unix_timestamp_nanos().div_euclid(1_000);
            ((micros - POSTGRES_EPOCH_UNIX_MICROS) as i64).to_be_bytes()
        });
        self.field(micros.as_ref().map(|b| &b[..]));
    }

    fn date(&mut self, value: Date) {
        let days = value.to_julian_day() - POSTGRES_EPOCH_JULIAN_DAY;
        self.field(Some(&days.to_be_bytes()));
    }
}

/// `text` as PostgreSQL's `uuid_in` reads it (`string_to_uuid` in `uuid.c`): 32 hex digits of
/// either case, optionally within `{}`, with an optional `-` after any group of four digits
/// but the last.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let mut rest = text.as_bytes();
    let braced = rest.first() == Some(&b'{');
    if braced {
        rest = &rest[1..];
    }
    let mut bytes = [0u8; 16];
    for (index, byte) in bytes.iter_mut().enumerate() {
        let [high, low, tail @ ..] = rest else {
            return None;
        };
        *byte = (hex_digit(*high)? << 4) | hex_digit(*low)?;
        rest = tail;
        if index % 2 == 1 && index < 15 {
            if let [b'-', tail @ ..] = rest {
                rest = tail;
            }
        }
    }
    if braced {
        rest = rest.strip_prefix(b"}")?;
    }
    rest.is_empty().then_some(bytes)
}

fn hex_digit(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use time::macros::{date, datetime};

    fn stream(rows: &mut CopyBinary) -> Vec<u8> {
        rows.take().0
    }

    #[test]
    fn a_row_is_its_field_count_then_each_field_between_header_and_trailer() {
        let mut rows = CopyBinary::default();
        rows.text(Some("é\t"));
        rows.text(None);
        rows.smallint(-2);
        rows.end_row();
        let mut expected = HEADER.to_vec();
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 3, 0xc3, 0xa9, b'\t']);
        expected.extend_from_slice(&[0xff; 4]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xfe]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(rows.take(), (expected, 1));
        assert_eq!(rows.take(), (Vec::new(), 0), "no rows, no stream");
    }

    #[test]
    fn each_type_is_its_bytes() {
        let field = |write: &dyn Fn(&mut CopyBinary)| {
            let mut rows = CopyBinary::default();
            write(&mut rows);
            rows.end_row();
            let data = stream(&mut rows);
            data[HEADER.len() + 2..data.len() - 2].to_vec()
        };
        let with_length = |bytes: &[u8]| {
            let mut field = (bytes.len() as i32).to_be_bytes().to_vec();
            field.extend_from_slice(bytes);
            field
        };
        assert_eq!(
            field(&|r| r.bigint(Some(-5))),
            with_length(&(-5i64).to_be_bytes())
        );
        assert_eq!(field(&|r| r.integer(Some(7))), with_length(&[0, 0, 0, 7]));
        assert_eq!(field(&|r| r.integer(None)), NULL.to_vec());
        assert_eq!(field(&|r| r.boolean(Some(true))), with_length(&[1]));
        assert_eq!(field(&|r| r.boolean(Some(false))), with_length(&[0]));
        // One second and a half after the epoch, an hour ahead of UTC.
        assert_eq!(
            field(&|r| r.timestamptz(Some(datetime!(2000-01-01 01:00:01.5 +01:00)))),
            with_length(&1_500_000i64.to_be_bytes())
        );
        // Before the epoch: negative, and the nanoseconds rounded down.
        assert_eq!(
            field(&|r| r.timestamp(Some(datetime!(1999-12-31 23:59:59.0000009)))),
            with_length(&(-1_000_000i64).to_be_bytes())
        );
        assert_eq!(
            field(&|r| r.date(date!(2000 - 01 - 03))),
            with_length(&2i32.to_be_bytes())
        );
        assert_eq!(
            field(&|r| r
                .uuid(Some("{0123456789ABCDEF-0123-456789abcdef}"))
                .unwrap()),
            with_length(&0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128.to_be_bytes())
        );
        let mut array = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 2, 0, 0, 0, 1];
        array.extend_from_slice(&with_length(b"oat"));
        array.extend_from_slice(&with_length(b""));
        assert_eq!(
            field(&|r| r.text_array(["oat", ""].into_iter())),
            with_length(&array)
        );
        assert_eq!(
            field(&|r| r.text_array(std::iter::empty())),
            with_length(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25])
        );
    }

    /// Every type's bytes, as PostgreSQL itself reads them: a row of each type and a row of
    /// NULLs `COPY`ed in binary, read back as text.
    #[tokio::test]
    async fn postgresql_reads_back_what_was_written() {
        use sqlx::postgres::PgPoolCopyExt;
        let database = test_support::fresh_database().await;
        let pool = &database.pool;
        sqlx::query(
            "CREATE TABLE every_type (t text, v varchar(8), s smallint, i integer, b bigint, \
             f boolean, ts timestamp, tz timestamptz, d date, u uuid, a text[], e text[])",
        )
        .execute(pool)
        .await
        .unwrap();
        let mut rows = CopyBinary::default();
        rows.text(Some("tab\t, quote \" and é"));
        rows.text(Some("short"));
        rows.smallint(-32768);
        rows.integer(Some(i32::MAX));
        rows.bigint(Some(i64::MIN));
        rows.boolean(Some(true));
        rows.timestamp(Some(datetime!(1999-12-31 23:59:59.9999999)));
        rows.timestamptz(Some(datetime!(2025-03-01 09:05:00.5 +01:00)));
        rows.date(date!(1970 - 01 - 01));
        rows.uuid(Some("{6ECD8C99-4036403d-bf84-cf8400f67836}"))
            .unwrap();
        rows.text_array(["oat \"milk\"", "x\\y", ""].into_iter());
        rows.text_array(std::iter::empty());
        rows.end_row();
        for _ in 0..5 {
            rows.text(None);
        }
        rows.boolean(None);
        rows.timestamp(None);
        rows.timestamptz(None);
        rows.date(date!(2000 - 01 - 01));
        rows.uuid(None).unwrap();
        rows.text_array(std::iter::empty());
        rows.text_array(["only"].into_iter());
        rows.end_row();
        let (data, count) = rows.take();
        let mut copy = pool
            .copy_in_raw("COPY every_type FROM STDIN (FORMAT binary)")
            .await
            .unwrap();
        copy.send(data).await.unwrap();
        assert_eq!(copy.finish().await.unwrap(), count);

        let read: Vec<Vec<Option<String>>> = sqlx::query_scalar(
            "SELECT ARRAY[t, v, s::text, i::text, b::text, f::text, ts::text, \
             (tz AT TIME ZONE 'UTC')::text, d::text, u::text, a::text, e::text, \
             array_length(a, 1)::text, array_length(e, 1)::text] \
             FROM every_type ORDER BY t NULLS LAST",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let text = |values: &[Option<&str>]| -> Vec<Option<String>> {
            values.iter().map(|v| v.map(str::to_owned)).collect()
        };
        assert_eq!(
            read,
            vec![
                text(&[
                    Some("tab\t, quote \" and é"),
                    Some("short"),
                    Some("-32768"),
                    Some("2147483647"),
                    Some("-9223372036854775808"),
                    Some("true"),
                    Some("1999-12-31 23:59:59.999999"),
                    Some("2025-03-01 08:05:00.5"),
                    Some("1970-01-01"),
                    Some("6ecd8c99-4036-403d-bf84-cf8400f67836"),
                    Some(r#"{"oat \"milk\"","x\\y",""}"#),
                    Some("{}"),
                    Some("3"),
                    None,
                ]),
                text(&[
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some("2000-01-01"),
                    None,
                    Some("{}"),
                    Some("{only}"),
                    None,
                    Some("1"),
                ]),
            ]
        );
    }

    /// A value its column refuses is refused by PostgreSQL as in the text format: here a
    /// `varchar(n)` too long (Redshift-shaped analytics columns have such limits).
    #[tokio::test]
    async fn postgresql_checks_what_it_checks_in_text() {
        use sqlx::postgres::PgPoolCopyExt;
        let database = test_support::fresh_database().await;
        let pool = &database.pool;
        sqlx::query("CREATE TABLE limited (v varchar(3))")
            .execute(pool)
            .await
            .unwrap();
        let mut rows = CopyBinary::default();
        rows.text(Some("four"));
        rows.end_row();
        let mut copy = pool
            .copy_in_raw("COPY limited FROM STDIN (FORMAT binary)")
            .await
            .unwrap();
        copy.send(rows.take().0).await.unwrap();
        let refused = copy.finish().await.unwrap_err();
        assert!(refused.to_string().contains("too long"), "{refused}");
    }

    #[test]
    fn uuids_are_read_as_postgresql_reads_them() {
        let id = Some(0x6ecd_8c99_4036_403d_bf84_cf84_00f6_7836_u128.to_be_bytes());
        for taken in [
            "6ecd8c99-4036-403d-bf84-cf8400f67836",
            "6ECD8C99-4036-403D-BF84-CF8400F67836",
            "6ecd8c994036403dbf84cf8400f67836",
            "{6ecd8c99-4036-403d-bf84-cf8400f67836}",
            "6ecd-8c99-4036-403d-bf84-cf84-00f6-7836",
        ] {
            assert_eq!(parse_uuid(taken), id, "{taken}");
        }
        for refused in [
            "",
            "6ecd8c99-4036-403d-bf84-cf8400f6783",
            "6ecd8c99-4036-403d-bf84-cf8400f678366",
            "6ecd8c99-4036-403d-bf84-cf8400f67836-",
            "6ecd8c9-94036-403d-bf84-cf8400f67836",
            "{6ecd8c99-4036-403d-bf84-cf8400f67836",
            "6ecd8c99-4036-403d-bf84-cf8400f67836}",
            "urn:uuid:6ecd8c99-4036-403d-bf84-cf8400f67836",
            " 6ecd8c99-4036-403d-bf84-cf8400f67836",
            "6ecd8c99--4036-403d-bf84-cf8400f67836",
            "6ecd8c99-4036-403d-bf84-cf8400f6783g",
        ] {
            assert_eq!(parse_uuid(refused), None, "{refused:?}");
        }
        let mut rows = CopyBinary::default();
        assert_eq!(
            rows.uuid(Some("not-a-uuid")),
            Err(NotAUuid("not-a-uuid".into()))
        );
    }
}
