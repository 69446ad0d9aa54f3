//! The envelope mirrored in Kafka record headers, so consumers can route and trace without
//! decoding the value. Header names: `scanloop.<field>` plus the W3C `traceparent`.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use scanloop_proto::common::v1::EventEnvelope;

pub const EVENT_ID: &str = "scanloop.event_id";
pub const EVENT_TYPE: &str = "scanloop.event_type";
pub const SCHEMA_VERSION: &str = "scanloop.schema_version";
pub const BRAND_ID: &str = "scanloop.brand_id";
pub const STREAM_ID: &str = "scanloop.stream_id";
pub const VERSION: &str = "scanloop.version";
pub const CORRELATION_ID: &str = "scanloop.correlation_id";
pub const CAUSATION_ID: &str = "scanloop.causation_id";
pub const ACTOR: &str = "scanloop.actor";
pub const TRACEPARENT: &str = "traceparent";
pub const DLQ_ERROR: &str = "scanloop.dlq.error";

/// Record headers for an envelope.
pub fn envelope_headers(envelope: &EventEnvelope) -> OwnedHeaders {
    let schema_version = envelope.schema_version.to_string();
    let version = envelope.version.to_string();
    let pairs: [(&str, &str); 10] = [
        (EVENT_ID, &envelope.event_id),
        (EVENT_TYPE, &envelope.event_type),
        (SCHEMA_VERSION, &schema_version),
        (BRAND_ID, &envelope.brand_id),
        (STREAM_ID, &envelope.stream_id),
        (VERSION, &version),
        (CORRELATION_ID, &envelope.correlation_id),
        (CAUSATION_ID, &envelope.causation_id),
        (TRACEPARENT, &envelope.traceparent),
        (ACTOR, &envelope.actor),
    ];
    pairs
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .fold(
            OwnedHeaders::new_with_capacity(10),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        )
}

/// The value of header `key`, if present and UTF-8.
pub fn header<'a, H: Headers>(headers: &'a H, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_mirror_the_envelope_and_skip_empty_fields() {
        let envelope = EventEnvelope {
            event_id: "e1".into(),
            event_type: "scanloop.activation.v1.WarrantyActivated".into(),
            schema_version: 1,
            brand_id: "acme".into(),
            stream_id: "warranty-1".into(),
            version: 7,
            traceparent: String::new(),
            ..Default::default()
        };
        let headers = envelope_headers(&envelope);
        assert_eq!(header(&headers, VERSION), Some("7"));
        assert_eq!(header(&headers, STREAM_ID), Some("warranty-1"));
        assert_eq!(header(&headers, TRACEPARENT), None);
    }
}
