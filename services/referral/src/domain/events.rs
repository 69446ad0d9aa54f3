//! The referral service's events: the protobuf messages of `scanloop.referral.v1` (the public
//! contract on `scanloop.referral.events.v1`).

use scanloop_proto::referral::v1 as pb;

scanloop_eventstore::domain_events!(ReferralEvent {
    LinkCreated => "scanloop.referral.v1.LinkCreated",
    LinkShared => "scanloop.referral.v1.LinkShared",
    LinkRevoked => "scanloop.referral.v1.LinkRevoked",
    ReferralAttributed => "scanloop.referral.v1.ReferralAttributed",
    ReferralHeld => "scanloop.referral.v1.ReferralHeld",
    ReferralReviewed => "scanloop.referral.v1.ReferralReviewed",
    ReferralRejected => "scanloop.referral.v1.ReferralRejected",
    ParentSet => "scanloop.referral.v1.ParentSet",
    RootClaimed => "scanloop.referral.v1.RootClaimed",
    DeviceAttributed => "scanloop.referral.v1.DeviceAttributed",
    CampaignDefined => "scanloop.referral.v1.CampaignDefined",
    AssistStarted => "scanloop.referral.v1.AssistStarted",
    AssistProgressed => "scanloop.referral.v1.AssistProgressed",
    AssistCompleted => "scanloop.referral.v1.AssistCompleted",
    AssistRevoked => "scanloop.referral.v1.AssistRevoked",
});

#[cfg(test)]
mod tests {
    use super::*;
    use scanloop_eventstore::DomainEvent as _;

    #[test]
    fn events_round_trip_and_foreign_types_are_refused() {
        let event = ReferralEvent::ParentSet(pb::ParentSet {
            member_id: "b".into(),
            parent_member_id: "a".into(),
            attribution_id: "x".into(),
        });
        assert_eq!(event.event_type(), "scanloop.referral.v1.ParentSet");
        assert_eq!(
            ReferralEvent::decode(event.event_type(), 1, &event.encode()).unwrap(),
            event
        );
        assert!(ReferralEvent::decode("scanloop.referral.v1.ParentSet", 2, &[]).is_err());
        assert!(ReferralEvent::decode("scanloop.activation.v1.WarrantyActivated", 1, &[]).is_err());
    }
}
