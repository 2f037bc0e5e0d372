//! The target schema of a bulk rebuild: the mark that a bulk load is under way, the secondary
//! indexes and foreign keys set aside while rows stream in, and the final step that puts them
//! back and records the progress. PostgreSQL only (the history database, and the PostgreSQL
//! stand-in of the analytics database): catalogue queries and `COPY FROM STDIN` are not
//! Redshift's.

use std::collections::BTreeMap;

use read_models::analytics_sql::SET_SEARCH_PATH;
use read_models::SchemaName;
use sqlx::{Connection, PgConnection, PgPool};

use crate::error::ReplayError;
use crate::progress;

/// Whether schema `$1` holds the mark of a bulk load that has not finished.
const BULK_LOAD_EXISTS: &str = "\
SELECT EXISTS (SELECT 1 FROM information_schema.tables
               WHERE table_schema = $1 AND table_name = 'replay_bulk_load')";

/// The secondary indexes of schema `$1` (those backing no constraint): table, name, definition.
const SECONDARY_INDEXES: &str = "\
SELECT t.relname::text, c.relname::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY 1, 2";

/// The foreign keys of schema `$1`: table, name, definition.
const FOREIGN_KEYS: &str = "\
SELECT t.relname::text, k.conname::text, pg_get_constraintdef(k.oid)
FROM pg_constraint k
JOIN pg_class t ON t.oid = k.conrelid
JOIN pg_namespace n ON n.oid = k.connamespace
WHERE n.nspname = $1 AND k.contype = 'f'
ORDER BY 1, 2";

/// The primary keys and unique constraints of schema `$1`: table, name, definition.
const KEYS: &str = "\
SELECT t.relname::text, k.conname::text, pg_get_constraintdef(k.oid)
FROM pg_constraint k
JOIN pg_class t ON t.oid = k.conrelid
JOIN pg_namespace n ON n.oid = k.connamespace
WHERE n.nspname = $1 AND k.contype IN ('p', 'u')
ORDER BY 1, 2";

/// A catalogue name as a quoted identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// True when the database behind `pool` takes `COPY ... FROM STDIN`: PostgreSQL does (the
/// history database, the local analytics stand-in); Redshift, the deployed analytics database,
/// does not, and says so in `version()`. A rebuild there goes through the live path.
pub(crate) async fn takes_bulk_loads(pool: &PgPool) -> Result<bool, ReplayError> {
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(pool)
        .await?;
    Ok(!version.contains("Redshift"))
}

/// True when `schema` holds a bulk load that did not finish (its rows are incomplete).
pub(crate) async fn bulk_load_unfinished(
    pool: &PgPool,
    schema: &SchemaName,
) -> Result<bool, ReplayError> {
    Ok(sqlx::query_scalar(BULK_LOAD_EXISTS)
        .bind(schema.as_str())
        .fetch_one(pool)
        .await?)
}

/// Creates `schema` holding only the bulk load's mark, in one transaction: from then on, until
/// [`finish`] drops the mark, the schema reads as an unfinished bulk load.
pub(crate) async fn mark_bulk_load(pool: &PgPool, schema: &SchemaName) -> Result<(), ReplayError> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("CREATE SCHEMA {}", quoted(schema.as_str())))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {}.replay_bulk_load (started_at timestamptz NOT NULL DEFAULT now())",
        quoted(schema.as_str())
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What the bulk load set aside, to put back at the end.
#[derive(Debug)]
pub(crate) struct SetAside {
    /// Per table, the statements that build its indexes again: first its key (`ALTER TABLE ...
    /// ADD CONSTRAINT ... PRIMARY KEY / UNIQUE`), then its secondary indexes (`CREATE INDEX
    /// ...`). Put back by [`restore_indexes`] before anything writes through the live path.
    indexes: BTreeMap<String, Vec<String>>,
    /// `ALTER TABLE ... ADD CONSTRAINT ...` statements.
    foreign_keys: Vec<String>,
}

/// Drops the foreign keys, the secondary indexes and the keys (primary and unique) of
/// `schema`: rows stream in faster without them (an index built once over all rows beats one
/// maintained row by row, and a key checked once by `ADD CONSTRAINT` beats a trigger per row),
/// and writers of different aggregates need no order between their tables.
pub(crate) async fn set_aside(pool: &PgPool, schema: &SchemaName) -> Result<SetAside, ReplayError> {
    let mut tx = pool.begin().await?;
    let target = quoted(schema.as_str());
    // Foreign keys first (they depend on the keys they reference), keys last (the query for
    // secondary indexes leaves out the indexes backing them).
    let foreign_keys = drop_constraints(&mut tx, schema, FOREIGN_KEYS)
        .await?
        .into_iter()
        .map(|(_, statement)| statement)
        .collect();
    let definitions: Vec<(String, String, String)> = sqlx::query_as(SECONDARY_INDEXES)
        .bind(schema.as_str())
        .fetch_all(&mut *tx)
        .await?;
    let mut secondary = Vec::new();
    for (table, name, definition) in definitions {
        sqlx::query(&format!("DROP INDEX {target}.{}", quoted(&name)))
            .execute(&mut *tx)
            .await?;
        secondary.push((table, definition));
    }
    let mut indexes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, statement) in drop_constraints(&mut tx, schema, KEYS)
        .await?
        .into_iter()
        .chain(secondary)
    {
        indexes.entry(table).or_default().push(statement);
    }
    let set_aside = SetAside {
        indexes,
        foreign_keys,
    };
    tx.commit().await?;
    Ok(set_aside)
}

/// Drops the constraints of `schema` that `query` lists (table, name, definition); each
/// table with the statement that adds its constraint back.
async fn drop_constraints(
    tx: &mut PgConnection,
    schema: &SchemaName,
    query: &str,
) -> Result<Vec<(String, String)>, ReplayError> {
    let constraints: Vec<(String, String, String)> = sqlx::query_as(query)
        .bind(schema.as_str())
        .fetch_all(&mut *tx)
        .await?;
    let mut add_back = Vec::new();
    for (table, name, definition) in constraints {
        let qualified = format!("{}.{}", quoted(schema.as_str()), quoted(&table));
        let name = quoted(&name);
        sqlx::query(&format!("ALTER TABLE {qualified} DROP CONSTRAINT {name}"))
            .execute(&mut *tx)
            .await?;
        add_back.push((
            table,
            format!("ALTER TABLE {qualified} ADD CONSTRAINT {name} {definition}"),
        ));
    }
    Ok(add_back)
}

/// Puts the keys and secondary indexes back once every writer is done, table by table on the
/// pool's connections side by side (each table's key, then its indexes: the sorts use every
/// core, where one transaction at the end built them one after the other). The shared rows and
/// the deferred orders' commits that follow go through statements that need the keys (`ON
/// CONFLICT`). Built outside the final transaction: until it commits, the bulk load's mark
/// says the schema is unfinished, whatever indexes it holds.
pub(crate) async fn restore_indexes(
    pool: &PgPool,
    set_aside: &SetAside,
) -> Result<(), ReplayError> {
    futures::future::try_join_all(set_aside.indexes.values().map(|statements| async move {
        for statement in statements {
            sqlx::query(statement).execute(pool).await?;
        }
        Ok::<_, sqlx::Error>(())
    }))
    .await?;
    Ok(())
}

/// The final step, one transaction: the foreign keys back (checking every row against the
/// keys built by [`restore_indexes`]), the progress at `through`, the mark dropped. Until it
/// commits, the schema reads as an unfinished bulk load; after, as a finished rebuild that
/// resumes like any other.
pub(crate) async fn finish(
    connection: &mut PgConnection,
    schema: &SchemaName,
    set_aside: &SetAside,
    projection: &str,
    through: i64,
) -> Result<(), ReplayError> {
    let mut tx = connection.begin().await?;
    for statement in &set_aside.foreign_keys {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    sqlx::query(SET_SEARCH_PATH)
        .bind(schema.as_str())
        .execute(&mut *tx)
        .await?;
    progress::record(&mut tx, projection, through).await?;
    sqlx::query(&format!(
        "DROP TABLE {}.replay_bulk_load",
        quoted(schema.as_str())
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
