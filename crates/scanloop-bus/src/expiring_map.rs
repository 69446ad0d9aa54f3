//! A map whose entries expire when not written for a while: what a process remembers about the
//! streams (or other keys) it worked on lately.
//!
//! The consumer runner (each stream's applied version) and the outbox (each stream's
//! latest publication) keep a little per stream so that the stream's next event or command,
//! usually seconds later, skips a database read or write. Kept per stream ever seen, that
//! memory grew with the number of streams a process had touched: 1.2–2.2 MiB a minute per
//! service at 20 sales/s (issue 10's 15-minute run; heaptrack put the outbox's publication
//! chains and the consumers' applied versions on top). An [`ExpiringMap`] forgets what was not
//! written for a while, so what it holds follows the rate of streams, not their history. The
//! event store's repositories (the streams they loaded lately) and request claims use one too,
//! and activation keeps its issued batches in one (by the batch's stream id): the batches in
//! use, not every batch a brand ever issued.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A map from stream id to `V` that forgets entries not written for `keep_for`.
///
/// Forgetting is a sweep every half `keep_for` (on a write; amortised O(1) per write): an
/// entry lives from `keep_for` to one and a half times that after its last write. An entry
/// `pinned` (say, a publication still on its way) stays whatever its age. `limit` bounds a
/// burst: reaching it sweeps every unpinned entry at once.
pub struct ExpiringMap<V> {
    entries: HashMap<String, (V, Instant)>,
    keep_for: Duration,
    limit: usize,
    pinned: fn(&V) -> bool,
    next_sweep: Option<Instant>,
}

impl<V> ExpiringMap<V> {
    pub fn new(keep_for: Duration, limit: usize) -> Self {
        Self {
            entries: HashMap::new(),
            keep_for,
            limit,
            pinned: |_| false,
            next_sweep: None,
        }
    }

    /// Entries for which `pinned` holds are never forgotten.
    pub fn pinning(self, pinned: fn(&V) -> bool) -> Self {
        Self { pinned, ..self }
    }

    pub fn get(&self, stream_id: &str) -> Option<&V> {
        self.entries.get(stream_id).map(|(value, _)| value)
    }

    /// Remembers `value` for `stream_id` as written at `now`; returns what it replaces.
    pub fn insert(&mut self, stream_id: &str, value: V, now: Instant) -> Option<V> {
        self.sweep_if_due(now);
        match self.entries.get_mut(stream_id) {
            Some(entry) => Some(std::mem::replace(entry, (value, now)).0),
            None => {
                self.entries.insert(stream_id.to_owned(), (value, now));
                None
            }
        }
    }

    /// Forgets `stream_id`'s entry.
    pub fn remove(&mut self, stream_id: &str) -> Option<V> {
        self.entries.remove(stream_id).map(|(value, _)| value)
    }

    /// Forgets everything (a consumer whose partitions were reassigned).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn sweep_if_due(&mut self, now: Instant) {
        let next_sweep = *self.next_sweep.get_or_insert(now + self.keep_for / 2);
        let pinned = self.pinned;
        if now >= next_sweep {
            let keep_for = self.keep_for;
            self.entries.retain(|_, (value, written)| {
                pinned(value) || now.saturating_duration_since(*written) < keep_for
            });
            self.next_sweep = Some(now + keep_for / 2);
        }
        if self.entries.len() >= self.limit {
            self.entries.retain(|_, (value, _)| pinned(value));
        }
        // A map keeps its capacity when entries go; give back what a burst left behind.
        if self.entries.capacity() > 4 * self.entries.len().max(1024) {
            self.entries.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn an_entry_is_forgotten_after_it_was_not_written_for_the_window() {
        let start = Instant::now();
        let mut map = ExpiringMap::new(2 * MINUTE, 1_000);
        map.insert("old", 1, start);
        map.insert("rewritten", 1, start);
        map.insert("rewritten", 2, start + 90 * Duration::from_secs(1));
        // The sweep at 2.5 minutes: "old" was written 2.5 minutes ago, "rewritten" one.
        map.insert("new", 3, start + 150 * Duration::from_secs(1));
        assert_eq!(map.get("old"), None);
        assert_eq!(map.get("rewritten"), Some(&2));
        assert_eq!(map.get("new"), Some(&3));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn an_entry_stays_until_a_sweep_is_due() {
        let start = Instant::now();
        let mut map = ExpiringMap::new(2 * MINUTE, 1_000);
        map.insert("a", 1, start);
        // The first sweep is due a minute after the first write; at 59 s nothing is swept.
        map.insert("b", 2, start + Duration::from_secs(59));
        assert_eq!(map.get("a"), Some(&1));
        // At 61 s the sweep runs, but "a" is younger than the window.
        map.insert("c", 3, start + Duration::from_secs(61));
        assert_eq!(map.get("a"), Some(&1));
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn a_pinned_entry_stays_whatever_its_age() {
        let start = Instant::now();
        let mut map = ExpiringMap::new(MINUTE, 1_000).pinning(|value: &i32| *value < 0);
        map.insert("in-flight", -1, start);
        map.insert("done", 1, start);
        map.insert("later", 2, start + 10 * MINUTE);
        assert_eq!(map.get("in-flight"), Some(&-1));
        assert_eq!(map.get("done"), None);
    }

    #[test]
    fn reaching_the_limit_forgets_every_unpinned_entry() {
        let start = Instant::now();
        let mut map = ExpiringMap::new(10 * MINUTE, 3).pinning(|value: &i32| *value < 0);
        map.insert("a", 1, start);
        map.insert("b", -2, start);
        map.insert("c", 3, start);
        assert_eq!(map.len(), 3);
        map.insert("d", 4, start);
        assert_eq!(map.get("a"), None);
        assert_eq!(map.get("c"), None);
        assert_eq!(map.get("b"), Some(&-2));
        assert_eq!(map.get("d"), Some(&4));
    }

    #[test]
    fn inserting_returns_the_replaced_value() {
        let start = Instant::now();
        let mut map = ExpiringMap::new(MINUTE, 10);
        assert_eq!(map.insert("s", 1, start), None);
        assert_eq!(map.insert("s", 2, start), Some(1));
        map.clear();
        assert!(map.is_empty());
    }
}
