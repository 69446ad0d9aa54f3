//! What a service's reactions to other services' events share: decoding a foreign event, how a
//! command's failure is retried, and the metadata of what a reaction appends.

use scanloop_bus::{EventEnvelope, HandlerError};
use scanloop_eventstore::AppendMeta;

use crate::ServiceError;

/// Decodes a version-1 event of another service. A newer schema version is not guessed at: it
/// is dead-lettered with a message saying to upgrade `consumer`.
pub fn decode_v1<M: prost::Message + Default>(
    envelope: &EventEnvelope,
    consumer: &str,
) -> Result<M, HandlerError> {
    if envelope.schema_version > 1 {
        return Err(HandlerError::Poison(format!(
            "{} schema version {} is newer than this service reads (1): upgrade {consumer}",
            envelope.event_type, envelope.schema_version
        )));
    }
    M::decode(envelope.payload.as_slice())
        .map_err(|e| HandlerError::Poison(format!("{}: {e}", envelope.event_type)))
}

/// A reaction's command failed: contention and outages pass (retried), anything else fails the
/// same way every time (dead-lettered).
pub fn handler_error(error: ServiceError) -> HandlerError {
    match error {
        e @ (ServiceError::Aborted(_) | ServiceError::Unavailable(_)) => {
            HandlerError::Transient(anyhow::anyhow!(e))
        }
        e => HandlerError::Poison(e.to_string()),
    }
}

/// A reaction's read or write failed: a database away or too slow passes (retried); anything
/// else fails the same way every time (dead-lettered).
pub fn storage_error(error: scanloop_storage::DbError) -> HandlerError {
    if error.is_transient() {
        HandlerError::Transient(anyhow::anyhow!(error))
    } else {
        HandlerError::Poison(error.to_string())
    }
}

/// The envelope metadata of what a reaction appends: caused by the event, in its correlation,
/// by its actor. No request key: the reaction's command must be idempotent by its aggregate's
/// state, or the caller adds one named by the event (`AppendMeta { request, ..caused_by(e) }`).
pub fn caused_by(envelope: &EventEnvelope) -> AppendMeta {
    AppendMeta {
        brand_id: envelope.brand_id.clone(),
        correlation_id: envelope.correlation_id.clone(),
        causation_id: envelope.event_id.clone(),
        traceparent: scanloop_telemetry::current_traceparent(),
        actor: envelope.actor.clone(),
        request: None,
    }
}
