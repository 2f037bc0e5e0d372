//! Micro-batched loads (`Projection::flush_policy`) against kinesalite, dynalite and moto SQS:
//! what a consumer has read waits until enough commits wait or the oldest has waited long
//! enough, is applied in one call and only then checkpointed; a crash between flushes reads the
//! waiting records again, and a graceful stop applies them first.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod runtime_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use commit_log::projection::FlushPolicy;
use kinesis_consumer::Checkpoint;
use runtime_support::{complete, eventually, rounds, start, Fixture, Recorder};

const WAIT: Duration = Duration::from_secs(60);
/// Long enough for several GetRecords calls (the fixture polls every few hundred ms).
const SEVERAL_POLLS: Duration = Duration::from_secs(3);
const NEVER: Duration = Duration::from_secs(3600);

fn aggregates(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_waits_for_its_size_then_applies_everything_waiting_in_one_call() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    recorder.flush_by(FlushPolicy {
        max_commits: 50,
        max_wait: NEVER,
    });
    let ids = aggregates("size", 10);
    let (task, stop) = start(&fixture, "sized", &fixture.leases_table, recorder.clone());
    fixture.put(rounds(&fixture, &ids, 1..=3)).await;
    tokio::time::sleep(SEVERAL_POLLS).await;
    assert_eq!(
        recorder.count(),
        0,
        "30 of 50 commits waiting: no flush yet"
    );
    let leases = fixture.leases(&fixture.leases_table).await;
    assert!(
        leases
            .iter()
            .all(|l| l.checkpoint == Checkpoint::TrimHorizon),
        "nothing waiting is checkpointed: {leases:?}"
    );

    fixture.put(rounds(&fixture, &ids, 4..=5)).await;
    eventually("the 50th commit flushes all 50", WAIT, || async {
        complete(&recorder.view(), &ids, 5)
    })
    .await;
    assert_eq!(recorder.batches(), [50], "one apply of everything waiting");

    // A graceful stop applies and checkpoints what waits, below the size.
    fixture.put(rounds(&fixture, &ids, 6..=6)).await;
    tokio::time::sleep(SEVERAL_POLLS).await;
    assert!(complete(&recorder.view(), &ids, 5) && recorder.count() == 50);
    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(complete(&recorder.view(), &ids, 6), "{:?}", recorder.view());
    assert_eq!(recorder.batches(), [50, 10]);
    for lease in fixture.leases(&fixture.leases_table).await {
        assert_eq!(lease.owner, None, "{lease:?}");
        assert!(
            matches!(lease.checkpoint, Checkpoint::After(_)),
            "{lease:?}"
        );
    }
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_comes_once_the_oldest_commit_has_waited_its_interval() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    let interval = Duration::from_secs(4);
    recorder.flush_by(FlushPolicy {
        max_commits: 10_000,
        max_wait: interval,
    });
    let ids = aggregates("interval", 8);
    let (task, stop) = start(&fixture, "timed", &fixture.leases_table, recorder.clone());
    // The consumer is reading (its lease is taken) before the records go in.
    eventually("the lease is taken", WAIT, || async {
        fixture
            .leases(&fixture.leases_table)
            .await
            .iter()
            .any(|l| l.owner.is_some())
    })
    .await;
    let put_at = Instant::now();
    fixture.put(rounds(&fixture, &ids, 1..=2)).await;
    eventually("the interval flushes the 16 commits", WAIT, || async {
        complete(&recorder.view(), &ids, 2)
    })
    .await;
    let waited = put_at.elapsed();
    assert!(
        waited >= interval,
        "applied after {waited:?}, before the {interval:?} interval"
    );
    assert_eq!(recorder.batches(), [16]);
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_flushes_reads_the_waiting_commits_again_and_applies_each_once() {
    let fixture = Fixture::new(2).await;
    let ids = aggregates("crash", 12);
    let recorder = Recorder::new("recorder");
    recorder.flush_by(FlushPolicy {
        max_commits: 30,
        max_wait: NEVER,
    });
    // 36 commits over two shards: each shard flushes once it holds 30, the rest waits.
    fixture.put(rounds(&fixture, &ids, 1..=3)).await;
    let (task, _stop) = start(&fixture, "doomed", &fixture.leases_table, recorder.clone());
    tokio::time::sleep(SEVERAL_POLLS * 2).await;
    let applied_before_crash = recorder.count();
    task.abort();
    let _ = task.await;
    assert!(
        applied_before_crash < 36,
        "a flush below the size ran: {:?}",
        recorder.batches()
    );

    // The successor applies every read (the default policy): it finds the dead worker's
    // checkpoints, reads what waited again and applies each commit once, in order.
    recorder.flush_by(FlushPolicy::EVERY_READ);
    let (task, stop) = start(
        &fixture,
        "successor",
        &fixture.leases_table,
        recorder.clone(),
    );
    eventually("the successor applies everything", WAIT, || async {
        complete(&recorder.view(), &ids, 3)
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(recorder.count(), 36);
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    fixture.tear_down().await;
}
