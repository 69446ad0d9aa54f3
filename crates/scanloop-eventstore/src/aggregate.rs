//! Aggregates as pure functions, and a repository that runs commands against their streams.
//!
//! An aggregate is rebuilt by folding its events with [`Aggregate::apply`]; a command is a pure
//! `decide(&state) -> Result<Vec<Event>, Error>` closure. Neither does I/O, so both are unit
//! tested without a database. [`Repository::execute`] is the I/O around them: load, decide,
//! append through the outbox, and on a concurrency conflict reload and decide again.

use std::marker::PhantomData;

use chrono::Utc;

use crate::event::{AppendMeta, NewEvent, RecordedEvent};
use crate::outbox::{Appended, Outbox};
use crate::store::AppendError;

/// A domain event that knows its protobuf encoding.
pub trait DomainEvent: Sized + Send + Sync {
    /// Fully qualified protobuf message name, e.g. "scanloop.activation.v1.WarrantyActivated".
    fn event_type(&self) -> &'static str;
    fn schema_version(&self) -> u32 {
        1
    }
    fn encode(&self) -> Vec<u8>;
    /// Decodes a stored event; an unknown type or a bad payload is an error, never skipped.
    fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, String>;
}

pub trait Aggregate: Default + Send + Sync {
    type Event: DomainEvent;
    fn apply(&mut self, event: &Self::Event);
}

/// A stream's state and the version it was rebuilt at.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    pub state: A,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// The command was refused by the aggregate.
    #[error(transparent)]
    Rejected(E),
    /// Still conflicting after every retry: heavy contention on one stream.
    #[error("stream {stream_id} kept changing concurrently; try again")]
    Contention { stream_id: String },
    #[error("stored event of {stream_id} at version {version} cannot be read: {reason}")]
    Corrupt {
        stream_id: String,
        version: u64,
        reason: String,
    },
    #[error(transparent)]
    Store(AppendError),
}

/// The outcome of a command that was accepted.
#[derive(Debug)]
pub struct Executed<A> {
    pub state: A,
    pub version: u64,
    /// Empty when the command decided there was nothing to do (an idempotent repeat).
    pub appended: Option<Appended>,
}

pub struct Repository<A> {
    outbox: Outbox,
    max_attempts: u32,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            outbox: self.outbox.clone(),
            max_attempts: self.max_attempts,
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            max_attempts: 8,
            _aggregate: PhantomData,
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Rebuilds the stream's state from its events.
    pub async fn load<E>(&self, stream_id: &str) -> Result<Loaded<A>, ExecuteError<E>> {
        let events = self
            .outbox
            .store()
            .load(stream_id, 0)
            .await
            .map_err(|e| ExecuteError::Store(AppendError::Unavailable(e)))?;
        fold(stream_id, A::default(), 0, &events)
    }

    /// Runs `decide` against the current state and appends what it returns, retrying on
    /// concurrency conflicts with fresh state. `decide` must be pure: it may run several times.
    pub async fn execute<E, F>(
        &self,
        stream_id: &str,
        meta: &AppendMeta,
        decide: F,
    ) -> Result<Executed<A>, ExecuteError<E>>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, E>,
    {
        for attempt in 1..=self.max_attempts {
            let Loaded { mut state, version } = self.load(stream_id).await?;
            let events = decide(&state).map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    version,
                    appended: None,
                });
            }
            let now = Utc::now();
            let new_events = events
                .iter()
                .map(|event| NewEvent {
                    event_type: event.event_type().to_owned(),
                    schema_version: event.schema_version(),
                    payload: event.encode(),
                    occurred_at: now,
                })
                .collect();
            match self
                .outbox
                .append(stream_id, version, meta, new_events)
                .await
            {
                Ok(appended) => {
                    for event in &events {
                        state.apply(event);
                    }
                    return Ok(Executed {
                        state,
                        version: appended.version(),
                        appended: Some(appended),
                    });
                }
                Err(AppendError::Conflict { .. }) => {
                    tracing::debug!(stream_id, attempt, "concurrent append; retrying");
                }
                Err(error) => return Err(ExecuteError::Store(error)),
            }
        }
        Err(ExecuteError::Contention {
            stream_id: stream_id.to_owned(),
        })
    }
}

/// Folds stored events onto `state`.
pub fn fold<A: Aggregate, E>(
    stream_id: &str,
    mut state: A,
    mut version: u64,
    events: &[RecordedEvent],
) -> Result<Loaded<A>, ExecuteError<E>> {
    for stored in events {
        let event = A::Event::decode(&stored.event_type, stored.schema_version, &stored.payload)
            .map_err(|reason| ExecuteError::Corrupt {
                stream_id: stream_id.to_owned(),
                version: stored.version,
                reason,
            })?;
        state.apply(&event);
        version = stored.version;
    }
    Ok(Loaded { state, version })
}
