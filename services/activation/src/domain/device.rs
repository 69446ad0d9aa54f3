//! Device claims: a device serial number (the SN the buyer gives at activation) backs at most one
//! live warranty of a brand. Each (brand, serial number) has its own stream; the claim is its
//! event, so two activations racing for one device are settled by the event store's conditional
//! append, the way membership settles identities.
//!
//! A claim is taken before the warranty's activation is appended. It stays with its code while
//! that code's warranty is active with this device, or while the claim is younger than
//! [`CLAIM_SETTLE`] (its activation may still be on its way). It is released when that warranty
//! is voided after the claim (the unit was returned), or when its activation never came; then
//! another code may take the device over, and the code itself re-claims it for a resale. Every
//! takeover and re-claim is a new event at the version the claimant saw, so of two racing for
//! a released device exactly one gets it.

use chrono::{DateTime, Duration, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::time::{from_timestamp, to_timestamp};

use super::warranty::Warranty;
use super::{ActivationEvent, Rejection};

/// How long a claim whose activation has not (yet) arrived keeps its device.
pub const CLAIM_SETTLE: Duration = Duration::minutes(10);

pub use scanloop_pii::canonical_serial;

/// The stream of one device serial number of a brand.
pub fn stream_id(brand_id: &str, device_serial: &str) -> String {
    format!("device-{brand_id}-{}", canonical_serial(device_serial))
}

/// The code whose warranty a device is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub batch_id: String,
    pub serial: u64,
    pub claimed_at: Option<DateTime<Utc>>,
}

impl Holder {
    fn is(&self, batch_id: &str, serial: u64) -> bool {
        self.batch_id == batch_id && self.serial == serial
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct DeviceClaim {
    pub holder: Option<Holder>,
}

impl Aggregate for DeviceClaim {
    type Event = ActivationEvent;
    fn apply(&mut self, event: &ActivationEvent) {
        if let ActivationEvent::DeviceClaimed(claimed) = event {
            self.holder = Some(Holder {
                batch_id: claimed.batch_id.clone(),
                serial: claimed.serial,
                claimed_at: from_timestamp(claimed.claimed_at.as_ref()),
            });
        }
    }
}

pub struct Claim {
    pub device_serial: String,
    pub batch_id: String,
    pub serial: u64,
    pub now: DateTime<Utc>,
}

/// Whether `holder`'s claim no longer keeps the device: its warranty (`holder_warranty`) is not
/// active with this device, and it was voided after the claim or the claim is older than
/// [`CLAIM_SETTLE`].
pub fn is_released(
    holder: &Holder,
    holder_warranty: &Warranty,
    device_serial: &str,
    now: DateTime<Utc>,
) -> bool {
    let backed = holder_warranty
        .active_device_serial()
        .is_some_and(|s| canonical_serial(s) == canonical_serial(device_serial));
    if backed {
        return false;
    }
    // Claims always carry their time; one without is treated as settled long ago.
    let Some(claimed_at) = holder.claimed_at else {
        return true;
    };
    let voided_after_claim = holder_warranty
        .voided
        .as_ref()
        .and_then(|v| from_timestamp(v.voided_at.as_ref()))
        .is_some_and(|voided_at| voided_at >= claimed_at);
    voided_after_claim || now - claimed_at >= CLAIM_SETTLE
}

/// Claims the device for the code of `cmd`: anew if it is free or its holder is `released` (as
/// the caller found by [`is_released`], for this very claim); nothing to do if this code holds
/// it; refused otherwise, naming the holder's batch and serial (not its code, which is a bearer
/// credential).
pub fn claim(
    state: &DeviceClaim,
    cmd: &Claim,
    released: Option<&Holder>,
) -> Result<Vec<ActivationEvent>, Rejection> {
    match &state.holder {
        Some(holder) if released == Some(holder) => Ok(vec![claimed(cmd)]),
        Some(holder) if holder.is(&cmd.batch_id, cmd.serial) => Ok(vec![]),
        Some(holder) => Err(Rejection::AlreadyExists(format!(
            "device serial {} already belongs to the warranty of serial {} in batch {}; a \
             device backs one active warranty (void that one first if the unit was returned)",
            canonical_serial(&cmd.device_serial),
            holder.serial,
            holder.batch_id
        ))),
        None => Ok(vec![claimed(cmd)]),
    }
}

fn claimed(cmd: &Claim) -> ActivationEvent {
    ActivationEvent::DeviceClaimed(pb::DeviceClaimed {
        device_serial: canonical_serial(&cmd.device_serial),
        batch_id: cmd.batch_id.clone(),
        serial: cmd.serial,
        claimed_at: Some(to_timestamp(cmd.now)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn claim_by(serial: u64, now: &str) -> Claim {
        Claim {
            device_serial: " sn-1 ".into(),
            batch_id: "b1".into(),
            serial,
            now: at(now),
        }
    }

    fn claimed(serial: u64, now: &str) -> DeviceClaim {
        let mut state = DeviceClaim::default();
        for event in claim(&state, &claim_by(serial, now), None).unwrap() {
            state.apply(&event);
        }
        state
    }

    fn warranty_with_device(device_serial: &str, voided_at: Option<&str>) -> Warranty {
        Warranty {
            activation: Some(pb::WarrantyActivated {
                device_serial: device_serial.into(),
                ..Default::default()
            }),
            voided: voided_at.map(|when| pb::WarrantyVoided {
                voided_at: Some(to_timestamp(at(when))),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn serials_compare_trimmed_and_in_upper_case() {
        assert_eq!(canonical_serial(" sn-1 "), "SN-1");
        assert_eq!(stream_id("acme", "sn-1"), "device-acme-SN-1");
    }

    #[test]
    fn a_device_is_claimed_once_and_a_second_code_is_refused_by_batch_and_serial() {
        let state = claimed(3, "2026-02-01T00:00:00Z");
        assert_eq!(
            state.holder,
            Some(Holder {
                batch_id: "b1".into(),
                serial: 3,
                claimed_at: Some(at("2026-02-01T00:00:00Z")),
            })
        );
        assert_eq!(
            claim(&state, &claim_by(3, "2026-02-01T00:01:00Z"), None),
            Ok(vec![])
        );
        match claim(&state, &claim_by(4, "2026-02-01T00:01:00Z"), None) {
            Err(Rejection::AlreadyExists(m)) => {
                assert!(m.contains("SN-1 already belongs to the warranty of serial 3 in batch b1"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_claim_is_held_while_its_warranty_is_active_with_the_device_or_still_settling() {
        let state = claimed(3, "2026-02-01T00:00:00Z");
        let holder = state.holder.clone().unwrap();
        let later = at("2026-03-01T00:00:00Z");
        let soon = at("2026-02-01T00:09:59Z");
        assert!(!is_released(
            &holder,
            &warranty_with_device("SN-1", None),
            "sn-1",
            later
        ));
        // Its activation may still be on its way.
        assert!(!is_released(&holder, &Warranty::default(), "SN-1", soon));
        // A resale's re-claim after the void: its activation may still be on its way.
        assert!(!is_released(
            &holder,
            &warranty_with_device("SN-1", Some("2026-01-31T00:00:00Z")),
            "SN-1",
            soon
        ));
        // Released: the unit was returned after the claim, or the activation never came, or it
        // went elsewhere.
        assert!(is_released(
            &holder,
            &warranty_with_device("SN-1", Some("2026-02-01T00:05:00Z")),
            "SN-1",
            soon
        ));
        assert!(is_released(&holder, &Warranty::default(), "SN-1", later));
        assert!(is_released(
            &holder,
            &warranty_with_device("SN-2", None),
            "SN-1",
            later
        ));
    }

    #[test]
    fn a_released_claim_is_taken_over_but_only_the_one_found_released() {
        let state = claimed(3, "2026-02-01T00:00:00Z");
        let holder = state.holder.clone().unwrap();
        let takeover = claim(&state, &claim_by(4, "2026-03-01T00:00:00Z"), Some(&holder)).unwrap();
        assert!(matches!(
            takeover.as_slice(),
            [ActivationEvent::DeviceClaimed(c)] if c.serial == 4 && c.device_serial == "SN-1"
        ));
        // The holder itself re-claims a released claim (its resale) with a new event.
        let reclaim = claim(&state, &claim_by(3, "2026-03-01T00:00:00Z"), Some(&holder)).unwrap();
        assert!(matches!(
            reclaim.as_slice(),
            [ActivationEvent::DeviceClaimed(c)] if c.serial == 3
        ));
        // Another holder than the one the caller examined (a concurrent takeover): refused.
        let other = Holder {
            serial: 9,
            ..holder
        };
        assert!(matches!(
            claim(&state, &claim_by(4, "2026-03-01T00:00:00Z"), Some(&other)),
            Err(Rejection::AlreadyExists(_))
        ));
    }
}
