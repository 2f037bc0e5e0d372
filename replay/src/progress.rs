//! Where a rebuild records how far it got: [`ProgressStore`], and its PostgreSQL form, the
//! `replay_progress` table a rebuild keeps inside its target schema.

use async_trait::async_trait;
use read_models::SchemaName;
use sqlx::PgPool;

use crate::error::ReplayError;

/// Selects the target schema for the rest of the transaction (the queries stay constants).
const SET_SEARCH_PATH: &str = "SELECT set_config('search_path', $1, true)";

/// Within the Redshift SQL subset the analytics target also uses (no `ON CONFLICT`, no `TEXT`).
pub(crate) const CREATE_PROGRESS: &str = "\
CREATE TABLE IF NOT EXISTS replay_progress (
    projection    VARCHAR(64) NOT NULL PRIMARY KEY,
    last_position BIGINT      NOT NULL
)";

/// A schema stops being a replay target once live: `replay rebuild` resumes into any schema
/// holding this table, which must never be the live one. `{schema}` is a validated
/// [`SchemaName`].
pub(crate) const DROP_PROGRESS: &str = r#"DROP TABLE "{schema}".replay_progress"#;

const PROGRESS_EXISTS: &str = "\
SELECT EXISTS (SELECT 1 FROM information_schema.tables
               WHERE table_schema = $1 AND table_name = 'replay_progress')";

const SELECT_PROGRESS: &str = "SELECT last_position FROM replay_progress WHERE projection = $1";
const DELETE_PROGRESS: &str = "DELETE FROM replay_progress WHERE projection = $1";
const INSERT_PROGRESS: &str =
    "INSERT INTO replay_progress (projection, last_position) VALUES ($1, $2)";

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
        sqlx::query(&DROP_PROGRESS.replace("{schema}", self.schema.as_str()))
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
        sqlx::query(DELETE_PROGRESS)
            .bind(projection)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_PROGRESS)
            .bind(projection)
            .bind(position)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
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
