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
//! `USING TIMESTAMP` [`ORDERED_BASE`] + version, and the database keeps the cell with the
//! highest timestamp whichever write lands last. A plain write costs a fraction of a conditional
//! write (the consumer does one per event per group, so this is most of what a consumer adds to
//! the database), and the racing writers still end at the highest version. A write that lost
//! says nothing; the consumer runner does not need to know (see `scanloop_bus::consumer`).
//! The base lies far above any clock timestamp, so a row written by the conditional writes of
//! earlier releases (clock timestamps) is overwritten by the first ordered write; the flip side
//! is that a plain `UPDATE` or `DELETE` by hand with a clock timestamp does not change a row
//! any more (use `USING TIMESTAMP` above the base, or drop the table).

use std::sync::Arc;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use crate::{DbError, Migration};

pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "consumer",
    version: 1,
    description: "consumer checkpoints per stream",
    statements: &["CREATE TABLE IF NOT EXISTS {ks}.consumer_checkpoints (\
         consumer text, stream_id text, version bigint, updated_at timestamp, \
         PRIMARY KEY ((consumer, stream_id)))"],
}];

/// Added to a checkpoint's version to make its write timestamp: 2^62 µs is some 146,000 years
/// past the epoch, above any timestamp a clock gives, and leaves 2^62 versions of room.
pub const ORDERED_BASE: i64 = 1 << 62;

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
                "SELECT version FROM {keyspace}.consumer_checkpoints \
                 WHERE consumer = ? AND stream_id = ?"
            ))
            .await?;
        let write = session
            .prepare(format!(
                "UPDATE {keyspace}.consumer_checkpoints USING TIMESTAMP ? \
                 SET version = ?, updated_at = ? WHERE consumer = ? AND stream_id = ?"
            ))
            .await?;
        Ok(Self {
            session,
            select,
            write,
        })
    }

    /// The highest applied version of `stream_id` (0 when none).
    pub async fn applied(&self, consumer: &str, stream_id: &str) -> Result<u64, DbError> {
        let rows = self
            .session
            .execute_unpaged(&self.select, (consumer, stream_id))
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
        stream_id: &str,
        version: u64,
    ) -> Result<(), DbError> {
        let wanted = i64::try_from(version)
            .ok()
            .filter(|v| v.checked_add(ORDERED_BASE).is_some())
            .ok_or_else(|| DbError::msg(format!("checkpoint version {version} out of range")))?;
        self.session
            .execute_unpaged(
                &self.write,
                (
                    ORDERED_BASE + wanted,
                    wanted,
                    chrono::Utc::now(),
                    consumer,
                    stream_id,
                ),
            )
            .await?;
        Ok(())
    }
}
