//! Command handling for payouts: the I/O around the pure domain. The API's commands (plans,
//! settlement, payments) and the reactions' and vesting job's commands all run here.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use scanloop_eventstore::{AppendMeta, Outbox, Repository};
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_service::{RequestContext, ServiceError};
use scanloop_storage::DbError;
use scanloop_storage::statements::Db;
use scanloop_timers::SharedClock;

use crate::config::Rules;
use crate::domain::Rejection;
use crate::domain::ledger::Beneficiary;
use crate::domain::money::fen_to_money;
use crate::domain::plan::{self, Plan, Terms};
use crate::domain::sale::{self, Accrue, Attributed, Return, Sale};
use crate::domain::settlement::{self, Batch, Candidate, Settlements};
use crate::projections::ReadModels;

/// Sale streams settled at once by a settlement run.
const SETTLE_CONCURRENCY: usize = 32;
/// Lines per PayoutLinesRecorded event (keeps each event well under Kafka's message limit).
const LINES_PER_EVENT: usize = 200;

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
    /// a return. Nothing when the attribution never accrued here.
    pub async fn revoke(
        &self,
        meta: &AppendMeta,
        attribution_id: &str,
        reason: String,
    ) -> Result<(), ServiceError> {
        let Some(stream) = self
            .sale_of_attribution(&meta.brand_id, attribution_id)
            .await?
        else {
            return Ok(());
        };
        let at = self.now();
        self.sales
            .execute(&stream, meta, |s| {
                let Some(first) = s.commissions.values().next() else {
                    return Ok(vec![]);
                };
                let cmd = Return {
                    warranty_stream_id: first.accrued.warranty_stream_id.clone(),
                    sale_activated_at: from_timestamp(first.accrued.sale_activated_at.as_ref())
                        .unwrap_or_default(),
                    cause: pb::ReturnCause::ReferralRejected,
                    refunded_total: 0,
                    purchase_amount: 0,
                    reason: reason.clone(),
                    at,
                };
                sale::record_return(s, &cmd)
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

    // ---- settlement ----

    /// Runs (or, for a repeated request id, finishes and answers) a settlement batch.
    pub async fn run_settlement(
        &self,
        ctx: &RequestContext,
        cutoff: DateTime<Utc>,
    ) -> Result<pb::SettlementBatch, ServiceError> {
        let brand = ctx.brand_id.as_str();
        let batch_id = settlement::batch_id(brand, &ctx.request_id);
        let control = settlement::control_stream_id(brand);
        for _ in 0..5 {
            let loaded = self.settlements.load::<Rejection>(&control).await?;
            if let Some(open) = loaded.state.open.clone()
                && open.batch_id != batch_id
            {
                // A crashed run's batch (or a concurrent one): finished first, so no commission
                // can be planned by two batches.
                tracing::info!(brand, batch_id = %open.batch_id, "finishing an open settlement batch first");
                self.finish(brand, &open.batch_id, open.cutoff, &internal_meta(ctx))
                    .await?;
                continue;
            }
            let now = self.now();
            match self
                .settlements
                .execute(&control, &ctx.meta(), |s| {
                    settlement::start(s, &batch_id, cutoff, now)
                })
                .await
            {
                Ok(executed) => {
                    // A repeated request settles with the cutoff it first named.
                    let cutoff = executed
                        .events
                        .iter()
                        .find_map(|e| {
                            (e.event_type == "scanloop.payouts.v1.SettlementStarted")
                                .then(|| {
                                    <pb::SettlementStarted as prost::Message>::decode(
                                        e.payload.as_slice(),
                                    )
                                    .ok()
                                })
                                .flatten()
                        })
                        .and_then(|s| from_timestamp(s.cutoff.as_ref()))
                        .unwrap_or(cutoff);
                    return self
                        .finish(brand, &batch_id, cutoff, &internal_meta(ctx))
                        .await;
                }
                Err(scanloop_eventstore::ExecuteError::Rejected(
                    Rejection::FailedPrecondition(_),
                )) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Aborted(
            "other settlement runs for this brand keep starting; retry".into(),
        ))
    }

    /// Settles, nets, records the lines of and completes `batch_id`; safe to run again on a
    /// batch a crashed run left open, and on a completed one (then it only answers).
    async fn finish(
        &self,
        brand: &str,
        batch_id: &str,
        cutoff: DateTime<Utc>,
        meta: &AppendMeta,
    ) -> Result<pb::SettlementBatch, ServiceError> {
        let control = settlement::control_stream_id(brand);
        let batch_stream = settlement::batch_stream_id(brand, batch_id);
        let state = self.settlements.load::<Rejection>(&control).await?.state;
        if !state.completed.contains(batch_id) {
            self.settle_batch(brand, batch_id, cutoff, meta).await?;
        }
        let lines = self.batches.load::<Rejection>(&batch_stream).await?.state;
        let started = self
            .read_models
            .settlement(brand, batch_id)
            .await
            .ok()
            .flatten();
        let mut batch = summary(brand, batch_id, cutoff, &lines, self.now());
        if let Some(projected) = started {
            batch.started_at = projected.started_at;
            batch.paid_lines = projected.paid_lines;
            if projected.completed_at.is_some() {
                batch.completed_at = projected.completed_at;
            }
        }
        Ok(batch)
    }

    async fn settle_batch(
        &self,
        brand: &str,
        batch_id: &str,
        cutoff: DateTime<Utc>,
        meta: &AppendMeta,
    ) -> Result<(), ServiceError> {
        let already = self
            .read_models
            .batch_items(brand, batch_id)
            .await
            .map_err(db_unavailable)?;
        let mut candidates = self
            .read_models
            .settleable(brand, cutoff)
            .await
            .map_err(db_unavailable)?;
        let in_batch: BTreeSet<Beneficiary> =
            already.iter().map(|c| c.beneficiary.clone()).collect();
        candidates.extend(already);
        let minimum = plan::minimum_payout(self.stored_plan(brand, "").await?.as_ref());
        let mut planned = settlement::plan(candidates, minimum);
        // Whoever this batch already settled for (a resumed run) is paid whatever it now nets.
        let mut carried = Vec::new();
        for c in std::mem::take(&mut planned.carried) {
            match Beneficiary::from_pb(c.beneficiary.as_ref()) {
                Some(b) if in_batch.contains(&b) => {}
                _ => carried.push(c),
            }
        }

        // Phase 1: the vested commissions, per sale stream.
        let mut commissions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut clawbacks: BTreeMap<Beneficiary, Vec<Candidate>> = BTreeMap::new();
        for (beneficiary, items) in &planned.pay {
            for item in items {
                match &item.clawback_id {
                    None => commissions
                        .entry(item.sale_stream_id.clone())
                        .or_default()
                        .push(item.commission_id.clone()),
                    Some(_) => clawbacks
                        .entry(beneficiary.clone())
                        .or_default()
                        .push(item.clone()),
                }
            }
        }
        let settled: Vec<(Beneficiary, i64)> = futures::stream::iter(commissions)
            .map(|(stream, ids)| async move {
                let executed = self
                    .sales
                    .execute(&stream, meta, |s| {
                        Ok::<_, Rejection>(sale::settle(s, batch_id, &ids))
                    })
                    .await?;
                Ok::<_, ServiceError>(sale::in_batch(&executed.state, batch_id).0)
            })
            .buffer_unordered(SETTLE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        let mut gross: BTreeMap<Beneficiary, Vec<i64>> = BTreeMap::new();
        for (b, amount) in settled {
            gross.entry(b).or_default().push(amount);
        }

        // Phase 2: the owed claw-backs each payout can absorb.
        let mut to_net: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (beneficiary, owed) in &clawbacks {
            let room: i64 = gross.get(beneficiary).map_or(0, |g| g.iter().sum());
            for item in settlement::choose_netting(room, owed) {
                to_net
                    .entry(item.sale_stream_id.clone())
                    .or_default()
                    .push((
                        item.commission_id.clone(),
                        item.clawback_id.clone().unwrap_or_default(),
                    ));
            }
        }
        let netted: Vec<(Beneficiary, i64)> = futures::stream::iter(to_net)
            .map(|(stream, ids)| async move {
                let executed = self
                    .sales
                    .execute(&stream, meta, |s| {
                        Ok::<_, Rejection>(sale::net(s, batch_id, &ids))
                    })
                    .await?;
                Ok::<_, ServiceError>(sale::in_batch(&executed.state, batch_id).1)
            })
            .buffer_unordered(SETTLE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        let mut netted_by: BTreeMap<Beneficiary, i64> = BTreeMap::new();
        for (b, amount) in netted {
            *netted_by.entry(b).or_default() += amount;
        }

        // The lines, from what was actually settled and netted.
        let lines: Vec<pb::PayoutLine> = gross
            .iter()
            .map(|(b, amounts)| {
                let masked_identity = match b.kind {
                    crate::domain::ledger::Kind::Member => scanloop_pii::masked_id(&b.id),
                    crate::domain::ledger::Kind::Store => b.id.clone(),
                };
                settlement::line(
                    batch_id,
                    b,
                    masked_identity,
                    amounts,
                    netted_by.get(b).copied().unwrap_or(0),
                )
            })
            .collect();
        let batch_stream = settlement::batch_stream_id(brand, batch_id);
        let chunks = lines.len().div_ceil(LINES_PER_EVENT).max(1);
        for i in 0..chunks {
            let chunk = &lines[(i * LINES_PER_EVENT).min(lines.len())
                ..((i + 1) * LINES_PER_EVENT).min(lines.len())];
            let carried_chunk: &[pb::CarriedBalance] = if i == 0 { &carried } else { &[] };
            self.batches
                .execute(&batch_stream, meta, |b| {
                    Ok::<_, Rejection>(settlement::record(b, batch_id, chunk, carried_chunk))
                })
                .await?;
        }
        let recorded = self.batches.load::<Rejection>(&batch_stream).await?.state;
        let done = summary(brand, batch_id, cutoff, &recorded, self.now());
        let completed = pb::SettlementCompleted {
            batch_id: batch_id.to_owned(),
            cutoff: Some(to_timestamp(cutoff)),
            lines_count: done.lines_count,
            commissions: done.commissions,
            total: done.total,
            carried_count: u32::try_from(recorded.carried.len()).unwrap_or(u32::MAX),
            completed_at: Some(to_timestamp(self.now())),
        };
        self.settlements
            .execute(&settlement::control_stream_id(brand), meta, |s| {
                settlement::complete(s, &completed)
            })
            .await?;
        Ok(())
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

/// Metadata for the appends a run makes beyond its first (the request id is bound to the
/// batch's start; the settle steps are idempotent by state).
fn internal_meta(ctx: &RequestContext) -> AppendMeta {
    AppendMeta {
        request: None,
        ..ctx.meta()
    }
}

/// A batch's totals from its recorded lines.
pub fn summary(
    brand: &str,
    batch_id: &str,
    cutoff: DateTime<Utc>,
    batch: &Batch,
    now: DateTime<Utc>,
) -> pb::SettlementBatch {
    let total: i64 = batch
        .lines
        .values()
        .map(|l| l.line.amount.as_ref().map_or(0, |m| m.amount_fen))
        .sum();
    pb::SettlementBatch {
        brand_id: brand.to_owned(),
        batch_id: batch_id.to_owned(),
        status: pb::BatchStatus::Completed as i32,
        cutoff: Some(to_timestamp(cutoff)),
        started_at: None,
        completed_at: Some(to_timestamp(now)),
        lines_count: u32::try_from(batch.lines.len()).unwrap_or(u32::MAX),
        total: Some(fen_to_money(total)),
        commissions: batch.lines.values().map(|l| l.line.commissions).sum(),
        lines: Vec::new(),
        page: None,
        carried: batch.carried.values().cloned().collect(),
        paid_lines: u32::try_from(
            batch
                .lines
                .values()
                .filter(|l| l.paid_reference.is_some())
                .count(),
        )
        .unwrap_or(u32::MAX),
    }
}
