//! Dead letters a handler sends itself: for an event it had set aside and took up again later
//! (referral's activations parked until membership names the buyer), which fails on its own.
//! The letter is the one the consumer runner writes for a record (`<topic>.dlq`, a
//! `DeadLetter` with the reason, the reason also in the `scanloop-dlq-error` header), except
//! that the source partition and offset are -1: the event is not the record being handled.

use prost::Message as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use scanloop_proto::common::v1::{DeadLetter, EventEnvelope};

use crate::headers::DLQ_ERROR;
use crate::producer::EventProducer;
use crate::topics::dlq_topic;

#[derive(Clone)]
pub struct DeadLetters {
    producer: EventProducer,
    consumer: String,
}

impl DeadLetters {
    /// Letters signed by consumer group `consumer`.
    pub fn new(producer: EventProducer, consumer: impl Into<String>) -> Self {
        Self {
            producer,
            consumer: consumer.into(),
        }
    }

    /// Sends `envelope`, which came from `source_topic`, to `<source_topic>.dlq` with `reason`.
    pub async fn send(
        &self,
        source_topic: &str,
        envelope: &EventEnvelope,
        reason: &str,
    ) -> Result<(), KafkaError> {
        tracing::error!(
            topic = source_topic,
            stream_id = %envelope.stream_id,
            version = envelope.version,
            reason,
            "set-aside event sent to the dead-letter topic"
        );
        let letter = DeadLetter {
            source_topic: source_topic.to_owned(),
            source_partition: -1,
            source_offset: -1,
            consumer: self.consumer.clone(),
            error: reason.to_owned(),
            failed_at: Some(scanloop_proto::time::to_timestamp(chrono::Utc::now())),
            original_value: envelope.encode_to_vec(),
        }
        .encode_to_vec();
        let headers = OwnedHeaders::new().insert(Header {
            key: DLQ_ERROR,
            value: Some(reason),
        });
        self.producer
            .send_raw(
                &dlq_topic(source_topic),
                Some(envelope.stream_id.as_bytes()),
                &letter,
                headers,
            )
            .await
    }
}
