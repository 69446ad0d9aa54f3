//! The idempotent producer: acks=all, key = stream id, one stream's events in version order.

use std::time::Duration;

use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use scanloop_proto::common::v1::EventEnvelope;

use crate::headers::envelope_headers;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka did not accept event {stream_id}@{version}: {source}")]
    Kafka {
        stream_id: String,
        version: u64,
        #[source]
        source: KafkaError,
    },
    #[error("kafka producer closed before event {stream_id}@{version} was acknowledged")]
    Cancelled { stream_id: String, version: u64 },
}

/// A cheap-to-clone handle on one idempotent producer per process.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer,
}

/// How long the producer lets records gather into a batch before it sends one.
const LINGER_MS: u32 = 5;

impl EventProducer {
    /// `delivery_timeout` bounds how long a publish waits while the brokers are away; after it
    /// the publish fails and the event store's sweeper takes the range over.
    pub fn new(brokers: &str, delivery_timeout: Duration) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Idempotence implies acks=all and keeps per-partition order across retries.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            // Publications run in the background (no command waits for them), so a few
            // milliseconds of gathering cost no caller anything and put several streams'
            // records in one request: at 2 ms the bench's broker spent about twice the CPU per
            // record that it did at 10 ms. 5 ms is Kafka's own default since 4.0.
            .set("linger.ms", LINGER_MS.to_string())
            .set("compression.type", "none")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            .create()?;
        Ok(Self { producer })
    }

    /// Publishes `events` (one stream's, in version order) to `topic` and waits until the
    /// brokers acknowledged all of them. Records are enqueued strictly in the given order, so
    /// with the idempotent producer they land in the partition in that order.
    pub async fn publish_in_order(
        &self,
        topic: &str,
        events: &[EventEnvelope],
    ) -> Result<(), PublishError> {
        let mut deliveries: Vec<(DeliveryFuture, &EventEnvelope)> =
            Vec::with_capacity(events.len());
        for envelope in events {
            deliveries.push((self.enqueue(topic, envelope).await?, envelope));
        }
        for (delivery, envelope) in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => {
                    return Err(PublishError::Kafka {
                        stream_id: envelope.stream_id.clone(),
                        version: envelope.version,
                        source,
                    });
                }
                Err(_) => {
                    return Err(PublishError::Cancelled {
                        stream_id: envelope.stream_id.clone(),
                        version: envelope.version,
                    });
                }
            }
        }
        Ok(())
    }

    /// Enqueues one record, waiting (not skipping ahead) while the local queue is full.
    async fn enqueue(
        &self,
        topic: &str,
        envelope: &EventEnvelope,
    ) -> Result<DeliveryFuture, PublishError> {
        let payload = envelope.encode_to_vec();
        loop {
            let record = FutureRecord::to(topic)
                .key(envelope.stream_id.as_bytes())
                .payload(&payload)
                .headers(envelope_headers(envelope));
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((source, _)) => {
                    return Err(PublishError::Kafka {
                        stream_id: envelope.stream_id.clone(),
                        version: envelope.version,
                        source,
                    });
                }
            }
        }
    }

    /// Sends one record with explicit key, value and headers (dead letters), waiting for the ack.
    pub async fn send_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: rdkafka::message::OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let mut record = FutureRecord::to(topic).payload(value).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Waits until every enqueued record is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Asks a broker for `topic`'s metadata over this producer's connections: one small round
    /// trip, failing when no broker answers within `timeout` or the topic is unknown (what a
    /// service's health check asks).
    pub async fn probe(&self, topic: &str, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        // librdkafka's metadata call blocks its thread until the answer or the timeout.
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&topic), timeout)
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        match metadata.topics().first().and_then(|t| t.error()) {
            Some(error) => Err(KafkaError::MetadataFetch(error.into())),
            None => Ok(()),
        }
    }
}
