//! Where a rebuild records how far it got: [`ProgressStore`], and its PostgreSQL form, the
//! `replay_progress` table a rebuild keeps inside its target schema.

use async_trait::async_trait;
use read_models::SchemaName;
use sqlx::PgPool;

use crate::error::ReplayError;

// The SQL is `read_models::analytics_sql::replay`'s: the dialect check parses it for Redshift.
use read_models::analytics_sql::replay::{
    drop_progress, CREATE_PROGRESS, DELETE_PROGRESS, INSERT_PROGRESS, PROGRESS_EXISTS,
    SELECT_PROGRESS,
};
use read_models::analytics_sql::SET_SEARCH_PATH;

/// The last global position a rebuild applied into its target, saved after every batch so that
/// the same command resumes after an interruption.
#[async_trait]
pub trait ProgressStore: Send + Sync {
    /// The last position applied for `projection`, if a rebuild stored one.
    async fn load(&self, projection: &str) -> Result<Option<i64>, ReplayError>;

    /// Records that everything through `position` was applied for `projection`.
    async fn save(&self, projection: &str, position: i64) -> Result<(), ReplayError>;
}

/// The last global position a rebuild applied into its target schema. Its presence also marks
/// the schema as a replay target, which is what lets `replay rebuild` resume into an existing
/// schema but never write into a live one.
#[derive(Debug, Clone)]
pub struct ProgressTable {
    pool: PgPool,
    schema: SchemaName,
}

impl ProgressTable {
    /// The table in `schema` through `pool` (no I/O: see [`Self::create`]).
    pub fn new(pool: PgPool, schema: SchemaName) -> Self {
        Self { pool, schema }
    }

    /// Creates the table if missing; the schema must exist.
    pub async fn create(&self) -> Result<(), ReplayError> {
        let mut tx = self.pool.begin().await?;
        set_search_path(&mut tx, &self.schema).await?;
        sqlx::query(CREATE_PROGRESS).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops the table: the schema is live again (an in-place rebuild finished).
    pub async fn drop_table(&self) -> Result<(), ReplayError> {
        sqlx::query(&drop_progress(&self.schema))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// True when `schema` holds a `replay_progress` table, i.e. was started by a rebuild.
    pub async fn exists(pool: &PgPool, schema: &SchemaName) -> Result<bool, ReplayError> {
        Ok(sqlx::query_scalar(PROGRESS_EXISTS)
            .bind(schema.as_str())
            .fetch_one(pool)
            .await?)
    }
}

#[async_trait]
impl ProgressStore for ProgressTable {
    async fn load(&self, projection: &str) -> Result<Option<i64>, ReplayError> {
        let mut tx = self.pool.begin().await?;
        set_search_path(&mut tx, &self.schema).await?;
        let position = sqlx::query_scalar(SELECT_PROGRESS)
            .bind(projection)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(position)
    }

    async fn save(&self, projection: &str, position: i64) -> Result<(), ReplayError> {
        let mut tx = self.pool.begin().await?;
        set_search_path(&mut tx, &self.schema).await?;
        record(&mut tx, projection, position).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Records `position` for `projection` in the `replay_progress` table of the schema the
/// transaction `tx` selected (the upsert Redshift accepts).
pub(crate) async fn record(
    tx: &mut sqlx::PgConnection,
    projection: &str,
    position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(DELETE_PROGRESS)
        .bind(projection)
        .execute(&mut *tx)
        .await?;
    sqlx::query(INSERT_PROGRESS)
        .bind(projection)
        .bind(position)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn set_search_path(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    schema: &SchemaName,
) -> Result<(), sqlx::Error> {
    sqlx::query(SET_SEARCH_PATH)
        .bind(schema.as_str())
        .execute(&mut **tx)
        .await
        .map(drop)
}
