//! Payouts' reactions to other services' events, in one consumer group over two topics:
//! - referral: ReferralAttributed (accrue; only commission-bearing attributions are published
//!   as ReferralAttributed: an attribution held for review follows as one when approved),
//!   ReferralRejected (a rejection of an attribution that had accrued takes it back);
//! - activation: WarrantyVoided (the sale was returned), PurchaseRefunded (part of the price).
//!
//! A sale is named by its warranty stream and activation time on both topics, so a return that
//! arrives before the attribution lands on the same sale stream and is applied when the
//! commissions accrue. Every command is idempotent by the sale's state: a redelivery decides
//! nothing.

use std::sync::Arc;

use scanloop_bus::{EventEnvelope, EventHandler, HandlerError};
use scanloop_proto::activation::v1 as activation;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::referral::v1 as referral;
use scanloop_proto::time::from_timestamp;
use scanloop_service::reaction::{caused_by, decode_v1, handler_error};

use crate::app::Payouts;
use crate::domain::money::money_fen;
use crate::domain::sale::{Attributed, Payee, Return, Revocation};

const REFERRAL_ATTRIBUTED: &str = "scanloop.referral.v1.ReferralAttributed";
const REFERRAL_REJECTED: &str = "scanloop.referral.v1.ReferralRejected";
const WARRANTY_VOIDED: &str = "scanloop.activation.v1.WarrantyVoided";
const PURCHASE_REFUNDED: &str = "scanloop.activation.v1.PurchaseRefunded";

pub struct Reactions {
    app: Arc<Payouts>,
}

impl Reactions {
    pub fn new(app: Arc<Payouts>) -> Self {
        Self { app }
    }
}

fn poison(event_type: &str, why: &str) -> HandlerError {
    HandlerError::Poison(format!("{event_type}: {why}"))
}

/// The sale an attribution names, as payouts needs it.
pub fn attributed(e: &referral::ReferralAttributed) -> Result<Attributed, HandlerError> {
    let activated_at = from_timestamp(e.activated_at.as_ref())
        .ok_or_else(|| poison(REFERRAL_ATTRIBUTED, "no activated_at"))?;
    if e.attribution_id.is_empty() || e.warranty_stream_id.is_empty() {
        return Err(poison(REFERRAL_ATTRIBUTED, "no attribution or warranty id"));
    }
    let payee = match referral::Payee::try_from(e.payee).unwrap_or(referral::Payee::Member) {
        referral::Payee::Store => Payee::Store,
        referral::Payee::Both => Payee::Both,
        referral::Payee::Member | referral::Payee::Unspecified => Payee::Member,
    };
    Ok(Attributed {
        attribution_id: e.attribution_id.clone(),
        warranty_stream_id: e.warranty_stream_id.clone(),
        sale_activated_at: activated_at,
        sku: e.sku.clone(),
        purchase_amount: money_fen(e.purchase_amount.as_ref()),
        purchased_at: from_timestamp(e.purchased_at.as_ref()).unwrap_or(activated_at),
        level1: e.level1_member_id.clone(),
        level2: e.level2_member_id.clone(),
        store: e.store_id.clone(),
        payee,
    })
}

impl EventHandler for Reactions {
    async fn handle(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        let meta = caused_by(envelope);
        match envelope.event_type.as_str() {
            REFERRAL_ATTRIBUTED => {
                let e: referral::ReferralAttributed = decode_v1(envelope, "payouts")?;
                self.app
                    .accrue(&meta, attributed(&e)?)
                    .await
                    .map_err(handler_error)
            }
            REFERRAL_REJECTED => {
                let e: referral::ReferralRejected = decode_v1(envelope, "payouts")?;
                let revocation = Revocation {
                    attribution_id: e.attribution_id.clone(),
                    sale: from_timestamp(e.activated_at.as_ref())
                        .filter(|_| !e.warranty_stream_id.is_empty())
                        .map(|at| (e.warranty_stream_id.clone(), at)),
                    counted: e.revoked
                        || e.reason() == referral::RejectionReason::RevokedAfterAttribution,
                    reason: format!("referral rejected: {}", e.detail),
                };
                self.app
                    .revoke(&meta, revocation)
                    .await
                    .map_err(handler_error)
            }
            WARRANTY_VOIDED => {
                let e: activation::WarrantyVoided = decode_v1(envelope, "payouts")?;
                let sale_activated_at =
                    from_timestamp(e.activated_at.as_ref()).ok_or_else(|| {
                        poison(WARRANTY_VOIDED, "no activated_at: the sale cannot be named")
                    })?;
                let cmd = Return {
                    warranty_stream_id: envelope.stream_id.clone(),
                    sale_activated_at,
                    cause: pb::ReturnCause::Returned,
                    refunded_total: 0,
                    purchase_amount: 0,
                    reason: e.reason.clone(),
                    at: from_timestamp(e.voided_at.as_ref()).unwrap_or_else(|| self.app.now()),
                };
                self.app
                    .record_return(&meta, cmd)
                    .await
                    .map_err(handler_error)
            }
            PURCHASE_REFUNDED => {
                let e: activation::PurchaseRefunded = decode_v1(envelope, "payouts")?;
                let sale_activated_at =
                    from_timestamp(e.activated_at.as_ref()).ok_or_else(|| {
                        poison(
                            PURCHASE_REFUNDED,
                            "no activated_at: the sale cannot be named",
                        )
                    })?;
                let cmd = Return {
                    warranty_stream_id: envelope.stream_id.clone(),
                    sale_activated_at,
                    cause: pb::ReturnCause::Refunded,
                    refunded_total: money_fen(e.refunded_total.as_ref()),
                    purchase_amount: money_fen(e.purchase_amount.as_ref()),
                    reason: e.reason.clone(),
                    at: from_timestamp(e.refunded_at.as_ref()).unwrap_or_else(|| self.app.now()),
                };
                self.app
                    .record_return(&meta, cmd)
                    .await
                    .map_err(handler_error)
            }
            // Everything else on these topics is none of payouts' business.
            _ => Ok(()),
        }
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[
            REFERRAL_ATTRIBUTED,
            REFERRAL_REJECTED,
            WARRANTY_VOIDED,
            PURCHASE_REFUNDED,
        ])
    }
}
