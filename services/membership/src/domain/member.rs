//! A member: identities and devices, the points ledger (earned lots that expire, spent first in,
//! first out), engagement in a rolling window, KOC standing and tier.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_pii::identity_key;
use scanloop_proto::common::v1::StoredIdentity;
use scanloop_proto::membership::v1 as pb;
use scanloop_proto::region::is_division_code;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use super::rules::Rules;
use super::tiers::{Tier, tier_for};
use super::{MembershipEvent, Rejection};

/// Member streams are per brand: another brand's request finds no member.
pub fn stream_id(brand_id: &str, member_id: &str) -> String {
    format!("member-{brand_id}-{member_id}")
}

/// Score weights per engagement kind: shares spread the brand furthest.
pub fn weight(kind: pb::EngagementKind) -> i64 {
    match kind {
        pb::EngagementKind::Share => 5,
        pb::EngagementKind::Comment => 2,
        pb::EngagementKind::Scan | pb::EngagementKind::ContentView => 1,
        pb::EngagementKind::Unspecified => 0,
    }
}

pub const MAX_POINTS_PER_ENTRY: i64 = 1_000_000;

/// Namespace of points lot ids.
const LOT_NAMESPACE: Uuid = Uuid::from_u128(0x5ca7_100b_3e3b_4e55_9d1e_0000_0000_0003);

/// A lot's id, derived from the member and the command that earned it: stable across retries,
/// and it names the lot in public events without exposing the caller's request id.
pub fn lot_id(member_id: &str, request_id: &str) -> String {
    Uuid::new_v5(
        &LOT_NAMESPACE,
        format!("{member_id}\0{request_id}").as_bytes(),
    )
    .to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lot {
    pub lot_id: String,
    pub remaining: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    pub kind: i32,
    pub at: DateTime<Utc>,
}

/// Engagement counts in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub scans: u32,
    pub shares: u32,
    pub comments: u32,
    pub score: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub member_id: String,
    pub registered_at: Option<DateTime<Utc>>,
    pub display_name: String,
    pub region: String,
    /// Identity keys (`kind:value`), first one first.
    pub identities: Vec<String>,
    pub devices: Vec<String>,
    /// Earned lots with points left, oldest first.
    pub lots: Vec<Lot>,
    /// Engagements younger than the longest window the rules may ask for (pruned on apply).
    pub engagements: VecDeque<Engagement>,
    pub koc_qualified: bool,
    pub tier: Tier,
}

/// Engagements older than this are dropped from state: no window is longer.
const ENGAGEMENT_MEMORY: i64 = 90;

impl Aggregate for Member {
    type Event = MembershipEvent;

    fn apply(&mut self, event: &MembershipEvent) {
        match event {
            MembershipEvent::MemberRegistered(e) => {
                self.member_id = e.member_id.clone();
                self.registered_at = from_timestamp(e.registered_at.as_ref());
                self.display_name = e.display_name.clone();
                self.region = e.region.clone();
                if let Some(key) = e.identity.as_ref().and_then(identity_key) {
                    self.identities.push(key);
                }
            }
            MembershipEvent::IdentityLinked(e) => {
                if let Some(key) = e.identity.as_ref().and_then(identity_key) {
                    self.identities.push(key);
                }
            }
            MembershipEvent::DeviceBound(e) => self.devices.push(e.device_serial.clone()),
            MembershipEvent::PointsEarned(e) => {
                let expires_at =
                    from_timestamp(e.expires_at.as_ref()).unwrap_or(DateTime::<Utc>::MAX_UTC);
                self.lots.push(Lot {
                    lot_id: e.lot_id.clone(),
                    remaining: e.points,
                    expires_at,
                });
                self.lots.sort_by_key(|lot| lot.expires_at);
            }
            MembershipEvent::PointsRedeemed(e) => {
                let mut owed = e.points;
                for lot in self.lots.iter_mut() {
                    let taken = owed.min(lot.remaining);
                    lot.remaining -= taken;
                    owed -= taken;
                }
                self.lots.retain(|lot| lot.remaining > 0);
            }
            MembershipEvent::PointsExpired(e) => {
                self.lots.retain(|lot| !e.lot_ids.contains(&lot.lot_id));
            }
            MembershipEvent::EngagementRecorded(e) => {
                if let Some(at) = from_timestamp(e.occurred_at.as_ref()) {
                    let position = self.engagements.partition_point(|x| x.at <= at);
                    self.engagements
                        .insert(position, Engagement { kind: e.kind, at });
                    let horizon = at - Duration::days(ENGAGEMENT_MEMORY);
                    while self.engagements.front().is_some_and(|x| x.at < horizon) {
                        self.engagements.pop_front();
                    }
                }
            }
            MembershipEvent::KocQualified(_) => self.koc_qualified = true,
            MembershipEvent::KocLapsed(_) => self.koc_qualified = false,
            MembershipEvent::TierChanged(e) => self.tier = Tier::from_id(&e.to_tier),
            MembershipEvent::IdentityClaimed(_) => {}
        }
    }

    const SNAPSHOT_EVERY: u64 = 50;
    // v2: lots by lot id, no request ids (the event store remembers those).
    const SNAPSHOT_TYPE: &'static str = "scanloop.membership.Member.v2";

    fn to_snapshot(&self) -> Vec<u8> {
        scanloop_eventstore::snapshot_json(self)
    }

    fn from_snapshot(bytes: &[u8]) -> Option<Self> {
        scanloop_eventstore::from_snapshot_json(bytes)
    }
}

impl Member {
    pub fn is_registered(&self) -> bool {
        self.registered_at.is_some()
    }

    /// Points that can be spent at `now` (expired lots excluded even before their expiry entry).
    pub fn balance_at(&self, now: DateTime<Utc>) -> i64 {
        self.lots
            .iter()
            .filter(|lot| lot.expires_at > now)
            .map(|lot| lot.remaining)
            .sum()
    }

    /// Engagement counts in the window ending at `now`.
    pub fn counts_at(&self, now: DateTime<Utc>, rules: &Rules) -> Counts {
        let from = now - rules.koc_window;
        let mut counts = Counts::default();
        for engagement in self
            .engagements
            .iter()
            .filter(|e| e.at > from && e.at <= now)
        {
            let kind = pb::EngagementKind::try_from(engagement.kind).unwrap_or_default();
            match kind {
                pb::EngagementKind::Scan => counts.scans += 1,
                pb::EngagementKind::Share => counts.shares += 1,
                pb::EngagementKind::Comment => counts.comments += 1,
                _ => {}
            }
            counts.score += weight(kind);
        }
        counts
    }

    pub fn qualifies(counts: &Counts, rules: &Rules) -> bool {
        counts.scans >= rules.koc_min_scans
            && counts.shares >= rules.koc_min_shares
            && counts.comments >= rules.koc_min_comments
    }
}

fn require_registered(state: &Member) -> Result<(), Rejection> {
    if state.is_registered() {
        Ok(())
    } else {
        Err(Rejection::NotFound("no such member".into()))
    }
}

pub struct Register {
    pub member_id: String,
    pub identity: StoredIdentity,
    pub display_name: String,
    pub region: String,
    pub now: DateTime<Utc>,
}

pub fn register(state: &Member, cmd: &Register) -> Result<Vec<MembershipEvent>, Rejection> {
    if state.is_registered() {
        return Err(Rejection::AlreadyExists(format!(
            "member {} is already registered with this identity",
            state.member_id
        )));
    }
    validate_registration(cmd)?;
    Ok(vec![MembershipEvent::MemberRegistered(
        pb::MemberRegistered {
            member_id: cmd.member_id.clone(),
            identity: Some(cmd.identity.clone()),
            display_name: cmd.display_name.trim().to_owned(),
            region: cmd.region.clone(),
            registered_at: Some(to_timestamp(cmd.now)),
        },
    )])
}

/// What a registration must satisfy whatever the member's state (checked before any write).
pub fn validate_registration(cmd: &Register) -> Result<(), Rejection> {
    if cmd.display_name.chars().count() > 64 {
        return Err(Rejection::Invalid(
            "display_name is at most 64 characters".into(),
        ));
    }
    if !(cmd.region.is_empty() || is_division_code(&cmd.region)) {
        return Err(Rejection::Invalid(
            "region must be a 6-digit administrative division code (GB/T 2260) or empty".into(),
        ));
    }
    Ok(())
}

/// Links an identity (already claimed for this member); nothing to do if it is linked.
pub fn link(state: &Member, identity: &StoredIdentity) -> Result<Vec<MembershipEvent>, Rejection> {
    require_registered(state)?;
    let key = identity_key(identity)
        .ok_or_else(|| Rejection::Invalid("identity is not linkable".into()))?;
    if state.identities.contains(&key) {
        return Ok(vec![]);
    }
    Ok(vec![MembershipEvent::IdentityLinked(pb::IdentityLinked {
        member_id: state.member_id.clone(),
        identity: Some(identity.clone()),
    })])
}

pub fn bind_device(
    state: &Member,
    device_serial: &str,
    warranty_code: &str,
) -> Result<Vec<MembershipEvent>, Rejection> {
    require_registered(state)?;
    if device_serial.is_empty() || state.devices.iter().any(|d| d == device_serial) {
        return Ok(vec![]);
    }
    Ok(vec![MembershipEvent::DeviceBound(pb::DeviceBound {
        member_id: state.member_id.clone(),
        device_serial: device_serial.to_owned(),
        warranty_code: warranty_code.to_owned(),
    })])
}

/// The expiry entry for lots past their date at `now`, if any.
fn expire(state: &Member, now: DateTime<Utc>) -> Option<MembershipEvent> {
    let expired: Vec<&Lot> = state
        .lots
        .iter()
        .filter(|lot| lot.expires_at <= now)
        .collect();
    if expired.is_empty() {
        return None;
    }
    Some(MembershipEvent::PointsExpired(pb::PointsExpired {
        member_id: state.member_id.clone(),
        points: expired.iter().map(|lot| lot.remaining).sum(),
        lot_ids: expired.iter().map(|lot| lot.lot_id.clone()).collect(),
    }))
}

pub struct Points {
    pub points: i64,
    pub reason: String,
    /// The request id of the command: names the lot an award creates (see [`lot_id`]).
    pub request_id: String,
    pub now: DateTime<Utc>,
}

fn validate_points(cmd: &Points) -> Result<(), Rejection> {
    if cmd.points <= 0 || cmd.points > MAX_POINTS_PER_ENTRY {
        return Err(Rejection::Invalid(
            "points must be between 1 and 1000000".into(),
        ));
    }
    if cmd.reason.trim().is_empty() || cmd.reason.len() > 128 {
        return Err(Rejection::Invalid(
            "reason is required (at most 128 characters)".into(),
        ));
    }
    Ok(())
}

/// Awards points; expired lots are written off first.
pub fn award(
    state: &Member,
    cmd: &Points,
    rules: &Rules,
) -> Result<Vec<MembershipEvent>, Rejection> {
    require_registered(state)?;
    validate_points(cmd)?;
    let mut events: Vec<_> = expire(state, cmd.now).into_iter().collect();
    events.push(MembershipEvent::PointsEarned(pb::PointsEarned {
        member_id: state.member_id.clone(),
        points: cmd.points,
        reason: cmd.reason.trim().to_owned(),
        expires_at: Some(to_timestamp(cmd.now + rules.points_ttl)),
        earned_at: Some(to_timestamp(cmd.now)),
        lot_id: lot_id(&state.member_id, &cmd.request_id),
    }));
    Ok(events)
}

/// Redeems points; the balance never goes below zero.
pub fn redeem(state: &Member, cmd: &Points) -> Result<Vec<MembershipEvent>, Rejection> {
    require_registered(state)?;
    validate_points(cmd)?;
    let available = state.balance_at(cmd.now);
    if cmd.points > available {
        return Err(Rejection::FailedPrecondition(format!(
            "balance is {available} points, cannot redeem {}",
            cmd.points
        )));
    }
    let mut events: Vec<_> = expire(state, cmd.now).into_iter().collect();
    events.push(MembershipEvent::PointsRedeemed(pb::PointsRedeemed {
        member_id: state.member_id.clone(),
        points: cmd.points,
        reason: cmd.reason.trim().to_owned(),
        redeemed_at: Some(to_timestamp(cmd.now)),
    }));
    Ok(events)
}

pub struct Engage {
    pub kind: pb::EngagementKind,
    pub occurred_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Records an engagement and re-scores the member: KOC qualification or lapse, tier change.
pub fn engage(
    state: &Member,
    cmd: &Engage,
    rules: &Rules,
) -> Result<Vec<MembershipEvent>, Rejection> {
    require_registered(state)?;
    if cmd.kind == pb::EngagementKind::Unspecified {
        return Err(Rejection::Invalid(
            "kind is required: share, comment, content view or scan".into(),
        ));
    }
    if cmd.occurred_at > cmd.now + rules.clock_skew {
        return Err(Rejection::Invalid("occurred_at is in the future".into()));
    }
    if cmd.occurred_at < cmd.now - rules.koc_window {
        return Err(Rejection::Invalid(format!(
            "occurred_at is older than the {}-day scoring window",
            rules.koc_window.num_days()
        )));
    }
    let mut after = state.clone();
    let counts_with_it = {
        let recorded = MembershipEvent::EngagementRecorded(pb::EngagementRecorded {
            member_id: state.member_id.clone(),
            kind: cmd.kind as i32,
            occurred_at: Some(to_timestamp(cmd.occurred_at)),
            koc_score: 0,
        });
        after.apply(&recorded);
        after.counts_at(cmd.now, rules)
    };
    let mut events = vec![MembershipEvent::EngagementRecorded(
        pb::EngagementRecorded {
            member_id: state.member_id.clone(),
            kind: cmd.kind as i32,
            occurred_at: Some(to_timestamp(cmd.occurred_at)),
            koc_score: counts_with_it.score,
        },
    )];
    events.extend(rescore(state, &counts_with_it, rules));
    Ok(events)
}

/// KOC and tier events for a member whose window counts are now `counts`.
fn rescore(state: &Member, counts: &Counts, rules: &Rules) -> Vec<MembershipEvent> {
    let mut events = Vec::new();
    let qualifies = Member::qualifies(counts, rules);
    if qualifies && !state.koc_qualified {
        events.push(MembershipEvent::KocQualified(pb::KocQualified {
            member_id: state.member_id.clone(),
            scans: counts.scans,
            shares: counts.shares,
            comments: counts.comments,
            koc_score: counts.score,
        }));
    } else if !qualifies && state.koc_qualified {
        events.push(MembershipEvent::KocLapsed(pb::KocLapsed {
            member_id: state.member_id.clone(),
            scans: counts.scans,
            shares: counts.shares,
            comments: counts.comments,
        }));
    }
    let tier = tier_for(qualifies, counts.score, rules);
    if tier != state.tier {
        events.push(MembershipEvent::TierChanged(pb::TierChanged {
            member_id: state.member_id.clone(),
            from_tier: state.tier.id().to_owned(),
            to_tier: tier.id().to_owned(),
        }));
    }
    events
}

/// What time alone changes for a member at `now`: lots past their date are written off and the
/// KOC standing and tier are re-evaluated over the window ending at `now`. The timer job runs it
/// when a lot expires and when an engagement leaves the window, so standing changes on time, not
/// at the member's next command. Nothing when nothing changed (also for an unknown member).
pub fn tick(state: &Member, now: DateTime<Utc>, rules: &Rules) -> Vec<MembershipEvent> {
    if !state.is_registered() {
        return Vec::new();
    }
    let mut events: Vec<_> = expire(state, now).into_iter().collect();
    events.extend(rescore(state, &state.counts_at(now, rules), rules));
    events
}

/// When an engagement recorded at `occurred_at` stops counting: the timer job re-evaluates the
/// member then.
pub fn leaves_window(occurred_at: DateTime<Utc>, rules: &Rules) -> DateTime<Utc> {
    occurred_at + rules.koc_window
}

/// What a warranty activation means for its buyer's member.
pub struct Activated {
    pub member_id: String,
    pub identity: StoredIdentity,
    pub device_serial: String,
    pub warranty_code: String,
    /// The activation event's id: makes every derived entry idempotent.
    pub event_id: String,
    pub activated_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Find-or-create's second half: register the member if new, bind the device, award the
/// activation points and count the activation as a scan. (A redelivered event never gets here:
/// the reaction's request id is derived from the event, so the repository answers the repeat.)
pub fn on_activation(
    state: &Member,
    cmd: &Activated,
    rules: &Rules,
) -> Result<Vec<MembershipEvent>, Rejection> {
    let mut scratch = state.clone();
    let mut events = Vec::new();
    let mut take = |decided: Vec<MembershipEvent>, scratch: &mut Member| {
        for event in &decided {
            scratch.apply(event);
        }
        events.extend(decided);
    };
    if !scratch.is_registered() {
        let decided = register(
            &scratch,
            &Register {
                member_id: cmd.member_id.clone(),
                identity: cmd.identity.clone(),
                display_name: String::new(),
                region: String::new(),
                now: cmd.activated_at,
            },
        )?;
        take(decided, &mut scratch);
    }
    let decided = bind_device(&scratch, &cmd.device_serial, &cmd.warranty_code)?;
    take(decided, &mut scratch);
    if rules.activation_points > 0 {
        let decided = award(
            &scratch,
            &Points {
                points: rules.activation_points,
                reason: "warranty activation".into(),
                request_id: format!("activation-points:{}", cmd.event_id),
                now: cmd.activated_at,
            },
            rules,
        )?;
        take(decided, &mut scratch);
    }
    // An activation is the buyer scanning their own code; too old to count means no scan.
    if cmd.activated_at > cmd.now - rules.koc_window {
        let decided = engage(
            &scratch,
            &Engage {
                kind: pb::EngagementKind::Scan,
                occurred_at: cmd.activated_at.min(cmd.now),
                now: cmd.now,
            },
            rules,
        )?;
        take(decided, &mut scratch);
    }
    Ok(events)
}

#[cfg(test)]
mod tests;
