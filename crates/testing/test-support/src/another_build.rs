//! Events as a writer of another build appends them: what a reader of this build meets during a
//! rolling deploy (a newer event type or version) or long after one (an older version).

use sqlx::PgPool;

/// Appends one event to the aggregate with the next position and sequence, whatever its type,
/// version and payload, the way the group commit numbers them, and wakes the listeners of the
/// commit channel as a commit does. Returns the event's sequence.
pub async fn append_as_another_build(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    event_version: &str,
    payload: serde_json::Value,
) -> sqlx::Result<i64> {
    let mut transaction = pool.begin().await?;
    let sequence = sqlx::query_scalar(
        "WITH next AS (UPDATE event_position SET last_position = last_position + 1 \
                       RETURNING last_position) \
         INSERT INTO events (global_position, aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata, recorded_at) \
         SELECT last_position, $1, $2, \
                (SELECT COALESCE(MAX(sequence), 0) + 1 FROM events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2), \
                $3, $4, $5, '{}'::jsonb, now() FROM next \
         RETURNING sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(event_type)
    .bind(event_version)
    .bind(payload)
    .fetch_one(&mut *transaction)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(event_store::OUTBOX_CHANNEL)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(sequence)
}
