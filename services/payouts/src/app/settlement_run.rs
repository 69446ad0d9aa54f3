//! Running a settlement batch: start it on the brand's settlements stream, record its plan on the
//! batch's stream, then move the money on the sale streams the plan names, record the lines and
//! close the batch. Every step is idempotent by the streams' state, so a crashed run resumed
//! (or a second runner beside it) finishes the batch with the same lines.
//!
//! Under the `failpoints` feature, a `fail` point after every write lets the crash tests stop a
//! run there: `settlement::planned`, `settlement::settled-sale`, `settlement::netted-sale`,
//! `settlement::lines-recorded`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use scanloop_eventstore::{AppendMeta, ExecuteError};
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::to_timestamp;
use scanloop_service::{RequestContext, ServiceError};

use super::{Payouts, db_unavailable};
use crate::domain::ledger::{Beneficiary, Kind};
use crate::domain::money::{fen_to_money, yuan};
use crate::domain::plan;
use crate::domain::sale;
use crate::domain::sale::Sale;
use crate::domain::settlement::{self, Batch, Candidate, Closed, PlanInput, Settlements};
use crate::domain::{PayoutsEvent, Rejection};

/// Sale streams settled at once by a settlement run.
const SETTLE_CONCURRENCY: usize = 32;
/// Lines (and carried balances) per event on the batch's stream: keeps each event well under
/// Kafka's message limit.
const LINES_PER_EVENT: usize = 200;

/// Stops a run here when the crash tests set the point (compiled in only with `failpoints`).
macro_rules! crash_point {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |_| Err(ServiceError::Unavailable(format!(
            "failpoint {}",
            $name
        ))));
        #[cfg(not(feature = "failpoints"))]
        let _ = $name;
    };
}

impl Payouts {
    /// Runs (or, for a repeated request id, finishes and answers) a settlement batch. A run that
    /// finds another batch open (a crashed or concurrent run) finishes that one first. A new
    /// batch is started only when something is payable: a batch with no lines never exists.
    pub async fn run_settlement(
        &self,
        ctx: &RequestContext,
        cutoff: DateTime<Utc>,
    ) -> Result<pb::SettlementBatch, ServiceError> {
        let brand = ctx.brand_id.as_str();
        let batch_id = settlement::batch_id(brand, &ctx.request_id);
        let control = settlement::control_stream_id(brand);
        // The request id is bound to this run even when it finds nothing to pay.
        self.settlements
            .claim::<Rejection>(&ctx.meta(), &control)
            .await?;
        for _ in 0..5 {
            let loaded = self.settlements.load::<Rejection>(&control).await?;
            if let Some(open) = loaded.state.open.clone()
                && open.batch_id != batch_id
            {
                // A crashed run's batch (or a concurrent one): finished first, so no commission
                // can be planned by two batches.
                tracing::info!(brand, batch_id = %open.batch_id, "finishing an open settlement batch first");
                match self
                    .finish(
                        brand,
                        &open.batch_id,
                        open.cutoff,
                        &internal_meta(ctx),
                        None,
                    )
                    .await
                {
                    Ok(_) | Err(ServiceError::FailedPrecondition(_)) => continue,
                    Err(other) => return Err(other),
                }
            }
            // A new batch only when it would pay someone (a repeat finds its batch started).
            let mut candidates = None;
            if !loaded.state.batches.contains_key(&batch_id) {
                let found = self.candidates(brand, &batch_id, cutoff).await?;
                let minimum = self.minimum_payout(brand).await?;
                let preview = settlement::plan(found.clone(), minimum);
                if preview.pay.is_empty() {
                    return Err(nothing_to_pay(cutoff, minimum, &preview.carried));
                }
                candidates = Some(Work { found, minimum });
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
                        .state
                        .batches
                        .get(&batch_id)
                        .map_or(cutoff, |b| b.cutoff);
                    return self
                        .finish(brand, &batch_id, cutoff, &internal_meta(ctx), candidates)
                        .await;
                }
                Err(ExecuteError::Rejected(Rejection::FailedPrecondition(_))) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Aborted(
            "other settlement runs for this brand keep starting; retry".into(),
        ))
    }

    /// What a batch can settle up to `cutoff`: vested commissions and owed claw-backs, and what
    /// the batch already settled (a batch a crashed run of an earlier version left open).
    async fn candidates(
        &self,
        brand: &str,
        batch_id: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<Candidate>, ServiceError> {
        let (settleable, already) = tokio::join!(
            self.read_models.settleable(brand, cutoff),
            self.read_models.batch_items(brand, batch_id)
        );
        let mut candidates = settleable.map_err(db_unavailable)?;
        candidates.extend(already.map_err(db_unavailable)?);
        Ok(candidates)
    }

    async fn minimum_payout(&self, brand: &str) -> Result<i64, ServiceError> {
        Ok(plan::minimum_payout(
            self.stored_plan(brand, "").await?.as_ref(),
        ))
    }

    /// Plans (unless planned), settles, nets, records the lines of and closes `batch_id`, then
    /// answers it as its streams record it. Safe on a batch a crashed run left open, beside
    /// another runner, and on a closed one (then it only answers).
    async fn finish(
        &self,
        brand: &str,
        batch_id: &str,
        cutoff: DateTime<Utc>,
        meta: &AppendMeta,
        candidates: Option<Work>,
    ) -> Result<pb::SettlementBatch, ServiceError> {
        let control = settlement::control_stream_id(brand);
        let batch_stream = settlement::batch_stream_id(brand, batch_id);
        let mut state = self.settlements.load::<Rejection>(&control).await?.state;
        let batch = if state.is_closed(batch_id) {
            self.batches.load::<Rejection>(&batch_stream).await?.state
        } else {
            let batch = self
                .settle_batch(brand, batch_id, cutoff, meta, candidates)
                .await?;
            state = self.settlements.load::<Rejection>(&control).await?.state;
            batch
        };
        answer(brand, batch_id, &state, &batch)
    }

    async fn settle_batch(
        &self,
        brand: &str,
        batch_id: &str,
        cutoff: DateTime<Utc>,
        meta: &AppendMeta,
        candidates: Option<Work>,
    ) -> Result<Batch, ServiceError> {
        let batch_stream = settlement::batch_stream_id(brand, batch_id);
        let control = settlement::control_stream_id(brand);
        let mut batch = self.batches.load::<Rejection>(&batch_stream).await?.state;

        // 1. The plan, on the batch's stream, before any money moves.
        if !batch.sealed {
            // A new run's preview already read them; a resumed batch reads them now.
            let work = match candidates {
                Some(work) => work,
                None => Work {
                    found: self.candidates(brand, batch_id, cutoff).await?,
                    minimum: self.minimum_payout(brand).await?,
                },
            };
            let input = PlanInput {
                batch_id,
                candidates: &work.found,
                minimum: work.minimum,
                mask: &masked_identity,
                per_chunk: LINES_PER_EVENT,
            };
            while !batch.sealed {
                batch = self
                    .batches
                    .execute(&batch_stream, meta, |b| {
                        Ok::<_, Rejection>(settlement::plan_next(b, &input))
                    })
                    .await?
                    .state;
                crash_point!("settlement::planned");
            }
        }

        // 2. The planned commissions, per sale stream: payable → clearing.
        let settled = self
            .on_sales(
                settlement::commissions_to_settle(&batch),
                meta,
                "settlement::settled-sale",
                |s, ids| sale::settle(s, batch_id, ids),
            )
            .await?;
        let mut gross: BTreeMap<Beneficiary, Vec<i64>> = BTreeMap::new();
        for (b, amount) in settled.iter().flat_map(|s| sale::in_batch(s, batch_id).0) {
            gross.entry(b).or_default().push(amount);
        }
        let gross_total: BTreeMap<Beneficiary, i64> = gross
            .iter()
            .map(|(b, amounts)| (b.clone(), amounts.iter().sum()))
            .collect();

        // 3. The planned claw-backs that what actually settled can absorb.
        let netted = self
            .on_sales(
                settlement::clawbacks_to_net(&batch, &gross_total),
                meta,
                "settlement::netted-sale",
                |s, ids| sale::net(s, batch_id, ids),
            )
            .await?;
        let mut netted_by: BTreeMap<Beneficiary, i64> = BTreeMap::new();
        for (b, amount) in netted.iter().flat_map(|s| sale::in_batch(s, batch_id).1) {
            *netted_by.entry(b).or_default() += amount;
        }

        // 4. The lines, from the plan and what the sale streams settled and netted: every runner
        // that gets here computes the same ones, and the batch's stream records them once.
        let lines = settlement::lines(&batch, batch_id, &gross, &netted_by);
        if lines.is_empty() {
            // Everything planned was reversed before it could settle: nothing moved.
            let now = self.now();
            let reason = "nothing planned could settle: every planned commission was reversed \
                          before it settled";
            self.settlements
                .execute(&control, meta, |s| {
                    settlement::abandon(s, batch_id, reason, now)
                })
                .await?;
            return Ok(batch);
        }
        let carried: Vec<pb::CarriedBalance> = batch.carried.values().cloned().collect();
        for (i, chunk) in lines.chunks(LINES_PER_EVENT).enumerate() {
            let carried_chunk: &[pb::CarriedBalance] = if i == 0 { &carried } else { &[] };
            batch = self
                .batches
                .execute(&batch_stream, meta, |b| {
                    Ok::<_, Rejection>(settlement::record(b, batch_id, chunk, carried_chunk))
                })
                .await?
                .state;
        }
        crash_point!("settlement::lines-recorded");

        // 5. Closed with the totals of the recorded lines.
        let completed = completion(batch_id, cutoff, &batch, self.now());
        self.settlements
            .execute(&control, meta, |s| settlement::complete(s, &completed))
            .await?;
        Ok(batch)
    }
}

impl Payouts {
    /// Decides on each listed sale stream (a few at a time) and answers each one's state after;
    /// `point` names the crash point after each append.
    async fn on_sales<T: Send + Sync>(
        &self,
        work: BTreeMap<String, T>,
        meta: &AppendMeta,
        point: &'static str,
        decide: impl Fn(&Sale, &T) -> Vec<PayoutsEvent> + Send + Sync,
    ) -> Result<Vec<Sale>, ServiceError> {
        let decide = &decide;
        futures::stream::iter(work)
            .map(|(stream, item)| async move {
                let executed = self
                    .sales
                    .execute(&stream, meta, |s| Ok::<_, Rejection>(decide(s, &item)))
                    .await?;
                crash_point!(point);
                Ok::<_, ServiceError>(executed.state)
            })
            .buffer_unordered(SETTLE_CONCURRENCY)
            .try_collect()
            .await
    }
}

/// What a batch is planned from: the candidates read and the minimum payout in force.
struct Work {
    found: Vec<Candidate>,
    minimum: i64,
}

/// The identity finance sees: a masked member id, or the store's id.
fn masked_identity(b: &Beneficiary) -> String {
    match b.kind {
        Kind::Member => scanloop_pii::masked_id(&b.id),
        Kind::Store => b.id.clone(),
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

fn nothing_to_pay(
    cutoff: DateTime<Utc>,
    minimum: i64,
    carried: &[pb::CarriedBalance],
) -> ServiceError {
    let mut message = format!(
        "nothing is payable as of {}: no beneficiary's vested commissions (net of claw-backs) \
         reach the minimum payout of {} yuan",
        cutoff.to_rfc3339(),
        yuan(minimum)
    );
    if !carried.is_empty() {
        message.push_str(&format!(
            "; {} beneficiaries would be carried over",
            carried.len()
        ));
    }
    ServiceError::FailedPrecondition(message)
}

/// The closing totals, from the lines the batch's stream recorded.
fn completion(
    batch_id: &str,
    cutoff: DateTime<Utc>,
    batch: &Batch,
    now: DateTime<Utc>,
) -> pb::SettlementCompleted {
    let total: i64 = batch
        .lines
        .values()
        .map(|l| l.line.amount.as_ref().map_or(0, |m| m.amount_fen))
        .sum();
    pb::SettlementCompleted {
        batch_id: batch_id.to_owned(),
        cutoff: Some(to_timestamp(cutoff)),
        lines_count: u32::try_from(batch.lines.len()).unwrap_or(u32::MAX),
        commissions: batch.lines.values().map(|l| l.line.commissions).sum(),
        total: Some(fen_to_money(total)),
        carried_count: u32::try_from(batch.carried.len()).unwrap_or(u32::MAX),
        completed_at: Some(to_timestamp(now)),
    }
}

/// A closed batch as its streams record it: the same fields GetSettlement shows.
fn answer(
    brand: &str,
    batch_id: &str,
    state: &Settlements,
    batch: &Batch,
) -> Result<pb::SettlementBatch, ServiceError> {
    let Some(started) = state.batches.get(batch_id) else {
        return Err(ServiceError::Internal(format!(
            "settlement batch {batch_id} was never started"
        )));
    };
    let done = match &started.closed {
        Some(Closed::Completed(done)) => done,
        Some(Closed::Abandoned(reason)) => {
            return Err(ServiceError::FailedPrecondition(format!(
                "settlement batch {batch_id} closed without lines: {reason}"
            )));
        }
        None => {
            return Err(ServiceError::Internal(format!(
                "settlement batch {batch_id} is still open after finishing"
            )));
        }
    };
    Ok(pb::SettlementBatch {
        brand_id: brand.to_owned(),
        batch_id: batch_id.to_owned(),
        status: pb::BatchStatus::Completed as i32,
        cutoff: done.cutoff.or_else(|| Some(to_timestamp(started.cutoff))),
        started_at: started.started_at,
        completed_at: done.completed_at,
        lines_count: done.lines_count,
        total: done.total.clone(),
        commissions: done.commissions,
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
    })
}
