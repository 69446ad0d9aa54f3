//! Read models projected from `scanloop.payouts.events.v1`: commissions (by sale and by
//! beneficiary), what settlement can take, the ledger, and settlement batches with their lines.
//! Also the reads the API and the settlement run make of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use prost::Message as _;
use scanloop_bus::EventEnvelope;
use scanloop_eventstore::Projection;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::from_timestamp;
use scanloop_storage::DbError;
use scanloop_storage::statements::Db;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};

use crate::domain::PayoutsEvent;
use crate::domain::ledger::{self, Beneficiary};
use crate::domain::money::{fen_to_money, money_fen};
use crate::domain::settlement::Candidate;

/// The settlement work list is spread over this many partitions per brand.
pub const SETTLEABLE_SHARDS: u32 = 16;

const STATEMENTS: &[(&str, &str)] = &[
    (
        "commission",
        "SELECT commission FROM {ks}.commissions \
         WHERE brand_id = ? AND sale_stream_id = ? AND commission_id = ?",
    ),
    (
        "sale_commissions",
        "SELECT commission FROM {ks}.commissions WHERE brand_id = ? AND sale_stream_id = ?",
    ),
    (
        "put_commission",
        "INSERT INTO {ks}.commissions (brand_id, sale_stream_id, commission_id, commission) \
         VALUES (?, ?, ?, ?)",
    ),
    (
        "put_beneficiary_commission",
        "INSERT INTO {ks}.commissions_by_beneficiary (brand_id, beneficiary, accrued_at, \
         commission_id, sale_stream_id, commission) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    (
        "beneficiary_commissions",
        "SELECT commission FROM {ks}.commissions_by_beneficiary \
         WHERE brand_id = ? AND beneficiary = ?",
    ),
    (
        "put_settleable",
        "INSERT INTO {ks}.settleable (brand_id, shard, beneficiary, item_id, sale_stream_id, \
         commission_id, clawback_id, amount_fen, due_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    (
        "delete_settleable",
        "DELETE FROM {ks}.settleable \
         WHERE brand_id = ? AND shard = ? AND beneficiary = ? AND item_id = ?",
    ),
    (
        "settleable",
        "SELECT beneficiary, sale_stream_id, commission_id, clawback_id, amount_fen, due_at \
         FROM {ks}.settleable WHERE brand_id = ? AND shard = ?",
    ),
    (
        "put_batch_item",
        "INSERT INTO {ks}.batch_items (brand_id, batch_id, beneficiary, item_id, \
         sale_stream_id, commission_id, clawback_id, amount_fen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    (
        "batch_items",
        "SELECT beneficiary, sale_stream_id, commission_id, clawback_id, amount_fen \
         FROM {ks}.batch_items WHERE brand_id = ? AND batch_id = ?",
    ),
    (
        "put_entry",
        "INSERT INTO {ks}.ledger_entries (brand_id, account, at, event_id, seq, amount_fen, \
         counterpart, event_type, commission_id, batch_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    (
        "put_account",
        "INSERT INTO {ks}.ledger_accounts (brand_id, account) VALUES (?, ?)",
    ),
    (
        "put_ledger_event",
        "INSERT INTO {ks}.ledger_events (brand_id, event_id, postings) VALUES (?, ?, ?)",
    ),
    (
        "accounts",
        "SELECT account FROM {ks}.ledger_accounts WHERE brand_id = ?",
    ),
    (
        "balance",
        "SELECT SUM(amount_fen) FROM {ks}.ledger_entries WHERE brand_id = ? AND account = ?",
    ),
    (
        "balance_before",
        "SELECT SUM(amount_fen) FROM {ks}.ledger_entries \
         WHERE brand_id = ? AND account = ? AND at < ?",
    ),
    (
        "entries_between",
        "SELECT at, event_id, seq, amount_fen, counterpart, event_type, commission_id, \
         batch_id FROM {ks}.ledger_entries \
         WHERE brand_id = ? AND account = ? AND at >= ? AND at < ?",
    ),
    (
        "entries",
        "SELECT at, event_id, seq, amount_fen, counterpart, event_type, commission_id, \
         batch_id FROM {ks}.ledger_entries WHERE brand_id = ? AND account = ?",
    ),
    (
        "postings",
        "SELECT SUM(postings) FROM {ks}.ledger_events WHERE brand_id = ?",
    ),
    (
        "put_settlement",
        "INSERT INTO {ks}.settlements (brand_id, batch_id, summary) VALUES (?, ?, ?)",
    ),
    (
        "settlement",
        "SELECT summary FROM {ks}.settlements WHERE brand_id = ? AND batch_id = ?",
    ),
    (
        "put_receivable",
        "INSERT INTO {ks}.receivables (brand_id, clawback_id, receivable) VALUES (?, ?, ?)",
    ),
    (
        "receivable",
        "SELECT receivable FROM {ks}.receivables WHERE brand_id = ? AND clawback_id = ?",
    ),
    (
        "receivables",
        "SELECT receivable FROM {ks}.receivables WHERE brand_id = ?",
    ),
    (
        "delete_receivable",
        "DELETE FROM {ks}.receivables WHERE brand_id = ? AND clawback_id = ?",
    ),
    (
        "delete_settlement",
        "DELETE FROM {ks}.settlements WHERE brand_id = ? AND batch_id = ?",
    ),
    (
        "settlements",
        "SELECT summary FROM {ks}.settlements WHERE brand_id = ?",
    ),
    (
        "put_paid",
        "INSERT INTO {ks}.paid_lines (brand_id, batch_id, beneficiary) VALUES (?, ?, ?)",
    ),
    (
        "paid_count",
        "SELECT COUNT(*) FROM {ks}.paid_lines WHERE brand_id = ? AND batch_id = ?",
    ),
    (
        "put_line",
        "INSERT INTO {ks}.payout_lines (brand_id, batch_id, beneficiary, line) \
         VALUES (?, ?, ?, ?)",
    ),
    (
        "line",
        "SELECT line FROM {ks}.payout_lines \
         WHERE brand_id = ? AND batch_id = ? AND beneficiary = ?",
    ),
    (
        "lines",
        "SELECT line FROM {ks}.payout_lines WHERE brand_id = ? AND batch_id = ?",
    ),
];

/// One side of a posting, as a statement line.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub account: String,
    pub at: DateTime<Utc>,
    pub event_id: String,
    pub seq: i32,
    pub amount_fen: i64,
    pub counterpart: String,
    pub event_type: String,
    pub commission_id: String,
    pub batch_id: String,
}

type EntryRow = (
    DateTime<Utc>,
    String,
    i32,
    i64,
    String,
    String,
    String,
    String,
);

/// A row of settlement's work lists (`settleable`, `batch_items`): a vested commission, or a
/// claw-back the beneficiary owes.
struct WorkItem<'a> {
    beneficiary: &'a str,
    sale: &'a str,
    commission_id: &'a str,
    /// Empty for a commission.
    clawback_id: &'a str,
    amount: i64,
}

impl<'a> WorkItem<'a> {
    fn commission(
        beneficiary: &'a str,
        sale: &'a str,
        commission_id: &'a str,
        amount: i64,
    ) -> Self {
        Self {
            beneficiary,
            sale,
            commission_id,
            clawback_id: "",
            amount,
        }
    }

    fn clawback(
        beneficiary: &'a str,
        sale: &'a str,
        commission_id: &'a str,
        clawback_id: &'a str,
        amount: i64,
    ) -> Self {
        Self {
            beneficiary,
            sale,
            commission_id,
            clawback_id,
            amount,
        }
    }

    /// The row's key within the beneficiary: the claw-back's id, else the commission's.
    fn item_id(&self) -> &'a str {
        if self.clawback_id.is_empty() {
            self.commission_id
        } else {
            self.clawback_id
        }
    }
}

#[derive(Clone)]
pub struct ReadModels {
    db: Db,
}

fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, DbError> {
    M::decode(bytes).map_err(|e| DbError::msg(format!("stored row cannot be read: {e}")))
}

fn settleable_shard(beneficiary: &str) -> i32 {
    scanloop_storage::shard::shard_of(beneficiary, SETTLEABLE_SHARDS) as i32
}

/// The short event type name, e.g. "CommissionVested".
fn short_type(event_type: &str) -> &str {
    event_type.rsplit('.').next().unwrap_or(event_type)
}

impl ReadModels {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> anyhow::Result<Self> {
        Ok(Self {
            db: Db::prepare(session, keyspace, STATEMENTS).await?,
        })
    }

    // ---- commissions ----

    async fn commission(
        &self,
        brand: &str,
        sale: &str,
        commission_id: &str,
    ) -> Result<Option<pb::Commission>, DbError> {
        match self
            .db
            .first::<(Vec<u8>,)>("commission", (brand, sale, commission_id))
            .await?
        {
            Some((bytes,)) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn put_commission(
        &self,
        brand: &str,
        sale: &str,
        commission: &pb::Commission,
    ) -> Result<(), DbError> {
        let bytes = commission.encode_to_vec();
        let beneficiary = Beneficiary::from_pb(commission.beneficiary.as_ref())
            .map(|b| b.key())
            .unwrap_or_default();
        let accrued_at = from_timestamp(commission.accrued_at.as_ref()).unwrap_or_default();
        self.db
            .exec(
                "put_commission",
                (brand, sale, &commission.commission_id, &bytes),
            )
            .await?;
        self.db
            .exec(
                "put_beneficiary_commission",
                (
                    brand,
                    &beneficiary,
                    accrued_at,
                    &commission.commission_id,
                    sale,
                    &bytes,
                ),
            )
            .await
    }

    /// Reads, changes and writes back a commission (absent: an event for a commission this
    /// projection never saw accrue, which cannot happen in one stream's order; skipped).
    async fn update_commission(
        &self,
        brand: &str,
        sale: &str,
        commission_id: &str,
        change: impl FnOnce(&mut pb::Commission),
    ) -> Result<Option<pb::Commission>, DbError> {
        let Some(mut commission) = self.commission(brand, sale, commission_id).await? else {
            tracing::warn!(
                sale,
                commission_id,
                "commission event before its accrual; skipped"
            );
            return Ok(None);
        };
        change(&mut commission);
        self.put_commission(brand, sale, &commission).await?;
        Ok(Some(commission))
    }

    pub async fn sale_commissions(
        &self,
        brand: &str,
        sale: &str,
    ) -> Result<Vec<pb::Commission>, DbError> {
        self.db
            .rows::<(Vec<u8>,)>("sale_commissions", (brand, sale))
            .await?
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect()
    }

    /// A page of a beneficiary's commissions, newest first.
    pub async fn beneficiary_commissions(
        &self,
        brand: &str,
        beneficiary: &Beneficiary,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::Commission>, String), scanloop_storage::paging::PageError> {
        let (rows, next) = scanloop_storage::paging::page::<(Vec<u8>,)>(
            self.db.session(),
            self.db.statement("beneficiary_commissions")?,
            (brand, beneficiary.key()),
            page_size,
            page_token,
        )
        .await?;
        let commissions = rows
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect::<Result<_, _>>()?;
        Ok((commissions, next))
    }

    // ---- settlement work lists ----

    async fn put_settleable(
        &self,
        brand: &str,
        item: &WorkItem<'_>,
        due_at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        self.db
            .exec(
                "put_settleable",
                (
                    brand,
                    settleable_shard(item.beneficiary),
                    item.beneficiary,
                    item.item_id(),
                    item.sale,
                    item.commission_id,
                    item.clawback_id,
                    item.amount,
                    due_at,
                ),
            )
            .await
    }

    async fn delete_settleable(
        &self,
        brand: &str,
        beneficiary: &str,
        item_id: &str,
    ) -> Result<(), DbError> {
        self.db
            .exec(
                "delete_settleable",
                (brand, settleable_shard(beneficiary), beneficiary, item_id),
            )
            .await
    }

    fn candidate(
        beneficiary: &str,
        sale: String,
        commission_id: String,
        clawback_id: String,
        amount: i64,
    ) -> Option<Candidate> {
        Some(Candidate {
            beneficiary: Beneficiary::parse_key(beneficiary)?,
            sale_stream_id: sale,
            commission_id,
            clawback_id: (!clawback_id.is_empty()).then_some(clawback_id),
            amount,
        })
    }

    /// Vested commissions and owed claw-backs due at or before `cutoff`.
    pub async fn settleable(
        &self,
        brand: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<Candidate>, DbError> {
        let mut candidates = Vec::new();
        for shard in 0..SETTLEABLE_SHARDS as i32 {
            let statement = self.db.statement("settleable")?;
            let mut rows = self
                .db
                .session()
                .execute_iter(statement.clone(), (brand, shard))
                .await?
                .rows_stream::<(String, String, String, String, i64, DateTime<Utc>)>()?;
            while let Some((beneficiary, sale, commission, clawback, amount, due_at)) =
                rows.try_next().await.map_err(DbError::new)?
            {
                if due_at <= cutoff {
                    candidates.extend(Self::candidate(
                        &beneficiary,
                        sale,
                        commission,
                        clawback,
                        amount,
                    ));
                }
            }
        }
        Ok(candidates)
    }

    /// What a batch has settled and netted so far.
    pub async fn batch_items(
        &self,
        brand: &str,
        batch_id: &str,
    ) -> Result<Vec<Candidate>, DbError> {
        let rows = self
            .db
            .rows::<(String, String, String, String, i64)>("batch_items", (brand, batch_id))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(beneficiary, sale, commission, clawback, amount)| {
                Self::candidate(&beneficiary, sale, commission, clawback, amount)
            })
            .collect())
    }

    async fn put_batch_item(
        &self,
        brand: &str,
        batch_id: &str,
        item: &WorkItem<'_>,
    ) -> Result<(), DbError> {
        self.db
            .exec(
                "put_batch_item",
                (
                    brand,
                    batch_id,
                    item.beneficiary,
                    item.item_id(),
                    item.sale,
                    item.commission_id,
                    item.clawback_id,
                    item.amount,
                ),
            )
            .await
    }

    // ---- receivables ----

    async fn put_receivable(&self, brand: &str, r: &pb::Receivable) -> Result<(), DbError> {
        self.db
            .exec("put_receivable", (brand, &r.clawback_id, r.encode_to_vec()))
            .await
    }

    pub async fn receivable(
        &self,
        brand: &str,
        clawback_id: &str,
    ) -> Result<Option<pb::Receivable>, DbError> {
        match self
            .db
            .first::<(Vec<u8>,)>("receivable", (brand, clawback_id))
            .await?
        {
            Some((bytes,)) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every receivable of the brand (open and written off), oldest first.
    pub async fn receivables(&self, brand: &str) -> Result<Vec<pb::Receivable>, DbError> {
        let mut all: Vec<pb::Receivable> = self
            .db
            .rows::<(Vec<u8>,)>("receivables", (brand,))
            .await?
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect::<Result<_, _>>()?;
        all.sort_by_key(|r| {
            (
                r.clawed_back_at.map(|t| (t.seconds, t.nanos)),
                r.clawback_id.clone(),
            )
        });
        Ok(all)
    }

    // ---- ledger ----

    /// Writes both sides of every posting of the event (one logged batch), then marks the
    /// event's postings counted. Keyed by event id and position: a replay rewrites the same rows.
    async fn post(&self, envelope: &EventEnvelope, event: &PayoutsEvent) -> Result<(), DbError> {
        let postings = event.postings();
        if postings.is_empty() {
            return Ok(());
        }
        let brand = envelope.brand_id.as_str();
        let at = from_timestamp(envelope.occurred_at.as_ref()).unwrap_or_default();
        let event_type = short_type(&envelope.event_type);
        let (commission_id, batch_id) = refs(event);
        let statement = self.db.statement("put_entry")?;
        let mut batch = Batch::new(BatchType::Logged);
        let mut values = Vec::new();
        let mut accounts = Vec::new();
        for (i, posting) in postings.iter().enumerate() {
            let (Some(debit), Some(credit)) = (&posting.debit, &posting.credit) else {
                return Err(DbError::msg("a posting without both sides (a bug)"));
            };
            let (debit, credit) = (ledger::account_name(debit), ledger::account_name(credit));
            for (seq, account, amount, counterpart) in [
                (2 * i, &debit, posting.amount_fen, &credit),
                (2 * i + 1, &credit, -posting.amount_fen, &debit),
            ] {
                batch.append_statement(statement.clone());
                values.push((
                    brand.to_owned(),
                    account.clone(),
                    at,
                    envelope.event_id.clone(),
                    seq as i32,
                    amount,
                    counterpart.clone(),
                    event_type.to_owned(),
                    commission_id.clone(),
                    batch_id.clone(),
                ));
                accounts.push(account.clone());
            }
        }
        self.db
            .session()
            .batch(&batch, values)
            .await
            .map_err(DbError::new)?;
        accounts.sort();
        accounts.dedup();
        for account in accounts {
            self.db.exec("put_account", (brand, account)).await?;
        }
        self.db
            .exec(
                "put_ledger_event",
                (brand, &envelope.event_id, postings.len() as i32),
            )
            .await
    }

    pub async fn accounts(&self, brand: &str) -> Result<Vec<String>, DbError> {
        Ok(self
            .db
            .rows::<(String,)>("accounts", (brand,))
            .await?
            .into_iter()
            .map(|(a,)| a)
            .collect())
    }

    pub async fn balance(&self, brand: &str, account: &str) -> Result<i64, DbError> {
        Ok(self
            .db
            .first::<(Option<i64>,)>("balance", (brand, account))
            .await?
            .and_then(|(sum,)| sum)
            .unwrap_or(0))
    }

    pub async fn balance_before(
        &self,
        brand: &str,
        account: &str,
        before: DateTime<Utc>,
    ) -> Result<i64, DbError> {
        Ok(self
            .db
            .first::<(Option<i64>,)>("balance_before", (brand, account, before))
            .await?
            .and_then(|(sum,)| sum)
            .unwrap_or(0))
    }

    fn entries_of(account: &str, rows: Vec<EntryRow>) -> Vec<Entry> {
        rows.into_iter()
            .map(
                |(
                    at,
                    event_id,
                    seq,
                    amount_fen,
                    counterpart,
                    event_type,
                    commission_id,
                    batch_id,
                )| {
                    Entry {
                        account: account.to_owned(),
                        at,
                        event_id,
                        seq,
                        amount_fen,
                        counterpart,
                        event_type,
                        commission_id,
                        batch_id,
                    }
                },
            )
            .collect()
    }

    pub async fn entries_between(
        &self,
        brand: &str,
        account: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Entry>, DbError> {
        let rows = self
            .db
            .rows::<EntryRow>("entries_between", (brand, account, from, to))
            .await?;
        Ok(Self::entries_of(account, rows))
    }

    pub async fn entries(&self, brand: &str, account: &str) -> Result<Vec<Entry>, DbError> {
        let rows = self
            .db
            .rows::<EntryRow>("entries", (brand, account))
            .await?;
        Ok(Self::entries_of(account, rows))
    }

    pub async fn postings(&self, brand: &str) -> Result<u64, DbError> {
        Ok(self
            .db
            .first::<(Option<i32>,)>("postings", (brand,))
            .await?
            .and_then(|(sum,)| sum)
            .map_or(0, |n| n.max(0) as u64))
    }

    // ---- settlements ----

    /// How many lines of a batch are marked paid.
    pub async fn paid_count(&self, brand: &str, batch_id: &str) -> Result<u32, DbError> {
        Ok(self
            .db
            .first::<(i64,)>("paid_count", (brand, batch_id))
            .await?
            .map_or(0, |(n,)| n.clamp(0, i64::from(u32::MAX)) as u32))
    }

    /// A batch as projected, with its count of paid lines.
    pub async fn settlement(
        &self,
        brand: &str,
        batch_id: &str,
    ) -> Result<Option<pb::SettlementBatch>, DbError> {
        let Some(mut batch) = self.stored_settlement(brand, batch_id).await? else {
            return Ok(None);
        };
        batch.paid_lines = self.paid_count(brand, batch_id).await?;
        Ok(Some(batch))
    }

    async fn stored_settlement(
        &self,
        brand: &str,
        batch_id: &str,
    ) -> Result<Option<pb::SettlementBatch>, DbError> {
        match self
            .db
            .first::<(Vec<u8>,)>("settlement", (brand, batch_id))
            .await?
        {
            Some((bytes,)) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn put_settlement(&self, batch: &pb::SettlementBatch) -> Result<(), DbError> {
        self.db
            .exec(
                "put_settlement",
                (&batch.brand_id, &batch.batch_id, batch.encode_to_vec()),
            )
            .await
    }

    async fn update_settlement(
        &self,
        brand: &str,
        batch_id: &str,
        change: impl FnOnce(&mut pb::SettlementBatch),
    ) -> Result<(), DbError> {
        let mut batch = self
            .stored_settlement(brand, batch_id)
            .await?
            .unwrap_or_else(|| pb::SettlementBatch {
                brand_id: brand.to_owned(),
                batch_id: batch_id.to_owned(),
                ..Default::default()
            });
        change(&mut batch);
        self.put_settlement(&batch).await
    }

    /// Every batch of a brand, newest first (a brand settles monthly: a few dozen a year).
    pub async fn settlements(&self, brand: &str) -> Result<Vec<pb::SettlementBatch>, DbError> {
        let mut batches: Vec<pb::SettlementBatch> = self
            .db
            .rows::<(Vec<u8>,)>("settlements", (brand,))
            .await?
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect::<Result<_, _>>()?;
        for batch in &mut batches {
            batch.paid_lines = self.paid_count(brand, &batch.batch_id).await?;
        }
        batches.sort_by_key(|b| {
            std::cmp::Reverse(
                b.started_at
                    .as_ref()
                    .map(|t| (t.seconds, t.nanos))
                    .unwrap_or_default(),
            )
        });
        Ok(batches)
    }

    pub async fn lines(
        &self,
        brand: &str,
        batch_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::PayoutLine>, String), scanloop_storage::paging::PageError> {
        let (rows, next) = scanloop_storage::paging::page::<(Vec<u8>,)>(
            self.db.session(),
            self.db.statement("lines")?,
            (brand, batch_id),
            page_size,
            page_token,
        )
        .await?;
        let lines = rows
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect::<Result<_, _>>()?;
        Ok((lines, next))
    }

    /// Every line of a batch (for the CSV export).
    pub async fn all_lines(
        &self,
        brand: &str,
        batch_id: &str,
    ) -> Result<Vec<pb::PayoutLine>, DbError> {
        self.db
            .rows::<(Vec<u8>,)>("lines", (brand, batch_id))
            .await?
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect()
    }

    async fn update_line(
        &self,
        brand: &str,
        batch_id: &str,
        beneficiary: &str,
        change: impl FnOnce(&mut pb::PayoutLine),
    ) -> Result<(), DbError> {
        let Some((bytes,)) = self
            .db
            .first::<(Vec<u8>,)>("line", (brand, batch_id, beneficiary))
            .await?
        else {
            return Ok(());
        };
        let mut line: pb::PayoutLine = decode(&bytes)?;
        change(&mut line);
        self.db
            .exec(
                "put_line",
                (brand, batch_id, beneficiary, line.encode_to_vec()),
            )
            .await
    }
}

/// The commission and batch an event's ledger lines refer to.
fn refs(event: &PayoutsEvent) -> (String, String) {
    match event {
        PayoutsEvent::CommissionAccrued(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionVested(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionReversed(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionAdjusted(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionClawedBack(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::CommissionSettled(e) => (e.commission_id.clone(), e.batch_id.clone()),
        PayoutsEvent::ClawbackNetted(e) => (e.commission_id.clone(), e.batch_id.clone()),
        PayoutsEvent::ReceivableWrittenOff(e) => (e.commission_id.clone(), String::new()),
        PayoutsEvent::PayoutMarkedPaid(e) => (String::new(), e.batch_id.clone()),
        _ => (String::new(), String::new()),
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

    #[test]
    fn the_declared_event_types_are_this_services_types() {
        let unknown =
            scanloop_eventstore::projection::unknown_event_types::<PayoutsEvent>(PROJECTED);
        assert!(
            unknown.is_empty(),
            "not event types of this service: {unknown:?}"
        );
    }

    #[test]
    fn the_declared_tables_are_the_tables_this_projection_writes() {
        let source = include_str!("projections.rs");
        let mismatch = scanloop_eventstore::projection::undeclared_tables::<ReadModels>(source);
        assert!(mismatch.is_empty(), "{mismatch}");
    }
}
