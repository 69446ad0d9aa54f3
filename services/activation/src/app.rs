//! Command handling: the I/O around the pure domain. Each method verifies input that needs
//! secrets (codes, phone numbers), runs a domain decision against its stream through the
//! repository (load → decide → append + publish, retried on conflicts), and answers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use scanloop_bus::ExpiringMap;
use scanloop_eventstore::aggregate::fold;
use scanloop_eventstore::requests::RequestCheck;
use scanloop_eventstore::{AppendError, AppendMeta, Executed, Outbox, Repository};
use scanloop_pii::IdentityHasher;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::common::v1::{BuyerIdentity, Money, StoredIdentity};
pub use scanloop_service::RequestContext;
use scanloop_service::ServiceError;
use uuid::Uuid;

use crate::domain::batch::{self, Batch, IssuedBatch};
use crate::domain::code::{CodeError, CodeId, CodeSigner};
use crate::domain::device::{self, DeviceClaim};
use crate::domain::warranty::{self, Rules, Warranty};
use crate::domain::{ActivationEvent, Rejection};
use crate::projections::ReadModels;

/// Namespace of batch ids derived from (brand, request id): a retried IssueBatch finds its batch.
const BATCH_NAMESPACE: Uuid = Uuid::from_u128(0x5ca7_100b_a7c4_4e55_9d1e_0000_0000_0001);

/// How long a loaded batch is kept (to one and a half times that): a batch whose codes are
/// being scanned costs one read per period, and the cache holds the batches in use, not every
/// batch the brand ever issued.
const BATCH_KEPT_FOR: Duration = Duration::from_secs(10 * 60);
/// Batches kept at most; reaching it forgets them all (each is reloaded on its next scan).
const BATCHES_KEPT: usize = 100_000;

pub struct Activation {
    batches: Repository<Batch>,
    warranties: Repository<Warranty>,
    devices: Repository<DeviceClaim>,
    signer: CodeSigner,
    hasher: IdentityHasher,
    rules: Rules,
    read_models: ReadModels,
    /// Issued batches never change: cached after a load, by stream id (brand and batch id).
    batch_cache: Mutex<ExpiringMap<Arc<IssuedBatch>>>,
}

/// A code's state as the write side knows it (for answers that must not lag).
pub struct WarrantyState {
    pub code: CodeId,
    pub batch: Arc<IssuedBatch>,
    pub warranty: Warranty,
    pub version: u64,
}

impl WarrantyState {
    /// The code's warranty as a command left it.
    fn executed(code: CodeId, batch: Arc<IssuedBatch>, executed: Executed<Warranty>) -> Self {
        Self {
            code,
            batch,
            warranty: executed.state,
            version: executed.version,
        }
    }
}

impl Activation {
    pub fn new(
        outbox: Outbox,
        signer: CodeSigner,
        hasher: IdentityHasher,
        rules: Rules,
        read_models: ReadModels,
    ) -> Self {
        Self {
            batches: Repository::new(outbox.clone()),
            warranties: Repository::new(outbox.clone()),
            devices: Repository::new(outbox),
            signer,
            hasher,
            rules,
            read_models,
            batch_cache: Mutex::new(ExpiringMap::new(BATCH_KEPT_FOR, BATCHES_KEPT)),
        }
    }

    /// Keyed hashing of identities and request fingerprints.
    pub fn hasher(&self) -> &IdentityHasher {
        &self.hasher
    }

    pub fn read_models(&self) -> &ReadModels {
        &self.read_models
    }

    /// Issues (or, for a retried request, finds) a batch. Returns its id and facts.
    pub async fn issue_batch(
        &self,
        ctx: &RequestContext,
        request: &pb::IssueBatchRequest,
    ) -> Result<(Uuid, Arc<IssuedBatch>), ServiceError> {
        let batch_id = Uuid::new_v5(
            &BATCH_NAMESPACE,
            format!("{}\0{}", ctx.brand_id, ctx.request_id).as_bytes(),
        );
        let issued = pb::BatchIssued {
            batch_id: batch_id.to_string(),
            sku: request.sku.trim().to_owned(),
            product_model: request.product_model.trim().to_owned(),
            warranty_months: request.warranty_months,
            quantity: request.quantity,
            key_id: request.key_id.clone(),
        };
        let stream_id = batch::stream_id(&ctx.brand_id, batch_id);
        let executed = self
            .batches
            .execute(&stream_id, &ctx.meta(), |state| {
                batch::issue(state, &issued)
            })
            .await?;
        let first_issue = executed.appended.as_ref().and_then(|a| a.events.first());
        if let (Some(facts), Some(recorded)) = (executed.state.issued, first_issue) {
            let batch = IssuedBatch {
                facts,
                issued_at: recorded.recorded_at,
            };
            self.cached_batches()
                .insert(&stream_id, Arc::new(batch), Instant::now());
        }
        // A retried request finds the batch (and when it was issued) in its stream.
        let batch = self.batch(&ctx.brand_id, batch_id).await?;
        Ok((batch_id, batch))
    }

    /// Encodes the codes of a batch.
    pub fn batch_encoder(
        &self,
        brand_id: &str,
        batch: &pb::BatchIssued,
        batch_id: Uuid,
    ) -> crate::domain::code::BatchEncoder {
        self.signer.batch_encoder(brand_id, &batch.key_id, batch_id)
    }

    /// Verifies a code by computation alone (no database read).
    pub fn verify(&self, brand_id: &str, code: &str) -> Result<CodeId, CodeError> {
        self.signer.verify(brand_id, code)
    }

    /// An authentic code of an issued batch, with the batch's facts (for commands and queries).
    pub async fn issued_code(
        &self,
        brand_id: &str,
        code: &str,
    ) -> Result<(CodeId, Arc<IssuedBatch>), ServiceError> {
        let id = self
            .verify(brand_id, code)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let batch = self.batch(brand_id, id.batch_id).await?;
        // Authentic signature but a serial never printed: only a leaked key could do this.
        printed_serial(&batch, id.batch_id, id.serial)?;
        Ok((id, batch))
    }

    /// A batch of `brand_id`. Another brand's batch id names an empty stream: NOT_FOUND.
    pub async fn batch(
        &self,
        brand_id: &str,
        batch_id: Uuid,
    ) -> Result<Arc<IssuedBatch>, ServiceError> {
        let stream_id = batch::stream_id(brand_id, batch_id);
        if let Some(batch) = self.cached_batches().get(&stream_id) {
            return Ok(batch.clone());
        }
        let recorded = self
            .batches
            .outbox()
            .store()
            .load(&stream_id, 0)
            .await
            .map_err(|e| ServiceError::from_store(AppendError::Unavailable(e)))?;
        let loaded = fold::<Batch, Rejection>(&stream_id, Batch::default(), 0, &recorded)?;
        let not_found = || ServiceError::NotFound(format!("batch {batch_id} was never issued"));
        let (Some(facts), Some(first)) = (loaded.state.issued, recorded.first()) else {
            return Err(not_found());
        };
        let batch = Arc::new(IssuedBatch {
            facts,
            issued_at: first.recorded_at,
        });
        self.cached_batches()
            .insert(&stream_id, batch.clone(), Instant::now());
        Ok(batch)
    }

    fn cached_batches(&self) -> MutexGuard<'_, ExpiringMap<Arc<IssuedBatch>>> {
        // A poisoned lock only means a panic elsewhere during an insert; the map is still sound.
        self.batch_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub async fn scan(
        &self,
        ctx: &RequestContext,
        code: &str,
        region: &str,
        scanned_at: DateTime<Utc>,
    ) -> Result<(WarrantyState, bool), ServiceError> {
        let (id, batch) = self.issued_code(&ctx.brand_id, code).await?;
        let cmd = warranty::Scan {
            batch_id: id.batch_id.to_string(),
            serial: u64::from(id.serial),
            region: region.to_owned(),
            scanned_at,
            now: Utc::now(),
        };
        let executed = self
            .warranties
            .execute(
                &warranty::stream_id(&ctx.brand_id, id.batch_id, id.serial),
                &ctx.meta(),
                |state| warranty::scan(state, &cmd, &self.rules),
            )
            .await?;
        // From the command's own events, so a retried scan gets the first answer.
        let suspicious = executed
            .events
            .iter()
            .any(|e| e.event_type == crate::domain::events::SUSPICIOUS_SCAN);
        Ok((
            WarrantyState {
                code: id,
                batch,
                warranty: executed.state,
                version: executed.version,
            },
            suspicious,
        ))
    }

    /// The caller's buyer identity in stored form (a phone number becomes its keyed hash).
    pub fn stored_identity(
        &self,
        brand_id: &str,
        buyer: Option<&BuyerIdentity>,
    ) -> Result<StoredIdentity, ServiceError> {
        self.hasher
            .stored_identity(brand_id, buyer, "buyer")
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn activate(
        &self,
        ctx: &RequestContext,
        code: &str,
        buyer: StoredIdentity,
        channel: pb::PurchaseChannel,
        purchase_amount_fen: i64,
        purchased_at: DateTime<Utc>,
        referral_token: String,
        device_serial: String,
    ) -> Result<WarrantyState, ServiceError> {
        let (id, batch) = self.issued_code(&ctx.brand_id, code).await?;
        let cmd = warranty::Activate {
            brand_id: ctx.brand_id.clone(),
            batch: batch.facts.clone(),
            batch_issued_at: batch.issued_at,
            serial: u64::from(id.serial),
            buyer,
            channel,
            purchase_amount_fen,
            purchased_at,
            referral_token,
            device_serial,
            now: Utc::now(),
        };
        let stream_id = warranty::stream_id(&ctx.brand_id, id.batch_id, id.serial);
        if cmd.device_serial.is_empty() {
            return self
                .run(&ctx.meta(), id, batch, |state| {
                    warranty::activate(state, &cmd, &self.rules)
                })
                .await;
        }
        let prepared = self.warranties.prepare::<Rejection>(&stream_id).await?;
        {
            // Decide against the current state first, so that a command refused anyway claims
            // no device. A request id the stream already knows (a retry, or a reused id) claims
            // nothing: the repository below answers or refuses it.
            let current = prepared.loaded();
            let known_request = ctx
                .meta()
                .request
                .is_some_and(|request| current.requests.check(&request) != RequestCheck::New);
            if !known_request && !warranty::activate(&current.state, &cmd, &self.rules)?.is_empty()
            {
                self.claim_device(
                    &ctx.meta(),
                    &id,
                    &current.state,
                    &cmd.device_serial,
                    cmd.now,
                )
                .await?;
            }
        }
        // The warranty as loaded above: one load per stream per command.
        let executed = self
            .warranties
            .execute_prepared(&stream_id, &ctx.meta(), prepared, |state| {
                warranty::activate(state, &cmd, &self.rules)
            })
            .await?;
        Ok(WarrantyState::executed(id, batch, executed))
    }

    /// Binds `device_serial` to the code `id` (whose warranty is `own`), or refuses
    /// (ALREADY_EXISTS) when another code's warranty holds it. A released claim (see
    /// `device::is_released`) is taken over, or re-claimed by its own code for a resale;
    /// concurrent claims are settled by the conditional append.
    async fn claim_device(
        &self,
        meta: &AppendMeta,
        id: &CodeId,
        own: &Warranty,
        device_serial: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        let stream_id = device::stream_id(&meta.brand_id, device_serial);
        let claim = device::Claim {
            device_serial: device_serial.to_owned(),
            batch_id: id.batch_id.to_string(),
            serial: u64::from(id.serial),
            now,
        };
        let current = self.devices.prepare::<Rejection>(&stream_id).await?;
        let released = match current.loaded().state.holder.clone() {
            Some(holder) => {
                let is_own = holder.batch_id == claim.batch_id && holder.serial == claim.serial;
                let other;
                let holder_warranty = if is_own {
                    own
                } else {
                    other = self.holder_warranty(&meta.brand_id, &holder).await?;
                    &other
                };
                device::is_released(&holder, holder_warranty, device_serial, now).then_some(holder)
            }
            None => None,
        };
        self.devices
            .execute_prepared(&stream_id, meta, current, |state| {
                device::claim(state, &claim, released.as_ref())
            })
            .await?;
        Ok(())
    }

    /// The warranty of the code holding a device claim.
    async fn holder_warranty(
        &self,
        brand_id: &str,
        holder: &device::Holder,
    ) -> Result<Warranty, ServiceError> {
        let batch_id = Uuid::parse_str(&holder.batch_id)
            .map_err(|e| ServiceError::Internal(format!("device claim names batch: {e}")))?;
        let serial = u32::try_from(holder.serial)
            .map_err(|e| ServiceError::Internal(format!("device claim names serial: {e}")))?;
        let loaded = self
            .warranties
            .load::<Rejection>(&warranty::stream_id(brand_id, batch_id, serial))
            .await?;
        Ok(loaded.state)
    }

    pub async fn extend(
        &self,
        ctx: &RequestContext,
        code: &str,
        months: u32,
        reason: pb::ExtensionReason,
    ) -> Result<WarrantyState, ServiceError> {
        let (id, batch) = self.issued_code(&ctx.brand_id, code).await?;
        let cmd = warranty::Extend {
            months,
            reason,
            assist_id: String::new(),
        };
        self.run(&ctx.meta(), id, batch, |state| {
            warranty::extend(state, &cmd)
        })
        .await
    }

    /// The reaction to referral's AssistCompleted: extends the warranty of (`batch_id`,
    /// `serial`) of `meta.brand_id` by `months` for the assist campaign `assist_id`, through the
    /// same decision as ExtendWarranty. Once per assist: the stream remembers the assist id (see
    /// `warranty::extend`), and `meta.request` answers a redelivery with the first result.
    pub async fn extend_for_assist(
        &self,
        meta: &AppendMeta,
        batch_id: Uuid,
        serial: u32,
        assist_id: &str,
        months: u32,
    ) -> Result<WarrantyState, ServiceError> {
        let batch = self.batch(&meta.brand_id, batch_id).await?;
        printed_serial(&batch, batch_id, serial)?;
        let id = CodeId {
            brand_id: meta.brand_id.clone(),
            key_id: batch.facts.key_id.clone(),
            batch_id,
            serial,
        };
        let cmd = warranty::Extend {
            months,
            reason: pb::ExtensionReason::AssistCampaign,
            assist_id: assist_id.to_owned(),
        };
        self.run(meta, id, batch, |state| warranty::extend(state, &cmd))
            .await
    }

    pub async fn void(
        &self,
        ctx: &RequestContext,
        code: &str,
        reason: &str,
    ) -> Result<WarrantyState, ServiceError> {
        let (id, batch) = self.issued_code(&ctx.brand_id, code).await?;
        let cmd = warranty::Void {
            reason: reason.to_owned(),
            now: Utc::now(),
        };
        self.run(&ctx.meta(), id, batch, |state| {
            warranty::void(state, &cmd, &self.rules)
        })
        .await
    }

    /// Refunds `amount` of the code's current sale (see `warranty::refund`).
    pub async fn refund(
        &self,
        ctx: &RequestContext,
        code: &str,
        amount: Money,
        reason: &str,
    ) -> Result<WarrantyState, ServiceError> {
        let (id, batch) = self.issued_code(&ctx.brand_id, code).await?;
        let cmd = warranty::Refund {
            amount,
            reason: reason.to_owned(),
            now: Utc::now(),
        };
        self.run(&ctx.meta(), id, batch, |state| {
            warranty::refund(state, &cmd)
        })
        .await
    }

    async fn run<F>(
        &self,
        meta: &AppendMeta,
        id: CodeId,
        batch: Arc<IssuedBatch>,
        decide: F,
    ) -> Result<WarrantyState, ServiceError>
    where
        F: Fn(&Warranty) -> Result<Vec<ActivationEvent>, Rejection>,
    {
        let executed = self
            .warranties
            .execute(
                &warranty::stream_id(&meta.brand_id, id.batch_id, id.serial),
                meta,
                decide,
            )
            .await?;
        Ok(WarrantyState::executed(id, batch, executed))
    }

    /// The code of (batch, serial) as printed.
    pub async fn code_of(
        &self,
        brand_id: &str,
        batch_id: Uuid,
        serial: u32,
    ) -> Result<String, ServiceError> {
        let batch = self.batch(brand_id, batch_id).await?;
        Ok(self.signer.encode(&CodeId {
            brand_id: brand_id.to_owned(),
            key_id: batch.facts.key_id.clone(),
            batch_id,
            serial,
        }))
    }
}

/// NOT_FOUND unless `serial` is one of the codes printed for `batch`.
fn printed_serial(batch: &IssuedBatch, batch_id: Uuid, serial: u32) -> Result<(), ServiceError> {
    if serial == 0 || serial > batch.facts.quantity {
        return Err(ServiceError::NotFound(format!(
            "serial {serial} is outside batch {batch_id} (1..={})",
            batch.facts.quantity
        )));
    }
    Ok(())
}
