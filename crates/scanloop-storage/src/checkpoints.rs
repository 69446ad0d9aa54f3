//! Consumer checkpoints: the highest version of each stream a consumer has applied.
//!
//! Consumers use them to drop redelivered events: Kafka delivers at least once, and the event
//! store's publisher may publish an event twice after a crash, but a consumer applies each
//! (stream, version) once.
//!
//! A checkpoint only ever moves forward. Two group members can briefly work on the same stream
//! (a partition revoked from one while its handler is still running is already assigned to the
//! other), and the slower one's write must not take the checkpoint back: that would make the
//! consumer apply the versions in between a second time. So every write is conditional
//! (`IF version < ?`, or `IF NOT EXISTS` for a stream's first checkpoint), and a write that loses
//! reports the checkpoint it found instead.

use std::sync::Arc;

use scylla::client::session::Session;
use scylla::response::query_result::QueryRowsResult;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

use crate::{DbError, Migration};

pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "consumer",
    version: 1,
    description: "consumer checkpoints per stream",
    statements: &["CREATE TABLE IF NOT EXISTS {ks}.consumer_checkpoints (\
         consumer text, stream_id text, version bigint, updated_at timestamp, \
         PRIMARY KEY ((consumer, stream_id)))"],
}];

/// How often a checkpoint write starts over when a concurrent first write and a concurrent
/// delete make both conditions fail; more than a couple means something else is wrong.
const MAX_WRITE_ROUNDS: usize = 4;

#[derive(Clone)]
pub struct Checkpoints {
    session: Arc<Session>,
    select: PreparedStatement,
    advance: PreparedStatement,
    create: PreparedStatement,
}

impl Checkpoints {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self, DbError> {
        let select = session
            .prepare(format!(
                "SELECT version FROM {keyspace}.consumer_checkpoints \
                 WHERE consumer = ? AND stream_id = ?"
            ))
            .await?;
        let advance = session
            .prepare(format!(
                "UPDATE {keyspace}.consumer_checkpoints SET version = ?, updated_at = ? \
                 WHERE consumer = ? AND stream_id = ? IF version < ?"
            ))
            .await?;
        let create = session
            .prepare(format!(
                "INSERT INTO {keyspace}.consumer_checkpoints \
                 (consumer, stream_id, version, updated_at) VALUES (?, ?, ?, ?) IF NOT EXISTS"
            ))
            .await?;
        Ok(Self {
            session,
            select,
            advance,
            create,
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
    /// past it. Returns the checkpoint after the write: `version`, or the higher one found.
    pub async fn record(
        &self,
        consumer: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<u64, DbError> {
        let wanted = i64::try_from(version)
            .map_err(|_| DbError::msg(format!("checkpoint version {version} out of range")))?;
        // A stream's first checkpoint is usually version 1: create the row first then, and
        // otherwise move the existing one on; each is one conditional write in the usual case.
        let mut write = if version == 1 {
            Write::Create
        } else {
            Write::Advance
        };
        for _ in 0..MAX_WRITE_ROUNDS {
            let result = match write {
                Write::Advance => {
                    self.session
                        .execute_unpaged(
                            &self.advance,
                            (wanted, chrono::Utc::now(), consumer, stream_id, wanted),
                        )
                        .await?
                }
                Write::Create => {
                    self.session
                        .execute_unpaged(
                            &self.create,
                            (consumer, stream_id, wanted, chrono::Utc::now()),
                        )
                        .await?
                }
            }
            .into_rows_result()?;
            write = match lwt_outcome(&result)? {
                LwtOutcome::Applied => return Ok(version),
                LwtOutcome::Found(current) if current >= wanted => return Ok(current as u64),
                // A lower checkpoint exists (maybe created concurrently): move it on.
                LwtOutcome::Found(_) => Write::Advance,
                // No checkpoint yet: create it.
                LwtOutcome::Missing => Write::Create,
            };
        }
        Err(DbError::msg(format!(
            "checkpoint of {stream_id} for {consumer} kept changing under {MAX_WRITE_ROUNDS} \
             conditional writes"
        )))
    }
}

#[derive(Debug, Clone, Copy)]
enum Write {
    /// `IF NOT EXISTS`: the stream's first checkpoint.
    Create,
    /// `IF version < ?`: an existing checkpoint moves on.
    Advance,
}

/// What a conditional write answered.
#[derive(Debug, PartialEq, Eq)]
enum LwtOutcome {
    Applied,
    /// Not applied; the row holds this version.
    Found(i64),
    /// Not applied; there is no row (or no version in it).
    Missing,
}

/// Reads `[applied]` and, when the condition failed, the `version` column the database returned
/// with it (Cassandra and ScyllaDB return the columns the condition looked at).
fn lwt_outcome(result: &QueryRowsResult) -> Result<LwtOutcome, DbError> {
    let specs = result.column_specs();
    let applied_at = specs
        .get_by_name("[applied]")
        .map(|(index, _)| index)
        .ok_or_else(|| DbError::msg("conditional write answered without [applied]"))?;
    let version_at = specs.get_by_name("version").map(|(index, _)| index);
    let Some(row) = result.maybe_first_row::<Row>()? else {
        return Err(DbError::msg("conditional write answered without a row"));
    };
    let cell = |index: usize| row.columns.get(index).and_then(Option::as_ref);
    if let Some(CqlValue::Boolean(true)) = cell(applied_at) {
        return Ok(LwtOutcome::Applied);
    }
    Ok(match version_at.and_then(cell) {
        Some(CqlValue::BigInt(version)) => LwtOutcome::Found(*version),
        _ => LwtOutcome::Missing,
    })
}
