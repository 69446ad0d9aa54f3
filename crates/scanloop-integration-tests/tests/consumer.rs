//! The consumer runner on the devstack: order, de-duplication, dead letters, restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Recorder, by_stream, event, fixture, meta, start_consumer, start_consumer_with,
    wait_until_group_caught_up,
};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use scanloop_bus::headers::{DLQ_ERROR, header};
use scanloop_bus::{DeadLetter, EventEnvelope, EventHandler, HandlerError};

/// Appends `per_stream` events to each of `streams` streams with `writers` concurrent writers,
/// each taking the next free version of a random stream (so writers collide and retry).
async fn write_concurrently(fx: &common::Fixture, streams: usize, per_stream: u64, writers: usize) {
    let tasks = (0..writers).map(|writer| {
        let outbox = fx.outbox.clone();
        tokio::spawn(async move {
            for round in 0..(streams as u64 * per_stream) {
                let stream = format!("s-{}", (writer as u64 + round) % streams as u64);
                loop {
                    let head = outbox.store().load(&stream, 0).await.unwrap().len() as u64;
                    if head >= per_stream {
                        break;
                    }
                    match outbox
                        .append(&stream, head, &meta(), vec![event("test.E", "x")])
                        .await
                    {
                        Ok(_) => break,
                        Err(scanloop_eventstore::AppendError::Conflict { .. }) => continue,
                        Err(other) => panic!("{other}"),
                    }
                }
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_sees_each_streams_events_once_in_version_order_under_concurrent_writers() {
    let fx = fixture("ordering", 4).await;
    let (streams, per_stream) = (12usize, 10u64);
    write_concurrently(&fx, streams, per_stream, 8).await;
    // Republish half the streams from scratch: Kafka now holds duplicates of them, as after a
    // crash between publish and the published-version update.
    for s in 0..streams / 2 {
        let stream = format!("s-{s}");
        fx.store.set_published_version(&stream, 0).await.unwrap();
        fx.outbox.publish_stream(&stream).await.unwrap();
    }

    let recorder = Recorder::default();
    let (stats, shutdown, consumer) = start_consumer(&fx, "ordering", recorder.clone());
    let total = streams * per_stream as usize;
    let done = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let stats = stats.clone();
        async move { stats.handled() as usize == total && stats.duplicates() as usize >= total / 2 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    assert!(
        done,
        "handled {} duplicates {}",
        stats.handled(),
        stats.duplicates()
    );

    let seen = by_stream(&recorder.seen());
    assert_eq!(seen.len(), streams);
    for (stream, versions) in seen {
        assert_eq!(
            versions,
            (1..=per_stream).collect::<Vec<_>>(),
            "stream {stream}"
        );
    }
    // At least the republished half; concurrent writers also publish overlapping ranges.
    assert!(stats.duplicates() as usize >= (streams / 2) * per_stream as usize);
}

/// A recorder that takes only `test.Wanted` events.
#[derive(Clone, Default)]
struct Choosy(Recorder);

impl EventHandler for Choosy {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        assert_eq!(
            event.event_type, "test.Wanted",
            "a type it does not take was handed over"
        );
        self.0.handle(event).await
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&["test.Wanted"])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_gets_only_the_types_it_declares_and_the_rest_cost_no_checkpoint() {
    let fx = fixture("declared", 1).await;
    // One stream of both types, one of the unwanted type only.
    fx.outbox
        .append(
            "mixed",
            0,
            &meta(),
            vec![
                event("test.Other", "1"),
                event("test.Wanted", "2"),
                event("test.Other", "3"),
            ],
        )
        .await
        .unwrap();
    fx.outbox
        .append("unwanted", 0, &meta(), vec![event("test.Other", "x")])
        .await
        .unwrap();
    fx.outbox
        .append("mixed", 3, &meta(), vec![event("test.Wanted", "4")])
        .await
        .unwrap();

    let choosy = Choosy::default();
    let (stats, shutdown, consumer) =
        common::start_consumer_with(&fx, "declared", choosy.clone(), |_| {});
    let done = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let stats = stats.clone();
        async move { stats.handled() == 2 && stats.passed_by() == 3 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    assert!(
        done,
        "handled {} passed by {}",
        stats.handled(),
        stats.passed_by()
    );
    assert_eq!(
        choosy.0.seen(),
        [("mixed".to_owned(), 2), ("mixed".to_owned(), 4)]
    );
    // The checkpoints: the taken events' only.
    let checkpoints = &fx.checkpoints;
    assert_eq!(
        checkpoints
            .applied("declared", &fx.topic, "mixed")
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        checkpoints
            .applied("declared", &fx.topic, "unwanted")
            .await
            .unwrap(),
        0
    );
}

/// Takes every type, and says events of `test.Harmless` change nothing when seen again.
#[derive(Clone, Default)]
struct PartlyIdempotent(Recorder);

impl EventHandler for PartlyIdempotent {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        self.0.handle(event).await
    }

    fn idempotent_by_construction(&self, event_type: &str) -> bool {
        event_type == "test.Harmless"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_idempotent_by_construction_are_handled_without_a_checkpoint() {
    let fx = fixture("idempotent", 1).await;
    fx.outbox
        .append(
            "harmless",
            0,
            &meta(),
            vec![event("test.Harmless", "1"), event("test.Harmless", "2")],
        )
        .await
        .unwrap();
    fx.outbox
        .append(
            "mixed",
            0,
            &meta(),
            vec![
                event("test.Checked", "1"),
                event("test.Harmless", "2"),
                event("test.Checked", "3"),
                event("test.Harmless", "4"),
            ],
        )
        .await
        .unwrap();

    let handler = PartlyIdempotent::default();
    let (stats, shutdown, consumer) =
        common::start_consumer_with(&fx, "idempotent", handler.clone(), |_| {});
    let done = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let stats = stats.clone();
        async move { stats.handled() == 6 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    assert!(done, "handled {}", stats.handled());
    let seen = by_stream(&handler.0.seen());
    assert_eq!(seen["harmless"], [1, 2]);
    assert_eq!(seen["mixed"], [1, 2, 3, 4]);
    // Only the checked events moved a checkpoint: none for the harmless stream, and the mixed
    // stream's at its last checked event.
    let checkpoints = &fx.checkpoints;
    let applied = |stream: &'static str| checkpoints.applied("idempotent", &fx.topic, stream);
    assert_eq!(applied("harmless").await.unwrap(), 0);
    assert_eq!(applied("mixed").await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dlq_and_the_consumer_keeps_going() {
    let fx = fixture("poison", 1).await;
    fx.outbox
        .append("p-1", 0, &meta(), vec![event("test.E", "ok")])
        .await
        .unwrap();
    // Not an envelope at all.
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", scanloop_testkit::brokers())
        .create()
        .unwrap();
    raw.send(
        FutureRecord::to(&fx.topic)
            .key("junk")
            .payload(&b"\xff\x00 not protobuf"[..]),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    // A well-formed envelope the handler refuses.
    fx.outbox
        .append("p-2", 0, &meta(), vec![event(common::POISON_TYPE, "bad")])
        .await
        .unwrap();
    fx.outbox
        .append("p-1", 1, &meta(), vec![event("test.E", "ok")])
        .await
        .unwrap();
    fx.outbox
        .append("p-2", 1, &meta(), vec![event("test.E", "ok")])
        .await
        .unwrap();

    let recorder = Recorder::default();
    let (stats, shutdown, consumer) = start_consumer(&fx, "poison", recorder.clone());
    let done = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let stats = stats.clone();
        async move { stats.handled() == 3 && stats.dead_lettered() == 2 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    assert!(
        done,
        "handled {} dead-lettered {}",
        stats.handled(),
        stats.dead_lettered()
    );
    let mut seen = recorder.seen();
    seen.sort();
    assert_eq!(
        seen,
        [("p-1".into(), 1), ("p-1".into(), 2), ("p-2".into(), 2)]
    );

    // The dead letters carry the reason and the original bytes.
    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", scanloop_testkit::brokers())
        .set("group.id", scanloop_testkit::unique_name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&format!("{}.dlq", fx.topic)]).unwrap();
    let mut letters = Vec::new();
    while letters.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
            .await
            .expect("dead letters within 20 s")
            .unwrap();
        let letter = DeadLetter::decode(message.payload().unwrap()).unwrap();
        let reason = header(message.headers().unwrap(), DLQ_ERROR)
            .unwrap()
            .to_owned();
        assert_eq!(letter.error, reason);
        assert_eq!(letter.source_topic, fx.topic);
        assert_eq!(letter.consumer, "poison");
        letters.push(letter);
    }
    letters.sort_by_key(|l| l.source_offset);
    assert_eq!(letters[0].original_value, b"\xff\x00 not protobuf");
    assert!(
        letters[0]
            .error
            .contains("not a scanloop.common.v1.EventEnvelope")
    );
    let refused = EventEnvelope::decode(letters[1].original_value.as_slice()).unwrap();
    assert_eq!((refused.stream_id.as_str(), refused.version), ("p-2", 1));
    assert!(letters[1].error.contains("cannot be applied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_resumes_from_its_committed_offsets_and_misses_nothing() {
    let fx = fixture("restart", 2).await;
    for s in 0..10 {
        fx.outbox
            .append(
                &format!("r-{s}"),
                0,
                &meta(),
                vec![event("test.E", "first")],
            )
            .await
            .unwrap();
    }
    let first = Recorder::default();
    let (stats, shutdown, consumer) = start_consumer(&fx, "restart", first.clone());
    assert!(
        scanloop_testkit::eventually(Duration::from_secs(30), || {
            let stats = stats.clone();
            async move { stats.handled() == 10 }
        })
        .await
    );
    // Stopped only once its offsets are committed: on a loaded machine a checkpoint write can
    // outlast the shutdown grace, and what is not committed then is redelivered (and dropped
    // as a duplicate), which is not what this test is about.
    assert!(
        wait_until_group_caught_up("restart", &fx.topic, Duration::from_secs(30)).await,
        "the first run's offsets are committed"
    );
    shutdown.cancel();
    consumer.await.unwrap().unwrap();

    // While no consumer runs, the streams move on.
    for s in 0..10 {
        fx.outbox
            .append(
                &format!("r-{s}"),
                1,
                &meta(),
                vec![event("test.E", "second")],
            )
            .await
            .unwrap();
    }
    let second = Recorder::default();
    let (stats, shutdown, consumer) = start_consumer(&fx, "restart", second.clone());
    assert!(
        scanloop_testkit::eventually(Duration::from_secs(30), || {
            let stats = stats.clone();
            async move { stats.handled() == 10 }
        })
        .await,
        "second run handled {}",
        stats.handled()
    );
    // Everything the group will ever be given is taken and committed: a wrongly rewound
    // consumer has shown itself by now.
    assert!(
        wait_until_group_caught_up("restart", &fx.topic, Duration::from_secs(30)).await,
        "the group's committed offsets reach the topic's end"
    );
    shutdown.cancel();
    consumer.await.unwrap().unwrap();

    let mut all = first.seen();
    all.extend(second.seen());
    all.sort();
    let expected: Vec<(String, u64)> = (0..10)
        .flat_map(|s| [(format!("r-{s}"), 1), (format!("r-{s}"), 2)])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(all, expected, "every event exactly once across the restart");
    assert!(
        second.seen().iter().all(|(_, v)| *v == 2),
        "the restart resumed, not replayed"
    );
    assert_eq!(
        stats.duplicates(),
        0,
        "committed offsets, not checkpoints, did the resuming"
    );
}

/// Fails transiently on every event of the streams in `failing` while `open` is false, counting
/// the attempts; records every event it applies.
#[derive(Clone, Default)]
struct Gated {
    failing: Arc<Vec<String>>,
    open: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
    applied: Recorder,
}

impl Gated {
    fn failing(streams: &[&str]) -> Self {
        Self {
            failing: Arc::new(streams.iter().map(|s| (*s).to_owned()).collect()),
            ..Self::default()
        }
    }
    fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl EventHandler for Gated {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        if self.failing.contains(&event.stream_id) && !self.open.load(Ordering::SeqCst) {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            return Err(HandlerError::Transient(anyhow::anyhow!(
                "read model timed out for {}@{}",
                event.stream_id,
                event.version
            )));
        }
        self.applied.handle(event).await
    }
}

fn quick_retries(max_attempts: u32) -> impl FnOnce(&mut scanloop_bus::ConsumerOptions) {
    move |options| {
        options.max_attempts = max_attempts;
        options.initial_retry_backoff = Duration::from_millis(10);
        options.max_retry_backoff = Duration::from_millis(50);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_transiently_holds_back_only_itself() {
    // One partition: the failing stream and the healthy one share it.
    let fx = fixture("lanes", 1).await;
    fx.outbox
        .append("flaky", 0, &meta(), vec![event("test.E", "1")])
        .await
        .unwrap();
    for version in 0..5 {
        fx.outbox
            .append("steady", version, &meta(), vec![event("test.E", "x")])
            .await
            .unwrap();
    }
    fx.outbox
        .append("flaky", 1, &meta(), vec![event("test.E", "2")])
        .await
        .unwrap();

    let handler = Gated::failing(&["flaky"]);
    let (stats, shutdown, consumer) =
        start_consumer_with(&fx, "lanes", handler.clone(), quick_retries(1_000));
    // The healthy stream, behind the failing one in the same partition, is applied meanwhile.
    let steady_applied = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let applied = handler.applied.clone();
        async move { by_stream(&applied.seen()).get("steady").map(Vec::len) == Some(5) }
    })
    .await;
    let flaky_meanwhile = by_stream(&handler.applied.seen()).get("flaky").cloned();
    let attempts_meanwhile = handler.attempts();
    handler.open.store(true, Ordering::SeqCst);
    let flaky_applied = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let applied = handler.applied.clone();
        async move { applied.count() == 7 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();

    assert!(steady_applied, "saw {:?}", handler.applied.seen());
    assert_eq!(
        flaky_meanwhile, None,
        "the failing stream was not applied meanwhile"
    );
    assert!(attempts_meanwhile >= 1, "it was being retried meanwhile");
    assert!(flaky_applied, "saw {:?}", handler.applied.seen());
    let seen = by_stream(&handler.applied.seen());
    assert_eq!(seen["flaky"], [1, 2], "once each, in order");
    assert_eq!(seen["steady"], [1, 2, 3, 4, 5]);
    assert_eq!(stats.dead_lettered(), 0);
    assert!(stats.retries() >= attempts_meanwhile);
}

/// Reads the dead letters of `topic` until `count` arrived.
async fn dead_letters(topic: &str, count: usize) -> Vec<DeadLetter> {
    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", scanloop_testkit::brokers())
        .set("group.id", scanloop_testkit::unique_name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&format!("{topic}.dlq")]).unwrap();
    let mut letters = Vec::new();
    while letters.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
            .await
            .expect("dead letters within 20 s")
            .unwrap();
        letters.push(DeadLetter::decode(message.payload().unwrap()).unwrap());
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_past_the_attempt_limit_is_dead_lettered_and_the_stream_moves_on() {
    let fx = fixture("give_up", 2).await;
    fx.outbox
        .append("doomed", 0, &meta(), vec![event("test.E", "1")])
        .await
        .unwrap();
    for version in 0..3 {
        fx.outbox
            .append("steady", version, &meta(), vec![event("test.E", "x")])
            .await
            .unwrap();
    }
    let handler = Gated::failing(&["doomed"]);
    let (stats, shutdown, consumer) =
        start_consumer_with(&fx, "give_up", handler.clone(), quick_retries(3));
    // Giving up needs something else to succeed while "doomed" fails (else it is an outage):
    // one more "steady" event once "doomed" has failed, whatever order the first ones took.
    assert!(
        scanloop_testkit::eventually(Duration::from_secs(30), || {
            let handler = handler.clone();
            async move { handler.attempts() >= 1 }
        })
        .await
    );
    fx.outbox
        .append("steady", 3, &meta(), vec![event("test.E", "x")])
        .await
        .unwrap();
    let gave_up = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let stats = stats.clone();
        async move { stats.dead_lettered() == 1 && stats.handled() == 4 }
    })
    .await;
    assert!(
        gave_up,
        "dead-lettered {} handled {}",
        stats.dead_lettered(),
        stats.handled()
    );
    // The stream is not stuck behind its dead letter.
    handler.open.store(true, Ordering::SeqCst);
    fx.outbox
        .append("doomed", 1, &meta(), vec![event("test.E", "2")])
        .await
        .unwrap();
    let moved_on = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let stats = stats.clone();
        async move { stats.handled() == 5 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    assert!(moved_on, "saw {:?}", handler.applied.seen());

    let seen = by_stream(&handler.applied.seen());
    assert_eq!(seen["doomed"], [2]);
    assert_eq!(seen["steady"], [1, 2, 3, 4]);
    assert!(handler.attempts() >= 3, "attempts {}", handler.attempts());
    let letters = dead_letters(&fx.topic, 1).await;
    let refused = EventEnvelope::decode(letters[0].original_value.as_slice()).unwrap();
    assert_eq!((refused.stream_id.as_str(), refused.version), ("doomed", 1));
    assert!(
        letters[0].error.contains("gave up after")
            && letters[0]
                .error
                .contains("read model timed out for doomed@1"),
        "{}",
        letters[0].error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_nothing_succeeds_transient_failures_are_retried_past_the_limit_not_dead_lettered() {
    // As during an outage: every event fails, none succeeds.
    let fx = fixture("outage", 1).await;
    fx.outbox
        .append("a", 0, &meta(), vec![event("test.E", "1")])
        .await
        .unwrap();
    let handler = Gated::failing(&["a"]);
    let (stats, shutdown, consumer) =
        start_consumer_with(&fx, "outage", handler.clone(), quick_retries(2));
    let retried_past_limit = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let handler = handler.clone();
        async move { handler.attempts() >= 10 }
    })
    .await;
    let dead_lettered_meanwhile = stats.dead_lettered();
    handler.open.store(true, Ordering::SeqCst);
    let applied = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let stats = stats.clone();
        async move { stats.handled() == 1 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    assert!(retried_past_limit, "attempts {}", handler.attempts());
    assert_eq!(dead_lettered_meanwhile, 0);
    assert!(applied);
    assert_eq!(handler.applied.seen(), [("a".to_owned(), 1)]);
    assert_eq!(stats.dead_lettered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_only_move_forward() {
    let fx = fixture("checkpoints", 1).await;
    let checkpoints = &fx.checkpoints;
    assert_eq!(checkpoints.applied("g", "t", "s").await.unwrap(), 0);
    checkpoints.record("g", "t", "s", 5).await.unwrap();
    assert_eq!(checkpoints.applied("g", "t", "s").await.unwrap(), 5);
    // A slower member's older write changes nothing.
    checkpoints.record("g", "t", "s", 3).await.unwrap();
    assert_eq!(checkpoints.applied("g", "t", "s").await.unwrap(), 5);
    checkpoints.record("g", "t", "s", 5).await.unwrap();
    checkpoints.record("g", "t", "s", 8).await.unwrap();
    assert_eq!(checkpoints.applied("g", "t", "s").await.unwrap(), 8);
    // A stream's first checkpoint at version 1, written twice.
    checkpoints.record("g", "t", "one", 1).await.unwrap();
    checkpoints.record("g", "t", "one", 1).await.unwrap();
    assert_eq!(checkpoints.applied("g", "t", "one").await.unwrap(), 1);
    checkpoints.record("g", "t", "one", 2).await.unwrap();
    checkpoints.record("g", "t", "one", 1).await.unwrap();
    assert_eq!(checkpoints.applied("g", "t", "one").await.unwrap(), 2);
    // Per consumer, topic and stream: a stream named alike on another topic is another stream.
    assert_eq!(checkpoints.applied("other", "t", "s").await.unwrap(), 0);
    assert_eq!(checkpoints.applied("g", "t", "u").await.unwrap(), 0);
    assert_eq!(checkpoints.applied("g", "t2", "s").await.unwrap(), 0);
    checkpoints.record("g", "t2", "s", 1).await.unwrap();
    assert_eq!(checkpoints.applied("g", "t2", "s").await.unwrap(), 1);
    assert_eq!(checkpoints.applied("g", "t", "s").await.unwrap(), 8);

    // Racing writers end at the highest version, whatever order they land in.
    let racers = (1..=20u64).map(|version| {
        let checkpoints = checkpoints.clone();
        tokio::spawn(async move { checkpoints.record("g", "t", "race", version).await })
    });
    for result in futures::future::join_all(racers).await {
        result.unwrap().unwrap();
    }
    assert_eq!(checkpoints.applied("g", "t", "race").await.unwrap(), 20);
}

/// A read model shared by the members of a group (as a table would be): each stream's applied
/// versions, changed only by the next version; redeliveries are counted, gaps recorded.
#[derive(Clone, Default)]
struct SharedModel {
    applied: Arc<Mutex<HashMap<String, Vec<u64>>>>,
    gaps: Arc<Mutex<Vec<(String, u64)>>>,
    calls: Arc<Mutex<Vec<(String, u64)>>>,
}

/// One group member's handler on the shared model.
#[derive(Clone)]
struct Member {
    model: SharedModel,
    handled: Arc<AtomicU64>,
}

impl EventHandler for Member {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        // Work takes a moment, so revocations find handler calls in flight.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let key = (event.stream_id.clone(), event.version);
        self.model.calls.lock().unwrap().push(key.clone());
        let mut applied = self.model.applied.lock().unwrap();
        let versions = applied.entry(event.stream_id.clone()).or_default();
        let last = versions.last().copied().unwrap_or(0);
        if event.version == last + 1 {
            versions.push(event.version);
        } else if event.version > last + 1 {
            self.model.gaps.lock().unwrap().push(key);
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_moving_to_a_second_member_lose_nothing_and_apply_nothing_twice() {
    let fx = fixture("rebalance", 4).await;
    let model = SharedModel::default();
    let member = |model: &SharedModel| Member {
        model: model.clone(),
        handled: Arc::new(AtomicU64::new(0)),
    };
    let (first, second) = (member(&model), member(&model));
    let (_, stop_first, first_task) = start_consumer_with(&fx, "rebalance", first.clone(), |_| {});

    // Writers keep appending until told to stop, each to its own streams.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let outbox = fx.outbox.clone();
            let stop = stop_writing.clone();
            tokio::spawn(async move {
                let mut heads = [0u64; 4];
                while !stop.load(Ordering::SeqCst) && heads[3] < 200 {
                    for (n, head) in heads.iter_mut().enumerate() {
                        let stream = format!("w{writer}-{n}");
                        outbox
                            .append(&stream, *head, &meta(), vec![event("test.E", "x")])
                            .await
                            .unwrap();
                        *head += 1;
                    }
                }
            })
        })
        .collect();

    let first_working = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let handled = first.handled.clone();
        async move { handled.load(Ordering::SeqCst) >= 40 }
    })
    .await;
    assert!(first_working);
    let (_, stop_second, second_task) =
        start_consumer_with(&fx, "rebalance", second.clone(), |_| {});
    // Partitions moved: the second member applies events of its own.
    let second_working = scanloop_testkit::eventually(Duration::from_secs(60), || {
        let handled = second.handled.clone();
        async move { handled.load(Ordering::SeqCst) >= 20 }
    })
    .await;
    let first_after_join = first.handled.load(Ordering::SeqCst);
    stop_writing.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(second_working, "the second member never got partitions");

    let mut heads = BTreeMap::new();
    for writer in 0..4 {
        for n in 0..4 {
            let stream = format!("w{writer}-{n}");
            let head = fx.store.load(&stream, 0).await.unwrap().len() as u64;
            heads.insert(stream, head);
        }
    }
    let complete = scanloop_testkit::eventually(Duration::from_secs(60), || {
        let model = model.clone();
        let heads = heads.clone();
        async move {
            let applied = model.applied.lock().unwrap();
            heads
                .iter()
                .all(|(stream, head)| applied.get(stream).map_or(0, Vec::len) as u64 == *head)
        }
    })
    .await;
    let caught_up =
        wait_until_group_caught_up("rebalance", &fx.topic, Duration::from_secs(30)).await;
    stop_first.cancel();
    stop_second.cancel();
    first_task.await.unwrap().unwrap();
    second_task.await.unwrap().unwrap();
    assert!(complete, "not every event was applied");
    assert!(caught_up, "the group's offsets reach the topic's end");
    assert!(
        first.handled.load(Ordering::SeqCst) >= first_after_join,
        "the first member stayed in the group"
    );

    // The applied effects: every version of every stream once, in order.
    let applied = model.applied.lock().unwrap().clone();
    for (stream, head) in &heads {
        assert_eq!(applied[stream], (1..=*head).collect::<Vec<_>>(), "{stream}");
        assert_eq!(
            fx.checkpoints
                .applied("rebalance", &fx.topic, stream)
                .await
                .unwrap(),
            *head,
            "checkpoint of {stream}"
        );
    }
    assert_eq!(
        *model.gaps.lock().unwrap(),
        [],
        "no version overtook another"
    );
    // The raw handler calls, not de-duplicated: per stream, each call is the next version or
    // repeats one already called (a call in flight while its partition moved is made again by
    // the new owner: at most once per stream, as the partitions move once here).
    let calls = model.calls.lock().unwrap().clone();
    let total: u64 = heads.values().sum();
    let mut repeats = 0;
    for (stream, versions) in by_stream(&calls) {
        let mut highest = 0;
        for version in &versions {
            if *version == highest + 1 {
                highest = *version;
            } else {
                assert!(*version <= highest, "{stream} out of order: {versions:?}");
                repeats += 1;
            }
        }
        assert_eq!(highest, heads[&stream], "{stream}");
    }
    assert_eq!(calls.len() as u64, total + repeats);
    assert!(
        repeats <= heads.len() as u64,
        "{repeats} repeated calls for {total} events"
    );
}
