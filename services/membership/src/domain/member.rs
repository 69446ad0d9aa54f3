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
mod tests {
    use super::*;
    use scanloop_proto::common::v1::stored_identity::Kind;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn identity() -> StoredIdentity {
        StoredIdentity {
            kind: Some(Kind::PhoneHash("ab".repeat(32))),
        }
    }

    fn given(events: &[MembershipEvent]) -> Member {
        let mut state = Member::default();
        for event in events {
            state.apply(event);
        }
        state
    }

    /// when(command) → then(events), applied to the state.
    fn step(
        state: &mut Member,
        decide: impl FnOnce(&Member) -> Result<Vec<MembershipEvent>, Rejection>,
    ) -> Vec<MembershipEvent> {
        let events = decide(state).unwrap();
        for event in &events {
            state.apply(event);
        }
        events
    }

    fn registered() -> Member {
        given(
            &register(
                &Member::default(),
                &Register {
                    member_id: "m1".into(),
                    identity: identity(),
                    display_name: "Li".into(),
                    region: "440300".into(),
                    now: at("2026-01-01T00:00:00Z"),
                },
            )
            .unwrap(),
        )
    }

    fn points(points: i64, request_id: &str, now: &str) -> Points {
        Points {
            points,
            reason: "test".into(),
            request_id: request_id.into(),
            now: at(now),
        }
    }

    #[test]
    fn registering_twice_is_refused() {
        let state = registered();
        assert_eq!(
            state.identities,
            vec![format!("phone_hash:{}", "ab".repeat(32))]
        );
        let again = Register {
            member_id: "m1".into(),
            identity: identity(),
            display_name: String::new(),
            region: String::new(),
            now: at("2026-01-02T00:00:00Z"),
        };
        assert!(matches!(
            register(&state, &again),
            Err(Rejection::AlreadyExists(_))
        ));
    }

    #[test]
    fn the_balance_is_the_sum_of_entries_and_never_goes_below_zero() {
        let rules = Rules::default();
        let mut state = registered();
        step(&mut state, |s| {
            award(s, &points(100, "a1", "2026-01-01T00:00:00Z"), &rules)
        });
        step(&mut state, |s| {
            award(s, &points(50, "a2", "2026-02-01T00:00:00Z"), &rules)
        });
        assert_eq!(state.balance_at(at("2026-03-01T00:00:00Z")), 150);
        step(&mut state, |s| {
            redeem(s, &points(120, "r1", "2026-03-01T00:00:00Z"))
        });
        assert_eq!(state.balance_at(at("2026-03-01T00:00:00Z")), 30);
        // The oldest lot was spent first.
        assert_eq!(state.lots.len(), 1);
        assert_eq!(state.lots[0].lot_id, lot_id("m1", "a2"));
        assert_eq!(state.lots[0].lot_id, "630d15c7-2ebb-57f7-a491-3ec27861900f");
        match redeem(&state, &points(31, "r2", "2026-03-01T00:00:00Z")) {
            Err(Rejection::FailedPrecondition(m)) => assert!(m.contains("balance is 30")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn points_expire_a_year_after_they_were_earned() {
        let rules = Rules::default();
        let mut state = registered();
        step(&mut state, |s| {
            award(s, &points(100, "old", "2026-01-01T00:00:00Z"), &rules)
        });
        step(&mut state, |s| {
            award(s, &points(10, "new", "2026-06-01T00:00:00Z"), &rules)
        });
        let later = "2027-01-02T00:00:00Z";
        assert_eq!(
            state.balance_at(at(later)),
            10,
            "expired points cannot be spent"
        );
        let events = step(&mut state, |s| award(s, &points(5, "more", later), &rules));
        match &events[0] {
            MembershipEvent::PointsExpired(e) => {
                assert_eq!(e.points, 100);
                assert_eq!(e.lot_ids, vec![lot_id("m1", "old")]);
            }
            other => panic!("expected the expiry entry first, got {other:?}"),
        }
        assert_eq!(state.balance_at(at(later)), 15);
        assert!(redeem(&state, &points(16, "r", later)).is_err());
    }

    #[test]
    fn bad_points_are_refused() {
        let rules = Rules::default();
        let state = registered();
        for bad in [0, -5, MAX_POINTS_PER_ENTRY + 1] {
            assert!(matches!(
                award(&state, &points(bad, "x", "2026-01-01T00:00:00Z"), &rules),
                Err(Rejection::Invalid(_))
            ));
        }
        assert!(matches!(
            award(
                &Member::default(),
                &points(5, "x", "2026-01-01T00:00:00Z"),
                &rules
            ),
            Err(Rejection::NotFound(_))
        ));
    }

    fn engagement(kind: pb::EngagementKind, _request_id: &str, when: &str) -> Engage {
        Engage {
            kind,
            occurred_at: at(when),
            now: at(when),
        }
    }

    #[test]
    fn a_member_qualifies_as_koc_by_the_seed_rule_and_lapses_when_the_window_moves_on() {
        use pb::EngagementKind::{Comment, Scan, Share};
        let rules = Rules::default();
        let mut state = registered();
        let mut all = Vec::new();
        let plan = [(Scan, 3), (Share, 2), (Comment, 5)];
        let mut n = 0;
        for (kind, count) in plan {
            for _ in 0..count {
                n += 1;
                let when = format!("2026-04-{:02}T10:00:00Z", n);
                all.extend(step(&mut state, |s| {
                    engage(s, &engagement(kind, &format!("e{n}"), &when), &rules)
                }));
            }
        }
        assert!(
            state.koc_qualified,
            "3 scans, 2 shares, 5 comments in 30 days qualify"
        );
        assert_eq!(state.tier, Tier::JuniorSharer);
        assert_eq!(
            all.iter()
                .filter(|e| matches!(e, MembershipEvent::KocQualified(_)))
                .count(),
            1
        );
        // A month and a half later a single comment finds the window empty: lapsed.
        let events = step(&mut state, |s| {
            engage(
                s,
                &engagement(Comment, "late", "2026-05-25T10:00:00Z"),
                &rules,
            )
        });
        assert!(
            events
                .iter()
                .any(|e| matches!(e, MembershipEvent::KocLapsed(_)))
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, MembershipEvent::TierChanged(t) if t.to_tier == "member"))
        );
        assert!(!state.koc_qualified);
    }

    #[test]
    fn gold_recommenders_score_high_in_the_window() {
        use pb::EngagementKind::{Comment, Scan, Share};
        let rules = Rules::default();
        let mut state = registered();
        let mut n = 0;
        for (kind, count) in [(Scan, 3), (Comment, 5), (Share, 9)] {
            for _ in 0..count {
                n += 1;
                let when = format!("2026-04-{:02}T10:00:00Z", n);
                step(&mut state, |s| {
                    engage(s, &engagement(kind, &format!("e{n}"), &when), &rules)
                });
            }
        }
        // 3 + 10 + 45 = 58: still junior. One more share: 63.
        assert_eq!(state.tier, Tier::JuniorSharer);
        step(&mut state, |s| {
            engage(s, &engagement(Share, "e99", "2026-04-20T10:00:00Z"), &rules)
        });
        assert_eq!(state.tier, Tier::GoldRecommender);
    }

    #[test]
    fn engagement_input_is_checked() {
        let rules = Rules::default();
        let state = registered();
        let now = at("2026-04-01T00:00:00Z");
        let future = Engage {
            occurred_at: now + Duration::hours(1),
            ..engagement(pb::EngagementKind::Share, "f", "2026-04-01T00:00:00Z")
        };
        assert!(matches!(
            engage(&state, &future, &rules),
            Err(Rejection::Invalid(_))
        ));
        let ancient = Engage {
            occurred_at: now - Duration::days(31),
            ..engagement(pb::EngagementKind::Share, "a", "2026-04-01T00:00:00Z")
        };
        assert!(matches!(
            engage(&state, &ancient, &rules),
            Err(Rejection::Invalid(_))
        ));
        let unspecified = engagement(pb::EngagementKind::Unspecified, "u", "2026-04-01T00:00:00Z");
        assert!(matches!(
            engage(&state, &unspecified, &rules),
            Err(Rejection::Invalid(_))
        ));
    }

    #[test]
    fn an_activation_registers_binds_awards_and_counts_a_scan() {
        let rules = Rules::default();
        let cmd = Activated {
            member_id: "m9".into(),
            identity: identity(),
            device_serial: "SN-1".into(),
            warranty_code: "warranty-b-1".into(),
            event_id: "ev-1".into(),
            activated_at: at("2026-04-01T00:00:00Z"),
            now: at("2026-04-01T00:00:01Z"),
        };
        let mut state = Member::default();
        let events = step(&mut state, |s| on_activation(s, &cmd, &rules));
        let types: Vec<&str> = events
            .iter()
            .map(|e| scanloop_eventstore::DomainEvent::event_type(e))
            .collect();
        assert_eq!(
            types,
            [
                "scanloop.membership.v1.MemberRegistered",
                "scanloop.membership.v1.DeviceBound",
                "scanloop.membership.v1.PointsEarned",
                "scanloop.membership.v1.EngagementRecorded",
            ]
        );
        assert_eq!(state.balance_at(cmd.now), 100);
        assert_eq!(state.lots[0].lot_id, lot_id("m9", "activation-points:ev-1"));
        // A second purchase by the same member: a second device and more points, no new member.
        let second = Activated {
            device_serial: "SN-2".into(),
            event_id: "ev-2".into(),
            ..cmd
        };
        let events = step(&mut state, |s| on_activation(s, &second, &rules));
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, MembershipEvent::MemberRegistered(_)))
        );
        assert_eq!(state.devices, vec!["SN-1".to_owned(), "SN-2".to_owned()]);
        assert_eq!(state.balance_at(second.now), 200);
    }

    #[test]
    fn snapshots_round_trip() {
        let rules = Rules::default();
        let mut state = registered();
        step(&mut state, |s| {
            award(s, &points(7, "a", "2026-01-01T00:00:00Z"), &rules)
        });
        let restored = Member::from_snapshot(&state.to_snapshot()).unwrap();
        assert_eq!(restored, state);
    }

    /// Records `plan` (kind, count) one a day from `first_day` of April 2026, 10:00.
    fn engaged(plan: &[(pb::EngagementKind, u32)], rules: &Rules) -> Member {
        let mut state = registered();
        let mut day = 0;
        for &(kind, count) in plan {
            for _ in 0..count {
                day += 1;
                let when = format!("2026-04-{day:02}T10:00:00Z");
                step(&mut state, |s| {
                    engage(s, &engagement(kind, &format!("e{day}"), &when), rules)
                });
            }
        }
        state
    }

    #[test]
    fn tick_writes_off_lots_when_they_expire_and_nothing_before() {
        let rules = Rules::default();
        let mut state = registered();
        step(&mut state, |s| {
            award(s, &points(100, "a1", "2026-01-01T00:00:00Z"), &rules)
        });
        step(&mut state, |s| {
            award(s, &points(10, "a2", "2026-06-01T00:00:00Z"), &rules)
        });
        step(&mut state, |s| {
            redeem(s, &points(30, "r1", "2026-07-01T00:00:00Z"))
        });
        assert_eq!(tick(&state, at("2026-12-31T23:59:59Z"), &rules), vec![]);
        let events = tick(&state, at("2027-01-01T00:00:00Z"), &rules);
        assert_eq!(
            events,
            vec![MembershipEvent::PointsExpired(pb::PointsExpired {
                member_id: "m1".into(),
                points: 70,
                lot_ids: vec!["2651539c-2f59-5e4f-8722-b4951133c491".into()],
            })]
        );
        for event in &events {
            state.apply(event);
        }
        assert_eq!(
            tick(&state, at("2027-01-01T00:00:00Z"), &rules),
            vec![],
            "a second run of the job changes nothing"
        );
        assert_eq!(state.balance_at(at("2027-01-01T00:00:00Z")), 10);
    }

    #[test]
    fn tick_lapses_a_koc_when_the_oldest_counted_engagement_leaves_the_window() {
        use pb::EngagementKind::{Comment, Scan, Share};
        let rules = Rules::default();
        // Scans on 1-3 April, shares on 4-5, comments on 6-10: qualified, junior sharer.
        let state = engaged(&[(Scan, 3), (Share, 2), (Comment, 5)], &rules);
        assert!(state.koc_qualified);
        assert_eq!(tick(&state, at("2026-05-01T09:59:59Z"), &rules), vec![]);
        // The 1 April scan stops counting 30 days later, at 10:00: two scans are too few.
        assert_eq!(
            tick(&state, at("2026-05-01T10:00:00Z"), &rules),
            vec![
                MembershipEvent::KocLapsed(pb::KocLapsed {
                    member_id: "m1".into(),
                    scans: 2,
                    shares: 2,
                    comments: 5,
                }),
                MembershipEvent::TierChanged(pb::TierChanged {
                    member_id: "m1".into(),
                    from_tier: "junior_sharer".into(),
                    to_tier: "member".into(),
                }),
            ]
        );
        assert_eq!(
            leaves_window(at("2026-04-01T10:00:00Z"), &rules),
            at("2026-05-01T10:00:00Z")
        );
    }

    #[test]
    fn tick_steps_a_gold_recommender_down_when_the_window_score_falls_below_the_bar() {
        use pb::EngagementKind::{Comment, Scan, Share};
        let rules = Rules::default();
        // A share on 1 April, then 3 scans, 5 comments and 9 more shares: 3 + 10 + 50 = 63.
        let state = engaged(&[(Share, 1), (Scan, 3), (Comment, 5), (Share, 9)], &rules);
        assert_eq!(state.tier, Tier::GoldRecommender);
        // Without the first share: 58, still qualified (9 shares), no longer gold.
        assert_eq!(
            tick(&state, at("2026-05-01T10:00:00Z"), &rules),
            vec![MembershipEvent::TierChanged(pb::TierChanged {
                member_id: "m1".into(),
                from_tier: "gold_recommender".into(),
                to_tier: "junior_sharer".into(),
            })]
        );
    }

    #[test]
    fn tick_does_nothing_for_an_unknown_member() {
        assert_eq!(
            tick(
                &Member::default(),
                at("2030-01-01T00:00:00Z"),
                &Rules::default()
            ),
            vec![]
        );
    }
}
