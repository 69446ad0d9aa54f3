//! The event store on the devstack: optimistic concurrency, ordered publishing, crash recovery.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{event, fixture, meta};
use scanloop_bus::EventProducer;
use scanloop_eventstore::{AppendError, Outbox, Snapshot, Sweeper};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_one_stream_get_contiguous_versions_and_losers_conflict() {
    let fx = fixture("concurrency", 1).await;
    let stream = "counter-1";
    let target = 120u64;
    let successes = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));

    let writers = (0..12).map(|writer| {
        let outbox = fx.outbox.clone();
        let (successes, conflicts) = (successes.clone(), conflicts.clone());
        tokio::spawn(async move {
            let mut mine = Vec::new();
            while successes.load(Ordering::SeqCst) < target {
                let head = outbox.store().load(stream, 0).await.unwrap().len() as u64;
                let body = format!("writer {writer} at {head}");
                match outbox
                    .append(stream, head, &meta(), vec![event("test.Tick", &body)])
                    .await
                {
                    Ok(appended) => {
                        successes.fetch_add(1, Ordering::SeqCst);
                        mine.push((appended.version(), body, appended.publication));
                    }
                    Err(AppendError::Conflict { expected, .. }) => {
                        assert_eq!(expected, head);
                        conflicts.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(other) => panic!("unexpected append error: {other}"),
                }
            }
            mine
        })
    });
    let mut claimed = Vec::new();
    for writer in futures::future::join_all(writers).await {
        claimed.extend(writer.unwrap());
    }

    let stored = fx.store.load(stream, 0).await.unwrap();
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    let expected: Vec<u64> = (1..=stored.len() as u64).collect();
    assert_eq!(versions, expected, "versions must be contiguous from 1");
    assert_eq!(stored.len() as u64, successes.load(Ordering::SeqCst));
    let ids: HashSet<_> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), stored.len(), "event ids must be unique");
    // Every success a writer was told about is exactly the event stored at that version, and
    // reaches Kafka.
    assert_eq!(claimed.len(), stored.len());
    for (version, body, publication) in claimed {
        assert_eq!(stored[version as usize - 1].payload, body.as_bytes());
        assert!(publication.published().await, "version {version} published");
    }
    assert!(
        conflicts.load(Ordering::SeqCst) > 0,
        "12 writers racing on one stream must produce conflicts"
    );
    let on_topic = versions_on_topic(&fx, stream).await;
    assert_consumable(&on_topic, stored.len() as u64);
}

/// The versions of `stream` on the fixture's topic, in topic order.
async fn versions_on_topic(fx: &common::Fixture, stream: &str) -> Vec<u64> {
    scanloop_testkit::envelopes_on(&fx.topic)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.stream_id == stream)
        .map(|e| e.version)
        .collect()
}

/// What a consumer that drops versions at or below the last it applied makes of `versions`:
/// every version from 1 to `head` applied, in order (a version that came after a higher one
/// would be dropped, i.e. lost).
fn assert_consumable(versions: &[u64], head: u64) {
    let mut applied = 0;
    for &version in versions {
        assert!(
            version <= applied + 1,
            "version {version} after {applied}: {versions:?}"
        );
        applied = applied.max(version);
    }
    assert_eq!(applied, head, "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expected_version_writes_nothing() {
    let fx = fixture("stale", 1).await;
    fx.outbox
        .append(
            "s-1",
            0,
            &meta(),
            vec![event("test.A", "a"), event("test.B", "b")],
        )
        .await
        .unwrap();
    let error = fx
        .outbox
        .append(
            "s-1",
            1,
            &meta(),
            vec![event("test.C", "c"), event("test.D", "d")],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, AppendError::Conflict { expected: 1, .. }),
        "{error}"
    );
    let stored = fx.store.load("s-1", 0).await.unwrap();
    let types: Vec<_> = stored.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["test.A", "test.B"],
        "the losing batch must leave no row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_loses_kafka_after_its_append_is_published_by_the_sweeper() {
    let fx = fixture("sweeper", 3).await;
    // A writer whose broker is unreachable stores its events and then fails to publish: the
    // database is left exactly as if the writer had died between its append and its publish
    // (events stored, marker present, published version behind).
    let dead_broker = EventProducer::new("127.0.0.1:1", Duration::from_millis(500)).unwrap();
    let stranded = Outbox::new(
        fx.store.clone(),
        &fx.keyspace,
        dead_broker,
        fx.topic.clone(),
    )
    .await
    .unwrap();
    for stream in ["order-1", "order-2"] {
        let appended = stranded
            .append(
                stream,
                0,
                &meta(),
                vec![event("test.A", "1"), event("test.B", "2")],
            )
            .await
            .unwrap();
        assert!(!appended.publication.published().await);
    }
    assert_eq!(fx.store.published_version("order-1").await.unwrap(), 0);

    let recorder = common::Recorder::default();
    let (_stats, shutdown, consumer) =
        common::start_consumer(&fx, "sweeper-test", recorder.clone());
    let sweeper = Sweeper::new(fx.outbox.clone())
        .with_timing(Duration::from_secs(1), Duration::from_millis(250));
    let sweeping = tokio::spawn(sweeper.run(shutdown.clone()));

    let delivered = scanloop_testkit::eventually(Duration::from_secs(20), || {
        let recorder = recorder.clone();
        async move { recorder.count() == 4 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    sweeping.await.unwrap();
    assert!(
        delivered,
        "sweeper must publish stranded events; saw {:?}",
        recorder.seen()
    );
    let mut seen = recorder.seen();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("order-1".into(), 1),
            ("order-1".into(), 2),
            ("order-2".into(), 1),
            ("order-2".into(), 2)
        ]
    );
    assert_eq!(fx.store.published_version("order-2").await.unwrap(), 2);
    // Nothing is left to sweep.
    let report = Sweeper::new(fx.outbox.clone()).sweep_once().await.unwrap();
    assert_eq!(report.markers_kept, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_append_publishes_earlier_unpublished_events_first() {
    let fx = fixture("catchup", 1).await;
    let dead_broker = EventProducer::new("127.0.0.1:1", Duration::from_millis(500)).unwrap();
    let stranded = Outbox::new(
        fx.store.clone(),
        &fx.keyspace,
        dead_broker,
        fx.topic.clone(),
    )
    .await
    .unwrap();
    stranded
        .append("s", 0, &meta(), vec![event("test.A", "1")])
        .await
        .unwrap();
    let recorder = common::Recorder::default();
    let (_stats, shutdown, consumer) = common::start_consumer(&fx, "catchup", recorder.clone());
    let appended = fx
        .outbox
        .append("s", 1, &meta(), vec![event("test.B", "2")])
        .await
        .unwrap();
    assert!(appended.publication.published().await);
    let delivered = scanloop_testkit::eventually(Duration::from_secs(20), || {
        let recorder = recorder.clone();
        async move { recorder.count() == 2 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    assert!(delivered);
    assert_eq!(recorder.seen(), [("s".into(), 1), ("s".into(), 2)]);
}

/// A command reads the stream's published version with its load and publishes from there
/// without reading it again: an earlier unpublished append still goes out first, and a value
/// that another publisher has since moved past only repeats events, which consumers drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_knows_the_published_version_from_its_load_loses_nothing() {
    let fx = fixture("known", 1).await;
    let stranded = stranded_outbox(&fx).await;
    stranded
        .append("s", 0, &meta(), vec![event("test.A", "1")])
        .await
        .unwrap();
    let (events, published) = fx.store.load_for_command("s", 0).await.unwrap();
    assert_eq!((events.len(), published), (1, Some(0)));
    assert_eq!(fx.store.load_for_command("t", 0).await.unwrap().1, None);

    let recorder = common::Recorder::default();
    let (_stats, shutdown, consumer) = common::start_consumer(&fx, "known", recorder.clone());
    let appended = fx
        .outbox
        .append_known("s", 1, published, &meta(), vec![event("test.B", "2")])
        .await
        .unwrap();
    assert!(appended.publication.published().await);
    // Versions 1 and 2 are out, which only the next append through this process records.
    assert_eq!(fx.store.load_for_command("s", 0).await.unwrap().1, Some(0));
    // Another process whose load is behind the truth (2): versions 1 and 2 go out again,
    // then 3.
    let other = Outbox::new(
        fx.store.clone(),
        &fx.keyspace,
        common::producer(),
        fx.topic.clone(),
    )
    .await
    .unwrap();
    let appended = other
        .append_known("s", 2, Some(0), &meta(), vec![event("test.C", "3")])
        .await
        .unwrap();
    assert!(appended.publication.published().await);
    let delivered = scanloop_testkit::eventually(Duration::from_secs(20), || {
        let recorder = recorder.clone();
        async move { recorder.count() == 3 }
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    assert!(delivered);
    assert_eq!(
        recorder.seen(),
        [("s".into(), 1), ("s".into(), 2), ("s".into(), 3)]
    );
    assert_eq!(versions_on_topic(&fx, "s").await, [1, 2, 1, 2, 3]);
}

/// The published version is not written per publication: a stream's next append through the
/// same process records, in its own conditional batch, how far that process published it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_append_records_how_far_its_process_published_the_stream() {
    let fx = fixture("noting", 1).await;
    let first = fx
        .outbox
        .append(
            "s",
            0,
            &meta(),
            vec![event("test.A", "1"), event("test.B", "2")],
        )
        .await
        .unwrap();
    assert!(first.publication.published().await);
    assert_eq!(fx.store.published_version("s").await.unwrap(), 0);
    let (_, published) = fx.store.load_for_command("s", 0).await.unwrap();
    let second = fx
        .outbox
        .append_known("s", 2, published, &meta(), vec![event("test.C", "3")])
        .await
        .unwrap();
    assert_eq!(fx.store.published_version("s").await.unwrap(), 2);
    assert!(second.publication.published().await);
    // A new process knows nothing of that: its append records nothing, and it starts from the
    // recorded 2 (version 3 goes out again; consumers drop it).
    let other = Outbox::new(
        fx.store.clone(),
        &fx.keyspace,
        common::producer(),
        fx.topic.clone(),
    )
    .await
    .unwrap();
    let (_, published) = fx.store.load_for_command("s", 0).await.unwrap();
    assert_eq!(published, Some(2));
    let third = other
        .append_known("s", 3, published, &meta(), vec![event("test.D", "4")])
        .await
        .unwrap();
    assert!(third.publication.published().await);
    assert_eq!(fx.store.published_version("s").await.unwrap(), 2);
    assert_eq!(versions_on_topic(&fx, "s").await, [1, 2, 3, 3, 4]);
}

/// Appends acknowledged before their events reach Kafka: a stream's quick successive appends
/// through one process, each publishing in the background while the next is being written,
/// put every version on the topic exactly once and in order, and their markers are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_appends_reach_the_topic_once_each_in_order() {
    let fx = fixture("chained", 1).await;
    let mut publications = Vec::new();
    for version in 0..30u64 {
        let appended = fx
            .outbox
            .append(
                "burst",
                version,
                &meta(),
                vec![event("test.Tick", &version.to_string())],
            )
            .await
            .unwrap();
        publications.push(appended.publication);
    }
    // Other streams interleaved, so that the publications share producer batches.
    for s in 0..10 {
        fx.outbox
            .append(
                &format!("other-{s}"),
                0,
                &meta(),
                vec![event("test.A", "1")],
            )
            .await
            .unwrap();
    }
    for publication in &publications {
        assert!(publication.published().await);
    }
    let on_topic = versions_on_topic(&fx, "burst").await;
    assert_eq!(on_topic, (1..=30).collect::<Vec<u64>>());
    // Each append recorded how far the ones before it were out; never beyond the truth.
    assert!(fx.store.published_version("burst").await.unwrap() < 30);
    // The markers are deleted in the background too: soon a sweep finds none.
    let sweeper =
        Sweeper::new(fx.outbox.clone()).with_timing(Duration::ZERO, Duration::from_millis(250));
    let swept_clean = scanloop_testkit::eventually(Duration::from_secs(10), || {
        let sweep = sweeper.sweep_once();
        async move { sweep.await.unwrap().streams_published == 0 }
    })
    .await;
    assert!(
        swept_clean,
        "every marker is deleted once its events are out"
    );
}

/// Writers from before eventstore/5 filed one marker per append in `outbox_pending`, those
/// before eventstore/6 one row per flush in `outbox_flushes`; appends that share a group
/// commit now file one numbered row naming them all. The sweeper publishes all three kinds:
/// here stranded appends of several streams at once (sharing flush rows) and a marker of each
/// older kind, written as an old writer would have left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_publishes_shared_flush_rows_and_those_of_older_writers() {
    let fx = fixture("flushrows", 1).await;
    let stranded = stranded_outbox(&fx).await;
    let appends = (0..6).map(|s| {
        let stranded = stranded.clone();
        async move {
            stranded
                .append(
                    &format!("shared-{s}"),
                    0,
                    &meta(),
                    vec![event("test.A", "1")],
                )
                .await
                .unwrap()
        }
    });
    for appended in futures::future::join_all(appends).await {
        assert!(!appended.publication.published().await);
    }
    for stream in ["old-writer", "v5-writer"] {
        fx.store
            .append(stream, 0, &meta(), vec![event("test.A", "1")])
            .await
            .unwrap();
    }
    let created_at = chrono::Utc::now() - chrono::Duration::seconds(10);
    let bucket = created_at.timestamp_millis().div_euclid(10_000);
    fx.store
        .session()
        .query_unpaged(
            format!(
                "INSERT INTO {}.outbox_flushes (shard, bucket, created_at, flush_id, appends) \
                 VALUES (?, ?, ?, ?, ?)",
                fx.keyspace
            ),
            (
                5i32,
                bucket,
                created_at,
                uuid::Uuid::new_v4(),
                vec![("v5-writer", 1i64)],
            ),
        )
        .await
        .unwrap();
    fx.store
        .session()
        .query_unpaged(
            format!(
                "INSERT INTO {}.outbox_pending \
                 (shard, bucket, created_at, stream_id, first_version, append_id) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                fx.keyspace
            ),
            (
                3i32,
                bucket,
                created_at,
                "old-writer",
                1i64,
                uuid::Uuid::new_v4(),
            ),
        )
        .await
        .unwrap();

    let sweeper =
        Sweeper::new(fx.outbox.clone()).with_timing(Duration::ZERO, Duration::from_millis(250));
    let report = sweeper.sweep_once().await.unwrap();
    assert_eq!(report.streams_published, 8, "{report:?}");
    assert_eq!(
        (report.streams_failed, report.markers_kept),
        (0, 0),
        "{report:?}"
    );
    for stream in (0..6)
        .map(|s| format!("shared-{s}"))
        .chain(["old-writer".into(), "v5-writer".into()])
    {
        assert_eq!(
            fx.store.published_version(&stream).await.unwrap(),
            1,
            "{stream}"
        );
    }
    let report = sweeper.sweep_once().await.unwrap();
    assert_eq!(
        (report.streams_published, report.markers_deleted),
        (0, 0),
        "every marker went with the first pass: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_never_go_back_in_version() {
    let fx = fixture("snapshots", 1).await;
    let snapshot = |version: u64| Snapshot {
        version,
        state_type: "test.State".into(),
        state: version.to_be_bytes().to_vec(),
        requests: vec![],
    };
    assert_eq!(fx.store.load_snapshot("s").await.unwrap(), None);
    fx.store.save_snapshot("s", &snapshot(20)).await.unwrap();
    fx.store.save_snapshot("s", &snapshot(10)).await.unwrap();
    assert_eq!(
        fx.store.load_snapshot("s").await.unwrap(),
        Some(snapshot(20))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_appends_are_refused_before_touching_the_database() {
    let fx = fixture("invalid", 1).await;
    let error = fx.outbox.append("s", 0, &meta(), vec![]).await.unwrap_err();
    assert!(matches!(error, AppendError::Invalid { .. }), "{error}");
    let too_many = (0..101).map(|i| event("test.A", &i.to_string())).collect();
    let error = fx
        .outbox
        .append("s", 0, &meta(), too_many)
        .await
        .unwrap_err();
    assert!(matches!(error, AppendError::Invalid { .. }), "{error}");
    assert!(fx.store.load("s", 0).await.unwrap().is_empty());
}

/// An outbox whose broker is unreachable: its appends are stored, their publication fails, and
/// the database is left as if the writer had died between its append and its publish.
async fn stranded_outbox(fx: &common::Fixture) -> Outbox {
    stranded_outbox_with_clock_skew(fx, chrono::Duration::zero()).await
}

/// [`stranded_outbox`] on a host whose clock is off by `skew`.
async fn stranded_outbox_with_clock_skew(fx: &common::Fixture, skew: chrono::Duration) -> Outbox {
    let dead_broker = EventProducer::new("127.0.0.1:1", Duration::from_millis(500)).unwrap();
    Outbox::with_clock_skew(
        fx.store.clone(),
        &fx.keyspace,
        dead_broker,
        fx.topic.clone(),
        skew,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_broker_refuses_does_not_hold_back_the_sweep_of_the_others() {
    let topic = common::fresh_topic_with_max_message_bytes("oversized", 1, 4_096).await;
    let fx = common::fixture_on_topic("oversized", topic).await;
    let stranded = stranded_outbox(&fx).await;
    // Stored fine, but one record larger than the topic takes.
    let huge = "x".repeat(16 * 1024);
    stranded
        .append("huge", 0, &meta(), vec![event("test.Big", &huge)])
        .await
        .unwrap();
    stranded
        .append("normal", 0, &meta(), vec![event("test.A", "1")])
        .await
        .unwrap();

    let sweeper =
        Sweeper::new(fx.outbox.clone()).with_timing(Duration::ZERO, Duration::from_millis(250));
    let report = sweeper.sweep_once().await.unwrap();
    assert_eq!(report.streams_failed, 1, "{report:?}");
    assert_eq!(report.streams_published, 1, "{report:?}");
    assert_eq!(report.markers_kept, 1, "{report:?}");
    assert_eq!(fx.store.published_version("normal").await.unwrap(), 1);
    assert_eq!(fx.store.published_version("huge").await.unwrap(), 0);

    // Its marker stays: once the topic takes larger records, a later pass publishes it.
    common::set_max_message_bytes(&fx.topic, 1024 * 1024).await;
    let published = scanloop_testkit::eventually(Duration::from_secs(30), || {
        let sweeper = &sweeper;
        let store = fx.store.clone();
        async move {
            sweeper.sweep_once().await.unwrap();
            store.published_version("huge").await.unwrap() == 1
        }
    })
    .await;
    assert!(published, "the refused stream is retried on later passes");
    let report = sweeper.sweep_once().await.unwrap();
    assert_eq!((report.streams_failed, report.markers_kept), (0, 0));
}

/// The flush rows of a writer's own appends in `outbox_writer_flushes`, as the stream each
/// announces first (a writer that awaits each append files one flush per append).
async fn flush_rows(fx: &common::Fixture) -> Vec<String> {
    let rows = fx
        .store
        .session()
        .query_unpaged(
            format!("SELECT appends FROM {}.outbox_writer_flushes", fx.keyspace),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut streams: Vec<String> = rows
        .rows::<(Vec<(String, i64)>,)>()
        .unwrap()
        .map(|row| row.unwrap().0[0].0.clone())
        .collect();
    streams.sort();
    streams
}

/// A writer deletes its finished flush rows a run at a time (range deletes); the row of an
/// append whose publication failed stays, although runs of finished rows lie on both sides of
/// it, until the sweeper has published it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_flush_rows_are_range_deleted_around_one_the_sweeper_needs() {
    let topic = common::fresh_topic_with_max_message_bytes("retire", 1, 4_096).await;
    let fx = common::fixture_on_topic("retire", topic).await;
    let huge = "x".repeat(16 * 1024);
    let mut outcomes = Vec::new();
    for stream in ["a-1", "a-2", "huge", "b-1", "b-2"] {
        let body = if stream == "huge" { huge.as_str() } else { "1" };
        let appended = fx
            .outbox
            .append(stream, 0, &meta(), vec![event("test.A", body)])
            .await
            .unwrap();
        outcomes.push(appended.publication.published().await);
    }
    assert_eq!(outcomes, [true, true, false, true, true]);
    let retired = scanloop_testkit::eventually(Duration::from_secs(10), || async {
        flush_rows(&fx).await == ["huge"]
    })
    .await;
    assert!(
        retired,
        "finished rows go, the failed one stays: {:?}",
        flush_rows(&fx).await
    );

    common::set_max_message_bytes(&fx.topic, 1024 * 1024).await;
    let sweeper =
        Sweeper::new(fx.outbox.clone()).with_timing(Duration::ZERO, Duration::from_millis(250));
    let report = sweeper.sweep_once().await.unwrap();
    assert_eq!(
        (report.streams_published, report.markers_deleted),
        (1, 1),
        "{report:?}"
    );
    assert!(flush_rows(&fx).await.is_empty());
    let on_topic: Vec<String> = scanloop_testkit::envelopes_on(&fx.topic)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.stream_id)
        .collect();
    assert_eq!(on_topic, ["a-1", "a-2", "b-1", "b-2", "huge"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_append_by_a_writer_whose_clock_is_a_minute_behind_is_still_published() {
    let fx = fixture("skew", 1).await;
    let sweeper = Sweeper::new(fx.outbox.clone())
        .with_timing(Duration::from_secs(1), Duration::from_millis(250));
    // The sweeper has been at work: its cursors are where they stay in a quiet system.
    sweeper.sweep_once().await.unwrap();

    let behind = stranded_outbox_with_clock_skew(&fx, -chrono::Duration::seconds(60)).await;
    let appended = behind
        .append("late", 0, &meta(), vec![event("test.A", "1")])
        .await
        .unwrap();
    assert!(!appended.publication.published().await);

    let report = sweeper.sweep_once().await.unwrap();
    assert_eq!(report.streams_published, 1, "{report:?}");
    assert_eq!(report.markers_deleted, 1, "{report:?}");
    assert_eq!(fx.store.published_version("late").await.unwrap(), 1);
}
