//! The projector runtime against kinesalite, dynalite and moto SQS, with fresh resources per
//! test: crash and restart, two workers sharing shards, a shard split while records flow, and
//! poison records with parking and redrive.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod runtime_support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use commit_log::projection::Projection;
use commit_log::Vocabulary;
use kinesis_consumer::{redrive, redrive_all, Checkpoint, ParkedKind, Worker};
use runtime_support::{
    complete, eventually, rounds, start, Fixture, Recorder, LEASE_DURATION, TYPE,
};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);

fn aggregates(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn owners(leases: &[kinesis_consumer::Lease]) -> BTreeMap<String, usize> {
    let mut owners = BTreeMap::new();
    for lease in leases
        .iter()
        .filter(|l| l.checkpoint != Checkpoint::ShardEnd)
    {
        *owners
            .entry(lease.owner.clone().unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_batch_and_a_restart_leave_the_view_as_a_clean_run_does() {
    let mut fixture = Fixture::new(2).await;
    let ids = aggregates("crash", 20);
    fixture.put(rounds(&fixture, &ids, 1..=10)).await;

    // The crashing run: the worker dies inside a batch, after part of it was applied.
    let crashed = Recorder::new("recorder");
    crashed.hang_after(Some(37));
    let (task, _stop) = start(&fixture, "doomed", &fixture.leases_table, crashed.clone());
    tokio::time::timeout(WAIT, crashed.hanging.notified())
        .await
        .expect("the projection applied part of a batch");
    task.abort();
    let _ = task.await;
    // The other shard's consumer may have applied a few more on its own thread meanwhile.
    let at_crash = crashed.count();
    assert!((37..200).contains(&at_crash), "{at_crash} of 200 applied");
    crashed.hang_after(None);
    let checkpoints_after_crash = fixture.leases(&fixture.leases_table).await;
    assert!(
        checkpoints_after_crash
            .iter()
            .all(|l| l.owner.as_deref() == Some("doomed")),
        "a crash releases nothing: {checkpoints_after_crash:?}"
    );

    // A new worker takes the dead worker's leases once they expire and finishes the job.
    let (task, stop) = start(
        &fixture,
        "successor",
        &fixture.leases_table,
        crashed.clone(),
    );
    eventually("the successor applies everything", WAIT, || async {
        complete(&crashed.view(), &ids, 10)
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap();

    // A clean run of the same log, as its own consumer group.
    let clean = Recorder::new("recorder");
    let clean_leases = fixture.another_lease_table().await;
    let (task, stop) = start(&fixture, "clean", &clean_leases, clean.clone());
    eventually("the clean run applies everything", WAIT, || async {
        complete(&clean.view(), &ids, 10)
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap();

    assert_eq!(crashed.view(), clean.view());
    assert_eq!(crashed.gaps.load(Ordering::SeqCst), 0);
    // A graceful stop leaves every lease released with its checkpoint.
    for lease in fixture.leases(&clean_leases).await {
        assert_eq!(lease.owner, None, "{lease:?}");
        assert!(
            matches!(lease.checkpoint, Checkpoint::After(_)),
            "{lease:?}"
        );
    }
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_shards_and_one_takes_over_when_the_other_dies() {
    let fixture = Fixture::new(4).await;
    let ids = aggregates("share", 16);
    fixture.put(rounds(&fixture, &ids, 1..=5)).await;
    let recorder = Recorder::new("recorder");

    let (first, first_stop) = start(&fixture, "first", &fixture.leases_table, recorder.clone());
    eventually("the first worker holds all four shards", WAIT, || async {
        owners(&fixture.leases(&fixture.leases_table).await).get("first") == Some(&4)
    })
    .await;

    let (second, _second_stop) = start(&fixture, "second", &fixture.leases_table, recorder.clone());
    eventually("the workers split the shards evenly", WAIT, || async {
        let owners = owners(&fixture.leases(&fixture.leases_table).await);
        owners.get("first") == Some(&2) && owners.get("second") == Some(&2)
    })
    .await;
    fixture.put(rounds(&fixture, &ids, 6..=10)).await;
    eventually("both apply the new records", WAIT, || async {
        complete(&recorder.view(), &ids, 10)
    })
    .await;

    // The second worker dies without releasing anything: its leases expire and move.
    second.abort();
    let _ = second.await;
    let died = tokio::time::Instant::now();
    eventually("the first worker takes every shard back", WAIT, || async {
        owners(&fixture.leases(&fixture.leases_table).await).get("first") == Some(&4)
    })
    .await;
    let takeover = died.elapsed();
    // The bound follows from the lease settings, not from this machine's speed. The dead
    // worker's last renewal (at most when it died) is first seen at the survivor's next take
    // round (every half lease duration); the lease is expired once its counter has stood still
    // for a lease duration as the survivor measures it, from that round's answer, so the round
    // that finds it expired may be the one after the one a lease duration later (the lease
    // table's answers take a little time each round). Slack: another half lease duration for
    // the lease table's calls and this test's polling.
    let take_interval = LEASE_DURATION / 2;
    let slack = LEASE_DURATION / 2;
    let bound = take_interval + LEASE_DURATION + take_interval + slack;
    println!("takeover after {takeover:?} (lease duration {LEASE_DURATION:?}, bound {bound:?})");
    assert!(
        takeover <= bound,
        "the leases moved {takeover:?} after the owner died; the lease settings bound it to {bound:?}"
    );
    fixture.put(rounds(&fixture, &ids, 11..=12)).await;
    eventually("nothing is lost after the takeover", WAIT, || async {
        complete(&recorder.view(), &ids, 12)
    })
    .await;
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    first_stop.send(()).unwrap();
    first.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_split_while_records_flow_loses_and_reorders_nothing() {
    let fixture = Fixture::new(1).await;
    let ids = aggregates("split", 40);
    let recorder = Recorder::new("recorder");
    let (task, stop) = start(&fixture, "only", &fixture.leases_table, recorder.clone());
    let parent = fixture.leases(&fixture.leases_table).await;
    let parent_shard = match parent.first() {
        Some(lease) => lease.shard_id.clone(),
        None => {
            eventually("the shard's lease", WAIT, || async {
                !fixture.leases(&fixture.leases_table).await.is_empty()
            })
            .await;
            fixture.leases(&fixture.leases_table).await[0]
                .shard_id
                .clone()
        }
    };

    const ROUNDS: i64 = 30;
    for sequence in 1..=ROUNDS {
        fixture
            .put(rounds(&fixture, &ids, sequence..=sequence))
            .await;
        if sequence == 10 {
            fixture
                .kinesis
                .split_shard()
                .stream_name(&fixture.stream)
                .shard_to_split(&parent_shard)
                // The middle of the 128-bit hash key range.
                .new_starting_hash_key("170141183460469231731687303715884105728")
                .send()
                .await
                .expect("split shard");
            fixture.wait_stream_active().await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    eventually("every commit applied", WAIT, || async {
        complete(&recorder.view(), &ids, ROUNDS as u64)
    })
    .await;
    assert_eq!(
        recorder.gaps.load(Ordering::SeqCst),
        0,
        "a child was read before its parent ended"
    );
    let leases = fixture.leases(&fixture.leases_table).await;
    assert_eq!(leases.len(), 3, "{leases:?}");
    let parent = leases.iter().find(|l| l.shard_id == parent_shard).unwrap();
    assert_eq!(parent.checkpoint, Checkpoint::ShardEnd);
    for child in leases.iter().filter(|l| l.shard_id != parent_shard) {
        assert_eq!(child.parent_shard_ids, vec![parent_shard.clone()]);
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_its_aggregate_parked_and_redriven_once_fixed() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    recorder.break_on("sick", 2);
    let ids = vec!["sick".to_owned(), "healthy".to_owned()];
    let mut records = rounds(&fixture, &ids, 1..=2);
    records.push(("junk".to_owned(), b"\xff\xfe not a commit".to_vec()));
    records.extend(rounds(&fixture, &ids, 3..=4));
    fixture.put(records).await;

    let (task, stop) = start(&fixture, "only", &fixture.leases_table, recorder.clone());
    eventually("the healthy aggregate proceeds", WAIT, || async {
        recorder.view().get("healthy") == Some(&vec![1, 2, 3, 4])
    })
    .await;
    assert_eq!(recorder.view().get("sick"), Some(&vec![1]));

    let letters = fixture.dead_letters(2).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let sick = letters
        .iter()
        .find(|l| l["aggregate_id"] == "sick")
        .expect("the poison commit's dead letter");
    assert!(sick["reason"]
        .as_str()
        .unwrap()
        .contains("broken on purpose"));
    assert_eq!(sick["projection"], "recorder");
    assert_eq!(sick["aggregate_type"], TYPE);
    assert_eq!(sick["sequence_range"], serde_json::json!([2, 2]));
    assert!(sick["sequence_number"]
        .as_str()
        .unwrap()
        .chars()
        .all(|c| c.is_ascii_digit()));
    assert!(!sick["record_base64"].as_str().unwrap().is_empty());
    let junk = letters
        .iter()
        .find(|l| l["partition_key"] == "junk")
        .expect("the junk");
    assert!(junk["reason"]
        .as_str()
        .unwrap()
        .starts_with("undecodable record"));
    assert!(junk["aggregate_id"].is_null());

    let parked = fixture.parked();
    let waiting = parked.list("recorder", TYPE, "sick").await.unwrap();
    assert_eq!(
        waiting.len(),
        3,
        "the poison commit and the two after it: {waiting:?}"
    );
    assert!(waiting.windows(2).all(|w| w[0].position < w[1].position));

    // A later commit of the parked aggregate is parked too; the other aggregate goes on.
    fixture.put(rounds(&fixture, &ids, 5..=5)).await;
    eventually("the healthy aggregate's next commit", WAIT, || async {
        recorder.view().get("healthy").map(Vec::len) == Some(5)
    })
    .await;
    eventually(
        "the sick aggregate's next commit is parked",
        WAIT,
        || async { parked.list("recorder", TYPE, "sick").await.unwrap().len() == 4 },
    )
    .await;
    assert_eq!(recorder.view().get("sick"), Some(&vec![1]));

    // The operator redrives once the projection is fixed... and before that it stops at once.
    let early = redrive(recorder.as_ref(), &parked, TYPE, "sick")
        .await
        .unwrap();
    assert_eq!((early.applied, early.remaining), (0, 4));
    assert!(early.stopped_at.is_some());
    recorder.fix();
    // `projectors redrive --projection recorder` without --aggregate: every parked aggregate.
    let outcomes = redrive_all(recorder.as_ref(), &parked).await.unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let (kind, id, outcome) = &outcomes[0];
    assert_eq!((kind.as_str(), id.as_str()), (TYPE, "sick"));
    assert_eq!((outcome.applied, outcome.stopped_at.clone()), (4, None));
    assert_eq!(recorder.view().get("sick"), Some(&vec![1, 2, 3, 4, 5]));
    assert!(parked
        .list("recorder", TYPE, "sick")
        .await
        .unwrap()
        .is_empty());

    // With nothing parked any more, its next commit is applied straight away.
    fixture.put(rounds(&fixture, &ids, 6..=6)).await;
    eventually("the redriven aggregate is live again", WAIT, || async {
        complete(&recorder.view(), &ids, 6)
    })
    .await;
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_down_longer_than_every_retry_parks_nothing_and_the_shard_resumes_when_it_is_back(
) {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    recorder.unreachable_for("flaky");
    let ids = vec!["flaky".to_owned(), "steady".to_owned()];
    fixture.put(rounds(&fixture, &ids, 1..=3)).await;

    let (task, stop) = start(&fixture, "only", &fixture.leases_table, recorder.clone());
    // Far more tries than max_apply_attempts (3): the batch is retried, never given up on.
    eventually("the batch is tried again and again", WAIT, || async {
        recorder.transient_failures.load(Ordering::SeqCst) >= 6
    })
    .await;
    let parked = fixture.parked();
    assert!(
        parked
            .list("recorder", TYPE, "flaky")
            .await
            .unwrap()
            .is_empty(),
        "a transient failure parks nothing"
    );
    assert!(parked
        .list("recorder", TYPE, "steady")
        .await
        .unwrap()
        .is_empty());
    let letters = fixture.dead_letters_within(Duration::from_secs(2)).await;
    assert!(letters.is_empty(), "nothing is dead-lettered: {letters:?}");
    // The lease is still this worker's while it waits for the dependency.
    let leases = fixture.leases(&fixture.leases_table).await;
    assert!(
        leases.iter().all(|l| l.owner.as_deref() == Some("only")),
        "{leases:?}"
    );

    // The store is back: everything is applied, in order, with no redrive.
    recorder.fix();
    eventually("the shard resumes by itself", WAIT, || async {
        complete(&recorder.view(), &ids, 3)
    })
    .await;
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_a_whole_parks_exactly_the_commit_that_fails() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    // The store refuses any batch holding "bad" sequence 2, and keeps nothing of it.
    recorder.refuse_batches_with("bad", 2);
    let ids = vec!["good".to_owned(), "bad".to_owned(), "other".to_owned()];
    fixture.put(rounds(&fixture, &ids, 1..=3)).await;

    let (task, stop) = start(&fixture, "only", &fixture.leases_table, recorder.clone());
    eventually("every other aggregate is applied", WAIT, || async {
        let view = recorder.view();
        view.get("good") == Some(&vec![1, 2, 3]) && view.get("other") == Some(&vec![1, 2, 3])
    })
    .await;
    assert_eq!(recorder.view().get("bad"), Some(&vec![1]));
    let parked = fixture.parked();
    let waiting = parked.list("recorder", TYPE, "bad").await.unwrap();
    assert_eq!(
        waiting
            .iter()
            .map(|r| (r.kind, r.reason.contains("on purpose")))
            .collect::<Vec<_>>(),
        vec![(ParkedKind::Poison, true), (ParkedKind::Behind, false)],
        "exactly the refused commit, then its successor: {waiting:?}"
    );
    let letters = fixture.dead_letters(1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["aggregate_id"], "bad");
    assert_eq!(letters[0]["sequence_range"], serde_json::json!([2, 2]));

    recorder.fix();
    let outcome = redrive(recorder.as_ref(), &parked, TYPE, "bad")
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.stopped_at), (2, None));
    assert!(complete(&recorder.view(), &ids, 3));
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

/// A menu event with a type no build of this project has (yet).
fn retired(fixture: &Fixture, id: &str, sequence: i64) -> (String, Vec<u8>) {
    (
        id.to_owned(),
        fixture.commit_of(
            id,
            sequence,
            "MenuItemRetired",
            serde_json::json!({"MenuItemRetired": {"sku": "LATTE-12"}}),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_this_build_does_not_know_stops_its_aggregate_and_is_never_dead_lettered() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    let ids = vec!["ahead".to_owned(), "usual".to_owned()];
    let mut records = rounds(&fixture, &ids, 1..=2);
    records.push(retired(&fixture, "ahead", 3));
    records.push(("usual".to_owned(), fixture.commit("usual", 3)));
    records.extend(rounds(&fixture, &ids, 4..=5));
    fixture.put(records).await;

    let (task, stop) = start(&fixture, "only", &fixture.leases_table, recorder.clone());
    eventually("the other aggregate goes on", WAIT, || async {
        recorder.view().get("usual") == Some(&vec![1, 2, 3, 4, 5])
    })
    .await;
    let parked = fixture.parked();
    eventually(
        "the unknown commit and its successors are parked",
        WAIT,
        || async { parked.list("recorder", TYPE, "ahead").await.unwrap().len() == 3 },
    )
    .await;
    assert_eq!(recorder.view().get("ahead"), Some(&vec![1, 2]));
    let waiting = parked.list("recorder", TYPE, "ahead").await.unwrap();
    assert!(
        waiting[0]
            .reason
            .starts_with("not understood by this build: event MenuItemRetired v1.0"),
        "{waiting:?}"
    );
    assert!(waiting.windows(2).all(|w| w[0].position < w[1].position));
    assert!(!waiting[0].data.is_empty(), "the raw record is kept");
    assert_eq!(waiting[0].sequence_range, (3, 3), "with its header");
    assert_eq!(waiting[0].last_position, waiting[0].position);
    let letters = fixture.dead_letters_within(Duration::from_secs(2)).await;
    assert!(letters.is_empty(), "never dead-lettered: {letters:?}");

    // A redrive by this build cannot pass it either.
    let early = redrive(recorder.as_ref(), &parked, TYPE, "ahead")
        .await
        .unwrap();
    assert_eq!((early.applied, early.remaining), (0, 3));
    assert_eq!(recorder.view().get("ahead"), Some(&vec![1, 2]));
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_upgrade_a_restart_or_a_redrive_applies_the_stopped_aggregates_in_order() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    // MenuItemPriceChanged is what the command API shipped before the consumers learnt it.
    let new_event = |id: &str, sequence: i64| {
        (
            id.to_owned(),
            fixture.commit_of(
                id,
                sequence,
                "MenuItemPriceChanged",
                serde_json::json!({"MenuItemPriceChanged": {"sku": "LATTE-12", "price": 350}}),
            ),
        )
    };
    let ids = vec![
        "by-restart".to_owned(),
        "by-redrive".to_owned(),
        "steady".to_owned(),
    ];
    let mut records = rounds(&fixture, &ids, 1..=2);
    records.push(new_event("by-restart", 3));
    records.push(new_event("by-redrive", 3));
    records.push(("steady".to_owned(), fixture.commit("steady", 3)));
    records.extend(rounds(&fixture, &ids, 4..=5));
    fixture.put(records).await;

    let older = Vocabulary::this_build()
        .clone()
        .without_event(TYPE, "MenuItemPriceChanged");
    let old_build = Worker::new(
        &fixture.sdk,
        fixture.worker_config("old-build", &fixture.leases_table),
        vec![recorder.clone() as Arc<dyn Projection>],
    )
    .with_vocabulary(older);
    let (stop_old, stopped) = oneshot::channel::<()>();
    let old_task = tokio::spawn(old_build.run(async {
        let _ = stopped.await;
    }));
    let parked = fixture.parked();
    eventually("the old build stops both aggregates", WAIT, || async {
        recorder.view().get("steady") == Some(&vec![1, 2, 3, 4, 5])
            && parked
                .list("recorder", TYPE, "by-restart")
                .await
                .unwrap()
                .len()
                == 3
            && parked
                .list("recorder", TYPE, "by-redrive")
                .await
                .unwrap()
                .len()
                == 3
    })
    .await;
    let heads: Vec<ParkedKind> = parked
        .list("recorder", TYPE, "by-restart")
        .await
        .unwrap()
        .iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        heads,
        [
            ParkedKind::NotUnderstood,
            ParkedKind::Behind,
            ParkedKind::Behind
        ]
    );
    // Its own resume passes (every 500 ms here) leave them alone: it still does not know.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(recorder.view().get("by-restart"), Some(&vec![1, 2]));
    assert_eq!(recorder.view().get("by-redrive"), Some(&vec![1, 2]));
    stop_old.send(()).unwrap();
    old_task.await.unwrap();

    // The upgrade: an operator's redrive with the new build applies one aggregate...
    let outcome = redrive(recorder.as_ref(), &parked, TYPE, "by-redrive")
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.stopped_at), (3, None));
    assert_eq!(
        recorder.view().get("by-redrive"),
        Some(&vec![1, 2, 3, 4, 5])
    );

    // ...and the new build's worker resumes the other on its own when it starts.
    let (task, stop) = start(
        &fixture,
        "new-build",
        &fixture.leases_table,
        recorder.clone(),
    );
    eventually(
        "the restart resumes the stopped aggregate",
        WAIT,
        || async {
            recorder.view().get("by-restart") == Some(&vec![1, 2, 3, 4, 5])
                && parked
                    .list("recorder", TYPE, "by-restart")
                    .await
                    .unwrap()
                    .is_empty()
        },
    )
    .await;
    fixture.put(rounds(&fixture, &ids, 6..=6)).await;
    eventually("every aggregate is live again", WAIT, || async {
        complete(&recorder.view(), &ids, 6)
    })
    .await;
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    assert!(fixture
        .dead_letters_within(Duration::from_secs(1))
        .await
        .is_empty());
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_reads_each_shard_once_for_all_its_projections() {
    let fixture = Fixture::new(1).await;
    let ids = aggregates("fan", 20);
    // 300 records: 12 pages of 25.
    fixture.put(rounds(&fixture, &ids, 1..=15)).await;
    let first = Recorder::new("first");
    let second = Recorder::new("second");
    let third = Recorder::new("third");
    let worker = Worker::new(
        &fixture.sdk,
        fixture.worker_config("fan-out", &fixture.leases_table),
        vec![
            first.clone() as Arc<dyn Projection>,
            second.clone() as Arc<dyn Projection>,
            third.clone() as Arc<dyn Projection>,
        ],
    );
    let calls = worker.get_records_calls();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    eventually("every projection applies the whole shard", WAIT, || async {
        [&first, &second, &third]
            .iter()
            .all(|recorder| complete(&recorder.view(), &ids, 15))
    })
    .await;
    let used = calls.get();
    // One reader: 12 pages once, plus the empty answers at the tip while the test looks. Three
    // groups reading on their own would need 36 calls for the pages alone.
    println!("{used} GetRecords calls for 12 pages and three projections");
    assert!(used < 24, "{used} calls: the shard was read more than once");

    // Idle at the tip: at most one call per poll interval (200 ms here) for all three.
    let before = calls.get();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = calls.get() - before;
    assert!(idle <= 11, "{idle} calls in 2 s at 200 ms");
    for recorder in [&first, &second, &third] {
        assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_stalled_on_its_store_holds_no_other_back_and_catches_up_behind_the_shared_reader(
) {
    let fixture = Fixture::new(1).await;
    let ids = aggregates("lag", 20);
    let fast = Recorder::new("fast");
    let stalled = Recorder::new("stalled");
    stalled.unreachable_for("lag-0");
    let worker = Worker::new(
        &fixture.sdk,
        fixture.worker_config("two-paces", &fixture.leases_table),
        vec![
            fast.clone() as Arc<dyn Projection>,
            stalled.clone() as Arc<dyn Projection>,
        ],
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    // 400 records: twice what the reader keeps (8 pages of 25), so the stalled projection
    // must read behind it on its own when its store is back.
    for round in 1..=20 {
        fixture.put(rounds(&fixture, &ids, round..=round)).await;
    }
    eventually("the fast projection applies everything", WAIT, || async {
        complete(&fast.view(), &ids, 20)
    })
    .await;
    assert!(
        stalled.count() < 20,
        "the stalled one is still at its first batch"
    );
    stalled.fix();
    eventually("the stalled projection catches up", WAIT, || async {
        complete(&stalled.view(), &ids, 20)
    })
    .await;
    assert_eq!(fast.gaps.load(Ordering::SeqCst), 0);
    assert_eq!(stalled.gaps.load(Ordering::SeqCst), 0);
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_build_that_understands_a_commit_but_cannot_apply_it_marks_it_poison() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    let ids = vec!["refused".to_owned()];
    let mut records = rounds(&fixture, &ids, 1..=1);
    records.push((
        "refused".to_owned(),
        fixture.commit_of(
            "refused",
            2,
            "MenuItemPriceChanged",
            serde_json::json!({"MenuItemPriceChanged": {"sku": "LATTE-12", "price": 350}}),
        ),
    ));
    records.extend(rounds(&fixture, &ids, 3..=3));
    fixture.put(records).await;
    let parked = fixture.parked();
    let older = Vocabulary::this_build()
        .clone()
        .without_event(TYPE, "MenuItemPriceChanged");
    let old_build = Worker::new(
        &fixture.sdk,
        fixture.worker_config("old-build", &fixture.leases_table),
        vec![recorder.clone() as Arc<dyn Projection>],
    )
    .with_vocabulary(older);
    let (stop_old, stopped) = oneshot::channel::<()>();
    let old_task = tokio::spawn(old_build.run(async {
        let _ = stopped.await;
    }));
    eventually(
        "the old build parks the commit it does not know",
        WAIT,
        || async {
            parked
                .list("recorder", TYPE, "refused")
                .await
                .unwrap()
                .len()
                == 2
        },
    )
    .await;
    stop_old.send(()).unwrap();
    old_task.await.unwrap();

    // The new build knows the event, but the view refuses it: it becomes the operator's.
    recorder.break_on("refused", 2);
    let (task, stop) = start(
        &fixture,
        "new-build",
        &fixture.leases_table,
        recorder.clone(),
    );
    eventually("the resume pass marks it poison", WAIT, || async {
        parked
            .list("recorder", TYPE, "refused")
            .await
            .unwrap()
            .first()
            .is_some_and(|head| head.kind == ParkedKind::Poison)
    })
    .await;
    let head = &parked.list("recorder", TYPE, "refused").await.unwrap()[0];
    assert!(head.reason.contains("broken on purpose"), "{head:?}");
    assert_eq!(recorder.view().get("refused"), Some(&vec![1]));

    recorder.fix();
    let outcome = redrive(recorder.as_ref(), &parked, TYPE, "refused")
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.stopped_at), (2, None));
    assert_eq!(recorder.view().get("refused"), Some(&vec![1, 2, 3]));
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}
