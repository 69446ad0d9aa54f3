//! Group commit: many concurrent small writes of one kind share one database request.
//!
//! Writers submit items; one background task takes whatever has queued up since its last flush
//! (up to `max_batch`) and hands it to the flush function, with at most `max_in_flight` flushes
//! running at once. With little load a flush holds one item and costs what the single write
//! did; under load the items of one flush share a request, and the database sees a few
//! batches instead of a write per item. Nobody waits on a timer: the batch is whatever arrived
//! while the previous flushes were in flight.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use scanloop_storage::DbError;
use tokio::sync::{Semaphore, mpsc, oneshot};

type Reply<R> = oneshot::Sender<Result<R, Arc<DbError>>>;

/// A handle on one group-commit task; cheap to clone. The task ends when every handle is gone
/// and its queue is drained.
pub(crate) struct GroupCommit<T, R> {
    queue: mpsc::UnboundedSender<(T, Reply<R>)>,
    name: &'static str,
    counts: Arc<Counts>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            name: self.name,
            counts: self.counts.clone(),
        }
    }
}

/// Items written and the writes they took, since the start.
#[derive(Default)]
struct Counts {
    items: AtomicU64,
    writes: AtomicU64,
}

/// How well a group commit shares its writes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sharing {
    pub items: u64,
    pub writes: u64,
}

impl Sharing {
    /// Items per database write (0 before the first).
    pub fn per_write(&self) -> f64 {
        self.items as f64 / self.writes.max(1) as f64
    }

    /// What happened between `earlier` and this.
    pub fn since(&self, earlier: &Sharing) -> Sharing {
        Sharing {
            items: self.items - earlier.items,
            writes: self.writes - earlier.writes,
        }
    }
}

impl<T: Send + 'static, R: Clone + Send + 'static> GroupCommit<T, R> {
    /// Starts the task. `flush` writes one batch and answers every item of it with the same
    /// `R` (e.g. where the batch was filed).
    pub(crate) fn spawn<F, Fut>(
        name: &'static str,
        max_batch: usize,
        max_in_flight: usize,
        flush: F,
    ) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, DbError>> + Send + 'static,
    {
        let (queue, mut pending) = mpsc::unbounded_channel::<(T, Reply<R>)>();
        let counts = Arc::new(Counts::default());
        let counted = counts.clone();
        let flush = Arc::new(flush);
        let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
        tokio::spawn(async move {
            loop {
                // The slot first: while every flush is busy, items gather for the next one.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = pending.recv().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match pending.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                counted.writes.fetch_add(1, Ordering::Relaxed);
                counted
                    .items
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let flush = flush.clone();
                tokio::spawn(async move {
                    let (items, replies): (Vec<T>, Vec<Reply<R>>) = batch.into_iter().unzip();
                    let size = items.len();
                    let outcome = flush(items).await.map_err(Arc::new);
                    if let Err(error) = &outcome {
                        tracing::warn!(what = name, size, %error, "group commit failed");
                    }
                    for reply in replies {
                        let _ = reply.send(outcome.clone());
                    }
                    drop(slot);
                });
            }
        });
        Self {
            queue,
            name,
            counts,
        }
    }

    pub(crate) fn sharing(&self) -> Sharing {
        Sharing {
            items: self.counts.items.load(Ordering::Relaxed),
            writes: self.counts.writes.load(Ordering::Relaxed),
        }
    }

    /// Submits `item` and waits until the flush that took it has been written.
    pub(crate) async fn submit(&self, item: T) -> Result<R, DbError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((item, reply)).map_err(|_| self.stopped())?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(DbError::msg(format!("{}: {error}", self.name))),
            Err(_) => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> DbError {
        DbError::msg(format!("{}: group commit stopped", self.name))
    }
}
