//! What became of each referred sale of a run, as the services' own topics tell it: its level-1
//! commission accrued (payouts), or referral held it for review or rejected it. A sale with
//! none of these is still in flight. The loadgen waits for every referred sale to have an
//! outcome, and names the ones that had none when it stopped waiting. A commission accrued twice
//! for one sale and level (two distinct events: a redelivery of one event is not a second
//! commission) is counted as doubled.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Outcomes by warranty stream (the sale: the loadgen activates each code once).
#[derive(Default)]
pub struct Outcomes {
    /// The run's referred sales (fraud attempts apart), with their codes for the report.
    referred: HashMap<String, String>,
    /// The run's fraud attempts (self-referrals): referral should reject each.
    fraud: HashSet<String>,
    accrued: HashSet<String>,
    /// The CommissionAccrued event ids seen per sale and commission role.
    accruals: HashMap<(String, i32), HashSet<String>>,
    held: HashMap<String, String>,
    rejected: HashMap<String, String>,
}

/// A sale's outcome, in the order the report counts them: a sale that accrued counts as such
/// even if a return later revoked it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Accrued,
    Held(String),
    Rejected(String),
    InFlight,
}

/// The referred sales and the fraud attempts by outcome, and a few sales still in flight.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub referred: BTreeMap<Outcome, u64>,
    pub fraud: BTreeMap<Outcome, u64>,
    pub in_flight_codes: Vec<String>,
    /// Commissions (a sale's level) accrued by more than one event, and a few of those sales.
    pub doubled: u64,
    pub doubled_sales: Vec<String>,
}

impl Outcomes {
    pub fn expect_referred(&mut self, warranty_stream_id: String, code: String) {
        self.referred.insert(warranty_stream_id, code);
    }

    pub fn expect_fraud(&mut self, warranty_stream_id: String) {
        self.fraud.insert(warranty_stream_id);
    }

    pub fn accrued(&mut self, warranty_stream_id: &str) {
        self.accrued.insert(warranty_stream_id.to_owned());
    }

    /// A CommissionAccrued event (any level) of a sale; true when it is the first for the sale
    /// and level (not a second delivery of one, nor a second commission).
    pub fn accrual(&mut self, warranty_stream_id: &str, role: i32, event_id: &str) -> bool {
        let events = self
            .accruals
            .entry((warranty_stream_id.to_owned(), role))
            .or_default();
        events.insert(event_id.to_owned()) && events.len() == 1
    }

    pub fn held(&mut self, warranty_stream_id: &str, reasons: String) {
        self.held.insert(warranty_stream_id.to_owned(), reasons);
    }

    pub fn rejected(&mut self, warranty_stream_id: &str, reason: String) {
        self.rejected.insert(warranty_stream_id.to_owned(), reason);
    }

    fn outcome(&self, warranty_stream_id: &str) -> Outcome {
        if self.accrued.contains(warranty_stream_id) {
            Outcome::Accrued
        } else if let Some(reasons) = self.held.get(warranty_stream_id) {
            Outcome::Held(reasons.clone())
        } else if let Some(reason) = self.rejected.get(warranty_stream_id) {
            Outcome::Rejected(reason.clone())
        } else {
            Outcome::InFlight
        }
    }

    /// Sales (referred or fraud) with no outcome yet.
    pub fn in_flight(&self) -> usize {
        self.referred
            .keys()
            .chain(&self.fraud)
            .filter(|sale| self.outcome(sale) == Outcome::InFlight)
            .count()
    }

    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for (sale, code) in &self.referred {
            let outcome = self.outcome(sale);
            if outcome == Outcome::InFlight && summary.in_flight_codes.len() < 5 {
                summary.in_flight_codes.push(code.clone());
            }
            *summary.referred.entry(outcome).or_default() += 1;
        }
        for sale in &self.fraud {
            *summary.fraud.entry(self.outcome(sale)).or_default() += 1;
        }
        summary.in_flight_codes.sort();
        let mut doubled: Vec<&String> = self
            .accruals
            .iter()
            .filter(|(_, events)| events.len() > 1)
            .map(|((sale, _), _)| sale)
            .collect();
        summary.doubled = doubled.len() as u64;
        doubled.sort();
        doubled.dedup();
        summary.doubled_sales = doubled.into_iter().take(5).cloned().collect();
        summary
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Accrued => write!(f, "level-1 commission accrued"),
            Outcome::Held(reasons) => write!(f, "held for review ({reasons})"),
            Outcome::Rejected(reason) => write!(f, "rejected ({reason})"),
            Outcome::InFlight => write!(f, "no outcome yet (in flight)"),
        }
    }
}

/// "n outcome, m outcome, …" for the report.
pub fn tally(by_outcome: &BTreeMap<Outcome, u64>) -> String {
    by_outcome
        .iter()
        .map(|(outcome, n)| format!("{n} {outcome}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sale_counts_once_under_its_first_outcome_and_the_silent_ones_are_named() {
        let mut outcomes = Outcomes::default();
        for (sale, code) in [("w1", "c1"), ("w2", "c2"), ("w3", "c3"), ("w4", "c4")] {
            outcomes.expect_referred(sale.into(), code.into());
        }
        outcomes.expect_fraud("w5".into());
        // Outcomes may come before the activation's answer, and for sales of other runs.
        outcomes.accrued("w1");
        outcomes.rejected("w1", "REVOKED_AFTER_ATTRIBUTION".into());
        outcomes.held("w2", "VELOCITY_HOUR".into());
        outcomes.rejected("w3", "SAME_DEVICE".into());
        outcomes.rejected("w5", "SELF_REFERRAL".into());
        outcomes.accrued("elsewhere");
        assert_eq!(outcomes.in_flight(), 1);
        let summary = outcomes.summary();
        assert_eq!(
            summary.referred,
            BTreeMap::from([
                (Outcome::Accrued, 1),
                (Outcome::Held("VELOCITY_HOUR".into()), 1),
                (Outcome::Rejected("SAME_DEVICE".into()), 1),
                (Outcome::InFlight, 1),
            ])
        );
        assert_eq!(
            summary.fraud,
            BTreeMap::from([(Outcome::Rejected("SELF_REFERRAL".into()), 1)])
        );
        assert_eq!(summary.in_flight_codes, vec!["c4".to_owned()]);
        assert_eq!(summary.doubled, 0);
        assert_eq!(
            tally(&summary.fraud),
            "1 rejected (SELF_REFERRAL)".to_owned()
        );
    }

    #[test]
    fn a_commission_accrued_by_two_events_is_doubled_and_a_redelivery_is_not() {
        let mut outcomes = Outcomes::default();
        assert!(outcomes.accrual("w1", 1, "e1"));
        assert!(
            !outcomes.accrual("w1", 1, "e1"),
            "the same event delivered again"
        );
        assert!(outcomes.accrual("w1", 2, "e2"), "its level 2");
        assert!(outcomes.accrual("w2", 1, "e3"));
        assert!(!outcomes.accrual("w2", 1, "e4"), "a second commission");
        let summary = outcomes.summary();
        assert_eq!(summary.doubled, 1);
        assert_eq!(summary.doubled_sales, vec!["w2".to_owned()]);
    }
}
