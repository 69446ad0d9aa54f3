//! One printed code's warranty: scans, activation (at most once), extensions, partial refunds,
//! return.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Months, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::common::v1::{Money, StoredIdentity};
use scanloop_proto::region::{is_division_code, province};
use scanloop_proto::time::{from_timestamp, to_timestamp};

use super::{ActivationEvent, Rejection};

/// The stream of one code. The brand is part of the name, so a code's warranty can only ever be
/// reached under its own brand (a second line of defence behind the brand-derived code key).
pub fn stream_id(brand_id: &str, batch_id: uuid::Uuid, serial: u32) -> String {
    format!("warranty-{brand_id}-{batch_id}-{serial}")
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
    /// What a plausible purchase looks like (time and amount).
    pub purchase: PurchaseLimits,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            return_window: Duration::days(30),
            suspicious_scan_window: Duration::hours(6),
            clock_skew: Duration::minutes(5),
            purchase: PurchaseLimits::default(),
        }
    }
}

/// Limits on the purchase an activation claims. A purchase outside them is not a sale that can
/// have happened (or not one this service should pay commission on without a human looking).
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseLimits {
    /// How long before its batch was issued a purchase may be dated: a date-only purchase time
    /// in a local time zone, or a till's clock, may lie a little before the issue (24 hours).
    pub before_issue_allowance: Duration,
    /// How far back a purchase may lie at activation (default 5 years, 1826 days).
    pub max_age: Duration,
    /// The highest purchase amount accepted, in fen, for brands without their own ceiling
    /// (default ¥1,000,000 = 100,000,000 fen).
    pub max_amount_fen: i64,
    /// Brands' own ceilings, in fen.
    pub max_amount_fen_by_brand: BTreeMap<String, i64>,
}

impl Default for PurchaseLimits {
    fn default() -> Self {
        Self {
            before_issue_allowance: Duration::hours(24),
            max_age: Duration::days(1826),
            max_amount_fen: 100_000_000,
            max_amount_fen_by_brand: BTreeMap::new(),
        }
    }
}

impl PurchaseLimits {
    /// The purchase-amount ceiling of `brand_id`, in fen.
    pub fn max_amount_fen(&self, brand_id: &str) -> i64 {
        self.max_amount_fen_by_brand
            .get(brand_id)
            .copied()
            .unwrap_or(self.max_amount_fen)
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Warranty {
    pub activation: Option<pb::WarrantyActivated>,
    pub ends_at: Option<DateTime<Utc>>,
    pub extended_months: u32,
    pub voided: Option<pb::WarrantyVoided>,
    /// All refunds of the current sale so far, in fen (a resale starts again from 0).
    pub refunded_fen: i64,
    pub last_scan: Option<(String, DateTime<Utc>)>,
    /// The assist campaigns that extended this code's warranty. Kept across a resale: an assist
    /// rewards the warranty it was bound to once, ever, so a late replay of its completion must
    /// not extend the next buyer's warranty either.
    pub assists: BTreeSet<String>,
}

/// [`Warranty`] as plain data, for its snapshot: the activation and the void as their encoded
/// events.
#[derive(serde::Serialize, serde::Deserialize)]
struct WarrantySnapshot {
    activation: Option<Vec<u8>>,
    ends_at: Option<DateTime<Utc>>,
    extended_months: u32,
    voided: Option<Vec<u8>>,
    refunded_fen: i64,
    last_scan: Option<(String, DateTime<Utc>)>,
    assists: BTreeSet<String>,
}

impl WarrantySnapshot {
    fn of(w: &Warranty) -> Self {
        Self {
            activation: w.activation.as_ref().map(prost::Message::encode_to_vec),
            ends_at: w.ends_at,
            extended_months: w.extended_months,
            voided: w.voided.as_ref().map(prost::Message::encode_to_vec),
            refunded_fen: w.refunded_fen,
            last_scan: w.last_scan.clone(),
            assists: w.assists.clone(),
        }
    }

    fn state(self) -> Option<Warranty> {
        fn decoded<M: prost::Message + Default>(bytes: Option<Vec<u8>>) -> Option<Option<M>> {
            bytes.map(|b| M::decode(b.as_slice())).transpose().ok()
        }
        Some(Warranty {
            activation: decoded(self.activation)?,
            ends_at: self.ends_at,
            extended_months: self.extended_months,
            voided: decoded(self.voided)?,
            refunded_fen: self.refunded_fen,
            last_scan: self.last_scan,
            assists: self.assists,
        })
    }
}

impl Aggregate for Warranty {
    type Event = ActivationEvent;

    // A code's stream gets an event per scan for as long as its owner scans it: loads start
    // from a snapshot.
    const SNAPSHOT_EVERY: u64 = 64;
    const SNAPSHOT_TYPE: &'static str = "scanloop.activation.Warranty.v1";

    fn to_snapshot(&self) -> Vec<u8> {
        scanloop_eventstore::snapshot_json(&WarrantySnapshot::of(self))
    }

    fn from_snapshot(bytes: &[u8]) -> Option<Self> {
        scanloop_eventstore::from_snapshot_json::<WarrantySnapshot>(bytes)?.state()
    }

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
                // An activation after a void is the resale of the returned unit: a new
                // warranty, with nothing of the voided one's extensions, refunds or void.
                self.extended_months = 0;
                self.refunded_fen = 0;
                self.voided = None;
            }
            ActivationEvent::WarrantyExtended(extended) => {
                self.ends_at = from_timestamp(extended.warranty_ends_at.as_ref());
                self.extended_months = extended.extended_months_total;
                if !extended.assist_id.is_empty() {
                    self.assists.insert(extended.assist_id.clone());
                }
            }
            ActivationEvent::WarrantyVoided(voided) => self.voided = Some(voided.clone()),
            ActivationEvent::PurchaseRefunded(refunded) => {
                self.refunded_fen = refunded.refunded_total.as_ref().map_or(0, |m| m.amount_fen);
            }
            ActivationEvent::SuspiciousScan(_)
            | ActivationEvent::BatchIssued(_)
            | ActivationEvent::DeviceClaimed(_) => {}
        }
    }
}

impl Warranty {
    pub fn activated_at(&self) -> Option<DateTime<Utc>> {
        from_timestamp(self.activation.as_ref()?.activated_at.as_ref())
    }

    /// The device serial the current, not voided activation carries, if any.
    pub fn active_device_serial(&self) -> Option<&str> {
        if self.voided.is_some() {
            return None;
        }
        let serial = self.activation.as_ref()?.device_serial.as_str();
        (!serial.is_empty()).then_some(serial)
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
    pub brand_id: String,
    pub batch: pb::BatchIssued,
    /// When the batch was issued (recorded by the event store): no unit was sold much before.
    pub batch_issued_at: DateTime<Utc>,
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

/// Activates the warranty, once per sale. (A retry of the same request never gets here: the
/// repository answers it from the stream's request log.) A voided warranty (the unit was
/// returned) can be activated again for a purchase after the void: that is the resale of the
/// returned unit, and it starts a new warranty.
pub fn activate(
    state: &Warranty,
    cmd: &Activate,
    rules: &Rules,
) -> Result<Vec<ActivationEvent>, Rejection> {
    if state.activation.is_some() && state.voided.is_none() {
        let at = state
            .activated_at()
            .map_or_else(|| "earlier".to_owned(), |at| at.to_rfc3339());
        return Err(Rejection::AlreadyExists(format!(
            "this code's warranty was already activated at {at}"
        )));
    }
    if let Some(voided) = &state.voided {
        validate_resale(voided, cmd, rules)?;
    }
    let ends_at = validate_purchase(cmd, rules)?;
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

/// A voided code is activated again only for a sale after the void (the returned unit resold);
/// an earlier purchase is the returned sale itself.
fn validate_resale(
    voided: &pb::WarrantyVoided,
    cmd: &Activate,
    rules: &Rules,
) -> Result<(), Rejection> {
    let Some(voided_at) = from_timestamp(voided.voided_at.as_ref()) else {
        return Err(Rejection::FailedPrecondition(
            "this code's warranty was voided (returned) at an unknown time; it cannot be \
             activated again"
                .into(),
        ));
    };
    if cmd.purchased_at + rules.clock_skew < voided_at {
        return Err(Rejection::FailedPrecondition(format!(
            "this code's warranty was voided (returned) at {}; it can be activated again only \
             for a purchase after that (a resale of the returned unit)",
            voided_at.to_rfc3339()
        )));
    }
    Ok(())
}

/// Checks that the purchase can have happened and is within the brand's limits; returns the
/// warranty's end.
fn validate_purchase(cmd: &Activate, rules: &Rules) -> Result<DateTime<Utc>, Rejection> {
    let limits = &rules.purchase;
    if cmd.purchase_amount_fen < 0 {
        return Err(Rejection::Invalid(
            "purchase_amount must not be negative".into(),
        ));
    }
    let ceiling = limits.max_amount_fen(&cmd.brand_id);
    if cmd.purchase_amount_fen > ceiling {
        return Err(Rejection::Invalid(format!(
            "purchase_amount of {} fen is above this brand's ceiling of {ceiling} fen \
             (¥{}); check the amount",
            cmd.purchase_amount_fen,
            ceiling / 100
        )));
    }
    if cmd.purchased_at > cmd.now + rules.clock_skew {
        return Err(Rejection::Invalid("purchased_at is in the future".into()));
    }
    let earliest = cmd.batch_issued_at - limits.before_issue_allowance;
    if cmd.purchased_at < earliest {
        return Err(Rejection::Invalid(format!(
            "purchased_at {} is before this code's batch was issued ({}); a purchase may \
             precede the issue by at most {} hours",
            cmd.purchased_at.to_rfc3339(),
            cmd.batch_issued_at.to_rfc3339(),
            limits.before_issue_allowance.num_hours()
        )));
    }
    if cmd.purchased_at < cmd.now - limits.max_age {
        return Err(Rejection::Invalid(format!(
            "purchased_at {} is more than {} days ago, further back than an activation may \
             reach",
            cmd.purchased_at.to_rfc3339(),
            limits.max_age.num_days()
        )));
    }
    let ends_at = cmd
        .purchased_at
        .checked_add_months(Months::new(cmd.batch.warranty_months))
        .ok_or_else(|| Rejection::Invalid("purchased_at is out of range".into()))?;
    if ends_at < cmd.now {
        return Err(Rejection::FailedPrecondition(format!(
            "this warranty already ended at {} ({} months after the purchase); an ended \
             warranty cannot be activated",
            ends_at.to_rfc3339(),
            cmd.batch.warranty_months
        )));
    }
    Ok(ends_at)
}

pub struct Extend {
    pub months: u32,
    pub reason: pb::ExtensionReason,
    /// The assist campaign this extension rewards (the reaction to referral's AssistCompleted);
    /// empty for an extension asked for through the API.
    pub assist_id: String,
}

pub const MAX_EXTENSION_MONTHS: u32 = 60;

/// Extends an active warranty. An assist that already extended it decides nothing: the stream
/// itself remembers each assist, for good (request ids are forgotten after their retention, and
/// a consumer group replaying the referral topic has no checkpoints).
pub fn extend(state: &Warranty, cmd: &Extend) -> Result<Vec<ActivationEvent>, Rejection> {
    if !cmd.assist_id.is_empty() && state.assists.contains(&cmd.assist_id) {
        return Ok(Vec::new());
    }
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
            assist_id: cmd.assist_id.clone(),
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
    let Some(activation) = state.activation.as_ref() else {
        return Err(Rejection::FailedPrecondition(
            "this code's warranty is not activated".into(),
        ));
    };
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
        // Names the sale being returned: a resale after this void is another sale of the stream.
        activated_at: activation.activated_at,
    })])
}

/// The currency of purchases and refunds; an empty currency means it (see `Money`).
pub const CURRENCY: &str = "CNY";

/// The longest refund reason kept.
pub const MAX_REFUND_REASON: usize = 256;

pub struct Refund {
    /// This refund, as the caller gave it (fen of `CURRENCY`).
    pub amount: Money,
    /// Optional; at most `MAX_REFUND_REASON` bytes.
    pub reason: String,
    pub now: DateTime<Utc>,
}

/// Refunds part of the current sale's purchase while the buyer keeps the unit (a return is
/// `void`). The refunds of a sale never add up to more than its purchase amount; each one names
/// the sale (its `activated_at`) so that payouts can reduce that sale's commissions.
pub fn refund(state: &Warranty, cmd: &Refund) -> Result<Vec<ActivationEvent>, Rejection> {
    if cmd.amount.amount_fen <= 0 {
        return Err(Rejection::Invalid(format!(
            "amount must be more than 0 fen (got {}): give the refund in fen, e.g. 12000 for \
             ¥120",
            cmd.amount.amount_fen
        )));
    }
    if cmd.reason.len() > MAX_REFUND_REASON {
        return Err(Rejection::Invalid(format!(
            "reason is at most {MAX_REFUND_REASON} characters"
        )));
    }
    let Some(activation) = state.activation.as_ref() else {
        return Err(Rejection::FailedPrecondition(
            "this code's warranty is not activated: there is no purchase to refund".into(),
        ));
    };
    if state.voided.is_some() {
        return Err(Rejection::FailedPrecondition(
            "this warranty was voided (the unit was returned): the sale is already reversed, \
             there is nothing left to refund"
                .into(),
        ));
    }
    let purchase = activation.purchase_amount.clone().unwrap_or_default();
    let purchase_currency = currency_of(&purchase);
    if currency_of(&cmd.amount) != purchase_currency {
        return Err(Rejection::Invalid(format!(
            "amount must be in {purchase_currency} (fen), the currency of the purchase; got {:?}",
            cmd.amount.currency
        )));
    }
    let left = purchase.amount_fen - state.refunded_fen;
    if cmd.amount.amount_fen > left {
        return Err(Rejection::FailedPrecondition(format!(
            "a refund of {} fen is more than the {} fen left to refund of this sale (purchase \
             {} fen, refunded {} fen so far)",
            cmd.amount.amount_fen,
            left.max(0),
            purchase.amount_fen,
            state.refunded_fen
        )));
    }
    let money = |amount_fen| Money {
        amount_fen,
        currency: purchase_currency.to_owned(),
    };
    Ok(vec![ActivationEvent::PurchaseRefunded(
        pb::PurchaseRefunded {
            amount: Some(money(cmd.amount.amount_fen)),
            refunded_total: Some(money(state.refunded_fen + cmd.amount.amount_fen)),
            purchase_amount: Some(money(purchase.amount_fen)),
            reason: cmd.reason.clone(),
            refunded_at: Some(to_timestamp(cmd.now)),
            activated_at: activation.activated_at,
        },
    )])
}

/// `money`'s currency, an empty one read as `CURRENCY`.
fn currency_of(money: &Money) -> &str {
    if money.currency.is_empty() {
        CURRENCY
    } else {
        &money.currency
    }
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
            "this warranty was voided (the unit was returned)".into(),
        ));
    }
    state
        .ends_at
        .ok_or_else(|| Rejection::FailedPrecondition("activation lacks an end date".into()))
}

#[cfg(test)]
mod tests;
