//! Rows this process knows it wrote, in a table whose rows are never deleted (an index of
//! buckets, a registry of accounts): a row known written needs no second write.

use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The keys of rows written through [`WrittenOnce::write_once`]. Bounded: past `limit` keys it
/// starts over, and a forgotten key costs its row one repeated (idempotent) write.
#[derive(Debug)]
pub struct WrittenOnce<K> {
    keys: Mutex<HashSet<K>>,
    limit: usize,
}

impl<K: Eq + Hash> WrittenOnce<K> {
    pub fn new(limit: usize) -> Self {
        Self {
            keys: Mutex::new(HashSet::new()),
            limit,
        }
    }

    /// Runs `write` unless the row of `key` is known written; remembers it once `write`
    /// succeeded (a failed write is tried again next time).
    pub async fn write_once<E>(
        &self,
        key: K,
        write: impl Future<Output = Result<(), E>>,
    ) -> Result<(), E> {
        if self.keys().contains(&key) {
            return Ok(());
        }
        write.await?;
        let mut keys = self.keys();
        if keys.len() >= self.limit {
            keys.clear();
        }
        keys.insert(key);
        Ok(())
    }

    /// A poisoned lock only means a thread panicked while holding it; each update is one
    /// insert or a clear.
    fn keys(&self) -> MutexGuard<'_, HashSet<K>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_row_is_written_once_a_failed_write_again_and_past_the_limit_anew() {
        let written = WrittenOnce::new(2);
        let writes = std::sync::atomic::AtomicU32::new(0);
        // Counts the writes that run, not the futures made.
        let write = |ok: bool| {
            let writes = &writes;
            async move {
                writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if ok { Ok(()) } else { Err("refused") }
            }
        };
        assert_eq!(written.write_once("a", write(false)).await, Err("refused"));
        assert_eq!(written.write_once("a", write(true)).await, Ok(()));
        assert_eq!(written.write_once("a", write(true)).await, Ok(()));
        assert_eq!(writes.load(std::sync::atomic::Ordering::Relaxed), 2);
        // A third key starts the memory over: "a" is written again.
        written.write_once("b", write(true)).await.unwrap();
        written.write_once("c", write(true)).await.unwrap();
        written.write_once("a", write(true)).await.unwrap();
        assert_eq!(writes.load(std::sync::atomic::Ordering::Relaxed), 5);
    }
}
