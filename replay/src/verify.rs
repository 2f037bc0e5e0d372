//! Comparing two schemas of one database, table by table.
//!
//! Runs on PostgreSQL (the history database and the local analytics stand-in): row text
//! (`t::text`) and `string_agg` are not in Redshift's SQL.

use read_models::SchemaName;
use sqlx::PgPool;

use crate::error::ReplayError;

/// The tables of `$1`, except bookkeeping that differs between two builds of the same view by
/// construction: sqlx's migration record (install times) and replay's own progress.
const LIST_TABLES: &str = "\
SELECT table_name::text FROM information_schema.tables
WHERE table_schema = $1 AND table_type = 'BASE TABLE'
  AND table_name NOT IN ('_sqlx_migrations', 'replay_progress')
ORDER BY 1";

/// Row count and an order-independent checksum of `{table}` (a qualified name built from
/// validated identifiers only).
const TABLE_SUMMARY: &str = "\
SELECT count(*), md5(COALESCE(string_agg(md5(t::text), '' ORDER BY md5(t::text)), ''))
FROM {table} t";

/// Rows of `{left}` missing from `{right}`, duplicates counted.
const ROWS_ONLY_IN: &str = "\
SELECT t::text FROM {left} t EXCEPT ALL SELECT u::text FROM {right} u ORDER BY 1";

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
    /// Rows (as PostgreSQL row text) on the left only.
    pub only_in_left: Vec<String>,
    /// Rows (as PostgreSQL row text) on the right only.
    pub only_in_right: Vec<String>,
}

/// Compares the tables of `left` and `right`: row counts and checksums first, and for each table
/// whose checksums differ, every row found on one side only. Tables must have the same columns
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
            let (rows, _) = summary(pool, left, table).await?;
            comparison
                .differences
                .push(missing(table, Some(rows), None));
            continue;
        }
        comparison.tables_compared += 1;
        let (left_rows, left_sum) = summary(pool, left, table).await?;
        let (right_rows, right_sum) = summary(pool, right, table).await?;
        if left_rows != right_rows || left_sum != right_sum {
            comparison.differences.push(TableDifference {
                table: table.as_str().to_owned(),
                left_rows: Some(left_rows),
                right_rows: Some(right_rows),
                only_in_left: rows_only_in(pool, (left, right), table).await?,
                only_in_right: rows_only_in(pool, (right, left), table).await?,
            });
        }
    }
    for table in right_tables.iter().filter(|t| !left_tables.contains(t)) {
        let (rows, _) = summary(pool, right, table).await?;
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

async fn summary(
    pool: &PgPool,
    schema: &SchemaName,
    table: &SchemaName,
) -> Result<(i64, String), ReplayError> {
    let sql = TABLE_SUMMARY.replace("{table}", &qualified(schema, table));
    Ok(sqlx::query_as(&sql).fetch_one(pool).await?)
}

async fn rows_only_in(
    pool: &PgPool,
    (from, other): (&SchemaName, &SchemaName),
    table: &SchemaName,
) -> Result<Vec<String>, ReplayError> {
    let sql = ROWS_ONLY_IN
        .replace("{left}", &qualified(from, table))
        .replace("{right}", &qualified(other, table));
    Ok(sqlx::query_scalar(&sql).fetch_all(pool).await?)
}
