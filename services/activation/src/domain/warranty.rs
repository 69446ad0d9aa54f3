//! One printed code's warranty: scans, activation (at most once), extensions, return.

use chrono::{DateTime, Duration, Months, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::common::v1::{Money, StoredIdentity};
use scanloop_proto::region::{is_division_code, province};
use scanloop_proto::time::{from_timestamp, to_timestamp};

use super::{ActivationEvent, Rejection};

/// The stream of one code.
pub fn stream_id(batch_id: uuid::Uuid, serial: u32) -> String {
    format!("warranty-{batch_id}-{serial}")
}

/// Brand-configurable rules (defaults from the seeds).
#[derive(Debug, Clone)]
pub struct Rules {
    /// A return voids the warranty only this long after purchase (default 30 days).
    pub return_window: Duration,
    /// Scans of one code from different provinces closer together than this are suspicious.
    pub suspicious_scan_window: Duration,
    /// Clock skew tolerated for times the caller gives (purchase, scan).
    pub clock_skew: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            return_window: Duration::days(30),
            suspicious_scan_window: Duration::hours(6),
            clock_skew: Duration::minutes(5),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Warranty {
    pub activation: Option<pb::WarrantyActivated>,
    pub ends_at: Option<DateTime<Utc>>,
    pub extended_months: u32,
    pub voided: Option<pb::WarrantyVoided>,
    pub last_scan: Option<(String, DateTime<Utc>)>,
}

impl Aggregate for Warranty {
    type Event = ActivationEvent;

    fn apply(&mut self, event: &ActivationEvent) {
        match event {
            ActivationEvent::CodeScanned(scan) => {
                if let Some(at) = from_timestamp(scan.scanned_at.as_ref()) {
                    self.last_scan = Some((scan.region.clone(), at));
                }
            }
            ActivationEvent::WarrantyActivated(activated) => {
                self.ends_at = from_timestamp(activated.warranty_ends_at.as_ref());
                self.activation = Some(activated.clone());
            }
            ActivationEvent::WarrantyExtended(extended) => {
                self.ends_at = from_timestamp(extended.warranty_ends_at.as_ref());
                self.extended_months = extended.extended_months_total;
            }
            ActivationEvent::WarrantyVoided(voided) => self.voided = Some(voided.clone()),
            ActivationEvent::SuspiciousScan(_) | ActivationEvent::BatchIssued(_) => {}
        }
    }
}

impl Warranty {
    pub fn activated_at(&self) -> Option<DateTime<Utc>> {
        from_timestamp(self.activation.as_ref()?.activated_at.as_ref())
    }
}

pub struct Scan {
    pub batch_id: String,
    pub serial: u64,
    pub region: String,
    pub scanned_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Records a scan; flags it when the previous scan came from another province shortly before.
pub fn scan(
    state: &Warranty,
    cmd: &Scan,
    rules: &Rules,
) -> Result<Vec<ActivationEvent>, Rejection> {
    if !is_division_code(&cmd.region) {
        return Err(Rejection::Invalid(
            "region must be a 6-digit administrative division code (GB/T 2260), e.g. 440300".into(),
        ));
    }
    if cmd.scanned_at > cmd.now + rules.clock_skew {
        return Err(Rejection::Invalid("scanned_at is in the future".into()));
    }
    let mut events = vec![ActivationEvent::CodeScanned(pb::CodeScanned {
        batch_id: cmd.batch_id.clone(),
        serial: cmd.serial,
        region: cmd.region.clone(),
        scanned_at: Some(to_timestamp(cmd.scanned_at)),
    })];
    if let Some((previous_region, previous_at)) = &state.last_scan {
        let far_apart = province(previous_region) != province(&cmd.region);
        let close_in_time = (cmd.scanned_at - *previous_at).abs() < rules.suspicious_scan_window;
        if far_apart && close_in_time {
            events.push(ActivationEvent::SuspiciousScan(pb::SuspiciousScan {
                batch_id: cmd.batch_id.clone(),
                serial: cmd.serial,
                previous_region: previous_region.clone(),
                previous_scanned_at: Some(to_timestamp(*previous_at)),
                region: cmd.region.clone(),
                scanned_at: Some(to_timestamp(cmd.scanned_at)),
                reason: format!(
                    "scanned in provinces {} and {} within {} minutes",
                    &previous_region[..2],
                    &cmd.region[..2],
                    (cmd.scanned_at - *previous_at).num_minutes().abs()
                ),
            }));
        }
    }
    Ok(events)
}

pub struct Activate {
    pub batch: pb::BatchIssued,
    pub serial: u64,
    /// Already hashed at the edge: phone_hash or wechat_unionid, never a phone number.
    pub buyer: StoredIdentity,
    pub channel: pb::PurchaseChannel,
    pub purchase_amount_fen: i64,
    pub purchased_at: DateTime<Utc>,
    pub referral_token: String,
    pub device_serial: String,
    pub now: DateTime<Utc>,
}

/// Activates the warranty, once. (A retry of the same request never gets here: the repository
/// answers it from the stream's request log.)
pub fn activate(
    state: &Warranty,
    cmd: &Activate,
    rules: &Rules,
) -> Result<Vec<ActivationEvent>, Rejection> {
    if state.activation.is_some() {
        let at = state
            .activated_at()
            .map_or_else(|| "earlier".to_owned(), |at| at.to_rfc3339());
        return Err(Rejection::AlreadyExists(format!(
            "this code's warranty was already activated at {at}"
        )));
    }
    if state.voided.is_some() {
        return Err(Rejection::FailedPrecondition(
            "this code's warranty was voided".into(),
        ));
    }
    if cmd.purchase_amount_fen < 0 {
        return Err(Rejection::Invalid(
            "purchase_amount must not be negative".into(),
        ));
    }
    if cmd.purchased_at > cmd.now + rules.clock_skew {
        return Err(Rejection::Invalid("purchased_at is in the future".into()));
    }
    let ends_at = cmd
        .purchased_at
        .checked_add_months(Months::new(cmd.batch.warranty_months))
        .ok_or_else(|| Rejection::Invalid("purchased_at is out of range".into()))?;
    Ok(vec![ActivationEvent::WarrantyActivated(
        pb::WarrantyActivated {
            batch_id: cmd.batch.batch_id.clone(),
            serial: cmd.serial,
            sku: cmd.batch.sku.clone(),
            product_model: cmd.batch.product_model.clone(),
            buyer: Some(cmd.buyer.clone()),
            channel: Some(cmd.channel.clone()),
            purchase_amount: Some(Money {
                amount_fen: cmd.purchase_amount_fen,
                currency: "CNY".into(),
            }),
            purchased_at: Some(to_timestamp(cmd.purchased_at)),
            warranty_ends_at: Some(to_timestamp(ends_at)),
            referral_token: cmd.referral_token.clone(),
            device_serial: cmd.device_serial.clone(),
            activated_at: Some(to_timestamp(cmd.now)),
        },
    )])
}

pub struct Extend {
    pub months: u32,
    pub reason: pb::ExtensionReason,
}

pub const MAX_EXTENSION_MONTHS: u32 = 60;

/// Extends an active warranty.
pub fn extend(state: &Warranty, cmd: &Extend) -> Result<Vec<ActivationEvent>, Rejection> {
    if cmd.months == 0 || cmd.months > MAX_EXTENSION_MONTHS {
        return Err(Rejection::Invalid("months must be between 1 and 60".into()));
    }
    if cmd.reason == pb::ExtensionReason::Unspecified {
        return Err(Rejection::Invalid(
            "reason is required: assist campaign, paid extension or goodwill".into(),
        ));
    }
    let ends_at = active_end(state)?;
    let ends_at = ends_at
        .checked_add_months(Months::new(cmd.months))
        .ok_or_else(|| Rejection::Invalid("extension out of range".into()))?;
    Ok(vec![ActivationEvent::WarrantyExtended(
        pb::WarrantyExtended {
            months: cmd.months,
            reason: cmd.reason as i32,
            warranty_ends_at: Some(to_timestamp(ends_at)),
            extended_months_total: state.extended_months + cmd.months,
        },
    )])
}

pub struct Void {
    pub reason: String,
    pub now: DateTime<Utc>,
}

/// Voids the warranty for a return inside the return window.
pub fn void(
    state: &Warranty,
    cmd: &Void,
    rules: &Rules,
) -> Result<Vec<ActivationEvent>, Rejection> {
    if state.voided.is_some() {
        return Err(Rejection::FailedPrecondition(
            "this warranty is already voided".into(),
        ));
    }
    if cmd.reason.trim().is_empty() || cmd.reason.len() > 256 {
        return Err(Rejection::Invalid(
            "reason is required (at most 256 characters)".into(),
        ));
    }
    active_end(state)?;
    let activation = state.activation.as_ref().expect("active_end checked it");
    let purchased_at = from_timestamp(activation.purchased_at.as_ref())
        .ok_or_else(|| Rejection::FailedPrecondition("activation lacks a purchase time".into()))?;
    let window_ends = purchased_at + rules.return_window;
    if cmd.now > window_ends {
        return Err(Rejection::FailedPrecondition(format!(
            "the return window closed at {} ({} days after purchase)",
            window_ends.to_rfc3339(),
            rules.return_window.num_days()
        )));
    }
    Ok(vec![ActivationEvent::WarrantyVoided(pb::WarrantyVoided {
        reason: cmd.reason.clone(),
        voided_at: Some(to_timestamp(cmd.now)),
    })])
}

/// The end of an activated, not voided warranty.
fn active_end(state: &Warranty) -> Result<DateTime<Utc>, Rejection> {
    if state.activation.is_none() {
        return Err(Rejection::FailedPrecondition(
            "this code's warranty is not activated".into(),
        ));
    }
    if state.voided.is_some() {
        return Err(Rejection::FailedPrecondition(
            "this warranty was voided".into(),
        ));
    }
    state
        .ends_at
        .ok_or_else(|| Rejection::FailedPrecondition("activation lacks an end date".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanloop_proto::common::v1::stored_identity::Kind;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn batch() -> pb::BatchIssued {
        pb::BatchIssued {
            batch_id: "b1".into(),
            sku: "AC-100".into(),
            product_model: "AC 100".into(),
            warranty_months: 24,
            quantity: 10,
            key_id: "k1".into(),
        }
    }

    fn activation(_request_id: &str, now: &str) -> Activate {
        Activate {
            batch: batch(),
            serial: 3,
            buyer: StoredIdentity {
                kind: Some(Kind::PhoneHash("ab".repeat(32))),
            },
            channel: pb::PurchaseChannel {
                kind: pb::PurchaseChannelKind::Store as i32,
                id: "store-1".into(),
            },
            purchase_amount_fen: 399_900,
            purchased_at: at("2026-01-31T10:00:00Z"),
            referral_token: String::new(),
            device_serial: "SN1".into(),
            now: at(now),
        }
    }

    /// given(events) → state
    fn given(events: &[ActivationEvent]) -> Warranty {
        let mut state = Warranty::default();
        for event in events {
            state.apply(event);
        }
        state
    }

    fn activated() -> Warranty {
        let rules = Rules::default();
        given(
            &activate(
                &Warranty::default(),
                &activation("r1", "2026-02-01T00:00:00Z"),
                &rules,
            )
            .unwrap(),
        )
    }

    #[test]
    fn activation_sets_the_end_from_purchase_date_plus_months() {
        let state = activated();
        assert_eq!(state.ends_at, Some(at("2028-01-31T10:00:00Z")));
        assert_eq!(state.activated_at(), Some(at("2026-02-01T00:00:00Z")));
    }

    #[test]
    fn a_second_activation_is_refused_naming_when() {
        let state = activated();
        let rules = Rules::default();
        match activate(&state, &activation("r2", "2026-02-02T00:00:00Z"), &rules) {
            Err(Rejection::AlreadyExists(message)) => {
                assert!(message.contains("2026-02-01T00:00:00+00:00"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn activation_refuses_future_purchases_and_negative_amounts() {
        let rules = Rules::default();
        let mut future = activation("r", "2026-01-01T00:00:00Z");
        future.purchased_at = at("2026-01-02T00:00:00Z");
        assert!(matches!(
            activate(&Warranty::default(), &future, &rules),
            Err(Rejection::Invalid(_))
        ));
        let mut negative = activation("r", "2026-02-01T00:00:00Z");
        negative.purchase_amount_fen = -1;
        assert!(matches!(
            activate(&Warranty::default(), &negative, &rules),
            Err(Rejection::Invalid(_))
        ));
    }

    #[test]
    fn extensions_add_up() {
        let mut state = activated();
        let cmd = Extend {
            months: 12,
            reason: pb::ExtensionReason::AssistCampaign,
        };
        let events = extend(&state, &cmd).unwrap();
        state.apply(&events[0]);
        assert_eq!(state.ends_at, Some(at("2029-01-31T10:00:00Z")));
        assert_eq!(state.extended_months, 12);
        let events = extend(&state, &cmd).unwrap();
        state.apply(&events[0]);
        assert_eq!(state.extended_months, 24);
    }

    #[test]
    fn extension_needs_an_active_warranty_and_valid_input() {
        let cmd = Extend {
            months: 12,
            reason: pb::ExtensionReason::Goodwill,
        };
        assert!(matches!(
            extend(&Warranty::default(), &cmd),
            Err(Rejection::FailedPrecondition(_))
        ));
        let zero = Extend { months: 0, ..cmd };
        assert!(matches!(
            extend(&activated(), &zero),
            Err(Rejection::Invalid(_))
        ));
        let unspecified = Extend {
            months: 1,
            reason: pb::ExtensionReason::Unspecified,
        };
        assert!(matches!(
            extend(&activated(), &unspecified),
            Err(Rejection::Invalid(_))
        ));
    }

    #[test]
    fn a_return_inside_the_window_voids_and_after_it_is_refused() {
        let rules = Rules::default();
        let inside = Void {
            reason: "changed mind".into(),
            now: at("2026-03-01T10:00:00Z"),
        };
        let events = void(&activated(), &inside, &rules).unwrap();
        let state = given(&[
            activate(
                &Warranty::default(),
                &activation("r1", "2026-02-01T00:00:00Z"),
                &rules,
            )
            .unwrap()
            .remove(0),
            events[0].clone(),
        ]);
        assert!(state.voided.is_some());
        assert!(matches!(
            void(&state, &inside, &rules),
            Err(Rejection::FailedPrecondition(_))
        ));

        let late = Void {
            reason: "broken".into(),
            now: at("2026-03-02T10:00:01Z"),
        };
        match void(&activated(), &late, &rules) {
            Err(Rejection::FailedPrecondition(message)) => {
                assert!(message.contains("return window"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scans_from_far_apart_provinces_in_a_short_time_are_suspicious() {
        let rules = Rules::default();
        let scan_at = |_request: &str, region: &str, when: &str| Scan {
            batch_id: "b1".into(),
            serial: 3,
            region: region.into(),
            scanned_at: at(when),
            now: at("2026-05-01T00:00:00Z"),
        };
        let first = scan(
            &Warranty::default(),
            &scan_at("s1", "440300", "2026-04-01T10:00:00Z"),
            &rules,
        )
        .unwrap();
        assert_eq!(first.len(), 1);
        let state = given(&first);
        // Same province (44 Guangdong: Shenzhen → Guangzhou): fine.
        assert_eq!(
            scan(
                &state,
                &scan_at("s2", "440100", "2026-04-01T10:30:00Z"),
                &rules
            )
            .unwrap()
            .len(),
            1
        );
        // Beijing half an hour later: suspicious.
        let events = scan(
            &state,
            &scan_at("s3", "110000", "2026-04-01T10:30:00Z"),
            &rules,
        )
        .unwrap();
        assert!(
            matches!(events.as_slice(), [ActivationEvent::CodeScanned(_), ActivationEvent::SuspiciousScan(s)] if s.previous_region == "440300")
        );
        // Beijing a day later: fine.
        assert_eq!(
            scan(
                &state,
                &scan_at("s4", "110000", "2026-04-02T10:30:00Z"),
                &rules
            )
            .unwrap()
            .len(),
            1
        );
        // A bad region is refused.
        assert!(matches!(
            scan(&state, &scan_at("s5", "44", "2026-04-01T10:00:00Z"), &rules),
            Err(Rejection::Invalid(_))
        ));
    }
}
