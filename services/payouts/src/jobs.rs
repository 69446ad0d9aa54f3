//! Vesting on time: a commission vests when its sale's return window has passed, whether or not
//! anything else happens to the sale. On the shared durable timers (`scanloop-timers`):
//! - [`VestingSchedule`] says what the shared scheduler (a consumer of this service's own
//!   events, group `payouts-timers`) writes: a vesting run of the sale at each accrued
//!   commission's `vests_at`;
//! - [`Vesting`], the timer job's handler, vests what is due on the sale as of the clock's now.
//!
//! Scheduling from the stored event rather than in the command path means a crash between the
//! append and the timer write loses nothing (the outbox publishes every stored event, and the
//! consumer commits only after the timer is written). Two job instances, a crash after vesting
//! and before the item's delete, or a redelivered accrual all end in the same state: the sale
//! stream's conditional append lets one vesting decision be written, and a second finds nothing
//! due.

use std::sync::Arc;

use scanloop_bus::EventEnvelope;
use scanloop_eventstore::AppendMeta;
use scanloop_proto::time::from_timestamp;
use scanloop_service::ServiceError;
use scanloop_service::jobs::TimersFor;
use scanloop_timers::{DueTimer, Timer, TimerError, TimerHandler};
use tracing::Instrument as _;

use crate::app::Payouts;
use crate::domain::PayoutsEvent;

/// The one kind of timer payouts schedules: vest what is due on a sale.
pub const VEST: &str = "payouts.vest";

/// Schedules vesting from accruals.
pub struct VestingSchedule;

impl TimersFor for VestingSchedule {
    type Event = PayoutsEvent;

    /// The vesting run an event calls for: one per accrued commission, keyed by it, so a
    /// redelivered accrual schedules the same item.
    fn timer_for(&self, envelope: &EventEnvelope, event: &PayoutsEvent) -> Option<Timer> {
        let PayoutsEvent::CommissionAccrued(e) = event else {
            return None;
        };
        Some(Timer {
            due_at: from_timestamp(e.vests_at.as_ref())?,
            brand_id: envelope.brand_id.clone(),
            stream_id: envelope.stream_id.clone(),
            kind: VEST.to_owned(),
            key: e.commission_id.clone(),
        })
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["scanloop.payouts.v1.CommissionAccrued"]
    }
}

/// The timer job's handler: vests what is due on the sale a timer names.
pub struct Vesting {
    app: Arc<Payouts>,
}

impl Vesting {
    pub fn new(app: Arc<Payouts>) -> Self {
        Self { app }
    }
}

impl TimerHandler for Vesting {
    async fn handle(&self, timer: &DueTimer) -> Result<(), TimerError> {
        if timer.kind != VEST || !timer.stream_id.starts_with("sale-") {
            return Err(TimerError::Discard(format!(
                "not a payouts vesting: kind {:?} on {:?}",
                timer.kind, timer.stream_id
            )));
        }
        let span = tracing::info_span!("payouts.vest", stream_id = %timer.stream_id);
        async {
            let meta = AppendMeta {
                brand_id: timer.brand_id.clone(),
                correlation_id: uuid::Uuid::new_v4().to_string(),
                causation_id: format!("timer:{}", timer.key),
                traceparent: scanloop_telemetry::current_traceparent(),
                // A scheduled job, not a person: named so (token subjects never start with
                // "system:").
                actor: "system:payouts/vesting".into(),
                request: None,
            };
            match self.app.vest(&meta, &timer.stream_id).await {
                Ok(()) => Ok(()),
                Err(e @ (ServiceError::Aborted(_) | ServiceError::Unavailable(_))) => {
                    Err(TimerError::Retry(anyhow::anyhow!(e)))
                }
                Err(e) => Err(TimerError::Discard(e.to_string())),
            }
        }
        .instrument(span)
        .await
    }
}
