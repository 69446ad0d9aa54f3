//! The activation service's events: the protobuf messages of `scanloop.activation.v1` (the
//! public contract on `scanloop.activation.events.v1`), wrapped so the event store can name,
//! encode and decode them.

use prost::Message as _;
use scanloop_eventstore::DomainEvent;
use scanloop_proto::activation::v1 as pb;

#[derive(Debug, Clone, PartialEq)]
pub enum ActivationEvent {
    BatchIssued(pb::BatchIssued),
    CodeScanned(pb::CodeScanned),
    SuspiciousScan(pb::SuspiciousScan),
    WarrantyActivated(pb::WarrantyActivated),
    WarrantyExtended(pb::WarrantyExtended),
    WarrantyVoided(pb::WarrantyVoided),
}

pub const BATCH_ISSUED: &str = "scanloop.activation.v1.BatchIssued";
pub const CODE_SCANNED: &str = "scanloop.activation.v1.CodeScanned";
pub const SUSPICIOUS_SCAN: &str = "scanloop.activation.v1.SuspiciousScan";
pub const WARRANTY_ACTIVATED: &str = "scanloop.activation.v1.WarrantyActivated";
pub const WARRANTY_EXTENDED: &str = "scanloop.activation.v1.WarrantyExtended";
pub const WARRANTY_VOIDED: &str = "scanloop.activation.v1.WarrantyVoided";

impl DomainEvent for ActivationEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::BatchIssued(_) => BATCH_ISSUED,
            Self::CodeScanned(_) => CODE_SCANNED,
            Self::SuspiciousScan(_) => SUSPICIOUS_SCAN,
            Self::WarrantyActivated(_) => WARRANTY_ACTIVATED,
            Self::WarrantyExtended(_) => WARRANTY_EXTENDED,
            Self::WarrantyVoided(_) => WARRANTY_VOIDED,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Self::BatchIssued(e) => e.encode_to_vec(),
            Self::CodeScanned(e) => e.encode_to_vec(),
            Self::SuspiciousScan(e) => e.encode_to_vec(),
            Self::WarrantyActivated(e) => e.encode_to_vec(),
            Self::WarrantyExtended(e) => e.encode_to_vec(),
            Self::WarrantyVoided(e) => e.encode_to_vec(),
        }
    }

    fn decode(event_type: &str, _schema_version: u32, payload: &[u8]) -> Result<Self, String> {
        let bad = |e: prost::DecodeError| format!("{event_type}: {e}");
        Ok(match event_type {
            BATCH_ISSUED => Self::BatchIssued(pb::BatchIssued::decode(payload).map_err(bad)?),
            CODE_SCANNED => Self::CodeScanned(pb::CodeScanned::decode(payload).map_err(bad)?),
            SUSPICIOUS_SCAN => {
                Self::SuspiciousScan(pb::SuspiciousScan::decode(payload).map_err(bad)?)
            }
            WARRANTY_ACTIVATED => {
                Self::WarrantyActivated(pb::WarrantyActivated::decode(payload).map_err(bad)?)
            }
            WARRANTY_EXTENDED => {
                Self::WarrantyExtended(pb::WarrantyExtended::decode(payload).map_err(bad)?)
            }
            WARRANTY_VOIDED => {
                Self::WarrantyVoided(pb::WarrantyVoided::decode(payload).map_err(bad)?)
            }
            other => return Err(format!("unknown activation event type {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_encoding() {
        let event = ActivationEvent::WarrantyVoided(pb::WarrantyVoided {
            reason: "returned".into(),
            voided_at: None,
            request_id: "r".into(),
        });
        let decoded = ActivationEvent::decode(event.event_type(), 1, &event.encode()).unwrap();
        assert_eq!(decoded, event);
        assert!(ActivationEvent::decode("scanloop.other.v1.X", 1, &[]).is_err());
    }
}
