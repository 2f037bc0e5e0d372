//! What one order's trace costs a process (criterion): one hop is what each component does per
//! commit: a span continued from the commit's `traceparent` (`trace_context::continue_trace`),
//! linked from its batch's span, and handed to the export when it ends; the command API also
//! reads its own span's `traceparent` back to store it with the commit.
//!
//! - `off`: no collector configured (the default). Every call site asks
//!   `trace_context::recording()` first and does nothing else.
//! - `on`: the production pipeline (the `tracing-opentelemetry` bridge, the SDK's batch
//!   processor) with an exporter that discards the batches, so only this process's work is timed.
//!
//! A command's commit makes about seven hops (the command, the relay, three views, the saga and
//! notifications), so its cost is about seven times one hop.
//!
//! `cargo bench -p benches --bench trace_overhead`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::OnceLock;

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use service_kit::settings::{LogFormat, LogSettings};
use service_kit::telemetry::{self, Telemetry};
use service_kit::trace_context;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Takes every batch and keeps nothing.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

/// One component's work for one commit, as the call sites do it.
fn hop(batch: &tracing::Span) -> Option<String> {
    if !trace_context::recording() {
        return trace_context::current();
    }
    trace_context::link(batch, TRACEPARENT);
    let span = tracing::info_span!(parent: None, "bench.hop", aggregate_id = "o-1");
    trace_context::continue_trace(&span, TRACEPARENT);
    trace_context::traceparent_of(&span)
}

fn trace_overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace/one hop");
    group.bench_function("off", |b| b.iter(|| hop(&tracing::Span::none())));

    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let logs = LogSettings {
            format: LogFormat::Pretty,
            filter: "off".into(),
            otlp_endpoint: None,
        };
        telemetry::init_telemetry_with_batches("bench", &logs, Discard)
    });
    assert!(trace_context::recording());
    let batch = tracing::info_span!("bench.batch");
    group.bench_function("on", |b| b.iter(|| hop(&batch)));
    group.finish();
}

criterion_group!(benches, trace_overhead);
criterion_main!(benches);
