//! Edges of the projector runtime against kinesalite, dynalite and moto SQS: a parent shard the
//! stream no longer lists, an expired shard iterator, and `/health` when the lease table goes
//! away.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod runtime_support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

use commit_log::projection::Projection;
use kinesis_consumer::kinesis::{self, ShardInfo};
use kinesis_consumer::{Checkpoint, Worker, WorkerConfig};
use runtime_support::{complete, eventually, rounds, run, start, Fixture, Recorder};
use service_kit::admin;
use test_support::http::request;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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
    let (running, stop) = run(worker);
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

/// An HTTP/1.1 relay in front of kinesalite that answers chosen GetRecords calls itself with
/// the error Kinesis gives for an iterator older than five minutes (kinesalite's iterators
/// expire after five real minutes, too long for a test), and every later call with the same
/// iterator too; every other call goes through.
struct ExpiringProxy {
    address: std::net::SocketAddr,
    /// GetRecords calls seen so far.
    get_records: Arc<AtomicUsize>,
    /// GetShardIterator calls seen so far.
    get_shard_iterator: Arc<AtomicUsize>,
}

impl ExpiringProxy {
    /// Relays to `upstream` (`http://host:port`), expiring the GetRecords calls whose 1-based
    /// numbers are in `expire`.
    async fn start(upstream: &str, expire: &'static [usize]) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let get_records = Arc::new(AtomicUsize::new(0));
        let get_shard_iterator = Arc::new(AtomicUsize::new(0));
        let counters = (get_records.clone(), get_shard_iterator.clone());
        let expired = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let (get_records, get_shard_iterator) = counters.clone();
                let expired = expired.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (BufReader::new(client), BufReader::new(server));
                    while let Some((head, body)) = read_message(&mut client).await {
                        let target = head.to_ascii_lowercase();
                        if target.contains("x-amz-target: kinesis_20131202.getshard") {
                            get_shard_iterator.fetch_add(1, Ordering::SeqCst);
                        }
                        if target.contains("x-amz-target: kinesis_20131202.getrecords") {
                            let call = get_records.fetch_add(1, Ordering::SeqCst) + 1;
                            let iterator = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["ShardIterator"].as_str().map(str::to_owned))
                                .unwrap_or_default();
                            // Once expired, an iterator stays expired, as in Kinesis.
                            let is_expired = {
                                let mut expired = expired.lock().unwrap();
                                if expire.contains(&call) {
                                    expired.insert(iterator.clone());
                                }
                                expired.contains(&iterator)
                            };
                            if is_expired {
                                let body = r#"{"__type":"ExpiredIteratorException","message":"Iterator expired."}"#;
                                let response = format!(
                                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                if client
                                    .get_mut()
                                    .write_all(response.as_bytes())
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                                continue;
                            }
                        }
                        let relayed = async {
                            server.get_mut().write_all(head.as_bytes()).await?;
                            server.get_mut().write_all(&body).await?;
                            let Some((head, body)) = read_message(&mut server).await else {
                                return Err(std::io::Error::other("kinesalite closed"));
                            };
                            client.get_mut().write_all(head.as_bytes()).await?;
                            client.get_mut().write_all(&body).await
                        };
                        if relayed.await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            address,
            get_records,
            get_shard_iterator,
        }
    }
}

/// One HTTP/1.1 message with a Content-Length body: its head (with the blank line) and body.
async fn read_message<R: AsyncBufRead + Unpin>(reader: &mut R) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((head, body))
}

/// The SDK config of `fixture` with Kinesis reached through `proxy` (DynamoDB and SQS as
/// before): the service's endpoint variable is what the SDK looks up first.
#[derive(Debug)]
struct KinesisThrough {
    proxy: String,
    rest: aws_config::SdkConfig,
}

impl LoadServiceConfig for KinesisThrough {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        if key.service_id() == "Kinesis" && key.env() == "AWS_ENDPOINT_URL" {
            return Some(self.proxy.clone());
        }
        self.rest.service_config()?.load_config(key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_shard_iterator_is_renewed_from_the_last_record_read() {
    let fixture = Fixture::new(1).await;
    let kinesalite = std::env::var("AWS_ENDPOINT_URL_KINESIS").unwrap();
    // The third and the fifth GetRecords call find their iterator expired: one while the
    // reader is mid-way through the records, one once it has caught up.
    let proxy = ExpiringProxy::start(&kinesalite, &[3, 5]).await;
    let through = |proxy: &ExpiringProxy| {
        fixture
            .sdk
            .to_builder()
            .service_config(KinesisThrough {
                proxy: format!("http://{}", proxy.address),
                rest: fixture.sdk.clone(),
            })
            .build()
    };
    let sdk = through(&proxy);

    // What the proxy answers is what the SDK and the runtime take for an expired iterator.
    let probe = ExpiringProxy::start(&kinesalite, &[1]).await;
    let client = aws_support::kinesis(&through(&probe));
    let shard = &kinesis::list_shards(&client, &fixture.stream)
        .await
        .unwrap()[0];
    let fresh_iterator = || async {
        kinesis::shard_iterator(
            &client,
            &fixture.stream,
            &shard.shard_id,
            &Checkpoint::TrimHorizon,
        )
        .await
        .unwrap()
        .unwrap()
    };
    let iterator = fresh_iterator().await;
    // Expired at the first call, and for good.
    for _ in 0..2 {
        let expired = kinesis::get_records(&client, &iterator, 10).await;
        assert!(
            matches!(expired, Err(kinesis::GetRecordsError::ExpiredIterator)),
            "{expired:?}"
        );
    }
    let renewed = fresh_iterator().await;
    assert!(kinesis::get_records(&client, &renewed, 10).await.is_ok());
    let ids: Vec<String> = (0..10).map(|i| format!("expiring-{i}")).collect();
    fixture.put(rounds(&fixture, &ids, 1..=4)).await;
    let recorder = Recorder::new("recorder");
    let config = WorkerConfig {
        // Forty records, ten per call: the reader needs several calls to catch up.
        batch_size: 10,
        ..fixture.worker_config("only", &fixture.leases_table)
    };
    let (running, stop) = run(Worker::new(
        &sdk,
        config,
        vec![recorder.clone() as Arc<dyn Projection>],
    ));
    eventually("the records before the expiries", WAIT, || async {
        complete(&recorder.view(), &ids, 4)
    })
    .await;
    fixture.put(rounds(&fixture, &ids, 5..=6)).await;
    eventually("the records after them", WAIT, || async {
        complete(&recorder.view(), &ids, 6)
    })
    .await;
    stop.send(()).unwrap();
    running.await.unwrap();

    assert!(
        proxy.get_records.load(Ordering::SeqCst) > 5,
        "both expiries were answered"
    );
    // One iterator at the start, and a new one after each expiry.
    assert!(proxy.get_shard_iterator.load(Ordering::SeqCst) >= 3);
    assert_eq!(recorder.gaps.load(Ordering::SeqCst), 0);
    fixture.tear_down().await;
}
