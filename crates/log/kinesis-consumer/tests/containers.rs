//! Records that carry several commits (the relay's containers) against kinesalite, dynalite and
//! moto SQS: every commit of a container is applied in order, a poison commit inside one is
//! handled as a poison commit is alone (its neighbours applied), and a container version this
//! build does not know stops its shard instead of being skipped or parked.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod runtime_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use commit_log::Container;
use kinesis_consumer::redrive;
use runtime_support::{complete, eventually, start, Fixture, Recorder, TYPE};

const WAIT: Duration = Duration::from_secs(60);

/// One container per round of sequences, holding that round's commit of every aggregate (as
/// the relay packs one shard's commits), keyed by the first aggregate.
fn packed_rounds(
    fixture: &Fixture,
    aggregates: &[&str],
    sequences: std::ops::RangeInclusive<i64>,
) -> Vec<(String, Vec<u8>)> {
    sequences
        .map(|sequence| {
            let mut container = Container::new();
            for id in aggregates {
                container.push(fixture.commit(id, sequence));
            }
            (aggregates[0].to_owned(), container.into_record())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_commits_are_applied_in_order_and_a_poison_one_among_them_alone_is_parked() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    recorder.break_on("sick", 2);
    let ids = ["healthy", "sick", "other"];
    let mut records = packed_rounds(&fixture, &ids, 1..=3);
    // A single-commit record (what relays before containers wrote) between containers.
    records.push(("other".into(), fixture.commit("other", 4)));
    fixture.put(records).await;

    let (task, stop) = start(&fixture, "only", &fixture.leases_table, recorder.clone());
    eventually("the healthy aggregates proceed", WAIT, || async {
        let view = recorder.view();
        view.get("healthy") == Some(&vec![1, 2, 3]) && view.get("other") == Some(&vec![1, 2, 3, 4])
    })
    .await;
    assert_eq!(recorder.view().get("sick"), Some(&vec![1]));

    let letters = fixture.dead_letters(1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["aggregate_id"], "sick");
    assert_eq!(letters[0]["sequence_range"], serde_json::json!([2, 2]));
    let parked = fixture.parked();
    let waiting = parked.list("recorder", TYPE, "sick").await.unwrap();
    assert_eq!(waiting.len(), 2, "the poison commit and the one after it");

    // The parked commits are the commits themselves, not their containers: a redrive reads
    // them as it reads any parked commit.
    recorder.fix();
    let outcome = redrive(recorder.as_ref(), &parked, TYPE, "sick")
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.stopped_at), (2, None));
    assert!(complete(
        &recorder.view(),
        &["healthy".into(), "sick".into()],
        3
    ));
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_version_this_build_does_not_know_stops_the_shard_and_nothing_is_skipped() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    let mut records = packed_rounds(&fixture, &["a", "b"], 1..=1);
    let mut newer = packed_rounds(&fixture, &["a", "b"], 2..=2).remove(0);
    newer.1[3] = commit_log::container::CONTAINER_VERSION + 1;
    records.push(newer);
    records.extend(packed_rounds(&fixture, &["a", "b"], 3..=3));
    fixture.put(records).await;

    let (task, stop) = start(&fixture, "only", &fixture.leases_table, recorder.clone());
    eventually("the records before it are applied", WAIT, || async {
        recorder.count() == 2
    })
    .await;
    // Given the time to read on, it does not: not skipped, not parked, not dead-lettered.
    let letters = fixture.dead_letters_within(Duration::from_secs(4)).await;
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(recorder.view().get("a"), Some(&vec![1]));
    assert_eq!(recorder.view().get("b"), Some(&vec![1]));
    assert!(fixture
        .parked()
        .list("recorder", TYPE, "a")
        .await
        .unwrap()
        .is_empty());
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}
