//! Putting one aggregate's rebuilt rows into the live schema.
//!
//! The aggregate was rebuilt alone into a fresh schema ([`crate::rebuild_aggregate`]). One
//! transaction then locks the live `applied_sequences` (as [`crate::swap_in`] does: in-flight
//! projector transactions finish first, new ones wait), catches the rebuilt rows up with the
//! aggregate's commits in the store now, and replaces the aggregate's rows and marker in the
//! live schema by the rebuilt ones. The projector then finds the new marker and skips what it
//! delivers again, so nothing is lost or applied twice; readers see the old rows or the new
//! ones, never a mix.
//!
//! Which rows belong to an aggregate is [`ReadModel::aggregate_rows`]. Rows shared by every
//! aggregate (analytics dimensions, add-only sets) stay as they are.

use event_store::PgEventStore;
use read_models::SchemaName;
use sqlx::PgPool;

use crate::error::ReplayError;
use crate::progress::ProgressTable;
use crate::rebuild::{rebuild_aggregate, AggregateRef, RebuildOptions, RebuildProgress};
use crate::target::ReadModel;

// The analytics statements are `read_models::analytics_sql::replay`'s (parsed for Redshift).
use read_models::analytics_sql::replay::{
    copy_aggregate_rows, copy_marker, delete_aggregate_rows, delete_marker, lock_live_markers,
};

/// History only (its database is PostgreSQL): `::text` because history keys orders by `uuid`.
/// `{live}.{table}` and the key column are identifiers from [`ReadModel::aggregate_rows`] and
/// validated schema names; the aggregate's id is a parameter.
const HISTORY_DELETE_ROWS: &str = r#"DELETE FROM "{live}".{table} WHERE {column}::text = $1"#;
const HISTORY_COPY_ROWS: &str =
    r#"INSERT INTO "{live}".{table} SELECT * FROM "{rebuilt}".{table} WHERE {column}::text = $1"#;

/// Replaces `aggregate`'s rows in `live` by those rebuilt into `rebuilt` (see the module
/// documentation), returning the catch-up done under the lock. `pool` needs two connections:
/// one holds the lock, the other applies the catch-up.
pub async fn swap_aggregate_in(
    store: &PgEventStore,
    pool: &PgPool,
    model: ReadModel,
    (live, rebuilt): (&SchemaName, &SchemaName),
    aggregate: &AggregateRef,
    batch_commits: usize,
) -> Result<RebuildProgress, ReplayError> {
    let fill = |sql: &str, table: &str, column: &str| {
        sql.replace("{live}", live.as_str())
            .replace("{rebuilt}", rebuilt.as_str())
            .replace("{table}", table)
            .replace("{column}", column)
    };
    // (delete, copy) of one table's rows of the aggregate.
    let row_statements = |table: &str, column: &str| match model {
        ReadModel::History => (
            fill(HISTORY_DELETE_ROWS, table, column),
            fill(HISTORY_COPY_ROWS, table, column),
        ),
        ReadModel::Analytics => (
            delete_aggregate_rows(live, table, column),
            copy_aggregate_rows((live, rebuilt), table, column),
        ),
    };
    let mut tx = pool.begin().await?;
    sqlx::query(&lock_live_markers(live))
        .execute(&mut *tx)
        .await?;
    let progress = ProgressTable::new(pool.clone(), rebuilt.clone());
    let projection = model.projection(pool.clone(), rebuilt.clone());
    let options = RebuildOptions {
        until: None,
        batch_commits,
    };
    let tail = rebuild_aggregate(
        store,
        projection.as_ref(),
        &progress,
        &options,
        aggregate,
        |_| {},
    )
    .await?;
    let rows = model.aggregate_rows(&aggregate.aggregate_type);
    // Children before parents going out, parents before children coming in (history's order
    // items reference their order).
    for (table, column) in rows.iter().rev() {
        sqlx::query(&row_statements(table, column).0)
            .bind(&aggregate.aggregate_id)
            .execute(&mut *tx)
            .await?;
    }
    for (table, column) in rows {
        sqlx::query(&row_statements(table, column).1)
            .bind(&aggregate.aggregate_id)
            .execute(&mut *tx)
            .await?;
    }
    for marker in [delete_marker(live), copy_marker((live, rebuilt))] {
        sqlx::query(&marker)
            .bind(&aggregate.aggregate_type)
            .bind(&aggregate.aggregate_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(tail)
}
