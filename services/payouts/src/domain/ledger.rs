//! The double-entry ledger: accounts, and the balanced posting each money movement makes.
//!
//! Modelled on two-phase transfers (TigerBeetle's pending → posted or voided): accrual credits
//! the beneficiary's `pending` account from the brand's commission expense; vesting posts it to
//! `payable`; a return before vesting voids it back to expense (in part for a partial refund);
//! settlement moves payable to the beneficiary's `clearing`, payment moves clearing to the
//! brand's `bank`; a claw-back after settlement debits the beneficiary's `receivable`, which the
//! next batch nets out of clearing. Corrections are new postings, never edits.
//!
//! Balances are debits minus credits: expense and receivable carry positive balances, pending,
//! payable, clearing and bank negative ones. Every posting moves one amount from one account to
//! another, so the sum over all of a brand's accounts is zero after every posting.

use std::collections::BTreeMap;
use std::fmt;

use pb::LedgerAccountType as Type;
use scanloop_proto::payouts::v1 as pb;

/// A beneficiary as the domain keys it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Beneficiary {
    pub kind: Kind,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Member,
    Store,
}

impl Beneficiary {
    pub fn member(id: impl Into<String>) -> Self {
        Self {
            kind: Kind::Member,
            id: id.into(),
        }
    }

    pub fn store(id: impl Into<String>) -> Self {
        Self {
            kind: Kind::Store,
            id: id.into(),
        }
    }

    pub fn from_pb(b: Option<&pb::Beneficiary>) -> Option<Self> {
        let b = b?;
        let kind = match pb::BeneficiaryKind::try_from(b.kind).ok()? {
            pb::BeneficiaryKind::Member => Kind::Member,
            pb::BeneficiaryKind::Store => Kind::Store,
            pb::BeneficiaryKind::Unspecified => return None,
        };
        if b.id.is_empty() {
            return None;
        }
        Some(Self {
            kind,
            id: b.id.clone(),
        })
    }

    pub fn to_pb(&self) -> pb::Beneficiary {
        pb::Beneficiary {
            kind: match self.kind {
                Kind::Member => pb::BeneficiaryKind::Member,
                Kind::Store => pb::BeneficiaryKind::Store,
            } as i32,
            id: self.id.clone(),
        }
    }

    /// `member/<id>` or `store/<id>`: the key of the beneficiary's rows.
    pub fn key(&self) -> String {
        self.to_string()
    }

    pub fn parse_key(key: &str) -> Option<Self> {
        let (kind, id) = key.split_once('/')?;
        match kind {
            "member" => Some(Self::member(id)),
            "store" => Some(Self::store(id)),
            _ => None,
        }
    }
}

impl fmt::Display for Beneficiary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Member => "member",
            Kind::Store => "store",
        };
        write!(f, "{kind}/{}", self.id)
    }
}

/// The beneficiary accounts, in the order statements show them.
pub const BENEFICIARY_ACCOUNTS: [Type; 4] = [
    Type::Pending,
    Type::Payable,
    Type::Clearing,
    Type::Receivable,
];

pub fn type_name(t: Type) -> &'static str {
    match t {
        Type::CommissionExpense => "commission_expense",
        Type::Bank => "bank",
        Type::Pending => "pending",
        Type::Payable => "payable",
        Type::Clearing => "clearing",
        Type::Receivable => "receivable",
        Type::Unspecified => "unspecified",
    }
}

/// An account's name in the ledger tables: `brand/commission_expense`, `brand/bank`,
/// `member/<id>/payable`, `store/<id>/pending`.
pub fn account_name(account: &pb::LedgerAccount) -> String {
    let t = Type::try_from(account.r#type).unwrap_or(Type::Unspecified);
    match Beneficiary::from_pb(account.owner.as_ref()) {
        Some(owner) => format!("{owner}/{}", type_name(t)),
        None => format!("brand/{}", type_name(t)),
    }
}

pub fn beneficiary_account(owner: &Beneficiary, t: Type) -> pb::LedgerAccount {
    pb::LedgerAccount {
        r#type: t as i32,
        owner: Some(owner.to_pb()),
    }
}

pub fn brand_account(t: Type) -> pb::LedgerAccount {
    pb::LedgerAccount {
        r#type: t as i32,
        owner: None,
    }
}

/// One posting: debits `debit`, credits `credit` by `amount` (none for a zero amount).
fn transfer(debit: pb::LedgerAccount, credit: pb::LedgerAccount, amount: i64) -> Vec<pb::Posting> {
    if amount <= 0 {
        return Vec::new();
    }
    vec![pb::Posting {
        debit: Some(debit),
        credit: Some(credit),
        amount_fen: amount,
    }]
}

fn own(b: &Beneficiary, t: Type) -> pb::LedgerAccount {
    beneficiary_account(b, t)
}

/// A pending transfer: expense → the beneficiary's pending.
pub fn accrued(b: &Beneficiary, amount: i64) -> Vec<pb::Posting> {
    transfer(
        brand_account(Type::CommissionExpense),
        own(b, Type::Pending),
        amount,
    )
}

/// Posted: pending → payable.
pub fn vested(b: &Beneficiary, amount: i64) -> Vec<pb::Posting> {
    transfer(own(b, Type::Pending), own(b, Type::Payable), amount)
}

/// Voided, wholly or in part, before settlement: `pending` or `payable` → expense.
pub fn voided(b: &Beneficiary, from: Type, amount: i64) -> Vec<pb::Posting> {
    transfer(own(b, from), brand_account(Type::CommissionExpense), amount)
}

/// Settled into a batch: payable → clearing.
pub fn settled(b: &Beneficiary, amount: i64) -> Vec<pb::Posting> {
    transfer(own(b, Type::Payable), own(b, Type::Clearing), amount)
}

/// Clawed back after settlement: the beneficiary owes it (receivable), expense is recovered.
pub fn clawed_back(b: &Beneficiary, amount: i64) -> Vec<pb::Posting> {
    transfer(
        own(b, Type::Receivable),
        brand_account(Type::CommissionExpense),
        amount,
    )
}

/// Netted in a batch: withheld from clearing, settling the receivable.
pub fn netted(b: &Beneficiary, amount: i64) -> Vec<pb::Posting> {
    transfer(own(b, Type::Clearing), own(b, Type::Receivable), amount)
}

/// Written off (finance gives up collecting a claw-back): the receivable goes back to expense.
pub fn written_off(b: &Beneficiary, amount: i64) -> Vec<pb::Posting> {
    transfer(
        brand_account(Type::CommissionExpense),
        own(b, Type::Receivable),
        amount,
    )
}

/// Paid: clearing → the brand's bank.
pub fn paid(b: &Beneficiary, amount: i64) -> Vec<pb::Posting> {
    transfer(own(b, Type::Clearing), brand_account(Type::Bank), amount)
}

/// Balances by account name: debits minus credits.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Balances(pub BTreeMap<String, i64>);

impl Balances {
    pub fn post(&mut self, posting: &pb::Posting) {
        if let (Some(debit), Some(credit)) = (&posting.debit, &posting.credit) {
            *self.0.entry(account_name(debit)).or_default() += posting.amount_fen;
            *self.0.entry(account_name(credit)).or_default() -= posting.amount_fen;
        }
    }

    pub fn of(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn sum(&self) -> i64 {
        self.0.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_movement_debits_and_credits_the_documented_accounts() {
        let a = Beneficiary::member("m1");
        let mut balances = Balances::default();
        let steps = [
            accrued(&a, 1_000),
            vested(&a, 1_000),
            settled(&a, 1_000),
            paid(&a, 1_000),
        ];
        for posting in steps.iter().flatten() {
            balances.post(posting);
        }
        assert_eq!(balances.of("brand/commission_expense"), 1_000);
        assert_eq!(balances.of("brand/bank"), -1_000);
        assert_eq!(balances.of("member/m1/pending"), 0);
        assert_eq!(balances.of("member/m1/payable"), 0);
        assert_eq!(balances.of("member/m1/clearing"), 0);
        assert_eq!(balances.sum(), 0);

        for posting in clawed_back(&a, 300).iter().chain(&netted(&a, 300)) {
            balances.post(posting);
        }
        // The claw-back recovered expense; netting withheld it from clearing.
        assert_eq!(balances.of("brand/commission_expense"), 700);
        assert_eq!(balances.of("member/m1/receivable"), 0);
        assert_eq!(balances.of("member/m1/clearing"), 300);
        assert_eq!(balances.sum(), 0);

        for posting in accrued(&a, 50).iter().chain(&voided(&a, Type::Pending, 50)) {
            balances.post(posting);
        }
        assert_eq!(balances.of("member/m1/pending"), 0);
        assert_eq!(balances.of("brand/commission_expense"), 700);
        assert!(accrued(&a, 0).is_empty());
    }

    #[test]
    fn beneficiary_keys_round_trip() {
        let s = Beneficiary::store("shop-7");
        assert_eq!(s.key(), "store/shop-7");
        assert_eq!(Beneficiary::parse_key(&s.key()), Some(s.clone()));
        assert_eq!(Beneficiary::from_pb(Some(&s.to_pb())), Some(s));
        assert_eq!(Beneficiary::parse_key("bank/x"), None);
        assert_eq!(
            account_name(&beneficiary_account(
                &Beneficiary::member("m"),
                Type::Receivable
            )),
            "member/m/receivable"
        );
    }
}
