//! One record's way through the handler, on its stream's lane: decoded, dropped when the
//! stream's checkpoint says it was applied, handed to the handler (retried with backoff while it
//! fails transiently, a panic counted as permanent), dead-lettered when it cannot be applied,
//! and the checkpoint advanced; with the runner's metrics of what became of each event.

use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use prost::Message as _;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use scanloop_proto::common::v1::{DeadLetter, EventEnvelope};
use tracing::Instrument as _;

use super::retry::{Backoff, Failing};
use super::{EventHandler, HandlerError, Shared, lock, takes};
use crate::headers::{DLQ_ERROR, TRACEPARENT, header};
use crate::topics::dlq_topic;

/// Events per outcome (`handled`, `duplicate`, `passed_by`, `dead_lettered`, `retry`,
/// `abandoned`) and consumer group.
static EVENTS: LazyLock<Counter<u64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .u64_counter("scanloop.consumer.events")
        .with_description("events taken from Kafka by outcome")
        .build()
});

/// Seconds from an event's recording in its stream to its handling here: the consumer's lag.
static LAG: LazyLock<Histogram<f64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .f64_histogram("scanloop.consumer.lag")
        .with_unit("s")
        .with_description("event recorded → handled by this consumer")
        .build()
});

impl<H: EventHandler> Shared<H> {
    /// Handles one record; false when it was left unfinished (shutdown or revocation).
    pub(super) async fn process_one(&self, message: &OwnedMessage) -> bool {
        let envelope = match decode_envelope(message) {
            Ok(envelope) => envelope,
            Err(reason) => return self.dead_letter(message, &reason).await,
        };
        let span = tracing::info_span!(
            "consume",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation = "process",
            messaging.destination.name = message.topic(),
            messaging.kafka.partition = message.partition(),
            messaging.kafka.offset = message.offset(),
            messaging.consumer.group.name = %self.options.group_id,
            event_type = %envelope.event_type,
            stream_id = %envelope.stream_id,
            version = envelope.version,
        );
        let traceparent = match envelope.traceparent.as_str() {
            "" => message
                .headers()
                .and_then(|h| header(h, TRACEPARENT))
                .unwrap_or_default(),
            tp => tp,
        };
        scanloop_telemetry::set_parent_from_traceparent(&span, traceparent);
        self.apply(message, &envelope).instrument(span).await
    }

    async fn apply(&self, message: &OwnedMessage, envelope: &EventEnvelope) -> bool {
        // A record published without the type header: the type is known once decoded.
        if !takes(&self.handler, &envelope.event_type) {
            self.passed_by();
            return true;
        }
        let topic = message.topic();
        if self
            .handler
            .idempotent_by_construction(&envelope.event_type)
        {
            return self.apply_unchecked(message, envelope).await;
        }
        let Some(applied) = self.applied_version(topic, &envelope.stream_id).await else {
            return false;
        };
        if envelope.version <= applied {
            self.duplicate(applied);
            return true;
        }
        if !self.handle_with_retries(message, envelope).await {
            return false;
        }
        self.advance_checkpoint(topic, &envelope.stream_id, envelope.version)
            .await
    }

    /// An event the handler may see any number of times: dropped only when this process
    /// remembers its stream past it, never read from or written to the checkpoint table. What
    /// is remembered moves on only from a remembered version (which was the checkpoint's, or
    /// followed from it in order): a version remembered without the checkpoint behind it could
    /// pass a checkpointed event by as if applied.
    async fn apply_unchecked(&self, message: &OwnedMessage, envelope: &EventEnvelope) -> bool {
        let key = cache_key(message.topic(), &envelope.stream_id);
        let remembered = lock(&self.applied).get(&key).copied();
        if let Some(applied) = remembered.filter(|applied| envelope.version <= *applied) {
            self.duplicate(applied);
            return true;
        }
        if !self.handle_with_retries(message, envelope).await {
            return false;
        }
        if remembered.is_some() {
            lock(&self.applied).insert(&key, envelope.version, Instant::now());
        }
        true
    }

    fn duplicate(&self, applied: u64) {
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        self.count("duplicate");
        tracing::debug!(applied, "duplicate dropped");
    }

    /// Calls the handler until it succeeds, fails permanently, or fails transiently past the
    /// attempt limit; the last two dead-letter the record. False when interrupted.
    async fn handle_with_retries(&self, message: &OwnedMessage, envelope: &EventEnvelope) -> bool {
        let mut backoff = Backoff::new(
            self.options.initial_retry_backoff,
            self.options.max_retry_backoff,
        );
        let handled_before = self.stats.handled();
        let mut attempts = 0u32;
        loop {
            attempts = attempts.saturating_add(1);
            let error = match self.call_handler(envelope).await {
                Ok(()) => {
                    self.stats.handled.fetch_add(1, Ordering::Relaxed);
                    self.count("handled");
                    if let Some(recorded) =
                        scanloop_proto::time::from_timestamp(envelope.recorded_at.as_ref())
                    {
                        let lag = (chrono::Utc::now() - recorded).to_std().unwrap_or_default();
                        LAG.record(lag.as_secs_f64(), &[self.group_label()]);
                    }
                    return true;
                }
                Err(HandlerError::Poison(reason)) => {
                    return self.dead_letter(message, &reason).await;
                }
                Err(HandlerError::Transient(error)) => error,
            };
            let failing = Failing {
                attempts,
                max_attempts: self.options.max_attempts.max(1),
                others_succeeded: self.stats.handled() > handled_before,
                database_answers: attempts >= self.options.max_attempts
                    && self
                        .checkpoints
                        .applied(&self.options.group_id, message.topic(), &envelope.stream_id)
                        .await
                        .is_ok(),
            };
            if failing.give_up() {
                let reason = format!("gave up after {attempts} attempts: {error:#}");
                return self.dead_letter(message, &reason).await;
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.count("retry");
            let wait = backoff.next();
            if attempts >= failing.max_attempts {
                tracing::warn!(
                    error = %format!("{error:#}"), attempts, ?wait,
                    "handler keeps failing while nothing else succeeds (an outage?); \
                     retrying instead of dead-lettering"
                );
            } else {
                tracing::warn!(error = %format!("{error:#}"), attempts, ?wait, "handler failed; retrying");
            }
            if !self.sleep(wait).await {
                return false;
            }
        }
    }

    /// The handler's answer; a panic is a permanent failure of this event, not of the runner.
    async fn call_handler(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        match AssertUnwindSafe(self.handler.handle(envelope))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(HandlerError::Poison(format!("handler panicked: {what}")))
            }
        }
    }

    /// The stream's applied version, from the cache or the checkpoint table (retrying while the
    /// database is away). None when shutdown interrupted the wait.
    async fn applied_version(&self, topic: &str, stream_id: &str) -> Option<u64> {
        if let Some(version) = lock(&self.applied).get(&cache_key(topic, stream_id)) {
            return Some(*version);
        }
        let mut backoff = self.infrastructure_backoff();
        loop {
            match self
                .checkpoints
                .applied(&self.options.group_id, topic, stream_id)
                .await
            {
                Ok(version) => return Some(version),
                Err(error) => {
                    tracing::warn!(%error, "cannot read checkpoint; retrying");
                    if !self.sleep(backoff.next()).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Records the stream's checkpoint at `version` and caches it, without reading it back.
    ///
    /// Only a member working on the same partition could have written a higher version, and a
    /// partition has one owner at a time: a member whose claim ended clears its cache at its
    /// next assignment, and the previous owner's one handler call still running at the
    /// revocation writes the version after its finished ones, which this member read on its
    /// first miss (so it is this member's next version, never beyond it). A read back per event
    /// and group would cost a third of the runner's database work for nothing.
    async fn advance_checkpoint(&self, topic: &str, stream_id: &str, version: u64) -> bool {
        let mut backoff = self.infrastructure_backoff();
        while let Err(error) = self
            .checkpoints
            .record(&self.options.group_id, topic, stream_id, version)
            .await
        {
            tracing::warn!(%error, "cannot record checkpoint; retrying");
            if !self.sleep(backoff.next()).await {
                return false;
            }
        }
        lock(&self.applied).insert(&cache_key(topic, stream_id), version, Instant::now());
        true
    }

    /// Sends the record to `<topic>.dlq` with the reason, retrying until the broker takes it.
    async fn dead_letter(&self, message: &OwnedMessage, reason: &str) -> bool {
        tracing::error!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "message sent to the dead-letter topic"
        );
        let letter = DeadLetter {
            source_topic: message.topic().to_owned(),
            source_partition: message.partition(),
            source_offset: message.offset(),
            consumer: self.options.group_id.clone(),
            error: reason.to_owned(),
            failed_at: Some(timestamp_now()),
            original_value: message.payload().unwrap_or_default().to_vec(),
        }
        .encode_to_vec();
        let topic = dlq_topic(message.topic());
        let mut backoff = self.infrastructure_backoff();
        loop {
            let headers = dead_letter_headers(message.headers(), reason);
            match self
                .dlq
                .send_raw(&topic, message.key(), &letter, headers)
                .await
            {
                Ok(()) => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    self.count("dead_lettered");
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, topic, "cannot write dead letter; retrying");
                    if !self.sleep(backoff.next()).await {
                        return false;
                    }
                }
            }
        }
    }

    pub(super) fn passed_by(&self) {
        self.stats.passed_by.fetch_add(1, Ordering::Relaxed);
        self.count("passed_by");
    }

    /// The runner's own writes (checkpoints, dead letters) are retried without a limit: when
    /// they fail, the database or the broker is away for every stream alike.
    fn infrastructure_backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(50), self.options.max_retry_backoff)
    }

    fn group_label(&self) -> KeyValue {
        KeyValue::new(
            "messaging.consumer.group.name",
            self.options.group_id.clone(),
        )
    }

    pub(super) fn count(&self, outcome: &'static str) {
        EVENTS.add(1, &[self.group_label(), KeyValue::new("outcome", outcome)]);
    }

    /// Sleeps; false when shutdown came first.
    async fn sleep(&self, wait: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

/// A stream's key in the applied-versions cache: two topics may carry streams named alike.
fn cache_key(topic: &str, stream_id: &str) -> String {
    format!("{topic}\0{stream_id}")
}

fn decode_envelope(message: &OwnedMessage) -> Result<EventEnvelope, String> {
    let payload = message.payload().unwrap_or_default();
    let envelope = EventEnvelope::decode(payload)
        .map_err(|error| format!("value is not a scanloop.common.v1.EventEnvelope: {error}"))?;
    if envelope.stream_id.is_empty() || envelope.version == 0 || envelope.event_type.is_empty() {
        return Err("envelope lacks stream_id, version or event_type".to_owned());
    }
    Ok(envelope)
}

fn dead_letter_headers(
    original: Option<&rdkafka::message::OwnedHeaders>,
    reason: &str,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = original {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    headers.insert(Header {
        key: DLQ_ERROR,
        value: Some(reason),
    })
}

fn timestamp_now() -> prost_types::Timestamp {
    let now = chrono::Utc::now();
    prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: now.timestamp_subsec_nanos() as i32,
    }
}
