//! The group-commit writer against a real PostgreSQL when something goes wrong: a commit the
//! database refuses, a position counter held by someone else, a caller that gave up.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, DomainEvent};
use event_store::{GroupCommitConfig, PgEventStore, StoreConfig, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use test_support::{fresh_database, TestDatabase};

/// The smallest aggregate that commits: every command appends one `Noted` event with a text.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Log {
    lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LogEvent {
    Noted(String),
}

impl DomainEvent for LogEvent {
    fn event_type(&self) -> String {
        "Noted".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Log {
    const TYPE: &'static str = "log";
    type Command = String;
    type Event = LogEvent;
    type Error = Never;
    type Services = ();

    async fn handle(&mut self, text: String, _: &(), sink: &EventSink<Self>) -> Result<(), Never> {
        sink.write(LogEvent::Noted(text), self).await;
        Ok(())
    }

    fn apply(&mut self, event: LogEvent) {
        let LogEvent::Noted(text) = event;
        self.lines.push(text);
    }
}

type Cqrs = CqrsFramework<Log, event_store::AggregateStore<Log>>;

fn cqrs(store: &PgEventStore) -> Cqrs {
    CqrsFramework::new(store.aggregate_store::<Log>(vec![]), vec![], ())
}

/// The SQLSTATE of a store error that came from PostgreSQL.
fn sqlstate(error: &AggregateError<Never>) -> Option<String> {
    let AggregateError::DatabaseConnectionError(source) = error else {
        return None;
    };
    let store_error = source.downcast_ref::<StoreError>()?;
    match store_error {
        StoreError::Database(error) => error
            .as_database_error()
            .and_then(|db| db.code())
            .map(|code| code.into_owned()),
        _ => None,
    }
}

/// A connection of the test's own that takes the position counter and keeps it until dropped or
/// rolled back: another writer stalled while holding it.
async fn hold_position_counter(database: &TestDatabase) -> PgConnection {
    let mut holder = PgConnection::connect(&database.url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT last_position FROM event_position FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

async fn event_count(database: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&database.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_commit_the_database_refuses_fails_alone_and_the_rest_of_its_batch_commits() {
    let database = fresh_database().await;
    let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
        .await
        .unwrap();
    // Below the domain layer nothing validates: a trigger stands for any reason PostgreSQL has
    // to refuse one commit's rows (a NUL in jsonb, a check constraint, a value too long).
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'poisoned commit of %', NEW.aggregate_id; END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW
         WHEN (NEW.aggregate_id = 'poison') EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&database.pool)
    .await
    .unwrap();

    // While another writer holds the counter, every command queues behind the first one, so
    // the poisoned commit and its neighbours are written in one batch once it is released.
    let holder = hold_position_counter(&database).await;
    let cqrs = std::sync::Arc::new(cqrs(&store));
    let mut tasks = Vec::new();
    for n in 0..20 {
        let cqrs = cqrs.clone();
        let id = if n == 10 {
            "poison".to_owned()
        } else {
            format!("log-{n}")
        };
        tasks.push(tokio::spawn(async move {
            let outcome = cqrs.execute(&id, format!("line {n}")).await;
            (id, outcome)
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.close().await.unwrap();

    for task in tasks {
        let (id, outcome) = task.await.unwrap();
        if id == "poison" {
            let error = outcome.unwrap_err();
            assert_eq!(
                sqlstate(&error).as_deref(),
                Some("P0001"),
                "the refused commit gets the database's own refusal: {error:?}"
            );
        } else {
            assert!(outcome.is_ok(), "{id}: {outcome:?}");
        }
    }
    assert_eq!(event_count(&database).await, 19);
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM events ORDER BY global_position")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    assert_eq!(positions, (1..=19).collect::<Vec<_>>(), "still gap-free");
}

#[tokio::test]
async fn a_lock_timeout_leaves_no_broken_connection_in_a_pool_of_one() {
    let database = fresh_database().await;
    // One connection: if a failed lock statement put it back inside an aborted transaction,
    // every later command would fail with 25P02.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&database.url)
        .await
        .unwrap();
    let store = PgEventStore::open(
        pool,
        StoreConfig {
            group_commit: GroupCommitConfig {
                lock_timeout: Duration::from_millis(200),
                ..GroupCommitConfig::default()
            },
            ..StoreConfig::default()
        },
    )
    .await
    .unwrap();
    let cqrs = cqrs(&store);

    let holder = hold_position_counter(&database).await;
    let blocked = tokio::time::timeout(
        Duration::from_secs(10),
        cqrs.execute("log-1", "blocked".into()),
    )
    .await
    .expect("the lock wait is bounded by lock_timeout");
    let error = blocked.unwrap_err();
    let AggregateError::DatabaseConnectionError(source) = &error else {
        panic!("a lock timeout is a store error: {error:?}");
    };
    let store_error = source.downcast_ref::<StoreError>().unwrap();
    assert!(
        store_error.is_transient(),
        "a lock timeout is retryable: {store_error:?}"
    );
    holder.close().await.unwrap();

    cqrs.execute("log-1", "after".into())
        .await
        .expect("the pool's only connection still works");
    cqrs.execute("log-2", "and again".into()).await.unwrap();
    assert_eq!(event_count(&database).await, 2);
}

#[tokio::test]
async fn a_commit_whose_caller_gave_up_is_never_written_afterwards() {
    let database = fresh_database().await;
    let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
        .await
        .unwrap();
    let cqrs = cqrs(&store);

    // The writer is stuck behind another process's batch; the caller stops waiting and is
    // told its command failed. When the counter frees up, that commit must not appear.
    let holder = hold_position_counter(&database).await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        cqrs.execute("log-1", "given up".into()),
    )
    .await;
    assert!(gave_up.is_err(), "the caller timed out: {gave_up:?}");
    holder.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        event_count(&database).await,
        0,
        "nothing written after the caller left"
    );
    cqrs.execute("log-2", "still writing".into()).await.unwrap();
    assert_eq!(event_count(&database).await, 1);
}

/// Command metadata recording the commit under idempotency `key` with `fingerprint`.
fn keyed(key: &str, fingerprint: &str) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        (
            event_store::metadata::IDEMPOTENCY_KEY.to_owned(),
            key.to_owned(),
        ),
        (
            event_store::metadata::REQUEST_FINGERPRINT.to_owned(),
            fingerprint.to_owned(),
        ),
    ])
}

/// A store on a pool of one connection whose batches must finish within 300 ms.
async fn impatient_store(database: &TestDatabase) -> PgEventStore {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&database.url)
        .await
        .unwrap();
    PgEventStore::open(
        pool,
        StoreConfig {
            group_commit: GroupCommitConfig {
                batch_timeout: Duration::from_millis(300),
                lock_timeout: Duration::from_secs(5),
                statement_timeout: Duration::from_secs(10),
                ..GroupCommitConfig::default()
            },
            ..StoreConfig::default()
        },
    )
    .await
    .unwrap()
}

fn store_error(error: &AggregateError<Never>) -> &StoreError {
    let AggregateError::DatabaseConnectionError(source) = error else {
        panic!("not a store error: {error:?}");
    };
    source.downcast_ref::<StoreError>().unwrap()
}

async fn events_of(database: &TestDatabase, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(id)
        .fetch_one(&database.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_database_that_stops_answering_mid_batch_times_out_and_its_connection_is_not_reused() {
    let database = fresh_database().await;
    let store = impatient_store(&database).await;
    // PostgreSQL takes a second over one aggregate's rows: to the writer, a database that has
    // stopped answering (its own statement_timeout is far away).
    sqlx::raw_sql(
        "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$;
         CREATE TRIGGER stall BEFORE INSERT ON events FOR EACH ROW
         WHEN (NEW.aggregate_id = 'stalled') EXECUTE FUNCTION stall();",
    )
    .execute(&database.pool)
    .await
    .unwrap();
    let cqrs = cqrs(&store);

    let stalled = tokio::time::timeout(
        Duration::from_secs(5),
        cqrs.execute("stalled", "never answered".into()),
    )
    .await
    .expect("the batch timeout bounds the wait");
    let error = stalled.unwrap_err();
    assert!(
        matches!(store_error(&error), StoreError::BatchTimedOut),
        "{error:?}"
    );

    // The abandoned transaction holds the counter until PostgreSQL finishes the statement and
    // finds its client gone; then it is rolled back.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        events_of(&database, "stalled").await,
        0,
        "COMMIT was never sent"
    );
    // The writer's connection was mid-statement: it was dropped, not reused, and the next batch
    // gets a fresh one.
    cqrs.execute("log-1", "next".into())
        .await
        .expect("a fresh connection");
    assert_eq!(events_of(&database, "log-1").await, 1);
}

#[tokio::test]
async fn a_commit_whose_answer_never_came_is_reported_as_unknown_and_its_retry_finds_the_outcome() {
    let database = fresh_database().await;
    let store = impatient_store(&database).await;
    // The COMMIT itself takes a second (a deferred trigger runs at commit time): the writer sent
    // it and hears nothing within its batch timeout.
    sqlx::raw_sql(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON events
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
         WHEN (NEW.aggregate_id = 'slow') EXECUTE FUNCTION slow_commit();",
    )
    .execute(&database.pool)
    .await
    .unwrap();
    let cqrs = cqrs(&store);
    let metadata = keyed("k-slow", "slow request");

    let error = cqrs
        .execute_with_metadata("slow", "maybe".into(), metadata)
        .await
        .unwrap_err();
    assert!(
        matches!(store_error(&error), StoreError::OutcomeUnknown(_)),
        "{error:?}"
    );

    // It did commit: "unknown" was the honest answer, and the key's stored outcome settles it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(events_of(&database, "slow").await, 1);
    let outcome = store
        .aggregate_store::<Log>(vec![])
        .commit_outcome("k-slow", "slow request")
        .await
        .unwrap()
        .expect("the retry finds the first outcome");
    assert_eq!(outcome.events.len(), 1);
}

#[tokio::test]
async fn inside_one_batch_a_second_commit_on_the_same_version_or_key_conflicts_alone() {
    let database = fresh_database().await;
    let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
        .await
        .unwrap();
    let cqrs = std::sync::Arc::new(cqrs(&store));
    let execute = |id: &str, key: &str| {
        let (cqrs, id, metadata) = (cqrs.clone(), id.to_owned(), keyed(key, id));
        tokio::spawn(async move {
            cqrs.execute_with_metadata(&id, format!("line of {id}"), metadata)
                .await
        })
    };
    // The writer's first batch waits for the counter alone; everything sent meanwhile queues
    // and is decided in its second batch, each commit seeing the ones before it.
    let holder = hold_position_counter(&database).await;
    let first = execute("first-batch", "k-0");
    wait_for_a_lock_wait(&database).await;
    // Two commits loaded at the same version of one aggregate, two commits under one key (on
    // different aggregates), one independent: of each pair exactly one is written, whatever
    // order they queued in.
    let same = [execute("same", "k-1"), execute("same", "k-2")];
    let keyed_pair = [execute("keyed-a", "k-dup"), execute("keyed-b", "k-dup")];
    let other = execute("other", "k-3");
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.close().await.unwrap();

    first.await.unwrap().unwrap();
    other.await.unwrap().unwrap();
    for pair in [same, keyed_pair] {
        let mut outcomes = Vec::new();
        for task in pair {
            outcomes.push(task.await.unwrap());
        }
        let written = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        let conflicts = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Err(AggregateError::AggregateConflict)))
            .count();
        assert_eq!((written, conflicts), (1, 1), "{outcomes:?}");
    }
    let written: Vec<(i64, i64)> =
        sqlx::query_as("SELECT global_position, sequence FROM events ORDER BY global_position")
            .fetch_all(&database.pool)
            .await
            .unwrap();
    assert_eq!(
        written,
        vec![(1, 1), (2, 1), (3, 1), (4, 1)],
        "the accepted commits, gap-free, each its aggregate's first event"
    );
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM command_idempotency ORDER BY idempotency_key",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(keys.contains(&"k-dup".to_owned()), "{keys:?}");
    let batches: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM outbox GROUP BY committed_at ORDER BY min(first_position)",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(
        batches,
        vec![1, 3],
        "the first alone, the rest in one batch"
    );
}

/// Waits until a session of `database` waits for a lock (the writer, for the held counter).
async fn wait_for_a_lock_wait(database: &TestDatabase) {
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&database.pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no session waited for the counter within two seconds");
}

#[tokio::test]
async fn a_writer_whose_connection_the_server_ended_reconnects_without_failing_a_command() {
    let database = fresh_database().await;
    let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
        .await
        .unwrap();
    let cqrs = cqrs(&store);
    cqrs.execute("log-1", "before".into()).await.unwrap();

    // A failover or a restart: the server ends every session of the database but this one.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&database.pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    cqrs.execute("log-1", "after".into())
        .await
        .expect("the writer finds its connection gone before writing and takes a fresh one");
    assert_eq!(event_count(&database).await, 2);
}
