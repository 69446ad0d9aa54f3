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
//!
//! Markers are filed under their writer's clock, and clocks differ between hosts: a writer
//! whose clock is behind files its marker in a bucket the sweeper already considers old. The
//! sweeper therefore never moves its cursor past a bucket younger than [`SETTLE`]
//! ([`MAX_CLOCK_SKEW`] plus [`MAX_WRITE_DELAY`]), and re-reads those buckets on every pass.

use std::collections::BTreeMap;
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
    /// Added to this host's clock when a marker is filed; zero except in tests that play a
    /// host with a wrong clock.
    clock_skew: chrono::Duration,
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
            clock_skew: chrono::Duration::zero(),
        })
    }

    /// Files this outbox's markers as if the host's clock were off by `skew` (negative:
    /// behind). For tests of the sweeper's clock-skew allowance; nothing else should need it.
    pub fn with_clock_skew(mut self, skew: chrono::Duration) -> Self {
        self.clock_skew = skew;
        self
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
        let created_at = (Utc::now() + self.clock_skew).trunc_subsecs(3);
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

        let published = match self.publish_through(stream_id, &recorded, published).await {
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
    async fn publish_through(
        &self,
        stream_id: &str,
        ours: &[RecordedEvent],
        known: Option<u64>,
    ) -> anyhow::Result<()> {
        let (Some(first), Some(last)) = (ours.first(), ours.last()) else {
            return Ok(());
        };
        // A stream this append created (its first event is version 1) has published nothing
        // before ours, so its published version needs no read; nor does one the writer read
        // with its load. Should another publisher (the sweeper) publish in between, events go
        // out twice, which consumers drop.
        let published = match known {
            _ if first.version == 1 => 0,
            Some(published) => published,
            None => self.inner.store.published_version(stream_id).await?,
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
    scanloop_storage::shard::shard_of(stream_id, MARKER_SHARDS.unsigned_abs())
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

    #[test]
    fn shards_are_stable_and_in_range() {
        // Fixed values: a changed assignment strands every marker already written in shards
        // the sweeper would no longer look at for those streams.
        let pinned = [
            ("warranty-1", 3),
            ("batch-7f3a", 11),
            ("member-acme-42", 5),
            ("s", 2),
        ];
        for (stream_id, shard) in pinned {
            assert_eq!(shard_of(stream_id), shard, "{stream_id}");
        }
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
