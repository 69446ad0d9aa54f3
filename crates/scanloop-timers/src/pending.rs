//! What the runner knows is coming without reading the database: the firing times this process
//! scheduled (or kept for a retry) that no pass has handled yet, with their shards. The runner
//! reads a shard's due items only when this says something there is due, plus a slow safety pass
//! over every shard for what other processes scheduled.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

/// Firing times by shard, earliest first. Bounded: past `limit` entries the latest are
/// forgotten (the safety pass finds those items).
pub(crate) struct Pending {
    due: BTreeSet<(DateTime<Utc>, i32)>,
    limit: usize,
}

impl Pending {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            due: BTreeSet::new(),
            limit: limit.max(1),
        }
    }

    /// Notes that something in `shard` fires at `at`; true when that is now the earliest known
    /// (the runner may be sleeping past it).
    pub(crate) fn note(&mut self, at: DateTime<Utc>, shard: i32) -> bool {
        let earliest = self.due.first().is_none_or(|(first, _)| at < *first);
        self.due.insert((at, shard));
        if self.due.len() > self.limit {
            self.due.pop_last();
        }
        earliest
    }

    /// The shards with something firing at or before `now`, forgotten here: the pass that
    /// follows handles them (and what it keeps for a retry is noted again).
    pub(crate) fn take_due(&mut self, now: DateTime<Utc>) -> BTreeSet<i32> {
        let mut shards = BTreeSet::new();
        while let Some(&(at, shard)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            shards.insert(shard);
        }
        shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn due_shards_are_taken_once_and_later_ones_stay() {
        let mut pending = Pending::new(100);
        assert!(pending.note(at(20), 3));
        assert!(pending.note(at(10), 5), "earlier than all known");
        assert!(!pending.note(at(30), 5));
        assert!(!pending.note(at(10), 7));
        assert!(pending.take_due(at(9)).is_empty());
        assert_eq!(pending.take_due(at(20)), BTreeSet::from([3, 5, 7]));
        assert!(pending.take_due(at(20)).is_empty(), "taken once");
        // The item at 30 was noted before the first was due, and is still known.
        assert_eq!(pending.take_due(at(30)), BTreeSet::from([5]));
    }

    #[test]
    fn past_the_limit_the_latest_are_forgotten() {
        let mut pending = Pending::new(2);
        pending.note(at(10), 1);
        pending.note(at(30), 2);
        pending.note(at(20), 3);
        assert_eq!(pending.take_due(at(100)), BTreeSet::from([1, 3]));
    }
}
