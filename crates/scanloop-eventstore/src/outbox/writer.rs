//! The writing side of the outbox: each append's marker filed (group-committed with concurrent
//! appends' into one numbered row of `outbox_writer_flushes`), the conditional append, and the
//! stream's unpublished range published in the background behind the stream's previous
//! publication in this process; each flush row is settled for the retirer once its appends are.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{SubsecRound as _, Utc};
use scanloop_storage::DbError;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use super::{Appended, MARKER_SHARDS, Outbox, bucket_of};
use crate::event::{AppendMeta, NewEvent, RecordedEvent};
use crate::group_commit::GroupCommit;
use crate::publication::Publication;
use crate::retire::{Retirer, Standing};
use crate::store::AppendError;

/// Most markers one group-committed write carries: one partition, under Cassandra's batch
/// size warning (5 KiB).
const MARKERS_PER_FLUSH: usize = 40;
/// Group-committed writes of one kind in flight at once.
const FLUSHES_IN_FLIGHT: usize = 4;

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

/// What an appender asks the marker flush to file.
pub(super) struct PendingMarker {
    stream_id: String,
    first_version: u64,
}

/// A filed flush row and how many of its appends have not settled yet. When the last one
/// settles, the row is done (the writer's retirer deletes it with its neighbours) unless one
/// of them has to leave it for the sweeper.
#[derive(Debug)]
pub(super) struct Flush {
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
}

/// The statements of the writing side, prepared before anything of it starts.
pub(super) struct WriterStatements {
    insert_flush: PreparedStatement,
    retire_flushes: PreparedStatement,
}

impl WriterStatements {
    pub(super) async fn prepare(session: &Session, keyspace: &str) -> Result<Self, DbError> {
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
        Ok(Self {
            insert_flush,
            retire_flushes,
        })
    }

    /// Starts this process's writer: the group commit that files its markers, and the retirer
    /// that deletes its finished flush rows.
    pub(super) fn start(
        self,
        session: Arc<Session>,
        skew: chrono::Duration,
    ) -> (GroupCommit<PendingMarker, Arc<Flush>>, Retirer) {
        // This writer's rows go to one shard under its own id, so that they lie side by side
        // for range deletes; writers pick shards at random, which spreads them.
        let writer = Writer {
            id: Uuid::new_v4(),
            shard: rand_shard(),
        };
        let retirer = Retirer::spawn(
            session.clone(),
            self.retire_flushes,
            writer.shard,
            writer.id,
        );
        let markers = file_markers(session, self.insert_flush, writer, retirer.clone(), skew);
        (markers, retirer)
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
