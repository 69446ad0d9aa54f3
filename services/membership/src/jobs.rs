//! Standing changes on time, not at the member's next command: points expire and KOC standing
//! lapses when the clock says so, and the events, GetMember and the leaderboard agree.
//!
//! Two parts, both on the shared durable timers (`scanloop-timers`):
//! - [`ReviewSchedule`] says what the shared scheduler (a consumer of this service's own events,
//!   group `membership-timers`) writes: a review of the member for every moment its standing
//!   can change by time alone:
//!   each lot's expiry (from `PointsEarned`) and each engagement's leaving the rolling window
//!   (from `EngagementRecorded`, which covers "the oldest counted engagement leaves" of a
//!   qualified member, and a gold recommender's score falling below the bar).
//! - [`MemberReview`], the timer job's handler, runs [`member::tick`] on the member's stream as
//!   of now.
//!
//! Why schedule from the events rather than in the command path: a process can crash between
//! its append and a timer write, but not lose an event that is stored: the outbox publishes
//! every stored event at least once, and the consumer commits its offset only after the timer is
//! written. Redelivery schedules the same key for the same time, which is the same item. A new
//! deployment's consumer group starts from the topic's beginning, so it also schedules the
//! reviews of members who existed before this job did (those already due fire at once).
//!
//! Reviews for members who are not KOC and have no lot expiring are cheap no-ops (a load that
//! decides nothing); scheduling per engagement needs no state in the consumer and can miss no
//! moment, which deciding "the next moment that matters" from a snapshot could.

use std::sync::Arc;

use scanloop_bus::EventEnvelope;
use scanloop_eventstore::AppendMeta;
use scanloop_proto::time::from_timestamp;
use scanloop_service::ServiceError;
use scanloop_service::jobs::TimersFor;
use scanloop_timers::{DueTimer, Timer, TimerError, TimerHandler};
use tracing::Instrument as _;

use crate::app::Membership;
use crate::domain::MembershipEvent;
use crate::domain::member::{self, Rules};

/// The one kind of timer membership schedules: re-evaluate a member as of now.
pub const REVIEW: &str = "membership.review";

/// Schedules member reviews from the member streams' events.
pub struct ReviewSchedule {
    rules: Rules,
}

impl ReviewSchedule {
    pub fn new(rules: Rules) -> Self {
        Self { rules }
    }
}

impl TimersFor for ReviewSchedule {
    type Event = MembershipEvent;

    /// The review an event calls for, if any. Keys name the reason, so a redelivered event
    /// schedules the same item.
    fn timer_for(&self, envelope: &EventEnvelope, event: &MembershipEvent) -> Option<Timer> {
        let (due_at, key) = match event {
            MembershipEvent::PointsEarned(e) => (
                from_timestamp(e.expires_at.as_ref())?,
                format!("expiry:{}", e.lot_id),
            ),
            MembershipEvent::EngagementRecorded(e) => {
                let occurred_at = from_timestamp(e.occurred_at.as_ref())?;
                (
                    member::leaves_window(occurred_at, &self.rules),
                    format!("window:{}", occurred_at.timestamp_millis()),
                )
            }
            _ => return None,
        };
        Some(Timer {
            due_at,
            brand_id: envelope.brand_id.clone(),
            stream_id: envelope.stream_id.clone(),
            kind: REVIEW.to_owned(),
            key,
        })
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            "scanloop.membership.v1.PointsEarned",
            "scanloop.membership.v1.EngagementRecorded",
        ]
    }
}

/// The timer job's handler: reviews the member named by a due timer.
pub struct MemberReview {
    app: Arc<Membership>,
}

impl MemberReview {
    pub fn new(app: Arc<Membership>) -> Self {
        Self { app }
    }
}

impl TimerHandler for MemberReview {
    async fn handle(&self, timer: &DueTimer) -> Result<(), TimerError> {
        if timer.kind != REVIEW || !timer.stream_id.starts_with("member-") {
            return Err(TimerError::Discard(format!(
                "not a membership review: kind {:?} on {:?}",
                timer.kind, timer.stream_id
            )));
        }
        let span = tracing::info_span!(
            "membership.review",
            stream_id = %timer.stream_id,
            key = %timer.key,
        );
        async {
            let meta = AppendMeta {
                brand_id: timer.brand_id.clone(),
                correlation_id: uuid::Uuid::new_v4().to_string(),
                causation_id: format!("timer:{}", timer.key),
                traceparent: scanloop_telemetry::current_traceparent(),
                // A scheduled job, not a person: named so (token subjects never start with
                // "system:").
                actor: "system:membership/review".into(),
                request: None,
            };
            match self.app.review(&meta, &timer.stream_id).await {
                Ok(_) => Ok(()),
                // Contention and outages pass: the item stays and fires again.
                Err(e @ (ServiceError::Aborted(_) | ServiceError::Unavailable(_))) => {
                    Err(TimerError::Retry(anyhow::anyhow!(e)))
                }
                // Anything else (a corrupt stream) fails the same way every time.
                Err(e) => Err(TimerError::Discard(e.to_string())),
            }
        }
        .instrument(span)
        .await
    }
}
