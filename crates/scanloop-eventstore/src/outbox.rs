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
//!
//! Where each part lives: `outbox/writer.rs` files the markers, appends and publishes in the
//! background; `outbox/sweeper.rs` republishes what writers left behind; `outbox/markers.rs`
//! reads the marker tables for the sweeper (the generation this build writes and, kept apart as
//! legacy, those earlier builds wrote) and keeps the sweep cursor. This file holds what they
//! share: the schema's constants, the [`Outbox`] and its publishing.

mod markers;
mod sweeper;
mod writer;

pub use sweeper::{SweepReport, Sweeper};

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use scanloop_bus::EventProducer;
use scanloop_storage::DbError;

use crate::event::RecordedEvent;
use crate::group_commit::{GroupCommit, Sharing};
use crate::publication::{Chains, Publication};
use crate::retire::Retirer;
use crate::store::EventStore;
use markers::MarkerTables;
use writer::{Flush, PendingMarker, WriterStatements};

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

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
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
    /// How the sweeper reads and deletes markers of every generation, and keeps its cursor.
    tables: MarkerTables,
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
        let tables = MarkerTables::prepare(&session, keyspace).await?;
        let writer = WriterStatements::prepare(&session, keyspace).await?;
        markers::initialise_cursors(&session, keyspace).await?;
        let (markers, retirer) = writer.start(session, skew);
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
                tables,
            }),
        })
    }

    pub fn store(&self) -> &EventStore {
        &self.inner.store
    }

    pub fn topic(&self) -> &str {
        &self.inner.topic
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
