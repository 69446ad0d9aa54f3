//! Lanes: each stream's records handled one after the other, in partition order, while the
//! streams run concurrently, so a stream that waits (retrying, or a slow handler) holds back
//! only itself. A lane is a task with a queue, started for a stream's first record and dropped
//! once every record sent to it was reported back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::progress::Claim;
use super::{EventHandler, Shared, lock};

/// One record handed to a lane, with the claim on its partition it was taken under.
struct Work {
    message: OwnedMessage,
    claim: Arc<Claim>,
}

/// A stream's lane as the runner sees it.
struct Lane {
    queue: mpsc::UnboundedSender<Work>,
    /// Records sent to the lane and not yet reported back: the lane is dropped at zero.
    outstanding: usize,
}

/// The runner's lanes by stream (record key), and the tasks that run them.
pub(super) struct Lanes<H> {
    shared: Arc<Shared<H>>,
    lanes: HashMap<Vec<u8>, Lane>,
    tasks: JoinSet<()>,
    /// Where each lane reports the key of every record it is done with.
    done: mpsc::UnboundedSender<Vec<u8>>,
}

impl<H: EventHandler> Lanes<H> {
    /// No lanes yet; the receiver gets the lanes' reports, for [`Lanes::reported`].
    pub(super) fn new(shared: Arc<Shared<H>>) -> (Self, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (done, reports) = mpsc::unbounded_channel::<Vec<u8>>();
        let lanes = Self {
            shared,
            lanes: HashMap::new(),
            tasks: JoinSet::new(),
            done,
        };
        (lanes, reports)
    }

    /// Hands a record, taken under `claim`, to its stream's lane, starting the lane if needed.
    pub(super) fn send(&mut self, message: OwnedMessage, claim: Arc<Claim>) {
        // Unkeyed records (not from the event store) each get a lane of their own partition.
        let key = message.key().map_or_else(
            || format!("\0unkeyed/{}/{}", message.topic(), message.partition()).into_bytes(),
            <[u8]>::to_vec,
        );
        let mut work = Work { message, claim };
        loop {
            let lane = self.lanes.entry(key.clone()).or_insert_with(|| {
                let (queue, receiver) = mpsc::unbounded_channel();
                self.tasks.spawn(run_lane(
                    self.shared.clone(),
                    key.clone(),
                    receiver,
                    self.done.clone(),
                ));
                Lane {
                    queue,
                    outstanding: 0,
                }
            });
            match lane.queue.send(work) {
                Ok(()) => {
                    lane.outstanding += 1;
                    return;
                }
                // The lane's task ended (it only does so when a handler panicked through
                // everything); start a new one for this record.
                Err(mpsc::error::SendError(returned)) => {
                    work = returned;
                    self.lanes.remove(&key);
                }
            }
        }
    }

    /// A lane is done with one of its records (`key` is its stream's): the lane is dropped
    /// when it has none left.
    pub(super) fn reported(&mut self, key: Vec<u8>) {
        if let Some(lane) = self.lanes.get_mut(&key) {
            lane.outstanding = lane.outstanding.saturating_sub(1);
            if lane.outstanding == 0 {
                self.lanes.remove(&key);
            }
        }
    }

    /// Whether lane tasks are running or ended and not yet collected.
    pub(super) fn has_tasks(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// Collects the next lane task to end (a dropped lane's).
    pub(super) async fn collect_ended(&mut self) -> Option<()> {
        self.tasks.join_next().await.map(|_| ())
    }

    /// Drops every lane and waits up to `grace` for their tasks; false if some still run then.
    /// Lanes skip what they have queued once shutdown is cancelled; dropping their senders ends
    /// them after the record they are on.
    pub(super) async fn stop(mut self, grace: Duration) -> bool {
        self.lanes.clear();
        tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok()
    }
}

/// A stream's lane: handles its records in order until the runner drops it.
async fn run_lane<H: EventHandler>(
    shared: Arc<Shared<H>>,
    key: Vec<u8>,
    mut queue: mpsc::UnboundedReceiver<Work>,
    done: mpsc::UnboundedSender<Vec<u8>>,
) {
    while let Some(work) = queue.recv().await {
        let finished = if work.claim.is_revoked() || shared.shutdown.is_cancelled() {
            false
        } else {
            shared.process_one(&work.message).await
        };
        if finished {
            let partition = (work.message.topic().to_owned(), work.message.partition());
            lock(&shared.progress).finish(&partition, &work.claim, work.message.offset());
        } else {
            shared.stats.abandoned.fetch_add(1, Ordering::Relaxed);
            shared.count("abandoned");
        }
        if done.send(key.clone()).is_err() {
            return;
        }
    }
}
