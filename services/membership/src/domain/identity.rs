//! Identity claims: an identity (keyed phone hash, WeChat unionid) belongs to exactly one member.
//! Each identity has its own stream; the claim is its first event, so two members racing for one
//! identity are settled by the event store's conditional append.

use scanloop_eventstore::Aggregate;
use scanloop_proto::common::v1::StoredIdentity;
use scanloop_proto::membership::v1 as pb;
use uuid::Uuid;

use super::{MembershipEvent, Rejection};

/// Member ids derived from a member's first identity: two concurrent first activations by one
/// new buyer derive the same member.
const MEMBER_NAMESPACE: Uuid = Uuid::from_u128(0x5ca7_100b_3e3b_4e55_9d1e_0000_0000_0002);

pub fn stream_id(brand_id: &str, key: &str) -> String {
    format!("identity-{brand_id}-{key}")
}

pub fn derived_member_id(brand_id: &str, key: &str) -> Uuid {
    Uuid::new_v5(&MEMBER_NAMESPACE, format!("{brand_id}\0{key}").as_bytes())
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Claim {
    pub member_id: Option<String>,
}

impl Aggregate for Claim {
    type Event = MembershipEvent;
    fn apply(&mut self, event: &MembershipEvent) {
        if let MembershipEvent::IdentityClaimed(claimed) = event {
            self.member_id = Some(claimed.member_id.clone());
        }
    }
}

/// Claims the identity for `member_id`; nothing to do if it is already this member's; refused
/// if it is another member's.
pub fn claim(
    state: &Claim,
    member_id: &str,
    identity: &StoredIdentity,
) -> Result<Vec<MembershipEvent>, Rejection> {
    match &state.member_id {
        None => Ok(vec![MembershipEvent::IdentityClaimed(
            pb::IdentityClaimed {
                member_id: member_id.to_owned(),
                identity: Some(identity.clone()),
            },
        )]),
        Some(owner) if owner == member_id => Ok(vec![]),
        Some(owner) => Err(Rejection::AlreadyExists(format!(
            "this identity already belongs to member {owner}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanloop_pii::identity_key;
    use scanloop_proto::common::v1::stored_identity::Kind;

    fn unionid() -> StoredIdentity {
        StoredIdentity {
            kind: Some(Kind::WechatUnionid("oU123".into())),
        }
    }

    #[test]
    fn an_identity_is_claimed_once_and_only_by_one_member() {
        let mut claim_state = Claim::default();
        let events = claim(&claim_state, "m1", &unionid()).unwrap();
        claim_state.apply(&events[0]);
        assert_eq!(claim(&claim_state, "m1", &unionid()), Ok(vec![]));
        assert!(
            matches!(claim(&claim_state, "m2", &unionid()), Err(Rejection::AlreadyExists(m)) if m.contains("m1"))
        );
    }

    #[test]
    fn member_ids_derive_from_brand_and_identity() {
        let key = identity_key(&unionid()).unwrap();
        assert_eq!(key, "wechat_unionid:oU123");
        // Fixed values: a change of namespace or input would re-key every member.
        assert_eq!(
            derived_member_id("acme", &key).to_string(),
            "995694f9-5a2a-58f5-a328-030988d3b531"
        );
        assert_eq!(
            derived_member_id("globex", &key).to_string(),
            "9e03559d-391b-5785-aea4-1fe5447cf0d7"
        );
    }
}
