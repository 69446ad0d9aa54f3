//! Shared pieces of the integration tests: an event store on a fresh keyspace and topic, and a
//! handler that records what it sees.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
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
    let topic = scanloop_testkit::fresh_topic(name, partitions)
        .await
        .expect("topic");
    fixture_on_topic(name, topic).await
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
        actor: "test-operator".into(),
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
    start_consumer_with(fixture, group, handler, |_| {})
}

/// [`start_consumer`] with any handler and options adjusted by `adjust`.
pub fn start_consumer_with<H: EventHandler>(
    fixture: &Fixture,
    group: &str,
    handler: H,
    adjust: impl FnOnce(&mut ConsumerOptions),
) -> (
    Arc<ConsumerStats>,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let mut options = ConsumerOptions::new(
        scanloop_testkit::brokers(),
        group,
        vec![fixture.topic.clone()],
    );
    adjust(&mut options);
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

/// Waits until `group` has committed, for every partition of `topic`, the offset at the
/// partition's end: the positive signal that the group took and finished everything published
/// so far. False when `timeout` passes first.
pub async fn wait_until_group_caught_up(group: &str, topic: &str, timeout: Duration) -> bool {
    let group = group.to_owned();
    let topic = topic.to_owned();
    let deadline = tokio::time::Instant::now() + timeout;
    // A client of the group that never subscribes: it reads the group's offsets without
    // joining it.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", scanloop_testkit::brokers())
        .set("group.id", &group)
        .create()
        .expect("offset reader");
    let reader = Arc::new(reader);
    loop {
        let reader = reader.clone();
        let topic = topic.clone();
        let caught_up = tokio::task::spawn_blocking(move || {
            let metadata = reader
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()?;
            let partitions = metadata.topics().first()?.partitions().len() as i32;
            let mut list = TopicPartitionList::new();
            for partition in 0..partitions {
                list.add_partition(&topic, partition);
            }
            let committed = reader
                .committed_offsets(list, Duration::from_secs(5))
                .ok()?;
            for partition in 0..partitions {
                let (_, high) = reader
                    .fetch_watermarks(&topic, partition, Duration::from_secs(5))
                    .ok()?;
                let at = match committed.find_partition(&topic, partition)?.offset() {
                    Offset::Offset(at) => at,
                    _ => 0,
                };
                if at < high {
                    return Some(false);
                }
            }
            Some(true)
        })
        .await
        .expect("offset reader task");
        if caught_up == Some(true) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh topic (and `.dlq`) whose records may not exceed `max_message_bytes`.
pub async fn fresh_topic_with_max_message_bytes(
    prefix: &str,
    partitions: i32,
    max_message_bytes: usize,
) -> String {
    let topic = scanloop_testkit::fresh_topic(prefix, partitions)
        .await
        .expect("topic");
    set_max_message_bytes(&topic, max_message_bytes).await;
    topic
}

/// Changes the topic's `max.message.bytes`.
pub async fn set_max_message_bytes(topic: &str, max_message_bytes: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", scanloop_testkit::brokers())
        .create()
        .expect("admin client");
    let bytes = max_message_bytes.to_string();
    let config = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", &bytes);
    let results = admin
        .alter_configs([&config], &AdminOptions::new())
        .await
        .expect("alter topic config");
    for result in results {
        result.expect("topic config changed");
    }
}

/// An event store on a fresh keyspace writing to an existing `topic`.
pub async fn fixture_on_topic(name: &str, topic: String) -> Fixture {
    let (session, keyspace) = scanloop_testkit::fresh_keyspace(name)
        .await
        .expect("keyspace");
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

/// Groups a sequence of (stream, version) by stream, keeping each stream's order.
pub fn by_stream(seen: &[(String, u64)]) -> BTreeMap<String, Vec<u64>> {
    let mut map: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (stream, version) in seen {
        map.entry(stream.clone()).or_default().push(*version);
    }
    map
}
