//! `scanloop bench`: the storage and messaging baseline, measured side by side in one run.
//!
//! Phases (each on fresh streams, one event of `payload_bytes` per operation):
//! 1. plain CQL insert into a table shaped like `events` — the limit the append is compared with;
//! 2. event-store append: the conditional (LWT) batch alone;
//! 3. append + publish through the outbox: marker, LWT, publish (acks=all), published version,
//!    marker delete — what a command pays;
//! 4. plain Kafka produce of the same envelopes (idempotent, acks=all);
//! 5. the experiment of `bench_single_writer`: appends without a Paxos round (leased single
//!    writers, plain inserts), alone and each produced to Kafka, after the plain insert again;
//! 6. consumer throughput: the consumer runner (checkpoint read + write per event, no-op
//!    handler) draining what phase 3 published.
//!
//! With a running activation service, the gRPC phases follow (see `bench_activation`); with
//! membership and referral running as well, the referral reaction chain last (see
//! `bench_referral`).
//!
//! Closed loop at `--concurrency` by default; `--rate` switches to an open loop at a fixed
//! schedule, with latency measured from each operation's scheduled start (no coordinated
//! omission). CPU time per operation is read from /proc for this process and, when found, for
//! the devstack's Cassandra and Kafka.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use hdrhistogram::Histogram;
use scanloop_bus::{
    ConsumerOptions, ConsumerRunner, EventEnvelope, EventHandler, EventProducer, HandlerError,
};
use scanloop_config::Infra;
use scanloop_eventstore::{AppendMeta, EventStore, NewEvent, Outbox};
use scanloop_storage::Checkpoints;
use scylla::client::session::Session;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::bench_table_ops::TableOps;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration_secs: u64,
    /// Unmeasured warm-up seconds before each phase.
    #[arg(long, default_value_t = 2)]
    pub(crate) warmup_secs: u64,
    /// Unmeasured seconds of plain inserts and appends before the first phase: a Cassandra
    /// just started runs its first minute or so interpreted, and without this the first phase
    /// (the plain insert every ratio divides by) measured under half its warm rate.
    #[arg(long, default_value_t = 30)]
    pub(crate) servers_warmup_secs: u64,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Open-loop rate in operations per second; 0 runs a closed loop.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rate: f64,
    /// Bytes of event payload.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Devstack state directory, to find Cassandra's and Kafka's pids for CPU accounting.
    #[arg(long, env = "SCANLOOP_DEVSTACK_DIR")]
    devstack_dir: Option<PathBuf>,
    /// A running activation service: adds the gRPC phases (VerifyCode, ActivateWarranty).
    #[arg(long)]
    activation_addr: Option<String>,
    /// The activation service's pid, for CPU accounting.
    #[arg(long)]
    activation_pid: Option<u32>,
    /// Codes issued for the ActivateWarranty phase (each activation uses a fresh one).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) activation_codes: u32,
    /// A running membership service; with --referral-addr adds the referral phase.
    #[arg(long)]
    membership_addr: Option<String>,
    /// The membership service's pid, for CPU accounting.
    #[arg(long)]
    pub(crate) membership_pid: Option<u32>,
    /// A running referral service (reacting to the activation service's events).
    #[arg(long)]
    referral_addr: Option<String>,
    /// The referral service's pid, for CPU accounting.
    #[arg(long)]
    pub(crate) referral_pid: Option<u32>,
    /// Membership and referral were paused (SIGSTOP) by the caller so that they take no CPU
    /// during the other phases: resume them (SIGCONT) when the referral phase starts.
    #[arg(long)]
    pub(crate) resume_chain: bool,
    /// The topic the referral service publishes to.
    #[arg(
        long,
        env = "SCANLOOP_REFERRAL_TOPIC",
        default_value_t = scanloop_bus::topics::event_topic("referral")
    )]
    referral_topic: String,
    /// Codes issued for the referral phase (referrers and buyers each use a fresh one).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) referral_codes: u32,
    /// Referrers whose links the referral phase's buyers use, round robin.
    #[arg(long, default_value_t = 50)]
    pub(crate) referrers: u32,
    /// How long the referral phase waits for membership and referral: to know each referrer
    /// (they first catch up on the earlier phases' activations, tens of thousands on a fast
    /// machine), and after its load for the last attribution.
    #[arg(long, default_value_t = 600)]
    pub(crate) referral_wait_secs: u64,
    /// Writes the plain insert's figures here (JSON), for `scanloop loadgen --baseline` to
    /// print its ratios against the same run's baseline.
    #[arg(long)]
    baseline_out: Option<PathBuf>,
}

/// The limit every other phase is compared with.
const PLAIN_INSERT: &str = "plain CQL insert";
/// The plain insert again, right before the experiment (whose figures compare with it).
const PLAIN_INSERT_AGAIN: &str = "plain CQL insert, again";
/// The bare conditional append: the ceiling of any path that decides "at most once" with it.
const APPEND: &str = "event-store append (LWT)";
/// The bare append after the outbox phases; the targets compare with both append phases.
const APPEND_AGAIN: &str = "event-store append, again";
/// The outbox phase the targets use: appends acknowledged at durability, published in the
/// background, the phase ending when all are out.
const APPEND_PUBLISH: &str = "append + publish (outbox)";
/// The same with every operation waiting for its events to reach Kafka (latency-bound in a
/// closed loop: the produce's round trip is in every operation).
const APPEND_PUBLISH_WAITING: &str = "append + publish, awaited";
/// Issue 10's experiment: appends without a Paxos round, by leased single writers.
const SINGLE_WRITER: &str = "single-writer append (lease)";
/// The same, each append then produced to Kafka and awaited.
const SINGLE_WRITER_PUBLISH: &str = "single-writer + produce";

/// Start → published times of the background publications of a phase, and the failures.
#[derive(Default)]
struct PublicationWatch {
    lag_us: std::sync::Mutex<Option<Histogram<u64>>>,
    /// The record as it was at the last restart.
    last: std::sync::Mutex<Option<Histogram<u64>>>,
    failed: AtomicU64,
    /// Publications whose outcome is not in yet.
    watching: AtomicU64,
}

impl PublicationWatch {
    fn record(&self, lag: Duration) {
        self.lag_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(latency_histogram)
            .saturating_record((lag.as_micros() as u64).max(1));
    }

    /// Forgets what was recorded (the warm-up's), and takes a snapshot of it for `finished`.
    fn restart(&self) {
        let mut lag = self
            .lag_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = lag.take();
    }

    /// What the last measured run recorded (the drain after it restarted the record).
    fn finished(&self) -> Histogram<u64> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_else(latency_histogram)
    }
}

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
    // to the plain insert (see bench_single_writer for the design and what it gives up),
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
    let single =
        crate::bench_single_writer::SingleWriter::start(session.clone(), &keyspace).await?;
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
        results.extend(crate::bench_activation::phases(addr, &args, &servers).await?);
        if let (Some(membership), Some(referral)) = (&args.membership_addr, &args.referral_addr) {
            let chain = crate::bench_referral::Chain {
                activation_addr: addr,
                membership_addr: membership,
                referral_addr: referral,
                referral_topic: &args.referral_topic,
                kafka_brokers: &infra.kafka_brokers,
            };
            results.push(crate::bench_referral::phase(&chain, &args, &servers).await?);
        }
    }
    print_results(&results, &consumer, &servers);
    if let Some(path) = &args.baseline_out {
        write_baseline(path, &results[0])?;
    }
    Ok(())
}

/// Drives plain inserts and bare appends, half each, for `--servers-warmup-secs`, unmeasured:
/// the JVMs compile the paths the phases then measure.
async fn warm_up_servers<I, IFut, A, AFut>(args: &Args, insert: I, append: A)
where
    I: Fn(u64) -> IFut + Send + Sync + 'static,
    IFut: Future<Output = anyhow::Result<()>> + Send + 'static,
    A: Fn(u64) -> AFut + Send + Sync + 'static,
    AFut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    if args.servers_warmup_secs == 0 {
        return;
    }
    eprintln!(
        "  warming the servers up for {} s (plain inserts and appends, unmeasured)",
        args.servers_warmup_secs
    );
    let op = move |i: u64| {
        if i.is_multiple_of(2) {
            futures::future::Either::Left(insert(i))
        } else {
            futures::future::Either::Right(append(i))
        }
    };
    let closed = Args {
        rate: 0.0,
        ..args.clone()
    };
    let _ = drive(
        &closed,
        Duration::from_secs(args.servers_warmup_secs),
        Arc::new(op),
        Arc::new(AtomicU64::new(0)),
    )
    .await;
}

/// An envelope of the bench's one event type, as the produce phases send it.
fn bench_envelope(stream_id: String, version: u64, payload: &[u8]) -> EventEnvelope {
    EventEnvelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: "bench.Event".into(),
        schema_version: 1,
        brand_id: "bench".into(),
        stream_id,
        version,
        payload: payload.to_vec(),
        ..EventEnvelope::default()
    }
}

/// The plain insert's rate, CPU per operation and p99, as the load generator reads them.
fn write_baseline(path: &std::path::Path, insert: &PhaseResult) -> anyhow::Result<()> {
    let ops = insert.ops.max(1) as f64;
    let baseline = crate::loadgen::Baseline {
        insert_per_sec: insert.ops as f64 / insert.elapsed.as_secs_f64(),
        insert_cpu_us_per_op: insert.cpu.total() * 1e6 / ops,
        insert_p99_ms: insert.latency_us.value_at_quantile(0.99) as f64 / 1e3,
    };
    std::fs::write(path, serde_json::to_string_pretty(&baseline)?)?;
    Ok(())
}

pub(crate) struct PhaseResult {
    pub(crate) name: &'static str,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) cpu: CpuUse,
    /// What the row's figures mean when the table cannot say it, printed under the table.
    pub(crate) note: Option<String>,
    /// Event recorded → visible in the read model, for the sampled operations (µs).
    pub(crate) read_model_lag_us: Option<Histogram<u64>>,
    /// Cassandra's requests during the measured run, by table (when it counts them).
    pub(crate) table_ops: Option<TableOps>,
}

/// Runs `op(i)` for a warm-up and then for the measured duration, at `--rate` (open loop) or
/// `--concurrency` (closed loop).
pub(crate) async fn phase<F, Fut>(
    name: &'static str,
    args: &Args,
    servers: &ServerPids,
    op: F,
) -> PhaseResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    phase_at(name, args, args.rate, servers, op).await
}

/// [`phase`] at an open-loop `rate` of its own (0: closed loop).
pub(crate) async fn phase_at<F, Fut>(
    name: &'static str,
    args: &Args,
    rate: f64,
    servers: &ServerPids,
    op: F,
) -> PhaseResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    phase_then(name, args, rate, servers, op, || async {}).await
}

/// [`phase_at`] for operations that leave work in the background (a publication): after the
/// warm-up and after the measured run, `finish` waits for it, and the measured time and CPU
/// include that wait.
pub(crate) async fn phase_then<F, Fut, D, DFut>(
    name: &'static str,
    args: &Args,
    rate: f64,
    servers: &ServerPids,
    op: F,
    finish: D,
) -> PhaseResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    D: Fn() -> DFut,
    DFut: Future<Output = ()>,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let paced = Args {
        rate,
        ..args.clone()
    };
    servers.settle(name).await;
    let _ = drive(
        &paced,
        Duration::from_secs(args.warmup_secs),
        op.clone(),
        next.clone(),
    )
    .await;
    finish().await;
    let table_ops_before = servers.table_ops().await;
    let cpu_before = servers.sample();
    let started = Instant::now();
    let (latency_us, ops, errors) =
        drive(&paced, Duration::from_secs(args.duration_secs), op, next).await;
    finish().await;
    let elapsed = started.elapsed();
    let cpu = servers.sample().since(&cpu_before);
    let table_ops = servers.table_ops_since(table_ops_before).await;
    eprintln!("  {name}: {ops} ops in {:.1} s", elapsed.as_secs_f64());
    PhaseResult {
        name,
        ops,
        errors,
        elapsed,
        latency_us,
        cpu,
        note: None,
        read_model_lag_us: None,
        table_ops,
    }
}

/// 1 µs to 60 s at 3 significant figures.
#[allow(clippy::expect_used)] // constant bounds that new_with_bounds accepts
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub(crate) async fn drive<F, Fut>(
    args: &Args,
    duration: Duration,
    op: Arc<F>,
    next: Arc<AtomicU64>,
) -> (Histogram<u64>, u64, u64)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let histogram = Arc::new(std::sync::Mutex::new(latency_histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let record = {
        let (histogram, errors) = (histogram.clone(), errors.clone());
        move |scheduled: Instant, outcome: anyhow::Result<()>| match outcome {
            Ok(()) => {
                let micros = scheduled.elapsed().as_micros() as u64;
                histogram
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .saturating_record(micros.max(1));
            }
            Err(error) => {
                if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("  operation failed: {error:#}");
                }
            }
        }
    };
    if args.rate > 0.0 {
        // Open loop: start operations on a fixed schedule; a slow reply delays nothing but
        // itself, and a full pipeline shows up as latency from the scheduled start.
        let permits = Arc::new(Semaphore::new(args.concurrency));
        let interval = Duration::from_secs_f64(1.0 / args.rate);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for n in 0u32.. {
            let scheduled = start + interval * n;
            if scheduled >= deadline {
                break;
            }
            tokio::time::sleep_until(scheduled.into()).await;
            // The semaphore is never closed; a closed one would end the schedule.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (op, record, i) = (
                op.clone(),
                record.clone(),
                next.fetch_add(1, Ordering::Relaxed),
            );
            tasks.push(tokio::spawn(async move {
                let outcome = op(i).await;
                record(scheduled, outcome);
                drop(permit);
            }));
        }
        futures::future::join_all(tasks).await;
    } else {
        let workers = (0..args.concurrency).map(|_| {
            let (op, record, next) = (op.clone(), record.clone(), next.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let outcome = op(i).await;
                    record(started, outcome);
                }
            })
        });
        futures::future::join_all(workers).await;
    }
    let histogram = histogram
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let ops = histogram.len();
    (histogram, ops, errors.load(Ordering::Relaxed))
}

struct NoOp;

impl EventHandler for NoOp {
    async fn handle(&self, _: &EventEnvelope) -> Result<(), HandlerError> {
        Ok(())
    }
}

struct ConsumerResult {
    events: u64,
    elapsed: Duration,
    cpu: CpuUse,
    table_ops: Option<TableOps>,
}

/// Drains the outbox phase's topic (warm-up and measured events alike) with the consumer runner.
async fn consume_all(
    infra: &Infra,
    session: &Arc<scylla::client::session::Session>,
    keyspace: &str,
    topic: &str,
    servers: &ServerPids,
    published: &AtomicU64,
) -> anyhow::Result<ConsumerResult> {
    let checkpoints = Checkpoints::new(session.clone(), keyspace).await?;
    let shutdown = CancellationToken::new();
    let options = ConsumerOptions::new(
        infra.kafka_brokers.clone(),
        format!("{keyspace}-consumer"),
        vec![topic.to_owned()],
    );
    let dlq = EventProducer::new(&infra.kafka_brokers, Duration::from_secs(10))?;
    let runner = ConsumerRunner::new(options, NoOp, checkpoints, dlq, shutdown.clone())?;
    let stats = runner.stats();
    // Every event the outbox phase published, warm-up included.
    let total = published.load(Ordering::Relaxed);
    servers.settle("the consumer").await;
    let table_ops_before = servers.table_ops().await;
    let cpu_before = servers.sample();
    let started = Instant::now();
    let task = tokio::spawn(runner.run());
    let deadline = started + Duration::from_secs(300);
    while stats.handled() + stats.duplicates() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu = servers.sample().since(&cpu_before);
    let table_ops = servers.table_ops_since(table_ops_before).await;
    shutdown.cancel();
    task.await??;
    Ok(ConsumerResult {
        events: stats.handled() + stats.duplicates(),
        elapsed,
        cpu,
        table_ops,
    })
}

fn print_header(args: &Args, keyspace: &str) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mode = if args.rate > 0.0 {
        format!(
            "open loop at {} ops/s (max {} in flight)",
            args.rate, args.concurrency
        )
    } else {
        format!("closed loop, concurrency {}", args.concurrency)
    };
    println!(
        "scanloop bench: {} | {cpu}, {cores} cores | {mode} | {} s per phase after {} s warm-up | \
         payload {} B | keyspace {keyspace}",
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        args.duration_secs,
        args.warmup_secs,
        args.payload_bytes
    );
}

fn print_results(results: &[PhaseResult], consumer: &ConsumerResult, servers: &ServerPids) {
    println!();
    println!(
        "{:<30} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6}   cpu µs/op: bench + {}",
        "phase",
        "ops",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        servers.names(),
    );
    for r in results {
        let ms = |q: f64| r.latency_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<30} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6}   {}",
            r.name,
            r.ops,
            r.ops as f64 / r.elapsed.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            r.latency_us.max() as f64 / 1000.0,
            r.errors,
            r.cpu.per_op(r.ops),
        );
    }
    println!(
        "{:<30} {:>8} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>6}   {}",
        "consumer (dedup, no-op)",
        consumer.events,
        consumer.events as f64 / consumer.elapsed.as_secs_f64(),
        "-",
        "-",
        "-",
        "-",
        "-",
        consumer.cpu.per_op(consumer.events),
    );
    let rate = |r: &PhaseResult| r.ops as f64 / r.elapsed.as_secs_f64();
    let p99 = |r: &PhaseResult| r.latency_us.value_at_quantile(0.99) as f64;
    let by_name = |name: &str| results.iter().find(|r| r.name == name);
    if let (Some(plain), Some(activate)) = (
        by_name(PLAIN_INSERT),
        by_name(crate::bench_activation::ACTIVATE),
    ) {
        println!(
            "ActivateWarranty end to end vs plain insert: {}x the rate, {}x the p99",
            ratio(rate(activate), rate(plain)),
            ratio(p99(activate), p99(plain)),
        );
    }
    if let (Some(plain), Some(attribute)) = (
        by_name(PLAIN_INSERT),
        by_name(crate::bench_referral::ATTRIBUTE),
    ) {
        println!(
            "referral attribution (activation recorded → ReferralAttributed recorded) vs plain \
             insert: {}x the rate, {}x the p99",
            ratio(rate(attribute), rate(plain)),
            ratio(p99(attribute), p99(plain)),
        );
    }
    for note in results.iter().filter_map(|r| r.note.as_deref()) {
        println!("{note}");
    }
    print_table_ops(results, consumer);
    if let (Some(plain), Some(append), Some(outbox)) = (
        by_name(PLAIN_INSERT),
        bare_append(results),
        by_name(APPEND_PUBLISH),
    ) {
        let append = &append;
        println!();
        println!(
            "append vs plain insert: {}x the rate, {}x the p99; append+publish vs plain \
             insert: {}x the rate, {}x the p99",
            ratio(rate(append), rate(plain)),
            ratio(p99(append), p99(plain)),
            ratio(rate(outbox), rate(plain)),
            ratio(p99(outbox), p99(plain)),
        );
        print_targets(results, append, outbox);
        print_single_writer(results, append, outbox);
    }
}

/// What each phase asked of Cassandra per operation, by table.
fn print_table_ops(results: &[PhaseResult], consumer: &ConsumerResult) {
    let mut counted: Vec<_> = results
        .iter()
        .filter_map(|r| Some((r.name, r.ops, r.table_ops.as_ref()?)))
        .collect();
    if let Some(ops) = &consumer.table_ops {
        counted.push(("consumer (dedup, no-op)", consumer.events, ops));
    }
    if counted.is_empty() {
        return;
    }
    println!();
    println!(
        "Cassandra's requests per operation by table (its own counts: r local read, s range \
         scan, w write; everything the node served during the phase):"
    );
    for (name, ops, table_ops) in counted {
        println!("  {name}: {}", table_ops.per_op(ops));
    }
}

/// The single-writer experiment against the plain insert (the limit) and the conditional
/// append and outbox of the same run.
fn print_single_writer(results: &[PhaseResult], append: &PhaseResult, outbox: &PhaseResult) {
    let rate = |r: &PhaseResult| r.ops as f64 / r.elapsed.as_secs_f64();
    let cpu = |r: &PhaseResult| r.cpu.total() / r.ops.max(1) as f64;
    let p99 = |r: &PhaseResult| r.latency_us.value_at_quantile(0.99) as f64;
    let by_name = |name: &str| results.iter().find(|r| r.name == name);
    let (Some(plain), Some(single), Some(published)) = (
        by_name(PLAIN_INSERT_AGAIN),
        by_name(SINGLE_WRITER),
        by_name(SINGLE_WRITER_PUBLISH),
    ) else {
        return;
    };
    println!();
    println!(
        "experiment (not the event store's path): appends without a Paxos round, leased single writers"
    );
    for (r, against) in [(single, append), (published, outbox)] {
        println!(
            "  {:<30} vs plain insert, again: {}x the rate, {}x the CPU, {}x the p99; vs {}: {}x the \
             rate, {}x the CPU",
            r.name,
            ratio(rate(r), rate(plain)),
            ratio(cpu(r), cpu(plain)),
            ratio(p99(r), p99(plain)),
            against.name,
            ratio(rate(r), rate(against)),
            ratio(cpu(r), cpu(against)),
        );
    }
}

/// Both bare-append phases taken together (ops, time, CPU and latencies summed), or the one
/// that ran.
fn bare_append(results: &[PhaseResult]) -> Option<PhaseResult> {
    let mut phases = results
        .iter()
        .filter(|r| r.name == APPEND || r.name == APPEND_AGAIN);
    let first = phases.next()?;
    let mut both = PhaseResult {
        name: "event-store append, both phases",
        ops: first.ops,
        errors: first.errors,
        elapsed: first.elapsed,
        latency_us: first.latency_us.clone(),
        cpu: first.cpu.clone(),
        note: None,
        read_model_lag_us: None,
        table_ops: first.table_ops.clone(),
    };
    for other in phases {
        both.ops += other.ops;
        both.errors += other.errors;
        both.elapsed += other.elapsed;
        // Same bounds on both: adding cannot fail.
        let _ = both.latency_us.add(&other.latency_us);
        both.cpu = both.cpu.plus(&other.cpu);
        both.table_ops = both
            .table_ops
            .zip(other.table_ops.as_ref())
            .map(|(a, b)| a.plus(b));
    }
    Some(both)
}

/// The performance targets (issue 10) as ratios of this run's figures, each with its bound.
fn print_targets(results: &[PhaseResult], append: &PhaseResult, outbox: &PhaseResult) {
    let rate = |r: &PhaseResult| r.ops as f64 / r.elapsed.as_secs_f64();
    let p99 = |r: &PhaseResult| r.latency_us.value_at_quantile(0.99) as f64;
    let cpu = |r: &PhaseResult| r.cpu.total() / r.ops.max(1) as f64;
    let by_name = |name: &str| results.iter().find(|r| r.name == name);
    let line = |what: &str, value: f64, bound: &str, met: bool| {
        let verdict = if met { "met" } else { "NOT met" };
        println!(
            "  {what:<62} {:>7} (target {bound}) {verdict}",
            ratio(value, 1.0)
        );
    };
    println!();
    println!(
        "targets (ratios within this run; \"append\" is both bare-append phases together: {:.0}/s, \
         {:.0} µs CPU per op, p99 {:.1} ms):",
        rate(append),
        cpu(append) * 1e6,
        p99(append) / 1e3
    );
    let x = rate(outbox) / rate(append);
    line("append+publish rate / append rate", x, "≥ 0.8", x >= 0.8);
    let x = cpu(outbox) / cpu(append);
    line("append+publish CPU per op / append's", x, "≤ 1.5", x <= 1.5);
    if let Some(activate) = by_name(crate::bench_activation::ACTIVATE) {
        let x = rate(activate) / rate(append);
        line("ActivateWarranty rate / append rate", x, "≥ 0.6", x >= 0.6);
        let x = p99(activate) / p99(append);
        line("ActivateWarranty p99 / append p99", x, "≤ 2", x <= 2.0);
        let x = cpu(activate) / cpu(append);
        line(
            "ActivateWarranty CPU per activation / append's",
            x,
            "≤ 1.5",
            x <= 1.5,
        );
    }
    if let Some(open) = by_name(crate::bench_activation::ACTIVATE_OPEN) {
        let x = p99(open) / p99(append);
        line(
            "ActivateWarranty open loop at half max: p99 / append's closed p99",
            x,
            "≤ 2",
            x <= 2.0,
        );
        println!(
            "    (open-loop p99 {:.1} ms, append closed-loop p99 {:.1} ms)",
            p99(open) / 1e3,
            p99(append) / 1e3
        );
        if let Some(lag) = &open.read_model_lag_us {
            let ms = |q: f64| lag.value_at_quantile(q) as f64 / 1e3;
            let met = if ms(0.99) <= 60.0 { "met" } else { "NOT met" };
            println!(
                "  read-model lag (WarrantyActivated → visible in GetWarranty), {} samples: \
                 p50 {:.1} ms, p99 {:.1} ms (target p99 ≤ 60 ms) {met}",
                lag.len(),
                ms(0.5),
                ms(0.99)
            );
        }
    }
}

/// `a / b` with two decimals, or four when it is below 0.1 (a reaction chain's rate is a small
/// fraction of a plain insert's, and "0.00x" would say nothing).
fn ratio(a: f64, b: f64) -> String {
    let x = a / b;
    if x.abs() < 0.1 {
        format!("{x:.4}")
    } else {
        format!("{x:.2}")
    }
}

/// CPU seconds (user + system) of this process and of each server process found.
#[derive(Clone, Default)]
pub(crate) struct CpuUse {
    bench: f64,
    servers: Vec<Option<f64>>,
}

impl CpuUse {
    pub(crate) fn since(&self, before: &CpuUse) -> CpuUse {
        CpuUse {
            bench: self.bench - before.bench,
            servers: self
                .servers
                .iter()
                .zip(&before.servers)
                .map(|(after, before)| Some((*after)? - (*before)?))
                .collect(),
        }
    }

    /// This use times `factor` (a span's use stated for a longer or shorter span).
    pub(crate) fn scaled(&self, factor: f64) -> CpuUse {
        CpuUse {
            bench: self.bench * factor,
            servers: self.servers.iter().map(|s| s.map(|s| s * factor)).collect(),
        }
    }

    /// Both uses together (two spans of time).
    pub(crate) fn plus(&self, other: &CpuUse) -> CpuUse {
        CpuUse {
            bench: self.bench + other.bench,
            servers: self
                .servers
                .iter()
                .zip(&other.servers)
                .map(|(a, b)| Some((*a)? + (*b)?))
                .collect(),
        }
    }

    /// Cores busy on average over `secs` seconds, per process: "0.01 + 0.61 + … = 0.70".
    pub(crate) fn cores(&self, secs: f64) -> String {
        let of = |s: f64| format!("{:.2}", s / secs);
        let mut parts = vec![of(self.bench)];
        parts.extend(self.servers.iter().map(|s| s.map_or("?".into(), of)));
        format!("{} = {}", parts.join(" + "), of(self.total()))
    }

    /// CPU seconds of each server process, in column order (None: not measured).
    pub(crate) fn servers(&self) -> &[Option<f64>] {
        &self.servers
    }

    /// CPU seconds of every process measured.
    pub(crate) fn total(&self) -> f64 {
        self.bench + self.servers.iter().flatten().sum::<f64>()
    }

    pub(crate) fn per_op(&self, ops: u64) -> String {
        if ops == 0 {
            return "-".into();
        }
        let us = |s: f64| format!("{:.0}", s * 1e6 / ops as f64);
        let mut parts = vec![us(self.bench)];
        parts.extend(self.servers.iter().map(|s| s.map_or("?".into(), us)));
        let total = self.bench + self.servers.iter().flatten().sum::<f64>();
        format!("{} = {}", parts.join(" + "), us(total))
    }
}

/// Cores the servers may keep busy between phases and still count as quiet.
const QUIET_CORES: f64 = 0.2;
/// The longest a phase waits for quiet servers before it starts anyway.
const SETTLE_AT_MOST: Duration = Duration::from_secs(60);

/// The server processes whose CPU time is reported, in column order.
pub(crate) struct ServerPids {
    pids: Vec<(&'static str, Option<u32>)>,
    /// A session to Cassandra, to read its request counts by table around each phase.
    counts_from: Option<Arc<Session>>,
}

impl ServerPids {
    /// Cassandra and Kafka from the devstack's pid files, then each of `services` that has a
    /// pid.
    pub(crate) fn find(
        devstack_dir: Option<&std::path::Path>,
        services: &[(&'static str, Option<u32>)],
    ) -> Self {
        let dir = devstack_dir
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".devstack"));
        let pid = |name: &str| {
            std::fs::read_to_string(dir.join("run").join(format!("{name}.pid")))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        let mut pids = vec![("cassandra", pid("cassandra")), ("kafka", pid("kafka"))];
        pids.extend(services.iter().filter(|(_, pid)| pid.is_some()));
        Self {
            pids,
            counts_from: None,
        }
    }

    /// Also reads Cassandra's request counts by table (through `session`) around each phase.
    pub(crate) fn counting_table_ops(self, session: Arc<Session>) -> Self {
        Self {
            counts_from: Some(session),
            ..self
        }
    }

    /// Cassandra's request counts by table now, when they are read at all.
    pub(crate) async fn table_ops(&self) -> Option<TableOps> {
        TableOps::sample(self.counts_from.as_ref()?).await
    }

    /// Cassandra's requests by table since `before` (a [`ServerPids::table_ops`] sample).
    pub(crate) async fn table_ops_since(&self, before: Option<TableOps>) -> Option<TableOps> {
        Some(self.table_ops().await?.since(&before?))
    }

    /// The same processes, for a task of its own.
    pub(crate) fn clone_probe(&self) -> ServerPids {
        ServerPids {
            pids: self.pids.clone(),
            counts_from: self.counts_from.clone(),
        }
    }

    /// Each process's resident set size in KiB (VmRSS), in column order.
    pub(crate) fn rss_kib(&self) -> Vec<Option<u64>> {
        self.pids
            .iter()
            .map(|(_, pid)| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", (*pid)?)).ok()?;
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .collect()
    }

    /// The processes' names, in column order.
    pub(crate) fn name_list(&self) -> Vec<&'static str> {
        self.pids.iter().map(|(name, _)| *name).collect()
    }

    pub(crate) fn names(&self) -> String {
        self.pids
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// Waits until the servers are quiet (together under [`QUIET_CORES`] over a second, for at
    /// most [`SETTLE_AT_MOST`]), so that what an earlier phase left them to do (Cassandra
    /// compacting its writes, above all) is not billed to the next phase.
    pub(crate) async fn settle(&self, before: &str) {
        let started = Instant::now();
        loop {
            let earlier = self.sample();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let busy = self.sample().since(&earlier);
            let cores = busy.total() - busy.bench;
            if cores < QUIET_CORES || started.elapsed() >= SETTLE_AT_MOST {
                if started.elapsed() > Duration::from_secs(2) {
                    eprintln!(
                        "  waited {:.0} s before {before} for the servers to settle ({cores:.2} cores busy)",
                        started.elapsed().as_secs_f64()
                    );
                }
                return;
            }
        }
    }

    /// Sends `signal` ("STOP", "CONT") to the services (not to Cassandra or Kafka).
    pub(crate) fn signal_services(&self, signal: &str) -> anyhow::Result<()> {
        let services: Vec<Option<u32>> = self
            .pids
            .iter()
            .filter(|(name, _)| !matches!(*name, "cassandra" | "kafka"))
            .map(|(_, pid)| *pid)
            .collect();
        send_signal(&services, signal)
    }

    /// Whether any service's pid is known (to pause it, or read its CPU).
    pub(crate) fn has_services(&self) -> bool {
        self.pids.len() > 2
    }

    pub(crate) fn sample(&self) -> CpuUse {
        CpuUse {
            bench: cpu_seconds("self").unwrap_or(0.0),
            servers: self
                .pids
                .iter()
                .map(|(_, pid)| pid.and_then(|p| cpu_seconds(&p.to_string())))
                .collect(),
        }
    }
}

/// Sends `signal` ("STOP", "CONT") to each process of `pids`.
pub(crate) fn send_signal(pids: &[Option<u32>], signal: &str) -> anyhow::Result<()> {
    for pid in pids.iter().flatten() {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "cannot send SIG{signal} to process {pid}");
    }
    Ok(())
}

/// utime + stime of a process from /proc/<pid>/stat, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
