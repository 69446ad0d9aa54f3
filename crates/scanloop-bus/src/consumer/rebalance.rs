//! Following the group's partition assignments (librdkafka's rebalance callbacks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

use super::progress::Progress;
use super::{commit, lock};

/// Follows partition assignments: a revocation ends the partition's claim (its queued work is
/// abandoned) and commits what finished before the partition leaves; an assignment opens a new
/// claim and has cached checkpoints re-read (another member may have advanced them meanwhile).
///
/// librdkafka calls this from inside `recv`, on the runner's own task, so it must not wait for
/// lanes: a handler call already running finishes on its own and its checkpoint write is
/// forward-only, so it cannot undo the new owner's progress.
pub(super) struct RebalanceContext {
    pub(super) progress: Arc<Mutex<Progress>>,
    pub(super) assigned: Arc<AtomicBool>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        let mut finished = Vec::new();
        {
            let mut progress = lock(&self.progress);
            for element in partitions.elements() {
                let partition = (element.topic().to_owned(), element.partition());
                if let Some(offset) = progress.revoke(&partition) {
                    finished.push((partition, offset));
                }
            }
        }
        tracing::info!(
            partitions = partitions.count(),
            "partitions revoked; committing what finished"
        );
        if !finished.is_empty() {
            commit(consumer, &finished);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = partitions.count(), "partitions assigned");
                let mut progress = lock(&self.progress);
                for element in partitions.elements() {
                    progress.assign((element.topic().to_owned(), element.partition()));
                }
                self.assigned.store(true, Ordering::Release);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}
