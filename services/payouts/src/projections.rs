//! Read models projected from `scanloop.payouts.events.v1`: commissions (by sale and by
//! beneficiary), what settlement can take, the ledger, and settlement batches with their lines.
//! Also the reads the API and the settlement run make of them.
//!
//! Here is what they share: [`ReadModels`] (one set of prepared statements over all of them) and
//! the projection, which applies each event to every read model it changes. Each read model's
//! statements, rows, writes and reads are in a module of its own: [`commissions`],
//! [`work_lists`] (settlement's), [`receivables`], [`ledger`] and [`settlements`] (batches and
//! their lines).

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message as _;
use scanloop_bus::EventEnvelope;
use scanloop_eventstore::Projection;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::from_timestamp;
use scanloop_storage::statements::Db;
use scanloop_storage::{DbError, WrittenOnce};
use scylla::client::session::Session;

use crate::domain::PayoutsEvent;
use crate::domain::ledger::Beneficiary;
use crate::domain::money::{fen_to_money, money_fen};

pub mod commissions;
pub mod ledger;
pub mod receivables;
pub mod settlements;
pub mod work_lists;

use work_lists::WorkItem;

/// The payouts read models, over one set of prepared statements (each module's).
#[derive(Clone)]
pub struct ReadModels {
    db: Db,
    /// The ledger's accounts this process recorded (see [`ledger`]).
    accounts_recorded: Arc<WrittenOnce<(String, String)>>,
}

fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, DbError> {
    M::decode(bytes).map_err(|e| DbError::msg(format!("stored row cannot be read: {e}")))
}

impl ReadModels {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> anyhow::Result<Self> {
        let statements = [
            commissions::STATEMENTS,
            work_lists::STATEMENTS,
            receivables::STATEMENTS,
            ledger::STATEMENTS,
            settlements::STATEMENTS,
        ]
        .concat();
        Ok(Self {
            db: Db::prepare(session, keyspace, &statements).await?,
            accounts_recorded: Arc::new(WrittenOnce::new(ledger::ACCOUNTS_REMEMBERED)),
        })
    }
}

fn beneficiary_key(b: Option<&pb::Beneficiary>) -> String {
    Beneficiary::from_pb(b).map(|b| b.key()).unwrap_or_default()
}

fn add(money: &mut Option<scanloop_proto::common::v1::Money>, fen: i64) {
    *money = Some(fen_to_money(money_fen(money.as_ref()) + fen));
}

/// The event types the read models are made of; the rest of the topic (plans, returns, plans of
/// settlements) is passed by unread. Keep equal to the arms of `apply` that write.
pub const PROJECTED: &[&str] = &[
    "scanloop.payouts.v1.CommissionAccrued",
    "scanloop.payouts.v1.CommissionVested",
    "scanloop.payouts.v1.CommissionReversed",
    "scanloop.payouts.v1.CommissionAdjusted",
    "scanloop.payouts.v1.CommissionClawedBack",
    "scanloop.payouts.v1.CommissionSettled",
    "scanloop.payouts.v1.ClawbackNetted",
    "scanloop.payouts.v1.ReceivableWrittenOff",
    "scanloop.payouts.v1.SettlementStarted",
    "scanloop.payouts.v1.PayoutLinesRecorded",
    "scanloop.payouts.v1.SettlementCompleted",
    "scanloop.payouts.v1.PayoutMarkedPaid",
    "scanloop.payouts.v1.SettlementAbandoned",
];

impl Projection for ReadModels {
    type Event = PayoutsEvent;

    const TABLES: &'static [&'static str] = &[
        "batch_items",
        "commissions",
        "commissions_by_beneficiary",
        "ledger_accounts",
        "ledger_entries",
        "ledger_events",
        "paid_lines",
        "payout_lines",
        "receivables",
        "settleable",
        "settlements",
    ];

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(PROJECTED)
    }

    async fn apply(&self, envelope: &EventEnvelope, event: &PayoutsEvent) -> Result<(), DbError> {
        let brand = envelope.brand_id.as_str();
        let sale = envelope.stream_id.as_str();
        let now = from_timestamp(envelope.occurred_at.as_ref()).unwrap_or_default();
        match event {
            PayoutsEvent::CommissionAccrued(e) => {
                let commission = pb::Commission {
                    commission_id: e.commission_id.clone(),
                    beneficiary: e.beneficiary.clone(),
                    role: e.role,
                    status: pb::CommissionStatus::Pending as i32,
                    attribution_id: e.attribution_id.clone(),
                    warranty_stream_id: e.warranty_stream_id.clone(),
                    sku: e.sku.clone(),
                    purchase_amount: e.purchase_amount.clone(),
                    accrued: e.amount.clone(),
                    amount: e.amount.clone(),
                    clawed_back: Some(fen_to_money(0)),
                    plan_version: e.plan_version,
                    rate: e.rate.clone(),
                    accrued_at: e.accrued_at,
                    vests_at: e.vests_at,
                    batch_id: String::new(),
                };
                self.put_commission(brand, sale, &commission).await?;
            }
            PayoutsEvent::CommissionVested(e) => {
                let amount = money_fen(e.amount.as_ref());
                let vested = self
                    .update_commission(brand, sale, &e.commission_id, |c| {
                        c.status = pb::CommissionStatus::Vested as i32;
                    })
                    .await?;
                let who = beneficiary_key(e.beneficiary.as_ref());
                // Due when its return window closed (`vests_at`), not when the vesting job
                // happened to record it: a cutoff at `vests_at` includes it.
                let due = vested
                    .and_then(|c| from_timestamp(c.vests_at.as_ref()))
                    .or_else(|| from_timestamp(e.vested_at.as_ref()))
                    .unwrap_or(now);
                self.put_settleable(
                    brand,
                    &WorkItem::commission(&who, sale, &e.commission_id, amount),
                    due,
                )
                .await?;
            }
            PayoutsEvent::CommissionReversed(e) => {
                self.update_commission(brand, sale, &e.commission_id, |c| {
                    add(&mut c.amount, -money_fen(e.amount.as_ref()));
                    c.status = pb::CommissionStatus::Reversed as i32;
                })
                .await?;
                let who = beneficiary_key(e.beneficiary.as_ref());
                self.delete_settleable(brand, &who, &e.commission_id)
                    .await?;
            }
            PayoutsEvent::CommissionAdjusted(e) => {
                let new_amount = money_fen(e.new_amount.as_ref());
                let updated = self
                    .update_commission(brand, sale, &e.commission_id, |c| {
                        c.amount = Some(fen_to_money(new_amount));
                        if new_amount == 0 {
                            c.status = pb::CommissionStatus::Reversed as i32;
                        }
                    })
                    .await?;
                let who = beneficiary_key(e.beneficiary.as_ref());
                if new_amount == 0 {
                    self.delete_settleable(brand, &who, &e.commission_id)
                        .await?;
                } else if let Some(c) = updated
                    && c.status == pb::CommissionStatus::Vested as i32
                {
                    let due = from_timestamp(c.vests_at.as_ref()).unwrap_or(now);
                    self.put_settleable(
                        brand,
                        &WorkItem::commission(&who, sale, &e.commission_id, new_amount),
                        due,
                    )
                    .await?;
                }
            }
            PayoutsEvent::CommissionClawedBack(e) => {
                let amount = money_fen(e.amount.as_ref());
                self.update_commission(brand, sale, &e.commission_id, |c| {
                    add(&mut c.amount, -amount);
                    add(&mut c.clawed_back, amount);
                    if money_fen(c.amount.as_ref()) == 0 {
                        c.status = pb::CommissionStatus::ClawedBack as i32;
                    }
                })
                .await?;
                let who = beneficiary_key(e.beneficiary.as_ref());
                self.put_settleable(
                    brand,
                    &WorkItem::clawback(&who, sale, &e.commission_id, &e.clawback_id, amount),
                    now,
                )
                .await?;
                let receivable = pb::Receivable {
                    beneficiary: e.beneficiary.clone(),
                    commission_id: e.commission_id.clone(),
                    clawback_id: e.clawback_id.clone(),
                    sale_stream_id: sale.to_owned(),
                    amount: e.amount.clone(),
                    reason: e.reason.clone(),
                    clawed_back_at: envelope.occurred_at,
                    status: pb::ReceivableStatus::Open as i32,
                    ..Default::default()
                };
                self.put_receivable(brand, &receivable).await?;
            }
            PayoutsEvent::CommissionSettled(e) => {
                self.update_commission(brand, sale, &e.commission_id, |c| {
                    c.status = pb::CommissionStatus::Settled as i32;
                    c.batch_id = e.batch_id.clone();
                })
                .await?;
                let who = beneficiary_key(e.beneficiary.as_ref());
                let amount = money_fen(e.amount.as_ref());
                self.put_batch_item(
                    brand,
                    &e.batch_id,
                    &WorkItem::commission(&who, sale, &e.commission_id, amount),
                )
                .await?;
                self.delete_settleable(brand, &who, &e.commission_id)
                    .await?;
            }
            PayoutsEvent::ClawbackNetted(e) => {
                let who = beneficiary_key(e.beneficiary.as_ref());
                let amount = money_fen(e.amount.as_ref());
                self.put_batch_item(
                    brand,
                    &e.batch_id,
                    &WorkItem::clawback(&who, sale, &e.commission_id, &e.clawback_id, amount),
                )
                .await?;
                self.delete_settleable(brand, &who, &e.clawback_id).await?;
                self.db
                    .exec("delete_receivable", (brand, &e.clawback_id))
                    .await?;
            }
            // Never netted now: out of settlement's work list; listed as written off.
            PayoutsEvent::ReceivableWrittenOff(e) => {
                let who = beneficiary_key(e.beneficiary.as_ref());
                self.delete_settleable(brand, &who, &e.clawback_id).await?;
                if let Some(mut receivable) = self.receivable(brand, &e.clawback_id).await? {
                    receivable.status = pb::ReceivableStatus::WrittenOff as i32;
                    receivable.written_off_by = envelope.actor.clone();
                    receivable.write_off_reason = e.reason.clone();
                    receivable.written_off_at = e.written_off_at;
                    self.put_receivable(brand, &receivable).await?;
                }
            }
            PayoutsEvent::SettlementStarted(e) => {
                self.update_settlement(brand, &e.batch_id, |b| {
                    b.status = pb::BatchStatus::Open as i32;
                    b.cutoff = e.cutoff;
                    b.started_at = e.started_at;
                })
                .await?;
            }
            PayoutsEvent::PayoutLinesRecorded(e) => {
                for line in &e.lines {
                    let who = beneficiary_key(line.beneficiary.as_ref());
                    self.db
                        .exec("put_line", (brand, &e.batch_id, &who, line.encode_to_vec()))
                        .await?;
                }
                if !e.carried.is_empty() {
                    self.update_settlement(brand, &e.batch_id, |b| {
                        let mut carried: BTreeMap<String, pb::CarriedBalance> = b
                            .carried
                            .drain(..)
                            .map(|c| (beneficiary_key(c.beneficiary.as_ref()), c))
                            .collect();
                        for c in &e.carried {
                            carried.insert(beneficiary_key(c.beneficiary.as_ref()), c.clone());
                        }
                        b.carried = carried.into_values().collect();
                    })
                    .await?;
                }
            }
            PayoutsEvent::SettlementCompleted(e) => {
                self.update_settlement(brand, &e.batch_id, |b| {
                    b.status = pb::BatchStatus::Completed as i32;
                    b.cutoff = e.cutoff;
                    b.completed_at = e.completed_at;
                    b.lines_count = e.lines_count;
                    b.commissions = e.commissions;
                    b.total = e.total.clone();
                })
                .await?;
            }
            PayoutsEvent::PayoutMarkedPaid(e) => {
                let who = beneficiary_key(e.beneficiary.as_ref());
                self.update_line(brand, &e.batch_id, &who, |l| {
                    l.status = pb::LineStatus::Paid as i32;
                    l.reference = e.reference.clone();
                    l.paid_at = e.paid_at;
                })
                .await?;
                // Counted by key, not incremented: a replay marks the same line again.
                self.db.exec("put_paid", (brand, &e.batch_id, &who)).await?;
            }
            // A batch closed without lines is not a settlement anyone lists.
            PayoutsEvent::SettlementAbandoned(e) => {
                self.db
                    .exec("delete_settlement", (brand, &e.batch_id))
                    .await?;
            }
            PayoutsEvent::PlanUpserted(_)
            | PayoutsEvent::SaleReturned(_)
            | PayoutsEvent::SettlementPlanned(_) => {}
        }
        // The ledger last: an account's balances (GetAccount) are its entries, so once they show
        // a commission payable, settlement's work list already holds it (a caller that waits
        // for the balance and then settles gets it in the batch).
        self.post(envelope, event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    scanloop_eventstore::projection_checks! {
        events: PayoutsEvent,
        projected: PROJECTED,
        read_models: ReadModels,
        // Every file of the projection: its statements may be spread over them.
        sources: [include_str!("projections.rs"), include_str!("projections/commissions.rs"), include_str!("projections/work_lists.rs"), include_str!("projections/receivables.rs"), include_str!("projections/ledger.rs"), include_str!("projections/settlements.rs")],
    }
}
