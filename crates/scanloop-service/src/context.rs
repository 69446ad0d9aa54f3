//! Who asks: the tenant, the idempotency key, and the causal and trace context that the events a
//! request produces carry in their envelope.

use scanloop_eventstore::AppendMeta;
use tonic::metadata::MetadataMap;

#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub brand_id: String,
    pub request_id: String,
    /// From the caller's `x-correlation-id` metadata; the request id when absent.
    pub correlation_id: String,
    pub traceparent: String,
}

impl RequestContext {
    /// The context of a gRPC request, inside its server span (see [`crate::trace::server_span`]).
    pub fn of_request(metadata: &MetadataMap, brand_id: &str, request_id: &str) -> Self {
        tracing::Span::current().record("brand_id", brand_id);
        Self {
            brand_id: brand_id.to_owned(),
            request_id: request_id.to_owned(),
            correlation_id: crate::trace::correlation_id(metadata).unwrap_or_default(),
            traceparent: scanloop_telemetry::current_traceparent(),
        }
    }

    /// The envelope metadata of what this request appends.
    pub fn meta(&self) -> AppendMeta {
        AppendMeta {
            brand_id: self.brand_id.clone(),
            correlation_id: if self.correlation_id.is_empty() {
                self.request_id.clone()
            } else {
                self.correlation_id.clone()
            },
            causation_id: self.request_id.clone(),
            traceparent: self.traceparent.clone(),
        }
    }
}
