//! Migrations as an explicit step, the start-up schema check, and the aggregate repository.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use scanloop_eventstore::{Aggregate, DomainEvent, EventStore, ExecuteError, Repository};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_recorded() {
    let (session, keyspace) = scanloop_testkit::fresh_keyspace("migrate").await.unwrap();
    let all: Vec<_> = scanloop_eventstore::schema::MIGRATIONS
        .iter()
        .chain(scanloop_storage::checkpoints::MIGRATIONS)
        .collect();
    let again = scanloop_storage::migrate(&session, &keyspace, 1, "", &all)
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "a second run applies nothing, got {again:?}"
    );
    scanloop_storage::require_schema(&session, &keyspace, "eventstore", 1)
        .await
        .unwrap();
    scanloop_storage::require_schema(&session, &keyspace, "consumer", 1)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_refuses_to_start_on_a_keyspace_that_was_not_migrated() {
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = scanloop_testkit::unique_name("test_unmigrated");
    let error = match EventStore::new(session.clone(), &keyspace).await {
        Ok(_) => panic!("an event store on a missing keyspace must not start"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("scanloop migrate"),
        "the message says what to do: {error}"
    );
    assert!(error.contains(&keyspace), "and where: {error}");

    let error = scanloop_storage::require_schema(&session, &keyspace, "eventstore", 2)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("needs 2"), "{error}");
}

/// A bank-account-like counter: the smallest aggregate with a rule.
#[derive(Default, Debug, Clone, PartialEq)]
struct Counter {
    total: i64,
}

enum CounterEvent {
    Added(i64),
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> &'static str {
        "test.Added"
    }
    fn encode(&self) -> Vec<u8> {
        let CounterEvent::Added(n) = self;
        n.to_be_bytes().to_vec()
    }
    fn decode(event_type: &str, _: u32, payload: &[u8]) -> Result<Self, String> {
        match event_type {
            "test.Added" => Ok(CounterEvent::Added(i64::from_be_bytes(
                payload.try_into().map_err(|_| "payload is not 8 bytes")?,
            ))),
            other => Err(format!("unknown event type {other}")),
        }
    }
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Added(n) = event;
        self.total += n;
    }

    const SNAPSHOT_EVERY: u64 = 5;
    const SNAPSHOT_TYPE: &'static str = "test.Counter.v1";
    fn to_snapshot(&self) -> Vec<u8> {
        self.total.to_be_bytes().to_vec()
    }
    fn from_snapshot(bytes: &[u8]) -> Option<Self> {
        Some(Counter {
            total: i64::from_be_bytes(bytes.try_into().ok()?),
        })
    }
}

#[derive(Debug, PartialEq)]
struct Overdrawn;

fn add(n: i64) -> impl Fn(&Counter) -> Result<Vec<CounterEvent>, Overdrawn> {
    move |state| {
        if state.total + n < 0 {
            Err(Overdrawn)
        } else {
            Ok(vec![CounterEvent::Added(n)])
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_through_the_repository_all_apply_once_and_rules_hold() {
    let fx = common::fixture("repository", 1).await;
    let repository = Arc::new(Repository::<Counter>::new(fx.outbox.clone()));
    let commands = (0..8).map(|_| {
        let repository = repository.clone();
        tokio::spawn(async move { repository.execute("counter", &common::meta(), add(1)).await })
    });
    for outcome in futures::future::join_all(commands).await {
        outcome.unwrap().expect("every command lands after retries");
    }
    let loaded = repository.load::<Overdrawn>("counter").await.unwrap();
    assert_eq!(loaded.state, Counter { total: 8 });
    assert_eq!(loaded.version, 8);

    // Loading starts from the snapshot taken at version 5 and gives the same state.
    let snapshot = fx
        .store
        .load_snapshot("counter")
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snapshot.version, 5);
    assert_eq!(snapshot.state, 5i64.to_be_bytes());

    let refused = repository
        .execute("counter", &common::meta(), add(-9))
        .await;
    assert!(matches!(refused, Err(ExecuteError::Rejected(Overdrawn))));
    assert_eq!(
        repository
            .load::<Overdrawn>("counter")
            .await
            .unwrap()
            .version,
        8
    );
}

/// Each repository remembers the streams it saw; another process (here a second repository)
/// appending behind its back must never make it decide on what it remembers unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_remembers_a_stream_behind_the_store_still_decides_on_the_stored_state() {
    let fx = common::fixture("remembered", 1).await;
    let here = Repository::<Counter>::new(fx.outbox.clone());
    let elsewhere = Repository::<Counter>::new(fx.outbox.clone());
    let state =
        |executed: scanloop_eventstore::Executed<Counter>| (executed.state.total, executed.version);

    let first = here.execute("c", &common::meta(), add(1)).await.unwrap();
    assert_eq!(state(first), (1, 1));
    let behind_its_back = elsewhere.execute("c", &common::meta(), add(5)).await;
    assert_eq!(state(behind_its_back.unwrap()), (6, 2));

    // `here` remembers a total of 1, which refuses -3; the stored total of 6 takes it.
    let refused_by_memory_only = here.execute("c", &common::meta(), add(-3)).await;
    assert_eq!(state(refused_by_memory_only.unwrap()), (3, 3));

    // `elsewhere` remembers version 2: its append collides, and it decides again on version 3.
    let stale_append = elsewhere.execute("c", &common::meta(), add(2)).await;
    assert_eq!(state(stale_append.unwrap()), (5, 4));

    // A refusal that the stored state confirms is still a refusal, and appends nothing.
    let refused = here.execute("c", &common::meta(), add(-6)).await;
    assert!(matches!(refused, Err(ExecuteError::Rejected(Overdrawn))));
    let stored = Repository::<Counter>::new(fx.outbox.clone())
        .load::<Overdrawn>("c")
        .await
        .unwrap();
    assert_eq!((stored.state.total, stored.version), (5, 4));
}

#[tokio::test]
async fn a_stream_presumed_new_is_decided_on_its_stored_state_when_it_exists_after_all() {
    let fx = common::fixture("presumed", 1).await;
    let repository = Repository::<Counter>::new(fx.outbox.clone());
    let state =
        |executed: scanloop_eventstore::Executed<Counter>| (executed.state.total, executed.version);

    // Really new: the presumption holds and the first append opens the stream.
    repository.presume_new("new");
    let opened = repository.execute("new", &common::meta(), add(2)).await;
    assert_eq!(state(opened.unwrap()), (2, 1));

    // Existing (written by another process): the append presumed on an empty stream collides,
    // and the command is decided again on the stored total.
    let elsewhere = Repository::<Counter>::new(fx.outbox.clone());
    elsewhere
        .execute("old", &common::meta(), add(7))
        .await
        .unwrap();
    repository.presume_new("old");
    let added = repository.execute("old", &common::meta(), add(1)).await;
    assert_eq!(state(added.unwrap()), (8, 2));

    // A refusal the empty presumption makes is not returned: the stored total takes -3.
    let taken = elsewhere.execute("old", &common::meta(), add(-4)).await;
    assert_eq!(state(taken.unwrap()), (4, 3));
    let fresh = Repository::<Counter>::new(fx.outbox.clone());
    fresh.presume_new("old");
    let decided_on_the_store = fresh.execute("old", &common::meta(), add(-3)).await;
    assert_eq!(state(decided_on_the_store.unwrap()), (1, 4));

    // A presumption never replaces what the repository remembers.
    repository
        .execute("new", &common::meta(), add(1))
        .await
        .unwrap();
    repository.presume_new("new");
    let remembered = repository.execute("new", &common::meta(), add(1)).await;
    assert_eq!(state(remembered.unwrap()), (4, 3));
}

/// Appends `added` to `stream` (from `after`) straight through the outbox: no snapshot is taken.
async fn append_added(fx: &common::Fixture, stream: &str, after: u64, added: &[i64]) {
    let events = added
        .iter()
        .map(|n| scanloop_eventstore::NewEvent {
            event_type: "test.Added".to_owned(),
            schema_version: 1,
            payload: CounterEvent::Added(*n).encode(),
            occurred_at: chrono::Utc::now(),
        })
        .collect();
    fx.outbox
        .append(stream, after, &common::meta(), events)
        .await
        .unwrap();
}

/// A stream shorter than the snapshot interval is read in one go (its first events); a longer
/// one from its snapshot and the events after it, or whole when it has no usable snapshot.
#[tokio::test]
async fn loads_read_short_streams_whole_and_long_ones_from_their_snapshot() {
    let fx = common::fixture("heads", 1).await;
    let load = |stream: &'static str| {
        // A new repository each time: nothing remembered, every load reads the store.
        let repository = Repository::<Counter>::new(fx.outbox.clone());
        async move {
            let loaded = repository.load::<Overdrawn>(stream).await.unwrap();
            (loaded.state.total, loaded.version)
        }
    };
    let snapshot = |version: u64, total: i64| scanloop_eventstore::Snapshot {
        version,
        state_type: "test.Counter.v1".to_owned(),
        state: total.to_be_bytes().to_vec(),
        requests: Vec::new(),
    };

    assert_eq!(load("empty").await, (0, 0));
    append_added(&fx, "short", 0, &[1, 2, 3, 4]).await;
    assert_eq!(load("short").await, (10, 4));

    // Exactly the interval and no snapshot: the first read is full, so the rest is read.
    append_added(&fx, "five", 0, &[1, 1, 1, 1, 1]).await;
    assert_eq!(load("five").await, (5, 5));
    // That load replayed five events, so it saved a snapshot at 5; a later load starts there.
    assert_eq!(
        fx.store.load_snapshot("five").await.unwrap(),
        Some(snapshot(5, 5))
    );

    // A long stream is loaded from its snapshot: one that says 100 at version 5 (the events say
    // 5) shows it was used, and the events after it are added.
    append_added(&fx, "long", 0, &[1, 1, 1, 1, 1, 10, 20]).await;
    fx.store
        .save_snapshot("long", &snapshot(5, 100))
        .await
        .unwrap();
    assert_eq!(load("long").await, (130, 7));

    // A snapshot of another format is no snapshot: the whole stream is read.
    append_added(&fx, "reformatted", 0, &[1, 1, 1, 1, 1, 1, 1, 1]).await;
    fx.store
        .save_snapshot(
            "reformatted",
            &scanloop_eventstore::Snapshot {
                state_type: "test.Counter.v0".to_owned(),
                ..snapshot(5, 100)
            },
        )
        .await
        .unwrap();
    assert_eq!(load("reformatted").await, (8, 8));
}
