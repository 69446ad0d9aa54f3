//! Who asks: the tenant, the idempotency key, and the causal and trace context that the events a
//! request produces carry in their envelope.

use scanloop_eventstore::{AppendMeta, RequestKey};
use scanloop_pii::IdentityHasher;
use scanloop_proto::Command;
use tonic::metadata::MetadataMap;

use crate::access::Principal;

#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub brand_id: String,
    pub request_id: String,
    /// From the caller's `x-correlation-id` metadata; the request id when absent.
    pub correlation_id: String,
    pub traceparent: String,
    /// Fingerprint of the command (kind + canonical payload), when this context carries one:
    /// the streams the command appends to remember it with the request id, so the same id can
    /// never stand for a second, different command.
    pub fingerprint: Option<Vec<u8>>,
    /// The verified caller (the gate's [`Principal`] subject); empty when no gate stood in front.
    pub actor: String,
}

impl RequestContext {
    /// The context of a gRPC request, inside its server span (see [`crate::trace`]).
    pub fn of_request(metadata: &MetadataMap, brand_id: &str, request_id: &str) -> Self {
        tracing::Span::current().record("brand_id", brand_id);
        Self {
            brand_id: brand_id.to_owned(),
            request_id: request_id.to_owned(),
            correlation_id: crate::trace::correlation_id(metadata).unwrap_or_default(),
            traceparent: scanloop_telemetry::current_traceparent(),
            fingerprint: None,
            actor: String::new(),
        }
    }

    /// The context of a mutating gRPC call, bound to its command: the RPC's full name is the
    /// kind, and the request message exactly as the caller sent it is the payload. The streams
    /// the command appends to remember the request id with this fingerprint (see
    /// docs/events.md, "Request ids").
    pub fn of_command<M: Command + prost::Message>(
        request: &tonic::Request<M>,
        hasher: &IdentityHasher,
    ) -> Self {
        let fields = request.get_ref();
        let (brand_id, request_id) = (fields.brand_id(), fields.request_id());
        let mut context = Self::of_request(request.metadata(), brand_id, request_id);
        let payload = fields.encode_to_vec();
        context.fingerprint = Some(hasher.request_fingerprint(brand_id, M::KIND, &payload));
        if let Some(principal) = request.extensions().get::<Principal>() {
            tracing::Span::current().record("enduser.id", principal.subject.as_str());
            context.actor = principal.subject.clone();
        }
        context
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
            actor: self.actor.clone(),
            request: self.fingerprint.as_ref().map(|fingerprint| RequestKey {
                request_id: self.request_id.clone(),
                fingerprint: fingerprint.clone(),
            }),
        }
    }
}
