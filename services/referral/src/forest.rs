//! Binding a member's parent so that the referral tree stays a forest, whatever order and
//! concurrency bindings arrive in: every path that binds (an attribution, a review's approval)
//! goes through [`bind`]. The decisions are the node aggregate's (`domain::node`); this is the
//! walk and the two conditional appends around them, written against [`Nodes`] so a test can
//! interleave many bindings step by step. The service binds through the node streams in the
//! event store (`node_streams`).

use std::future::Future;

use scanloop_eventstore::ExecuteError;
use scanloop_service::ServiceError;

use crate::domain::Rejection;
use crate::domain::node::{self, Node};

/// A walk longer than this is refused rather than followed (a referral chain this deep is not a
/// tree any brand runs; the limit keeps a binding's reads bounded).
pub const MAX_DEPTH: usize = 10_000;
/// Fresh walks a binding makes before giving up to the caller (who retries).
const MAX_ATTEMPTS: usize = 20;

/// The node streams, as a binding reads and appends to them.
pub trait Nodes: Sync {
    /// A member's node, as stored now or a moment ago. A binding may decide on a node behind
    /// its stream: a parent, once bound, never changes, and what may have changed (a root bound
    /// since, a member's claims) is checked by the conditional appends of [`bind`], whose
    /// refusals an implementation must answer from the stored node next time.
    fn node(&self, member: &str) -> impl Future<Output = Result<Node, ServiceError>> + Send;

    /// A member's parent. A parent once bound never changes, so an implementation may answer
    /// a bound one from memory; an unbound one is read as [`Nodes::node`] reads.
    fn parent(
        &self,
        member: &str,
    ) -> impl Future<Output = Result<Option<String>, ServiceError>> + Send {
        async move { Ok(self.node(member).await?.parent) }
    }

    /// Runs `decide` against a member's node and appends what it returns (conditionally: a
    /// concurrent append makes it decide again on the fresh node). Returns the node after.
    fn append<F>(
        &self,
        member: &str,
        decide: F,
    ) -> impl Future<Output = Result<Node, ExecuteError<Rejection>>> + Send
    where
        F: Fn(&Node) -> Result<Vec<crate::domain::ReferralEvent>, Rejection> + Send + Sync;
}

/// How a binding ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The member's parent is now the one asked for.
    Bound,
    /// The member already had a parent (set once, never rebound).
    AlreadyBound { parent: String },
    /// The parent descends from the member: binding would close a cycle. `path` runs from the
    /// parent up to the member.
    Cycle { path: Vec<String> },
}

/// Binds `parent` as `member`'s parent, unless the member has one or it would close a cycle.
pub async fn bind<N: Nodes>(
    nodes: &N,
    member: &str,
    parent: &str,
    attribution_id: &str,
) -> Result<Binding, ServiceError> {
    for _ in 0..MAX_ATTEMPTS {
        let own = nodes.node(member).await?;
        if let Some(bound) = own.parent {
            return Ok(Binding::AlreadyBound { parent: bound });
        }
        let claims_seen = own.claims;
        // The parent's ancestry up to its root.
        let mut path = vec![parent.to_owned()];
        loop {
            let current = path.last().cloned().unwrap_or_default();
            if current == member {
                return Ok(Binding::Cycle { path });
            }
            if path.len() > MAX_DEPTH {
                return Err(ServiceError::FailedPrecondition(format!(
                    "member {parent} has more than {MAX_DEPTH} ancestors: not bound"
                )));
            }
            match nodes.parent(&current).await? {
                // A cycle stored before the tree was kept a forest: never join it.
                Some(up) if path.contains(&up) => {
                    path.push(up);
                    return Ok(Binding::Cycle { path });
                }
                Some(up) => path.push(up),
                None => break,
            }
        }
        let root = path.last().cloned().unwrap_or_default();
        match nodes
            .append(&root, |n| node::claim_root(n, &root, member, parent))
            .await
        {
            Ok(_) => {}
            Err(ExecuteError::Rejected(Rejection::FailedPrecondition(_))) => continue,
            Err(other) => return Err(other.into()),
        }
        match nodes
            .append(member, |n| {
                node::bind_parent(n, member, parent, attribution_id, claims_seen)
            })
            .await
        {
            Ok(after) => {
                return Ok(match after.parent {
                    Some(bound) if bound == parent => Binding::Bound,
                    Some(bound) => Binding::AlreadyBound { parent: bound },
                    None => continue,
                });
            }
            Err(ExecuteError::Rejected(Rejection::FailedPrecondition(_))) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(ServiceError::Aborted(format!(
        "the referral tree kept changing around member {member}'s binding; retry"
    )))
}

/// Parents already bound, by node stream, as this process read or wrote them. A parent is bound
/// once and never changed, so a remembered one is true for ever, whichever process bound it;
/// a member without one is always read afresh. Bounded: past [`BoundParents::LIMIT`] members
/// it starts over.
#[derive(Default)]
pub struct BoundParents(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl BoundParents {
    pub const LIMIT: usize = 500_000;

    pub fn get(&self, stream: &str) -> Option<String> {
        self.lock().get(stream).cloned()
    }

    /// Remembers `stream`'s parent if it has one.
    pub fn learn(&self, stream: &str, parent: Option<&str>) {
        let Some(parent) = parent else { return };
        let mut known = self.lock();
        if known.len() >= Self::LIMIT {
            known.clear();
        }
        known.insert(stream.to_owned(), parent.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) mod node_streams;

#[cfg(test)]
mod tests;
