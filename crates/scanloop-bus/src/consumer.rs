//! The consumer runner: at-least-once delivery from Kafka turned into once-per-(stream, version)
//! application by a handler.
//!
//! How it works, per poll:
//! 1. take a batch of records (up to `batch_size`, whatever is ready);
//! 2. group them by stream (the record key) keeping partition order, and run the groups
//!    concurrently, each group's events one after the other in version order;
//! 3. for each event: drop it if its version is at or below the stream's checkpoint (a
//!    redelivery or a republished duplicate); otherwise call the handler, retrying transient
//!    failures with backoff; a poison message goes to `<topic>.dlq` with its error and the runner
//!    carries on; then advance the stream's checkpoint;
//! 4. store, per partition, the offset after the longest prefix of finished records; librdkafka
//!    commits stored offsets in the background, so nothing is committed before it is handled.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use std::time::Duration;

use futures::FutureExt as _;
use prost::Message as _;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use scanloop_proto::common::v1::{DeadLetter, EventEnvelope};
use scanloop_storage::Checkpoints;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::headers::{DLQ_ERROR, TRACEPARENT, header};
use crate::producer::EventProducer;
use crate::topics::dlq_topic;

/// What a handler says about an event it could not apply.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event can never be applied (undecodable payload, broken invariant): it goes to the
    /// dead-letter topic with this reason and the consumer moves on.
    #[error("poison message: {0}")]
    Poison(String),
    /// A fault that may pass (database or broker away): retried with backoff.
    #[error("transient failure: {0:#}")]
    Transient(#[from] anyhow::Error),
}

/// Applies events. Must itself tolerate seeing an event twice after a crash between the handler
/// and the checkpoint (upserts, deterministic command ids): the runner drops duplicates it knows
/// of, but cannot make the handler and the checkpoint one atomic write.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(
        &self,
        event: &EventEnvelope,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub brokers: String,
    /// Kafka consumer group, also the name under which checkpoints are kept.
    pub group_id: String,
    pub topics: Vec<String>,
    /// Most records taken per poll.
    pub batch_size: usize,
    /// Where a group with no committed offset starts: the beginning (a new projection replays
    /// all history) unless set to false.
    pub from_beginning: bool,
    pub max_retry_backoff: Duration,
}

impl ConsumerOptions {
    pub fn new(
        brokers: impl Into<String>,
        group_id: impl Into<String>,
        topics: Vec<String>,
    ) -> Self {
        Self {
            brokers: brokers.into(),
            group_id: group_id.into(),
            topics,
            batch_size: 512,
            from_beginning: true,
            max_retry_backoff: Duration::from_secs(5),
        }
    }
}

/// Counters a test, a benchmark or a metrics exporter can read while the runner runs.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub handled: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub retries: AtomicU64,
}

impl ConsumerStats {
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
}

/// Notes partition assignments so that cached checkpoints are re-read after a rebalance (another
/// group member may have advanced them meanwhile).
struct RebalanceContext {
    assigned: Arc<AtomicBool>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partitions assigned");
            self.assigned.store(true, Ordering::Release);
        }
    }
}

pub struct ConsumerRunner<H> {
    consumer: StreamConsumer<RebalanceContext>,
    shared: Arc<Shared<H>>,
    rebalanced: Arc<AtomicBool>,
}

/// What the concurrently processed stream groups share.
struct Shared<H> {
    handler: H,
    checkpoints: Checkpoints,
    dlq: EventProducer,
    options: ConsumerOptions,
    stats: Arc<ConsumerStats>,
    applied: Mutex<HashMap<String, u64>>,
    shutdown: CancellationToken,
}

/// Events per outcome (`handled`, `duplicate`, `dead_lettered`, `retry`) and consumer group.
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

/// Streams whose checkpoint is cached in memory before the cache is cleared.
const APPLIED_CACHE_LIMIT: usize = 200_000;

impl<H: EventHandler> ConsumerRunner<H> {
    pub fn new(
        options: ConsumerOptions,
        handler: H,
        checkpoints: Checkpoints,
        dlq: EventProducer,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let rebalanced = Arc::new(AtomicBool::new(false));
        let consumer: StreamConsumer<RebalanceContext> = ClientConfig::new()
            .set("bootstrap.servers", &options.brokers)
            .set("group.id", &options.group_id)
            // Offsets are stored by us after handling and committed by librdkafka afterwards.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set(
                "auto.offset.reset",
                if options.from_beginning {
                    "earliest"
                } else {
                    "latest"
                },
            )
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create_with_context(RebalanceContext {
                assigned: rebalanced.clone(),
            })?;
        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self {
            consumer,
            rebalanced,
            shared: Arc::new(Shared {
                handler,
                checkpoints,
                dlq,
                options,
                stats: Arc::new(ConsumerStats::default()),
                applied: Mutex::new(HashMap::new()),
                shutdown,
            }),
        })
    }

    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.shared.stats.clone()
    }

    /// Consumes until the shutdown token is cancelled, then commits what was handled.
    pub async fn run(self) -> anyhow::Result<()> {
        let shutdown = self.shared.shutdown.clone();
        let mut committed: HashMap<(String, i32), i64> = HashMap::new();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                received = self.consumer.recv() => received,
            };
            let mut batch = match first {
                Ok(message) => vec![message.detach()],
                Err(error) => {
                    tracing::warn!(%error, "kafka consumer error; continuing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            // Take whatever else is already fetched, without waiting.
            while batch.len() < self.shared.options.batch_size {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => batch.push(message.detach()),
                    _ => break,
                }
            }
            if self.rebalanced.swap(false, Ordering::AcqRel) {
                self.shared.applied.lock().expect("applied cache").clear();
            }
            let finished = self.process_batch(&batch).await;
            for ((topic, partition), offset) in finished {
                match self.consumer.store_offset(&topic, partition, offset) {
                    Ok(()) => {
                        committed.insert((topic, partition), offset + 1);
                    }
                    // The partition moved to another member meanwhile: it resumes from the last
                    // commit and drops what this member already applied.
                    Err(error) => tracing::warn!(%error, topic, partition, "cannot store offset"),
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        self.commit_final(&committed);
        Ok(())
    }

    /// Handles a batch; returns, per partition, the offset of the last record of the longest
    /// finished prefix (everything, unless shutdown interrupted a retry).
    async fn process_batch(&self, batch: &[OwnedMessage]) -> HashMap<(String, i32), i64> {
        let mut groups: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        let mut unkeyed = Vec::new();
        for (index, message) in batch.iter().enumerate() {
            match message.key() {
                Some(key) => groups.entry(key.to_vec()).or_default().push(index),
                None => unkeyed.push(vec![index]),
            }
        }
        let work = groups.into_values().chain(unkeyed).map(|indexes| {
            let shared = self.shared.clone();
            async move {
                let mut done = Vec::with_capacity(indexes.len());
                for index in indexes {
                    if !shared.process_one(&batch[index]).await {
                        break;
                    }
                    done.push(index);
                }
                done
            }
        });
        let mut finished = vec![false; batch.len()];
        for index in futures::future::join_all(work).await.into_iter().flatten() {
            finished[index] = true;
        }

        let mut stored: HashMap<(String, i32), i64> = HashMap::new();
        let mut blocked: HashMap<(String, i32), bool> = HashMap::new();
        for (message, done) in batch.iter().zip(finished) {
            let partition = (message.topic().to_owned(), message.partition());
            let is_blocked = blocked.entry(partition.clone()).or_insert(false);
            if *is_blocked || !done {
                *is_blocked = true;
                continue;
            }
            stored.insert(partition, message.offset());
        }
        stored
    }

    fn commit_final(&self, committed: &HashMap<(String, i32), i64>) {
        if committed.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in committed {
            if let Err(error) =
                list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            {
                tracing::warn!(%error, "cannot build final commit");
                return;
            }
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Sync) {
            // Not fatal: the stored offsets were committed in the background up to a second ago,
            // and anything redelivered is dropped by the checkpoints.
            tracing::warn!(%error, "final offset commit failed");
        }
    }
}

impl<H: EventHandler> Shared<H> {
    /// Handles one record; false when shutdown interrupted it before it was finished.
    async fn process_one(&self, message: &OwnedMessage) -> bool {
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
        let Some(applied) = self.applied_version(&envelope.stream_id).await else {
            return false;
        };
        if envelope.version <= applied {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            self.count("duplicate");
            tracing::debug!(applied, "duplicate dropped");
            return true;
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.handler.handle(envelope).await {
                Ok(()) => {
                    self.stats.handled.fetch_add(1, Ordering::Relaxed);
                    self.count("handled");
                    if let Some(recorded) =
                        scanloop_proto::time::from_timestamp(envelope.recorded_at.as_ref())
                    {
                        let lag = (chrono::Utc::now() - recorded).to_std().unwrap_or_default();
                        LAG.record(lag.as_secs_f64(), &[self.group_label()]);
                    }
                    break;
                }
                Err(HandlerError::Poison(reason)) => {
                    if !self.dead_letter(message, &reason).await {
                        return false;
                    }
                    break;
                }
                Err(HandlerError::Transient(error)) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.count("retry");
                    tracing::warn!(error = %format!("{error:#}"), ?backoff, "handler failed; retrying");
                    if !self.pause(&mut backoff).await {
                        return false;
                    }
                }
            }
        }
        self.advance_checkpoint(&envelope.stream_id, envelope.version)
            .await
    }

    /// The stream's applied version, from the cache or the checkpoint table (retrying while the
    /// database is away). None when shutdown interrupted the wait.
    async fn applied_version(&self, stream_id: &str) -> Option<u64> {
        if let Some(version) = self.applied.lock().expect("applied cache").get(stream_id) {
            return Some(*version);
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match self
                .checkpoints
                .applied(&self.options.group_id, stream_id)
                .await
            {
                Ok(version) => return Some(version),
                Err(error) => {
                    tracing::warn!(%error, "cannot read checkpoint; retrying");
                    if !self.pause(&mut backoff).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn advance_checkpoint(&self, stream_id: &str, version: u64) -> bool {
        let mut backoff = Duration::from_millis(50);
        while let Err(error) = self
            .checkpoints
            .record(&self.options.group_id, stream_id, version)
            .await
        {
            tracing::warn!(%error, "cannot record checkpoint; retrying");
            if !self.pause(&mut backoff).await {
                return false;
            }
        }
        let mut cache = self.applied.lock().expect("applied cache");
        if cache.len() >= APPLIED_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(stream_id.to_owned(), version);
        true
    }

    /// Sends the record to `<topic>.dlq` with the reason, retrying until the broker takes it.
    async fn dead_letter(&self, message: &OwnedMessage, reason: &str) -> bool {
        tracing::error!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "poison message sent to the dead-letter topic"
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
        let mut backoff = Duration::from_millis(50);
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
                    if !self.pause(&mut backoff).await {
                        return false;
                    }
                }
            }
        }
    }

    fn group_label(&self) -> KeyValue {
        KeyValue::new(
            "messaging.consumer.group.name",
            self.options.group_id.clone(),
        )
    }

    fn count(&self, outcome: &'static str) {
        EVENTS.add(1, &[self.group_label(), KeyValue::new("outcome", outcome)]);
    }

    /// Sleeps for the backoff (doubling it up to the maximum); false when shutdown came first.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        let sleep = *backoff;
        *backoff = (*backoff * 2).min(self.options.max_retry_backoff);
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(sleep) => true,
        }
    }
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
