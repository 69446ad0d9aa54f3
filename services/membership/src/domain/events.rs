//! The membership service's events: the protobuf messages of `scanloop.membership.v1` (the
//! public contract on `scanloop.membership.events.v1`).

use scanloop_proto::membership::v1 as pb;

scanloop_eventstore::domain_events!(MembershipEvent {
    IdentityClaimed => "scanloop.membership.v1.IdentityClaimed",
    MemberRegistered => "scanloop.membership.v1.MemberRegistered",
    IdentityLinked => "scanloop.membership.v1.IdentityLinked",
    DeviceBound => "scanloop.membership.v1.DeviceBound",
    PointsEarned => "scanloop.membership.v1.PointsEarned" @ v 2, upcast super::upcast::points_earned,
    PointsRedeemed => "scanloop.membership.v1.PointsRedeemed",
    PointsExpired => "scanloop.membership.v1.PointsExpired" @ v 2, upcast super::upcast::points_expired,
    EngagementRecorded => "scanloop.membership.v1.EngagementRecorded",
    KocQualified => "scanloop.membership.v1.KocQualified",
    KocLapsed => "scanloop.membership.v1.KocLapsed",
    TierChanged => "scanloop.membership.v1.TierChanged",
});

#[cfg(test)]
mod tests {
    use super::*;
    use scanloop_eventstore::DomainEvent as _;

    #[test]
    fn events_round_trip() {
        let event = MembershipEvent::KocLapsed(pb::KocLapsed {
            member_id: "m".into(),
            scans: 1,
            shares: 0,
            comments: 2,
        });
        assert_eq!(
            MembershipEvent::decode(event.event_type(), 1, &event.encode()).unwrap(),
            event
        );
        assert!(
            MembershipEvent::decode("scanloop.activation.v1.WarrantyActivated", 1, &[]).is_err()
        );
    }
}
