//! Comparing two schemas of one database, table by table.
//!
//! The same SQL on PostgreSQL (history, the local analytics stand-in) and Redshift
//! (`read_models::analytics_sql::replay`): row counts, then each side's distinct rows with their
//! number of copies `EXCEPT` the other side's (Redshift has neither `EXCEPT ALL` nor a
//! row-to-text cast nor `string_agg`, which an earlier checksum used).

use read_models::analytics_sql::replay::{
    count_rows, rows_only_in as rows_only_in_sql, ComparedColumn, LIST_COLUMNS, LIST_TABLES,
};
use read_models::SchemaName;
use sqlx::PgPool;

use crate::error::ReplayError;

/// How two schemas compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// Tables present on both sides and compared.
    pub tables_compared: usize,
    /// Every table that differs, by name.
    pub differences: Vec<TableDifference>,
    /// Items or rows left out of the comparison, by reason (the DynamoDB view's verify skips
    /// what the two sides cannot be expected to agree on yet).
    pub skipped: Vec<Skipped>,
}

/// Items a comparison left out for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Why, in words an operator reads.
    pub reason: String,
    /// How many.
    pub count: u64,
    /// The first few (as item text), so an operator can look.
    pub examples: Vec<String>,
}

impl Comparison {
    /// True when no table differs.
    pub fn is_equal(&self) -> bool {
        self.differences.is_empty()
    }
}

/// One table that differs between the two schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDifference {
    /// The table.
    pub table: String,
    /// Its row count on the left; `None`: the table is missing there.
    pub left_rows: Option<i64>,
    /// Its row count on the right; `None`: the table is missing there.
    pub right_rows: Option<i64>,
    /// Rows on the left only, as `(value,value,...)` (NULL as nothing), with ` x N` when the
    /// left holds N copies of a row the right holds a different number of times.
    pub only_in_left: Vec<String>,
    /// Rows on the right only, likewise.
    pub only_in_right: Vec<String>,
}

/// Compares the tables of `left` and `right`: row counts, and every row found on one side only
/// (or a different number of times). Tables must have the same columns
/// in the same order on both sides (two builds of one read model do).
pub async fn verify(
    pool: &PgPool,
    left: &SchemaName,
    right: &SchemaName,
) -> Result<Comparison, ReplayError> {
    let left_tables = tables(pool, left).await?;
    let right_tables = tables(pool, right).await?;
    let mut comparison = Comparison {
        skipped: Vec::new(),
        tables_compared: 0,
        differences: Vec::new(),
    };
    for table in &left_tables {
        if !right_tables.contains(table) {
            let rows = row_count(pool, left, table).await?;
            comparison
                .differences
                .push(missing(table, Some(rows), None));
            continue;
        }
        comparison.tables_compared += 1;
        let left_rows = row_count(pool, left, table).await?;
        let right_rows = row_count(pool, right, table).await?;
        let columns = columns(pool, left, table).await?;
        let only_in_left = rows_only_in(pool, (left, right), table, &columns).await?;
        let only_in_right = rows_only_in(pool, (right, left), table, &columns).await?;
        if left_rows != right_rows || !only_in_left.is_empty() || !only_in_right.is_empty() {
            comparison.differences.push(TableDifference {
                table: table.as_str().to_owned(),
                left_rows: Some(left_rows),
                right_rows: Some(right_rows),
                only_in_left,
                only_in_right,
            });
        }
    }
    for table in right_tables.iter().filter(|t| !left_tables.contains(t)) {
        let rows = row_count(pool, right, table).await?;
        comparison
            .differences
            .push(missing(table, None, Some(rows)));
    }
    Ok(comparison)
}

fn missing(table: &SchemaName, left_rows: Option<i64>, right_rows: Option<i64>) -> TableDifference {
    TableDifference {
        table: table.as_str().to_owned(),
        left_rows,
        right_rows,
        only_in_left: Vec::new(),
        only_in_right: Vec::new(),
    }
}

/// The schema's tables; their names pass the same identifier check as schema names, since they
/// are quoted into SQL text.
pub(crate) async fn tables(
    pool: &PgPool,
    schema: &SchemaName,
) -> Result<Vec<SchemaName>, ReplayError> {
    let names: Vec<String> = sqlx::query_scalar(LIST_TABLES)
        .bind(schema.as_str())
        .fetch_all(pool)
        .await?;
    names
        .iter()
        .map(|name| {
            SchemaName::parse(name).map_err(|_| ReplayError::UnsupportedTableName(name.clone()))
        })
        .collect()
}

pub(crate) fn qualified(schema: &SchemaName, table: &SchemaName) -> String {
    format!(r#""{schema}"."{table}""#)
}

async fn row_count(
    pool: &PgPool,
    schema: &SchemaName,
    table: &SchemaName,
) -> Result<i64, ReplayError> {
    Ok(sqlx::query_scalar(&count_rows(schema, table))
        .fetch_one(pool)
        .await?)
}

/// The table's columns in order; their names pass the identifier check, as table names do.
async fn columns(
    pool: &PgPool,
    schema: &SchemaName,
    table: &SchemaName,
) -> Result<Vec<ComparedColumn>, ReplayError> {
    let rows: Vec<(String, String)> = sqlx::query_as(LIST_COLUMNS)
        .bind(schema.as_str())
        .bind(table.as_str())
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|(name, data_type)| {
            Ok(ComparedColumn {
                name: SchemaName::parse(&name)
                    .map_err(|_| ReplayError::UnsupportedTableName(format!("{table}.{name}")))?,
                boolean: data_type.eq_ignore_ascii_case("boolean"),
            })
        })
        .collect()
}

async fn rows_only_in(
    pool: &PgPool,
    sides: (&SchemaName, &SchemaName),
    table: &SchemaName,
    columns: &[ComparedColumn],
) -> Result<Vec<String>, ReplayError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(&rows_only_in_sql(sides, table, columns))
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(row, copies)| match copies {
            1 => row,
            n => format!("{row} x {n}"),
        })
        .collect())
}
