//! A member's place in the referral tree: the parent, set once and never changed. Level 2 is the
//! parent's parent; nothing deeper ever pays.
//!
//! The tree is a forest at every instant. Binding member C under parent P (see
//! `crate::forest`) walks P's ancestry to its root R, refuses if that reaches C (P descends from
//! C: a cycle), then claims R ([`claim_root`], `RootClaimed` on R's stream: refused if R has
//! gained a parent) and only then sets C's parent ([`bind_parent`], refused if C's stream saw a
//! claim since the walk). Any binding that would close a cycle together with a concurrent one
//! writes to a stream the other read, so one of the two conditional appends fails and retries
//! with a fresh walk, which then sees the cycle.

use scanloop_eventstore::Aggregate;
use scanloop_proto::referral::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{ReferralEvent, Rejection};

pub fn stream_id(brand_id: &str, member_id: &str) -> String {
    format!("node-{brand_id}-{member_id}")
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub parent: Option<String>,
    /// Claims on this member as the root of a tree someone is joining: a binding that walked
    /// through this node compares the count it saw with the count when it binds.
    pub claims: u64,
}

impl Aggregate for Node {
    type Event = ReferralEvent;
    fn apply(&mut self, event: &ReferralEvent) {
        match event {
            ReferralEvent::ParentSet(e) => self.parent = Some(e.parent_member_id.clone()),
            ReferralEvent::RootClaimed(_) => self.claims += 1,
            _ => {}
        }
    }

    // A big tree's root gets a claim per member joining it: its state comes from a snapshot.
    const SNAPSHOT_EVERY: u64 = 64;
    const SNAPSHOT_TYPE: &'static str = "scanloop.referral.Node.v1";

    fn to_snapshot(&self) -> Vec<u8> {
        scanloop_eventstore::snapshot_json(self)
    }

    fn from_snapshot(bytes: &[u8]) -> Option<Self> {
        scanloop_eventstore::from_snapshot_json(bytes)
    }
}

/// Why a binding step must start over with a fresh walk (never shown to a caller: the binding
/// retries).
pub const MOVED: &str = "the tree changed during the binding; walk again";

/// Claims `root` (this stream's member) for `member` joining its tree under `parent`. Refused
/// when the root has gained a parent since the walk: the walk is then stale.
pub fn claim_root(
    state: &Node,
    root: &str,
    member: &str,
    parent: &str,
) -> Result<Vec<ReferralEvent>, Rejection> {
    if state.parent.is_some() {
        return Err(Rejection::FailedPrecondition(MOVED.into()));
    }
    Ok(vec![ReferralEvent::RootClaimed(pb::RootClaimed {
        root_member_id: root.to_owned(),
        member_id: member.to_owned(),
        parent_member_id: parent.to_owned(),
    })])
}

/// Binds `parent` as `member`'s parent unless one is already bound (then nothing: no
/// rebinding). `claims_seen` is the member's claim count when the walk began: a claim since then
/// means another binding may be joining this member's tree, so the walk is stale.
pub fn bind_parent(
    state: &Node,
    member: &str,
    parent: &str,
    attribution_id: &str,
    claims_seen: u64,
) -> Result<Vec<ReferralEvent>, Rejection> {
    if member == parent {
        return Err(Rejection::Invalid(
            "a member cannot be their own parent".into(),
        ));
    }
    if state.parent.is_some() {
        return Ok(vec![]);
    }
    if state.claims != claims_seen {
        return Err(Rejection::FailedPrecondition(MOVED.into()));
    }
    Ok(vec![ReferralEvent::ParentSet(pb::ParentSet {
        member_id: member.to_owned(),
        parent_member_id: parent.to_owned(),
        attribution_id: attribution_id.to_owned(),
    })])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_is_bound_once_and_never_rebound() {
        let mut node = Node::default();
        let events = bind_parent(&node, "b", "a", "x1", 0).unwrap();
        assert_eq!(events.len(), 1);
        events.iter().for_each(|e| node.apply(e));
        assert_eq!(node.parent.as_deref(), Some("a"));
        assert!(bind_parent(&node, "b", "c", "x2", 0).unwrap().is_empty());
        assert_eq!(node.parent.as_deref(), Some("a"));
        assert!(bind_parent(&Node::default(), "b", "b", "x3", 0).is_err());
    }

    #[test]
    fn a_claim_since_the_walk_or_a_parent_on_the_root_makes_the_walk_stale() {
        let mut root = Node::default();
        claim_root(&root, "r", "c", "p")
            .unwrap()
            .iter()
            .for_each(|e| root.apply(e));
        assert_eq!(root.claims, 1);
        assert_eq!(
            bind_parent(&root, "r", "q", "x1", 0),
            Err(Rejection::FailedPrecondition(MOVED.into()))
        );
        assert_eq!(bind_parent(&root, "r", "q", "x1", 1).unwrap().len(), 1);
        let bound = Node {
            parent: Some("q".into()),
            claims: 1,
        };
        assert_eq!(
            claim_root(&bound, "r", "c", "p"),
            Err(Rejection::FailedPrecondition(MOVED.into()))
        );
    }

    #[test]
    fn the_snapshot_keeps_parent_and_claims() {
        let node = Node {
            parent: Some("a".into()),
            claims: 7,
        };
        assert_eq!(Node::from_snapshot(&node.to_snapshot()), Some(node));
    }
}
