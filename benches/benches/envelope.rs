//! The log envelope (criterion): `commit_log::encode` of a stored commit and `decode` of the
//! record, for a one-event commit (most commits) and the six events of a whole order lifecycle.
//!
//! `cargo bench -p benches --bench envelope`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use benches::order_flow::{completed_order, new_order_id};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use domain::{FixedMenu, Order, OrderServices};
use event_store::RecordedEvent;
use time::OffsetDateTime;

/// The events of one order taken from placed to completed, as the store records them.
fn order_lifecycle() -> Vec<RecordedEvent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let services = OrderServices::new(Arc::new(FixedMenu::sample()));
    let id = new_order_id();
    let mut order = Order::default();
    let mut recorded = Vec::new();
    for command in completed_order(id, "s1", "c1") {
        let events = rt.block_on(async {
            let sink = EventSink::default();
            order.handle(command, &services, &sink).await.unwrap();
            sink.collect().await
        });
        for event in events {
            let sequence = recorded.len() as i64 + 1;
            recorded.push(RecordedEvent {
                global_position: 1_000_000 + sequence,
                aggregate_type: Order::TYPE.to_owned(),
                aggregate_id: id.to_string(),
                sequence,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_value(&event).unwrap(),
                metadata: serde_json::json!({
                    "correlation_id": "7d1f0c1e-4d7b-4a53-9a57-1f0f3c2b9e10",
                    "idempotency_key": "loadgen/place-1",
                }),
                recorded_at: OffsetDateTime::now_utc(),
            });
        }
    }
    recorded
}

fn envelope(c: &mut Criterion) {
    let lifecycle = order_lifecycle();
    for (name, commit) in [
        ("one event", &lifecycle[..1]),
        ("six events", &lifecycle[..]),
    ] {
        let record = commit_log::encode(commit).unwrap();
        let mut group = c.benchmark_group(format!("envelope/{name}"));
        group.throughput(Throughput::Elements(commit.len() as u64));
        group.bench_function("encode", |b| b.iter(|| commit_log::encode(commit).unwrap()));
        group.bench_function("decode", |b| {
            b.iter(|| commit_log::decode(&record).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, envelope);
criterion_main!(benches);
