//! The job that handles what is due.
//!
//! A pass, for each shard at once: read the shard's cursor, the buckets holding items from there
//! up to the clock's hour, and in each the items firing between the cursor and now, in order;
//! call the handler for each and delete the item only after the handler succeeded; then move
//! the cursor to the first item left to retry, or to `now - settle`, whichever is earlier.
//!
//! A pass runs only when there is reason to, and over the shards that have reason: every shard
//! at start and every `safety_interval` (for items another process scheduled, or this one
//! before a restart, which therefore fire at most that late when the process that scheduled
//! them is gone); the shards where something this process scheduled is due (the store keeps
//! the firing times in memory and scheduling an earlier one wakes the runner; the runner
//! compares them with the clock every `interval`, which costs no database request); and again
//! a shard that kept items for a retry. Passes are at least `interval` apart.
//!
//! Safe with several instances and after a crash: an item is deleted only once handled, so a
//! crash (or a competitor) at any point makes it fire again, never vanish. Handlers must
//! therefore be idempotent; a command run through the event store's `Repository::execute`
//! decides from the stream's state and its conditional append lets exactly one of two
//! concurrent runs write.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use scanloop_storage::DbError;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::store::{DueTimer, SHARDS, TimerStore, bucket_of};

/// Why a handler did not handle a timer.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// A fault that may pass (database or broker away, contention): the item stays and fires
    /// again on the next pass.
    #[error("transient failure: {0:#}")]
    Retry(#[from] anyhow::Error),
    /// The item can never be handled (unknown kind, a stream that is not the handler's): it is
    /// logged, counted and deleted, so it does not hold its shard's cursor back for ever.
    #[error("cannot be handled: {0}")]
    Discard(String),
}

/// Does what a timer is for. Must be idempotent: an item can fire more than once (a crash
/// between the handler and the delete, two runners, a late item scheduled twice).
pub trait TimerHandler: Send + Sync + 'static {
    fn handle(&self, timer: &DueTimer) -> impl Future<Output = Result<(), TimerError>> + Send;
}

/// A handler shared between runners (or with the code that built it) handles as itself.
impl<H: TimerHandler> TimerHandler for std::sync::Arc<H> {
    fn handle(&self, timer: &DueTimer) -> impl Future<Output = Result<(), TimerError>> + Send {
        H::handle(self, timer)
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub handled: usize,
    /// Items the handler failed on for now; they fire again on the next pass.
    pub retried: usize,
    pub discarded: usize,
    pub buckets_read: usize,
}

impl std::ops::AddAssign for RunReport {
    fn add_assign(&mut self, other: Self) {
        self.handled += other.handled;
        self.retried += other.retried;
        self.discarded += other.discarded;
        self.buckets_read += other.buckets_read;
    }
}

/// Timers fired, by outcome (`handled`, `retry`, `discarded`).
static FIRED: LazyLock<Counter<u64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .u64_counter("scanloop.timers.fired")
        .with_description("due timers taken by the timer job, by outcome")
        .build()
});

/// Seconds from a timer's due time to its successful handling.
static LATENESS: LazyLock<Histogram<f64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .f64_histogram("scanloop.timers.lateness")
        .with_unit("s")
        .with_description("timer due → handled")
        .build()
});

enum Fired {
    Handled,
    Kept,
    Discarded,
}

pub struct TimerRunner<H> {
    store: TimerStore,
    handler: H,
    clock: SharedClock,
    interval: Duration,
    safety_interval: Duration,
    settle: chrono::Duration,
}

impl<H: TimerHandler> TimerRunner<H> {
    /// A runner with a 5-second interval, a 60-second safety interval and a 60-second settle
    /// window.
    pub fn new(store: TimerStore, handler: H, clock: SharedClock) -> Self {
        Self {
            store,
            handler,
            clock,
            interval: Duration::from_secs(5),
            safety_interval: Duration::from_secs(60),
            settle: chrono::Duration::seconds(60),
        }
    }

    /// How often the runner compares what is due with the clock, and the least time between
    /// two passes: the most a timer scheduled by this process is late when all is well.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How often the runner makes a pass with nothing known to be due: the most a timer
    /// scheduled by another process (or by this one before it restarted) is late.
    pub fn with_safety_interval(mut self, safety_interval: Duration) -> Self {
        self.safety_interval = safety_interval;
        self
    }

    /// How far the cursor stays behind the clock. Must exceed the clock difference between any
    /// scheduler and any runner plus a write's latency: an item scheduled late lands at the
    /// scheduler's "now", which must not be behind a cursor already.
    pub fn with_settle(mut self, settle: chrono::Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Makes passes when there is reason to (see the module's documentation) until cancelled.
    /// A pass cut short by shutdown is harmless: nothing is deleted before it was handled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut safety_pass_at = tokio::time::Instant::now();
        loop {
            let now = self.clock.now();
            let mut shards: Vec<i32> = self.store.take_due(now).into_iter().collect();
            if tokio::time::Instant::now() >= safety_pass_at {
                safety_pass_at = tokio::time::Instant::now() + self.safety_interval;
                shards = (0..SHARDS).collect();
            }
            if !shards.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    outcome = self.run_shards(&shards, now) => match outcome {
                        Ok(report) => {
                            if report.handled + report.retried + report.discarded > 0 {
                                tracing::info!(?report, "timer pass");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(error = %format!("{error:#}"), "timer pass failed");
                        }
                    },
                }
                // Passes are at least `interval` apart, however much is scheduled meanwhile.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.interval) => {}
                }
                continue;
            }
            // Look at the clock again after `interval` (it may be a test's, moved), or at once
            // when something earlier is scheduled.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.store.scheduled() => {}
            }
        }
    }

    /// One pass over every shard: handles the items firing at or before `as_of`. `as_of` must
    /// come from the clock the schedulers use (tests pass their moved clock's time).
    pub async fn run_due(&self, as_of: DateTime<Utc>) -> anyhow::Result<RunReport> {
        let all: Vec<i32> = (0..SHARDS).collect();
        self.run_shards(&all, as_of).await
    }

    /// A pass over `shards`. A shard that kept items for a retry, or could not be read, is
    /// noted for another pass as soon as one may run.
    async fn run_shards(&self, shards: &[i32], as_of: DateTime<Utc>) -> anyhow::Result<RunReport> {
        let outcomes: Vec<(i32, Result<RunReport, DbError>)> =
            futures::stream::iter(shards.iter().copied())
                .map(|shard| async move { (shard, self.run_shard(shard, as_of).await) })
                .buffer_unordered(SHARDS as usize)
                .collect()
                .await;
        let mut report = RunReport::default();
        let mut failed = Vec::new();
        for (shard, outcome) in outcomes {
            match outcome {
                Ok(shard_report) => {
                    if shard_report.retried > 0 {
                        self.store.retry_soon(shard);
                    }
                    report += shard_report;
                }
                Err(error) => {
                    self.store.retry_soon(shard);
                    failed.push(format!("shard {shard}: {error}"));
                }
            }
        }
        if failed.is_empty() {
            Ok(report)
        } else {
            // The other shards' work is done and recorded; these are read again next pass.
            anyhow::bail!(
                "{} of {SHARDS} shards failed ({report:?} elsewhere): {}",
                failed.len(),
                failed.join("; ")
            )
        }
    }

    async fn run_shard(&self, shard: i32, as_of: DateTime<Utc>) -> Result<RunReport, DbError> {
        let position = self.store.cursor(shard).await?;
        let from = position.unwrap_or(DateTime::UNIX_EPOCH);
        let settled = as_of - self.settle;
        let mut report = RunReport::default();
        let mut first_kept: Option<DateTime<Utc>> = None;
        for bucket in self
            .store
            .buckets(shard, bucket_of(from), bucket_of(as_of))
            .await?
        {
            report.buckets_read += 1;
            for timer in self.store.due(shard, bucket, from, as_of).await? {
                match self.fire(&timer).await {
                    Fired::Handled => report.handled += 1,
                    Fired::Discarded => report.discarded += 1,
                    Fired::Kept => {
                        report.retried += 1;
                        first_kept.get_or_insert(timer.fire_at);
                    }
                }
            }
        }
        let next = first_kept.map_or(settled, |kept| kept.min(settled));
        if position.is_none_or(|position| next > position) {
            self.store.advance_cursor(shard, next).await?;
        }
        Ok(report)
    }

    async fn fire(&self, timer: &DueTimer) -> Fired {
        let outcome = match self.handler.handle(timer).await {
            Ok(()) => match self.store.delete(timer).await {
                Ok(()) => {
                    let late = (self.clock.now() - timer.due_at)
                        .to_std()
                        .unwrap_or_default();
                    LATENESS.record(late.as_secs_f64(), &[]);
                    Fired::Handled
                }
                Err(error) => {
                    // Handled but still there: it fires once more, which the handler tolerates.
                    tracing::warn!(key = timer.key, %error, "cannot delete a handled timer");
                    Fired::Kept
                }
            },
            Err(TimerError::Retry(error)) => {
                tracing::warn!(
                    stream_id = timer.stream_id,
                    kind = timer.kind,
                    key = timer.key,
                    error = %format!("{error:#}"),
                    "timer failed; retrying on the next pass"
                );
                Fired::Kept
            }
            Err(TimerError::Discard(reason)) => {
                tracing::error!(
                    stream_id = timer.stream_id,
                    kind = timer.kind,
                    key = timer.key,
                    reason,
                    "timer cannot be handled; discarding it"
                );
                match self.store.delete(timer).await {
                    Ok(()) => Fired::Discarded,
                    Err(_) => Fired::Kept,
                }
            }
        };
        let label = match outcome {
            Fired::Handled => "handled",
            Fired::Kept => "retry",
            Fired::Discarded => "discarded",
        };
        FIRED.add(1, &[KeyValue::new("outcome", label)]);
        outcome
    }
}
