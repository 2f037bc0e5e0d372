//! Edges of the projector runtime against kinesalite, dynalite and moto SQS: a parent shard the
//! stream no longer lists, and `/health` when the lease table goes away.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod runtime_support;

use std::sync::Arc;
use std::time::Duration;

use projectors::projection::Projection;
use projectors::runtime::kinesis::ShardInfo;
use projectors::runtime::{Checkpoint, Worker};
use runtime_support::{complete, eventually, rounds, start, Fixture, Recorder};
use service_kit::admin;
use test_support::http::request;

const WAIT: Duration = Duration::from_secs(30);

/// A closed parent shard is trimmed from the stream once its records pass the retention period
/// (ListShards stops listing it, GetShardIterator answers ResourceNotFound), possibly before a
/// consumer group read it to its end: its lease stays, not at SHARD_END. Nothing of it is left to
/// read, so it must count as ended and its child must be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_whose_parent_was_trimmed_before_it_was_read_to_its_end_is_read() {
    let fixture = Fixture::new(1).await;
    let recorder = Recorder::new("recorder");
    let listed = fixture
        .kinesis
        .list_shards()
        .stream_name(&fixture.stream)
        .send()
        .await
        .unwrap();
    let child = listed.shards()[0].shard_id().to_owned();
    // The group's leases as they stood when the parent was still listed: the parent's never
    // reached SHARD_END, the child's waits for it.
    let trimmed = "shardId-000000000099".to_owned();
    let leases = fixture.lease_table(&fixture.leases_table);
    for shard in [
        ShardInfo {
            shard_id: trimmed.clone(),
            parent_shard_ids: Vec::new(),
        },
        ShardInfo {
            shard_id: child.clone(),
            parent_shard_ids: vec![trimmed.clone()],
        },
    ] {
        assert!(leases.create_if_absent("recorder", &shard).await.unwrap());
    }
    let ids: Vec<String> = (0..6).map(|i| format!("trim-{i}")).collect();
    fixture.put(rounds(&fixture, &ids, 1..=3)).await;

    let (task, stop) = start(&fixture, "only", &fixture.leases_table, recorder.clone());
    eventually("the child shard is read", WAIT, || async {
        complete(&recorder.view(), &ids, 3)
    })
    .await;
    let leases = fixture.leases(&fixture.leases_table).await;
    let parent = leases.iter().find(|l| l.shard_id == trimmed).unwrap();
    assert_eq!(parent.checkpoint, Checkpoint::ShardEnd, "{parent:?}");
    stop.send(()).unwrap();
    task.await.unwrap();
    fixture.tear_down().await;
}

/// `/health` of a `projectors run` process: the worker's check behind the admin endpoint, as
/// the process wires them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_when_the_lease_table_cannot_be_read() {
    let fixture = Fixture::new(1).await;
    let worker = Worker::new(
        &fixture.sdk,
        fixture.worker_config("watched", &fixture.leases_table),
        vec![Recorder::new("recorder") as Arc<dyn Projection>],
    );
    let listener = admin::bind("127.0.0.1", 0).await.unwrap();
    let health = format!("http://{}/health", listener.local_addr().unwrap());
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(admin::serve(listener, worker.health(), async {
        let _ = admin_stopped.await;
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let status = || async { request("GET", &health, None, None).await.status };

    eventually("a healthy worker", WAIT, || async { status().await == 200 }).await;
    fixture
        .dynamodb
        .delete_table()
        .table_name(&fixture.leases_table)
        .send()
        .await
        .unwrap();
    // Three lease durations without reading the table: a lease it holds may be expiring.
    eventually("/health reports the lost lease table", WAIT, || async {
        status().await == 503
    })
    .await;

    stop.send(()).unwrap();
    running.await.unwrap();
    stop_admin.send(()).unwrap();
    admin.await.unwrap().unwrap();
    fixture.tear_down().await;
}
