//! Self-fencing: a worker whose lease renewals get no answer stops its consumers before
//! another worker may take their leases, so two workers never apply the same shard at once.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod runtime_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use commit_log::projection::{Projection, ProjectionError};
use commit_log::LoggedCommit;
use kinesis_consumer::{Checkpoint, Worker};
use runtime_support::{eventually, run, Fixture, LEASE_DURATION};
use test_support::CuttableProxy;
use tokio::sync::oneshot;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);

/// One call of a worker's projection: who, when, the commits' last sequences, and whether it
/// was refused (a write that failed is a write that was attempted).
#[derive(Debug, Clone)]
struct Call {
    worker: &'static str,
    at: Instant,
    sequences: Vec<u64>,
    refused: bool,
}

/// A view both workers write to, recording every call; a worker's calls can be made to fail
/// as if its view store were down (so its consumer keeps retrying the batch).
struct Journal {
    calls: Mutex<Vec<Call>>,
}

struct Writer {
    worker: &'static str,
    journal: Arc<Journal>,
    failing: AtomicBool,
}

#[async_trait]
impl Projection for Writer {
    fn name(&self) -> &'static str {
        "fenced"
    }

    async fn apply(&self, commits: &[LoggedCommit]) -> Result<(), ProjectionError> {
        let refused = self.failing.load(Ordering::SeqCst);
        self.journal.calls.lock().unwrap().push(Call {
            worker: self.worker,
            at: Instant::now(),
            sequences: commits.iter().map(LoggedCommit::last_sequence).collect(),
            refused,
        });
        if refused {
            Err(ProjectionError::Transient(
                "the view's store is slow".into(),
            ))
        } else {
            Ok(())
        }
    }
}

fn start(
    sdk: &aws_config::SdkConfig,
    fixture: &Fixture,
    writer: Arc<Writer>,
) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
    let mut config = fixture.worker_config(writer.worker, &fixture.leases_table);
    // Retries the failing batch for as long as it is allowed to.
    config.max_apply_attempts = 10_000;
    run(Worker::new(sdk, config, vec![writer]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_renewals_get_no_answer_stops_before_another_takes_its_lease() {
    let fixture = Fixture::new(1).await;
    let dynalite = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap();
    let upstream = dynalite
        .trim_start_matches("http://")
        .parse()
        .expect("dynalite on a numeric loopback address");
    let proxy = CuttableProxy::start(upstream).await;
    // The per-service variable wins over a config's endpoint: without it, each worker's
    // DynamoDB goes where its config says (Kinesis and SQS still follow their variables).
    std::env::remove_var("AWS_ENDPOINT_URL_DYNAMODB");
    let through_proxy = fixture
        .sdk
        .to_builder()
        .endpoint_url(format!("http://{}", proxy.address()))
        .build();
    let direct = fixture.sdk.to_builder().endpoint_url(&dynalite).build();

    let journal = Arc::new(Journal {
        calls: Mutex::new(Vec::new()),
    });
    let first = Arc::new(Writer {
        worker: "first",
        journal: journal.clone(),
        failing: AtomicBool::new(false),
    });
    let (first_task, first_stop) = start(&through_proxy, &fixture, first.clone());
    fixture
        .put(vec![("x".into(), fixture.commit("x", 1))])
        .await;
    eventually(
        "the first worker applies and checkpoints x@1",
        WAIT,
        || async {
            fixture
                .leases(&fixture.leases_table)
                .await
                .iter()
                .any(|l| matches!(l.checkpoint, Checkpoint::After(_)))
        },
    )
    .await;

    // The first worker's DynamoDB goes silent (its renewals never answer) while it is in the
    // middle of a batch its view keeps refusing: it retries that batch on and on.
    first.failing.store(true, Ordering::SeqCst);
    proxy.stall();
    let silenced = Instant::now();
    fixture
        .put(vec![("x".into(), fixture.commit("x", 2))])
        .await;
    eventually("the first worker tries x@2", WAIT, || async {
        journal
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.worker == "first" && c.sequences.contains(&2))
    })
    .await;

    let second = Arc::new(Writer {
        worker: "second",
        journal: journal.clone(),
        failing: AtomicBool::new(false),
    });
    let (second_task, second_stop) = start(&direct, &fixture, second);
    eventually(
        "the second worker takes the lease and applies x@2",
        WAIT,
        || async {
            journal
                .calls
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.worker == "second" && c.sequences.contains(&2))
        },
    )
    .await;
    // Long enough for the first worker's retries (backing off towards seconds) to show, if it
    // were still writing.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let calls = journal.calls.lock().unwrap().clone();
    let second_began = calls
        .iter()
        .filter(|c| c.worker == "second")
        .map(|c| c.at)
        .min()
        .unwrap();
    let first_ended = calls
        .iter()
        .filter(|c| c.worker == "first")
        .map(|c| c.at)
        .max()
        .unwrap();
    println!(
        "first worker's last write {:?} after the silence, second's first {:?} after it \
         (lease duration {LEASE_DURATION:?})",
        first_ended - silenced,
        second_began - silenced
    );
    assert!(
        first_ended < second_began,
        "two writers on one shard: the first worker wrote {:?} after the second began",
        first_ended - second_began
    );
    assert!(
        calls.iter().any(|c| c.worker == "first" && c.refused),
        "the first worker was not mid-batch: the test proves nothing"
    );

    second_stop.send(()).unwrap();
    second_task.await.unwrap();
    // The first worker still runs (its shutdown would wait on the silent table): restore it.
    proxy.restore();
    first_stop.send(()).unwrap();
    tokio::time::timeout(WAIT, first_task)
        .await
        .expect("the first worker shuts down once its table answers again")
        .unwrap();
    fixture.tear_down().await;
}
