//! Membership's reaction to activation events: a warranty activation makes its buyer a member.

use std::sync::Arc;

use prost::Message as _;
use scanloop_bus::{EventEnvelope, EventHandler, HandlerError};
use scanloop_eventstore::{AppendMeta, RequestKey};
use scanloop_proto::activation::v1 as activation;
use scanloop_proto::time::from_timestamp;
use scanloop_service::ServiceError;

use crate::app::Membership;

const WARRANTY_ACTIVATED: &str = "scanloop.activation.v1.WarrantyActivated";
/// Every reaction to an activation is the same kind of command; its request id tells them apart.
const REACTION_FINGERPRINT: &[u8] = b"membership: reaction to WarrantyActivated";

pub struct ActivationReaction {
    app: Arc<Membership>,
}

impl ActivationReaction {
    pub fn new(app: Arc<Membership>) -> Self {
        Self { app }
    }
}

impl EventHandler for ActivationReaction {
    async fn handle(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        if envelope.event_type != WARRANTY_ACTIVATED {
            return Ok(());
        }
        // Version 1 is the only WarrantyActivated there is; a newer one is not guessed at.
        if envelope.schema_version > 1 {
            return Err(HandlerError::Poison(format!(
                "{WARRANTY_ACTIVATED} schema version {} is newer than this service reads (1): \
                 upgrade membership",
                envelope.schema_version
            )));
        }
        let activated = activation::WarrantyActivated::decode(envelope.payload.as_slice())
            .map_err(|e| HandlerError::Poison(format!("{WARRANTY_ACTIVATED}: {e}")))?;
        let identity = activated
            .buyer
            .clone()
            .ok_or_else(|| HandlerError::Poison("activation without a buyer".into()))?;
        let activated_at = from_timestamp(activated.activated_at.as_ref())
            .or_else(|| from_timestamp(envelope.occurred_at.as_ref()))
            .ok_or_else(|| HandlerError::Poison("activation without a time".into()))?;
        let meta = AppendMeta {
            brand_id: envelope.brand_id.clone(),
            correlation_id: envelope.correlation_id.clone(),
            causation_id: envelope.event_id.clone(),
            traceparent: scanloop_telemetry::current_traceparent(),
            // The reaction's command is named by the event: a redelivery is a repeat.
            request: Some(RequestKey {
                request_id: format!("activation:{}", envelope.event_id),
                fingerprint: REACTION_FINGERPRINT.to_vec(),
            }),
        };
        let outcome = self
            .app
            .on_activation(
                &meta,
                identity,
                activated.device_serial,
                envelope.stream_id.clone(),
                envelope.event_id.clone(),
                activated_at,
            )
            .await;
        match outcome {
            Ok(_) => Ok(()),
            // Contention and outages pass; retrying later is right.
            Err(e @ (ServiceError::Aborted(_) | ServiceError::Unavailable(_))) => {
                Err(HandlerError::Transient(anyhow::anyhow!(e)))
            }
            // Anything else will fail the same way every time: dead-letter it with the reason.
            Err(e) => Err(HandlerError::Poison(e.to_string())),
        }
    }
}
