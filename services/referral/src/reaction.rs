//! Referral's reactions to other services' events, in one consumer group over two topics:
//! - activation: WarrantyActivated (attribute the sale), WarrantyVoided (assist progress back),
//!   SuspiciousScan (a soft fraud signal on the code);
//! - membership: who members are (identities, devices, registration), for the fraud checks and
//!   to name an activation's buyer.
//!
//! An activation names its buyer by identity; membership decides which member that is. When the
//! activation arrives before membership has announced the buyer, it is parked under the
//! identity and attributed when the announcement comes (whichever handler sees both does it;
//! attribution is idempotent, so both doing it is harmless).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use scanloop_bus::{DeadLetters, EventEnvelope, EventHandler, ExpiringMap, HandlerError};
use scanloop_eventstore::{AppendMeta, RequestKey};
use scanloop_proto::activation::v1 as activation;
use scanloop_proto::common::v1::StoredIdentity;
use scanloop_proto::membership::v1 as membership;
use scanloop_proto::time::from_timestamp;
use scanloop_service::reaction::{caused_by, decode_v1, handler_error, storage_error};

use crate::app::Referrals;
use crate::directory::parked_sales::Parked;
use crate::domain::attribution::{self, Sale};
use scanloop_pii::{canonical_serial, identity_key};

const WARRANTY_ACTIVATED: &str = "scanloop.activation.v1.WarrantyActivated";
const WARRANTY_VOIDED: &str = "scanloop.activation.v1.WarrantyVoided";
const SUSPICIOUS_SCAN: &str = "scanloop.activation.v1.SuspiciousScan";
const IDENTITY_CLAIMED: &str = "scanloop.membership.v1.IdentityClaimed";
const MEMBER_REGISTERED: &str = "scanloop.membership.v1.MemberRegistered";
const IDENTITY_LINKED: &str = "scanloop.membership.v1.IdentityLinked";
const DEVICE_BOUND: &str = "scanloop.membership.v1.DeviceBound";

/// Reactions are commands named by their causing event: a redelivery is a repeat.
const ACTIVATION_FINGERPRINT: &[u8] = b"referral: reaction to WarrantyActivated";
const VOID_FINGERPRINT: &[u8] = b"referral: reaction to WarrantyVoided";

/// Attempts a parked activation gets (each time membership announces its buyer's identity
/// again, or the announcement is retried) before it is dead-lettered on its own. Below the
/// consumer's own limit, so the announcement itself is never dead-lettered for a parked sale.
const PARKED_ATTEMPTS: i32 = 5;

/// How long this process remembers an identity's owner it recorded (see [`Reactions::settled`]).
const SETTLED_FOR: Duration = Duration::from_secs(600);
/// Identities remembered at most before a sweep.
const SETTLED_LIMIT: usize = 100_000;

pub struct Reactions {
    app: Arc<Referrals>,
    /// Where a parked activation that cannot be attributed goes, alone.
    dead_letters: DeadLetters,
    /// Parked activations came from here (their dead letters go to its `.dlq`).
    activation_topic: String,
    /// Identities (brand and key) whose owner this process recorded and whose parked
    /// activations it then attributed, with that owner. An identity belongs to one member for
    /// good (membership claims it once), so a later announcement of the same owner (a
    /// redelivered IdentityClaimed, an IdentityLinked racing it) has nothing left to do: any
    /// activation parked after the owner was recorded finds the owner when it reads again. An
    /// activation of the identity asks this before the directory.
    settled: Mutex<ExpiringMap<String>>,
}

impl Reactions {
    pub fn new(app: Arc<Referrals>, dead_letters: DeadLetters, activation_topic: String) -> Self {
        Self {
            app,
            dead_letters,
            activation_topic,
            settled: Mutex::new(ExpiringMap::new(SETTLED_FOR, SETTLED_LIMIT)),
        }
    }

    fn settled_owner(&self, brand: &str, key: &str) -> Option<String> {
        lock(&self.settled).get(&settled_key(brand, key)).cloned()
    }

    fn note_settled(&self, brand: &str, key: &str, member_id: &str) {
        lock(&self.settled).insert(
            &settled_key(brand, key),
            member_id.to_owned(),
            Instant::now(),
        );
    }
}

fn settled_key(brand: &str, key: &str) -> String {
    format!("{brand}\0{key}")
}

/// A poisoned lock only means a thread panicked while holding it; each update is one insert.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Version 1 is the only version of each event referral reads; a newer one is not guessed at.
fn decode<M: prost::Message + Default>(envelope: &EventEnvelope) -> Result<M, HandlerError> {
    decode_v1(envelope, "referral")
}

fn meta(envelope: &EventEnvelope, request_id: String, fingerprint: &[u8]) -> AppendMeta {
    AppendMeta {
        request: Some(RequestKey {
            request_id,
            fingerprint: fingerprint.to_vec(),
        }),
        ..caused_by(envelope)
    }
}

impl EventHandler for Reactions {
    async fn handle(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        let brand = envelope.brand_id.as_str();
        let directory = self.app.directory();
        match envelope.event_type.as_str() {
            WARRANTY_ACTIVATED => self.on_activation(envelope).await,
            WARRANTY_VOIDED => {
                let meta = meta(
                    envelope,
                    format!("void:{}", envelope.event_id),
                    VOID_FINGERPRINT,
                );
                self.app
                    .on_void(&meta, &envelope.stream_id)
                    .await
                    .map_err(handler_error)
            }
            SUSPICIOUS_SCAN => {
                let scan: activation::SuspiciousScan = decode(envelope)?;
                directory
                    .flag_code(brand, &envelope.stream_id, &scan.reason)
                    .await
                    .map_err(storage_error)
            }
            IDENTITY_CLAIMED => {
                let e: membership::IdentityClaimed = decode(envelope)?;
                self.on_member_identity(envelope, &e.member_id, e.identity.as_ref())
                    .await
            }
            MEMBER_REGISTERED => {
                let e: membership::MemberRegistered = decode(envelope)?;
                let key = e.identity.as_ref().and_then(identity_key);
                directory
                    .register_member(
                        brand,
                        &e.member_id,
                        from_timestamp(e.registered_at.as_ref())
                            .or_else(|| from_timestamp(envelope.occurred_at.as_ref())),
                        &e.display_name,
                        key.as_deref(),
                    )
                    .await
                    .map_err(storage_error)
                // The identity it names was claimed for the member first (membership claims
                // before it registers): that IdentityClaimed records the owner and releases
                // what was parked under it.
            }
            IDENTITY_LINKED => {
                let e: membership::IdentityLinked = decode(envelope)?;
                if let Some(key) = e.identity.as_ref().and_then(identity_key) {
                    directory
                        .add_identity(brand, &e.member_id, &key)
                        .await
                        .map_err(storage_error)?;
                }
                self.on_member_identity(envelope, &e.member_id, e.identity.as_ref())
                    .await
            }
            DEVICE_BOUND => {
                let e: membership::DeviceBound = decode(envelope)?;
                let serial = canonical_serial(&e.device_serial);
                if serial.is_empty() {
                    return Ok(());
                }
                directory
                    .add_device(brand, &e.member_id, &serial)
                    .await
                    .map_err(storage_error)
            }
            _ => Ok(()),
        }
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[
            WARRANTY_ACTIVATED,
            WARRANTY_VOIDED,
            SUSPICIOUS_SCAN,
            IDENTITY_CLAIMED,
            MEMBER_REGISTERED,
            IDENTITY_LINKED,
            DEVICE_BOUND,
        ])
    }

    /// What membership announces and a suspicious scan only add to the directory (sets, and
    /// rows keyed by who and what), and a parked activation they release is attributed by the
    /// activation's own command: seeing them again changes nothing, so they keep no checkpoint.
    /// An activation or a void is a command whose id a stream remembers for days only: its
    /// checkpoint drops a late redelivery for good.
    fn idempotent_by_construction(&self, event_type: &str) -> bool {
        !matches!(event_type, WARRANTY_ACTIVATED | WARRANTY_VOIDED)
    }
}

impl Reactions {
    async fn on_activation(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        let brand = envelope.brand_id.as_str();
        let directory = self.app.directory();
        let activated: activation::WarrantyActivated = decode(envelope)?;
        let identity = activated
            .buyer
            .clone()
            .ok_or_else(|| HandlerError::Poison("activation without a buyer".into()))?;
        let key = identity_key(&identity).ok_or_else(|| {
            HandlerError::Poison("activation without a usable buyer identity".into())
        })?;
        // Every activation: who owns the code (StartAssist checks it).
        directory
            .set_warranty_owner(brand, &envelope.stream_id, &key)
            .await
            .map_err(storage_error)?;
        let through_store = activated.channel.as_ref().is_some_and(|c| {
            c.kind == activation::PurchaseChannelKind::Store as i32 && !c.id.is_empty()
        });
        if activated.referral_token.is_empty() && !through_store {
            return Ok(());
        }
        let known = match self.settled_owner(brand, &key) {
            Some(owner) => Some(owner),
            None => directory.owner(brand, &key).await.map_err(storage_error)?,
        };
        if let Some(owner) = known {
            return self
                .attribute(envelope, &activated, identity, key, owner)
                .await;
        }
        directory
            .park(brand, &key, &envelope.event_id, &envelope.encode_to_vec())
            .await
            .map_err(storage_error)?;
        // Membership may have announced the buyer between the two reads.
        let Some(owner) = directory.owner(brand, &key).await.map_err(storage_error)? else {
            return Ok(());
        };
        self.attribute(envelope, &activated, identity, key.clone(), owner)
            .await?;
        directory
            .unpark(brand, &key, &envelope.event_id)
            .await
            .map_err(storage_error)
    }

    async fn attribute(
        &self,
        envelope: &EventEnvelope,
        activated: &activation::WarrantyActivated,
        identity: StoredIdentity,
        key: String,
        buyer_member_id: String,
    ) -> Result<(), HandlerError> {
        let activated_at = from_timestamp(activated.activated_at.as_ref())
            .or_else(|| from_timestamp(envelope.occurred_at.as_ref()))
            .ok_or_else(|| HandlerError::Poison("activation without a time".into()))?;
        let store_id = activated
            .channel
            .as_ref()
            .filter(|c| c.kind == activation::PurchaseChannelKind::Store as i32)
            .map(|c| c.id.clone())
            .unwrap_or_default();
        let sale = Sale {
            attribution_id: attribution::attribution_id(&envelope.event_id),
            activation_event_id: envelope.event_id.clone(),
            warranty_stream_id: envelope.stream_id.clone(),
            token: activated.referral_token.trim().to_owned(),
            buyer_member_id,
            buyer: identity,
            buyer_identity_key: key.clone(),
            device_serial: canonical_serial(&activated.device_serial),
            sku: activated.sku.clone(),
            purchase_amount: activated.purchase_amount.clone(),
            purchased_at: from_timestamp(activated.purchased_at.as_ref()).unwrap_or(activated_at),
            activated_at,
            store_id,
        };
        let meta = meta(
            envelope,
            format!("activation:{}", envelope.event_id),
            ACTIVATION_FINGERPRINT,
        );
        self.app
            .attribute(&meta, sale)
            .await
            .map(|_| ())
            .map_err(handler_error)
    }

    /// Membership announced that `identity` is `member_id`'s: note it, then attribute any
    /// activation that was waiting for it. Each parked activation stands alone: one that fails
    /// holds back no other. A permanent failure is dead-lettered at once, a transient one stays
    /// parked (the announcement is retried, for it alone) and is dead-lettered after
    /// [`PARKED_ATTEMPTS`].
    async fn on_member_identity(
        &self,
        envelope: &EventEnvelope,
        member_id: &str,
        identity: Option<&StoredIdentity>,
    ) -> Result<(), HandlerError> {
        let brand = envelope.brand_id.as_str();
        let directory = self.app.directory();
        let Some(key) = identity.and_then(identity_key) else {
            return Ok(());
        };
        if self.settled_owner(brand, &key).as_deref() == Some(member_id) {
            return Ok(());
        }
        directory
            .set_owner(brand, &key, member_id)
            .await
            .map_err(storage_error)?;
        let mut retry = None;
        for parked in directory.parked(brand, &key).await.map_err(storage_error)? {
            if parked.envelope.is_empty() {
                // Only a failed attempt's count is left: the row was taken (attributed and
                // unparked by a concurrent attempt) before that count landed, or the parked
                // activation itself expired. Nothing is left to attribute or to replay.
                tracing::warn!(brand, event_id = %parked.event_id, "parked row without its activation dropped");
                directory
                    .unpark(brand, &key, &parked.event_id)
                    .await
                    .map_err(storage_error)?;
                continue;
            }
            let failure = match self.attribute_parked(&parked, &key, member_id).await {
                Ok(()) => {
                    directory
                        .unpark(brand, &key, &parked.event_id)
                        .await
                        .map_err(storage_error)?;
                    continue;
                }
                Err(failure) => failure,
            };
            let attempts = parked.attempts + 1;
            match failure {
                HandlerError::Transient(error) if attempts < PARKED_ATTEMPTS => {
                    tracing::warn!(brand, event_id = %parked.event_id, attempts, %error, "parked activation failed; retried");
                    directory
                        .park_failed(
                            brand,
                            &key,
                            &parked.event_id,
                            attempts,
                            &format!("{error:#}"),
                        )
                        .await
                        .map_err(storage_error)?;
                    retry = Some(HandlerError::Transient(error));
                }
                failure => {
                    let reason = match failure {
                        HandlerError::Poison(reason) => reason,
                        HandlerError::Transient(error) => {
                            format!("gave up after {attempts} attempts: {error:#}")
                        }
                    };
                    self.dead_letter_parked(&parked, &reason).await?;
                    directory
                        .unpark(brand, &key, &parked.event_id)
                        .await
                        .map_err(storage_error)?;
                }
            }
        }
        match retry {
            Some(failure) => Err(failure),
            None => {
                self.note_settled(brand, &key, member_id);
                Ok(())
            }
        }
    }

    async fn attribute_parked(
        &self,
        parked: &Parked,
        key: &str,
        member_id: &str,
    ) -> Result<(), HandlerError> {
        let envelope = EventEnvelope::decode(parked.envelope.as_slice())
            .map_err(|e| HandlerError::Poison(format!("parked activation: {e}")))?;
        let activated: activation::WarrantyActivated = decode(&envelope)?;
        let identity = activated
            .buyer
            .clone()
            .ok_or_else(|| HandlerError::Poison("parked activation without a buyer".into()))?;
        self.attribute(
            &envelope,
            &activated,
            identity,
            key.to_owned(),
            member_id.to_owned(),
        )
        .await
    }

    /// The parked activation to the activation topic's dead letters, with why.
    async fn dead_letter_parked(&self, parked: &Parked, reason: &str) -> Result<(), HandlerError> {
        let envelope =
            EventEnvelope::decode(parked.envelope.as_slice()).unwrap_or_else(|_| EventEnvelope {
                event_id: parked.event_id.clone(),
                ..EventEnvelope::default()
            });
        self.dead_letters
            .send(&self.activation_topic, &envelope, reason)
            .await
            .map_err(|e| HandlerError::Transient(anyhow::anyhow!("dead letter not written: {e}")))
    }
}
