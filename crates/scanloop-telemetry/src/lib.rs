//! Telemetry for every Scanloop process: `tracing` logs on stderr, OpenTelemetry spans, and the
//! W3C trace context carried across process boundaries (gRPC metadata, Kafka headers).
//!
//! Spans always get OpenTelemetry trace ids, so a `traceparent` travels with every event even
//! when nothing is exported. Metrics go through the global meter (see [`meter`]); without export
//! its instruments cost next to nothing. Export of both is off by default and switched on by the
//! standard variables:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_TRACES_EXPORTER=otlp`), plus the usual
//! `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_*` that the OTLP exporter reads itself.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use opentelemetry::Context;

/// Keeps the providers alive; flushes pending spans and metrics when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    meters: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry: trace shutdown failed: {error}");
        }
        if let Some(Err(error)) = self.meters.as_ref().map(SdkMeterProvider::shutdown) {
            eprintln!("telemetry: metrics shutdown failed: {error}");
        }
    }
}

/// The meter every Scanloop instrument comes from (`scanloop.*` metric names).
pub fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter("scanloop")
}

/// Whether the standard OpenTelemetry variables ask for trace export.
pub fn otlp_export_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let exporter = std::env::var("OTEL_TRACES_EXPORTER").unwrap_or_default();
    if exporter.trim() == "none" {
        return false;
    }
    exporter.trim() == "otlp"
        || set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
}

/// Installs the global subscriber and propagator. Call once, early in `main`, inside a Tokio
/// runtime (the OTLP batch exporter runs on it).
pub fn init(service_name: &'static str) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meters = None;
    if otlp_export_requested() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        builder = builder.with_batch_exporter(exporter);
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()?;
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_periodic_exporter(metric_exporter)
            .build();
        opentelemetry::global::set_meter_provider(meter_provider.clone());
        meters = Some(meter_provider);
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));

    // RUST_LOG filters what is logged, not what is traced: spans at info and above always exist,
    // so trace context reaches envelopes and exporters whatever the log level.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SCANLOOP_LOG_FORMAT").is_ok_and(|v| v.trim() == "json");
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(fmt_layer.with_filter(filter))
        .with(otel_layer.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
        .try_init()?;
    Ok(TelemetryGuard { provider, meters })
}

/// The W3C `traceparent` of the current span, or an empty string outside any trace.
pub fn current_traceparent() -> String {
    let mut carrier = HashMap::new();
    inject(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// Writes `context` into a carrier (Kafka headers, gRPC metadata) as W3C trace context.
pub fn inject(context: &Context, carrier: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(context, carrier);
}

/// Reads W3C trace context from a carrier; an empty context when there is none.
pub fn extract(carrier: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(carrier)
}

/// Makes `span` a child of the trace described by `traceparent` (as found in an envelope).
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let _ = span.set_parent(extract(&carrier));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_through_a_carrier() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let context = extract(&carrier);
        let mut out = HashMap::new();
        inject(&context, &mut out);
        assert_eq!(
            out.get("traceparent").map(String::as_str),
            Some(traceparent)
        );
    }

    #[test]
    fn no_traceparent_outside_a_trace() {
        assert_eq!(current_traceparent(), "");
    }
}
