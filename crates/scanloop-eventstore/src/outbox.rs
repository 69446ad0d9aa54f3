//! Append-and-publish without a dual-write hole.
//!
//! Order of writes for one append:
//! 1. a pending marker — *before* the append, because the marker cannot share the append's
//!    conditional batch (that batch is confined to the stream's partition). Concurrent appends
//!    of one process share it (group commit): one row of `outbox_writer_flushes` per flush,
//!    keyed by the writer's shard, the 10-second bucket, the writer's id and the flush's
//!    number, names every append of the flush (stream, first version);
//! 2. the conditional append. The command is acknowledged here: its events are durable and
//!    the marker guarantees their publication;
//! 3. in the background, the stream's unpublished range, `(published_version, head]`, is handed
//!    to the producer in version order, where many streams' records share Kafka requests;
//! 4. once the brokers acknowledged it, the append is done with its marker; when every append
//!    of a flush is, the flush's row is done, and the writer deletes runs of done rows with one
//!    range delete each ([`crate::retire`]).
//!
//! `published_version` (how far the stream is known to be on Kafka) is not written per
//! publication: a stream's next append through the same process records, in its own
//! conditional batch, how far this process had published it; the sweeper records what it
//! publishes. It is therefore a lower bound that may trail the truth by the stream's latest
//! append. Its only use is where to start publishing: a writer that starts from a value that
//! trails (another process appends to the stream next, or this one after a restart) publishes
//! those events again, and consumers drop them as duplicates (per stream and version, as they
//! drop every redelivery). It is never ahead of the truth, which is what keeps events from
//! being skipped.
//!
//! A crash after 1 leaves a marker and maybe events: the [`Sweeper`] finds markers older than a
//! few seconds, publishes whatever the stream has unpublished and deletes them. Duplicates are
//! possible (a crash between 3 and 4), losses are not. The sweeper does not poll while all is
//! well: it scans at start (what this process's previous run left), whenever a publication of
//! this process fails (and every few seconds after, until nothing is left), and otherwise once
//! per [`Sweeper::safety_interval`], for what another process that died left behind.
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
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use scanloop_bus::EventProducer;
use scanloop_storage::DbError;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::event::{AppendMeta, NewEvent, RecordedEvent};
use crate::group_commit::{GroupCommit, Sharing};
use crate::publication::{Chains, Publication};
use crate::retire::{Retirer, Standing};
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

/// Most markers one group-committed write carries: one partition, under Cassandra's batch
/// size warning (5 KiB).
const MARKERS_PER_FLUSH: usize = 40;
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
    /// Files markers: one row per flush naming all its appends; answers the flush.
    markers: GroupCommit<PendingMarker, Arc<Flush>>,
    /// Deletes this writer's flush rows whose appends are all out, a run at a time.
    retirer: Retirer,
    /// Each stream's latest publication in this process.
    chains: Chains,
    /// Publications started and not finished, for a graceful shutdown to wait for.
    in_flight: tokio::sync::watch::Sender<usize>,
    /// Woken when a publication of this process failed: its marker is the sweeper's now.
    deferred: tokio::sync::Notify,
    delete_marker: PreparedStatement,
    old_markers: PreparedStatement,
    delete_flush: PreparedStatement,
    old_flushes: PreparedStatement,
    delete_writer_flush: PreparedStatement,
    old_writer_flushes: PreparedStatement,
    load_cursor: PreparedStatement,
    save_cursor: PreparedStatement,
}

/// A single marker's primary key (`outbox_pending`: one row per append, as writers before
/// eventstore/5 filed them; the sweeper still reads them).
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
}

/// One row's primary key in `outbox_flushes` (flush rows of writers before eventstore/6; the
/// sweeper still reads them).
#[derive(Debug, Clone, Copy)]
struct FlushKey {
    shard: i32,
    bucket: i64,
    created_at: DateTime<Utc>,
    flush_id: Uuid,
}

impl FlushKey {
    fn values(&self) -> (i32, i64, DateTime<Utc>, Uuid) {
        (self.shard, self.bucket, self.created_at, self.flush_id)
    }
}

/// A flush row the sweeper found: which table and key, when it was filed, what it announces.
struct FlushRow {
    key: FlushRowKey,
    created_at: DateTime<Utc>,
    appends: Vec<(String, u64)>,
}

enum FlushRowKey {
    /// `outbox_flushes` (writers before eventstore/6).
    Shared(FlushKey),
    /// `outbox_writer_flushes`.
    Writer(WriterFlushKey),
}

/// One row's primary key in `outbox_writer_flushes`.
#[derive(Debug, Clone, Copy)]
struct WriterFlushKey {
    shard: i32,
    bucket: i64,
    writer_id: Uuid,
    seq: u64,
}

impl WriterFlushKey {
    fn values(&self) -> (i32, i64, Uuid, i64) {
        (self.shard, self.bucket, self.writer_id, self.seq as i64)
    }
}

/// A filed flush row and how many of its appends have not settled yet. When the last one
/// settles, the row is done (the writer's retirer deletes it with its neighbours) unless one
/// of them has to leave it for the sweeper.
#[derive(Debug)]
struct Flush {
    seq: u64,
    unsettled: std::sync::atomic::AtomicUsize,
    kept: std::sync::atomic::AtomicBool,
}

/// How an append is done with its flush row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Published, or it never happened: the row may go as far as this append is concerned.
    Done,
    /// Stored but not published, or its outcome is unknown: the sweeper needs the row.
    Kept,
}

impl Flush {
    fn settle_one(&self, outbox: &Outbox, settled: Settled) {
        if settled == Settled::Kept {
            self.kept.store(true, Ordering::Release);
        }
        if self.unsettled.fetch_sub(1, Ordering::AcqRel) == 1 {
            let standing = if self.kept.load(Ordering::Acquire) {
                Standing::Kept
            } else {
                Standing::Done
            };
            outbox.inner.retirer.settle(self.seq, standing);
        }
    }
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
        let insert_flush = session
            .prepare(format!(
                "INSERT INTO {keyspace}.outbox_writer_flushes \
                 (shard, bucket, writer_id, seq, created_at, appends) VALUES (?, ?, ?, ?, ?, ?)"
            ))
            .await?;
        let retire_flushes = session
            .prepare(format!(
                "DELETE FROM {keyspace}.outbox_writer_flushes WHERE shard = ? AND bucket = ? \
                 AND writer_id = ? AND seq >= ? AND seq <= ?"
            ))
            .await?;
        let delete_writer_flush = session
            .prepare(format!(
                "DELETE FROM {keyspace}.outbox_writer_flushes WHERE shard = ? AND bucket = ? \
                 AND writer_id = ? AND seq = ?"
            ))
            .await?;
        // The clustering order is the writer's, not time: the sweeper reads the bucket's rows
        // (few: finished ones are deleted within moments) and picks the old ones itself.
        let old_writer_flushes = session
            .prepare(format!(
                "SELECT writer_id, seq, created_at, appends FROM {keyspace}.outbox_writer_flushes \
                 WHERE shard = ? AND bucket = ?"
            ))
            .await?;
        let delete_flush = session
            .prepare(format!(
                "DELETE FROM {keyspace}.outbox_flushes WHERE shard = ? AND bucket = ? \
                 AND created_at = ? AND flush_id = ?"
            ))
            .await?;
        let old_flushes = session
            .prepare(format!(
                "SELECT created_at, flush_id, appends FROM {keyspace}.outbox_flushes \
                 WHERE shard = ? AND bucket = ? AND created_at < ?"
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
        // This writer's rows go to one shard under its own id, so that they lie side by side
        // for range deletes; writers pick shards at random, which spreads them.
        let writer = Writer {
            id: Uuid::new_v4(),
            shard: rand_shard(),
        };
        let retirer = Retirer::spawn(session.clone(), retire_flushes, writer.shard, writer.id);
        let markers = file_markers(session.clone(), insert_flush, writer, retirer.clone(), skew);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                producer,
                topic: topic.into(),
                markers,
                retirer,
                chains: Chains::default(),
                in_flight: tokio::sync::watch::Sender::new(0),
                deferred: tokio::sync::Notify::new(),
                delete_marker,
                old_markers,
                delete_flush,
                old_flushes,
                delete_writer_flush,
                old_writer_flushes,
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
        };
        let flush = self
            .inner
            .markers
            .submit(pending)
            .await
            .map_err(AppendError::Unavailable)?;

        // How far this process published the stream, when that is ahead of what the caller
        // read: recorded in the append's own batch, so the published version keeps up without
        // a write per publication.
        let noting = self
            .inner
            .chains
            .published_through(stream_id)
            .filter(|&through| through > published.unwrap_or(0));
        let recorded = match self
            .inner
            .store
            .append_noting_published(stream_id, expected_version, noting, meta, events)
            .await
        {
            Ok(recorded) => recorded,
            Err(error) => {
                // Nothing was appended by this writer unless the outcome is unknown
                // (unavailable): then the marker stays for the sweeper to resolve.
                let settled = match error {
                    AppendError::Unavailable(_) => Settled::Kept,
                    _ => Settled::Done,
                };
                flush.settle_one(self, settled);
                return Err(error);
            }
        };
        let publication = self.publish_in_background(stream_id, flush, recorded.clone(), published);
        Ok(Appended {
            events: recorded,
            publication,
        })
    }

    /// Starts the publication of `ours` (just appended to `stream_id`, announced in `flush`)
    /// behind the stream's previous publication in this process.
    fn publish_in_background(
        &self,
        stream_id: &str,
        flush: Arc<Flush>,
        ours: Vec<RecordedEvent>,
        known: Option<u64>,
    ) -> Publication {
        let last = ours.last().map_or(0, |e| e.version);
        let (link, done) = self.inner.chains.link(stream_id, last);
        let stream_id = stream_id.to_owned();
        let outbox = self.clone();
        let counted = InFlight::start(&self.inner.in_flight);
        tokio::spawn(async move {
            let _counted = counted;
            // The previous range of this stream, if still on its way: ours starts after it,
            // and never goes out before it is acknowledged.
            let before = match link.previous {
                Some(previous) => previous.reached().await,
                None => None,
            };
            match outbox.publish_after(&stream_id, &ours, known, before).await {
                Ok(()) => {
                    flush.settle_one(&outbox, Settled::Done);
                    done.finish(true);
                }
                Err(error) => {
                    flush.settle_one(&outbox, Settled::Kept);
                    tracing::warn!(
                        stream_id,
                        error = %format!("{error:#}"),
                        "append stored but not yet published; the sweeper will publish it"
                    );
                    crate::metrics::DEFERRED.add(1, &[]);
                    outbox.inner.deferred.notify_one();
                    done.finish(false);
                }
            }
        });
        link.publication
    }

    /// How the outbox's shared writes were shared so far: appends per marker row, marker rows
    /// per range delete.
    pub fn sharing(&self) -> [(&'static str, Sharing); 2] {
        [
            ("appends per marker row", self.inner.markers.sharing()),
            ("marker rows per delete", self.inner.retirer.sharing()),
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
    ) -> anyhow::Result<()> {
        let (Some(first), Some(last)) = (ours.first(), ours.last()) else {
            return Ok(());
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
            return Ok(());
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
        self.send(&range).await
    }

    /// Publishes whatever `stream_id` has unpublished. Returns the stream's head version.
    pub async fn publish_stream(&self, stream_id: &str) -> anyhow::Result<u64> {
        let published = self.inner.store.published_version(stream_id).await?;
        let pending = self.inner.store.load(stream_id, published).await?;
        if let Some(last) = pending.last() {
            self.send(&pending).await?;
            self.inner
                .store
                .set_published_version(stream_id, last.version)
                .await?;
        }
        Ok(pending.last().map_or(published, |e| e.version))
    }

    /// Publishes `events` (one stream's, in version order) and waits for the brokers.
    async fn send(&self, events: &[RecordedEvent]) -> anyhow::Result<()> {
        let envelopes: Vec<_> = events.iter().map(RecordedEvent::to_envelope).collect();
        self.inner
            .producer
            .publish_in_order(&self.inner.topic, &envelopes)
            .await?;
        if let Some(first) = events.first() {
            let lag = (Utc::now() - first.recorded_at)
                .to_std()
                .unwrap_or_default();
            crate::metrics::PUBLISH_LAG.record(lag.as_secs_f64(), &[]);
        }
        Ok(())
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

    /// Flush rows of one bucket older than `cutoff`, of both tables, with the appends each
    /// announces.
    async fn flushes_older_than(
        &self,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<FlushRow>, DbError> {
        use futures::TryStreamExt as _;
        type Appends = Option<Vec<(String, i64)>>;
        fn announced(appends: Appends) -> Vec<(String, u64)> {
            appends
                .unwrap_or_default()
                .into_iter()
                .map(|(stream_id, first)| (stream_id, first.max(0) as u64))
                .collect()
        }
        let session = self.inner.store.session();
        let (shared, numbered) = tokio::try_join!(
            async {
                let pager = session
                    .execute_iter(self.inner.old_flushes.clone(), (shard, bucket, cutoff))
                    .await?;
                let rows: Vec<(DateTime<Utc>, Uuid, Appends)> =
                    pager.rows_stream()?.try_collect().await?;
                Ok::<_, DbError>(rows)
            },
            async {
                let pager = session
                    .execute_iter(self.inner.old_writer_flushes.clone(), (shard, bucket))
                    .await?;
                let rows: Vec<(Uuid, i64, DateTime<Utc>, Appends)> =
                    pager.rows_stream()?.try_collect().await?;
                Ok::<_, DbError>(rows)
            },
        )?;
        let shared = shared
            .into_iter()
            .map(|(created_at, flush_id, appends)| FlushRow {
                key: FlushRowKey::Shared(FlushKey {
                    shard,
                    bucket,
                    created_at,
                    flush_id,
                }),
                created_at,
                appends: announced(appends),
            });
        let numbered = numbered
            .into_iter()
            .filter(|(_, _, created_at, _)| *created_at < cutoff)
            .map(|(writer_id, seq, created_at, appends)| FlushRow {
                key: FlushRowKey::Writer(WriterFlushKey {
                    shard,
                    bucket,
                    writer_id,
                    seq: seq.max(0) as u64,
                }),
                created_at,
                appends: announced(appends),
            });
        Ok(shared.chain(numbered).collect())
    }

    async fn delete_flush_quietly(&self, key: &FlushRowKey) {
        let session = self.inner.store.session();
        let deleted = match key {
            FlushRowKey::Shared(key) => {
                session
                    .execute_unpaged(&self.inner.delete_flush, key.values())
                    .await
            }
            FlushRowKey::Writer(key) => {
                session
                    .execute_unpaged(&self.inner.delete_writer_flush, key.values())
                    .await
            }
        };
        if let Err(error) = deleted {
            tracing::warn!(%error, "cannot delete outbox flush marker");
        }
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

/// One outbox writer (process): its flush rows go to one shard under its id.
#[derive(Debug, Clone, Copy)]
struct Writer {
    id: Uuid,
    shard: i32,
}

/// The group commit that files markers: each flush writes one row naming all its appends,
/// numbered by the writer's retirer, in the bucket of the flush's time.
fn file_markers(
    session: Arc<Session>,
    insert: PreparedStatement,
    writer: Writer,
    retirer: Retirer,
    skew: chrono::Duration,
) -> GroupCommit<PendingMarker, Arc<Flush>> {
    GroupCommit::spawn(
        "outbox markers",
        MARKERS_PER_FLUSH,
        FLUSHES_IN_FLIGHT,
        move |pending: Vec<PendingMarker>| {
            let (session, insert, retirer) = (session.clone(), insert.clone(), retirer.clone());
            async move {
                let created_at = (Utc::now() + skew).trunc_subsecs(3);
                let bucket = bucket_of(created_at);
                let seq = retirer.file(bucket);
                let appends: Vec<(&str, i64)> = pending
                    .iter()
                    .map(|m| (m.stream_id.as_str(), m.first_version as i64))
                    .collect();
                let values = (
                    writer.shard,
                    bucket,
                    writer.id,
                    seq as i64,
                    created_at,
                    appends,
                );
                if let Err(error) = session.execute_unpaged(&insert, values).await {
                    // None of the flush's appends goes ahead, so the row (should it have
                    // landed after all) announces nothing: it may go.
                    retirer.settle(seq, Standing::Done);
                    return Err(error.into());
                }
                Ok(Arc::new(Flush {
                    seq,
                    unsettled: std::sync::atomic::AtomicUsize::new(pending.len()),
                    kept: std::sync::atomic::AtomicBool::new(false),
                }))
            }
        },
    )
}

/// The shard a writer files its flush rows in, at random so that writers spread over them.
fn rand_shard() -> i32 {
    (Uuid::new_v4().as_u128() % u128::from(MARKER_SHARDS.unsigned_abs())) as i32
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
    /// How often it scans while something is left to publish (a failed publication woke it,
    /// or markers are kept).
    pub interval: Duration,
    /// How often it scans when nothing woke it: the safety scan for markers of other processes
    /// that died before publishing. Default 120 s (a process that restarts scans at start).
    pub safety_interval: Duration,
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
            safety_interval: Duration::from_secs(120),
        }
    }

    /// Sets how old a marker must be before the sweeper takes it over, and how often it looks.
    pub fn with_timing(mut self, min_age: Duration, interval: Duration) -> Self {
        self.min_age = min_age;
        self.interval = interval;
        self
    }

    /// Also sets how often it scans when nothing woke it.
    pub fn with_safety_interval(mut self, safety_interval: Duration) -> Self {
        self.safety_interval = safety_interval;
        self
    }

    /// Sweeps at once, then every `interval` while a failed publication of this process may
    /// still wait (a marker is taken only once it is `min_age` old) or markers are kept, and
    /// every `safety_interval` otherwise, until cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let deferred = &self.outbox.inner.deferred;
        let mut pace = Pace {
            interval: self.interval,
            safety_interval: self.safety_interval,
            // What the previous run left may be younger than `min_age` yet.
            busy_until: tokio::time::Instant::now() + self.min_age + 2 * self.interval,
        };
        loop {
            let left = match self.sweep_once().await {
                Ok(report) => {
                    if report.streams_published > 0 || report.streams_failed > 0 {
                        tracing::info!(?report, "sweeper republished stranded events");
                    }
                    report.markers_kept + report.streams_failed + report.buckets_failed > 0
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "sweep failed");
                    true
                }
            };
            let wait = pace.after_pass(tokio::time::Instant::now(), left);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = deferred.notified() => {
                    // The failed publication's marker is taken once it is `min_age` old.
                    pace.busy_until = tokio::time::Instant::now() + self.min_age + 2 * self.interval;
                }
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

    /// Handles one bucket's old markers (single markers and flush rows); returns how many it
    /// had to keep.
    async fn sweep_bucket(
        &self,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
        abandon_cutoff: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> anyhow::Result<usize> {
        let (markers, flushes) = tokio::try_join!(
            self.outbox.markers_older_than(shard, bucket, cutoff),
            self.outbox.flushes_older_than(shard, bucket, cutoff),
        )?;
        // Every announced append by stream: its first version and whose announcement it is.
        let mut by_stream: BTreeMap<String, Vec<(u64, DateTime<Utc>, Announced)>> = BTreeMap::new();
        for (i, marker) in markers.iter().enumerate() {
            by_stream
                .entry(marker.stream_id.clone())
                .or_default()
                .push((
                    marker.first_version,
                    marker.created_at,
                    Announced::Marker(i),
                ));
        }
        for (i, flush) in flushes.iter().enumerate() {
            for (stream_id, first_version) in &flush.appends {
                by_stream.entry(stream_id.clone()).or_default().push((
                    *first_version,
                    flush.created_at,
                    Announced::Flush(i),
                ));
            }
        }
        let mut marker_done = vec![false; markers.len()];
        // A flush row goes once every append it names is done.
        let mut flush_pending = vec![false; flushes.len()];
        for (stream_id, announced) in by_stream {
            let head = match self.outbox.publish_stream(&stream_id).await {
                Ok(head) => Some(head),
                Err(error) => {
                    // Its announcements stay, so the next pass tries again; the other streams
                    // of this pass do not wait for it.
                    sweep_failure("stream", shard, Some(&stream_id), &error);
                    report.streams_failed += 1;
                    None
                }
            };
            if head.is_some() {
                report.streams_published += 1;
                crate::metrics::SWEPT.add(1, &[]);
            }
            for (first_version, created_at, owner) in announced {
                // The append's events (or a competitor's at those versions) are out, or the
                // append it announced never happened.
                let done =
                    head.is_some_and(|head| head >= first_version || created_at < abandon_cutoff);
                match owner {
                    Announced::Marker(i) => marker_done[i] = done,
                    Announced::Flush(i) => flush_pending[i] |= !done,
                }
            }
        }
        let mut kept = 0;
        for (marker, done) in markers.iter().zip(marker_done) {
            if done {
                self.outbox.delete_marker_quietly(marker).await;
                report.markers_deleted += 1;
            } else {
                kept += 1;
            }
        }
        for (flush, pending) in flushes.iter().zip(flush_pending) {
            if pending {
                kept += 1;
            } else {
                self.outbox.delete_flush_quietly(&flush.key).await;
                report.markers_deleted += 1;
            }
        }
        report.markers_kept += kept;
        Ok(kept)
    }
}

/// When the sweeper looks next: every `interval` until `busy_until` and while a pass left
/// something, every `safety_interval` otherwise.
struct Pace {
    interval: Duration,
    safety_interval: Duration,
    busy_until: tokio::time::Instant,
}

impl Pace {
    /// The wait after a pass at `now` that `left` something to publish (or could not look).
    fn after_pass(&mut self, now: tokio::time::Instant, left: bool) -> Duration {
        if left {
            self.busy_until = self.busy_until.max(now + self.interval);
        }
        if now < self.busy_until {
            self.interval
        } else {
            self.safety_interval
        }
    }
}

/// Whose announcement an append found in a bucket is: a single marker's or a flush row's (by
/// index in what the bucket held).
#[derive(Clone, Copy)]
enum Announced {
    Marker(usize),
    Flush(usize),
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
    fn the_sweeper_looks_often_only_while_something_is_left() {
        let start = tokio::time::Instant::now();
        let (interval, safety_interval) = (Duration::from_secs(3), Duration::from_secs(60));
        let mut pace = Pace {
            interval,
            safety_interval,
            busy_until: start + Duration::from_secs(11),
        };
        // The start-up period: every interval, whatever the passes find.
        assert_eq!(pace.after_pass(start, false), interval);
        assert_eq!(
            pace.after_pass(start + Duration::from_secs(9), false),
            interval
        );
        // Then nothing left: the safety scan's pace.
        assert_eq!(
            pace.after_pass(start + Duration::from_secs(12), false),
            safety_interval
        );
        // A pass that left markers keeps the quick pace for one more pass at least.
        let later = start + Duration::from_secs(72);
        assert_eq!(pace.after_pass(later, true), interval);
        assert_eq!(pace.after_pass(later + interval, false), safety_interval);
    }

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
