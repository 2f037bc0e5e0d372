//! One writer of a bulk rebuild: its own connection and transaction, the commits of the
//! aggregates it owns turned into rows ([`BulkRows`]) and streamed with
//! `COPY ... FROM STDIN (FORMAT binary)`.

use std::collections::BTreeSet;

use read_models::analytics_sql::SET_SEARCH_PATH;
use read_models::bulk::{Added, BulkRows, BulkShared, CopyData};
use read_models::SchemaName;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use tokio::sync::mpsc;

use super::read::StoredEvent;
use crate::error::ReplayError;
use crate::target::ReadModel;

/// Rows buffered before they are sent: large enough that a `COPY` costs little per row, small
/// enough that a writer holds a few MiB.
const SEND_AT_BYTES: usize = 1 << 20;
/// Open orders one writer holds at most before it writes the oldest ones (their later commits
/// are then deferred to the live path): bounds memory whatever the share of abandoned orders.
const KEEP_OPEN_ORDERS: usize = 50_000;

/// What the reader sends a writer.
#[derive(Debug)]
pub(crate) enum ToWriter {
    /// Commits (each its events), in their aggregates' order.
    Commits(Vec<Vec<StoredEvent>>),
    /// The log is read to the bound: write the rest and commit. A writer whose channel closes
    /// without it rolls back.
    End,
}

/// What one writer wrote.
#[derive(Debug)]
pub(crate) struct Written {
    /// Its share of the rows every writer contributes to.
    pub(crate) shared: BulkShared,
    /// Orders with commits after their rows were written, for the live path.
    pub(crate) deferred: BTreeSet<String>,
}

/// Runs one writer of `model` into `schema` until [`ToWriter::End`] (commits its transaction)
/// or an error (rolls back), writing its ended orders every `take_every` commits.
pub(crate) async fn run(
    options: PgConnectOptions,
    (schema, model): (SchemaName, ReadModel),
    take_every: usize,
    mut commits: mpsc::Receiver<ToWriter>,
) -> Result<Written, ReplayError> {
    let mut connection = options.connect().await?;
    sqlx::query("BEGIN").execute(&mut connection).await?;
    sqlx::query(SET_SEARCH_PATH)
        .bind(schema.as_str())
        .execute(&mut connection)
        .await?;
    let mut rows = match model {
        ReadModel::History => BulkRows::history(KEEP_OPEN_ORDERS),
        ReadModel::Analytics => BulkRows::analytics(KEEP_OPEN_ORDERS),
    };
    let mut deferred = BTreeSet::new();
    let mut since_take = 0usize;
    loop {
        let Some(message) = commits.recv().await else {
            // The reader stopped on an error: nothing of this writer is kept.
            return Err(ReplayError::Refused(
                "the bulk rebuild stopped before the end of the log".into(),
            ));
        };
        let ToWriter::Commits(batch) = message else {
            break;
        };
        for events_of_commit in batch {
            let commit = StoredEvent::decode_commit(&events_of_commit)?;
            match rows.add(&commit) {
                Ok(Added::Taken) => {}
                Ok(Added::Deferred) => {
                    deferred.insert(commit.aggregate_id.clone());
                }
                Err(source) => {
                    return Err(ReplayError::Apply {
                        projection: model.name(),
                        position: commit.first_position(),
                        source,
                    })
                }
            }
            since_take += 1;
            if since_take >= take_every {
                since_take = 0;
                rows.write_ended()?;
                if rows.buffered_bytes() >= SEND_AT_BYTES {
                    send(&mut connection, rows.take_rows()).await?;
                }
            }
        }
    }
    let (last_rows, shared) = rows.finish()?;
    send(&mut connection, last_rows).await?;
    sqlx::query("COMMIT").execute(&mut connection).await?;
    Ok(Written { shared, deferred })
}

/// Streams `tables`' rows into their tables, one `COPY` each.
pub(crate) async fn send(
    connection: &mut PgConnection,
    tables: Vec<CopyData>,
) -> Result<(), ReplayError> {
    for table in tables {
        let mut copy = connection.copy_in_raw(table.statement).await?;
        copy.send(table.data).await?;
        copy.finish().await?;
    }
    Ok(())
}
