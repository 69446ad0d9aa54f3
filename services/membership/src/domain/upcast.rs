//! Upcasters: older schema versions of membership events, read as today's messages.
//!
//! Version 1 of `PointsEarned` and `PointsExpired` named points lots by the caller's request id.
//! Request ids left the public contract in version 2 (they stay inside the event store), and lots
//! are named by `lot_id`, derived from the member and that request id. The version-1 shapes are
//! frozen here, so events written by version 1 (in the event store and on the topic, which keeps
//! them forever) still decode, with the same lot ids a version-2 writer would have given them.

use prost::Message as _;
use scanloop_proto::membership::v1 as pb;

use super::member::lot_id;

/// `PointsEarned` as schema version 1 wrote it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PointsEarnedV1 {
    #[prost(string, tag = "1")]
    pub member_id: String,
    #[prost(int64, tag = "2")]
    pub points: i64,
    #[prost(string, tag = "3")]
    pub reason: String,
    #[prost(string, tag = "4")]
    pub request_id: String,
    #[prost(message, optional, tag = "5")]
    pub expires_at: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "6")]
    pub earned_at: Option<prost_types::Timestamp>,
}

/// `PointsExpired` as schema version 1 wrote it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PointsExpiredV1 {
    #[prost(string, tag = "1")]
    pub member_id: String,
    #[prost(int64, tag = "2")]
    pub points: i64,
    #[prost(string, repeated, tag = "3")]
    pub earned_request_ids: Vec<String>,
}

pub fn points_earned(from: u32, payload: &[u8]) -> Result<pb::PointsEarned, String> {
    if from != 1 {
        return Err(format!("unknown schema version {from}"));
    }
    let v1 = PointsEarnedV1::decode(payload).map_err(|e| e.to_string())?;
    Ok(pb::PointsEarned {
        lot_id: lot_id(&v1.member_id, &v1.request_id),
        member_id: v1.member_id,
        points: v1.points,
        reason: v1.reason,
        expires_at: v1.expires_at,
        earned_at: v1.earned_at,
    })
}

pub fn points_expired(from: u32, payload: &[u8]) -> Result<pb::PointsExpired, String> {
    if from != 1 {
        return Err(format!("unknown schema version {from}"));
    }
    let v1 = PointsExpiredV1::decode(payload).map_err(|e| e.to_string())?;
    Ok(pb::PointsExpired {
        lot_ids: v1
            .earned_request_ids
            .iter()
            .map(|request_id| lot_id(&v1.member_id, request_id))
            .collect(),
        member_id: v1.member_id,
        points: v1.points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MembershipEvent;
    use scanloop_eventstore::DomainEvent as _;

    const EARNED: &str = "scanloop.membership.v1.PointsEarned";
    const EXPIRED: &str = "scanloop.membership.v1.PointsExpired";

    #[test]
    fn a_version_1_points_event_reads_as_version_2_with_its_lot_id() {
        let v1 = PointsEarnedV1 {
            member_id: "m1".into(),
            points: 100,
            reason: "warranty activation".into(),
            request_id: "a2".into(),
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            earned_at: None,
        };
        let decoded = MembershipEvent::decode(EARNED, 1, &v1.encode_to_vec()).unwrap();
        let MembershipEvent::PointsEarned(earned) = decoded else {
            panic!("expected PointsEarned, got {decoded:?}");
        };
        // The lot id a version-2 writer derives for member m1 and request a2.
        assert_eq!(earned.lot_id, "630d15c7-2ebb-57f7-a491-3ec27861900f");
        assert_eq!(earned.points, 100);
        assert_eq!(earned.expires_at.map(|t| t.seconds), Some(1_800_000_000));

        let expired = PointsExpiredV1 {
            member_id: "m1".into(),
            points: 100,
            earned_request_ids: vec!["a2".into()],
        };
        let decoded = MembershipEvent::decode(EXPIRED, 1, &expired.encode_to_vec()).unwrap();
        let MembershipEvent::PointsExpired(expired) = decoded else {
            panic!("expected PointsExpired, got {decoded:?}");
        };
        assert_eq!(expired.lot_ids, vec![earned.lot_id]);
    }

    #[test]
    fn events_are_written_at_version_2_and_a_newer_version_is_refused() {
        let event = MembershipEvent::PointsEarned(pb::PointsEarned {
            member_id: "m1".into(),
            lot_id: "l".into(),
            ..Default::default()
        });
        assert_eq!(event.schema_version(), 2);
        assert_eq!(
            MembershipEvent::decode(EARNED, 2, &event.encode()).unwrap(),
            event
        );
        let error = MembershipEvent::decode(EARNED, 3, &event.encode()).unwrap_err();
        assert!(error.contains("upgrade this consumer"), "{error}");
    }
}
