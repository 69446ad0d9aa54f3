//! Membership's reactions to other services' events, in one consumer group over both topics:
//! a warranty activation makes its buyer a member; a referral link shared counts as the
//! member's share engagement.

use std::sync::Arc;

use prost::Message as _;
use scanloop_bus::{EventEnvelope, EventHandler, HandlerError};
use scanloop_eventstore::{AppendMeta, RequestKey};
use scanloop_proto::activation::v1 as activation;
use scanloop_proto::referral::v1 as referral;
use scanloop_proto::time::from_timestamp;
use scanloop_service::ServiceError;
use scanloop_service::reaction::{caused_by, decode_v1, handler_error};

use crate::app::Membership;

const WARRANTY_ACTIVATED: &str = "scanloop.activation.v1.WarrantyActivated";
const LINK_SHARED: &str = "scanloop.referral.v1.LinkShared";
/// Every reaction to an activation is the same kind of command; its request id tells them apart.
const REACTION_FINGERPRINT: &[u8] = b"membership: reaction to WarrantyActivated";
/// Likewise for shares.
const SHARE_FINGERPRINT: &[u8] = b"membership: reaction to LinkShared";

pub struct Reactions {
    app: Arc<Membership>,
}

impl Reactions {
    pub fn new(app: Arc<Membership>) -> Self {
        Self { app }
    }
}

impl EventHandler for Reactions {
    async fn handle(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        match envelope.event_type.as_str() {
            WARRANTY_ACTIVATED => self.on_activation(envelope).await,
            LINK_SHARED => self.on_share(envelope).await,
            _ => Ok(()),
        }
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[WARRANTY_ACTIVATED, LINK_SHARED])
    }
}

impl Reactions {
    async fn on_activation(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
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
            // The reaction's command is named by the event: a redelivery is a repeat.
            request: Some(RequestKey {
                request_id: format!("activation:{}", envelope.event_id),
                fingerprint: REACTION_FINGERPRINT.to_vec(),
            }),
            ..caused_by(envelope)
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
        outcome.map(|_| ()).map_err(handler_error)
    }

    async fn on_share(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        let share = shared(envelope)?;
        let meta = AppendMeta {
            // Each LinkShared is one share; a redelivery of it is a repeat.
            request: Some(RequestKey {
                request_id: format!("share:{}", envelope.event_id),
                fingerprint: SHARE_FINGERPRINT.to_vec(),
            }),
            ..caused_by(envelope)
        };
        match self
            .app
            .on_share(&meta, &share.member_id, share.shared_at)
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                tracing::info!(
                    event_id = %envelope.event_id,
                    "share older than the scoring window: nothing to count"
                );
                Ok(())
            }
            // A share by a member this service does not know cannot become valid by retrying
            // (referral checks the member when the link is made): logged and done.
            Err(ServiceError::NotFound(why)) => {
                tracing::warn!(
                    event_id = %envelope.event_id,
                    member_id = %share.member_id,
                    reason = %why,
                    "share by an unknown member: not counted"
                );
                Ok(())
            }
            Err(e) => Err(handler_error(e)),
        }
    }
}

/// A share, checked.
#[derive(Debug, PartialEq)]
struct Share {
    member_id: String,
    shared_at: chrono::DateTime<chrono::Utc>,
}

/// Reads the share of `envelope`; whatever cannot be read never will be (poison).
fn shared(envelope: &EventEnvelope) -> Result<Share, HandlerError> {
    // Version 1 is the only LinkShared there is; a newer one is not guessed at.
    let shared: referral::LinkShared = decode_v1(envelope, "membership")?;
    let poison = |why: String| HandlerError::Poison(format!("{LINK_SHARED}: {why}"));
    // Member ids are UUIDs (as the API requires); anything else names no member stream.
    let member_id = uuid::Uuid::parse_str(shared.member_id.trim())
        .map_err(|_| poison(format!("member id {:?} is not a UUID", shared.member_id)))?
        .to_string();
    let shared_at = from_timestamp(shared.shared_at.as_ref())
        .or_else(|| from_timestamp(envelope.occurred_at.as_ref()))
        .ok_or_else(|| poison("share without a time".into()))?;
    Ok(Share {
        member_id,
        shared_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanloop_proto::time::to_timestamp;

    const MEMBER: &str = "6f1c1e3a-8a3b-5f0e-9c47-2d5f0b7a1c22";

    fn envelope(share: &referral::LinkShared, schema_version: u32) -> EventEnvelope {
        EventEnvelope {
            event_type: LINK_SHARED.into(),
            schema_version,
            brand_id: "acme".into(),
            payload: share.encode_to_vec(),
            ..EventEnvelope::default()
        }
    }

    fn link_shared(member_id: &str) -> referral::LinkShared {
        referral::LinkShared {
            token: "tok".into(),
            member_id: member_id.into(),
            channel: referral::ShareChannel::WechatMoments as i32,
            shared_at: Some(to_timestamp(
                chrono::DateTime::parse_from_rfc3339("2026-03-01T08:00:00Z")
                    .unwrap()
                    .to_utc(),
            )),
        }
    }

    fn poison_reason(result: Result<Share, HandlerError>) -> String {
        match result {
            Err(HandlerError::Poison(reason)) => reason,
            other => panic!("expected poison, got {other:?}"),
        }
    }

    #[test]
    fn a_share_names_its_member_and_time() {
        let share = shared(&envelope(&link_shared(MEMBER), 1)).unwrap();
        assert_eq!(share.member_id, MEMBER);
        assert_eq!(share.shared_at.to_rfc3339(), "2026-03-01T08:00:00+00:00");
    }

    #[test]
    fn unreadable_shares_are_poison_with_the_reason() {
        let newer = poison_reason(shared(&envelope(&link_shared(MEMBER), 2)));
        assert!(newer.contains("upgrade membership"), "{newer}");
        let bad_member = poison_reason(shared(&envelope(&link_shared("m-1"), 1)));
        assert!(bad_member.contains("not a UUID"), "{bad_member}");
        let mut timeless = link_shared(MEMBER);
        timeless.shared_at = None;
        let none = poison_reason(shared(&envelope(&timeless, 1)));
        assert!(none.contains("without a time"), "{none}");
    }

    #[test]
    fn outages_retry_and_refusals_are_poison() {
        assert!(handler_error(ServiceError::Unavailable("db".into())).is_transient());
        assert!(handler_error(ServiceError::Aborted("busy".into())).is_transient());
        assert!(!handler_error(ServiceError::InvalidArgument("bad".into())).is_transient());
    }
}
