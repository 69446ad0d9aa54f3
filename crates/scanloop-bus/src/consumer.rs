//! The consumer runner: at-least-once delivery from Kafka turned into once-per-(stream, version)
//! application by a handler, with failures kept to the stream they happen in.
//!
//! How it works:
//! 1. each record taken from Kafka goes to its stream's *lane* (streams are the record keys); a
//!    lane handles its stream's records one after the other, in partition order, and lanes run
//!    concurrently, so a stream that waits (retrying, or a slow handler) holds back only itself.
//!    A record of a type the handler does not take ([`EventHandler::event_types`]) is passed by
//!    at once, unread;
//! 2. for each event: drop it if its version is at or below the stream's checkpoint (a
//!    redelivery or a republished duplicate); otherwise call the handler. A permanent failure
//!    ([`HandlerError::Poison`]) sends the record to `<topic>.dlq` at once; a transient one is
//!    retried with capped, jittered exponential backoff, and dead-lettered after
//!    [`ConsumerOptions::max_attempts`] (unless the whole consumer is failing: see
//!    [`retry::Failing::give_up`]). Then the stream's checkpoint advances (forward only);
//! 3. per partition, the offset of the first record not yet finished is stored, and librdkafka
//!    commits stored offsets in the background: nothing is committed before it is handled. A
//!    partition with [`ConsumerOptions::max_pending_per_partition`] records at work is paused
//!    until half of them finished, so memory stays bounded while other partitions go on;
//! 4. when partitions are revoked (another member joined, or this one leaves), queued work for
//!    them is abandoned, what finished is committed at once, and records of them still fetched
//!    are dropped; their new owner starts at that commit and the checkpoints drop what this
//!    member applied after it.

mod progress;
mod retry;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use prost::Message as _;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use scanloop_proto::common::v1::{DeadLetter, EventEnvelope};
use scanloop_storage::Checkpoints;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::headers::{DLQ_ERROR, EVENT_TYPE, TRACEPARENT, header};
use crate::producer::EventProducer;
use crate::recent::Recent;
use crate::topics::dlq_topic;
use progress::{Claim, Partition, Progress};
use retry::{Backoff, Failing};

/// What a handler says about an event it could not apply. The variant decides what the runner
/// does, so choose by whether trying again can help, not by where the error came from.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Permanent: the event can never be applied (undecodable payload, wrong type, a rejection
    /// by the domain, a broken invariant). It goes to the dead-letter topic with this reason at
    /// once and the stream moves on.
    #[error("poison message: {0}")]
    Poison(String),
    /// Transient: a fault that may pass (timeout, database or broker unavailable, contention).
    /// Retried with backoff, at most [`ConsumerOptions::max_attempts`] times while the rest of
    /// the consumer works, then dead-lettered with this error.
    #[error("transient failure: {0:#}")]
    Transient(#[from] anyhow::Error),
}

impl HandlerError {
    /// A permanent failure with its reason.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Poison(reason.into())
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Applies events. Must itself tolerate seeing an event twice after a crash between the handler
/// and the checkpoint, or when a partition moves to another member while its handler runs
/// (upserts, deterministic command ids): the runner drops duplicates it knows of, but cannot
/// make the handler and the checkpoint one atomic write.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(
        &self,
        event: &EventEnvelope,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// The event types this handler takes, when it takes only some of its topics' types. The
    /// runner passes by a record of any other type as it arrives (read from the
    /// `scanloop.event_type` header): no decoding, no lane, no checkpoint read or write.
    fn event_types(&self) -> Option<&'static [&'static str]> {
        None
    }
}

/// Whether `handler` takes events of `event_type`.
fn takes<H: EventHandler>(handler: &H, event_type: &str) -> bool {
    handler
        .event_types()
        .is_none_or(|types| types.contains(&event_type))
}

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub brokers: String,
    /// Kafka consumer group, also the name under which checkpoints are kept.
    pub group_id: String,
    pub topics: Vec<String>,
    /// Records of one partition at work (queued in lanes or being handled) before fetching
    /// that partition pauses. Default 1,000.
    pub max_pending_per_partition: usize,
    /// Where a group with no committed offset starts: the beginning (a new projection replays
    /// all history) unless set to false.
    pub from_beginning: bool,
    /// Handler calls per event before a transient failure is dead-lettered. Default 10, which
    /// with the default backoff is about 20 s of trying.
    pub max_attempts: u32,
    /// First wait after a transient failure; doubles per attempt. Default 100 ms.
    pub initial_retry_backoff: Duration,
    /// Longest wait between attempts (also for the runner's own checkpoint and dead-letter
    /// writes). Default 5 s.
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
            max_pending_per_partition: 1_000,
            from_beginning: true,
            max_attempts: 10,
            initial_retry_backoff: Duration::from_millis(100),
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
    /// Records of types the handler does not take, passed by unread.
    pub passed_by: AtomicU64,
    /// Failed handler attempts that were followed by another attempt.
    pub retries: AtomicU64,
    /// Records left undone because their partition was revoked or the runner stopped; their
    /// partition's next owner (or the restarted runner) does them.
    pub abandoned: AtomicU64,
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
    pub fn passed_by(&self) -> u64 {
        self.passed_by.load(Ordering::Relaxed)
    }
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }
}

/// Follows partition assignments: a revocation ends the partition's claim (its queued work is
/// abandoned) and commits what finished before the partition leaves; an assignment opens a new
/// claim and has cached checkpoints re-read (another member may have advanced them meanwhile).
///
/// librdkafka calls this from inside `recv`, on the runner's own task, so it must not wait for
/// lanes: a handler call already running finishes on its own and its checkpoint write is
/// forward-only, so it cannot undo the new owner's progress.
struct RebalanceContext {
    progress: Arc<Mutex<Progress>>,
    assigned: Arc<AtomicBool>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        let mut finished = Vec::new();
        {
            let mut progress = lock(&self.progress);
            for element in partitions.elements() {
                let partition = (element.topic().to_owned(), element.partition());
                if let Some(offset) = progress.revoke(&partition) {
                    finished.push((partition, offset));
                }
            }
        }
        tracing::info!(
            partitions = partitions.count(),
            "partitions revoked; committing what finished"
        );
        if !finished.is_empty() {
            commit(consumer, &finished);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = partitions.count(), "partitions assigned");
                let mut progress = lock(&self.progress);
                for element in partitions.elements() {
                    progress.assign((element.topic().to_owned(), element.partition()));
                }
                self.assigned.store(true, Ordering::Release);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// Commits `offsets` (next offsets to read) now; a failure is logged, not fatal: the stored
/// offsets were committed in the background until a second ago, and whatever is redelivered
/// is dropped by the checkpoints.
fn commit<C: Consumer<X>, X: ConsumerContext>(consumer: &C, offsets: &[(Partition, i64)]) {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(%error, "cannot build offset commit");
            return;
        }
    }
    if let Err(error) = consumer.commit(&list, CommitMode::Sync) {
        tracing::warn!(%error, "offset commit failed");
    }
}

/// A poisoned lock only means a thread panicked while holding it; the data (offsets, cached
/// versions) is still consistent, since every update is a single insert or remove.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub struct ConsumerRunner<H> {
    consumer: StreamConsumer<RebalanceContext>,
    shared: Arc<Shared<H>>,
    rebalanced: Arc<AtomicBool>,
}

/// What the lanes share.
struct Shared<H> {
    handler: H,
    checkpoints: Checkpoints,
    dlq: EventProducer,
    options: ConsumerOptions,
    stats: Arc<ConsumerStats>,
    progress: Arc<Mutex<Progress>>,
    /// Each stream's applied version as last seen, for streams handled lately; never ahead of
    /// the checkpoint table.
    applied: Mutex<Recent<u64>>,
    shutdown: CancellationToken,
}

/// One record handed to a lane, with the claim on its partition it was taken under.
struct Work {
    message: OwnedMessage,
    claim: Arc<Claim>,
}

/// A stream's lane as the runner sees it.
struct Lane {
    queue: mpsc::UnboundedSender<Work>,
    /// Records sent to the lane and not yet reported back: the lane is dropped at zero.
    outstanding: usize,
}

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

/// How long a stream's applied version stays cached after its last event: a stream's events
/// mostly come seconds apart, and a miss costs one checkpoint read.
const APPLIED_CACHE_WINDOW: Duration = Duration::from_secs(120);

/// Streams whose checkpoint is cached in memory before the cache is cleared (a burst).
const APPLIED_CACHE_LIMIT: usize = 200_000;

/// How long a stopping runner waits for handler calls in progress before it commits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

impl<H: EventHandler> ConsumerRunner<H> {
    pub fn new(
        options: ConsumerOptions,
        handler: H,
        checkpoints: Checkpoints,
        dlq: EventProducer,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let rebalanced = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Mutex::new(Progress::default()));
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
            .set("heartbeat.interval.ms", "3000")
            // A fetch the broker has nothing for waits there this long; a record arriving
            // answers it at once, so this costs no latency, only idle requests (at the default
            // 500 ms, two per second per consumer).
            .set("fetch.wait.max.ms", "5000")
            .set("enable.partition.eof", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create_with_context(RebalanceContext {
                progress: progress.clone(),
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
                progress,
                applied: Mutex::new(Recent::new(APPLIED_CACHE_WINDOW, APPLIED_CACHE_LIMIT)),
                shutdown,
            }),
        })
    }

    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.shared.stats.clone()
    }

    /// Consumes until the shutdown token is cancelled, then lets handler calls in progress end
    /// and commits what finished.
    pub async fn run(self) -> anyhow::Result<()> {
        let shutdown = self.shared.shutdown.clone();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let mut lanes: HashMap<Vec<u8>, Lane> = HashMap::new();
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(key) = done_rx.recv() => {
                    self.lane_reported(&mut lanes, key);
                    while let Ok(key) = done_rx.try_recv() {
                        self.lane_reported(&mut lanes, key);
                    }
                    self.store_progress();
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        let message = message.detach();
                        self.dispatch(message, &mut lanes, &mut tasks, &done_tx);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "kafka consumer error; continuing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        // Lanes skip what they have queued once shutdown is cancelled; dropping their senders
        // ends them after the record they are on.
        drop(lanes);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("handlers still running at shutdown; committing what finished");
        }
        let finished = lock(&self.shared.progress).all_committable();
        if !finished.is_empty() {
            commit(&self.consumer, &finished);
        }
        Ok(())
    }

    /// Hands a record to its stream's lane, starting the lane if needed.
    fn dispatch(
        &self,
        message: OwnedMessage,
        lanes: &mut HashMap<Vec<u8>, Lane>,
        tasks: &mut JoinSet<()>,
        done: &mpsc::UnboundedSender<Vec<u8>>,
    ) {
        if self.rebalanced.swap(false, Ordering::AcqRel) {
            lock(&self.shared.applied).clear();
        }
        let partition: Partition = (message.topic().to_owned(), message.partition());
        let limit = self.shared.options.max_pending_per_partition.max(1);
        let (claim, pause) = {
            let mut progress = lock(&self.shared.progress);
            let Some(claim) = progress.take(&partition, message.offset()) else {
                // Fetched before its partition was revoked: the new owner handles it.
                tracing::debug!(
                    ?partition,
                    "record of a partition no longer assigned dropped"
                );
                return;
            };
            (claim, progress.should_pause(&partition, limit))
        };
        if pause {
            tracing::info!(
                ?partition,
                limit,
                "partition paused while its records drain"
            );
            self.pause_or_resume(std::slice::from_ref(&partition), true);
        }
        let event_type = message.headers().and_then(|h| header(h, EVENT_TYPE));
        if event_type.is_some_and(|t| !takes(&self.shared.handler, t)) {
            lock(&self.shared.progress).finish(&partition, &claim, message.offset());
            self.shared.passed_by();
            self.store_progress();
            return;
        }
        // Unkeyed records (not from the event store) each get a lane of their own partition.
        let key = message.key().map_or_else(
            || format!("\0unkeyed/{}/{}", message.topic(), message.partition()).into_bytes(),
            <[u8]>::to_vec,
        );
        let mut work = Work { message, claim };
        loop {
            let lane = lanes.entry(key.clone()).or_insert_with(|| {
                let (queue, receiver) = mpsc::unbounded_channel();
                tasks.spawn(run_lane(
                    self.shared.clone(),
                    key.clone(),
                    receiver,
                    done.clone(),
                ));
                Lane {
                    queue,
                    outstanding: 0,
                }
            });
            match lane.queue.send(work) {
                Ok(()) => {
                    lane.outstanding += 1;
                    return;
                }
                // The lane's task ended (it only does so when a handler panicked through
                // everything); start a new one for this record.
                Err(mpsc::error::SendError(returned)) => {
                    work = returned;
                    lanes.remove(&key);
                }
            }
        }
    }

    fn lane_reported(&self, lanes: &mut HashMap<Vec<u8>, Lane>, key: Vec<u8>) {
        if let Some(lane) = lanes.get_mut(&key) {
            lane.outstanding = lane.outstanding.saturating_sub(1);
            if lane.outstanding == 0 {
                lanes.remove(&key);
            }
        }
    }

    /// Stores the offsets that moved and resumes partitions that drained.
    fn store_progress(&self) {
        let limit = self.shared.options.max_pending_per_partition.max(1);
        let (moved, resumable) = {
            let mut progress = lock(&self.shared.progress);
            (progress.take_committable(), progress.take_resumable(limit))
        };
        if !moved.is_empty() {
            let mut list = TopicPartitionList::new();
            for ((topic, partition), offset) in &moved {
                if let Err(error) =
                    list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                {
                    tracing::warn!(%error, "cannot build offset list");
                    return;
                }
            }
            if let Err(error) = self.consumer.store_offsets(&list) {
                // The partition moved to another member meanwhile: it resumes from the last
                // commit and drops what this member already applied.
                tracing::warn!(%error, "cannot store offsets");
            }
        }
        if !resumable.is_empty() {
            self.pause_or_resume(&resumable, false);
        }
    }

    fn pause_or_resume(&self, partitions: &[Partition], pause: bool) {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        let result = if pause {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        if let Err(error) = result {
            tracing::warn!(%error, pause, "cannot pause or resume partitions");
        }
    }
}

/// A stream's lane: handles its records in order until the runner drops it.
async fn run_lane<H: EventHandler>(
    shared: Arc<Shared<H>>,
    key: Vec<u8>,
    mut queue: mpsc::UnboundedReceiver<Work>,
    done: mpsc::UnboundedSender<Vec<u8>>,
) {
    while let Some(work) = queue.recv().await {
        let finished = if work.claim.is_revoked() || shared.shutdown.is_cancelled() {
            false
        } else {
            shared.process_one(&work.message).await
        };
        if finished {
            let partition = (work.message.topic().to_owned(), work.message.partition());
            lock(&shared.progress).finish(&partition, &work.claim, work.message.offset());
        } else {
            shared.stats.abandoned.fetch_add(1, Ordering::Relaxed);
            shared.count("abandoned");
        }
        if done.send(key.clone()).is_err() {
            return;
        }
    }
}

impl<H: EventHandler> Shared<H> {
    /// Handles one record; false when it was left unfinished (shutdown or revocation).
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
        // A record published without the type header: the type is known once decoded.
        if !takes(&self.handler, &envelope.event_type) {
            self.passed_by();
            return true;
        }
        let topic = message.topic();
        let Some(applied) = self.applied_version(topic, &envelope.stream_id).await else {
            return false;
        };
        if envelope.version <= applied {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            self.count("duplicate");
            tracing::debug!(applied, "duplicate dropped");
            return true;
        }
        if !self.handle_with_retries(message, envelope).await {
            return false;
        }
        self.advance_checkpoint(topic, &envelope.stream_id, envelope.version)
            .await
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

    fn passed_by(&self) {
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

    fn count(&self, outcome: &'static str) {
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
