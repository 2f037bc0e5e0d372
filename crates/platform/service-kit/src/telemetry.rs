//! Structured logs (JSON lines by default), traces (OpenTelemetry, exported over OTLP when an
//! endpoint is configured) and the Prometheus metrics recorder.
//!
//! Every binary calls [`init_telemetry`] once. Traces are off unless `log.otlp_endpoint` or the
//! standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` variable names
//! a collector: then the spans of INFO level and above go to it in batches, as the service
//! named by the binary. Off, no span is bridged to OpenTelemetry and the pipeline creates none
//! of its per-commit spans ([`crate::trace_context::recording`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::settings::{LogFormat, LogSettings};
use crate::trace_context;

/// The standard variables naming the collector, most specific first (the OpenTelemetry SDK
/// specification's names), read when `log.otlp_endpoint` is not set.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint}: {source}")]
pub struct TelemetryError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Keeps the trace pipeline alive; dropping it flushes the spans not yet exported (bounded by
/// the exporter's timeout) and stops the export thread.
#[must_use = "dropping it stops the trace export"]
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Nothing is left to tell at exit if the collector is unreachable: the spans are lost.
            let _ = provider.shutdown();
        }
    }
}

/// Installs the process's log subscriber and, when a collector is configured, its trace export
/// as `service`. A second call in one process (several apps in one test) keeps the first
/// subscriber.
pub fn init_telemetry(
    service: &'static str,
    settings: &LogSettings,
) -> Result<Telemetry, TelemetryError> {
    let Some(endpoint) = collector_endpoint(settings) else {
        return Ok(install(settings, None));
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|source| TelemetryError { endpoint, source })?;
    Ok(install(
        settings,
        Some((service, batched(service, exporter))),
    ))
}

/// Like [`init_telemetry`], with every span handed to `exporter` as it ends: for tests that
/// capture spans in memory.
pub fn init_telemetry_with_exporter(
    service: &'static str,
    settings: &LogSettings,
    exporter: impl SpanExporter + 'static,
) -> Telemetry {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    install(settings, Some((service, provider)))
}

/// Like [`init_telemetry`], with `exporter` in place of OTLP behind the same batch processor:
/// for benchmarks that time this process's share of tracing.
pub fn init_telemetry_with_batches(
    service: &'static str,
    settings: &LogSettings,
    exporter: impl SpanExporter + 'static,
) -> Telemetry {
    install(settings, Some((service, batched(service, exporter))))
}

/// The production provider: spans exported in batches from a background thread.
fn batched(service: &'static str, exporter: impl SpanExporter + 'static) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build()
}

/// Installs the global log subscriber. A second call (several apps in one test process) keeps
/// the first subscriber.
pub fn init_logging(settings: &LogSettings) {
    // Without a trace export there is nothing to keep alive.
    let _logs_only = install(settings, None);
}

fn collector_endpoint(settings: &LogSettings) -> Option<String> {
    let configured = settings.otlp_endpoint.clone();
    configured
        .into_iter()
        .chain(
            ENDPOINT_VARIABLES
                .iter()
                .filter_map(|name| std::env::var(name).ok()),
        )
        .map(|endpoint| endpoint.trim().to_owned())
        .find(|endpoint| !endpoint.is_empty())
}

fn install(settings: &LogSettings, traces: Option<(&'static str, SdkTracerProvider)>) -> Telemetry {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match settings.format {
        // Span fields (the RPC and its correlation id) ride along on every line.
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let bridge = traces.as_ref().map(|(service, provider)| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(*service))
            // The span's target (module path) says where it was made; file, line and thread
            // would be three more attributes per span for no reader.
            .with_location(false)
            .with_threads(false)
            // Below INFO are the libraries' own spans (tonic, h2, hyper): not the order's story.
            .with_filter(LevelFilter::INFO)
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(bridge)
        .try_init()
        .is_ok();
    match traces {
        Some((_, provider)) if installed => {
            trace_context::start_recording();
            Telemetry {
                provider: Some(provider),
            }
        }
        _ => Telemetry::default(),
    }
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Seconds. Fine between 5 and 25 ms, where the command p99 (10 ms) and the
            // relay's commit -> Kinesis p99 (20 ms) targets fall: a p99 read from the buckets
            // cannot tell values apart that share one.
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.075,
                    0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("the bucket list is not empty")
                // Counts, not durations: how many commits a record packs, records a call puts.
                .set_buckets_for_metric(
                    Matcher::Suffix("_per_record".into()),
                    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
                )
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Suffix("_per_put".into()),
                    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
                )
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours simply stays unused.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
