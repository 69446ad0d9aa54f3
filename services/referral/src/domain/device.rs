//! One attribution per device serial, ever: the first attribution claims the device on its own
//! stream, so two concurrent sales of one unit are settled by the conditional append.

use scanloop_eventstore::Aggregate;
use scanloop_proto::referral::v1 as pb;

use super::{ReferralEvent, Rejection};

/// `attributed-device-<brand>-<SN>`: a prefix no other service writes (activation's own device
/// streams are `device-<brand>-<SN>`, and a consumer reading both topics dedupes by stream and
/// version).
pub fn stream_id(brand_id: &str, device_serial: &str) -> String {
    format!("attributed-device-{brand_id}-{device_serial}")
}

/// Where claims were recorded before 2026-12 (`device-<brand>-<SN>`, the name activation uses
/// too). No longer written; read so a device claimed there stays claimed.
pub fn legacy_stream_id(brand_id: &str, device_serial: &str) -> String {
    format!("device-{brand_id}-{device_serial}")
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct DeviceClaim {
    pub attribution_id: Option<String>,
}

impl Aggregate for DeviceClaim {
    type Event = ReferralEvent;
    fn apply(&mut self, event: &ReferralEvent) {
        if let ReferralEvent::DeviceAttributed(e) = event {
            self.attribution_id = Some(e.attribution_id.clone());
        }
    }
}

/// Claims the device for `attribution_id`; nothing if it already is this attribution's;
/// refused (naming the earlier attribution) if another one has it, on this stream or on the
/// legacy one (`legacy`, frozen: a claim there is final).
pub fn claim(
    state: &DeviceClaim,
    legacy: &DeviceClaim,
    device_serial: &str,
    attribution_id: &str,
) -> Result<Vec<ReferralEvent>, Rejection> {
    match state
        .attribution_id
        .as_ref()
        .or(legacy.attribution_id.as_ref())
    {
        None => Ok(vec![ReferralEvent::DeviceAttributed(
            pb::DeviceAttributed {
                device_serial: device_serial.to_owned(),
                attribution_id: attribution_id.to_owned(),
            },
        )]),
        Some(owner) if owner == attribution_id => Ok(vec![]),
        Some(owner) => Err(Rejection::AlreadyExists(format!(
            "device already attributed by attribution {owner}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_attributed_once() {
        let none = DeviceClaim::default();
        let mut state = DeviceClaim::default();
        let events = claim(&state, &none, "SN1", "a1").unwrap();
        events.iter().for_each(|e| state.apply(e));
        assert!(claim(&state, &none, "SN1", "a1").unwrap().is_empty());
        assert!(
            matches!(claim(&state, &none, "SN1", "a2"), Err(Rejection::AlreadyExists(m)) if m.contains("a1"))
        );
        // A claim recorded under the legacy name still holds.
        assert!(
            matches!(claim(&none, &state, "SN1", "a2"), Err(Rejection::AlreadyExists(m)) if m.contains("a1"))
        );
        assert!(claim(&none, &state, "SN1", "a1").unwrap().is_empty());
    }
}
