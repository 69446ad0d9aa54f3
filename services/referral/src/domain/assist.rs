//! Assist campaigns (seed 000: "invite 3 friends → +1 year"). A brand defines a campaign; a member
//! binds it to one of their warranties; each friend's attributed purchase through the member's
//! campaign link progresses it; at the goal, activation extends the warranty once.
//!
//! Only verified purchases count, never clicks or shares: WeChat's external-link rules ban
//! "help me (助力)" mechanics, and a purchase-based goal stays clear of them.

use chrono::{DateTime, Duration, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use uuid::Uuid;

use super::{ReferralEvent, Rejection};

pub fn campaign_stream_id(brand_id: &str, campaign_id: &str) -> String {
    format!("campaign-{brand_id}-{campaign_id}")
}

pub fn stream_id(brand_id: &str, assist_id: &str) -> String {
    format!("assist-{brand_id}-{assist_id}")
}

const ASSIST_NAMESPACE: Uuid = Uuid::from_u128(0x5ca7_100b_3e3b_4e55_9d1e_0000_0000_0005);

/// One assist per member and campaign: its id derives from both.
pub fn assist_id(brand_id: &str, member_id: &str, campaign_id: &str) -> String {
    Uuid::new_v5(
        &ASSIST_NAMESPACE,
        format!("{brand_id}\0{member_id}\0{campaign_id}").as_bytes(),
    )
    .to_string()
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct CampaignState {
    pub campaign: Option<pb::Campaign>,
}

impl Aggregate for CampaignState {
    type Event = ReferralEvent;
    fn apply(&mut self, event: &ReferralEvent) {
        if let ReferralEvent::CampaignDefined(e) = event {
            self.campaign = e.campaign.clone();
        }
    }
}

/// Checks a campaign's terms: goal 1..=100 friends, window 1..=365 days, 1..=60 months.
pub fn validate_campaign(campaign: &pb::Campaign) -> Result<(), Rejection> {
    let invalid = |m: &str| Err(Rejection::Invalid(m.to_owned()));
    if !(1..=100).contains(&campaign.goal_friends) {
        return invalid("goal_friends must be 1..=100");
    }
    if !(1..=365).contains(&campaign.window_days) {
        return invalid("window_days must be 1..=365");
    }
    if !(1..=60).contains(&campaign.extension_months) {
        return invalid("extension_months must be 1..=60");
    }
    if campaign.name.chars().count() > 100 {
        return invalid("name must be at most 100 characters");
    }
    Ok(())
}

/// Defines the campaign or changes its terms (assists already started keep theirs).
pub fn define(
    state: &CampaignState,
    campaign: pb::Campaign,
) -> Result<Vec<ReferralEvent>, Rejection> {
    validate_campaign(&campaign)?;
    if state.campaign.as_ref() == Some(&campaign) {
        return Ok(vec![]);
    }
    Ok(vec![ReferralEvent::CampaignDefined(pb::CampaignDefined {
        campaign: Some(campaign),
    })])
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Assist {
    pub started: Option<pb::AssistStarted>,
    /// Attributions counted toward the goal.
    pub friends: Vec<String>,
    /// Attributions taken back (returned, or revoked after review): they never count again,
    /// even when an old approval's retry runs its follow-up once more.
    pub taken_back: Vec<String>,
    pub completed: bool,
    pub revoked: bool,
}

impl Assist {
    pub fn ends_at(&self) -> Option<DateTime<Utc>> {
        self.started
            .as_ref()
            .and_then(|s| from_timestamp(s.ends_at.as_ref()))
    }

    pub fn status(&self, now: DateTime<Utc>) -> pb::AssistStatus {
        match (&self.started, self.completed, self.revoked) {
            (None, _, _) => pb::AssistStatus::Unspecified,
            (_, true, _) => pb::AssistStatus::Completed,
            (_, _, true) => pb::AssistStatus::Revoked,
            // The window passed without the goal: nothing can count any more.
            _ if self.ends_at().is_some_and(|end| end < now) => pb::AssistStatus::Revoked,
            _ => pb::AssistStatus::Active,
        }
    }
}

impl Aggregate for Assist {
    type Event = ReferralEvent;
    fn apply(&mut self, event: &ReferralEvent) {
        match event {
            ReferralEvent::AssistStarted(e) => self.started = Some(e.clone()),
            ReferralEvent::AssistProgressed(e) if e.taken_back => {
                self.friends.retain(|f| f != &e.attribution_id);
                self.taken_back.push(e.attribution_id.clone());
            }
            ReferralEvent::AssistProgressed(e) => self.friends.push(e.attribution_id.clone()),
            ReferralEvent::AssistCompleted(_) => self.completed = true,
            ReferralEvent::AssistRevoked(_) => self.revoked = true,
            _ => {}
        }
    }
}

pub struct Start {
    pub assist_id: String,
    pub member_id: String,
    pub campaign: pb::Campaign,
    pub warranty: pb::WarrantyRef,
    pub now: DateTime<Utc>,
}

pub fn start(state: &Assist, cmd: &Start) -> Result<Vec<ReferralEvent>, Rejection> {
    if state.started.is_some() {
        return Err(Rejection::AlreadyExists(format!(
            "member {} already has an assist in campaign {}",
            cmd.member_id, cmd.campaign.campaign_id
        )));
    }
    let ends_at = cmd.now + Duration::days(i64::from(cmd.campaign.window_days));
    Ok(vec![ReferralEvent::AssistStarted(pb::AssistStarted {
        assist_id: cmd.assist_id.clone(),
        member_id: cmd.member_id.clone(),
        campaign_id: cmd.campaign.campaign_id.clone(),
        warranty: Some(cmd.warranty.clone()),
        goal: cmd.campaign.goal_friends,
        extension_months: cmd.campaign.extension_months,
        started_at: Some(to_timestamp(cmd.now)),
        ends_at: Some(to_timestamp(ends_at)),
    })])
}

/// A friend's attributed purchase at `activated_at`: counts once, inside the window, while the
/// assist is active; completes it at the goal.
pub fn progress(
    state: &Assist,
    attribution_id: &str,
    activated_at: DateTime<Utc>,
) -> Result<Vec<ReferralEvent>, Rejection> {
    let Some(started) = &state.started else {
        return Ok(vec![]);
    };
    let in_window = from_timestamp(started.started_at.as_ref()).is_some_and(|s| activated_at >= s)
        && state.ends_at().is_some_and(|end| activated_at <= end);
    if state.completed
        || state.revoked
        || !in_window
        || state.friends.iter().any(|f| f == attribution_id)
        || state.taken_back.iter().any(|f| f == attribution_id)
    {
        return Ok(vec![]);
    }
    let progress = state.friends.len() as u32 + 1;
    let mut events = vec![ReferralEvent::AssistProgressed(pb::AssistProgressed {
        assist_id: started.assist_id.clone(),
        member_id: started.member_id.clone(),
        campaign_id: started.campaign_id.clone(),
        attribution_id: attribution_id.to_owned(),
        progress,
        goal: started.goal,
        taken_back: false,
    })];
    if progress >= started.goal {
        events.push(ReferralEvent::AssistCompleted(pb::AssistCompleted {
            assist_id: started.assist_id.clone(),
            member_id: started.member_id.clone(),
            campaign_id: started.campaign_id.clone(),
            warranty: started.warranty.clone(),
            extension_months: started.extension_months,
        }));
    }
    Ok(events)
}

/// A counted friend returned their purchase, or a reviewer revoked its attribution: the
/// progress goes back, unless the assist already completed (the extension stands).
pub fn take_back(state: &Assist, attribution_id: &str) -> Result<Vec<ReferralEvent>, Rejection> {
    let Some(started) = &state.started else {
        return Ok(vec![]);
    };
    if state.completed || state.revoked || !state.friends.iter().any(|f| f == attribution_id) {
        return Ok(vec![]);
    }
    Ok(vec![ReferralEvent::AssistProgressed(
        pb::AssistProgressed {
            assist_id: started.assist_id.clone(),
            member_id: started.member_id.clone(),
            campaign_id: started.campaign_id.clone(),
            attribution_id: attribution_id.to_owned(),
            progress: state.friends.len() as u32 - 1,
            goal: started.goal,
            taken_back: true,
        },
    )])
}

/// The bound warranty was returned before the goal: the assist ends.
pub fn revoke(state: &Assist, reason: &str) -> Result<Vec<ReferralEvent>, Rejection> {
    let Some(started) = &state.started else {
        return Ok(vec![]);
    };
    if state.completed || state.revoked {
        return Ok(vec![]);
    }
    Ok(vec![ReferralEvent::AssistRevoked(pb::AssistRevoked {
        assist_id: started.assist_id.clone(),
        member_id: started.member_id.clone(),
        campaign_id: started.campaign_id.clone(),
        reason: reason.to_owned(),
    })])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign() -> pb::Campaign {
        pb::Campaign {
            campaign_id: "three-friends".into(),
            name: "3 friends, +1 year".into(),
            goal_friends: 3,
            window_days: 30,
            extension_months: 12,
        }
    }

    fn started(now: DateTime<Utc>) -> Assist {
        let mut assist = Assist::default();
        let events = start(
            &assist,
            &Start {
                assist_id: "as1".into(),
                member_id: "a".into(),
                campaign: campaign(),
                warranty: pb::WarrantyRef {
                    batch_id: "b".into(),
                    serial: 7,
                },
                now,
            },
        )
        .unwrap();
        events.iter().for_each(|e| assist.apply(e));
        assist
    }

    fn run(
        assist: &mut Assist,
        decide: impl FnOnce(&Assist) -> Result<Vec<ReferralEvent>, Rejection>,
    ) -> Vec<ReferralEvent> {
        let events = decide(assist).unwrap();
        events.iter().for_each(|e| assist.apply(e));
        events
    }

    #[test]
    fn three_distinct_purchases_complete_it_once_naming_the_warranty_and_months() {
        let now = Utc::now();
        let mut assist = started(now);
        let at = now + Duration::days(1);
        assert_eq!(run(&mut assist, |a| progress(a, "f1", at)).len(), 1);
        // The same friend again counts nothing.
        assert!(progress(&assist, "f1", at).unwrap().is_empty());
        run(&mut assist, |a| progress(a, "f2", at));
        let last = run(&mut assist, |a| progress(a, "f3", at));
        assert_eq!(last.len(), 2);
        let ReferralEvent::AssistCompleted(done) = &last[1] else {
            panic!("expected completion, got {last:?}");
        };
        assert_eq!(done.extension_months, 12);
        assert_eq!(done.warranty.as_ref().unwrap().serial, 7);
        assert!(progress(&assist, "f4", at).unwrap().is_empty());
        // A return after completion takes nothing back.
        assert!(take_back(&assist, "f1").unwrap().is_empty());
        assert_eq!(assist.status(at), pb::AssistStatus::Completed);
    }

    #[test]
    fn a_return_inside_the_window_takes_progress_back_and_late_purchases_do_not_count() {
        let now = Utc::now();
        let mut assist = started(now);
        run(&mut assist, |a| progress(a, "f1", now));
        run(&mut assist, |a| progress(a, "f2", now));
        let back = run(&mut assist, |a| take_back(a, "f1"));
        let ReferralEvent::AssistProgressed(p) = &back[0] else {
            panic!("expected progress, got {back:?}");
        };
        assert_eq!((p.progress, p.taken_back), (1, true));
        assert_eq!(assist.friends, vec!["f2".to_owned()]);
        // Taken back for good: the same attribution never counts again.
        assert!(progress(&assist, "f1", now).unwrap().is_empty());
        assert!(
            progress(&assist, "late", now + Duration::days(31))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            assist.status(now + Duration::days(31)),
            pb::AssistStatus::Revoked
        );
        run(&mut assist, |a| revoke(a, "warranty returned"));
        assert!(progress(&assist, "f3", now).unwrap().is_empty());
    }

    #[test]
    fn campaigns_and_assists_are_checked() {
        assert!(define(&CampaignState::default(), campaign()).is_ok());
        for bad in [
            pb::Campaign {
                goal_friends: 0,
                ..campaign()
            },
            pb::Campaign {
                window_days: 400,
                ..campaign()
            },
            pb::Campaign {
                extension_months: 0,
                ..campaign()
            },
        ] {
            assert!(matches!(
                define(&CampaignState::default(), bad),
                Err(Rejection::Invalid(_))
            ));
        }
        let now = Utc::now();
        let assist = started(now);
        assert!(matches!(
            start(
                &assist,
                &Start {
                    assist_id: "as1".into(),
                    member_id: "a".into(),
                    campaign: campaign(),
                    warranty: pb::WarrantyRef::default(),
                    now,
                }
            ),
            Err(Rejection::AlreadyExists(_))
        ));
        // Fixed: re-keying would orphan every running assist.
        assert_eq!(
            assist_id("acme", "m", "c"),
            "5e5b7c8e-9976-52d9-b420-8afd3145465d"
        );
        assert_ne!(assist_id("acme", "m", "c"), assist_id("acme", "m", "d"));
    }
}
