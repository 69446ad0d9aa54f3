//! The consumer runner on the devstack: order, de-duplication, dead letters, restarts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Recorder, event, fixture, meta, start_consumer};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use scanloop_bus::headers::{DLQ_ERROR, header};
use scanloop_bus::{DeadLetter, EventEnvelope};

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

fn by_stream(seen: &[(String, u64)]) -> BTreeMap<String, Vec<u64>> {
    let mut map: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (stream, version) in seen {
        map.entry(stream.clone()).or_default().push(*version);
    }
    map
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
    // Give a wrongly rewound consumer the chance to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
