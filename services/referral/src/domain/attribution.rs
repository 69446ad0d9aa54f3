//! Attribution of a sale: an activation through a member's link (or a store) becomes a referral
//! that earns (ReferralAttributed), waits for review (ReferralHeld) or earns nothing
//! (ReferralRejected, with the reason). A reviewer decides a held one, and can revoke one that
//! already earns when fraud is found later (ReferralRejected REVOKED_AFTER_ATTRIBUTION: payouts
//! reverses its commission). A rejection is final.
//!
//! [`judge`] decides from facts the application gathered (the link, the referrer's identities,
//! devices and ancestors, clicks, recent counts); the stream `attribution-<warranty stream>`
//! records the outcome of each sale of that code, keyed by an attribution id derived from the
//! activation event, so a redelivered or replayed activation decides nothing twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_proto::common::v1::{Money, StoredIdentity};
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::time::to_timestamp;
use uuid::Uuid;

use super::link::Link;
use super::rules::BrandRules;
use super::{ReferralEvent, Rejection};

pub fn stream_id(warranty_stream_id: &str) -> String {
    format!("attribution-{warranty_stream_id}")
}

const ATTRIBUTION_NAMESPACE: Uuid = Uuid::from_u128(0x5ca7_100b_3e3b_4e55_9d1e_0000_0000_0004);

/// The attribution of one activation: stable across redelivery and replay.
pub fn attribution_id(activation_event_id: &str) -> String {
    Uuid::new_v5(&ATTRIBUTION_NAMESPACE, activation_event_id.as_bytes()).to_string()
}

/// What the activation says about the sale.
#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    pub attribution_id: String,
    pub activation_event_id: String,
    pub warranty_stream_id: String,
    /// Empty when the buyer came without a link.
    pub token: String,
    pub buyer_member_id: String,
    pub buyer: StoredIdentity,
    /// `kind:value` of the buyer's identity.
    pub buyer_identity_key: String,
    /// Normalised; empty when the buyer gave none.
    pub device_serial: String,
    pub sku: String,
    pub purchase_amount: Option<Money>,
    pub purchased_at: DateTime<Utc>,
    pub activated_at: DateTime<Utc>,
    /// Set when the activation came through a store.
    pub store_id: String,
}

/// The token as this brand knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Found(Link),
    /// Issued, but by another brand.
    OtherBrand,
    Unknown,
}

/// The link owner as membership announced them, and their ancestors in the tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Referrer {
    pub member_id: String,
    pub identities: Vec<String>,
    pub devices: Vec<String>,
    /// Parent first, then the parent's parent, and so on.
    pub ancestors: Vec<String>,
}

/// Facts beyond the link and the referrer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// The buyer's last click on the link, if the landing page knew them.
    pub last_click: Option<DateTime<Utc>>,
    /// Attributions of this referrer in the last hour and day, this one included.
    pub referrer_last_hour: u32,
    pub referrer_last_day: u32,
    /// Buyers from this sale's store within the brand's burst window, this one included.
    pub store_recent: u32,
    /// Activation's SuspiciousScan reason for this code, if it flagged one.
    pub suspicious_scan: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Attributed(pb::ReferralAttributed),
    Held(pb::ReferralHeld),
    Rejected(pb::ReferralRejected),
    /// Neither a link nor a store: nothing to attribute.
    Nothing,
}

impl Outcome {
    /// The attribution this outcome would pay, if it pays at all (now or after review).
    pub fn attribution(&self) -> Option<&pb::ReferralAttributed> {
        match self {
            Self::Attributed(a) => Some(a),
            Self::Held(h) => h.attribution.as_ref(),
            _ => None,
        }
    }
}

pub fn reject(
    sale: &Sale,
    level1: &str,
    reason: pb::RejectionReason,
    detail: impl Into<String>,
) -> Outcome {
    Outcome::Rejected(pb::ReferralRejected {
        attribution_id: sale.attribution_id.clone(),
        token: sale.token.clone(),
        warranty_stream_id: sale.warranty_stream_id.clone(),
        activation_event_id: sale.activation_event_id.clone(),
        reason: reason as i32,
        detail: detail.into(),
        level1_member_id: level1.to_owned(),
        buyer_member_id: sale.buyer_member_id.clone(),
        sku: sale.sku.clone(),
        revoked: false,
        activated_at: Some(to_timestamp(sale.activated_at)),
    })
}

/// Decides a sale. Hard cases reject; soft signals hold for review; otherwise it is attributed.
pub fn judge(
    sale: &Sale,
    token: Option<&Token>,
    referrer: Option<&Referrer>,
    signals: &Signals,
    rules: &BrandRules,
) -> Outcome {
    use pb::RejectionReason as Why;
    let link = match token {
        None if sale.store_id.is_empty() => return Outcome::Nothing,
        None => None,
        Some(Token::Unknown) => {
            return reject(sale, "", Why::UnknownToken, "no link has this token");
        }
        Some(Token::OtherBrand) => {
            return reject(
                sale,
                "",
                Why::OtherBrandToken,
                "the token is another brand's",
            );
        }
        Some(Token::Found(link)) => Some(link),
    };
    let mut level2 = String::new();
    if let Some(link) = link {
        let owner = link.member_id.as_str();
        if link.revoked {
            return reject(sale, owner, Why::RevokedToken, "the link was revoked");
        }
        let referrer = referrer.cloned().unwrap_or_else(|| Referrer {
            member_id: owner.to_owned(),
            ..Referrer::default()
        });
        if sale.buyer_member_id == owner || referrer.identities.contains(&sale.buyer_identity_key) {
            return reject(sale, owner, Why::SelfReferral, "the buyer is the referrer");
        }
        if !sale.device_serial.is_empty() && referrer.devices.contains(&sale.device_serial) {
            return reject(
                sale,
                owner,
                Why::SelfReferral,
                "the device is registered to the referrer",
            );
        }
        if referrer.ancestors.contains(&sale.buyer_member_id) {
            return reject(
                sale,
                owner,
                Why::Cycle,
                "the referrer descends from the buyer in the tree",
            );
        }
        let since = signals.last_click.or(link.created_at);
        if since.is_some_and(|since| sale.activated_at > since + rules.attribution_window) {
            let basis = if signals.last_click.is_some() {
                "the buyer's last click"
            } else {
                "the link's creation"
            };
            return reject(
                sale,
                owner,
                Why::WindowExpired,
                format!(
                    "activated more than {} days after {basis}",
                    rules.attribution_window.num_days()
                ),
            );
        }
        level2 = referrer.ancestors.first().cloned().unwrap_or_default();
    }
    let payee = match (link.is_some(), sale.store_id.is_empty()) {
        (_, true) => pb::Payee::Member,
        (false, false) => pb::Payee::Store,
        (true, false) => rules.store_precedence.payee(),
    };
    let attribution = pb::ReferralAttributed {
        attribution_id: sale.attribution_id.clone(),
        token: sale.token.clone(),
        warranty_stream_id: sale.warranty_stream_id.clone(),
        activation_event_id: sale.activation_event_id.clone(),
        buyer_member_id: sale.buyer_member_id.clone(),
        buyer: Some(sale.buyer.clone()),
        level1_member_id: link.map(|l| l.member_id.clone()).unwrap_or_default(),
        level2_member_id: level2,
        sku: sale.sku.clone(),
        purchase_amount: sale.purchase_amount.clone(),
        purchased_at: Some(to_timestamp(sale.purchased_at)),
        activated_at: Some(to_timestamp(sale.activated_at)),
        store_id: sale.store_id.clone(),
        payee: payee as i32,
        campaign_id: link.map(|l| l.campaign_id.clone()).unwrap_or_default(),
        reviewed: false,
    };
    let mut reasons = Vec::new();
    let mut details = Vec::new();
    if link.is_some()
        && (signals.referrer_last_hour > rules.max_per_hour
            || signals.referrer_last_day > rules.max_per_day)
    {
        reasons.push(pb::HoldReason::Velocity as i32);
        details.push(format!(
            "referrer has {} attributions in the last hour (limit {}), {} in the last day \
             (limit {})",
            signals.referrer_last_hour,
            rules.max_per_hour,
            signals.referrer_last_day,
            rules.max_per_day
        ));
    }
    if let Some(reason) = &signals.suspicious_scan {
        reasons.push(pb::HoldReason::SuspiciousScan as i32);
        details.push(format!("suspicious scan of this code: {reason}"));
    }
    if !sale.store_id.is_empty() && signals.store_recent > rules.store_burst_max {
        reasons.push(pb::HoldReason::StoreBurst as i32);
        details.push(format!(
            "{} buyers from store {} within {} minutes (limit {})",
            signals.store_recent,
            sale.store_id,
            rules.store_burst_window.num_minutes(),
            rules.store_burst_max
        ));
    }
    if reasons.is_empty() {
        Outcome::Attributed(attribution)
    } else {
        Outcome::Held(pb::ReferralHeld {
            attribution_id: sale.attribution_id.clone(),
            reasons,
            detail: details.join("; "),
            attribution: Some(attribution),
        })
    }
}

/// One sale's outcome as recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    Attributed(pb::ReferralAttributed),
    Held(pb::ReferralHeld),
    Rejected(pb::ReferralRejected),
    /// Attributed, then revoked by a reviewer: rejected now, final. What it had attributed is
    /// kept so the application can take back what the attribution set off.
    Revoked {
        attributed: pb::ReferralAttributed,
        rejected: pb::ReferralRejected,
    },
}

/// The outcomes of every sale of one warranty code, by attribution id.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Attributions {
    pub sales: BTreeMap<String, Recorded>,
    /// The latest sale's attribution id (a resale after a return is a new sale).
    pub latest: Option<String>,
}

impl Aggregate for Attributions {
    type Event = ReferralEvent;
    fn apply(&mut self, event: &ReferralEvent) {
        let (id, recorded) = match event {
            ReferralEvent::ReferralAttributed(e) => {
                (e.attribution_id.clone(), Recorded::Attributed(e.clone()))
            }
            ReferralEvent::ReferralHeld(e) => (e.attribution_id.clone(), Recorded::Held(e.clone())),
            ReferralEvent::ReferralRejected(e) => {
                let recorded = match self.sales.get(&e.attribution_id) {
                    Some(Recorded::Attributed(attributed)) => Recorded::Revoked {
                        attributed: attributed.clone(),
                        rejected: e.clone(),
                    },
                    _ => Recorded::Rejected(e.clone()),
                };
                (e.attribution_id.clone(), recorded)
            }
            _ => return,
        };
        if !self.sales.contains_key(&id) {
            self.latest = Some(id.clone());
        }
        self.sales.insert(id, recorded);
    }
}

/// Records the outcome of a sale; nothing if this sale was already decided.
pub fn record(state: &Attributions, outcome: &Outcome) -> Result<Vec<ReferralEvent>, Rejection> {
    let id = match outcome {
        Outcome::Attributed(a) => &a.attribution_id,
        Outcome::Held(h) => &h.attribution_id,
        Outcome::Rejected(r) => &r.attribution_id,
        Outcome::Nothing => return Ok(vec![]),
    };
    if state.sales.contains_key(id) {
        return Ok(vec![]);
    }
    Ok(vec![match outcome.clone() {
        Outcome::Attributed(a) => ReferralEvent::ReferralAttributed(a),
        Outcome::Held(h) => ReferralEvent::ReferralHeld(h),
        Outcome::Rejected(r) => ReferralEvent::ReferralRejected(r),
        Outcome::Nothing => return Ok(vec![]),
    }])
}

pub struct Review {
    pub attribution_id: String,
    pub decision: pb::ReviewDecision,
    pub reviewer: String,
    pub note: String,
    pub now: DateTime<Utc>,
}

/// A reviewer's decision. On a held attribution, approval makes it count (ReferralAttributed,
/// `reviewed`) and rejection ends it (ReferralRejected, REVIEW_REJECTED). On one that already
/// counts, only rejection applies: a revocation (ReferralRejected, REVOKED_AFTER_ATTRIBUTION),
/// which payouts answers by reversing or clawing back the commission. A rejected attribution is
/// never decided again.
pub fn review(state: &Attributions, cmd: &Review) -> Result<Vec<ReferralEvent>, Rejection> {
    if cmd.decision == pb::ReviewDecision::Unspecified {
        return Err(Rejection::Invalid(
            "decision must be APPROVE or REJECT".into(),
        ));
    }
    let id = &cmd.attribution_id;
    let outcome = match state.sales.get(id) {
        None => return Err(Rejection::NotFound(format!("no attribution {id}"))),
        Some(Recorded::Held(held)) => decide_held(held, cmd)?,
        Some(Recorded::Attributed(attributed)) => revoke(attributed, cmd)?,
        Some(Recorded::Rejected(_) | Recorded::Revoked { .. }) => {
            return Err(Rejection::FailedPrecondition(format!(
                "attribution {id} was rejected, and a rejection is final"
            )));
        }
    };
    let reviewed = ReferralEvent::ReferralReviewed(pb::ReferralReviewed {
        attribution_id: id.clone(),
        decision: cmd.decision as i32,
        reviewer: cmd.reviewer.clone(),
        note: cmd.note.clone(),
        reviewed_at: Some(to_timestamp(cmd.now)),
    });
    Ok(vec![reviewed, outcome])
}

fn decide_held(held: &pb::ReferralHeld, cmd: &Review) -> Result<ReferralEvent, Rejection> {
    let attribution = held
        .attribution
        .clone()
        .ok_or_else(|| Rejection::FailedPrecondition("held without an attribution".into()))?;
    Ok(match cmd.decision {
        pb::ReviewDecision::Approve => ReferralEvent::ReferralAttributed(pb::ReferralAttributed {
            reviewed: true,
            ..attribution
        }),
        _ => ReferralEvent::ReferralRejected(rejection_of(
            &attribution,
            pb::RejectionReason::ReviewRejected,
            decided_by("rejected by", cmd),
        )),
    })
}

/// Fraud found after the sale counted: only a rejection applies (approving it again would mean
/// nothing), and it carries the attribution's facts so consumers can find what it paid.
fn revoke(attributed: &pb::ReferralAttributed, cmd: &Review) -> Result<ReferralEvent, Rejection> {
    if cmd.decision != pb::ReviewDecision::Reject {
        return Err(Rejection::FailedPrecondition(format!(
            "attribution {} already counts: APPROVE is for held attributions (REJECT revokes it)",
            cmd.attribution_id
        )));
    }
    Ok(ReferralEvent::ReferralRejected(pb::ReferralRejected {
        revoked: true,
        ..rejection_of(
            attributed,
            pb::RejectionReason::RevokedAfterAttribution,
            decided_by("revoked after attribution by", cmd),
        )
    }))
}

/// Binding the buyer's parent found that the referrer descends from the buyer (a cycle the
/// judgement could not see: a concurrent or later binding closed it). An attribution that counts
/// is revoked with CYCLE, so what it set off is taken back; anything else decides nothing.
pub fn revoke_for_cycle(
    state: &Attributions,
    attribution_id: &str,
    detail: String,
) -> Result<Vec<ReferralEvent>, Rejection> {
    match state.sales.get(attribution_id) {
        Some(Recorded::Attributed(attributed)) => Ok(vec![ReferralEvent::ReferralRejected(
            pb::ReferralRejected {
                revoked: true,
                ..rejection_of(attributed, pb::RejectionReason::Cycle, detail)
            },
        )]),
        _ => Ok(vec![]),
    }
}

/// "<what> <reviewer>", then ": <note>" when the reviewer gave one.
fn decided_by(what: &str, cmd: &Review) -> String {
    if cmd.note.is_empty() {
        format!("{what} {}", cmd.reviewer)
    } else {
        format!("{what} {}: {}", cmd.reviewer, cmd.note)
    }
}

fn rejection_of(
    a: &pb::ReferralAttributed,
    reason: pb::RejectionReason,
    detail: String,
) -> pb::ReferralRejected {
    pb::ReferralRejected {
        attribution_id: a.attribution_id.clone(),
        token: a.token.clone(),
        warranty_stream_id: a.warranty_stream_id.clone(),
        activation_event_id: a.activation_event_id.clone(),
        reason: reason as i32,
        detail,
        level1_member_id: a.level1_member_id.clone(),
        buyer_member_id: a.buyer_member_id.clone(),
        sku: a.sku.clone(),
        revoked: false,
        activated_at: a.activated_at,
    }
}

#[cfg(test)]
mod tests;
