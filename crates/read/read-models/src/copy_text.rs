//! Rows as PostgreSQL's `COPY ... FROM STDIN` text format, and the one interface ([`RowSink`])
//! through which a read model's row hands its columns either to a bound statement (the live
//! projection) or to such a buffer (replay's bulk rebuild), so both write the same values.
//!
//! Text format: columns separated by a tab, rows ended by a newline, `\N` for NULL, and a
//! backslash, tab, newline or carriage return inside a value escaped with a backslash. Times go
//! as UTC text PostgreSQL reads whatever the session's time zone (`+00` on `timestamptz`).

use std::fmt::Write as _;

use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Takes a row's columns in table order, one call per column, typed as the column is.
pub(crate) trait RowSink {
    /// A `text` / `VARCHAR` (or `uuid` written as text) column.
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

/// One table's rows in `COPY` text format.
#[derive(Debug, Default)]
pub(crate) struct CopyText {
    data: String,
    /// Whether the current row has a column already (a tab goes before the next one).
    in_row: bool,
    rows: u64,
}

impl CopyText {
    /// The rows so far, and how many, emptying the buffer.
    pub(crate) fn take(&mut self) -> (Vec<u8>, u64) {
        let rows = std::mem::take(&mut self.rows);
        (std::mem::take(&mut self.data).into_bytes(), rows)
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    /// Ends the current row.
    pub(crate) fn end_row(&mut self) {
        self.data.push('\n');
        self.in_row = false;
        self.rows += 1;
    }

    fn next_column(&mut self) {
        if self.in_row {
            self.data.push('\t');
        }
        self.in_row = true;
    }

    fn null(&mut self) {
        self.data.push_str("\\N");
    }

    fn escaped(&mut self, mut value: &str) {
        // Most values need no escape: copied a run at a time, not a char at a time (the bulk
        // rebuild's writers spent most of their own time here). The four bytes are ASCII, so
        // every cut is at a char boundary.
        while let Some(at) = value
            .bytes()
            .position(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
        {
            self.data.push_str(&value[..at]);
            self.data.push_str(match value.as_bytes()[at] {
                b'\\' => "\\\\",
                b'\t' => "\\t",
                b'\n' => "\\n",
                _ => "\\r",
            });
            value = &value[at + 1..];
        }
        self.data.push_str(value);
    }

    fn number(&mut self, value: Option<i64>) {
        self.next_column();
        match value {
            Some(value) => {
                let _ = write!(self.data, "{value}");
            }
            None => self.null(),
        }
    }

    /// A `timestamptz` column, as UTC.
    pub(crate) fn timestamptz(&mut self, value: Option<OffsetDateTime>) {
        match value {
            Some(at) => {
                let at = at.to_offset(UtcOffset::UTC);
                self.timestamp(Some(PrimitiveDateTime::new(at.date(), at.time())));
                self.data.push_str("+00");
            }
            None => self.timestamp(None),
        }
    }

    /// A `text[]` column: each element double-quoted with `"` and `\` escaped (array syntax),
    /// then the whole escaped for `COPY`.
    pub(crate) fn text_array<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) {
        self.next_column();
        let mut array = String::from("{");
        for (index, value) in values.into_iter().enumerate() {
            if index > 0 {
                array.push(',');
            }
            array.push('"');
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    array.push('\\');
                }
                array.push(c);
            }
            array.push('"');
        }
        array.push('}');
        self.escaped(&array);
    }
}

impl RowSink for CopyText {
    fn text(&mut self, value: Option<&str>) {
        self.next_column();
        match value {
            Some(value) => self.escaped(value),
            None => self.null(),
        }
    }

    fn bigint(&mut self, value: Option<i64>) {
        self.number(value);
    }

    fn integer(&mut self, value: Option<i32>) {
        self.number(value.map(i64::from));
    }

    fn smallint(&mut self, value: i16) {
        self.number(Some(i64::from(value)));
    }

    fn boolean(&mut self, value: Option<bool>) {
        self.next_column();
        match value {
            Some(true) => self.data.push('t'),
            Some(false) => self.data.push('f'),
            None => self.null(),
        }
    }

    fn timestamp(&mut self, value: Option<PrimitiveDateTime>) {
        self.next_column();
        match value {
            Some(at) => {
                let _ = write!(
                    self.data,
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
                    at.year(),
                    u8::from(at.month()),
                    at.day(),
                    at.hour(),
                    at.minute(),
                    at.second(),
                    at.microsecond()
                );
            }
            None => self.null(),
        }
    }

    fn date(&mut self, value: Date) {
        self.next_column();
        let _ = write!(
            self.data,
            "{:04}-{:02}-{:02}",
            value.year(),
            u8::from(value.month()),
            value.day()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn escapes_cut_between_multibyte_characters_and_at_both_ends() {
        let mut rows = CopyText::default();
        rows.text(Some("\ré\\ü\tcafé\n"));
        rows.text(Some("plain"));
        rows.end_row();
        let (data, _) = rows.take();
        assert_eq!(
            String::from_utf8(data).unwrap_or_default(),
            "\\ré\\\\ü\\tcafé\\n\tplain\n"
        );
    }

    #[test]
    fn values_are_escaped_and_nulls_marked() {
        let mut rows = CopyText::default();
        rows.text(Some("a\tb\\c\nd"));
        rows.text(None);
        rows.bigint(Some(-5));
        rows.boolean(Some(false));
        rows.end_row();
        rows.timestamptz(Some(datetime!(2025-03-01 09:05:00.5 +01:00)));
        rows.text_array(["oat \"milk\"", "x\\y"]);
        rows.text_array([]);
        rows.end_row();
        let (data, count) = rows.take();
        assert_eq!(count, 2);
        assert_eq!(
            String::from_utf8(data).unwrap_or_default(),
            "a\\tb\\\\c\\nd\t\\N\t-5\tf\n\
             2025-03-01 08:05:00.500000+00\t{\"oat \\\\\"milk\\\\\"\",\"x\\\\\\\\y\"}\t{}\n"
        );
    }
}
