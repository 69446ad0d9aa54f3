//! Faults on the real devstack: the broker goes away and comes back. These tests stop and start
//! the devstack's Kafka, so `scripts/test` runs them alone, after everything else (their names
//! start with `fault_`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{event, fixture, meta};
use scanloop_bus::EventProducer;
use scanloop_eventstore::{Outbox, Sweeper};

fn devstack() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/devstack/devstack")
}

fn kafka_pid() -> u32 {
    let state = std::env::var("SCANLOOP_DEVSTACK_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.devstack"),
        PathBuf::from,
    );
    std::fs::read_to_string(state.join("run/kafka.pid"))
        .expect("the devstack's kafka pid")
        .trim()
        .parse()
        .unwrap()
}

/// SIGKILL, as a crashed broker: no controlled shutdown.
fn kill_kafka() {
    let pid = kafka_pid();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_kafka() {
    let status = std::process::Command::new(devstack())
        .arg("up")
        .status()
        .unwrap();
    assert!(status.success(), "devstack up brings kafka back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_appends_succeed_while_kafka_is_down_and_reach_it_when_it_returns() {
    let fx = fixture("fault", 3).await;
    let recorder = common::Recorder::default();
    let (stats, shutdown, consumer) = common::start_consumer(&fx, "fault", recorder.clone());
    fx.outbox
        .append("before", 0, &meta(), vec![event("test.E", "0")])
        .await
        .unwrap();
    assert!(
        scanloop_testkit::eventually(Duration::from_secs(30), || {
            let stats = stats.clone();
            async move { stats.handled() == 1 }
        })
        .await
    );

    kill_kafka();
    // Writers keep working: their events are stored, publishing waits for the broker.
    let impatient =
        EventProducer::new(&scanloop_testkit::brokers(), Duration::from_secs(2)).unwrap();
    let outbox = Outbox::new(fx.store.clone(), &fx.keyspace, impatient, fx.topic.clone())
        .await
        .unwrap();
    for s in 0..5 {
        let appended = outbox
            .append(
                &format!("during-{s}"),
                0,
                &meta(),
                vec![event("test.E", "1"), event("test.E", "2")],
            )
            .await
            .expect("appends do not need the broker");
        assert!(!appended.publication.published().await);
    }

    start_kafka();
    let sweeping = tokio::spawn(
        Sweeper::new(fx.outbox.clone())
            .with_timing(Duration::from_secs(1), Duration::from_millis(500))
            .run(shutdown.clone()),
    );
    let delivered = scanloop_testkit::eventually(Duration::from_secs(90), || {
        let recorder = recorder.clone();
        async move { recorder.count() >= 11 }
    })
    .await;
    // Everything published so far is taken and committed: a duplicate would have shown itself.
    let caught_up =
        common::wait_until_group_caught_up("fault", &fx.topic, Duration::from_secs(60)).await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    sweeping.await.unwrap();
    assert!(
        delivered,
        "after the broker returned the consumer saw {:?}",
        recorder.seen()
    );
    assert!(caught_up, "the group's offsets reach the topic's end");
    // The handler's applied effects as they happened, not de-duplicated: each stream's events
    // exactly once, in version order. (Kafka may hold duplicates; the checkpoints drop them.)
    let mut expected = BTreeMap::new();
    expected.insert("before".to_owned(), vec![1]);
    for s in 0..5 {
        expected.insert(format!("during-{s}"), vec![1, 2]);
    }
    assert_eq!(common::by_stream(&recorder.seen()), expected);
    assert_eq!(recorder.count(), 11, "every event once");
    assert_eq!(stats.handled(), 11);
}
