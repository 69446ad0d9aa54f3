//! `scanloop bench`: the storage and messaging baseline, measured side by side in one run.
//!
//! Phases (each on fresh streams, one event of `payload_bytes` per operation):
//! 1. plain CQL insert into a table shaped like `events` — the limit the append is compared with;
//! 2. event-store append: the conditional (LWT) batch alone;
//! 3. append + publish through the outbox: marker, LWT, publish (acks=all), published version,
//!    marker delete — what a command pays;
//! 4. plain Kafka produce of the same envelopes (idempotent, acks=all);
//! 5. the experiment of `single_writer`: appends without a Paxos round (leased single
//!    writers, plain inserts), alone and each produced to Kafka, after the plain insert again;
//! 6. consumer throughput: the consumer runner (checkpoint read + write per event, no-op
//!    handler) draining what phase 3 published.
//!
//! With a running activation service, the gRPC phases follow (see `activation`); with
//! membership and referral running as well, the referral reaction chain last (see
//! `referral`).
//!
//! Closed loop at `--concurrency` by default; `--rate` switches to an open loop at a fixed
//! schedule, with latency measured from each operation's scheduled start (no coordinated
//! omission). CPU time per operation is read from /proc for this process and, when found, for
//! the devstack's Cassandra and Kafka.

pub(crate) mod activation;
pub(crate) mod args;
pub(crate) mod baseline;
pub(crate) mod clients;
pub(crate) mod harness;
pub(crate) mod payouts;
pub(crate) mod processes;
pub(crate) mod referral;
mod report;
mod single_writer;
mod storage;
pub(crate) mod table_ops;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use scanloop_bus::EventProducer;
use scanloop_config::Infra;
use scanloop_eventstore::{AppendMeta, EventStore, NewEvent, Outbox};

pub use args::Args;
use baseline::Baseline;
use harness::{phase, phase_then};
use processes::ServerPids;
use report::{print_header, print_results};
use storage::{
    APPEND, APPEND_AGAIN, APPEND_PUBLISH, APPEND_PUBLISH_WAITING, PLAIN_INSERT, PLAIN_INSERT_AGAIN,
    PublicationWatch, SINGLE_WRITER, SINGLE_WRITER_PUBLISH, bench_envelope, consume_all,
    warm_up_servers,
};

pub async fn run(infra: &Infra, args: Args) -> anyhow::Result<()> {
    let session = scanloop_storage::connect(&infra.cql_nodes, Duration::from_secs(60)).await?;
    let keyspace = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let migrations: Vec<_> = crate::migrate::migrations_for("bench");
    scanloop_storage::migrate(
        &session,
        &keyspace,
        infra.replication_factor,
        "",
        &migrations,
    )
    .await?;
    session
        .query_unpaged(
            format!(
                "CREATE TABLE IF NOT EXISTS {keyspace}.plain_events (\
                 stream_id text, version bigint, event_id uuid, event_type text, \
                 schema_version int, brand_id text, payload blob, occurred_at timestamp, \
                 recorded_at timestamp, correlation_id text, causation_id text, traceparent text, \
                 PRIMARY KEY ((stream_id), version))"
            ),
            (),
        )
        .await?;
    session.await_schema_agreement().await?;
    let topic = format!("bench.{keyspace}");
    scanloop_bus::topics::ensure_topics(
        &infra.kafka_brokers,
        std::slice::from_ref(&topic),
        i32::from(infra.topic_partitions),
        i32::from(infra.replication_factor),
    )
    .await?;

    let store = EventStore::new(session.clone(), &keyspace).await?;
    let producer = EventProducer::new(&infra.kafka_brokers, Duration::from_secs(30))?;
    let outbox = Outbox::new(store.clone(), &keyspace, producer.clone(), topic.clone()).await?;
    let payload = Arc::new(vec![b'x'; args.payload_bytes]);
    let servers = ServerPids::find(
        args.devstack_dir.as_deref(),
        &[
            ("activation", args.activation_pid),
            ("membership", args.membership_pid),
            ("referral", args.referral_pid),
        ],
    )
    .counting_table_ops(session.clone());

    print_header(&args, &keyspace);
    let mut results = Vec::new();

    let insert = Arc::new(
        session
            .prepare(format!(
                "INSERT INTO {keyspace}.plain_events (stream_id, version, event_id, event_type, \
                 schema_version, brand_id, payload, occurred_at, recorded_at, correlation_id, \
                 causation_id, traceparent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
    );
    // The plain insert into fresh partitions named `prefix-<i>`.
    let plain_insert = |prefix: &'static str| {
        let (session, insert, payload) = (session.clone(), insert.clone(), payload.clone());
        move |i: u64| {
            let (session, insert, payload) = (session.clone(), insert.clone(), payload.clone());
            async move {
                let now = Utc::now();
                session
                    .execute_unpaged(
                        &insert,
                        (
                            format!("{prefix}-{i}"),
                            1i64,
                            uuid::Uuid::now_v7(),
                            "bench.Event",
                            1i32,
                            "bench",
                            payload.as_slice(),
                            now,
                            now,
                            "",
                            "",
                            "",
                        ),
                    )
                    .await?;
                Ok(())
            }
        }
    };
    let new_event = {
        let payload = payload.clone();
        move || NewEvent {
            event_type: "bench.Event".into(),
            schema_version: 1,
            payload: payload.to_vec(),
            occurred_at: Utc::now(),
        }
    };
    let meta = AppendMeta {
        brand_id: "bench".into(),
        ..AppendMeta::default()
    };
    // The bare append to fresh streams named `prefix-<i>`.
    let bare_append = |prefix: &'static str| {
        let (store, meta, new_event) = (store.clone(), meta.clone(), new_event.clone());
        move |i: u64| {
            let (store, meta, event) = (store.clone(), meta.clone(), new_event());
            async move {
                store
                    .append(&format!("{prefix}-{i}"), 0, &meta, vec![event])
                    .await?;
                Ok(())
            }
        }
    };
    warm_up_servers(
        &args,
        plain_insert("warm-insert"),
        bare_append("warm-append"),
    )
    .await;
    results.push(phase(PLAIN_INSERT, &args, &servers, plain_insert("plain")).await);

    results.push(phase(APPEND, &args, &servers, bare_append("append")).await);

    let published = Arc::new(AtomicU64::new(0));
    results.push(
        phase(APPEND_PUBLISH_WAITING, &args, &servers, {
            let (outbox, meta, new_event) = (outbox.clone(), meta.clone(), new_event.clone());
            let published = published.clone();
            move |i| {
                let (outbox, meta, event) = (outbox.clone(), meta.clone(), new_event());
                let published = published.clone();
                async move {
                    let appended = outbox
                        .append(&format!("waiting-{i}"), 0, &meta, vec![event])
                        .await?;
                    anyhow::ensure!(
                        appended.publication.published().await,
                        "append stored but not published"
                    );
                    published.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            }
        })
        .await,
    );

    // What a command sees: the append is acknowledged once durable, its publication goes on
    // in the background. Each publication is watched; the phase ends when all are out, so the
    // rate counts only published appends and the CPU includes the whole publication.
    let watch = Arc::new(PublicationWatch::default());
    let shared_before = outbox.sharing();
    let mut with_publish = phase_then(
        APPEND_PUBLISH,
        &args,
        args.rate,
        &servers,
        {
            let (outbox, meta, new_event) = (outbox.clone(), meta.clone(), new_event.clone());
            let (watch, published) = (watch.clone(), published.clone());
            move |i| {
                let (outbox, meta, event) = (outbox.clone(), meta.clone(), new_event());
                let (watch, published) = (watch.clone(), published.clone());
                async move {
                    let started = Instant::now();
                    let appended = outbox
                        .append(&format!("outbox-{i}"), 0, &meta, vec![event])
                        .await?;
                    watch.watching.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        if appended.publication.published().await {
                            published.fetch_add(1, Ordering::Relaxed);
                            watch.record(started.elapsed());
                        } else {
                            watch.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        watch.watching.fetch_sub(1, Ordering::Relaxed);
                    });
                    Ok(())
                }
            }
        },
        || {
            let (outbox, watch) = (outbox.clone(), watch.clone());
            async move {
                if !outbox.drain(Duration::from_secs(120)).await {
                    eprintln!("  publications still on their way after 120 s");
                }
                // After the warm-up: the measured run starts with a clean record.
                watch.restart();
            }
        },
    )
    .await;
    // The watchers count a publication a moment after the outbox has let it go.
    while watch.watching.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    with_publish.errors += watch.failed.load(Ordering::Relaxed);
    let lag = watch.finished();
    let shared: Vec<String> = outbox
        .sharing()
        .iter()
        .zip(&shared_before)
        .map(|((what, after), (_, before))| {
            format!("{:.1} {what}", after.since(before).per_write())
        })
        .collect();
    with_publish.note = Some(format!(
        "append + publish: latency is the append's acknowledgement; start → published in \
         Kafka p50 {:.1} ms, p99 {:.1} ms; shared writes: {}",
        lag.value_at_quantile(0.5) as f64 / 1e3,
        lag.value_at_quantile(0.99) as f64 / 1e3,
        shared.join(", ")
    ));
    results.push(with_publish);

    // The bare append once more: the two append phases bracket the outbox's, so that what
    // Cassandra still owes for earlier phases (compaction, flushes, GC) weighs on both sides of
    // the comparison. Single runs of the same build moved the append's CPU per op by ±15%.
    results.push(phase(APPEND_AGAIN, &args, &servers, bare_append("again")).await);
    let produce_topic = format!("{topic}.produce");
    scanloop_bus::topics::ensure_topics(
        &infra.kafka_brokers,
        std::slice::from_ref(&produce_topic),
        i32::from(infra.topic_partitions),
        i32::from(infra.replication_factor),
    )
    .await?;
    results.push(
        phase("kafka produce (acks=all)", &args, &servers, {
            let (producer, payload) = (producer.clone(), payload.clone());
            let produce_topic = produce_topic.clone();
            move |i| {
                let (producer, topic) = (producer.clone(), produce_topic.clone());
                let envelope = bench_envelope(format!("produce-{i}"), 1, &payload);
                async move {
                    producer.publish_in_order(&topic, &[envelope]).await?;
                    Ok(())
                }
            }
        })
        .await,
    );

    // Issue 10's experiment: how close a write path without a Paxos round per command gets
    // to the plain insert (see `single_writer` for the design and what it gives up),
    // compared with a plain insert measured right before it: on a devstack just started, the
    // first phase also pays Cassandra's JIT warming up (the first run on a fresh machine
    // measured the plain insert at less than half of what the single writer then did).
    results.push(
        phase(
            PLAIN_INSERT_AGAIN,
            &args,
            &servers,
            plain_insert("plain-again"),
        )
        .await,
    );
    let single = single_writer::SingleWriter::start(session.clone(), &keyspace).await?;
    results.push(
        phase(SINGLE_WRITER, &args, &servers, {
            let (single, payload) = (single.clone(), payload.clone());
            move |i| {
                let (single, payload) = (single.clone(), payload.clone());
                async move {
                    single.append(&format!("single-{i}"), &payload).await?;
                    Ok(())
                }
            }
        })
        .await,
    );
    results.push(
        phase(SINGLE_WRITER_PUBLISH, &args, &servers, {
            let (single, producer, payload) = (single.clone(), producer.clone(), payload.clone());
            let produce_topic = produce_topic.clone();
            move |i| {
                let (single, producer, payload) =
                    (single.clone(), producer.clone(), payload.clone());
                let topic = produce_topic.clone();
                async move {
                    let stream_id = format!("single-publish-{i}");
                    let version = single.append(&stream_id, &payload).await?;
                    let envelope = bench_envelope(stream_id, version, &payload);
                    producer.publish_in_order(&topic, &[envelope]).await?;
                    Ok(())
                }
            }
        })
        .await,
    );
    drop(single);

    let consumer = consume_all(infra, &session, &keyspace, &topic, &servers, &published).await?;
    if let Some(addr) = &args.activation_addr {
        results.extend(activation::phases(addr, &args, &servers).await?);
        if let (Some(membership), Some(referral)) = (&args.membership_addr, &args.referral_addr) {
            let chain = referral::Chain {
                activation_addr: addr,
                membership_addr: membership,
                referral_addr: referral,
                referral_topic: &args.referral_topic,
                kafka_brokers: &infra.kafka_brokers,
            };
            results.push(referral::phase(&chain, &args, &servers).await?);
        }
    }
    print_results(&results, &consumer, &servers);
    if let Some(path) = &args.baseline_out {
        Baseline::write(path, &results[0])?;
    }
    Ok(())
}
