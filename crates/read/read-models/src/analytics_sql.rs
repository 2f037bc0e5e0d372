//! Every statement the analytics projection and replay send to the analytics database (Amazon
//! Redshift in AWS, a PostgreSQL database locally), in one place, so that one test
//! (`tests/redshift_dialect.rs`) parses each of them with sqlfluff's `redshift` dialect and
//! refuses the PostgreSQL-only constructs a parser cannot see. [`catalogue`] lists them all with
//! example values in their placeholders.
//!
//! None of them is PostgreSQL-only: the same text runs on the local stand-in and on Redshift.
//! Replay statements that only ever go to the history database (Aurora PostgreSQL: multi-table
//! `TRUNCATE`, `::text` on a `uuid` key) stay in `replay/` and are chosen per read model.
//!
//! Identifiers that reach the text (schema, table and column names) are validated
//! [`SchemaName`]s; every value is a bound parameter.

use crate::SchemaName;

/// The analytics tables and their staging tables: idempotent DDL
/// (`crates/read/read-models/sql/analytics/schema.sql`).
pub(crate) const SCHEMA: &str = include_str!("../sql/analytics/schema.sql");

/// The DDL file's statements: comment lines dropped, split at each `;`.
pub(crate) fn schema_statements() -> Vec<String> {
    let code: Vec<&str> = SCHEMA
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Selects the schema for the rest of the current transaction, so every other statement names
/// its tables unqualified and stays a constant. Redshift has `set_config` too.
pub const SET_SEARCH_PATH: &str = "SELECT set_config('search_path', $1, true)";

/// Loads run one at a time (Redshift serialises writers to the same tables anyway, and one set
/// of staging tables serves every flush). `LOCK` without a mode is ACCESS EXCLUSIVE in
/// PostgreSQL and the only mode Redshift has.
pub(crate) const LOCK_LOADS: &str = "LOCK applied_sequences";

/// Followed by `($1, $2, ...)`: the markers of a flush's aggregates.
pub(crate) const SELECT_APPLIED: &str =
    "SELECT aggregate_type, aggregate_id, last_sequence FROM applied_sequences WHERE aggregate_id IN ";
/// Followed by `($1, ...)`: the rows of orders placed before the flush that it changes.
pub(crate) const SELECT_ORDERS: &str =
    "SELECT order_id, store_id, customer_id, hour_key, placed_at, status, \
total_cents, line_count, item_quantity, accepted_at, preparing_at, ready_at, ended_at, \
prep_seconds, end_reason FROM fact_orders WHERE order_id IN ";
/// Followed by `($1, ...)`: the menu items a flush changes.
pub(crate) const SELECT_ITEMS: &str =
    "SELECT sku, name, category, price_cents, available, updated_at FROM dim_item WHERE sku IN ";

/// The SQL that moves one table's rows through its staging table (created with the schema).
#[derive(Debug)]
pub(crate) struct StagedTable {
    /// The target, for [`catalogue`] names.
    pub(crate) name: &'static str,
    /// `INSERT INTO stage (columns) `, followed by `VALUES (...), (...)`.
    pub(crate) insert: &'static str,
    /// Staging table -> target, in order.
    pub(crate) merge: &'static [&'static str],
    /// Empties the staging table again, inside the flush's transaction (not `TRUNCATE`: it
    /// commits at once in Redshift).
    pub(crate) clear: &'static str,
}

pub(crate) const FACT_ORDERS: StagedTable = StagedTable {
    name: "fact_orders",
    insert: "INSERT INTO stage_fact_orders (order_id, store_id, customer_id, hour_key, placed_at, \
status, total_cents, line_count, item_quantity, accepted_at, preparing_at, ready_at, ended_at, \
prep_seconds, end_reason) ",
    merge: &[
        "DELETE FROM fact_orders USING stage_fact_orders s WHERE fact_orders.order_id = s.order_id",
        "INSERT INTO fact_orders SELECT * FROM stage_fact_orders",
    ],
    clear: "DELETE FROM stage_fact_orders",
};

pub(crate) const FACT_ORDER_ITEMS: StagedTable = StagedTable {
    name: "fact_order_items",
    insert: "INSERT INTO stage_fact_order_items (order_id, line_no, store_id, sku, hour_key, \
placed_at, quantity, unit_price_cents, line_total_cents, customisation_count) ",
    merge: &[
        "DELETE FROM fact_order_items USING stage_fact_order_items s \
WHERE fact_order_items.order_id = s.order_id AND fact_order_items.line_no = s.line_no",
        "INSERT INTO fact_order_items SELECT * FROM stage_fact_order_items",
    ],
    clear: "DELETE FROM stage_fact_order_items",
};

pub(crate) const FACT_LOYALTY: StagedTable = StagedTable {
    name: "fact_loyalty",
    insert: "INSERT INTO stage_fact_loyalty (customer_id, sequence, entry_type, points, order_id, \
amount_cents, tier, hour_key, recorded_at) ",
    merge: &[
        "DELETE FROM fact_loyalty USING stage_fact_loyalty s \
WHERE fact_loyalty.customer_id = s.customer_id AND fact_loyalty.sequence = s.sequence",
        "INSERT INTO fact_loyalty SELECT * FROM stage_fact_loyalty",
    ],
    clear: "DELETE FROM stage_fact_loyalty",
};

pub(crate) const FACT_STOCK_MOVEMENTS: StagedTable = StagedTable {
    name: "fact_stock_movements",
    insert: "INSERT INTO stage_fact_stock_movements (store_id, sequence, line_no, sku, movement, \
quantity, order_id, hour_key, recorded_at) ",
    merge: &[
        "DELETE FROM fact_stock_movements USING stage_fact_stock_movements s \
WHERE fact_stock_movements.store_id = s.store_id AND fact_stock_movements.sequence = s.sequence \
AND fact_stock_movements.line_no = s.line_no",
        "INSERT INTO fact_stock_movements SELECT * FROM stage_fact_stock_movements",
    ],
    clear: "DELETE FROM stage_fact_stock_movements",
};

pub(crate) const DIM_ITEM: StagedTable = StagedTable {
    name: "dim_item",
    insert: "INSERT INTO stage_dim_item (sku, name, category, price_cents, available, updated_at) ",
    merge: &[
        "DELETE FROM dim_item USING stage_dim_item s WHERE dim_item.sku = s.sku",
        "INSERT INTO dim_item SELECT * FROM stage_dim_item",
    ],
    clear: "DELETE FROM stage_dim_item",
};

/// A store keeps the earliest time any projection run saw it, so live and replayed builds agree
/// whatever order shards deliver in.
pub(crate) const DIM_STORE: StagedTable = StagedTable {
    name: "dim_store",
    insert: "INSERT INTO stage_dim_store (store_id, first_seen_at) ",
    merge: &[
        "UPDATE dim_store SET first_seen_at = s.first_seen_at FROM stage_dim_store s \
WHERE dim_store.store_id = s.store_id AND s.first_seen_at < dim_store.first_seen_at",
        "INSERT INTO dim_store (store_id, first_seen_at) SELECT s.store_id, s.first_seen_at \
FROM stage_dim_store s LEFT JOIN dim_store d ON d.store_id = s.store_id WHERE d.store_id IS NULL",
    ],
    clear: "DELETE FROM stage_dim_store",
};

pub(crate) const DIM_HOUR: StagedTable = StagedTable {
    name: "dim_hour",
    insert: "INSERT INTO stage_dim_hour (hour_key, hour_start, day, hour_of_day, day_of_week, \
month, year) ",
    merge: &["INSERT INTO dim_hour SELECT s.* FROM stage_dim_hour s \
LEFT JOIN dim_hour d ON d.hour_key = s.hour_key WHERE d.hour_key IS NULL"],
    clear: "DELETE FROM stage_dim_hour",
};

pub(crate) const APPLIED_SEQUENCES: StagedTable = StagedTable {
    name: "applied_sequences",
    insert: "INSERT INTO stage_applied_sequences (aggregate_type, aggregate_id, last_sequence) ",
    merge: &[
        "DELETE FROM applied_sequences USING stage_applied_sequences s \
WHERE applied_sequences.aggregate_type = s.aggregate_type \
AND applied_sequences.aggregate_id = s.aggregate_id",
        "INSERT INTO applied_sequences SELECT * FROM stage_applied_sequences",
    ],
    clear: "DELETE FROM stage_applied_sequences",
};

/// Every staged table, in the order a flush loads them (markers last).
pub(crate) const STAGED_TABLES: [&StagedTable; 8] = [
    &DIM_STORE,
    &DIM_HOUR,
    &DIM_ITEM,
    &FACT_ORDERS,
    &FACT_ORDER_ITEMS,
    &FACT_LOYALTY,
    &FACT_STOCK_MOVEMENTS,
    &APPLIED_SEQUENCES,
];

/// What replay sends to a schema read model's database: the analytics database and the history
/// database alike, except where [`replay::AggregateRows`] and the in-place emptying differ per
/// read model.
pub mod replay {
    use crate::SchemaName;

    /// `SELECT EXISTS (...)` of a schema, `$1` its name.
    pub const SCHEMA_EXISTS: &str =
        "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1)";

    /// Drops a scratch target and everything in it.
    pub fn drop_schema(schema: &SchemaName) -> String {
        format!(r#"DROP SCHEMA IF EXISTS "{schema}" CASCADE"#)
    }

    /// A rebuild's progress, kept inside its target schema (selected by [`super::SET_SEARCH_PATH`]).
    pub const CREATE_PROGRESS: &str = "\
CREATE TABLE IF NOT EXISTS replay_progress (
    projection    VARCHAR(64) NOT NULL PRIMARY KEY,
    last_position BIGINT      NOT NULL
)";
    /// Whether schema `$1` holds a `replay_progress` table.
    pub const PROGRESS_EXISTS: &str = "\
SELECT EXISTS (SELECT 1 FROM information_schema.tables
               WHERE table_schema = $1 AND table_name = 'replay_progress')";
    /// The last position saved for projection `$1`.
    pub const SELECT_PROGRESS: &str =
        "SELECT last_position FROM replay_progress WHERE projection = $1";
    /// With [`INSERT_PROGRESS`], in one transaction: the upsert Redshift accepts.
    pub const DELETE_PROGRESS: &str = "DELETE FROM replay_progress WHERE projection = $1";
    /// See [`DELETE_PROGRESS`].
    pub const INSERT_PROGRESS: &str =
        "INSERT INTO replay_progress (projection, last_position) VALUES ($1, $2)";

    /// A schema stops being a replay target once live.
    pub fn drop_progress(schema: &SchemaName) -> String {
        format!(r#"DROP TABLE "{schema}".replay_progress"#)
    }

    /// Waits for in-flight projector transactions and makes new ones wait (the first thing
    /// every load does is the same lock).
    pub fn lock_live_markers(schema: &SchemaName) -> String {
        format!(r#"LOCK "{schema}".applied_sequences"#)
    }

    /// Renames a schema (the swap); Redshift has `ALTER SCHEMA ... RENAME TO` too.
    pub fn rename_schema(from: &SchemaName, to: &SchemaName) -> String {
        format!(r#"ALTER SCHEMA "{from}" RENAME TO "{to}""#)
    }

    /// The number of markers and their sum (the events a schema reflects).
    pub fn marker_totals(schema: &SchemaName) -> String {
        format!(
            r#"SELECT count(*), CAST(COALESCE(sum(last_sequence), 0) AS BIGINT) FROM "{schema}".applied_sequences"#
        )
    }

    /// Every marker of a schema.
    pub fn markers(schema: &SchemaName) -> String {
        format!(
            r#"SELECT aggregate_type, aggregate_id, last_sequence FROM "{schema}".applied_sequences"#
        )
    }

    /// The base tables of schema `$1`, except bookkeeping that differs between two builds of
    /// the same view by construction: sqlx's migration record and replay's own progress.
    pub const LIST_TABLES: &str = "\
SELECT CAST(table_name AS VARCHAR) FROM information_schema.tables
WHERE table_schema = $1 AND table_type = 'BASE TABLE'
  AND table_name NOT IN ('_sqlx_migrations', 'replay_progress')
ORDER BY 1";

    /// The columns of table `$2` in schema `$1`, in order, with their type names.
    pub const LIST_COLUMNS: &str = "\
SELECT CAST(column_name AS VARCHAR), CAST(data_type AS VARCHAR) FROM information_schema.columns
WHERE table_schema = $1 AND table_name = $2
ORDER BY ordinal_position";

    /// A table's row count.
    pub fn count_rows(schema: &SchemaName, table: &SchemaName) -> String {
        format!(r#"SELECT count(*) FROM "{schema}"."{table}""#)
    }

    /// One column of a compared table: its validated name and whether it is a boolean (which
    /// Redshift cannot cast to text).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ComparedColumn {
        /// The column's name.
        pub name: SchemaName,
        /// `BOOLEAN`: shown as `t` / `f` through `CASE`.
        pub boolean: bool,
    }

    /// The rows of `table` in `left` that `right` lacks, duplicates counted: each distinct row
    /// with its number of copies, `EXCEPT` the same of the other side (Redshift has no
    /// `EXCEPT ALL` and no row-to-text cast). Each answer row is the row as text,
    /// `(value,value,...)` with NULL as nothing, and its copies on the left.
    pub fn rows_only_in(
        (left, right): (&SchemaName, &SchemaName),
        table: &SchemaName,
        columns: &[ComparedColumn],
    ) -> String {
        let names: Vec<String> = columns.iter().map(|c| format!(r#""{}""#, c.name)).collect();
        let names = names.join(", ");
        let texts: Vec<String> = columns
            .iter()
            .map(|c| {
                let value = if c.boolean {
                    format!(
                        r#"CASE WHEN d."{0}" THEN 't' WHEN NOT d."{0}" THEN 'f' END"#,
                        c.name
                    )
                } else {
                    format!(r#"CAST(d."{}" AS VARCHAR)"#, c.name)
                };
                format!("COALESCE({value}, '')")
            })
            .collect();
        let row_text = format!("'(' || {} || ')'", texts.join(" || ',' || "));
        format!(
            r#"SELECT {row_text} AS row_text, d.copies FROM (
SELECT {names}, count(*) AS copies FROM "{left}"."{table}" GROUP BY {names}
EXCEPT
SELECT {names}, count(*) AS copies FROM "{right}"."{table}" GROUP BY {names}
) d ORDER BY 1"#
        )
    }

    /// Empties one analytics table for an in-place rebuild, inside its transaction (Redshift's
    /// `TRUNCATE` would commit at once, and takes one table only).
    pub fn empty_table(schema: &SchemaName, table: &SchemaName) -> String {
        format!(r#"DELETE FROM "{schema}"."{table}""#)
    }

    /// One aggregate's rows of an analytics table (keyed by `VARCHAR` ids, so no cast), `$1`
    /// the aggregate's id; `table` and `column` come from replay's table list.
    pub fn delete_aggregate_rows(live: &SchemaName, table: &str, column: &str) -> String {
        format!(r#"DELETE FROM "{live}".{table} WHERE {column} = $1"#)
    }

    /// Copies one aggregate's rebuilt rows into the live table, `$1` the aggregate's id.
    pub fn copy_aggregate_rows(
        (live, rebuilt): (&SchemaName, &SchemaName),
        table: &str,
        column: &str,
    ) -> String {
        format!(
            r#"INSERT INTO "{live}".{table} SELECT * FROM "{rebuilt}".{table} WHERE {column} = $1"#
        )
    }

    /// One aggregate's marker, `($1, $2)` = (type, id).
    pub fn delete_marker(live: &SchemaName) -> String {
        format!(
            r#"DELETE FROM "{live}".applied_sequences WHERE aggregate_type = $1 AND aggregate_id = $2"#
        )
    }

    /// Copies one aggregate's rebuilt marker, `($1, $2)` = (type, id).
    pub fn copy_marker((live, rebuilt): (&SchemaName, &SchemaName)) -> String {
        format!(
            r#"INSERT INTO "{live}".applied_sequences
SELECT * FROM "{rebuilt}".applied_sequences WHERE aggregate_type = $1 AND aggregate_id = $2"#
        )
    }
}

/// One statement as sent, with example values in its placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedStatement {
    /// What sends it, and which one (`load.fact_orders.merge.1`).
    pub name: String,
    /// The SQL text.
    pub sql: String,
}

/// Every statement sent to the analytics database, by the projection and by replay, with
/// example schema, table and column names and two rows of parameters where a statement takes a
/// list, for the dialect check.
pub fn catalogue() -> Vec<NamedStatement> {
    let mut all = Vec::new();
    let mut add = |name: String, sql: String| all.push(NamedStatement { name, sql });
    let example = |name: &str| SchemaName(name.to_owned());
    let (live, rebuilt) = (example("analytics"), example("analytics_rebuilt"));
    let table = example("fact_orders");

    add("setup.create_schema".into(), live.create_statement());
    for (index, statement) in schema_statements().into_iter().enumerate() {
        add(format!("setup.schema_sql.{index}"), statement);
    }
    add("load.set_search_path".into(), SET_SEARCH_PATH.into());
    add("load.lock".into(), LOCK_LOADS.into());
    for (name, prefix) in [
        ("load.select_applied", SELECT_APPLIED),
        ("load.select_orders", SELECT_ORDERS),
        ("load.select_items", SELECT_ITEMS),
    ] {
        add(name.into(), format!("{prefix}($1, $2)"));
    }
    for staged in STAGED_TABLES {
        let columns = staged.insert.matches(',').count() + 1;
        let row = |first: usize| {
            let params: Vec<String> = (first..first + columns).map(|n| format!("${n}")).collect();
            format!("({})", params.join(", "))
        };
        add(
            format!("load.{}.insert", staged.name),
            format!("{}VALUES {}, {}", staged.insert, row(1), row(columns + 1)),
        );
        for (index, statement) in staged.merge.iter().enumerate() {
            add(
                format!("load.{}.merge.{index}", staged.name),
                (*statement).into(),
            );
        }
        add(format!("load.{}.clear", staged.name), staged.clear.into());
    }

    use replay::*;
    let columns = [
        ComparedColumn {
            name: example("order_id"),
            boolean: false,
        },
        ComparedColumn {
            name: example("available"),
            boolean: true,
        },
    ];
    for (name, sql) in [
        ("replay.schema_exists", SCHEMA_EXISTS.to_owned()),
        ("replay.drop_schema", drop_schema(&rebuilt)),
        ("replay.create_progress", CREATE_PROGRESS.into()),
        ("replay.progress_exists", PROGRESS_EXISTS.into()),
        ("replay.select_progress", SELECT_PROGRESS.into()),
        ("replay.delete_progress", DELETE_PROGRESS.into()),
        ("replay.insert_progress", INSERT_PROGRESS.into()),
        ("replay.drop_progress", drop_progress(&rebuilt)),
        ("replay.lock_live_markers", lock_live_markers(&live)),
        ("replay.rename_schema", rename_schema(&rebuilt, &live)),
        ("replay.marker_totals", marker_totals(&live)),
        ("replay.markers", markers(&live)),
        ("replay.verify.list_tables", LIST_TABLES.into()),
        ("replay.verify.list_columns", LIST_COLUMNS.into()),
        ("replay.verify.count_rows", count_rows(&live, &table)),
        (
            "replay.verify.rows_only_in",
            rows_only_in((&live, &rebuilt), &table, &columns),
        ),
        ("replay.in_place.empty_table", empty_table(&live, &table)),
        (
            "replay.aggregate.delete_rows",
            delete_aggregate_rows(&live, "fact_orders", "order_id"),
        ),
        (
            "replay.aggregate.copy_rows",
            copy_aggregate_rows((&live, &rebuilt), "fact_orders", "order_id"),
        ),
        ("replay.aggregate.delete_marker", delete_marker(&live)),
        (
            "replay.aggregate.copy_marker",
            copy_marker((&live, &rebuilt)),
        ),
    ] {
        add(name.into(), sql);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_splits_into_tables_and_their_staging_tables() {
        let statements = schema_statements();
        assert_eq!(statements.len(), 16);
        assert!(statements
            .iter()
            .all(|s| s.contains("CREATE TABLE IF NOT EXISTS")));
        for staged in STAGED_TABLES {
            let create = format!("stage_{0} (LIKE {0})", staged.name);
            assert!(
                statements.iter().any(|s| s.contains(&create)),
                "no staging table for {}",
                staged.name
            );
        }
    }

    #[test]
    fn the_catalogue_names_each_statement_once() {
        let all = catalogue();
        let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert!(all.iter().all(|s| !s.sql.contains('{')));
    }
}
