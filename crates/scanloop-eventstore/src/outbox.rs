//! Append-and-publish without a dual-write hole.
//!
//! Order of writes for one append:
//! 1. a pending marker (`outbox_pending`, keyed by shard, 10-second bucket, time, stream, first
//!    version and a fresh append id, so it is never overwritten) — *before* the append, because the
//!    marker cannot share the append's conditional batch (that batch is confined to the stream's
//!    partition). Concurrent appends of one process share the marker write (group commit: one
//!    batch into one marker partition per flush);
//! 2. the conditional append. The command is acknowledged here: its events are durable and
//!    the marker guarantees their publication;
//! 3. in the background, the stream's unpublished range, `(published_version, head]`, is handed
//!    to the producer in version order, where many streams' records share Kafka requests;
//! 4. once the brokers acknowledged it, `published_version` advances and the marker is deleted
//!    (both group-committed with other streams').
//!
//! A crash after 1 leaves a marker and maybe events: the [`Sweeper`] finds markers older than a
//! few seconds, publishes whatever the stream has unpublished and deletes them. Duplicates are
//! possible (a crash between 3 and 4), losses are not.
//!
//! Per stream, one process never has two publications in flight: a stream's next range waits
//! for the previous one's acknowledgement (so a failed range can never be overtaken by a later
//! one that succeeds), and starts after what that one published.
//!
//! Read-your-writes: a caller whose command was acknowledged can load the stream at once (the
//! event store is the truth). Kafka, and the read models projected from it, follow a few
//! milliseconds later, as they always did: projections were never part of the acknowledgement.
//!
//! Markers are filed under their writer's clock, and clocks differ between hosts: a writer
//! whose clock is behind files its marker in a bucket the sweeper already considers old. The
//! sweeper therefore never moves its cursor past a bucket younger than [`SETTLE`]
//! ([`MAX_CLOCK_SKEW`] plus [`MAX_WRITE_DELAY`]), and re-reads those buckets on every pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use scanloop_bus::EventProducer;
use scanloop_storage::DbError;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::event::{AppendMeta, NewEvent, RecordedEvent};
use crate::group_commit::{GroupCommit, Sharing};
use crate::publication::{Chains, Publication};
use crate::store::{AppendError, EventStore};

/// Markers are spread over this many shards. Changing it strands old markers in shards the
/// sweeper no longer reads, so it is a constant of the schema, not a setting.
pub const MARKER_SHARDS: i32 = 16;

/// Markers are grouped in buckets of this many milliseconds of their creation time; a bucket and
/// a shard make one partition. Also a constant of the schema.
pub const BUCKET_MILLIS: i64 = 10_000;

/// The largest difference between two hosts' clocks the outbox tolerates (NTP keeps real hosts
/// within milliseconds; this is the allowance for a host whose sync failed).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(120);

/// The longest a writer takes from reading its clock for a marker until the marker's insert, or
/// the append it announces, has landed: far above the driver's request timeouts.
pub const MAX_WRITE_DELAY: Duration = Duration::from_secs(30);

/// How long, on the sweeper's clock, a bucket may still receive markers: a writer whose clock
/// is [`MAX_CLOCK_SKEW`] behind, slowed by [`MAX_WRITE_DELAY`], files into a bucket this old.
/// The sweeper's cursor never passes a bucket younger than this.
pub const SETTLE: Duration =
    Duration::from_secs(MAX_CLOCK_SKEW.as_secs() + MAX_WRITE_DELAY.as_secs());

fn bucket_of(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis().div_euclid(BUCKET_MILLIS)
}

/// The result of an append through the outbox.
#[derive(Debug)]
pub struct Appended {
    pub events: Vec<RecordedEvent>,
    /// The events' way to Kafka, which goes on in the background: the append is acknowledged
    /// once it is durable and its marker guarantees the publication.
    pub publication: Publication,
}

impl Appended {
    /// The stream's version after this append.
    pub fn version(&self) -> u64 {
        self.events.last().map_or(0, |e| e.version)
    }
}

/// One publication counted in flight until dropped (also when its task panics).
struct InFlight(tokio::sync::watch::Sender<usize>);

impl InFlight {
    fn start(count: &tokio::sync::watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Whether a publication's published version was recorded.
enum Recorded {
    Yes,
    No,
}

/// Most markers one group-committed write carries: one partition, under Cassandra's batch
/// size warning (5 KiB).
const MARKERS_PER_FLUSH: usize = 40;
/// Most streams whose published versions share one write: Cassandra warns about unlogged
/// batches over more than 10 partitions.
const PUBLISHED_VERSIONS_PER_FLUSH: usize = 10;
/// Group-committed writes of one kind in flight at once.
const FLUSHES_IN_FLIGHT: usize = 4;

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    producer: EventProducer,
    topic: String,
    /// Files markers, many appends' per write; answers where a flush filed them.
    markers: GroupCommit<PendingMarker, Filed>,
    marker_deletes: GroupCommit<Marker, ()>,
    published_versions: GroupCommit<(String, u64), ()>,
    /// Each stream's latest publication in this process.
    chains: Chains,
    /// Publications started and not finished, for a graceful shutdown to wait for.
    in_flight: tokio::sync::watch::Sender<usize>,
    delete_marker: PreparedStatement,
    old_markers: PreparedStatement,
    load_cursor: PreparedStatement,
    save_cursor: PreparedStatement,
}

/// One marker's primary key.
#[derive(Debug, Clone)]
struct Marker {
    shard: i32,
    bucket: i64,
    created_at: DateTime<Utc>,
    stream_id: String,
    first_version: u64,
    append_id: Uuid,
}

/// What an appender asks the marker flush to file.
struct PendingMarker {
    stream_id: String,
    first_version: u64,
    append_id: Uuid,
}

/// Where one flush filed its markers: one shard, one bucket, one time.
#[derive(Debug, Clone, Copy)]
struct Filed {
    shard: i32,
    bucket: i64,
    created_at: DateTime<Utc>,
}

impl Outbox {
    pub async fn new(
        store: EventStore,
        keyspace: &str,
        producer: EventProducer,
        topic: impl Into<String>,
    ) -> Result<Self, DbError> {
        Self::with_clock_skew(store, keyspace, producer, topic, chrono::Duration::zero()).await
    }

    /// [`Outbox::new`] for a writer whose markers are filed as if the host's clock were off by
    /// `skew` (negative: behind). For tests of the sweeper's clock-skew allowance; nothing else
    /// should need it.
    pub async fn with_clock_skew(
        store: EventStore,
        keyspace: &str,
        producer: EventProducer,
        topic: impl Into<String>,
        skew: chrono::Duration,
    ) -> Result<Self, DbError> {
        let session = store.session().clone();
        let insert_marker = session
            .prepare(format!(
                "INSERT INTO {keyspace}.outbox_pending \
                 (shard, bucket, created_at, stream_id, first_version, append_id) \
                 VALUES (?, ?, ?, ?, ?, ?)"
            ))
            .await?;
        let delete_marker = session
            .prepare(format!(
                "DELETE FROM {keyspace}.outbox_pending WHERE shard = ? AND bucket = ? \
                 AND created_at = ? AND stream_id = ? AND first_version = ? AND append_id = ?"
            ))
            .await?;
        let old_markers = session
            .prepare(format!(
                "SELECT created_at, stream_id, first_version, append_id \
                 FROM {keyspace}.outbox_pending WHERE shard = ? AND bucket = ? AND created_at < ?"
            ))
            .await?;
        let load_cursor = session
            .prepare(format!(
                "SELECT bucket FROM {keyspace}.outbox_sweep_cursor WHERE shard = ?"
            ))
            .await?;
        let save_cursor = session
            .prepare(format!(
                "INSERT INTO {keyspace}.outbox_sweep_cursor (shard, bucket) VALUES (?, ?)"
            ))
            .await?;
        let set_published_version = session
            .prepare(format!(
                "UPDATE {keyspace}.events SET published_version = ? WHERE stream_id = ?"
            ))
            .await?;
        // Every shard gets a sweep cursor before this writer's first marker, so the sweeper
        // knows where to start: far enough back for this host's clock to be ahead by the
        // allowed skew while another writer's is behind by as much.
        let initial = bucket_of(Utc::now() - to_chrono(SETTLE + MAX_CLOCK_SKEW));
        let init_cursor = session
            .prepare(format!(
                "INSERT INTO {keyspace}.outbox_sweep_cursor (shard, bucket) VALUES (?, ?) \
                 IF NOT EXISTS"
            ))
            .await?;
        for shard in 0..MARKER_SHARDS {
            session
                .execute_unpaged(&init_cursor, (shard, initial))
                .await?;
        }
        let markers = file_markers(session.clone(), insert_marker, skew);
        let marker_deletes = delete_markers(session.clone(), delete_marker.clone());
        let published_versions = advance_published_versions(session, set_published_version);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                producer,
                topic: topic.into(),
                markers,
                marker_deletes,
                published_versions,
                chains: Chains::default(),
                in_flight: tokio::sync::watch::Sender::new(0),
                delete_marker,
                old_markers,
                load_cursor,
                save_cursor,
            }),
        })
    }

    pub fn store(&self) -> &EventStore {
        &self.inner.store
    }

    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// Appends `events` after `expected_version` and publishes the stream's unpublished range.
    /// Success means the events are stored and their publication is guaranteed (by a marker
    /// the sweeper would find); [`Appended::publication`] says when they reached Kafka.
    pub async fn append(
        &self,
        stream_id: &str,
        expected_version: u64,
        meta: &AppendMeta,
        events: Vec<NewEvent>,
    ) -> Result<Appended, AppendError> {
        self.append_known(stream_id, expected_version, None, meta, events)
            .await
    }

    /// [`Outbox::append`] by a writer that read the stream's published version with the events
    /// it decided on (`published`), so publishing needs no read of it. The value may be behind
    /// by then (another publisher finished meanwhile): that only repeats events on the topic,
    /// which consumers drop; it is never ahead, as the version only grows.
    pub async fn append_known(
        &self,
        stream_id: &str,
        expected_version: u64,
        published: Option<u64>,
        meta: &AppendMeta,
        events: Vec<NewEvent>,
    ) -> Result<Appended, AppendError> {
        crate::store::validate_append(stream_id, &events)?;
        let pending = PendingMarker {
            stream_id: stream_id.to_owned(),
            first_version: expected_version + 1,
            append_id: Uuid::new_v4(),
        };
        let (append_id, first_version) = (pending.append_id, pending.first_version);
        let filed = self
            .inner
            .markers
            .submit(pending)
            .await
            .map_err(AppendError::Unavailable)?;
        let marker = Marker {
            shard: filed.shard,
            bucket: filed.bucket,
            created_at: filed.created_at,
            stream_id: stream_id.to_owned(),
            first_version,
            append_id,
        };

        let recorded = match self
            .inner
            .store
            .append(stream_id, expected_version, meta, events)
            .await
        {
            Ok(recorded) => recorded,
            Err(error) => {
                // Nothing was appended by this writer unless the outcome is unknown
                // (unavailable): then the marker stays for the sweeper to resolve.
                if !matches!(error, AppendError::Unavailable(_)) {
                    self.inner.marker_deletes.submit_detached(marker);
                }
                return Err(error);
            }
        };
        let publication = self.publish_in_background(marker, recorded.clone(), published);
        Ok(Appended {
            events: recorded,
            publication,
        })
    }

    /// Starts the publication of `ours` (just appended, announced by `marker`) behind the
    /// stream's previous publication in this process.
    fn publish_in_background(
        &self,
        marker: Marker,
        ours: Vec<RecordedEvent>,
        known: Option<u64>,
    ) -> Publication {
        let last = ours.last().map_or(0, |e| e.version);
        let (link, done) = self.inner.chains.link(&marker.stream_id, last);
        let outbox = self.clone();
        let counted = InFlight::start(&self.inner.in_flight);
        tokio::spawn(async move {
            let _counted = counted;
            let stream_id = marker.stream_id.clone();
            // The previous range of this stream, if still on its way: ours starts after it,
            // and never goes out before it is acknowledged.
            let before = match link.previous {
                Some(previous) => previous.reached().await,
                None => None,
            };
            match outbox.publish_after(&stream_id, &ours, known, before).await {
                Ok(Recorded::Yes) => {
                    outbox.inner.marker_deletes.submit_detached(marker);
                    done.finish(true);
                }
                // Out, but not recorded as such: the marker stays, so that the sweeper
                // records it (repeating the events, which consumers drop).
                Ok(Recorded::No) => done.finish(true),
                Err(error) => {
                    tracing::warn!(
                        stream_id,
                        error = %format!("{error:#}"),
                        "append stored but not yet published; the sweeper will publish it"
                    );
                    crate::metrics::DEFERRED.add(1, &[]);
                    done.finish(false);
                }
            }
        });
        link.publication
    }

    /// How the outbox's group-committed writes were shared so far: markers, marker deletes,
    /// published versions.
    pub fn sharing(&self) -> [(&'static str, Sharing); 3] {
        [
            ("markers", self.inner.markers.sharing()),
            ("marker deletes", self.inner.marker_deletes.sharing()),
            (
                "published versions",
                self.inner.published_versions.sharing(),
            ),
        ]
    }

    /// Waits until every publication this process started has finished, for at most
    /// `timeout`; false if some are still on their way (their markers stay for the sweeper).
    pub async fn drain(&self, timeout: Duration) -> bool {
        let mut in_flight = self.inner.in_flight.subscribe();
        tokio::time::timeout(timeout, in_flight.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|outcome| outcome.is_ok())
    }

    /// Publishes everything of `stream_id` after its published version up to and including the
    /// last of `ours` (the events this writer just appended, already in memory), and records
    /// the new published version. `known` is the published version the writer read with its
    /// load; `before`, how far this process's previous publication of the stream reached.
    async fn publish_after(
        &self,
        stream_id: &str,
        ours: &[RecordedEvent],
        known: Option<u64>,
        before: Option<u64>,
    ) -> anyhow::Result<Recorded> {
        let (Some(first), Some(last)) = (ours.first(), ours.last()) else {
            return Ok(Recorded::Yes);
        };
        // A stream this append created (its first event is version 1) has published nothing
        // before ours, so its published version needs no read; nor does one the writer read
        // with its load, or that this process published itself. Should another publisher
        // (the sweeper) publish in between, events go out twice, which consumers drop.
        let published = match (known, before) {
            _ if first.version == 1 => 0,
            (Some(a), Some(b)) => a.max(b),
            (Some(v), None) | (None, Some(v)) => v,
            (None, None) => self.inner.store.published_version(stream_id).await?,
        };
        if published >= last.version {
            return Ok(Recorded::Yes);
        }
        let mut range = if published + 1 < first.version {
            // Earlier appends are unpublished (their writer is slow or died): ours must not
            // overtake them.
            self.inner
                .store
                .load_range(stream_id, published, first.version - 1)
                .await?
        } else {
            Vec::new()
        };
        range.extend(ours.iter().filter(|e| e.version > published).cloned());
        let envelopes: Vec<_> = range.iter().map(RecordedEvent::to_envelope).collect();
        self.inner
            .producer
            .enqueue_in_order(&self.inner.topic, &envelopes)
            .await?
            .acknowledged()
            .await?;
        record_publish_lag(&range);
        match self
            .inner
            .published_versions
            .submit((stream_id.to_owned(), last.version))
            .await
        {
            Ok(()) => Ok(Recorded::Yes),
            Err(error) => {
                tracing::warn!(stream_id, %error, "published, but cannot record it");
                Ok(Recorded::No)
            }
        }
    }

    /// Publishes whatever `stream_id` has unpublished. Returns the stream's head version.
    pub async fn publish_stream(&self, stream_id: &str) -> anyhow::Result<u64> {
        let published = self.inner.store.published_version(stream_id).await?;
        let pending = self.inner.store.load(stream_id, published).await?;
        if let Some(last) = pending.last() {
            let envelopes: Vec<_> = pending.iter().map(RecordedEvent::to_envelope).collect();
            self.inner
                .producer
                .publish_in_order(&self.inner.topic, &envelopes)
                .await?;
            record_publish_lag(&pending);
            self.inner
                .store
                .set_published_version(stream_id, last.version)
                .await?;
        }
        Ok(pending.last().map_or(published, |e| e.version))
    }

    async fn delete_marker_quietly(&self, marker: &Marker) {
        if let Err(error) = self
            .inner
            .store
            .session()
            .execute_unpaged(&self.inner.delete_marker, marker.key())
            .await
        {
            // The sweeper deletes it later; it only costs an extra look at the stream.
            tracing::warn!(stream_id = marker.stream_id, %error, "cannot delete outbox marker");
        }
    }

    async fn markers_older_than(
        &self,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<Marker>, DbError> {
        use futures::TryStreamExt as _;
        let pager = self
            .inner
            .store
            .session()
            .execute_iter(self.inner.old_markers.clone(), (shard, bucket, cutoff))
            .await?;
        let rows: Vec<(DateTime<Utc>, String, i64, Uuid)> = pager
            .rows_stream::<(DateTime<Utc>, String, i64, Uuid)>()?
            .try_collect()
            .await?;
        Ok(rows
            .into_iter()
            .map(|(created_at, stream_id, first_version, append_id)| Marker {
                shard,
                bucket,
                created_at,
                stream_id,
                first_version: first_version.max(0) as u64,
                append_id,
            })
            .collect())
    }

    /// The first bucket of `shard` the sweeper still has to read, if recorded.
    async fn cursor(&self, shard: i32) -> Result<Option<i64>, DbError> {
        let rows = self
            .inner
            .store
            .session()
            .execute_unpaged(&self.inner.load_cursor, (shard,))
            .await?
            .into_rows_result()?;
        Ok(rows.maybe_first_row::<(Option<i64>,)>()?.and_then(|(b,)| b))
    }

    async fn set_cursor(&self, shard: i32, bucket: i64) -> Result<(), DbError> {
        self.inner
            .store
            .session()
            .execute_unpaged(&self.inner.save_cursor, (shard, bucket))
            .await?;
        Ok(())
    }
}

impl Marker {
    fn key(&self) -> (i32, i64, DateTime<Utc>, &str, i64, Uuid) {
        (
            self.shard,
            self.bucket,
            self.created_at,
            self.stream_id.as_str(),
            self.first_version as i64,
            self.append_id,
        )
    }
}

/// The group commit that files markers: each flush writes its markers into one partition (a
/// shard taken in turn, the bucket of the flush's time) in one unlogged batch. The sweeper reads
/// every shard, so which one a marker lands in does not matter; taking them in turn spreads
/// the partitions as one shard per stream did.
fn file_markers(
    session: Arc<Session>,
    insert: PreparedStatement,
    skew: chrono::Duration,
) -> GroupCommit<PendingMarker, Filed> {
    let turn = Arc::new(AtomicU32::new(rand_start()));
    GroupCommit::spawn(
        "outbox markers",
        MARKERS_PER_FLUSH,
        FLUSHES_IN_FLIGHT,
        move |pending: Vec<PendingMarker>| {
            let (session, insert) = (session.clone(), insert.clone());
            let shard =
                (turn.fetch_add(1, Ordering::Relaxed) % MARKER_SHARDS.unsigned_abs()) as i32;
            async move {
                let created_at = (Utc::now() + skew).trunc_subsecs(3);
                let filed = Filed {
                    shard,
                    bucket: bucket_of(created_at),
                    created_at,
                };
                let values: Vec<_> = pending
                    .iter()
                    .map(|m| {
                        (
                            filed.shard,
                            filed.bucket,
                            filed.created_at,
                            m.stream_id.as_str(),
                            m.first_version as i64,
                            m.append_id,
                        )
                    })
                    .collect();
                session
                    .batch(&unlogged(&insert, values.len()), values)
                    .await?;
                Ok(filed)
            }
        },
    )
}

/// The group commit that deletes markers whose events are out: one batch per marker partition.
fn delete_markers(session: Arc<Session>, delete: PreparedStatement) -> GroupCommit<Marker, ()> {
    GroupCommit::spawn(
        "outbox marker deletes",
        MARKERS_PER_FLUSH,
        FLUSHES_IN_FLIGHT,
        move |markers: Vec<Marker>| {
            let (session, delete) = (session.clone(), delete.clone());
            async move {
                let mut by_partition: BTreeMap<(i32, i64), Vec<&Marker>> = BTreeMap::new();
                for marker in &markers {
                    by_partition
                        .entry((marker.shard, marker.bucket))
                        .or_default()
                        .push(marker);
                }
                let writes = by_partition.values().map(|markers| {
                    let values: Vec<_> = markers.iter().map(|m| m.key()).collect();
                    let batch = unlogged(&delete, values.len());
                    let session = session.clone();
                    async move { session.batch(&batch, values).await }
                });
                for outcome in futures::future::join_all(writes).await {
                    outcome?;
                }
                Ok(())
            }
        },
    )
}

/// The group commit that records how far streams are published, a few streams per write. A
/// stream named twice in one flush is written once, with the higher version.
fn advance_published_versions(
    session: Arc<Session>,
    update: PreparedStatement,
) -> GroupCommit<(String, u64), ()> {
    GroupCommit::spawn(
        "published versions",
        PUBLISHED_VERSIONS_PER_FLUSH,
        FLUSHES_IN_FLIGHT,
        move |advances: Vec<(String, u64)>| {
            let (session, update) = (session.clone(), update.clone());
            async move {
                let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
                for (stream_id, version) in &advances {
                    let entry = highest.entry(stream_id.as_str()).or_default();
                    *entry = (*entry).max(*version);
                }
                let values: Vec<_> = highest
                    .into_iter()
                    .map(|(stream_id, version)| (version as i64, stream_id))
                    .collect();
                session
                    .batch(&unlogged(&update, values.len()), values)
                    .await?;
                Ok(())
            }
        },
    )
}

/// An unlogged batch of `n` executions of `statement`.
fn unlogged(statement: &PreparedStatement, n: usize) -> Batch {
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in 0..n {
        batch.append_statement(statement.clone());
    }
    batch
}

/// Where this process starts taking marker shards in turn, so that processes started together
/// do not all begin at shard 0.
fn rand_start() -> u32 {
    (Uuid::new_v4().as_u128() % u128::from(MARKER_SHARDS.unsigned_abs())) as u32
}

fn record_publish_lag(events: &[RecordedEvent]) {
    if let Some(first) = events.first() {
        let lag = (Utc::now() - first.recorded_at)
            .to_std()
            .unwrap_or_default();
        crate::metrics::PUBLISH_LAG.record(lag.as_secs_f64(), &[]);
    }
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Republishes ranges left behind by writers that crashed (or lost Kafka) between their append
/// and their publish. Each stream is handled on its own: one that cannot be published (a record
/// the broker refuses, say) is logged, counted in `scanloop.outbox.sweep_failures`, keeps its
/// markers for the next pass, and the pass goes on with the others.
pub struct Sweeper {
    outbox: Outbox,
    /// A marker younger than this may belong to a writer still at work.
    pub min_age: Duration,
    /// A marker whose append never landed (the stream never reached its first version) is
    /// dropped after this long: no append outlives [`MAX_WRITE_DELAY`], and the marker may look
    /// up to [`MAX_CLOCK_SKEW`] older than it is. Default [`SETTLE`].
    pub abandon_after: Duration,
    /// Buckets younger than this may still receive markers: the cursor never passes them.
    /// Default [`SETTLE`]; shorter loses the markers of writers whose clocks are behind.
    pub settle: Duration,
    pub interval: Duration,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub streams_published: usize,
    /// Streams whose publication failed in this pass; their markers stay for the next.
    pub streams_failed: usize,
    pub markers_deleted: usize,
    pub markers_kept: usize,
    pub buckets_read: usize,
    /// Buckets (or shard cursors) that could not be read; their shard resumes there next pass.
    pub buckets_failed: usize,
}

impl Sweeper {
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            min_age: Duration::from_secs(5),
            abandon_after: SETTLE,
            settle: SETTLE,
            interval: Duration::from_secs(3),
        }
    }

    /// Sets how old a marker must be before the sweeper takes it over, and how often it looks.
    pub fn with_timing(mut self, min_age: Duration, interval: Duration) -> Self {
        self.min_age = min_age;
        self.interval = interval;
        self
    }

    /// Sweeps every `interval` until cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.sweep_once().await {
                Ok(report) if report.streams_published > 0 || report.streams_failed > 0 => {
                    tracing::info!(?report, "sweeper republished stranded events");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %format!("{error:#}"), "sweep failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Reads each shard's buckets from its cursor up to the newest bucket holding markers older
    /// than `min_age`, publishes what their streams have unpublished, deletes the markers that
    /// are done, and moves the cursor past the settled buckets left without markers. A failure
    /// stays with its stream (or its shard): the rest of the pass goes on.
    pub async fn sweep_once(&self) -> anyhow::Result<SweepReport> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(self.min_age)?;
        let abandon_cutoff = now - chrono::Duration::from_std(self.abandon_after)?;
        let settled = bucket_of(now - chrono::Duration::from_std(self.settle)?);
        let newest = bucket_of(cutoff);
        let mut report = SweepReport::default();
        for shard in 0..MARKER_SHARDS {
            let start = match self.outbox.cursor(shard).await {
                Ok(Some(bucket)) => bucket,
                Ok(None) => {
                    // Outbox::new records cursors before any marker is written; without one,
                    // look back further than any clock skew could reach.
                    tracing::warn!(shard, "no sweep cursor; scanning the last ten minutes");
                    bucket_of(now - chrono::Duration::minutes(10))
                }
                Err(error) => {
                    sweep_failure("cursor", shard, None, &error);
                    report.buckets_failed += 1;
                    continue;
                }
            };
            let mut unfinished = None;
            for bucket in start..=newest {
                report.buckets_read += 1;
                let kept = match self
                    .sweep_bucket(shard, bucket, cutoff, abandon_cutoff, &mut report)
                    .await
                {
                    Ok(kept) => kept,
                    Err(error) => {
                        // The bucket's markers are unknown: the cursor stays at it.
                        sweep_failure("bucket", shard, None, &error);
                        report.buckets_failed += 1;
                        unfinished.get_or_insert(bucket);
                        break;
                    }
                };
                if unfinished.is_none() && (kept > 0 || bucket >= settled) {
                    unfinished = Some(bucket);
                }
            }
            let next = unfinished.unwrap_or(newest + 1).min(settled);
            if next > start
                && let Err(error) = self.outbox.set_cursor(shard, next).await
            {
                // Harmless: the next pass reads the same buckets again.
                sweep_failure("cursor", shard, None, &error);
            }
        }
        Ok(report)
    }

    /// Handles one bucket's old markers; returns how many it had to keep.
    async fn sweep_bucket(
        &self,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
        abandon_cutoff: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> anyhow::Result<usize> {
        let mut by_stream: BTreeMap<String, Vec<Marker>> = BTreeMap::new();
        for marker in self
            .outbox
            .markers_older_than(shard, bucket, cutoff)
            .await?
        {
            by_stream
                .entry(marker.stream_id.clone())
                .or_default()
                .push(marker);
        }
        let mut kept = 0;
        for (stream_id, markers) in by_stream {
            let head = match self.outbox.publish_stream(&stream_id).await {
                Ok(head) => head,
                Err(error) => {
                    // Its markers stay, so the next pass tries again; the other streams of
                    // this pass do not wait for it.
                    sweep_failure("stream", shard, Some(&stream_id), &error);
                    report.streams_failed += 1;
                    report.markers_kept += markers.len();
                    kept += markers.len();
                    continue;
                }
            };
            report.streams_published += 1;
            crate::metrics::SWEPT.add(1, &[]);
            for marker in markers {
                // The marker's events (or a competitor's at those versions) are out, or the
                // append it announced never happened.
                if head >= marker.first_version || marker.created_at < abandon_cutoff {
                    self.outbox.delete_marker_quietly(&marker).await;
                    report.markers_deleted += 1;
                } else {
                    report.markers_kept += 1;
                    kept += 1;
                }
            }
        }
        Ok(kept)
    }
}

/// Logs and counts one thing the sweeper could not do in this pass.
fn sweep_failure(
    what: &'static str,
    shard: i32,
    stream_id: Option<&str>,
    error: &dyn std::fmt::Display,
) {
    tracing::warn!(
        what,
        shard,
        stream_id,
        error = %format!("{error:#}"),
        "sweeper could not finish; retrying on the next pass"
    );
    crate::metrics::SWEEP_FAILURES.add(1, &[opentelemetry::KeyValue::new("what", what)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ten_second_windows() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            bucket_of(at("2026-01-01T00:00:09.999Z")),
            bucket_of(at("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            bucket_of(at("2026-01-01T00:00:10Z")),
            bucket_of(at("2026-01-01T00:00:00Z")) + 1
        );
    }

    #[test]
    fn the_settle_window_covers_the_clock_skew_allowance() {
        assert_eq!(MAX_CLOCK_SKEW, Duration::from_secs(120));
        assert_eq!(SETTLE, Duration::from_secs(150));
        // A writer 60 s behind files its marker in a bucket the cursor has not passed yet.
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let behind = now - chrono::Duration::seconds(60) - to_chrono(MAX_WRITE_DELAY);
        assert!(bucket_of(behind) >= bucket_of(now - to_chrono(SETTLE)));
    }
}
