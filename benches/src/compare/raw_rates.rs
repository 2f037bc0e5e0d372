//! The raw references: what PostgreSQL and the DynamoDB emulator do with no pipeline around
//! them, measured on the same servers in the same run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt;
use sqlx::postgres::PgPoolCopyExt;
use sqlx::PgPool;

/// An event-shaped table with the event store's keys: a position, a unique (aggregate, sequence).
const CREATE_RAW_EVENTS: &str = "CREATE TABLE IF NOT EXISTS raw_events (
    global_position bigserial PRIMARY KEY,
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    sequence bigint NOT NULL,
    event_type text NOT NULL,
    event_version text NOT NULL,
    payload jsonb NOT NULL,
    metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence))";

/// One multi-row INSERT of a batch sent by the client (ids and payloads as arrays).
const INSERT_BATCH: &str = "INSERT INTO raw_events
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at)
SELECT 'order', id, 1, 'OrderPlaced', '1', payload::jsonb, '{}'::jsonb, now()
FROM UNNEST($1::text[], $2::text[]) AS batch(id, payload)";

/// The events table in commit order, as text, the way replay reads it.
const COPY_EVENTS: &str = "COPY (SELECT global_position, aggregate_type, aggregate_id, sequence, \
event_type, event_version, payload, metadata, recorded_at FROM events ORDER BY global_position) \
TO STDOUT";

/// A rate measured over some work.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rate {
    /// Units of work done (rows, events, items).
    pub units: u64,
    /// Wall time.
    pub seconds: f64,
}

impl Rate {
    /// Units per second.
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.units as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Inserts batches of `batch_rows` event-sized rows (`payload`: a real event's JSON), one batch
/// per statement and transaction, on `connections` concurrent connections for `duration`.
pub async fn batched_inserts(
    pool: &PgPool,
    connections: usize,
    batch_rows: usize,
    payload: &str,
    duration: Duration,
) -> Result<Rate, sqlx::Error> {
    sqlx::query(CREATE_RAW_EVENTS).execute(pool).await?;
    let rows = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let pool = pool.clone();
            let rows = rows.clone();
            let payloads = vec![payload.to_owned(); batch_rows];
            tokio::spawn(async move {
                while started.elapsed() < duration {
                    let ids: Vec<String> = (0..batch_rows)
                        .map(|_| uuid::Uuid::new_v4().to_string())
                        .collect();
                    sqlx::query(INSERT_BATCH)
                        .bind(&ids)
                        .bind(&payloads)
                        .execute(&pool)
                        .await?;
                    rows.fetch_add(batch_rows as u64, Ordering::Relaxed);
                }
                Ok::<_, sqlx::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))??;
    }
    Ok(Rate {
        units: rows.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Reads the whole events table in commit order with `COPY ... TO STDOUT` (text format, one
/// line per event) and counts the events.
pub async fn copy_out_events(pool: &PgPool) -> Result<Rate, sqlx::Error> {
    let started = Instant::now();
    let mut stream = pool.copy_out_raw(COPY_EVENTS).await?;
    let mut events = 0u64;
    while let Some(chunk) = stream.next().await {
        events += chunk?.iter().filter(|&&byte| byte == b'\n').count() as u64;
    }
    Ok(Rate {
        units: events,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A DynamoDB item, as PutItem takes it.
pub type Item = std::collections::HashMap<String, AttributeValue>;

/// Puts `items` small order-shaped items (seven short attributes) into `table` (partition key
/// `pk`, sort key `sk`) with `concurrency` writers, each PutItem on its own. The reference (d)
/// used first; [`put_items`] of the view's own items into tables of the view's shapes is the
/// like-for-like one.
pub async fn dynamodb_puts(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    items: u64,
    concurrency: usize,
) -> Result<Rate, aws_sdk_dynamodb::Error> {
    let small_orders = (0..items)
        .map(|_| {
            let id = uuid::Uuid::new_v4();
            Item::from([
                ("pk".to_owned(), AttributeValue::S(format!("ORDER#{id}"))),
                ("sk".to_owned(), AttributeValue::S("ORDER".into())),
                (
                    "store_id".to_owned(),
                    AttributeValue::S("bench-store".into()),
                ),
                ("status".to_owned(), AttributeValue::S("placed".into())),
                ("note".to_owned(), AttributeValue::S("no sugar".into())),
                ("last_sequence".to_owned(), AttributeValue::N("1".into())),
                ("total_cents".to_owned(), AttributeValue::N("1275".into())),
            ])
        })
        .collect();
    put_items(client, table, small_orders, concurrency).await
}

/// Puts `items` into `table` with `concurrency` writers (tasks of their own), each PutItem on its
/// own.
pub async fn put_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<Item>,
    concurrency: usize,
) -> Result<Rate, aws_sdk_dynamodb::Error> {
    let items = Arc::new(items);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let client = client.clone();
            let table = table.to_owned();
            let items = items.clone();
            let next = next.clone();
            tokio::spawn(async move {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                    client
                        .put_item()
                        .table_name(&table)
                        .set_item(Some(item.clone()))
                        .send()
                        .await?;
                }
                Ok::<_, aws_sdk_dynamodb::Error>(())
            })
        })
        .collect();
    for task in tasks {
        if let Ok(result) = task.await {
            result?;
        }
    }
    Ok(Rate {
        units: items.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}
