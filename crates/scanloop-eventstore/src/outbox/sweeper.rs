//! The sweeper: republishes what writers left behind, from the markers of every generation
//! (`outbox/markers.rs`), and keeps its pace (a scan at start, often while something is left,
//! otherwise a safety scan now and then).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{MARKER_SHARDS, Outbox, SETTLE, bucket_of};
#[cfg(doc)]
use super::{MAX_CLOCK_SKEW, MAX_WRITE_DELAY};

/// Republishes ranges left behind by writers that crashed (or lost Kafka) between their append
/// and their publish. Each stream is handled on its own: one that cannot be published (a record
/// the broker refuses, say) is logged, counted in `scanloop.outbox.sweep_failures`, keeps its
/// markers for the next pass, and the pass goes on with the others.
pub struct Sweeper {
    outbox: Outbox,
    /// A marker younger than this may belong to a writer still at work.
    pub min_age: Duration,
    /// A marker whose append never landed (the stream never reached its first version) is
    /// dropped after this long: no append outlives [`MAX_WRITE_DELAY`], and the marker may look
    /// up to [`MAX_CLOCK_SKEW`] older than it is. Default [`SETTLE`].
    pub abandon_after: Duration,
    /// Buckets younger than this may still receive markers: the cursor never passes them.
    /// Default [`SETTLE`]; shorter loses the markers of writers whose clocks are behind.
    pub settle: Duration,
    /// How often it scans while something is left to publish (a failed publication woke it,
    /// or markers are kept).
    pub interval: Duration,
    /// How often it scans when nothing woke it: the safety scan for markers of other processes
    /// that died before publishing. Default 120 s (a process that restarts scans at start).
    pub safety_interval: Duration,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub streams_published: usize,
    /// Streams whose publication failed in this pass; their markers stay for the next.
    pub streams_failed: usize,
    pub markers_deleted: usize,
    pub markers_kept: usize,
    pub buckets_read: usize,
    /// Buckets (or shard cursors) that could not be read; their shard resumes there next pass.
    pub buckets_failed: usize,
}

impl Sweeper {
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            min_age: Duration::from_secs(5),
            abandon_after: SETTLE,
            settle: SETTLE,
            interval: Duration::from_secs(3),
            safety_interval: Duration::from_secs(120),
        }
    }

    /// Sets how old a marker must be before the sweeper takes it over, and how often it looks.
    pub fn with_timing(mut self, min_age: Duration, interval: Duration) -> Self {
        self.min_age = min_age;
        self.interval = interval;
        self
    }

    /// Also sets how often it scans when nothing woke it.
    pub fn with_safety_interval(mut self, safety_interval: Duration) -> Self {
        self.safety_interval = safety_interval;
        self
    }

    /// Sweeps at once, then every `interval` while a failed publication of this process may
    /// still wait (a marker is taken only once it is `min_age` old) or markers are kept, and
    /// every `safety_interval` otherwise, until cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let deferred = &self.outbox.inner.deferred;
        let mut pace = Pace {
            interval: self.interval,
            safety_interval: self.safety_interval,
            // What the previous run left may be younger than `min_age` yet.
            busy_until: tokio::time::Instant::now() + self.min_age + 2 * self.interval,
        };
        loop {
            let left = match self.sweep_once().await {
                Ok(report) => {
                    if report.streams_published > 0 || report.streams_failed > 0 {
                        tracing::info!(?report, "sweeper republished stranded events");
                    }
                    report.markers_kept + report.streams_failed + report.buckets_failed > 0
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "sweep failed");
                    true
                }
            };
            let wait = pace.after_pass(tokio::time::Instant::now(), left);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = deferred.notified() => {
                    // The failed publication's marker is taken once it is `min_age` old.
                    pace.busy_until = tokio::time::Instant::now() + self.min_age + 2 * self.interval;
                }
            }
        }
    }

    /// Reads each shard's buckets from its cursor up to the newest bucket holding markers older
    /// than `min_age`, publishes what their streams have unpublished, deletes the markers that
    /// are done, and moves the cursor past the settled buckets left without markers. A failure
    /// stays with its stream (or its shard): the rest of the pass goes on.
    pub async fn sweep_once(&self) -> anyhow::Result<SweepReport> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(self.min_age)?;
        let abandon_cutoff = now - chrono::Duration::from_std(self.abandon_after)?;
        let settled = bucket_of(now - chrono::Duration::from_std(self.settle)?);
        let newest = bucket_of(cutoff);
        let mut report = SweepReport::default();
        for shard in 0..MARKER_SHARDS {
            let start = match self.outbox.cursor(shard).await {
                Ok(Some(bucket)) => bucket,
                Ok(None) => {
                    // Outbox::new records cursors before any marker is written; without one,
                    // look back further than any clock skew could reach.
                    tracing::warn!(shard, "no sweep cursor; scanning the last ten minutes");
                    bucket_of(now - chrono::Duration::minutes(10))
                }
                Err(error) => {
                    sweep_failure("cursor", shard, None, &error);
                    report.buckets_failed += 1;
                    continue;
                }
            };
            let mut unfinished = None;
            for bucket in start..=newest {
                report.buckets_read += 1;
                let kept = match self
                    .sweep_bucket(shard, bucket, cutoff, abandon_cutoff, &mut report)
                    .await
                {
                    Ok(kept) => kept,
                    Err(error) => {
                        // The bucket's markers are unknown: the cursor stays at it.
                        sweep_failure("bucket", shard, None, &error);
                        report.buckets_failed += 1;
                        unfinished.get_or_insert(bucket);
                        break;
                    }
                };
                if unfinished.is_none() && (kept > 0 || bucket >= settled) {
                    unfinished = Some(bucket);
                }
            }
            let next = unfinished.unwrap_or(newest + 1).min(settled);
            if next > start
                && let Err(error) = self.outbox.set_cursor(shard, next).await
            {
                // Harmless: the next pass reads the same buckets again.
                sweep_failure("cursor", shard, None, &error);
            }
        }
        Ok(report)
    }

    /// Handles one bucket's old markers (flush rows, and the legacy single markers); returns how
    /// many it had to keep.
    async fn sweep_bucket(
        &self,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
        abandon_cutoff: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> anyhow::Result<usize> {
        let (legacy_markers, flushes) = tokio::try_join!(
            self.outbox.legacy_markers_older_than(shard, bucket, cutoff),
            self.outbox.flushes_older_than(shard, bucket, cutoff),
        )?;
        // Every announced append by stream: its first version and whose announcement it is.
        let mut by_stream: BTreeMap<String, Vec<(u64, DateTime<Utc>, Announced)>> = BTreeMap::new();
        for (i, marker) in legacy_markers.iter().enumerate() {
            by_stream
                .entry(marker.stream_id.clone())
                .or_default()
                .push((
                    marker.first_version,
                    marker.created_at,
                    Announced::LegacyMarker(i),
                ));
        }
        for (i, flush) in flushes.iter().enumerate() {
            for (stream_id, first_version) in &flush.appends {
                by_stream.entry(stream_id.clone()).or_default().push((
                    *first_version,
                    flush.created_at,
                    Announced::Flush(i),
                ));
            }
        }
        let mut legacy_done = vec![false; legacy_markers.len()];
        // A flush row goes once every append it names is done.
        let mut flush_pending = vec![false; flushes.len()];
        for (stream_id, announced) in by_stream {
            let head = match self.outbox.publish_stream(&stream_id).await {
                Ok(head) => Some(head),
                Err(error) => {
                    // Its announcements stay, so the next pass tries again; the other streams
                    // of this pass do not wait for it.
                    sweep_failure("stream", shard, Some(&stream_id), &error);
                    report.streams_failed += 1;
                    None
                }
            };
            if head.is_some() {
                report.streams_published += 1;
                crate::metrics::SWEPT.add(1, &[]);
            }
            for (first_version, created_at, owner) in announced {
                // The append's events (or a competitor's at those versions) are out, or the
                // append it announced never happened.
                let done =
                    head.is_some_and(|head| head >= first_version || created_at < abandon_cutoff);
                match owner {
                    Announced::LegacyMarker(i) => legacy_done[i] = done,
                    Announced::Flush(i) => flush_pending[i] |= !done,
                }
            }
        }
        let mut kept = 0;
        for (marker, done) in legacy_markers.iter().zip(legacy_done) {
            if done {
                self.outbox.delete_legacy_marker_quietly(marker).await;
                report.markers_deleted += 1;
            } else {
                kept += 1;
            }
        }
        for (flush, pending) in flushes.iter().zip(flush_pending) {
            if pending {
                kept += 1;
            } else {
                self.outbox.delete_flush_quietly(&flush.key).await;
                report.markers_deleted += 1;
            }
        }
        report.markers_kept += kept;
        Ok(kept)
    }
}

/// When the sweeper looks next: every `interval` until `busy_until` and while a pass left
/// something, every `safety_interval` otherwise.
struct Pace {
    interval: Duration,
    safety_interval: Duration,
    busy_until: tokio::time::Instant,
}

impl Pace {
    /// The wait after a pass at `now` that `left` something to publish (or could not look).
    fn after_pass(&mut self, now: tokio::time::Instant, left: bool) -> Duration {
        if left {
            self.busy_until = self.busy_until.max(now + self.interval);
        }
        if now < self.busy_until {
            self.interval
        } else {
            self.safety_interval
        }
    }
}

/// Whose announcement an append found in a bucket is: a single marker's (legacy) or a flush
/// row's (by index in what the bucket held).
#[derive(Clone, Copy)]
enum Announced {
    LegacyMarker(usize),
    Flush(usize),
}

/// Logs and counts one thing the sweeper could not do in this pass.
fn sweep_failure(
    what: &'static str,
    shard: i32,
    stream_id: Option<&str>,
    error: &dyn std::fmt::Display,
) {
    tracing::warn!(
        what,
        shard,
        stream_id,
        error = %format!("{error:#}"),
        "sweeper could not finish; retrying on the next pass"
    );
    crate::metrics::SWEEP_FAILURES.add(1, &[opentelemetry::KeyValue::new("what", what)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweeper_looks_often_only_while_something_is_left() {
        let start = tokio::time::Instant::now();
        let (interval, safety_interval) = (Duration::from_secs(3), Duration::from_secs(60));
        let mut pace = Pace {
            interval,
            safety_interval,
            busy_until: start + Duration::from_secs(11),
        };
        // The start-up period: every interval, whatever the passes find.
        assert_eq!(pace.after_pass(start, false), interval);
        assert_eq!(
            pace.after_pass(start + Duration::from_secs(9), false),
            interval
        );
        // Then nothing left: the safety scan's pace.
        assert_eq!(
            pace.after_pass(start + Duration::from_secs(12), false),
            safety_interval
        );
        // A pass that left markers keeps the quick pace for one more pass at least.
        let later = start + Duration::from_secs(72);
        assert_eq!(pace.after_pass(later, true), interval);
        assert_eq!(pace.after_pass(later + interval, false), safety_interval);
    }
}
