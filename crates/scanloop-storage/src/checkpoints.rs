//! Consumer checkpoints: the highest version of each stream a consumer has applied.
//!
//! Consumers use them to drop redelivered events: Kafka delivers at least once, and the event
//! store's publisher may publish an event twice after a crash, but a consumer applies each
//! (stream, version) once.

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

#[derive(Clone)]
pub struct Checkpoints {
    session: Arc<Session>,
    select: PreparedStatement,
    upsert: PreparedStatement,
}

impl Checkpoints {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self, DbError> {
        let select = session
            .prepare(format!(
                "SELECT version FROM {keyspace}.consumer_checkpoints \
                 WHERE consumer = ? AND stream_id = ?"
            ))
            .await?;
        let upsert = session
            .prepare(format!(
                "UPDATE {keyspace}.consumer_checkpoints SET version = ?, updated_at = ? \
                 WHERE consumer = ? AND stream_id = ?"
            ))
            .await?;
        Ok(Self {
            session,
            select,
            upsert,
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

    /// Records that `version` of `stream_id` is applied. Versions only grow per stream within a
    /// partition-ordered consumer, so a plain write is enough.
    pub async fn record(
        &self,
        consumer: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<(), DbError> {
        self.session
            .execute_unpaged(
                &self.upsert,
                (version as i64, chrono::Utc::now(), consumer, stream_id),
            )
            .await?;
        Ok(())
    }
}
