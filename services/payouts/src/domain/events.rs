//! The payouts service's events: the protobuf messages of `scanloop.payouts.v1` (the public
//! contract on `scanloop.payouts.events.v1`).

use scanloop_proto::payouts::v1 as pb;

scanloop_eventstore::domain_events!(PayoutsEvent {
    PlanUpserted => "scanloop.payouts.v1.PlanUpserted",
    CommissionAccrued => "scanloop.payouts.v1.CommissionAccrued",
    CommissionVested => "scanloop.payouts.v1.CommissionVested",
    CommissionReversed => "scanloop.payouts.v1.CommissionReversed",
    CommissionAdjusted => "scanloop.payouts.v1.CommissionAdjusted",
    CommissionClawedBack => "scanloop.payouts.v1.CommissionClawedBack",
    CommissionSettled => "scanloop.payouts.v1.CommissionSettled",
    ClawbackNetted => "scanloop.payouts.v1.ClawbackNetted",
    ReceivableWrittenOff => "scanloop.payouts.v1.ReceivableWrittenOff",
    SaleReturned => "scanloop.payouts.v1.SaleReturned",
    SettlementStarted => "scanloop.payouts.v1.SettlementStarted",
    SettlementPlanned => "scanloop.payouts.v1.SettlementPlanned",
    PayoutLinesRecorded => "scanloop.payouts.v1.PayoutLinesRecorded",
    SettlementCompleted => "scanloop.payouts.v1.SettlementCompleted",
    SettlementAbandoned => "scanloop.payouts.v1.SettlementAbandoned",
    PayoutMarkedPaid => "scanloop.payouts.v1.PayoutMarkedPaid",
});

impl PayoutsEvent {
    /// The ledger postings this event makes (none for events that move no money).
    pub fn postings(&self) -> &[pb::Posting] {
        match self {
            PayoutsEvent::CommissionAccrued(e) => &e.postings,
            PayoutsEvent::CommissionVested(e) => &e.postings,
            PayoutsEvent::CommissionReversed(e) => &e.postings,
            PayoutsEvent::CommissionAdjusted(e) => &e.postings,
            PayoutsEvent::CommissionClawedBack(e) => &e.postings,
            PayoutsEvent::CommissionSettled(e) => &e.postings,
            PayoutsEvent::ClawbackNetted(e) => &e.postings,
            PayoutsEvent::ReceivableWrittenOff(e) => &e.postings,
            PayoutsEvent::PayoutMarkedPaid(e) => &e.postings,
            PayoutsEvent::PlanUpserted(_)
            | PayoutsEvent::SaleReturned(_)
            | PayoutsEvent::SettlementStarted(_)
            | PayoutsEvent::SettlementPlanned(_)
            | PayoutsEvent::SettlementAbandoned(_)
            | PayoutsEvent::PayoutLinesRecorded(_)
            | PayoutsEvent::SettlementCompleted(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanloop_eventstore::DomainEvent as _;

    #[test]
    fn events_round_trip_and_foreign_types_are_refused() {
        let event = PayoutsEvent::CommissionVested(pb::CommissionVested {
            commission_id: "c".into(),
            ..Default::default()
        });
        assert_eq!(event.event_type(), "scanloop.payouts.v1.CommissionVested");
        assert_eq!(
            PayoutsEvent::decode(event.event_type(), 1, &event.encode()).unwrap(),
            event
        );
        assert!(PayoutsEvent::decode("scanloop.payouts.v1.CommissionVested", 2, &[]).is_err());
        assert!(PayoutsEvent::decode("scanloop.referral.v1.ParentSet", 1, &[]).is_err());
    }
}
