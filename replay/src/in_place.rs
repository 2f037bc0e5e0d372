//! Rebuilding a live view where it stands, for when a second copy does not fit: its tables are
//! emptied and the rebuild writes into them. Readers see an empty, then a growing view, and the
//! live projector must be stopped meanwhile (a commit it applied after the emptying, whose
//! predecessors the rebuild has not reached yet, would be a gap and dead-lettered), which is why
//! the `replay` binary asks for an explicit confirmation.

use read_models::SchemaName;
use sqlx::PgPool;

use crate::error::ReplayError;
use crate::progress::CREATE_PROGRESS;
use crate::verify::{qualified, tables};

/// `TRUNCATE` takes no parameter; `{tables}` lists qualified names of validated identifiers. One
/// statement for all of them, because history's tables reference each other. (Redshift's
/// `TRUNCATE` takes one table and commits at once; the in-place path is tested on the
/// PostgreSQL stand-in only.)
const TRUNCATE: &str = "TRUNCATE {tables}";

/// Selects the schema for the rest of the transaction (the progress DDL stays a constant).
const SET_SEARCH_PATH: &str = "SELECT set_config('search_path', $1, true)";

/// Empties every table of `schema` and creates its `replay_progress` table, in one transaction
/// (PostgreSQL's `TRUNCATE` is transactional), so that an interruption leaves either the view
/// untouched or an empty view marked as a rebuild target, which the same command resumes.
pub async fn empty_schema(pool: &PgPool, schema: &SchemaName) -> Result<(), ReplayError> {
    let names = tables(pool, schema).await?;
    let mut tx = pool.begin().await?;
    if !names.is_empty() {
        let tables: Vec<String> = names.iter().map(|t| qualified(schema, t)).collect();
        sqlx::query(&TRUNCATE.replace("{tables}", &tables.join(", ")))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(SET_SEARCH_PATH)
        .bind(schema.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(CREATE_PROGRESS).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}
