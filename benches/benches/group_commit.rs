//! Group commit: command throughput of the event store as concurrency grows, against the raw
//! PostgreSQL rate of one small transaction per insert measured in the same run.
//!
//! `cargo bench -p benches --bench group_commit` (needs `DATABASE_URL`, e.g. from
//! `scripts/stack.sh env`). Each command is a real `Restock` on a store inventory, run through
//! cqrs-es's `CqrsFramework`: load (snapshot + tail), handle, commit.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cqrs_es::CqrsFramework;
use domain::inventory::{InventoryCommand, StoreInventory};
use domain::{Sku, StoreId};
use event_store::{PgEventStore, StoreConfig};
use futures::future::join_all;
use sqlx::PgPool;
use test_support::fresh_database;

const COMMANDS_PER_CLIENT: usize = 200;

#[tokio::main]
async fn main() {
    let database = fresh_database().await;
    let store = PgEventStore::open(database.pool.clone(), StoreConfig::default())
        .await
        .unwrap();
    let cqrs = std::sync::Arc::new(CqrsFramework::new(
        store.aggregate_store::<StoreInventory>(vec![]),
        vec![],
        (),
    ));
    sqlx::query("CREATE TABLE raw_inserts (id BIGSERIAL PRIMARY KEY, payload JSONB NOT NULL)")
        .execute(&database.pool)
        .await
        .unwrap();

    println!("| clients | commands/s (event store) | raw inserts/s (1 tx each) | ratio |");
    println!("|---:|---:|---:|---:|");
    for clients in [1, 8, 32, 128] {
        let commands = clients * COMMANDS_PER_CLIENT;
        let store_elapsed = run_commands(&cqrs, clients).await;
        let raw_elapsed = raw_inserts(&database.pool, clients).await;
        let store_rate = commands as f64 / store_elapsed.as_secs_f64();
        let raw_rate = commands as f64 / raw_elapsed.as_secs_f64();
        println!(
            "| {clients} | {store_rate:.0} | {raw_rate:.0} | {:.2} |",
            store_rate / raw_rate
        );
    }
}

type Inventories = CqrsFramework<StoreInventory, event_store::AggregateStore<StoreInventory>>;

/// Each client restocks its own store, one command after another.
async fn run_commands(cqrs: &std::sync::Arc<Inventories>, clients: usize) -> Duration {
    let sku = Sku::parse("LATTE-12").unwrap();
    let started = Instant::now();
    join_all((0..clients).map(|client| {
        let cqrs = cqrs.clone();
        let sku = sku.clone();
        async move {
            let store_id = format!("bench-{clients}-{client}");
            cqrs.execute(
                &store_id,
                InventoryCommand::SetStock {
                    store_id: StoreId::parse(&store_id).unwrap(),
                    sku: sku.clone(),
                    on_hand: 0,
                    low_stock_threshold: 0,
                },
            )
            .await
            .unwrap();
            for _ in 1..COMMANDS_PER_CLIENT {
                cqrs.execute(
                    &store_id,
                    InventoryCommand::Restock {
                        sku: sku.clone(),
                        quantity: 1,
                    },
                )
                .await
                .unwrap();
            }
        }
    }))
    .await;
    started.elapsed()
}

/// The reference: the same number of single-row INSERTs, each its own transaction.
async fn raw_inserts(pool: &PgPool, clients: usize) -> Duration {
    let started = Instant::now();
    join_all((0..clients).map(|_| async move {
        for _ in 0..COMMANDS_PER_CLIENT {
            sqlx::query("INSERT INTO raw_inserts (payload) VALUES ('{\"Restocked\":1}')")
                .execute(pool)
                .await
                .unwrap();
        }
    }))
    .await;
    started.elapsed()
}
