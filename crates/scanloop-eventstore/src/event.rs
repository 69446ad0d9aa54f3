//! Events as the store sees them: opaque protobuf payloads with their metadata.

use chrono::{DateTime, SubsecRound as _, Utc};
use scanloop_proto::common::v1::EventEnvelope;
use scanloop_proto::time::to_timestamp as timestamp;
use uuid::Uuid;

/// An event to append. `payload` is the encoded protobuf message named by `event_type`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Vec<u8>,
    pub occurred_at: DateTime<Utc>,
}

/// The command behind an append: the caller's idempotency key and a fingerprint of what it asked
/// (kind + canonical payload). Stored with every event of the append, inside the stream only:
/// never part of the public envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub request_id: String,
    pub fingerprint: Vec<u8>,
}

/// What one append shares across its events: tenant, causal/trace context and the command.
#[derive(Debug, Clone, Default)]
pub struct AppendMeta {
    pub brand_id: String,
    /// Id of the root message of the causal chain.
    pub correlation_id: String,
    /// Id of the command or event that caused this append.
    pub causation_id: String,
    /// W3C traceparent of the operation; empty outside a trace.
    pub traceparent: String,
    /// Who caused the append: the verified subject of the caller's token for a command, the
    /// causing event's actor for a reaction, `system:<job>` for a scheduled job.
    pub actor: String,
    /// The command, when the append answers one: the repository refuses a request id reused
    /// for a different command and answers a repeated one without a second effect.
    pub request: Option<RequestKey>,
}

/// An event as stored, with its position in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub stream_id: String,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub brand_id: String,
    pub payload: Vec<u8>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: String,
    pub causation_id: String,
    pub traceparent: String,
    /// Who caused it (see [`AppendMeta::actor`]); empty on events recorded before actors were.
    pub actor: String,
    /// The command that appended this event (internal: not in the envelope).
    pub request: Option<RequestKey>,
}

impl RecordedEvent {
    /// Builds the stored form of `event` at `version`. Timestamps are cut to milliseconds, the
    /// precision of a CQL `timestamp`, so an event published straight after its append and the
    /// same event republished from the database have identical envelopes.
    pub(crate) fn new(
        stream_id: &str,
        version: u64,
        meta: &AppendMeta,
        event: NewEvent,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        Self {
            stream_id: stream_id.to_owned(),
            version,
            event_id: Uuid::now_v7(),
            event_type: event.event_type,
            schema_version: event.schema_version,
            brand_id: meta.brand_id.clone(),
            payload: event.payload,
            occurred_at: event.occurred_at.trunc_subsecs(3),
            recorded_at: recorded_at.trunc_subsecs(3),
            correlation_id: meta.correlation_id.clone(),
            causation_id: meta.causation_id.clone(),
            traceparent: meta.traceparent.clone(),
            actor: meta.actor.clone(),
            request: meta.request.clone(),
        }
    }

    /// The public envelope: what goes on the Kafka topic.
    pub fn to_envelope(&self) -> EventEnvelope {
        EventEnvelope {
            event_id: self.event_id.to_string(),
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            brand_id: self.brand_id.clone(),
            stream_id: self.stream_id.clone(),
            version: self.version,
            occurred_at: Some(timestamp(self.occurred_at)),
            recorded_at: Some(timestamp(self.recorded_at)),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            traceparent: self.traceparent.clone(),
            payload: self.payload.clone(),
            actor: self.actor.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_carries_every_field_at_millisecond_precision() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T08:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let meta = AppendMeta {
            brand_id: "acme".into(),
            correlation_id: "c".into(),
            causation_id: "k".into(),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            actor: "finance-alice".into(),
            request: Some(RequestKey {
                request_id: "req-1".into(),
                fingerprint: vec![9; 32],
            }),
        };
        let event = NewEvent {
            event_type: "t".into(),
            schema_version: 2,
            payload: vec![1, 2],
            occurred_at: at,
        };
        let recorded = RecordedEvent::new("s-1", 3, &meta, event, at);
        let envelope = recorded.to_envelope();
        assert_eq!(envelope.version, 3);
        assert_eq!(envelope.stream_id, "s-1");
        assert_eq!(envelope.brand_id, "acme");
        assert_eq!(envelope.schema_version, 2);
        assert_eq!(envelope.occurred_at.unwrap().nanos, 123_000_000);
        assert_eq!(envelope.traceparent, meta.traceparent);
        assert_eq!(envelope.actor, "finance-alice");
        // The request id stays in the stream: no envelope field carries it.
        assert!(!format!("{envelope:?}").contains("req-1"));
        assert_eq!(recorded.request, meta.request);
        assert_eq!(
            Uuid::parse_str(&envelope.event_id)
                .unwrap()
                .get_version_num(),
            7
        );
    }
}
