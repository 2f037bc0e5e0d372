//! Rebuilding a live view where it stands, for when a second copy does not fit: its tables are
//! emptied and the rebuild writes into them. Readers see an empty, then a growing view, and the
//! live projector must be stopped meanwhile (a commit it applied after the emptying, whose
//! predecessors the rebuild has not reached yet, would be a gap and dead-lettered), which is why
//! the `replay` binary asks for an explicit confirmation.

use read_models::SchemaName;
use sqlx::PgPool;

use crate::error::ReplayError;
use read_models::analytics_sql::replay::{empty_table, CREATE_PROGRESS};
use read_models::analytics_sql::SET_SEARCH_PATH;

use crate::target::ReadModel;
use crate::verify::{qualified, tables};

/// History only (its database is PostgreSQL): `TRUNCATE` takes no parameter; `{tables}` lists
/// qualified names of validated identifiers. One statement for all of them, because history's
/// tables reference each other. Analytics tables are emptied by one `DELETE` each instead
/// (`analytics_sql::replay::empty_table`): Redshift's `TRUNCATE` takes one table and commits at
/// once.
const TRUNCATE: &str = "TRUNCATE {tables}";

/// Empties every table of `schema` and creates its `replay_progress` table, in one transaction
/// (PostgreSQL's `TRUNCATE` is transactional), so that an interruption leaves either the view
/// untouched or an empty view marked as a rebuild target, which the same command resumes.
pub async fn empty_schema(
    pool: &PgPool,
    model: ReadModel,
    schema: &SchemaName,
) -> Result<(), ReplayError> {
    let names = tables(pool, schema).await?;
    let mut tx = pool.begin().await?;
    match model {
        ReadModel::History if !names.is_empty() => {
            let tables: Vec<String> = names.iter().map(|t| qualified(schema, t)).collect();
            sqlx::query(&TRUNCATE.replace("{tables}", &tables.join(", ")))
                .execute(&mut *tx)
                .await?;
        }
        ReadModel::History => {}
        ReadModel::Analytics => {
            for table in &names {
                sqlx::query(&empty_table(schema, table))
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    sqlx::query(SET_SEARCH_PATH)
        .bind(schema.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(CREATE_PROGRESS).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}
