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
//!
//! This file wires the runner (the Kafka consumer, the dispatch of records, offsets and pauses);
//! `consumer/lanes.rs` runs the lanes, `consumer/handling.rs` takes one record through the
//! handler (step 2), `consumer/progress.rs` keeps what may be committed per partition (step 3),
//! `consumer/rebalance.rs` follows assignments and revocations (step 4), and
//! `consumer/retry.rs` decides the waits between attempts and when to give up.

mod handling;
mod lanes;
mod progress;
mod rebalance;
mod retry;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use scanloop_proto::common::v1::EventEnvelope;
use scanloop_storage::Checkpoints;
use tokio_util::sync::CancellationToken;

use crate::expiring_map::ExpiringMap;
use crate::headers::{EVENT_TYPE, header};
use crate::producer::EventProducer;
use lanes::Lanes;
use progress::{Partition, Progress};
use rebalance::RebalanceContext;

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

    /// True when handling an event of `event_type` again changes nothing, however late it
    /// comes: after its stream's newer events too, and long after the command ids a stream
    /// remembers are forgotten (every write keyed by the event or guarded by its stream's
    /// version, every command decided from the state it changes). The runner then keeps no
    /// checkpoint for it: no read before, no write after, only what it remembers of the
    /// stream in memory. False (the default) keeps the checkpoint, which drops a redelivery
    /// for good.
    fn idempotent_by_construction(&self, _event_type: &str) -> bool {
        false
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
    applied: Mutex<ExpiringMap<u64>>,
    shutdown: CancellationToken,
}

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
                applied: Mutex::new(ExpiringMap::new(APPLIED_CACHE_WINDOW, APPLIED_CACHE_LIMIT)),
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
        let (mut lanes, mut done_rx) = Lanes::new(self.shared.clone());
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(key) = done_rx.recv() => {
                    lanes.reported(key);
                    while let Ok(key) = done_rx.try_recv() {
                        lanes.reported(key);
                    }
                    self.store_progress();
                }
                Some(()) = lanes.collect_ended(), if lanes.has_tasks() => {}
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        let message = message.detach();
                        self.dispatch(message, &mut lanes);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "kafka consumer error; continuing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        if !lanes.stop(SHUTDOWN_GRACE).await {
            tracing::warn!("handlers still running at shutdown; committing what finished");
        }
        let finished = lock(&self.shared.progress).all_committable();
        if !finished.is_empty() {
            commit(&self.consumer, &finished);
        }
        Ok(())
    }

    /// Hands a record to its stream's lane (unless it is of a partition no longer assigned, or
    /// of a type the handler does not take), pausing its partition when too many are at work.
    fn dispatch(&self, message: OwnedMessage, lanes: &mut Lanes<H>) {
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
        lanes.send(message, claim);
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
