//! `replay report`: sales, order counts, average ticket and preparation times from the
//! analytics view (the live schema, or an as-of schema `replay rebuild analytics --until`
//! built), grouped by item, hour of day, store or loyalty tier, for analysts who do not write
//! SQL.
//!
//! Read only: one `BEGIN READ ONLY` transaction per report. The SQL ([`queries`]) stays inside
//! what Redshift accepts, so the same report runs against Redshift and the local stand-in.

mod queries;
mod render;

use std::fmt;
use std::str::FromStr;

use read_models::SchemaName;
use sqlx::PgPool;
use time::macros::format_description;
use time::{Date, Duration, PrimitiveDateTime, Time};

pub use render::render;

/// The longest range a report covers: a year and a day (a leap year, inclusive ends).
pub const MAX_RANGE_DAYS: i64 = 366;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A date that is not `YYYY-MM-DD`.
    #[error("{0:?} is not a date: use YYYY-MM-DD (UTC), e.g. 2026-03-02")]
    BadDate(String),
    /// `--to` before `--from`, or a range too long.
    #[error("{0}")]
    BadRange(String),
    /// An unknown `--by` or `--format`.
    #[error("{0}")]
    BadChoice(String),
    /// A store id that cannot be one.
    #[error("--store {0:?} is not a store id (1 to 64 characters of A-Z a-z 0-9 _ -)")]
    BadStore(String),
    /// The analytics database failed, or the schema is missing.
    #[error("the analytics database refused the report: {0}")]
    Database(#[from] sqlx::Error),
}

/// Parses a `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Result<Date, ReportError> {
    Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map_err(|_| ReportError::BadDate(text.to_owned()))
}

/// What the rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Menu item (SKU), with its name.
    Item,
    /// UTC hour of day the order was placed (0-23), over every day of the range.
    Hour,
    /// Store.
    Store,
    /// The loyalty tier whose multiplier the order earned at (`none`: it earned nothing yet).
    Tier,
}

impl FromStr for GroupBy {
    type Err = ReportError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "item" => Ok(GroupBy::Item),
            "hour" => Ok(GroupBy::Hour),
            "store" => Ok(GroupBy::Store),
            "tier" => Ok(GroupBy::Tier),
            other => Err(ReportError::BadChoice(format!(
                "--by {other:?}: use item, hour, store or tier"
            ))),
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupBy::Item => "item",
            GroupBy::Hour => "hour",
            GroupBy::Store => "store",
            GroupBy::Tier => "tier",
        })
    }
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns, money in dollars, for people.
    Table,
    /// A header line and one line per row, money in cents (RFC 4180 quoting).
    Csv,
    /// One JSON document, money in cents.
    Json,
}

impl FromStr for Format {
    type Err = ReportError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(ReportError::BadChoice(format!(
                "--format {other:?}: use table, csv or json"
            ))),
        }
    }
}

/// A checked report request: orders placed from `from` through `to` (UTC days, inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRequest {
    from: Date,
    to: Date,
    by: GroupBy,
    store: Option<String>,
}

impl ReportRequest {
    /// Refuses a range that ends before it starts or spans more than [`MAX_RANGE_DAYS`], and a
    /// store id that cannot be one.
    pub fn new(
        from: Date,
        to: Date,
        by: GroupBy,
        store: Option<String>,
    ) -> Result<Self, ReportError> {
        if to < from {
            return Err(ReportError::BadRange(format!(
                "--to {to} is before --from {from} (both days are included)"
            )));
        }
        if (to - from).whole_days() >= MAX_RANGE_DAYS {
            return Err(ReportError::BadRange(format!(
                "--from {from} --to {to} spans more than {MAX_RANGE_DAYS} days: report a year at a time"
            )));
        }
        if let Some(store) = &store {
            let valid = (1..=64).contains(&store.len())
                && store
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(ReportError::BadStore(store.clone()));
            }
        }
        Ok(Self {
            from,
            to,
            by,
            store,
        })
    }

    /// The first day.
    pub fn from(&self) -> Date {
        self.from
    }

    /// The last day (included).
    pub fn to(&self) -> Date {
        self.to
    }

    /// The grouping.
    pub fn by(&self) -> GroupBy {
        self.by
    }

    /// Only this store's orders; `None`: every store.
    pub fn store(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// `[from 00:00, to + 1 day 00:00)` as the view's UTC wall times.
    fn bounds(&self) -> (PrimitiveDateTime, PrimitiveDateTime) {
        (
            PrimitiveDateTime::new(self.from, Time::MIDNIGHT),
            PrimitiveDateTime::new(self.to, Time::MIDNIGHT) + Duration::DAY,
        )
    }
}

/// One group's figures. Counted orders are those placed in the range and not cancelled or
/// rejected (open ones included: they are sales in progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// The group: SKU, hour (`08`), store id or tier.
    pub key: String,
    /// By item: the item's name on the menu now (empty when unknown).
    pub name: String,
    /// Orders in the group (by item: orders with at least one line of it).
    pub orders: i64,
    /// Items sold (by item: that item's quantity).
    pub units: i64,
    /// Sales in cents (by item: that item's line totals).
    pub sales_cents: i64,
    /// Sum of the preparation times (PreparationStarted to OrderMarkedReady) of the group's
    /// orders that have one, in seconds.
    pub prep_seconds_total: i64,
    /// How many of the group's orders have a preparation time.
    pub prep_count: i64,
}

impl ReportRow {
    /// Sales per order, in cents, rounded half up; `None` without orders.
    pub fn average_ticket_cents(&self) -> Option<i64> {
        (self.orders > 0).then(|| (2 * self.sales_cents + self.orders) / (2 * self.orders))
    }

    /// Average preparation time in tenths of a second, rounded half up; `None` when no order
    /// of the group has been prepared.
    pub fn average_prep_tenths(&self) -> Option<i64> {
        (self.prep_count > 0)
            .then(|| (20 * self.prep_seconds_total + self.prep_count) / (2 * self.prep_count))
    }
}

/// A finished report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What was asked.
    pub request: ReportRequest,
    /// The schema read.
    pub schema: String,
    /// One row per group, largest sales first.
    pub rows: Vec<ReportRow>,
}

/// Runs `request` against the analytics tables of `schema`, read only.
pub async fn sales_report(
    pool: &PgPool,
    schema: &SchemaName,
    request: &ReportRequest,
) -> Result<Report, ReportError> {
    let rows = queries::fetch(pool, schema, request).await?;
    Ok(Report {
        request: request.clone(),
        schema: schema.to_string(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::date;

    #[test]
    fn dates_ranges_and_stores_are_checked() {
        assert_eq!(parse_date("2026-03-02").unwrap(), date!(2026 - 03 - 02));
        for bad in ["2026-02-30", "02/03/2026", "2026-3-2x", "", "yesterday"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        let day = date!(2026 - 03 - 02);
        assert!(ReportRequest::new(day, day, GroupBy::Item, None).is_ok());
        assert!(ReportRequest::new(day, day - Duration::DAY, GroupBy::Item, None).is_err());
        assert!(ReportRequest::new(day, day + Duration::days(366), GroupBy::Item, None).is_err());
        assert!(ReportRequest::new(day, day + Duration::days(365), GroupBy::Item, None).is_ok());
        assert!(ReportRequest::new(day, day, GroupBy::Item, Some("s'1".into())).is_err());
        assert!("weekday".parse::<GroupBy>().is_err());
        assert!("xml".parse::<Format>().is_err());
    }

    #[test]
    fn averages_round_half_up_in_integers() {
        let row = ReportRow {
            key: "s1".into(),
            name: String::new(),
            orders: 2,
            units: 3,
            sales_cents: 1675,
            prep_seconds_total: 241,
            prep_count: 2,
        };
        assert_eq!(row.average_ticket_cents(), Some(838));
        assert_eq!(row.average_prep_tenths(), Some(1205));
        let empty = ReportRow {
            orders: 0,
            prep_count: 0,
            ..row
        };
        assert_eq!(empty.average_ticket_cents(), None);
        assert_eq!(empty.average_prep_tenths(), None);
    }
}
