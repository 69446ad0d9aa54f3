//! Issue 10's experiment, measured beside the baseline (not how the event store writes): an
//! append without a Paxos round per command, because each stream has one writer at a time.
//!
//! Streams hash into [`SHARDS`] shards. A writer holds a shard by a lease row, taken and renewed
//! with a conditional write (one per shard every few seconds, not one per append) that also
//! raises the shard's *epoch* when the lease changes hands. While it holds the lease the writer
//! alone appends to the shard's streams: it knows each stream's version (in memory; a stream it
//! has not seen yet costs one read of its head, which the bench's new streams skip as the bare
//! append does), writes the events with a plain insert, and acknowledges only if the write
//! finished before the lease's safe end. Two things fence a writer that lost its lease without
//! knowing (paused, partitioned):
//! - it acknowledges nothing after its lease's safe end ([`LEASE`] less [`CLOCK_MARGIN`]), and
//!   the next owner takes the shard only after the lease's end plus the margin, so an
//!   acknowledged write and the next owner's writes never overlap (given clocks drift by less
//!   than the margin);
//! - its cells carry `USING TIMESTAMP` of epoch · 2^32 µs, so a late write that lands after the
//!   next owner wrote the same (stream, version) loses to it, whatever order the two arrive in:
//!   an unacknowledged write never replaces an acknowledged one. (Far below any clock, as
//!   ScyllaDB requires: it refuses timestamps more than 3 days ahead.)
//!
//! What this costs in guarantees: safety rests on bounded clock drift and on leases, where the
//! conditional append rests on nothing but the database; a shard moving to another writer
//! stalls its streams for the lease's remaining time; every command of a stream must reach its
//! owner (routing by shard, as Kafka partitions route events). Publication would need the same
//! outbox guarantee as today (a marker, or the owner republishing its shard's tail on takeover).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::Utc;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Shards a writer can own; streams hash into them.
pub(crate) const SHARDS: u32 = 64;
/// How long a lease lasts from the moment its (re)newal was sent.
const LEASE: Duration = Duration::from_secs(10);
/// Room for clock drift between writers: acknowledgements stop this long before the lease
/// ends, and a lease is taken over only this long after it ended.
const CLOCK_MARGIN: Duration = Duration::from_secs(2);

/// One shard's lease as its owner holds it.
struct Lease {
    epoch: i64,
    /// Writes that finish before this instant may be acknowledged.
    safe_until: Mutex<Instant>,
}

/// A writer that owns every shard of the bench's keyspace (the bench runs one writer).
pub(crate) struct SingleWriter {
    session: Arc<Session>,
    insert: PreparedStatement,
    renew: PreparedStatement,
    owner: Uuid,
    leases: Vec<Lease>,
    /// Each stream's version as this writer last wrote it.
    versions: Mutex<HashMap<String, u64>>,
    renewals: CancellationToken,
}

impl SingleWriter {
    /// Creates the lease table and the events table's twin in `keyspace`, takes every shard's
    /// lease and renews them in the background until dropped.
    pub(crate) async fn start(session: Arc<Session>, keyspace: &str) -> anyhow::Result<Arc<Self>> {
        session
            .query_unpaged(
                format!(
                    "CREATE TABLE IF NOT EXISTS {keyspace}.shard_leases (\
                     shard int PRIMARY KEY, owner uuid, epoch bigint, expires_at timestamp)"
                ),
                (),
            )
            .await?;
        session.await_schema_agreement().await?;
        let insert = session
            .prepare(format!(
                "INSERT INTO {keyspace}.plain_events (stream_id, version, event_id, event_type, \
                 schema_version, brand_id, payload, occurred_at, recorded_at, correlation_id, \
                 causation_id, traceparent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 USING TIMESTAMP ?"
            ))
            .await?;
        let renew = session
            .prepare(format!(
                "UPDATE {keyspace}.shard_leases SET expires_at = ? WHERE shard = ? \
                 IF owner = ? AND epoch = ?"
            ))
            .await?;
        let owner = Uuid::new_v4();
        let mut leases = Vec::new();
        for shard in 0..SHARDS {
            leases.push(take_lease(&session, keyspace, shard as i32, owner).await?);
        }
        let writer = Arc::new(Self {
            session,
            insert,
            renew,
            owner,
            leases,
            versions: Mutex::new(HashMap::new()),
            renewals: CancellationToken::new(),
        });
        tokio::spawn(renew_leases(
            Arc::downgrade(&writer),
            writer.renewals.clone(),
        ));
        Ok(writer)
    }

    /// Appends one event at the stream's next version with a plain insert; fails (outcome
    /// unknown) when the write finished after the shard's lease stopped being safe.
    pub(crate) async fn append(&self, stream_id: &str, payload: &[u8]) -> anyhow::Result<u64> {
        let lease = &self.leases[shard_of(stream_id) as usize];
        let safe_until = *lock(&lease.safe_until);
        if Instant::now() >= safe_until {
            bail!("shard lease of {stream_id} is not held");
        }
        let version = lock(&self.versions).get(stream_id).copied().unwrap_or(0) + 1;
        let now = Utc::now();
        self.session
            .execute_unpaged(
                &self.insert,
                (
                    stream_id,
                    version as i64,
                    Uuid::now_v7(),
                    "bench.Event",
                    1i32,
                    "bench",
                    payload,
                    now,
                    now,
                    "",
                    "",
                    "",
                    fencing_timestamp(lease.epoch),
                ),
            )
            .await?;
        if Instant::now() >= safe_until {
            bail!("shard lease of {stream_id} ran out while writing: outcome unknown");
        }
        lock(&self.versions).insert(stream_id.to_owned(), version);
        Ok(version)
    }
}

impl Drop for SingleWriter {
    fn drop(&mut self) {
        self.renewals.cancel();
    }
}

/// Takes `shard`'s lease: a new row at epoch 1, or an expired one at the next epoch.
async fn take_lease(
    session: &Session,
    keyspace: &str,
    shard: i32,
    owner: Uuid,
) -> anyhow::Result<Lease> {
    let current = session
        .query_unpaged(
            format!("SELECT epoch, expires_at FROM {keyspace}.shard_leases WHERE shard = ?"),
            (shard,),
        )
        .await?
        .into_rows_result()?
        .maybe_first_row::<(i64, chrono::DateTime<Utc>)>()?;
    let sent = Instant::now();
    let expires_at = Utc::now() + LEASE;
    let (epoch, result) = match current {
        None => (
            1,
            session
                .query_unpaged(
                    format!(
                        "INSERT INTO {keyspace}.shard_leases (shard, owner, epoch, expires_at) \
                         VALUES (?, ?, 1, ?) IF NOT EXISTS"
                    ),
                    (shard, owner, expires_at),
                )
                .await?,
        ),
        Some((epoch, ended)) if ended + CLOCK_MARGIN < Utc::now() => (
            epoch + 1,
            session
                .query_unpaged(
                    format!(
                        "UPDATE {keyspace}.shard_leases SET owner = ?, epoch = ?, expires_at = ? \
                         WHERE shard = ? IF epoch = ?"
                    ),
                    (owner, epoch + 1, expires_at, shard, epoch),
                )
                .await?,
        ),
        Some(_) => bail!("shard {shard} is leased to another writer"),
    };
    if !applied(result)? {
        bail!("another writer took shard {shard} meanwhile");
    }
    Ok(Lease {
        epoch,
        safe_until: Mutex::new(sent + LEASE - CLOCK_MARGIN),
    })
}

/// Renews every lease a third of the way through it; a lease found taken is not safe any more.
async fn renew_leases(writer: std::sync::Weak<SingleWriter>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LEASE / 3) => {}
        }
        let Some(writer) = writer.upgrade() else {
            return;
        };
        for (shard, lease) in writer.leases.iter().enumerate() {
            let sent = Instant::now();
            let expires_at = Utc::now() + LEASE;
            let renewed = writer
                .session
                .execute_unpaged(
                    &writer.renew,
                    (expires_at, shard as i32, writer.owner, lease.epoch),
                )
                .await
                .map_err(anyhow::Error::from)
                .and_then(applied);
            match renewed {
                Ok(true) => *lock(&lease.safe_until) = sent + LEASE - CLOCK_MARGIN,
                Ok(false) => *lock(&lease.safe_until) = sent,
                // Not renewed this time: the lease runs on to its safe end.
                Err(error) => eprintln!("  lease renewal of shard {shard} failed: {error:#}"),
            }
        }
    }
}

/// The `[applied]` column of a conditional write's answer.
fn applied(result: scylla::response::query_result::QueryResult) -> anyhow::Result<bool> {
    Ok(scanloop_storage::statements::conditional_reply(result)?.applied)
}

/// Cells of a later epoch win over any of an earlier one, in whatever order they land.
fn fencing_timestamp(epoch: i64) -> i64 {
    epoch << 32
}

/// FNV-1a: stable across builds and processes, as routing commands to owners would need.
fn shard_of(stream_id: &str) -> u32 {
    let hash = stream_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash % u64::from(SHARDS)) as u32
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_epoch_fences_every_write_of_an_earlier_one() {
        assert!(fencing_timestamp(2) > fencing_timestamp(1));
        assert_eq!(fencing_timestamp(3) - fencing_timestamp(2), 1 << 32);
        assert_eq!(fencing_timestamp(1), 1 << 32);
    }

    #[test]
    fn streams_spread_over_all_shards() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let shard = shard_of(&format!("single-{i}"));
            assert!(shard < SHARDS);
            seen.insert(shard);
        }
        assert_eq!(seen.len(), SHARDS as usize);
    }
}
