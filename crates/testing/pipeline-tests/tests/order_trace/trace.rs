//! One order's trace: a caller's W3C `traceparent` on PlaceOrder is continued by the command
//! API, stored with the commit, carried in the log envelope, and continued by the relay, every
//! projection and the flows (the saga's commands and the payment processor's go back to the
//! command API in the same trace). Spans are captured in memory with the OpenTelemetry SDK's
//! exporter.
//!
//! Set `ORDERPIPE_TRACE_DUMP=<file>` to write the order's trace as text (span, service,
//! parent, start, duration) to that file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use flows::intake::IntakeOrder;
use flows::payments::TestCard;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use service_kit::settings::{LogFormat, LogSettings};
use service_kit::telemetry::{self, Telemetry};
use service_kit::trace_context;
use test_support::PATIENCE;

use crate::flows_rig::{intake_order, is_paid_and_accepted, Rig};
use crate::support::{eventually, Pipeline};
use crate::workload::{open_the_store, Clients};

/// The spans every test of this process has ended so far. The subscriber is global: installed
/// once, kept for the life of the test process.
fn captured_spans() -> &'static InMemorySpanExporter {
    static CAPTURE: OnceLock<(InMemorySpanExporter, Telemetry)> = OnceLock::new();
    let (exporter, _) = CAPTURE.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let logs = LogSettings {
            format: LogFormat::Pretty,
            filter: "off".into(),
            otlp_endpoint: None,
        };
        let telemetry =
            telemetry::init_telemetry_with_exporter("orderpipe", &logs, exporter.clone());
        (exporter, telemetry)
    });
    assert!(
        trace_context::recording(),
        "another subscriber was installed first: no span can be captured"
    );
    exporter
}

/// The ended spans of the trace `trace_id`.
fn spans_of(exporter: &InMemorySpanExporter, trace_id: &str) -> Vec<SpanData> {
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| span.span_context.trace_id().to_string() == trace_id)
        .collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The process that made the span, from its target (module path); the runtime that applies
/// commits runs in the projectors and, for the saga and notifications, in the flows.
fn service(span: &SpanData) -> &'static str {
    let target = attribute(span, "target").unwrap_or_default();
    let projection = attribute(span, "projection").unwrap_or_default();
    match target.split("::").next().unwrap_or_default() {
        "command_api" => "command-api",
        "relay" => "relay",
        "flows" => "flows",
        "kinesis_consumer" if matches!(projection.as_str(), "order_saga" | "notifications") => {
            "flows"
        }
        "kinesis_consumer" => "projectors",
        _ => "?",
    }
}

/// The spans named `name` (and, if given, with `projection`) that are children of `parent`.
fn children<'a>(
    spans: &'a [SpanData],
    parent: &SpanData,
    name: &str,
    projection: Option<&str>,
) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|span| span.parent_span_id == parent.span_context.span_id())
        .filter(|span| span.name == name)
        .filter(|span| {
            projection.is_none_or(|p| attribute(span, "projection").as_deref() == Some(p))
        })
        .collect()
}

fn the_one<'a>(spans: &'a [SpanData], name: &str) -> Option<&'a SpanData> {
    spans.iter().find(|span| span.name == name)
}

/// Whether the trace shows every hop of the order, each where it belongs.
fn every_hop(spans: &[SpanData]) -> Result<(), String> {
    let place =
        the_one(spans, "/orderpipe.v1.OrderService/PlaceOrder").ok_or("no PlaceOrder span")?;
    let need = |what: &str, found: bool| found.then_some(()).ok_or(format!("missing: {what}"));
    need(
        "the relay's publish of the PlaceOrder commit",
        !children(spans, place, "relay.publish", None).is_empty(),
    )?;
    for projection in ["active_orders", "history", "analytics", "order_saga"] {
        need(
            &format!("{projection} applying the PlaceOrder commit"),
            !children(spans, place, "project.apply", Some(projection)).is_empty(),
        )?;
    }
    let react = children(spans, place, "saga.react", None);
    need("the saga reacting to OrderPlaced", !react.is_empty())?;
    need(
        "the saga's ReserveStock within its reaction",
        react.iter().any(|react| {
            !children(
                spans,
                react,
                "/orderpipe.v1.InventoryService/ReserveStock",
                None,
            )
            .is_empty()
        }),
    )?;
    for name in [
        "/orderpipe.v1.OrderService/AcceptOrder",
        "payments.handle",
        "/orderpipe.v1.OrderService/RecordPaymentCaptured",
    ] {
        need(name, the_one(spans, name).is_some())?;
    }
    let handle = the_one(spans, "payments.handle").ok_or("no payments.handle")?;
    need(
        "RecordPaymentCaptured sent by the payment processor's step",
        !children(
            spans,
            handle,
            "/orderpipe.v1.OrderService/RecordPaymentCaptured",
            None,
        )
        .is_empty(),
    )?;
    Ok(())
}

/// Whether some span named `name` (in any trace: a batch's own) links to `target`.
fn linked_from(exporter: &InMemorySpanExporter, name: &str, target: &SpanData) -> bool {
    exporter
        .get_finished_spans()
        .unwrap()
        .iter()
        .filter(|span| span.name == name)
        .any(|span| {
            // By ids: the link holds the context as read back from the envelope (remote).
            span.links.iter().any(|link| {
                link.span_context.trace_id() == target.span_context.trace_id()
                    && link.span_context.span_id() == target.span_context.span_id()
            })
        })
}

#[tokio::test]
async fn one_orders_trace_crosses_the_command_api_the_relay_every_projection_and_the_flows() {
    let exporter = captured_spans();
    let pipeline = Pipeline::start().await;
    let views = pipeline.views("trace").await;
    let projector = pipeline.spawn_worker(&views, "projector-1");
    let rig = Rig::new(&pipeline).await;
    let mut clients = Clients::new(&pipeline);
    open_the_store(&mut clients, 20).await;
    let flows = rig.spawn("flows-1", Arc::new(rig.sandbox.clone())).await;

    // The caller's own span, in a trace of its own: the pipeline must continue it.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let traceparent = format!("00-{trace_id}-{caller_span_id}-01");
    let body = intake_order("app", "TRACE-1", "c-trace", TestCard::Approve);
    let order = IntakeOrder::parse(&body).unwrap().place_order_request();
    let order_id = order.order_id.clone();
    let mut request = tonic::Request::new(order);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    clients.saga.place_order(request).await.unwrap();

    eventually("the order reserved, accepted and paid", || {
        let mut clients = Clients::new(&pipeline);
        let order_id = order_id.clone();
        async move { is_paid_and_accepted(&mut clients, &order_id).await }
    })
    .await;
    pipeline.wait_caught_up(&views).await;
    // Spans end (and are exported) after the views were written: wait for the last ones.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while let Err(missing) = every_hop(&spans_of(exporter, &trace_id)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order's trace is incomplete after {PATIENCE:?}: {missing}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let spans = spans_of(exporter, &trace_id);
    let place = the_one(&spans, "/orderpipe.v1.OrderService/PlaceOrder").unwrap();
    assert_eq!(
        place.parent_span_id.to_string(),
        caller_span_id,
        "the command's span continues the caller's traceparent"
    );
    assert!(
        linked_from(exporter, "relay.put_records", place),
        "the PutRecords call that carried the commit links to the order's trace"
    );
    assert!(
        linked_from(exporter, "project.apply_batch", place),
        "the batches that applied the commit link to the order's trace"
    );

    if let Ok(path) = std::env::var("ORDERPIPE_TRACE_DUMP") {
        std::fs::write(&path, dump(&spans, &trace_id, &order_id, caller_span_id)).unwrap();
    }
    flows.abort();
    projector.abort();
    pipeline.stop().await;
}

/// The trace as an indented tree, children in start order.
fn dump(spans: &[SpanData], trace_id: &str, order_id: &str, caller_span_id: &str) -> String {
    let by_id: HashMap<String, &SpanData> = spans
        .iter()
        .map(|span| (span.span_context.span_id().to_string(), span))
        .collect();
    let mut sorted: Vec<&SpanData> = spans.iter().collect();
    sorted.sort_by_key(|span| span.start_time);
    let start = sorted
        .first()
        .map_or(SystemTime::UNIX_EPOCH, |s| s.start_time);
    let mut text = format!(
        "trace {trace_id}: order {order_id}, {} spans; the caller's span {caller_span_id} is its root\n\
         {:<62} {:<12} {:<52} {:>9} {:>9}\n",
        spans.len(),
        "span",
        "service",
        "parent",
        "start ms",
        "took ms"
    );
    fn write_tree(
        text: &mut String,
        span: &SpanData,
        depth: usize,
        sorted: &[&SpanData],
        by_id: &HashMap<String, &SpanData>,
        start: SystemTime,
    ) {
        let parent = by_id
            .get(&span.parent_span_id.to_string())
            .map_or("(the caller)".to_owned(), |parent| parent.name.to_string());
        let millis = |from: SystemTime, to: SystemTime| {
            to.duration_since(from).unwrap_or_default().as_secs_f64() * 1e3
        };
        let mut label = format!("{}{}", "  ".repeat(depth), span.name);
        if let Some(projection) = attribute(span, "projection") {
            let _ = write!(label, " [{projection}]");
        }
        let _ = writeln!(
            text,
            "{label:<62} {:<12} {:<52} {:>9.1} {:>9.1}",
            service(span),
            parent,
            millis(start, span.start_time),
            millis(span.start_time, span.end_time),
        );
        for child in sorted
            .iter()
            .filter(|child| child.parent_span_id == span.span_context.span_id())
        {
            write_tree(text, child, depth + 1, sorted, by_id, start);
        }
    }
    for root in sorted
        .iter()
        .filter(|span| !by_id.contains_key(&span.parent_span_id.to_string()))
    {
        write_tree(&mut text, root, 0, &sorted, &by_id, start);
    }
    text
}
