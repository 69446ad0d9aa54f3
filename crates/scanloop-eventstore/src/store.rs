//! Appending to and loading streams.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use scanloop_storage::DbError;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use uuid::Uuid;

use crate::event::{AppendMeta, NewEvent, RecordedEvent, RequestKey};

/// Most events one append may carry: they go in one conditional batch.
pub const MAX_EVENTS_PER_APPEND: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Someone else appended first: reload the stream, decide again, retry.
    #[error("stream {stream_id} is no longer at version {expected}: it changed concurrently")]
    Conflict { stream_id: String, expected: u64 },
    #[error("invalid append to {stream_id}: {reason}")]
    Invalid { stream_id: String, reason: String },
    /// The database did not answer in time or at all. For a timed-out append the outcome is
    /// unknown (it may have been applied): callers retry through their idempotency keys.
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] DbError),
}

impl AppendError {
    fn db<E: Into<DbError>>(error: E) -> Self {
        Self::Unavailable(error.into())
    }
}

/// What claiming a request id found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First use: the id is now this command's.
    New,
    /// Already this command's (same fingerprint).
    Same,
    /// Already used for a different command: refuse.
    Other,
}

/// A serialized aggregate state at a version, so long streams load from there.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: u64,
    pub state_type: String,
    pub state: Vec<u8>,
    /// The stream's recent request ids at `version` (a [`crate::requests::RequestLog`]).
    pub requests: Vec<u8>,
}

#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Statements>,
}

struct Statements {
    session: Arc<Session>,
    insert_event: PreparedStatement,
    /// `insert_event` that also sets the stream's published version.
    insert_event_noting_published: PreparedStatement,
    load_events: PreparedStatement,
    load_head: PreparedStatement,
    load_range: PreparedStatement,
    published_version: PreparedStatement,
    set_published_version: PreparedStatement,
    load_snapshot: PreparedStatement,
    save_snapshot: PreparedStatement,
    claim_request: PreparedStatement,
    claimed_request: PreparedStatement,
    /// Request ids this process claimed or found claimed lately, with the command (fingerprint)
    /// each is bound to: a claim binds an id for days (the table's TTL), so a second claim of
    /// one (a reaction's second stream, a retry) is answered from memory.
    claimed: std::sync::Mutex<scanloop_bus::ExpiringMap<(Vec<u8>, std::time::Instant)>>,
}

/// How long a known claim is answered from memory: far inside the claims' 7-day TTL.
const CLAIMS_REMEMBERED_FOR: std::time::Duration = std::time::Duration::from_secs(300);
/// Claims remembered at most (a burst clears them all).
const CLAIMS_REMEMBERED: usize = 100_000;

type EventRow = (
    i64,
    Uuid,
    String,
    i32,
    String,
    Vec<u8>,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    String,
    String,
    Option<String>,
    Option<Vec<u8>>,
    // Null on events recorded before migration eventstore/4.
    Option<String>,
    // The stream's published version (a static column, the same on every row): loads read it
    // with the events, so a command's append need not read it again.
    Option<i64>,
);

const EVENT_COLUMNS: &str = "version, event_id, event_type, schema_version, brand_id, payload, \
     occurred_at, recorded_at, correlation_id, causation_id, traceparent, request_id, \
     request_fingerprint, actor";

/// What a load selects: the events' columns and the stream's published version.
const LOAD_COLUMNS: &str = "version, event_id, event_type, schema_version, brand_id, payload, \
     occurred_at, recorded_at, correlation_id, causation_id, traceparent, request_id, \
     request_fingerprint, actor, published_version";

/// One event row's bound values in an append's batch, with the stream's published version
/// when the statement sets it.
struct EventValues<'a> {
    event: &'a RecordedEvent,
    published: Option<i64>,
}

impl scylla::serialize::row::SerializeRow for EventValues<'_> {
    fn serialize(
        &self,
        ctx: &scylla::serialize::row::RowSerializationContext<'_>,
        writer: &mut scylla::serialize::writers::RowWriter,
    ) -> Result<(), scylla::serialize::SerializationError> {
        let event = self.event;
        let columns = (
            event.stream_id.as_str(),
            event.version as i64,
            event.event_id,
            event.event_type.as_str(),
            event.schema_version as i32,
            event.brand_id.as_str(),
            event.payload.as_slice(),
            event.occurred_at,
            event.recorded_at,
            event.correlation_id.as_str(),
            event.causation_id.as_str(),
            event.traceparent.as_str(),
            event.request.as_ref().map(|r| r.request_id.as_str()),
            event.request.as_ref().map(|r| r.fingerprint.as_slice()),
            event.actor.as_str(),
        );
        match self.published {
            None => columns.serialize(ctx, writer),
            Some(published) => {
                let (a, b, c, d, e, f, g, h, i, j, k, l, m, n, o) = columns;
                (a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, published).serialize(ctx, writer)
            }
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// A claim of an id bound to `bound`, by a command with `fingerprint`: the same command's (a
/// retry, or its next stream), or another command's.
fn claim_of(bound: &[u8], fingerprint: &[u8]) -> Claim {
    if bound == fingerprint {
        Claim::Same
    } else {
        Claim::Other
    }
}

impl EventStore {
    /// Prepares the statements against `keyspace`. Checks first that `scanloop migrate` has
    /// created the event store's tables there.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> anyhow::Result<Self> {
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
        let mut insert_event = prepare(format!(
            "INSERT INTO {keyspace}.events (stream_id, {EVENT_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        ))
        .await?;
        insert_event.set_consistency(Consistency::Quorum);
        let mut insert_event_noting_published = prepare(format!(
            "INSERT INTO {keyspace}.events (stream_id, {EVENT_COLUMNS}, published_version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        ))
        .await?;
        insert_event_noting_published.set_consistency(Consistency::Quorum);
        let load_events = prepare(format!(
            "SELECT {LOAD_COLUMNS} FROM {keyspace}.events WHERE stream_id = ? AND version > ?"
        ))
        .await?;
        let load_head = prepare(format!(
            "SELECT {LOAD_COLUMNS} FROM {keyspace}.events WHERE stream_id = ? LIMIT ?"
        ))
        .await?;
        let load_range = prepare(format!(
            "SELECT {LOAD_COLUMNS} FROM {keyspace}.events \
             WHERE stream_id = ? AND version > ? AND version <= ?"
        ))
        .await?;
        let published_version = prepare(format!(
            "SELECT published_version FROM {keyspace}.events WHERE stream_id = ? LIMIT 1"
        ))
        .await?;
        let set_published_version = prepare(format!(
            "UPDATE {keyspace}.events SET published_version = ? WHERE stream_id = ?"
        ))
        .await?;
        let load_snapshot = prepare(format!(
            "SELECT version, state_type, state, requests FROM {keyspace}.snapshots \
             WHERE stream_id = ?"
        ))
        .await?;
        // The write timestamp is the snapshot's version: a late write of an older snapshot can
        // never replace a newer one.
        let save_snapshot = prepare(format!(
            "INSERT INTO {keyspace}.snapshots \
             (stream_id, version, state_type, state, requests, taken_at) \
             VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        ))
        .await?;
        let claim_request = prepare(format!(
            "INSERT INTO {keyspace}.request_claims (brand_id, request_id, fingerprint, stream_id) \
             VALUES (?, ?, ?, ?) IF NOT EXISTS USING TTL {}",
            crate::requests::RETENTION.num_seconds()
        ))
        .await?;
        let claimed_request = prepare(format!(
            "SELECT fingerprint FROM {keyspace}.request_claims \
             WHERE brand_id = ? AND request_id = ?"
        ))
        .await?;
        Ok(Self {
            inner: Arc::new(Statements {
                session,
                insert_event,
                insert_event_noting_published,
                load_events,
                load_head,
                load_range,
                published_version,
                set_published_version,
                load_snapshot,
                save_snapshot,
                claim_request,
                claimed_request,
                claimed: std::sync::Mutex::new(scanloop_bus::ExpiringMap::new(
                    CLAIMS_REMEMBERED_FOR,
                    CLAIMS_REMEMBERED,
                )),
            }),
        })
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.inner.session
    }

    /// Appends `events` after `expected_version` (0 for a new stream) in one conditional batch.
    /// `expected_version` must come from loading the stream: the batch checks that the next
    /// versions are free, so a stale version conflicts and nothing is written.
    pub async fn append(
        &self,
        stream_id: &str,
        expected_version: u64,
        meta: &AppendMeta,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        self.append_noting_published(stream_id, expected_version, None, meta, events)
            .await
    }

    /// [`EventStore::append`] that also records, in the same conditional batch (so at no extra
    /// write), that the stream is published up to `published` (when given): how the outbox
    /// keeps `published_version` without a write per publication.
    pub async fn append_noting_published(
        &self,
        stream_id: &str,
        expected_version: u64,
        published: Option<u64>,
        meta: &AppendMeta,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        validate_append(stream_id, &events)?;
        let recorded_at = Utc::now();
        let recorded: Vec<RecordedEvent> = events
            .into_iter()
            .zip(expected_version + 1..)
            .map(|(event, version)| {
                RecordedEvent::new(stream_id, version, meta, event, recorded_at)
            })
            .collect();

        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_consistency(Consistency::Quorum);
        batch.set_serial_consistency(Some(SerialConsistency::Serial));
        let insert = match published {
            Some(_) => &self.inner.insert_event_noting_published,
            None => &self.inner.insert_event,
        };
        let mut values = Vec::with_capacity(recorded.len());
        for event in &recorded {
            batch.append_statement(insert.clone());
            values.push(EventValues {
                event,
                published: published.map(|v| v as i64),
            });
        }
        let started = std::time::Instant::now();
        let outcome = self
            .conditional_batch(&batch, values, stream_id, expected_version)
            .await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(AppendError::Conflict { .. }) => "conflict",
            Err(_) => "error",
        };
        crate::metrics::APPEND_DURATION.record(
            started.elapsed().as_secs_f64(),
            &[opentelemetry::KeyValue::new("outcome", label)],
        );
        outcome.map(|()| recorded)
    }

    async fn conditional_batch(
        &self,
        batch: &Batch,
        values: impl scylla::serialize::batch::BatchValues,
        stream_id: &str,
        expected_version: u64,
    ) -> Result<(), AppendError> {
        let result = self
            .inner
            .session
            .batch(batch, values)
            .await
            .map_err(AppendError::db)?;
        match scanloop_storage::statements::conditional_reply(result) {
            Ok(reply) if reply.applied => Ok(()),
            Ok(_) => Err(AppendError::Conflict {
                stream_id: stream_id.to_owned(),
                expected: expected_version,
            }),
            Err(error) => Err(AppendError::db(error)),
        }
    }

    /// Events of `stream_id` after `after_version`, in order.
    pub async fn load(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, DbError> {
        Ok(self.load_for_command(stream_id, after_version).await?.0)
    }

    /// Events of `stream_id` after `after_version`, in order, and how far the stream was
    /// published when they were read (None when there were no events to read it from): what a
    /// command loads, so that publishing its append needs no second read.
    pub async fn load_for_command(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<(Vec<RecordedEvent>, Option<u64>), DbError> {
        self.query_events(
            &self.inner.load_events,
            stream_id,
            (stream_id, after_version as i64),
        )
        .await
    }

    /// The first `limit` events of `stream_id`, in order, and how far it was published (as
    /// [`EventStore::load_for_command`]): all of a stream shorter than `limit`, in one read.
    pub async fn load_head(
        &self,
        stream_id: &str,
        limit: u64,
    ) -> Result<(Vec<RecordedEvent>, Option<u64>), DbError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        self.query_events(&self.inner.load_head, stream_id, (stream_id, limit))
            .await
    }

    /// Events of `stream_id` in `(after_version, up_to]`, in order.
    pub async fn load_range(
        &self,
        stream_id: &str,
        after_version: u64,
        up_to: u64,
    ) -> Result<Vec<RecordedEvent>, DbError> {
        Ok(self
            .query_events(
                &self.inner.load_range,
                stream_id,
                (stream_id, after_version as i64, up_to as i64),
            )
            .await?
            .0)
    }

    async fn query_events(
        &self,
        statement: &PreparedStatement,
        stream_id: &str,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<(Vec<RecordedEvent>, Option<u64>), DbError> {
        let pager = self
            .inner
            .session
            .execute_iter(statement.clone(), values)
            .await?;
        let rows: Vec<EventRow> = pager.rows_stream::<EventRow>()?.try_collect().await?;
        let published = rows
            .first()
            .map(|row| row.14.map_or(0, |v| v.max(0) as u64));
        let events = rows
            .into_iter()
            .map(|row| from_row(stream_id, row))
            .collect();
        Ok((events, published))
    }

    /// How far the stream has been published to Kafka (0 when nothing was).
    pub async fn published_version(&self, stream_id: &str) -> Result<u64, DbError> {
        let rows = self
            .inner
            .session
            .execute_unpaged(&self.inner.published_version, (stream_id,))
            .await?
            .into_rows_result()?;
        Ok(rows
            .maybe_first_row::<(Option<i64>,)>()?
            .and_then(|(v,)| v)
            .map_or(0, |v| v.max(0) as u64))
    }

    /// Records that the stream is published up to `version`. A plain write: if a slower
    /// publisher writes a lower value afterwards, the next publish merely repeats some events,
    /// which consumers drop.
    pub async fn set_published_version(
        &self,
        stream_id: &str,
        version: u64,
    ) -> Result<(), DbError> {
        self.inner
            .session
            .execute_unpaged(
                &self.inner.set_published_version,
                (version as i64, stream_id),
            )
            .await?;
        Ok(())
    }

    /// Claims `request`'s id in `brand_id` for its command (first on `stream_id`), before the
    /// command decides anything: one conditional insert. Says whether the id was free, already
    /// this command's (a retry, or a concurrent first use of the same command), or another
    /// command's.
    pub async fn claim_request(
        &self,
        brand_id: &str,
        request: &RequestKey,
        stream_id: &str,
    ) -> Result<Claim, DbError> {
        let key = format!("{brand_id}\0{}", request.request_id);
        // Only while fresh: `ExpiringMap` forgets on writes, and a process may sit idle for days.
        if let Some((bound, _)) = self
            .claims()
            .get(&key)
            .filter(|(_, at)| at.elapsed() < CLAIMS_REMEMBERED_FOR)
        {
            return Ok(claim_of(bound, &request.fingerprint));
        }
        let reply = self
            .inner
            .session
            .execute_unpaged(
                &self.inner.claim_request,
                (
                    brand_id,
                    request.request_id.as_str(),
                    request.fingerprint.as_slice(),
                    stream_id,
                ),
            )
            .await?;
        if scanloop_storage::statements::conditional_reply(reply)?.applied {
            self.remember_claim(&key, &request.fingerprint);
            return Ok(Claim::New);
        }
        let rows = self
            .inner
            .session
            .execute_unpaged(
                &self.inner.claimed_request,
                (brand_id, request.request_id.as_str()),
            )
            .await?
            .into_rows_result()?;
        let fingerprint = rows
            .maybe_first_row::<(Option<Vec<u8>>,)>()?
            .and_then(|(fingerprint,)| fingerprint);
        Ok(match fingerprint {
            Some(bound) => {
                self.remember_claim(&key, &bound);
                claim_of(&bound, &request.fingerprint)
            }
            // Expired between the two statements: the stream's own log decides.
            None => Claim::Same,
        })
    }

    fn claims(
        &self,
    ) -> std::sync::MutexGuard<'_, scanloop_bus::ExpiringMap<(Vec<u8>, std::time::Instant)>> {
        self.inner
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember_claim(&self, key: &str, fingerprint: &[u8]) {
        let now = std::time::Instant::now();
        self.claims().insert(key, (fingerprint.to_vec(), now), now);
    }

    pub async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, DbError> {
        let rows = self
            .inner
            .session
            .execute_unpaged(&self.inner.load_snapshot, (stream_id,))
            .await?
            .into_rows_result()?;
        Ok(rows
            .maybe_first_row::<(i64, String, Vec<u8>, Option<Vec<u8>>)>()?
            .map(|(version, state_type, state, requests)| Snapshot {
                version: version.max(0) as u64,
                state_type,
                state,
                requests: requests.unwrap_or_default(),
            }))
    }

    pub async fn save_snapshot(&self, stream_id: &str, snapshot: &Snapshot) -> Result<(), DbError> {
        self.inner
            .session
            .execute_unpaged(
                &self.inner.save_snapshot,
                (
                    stream_id,
                    snapshot.version as i64,
                    snapshot.state_type.as_str(),
                    snapshot.state.as_slice(),
                    snapshot.requests.as_slice(),
                    Utc::now(),
                    snapshot.version as i64,
                ),
            )
            .await?;
        Ok(())
    }
}

/// Refuses appends that could never succeed, before anything is written.
pub(crate) fn validate_append(stream_id: &str, events: &[NewEvent]) -> Result<(), AppendError> {
    let invalid = |reason: &str| {
        Err(AppendError::Invalid {
            stream_id: stream_id.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if stream_id.is_empty() {
        return invalid("empty stream id");
    }
    if events.is_empty() {
        return invalid("no events");
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return invalid("more than 100 events in one append");
    }
    if events.iter().any(|e| e.event_type.is_empty()) {
        return invalid("an event without event_type");
    }
    Ok(())
}

fn from_row(stream_id: &str, row: EventRow) -> RecordedEvent {
    let (
        version,
        event_id,
        event_type,
        schema_version,
        brand_id,
        payload,
        occurred_at,
        recorded_at,
        correlation_id,
        causation_id,
        traceparent,
        request_id,
        request_fingerprint,
        actor,
        _published_version,
    ) = row;
    RecordedEvent {
        stream_id: stream_id.to_owned(),
        version: version as u64,
        event_id,
        event_type,
        schema_version: schema_version as u32,
        brand_id,
        payload,
        occurred_at,
        recorded_at,
        correlation_id,
        causation_id,
        traceparent,
        actor: actor.unwrap_or_default(),
        request: request_id.map(|request_id| RequestKey {
            request_id,
            fingerprint: request_fingerprint.unwrap_or_default(),
        }),
    }
}
