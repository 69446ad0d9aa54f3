//! What every bench phase shares: an operation driven open- or closed-loop for a warm-up and a
//! measured run, its latency histogram, and the phase's result. A leaf: the phases and the
//! load generator import it, it imports none of them.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use super::args::Args;
use super::processes::{CpuUse, ServerPids};
use super::table_ops::TableOps;

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

/// A lock whose holder panicked still guards figures worth reporting.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
