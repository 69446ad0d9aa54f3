//! Retiring a writer's flush rows with range deletes instead of a delete per row.
//!
//! Each outbox writer numbers its marker flushes (`seq`, one counter per process) and files
//! them under its own id in one shard, so that in each 10-second bucket its rows sit side by
//! side in one partition, clustered by `seq`. When a flush's appends are all out, its row may
//! go; instead of deleting rows one by one, the writer deletes runs of consecutive finished
//! flushes with one range delete each, every [`PAUSE`] at most. A flush that has to stay for
//! the sweeper (an append whose outcome is unknown, a publication that failed) ends a run:
//! the ranges on either side of it are deleted, it is not.
//!
//! Why it pays: a delete is a write in Cassandra (a tombstone, then compaction work), and
//! deleting per flush cost as many writes as filing the markers did. A range delete costs one
//! write for however many flushes finished in the pause.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::group_commit::Sharing;

/// How long finished flushes gather before the next range delete: leaving rows a little
/// longer costs nothing (the sweeper takes only rows older than seconds), deleting more often
/// costs writes.
pub(crate) const PAUSE: Duration = Duration::from_millis(100);

/// Where a filed flush stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Some of its appends are not out yet.
    Pending,
    /// Every append it announced is out (or never happened): the row may go.
    Done,
    /// The row stays for the sweeper.
    Kept,
}

/// Consecutive finished flushes of one bucket: one range delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub bucket: i64,
    pub first: u64,
    pub last: u64,
}

/// The flushes a writer filed and has not retired yet, by `seq`.
#[derive(Debug, Default)]
pub(crate) struct Filed {
    flushes: BTreeMap<u64, (i64, Standing)>,
    next_seq: u64,
}

impl Filed {
    /// Numbers a flush about to be filed in `bucket`. Numbers only grow, so a flush filed
    /// later never sits below one already forgotten.
    pub(crate) fn file(&mut self, bucket: i64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.flushes.insert(seq, (bucket, Standing::Pending));
        seq
    }

    pub(crate) fn settle(&mut self, seq: u64, standing: Standing) {
        if let Some(entry) = self.flushes.get_mut(&seq) {
            entry.1 = standing;
        }
        self.forget_leading_kept();
    }

    /// The runs of finished flushes: consecutive in `seq` among the flushes not yet retired
    /// (a `seq` that is no longer here was retired already, so a range may span it), all of
    /// one bucket (a range delete stays in one partition), none pending or kept.
    pub(crate) fn runs(&self) -> Vec<Run> {
        let mut runs = Vec::new();
        let mut current: Option<Run> = None;
        for (&seq, &(bucket, standing)) in &self.flushes {
            match (standing, current.as_mut()) {
                (Standing::Done, Some(run)) if run.bucket == bucket => run.last = seq,
                (Standing::Done, _) => {
                    runs.extend(current.take());
                    current = Some(Run {
                        bucket,
                        first: seq,
                        last: seq,
                    });
                }
                (Standing::Pending | Standing::Kept, _) => runs.extend(current.take()),
            }
        }
        runs.extend(current);
        runs
    }

    /// Forgets the flushes of a deleted run; returns how many there were.
    pub(crate) fn retired(&mut self, run: &Run) -> usize {
        let before = self.flushes.len();
        self.flushes
            .retain(|seq, _| !(run.first..=run.last).contains(seq));
        let retired = before - self.flushes.len();
        self.forget_leading_kept();
        retired
    }

    /// A kept flush only matters as a boundary for runs around it; once nothing older is left
    /// to run past it, it is forgotten (so a writer that cannot publish for hours does not
    /// pile them up).
    fn forget_leading_kept(&mut self) {
        while let Some(entry) = self.flushes.first_entry() {
            if entry.get().1 != Standing::Kept {
                break;
            }
            entry.remove();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.flushes.len()
    }
}

/// A writer's handle for filing and settling flushes; the retiring task runs until every
/// handle is gone (then retires what it can one last time).
#[derive(Clone)]
pub(crate) struct Retirer {
    filed: Arc<Mutex<Filed>>,
    wake: mpsc::Sender<()>,
    /// Flush rows retired (items) and the range deletes that took (writes).
    counts: Arc<[AtomicU64; 2]>,
}

impl Retirer {
    /// Starts the task that range-deletes the writer's (`shard`, `writer`) finished flush rows
    /// with `delete_range` (bound: shard, bucket, writer id, first seq, last seq).
    pub(crate) fn spawn(
        session: Arc<Session>,
        delete_range: PreparedStatement,
        shard: i32,
        writer: Uuid,
    ) -> Self {
        let filed = Arc::new(Mutex::new(Filed::default()));
        let (wake, mut woken) = mpsc::channel::<()>(1);
        let counts: Arc<[AtomicU64; 2]> = Arc::default();
        let (state, counted) = (filed.clone(), counts.clone());
        tokio::spawn(async move {
            loop {
                let last_round = woken.recv().await.is_none();
                if !last_round {
                    tokio::time::sleep(PAUSE).await;
                }
                let runs = lock(&state).runs();
                for run in runs {
                    let values = (shard, run.bucket, writer, run.first as i64, run.last as i64);
                    match session.execute_unpaged(&delete_range, values).await {
                        Ok(_) => {
                            let rows = lock(&state).retired(&run);
                            counted[0].fetch_add(rows as u64, Ordering::Relaxed);
                            counted[1].fetch_add(1, Ordering::Relaxed);
                        }
                        // The rows stay; the next round (or the sweeper) deletes them.
                        Err(error) => tracing::warn!(%error, "cannot delete outbox flush rows"),
                    }
                }
                if last_round {
                    return;
                }
            }
        });
        Self {
            filed,
            wake,
            counts,
        }
    }

    /// Flush rows retired per range delete so far.
    pub(crate) fn sharing(&self) -> Sharing {
        Sharing {
            items: self.counts[0].load(Ordering::Relaxed),
            writes: self.counts[1].load(Ordering::Relaxed),
        }
    }

    /// Numbers a flush about to be filed in `bucket`: from now on no range delete spans it
    /// unless it is done.
    pub(crate) fn file(&self, bucket: i64) -> u64 {
        lock(&self.filed).file(bucket)
    }

    pub(crate) fn settle(&self, seq: u64, standing: Standing) {
        lock(&self.filed).settle(seq, standing);
        if standing == Standing::Done {
            // A full channel means a round is due anyway.
            let _ = self.wake.try_send(());
        }
    }
}

fn lock(filed: &Mutex<Filed>) -> std::sync::MutexGuard<'_, Filed> {
    filed.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flushes numbered 0, 1, 2, … in `bucket`s, then settled as given (in that order).
    fn filed(entries: &[(i64, Standing)]) -> Filed {
        let mut filed = Filed::default();
        let seqs: Vec<u64> = entries
            .iter()
            .map(|&(bucket, _)| filed.file(bucket))
            .collect();
        for (seq, &(_, standing)) in seqs.into_iter().zip(entries) {
            filed.settle(seq, standing);
        }
        filed
    }

    fn run(bucket: i64, first: u64, last: u64) -> Run {
        Run {
            bucket,
            first,
            last,
        }
    }

    #[test]
    fn consecutive_finished_flushes_of_a_bucket_make_one_run() {
        use Standing::Done;
        let filed = filed(&[(7, Done), (7, Done), (7, Done)]);
        assert_eq!(filed.runs(), [run(7, 0, 2)]);
    }

    #[test]
    fn pending_and_kept_flushes_split_runs_and_are_never_spanned() {
        use Standing::{Done, Kept, Pending};
        let filed = filed(&[
            (7, Done),
            (7, Pending),
            (7, Done),
            (7, Done),
            (7, Kept),
            (7, Done),
        ]);
        assert_eq!(filed.runs(), [run(7, 0, 0), run(7, 2, 3), run(7, 5, 5)]);
    }

    #[test]
    fn a_run_ends_at_a_bucket_boundary() {
        use Standing::Done;
        let filed = filed(&[(7, Done), (8, Done), (8, Done)]);
        assert_eq!(filed.runs(), [run(7, 0, 0), run(8, 1, 2)]);
    }

    #[test]
    fn a_run_may_span_flushes_retired_before() {
        use Standing::{Done, Pending};
        let mut filed = filed(&[(7, Done), (7, Pending), (7, Done)]);
        filed.retired(&run(7, 2, 2));
        filed.settle(1, Done);
        let next = filed.file(7);
        filed.settle(next, Done);
        // 2 is gone: deleting 0..=3 deletes nothing that should stay.
        assert_eq!(filed.runs(), [run(7, 0, 3)]);
    }

    #[test]
    fn a_writer_that_keeps_every_flush_remembers_none() {
        use Standing::Kept;
        let filed = filed(&[(7, Kept), (7, Kept)]);
        assert_eq!(filed.len(), 0);
    }

    #[test]
    fn kept_flushes_are_forgotten_once_nothing_older_is_left() {
        use Standing::{Done, Kept, Pending};
        let mut filed = filed(&[(7, Done), (7, Kept), (7, Pending), (7, Kept)]);
        filed.retired(&run(7, 0, 0));
        // 1 goes (nothing older is left to run past it); 2 is pending, so 3 stays behind it.
        assert_eq!(filed.len(), 2);
        filed.settle(2, Done);
        assert_eq!(filed.runs(), [run(7, 2, 2)]);
        filed.retired(&run(7, 2, 2));
        assert_eq!(filed.len(), 0);
    }
}
