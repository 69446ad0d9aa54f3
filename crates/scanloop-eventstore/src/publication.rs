//! Publications in the background, chained per stream.
//!
//! An append's events go to Kafka after the command is acknowledged. Within one process a
//! stream's publications form a chain: each waits for the previous one's acknowledgement and
//! starts after what it published. So a stream never has two ranges in flight from one
//! process, a range that failed is never overtaken by a later one that succeeds (consumers
//! would take the later version and drop the earlier as a duplicate), and an append whose
//! events a previous range already carried publishes nothing twice.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use scanloop_bus::ExpiringMap;
use tokio::sync::watch;

/// How long a stream's finished publication is remembered after its append: long enough that
/// the stream's next command, usually seconds later, notes how far it is published (one
/// forgotten means that command's publication repeats the previous range, which consumers
/// drop as duplicates); short enough that memory follows the rate of streams written, not
/// their number. A publication on its way is remembered until it ends: its successors wait.
const REMEMBERED_FOR: Duration = Duration::from_secs(120);

/// Finished publications remembered at most (a burst of new streams).
const REMEMBERED_STREAMS: usize = 65_536;

/// One append's way to Kafka: resolves to whether its events (and any earlier unpublished ones
/// of the stream) were acknowledged by the brokers. If not, the marker stays and the sweeper
/// publishes them later.
#[derive(Clone)]
pub struct Publication {
    /// The stream version the publication reaches when it succeeds.
    through: u64,
    outcome: watch::Receiver<Option<bool>>,
}

impl std::fmt::Debug for Publication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publication")
            .field("through", &self.through)
            .field("outcome", &*self.outcome.borrow())
            .finish()
    }
}

impl Publication {
    /// Waits for the outcome: true when the brokers acknowledged the events.
    pub async fn published(&self) -> bool {
        let mut outcome = self.outcome.clone();
        match outcome.wait_for(Option::is_some).await {
            Ok(seen) => (*seen).unwrap_or(false),
            // The publishing task ended without an answer: nothing is known to be out.
            Err(_) => false,
        }
    }

    /// How far the stream is published once this publication is done, or None if it failed.
    pub(crate) async fn reached(&self) -> Option<u64> {
        self.published().await.then_some(self.through)
    }

    fn resolved(&self) -> bool {
        self.outcome.borrow().is_some()
    }
}

/// The publishing side of a [`Publication`].
pub(crate) struct Done(watch::Sender<Option<bool>>);

impl Done {
    pub(crate) fn finish(self, published: bool) {
        self.0.send_replace(Some(published));
    }
}

/// A new publication and the one it must wait for.
pub(crate) struct Link {
    pub(crate) previous: Option<Publication>,
    pub(crate) publication: Publication,
}

/// Each stream's latest publication in this process, for streams appended to lately.
pub(crate) struct Chains {
    latest: Mutex<ExpiringMap<Publication>>,
}

impl Default for Chains {
    fn default() -> Self {
        let latest = ExpiringMap::new(REMEMBERED_FOR, REMEMBERED_STREAMS)
            .pinning(|publication: &Publication| !publication.resolved());
        Self {
            latest: Mutex::new(latest),
        }
    }
}

impl Chains {
    /// Makes a publication of `stream_id` through version `through` the stream's latest and
    /// returns it with the one it follows.
    pub(crate) fn link(&self, stream_id: &str, through: u64) -> (Link, Done) {
        let (sender, outcome) = watch::channel(None);
        let publication = Publication { through, outcome };
        let mut latest = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = latest.insert(stream_id, publication.clone(), Instant::now());
        (
            Link {
                previous,
                publication,
            },
            Done(sender),
        )
    }

    /// How far this process has published `stream_id`, if its latest publication of it is
    /// done and succeeded (one on its way, or failed, says nothing yet).
    pub(crate) fn published_through(&self, stream_id: &str) -> Option<u64> {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let publication = latest.get(stream_id)?;
        (*publication.outcome.borrow() == Some(true)).then_some(publication.through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_publication_follows_the_streams_previous_one_and_learns_how_it_ended() {
        let chains = Chains::default();
        let (first, first_done) = chains.link("s", 1);
        assert!(first.previous.is_none());
        let (second, second_done) = chains.link("s", 3);
        let (other, _) = chains.link("t", 1);
        assert!(
            other.previous.is_none(),
            "streams do not wait for each other"
        );
        let previous = second.previous.expect("the second follows the first");
        first_done.finish(true);
        assert_eq!(previous.reached().await, Some(1));
        assert_eq!(
            chains.published_through("s"),
            None,
            "the second is on its way"
        );
        second_done.finish(false);
        assert!(!second.publication.published().await);
        assert_eq!(second.publication.reached().await, None);
        assert_eq!(chains.published_through("s"), None, "the second failed");
        let (third, third_done) = chains.link("s", 4);
        third_done.finish(true);
        assert!(third.publication.published().await);
        assert_eq!(chains.published_through("s"), Some(4));
        assert_eq!(chains.published_through("unknown"), None);
    }

    #[tokio::test]
    async fn a_publication_whose_task_ended_without_an_answer_is_not_published() {
        let chains = Chains::default();
        let (link, done) = chains.link("s", 1);
        drop(done);
        assert!(!link.publication.published().await);
    }
}
