//! Aggregates as pure functions, and a repository that runs commands against their streams.
//!
//! An aggregate is rebuilt by folding its events with [`Aggregate::apply`]; a command is a pure
//! `decide(&state) -> Result<Vec<Event>, Error>` closure. Neither does I/O, so both are unit
//! tested without a database. [`Repository::execute`] is the I/O around them: load, decide,
//! append through the outbox, and on a concurrency conflict reload and decide again.
//!
//! A repository remembers the streams it loaded or appended lately ([`Remembered`]), so a
//! stream's next command usually decides without reading it. That is safe because memory is
//! only trusted where the store checks it: an append from remembered state is conditional on
//! the remembered version, so it lands only if the state was the stream's current one; every
//! other outcome decided from memory (a rejection, nothing to do) is decided again on a fresh
//! load before anyone hears it.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::event::{AppendMeta, NewEvent, RecordedEvent};
use crate::outbox::{Appended, Outbox};
use crate::requests::{RequestCheck, RequestLog};
use crate::store::{AppendError, Claim};
use scanloop_storage::DbError;

/// Why an aggregate refuses a command: the small, closed set every service's domain uses. Each
/// maps to one gRPC status (in scanloop-service), so a domain never chooses status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The command itself is wrong (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Valid, but the aggregate is not in a state that allows it (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
}

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

pub trait Aggregate: Default + Clone + Send + Sync {
    type Event: DomainEvent;
    fn apply(&mut self, event: &Self::Event);

    /// Aggregates whose streams can grow without bound (a link's shares, a tree root's members,
    /// a brand's batches) keep a snapshot every this many events (0: never) and implement
    /// [`Aggregate::to_snapshot`] / [`Aggregate::from_snapshot`] (for plain data,
    /// [`snapshot_json`] and [`from_snapshot_json`]). An append that crosses a multiple saves
    /// one, and so does a load that had to read this many events or more (a stream that grew
    /// before its type kept snapshots), so no load reads more than about this many events.
    const SNAPSHOT_EVERY: u64 = 0;
    /// Names the snapshot format; a snapshot of another type is ignored (state is rebuilt).
    const SNAPSHOT_TYPE: &'static str = "";
    fn to_snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn from_snapshot(_bytes: &[u8]) -> Option<Self> {
        None
    }
}

/// What [`Repository::read_stream`] found: the state, version and request log a load starts
/// from, the events after it, and how far the stream was published.
type StreamRead<A> = (A, u64, RequestLog, Vec<RecordedEvent>, Option<u64>);

/// A snapshot of plain data: its serde form as JSON. Serialising plain data with string keys
/// cannot fail; an empty snapshot would only be ignored on load (the state is then rebuilt from
/// the events).
pub fn snapshot_json<A: serde::Serialize>(state: &A) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

/// The state a [`snapshot_json`] holds; `None` (rebuild from the events) if it is not one.
pub fn from_snapshot_json<A: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<A> {
    serde_json::from_slice(bytes).ok()
}

/// A stream's state and the version it was rebuilt at.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    pub state: A,
    pub version: u64,
    /// The request ids the stream remembers (see [`crate::requests`]).
    pub requests: RequestLog,
    /// Events the load that built this state read after its snapshot (0 when the state was
    /// decided from memory or by an append): what snapshots keep bounded.
    pub replayed: u64,
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
    /// The request id was already used on this stream for a different command.
    #[error("request id {request_id} already used for a different request; use a new request id")]
    RequestReused { request_id: String },
    #[error(transparent)]
    Store(AppendError),
}

/// A stream loaded for one command (see [`Repository::prepare`]).
#[derive(Debug)]
pub struct Prepared<A> {
    loaded: Loaded<A>,
    published: Option<u64>,
}

impl<A> Prepared<A> {
    pub fn loaded(&self) -> &Loaded<A> {
        &self.loaded
    }
}

/// The outcome of a command that was accepted.
pub struct Executed<A> {
    /// The state right after the command's events: for a repeated request, as the first
    /// execution left it (so a retry gets the first answer).
    pub state: A,
    pub version: u64,
    /// What this execution appended; empty when it decided there was nothing to do or the
    /// request was a repeat.
    pub appended: Option<Appended>,
    /// The events the command produced: this execution's, or for a repeat, the first one's.
    pub events: Vec<RecordedEvent>,
    /// True when the request id had already been executed with the same command.
    pub repeated: bool,
}

pub struct Repository<A> {
    outbox: Outbox,
    max_attempts: u32,
    remembered: Arc<Remembered<A>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            outbox: self.outbox.clone(),
            max_attempts: self.max_attempts,
            remembered: self.remembered.clone(),
            _aggregate: PhantomData,
        }
    }
}

/// How long a stream's state is remembered after it was last loaded or appended: as long as the
/// outbox remembers the stream's publication, so a command decided from memory still knows how
/// far the stream was published.
const REMEMBERED_FOR: Duration = Duration::from_secs(120);
/// At most this many streams per repository; a burst past it starts over.
const REMEMBERED_STREAMS: usize = 16_384;

/// The state of each stream this repository loaded or appended lately, as of a version the
/// stream really had (events never change once stored). Possibly behind the stream, never
/// ahead of it: see the module's comment for why deciding from it is still safe.
struct Remembered<A>(Mutex<scanloop_bus::ExpiringMap<(Loaded<A>, Option<u64>)>>);

impl<A: Clone> Remembered<A> {
    fn new() -> Self {
        Self(Mutex::new(scanloop_bus::ExpiringMap::new(
            REMEMBERED_FOR,
            REMEMBERED_STREAMS,
        )))
    }

    fn get(&self, stream_id: &str) -> Option<(Loaded<A>, Option<u64>)> {
        self.lock().get(stream_id).cloned()
    }

    fn contains(&self, stream_id: &str) -> bool {
        self.lock().get(stream_id).is_some()
    }

    fn keep(&self, stream_id: &str, loaded: &Loaded<A>, published: Option<u64>) {
        self.lock()
            .insert(stream_id, (loaded.clone(), published), Instant::now());
    }

    fn forget(&self, stream_id: &str) {
        self.lock().remove(stream_id);
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, scanloop_bus::ExpiringMap<(Loaded<A>, Option<u64>)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A stream's state for one decision, and whether it came from memory (and so must be
/// confirmed by a conditional append or a fresh load).
struct Basis<A> {
    loaded: Loaded<A>,
    published: Option<u64>,
    from_memory: bool,
}

impl<A: Aggregate> Repository<A> {
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            max_attempts: 10,
            remembered: Arc::new(Remembered::new()),
            _aggregate: PhantomData,
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Rebuilds the stream's state: from its latest snapshot, if the aggregate keeps them, then
    /// the events after it.
    pub async fn load<E>(&self, stream_id: &str) -> Result<Loaded<A>, ExecuteError<E>> {
        Ok(self.load_for_command(stream_id).await?.0)
    }

    /// Lets the next command on `stream_id` decide as if the stream were new, without reading
    /// it, unless this repository remembers it: for a stream the caller expects to be new (named
    /// after what just happened: a sale, a first scan, a new buyer). Trusted only as memory is:
    /// the append is conditional on the stream being empty, and a refusal or "nothing to do" is
    /// decided again on a fresh load, so a stream that exists after all costs one refused
    /// conditional write and then the load it would have cost anyway. A new stream saves its
    /// reads (snapshot and events).
    pub fn presume_new(&self, stream_id: &str) {
        if !self.remembered.contains(stream_id) {
            let empty = Loaded {
                state: A::default(),
                version: 0,
                requests: RequestLog::default(),
                replayed: 0,
            };
            self.remembered.keep(stream_id, &empty, Some(0));
        }
    }

    /// The stream's state as this repository last loaded or appended it, if it did lately, else
    /// loaded now. Possibly behind the stream: only for a read whose conclusions a later
    /// conditional append checks (as `referral::forest::bind` checks its walk by claiming the
    /// root and binding, each conditional on the version it decided on); anything else loads.
    pub async fn remembered_or_load<E>(
        &self,
        stream_id: &str,
    ) -> Result<Loaded<A>, ExecuteError<E>> {
        match self.remembered.get(stream_id) {
            Some((loaded, _)) => Ok(loaded),
            None => self.load(stream_id).await,
        }
    }

    /// Loads the stream for a command that looks at its state before executing (to decide
    /// what else to do first): [`Repository::execute_prepared`] then decides on this load
    /// instead of reading the stream again.
    pub async fn prepare<E>(&self, stream_id: &str) -> Result<Prepared<A>, ExecuteError<E>> {
        let (loaded, published) = self.load_for_command(stream_id).await?;
        Ok(Prepared { loaded, published })
    }

    /// [`Repository::load`], and how far the stream was published (when the load read any
    /// event), which the command's append then need not read again.
    async fn load_for_command<E>(
        &self,
        stream_id: &str,
    ) -> Result<(Loaded<A>, Option<u64>), ExecuteError<E>> {
        let (state, version, requests, events, published) = self
            .read_stream(stream_id)
            .await
            .map_err(|e| ExecuteError::Store(AppendError::Unavailable(e)))?;
        let mut loaded = fold(stream_id, state, version, &events)?;
        let mut requests = requests;
        for event in &events {
            requests.observe(event);
        }
        requests.retain_recent(Utc::now());
        loaded.requests = requests;
        if A::SNAPSHOT_EVERY > 0 && loaded.replayed >= A::SNAPSHOT_EVERY {
            self.save_snapshot(stream_id, &loaded.state, &loaded.requests, loaded.version)
                .await;
        }
        self.remembered.keep(stream_id, &loaded, published);
        Ok((loaded, published))
    }

    /// What a load starts from (a snapshot's state, version and request log, or the empty
    /// stream's), the events after it, and how far the stream was published (when any event
    /// was read). An aggregate that keeps snapshots has one only once a stream is
    /// `SNAPSHOT_EVERY` events long, so its first events are read first: a shorter stream is
    /// all there in that one read, and only a longer one reads its snapshot and the events
    /// after it.
    async fn read_stream(&self, stream_id: &str) -> Result<StreamRead<A>, DbError> {
        let store = self.outbox.store();
        let every = A::SNAPSHOT_EVERY;
        if every == 0 {
            let (events, published) = store.load_for_command(stream_id, 0).await?;
            return Ok((A::default(), 0, RequestLog::default(), events, published));
        }
        let (head, published) = store.load_head(stream_id, every).await?;
        if (head.len() as u64) < every {
            return Ok((A::default(), 0, RequestLog::default(), head, published));
        }
        let snapshot = store.load_snapshot(stream_id).await?.and_then(|snapshot| {
            if snapshot.state_type != A::SNAPSHOT_TYPE {
                return None;
            }
            let state = A::from_snapshot(&snapshot.state)?;
            let requests = RequestLog::decode(&snapshot.requests)?;
            Some((state, snapshot.version, requests))
        });
        match snapshot {
            Some((state, version, requests)) => {
                let (events, published) = store.load_for_command(stream_id, version).await?;
                Ok((state, version, requests, events, published))
            }
            None => {
                // No usable snapshot: the rest of the stream after what the first read got.
                let read = head.last().map_or(0, |event| event.version);
                let (rest, _) = store.load_for_command(stream_id, read).await?;
                let mut events = head;
                events.extend(rest);
                Ok((A::default(), 0, RequestLog::default(), events, published))
            }
        }
    }

    /// The state a command decides on first: remembered if this repository saw the stream
    /// lately, else loaded.
    async fn basis_for_command<E>(&self, stream_id: &str) -> Result<Basis<A>, ExecuteError<E>> {
        if let Some((mut loaded, published)) = self.remembered.get(stream_id) {
            loaded.requests.retain_recent(Utc::now());
            return Ok(Basis {
                loaded,
                published,
                from_memory: true,
            });
        }
        let (loaded, published) = self.load_for_command(stream_id).await?;
        Ok(Basis {
            loaded,
            published,
            from_memory: false,
        })
    }

    /// Claims the request id of `meta` (if any) brand-wide for its command, before anything is
    /// decided: refused when the brand used it for a different command within the retention, on
    /// any stream; a first use, or this command's own retry, goes on. One conditional insert per
    /// command. `execute` claims by itself; a command that may end without appending anything
    /// (it found nothing to do) claims first, so its id is bound all the same.
    pub async fn claim<E>(
        &self,
        meta: &AppendMeta,
        stream_id: &str,
    ) -> Result<(), ExecuteError<E>> {
        let Some(request) = &meta.request else {
            return Ok(());
        };
        let claim = self
            .outbox
            .store()
            .claim_request(&meta.brand_id, request, stream_id)
            .await
            .map_err(|e| ExecuteError::Store(AppendError::Unavailable(e)))?;
        match claim {
            Claim::New | Claim::Same => Ok(()),
            Claim::Other => Err(ExecuteError::RequestReused {
                request_id: request.request_id.clone(),
            }),
        }
    }

    /// The answer to a repeated request: the state and events as its first execution left them.
    async fn first_answer<E>(
        &self,
        stream_id: &str,
        current: Loaded<A>,
        first_version: u64,
        last_version: u64,
    ) -> Result<Executed<A>, ExecuteError<E>> {
        let unavailable = |e| ExecuteError::Store(AppendError::Unavailable(e));
        let history = self
            .outbox
            .store()
            .load_range(stream_id, 0, last_version)
            .await
            .map_err(unavailable)?;
        let events: Vec<RecordedEvent> = history
            .iter()
            .filter(|e| e.version >= first_version)
            .cloned()
            .collect();
        let state = if last_version == current.version {
            current.state
        } else {
            fold(stream_id, A::default(), 0, &history)?.state
        };
        Ok(Executed {
            state,
            version: last_version,
            appended: None,
            events,
            repeated: true,
        })
    }

    /// Saves a snapshot when this append crossed a multiple of `SNAPSHOT_EVERY`. Best effort: a
    /// missing snapshot only makes the next load read more events.
    async fn maybe_snapshot(
        &self,
        stream_id: &str,
        before: u64,
        state: &A,
        requests: &RequestLog,
        after: u64,
    ) {
        let every = A::SNAPSHOT_EVERY;
        if every == 0 || before / every == after / every {
            return;
        }
        self.save_snapshot(stream_id, state, requests, after).await;
    }

    /// Saves the state at `version` as the stream's snapshot. Best effort: a missing snapshot
    /// only makes the next load read more events.
    async fn save_snapshot(&self, stream_id: &str, state: &A, requests: &RequestLog, version: u64) {
        let snapshot = crate::store::Snapshot {
            version,
            state_type: A::SNAPSHOT_TYPE.to_owned(),
            state: state.to_snapshot(),
            requests: requests.encode(),
        };
        if let Err(error) = self
            .outbox
            .store()
            .save_snapshot(stream_id, &snapshot)
            .await
        {
            tracing::warn!(stream_id, %error, "cannot save snapshot");
        }
    }

    /// Runs `decide` against the current state and appends what it returns, retrying on
    /// concurrency conflicts with fresh state. `decide` must be pure: it may run several times.
    ///
    /// When `meta` carries the command's [`crate::RequestKey`], the stream's request log is
    /// consulted first: a repeat of the same command is answered as the first time, with no
    /// second effect; the same id with a different command is refused
    /// ([`ExecuteError::RequestReused`]). The key is appended with the events, atomically.
    pub async fn execute<E, F>(
        &self,
        stream_id: &str,
        meta: &AppendMeta,
        decide: F,
    ) -> Result<Executed<A>, ExecuteError<E>>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, E>,
    {
        // The brand-wide claim runs beside the first load, not before it.
        let basis = match &meta.request {
            Some(_) => {
                let (claimed, basis) = tokio::join!(
                    self.claim(meta, stream_id),
                    self.basis_for_command(stream_id)
                );
                claimed?;
                basis?
            }
            None => self.basis_for_command(stream_id).await?,
        };
        self.decide_and_append(stream_id, meta, basis, decide).await
    }

    /// [`Repository::execute`] on a stream already loaded by [`Repository::prepare`]: the first
    /// decision uses that load (a concurrent append since makes it load again, as always).
    pub async fn execute_prepared<E, F>(
        &self,
        stream_id: &str,
        meta: &AppendMeta,
        prepared: Prepared<A>,
        decide: F,
    ) -> Result<Executed<A>, ExecuteError<E>>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, E>,
    {
        self.claim(meta, stream_id).await?;
        let basis = Basis {
            loaded: prepared.loaded,
            published: prepared.published,
            from_memory: false,
        };
        self.decide_and_append(stream_id, meta, basis, decide).await
    }

    async fn decide_and_append<E, F>(
        &self,
        stream_id: &str,
        meta: &AppendMeta,
        first: Basis<A>,
        decide: F,
    ) -> Result<Executed<A>, ExecuteError<E>>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, E>,
    {
        let mut first = Some(first);
        let mut attempt = 0;
        while attempt < self.max_attempts {
            let Basis {
                loaded,
                published,
                from_memory,
            } = match first.take() {
                Some(basis) => basis,
                None => {
                    let (loaded, published) = self.load_for_command(stream_id).await?;
                    Basis {
                        loaded,
                        published,
                        from_memory: false,
                    }
                }
            };
            // A repeat or a reused id is true of any version that has it: events never change.
            if let Some(request) = &meta.request {
                match loaded.requests.check(request) {
                    RequestCheck::New => {}
                    RequestCheck::Repeat(seen) => {
                        let (first, last) = (seen.first_version, seen.last_version);
                        return self.first_answer(stream_id, loaded, first, last).await;
                    }
                    RequestCheck::Reused => {
                        return Err(ExecuteError::RequestReused {
                            request_id: request.request_id.clone(),
                        });
                    }
                }
            }
            let Loaded {
                mut state,
                version,
                mut requests,
                ..
            } = loaded;
            let decided = decide(&state);
            // Remembered state may be behind the stream: what it decides stands only if the
            // conditional append takes it. A refusal or "nothing to do" is decided again on a
            // fresh load (not counted as an attempt: nothing collided).
            if from_memory && !matches!(&decided, Ok(events) if !events.is_empty()) {
                self.remembered.forget(stream_id);
                continue;
            }
            let events = decided.map_err(ExecuteError::Rejected)?;
            attempt += 1;
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    version,
                    appended: None,
                    events: Vec::new(),
                    repeated: false,
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
                .append_known(stream_id, version, published, meta, new_events)
                .await
            {
                Ok(appended) => {
                    for event in &events {
                        state.apply(event);
                    }
                    for event in &appended.events {
                        requests.observe(event);
                    }
                    let after = appended.version();
                    self.maybe_snapshot(stream_id, version, &state, &requests, after)
                        .await;
                    let now_stored = Loaded {
                        state: state.clone(),
                        version: after,
                        requests,
                        replayed: 0,
                    };
                    self.remembered.keep(stream_id, &now_stored, published);
                    return Ok(Executed {
                        state,
                        version: after,
                        events: appended.events.clone(),
                        appended: Some(appended),
                        repeated: false,
                    });
                }
                Err(AppendError::Conflict { .. }) => {
                    self.remembered.forget(stream_id);
                    tracing::debug!(stream_id, attempt, "concurrent append; retrying");
                    // A short random pause spreads out writers that keep colliding.
                    let jitter = uuid::Uuid::new_v4().as_u128() % (2_000 * u128::from(attempt));
                    tokio::time::sleep(std::time::Duration::from_micros(jitter as u64)).await;
                }
                Err(error) => {
                    // An outcome unknown (unavailable) may have appended: read it next time.
                    self.remembered.forget(stream_id);
                    return Err(ExecuteError::Store(error));
                }
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
    Ok(Loaded {
        state,
        version,
        requests: RequestLog::default(),
        replayed: events.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, Clone, PartialEq)]
    struct Tally(Vec<u8>);

    struct Mark(u8);

    impl DomainEvent for Mark {
        fn event_type(&self) -> &'static str {
            "test.Mark"
        }
        fn encode(&self) -> Vec<u8> {
            vec![self.0]
        }
        fn decode(event_type: &str, _: u32, payload: &[u8]) -> Result<Self, String> {
            match (event_type, payload) {
                ("test.Mark", [byte]) => Ok(Mark(*byte)),
                _ => Err(format!("not a mark: {event_type} {payload:?}")),
            }
        }
    }

    impl Aggregate for Tally {
        type Event = Mark;
        fn apply(&mut self, event: &Mark) {
            self.0.push(event.0);
        }
    }

    fn stored(version: u64, event_type: &str, payload: Vec<u8>) -> RecordedEvent {
        RecordedEvent::new(
            "s",
            version,
            &AppendMeta::default(),
            NewEvent {
                event_type: event_type.into(),
                schema_version: 1,
                payload,
                occurred_at: Utc::now(),
            },
            Utc::now(),
        )
    }

    #[test]
    fn fold_applies_events_in_order_and_tracks_the_version() {
        let events = [
            stored(1, "test.Mark", vec![7]),
            stored(2, "test.Mark", vec![9]),
        ];
        let loaded = fold::<Tally, ()>("s", Tally::default(), 0, &events).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                state: Tally(vec![7, 9]),
                version: 2,
                requests: RequestLog::default(),
                replayed: 2,
            }
        );
    }

    #[test]
    fn fold_continues_from_a_snapshot_state() {
        let events = [stored(6, "test.Mark", vec![1])];
        let loaded = fold::<Tally, ()>("s", Tally(vec![5]), 5, &events).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                state: Tally(vec![5, 1]),
                version: 6,
                requests: RequestLog::default(),
                replayed: 1,
            }
        );
    }

    #[test]
    fn an_unreadable_event_is_an_error_naming_its_position() {
        let events = [
            stored(1, "test.Mark", vec![1]),
            stored(2, "test.Other", vec![]),
        ];
        match fold::<Tally, ()>("s", Tally::default(), 0, &events) {
            Err(ExecuteError::Corrupt { version, .. }) => assert_eq!(version, 2),
            other => panic!("expected a corrupt-event error, got {other:?}"),
        }
    }
}
