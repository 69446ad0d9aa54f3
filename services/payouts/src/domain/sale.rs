//! One sale's commissions, from accrual to settlement, in one stream per sale.
//!
//! Everything that changes what a sale pays meets here, in whatever order it arrives: the
//! attribution (from referral) accrues a commission per beneficiary role; the return window
//! vests them; a return, a partial refund or a referral rejected after the fact reverses,
//! reduces or claws them back; settlement takes the vested ones and nets the claw-backs. A
//! return that arrives before the attribution is recorded first (`SaleReturned`), and the
//! commissions that accrue later reflect it in the same append.
//!
//! The stream serialises all of it: two deliveries of one attribution, or a vesting run racing a
//! return, are decided one after the other against the stream's state by the conditional append.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use scanloop_eventstore::Aggregate;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use uuid::Uuid;

use super::ledger::{self, Beneficiary};
use super::money::{Rate, ceiling_amount, commission, fen_to_money, money_fen};
use super::plan::Terms;
use super::{PayoutsEvent, Rejection};
use pb::LedgerAccountType as Account;
use pb::ReturnCause as Cause;

/// Names commissions and claw-backs (UUIDv5): stable across redelivery and replay.
const NAMESPACE: Uuid = Uuid::from_u128(0x5ca1_1000_0000_4000_8000_0000_0000_c0de);

/// A sale's stream: the warranty and the moment it was activated (a returned unit can be sold
/// and activated again; that is another sale).
pub fn stream_id(warranty_stream_id: &str, sale_activated_at: DateTime<Utc>) -> String {
    format!(
        "sale-{warranty_stream_id}@{}",
        sale_activated_at.timestamp_millis()
    )
}

pub fn role_name(role: pb::CommissionRole) -> &'static str {
    match role {
        pb::CommissionRole::Level1 => "level1",
        pb::CommissionRole::Level2 => "level2",
        pb::CommissionRole::Store => "store",
        pb::CommissionRole::Unspecified => "unspecified",
    }
}

/// UUIDv5 of the attribution and the beneficiary's role.
pub fn commission_id(attribution_id: &str, role: pb::CommissionRole) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("{attribution_id}/{}", role_name(role)).as_bytes(),
    )
    .to_string()
}

fn clawback_id(commission_id: &str, nth: usize) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("{commission_id}/clawback/{nth}").as_bytes(),
    )
    .to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pending,
    Vested,
    Settled { batch_id: String, amount: i64 },
    Reversed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clawback {
    pub amount: i64,
    pub netted_in: Option<String>,
    /// Finance gave up collecting it (the reason): never netted.
    pub written_off: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Commission {
    /// The accrual as recorded: the frozen terms.
    pub accrued: pb::CommissionAccrued,
    pub beneficiary: Beneficiary,
    /// What it is worth now.
    pub amount: i64,
    pub status: Status,
    pub clawbacks: BTreeMap<String, Clawback>,
}

impl Commission {
    pub fn rate(&self) -> Option<Rate> {
        self.accrued.rate.as_ref().and_then(Rate::from_pb)
    }

    pub fn vests_at(&self) -> Option<DateTime<Utc>> {
        from_timestamp(self.accrued.vests_at.as_ref())
    }

    /// The status a reader sees: a settled commission taken back entirely is clawed back.
    pub fn public_status(&self) -> pb::CommissionStatus {
        match &self.status {
            Status::Pending => pb::CommissionStatus::Pending,
            Status::Vested => pb::CommissionStatus::Vested,
            Status::Settled { .. } if self.amount == 0 && !self.clawbacks.is_empty() => {
                pb::CommissionStatus::ClawedBack
            }
            Status::Settled { .. } => pb::CommissionStatus::Settled,
            Status::Reversed => pb::CommissionStatus::Reversed,
        }
    }

    /// What it would be worth on `base` fen of its sale, at its frozen rate and cap.
    fn worth_on(&self, base: i64) -> i64 {
        let purchase = money_fen(self.accrued.purchase_amount.as_ref());
        let cap = self.accrued.cap.as_ref().map(|m| m.amount_fen);
        self.rate()
            .map_or(0, |rate| commission(rate, purchase, base, cap))
            .min(money_fen(self.accrued.amount.as_ref()))
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sale {
    pub commissions: BTreeMap<String, Commission>,
    /// Wholly returned (or its referral rejected): nothing on it pays any more.
    pub returned: Option<Cause>,
    /// All partial refunds so far.
    pub refunded_total: i64,
}

impl Aggregate for Sale {
    type Event = PayoutsEvent;
    fn apply(&mut self, event: &PayoutsEvent) {
        let mut commission = |id: &str, f: &mut dyn FnMut(&mut Commission)| {
            if let Some(c) = self.commissions.get_mut(id) {
                f(c);
            }
        };
        match event {
            PayoutsEvent::CommissionAccrued(e) => {
                if let Some(beneficiary) = Beneficiary::from_pb(e.beneficiary.as_ref()) {
                    self.commissions.insert(
                        e.commission_id.clone(),
                        Commission {
                            accrued: e.clone(),
                            beneficiary,
                            amount: money_fen(e.amount.as_ref()),
                            status: Status::Pending,
                            clawbacks: BTreeMap::new(),
                        },
                    );
                }
            }
            PayoutsEvent::CommissionVested(e) => commission(&e.commission_id, &mut |c| {
                c.status = Status::Vested;
            }),
            PayoutsEvent::CommissionReversed(e) => commission(&e.commission_id, &mut |c| {
                c.amount -= money_fen(e.amount.as_ref());
                c.status = Status::Reversed;
            }),
            PayoutsEvent::CommissionAdjusted(e) => commission(&e.commission_id, &mut |c| {
                c.amount = money_fen(e.new_amount.as_ref());
                if c.amount == 0 {
                    c.status = Status::Reversed;
                }
            }),
            PayoutsEvent::CommissionClawedBack(e) => commission(&e.commission_id, &mut |c| {
                let amount = money_fen(e.amount.as_ref());
                c.amount -= amount;
                c.clawbacks.insert(
                    e.clawback_id.clone(),
                    Clawback {
                        amount,
                        netted_in: None,
                        written_off: None,
                    },
                );
            }),
            PayoutsEvent::CommissionSettled(e) => commission(&e.commission_id, &mut |c| {
                c.status = Status::Settled {
                    batch_id: e.batch_id.clone(),
                    amount: money_fen(e.amount.as_ref()),
                };
            }),
            PayoutsEvent::ClawbackNetted(e) => commission(&e.commission_id, &mut |c| {
                if let Some(clawback) = c.clawbacks.get_mut(&e.clawback_id) {
                    clawback.netted_in = Some(e.batch_id.clone());
                }
            }),
            PayoutsEvent::ReceivableWrittenOff(e) => commission(&e.commission_id, &mut |c| {
                if let Some(clawback) = c.clawbacks.get_mut(&e.clawback_id) {
                    clawback.written_off = Some(e.reason.clone());
                }
            }),
            PayoutsEvent::SaleReturned(e) => match Cause::try_from(e.cause) {
                Ok(Cause::Refunded) => {
                    self.refunded_total = self
                        .refunded_total
                        .max(money_fen(e.refunded_total.as_ref()));
                }
                Ok(cause) => self.returned = Some(cause),
                Err(_) => {}
            },
            _ => {}
        }
    }
}

/// Who earns on a sale, as referral's attribution says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payee {
    Member,
    Store,
    Both,
}

/// An attributed sale, as payouts needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributed {
    pub attribution_id: String,
    pub warranty_stream_id: String,
    pub sale_activated_at: DateTime<Utc>,
    pub sku: String,
    pub purchase_amount: i64,
    pub purchased_at: DateTime<Utc>,
    pub level1: String,
    pub level2: String,
    pub store: String,
    pub payee: Payee,
}

#[derive(Debug, Clone)]
pub struct Accrue {
    pub sale: Attributed,
    pub terms: Terms,
    /// The brand's ceiling on levels 1 + 2, in basis points of the purchase.
    pub ceiling_bps: u32,
    pub now: DateTime<Utc>,
}

/// Accrues the sale's commissions once (later deliveries decide nothing), and at once reflects
/// a return or refund recorded before the attribution arrived.
pub fn accrue(state: &Sale, cmd: &Accrue) -> Result<Vec<PayoutsEvent>, Rejection> {
    let sale = &cmd.sale;
    let terms = &cmd.terms;
    if state
        .commissions
        .values()
        .any(|c| c.accrued.attribution_id == sale.attribution_id)
    {
        return Ok(vec![]);
    }
    let members_earn = matches!(sale.payee, Payee::Member | Payee::Both);
    let stores_earn = matches!(sale.payee, Payee::Store | Payee::Both) && !sale.store.is_empty();
    let purchase = sale.purchase_amount;
    let earn = |rate: Option<Rate>| rate.map(|r| (r, commission(r, purchase, purchase, terms.cap)));
    let mut level1 = (members_earn && !sale.level1.is_empty())
        .then(|| earn(terms.level1))
        .flatten();
    let mut level2 = (level1.is_some() && !sale.level2.is_empty())
        .then(|| earn(terms.level2))
        .flatten();
    // Fixed amounts are held to the ceiling here (rates were at the plan): level 1 first. A
    // commission cut this way keeps the cut amount as its frozen fixed rate.
    let limit = ceiling_amount(purchase, cmd.ceiling_bps);
    if let Some((rate, amount)) = level1.as_mut()
        && *amount > limit
    {
        *amount = limit;
        *rate = Rate::Fixed(limit);
    }
    let level1_amount = level1.map_or(0, |(_, a)| a);
    if let Some((rate, amount)) = level2.as_mut()
        && level1_amount + *amount > limit
    {
        *amount = limit - level1_amount;
        *rate = Rate::Fixed(*amount);
    }
    let store = stores_earn.then(|| earn(terms.store)).flatten();

    let vests_at = sale.purchased_at + Duration::days(i64::from(terms.return_window_days));
    let mut events = Vec::new();
    for (role, beneficiary, earned) in [
        (
            pb::CommissionRole::Level1,
            Beneficiary::member(&sale.level1),
            level1,
        ),
        (
            pb::CommissionRole::Level2,
            Beneficiary::member(&sale.level2),
            level2,
        ),
        (
            pb::CommissionRole::Store,
            Beneficiary::store(&sale.store),
            store,
        ),
    ] {
        let Some((rate, amount)) = earned else {
            continue;
        };
        if amount <= 0 {
            continue;
        }
        events.push(PayoutsEvent::CommissionAccrued(pb::CommissionAccrued {
            commission_id: commission_id(&sale.attribution_id, role),
            attribution_id: sale.attribution_id.clone(),
            role: role as i32,
            beneficiary: Some(beneficiary.to_pb()),
            warranty_stream_id: sale.warranty_stream_id.clone(),
            sale_activated_at: Some(to_timestamp(sale.sale_activated_at)),
            sku: sale.sku.clone(),
            purchase_amount: Some(fen_to_money(purchase)),
            purchased_at: Some(to_timestamp(sale.purchased_at)),
            plan_sku: terms.sku.clone(),
            plan_version: terms.version,
            rate: Some(rate.to_pb()),
            cap: terms.cap.map(fen_to_money),
            amount: Some(fen_to_money(amount)),
            accrued_at: Some(to_timestamp(cmd.now)),
            vests_at: Some(to_timestamp(vests_at)),
            postings: ledger::accrued(&beneficiary, amount),
        }));
    }
    // A return or refund that came first applies to the new commissions in the same append.
    let mut after = state.clone();
    events.iter().for_each(|e| after.apply(e));
    if let Some(cause) = state.returned {
        events.extend(reverse_all(
            &after,
            cause,
            "returned before the attribution arrived",
        ));
    } else if state.refunded_total > 0 {
        events.extend(reduce_all(
            &after,
            state.refunded_total,
            "refunded before the attribution arrived",
        ));
    }
    Ok(events)
}

/// Vests what is due at `as_of`, each commission at the moment its return window closed (its
/// `vests_at`), however late the vesting job or a return makes it known.
pub fn vest(state: &Sale, as_of: DateTime<Utc>) -> Vec<PayoutsEvent> {
    state
        .commissions
        .iter()
        .filter(|(_, c)| c.status == Status::Pending && c.amount > 0)
        .filter_map(|(id, c)| {
            let vests_at = c.vests_at().filter(|at| *at <= as_of)?;
            Some(PayoutsEvent::CommissionVested(pb::CommissionVested {
                commission_id: id.clone(),
                beneficiary: Some(c.beneficiary.to_pb()),
                amount: Some(fen_to_money(c.amount)),
                vested_at: Some(to_timestamp(vests_at)),
                postings: ledger::vested(&c.beneficiary, c.amount),
            }))
        })
        .collect()
}

/// The earliest moment something on this sale vests, if anything is still to vest.
pub fn next_vesting(state: &Sale) -> Option<DateTime<Utc>> {
    state
        .commissions
        .values()
        .filter(|c| c.status == Status::Pending && c.amount > 0)
        .filter_map(Commission::vests_at)
        .min()
}

/// A return, refund or rejected referral, as a command on the sale.
#[derive(Debug, Clone, PartialEq)]
pub struct Return {
    pub warranty_stream_id: String,
    pub sale_activated_at: DateTime<Utc>,
    pub cause: Cause,
    /// For a refund: all refunds of the sale so far, and the price.
    pub refunded_total: i64,
    pub purchase_amount: i64,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A referral rejected by referral, as payouts needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Revocation {
    pub attribution_id: String,
    /// The sale (warranty stream, activation time), when the rejection names it.
    pub sale: Option<(String, DateTime<Utc>)>,
    /// The attribution had counted (it may have accrued, or may accrue late).
    pub counted: bool,
    pub reason: String,
}

/// Records a return, refund or rejection and takes back what it takes: before settlement by
/// reversing or reducing, after it by claw-back. A repeated or older refund total, or anything
/// after a whole return, decides nothing.
pub fn record_return(state: &Sale, cmd: &Return) -> Result<Vec<PayoutsEvent>, Rejection> {
    if state.returned.is_some() {
        return Ok(vec![]);
    }
    let refund = cmd.cause == Cause::Refunded;
    if refund {
        if cmd.refunded_total <= state.refunded_total {
            return Ok(vec![]);
        }
        if cmd.refunded_total > cmd.purchase_amount && cmd.purchase_amount > 0 {
            return Err(Rejection::Invalid(format!(
                "refunded {} fen of a {} fen purchase",
                cmd.refunded_total, cmd.purchase_amount
            )));
        }
    }
    // Event time decides: what had vested by the time of the return vests first (a lagging
    // timer changes nothing), then the return takes back from wherever each commission is: a
    // reversal while unsettled, a claw-back once settled.
    let vested = vest(state, cmd.at);
    let mut at_return = state.clone();
    vested.iter().for_each(|e| at_return.apply(e));
    let mut events = vec![PayoutsEvent::SaleReturned(pb::SaleReturned {
        warranty_stream_id: cmd.warranty_stream_id.clone(),
        sale_activated_at: Some(to_timestamp(cmd.sale_activated_at)),
        cause: cmd.cause as i32,
        refunded_total: refund.then(|| fen_to_money(cmd.refunded_total)),
        purchase_amount: refund.then(|| fen_to_money(cmd.purchase_amount)),
        reason: cmd.reason.clone(),
        returned_at: Some(to_timestamp(cmd.at)),
    })];
    events.extend(vested);
    if refund {
        events.extend(reduce_all(&at_return, cmd.refunded_total, &cmd.reason));
    } else {
        events.extend(reverse_all(&at_return, cmd.cause, &cmd.reason));
    }
    Ok(events)
}

fn clawback(c: &Commission, id: &str, amount: i64, cause: Cause, reason: &str) -> PayoutsEvent {
    PayoutsEvent::CommissionClawedBack(pb::CommissionClawedBack {
        commission_id: id.to_owned(),
        beneficiary: Some(c.beneficiary.to_pb()),
        clawback_id: clawback_id(id, c.clawbacks.len() + 1),
        amount: Some(fen_to_money(amount)),
        cause: cause as i32,
        reason: reason.to_owned(),
        postings: ledger::clawed_back(&c.beneficiary, amount),
    })
}

fn unsettled_account(status: &Status) -> Option<Account> {
    match status {
        Status::Pending => Some(Account::Pending),
        Status::Vested => Some(Account::Payable),
        _ => None,
    }
}

/// Takes back everything still worth something.
fn reverse_all(state: &Sale, cause: Cause, reason: &str) -> Vec<PayoutsEvent> {
    let mut events = Vec::new();
    for (id, c) in &state.commissions {
        if c.amount <= 0 {
            continue;
        }
        if let Some(from) = unsettled_account(&c.status) {
            events.push(PayoutsEvent::CommissionReversed(pb::CommissionReversed {
                commission_id: id.clone(),
                beneficiary: Some(c.beneficiary.to_pb()),
                amount: Some(fen_to_money(c.amount)),
                cause: cause as i32,
                reason: reason.to_owned(),
                postings: ledger::voided(&c.beneficiary, from, c.amount),
            }));
        } else if matches!(c.status, Status::Settled { .. }) {
            events.push(clawback(c, id, c.amount, cause, reason));
        }
    }
    events
}

/// Reduces each commission to its frozen rate on what is left of the price.
fn reduce_all(state: &Sale, refunded_total: i64, reason: &str) -> Vec<PayoutsEvent> {
    let mut events = Vec::new();
    for (id, c) in &state.commissions {
        let purchase = money_fen(c.accrued.purchase_amount.as_ref());
        let target = c.worth_on(purchase - refunded_total);
        let reduction = c.amount - target;
        if reduction <= 0 {
            continue;
        }
        if let Some(from) = unsettled_account(&c.status) {
            events.push(PayoutsEvent::CommissionAdjusted(pb::CommissionAdjusted {
                commission_id: id.clone(),
                beneficiary: Some(c.beneficiary.to_pb()),
                amount: Some(fen_to_money(reduction)),
                new_amount: Some(fen_to_money(target)),
                refunded_total: Some(fen_to_money(refunded_total)),
                cause: Cause::Refunded as i32,
                reason: reason.to_owned(),
                postings: ledger::voided(&c.beneficiary, from, reduction),
            }));
        } else if matches!(c.status, Status::Settled { .. }) {
            events.push(clawback(c, id, reduction, Cause::Refunded, reason));
        }
    }
    events
}

/// Settles the listed commissions into `batch_id` where they are still vested and unsettled;
/// the others are left as they are (already settled, reversed, not vested yet).
pub fn settle(state: &Sale, batch_id: &str, commission_ids: &[String]) -> Vec<PayoutsEvent> {
    commission_ids
        .iter()
        .filter_map(|id| {
            let c = state.commissions.get(id)?;
            (c.status == Status::Vested && c.amount > 0).then(|| {
                PayoutsEvent::CommissionSettled(pb::CommissionSettled {
                    commission_id: id.clone(),
                    beneficiary: Some(c.beneficiary.to_pb()),
                    batch_id: batch_id.to_owned(),
                    amount: Some(fen_to_money(c.amount)),
                    postings: ledger::settled(&c.beneficiary, c.amount),
                })
            })
        })
        .collect()
}

/// Nets the listed claw-backs (commission id, claw-back id) in `batch_id` where not yet netted.
pub fn net(state: &Sale, batch_id: &str, clawbacks: &[(String, String)]) -> Vec<PayoutsEvent> {
    clawbacks
        .iter()
        .filter_map(|(commission_id, clawback_id)| {
            let c = state.commissions.get(commission_id)?;
            let clawback = c.clawbacks.get(clawback_id)?;
            (clawback.netted_in.is_none() && clawback.written_off.is_none()).then(|| {
                PayoutsEvent::ClawbackNetted(pb::ClawbackNetted {
                    commission_id: commission_id.clone(),
                    clawback_id: clawback_id.clone(),
                    beneficiary: Some(c.beneficiary.to_pb()),
                    batch_id: batch_id.to_owned(),
                    amount: Some(fen_to_money(clawback.amount)),
                    postings: ledger::netted(&c.beneficiary, clawback.amount),
                })
            })
        })
        .collect()
}

/// Writes off a claw-back finance cannot collect: refused once netted (it was collected) or
/// written off already (a repeat of the same request is answered by its request id).
pub fn write_off(
    state: &Sale,
    clawback_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<PayoutsEvent>, Rejection> {
    let Some((commission_id, c, clawback)) = state.commissions.iter().find_map(|(id, c)| {
        c.clawbacks
            .get(clawback_id)
            .map(|clawback| (id, c, clawback))
    }) else {
        return Err(Rejection::NotFound(format!("no claw-back {clawback_id}")));
    };
    if let Some(batch) = &clawback.netted_in {
        return Err(Rejection::FailedPrecondition(format!(
            "claw-back {clawback_id} was netted in batch {batch}: collected, nothing to write off"
        )));
    }
    if let Some(earlier) = &clawback.written_off {
        return Err(Rejection::FailedPrecondition(format!(
            "claw-back {clawback_id} was already written off: {earlier}"
        )));
    }
    Ok(vec![PayoutsEvent::ReceivableWrittenOff(
        pb::ReceivableWrittenOff {
            commission_id: commission_id.clone(),
            clawback_id: clawback_id.to_owned(),
            beneficiary: Some(c.beneficiary.to_pb()),
            amount: Some(fen_to_money(clawback.amount)),
            reason: reason.to_owned(),
            written_off_at: Some(to_timestamp(now)),
            postings: ledger::written_off(&c.beneficiary, clawback.amount),
        },
    )])
}

/// Amounts by beneficiary.
pub type Shares = Vec<(Beneficiary, i64)>;

/// What this sale contributed to `batch_id`: settled commissions and netted claw-backs, each
/// with its beneficiary and amount (positive for commissions, the claw-back's amount for
/// claw-backs).
pub fn in_batch(state: &Sale, batch_id: &str) -> (Shares, Shares) {
    let mut settled = Vec::new();
    let mut netted = Vec::new();
    for c in state.commissions.values() {
        if let Status::Settled {
            batch_id: b,
            amount,
        } = &c.status
            && b == batch_id
        {
            settled.push((c.beneficiary.clone(), *amount));
        }
        for clawback in c.clawbacks.values() {
            if clawback.netted_in.as_deref() == Some(batch_id) {
                netted.push((c.beneficiary.clone(), clawback.amount));
            }
        }
    }
    (settled, netted)
}

#[cfg(test)]
mod tests;
