//! Server spans that continue the caller's trace (W3C `traceparent` in gRPC metadata).

use opentelemetry::propagation::Extractor;
use tonic::metadata::{KeyAndValueRef, MetadataMap};

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|entry| match entry {
                KeyAndValueRef::Ascii(key, _) => Some(key.as_str()),
                KeyAndValueRef::Binary(..) => None,
            })
            .collect()
    }
}

/// A span for one RPC, child of the caller's trace when the metadata carries one.
pub fn server_span(
    service: &'static str,
    method: &'static str,
    metadata: &MetadataMap,
) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::info_span!(
        "rpc",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        brand_id = tracing::field::Empty,
        // OpenTelemetry's name for the authenticated caller: the token's subject.
        enduser.id = tracing::field::Empty,
    );
    let _ = span.set_parent(scanloop_telemetry::extract(&MetadataExtractor(metadata)));
    span
}

/// The caller's correlation id (`x-correlation-id`), if it sent one.
pub fn correlation_id(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}
