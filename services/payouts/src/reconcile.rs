//! Reconciliation: a brand's accounts and settlement batches recomputed from its payouts events
//! alone, and the checks that need nothing else. `scanloop payouts reconcile` feeds it the topic
//! and compares the result with what the read models answer.
//!
//! From the events alone it checks that:
//! - the ledger sums to zero;
//! - each batch's lines are what its sale streams settled and netted in it (gross, netted,
//!   commission count), and nothing settled in a batch is missing from its lines;
//! - each beneficiary's clearing holds exactly their batches' unpaid lines.

use std::collections::BTreeMap;

use scanloop_eventstore::Aggregate as _;
use scanloop_proto::payouts::v1 as pb;

use crate::domain::PayoutsEvent;
use crate::domain::ledger::{self, Balances, Beneficiary};
use crate::domain::money::{money_fen, yuan};
use crate::domain::settlement::{self, Batch};

mod read_models;
pub use read_models::{Report, check};

/// What the events say, folded.
#[derive(Debug, Default)]
pub struct Recomputed {
    /// Every account's balance (debits minus credits), by account name.
    pub balances: Balances,
    /// Every batch that recorded a plan or lines, by batch id.
    pub batches: BTreeMap<String, Batch>,
    /// Batches the settlements stream completed.
    pub completed: BTreeMap<String, pb::SettlementCompleted>,
    /// What the sale streams put into each batch per beneficiary: settled amounts and
    /// commissions, netted amounts.
    pub settled: BTreeMap<(String, Beneficiary), (i64, u32)>,
    pub netted: BTreeMap<(String, Beneficiary), i64>,
}

impl Recomputed {
    /// Folds one brand's events, each stream's in version order (duplicates already dropped).
    pub fn fold<'a>(events: impl IntoIterator<Item = (&'a str, &'a PayoutsEvent)>) -> Self {
        let mut r = Self::default();
        for (stream, event) in events {
            for posting in event.postings() {
                r.balances.post(posting);
            }
            match event {
                PayoutsEvent::CommissionSettled(e) => {
                    if let Some(b) = Beneficiary::from_pb(e.beneficiary.as_ref()) {
                        let entry = r.settled.entry((e.batch_id.clone(), b)).or_default();
                        entry.0 += money_fen(e.amount.as_ref());
                        entry.1 += 1;
                    }
                }
                PayoutsEvent::ClawbackNetted(e) => {
                    if let Some(b) = Beneficiary::from_pb(e.beneficiary.as_ref()) {
                        *r.netted.entry((e.batch_id.clone(), b)).or_default() +=
                            money_fen(e.amount.as_ref());
                    }
                }
                PayoutsEvent::SettlementCompleted(e) => {
                    r.completed.insert(e.batch_id.clone(), e.clone());
                }
                PayoutsEvent::SettlementPlanned(pb::SettlementPlanned { batch_id, .. })
                | PayoutsEvent::PayoutLinesRecorded(pb::PayoutLinesRecorded { batch_id, .. })
                | PayoutsEvent::PayoutMarkedPaid(pb::PayoutMarkedPaid { batch_id, .. }) => {
                    debug_assert!(stream.starts_with("settlement-"));
                    r.batches.entry(batch_id.clone()).or_default().apply(event);
                }
                _ => {}
            }
        }
        r
    }

    /// A beneficiary's balance in one of their accounts, as GetAccount shows it (credit
    /// balances positive).
    pub fn account(&self, b: &Beneficiary, t: pb::LedgerAccountType) -> i64 {
        let balance = self
            .balances
            .of(&ledger::account_name(&ledger::beneficiary_account(b, t)));
        if t == pb::LedgerAccountType::Receivable {
            balance
        } else {
            -balance
        }
    }

    /// Every beneficiary with an account.
    pub fn beneficiaries(&self) -> Vec<Beneficiary> {
        let mut all: Vec<Beneficiary> = self
            .balances
            .0
            .keys()
            .filter_map(|name| name.rsplit_once('/'))
            .filter_map(|(owner, _)| Beneficiary::parse_key(owner))
            .collect();
        all.dedup();
        all
    }

    /// What is wrong by the events alone, one sentence each.
    pub fn differences(&self) -> Vec<String> {
        let mut found = Vec::new();
        let sum = self.balances.sum();
        if sum != 0 {
            found.push(format!("the ledger sums to {sum} fen, not 0"));
        }
        let mut unpaid: BTreeMap<Beneficiary, i64> = BTreeMap::new();
        for (batch_id, batch) in &self.batches {
            for line in batch.lines.values() {
                let Some(b) = Beneficiary::from_pb(line.line.beneficiary.as_ref()) else {
                    continue;
                };
                let key = (batch_id.clone(), b.clone());
                let (gross, commissions) = self.settled.get(&key).copied().unwrap_or_default();
                let netted = self.netted.get(&key).copied().unwrap_or_default();
                let shown = (
                    money_fen(line.line.gross.as_ref()),
                    line.line.commissions,
                    money_fen(line.line.netted.as_ref()),
                );
                if shown != (gross, commissions, netted) {
                    found.push(format!(
                        "batch {batch_id}, {b}: the line says gross {} yuan in {} commissions \
                         netting {} yuan; the sale streams settled {} yuan in {commissions} and \
                         netted {} yuan",
                        yuan(shown.0),
                        shown.1,
                        yuan(shown.2),
                        yuan(gross),
                        yuan(netted)
                    ));
                }
                if line.paid_reference.is_none() {
                    *unpaid.entry(b).or_default() += money_fen(line.line.amount.as_ref());
                }
            }
        }
        for ((batch_id, b), (gross, _)) in &self.settled {
            let has_line = self
                .batches
                .get(batch_id)
                .is_some_and(|batch| batch.lines.contains_key(&b.key()));
            let closed = self.completed.contains_key(batch_id);
            if !has_line && closed {
                found.push(format!(
                    "batch {batch_id} settled {} yuan for {b} but has no line for them",
                    yuan(*gross)
                ));
            }
        }
        for b in self.beneficiaries() {
            let clearing = self.account(&b, pb::LedgerAccountType::Clearing);
            let open: i64 = self
                .settled
                .iter()
                .filter(|((batch, who), _)| who == &b && !self.completed.contains_key(batch))
                .map(|(_, (gross, _))| gross)
                .sum::<i64>()
                - self
                    .netted
                    .iter()
                    .filter(|((batch, who), _)| who == &b && !self.completed.contains_key(batch))
                    .map(|(_, n)| n)
                    .sum::<i64>();
            let lines = unpaid.get(&b).copied().unwrap_or(0);
            if clearing != lines + open {
                found.push(format!(
                    "{b}: clearing holds {} yuan, but their unpaid lines come to {} yuan{}",
                    yuan(clearing),
                    yuan(lines),
                    if open == 0 {
                        String::new()
                    } else {
                        format!(" (and {} yuan in a batch still open)", yuan(open))
                    }
                ));
            }
        }
        found
    }
}

/// A batch's line as the read model shows it against the one its stream recorded: the
/// differences, one sentence each.
pub fn line_differences(
    batch_id: &str,
    recorded: &settlement::Line,
    shown: Option<&pb::PayoutLine>,
) -> Vec<String> {
    let who = Beneficiary::from_pb(recorded.line.beneficiary.as_ref())
        .map_or_else(|| "?".to_owned(), |b| b.to_string());
    let Some(shown) = shown else {
        return vec![format!(
            "batch {batch_id}: the read model has no line for {who}"
        )];
    };
    let mut found = Vec::new();
    let fields = [
        ("amount", &recorded.line.amount, &shown.amount),
        ("gross", &recorded.line.gross, &shown.gross),
        ("netted", &recorded.line.netted, &shown.netted),
    ];
    for (name, recorded, shown) in fields {
        if money_fen(recorded.as_ref()) != money_fen(shown.as_ref()) {
            found.push(format!(
                "batch {batch_id}, {who}: {name} is {} yuan by the events, {} yuan in the read \
                 model",
                yuan(money_fen(recorded.as_ref())),
                yuan(money_fen(shown.as_ref()))
            ));
        }
    }
    if recorded.line.status != shown.status || recorded.line.reference != shown.reference {
        found.push(format!(
            "batch {batch_id}, {who}: the events say {:?} {:?}, the read model {:?} {:?}",
            pb::LineStatus::try_from(recorded.line.status).unwrap_or_default(),
            recorded.line.reference,
            pb::LineStatus::try_from(shown.status).unwrap_or_default(),
            shown.reference
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::settlement::line;

    fn settled(b: &Beneficiary, batch: &str, amount: i64) -> PayoutsEvent {
        PayoutsEvent::CommissionSettled(pb::CommissionSettled {
            commission_id: format!("c-{amount}"),
            beneficiary: Some(b.to_pb()),
            batch_id: batch.into(),
            amount: Some(crate::domain::money::fen_to_money(amount)),
            postings: ledger::settled(b, amount),
        })
    }

    fn accrued_and_vested(b: &Beneficiary, amount: i64) -> Vec<PayoutsEvent> {
        vec![
            PayoutsEvent::CommissionAccrued(pb::CommissionAccrued {
                postings: ledger::accrued(b, amount),
                ..Default::default()
            }),
            PayoutsEvent::CommissionVested(pb::CommissionVested {
                postings: ledger::vested(b, amount),
                ..Default::default()
            }),
        ]
    }

    fn lines_of(b: &Beneficiary, batch: &str, amounts: &[i64]) -> PayoutsEvent {
        PayoutsEvent::PayoutLinesRecorded(pb::PayoutLinesRecorded {
            batch_id: batch.into(),
            lines: vec![line(batch, b, String::new(), amounts, 0)],
            carried: vec![],
        })
    }

    fn completed(batch: &str) -> PayoutsEvent {
        PayoutsEvent::SettlementCompleted(pb::SettlementCompleted {
            batch_id: batch.into(),
            ..Default::default()
        })
    }

    fn fold(events: &[(&str, PayoutsEvent)]) -> Recomputed {
        Recomputed::fold(events.iter().map(|(s, e)| (*s, e)))
    }

    #[test]
    fn a_batch_whose_lines_match_its_sale_streams_reconciles() {
        let a = Beneficiary::member("a");
        let mut events: Vec<(&str, PayoutsEvent)> = accrued_and_vested(&a, 700)
            .into_iter()
            .chain(accrued_and_vested(&a, 300))
            .map(|e| ("sale-1", e))
            .collect();
        events.push(("sale-1", settled(&a, "b1", 700)));
        events.push(("sale-1", settled(&a, "b1", 300)));
        events.push(("settlement-x-b1", lines_of(&a, "b1", &[700, 300])));
        events.push(("settlements-x", completed("b1")));
        let r = fold(&events);
        assert_eq!(r.differences(), Vec::<String>::new());
        assert_eq!(r.account(&a, pb::LedgerAccountType::Clearing), 1_000);
        assert_eq!(r.beneficiaries(), vec![a]);
    }

    #[test]
    fn money_in_clearing_without_a_line_is_reported() {
        let a = Beneficiary::member("a");
        let b = Beneficiary::member("b");
        let mut events: Vec<(&str, PayoutsEvent)> = accrued_and_vested(&a, 700)
            .into_iter()
            .chain(accrued_and_vested(&b, 500))
            .map(|e| ("sale-1", e))
            .collect();
        events.push(("sale-1", settled(&a, "b1", 700)));
        // b's commission settled into the batch, but the batch's lines leave b out.
        events.push(("sale-2", settled(&b, "b1", 500)));
        events.push(("settlement-x-b1", lines_of(&a, "b1", &[700])));
        events.push(("settlements-x", completed("b1")));
        let found = fold(&events).differences();
        assert_eq!(
            found,
            vec![
                "batch b1 settled 5.00 yuan for member/b but has no line for them".to_owned(),
                "member/b: clearing holds 5.00 yuan, but their unpaid lines come to 0.00 yuan"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn a_line_that_differs_from_the_read_model_is_reported() {
        let a = Beneficiary::member("a");
        let recorded = settlement::Line {
            line: line("b1", &a, String::new(), &[1_000], 0),
            paid_reference: None,
        };
        assert!(line_differences("b1", &recorded, Some(&recorded.line)).is_empty());
        let shown = pb::PayoutLine {
            amount: Some(crate::domain::money::fen_to_money(900)),
            ..recorded.line.clone()
        };
        assert_eq!(
            line_differences("b1", &recorded, Some(&shown)),
            vec![
                "batch b1, member/a: amount is 10.00 yuan by the events, 9.00 yuan in the read \
                 model"
                    .to_owned()
            ]
        );
        assert_eq!(
            line_differences("b1", &recorded, None),
            vec!["batch b1: the read model has no line for member/a".to_owned()]
        );
    }
}
