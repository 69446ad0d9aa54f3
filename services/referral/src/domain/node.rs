//! A member's place in the referral tree: the parent, set once and never changed. Level 2 is the
//! parent's parent; nothing deeper ever pays.

use scanloop_eventstore::Aggregate;
use scanloop_proto::referral::v1 as pb;

use super::{ReferralEvent, Rejection};

pub fn stream_id(brand_id: &str, member_id: &str) -> String {
    format!("node-{brand_id}-{member_id}")
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Node {
    pub parent: Option<String>,
}

impl Aggregate for Node {
    type Event = ReferralEvent;
    fn apply(&mut self, event: &ReferralEvent) {
        if let ReferralEvent::ParentSet(e) = event {
            self.parent = Some(e.parent_member_id.clone());
        }
    }
}

/// Binds `parent` as `member`'s parent unless one is already bound (then nothing: no rebinding).
pub fn bind_parent(
    state: &Node,
    member: &str,
    parent: &str,
    attribution_id: &str,
) -> Result<Vec<ReferralEvent>, Rejection> {
    if member == parent {
        return Err(Rejection::Invalid(
            "a member cannot be their own parent".into(),
        ));
    }
    if state.parent.is_some() {
        return Ok(vec![]);
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
        let events = bind_parent(&node, "b", "a", "x1").unwrap();
        assert_eq!(events.len(), 1);
        events.iter().for_each(|e| node.apply(e));
        assert_eq!(node.parent.as_deref(), Some("a"));
        assert!(bind_parent(&node, "b", "c", "x2").unwrap().is_empty());
        assert_eq!(node.parent.as_deref(), Some("a"));
        assert!(bind_parent(&Node::default(), "b", "b", "x3").is_err());
    }
}
