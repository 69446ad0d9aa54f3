//! Settlement batches.
//!
//! - [`Settlements`] (stream `settlements-<brand>`) lets one batch per brand be open at a time:
//!   a run starts its batch only when no other is open, so two runs never plan over the same
//!   commissions; a crashed run leaves its batch open and the next run finishes it first.
//! - [`Batch`] (stream `settlement-<brand>-<batch>`) owns the batch's plan, its lines and
//!   payments. The plan ([`plan_next`], `SettlementPlanned`) is recorded before any sale stream
//!   moves money; settling and netting then follow the plan only, and the lines come from the
//!   plan and what the sale streams actually settled ([`lines`]). So a resumed or concurrent run
//!   finishes a batch with the same lines, whatever the read models say by then.
//! - [`plan`] decides from the vested commissions and owed claw-backs who is paid: a beneficiary
//!   whose net reaches the minimum payout is paid all of it; the others are carried over, with
//!   the reason (under the minimum, or owing more than earned: never paid out, reported).
//! - [`choose_netting`]: which owed claw-backs a payout can absorb, so no line is ever negative.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use scanloop_eventstore::Aggregate;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use uuid::Uuid;

use super::ledger::{self, Beneficiary};
use super::money::{fen_to_money, money_fen, yuan};
use super::{PayoutsEvent, Rejection};

const NAMESPACE: Uuid = Uuid::from_u128(0x5ca1_1000_0000_4000_8000_0000_5e77_1e00);

pub fn control_stream_id(brand_id: &str) -> String {
    format!("settlements-{brand_id}")
}

pub fn batch_stream_id(brand_id: &str, batch_id: &str) -> String {
    format!("settlement-{brand_id}-{batch_id}")
}

/// A run's batch id: UUIDv5 of the brand and request id, so a retried run finds its batch.
pub fn batch_id(brand_id: &str, request_id: &str) -> String {
    Uuid::new_v5(&NAMESPACE, format!("{brand_id}/{request_id}").as_bytes()).to_string()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    pub batch_id: String,
    pub cutoff: DateTime<Utc>,
}

/// How a batch closed.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    Completed(pb::SettlementCompleted),
    /// Nothing was left to pay by the time it was planned: not listed as a settlement.
    Abandoned(String),
}

/// A batch as the brand's settlements stream knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub cutoff: DateTime<Utc>,
    pub started_at: Option<Timestamp>,
    pub closed: Option<Closed>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Settlements {
    pub open: Option<Open>,
    /// Every batch ever started, by id.
    pub batches: BTreeMap<String, Started>,
}

impl Settlements {
    pub fn completed(&self, batch_id: &str) -> Option<&pb::SettlementCompleted> {
        match self.batches.get(batch_id)?.closed.as_ref()? {
            Closed::Completed(done) => Some(done),
            Closed::Abandoned(_) => None,
        }
    }

    pub fn is_closed(&self, batch_id: &str) -> bool {
        self.batches
            .get(batch_id)
            .is_some_and(|b| b.closed.is_some())
    }

    fn close(&mut self, batch_id: &str, closed: Closed) {
        if self.open.as_ref().is_some_and(|o| o.batch_id == batch_id) {
            self.open = None;
        }
        if let Some(batch) = self.batches.get_mut(batch_id) {
            batch.closed = Some(closed);
        }
    }
}

/// [`Settlements`] as plain data, for its snapshot: a completed batch's summary is kept as its
/// encoded event.
#[derive(serde::Serialize, serde::Deserialize)]
struct SettlementsSnapshot {
    open: Option<(String, DateTime<Utc>)>,
    batches: Vec<StartedSnapshot>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StartedSnapshot {
    batch_id: String,
    cutoff: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed: Option<Vec<u8>>,
    abandoned: Option<String>,
}

impl SettlementsSnapshot {
    fn of(state: &Settlements) -> Self {
        Self {
            open: state.open.as_ref().map(|o| (o.batch_id.clone(), o.cutoff)),
            batches: state
                .batches
                .iter()
                .map(|(batch_id, started)| StartedSnapshot {
                    batch_id: batch_id.clone(),
                    cutoff: started.cutoff,
                    started_at: from_timestamp(started.started_at.as_ref()),
                    completed: match &started.closed {
                        Some(Closed::Completed(done)) => Some(prost::Message::encode_to_vec(done)),
                        _ => None,
                    },
                    abandoned: match &started.closed {
                        Some(Closed::Abandoned(reason)) => Some(reason.clone()),
                        _ => None,
                    },
                })
                .collect(),
        }
    }

    fn state(self) -> Option<Settlements> {
        let mut batches = BTreeMap::new();
        for b in self.batches {
            let closed = match (b.completed, b.abandoned) {
                (Some(bytes), _) => Some(Closed::Completed(
                    prost::Message::decode(bytes.as_slice()).ok()?,
                )),
                (None, Some(reason)) => Some(Closed::Abandoned(reason)),
                (None, None) => None,
            };
            let started = Started {
                cutoff: b.cutoff,
                started_at: b.started_at.map(to_timestamp),
                closed,
            };
            batches.insert(b.batch_id, started);
        }
        Some(Settlements {
            open: self
                .open
                .map(|(batch_id, cutoff)| Open { batch_id, cutoff }),
            batches,
        })
    }
}

impl Aggregate for Settlements {
    type Event = PayoutsEvent;

    // The brand's index of its batches gets two events per batch for as long as the brand
    // settles: loads start from a snapshot.
    const SNAPSHOT_EVERY: u64 = 64;
    const SNAPSHOT_TYPE: &'static str = "scanloop.payouts.Settlements.v1";

    fn to_snapshot(&self) -> Vec<u8> {
        scanloop_eventstore::snapshot_json(&SettlementsSnapshot::of(self))
    }

    fn from_snapshot(bytes: &[u8]) -> Option<Self> {
        scanloop_eventstore::from_snapshot_json::<SettlementsSnapshot>(bytes)?.state()
    }

    fn apply(&mut self, event: &PayoutsEvent) {
        match event {
            PayoutsEvent::SettlementStarted(e) => {
                let cutoff = from_timestamp(e.cutoff.as_ref()).unwrap_or_default();
                self.open = Some(Open {
                    batch_id: e.batch_id.clone(),
                    cutoff,
                });
                self.batches.insert(
                    e.batch_id.clone(),
                    Started {
                        cutoff,
                        started_at: e.started_at,
                        closed: None,
                    },
                );
            }
            PayoutsEvent::SettlementCompleted(e) => {
                self.close(&e.batch_id, Closed::Completed(e.clone()));
            }
            PayoutsEvent::SettlementAbandoned(e) => {
                self.close(&e.batch_id, Closed::Abandoned(e.reason.clone()));
            }
            _ => {}
        }
    }
}

/// Opens `batch_id` unless it is open or done already; refuses while another batch is open.
pub fn start(
    state: &Settlements,
    batch_id: &str,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<PayoutsEvent>, Rejection> {
    if state.batches.contains_key(batch_id) {
        return Ok(vec![]);
    }
    match &state.open {
        Some(open) => Err(Rejection::FailedPrecondition(format!(
            "settlement batch {} is still open; it is finished before a new one starts",
            open.batch_id
        ))),
        None => Ok(vec![PayoutsEvent::SettlementStarted(
            pb::SettlementStarted {
                batch_id: batch_id.to_owned(),
                cutoff: Some(to_timestamp(cutoff)),
                started_at: Some(to_timestamp(now)),
            },
        )]),
    }
}

/// Closes the open batch with its totals (nothing if it is closed already).
pub fn complete(
    state: &Settlements,
    summary: &pb::SettlementCompleted,
) -> Result<Vec<PayoutsEvent>, Rejection> {
    if state.is_closed(&summary.batch_id) {
        return Ok(vec![]);
    }
    match &state.open {
        Some(open) if open.batch_id == summary.batch_id => {
            Ok(vec![PayoutsEvent::SettlementCompleted(summary.clone())])
        }
        _ => Err(Rejection::FailedPrecondition(format!(
            "settlement batch {} is not open",
            summary.batch_id
        ))),
    }
}

/// Closes the open batch without lines (nothing if it is closed already).
pub fn abandon(
    state: &Settlements,
    batch_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<PayoutsEvent>, Rejection> {
    if state.is_closed(batch_id) {
        return Ok(vec![]);
    }
    match &state.open {
        Some(open) if open.batch_id == batch_id => Ok(vec![PayoutsEvent::SettlementAbandoned(
            pb::SettlementAbandoned {
                batch_id: batch_id.to_owned(),
                reason: reason.to_owned(),
                abandoned_at: Some(to_timestamp(now)),
            },
        )]),
        _ => Err(Rejection::FailedPrecondition(format!(
            "settlement batch {batch_id} is not open"
        ))),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub line: pb::PayoutLine,
    pub paid_reference: Option<String>,
}

/// A beneficiary's line as the batch planned it, before any sale stream moved.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedLine {
    pub masked_identity: String,
    /// Vested commissions, in settling order.
    pub commissions: Vec<Candidate>,
    /// Owed claw-backs the line nets, in netting order.
    pub clawbacks: Vec<Candidate>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// The plan, by beneficiary: the only source of the batch's work and lines.
    pub planned: BTreeMap<Beneficiary, PlannedLine>,
    /// The plan is complete (its last chunk is recorded).
    pub sealed: bool,
    /// The lines, by beneficiary key.
    pub lines: BTreeMap<String, Line>,
    pub carried: BTreeMap<String, pb::CarriedBalance>,
}

impl Aggregate for Batch {
    type Event = PayoutsEvent;
    fn apply(&mut self, event: &PayoutsEvent) {
        match event {
            PayoutsEvent::SettlementPlanned(e) => {
                for planned in &e.lines {
                    let Some(b) = Beneficiary::from_pb(planned.beneficiary.as_ref()) else {
                        continue;
                    };
                    let items = |items: &[pb::PlannedItem]| -> Vec<Candidate> {
                        items
                            .iter()
                            .map(|item| Candidate {
                                beneficiary: b.clone(),
                                sale_stream_id: item.sale_stream_id.clone(),
                                commission_id: item.commission_id.clone(),
                                clawback_id: (!item.clawback_id.is_empty())
                                    .then(|| item.clawback_id.clone()),
                                amount: money_fen(item.amount.as_ref()),
                            })
                            .collect()
                    };
                    let line = PlannedLine {
                        masked_identity: planned.masked_identity.clone(),
                        commissions: items(&planned.commissions),
                        clawbacks: items(&planned.clawbacks),
                    };
                    self.planned.insert(b, line);
                }
                for carried in &e.carried {
                    if let Some(b) = Beneficiary::from_pb(carried.beneficiary.as_ref()) {
                        self.carried.insert(b.key(), carried.clone());
                    }
                }
                self.sealed |= e.sealed;
            }
            PayoutsEvent::PayoutLinesRecorded(e) => {
                for line in &e.lines {
                    if let Some(b) = Beneficiary::from_pb(line.beneficiary.as_ref()) {
                        self.lines.insert(
                            b.key(),
                            Line {
                                line: line.clone(),
                                paid_reference: None,
                            },
                        );
                    }
                }
                for carried in &e.carried {
                    if let Some(b) = Beneficiary::from_pb(carried.beneficiary.as_ref()) {
                        self.carried.insert(b.key(), carried.clone());
                    }
                }
            }
            PayoutsEvent::PayoutMarkedPaid(e) => {
                if let Some(b) = Beneficiary::from_pb(e.beneficiary.as_ref())
                    && let Some(line) = self.lines.get_mut(&b.key())
                {
                    line.paid_reference = Some(e.reference.clone());
                    line.line.status = pb::LineStatus::Paid as i32;
                    line.line.reference = e.reference.clone();
                    line.line.paid_at = e.paid_at;
                }
            }
            _ => {}
        }
    }
}

/// What planning needs beside the batch's state.
pub struct PlanInput<'a> {
    pub batch_id: &'a str,
    /// Vested commissions and owed claw-backs up to the cutoff (read models may repeat or lag:
    /// the sale streams decide what actually settles).
    pub candidates: &'a [Candidate],
    pub minimum: i64,
    /// The identity finance sees for a beneficiary.
    pub mask: &'a (dyn Fn(&Beneficiary) -> String + Sync),
    /// Lines (and carried balances) per chunk, to keep each event small.
    pub per_chunk: usize,
}

/// The next chunk of the batch's plan: beneficiaries not planned or carried yet, paid or carried
/// by [`plan`], each paid one with the claw-backs its commissions can absorb. The chunk that
/// leaves nothing unplanned is sealed; a sealed plan gets nothing more. Pure, so two runners
/// deciding against the same stream version decide the same chunk, and the stream's conditional
/// append lets only one of them record it.
pub fn plan_next(state: &Batch, input: &PlanInput<'_>) -> Vec<PayoutsEvent> {
    if state.sealed {
        return vec![];
    }
    let unplanned: Vec<Candidate> = input
        .candidates
        .iter()
        .filter(|c| {
            !state.planned.contains_key(&c.beneficiary)
                && !state.carried.contains_key(&c.beneficiary.key())
        })
        .cloned()
        .collect();
    let decided = plan(unplanned, input.minimum);
    let per_chunk = input.per_chunk.max(1);
    let lines: Vec<pb::PlannedLine> = decided
        .pay
        .into_iter()
        .take(per_chunk)
        .map(|(beneficiary, items)| planned_line(&beneficiary, items, input.mask))
        .collect();
    let carried: Vec<pb::CarriedBalance> =
        decided.carried.iter().take(per_chunk).cloned().collect();
    let sealed = lines.len() < per_chunk && carried.len() < per_chunk;
    vec![PayoutsEvent::SettlementPlanned(pb::SettlementPlanned {
        batch_id: input.batch_id.to_owned(),
        lines,
        carried,
        sealed,
    })]
}

fn planned_line(
    beneficiary: &Beneficiary,
    items: Vec<Candidate>,
    mask: &(dyn Fn(&Beneficiary) -> String + Sync),
) -> pb::PlannedLine {
    let (mut commissions, mut owed): (Vec<Candidate>, Vec<Candidate>) =
        items.into_iter().partition(|c| c.clawback_id.is_none());
    // A read model may list an item twice (a replayed row): each is planned once.
    let order = |c: &Candidate| {
        (
            c.sale_stream_id.clone(),
            c.commission_id.clone(),
            c.clawback_id.clone(),
        )
    };
    commissions.sort_by_key(order);
    commissions.dedup_by_key(|c| order(c));
    owed.sort_by_key(order);
    owed.dedup_by_key(|c| order(c));
    let gross: i64 = commissions.iter().map(|c| c.amount).sum();
    let clawbacks = choose_netting(gross, &owed);
    let item = |c: &Candidate| pb::PlannedItem {
        sale_stream_id: c.sale_stream_id.clone(),
        commission_id: c.commission_id.clone(),
        clawback_id: c.clawback_id.clone().unwrap_or_default(),
        amount: Some(fen_to_money(c.amount)),
    };
    pb::PlannedLine {
        beneficiary: Some(beneficiary.to_pb()),
        masked_identity: mask(beneficiary),
        commissions: commissions.iter().map(item).collect(),
        clawbacks: clawbacks.iter().map(item).collect(),
    }
}

/// The planned commissions to settle, by sale stream.
pub fn commissions_to_settle(state: &Batch) -> BTreeMap<String, Vec<String>> {
    let mut by_sale: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in state.planned.values().flat_map(|l| &l.commissions) {
        by_sale
            .entry(c.sale_stream_id.clone())
            .or_default()
            .push(c.commission_id.clone());
    }
    by_sale
}

/// The planned claw-backs to net, by sale stream, given what each beneficiary's commissions
/// actually settled (`gross`): a commission reversed after planning leaves less to net against,
/// so the line never goes below zero; what is not netted stays owed.
pub fn clawbacks_to_net(
    state: &Batch,
    gross: &BTreeMap<Beneficiary, i64>,
) -> BTreeMap<String, Vec<(String, String)>> {
    let mut by_sale: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (beneficiary, planned) in &state.planned {
        let room = gross.get(beneficiary).copied().unwrap_or(0);
        for c in choose_netting(room, &planned.clawbacks) {
            by_sale
                .entry(c.sale_stream_id.clone())
                .or_default()
                .push((c.commission_id, c.clawback_id.unwrap_or_default()));
        }
    }
    by_sale
}

/// The batch's lines from its plan and what the sale streams settled and netted in it: one line
/// per planned beneficiary whose commissions settled.
pub fn lines(
    state: &Batch,
    batch_id: &str,
    settled: &BTreeMap<Beneficiary, Vec<i64>>,
    netted: &BTreeMap<Beneficiary, i64>,
) -> Vec<pb::PayoutLine> {
    state
        .planned
        .iter()
        .filter_map(|(beneficiary, planned)| {
            let amounts = settled.get(beneficiary).filter(|a| !a.is_empty())?;
            Some(line(
                batch_id,
                beneficiary,
                planned.masked_identity.clone(),
                amounts,
                netted.get(beneficiary).copied().unwrap_or(0),
            ))
        })
        .collect()
}

/// Records the lines and carried balances not recorded yet (a resumed run records the rest).
pub fn record(
    state: &Batch,
    batch_id: &str,
    lines: &[pb::PayoutLine],
    carried: &[pb::CarriedBalance],
) -> Vec<PayoutsEvent> {
    let key = |b: Option<&pb::Beneficiary>| Beneficiary::from_pb(b).map(|b| b.key());
    let lines: Vec<_> = lines
        .iter()
        .filter(|l| key(l.beneficiary.as_ref()).is_some_and(|k| !state.lines.contains_key(&k)))
        .cloned()
        .collect();
    let carried: Vec<_> = carried
        .iter()
        .filter(|c| key(c.beneficiary.as_ref()).is_some_and(|k| !state.carried.contains_key(&k)))
        .cloned()
        .collect();
    if lines.is_empty() && carried.is_empty() {
        return vec![];
    }
    vec![PayoutsEvent::PayoutLinesRecorded(pb::PayoutLinesRecorded {
        batch_id: batch_id.to_owned(),
        lines,
        carried,
    })]
}

/// Finance paid a line: clearing → bank. The same reference again is a repeat; another
/// reference for a paid line is refused (a line is paid once).
pub fn mark_paid(
    state: &Batch,
    batch_id: &str,
    beneficiary: &Beneficiary,
    reference: &str,
    now: DateTime<Utc>,
) -> Result<Vec<PayoutsEvent>, Rejection> {
    let Some(line) = state.lines.get(&beneficiary.key()) else {
        return Err(Rejection::NotFound(format!(
            "batch {batch_id} has no line for {beneficiary}"
        )));
    };
    match &line.paid_reference {
        Some(paid) if paid == reference => Ok(vec![]),
        Some(paid) => Err(Rejection::FailedPrecondition(format!(
            "the line for {beneficiary} in batch {batch_id} was already paid with reference \
             {paid}"
        ))),
        None => {
            let amount = money_fen(line.line.amount.as_ref());
            Ok(vec![PayoutsEvent::PayoutMarkedPaid(pb::PayoutMarkedPaid {
                batch_id: batch_id.to_owned(),
                beneficiary: Some(beneficiary.to_pb()),
                amount: Some(fen_to_money(amount)),
                reference: reference.to_owned(),
                paid_at: Some(to_timestamp(now)),
                postings: ledger::paid(beneficiary, amount),
            })])
        }
    }
}

/// Something a batch can settle for a beneficiary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub beneficiary: Beneficiary,
    pub sale_stream_id: String,
    pub commission_id: String,
    /// Set for a claw-back the beneficiary owes; unset for a vested commission.
    pub clawback_id: Option<String>,
    pub amount: i64,
}

/// Who a batch pays and who it carries over.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub pay: BTreeMap<Beneficiary, Vec<Candidate>>,
    pub carried: Vec<pb::CarriedBalance>,
}

/// Pays each beneficiary whose vested commissions minus owed claw-backs reach `minimum` (and
/// are positive); carries the others over with the reason.
pub fn plan(candidates: Vec<Candidate>, minimum: i64) -> Plan {
    let mut by_beneficiary: BTreeMap<Beneficiary, Vec<Candidate>> = BTreeMap::new();
    for candidate in candidates {
        by_beneficiary
            .entry(candidate.beneficiary.clone())
            .or_default()
            .push(candidate);
    }
    let mut plan = Plan::default();
    for (beneficiary, items) in by_beneficiary {
        let earned: i64 = items
            .iter()
            .filter(|c| c.clawback_id.is_none())
            .map(|c| c.amount)
            .sum();
        let owed: i64 = items
            .iter()
            .filter(|c| c.clawback_id.is_some())
            .map(|c| c.amount)
            .sum();
        let net = earned - owed;
        if net > 0 && net >= minimum {
            plan.pay.insert(beneficiary, items);
        } else {
            let reason = if net <= 0 && owed > 0 {
                format!(
                    "claw-backs of {} yuan exceed the {} yuan earned: carried, never paid out",
                    yuan(owed),
                    yuan(earned)
                )
            } else {
                format!("under the minimum payout of {} yuan", yuan(minimum))
            };
            plan.carried.push(pb::CarriedBalance {
                beneficiary: Some(beneficiary.to_pb()),
                net: Some(fen_to_money(net)),
                reason,
            });
        }
    }
    plan
}

/// The owed claw-backs a payout of `gross` can absorb, in the order given, so the line is never
/// negative; the rest stay owed for the next batch.
pub fn choose_netting(gross: i64, clawbacks: &[Candidate]) -> Vec<Candidate> {
    let mut left = gross;
    let mut chosen = Vec::new();
    for clawback in clawbacks {
        if clawback.amount <= left {
            left -= clawback.amount;
            chosen.push(clawback.clone());
        }
    }
    chosen
}

/// A beneficiary's line from what the batch actually settled and netted for them.
pub fn line(
    batch_id: &str,
    beneficiary: &Beneficiary,
    masked_identity: String,
    settled: &[i64],
    netted: i64,
) -> pb::PayoutLine {
    let gross: i64 = settled.iter().sum();
    pb::PayoutLine {
        batch_id: batch_id.to_owned(),
        beneficiary: Some(beneficiary.to_pb()),
        masked_identity,
        gross: Some(fen_to_money(gross)),
        netted: Some(fen_to_money(netted)),
        amount: Some(fen_to_money(gross - netted)),
        commissions: u32::try_from(settled.len()).unwrap_or(u32::MAX),
        status: pb::LineStatus::Payable as i32,
        reference: String::new(),
        paid_at: None,
    }
}

#[cfg(test)]
mod tests;
