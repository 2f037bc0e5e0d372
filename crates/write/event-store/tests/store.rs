//! The event store against a real PostgreSQL: optimistic concurrency, gap-free positions in commit
//! order with several writers, the outbox, snapshots, idempotency keys and group commit.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, DomainEvent, EventStore};
use event_store::{metadata, KeyRetention, PgEventStore, StoreConfig, StoreError};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use test_support::fresh_database;

/// A test aggregate whose commands emit several events, and whose state would reveal an event
/// applied twice (`applied` counts every `apply`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: i64,
    applied: u64,
    history: Vec<i64>,
}

#[derive(Debug, Clone)]
enum TallyCommand {
    Add(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TallyEvent {
    Added(i64),
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> String {
        "Added".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("the total would go below zero")]
struct BelowZero;

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Error = BelowZero;
    type Services = ();

    async fn handle(
        &mut self,
        command: TallyCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), BelowZero> {
        let TallyCommand::Add(amounts) = command;
        for amount in amounts {
            if self.total + amount < 0 {
                return Err(BelowZero);
            }
            sink.write(TallyEvent::Added(amount), self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: TallyEvent) {
        let TallyEvent::Added(amount) = event;
        self.total += amount;
        self.applied += 1;
        self.history.push(amount);
    }
}

async fn open_store(snapshot_every: u64) -> PgEventStore {
    let database = fresh_database().await;
    PgEventStore::open(
        database.pool,
        StoreConfig {
            snapshot_every,
            ..StoreConfig::default()
        },
    )
    .await
    .unwrap()
}

fn keyed(key: &str, fingerprint: &str) -> HashMap<String, String> {
    HashMap::from([
        (metadata::IDEMPOTENCY_KEY.to_owned(), key.to_owned()),
        (
            metadata::REQUEST_FINGERPRINT.to_owned(),
            fingerprint.to_owned(),
        ),
    ])
}

/// The state rebuilt from every event, ignoring snapshots.
async fn full_replay(store: &PgEventStore, id: &str) -> Tally {
    let mut tally = Tally::default();
    for envelope in store
        .aggregate_store::<Tally>(vec![])
        .load_events(id)
        .await
        .unwrap()
    {
        tally.apply(envelope.payload);
    }
    tally
}

#[tokio::test]
async fn cqrs_framework_drives_an_aggregate_through_the_store() {
    let store = open_store(0).await;
    let cqrs = CqrsFramework::new(store.aggregate_store::<Tally>(vec![]), vec![], ());

    cqrs.execute("t-1", TallyCommand::Add(vec![5, 7]))
        .await
        .unwrap();
    let refused = cqrs.execute("t-1", TallyCommand::Add(vec![1, -20])).await;

    assert!(matches!(refused, Err(AggregateError::UserError(BelowZero))));
    let loaded = store
        .aggregate_store::<Tally>(vec![])
        .load("t-1")
        .await
        .unwrap();
    assert_eq!(loaded.version(), 2, "the refused command appended nothing");
    assert_eq!(loaded.state().history, vec![5, 7]);
}

#[tokio::test]
async fn snapshots_across_boundaries_equal_a_full_replay() {
    // Commands of 1, 2 and 3 events against a snapshot every 3 events cross the boundary at
    // every possible offset. cqrs-es 0.5.0's PersistedEventStore applies a commit's events a
    // second time before snapshotting; `applied` would then exceed the event count.
    let store = open_store(3).await;
    let cqrs = CqrsFramework::new(store.aggregate_store::<Tally>(vec![]), vec![], ());
    let mut next = 1;
    for round in 0..12 {
        let amounts: Vec<i64> = (0..(round % 3 + 1))
            .map(|_| {
                next += 1;
                next
            })
            .collect();
        cqrs.execute("t-snap", TallyCommand::Add(amounts))
            .await
            .unwrap();

        let loaded = store
            .aggregate_store::<Tally>(vec![])
            .load("t-snap")
            .await
            .unwrap();
        let replayed = full_replay(&store, "t-snap").await;
        assert_eq!(loaded.state(), &replayed, "after round {round}");
        assert_eq!(loaded.state().applied, loaded.version());
    }

    let (version, payload): (i64, serde_json::Value) =
        sqlx::query_as("SELECT version, payload FROM snapshots WHERE aggregate_id = 't-snap'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    let snapshot: Tally = serde_json::from_value(payload).unwrap();
    assert_eq!(
        snapshot.applied, version as u64,
        "the snapshot counts each event once"
    );
    assert!(
        version >= 21,
        "snapshots kept up with the stream (at version {version})"
    );
}

#[tokio::test]
async fn a_commit_decided_on_a_stale_version_conflicts_and_appends_nothing() {
    let store = open_store(0).await;
    let tallies = store.aggregate_store::<Tally>(vec![]);
    let first = tallies.load_aggregate("t-race").await.unwrap();
    let second = tallies.load_aggregate("t-race").await.unwrap();

    tallies
        .commit(vec![TallyEvent::Added(1)], first, HashMap::new())
        .await
        .unwrap();
    let stale = tallies
        .commit(vec![TallyEvent::Added(2)], second, HashMap::new())
        .await;

    assert!(matches!(stale, Err(AggregateError::AggregateConflict)));
    assert_eq!(full_replay(&store, "t-race").await.history, vec![1]);
}

#[tokio::test]
async fn positions_are_gap_free_in_commit_order_with_two_writers_and_every_commit_has_its_outbox_row(
) {
    let database = fresh_database().await;
    // Two stores on one database stand for two command-api processes, each with its own writer.
    let writers = [
        PgEventStore::open(database.pool.clone(), StoreConfig::default())
            .await
            .unwrap(),
        PgEventStore::open(database.pool.clone(), StoreConfig::default())
            .await
            .unwrap(),
    ];
    let mut tasks = Vec::new();
    for task in 0..40 {
        let cqrs = CqrsFramework::new(
            writers[task % 2].aggregate_store::<Tally>(vec![]),
            vec![],
            (),
        );
        tasks.push(tokio::spawn(async move {
            let id = format!("t-{}", task % 8);
            let mut done = 0;
            while done < 5 {
                match cqrs.execute(&id, TallyCommand::Add(vec![1, 1])).await {
                    Ok(()) => done += 1,
                    Err(AggregateError::AggregateConflict) => continue,
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let events: Vec<_> = writers[0].read_all_after(0).try_collect().await.unwrap();
    assert_eq!(events.len(), 40 * 5 * 2);
    let positions: Vec<i64> = events.iter().map(|e| e.global_position).collect();
    assert_eq!(
        positions,
        (1..=400).collect::<Vec<_>>(),
        "gap-free, in order"
    );
    assert_eq!(writers[1].last_position().await.unwrap(), 400);

    // Within each aggregate, commit order is sequence order.
    let mut last_sequence: BTreeMap<&str, i64> = BTreeMap::new();
    for event in &events {
        let previous = last_sequence
            .insert(&event.aggregate_id, event.sequence)
            .unwrap_or(0);
        assert_eq!(event.sequence, previous + 1);
    }
    // Commit timestamps follow positions.
    assert!(events
        .windows(2)
        .all(|w| w[0].recorded_at <= w[1].recorded_at));

    // Every event is covered by exactly one outbox row of its own aggregate.
    let outbox: Vec<(i64, i64, String, i64, i64)> = sqlx::query_as(
        "SELECT first_position, last_position, aggregate_id, first_sequence, last_sequence
         FROM outbox ORDER BY first_position",
    )
    .fetch_all(&database.pool)
    .await
    .unwrap();
    assert_eq!(outbox.len(), 200, "one outbox row per commit");
    let mut covered = HashSet::new();
    for (first, last, aggregate_id, first_sequence, last_sequence) in &outbox {
        assert_eq!(last - first, last_sequence - first_sequence);
        for position in *first..=*last {
            let event = &events[position as usize - 1];
            assert_eq!(&event.aggregate_id, aggregate_id);
            assert!(covered.insert(position));
        }
    }
    assert_eq!(covered.len(), 400);

    // Group commit: concurrent commits shared transactions (one timestamp per transaction).
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT committed_at) FROM outbox")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert!(
        transactions < 200,
        "{transactions} transactions for 200 commits"
    );
}

#[tokio::test]
async fn an_idempotency_key_records_the_outcome_once() {
    let store = open_store(0).await;
    let tallies = store.aggregate_store::<Tally>(vec![]);
    let cqrs = CqrsFramework::new(tallies.clone(), vec![], ());

    cqrs.execute_with_metadata(
        "t-key",
        TallyCommand::Add(vec![3, 4]),
        keyed("k-1", "add 3 4"),
    )
    .await
    .unwrap();
    let outcome = tallies
        .commit_outcome("k-1", "add 3 4")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.aggregate_id, "t-key");
    let payloads: Vec<_> = outcome.events.iter().map(|e| e.payload.clone()).collect();
    assert_eq!(payloads, vec![TallyEvent::Added(3), TallyEvent::Added(4)]);
    assert_eq!(outcome.events[0].metadata[metadata::IDEMPOTENCY_KEY], "k-1");
    assert!(!outcome.events[0]
        .metadata
        .contains_key(metadata::REQUEST_FINGERPRINT));

    // The same key again, even on a fresh load, is refused at commit: nothing is appended.
    let again = cqrs
        .execute_with_metadata(
            "t-key",
            TallyCommand::Add(vec![3, 4]),
            keyed("k-1", "add 3 4"),
        )
        .await;
    assert!(matches!(again, Err(AggregateError::AggregateConflict)));
    assert_eq!(full_replay(&store, "t-key").await.history, vec![3, 4]);

    // The same key for another request is reported as reuse.
    let reused = tallies.commit_outcome("k-1", "add 9").await;
    assert!(matches!(
        reused,
        Err(StoreError::IdempotencyKeyReused { .. })
    ));
    assert!(tallies
        .commit_outcome("k-unknown", "x")
        .await
        .unwrap()
        .is_none());
}

/// `append_commits` for one new aggregate with one key, as the writer calls it.
const APPEND_ONE_KEYED_COMMIT: &str = "SELECT append_commits(ARRAY['tally'], ARRAY[$1],
    ARRAY[0]::BIGINT[], ARRAY[1], ARRAY['{}'::JSONB], ARRAY[$2], ARRAY['f'], ARRAY[NULL]::JSONB[],
    ARRAY[NULL]::INTEGER[], ARRAY[1], ARRAY['Added'], ARRAY['1.0'], ARRAY['{\"Added\":1}'::JSONB])";

/// The writer's session lives for days while the key table grows from nothing. PL/pgSQL keeps
/// one plan per statement for the session; a plan made while the table was nearly empty read the
/// whole table on every later batch (the gRPC path slid to 0.37x of the baseline). Here the
/// session plans while the table is empty (a generic plan, as PL/pgSQL settles on after five
/// calls), the table then grows without an ANALYZE that would replan, and the next batch must
/// probe the key index instead of scanning the table.
#[tokio::test]
async fn the_key_check_probes_the_key_index_however_small_the_table_was() {
    let store = open_store(0).await;
    let mut session = store.pool().acquire().await.unwrap();
    for statement in [
        "ALTER TABLE command_idempotency SET (autovacuum_enabled = false)",
        "SET plan_cache_mode = force_generic_plan",
    ] {
        sqlx::query(statement).execute(&mut *session).await.unwrap();
    }
    sqlx::query(APPEND_ONE_KEYED_COMMIT)
        .bind("t-first")
        .bind("k-first")
        .execute(&mut *session)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO command_idempotency
         SELECT 'k-' || n, 'f', 'tally', 't-' || n, 1, 1, now() FROM generate_series(1, 5000) n",
    )
    .execute(&mut *session)
    .await
    .unwrap();

    sqlx::query("BEGIN").execute(&mut *session).await.unwrap();
    let positions: Vec<Option<i64>> = sqlx::query_scalar(APPEND_ONE_KEYED_COMMIT)
        .bind("t-next")
        .bind("k-next")
        .fetch_one(&mut *session)
        .await
        .unwrap();
    let (scans, rows_read): (i64, i64) = sqlx::query_as(
        "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables
         WHERE relname = 'command_idempotency'",
    )
    .fetch_one(&mut *session)
    .await
    .unwrap();
    sqlx::query("ROLLBACK")
        .execute(&mut *session)
        .await
        .unwrap();

    assert_eq!(positions, vec![Some(2)], "the new key's commit is accepted");
    assert_eq!(
        (scans, rows_read),
        (0, 0),
        "the batch read the key table instead of probing its index"
    );
}

#[tokio::test]
async fn reads_the_log_after_a_position_in_commit_order() {
    let store = open_store(0).await;
    let cqrs = CqrsFramework::new(store.aggregate_store::<Tally>(vec![]), vec![], ());
    for id in ["a", "b", "a", "c"] {
        cqrs.execute(id, TallyCommand::Add(vec![1])).await.unwrap();
    }

    let tail: Vec<_> = store.read_all_after(2).try_collect().await.unwrap();

    let seen: Vec<(i64, &str, i64)> = tail
        .iter()
        .map(|e| (e.global_position, e.aggregate_id.as_str(), e.sequence))
        .collect();
    assert_eq!(seen, vec![(3, "a", 2), (4, "c", 1)]);
    assert_eq!(tail[0].event_type, "Added");
    assert_eq!(tail[0].payload, serde_json::json!({"Added": 1}));
}

#[tokio::test]
async fn the_outbox_gives_the_oldest_commits_first_with_their_events_and_forgets_removed_ones() {
    let store = open_store(0).await;
    let cqrs = CqrsFramework::new(store.aggregate_store::<Tally>(vec![]), vec![], ());
    cqrs.execute("a", TallyCommand::Add(vec![1, 2]))
        .await
        .unwrap();
    cqrs.execute("b", TallyCommand::Add(vec![3])).await.unwrap();
    cqrs.execute("a", TallyCommand::Add(vec![4, 5, 6]))
        .await
        .unwrap();

    let oldest_two = store.read_outbox(2).await.unwrap();
    let shape =
        |commits: &[event_store::OutboxCommit]| -> Vec<(i64, String, Vec<i64>)> {
            commits
                .iter()
                .map(|c| {
                    assert!(c.events.iter().all(|e| e.aggregate_id == c.aggregate_id
                        && e.aggregate_type == c.aggregate_type));
                    assert_eq!(c.events[0].global_position, c.first_position);
                    let sequences = c.events.iter().map(|e| e.sequence).collect();
                    (c.first_position, c.aggregate_id.clone(), sequences)
                })
                .collect()
        };
    assert_eq!(
        shape(&oldest_two),
        vec![(1, "a".into(), vec![1, 2]), (3, "b".into(), vec![1])],
        "the limit counts commits, and a commit comes whole"
    );
    assert_eq!(oldest_two[0].aggregate_type, "tally");
    assert_eq!(
        oldest_two[0].events[1].payload,
        serde_json::json!({"Added": 2})
    );

    assert_eq!(store.remove_from_outbox(&[1, 3]).await.unwrap(), 2);
    assert_eq!(
        shape(&store.read_outbox(100).await.unwrap()),
        vec![(4, "a".into(), vec![3, 4, 5])]
    );
    assert_eq!(
        store.remove_from_outbox(&[1, 3]).await.unwrap(),
        0,
        "removing again is harmless"
    );
    assert_eq!(store.remove_from_outbox(&[]).await.unwrap(), 0);
    assert_eq!(store.remove_from_outbox(&[4]).await.unwrap(), 1);
    assert!(store.read_outbox(100).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_outbox_backlog_counts_waiting_commits_and_ages_the_oldest() {
    let store = open_store(0).await;
    let empty = store.outbox_backlog().await.unwrap();
    assert_eq!((empty.commits, empty.oldest_age), (0, None));

    let cqrs = CqrsFramework::new(store.aggregate_store::<Tally>(vec![]), vec![], ());
    cqrs.execute("a", TallyCommand::Add(vec![1, 2]))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    cqrs.execute("b", TallyCommand::Add(vec![3])).await.unwrap();

    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog.commits, 2, "commits, not events");
    let age = backlog.oldest_age.unwrap();
    assert!(
        age >= std::time::Duration::from_millis(300),
        "the oldest commit's age, not the newest's: {age:?}"
    );

    store.remove_from_outbox(&[1]).await.unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap().commits, 1);
}

/// A tally of six events with a snapshot every two, written by a store of snapshot schema
/// version 1.
async fn tally_with_snapshots(id: &str) -> PgEventStore {
    let store = open_store(2).await;
    let cqrs = CqrsFramework::new(
        store
            .aggregate_store::<Tally>(vec![])
            .with_snapshot_version(1),
        vec![],
        (),
    );
    for amount in [1, 2, 3] {
        cqrs.execute(id, TallyCommand::Add(vec![amount, amount * 10]))
            .await
            .unwrap();
    }
    let version: i64 = sqlx::query_scalar("SELECT version FROM snapshots WHERE aggregate_id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(version, 6, "the tally has a snapshot to distrust");
    store
}

#[tokio::test]
async fn a_snapshot_of_an_older_schema_version_is_ignored_and_the_events_replayed() {
    let store = tally_with_snapshots("t-old").await;
    // What a build before a fix to `apply` would have snapshotted: a state no replay gives.
    sqlx::query(
        "UPDATE snapshots SET payload = '{\"total\": 999, \"applied\": 6, \"history\": []}'
         WHERE aggregate_id = 't-old'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let current = store
        .aggregate_store::<Tally>(vec![])
        .with_snapshot_version(2);

    let loaded = current.load("t-old").await.unwrap();

    let replayed = full_replay(&store, "t-old").await;
    assert_eq!(
        loaded.state(),
        &replayed,
        "the old snapshot was not trusted"
    );
    assert_eq!(loaded.version(), 6);
    assert_eq!(replayed.total, 66);

    // The next commit replaces the old snapshot with one of the current version, without
    // waiting for the next snapshot boundary.
    CqrsFramework::new(current.clone(), vec![], ())
        .execute("t-old", TallyCommand::Add(vec![4]))
        .await
        .unwrap();
    let (version, schema_version): (i64, i32) = sqlx::query_as(
        "SELECT version, schema_version FROM snapshots WHERE aggregate_id = 't-old'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((version, schema_version), (7, 2));
    assert_eq!(
        current.load("t-old").await.unwrap().state(),
        &full_replay(&store, "t-old").await
    );
}

#[tokio::test]
async fn an_undecodable_snapshot_is_ignored_and_the_events_replayed() {
    let store = tally_with_snapshots("t-garbled").await;
    sqlx::query(
        "UPDATE snapshots SET payload = '\"not a tally\"' WHERE aggregate_id = 't-garbled'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let tallies = store
        .aggregate_store::<Tally>(vec![])
        .with_snapshot_version(1);

    let loaded = tallies
        .load("t-garbled")
        .await
        .expect("an undecodable snapshot does not make the aggregate unloadable");

    assert_eq!(loaded.state(), &full_replay(&store, "t-garbled").await);
    assert_eq!(loaded.version(), 6);
    // Commands go on, and the next one writes a snapshot that decodes.
    CqrsFramework::new(tallies.clone(), vec![], ())
        .execute("t-garbled", TallyCommand::Add(vec![4]))
        .await
        .unwrap();
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM snapshots WHERE aggregate_id = 't-garbled'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(
        serde_json::from_value::<Tally>(payload).unwrap(),
        full_replay(&store, "t-garbled").await
    );
}

#[tokio::test]
async fn a_snapshot_of_the_current_schema_version_is_used() {
    let store = tally_with_snapshots("t-current").await;
    // A marker only the snapshot carries: were the events replayed instead, `applied` would be 6.
    sqlx::query(
        "UPDATE snapshots SET payload = jsonb_set(payload, '{applied}', '1006')
         WHERE aggregate_id = 't-current'",
    )
    .execute(store.pool())
    .await
    .unwrap();

    let loaded = store
        .aggregate_store::<Tally>(vec![])
        .with_snapshot_version(1)
        .load("t-current")
        .await
        .unwrap();

    assert_eq!(loaded.state().applied, 1006, "loaded from the snapshot");
}

/// Commits one event under each key, on an aggregate of its own.
async fn commit_keys(store: &PgEventStore, keys: &[&str]) {
    let cqrs = CqrsFramework::new(store.aggregate_store::<Tally>(vec![]), vec![], ());
    for key in keys {
        cqrs.execute_with_metadata(
            &format!("t-{key}"),
            TallyCommand::Add(vec![1]),
            keyed(key, "add 1"),
        )
        .await
        .unwrap();
    }
}

/// Backdates a key's commit by `age`.
async fn age_key(store: &PgEventStore, key: &str, age: Duration) {
    sqlx::query(
        "UPDATE command_idempotency
         SET committed_at = statement_timestamp() - make_interval(secs => $2)
         WHERE idempotency_key = $1",
    )
    .bind(key)
    .bind(age.as_secs_f64())
    .execute(store.pool())
    .await
    .unwrap();
}

async fn stored_keys(store: &PgEventStore) -> Vec<String> {
    sqlx::query_scalar("SELECT idempotency_key FROM command_idempotency ORDER BY 1")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[tokio::test]
async fn pruning_removes_only_expired_keys_in_small_batches() {
    let store = open_store(0).await;
    commit_keys(&store, &["old-1", "old-2", "old-3", "fresh", "inside"]).await;
    for key in ["old-1", "old-2", "old-3"] {
        age_key(&store, key, RETENTION + Duration::from_secs(60)).await;
    }
    age_key(&store, "inside", RETENTION - Duration::from_secs(60)).await;

    // Batches of two: two expired keys, then the last one, then nothing is left to prune.
    let mut pruned = Vec::new();
    for _ in 0..3 {
        pruned.push(store.prune_expired_keys(RETENTION, 2).await.unwrap());
    }

    assert_eq!(pruned, vec![2, 1, 0]);
    assert_eq!(stored_keys(&store).await, vec!["fresh", "inside"]);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(events, 5, "pruning keys leaves the events alone");
}

#[tokio::test]
async fn a_retry_inside_the_retention_window_still_replays_and_one_after_it_is_new() {
    let store = open_store(0).await;
    let tallies = store.aggregate_store::<Tally>(vec![]);
    commit_keys(&store, &["inside", "expired"]).await;
    age_key(&store, "inside", RETENTION - Duration::from_secs(60)).await;
    age_key(&store, "expired", RETENTION + Duration::from_secs(60)).await;
    store.prune_expired_keys(RETENTION, 100).await.unwrap();

    // Inside the window the first outcome is still there, and the key still refuses a commit.
    let outcome = tallies.commit_outcome("inside", "add 1").await.unwrap();
    assert_eq!(outcome.unwrap().aggregate_id, "t-inside");
    let cqrs = CqrsFramework::new(tallies.clone(), vec![], ());
    let again = cqrs
        .execute_with_metadata(
            "t-inside",
            TallyCommand::Add(vec![1]),
            keyed("inside", "add 1"),
        )
        .await;
    assert!(matches!(again, Err(AggregateError::AggregateConflict)));

    // After it the key is forgotten: the same command is a new one.
    assert!(tallies
        .commit_outcome("expired", "add 1")
        .await
        .unwrap()
        .is_none());
    cqrs.execute_with_metadata(
        "t-expired",
        TallyCommand::Add(vec![1]),
        keyed("expired", "add 1"),
    )
    .await
    .expect("an expired key is a new command");
    assert_eq!(full_replay(&store, "t-expired").await.history, vec![1, 1]);
}

#[tokio::test]
async fn the_key_pruner_runs_in_the_background_until_stopped() {
    let store = open_store(0).await;
    commit_keys(&store, &["old-1", "old-2", "old-3", "fresh"]).await;
    for key in ["old-1", "old-2", "old-3"] {
        age_key(&store, key, RETENTION + Duration::from_secs(60)).await;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pruner = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .run_key_pruner(
                    KeyRetention {
                        retention: RETENTION,
                        prune_interval: Duration::from_millis(50),
                        prune_batch: 2,
                    },
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
        }
    });

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stored_keys(&store).await != vec!["fresh"] {
        assert!(
            std::time::Instant::now() < deadline,
            "expired keys still stored: {:?}",
            stored_keys(&store).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), pruner)
        .await
        .expect("the pruner stops when told")
        .unwrap();
}

#[tokio::test]
async fn a_pruner_skips_keys_another_transaction_holds_and_commits_go_on_meanwhile() {
    let store = open_store(0).await;
    commit_keys(&store, &["old-1", "old-2"]).await;
    for key in ["old-1", "old-2"] {
        age_key(&store, key, RETENTION + Duration::from_secs(60)).await;
    }
    // Another pruner (or anything else) holds old-1's row.
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM command_idempotency WHERE idempotency_key = 'old-1' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();

    let pruned = tokio::time::timeout(
        Duration::from_secs(3),
        store.prune_expired_keys(RETENTION, 100),
    )
    .await
    .expect("the pruner does not wait for held rows")
    .unwrap();
    assert_eq!(pruned, 1, "old-2 only");
    tokio::time::timeout(Duration::from_secs(3), commit_keys(&store, &["new"]))
        .await
        .expect("commits are not blocked");

    holder.rollback().await.unwrap();
    assert_eq!(store.prune_expired_keys(RETENTION, 100).await.unwrap(), 1);
    assert_eq!(stored_keys(&store).await, vec!["new"]);
}

#[tokio::test]
async fn a_snapshot_of_a_newer_schema_version_is_ignored_but_left_to_its_build() {
    // During a rolling deploy an older build meets the snapshot a newer one wrote.
    let store = tally_with_snapshots("t-newer").await;
    sqlx::query("UPDATE snapshots SET schema_version = 3 WHERE aggregate_id = 't-newer'")
        .execute(store.pool())
        .await
        .unwrap();
    let older = store
        .aggregate_store::<Tally>(vec![])
        .with_snapshot_version(2);

    assert_eq!(
        older.load("t-newer").await.unwrap().state(),
        &full_replay(&store, "t-newer").await
    );
    CqrsFramework::new(older, vec![], ())
        .execute("t-newer", TallyCommand::Add(vec![4]))
        .await
        .unwrap();
    let (version, schema_version): (i64, i32) = sqlx::query_as(
        "SELECT version, schema_version FROM snapshots WHERE aggregate_id = 't-newer'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        (version, schema_version),
        (6, 3),
        "not replaced before the next snapshot boundary"
    );
}

/// Appends one event to tally `id` as a writer of another build would.
async fn append_as_another_build(
    store: &PgEventStore,
    id: &str,
    event_type: &str,
    event_version: &str,
    payload: serde_json::Value,
) {
    test_support::append_as_another_build(
        store.pool(),
        Tally::TYPE,
        id,
        event_type,
        event_version,
        payload,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_event_of_a_type_or_version_this_build_does_not_know_is_not_understood_and_named() {
    let store = open_store(0).await;
    let tallies = store.aggregate_store::<Tally>(vec![]);
    let cqrs = CqrsFramework::new(tallies.clone(), vec![], ());
    let newer_writes = [
        ("Subtracted", "1.0", serde_json::json!({"Subtracted": 2})),
        // A newer version of a known event: read as 1.0 it would lose what 1.1 added.
        ("Added", "1.1", serde_json::json!({"Added": 2})),
        ("Added", "next", serde_json::json!({"Added": 2})),
    ];
    for (index, (event_type, event_version, payload)) in newer_writes.into_iter().enumerate() {
        let id = format!("t-newer-{index}");
        cqrs.execute(&id, TallyCommand::Add(vec![1])).await.unwrap();
        append_as_another_build(&store, &id, event_type, event_version, payload).await;

        let refused = tallies
            .load(&id)
            .await
            .expect_err("not read as something else");
        match &refused {
            StoreError::EventNotUnderstood(unread) => assert_eq!(
                (
                    unread.event_type.as_str(),
                    unread.event_version.as_str(),
                    unread.sequence
                ),
                (event_type, event_version, 2),
                "{refused}"
            ),
            other => panic!("{event_type} v{event_version}: {other:?}"),
        }
        assert!(!refused.is_transient(), "{refused}");
        let stored = store.read_aggregate_after("tally", &id, 1).await.unwrap();
        assert!(
            matches!(
                tallies.decode(&stored[0]),
                Err(StoreError::EventNotUnderstood(_))
            ),
            "a reader of the log decodes as a load does"
        );
    }
}

#[tokio::test]
async fn an_older_event_version_is_read_through_the_stores_upcasters() {
    let store = open_store(0).await;
    // Version 0.9 of Added was `{"Plus": n}`.
    let upcast = |payload: serde_json::Value| serde_json::json!({"Added": payload["Plus"]});
    let tallies = store.aggregate_store::<Tally>(vec![Box::new(
        cqrs_es::persist::SemanticVersionEventUpcaster::new("Added", "1.0", Box::new(upcast)),
    )]);
    append_as_another_build(
        &store,
        "t-old",
        "Added",
        "0.9",
        serde_json::json!({"Plus": 4}),
    )
    .await;

    assert_eq!(
        tallies.load("t-old").await.unwrap().state().history,
        vec![4]
    );
    let stored = store
        .read_aggregate_after("tally", "t-old", 0)
        .await
        .unwrap();
    assert_eq!(
        tallies.decode(&stored[0]).unwrap().payload,
        TallyEvent::Added(4)
    );
}
