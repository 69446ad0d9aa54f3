//! The storage and messaging phases' parts: their names, the warm-up that lets the JVMs compile
//! the measured paths, the envelope the produce phases send, the watch on background
//! publications, and the consumer runner draining what was published.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use scanloop_bus::{
    ConsumerOptions, ConsumerRunner, EventEnvelope, EventHandler, EventProducer, HandlerError,
};
use scanloop_config::Infra;
use scanloop_storage::Checkpoints;
use tokio_util::sync::CancellationToken;

use super::args::Args;
use super::harness::{drive, latency_histogram};
use super::processes::{CpuUse, ServerPids};
use super::table_ops::TableOps;

/// The limit every other phase is compared with.
pub(super) const PLAIN_INSERT: &str = "plain CQL insert";
/// The plain insert again, right before the experiment (whose figures compare with it).
pub(super) const PLAIN_INSERT_AGAIN: &str = "plain CQL insert, again";
/// The bare conditional append: the ceiling of any path that decides "at most once" with it.
pub(super) const APPEND: &str = "event-store append (LWT)";
/// The bare append after the outbox phases; the targets compare with both append phases.
pub(super) const APPEND_AGAIN: &str = "event-store append, again";
/// The outbox phase the targets use: appends acknowledged at durability, published in the
/// background, the phase ending when all are out.
pub(super) const APPEND_PUBLISH: &str = "append + publish (outbox)";
/// The same with every operation waiting for its events to reach Kafka (latency-bound in a
/// closed loop: the produce's round trip is in every operation).
pub(super) const APPEND_PUBLISH_WAITING: &str = "append + publish, awaited";
/// Issue 10's experiment: appends without a Paxos round, by leased single writers.
pub(super) const SINGLE_WRITER: &str = "single-writer append (lease)";
/// The same, each append then produced to Kafka and awaited.
pub(super) const SINGLE_WRITER_PUBLISH: &str = "single-writer + produce";

/// Start → published times of the background publications of a phase, and the failures.
#[derive(Default)]
pub(super) struct PublicationWatch {
    pub(super) lag_us: std::sync::Mutex<Option<Histogram<u64>>>,
    /// The record as it was at the last restart.
    pub(super) last: std::sync::Mutex<Option<Histogram<u64>>>,
    pub(super) failed: AtomicU64,
    /// Publications whose outcome is not in yet.
    pub(super) watching: AtomicU64,
}

impl PublicationWatch {
    pub(super) fn record(&self, lag: Duration) {
        self.lag_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(latency_histogram)
            .saturating_record((lag.as_micros() as u64).max(1));
    }

    /// Forgets what was recorded (the warm-up's), and takes a snapshot of it for `finished`.
    pub(super) fn restart(&self) {
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
    pub(super) fn finished(&self) -> Histogram<u64> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_else(latency_histogram)
    }
}

/// Drives plain inserts and bare appends, half each, for `--servers-warmup-secs`, unmeasured:
/// the JVMs compile the paths the phases then measure.
pub(super) async fn warm_up_servers<I, IFut, A, AFut>(args: &Args, insert: I, append: A)
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
pub(super) fn bench_envelope(stream_id: String, version: u64, payload: &[u8]) -> EventEnvelope {
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

pub(super) struct NoOp;

impl EventHandler for NoOp {
    async fn handle(&self, _: &EventEnvelope) -> Result<(), HandlerError> {
        Ok(())
    }
}

pub(super) struct ConsumerResult {
    pub(super) events: u64,
    pub(super) elapsed: Duration,
    pub(super) cpu: CpuUse,
    pub(super) table_ops: Option<TableOps>,
}

/// Drains the outbox phase's topic (warm-up and measured events alike) with the consumer runner.
pub(super) async fn consume_all(
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
