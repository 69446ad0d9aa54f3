//! Consumer checkpoints: the highest version of each stream a consumer has applied.
//!
//! Consumers use them to drop redelivered events: Kafka delivers at least once, and the event
//! store's publisher may publish an event twice after a crash, but a consumer applies each
//! (stream, version) once.
//!
//! A checkpoint only ever moves forward. Two group members can briefly work on the same stream
//! (a partition revoked from one while its handler is still running is already assigned to the
//! other), and the slower one's write must not take the checkpoint back: that would make the
//! consumer apply the versions in between a second time.
//!
//! The order comes from the cells' write timestamps, not from a Paxos round: every write carries
//! `USING TIMESTAMP <version>`, and the database keeps the cell with the highest timestamp
//! whichever write lands last. A plain write costs a fraction of a conditional write (the
//! consumer does one per event per group, so this is most of what a consumer adds to the
//! database), and the racing writers still end at the highest version. A write that lost says
//! nothing; the consumer runner does not need to know (see `scanloop_bus::consumer`).
//!
//! A version as a timestamp is a few microseconds after 1970: far below any clock, so ScyllaDB's
//! `restrict_future_timestamp` (which refuses timestamps more than 3 days ahead) never applies,
//! and the table is never written with a clock timestamp or a conditional write. The flip side:
//! a hand-written `UPDATE` or `DELETE` with the clock's timestamp wins over every checkpoint of
//! its row (write `USING TIMESTAMP <version>` by hand too).
//!
//! Checkpoints are kept per (consumer, topic, stream): two services may name a stream alike, and
//! a group reading both topics must keep their versions apart. Releases before this one kept
//! them in `consumer_checkpoints` (per consumer and stream, at timestamps far in the future that
//! ScyllaDB refuses); that table is no longer read or written. A group starts the new table
//! empty and drops nothing on its first pass over what Kafka redelivers: handlers are
//! idempotent, and Kafka's committed offsets keep redelivery to what was in flight.

use std::sync::Arc;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use crate::{DbError, Migration};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "consumer",
        version: 1,
        description: "consumer checkpoints per stream",
        statements: &["CREATE TABLE IF NOT EXISTS {ks}.consumer_checkpoints (\
             consumer text, stream_id text, version bigint, updated_at timestamp, \
             PRIMARY KEY ((consumer, stream_id)))"],
    },
    Migration {
        component: "consumer",
        version: 2,
        description: "consumer checkpoints per topic and stream, ordered by version",
        statements: &["CREATE TABLE IF NOT EXISTS {ks}.stream_checkpoints (\
             consumer text, topic text, stream_id text, version bigint, \
             PRIMARY KEY ((consumer, topic, stream_id)))"],
    },
];

/// The highest version a checkpoint takes: as a timestamp, 2^40 µs after the epoch is 13 January
/// 1970, far below any clock (and no stream grows near it).
pub const MAX_VERSION: i64 = 1 << 40;

#[derive(Clone)]
pub struct Checkpoints {
    session: Arc<Session>,
    select: PreparedStatement,
    write: PreparedStatement,
}

impl Checkpoints {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self, DbError> {
        let select = session
            .prepare(format!(
                "SELECT version FROM {keyspace}.stream_checkpoints \
                 WHERE consumer = ? AND topic = ? AND stream_id = ?"
            ))
            .await?;
        let write = session
            .prepare(format!(
                "UPDATE {keyspace}.stream_checkpoints USING TIMESTAMP ? \
                 SET version = ? WHERE consumer = ? AND topic = ? AND stream_id = ?"
            ))
            .await?;
        Ok(Self {
            session,
            select,
            write,
        })
    }

    /// The highest applied version of `stream_id` as read from `topic` (0 when none).
    pub async fn applied(
        &self,
        consumer: &str,
        topic: &str,
        stream_id: &str,
    ) -> Result<u64, DbError> {
        let rows = self
            .session
            .execute_unpaged(&self.select, (consumer, topic, stream_id))
            .await?
            .into_rows_result()?;
        Ok(rows
            .maybe_first_row::<(i64,)>()?
            .map_or(0, |(v,)| v.max(0) as u64))
    }

    /// Records that `version` of `stream_id` is applied, unless the checkpoint is already at or
    /// past it (then the write changes nothing). Nothing is read back: a consumer that needs to
    /// know where the checkpoint ended reads [`Checkpoints::applied`].
    pub async fn record(
        &self,
        consumer: &str,
        topic: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<(), DbError> {
        let wanted = i64::try_from(version)
            .ok()
            .filter(|v| *v <= MAX_VERSION)
            .ok_or_else(|| DbError::msg(format!("checkpoint version {version} out of range")))?;
        self.session
            .execute_unpaged(&self.write, (wanted, wanted, consumer, topic, stream_id))
            .await?;
        Ok(())
    }
}
