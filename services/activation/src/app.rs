//! Command handling: the I/O around the pure domain. Each method verifies input that needs
//! secrets (codes, phone numbers), runs a domain decision against its stream through the
//! repository (load → decide → append + publish, retried on conflicts), and answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use scanloop_eventstore::{Outbox, Repository};
use scanloop_pii::IdentityHasher;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::common::v1::{BuyerIdentity, StoredIdentity};
pub use scanloop_service::RequestContext;
use scanloop_service::ServiceError;
use uuid::Uuid;

use crate::domain::batch::{self, Batch};
use crate::domain::code::{CodeError, CodeId, CodeSigner};
use crate::domain::warranty::{self, Rules, Warranty};
use crate::domain::{ActivationEvent, Rejection};
use crate::projections::ReadModels;

/// Namespace of batch ids derived from (brand, request id): a retried IssueBatch finds its batch.
const BATCH_NAMESPACE: Uuid = Uuid::from_u128(0x5ca7_100b_a7c4_4e55_9d1e_0000_0000_0001);

pub struct Activation {
    batches: Repository<Batch>,
    warranties: Repository<Warranty>,
    signer: CodeSigner,
    hasher: IdentityHasher,
    rules: Rules,
    read_models: ReadModels,
    /// Issued batches never change: cached after the first load.
    batch_cache: Mutex<HashMap<Uuid, Arc<pb::BatchIssued>>>,
}

/// A code's state as the write side knows it (for answers that must not lag).
pub struct WarrantyState {
    pub code: CodeId,
    pub batch: Arc<pb::BatchIssued>,
    pub warranty: Warranty,
    pub version: u64,
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
            warranties: Repository::new(outbox),
            signer,
            hasher,
            rules,
            read_models,
            batch_cache: Mutex::new(HashMap::new()),
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
    ) -> Result<(Uuid, Arc<pb::BatchIssued>), ServiceError> {
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
        let executed = self
            .batches
            .execute(&batch::stream_id(batch_id), &ctx.meta(), |state| {
                batch::issue(state, &issued)
            })
            .await?;
        let facts = Arc::new(executed.state.issued.expect("issued batch has facts"));
        self.batch_cache
            .lock()
            .expect("batch cache")
            .insert(batch_id, facts.clone());
        Ok((batch_id, facts))
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
    ) -> Result<(CodeId, Arc<pb::BatchIssued>), ServiceError> {
        let id = self
            .verify(brand_id, code)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let batch = self.batch(id.batch_id).await?;
        if id.serial == 0 || id.serial > batch.quantity {
            // Authentic signature but a serial never printed: only a leaked key could do this.
            return Err(ServiceError::NotFound(format!(
                "serial {} is outside batch {} (1..={})",
                id.serial, id.batch_id, batch.quantity
            )));
        }
        Ok((id, batch))
    }

    pub async fn batch(&self, batch_id: Uuid) -> Result<Arc<pb::BatchIssued>, ServiceError> {
        if let Some(batch) = self.batch_cache.lock().expect("batch cache").get(&batch_id) {
            return Ok(batch.clone());
        }
        let loaded = self
            .batches
            .load::<Rejection>(&batch::stream_id(batch_id))
            .await?;
        let batch =
            Arc::new(loaded.state.issued.ok_or_else(|| {
                ServiceError::NotFound(format!("batch {batch_id} was never issued"))
            })?);
        self.batch_cache
            .lock()
            .expect("batch cache")
            .insert(batch_id, batch.clone());
        Ok(batch)
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
                &warranty::stream_id(id.batch_id, id.serial),
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
            batch: (*batch).clone(),
            serial: u64::from(id.serial),
            buyer,
            channel,
            purchase_amount_fen,
            purchased_at,
            referral_token,
            device_serial,
            now: Utc::now(),
        };
        self.run(ctx, id, batch, |state| {
            warranty::activate(state, &cmd, &self.rules)
        })
        .await
    }

    pub async fn extend(
        &self,
        ctx: &RequestContext,
        code: &str,
        months: u32,
        reason: pb::ExtensionReason,
    ) -> Result<WarrantyState, ServiceError> {
        let (id, batch) = self.issued_code(&ctx.brand_id, code).await?;
        let cmd = warranty::Extend { months, reason };
        self.run(ctx, id, batch, |state| warranty::extend(state, &cmd))
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
        self.run(ctx, id, batch, |state| {
            warranty::void(state, &cmd, &self.rules)
        })
        .await
    }

    async fn run<F>(
        &self,
        ctx: &RequestContext,
        id: CodeId,
        batch: Arc<pb::BatchIssued>,
        decide: F,
    ) -> Result<WarrantyState, ServiceError>
    where
        F: Fn(&Warranty) -> Result<Vec<ActivationEvent>, Rejection>,
    {
        let executed = self
            .warranties
            .execute(
                &warranty::stream_id(id.batch_id, id.serial),
                &ctx.meta(),
                decide,
            )
            .await?;
        Ok(WarrantyState {
            code: id,
            batch,
            warranty: executed.state,
            version: executed.version,
        })
    }

    /// The code of (batch, serial) as printed.
    pub async fn code_of(
        &self,
        brand_id: &str,
        batch_id: Uuid,
        serial: u32,
    ) -> Result<String, ServiceError> {
        let batch = self.batch(batch_id).await?;
        Ok(self.signer.encode(&CodeId {
            brand_id: brand_id.to_owned(),
            key_id: batch.key_id.clone(),
            batch_id,
            serial,
        }))
    }
}
