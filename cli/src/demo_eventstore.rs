//! `scanloop demo eventstore`: a short, narrated workload on a running cluster that shows the
//! foundation at work: appends through the outbox, a concurrency conflict, a consumer reading the stream back in
//! order with a duplicate dropped, a poison record dead-lettered, and a stranded append published
//! by the sweeper.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use scanloop_bus::{
    ConsumerOptions, ConsumerRunner, EventEnvelope, EventHandler, EventProducer, HandlerError,
};
use scanloop_config::Infra;
use scanloop_eventstore::{AppendError, AppendMeta, EventStore, NewEvent, Outbox, Sweeper};
use scanloop_storage::Checkpoints;
use tokio_util::sync::CancellationToken;

const KEYSPACE: &str = "scanloop_demo";

pub async fn run(infra: &Infra) -> anyhow::Result<()> {
    let session = scanloop_storage::connect(&infra.cql_nodes, Duration::from_secs(60)).await?;
    scanloop_storage::migrate(
        &session,
        KEYSPACE,
        infra.replication_factor,
        "",
        &crate::migrate::migrations_for("demo"),
    )
    .await?;
    let topic = scanloop_bus::topics::event_topic("demo");
    scanloop_bus::topics::ensure_topics(&infra.kafka_brokers, std::slice::from_ref(&topic), 3, 1)
        .await?;
    let store = EventStore::new(session.clone(), KEYSPACE).await?;
    let producer = EventProducer::new(&infra.kafka_brokers, Duration::from_secs(10))?;
    let outbox = Outbox::new(store.clone(), KEYSPACE, producer.clone(), topic.clone()).await?;
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let stream = format!("demo-order-{run_id}");
    let meta = AppendMeta {
        brand_id: "demo-brand".into(),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        causation_id: uuid::Uuid::now_v7().to_string(),
        traceparent: scanloop_telemetry::current_traceparent(),
        actor: "scanloop-cli/demo".into(),
        request: None,
    };

    println!("1. append two events to {stream} through the outbox");
    let appended = outbox
        .append(
            &stream,
            0,
            &meta,
            vec![event("demo.Created"), event("demo.Paid")],
        )
        .await?;
    println!(
        "   stored at versions 1..={}, published to {topic}: {}",
        appended.version(),
        appended.publication.published().await
    );

    println!("2. two writers both believe the stream is at version 2");
    let (a, b) = tokio::join!(
        outbox.append(&stream, 2, &meta, vec![event("demo.Shipped")]),
        outbox.append(&stream, 2, &meta, vec![event("demo.Cancelled")]),
    );
    for (writer, outcome) in [("A", a), ("B", b)] {
        match outcome {
            Ok(done) => println!("   writer {writer}: appended version {}", done.version()),
            Err(AppendError::Conflict { .. }) => {
                println!(
                    "   writer {writer}: conflict, nothing written (it would reload and retry)"
                )
            }
            Err(other) => return Err(other.into()),
        }
    }

    println!("3. a writer loses the broker after storing its event (as if it crashed there)");
    {
        // Dropped at the end of the block: nothing keeps retrying the unreachable broker.
        let unreachable = EventProducer::new("127.0.0.1:1", Duration::from_millis(500))?;
        let stranded = Outbox::new(store.clone(), KEYSPACE, unreachable, topic.clone()).await?;
        let late = stranded
            .append(&stream, 3, &meta, vec![event("demo.Delivered")])
            .await?;
        println!(
            "   version {} stored, published: {} — the sweeper will take it over",
            late.version(),
            late.publication.published().await
        );
    }

    println!("4. the same range is published again (a crash before the published mark moved)");
    store.set_published_version(&stream, 1).await?;
    outbox.publish_stream(&stream).await?;

    println!("5. a poison record lands on the topic");
    producer
        .send_raw(
            &topic,
            Some(b"junk"),
            b"not an envelope",
            Default::default(),
        )
        .await?;

    println!("6. a consumer group reads the topic; the sweeper runs beside it");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let checkpoints = Checkpoints::new(session.clone(), KEYSPACE).await?;
    let options = ConsumerOptions::new(
        infra.kafka_brokers.clone(),
        format!("demo-{run_id}"),
        vec![topic.clone()],
    );
    let printer = Printer {
        stream: stream.clone(),
        seen: seen.clone(),
    };
    let runner = ConsumerRunner::new(options, printer, checkpoints, producer, shutdown.clone())?;
    let stats = runner.stats();
    let consumer = tokio::spawn(runner.run());
    let sweeper = Sweeper::new(outbox.clone())
        .with_timing(Duration::from_secs(1), Duration::from_millis(500));
    let sweeping = tokio::spawn(sweeper.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len()
        < 4
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    consumer.await??;
    sweeping.await?;

    let versions: Vec<u64> = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    println!(
        "   {stream}: applied versions {versions:?}; duplicates dropped: {}; dead-lettered: {}",
        stats.duplicates(),
        stats.dead_lettered()
    );
    anyhow::ensure!(
        versions == [1, 2, 3, 4],
        "expected versions 1..=4 once each and in order"
    );
    println!("done: every event once, in order; the poison record is on {topic}.dlq");
    Ok(())
}

fn event(kind: &str) -> NewEvent {
    NewEvent {
        event_type: kind.to_owned(),
        schema_version: 1,
        payload: Vec::new(),
        occurred_at: Utc::now(),
    }
}

/// Prints the demo stream's events as they are applied.
struct Printer {
    stream: String,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl EventHandler for Printer {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        if event.stream_id == self.stream {
            println!(
                "   consumed {}@{} {}",
                event.stream_id, event.version, event.event_type
            );
            self.seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(event.version);
        }
        Ok(())
    }
}
