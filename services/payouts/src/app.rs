//! Command handling for payouts: the I/O around the pure domain. The API's commands (plans,
//! settlement, payments) and the reactions' and vesting job's commands all run here.

use chrono::{DateTime, Utc};
use scanloop_eventstore::{AppendMeta, Outbox, Repository};
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::from_timestamp;
use scanloop_service::{RequestContext, ServiceError};
use scanloop_storage::DbError;
use scanloop_storage::statements::Db;
use scanloop_timers::SharedClock;

use crate::config::Rules;
use crate::domain::Rejection;
use crate::domain::ledger::Beneficiary;
use crate::domain::plan::{self, Plan, Terms};
use crate::domain::sale::{self, Accrue, Attributed, Return, Revocation, Sale};
use crate::domain::settlement::{self, Batch, Settlements};
use crate::projections::ReadModels;

mod settlement_run;

pub struct Payouts {
    plans: Repository<Plan>,
    sales: Repository<Sale>,
    settlements: Repository<Settlements>,
    batches: Repository<Batch>,
    directory: Db,
    read_models: ReadModels,
    rules: Rules,
    clock: SharedClock,
}

pub fn db_unavailable(error: DbError) -> ServiceError {
    tracing::warn!(%error, "payouts tables unavailable");
    ServiceError::Unavailable("payouts tables unavailable; retry later".into())
}

const DIRECTORY: &[(&str, &str)] = &[
    (
        "put_sale_of_attribution",
        "INSERT INTO {ks}.sale_of_attribution (brand_id, attribution_id, sale_stream_id) \
         VALUES (?, ?, ?)",
    ),
    (
        "sale_of_attribution",
        "SELECT sale_stream_id FROM {ks}.sale_of_attribution \
         WHERE brand_id = ? AND attribution_id = ?",
    ),
];

impl Payouts {
    pub async fn new(
        outbox: Outbox,
        read_models: ReadModels,
        rules: Rules,
        clock: SharedClock,
        keyspace: &str,
    ) -> anyhow::Result<Self> {
        let directory = Db::prepare(outbox.store().session().clone(), keyspace, DIRECTORY).await?;
        Ok(Self {
            plans: Repository::new(outbox.clone()),
            sales: Repository::new(outbox.clone()),
            settlements: Repository::new(outbox.clone()),
            batches: Repository::new(outbox),
            directory,
            read_models,
            rules,
            clock,
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn read_models(&self) -> &ReadModels {
        &self.read_models
    }

    // ---- plans ----

    pub async fn upsert_plan(
        &self,
        ctx: &RequestContext,
        request: pb::UpsertPlanRequest,
    ) -> Result<pb::CommissionPlan, ServiceError> {
        let cmd = plan::Upsert {
            ceiling_bps: self.rules.ceiling_bps(&ctx.brand_id),
            purchase_max_fen: self.rules.purchase_max_fen(&ctx.brand_id),
            request,
            now: self.now(),
        };
        let stream = plan::stream_id(&ctx.brand_id, &cmd.request.sku);
        let executed = self
            .plans
            .execute(&stream, &ctx.meta(), |p| plan::upsert(p, &cmd))
            .await?;
        executed
            .state
            .current
            .ok_or_else(|| ServiceError::Internal("plan upsert left no plan".into()))
    }

    async fn stored_plan(
        &self,
        brand: &str,
        sku: &str,
    ) -> Result<Option<pb::CommissionPlan>, ServiceError> {
        Ok(self
            .plans
            .load::<Rejection>(&plan::stream_id(brand, sku))
            .await?
            .state
            .current)
    }

    /// The plan in force for a SKU: its own, else the brand default.
    pub async fn plan_for(
        &self,
        brand: &str,
        sku: &str,
    ) -> Result<Option<pb::CommissionPlan>, ServiceError> {
        if !sku.is_empty()
            && let Some(plan) = self.stored_plan(brand, sku).await?
        {
            return Ok(Some(plan));
        }
        self.stored_plan(brand, "").await
    }

    // ---- reactions ----

    /// Accrues an attributed sale's commissions under the plan in force now.
    pub async fn accrue(&self, meta: &AppendMeta, sale: Attributed) -> Result<(), ServiceError> {
        let brand = meta.brand_id.as_str();
        let Some(plan) = self.plan_for(brand, &sale.sku).await? else {
            tracing::info!(brand, attribution_id = %sale.attribution_id, "no commission plan: the sale earns nothing");
            return Ok(());
        };
        let stream = sale::stream_id(&sale.warranty_stream_id, sale.sale_activated_at);
        // Recorded before the commissions: a later revocation names only the attribution.
        self.directory
            .exec(
                "put_sale_of_attribution",
                (brand, &sale.attribution_id, &stream),
            )
            .await
            .map_err(db_unavailable)?;
        let cmd = Accrue {
            sale,
            terms: Terms::of(&plan),
            ceiling_bps: self.rules.ceiling_bps(brand),
            now: self.now(),
        };
        // A sale's stream opens with its accrual (a redelivered attribution finds it again).
        self.sales.presume_new(&stream);
        self.sales
            .execute(&stream, meta, |s| sale::accrue(s, &cmd))
            .await?;
        Ok(())
    }

    /// Records a return or refund of a sale, taking back what it takes.
    pub async fn record_return(&self, meta: &AppendMeta, cmd: Return) -> Result<(), ServiceError> {
        let stream = sale::stream_id(&cmd.warranty_stream_id, cmd.sale_activated_at);
        self.sales
            .execute(&stream, meta, |s| sale::record_return(s, &cmd))
            .await?;
        Ok(())
    }

    /// A referral rejected after it was attributed: its sale's commissions are taken back as for
    /// a return. When nothing has accrued yet (the attribution is late, or dead-lettered and
    /// replayed later), the revocation is still recorded on the sale, so a later accrual pays
    /// nothing. A rejection of a sale that never counted concerns nothing here.
    pub async fn revoke(&self, meta: &AppendMeta, cmd: Revocation) -> Result<(), ServiceError> {
        let known = self
            .sale_of_attribution(&meta.brand_id, &cmd.attribution_id)
            .await?;
        let stream = match (known, &cmd.sale) {
            (Some(stream), _) => stream,
            (None, Some((warranty, activated_at))) if cmd.counted => {
                sale::stream_id(warranty, *activated_at)
            }
            (None, _) => return Ok(()),
        };
        let at = self.now();
        self.sales
            .execute(&stream, meta, |s| {
                let (warranty_stream_id, sale_activated_at) = match s.commissions.values().next() {
                    Some(first) => (
                        first.accrued.warranty_stream_id.clone(),
                        from_timestamp(first.accrued.sale_activated_at.as_ref())
                            .unwrap_or_default(),
                    ),
                    None => match &cmd.sale {
                        Some((warranty, activated_at)) => (warranty.clone(), *activated_at),
                        None => return Ok(vec![]),
                    },
                };
                let ret = Return {
                    warranty_stream_id,
                    sale_activated_at,
                    cause: pb::ReturnCause::ReferralRejected,
                    refunded_total: 0,
                    purchase_amount: 0,
                    reason: cmd.reason.clone(),
                    at,
                };
                sale::record_return(s, &ret)
            })
            .await?;
        Ok(())
    }

    pub async fn sale_of_attribution(
        &self,
        brand: &str,
        attribution_id: &str,
    ) -> Result<Option<String>, ServiceError> {
        Ok(self
            .directory
            .first::<(String,)>("sale_of_attribution", (brand, attribution_id))
            .await
            .map_err(db_unavailable)?
            .map(|(s,)| s))
    }

    /// Vests what is due on a sale as of the clock's now.
    pub async fn vest(&self, meta: &AppendMeta, sale_stream: &str) -> Result<(), ServiceError> {
        let as_of = self.now();
        self.sales
            .execute(sale_stream, meta, |s| {
                Ok::<_, Rejection>(sale::vest(s, as_of))
            })
            .await?;
        Ok(())
    }

    /// Writes off a claw-back finance cannot collect; answers the write-off as recorded (a
    /// repeated request, the first one's).
    pub async fn write_off(
        &self,
        ctx: &RequestContext,
        sale_stream: &str,
        clawback_id: &str,
        reason: &str,
    ) -> Result<pb::ReceivableWrittenOff, ServiceError> {
        let now = self.now();
        let executed = self
            .sales
            .execute(sale_stream, &ctx.meta(), |s| {
                sale::write_off(s, clawback_id, reason, now)
            })
            .await?;
        executed
            .events
            .iter()
            .find(|e| e.event_type == "scanloop.payouts.v1.ReceivableWrittenOff")
            .and_then(|e| {
                <pb::ReceivableWrittenOff as prost::Message>::decode(e.payload.as_slice()).ok()
            })
            .ok_or_else(|| ServiceError::Internal("the write-off was not recorded".into()))
    }

    pub async fn mark_paid(
        &self,
        ctx: &RequestContext,
        batch_id: &str,
        beneficiary: &Beneficiary,
        reference: &str,
    ) -> Result<pb::PayoutLine, ServiceError> {
        let stream = settlement::batch_stream_id(&ctx.brand_id, batch_id);
        let now = self.now();
        let executed = self
            .batches
            .execute(&stream, &ctx.meta(), |b| {
                settlement::mark_paid(b, batch_id, beneficiary, reference, now)
            })
            .await?;
        executed
            .state
            .lines
            .get(&beneficiary.key())
            .map(|l| l.line.clone())
            .ok_or_else(|| ServiceError::Internal("paid line vanished".into()))
    }

    /// A batch's lines as recorded in its stream (authoritative; the read model may lag).
    pub async fn batch(&self, brand: &str, batch_id: &str) -> Result<Batch, ServiceError> {
        Ok(self
            .batches
            .load::<Rejection>(&settlement::batch_stream_id(brand, batch_id))
            .await?
            .state)
    }
}
