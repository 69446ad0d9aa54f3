//! Activation's reaction to referral events: a completed assist campaign extends the warranty it
//! was bound to, once per assist.

use std::sync::Arc;

use scanloop_bus::{EventEnvelope, EventHandler, HandlerError};
use scanloop_eventstore::{AppendMeta, RequestKey};
use scanloop_proto::referral::v1 as referral;
use scanloop_service::ServiceError;
use scanloop_service::reaction::{caused_by, decode_v1};
use uuid::Uuid;

use crate::app::Activation;

const ASSIST_COMPLETED: &str = "scanloop.referral.v1.AssistCompleted";
/// Every reaction to a completion is the same kind of command; its request id (the assist)
/// tells them apart.
const REACTION_FINGERPRINT: &[u8] = b"activation: reaction to AssistCompleted";

pub struct AssistReaction {
    app: Arc<Activation>,
}

impl AssistReaction {
    pub fn new(app: Arc<Activation>) -> Self {
        Self { app }
    }
}

/// What a completion asks for, checked.
#[derive(Debug, PartialEq)]
struct Completion {
    assist_id: String,
    batch_id: Uuid,
    serial: u32,
    months: u32,
}

/// Reads the completion of `envelope`; whatever cannot be read never will be (poison).
fn completion(envelope: &EventEnvelope) -> Result<Completion, HandlerError> {
    // Version 1 is the only AssistCompleted there is; a newer one is not guessed at.
    let completed: referral::AssistCompleted = decode_v1(envelope, "activation")?;
    let poison = |why: String| HandlerError::Poison(format!("{ASSIST_COMPLETED}: {why}"));
    if completed.assist_id.trim().is_empty() {
        return Err(poison("no assist id".into()));
    }
    let warranty = completed
        .warranty
        .ok_or_else(|| poison(format!("assist {} names no warranty", completed.assist_id)))?;
    let batch_id = Uuid::parse_str(&warranty.batch_id).map_err(|_| {
        poison(format!(
            "assist {}: batch id {:?} is not a UUID",
            completed.assist_id, warranty.batch_id
        ))
    })?;
    let serial = u32::try_from(warranty.serial).map_err(|_| {
        poison(format!(
            "assist {}: serial {} was never printed",
            completed.assist_id, warranty.serial
        ))
    })?;
    Ok(Completion {
        assist_id: completed.assist_id,
        batch_id,
        serial,
        months: completed.extension_months,
    })
}

/// What the runner does with the extension's outcome.
fn settle(assist_id: &str, outcome: Result<(), ServiceError>) -> Result<(), HandlerError> {
    match outcome {
        Ok(()) => Ok(()),
        // Contention and outages pass; retrying later is right.
        Err(e @ (ServiceError::Aborted(_) | ServiceError::Unavailable(_))) => {
            Err(HandlerError::Transient(anyhow::anyhow!(e)))
        }
        // The warranty is not active: never activated, or voided because the unit went back.
        // Retrying cannot change that (a resale would be someone else's warranty), and it is a
        // business outcome, not a fault for an operator: the reward lapses. Logged and done, so
        // the events behind it go on; a dead letter would only be noise to clear.
        Err(ServiceError::FailedPrecondition(why)) => {
            tracing::warn!(
                assist_id,
                reason = %why,
                "assist completed for a warranty that is not active: nothing extended"
            );
            Ok(())
        }
        // A batch never issued, a serial never printed, months out of range, a request id taken
        // by another command: referral sent what cannot be. Dead-letter it with the reason, for
        // someone to look at.
        Err(e) => Err(HandlerError::Poison(format!("assist {assist_id}: {e}"))),
    }
}

impl EventHandler for AssistReaction {
    async fn handle(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        if envelope.event_type != ASSIST_COMPLETED {
            return Ok(());
        }
        let completion = completion(envelope)?;
        let meta = AppendMeta {
            // Named by the assist, not the event: a second completion event of one assist (a
            // replay, a republish) is a repeat as well as a redelivery is.
            request: Some(RequestKey {
                request_id: format!("assist:{}", completion.assist_id),
                fingerprint: REACTION_FINGERPRINT.to_vec(),
            }),
            ..caused_by(envelope)
        };
        let outcome = self
            .app
            .extend_for_assist(
                &meta,
                completion.batch_id,
                completion.serial,
                &completion.assist_id,
                completion.months,
            )
            .await
            .map(|_| ());
        settle(&completion.assist_id, outcome)
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[ASSIST_COMPLETED])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use referral::WarrantyRef;

    const BATCH: &str = "0b9f2b7e-4d1c-4a43-9b7e-3f2a1c0d9e11";

    fn envelope(completed: &referral::AssistCompleted, schema_version: u32) -> EventEnvelope {
        EventEnvelope {
            event_type: ASSIST_COMPLETED.into(),
            schema_version,
            brand_id: "acme".into(),
            payload: completed.encode_to_vec(),
            ..EventEnvelope::default()
        }
    }

    fn completed(batch_id: &str, serial: u64) -> referral::AssistCompleted {
        referral::AssistCompleted {
            assist_id: "a-1".into(),
            member_id: "m-1".into(),
            campaign_id: "c-1".into(),
            warranty: Some(WarrantyRef {
                batch_id: batch_id.into(),
                serial,
            }),
            extension_months: 12,
        }
    }

    fn poison_reason(result: Result<Completion, HandlerError>) -> String {
        match result {
            Err(HandlerError::Poison(reason)) => reason,
            other => panic!("expected poison, got {other:?}"),
        }
    }

    #[test]
    fn a_completion_names_its_warranty_and_months() {
        assert_eq!(
            completion(&envelope(&completed(BATCH, 7), 1)).unwrap(),
            Completion {
                assist_id: "a-1".into(),
                batch_id: Uuid::parse_str(BATCH).unwrap(),
                serial: 7,
                months: 12,
            }
        );
    }

    #[test]
    fn unreadable_completions_are_poison_with_the_reason() {
        let newer = poison_reason(completion(&envelope(&completed(BATCH, 7), 2)));
        assert!(newer.contains("upgrade activation"), "{newer}");
        let bad_batch = poison_reason(completion(&envelope(&completed("b-1", 7), 1)));
        assert!(bad_batch.contains("not a UUID"), "{bad_batch}");
        let huge = poison_reason(completion(&envelope(&completed(BATCH, 1 << 40), 1)));
        assert!(huge.contains("never printed"), "{huge}");
        let mut no_warranty = completed(BATCH, 7);
        no_warranty.warranty = None;
        let none = poison_reason(completion(&envelope(&no_warranty, 1)));
        assert!(none.contains("names no warranty"), "{none}");
        let mut garbage = envelope(&completed(BATCH, 7), 1);
        garbage.payload = vec![0xff, 0xff, 0xff];
        poison_reason(completion(&garbage));
    }

    #[test]
    fn an_inactive_warranty_is_done_outages_retry_and_impossible_requests_are_poison() {
        assert!(settle("a", Err(ServiceError::FailedPrecondition("voided".into()))).is_ok());
        assert!(
            settle("a", Err(ServiceError::Unavailable("db".into())))
                .unwrap_err()
                .is_transient()
        );
        assert!(
            settle("a", Err(ServiceError::Aborted("busy".into())))
                .unwrap_err()
                .is_transient()
        );
        for permanent in [
            ServiceError::NotFound("batch".into()),
            ServiceError::InvalidArgument("months".into()),
        ] {
            assert!(matches!(
                settle("a", Err(permanent)),
                Err(HandlerError::Poison(_))
            ));
        }
    }
}
