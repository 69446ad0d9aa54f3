//! Shared pieces of the integration tests: an event store on a fresh keyspace and topic, and a
//! handler that records what it sees.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use scanloop_bus::{
    ConsumerOptions, ConsumerRunner, ConsumerStats, EventEnvelope, EventHandler, EventProducer,
    HandlerError,
};
use scanloop_eventstore::{AppendMeta, EventStore, NewEvent, Outbox};
use scanloop_storage::Checkpoints;
use tokio_util::sync::CancellationToken;

/// The event type the recording handler refuses as poison.
pub const POISON_TYPE: &str = "test.Poison";

pub struct Fixture {
    pub keyspace: String,
    pub topic: String,
    pub store: EventStore,
    pub outbox: Outbox,
    pub checkpoints: Checkpoints,
}

pub async fn fixture(name: &str, partitions: i32) -> Fixture {
    let (session, keyspace) = scanloop_testkit::fresh_keyspace(name)
        .await
        .expect("keyspace");
    let topic = scanloop_testkit::fresh_topic(name, partitions)
        .await
        .expect("topic");
    let store = EventStore::new(session.clone(), &keyspace)
        .await
        .expect("store");
    let outbox = Outbox::new(store.clone(), &keyspace, producer(), topic.clone())
        .await
        .expect("outbox");
    let checkpoints = Checkpoints::new(session, &keyspace)
        .await
        .expect("checkpoints");
    Fixture {
        keyspace,
        topic,
        store,
        outbox,
        checkpoints,
    }
}

pub fn producer() -> EventProducer {
    EventProducer::new(&scanloop_testkit::brokers(), Duration::from_secs(10)).expect("producer")
}

pub fn meta() -> AppendMeta {
    AppendMeta {
        brand_id: "acme".into(),
        correlation_id: uuid::Uuid::new_v4().to_string(),
        causation_id: uuid::Uuid::new_v4().to_string(),
        traceparent: String::new(),
        request: None,
    }
}

pub fn event(kind: &str, body: &str) -> NewEvent {
    NewEvent {
        event_type: kind.to_owned(),
        schema_version: 1,
        payload: body.as_bytes().to_vec(),
        occurred_at: Utc::now(),
    }
}

/// Records every (stream, version) it applies, in order.
#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Recorder {
    pub fn seen(&self) -> Vec<(String, u64)> {
        self.seen.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl EventHandler for Recorder {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        if event.event_type == POISON_TYPE {
            return Err(HandlerError::Poison(format!(
                "{} cannot be applied",
                event.event_type
            )));
        }
        self.seen
            .lock()
            .unwrap()
            .push((event.stream_id.clone(), event.version));
        Ok(())
    }
}

/// Starts a consumer of the fixture's topic in group `group`; returns its stats and the token
/// that stops it, and the task to await.
pub fn start_consumer(
    fixture: &Fixture,
    group: &str,
    handler: Recorder,
) -> (
    Arc<ConsumerStats>,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let options = ConsumerOptions::new(
        scanloop_testkit::brokers(),
        group,
        vec![fixture.topic.clone()],
    );
    let runner = ConsumerRunner::new(
        options,
        handler,
        fixture.checkpoints.clone(),
        producer(),
        shutdown.clone(),
    )
    .expect("consumer");
    let stats = runner.stats();
    (stats, shutdown, tokio::spawn(runner.run()))
}
