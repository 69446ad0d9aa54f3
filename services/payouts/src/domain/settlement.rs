//! Settlement batches.
//!
//! - [`Settlements`] (stream `settlements-<brand>`) lets one batch per brand be open at a time:
//!   a run starts its batch only when no other is open, so two runs never plan over the same
//!   commissions; a crashed run leaves its batch open and the next run finishes it first.
//! - [`Batch`] (stream `settlement-<brand>-<batch>`) holds the batch's lines and payments.
//! - [`plan`] decides from the vested commissions and owed claw-backs who is paid: a beneficiary
//!   whose net reaches the minimum payout is paid all of it; the others are carried over, with
//!   the reason (under the minimum, or owing more than earned: never paid out, reported).
//! - [`choose_netting`]: which owed claw-backs a payout can absorb, so no line is ever negative.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::to_timestamp;
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

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Settlements {
    pub open: Option<Open>,
    pub completed: BTreeSet<String>,
}

impl Aggregate for Settlements {
    type Event = PayoutsEvent;
    fn apply(&mut self, event: &PayoutsEvent) {
        match event {
            PayoutsEvent::SettlementStarted(e) => {
                self.open = Some(Open {
                    batch_id: e.batch_id.clone(),
                    cutoff: scanloop_proto::time::from_timestamp(e.cutoff.as_ref())
                        .unwrap_or_default(),
                });
            }
            PayoutsEvent::SettlementCompleted(e) => {
                if self.open.as_ref().is_some_and(|o| o.batch_id == e.batch_id) {
                    self.open = None;
                }
                self.completed.insert(e.batch_id.clone());
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
    if state.completed.contains(batch_id) {
        return Ok(vec![]);
    }
    match &state.open {
        Some(open) if open.batch_id == batch_id => Ok(vec![]),
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
    if state.completed.contains(&summary.batch_id) {
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

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub line: pb::PayoutLine,
    pub paid_reference: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// By beneficiary key.
    pub lines: BTreeMap<String, Line>,
    pub carried: BTreeMap<String, pb::CarriedBalance>,
}

impl Aggregate for Batch {
    type Event = PayoutsEvent;
    fn apply(&mut self, event: &PayoutsEvent) {
        match event {
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
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn item(member: &str, commission: &str, clawback: Option<&str>, amount: i64) -> Candidate {
        Candidate {
            beneficiary: Beneficiary::member(member),
            sale_stream_id: format!("sale-{commission}"),
            commission_id: commission.into(),
            clawback_id: clawback.map(Into::into),
            amount,
        }
    }

    #[test]
    fn one_batch_is_open_at_a_time_and_a_finished_one_is_not_reopened() {
        let mut state = Settlements::default();
        let started = start(&state, "b1", at(0), at(1)).unwrap();
        assert_eq!(started.len(), 1);
        started.iter().for_each(|e| state.apply(e));
        assert!(start(&state, "b1", at(0), at(2)).unwrap().is_empty());
        assert!(matches!(
            start(&state, "b2", at(0), at(2)),
            Err(Rejection::FailedPrecondition(_))
        ));
        let summary = pb::SettlementCompleted {
            batch_id: "b1".into(),
            ..Default::default()
        };
        complete(&state, &summary)
            .unwrap()
            .iter()
            .for_each(|e| state.apply(e));
        assert!(state.open.is_none());
        assert!(complete(&state, &summary).unwrap().is_empty());
        assert!(start(&state, "b1", at(0), at(3)).unwrap().is_empty());
        assert_eq!(start(&state, "b2", at(0), at(3)).unwrap().len(), 1);
    }

    #[test]
    fn the_minimum_and_claw_backs_decide_who_is_paid() {
        let plan = plan(
            vec![
                item("a", "c1", None, 5_000),
                item("a", "c2", Some("k1"), 1_000),
                item("b", "c3", None, 99),
                item("c", "c4", None, 300),
                item("c", "c5", Some("k2"), 800),
            ],
            100,
        );
        assert_eq!(
            plan.pay.keys().cloned().collect::<Vec<_>>(),
            vec![Beneficiary::member("a")]
        );
        assert_eq!(plan.pay[&Beneficiary::member("a")].len(), 2);
        let carried: Vec<(String, i64)> = plan
            .carried
            .iter()
            .map(|c| {
                (
                    c.beneficiary.as_ref().unwrap().id.clone(),
                    c.net.as_ref().unwrap().amount_fen,
                )
            })
            .collect();
        assert_eq!(carried, vec![("b".into(), 99), ("c".into(), -500)]);
        assert!(
            plan.carried[0]
                .reason
                .contains("minimum payout of 1.00 yuan")
        );
        assert!(plan.carried[1].reason.contains("never paid out"));
    }

    #[test]
    fn netting_never_makes_a_line_negative() {
        let owed = [
            item("a", "c1", Some("k1"), 700),
            item("a", "c2", Some("k2"), 500),
            item("a", "c3", Some("k3"), 200),
        ];
        let chosen = choose_netting(1_000, &owed);
        let ids: Vec<_> = chosen
            .iter()
            .map(|c| c.clawback_id.clone().unwrap())
            .collect();
        assert_eq!(ids, vec!["k1", "k3"]);
        let l = line(
            "b1",
            &Beneficiary::member("a"),
            "a****".into(),
            &[600, 400],
            900,
        );
        assert_eq!(l.amount.unwrap().amount_fen, 100);
        assert_eq!(l.commissions, 2);
    }

    #[test]
    fn a_line_is_paid_once() {
        let a = Beneficiary::member("a");
        let mut batch = Batch::default();
        let l = line("b1", &a, String::new(), &[1_000], 0);
        record(&batch, "b1", std::slice::from_ref(&l), &[])
            .iter()
            .for_each(|e| batch.apply(e));
        assert!(record(&batch, "b1", &[l], &[]).is_empty());
        let paid = mark_paid(&batch, "b1", &a, "TX-1", at(5)).unwrap();
        assert_eq!(paid[0].postings()[0].amount_fen, 1_000);
        paid.iter().for_each(|e| batch.apply(e));
        assert!(
            mark_paid(&batch, "b1", &a, "TX-1", at(6))
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            mark_paid(&batch, "b1", &a, "TX-2", at(6)),
            Err(Rejection::FailedPrecondition(_))
        ));
        assert!(matches!(
            mark_paid(&batch, "b1", &Beneficiary::member("z"), "TX-3", at(6)),
            Err(Rejection::NotFound(_))
        ));
    }
}
