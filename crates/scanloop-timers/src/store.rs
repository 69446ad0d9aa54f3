//! Where timers are kept: `timers` partitioned by shard and hour of firing time, an index of the
//! buckets that hold items, and a cursor per shard. The store also remembers, in memory, the
//! earliest firing time this process scheduled and the runner has not looked at yet, so the
//! runner reads the database only when something is due (see `crate::runner`).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound as _, Utc};
use futures::TryStreamExt as _;
use scanloop_storage::{DbError, WrittenOnce};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use crate::clock::SharedClock;
use crate::pending::Pending;

/// Firing times the store remembers for the runner at most (the rest wait for its safety pass).
const PENDING_LIMIT: usize = 200_000;
/// Index rows a store remembers having written (a row per shard and hour: a year ahead of all
/// 16 shards is about 140,000).
const INDEXED_LIMIT: usize = 100_000;

/// Items are spread over this many shards (by stream), handled concurrently. Changing it strands
/// items in shards no runner reads, so it is a constant of the schema, not a setting.
pub const SHARDS: i32 = 16;

/// Items are grouped by the hour of their firing time: one partition per shard and hour.
/// Also a constant of the schema.
pub const BUCKET_MILLIS: i64 = 3_600_000;

/// The bucket (hour since the epoch) of an instant.
pub fn bucket_of(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis().div_euclid(BUCKET_MILLIS)
}

/// The shard of a stream's timers: FNV-1a, stable across processes, builds and Rust versions.
pub fn shard_of(stream_id: &str) -> i32 {
    scanloop_storage::shard::shard_of(stream_id, SHARDS.unsigned_abs())
}

/// Something to do for a stream at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub due_at: DateTime<Utc>,
    /// The tenant, for the handler's append metadata.
    pub brand_id: String,
    /// The stream the handler acts on.
    pub stream_id: String,
    /// What to do: the handler dispatches on it.
    pub kind: String,
    /// Names this item within its stream: scheduling the same key for the same due time again
    /// changes nothing.
    pub key: String,
}

/// A timer as stored, with its place in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub timer: Timer,
    pub shard: i32,
    pub bucket: i64,
    /// When the runner may take it: the due time, or the scheduling time if that was later.
    pub fire_at: DateTime<Utc>,
}

impl std::ops::Deref for DueTimer {
    type Target = Timer;
    fn deref(&self) -> &Timer {
        &self.timer
    }
}

/// Schedules timers and serves the runner's reads.
#[derive(Clone)]
pub struct TimerStore {
    inner: Arc<Statements>,
}

struct Statements {
    session: Arc<Session>,
    clock: SharedClock,
    /// Firing times scheduled here that no pass has handled yet.
    pending: Mutex<Pending>,
    /// Wakes the runner when something earlier than all it knew of was scheduled.
    scheduled: tokio::sync::Notify,
    /// Index rows (shard, bucket) this store wrote: they are never deleted, so a bucket's
    /// next item needs no second write of its row.
    indexed: WrittenOnce<(i32, i64)>,
    insert_bucket: PreparedStatement,
    insert_timer: PreparedStatement,
    select_buckets: PreparedStatement,
    select_due: PreparedStatement,
    delete_timer: PreparedStatement,
    /// Where a shard's cursor is: the current table first, then the ones it replaced.
    select_position: [PreparedStatement; 3],
    write_position: PreparedStatement,
}

impl TimerStore {
    /// Prepares the statements; refuses (saying to run `scanloop migrate`) if the schema is
    /// missing. `clock` places late items: they fire from the scheduling time on.
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        scanloop_storage::require_schema(
            &session,
            keyspace,
            crate::schema::COMPONENT,
            crate::schema::SCHEMA_VERSION,
        )
        .await?;
        let prepare = |cql: String| {
            let session = session.clone();
            async move { session.prepare(cql).await }
        };
        let statements = Statements {
            insert_bucket: prepare(format!(
                "INSERT INTO {keyspace}.timer_buckets (shard, bucket) VALUES (?, ?)"
            ))
            .await?,
            insert_timer: prepare(format!(
                "INSERT INTO {keyspace}.timers \
                 (shard, bucket, fire_at, stream_id, key, due_at, kind, brand_id) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            select_buckets: prepare(format!(
                "SELECT bucket FROM {keyspace}.timer_buckets \
                 WHERE shard = ? AND bucket >= ? AND bucket <= ?"
            ))
            .await?,
            select_due: prepare(format!(
                "SELECT fire_at, stream_id, key, due_at, kind, brand_id FROM {keyspace}.timers \
                 WHERE shard = ? AND bucket = ? AND fire_at >= ? AND fire_at <= ?"
            ))
            .await?,
            delete_timer: prepare(format!(
                "DELETE FROM {keyspace}.timers WHERE shard = ? AND bucket = ? AND fire_at = ? \
                 AND stream_id = ? AND key = ?"
            ))
            .await?,
            select_position: [
                prepare(format!(
                    "SELECT position FROM {keyspace}.timer_watermarks WHERE shard = ?"
                ))
                .await?,
                prepare(format!(
                    "SELECT position FROM {keyspace}.timer_positions WHERE shard = ?"
                ))
                .await?,
                prepare(format!(
                    "SELECT position FROM {keyspace}.timer_cursor WHERE shard = ?"
                ))
                .await?,
            ],
            write_position: prepare(format!(
                "UPDATE {keyspace}.timer_watermarks USING TIMESTAMP ? SET position = ? \
                 WHERE shard = ?"
            ))
            .await?,
            session,
            clock,
            pending: Mutex::new(Pending::new(PENDING_LIMIT)),
            indexed: WrittenOnce::new(INDEXED_LIMIT),
            scheduled: tokio::sync::Notify::new(),
        };
        Ok(Self {
            inner: Arc::new(statements),
        })
    }

    /// Records `timer`. An item already due fires from now on (its bucket is the current one,
    /// which no runner's cursor has passed: cursors stay `settle` behind their clock).
    /// Idempotent for a future due time; a late item scheduled twice may fire twice.
    pub async fn schedule(&self, timer: &Timer) -> Result<DueTimer, DbError> {
        let due_at = timer.due_at.trunc_subsecs(3);
        let fire_at = due_at.max(self.inner.clock.now().trunc_subsecs(3));
        let shard = shard_of(&timer.stream_id);
        let bucket = bucket_of(fire_at);
        let session = &self.inner.session;
        // The index first: a crash between the two writes leaves an index row for an empty
        // bucket (an extra read), never an item no runner finds.
        self.inner
            .indexed
            .write_once((shard, bucket), async {
                session
                    .execute_unpaged(&self.inner.insert_bucket, (shard, bucket))
                    .await?;
                Ok::<_, DbError>(())
            })
            .await?;
        session
            .execute_unpaged(
                &self.inner.insert_timer,
                (
                    shard,
                    bucket,
                    fire_at,
                    timer.stream_id.as_str(),
                    timer.key.as_str(),
                    due_at,
                    timer.kind.as_str(),
                    timer.brand_id.as_str(),
                ),
            )
            .await?;
        self.note_due(fire_at, shard);
        Ok(DueTimer {
            timer: Timer {
                due_at,
                ..timer.clone()
            },
            shard,
            bucket,
            fire_at,
        })
    }

    /// Buckets of `shard` from `first` to `last` that ever held items, in order.
    pub(crate) async fn buckets(
        &self,
        shard: i32,
        first: i64,
        last: i64,
    ) -> Result<Vec<i64>, DbError> {
        let pager = self
            .inner
            .session
            .execute_iter(self.inner.select_buckets.clone(), (shard, first, last))
            .await?;
        let rows: Vec<(i64,)> = pager.rows_stream::<(i64,)>()?.try_collect().await?;
        Ok(rows.into_iter().map(|(bucket,)| bucket).collect())
    }

    /// The items of one bucket firing in `[from, to]`, in firing order.
    pub(crate) async fn due(
        &self,
        shard: i32,
        bucket: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DueTimer>, DbError> {
        type DueRow = (
            DateTime<Utc>,
            String,
            String,
            Option<DateTime<Utc>>,
            Option<String>,
            Option<String>,
        );
        let pager = self
            .inner
            .session
            .execute_iter(self.inner.select_due.clone(), (shard, bucket, from, to))
            .await?;
        let rows: Vec<DueRow> = pager.rows_stream::<DueRow>()?.try_collect().await?;
        Ok(rows
            .into_iter()
            .map(
                |(fire_at, stream_id, key, due_at, kind, brand_id)| DueTimer {
                    timer: Timer {
                        due_at: due_at.unwrap_or(fire_at),
                        brand_id: brand_id.unwrap_or_default(),
                        stream_id,
                        kind: kind.unwrap_or_default(),
                        key,
                    },
                    shard,
                    bucket,
                    fire_at,
                },
            )
            .collect())
    }

    pub(crate) async fn delete(&self, timer: &DueTimer) -> Result<(), DbError> {
        self.inner
            .session
            .execute_unpaged(
                &self.inner.delete_timer,
                (
                    timer.shard,
                    timer.bucket,
                    timer.fire_at,
                    timer.stream_id.as_str(),
                    timer.key.as_str(),
                ),
            )
            .await?;
        Ok(())
    }

    /// Where `shard`'s unhandled items start, if a runner recorded it.
    pub async fn cursor(&self, shard: i32) -> Result<Option<DateTime<Utc>>, DbError> {
        for select in &self.inner.select_position {
            if let Some(position) = self.position(select, shard).await? {
                return Ok(Some(position));
            }
        }
        Ok(None)
    }

    async fn position(
        &self,
        select: &PreparedStatement,
        shard: i32,
    ) -> Result<Option<DateTime<Utc>>, DbError> {
        let rows = self
            .inner
            .session
            .execute_unpaged(select, (shard,))
            .await?
            .into_rows_result()?;
        Ok(rows
            .maybe_first_row::<(Option<DateTime<Utc>>,)>()?
            .and_then(|(position,)| position))
    }

    /// Moves `shard`'s cursor to `position` unless it is there or further already (another
    /// runner got ahead): the write carries the position (in milliseconds, read as
    /// microseconds: decades below any clock) as its timestamp, so the furthest position wins
    /// whatever order writes land in, and a cursor never moves back.
    pub(crate) async fn advance_cursor(
        &self,
        shard: i32,
        position: DateTime<Utc>,
    ) -> Result<(), DbError> {
        self.inner
            .session
            .execute_unpaged(
                &self.inner.write_position,
                (position.timestamp_millis(), position, shard),
            )
            .await?;
        Ok(())
    }

    /// Remembers that something in `shard` fires at `fire_at`, and wakes the runner if that is
    /// earlier than all it knew of.
    fn note_due(&self, fire_at: DateTime<Utc>, shard: i32) {
        if lock(&self.inner.pending).note(fire_at, shard) {
            self.inner.scheduled.notify_one();
        }
    }

    /// The shards where something scheduled here fires at or before `now`; forgotten here (the
    /// runner's pass that follows handles them, and anything scheduled meanwhile is noted
    /// again).
    pub(crate) fn take_due(&self, now: DateTime<Utc>) -> std::collections::BTreeSet<i32> {
        lock(&self.inner.pending).take_due(now)
    }

    /// Asks for another pass over `shard` as soon as the runner may make one (items were kept
    /// for a retry, or the shard could not be read).
    pub(crate) fn retry_soon(&self, shard: i32) {
        self.note_due(DateTime::UNIX_EPOCH, shard);
    }

    /// Completes when something was scheduled earlier than what the runner knew of.
    pub(crate) async fn scheduled(&self) {
        self.inner.scheduled.notified().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn buckets_are_hours_since_the_epoch() {
        assert_eq!(bucket_of(at("1970-01-01T00:59:59.999Z")), 0);
        assert_eq!(bucket_of(at("1970-01-01T01:00:00Z")), 1);
        // 2026-01-01 is 20454 days after the epoch.
        assert_eq!(bucket_of(at("2026-01-01T00:00:00Z")), 20_454 * 24);
        assert_eq!(bucket_of(at("2026-01-01T13:30:00Z")), 20_454 * 24 + 13);
        assert_eq!(bucket_of(at("1969-12-31T23:59:59Z")), -1);
    }

    #[test]
    fn shards_are_fixed_by_the_stream_id() {
        // Fixed values (FNV-1a 64 of the UTF-8 bytes, mod 16), computed independently: a change
        // of the hash would strand every stored timer.
        assert_eq!(shard_of(""), 5);
        assert_eq!(shard_of("a"), 12);
        assert_eq!(shard_of("member-acme-1"), 6);
        assert_eq!(shard_of("commission-acme-42"), 10);
    }
}
