//! The relay on one shard: commits/s and records/s through the real relay into a one-shard
//! kinesalite stream, packing (`relay.max_commits_per_record` 100, set here: every reader of
//! this run unpacks; the relay's default is 1) against one commit per record (1, the relay
//! before containers), beside the raw rate of PutRecords of single-commit-sized records
//! measured in the same run.
//!
//! `cargo bench -p benches --bench relay_packing` (needs the stack's environment:
//! `source "$(scripts/stack.sh env --path)"`). A Kinesis shard takes 1,000 records/s and
//! 1 MB/s: kinesalite enforces neither, so the records/s column is what real Kinesis would
//! have to take, and the commits/s column is what it could carry at that. Writers run real
//! `Restock` commands through cqrs-es and the event store for a fixed time while the relay
//! publishes; the figures count from the first commit to the outbox being empty.
//!
//! Each mode runs in a child process of its own, so the relay's metrics (p99 from its
//! histogram) are that mode's alone.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use benches::loadgen::cluster::{scrape_quantile, scrape_sum};
use cqrs_es::CqrsFramework;
use domain::inventory::{InventoryCommand, StoreInventory};
use domain::{Sku, StoreId};
use event_store::{PgEventStore, StoreConfig};
use relay::app::Application;
use relay::settings::{LayeredSettings, Settings};
use test_support::{fresh_database, unique_name, TestStream};

/// How long the writers write.
const WRITING: Duration = Duration::from_secs(10);
/// Concurrent writers, and the aggregates each one cycles through.
const WRITERS: usize = 64;
const AGGREGATES_PER_WRITER: usize = 20;
/// Records in the raw reference.
const RAW_RECORDS: usize = 20_000;
/// The child process's mode: `relay.max_commits_per_record`.
const MODE: &str = "RELAY_PACKING_MODE";

#[tokio::main]
async fn main() {
    if let Ok(mode) = std::env::var(MODE) {
        run_mode(mode.parse().unwrap()).await;
        return;
    }
    let raw = raw_put_rate().await;
    println!(
        "raw reference: PutRecords of {RAW_RECORDS} single-commit-sized records (500 per call, one call in flight) to a 1-shard kinesalite stream: {raw:.0} records/s"
    );
    println!();
    println!("| max commits per record | commits | records | commits/record | commits/s | records/s | relay commit -> ack p99 | commits/s vs raw records/s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mode in [100, 1] {
        let line = std::process::Command::new(std::env::current_exe().unwrap())
            .env(MODE, mode.to_string())
            .output()
            .unwrap();
        let figures = String::from_utf8_lossy(&line.stdout);
        let figures = figures.trim();
        let commits_per_second: f64 = figures
            .split('|')
            .nth(5)
            .and_then(|cell| cell.trim().parse().ok())
            .unwrap_or(0.0);
        println!("{figures} {:.2}x |", commits_per_second / raw);
        if !line.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&line.stderr));
        }
    }
}

/// One mode: writers and the relay, then one table row (without its last cell) on stdout.
async fn run_mode(max_commits_per_record: usize) {
    let database = fresh_database().await;
    let stream = TestStream::create(1).await;
    let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
        .await
        .unwrap();
    let cqrs = Arc::new(CqrsFramework::new(
        store.aggregate_store::<StoreInventory>(vec![]),
        vec![],
        (),
    ));
    // The relay's own defaults, on this run's database and stream, its admin port free.
    let defaults = service_kit::settings::Defaults {
        values: vec![("kinesis.stream_name", stream.name.clone())],
        ..Settings::defaults()
    };
    let mut settings: Settings = service_kit::settings::load_defaults(&defaults).unwrap();
    settings.database = database.settings(None);
    settings.admin.port = 0;
    settings.relay.max_commits_per_record = max_commits_per_record;
    let app = Application::build(settings).await.unwrap();
    let admin = app.admin_address();
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let prefix = unique_name("store");
    let written = Arc::new(AtomicUsize::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (cqrs, written, writing) = (cqrs.clone(), written.clone(), writing.clone());
            let stores: Vec<String> = (0..AGGREGATES_PER_WRITER)
                .map(|i| format!("{prefix}-{writer}-{i}"))
                .collect();
            tokio::spawn(async move {
                let sku = Sku::parse("LATTE-12").unwrap();
                for store in &stores {
                    let set = InventoryCommand::SetStock {
                        store_id: StoreId::parse(store).unwrap(),
                        sku: sku.clone(),
                        on_hand: 100,
                        low_stock_threshold: 1,
                    };
                    cqrs.execute(store, set).await.unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                }
                'writing: loop {
                    for store in &stores {
                        if !writing.load(Ordering::Relaxed) {
                            break 'writing;
                        }
                        let restock = InventoryCommand::Restock {
                            sku: sku.clone(),
                            quantity: 1,
                        };
                        cqrs.execute(store, restock).await.unwrap();
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(WRITING).await;
    writing.store(false, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let commits = written.load(Ordering::Relaxed);
    let mut published = 0.0;
    while published < commits as f64 {
        published = scrape_sum(admin, "orderpipe_relay_commits_total", ("", ""))
            .await
            .unwrap_or(0.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let records = scrape_sum(admin, "orderpipe_relay_records_total", ("", ""))
        .await
        .unwrap_or(0.0);
    let p99 = scrape_quantile(admin, "orderpipe_relay_commit_to_log_seconds", 0.99).await;
    let _ = shutdown.send(());
    relay.await.unwrap().unwrap();
    let per_record = stream.commits_per_record().await;
    assert_eq!(per_record.iter().sum::<usize>() as f64, published);
    println!(
        "| {max_commits_per_record} | {commits} | {records:.0} | {:.1} | {:.0} | {:.0} | {} |",
        published / records,
        published / seconds,
        records / seconds,
        p99.map_or("-".to_owned(), |p99| format!("{:.1} ms", p99 * 1000.0)),
    );
}

/// Records/s of plain PutRecords calls of 500 records of ~300 bytes (a one-event commit's
/// envelope), one call at a time, as the relay sends them.
async fn raw_put_rate() -> f64 {
    let stream = TestStream::create(1).await;
    let data = vec![7u8; 300];
    let started = Instant::now();
    for call in 0..RAW_RECORDS / 500 {
        let entries = (0..500)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("raw-{call}-{i}"))
                    .data(Blob::new(data.clone()))
                    .build()
                    .unwrap()
            })
            .collect();
        stream
            .client
            .put_records()
            .stream_name(&stream.name)
            .set_records(Some(entries))
            .send()
            .await
            .unwrap();
    }
    RAW_RECORDS as f64 / started.elapsed().as_secs_f64()
}
