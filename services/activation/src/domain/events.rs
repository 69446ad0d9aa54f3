//! The activation service's events: the protobuf messages of `scanloop.activation.v1` (the
//! public contract on `scanloop.activation.events.v1`), wrapped so the event store can name,
//! encode and decode them.

use scanloop_proto::activation::v1 as pb;

pub const BATCH_ISSUED: &str = "scanloop.activation.v1.BatchIssued";
pub const CODE_SCANNED: &str = "scanloop.activation.v1.CodeScanned";
pub const SUSPICIOUS_SCAN: &str = "scanloop.activation.v1.SuspiciousScan";
pub const WARRANTY_ACTIVATED: &str = "scanloop.activation.v1.WarrantyActivated";
pub const WARRANTY_EXTENDED: &str = "scanloop.activation.v1.WarrantyExtended";
pub const WARRANTY_VOIDED: &str = "scanloop.activation.v1.WarrantyVoided";
pub const DEVICE_CLAIMED: &str = "scanloop.activation.v1.DeviceClaimed";
pub const PURCHASE_REFUNDED: &str = "scanloop.activation.v1.PurchaseRefunded";

scanloop_eventstore::domain_events!(ActivationEvent {
    BatchIssued => "scanloop.activation.v1.BatchIssued",
    CodeScanned => "scanloop.activation.v1.CodeScanned",
    SuspiciousScan => "scanloop.activation.v1.SuspiciousScan",
    WarrantyActivated => "scanloop.activation.v1.WarrantyActivated",
    WarrantyExtended => "scanloop.activation.v1.WarrantyExtended",
    WarrantyVoided => "scanloop.activation.v1.WarrantyVoided",
    DeviceClaimed => "scanloop.activation.v1.DeviceClaimed",
    PurchaseRefunded => "scanloop.activation.v1.PurchaseRefunded",
});

#[cfg(test)]
mod tests {
    use super::*;
    use scanloop_eventstore::DomainEvent as _;

    #[test]
    fn constants_name_the_same_types_as_the_enum() {
        let names = [
            BATCH_ISSUED,
            CODE_SCANNED,
            SUSPICIOUS_SCAN,
            WARRANTY_ACTIVATED,
            WARRANTY_EXTENDED,
            WARRANTY_VOIDED,
            DEVICE_CLAIMED,
            PURCHASE_REFUNDED,
        ];
        for name in names {
            assert!(ActivationEvent::decode(name, 1, &[]).is_ok(), "{name}");
        }
    }

    #[test]
    fn events_round_trip_through_their_encoding() {
        let event = ActivationEvent::WarrantyVoided(pb::WarrantyVoided {
            reason: "returned".into(),
            voided_at: None,
            activated_at: None,
        });
        let decoded = ActivationEvent::decode(event.event_type(), 1, &event.encode()).unwrap();
        assert_eq!(decoded, event);
        assert!(ActivationEvent::decode("scanloop.other.v1.X", 1, &[]).is_err());
    }
}
