//! Which records of each assigned partition are finished, and so how far its offset may be
//! committed.
//!
//! Records of one partition finish out of order (each stream has its own lane), so a partition's
//! committable offset is its lowest unfinished offset: committing further would skip a record
//! still at work if this member stopped now. Records after it that did finish are redelivered
//! after a restart and dropped by the checkpoints.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A topic and partition.
pub(crate) type Partition = (String, i32);

/// One assignment of a partition to this member, from the assignment until its revocation.
/// Work taken under a claim is abandoned once the claim is revoked: the partition's new owner
/// starts from the committed offset and does it.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    revoked: AtomicBool,
}

impl Claim {
    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct PartitionProgress {
    claim: Arc<Claim>,
    /// Offsets taken and not finished.
    unfinished: BTreeSet<i64>,
    /// One past the highest offset taken; None before the first.
    next: Option<i64>,
    /// What was last handed out for committing.
    stored: Option<i64>,
    paused: bool,
}

impl PartitionProgress {
    fn new() -> Self {
        Self {
            claim: Arc::new(Claim::default()),
            unfinished: BTreeSet::new(),
            next: None,
            stored: None,
            paused: false,
        }
    }

    /// The offset to commit: the first record not finished.
    fn committable(&self) -> Option<i64> {
        self.unfinished.first().copied().or(self.next)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Progress {
    partitions: HashMap<Partition, PartitionProgress>,
}

impl Progress {
    /// The partition is now this member's (a no-op if it already was).
    pub(crate) fn assign(&mut self, partition: Partition) {
        self.partitions
            .entry(partition)
            .or_insert_with(PartitionProgress::new);
    }

    /// The partition is no longer this member's: its claim is revoked (queued work for it is
    /// abandoned) and the offset up to which it finished is returned for a last commit.
    pub(crate) fn revoke(&mut self, partition: &Partition) -> Option<i64> {
        let progress = self.partitions.remove(partition)?;
        progress.claim.revoked.store(true, Ordering::Release);
        progress.committable()
    }

    /// Takes a record to work on; None when its partition is not assigned to this member (a
    /// record fetched before a revocation).
    pub(crate) fn take(&mut self, partition: &Partition, offset: i64) -> Option<Arc<Claim>> {
        let progress = self.partitions.get_mut(partition)?;
        progress.unfinished.insert(offset);
        progress.next = Some(progress.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(progress.claim.clone())
    }

    /// Marks a record finished, unless the claim it was taken under has ended.
    pub(crate) fn finish(&mut self, partition: &Partition, claim: &Arc<Claim>, offset: i64) {
        if let Some(progress) = self.partitions.get_mut(partition)
            && Arc::ptr_eq(&progress.claim, claim)
        {
            progress.unfinished.remove(&offset);
        }
    }

    /// Records taken and not yet finished in `partition`.
    #[cfg(test)]
    pub(crate) fn unfinished(&self, partition: &Partition) -> usize {
        self.partitions
            .get(partition)
            .map_or(0, |p| p.unfinished.len())
    }

    /// Partitions whose committable offset moved since the last call, with that offset.
    pub(crate) fn take_committable(&mut self) -> Vec<(Partition, i64)> {
        let mut moved = Vec::new();
        for (partition, progress) in &mut self.partitions {
            if let Some(offset) = progress.committable()
                && progress.stored.is_none_or(|stored| offset > stored)
            {
                progress.stored = Some(offset);
                moved.push((partition.clone(), offset));
            }
        }
        moved
    }

    /// Every assigned partition's committable offset (for the final commit at shutdown).
    pub(crate) fn all_committable(&self) -> Vec<(Partition, i64)> {
        self.partitions
            .iter()
            .filter_map(|(partition, progress)| Some((partition.clone(), progress.committable()?)))
            .collect()
    }

    /// True when `partition` has `limit` records at work and is not yet paused: the caller
    /// pauses fetching it, so one slow stream holds back only its own partition.
    pub(crate) fn should_pause(&mut self, partition: &Partition, limit: usize) -> bool {
        match self.partitions.get_mut(partition) {
            Some(progress) if !progress.paused && progress.unfinished.len() >= limit => {
                progress.paused = true;
                true
            }
            _ => false,
        }
    }

    /// Paused partitions that drained to half the limit: the caller resumes them.
    pub(crate) fn take_resumable(&mut self, limit: usize) -> Vec<Partition> {
        let mut resumable = Vec::new();
        for (partition, progress) in &mut self.partitions {
            if progress.paused && progress.unfinished.len() <= limit / 2 {
                progress.paused = false;
                resumable.push(partition.clone());
            }
        }
        resumable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        ("t".to_owned(), n)
    }

    #[test]
    fn the_committable_offset_stops_at_the_first_unfinished_record() {
        let mut progress = Progress::default();
        progress.assign(p(0));
        let claims: Vec<_> = (10..15)
            .map(|offset| progress.take(&p(0), offset).unwrap())
            .collect();
        assert_eq!(progress.take_committable(), [(p(0), 10)]);
        // 11 and 13 finish first: nothing can be committed past 10 yet.
        progress.finish(&p(0), &claims[1], 11);
        progress.finish(&p(0), &claims[3], 13);
        assert_eq!(progress.take_committable(), []);
        progress.finish(&p(0), &claims[0], 10);
        assert_eq!(progress.take_committable(), [(p(0), 12)]);
        progress.finish(&p(0), &claims[2], 12);
        progress.finish(&p(0), &claims[4], 14);
        assert_eq!(progress.take_committable(), [(p(0), 15)]);
        assert_eq!(progress.unfinished(&p(0)), 0);
    }

    #[test]
    fn a_revoked_partition_returns_what_finished_and_ignores_late_work() {
        let mut progress = Progress::default();
        progress.assign(p(1));
        let early = progress.take(&p(1), 0).unwrap();
        progress.take(&p(1), 1).unwrap();
        progress.finish(&p(1), &early, 0);
        assert_eq!(progress.revoke(&p(1)), Some(1));
        assert!(early.is_revoked());
        assert!(progress.take(&p(1), 2).is_none(), "not ours any more");

        // Assigned again: a new claim; work finishing under the old one changes nothing.
        progress.assign(p(1));
        let fresh = progress.take(&p(1), 1).unwrap();
        assert!(!fresh.is_revoked());
        progress.finish(&p(1), &early, 1);
        assert_eq!(progress.unfinished(&p(1)), 1);
        assert_eq!(progress.revoke(&p(1)), Some(1));
        assert_eq!(progress.revoke(&p(2)), None);
    }

    #[test]
    fn a_partition_pauses_at_the_limit_and_resumes_at_half() {
        let mut progress = Progress::default();
        progress.assign(p(0));
        let claim = progress.take(&p(0), 0).unwrap();
        for offset in 1..4 {
            progress.take(&p(0), offset).unwrap();
        }
        assert!(!progress.should_pause(&p(0), 5));
        assert!(progress.should_pause(&p(0), 4));
        assert!(!progress.should_pause(&p(0), 4), "already paused");
        progress.finish(&p(0), &claim, 0);
        assert_eq!(progress.take_resumable(4), Vec::<Partition>::new());
        progress.finish(&p(0), &claim, 1);
        assert_eq!(progress.take_resumable(4), [p(0)]);
    }
}
