//! What the services' topics say about the run: each level-1 commission accrued (payouts'
//! topic, with the loop's latency) and each hold or rejection of a referred sale (referral's),
//! and the wait after the load until every sale has its outcome.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use prost::Message as _;
use rdkafka::Message as _;
use scanloop_bus::EventEnvelope;
use scanloop_proto::payouts::v1 as pay;
use scanloop_proto::referral::v1 as refl;
use scanloop_proto::time::from_timestamp;

use super::outcomes::Outcomes;
use super::{lock, report};

/// Reads payouts' topic during the run: each level-1 CommissionAccrued of the run's brands
/// gives the loop's latency (activation recorded → commission accrued).
pub(super) fn watch_accruals(
    brokers: &str,
    topic: &str,
    brands: Vec<String>,
    since: chrono::DateTime<Utc>,
    watched: Arc<Mutex<report::Loop>>,
    outcomes: Arc<Mutex<Outcomes>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    watch_topic(brokers, topic, brands, move |envelope| {
        note_accrual(envelope, since, &watched, &outcomes);
    })
}

/// Reads referral's topic during the run: the holds and rejections of the run's sales.
pub(super) fn watch_referrals(
    brokers: &str,
    topic: &str,
    brands: Vec<String>,
    outcomes: Arc<Mutex<Outcomes>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    watch_topic(brokers, topic, brands, move |envelope| {
        note_referral(envelope, &outcomes);
    })
}

/// Hands `note` each envelope of the run's brands published to `topic` from now on.
fn watch_topic(
    brokers: &str,
    topic: &str,
    brands: Vec<String>,
    note: impl Fn(EventEnvelope) + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let consumer = crate::topic_tail::from_end(brokers, topic)?;
    let topic = topic.to_owned();
    Ok(tokio::spawn(async move {
        let mut errors = 0u32;
        loop {
            match consumer.recv().await {
                Ok(message) => {
                    let Ok(envelope) = EventEnvelope::decode(message.payload().unwrap_or_default())
                    else {
                        continue;
                    };
                    if brands.contains(&envelope.brand_id) {
                        note(envelope);
                    }
                }
                Err(error) => {
                    errors += 1;
                    if errors <= 3 {
                        eprintln!("  reading {topic}: {error}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

fn note_referral(envelope: EventEnvelope, outcomes: &Mutex<Outcomes>) {
    let payload = envelope.payload.as_slice();
    match envelope.event_type.as_str() {
        "scanloop.referral.v1.ReferralHeld" => {
            let Ok(held) = refl::ReferralHeld::decode(payload) else {
                return;
            };
            let reasons: Vec<&str> = held
                .reasons
                .iter()
                .map(|&r| refl::HoldReason::try_from(r).map_or("UNKNOWN", |r| r.as_str_name()))
                .collect();
            if let Some(attribution) = held.attribution {
                lock(outcomes).held(&attribution.warranty_stream_id, reasons.join("+"));
            }
        }
        "scanloop.referral.v1.ReferralRejected" => {
            let Ok(rejected) = refl::ReferralRejected::decode(payload) else {
                return;
            };
            let reason = refl::RejectionReason::try_from(rejected.reason)
                .map_or("UNKNOWN", |r| r.as_str_name());
            lock(outcomes).rejected(&rejected.warranty_stream_id, reason.to_owned());
        }
        _ => {}
    }
}

fn note_accrual(
    envelope: EventEnvelope,
    since: chrono::DateTime<Utc>,
    watched: &Mutex<report::Loop>,
    outcomes: &Mutex<Outcomes>,
) {
    if envelope.event_type != "scanloop.payouts.v1.CommissionAccrued" {
        return;
    }
    let Ok(accrued) = pay::CommissionAccrued::decode(envelope.payload.as_slice()) else {
        return;
    };
    let first = {
        let mut outcomes = lock(outcomes);
        if accrued.role == pay::CommissionRole::Level1 as i32 {
            outcomes.accrued(&accrued.warranty_stream_id);
        }
        outcomes.accrual(
            &accrued.warranty_stream_id,
            accrued.role,
            &envelope.event_id,
        )
    };
    // A commission delivered again (a publisher's repeat after a crash) is not another sale.
    let (true, Some(activated), Some(recorded)) = (
        first,
        from_timestamp(accrued.sale_activated_at.as_ref()),
        from_timestamp(envelope.recorded_at.as_ref()),
    ) else {
        return;
    };
    if activated < since {
        return;
    }
    let mut watched = lock(watched);
    if accrued.role == pay::CommissionRole::Level1 as i32 {
        let latency = (recorded - activated).to_std().unwrap_or_default();
        watched.record_level1(latency);
    } else if accrued.role == pay::CommissionRole::Level2 as i32 {
        watched.level2 += 1;
    }
}

/// Waits until every referred sale (and fraud attempt) has an outcome, or outcomes stop coming
/// for 10 s, or `within` passes; answers how long it waited.
pub(super) async fn drain(outcomes: &Mutex<Outcomes>, within: Duration) -> Duration {
    let started = Instant::now();
    let (mut left, mut since_change) = (usize::MAX, Instant::now());
    while started.elapsed() < within {
        let now = lock(outcomes).in_flight();
        if now == 0 {
            break;
        }
        if now != left {
            (left, since_change) = (now, Instant::now());
        } else if since_change.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    started.elapsed()
}
