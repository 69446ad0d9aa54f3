//! The marker tables as the sweeper reads them, and its cursor over their buckets.
//!
//! Three generations of markers share the shards, the 10-second buckets and the sweep cursor:
//! - `outbox_writer_flushes` (eventstore/6), the one this build writes: one row per flush,
//!   filed under the writer's id and numbered (`outbox/writer.rs`), naming every append of the
//!   flush;
//! - legacy, read and deleted here but never written by this build: `outbox_flushes`
//!   (eventstore/5, one row per flush) and `outbox_pending` (eventstore/2, one row per append).
//!
//! Why the legacy reads stay, and their tables with them: a marker is the only thing that leads
//! the sweeper to a stream with unpublished events (it does not scan the events, and a stream's
//! `published_version` trails the truth by design). `scanloop migrate` runs once per release,
//! before the new build replaces the old one, and applies every migration the keyspace lacks at
//! once. So on an upgrade from a build before eventstore/6, processes of the old build file
//! their markers in a legacy table until the last of them stops, and one that crashed or lost
//! Kafka leaves its marker there. Without these reads its events would reach Kafka only if
//! their stream were ever appended to again; a migration dropping the tables would delete such
//! markers outright.
//!
//! When they can go: once every deployment has run a build that reads them past the moment its
//! last process of a build before eventstore/6 stopped (plus [`SETTLE`] and a sweep), the
//! sweeper's cursor has passed every bucket such a process filed in and the legacy tables hold
//! nothing it would read again. A release that requires that (upgrades from older builds go
//! through one with these reads) can drop [`LegacyMarkerTables`], [`LegacyMarker`] and
//! [`FlushRowKey::Legacy`] with what uses them, and append a migration dropping
//! `outbox_flushes` and `outbox_pending`.

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use scanloop_storage::DbError;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use super::{MARKER_SHARDS, MAX_CLOCK_SKEW, Outbox, SETTLE, bucket_of, to_chrono};

/// The statements the sweeper reads and deletes markers with, and keeps its cursor by.
pub(super) struct MarkerTables {
    delete_writer_flush: PreparedStatement,
    old_writer_flushes: PreparedStatement,
    load_cursor: PreparedStatement,
    save_cursor: PreparedStatement,
    legacy: LegacyMarkerTables,
}

/// The marker tables of builds before eventstore/6: read and emptied, never written.
struct LegacyMarkerTables {
    /// `outbox_pending`: one marker per append (builds before eventstore/5).
    delete_marker: PreparedStatement,
    old_markers: PreparedStatement,
    /// `outbox_flushes`: one row per flush (builds before eventstore/6).
    delete_flush: PreparedStatement,
    old_flushes: PreparedStatement,
}

impl MarkerTables {
    pub(super) async fn prepare(session: &Session, keyspace: &str) -> Result<Self, DbError> {
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
        Ok(Self {
            delete_writer_flush,
            old_writer_flushes,
            load_cursor,
            save_cursor,
            legacy: LegacyMarkerTables::prepare(session, keyspace).await?,
        })
    }
}

impl LegacyMarkerTables {
    async fn prepare(session: &Session, keyspace: &str) -> Result<Self, DbError> {
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
        Ok(Self {
            delete_marker,
            old_markers,
            delete_flush,
            old_flushes,
        })
    }
}

/// Every shard gets a sweep cursor before this writer's first marker, so the sweeper knows
/// where to start: far enough back for this host's clock to be ahead by the allowed skew while
/// another writer's is behind by as much. A shard that has one keeps it.
pub(super) async fn initialise_cursors(session: &Session, keyspace: &str) -> Result<(), DbError> {
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
    Ok(())
}

/// A single marker's primary key in `outbox_pending` (legacy: one row per append, as writers
/// before eventstore/5 filed them).
#[derive(Debug, Clone)]
pub(super) struct LegacyMarker {
    shard: i32,
    bucket: i64,
    pub(super) created_at: DateTime<Utc>,
    pub(super) stream_id: String,
    pub(super) first_version: u64,
    append_id: Uuid,
}

impl LegacyMarker {
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

/// A flush row the sweeper found: which table and key, when it was filed, what it announces.
pub(super) struct FlushRow {
    pub(super) key: FlushRowKey,
    pub(super) created_at: DateTime<Utc>,
    pub(super) appends: Vec<(String, u64)>,
}

pub(super) enum FlushRowKey {
    /// `outbox_flushes` (legacy: writers before eventstore/6).
    Legacy(LegacyFlushKey),
    /// `outbox_writer_flushes`.
    Writer(WriterFlushKey),
}

/// One row's primary key in `outbox_flushes` (legacy: flush rows of writers before
/// eventstore/6).
#[derive(Debug, Clone, Copy)]
pub(super) struct LegacyFlushKey {
    shard: i32,
    bucket: i64,
    created_at: DateTime<Utc>,
    flush_id: Uuid,
}

impl LegacyFlushKey {
    fn values(&self) -> (i32, i64, DateTime<Utc>, Uuid) {
        (self.shard, self.bucket, self.created_at, self.flush_id)
    }
}

/// One row's primary key in `outbox_writer_flushes`.
#[derive(Debug, Clone, Copy)]
pub(super) struct WriterFlushKey {
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

/// The appends a flush row names, as stored: (stream, first version).
type Appends = Option<Vec<(String, i64)>>;

fn announced(appends: Appends) -> Vec<(String, u64)> {
    appends
        .unwrap_or_default()
        .into_iter()
        .map(|(stream_id, first)| (stream_id, first.max(0) as u64))
        .collect()
}

impl Outbox {
    /// The single markers (legacy, `outbox_pending`) of one bucket older than `cutoff`.
    pub(super) async fn legacy_markers_older_than(
        &self,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<LegacyMarker>, DbError> {
        let pager = self
            .inner
            .store
            .session()
            .execute_iter(
                self.inner.tables.legacy.old_markers.clone(),
                (shard, bucket, cutoff),
            )
            .await?;
        let rows: Vec<(DateTime<Utc>, String, i64, Uuid)> = pager
            .rows_stream::<(DateTime<Utc>, String, i64, Uuid)>()?
            .try_collect()
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(created_at, stream_id, first_version, append_id)| LegacyMarker {
                    shard,
                    bucket,
                    created_at,
                    stream_id,
                    first_version: first_version.max(0) as u64,
                    append_id,
                },
            )
            .collect())
    }

    pub(super) async fn delete_legacy_marker_quietly(&self, marker: &LegacyMarker) {
        if let Err(error) = self
            .inner
            .store
            .session()
            .execute_unpaged(&self.inner.tables.legacy.delete_marker, marker.key())
            .await
        {
            // The sweeper deletes it later; it only costs an extra look at the stream.
            tracing::warn!(stream_id = marker.stream_id, %error, "cannot delete outbox marker");
        }
    }

    /// Flush rows of one bucket older than `cutoff`, of both tables (the legacy
    /// `outbox_flushes` and `outbox_writer_flushes`), with the appends each announces.
    pub(super) async fn flushes_older_than(
        &self,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<FlushRow>, DbError> {
        let (legacy, numbered) = tokio::try_join!(
            self.legacy_flushes_older_than(shard, bucket, cutoff),
            self.writer_flushes_older_than(shard, bucket, cutoff),
        )?;
        Ok(legacy.chain(numbered).collect())
    }

    /// The rows of `outbox_flushes` (legacy) of one bucket older than `cutoff`.
    async fn legacy_flushes_older_than(
        &self,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
    ) -> Result<impl Iterator<Item = FlushRow>, DbError> {
        let pager = self
            .inner
            .store
            .session()
            .execute_iter(
                self.inner.tables.legacy.old_flushes.clone(),
                (shard, bucket, cutoff),
            )
            .await?;
        let rows: Vec<(DateTime<Utc>, Uuid, Appends)> = pager.rows_stream()?.try_collect().await?;
        Ok(rows
            .into_iter()
            .map(move |(created_at, flush_id, appends)| FlushRow {
                key: FlushRowKey::Legacy(LegacyFlushKey {
                    shard,
                    bucket,
                    created_at,
                    flush_id,
                }),
                created_at,
                appends: announced(appends),
            }))
    }

    /// The rows of `outbox_writer_flushes` of one bucket older than `cutoff`.
    async fn writer_flushes_older_than(
        &self,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
    ) -> Result<impl Iterator<Item = FlushRow>, DbError> {
        let pager = self
            .inner
            .store
            .session()
            .execute_iter(
                self.inner.tables.old_writer_flushes.clone(),
                (shard, bucket),
            )
            .await?;
        let rows: Vec<(Uuid, i64, DateTime<Utc>, Appends)> =
            pager.rows_stream()?.try_collect().await?;
        Ok(rows
            .into_iter()
            .filter(move |(_, _, created_at, _)| *created_at < cutoff)
            .map(move |(writer_id, seq, created_at, appends)| FlushRow {
                key: FlushRowKey::Writer(WriterFlushKey {
                    shard,
                    bucket,
                    writer_id,
                    seq: seq.max(0) as u64,
                }),
                created_at,
                appends: announced(appends),
            }))
    }

    pub(super) async fn delete_flush_quietly(&self, key: &FlushRowKey) {
        let session = self.inner.store.session();
        let tables = &self.inner.tables;
        let deleted = match key {
            FlushRowKey::Legacy(key) => {
                session
                    .execute_unpaged(&tables.legacy.delete_flush, key.values())
                    .await
            }
            FlushRowKey::Writer(key) => {
                session
                    .execute_unpaged(&tables.delete_writer_flush, key.values())
                    .await
            }
        };
        if let Err(error) = deleted {
            tracing::warn!(%error, "cannot delete outbox flush marker");
        }
    }

    /// The first bucket of `shard` the sweeper still has to read, if recorded.
    pub(super) async fn cursor(&self, shard: i32) -> Result<Option<i64>, DbError> {
        let rows = self
            .inner
            .store
            .session()
            .execute_unpaged(&self.inner.tables.load_cursor, (shard,))
            .await?
            .into_rows_result()?;
        Ok(rows.maybe_first_row::<(Option<i64>,)>()?.and_then(|(b,)| b))
    }

    pub(super) async fn set_cursor(&self, shard: i32, bucket: i64) -> Result<(), DbError> {
        self.inner
            .store
            .session()
            .execute_unpaged(&self.inner.tables.save_cursor, (shard, bucket))
            .await?;
        Ok(())
    }
}
