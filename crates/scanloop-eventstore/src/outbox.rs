//! Append-and-publish without a dual-write hole.
//!
//! Order of writes for one append:
//! 1. a pending marker (`outbox_pending`, keyed by shard, 10-second bucket, time, stream, first
//!    version and a fresh append id, so it is never overwritten) — *before* the append, because the marker
//!    cannot share the append's conditional batch (that batch is confined to the stream's
//!    partition);
//! 2. the conditional append;
//! 3. the stream's unpublished range, `(published_version, head]`, published in version order;
//! 4. `published_version` advanced, then the marker deleted.
//!
//! A crash after 1 leaves a marker and maybe events: the [`Sweeper`] finds markers older than a
//! few seconds, publishes whatever the stream has unpublished and deletes them. Duplicates are
//! possible (a crash between 3 and 4), losses are not.

use std::collections::BTreeMap;
use std::hash::Hasher as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use scanloop_bus::EventProducer;
use scanloop_storage::DbError;
use scylla::statement::prepared::PreparedStatement;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::event::{AppendMeta, NewEvent, RecordedEvent};
use crate::store::{AppendError, EventStore};

/// Markers are spread over this many shards. Changing it strands old markers in shards the
/// sweeper no longer reads, so it is a constant of the schema, not a setting.
pub const MARKER_SHARDS: i32 = 16;

/// Markers are grouped in buckets of this many milliseconds of their creation time; a bucket and
/// a shard make one partition. Also a constant of the schema.
pub const BUCKET_MILLIS: i64 = 10_000;

fn bucket_of(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis().div_euclid(BUCKET_MILLIS)
}

/// The result of an append through the outbox.
#[derive(Debug)]
pub struct Appended {
    pub events: Vec<RecordedEvent>,
    /// False when Kafka did not take the events in time; the sweeper publishes them later.
    pub published: bool,
}

impl Appended {
    /// The stream's version after this append.
    pub fn version(&self) -> u64 {
        self.events.last().map_or(0, |e| e.version)
    }
}

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    producer: EventProducer,
    topic: String,
    insert_marker: PreparedStatement,
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

impl Outbox {
    pub async fn new(
        store: EventStore,
        keyspace: &str,
        producer: EventProducer,
        topic: impl Into<String>,
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
        // Every shard gets a sweep cursor before this writer's first marker, so the sweeper
        // knows where to start; two minutes back covers clock skew between hosts.
        let initial = bucket_of(Utc::now() - chrono::Duration::minutes(2));
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
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                producer,
                topic: topic.into(),
                insert_marker,
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
    /// Success means the events are stored; `published` says whether they also reached Kafka
    /// already (if not, the sweeper will publish them).
    pub async fn append(
        &self,
        stream_id: &str,
        expected_version: u64,
        meta: &AppendMeta,
        events: Vec<NewEvent>,
    ) -> Result<Appended, AppendError> {
        crate::store::validate_append(stream_id, &events)?;
        let created_at = Utc::now().trunc_subsecs(3);
        let marker = Marker {
            shard: shard_of(stream_id),
            bucket: bucket_of(created_at),
            created_at,
            stream_id: stream_id.to_owned(),
            first_version: expected_version + 1,
            append_id: Uuid::new_v4(),
        };
        self.write_marker(&marker)
            .await
            .map_err(AppendError::Unavailable)?;

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
                    self.delete_marker_quietly(&marker).await;
                }
                return Err(error);
            }
        };

        let published = match self.publish_through(stream_id, &recorded).await {
            Ok(()) => {
                self.delete_marker_quietly(&marker).await;
                true
            }
            Err(error) => {
                tracing::warn!(
                    stream_id,
                    error = %error,
                    "append stored but not yet published; the sweeper will publish it"
                );
                crate::metrics::DEFERRED.add(1, &[]);
                false
            }
        };
        Ok(Appended {
            events: recorded,
            published,
        })
    }

    /// Publishes everything of `stream_id` after its published version up to and including the
    /// last of `ours` (the events this writer just appended, already in memory).
    async fn publish_through(&self, stream_id: &str, ours: &[RecordedEvent]) -> anyhow::Result<()> {
        let (Some(first), Some(last)) = (ours.first(), ours.last()) else {
            return Ok(());
        };
        let published = self.inner.store.published_version(stream_id).await?;
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
        self.publish(stream_id, &range).await
    }

    /// Publishes whatever `stream_id` has unpublished. Returns the stream's head version.
    pub async fn publish_stream(&self, stream_id: &str) -> anyhow::Result<u64> {
        let published = self.inner.store.published_version(stream_id).await?;
        let pending = self.inner.store.load(stream_id, published).await?;
        self.publish(stream_id, &pending).await?;
        Ok(pending.last().map_or(published, |e| e.version))
    }

    async fn publish(&self, stream_id: &str, events: &[RecordedEvent]) -> anyhow::Result<()> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let envelopes: Vec<_> = events.iter().map(RecordedEvent::to_envelope).collect();
        self.inner
            .producer
            .publish_in_order(&self.inner.topic, &envelopes)
            .await?;
        let lag = (Utc::now() - events[0].recorded_at)
            .to_std()
            .unwrap_or_default();
        crate::metrics::PUBLISH_LAG.record(lag.as_secs_f64(), &[]);
        self.inner
            .store
            .set_published_version(stream_id, last.version)
            .await?;
        Ok(())
    }

    async fn write_marker(&self, marker: &Marker) -> Result<(), DbError> {
        self.inner
            .store
            .session()
            .execute_unpaged(&self.inner.insert_marker, marker.key())
            .await?;
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

fn shard_of(stream_id: &str) -> i32 {
    // FNV-1a: stable across processes and Rust versions (unlike `DefaultHasher`'s seed).
    let mut hasher = Fnv1a::default();
    hasher.write(stream_id.as_bytes());
    (hasher.finish() % MARKER_SHARDS as u64) as i32
}

struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Republishes ranges left behind by writers that crashed (or lost Kafka) between their append
/// and their publish.
pub struct Sweeper {
    outbox: Outbox,
    /// A marker younger than this may belong to a writer still at work.
    pub min_age: Duration,
    /// A marker whose append never landed (the stream never reached its first version) is
    /// dropped after this long: no append outlives the database's write timeout.
    pub abandon_after: Duration,
    /// Buckets younger than this may still receive markers (a writer reads its clock before its
    /// insert lands, and clocks differ between hosts): the cursor never passes them.
    pub settle: Duration,
    pub interval: Duration,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub streams_published: usize,
    pub markers_deleted: usize,
    pub markers_kept: usize,
    pub buckets_read: usize,
}

impl Sweeper {
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            min_age: Duration::from_secs(5),
            abandon_after: Duration::from_secs(120),
            settle: Duration::from_secs(30),
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
                Ok(report) if report.streams_published > 0 => {
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
    /// are done, and moves the cursor past the settled buckets left without markers.
    pub async fn sweep_once(&self) -> anyhow::Result<SweepReport> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(self.min_age)?;
        let abandon_cutoff = now - chrono::Duration::from_std(self.abandon_after)?;
        let settled = bucket_of(now - chrono::Duration::from_std(self.settle)?);
        let newest = bucket_of(cutoff);
        let mut report = SweepReport::default();
        for shard in 0..MARKER_SHARDS {
            let start = match self.outbox.cursor(shard).await? {
                Some(bucket) => bucket,
                None => {
                    // Outbox::new records cursors before any marker is written; without one,
                    // look back further than any clock skew could reach.
                    tracing::warn!(shard, "no sweep cursor; scanning the last ten minutes");
                    bucket_of(now - chrono::Duration::minutes(10))
                }
            };
            let mut unfinished = None;
            for bucket in start..=newest {
                report.buckets_read += 1;
                let kept = self
                    .sweep_bucket(shard, bucket, cutoff, abandon_cutoff, &mut report)
                    .await?;
                if unfinished.is_none() && (kept > 0 || bucket >= settled) {
                    unfinished = Some(bucket);
                }
            }
            let next = unfinished.unwrap_or(newest + 1).min(settled);
            if next > start {
                self.outbox.set_cursor(shard, next).await?;
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
            let head = self.outbox.publish_stream(&stream_id).await?;
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
    fn shards_are_stable_and_in_range() {
        // Fixed value: shard assignment must never change between builds.
        assert_eq!(shard_of("warranty-1"), shard_of("warranty-1"));
        for i in 0..1000 {
            let shard = shard_of(&format!("stream-{i}"));
            assert!((0..MARKER_SHARDS).contains(&shard));
        }
        let used: std::collections::HashSet<_> = (0..1000)
            .map(|i| shard_of(&format!("stream-{i}")))
            .collect();
        assert_eq!(used.len(), MARKER_SHARDS as usize);
    }
}
